//! rustls for both sides: the server configuration of an HTTPS listener (certificate chosen by
//! SNI, ALPN `h2` and `http/1.1`), the 421 rule, and the client side of TLS to backends.
//!
//! The crypto provider is rustls' `ring` (it builds without cmake and faster than
//! `aws-lc-rs`). Defaults: TLS 1.2 and 1.3 only, rustls' default cipher suites (all AEAD with
//! forward secrecy), the server's order of preference.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::config::{ListenerTls, PoolTls};

/// The one crypto provider sluice uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Chooses a listener's certificate by SNI: an exact name from a certificate's SAN list first,
/// then a `*.parent` wildcard covering exactly one more label, else the first certificate (the
/// default, also for clients that send no SNI). Among certificates naming the same name, the
/// earlier one wins.
#[derive(Debug)]
pub struct CertResolver {
    keys: Vec<Arc<CertifiedKey>>,
    names: Vec<Vec<String>>,
}

impl CertResolver {
    pub fn new(tls: &ListenerTls) -> CertResolver {
        CertResolver {
            keys: tls.certificates.iter().map(|c| c.key.clone()).collect(),
            names: tls.certificates.iter().map(|c| c.names.clone()).collect(),
        }
    }

    /// The index of the certificate for `name` (an SNI, or a `Host` without its port).
    pub fn choose(&self, name: Option<&str>) -> usize {
        let Some(name) = name else { return 0 };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return 0;
        }
        let exact = |n: &String| n.eq_ignore_ascii_case(name);
        if let Some(i) = self.names.iter().position(|names| names.iter().any(exact)) {
            return i;
        }
        // `*.example.com` covers `a.example.com`, not `example.com` nor `a.b.example.com`.
        if let Some((label, parent)) = name.split_once('.') {
            if !label.is_empty() && !parent.is_empty() {
                let wildcard = |n: &String| {
                    n.strip_prefix("*.")
                        .is_some_and(|p| p.eq_ignore_ascii_case(parent))
                };
                if let Some(i) = self
                    .names
                    .iter()
                    .position(|names| names.iter().any(wildcard))
                {
                    return i;
                }
            }
        }
        0
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.choose(hello.server_name())).cloned()
    }
}

/// The rustls server configuration of an HTTPS listener, and its certificate chooser (kept for
/// the 421 rule).
pub fn server_config(tls: &ListenerTls) -> (Arc<rustls::ServerConfig>, Arc<CertResolver>) {
    let resolver = Arc::new(CertResolver::new(tls));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The server's cipher preference, not the client's.
    config.ignore_client_order = true;
    (Arc::new(config), resolver)
}

/// What a request on an HTTPS connection needs to know about its handshake.
#[derive(Debug)]
pub struct Session {
    pub resolver: Arc<CertResolver>,
    /// The certificate the connection's SNI chose.
    pub certificate: usize,
}

impl Session {
    /// 421 rule: a request may name (in `Host` or `:authority`) only a host for which SNI would
    /// have chosen the same certificate as this connection's SNI did. `host` may carry a port.
    pub fn serves(&self, host: Option<&str>) -> bool {
        let Some(host) = host else { return true };
        self.resolver.choose(Some(strip_port(host))) == self.certificate
    }
}

/// `host:port`, `[v6]:port`, `[v6]` or `host` -> the host (brackets kept off for IPv6).
pub fn strip_port(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split_once(']').map_or(rest, |(host, _)| host);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => authority,
    }
}

/// A downstream connection: plain TCP, or TLS over it.
pub enum Downstream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Downstream {
    /// Writes what it can now without waiting (plain sockets: `try_write`; TLS: the record is
    /// queued in rustls and flushed as far as the socket takes it).
    pub fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Downstream::Plain(s) => s.try_write(buf),
            Downstream::Tls(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                let n = match Pin::new(&mut **s).poll_write(&mut cx, buf) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Err(io::ErrorKind::WouldBlock.into()),
                };
                let _ = Pin::new(&mut **s).poll_flush(&mut cx);
                Ok(n)
            }
        }
    }
}

impl AsyncRead for Downstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Downstream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Downstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Downstream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Downstream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Downstream::Plain(s) => s.is_write_vectored(),
            Downstream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_flush(cx),
            Downstream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Downstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Downstream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// The name a backend's certificate must carry when the pool sets no `server_name`: the host
/// of its address as written (`app-2.internal:8080` -> `app-2.internal`), an IP address if it
/// is one; the resolved IP if the host is not a valid name.
pub fn backend_name(address: &str, resolved: SocketAddr) -> ServerName<'static> {
    let host = strip_port(address);
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(resolved.ip().into()))
}

/// TLS to a pool's backends: the validated client configuration and the SNI names.
#[derive(Clone)]
pub struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    /// The pool's `server_name`; `None`: each backend's own (`names`).
    fixed: Option<ServerName<'static>>,
    /// Resolved address -> the backend's name, replaced by every snapshot build (the clients,
    /// and so this, are carried across reloads).
    names: Arc<arc_swap::ArcSwap<HashMap<SocketAddr, ServerName<'static>>>>,
    /// The handshake must finish within the pool's connect timeout (counted on its own).
    timeout: Duration,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.fixed)
            .finish_non_exhaustive()
    }
}

impl UpstreamTls {
    pub fn new(tls: &PoolTls, timeout: Duration) -> UpstreamTls {
        UpstreamTls {
            connector: tokio_rustls::TlsConnector::from(tls.config.clone()),
            fixed: tls.server_name.clone(),
            names: Arc::default(),
            timeout,
        }
    }

    /// The backends' names, from the pool's current backend list.
    pub fn set_names(&self, backends: &[crate::config::Backend]) {
        let names = backends
            .iter()
            .map(|b| (b.resolved, backend_name(&b.address, b.resolved)))
            .collect();
        self.names.store(Arc::new(names));
    }

    /// The TLS handshake over `tcp` to the backend at `addr`. A failure is logged here, with
    /// rustls' reason (an untrusted certificate, a refused client certificate), since the
    /// client error that reaches the request path only says "connect".
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
        name: Option<ServerName<'static>>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = name
            .or_else(|| self.fixed.clone())
            .or_else(|| self.names.load().get(&addr).cloned())
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let shown = name.to_str().into_owned();
        match tokio::time::timeout(self.timeout, self.connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(e)) => {
                tracing::warn!(backend = %addr, server_name = %shown, error = %e, "TLS handshake with the backend failed");
                Err(e)
            }
            Err(_) => {
                tracing::warn!(backend = %addr, server_name = %shown, "TLS handshake with the backend timed out");
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }
}

/// An upstream connection: plain TCP, or TLS over it.
pub enum UpstreamIo {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        match self {
            UpstreamIo::Plain(s) => s.connected(),
            // HTTP/1.1 only over TLS for now (ALPN offers `http/1.1`): HTTP/2 to backends is
            // the later `protocol = "auto"` work.
            UpstreamIo::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(names: &[&[&str]]) -> CertResolver {
        CertResolver {
            keys: Vec::new(),
            names: names
                .iter()
                .map(|n| n.iter().map(|s| s.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn sni_chooses_exact_then_wildcard_then_the_first() {
        let r = resolver(&[
            &["default.test"],
            &["*.example.com"],
            &["api.example.com", "example.com"],
        ]);
        for (name, want) in [
            (None, 0),
            (Some("api.example.com"), 2),
            (Some("API.Example.COM."), 2),
            (Some("www.example.com"), 1),
            (Some("example.com"), 2),
            (Some("a.b.example.com"), 0),
            (Some("other.test"), 0),
            (Some(""), 0),
            (Some(".example.com"), 0),
        ] {
            assert_eq!(r.choose(name), want, "{name:?}");
        }
    }

    #[test]
    fn a_host_must_choose_the_connections_certificate() {
        let resolver = Arc::new(resolver(&[&["a.test"], &["b.test", "*.b.test"]]));
        let on_b = Session {
            resolver: resolver.clone(),
            certificate: 1,
        };
        assert!(on_b.serves(Some("b.test")));
        assert!(on_b.serves(Some("B.test:8443")));
        assert!(on_b.serves(Some("x.b.test")));
        assert!(on_b.serves(None));
        assert!(!on_b.serves(Some("a.test")));
        assert!(
            !on_b.serves(Some("unknown.test")),
            "unknown names choose the default"
        );
        let default = Session {
            resolver,
            certificate: 0,
        };
        assert!(default.serves(Some("127.0.0.1:8443")));
        assert!(default.serves(Some("[::1]:8443")));
        assert!(!default.serves(Some("b.test")));
    }

    #[test]
    fn ports_come_off_hosts() {
        for (authority, host) in [
            ("a.test", "a.test"),
            ("a.test:443", "a.test"),
            ("[::1]:443", "::1"),
            ("[::1]", "::1"),
            ("::1", "::1"),
        ] {
            assert_eq!(strip_port(authority), host);
        }
    }
}
