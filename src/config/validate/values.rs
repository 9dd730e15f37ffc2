//! Parsers for single values (durations, status ranges, health check paths, route hosts,
//! backend addresses), pure apart from name resolution, with errors that say what the valid
//! form is.

use std::net::{Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::ops::RangeInclusive;
use std::time::Duration;

use http::uri::PathAndQuery;

use crate::config::file::DurationText;
use crate::config::HostMatch;

/// What is wrong with a value; the caller adds the location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ValueError {
    pub message: String,
    pub note: Option<String>,
    pub help: Option<String>,
}

impl ValueError {
    fn new(message: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
            note: None,
            help: None,
        }
    }

    fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

const DURATION_FORM: &str = "a duration is a whole number and a unit (ms, s, m or h), \
                             like \"250ms\", \"5s\", \"1m\", \"1h\"";

/// Spellings people reach for, mapped to the unit sluice uses, for a precise did-you-mean.
const UNIT_ALIASES: [(&str, &str); 16] = [
    ("msec", "ms"),
    ("msecs", "ms"),
    ("millis", "ms"),
    ("milliseconds", "ms"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("min", "m"),
    ("mins", "m"),
    ("minute", "m"),
    ("minutes", "m"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
];

/// `"250ms"`, `"5s"`, `"1m"`, `"1h"`: a whole number and one unit.
pub(super) fn parse_duration(written: &DurationText) -> Result<Duration, ValueError> {
    let text = match written {
        DurationText::Text(text) => text.as_str(),
        DurationText::Number(n) => {
            return Err(
                ValueError::new(format!("`{n}` is a number, not a duration"))
                    .note(DURATION_FORM)
                    .help(format!("durations need a unit: did you mean \"{n}s\"?")),
            );
        }
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(ValueError::new(format!("`{text}` is not a duration")).note(DURATION_FORM));
    }
    if unit.starts_with(['.', ',']) {
        return Err(ValueError::new(format!(
            "`{text}` has a fraction; durations are whole numbers"
        ))
        .note(DURATION_FORM)
        .help("use a smaller unit, like \"1500ms\" for 1.5 seconds"));
    }
    let per_unit = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        "" => {
            return Err(ValueError::new(format!("`{text}` has no unit"))
                .note(DURATION_FORM)
                .help(format!("did you mean \"{digits}s\"?")));
        }
        _ => {
            let lower = unit.trim().to_ascii_lowercase();
            let meant = ["ms", "s", "m", "h"]
                .into_iter()
                .find(|u| *u == lower)
                .or_else(|| {
                    UNIT_ALIASES
                        .iter()
                        .find(|(alias, _)| *alias == lower)
                        .map(|(_, to)| *to)
                });
            let error = ValueError::new(format!("`{text}` has an unknown unit `{unit}`"))
                .note(DURATION_FORM);
            return Err(match meant {
                Some(to) => error.help(format!("did you mean \"{digits}{to}\"?")),
                None => error,
            });
        }
    };
    let too_long = || ValueError::new(format!("`{text}` is too long a duration"));
    let count: u32 = digits.parse().map_err(|_| too_long())?;
    per_unit.checked_mul(count).ok_or_else(too_long)
}

pub(super) const STATUS_FORM: &str =
    "expected a status like \"200\" or an inclusive range like \"200-399\", \
                           with codes from 100 to 599";

/// `expected_status`: `"200"` or an inclusive range `"200-399"`, codes 100 to 599.
pub(super) fn parse_status_range(text: &str) -> Result<RangeInclusive<u16>, ValueError> {
    let not_a_status = || {
        ValueError::new(format!("`{text}` is not a status or a range of statuses"))
            .note(STATUS_FORM)
    };
    // `2xx` is how people write a class of statuses; the range form says the same thing.
    if let [class @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] = text.trim().as_bytes() {
        let class = char::from(*class);
        return Err(not_a_status().help(format!("did you mean \"{class}00-{class}99\"?")));
    }
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let code = |part: &str| {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(not_a_status());
        }
        match part.parse::<u16>() {
            Ok(code) if (100..=599).contains(&code) => Ok(code),
            _ => Err(
                ValueError::new(format!("status `{part}` is outside 100 to 599")).note(STATUS_FORM),
            ),
        }
    };
    let (low, high) = (code(low)?, code(high)?);
    if low > high {
        return Err(
            ValueError::new(format!("`{text}` runs backwards: {low} is above {high}"))
                .note(STATUS_FORM)
                .help(format!("did you mean \"{high}-{low}\"?")),
        );
    }
    Ok(low..=high)
}

/// A health check's `path`: what goes on the request line of the probe, so an absolute path
/// with an optional query, in ASCII.
pub(super) fn parse_health_path(written: &str) -> Result<PathAndQuery, ValueError> {
    let form = "a health check path is an absolute path with an optional query, \
                like `/healthz` or `/status?full=1`";
    if !written.starts_with('/') {
        let error = ValueError::new(format!("health check path `{written}` must start with `/`"))
            .note(form);
        // A whole URL: each backend is probed at its own address, so only the path is wanted.
        let url_path = written
            .split_once("://")
            .map(|(_, rest)| rest.find('/').map_or("/", |i| &rest[i..]));
        return Err(match url_path {
            _ if written.is_empty() => error.help("omit `path` for a TCP connect check"),
            Some(path) => error.help(format!(
                "each backend is probed at its own address: did you mean `{path}`?"
            )),
            None => error.help(format!("did you mean `/{written}`?")),
        });
    }
    if written.contains('#') {
        return Err(
            ValueError::new(format!("health check path `{written}` contains `#`"))
                .note("a fragment is never sent to the server"),
        );
    }
    match written.parse::<PathAndQuery>() {
        Ok(path) if written.is_ascii() => Ok(path),
        _ => Err(ValueError::new(format!(
            "health check path `{written}` is not a valid request target"
        ))
        .note(form)
        .help("percent-encode spaces, control characters and non-ASCII text, like `%20`")),
    }
}

/// A duration as a user would write it: the largest unit that divides it exactly (`"90s"`,
/// `"2m"`, `"250ms"`), so messages and the summary speak the file's language.
pub(in crate::config) fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0s".to_string(),
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// A route's `host`: an exact name or `*.suffix`, lower-cased. A port is an error rather than
/// silently dropped: routes match the host without its port, so `example.com:8080` would also
/// take requests for port 80, which is surely not what the writer meant.
pub(super) fn parse_host(written: &str) -> Result<HostMatch, ValueError> {
    let host = written.to_ascii_lowercase();
    let wildcard_form =
        "a host is an exact name like `api.example.com`, or `*.example.com` for its subdomains";
    if host.is_empty() {
        return Err(ValueError::new("host is empty").help("omit `host` to match every host"));
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(HostMatch::Exact(host)),
            _ if inner.contains("]:") => Err(port_error(written)),
            _ => Err(ValueError::new(format!(
                "`{written}` is not an IPv6 address"
            ))),
        };
    }
    if host.contains(':') {
        return Err(port_error(written));
    }
    let (is_wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    if name.contains('*') || host == "*" {
        let error = ValueError::new(format!("`{written}` uses `*` where it is not allowed"))
            .note("`*` may only be the whole first label, as in `*.example.com`");
        return Err(if host == "*" {
            error.help("omit `host` to match every host")
        } else {
            error
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        let note = "host names are letters, digits, `-` and `.`; \
                    write international names in their punycode (xn--) form";
        return Err(ValueError::new(format!("host `{written}` contains `{bad}`")).note(note));
    }
    if name.split('.').any(str::is_empty) {
        return Err(
            ValueError::new(format!("host `{written}` has an empty label")).note(wildcard_form),
        );
    }
    Ok(if is_wildcard {
        HostMatch::Wildcard(format!(".{name}"))
    } else {
        HostMatch::Exact(host)
    })
}

fn port_error(written: &str) -> ValueError {
    let without = match written.rsplit_once(':') {
        Some((host, _)) => host,
        None => written,
    };
    ValueError::new(format!("host `{written}` includes a port"))
        .note("routes match the host without its port; choose the port with the listener")
        .help(format!("did you mean `{without}`?"))
}

/// Resolves `host:port` once, at load time, preferring an IPv4 address: names like
/// `localhost` resolve to both families, and backends often listen on IPv4 only.
pub(super) fn resolve_backend(address: &str) -> Result<SocketAddr, ValueError> {
    let form = "a backend address is `host:port`, \
                like `10.0.0.11:8080`, `[fd00::1]:8080` or `app-2.internal:8080`";
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return if addr.port() == 0 {
            Err(ValueError::new(format!("backend `{address}` has port 0")).note(form))
        } else {
            Ok(addr)
        };
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(
            ValueError::new(format!("backend address `{address}` has no port"))
                .note(form)
                .help(format!("did you mean `{address}:80`?")),
        );
    };
    if host.contains(':') && !host.starts_with('[') {
        return Err(ValueError::new(format!(
            "backend address `{address}` needs brackets around its IPv6 address"
        ))
        .note(form));
    }
    if host.is_empty() {
        return Err(ValueError::new(format!("backend address `{address}` has no host")).note(form));
    }
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => {
            return Err(ValueError::new(format!(
                "backend address `{address}` has an invalid port `{port}`"
            ))
            .note(form));
        }
    };
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) => {
            return Err(
                ValueError::new(format!("cannot resolve backend `{address}`: {e}"))
                    .note("host names are resolved once, when the configuration is loaded"),
            );
        }
    };
    crate::config::prefer_ipv4(&addrs)
        .ok_or_else(|| ValueError::new(format!("backend `{address}` resolved to no addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let text = |s: &str| DurationText::Text(s.to_string());
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("90s", Duration::from_secs(90)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(&text(input)), Ok(want), "{input}");
        }
        // (input, message, help)
        let bad = [
            ("5", "`5` has no unit", Some("did you mean \"5s\"?")),
            (
                "5sec",
                "`5sec` has an unknown unit `sec`",
                Some("did you mean \"5s\"?"),
            ),
            (
                "2 minutes",
                "`2 minutes` has an unknown unit ` minutes`",
                Some("did you mean \"2m\"?"),
            ),
            ("5d", "`5d` has an unknown unit `d`", None),
            (
                "5S",
                "`5S` has an unknown unit `S`",
                Some("did you mean \"5s\"?"),
            ),
            (
                "1.5s",
                "`1.5s` has a fraction; durations are whole numbers",
                Some("use a smaller unit, like \"1500ms\" for 1.5 seconds"),
            ),
            ("s", "`s` is not a duration", None),
            ("", "`` is not a duration", None),
            ("-5s", "`-5s` is not a duration", None),
            (
                "99999999999h",
                "`99999999999h` is too long a duration",
                None,
            ),
        ];
        for (input, message, help) in bad {
            let err = parse_duration(&text(input)).unwrap_err();
            assert_eq!(err.message, message, "{input}");
            assert_eq!(err.help.as_deref(), help, "{input}");
            if message != "`99999999999h` is too long a duration" {
                assert_eq!(err.note.as_deref(), Some(DURATION_FORM), "{input}");
            }
        }
        let err = parse_duration(&DurationText::Number(5.0)).unwrap_err();
        assert_eq!(err.message, "`5` is a number, not a duration");
        assert_eq!(
            err.help.as_deref(),
            Some("durations need a unit: did you mean \"5s\"?")
        );
    }

    #[test]
    fn durations_are_shown_in_the_largest_exact_unit() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(7200), "2h"),
        ];
        for (d, want) in cases {
            assert_eq!(show_duration(d), want, "{d:?}");
            assert_eq!(parse_duration(&DurationText::Text(want.into())), Ok(d));
        }
    }

    #[test]
    fn status_ranges() {
        let ok = [
            ("200-399", 200..=399),
            ("200", 200..=200),
            ("100-599", 100..=599),
            (" 204 - 204 ", 204..=204),
        ];
        for (input, want) in ok {
            assert_eq!(parse_status_range(input), Ok(want), "{input}");
        }
        // (input, message, help)
        let bad = [
            ("", "`` is not a status or a range of statuses", None),
            ("ok", "`ok` is not a status or a range of statuses", None),
            (
                "2xx",
                "`2xx` is not a status or a range of statuses",
                Some("did you mean \"200-299\"?"),
            ),
            (
                "200-",
                "`200-` is not a status or a range of statuses",
                None,
            ),
            (
                "-200",
                "`-200` is not a status or a range of statuses",
                None,
            ),
            (
                "200-300-400",
                "`200-300-400` is not a status or a range of statuses",
                None,
            ),
            (
                "200,204",
                "`200,204` is not a status or a range of statuses",
                None,
            ),
            ("99", "status `99` is outside 100 to 599", None),
            ("200-600", "status `600` is outside 100 to 599", None),
            ("99999999", "status `99999999` is outside 100 to 599", None),
            (
                "399-200",
                "`399-200` runs backwards: 399 is above 200",
                Some("did you mean \"200-399\"?"),
            ),
        ];
        for (input, message, help) in bad {
            let err = parse_status_range(input).unwrap_err();
            assert_eq!(err.message, message, "{input}");
            assert_eq!(err.help.as_deref(), help, "{input}");
            assert_eq!(err.note.as_deref(), Some(STATUS_FORM), "{input}");
        }
    }

    #[test]
    fn health_check_paths() {
        for input in ["/", "/healthz", "/status?full=1", "/a/b%20c"] {
            assert_eq!(
                parse_health_path(input).map(|p| p.to_string()),
                Ok(input.to_string())
            );
        }
        // (input, message, help)
        let bad = [
            (
                "healthz",
                "health check path `healthz` must start with `/`",
                Some("did you mean `/healthz`?"),
            ),
            (
                "",
                "health check path `` must start with `/`",
                Some("omit `path` for a TCP connect check"),
            ),
            (
                "http://app.internal/healthz?x=1",
                "health check path `http://app.internal/healthz?x=1` must start with `/`",
                Some("each backend is probed at its own address: did you mean `/healthz?x=1`?"),
            ),
            (
                "http://app.internal",
                "health check path `http://app.internal` must start with `/`",
                Some("each backend is probed at its own address: did you mean `/`?"),
            ),
            ("/a#top", "health check path `/a#top` contains `#`", None),
            (
                "/a b",
                "health check path `/a b` is not a valid request target",
                Some("percent-encode spaces, control characters and non-ASCII text, like `%20`"),
            ),
            (
                "/gesundheit/ü",
                "health check path `/gesundheit/ü` is not a valid request target",
                Some("percent-encode spaces, control characters and non-ASCII text, like `%20`"),
            ),
        ];
        for (input, message, help) in bad {
            let err = parse_health_path(input).unwrap_err();
            assert_eq!(err.message, message, "{input}");
            assert_eq!(err.help.as_deref(), help, "{input}");
        }
    }

    #[test]
    fn hosts() {
        let exact = |s: &str| Ok(HostMatch::Exact(s.to_string()));
        let wild = |s: &str| Ok(HostMatch::Wildcard(s.to_string()));
        let ok = [
            ("api.example.com", exact("api.example.com")),
            ("API.Example.COM", exact("api.example.com")),
            ("localhost", exact("localhost")),
            ("10.0.0.1", exact("10.0.0.1")),
            ("[::1]", exact("[::1]")),
            ("*.example.com", wild(".example.com")),
            ("*.Example.com", wild(".example.com")),
        ];
        for (input, want) in ok {
            assert_eq!(parse_host(input), want, "{input}");
        }
        let bad = [
            ("", "host is empty"),
            (
                "example.com:8080",
                "host `example.com:8080` includes a port",
            ),
            ("[::1]:8080", "host `[::1]:8080` includes a port"),
            ("[nope]", "`[nope]` is not an IPv6 address"),
            ("*", "`*` uses `*` where it is not allowed"),
            (
                "*example.com",
                "`*example.com` uses `*` where it is not allowed",
            ),
            ("api.*.com", "`api.*.com` uses `*` where it is not allowed"),
            ("*.*.com", "`*.*.com` uses `*` where it is not allowed"),
            ("exa mple.com", "host `exa mple.com` contains ` `"),
            ("bücher.de", "host `bücher.de` contains `ü`"),
            ("example..com", "host `example..com` has an empty label"),
            (".example.com", "host `.example.com` has an empty label"),
            ("*.", "host `*.` has an empty label"),
        ];
        for (input, message) in bad {
            assert_eq!(parse_host(input).unwrap_err().message, message, "{input}");
        }
        let err = parse_host("example.com:8080").unwrap_err();
        assert_eq!(err.help.as_deref(), Some("did you mean `example.com`?"));
    }

    #[test]
    fn backend_addresses() {
        let ok = [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("[::1]:8080", "[::1]:8080"),
            ("localhost:8080", "127.0.0.1:8080"),
        ];
        for (input, want) in ok {
            assert_eq!(resolve_backend(input), Ok(want.parse().unwrap()), "{input}");
        }
        let bad = [
            ("127.0.0.1", "backend address `127.0.0.1` has no port"),
            ("127.0.0.1:0", "backend `127.0.0.1:0` has port 0"),
            (
                "app:http",
                "backend address `app:http` has an invalid port `http`",
            ),
            (
                "app:70000",
                "backend address `app:70000` has an invalid port `70000`",
            ),
            (":8080", "backend address `:8080` has no host"),
            (
                "::1:8080",
                "backend address `::1:8080` needs brackets around its IPv6 address",
            ),
        ];
        for (input, message) in bad {
            assert_eq!(
                resolve_backend(input).unwrap_err().message,
                message,
                "{input}"
            );
        }
        let err = resolve_backend("no-such-host.invalid:80").unwrap_err();
        assert!(
            err.message
                .starts_with("cannot resolve backend `no-such-host.invalid:80`"),
            "{}",
            err.message
        );
    }
}
