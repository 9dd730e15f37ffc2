//! The one-screen summary `sluice check` prints for a valid configuration: enough to confirm
//! that sluice understood the file the way its writer meant, not a dump of every setting.

use std::fmt::Write;
use std::time::{Duration, SystemTime};

use super::values::show_duration;
use crate::config::{show_time, AllUnhealthy, Config, HostMatch, Limits, Pool};

pub(in crate::config) fn summary(config: &Config) -> String {
    let mut out = format!("{} is valid\n", config.source.display());
    let backends: usize = config.pools.iter().map(|p| p.backends.len()).sum();
    let _ = writeln!(
        out,
        "  {}, {}, {}, {}",
        count(config.listeners.len(), "listener"),
        count(config.routes.len(), "route"),
        count(config.pools.len(), "pool"),
        count(backends, "backend"),
    );
    let _ = match &config.admin {
        Some(admin) => writeln!(
            out,
            "  admin API on {} ({})",
            admin.bind,
            if admin.token.is_some() {
                "token required"
            } else {
                "no token"
            }
        ),
        None => writeln!(out, "  admin API disabled"),
    };

    out.push_str("listeners:\n");
    let rows = config.listeners.iter().map(|l| {
        let mut row = vec![l.name.clone(), l.bind.to_string()];
        if l.tls.is_some() {
            row.push("https".to_string());
        } else if l.redirect_https {
            row.push("redirects to https".to_string());
        }
        row
    });
    table(&mut out, rows);

    certificates(&mut out, config, std::time::SystemTime::now());

    out.push_str("routes:\n");
    let rows = config.routes.iter().map(|r| {
        let listener = r
            .listener
            .and_then(|i| config.listeners.get(i))
            .map_or("*", |l| l.name.as_str());
        let host = match &r.host {
            HostMatch::Any => "*".to_string(),
            HostMatch::Exact(host) => host.clone(),
            HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        };
        let pool = config.pools.get(r.pool).map_or("?", |p| p.name.as_str());
        vec![
            listener.to_string(),
            host,
            r.path_prefix.clone(),
            format!("-> {pool}"),
        ]
    });
    table(&mut out, rows);

    out.push_str("pools:\n");
    let rows = config.pools.iter().flat_map(|p| {
        let backends: Vec<String> = p
            .backends
            .iter()
            .map(|b| {
                // Show what a name resolved to: the address that will actually be dialled.
                if b.address == b.resolved.to_string() {
                    format!("{} (weight {})", b.address, b.weight)
                } else {
                    format!("{} = {} (weight {})", b.address, b.resolved, b.weight)
                }
            })
            .collect();
        let mut rows = vec![vec![
            p.name.clone(),
            p.algorithm.as_str().to_string(),
            backends.join(", "),
        ]];
        let resilience = resilience(p);
        if !resilience.is_empty() {
            // On a line of its own, under the backends, so long backend lists stay readable.
            rows.push(vec![String::new(), String::new(), resilience.join(", ")]);
        }
        rows
    });
    table(&mut out, rows);
    out.truncate(out.trim_end().len());
    out
}

/// Within this of its expiry a certificate is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Each HTTPS listener's certificates: names and expiry, with a warning for those expiring
/// within 14 days of `now`.
fn certificates(out: &mut String, config: &Config, now: SystemTime) {
    let mut rows = Vec::new();
    let mut warnings = Vec::new();
    for l in &config.listeners {
        let Some(tls) = &l.tls else { continue };
        for (i, c) in tls.certificates.iter().enumerate() {
            let names = if c.names.is_empty() {
                "(no DNS names)".to_string()
            } else {
                c.names.join(", ")
            };
            let default = if i == 0 { " (default)" } else { "" };
            rows.push(vec![
                l.name.clone(),
                format!("{}{default}", c.cert_path.display()),
                names,
                format!("expires {}", show_time(c.not_after)),
            ]);
            let left = c.not_after.duration_since(now).unwrap_or_default();
            if left < EXPIRY_WARNING {
                warnings.push(format!(
                    "warning: the certificate in `{}` (listener {}) expires in {} days, on {}",
                    c.cert_path.display(),
                    l.name,
                    left.as_secs() / 86_400,
                    show_time(c.not_after)
                ));
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    out.push_str("certificates:\n");
    table(out, rows.into_iter());
    for warning in warnings {
        let _ = writeln!(out, "  {warning}");
    }
}

/// What a pool does beyond balancing, briefly: only what is on or differs from the default.
fn resilience(pool: &Pool) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(check) = &pool.health_check {
        let probe = match &check.path {
            Some(path) => format!("GET {path}"),
            None => "TCP connect".to_string(),
        };
        out.push(format!(
            "health_check {probe} every {}",
            show_duration(check.interval)
        ));
    }
    if let Some(tls) = &pool.tls {
        let ca = tls
            .ca
            .as_ref()
            .map_or("system roots".to_string(), |p| p.display().to_string());
        let mtls = if tls.client_cert.is_some() {
            ", client certificate"
        } else {
            ""
        };
        out.push(format!("tls (trusting {ca}{mtls})"));
    }
    if pool.outlier_detection.is_some() {
        out.push("outlier_detection".to_string());
    }
    if let Some(retry) = &pool.retry {
        out.push(format!("retry {}", retry.attempts));
    }
    if pool.all_unhealthy == AllUnhealthy::FailOpen {
        out.push("fail_open".to_string());
    }
    let defaults = Limits::default();
    if pool.limits.max_connections_per_backend != defaults.max_connections_per_backend {
        out.push(format!(
            "max {} per backend",
            pool.limits.max_connections_per_backend
        ));
    }
    if pool.limits.max_pending != defaults.max_pending {
        out.push(format!("max {} pending", pool.limits.max_pending));
    }
    out
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Writes rows indented by two spaces, with columns padded to line up.
fn table(out: &mut String, rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "  {cell:width$}");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}
