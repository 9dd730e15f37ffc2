//! sluice's own HTTP/1.1 client, for the request most traffic is: no body, no upgrade, plain
//! TCP to an HTTP/1.1 pool.
//!
//! hyper-util's pooled client runs every connection as a task of its own and hands each
//! request to it over a channel (a task wake-up each way), boxes a future per request, and
//! checks connections in and out under a mutex shared by everything the client reaches. Here
//! the exchange is a plain future polled by the client connection's own task: it writes the
//! request head with one write, parses the response head straight off the read buffer (header
//! values share the bytes read), and the response body reads from the same connection, which
//! goes back to its backend's idle list (one per worker) the moment the last byte is read.
//! Requests with bodies, upgrades, TLS and HTTP/2 pools keep hyper's client
//! (`proxy::forward`).

mod body;
mod head;

pub use self::head::{parse_length, write_field, Lengths, RawFields};

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Response};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

pub use body::Body;

use super::Backend;
use crate::shard::PerWorker;

/// Idle connections kept per backend and worker (hyper-util's pool allowed as many).
const MAX_IDLE: usize = 4096;
/// Response heads larger than this are refused.
const MAX_HEAD: usize = 256 * 1024;
/// What one read asks the kernel for at least.
const READ_CHUNK: usize = 16 * 1024;
/// The most one read asks for, when a body's length says that much is coming.
const READ_MAX: usize = 64 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting to the backend failed: {0}")]
    Connect(#[source] io::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid response: {0}")]
    Invalid(&'static str),
}

impl Error {
    /// The connection died before any response: on a pooled connection, the keep-alive race
    /// (the backend closed it as it was reused), not a verdict on the backend.
    pub fn is_stale_connection(&self) -> bool {
        matches!(self, Error::Io(e) if is_stale_io(e))
    }
}

/// An I/O failure that says the connection was closed or reset under the request (either
/// client's, `proxy::forward` asks for hyper's too).
pub fn is_stale_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// One connection to a backend, with its buffers.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The last request head's buffer, reused for the next one.
    head: Vec<u8>,
    idle_since: Instant,
}

impl Conn {
    fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            head: Vec::new(),
            idle_since: Instant::now(),
        }
    }

    /// Reads what the backend has sent into `buf`: the count, 0 at end of stream. `coming`:
    /// how many bytes are known to be on their way (a body's length), so that a large body
    /// takes few reads.
    fn poll_fill(&mut self, cx: &mut Context<'_>, coming: u64) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            let want = usize::try_from(coming).unwrap_or(READ_MAX);
            self.buf.reserve(want.clamp(READ_CHUNK, READ_MAX));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Nothing has arrived on the idle connection since its last response: neither bytes
    /// nor the backend's close. Costs no system call unless the socket was signalled.
    fn quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Readiness may be left over from the last read: ask the socket itself.
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// A backend's idle connections, one list per worker: a connection is only ever used by the
/// worker that opened it, so the lock is never contended.
#[derive(Debug)]
pub struct Idle {
    /// On cache lines of their own: two workers taking their own locks must not share a line.
    lists: PerWorker<Mutex<VecDeque<Conn>>>,
}

impl Idle {
    pub fn new(workers: usize) -> Idle {
        Idle {
            lists: PerWorker::new(workers),
        }
    }

    fn list(&self, worker: usize) -> MutexGuard<'_, VecDeque<Conn>> {
        let list = self.lists.of(worker);
        list.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The most recently used idle connection that is still good at `now`, if any.
    fn checkout(&self, worker: usize, max_idle: Duration, now: Instant) -> Option<Conn> {
        let mut list = self.list(worker);
        while let Some(mut conn) = list.pop_back() {
            if now.saturating_duration_since(conn.idle_since) < max_idle && conn.quiet() {
                return Some(conn);
            }
        }
        None
    }

    /// Takes `conn` back, idle since `now`.
    fn checkin(&self, worker: usize, mut conn: Conn, max_idle: Duration, now: Instant) {
        conn.idle_since = now;
        let mut list = self.list(worker);
        // The oldest are at the front: the ones past the idle timeout go first.
        while list
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.idle_since) >= max_idle)
        {
            list.pop_front();
        }
        if list.len() < MAX_IDLE {
            list.push_back(conn);
        }
    }

    /// Closes `worker`'s connections that have been idle too long or that the backend closed.
    pub fn sweep(&self, worker: usize, max_idle: Duration) {
        let mut list = self.list(worker);
        list.retain_mut(|c| c.idle_since.elapsed() < max_idle && c.quiet());
    }

    /// Idle connections of `worker`.
    pub fn len(&self, worker: usize) -> usize {
        self.list(worker).len()
    }
}

/// Where a connection goes back to once its response has been read.
#[derive(Debug)]
struct Home {
    backend: Arc<Backend>,
    worker: usize,
    max_idle: Duration,
    /// When the request started: the connection counts as idle from then, which saves a clock
    /// reading per request and can only make it expire early (by the request's duration),
    /// never late.
    started: Instant,
}

impl Home {
    fn give_back(self, conn: Conn) {
        let Home {
            backend,
            worker,
            max_idle,
            started,
        } = self;
        backend.idle.checkin(worker, conn, max_idle, started);
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

enum State {
    Connecting(Connecting),
    Writing(Conn, usize),
    Reading(Conn),
    Done,
}

/// One request and its response head, as a future polled by the client connection's task.
pub struct Exchange {
    state: State,
    /// The encoded request head: kept until the response head arrives, so that a retry on a
    /// fresh connection sends the very same bytes.
    head: Vec<u8>,
    method: Method,
    /// The response's fields may stay unparsed (`head::RawFields`).
    raw: bool,
    home: Option<Home>,
    /// The connection came from the idle list.
    reused: bool,
}

/// How to open a new connection to a backend.
#[derive(Debug, Clone, Copy)]
pub struct Dial<'a> {
    pub timeout: Duration,
    pub opened: &'a Arc<AtomicU64>,
}

impl Exchange {
    /// Starts `parts` (a request without a body) with the fields `extra` writes after its own,
    /// on an idle connection of `worker` to `backend`, or a new one; `now`: the caller's clock
    /// reading. `raw`: the response's fields may stay unparsed, for a server side that writes
    /// them out as they are (`Body::raw_fields`).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        backend: &Arc<Backend>,
        worker: usize,
        parts: &Parts,
        extra: impl FnOnce(&mut Vec<u8>),
        raw: bool,
        max_idle: Duration,
        dial: Dial<'_>,
        now: Instant,
    ) -> Exchange {
        let idle = backend.idle.checkout(worker, max_idle, now);
        let reused = idle.is_some();
        let (state, mut head) = match idle {
            Some(mut conn) => {
                let head = std::mem::take(&mut conn.head);
                (State::Writing(conn, 0), head)
            }
            None => (State::Connecting(connect(backend.addr, dial)), Vec::new()),
        };
        head::encode(parts, extra, backend.authority.as_str(), &mut head);
        Exchange {
            state,
            head,
            method: parts.method.clone(),
            raw,
            home: Some(Home {
                backend: backend.clone(),
                worker,
                max_idle,
                started: now,
            }),
            reused,
        }
    }

    /// Whether the connection was an idle one (a stale-connection retry only makes sense then).
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Sends the same request again on a new connection.
    pub fn retry_fresh(&mut self, dial: Dial<'_>) {
        let Some(home) = &self.home else { return };
        // The backend closed one idle connection: the rest of this worker's are suspect too.
        home.backend.idle.list(home.worker).clear();
        self.state = State::Connecting(connect(home.backend.addr, dial));
        self.reused = false;
    }
}

fn connect(addr: SocketAddr, dial: Dial<'_>) -> Connecting {
    let opened = dial.opened.clone();
    let timeout = dial.timeout;
    Box::pin(async move {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        opened.fetch_add(1, Ordering::Relaxed);
        Ok(stream)
    })
}

impl Future for Exchange {
    type Output = Result<Response<Body>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Connecting(connecting) => {
                    let io = ready!(connecting.as_mut().poll(cx)).map_err(Error::Connect)?;
                    this.state = State::Writing(Conn::new(io), 0);
                }
                State::Writing(conn, written) => {
                    while *written < this.head.len() {
                        let n =
                            ready!(Pin::new(&mut conn.io).poll_write(cx, &this.head[*written..]))?;
                        if n == 0 {
                            return Poll::Ready(Err(
                                io::Error::from(io::ErrorKind::WriteZero).into()
                            ));
                        }
                        *written += n;
                    }
                    if let State::Writing(conn, _) = std::mem::replace(&mut this.state, State::Done)
                    {
                        this.state = State::Reading(conn);
                    }
                }
                State::Reading(conn) => {
                    if !conn.buf.is_empty() {
                        match head::parse(&mut conn.buf, &this.method, this.raw)? {
                            head::Parsed::Partial => {}
                            head::Parsed::Informational => continue,
                            head::Parsed::Complete(parsed) => {
                                return Poll::Ready(this.respond(parsed))
                            }
                        }
                    }
                    if conn.buf.len() >= MAX_HEAD {
                        return Poll::Ready(Err(Error::Invalid("response head too large")));
                    }
                    if ready!(conn.poll_fill(cx, 0))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the backend closed the connection before answering",
                        )
                        .into()));
                    }
                }
                State::Done => {
                    return Poll::Ready(Err(Error::Invalid("exchange already finished")))
                }
            }
        }
    }
}

impl Exchange {
    fn respond(&mut self, parsed: head::Head) -> Result<Response<Body>, Error> {
        let (State::Reading(mut conn), Some(home)) = (
            std::mem::replace(&mut self.state, State::Done),
            self.home.take(),
        ) else {
            return Err(Error::Invalid("exchange already finished"));
        };
        conn.head = std::mem::take(&mut self.head);
        let mut body = Body::new(conn, parsed.framing, parsed.keep_alive, home);
        body.hop_by_hop_removed = parsed.hop_by_hop_removed;
        body.raw = parsed.raw;
        Ok(parsed.response.map(|()| body))
    }
}

#[cfg(test)]
mod tests;
