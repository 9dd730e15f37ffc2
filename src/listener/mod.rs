//! Accepting and serving downstream connections: socket options, the connection limit,
//! HTTP/1.1 and HTTP/2 (prior knowledge) on one port, per-connection timeouts, graceful shutdown.
//!
//! sluice finds a connection's protocol itself (ALPN on HTTPS, the first bytes, read and
//! replayed, in plain text) and hands it to hyper's HTTP/1 or HTTP/2 server directly:
//! hyper-util's auto-detecting server cost about 6.7 KiB more per idle connection.
//!
//! hyper's own header-read timer starts at different moments across versions and does not run
//! before hyper has the connection, so sluice times connection phases itself: a
//! `ConnState` records when a request head started arriving and when the connection went idle,
//! and a watchdog, polled in the connection's own task, closes it when a phase overruns.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::framing::{self, Scanner};
use crate::metrics::{ConnectionGauge, ListenerCounters};
use crate::proxy::{headers, upgrade, ConnContext, Proxy};
use crate::state::Shared;
use crate::tls::{Downstream, Session};

mod h1;
pub mod limit;
mod protocol;
mod watched;

use protocol::{http1_builder, http2_builder, protocol, Protocol, Served};
use watched::WatchedIo;

const NONE: u64 = u64::MAX;

/// Timing state of one downstream connection, shared by its requests and its watchdog.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    inflight: AtomicUsize,
    /// Milliseconds after `epoch` when the current request head began to arrive, or `NONE`.
    head_since: AtomicU64,
    /// Milliseconds after `epoch` when the last request finished, or `NONE` before the first.
    idle_since: AtomicU64,
    /// HTTP/2 frames between requests are not request heads.
    h2: AtomicBool,
    /// Follows the raw HTTP/1 byte stream for framing hyper would silently repair.
    framing: Mutex<Scanner>,
    /// Counts the connection as open on its listener while it lives.
    gauge: Option<ConnectionGauge>,
    /// A WebSocket tunnel opened: what the client sends now is frames, not HTTP.
    tunnel: AtomicBool,
    /// hyper's connection is being wound down (or is gone) while the socket stays open: an idle
    /// HTTP/1 connection going dormant (`Served::Dormant`). hyper's end of the connection must
    /// not shut the socket down.
    dormant: AtomicBool,
    /// sluice's own HTTP/1 side (`h1`) was asked to wind down: to rest when `dormant`, or else
    /// to close, once the request in progress (if any) is answered.
    winding_down: AtomicBool,
    /// Milliseconds after `epoch` since when a write has been waiting on a client that does
    /// not read, or `NONE`.
    write_blocked_since: AtomicU64,
    /// Milliseconds after `epoch` (rounded up) by which the HTTP/1 request in flight must have
    /// its response head, or `NONE`: the watchdog's timer wakes the connection then
    /// (`watch_request`).
    request_deadline: AtomicU64,
}

impl ConnState {
    fn new(limits: framing::Limits, gauge: Option<ConnectionGauge>) -> ConnState {
        ConnState {
            gauge,
            epoch: Instant::now(),
            inflight: AtomicUsize::new(0),
            // A new connection must deliver its first head within the header timeout.
            head_since: AtomicU64::new(0),
            idle_since: AtomicU64::new(NONE),
            h2: AtomicBool::new(false),
            framing: Mutex::new(Scanner::new(limits)),
            tunnel: AtomicBool::new(false),
            dormant: AtomicBool::new(false),
            winding_down: AtomicBool::new(false),
            write_blocked_since: AtomicU64::new(NONE),
            request_deadline: AtomicU64::new(NONE),
        }
    }

    /// A write went out (`true`) or must wait for the client to read (`false`). The clock is read
    /// only when a write starts waiting.
    fn on_write(&self, progressed: bool) {
        let blocked = self.write_blocked_since.load(Ordering::Relaxed);
        if progressed && blocked != NONE {
            self.write_blocked_since.store(NONE, Ordering::Relaxed);
        } else if !progressed && blocked == NONE {
            self.write_blocked_since
                .store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// The counters of the connection's listener.
    pub fn listener_counters(&self) -> Option<&ListenerCounters> {
        self.gauge.as_ref().map(ConnectionGauge::counters)
    }

    /// The framing verdict on the HTTP/1 request that just arrived (heads are taken in order).
    pub fn framing_verdict(&self) -> framing::Verdict {
        let mut scanner = self.framing.lock().unwrap_or_else(|e| e.into_inner());
        scanner
            .take_verdict()
            .unwrap_or(Err(framing::Reject::Ambiguous(
                "request framing could not be verified\n",
            )))
    }

    /// sluice's own HTTP/1 side takes the heads from here on (`framing::Scanner::step_aside`).
    pub fn scanner_step_aside(&self) -> Option<framing::Limits> {
        let mut scanner = self.framing.lock().unwrap_or_else(|e| e.into_inner());
        scanner.step_aside()
    }

    /// The connection becomes a tunnel (`proxy::upgrade`): its bytes bypass the framing scanner.
    pub fn open_tunnel(&self) {
        self.tunnel.store(true, Ordering::Relaxed);
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Has the watchdog's timer wake the connection's task by `deadline`, in place of a timer
    /// of the request's own (inserted into and removed from tokio's timer wheel per request):
    /// on HTTP/1 the request's future is polled by that task, which then sees the deadline has
    /// passed. `false` on HTTP/2, whose requests run in tasks of their own. Cleared when the
    /// returned guard drops.
    pub fn watch_request(&self, deadline: Instant) -> Option<WatchedDeadline<'_>> {
        if self.h2.load(Ordering::Relaxed) {
            return None;
        }
        let after = deadline.saturating_duration_since(self.epoch);
        // Rounded up: the timer must not fire before the deadline, or the request would check,
        // find time left, and not be woken again.
        let ms = u64::try_from(after.as_nanos().div_ceil(1_000_000)).unwrap_or(NONE - 1);
        self.request_deadline.store(ms, Ordering::Relaxed);
        Some(WatchedDeadline(self))
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// A request arrived: its head is complete, and it is in flight until the guard drops.
    pub fn request_started(self: &Arc<Self>, h2: bool) -> ActiveRequest {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(NONE, Ordering::Relaxed);
        ActiveRequest(self.clone(), NONE)
    }

    fn on_read(&self) {
        if self.inflight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == NONE
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_since.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// What the watchdog should do now. `rest`: the connection may go dormant once idle.
    fn verdict(&self, now: Instant, timeouts: &Timeouts, rest: bool) -> Verdict {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            // A request's own timeouts govern it, but a client that stops reading its answer
            // would hold the connection for ever: that is timed here.
            let blocked = self.write_blocked_since.load(Ordering::Relaxed);
            if blocked == NONE {
                return Verdict::Wait(now + timeouts.send);
            }
            let deadline = self.at(blocked) + timeouts.send;
            return if now >= deadline {
                Verdict::SlowRead
            } else {
                Verdict::Wait(deadline)
            };
        }
        let head = self.head_since.load(Ordering::Relaxed);
        let (deadline, expired) = if head != NONE {
            (self.at(head) + timeouts.header_read, Verdict::SlowHead)
        } else {
            // `NONE` cannot meet a cleared head (a request ran); count from the start if it does.
            let idle = match self.idle_since.load(Ordering::Relaxed) {
                NONE => 0,
                idle => idle,
            };
            let (limit, expired) = timeouts.idle_phase(rest);
            (self.at(idle) + limit, expired)
        };
        if now >= deadline {
            expired
        } else {
            Verdict::Wait(deadline)
        }
    }
}

/// How long an HTTP/1 connection stays idle before it goes dormant: hyper's connection, with
/// its read and write buffers, is dropped, and a new one is made when the client sends again.
/// Long enough that a connection in use never pays for the new one; short enough that idle
/// keep-alive connections cost little memory (`docs/performance-memory.md`).
const REST_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, PartialEq)]
enum Verdict {
    Wait(Instant),
    Idle,
    /// Idle for `REST_AFTER`: time to go dormant.
    Rest,
    SlowHead,
    /// A response has waited `send_timeout` for a client that does not read.
    SlowRead,
}

/// RAII: the watchdog times an HTTP/1 request's response head (`ConnState::watch_request`).
pub struct WatchedDeadline<'a>(&'a ConnState);

impl Drop for WatchedDeadline<'_> {
    fn drop(&mut self) {
        self.0.request_deadline.store(NONE, Ordering::Relaxed);
    }
}

/// RAII: one request in flight on a connection; with when it ended, if its owner read the
/// clock then (`ended_at`), in the connection's milliseconds.
#[derive(Debug)]
pub struct ActiveRequest(Arc<ConnState>, u64);

impl ActiveRequest {
    pub fn conn(&self) -> &ConnState {
        &self.0
    }

    /// The request ends at `now`: the connection's idle time counts from it, with no clock
    /// read of its own.
    pub fn ended_at(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.0.epoch).as_millis();
        self.1 = u64::try_from(ms).unwrap_or(NONE - 1);
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        let state = &self.0;
        if state.inflight.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = match self.1 {
                NONE => state.now_ms(),
                ended => ended,
            };
            state.idle_since.store(now, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Timeouts {
    header_read: Duration,
    idle: Duration,
    send: Duration,
}

impl Timeouts {
    /// How long an idle connection waits for its next request before the watchdog acts, and
    /// what it does then: go dormant, when `rest` allows it and the idle timeout is longer than
    /// `REST_AFTER`, or close.
    fn idle_phase(&self, rest: bool) -> (Duration, Verdict) {
        if rest && self.idle > REST_AFTER {
            (REST_AFTER, Verdict::Rest)
        } else {
            (self.idle, Verdict::Idle)
        }
    }
}

/// A listener's settings in the form its connections use, built once per config. A reload
/// that changes a listener's settings but not its address replaces them in place: the socket
/// stays bound, connections accepted from then on use the new settings.
pub struct ListenerSettings {
    pub settings: config::Listener,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    timeouts: Timeouts,
    limits: framing::Limits,
    /// HTTPS: the rustls configuration new handshakes use (a reload swaps it with the rest;
    /// established connections keep theirs) and its certificate chooser.
    tls: Option<(tokio_rustls::TlsAcceptor, Arc<crate::tls::CertResolver>)>,
}

impl ListenerSettings {
    pub fn new(settings: config::Listener) -> ListenerSettings {
        ListenerSettings {
            http1: http1_builder(&settings),
            http2: http2_builder(&settings),
            tls: settings.tls.as_ref().map(|tls| {
                let (config, resolver) = crate::tls::server_config(tls);
                (tokio_rustls::TlsAcceptor::from(config), resolver)
            }),
            timeouts: Timeouts {
                header_read: settings.header_read_timeout,
                idle: settings.idle_timeout,
                send: settings.send_timeout,
            },
            // Heads beyond these are refused by the scanner before hyper's buffer fills;
            // smaller ones that still break a limit are answered by the request service.
            limits: framing::Limits {
                max_head: (settings.max_header_bytes)
                    .saturating_add(settings.max_uri_bytes)
                    .saturating_add(512),
                max_request_line: settings.max_uri_bytes.saturating_add(64),
            },
            settings,
        }
    }
}

impl std::fmt::Debug for ListenerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSettings")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// One listener's settings, shared by its acceptors on every worker.
pub type SharedSettings = Arc<arc_swap::ArcSwap<ListenerSettings>>;

/// One listener socket served by one worker.
pub struct Acceptor {
    pub shared: Arc<Shared>,
    /// The listener's id (`state::ListenerState::id`).
    pub id: usize,
    pub worker: usize,
    pub listener: TcpListener,
    pub settings: SharedSettings,
}

impl Acceptor {
    /// Accepts until `shutdown` (of the process, or of this listener by a reload removing it),
    /// spawning each connection on `tracker`; it also closes the connections gracefully.
    pub async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        let counters = self.shared.listener_counters(self.id);
        // One wait for shutdown for the acceptor's life: a new one per accepted connection would
        // register with (and leave) the token's waiters, under its lock, every time.
        let mut stopping = pin!(shutdown.cancelled());
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_error(&self.settings.load().settings.name, e).await;
                        continue;
                    }
                },
                () = &mut stopping => break,
            };
            // Beyond `max_connections`, this acceptor waits for a slot before serving (and so
            // before accepting more): excess connections queue in the kernel's backlog. A
            // waiting acceptor holds no slot, so idle listeners never starve busy ones.
            let permit = tokio::select! {
                permit = self.shared.connections.acquire() => permit,
                () = &mut stopping => break,
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let settings = self.settings.load_full();
            let gauge = ConnectionGauge::new(counters.clone());
            let shared = self.shared.clone();
            let (id, worker) = (self.id, self.worker);
            let shutdown = shutdown.clone();
            let streams = tracker.clone();
            tracker.spawn(async move {
                // The handshake runs in the connection's own task, never in the accept loop.
                let Some((mut stream, tls)) = handshake(&settings, stream, peer, &shutdown).await
                else {
                    return;
                };
                // The first head's clock starts now, and runs while the protocol is found.
                let state = Arc::new(ConnState::new(settings.limits, Some(gauge)));
                let Some((protocol, first)) =
                    protocol(&settings, &mut stream, peer, &shutdown).await
                else {
                    return;
                };
                let ctx = ConnContext {
                    shared: shared.clone(),
                    listener: id,
                    worker,
                    peer,
                    peer_value: headers::peer_value(peer.ip()),
                    conn: state.clone(),
                    tls,
                    tunnel: Arc::default(),
                    runner: upgrade::Runner {
                        tracker: streams,
                        shutdown: shutdown.clone(),
                        idle: settings.timeouts.idle,
                        shared: shared.clone(),
                    },
                };
                let tunnel = ctx.tunnel.clone();
                serve(&settings, (protocol, first), stream, state, ctx, &shutdown).await;
                // hyper handed the socket over after a 101: the tunnel lives on in this task,
                // once the HTTP phase's future has ended (the task has room for the larger of
                // the two, not for both: every connection's task is as large as its largest
                // phase).
                if let Some(tunnel) = tunnel.take() {
                    tunnel.run(settings.timeouts.idle, &shutdown, &shared).await;
                }
                drop(permit);
            });
        }
    }
}

/// On an HTTPS listener, the TLS handshake, which must finish within the listener's
/// `header_read_timeout` (a client that sends nothing, or half a ClientHello, is cut off then);
/// on a plain one, the socket as it is. `None`: the connection is closed.
async fn handshake(
    settings: &ListenerSettings,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: &CancellationToken,
) -> Option<(Downstream, Option<Session>)> {
    let Some((acceptor, resolver)) = &settings.tls else {
        return Some((Downstream::Plain(stream), None));
    };
    // Boxed: rustls's handshake state is large, and a connection's task is as large as its
    // largest phase; it lives on the heap only while the handshake runs.
    let accepting = Box::pin(acceptor.accept(stream));
    let tls = opening(settings, peer, shutdown, "TLS handshake", accepting).await?;
    let sni = tls.get_ref().1.server_name();
    let session = Session {
        certificate: resolver.choose(sni),
        resolver: resolver.clone(),
    };
    Some((Downstream::Tls(Box::new(tls)), Some(session)))
}

/// A step of opening a connection (the TLS handshake, finding its protocol), which must finish
/// within the listener's `header_read_timeout` and is abandoned at shutdown. `None`: the
/// connection is closed.
async fn opening<T>(
    settings: &ListenerSettings,
    peer: SocketAddr,
    shutdown: &CancellationToken,
    step: &'static str,
    work: impl Future<Output = io::Result<T>>,
) -> Option<T> {
    tokio::select! {
        done = tokio::time::timeout(settings.timeouts.header_read, work) => match done {
            Ok(Ok(done)) => Some(done),
            Ok(Err(e)) => {
                tracing::debug!(%peer, step, error = %e, "connection failed while opening");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, step, "connection opening not finished in time");
                None
            }
        },
        () = shutdown.cancelled() => None,
    }
}

async fn accept_error(listener: &str, e: io::Error) {
    // Running out of file descriptors must not turn into a busy loop: back off briefly.
    tracing::warn!(listener, error = %e, "accept failed");
    if !matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves HTTP on the connection until it closes: hyper's connection, polled together with the
/// shutdown signal and the watchdog of the connection's timeouts.
/// `first`: the bytes read to find the protocol, which hyper reads first.
async fn serve(
    settings: &ListenerSettings,
    (protocol, first): (Protocol, bytes::Bytes),
    stream: Downstream,
    state: Arc<ConnState>,
    ctx: ConnContext,
    shutdown: &CancellationToken,
) {
    let timeouts = settings.timeouts;
    let peer = ctx.peer;
    // Only clear-text connections go dormant: a TLS session has buffers of its own, and
    // plaintext may wait inside it where socket readiness does not show it.
    let plain = matches!(stream, Downstream::Plain(_));
    let io = TokioIo::new(WatchedIo {
        stream,
        state: state.clone(),
        answered: false,
        unflushed: false,
        refusal: Vec::new(),
        replay: first,
        scan_replay: true,
        scanning: true,
    });
    let mut conn = Served::new(settings, protocol, io, Proxy(Arc::new(ctx)));
    let mut stopping = pin!(shutdown.cancelled());
    let stop = Arc::new(StopSignal::default());
    let stop_waker = Waker::from(stop.clone());
    let mut stop_registered = false;
    let mut sleep = pin!(tokio::time::sleep(timeouts.header_read.min(timeouts.send)));
    let mut closing = false;
    // The connection's start is the first head's start (`head_since` = 0), armed above.
    let mut armed = Armed {
        head: 0,
        idle: NONE,
        request: NONE,
        waiting: false,
    };
    let outcome = poll_fn(|cx| {
        // The shutdown future is polled with its own waker, and again only once that waker has
        // fired: re-polling it on every wake of a busy connection would take a lock shared by
        // all connections.
        if !closing && (!stop_registered || stop.fired.swap(false, Ordering::AcqRel)) {
            if !stop_registered {
                *stop.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
                stop_registered = true;
            }
            if stopping
                .as_mut()
                .poll(&mut Context::from_waker(&stop_waker))
                .is_ready()
            {
                // Finish what is in flight, close idle keep-alive connections, accept no more.
                if conn.is_dormant() {
                    return Poll::Ready(None);
                }
                conn.graceful_shutdown();
                closing = true;
                return poll_again(cx);
            }
        }
        // After the shutdown signal: an answer that is ready as shutdown begins already says
        // the connection closes.
        if let Poll::Ready(result) = conn.poll(cx, settings, &state) {
            return Poll::Ready(result.err());
        }
        let rest = plain && !closing && conn.may_rest(&state);
        match watchdog(
            cx,
            &state,
            &timeouts,
            sleep.as_mut(),
            &mut armed,
            closing,
            rest,
        ) {
            Action::Wait => Poll::Pending,
            Action::Rest => {
                // hyper closes its idle connection; `Served::poll` keeps the socket.
                state.dormant.store(true, Ordering::Relaxed);
                conn.graceful_shutdown();
                poll_again(cx)
            }
            Action::Close(why) if conn.is_dormant() => {
                tracing::debug!(%peer, why, "closing dormant connection");
                Poll::Ready(None)
            }
            Action::Close(why) => {
                tracing::debug!(%peer, why, "closing connection");
                conn.graceful_shutdown();
                closing = true;
                // A graceful close gets the header timeout to finish before it is cut.
                sleep.as_mut().reset(Instant::now() + timeouts.header_read);
                armed.waiting = false;
                poll_again(cx)
            }
            Action::Drop(why) => {
                tracing::debug!(%peer, why, "dropping connection");
                Poll::Ready(None)
            }
        }
    })
    .await;
    if let Some(e) = outcome {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Wakes a connection's task when shutdown begins, and remembers that it did.
#[derive(Default)]
struct StopSignal {
    fired: AtomicBool,
    /// The connection task's waker (stable for the task's life), set on its first poll.
    task: Mutex<Option<Waker>>,
}

impl Wake for StopSignal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|e| e.into_inner()) {
            task.wake_by_ref();
        }
    }
}

/// Wakes the task again at once: after a state change that the connection must see.
fn poll_again<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

#[derive(Debug, PartialEq)]
enum Action {
    Wait,
    /// Close gracefully (idle: nothing is lost).
    Close(&'static str),
    /// Cut the connection now.
    Drop(&'static str),
    /// Go dormant (`Served::Dormant`).
    Rest,
}

/// The phase starts (`head_since`, `idle_since`) and the request deadline (`request_deadline`) the
/// timer has already taken into account.
struct Armed {
    head: u64,
    idle: u64,
    request: u64,
    /// The timer was polled since it was last set, so it holds the task's waker (the same for
    /// the task's life) and will wake it: until it has fired, there is no need to poll it on
    /// every wake of a busy connection (that was two timer polls per request).
    waiting: bool,
}

/// Checks the connection's phase deadline without reading the clock on the common path: the
/// armed timer only moves earlier when a new request head starts arriving (its header deadline
/// comes before the idle one); everything else is re-evaluated when the timer fires, at most
/// once per timeout period. `rest`: the connection may go dormant once idle (see `REST_AFTER`).
fn watchdog(
    cx: &mut Context<'_>,
    state: &ConnState,
    timeouts: &Timeouts,
    mut sleep: Pin<&mut Sleep>,
    armed: &mut Armed,
    closing: bool,
    rest: bool,
) -> Action {
    let head = state.head_since.load(Ordering::Relaxed);
    if head != NONE && head != armed.head {
        armed.head = head;
        // The head's own deadline, or sooner when the send timeout is shorter: once the
        // request is in flight, its writes are looked at every `send` from then on.
        let deadline = state.at(head) + timeouts.header_read.min(timeouts.send);
        if deadline < sleep.deadline() {
            sleep.as_mut().reset(deadline);
            armed.waiting = false;
        }
    }
    let idle = state.idle_since.load(Ordering::Relaxed);
    if idle != NONE && idle != armed.idle && state.inflight.load(Ordering::Relaxed) == 0 {
        armed.idle = idle;
        let deadline = state.at(idle) + timeouts.idle_phase(rest).0;
        if deadline < sleep.deadline() {
            sleep.as_mut().reset(deadline);
            armed.waiting = false;
        }
    }
    let request = state.request_deadline.load(Ordering::Relaxed);
    if request != NONE && request != armed.request {
        armed.request = request;
        let deadline = state.at(request);
        if deadline < sleep.deadline() {
            sleep.as_mut().reset(deadline);
            armed.waiting = false;
        }
    }
    if armed.waiting && !sleep.is_elapsed() {
        return Action::Wait;
    }
    loop {
        if sleep.as_mut().poll(cx).is_pending() {
            armed.waiting = true;
            return Action::Wait;
        }
        armed.waiting = false;
        let now = Instant::now();
        match state.verdict(now, timeouts, rest) {
            Verdict::Wait(deadline) => {
                // A request's deadline (`watch_request`) must not be carried past by a re-arm
                // for the connection's own checks.
                let deadline = match state.request_deadline.load(Ordering::Relaxed) {
                    NONE => deadline,
                    ms => match state.at(ms) {
                        request if request > now => deadline.min(request),
                        // Due, and its future not polled since: have the task poll it now.
                        _ => {
                            cx.waker().wake_by_ref();
                            deadline
                        }
                    },
                };
                sleep.as_mut().reset(deadline);
            }
            Verdict::SlowHead => return Action::Drop("request head not received in time"),
            Verdict::SlowRead => return Action::Drop("client not reading the response"),
            Verdict::Idle if !closing => return Action::Close("idle"),
            // Already closing, and the grace period is over.
            Verdict::Idle => return Action::Drop("graceful close took too long"),
            Verdict::Rest => return Action::Rest,
        }
    }
}

/// Binds a listening socket for `addr` with the options every listener uses. With
/// `reuse_port`, several workers can each bind their own socket to the same address and the
/// kernel spreads connections among them.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(false).ok();
    }
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests;
