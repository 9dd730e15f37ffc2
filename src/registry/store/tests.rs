use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::registry::Upsert;

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sluice-registry-{}-{test}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A fixed wall clock, so that expiries in the file are known.
const WALL: u64 = 1_767_225_600;

fn wall(plus: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(WALL + plus)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn reg(pool: &str, address: &str, weight: u64, ttl_seconds: Option<u64>) -> Registration {
    Registration::new(pool, address, weight, ttl_seconds).unwrap()
}

/// `api`: a:1 for ever, weight 3; b:1 with 30 s; `web`: [::1]:8080 with 10 s.
fn sample(dir: &Path, t0: Instant) -> Registry {
    let mut registry = Registry::empty(dir);
    for r in [
        reg("api", "a:1", 3, None),
        reg("api", "b:1", 1, Some(30)),
        reg("web", "[::1]:8080", 1, Some(10)),
    ] {
        assert_eq!(registry.upsert(r, t0).unwrap(), Upsert::Created);
    }
    registry
}

/// Pool, address, weight, TTL, expiry.
type Row = (String, String, u32, Option<Duration>, Option<Instant>);

fn summary(registry: &Registry) -> Vec<Row> {
    registry
        .iter()
        .map(|r| {
            (
                r.pool.clone(),
                r.address.clone(),
                r.weight,
                r.ttl,
                r.expires_at,
            )
        })
        .collect()
}

#[test]
fn the_file_is_versioned_pretty_json_with_wall_clock_expiries() {
    let dir = TempDir::new("format");
    let t0 = Instant::now();
    let file = sample(&dir.0, t0).to_state_file_at(t0, wall(0));
    assert_eq!(file.path(), dir.0.join("registrations.json"));
    let expected = format!(
        r#"{{
  "version": 1,
  "registrations": [
    {{
      "pool": "api",
      "address": "a:1",
      "weight": 3
    }},
    {{
      "pool": "api",
      "address": "b:1",
      "weight": 1,
      "ttl_seconds": 30,
      "expires_at_unix": {}
    }},
    {{
      "pool": "web",
      "address": "[::1]:8080",
      "weight": 1,
      "ttl_seconds": 10,
      "expires_at_unix": {}
    }}
  ]
}}
"#,
        WALL + 30,
        WALL + 10
    );
    assert_eq!(String::from_utf8_lossy(file.bytes()), expected);
    file.write().unwrap();
    assert_eq!(
        fs::read_to_string(dir.0.join("registrations.json")).unwrap(),
        expected
    );
}

#[test]
fn round_trip_keeps_entries_and_remaining_ttls() {
    let dir = TempDir::new("round-trip");
    let t0 = Instant::now();
    let saved = sample(&dir.0, t0);
    // Saved 4 s after registering: 26 s and 6 s left.
    saved
        .to_state_file_at(t0 + secs(4), wall(4))
        .write()
        .unwrap();

    // Loaded by a new process 2 s later: 24 s and 4 s left, counted from its own `now`.
    let t1 = t0 + secs(100);
    let loaded = Registry::load_at(&dir.0, t1, wall(6)).unwrap();
    assert_eq!(
        summary(&loaded),
        [
            ("api".into(), "a:1".into(), 3, None, None),
            (
                "api".into(),
                "b:1".into(),
                1,
                Some(secs(30)),
                Some(t1 + secs(24))
            ),
            (
                "web".into(),
                "[::1]:8080".into(),
                1,
                Some(secs(10)),
                Some(t1 + secs(4))
            ),
        ]
    );
    assert_eq!(loaded.path(), saved.path());

    // Loaded 10 s after saving: web's 6 s ran out while sluice was down, so it is gone.
    let loaded = Registry::load_at(&dir.0, t1, wall(14)).unwrap();
    let left: Vec<_> = loaded.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(left, ["a:1", "b:1"]);
    assert_eq!(loaded.next_expiry(), Some(t1 + secs(16)));
    // Exactly at its expiry counts as expired, as in `expire`.
    let loaded = Registry::load_at(&dir.0, t1, wall(30)).unwrap();
    assert_eq!(loaded.len(), 1);
}

#[test]
fn a_partial_second_is_rounded_up_and_an_expired_entry_is_not_saved() {
    let dir = TempDir::new("rounding");
    let t0 = Instant::now();
    let registry = sample(&dir.0, t0);
    let file = registry.to_state_file_at(t0 + Duration::from_millis(10_500), wall(0));
    let text = String::from_utf8_lossy(file.bytes()).into_owned();
    // b:1 has 19.5 s left: saved as 20.
    assert!(
        text.contains(&format!("\"expires_at_unix\": {}", WALL + 20)),
        "{text}"
    );
    assert!(!text.contains("[::1]:8080"), "web's 10 s were over: {text}");
}

#[test]
fn a_wall_clock_stepped_back_never_stretches_a_ttl() {
    let dir = TempDir::new("clock");
    let t0 = Instant::now();
    sample(&dir.0, t0)
        .to_state_file_at(t0, wall(0))
        .write()
        .unwrap();
    // An hour earlier by the wall clock: still at most the TTL.
    let loaded = Registry::load_at(&dir.0, t0, UNIX_EPOCH + secs(WALL - 3600)).unwrap();
    assert_eq!(loaded.next_expiry(), Some(t0 + secs(10)));
}

#[test]
fn nothing_on_disk_is_no_registrations() {
    let dir = TempDir::new("missing");
    let t0 = Instant::now();
    let registry = Registry::load(&dir.0, t0).unwrap();
    assert!(registry.is_empty());
    let registry = Registry::load(&dir.0.join("not").join("made"), t0).unwrap();
    assert!(registry.is_empty());
}

#[test]
fn save_creates_the_directory() {
    let dir = TempDir::new("create");
    let state = dir.0.join("a").join("b");
    let t0 = Instant::now();
    sample(&state, t0).save(t0).unwrap();
    assert_eq!(Registry::load(&state, t0).unwrap().len(), 3);
    assert!(
        !state.join(TMP_NAME).exists(),
        "the temporary file was renamed"
    );
}

/// A crash between writing the temporary file and renaming it leaves the old file in place and
/// a temporary one (whole or partial) beside it: `load` reads the old one, the next save
/// replaces both.
#[test]
fn a_crash_mid_write_leaves_the_old_file() {
    let dir = TempDir::new("crash");
    let t0 = Instant::now();
    let mut registry = sample(&dir.0, t0);
    registry.save(t0).unwrap();
    fs::write(
        dir.0.join(TMP_NAME),
        b"{\n  \"version\": 1,\n  \"registrations\": [\n    {",
    )
    .unwrap();

    let loaded = Registry::load(&dir.0, t0).unwrap();
    assert_eq!(summary(&loaded), summary(&registry));

    registry.remove("api", "a:1").unwrap();
    registry.save(t0).unwrap();
    assert!(!dir.0.join(TMP_NAME).exists());
    assert_eq!(
        summary(&Registry::load(&dir.0, t0).unwrap()),
        summary(&registry)
    );
}

#[test]
fn a_corrupt_file_is_an_error_naming_it_and_can_be_set_aside() {
    let dir = TempDir::new("corrupt");
    let t0 = Instant::now();
    let path = dir.0.join(FILE_NAME);
    fs::write(&path, b"{\"version\": 1, \"registrations\": [").unwrap();

    let e = Registry::load(&dir.0, t0).unwrap_err();
    assert!(e.is_corrupt() && !e.is_bad_request(), "{e}");
    let message = e.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("EOF while parsing"), "{message}");

    let aside = set_aside_at(&dir.0, wall(0)).unwrap();
    assert_eq!(
        aside,
        dir.0.join(format!("registrations.json.corrupt-{WALL}"))
    );
    assert!(!path.exists());
    assert_eq!(
        fs::read(&aside).unwrap(),
        b"{\"version\": 1, \"registrations\": ["
    );
    assert!(Registry::load(&dir.0, t0).unwrap().is_empty());

    // A second one in the same second does not overwrite the first.
    fs::write(&path, b"again").unwrap();
    let again = set_aside_at(&dir.0, wall(0)).unwrap();
    assert_eq!(
        again,
        dir.0.join(format!("registrations.json.corrupt-{WALL}-1"))
    );
    assert_eq!(
        fs::read(&aside).unwrap(),
        b"{\"version\": 1, \"registrations\": ["
    );
    assert_eq!(fs::read(&again).unwrap(), b"again");

    // Nothing to set aside is an I/O error, not a panic.
    let e = Registry::set_aside_corrupt(&dir.0).unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Io {
                op: "move aside",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn unusable_contents_are_corrupt() {
    let dir = TempDir::new("contents");
    let t0 = Instant::now();
    for (text, wanted) in [
        ("", "EOF while parsing"),
        (
            "[]",
            "expected an object with `version` and `registrations`",
        ),
        (
            "null",
            "expected an object with `version` and `registrations`",
        ),
        (
            r#"{"version": 2, "backends": {}}"#,
            "it has version 2, and this sluice reads version 1 only",
        ),
        (r#"{"version": 1}"#, "missing field `registrations`"),
        (
            r#"{"version": 1, "registrations": [], "extra": 1}"#,
            "unknown field `extra`",
        ),
        (
            r#"{"version": 1, "registrations": [{"pool": "p", "address": "a:1", "weight": 0}]}"#,
            "registration 0: `weight` must be 1 to 1000, not 0",
        ),
        (
            r#"{"version": 1, "registrations": [{"pool": "p", "address": "a", "weight": 1}]}"#,
            "registration 0: `address` `a` has no port",
        ),
        (
            r#"{"version": 1, "registrations": [
                {"pool": "p", "address": "a:1", "weight": 1},
                {"pool": "p", "address": "A:01", "weight": 2}]}"#,
            "registration 1: backend `a:1` of pool `p` appears twice",
        ),
        (
            r#"{"version": 1, "registrations": [
                {"pool": "p", "address": "a:1", "weight": 1, "ttl_seconds": 30}]}"#,
            "registration 0: `ttl_seconds` and `expires_at_unix` go together",
        ),
        (
            r#"{"version": 1, "registrations": [
                {"pool": "p", "address": "a:1", "weight": 1, "expires_at_unix": 5}]}"#,
            "registration 0: `ttl_seconds` and `expires_at_unix` go together",
        ),
        (
            r#"{"version": 1, "registrations": [
                {"pool": "p", "address": "a:1", "weight": 1, "ttl_seconds": 0, "expires_at_unix": 5}]}"#,
            "registration 0: `ttl_seconds` must be an integer from 1 to 86400",
        ),
    ] {
        fs::write(dir.0.join(FILE_NAME), text).unwrap();
        let e = Registry::load_at(&dir.0, t0, wall(0)).expect_err(text);
        assert!(e.is_corrupt() && !e.is_bad_request(), "{text}: {e}");
        assert!(
            e.to_string().contains(wanted),
            "{text}: `{e}` lacks `{wanted}`"
        );
    }
}

#[test]
fn io_trouble_is_sluices_not_the_clients() {
    let dir = TempDir::new("io");
    let t0 = Instant::now();
    // The state directory is a file.
    let not_a_dir = dir.0.join("file");
    fs::write(&not_a_dir, b"").unwrap();
    let e = sample(&not_a_dir, t0).save(t0).unwrap_err();
    assert!(
        matches!(e, RegistryError::Io { .. }) && !e.is_bad_request(),
        "{e}"
    );
    assert!(e.to_string().starts_with("cannot create directory"), "{e}");

    // The state file is a directory: unreadable, which is not the same as missing.
    fs::create_dir(dir.0.join(FILE_NAME)).unwrap();
    let e = Registry::load(&dir.0, t0).unwrap_err();
    assert!(
        matches!(e, RegistryError::Io { op: "read", .. }) && !e.is_corrupt(),
        "{e}"
    );
    // And cannot be replaced; the temporary file is cleaned up.
    let e = sample(&dir.0, t0).save(t0).unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Io {
                op: "rename into place",
                ..
            }
        ),
        "{e}"
    );
    assert!(!dir.0.join(TMP_NAME).exists());
}
