//! What can go wrong registering a backend or keeping registrations on disk, and whose fault it
//! is: the admin API answers a client's mistake with 400 and its own trouble with 500.

use std::io;
use std::path::PathBuf;

use super::{MAX_REGISTRATIONS, MAX_TTL_SECONDS, MAX_WEIGHT};

/// An example body, quoted in the messages about the body's shape.
const EXAMPLE: &str = r#"{"address": "10.0.0.11:8080", "weight": 1, "ttl_seconds": 30}"#;
/// The accepted address forms, quoted in every address message.
const ADDRESS_FORMS: &str =
    "write `host:port`, like `10.0.0.11:8080`, `[fd00::1]:8080` or `app-2.internal:8080`";

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The body is empty.
    #[error("the request body is empty; send a JSON object like {EXAMPLE}")]
    EmptyBody,
    /// The body is not JSON at all.
    #[error("the request body is not valid JSON: {0}; send a JSON object like {EXAMPLE}")]
    NotJson(serde_json::Error),
    /// JSON, but not an object: what it is instead.
    #[error("the request body is {0}, not a JSON object; send a JSON object like {EXAMPLE}")]
    NotObject(&'static str),
    /// An object, but not a registration: an unknown or repeated field.
    #[error("the request body is not a registration: {0}; send a JSON object like {EXAMPLE}")]
    Body(serde_json::Error),
    /// `address` is absent (or null).
    #[error("`address` is required; send a JSON object like {EXAMPLE}")]
    MissingAddress,
    /// `address` is not a usable `host:port`. `address` is shortened if long.
    #[error("`address` {address} {problem}; {ADDRESS_FORMS}")]
    Address {
        address: String,
        problem: &'static str,
    },
    /// `weight` is 0: a way to stop a backend's traffic that sluice does not offer.
    #[error(
        "`weight` must be 1 to {MAX_WEIGHT}, not 0; to stop a backend's traffic, \
         DELETE /api/pools/{{pool}}/backends/{{address}} instead (it drains, then goes)"
    )]
    WeightZero,
    /// `weight` is not an integer from 1 to `MAX_WEIGHT`; the value as written, shortened.
    #[error("`weight` must be an integer from 1 to {MAX_WEIGHT}, not {0}")]
    Weight(String),
    /// `ttl_seconds` is not an integer from 1 to `MAX_TTL_SECONDS`; the value as written.
    #[error(
        "`ttl_seconds` must be an integer from 1 to {MAX_TTL_SECONDS} (one day), not {0}; \
         omit it for a registration that never expires"
    )]
    Ttl(String),
    /// A new registration would pass `MAX_REGISTRATIONS`; renewals and updates still succeed.
    #[error(
        "sluice already holds {MAX_REGISTRATIONS} registrations, its limit; \
         DELETE unused ones first"
    )]
    Full,
    /// The state directory or file could not be read or written.
    #[error("cannot {op} `{path}`: {error}", path = path.display())]
    Io {
        /// What sluice was doing, as a verb phrase: "read", "rename into place".
        op: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    /// The state file exists but cannot be used. The caller starts empty and moves the file
    /// aside with `Registry::set_aside_corrupt`, so that nothing is lost.
    #[error("state file `{path}` is unusable: {problem}", path = path.display())]
    Corrupt { path: PathBuf, problem: Corruption },
}

/// Why a state file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("it has version {0}, and this sluice reads version 1 only")]
    Version(u64),
    /// `index` counts from 0, in file order.
    #[error("registration {index}: {error}")]
    Entry {
        index: usize,
        error: Box<RegistryError>,
    },
    #[error("registration {index}: backend `{address}` of pool `{pool}` appears twice")]
    Duplicate {
        index: usize,
        pool: String,
        address: String,
    },
    #[error("registration {index}: `ttl_seconds` and `expires_at_unix` go together")]
    Expiry { index: usize },
}

impl RegistryError {
    /// The client's mistake (the admin API answers 400), rather than sluice's own trouble with
    /// its state directory (500).
    pub fn is_bad_request(&self) -> bool {
        match self {
            RegistryError::EmptyBody
            | RegistryError::NotJson(_)
            | RegistryError::NotObject(_)
            | RegistryError::Body(_)
            | RegistryError::MissingAddress
            | RegistryError::Address { .. }
            | RegistryError::WeightZero
            | RegistryError::Weight(_)
            | RegistryError::Ttl(_)
            | RegistryError::Full => true,
            RegistryError::Io { .. } | RegistryError::Corrupt { .. } => false,
        }
    }

    /// The state file exists but is unusable: start empty and set it aside.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, RegistryError::Corrupt { .. })
    }
}

/// A client's value for an error message: quoted as written, cut short so that a huge body is
/// not echoed back whole.
pub(super) fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("`{}...`", &text[..cut]),
        None => format!("`{text}`"),
    }
}
