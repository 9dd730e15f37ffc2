//! TLS fixtures: a test certificate authority issuing certificates at test time (rcgen) into a
//! temporary directory, a TLS client trusting it, and a TLS backend (optionally requiring
//! client certificates) on its own thread.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// A certificate and key issued by a `Pki`, as files.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A test certificate authority and the directory its files live in (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, ca_cert.pem()).unwrap();
        Pki {
            dir,
            ca,
            ca_cert,
            ca_key,
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), valid from yesterday for a year.
    pub fn issue(&self, stem: &str, names: &[&str]) -> Issued {
        let now = time::OffsetDateTime::now_utc();
        self.issue_valid(
            stem,
            names,
            now - time::Duration::days(1),
            now + time::Duration::days(365),
        )
    }

    pub fn issue_valid(
        &self,
        stem: &str,
        names: &[&str],
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(stem));
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &Path) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A client trusting `ca` and offering `alpn`.
pub fn client_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Connects with TLS to `addr`, verifying the certificate for `name` and sending it as SNI
/// (unless `sni` is false).
pub async fn connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    name: &str,
    sni: bool,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut config = config;
    config.enable_sni = sni;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    connector.connect(name, tcp).await
}

/// The DNS names of the certificate the server presented.
pub fn peer_names(stream: &TlsStream<TcpStream>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let certs = stream.get_ref().1.peer_certificates().unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect()
}

/// A response with its body collected.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One GET over an established TLS stream, HTTP/2 if ALPN chose it, else HTTP/1.1; returns
/// the answer and the request sender (to send more on the same connection).
pub async fn get_over(stream: TlsStream<TcpStream>, host: &str, path: &str) -> (Answer, Sender) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let mut sender = if h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    let answer = sender.get(host, path).await.expect("request failed");
    (answer, sender)
}

pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, hyper::Error> {
        let response = match self {
            Sender::H1(s) => {
                s.ready().await?;
                let req = Request::get(path)
                    .header("host", host)
                    .body(Empty::new())
                    .unwrap();
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                let req = Request::get(format!("https://{host}{path}"))
                    .body(Empty::new())
                    .unwrap();
                s.send_request(req).await?
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A backend speaking HTTPS with `cert`, requiring client certificates issued by `client_ca`
/// when given. Answers 200 with its name and echoes the client's SNI in `x-sni`.
pub struct TlsBackend {
    pub addr: SocketAddr,
    /// Requests answered.
    pub requests: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl TlsBackend {
    pub fn start(name: &str, cert: &Issued, client_ca: Option<&Path>) -> TlsBackend {
        let chain: Vec<_> = CertificateDer::pem_file_iter(&cert.cert)
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)),
                    provider(),
                )
                .build()
                .unwrap(),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        let count = requests.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(socket).unwrap();
                loop {
                    let (stream, _) = tokio::select! {
                        r = listener.accept() => match r { Ok(r) => r, Err(_) => continue },
                        () = stop.cancelled() => break,
                    };
                    let (acceptor, count, name) = (acceptor.clone(), count.clone(), name.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().unwrap_or("").to_string();
                        let svc = service_fn(move |req: Request<Incoming>| {
                            count.fetch_add(1, Ordering::SeqCst);
                            let proto = req
                                .headers()
                                .get("x-forwarded-proto")
                                .cloned()
                                .unwrap_or(http::HeaderValue::from_static(""));
                            let response = Response::builder()
                                .header("x-sni", sni.as_str())
                                .header("x-seen-proto", proto)
                                .body(Full::new(Bytes::from(name.clone())))
                                .unwrap();
                            async move { Ok::<_, Infallible>(response) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        });
        TlsBackend {
            addr,
            requests,
            shutdown,
        }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
