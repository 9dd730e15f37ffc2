//! gRPC through sluice (`protocol = "h2"`), with tonic at both ends: unary, server-streaming,
//! client-streaming and bidirectional calls with their trailers, error statuses from the backend, and the gRPC
//! statuses sluice answers itself (a dead backend, a call's deadline).
//!
//! The backends are tonic services served by hyper (tonic's codegen only, no tonic transport):
//! `grpc.health.v1.Health` from tonic-health (Check is unary, Watch server-streaming), a
//! bidirectional echo, `/test.Echo/Chat`, and a client-streaming collector, `/test.Echo/Collect`,
//! written here with tonic's server `Grpc`.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use support::{config_with, TestSluice};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest as Msg;
use tonic_health::server::HealthReporter;
use tonic_prost::ProstCodec;
use tower_service::Service;

const CHAT: &str = "/test.Echo/Chat";
const COLLECT: &str = "/test.Echo/Collect";

/// Client streaming: the request's messages, joined with `,` after the backend's name, in one
/// answer once the request stream has ended.
#[derive(Clone)]
struct Collect {
    name: &'static str,
}

impl tonic::server::ClientStreamingService<Msg> for Collect {
    type Response = Msg;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Msg>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Streaming<Msg>>) -> Self::Future {
        let name = self.name;
        Box::pin(async move {
            let mut incoming = request.into_inner();
            let mut all = Vec::new();
            while let Some(msg) = incoming.next().await {
                all.push(msg?.service);
            }
            Ok(tonic::Response::new(Msg {
                service: format!("{name}:{}", all.join(",")),
            }))
        })
    }
}

/// Bidirectional echo: each message comes back with the backend's name prefixed; a message
/// `fail` ends the call with NOT_FOUND instead; metadata `x-slow` delays the response head.
#[derive(Clone)]
struct Echo {
    name: &'static str,
}

type MsgStream = Pin<Box<dyn Stream<Item = Result<Msg, Status>> + Send>>;

impl tonic::server::StreamingService<Msg> for Echo {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<MsgStream>, Status>> + Send>>;

    fn call(&mut self, request: tonic::Request<Streaming<Msg>>) -> Self::Future {
        let name = self.name;
        Box::pin(async move {
            if request.metadata().contains_key("x-slow") {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Ok(tonic::Response::new(echo(name, request.into_inner())))
        })
    }
}

fn echo(name: &'static str, mut incoming: Streaming<Msg>) -> MsgStream {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(msg) = incoming.next().await {
            let reply = match msg {
                Ok(m) if m.service == "fail" => Err(Status::not_found("told to fail")),
                Ok(m) => Ok(Msg {
                    service: format!("{name}:{}", m.service),
                }),
                Err(e) => Err(e),
            };
            let last = reply.is_err();
            if tx.send(reply).await.is_err() || last {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// A gRPC backend (health and echo) on its own thread.
struct GrpcBackend {
    addr: SocketAddr,
    reporter: HealthReporter,
    shutdown: CancellationToken,
}

impl GrpcBackend {
    fn start(name: &'static str) -> GrpcBackend {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        let addr = socket.local_addr().unwrap();
        let (reporter, health) = tonic_health::server::health_reporter();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
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
                    let health = health.clone();
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let mut health = health.clone();
                        async move {
                            let response = if req.uri().path() == CHAT {
                                let mut grpc =
                                    tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
                                grpc.streaming(Echo { name }, req).await
                            } else if req.uri().path() == COLLECT {
                                let mut grpc =
                                    tonic::server::Grpc::new(ProstCodec::<Msg, Msg>::default());
                                grpc.client_streaming(Collect { name }, req).await
                            } else {
                                match health.call(req).await {
                                    Ok(r) => r,
                                    Err(never) => match never {},
                                }
                            };
                            Ok::<Response<tonic::body::Body>, Infallible>(response)
                        }
                    });
                    tokio::spawn(async move {
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        });
        GrpcBackend {
            addr,
            reporter,
            shutdown,
        }
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

type GrpcChannel = Client<HttpConnector, tonic::body::Body>;

/// An HTTP/2 (prior knowledge) client, as gRPC clients are.
fn channel() -> GrpcChannel {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

fn origin(sluice: &TestSluice) -> Uri {
    format!("http://{}", sluice.addr()).parse().unwrap()
}

fn sluice_for(backends: &[SocketAddr], pool: &str) -> TestSluice {
    let pool = format!("protocol = \"h2\"\n{pool}");
    TestSluice::start(&config_with(backends, "", "", &pool))
}

async fn check(client: &mut HealthClient<GrpcChannel>, service: &str) -> Result<i32, Status> {
    let request = Msg {
        service: service.into(),
    };
    client.check(request).await.map(|r| r.into_inner().status)
}

#[tokio::test]
async fn unary_calls_and_their_error_statuses_pass_through() {
    let backend = GrpcBackend::start("a");
    let sluice = sluice_for(&[backend.addr], "");
    let mut client = HealthClient::with_origin(channel(), origin(&sluice));

    let status = check(&mut client, "").await.expect("check through sluice");
    assert_eq!(status, ServingStatus::Serving as i32);

    // The backend's NOT_FOUND, with its message, arrives as the backend sent it (tonic reads
    // it from the trailers-only response or the trailers).
    let err = check(&mut client, "no.such.Service").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("not"), "{err:?}");
}

#[tokio::test]
async fn server_streaming_delivers_each_update() {
    let backend = GrpcBackend::start("a");
    let sluice = sluice_for(&[backend.addr], "");
    backend
        .reporter
        .set_service_status("app.Svc", tonic_health::ServingStatus::Serving)
        .await;
    let mut client = HealthClient::with_origin(channel(), origin(&sluice));
    let mut updates = client
        .watch(Msg {
            service: "app.Svc".into(),
        })
        .await
        .expect("watch through sluice")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("first update in time")
        .expect("a first update")
        .expect("an update, not an error");
    assert_eq!(first.status, ServingStatus::Serving as i32);

    // A change on the backend reaches the client while the stream stays open.
    backend
        .reporter
        .set_service_status("app.Svc", tonic_health::ServingStatus::NotServing)
        .await;
    let second = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .expect("second update in time")
        .expect("a second update")
        .expect("an update, not an error");
    assert_eq!(second.status, ServingStatus::NotServing as i32);
}

/// Opens `/test.Echo/Chat` through sluice; returns the sender of requests and the replies.
/// `slow`: the backend delays its response head by 5 s, and the call has a 300 ms deadline.
async fn chat(
    sluice: &TestSluice,
    slow: bool,
) -> Result<(tokio::sync::mpsc::Sender<Msg>, Streaming<Msg>), Status> {
    let mut grpc = tonic::client::Grpc::with_origin(channel(), origin(sluice));
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if slow {
        request
            .metadata_mut()
            .insert("x-slow", "1".parse().unwrap());
        request.set_timeout(Duration::from_millis(300));
    }
    let replies = grpc
        .streaming(
            request,
            PathAndQuery::from_static(CHAT),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await?
        .into_inner();
    Ok((tx, replies))
}

fn msg(text: &str) -> Msg {
    Msg {
        service: text.into(),
    }
}

#[tokio::test]
async fn bidirectional_streams_interleave_and_end_with_the_backends_status() {
    let backend = GrpcBackend::start("a");
    let sluice = sluice_for(&[backend.addr], "");
    let (tx, mut replies) = chat(&sluice, false).await.expect("call opened");
    // One message, its answer, the next: the streams run both ways at once, nothing is
    // buffered until the end of the request.
    for text in ["one", "two", "three"] {
        tx.send(msg(text)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .expect("reply in time")
            .expect("a reply")
            .expect("a message");
        assert_eq!(reply.service, format!("a:{text}"));
    }
    // The backend ends the call with an error status: it arrives in the trailers.
    tx.send(msg("fail")).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("status in time")
        .expect("an item");
    let status = end.expect_err("the call failed");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "told to fail");

    // A call that ends well ends with OK in the trailers: the stream simply ends.
    let (tx, mut replies) = chat(&sluice, false).await.expect("call opened");
    tx.send(msg("last")).await.unwrap();
    drop(tx);
    let reply = replies.next().await.expect("a reply").expect("a message");
    assert_eq!(reply.service, "a:last");
    assert!(replies.next().await.is_none(), "ended with OK");
    let trailers = replies.trailers().await.expect("trailers read");
    assert!(trailers.is_some(), "the backend's trailers arrived");
}

#[tokio::test]
async fn a_dead_backend_is_unavailable_to_grpc_clients() {
    let dead = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let sluice = sluice_for(&[dead], "");
    let mut client = HealthClient::with_origin(channel(), origin(&sluice));
    let err = check(&mut client, "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("could not connect"), "{err:?}");
}

#[tokio::test]
async fn grpc_timeout_caps_the_wait_for_the_backend() {
    let backend = GrpcBackend::start("a");
    // The pool would wait 30 s; the call's deadline (300 ms) is what counts.
    let sluice = sluice_for(&[backend.addr], "[pool.app.timeouts]\nrequest = \"30s\"\n");
    let started = Instant::now();
    let err = chat(&sluice, true).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("gateway timeout"),
        "sluice's answer: {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

/// The answer sluice makes itself for a gRPC request, seen raw: HTTP 200, the status in the
/// headers, and nothing else (trailers-only).
#[tokio::test]
async fn sluices_own_grpc_answers_are_trailers_only() {
    let dead = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let sluice = sluice_for(&[dead], "");
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let request = Request::post(format!(
        "http://{}/grpc.health.v1.Health/Check",
        sluice.addr()
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
    .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "14");
    assert!(response.headers().contains_key("x-request-id"));
    assert!(hyper::body::Body::is_end_stream(response.body()));
    let body = response.into_body().collect().await.unwrap();
    assert!(body.trailers().is_none());
    assert!(body.to_bytes().is_empty());

    // A request that is not gRPC still gets the plain HTTP answer.
    let plain = support::get(&format!("http://{}/", sluice.addr())).await;
    assert_eq!(plain.status, 502);
}

/// Sends one echo call and returns the name of the backend that answered it.
async fn who_answers(sluice: &TestSluice) -> Result<String, Status> {
    let (tx, mut replies) = chat(sluice, false).await?;
    tx.send(msg("who")).await.unwrap();
    drop(tx);
    let reply = replies.next().await.expect("a reply")?;
    Ok(reply.service.trim_end_matches(":who").to_string())
}

/// Polls `who_answers` until `check` holds for one answer, within `limit`.
async fn until_answer(
    sluice: &TestSluice,
    limit: Duration,
    check: impl Fn(&Result<String, Status>) -> bool,
) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check(&who_answers(sluice).await) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn grpc_health_checks_take_a_not_serving_backend_out_and_back() {
    let a = GrpcBackend::start("a");
    let b = GrpcBackend::start("b");
    for (backend, status) in [
        (&a, tonic_health::ServingStatus::Serving),
        (&b, tonic_health::ServingStatus::NotServing),
    ] {
        backend.reporter.set_service_status("app.Svc", status).await;
    }
    let pool = "[pool.app.health_check]\ngrpc_service = \"app.Svc\"\ninterval = \"500ms\"\n\
                timeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 2\n";
    let sluice = sluice_for(&[a.addr, b.addr], pool);

    // Checked backends start unhealthy; `a` passes its first probe.
    assert!(
        until_answer(&sluice, Duration::from_secs(10), |r| r.is_ok()).await,
        "a backend became healthy"
    );
    for _ in 0..20 {
        let who = who_answers(&sluice).await.expect("answered");
        assert_eq!(who, "a", "a NOT_SERVING backend took traffic");
    }

    // `b` reports SERVING: the next probe lets it in.
    b.reporter
        .set_service_status("app.Svc", tonic_health::ServingStatus::Serving)
        .await;
    assert!(
        until_answer(&sluice, Duration::from_secs(10), |r| {
            r.as_ref().is_ok_and(|who| who == "b")
        })
        .await,
        "b back once SERVING"
    );

    // Both out: the pool has no backend, which a gRPC client sees as UNAVAILABLE.
    for backend in [&a, &b] {
        backend
            .reporter
            .set_service_status("app.Svc", tonic_health::ServingStatus::NotServing)
            .await;
    }
    assert!(
        until_answer(&sluice, Duration::from_secs(10), |r| {
            r.as_ref().is_err_and(|e| e.code() == Code::Unavailable)
        })
        .await,
        "no backend: UNAVAILABLE"
    );
}

/// Metrics count sluice's own gRPC answers by the HTTP status the failure would have had
/// (docs/grpc.md), not by the 200 sent.
#[tokio::test]
async fn metrics_count_grpc_failures_by_their_would_be_status() {
    let dead = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let toml = config_with(
        &[dead],
        "[admin]\nbind = \"127.0.0.1:0\"",
        "",
        "protocol = \"h2\"\n",
    );
    let sluice = TestSluice::start(&toml);
    let mut client = HealthClient::with_origin(channel(), origin(&sluice));
    for _ in 0..2 {
        let err = check(&mut client, "").await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let url = format!("http://{}/metrics", sluice.admin.unwrap());
    let failed = "sluice_requests_total{listener=\"web\",pool=\"app\",backend=\"\",code=\"502\"} 2";
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = support::get(&url).await.text();
        if text.contains(failed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(text.contains(failed), "{text}");
    assert!(!text.contains("code=\"200\""), "{text}");
}

/// A call's own short deadline is the client's choice, not the backend's failure: it must not
/// feed outlier detection (a client could otherwise eject every backend with `grpc-timeout: 1n`).
#[tokio::test]
async fn a_missed_grpc_deadline_does_not_eject_the_backend() {
    let (a, b) = (GrpcBackend::start("a"), GrpcBackend::start("b"));
    let pool =
        "[pool.app.outlier_detection]\nconsecutive_failures = 1\nmax_ejected_percent = 100\n";
    let sluice = sluice_for(&[a.addr, b.addr], pool);
    for _ in 0..4 {
        let err = chat(&sluice, true).await.unwrap_err();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    }
    // Both backends still take calls.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..4 {
        seen.insert(who_answers(&sluice).await.expect("answered"));
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn client_streams_arrive_whole_before_the_single_answer() {
    let backend = GrpcBackend::start("a");
    let sluice = sluice_for(&[backend.addr], "");
    let mut grpc = tonic::client::Grpc::with_origin(channel(), origin(&sluice));
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let call = tokio::spawn(async move {
        grpc.client_streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(COLLECT),
            ProstCodec::<Msg, Msg>::default(),
        )
        .await
    });
    // Sent one by one, while the call is open; the answer comes once the stream ends.
    for text in ["one", "two", "three"] {
        tx.send(msg(text)).await.unwrap();
    }
    drop(tx);
    let answer = tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .expect("answered in time")
        .unwrap()
        .expect("the call succeeded");
    assert_eq!(answer.into_inner().service, "a:one,two,three");
}
