//! Runtime backend registrations layered over the config file: what `POST
//! /api/pools/{pool}/backends` added, kept in `server.state_dir` across restarts and re-applied
//! over every reloaded file.
//!
//! A registration joins its pool as one more backend. The file wins a conflict: an address the
//! file already lists in that pool cannot be registered (409), and a registration whose pool
//! a reload removed waits, unapplied, until a file brings the pool back (or it expires).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use crate::config::{self, Config};
use crate::registry::{Registration, Registry};

/// The registry and each entry's resolved address.
#[derive(Debug)]
pub struct Registrations {
    pub registry: Registry,
    /// Resolved when registered (or at start), never on the request path; an entry whose name
    /// did not resolve at start is missing here and not applied.
    resolved: HashMap<(String, String), SocketAddr>,
}

impl Registrations {
    /// At start: loads the state file (a corrupt one is set aside, and sluice starts without
    /// registrations) and resolves every entry. Blocking.
    pub fn load(state_dir: &Path) -> io::Result<Registrations> {
        let registry = match Registry::load(state_dir, Instant::now()) {
            Ok(registry) => registry,
            Err(e) if e.is_corrupt() => {
                let aside = Registry::set_aside_corrupt(state_dir);
                tracing::error!(
                    error = %e,
                    moved_to = ?aside.as_ref().map(|p| p.display().to_string()),
                    "cannot read the registrations state file; starting without registrations"
                );
                Registry::empty(state_dir)
            }
            // Starting empty would overwrite, at the next registration, a file that may be
            // fine but unreadable right now (permissions, a mount not ready).
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        let mut resolved = HashMap::new();
        for r in registry.iter() {
            match resolve_blocking(r.address()) {
                Ok(addr) => {
                    resolved.insert(key(r.pool(), r.address()), addr);
                }
                Err(e) => tracing::warn!(
                    pool = r.pool(),
                    backend = r.address(),
                    error = %e,
                    "a registered backend does not resolve; not applied"
                ),
            }
        }
        if !registry.is_empty() {
            tracing::info!(
                registrations = registry.len(),
                file = %registry.path().display(),
                "registered backends restored"
            );
        }
        Ok(Registrations { registry, resolved })
    }

    pub fn empty(state_dir: &Path) -> Registrations {
        Registrations {
            registry: Registry::empty(state_dir),
            resolved: HashMap::new(),
        }
    }

    pub fn set_resolved(&mut self, r: &Registration, addr: SocketAddr) {
        self.resolved.insert(key(r.pool(), r.address()), addr);
    }

    pub fn forget(&mut self, pool: &str, address: &str) {
        self.resolved.remove(&key(pool, address));
    }

    /// `file` with every applicable registration added to its pool.
    pub fn layer(&self, file: &Config) -> Config {
        let mut config = file.clone();
        for r in self.registry.iter() {
            let Some(pool) = config.pools.iter_mut().find(|p| p.name == r.pool()) else {
                continue;
            };
            let Some(&resolved) = self.resolved.get(&key(r.pool(), r.address())) else {
                continue;
            };
            if in_file(file, r.pool(), r.address()) {
                continue;
            }
            pool.backends.push(config::Backend {
                address: r.address().to_string(),
                resolved,
                weight: r.weight(),
            });
        }
        config
    }
}

/// Whether the file itself lists `address` in `pool`.
pub fn in_file(file: &Config, pool: &str, address: &str) -> bool {
    file.pools
        .iter()
        .filter(|p| p.name == pool)
        .flat_map(|p| &p.backends)
        .any(|b| b.address.eq_ignore_ascii_case(address))
}

fn key(pool: &str, address: &str) -> (String, String) {
    (pool.to_string(), address.to_string())
}

/// Prefers IPv4, as the config's own resolution does.
fn pick(addrs: impl Iterator<Item = SocketAddr>) -> io::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> = addrs.collect();
    config::prefer_ipv4(&addrs)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"))
}

fn resolve_blocking(address: &str) -> io::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    pick(address.to_socket_addrs()?)
}

/// Resolves a registration's address without blocking the runtime.
pub async fn resolve(address: &str) -> io::Result<SocketAddr> {
    pick(tokio::net::lookup_host(address).await?)
}
