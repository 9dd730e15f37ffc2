//! TLS end to end (issue 7), with certificates made at test time: HTTPS listeners (SNI, ALPN,
//! handshake timeout, X-Forwarded-Proto, 421, HSTS, redirect to https), certificate checks and
//! reload, and TLS to backends (mutual TLS, an untrusted backend gives 502).

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use sluice::config::Config;
use support::reload::{Reloadable, ADMIN};
use support::tls::{client_config, connect, get_over, peer_names, Issued, Pki, TlsBackend};
use support::{config_with, TestBackend, TestSluice};

const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];
const H1: &[&[u8]] = &[b"http/1.1"];

/// `[listener.tls]` with `certs` in order, for `config_with`'s listener part.
fn tls_table(certs: &[&Issued]) -> String {
    let list = certs
        .iter()
        .map(|c| {
            format!(
                "{{ cert = \"{}\", key = \"{}\" }}",
                c.cert.display(),
                c.key.display()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("\n[listener.tls]\ncertificates = [{list}]\n")
}

/// Three sites: `a.test` (the default), `b.test` and `*.wild.test`.
fn three_sites(pki: &Pki) -> Vec<Issued> {
    vec![
        pki.issue("a", &["a.test"]),
        pki.issue("b", &["b.test"]),
        pki.issue("wild", &["*.wild.test"]),
    ]
}

fn https_sluice(backend: &TestBackend, certs: &[Issued], listener_extra: &str) -> TestSluice {
    let refs: Vec<&Issued> = certs.iter().collect();
    let listener = format!("{listener_extra}{}", tls_table(&refs));
    TestSluice::start(&config_with(&[backend.addr], "", &listener, ""))
}

#[tokio::test]
async fn sni_chooses_the_certificate_by_exact_name_then_wildcard_else_the_first() {
    let pki = Pki::new("sni");
    let backend = TestBackend::start("app");
    let sluice = https_sluice(&backend, &three_sites(&pki), "");
    for (name, sni, want) in [
        ("b.test", true, "b.test"),
        ("a.test", true, "a.test"),
        ("x.wild.test", true, "*.wild.test"),
        // No SNI: the first certificate.
        ("a.test", false, "a.test"),
    ] {
        let stream = connect(sluice.addr(), client_config(&pki.ca, H1), name, sni)
            .await
            .unwrap_or_else(|e| panic!("{name} (sni {sni}): {e}"));
        assert_eq!(peer_names(&stream), vec![want.to_string()], "{name}");
        let (answer, _) = get_over(stream, name, "/").await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        assert_eq!(answer.body, "app");
    }
    // A name no certificate has gets the default one, which the client then refuses.
    let refused = connect(
        sluice.addr(),
        client_config(&pki.ca, H1),
        "y.z.wild.test",
        true,
    )
    .await;
    assert!(refused.is_err(), "a wildcard covers exactly one label");
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http1_and_both_carry_requests() {
    let pki = Pki::new("alpn");
    let backend = TestBackend::start("app");
    let sluice = https_sluice(&backend, &three_sites(&pki), "");
    for (offer, want, version) in [
        (BOTH, Some(b"h2".as_slice()), http::Version::HTTP_2),
        (H1, Some(b"http/1.1".as_slice()), http::Version::HTTP_11),
        // No ALPN at all: HTTP/1.1.
        (&[][..], None, http::Version::HTTP_11),
    ] {
        let stream = connect(sluice.addr(), client_config(&pki.ca, offer), "b.test", true)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), want);
        let (answer, mut sender) = get_over(stream, "b.test", "/first").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body, "app");
        // And again on the same connection.
        let again = sender.get("b.test", "/second").await.unwrap();
        assert_eq!(again.status, 200);
        let seen = backend.seen();
        let last = seen.last().unwrap();
        assert_eq!(last.uri.path(), "/second");
        assert_eq!(last.headers["x-forwarded-proto"], "https", "{version:?}");
        assert_eq!(last.headers["host"], "b.test", "{version:?}");
    }
}

/// Reads until the peer closes (or errors); how long that took, or `None` after `bound`.
fn closed_within(mut stream: std::net::TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[test]
fn a_silent_client_or_half_a_client_hello_is_cut_off_at_the_handshake_timeout() {
    let pki = Pki::new("timeout");
    let backend = TestBackend::start("app");
    let sluice = https_sluice(
        &backend,
        &three_sites(&pki),
        "header_read_timeout = \"400ms\"\n",
    );
    // Opens a socket and sends nothing.
    let silent = std::net::TcpStream::connect(sluice.addr()).unwrap();
    let took = closed_within(silent, Duration::from_secs(5)).expect("a silent client is closed");
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
    // The start of a ClientHello record that never completes.
    let mut half = std::net::TcpStream::connect(sluice.addr()).unwrap();
    half.write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        .unwrap();
    let took = closed_within(half, Duration::from_secs(5)).expect("half a ClientHello is closed");
    assert!(
        took >= Duration::from_millis(300),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn a_host_that_sni_did_not_choose_gets_421() {
    let pki = Pki::new("misdirected");
    let backend = TestBackend::start("app");
    let sluice = https_sluice(&backend, &three_sites(&pki), "");
    for offer in [BOTH, H1] {
        let stream = connect(sluice.addr(), client_config(&pki.ca, offer), "b.test", true)
            .await
            .unwrap();
        let (answer, mut sender) = get_over(stream, "a.test", "/").await;
        assert_eq!(answer.status, 421, "{}", answer.body);
        assert!(answer.body.contains("misdirected"), "{}", answer.body);
        assert!(answer.headers.contains_key("x-request-id"));
        if offer == BOTH {
            // HTTP/2 keeps the connection: the right host still works on it.
            let ok = sender.get("b.test:443", "/").await.unwrap();
            assert_eq!(ok.status, 200, "{}", ok.body);
        }
    }
    assert!(
        backend.seen().len() == 1,
        "misdirected requests never reach the backend"
    );
}

#[tokio::test]
async fn hsts_on_https_answers_and_plain_http_redirects_to_https() {
    let pki = Pki::new("edge");
    let backend = TestBackend::start("app");
    let certs = three_sites(&pki);
    let refs: Vec<&Issued> = certs.iter().collect();
    let text = format!(
        r#"
[log]
access_log = false

[[listener]]
name = "plain"
bind = "127.0.0.1:0"
redirect_https = true

[[listener]]
name = "secure"
bind = "127.0.0.1:0"
hsts = "max-age=31536000; includeSubDomains"
{}
[[route]]
pool = "app"

[pool.app]
backends = [{{ address = "{}" }}]
"#,
        tls_table(&refs),
        backend.addr
    );
    let sluice = TestSluice::start(&text);
    let plain = support::raw(
        sluice.addrs[0],
        b"GET /a/b?x=1 HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(plain.starts_with("HTTP/1.1 308"), "{plain}");
    assert!(
        plain
            .to_ascii_lowercase()
            .contains("\r\nlocation: https://a.test/a/b?x=1\r\n"),
        "{plain}"
    );
    assert!(!plain
        .to_ascii_lowercase()
        .contains("strict-transport-security"));
    let stream = connect(sluice.addrs[1], client_config(&pki.ca, H1), "a.test", true)
        .await
        .unwrap();
    let (answer, _) = get_over(stream, "a.test", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.headers["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert!(
        backend.seen().len() == 1,
        "the redirect did not reach the backend"
    );
}

/// The config errors of `text`, as `(line, column, message)`.
fn errors_of(text: &str) -> Vec<(usize, usize, String)> {
    let errors = Config::parse(text, Path::new("tls.toml")).expect_err("must be refused");
    errors
        .iter()
        .map(|e| {
            (
                e.line().unwrap_or(0),
                e.column().unwrap_or(0),
                e.message().to_string(),
            )
        })
        .collect()
}

/// Line and column (1-based) of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> (usize, usize) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle} in {text}"));
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    (line, column)
}

#[test]
fn bad_certificates_make_the_config_invalid_with_located_errors() {
    let pki = Pki::new("invalid");
    let good = pki.issue("good", &["a.test"]);
    let other = pki.issue("other", &["b.test"]);
    let now = time::OffsetDateTime::now_utc();
    let expired = pki.issue_valid(
        "expired",
        &["a.test"],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let not_pem = pki.dir.join("garbage.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let missing = pki.dir.join("missing.pem");
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "a key of another certificate",
            good.cert.clone(),
            other.key.clone(),
            "key",
            "does not match",
        ),
        (
            "an expired certificate",
            expired.cert.clone(),
            expired.key.clone(),
            "cert",
            "expired on",
        ),
        (
            "an unreadable file",
            missing.clone(),
            good.key.clone(),
            "cert",
            "cannot read certificate file",
        ),
        (
            "a file without certificates",
            not_pem.clone(),
            good.key.clone(),
            "cert",
            "no certificate in",
        ),
        (
            "a key file without a key",
            good.cert.clone(),
            good.cert.clone(),
            "key",
            "no private key",
        ),
    ];
    for (what, cert, key, points_at, says) in cases {
        let issued = Issued { cert, key };
        let text = config_with(&[backend], "", &tls_table(&[&issued]), "");
        let errors = errors_of(&text);
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        let (line, column, message) = &errors[0];
        assert!(message.contains(says), "{what}: {message}");
        let needle = format!("{points_at} = \"");
        let (want_line, want_column) = position(&text, &needle);
        assert_eq!(
            (*line, *column),
            (want_line, want_column + needle.len() - 1),
            "{what}: points at the `{points_at}` value"
        );
    }
    let empty = config_with(&[backend], "", "\n[listener.tls]\ncertificates = []\n", "");
    let errors = errors_of(&empty);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].2, "no certificates");
    assert_eq!(errors[0].0, position(&empty, "certificates = []").0);
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_for_new_handshakes_only() {
    let pki = Pki::new("reload");
    let backend = TestBackend::start("app");
    let first = pki.issue("first", &["a.test"]);
    let second = pki.issue("second", &["a.test", "new.test"]);
    let text = |cert: &Issued| config_with(&[backend.addr], ADMIN, &tls_table(&[cert]), "");
    let sluice = Reloadable::start(&text(&first));
    let config = || client_config(&pki.ca, H1);

    let before = connect(sluice.addr(), config(), "a.test", true)
        .await
        .unwrap();
    assert_eq!(peer_names(&before), vec!["a.test"]);
    let (answer, mut established) = get_over(before, "a.test", "/").await;
    assert_eq!(answer.status, 200);

    let reload = sluice.reload_ok(&text(&second));
    assert_eq!(reload.changes("listeners", "changed"), vec!["web"]);

    let after = connect(sluice.addr(), config(), "a.test", true)
        .await
        .unwrap();
    assert_eq!(peer_names(&after), vec!["a.test", "new.test"]);
    let (answer, _) = get_over(after, "a.test", "/").await;
    assert_eq!(answer.status, 200);
    // The connection made before the reload carries on.
    let again = established.get("a.test", "/still").await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);

    // A certificate rewritten in place (same paths) is a change too.
    let renewed = pki.issue("first", &["a.test", "renewed.test"]);
    sluice.reload_ok(&text(&renewed));
    let renewed = connect(sluice.addr(), config(), "a.test", true)
        .await
        .unwrap();
    assert_eq!(peer_names(&renewed), vec!["a.test", "renewed.test"]);

    // A bad certificate is refused and the running one stays.
    let now = time::OffsetDateTime::now_utc();
    let expired = pki.issue_valid(
        "expired",
        &["a.test"],
        now - time::Duration::days(30),
        now - time::Duration::days(1),
    );
    let refused = sluice.reload_with(&text(&expired));
    assert_eq!(refused.status, 400, "{:#}", refused.body);
    let still = connect(sluice.addr(), config(), "a.test", true)
        .await
        .unwrap();
    assert_eq!(peer_names(&still), vec!["a.test", "renewed.test"]);
}

/// A pool of one TLS backend with `tls` as its `[pool.app.tls]` keys.
fn upstream_config(backend: &TlsBackend, tls: &str) -> String {
    config_with(
        &[backend.addr],
        "",
        "",
        &format!("\n[pool.app.tls]\n{tls}\n"),
    )
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn mutual_tls_to_a_backend_works_and_a_wrong_ca_gives_502() {
    let servers = Pki::new("servers");
    let clients = Pki::new("clients");
    let elsewhere = Pki::new("elsewhere");
    let cert = servers.issue("backend", &["backend.internal"]);
    let client = clients.issue("sluice", &["sluice.internal"]);
    let backend = TlsBackend::start("secure", &cert, Some(&clients.ca));

    let good = upstream_config(
        &backend,
        &format!(
            "server_name = \"backend.internal\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            path(&servers.ca),
            path(&client.cert),
            path(&client.key)
        ),
    );
    let sluice = TestSluice::start(&good);
    let got = support::get(&sluice.url("/")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "secure");
    assert_eq!(got.header("x-sni"), Some("backend.internal"));
    assert_eq!(got.header("x-seen-proto"), Some("http"));
    drop(sluice);

    // Without a client certificate the backend refuses the handshake.
    let anonymous = upstream_config(
        &backend,
        &format!(
            "server_name = \"backend.internal\"\nca = \"{}\"",
            path(&servers.ca)
        ),
    );
    let sluice = TestSluice::start(&anonymous);
    let got = support::get(&sluice.url("/")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    drop(sluice);

    // Trusting another CA: the backend's certificate is not trusted.
    let wrong_ca = upstream_config(
        &backend,
        &format!(
            "server_name = \"backend.internal\"\nca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"",
            path(&elsewhere.ca),
            path(&client.cert),
            path(&client.key)
        ),
    );
    let sluice = TestSluice::start(&wrong_ca);
    let before = backend.requests.load(std::sync::atomic::Ordering::SeqCst);
    let got = support::get(&sluice.url("/")).await;
    assert_eq!(got.status, 502, "{}", got.text());
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "nothing was sent to an untrusted backend"
    );
}

#[tokio::test]
async fn the_backend_address_host_is_the_default_server_name() {
    let pki = Pki::new("default-name");
    // The certificate names the IP address the pool dials.
    let cert = pki.issue("backend", &["127.0.0.1"]);
    let backend = TlsBackend::start("by-ip", &cert, None);
    let sluice = TestSluice::start(&upstream_config(
        &backend,
        &format!("ca = \"{}\"", path(&pki.ca)),
    ));
    let got = support::get(&sluice.url("/")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    assert_eq!(got.text(), "by-ip");
}

#[tokio::test]
async fn health_checks_use_the_pools_tls() {
    let pki = Pki::new("checks");
    let elsewhere = Pki::new("checks-elsewhere");
    let cert = pki.issue("backend", &["backend.internal"]);
    let backend = TlsBackend::start("checked", &cert, None);
    let checks = "\n[pool.app.health_check]\npath = \"/healthz\"\ninterval = \"500ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\n";
    let config = |ca: &Path| {
        format!(
            "{}{checks}",
            upstream_config(
                &backend,
                &format!("server_name = \"backend.internal\"\nca = \"{}\"", path(ca))
            )
        )
    };
    // Trusted: the probe passes over TLS and traffic flows.
    let sluice = TestSluice::start(&config(&pki.ca));
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let got = support::get(&sluice.url("/")).await;
        if got.status == 200 || Instant::now() > deadline {
            break got.status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 200, "the backend became healthy through TLS probes");
    assert!(
        backend.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "a probe and a request reached the backend"
    );
    drop(sluice);

    // Untrusted: probes fail the handshake, the backend never becomes healthy.
    let sluice = TestSluice::start(&config(&elsewhere.ca));
    let before = backend.requests.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = support::get(&sluice.url("/")).await;
    assert_eq!(got.status, 503, "{}", got.text());
    assert_eq!(
        backend.requests.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "no probe got past the handshake"
    );
}

#[test]
fn check_reports_names_and_expiry_and_warns_within_14_days() {
    let pki = Pki::new("report");
    let now = time::OffsetDateTime::now_utc();
    let lasting = pki.issue("lasting", &["a.test", "*.a.test"]);
    let soon = pki.issue_valid(
        "soon",
        &["b.test"],
        now - time::Duration::days(80),
        now + time::Duration::days(5),
    );
    let backend: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let text = config_with(&[backend], "", &tls_table(&[&lasting, &soon]), "");
    let summary = Config::parse(&text, Path::new("tls.toml"))
        .unwrap()
        .summary();
    let line = |needle: &str| {
        summary
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in\n{summary}"))
            .to_string()
    };
    let first = line("lasting.pem");
    assert!(
        first.contains("(default)") && first.contains("a.test, *.a.test"),
        "{first}"
    );
    assert!(first.contains("expires 20"), "{first}");
    let warning = line("warning:");
    assert!(
        warning.contains("soon.pem") && warning.contains("expires in 4 days"),
        "{warning}"
    );
    assert_eq!(summary.matches("warning:").count(), 1, "{summary}");
    assert!(line("web").contains("https"), "{summary}");
}

/// `protocol = "auto"`: HTTP/2 to a TLS backend whose ALPN offers it, HTTP/1.1 to one that
/// offers only that; without `tls` the setting is refused.
#[tokio::test]
async fn protocol_auto_speaks_http2_when_alpn_chooses_it() {
    let servers = Pki::new("servers");
    let cert = servers.issue("backend", &["backend.internal"]);
    let tls = format!(
        "server_name = \"backend.internal\"\nca = \"{}\"",
        path(&servers.ca)
    );
    for (alpn, want) in [
        (&[&b"h2"[..], b"http/1.1"][..], "HTTP/2.0"),
        (&[&b"http/1.1"[..]][..], "HTTP/1.1"),
    ] {
        let backend = TlsBackend::start_alpn("secure", &cert, None, alpn);
        let toml = config_with(
            &[backend.addr],
            "",
            "",
            &format!("protocol = \"auto\"\n\n[pool.app.tls]\n{tls}\n"),
        );
        let sluice = TestSluice::start(&toml);
        for _ in 0..3 {
            let got = support::get(&sluice.url("/")).await;
            assert_eq!(got.status, 200, "{}", got.text());
            assert_eq!(got.header("x-seen-version"), Some(want), "{alpn:?}");
        }
    }

    let refused = sluice::config::Config::parse(
        &config_with(
            &["127.0.0.1:1".parse().unwrap()],
            "",
            "",
            "protocol = \"auto\"",
        ),
        std::path::Path::new("auto.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(refused.contains("needs TLS"), "{refused}");
}
