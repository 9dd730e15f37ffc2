//! A registered backend's `host:port`: checked for shape only (names are resolved later, when the
//! pool is built, as configured backends are) and written one canonical way, so that `App:80`,
//! `app:080` and `app:80` are one backend rather than three with a share each.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::error::{shown, RegistryError};

/// The canonical form of `address`: a lowercase host name or IPv4 address, or an IPv6 address in
/// brackets in its shortest form, then `:` and the port without leading zeros.
pub(super) fn canonical(address: &str) -> Result<String, RegistryError> {
    let bad = |problem| RegistryError::Address {
        address: shown(address),
        problem,
    };
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or(bad("has a `[` without its `]`"))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| bad("has an invalid IPv6 address in its brackets"))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => return Err(bad("has no port")),
            None => return Err(bad("has something other than `:port` after its `]`")),
        };
        (format!("[{ip}]"), port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or(bad("has no port"))?;
        if host.contains(':') {
            return Err(bad("needs brackets around its IPv6 address"));
        }
        (host_name(host).map_err(bad)?, port)
    };
    Ok(format!("{host}:{}", port_number(port).map_err(bad)?))
}

/// An IPv4 address or a DNS name, lowercased.
fn host_name(host: &str) -> Result<String, &'static str> {
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(ip.to_string());
    }
    // A trailing dot marks a fully qualified name; it is kept, since it changes the lookup.
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err("has no host before its port");
    }
    if name.len() > 253 {
        return Err("has a host name longer than 253 characters");
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("has an invalid IPv4 address");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("has an empty label (`..` or a leading `.`) in its host name");
        }
        if label.len() > 63 {
            return Err("has a host name label longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "has a host name with characters other than letters, digits, `-`, `_` and `.`",
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a host name label that starts or ends with `-`");
        }
    }
    Ok(host.to_ascii_lowercase())
}

fn port_number(port: &str) -> Result<u16, &'static str> {
    if port.is_empty() {
        return Err("has no port after its `:`");
    }
    // Only digits: `u16::from_str` would also take a leading `+`.
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has a port that is not a number from 1 to 65535");
    }
    match port.trim_start_matches('0') {
        "" => Err("has port 0; the port must be 1 to 65535"),
        digits => digits
            .parse::<u16>()
            .map_err(|_| "has a port above 65535; the port must be 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (written, canonical_form) in [
            ("10.0.0.11:8080", "10.0.0.11:8080"),
            ("app-2.internal:8080", "app-2.internal:8080"),
            ("App-2.Internal:8080", "app-2.internal:8080"),
            ("app.internal.:80", "app.internal.:80"),
            ("db_1:5432", "db_1:5432"),
            ("localhost:65535", "localhost:65535"),
            ("localhost:0080", "localhost:80"),
            ("[::1]:8080", "[::1]:8080"),
            ("[FD00:0:0:0:0:0:0:1]:1", "[fd00::1]:1"),
            ("[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]:80"),
        ] {
            assert_eq!(canonical(written).unwrap(), canonical_form, "{written}");
        }
    }

    #[test]
    fn rejected_with_the_problem_named() {
        for (written, problem) in [
            ("10.0.0.11", "has no port"),
            ("", "has no port"),
            ("app:", "has no port after its `:`"),
            (":8080", "has no host before its port"),
            ("app:0", "has port 0"),
            ("app:000", "has port 0"),
            ("app:65536", "has a port above 65535"),
            ("app:99999999999999999999", "has a port above 65535"),
            ("app:+80", "not a number"),
            ("app:8o", "not a number"),
            ("app: 80", "not a number"),
            ("::1:8080", "needs brackets"),
            ("fd00::1", "needs brackets"),
            ("[::1]", "has no port"),
            ("[::1:8080", "without its `]`"),
            ("[::1]8080", "other than `:port`"),
            ("[not-ip]:80", "invalid IPv6 address"),
            ("[10.0.0.1]:80", "invalid IPv6 address"),
            ("300.0.0.1:80", "invalid IPv4 address"),
            ("10.0.0:80", "invalid IPv4 address"),
            ("a..b:80", "empty label"),
            (".a:80", "empty label"),
            (" app:80", "characters other than"),
            ("app/x:80", "characters other than"),
            ("ápp:80", "characters other than"),
            ("-app:80", "starts or ends with `-`"),
            ("app-.internal:80", "starts or ends with `-`"),
        ] {
            let e = canonical(written).expect_err(written);
            let message = e.to_string();
            assert!(message.contains(problem), "{written}: {message}");
            assert!(message.starts_with("`address` "), "{written}: {message}");
            assert!(e.is_bad_request());
        }
    }

    #[test]
    fn name_lengths() {
        let label = "a".repeat(63);
        assert!(canonical(&format!("{label}:80")).is_ok());
        let e = canonical(&format!("{label}a:80")).unwrap_err();
        assert!(e.to_string().contains("longer than 63"), "{e}");
        let long = [label.as_str(); 5].join(".");
        let e = canonical(&format!("{long}:80")).unwrap_err();
        assert!(e.to_string().contains("longer than 253"), "{e}");
        // The message quotes the address, cut short.
        assert!(e.to_string().len() < 300, "{e}");
    }
}
