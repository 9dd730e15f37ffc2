use super::protocol::{classify, sniff, PREFACE};
use super::*;

const T: Timeouts = Timeouts {
    header_read: Duration::from_secs(10),
    idle: Duration::from_secs(60),
    send: Duration::from_secs(30),
};

#[tokio::test(start_paused = true)]
async fn phases_give_the_right_deadlines() {
    let state = Arc::new(ConnState::new(framing::Limits::NONE, None));
    let start = state.epoch;
    // A fresh connection must send its head within the header timeout.
    assert_eq!(
        state.verdict(start, &T, false),
        Verdict::Wait(start + T.header_read)
    );
    assert_eq!(
        state.verdict(start + T.header_read, &T, false),
        Verdict::SlowHead
    );

    let active = state.request_started(false);
    let later = start + Duration::from_secs(500);
    assert_eq!(
        state.verdict(later, &T, false),
        Verdict::Wait(later + T.send)
    );
    // A response write waiting on a client that does not read: cut off after `send`.
    state.on_write(false);
    let blocked = start;
    assert_eq!(
        state.verdict(blocked + Duration::from_secs(1), &T, false),
        Verdict::Wait(blocked + T.send)
    );
    assert_eq!(
        state.verdict(blocked + T.send, &T, false),
        Verdict::SlowRead
    );
    // Progress clears it.
    state.on_write(true);
    assert_eq!(
        state.verdict(later, &T, false),
        Verdict::Wait(later + T.send)
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(active);
    // Idle: measured from the end of the last request.
    let idle_from = start + Duration::from_secs(5);
    assert_eq!(
        state.verdict(idle_from, &T, false),
        Verdict::Wait(idle_from + T.idle)
    );
    assert_eq!(state.verdict(idle_from + T.idle, &T, false), Verdict::Idle);
    // A connection that may go dormant does so after `REST_AFTER` of that idle time.
    assert_eq!(
        state.verdict(idle_from, &T, true),
        Verdict::Wait(idle_from + REST_AFTER)
    );
    assert_eq!(
        state.verdict(idle_from + REST_AFTER, &T, true),
        Verdict::Rest
    );
    // Not when the idle timeout comes first.
    let short = Timeouts {
        idle: REST_AFTER / 2,
        ..T
    };
    assert_eq!(
        state.verdict(idle_from + REST_AFTER / 2, &short, true),
        Verdict::Idle
    );

    // The first byte of the next head switches to the header timeout.
    tokio::time::advance(Duration::from_secs(20)).await;
    state.on_read();
    let head_from = idle_from + Duration::from_secs(20);
    assert_eq!(
        state.verdict(head_from, &T, false),
        Verdict::Wait(head_from + T.header_read)
    );
}

#[test]
fn listener_sockets_have_nodelay_and_share_ports_per_core() {
    let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
    let addr = first.local_addr().unwrap();
    // Accepted sockets inherit TCP_NODELAY from the listening socket on Linux.
    assert!(socket2::SockRef::from(&first).tcp_nodelay().unwrap());
    let second = bind(addr, true).unwrap();
    assert_eq!(second.local_addr().unwrap(), addr);
    assert!(
        bind(addr, false).is_err(),
        "without SO_REUSEPORT the port is taken"
    );
}

async fn socket_pair() -> (WatchedIo, TcpStream) {
    let (client, server) = tcp_pair().await;
    let io = WatchedIo {
        stream: Downstream::Plain(server),
        state: Arc::new(ConnState::new(framing::Limits::NONE, None)),
        answered: false,
        unflushed: false,
        refusal: Vec::new(),
        replay: bytes::Bytes::new(),
        scan_replay: false,
        scanning: true,
    };
    (io, client)
}

const REFUSED: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";

#[tokio::test]
async fn a_refusal_never_overtakes_unflushed_output() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut io, mut client) = socket_pair().await;
    // hyper handed over part of a response and has not completed a flush since.
    io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
    client.write_all(REFUSED).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = io.read(&mut buf).await.unwrap();
    assert!(
        n > 0,
        "the head goes to hyper, and the service refuses it in order"
    );
    assert!(!io.answered);
    assert!(io.state.framing_verdict().is_err());
}

#[tokio::test]
async fn a_refusal_after_a_flush_is_answered_directly() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut io, mut client) = socket_pair().await;
    io.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .await
        .unwrap();
    io.flush().await.unwrap();
    client.write_all(REFUSED).await.unwrap();
    let mut buf = [0u8; 1024];
    assert_eq!(
        io.read(&mut buf).await.unwrap(),
        0,
        "hyper sees the end of the stream"
    );
    assert!(io.answered);
    io.shutdown().await.unwrap();
    let mut got = String::new();
    client.read_to_string(&mut got).await.unwrap();
    let refusal = got
        .strip_prefix("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        .unwrap();
    assert!(
        refusal.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{refusal}"
    );
    assert!(refusal.contains("x-request-id: "), "{refusal}");
    assert!(
        refusal.ends_with("more than one Content-Length header\n"),
        "{refusal}"
    );
}

#[tokio::test(start_paused = true)]
async fn h2_frames_between_requests_are_not_heads() {
    let state = Arc::new(ConnState::new(framing::Limits::NONE, None));
    drop(state.request_started(true));
    state.on_read();
    let now = Instant::now();
    assert_eq!(state.verdict(now, &T, false), Verdict::Wait(now + T.idle));
}

/// The watchdog times an HTTP/1 request's deadline: never before it (rounded up to the
/// millisecond), cleared with the guard; HTTP/2 requests are not handed to it.
#[tokio::test(start_paused = true)]
async fn request_deadlines_are_rounded_up_and_cleared() {
    let state = Arc::new(ConnState::new(framing::Limits::NONE, None));
    let deadline = state.epoch + Duration::from_micros(1_500);
    let watched = state.watch_request(deadline);
    assert!(watched.is_some());
    assert_eq!(state.request_deadline.load(Ordering::Relaxed), 2);
    assert!(state.at(2) >= deadline);
    drop(watched);
    assert_eq!(state.request_deadline.load(Ordering::Relaxed), NONE);
    let exact = state.watch_request(state.epoch + Duration::from_millis(7));
    assert_eq!(state.request_deadline.load(Ordering::Relaxed), 7);
    drop(exact);

    drop(state.request_started(true));
    assert!(state.watch_request(deadline).is_none());
    assert_eq!(state.request_deadline.load(Ordering::Relaxed), NONE);
}

#[test]
fn first_bytes_choose_the_protocol() {
    let cases: &[(&[u8], bool, Option<Protocol>)] = &[
        (b"GET / HTTP/1.1\r\n", false, Some(Protocol::Http1)),
        // One byte that differs from the preface is enough.
        (b"G", false, Some(Protocol::Http1)),
        (b"PO", false, Some(Protocol::Http1)),
        (b"PRI /x HTTP/1.1\r\n", false, Some(Protocol::Http1)),
        // A proper prefix of the preface: wait for more, unless nothing more can come.
        (b"P", false, None),
        (b"PRI * HTTP/2.0\r\n", false, None),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r", false, None),
        (b"PRI * HTTP/2.0\r\n", true, Some(Protocol::Http1)),
        (b"", true, Some(Protocol::Http1)),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            false,
            Some(Protocol::Http2),
        ),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04",
            false,
            Some(Protocol::Http2),
        ),
        (
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            true,
            Some(Protocol::Http2),
        ),
    ];
    for &(first, ended, want) in cases {
        assert_eq!(
            classify(first, ended),
            want,
            "{:?} (ended: {ended})",
            String::from_utf8_lossy(first)
        );
    }
}

/// A connected pair of real sockets: (client side, server side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn sniffing_waits_for_the_whole_preface_and_hands_back_what_it_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, mut server) = tcp_pair().await;
    let mut sniffing = Box::pin(async { sniff(&mut server).await.unwrap() });
    client.write_all(&PREFACE[..10]).await.unwrap();
    // Ten bytes of the preface settle nothing: the sniff keeps waiting for more.
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut sniffing)
            .await
            .is_err(),
        "a partial preface was classified"
    );
    client.write_all(&PREFACE[10..]).await.unwrap();
    let (protocol, first) = tokio::time::timeout(Duration::from_secs(5), sniffing)
        .await
        .expect("the whole preface was not recognised");
    assert_eq!(protocol, Protocol::Http2);
    // Every byte read is handed back, in order, and the socket holds what came after.
    assert_eq!(&first[..], PREFACE);
    client.write_all(b"\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut rest = [0u8; 9];
    server.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"\0\0\0\x04\0\0\0\0\0");
}

#[tokio::test]
async fn sniffing_settles_for_http1_when_a_prefix_ends_the_stream() {
    use tokio::io::AsyncWriteExt;
    let (mut client, mut server) = tcp_pair().await;
    client.write_all(b"PRI * HTTP/2").await.unwrap();
    client.shutdown().await.unwrap();
    let (protocol, first) = tokio::time::timeout(Duration::from_secs(5), sniff(&mut server))
        .await
        .expect("sniffing hung on a stream that ended inside the preface")
        .unwrap();
    assert_eq!(protocol, Protocol::Http1);
    assert_eq!(&first[..], b"PRI * HTTP/2");
}

#[tokio::test]
async fn sniffing_tells_http1_from_a_first_byte_shared_with_the_preface() {
    use tokio::io::AsyncWriteExt;
    let (mut client, mut server) = tcp_pair().await;
    let mut sniffing = Box::pin(async { sniff(&mut server).await.unwrap() });
    client.write_all(b"P").await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut sniffing)
            .await
            .is_err(),
        "\"P\" alone was classified"
    );
    client.write_all(b"OST / HTTP/1.1\r\n").await.unwrap();
    let (protocol, first) = tokio::time::timeout(Duration::from_secs(5), sniffing)
        .await
        .expect("POST was not recognised");
    assert_eq!(protocol, Protocol::Http1);
    assert_eq!(&first[..], b"POST / HTTP/1.1\r\n");
}

#[tokio::test]
async fn a_waking_connection_reads_the_replayed_bytes_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut io, mut client) = socket_pair().await;
    io.replay = bytes::Bytes::from_static(b"GET /a HTTP/1.1\r\n");
    client.write_all(b"Host: x\r\n\r\n").await.unwrap();
    let want = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut got = vec![0u8; want.len()];
    io.read_exact(&mut got).await.unwrap();
    assert_eq!(got, want);
    assert!(io.replay.is_empty());
}

#[tokio::test]
async fn going_dormant_does_not_shut_the_socket_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut io, mut client) = socket_pair().await;
    io.state.dormant.store(true, Ordering::Relaxed);
    // What hyper does when it closes its idle connection.
    io.shutdown().await.unwrap();
    io.write_all(b"still open").await.unwrap();
    let mut got = [0u8; 10];
    client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still open");
    // Once awake, a shutdown is a shutdown again.
    io.state.dormant.store(false, Ordering::Relaxed);
    io.shutdown().await.unwrap();
    assert_eq!(client.read(&mut got).await.unwrap(), 0, "no FIN");
}
