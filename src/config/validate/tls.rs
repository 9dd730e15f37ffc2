//! TLS checks: `[listener.tls]` certificates and `[pool.NAME.tls]` trust and client identity,
//! loaded from disk here so that every problem is a located config error.

use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, ServerName};
use toml::Spanned;

use super::Checker;
use crate::config::file;
use crate::config::tls::{self, resolve_path, LoadError};
use crate::config::{ListenerTls, PoolTls};

impl Checker<'_> {
    /// The listener's certificates, each loaded and checked; `None` after any error.
    pub(super) fn listener_tls(
        &mut self,
        tls: Spanned<file::ListenerTlsFile>,
    ) -> Option<ListenerTls> {
        let span = tls.span();
        let tls = tls.into_inner();
        let certs_span = tls.certificates.span();
        let now = SystemTime::now();
        let mut certificates = Vec::new();
        let mut failed = false;
        for c in tls.certificates.into_inner() {
            let cert_path = resolve_path(self.source, c.cert.get_ref());
            let key_path = resolve_path(self.source, c.key.get_ref());
            match tls::load_certificate(cert_path, key_path, now) {
                Ok(cert) => certificates.push(cert),
                Err(e) => {
                    failed = true;
                    let at = if e.key { c.key.span() } else { c.cert.span() };
                    self.push_load_error(at, e);
                }
            }
        }
        if certificates.is_empty() && !failed {
            let error = self
                .error(certs_span.start..certs_span.end.max(span.start), "no certificates")
                .with_help(
                    "list at least one: `certificates = [{ cert = \"site.pem\", key = \"site.key\" }]`",
                );
            self.push(error);
            return None;
        }
        (!failed).then_some(ListenerTls { certificates })
    }

    /// The pool's client TLS configuration; `None` after any error.
    pub(super) fn pool_tls(&mut self, tls: Spanned<file::PoolTlsFile>) -> Option<PoolTls> {
        let span = tls.span();
        let tls = tls.into_inner();
        let mut failed = false;
        let server_name = match &tls.server_name {
            Some(name) => match ServerName::try_from(name.get_ref().clone()) {
                Ok(n) => Some(n),
                Err(_) => {
                    let message = format!("`{}` is not a valid server_name", name.get_ref());
                    let note = "expected a DNS name like `api.internal` or an IP address";
                    self.push(self.error(name.span(), message).with_note(note));
                    failed = true;
                    None
                }
            },
            None => None,
        };
        let mut roots = rustls::RootCertStore::empty();
        let mut material: Vec<CertificateDer<'static>> = Vec::new();
        let ca = tls
            .ca
            .as_ref()
            .map(|ca| (resolve_path(self.source, ca.get_ref()), ca.span()));
        // Without `ca`, the system's roots are loaded below, once the rest is known to be valid.
        if let Some((path, at)) = &ca {
            match tls::read_certs(path) {
                Ok(certs) => {
                    for cert in certs {
                        if let Err(e) = roots.add(cert.clone()) {
                            let message =
                                format!("unusable CA certificate in `{}`: {e}", path.display());
                            self.push(self.error(at.clone(), message));
                            failed = true;
                        }
                        material.push(cert);
                    }
                }
                Err(message) => {
                    self.push(self.error(at.clone(), message));
                    failed = true;
                }
            }
        }
        let identity = match (&tls.client_cert, &tls.client_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let cert_path = resolve_path(self.source, cert.get_ref());
                let key_path = resolve_path(self.source, key.get_ref());
                match tls::load_client_identity(&cert_path, &key_path) {
                    Ok((chain, key_der)) => {
                        material.extend(chain.iter().cloned());
                        Some((chain, key_der, (cert_path, key_path)))
                    }
                    Err(e) => {
                        let at = if e.key { key.span() } else { cert.span() };
                        self.push_load_error(at, e);
                        failed = true;
                        None
                    }
                }
            }
            (Some(one), None) | (None, Some(one)) => {
                let message = "`client_cert` and `client_key` go together";
                let help = "set both for mutual TLS, or neither";
                self.push(self.error(one.span(), message).with_help(help));
                failed = true;
                None
            }
        };
        if failed {
            return None;
        }
        if ca.is_none() {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                let message = "no trust anchors: the system's certificate store is empty";
                let help = "install the `ca-certificates` package, or set `ca`";
                self.push(self.error(span, message).with_help(help));
                return None;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports TLS 1.2 and 1.3")
            .with_root_certificates(roots);
        let (mut config, client_cert) = match identity {
            Some((chain, key, paths)) => match builder.with_client_auth_cert(chain, key) {
                Ok(config) => (config, Some(paths)),
                Err(e) => {
                    let at = tls.client_cert.as_ref().map_or(span, |c| c.span());
                    self.push(self.error(at, format!("unusable client certificate: {e}")));
                    return None;
                }
            },
            None => (builder.with_no_client_auth(), None),
        };
        // HTTP/1.1 to backends (HTTP/2 upstream is not implemented yet).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(PoolTls::new(
            server_name,
            ca.map(|(path, _)| path),
            client_cert,
            std::sync::Arc::new(config),
            material,
        ))
    }

    fn push_load_error(&mut self, at: std::ops::Range<usize>, e: LoadError) {
        let mut error = self.error(at, e.message);
        if let Some(note) = e.note {
            error = error.with_note(note);
        }
        self.push(error);
    }
}
