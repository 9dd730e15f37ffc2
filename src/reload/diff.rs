//! What a reload changed: the listeners, routes, pools and backends that were added, removed
//! or changed between two validated configurations, for the log line and the
//! `POST /api/reload` answer. Pure: it compares two `Config`s and touches nothing.
//!
//! Each kind of thing is compared by its identity, never by its position in the file, so
//! moving a table around is not a change:
//! - a listener by its name; changed when any of its settings differs, `bind` included;
//! - a pool by its name; changed when a pool-level setting differs. Its backend list is not
//!   a pool-level setting: backends are reported on their own, so that adding one backend
//!   does not read as "the whole pool changed";
//! - a backend by `pool/address`, the address as written in the file (the key its runtime
//!   state is carried over by); changed when its weight or resolved address differs. The
//!   backends of an added or removed pool are added or removed with it;
//! - a route has no name, so it is described by everything it is (`listener=web
//!   host=api.example.com path=/v1 -> pool=api`) and routes are compared as multisets of those
//!   descriptions: a route is never "changed", a route sent to another pool is one removed and
//!   one added. Route order is not compared: the router orders routes by specificity, and
//!   file order only breaks the tie between a route on every listener and one on a named
//!   listener with the same host and path, so swapping those two changes which one wins
//!   without showing here.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::config::{Backend, Config, HostMatch, Listener, Pool, Route};

/// The identities of the things of one kind that a reload added, removed or changed, each
/// list sorted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Compares two sets of things keyed by identity; `same` says whether the two versions of
    /// a thing kept under one identity are equal.
    fn keyed<T>(
        old: &BTreeMap<String, T>,
        new: &BTreeMap<String, T>,
        same: impl Fn(&T, &T) -> bool,
    ) -> Changes {
        let mut changes = Changes::default();
        for (key, new_value) in new {
            match old.get(key) {
                None => changes.added.push(key.clone()),
                Some(old_value) if !same(old_value, new_value) => changes.changed.push(key.clone()),
                Some(_) => {}
            }
        }
        changes.removed = old
            .keys()
            .filter(|key| !new.contains_key(*key))
            .cloned()
            .collect();
        // Map order is already key order; sorting again keeps the promise explicit and cheap.
        changes.sort();
        changes
    }

    /// The multiset difference of two lists of descriptions: each one present more often in
    /// `new` is added (once per extra copy), each one present more often in `old` is removed.
    fn multiset(old: Vec<String>, new: Vec<String>) -> Changes {
        let mut counts: BTreeMap<String, i64> = BTreeMap::new();
        for description in old {
            *counts.entry(description).or_default() -= 1;
        }
        for description in new {
            *counts.entry(description).or_default() += 1;
        }
        let mut changes = Changes::default();
        for (description, count) in counts {
            let list = if count > 0 {
                &mut changes.added
            } else {
                &mut changes.removed
            };
            for _ in 0..count.unsigned_abs() {
                list.push(description.clone());
            }
        }
        changes.sort();
        changes
    }

    fn sort(&mut self) {
        self.added.sort();
        self.removed.sort();
        self.changed.sort();
    }
}

/// What changed between two configurations, by kind of thing.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigDiff {
    pub listeners: Changes,
    pub routes: Changes,
    pub pools: Changes,
    pub backends: Changes,
}

impl ConfigDiff {
    /// What a reload from `old` to `new` changes. The settings outside listeners, routes and
    /// pools (`[server]`, `[admin]`, `[log]`) are not compared.
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        ConfigDiff {
            listeners: Changes::keyed(&listeners(old), &listeners(new), same_listener),
            routes: Changes::multiset(routes(old), routes(new)),
            pools: Changes::keyed(&pools(old), &pools(new), same_pool_settings),
            backends: Changes::keyed(&backends(old), &backends(new), same_backend),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
            && self.routes.is_empty()
            && self.pools.is_empty()
            && self.backends.is_empty()
    }

    /// One line for the log: `listeners +1 -0 ~0, routes +0 -1, pools +0 -0 ~1, backends
    /// +2 -1 ~1` (added, removed, changed; routes are never changed), or `no changes`.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no changes".to_string();
        }
        let mut out = String::new();
        let kinds = [
            ("listeners", &self.listeners),
            ("routes", &self.routes),
            ("pools", &self.pools),
            ("backends", &self.backends),
        ];
        for (i, (kind, changes)) in kinds.into_iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(
                out,
                "{kind} +{} -{}",
                changes.added.len(),
                changes.removed.len()
            );
            if kind != "routes" {
                let _ = write!(out, " ~{}", changes.changed.len());
            }
        }
        out
    }
}

fn listeners(config: &Config) -> BTreeMap<String, &Listener> {
    config
        .listeners
        .iter()
        .map(|l| (l.name.clone(), l))
        .collect()
}

fn pools(config: &Config) -> BTreeMap<String, &Pool> {
    config.pools.iter().map(|p| (p.name.clone(), p)).collect()
}

fn backends(config: &Config) -> BTreeMap<String, &Backend> {
    config
        .pools
        .iter()
        .flat_map(|p| {
            p.backends
                .iter()
                .map(move |b| (format!("{}/{}", p.name, b.address), b))
        })
        .collect()
}

fn routes(config: &Config) -> Vec<String> {
    config
        .routes
        .iter()
        .map(|r| describe_route(config, r))
        .collect()
}

/// `listener=web host=api.example.com path=/v1 -> pool=api`, with names rather than the
/// indices the route holds (indices shift when a table above moves), `*` for every listener
/// and any host, `*.example.com` for a wildcard.
fn describe_route(config: &Config, route: &Route) -> String {
    let listener = route
        .listener
        .and_then(|i| config.listeners.get(i))
        .map_or("*", |l| l.name.as_str());
    let host = match &route.host {
        HostMatch::Any => "*".to_string(),
        HostMatch::Exact(host) => host.clone(),
        HostMatch::Wildcard(suffix) => format!("*{suffix}"),
    };
    // Validation guarantees the index; `?` keeps a broken one visible rather than a panic.
    let pool = config
        .pools
        .get(route.pool)
        .map_or("?", |p| p.name.as_str());
    let limit = match route.max_body_bytes {
        None => String::new(),
        Some(limit) => format!(" max_body_bytes={}", limit.unwrap_or(0)),
    };
    format!(
        "listener={listener} host={host} path={} -> pool={pool}{limit}",
        route.path_prefix
    )
}

// The config types mostly lack `PartialEq` (deliberately: equality of a whole pool is not a
// question the rest of sluice asks), so the comparisons are spelled out here. Each destructures
// its type completely, so a field added later fails to compile here until it is compared.

/// Whether two listeners with the same name serve alike (every setting but the name).
pub(crate) fn same_listener(old: &&Listener, new: &&Listener) -> bool {
    let Listener {
        name: _,
        bind,
        header_read_timeout,
        idle_timeout,
        request_body_timeout,
        send_timeout,
        max_header_bytes,
        max_uri_bytes,
        trusted_proxies,
        max_body_bytes,
        tls,
        redirect_https,
        hsts,
    } = old;
    *bind == new.bind
        && *header_read_timeout == new.header_read_timeout
        && *idle_timeout == new.idle_timeout
        && *request_body_timeout == new.request_body_timeout
        && *send_timeout == new.send_timeout
        && *max_header_bytes == new.max_header_bytes
        && *max_uri_bytes == new.max_uri_bytes
        && *trusted_proxies == new.trusted_proxies
        && *max_body_bytes == new.max_body_bytes
        // A certificate rewritten in place is a change too (compared by content).
        && *tls == new.tls
        && *redirect_https == new.redirect_https
        && *hsts == new.hsts
}

/// Every pool-level setting except the backend list, which `backends` reports.
fn same_pool_settings(old: &&Pool, new: &&Pool) -> bool {
    let Pool {
        name: _,
        algorithm,
        hash_key,
        slow_start,
        protocol,
        backends: _,
        timeouts,
        all_unhealthy,
        health_check,
        outlier_detection,
        retry,
        limits,
        tls,
    } = old;
    let crate::config::Timeouts {
        connect,
        request,
        idle,
    } = timeouts;
    *algorithm == new.algorithm
        && *hash_key == new.hash_key
        && *slow_start == new.slow_start
        && *protocol == new.protocol
        && *connect == new.timeouts.connect
        && *request == new.timeouts.request
        && *idle == new.timeouts.idle
        && *all_unhealthy == new.all_unhealthy
        && *health_check == new.health_check
        && *outlier_detection == new.outlier_detection
        && *retry == new.retry
        && *limits == new.limits
        && *tls == new.tls
}

fn same_backend(old: &&Backend, new: &&Backend) -> bool {
    let Backend {
        address: _,
        resolved,
        weight,
    } = old;
    *resolved == new.resolved && *weight == new.weight
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use super::*;

    /// Two listeners, three routes (one per host form, one on every listener), two pools.
    const BASE: &str = r#"[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[listener]]
name = "internal"
bind = "127.0.0.1:8081"

[[route]]
listener = "web"
host = "api.example.com"
path_prefix = "/v1"
pool = "api"

[[route]]
host = "*.example.com"
pool = "static"

[[route]]
listener = "internal"
pool = "api"

[pool.api]
backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9002", weight = 2 },
]

[pool.static]
algorithm = "ring_hash"
backends = [{ address = "127.0.0.1:9101" }]
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// `BASE` with each `(from, to)` applied; `from` must occur exactly once, so an edit can
    /// never silently miss or hit the wrong table. An empty `from` appends `to` as a new table.
    fn edited(edits: &[(&str, &str)]) -> String {
        let mut text = BASE.to_string();
        for (from, to) in edits {
            if from.is_empty() {
                text = format!("{text}\n{to}");
                continue;
            }
            assert_eq!(text.matches(from).count(), 1, "`{from}` must occur once");
            text = text.replacen(from, to, 1);
        }
        text
    }

    fn changes(added: &[&str], removed: &[&str], changed: &[&str]) -> Changes {
        let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Changes {
            added: owned(added),
            removed: owned(removed),
            changed: owned(changed),
        }
    }

    fn listeners(c: Changes) -> ConfigDiff {
        ConfigDiff {
            listeners: c,
            ..ConfigDiff::default()
        }
    }

    fn pools(c: Changes) -> ConfigDiff {
        ConfigDiff {
            pools: c,
            ..ConfigDiff::default()
        }
    }

    fn backends(c: Changes) -> ConfigDiff {
        ConfigDiff {
            backends: c,
            ..ConfigDiff::default()
        }
    }

    fn routes(c: Changes) -> ConfigDiff {
        ConfigDiff {
            routes: c,
            ..ConfigDiff::default()
        }
    }

    const API_V1: &str = "listener=web host=api.example.com path=/v1 -> pool=api";
    const STATIC: &str = "listener=* host=*.example.com path=/ -> pool=static";
    const INTERNAL: &str = "listener=internal host=* path=/ -> pool=api";

    /// (what, edits to `BASE` as `(from, to)`, the diff from `BASE` to the edited file)
    type Case = (&'static str, Vec<(&'static str, &'static str)>, ConfigDiff);

    #[test]
    fn each_kind_of_change() {
        let cases: Vec<Case> = vec![
            ("nothing", vec![], ConfigDiff::default()),
            (
                "listener added",
                vec![(
                    "",
                    "[[listener]]\nname = \"extra\"\nbind = \"127.0.0.1:8082\"\n",
                )],
                listeners(changes(&["extra"], &[], &[])),
            ),
            (
                "listener bind",
                vec![("127.0.0.1:8081", "127.0.0.1:8091")],
                listeners(changes(&[], &[], &["internal"])),
            ),
            (
                "listener timeout",
                vec![(
                    "name = \"web\"\n",
                    "name = \"web\"\nidle_timeout = \"30s\"\n",
                )],
                listeners(changes(&[], &[], &["web"])),
            ),
            (
                "listener trusted proxies",
                vec![(
                    "name = \"web\"\n",
                    "name = \"web\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
                )],
                listeners(changes(&[], &[], &["web"])),
            ),
            (
                "listener body limit",
                vec![(
                    "name = \"internal\"\n",
                    "name = \"internal\"\nmax_body_bytes = 1048576\n",
                )],
                listeners(changes(&[], &[], &["internal"])),
            ),
            (
                "listener removed, with the route on it",
                vec![
                    (
                        "[[listener]]\nname = \"internal\"\nbind = \"127.0.0.1:8081\"\n\n",
                        "",
                    ),
                    ("[[route]]\nlistener = \"internal\"\npool = \"api\"\n", ""),
                ],
                ConfigDiff {
                    listeners: changes(&[], &["internal"], &[]),
                    routes: changes(&[], &[INTERNAL], &[]),
                    ..ConfigDiff::default()
                },
            ),
            (
                // A route names its listener, so a rename changes the route's description too.
                "listener renamed",
                vec![
                    ("name = \"internal\"", "name = \"private\""),
                    ("listener = \"internal\"", "listener = \"private\""),
                ],
                ConfigDiff {
                    listeners: changes(&["private"], &["internal"], &[]),
                    routes: changes(
                        &["listener=private host=* path=/ -> pool=api"],
                        &[INTERNAL],
                        &[],
                    ),
                    ..ConfigDiff::default()
                },
            ),
            (
                "route removed",
                vec![("[[route]]\nlistener = \"internal\"\npool = \"api\"\n", "")],
                routes(changes(&[], &[INTERNAL], &[])),
            ),
            (
                "route added",
                vec![(
                    "",
                    "[[route]]\nhost = \"www.example.com\"\npool = \"static\"\n",
                )],
                routes(changes(
                    &["listener=* host=www.example.com path=/ -> pool=static"],
                    &[],
                    &[],
                )),
            ),
            (
                "route moved to another pool",
                vec![(
                    "listener = \"internal\"\npool = \"api\"",
                    "listener = \"internal\"\npool = \"static\"",
                )],
                routes(changes(
                    &["listener=internal host=* path=/ -> pool=static"],
                    &[INTERNAL],
                    &[],
                )),
            ),
            (
                "route host changed",
                vec![("host = \"*.example.com\"", "host = \"*.example.org\"")],
                routes(changes(
                    &["listener=* host=*.example.org path=/ -> pool=static"],
                    &[STATIC],
                    &[],
                )),
            ),
            (
                "route path changed",
                vec![("path_prefix = \"/v1\"", "path_prefix = \"/v2\"")],
                routes(changes(
                    &["listener=web host=api.example.com path=/v2 -> pool=api"],
                    &[API_V1],
                    &[],
                )),
            ),
            (
                "pool algorithm",
                vec![("[pool.api]", "[pool.api]\nalgorithm = \"least_requests\"")],
                pools(changes(&[], &[], &["api"])),
            ),
            (
                // `static` hashes by the default `client_ip`: only the key changes.
                "pool hash key",
                vec![("\"ring_hash\"", "\"ring_hash\"\nhash_key = \"path\"")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool slow start",
                vec![("[pool.api]", "[pool.api]\nslow_start = \"30s\"")],
                pools(changes(&[], &[], &["api"])),
            ),
            (
                "pool timeouts",
                vec![("", "[pool.static.timeouts]\nrequest = \"5s\"\n")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool all_unhealthy",
                vec![("[pool.api]", "[pool.api]\nall_unhealthy = \"fail_open\"")],
                pools(changes(&[], &[], &["api"])),
            ),
            (
                "pool health check",
                vec![("", "[pool.static.health_check]\npath = \"/healthz\"\n")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool outlier detection",
                vec![("", "[pool.static.outlier_detection]\n")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool retry",
                vec![("", "[pool.static.retry]\nattempts = 1\n")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool limits",
                vec![("", "[pool.static.limits]\nmax_pending = 0\n")],
                pools(changes(&[], &[], &["static"])),
            ),
            (
                "pool added, with its backends",
                vec![(
                    "",
                    "[pool.spare]\nbackends = [{ address = \"127.0.0.1:9201\" }]\n",
                )],
                ConfigDiff {
                    pools: changes(&["spare"], &[], &[]),
                    backends: changes(&["spare/127.0.0.1:9201"], &[], &[]),
                    ..ConfigDiff::default()
                },
            ),
            (
                "pool renamed: removed with its backends and routes, added with new ones",
                vec![
                    ("[pool.static]", "[pool.assets]"),
                    ("pool = \"static\"", "pool = \"assets\""),
                ],
                ConfigDiff {
                    pools: changes(&["assets"], &["static"], &[]),
                    backends: changes(&["assets/127.0.0.1:9101"], &["static/127.0.0.1:9101"], &[]),
                    routes: changes(
                        &["listener=* host=*.example.com path=/ -> pool=assets"],
                        &[STATIC],
                        &[],
                    ),
                    ..ConfigDiff::default()
                },
            ),
            (
                "backend added: the pool itself is unchanged",
                vec![("9101\" }", "9101\" }, { address = \"127.0.0.1:9102\" }")],
                backends(changes(&["static/127.0.0.1:9102"], &[], &[])),
            ),
            (
                "backend removed",
                vec![("  { address = \"127.0.0.1:9001\" },\n", "")],
                backends(changes(&[], &["api/127.0.0.1:9001"], &[])),
            ),
            (
                "backend weight",
                vec![("weight = 2", "weight = 3")],
                backends(changes(&[], &[], &["api/127.0.0.1:9002"])),
            ),
            (
                "backend address: identity is the address, so one removed and one added",
                vec![("127.0.0.1:9101", "127.0.0.1:9102")],
                backends(changes(
                    &["static/127.0.0.1:9102"],
                    &["static/127.0.0.1:9101"],
                    &[],
                )),
            ),
            (
                "several kinds at once",
                vec![
                    ("127.0.0.1:8081", "127.0.0.1:8091"),
                    ("weight = 2", "weight = 5"),
                    ("[pool.api]", "[pool.api]\nalgorithm = \"random\""),
                    ("9101\" }", "9103\" }, { address = \"127.0.0.1:9102\" }"),
                ],
                ConfigDiff {
                    listeners: changes(&[], &[], &["internal"]),
                    pools: changes(&[], &[], &["api"]),
                    backends: changes(
                        &["static/127.0.0.1:9102", "static/127.0.0.1:9103"],
                        &["static/127.0.0.1:9101"],
                        &["api/127.0.0.1:9002"],
                    ),
                    ..ConfigDiff::default()
                },
            ),
        ];
        let old = parse(BASE);
        for (what, edits, want) in cases {
            let new = parse(&edited(&edits));
            let diff = ConfigDiff::between(&old, &new);
            assert_eq!(diff, want, "{what}");
            assert_eq!(diff.is_empty(), want == ConfigDiff::default(), "{what}");
        }
    }

    #[test]
    fn moving_tables_in_the_file_is_not_a_change() {
        // Pools, listeners, routes and backends all in another order: every index a route
        // holds now points elsewhere, yet nothing changed.
        let reordered = r#"[pool.static]
algorithm = "ring_hash"
backends = [{ address = "127.0.0.1:9101" }]

[pool.api]
backends = [
  { address = "127.0.0.1:9002", weight = 2 },
  { address = "127.0.0.1:9001" },
]

[[listener]]
name = "internal"
bind = "127.0.0.1:8081"

[[listener]]
name = "web"
bind = "127.0.0.1:8080"

[[route]]
listener = "internal"
pool = "api"

[[route]]
host = "*.EXAMPLE.com"
pool = "static"

[[route]]
listener = "web"
host = "api.example.com"
path_prefix = "/v1"
pool = "api"
"#;
        let old = parse(BASE);
        let new = parse(reordered);
        assert_ne!(
            old.pools[0].name, new.pools[0].name,
            "the test must reorder"
        );
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(diff, ConfigDiff::default());
        assert!(diff.is_empty());
        assert!(ConfigDiff::between(&new, &old).is_empty());
    }

    #[test]
    fn a_changed_resolution_changes_the_backend() {
        // A host name resolving elsewhere on reload: same written address, another socket.
        let old = parse(BASE);
        let mut new = old.clone();
        new.pools[1].backends[0].resolved = SocketAddr::from(([127, 0, 0, 2], 9101));
        assert_eq!(
            ConfigDiff::between(&old, &new),
            backends(changes(&[], &[], &["static/127.0.0.1:9101"]))
        );
    }

    #[test]
    fn routes_are_compared_as_multisets() {
        // Validation rejects identical routes, but runtime-built configs need not go through
        // it: one of two identical routes removed is one removal, not none.
        let old = parse(BASE);
        let mut two = old.clone();
        two.routes.push(old.routes[2].clone());
        assert_eq!(
            ConfigDiff::between(&two, &old),
            routes(changes(&[], &[INTERNAL], &[]))
        );
        assert_eq!(
            ConfigDiff::between(&old, &two),
            routes(changes(&[INTERNAL], &[], &[]))
        );
    }

    #[test]
    fn lists_are_sorted() {
        let old = parse(BASE);
        let new = parse(&edited(&[(
            "{ address = \"127.0.0.1:9101\" }",
            "{ address = \"127.0.0.1:9109\" }, { address = \"127.0.0.1:9103\" }, \
             { address = \"127.0.0.1:9105\" }",
        )]));
        let diff = ConfigDiff::between(&old, &new);
        assert_eq!(
            diff.backends.added,
            [
                "static/127.0.0.1:9103",
                "static/127.0.0.1:9105",
                "static/127.0.0.1:9109"
            ]
        );
    }

    #[test]
    fn summary_counts_each_kind() {
        let old = parse(BASE);
        assert_eq!(ConfigDiff::between(&old, &old).summary(), "no changes");
        let new = parse(&edited(&[
            ("127.0.0.1:8081", "127.0.0.1:8091"),
            ("[pool.api]", "[pool.api]\nalgorithm = \"random\""),
            ("weight = 2", "weight = 5"),
            (
                "listener = \"internal\"\npool = \"api\"",
                "listener = \"internal\"\npool = \"static\"",
            ),
            (
                "{ address = \"127.0.0.1:9101\" }",
                "{ address = \"127.0.0.1:9103\" }, { address = \"127.0.0.1:9102\" }",
            ),
        ]));
        assert_eq!(
            ConfigDiff::between(&old, &new).summary(),
            "listeners +0 -0 ~1, routes +1 -1, pools +0 -0 ~1, backends +2 -1 ~1"
        );
    }

    #[test]
    fn serializes_for_the_reload_answer() {
        let diff = backends(changes(&["p/127.0.0.1:1"], &[], &[]));
        let json = serde_json::to_value(&diff).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "listeners": { "added": [], "removed": [], "changed": [] },
                "routes": { "added": [], "removed": [], "changed": [] },
                "pools": { "added": [], "removed": [], "changed": [] },
                "backends": { "added": ["p/127.0.0.1:1"], "removed": [], "changed": [] },
            })
        );
    }
}
