//! A response body read straight off the backend connection: by length, chunked (trailers
//! included) or until close. The connection goes back to its idle list the moment the body's
//! last byte is read, before the client has even been sent it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use hyper::body::{Frame, SizeHint};

use super::head::Framing;
use super::{Conn, Home};

/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 64 * 1024;

#[derive(Debug)]
enum State {
    Length(u64),
    /// Chunked: the next thing is a chunk-size line.
    ChunkSize,
    /// Chunked: this many bytes of chunk data left.
    ChunkData(u64),
    /// Chunked: the CRLF after a chunk's data.
    ChunkEnd,
    /// Chunked: after the last chunk, the trailer section.
    Trailers,
    Close,
    Done,
}

/// The body of a response from sluice's HTTP/1.1 client.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    home: Option<Home>,
    /// The response's map has no hop-by-hop fields (`head::Head::hop_by_hop_removed`).
    pub(super) hop_by_hop_removed: bool,
    /// The response's fields, unparsed (its map is empty): `head::Head::raw`.
    pub(super) raw: Option<Box<super::RawFields>>,
}

impl Body {
    pub(super) fn new(conn: Conn, framing: Framing, keep_alive: bool, home: Home) -> Body {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::ChunkSize,
            Framing::Close => State::Close,
        };
        let mut body = Body {
            conn: Some(conn),
            state,
            keep_alive,
            home: Some(home),
            hop_by_hop_removed: false,
            raw: None,
        };
        if matches!(body.state, State::Done) {
            body.release();
        }
        body
    }

    /// Whether the response's header map was made without its hop-by-hop fields.
    pub fn hop_by_hop_removed(&self) -> bool {
        self.hop_by_hop_removed
    }

    /// The response's fields, unparsed, if they were left so (its map is then empty): taken, so
    /// that the head's bytes go once the fields are written, not with the body.
    pub fn take_raw_fields(&mut self) -> Option<Box<super::RawFields>> {
        self.raw.take()
    }

    /// The response's fields, unparsed, if they were left so: for sluice to set its own.
    pub fn raw_fields_mut(&mut self) -> Option<&mut super::RawFields> {
        self.raw.as_deref_mut()
    }

    /// The body has been read to its end: the connection can serve the next request, if it
    /// holds nothing beyond this response.
    fn release(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) else {
            return;
        };
        if self.keep_alive && conn.buf.is_empty() {
            home.give_back(conn);
        }
    }

    fn conn(&mut self) -> io::Result<&mut Conn> {
        self.conn
            .as_mut()
            .ok_or_else(|| io::Error::other("response body read after its end"))
    }

    /// Reads more from the backend; `Ok(false)` at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let coming = match self.state {
            State::Length(n) | State::ChunkData(n) => n,
            _ => 0,
        };
        let conn = self.conn()?;
        conn.poll_fill(cx, coming).map_ok(|n| n > 0)
    }

    /// Reads more of a body that must go on: the backend closing now cuts it short.
    fn more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(self.fill(cx))? {
            true => Poll::Ready(Ok(())),
            false => Poll::Ready(Err(cut_short())),
        }
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) => {
                    let conn = self.conn()?;
                    if conn.buf.is_empty() {
                        ready!(self.more(cx))?;
                        continue;
                    }
                    let take = left.min(conn.buf.len() as u64) as usize;
                    let data = conn.buf.split_to(take).freeze();
                    let left = left - take as u64;
                    match self.state {
                        State::Length(_) if left == 0 => self.release(),
                        State::Length(_) => self.state = State::Length(left),
                        _ if left == 0 => self.state = State::ChunkEnd,
                        _ => self.state = State::ChunkData(left),
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close => {
                    let conn = self.conn()?;
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if !ready!(self.fill(cx))? {
                        // The end of the body is the end of the connection.
                        self.state = State::Done;
                        self.conn = None;
                        return Poll::Ready(None);
                    }
                }
                State::ChunkSize => {
                    let conn = self.conn()?;
                    match httparse::parse_chunk_size(&conn.buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            conn.buf.advance(used);
                            self.state = match size {
                                0 => State::Trailers,
                                n => State::ChunkData(n),
                            };
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() < MAX_LINE => {
                            ready!(self.more(cx))?;
                        }
                        _ => return Poll::Ready(Some(Err(invalid("invalid chunk size line")))),
                    }
                }
                State::ChunkEnd => {
                    let conn = self.conn()?;
                    if conn.buf.len() < 2 {
                        ready!(self.more(cx))?;
                        continue;
                    }
                    if &conn.buf[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(invalid("chunk data longer than its size"))));
                    }
                    conn.buf.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers => {
                    let conn = self.conn()?;
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(&conn.buf, &mut fields) {
                        Ok(httparse::Status::Complete((used, fields))) => {
                            let trailers = trailer_map(fields);
                            conn.buf.advance(used);
                            self.release();
                            return match trailers {
                                Some(Ok(map)) => Poll::Ready(Some(Ok(Frame::trailers(map)))),
                                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                                None => Poll::Ready(None),
                            };
                        }
                        Ok(httparse::Status::Partial) if conn.buf.len() < MAX_TRAILERS => {
                            ready!(self.more(cx))?;
                        }
                        _ => return Poll::Ready(Some(Err(invalid("invalid trailer section")))),
                    }
                }
            }
        }
    }
}

/// The trailer fields as a map; `None` when there are none.
fn trailer_map(fields: &[httparse::Header<'_>]) -> Option<io::Result<HeaderMap>> {
    if fields.is_empty() {
        return None;
    }
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = http::HeaderName::from_bytes(field.name.as_bytes());
        let value = http::HeaderValue::from_bytes(field.value);
        match (name, value) {
            (Ok(name), Ok(value)) => {
                map.append(name, value);
            }
            _ => return Some(Err(invalid("invalid trailer field"))),
        }
    }
    Some(Ok(map))
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the backend closed the connection before the end of the body",
    )
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        let this = self.get_mut();
        let frame = ready!(this.poll_inner(cx));
        if let Some(Err(_)) = frame {
            // Whatever is left of the connection cannot be trusted.
            this.state = State::Done;
            this.conn = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
