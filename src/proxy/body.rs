//! Body types of both legs. Bodies stream frame by frame: nothing is buffered.
//!
//! `UpstreamBody` is the client's request body on its way to a backend, counted and capped.
//! `ResponseBody` is what the client receives (a backend's body or a local answer); it carries
//! the request's `Exchange`, so the exchange ends when the last byte has gone out or the client
//! went away: that is when in-flight counts drop and the access-log line is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::BoxError;
use super::exchange::Exchange;
use crate::listener::ConnState;

/// Why a request body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body failed: {0}")]
    Client(#[from] hyper::Error),
    #[error("request body larger than the listener allows")]
    TooLarge,
    /// Nothing arrived for the listener's `request_body_timeout` while sluice waited for it.
    #[error("request body not received in time")]
    TimedOut,
    /// An abandoned attempt's body, polled after a retry took the request over.
    #[error("request body taken over by a retry")]
    Superseded,
}

/// A request body as the client sends it: hyper's, or none at all (`NoBody`: sluice's own
/// HTTP/1 server side, `listener::h1`, takes bodiless requests only).
pub trait ClientBody: Body + Send + 'static {
    /// The server side that reads these requests writes a backend's response fields as they
    /// came (`ResponseBody::take_raw_fields`), without a header map in between.
    const RAW_FIELDS: bool;

    /// The server side that reads these requests checked their framing itself, and the
    /// framing scanner has no verdict on them (`framing::Scanner::step_aside`).
    const VOUCHED: bool;

    /// hyper's body, to stream to the backend; `None` when there is none.
    fn into_incoming(self) -> Option<Incoming>;
}

impl ClientBody for Incoming {
    const RAW_FIELDS: bool = false;
    const VOUCHED: bool = false;

    fn into_incoming(self) -> Option<Incoming> {
        Some(self)
    }
}

/// The body of a request sluice's own HTTP/1 side read: none, as that side takes bodiless
/// requests only. A type of its own, not any empty body, so that only that side's requests skip
/// the framing scanner's verdict (`ClientBody::VOUCHED`).
#[derive(Debug, Clone, Copy)]
pub struct NoBody(());

impl NoBody {
    /// Only `listener::h1` makes them (it checks the heads it serves itself).
    pub(crate) fn new() -> NoBody {
        NoBody(())
    }
}

impl Body for NoBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(None)
    }

    fn is_end_stream(&self) -> bool {
        true
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(0)
    }
}

impl ClientBody for NoBody {
    const RAW_FIELDS: bool = true;
    const VOUCHED: bool = true;

    fn into_incoming(self) -> Option<Incoming> {
        None
    }
}

/// The request body sent to a backend.
#[derive(Debug)]
pub enum UpstreamBody {
    Empty,
    Streaming {
        inner: Incoming,
        /// Bytes still allowed (`u64::MAX` = no limit).
        allowed: u64,
        /// Bytes passed on, shared with the access log when it is on.
        counter: Option<Arc<AtomicU64>>,
        /// The connection it arrives on, whose listener counts the bytes received.
        conn: Arc<ConnState>,
        /// The longest wait for the next piece (`request_body_timeout`).
        timeout: Duration,
        /// Armed while waiting for the client: made at the first wait of the body (a body that
        /// arrives with its head never waits), reset at each wait after.
        stall: Option<(bool, Pin<Box<Sleep>>)>,
    },
    /// A body that a retry may send again (pools with retries): what has been passed on is
    /// kept, up to `REPLAY_LIMIT`, so another attempt can start over from its first byte.
    Replay {
        tee: Arc<Mutex<Tee>>,
        /// Which attempt this is; an older one's body stops when a newer one exists.
        attempt: u32,
        /// The next kept frame this attempt sends.
        next: usize,
        hint: SizeHint,
    },
}

/// Request-body bytes kept for a retry. A body that has sent more than this is not retried: it
/// would take unbounded memory per request.
pub const REPLAY_LIMIT: usize = 64 * 1024;

/// The client's body shared by the attempts of one request, and what has been sent of it.
#[derive(Debug)]
pub struct Tee {
    inner: UpstreamBody,
    /// Frames passed on so far, while they fit `REPLAY_LIMIT`.
    kept: Vec<Frame<Bytes>>,
    kept_bytes: usize,
    /// More than `REPLAY_LIMIT` went out: no replay is possible.
    overflowed: bool,
    /// The client's body has ended.
    done: bool,
    /// The newest attempt.
    attempt: u32,
}

impl UpstreamBody {
    /// Wraps a client body so that retries can resend it (see `replay`).
    pub fn replayable(self) -> UpstreamBody {
        if matches!(self, UpstreamBody::Empty) {
            return self;
        }
        let hint = self.size_hint();
        UpstreamBody::Replay {
            tee: Arc::new(Mutex::new(Tee {
                inner: self,
                kept: Vec::new(),
                kept_bytes: 0,
                overflowed: false,
                done: false,
                attempt: 0,
            })),
            attempt: 0,
            next: 0,
            hint,
        }
    }

    /// Whether `replay` would give a body: nothing was lost of what has been sent.
    pub fn can_replay(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streaming { .. } => false,
            UpstreamBody::Replay { tee, .. } => !lock(tee).overflowed,
        }
    }

    /// The same body again from its first byte, for a new attempt; the earlier attempts' bodies
    /// stop. `None` when too much was sent to keep.
    pub fn replay(&self) -> Option<UpstreamBody> {
        match self {
            UpstreamBody::Empty => Some(UpstreamBody::Empty),
            UpstreamBody::Streaming { .. } => None,
            UpstreamBody::Replay { tee, hint, .. } => {
                let mut shared = lock(tee);
                if shared.overflowed {
                    return None;
                }
                shared.attempt += 1;
                Some(UpstreamBody::Replay {
                    tee: tee.clone(),
                    attempt: shared.attempt,
                    next: 0,
                    hint: *hint,
                })
            }
        }
    }
}

fn lock(tee: &Mutex<Tee>) -> std::sync::MutexGuard<'_, Tee> {
    // Nothing panics while holding it; and a poisoned tee is still consistent.
    tee.lock().unwrap_or_else(|e| e.into_inner())
}

/// A frame again (`Frame` is not `Clone`; its data is reference-counted, so this copies no bytes).
fn copy(frame: &Frame<Bytes>) -> Frame<Bytes> {
    match frame.data_ref() {
        Some(data) => Frame::data(data.clone()),
        None => Frame::trailers(frame.trailers_ref().cloned().unwrap_or_default()),
    }
}

/// One frame of a shared body for the attempt that is at `next`.
fn poll_tee(
    tee: &Mutex<Tee>,
    attempt: u32,
    next: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    let mut shared = lock(tee);
    if shared.attempt != attempt {
        return Poll::Ready(Some(Err(BodyError::Superseded)));
    }
    if !shared.overflowed {
        if let Some(frame) = shared.kept.get(*next) {
            let copy = copy(frame);
            *next += 1;
            return Poll::Ready(Some(Ok(copy)));
        }
    }
    if shared.done {
        return Poll::Ready(None);
    }
    let frame = ready!(Pin::new(&mut shared.inner).poll_frame(cx));
    match &frame {
        None => shared.done = true,
        Some(Ok(f)) if !shared.overflowed => {
            let len = f.data_ref().map_or(0, |d| d.len());
            shared.kept_bytes += len;
            if shared.kept_bytes > REPLAY_LIMIT {
                shared.overflowed = true;
                shared.kept = Vec::new();
            } else {
                shared.kept.push(copy(f));
                *next += 1;
            }
        }
        _ => {}
    }
    Poll::Ready(frame)
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Empty => Poll::Ready(None),
            UpstreamBody::Streaming {
                inner,
                allowed,
                counter,
                conn,
                timeout,
                stall,
            } => {
                let frame = match Pin::new(inner).poll_frame(cx) {
                    Poll::Ready(frame) => {
                        if let Some((waiting, _)) = stall {
                            *waiting = false;
                        }
                        frame
                    }
                    Poll::Pending => {
                        // sluice wants the next piece and the client has not sent it: time the
                        // wait (the clock is read once per wait, not per frame).
                        match stall {
                            Some((true, _)) => {}
                            Some((waiting, sleep)) => {
                                *waiting = true;
                                sleep.as_mut().reset(Instant::now() + *timeout);
                            }
                            None => {
                                let sleep = tokio::time::sleep_until(Instant::now() + *timeout);
                                *stall = Some((true, Box::pin(sleep)));
                            }
                        }
                        if let Some((_, sleep)) = stall {
                            ready!(sleep.as_mut().poll(cx));
                        }
                        return Poll::Ready(Some(Err(BodyError::TimedOut)));
                    }
                };
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let len = data.map_or(0, |d| d.len() as u64);
                    if len > *allowed {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    *allowed -= len;
                    if let Some(counter) = counter {
                        counter.fetch_add(len, Ordering::Relaxed);
                    }
                    if let Some(counters) = conn.listener_counters() {
                        counters.add_received(len);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
            UpstreamBody::Replay {
                tee, attempt, next, ..
            } => poll_tee(tee, *attempt, next, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streaming { inner, .. } => inner.is_end_stream(),
            UpstreamBody::Replay { tee, next, .. } => {
                let shared = lock(tee);
                shared.done && *next >= shared.kept.len()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Streaming { inner, .. } => inner.size_hint(),
            UpstreamBody::Replay { hint, .. } => *hint,
        }
    }
}

/// A backend's response body, from hyper's client or sluice's own (`upstream::h1`).
#[derive(Debug)]
pub enum FromBackend {
    Hyper(Incoming),
    H1(crate::upstream::h1::Body),
}

impl FromBackend {
    /// hyper's body, which an upgrade needs (upgrades always take hyper's client).
    pub fn into_hyper(self) -> Option<Incoming> {
        match self {
            FromBackend::Hyper(body) => Some(body),
            FromBackend::H1(_) => None,
        }
    }
}

impl Body for FromBackend {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            FromBackend::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            FromBackend::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            FromBackend::Hyper(body) => body.is_end_stream(),
            FromBackend::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            FromBackend::Hyper(body) => body.size_hint(),
            FromBackend::H1(body) => body.size_hint(),
        }
    }
}

#[derive(Debug)]
enum Content {
    Upstream(FromBackend),
    Local(Option<Bytes>),
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ResponseBody {
    content: Content,
    exchange: Option<Exchange>,
}

impl ResponseBody {
    pub fn upstream(body: FromBackend, exchange: Exchange) -> ResponseBody {
        ResponseBody {
            content: Content::Upstream(body),
            exchange: Some(exchange),
        }
    }

    /// A local answer's body; an empty `text` ends the stream with the head (gRPC's
    /// trailers-only answers need exactly that).
    pub fn local(text: &'static str, exchange: Option<Exchange>) -> ResponseBody {
        ResponseBody {
            content: Content::Local(
                (!text.is_empty()).then(|| Bytes::from_static(text.as_bytes())),
            ),
            exchange,
        }
    }

    /// The backend's response fields, unparsed, when they were left so (`ClientBody::RAW_FIELDS`):
    /// the response's map then holds only what sluice set, which takes their place.
    pub fn take_raw_fields(&mut self) -> Option<Box<crate::upstream::h1::RawFields>> {
        match &mut self.content {
            Content::Upstream(FromBackend::H1(body)) => body.take_raw_fields(),
            _ => None,
        }
    }

    /// Ends the exchange now: the body is complete.
    fn finish(&mut self) {
        self.exchange = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.content {
            Content::Upstream(body) => ready!(Pin::new(body).poll_frame(cx)),
            Content::Local(text) => text.take().map(|t| Ok(Frame::data(t))),
        };
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(exchange)) = (f.data_ref(), this.exchange.as_mut()) {
                    exchange.add_bytes_out(data.len() as u64);
                }
            }
            Some(Err(_)) => {
                if let Some(exchange) = this.exchange.as_mut() {
                    exchange.mark_aborted();
                }
                this.finish();
            }
            None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.content {
            Content::Upstream(body) => body.is_end_stream(),
            Content::Local(text) => text.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.content {
            Content::Upstream(body) => body.size_hint(),
            Content::Local(text) => {
                SizeHint::with_exact(text.as_ref().map_or(0, |t| t.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_read_by_sluices_own_side_has_no_body_and_is_vouched_for() {
        let mut body = NoBody::new();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(matches!(
            Pin::new(&mut body).poll_frame(&mut cx),
            Poll::Ready(None)
        ));
        assert!(body.into_incoming().is_none());
        const { assert!(NoBody::VOUCHED && NoBody::RAW_FIELDS) };
        const { assert!(!Incoming::VOUCHED && !Incoming::RAW_FIELDS) };
    }
}
