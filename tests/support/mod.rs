//! Test fixtures: real backends (small hyper servers) and a real sluice, all on 127.0.0.1:0,
//! each on a thread of its own so a test may block on raw sockets without stalling them.
#![allow(dead_code)]

pub mod admin;
pub mod gate;
pub mod process;
pub mod raw;
pub mod reload;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sluice::config::Config;
use sluice::server::{RunOptions, RuntimeKind, Server};
use tokio_util::sync::CancellationToken;

pub type Body = BoxBody<Bytes, Infallible>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

/// A request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The request, its body read whole.
    pub async fn of(req: Request<Incoming>) -> Seen {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Seen {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    }
}

/// A real HTTP backend on its own thread.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far.
    accepted: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl TestBackend {
    /// Answers `200` with its name as the body, and records every request with its body.
    pub fn start(name: &str) -> TestBackend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (record, tag) = (seen.clone(), name.to_string());
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let (record, tag) = (record.clone(), tag.clone());
            Box::pin(async move {
                let seen = Seen::of(req).await;
                record.lock().unwrap().push(seen);
                Response::builder()
                    .header("x-backend", tag.as_str())
                    .body(full(tag))
                    .unwrap()
            })
        });
        Self::with_handler(name, seen, handler)
    }

    /// A backend answering with `handler`; `seen` is left to the handler to fill.
    pub fn with_handler(name: &str, seen: Arc<Mutex<Vec<Seen>>>, handler: Handler) -> TestBackend {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
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
                    count.fetch_add(1, Ordering::SeqCst);
                    let handler = handler.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let f = handler(req);
                            async move { Ok::<_, Infallible>(f.await) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        TestBackend {
            addr,
            name: name.to_string(),
            seen,
            accepted,
            shutdown,
        }
    }

    /// TCP connections this backend has accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request this backend has received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A real sluice, started from TOML text.
pub struct TestSluice {
    pub addrs: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl TestSluice {
    pub fn start(toml: &str) -> TestSluice {
        Self::start_with(toml, 1, RuntimeKind::PerCore)
    }

    pub fn start_with(toml: &str, workers: usize, runtime: RuntimeKind) -> TestSluice {
        let config = Config::parse(toml, Path::new("test.toml")).unwrap_or_else(|e| panic!("{e}"));
        Self::serve(config, workers, runtime)
    }

    /// Starts from a file (`Config::load`), so that a reload re-reads it: see
    /// `reload::ConfigFile` for a file a test can rewrite.
    pub fn start_file(path: &Path) -> TestSluice {
        Self::start_file_with(path, 1, RuntimeKind::PerCore)
    }

    pub fn start_file_with(path: &Path, workers: usize, runtime: RuntimeKind) -> TestSluice {
        let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
        Self::serve(config, workers, runtime)
    }

    /// Starts from a loaded config.
    pub fn start_from(config: Config) -> TestSluice {
        Self::serve(config, 1, RuntimeKind::PerCore)
    }

    fn serve(config: Config, workers: usize, runtime: RuntimeKind) -> TestSluice {
        let options = RunOptions {
            workers: Some(workers),
            runtime,
            ..RunOptions::default()
        };
        Self::start_options(config, options)
    }

    /// Starts from a loaded config with `options` (a `LogControl`, say).
    pub fn start_options(config: Config, options: RunOptions) -> TestSluice {
        let server = Server::bind(config, options).unwrap();
        let addrs = server.listener_addrs();
        let admin = server.admin_addr();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || server.run(token));
        TestSluice {
            addrs,
            admin,
            shutdown,
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr(), path)
    }

    /// Starts graceful shutdown and returns at once.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Shuts down and waits; returns how long the shutdown took.
    pub fn stop(mut self) -> Duration {
        let start = Instant::now();
        self.shutdown.cancel();
        self.thread.take().unwrap().join().unwrap().unwrap();
        start.elapsed()
    }
}

impl Drop for TestSluice {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A minimal config: one listener on port 0, every request to pool `app` of `backends`.
pub fn simple_config(backends: &[&TestBackend]) -> String {
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    config_with(&addrs, "", "", "")
}

/// The minimal config with extra TOML: `top` before everything (e.g. a `[server]` table),
/// `listener` inside the `[[listener]]` table, `pool` after the `[pool.app]` table (its keys or
/// sub-tables).
pub fn config_with(backends: &[SocketAddr], top: &str, listener: &str, pool: &str) -> String {
    let list = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"
{top}

[log]
access_log = false

[[listener]]
name = "web"
bind = "127.0.0.1:0"
{listener}

[[route]]
pool = "app"

[pool.app]
backends = [{list}]
{pool}
"#
    )
}

/// `{ address = "..." }, ...` for a TOML array.
pub fn backend_list(backends: &[&TestBackend]) -> String {
    backends
        .iter()
        .map(|b| format!("{{ address = \"{}\" }}", b.addr))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response with its body collected.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` and collects the response.
pub async fn send(req: Request<Body>) -> Got {
    let response = client().request(req).await.expect("request failed");
    let (parts, body) = response.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("response body").to_bytes(),
    }
}

pub async fn get(url: &str) -> Got {
    send(Request::get(url).body(full("")).unwrap()).await
}

/// Writes raw bytes on a new connection and reads until the server closes it (or `timeout`).
pub fn raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(timeout)).unwrap();
    stream.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `check` until it holds or `timeout` passes; no fixed sleeps.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}
