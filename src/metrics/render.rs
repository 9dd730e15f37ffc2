//! `GET /metrics`: every series in the Prometheus text format (version 0.0.4), read from the
//! current snapshot, the backends still draining, and the process.
//!
//! Series appear once they have something to say (a request counted, a histogram observed) and
//! go with what they describe: a removed backend's once it has drained, a removed pool's or
//! listener's with the snapshot that dropped it.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{process, Failure, HistogramValues, ListenerCounters, BUCKETS};
use crate::state::{Shared, Snapshot};
use crate::upstream::Backend;

/// The whole exposition.
pub fn render(shared: &Shared) -> String {
    let snapshot = shared.snapshot();
    // Each pool's backends, then those still draining from it (or from a pool since removed).
    let mut backends: Vec<(&str, &Arc<Backend>)> = snapshot
        .pools
        .iter()
        .flat_map(|p| p.backends.iter().map(move |b| (&*p.name, b)))
        .collect();
    let draining = shared.draining();
    backends.extend(draining.iter().map(|(pool, b)| (&**pool, b)));
    let mut out = String::with_capacity(4096 + backends.len() * 1024);
    let out = &mut out;

    family(out, "sluice_requests_total", "counter", "Requests answered, by listener, pool, backend and the status sent to the client (backend=\"\": sluice's own answer; 499: the client left before any answer).");
    for &(pool, backend) in &backends {
        let values = backend.metrics.codes.values();
        codes(out, &snapshot, pool, &backend.address, values);
    }
    let listeners = shared.listeners_counted(&snapshot);
    for (listener, (_, counters)) in snapshot.listeners.iter().zip(&listeners) {
        for (route, metrics) in listener.routes.iter().enumerate() {
            let mut values = metrics.local.values();
            if route + 1 == listener.routes.len() {
                // Heads refused before they became requests count with those that reached no
                // pool: one series per code.
                for (_, code, count) in counters.refused.values() {
                    match values.iter_mut().find(|v| v.1 == code) {
                        Some(v) => v.2 += count,
                        None => values.push((listener.id, code, count)),
                    }
                }
            }
            codes(out, &snapshot, snapshot.route_pool_name(route), "", values);
        }
    }

    family(
        out,
        "sluice_request_duration_seconds",
        "histogram",
        "From the request head's arrival to the last byte of the answer.",
    );
    for listener in &snapshot.listeners {
        for (route, metrics) in listener.routes.iter().enumerate() {
            let labels = [
                ("listener", &*listener.name),
                ("pool", snapshot.route_pool_name(route)),
            ];
            histogram(
                out,
                "sluice_request_duration_seconds",
                &labels,
                &metrics.duration.values(),
            );
        }
    }

    family(
        out,
        "sluice_upstream_duration_seconds",
        "histogram",
        "From sending a request to a backend to its response head (or failure), every attempt.",
    );
    for &(pool, b) in &backends {
        let labels = [("pool", pool), ("backend", &*b.address)];
        histogram(
            out,
            "sluice_upstream_duration_seconds",
            &labels,
            &b.metrics.upstream.values(),
        );
    }

    let per_backend: [Each<Backend>; 5] = [
        Each {
            name: "sluice_backend_up",
            kind: "gauge",
            help: "1 if the backend may take new requests (healthy, not ejected, not draining), else 0.",
            value: |b| u64::from(b.health.available()),
        },
        Each {
            name: "sluice_backend_active_requests",
            kind: "gauge",
            help: "Requests in flight to the backend.",
            value: Backend::active_requests,
        },
        Each {
            name: "sluice_backend_weight",
            kind: "gauge",
            help: "The backend's configured weight.",
            value: |b| u64::from(b.weight()),
        },
        Each {
            name: "sluice_ejections_total",
            kind: "counter",
            help: "Ejections by passive outlier detection.",
            value: |b| b.health.ejections_total.load(Relaxed),
        },
        Each {
            name: "sluice_upstream_requests_total",
            kind: "counter",
            help: "Attempts sent to the backend, retries included.",
            value: Backend::requests_total,
        },
    ];
    for each in per_backend {
        family(out, each.name, each.kind, each.help);
        for &(pool, b) in &backends {
            let labels = [("pool", pool), ("backend", &*b.address)];
            sample(out, each.name, &labels, (each.value)(b));
        }
    }

    family(out, "sluice_upstream_failures_total", "counter", "Attempts that got no response from the backend, by reason: connect, timeout, response (reset, closed early, invalid).");
    for &(pool, b) in &backends {
        for failure in Failure::ALL {
            let count = b.metrics.failures[failure as usize].load(Relaxed);
            if count > 0 {
                let labels = [
                    ("pool", pool),
                    ("backend", &*b.address),
                    ("reason", failure.as_str()),
                ];
                sample(out, "sluice_upstream_failures_total", &labels, count);
            }
        }
    }

    family(
        out,
        "sluice_health_checks_total",
        "counter",
        "Active health check results, by result: pass or fail.",
    );
    for &(pool, b) in &backends {
        let checks = b.health.checks();
        if checks.passed + checks.failed == 0 {
            continue;
        }
        for (result, count) in [("pass", checks.passed), ("fail", checks.failed)] {
            let labels = [("pool", pool), ("backend", &*b.address), ("result", result)];
            sample(out, "sluice_health_checks_total", &labels, count);
        }
    }

    family(
        out,
        "sluice_retries_total",
        "counter",
        "Retries on another backend.",
    );
    for pool in &snapshot.pools {
        let retries = pool.retry.as_ref().map_or(0, |r| r.retries_total());
        sample(
            out,
            "sluice_retries_total",
            &[("pool", &pool.name)],
            retries,
        );
    }
    family(out, "sluice_upstream_connections_opened_total", "counter", "Connections opened to the pool's backends; upstream requests minus these reused a pooled connection.");
    for pool in &snapshot.pools {
        let opened = pool.connections_opened.load(Relaxed);
        sample(
            out,
            "sluice_upstream_connections_opened_total",
            &[("pool", &pool.name)],
            opened,
        );
    }
    family(
        out,
        "sluice_pool_pending_requests",
        "gauge",
        "Requests waiting for a backend below its connection limit.",
    );
    for pool in &snapshot.pools {
        let pending = pool.waiters.count.load(Relaxed) as u64;
        sample(
            out,
            "sluice_pool_pending_requests",
            &[("pool", &pool.name)],
            pending,
        );
    }

    let per_listener: [Each<ListenerCounters>; 4] = [
        Each {
            name: "sluice_downstream_connections",
            kind: "gauge",
            help: "Client connections open.",
            value: |c| c.connections.load(Relaxed).max(0) as u64,
        },
        Each {
            name: "sluice_downstream_connections_total",
            kind: "counter",
            help: "Client connections accepted.",
            value: |c| c.connections_total.load(Relaxed),
        },
        Each {
            name: "sluice_downstream_received_bytes_total",
            kind: "counter",
            help: "Request body bytes received from clients.",
            value: |c| c.received_bytes(),
        },
        Each {
            name: "sluice_downstream_sent_bytes_total",
            kind: "counter",
            help: "Response body bytes sent to clients.",
            value: |c| c.sent_bytes(),
        },
    ];
    for each in per_listener {
        family(out, each.name, each.kind, each.help);
        for (listener, counters) in &listeners {
            sample(
                out,
                each.name,
                &[("listener", listener)],
                (each.value)(counters),
            );
        }
    }

    let reloads = &shared.reloads;
    family(
        out,
        "sluice_config_reloads_total",
        "counter",
        "Configuration reloads by result.",
    );
    sample(
        out,
        "sluice_config_reloads_total",
        &[("result", "ok")],
        reloads.ok.load(Relaxed),
    );
    sample(
        out,
        "sluice_config_reloads_total",
        &[("result", "error")],
        reloads.error.load(Relaxed),
    );
    family(
        out,
        "sluice_config_generation",
        "gauge",
        "The running configuration's generation.",
    );
    sample(out, "sluice_config_generation", &[], snapshot.generation);
    family(
        out,
        "sluice_build_info",
        "gauge",
        "Always 1; the version in a label.",
    );
    sample(
        out,
        "sluice_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    family(
        out,
        "sluice_log_lines_dropped_total",
        "counter",
        "Log lines (access log included) dropped because the log output fell behind.",
    );
    sample(
        out,
        "sluice_log_lines_dropped_total",
        &[],
        crate::telemetry::dropped_lines(),
    );

    process::render(out);
    std::mem::take(out)
}

/// A family with one sample per backend, or per listener: its value read from each.
struct Each<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> u64,
}

/// `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    write_labels(out, labels, None);
    let _ = writeln!(out, " {value}");
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    let extra = le.map(|le| ("le", le));
    if labels.is_empty() && extra.is_none() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().copied().chain(extra).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Label values escape backslash, double quote and line feed.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// `sluice_requests_total` samples from (listener id, code, count) values: those of listeners still in
/// the snapshot.
fn codes(
    out: &mut String,
    snapshot: &Snapshot,
    pool: &str,
    backend: &str,
    values: Vec<(usize, u16, u64)>,
) {
    for (listener, code, count) in values {
        let Some(listener) = snapshot.listener_index(listener) else {
            continue;
        };
        let code = code.to_string();
        let labels = [
            ("listener", &*snapshot.listeners[listener].name),
            ("pool", pool),
            ("backend", backend),
            ("code", code.as_str()),
        ];
        sample(out, "sluice_requests_total", &labels, count);
    }
}

/// A histogram's `_bucket`, `_sum` and `_count` lines; nothing before its first observation.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], values: &HistogramValues) {
    if values.count() == 0 {
        return;
    }
    let bucket = format!("{name}_bucket");
    for (i, &count) in values.cumulative.iter().enumerate() {
        let le = BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), f64::to_string);
        out.push_str(&bucket);
        write_labels(out, labels, Some(&le));
        let _ = writeln!(out, " {count}");
    }
    sample(out, &format!("{name}_sum"), labels, values.sum_seconds);
    sample(out, &format!("{name}_count"), labels, values.count());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\"y\\z\nw"), ("b", "")], 3);
        assert_eq!(out, "m{a=\"x\\\"y\\\\z\\nw\",b=\"\"} 3\n");
    }

    #[test]
    fn a_histogram_is_cumulative_and_ends_with_inf_sum_and_count() {
        let h = super::super::Histogram::default();
        h.observe(std::time::Duration::from_millis(2));
        h.observe(std::time::Duration::from_secs(2));
        let mut out = String::new();
        histogram(&mut out, "d", &[("pool", "p")], &h.values());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 17 + 2);
        assert_eq!(lines[0], "d_bucket{pool=\"p\",le=\"0.0005\"} 0");
        assert_eq!(lines[2], "d_bucket{pool=\"p\",le=\"0.0025\"} 1");
        assert_eq!(lines[10], "d_bucket{pool=\"p\",le=\"1\"} 1");
        assert_eq!(lines[11], "d_bucket{pool=\"p\",le=\"2.5\"} 2");
        assert_eq!(lines[16], "d_bucket{pool=\"p\",le=\"+Inf\"} 2");
        assert_eq!(lines[17], "d_sum{pool=\"p\"} 2.002");
        assert_eq!(lines[18], "d_count{pool=\"p\"} 2");
    }
}
