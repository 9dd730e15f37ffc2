//! The registrations on disk: `<state_dir>/registrations.json`, pretty JSON with a version.
//!
//! A time to live is kept as a wall-clock expiry in unix seconds (`Instant`s mean nothing to
//! another process), so a restart honours it and drops what expired while sluice was down.
//! Writes are atomic (a temporary file, fsync, rename, fsync of the directory): after a crash the
//! file is the old version or the new one, never half of one, and a leftover temporary file is
//! ignored, then overwritten by the next save.
//!
//! All of it is blocking `std::fs`; the admin API runs it with `spawn_blocking`.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{Corruption, RegistryError};
use super::{Registration, Registry};

pub(super) const FILE_NAME: &str = "registrations.json";
const TMP_NAME: &str = "registrations.json.tmp";
const VERSION: u64 = 1;

/// The file as written.
#[derive(Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an object with `version` and `registrations`"
)]
struct FileV1 {
    version: u64,
    registrations: Vec<Saved>,
}

/// Read first, alone, so that a file from a newer sluice gets "unsupported version" rather than
/// whatever its new shape trips over.
#[derive(Deserialize)]
struct VersionOnly {
    version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    pool: String,
    address: String,
    weight: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ttl_seconds: Option<u64>,
    /// Unix seconds, rounded up. Present exactly when `ttl_seconds` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_unix: Option<u64>,
}

/// The registrations encoded, ready to write. Encoding is quick, so it can happen under the
/// lock that guards the `Registry`; `write` is slow (two fsyncs) and needs no lock.
///
/// Writes of one state directory must not overlap, since they share the temporary file: run them
/// one at a time (from one task, or under a lock of their own), newest last.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    bytes: Vec<u8>,
}

impl StateFile {
    /// Writes atomically: creates the directory if missing, writes `registrations.json.tmp`
    /// beside the target, fsyncs it, renames it over `registrations.json` and fsyncs the
    /// directory so that the rename itself survives a crash. Blocking.
    pub fn write(&self) -> Result<(), RegistryError> {
        // `Path::new("")` is the current directory to `create_dir_all` but cannot be opened.
        let dir = if self.dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            self.dir.as_path()
        };
        fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        let tmp = dir.join(TMP_NAME);
        let target = dir.join(FILE_NAME);
        let written = write_synced(&tmp, &self.bytes)
            .map_err(io("write", &tmp))
            .and_then(|()| fs::rename(&tmp, &target).map_err(io("rename into place", &target)));
        if let Err(e) = written {
            // Best effort: a leftover is harmless (ignored by `load`, replaced by the next save).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(dir).map_err(io("sync directory", dir))
    }

    /// The file this writes.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The encoded content: pretty JSON ending in a newline.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// For `map_err`: an I/O error while doing `op` to `path`.
fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RegistryError {
    let path = path.to_path_buf();
    move |error| RegistryError::Io { op, path, error }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Elsewhere a directory cannot be opened for syncing; the rename is as durable as it gets.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

fn unix_seconds(wall: SystemTime) -> u64 {
    // A clock before 1970 counts as 1970: everything with a TTL then looks unexpired.
    wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Registry {
    /// Reads `<state_dir>/registrations.json`. A missing file or directory is no registrations.
    /// Registrations whose time to live ran out while sluice was down are dropped (and logged).
    /// Expiry `Instant`s count from `now`. Blocking.
    ///
    /// Errors: `Io` when the file exists but cannot be read (starting empty would then overwrite
    /// it at the next save), `Corrupt` when it is not a valid version 1 file; the caller then
    /// starts with `Registry::empty` and moves the file aside with `set_aside_corrupt`.
    pub fn load(state_dir: &Path, now: Instant) -> Result<Registry, RegistryError> {
        Registry::load_at(state_dir, now, SystemTime::now())
    }

    fn load_at(
        state_dir: &Path,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Registry, RegistryError> {
        let mut registry = Registry::empty(state_dir);
        let path = registry.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(registry),
            Err(error) => {
                return Err(RegistryError::Io {
                    op: "read",
                    path,
                    error,
                })
            }
        };
        let corrupt = |problem| RegistryError::Corrupt {
            path: path.clone(),
            problem,
        };
        if let Ok(VersionOnly { version }) = serde_json::from_slice(&bytes) {
            if version != VERSION {
                return Err(corrupt(Corruption::Version(version)));
            }
        }
        let file: FileV1 =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(Corruption::Json(e)))?;
        let wall_now = unix_seconds(wall);
        for (index, saved) in file.registrations.into_iter().enumerate() {
            let mut registration =
                Registration::new(&saved.pool, &saved.address, saved.weight, saved.ttl_seconds)
                    .map_err(|e| {
                        corrupt(Corruption::Entry {
                            index,
                            error: Box::new(e),
                        })
                    })?;
            match (registration.ttl, saved.expires_at_unix) {
                (None, None) => {}
                (Some(ttl), Some(expires_at_unix)) => {
                    let left = expires_at_unix.saturating_sub(wall_now);
                    if left == 0 {
                        tracing::info!(
                            pool = %registration.pool,
                            backend = %registration.address,
                            "registration expired while sluice was down"
                        );
                        continue;
                    }
                    // Never more than the TTL: the wall clock may have stepped back since.
                    let left = Duration::from_secs(left).min(ttl);
                    registration.expires_at = now.checked_add(left);
                }
                _ => return Err(corrupt(Corruption::Expiry { index })),
            }
            let backends = registry.pools.entry(registration.pool.clone()).or_default();
            if backends.contains_key(&registration.address) {
                return Err(corrupt(Corruption::Duplicate {
                    index,
                    pool: registration.pool,
                    address: registration.address,
                }));
            }
            backends.insert(registration.address.clone(), registration);
        }
        Ok(registry)
    }

    /// Encodes every registration for `write`; expiries count from `now`. Registrations already
    /// expired at `now` are left out.
    pub fn to_state_file(&self, now: Instant) -> StateFile {
        self.to_state_file_at(now, SystemTime::now())
    }

    fn to_state_file_at(&self, now: Instant, wall: SystemTime) -> StateFile {
        let wall_since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        let registrations = self
            .iter()
            .filter(|r| r.expires_at.is_none_or(|at| at > now))
            .map(|r| Saved {
                pool: r.pool.clone(),
                address: r.address.clone(),
                weight: u64::from(r.weight),
                ttl_seconds: r.ttl.map(|ttl| ttl.as_secs()),
                expires_at_unix: r.ttl.map(|ttl| {
                    // Without an `Instant` (overflowed at upsert), a full TTL from now.
                    let left = r
                        .expires_at
                        .map_or(ttl, |at| at.saturating_duration_since(now));
                    let at = wall_since_epoch.saturating_add(left);
                    at.as_secs()
                        .saturating_add(u64::from(at.subsec_nanos() > 0))
                }),
            })
            .collect();
        let file = FileV1 {
            version: VERSION,
            registrations,
        };
        // Cannot fail: serde_json fails only on maps with non-string keys and on `Serialize`
        // impls that return errors, and `FileV1` has neither.
        let mut bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
        bytes.push(b'\n');
        StateFile {
            dir: self.dir.clone(),
            bytes,
        }
    }

    /// Encodes and writes at once, blocking: `to_state_file(now).write()`. From async code,
    /// prefer the two steps: `to_state_file` under the registry's lock, then `write` in
    /// `spawn_blocking` without it, so that no admin request waits on an fsync.
    pub fn save(&self, now: Instant) -> Result<(), RegistryError> {
        self.to_state_file(now).write()
    }

    /// Moves an unusable state file aside, to `registrations.json.corrupt-<unix seconds>` in the
    /// same directory (with `-1`, `-2`... if that exists), so nothing is lost when sluice starts
    /// empty. Returns the new path. Blocking.
    pub fn set_aside_corrupt(state_dir: &Path) -> Result<PathBuf, RegistryError> {
        set_aside_at(state_dir, SystemTime::now())
    }
}

fn set_aside_at(state_dir: &Path, wall: SystemTime) -> Result<PathBuf, RegistryError> {
    let from = state_dir.join(FILE_NAME);
    let stamp = unix_seconds(wall);
    for n in 0..100u32 {
        let name = match n {
            0 => format!("{FILE_NAME}.corrupt-{stamp}"),
            n => format!("{FILE_NAME}.corrupt-{stamp}-{n}"),
        };
        let to = state_dir.join(name);
        if fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        return match fs::rename(&from, &to) {
            Ok(()) => Ok(to),
            Err(error) => Err(RegistryError::Io {
                op: "move aside",
                path: from,
                error,
            }),
        };
    }
    Err(RegistryError::Io {
        op: "move aside",
        path: from,
        error: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "100 files set aside in the same second already",
        ),
    })
}

#[cfg(test)]
mod tests;
