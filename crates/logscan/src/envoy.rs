//! Envoy access logs in the default format:
//!
//! ```text
//! [%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
//! %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%
//! "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%"
//! "%UPSTREAM_HOST%"
//! ```
//!
//! (one line; fields added after it, as Istio does, are ignored). The response flags say what
//! Envoy itself did: `-` for none, else a comma-separated list (`UF,URX`). A line with flags is
//! classified by its most telling flag ([`PRIORITY`]); without any, a 5xx is the upstream's own
//! answer, relayed. `START_TIME` is UTC. Envoy's own application log (`[2024-05-01
//! 10:00:00.123][12][warning][upstream] ...`) is recognised and skipped.

use cause::{Cause, Phase};

use crate::bytes::endpoint_of_url;
use crate::time::{self, digits};
use crate::{Finding, Format, Line, Relayed, Role};

/// `[2024-05-01T10:00:00.123Z] "`: the start of an access line (or `[YYYY-MM-DD ` for the
/// application log).
pub fn looks_like(b: &[u8]) -> bool {
    b.len() > 26
        && b[0] == b'['
        && b[5] == b'-'
        && b[8] == b'-'
        && matches!(b[11], b'T' | b' ')
        && b[1..5].iter().all(u8::is_ascii_digit)
}

pub fn parse(line: &[u8]) -> Line<'_> {
    let skipped = Line::Skipped(Some(Format::Envoy));
    if !looks_like(line) || line[11] == b' ' {
        return skipped;
    }
    let Some(close) = memchr::memchr(b']', line) else {
        return skipped;
    };
    let when = time::iso(&line[1..close]);
    let Some(rest) = line.get(close + 1..).and_then(|r| r.strip_prefix(b" \"")) else {
        return skipped;
    };
    // The request line ends at the quote before ` STATUS`.
    let Some(end) = memchr::memchr_iter(b'"', rest).find(|&i| {
        rest.get(i + 1) == Some(&b' ') && rest.get(i + 2).is_some_and(u8::is_ascii_digit)
    }) else {
        return skipped;
    };
    let request = &rest[..end];
    let mut words = rest[end + 2..].splitn(7, |c| *c == b' ');
    let status = words
        .next()
        .and_then(digits)
        .and_then(|s| u16::try_from(s).ok());
    let status = status.filter(|s| *s > 0);
    let Some(flags) = words.next() else {
        return skipped;
    };
    // BYTES_RECEIVED BYTES_SENT DURATION UPSTREAM-SERVICE-TIME, then the quoted fields.
    let quoted = words.nth(4).unwrap_or_default();
    let mut fields = Quoted(quoted);
    let client = present(fields.take());
    let _agent = fields.take();
    let _id = fields.take();
    let authority = present(fields.take());
    let upstream = present(fields.take()).map(endpoint_of_url);
    let request = (request != b"- - -").then_some(request);

    let mut unknown = false;
    let mut best: Option<(usize, &[u8])> = None;
    if flags != b"-" {
        for flag in flags.split(|c| *c == b',') {
            match PRIORITY.iter().position(|p| p.as_bytes() == flag) {
                Some(rank) if best.is_none_or(|(r, _)| rank < r) => best = Some((rank, flag)),
                Some(_) => {}
                None => unknown = true,
            }
        }
    }
    let mapped = best.map_or(Mapped::Plain, |(_, flag)| classify(flag, status));
    let mut f = match mapped {
        Mapped::Found(f) => f,
        Mapped::Injected => return skipped,
        Mapped::Plain | Mapped::Retried if unknown => {
            return if status.is_some_and(|s| s < 400) {
                skipped
            } else {
                Line::Unrecognized(Format::Envoy)
            };
        }
        m @ (Mapped::Plain | Mapped::Retried) if status.is_some_and(|s| s >= 500) => {
            return Line::Relayed(Relayed {
                format: Format::Envoy,
                detail: if matches!(m, Mapped::Retried) {
                    "the upstream answered 5xx (retries exhausted)"
                } else {
                    "the upstream answered 5xx"
                },
                time: when,
                status,
                upstream,
            });
        }
        Mapped::Plain | Mapped::Retried => return skipped,
    };
    f.time = when;
    f.status = status;
    f.upstream = upstream;
    f.client = client;
    f.host = authority;
    f.request = request;
    Line::Finding(f)
}

/// The quoted fields after the numbers: `"a" "b c" "-"`, taken in order.
struct Quoted<'a>(&'a [u8]);

impl<'a> Quoted<'a> {
    /// The next field's value, `None` when there is none left.
    fn take(&mut self) -> Option<&'a [u8]> {
        let rest = self.0.trim_ascii_start().strip_prefix(b"\"")?;
        // A value ends at a quote followed by a space or the end of the line.
        let end = memchr::memchr_iter(b'"', rest)
            .find(|&i| matches!(rest.get(i + 1), None | Some(b' ')))
            .unwrap_or(rest.len());
        self.0 = rest.get(end + 1..).unwrap_or_default();
        Some(&rest[..end])
    }
}

/// A value that is there: Envoy writes `-` for an absent one.
fn present(v: Option<&[u8]>) -> Option<&[u8]> {
    v.filter(|v| !v.is_empty() && *v != b"-")
}

/// The response flags Envoy documents, most telling first: when a line has several, the first of
/// them in this list decides. `URX` (retries exhausted) only says that the last attempt's failure
/// stands; `DI` and `RFCF` are not failures.
pub const PRIORITY: &[&str] = &[
    "DF", "UH", "NR", "NC", "UF", "UO", "DO", "OM", "UT", "UMSDR", "SI", "DT", "UPE", "UR", "UC",
    "LR", "RL", "RLSE", "UAEX", "IH", "DPE", "LH", "NFCF", "DC", "FI", "URX", "DI", "RFCF",
];

enum Mapped<'a> {
    Found(Finding<'a>),
    /// `URX` alone: the retries ran out and the upstream's last answer stands.
    Retried,
    /// `FI`: an abort the operator configured (fault injection), not a failure.
    Injected,
    /// No flag that changes anything (`DI`, a configured delay; `RFCF`, served from the cache):
    /// the status decides.
    Plain,
}

fn classify<'a>(flag: &[u8], status: Option<u16>) -> Mapped<'a> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Envoy, rule, cause, phase);
    // A status below 500 with an upstream failure flag: the head had gone out, the body broke.
    let cut = status.is_some_and(|s| s < 500);
    let late = if cut {
        Phase::ReadBody
    } else {
        Phase::ReadHead
    };
    let found = match flag {
        b"UH" => f("envoy.UH", NoHealthyUpstream, Phase::Select).detail("no healthy upstream host"),
        b"UF" => f("envoy.UF", Refused, Phase::Connect)
            .detail("connection failure (refused, timed out or TLS)"),
        b"UO" => f("envoy.UO", Overloaded, Phase::Queue).detail("circuit breaker open"),
        b"NR" => f("envoy.NR", NoRoute, Phase::Select),
        b"NC" => f("envoy.NC", NoRoute, Phase::Select).detail("no cluster for the route"),
        b"DT" => f("envoy.DT", Timeout, late).detail("max connection or stream duration"),
        b"DC" => f("envoy.DC", ClientAborted, Phase::Client),
        b"LH" => f("envoy.LH", NoHealthyUpstream, Phase::Select)
            .detail("local service failed its health check")
            .role(Role::Event),
        b"UT" => f("envoy.UT", Timeout, late),
        b"LR" => f("envoy.LR", Reset, late).detail("reset by the gateway itself (ambiguous)"),
        b"UR" => f("envoy.UR", Reset, late),
        b"UC" => f("envoy.UC", Closed, late),
        b"RL" => f("envoy.RL", RateLimited, Phase::Client),
        b"RLSE" => f("envoy.RLSE", Internal, Phase::Client).detail("rate limit service failed"),
        b"UAEX" => f("envoy.UAEX", Denied, Phase::Client)
            .detail("denied by the external authorization service"),
        b"IH" => f("envoy.IH", ClientInvalid, Phase::Client).detail("invalid x-envoy header"),
        b"SI" if status == Some(408) => {
            f("envoy.SI", ClientInvalid, Phase::Client).detail("request too slow (stream idle)")
        }
        b"SI" => f("envoy.SI", Timeout, late).detail("stream idle timeout"),
        b"DPE" => f("envoy.DPE", ClientInvalid, Phase::Client).detail("malformed request"),
        b"UPE" => f("envoy.UPE", InvalidResponse, late),
        b"UMSDR" => f("envoy.UMSDR", Timeout, late).detail("max stream duration"),
        b"OM" => f("envoy.OM", Overloaded, Phase::Queue).detail("overload manager"),
        b"DF" => f("envoy.DF", Dns, Phase::Resolve),
        b"DO" => f("envoy.DO", Overloaded, Phase::Queue).detail("dropped by drop_overload"),
        b"NFCF" => f("envoy.NFCF", Internal, Phase::Select).detail("filter configuration missing"),
        b"URX" => return Mapped::Retried,
        b"FI" => return Mapped::Injected,
        _ => return Mapped::Plain,
    };
    Mapped::Found(found)
}
