//! Hop-by-hop header names, and what one pass over a response head found of them and of its
//! framing, so that later steps need not look the names up again.

use http::header::{
    HeaderName, CONNECTION, CONTENT_LENGTH, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::HeaderMap;

pub const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection and never cross a proxy (RFC 9110 7.6.1).
/// Compared as names, not strings: a standard name is an enum, so the check costs little.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
];

/// Bits of a set of [`HOP_BY_HOP`] names: bit `i` stands for `HOP_BY_HOP[i]`.
pub const BIT_CONNECTION: u16 = 1 << 0;
pub const BIT_KEEP_ALIVE: u16 = 1 << 1;
pub const BIT_TRANSFER_ENCODING: u16 = 1 << 7;

/// The place of `name` in [`HOP_BY_HOP`]: its length picks the one or two candidates.
pub fn index(name: &HeaderName) -> Option<usize> {
    let candidates: &[usize] = match name.as_str().len() {
        2 => &[5],
        7 => &[6, 8],
        10 => &[0, 1],
        16 => &[2],
        17 => &[7],
        18 => &[3],
        19 => &[4],
        _ => return None,
    };
    candidates.iter().copied().find(|&i| HOP_BY_HOP[i] == *name)
}

/// What a response head holds of the names a proxy handles, found while the head was parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadFacts {
    /// Which [`HOP_BY_HOP`] names are present, one bit each.
    pub hop_by_hop: u16,
    /// At most one `Content-Length` line, of digits only: nothing about the length to rewrite.
    pub plain_length: bool,
    /// A `Connection` line names a header besides `keep-alive` and `close` (that header is
    /// hop-by-hop too).
    pub connection_names_more: bool,
}

impl HeadFacts {
    /// The facts of `headers`, found by one pass over them.
    pub fn of(headers: &HeaderMap) -> HeadFacts {
        Scan::of(headers).done()
    }
}

/// [`HeadFacts`] gathered line by line.
#[derive(Default)]
pub(crate) struct Scan {
    pub(crate) hop_by_hop: u16,
    /// `Content-Length` lines seen.
    pub(crate) lengths: u32,
    /// The last `Content-Length` line's number, when it is only digits.
    pub(crate) length: Option<u64>,
    pub(crate) connection_names_more: bool,
    /// `Connection` said `close`; said `keep-alive`.
    pub(crate) close: bool,
    pub(crate) keep_alive: bool,
}

impl Scan {
    /// The scan of a whole header map.
    pub(crate) fn of(headers: &HeaderMap) -> Scan {
        let mut scan = Scan::default();
        for (name, value) in headers {
            scan.line(name, value.as_bytes());
        }
        scan
    }

    pub(crate) fn line(&mut self, name: &HeaderName, value: &[u8]) {
        if let Some(i) = index(name) {
            self.hop_by_hop |= 1 << i;
            if i == 0 {
                for token in connection_tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive = true;
                    } else {
                        self.connection_names_more = true;
                    }
                }
            }
        } else if *name == CONTENT_LENGTH {
            self.lengths += 1;
            self.length = parse_decimal(value);
        }
    }

    /// Whether the connection stays open after this response: HTTP/1.1 unless `close` was
    /// said, HTTP/1.0 only when `keep-alive` was (and `close` was not).
    pub(crate) fn keeps_alive(&self, http11: bool) -> bool {
        !self.close && (http11 || self.keep_alive)
    }

    pub(crate) fn done(&self) -> HeadFacts {
        HeadFacts {
            hop_by_hop: self.hop_by_hop,
            plain_length: self.lengths == 0 || (self.lengths == 1 && self.length.is_some()),
            connection_names_more: self.connection_names_more,
        }
    }
}

/// The options a `Connection` value lists, trimmed, empty ones left out.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// The header names a `Connection` value lists besides `keep-alive` and `close` (which name
/// nothing beyond [`HOP_BY_HOP`]): they are hop-by-hop too.
pub fn named_by(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    connection_tokens(value)
        .filter(|t| !t.eq_ignore_ascii_case(b"keep-alive") && !t.eq_ignore_ascii_case(b"close"))
}

/// Whether `value` lists `token` (options compare without regard to case).
pub(crate) fn has_token(value: &[u8], token: &[u8]) -> bool {
    connection_tokens(value).any(|t| t.eq_ignore_ascii_case(token))
}

/// A decimal number of at most 19 digits and nothing else.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add((d - b'0') as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn every_hop_by_hop_name_has_its_place() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(index(name), Some(i), "{name}");
        }
        assert_eq!(index(&http::header::CONTENT_TYPE), None);
        assert_eq!(index(&HeaderName::from_static("x-forwarded-for")), None);
        assert_eq!(HOP_BY_HOP[0], CONNECTION);
        assert_eq!(HOP_BY_HOP[1], KEEP_ALIVE);
        assert_eq!(HOP_BY_HOP[7], TRANSFER_ENCODING);
    }

    fn facts(lines: &[(&str, &str)]) -> HeadFacts {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        HeadFacts::of(&h)
    }

    #[test]
    fn facts_name_the_hop_by_hop_lines_and_an_unusual_length() {
        assert_eq!(
            facts(&[("content-type", "text/plain"), ("content-length", "6")]),
            HeadFacts {
                hop_by_hop: 0,
                plain_length: true,
                connection_names_more: false,
            }
        );
        let f = facts(&[("connection", "keep-alive"), ("keep-alive", "timeout=5")]);
        assert_eq!(f.hop_by_hop, BIT_CONNECTION | BIT_KEEP_ALIVE);
        assert!(f.plain_length && !f.connection_names_more);
        assert!(facts(&[("connection", "close, x-trace")]).connection_names_more);
        assert!(facts(&[("connection", "Keep-Alive"), ("connection", "x")]).connection_names_more);
        assert!(!facts(&[("connection", "Close , ,keep-alive")]).connection_names_more);
        let f = facts(&[("transfer-encoding", "chunked"), ("upgrade", "x")]);
        assert_eq!(f.hop_by_hop, BIT_TRANSFER_ENCODING | 1 << 8);
        assert!(!facts(&[("content-length", "6"), ("content-length", "6")]).plain_length);
        assert!(!facts(&[("content-length", "6, 6")]).plain_length);
        assert!(!facts(&[("content-length", "")]).plain_length);
        assert!(!facts(&[("content-length", " 6")]).plain_length);
    }
}
