//! Backends registered at run time through the admin API (`POST /api/pools/{pool}/backends`),
//! as opposed to those in the config file: the request body's validation, the optional time to
//! live, and the copy kept in `<server.state_dir>/registrations.json` so that a restart keeps
//! them.
//!
//! The `Registry` is plain data with no lock, no clock and no task: the admin API holds it behind
//! a mutex, passes `now` in, and runs `expire` when `next_expiry` comes. Taking `now` rather than
//! reading a clock keeps expiry testable with explicit or paused `Instant`s
//! (`tokio::time::Instant::into_std`). Building pools from it, draining and resolving names are
//! the caller's: a registration holds its address canonicalized but never resolved.

mod address;
mod error;
mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

pub use error::{Corruption, RegistryError};
pub use store::StateFile;

use error::shown;

/// A registered backend's weight when the body gives none.
pub const DEFAULT_WEIGHT: u32 = 1;
/// The largest weight, as for configured backends.
pub use crate::config::MAX_WEIGHT;
/// The longest time to live, one day: a registrant that cannot renew once a day should register
/// without one and DELETE when it leaves.
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// How many registrations sluice keeps, across all pools: bounds the memory and the state file
/// an admin client can make sluice hold.
pub const MAX_REGISTRATIONS: usize = 10_000;

/// One registered backend of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pool: String,
    /// Canonical `host:port` (see `address::canonical`).
    address: String,
    weight: u32,
    ttl: Option<Duration>,
    /// `None` until the registry holds it, and always without a TTL.
    expires_at: Option<Instant>,
}

impl Registration {
    /// A validated registration; `weight` and `ttl_seconds` as written, checked against their
    /// ranges here. `pool` is taken as given: whether it exists is the caller's question (404).
    pub fn new(
        pool: &str,
        address: &str,
        weight: u64,
        ttl_seconds: Option<u64>,
    ) -> Result<Registration, RegistryError> {
        let address = address::canonical(address)?;
        let weight = match u32::try_from(weight) {
            Ok(0) => return Err(RegistryError::WeightZero),
            Ok(w) if w <= MAX_WEIGHT => w,
            _ => return Err(RegistryError::Weight(shown(&weight.to_string()))),
        };
        let ttl = match ttl_seconds {
            None => None,
            Some(s @ 1..=MAX_TTL_SECONDS) => Some(Duration::from_secs(s)),
            Some(s) => return Err(RegistryError::Ttl(shown(&s.to_string()))),
        };
        Ok(Registration {
            pool: pool.to_owned(),
            address,
            weight,
            ttl,
            expires_at: None,
        })
    }

    pub fn pool(&self) -> &str {
        &self.pool
    }

    /// `host:port`, canonical: lowercase host, shortest IPv6 form, no leading zeros in the port.
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// `None`: registered until deleted.
    pub fn ttl(&self) -> Option<Duration> {
        self.ttl
    }

    /// When the registry drops it unless it is posted again; `None` without a TTL, and for a
    /// registration the registry does not hold yet.
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
}

/// The body of `POST /api/pools/{pool}/backends`. Fields are taken as raw JSON values so that a
/// wrong type gets a message naming the field and its range, which serde's does not.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a JSON object with `address` and optionally `weight` and `ttl_seconds`"
)]
struct RequestBody {
    address: Option<Value>,
    weight: Option<Value>,
    ttl_seconds: Option<Value>,
}

/// Validates a registration request's body, for `pool` (from the request's path). Every error
/// is the client's (`is_bad_request`), with a message for the 400 answer that names the field
/// and what would be valid. `null` counts as absent.
pub fn parse_request(pool: &str, body: &[u8]) -> Result<Registration, RegistryError> {
    if body.trim_ascii().is_empty() {
        return Err(RegistryError::EmptyBody);
    }
    // serde would also take a struct as an array of its fields (`["a:1", 2]`): only an object
    // is a registration.
    if body.trim_ascii_start().first() != Some(&b'{') {
        let value: Value = serde_json::from_slice(body).map_err(RegistryError::NotJson)?;
        return Err(RegistryError::NotObject(match value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::Object(_) => "an object",
        }));
    }
    let body: RequestBody = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => RegistryError::Body(e),
        _ => RegistryError::NotJson(e),
    })?;
    let address = match body.address {
        None | Some(Value::Null) => return Err(RegistryError::MissingAddress),
        Some(Value::String(address)) => address,
        Some(other) => {
            return Err(RegistryError::Address {
                address: shown(&other.to_string()),
                problem: "is not a string",
            })
        }
    };
    // `as_u64`: a non-negative integer (`30`, not `30.0`, `"30"` or `-1`); the range is
    // `Registration::new`'s to check.
    let weight = match body.weight {
        None | Some(Value::Null) => u64::from(DEFAULT_WEIGHT),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| RegistryError::Weight(shown(&v.to_string())))?,
    };
    let ttl_seconds = match body.ttl_seconds {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| RegistryError::Ttl(shown(&v.to_string())))?,
        ),
    };
    Registration::new(pool, &address, weight, ttl_seconds)
}

/// What `Registry::upsert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// A backend the pool did not have: the pool needs rebuilding.
    Created,
    /// Same weight: only the time to live restarted (with the TTL just posted, which may differ
    /// or be gone). The pool needs no rebuilding.
    Renewed,
    /// The weight changed: the pool needs rebuilding.
    Updated,
}

/// All registrations, by pool then address (so iteration order is deterministic), and where
/// they are saved.
#[derive(Debug)]
pub struct Registry {
    /// `server.state_dir`.
    dir: PathBuf,
    pools: BTreeMap<String, BTreeMap<String, Registration>>,
}

impl Registry {
    /// No registrations, saved in `state_dir`: for a first start, or after `load` failed.
    pub fn empty(state_dir: &Path) -> Registry {
        Registry {
            dir: state_dir.to_path_buf(),
            pools: BTreeMap::new(),
        }
    }

    /// Adds `registration`, or replaces the one with the same pool and address; either way its
    /// time to live starts at `now`. Fails only when a new one would pass `MAX_REGISTRATIONS`.
    pub fn upsert(
        &mut self,
        mut registration: Registration,
        now: Instant,
    ) -> Result<Upsert, RegistryError> {
        // `None` on overflow, which a TTL of at most a day cannot reach: never expiring beats
        // a panic.
        registration.expires_at = registration.ttl.and_then(|ttl| now.checked_add(ttl));
        let held = self
            .pools
            .get_mut(&registration.pool)
            .and_then(|pool| pool.get_mut(&registration.address));
        if let Some(held) = held {
            let outcome = if held.weight == registration.weight {
                Upsert::Renewed
            } else {
                Upsert::Updated
            };
            *held = registration;
            return Ok(outcome);
        }
        if self.len() >= MAX_REGISTRATIONS {
            return Err(RegistryError::Full);
        }
        self.pools
            .entry(registration.pool.clone())
            .or_default()
            .insert(registration.address.clone(), registration);
        Ok(Upsert::Created)
    }

    /// Removes a registration. `address` may be written in any form `parse_request` accepts
    /// (`App:080` finds `app:80`).
    pub fn remove(&mut self, pool: &str, address: &str) -> Option<Registration> {
        match address::canonical(address) {
            Ok(canonical) => self.remove_exact(pool, &canonical),
            Err(_) => self.remove_exact(pool, address),
        }
    }

    fn remove_exact(&mut self, pool: &str, address: &str) -> Option<Registration> {
        let backends = self.pools.get_mut(pool)?;
        let removed = backends.remove(address);
        // No empty pools left behind: `is_empty` relies on it.
        if backends.is_empty() {
            self.pools.remove(pool);
        }
        removed
    }

    /// Removes and returns every registration whose time to live has run out by `now`, in
    /// (pool, address) order.
    pub fn expire(&mut self, now: Instant) -> Vec<Registration> {
        let due: Vec<(String, String)> = self
            .iter()
            .filter(|r| r.expires_at.is_some_and(|at| at <= now))
            .map(|r| (r.pool.clone(), r.address.clone()))
            .collect();
        due.iter()
            .filter_map(|(pool, address)| self.remove_exact(pool, address))
            .collect()
    }

    /// When `expire` next has something to do. A scan: registrations are few (at most
    /// `MAX_REGISTRATIONS`) and this runs once per change or expiry, never per request.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.iter().filter_map(|r| r.expires_at).min()
    }

    /// Every registration, by pool then address.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.pools.values().flat_map(|backends| backends.values())
    }

    /// One pool's registrations, by address.
    pub fn for_pool(&self, pool: &str) -> impl Iterator<Item = &Registration> {
        self.pools
            .get(pool)
            .into_iter()
            .flat_map(|backends| backends.values())
    }

    pub fn len(&self) -> usize {
        self.pools.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The state file: `<state_dir>/registrations.json`.
    pub fn path(&self) -> PathBuf {
        self.dir.join(store::FILE_NAME)
    }
}

#[cfg(test)]
mod tests;
