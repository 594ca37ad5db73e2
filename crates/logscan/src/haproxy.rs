//! HAProxy logs: `option httplog` traffic lines and the alerts HAProxy logs next to them.
//!
//! A traffic line is `CLIENT:PORT [dd/Mmm/yyyy:hh:mm:ss.mmm] FRONTEND BACKEND/SERVER
//! TR/Tw/Tc/Tr/Ta STATUS BYTES CC CS TERM ACT/FE/BE/SRV/RETRIES SQ/BQ "REQUEST"`, with or without a
//! syslog prefix. The two first letters of the termination state say who ended the session (`S`
//! server, `s` server timeout, `P` proxy, `R` resource, `C`/`c` client) and when (`C` connect, `H`
//! response headers, `D` data, `Q` queue, `R` request); `<NOSRV>` means no server was chosen.

use cause::{Cause, Phase};

use crate::bytes::contains;
use crate::time::{self, digits};
use crate::{Finding, Format, Line, Relayed, Role};

/// The position of ` [dd/Mmm/yyyy:` (the accept date) in a traffic line.
fn accept_date(b: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = find!(&b[from..], b" [") {
        let at = from + i;
        let d = &b[at + 2..];
        if d.len() > 21 && d[2] == b'/' && d[6] == b'/' && d[11] == b':' {
            return Some(at);
        }
        from = at + 2;
    }
    None
}

pub fn looks_like(b: &[u8]) -> bool {
    accept_date(b).is_some()
        || has!(b, b"haproxy[")
        || (b.starts_with(b"Server ") && has!(b, b" is DOWN"))
        || b.starts_with(b"[ALERT]")
        || b.starts_with(b"[WARNING]")
}

pub fn parse(line: &[u8]) -> Line<'_> {
    match accept_date(line) {
        Some(at) => traffic(line, at),
        None => alert(line),
    }
}

fn timestamp(d: &[u8]) -> Option<time::Millis> {
    // dd/Mmm/yyyy:hh:mm:ss.mmm
    let (h, m, s) = time::hms(d.get(12..20)?)?;
    let ms = if d.get(20) == Some(&b'.') {
        time::fraction_ms(&d[21..])
    } else {
        0
    };
    time::make(
        digits(&d[7..11])?,
        time::month(&d[3..6])?,
        digits(&d[0..2])?,
        h,
        m,
        s,
        ms,
    )
}

fn traffic(line: &[u8], at: usize) -> Line<'_> {
    let head = &line[..at];
    let client = head.rsplit(|c| *c == b' ').next().unwrap_or(head);
    let date = &line[at + 2..];
    let when = timestamp(date);
    let close = memchr::memchr(b']', date).unwrap_or(date.len());
    let rest = date.get(close + 2..).unwrap_or_default();
    let mut words = rest.split(|c| *c == b' ').filter(|w| !w.is_empty());
    let _frontend = words.next();
    let Some(server) = words.next() else {
        return Line::Skipped(Some(Format::Haproxy));
    };
    let Some(timers) = words.next() else {
        return Line::Skipped(Some(Format::Haproxy));
    };
    // HTTP logs have five timers; TCP logs three and no status.
    let http = timers.iter().filter(|c| **c == b'/').count() == 4;
    let status: Option<u16> = if http {
        words.next().and_then(digits).map(|s| s as u16)
    } else {
        None
    };
    let _bytes = words.next();
    let term = if http {
        let _ = words.next();
        let _ = words.next();
        words.next()
    } else {
        words.next()
    };
    let Some(term) = term.filter(|t| t.len() >= 2) else {
        return Line::Skipped(Some(Format::Haproxy));
    };
    let request = memchr::memchr(b'"', rest).map(|q| {
        let r = &rest[q + 1..];
        &r[..memchr::memchr(b'"', r).unwrap_or(r.len())]
    });
    let nosrv = server.ends_with(b"/<NOSRV>");
    let upstream = if nosrv {
        &server[..server.len() - 8]
    } else {
        server
    };
    let Some(mut f) = classify(term[0], term[1], status, nosrv) else {
        if term[0] == b'-' && status.is_some_and(|s| s >= 500) {
            return Line::Relayed(Relayed {
                format: Format::Haproxy,
                detail: "the server answered 5xx",
                time: when,
                status,
                upstream: Some(upstream),
            });
        }
        return Line::Skipped(Some(Format::Haproxy));
    };
    f.time = when;
    f.status = status;
    f.upstream = Some(upstream);
    f.client = Some(strip_port(client));
    f.request = request;
    Line::Finding(f)
}

fn strip_port(b: &[u8]) -> &[u8] {
    match memchr::memrchr(b':', b) {
        Some(i) if i > 0 => &b[..i],
        _ => b,
    }
}

fn classify(who: u8, when: u8, status: Option<u16>, nosrv: bool) -> Option<Finding<'static>> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Haproxy, rule, cause, phase);
    Some(match (who, when) {
        (b'S', b'C') if nosrv => f("haproxy.nosrv", NoHealthyUpstream, Phase::Select),
        (b'S', b'C') => f("haproxy.SC", Refused, Phase::Connect).detail("connection refused"),
        (b's', b'C') => f("haproxy.sC", Timeout, Phase::Connect),
        (b'S', b'H') => f("haproxy.SH", Closed, Phase::ReadHead).detail("closed or reset"),
        (b's', b'H') => f("haproxy.sH", Timeout, Phase::ReadHead),
        (b'S', b'D') => f("haproxy.SD", Closed, Phase::ReadBody).detail("closed or reset"),
        (b's', b'D') => f("haproxy.sD", Timeout, Phase::ReadBody),
        (b's', b'Q') | (b'S', b'Q') => {
            f("haproxy.sQ", Overloaded, Phase::Queue).detail("queue timeout")
        }
        (b'S', _) => f("haproxy.S", Closed, Phase::ReadHead).detail("closed or reset"),
        (b'P', b'H') => f("haproxy.PH", InvalidResponse, Phase::ReadHead),
        (b'P', b'D') => f("haproxy.PD", InvalidResponse, Phase::ReadBody),
        (b'P', b'C') => f("haproxy.PC", LocalExhausted, Phase::Connect),
        (b'P', b'R') => match status {
            Some(403) => f("haproxy.PR", Denied, Phase::Client),
            Some(429) => f("haproxy.PR", RateLimited, Phase::Client),
            _ => f("haproxy.PR", ClientInvalid, Phase::Client),
        },
        (b'R', _) => f("haproxy.RC", LocalExhausted, Phase::Connect),
        (b'I', _) => f("haproxy.I", Internal, Phase::Select),
        (b'D', _) => f("haproxy.D", NoHealthyUpstream, Phase::Select).detail("server went down"),
        (b'c', b'R') => f("haproxy.cR", ClientInvalid, Phase::Client).detail("request too slow"),
        (b'c', _) => {
            f("haproxy.client_timeout", ClientAborted, Phase::Client).detail("client timed out")
        }
        (b'C', _) => f("haproxy.client_abort", ClientAborted, Phase::Client),
        _ => return None,
    })
}

/// Lines HAProxy logs about its servers and itself.
fn alert(line: &[u8]) -> Line<'_> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Haproxy, rule, cause, phase);
    let has = |s: &[u8]| contains(line, s);
    let found = if let Some(i) = find!(line, b" is DOWN, reason: ") {
        let reason = &line[i..];
        let server = find!(line, b"Server ").map(|s| {
            let name = &line[s + 7..];
            &name[..memchr::memchr(b' ', name).unwrap_or(name.len())]
        });
        let r = |s: &[u8]| contains(reason, s);
        let mut x = if r(b"Layer4 connection problem") {
            if r(b"Connection refused") {
                f("haproxy.server_down_refused", Refused, Phase::Connect)
            } else {
                f("haproxy.server_down_l4", Unreachable, Phase::Connect)
            }
        } else if r(b"Layer4 timeout") {
            f("haproxy.server_down_l4_timeout", Timeout, Phase::Connect)
        } else if r(b"Layer6") {
            f("haproxy.server_down_l6", Tls, Phase::TlsHandshake)
        } else if r(b"Layer7 timeout") {
            f("haproxy.server_down_l7_timeout", Timeout, Phase::ReadHead)
        } else if r(b"Layer7 wrong status") {
            return Line::Relayed(Relayed {
                format: Format::Haproxy,
                detail: "health check: wrong status",
                time: None,
                status: None,
                upstream: server,
            });
        } else if r(b"Layer7 invalid response") {
            f(
                "haproxy.server_down_l7_invalid",
                InvalidResponse,
                Phase::ReadHead,
            )
        } else {
            f("haproxy.server_down", Unreachable, Phase::Connect)
        };
        x.detail = "health check failed";
        x.upstream = server;
        Some(x.role(Role::Event))
    } else if has(b"has no server available!") {
        let mut x = f(
            "haproxy.no_server_available",
            NoHealthyUpstream,
            Phase::Select,
        )
        .detail("every server down")
        .role(Role::Event);
        x.upstream = find!(line, b"ackend ").map(|s| {
            let name = &line[s + 7..];
            &name[..memchr::memchr(b' ', name).unwrap_or(name.len())]
        });
        Some(x)
    } else if has(b"no free ports") {
        Some(
            f("haproxy.no_free_ports", LocalExhausted, Phase::Connect)
                .detail("no free local port")
                .role(Role::Event),
        )
    } else if has(b"reached process FD limit")
        || has(b"reached system FD limit")
        || has(b"reached system memory limit")
        || has(b"reached the configured maximum connection limit")
    {
        Some(
            f("haproxy.fd_limit", LocalExhausted, Phase::Client)
                .detail("connection or descriptor limit")
                .role(Role::Event),
        )
    } else {
        None
    };
    match found {
        // Syslog prefixes carry no year, so these lines carry no time the scanner trusts.
        Some(x) => Line::Finding(x),
        None if has(b"[ALERT]") => Line::Unrecognized(Format::Haproxy),
        None => Line::Skipped(Some(Format::Haproxy)),
    }
}
