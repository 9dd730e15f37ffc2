//! The backend leg: connect failures, the request timeout, keep-alive pooling and its idle
//! timeout, the stale pooled connection race, and streaming large bodies both ways without
//! buffering them.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A server on 127.0.0.1:0 with its own thread and runtime (so a test blocking in
/// `eventually` never stalls it), handing each accepted connection to `serve`.
struct RawBackend {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl RawBackend {
    fn start<F, Fut>(serve: F) -> RawBackend
    where
        F: Fn(tokio::net::TcpStream, usize) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(socket).unwrap();
                let mut index = 0;
                loop {
                    let stream = tokio::select! {
                        r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
                        () = token.cancelled() => break,
                    };
                    tokio::spawn(serve(stream, index));
                    index += 1;
                }
            });
        });
        RawBackend { addr, stop }
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A hyper HTTP/1.1 backend answering `ok`, counting connections accepted and ended.
struct CountingBackend {
    raw: RawBackend,
    accepted: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// When each connection ended (the server's `serve_connection` future completed).
    ended: Arc<Mutex<Vec<Instant>>>,
}

impl CountingBackend {
    fn start() -> CountingBackend {
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(Mutex::new(Vec::new()));
        let (a, r, e) = (accepted.clone(), requests.clone(), ended.clone());
        let raw = RawBackend::start(move |stream, _| {
            a.fetch_add(1, Ordering::SeqCst);
            let (r, e) = (r.clone(), e.clone());
            async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    r.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(Response::new(full("ok")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                e.lock().unwrap().push(Instant::now());
            }
        });
        CountingBackend {
            raw,
            accepted,
            requests,
            ended,
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn ended(&self) -> Vec<Instant> {
        self.ended.lock().unwrap().clone()
    }
}

fn assert_local_answer(got: &Got, status: u16) {
    assert_eq!(got.status, status, "body: {}", got.text());
    assert!(
        got.header("x-request-id").is_some_and(|v| !v.is_empty()),
        "no x-request-id"
    );
    assert!(
        got.header("content-type")
            .is_some_and(|v| v.starts_with("text/plain")),
        "content-type {:?}",
        got.header("content-type")
    );
    assert!(!got.text().trim().is_empty(), "empty body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_502() {
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let sluice = TestSluice::start(&config_with(&[closed], "", "", ""));
    let start = Instant::now();
    let got = get(&sluice.url("/")).await;
    assert_local_answer(&got, 502);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "a refused connect took {:?}",
        start.elapsed()
    );
}

/// The time sluice takes to answer a GET with its own 504, through a listener with
/// `listener_settings`, from a pool with a `request` timeout, to a backend that answers after
/// `backend_delay` (simulated slowness inside the backend).
async fn time_to_504(listener_settings: &str, request: &str, backend_delay: Duration) -> Duration {
    let slow = TestBackend::with_handler(
        "slow",
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(move |_req| {
            Box::pin(async move {
                tokio::time::sleep(backend_delay).await;
                Response::new(full("late"))
            })
        }),
    );
    let sluice = TestSluice::start(&config_with(
        &[slow.addr],
        "",
        listener_settings,
        &format!("[pool.app.timeouts]\nrequest = \"{request}\""),
    ));
    let start = Instant::now();
    let got = get(&sluice.url("/")).await;
    let elapsed = start.elapsed();
    assert_local_answer(&got, 504);
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_gets_504_after_the_request_timeout() {
    let elapsed = time_to_504("", "200ms", Duration::from_secs(2)).await;
    assert!(
        elapsed >= Duration::from_millis(150) && elapsed < Duration::from_millis(1500),
        "504 after {elapsed:?}; want 150ms..1.5s (timeout 200ms, backend 2s)"
    );
}

/// On HTTP/1 the connection's watchdog times the wait for the response head, and the watchdog
/// also re-arms itself for its own checks (every `send_timeout` while a request is in flight):
/// a re-arm must not carry it past the request's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_holds_when_the_watchdog_rearms_before_it() {
    // The watchdog fires at 200 ms (the head's deadline) and re-arms for the send check 1.5 s
    // later, past the request's 1 s deadline.
    let listener = "header_read_timeout = \"200ms\"\nsend_timeout = \"1500ms\"";
    let elapsed = time_to_504(listener, "1s", Duration::from_secs(4)).await;
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(1500),
        "504 after {elapsed:?}; want 0.9..1.5 s (timeout 1 s, watchdog re-armed for 1.7 s)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let backend = CountingBackend::start();
    let sluice = TestSluice::start(&config_with(&[backend.raw.addr], "", "", ""));
    for i in 0..50 {
        // A new downstream connection each time: reuse must come from sluice's own pool.
        let got = get(&sluice.url(&format!("/{i}"))).await;
        assert_eq!(got.status, 200, "request {i}");
        assert_eq!(got.text(), "ok", "request {i}");
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 50);
    let accepted = backend.accepted();
    assert!(
        (1..=2).contains(&accepted),
        "50 sequential requests used {accepted} upstream connections"
    );
}

/// Issue 9's reuse target: in steady state under concurrency, nearly every upstream request
/// rides a pooled connection (each worker keeps its own, so at most `workers × concurrency`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keep_alive_traffic_reuses_upstream_connections() {
    const CLIENTS: usize = 16;
    const EACH: usize = 250;
    const WORKERS: usize = 2;
    let backend = CountingBackend::start();
    let sluice = TestSluice::start_with(
        &config_with(&[backend.raw.addr], "", "", ""),
        WORKERS,
        sluice::server::RuntimeKind::PerCore,
    );
    let url = sluice.url("/");
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                // Keep-alive clients, as a load generator is.
                let client: Client<_, http_body_util::Empty<Bytes>> =
                    Client::builder(TokioExecutor::new()).build_http();
                for _ in 0..EACH {
                    let response = client.get(url.parse().unwrap()).await.unwrap();
                    assert_eq!(response.status(), 200);
                    let body = response.into_body().collect().await.unwrap().to_bytes();
                    assert_eq!(body, "ok");
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let requests = backend.requests.load(Ordering::SeqCst);
    assert_eq!(requests, CLIENTS * EACH);
    let accepted = backend.accepted();
    assert!(
        accepted <= WORKERS * CLIENTS,
        "{requests} requests from {CLIENTS} clients used {accepted} upstream connections"
    );
    let reuse = 1.0 - accepted as f64 / requests as f64;
    assert!(reuse >= 0.99, "reuse {reuse:.4}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_upstream_connections_are_closed_after_the_idle_timeout() {
    let backend = CountingBackend::start();
    let sluice = TestSluice::start(&config_with(
        &[backend.raw.addr],
        "",
        "",
        "[pool.app.timeouts]\nidle = \"200ms\"",
    ));
    let got = get(&sluice.url("/")).await;
    assert_eq!(got.status, 200);
    let answered = Instant::now();
    assert_eq!(backend.accepted(), 1);
    assert!(
        eventually(Duration::from_secs(5), || backend.ended().len() == 1),
        "the idle upstream connection was still open 5s later"
    );
    let closed_after = backend.ended()[0].saturating_duration_since(answered);
    assert!(
        closed_after >= Duration::from_millis(100) && closed_after <= Duration::from_secs(2),
        "idle upstream connection closed {closed_after:?} after the answer; want 100ms..2s (idle 200ms)"
    );
}

/// What the stale-connection backend saw on each connection.
#[derive(Debug, Clone, PartialEq)]
struct StaleSeen {
    connection: usize,
    /// The request line.
    line: String,
    answered: bool,
}

/// Answers the first request on each connection (keep-alive), then drops the connection as
/// soon as the next request's bytes arrive: the race a pooled connection can lose.
fn stale_backend(log: Arc<Mutex<Vec<StaleSeen>>>) -> RawBackend {
    RawBackend::start(move |mut stream, connection| {
        let log = log.clone();
        async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    break end + 4;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
            let body_len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < head_end + body_len {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            log.lock().unwrap().push(StaleSeen {
                connection,
                line: head.lines().next().unwrap_or("").to_string(),
                answered: true,
            });
            if stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .is_err()
            {
                return;
            }
            // Whatever comes next is never answered.
            let mut next = buf.split_off(head_end + body_len);
            while find(&next, b"\r\n").is_none() {
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => next.extend_from_slice(&chunk[..n]),
                }
            }
            if !next.is_empty() {
                let line = String::from_utf8_lossy(&next);
                log.lock().unwrap().push(StaleSeen {
                    connection,
                    line: line.lines().next().unwrap_or("").to_string(),
                    answered: false,
                });
            }
            drop(stream);
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn seen(connection: usize, line: &str, answered: bool) -> StaleSeen {
    StaleSeen {
        connection,
        line: line.to_string(),
        answered,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_on_a_stale_pooled_connection_is_retried_on_a_fresh_one() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let backend = stale_backend(log.clone());
    let sluice = TestSluice::start(&config_with(&[backend.addr], "", "", ""));
    for path in ["/one", "/two"] {
        let got = get(&sluice.url(path)).await;
        assert_eq!(got.status, 200, "{path}: {}", got.text());
        assert_eq!(got.text(), "ok", "{path}");
    }
    // The second GET really met the stale connection, then went out again on a new one.
    assert_eq!(
        *log.lock().unwrap(),
        [
            seen(0, "GET /one HTTP/1.1", true),
            seen(0, "GET /two HTTP/1.1", false),
            seen(1, "GET /two HTTP/1.1", true),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_on_a_stale_pooled_connection_is_never_sent_twice() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let backend = stale_backend(log.clone());
    let sluice = TestSluice::start(&config_with(&[backend.addr], "", "", ""));
    assert_eq!(get(&sluice.url("/warm")).await.status, 200);
    let got = send(
        Request::post(sluice.url("/submit"))
            .body(full("payload"))
            .unwrap(),
    )
    .await;
    let log = log.lock().unwrap().clone();
    let posts: Vec<&StaleSeen> = log.iter().filter(|s| s.line.starts_with("POST")).collect();
    assert_eq!(
        posts.len(),
        1,
        "the POST reached the backend {} times: {log:?}",
        posts.len()
    );
    if posts[0].answered {
        assert_eq!(got.status, 200);
    } else {
        // The only copy was dropped unanswered: the client must hear of the failure.
        assert_local_answer(&got, 502);
    }
}

/// A body of `left` bytes in 64 KiB frames, made on the fly from one shared buffer.
struct Chunks {
    left: u64,
    chunk: Bytes,
    /// Whether to announce the length (`Content-Length`) or leave it open (chunked).
    known_len: bool,
}

impl Chunks {
    fn new(len: u64, known_len: bool) -> Chunks {
        Chunks {
            left: len,
            chunk: Bytes::from(vec![b'x'; 64 * KIB as usize]),
            known_len,
        }
    }
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n as usize)))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.known_len {
            SizeHint::with_exact(self.left)
        } else {
            SizeHint::default()
        }
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kib * KIB
}

/// Samples the process's RSS until dropped; `peak_growth` is the largest rise over the start.
struct RssWatch {
    start: u64,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl RssWatch {
    fn start() -> RssWatch {
        let start = rss_bytes();
        let peak = Arc::new(AtomicU64::new(start));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { start, peak, stop }
    }

    fn peak_growth(&self) -> u64 {
        self.peak
            .fetch_max(rss_bytes(), Ordering::Relaxed)
            .max(rss_bytes())
            .saturating_sub(self.start)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A backend that counts an upload's bytes frame by frame and answers the count.
fn counting_sink() -> TestBackend {
    TestBackend::with_handler(
        "sink",
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(|req| {
            Box::pin(async move {
                let mut body = req.into_body();
                let mut total = 0u64;
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                        Err(e) => {
                            return Response::builder()
                                .status(500)
                                .body(full(e.to_string()))
                                .unwrap()
                        }
                    }
                }
                Response::new(full(total.to_string()))
            })
        }),
    )
}

/// A backend that streams `len` bytes (chunked, length not announced) to every request.
fn streaming_source(len: u64) -> TestBackend {
    TestBackend::with_handler(
        "source",
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(move |_req| {
            Box::pin(async move { Response::new(Chunks::new(len, false).boxed()) })
        }),
    )
}

const RSS_LIMIT: u64 = 200 * MIB;

async fn upload_through_sluice(len: u64) {
    let sink = counting_sink();
    let sluice = TestSluice::start(&simple_config(&[&sink]));
    let watch = RssWatch::start();
    let start = Instant::now();
    let client: Client<_, Chunks> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(
            Request::post(sluice.url("/upload"))
                .body(Chunks::new(len, true))
                .unwrap(),
        )
        .await
        .expect("upload failed");
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let growth = watch.peak_growth();
    eprintln!(
        "upload of {} MiB took {:?}, RSS grew by {} MiB",
        len / MIB,
        start.elapsed(),
        growth / MIB
    );
    assert_eq!(
        String::from_utf8_lossy(&body),
        len.to_string(),
        "bytes the backend counted"
    );
    assert!(
        growth < RSS_LIMIT,
        "RSS grew by {} MiB during the upload",
        growth / MIB
    );
}

async fn download_through_sluice(len: u64) {
    let source = streaming_source(len);
    let sluice = TestSluice::start(&simple_config(&[&source]));
    let watch = RssWatch::start();
    let start = Instant::now();
    let response = client()
        .request(
            Request::get(sluice.url("/download"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .expect("download failed");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("download body failed");
        total += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    let growth = watch.peak_growth();
    eprintln!(
        "download of {} MiB took {:?}, RSS grew by {} MiB",
        len / MIB,
        start.elapsed(),
        growth / MIB
    );
    assert_eq!(total, len, "bytes the client received");
    assert!(
        growth < RSS_LIMIT,
        "RSS grew by {} MiB during the download",
        growth / MIB
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_upload_streams_through() {
    upload_through_sluice(GIB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_1_gib_download_streams_through() {
    download_through_sluice(GIB).await;
}

/// A backend whose accept queue is full drops new SYNs, so connecting hangs (on loopback,
/// without leaving the machine): the pool's connect timeout must answer 502 promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_connect_gets_502_after_the_connect_timeout() {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (never accepted), until a further connect no longer completes.
    let mut fillers = Vec::new();
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => fillers.push(s),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the accept queue never filled");
    }
    let sluice = TestSluice::start(&config_with(
        &[addr],
        "",
        "",
        "[pool.app.timeouts]\nconnect = \"300ms\"",
    ));
    let start = Instant::now();
    let got = get(&sluice.url("/")).await;
    let elapsed = start.elapsed();
    assert_local_answer(&got, 502);
    assert!(got.text().contains("connect"), "{}", got.text());
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "answered after {elapsed:?}"
    );
    drop(fillers);
}
