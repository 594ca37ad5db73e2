//! How an upstream response's body is framed, and what the gateway does about framing that
//! hyper's client accepts but a client behind the gateway could misread (RFC 9112 §6.3):
//!
//! - `Transfer-Encoding: chunked` with a `Content-Length`: hyper frames by the coding and keeps
//!   the length in the headers. Relaying that stale length would cut the body short or leave the
//!   client waiting, so the length is dropped, and the connection is not used again, because an
//!   upstream that sends both may disagree with hyper about where the response ended.
//! - Any coding other than a single `chunked`: hyper reads such a body until the connection
//!   closes and hands over still-coded bytes. The gateway does not decode transfer codings, so
//!   this is an `invalid_response` (nginx answers 502 too).
//! - `Content-Length: 5, 5` or two equal lines: hyper accepted one length; the client gets that
//!   one, written once.

use cause::{Cause, Failure, Phase};
use http::header::{HeaderValue, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::HeaderMap;

/// What the response's framing means for relaying it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Framing {
    /// The connection must not go back to the pool.
    pub close_upstream: bool,
}

/// Checks and normalises the framing headers of an upstream response, in place. `facts`
/// are what the parse of the head found of them: most heads need no lookup at all.
pub(crate) fn response_framing(
    headers: &mut HeaderMap,
    facts: &net::hop::HeadFacts,
) -> Result<Framing, Failure> {
    let mut framing = Framing::default();
    if facts.hop_by_hop & net::hop::BIT_TRANSFER_ENCODING == 0 && facts.plain_length {
        return Ok(framing);
    }
    let mut codings = headers.get_all(TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        let mut listed = Vec::new();
        for line in codings {
            for coding in String::from_utf8_lossy(line.as_bytes()).split(',') {
                let coding = coding.trim();
                if !coding.is_empty() {
                    listed.push(coding.to_ascii_lowercase());
                }
            }
        }
        if listed.len() != 1 || listed[0] != "chunked" {
            return Err(Failure::new(Cause::InvalidResponse, Phase::ReadHead).with_detail(
                format!(
                    "the upstream framed its body with `Transfer-Encoding: {}`; only a single `chunked` is relayed",
                    listed.join(", ")
                ),
            ));
        }
        if headers.remove(CONTENT_LENGTH).is_some() {
            framing.close_upstream = true;
        }
        return Ok(framing);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let plain = first.as_bytes().iter().all(u8::is_ascii_digit);
        if lengths.next().is_some() || !plain {
            // hyper has checked that every value is the same number; write it once.
            let n = String::from_utf8_lossy(first.as_bytes())
                .split(',')
                .next()
                .and_then(|v| v.trim().parse::<u64>().ok());
            match n {
                Some(n) => {
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
                }
                None => {
                    return Err(Failure::new(Cause::InvalidResponse, Phase::ReadHead)
                        .with_detail("the upstream sent a Content-Length that is not a number"))
                }
            }
        }
    }
    Ok(framing)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The framing of `h`, with the facts a parse of the head would have found.
    fn framing_of(h: &mut HeaderMap) -> Result<Framing, Failure> {
        let facts = net::hop::HeadFacts::of(h);
        response_framing(h, &facts)
    }

    fn headers(fields: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in fields {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn framing_cases() {
        let mut h = headers(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        assert_eq!(
            framing_of(&mut h),
            Ok(Framing {
                close_upstream: true
            })
        );
        assert!(!h.contains_key(CONTENT_LENGTH));
        for bad in ["gzip", "gzip, chunked", "chunked, chunked"] {
            let mut h = headers(&[("transfer-encoding", bad)]);
            assert_eq!(
                framing_of(&mut h).unwrap_err().cause,
                Cause::InvalidResponse,
                "{bad}"
            );
        }
        let mut h = headers(&[("content-length", "5, 5")]);
        framing_of(&mut h).unwrap();
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
        let mut h = headers(&[("content-length", "5"), ("content-length", "5")]);
        framing_of(&mut h).unwrap();
        assert_eq!(h.get_all(CONTENT_LENGTH).iter().collect::<Vec<_>>(), ["5"]);
    }

    /// Generated header sets: whatever the mix, the client never gets a length next to a
    /// coding, never a list of lengths, and never a body in a coding other than chunked.
    #[test]
    fn property_relayed_framing_is_unambiguous() {
        let mut rng = fastrand::Rng::with_seed(0xf4a3);
        let codings = [
            "chunked",
            "Chunked",
            "gzip",
            "identity",
            "deflate",
            " chunked ",
        ];
        for _ in 0..2000 {
            let mut fields: Vec<(String, String)> = Vec::new();
            for _ in 0..rng.usize(0..3) {
                let n = rng.usize(1..3);
                let list: Vec<&str> = (0..n)
                    .map(|_| codings[rng.usize(..codings.len())])
                    .collect();
                fields.push(("transfer-encoding".into(), list.join(",")));
            }
            let len = rng.u16(..1000).to_string();
            for _ in 0..rng.usize(0..3) {
                let v = if rng.bool() {
                    len.clone()
                } else {
                    format!("{len}, {len}")
                };
                fields.push(("content-length".into(), v));
            }
            rng.shuffle(&mut fields);
            let mut h = HeaderMap::new();
            for (k, v) in &fields {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let te: Vec<String> = fields
                .iter()
                .filter(|(k, _)| k == "transfer-encoding")
                .flat_map(|(_, v)| v.split(',').map(|c| c.trim().to_ascii_lowercase()))
                .collect();
            let has_cl = fields.iter().any(|(k, _)| k == "content-length");
            // The shortcut the parse's facts allow decides as the full reading of the lines.
            let mut read_whole = h.clone();
            let without_facts = net::hop::HeadFacts {
                hop_by_hop: 0,
                plain_length: false,
                connection_names_more: false,
            };
            let whole = response_framing(&mut read_whole, &without_facts).map_err(|f| f.cause);
            let framed = framing_of(&mut h);
            assert_eq!(
                framed.as_ref().map_err(|f| f.cause),
                whole.as_ref().map_err(|c| *c),
                "{fields:?}"
            );
            assert_eq!(h, read_whole, "{fields:?}");
            match framed {
                Ok(f) => {
                    assert!(te.is_empty() || te == ["chunked"], "{fields:?}");
                    let cls: Vec<_> = h.get_all(CONTENT_LENGTH).iter().collect();
                    if te.is_empty() {
                        assert_eq!(cls.len(), usize::from(has_cl), "{fields:?}");
                        if has_cl {
                            assert_eq!(cls[0].to_str().unwrap(), len, "{fields:?}");
                        }
                    } else {
                        assert!(cls.is_empty(), "{fields:?}");
                        assert_eq!(f.close_upstream, has_cl, "{fields:?}");
                    }
                }
                Err(f) => {
                    assert_eq!(f.cause, Cause::InvalidResponse);
                    assert!(!te.is_empty() && te != ["chunked"], "{fields:?}");
                }
            }
        }
    }
}
