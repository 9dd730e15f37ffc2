//! The one immutable snapshot of routes and pools that the request path reads, behind one
//! `ArcSwap`. A request loads it once and keeps it to the end, so a reload never changes the
//! rules under a request in flight. On a per-core worker, requests hold it through the worker's
//! own handle (`LocalSnapshot`), so that holding it writes no cache line another worker writes.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::config::{self, Cidr, Config};
use crate::listener::limit::ConnectionLimit;
use crate::metrics::{ListenerCounters, RouteMetrics};
use crate::proxy::route::Router;
use crate::telemetry::LogControl;
use crate::upstream::{Backend, Pool};

/// What the request path needs to know about a listener.
#[derive(Debug)]
pub struct ListenerState {
    /// Stable for the listener's life across reloads (its position in the config is not): a
    /// connection names its listener by id.
    pub id: usize,
    pub name: Arc<str>,
    pub router: Router,
    pub trusted_proxies: Vec<Cidr>,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: Option<u64>,
    /// The longest wait for the next piece of a request body.
    pub request_body_timeout: std::time::Duration,
    /// Plain HTTP requests are answered 308 to https.
    pub redirect_https: bool,
    /// `Strict-Transport-Security` for answers on HTTPS connections.
    pub hsts: Option<http::HeaderValue>,
    /// This listener's requests to each pool, indexed like `Snapshot::pools`, then one for
    /// requests that reached no pool; empty when metrics are off.
    pub routes: Box<[Arc<RouteMetrics>]>,
}

#[derive(Debug)]
pub struct Snapshot {
    /// 1 for the config the process started with, one more for each successful reload.
    pub generation: u64,
    /// When this snapshot was built.
    pub loaded_at: std::time::SystemTime,
    pub config: Arc<Config>,
    /// Indexed like `config.listeners`.
    pub listeners: Vec<ListenerState>,
    /// Indexed like `config.pools`.
    pub pools: Vec<Arc<Pool>>,
    pub access_log: bool,
    /// The workers whose per-worker state (`shard`) it was built with.
    pub workers: usize,
}

impl Snapshot {
    /// The first snapshot: listener ids are config positions.
    pub fn build(config: Arc<Config>, workers: usize, generation: u64) -> Snapshot {
        let ids: Vec<usize> = (0..config.listeners.len()).collect();
        Snapshot::next(config, workers, generation, None, &ids)
    }

    /// Builds a snapshot off the request path. `workers` sizes the per-worker upstream clients;
    /// `listener_ids[i]` is the id of `config.listeners[i]`; every pool of `previous` with the
    /// same name hands its state over (`Pool::build`).
    pub fn next(
        config: Arc<Config>,
        workers: usize,
        generation: u64,
        previous: Option<&Snapshot>,
        listener_ids: &[usize],
    ) -> Snapshot {
        let metrics = config.admin.as_ref().is_some_and(|a| a.metrics);
        let listeners = config
            .listeners
            .iter()
            .zip(listener_ids)
            .enumerate()
            .map(
                |(i, (l, &id)): (usize, (&config::Listener, _))| ListenerState {
                    id,
                    name: Arc::from(l.name.as_str()),
                    router: Router::for_listener(&config.routes, i),
                    trusted_proxies: l.trusted_proxies.clone(),
                    max_header_bytes: l.max_header_bytes,
                    max_uri_bytes: l.max_uri_bytes,
                    max_body_bytes: l.max_body_bytes,
                    request_body_timeout: l.request_body_timeout,
                    redirect_https: l.redirect_https,
                    hsts: l.hsts.clone(),
                    routes: if metrics {
                        route_metrics(&config, id, previous, workers)
                    } else {
                        Box::default()
                    },
                },
            )
            .collect();
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let old = previous.and_then(|s| s.pool(&p.name));
                Arc::new(Pool::build(p, workers, old.map(|o| &**o)))
            })
            .collect();
        Snapshot {
            workers,
            generation,
            loaded_at: std::time::SystemTime::now(),
            access_log: config.log.access_log,
            listeners,
            pools,
            config,
        }
    }

    /// The position in `listeners` of the listener with `id`.
    pub fn listener_index(&self, id: usize) -> Option<usize> {
        // Ids start as positions, and stay so until a reload removes or reorders listeners.
        if self.listeners.get(id).is_some_and(|l| l.id == id) {
            return Some(id);
        }
        self.listeners.iter().position(|l| l.id == id)
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| &*p.name == name)
    }

    /// The pool name of `ListenerState::routes[route]` (`""` for the last, no pool).
    pub fn route_pool_name(&self, route: usize) -> &str {
        self.pools.get(route).map_or("", |p| &p.name)
    }
}

/// The route metrics of listener `id` for `config`'s pools (and no pool), continuing those of
/// the same listener and pool in `previous`; new ones with a copy per worker.
fn route_metrics(
    config: &Config,
    id: usize,
    previous: Option<&Snapshot>,
    workers: usize,
) -> Box<[Arc<RouteMetrics>]> {
    let old = previous.and_then(|s| Some((s, &s.listeners[s.listener_index(id)?])));
    let carried = |name: &str| {
        let (s, l) = old?;
        let route = if name.is_empty() {
            s.pools.len()
        } else {
            s.pools.iter().position(|p| &*p.name == name)?
        };
        l.routes.get(route).cloned()
    };
    let names = config.pools.iter().map(|p| p.name.as_str()).chain([""]);
    names
        .map(|name| carried(name).unwrap_or_else(|| Arc::new(RouteMetrics::new(workers))))
        .collect()
}

/// State shared by every worker for the life of the process.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// `server.max_connections`: a slot per open downstream connection.
    pub connections: Arc<ConnectionLimit>,
    /// Reload outcomes, for the metrics.
    pub reloads: ReloadCounts,
    /// The last reload's outcome, for the status page; `None` until the first reload.
    last_reload: Mutex<Option<ReloadOutcome>>,
    /// Backends a reload or a deregistration removed that still had requests in flight, with
    /// their pool's name: the admin API lists them as draining until they finish.
    pub draining: Mutex<Vec<(Arc<str>, Arc<Backend>)>>,
    /// Each listener's counters by listener id, for the listener's whole life.
    listener_counters: Mutex<HashMap<usize, Arc<ListenerCounters>>>,
    /// Copies of per-worker counters to make (`shard`).
    workers: usize,
    /// The running log filter's handle, for `PUT /api/log-level` and reloads; `None` when
    /// sluice runs without a reloadable logger (embedded, most tests).
    pub log: Option<LogControl>,
}

#[derive(Debug, Default)]
pub struct ReloadCounts {
    pub ok: AtomicU64,
    pub error: AtomicU64,
}

/// How a reload (file change, `SIGHUP` or `POST /api/reload`) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    pub at: std::time::SystemTime,
    /// What asked for it: `SIGHUP`, `admin API`, `file change`.
    pub trigger: &'static str,
    /// The generation serving afterwards: the new one, or on error the one that stayed.
    pub generation: u64,
    /// `Ok`: what changed, in one line; `Err`: why the file was refused.
    pub result: Result<String, ReloadFailure>,
}

/// Why a reload changed nothing, in short.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadFailure {
    /// Errors found in the file (1 for a failure that is not about the file, like a bind).
    pub errors: usize,
    /// The first of them in one line: `file:line:column: message`.
    pub first: String,
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Shared {
        let max = snapshot.config.server.max_connections;
        let workers = snapshot.workers;
        Shared {
            workers,
            snapshot: ArcSwap::from_pointee(snapshot),
            connections: ConnectionLimit::new(max),
            reloads: ReloadCounts::default(),
            last_reload: Mutex::default(),
            draining: Mutex::default(),
            listener_counters: Mutex::default(),
            log: None,
        }
    }

    /// The counters of listener `id`, made on first use.
    pub fn listener_counters(&self, id: usize) -> Arc<ListenerCounters> {
        let mut all = self
            .listener_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.entry(id)
            .or_insert_with(|| Arc::new(ListenerCounters::new(self.workers)))
            .clone()
    }

    /// The counters of `snapshot`'s listeners, in its order, with their names; those of removed
    /// listeners are forgotten once their last connection has closed.
    pub fn listeners_counted(&self, snapshot: &Snapshot) -> Vec<(Arc<str>, Arc<ListenerCounters>)> {
        let mut all = self
            .listener_counters
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        all.retain(|&id, c| {
            snapshot.listener_index(id).is_some()
                || c.connections.load(std::sync::atomic::Ordering::Relaxed) > 0
        });
        snapshot
            .listeners
            .iter()
            .map(|l| {
                let counters = all
                    .entry(l.id)
                    .or_insert_with(|| Arc::new(ListenerCounters::new(self.workers)));
                (l.name.clone(), counters.clone())
            })
            .collect()
    }

    /// Keeps `outcome` as the last reload's.
    pub fn set_last_reload(&self, outcome: ReloadOutcome) {
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
    }

    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in `snapshot`: requests that already loaded the old one finish on it.
    pub fn store(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(snapshot);
    }

    /// Backends still draining (in flight > 0), with their pools; finished ones are dropped.
    pub fn draining(&self) -> Vec<(Arc<str>, Arc<Backend>)> {
        let mut draining = self.draining.lock().unwrap_or_else(|e| e.into_inner());
        draining.retain(|(_, b)| b.active_requests() > 0);
        draining.clone()
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current snapshot for a request: on a per-core worker's thread, through the worker's
    /// own handle (`LocalSnapshot`). Elsewhere (the shared runtime, whose tasks move between
    /// threads) through a handle of the request's own: one allocation more per request there,
    /// kept so that `LocalSnapshot` stays one pointer on the default runtime (as an enum it
    /// grew the request's future and cost 240 instructions per request).
    pub fn request_snapshot(&self) -> LocalSnapshot {
        if !crate::shard::is_worker() {
            return LocalSnapshot::new(self.snapshot.load_full());
        }
        let current = self.snapshot.load();
        let (held, replaced) = HANDLE.with(|handle| {
            let mut handle = handle.borrow_mut();
            if let Some(held) = handle.as_ref().filter(|held| held.holds(&current)) {
                return (held.clone(), None);
            }
            let fresh = LocalSnapshot::new(arc_swap::Guard::into_inner(current));
            (fresh.clone(), handle.replace(fresh))
        });
        // The replaced handle drops here, outside the borrow.
        drop(replaced);
        held
    }

    /// Lets go of the calling worker's handle if a reload has replaced its snapshot, so that
    /// an idle worker does not keep the old pools (and their connections) alive. The worker's
    /// idle sweep calls it every second.
    pub fn release_stale_handle(&self) {
        let current = self.snapshot.load();
        let stale = HANDLE.with(|handle| {
            let mut handle = handle.borrow_mut();
            match handle.as_ref() {
                Some(held) if !held.holds(&current) => handle.take(),
                _ => None,
            }
        });
        drop(stale);
    }
}

/// Drops the calling thread's handle on the snapshot (a worker that stops).
pub fn forget_handle() {
    let held = HANDLE.with(|handle| handle.borrow_mut().take());
    drop(held);
}

thread_local! {
    /// The per-core worker's own handle on the current snapshot (`Shared::request_snapshot`).
    static HANDLE: std::cell::RefCell<Option<LocalSnapshot>> = const { std::cell::RefCell::new(None) };
}

/// A worker's handle on a snapshot. Every request holds the snapshot to its end: cloning the
/// snapshot's own `Arc` for that writes its count, a cache line every worker would then write
/// twice per request. A worker's requests clone the worker's own handle instead, whose count
/// only that worker writes; the handle holds the snapshot's `Arc` once.
#[derive(Debug, Clone)]
pub struct LocalSnapshot(Arc<Handle>);

/// What a `LocalSnapshot` points at: the snapshot's `Arc`, held once per worker.
#[derive(Debug)]
struct Handle(Arc<Snapshot>);

impl LocalSnapshot {
    fn new(snapshot: Arc<Snapshot>) -> LocalSnapshot {
        LocalSnapshot(Arc::new(Handle(snapshot)))
    }

    fn holds(&self, snapshot: &Arc<Snapshot>) -> bool {
        Arc::ptr_eq(&self.0 .0, snapshot)
    }
}

impl std::ops::Deref for LocalSnapshot {
    type Target = Snapshot;
    fn deref(&self) -> &Snapshot {
        &self.0 .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(generation: u64) -> Arc<Snapshot> {
        let text =
            "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\npool = \"app\"\n\n\
                    [pool.app]\nbackends = [{ address = \"127.0.0.1:1\" }]\n";
        let config = Config::parse(text, std::path::Path::new("t.toml")).unwrap();
        Arc::new(Snapshot::build(Arc::new(config), 1, generation))
    }

    /// On a worker's thread, requests share the worker's handle: the snapshot's own count
    /// stays where it was however many requests hold it. A reload's snapshot gets a new handle,
    /// and the old one is let go by the idle sweep even if no request comes.
    #[test]
    fn a_workers_requests_share_its_handle_until_a_reload() {
        let first = snapshot(1);
        let shared = Shared::new(Snapshot::build(first.config.clone(), 1, 1));
        let shared = Arc::new(shared);
        let worker = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                crate::shard::enter(0);
                let current = shared.snapshot();
                let count = Arc::strong_count(&current);
                let a = shared.request_snapshot();
                let b = shared.request_snapshot();
                assert!(Arc::ptr_eq(&a.0, &b.0), "one handle for both requests");
                assert_eq!(a.generation, 1);
                // Held by `Shared`, `current` and the handle: not once per request.
                assert_eq!(Arc::strong_count(&current), count + 1);
                drop((a, b));
                shared.store(snapshot(2));
                let c = shared.request_snapshot();
                assert_eq!(c.generation, 2);
                // `Shared` and the handle let go of it: only `current` holds it.
                assert_eq!(
                    Arc::strong_count(&current),
                    count - 1,
                    "the old handle is gone"
                );
                drop(c);
                let second = shared.snapshot();
                shared.store(snapshot(3));
                // Held by `second` and the worker's handle; no request comes, and the sweep
                // lets go of the handle.
                assert_eq!(Arc::strong_count(&second), 2);
                shared.release_stale_handle();
                assert_eq!(Arc::strong_count(&second), 1);
                let third = shared.snapshot();
                let held = Arc::strong_count(&third);
                shared.release_stale_handle(); // nothing stale: nothing changes
                assert_eq!(shared.request_snapshot().generation, 3);
                assert_eq!(Arc::strong_count(&third), held + 1);
                forget_handle();
                assert_eq!(Arc::strong_count(&third), held);
            })
        };
        worker.join().unwrap();
        // A thread that is no worker gets a handle of its own each time.
        let a = shared.request_snapshot();
        let b = shared.request_snapshot();
        assert!(!Arc::ptr_eq(&a.0, &b.0));
    }
}
