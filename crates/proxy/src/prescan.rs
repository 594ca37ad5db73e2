//! A look at the raw bytes of HTTP/1 request heads, for the one fact hyper's parsed request
//! cannot show: whether a `Content-Length` line came with a `Transfer-Encoding` line (hyper
//! frames such a request by its chunked coding and deletes the length, RFC 9112 §6.1; the
//! gateway refuses it with 400, as nginx does, because that pair is what request smuggling is
//! made of).
//!
//! The scanner follows the byte stream of one connection as hyper will: heads end at the first
//! empty line (CRLF or bare LF, leading empty lines skipped), bodies are skipped by their length
//! or by their chunks and trailers. It never decides what is forwarded; hyper does. When anything
//! is in doubt (a line too long, a length it cannot read, a chunk size that overflows) it stops
//! for the rest of the connection: hyper refuses such a stream itself and closes it, so stopping
//! can only miss a flag, never invent one. After a head with both fields it stops too, because
//! hyper closes the connection after that request.
//!
//! It also measures each head exactly (request line to the empty line, as sent), so that a head
//! one byte over `max_request_header_bytes` gets the gateway's own 431 with `Proxy-Status`;
//! hyper's parser is left a wider limit as the backstop for heads that never end.
//!
//! The cost on the request path is one pass over the head's bytes looking for line ends, and a
//! comparison of the first letters of each header line; no allocation unless a line is split
//! across two reads.

/// Longest chunk-size line (with extensions) followed; hyper's own limit is lower.
const MAX_CHUNK_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between or inside request heads.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data, then its line end.
    ChunkData(u64),
    /// After a chunk's data: the CRLF that ends it.
    ChunkEnd,
    /// Reading trailer lines after the last chunk.
    Trailers,
    /// Not following this connection any more.
    Off,
}

/// What the scanner knows about one request head.
#[derive(Debug, Default, Clone, Copy)]
struct HeadFacts {
    started: bool,
    /// Bytes of the head so far, from the first byte of its request line.
    bytes: usize,
    content_length: Option<Option<u64>>,
    transfer_encoding: bool,
}

/// What the scanner found in a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Head number `head` (1 for the first) carried both `Content-Length` and
    /// `Transfer-Encoding`.
    LengthAndCoding { head: u64 },
    /// Head number `head` is `bytes` long, more than the limit.
    TooLarge { head: u64, bytes: usize },
}

/// Follows one client connection's bytes; see the module doc.
#[derive(Debug)]
pub struct HeadScanner {
    state: State,
    /// The longest head that is not a finding.
    max_head: usize,
    /// Longest line kept while waiting for its end: hyper refuses longer heads itself.
    max_line: usize,
    /// The start of a line split across reads.
    partial: Vec<u8>,
    head: HeadFacts,
    /// Request heads completed so far.
    heads: u64,
}

impl HeadScanner {
    /// A scanner for a connection whose heads may be `max_head` bytes long; lines longer than
    /// `max_line` stop it.
    pub fn new(max_head: usize, max_line: usize) -> HeadScanner {
        HeadScanner {
            state: State::Head,
            max_head,
            max_line,
            partial: Vec::new(),
            head: HeadFacts::default(),
            heads: 0,
        }
    }

    /// False once the scanner has stopped following the connection.
    pub fn following(&self) -> bool {
        self.state != State::Off
    }

    /// Feeds the next bytes read from the client. Returns a finding about a request head that
    /// `bytes` completed, if there is one.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<Finding> {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return None,
                State::Body(n) => {
                    let take = (bytes.len() as u64).min(n);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take {
                        State::Head
                    } else {
                        State::Body(n - take)
                    };
                }
                State::ChunkData(n) => {
                    let take = (bytes.len() as u64).min(n);
                    bytes = &bytes[take as usize..];
                    self.state = if n == take {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(n - take)
                    };
                }
                State::Head | State::ChunkSize | State::ChunkEnd | State::Trailers => {
                    let limit = if self.state == State::ChunkSize {
                        MAX_CHUNK_LINE
                    } else {
                        self.max_line
                    };
                    let Some(end) = memchr::memchr(b'\n', bytes) else {
                        if self.partial.len() + bytes.len() > limit {
                            self.stop();
                        } else {
                            self.partial.extend_from_slice(bytes);
                        }
                        return None;
                    };
                    let (line, rest) = bytes.split_at(end + 1);
                    bytes = rest;
                    let flagged = if self.partial.is_empty() {
                        self.line(&line[..end], end + 1)
                    } else {
                        let mut whole = std::mem::take(&mut self.partial);
                        whole.extend_from_slice(&line[..end]);
                        if whole.len() > limit {
                            self.stop();
                            return None;
                        }
                        let raw = whole.len() + 1;
                        let flagged = self.line(&whole, raw);
                        whole.clear();
                        if self.partial.is_empty() {
                            // Keep the allocation for the next split line.
                            self.partial = whole;
                        }
                        flagged
                    };
                    if flagged.is_some() {
                        return flagged;
                    }
                }
            }
        }
        None
    }

    fn stop(&mut self) {
        self.state = State::Off;
        self.partial = Vec::new();
    }

    /// One complete line, without its `\n`; `raw` is its length on the wire.
    fn line(&mut self, line: &[u8], raw: usize) -> Option<Finding> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        match self.state {
            State::Head => self.head_line(line, raw),
            State::ChunkSize => {
                match chunk_size(line) {
                    Some(0) => self.state = State::Trailers,
                    Some(n) => self.state = State::ChunkData(n),
                    None => self.stop(),
                }
                None
            }
            State::ChunkEnd => {
                if line.is_empty() {
                    self.state = State::ChunkSize;
                } else {
                    self.stop();
                }
                None
            }
            State::Trailers => {
                if line.is_empty() {
                    self.state = State::Head;
                }
                None
            }
            _ => None,
        }
    }

    fn head_line(&mut self, line: &[u8], raw: usize) -> Option<Finding> {
        if !self.head.started {
            // Empty lines before a request line are skipped, as hyper's parser does.
            if !line.is_empty() {
                self.head.started = true;
                self.head.bytes = raw;
            }
            return None;
        }
        self.head.bytes += raw;
        if !line.is_empty() {
            self.header_line(line);
            return None;
        }
        // The end of a head: how is its body framed?
        self.heads += 1;
        let facts = std::mem::take(&mut self.head);
        let mut finding = None;
        if facts.bytes > self.max_head {
            finding = Some(Finding::TooLarge {
                head: self.heads,
                bytes: facts.bytes,
            });
        }
        match (facts.transfer_encoding, facts.content_length) {
            (true, Some(_)) => {
                // hyper frames by the coding and closes after this request.
                self.stop();
                return finding.or(Some(Finding::LengthAndCoding { head: self.heads }));
            }
            (true, None) => self.state = State::ChunkSize,
            (false, Some(Some(0))) | (false, None) => self.state = State::Head,
            (false, Some(Some(n))) => self.state = State::Body(n),
            // A length hyper refuses; it closes the connection.
            (false, Some(None)) => self.stop(),
        }
        finding
    }

    fn header_line(&mut self, line: &[u8]) {
        // Only two names matter; their first letters rule out almost every line at once.
        let Some(&first) = line.first() else { return };
        let first = first | 0x20;
        if first != b'c' && first != b't' {
            return;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = content_length(value);
            self.head.content_length = match self.head.content_length {
                None => Some(parsed),
                Some(prev) if prev == parsed => Some(prev),
                // Two different lengths: hyper refuses the request.
                Some(_) => Some(None),
            };
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.head.transfer_encoding = true;
        }
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t'));
    let Some(start) = start else { return &[] };
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(start);
    &v[start..=end]
}

/// A `Content-Length` value as hyper reads it: digits, or a list of equal digit strings.
fn content_length(v: &[u8]) -> Option<u64> {
    let mut result = None;
    for part in v.split(|b| *b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse::<u64>().ok()?;
        match result {
            None => result = Some(n),
            Some(prev) if prev == n => {}
            Some(_) => return None,
        }
    }
    result
}

/// The size of a chunk-size line (`hex[;ext]`), or `None` when it is not one or overflows.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return None;
    }
    let n = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
    let rest = &line[digits..];
    if !rest.is_empty() && !matches!(rest[0], b';' | b' ' | b'\t') {
        return None;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: usize = 1 << 20;

    fn scanner() -> HeadScanner {
        HeadScanner::new(BIG, BIG)
    }

    fn heads(found: Vec<Finding>) -> Vec<u64> {
        found
            .into_iter()
            .map(|f| match f {
                Finding::LengthAndCoding { head } => head,
                Finding::TooLarge { head, .. } => panic!("head {head} too large"),
            })
            .collect()
    }

    fn flags(stream: &[u8]) -> Vec<u64> {
        let mut s = scanner();
        let mut out = Vec::new();
        // Byte by byte: every split point at once.
        for b in stream {
            out.extend(s.feed(std::slice::from_ref(b)));
        }
        let mut whole = scanner();
        let mut at_once = Vec::new();
        let mut rest = stream;
        // In one piece too; a flag stops the feed, so feed again after it (it is then off).
        while let Some(n) = whole.feed(rest) {
            at_once.push(n);
            rest = &[];
        }
        assert_eq!(out, at_once, "byte-wise and whole feeds differ");
        heads(out)
    }

    #[test]
    fn the_pair_is_flagged_in_the_head_that_carries_it() {
        check(
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[1],
        );
        check(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\ncontent-length: 4\r\n\r\n0\r\n\r\n",
            &[1],
        );
        // Bare LF line ends, as httparse accepts them.
        check(
            b"POST / HTTP/1.1\nHost: a\nCONTENT-LENGTH: 4\nTRANSFER-ENCODING: chunked\n\n",
            &[1],
        );
    }

    #[test]
    fn bodies_are_skipped_so_later_heads_are_numbered_right() {
        let mut s = Vec::new();
        s.extend_from_slice(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        s.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n");
        // A body that looks like a head with the pair must not be read as one.
        s.extend_from_slice(b"X: 1\r\nContent-Length: 1\r\nTransfer-Encoding:");
        s.extend_from_slice(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        s.extend_from_slice(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n");
        s.extend_from_slice(
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        check(&s, &[4]);
    }

    #[test]
    fn doubt_stops_the_scan() {
        // A chunk size that overflows: hyper refuses the stream, nothing more is followed.
        let mut s = scanner();
        s.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n");
        assert!(!s.following());
        let mut s = scanner();
        s.feed(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(!s.following());
        let mut s = HeadScanner::new(100, 200);
        s.feed(&[b'a'; 150]);
        assert!(s.following());
        s.feed(&[b'a'; 51]);
        assert!(!s.following());
    }

    #[test]
    fn heads_are_measured_exactly() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\nX: 12345\r\n\r\n";
        let n = head.len();
        for (limit, expect) in [
            (n, None),
            (n - 1, Some(Finding::TooLarge { head: 2, bytes: n })),
        ] {
            let mut s = HeadScanner::new(limit, BIG);
            // A leading empty line is not part of the head.
            let mut stream = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
            stream.extend_from_slice(head);
            let found: Vec<Finding> = stream.chunks(3).filter_map(|c| s.feed(c)).collect();
            assert_eq!(
                found,
                expect.into_iter().collect::<Vec<_>>(),
                "limit {limit}"
            );
        }
    }

    fn check(stream: &[u8], expect: &[u64]) {
        assert_eq!(flags(stream), expect, "{}", String::from_utf8_lossy(stream));
    }

    /// Generated connections: random heads, bodies framed either way, random read splits. The
    /// scanner must flag exactly the heads generated with both fields, in the right place.
    #[test]
    fn property_generated_streams_are_followed_exactly() {
        let mut rng = fastrand::Rng::with_seed(0x5ca9);
        for _ in 0..400 {
            let mut stream = Vec::new();
            let mut expect = Vec::new();
            let requests = rng.usize(1..6);
            for i in 1..=requests as u64 {
                if rng.bool() {
                    stream.extend_from_slice(b"\r\n");
                }
                let eol: &[u8] = if rng.u8(..10) == 0 { b"\n" } else { b"\r\n" };
                stream.extend_from_slice(b"POST /x HTTP/1.1");
                stream.extend_from_slice(eol);
                let body_len = rng.usize(0..300);
                let chunked = rng.bool();
                let both = rng.u8(..8) == 0;
                let mut fields: Vec<Vec<u8>> = (0..rng.usize(0..6))
                    .map(|n| format!("X-Filler-{n}: {}", "v".repeat(rng.usize(0..50))).into_bytes())
                    .collect();
                fields.push(b"Cookie: content-length: 9".to_vec());
                fields.push(b"Trailer-Note: transfer-encoding".to_vec());
                if chunked || both {
                    fields.push(b"Transfer-Encoding: chunked".to_vec());
                }
                if !chunked || both {
                    let name = if rng.bool() {
                        "Content-Length"
                    } else {
                        "content-length"
                    };
                    fields.push(format!("{name}: {body_len}").into_bytes());
                }
                rng.shuffle(&mut fields);
                for f in &fields {
                    stream.extend_from_slice(f);
                    stream.extend_from_slice(eol);
                }
                stream.extend_from_slice(eol);
                let body: Vec<u8> = (0..body_len)
                    .map(|_| b"GET /\r\n:0aZ"[rng.usize(..11)])
                    .collect();
                if both {
                    expect.push(i);
                    stream.extend_from_slice(b"0\r\n\r\n");
                    // hyper closes after this request; nothing after it is followed.
                    break;
                }
                if chunked {
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let n = rng.usize(1..=rest.len());
                        let ext = if rng.u8(..4) == 0 { ";a=b" } else { "" };
                        stream.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
                        stream.extend_from_slice(&rest[..n]);
                        stream.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    stream.extend_from_slice(b"0\r\n");
                    if rng.bool() {
                        stream.extend_from_slice(b"X-Sum: 1\r\n");
                    }
                    stream.extend_from_slice(b"\r\n");
                } else {
                    stream.extend_from_slice(&body);
                }
            }
            let mut s = scanner();
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let n = rng.usize(1..=rest.len().min(64));
                got.extend(s.feed(&rest[..n]));
                rest = &rest[n..];
            }
            let got = heads(got);
            assert_eq!(got, expect, "{}", String::from_utf8_lossy(&stream));
            if expect.is_empty() {
                assert!(s.following(), "{}", String::from_utf8_lossy(&stream));
            }
        }
    }
}
