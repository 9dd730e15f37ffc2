//! Pool checks: algorithm and protocol, backends (weights, duplicates, name resolution) and
//! timeouts; the resilience tables (health checks, ejection, retries, limits) are in
//! `resilience.rs`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use toml::Spanned;

use super::values::{parse_duration, resolve_backend};
use super::{Checker, ALGORITHMS, MAX_WEIGHT, PROTOCOLS};
use crate::config::error::did_you_mean;
use crate::config::file;
use crate::config::{Algorithm, Backend, ConfigError, HashKey, Pool, Protocol, Timeouts};

impl Checker<'_> {
    pub(super) fn pool(&mut self, name: Spanned<String>, pool: file::PoolFile) -> Pool {
        let algorithm = self.algorithm(pool.algorithm.as_ref());
        let protocol = self.protocol(pool.protocol.as_ref());
        let hash_key = self.hash_key(algorithm, pool.hash_key.as_ref());
        let slow_start = match &pool.slow_start {
            Some(written) => match parse_duration(written.get_ref()) {
                Ok(d) => d,
                Err(e) => {
                    self.push(self.value_error(written.span(), e));
                    Duration::ZERO
                }
            },
            None => Duration::ZERO,
        };
        if let (Protocol::H2, Some(written), Some(_)) = (protocol, &pool.protocol, &pool.tls) {
            let error = self
                .error(
                    written.span(),
                    "protocol `h2` is cleartext HTTP/2; this pool has `tls`",
                )
                .with_note("HTTP/2 over TLS is negotiated by ALPN: `protocol = \"auto\"`")
                .with_help(
                    "use `protocol = \"auto\"` (or `\"http1\"`) with `tls`, or remove `tls`",
                );
            self.push(error);
        }
        if let (Protocol::Auto, Some(written), None) = (protocol, &pool.protocol, &pool.tls) {
            let error = self
                .error(
                    written.span(),
                    "protocol `auto` negotiates HTTP/2 by ALPN, which needs TLS; this pool has no `tls`",
                )
                .with_help("add a `[pool.NAME.tls]` table, or use `protocol = \"h2\"` for cleartext HTTP/2 with prior knowledge");
            self.push(error);
        }
        let tls = pool.tls.and_then(|tls| self.pool_tls(tls));
        let all_unhealthy = self.all_unhealthy(pool.all_unhealthy.as_ref());
        let health_check = self.health_check(pool.health_check, protocol);
        let outlier_detection = self.outlier_detection(pool.outlier_detection);
        let retry = self.retry(pool.retry);
        let limits = self.limits(pool.limits);
        let backends = self.backends(&name, pool.backends);
        let timeouts = pool.timeouts.unwrap_or_default();
        Pool {
            name: name.into_inner(),
            algorithm,
            hash_key,
            slow_start,
            protocol,
            backends,
            timeouts: Timeouts {
                connect: self.timeout(timeouts.connect, Duration::from_secs(2)),
                request: self.timeout(timeouts.request, Duration::from_secs(30)),
                idle: self.timeout(timeouts.idle, Duration::from_secs(60)),
            },
            all_unhealthy,
            health_check,
            outlier_detection,
            retry,
            limits,
            tls,
        }
    }

    fn algorithm(&mut self, written: Option<&Spanned<String>>) -> Algorithm {
        let Some(written) = written else {
            return Algorithm::RoundRobin;
        };
        let name = written.get_ref().as_str();
        match Algorithm::ALL.into_iter().find(|a| a.as_str() == name) {
            Some(algorithm) => algorithm,
            None => {
                let available = ALGORITHMS;
                self.push(self.choice_error(written, "algorithm", &ALGORITHMS, &available));
                Algorithm::RoundRobin
            }
        }
    }

    /// `hash_key`: only for hashing algorithms, which default to `client_ip`.
    fn hash_key(
        &mut self,
        algorithm: Algorithm,
        written: Option<&Spanned<String>>,
    ) -> Option<HashKey> {
        if !algorithm.hashes() {
            if let Some(written) = written {
                let error = self
                    .error(
                        written.span(),
                        format!(
                            "`hash_key` has no effect with algorithm `{}`",
                            algorithm.as_str()
                        ),
                    )
                    .with_help("hash_key applies to ring_hash and maglev; remove it or change the algorithm");
                self.push(error);
            }
            return None;
        }
        let Some(written) = written else {
            return Some(HashKey::ClientIp);
        };
        match parse_hash_key(written.get_ref()) {
            Ok(key) => Some(key),
            Err(why) => {
                let forms = [
                    "client_ip",
                    "header:NAME",
                    "cookie:NAME",
                    "path",
                    "query:NAME",
                ];
                let error = self
                    .error(
                        written.span(),
                        format!("invalid hash_key `{}`: {why}", written.get_ref()),
                    )
                    .with_note(format!("expected one of: {}", forms.join(", ")))
                    .with_suggestion(did_you_mean(written.get_ref(), ["client_ip", "path"]));
                self.push(error);
                Some(HashKey::ClientIp)
            }
        }
    }

    fn protocol(&mut self, written: Option<&Spanned<String>>) -> Protocol {
        let Some(written) = written else {
            return Protocol::Http1;
        };
        match written.get_ref().as_str() {
            "http1" => Protocol::Http1,
            "h2" => Protocol::H2,
            "auto" => Protocol::Auto,
            _ => {
                self.push(self.choice_error(written, "protocol", &PROTOCOLS, &PROTOCOLS));
                Protocol::Http1
            }
        }
    }

    /// A value outside the implemented ones: "not implemented yet" for a name the format
    /// defines, "unknown" with the full list and a did-you-mean for anything else.
    pub(super) fn choice_error(
        &self,
        written: &Spanned<String>,
        what: &str,
        all: &[&str],
        available: &[&str],
    ) -> ConfigError {
        let value = written.get_ref();
        if all.contains(&value.as_str()) {
            return self.error(
                written.span(),
                format!(
                    "{what} `{value}` is not implemented in this version yet; available: {}",
                    available.join(", ")
                ),
            );
        }
        self.error(written.span(), format!("unknown {what} `{value}`"))
            .with_note(format!("expected one of: {}", all.join(", ")))
            .with_suggestion(did_you_mean(value, all.iter().copied()))
    }

    fn backends(
        &mut self,
        pool: &Spanned<String>,
        backends: Option<Spanned<Vec<file::BackendFile>>>,
    ) -> Vec<Backend> {
        let backends = match backends {
            Some(b) if !b.get_ref().is_empty() => b.into_inner(),
            other => {
                let span = other.map_or_else(|| pool.span(), |b| b.span());
                let error = self
                    .error(span, format!("pool `{}` has no backends", pool.get_ref()))
                    .with_help("add `backends = [{ address = \"10.0.0.11:8080\" }]`");
                self.push(error);
                return Vec::new();
            }
        };
        let mut first_at: HashMap<String, usize> = HashMap::new();
        let mut out = Vec::new();
        for backend in backends {
            let address = &backend.address;
            let key = address.get_ref().to_ascii_lowercase();
            if let Some(first) = first_at.get(&key) {
                let error = self
                    .error(
                        address.span(),
                        format!(
                            "backend `{}` appears twice in pool `{}`",
                            address.get_ref(),
                            pool.get_ref()
                        ),
                    )
                    .with_note(format!("first listed at line {}", self.line_of(*first)))
                    .with_help("to send it more traffic, raise its `weight` instead");
                self.push(error);
            } else {
                first_at.insert(key, address.span().start);
            }
            let weight = match &backend.weight {
                None => 1,
                Some(w) if (1..=MAX_WEIGHT).contains(w.get_ref()) => {
                    u32::try_from(*w.get_ref()).unwrap_or(1)
                }
                Some(w) => {
                    let mut error = self.error(
                        w.span(),
                        format!("weight must be 1 to {MAX_WEIGHT}, not {}", w.get_ref()),
                    );
                    if *w.get_ref() == 0 {
                        error = error.with_help(format!(
                            "use draining to stop traffic to a backend: \
                             DELETE /api/pools/{}/backends/{}",
                            pool.get_ref(),
                            address.get_ref()
                        ));
                    }
                    self.push(error);
                    1
                }
            };
            let resolved = match resolve_backend(address.get_ref()) {
                Ok(addr) => addr,
                Err(e) => {
                    self.push(self.value_error(address.span(), e));
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
                }
            };
            out.push(Backend {
                address: address.get_ref().clone(),
                resolved,
                weight,
            });
        }
        out
    }
}

/// `client_ip`, `path`, `header:NAME`, `cookie:NAME` or `query:NAME`.
fn parse_hash_key(written: &str) -> Result<HashKey, &'static str> {
    match written {
        "client_ip" => return Ok(HashKey::ClientIp),
        "path" => return Ok(HashKey::Path),
        _ => {}
    }
    let Some((kind, name)) = written.split_once(':') else {
        return Err("not a known key");
    };
    if name.is_empty() {
        return Err("the name after `:` is empty");
    }
    match kind {
        "header" => http::HeaderName::from_bytes(name.as_bytes())
            .map(HashKey::Header)
            .map_err(|_| "not a valid header name"),
        "cookie" => Ok(HashKey::Cookie(name.to_string())),
        "query" => Ok(HashKey::Query(name.to_string())),
        _ => Err("not a known key"),
    }
}

#[cfg(test)]
mod hash_key_tests {
    use super::*;

    #[test]
    fn hash_key_forms() {
        assert_eq!(parse_hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(parse_hash_key("path"), Ok(HashKey::Path));
        assert_eq!(
            parse_hash_key("header:X-User"),
            Ok(HashKey::Header(http::HeaderName::from_static("x-user")))
        );
        assert_eq!(
            parse_hash_key("cookie:sid"),
            Ok(HashKey::Cookie("sid".into()))
        );
        assert_eq!(
            parse_hash_key("query:user"),
            Ok(HashKey::Query("user".into()))
        );
        assert!(parse_hash_key("header:").is_err());
        assert!(parse_hash_key("header:bad name").is_err());
        assert!(parse_hash_key("ip").is_err());
        assert!(parse_hash_key("body:x").is_err());
    }
}
