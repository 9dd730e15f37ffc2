//! The socket as hyper sees it: every byte read goes through the framing scanner and the
//! connection's timers (`ConnState`), refused heads are answered here, and a connection going
//! dormant keeps its socket open.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ConnState;
use crate::framing;
use crate::proxy::headers;
use crate::tls::Downstream;

/// The socket (decrypted, on an HTTPS listener), reporting reads to the connection's
/// `ConnState`: the framing scanner sees the HTTP bytes, never TLS records.
pub(super) struct WatchedIo {
    pub(super) stream: Downstream,
    pub(super) state: Arc<ConnState>,
    /// sluice answered a refused head itself; hyper sees the end of the stream.
    pub(super) answered: bool,
    /// Bytes hyper handed over since its last completed flush: while any may still be queued,
    /// sluice must not write its own answer (it would land inside the previous response).
    pub(super) unflushed: bool,
    /// The rest of sluice's own answer, when the socket did not take it at once.
    pub(super) refusal: Vec<u8>,
    /// Bytes for hyper to read before the socket's: the first bytes, read to find the
    /// protocol, or those hyper had read but not used when the connection went dormant.
    pub(super) replay: bytes::Bytes,
    /// The replayed bytes have not been through the framing scanner yet (the first bytes;
    /// a dormant connection's went through it when hyper read them).
    pub(super) scan_replay: bool,
    /// The framing scanner sees the bytes read, and the head timer starts with them. Not while
    /// sluice's own HTTP/1 side reads the heads itself (`listener::h1`): it starts the timer
    /// when a head is not complete in what it read, and hands hyper every byte from the start
    /// of a head it does not serve, to be scanned then (`scan_replay`).
    pub(super) scanning: bool,
}

impl WatchedIo {
    /// Reports the bytes read into `buf` from `before` on to the connection's state and the
    /// framing scanner. A refused head with nothing in flight before it is answered here, with
    /// sluice's own body and request id, and never reaches hyper (which would answer some of
    /// these itself, bare, and silently repair others): `true`, and hyper sees the end of the
    /// stream.
    fn scan(&mut self, buf: &mut ReadBuf<'_>, before: usize) -> bool {
        self.state.on_read();
        let mut scanner = self.state.framing.lock().unwrap_or_else(|e| e.into_inner());
        scanner.feed(&buf.filled()[before..]);
        let Some(reject) = scanner.next_refused() else {
            return false;
        };
        if self.state.inflight.load(Ordering::Relaxed) != 0 || self.unflushed {
            return false;
        }
        let (status, answer) = refusal(reject);
        if let Some(counters) = self.state.listener_counters() {
            counters.refused.add(0, status);
        }
        self.refusal = answer;
        match self.stream.try_write(&self.refusal) {
            Ok(n) => drop(self.refusal.drain(..n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.refusal.clear(),
        }
        // The rest, if any, goes out in `poll_shutdown` (or on drop).
        buf.set_filled(before);
        self.answered = true;
        true
    }

    /// Writes what is left of sluice's own answer; ready when all of it went out.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.refusal.is_empty() {
            let n = std::task::ready!(Pin::new(&mut self.stream).poll_write(cx, &self.refusal))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.refusal.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for WatchedIo {
    fn drop(&mut self) {
        // Last chance for an answer hyper never flushed for us (it drops the socket on errors).
        if !self.refusal.is_empty() {
            let _ = self.stream.try_write(&self.refusal);
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.answered {
            return Poll::Ready(Ok(()));
        }
        if !this.replay.is_empty() {
            let before = buf.filled().len();
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay.split_to(n));
            if this.replay.is_empty() {
                // Even empty, the `Bytes` holds its whole buffer.
                this.replay = bytes::Bytes::new();
            }
            if !this.scanning {
                // sluice's own side times its heads itself.
                return Poll::Ready(Ok(()));
            }
            if !this.scan_replay {
                this.state.on_read();
                return Poll::Ready(Ok(()));
            }
            this.scan_replay = !this.replay.is_empty();
            this.scan(buf, before);
            return Poll::Ready(Ok(()));
        }
        if this.state.tunnel.load(Ordering::Relaxed) {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        // (sluice's own side, not scanning, times its heads itself.)
        if buf.filled().len() > before && this.scanning && this.scan(buf, before) {
            return Poll::Ready(Ok(()));
        }
        result
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.state.on_write(result.is_ready());
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.state.on_write(result.is_ready());
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    /// hyper flushes the socket only once its own write buffer is empty, so a completed flush
    /// means nothing of an earlier response is still queued.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.stream).poll_flush(cx);
        if matches!(result, Poll::Ready(Ok(()))) {
            this.unflushed = false;
        }
        result
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state.dormant.load(Ordering::Relaxed) {
            // hyper's connection ends, the socket's does not.
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.poll_refusal(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// The status and bytes of sluice's answer to a refused request head.
fn refusal(reject: framing::Reject) -> (u16, Vec<u8>) {
    let e = crate::proxy::error::ProxyError::from(reject);
    let status = e.status();
    let body = e.body();
    let id = headers::new_request_id();
    tracing::debug!(
        status = status.as_u16(),
        cause = body.trim_end(),
        "refused a request head"
    );
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         x-request-id: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        id.to_str().unwrap_or(""),
    );
    (status.as_u16(), answer.into_bytes())
}
