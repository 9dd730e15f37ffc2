//! Watching the config file: one signal per burst of changes that altered the file's content.
//!
//! The watch is on the file's *directory*, never on the file itself: an inode watch dies when an
//! editor renames a new file over the old one, or when Kubernetes swaps the `..data` symlink of
//! a ConfigMap volume. Any event in the directory only means "maybe changed": once the events
//! have been quiet for `debounce`, the file is read and its hash compared with the hash of the
//! content last signalled, so a `touch`, an identical rewrite or a missing file mid-rename signals
//! nothing. Where the OS reports nothing at all (some bind mounts, network file systems), the
//! same hash comparison runs every `poll_interval`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Notify};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

mod dirs;
use dirs::Dirs;

/// A burst that never goes quiet (a log file written beside the config, say) is looked at anyway
/// after this many `debounce` periods, so noise elsewhere in the directory cannot hold a change
/// back for ever.
const MAX_BURST_DEBOUNCES: u32 = 10;

/// How the config file is watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// How often the file is read and its hash compared, whatever the OS reports: the fallback
    /// for mounts that deliver no notifications. `Duration::ZERO` turns polling off.
    /// Default 5 s.
    pub poll_interval: Duration,
    /// How long the directory must stay quiet before the file is read: an editor's save or a
    /// ConfigMap update is several events, and this makes them one signal. Default 200 ms.
    pub debounce: Duration,
    /// Whether to use the OS's file notifications (inotify; Linux only, elsewhere there is only
    /// polling). When they cannot be set up, a warning is logged and only polling remains.
    /// Default `true`.
    pub notify: bool,
    /// `config::content_hash` of the text the running config was loaded from: a file that
    /// differs from it when the watcher starts (changed during start-up) is signalled at once.
    /// `None`: the content found at start is the baseline.
    pub loaded: Option<u64>,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            poll_interval: Duration::from_secs(5),
            debounce: Duration::from_millis(200),
            notify: true,
            loaded: None,
        }
    }
}

/// Watches the file at `path` until `shutdown` is cancelled or the receiver is dropped.
///
/// The receiver yields `()` once per burst of changes that left the file with content other than
/// the content last signalled (at first: `options.loaded`, or else the content when this
/// returns), and `None` once the watcher has ended. At most one signal waits in the channel: while a reload is still running,
/// further changes fold into that one signal.
///
/// This is `async` so that the watcher is in place when it returns: a change made after that is
/// signalled. A change between loading the config and starting the watcher is signalled at once
/// when `options.loaded` holds the loaded content's hash.
///
/// The watcher runs as a task on the caller's runtime (a current-thread runtime will do); file
/// reads and notification set-up run on the blocking pool.
///
/// # Panics
///
/// When called outside a tokio runtime.
pub async fn watch(
    path: PathBuf,
    options: WatchOptions,
    shutdown: CancellationToken,
) -> mpsc::Receiver<()> {
    let (tx, rx) = mpsc::channel(1);
    let poke = Arc::new(Notify::new());
    let setup = {
        let (path, poke) = (path.clone(), Arc::clone(&poke));
        // Notifications first, then the first read: a change between the two is then seen as an
        // event, never folded unnoticed into the starting hash.
        tokio::task::spawn_blocking(move || {
            let dirs = options.notify.then(|| Dirs::start(&path, poke)).flatten();
            (dirs, read_hash(&path))
        })
    };
    let (dirs, content) = match shutdown.run_until_cancelled(setup).await {
        Some(Ok(started)) => started,
        Some(Err(e)) => {
            tracing::error!(path = %path.display(), error = %e, "config watcher failed to start");
            return rx;
        }
        None => return rx,
    };
    if let Err(e) = &content {
        tracing::warn!(path = %path.display(), error = %e, "cannot read config file; watching for it");
    }
    if dirs.is_none() && options.poll_interval.is_zero() {
        tracing::warn!(path = %path.display(), "config file notifications and polling are both off; changes will not be seen");
    }
    tracing::debug!(
        path = %path.display(),
        notify = dirs.is_some(),
        poll_interval = ?options.poll_interval,
        debounce = ?options.debounce,
        "watching config file"
    );
    let mut watch = Watch {
        signalled: options.loaded.or(content.as_ref().ok().copied()),
        readable: content.is_ok(),
        path,
        options,
        dirs,
        poke,
        tx,
    };
    if let Ok(now) = content {
        if watch.signalled != Some(now) {
            watch.signal(Some(now));
        }
    }
    tokio::spawn(watch.run(shutdown));
    rx
}

/// The watcher task's state.
struct Watch {
    path: PathBuf,
    options: WatchOptions,
    /// The OS notifications, when they are on and could be set up.
    dirs: Option<Dirs>,
    /// Woken by the notifications on every batch of events that may mean a change.
    poke: Arc<Notify>,
    /// Hash of the content last signalled (at first: at start); `None` while there was none.
    signalled: Option<u64>,
    /// Whether the last read succeeded: a failure is logged when this flips, not on every read.
    readable: bool,
    tx: mpsc::Sender<()>,
}

impl Watch {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut poll = poller(self.options.poll_interval);
        let quiet = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(quiet);
        // When the current burst began, while one is under way.
        let mut burst: Option<Instant> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.tx.closed() => break,
                () = self.poke.notified() => {
                    let now = Instant::now();
                    let began = *burst.get_or_insert(now);
                    let latest = began + self.options.debounce.saturating_mul(MAX_BURST_DEBOUNCES);
                    quiet.as_mut().reset((now + self.options.debounce).min(latest));
                }
                () = &mut quiet, if burst.is_some() => {
                    burst = None;
                    let Some(hash) = shutdown.run_until_cancelled(self.look()).await else { break };
                    if hash.is_some() && hash != self.signalled && !self.signal(hash) {
                        break;
                    }
                }
                () = tick(&mut poll), if burst.is_none() => {
                    let Some(hash) = shutdown.run_until_cancelled(self.look()).await else { break };
                    // Polling read the file at an arbitrary moment, maybe mid-write: settle for
                    // a quiet period, then read again, as after an event.
                    if hash.is_some() && hash != self.signalled {
                        let now = Instant::now();
                        burst = Some(now);
                        quiet.as_mut().reset(now + self.options.debounce);
                    }
                }
            }
        }
        tracing::debug!(path = %self.path.display(), "config watcher stopped");
    }

    /// Reads the file off the runtime, follows its directories with the notifications, and
    /// returns the content's hash, `None` when the file cannot be read just now.
    async fn look(&mut self) -> Option<u64> {
        let path = self.path.clone();
        let (content, wanted) = match tokio::task::spawn_blocking(move || {
            (read_hash(&path), wanted_dirs(&path))
        })
        .await
        {
            Ok(looked) => looked,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "config file read failed");
                return None;
            }
        };
        self.follow(wanted).await;
        match content {
            Ok(hash) => {
                if !self.readable {
                    tracing::info!(path = %self.path.display(), "config file readable again");
                    self.readable = true;
                }
                Some(hash)
            }
            Err(e) => {
                if self.readable {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read config file; keeping the last content");
                    self.readable = false;
                }
                None
            }
        }
    }

    /// Moves the notifications to the directories wanted now (a symlink may point elsewhere).
    async fn follow(&mut self, wanted: Vec<PathBuf>) {
        let Some(mut dirs) = self.dirs.take() else {
            return;
        };
        if dirs.watches_exactly(&wanted) {
            self.dirs = Some(dirs);
            return;
        }
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || {
            dirs.retarget(&path, wanted);
            dirs
        })
        .await
        {
            Ok(dirs) => self.dirs = Some(dirs),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "config directory watch lost; relying on polling");
            }
        }
    }

    /// Records `hash` as signalled and signals; `false` once nobody listens any more.
    fn signal(&mut self, hash: Option<u64>) -> bool {
        self.signalled = hash;
        tracing::info!(path = %self.path.display(), "config file changed");
        match self.tx.try_send(()) {
            // Full: a signal is already waiting, and one is all a reload needs.
            Ok(()) | Err(TrySendError::Full(())) => true,
            Err(TrySendError::Closed(())) => false,
        }
    }
}

/// The directory holding `path` as given, and, when `path` is (or passes through) a symlink,
/// the directory of the file it finally resolves to: an in-place write there is seen too.
/// Canonical where possible, so one directory is never watched under two names.
fn wanted_dirs(path: &Path) -> Vec<PathBuf> {
    let own = parent_dir(path);
    let own = own.canonicalize().unwrap_or(own);
    let target = path
        .canonicalize()
        .ok()
        .and_then(|target| target.parent().map(Path::to_path_buf));
    let mut dirs = vec![own];
    if let Some(target) = target.filter(|target| !dirs.contains(target)) {
        dirs.push(target);
    }
    dirs
}

/// The directory `path` names its file in; `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Hash of the file's content (blocking). Config files are small: read whole.
fn read_hash(path: &Path) -> io::Result<u64> {
    Ok(crate::config::content_hash(&std::fs::read(path)?))
}

/// The polling timer, `None` when polling is off. Its first tick is one interval away: the
/// content was just read.
fn poller(period: Duration) -> Option<Interval> {
    (!period.is_zero()).then(|| {
        let mut interval = tokio::time::interval_at(Instant::now() + period, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        interval
    })
}

/// The next polling tick; never, when polling is off.
async fn tick(poll: &mut Option<Interval>) {
    match poll {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::time::timeout;

    /// Generous for a test, so a loaded machine pausing between a write's syscalls does not split
    /// one change in two.
    const DEBOUNCE: Duration = Duration::from_millis(100);
    /// An expected signal normally comes within ~DEBOUNCE; this only bounds a stuck test.
    const SIGNAL_DEADLINE: Duration = Duration::from_secs(3);
    /// Long enough after the last change for a wrong signal to have come (several debounces).
    const QUIET_WINDOW: Duration = Duration::from_millis(400);

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("sluice-watch-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Notifications only, so a test of them cannot pass thanks to polling.
    fn notify_only() -> WatchOptions {
        WatchOptions {
            poll_interval: Duration::ZERO,
            debounce: DEBOUNCE,
            notify: true,
            loaded: None,
        }
    }

    /// Starts a watcher and takes each signal off its channel as soon as it is sent, so that the
    /// channel's folding of waiting signals into one cannot hide an extra signal from a test.
    async fn start(
        path: PathBuf,
        options: WatchOptions,
        shutdown: CancellationToken,
    ) -> mpsc::UnboundedReceiver<()> {
        let mut rx = watch(path, options, shutdown).await;
        let (tx, signals) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                let _ = tx.send(());
            }
        });
        signals
    }

    async fn expect_signal(rx: &mut mpsc::UnboundedReceiver<()>) {
        let got = timeout(SIGNAL_DEADLINE, rx.recv()).await;
        assert_eq!(got, Ok(Some(())), "expected a change signal");
    }

    async fn expect_quiet(rx: &mut mpsc::UnboundedReceiver<()>) {
        let got = timeout(QUIET_WINDOW, rx.recv()).await;
        assert!(got.is_err(), "expected no signal, got {got:?}");
    }

    /// Opening and reading (the watcher's own reads, or anything else's in the directory) are
    /// not in the mask: they must not even wake the watcher.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn opening_and_reading_files_beside_the_config_wakes_nothing() {
        let dir = TempDir::new("opens");
        let (path, busy) = (dir.join("sluice.toml"), dir.join("big.bin"));
        std::fs::write(&path, "a").unwrap();
        std::fs::write(&busy, [0u8; 1024]).unwrap();
        let poke = Arc::new(Notify::new());
        let dirs = Dirs::start(&path, poke.clone()).expect("inotify is available");
        for _ in 0..20 {
            std::fs::read(&busy).unwrap();
            std::fs::read(&path).unwrap();
        }
        // Long enough for an event to have been read, were there one.
        tokio::time::sleep(QUIET_WINDOW).await;
        assert_eq!(dirs.batches(), 0, "opening and reading woke the watcher");
        std::fs::write(&path, "b").unwrap();
        timeout(SIGNAL_DEADLINE, poke.notified())
            .await
            .expect("a write wakes the watcher");
        assert!(dirs.batches() > 0);
    }

    #[test]
    fn parent_dir_of_bare_relative_and_absolute_paths() {
        let cases = [
            ("sluice.toml", "."),
            ("config/sluice.toml", "config"),
            ("/etc/sluice/sluice.toml", "/etc/sluice"),
        ];
        for (path, expected) in cases {
            assert_eq!(
                parent_dir(Path::new(path)),
                PathBuf::from(expected),
                "{path}"
            );
        }
    }

    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn in_place_write_signals_once() {
        let dir = TempDir::new("in-place");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let mut rx = start(config.clone(), notify_only(), CancellationToken::new()).await;

        std::fs::write(&config, "a = 2\n").unwrap();
        expect_signal(&mut rx).await;
        expect_quiet(&mut rx).await;
    }

    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn write_to_temp_then_rename_signals_every_time() {
        let dir = TempDir::new("rename");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let mut rx = start(config.clone(), notify_only(), CancellationToken::new()).await;

        // Twice: a watch on the file's inode would see the first rename at best.
        for content in ["a = 2\n", "a = 3\n"] {
            let temp = dir.join(".sluice.toml.swp");
            std::fs::write(&temp, content).unwrap();
            std::fs::rename(&temp, &config).unwrap();
            expect_signal(&mut rx).await;
        }
        expect_quiet(&mut rx).await;
    }

    #[cfg(unix)]
    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn kubernetes_configmap_symlink_swap_signals() {
        use std::os::unix::fs::symlink;

        let dir = TempDir::new("configmap");
        let revision = |name: &str, content: &str| {
            std::fs::create_dir(dir.join(name)).unwrap();
            std::fs::write(dir.join(name).join("sluice.toml"), content).unwrap();
        };
        revision("..2026_11_21_10_00_00.123", "a = 1\n");
        symlink("..2026_11_21_10_00_00.123", dir.join("..data")).unwrap();
        symlink("..data/sluice.toml", dir.join("sluice.toml")).unwrap();
        let mut rx = start(
            dir.join("sluice.toml"),
            notify_only(),
            CancellationToken::new(),
        )
        .await;

        // What the kubelet does: a new revision, a temporary symlink, renamed over `..data`.
        revision("..2026_11_21_10_05_00.456", "a = 2\n");
        symlink("..2026_11_21_10_05_00.456", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        // Signalled by the swap itself, not by the removal of the old revision that follows.
        expect_signal(&mut rx).await;
        std::fs::remove_dir_all(dir.join("..2026_11_21_10_00_00.123")).unwrap();
        expect_quiet(&mut rx).await;
    }

    #[cfg(unix)]
    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn in_place_write_to_a_symlink_target_elsewhere_signals() {
        let dir = TempDir::new("symlink-target");
        std::fs::create_dir(dir.join("etc")).unwrap();
        std::fs::create_dir(dir.join("deploy")).unwrap();
        let target = dir.join("deploy/sluice.toml");
        std::fs::write(&target, "a = 1\n").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("etc/sluice.toml")).unwrap();
        let config = dir.join("etc/sluice.toml");
        let mut rx = start(config, notify_only(), CancellationToken::new()).await;

        std::fs::write(&target, "a = 2\n").unwrap();
        expect_signal(&mut rx).await;
    }

    #[tokio::test]
    async fn touch_identical_rewrite_and_recreate_signal_nothing() {
        let dir = TempDir::new("identical");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let mut rx = start(config.clone(), notify_only(), CancellationToken::new()).await;

        let file = std::fs::File::options().write(true).open(&config).unwrap();
        file.set_modified(std::time::SystemTime::now()).unwrap();
        drop(file);
        std::fs::write(&config, "a = 1\n").unwrap();
        let temp = dir.join("sluice.toml.tmp");
        std::fs::write(&temp, "a = 1\n").unwrap();
        std::fs::rename(&temp, &config).unwrap();
        // Missing for a moment, then back with the same bytes: no change either.
        std::fs::remove_file(&config).unwrap();
        std::fs::write(&config, "a = 1\n").unwrap();
        expect_quiet(&mut rx).await;

        // Still watching: a real change is signalled.
        std::fs::write(&config, "a = 2\n").unwrap();
        expect_signal(&mut rx).await;
    }

    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn burst_of_writes_signals_exactly_once() {
        let dir = TempDir::new("burst");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 0\n").unwrap();
        let options = WatchOptions {
            debounce: Duration::from_millis(300),
            ..notify_only()
        };
        let mut rx = start(config.clone(), options, CancellationToken::new()).await;

        // Each write is different content, spaced well inside the debounce: without it, each
        // would be its own signal.
        for n in 1..=5 {
            std::fs::write(&config, format!("a = {n}\n")).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        expect_signal(&mut rx).await;
        expect_quiet(&mut rx).await;
    }

    #[tokio::test]
    async fn polling_alone_detects_a_change() {
        let dir = TempDir::new("polling");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let options = WatchOptions {
            poll_interval: Duration::from_millis(50),
            debounce: DEBOUNCE,
            notify: false,
            loaded: None,
        };
        let mut rx = start(config.clone(), options, CancellationToken::new()).await;

        // Identical content first: polling compares hashes, not timestamps.
        std::fs::write(&config, "a = 1\n").unwrap();
        expect_quiet(&mut rx).await;
        std::fs::write(&config, "a = 2\n").unwrap();
        expect_signal(&mut rx).await;
    }

    #[cfg(target_os = "linux")] // notifications: Linux-only
    #[tokio::test]
    async fn a_file_that_differs_from_what_was_loaded_is_signalled_at_once() {
        let dir = TempDir::new("loaded");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 2\n").unwrap();
        for (loaded, changed) in [("a = 1\n", true), ("a = 2\n", false)] {
            let options = WatchOptions {
                loaded: Some(crate::config::content_hash(loaded.as_bytes())),
                ..notify_only()
            };
            let mut rx = start(config.clone(), options, CancellationToken::new()).await;
            if changed {
                expect_signal(&mut rx).await;
            }
            expect_quiet(&mut rx).await;
        }
    }

    #[tokio::test]
    async fn shutdown_ends_the_watcher() {
        let dir = TempDir::new("shutdown");
        let config = dir.join("sluice.toml");
        std::fs::write(&config, "a = 1\n").unwrap();
        let shutdown = CancellationToken::new();
        let options = WatchOptions {
            poll_interval: Duration::from_millis(50),
            ..notify_only()
        };
        let mut rx = start(config.clone(), options, shutdown.clone()).await;

        shutdown.cancel();
        // `None` only once the task has ended and dropped its sender.
        let ended = timeout(SIGNAL_DEADLINE, rx.recv()).await;
        assert_eq!(ended, Ok(None), "the watcher should end on shutdown");
    }
}
