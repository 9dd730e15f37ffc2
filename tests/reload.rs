//! Hot reload end to end (issue 5): a real sluice started from a file on disk, real backends,
//! real sockets. The file is rewritten and the reload asked for through `POST /api/reload` (or
//! `SIGHUP` to the real binary, or left to the file watcher); what the tests assert is what a
//! user relies on:
//!
//! - `load`: under steady keep-alive load through 50 reloads, no request fails, is lost or is
//!   sent twice;
//! - `health`: a backend's health verdict, ejection and counters survive reloads; checks
//!   follow the pools;
//! - `connections`: a streaming response, a keep-alive connection (HTTP/1.1 and HTTP/2) and
//!   idle upstream connections outlive a reload;
//! - `refused`: an invalid file (of many kinds) is refused with located errors and changes
//!   nothing;
//! - `listeners`: added listeners serve, removed ones stop and drain, kept ones keep their
//!   socket and connections;
//! - `draining`: a removed backend finishes its requests, is listed as draining, then goes;
//! - `report`: the reload's answer says what changed;
//! - `signal`: `SIGHUP` reloads the real binary;
//! - `watch`: editing the file on disk reloads it, once per burst;
//! - `weights`: a changed weight takes effect at once.
//!
//! Readiness is polled (`eventually`), never slept for.

mod support;

#[path = "reload/connections.rs"]
mod connections;
#[path = "reload/draining.rs"]
mod draining;
#[path = "reload/health.rs"]
mod health;
#[path = "reload/listeners.rs"]
mod listeners;
#[path = "reload/load.rs"]
mod load;
#[path = "reload/refused.rs"]
mod refused;
#[path = "reload/report.rs"]
mod report;
#[path = "reload/signal.rs"]
mod signal;
// The file notifications these tests time are Linux-only (elsewhere sluice polls every 5 s).
#[cfg(target_os = "linux")]
#[path = "reload/watch.rs"]
mod watch;
#[path = "reload/weights.rs"]
mod weights;
