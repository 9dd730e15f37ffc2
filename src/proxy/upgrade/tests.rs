use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

#[test]
fn connection_tokens_are_matched_whole_and_case_insensitively() {
    let cases: &[(&[(&str, &str)], bool)] = &[
        (&[("connection", "Upgrade")], true),
        (&[("connection", "keep-alive, Upgrade")], true),
        (
            &[("connection", "keep-alive"), ("connection", "upgrade")],
            true,
        ),
        (&[("connection", "upgraded")], false),
        (&[("connection", "keep-alive")], false),
        (&[], false),
    ];
    for (pairs, expected) in cases {
        assert_eq!(
            has_token(&headers(pairs), header::CONNECTION, b"upgrade"),
            *expected,
            "{pairs:?}"
        );
    }
}

#[test]
fn frames_are_followed_to_their_boundaries_however_the_bytes_are_cut() {
    // A masked 5-byte text frame, a 300-byte binary frame (16-bit length), an empty ping,
    // and a 70 000-byte frame (64-bit length).
    let mut stream = vec![0x81, 0x85, 1, 2, 3, 4];
    stream.extend([0u8; 5]);
    let first = stream.len();
    stream.extend([0x82, 126, 0x01, 0x2c]);
    stream.extend([7u8; 300]);
    let second = stream.len();
    stream.extend([0x89, 0x00]);
    let third = stream.len();
    stream.extend([0x82, 127, 0, 0, 0, 0, 0, 0x01, 0x11, 0x70]);
    stream.extend(vec![1u8; 70_000]);
    let ends = [first, second, third, stream.len()];
    for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
        let mut frames = Frames::default();
        let mut fed = 0;
        for piece in stream.chunks(chunk) {
            frames.feed(piece);
            fed += piece.len();
            assert_eq!(
                frames.at_boundary(),
                ends.contains(&fed),
                "chunk {chunk}, after {fed} bytes"
            );
        }
    }
}

#[test]
fn the_close_frames_are_well_formed() {
    let mut frames = Frames::default();
    frames.feed(&GOING_AWAY_FROM_CLIENT);
    assert!(frames.at_boundary());
    let unmasked: Vec<u8> = GOING_AWAY_FROM_CLIENT[6..]
        .iter()
        .zip(MASK)
        .map(|(b, m)| b ^ m)
        .collect();
    assert_eq!(unmasked, GOING_AWAY_FROM_SERVER[2..]);
    assert_eq!(u16::from_be_bytes([unmasked[0], unmasked[1]]), 1001);
}

#[test]
fn the_accept_value_is_the_rfc_6455_one() {
    // RFC 6455 section 1.3's example.
    assert_eq!(
        accept_of(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    let (a, b) = (new_key(), new_key());
    assert_eq!(a.len(), 24);
    assert_ne!(a, b);
}

#[test]
fn only_websocket_is_tunnelled() {
    assert!(is_websocket(&HeaderValue::from_static("websocket")));
    assert!(is_websocket(&HeaderValue::from_static("WebSocket ")));
    assert!(!is_websocket(&HeaderValue::from_static("h2c")));
    assert!(!is_websocket(&HeaderValue::from_static("websocket, h2c")));
    assert!(!is_websocket(&HeaderValue::from_static("")));
}

#[tokio::test(start_paused = true)]
async fn counted_io_notes_reads_and_their_time() {
    use tokio::io::AsyncReadExt;
    let activity = Activity::new();
    let (a, mut b) = tokio::io::duplex(64);
    let mut counted = Counted::new(a, &activity);
    tokio::time::advance(Duration::from_secs(3)).await;
    b.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 16];
    let n = counted.read(&mut buf).await.unwrap();
    assert_eq!(n, 5);
    assert_eq!(counted.read, 5);
    assert_eq!(activity.last(), activity.epoch + Duration::from_secs(3));
    // Writes are not reads: they neither count nor move the clock.
    tokio::time::advance(Duration::from_secs(2)).await;
    counted.write_all(b"back").await.unwrap();
    assert_eq!(counted.read, 5);
    assert_eq!(activity.last(), activity.epoch + Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn an_idle_tunnel_ends_after_the_idle_timeout_and_not_before() {
    use tokio::io::AsyncReadExt;
    let activity = Activity::new();
    let (client, mut client_peer) = tokio::io::duplex(64);
    let (backend, mut backend_peer) = tokio::io::duplex(64);
    let (mut client, mut backend) = (
        Counted::new(client, &activity),
        Counted::new(backend, &activity),
    );
    let idle = Duration::from_secs(10);
    let token = CancellationToken::new();
    let start = Instant::now();
    let traffic = async {
        // A byte after 6 s moves the deadline to 16 s.
        tokio::time::sleep(Duration::from_secs(6)).await;
        client_peer.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 1];
        backend_peer.read_exact(&mut buf).await.unwrap();
        (client_peer, backend_peer)
    };
    let (end, _peers) = tokio::join!(
        pump(&mut client, &mut backend, &activity, idle, &token, || idle),
        traffic
    );
    assert_eq!(end, End::Idle);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(16) && took < Duration::from_secs(17),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_a_tunnel_only_after_the_grace_period() {
    use tokio::io::AsyncReadExt;
    let activity = Activity::new();
    let (client, mut client_peer) = tokio::io::duplex(64);
    let (backend, mut backend_peer) = tokio::io::duplex(64);
    let (mut client, mut backend) = (
        Counted::new(client, &activity),
        Counted::new(backend, &activity),
    );
    let token = CancellationToken::new();
    let grace = Duration::from_secs(5);
    let start = Instant::now();
    let traffic = async {
        token.cancel();
        // Bytes still flow during the grace period.
        tokio::time::sleep(Duration::from_secs(4)).await;
        backend_peer.write_all(b"late").await.unwrap();
        let mut buf = [0u8; 4];
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late");
        (client_peer, backend_peer)
    };
    let idle = Duration::from_secs(3600);
    let (end, _peers) = tokio::join!(
        pump(&mut client, &mut backend, &activity, idle, &token, || grace),
        traffic
    );
    assert_eq!(end, End::Shutdown);
    assert_eq!(start.elapsed(), grace - GOODBYE_MARGIN);
}
