//! A raw HTTP/1 client for tests that must control every byte: it sends bytes as given, reads
//! one response at a time, and tells whether the server closed the connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long a raw read waits before deciding the server is not going to say more.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One HTTP/1 response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status_line: String,
    /// Names lower-cased, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn status(&self) -> u16 {
        self.status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {:?}", self.status_line))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A raw client connection that can read one response at a time and then tell whether the
/// server closed the connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn open(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        // A server may answer and close before reading everything; what it answered still
        // arrives, so a failed write is left for the read to explain.
        let _ = self.stream.write_all(bytes);
    }

    /// Reads more bytes into the buffer; `Ok(0)` means the server closed the connection.
    pub fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = match self.stream.read(&mut chunk) {
            Ok(n) => n,
            // A close with unread request bytes in the server's buffer arrives as a reset.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                ) =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    pub fn fill_or_panic(&mut self, what: &str) {
        match self.fill() {
            Ok(0) => panic!(
                "connection closed while reading {what}; got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Ok(_) => {}
            Err(e) => panic!(
                "reading {what} failed ({e}); got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    pub fn take_line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return line;
            }
            self.fill_or_panic("a line");
        }
    }

    pub fn take_exact(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill_or_panic("a body");
        }
        self.buf.drain(..n).collect()
    }

    /// Reads a response's status line and fields, up to its body.
    fn head(&mut self) -> (String, Vec<(String, String)>) {
        let status_line = self.take_line();
        let mut headers = Vec::new();
        loop {
            let line = self.take_line();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line has a colon");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
        (status_line, headers)
    }

    /// Reads the answer to a HEAD request: a head, never a body.
    pub fn head_response(&mut self) -> RawResponse {
        let (status_line, headers) = self.head();
        RawResponse {
            status_line,
            headers,
            body: Vec::new(),
        }
    }

    /// Reads one complete response (`Content-Length`, chunked, or until close).
    pub fn response(&mut self) -> RawResponse {
        let (status_line, headers) = self.head();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if let Some(len) = get("content-length") {
            self.take_exact(len.parse().expect("numeric content-length"))
        } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let size = self.take_line();
                let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16)
                    .expect("hex chunk size");
                if size == 0 {
                    while !self.take_line().is_empty() {}
                    break;
                }
                body.extend(self.take_exact(size));
                assert_eq!(self.take_line(), "", "chunk not followed by CRLF");
            }
            body
        } else {
            while self.fill().is_ok_and(|n| n > 0) {}
            std::mem::take(&mut self.buf)
        };
        RawResponse {
            status_line,
            headers,
            body,
        }
    }

    /// The socket itself, for tests that read at their own pace.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// After a response: reads whatever else the server sends, and whether it then closed the
    /// connection (`false`: still open after `READ_TIMEOUT`).
    pub fn rest(&mut self) -> (String, bool) {
        let deadline = Instant::now() + READ_TIMEOUT;
        let closed = loop {
            match self.fill() {
                Ok(0) => break true,
                Ok(_) if Instant::now() < deadline => {}
                Ok(_) | Err(_) => break false,
            }
        };
        (
            String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned(),
            closed,
        )
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
