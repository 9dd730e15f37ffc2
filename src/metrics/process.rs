//! The standard `process_*` metrics, read from `/proc` at scrape time (Linux; elsewhere they are
//! left out).

use std::fmt::Write;

/// Clock ticks per second of `/proc/self/stat` times: 100 on every Linux architecture sluice
/// runs on (`sysconf(_SC_CLK_TCK)`).
const TICKS: f64 = 100.0;

/// Appends the process metrics that can be read.
pub fn render(out: &mut String) {
    if let Some(rss) = resident_bytes() {
        family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        family(out, "process_open_fds", "gauge", "Open file descriptors.");
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    if let Some(max) = max_fds() {
        family(
            out,
            "process_max_fds",
            "gauge",
            "The limit on open file descriptors.",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
    if let Some((cpu, start)) = cpu_and_start() {
        family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time in seconds.",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        family(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time since the Unix epoch in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {start}");
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// CPU seconds used, and the start time in seconds since the epoch.
fn cpu_and_start() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
    let cpu = (field(14)? + field(15)?) / TICKS;
    let started_ticks = field(22)?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some((cpu, btime + started_ticks / TICKS))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let mut out = String::new();
        super::render(&mut out);
        for name in [
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
        ] {
            let line = out.lines().find(|l| l.starts_with(name)).expect(name);
            let value: f64 = line[name.len()..].parse().unwrap();
            assert!(value > 0.0, "{line}");
        }
    }
}
