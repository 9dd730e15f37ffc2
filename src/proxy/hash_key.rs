//! The request's hash key (`hash_key`) for consistent-hashing pools, hashed for `Pick.key`.
//! Pure: reads the request, allocates nothing.

use std::net::IpAddr;

use http::header::{self, HeaderMap};
use http::Uri;

use crate::balance::hash::hash;
use crate::config::HashKey;

/// The hashed key of a request, or `None` when the request does not carry it (the pool then
/// picks at random).
pub fn key_of(key: &HashKey, headers: &HeaderMap, uri: &Uri, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::ClientIp => Some(match client {
            IpAddr::V4(v4) => hash(&v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => hash(&v4.octets()),
                None => hash(&v6.octets()),
            },
        }),
        HashKey::Header(name) => headers.get(name).map(|v| hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie(headers, name).map(hash),
        HashKey::Path => Some(hash(uri.path().as_bytes())),
        HashKey::Query(name) => query(uri, name).map(hash),
    }
}

/// The value of cookie `name` from the `Cookie` headers (`a=1; b=2`).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// The raw value of query parameter `name` (`?a=1&b=2`), as written (not percent-decoded).
fn query<'u>(uri: &'u Uri, name: &str) -> Option<&'u [u8]> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn each_key_reads_its_part_of_the_request() {
        let uri: Uri = "/p/q?user=ann&x=1".parse().unwrap();
        let h = headers(&[
            ("x-user", "bob"),
            ("cookie", "a=1; sid=xyz"),
            ("cookie", "c=3"),
        ]);
        let cases: &[(HashKey, Option<&[u8]>)] = &[
            (
                HashKey::Header(http::HeaderName::from_static("x-user")),
                Some(b"bob"),
            ),
            (
                HashKey::Header(http::HeaderName::from_static("x-none")),
                None,
            ),
            (HashKey::Cookie("sid".into()), Some(b"xyz")),
            (HashKey::Cookie("c".into()), Some(b"3")),
            (HashKey::Cookie("s".into()), None),
            (HashKey::Path, Some(b"/p/q")),
            (HashKey::Query("user".into()), Some(b"ann")),
            (HashKey::Query("use".into()), None),
        ];
        for (key, want) in cases {
            assert_eq!(key_of(key, &h, &uri, IP), want.map(hash), "{key:?}");
        }
    }

    #[test]
    fn client_ip_ignores_ipv4_mapping() {
        let h = HeaderMap::new();
        let uri: Uri = "/".parse().unwrap();
        let v4 = key_of(&HashKey::ClientIp, &h, &uri, IP);
        let mapped = key_of(
            &HashKey::ClientIp,
            &h,
            &uri,
            "::ffff:10.1.2.3".parse().unwrap(),
        );
        assert_eq!(v4, mapped);
        assert!(v4.is_some());
    }
}
