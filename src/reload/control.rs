//! The control thread's command loop: everything that changes the running configuration
//! (reloads from a signal, the admin API or the file watcher; backend registrations) arrives
//! here as a command and is applied one at a time, so two changes never interleave.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use super::register::Answer;
use super::watch::{watch, WatchOptions};
use super::{ReloadError, ReloadReport, Reloader};
use crate::config::Config;

/// What asked for a reload, for the log and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Api,
    File,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Api => "admin API",
            Trigger::File => "file change",
        }
    }
}

pub type ReloadResult = Result<ReloadReport, ReloadError>;

#[derive(Debug)]
enum Command {
    Reload {
        trigger: Trigger,
        reply: Option<oneshot::Sender<ReloadResult>>,
    },
    Register {
        pool: String,
        body: Bytes,
        reply: oneshot::Sender<Answer>,
    },
    Deregister {
        pool: String,
        address: String,
        reply: oneshot::Sender<Answer>,
    },
}

/// Sends commands to the control thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle(mpsc::UnboundedSender<Command>);

/// The receiving end, consumed by `run`.
#[derive(Debug)]
pub struct Commands(mpsc::UnboundedReceiver<Command>);

pub fn channel() -> (ControlHandle, Commands) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ControlHandle(tx), Commands(rx))
}

impl ControlHandle {
    /// Reloads the config file and waits for the outcome.
    pub async fn reload(&self, trigger: Trigger) -> ReloadResult {
        let (reply, answer) = oneshot::channel();
        self.0
            .send(Command::Reload {
                trigger,
                reply: Some(reply),
            })
            .map_err(|_| ReloadError::Stopped)?;
        answer.await.map_err(|_| ReloadError::Stopped)?
    }

    /// Registers a backend (`POST /api/pools/{pool}/backends` with `body`).
    pub async fn register(&self, pool: String, body: Bytes) -> Answer {
        self.ask(|reply| Command::Register { pool, body, reply })
            .await
    }

    /// Deregisters a backend, which drains.
    pub async fn deregister(&self, pool: String, address: String) -> Answer {
        self.ask(|reply| Command::Deregister {
            pool,
            address,
            reply,
        })
        .await
    }

    async fn ask(&self, command: impl FnOnce(oneshot::Sender<Answer>) -> Command) -> Answer {
        let (reply, answer) = oneshot::channel();
        let stopped = || Answer {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            body: serde_json::json!({"error": "sluice is shutting down"}),
        };
        if self.0.send(command(reply)).is_err() {
            return stopped();
        }
        answer.await.unwrap_or_else(|_| stopped())
    }

    /// Asks for a reload without waiting (signals); the outcome is logged.
    pub fn reload_in_background(&self, trigger: Trigger) {
        let _ = self.0.send(Command::Reload {
            trigger,
            reply: None,
        });
    }
}

/// Runs the control loop until `shutdown`: starts the health checks and the file watcher,
/// then applies commands, file changes and registration expiries one at a time.
pub async fn run(mut reloader: Reloader, mut commands: Commands, shutdown: CancellationToken) {
    reloader.start_checks();
    let mut changes = watch_file(&reloader, &shutdown).await;
    loop {
        let expiry = reloader.next_expiry();
        let expired = async {
            match expiry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let command = tokio::select! {
            command = commands.0.recv() => command,
            Some(()) = recv(&mut changes) => {
                let _ = reload(&mut reloader, Trigger::File).await;
                continue;
            }
            () = expired => {
                reloader.expire_registrations().await;
                continue;
            }
            () = shutdown.cancelled() => break,
        };
        match command {
            Some(Command::Reload { trigger, reply }) => {
                let result = reload(&mut reloader, trigger).await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Some(Command::Register { pool, body, reply }) => {
                let _ = reply.send(reloader.register(&pool, &body).await);
            }
            Some(Command::Deregister {
                pool,
                address,
                reply,
            }) => {
                let _ = reply.send(reloader.deregister(&pool, &address).await);
            }
            // Every handle is gone (the server is being dropped): wait for shutdown.
            None => {
                shutdown.cancelled().await;
                break;
            }
        }
    }
    reloader.stop_checks().await;
}

/// Starts watching the config file, when `server.watch` is on and the config came from a file.
async fn watch_file(
    reloader: &Reloader,
    shutdown: &CancellationToken,
) -> Option<mpsc::Receiver<()>> {
    let snapshot = reloader.shared().snapshot();
    let path = snapshot.config.source.clone();
    if !snapshot.config.server.watch || !path.is_file() {
        return None;
    }
    let options = WatchOptions {
        poll_interval: snapshot.config.server.watch_poll_interval,
        loaded: snapshot.config.source_hash,
        ..WatchOptions::default()
    };
    Some(watch(path, options, shutdown.clone()).await)
}

/// The next file change, or never without a watcher.
async fn recv(changes: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match changes {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Reads and validates the file off the control runtime (validation resolves host names,
/// which blocks), then applies it.
async fn reload(reloader: &mut Reloader, trigger: Trigger) -> ReloadResult {
    let path = reloader.path();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|_| ReloadError::Stopped)?;
    reloader.apply(loaded, trigger.as_str())
}
