//! Hot reload: build a new snapshot off the request path, carry every surviving backend's
//! state over, swap it in with one store, and report what changed.
//!
//! A reload is all or nothing. The file is read, parsed and validated completely (names
//! resolved too) and every new listener's socket is bound before anything changes; any
//! failure leaves the running config serving and the generation where it was. Then:
//!
//! 1. `Snapshot::next` builds the new snapshot, handing each surviving pool's and backend's
//!    runtime state over (`upstream::Pool::build`);
//! 2. one `ArcSwap` store makes it current: requests already in flight finish on the snapshot
//!    they loaded, new ones see the new one;
//! 3. listeners follow: a changed one gets its new settings in place (never re-bound), a new
//!    one starts on every worker, a removed one stops accepting and drains its connections;
//! 4. backends no longer present take no new requests (they are in no current pool) and are
//!    listed as draining until their last request finishes;
//! 5. health checks are reconciled with the new pools.
//!
//! The reloads of a process are serialized: they all run on the control thread (`control`).

pub mod control;
pub mod diff;
pub mod register;
pub mod registrations;
pub mod watch;

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigErrors};
use crate::health::active::Checkers;
use crate::listener::{ListenerSettings, SharedSettings};
use crate::server::{bind_listener, WorkerCommand};
use crate::state::{ReloadFailure, ReloadOutcome, Shared, Snapshot};
use diff::ConfigDiff;
use registrations::Registrations;

/// A listener being served: its identity across reloads and the handles to change or stop it.
#[derive(Debug)]
pub struct RunningListener {
    pub id: usize,
    pub config: config::Listener,
    /// The bound address (the actual port when the config says 0).
    pub addr: SocketAddr,
    settings: SharedSettings,
    /// Stops its acceptors and closes its connections gracefully.
    stop: CancellationToken,
}

impl RunningListener {
    pub fn new(
        id: usize,
        config: config::Listener,
        addr: SocketAddr,
        shutdown: &CancellationToken,
    ) -> RunningListener {
        RunningListener {
            id,
            settings: Arc::new(arc_swap::ArcSwap::from_pointee(ListenerSettings::new(
                config.clone(),
            ))),
            config,
            addr,
            stop: shutdown.child_token(),
        }
    }

    /// Hands the listener's sockets to the workers: one each (per-core), or the one socket
    /// to the one shared runtime.
    pub fn start(
        &self,
        sockets: Vec<std::net::TcpListener>,
        workers: &[UnboundedSender<WorkerCommand>],
    ) {
        for (socket, worker) in sockets.into_iter().zip(workers) {
            // A worker that is gone is shutting down; its socket closes with the command.
            let _ = worker.send(WorkerCommand::Listen {
                id: self.id,
                socket,
                settings: self.settings.clone(),
                stop: self.stop.clone(),
            });
        }
    }
}

/// Everything the reloader needs from the server that started it.
pub struct ReloaderParts {
    pub shared: Arc<Shared>,
    /// Upstream clients per pool (one per worker, or one shared).
    pub clients: usize,
    pub per_core: bool,
    pub workers: Vec<UnboundedSender<WorkerCommand>>,
    pub listeners: Vec<RunningListener>,
    pub shutdown: CancellationToken,
    /// The config file as last loaded, before registrations are layered over it.
    pub file: Config,
    pub registrations: Registrations,
}

/// Applies new configurations to a running server. Lives on the control thread.
pub struct Reloader {
    parts: ReloaderParts,
    next_id: usize,
    /// Started on the control runtime by `start_checks`.
    checkers: Option<Checkers>,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Bind(io::Error),
    #[error("the control thread has stopped")]
    Stopped,
}

impl ReloadError {
    /// How many errors, and the first in one line (`file:line:column: message`), for the
    /// status page.
    pub fn failure(&self) -> ReloadFailure {
        let ReloadError::Invalid(errors) = self else {
            return ReloadFailure {
                errors: 1,
                first: self.to_string(),
            };
        };
        let first = errors.iter().next().map_or_else(
            || self.to_string(),
            |e| {
                let at = match (e.line(), e.column()) {
                    (Some(line), Some(column)) => format!(":{line}:{column}"),
                    _ => String::new(),
                };
                format!("{}{at}: {}", e.path().display(), e.message())
            },
        );
        ReloadFailure {
            errors: errors.len(),
            first,
        }
    }
}

/// What a successful reload did.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub generation: u64,
    pub trigger: &'static str,
    pub changes: ConfigDiff,
    /// Every listener and the address it is bound to (new ones on port 0 get theirs here).
    pub listening: Vec<Listening>,
    /// Settings that changed in the file but only take effect at the next start.
    pub restart_required: Vec<&'static str>,
    /// The log filter now in force, when the reload changed `log.level` (it applies at once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listening {
    pub name: String,
    pub addr: SocketAddr,
}

impl Reloader {
    pub fn new(parts: ReloaderParts) -> Reloader {
        Reloader {
            next_id: parts.listeners.iter().map(|l| l.id + 1).max().unwrap_or(0),
            parts,
            checkers: None,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.parts.shared
    }

    /// Starts the active checks of the current snapshot on the current (control) runtime.
    pub fn start_checks(&mut self) {
        let checkers = Checkers::start(&self.parts.shared.snapshot(), &self.parts.shutdown);
        if !checkers.is_empty() {
            tracing::debug!(backends = checkers.len(), "active health checks started");
        }
        self.checkers = Some(checkers);
    }

    pub async fn stop_checks(&mut self) {
        if let Some(checkers) = self.checkers.take() {
            checkers.stop().await;
        }
    }

    /// The file the running config came from.
    pub fn path(&self) -> PathBuf {
        self.parts.shared.snapshot().config.source.clone()
    }

    /// Validates `config` completely, binds its new listeners, and swaps it in; on any error
    /// nothing changes. Counts the outcome for the metrics and logs it.
    pub fn apply(
        &mut self,
        config: Result<Config, ConfigErrors>,
        trigger: &'static str,
    ) -> Result<ReloadReport, ReloadError> {
        let result = config.map_err(ReloadError::Invalid).and_then(|file| {
            let layered = self.parts.registrations.layer(&file);
            let report = self.swap(layered, trigger)?;
            self.parts.file = file;
            Ok(report)
        });
        let shared = &self.parts.shared;
        let generation = shared.snapshot().generation;
        match &result {
            Ok(report) => {
                shared
                    .reloads
                    .ok
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    generation,
                    trigger,
                    changes = %report.changes.summary(),
                    "configuration reloaded"
                );
                if !report.restart_required.is_empty() {
                    tracing::warn!(
                        settings = ?report.restart_required,
                        "some changed settings take effect only after a restart"
                    );
                }
            }
            Err(e) => {
                shared
                    .reloads
                    .error
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(
                    generation,
                    trigger,
                    error = %e,
                    "configuration reload failed; the running configuration stays"
                );
            }
        }
        shared.set_last_reload(ReloadOutcome {
            at: std::time::SystemTime::now(),
            trigger,
            generation,
            result: match &result {
                Ok(report) => Ok(report.changes.summary()),
                Err(e) => Err(e.failure()),
            },
        });
        result
    }

    /// Swaps in `config` (the file with registrations layered over it): listeners first (a
    /// bind failure changes nothing), then the snapshot, then everything that follows it.
    fn swap(&mut self, config: Config, trigger: &'static str) -> Result<ReloadReport, ReloadError> {
        let old = self.parts.shared.snapshot();
        let mut restart_required = restart_required(&old.config, &config);
        let plan = self.plan_listeners(&config)?;
        let ids: Vec<usize> = plan.iter().map(|p| p.id).collect();
        let snapshot = Arc::new(Snapshot::next(
            Arc::new(config),
            self.parts.clients,
            old.generation + 1,
            Some(&old),
            &ids,
        ));
        let changes = ConfigDiff::between(&old.config, &snapshot.config);
        self.parts.shared.store(snapshot.clone());
        let log_level = self.apply_log_level(&old.config, &snapshot.config);
        if log_level.is_none() && old.config.log.level != snapshot.config.log.level {
            restart_required.push("log.level");
        }

        // Listeners, now that the snapshot knows every new id.
        let mut running = Vec::with_capacity(plan.len());
        let mut previous: Vec<Option<RunningListener>> = std::mem::take(&mut self.parts.listeners)
            .into_iter()
            .map(Some)
            .collect();
        for (step, settings) in plan.into_iter().zip(&snapshot.config.listeners) {
            let listener = match step.sockets {
                Some((sockets, addr)) => {
                    let listener =
                        RunningListener::new(step.id, settings.clone(), addr, &self.parts.shutdown);
                    listener.start(sockets, &self.parts.workers);
                    listener
                }
                None => {
                    let mut listener = previous
                        .iter_mut()
                        .find_map(|l| l.take_if(|l| l.id == step.id))
                        .expect("a kept listener is among the running ones");
                    if !same_listener(&listener.config, settings) {
                        listener
                            .settings
                            .store(Arc::new(ListenerSettings::new(settings.clone())));
                        listener.config = settings.clone();
                    }
                    listener
                }
            };
            running.push(listener);
        }
        for removed in previous.into_iter().flatten() {
            tracing::info!(listener = %removed.config.name, addr = %removed.addr, "listener removed; draining its connections");
            removed.stop.cancel();
        }
        self.parts.listeners = running;

        self.retire_backends(&old, &snapshot);
        if let Some(checkers) = &mut self.checkers {
            let done = checkers.reconcile(&snapshot.pools);
            tracing::debug!(
                started = done.started,
                stopped = done.stopped,
                kept = done.kept,
                "health checks reconciled"
            );
        }
        Ok(ReloadReport {
            generation: snapshot.generation,
            trigger,
            changes,
            listening: self
                .parts
                .listeners
                .iter()
                .map(|l| Listening {
                    name: l.config.name.clone(),
                    addr: l.addr,
                })
                .collect(),
            restart_required,
            log_level,
        })
    }

    /// A changed `log.level` applies at once (it was checked with the rest of the file); an
    /// unchanged one leaves the running filter alone, so a level set through the admin API
    /// stays until the file says otherwise. The filter now in force, when it changed.
    fn apply_log_level(&self, old: &Config, new: &Config) -> Option<String> {
        if old.log.level == new.log.level {
            return None;
        }
        let control = self.parts.shared.log.as_ref()?;
        match control.set(&new.log.level) {
            Ok(change) => Some(change.level),
            Err(e) => {
                tracing::warn!(error = %e, level = %new.log.level, "log.level not applied");
                None
            }
        }
    }

    /// For each listener of `config`: the running listener it continues (same name and
    /// address, or failing that the same address under a new name), or new sockets bound for
    /// it now. A bind failure fails the whole reload (the sockets bound so far close).
    fn plan_listeners(&mut self, config: &Config) -> Result<Vec<Planned>, ReloadError> {
        let running = &self.parts.listeners;
        let mut taken = vec![false; running.len()];
        let mut kept: Vec<Option<usize>> = vec![None; config.listeners.len()];
        // First the same name and address, then the same address under a new name.
        for by_name in [true, false] {
            for (i, listener) in config.listeners.iter().enumerate() {
                if kept[i].is_some() {
                    continue;
                }
                let found = running.iter().enumerate().position(|(j, r)| {
                    !taken[j]
                        && r.config.bind == listener.bind
                        && (!by_name || r.config.name == listener.name)
                });
                if let Some(j) = found {
                    taken[j] = true;
                    kept[i] = Some(j);
                }
            }
        }
        let mut plan = Vec::with_capacity(config.listeners.len());
        let mut next_id = self.next_id;
        for (listener, kept) in config.listeners.iter().zip(kept) {
            plan.push(match kept {
                Some(j) => Planned {
                    id: running[j].id,
                    sockets: None,
                },
                None => {
                    let bound = bind_listener(listener, self.parts.per_core, self.worker_count())
                        .map_err(ReloadError::Bind)?;
                    next_id += 1;
                    Planned {
                        id: next_id - 1,
                        sockets: Some(bound),
                    }
                }
            });
        }
        self.next_id = next_id;
        Ok(plan)
    }

    fn worker_count(&self) -> usize {
        if self.parts.per_core {
            self.parts.workers.len()
        } else {
            1
        }
    }

    /// Lists every backend of `old` that `new` does not keep and that still has requests in
    /// flight, for the admin API, until they finish. New requests cannot reach such a backend
    /// (it is in no current pool); one that loaded the old snapshot just before the swap may
    /// still be sent to it, which is what lets that request succeed rather than fail with 503.
    fn retire_backends(&self, old: &Snapshot, new: &Snapshot) {
        let kept: HashSet<*const crate::upstream::Backend> = new
            .pools
            .iter()
            .flat_map(|p| p.backends.iter().map(Arc::as_ptr))
            .collect();
        let mut draining = self
            .parts
            .shared
            .draining
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for pool in &old.pools {
            for backend in &pool.backends {
                if !kept.contains(&Arc::as_ptr(backend)) && backend.active_requests() > 0 {
                    draining.push((pool.name.clone(), backend.clone()));
                }
            }
        }
    }
}

/// One listener of a new config: its id, and its sockets when it is new.
struct Planned {
    id: usize,
    sockets: Option<(Vec<std::net::TcpListener>, SocketAddr)>,
}

/// Whether two listener configs serve connections alike (nothing to update).
fn same_listener(a: &config::Listener, b: &config::Listener) -> bool {
    a.name == b.name && diff::same_listener(&a, &b)
}

/// Settings of the new file that a running process cannot apply.
fn restart_required(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let (a, b) = (&old.server, &new.server);
    if a.workers != b.workers {
        changed.push("server.workers");
    }
    if a.max_connections != b.max_connections {
        changed.push("server.max_connections");
    }
    if a.shutdown_timeout != b.shutdown_timeout {
        changed.push("server.shutdown_timeout");
    }
    if a.state_dir != b.state_dir {
        changed.push("server.state_dir");
    }
    if a.watch != b.watch || a.watch_poll_interval != b.watch_poll_interval {
        changed.push("server.watch");
    }
    let admin = |c: &Config| c.admin.as_ref().map(|a| (a.bind, a.token.clone()));
    if admin(old) != admin(new) {
        changed.push("admin");
    }
    if old.log.format != new.log.format {
        changed.push("log.format");
    }
    changed
}
