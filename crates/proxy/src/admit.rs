//! Admission, the first phase of a request: is it one request, for one host, framed one way?
//!
//! hyper has parsed the head by now and refused what httparse cannot read. What remains is the
//! policy of RFC 9110 §7.2 and RFC 9112 §3.2, §6, which hyper leaves to the application:
//!
//! - **Host.** An HTTP/1.1 request has exactly one valid `Host`; HTTP/1.0 at most one. In
//!   absolute form the target's authority is the host, for routing and for the `Host` sent
//!   upstream; the client's `Host` line is then ignored (RFC 9112 §3.2.2), so a request can never
//!   be routed by one name and delivered to another. Userinfo in an authority is refused.
//! - **Framing.** One `Transfer-Encoding` field whose value is exactly `chunked`; other codings
//!   are not implemented (501), two fields are malformed (400). `Content-Length` together with
//!   `Transfer-Encoding` is refused (400), seen on the raw bytes by the head scanner because
//!   hyper removes the length. Differing lengths are refused by hyper itself.
//!
//! Everything here is a `client_invalid` failure; the answer closes the connection.

use cause::{ClientFault, Failure};
use http::header::{HeaderValue, HOST, TRANSFER_ENCODING};
use http::{Request, Version};

use crate::route::normalize_host;

/// What admission learned about a request that passed.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The host to route by: lowercase, no port.
    pub host: crate::log::Text,
    /// The value of the `Host` (or `:authority`) sent upstream.
    pub host_value: Option<HeaderValue>,
}

fn malformed(detail: impl Into<String>) -> Failure {
    Failure::client(ClientFault::Malformed, detail)
}

/// Checks the request's host and framing. `length_and_coding` is the head scanner's finding
/// that the request carried both `Content-Length` and `Transfer-Encoding` on the wire.
pub(crate) fn admit<B>(req: &Request<B>, length_and_coding: bool) -> Result<Admitted, Failure> {
    let h2 = req.version() == Version::HTTP_2;
    let hosts = req.headers().get_all(HOST);
    let mut lines = hosts.iter();
    let host_line = lines.next();
    let host_lines = host_line.map_or(0, |_| 1 + lines.count());
    if host_lines > 1 {
        return Err(malformed(format!(
            "the request has {host_lines} Host header lines; exactly one is allowed"
        )));
    }
    if let Some(v) = host_line {
        if !valid_host(v.as_bytes()) {
            return Err(malformed(format!(
                "the Host header `{}` is not a valid host[:port]",
                String::from_utf8_lossy(v.as_bytes()).escape_debug()
            )));
        }
    }
    let authority = req.uri().authority();
    if let Some(a) = authority {
        if a.as_str().contains('@') {
            return Err(malformed(
                "the request target's authority carries userinfo (`user@`), which is not allowed",
            ));
        }
        if !valid_host(a.as_str().as_bytes()) {
            return Err(malformed(format!(
                "the request target's authority `{}` is not a valid host[:port]",
                a.as_str().escape_debug()
            )));
        }
        if !h2 && !matches!(req.uri().scheme_str(), Some("http" | "https")) {
            return Err(malformed(format!(
                "the request target's scheme `{}` is not http or https",
                req.uri().scheme_str().unwrap_or("")
            )));
        }
    }
    let admitted = match (authority, host_line) {
        // HTTP/2: `:authority` is the host; a Host line naming another one is malformed
        // (RFC 9113 §8.3.1).
        (Some(a), Some(h)) if h2 => {
            if normalize_host(a.as_str())
                != normalize_host(std::str::from_utf8(h.as_bytes()).unwrap_or(""))
            {
                return Err(malformed(format!(
                    "the :authority `{}` and the Host header `{}` name different hosts",
                    a.as_str(),
                    String::from_utf8_lossy(h.as_bytes())
                )));
            }
            authority_admitted(a)
        }
        // HTTP/1 absolute form: the target's authority wins and the Host line is ignored.
        (Some(a), _) => {
            if !h2 && req.version() == Version::HTTP_11 && host_line.is_none() {
                return Err(malformed(
                    "an HTTP/1.1 request without a Host header; exactly one is required",
                ));
            }
            authority_admitted(a)
        }
        (None, Some(h)) => Admitted {
            // SAFETY: `valid_host` took the line above, and it takes ASCII bytes only.
            host: normalize_host(unsafe { std::str::from_utf8_unchecked(h.as_bytes()) }),
            host_value: Some(h.clone()),
        },
        (None, None) => {
            if req.version() == Version::HTTP_11 || h2 {
                return Err(malformed(
                    "an HTTP/1.1 request without a Host header; exactly one is required",
                ));
            }
            // HTTP/1.0 without a host: routed by the catch-all routes only.
            Admitted {
                host: crate::log::Text::default(),
                host_value: None,
            }
        }
    };

    if !h2 {
        check_framing(req, length_and_coding)?;
    }
    Ok(admitted)
}

fn authority_admitted(a: &http::uri::Authority) -> Admitted {
    Admitted {
        host: normalize_host(a.as_str()),
        host_value: HeaderValue::from_str(a.as_str()).ok(),
    }
}

/// RFC 9112 §6: one way to frame a body, and only the coding the gateway implements.
fn check_framing<B>(req: &Request<B>, length_and_coding: bool) -> Result<(), Failure> {
    let codings = req.headers().get_all(TRANSFER_ENCODING);
    let mut lines = codings.iter();
    let Some(first) = lines.next() else {
        return Ok(());
    };
    if lines.next().is_some() {
        return Err(malformed(
            "the request has more than one Transfer-Encoding header line",
        ));
    }
    if length_and_coding {
        return Err(malformed(
            "the request has both Content-Length and Transfer-Encoding; send one of them",
        ));
    }
    let value = String::from_utf8_lossy(first.as_bytes());
    if !value.trim().eq_ignore_ascii_case("chunked") {
        return Err(Failure::client(
            ClientFault::NotImplemented,
            format!(
                "the transfer coding `{}` is not implemented; send the body with Content-Length or `Transfer-Encoding: chunked`",
                value.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2): a reg-name or IPv4 address, or an IP literal in
/// brackets; never empty, never userinfo, never whitespace or control bytes.
pub(crate) fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &v[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        let rest = &v[close + 1..];
        match rest.split_first() {
            None => (&v[..=close], None),
            Some((b':', port)) => (&v[..=close], Some(port)),
            Some(_) => return false,
        }
    } else {
        match v.iter().rposition(|b| *b == b':') {
            Some(colon) => (&v[..colon], Some(&v[colon + 1..])),
            None => (v, None),
        }
    };
    if host.is_empty() {
        return false;
    }
    if port.is_some_and(|p| p.len() > 5 || !p.iter().all(u8::is_ascii_digit)) {
        return false;
    }
    host.first() == Some(&b'[') || host.iter().all(|&b| REG_NAME[usize::from(b)])
}

/// The bytes of a reg-name or IPv4 address: unreserved, sub-delims and the `%` of
/// pct-encoded (RFC 3986 §3.2.2), one lookup each.
static REG_NAME: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~!$&'()*+,;=%";
    let mut i = 0;
    while i < others.len() {
        t[others[i] as usize] = true;
        i += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reg_name_table_holds_exactly_the_bytes_rfc_3986_allows() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b);
            assert_eq!(REG_NAME[usize::from(b)], allowed, "byte {b:#04x}");
        }
    }

    #[test]
    fn a_valid_host_is_ascii() {
        // What admission takes as text without checking it again.
        let mut rng = fastrand::Rng::with_seed(11);
        let alphabet: Vec<u8> = b"[]:.0123456789abcdefAZ-_~!%".iter().copied().collect();
        let mut valid = 0;
        for i in 0..50_000 {
            let len = rng.usize(1..24);
            let v: Vec<u8> = (0..len)
                .map(|_| match rng.u8(..8) {
                    0 => rng.u8(0x80..),
                    _ => alphabet[rng.usize(..alphabet.len())],
                })
                .collect();
            if valid_host(&v) {
                valid += 1;
                assert!(v.is_ascii(), "case {i}: {v:?}");
            }
        }
        assert!(valid > 1000, "{valid}");
        assert!(!valid_host("é.test".as_bytes()));
        assert!(!valid_host("[::1]:8é".as_bytes()));
    }

    fn req(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// `Ok(host, forwarded Host)` or `Err(status)`.
    fn check(r: Request<()>, cl_te: bool, expect: Result<(&str, Option<&str>), u16>) {
        let got = admit(&r, cl_te)
            .map(|a| {
                (
                    a.host.to_string(),
                    a.host_value.map(|v| v.to_str().unwrap().to_string()),
                )
            })
            .map_err(|f| f.answer().status);
        let expect = expect.map(|(h, v)| (h.to_string(), v.map(str::to_string)));
        assert_eq!(got, expect, "{r:?}");
    }

    const V11: Version = Version::HTTP_11;

    #[test]
    fn host_rules() {
        check(
            req(V11, "/", &[("host", "A.example:80")]),
            false,
            Ok(("a.example", Some("A.example:80"))),
        );
        check(req(V11, "/", &[]), false, Err(400));
        check(
            req(V11, "/", &[("host", "a"), ("host", "b")]),
            false,
            Err(400),
        );
        check(req(V11, "/", &[("host", "")]), false, Err(400));
        check(req(V11, "/", &[("host", "a b")]), false, Err(400));
        check(req(V11, "/", &[("host", "x@a.example")]), false, Err(400));
        check(req(V11, "/", &[("host", "a:80x")]), false, Err(400));
        check(
            req(V11, "/", &[("host", "[::1]:8080")]),
            false,
            Ok(("::1", Some("[::1]:8080"))),
        );
        check(req(Version::HTTP_10, "/", &[]), false, Ok(("", None)));
    }

    #[test]
    fn absolute_form_routes_and_forwards_by_its_authority() {
        check(
            req(
                V11,
                "http://public.example/x",
                &[("host", "admin.internal")],
            ),
            false,
            Ok(("public.example", Some("public.example"))),
        );
        check(req(V11, "http://public.example/x", &[]), false, Err(400));
        check(
            req(V11, "http://u@public.example/x", &[("host", "a")]),
            false,
            Err(400),
        );
        check(
            req(V11, "ftp://public.example/x", &[("host", "a")]),
            false,
            Err(400),
        );
        check(
            req(
                Version::HTTP_2,
                "http://a.example/x",
                &[("host", "b.example")],
            ),
            false,
            Err(400),
        );
        check(
            req(Version::HTTP_2, "http://a.example/x", &[]),
            false,
            Ok(("a.example", Some("a.example"))),
        );
    }

    #[test]
    fn framing_rules() {
        let h = ("host", "a");
        check(
            req(V11, "/", &[h, ("transfer-encoding", "Chunked")]),
            false,
            Ok(("a", Some("a"))),
        );
        check(
            req(V11, "/", &[h, ("transfer-encoding", "chunked")]),
            true,
            Err(400),
        );
        check(
            req(
                V11,
                "/",
                &[
                    h,
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
            ),
            false,
            Err(400),
        );
        check(
            req(V11, "/", &[h, ("transfer-encoding", "chunked, chunked")]),
            false,
            Err(501),
        );
        check(
            req(V11, "/", &[h, ("transfer-encoding", "gzip, chunked")]),
            false,
            Err(501),
        );
    }
}
