//! The OS notifications on the config file's directories: Linux's inotify, asked only for the
//! events that may change a file's content (writes, creations, removals, renames, attributes).
//!
//! Opening and reading are left out of the mask, not filtered after the fact: the `notify` crate
//! used before always asked for `IN_OPEN`, so every process opening any file in the directory
//! woke the watcher. A directory that also holds a busy file (a benchmark's backends serving a
//! file from beside the config, a log, static content) cost a wake-up per open: about 10 µs of
//! sluice's system time per request in `peers.py --path /big`.
//!
//! Elsewhere than Linux there are no notifications: the watcher polls (`poll_interval`).

use std::path::{Path, PathBuf};
#[cfg(target_os = "linux")]
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Notifications on a set of directories; a poke on `poke` for every batch of events.
#[cfg(target_os = "linux")]
pub(super) struct Dirs {
    watches: inotify::Watches,
    /// Directories watched now.
    watched: Vec<(PathBuf, inotify::WatchDescriptor)>,
    /// Directories that could not be watched, retried on every look; warned about once.
    failed: Vec<PathBuf>,
    /// Batches of events read so far (what woke the watcher), for the tests.
    #[cfg(test)]
    batches: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

#[cfg(target_os = "linux")]
impl Dirs {
    /// Sets up notifications for `path` (blocking; inside the runtime's context, as on its
    /// blocking pool); `None`, with a warning, when the OS won't.
    pub(super) fn start(path: &Path, poke: Arc<Notify>) -> Option<Dirs> {
        let inotify = inotify::Inotify::init().and_then(|inotify| {
            let watches = inotify.watches();
            // Deprecated because it accepts any `AsRawFd`, even a bare number that something
            // else may close. Sound here: the `Inotify` owns its descriptor (non-blocking), and
            // the `AsyncFd` owns the `Inotify` until both are dropped together. (The replacement,
            // `AsyncFd::register`, is `unsafe`, which this crate forbids.)
            #[allow(deprecated)]
            let events = tokio::io::unix::AsyncFd::new(inotify)?;
            Ok((watches, events))
        });
        let (watches, events) = match inotify {
            Ok(started) => started,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot set up config file notifications; relying on polling");
                return None;
            }
        };
        let batches = Arc::new(AtomicUsize::new(0));
        let reader = tokio::spawn(read(events, poke, batches.clone()));
        let mut dirs = Dirs {
            watches,
            watched: Vec::new(),
            failed: Vec::new(),
            #[cfg(test)]
            batches,
            reader,
        };
        dirs.retarget(path, super::wanted_dirs(path));
        Some(dirs)
    }

    pub(super) fn watches_exactly(&self, wanted: &[PathBuf]) -> bool {
        self.watched.len() == wanted.len()
            && wanted
                .iter()
                .all(|dir| self.watched.iter().any(|(watched, _)| watched == dir))
    }

    /// Watches exactly the `wanted` directories, as far as the OS lets it (blocking).
    pub(super) fn retarget(&mut self, path: &Path, wanted: Vec<PathBuf>) {
        use inotify::WatchMask;
        let mask = WatchMask::CLOSE_WRITE
            | WatchMask::MODIFY
            | WatchMask::ATTRIB
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_FROM
            | WatchMask::MOVED_TO
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        let (kept, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut self.watched)
            .into_iter()
            .partition(|(dir, _)| wanted.contains(dir));
        for (dir, wd) in gone {
            // Fails when the directory is gone (an old ConfigMap revision), which is harmless.
            if let Err(e) = self.watches.remove(wd) {
                tracing::debug!(path = %path.display(), dir = %dir.display(), error = %e, "config directory unwatch failed");
            }
        }
        self.watched = kept;
        self.failed.retain(|dir| wanted.contains(dir));
        for dir in wanted {
            if self.watched.iter().any(|(watched, _)| *watched == dir) {
                continue;
            }
            match self.watches.add(&dir, mask) {
                Ok(wd) => {
                    self.failed.retain(|failed| *failed != dir);
                    self.watched.push((dir, wd));
                }
                Err(e) if !self.failed.contains(&dir) => {
                    tracing::warn!(path = %path.display(), dir = %dir.display(), error = %e, "cannot watch config directory; relying on polling there");
                    self.failed.push(dir);
                }
                Err(_) => {}
            }
        }
    }

    #[cfg(test)]
    pub(super) fn batches(&self) -> usize {
        self.batches.load(Ordering::Relaxed)
    }
}

#[cfg(target_os = "linux")]
impl Drop for Dirs {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads the inotify events as they come; any batch of them may mean a change.
#[cfg(target_os = "linux")]
async fn read(
    mut events: tokio::io::unix::AsyncFd<inotify::Inotify>,
    poke: Arc<Notify>,
    batches: Arc<AtomicUsize>,
) {
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(mut ready) = events.readable_mut().await else {
            return;
        };
        match ready.try_io(|inotify| {
            inotify
                .get_mut()
                .read_events(&mut buffer)
                .map(|e| e.count())
        }) {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(_)) => {
                batches.fetch_add(1, Ordering::Relaxed);
                poke.notify_one();
            }
            // Not expected from inotify; whatever it was, anything may have changed.
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "config file notification error");
                poke.notify_one();
            }
        }
    }
}

/// No notifications here: `start` says so, and the watcher polls.
#[cfg(not(target_os = "linux"))]
pub(super) struct Dirs;

#[cfg(not(target_os = "linux"))]
impl Dirs {
    pub(super) fn start(path: &Path, _poke: Arc<Notify>) -> Option<Dirs> {
        tracing::info!(path = %path.display(), "config file notifications are Linux-only here; relying on polling");
        None
    }

    pub(super) fn watches_exactly(&self, _wanted: &[PathBuf]) -> bool {
        true
    }

    pub(super) fn retarget(&mut self, _path: &Path, _wanted: Vec<PathBuf>) {}
}
