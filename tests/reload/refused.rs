//! An invalid file changes nothing: each kind of mistake is refused with `400` and located
//! errors, the old config goes on serving, the generation stays, and the error counter counts.

use std::net::SocketAddr;

use crate::support::reload::{
    config, generation, metrics, reload, reload_counts, series, who_answers, Reloadable, ADMIN,
};
use crate::support::TestBackend;

/// The valid file every mistake is made in.
fn base(backend: SocketAddr) -> String {
    format!(
        r#"{ADMIN}
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"
idle_timeout = "60s"

[[route]]
pool = "app"

[pool.app]
algorithm = "round_robin"
backends = [{{ address = "{backend}" }}]
"#
    )
}

/// Where an error must point.
#[derive(Clone, Copy)]
enum At {
    /// A piece of the offending line (the first line holding it), and the piece of that line
    /// the column must point at (`None`: any column).
    Line(&'static str, Option<&'static str>),
    /// Not at the file: the mistake is in the world (a port taken), named in the message.
    Elsewhere,
}

/// One kind of mistake.
struct Mistake {
    kind: &'static str,
    text: String,
    at: At,
    /// What the message must say.
    says: Vec<String>,
}

fn mistake(kind: &'static str, text: String, at: At, says: &[&str]) -> Mistake {
    if let At::Line(line, _) = at {
        assert!(text.contains(line), "{kind}: the marker is in the text");
    }
    Mistake {
        kind,
        text,
        at,
        says: says.iter().map(|s| s.to_string()).collect(),
    }
}

/// `text` with `from` replaced by `to` (which must be there).
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} in the base config");
    text.replacen(from, to, 1)
}

/// The 1-based line and column `at` names in `text`.
fn locate(text: &str, line_piece: &str, column_piece: Option<&str>) -> (usize, Option<usize>) {
    let (index, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(line_piece))
        .unwrap();
    let column = column_piece.map(|piece| line[..line.find(piece).unwrap()].chars().count() + 1);
    (index + 1, column)
}

#[test]
fn invalid_files_are_refused_with_located_errors_and_change_nothing() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let valid = base(a.addr);
    let sluice = Reloadable::start(&valid);
    let (admin, addr) = (sluice.admin(), sluice.addr());
    let path = sluice.file.path().display().to_string();
    assert_eq!(who_answers(addr, "/"), "a");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();

    let mistakes = [
        mistake(
            "syntax error",
            edit(&valid, "name = \"web\"", "name = \"web"),
            At::Line("name = \"web", None),
            &[],
        ),
        mistake(
            "unknown key",
            edit(&valid, "idle_timeout", "idle_timout"),
            At::Line("idle_timout", Some("idle_timout")),
            &["idle_timout"],
        ),
        mistake(
            "route to an unknown pool",
            edit(&valid, "pool = \"app\"", "pool = \"ap\""),
            At::Line("pool = \"ap\"", Some("\"ap\"")),
            &["ap"],
        ),
        mistake(
            "bad backend address",
            edit(&valid, &a.addr.to_string(), "127.0.0.1"),
            At::Line("address = \"127.0.0.1\"", Some("\"127.0.0.1\"")),
            &["127.0.0.1"],
        ),
        mistake(
            "bad duration",
            edit(&valid, "\"60s\"", "\"60 parsecs\""),
            At::Line("60 parsecs", Some("\"60 parsecs\"")),
            &["60 parsecs"],
        ),
        mistake(
            "duplicate listener name",
            format!("{valid}\n[[listener]]\nname = \"web\" # again\nbind = \"127.0.0.1:0\"\n"),
            At::Line("# again", Some("\"web\"")),
            &["duplicate listener name", "web"],
        ),
        mistake(
            "unknown algorithm",
            edit(&valid, "\"round_robin\"", "\"round-robin\""),
            At::Line("round-robin", Some("\"round-robin\"")),
            &["round-robin", "round_robin"],
        ),
        mistake(
            "empty pool",
            edit(
                &valid,
                &format!("[{{ address = \"{}\" }}]", a.addr),
                "[] # empty",
            ),
            At::Line("# empty", Some("[]")),
            &["backends"],
        ),
        // A certificate file that is not there.
        mistake(
            "missing certificate file",
            edit(
                &valid,
                "idle_timeout = \"60s\"\n",
                "idle_timeout = \"60s\"\n\n[listener.tls]\n\
                 certificates = [{ cert = \"missing.pem\", key = \"missing.key\" }]\n",
            ),
            At::Line("certificates = [", Some("\"missing.pem\"")),
            &["cannot read certificate file", "missing.pem"],
        ),
        mistake(
            "port already in use",
            format!("{valid}\n[[listener]]\nname = \"extra\"\nbind = \"{taken_addr}\"\n"),
            At::Elsewhere,
            &["extra", &taken_addr.to_string()],
        ),
    ];

    for (i, mistake) in mistakes.iter().enumerate() {
        let kind = mistake.kind;
        let refused = sluice.reload_with(&mistake.text);
        assert_eq!(refused.status, 400, "{kind}: {:#}", refused.body);
        assert_eq!(
            refused.generation(),
            1,
            "{kind}: the generation still serving"
        );
        let error = &refused.errors()[0];
        let message = error["message"].as_str().unwrap();
        let text = error["text"].as_str().unwrap();
        for piece in &mistake.says {
            assert!(
                text.contains(piece.as_str()),
                "{kind}: {piece:?} not in {text}"
            );
        }
        assert!(!message.is_empty(), "{kind}");
        match mistake.at {
            At::Line(line_piece, column_piece) => {
                let (line, column) = locate(&mistake.text, line_piece, column_piece);
                assert_eq!(error["file"], path.as_str(), "{kind}: {error:#}");
                assert_eq!(error["line"], line, "{kind}: {error:#}");
                match column {
                    Some(column) => assert_eq!(error["column"], column, "{kind}: {error:#}"),
                    None => assert!(error["column"].as_u64().is_some(), "{kind}: {error:#}"),
                }
                // The offending line is shown, with a caret under the mistake.
                let offending = mistake.text.lines().nth(line - 1).unwrap();
                assert!(text.contains(offending), "{kind}: {text}");
                assert!(text.contains('^'), "{kind}: {text}");
            }
            At::Elsewhere => {}
        }

        // Nothing changed.
        assert_eq!(who_answers(addr, "/"), "a", "{kind}: the old config serves");
        let running = config(admin);
        assert_eq!(running["generation"], 1, "{kind}");
        assert_eq!(running["source"], path.as_str());
        assert!(
            running["config"].to_string().contains(&a.addr.to_string()),
            "{kind}: {running:#}"
        );
        assert_eq!(reload_counts(admin), (0.0, (i + 1) as f64), "{kind}");
        let gauge = series(&metrics(admin), "sluice_config_generation");
        assert_eq!(gauge, Some(1.0), "{kind}");
    }

    // A file that is not there (mid-deploy, say) is refused too.
    sluice.file.remove();
    let refused = reload(admin);
    assert_eq!(refused.status, 400, "{:#}", refused.body);
    let error = &refused.errors()[0];
    assert_eq!(error["file"], path.as_str());
    assert_eq!(error["line"], serde_json::Value::Null);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cannot read config file"),
        "{error:#}"
    );
    assert_eq!(who_answers(addr, "/"), "a");
    assert_eq!(generation(admin), 1);
    let errors = mistakes.len() as f64 + 1.0;
    assert_eq!(reload_counts(admin), (0.0, errors));

    // The process still reloads: a valid file after all those is taken.
    let reload = sluice.reload_ok(&base(b.addr));
    assert_eq!(reload.generation(), 2);
    assert_eq!(who_answers(addr, "/"), "b");
    assert_eq!(reload_counts(admin), (1.0, errors));
    drop(taken);
}
