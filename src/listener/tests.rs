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
        state.verdict(start, &T),
        Verdict::Wait(start + T.header_read)
    );
    assert_eq!(state.verdict(start + T.header_read, &T), Verdict::SlowHead);

    let active = state.request_started(false);
    let later = start + Duration::from_secs(500);
    assert_eq!(state.verdict(later, &T), Verdict::Wait(later + T.send));
    // A response write waiting on a client that does not read: cut off after `send`.
    state.on_write(false);
    let blocked = start;
    assert_eq!(
        state.verdict(blocked + Duration::from_secs(1), &T),
        Verdict::Wait(blocked + T.send)
    );
    assert_eq!(state.verdict(blocked + T.send, &T), Verdict::SlowRead);
    // Progress clears it.
    state.on_write(true);
    assert_eq!(state.verdict(later, &T), Verdict::Wait(later + T.send));
    tokio::time::advance(Duration::from_secs(5)).await;
    drop(active);
    // Idle: measured from the end of the last request.
    let idle_from = start + Duration::from_secs(5);
    assert_eq!(
        state.verdict(idle_from, &T),
        Verdict::Wait(idle_from + T.idle)
    );
    assert_eq!(state.verdict(idle_from + T.idle, &T), Verdict::Idle);

    // The first byte of the next head switches to the header timeout.
    tokio::time::advance(Duration::from_secs(20)).await;
    state.on_read();
    let head_from = idle_from + Duration::from_secs(20);
    assert_eq!(
        state.verdict(head_from, &T),
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let io = WatchedIo {
        stream: Downstream::Plain(server),
        state: Arc::new(ConnState::new(framing::Limits::NONE, None)),
        answered: false,
        unflushed: false,
        refusal: Vec::new(),
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
    assert_eq!(state.verdict(now, &T), Verdict::Wait(now + T.idle));
}
