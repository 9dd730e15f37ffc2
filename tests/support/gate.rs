//! Backends that hold requests until a test lets them go, so a test can have a request in
//! flight (or a response half sent) at a moment of its choosing, without sleeping for it.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use tokio::sync::{mpsc, watch};

use super::{full, Body, Handler, Seen, TestBackend};

/// Held requests wait until the gate opens; it counts those that have arrived.
#[derive(Clone)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
    arrived: Arc<AtomicUsize>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            open: Arc::new(watch::Sender::new(false)),
            arrived: Arc::default(),
        }
    }
}

impl Gate {
    /// Lets every held request (and every later one) through.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Requests that have reached the gate so far.
    pub fn arrived(&self) -> usize {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Counts the caller as arrived and waits until the gate is open.
    pub async fn pass(&self) {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.subscribe();
        // The sender lives as long as the gate.
        let _ = open.wait_for(|open| *open).await;
    }
}

/// A backend that records every request (`seen`) and answers `200` with its name in the body
/// and in `x-backend`, echoing the request's `x-id`. Requests whose path starts with `/held`
/// wait at `gate` first; `GET /stream` answers with `stream_chunks` (see there).
pub struct GatedBackend {
    pub backend: TestBackend,
    pub gate: Gate,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// The chunks `GET /stream` sends: the first at once, the rest only once the gate is open,
/// 100 ms apart (a slow producer: the whole body takes about a second).
pub fn stream_chunks(name: &str) -> Vec<String> {
    (0..10)
        .map(|i| format!("{name} chunk {i:02} {}\n", "x".repeat(100)))
        .collect()
}

impl GatedBackend {
    pub fn start(name: &str) -> GatedBackend {
        let gate = Gate::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tag, record, held) = (name.to_string(), seen.clone(), gate.clone());
        let handler: Handler = Arc::new(move |req: Request<Incoming>| {
            let (tag, record, held) = (tag.clone(), record.clone(), held.clone());
            Box::pin(async move {
                let seen = Seen::of(req).await;
                let path = seen.uri.path().to_string();
                let id = seen.headers.get("x-id").cloned();
                record.lock().unwrap().push(seen);
                let mut response = Response::builder().header("x-backend", tag.as_str());
                if let Some(id) = id {
                    response = response.header("x-id", id);
                }
                if path == "/stream" {
                    return response.body(stream(&tag, held)).unwrap();
                }
                if path.starts_with("/held") {
                    held.pass().await;
                }
                response.body(full(tag)).unwrap()
            })
        });
        GatedBackend {
            backend: TestBackend::with_handler(name, seen.clone(), handler),
            gate,
            seen,
        }
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.backend.addr
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests received so far whose path starts with `prefix`.
    pub fn seen_on(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.uri.path().starts_with(prefix))
            .count()
    }
}

/// The body of `GET /stream`: `stream_chunks`, the first at once, the rest once `gate` opens.
fn stream(name: &str, gate: Gate) -> Body {
    let (tx, rx) = mpsc::channel(1);
    let chunks = stream_chunks(name);
    tokio::spawn(async move {
        let mut chunks = chunks.into_iter();
        if let Some(first) = chunks.next() {
            let _ = tx.send(Bytes::from(first)).await;
        }
        gate.pass().await;
        for chunk in chunks {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    ChannelBody(rx).boxed()
}

/// A response body fed from a channel: each message one data frame; ends when the sender drops.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
