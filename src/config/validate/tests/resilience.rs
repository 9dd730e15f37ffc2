//! The resilience keys: `all_unhealthy`, `health_check`, `outlier_detection`, `retry` and
//! `limits`: defaults, range ends, and each mistake located and explained.

use super::*;

#[test]
fn resilience_tables_take_defaults_for_missing_keys() {
    let text = format!(
        "{BASE}[pool.app.health_check]\n[pool.app.outlier_detection]\n[pool.app.retry]\n[pool.app.limits]\n"
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let p = &config.pools[0];
    let check = p.health_check.as_ref().unwrap();
    assert_eq!(check.path, None, "no path: a TCP connect check");
    assert_eq!(check.interval, Duration::from_secs(5));
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (2, 3));
    assert_eq!(check.expected_status, 200..=399);
    let outliers = p.outlier_detection.as_ref().unwrap();
    assert_eq!(outliers.consecutive_failures, 5);
    assert_eq!(outliers.base_ejection, Duration::from_secs(30));
    assert_eq!(outliers.max_ejected_percent, 50);
    let retry = p.retry.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.budget_percent), (2, 20));
    assert_eq!(retry.on, RetryOn::all());
    assert_eq!(
        (p.limits.max_connections_per_backend, p.limits.max_pending),
        (1024, 1024)
    );
    assert_eq!(p.all_unhealthy, AllUnhealthy::FailClosed);
    let text = format!("{BASE}all_unhealthy = \"fail_closed\"\n");
    assert_eq!(
        parse(&text).unwrap().pools[0].all_unhealthy,
        AllUnhealthy::FailClosed
    );
}

#[test]
fn resilience_keys_accept_the_ends_of_their_ranges() {
    let snippet = r#"[pool.app.health_check]
path = "/"
interval = "3s"
timeout = "3s"
healthy_threshold = 100
unhealthy_threshold = 1
expected_status = "204"
[pool.app.outlier_detection]
consecutive_failures = 1000
base_ejection = "1ms"
max_ejected_percent = 0
[pool.app.retry]
attempts = 0
on = []
budget_percent = 100
[pool.app.limits]
max_connections_per_backend = 1
max_pending = 1000000
"#;
    let config = parse(&format!("{BASE}{snippet}")).unwrap_or_else(|e| panic!("{e}"));
    let p = &config.pools[0];
    let check = p.health_check.as_ref().unwrap();
    assert_eq!(check.path.as_ref().map(|p| p.as_str()), Some("/"));
    // A timeout equal to the interval is allowed: the probe that times out ends as the next
    // one starts.
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_secs(3), Duration::from_secs(3))
    );
    assert_eq!(
        (check.healthy_threshold, check.unhealthy_threshold),
        (100, 1)
    );
    assert_eq!(check.expected_status, 204..=204);
    let outliers = p.outlier_detection.as_ref().unwrap();
    assert_eq!(outliers.consecutive_failures, 1000);
    assert_eq!(outliers.base_ejection, Duration::from_millis(1));
    assert_eq!(outliers.max_ejected_percent, 0);
    let retry = p.retry.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.budget_percent), (0, 100));
    assert_eq!(
        retry.on,
        RetryOn::default(),
        "an empty `on` retries nothing"
    );
    assert_eq!(
        (p.limits.max_connections_per_backend, p.limits.max_pending),
        (1, 1_000_000)
    );

    // Each condition sets its own flag; a repeated one is harmless.
    let cases = [
        (
            "connect_failure",
            RetryOn {
                connect_failure: true,
                ..RetryOn::default()
            },
        ),
        (
            "reset",
            RetryOn {
                reset: true,
                ..RetryOn::default()
            },
        ),
        (
            "502",
            RetryOn {
                status_502: true,
                ..RetryOn::default()
            },
        ),
        (
            "503",
            RetryOn {
                status_503: true,
                ..RetryOn::default()
            },
        ),
        (
            "504",
            RetryOn {
                status_504: true,
                ..RetryOn::default()
            },
        ),
    ];
    for (condition, want) in cases {
        let text = format!("{BASE}[pool.app.retry]\non = [\"{condition}\", \"{condition}\"]\n");
        let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.pools[0].retry.as_ref().unwrap().on,
            want,
            "{condition}"
        );
    }
}

#[test]
fn resilience_mistakes_are_located_and_explained() {
    const THRESHOLD: &str =
        "consecutive passing probes that make an unhealthy backend healthy; the default is 2";
    const STATUS: &str = "expected a status like \"200\" or an inclusive range like \"200-399\", with codes from 100 to 599";
    const CONDITIONS: &str =
        "expected one of: \"connect_failure\", \"reset\", \"502\", \"503\", \"504\"";
    const OVERLAP: &str = "a probe would still be running when the next probe of the same backend is due, so probes would overlap";
    // (snippet appended to BASE's `[pool.app]`, line in snippet, column, message, note, help)
    type Case = (
        &'static str,
        usize,
        usize,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
    );
    let cases: &[Case] = &[
        // all_unhealthy
        (
            "all_unhealthy = \"fail-open\"\n",
            1, 17, "unknown all_unhealthy value `fail-open`",
            Some("expected one of: fail_closed, fail_open"), Some("did you mean `fail_open`?"),
        ),
        (
            "all_unhealthy = \"open\"\n",
            1, 17, "unknown all_unhealthy value `open`",
            Some("expected one of: fail_closed, fail_open"), None,
        ),
        // health_check
        (
            "[pool.app.health_check]\npath = \"healthz\"\n",
            2, 8, "health check path `healthz` must start with `/`",
            Some("a health check path is an absolute path with an optional query, like `/healthz` or `/status?full=1`"),
            Some("did you mean `/healthz`?"),
        ),
        (
            "[pool.app.health_check]\npath = \"/health check\"\n",
            2, 8, "health check path `/health check` is not a valid request target",
            Some("a health check path is an absolute path with an optional query, like `/healthz` or `/status?full=1`"),
            Some("percent-encode spaces, control characters and non-ASCII text, like `%20`"),
        ),
        (
            "[pool.app.health_check]\ninterval = \"0s\"\n",
            2, 12, "an interval of zero would probe without pause",
            Some("interval must be greater than zero; the default is 5s"), None,
        ),
        (
            // An invalid interval is not also compared with the timeout.
            "[pool.app.health_check]\ninterval = \"0s\"\ntimeout = \"10s\"\n",
            2, 12, "an interval of zero would probe without pause",
            Some("interval must be greater than zero; the default is 5s"), None,
        ),
        (
            "[pool.app.health_check]\ninterval = 5\n",
            2, 12, "`5` is a number, not a duration",
            Some("a duration is a whole number and a unit (ms, s, m or h), like \"250ms\", \"5s\", \"1m\", \"1h\""),
            Some("durations need a unit: did you mean \"5s\"?"),
        ),
        (
            "[pool.app.health_check]\ntimeout = \"0s\"\n",
            2, 11, "a timeout of zero would fail everything at once",
            Some("timeouts must be greater than zero"), None,
        ),
        (
            "[pool.app.health_check]\ninterval = \"5s\"\ntimeout = \"6s\"\n",
            3, 11, "health_check timeout 6s is longer than its interval 5s",
            Some(OVERLAP), Some("set `timeout` to at most `interval` (\"5s\"), or lengthen `interval`"),
        ),
        (
            "[pool.app.health_check]\ntimeout = \"10s\"\n",
            2, 11, "health_check timeout 10s is longer than its interval 5s",
            Some(OVERLAP), Some("set `timeout` to at most `interval` (\"5s\"), or lengthen `interval`"),
        ),
        (
            "[pool.app.health_check]\ninterval = \"1s\"\n",
            2, 12, "health_check interval 1s is shorter than the default timeout 2s",
            Some(OVERLAP), Some("set `timeout` to at most `interval` (\"1s\"), or lengthen `interval`"),
        ),
        (
            "[pool.app.health_check]\nhealthy_threshold = 0\n",
            2, 21, "healthy_threshold must be 1 to 100, not 0", Some(THRESHOLD), None,
        ),
        (
            "[pool.app.health_check]\nhealthy_threshold = -2\n",
            2, 21, "healthy_threshold must be 1 to 100, not -2", Some(THRESHOLD), None,
        ),
        (
            "[pool.app.health_check]\nunhealthy_threshold = 101\n",
            2, 23, "unhealthy_threshold must be 1 to 100, not 101",
            Some("consecutive failing probes that make a healthy backend unhealthy; the default is 3"), None,
        ),
        (
            "[pool.app.health_check]\nexpected_status = \"600\"\n",
            2, 19, "status `600` is outside 100 to 599", Some(STATUS), None,
        ),
        (
            "[pool.app.health_check]\nexpected_status = \"399-200\"\n",
            2, 19, "`399-200` runs backwards: 399 is above 200", Some(STATUS), Some("did you mean \"200-399\"?"),
        ),
        (
            "[pool.app.health_check]\nexpected_status = \"2xx\"\n",
            2, 19, "`2xx` is not a status or a range of statuses", Some(STATUS), Some("did you mean \"200-299\"?"),
        ),
        (
            "[pool.app.health_check]\nexpected_status = 200\n",
            2, 19, "expected_status `200` is a number, not a string", Some(STATUS),
            Some("write it in quotes: `expected_status = \"200\"`"),
        ),
        (
            "[pool.app.health_check]\nexpected_status = 99\n",
            2, 19, "status `99` is outside 100 to 599", Some(STATUS), None,
        ),
        // outlier_detection
        (
            "[pool.app.outlier_detection]\nconsecutive_failures = 0\n",
            2, 24, "consecutive_failures must be 1 to 1000, not 0",
            Some("consecutive live-traffic failures that eject a backend; the default is 5"), None,
        ),
        (
            "[pool.app.outlier_detection]\nconsecutive_failures = 1001\n",
            2, 24, "consecutive_failures must be 1 to 1000, not 1001",
            Some("consecutive live-traffic failures that eject a backend; the default is 5"), None,
        ),
        (
            "[pool.app.outlier_detection]\nbase_ejection = \"0s\"\n",
            2, 17, "a base_ejection of zero would return an ejected backend at once",
            Some("base_ejection must be greater than zero; the default is 30s"), None,
        ),
        (
            "[pool.app.outlier_detection]\nbase_ejection = \"30\"\n",
            2, 17, "`30` has no unit",
            Some("a duration is a whole number and a unit (ms, s, m or h), like \"250ms\", \"5s\", \"1m\", \"1h\""),
            Some("did you mean \"30s\"?"),
        ),
        (
            "[pool.app.outlier_detection]\nmax_ejected_percent = 101\n",
            2, 23, "max_ejected_percent must be 0 to 100, not 101",
            Some("the most of the pool, in percent, that may be ejected at once; the default is 50"), None,
        ),
        (
            "[pool.app.outlier_detection]\nmax_ejected_percent = -5\n",
            2, 23, "max_ejected_percent must be 0 to 100, not -5",
            Some("the most of the pool, in percent, that may be ejected at once; the default is 50"), None,
        ),
        // retry
        (
            "[pool.app.retry]\nattempts = 11\n",
            2, 12, "attempts must be 0 to 10, not 11",
            Some("extra tries, each on another backend; 0 turns retries off; the default is 2"), None,
        ),
        (
            "[pool.app.retry]\nattempts = -1\n",
            2, 12, "attempts must be 0 to 10, not -1",
            Some("extra tries, each on another backend; 0 turns retries off; the default is 2"), None,
        ),
        (
            "[pool.app.retry]\non = [\"connect-failure\"]\n",
            2, 7, "unknown retry condition `connect-failure`", Some(CONDITIONS),
            Some("did you mean `connect_failure`?"),
        ),
        (
            "[pool.app.retry]\non = [\"reset\", \"500\"]\n",
            2, 16, "unknown retry condition `500`", Some(CONDITIONS),
            Some("only 502, 503 and 504 are retried: they say the backend could not serve the request; any other answer goes to the client"),
        ),
        (
            "[pool.app.retry]\non = [\"timeout\"]\n",
            2, 7, "unknown retry condition `timeout`", Some(CONDITIONS),
            Some("`504` also covers a backend that did not answer within `timeouts.request`"),
        ),
        (
            "[pool.app.retry]\non = [502]\n",
            2, 7, "retry condition `502` is a number, not a string", Some(CONDITIONS),
            Some("did you mean `\"502\"`?"),
        ),
        (
            "[pool.app.retry]\nbudget_percent = 101\n",
            2, 18, "budget_percent must be 0 to 100, not 101",
            Some("retries may add at most this share of the pool's requests, in percent; the default is 20"), None,
        ),
        // limits
        (
            "[pool.app.limits]\nmax_connections_per_backend = 0\n",
            2, 31, "max_connections_per_backend must be 1 to 1000000, not 0",
            Some("requests in flight to one backend; a backend at its limit is skipped; the default is 1024"), None,
        ),
        (
            "[pool.app.limits]\nmax_connections_per_backend = 1000001\n",
            2, 31, "max_connections_per_backend must be 1 to 1000000, not 1000001",
            Some("requests in flight to one backend; a backend at its limit is skipped; the default is 1024"), None,
        ),
        (
            "[pool.app.limits]\nmax_pending = -1\n",
            2, 15, "max_pending must be 0 to 1000000, not -1",
            Some("requests that may wait when every backend is at its limit; 0 answers 503 at once; the default is 1024"), None,
        ),
        (
            "[pool.app.limits]\nmax_pending = 1000001\n",
            2, 15, "max_pending must be 0 to 1000000, not 1000001",
            Some("requests that may wait when every backend is at its limit; 0 answers 503 at once; the default is 1024"), None,
        ),
        // The tables deny unknown keys, as every other table does.
        (
            "[pool.app.retry]\natempts = 3\n",
            2, 1, "unknown field `atempts`, expected one of `attempts`, `on`, `budget_percent`",
            None, Some("did you mean `attempts`?"),
        ),
        (
            "[pool.app.limits]\nmax_connections = 3\n",
            2, 1, "unknown field `max_connections`, expected `max_connections_per_backend` or `max_pending`",
            None, None,
        ),
    ];
    for &(snippet, line, column, message, note, help) in cases {
        let errors = explained_errors_in(snippet);
        let want = (
            line,
            column,
            message.to_string(),
            note.map(str::to_string),
            help.map(str::to_string),
        );
        assert!(
            errors.contains(&want),
            "for snippet:\n{snippet}\nwant {want:?}\ngot  {errors:#?}"
        );
        assert_eq!(errors.len(), 1, "one mistake, one error:\n{errors:#?}");
    }
}

#[test]
fn every_resilience_error_is_reported_in_file_order() {
    let snippet = r#"all_unhealthy = "fail"
[pool.app.health_check]
path = "healthz"
interval = "0s"
healthy_threshold = 0
expected_status = "2xx"
[pool.app.outlier_detection]
max_ejected_percent = 150
[pool.app.retry]
attempts = 11
on = ["502", "5O3", "reset", "rest"]
[pool.app.limits]
max_pending = -1
"#;
    let found: Vec<_> = explained_errors_in(snippet)
        .into_iter()
        .map(|(line, _, message, _, help)| (line, message, help))
        .collect();
    let want = [
        (1, "unknown all_unhealthy value `fail`", None),
        (
            3,
            "health check path `healthz` must start with `/`",
            Some("did you mean `/healthz`?"),
        ),
        (4, "an interval of zero would probe without pause", None),
        (5, "healthy_threshold must be 1 to 100, not 0", None),
        (
            6,
            "`2xx` is not a status or a range of statuses",
            Some("did you mean \"200-299\"?"),
        ),
        (8, "max_ejected_percent must be 0 to 100, not 150", None),
        (10, "attempts must be 0 to 10, not 11", None),
        (
            11,
            "unknown retry condition `5O3`",
            Some("did you mean `503`?"),
        ),
        (
            11,
            "unknown retry condition `rest`",
            Some("did you mean `reset`?"),
        ),
        (13, "max_pending must be 0 to 1000000, not -1", None),
    ];
    let want: Vec<_> = want
        .into_iter()
        .map(|(line, message, help)| (line, message.to_string(), help.map(str::to_string)))
        .collect();
    assert_eq!(found, want);
    let text = format!("{BASE}{snippet}");
    let shown = parse(&text).unwrap_err().to_string();
    assert!(shown.contains("t.toml:17:23"), "{shown}");
    assert!(
        shown.contains("= expected one of: fail_closed, fail_open"),
        "{shown}"
    );
}
