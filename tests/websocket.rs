//! WebSocket through sluice (issue 8, point 3), with tokio-tungstenite as the client and as the
//! backend: frames echo both ways once the backend answered 101; the backend sees the upgrade
//! headers; a backend refusing the upgrade is answered normally and no tunnel opens; an idle
//! tunnel is closed after the listener's `idle_timeout`; an open tunnel outlives a reload, counts
//! as a request in flight, and is closed at shutdown once the grace period is over.
//!
//! Readiness is polled with deadlines, never slept for. The same tunnel works behind an HTTPS
//! listener (`wss://`).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use support::reload::{admin_request, metrics, Reloadable, ADMIN};
use support::tls::Pki;
use support::{config_with, eventually, TestBackend, TestSluice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket echo server on its own thread: every text or binary message comes back as sent.
struct EchoBackend {
    addr: SocketAddr,
    /// The headers of every upgrade request it accepted.
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    shutdown: CancellationToken,
}

impl EchoBackend {
    fn start() -> EchoBackend {
        Self::start_with(None)
    }

    /// With `tls`, every connection is TLS first (`wss` to the backend).
    fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> EchoBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (record, stop) = (seen.clone(), shutdown.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let stream = tokio::select! {
                        accepted = listener.accept() => accepted.unwrap().0,
                        () = stop.cancelled() => return,
                    };
                    let (record, tls) = (record.clone(), tls.clone());
                    tokio::spawn(async move {
                        match tls {
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    echo_session(stream, record).await;
                                }
                            }
                            None => echo_session(stream, record).await,
                        }
                    });
                }
            });
        });
        EchoBackend {
            addr,
            seen,
            shutdown,
        }
    }

    fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

/// One WebSocket connection of the echo backend: records the upgrade request's headers, then
/// sends every text and binary message back.
async fn echo_session<S>(stream: S, record: Arc<Mutex<Vec<HeaderMap>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // tungstenite's callback type, as it is.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        record.lock().unwrap().push(req.headers().clone());
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        let data = message.is_text() || message.is_binary();
        if data && ws.send(message).await.is_err() {
            return;
        }
    }
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn connect(addr: SocketAddr) -> Client {
    let url = format!("ws://{addr}/chat?room=1");
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("the handshake finished in time")
    .expect("the handshake succeeded");
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().contains_key("x-request-id"),
        "{response:?}"
    );
    ws
}

/// Sends `message` and expects it back within a bound.
async fn echo<S>(ws: &mut WebSocketStream<S>, message: Message)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(message.clone()).await.expect("sent");
    let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("the echo came back in time")
        .expect("the tunnel is open")
        .expect("a valid frame");
    assert_eq!(back, message);
}

/// Waits for the tunnel to be closed under the client: the stream ends or fails. Returns when.
async fn closed_within(ws: &mut Client, bound: Duration) -> Instant {
    let deadline = tokio::time::Instant::now() + bound;
    match tokio::time::timeout_at(deadline, ws.next()).await {
        Err(_) => panic!("the tunnel was still open after {bound:?}"),
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => Instant::now(),
        Ok(Some(Ok(other))) => panic!("unexpected frame {other:?}"),
    }
}

/// Waits for sluice's close frame (1001, going away) and then the end of the connection.
async fn going_away_within(ws: &mut Client, bound: Duration) -> Instant {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let deadline = tokio::time::Instant::now() + bound;
    match tokio::time::timeout_at(deadline, ws.next()).await {
        Err(_) => panic!("the tunnel was still open after {bound:?}"),
        Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, CloseCode::Away),
        Ok(other) => panic!("expected a close frame, got {other:?}"),
    }
    let when = Instant::now();
    // Then the stream ends.
    closed_within(ws, Duration::from_secs(5)).await;
    when
}

fn upgrade_config(backend: SocketAddr, top: &str, listener: &str) -> String {
    config_with(&[backend], top, listener, "")
}

#[tokio::test]
async fn text_and_binary_frames_echo_through_the_tunnel() {
    let backend = EchoBackend::start();
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", ""));
    let mut ws = connect(sluice.addr()).await;
    echo(&mut ws, Message::text("hello through sluice")).await;
    echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255, 254])).await;
    // Larger than any one read, in both directions at once.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    echo(&mut ws, Message::binary(big)).await;
    for i in 0..50 {
        echo(&mut ws, Message::text(format!("message {i}"))).await;
    }
    ws.close(None).await.unwrap();
    closed_within(&mut ws, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn the_backend_sees_the_upgrade_headers() {
    let backend = EchoBackend::start();
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", ""));
    let mut ws = connect(sluice.addr()).await;
    echo(&mut ws, Message::text("hi")).await;
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0];
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    assert!(
        get("connection").eq_ignore_ascii_case("upgrade"),
        "{headers:?}"
    );
    assert!(
        get("upgrade").eq_ignore_ascii_case("websocket"),
        "{headers:?}"
    );
    assert_eq!(get("sec-websocket-version"), "13");
    assert!(!get("sec-websocket-key").is_empty(), "{headers:?}");
    assert_eq!(get("x-forwarded-for"), "127.0.0.1");
    assert!(!get("x-request-id").is_empty(), "{headers:?}");
}

/// Sends one raw HTTP/1.1 request and reads one response (head and `content-length` body).
async fn exchange_raw(stream: &mut TcpStream, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "connection closed after {text:?}");
        got.extend_from_slice(&buf[..n]);
    }
}

const UPGRADE_REQUEST: &str = "GET /chat HTTP/1.1\r\nhost: example.test\r\nconnection: Upgrade\r\n\
     upgrade: websocket\r\nsec-websocket-version: 13\r\n\
     sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

#[tokio::test]
async fn a_refused_upgrade_is_answered_normally_and_opens_no_tunnel() {
    // An ordinary HTTP backend: it answers the upgrade request with 200 and its name.
    let plain = TestBackend::start("plain");
    let sluice = TestSluice::start(&upgrade_config(plain.addr, "", ""));

    let url = format!("ws://{}/chat", sluice.addr());
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 200);
            assert_eq!(response.body().as_deref(), Some(&b"plain"[..]));
        }
        other => panic!("expected the backend's 200, got {other:?}"),
    }

    // On a raw connection: the answer is the backend's, without upgrade headers, and the
    // connection goes on speaking HTTP.
    let mut stream = TcpStream::connect(sluice.addr()).await.unwrap();
    let first = exchange_raw(&mut stream, UPGRADE_REQUEST).await;
    assert!(first.starts_with("HTTP/1.1 200 OK\r\n"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("upgrade"), "{first}");
    let second = exchange_raw(
        &mut stream,
        "GET /after HTTP/1.1\r\nhost: example.test\r\n\r\n",
    )
    .await;
    assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    assert!(second.ends_with("plain"), "{second}");
    let seen = plain.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].uri.path(), "/after");
    // The backend did see the upgrade request as one.
    assert_eq!(seen[1].headers["upgrade"], "websocket");
}

#[tokio::test]
async fn other_upgrades_are_stripped_and_not_tunnelled() {
    let plain = TestBackend::start("plain");
    let sluice = TestSluice::start(&upgrade_config(plain.addr, "", ""));
    let mut stream = TcpStream::connect(sluice.addr()).await.unwrap();
    let request = "GET /x HTTP/1.1\r\nhost: example.test\r\nconnection: upgrade\r\n\
                   upgrade: foo/2\r\n\r\n";
    let answer = exchange_raw(&mut stream, request).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    let seen = plain.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("upgrade"), "{seen:?}");
    assert!(!seen[0].headers.contains_key("connection"), "{seen:?}");
    // A WebSocket upgrade over HTTP/1.0 is not one either.
    let request = "GET /y HTTP/1.0\r\nhost: example.test\r\nconnection: upgrade\r\n\
                   upgrade: websocket\r\n\r\n";
    let mut stream = TcpStream::connect(sluice.addr()).await.unwrap();
    let answer = exchange_raw(&mut stream, request).await;
    assert!(
        answer.starts_with("HTTP/1.0 200 OK\r\n") || answer.starts_with("HTTP/1.1 200 OK\r\n"),
        "{answer}"
    );
    assert!(!plain.seen()[1].headers.contains_key("upgrade"));
}

#[tokio::test]
async fn a_backend_answering_400_gets_its_answer_through() {
    // A raw backend that refuses every upgrade with a 400.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = "HTTP/1.1 400 Bad Request\r\ncontent-length: 7\r\n\r\nno ws\r\n";
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let sluice = TestSluice::start(&upgrade_config(addr, "", ""));
    let mut stream = TcpStream::connect(sluice.addr()).await.unwrap();
    let answer = exchange_raw(&mut stream, UPGRADE_REQUEST).await;
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("no ws\r\n"), "{answer}");
}

#[tokio::test]
async fn an_idle_tunnel_is_closed_after_the_idle_timeout() {
    let backend = EchoBackend::start();
    let config = upgrade_config(backend.addr, "", "idle_timeout = \"700ms\"");
    let sluice = TestSluice::start(&config);
    let mut ws = connect(sluice.addr()).await;
    // Traffic keeps it open past the timeout.
    let start = Instant::now();
    loop {
        echo(&mut ws, Message::text("still here")).await;
        if start.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last byte went through just now.
    let quiet = Instant::now();
    let closed = going_away_within(&mut ws, Duration::from_secs(5)).await;
    let idle = closed - quiet;
    assert!(
        idle >= Duration::from_millis(650),
        "closed after only {idle:?} of silence"
    );
    drop(sluice);
}

#[tokio::test]
async fn an_open_tunnel_outlives_a_reload_and_counts_as_in_flight() {
    let backend = EchoBackend::start();
    let other = TestBackend::start("other");
    let text = upgrade_config(backend.addr, ADMIN, "");
    let sluice = Reloadable::start(&text);
    let admin = sluice.admin();
    let mut ws = connect(sluice.addr()).await;
    echo(&mut ws, Message::text("before")).await;

    let pools = admin_request(admin, "GET", "/api/pools").text();
    assert!(pools.contains("\"active_requests\":1"), "{pools}");

    // A different config: another backend and another algorithm (the websocket backend is kept
    // so that its in-flight count can be seen to carry over).
    let changed = config_with(
        &[backend.addr, other.addr],
        ADMIN,
        "",
        "algorithm = \"least_requests\"",
    );
    let generation = sluice.generation();
    sluice.reload_ok(&changed);
    assert!(sluice.generation() > generation);
    for i in 0..20 {
        echo(&mut ws, Message::text(format!("after reload {i}"))).await;
    }
    echo(&mut ws, Message::binary(vec![7u8; 10_000])).await;
    let pools = admin_request(admin, "GET", "/api/pools").text();
    assert!(pools.contains("\"active_requests\":1"), "{pools}");

    ws.close(None).await.unwrap();
    closed_within(&mut ws, Duration::from_secs(5)).await;
    drop(ws);
    // The tunnel ended: it is counted once, with status 101, and no longer in flight.
    assert!(
        eventually(Duration::from_secs(5), || {
            let text = metrics(admin);
            text.lines()
                .any(|l| l.starts_with("sluice_requests_total{") && l.contains("code=\"101\""))
                && admin_request(admin, "GET", "/api/pools")
                    .text()
                    .matches("\"active_requests\":0")
                    .count()
                    == 2
        }),
        "{}",
        metrics(admin)
    );
}

#[tokio::test]
async fn shutdown_closes_an_open_tunnel_after_the_grace_period() {
    let backend = EchoBackend::start();
    let config = upgrade_config(backend.addr, "[server]\nshutdown_timeout = \"1s\"\n", "");
    let sluice = TestSluice::start(&config);
    let mut ws = connect(sluice.addr()).await;
    echo(&mut ws, Message::text("before shutdown")).await;
    let begun = Instant::now();
    sluice.begin_shutdown();
    // Within the grace period the tunnel still carries frames.
    echo(&mut ws, Message::text("during the grace period")).await;
    let closed = going_away_within(&mut ws, Duration::from_secs(5)).await;
    let took = closed - begun;
    assert!(
        took >= Duration::from_millis(800),
        "closed {took:?} after shutdown began, before the grace period ended"
    );
    let stopped = sluice.stop();
    assert!(stopped < Duration::from_secs(3), "{stopped:?}");
}

#[tokio::test]
async fn wss_through_an_https_listener() {
    use support::tls::{client_config, connect as tls_connect};
    let pki = Pki::new("wss");
    let site = pki.issue("site", &["ws.test"]);
    let backend = EchoBackend::start();
    let listener = format!(
        "\n[listener.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        site.cert.display(),
        site.key.display()
    );
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", &listener));
    // Browsers open WebSockets over HTTP/1.1 (sluice does not offer extended CONNECT on h2).
    let stream = tls_connect(
        sluice.addr(),
        client_config(&pki.ca, &[b"http/1.1"]),
        "ws.test",
        true,
    )
    .await
    .unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("wss://ws.test/chat", stream)
        .await
        .expect("the handshake succeeded");
    assert_eq!(response.status(), 101);
    echo(&mut ws, Message::text("over TLS")).await;
    echo(&mut ws, Message::binary(vec![42u8; 70_000])).await;
    let seen = backend.seen();
    assert_eq!(seen[0]["x-forwarded-proto"], "https");
    assert_eq!(seen[0]["upgrade"], "websocket");
}

#[tokio::test]
async fn a_tunnel_to_a_tls_backend() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pki = Pki::new("wss-backend");
    let cert = pki.issue("backend", &["backend.internal"]);
    let chain: Vec<_> = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(support::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let backend = EchoBackend::start_with(Some(Arc::new(config).into()));
    let pool = format!(
        "\n[pool.app.tls]\nserver_name = \"backend.internal\"\nca = \"{}\"\n",
        pki.ca.display()
    );
    let sluice = TestSluice::start(&config_with(&[backend.addr], "", "", &pool));
    let mut ws = connect(sluice.addr()).await;
    echo(&mut ws, Message::text("to a TLS backend")).await;
    echo(&mut ws, Message::binary(vec![9u8; 100_000])).await;
    assert_eq!(backend.seen().len(), 1);
}

// --- WebSocket over HTTP/2 (RFC 8441 extended CONNECT) ------------------------------------

/// An HTTP/2 (prior knowledge) connection to sluice, once sluice's SETTINGS allowed extended
/// CONNECT (polled with a deadline).
async fn h2_websocket_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("the connection is up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !client.is_extended_connect_protocol_enabled() {
        assert!(
            Instant::now() < deadline,
            "sluice never advertised SETTINGS_ENABLE_CONNECT_PROTOCOL"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        client = client.ready().await.expect("the connection is up");
    }
    client
}

/// Sends an extended CONNECT for a WebSocket to `path` and waits for the answer's head.
async fn h2_websocket_connect(
    client: &mut h2::client::SendRequest<bytes::Bytes>,
    authority: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> (http::Response<h2::RecvStream>, h2::SendStream<bytes::Bytes>) {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{authority}{path}"))
        .header("sec-websocket-version", "13");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let mut request = request.body(()).unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let (response, send) = client
        .send_request(request, false)
        .expect("the request was sent");
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered in time")
        .expect("answered");
    (response, send)
}

/// A client's frame: FIN, `opcode`, masked with `mask` (RFC 6455 section 5.3). Payloads under
/// 126 bytes only.
fn masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    frame.extend(mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Reads one whole server frame (unmasked, payload under 126 bytes) from `recv`, keeping what
/// follows it in `buffer`: its first byte and payload.
async fn read_server_frame(recv: &mut h2::RecvStream, buffer: &mut Vec<u8>) -> (u8, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if buffer.len() >= 2 {
            assert_eq!(buffer[1] & 0x80, 0, "a server's frames are not masked");
            let len = usize::from(buffer[1] & 0x7f);
            assert!(len < 126, "short frames only in this test");
            if buffer.len() >= 2 + len {
                let first = buffer[0];
                let payload = buffer[2..2 + len].to_vec();
                buffer.drain(..2 + len);
                return (first, payload);
            }
        }
        let chunk = tokio::time::timeout_at(deadline, recv.data())
            .await
            .expect("a frame arrived in time")
            .expect("the stream is still open")
            .expect("data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn an_http2_extended_connect_websocket_echoes_through_an_http1_backend() {
    let backend = EchoBackend::start();
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let authority = format!("ws.example.test:{}", sluice.addr().port());
    let (response, mut send) = h2_websocket_connect(
        &mut client,
        &authority,
        "/chat?room=2",
        &[("sec-websocket-protocol", "chat")],
    )
    .await;
    assert_eq!(response.status(), 200, "{response:?}");
    assert!(
        response.headers().contains_key("x-request-id"),
        "{response:?}"
    );
    let mut recv = response.into_body();
    let mut buffer = Vec::new();

    for (i, text) in ["hello over h2", "", "second message"].iter().enumerate() {
        let frame = masked_frame(0x1, text.as_bytes(), [0x37, 0xfa, 0x21, i as u8]);
        send.send_data(frame.into(), false).unwrap();
        let (first, payload) = read_server_frame(&mut recv, &mut buffer).await;
        assert_eq!(first, 0x81, "FIN + text");
        assert_eq!(payload, text.as_bytes());
    }
    // A binary frame, and the close handshake through the tunnel.
    send.send_data(
        masked_frame(0x2, &[0, 1, 2, 255], [9, 8, 7, 6]).into(),
        false,
    )
    .unwrap();
    let (first, payload) = read_server_frame(&mut recv, &mut buffer).await;
    assert_eq!((first, payload), (0x82, vec![0, 1, 2, 255]));
    send.send_data(masked_frame(0x8, &[0x03, 0xe8], [1, 2, 3, 4]).into(), false)
        .unwrap();
    let (first, payload) = read_server_frame(&mut recv, &mut buffer).await;
    assert_eq!(first, 0x88, "the backend's close frame");
    assert_eq!(payload, [0x03, 0xe8]);

    // The backend was asked for an HTTP/1.1 upgrade: sluice's own key, the client's version,
    // subprotocol, authority and path.
    let seen = backend.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let headers = &seen[0];
    assert_eq!(headers["upgrade"], "websocket");
    assert!(
        headers["connection"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("upgrade"),
        "{headers:?}"
    );
    assert_eq!(headers["sec-websocket-version"], "13");
    assert_eq!(headers["sec-websocket-protocol"], "chat");
    assert_eq!(headers["host"], authority.as_str());
    assert_eq!(headers["sec-websocket-key"].len(), 24, "{headers:?}");
}

#[tokio::test]
async fn each_http2_websocket_gets_a_fresh_key_and_streams_run_side_by_side() {
    let backend = EchoBackend::start();
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let authority = sluice.addr().to_string();
    let (first, mut send_first) = h2_websocket_connect(&mut client, &authority, "/a", &[]).await;
    let (second, mut send_second) = h2_websocket_connect(&mut client, &authority, "/b", &[]).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (mut recv_first, mut recv_second) = (first.into_body(), second.into_body());
    let (mut buf_first, mut buf_second) = (Vec::new(), Vec::new());
    send_second
        .send_data(masked_frame(0x1, b"to b", [1, 1, 1, 1]).into(), false)
        .unwrap();
    send_first
        .send_data(masked_frame(0x1, b"to a", [2, 2, 2, 2]).into(), false)
        .unwrap();
    assert_eq!(
        read_server_frame(&mut recv_second, &mut buf_second).await.1,
        b"to b"
    );
    assert_eq!(
        read_server_frame(&mut recv_first, &mut buf_first).await.1,
        b"to a"
    );
    // A plain request on the same connection is still answered.
    let request = http::Request::get(format!("http://{authority}/plain"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    // (The echo backend drops a non-WebSocket request unanswered: sluice's 502.)
    assert_eq!(response.status(), 502, "{response:?}");
    // The tunnels are still open.
    send_first
        .send_data(masked_frame(0x1, b"again", [3, 3, 3, 3]).into(), false)
        .unwrap();
    assert_eq!(
        read_server_frame(&mut recv_first, &mut buf_first).await.1,
        b"again"
    );
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0]["sec-websocket-key"], seen[1]["sec-websocket-key"]);
}

/// A raw HTTP/1.1 backend answering every request's head with `answer`, then holding the
/// connection open until the peer closes it.
async fn raw_backend(answer: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream.write_all(answer.as_bytes()).await;
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_backend_refusing_an_http2_websocket_gives_its_status() {
    let addr = raw_backend("HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nno ws").await;
    let sluice = TestSluice::start(&upgrade_config(addr, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let (response, _send) =
        h2_websocket_connect(&mut client, &sluice.addr().to_string(), "/", &[]).await;
    assert_eq!(response.status(), 403, "{response:?}");
    let mut body = response.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(got, b"no ws");
}

#[tokio::test]
async fn an_http2_websocket_needs_a_real_switch_from_the_backend() {
    // A 2xx that is not a 101 would read as an open tunnel to an HTTP/2 client: 502.
    let plain = TestBackend::start("plain");
    let sluice = TestSluice::start(&upgrade_config(plain.addr, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let (response, _send) =
        h2_websocket_connect(&mut client, &sluice.addr().to_string(), "/", &[]).await;
    assert_eq!(response.status(), 502, "{response:?}");

    // A 101 whose Sec-WebSocket-Accept does not answer sluice's key: 502.
    let wrong = raw_backend(
        "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
    )
    .await;
    let sluice = TestSluice::start(&upgrade_config(wrong, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let (response, _send) =
        h2_websocket_connect(&mut client, &sluice.addr().to_string(), "/", &[]).await;
    assert_eq!(response.status(), 502, "{response:?}");
}

#[tokio::test]
async fn other_extended_connect_protocols_are_refused() {
    let backend = EchoBackend::start();
    let sluice = TestSluice::start(&upgrade_config(backend.addr, "", ""));
    let mut client = h2_websocket_client(sluice.addr()).await;
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{}/", sluice.addr()))
        .body(())
        .unwrap();
    request
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("connect-udp"));
    let (response, _send) = client.send_request(request, false).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 400, "{response:?}");
    assert!(backend.seen().is_empty());
}

/// Expects sluice's close frame (1001, going away) on an HTTP/2 WebSocket stream within 5 s and
/// says when it came.
async fn h2_going_away(recv: &mut h2::RecvStream, buffer: &mut Vec<u8>) -> Instant {
    let (first, payload) = read_server_frame(recv, buffer).await;
    let when = Instant::now();
    assert_eq!(first, 0x88, "a close frame");
    assert_eq!(payload, [0x03, 0xe9], "status 1001");
    when
}

#[tokio::test]
async fn an_idle_http2_websocket_is_closed_after_the_idle_timeout() {
    let backend = EchoBackend::start();
    let config = upgrade_config(backend.addr, "", "idle_timeout = \"700ms\"");
    let sluice = TestSluice::start(&config);
    let mut client = h2_websocket_client(sluice.addr()).await;
    let (response, mut send) =
        h2_websocket_connect(&mut client, &sluice.addr().to_string(), "/", &[]).await;
    assert_eq!(response.status(), 200);
    let (mut recv, mut buffer) = (response.into_body(), Vec::new());
    // Traffic keeps it open past the timeout.
    let start = Instant::now();
    let mut i = 0u8;
    loop {
        send.send_data(masked_frame(0x1, b"still here", [i, 1, 2, 3]).into(), false)
            .unwrap();
        let (_, payload) = read_server_frame(&mut recv, &mut buffer).await;
        assert_eq!(payload, b"still here");
        if start.elapsed() >= Duration::from_millis(1500) {
            break;
        }
        i = i.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last byte went through just now.
    let quiet = Instant::now();
    let idle = h2_going_away(&mut recv, &mut buffer).await - quiet;
    assert!(
        idle >= Duration::from_millis(650),
        "closed after only {idle:?} of silence"
    );
}

#[tokio::test]
async fn shutdown_closes_an_http2_websocket_after_the_grace_period() {
    let backend = EchoBackend::start();
    let config = upgrade_config(backend.addr, "[server]\nshutdown_timeout = \"1s\"\n", "");
    let sluice = TestSluice::start(&config);
    let mut client = h2_websocket_client(sluice.addr()).await;
    let (response, mut send) =
        h2_websocket_connect(&mut client, &sluice.addr().to_string(), "/", &[]).await;
    assert_eq!(response.status(), 200);
    let (mut recv, mut buffer) = (response.into_body(), Vec::new());
    let begun = Instant::now();
    sluice.begin_shutdown();
    // Within the grace period the tunnel still carries frames.
    send.send_data(masked_frame(0x1, b"during", [5, 6, 7, 8]).into(), false)
        .unwrap();
    assert_eq!(read_server_frame(&mut recv, &mut buffer).await.1, b"during");
    let took = h2_going_away(&mut recv, &mut buffer).await - begun;
    assert!(
        took >= Duration::from_millis(800),
        "closed {took:?} after shutdown began, before the grace period ended"
    );
    let stopped = sluice.stop();
    assert!(stopped < Duration::from_secs(3), "{stopped:?}");
}
