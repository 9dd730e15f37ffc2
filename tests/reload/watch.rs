//! Editing the config file on disk reloads it (`server.watch`, on by default): a burst of
//! writes is one reload, a write-and-rename is one, rewriting identical content is none, and an
//! invalid file is refused like any other.
//!
//! "Exactly one" needs a look after the reload: each test watches the generation for a while
//! (`stays`, several debounce periods) to see that no second reload follows.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sluice::config::Config;

use crate::support::reload::{generation, reload_counts, who_answers, ConfigFile, Reloadable};
use crate::support::{eventually, TestBackend, TestSluice};

/// File watching on (the default), polling as by default; `note` makes otherwise equal files
/// differ.
fn watched(backend: SocketAddr, weight: u32, note: &str) -> String {
    format!(
        r#"# {note}
[admin]
bind = "127.0.0.1:0"

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[pool.app]
backends = [{{ address = "{backend}", weight = {weight} }}]
"#
    )
}

/// The watcher debounces 200 ms; a second reload for the same change would come within a few
/// of those.
const QUIET: Duration = Duration::from_millis(800);

/// Whether the generation stays `expected` for `QUIET`.
fn stays(admin: SocketAddr, expected: u64) -> bool {
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        if generation(admin) != expected {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    generation(admin) == expected
}

/// Waits until the watcher is watching: it starts on the control thread after the first load,
/// with nothing to tell a client when it is ready, so the file is changed (a comment) until a
/// change is seen. Returns the generation then serving.
fn until_watched(sluice: &Reloadable, backend: SocketAddr) -> u64 {
    let admin = sluice.admin();
    for attempt in 0..5 {
        let before = generation(admin);
        sluice
            .file
            .replace(&watched(backend, 1, &format!("priming {attempt}")));
        if eventually(Duration::from_secs(2), || generation(admin) > before) {
            assert!(stays(admin, generation(admin)));
            return generation(admin);
        }
    }
    panic!("the config file is not watched");
}

#[test]
fn a_burst_of_writes_is_one_reload_and_a_rename_is_another() {
    let [a, b, c] = ["a", "b", "c"].map(TestBackend::start);
    let sluice = Reloadable::start_watched(&watched(a.addr, 1, "first"));
    let (admin, addr) = (sluice.admin(), sluice.addr());
    let start = until_watched(&sluice, a.addr);

    // Five saves in place, back to back: one reload, of the last.
    for weight in 1..=5 {
        sluice
            .file
            .write(&watched(b.addr, weight, &format!("save {weight}")));
    }
    assert!(
        eventually(Duration::from_secs(5), || generation(admin) == start + 1),
        "the burst was not reloaded"
    );
    assert!(stays(admin, start + 1), "one burst, more than one reload");
    assert_eq!(who_answers(addr, "/"), "b");
    let weight =
        crate::support::admin::backend(admin, "app", &b.addr.to_string())["weight"].clone();
    assert_eq!(weight, 5, "the last save is the one loaded");

    // A new file renamed over the old one, as editors and config tools do.
    sluice.file.replace(&watched(c.addr, 1, "renamed"));
    assert!(
        eventually(Duration::from_secs(5), || generation(admin) == start + 2),
        "the rename was not reloaded"
    );
    assert!(stays(admin, start + 2), "one rename, more than one reload");
    assert_eq!(who_answers(addr, "/"), "c");

    // The same content again is no change.
    sluice.file.write(&watched(c.addr, 1, "renamed"));
    assert!(stays(admin, start + 2), "identical content reloaded");

    // An invalid file is refused, and nothing changes.
    let (ok, errors) = reload_counts(admin);
    sluice
        .file
        .write(&watched(c.addr, 1, "broken").replace("weight = 1", "weight = \"heavy\""));
    assert!(
        eventually(Duration::from_secs(5), || reload_counts(admin)
            == (ok, errors + 1.0)),
        "the invalid file was not looked at"
    );
    assert_eq!(generation(admin), start + 2);
    assert_eq!(who_answers(addr, "/"), "c");
}

/// A file changed after sluice has read it, before its watcher has started (the moments of
/// start-up: binding, threads, health checks), is still reloaded: the watcher must compare the
/// file with what was loaded, not with what it finds when it starts. The test makes the change
/// in that window deterministically, between `Config::load` and the server's start.
#[test]
fn a_change_during_start_up_is_reloaded() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let file = ConfigFile::watched(&watched(a.addr, 1, "first"));
    let config = Config::load(file.path()).unwrap_or_else(|e| panic!("{e}"));
    file.replace(&watched(b.addr, 1, "second"));
    let sluice = Reloadable {
        sluice: TestSluice::start_from(config),
        file,
    };
    let admin = sluice.admin();
    // Started with what it loaded: "b" may answer already, but only once the reload is done
    // (the watcher can be that quick on a busy machine).
    let first = who_answers(sluice.addr(), "/");
    assert!(
        first == "a" || (first == "b" && generation(admin) == 2),
        "first answer {first:?} at generation {}",
        generation(admin)
    );
    assert!(
        eventually(Duration::from_secs(3), || generation(admin) == 2),
        "the file changed during start-up is never loaded: generation {}, {} answers",
        generation(admin),
        who_answers(sluice.addr(), "/")
    );
    assert_eq!(who_answers(sluice.addr(), "/"), "b");
}
