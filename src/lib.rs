//! sluice: an L7 reverse-proxy load balancer.
#![forbid(unsafe_code)]

pub mod config;
