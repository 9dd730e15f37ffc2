use std::time::{Duration, Instant};

use super::*;

fn reg(pool: &str, address: &str, weight: u64, ttl_seconds: Option<u64>) -> Registration {
    Registration::new(pool, address, weight, ttl_seconds).unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn parse_accepts() {
    for (body, address, weight, ttl) in [
        (
            r#"{"address": "10.0.0.11:8080"}"#,
            "10.0.0.11:8080",
            1,
            None,
        ),
        (
            r#"{"address": "10.0.0.11:8080", "weight": 1, "ttl_seconds": 30}"#,
            "10.0.0.11:8080",
            1,
            Some(secs(30)),
        ),
        (
            r#"{"address": "[::1]:8080", "weight": 7}"#,
            "[::1]:8080",
            7,
            None,
        ),
        (
            r#"{"address": "App-2.internal:08080", "ttl_seconds": 86400}"#,
            "app-2.internal:8080",
            1,
            Some(secs(86_400)),
        ),
        (r#"{"address": "a:1", "weight": 1000}"#, "a:1", 1000, None),
        (
            r#"{"address": "a:1", "weight": null, "ttl_seconds": null}"#,
            "a:1",
            1,
            None,
        ),
        (
            "\n {\"ttl_seconds\": 1, \"address\": \"a:1\"} \r\n",
            "a:1",
            1,
            Some(secs(1)),
        ),
    ] {
        let r = parse_request("api", body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(r.pool(), "api", "{body}");
        assert_eq!(r.address(), address, "{body}");
        assert_eq!(r.weight(), weight, "{body}");
        assert_eq!(r.ttl(), ttl, "{body}");
        assert_eq!(r.expires_at(), None, "{body}");
    }
}

#[test]
fn parse_rejects_naming_the_field_and_range() {
    for (body, wanted) in [
        ("", &["request body is empty"][..]),
        ("  \n", &["request body is empty"]),
        (
            "address=a:1",
            &["not valid JSON", r#"{"address": "10.0.0.11:8080""#],
        ),
        (r#"{"address": "a:1""#, &["not valid JSON"]),
        (r#"{"address": "a:1"} x"#, &["not valid JSON"]),
        ("[]", &["the request body is an array, not a JSON object"]),
        (r#"["a:1", 2, 30]"#, &["is an array, not a JSON object"]),
        (r#""a:1""#, &["is a string, not a JSON object"]),
        ("30", &["is a number, not a JSON object"]),
        ("null", &["is null, not a JSON object"]),
        ("[", &["not valid JSON"]),
        (
            r#"{"address": "a:1", "weight": {}}"#,
            &["`weight`", "not `{}`"],
        ),
        ("{}", &["`address` is required"]),
        (r#"{"address": null}"#, &["`address` is required"]),
        (r#"{"weight": 2}"#, &["`address` is required"]),
        (
            r#"{"address": 8080}"#,
            &["`address` `8080` is not a string"],
        ),
        (
            r#"{"address": "app"}"#,
            &["`address` `app` has no port", "host:port"],
        ),
        (
            r#"{"address": "app:99999"}"#,
            &["above 65535", "1 to 65535"],
        ),
        (
            r#"{"address": "app:0"}"#,
            &["`address` `app:0` has port 0", "1 to 65535"],
        ),
        (r#"{"address": ":80"}"#, &["no host"]),
        (r#"{"address": "::1:80"}"#, &["brackets"]),
        (
            r#"{"address": "a:1", "weight": 0}"#,
            &["`weight` must be 1 to 1000, not 0", "DELETE /api/pools/"],
        ),
        (
            r#"{"address": "a:1", "weight": 1001}"#,
            &["`weight` must be an integer from 1 to 1000, not `1001`"],
        ),
        (
            r#"{"address": "a:1", "weight": 4294967297}"#,
            &["`weight`", "not `4294967297`"],
        ),
        (
            r#"{"address": "a:1", "weight": -1}"#,
            &["`weight`", "not `-1`"],
        ),
        (
            r#"{"address": "a:1", "weight": 1.5}"#,
            &["`weight`", "not `1.5`"],
        ),
        (
            r#"{"address": "a:1", "weight": "3"}"#,
            &["`weight`", r#"not `"3"`"#],
        ),
        (
            r#"{"address": "a:1", "weight": 1e400}"#,
            &["not valid JSON"],
        ),
        (
            r#"{"address": "a:1", "ttl_seconds": 0}"#,
            &[
                "`ttl_seconds` must be an integer from 1 to 86400 (one day), not `0`",
                "omit it",
            ],
        ),
        (
            r#"{"address": "a:1", "ttl_seconds": 86401}"#,
            &["`ttl_seconds`", "not `86401`"],
        ),
        (
            r#"{"address": "a:1", "ttl_seconds": 30.0}"#,
            &["`ttl_seconds`", "not `30.0`"],
        ),
        (
            r#"{"address": "a:1", "ttl_seconds": "30s"}"#,
            &["`ttl_seconds`", r#"not `"30s"`"#],
        ),
        (
            r#"{"address": "a:1", "ttl_seconds": [30]}"#,
            &["`ttl_seconds`", "not `[30]`"],
        ),
        (
            r#"{"address": "a:1", "wieght": 2}"#,
            &[
                "unknown field `wieght`",
                "`address`, `weight`, `ttl_seconds`",
            ],
        ),
        (
            r#"{"address": "a:1", "pool": "api"}"#,
            &["not a registration: unknown field `pool`"],
        ),
        (
            r#"{"address": "a:1", "weight": 2, "weight": 3}"#,
            &["duplicate field `weight`"],
        ),
    ] {
        let e = parse_request("api", body.as_bytes()).expect_err(body);
        assert!(e.is_bad_request(), "{body}: {e}");
        assert!(!e.is_corrupt(), "{body}: {e}");
        let message = e.to_string();
        for w in wanted {
            assert!(message.contains(w), "{body}: `{message}` lacks `{w}`");
        }
    }
}

#[test]
fn parse_echoes_long_values_cut_short() {
    let body = format!(r#"{{"address": "{}"}}"#, "x".repeat(100_000));
    let e = parse_request("api", body.as_bytes()).unwrap_err();
    assert!(e.to_string().len() < 300, "{e}");
    let body = format!(r#"{{"address": "a:1", "weight": "{}"}}"#, "é".repeat(1000));
    let e = parse_request("api", body.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("...`"), "{e}");
}

/// Every prefix of a valid body, and every byte of it replaced by a handful of others, gives an
/// answer rather than a panic; most are errors the client caused.
#[test]
fn parse_never_panics() {
    let body = br#"{"address": "[fd00::1]:8080", "weight": 3, "ttl_seconds": 30}"#;
    for end in 0..body.len() {
        let e = parse_request("api", &body[..end]).unwrap_err();
        assert!(e.is_bad_request(), "{e}");
    }
    for i in 0..body.len() {
        for b in [0u8, b'"', b'{', b'}', b':', b'[', b']', b'9', b'-', 0xff] {
            let mut mutated = body.to_vec();
            mutated[i] = b;
            if let Err(e) = parse_request("api", &mutated) {
                assert!(e.is_bad_request(), "{e}");
            }
        }
    }
}

#[test]
fn new_checks_ranges_as_parse_does() {
    assert!(matches!(
        Registration::new("p", "a:1", 0, None),
        Err(RegistryError::WeightZero)
    ));
    assert!(matches!(
        Registration::new("p", "a:1", 1001, None),
        Err(RegistryError::Weight(_))
    ));
    assert!(matches!(
        Registration::new("p", "a:1", u64::MAX, None),
        Err(RegistryError::Weight(_))
    ));
    assert!(matches!(
        Registration::new("p", "a:1", 1, Some(0)),
        Err(RegistryError::Ttl(_))
    ));
    assert!(matches!(
        Registration::new("p", "a:1", 1, Some(u64::MAX)),
        Err(RegistryError::Ttl(_))
    ));
    assert!(matches!(
        Registration::new("p", "a", 1, None),
        Err(RegistryError::Address { .. })
    ));
}

#[test]
fn upsert_creates_renews_and_updates() {
    let t0 = Instant::now();
    let mut registry = Registry::empty(Path::new("unused"));
    assert_eq!(
        registry.upsert(reg("api", "a:1", 1, Some(30)), t0).unwrap(),
        Upsert::Created
    );
    assert_eq!(registry.next_expiry(), Some(t0 + secs(30)));

    // Posting again, same weight: renewed, and the expiry moves to 30 s after the renewal.
    let t1 = t0 + secs(20);
    assert_eq!(
        registry
            .upsert(reg("api", "A:01", 1, Some(30)), t1)
            .unwrap(),
        Upsert::Renewed
    );
    assert_eq!(registry.len(), 1);
    assert_eq!(registry.next_expiry(), Some(t1 + secs(30)));
    assert!(
        registry.expire(t0 + secs(30)).is_empty(),
        "the renewal kept it"
    );

    // A new TTL with the same weight is still a renewal: the pool is unchanged.
    assert_eq!(
        registry.upsert(reg("api", "a:1", 1, Some(5)), t1).unwrap(),
        Upsert::Renewed
    );
    assert_eq!(registry.next_expiry(), Some(t1 + secs(5)));

    // A new weight is an update; without a TTL it no longer expires.
    assert_eq!(
        registry.upsert(reg("api", "a:1", 4, None), t1).unwrap(),
        Upsert::Updated
    );
    let held: Vec<_> = registry.iter().collect();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].weight(), held[0].ttl(), held[0].expires_at()),
        (4, None, None)
    );
    assert_eq!(registry.next_expiry(), None);

    // The same address in another pool is another registration.
    assert_eq!(
        registry.upsert(reg("web", "a:1", 4, None), t1).unwrap(),
        Upsert::Created
    );
    assert_eq!(registry.len(), 2);
}

#[test]
fn remove_finds_any_spelling_and_leaves_no_empty_pool() {
    let t0 = Instant::now();
    let mut registry = Registry::empty(Path::new("unused"));
    registry
        .upsert(reg("api", "[fd00::1]:8080", 2, None), t0)
        .unwrap();
    registry.upsert(reg("api", "app:80", 1, None), t0).unwrap();
    assert_eq!(registry.remove("web", "app:80"), None);
    assert_eq!(registry.remove("api", "app:81"), None);
    assert_eq!(registry.remove("api", "not an address"), None);
    let removed = registry.remove("api", "[FD00:0::1]:08080").unwrap();
    assert_eq!((removed.address(), removed.weight()), ("[fd00::1]:8080", 2));
    assert_eq!(
        registry.remove("api", "APP:80").unwrap().address(),
        "app:80"
    );
    assert!(registry.is_empty());
    assert_eq!(registry.len(), 0);
    assert_eq!(registry.for_pool("api").count(), 0);
}

#[test]
fn expire_returns_exactly_the_expired() {
    let t0 = Instant::now();
    let mut registry = Registry::empty(Path::new("unused"));
    registry.upsert(reg("api", "b:1", 1, Some(10)), t0).unwrap();
    registry.upsert(reg("api", "a:1", 1, Some(10)), t0).unwrap();
    registry.upsert(reg("api", "c:1", 1, Some(20)), t0).unwrap();
    registry.upsert(reg("api", "d:1", 1, None), t0).unwrap();
    registry
        .upsert(reg("web", "a:1", 1, Some(5)), t0 + secs(4))
        .unwrap();

    assert!(
        registry.expire(t0 + secs(8)).is_empty(),
        "nothing is due at 8 s"
    );
    assert_eq!(registry.next_expiry(), Some(t0 + secs(9)));

    let gone = registry.expire(t0 + secs(10));
    let gone: Vec<_> = gone.iter().map(|r| (r.pool(), r.address())).collect();
    assert_eq!(
        gone,
        [("api", "a:1"), ("api", "b:1"), ("web", "a:1")],
        "due at or before 10 s"
    );
    assert_eq!(registry.next_expiry(), Some(t0 + secs(20)));
    assert!(registry.expire(t0 + secs(19)).is_empty());

    let gone = registry.expire(t0 + secs(3600));
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].address(), "c:1");
    let left: Vec<_> = registry.iter().map(Registration::address).collect();
    assert_eq!(left, ["d:1"], "without a TTL it never expires");
    assert_eq!(registry.next_expiry(), None);
}

#[tokio::test(start_paused = true)]
async fn expire_follows_paused_time() {
    let now = || tokio::time::Instant::now().into_std();
    let mut registry = Registry::empty(Path::new("unused"));
    registry
        .upsert(reg("api", "a:1", 1, Some(30)), now())
        .unwrap();
    tokio::time::advance(secs(29)).await;
    assert!(registry.expire(now()).is_empty());
    tokio::time::advance(secs(1)).await;
    assert_eq!(registry.expire(now()).len(), 1);
}

#[test]
fn iteration_is_by_pool_then_address() {
    let t0 = Instant::now();
    let mut registry = Registry::empty(Path::new("unused"));
    for (pool, address) in [
        ("web", "b:1"),
        ("api", "z:1"),
        ("web", "a:1"),
        ("api", "[::1]:1"),
    ] {
        registry.upsert(reg(pool, address, 1, None), t0).unwrap();
    }
    let all: Vec<_> = registry.iter().map(|r| (r.pool(), r.address())).collect();
    assert_eq!(
        all,
        [
            ("api", "[::1]:1"),
            ("api", "z:1"),
            ("web", "a:1"),
            ("web", "b:1")
        ]
    );
    let web: Vec<_> = registry
        .for_pool("web")
        .map(Registration::address)
        .collect();
    assert_eq!(web, ["a:1", "b:1"]);
    assert_eq!(registry.for_pool("nope").count(), 0);
}

#[test]
fn a_full_registry_refuses_new_backends_only() {
    let t0 = Instant::now();
    let mut registry = Registry::empty(Path::new("unused"));
    for i in 0..MAX_REGISTRATIONS {
        let address = format!("10.0.{}.{}:80", i / 256, i % 256);
        registry.upsert(reg("api", &address, 1, None), t0).unwrap();
    }
    let e = registry
        .upsert(reg("api", "app:80", 1, None), t0)
        .unwrap_err();
    assert!(
        matches!(e, RegistryError::Full) && e.is_bad_request(),
        "{e}"
    );
    assert_eq!(
        registry
            .upsert(reg("api", "10.0.0.0:80", 1, None), t0)
            .unwrap(),
        Upsert::Renewed
    );
    assert_eq!(
        registry
            .upsert(reg("api", "10.0.0.0:80", 2, None), t0)
            .unwrap(),
        Upsert::Updated
    );
    registry.remove("api", "10.0.0.0:80").unwrap();
    assert_eq!(
        registry.upsert(reg("api", "app:80", 1, None), t0).unwrap(),
        Upsert::Created
    );
}
