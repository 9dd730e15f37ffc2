//! What an operator sees of a request besides its answer: W3C trace context carried into the
//! backend, the log level changed at run time (`GET`/`PUT /api/log-level`, and reloads), and
//! the fields of the JSON access log.
//!
//! Trace context and the admin endpoint run in-process (with a `LogControl` that governs a
//! subscriber of its own, since a test process has no installed logger); what the log actually
//! says is read from the real binary's stdout.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use sluice::config::Config;
use sluice::server::{RunOptions, RuntimeKind};
use sluice::telemetry::LogControl;
use support::process::*;
use support::reload::{reload, ConfigFile, ADMIN};
use support::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// Checked here independently of sluice's parser: `00-<32 hex>-<16 hex>-00`, lowercase, ids
/// not all zero.
fn well_formed_new(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    value.len() == 55
        && parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && parts[3] == "00"
}

/// What the backend saw of each request's trace context.
fn context_seen(backend: &TestBackend) -> Vec<(Option<String>, Option<String>)> {
    backend
        .seen()
        .iter()
        .map(|seen| {
            let one = |name: &str| {
                let mut values = seen.headers.get_all(name).iter();
                let first = values.next().map(|v| v.to_str().unwrap().to_string());
                assert!(values.next().is_none(), "more than one {name} forwarded");
                first
            };
            (one("traceparent"), one("tracestate"))
        })
        .collect()
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(req.body(full("")).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_traceparent_gets_a_new_one() {
    let backend = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    assert_eq!(get_with(&sluice.url("/"), &[]).await.status, 200);
    // A tracestate without its traceparent belongs to no trace: it goes with the restart.
    let alone = [("tracestate", STATE)];
    assert_eq!(get_with(&sluice.url("/"), &alone).await.status, 200);
    let seen = context_seen(&backend);
    assert_eq!(seen.len(), 2);
    for (parent, state) in &seen {
        let parent = parent.as_deref().expect("a traceparent was created");
        assert!(well_formed_new(parent), "{parent}");
        assert_eq!(state, &None);
    }
    // Random: two requests, two traces.
    let trace = |i: usize| seen[i].0.as_ref().unwrap()[3..35].to_string();
    assert_ne!(trace(0), trace(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_traceparent_is_forwarded_unchanged_with_its_tracestate() {
    let backend = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    // A later version may append fields; its first 55 bytes parse as version 00.
    let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future";
    for parent in [VALID, later] {
        let headers = [("traceparent", parent), ("tracestate", STATE)];
        assert_eq!(get_with(&sluice.url("/"), &headers).await.status, 200);
    }
    let got = get_with(&sluice.url("/"), &[("traceparent", VALID)]).await;
    assert_eq!(got.status, 200);
    let seen = context_seen(&backend);
    let expected = [
        (Some(VALID.to_string()), Some(STATE.to_string())),
        (Some(later.to_string()), Some(STATE.to_string())),
        (Some(VALID.to_string()), None),
    ];
    assert_eq!(seen, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_is_replaced_and_its_tracestate_dropped() {
    let backend = TestBackend::start("a");
    let sluice = TestSluice::start(&simple_config(&[&backend]));
    let invalid = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "garbage",
    ];
    for parent in invalid {
        let headers = [("traceparent", parent), ("tracestate", STATE)];
        assert_eq!(get_with(&sluice.url("/"), &headers).await.status, 200);
    }
    // Two traceparent fields are one invalid value.
    let twice = [("traceparent", VALID), ("traceparent", VALID)];
    assert_eq!(get_with(&sluice.url("/"), &twice).await.status, 200);
    let seen = context_seen(&backend);
    assert_eq!(seen.len(), invalid.len() + 1);
    for ((parent, state), sent) in seen.iter().zip(invalid.iter().chain([&VALID])) {
        let parent = parent.as_deref().expect("a replacement traceparent");
        assert!(well_formed_new(parent), "{sent} became {parent}");
        assert_ne!(&parent[3..35], sent.get(3..35).unwrap_or(""), "{sent}");
        assert_eq!(state, &None, "{sent}");
    }
}

// ---- the log level through the admin API, in-process ----

fn options(log: Option<LogControl>) -> RunOptions {
    RunOptions {
        workers: Some(1),
        runtime: RuntimeKind::PerCore,
        log,
    }
}

/// A sluice with an admin API (and `token`, if any) whose log filter is `log`'s.
fn with_admin(log: Option<LogControl>, token: Option<&str>) -> (TestSluice, TestBackend) {
    let backend = TestBackend::start("a");
    let token = token.map_or(String::new(), |t| format!("token = \"{t}\"\n"));
    let text = format!("{ADMIN}{token}{}", simple_config(&[&backend]));
    let config = Config::parse(&text, Path::new("test.toml")).unwrap();
    (TestSluice::start_options(config, options(log)), backend)
}

struct Answer {
    status: u16,
    allow: Option<String>,
    json: serde_json::Value,
    text: String,
}

async fn admin_call(admin: SocketAddr, method: &str, body: &str, token: Option<&str>) -> Answer {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{admin}/api/log-level"));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let got = send(req.body(full(body.to_string())).unwrap()).await;
    Answer {
        status: got.status.as_u16(),
        allow: got.header("allow").map(str::to_string),
        json: serde_json::from_slice(&got.body).unwrap_or_default(),
        text: got.text(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_log_level_changes_the_filter_at_once() {
    let control = LogControl::detached("info").unwrap();
    let (sluice, _backend) = with_admin(Some(control.clone()), None);
    let admin = sluice.admin.unwrap();
    let got = admin_call(admin, "GET", "", None).await;
    assert_eq!(
        (got.status, &got.json["level"]),
        (200, &"info".into()),
        "{}",
        got.text
    );

    let put = admin_call(admin, "PUT", "sluice=debug,warn\n", None).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(put.json["previous"], "info");
    let level = put.json["level"].as_str().unwrap().to_string();
    assert!(
        level.contains("sluice=debug") && level.contains("warn"),
        "{level}"
    );
    assert_eq!(control.current(), level, "the running filter changed");
    assert_eq!(
        admin_call(admin, "GET", "", None).await.json["level"],
        level
    );

    // A JSON body works too.
    let put = admin_call(admin, "PUT", r#"{"level": "error"}"#, None).await;
    assert_eq!((put.status, &put.json["level"]), (200, &"error".into()));
    assert_eq!(put.json["previous"], level);
    assert_eq!(control.current(), "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_is_refused_with_400_and_changes_nothing() {
    let control = LogControl::detached("warn").unwrap();
    let (sluice, _backend) = with_admin(Some(control.clone()), None);
    let admin = sluice.admin.unwrap();
    let bad = admin_call(admin, "PUT", "sluice=loud", None).await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    let error = bad.json["error"].as_str().unwrap();
    assert!(
        error.starts_with("invalid log filter `sluice=loud`: "),
        "{error}"
    );
    assert_eq!(bad.json["level"], "warn");

    let typo = admin_call(admin, "PUT", "infoo", None).await;
    assert_eq!(typo.status, 400);
    assert_eq!(typo.json["help"], "did you mean `info`?");
    for empty in ["", "  \n", r#"{"lvl": "info"}"#] {
        assert_eq!(
            admin_call(admin, "PUT", empty, None).await.status,
            400,
            "{empty:?}"
        );
    }
    assert_eq!(control.current(), "warn");
    assert_eq!(
        admin_call(admin, "GET", "", None).await.json["level"],
        "warn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_get_405_with_allow() {
    let control = LogControl::detached("info").unwrap();
    let (sluice, _backend) = with_admin(Some(control.clone()), None);
    for method in ["POST", "DELETE", "PATCH"] {
        let got = admin_call(sluice.admin.unwrap(), method, "debug", None).await;
        assert_eq!(got.status, 405, "{method}");
        assert_eq!(got.allow.as_deref(), Some("GET, PUT"), "{method}");
    }
    assert_eq!(control.current(), "info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_level_needs_the_bearer_token() {
    let control = LogControl::detached("info").unwrap();
    let (sluice, _backend) = with_admin(Some(control.clone()), Some("s3cret"));
    let admin = sluice.admin.unwrap();
    for (method, token) in [("PUT", None), ("PUT", Some("nope")), ("GET", None)] {
        let got = admin_call(admin, method, "debug", token).await;
        assert_eq!(got.status, 401, "{method} with {token:?}");
    }
    assert_eq!(control.current(), "info");
    let got = admin_call(admin, "PUT", "debug", Some("s3cret")).await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(control.current(), "debug");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reloadable_logger_the_endpoint_answers_503() {
    let (sluice, _backend) = with_admin(None, None);
    for method in ["GET", "PUT"] {
        let got = admin_call(sluice.admin.unwrap(), method, "debug", None).await;
        assert_eq!(got.status, 503, "{method}");
        assert!(got.text.contains("no reloadable logger"), "{}", got.text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_changed_log_level_and_leaves_a_put_alone_otherwise() {
    let backend = TestBackend::start("a");
    let file_with = |level: &str, format: &str, weight: u32| {
        format!(
            "{ADMIN}{}",
            simple_config(&[&backend])
                .replace(
                    "access_log = false",
                    &format!("access_log = false\nlevel = \"{level}\"\nformat = \"{format}\""),
                )
                .replace(" }]", &format!(", weight = {weight} }}]"))
        )
    };
    let file = ConfigFile::new(&file_with("info", "text", 1));
    let control = LogControl::detached("info").unwrap();
    let config = Config::load(file.path()).unwrap();
    let sluice = TestSluice::start_options(config, options(Some(control.clone())));
    let admin = sluice.admin.unwrap();

    // A PUT holds through a reload that leaves log.level as it was.
    assert_eq!(admin_call(admin, "PUT", "debug", None).await.status, 200);
    file.replace(&file_with("info", "text", 2));
    let report = reload(admin);
    assert_eq!(report.status, 200, "{:#}", report.body);
    assert_eq!(report.body.get("log_level"), None, "{:#}", report.body);
    assert_eq!(control.current(), "debug");

    // A reload that changes log.level applies it at once; the format still needs a restart.
    file.replace(&file_with("warn", "json", 2));
    let report = reload(admin);
    assert_eq!(report.status, 200, "{:#}", report.body);
    assert_eq!(report.body["log_level"], "warn");
    assert_eq!(
        report.body["restart_required"],
        serde_json::json!(["log.format"])
    );
    assert_eq!(control.current(), "warn");
    assert_eq!(
        admin_call(admin, "GET", "", None).await.json["level"],
        "warn"
    );
}

// ---- the real binary's log ----

/// A backend that answers every request with `status`.
fn answering(name: &str, status: u16) -> TestBackend {
    let handler: Handler = Arc::new(move |_req: Request<Incoming>| {
        Box::pin(async move { Response::builder().status(status).body(full("x")).unwrap() })
    });
    TestBackend::with_handler(name, Arc::new(Mutex::new(Vec::new())), handler)
}

/// The access-log lines of the requests with these ids, in any order, within a deadline;
/// panics on a missing one.
fn access_lines(sluice: &Proc, ids: &[&str]) -> Vec<serde_json::Value> {
    let mut found: Vec<Option<serde_json::Value>> = vec![None; ids.len()];
    sluice.wait_for(Duration::from_secs(10), |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        if v["target"] != "access" {
            return None;
        }
        let i = ids.iter().position(|id| v["request_id"] == *id)?;
        found[i] = Some(v);
        found.iter().all(Option::is_some).then_some(())
    });
    found
        .into_iter()
        .zip(ids)
        .map(|(line, id)| line.unwrap_or_else(|| panic!("no access line for {id}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_trace_retry_and_upstream_fields() {
    let failing = answering("failing", 503);
    let ok = TestBackend::start("ok");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "{}\n[pool.app.retry]\nattempts = 1\n\n[[route]]\npath_prefix = \"/dead\"\npool = \"dead\"\n\n[pool.dead]\nbackends = [{{ address = \"{dead}\" }}]\n",
        config_with(&[failing.addr, ok.addr], "", "", "")
    )
    .replace("access_log = false", "access_log = true");
    let path = temp_config("access-fields", &config);
    let args = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--log-format",
        "json",
        "--workers",
        "1",
    ];
    let mut sluice = Proc::spawn(&args);
    let addr = sluice
        .wait_for(Duration::from_secs(20), json_listening_addr)
        .expect("listening line");

    let ids = ["r0", "r1", "r2", "r3"];
    for (i, id) in ids.iter().enumerate() {
        let mut headers = vec![("x-request-id", *id), ("user-agent", "probe/1.0")];
        if i == 0 {
            headers.push(("traceparent", VALID));
            headers.push(("referer", "https://example.com/from"));
        }
        let got = get_with(&format!("http://{addr}/"), &headers).await;
        assert_eq!(
            (got.status.as_u16(), got.text()),
            (200, "ok".to_string()),
            "{id}"
        );
    }
    let got = get_with(&format!("http://{addr}/dead"), &[("x-request-id", "gone")]).await;
    assert_eq!(got.status, 502);

    let lines = access_lines(&sluice, &["r0", "r1", "r2", "r3", "gone"]);
    let (answered, gone) = lines.split_at(4);
    // Round robin sends every other first attempt to the failing backend; each of those is
    // retried once on the other.
    let mut retried = 0;
    for line in answered {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["backend"], ok.addr.to_string(), "{line}");
        match line["retries"].as_u64() {
            Some(0) => assert_eq!(line["upstream_status"], "200", "{line}"),
            Some(1) => {
                assert_eq!(line["upstream_status"], "503, 200", "{line}");
                retried += 1;
            }
            _ => panic!("retries is not 0 or 1: {line}"),
        }
        assert_eq!(line["user_agent"], "probe/1.0", "{line}");
        let trace = line["trace_id"].as_str().unwrap();
        assert!(
            trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
            "{line}"
        );
        // Numbers are JSON numbers, not strings.
        for number in ["status", "retries", "bytes_in", "bytes_out"] {
            assert!(line[number].is_u64(), "{number} in {line}");
        }
        for float in ["total_ms", "upstream_ms"] {
            assert!(line[float].is_f64(), "{float} in {line}");
        }
        assert!(line["aborted"].is_boolean(), "{line}");
    }
    assert_eq!(retried, 2, "{answered:?}");
    assert_eq!(answered[0]["trace_id"], VALID[3..35]);
    assert_eq!(answered[0]["referer"], "https://example.com/from");
    assert_eq!(answered[1]["referer"], "");
    let traces: std::collections::HashSet<&str> = answered
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 4, "every request has a trace of its own");

    // No backend answered: no upstream status, but a trace id all the same.
    let gone = &gone[0];
    assert_eq!(gone["status"], 502, "{gone}");
    assert_eq!(gone["upstream_status"], "", "{gone}");
    assert_eq!(gone["retries"], 0, "{gone}");
    assert_eq!(gone["trace_id"].as_str().map(str::len), Some(32), "{gone}");

    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_log_level_changes_what_the_running_binary_writes() {
    let backend = TestBackend::start("a");
    let config = format!("{ADMIN}{}", simple_config(&[&backend]))
        .replace("access_log = false", "access_log = true");
    let path = temp_config("log-level", &config);
    let args = [
        "run",
        "--config",
        path.to_str().unwrap(),
        "--log-format",
        "json",
        "--workers",
        "1",
    ];
    let mut sluice = Proc::spawn(&args);
    let mut addrs = (None, None);
    sluice.wait_for(Duration::from_secs(20), |line| {
        addrs.0 = addrs.0.or(json_listening_addr(line));
        addrs.1 = addrs.1.or(json_admin_addr(line));
        (addrs.0.is_some() && addrs.1.is_some()).then_some(())
    });
    let (Some(addr), Some(admin)) = addrs else {
        panic!("no listening lines")
    };
    let url = format!("http://{addr}/");

    assert_eq!(
        get_with(&url, &[("x-request-id", "before")]).await.status,
        200
    );
    access_lines(&sluice, &["before"]);

    // Access lines are at info: a `warn` filter silences them at once...
    let put = admin_call(admin, "PUT", "warn", None).await;
    assert_eq!(
        (put.status, &put.json["previous"]),
        (200, &"info".into()),
        "{}",
        put.text
    );
    assert_eq!(
        get_with(&url, &[("x-request-id", "hidden")]).await.status,
        200
    );
    // ...and `info` brings them back, with a line saying so.
    let put = admin_call(admin, "PUT", "info", None).await;
    assert_eq!(put.status, 200, "{}", put.text);
    assert_eq!(
        get_with(&url, &[("x-request-id", "after")]).await.status,
        200
    );
    let (mut hidden, mut announced) = (false, false);
    let after = sluice.wait_for(Duration::from_secs(10), |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        hidden |= v["request_id"] == "hidden";
        announced |= v["message"] == "log filter changed" && v["previous"] == "warn";
        (v["request_id"] == "after").then_some(v)
    });
    assert!(after.is_some(), "no access line after the level came back");
    assert!(!hidden, "an access line was written under `warn`");
    assert!(announced, "the change back to info was not logged");

    sluice.signal("TERM");
    assert_eq!(sluice.wait_exit(Duration::from_secs(10)), Some(0));
}
