//! The closed list of faults the lab serves, with their names, plain-words descriptions and the
//! cause × phase a gateway in front of each one should report.
//!
//! Only the vocabulary lives here; how each fault behaves on the wire is in `serve.rs`, and which
//! port it listens on is in `lab.rs`.

use std::fmt;
use std::str::FromStr;

use cause::{Cause, Phase};

/// One failure mode of an upstream, served on its own port.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A healthy keep-alive HTTP/1.1 server.
    Ok,
    /// A port where nothing listens.
    Refused,
    /// A listener whose accept queue is full, so new connects hang in SYN.
    Unaccepted,
    /// Reads the request head, then resets the connection.
    Reset,
    /// Reads the request head, then closes cleanly without answering.
    Close,
    /// Starts the response head and closes in the middle of a header.
    Midheader,
    /// Reads the request and never answers.
    Hang,
    /// Answers like `ok`, after a delay.
    Slow,
    /// Answers bytes that are not HTTP.
    Garbage,
    /// Answers a response head larger than any sane limit.
    Bigheader,
    /// Promises a body and closes after part of it.
    Truncated,
    /// Sends a chunked body whose second chunk-size line is invalid.
    Badchunk,
    /// Promises a body, sends part of it, then goes silent with the connection open.
    Stall,
    /// Resets some requests and answers the others like `ok`.
    Flaky,
    /// Like `ok`, but closes idle keep-alive connections quickly without saying so.
    Kashort,
    /// Answers every request with a configured status itself.
    Status,
    /// TLS with a certificate that expired (signed by the lab's CA).
    Expired,
    /// TLS with a certificate for another name (signed by the lab's CA).
    Wrongname,
    /// TLS with a self-signed certificate.
    Selfsigned,
    /// Plain HTTP where TLS is expected: answers the TLS hello with an HTTP 400.
    Plaintext,
    /// Reads the TLS hello and never answers it.
    Tlsstall,
    /// A WebSocket echo server.
    Websocket,
    /// Answers a request to switch to WebSocket with a plain 200.
    Noupgrade,
}

impl Fault {
    /// Every fault, in the order the lab lists them.
    pub const ALL: &'static [Fault] = &[
        Fault::Ok,
        Fault::Refused,
        Fault::Unaccepted,
        Fault::Reset,
        Fault::Close,
        Fault::Midheader,
        Fault::Hang,
        Fault::Slow,
        Fault::Garbage,
        Fault::Bigheader,
        Fault::Truncated,
        Fault::Badchunk,
        Fault::Stall,
        Fault::Flaky,
        Fault::Kashort,
        Fault::Status,
        Fault::Expired,
        Fault::Wrongname,
        Fault::Selfsigned,
        Fault::Plaintext,
        Fault::Tlsstall,
        Fault::Websocket,
        Fault::Noupgrade,
    ];

    /// The stable lowercase name, as used on the command line and in tables.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Refused => "refused",
            Fault::Unaccepted => "unaccepted",
            Fault::Reset => "reset",
            Fault::Close => "close",
            Fault::Midheader => "midheader",
            Fault::Hang => "hang",
            Fault::Slow => "slow",
            Fault::Garbage => "garbage",
            Fault::Bigheader => "bigheader",
            Fault::Truncated => "truncated",
            Fault::Badchunk => "badchunk",
            Fault::Stall => "stall",
            Fault::Flaky => "flaky",
            Fault::Kashort => "kashort",
            Fault::Status => "status",
            Fault::Expired => "expired",
            Fault::Wrongname => "wrongname",
            Fault::Selfsigned => "selfsigned",
            Fault::Plaintext => "plaintext",
            Fault::Tlsstall => "tlsstall",
            Fault::Websocket => "websocket",
            Fault::Noupgrade => "noupgrade",
        }
    }

    /// What the fault does, in one line of plain words.
    pub fn describe(&self) -> &'static str {
        match self {
            Fault::Ok => "healthy keep-alive HTTP/1.1: echoes the request as JSON, GET /bytes/N sends N bytes",
            Fault::Refused => "nothing listens on the port: the connect is refused",
            Fault::Unaccepted => "accept queue full: new connects hang in SYN until they time out",
            Fault::Reset => "reads the request head, then resets the connection (RST) without answering",
            Fault::Close => "reads the request head, then closes cleanly (FIN) without answering",
            Fault::Midheader => "starts the response head, then closes in the middle of a header",
            Fault::Hang => "reads the request and never answers, keeping the connection open",
            Fault::Slow => "answers like ok, but only after a delay (2 s by default)",
            Fault::Garbage => "answers bytes that are not HTTP (an invalid status line), then closes",
            Fault::Bigheader => "answers a response head far above any limit (1 MiB by default)",
            Fault::Truncated => "promises a 1000000-byte body, sends 1000 bytes, then closes",
            Fault::Badchunk => "sends one valid chunk, then an invalid chunk-size line, then closes",
            Fault::Stall => "promises a 1000000-byte body, sends 1000 bytes, then goes silent",
            Fault::Flaky => "resets some requests (half by default, or every Nth), answers the rest like ok",
            Fault::Kashort => "like ok, but closes keep-alive connections idle over 1 s, advertising nothing",
            Fault::Status => "answers every request itself with a configured status (503 by default)",
            Fault::Expired => "TLS endpoint whose certificate (from the lab's CA) expired in 2021",
            Fault::Wrongname => "TLS endpoint whose certificate (from the lab's CA) is for wrong.lab.invalid only",
            Fault::Selfsigned => "TLS endpoint whose certificate signed itself",
            Fault::Plaintext => "plain HTTP where TLS is expected: the TLS hello gets an HTTP 400, as nginx answers",
            Fault::Tlsstall => "reads the TLS hello and never answers it, keeping the connection open",
            Fault::Websocket => "WebSocket echo (RFC 6455): 101, then every frame sent back; plain requests get 200",
            Fault::Noupgrade => "answers a request to switch to WebSocket with a plain 200, as an application without it does",
        }
    }

    /// What a gateway in front of this fault should report for a request sent through it, or
    /// `None` when the upstream answers (slowly, intermittently or with its own error status):
    /// those are not gateway failures.
    pub fn provokes(&self) -> Option<(Cause, Phase)> {
        match self {
            Fault::Ok
            | Fault::Slow
            | Fault::Flaky
            | Fault::Kashort
            | Fault::Status
            | Fault::Websocket => None,
            Fault::Noupgrade => Some((Cause::UpgradeFailed, Phase::Upgrade)),
            Fault::Refused => Some((Cause::Refused, Phase::Connect)),
            Fault::Unaccepted => Some((Cause::Timeout, Phase::Connect)),
            Fault::Reset => Some((Cause::Reset, Phase::ReadHead)),
            Fault::Close | Fault::Midheader => Some((Cause::Closed, Phase::ReadHead)),
            Fault::Hang => Some((Cause::Timeout, Phase::ReadHead)),
            Fault::Garbage => Some((Cause::InvalidResponse, Phase::ReadHead)),
            Fault::Bigheader => Some((Cause::ResponseTooLarge, Phase::ReadHead)),
            Fault::Truncated => Some((Cause::Closed, Phase::ReadBody)),
            Fault::Badchunk => Some((Cause::InvalidResponse, Phase::ReadBody)),
            Fault::Stall => Some((Cause::Timeout, Phase::ReadBody)),
            Fault::Expired | Fault::Wrongname | Fault::Selfsigned | Fault::Plaintext => {
                Some((Cause::Tls, Phase::TlsHandshake))
            }
            Fault::Tlsstall => Some((Cause::Timeout, Phase::TlsHandshake)),
        }
    }

    /// True for the faults that show only to a request asking to switch to WebSocket.
    pub fn upgrade(&self) -> bool {
        matches!(self, Fault::Websocket | Fault::Noupgrade)
    }

    /// True for the faults a gateway must reach over TLS (trusting [`crate::Lab::ca_pem`]).
    pub fn tls(&self) -> bool {
        matches!(
            self,
            Fault::Expired
                | Fault::Wrongname
                | Fault::Selfsigned
                | Fault::Plaintext
                | Fault::Tlsstall
        )
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a name that is not a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFault(pub String);

impl fmt::Display for UnknownFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown fault `{}` (expected one of:", self.0)?;
        for (i, fault) in Fault::ALL.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{fault}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for UnknownFault {}

impl FromStr for Fault {
    type Err = UnknownFault;

    /// Accepts the name in any case, surrounding whitespace ignored, because it comes from
    /// command lines and config files typed by people.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFault(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in Fault::ALL {
            assert!(seen.insert(f.name()), "duplicate name {}", f.name());
            assert_eq!(f.name().parse::<Fault>(), Ok(*f));
            assert_eq!(f.name().to_uppercase().parse::<Fault>(), Ok(*f));
            assert_eq!(f.to_string(), f.name());
            assert!(!f.describe().is_empty());
        }
        assert_eq!(Fault::ALL.len(), 23);
    }

    #[test]
    fn unknown_names_are_rejected_with_the_list() {
        let err = "nope".parse::<Fault>().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("`nope`"));
        assert!(text.contains("ok, refused"));
    }

    #[test]
    fn provoked_causes() {
        assert_eq!(Fault::Ok.provokes(), None);
        assert_eq!(Fault::Status.provokes(), None);
        assert_eq!(
            Fault::Refused.provokes(),
            Some((Cause::Refused, Phase::Connect))
        );
        assert_eq!(
            Fault::Unaccepted.provokes(),
            Some((Cause::Timeout, Phase::Connect))
        );
        assert_eq!(
            Fault::Stall.provokes(),
            Some((Cause::Timeout, Phase::ReadBody))
        );
        assert_eq!(
            Fault::Bigheader.provokes(),
            Some((Cause::ResponseTooLarge, Phase::ReadHead))
        );
    }
}
