//! The control thread's command loop: everything that changes the running configuration
//! (reloads from a signal, the admin API or the file watcher; backend registrations) arrives
//! here as a command and is applied one at a time, so two changes never interleave.

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

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

    /// Asks for a reload without waiting (signals); the outcome is logged.
    pub fn reload_in_background(&self, trigger: Trigger) {
        let _ = self.0.send(Command::Reload {
            trigger,
            reply: None,
        });
    }
}

/// Runs the control loop until `shutdown`: starts the health checks, then applies commands
/// one at a time.
pub async fn run(mut reloader: Reloader, mut commands: Commands, shutdown: CancellationToken) {
    reloader.start_checks();
    loop {
        let command = tokio::select! {
            command = commands.0.recv() => command,
            () = shutdown.cancelled() => break,
        };
        match command {
            Some(Command::Reload { trigger, reply }) => {
                let result = reload(&mut reloader, trigger).await;
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
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

/// Reads and validates the file off the control runtime (validation resolves host names,
/// which blocks), then applies it.
async fn reload(reloader: &mut Reloader, trigger: Trigger) -> ReloadResult {
    let path = reloader.path();
    let loaded = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|_| ReloadError::Stopped)?;
    reloader.apply(loaded, trigger.as_str())
}
