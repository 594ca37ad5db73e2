//! Raw errors become causes here, and only here.
//!
//! The order of the checks matters: hyper wraps I/O errors, so the source chain is searched for
//! an `io::Error` first, and hyper's own predicates decide the rest. The byte counter settles what
//! hyper cannot: a connection closed before any response byte versus one closed mid-header.

use std::error::Error as _;
use std::io;

use cause::{Cause, Failure, Phase};

/// Classifies an error of `connect(2)`.
pub fn classify_connect_error(e: &io::Error) -> Failure {
    let cause = io_cause(e).unwrap_or(Cause::Refused);
    Failure::new(cause, Phase::Connect).with_detail(e.to_string())
}

/// The cause an I/O error stands for, if it is one the vocabulary names.
fn io_cause(e: &io::Error) -> Option<Cause> {
    use io::ErrorKind as K;
    // An alert or a TLS record error after the handshake (an upstream refusing the client
    // certificate in TLS 1.3 says so only then).
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        return Some(Cause::Tls);
    }
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: this host ran out, not the upstream.
    if matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) {
        return Some(Cause::LocalExhausted);
    }
    Some(match e.kind() {
        K::ConnectionRefused => Cause::Refused,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => Cause::Unreachable,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => Cause::Reset,
        K::TimedOut => Cause::Timeout,
        K::UnexpectedEof => Cause::Closed,
        K::InvalidData => Cause::InvalidResponse,
        // EADDRNOTAVAIL on connect: no ephemeral port left.
        K::AddrNotAvailable | K::OutOfMemory => Cause::LocalExhausted,
        _ => return None,
    })
}

/// Classifies a hyper client error that happened in `phase`; the caller adds the byte counts.
pub fn classify_hyper_error(e: &hyper::Error, phase: Phase, reused: bool) -> Failure {
    let mut source = e.source();
    let mut io_error = None;
    let mut h2_error = None;
    while let Some(s) = source {
        if let Some(ioe) = s.downcast_ref::<io::Error>() {
            io_error = Some(ioe);
            break;
        }
        if let Some(h2e) = s.downcast_ref::<h2::Error>() {
            h2_error = Some(h2e);
            if let Some(ioe) = h2e.get_io() {
                io_error = Some(ioe);
            }
            break;
        }
        source = s.source();
    }
    // RFC 9113 8.7: a refused stream, or one above a GOAWAY's last stream id, was not processed.
    let unprocessed = h2_error.is_some_and(|h| {
        h.reason() == Some(h2::Reason::REFUSED_STREAM) || (h.is_go_away() && h.is_remote())
    });
    let cause = if unprocessed {
        if h2_error.is_some_and(|h| h.is_go_away()) {
            Cause::Closed
        } else {
            Cause::Reset
        }
    } else if h2_error.is_some_and(|h| h.is_reset() || h.is_go_away()) && io_error.is_none() {
        Cause::Reset
    } else if e.is_parse_too_large() {
        Cause::ResponseTooLarge
    } else if e.is_parse() || e.is_parse_status() {
        Cause::InvalidResponse
    } else if let Some(c) = io_error.and_then(io_cause) {
        c
    } else if io_error.is_some_and(|e| e.kind() == io::ErrorKind::InvalidInput) {
        // hyper's body decoder reports broken chunked framing as InvalidInput.
        Cause::InvalidResponse
    } else if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        Cause::Closed
    } else if e.is_timeout() {
        Cause::Timeout
    } else {
        Cause::Internal
    };
    let detail = match (io_error, h2_error) {
        (Some(ioe), _) => format!("{e}: {ioe}"),
        (None, Some(h)) => format!("{e}: {h}"),
        (None, None) => e.to_string(),
    };
    let mut f = Failure::new(cause, phase).with_detail(detail);
    f.reused = reused;
    f.unprocessed = unprocessed;
    f
}

/// Classifies what ended an HTTP/1.1 exchange before its response head, in `phase`.
pub(crate) fn h1_error(e: &crate::h1::H1Error, phase: Phase, reused: bool) -> Failure {
    use crate::h1::H1Error as E;
    if let E::Evidence(inner, first) = e {
        let mut f = h1_error(inner, phase, reused);
        f.evidence = Some(first.clone());
        return f;
    }
    let cause = match e {
        E::Io(ioe) => io_cause(ioe).unwrap_or(Cause::Reset),
        E::Closed { .. } => Cause::Closed,
        E::Invalid(_) => Cause::InvalidResponse,
        E::TooLarge => Cause::ResponseTooLarge,
        E::RequestBody => Cause::Internal,
        E::Evidence(inner, _) => return h1_error(inner, phase, reused),
    };
    let detail = match e {
        E::Io(ioe) if cause == Cause::Tls => crate::tls::tls_words(ioe),
        _ => e.to_string(),
    };
    let mut f = Failure::new(cause, phase).with_detail(detail);
    f.reused = reused;
    f
}

/// Classifies what broke an HTTP/1.1 response body (phase `read_body`).
pub(crate) fn h1_body_error(e: &crate::h1::BodyError) -> Failure {
    use crate::h1::BodyError as E;
    let cause = match e {
        E::Io(ioe) => io_cause(ioe).unwrap_or(Cause::Reset),
        E::Closed => Cause::Closed,
        E::Invalid(_) => Cause::InvalidResponse,
    };
    let detail = match e {
        E::Io(ioe) if cause == Cause::Tls => crate::tls::tls_words(ioe),
        _ => e.to_string(),
    };
    Failure::new(cause, Phase::ReadBody).with_detail(detail)
}

/// Classifies the error that ended a client connection. Returns the failure and, when hyper
/// answered the client itself, the status it sent; `None` when the client merely went away.
pub fn classify_client_error(
    e: &(dyn std::error::Error + 'static),
) -> Option<(Failure, Option<u16>)> {
    use cause::ClientFault;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse_too_large() {
                return Some((
                    Failure::client(ClientFault::HeadersTooLarge, h.to_string()),
                    Some(431),
                ));
            }
            if h.is_parse() {
                let status = if h.to_string().contains("URI") {
                    414
                } else {
                    400
                };
                return Some((
                    Failure::client(ClientFault::Malformed, h.to_string()),
                    Some(status),
                ));
            }
            if h.is_timeout() {
                return Some((Failure::client(ClientFault::Slow, h.to_string()), None));
            }
            return None;
        }
        if err.is::<std::io::Error>() {
            // The client's connection broke: it went away, nothing to answer.
            return None;
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(e: io::Error, expect: Cause) {
        assert_eq!(classify_connect_error(&e).cause, expect, "{e:?}");
    }

    #[test]
    fn connect_errors() {
        check(
            io::Error::from(io::ErrorKind::ConnectionRefused),
            Cause::Refused,
        );
        check(io::Error::from_raw_os_error(113), Cause::Unreachable); // EHOSTUNREACH
        check(io::Error::from_raw_os_error(101), Cause::Unreachable); // ENETUNREACH
        check(io::Error::from_raw_os_error(24), Cause::LocalExhausted); // EMFILE
        check(io::Error::from_raw_os_error(99), Cause::LocalExhausted); // EADDRNOTAVAIL
        check(io::Error::from(io::ErrorKind::TimedOut), Cause::Timeout);
    }
}
