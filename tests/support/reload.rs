//! Hot reload from a test: a config file of its own that the test rewrites, a sluice started
//! from it, and the admin endpoints a reload is asked for and observed through
//! (`POST /api/reload`, `GET /api/config`, `GET /metrics`), over blocking connections so that
//! `eventually` can poll them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sluice::server::RuntimeKind;

use super::raw::{RawConn, RawResponse};
use super::TestSluice;

/// A config file alone in a fresh directory under the system's temp dir; the directory is
/// removed on drop.
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
    /// Written as given (`watched`), or with file watching turned off (`new`).
    watched: bool,
}

/// `text` with file watching off (`server.watch = false`), so that the tests' own reloads are
/// the only ones: every rewrite would otherwise also reload through the watcher.
fn unwatched(text: &str) -> String {
    match text.find("[server]\n") {
        Some(at) => {
            let end = at + "[server]\n".len();
            format!("{}watch = false\n{}", &text[..end], &text[end..])
        }
        // At the end, so that errors keep the line numbers of the text as written.
        None => format!("{text}\n[server]\nwatch = false\n"),
    }
}

impl ConfigFile {
    /// A file whose every version has watching turned off (see `unwatched`).
    pub fn new(text: &str) -> ConfigFile {
        Self::create(text, false)
    }

    /// A file written exactly as given, for the tests of file watching itself.
    pub fn watched(text: &str) -> ConfigFile {
        Self::create(text, true)
    }

    fn create(text: &str, watched: bool) -> ConfigFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-reload-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier run that had the same process id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = ConfigFile {
            path: dir.join("sluice.toml"),
            dir,
            watched,
        };
        file.write(text);
        file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Rewrites the file in place (truncate, then write), as an editor saving in place does.
    pub fn write(&self, text: &str) {
        std::fs::write(&self.path, self.version(text)).unwrap();
    }

    /// Writes a sibling file and renames it over this one, as editors that save atomically and
    /// configuration tools do: a reader sees the old content or the new, never a mix.
    pub fn replace(&self, text: &str) {
        let staged = self.dir.join(".sluice.toml.new");
        std::fs::write(&staged, self.version(text)).unwrap();
        std::fs::rename(&staged, &self.path).unwrap();
    }

    fn version(&self, text: &str) -> String {
        if self.watched {
            text.to_string()
        } else {
            unwatched(text)
        }
    }

    pub fn remove(&self) {
        std::fs::remove_file(&self.path).unwrap();
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A sluice started from a `ConfigFile`, reloaded through its admin API. The config must have
/// `[admin] bind = "127.0.0.1:0"` (see `admin_table`).
pub struct Reloadable {
    // Declared first so it stops before its file goes away.
    pub sluice: TestSluice,
    pub file: ConfigFile,
}

/// The `[admin]` table every reloadable config needs.
pub const ADMIN: &str = "[admin]\nbind = \"127.0.0.1:0\"\n";

impl Reloadable {
    pub fn start(text: &str) -> Reloadable {
        Self::start_with(text, 1)
    }

    /// With `workers` per-core workers: a listener a reload adds must start on every one.
    pub fn start_with(text: &str, workers: usize) -> Reloadable {
        Self::start_file(ConfigFile::new(text), workers)
    }

    /// From a file written as given: file watching on unless the text turns it off.
    pub fn start_watched(text: &str) -> Reloadable {
        Self::start_file(ConfigFile::watched(text), 1)
    }

    fn start_file(file: ConfigFile, workers: usize) -> Reloadable {
        let sluice = TestSluice::start_file_with(file.path(), workers, RuntimeKind::PerCore);
        assert!(sluice.admin.is_some(), "a reloadable config needs [admin]");
        Reloadable { sluice, file }
    }

    pub fn admin(&self) -> SocketAddr {
        self.sluice.admin.unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        self.sluice.addr()
    }

    /// Replaces the file with `text` and asks for a reload.
    pub fn reload_with(&self, text: &str) -> Reload {
        self.file.replace(text);
        reload(self.admin())
    }

    /// `reload_with`, insisting on success.
    pub fn reload_ok(&self, text: &str) -> Reload {
        let reload = self.reload_with(text);
        assert_eq!(reload.status, 200, "reload refused: {:#}", reload.body);
        reload
    }

    /// The running generation, from `GET /api/config`.
    pub fn generation(&self) -> u64 {
        generation(self.admin())
    }
}

/// The answer to `POST /api/reload`.
#[derive(Debug)]
pub struct Reload {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Reload {
    /// The generation serving after the reload (200) or still serving (400).
    pub fn generation(&self) -> u64 {
        self.body["generation"]
            .as_u64()
            .unwrap_or_else(|| panic!("no generation in {:#}", self.body))
    }

    /// The address a listener is bound to, from `listening`.
    pub fn listening(&self, name: &str) -> Option<SocketAddr> {
        self.body["listening"]
            .as_array()?
            .iter()
            .find(|l| l["name"] == name)
            .and_then(|l| l["addr"].as_str()?.parse().ok())
    }

    /// `changes.<kind>.<list>` (kind: listeners, routes, pools, backends; list: added,
    /// removed, changed).
    pub fn changes(&self, kind: &str, list: &str) -> Vec<String> {
        self.body["changes"][kind][list]
            .as_array()
            .unwrap_or_else(|| panic!("no changes.{kind}.{list} in {:#}", self.body))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// The refused reload's errors.
    pub fn errors(&self) -> &[serde_json::Value] {
        self.body["errors"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("no errors in {:#}", self.body))
    }
}

/// One admin request on a connection of its own.
pub fn admin_request(admin: SocketAddr, method: &str, path: &str) -> RawResponse {
    let mut conn = RawConn::open(admin);
    conn.send(
        format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    conn.response()
}

fn parse(response: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", response.text()))
}

/// `POST /api/reload`: re-reads the file the running config came from.
pub fn reload(admin: SocketAddr) -> Reload {
    let response = admin_request(admin, "POST", "/api/reload");
    Reload {
        status: response.status(),
        body: parse(&response),
    }
}

/// `GET /api/config`, parsed.
pub fn config(admin: SocketAddr) -> serde_json::Value {
    let response = admin_request(admin, "GET", "/api/config");
    assert_eq!(response.status(), 200, "{}", response.text());
    parse(&response)
}

/// The running generation, from `GET /api/config`.
pub fn generation(admin: SocketAddr) -> u64 {
    config(admin)["generation"].as_u64().expect("a generation")
}

/// `GET /metrics`, as text.
pub fn metrics(admin: SocketAddr) -> String {
    let response = admin_request(admin, "GET", "/metrics");
    assert_eq!(response.status(), 200, "{}", response.text());
    response.text()
}

/// The value of one series of a `GET /metrics` text, named with its labels as printed
/// (`sluice_config_reloads_total{result="ok"}`); `None` when it is not there.
pub fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// `(ok, error)`: `sluice_config_reloads_total` by result, from one `GET /metrics`.
pub fn reload_counts(admin: SocketAddr) -> (f64, f64) {
    let text = metrics(admin);
    let value = |name: &str| series(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"));
    (
        value("sluice_config_reloads_total{result=\"ok\"}"),
        value("sluice_config_reloads_total{result=\"error\"}"),
    )
}

/// `GET path` on a connection of its own: the name of the backend that answered (its
/// `x-backend` header), or `status N` when sluice answered itself.
pub fn who_answers(addr: SocketAddr, path: &str) -> String {
    let mut conn = RawConn::open(addr);
    conn.send(format!("GET {path} HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n").as_bytes());
    let response = conn.response();
    match response.header("x-backend") {
        Some(name) => name.to_string(),
        None => format!("status {}", response.status()),
    }
}
