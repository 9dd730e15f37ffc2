//! Process architecture: worker threads and their runtimes, listener sockets, the control
//! runtime (admin API and active health checks), and bounded graceful shutdown.
//!
//! Default (`per-core`): each worker is an OS thread running a current-thread tokio runtime
//! with its own `SO_REUSEPORT` socket per listener and its own upstream clients, so a request
//! is accepted, proxied and answered on one thread and never crosses to another. The
//! alternative (`shared`: one multi-thread runtime, one socket per listener, shared upstream
//! clients) is kept for measurement; `docs/architecture.md` has the figures behind the choice.
//!
//! One more thread, `sluice-control`, runs a current-thread runtime for the admin API and the
//! active health checks, so that neither competes with requests on a worker's runtime.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::config::{self, Config};
use crate::health::active::Checkers;
use crate::listener::{self, Acceptor};
use crate::state::{Shared, Snapshot};

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
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: None,
            runtime: RuntimeKind::from_env(),
        }
    }
}

struct BoundListener {
    index: usize,
    settings: config::Listener,
    /// One per worker (per-core) or a single shared socket.
    sockets: Vec<std::net::TcpListener>,
    addr: SocketAddr,
}

/// A configured, bound, not yet running sluice.
pub struct Server {
    shared: Arc<Shared>,
    workers: usize,
    runtime: RuntimeKind,
    listeners: Vec<BoundListener>,
    admin: Option<(std::net::TcpListener, config::Admin)>,
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
        for (index, settings) in config.listeners.iter().enumerate() {
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
            listeners.push(BoundListener {
                index,
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
        let clients = if per_core { workers } else { 1 };
        let snapshot = Snapshot::build(Arc::new(config), clients, 1);
        Ok(Server {
            shared: Arc::new(Shared::new(snapshot)),
            workers,
            runtime: options.runtime,
            listeners,
            admin,
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

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests
    /// finish within `server.shutdown_timeout`, and returns.
    pub fn run(self, shutdown: CancellationToken) -> io::Result<()> {
        let grace = self.shared.snapshot().config.server.shutdown_timeout;
        let mut threads = Vec::new();
        let (admin, shared, token) = (self.admin, self.shared.clone(), shutdown.clone());
        threads.push(spawn_runtime("sluice-control", None, move || {
            serve_control(shared, admin, token)
        })?);
        let mut listeners = self.listeners;
        let groups: Vec<(usize, Option<usize>)> = match self.runtime {
            RuntimeKind::PerCore => (0..self.workers).map(|w| (w, None)).collect(),
            RuntimeKind::Shared => vec![(0, Some(self.workers))],
        };
        for (worker, threads_in_runtime) in groups {
            let sockets: Vec<(usize, config::Listener, std::net::TcpListener)> = listeners
                .iter_mut()
                .map(|l| (l.index, l.settings.clone(), l.sockets.remove(0)))
                .collect();
            let (shared, shutdown) = (self.shared.clone(), shutdown.clone());
            let name = format!("sluice-worker-{worker}");
            threads.push(spawn_runtime(&name, threads_in_runtime, move || {
                serve_worker(shared, worker, sockets, shutdown, grace)
            })?);
        }
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
    sockets: Vec<(usize, config::Listener, std::net::TcpListener)>,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let mut acceptors = Vec::new();
    for (index, settings, socket) in sockets {
        let acceptor = Acceptor {
            shared: shared.clone(),
            index,
            worker,
            listener: tokio::net::TcpListener::from_std(socket)?,
            settings,
        };
        acceptors.push(tokio::spawn(
            acceptor.run(shutdown.clone(), tracker.clone()),
        ));
    }
    shutdown.cancelled().await;
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
    Ok(())
}

/// The control runtime, on a thread of its own so that neither probes nor admin requests ever
/// delay a worker: the admin API (when configured) and the active health checks of the current
/// snapshot's pools, until `shutdown`.
async fn serve_control(
    shared: Arc<Shared>,
    admin: Option<(std::net::TcpListener, config::Admin)>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let admin = admin.map(|(socket, settings)| {
        tokio::spawn(admin::serve(
            socket,
            settings,
            shared.clone(),
            shutdown.clone(),
        ))
    });
    let checkers = Checkers::start(&shared.snapshot(), &shutdown);
    if !checkers.is_empty() {
        tracing::debug!(backends = checkers.len(), "active health checks started");
    }
    shutdown.cancelled().await;
    checkers.stop().await;
    match admin {
        Some(task) => task
            .await
            .unwrap_or_else(|_| Err(io::Error::other("the admin API panicked"))),
        None => Ok(()),
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT. Runs on its own thread for the life of the process.
pub fn shutdown_on_signals(shutdown: CancellationToken) -> io::Result<()> {
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
    thread::Builder::new().name("sluice-signals".into()).spawn(move || {
        runtime.block_on(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break tracing::info!(signal = "SIGTERM", "shutting down"),
                    _ = int.recv() => break tracing::info!(signal = "SIGINT", "shutting down"),
                    _ = hup.recv() => tracing::warn!(signal = "SIGHUP", "configuration reload is not implemented in this version yet"),
                }
            }
            shutdown.cancel();
        })
    })?;
    Ok(())
}
