//! The lab's own tiny HTTP/1.1 wire code: reading request heads (with keep-alive and pipelining
//! leftovers kept), parsing them, discarding request bodies (Content-Length or chunked), and
//! building response heads, dates and JSON strings.
//!
//! It is written over raw bytes on purpose and shares nothing with the gateway, so a bug in the
//! gateway's HTTP code cannot hide behind the same bug here. What each fault answers is decided
//! in `serve.rs`, not here.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest request head accepted; a bigger one gets 431, like common servers do.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// How much one read asks the socket for.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size line (size plus extensions) accepted in a chunked request body.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// How the request body is framed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: String,
    pub target: String,
    /// The `y` of `HTTP/1.y`.
    pub minor: u8,
    /// Lowercased name and value, in arrival order, duplicates kept.
    pub headers: Vec<(String, String)>,
    pub body: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl Request {
    /// Headers merged by name in first-seen order, repeated values joined with ", ".
    pub fn merged_headers(&self) -> Vec<(&str, String)> {
        let mut out: Vec<(&str, String)> = Vec::new();
        for (name, value) in &self.headers {
            match out.iter_mut().find(|(n, _)| *n == name.as_str()) {
                Some((_, joined)) => {
                    joined.push_str(", ");
                    joined.push_str(value);
                }
                None => out.push((name.as_str(), value.clone())),
            }
        }
        out
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// The outcome of waiting for a request head.
#[derive(Debug)]
pub(crate) enum HeadRead {
    Request(Request),
    /// A complete head that is not a valid request; the reason is for the 400 body.
    Invalid(&'static str),
    /// The head grew past [`MAX_HEAD`] without ending.
    TooLarge,
    /// The peer closed before a complete head.
    Eof,
    /// No byte of a new request arrived within the idle limit.
    Idle,
}

/// One accepted connection with the bytes read past what has been consumed so far, so that
/// pipelined requests and over-read body bytes are never lost.
pub(crate) struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
        }
    }

    /// The bytes read past the last request head, taken out (for a switch of protocols).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads more bytes after the ones already buffered; `Ok(0)` is end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Waits for the next request head. `idle` bounds only the wait for its first byte, which
    /// is what a keep-alive idle timeout means; once a request has started, the peer sets the
    /// pace.
    pub async fn read_head(&mut self, idle: Option<Duration>) -> io::Result<HeadRead> {
        let mut scanned = 0;
        loop {
            if scanned == 0 {
                // Empty lines before a request line are ignored (RFC 9112 section 2.2); some
                // clients send a stray CRLF after a body.
                let lead = self
                    .buf
                    .iter()
                    .take_while(|b| **b == b'\r' || **b == b'\n')
                    .count();
                self.buf.drain(..lead);
            }
            if let Some(end) = find_head_end(&self.buf, scanned) {
                if end > MAX_HEAD {
                    return Ok(HeadRead::TooLarge);
                }
                let head: Vec<u8> = self.buf.drain(..end).collect();
                return Ok(match parse_request(&head) {
                    Ok(req) => HeadRead::Request(req),
                    Err(why) => HeadRead::Invalid(why),
                });
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(HeadRead::TooLarge);
            }
            scanned = self.buf.len().saturating_sub(2);
            let n = match idle {
                Some(limit) if self.buf.is_empty() => {
                    match tokio::time::timeout(limit, self.fill()).await {
                        Ok(res) => res?,
                        Err(_) => return Ok(HeadRead::Idle),
                    }
                }
                _ => self.fill().await?,
            };
            if n == 0 {
                return Ok(HeadRead::Eof);
            }
        }
    }

    /// Reads and drops the request body, returning how many body bytes it held (chunk data
    /// only, for chunked). Malformed framing is an `InvalidData` error.
    pub async fn discard_body(&mut self, framing: Framing) -> io::Result<u64> {
        match framing {
            Framing::None => Ok(0),
            Framing::Length(n) => {
                self.discard_exact(n).await?;
                Ok(n)
            }
            Framing::Chunked => self.discard_chunked().await,
        }
    }

    async fn discard_chunked(&mut self) -> io::Result<u64> {
        let mut total: u64 = 0;
        loop {
            let line = self.read_line(MAX_CHUNK_LINE).await?;
            let size = parse_chunk_size(&line).ok_or_else(|| invalid("bad chunk size"))?;
            if size == 0 {
                // Trailer fields are read and ignored, up to the empty line; their total size is
                // bounded like a head so a peer cannot make us buffer without end.
                let mut trailer_bytes = 0;
                loop {
                    let line = self.read_line(MAX_HEAD).await?;
                    if line.is_empty() {
                        return Ok(total);
                    }
                    trailer_bytes += line.len();
                    if trailer_bytes > MAX_HEAD {
                        return Err(invalid("trailers too large"));
                    }
                }
            }
            self.discard_exact(size).await?;
            if !self.read_line(2).await?.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
            total = total.saturating_add(size);
        }
    }

    async fn discard_exact(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let have = self.buf.len() as u64;
            if have >= n {
                self.buf.drain(..n as usize);
                return Ok(());
            }
            n -= have;
            self.buf.clear();
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// One line without its CRLF (or bare LF); a line longer than `max` is `InvalidData`.
    async fn read_line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=scanned + pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > max {
                    return Err(invalid("line too long"));
                }
                return Ok(line);
            }
            if self.buf.len() > max + 2 {
                return Err(invalid("line too long"));
            }
            scanned = self.buf.len();
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// The index just past the empty line ending a head, searching from `from`. Bare LF line ends
/// are accepted, as RFC 9112 allows and as hand-typed `nc` sessions need.
fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find_map(|i| {
        if buf[i] != b'\n' {
            return None;
        }
        match (buf.get(i + 1), buf.get(i + 2)) {
            (Some(b'\n'), _) => Some(i + 2),
            (Some(b'\r'), Some(b'\n')) => Some(i + 3),
            _ => None,
        }
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses a head (request line, header lines, empty line).
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, &'static str> {
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().ok_or("empty request")?;
    let mut parts = line.split(|b| *b == b' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err("malformed request line"),
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) {
        return Err("malformed method");
    }
    if target.is_empty() || target.iter().any(|b| b.is_ascii_control()) {
        return Err("malformed request target");
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err("unsupported HTTP version"),
    };

    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err("obsolete header line folding");
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or("header line without colon")?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err("malformed header name");
        }
        let value = trim_ows(&line[colon + 1..]);
        headers.push((
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }

    let values = |name: &str| tokens(&headers, name);

    let te = values("transfer-encoding");
    let lengths = values("content-length");
    let mut body = Framing::None;
    if !te.is_empty() {
        // A request body is only delimited by chunked when chunked is the final coding.
        if te.last().map(String::as_str) != Some("chunked") {
            return Err("transfer-encoding without final chunked");
        }
        body = Framing::Chunked;
    } else if let Some(first) = lengths.first() {
        if !first.bytes().all(|b| b.is_ascii_digit()) || lengths.iter().any(|l| l != first) {
            return Err("invalid content-length");
        }
        body = Framing::Length(first.parse().map_err(|_| "invalid content-length")?);
    }

    let connection = values("connection");
    let has = |token: &str| connection.iter().any(|t| t == token);
    let mut keep_alive = if minor == 1 {
        !has("close")
    } else {
        has("keep-alive") && !has("close")
    };
    // Both framings at once is a smuggling smell: answer, then close (RFC 9112 section 6.1).
    if !te.is_empty() && !lengths.is_empty() {
        keep_alive = false;
    }
    let expect_continue = minor == 1 && values("expect").iter().any(|v| v == "100-continue");

    Ok(Request {
        method: String::from_utf8_lossy(method).into_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
        minor,
        headers,
        body,
        keep_alive,
        expect_continue,
    })
}

/// The comma-separated, lowercased list elements of every `name` field.
fn tokens(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The size from a chunk-size line, extensions ignored.
fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let size = line.split(|b| *b == b';').next()?;
    let size = trim_ows(size);
    if size.is_empty() || size.len() > 16 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

/// The reason phrase for the statuses the lab is likely to send.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => match status / 100 {
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// A response head: status line, `Date`, `Server`, the given fields, and the empty line.
pub(crate) fn response_head(status: u16, fields: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nServer: cleargate-lab\r\n",
        reason(status),
        http_date(SystemTime::now())
    );
    for (name, value) in fields {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), computed by hand to need no date crate.
pub(crate) fn http_date(at: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // 1970-01-01 was a Thursday.
    let weekday = DAYS[((days + 4) % 7) as usize];
    // Days since the epoch to a proleptic Gregorian date, counting years from March so the leap
    // day falls at the end of the year.
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        MONTHS[(month - 1) as usize],
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Appends `s` as a JSON string literal.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let rfc_example = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(rfc_example), "Sun, 06 Nov 1994 08:49:37 GMT");
        let leap_day = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(http_date(leap_day), "Tue, 29 Feb 2000 00:00:00 GMT");
        let new_year = UNIX_EPOCH + Duration::from_secs(1_704_067_199);
        assert_eq!(http_date(new_year), "Sun, 31 Dec 2023 23:59:59 GMT");
    }

    #[test]
    fn json_escaping() {
        let mut out = String::new();
        push_json_str(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nX", 0), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nX", 0), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nA: b\r\n", 0), None);
    }

    #[test]
    fn parses_requests() {
        let r = parse_request(
            b"POST /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a:  2 \r\nContent-Length: 5\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), "/a");
        assert_eq!(r.body, Framing::Length(5));
        assert!(r.keep_alive);
        let merged = r.merged_headers();
        assert_eq!(merged[1], ("x-a", "1, 2".to_string()));

        let r = parse_request(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r = parse_request(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap();
        assert!(r.keep_alive);
        let r = parse_request(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
        assert!(!r.keep_alive);
        let r =
            parse_request(b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap();
        assert_eq!(r.body, Framing::Chunked);

        assert!(parse_request(b"GET / HTTP/2.0\r\n\r\n").is_err());
        assert!(parse_request(b"GET /  HTTP/1.1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(parse_request(b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"A;name=value"), Some(10));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b"zz"), None);
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"11111111111111111"), None);
    }
}
