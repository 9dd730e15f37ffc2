//! A raw-byte scanner of HTTP/1 request framing, run on everything a downstream connection
//! reads, before hyper parses it.
//!
//! hyper quietly repairs some ambiguous framings: it drops a `Content-Length` that meets a
//! `Transfer-Encoding`, and folds a repeated identical `Content-Length` into one. A proxy must
//! refuse those requests instead (request smuggling), and after hyper's repair the evidence is
//! gone. So this scanner follows the byte stream itself: request heads line by line, then each
//! body by its declared length or chunk by chunk, and records one verdict per head, in order.
//! The request service takes the verdicts in the same order.
//!
//! It fails closed: bytes it cannot follow put it in `Lost`, and every later request on the
//! connection is refused rather than trusted.

use std::collections::VecDeque;

/// Why a request head is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Framing that servers could read differently (400).
    Ambiguous(&'static str),
    /// The head is larger than the listener allows (431).
    HeadTooLarge,
    /// The request line is longer than the listener allows (414).
    UriTooLong,
}

/// What the scanner concluded about one request head.
pub type Verdict = Result<(), Reject>;

/// Size limits for request heads, in bytes as they arrive (line ends included).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_request_line: usize,
}

impl Limits {
    pub const NONE: Limits = Limits {
        max_head: usize::MAX,
        max_request_line: usize::MAX,
    };
}

/// The longest header line kept for inspection; longer `Content-Length` or
/// `Transfer-Encoding` lines are refused (no legitimate one comes close).
const MAX_KEPT_LINE: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a request head, at the start of a line.
    Head,
    /// Reading the rest of a header line.
    HeadLine,
    /// Fixed-length body: bytes left.
    Body(u64),
    // The chunked body, state for state as hyper's decoder reads it (hyper 1.x
    // `proto/h1/decode.rs`), so that the two can never disagree on where a body ends: what
    // hyper rejects, the scanner treats as lost.
    /// The first hex digit of a chunk size.
    ChunkStart,
    ChunkSize,
    /// Spaces or tabs after the size digits.
    ChunkSizeLws,
    ChunkExt,
    ChunkSizeLf,
    ChunkData(u64),
    ChunkDataCr,
    ChunkDataLf,
    /// After the last chunk: CR ends the body, anything else starts a trailer line.
    EndCr,
    Trailer,
    TrailerLf,
    EndLf,
    /// Not HTTP/1 (the HTTP/2 preface): nothing to check.
    Off,
    /// Out of step with the stream: refuse what follows.
    Lost,
}

/// Facts about the head being read.
#[derive(Debug, Default)]
struct Head {
    /// Bytes of the head so far.
    bytes: usize,
    http10: bool,
    lines: usize,
    content_lengths: usize,
    length: Option<u64>,
    transfer_encodings: usize,
    chunked: bool,
}

#[derive(Debug)]
pub struct Scanner {
    state: State,
    line: Vec<u8>,
    /// The current line is longer than `MAX_KEPT_LINE` and was cut.
    line_cut: bool,
    head: Head,
    chunk_size: u64,
    /// Heads seen and not yet taken by the request service.
    verdicts: VecDeque<Verdict>,
    limits: Limits,
    /// No request line seen yet: only the connection's very first line can be the HTTP/2
    /// preface.
    fresh: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new(Limits::NONE)
    }
}

impl Scanner {
    pub fn new(limits: Limits) -> Scanner {
        Scanner {
            limits,
            state: State::Head,
            line: Vec::with_capacity(64),
            line_cut: false,
            head: Head::default(),
            chunk_size: 0,
            verdicts: VecDeque::new(),
            fresh: true,
        }
    }

    /// The refusal of the next head to be served, if it is refused.
    pub fn next_refused(&self) -> Option<Reject> {
        match self.verdicts.front() {
            Some(Err(reject)) if self.state != State::Off => Some(*reject),
            _ => None,
        }
    }

    /// sluice's own HTTP/1 side (`listener::h1`) reads the heads from here on, and the scanner
    /// sees only the bytes it hands to hyper, from the start of a head. Possible only between
    /// heads, with no verdict waiting: then the connection is no longer fresh (the HTTP/2
    /// preface can only open it) and the limits come back, for that side to hand any head past
    /// them to hyper (and so to the scanner, which refuses it). `None`: the scanner must go on
    /// seeing every byte.
    pub fn step_aside(&mut self) -> Option<Limits> {
        let between_heads = self.state == State::Head
            && self.line.is_empty()
            && !self.line_cut
            && self.head.bytes == 0
            && self.head.lines == 0
            && self.verdicts.is_empty();
        if !between_heads {
            return None;
        }
        self.fresh = false;
        Some(self.limits)
    }

    /// The verdict on the next request head, in arrival order. `None` when the scanner has no
    /// complete head on record: the request cannot be vouched for.
    pub fn take_verdict(&mut self) -> Option<Verdict> {
        match self.state {
            State::Off => Some(Ok(())),
            _ => self.verdicts.pop_front(),
        }
    }

    /// Follows `bytes`, the next bytes read from the connection.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off | State::Lost => return,
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if n == left {
                        State::Head
                    } else {
                        State::Body(left - n)
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if n == left {
                        State::ChunkDataCr
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::Head | State::HeadLine => {
                    // Whole lines at a time: find the line end, inspect the line in place, and
                    // copy only a line that a read boundary cut in two.
                    let line_end = bytes.iter().position(|&b| b == b'\n');
                    let taken = line_end.map_or(bytes.len(), |end| end + 1);
                    if self.over_limits(taken, line_end.is_some()) {
                        return;
                    }
                    match line_end {
                        Some(end) => {
                            if self.line.is_empty() && !self.line_cut {
                                let line = &bytes[..end];
                                self.end_line_with(line);
                            } else {
                                self.keep(&bytes[..end]);
                                let line = std::mem::take(&mut self.line);
                                self.end_line_with(&line);
                                self.line = line;
                            }
                            self.line.clear();
                            self.line_cut = false;
                            bytes = &bytes[end + 1..];
                        }
                        None => {
                            self.keep(bytes);
                            if self.state == State::Head {
                                self.state = State::HeadLine;
                            }
                            return;
                        }
                    }
                }
                _ => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    self.byte(b);
                }
            }
        }
    }

    /// Counts `taken` more head bytes; refuses the head when it outgrows the limits.
    fn over_limits(&mut self, taken: usize, line_done: bool) -> bool {
        self.head.bytes += taken;
        let first_line = self.head.lines == 0;
        let reject = if first_line && self.head.bytes > self.limits.max_request_line {
            Some(Reject::UriTooLong)
        } else if self.head.bytes > self.limits.max_head {
            Some(Reject::HeadTooLarge)
        } else {
            None
        };
        // Leading empty lines do not count towards the request line.
        if first_line && line_done && self.line.is_empty() && taken <= 2 {
            self.head.bytes = 0;
        }
        match reject {
            Some(reject) => {
                self.verdicts.push_back(Err(reject));
                self.state = State::Lost;
                true
            }
            None => false,
        }
    }

    /// Keeps part of a line that continues in the next read (up to `MAX_KEPT_LINE`).
    fn keep(&mut self, part: &[u8]) {
        let room = MAX_KEPT_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
        if part.len() > room {
            self.line_cut = true;
        }
    }

    /// One byte of chunked framing.
    fn byte(&mut self, b: u8) {
        self.state = match (self.state, b) {
            (State::ChunkStart, b) if b.is_ascii_hexdigit() => self.size_digit(b),
            (State::ChunkSize, b) if b.is_ascii_hexdigit() => self.size_digit(b),
            (State::ChunkSize | State::ChunkSizeLws, b' ' | b'\t') => State::ChunkSizeLws,
            (State::ChunkSize | State::ChunkSizeLws, b';') => State::ChunkExt,
            (State::ChunkSize | State::ChunkSizeLws | State::ChunkExt, b'\r') => State::ChunkSizeLf,
            (State::ChunkExt, b'\n') => State::Lost,
            (State::ChunkExt, _) => State::ChunkExt,
            (State::ChunkSizeLf, b'\n') if self.chunk_size == 0 => State::EndCr,
            (State::ChunkSizeLf, b'\n') => State::ChunkData(self.chunk_size),
            (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, b'\n') => {
                self.chunk_size = 0;
                State::ChunkStart
            }
            (State::EndCr, b'\r') => State::EndLf,
            (State::Trailer, b'\r') => State::TrailerLf,
            (State::EndCr | State::Trailer, _) => State::Trailer,
            (State::TrailerLf, b'\n') => State::EndCr,
            (State::EndLf, b'\n') => State::Head,
            _ => State::Lost,
        };
    }

    fn size_digit(&mut self, b: u8) -> State {
        let digit = (b as char).to_digit(16).map_or(0, u64::from);
        match self
            .chunk_size
            .checked_mul(16)
            .and_then(|v| v.checked_add(digit))
        {
            Some(size) => {
                self.chunk_size = size;
                State::ChunkSize
            }
            None => State::Lost,
        }
    }

    fn end_line_with(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let empty = line.is_empty() && !self.line_cut;
        if empty && self.head.lines == 0 {
            // Empty lines before a request line are allowed and ignored (RFC 9112 2.2).
            self.state = State::Head;
        } else if empty {
            self.end_head();
        } else {
            self.header_line(line);
            if self.state != State::Off {
                self.state = State::Head;
            }
        }
    }

    fn header_line(&mut self, line: &[u8]) {
        let head = &mut self.head;
        head.lines += 1;
        if head.lines == 1 {
            if self.fresh && line == b"PRI * HTTP/2.0" {
                self.state = State::Off;
            }
            self.fresh = false;
            head.http10 = line.ends_with(b"HTTP/1.0");
            return;
        }
        // Only two names matter; most lines are dismissed on their first byte.
        if !matches!(line.first(), Some(b'c' | b'C' | b't' | b'T')) {
            return;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            head.content_lengths += 1;
            let digits =
                !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
            head.length = if digits && !self.line_cut {
                std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
            } else {
                None
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            head.transfer_encodings += 1;
            head.chunked = !self.line_cut && value.eq_ignore_ascii_case(b"chunked");
        }
    }

    fn end_head(&mut self) {
        let head = std::mem::take(&mut self.head);
        if self.state == State::Off {
            return;
        }
        // hyper refuses more header lines than this (its default), bare; refuse first, with a
        // cause and a request id.
        const MAX_HEADERS: usize = 100;
        if head.lines > MAX_HEADERS + 1 {
            self.verdicts.push_back(Err(Reject::HeadTooLarge));
            self.state = State::Lost;
            return;
        }
        let ambiguous = if head.content_lengths > 1 {
            Some("more than one Content-Length header\n")
        } else if head.content_lengths > 0 && head.transfer_encodings > 0 {
            Some("both Content-Length and Transfer-Encoding\n")
        } else if head.transfer_encodings > 0 && head.http10 {
            Some("Transfer-Encoding in HTTP/1.0\n")
        } else if head.transfer_encodings > 1 || (head.transfer_encodings == 1 && !head.chunked) {
            Some("unsupported Transfer-Encoding\n")
        } else if head.content_lengths == 1 && head.length.is_none() {
            Some("invalid Content-Length\n")
        } else {
            None
        };
        let verdict = ambiguous.map_or(Ok(()), |why| Err(Reject::Ambiguous(why)));
        self.state = match verdict {
            // The request will be refused and its connection closed: nothing after it counts.
            Err(_) => State::Lost,
            Ok(()) if head.chunked => {
                self.chunk_size = 0;
                State::ChunkStart
            }
            Ok(()) => match head.length {
                Some(n) if n > 0 => State::Body(n),
                _ => State::Head,
            },
        };
        self.verdicts.push_back(verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &[u8]) -> Scanner {
        let mut s = Scanner::default();
        s.feed(input);
        s
    }

    fn verdicts(input: &[u8]) -> Vec<Verdict> {
        let mut s = scan(input);
        std::iter::from_fn(|| s.take_verdict()).take(10).collect()
    }

    #[test]
    fn the_scanner_steps_aside_only_between_heads() {
        let limits = Limits {
            max_head: 100,
            max_request_line: 50,
        };
        let mut s = Scanner::new(limits);
        let got = s.step_aside().expect("a new connection is between heads");
        assert_eq!((got.max_head, got.max_request_line), (100, 50));
        // No longer fresh: the preface cannot turn checking off after the first head.
        s.feed(b"PRI * HTTP/2.0\r\n\r\n");
        assert_ne!(s.state, State::Off);

        let refuses = |bytes: &[u8]| {
            let mut s = Scanner::default();
            s.feed(bytes);
            s.step_aside().is_none()
        };
        // A verdict not yet taken; part of a head; a body still to come.
        assert!(refuses(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(refuses(b"GET / HTTP/1.1\r\nHo"));
        assert!(refuses(b"GET / HTTP/1.1\r\n"));
        let mut s = Scanner::default();
        s.feed(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\na");
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert!(s.step_aside().is_none());
        s.feed(b"bc");
        assert!(s.step_aside().is_some());
    }

    #[test]
    fn plain_requests_pass_in_order() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(verdicts(input), [Ok(()), Ok(())]);
    }

    #[test]
    fn bodies_are_skipped_by_length_and_by_chunks() {
        let input = b"POST / HTTP/1.1\r\nContent-Length: 20\r\n\r\nGET /fake HTTP/1.1\r\n\
                      POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5;ext=1\r\nhello\r\n1A\r\nContent-Length: 1\r\nContent\r\n0\r\nX-Trailer: 1\r\n\r\n\
                      GET /3 HTTP/1.1\r\n\r\n";
        assert_eq!(verdicts(input), [Ok(()), Ok(()), Ok(())]);
    }

    #[test]
    fn every_split_of_the_stream_gives_the_same_verdicts() {
        let input: &[u8] =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                             POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        for split in 0..input.len() {
            let mut s = Scanner::default();
            s.feed(&input[..split]);
            s.feed(&input[split..]);
            let got: Vec<Verdict> = std::iter::from_fn(|| s.take_verdict()).collect();
            assert_eq!(
                got,
                [
                    Ok(()),
                    Err(Reject::Ambiguous("more than one Content-Length header\n"))
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn ambiguous_heads_are_refused() {
        let cases: &[(&[u8], &str)] = &[
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", "more than one Content-Length header\n"),
            (b"POST / HTTP/1.1\r\ncontent-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "both Content-Length and Transfer-Encoding\n"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", "both Content-Length and Transfer-Encoding\n"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "unsupported Transfer-Encoding\n"),
            (b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n", "invalid Content-Length\n"),
        ];
        for (input, why) in cases {
            assert_eq!(
                verdicts(input),
                [Err(Reject::Ambiguous(why))],
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn nothing_after_a_refused_head_is_vouched_for() {
        let mut s = scan(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / HTTP/1.1\r\n\r\n");
        assert!(s.take_verdict().unwrap().is_err());
        assert_eq!(s.take_verdict(), None);
    }

    #[test]
    fn a_broken_chunk_loses_the_stream() {
        let mut s = scan(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET / HTTP/1.1\r\n\r\n",
        );
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert_eq!(s.take_verdict(), None);
        assert_eq!(s.state, State::Lost);
    }

    #[test]
    fn http2_preface_turns_the_scanner_off() {
        let mut s = scan(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04");
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert_eq!(s.take_verdict(), Some(Ok(())));
    }

    #[test]
    fn leading_empty_lines_and_bare_lf_are_tolerated() {
        assert_eq!(verdicts(b"\r\n\nGET / HTTP/1.1\nHost: a\n\n"), [Ok(())]);
    }

    #[test]
    fn an_overlong_framing_line_is_refused() {
        let mut input = b"POST / HTTP/1.1\r\nContent-Length: ".to_vec();
        input.extend(std::iter::repeat_n(b'0', 300));
        input.extend_from_slice(b"5\r\n\r\n");
        assert_eq!(
            verdicts(&input),
            [Err(Reject::Ambiguous("invalid Content-Length\n"))]
        );
    }

    #[test]
    fn heads_over_the_limits_are_refused_as_they_arrive() {
        let limits = Limits {
            max_head: 64,
            max_request_line: 30,
        };
        let mut s = Scanner::new(limits);
        s.feed(b"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(s.next_refused(), Some(Reject::UriTooLong));

        let mut s = Scanner::new(limits);
        s.feed(b"GET / HTTP/1.1\r\nx-big: ");
        assert_eq!(s.next_refused(), None);
        s.feed(&[b'a'; 64]);
        assert_eq!(s.next_refused(), Some(Reject::HeadTooLarge));

        // Sizes are per head: many small requests in a row are fine.
        let mut s = Scanner::new(limits);
        for _ in 0..10 {
            s.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        }
        assert_eq!(std::iter::from_fn(|| s.take_verdict()).count(), 10);
        assert_eq!(s.next_refused(), None);
    }

    #[test]
    fn transfer_encoding_in_http10_is_refused() {
        assert_eq!(
            verdicts(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            [Err(Reject::Ambiguous("Transfer-Encoding in HTTP/1.0\n"))]
        );
    }

    #[test]
    fn chunked_framing_follows_hyper_byte_for_byte() {
        // Bare LF where hyper needs CRLF: the scanner must not guess where the body ends.
        for bad in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n",
        ] {
            let mut s = scan(bad);
            s.feed(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(s.take_verdict(), Some(Ok(())));
            assert_eq!(s.take_verdict(), None, "{}", String::from_utf8_lossy(bad));
        }
        // A bare LF inside a trailer line is just a byte of that line, as in hyper: the
        // "request" hidden after it is trailer text, not a head.
        let mut s = scan(
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\nGET /p HTTP/1.1\r\n\r\n\
              GET /b HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        );
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert!(matches!(s.take_verdict(), Some(Err(_))));
        // Size, whitespace, extensions and trailers as hyper accepts them.
        assert_eq!(
            verdicts(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                  00005 \t;ext=\"q\"\r\nhello\r\n0\r\nA: 1\r\nB: 2\r\n\r\nGET / HTTP/1.1\r\n\r\n"
            ),
            [Ok(()), Ok(())]
        );
    }

    #[test]
    fn the_http2_preface_counts_only_as_the_first_line() {
        let mut s = scan(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nPRI * HTTP/2.0\r\n\r\n\
              GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        );
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert!(matches!(s.take_verdict(), Some(Err(_))));
        let mut s = scan(b"GET / HTTP/1.1\r\n\r\nPRI * HTTP/2.0\r\n\r\n");
        assert_eq!(s.take_verdict(), Some(Ok(())));
        assert_eq!(
            s.take_verdict(),
            Some(Ok(())),
            "a later PRI line is an ordinary request"
        );
        assert_ne!(s.state, State::Off);
    }
}
