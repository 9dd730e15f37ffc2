//! Route checks: names that resolve, hosts and prefixes that can match, no shadowed duplicates.

use toml::Spanned;

use super::values::parse_host;
use super::Checker;
use crate::config::error::did_you_mean;
use crate::config::file;
use crate::config::{HostMatch, Route};

impl Checker<'_> {
    pub(super) fn routes(
        &mut self,
        routes: Vec<Spanned<file::RouteFile>>,
        listeners: &[String],
        pools: &[Spanned<String>],
    ) -> Vec<Route> {
        let pool_names: Vec<&str> = pools.iter().map(|p| p.get_ref().as_str()).collect();
        let listener_names: Vec<&str> = listeners.iter().map(String::as_str).collect();
        // Indices into `out` of the routes checked for duplicates, with where each starts.
        let mut seen: Vec<(usize, usize)> = Vec::new();
        let mut out = Vec::new();
        for route in routes {
            let span = route.span();
            let r = route.into_inner();
            let listener = r
                .listener
                .as_ref()
                .map(|name| self.lookup(name, "listener", &listener_names));
            let host = match &r.host {
                None => Some(HostMatch::Any),
                Some(host) => match parse_host(host.get_ref()) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        self.push(self.value_error(host.span(), e));
                        None
                    }
                },
            };
            let path_prefix = match &r.path_prefix {
                None => "/".to_string(),
                Some(prefix) => {
                    self.check_path_prefix(prefix);
                    prefix.get_ref().clone()
                }
            };
            let pool = self.lookup(&r.pool, "pool", &pool_names);
            self.later("strip_prefix", &r.strip_prefix);
            self.later("split", &r.split);
            let route = Route {
                listener: listener.flatten(),
                host: host.clone().unwrap_or(HostMatch::Any),
                path_prefix,
                pool: pool.unwrap_or(0),
                max_body_bytes: r.max_body_bytes.map(|n| (n > 0).then_some(n)),
            };
            // A route whose listener or host is invalid has already been reported; comparing
            // its placeholder values would only invent a duplicate.
            if listener != Some(None) && host.is_some() {
                let same = |r: &Route| {
                    (r.listener, &r.host, &r.path_prefix)
                        == (route.listener, &route.host, &route.path_prefix)
                };
                match seen.iter().find(|(i, _)| same(&out[*i])) {
                    Some((_, first)) => {
                        let message = "duplicate route: an earlier route matches \
                                       the same listener, host and path_prefix";
                        let note = format!(
                            "the earlier route is at line {}; this one would never be used",
                            self.line_of(*first)
                        );
                        let error = self
                            .error(span, message)
                            .with_note(note)
                            .with_help("remove one, or change its `host` or `path_prefix`");
                        self.push(error);
                    }
                    None => seen.push((out.len(), span.start)),
                }
            }
            out.push(route);
        }
        out
    }

    /// The index of `name` among `names`, or a located error listing the defined ones.
    fn lookup(&mut self, name: &Spanned<String>, kind: &str, names: &[&str]) -> Option<usize> {
        if let Some(i) = names.iter().position(|n| n == name.get_ref()) {
            return Some(i);
        }
        let defined = if names.is_empty() {
            format!("no {kind}s are defined")
        } else {
            format!("defined {kind}s: {}", names.join(", "))
        };
        let error = self
            .error(
                name.span(),
                format!(
                    "route names {kind} `{}`, which is not defined",
                    name.get_ref()
                ),
            )
            .with_note(defined)
            .with_suggestion(did_you_mean(name.get_ref(), names.iter().copied()));
        self.push(error);
        None
    }

    fn check_path_prefix(&mut self, prefix: &Spanned<String>) {
        let p = prefix.get_ref();
        if !p.starts_with('/') {
            let error = self
                .error(
                    prefix.span(),
                    format!("path_prefix `{p}` must start with `/`"),
                )
                .with_help(format!("did you mean `/{p}`?"));
            self.push(error);
        } else if p.contains(['?', '#']) {
            let error = self
                .error(
                    prefix.span(),
                    format!("path_prefix `{p}` contains `?` or `#`"),
                )
                .with_note("routes match the path only, never the query or fragment");
            self.push(error);
        }
    }
}
