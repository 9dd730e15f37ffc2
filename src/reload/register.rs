//! Backend registration through the admin API, applied by the reloader: each change is saved
//! to the state file first (a change that cannot be saved is undone and answered 500), then
//! applied with the same swap a reload uses, so a registered backend gets everything a
//! configured one has (health checks, slow start) and a deregistered one drains.

use std::time::Instant;

use http::StatusCode;
use serde_json::json;

use super::registrations::{in_file, resolve};
use super::Reloader;
use crate::registry::{parse_request, Registration, RegistryError, Upsert};

/// An admin answer: status and JSON body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    fn error(status: StatusCode, message: impl Into<String>) -> Answer {
        Answer {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

impl Reloader {
    /// `POST /api/pools/{pool}/backends`.
    pub async fn register(&mut self, pool: &str, body: &[u8]) -> Answer {
        let registration = match parse_request(pool, body) {
            Ok(r) => r,
            Err(e) => return Answer::error(StatusCode::BAD_REQUEST, e.to_string()),
        };
        if let Some(answer) = self.pool_check(pool, registration.address()) {
            return answer;
        }
        let resolved = match resolve(registration.address()).await {
            Ok(addr) => addr,
            Err(e) => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    format!("`{}` does not resolve: {e}", registration.address()),
                )
            }
        };
        let regs = &mut self.parts.registrations;
        let before = find(&regs.registry, pool, registration.address());
        let now = Instant::now();
        let upsert = match regs.registry.upsert(registration.clone(), now) {
            Ok(upsert) => upsert,
            Err(e) => return Answer::error(status_of(&e), e.to_string()),
        };
        regs.set_resolved(&registration, resolved);
        if let Err(e) = self.save(now).await {
            let regs = &mut self.parts.registrations;
            match before {
                Some(before) => {
                    let _ = regs.registry.upsert(before, now);
                }
                None => {
                    regs.registry.remove(pool, registration.address());
                    regs.forget(pool, registration.address());
                }
            }
            return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        let result = match upsert {
            Upsert::Created => "created",
            Upsert::Updated => "updated",
            Upsert::Renewed => "renewed",
        };
        if upsert != Upsert::Renewed {
            if let Err(answer) = self.relayer("registration") {
                return answer;
            }
            tracing::info!(
                pool,
                backend = registration.address(),
                weight = registration.weight(),
                ttl_seconds = registration.ttl().map(|t| t.as_secs()),
                result,
                "backend registered"
            );
        }
        let stored = find(
            &self.parts.registrations.registry,
            pool,
            registration.address(),
        );
        let status = if upsert == Upsert::Created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Answer {
            status,
            body: json!({
                "pool": pool,
                "address": registration.address(),
                "weight": registration.weight(),
                "ttl_seconds": stored.and_then(|r| r.ttl()).map(|t| t.as_secs()),
                "result": result,
                "generation": self.parts.shared.snapshot().generation,
            }),
        }
    }

    /// `DELETE /api/pools/{pool}/backends/{address}`: the backend leaves the pool at once and
    /// drains (requests in flight finish).
    pub async fn deregister(&mut self, pool: &str, address: &str) -> Answer {
        let regs = &mut self.parts.registrations;
        let Some(removed) = regs.registry.remove(pool, address) else {
            if in_file(&self.parts.file, pool, address) {
                return Answer::error(
                    StatusCode::CONFLICT,
                    format!("`{address}` is configured in the file; remove it there and reload"),
                );
            }
            return Answer::error(
                StatusCode::NOT_FOUND,
                format!("no registered backend `{address}` in pool `{pool}`"),
            );
        };
        let now = Instant::now();
        if let Err(e) = self.save(now).await {
            let _ = self.parts.registrations.registry.upsert(removed, now);
            return Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
        }
        self.parts
            .registrations
            .forget(removed.pool(), removed.address());
        if let Err(answer) = self.relayer("deregistration") {
            return answer;
        }
        tracing::info!(
            pool,
            backend = removed.address(),
            "backend deregistered; draining"
        );
        Answer {
            status: StatusCode::ACCEPTED,
            body: json!({
                "pool": pool,
                "address": removed.address(),
                "result": "draining",
                "generation": self.parts.shared.snapshot().generation,
            }),
        }
    }

    /// When the next registration expires, if any does.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.parts.registrations.registry.next_expiry()
    }

    /// Removes the registrations whose TTL ran out (they drain like deregistered ones).
    pub async fn expire_registrations(&mut self) {
        let now = Instant::now();
        let expired = self.parts.registrations.registry.expire(now);
        if expired.is_empty() {
            return;
        }
        for r in &expired {
            self.parts.registrations.forget(r.pool(), r.address());
            tracing::info!(
                pool = r.pool(),
                backend = r.address(),
                "registration expired; draining"
            );
        }
        if let Err(e) = self.save(now).await {
            tracing::error!(error = %e, "cannot save the registrations state file");
        }
        if let Err(answer) = self.relayer("registration expiry") {
            tracing::error!(error = %answer.body, "cannot apply expired registrations");
        }
    }

    /// A registration must name a pool of the file and an address the file does not list.
    fn pool_check(&self, pool: &str, address: &str) -> Option<Answer> {
        let file = &self.parts.file;
        if !file.pools.iter().any(|p| p.name == pool) {
            return Some(Answer::error(
                StatusCode::NOT_FOUND,
                format!("no pool named `{pool}`"),
            ));
        }
        in_file(file, pool, address).then(|| {
            Answer::error(
                StatusCode::CONFLICT,
                format!("`{address}` is already configured in pool `{pool}` by the file"),
            )
        })
    }

    /// Writes the state file off the runtime, waiting for it so that writes never overlap.
    async fn save(&self, now: Instant) -> Result<(), RegistryError> {
        let file = self.parts.registrations.registry.to_state_file(now);
        tokio::task::spawn_blocking(move || file.write())
            .await
            .unwrap_or_else(|e| {
                Err(RegistryError::Io {
                    op: "write",
                    path: std::path::PathBuf::new(),
                    error: std::io::Error::other(e.to_string()),
                })
            })
    }

    /// Swaps in the file with the current registrations layered over it.
    fn relayer(&mut self, trigger: &'static str) -> Result<(), Answer> {
        let layered = self.parts.registrations.layer(&self.parts.file);
        self.swap(layered, trigger)
            .map(|_| ())
            .map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }
}

fn find(registry: &crate::registry::Registry, pool: &str, address: &str) -> Option<Registration> {
    registry
        .for_pool(pool)
        .find(|r| r.address().eq_ignore_ascii_case(address))
        .cloned()
}

fn status_of(e: &RegistryError) -> StatusCode {
    if e.is_bad_request() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}
