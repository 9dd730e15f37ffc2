//! Route matching: pure, allocation-free.
//!
//! Precedence (SPEC): exact host > wildcard host > any host, then the longest `path_prefix`,
//! ties to the earlier route. Among wildcards the longer suffix is more specific
//! (`*.api.example.com` before `*.example.com`), as in nginx. Routes are sorted once when the
//! snapshot is built, so matching is the first hit of a linear scan.

use crate::config::{self, HostMatch};

#[derive(Debug, Clone)]
pub struct Route {
    pub host: HostMatch,
    pub path_prefix: String,
    /// Index into the snapshot's pools.
    pub pool: usize,
    /// This route's body limit instead of the listener's (`Some(None)`: none).
    pub max_body_bytes: Option<Option<u64>>,
}

/// The routes one listener serves, in match order.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// The router of listener `listener` (index into the config's listeners).
    pub fn for_listener(routes: &[config::Route], listener: usize) -> Router {
        let mut ordered: Vec<(usize, &config::Route)> = routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.listener.is_none_or(|l| l == listener))
            .collect();
        ordered.sort_by_key(|(index, r)| {
            let (class, suffix_len) = match &r.host {
                HostMatch::Exact(_) => (0, 0),
                HostMatch::Wildcard(s) => (1, usize::MAX - s.len()),
                HostMatch::Any => (2, 0),
            };
            (class, suffix_len, usize::MAX - r.path_prefix.len(), *index)
        });
        Router {
            routes: ordered
                .into_iter()
                .map(|(_, r)| Route {
                    host: r.host.clone(),
                    path_prefix: r.path_prefix.clone(),
                    pool: r.pool,
                    max_body_bytes: r.max_body_bytes,
                })
                .collect(),
        }
    }

    /// The route for a request. `host` may carry a port and any case; `path` is the request path.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        let host = host.map(strip_port);
        self.routes
            .iter()
            .find(|r| host_matches(&r.host, host) && path.starts_with(r.path_prefix.as_str()))
    }
}

fn host_matches(rule: &HostMatch, host: Option<&str>) -> bool {
    match (rule, host) {
        (HostMatch::Any, _) => true,
        (_, None) => false,
        (HostMatch::Exact(name), Some(h)) => h.eq_ignore_ascii_case(name),
        (HostMatch::Wildcard(suffix), Some(h)) => {
            h.len() > suffix.len()
                && h.is_char_boundary(h.len() - suffix.len())
                && h[h.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// `example.com:8080` -> `example.com`; `[::1]:8080` -> `[::1]`; a trailing dot is dropped too
/// (`example.com.` names the same host).
fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(listener: Option<usize>, host: &str, prefix: &str, pool: usize) -> config::Route {
        let host = match host {
            "" => HostMatch::Any,
            h if h.starts_with("*.") => HostMatch::Wildcard(h[1..].to_string()),
            h => HostMatch::Exact(h.to_string()),
        };
        config::Route {
            listener,
            host,
            path_prefix: prefix.to_string(),
            pool,
            max_body_bytes: None,
        }
    }

    fn pool_for(router: &Router, host: Option<&str>, path: &str) -> Option<usize> {
        router.find(host, path).map(|r| r.pool)
    }

    #[test]
    fn precedence_table() {
        let routes = [
            route(None, "", "/", 0),
            route(None, "", "/v1", 1),
            route(None, "*.example.com", "/", 2),
            route(None, "api.example.com", "/", 3),
            route(None, "api.example.com", "/v1", 4),
            route(None, "*.eu.example.com", "/", 5),
            route(None, "", "/v1", 6), // same as route 1: the earlier one wins
        ];
        let r = Router::for_listener(&routes, 0);
        let cases: &[(Option<&str>, &str, usize)] = &[
            (Some("api.example.com"), "/v1/users", 4),
            (Some("API.Example.COM:8443"), "/v1", 4),
            (Some("api.example.com"), "/other", 3),
            (Some("www.example.com"), "/v1", 2),
            (Some("a.b.example.com"), "/", 2),
            (Some("x.eu.example.com"), "/", 5),
            (Some("example.com"), "/v1/x", 1),
            (Some("example.com."), "/x", 0),
            (None, "/v1", 1),
            (None, "/", 0),
            (Some("[::1]:80"), "/", 0),
        ];
        for (host, path, want) in cases {
            assert_eq!(pool_for(&r, *host, path), Some(*want), "{host:?} {path}");
        }
    }

    #[test]
    fn wildcard_needs_a_label_before_the_suffix() {
        let r = Router::for_listener(&[route(None, "*.example.com", "/", 0)], 0);
        assert_eq!(pool_for(&r, Some("example.com"), "/"), None);
        assert_eq!(pool_for(&r, Some(".example.com"), "/"), None);
        assert_eq!(pool_for(&r, Some("a.example.com"), "/"), Some(0));
        assert_eq!(pool_for(&r, Some("notexample.com"), "/"), None);
    }

    #[test]
    fn listener_scoped_routes_apply_only_to_their_listener() {
        let routes = [route(Some(1), "", "/", 7), route(None, "", "/api", 8)];
        let l0 = Router::for_listener(&routes, 0);
        let l1 = Router::for_listener(&routes, 1);
        assert_eq!(pool_for(&l0, None, "/"), None);
        assert_eq!(pool_for(&l0, None, "/api/x"), Some(8));
        assert_eq!(pool_for(&l1, None, "/"), Some(7));
        assert_eq!(pool_for(&l1, None, "/api"), Some(8));
    }

    #[test]
    fn no_match_is_none() {
        let r = Router::for_listener(&[route(None, "a.com", "/x", 0)], 0);
        assert_eq!(pool_for(&r, Some("b.com"), "/x"), None);
        assert_eq!(pool_for(&r, Some("a.com"), "/y"), None);
        assert_eq!(pool_for(&r, None, "/x"), None);
    }

    #[test]
    fn strip_port_cases() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("a.com.:80"), "a.com");
    }
}
