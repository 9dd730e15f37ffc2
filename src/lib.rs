//! sluice: an L7 reverse-proxy load balancer.
//!
//! A request's path through the modules:
//!
//! 1. `server` starts the workers; each runs `listener::Acceptor`, which accepts a connection
//!    (within `server.max_connections`) and serves HTTP/1.1 or HTTP/2 on it with hyper, timing
//!    the connection's phases (head read, idle) itself.
//! 2. `proxy` handles each request: strict framing and size checks (`proxy::headers`), route
//!    matching (`proxy::route`) against the current `state::Snapshot`, backend choice by the
//!    pool's `balance::Balancer`, header rewriting, then `proxy::forward` sends it over the
//!    worker's pooled upstream connections (`upstream`), with the pool's timeouts.
//! 3. The response streams back through `proxy::body`; when it ends, the request's
//!    `proxy::exchange::Exchange` drops, releasing in-flight counts and writing the access log.
//!
//! `config` turns the TOML file into validated types; `admin` serves the admin API.
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
pub mod demo;
pub mod framing;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod probe;
pub mod proxy;
pub mod registry;
pub mod reload;
pub mod server;
pub mod shard;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod upstream;
