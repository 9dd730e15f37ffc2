//! What the request path allocates, counted by a global allocator that wraps the system's and
//! notes every large allocation. The backend and the client are raw sockets with buffers on
//! the stack, so what is counted is sluice's.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::raw::*;
use support::*;

/// hyper's read buffer starts at 8 KiB; anything of that size is counted.
const LARGE: usize = 8 * 1024;

static LARGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is passed to `System` unchanged; the counter is only an atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's guarantees for `layout` are `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE && layout.size() < LARGE {
            LARGE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `dealloc`, and `new_size` is the caller's to vouch for.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A backend that answers every request head it reads with a fixed 200, on keep-alive
/// connections, reading into a buffer on the stack.
fn raw_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut held = 0;
                loop {
                    let n = match stream.read(&mut buf[held..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    held += n;
                    // GETs only: every head ends the request.
                    while let Some(end) = find(&buf[..held], b"\r\n\r\n") {
                        buf.copy_within(end + 4..held, 0);
                        held -= end + 4;
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// hyper keeps its read buffer for a connection's next request only when nothing still holds
/// a slice of it. A request's header values are such slices: the `Host` copied into
/// `X-Forwarded-Host`, a client's `x-request-id` answered back, the `User-Agent` and `Referer`
/// of its access log record. Kept past the request's head, they made hyper allocate a fresh
/// 8 KiB buffer for every request of the connection.
#[test]
fn keep_alive_requests_reuse_hyper_read_buffer() {
    let backend = raw_backend();
    for access_log in [false, true] {
        let config = config_with(&[backend], "", "", "")
            .replace("access_log = false", &format!("access_log = {access_log}"));
        let sluice = TestSluice::start(&config);
        let mut conn = RawConn::open(sluice.addr());
        let requests = [
            "GET /a HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\nReferer: /r\r\n\r\n",
            "GET /b HTTP/1.1\r\nHost: example.com\r\nx-request-id: client-id-1\r\n\r\n",
        ];
        let mut exchange = |request: &str| {
            conn.send(request.as_bytes());
            let response = conn.response();
            assert_eq!(response.status(), 200, "{response:?}");
            assert_eq!(response.text(), "ok");
            response
        };
        // Warm up: the connection's buffers, the upstream connection, lazily made state.
        for _ in 0..20 {
            for request in requests {
                exchange(request);
            }
        }
        let before = LARGE_ALLOCATIONS.load(Ordering::Relaxed);
        let rounds = 200;
        for _ in 0..rounds {
            for request in requests {
                exchange(request);
            }
        }
        let echoed = exchange(requests[1]);
        assert_eq!(echoed.header("x-request-id"), Some("client-id-1"));
        let large = LARGE_ALLOCATIONS.load(Ordering::Relaxed) - before;
        // Without reuse this is one per request (400); a few may come from elsewhere in the
        // process (a timer wheel level, the log's buffer).
        assert!(
            large < 20,
            "access log {access_log}: {large} allocations of 8 KiB or more in {} requests",
            2 * rounds
        );
    }
}
