//! The one immutable snapshot of routes and pools that the request path reads, behind one
//! `ArcSwap`. A request loads it once and keeps it to the end, so a reload never changes the
//! rules under a request in flight.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Semaphore;

use crate::config::{self, Cidr, Config};
use crate::proxy::route::Router;
use crate::upstream::Pool;

/// What the request path needs to know about a listener.
#[derive(Debug)]
pub struct ListenerState {
    pub name: Arc<str>,
    pub router: Router,
    pub trusted_proxies: Vec<Cidr>,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: Option<u64>,
}

#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<Config>,
    /// Indexed like `config.listeners`.
    pub listeners: Vec<ListenerState>,
    /// Indexed like `config.pools`.
    pub pools: Vec<Arc<Pool>>,
    pub access_log: bool,
}

impl Snapshot {
    /// Builds a snapshot off the request path. `workers` sizes the per-worker upstream clients.
    pub fn build(config: Arc<Config>, workers: usize, generation: u64) -> Snapshot {
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l): (usize, &config::Listener)| ListenerState {
                name: Arc::from(l.name.as_str()),
                router: Router::for_listener(&config.routes, i),
                trusted_proxies: l.trusted_proxies.clone(),
                max_header_bytes: l.max_header_bytes,
                max_uri_bytes: l.max_uri_bytes,
                max_body_bytes: l.max_body_bytes,
            })
            .collect();
        let pools = config
            .pools
            .iter()
            .map(|p| Arc::new(Pool::new(p, workers)))
            .collect();
        Snapshot {
            generation,
            access_log: config.log.access_log,
            listeners,
            pools,
            config,
        }
    }
}

/// State shared by every worker for the life of the process.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    /// `server.max_connections`: one permit per open downstream connection.
    pub connections: Arc<Semaphore>,
}

impl Shared {
    pub fn new(snapshot: Snapshot) -> Shared {
        let max = snapshot.config.server.max_connections;
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            connections: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}
