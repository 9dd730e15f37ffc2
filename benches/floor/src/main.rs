//! The floor: the least work a tokio reverse proxy can do per request on `benches/floor.py`'s
//! load, to show how far below nginx's CPU per request any tokio proxy can get on this machine.
//!
//! Not a proxy to run: keep-alive HTTP/1.1 with bodiless requests and `Content-Length`
//! responses only, no checks, no timeouts, no metrics. Per request it does what a proxy cannot
//! avoid: read and parse the request head, drop `Connection`, add `X-Forwarded-For`, take an
//! idle backend connection (round robin), write the head, read the response head and body,
//! write them to the client. One thread, one current-thread runtime, like `sluice --workers 1`.
//!
//! usage: floor LISTEN BACKEND...

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The backends and their idle connections (one thread: no locks).
struct Pool {
    backends: Vec<String>,
    idle: RefCell<Vec<Vec<TcpStream>>>,
    next: Cell<usize>,
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: floor LISTEN BACKEND...");
    let backends: Vec<String> = args.collect();
    assert!(!backends.is_empty(), "usage: floor LISTEN BACKEND...");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    tokio::task::LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await?;
        let pool = Rc::new(Pool {
            idle: RefCell::new(backends.iter().map(|_| Vec::new()).collect()),
            backends,
            next: Cell::new(0),
        });
        loop {
            let (client, _) = listener.accept().await?;
            client.set_nodelay(true)?;
            tokio::task::spawn_local(serve(client, pool.clone()));
        }
    })
}

/// Where a head ends (after its blank line), if it is all in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

async fn serve(mut client: TcpStream, pool: Rc<Pool>) {
    let mut from_client = Vec::with_capacity(8192);
    let mut from_backend = Vec::with_capacity(8192);
    let mut head = Vec::with_capacity(1024);
    while exchange(
        &mut client,
        &pool,
        &mut from_client,
        &mut from_backend,
        &mut head,
    )
    .await
    .is_ok()
    {}
}

/// One request and its response; `Err` ends the connection (also on the client's close).
async fn exchange(
    client: &mut TcpStream,
    pool: &Pool,
    from_client: &mut Vec<u8>,
    from_backend: &mut Vec<u8>,
    head: &mut Vec<u8>,
) -> io::Result<()> {
    let end = loop {
        if let Some(end) = head_end(from_client) {
            break end;
        }
        fill(client, from_client).await?;
    };
    rewrite(&from_client[..end], head)?;
    from_client.drain(..end);

    let at = pool.next.get();
    pool.next.set((at + 1) % pool.backends.len());
    let idle = pool.idle.borrow_mut()[at].pop();
    let mut backend = match idle {
        Some(backend) => backend,
        None => {
            let backend = TcpStream::connect(&pool.backends[at]).await?;
            backend.set_nodelay(true)?;
            backend
        }
    };
    backend.write_all(head).await?;

    from_backend.clear();
    let total = loop {
        fill(&mut backend, from_backend).await?;
        if let Some(end) = head_end(from_backend) {
            break end + content_length(&from_backend[..end])?;
        }
    };
    while from_backend.len() < total {
        fill(&mut backend, from_backend).await?;
    }
    client.write_all(&from_backend[..total]).await?;
    pool.idle.borrow_mut()[at].push(backend);
    Ok(())
}

/// Reads what has arrived onto the end of `buf`; end of stream is an error.
async fn fill(io: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.reserve(16 * 1024);
    match io.read_buf(buf).await? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// The request head as the backend gets it: `Connection` dropped, `X-Forwarded-For` added.
fn rewrite(raw: &[u8], head: &mut Vec<u8>) -> io::Result<()> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut fields);
    request.parse(raw).map_err(|_| io::ErrorKind::InvalidData)?;
    let (Some(method), Some(path)) = (request.method, request.path) else {
        return Err(io::ErrorKind::InvalidData.into());
    };
    head.clear();
    for part in [method.as_bytes(), b" ", path.as_bytes(), b" HTTP/1.1\r\n"] {
        head.extend_from_slice(part);
    }
    for field in request.headers.iter() {
        if !field.name.eq_ignore_ascii_case("connection") {
            for part in [field.name.as_bytes(), b": ", field.value, b"\r\n"] {
                head.extend_from_slice(part);
            }
        }
    }
    head.extend_from_slice(b"X-Forwarded-For: 127.0.0.1\r\n\r\n");
    Ok(())
}

/// A response head's `Content-Length` (0 when absent).
fn content_length(raw: &[u8]) -> io::Result<usize> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    response
        .parse(raw)
        .map_err(|_| io::ErrorKind::InvalidData)?;
    let Some(field) = response
        .headers
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("content-length"))
    else {
        return Ok(0);
    };
    std::str::from_utf8(field.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::ErrorKind::InvalidData.into())
}
