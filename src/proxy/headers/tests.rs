use super::*;

fn req(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder().version(version).uri(target);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// Version, target, headers, expected verdict.
type Case<'a> = (
    Version,
    &'a str,
    &'a [(&'a str, &'a str)],
    Result<(), &'a str>,
);

#[test]
fn framing_table() {
    const HTTP_10: Version = Version::HTTP_10;
    const HTTP_11: Version = Version::HTTP_11;
    let ok = Ok(());
    let bad = |s| Err(s);
    #[rustfmt::skip]
    let cases: &[Case] = &[
        (HTTP_11, "/", &[("host", "a")], ok),
        (HTTP_11, "/", &[], bad("missing Host header\n")),
        (HTTP_10, "/", &[], ok),
        (HTTP_11, "/", &[("host", "a"), ("host", "a")], bad("more than one Host header\n")),
        (HTTP_11, "/", &[("host", "a b")], bad("invalid Host header\n")),
        (HTTP_11, "/", &[("host", "")], bad("invalid Host header\n")),
        (HTTP_11, "http://a/x", &[("host", "a")], ok),
        (HTTP_11, "http://A/x", &[("host", "a")], ok),
        (HTTP_11, "http://evil/x", &[("host", "a")], bad("request target and Host name different hosts\n")),
        (HTTP_11, "/", &[("host", "a"), ("content-length", "5")], ok),
        (HTTP_11, "/", &[("host", "a"), ("content-length", "5"), ("content-length", "5")], bad("more than one Content-Length header\n")),
        (HTTP_11, "/", &[("host", "a"), ("content-length", "5, 5")], bad("invalid Content-Length\n")),
        (HTTP_11, "/", &[("host", "a"), ("content-length", "+5")], bad("invalid Content-Length\n")),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "chunked")], ok),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "Chunked ")], ok),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "chunked"), ("content-length", "3")], bad("both Content-Length and Transfer-Encoding\n")),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")], bad("unsupported Transfer-Encoding\n")),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "gzip, chunked")], bad("unsupported Transfer-Encoding\n")),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "chunked, gzip")], bad("unsupported Transfer-Encoding\n")),
        (HTTP_11, "/", &[("host", "a"), ("transfer-encoding", "xchunked")], bad("unsupported Transfer-Encoding\n")),
        (HTTP_10, "/", &[("transfer-encoding", "chunked")], bad("Transfer-Encoding in HTTP/1.0\n")),
        (HTTP_11, "/", &[("host", "a"), ("upgrade", "h2c"), ("connection", "upgrade")], bad("Upgrade: h2c is not supported\n")),
        (HTTP_11, "/", &[("host", "a"), ("upgrade", "foo, H2C")], bad("Upgrade: h2c is not supported\n")),
    ];
    for (version, target, headers, want) in cases {
        let got = check_request(&req(*version, target, headers)).map_err(|e| e.body());
        assert_eq!(&got, want, "{version:?} {target} {headers:?}");
    }
}

#[test]
fn connect_is_rejected() {
    let r = Request::builder()
        .method(Method::CONNECT)
        .uri("a:443")
        .header("host", "a:443")
        .body(())
        .unwrap();
    assert!(matches!(check_request(&r), Err(ProxyError::BadRequest(_))));
}

#[test]
fn h2_authority_must_agree_with_host() {
    assert!(check_request(&req(Version::HTTP_2, "https://a/", &[])).is_ok());
    assert!(check_request(&req(Version::HTTP_2, "https://a/", &[("host", "a")])).is_ok());
    assert!(check_request(&req(Version::HTTP_2, "https://a/", &[("host", "b")])).is_err());
}

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = HeaderMap::new();
    for (k, v) in [
        (
            "connection",
            "keep-alive, X-Secret, x-forwarded-for, host, x-request-id, traceparent",
        ),
        ("connection", "close"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "websocket"),
        ("trailer", "x"),
        ("te", "gzip"),
        ("x-secret", "1"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-request-id", "abc"),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("host", "a"),
        ("x-kept", "yes"),
    ] {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    }
    strip_hop_by_hop(&mut h);
    let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
    left.sort();
    assert_eq!(
        left,
        [
            "host",
            "traceparent",
            "trailer",
            "x-forwarded-for",
            "x-kept",
            "x-request-id"
        ]
    );
}

#[test]
fn te_trailers_survives() {
    let mut h = HeaderMap::new();
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.get(header::TE).unwrap(), "trailers");
}

/// The request path's way: the client's copies taken out, sluice's added (`Added`).
fn forward(h: &mut HeaderMap, peer: &HeaderValue, trusted: bool) {
    let origin = Origin {
        peer,
        trusted,
        proto: "http",
    };
    let host = Some(HeaderValue::from_static("a.com"));
    let id = HeaderValue::from_static("id");
    Added::take(h, Own::of(h), origin, host, None).insert_into(&id, h);
}

#[test]
fn forwarded_headers_replace_for_untrusted_and_extend_for_trusted() {
    let peer = peer_value("10.0.0.9".parse().unwrap());
    let spoofed = || {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(&X_FORWARDED_HOST, HeaderValue::from_static("evil"));
        h
    };
    let mut h = spoofed();
    forward(&mut h, &peer, false);
    assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.9");
    assert_eq!(h[&X_FORWARDED_PROTO], "http");
    assert_eq!(h[&X_FORWARDED_HOST], "a.com");

    let mut h = spoofed();
    h.append(&X_FORWARDED_FOR, HeaderValue::from_static("7.7.7.7"));
    forward(&mut h, &peer, true);
    assert_eq!(h[&X_FORWARDED_FOR], "6.6.6.6, 7.7.7.7, 10.0.0.9");
    assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    assert_eq!(h[&X_FORWARDED_PROTO], "https");
    assert_eq!(h[&X_FORWARDED_HOST], "evil");
}

#[test]
fn mapped_ipv6_peer_prints_as_ipv4() {
    assert_eq!(peer_value("::ffff:1.2.3.4".parse().unwrap()), "1.2.3.4");
    assert_eq!(peer_value("::1".parse().unwrap()), "::1");
    for edge in ["0.0.0.0", "255.255.255.255", "10.0.100.9", "1.22.199.200"] {
        assert_eq!(peer_value(edge.parse().unwrap()), edge);
    }
}

#[test]
fn request_ids_are_hex_and_distinct() {
    let a = new_request_id();
    let b = new_request_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
    assert!(a.as_bytes().iter().all(u8::is_ascii_hexdigit));
}

proptest::proptest! {
    #[test]
    fn hex_digits_are_formats(n: u64) {
        let expected = format!("{n:016x}");
        proptest::prop_assert_eq!(&hex_u64(n), expected.as_bytes());
    }
}

#[test]
fn hex_digits_of_edge_values() {
    let edges = [
        0,
        9,
        10,
        15,
        16,
        0x0123_4567_89ab_cdef,
        0xfedc_ba98_7654_3210,
    ];
    for n in edges.into_iter().chain([u64::MAX]) {
        assert_eq!(&hex_u64(n), format!("{n:016x}").as_bytes(), "{n:#x}");
    }
}

#[test]
fn connection_tokens_are_read_from_raw_bytes() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_bytes(b"x-a, \xff, keep-alive").unwrap(),
    );
    h.insert(
        HeaderName::from_static("x-a"),
        HeaderValue::from_static("secret"),
    );
    strip_hop_by_hop(&mut h);
    assert!(h.is_empty(), "{h:?}");
}

/// Version, target, headers.
type HostCase<'a> = (Version, &'a str, &'a [(&'a str, &'a str)]);

#[test]
fn hosts_with_userinfo_or_bad_bytes_are_refused_wherever_they_come_from() {
    let cases: &[HostCase] = &[
        (Version::HTTP_10, "http://u@app/", &[]),
        (Version::HTTP_11, "http://u@app/", &[("host", "u@app")]),
        (Version::HTTP_2, "https://u@app/", &[]),
        (Version::HTTP_2, "https://app/", &[("host", "u@app")]),
    ];
    for (version, target, headers) in cases {
        let got = check_request(&req(*version, target, headers));
        assert!(
            matches!(got, Err(ProxyError::BadRequest(_))),
            "{version:?} {target} {headers:?}"
        );
    }
}

proptest::proptest! {
    /// The digit-by-digit IPv4 text is exactly `Display`'s, plain or IPv4-mapped.
    #[test]
    fn peer_value_writes_ipv4_as_display_does(bits: u32) {
        let v4 = std::net::Ipv4Addr::from(bits);
        let text = v4.to_string();
        proptest::prop_assert_eq!(peer_value(IpAddr::V4(v4)), text.as_str());
        proptest::prop_assert_eq!(peer_value(IpAddr::V6(v4.to_ipv6_mapped())), text.as_str());
    }
}

#[test]
fn each_name_sets_its_own_bit() {
    let hop_by_hop = [
        (header::CONNECTION, HopByHop::CONNECTION),
        (header::TRANSFER_ENCODING, HopByHop::TRANSFER_ENCODING),
        (header::UPGRADE, HopByHop::UPGRADE),
        (header::TE, HopByHop::TE),
        (KEEP_ALIVE.clone(), HopByHop::KEEP_ALIVE),
        (PROXY_CONNECTION.clone(), HopByHop::PROXY_CONNECTION),
    ];
    for (name, bit) in hop_by_hop {
        assert_eq!(bit_among(&name, &HOP_BY_HOP), bit, "{name}");
    }
    let own = [
        (X_FORWARDED_FOR.clone(), Own::FORWARDED_FOR),
        (X_FORWARDED_PROTO.clone(), Own::FORWARDED_PROTO),
        (X_FORWARDED_HOST.clone(), Own::FORWARDED_HOST),
        (X_REQUEST_ID.clone(), Own::REQUEST_ID),
        (trace::TRACESTATE.clone(), Own::TRACESTATE),
        (trace::TRACEPARENT.clone(), Own::TRACEPARENT),
    ];
    for (name, bit) in own {
        assert_eq!(bit_among(&name, &OWN), bit, "{name}");
    }
    assert_eq!(bit_among(&header::HOST, &HOP_BY_HOP), 0);
    assert_eq!(bit_among(&header::HOST, &OWN), 0);
}

#[test]
fn names_are_compared_in_any_case_at_every_length() {
    for lower in [
        "te",
        "date",
        "upgrade",
        "connection",
        "content-length",
        "transfer-encoding",
    ] {
        assert!(is_name(lower.as_bytes(), lower.as_bytes()));
        assert!(is_name(
            lower.to_ascii_uppercase().as_bytes(),
            lower.as_bytes()
        ));
        // One byte off, at each place: the first and last words overlap when the length is
        // not a multiple of eight.
        for at in 0..lower.len() {
            let mut other = lower.as_bytes().to_vec();
            other[at] = if other[at] == b'x' { b'y' } else { b'x' };
            assert!(!is_name(&other, lower.as_bytes()), "{lower} at {at}");
        }
        assert!(!is_name(&lower.as_bytes()[1..], lower.as_bytes()));
    }
}

proptest::proptest! {
    /// For any two tokens, the same answer as a byte-by-byte comparison.
    #[test]
    fn name_comparison_agrees_with_a_byte_by_byte_one(
        name in "[!#$%&'*+.^_`|~0-9A-Za-z-]{0,40}",
        lower in "[0-9a-z-]{0,40}",
        same in proptest::bool::ANY,
    ) {
        let name = if same { lower.to_ascii_uppercase() } else { name };
        proptest::prop_assert_eq!(
            is_name(name.as_bytes(), lower.as_bytes()),
            name.as_bytes().eq_ignore_ascii_case(lower.as_bytes())
        );
    }
}

#[test]
fn recycled_maps_come_back_empty_and_large_ones_are_not_kept() {
    // A thread of its own: the spare maps are per thread.
    std::thread::spawn(|| {
        let mut map = spare_map(3);
        map.insert(header::HOST, HeaderValue::from_static("a"));
        map.append(header::ACCEPT, HeaderValue::from_static("b"));
        let room = map.capacity();
        recycle_map(map);
        let again = spare_map(1);
        assert!(again.is_empty());
        assert_eq!(again.capacity(), room, "the same map, its room kept");

        let mut large = HeaderMap::with_capacity(SPARE_MAP_ROOM + 1);
        large.insert(header::HOST, HeaderValue::from_static("a"));
        recycle_map(large);
        assert!(
            spare_map(1).capacity() < SPARE_MAP_ROOM,
            "a large map was kept"
        );
    })
    .join()
    .unwrap();
}
