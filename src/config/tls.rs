//! TLS material as the validated configuration holds it: certificates and keys read from disk,
//! parsed and checked at validation time (off the request path), so that a config with an
//! unreadable file, a key that does not match its certificate or an expired certificate is
//! refused as a whole, and a running sluice never reads a PEM file.
//!
//! Paths are taken relative to the config file's directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;

/// One certificate of an HTTPS listener, with its key, checked to match.
#[derive(Clone)]
pub struct Certificate {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// The chain (leaf first) with its signing key, as rustls serves it.
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf's subject alternative names, lower-case, wildcards written
    /// `*.example.com`; SNI chooses among certificates by these.
    pub names: Vec<String>,
    /// The leaf's `notAfter`.
    pub not_after: SystemTime,
}

impl PartialEq for Certificate {
    /// Same files with the same content: a reload that rewrote a certificate in place is a
    /// change (the key matches the certificate, so comparing certificates suffices).
    fn eq(&self, other: &Self) -> bool {
        self.cert_path == other.cert_path
            && self.key_path == other.key_path
            && self.key.cert == other.key.cert
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .field("names", &self.names)
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// `[listener.tls]`: an HTTPS listener. Never empty: the first certificate is the default.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerTls {
    pub certificates: Vec<Certificate>,
}

/// `[pool.NAME.tls]`: HTTPS to the pool's backends.
#[derive(Clone)]
pub struct PoolTls {
    /// SNI and the name verified; `None`: each backend address's host.
    pub server_name: Option<ServerName<'static>>,
    /// `ca` as written (resolved), `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// `client_cert` and `client_key`, for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Built at validation: trust anchors, client identity, ALPN.
    pub config: Arc<rustls::ClientConfig>,
    /// The DER of every trust anchor and client certificate, for comparing versions.
    material: Vec<CertificateDer<'static>>,
}

impl PoolTls {
    pub fn new(
        server_name: Option<ServerName<'static>>,
        ca: Option<PathBuf>,
        client_cert: Option<(PathBuf, PathBuf)>,
        config: Arc<rustls::ClientConfig>,
        material: Vec<CertificateDer<'static>>,
    ) -> PoolTls {
        PoolTls {
            server_name,
            ca,
            client_cert,
            config,
            material,
        }
    }
}

impl PartialEq for PoolTls {
    fn eq(&self, other: &Self) -> bool {
        self.server_name == other.server_name
            && self.ca == other.ca
            && self.client_cert == other.client_cert
            && self.material == other.material
    }
}

impl fmt::Debug for PoolTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolTls")
            .field("server_name", &self.server_name)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// Why a TLS file was refused; `key` says whether the key file (rather than the certificate
/// file) is the one to point at.
#[derive(Debug)]
pub(super) struct LoadError {
    pub message: String,
    pub note: Option<String>,
    pub key: bool,
}

impl LoadError {
    fn cert(message: String) -> LoadError {
        LoadError {
            message,
            note: None,
            key: false,
        }
    }

    fn key(message: String) -> LoadError {
        LoadError {
            message,
            note: None,
            key: true,
        }
    }

    fn note(mut self, note: impl Into<String>) -> LoadError {
        self.note = Some(note.into());
        self
    }
}

/// `path` as written, relative to the config file's directory unless absolute.
pub(super) fn resolve_path(source: &Path, written: &str) -> PathBuf {
    let path = Path::new(written);
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match source.parent() {
        Some(dir) => dir.join(path),
        None => path.to_path_buf(),
    }
}

/// PEM certificates from `path`: at least one.
pub(super) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read certificate file `{}`: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in `{}`: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no certificate in `{}`: expected PEM `-----BEGIN CERTIFICATE-----` blocks",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, LoadError> {
    let pem = std::fs::read(path)
        .map_err(|e| LoadError::key(format!("cannot read key file `{}`: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        LoadError::key(format!("no private key in `{}`: {e}", path.display())).note(
            "expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block, unencrypted",
        )
    })
}

/// A certificate chain and its key, checked: readable, parseable, the key matches the leaf,
/// the leaf is not expired at `now`.
pub(super) fn load_certificate(
    cert_path: PathBuf,
    key_path: PathBuf,
    now: SystemTime,
) -> Result<Certificate, LoadError> {
    let chain = read_certs(&cert_path).map_err(LoadError::cert)?;
    let (names, not_before, not_after) = leaf_facts(&chain[0])
        .map_err(|e| LoadError::cert(format!("`{}`: {e}", cert_path.display())))?;
    let key = read_key(&key_path)?;
    let provider = crate::tls::provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => LoadError::key(format!(
            "the key in `{}` does not match the certificate in `{}`",
            key_path.display(),
            cert_path.display()
        ))
        .note("each `key` must be the private key of its `cert`'s first (leaf) certificate"),
        other => LoadError::key(format!(
            "unusable private key in `{}`: {other}",
            key_path.display()
        )),
    })?;
    if not_after < now {
        return Err(LoadError::cert(format!(
            "the certificate in `{}` expired on {}",
            cert_path.display(),
            show_time(not_after)
        ))
        .note("clients refuse expired certificates; renew it"));
    }
    if not_before > now {
        return Err(LoadError::cert(format!(
            "the certificate in `{}` is not valid before {}",
            cert_path.display(),
            show_time(not_before)
        )));
    }
    Ok(Certificate {
        cert_path,
        key_path,
        key: Arc::new(certified),
        names,
        not_after,
    })
}

/// A client certificate chain and key for mutual TLS, checked to match.
pub(super) fn load_client_identity(
    cert_path: &Path,
    key_path: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), LoadError> {
    let chain = read_certs(cert_path).map_err(LoadError::cert)?;
    let key = read_key(key_path)?;
    let provider = crate::tls::provider();
    CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider).map_err(|e| {
        LoadError::key(format!(
            "the key in `{}` does not fit the certificate in `{}`: {e}",
            key_path.display(),
            cert_path.display()
        ))
    })?;
    Ok((chain, key))
}

/// The leaf's DNS names (lower-case), `notBefore` and `notAfter`.
fn leaf_facts(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    let at = |t: i64| {
        if t >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(t as u64)
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(t.unsigned_abs())
        }
    };
    let validity = cert.validity();
    Ok((
        names,
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    ))
}

/// `2026-11-21 10:00:00 UTC`.
pub fn show_time(at: SystemTime) -> String {
    let text = crate::admin::timestamp::rfc3339(at);
    // `YYYY-MM-DDTHH:MM:SS.mmmZ` -> `YYYY-MM-DD HH:MM:SS UTC`
    match text.split_once('T') {
        Some((date, time)) => format!("{date} {} UTC", time.get(..8).unwrap_or(time)),
        None => text,
    }
}
