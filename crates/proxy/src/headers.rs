//! Proxy header semantics: hop-by-hop headers stay on their hop, forwarding headers are added,
//! and every request carries a request id from the client to the upstream and back.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONNECTION, HOST};
use http::HeaderMap;

pub use net::hop::KEEP_ALIVE;
use net::hop::{index as hop_by_hop_index, HOP_BY_HOP};

use crate::log::Text;
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// True for a request header name that a backend could read as another header: any name with
/// an underscore (CGI-style environments read `X_Forwarded_For` as `X-Forwarded-For`, and
/// `Transfer_Encoding` as the framing header), and names that differ from `Transfer-Encoding` or
/// `Content-Length` only in their delimiters (`Transfer---Encoding`). nginx drops underscore
/// names by default too.
fn look_alike(name: &str) -> bool {
    if name.contains('_') {
        return true;
    }
    if name.len() <= "content-length".len() || !name.contains("--") {
        return false;
    }
    let bare: String = name.chars().filter(|c| *c != '-').collect();
    bare == "transferencoding" || bare == "contentlength"
}

/// Removes request header lines a backend could mistake for others; see [`look_alike`].
pub fn strip_look_alikes(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|k| look_alike(k.as_str()))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to, when it may be forwarded: `Connection`
/// lists `upgrade` and `Upgrade` is `websocket`. Anything else (`h2c` above all, which would
/// let a client talk past the gateway) is dropped with the other hop-by-hop headers.
pub fn upgrade_token(headers: &HeaderMap, version: http::Version) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: nearly every request has none, and one lookup settles it.
    let mut values = headers.get_all(http::header::UPGRADE).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let asked = headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
    });
    if !asked {
        return None;
    }
    value
        .as_bytes()
        .trim_ascii()
        .eq_ignore_ascii_case(b"websocket")
        .then(|| value.clone())
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them, or only `Connection`: one pass over the names finds
    // out which are there, and nothing is looked up or removed by a name that is absent.
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            present |= 1 << i;
        }
    }
    strip_present_hop_by_hop(headers, present);
}

/// [`strip_hop_by_hop`] once the names there are known: bit `i` of `present` stands for
/// `HOP_BY_HOP[i]` (an upstream response's [`net::hop::HeadFacts`] has them).
fn strip_present_hop_by_hop(headers: &mut HeaderMap, present: u16) {
    if present == 0 {
        return;
    }
    // Nearly always the header says only `keep-alive` or `close`: nothing to gather then.
    if present & 1 != 0
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|v| net::hop::named_by(v.as_bytes()).next().is_some())
    {
        strip_connection_named(headers);
    }
    strip_named_hop_by_hop(headers, present);
}

/// Removes the hop-by-hop headers of an upstream response, as the parse of its head found
/// them: no lookup for a name it does not have.
pub fn strip_response_hop_by_hop(headers: &mut HeaderMap, facts: &net::hop::HeadFacts) {
    if facts.connection_names_more {
        strip_connection_named(headers);
    }
    strip_named_hop_by_hop(headers, facts.hop_by_hop);
}

/// Removes the headers that `Connection` names (besides `keep-alive` and `close`).
fn strip_connection_named(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| net::hop::named_by(v.as_bytes()))
        .filter_map(|name| HeaderName::from_bytes(name).ok())
        .collect();
    for name in named {
        headers.remove(&name);
    }
}

/// Removes the [`HOP_BY_HOP`] names whose bits are set in `present`.
fn strip_named_hop_by_hop(headers: &mut HeaderMap, present: u16) {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// A client-supplied request id is kept when it is short and made of safe characters: shared
/// with the request's header, not copied.
pub fn sane_request_id(v: &HeaderValue) -> Option<Text> {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b));
    // Every byte allowed is ASCII.
    ok.then(|| Text::ascii_value(v)).flatten()
}

/// A fresh request id: 16 hex digits, as a header value that the access record, the upstream
/// request and the response share (one allocation).
pub fn new_request_id() -> Text {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    let mut id = Id {
        buf: [0u8; 16],
        len: 16,
    };
    for (i, d) in id.buf.iter_mut().enumerate() {
        *d = HEX[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
    // SAFETY: hex digits are ASCII, which a header value may hold.
    let value = unsafe { HeaderValue::from_maybe_shared_unchecked(Bytes::from_owner(id)) };
    // Always ASCII: the check that makes it a shared text cannot fail.
    Text::ascii_value(&value).unwrap_or_default()
}

/// The bytes of a header value in one allocation that clones share (a value made by copying
/// is copied again when it is first cloned): `N` bytes at most.
struct Id<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> AsRef<[u8]> for Id<N> {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// `text` as a header value whose clones share one allocation; `-` when it holds a byte that
/// a header value may not.
pub fn shared_value(text: &str) -> HeaderValue {
    fn owned<const N: usize>(bytes: &[u8]) -> Bytes {
        let mut owned = Id {
            buf: [0; N],
            len: bytes.len(),
        };
        owned.buf[..bytes.len()].copy_from_slice(bytes);
        Bytes::from_owner(owned)
    }
    let bytes = text.as_bytes();
    // What a header value may hold, checked once here.
    if !bytes
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
    {
        return HeaderValue::from_static("-");
    }
    let shared = match bytes.len() {
        0..=32 => owned::<32>(bytes),
        33..=128 => owned::<128>(bytes),
        _ => Bytes::copy_from_slice(bytes),
    };
    // SAFETY: every byte was checked above to be one a header value may hold.
    unsafe { HeaderValue::from_maybe_shared_unchecked(shared) }
}

/// The request id as a header value, for the upstream request and the response: the one
/// the id already is (the client's, or the gateway's own), cloned without a copy.
pub fn request_id_value(id: &Text) -> HeaderValue {
    match id.header_value() {
        Some(v) => v.clone(),
        None => shared_value(id),
    }
}

/// Names the gateway sets on every request: made once, so that setting them costs no
/// allocation (a name given as `&str` is copied into a new one at each insert).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// An address as a header value (`X-Forwarded-For` of a client that sent none): written on
/// the stack, then copied once into the value.
pub fn ip_value(ip: std::net::IpAddr) -> HeaderValue {
    let mut buf = IpText::new();
    buf.push_ip(ip);
    // SAFETY: an address's text is ASCII digits, hex letters, dots and colons.
    unsafe { HeaderValue::from_maybe_shared_unchecked(Bytes::copy_from_slice(buf.as_bytes())) }
}

/// Everything the upstream request gains on its way through.
pub struct Forwarding<'a> {
    pub client_ip: std::net::IpAddr,
    /// `client_ip` as a header value, when the connection made it once for all its requests.
    pub client_ip_value: Option<&'a HeaderValue>,
    pub proto: &'a str,
    pub host: Option<&'a HeaderValue>,
    /// This hop, as `Via` says it (`1.1 cleargate`).
    pub via: &'a HeaderValue,
}

/// Rewrites the client's headers into the upstream request's headers, and returns the lines
/// the gateway adds to them.
pub fn forward_request_headers(headers: &mut HeaderMap, f: &Forwarding<'_>) -> Added {
    // One pass over the names says which of those handled here are present; nothing is looked
    // up or removed by a name that is absent (most requests carry none of them).
    let mut hop_by_hop = 0u16;
    let (mut look_alikes, mut xff, mut xfp, mut xfh, mut via, mut id) =
        (false, false, false, false, false, false);
    for k in headers.keys() {
        if let Some(i) = hop_by_hop_index(k) {
            hop_by_hop |= 1 << i;
        } else if *k == X_FORWARDED_FOR {
            xff = true;
        } else if *k == X_FORWARDED_PROTO {
            xfp = true;
        } else if *k == X_FORWARDED_HOST {
            xfh = true;
        } else if *k == http::header::VIA {
            via = true;
        } else if *k == X_REQUEST_ID {
            id = true;
        } else if look_alike(k.as_str()) {
            look_alikes = true;
        }
    }
    strip_present_hop_by_hop(headers, hop_by_hop);
    if look_alikes {
        strip_look_alikes(headers);
    }
    // What the client sent of the fields the gateway sets is taken out of the map; the
    // gateway's own lines go beside it (`Added`), so the map never grows for them.
    let sent_xff = if xff {
        headers.remove(&X_FORWARDED_FOR)
    } else {
        None
    };
    let xff = match sent_xff {
        Some(prev) if !prev.to_str().unwrap_or("").trim().is_empty() => {
            let prev = prev.to_str().unwrap_or("");
            HeaderValue::from_str(&format!("{prev}, {}", f.client_ip)).ok()
        }
        _ => Some(
            f.client_ip_value
                .cloned()
                .unwrap_or_else(|| ip_value(f.client_ip)),
        ),
    };
    if xfp {
        headers.remove(&X_FORWARDED_PROTO);
    }
    let host = f.host.map(|host| {
        if xfh {
            headers.remove(&X_FORWARDED_HOST);
        }
        // In place: the client's Host line is replaced where it stands.
        headers.insert(HOST, host.clone());
        // A copy, not a clone: kept beside the map, a clone of the client's bytes measurably
        // held on to the connection's read buffer (idle connections grew from 14.1 to
        // 16.7 KiB each in bench/idle.sh).
        HeaderValue::from_bytes(host.as_bytes()).unwrap_or_else(|_| host.clone())
    });
    let sent_via = if via {
        headers.remove(http::header::VIA)
    } else {
        None
    };
    let via = match sent_via {
        Some(prev) => {
            let mut joined = Vec::with_capacity(prev.len() + 2 + f.via.len());
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(f.via.as_bytes());
            HeaderValue::from_bytes(&joined).ok()
        }
        None => Some(f.via.clone()),
    };
    if id {
        headers.remove(&X_REQUEST_ID);
    }
    Added {
        xff,
        https: f.proto == "https",
        host,
        via,
    }
}

/// The header lines the gateway adds to a request, kept beside its header map and written
/// after it: `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `Via` (and the
/// request's `X-Request-Id`, kept with the request).
#[derive(Clone, Default)]
pub struct Added {
    xff: Option<HeaderValue>,
    https: bool,
    host: Option<HeaderValue>,
    via: Option<HeaderValue>,
}

static XFF_NAME: HeaderName = X_FORWARDED_FOR;
static XFP_NAME: HeaderName = X_FORWARDED_PROTO;
static XFH_NAME: HeaderName = X_FORWARDED_HOST;
static VIA_NAME: HeaderName = http::header::VIA;
static REQUEST_ID_NAME: HeaderName = X_REQUEST_ID;
static HTTP: HeaderValue = HeaderValue::from_static("http");
static HTTPS: HeaderValue = HeaderValue::from_static("https");

/// The added lines of one request, borrowed, as the HTTP client takes them.
pub struct Lines<'a> {
    lines: [(&'a HeaderName, &'a HeaderValue); 5],
    len: usize,
}

impl Lines<'_> {
    pub fn as_slice(&self) -> &[(&HeaderName, &HeaderValue)] {
        &self.lines[..self.len]
    }
}

impl Added {
    /// The lines in the order they are written, `request_id` last.
    pub fn lines<'a>(&'a self, request_id: &'a HeaderValue) -> Lines<'a> {
        let mut out = Lines {
            lines: [(&REQUEST_ID_NAME, request_id); 5],
            len: 0,
        };
        let mut push = |name: &'a HeaderName, value: &'a HeaderValue| {
            out.lines[out.len] = (name, value);
            out.len += 1;
        };
        if let Some(v) = &self.xff {
            push(&XFF_NAME, v);
        }
        push(&XFP_NAME, if self.https { &HTTPS } else { &HTTP });
        if let Some(v) = &self.host {
            push(&XFH_NAME, v);
        }
        if let Some(v) = &self.via {
            push(&VIA_NAME, v);
        }
        push(&REQUEST_ID_NAME, request_id);
        out
    }
}

/// An address written as text on the stack, without `fmt` for IPv4 (the common case: `fmt`
/// costs about a microsecond per address).
pub struct IpText {
    buf: [u8; 64],
    len: usize,
}

impl IpText {
    pub fn new() -> IpText {
        IpText {
            buf: [0; 64],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn push_decimal(&mut self, v: u16) {
        if v >= 10_000 {
            self.push(b'0' + (v / 10_000) as u8);
        }
        if v >= 1000 {
            self.push(b'0' + (v / 1000 % 10) as u8);
        }
        if v >= 100 {
            self.push(b'0' + (v / 100 % 10) as u8);
        }
        if v >= 10 {
            self.push(b'0' + (v / 10 % 10) as u8);
        }
        self.push(b'0' + (v % 10) as u8);
    }

    /// `v` as `fmt` writes it (IPv6 addresses: rare enough to leave to `fmt`).
    fn push_fmt(&mut self, v: impl std::fmt::Display) {
        use std::io::Write as _;
        let mut cur = std::io::Cursor::new(&mut self.buf[self.len..]);
        let _ = write!(cur, "{v}");
        self.len += cur.position() as usize;
    }

    /// `203.0.113.7`, or an IPv6 address as `fmt` writes it.
    pub fn push_ip(&mut self, ip: std::net::IpAddr) {
        match ip {
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    self.push_decimal(u16::from(octet));
                }
            }
            std::net::IpAddr::V6(v6) => self.push_fmt(v6),
        }
    }

    /// `203.0.113.7:5123` or `[::1]:5123`, as `SocketAddr`'s `fmt` writes them.
    pub fn push_socket_addr(&mut self, addr: std::net::SocketAddr) {
        match addr {
            std::net::SocketAddr::V4(v4) => {
                self.push_ip(std::net::IpAddr::V4(*v4.ip()));
                self.push(b':');
                self.push_decimal(v4.port());
            }
            std::net::SocketAddr::V6(v6) => self.push_fmt(v6),
        }
    }
}

impl Default for IpText {
    fn default() -> Self {
        IpText::new()
    }
}

/// Appends this hop to `Via`.
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    use http::header::Entry;
    // One lookup of the name, whether it is there or not.
    match headers.entry(http::header::VIA) {
        // The common case: a clone of a value made once, no copy.
        Entry::Vacant(e) => {
            e.insert(via.clone());
        }
        Entry::Occupied(mut e) => {
            let prev = e.get().as_bytes();
            let mut joined = Vec::with_capacity(prev.len() + 2 + via.len());
            joined.extend_from_slice(prev);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(via.as_bytes());
            match HeaderValue::from_bytes(&joined) {
                Ok(v) => {
                    e.insert(v);
                }
                Err(_) => {
                    e.remove();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_16_hex_digits_of_a_random_number() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_request_id().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 16, "{id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
            assert_eq!(
                format!("{:016x}", u64::from_str_radix(id, 16).unwrap()),
                *id
            );
        }
    }

    #[test]
    fn connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret-Hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn addresses_are_written_as_fmt_writes_them() {
        let mut addrs: Vec<std::net::SocketAddr> = vec![
            "0.0.0.0:0".parse().unwrap(),
            "255.255.255.255:65535".parse().unwrap(),
            "10.0.100.9:80".parse().unwrap(),
            "[::1]:8080".parse().unwrap(),
            "[2001:db8::ff00:42:8329]:1".parse().unwrap(),
            "[::ffff:192.0.2.1]:443".parse().unwrap(),
        ];
        for _ in 0..2000 {
            let ip = std::net::Ipv4Addr::from(fastrand::u32(..));
            addrs.push(std::net::SocketAddr::from((ip, fastrand::u16(..))));
        }
        for a in addrs {
            let mut t = IpText::new();
            t.push_socket_addr(a);
            assert_eq!(t.as_bytes(), a.to_string().as_bytes());
            let mut t = IpText::new();
            t.push_ip(a.ip());
            assert_eq!(t.as_bytes(), a.ip().to_string().as_bytes());
            assert_eq!(ip_value(a.ip()), a.ip().to_string().as_str());
        }
    }

    #[test]
    fn messages_without_hop_by_hop_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("1"));
        h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("a/b"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}");
        }
    }

    /// Generated heads: stripping by what the parse found leaves the same headers as the
    /// full strip that looks at every name.
    #[test]
    fn a_response_stripped_by_its_facts_keeps_what_the_full_strip_keeps() {
        let mut rng = fastrand::Rng::with_seed(0x5e1f);
        let names = [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "content-length",
            "x-trace",
            "server",
        ];
        let connection = [
            "keep-alive",
            "close",
            "x-trace",
            "Keep-Alive, x-trace",
            "close,",
            "server",
        ];
        for _ in 0..2000 {
            let mut h = HeaderMap::new();
            for _ in 0..rng.usize(0..6) {
                let name = names[rng.usize(..names.len())];
                let value = if name == "connection" {
                    connection[rng.usize(..connection.len())]
                } else {
                    "1"
                };
                h.append(
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                );
            }
            let mut full = h.clone();
            strip_hop_by_hop(&mut full);
            let facts = net::hop::HeadFacts::of(&h);
            let before = h.clone();
            strip_response_hop_by_hop(&mut h, &facts);
            assert_eq!(h, full, "{before:?}");
        }
    }

    #[test]
    fn headers_named_by_connection_go_with_it() {
        let strip = |connection: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in connection {
                h.append(CONNECTION, HeaderValue::from_static(v));
            }
            for name in ["x-secret", "x-other", "x-kept", "close-ish"] {
                h.insert(name, HeaderValue::from_static("1"));
            }
            strip_hop_by_hop(&mut h);
            let mut left: Vec<String> = h.keys().map(|k| k.to_string()).collect();
            left.sort();
            left
        };
        let all = ["close-ish", "x-kept", "x-other", "x-secret"];
        assert_eq!(strip(&["keep-alive"]), all);
        assert_eq!(strip(&["Close"]), all);
        assert_eq!(strip(&[" , keep-alive ,"]), all);
        assert_eq!(
            strip(&["keep-alive, X-Secret"]),
            ["close-ish", "x-kept", "x-other"]
        );
        assert_eq!(
            strip(&["close", "x-other ,x-secret"]),
            ["close-ish", "x-kept"]
        );
    }

    #[test]
    fn look_alike_names_are_dropped() {
        let mut h = HeaderMap::new();
        for name in [
            "transfer_encoding",
            "content_length",
            "transfer---encoding",
            "content--length",
            "x_forwarded_for",
            "x-kept",
            "x--kept-too",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        strip_look_alikes(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["x--kept-too", "x-kept"]);
    }

    #[test]
    fn only_websocket_upgrades_are_forwarded() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        let v11 = http::Version::HTTP_11;
        let ws = h(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "WebSocket"),
        ]);
        assert_eq!(upgrade_token(&ws, v11).unwrap(), "WebSocket");
        assert!(upgrade_token(&ws, http::Version::HTTP_10).is_none());
        assert!(upgrade_token(&h(&[("upgrade", "websocket")]), v11).is_none());
        let h2c = h(&[
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(upgrade_token(&h2c, v11).is_none());
        let two = h(&[
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("upgrade", "h2c"),
        ]);
        assert!(upgrade_token(&two, v11).is_none());
    }

    #[test]
    fn request_ids() {
        let kept = sane_request_id(&HeaderValue::from_static("abc-123")).unwrap();
        assert_eq!(kept.as_str(), "abc-123");
        assert_eq!(request_id_value(&kept), "abc-123");
        assert!(sane_request_id(&HeaderValue::from_static("a b")).is_none());
        assert!(sane_request_id(&HeaderValue::from_str(&"x".repeat(129)).unwrap()).is_none());
        assert!(sane_request_id(&HeaderValue::from_bytes(b"\xe9t\xe9").unwrap()).is_none());
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert_eq!(request_id_value(&id), id.as_str());
        assert_eq!(request_id_value(&Text::from("owned-1")), "owned-1");
        assert_eq!(request_id_value(&Text::from("a\u{1}b")), "-");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "{id}"
        );
    }
}
