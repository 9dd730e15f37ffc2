//! The answer to `POST /api/reload` says what changed, by identity, and which changed settings
//! wait for a restart; `GET /api/config` shows the new config with its generation.

use crate::support::reload::{config, Reloadable, ADMIN};
use crate::support::TestBackend;

#[test]
fn the_report_names_what_changed_and_what_needs_a_restart() {
    let [a, b, c, d] = ["a", "b", "c", "d"].map(TestBackend::start);
    let (a, b, c, d) = (a.addr, b.addr, c.addr, d.addr);
    let before = format!(
        r#"{ADMIN}
[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"

[[route]]
pool = "app"

[[route]]
path_prefix = "/old"
pool = "old"

[pool.app]
backends = [{{ address = "{a}" }}, {{ address = "{b}" }}]

[pool.old]
backends = [{{ address = "{c}" }}]
"#
    );
    let after = format!(
        r#"{ADMIN}
[server]
workers = 3

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"
idle_timeout = "30s"

[[route]]
pool = "app"

[[route]]
path_prefix = "/old"
pool = "new"

[pool.app]
algorithm = "random"
backends = [{{ address = "{a}", weight = 2 }}, {{ address = "{d}" }}]

[pool.new]
backends = [{{ address = "{c}" }}]
"#
    );
    let sluice = Reloadable::start(&before);
    let loaded_first = config(sluice.admin())["loaded_at"].clone();

    let reload = sluice.reload_ok(&after);
    assert_eq!(reload.generation(), 2);
    assert_eq!(reload.body["trigger"], "admin API");
    let changes = |kind, list| reload.changes(kind, list);
    assert_eq!(changes("listeners", "changed"), ["web"]);
    assert!(changes("listeners", "added").is_empty() && changes("listeners", "removed").is_empty());
    assert_eq!(changes("pools", "added"), ["new"]);
    assert_eq!(changes("pools", "removed"), ["old"]);
    assert_eq!(changes("pools", "changed"), ["app"]);
    assert_eq!(
        changes("backends", "added"),
        [format!("app/{d}"), format!("new/{c}")]
    );
    assert_eq!(
        changes("backends", "removed"),
        [format!("app/{b}"), format!("old/{c}")]
    );
    assert_eq!(changes("backends", "changed"), [format!("app/{a}")]);
    let (added, removed) = (changes("routes", "added"), changes("routes", "removed"));
    assert!(
        added.len() == 1 && added[0].contains("/old") && added[0].contains("new"),
        "{added:?}"
    );
    assert!(
        removed.len() == 1 && removed[0].contains("/old") && removed[0].contains("old"),
        "{removed:?}"
    );
    assert_eq!(
        reload.body["restart_required"],
        serde_json::json!(["server.workers"])
    );

    // A reload of the same file changes nothing, and says so.
    let same = sluice.reload_ok(&after);
    assert_eq!(same.generation(), 3);
    for kind in ["listeners", "routes", "pools", "backends"] {
        for list in ["added", "removed", "changed"] {
            assert!(same.changes(kind, list).is_empty(), "{:#}", same.body);
        }
    }

    let running = config(sluice.admin());
    assert_eq!(running["generation"], 3);
    // RFC 3339 UTC timestamps of one format sort as text.
    let (first, now) = (
        loaded_first.as_str().unwrap(),
        running["loaded_at"].as_str().unwrap(),
    );
    assert!(now.ends_with('Z') && now >= first, "{first} then {now}");
    let text = running["config"].to_string();
    assert!(
        text.contains(&d.to_string()) && !text.contains(&b.to_string()),
        "{text}"
    );
}
