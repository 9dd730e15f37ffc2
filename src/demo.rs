//! `sluice demo`: three small built-in backends and an embedded config in front of them, so a
//! fresh machine can see sluice balance traffic with one command.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

use crate::config::Config;

/// Starts the demo backends on a thread of their own and returns the proxy's config.
pub fn start(bind: SocketAddr, admin: SocketAddr) -> io::Result<Config> {
    let sockets = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    let addrs = sockets
        .iter()
        .map(|s| s.local_addr())
        .collect::<io::Result<Vec<_>>>()?;
    for s in &sockets {
        s.set_nonblocking(true)?;
    }
    std::thread::Builder::new()
        .name("sluice-demo-backends".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the demo backends");
            runtime.block_on(async move {
                let mut tasks = Vec::new();
                for (i, socket) in sockets.into_iter().enumerate() {
                    let listener =
                        tokio::net::TcpListener::from_std(socket).expect("a bound socket");
                    tasks.push(tokio::spawn(backend(
                        format!("backend-{}", i + 1),
                        listener,
                    )));
                }
                for t in tasks {
                    let _ = t.await;
                }
            })
        })?;
    let text = config_text(bind, admin, &addrs);
    Config::parse(&text, Path::new("<demo>")).map_err(|e| io::Error::other(e.to_string()))
}

/// The embedded demo config: one listener, one round-robin pool of the three backends.
pub fn config_text(bind: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let backends: Vec<String> = backends
        .iter()
        .map(|a| format!("  {{ address = \"{a}\" }},"))
        .collect();
    format!(
        r#"[admin]
bind = "{admin}"

[log]
access_log = true

[[listener]]
name = "demo"
bind = "{bind}"

[[route]]
pool = "demo"

[pool.demo]
algorithm = "round_robin"
backends = [
{}
]
"#,
        backends.join("\n")
    )
}

pub fn instructions(bind: SocketAddr, admin: SocketAddr) -> String {
    format!(
        "sluice demo: three backends behind a round-robin pool.\n\n  \
         curl http://{bind}/              # repeat it: the answer rotates across backend-1, -2, -3\n  \
         curl -i http://{bind}/hello      # see x-request-id and the forwarded headers\n  \
         curl http://{admin}/healthz      # the admin API\n\n\
         Ctrl-C stops it.\n"
    )
}

async fn backend(name: String, listener: tokio::net::TcpListener) {
    let name: &'static str = Box::leak(name.into_boxed_str());
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| async move {
                Ok::<_, Infallible>(answer(name, &req))
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let forwarded = |h: &str| {
        req.headers()
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let body = format!(
        "hello from {name}: {} {} (x-forwarded-for: {}, x-request-id: {})\n",
        req.method(),
        req.uri(),
        forwarded("x-forwarded-for"),
        forwarded("x-request-id"),
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
