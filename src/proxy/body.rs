//! Body types of both legs. Bodies stream frame by frame: nothing is buffered.
//!
//! `UpstreamBody` is the client's request body on its way to a backend, counted and capped.
//! `ResponseBody` is what the client receives (a backend's body or a local answer); it carries
//! the request's `Exchange`, so the exchange ends when the last byte has gone out or the client
//! went away: that is when in-flight counts drop and the access-log line is written.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::exchange::Exchange;

/// Why a request body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("reading the request body failed: {0}")]
    Client(#[from] hyper::Error),
    #[error("request body larger than the listener allows")]
    TooLarge,
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
    },
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
            } => {
                let frame = ready!(Pin::new(inner).poll_frame(cx));
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    let len = data.map_or(0, |d| d.len() as u64);
                    if len > *allowed {
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    *allowed -= len;
                    if let Some(counter) = counter {
                        counter.fetch_add(len, Ordering::Relaxed);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Streaming { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Streaming { inner, .. } => inner.size_hint(),
        }
    }
}

#[derive(Debug)]
enum Content {
    Upstream(Incoming),
    Local(Option<Bytes>),
}

/// The response body sent to the client.
#[derive(Debug)]
pub struct ResponseBody {
    content: Content,
    exchange: Option<Exchange>,
}

impl ResponseBody {
    pub fn upstream(body: Incoming, exchange: Exchange) -> ResponseBody {
        ResponseBody {
            content: Content::Upstream(body),
            exchange: Some(exchange),
        }
    }

    pub fn local(text: &'static str, exchange: Option<Exchange>) -> ResponseBody {
        ResponseBody {
            content: Content::Local(Some(Bytes::from_static(text.as_bytes()))),
            exchange,
        }
    }

    /// Ends the exchange now: the body is complete.
    fn finish(&mut self) {
        self.exchange = None;
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
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
