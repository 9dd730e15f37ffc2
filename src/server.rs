//! Process architecture: worker threads and their runtimes, listener sockets, the control
//! runtime (admin API and active health checks), and bounded graceful shutdown.
//!
//! Default (`per-core`): each worker is an OS thread running a current-thread tokio runtime
//! with its own `SO_REUSEPORT` socket per listener and its own upstream clients, so a request
//! is accepted, proxied and answered on one thread and never crosses to another. The
//! alternative (`shared`: one multi-thread runtime, one socket per listener, shared upstream
//! clients) is kept for measurement; `docs/architecture.md` has the figures behind the choice.
//!
//! One more thread, `sluice-control`, runs a current-thread runtime for the admin API, the
//! active health checks and reloads, so that none competes with requests on a worker's
//! runtime. Workers take their listeners as commands from it: the ones bound at start, and
//! later the ones a reload adds.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::sync::mpsc;

use crate::admin;
use crate::config::{self, Config};
use crate::listener::{self, Acceptor, SharedSettings};
use crate::reload::control::{self, Commands, ControlHandle, Trigger};
use crate::reload::registrations::Registrations;
use crate::reload::{Reloader, ReloaderParts, RunningListener};
use crate::state::{Shared, Snapshot};
use crate::telemetry::LogControl;

/// How workers share the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// One current-thread runtime per worker, `SO_REUSEPORT` sockets, per-worker pools.
    PerCore,
    /// One multi-thread runtime with `workers` threads, shared sockets and pools.
    Shared,
}

impl RuntimeKind {
    /// `SLUICE_RUNTIME=shared` selects the alternative; anything else is the default.
    pub fn from_env() -> RuntimeKind {
        match std::env::var("SLUICE_RUNTIME").as_deref() {
            Ok("shared") => RuntimeKind::Shared,
            _ => RuntimeKind::PerCore,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Overrides `server.workers` (`--workers`).
    pub workers: Option<usize>,
    pub runtime: RuntimeKind,
    /// The installed logger's filter (`telemetry::init`), for the admin API and reloads to
    /// change; without it `PUT /api/log-level` answers 503.
    pub log: Option<LogControl>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: None,
            runtime: RuntimeKind::from_env(),
            log: None,
        }
    }
}

struct BoundListener {
    settings: config::Listener,
    /// One per worker (per-core) or a single shared socket.
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

/// What the control thread asks a worker's runtime to do.
#[derive(Debug)]
pub enum WorkerCommand {
    /// Serve a listener: accept on `socket` until `stop`, which also closes its connections
    /// gracefully (shutdown, or a reload removing the listener).
    Listen {
        id: usize,
        socket: std::net::TcpListener,
        settings: SharedSettings,
        stop: CancellationToken,
    },
}

/// A configured, bound, not yet running sluice.
pub struct Server {
    shared: Arc<Shared>,
    workers: usize,
    runtime: RuntimeKind,
    listeners: Vec<BoundListener>,
    admin: Option<(std::net::TcpListener, config::Admin)>,
    control: (ControlHandle, Commands),
    /// The file as loaded, before registrations are layered over it.
    file: Config,
    registrations: Registrations,
}

impl Server {
    /// Binds every socket (so a port already in use fails here, before anything runs) and
    /// builds the first snapshot.
    pub fn bind(config: Config, options: RunOptions) -> io::Result<Server> {
        let workers = match options.workers.unwrap_or(config.server.workers) {
            0 => thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let per_core = options.runtime == RuntimeKind::PerCore;
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for settings in &config.listeners {
            let (sockets, addr) = bind_listener(settings, per_core, workers)?;
            listeners.push(BoundListener {
                settings: settings.clone(),
                sockets,
                addr,
            });
        }
        let admin = match &config.admin {
            Some(admin) => {
                let socket = listener::bind(admin.bind, false).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("admin API cannot bind {}: {e}", admin.bind),
                    )
                })?;
                Some((socket, admin.clone()))
            }
            None => None,
        };
        let registrations = Registrations::load(&config.server.state_dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read the registrations in {}: {e}",
                    config.server.state_dir.display()
                ),
            )
        })?;
        let clients = if per_core { workers } else { 1 };
        let layered = registrations.layer(&config);
        let snapshot = Snapshot::build(Arc::new(layered), clients, 1);
        let mut shared = Shared::new(snapshot);
        shared.log = options.log;
        Ok(Server {
            file: config,
            registrations,
            shared: Arc::new(shared),
            workers,
            runtime: options.runtime,
            listeners,
            admin,
            control: control::channel(),
        })
    }

    /// The bound address of each listener, in config order (the actual port when bound to 0).
    pub fn listener_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.addr).collect()
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|(s, _)| s.local_addr().ok())
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Sends commands (reload, registration) to the running server's control thread.
    pub fn control(&self) -> ControlHandle {
        self.control.0.clone()
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish within `server.shutdown_timeout`, and returns.
    pub fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let grace = self.shared.snapshot().config.server.shutdown_timeout;
        let per_core = self.runtime == RuntimeKind::PerCore;
        let groups: Vec<(usize, Option<usize>)> = if per_core {
            (0..self.workers).map(|w| (w, None)).collect()
        } else {
            vec![(0, Some(self.workers))]
        };
        let (senders, receivers): (Vec<_>, Vec<_>) =
            groups.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let mut running = Vec::with_capacity(self.listeners.len());
        for (id, bound) in self.listeners.into_iter().enumerate() {
            let listener = RunningListener::new(id, bound.settings, bound.addr, &shutdown);
            listener.start(bound.sockets, &senders);
            running.push(listener);
        }
        let mut threads = Vec::new();
        for ((worker, threads_in_runtime), commands) in groups.into_iter().zip(receivers) {
            let (shared, shutdown) = (self.shared.clone(), shutdown.clone());
            let name = format!("sluice-worker-{worker}");
            threads.push(spawn_runtime(&name, threads_in_runtime, move || {
                if per_core {
                    // All of this worker's tasks run on this thread: they count into its
                    // copies and share its handle on the snapshot (`shard`, `state`).
                    crate::shard::enter(worker);
                }
                serve_worker(shared, worker, commands, shutdown, grace)
            })?);
        }
        let reloader = Reloader::new(ReloaderParts {
            shared: self.shared.clone(),
            clients: if per_core { self.workers } else { 1 },
            per_core,
            workers: senders,
            listeners: running,
            shutdown: shutdown.clone(),
            file: self.file,
            registrations: self.registrations,
        });
        let (admin, shared, token) = (self.admin, self.shared.clone(), shutdown.clone());
        let (handle, commands) = self.control;
        threads.push(spawn_runtime("sluice-control", None, move || {
            serve_control(shared, admin, reloader, handle, commands, token)
        })?);
        let mut result = Ok(());
        for t in threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("a worker thread panicked")),
            }
        }
        result
    }
}

/// Binds a listener's sockets: one per worker sharing the port (`per_core`), or one.
pub fn bind_listener(
    settings: &config::Listener,
    per_core: bool,
    workers: usize,
) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let first = listener::bind(settings.bind, per_core).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "listener `{}` cannot bind {}: {e}",
                settings.name, settings.bind
            ),
        )
    })?;
    // Port 0 picks a port once; the other workers' sockets join that port.
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    if per_core {
        for _ in 1..workers {
            sockets.push(listener::bind(addr, true)?);
        }
    }
    Ok((sockets, addr))
}

/// Runs `task` on a new thread with its own runtime: current-thread, or multi-thread with
/// `threads` workers.
fn spawn_runtime<F, Fut>(
    name: &str,
    threads: Option<usize>,
    task: F,
) -> io::Result<thread::JoinHandle<io::Result<()>>>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = io::Result<()>>,
{
    thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let runtime = match threads {
                None => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?,
                Some(n) => tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(n)
                    .enable_all()
                    .build()?,
            };
            runtime.block_on(task())
        })
}

async fn serve_worker(
    shared: Arc<Shared>,
    worker: usize,
    mut commands: mpsc::UnboundedReceiver<WorkerCommand>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let mut acceptors = Vec::new();
    tokio::spawn(sweep_idle(shared.clone(), worker, shutdown.clone()));
    loop {
        let command = tokio::select! {
            command = commands.recv() => command,
            () = shutdown.cancelled() => break,
        };
        let Some(WorkerCommand::Listen {
            id,
            socket,
            settings,
            stop,
        }) = command
        else {
            // The control thread is gone: only shutdown is left to wait for.
            shutdown.cancelled().await;
            break;
        };
        let acceptor = Acceptor {
            shared: shared.clone(),
            id,
            worker,
            listener: tokio::net::TcpListener::from_std(socket)?,
            settings,
        };
        acceptors.retain(|a: &tokio::task::JoinHandle<()>| !a.is_finished());
        acceptors.push(tokio::spawn(acceptor.run(stop, tracker.clone())));
    }
    for acceptor in acceptors {
        // Joining closes every listening socket before the grace period starts.
        let _ = acceptor.await;
    }
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            worker,
            connections = tracker.len(),
            "shutdown timeout reached; cutting the remaining connections"
        );
    }
    crate::state::forget_handle();
    Ok(())
}

/// Closes this worker's idle upstream connections (`upstream::h1`) that have outlived their
/// pool's idle timeout or that their backend has closed, so that none lingers half-closed once
/// traffic stops.
async fn sweep_idle(shared: Arc<Shared>, worker: usize, shutdown: CancellationToken) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => return,
        }
        shared.release_stale_handle();
        let snapshot = shared.snapshot();
        for pool in &snapshot.pools {
            for backend in &pool.backends {
                backend.idle.sweep(worker, pool.timeouts.idle);
            }
        }
    }
}

/// The control runtime, on a thread of its own so that neither probes, reloads nor admin
/// requests ever delay a worker: the admin API (when configured), the active health checks and
/// the reloads (signals, admin API, file watching), until `shutdown`.
async fn serve_control(
    shared: Arc<Shared>,
    admin: Option<(std::net::TcpListener, config::Admin)>,
    reloader: Reloader,
    handle: ControlHandle,
    commands: Commands,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let admin = admin.map(|(socket, settings)| {
        tokio::spawn(admin::serve(
            socket,
            settings,
            shared.clone(),
            handle,
            shutdown.clone(),
        ))
    });
    control::run(reloader, commands, shutdown).await;
    match admin {
        Some(task) => task
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the admin API panicked"))),
        None => Ok(()),
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT, and asks for a reload on SIGHUP. Runs on its own
/// thread for the life of the process.
pub fn handle_signals(shutdown: CancellationToken, control: ControlHandle) -> io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, before the thread starts, so a signal that arrives early is not lost.
    let (mut term, mut int, mut hup) = runtime.block_on(async {
        Ok::<_, io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    thread::Builder::new()
        .name("sluice-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = int.recv() => break tracing::info!(signal = "SIGINT", "shutting down"),
                    _ = hup.recv() => {
                        tracing::info!(signal = "SIGHUP", "reloading the configuration");
                        control.reload_in_background(Trigger::Signal);
                    }
                }
            }
            shutdown.cancel();
        })
        })?;
    Ok(())
}
