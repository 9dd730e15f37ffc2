//! `SIGHUP` to the real binary reloads its file; an invalid file on `SIGHUP` changes nothing.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::reload::{generation, reload_counts, who_answers, ConfigFile, ADMIN};
use crate::support::{eventually, simple_config, TestBackend};

const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A running `sluice run` whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn run(config: &ConfigFile) -> Proc {
        let mut child = Command::new(BIN)
            .args(["run", "--workers", "1", "--log-format", "text", "--config"])
            .arg(config.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, lines }
    }

    /// The `addr=` of the first log line whose message is `message`, within `timeout`.
    fn addr_logged(&self, message: &str, timeout: Duration) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{message}` line logged"));
            // `... INFO sluice: <message> addr=... more=...`
            let Some(rest) = line
                .split_once(": ")
                .and_then(|(_, rest)| rest.strip_prefix(message))
            else {
                continue;
            };
            if let Some(addr) = rest
                .split_whitespace()
                .find_map(|field| field.strip_prefix("addr="))
            {
                return addr.trim_matches('"').parse().unwrap();
            }
        }
        panic!("no `{message}` line logged");
    }

    fn hangup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_the_file_and_an_invalid_one_changes_nothing() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let file = ConfigFile::new(&format!("{ADMIN}{}", simple_config(&[&a])));
    let sluice = Proc::run(&file);
    let addr = sluice.addr_logged("listening ", Duration::from_secs(10));
    let admin = sluice.addr_logged("admin API listening ", Duration::from_secs(10));
    assert_eq!(who_answers(addr, "/"), "a");
    assert_eq!(generation(admin), 1);

    file.replace(&format!("{ADMIN}{}", simple_config(&[&b])));
    sluice.hangup();
    assert!(
        eventually(Duration::from_secs(5), || generation(admin) == 2),
        "SIGHUP reloaded the file"
    );
    assert_eq!(who_answers(addr, "/"), "b");
    assert_eq!(reload_counts(admin), (1.0, 0.0));

    file.replace(&format!(
        "{ADMIN}{}\n[pool.app.bogus]\n",
        simple_config(&[&a])
    ));
    sluice.hangup();
    assert!(
        eventually(Duration::from_secs(5), || reload_counts(admin)
            == (1.0, 1.0)),
        "the invalid file was looked at and refused"
    );
    assert_eq!(generation(admin), 2);
    assert_eq!(who_answers(addr, "/"), "b");
}
