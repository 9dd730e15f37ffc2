//! Listener checks: limits, trusted proxies, unique names, and binds that would not collide.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{Checker, MIN_HEADER_BYTES};

/// The largest request head (and request target) a listener may allow: 1 MiB. Each connection
/// may buffer this much, so larger limits only help an attacker.
const MAX_HEAD_BYTES: usize = 1024 * 1024;
use crate::config::file;
use crate::config::{Admin, CidrError, Listener};

/// Where a listener's name and (valid) bind are written, for the uniqueness checks.
pub(super) struct ListenerSpans {
    pub name: Range<usize>,
    pub bind: Option<Range<usize>>,
}

/// A bind address and who owns it, for the overlap check.
struct BindOwner {
    addr: SocketAddr,
    span: Range<usize>,
    what: String,
}

impl Checker<'_> {
    pub(super) fn listener(
        &mut self,
        listener: Spanned<file::ListenerFile>,
    ) -> (Listener, ListenerSpans) {
        let l = listener.into_inner();
        if l.name.get_ref().trim().is_empty() {
            self.push(self.error(l.name.span(), "listener name is empty"));
        }
        let bind = self.socket_addr(&l.bind);
        let max_header_bytes = match l.max_header_bytes {
            Some(n) if *n.get_ref() < MIN_HEADER_BYTES => {
                let message = format!(
                    "max_header_bytes must be at least {MIN_HEADER_BYTES}, not {}",
                    n.get_ref()
                );
                let note = "ordinary browser requests have heads of several hundred bytes; \
                            the default is 65536";
                let error = self.error(n.span(), message).with_note(note);
                self.push(error);
                MIN_HEADER_BYTES
            }
            Some(n) if *n.get_ref() > MAX_HEAD_BYTES => {
                let message = format!(
                    "max_header_bytes must be at most {MAX_HEAD_BYTES}, not {}",
                    n.get_ref()
                );
                let note = "every connection may buffer this much; the default is 65536";
                self.push(self.error(n.span(), message).with_note(note));
                MAX_HEAD_BYTES
            }
            Some(n) => n.into_inner(),
            None => 65_536,
        };
        let max_uri_bytes = match l.max_uri_bytes {
            Some(n) if *n.get_ref() == 0 => {
                self.push(
                    self.error(n.span(), "max_uri_bytes must be at least 1")
                        .with_note("the default is 8192"),
                );
                1
            }
            Some(n) if *n.get_ref() > MAX_HEAD_BYTES => {
                let message = format!(
                    "max_uri_bytes must be at most {MAX_HEAD_BYTES}, not {}",
                    n.get_ref()
                );
                self.push(
                    self.error(n.span(), message)
                        .with_note("the default is 8192"),
                );
                MAX_HEAD_BYTES
            }
            Some(n) => n.into_inner(),
            None => 8192,
        };
        let trusted_proxies = l
            .trusted_proxies
            .iter()
            .filter_map(|cidr| match cidr.get_ref().parse() {
                Ok(c) => Some(c),
                Err(e) => {
                    let mut error = self
                        .error(cidr.span(), format!("invalid trusted proxy: {e}"))
                        .with_note(
                            "expected a network like `10.0.0.0/8` or an address like `192.0.2.7`",
                        );
                    if let CidrError::HostBits { network, .. } = &e {
                        error = error.with_help(format!("did you mean `{network}`?"));
                    }
                    self.errors.push(error);
                    None
                }
            })
            .collect();
        let tls = l.tls.and_then(|tls| self.listener_tls(tls));
        let redirect_https = match &l.redirect_https {
            Some(on) if *on.get_ref() && tls.is_some() => {
                let message = "redirect_https on an HTTPS listener would redirect to itself";
                let help = "set it on the plain HTTP listener that should send clients to https";
                self.push(self.error(on.span(), message).with_help(help));
                false
            }
            Some(on) => *on.get_ref(),
            None => false,
        };
        let hsts = match &l.hsts {
            Some(value) => match http::HeaderValue::from_str(value.get_ref().trim()) {
                Ok(v) if value.get_ref().trim().starts_with("max-age=") => Some(v),
                _ => {
                    let message = format!("invalid hsts value `{}`", value.get_ref());
                    let note = "expected a Strict-Transport-Security value like \
                                `max-age=31536000` or `max-age=31536000; includeSubDomains`";
                    self.push(self.error(value.span(), message).with_note(note));
                    None
                }
            },
            None => None,
        };
        let listener = Listener {
            name: l.name.get_ref().clone(),
            bind: bind.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
            header_read_timeout: self.timeout(l.header_read_timeout, Duration::from_secs(10)),
            idle_timeout: self.timeout(l.idle_timeout, Duration::from_secs(60)),
            request_body_timeout: self.timeout(l.request_body_timeout, Duration::from_secs(60)),
            send_timeout: self.timeout(l.send_timeout, Duration::from_secs(60)),
            max_header_bytes,
            max_uri_bytes,
            trusted_proxies,
            max_body_bytes: l.max_body_bytes.filter(|&n| n > 0),
            tls,
            redirect_https,
            hsts,
        };
        let spans = ListenerSpans {
            name: l.name.span(),
            bind: bind.map(|_| l.bind.span()),
        };
        (listener, spans)
    }

    /// Unique listener names, and no two sockets that would fight over the same address.
    pub(super) fn check_names_and_binds(
        &mut self,
        listeners: &[(Listener, ListenerSpans)],
        admin: Option<&(Admin, Option<Range<usize>>)>,
    ) {
        let mut first_by_name: HashMap<&str, usize> = HashMap::new();
        let mut owners = Vec::new();
        for (listener, spans) in listeners {
            if let Some(first) = first_by_name.get(listener.name.as_str()) {
                let error = self
                    .error(
                        spans.name.clone(),
                        format!("duplicate listener name `{}`", listener.name),
                    )
                    .with_note(format!("first defined at line {}", self.line_of(*first)))
                    .with_help("routes refer to listeners by name, so names must be unique");
                self.push(error);
            } else {
                first_by_name.insert(&listener.name, spans.name.start);
            }
            if let Some(span) = &spans.bind {
                owners.push(BindOwner {
                    addr: listener.bind,
                    span: span.clone(),
                    what: format!("listener `{}`", listener.name),
                });
            }
        }
        if let Some((admin, Some(span))) = admin {
            owners.push(BindOwner {
                addr: admin.bind,
                span: span.clone(),
                what: "the admin API".to_string(),
            });
        }
        owners.sort_by_key(|o| o.span.start);
        for (i, later) in owners.iter().enumerate() {
            if let Some(earlier) = owners[..i]
                .iter()
                .find(|e| binds_overlap(e.addr, later.addr))
            {
                let error = self
                    .error(
                        later.span.clone(),
                        format!(
                            "bind `{}` of {} conflicts with {} on `{}`",
                            later.addr, later.what, earlier.what, earlier.addr
                        ),
                    )
                    .with_note(format!(
                        "{} is bound at line {}",
                        earlier.what,
                        self.line_of(earlier.span.start)
                    ))
                    .with_help("give each listener and the admin API its own port");
                self.push(error);
            }
        }
    }
}

/// Whether two binds would fail with "address in use": the same port on the same address, or
/// on the wildcard address of the same family. Port 0 asks the OS for a free port, so it never
/// conflicts.
fn binds_overlap(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}
