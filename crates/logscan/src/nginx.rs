//! nginx `error.log` lines (also OpenResty and ingress-nginx).
//!
//! The shape is `YYYY/MM/DD HH:MM:SS [level] PID#TID: *CONN message[ while ACTION], client: IP,
//! server: NAME, request: "LINE", upstream: "URL", host: "HOST"`. The message names what failed,
//! the errno text in parentheses says how, and the `while ...` action names the phase. Facts
//! about these texts are in docs/logs.md; the order of the checks below matters, specific first.

use cause::{Cause, Phase};

use crate::bytes::{after, contains, endpoint_of_url, find};
use crate::time::{self, digits};
use crate::{hash, Finding, Format, Line, Relayed, Role, State};

pub fn parse<'a>(line: &'a [u8], state: &mut State) -> Line<'a> {
    let Some(when) = timestamp(line) else {
        return Line::Skipped(None);
    };
    let rest = &line[19..];
    let Some(rest) = rest.strip_prefix(b" [") else {
        return Line::Skipped(Some(Format::Nginx));
    };
    let Some(close) = memchr::memchr(b']', rest) else {
        return Line::Skipped(Some(Format::Nginx));
    };
    let level = &rest[..close];
    let mut msg = rest.get(close + 2..).unwrap_or_default();
    // `PID#TID: ` then, for request-bound lines, `*CONN `.
    if let Some(i) = find(msg, b": ") {
        if msg[..i].contains(&b'#') {
            msg = &msg[i + 2..];
        }
    }
    let mut conn: &[u8] = b"";
    if msg.first() == Some(&b'*') {
        let end = memchr::memchr(b' ', msg).unwrap_or(msg.len());
        conn = &msg[..end];
        msg = msg.get(end + 1..).unwrap_or_default();
    }
    // The context fields follow the message; a message never contains ", client: ".
    let (text, ctx) = match find(msg, b", client: ") {
        Some(i) => (&msg[..i], &msg[i..]),
        None => (msg, &b""[..]),
    };
    let Some(mut f) = classify(text) else {
        if let Some(detail) = relayed(text) {
            return Line::Relayed(Relayed {
                format: Format::Nginx,
                detail,
                time: Some(when),
                status: None,
                upstream: after(ctx, b", upstream: \"", b'"').map(endpoint_of_url),
            });
        }
        return match level {
            b"error" | b"crit" | b"alert" | b"emerg" => Line::Unrecognized(Format::Nginx),
            _ => Line::Skipped(Some(Format::Nginx)),
        };
    };
    f.time = Some(when);
    f.client = after(ctx, b", client: ", b',');
    f.host = after(ctx, b", host: \"", b'"');
    f.request = after(ctx, b", request: \"", b'"');
    if f.upstream.is_none() {
        f.upstream = after(ctx, b", upstream: \"", b'"').map(endpoint_of_url);
    }
    // Several lines for one connection are the same request: later ones about the same
    // failure (a server marked down because of it) are follow-ups.
    let key = hash(conn);
    if f.role == Role::FollowUp && !(conn.is_empty() || state.continues(key, f.time)) {
        f.role = Role::Event;
    }
    if f.role == Role::Request && !conn.is_empty() {
        state.remember(key, f.time);
    }
    Line::Finding(f)
}

fn timestamp(b: &[u8]) -> Option<time::Millis> {
    if b.len() < 20 || b[4] != b'/' || b[7] != b'/' || b[10] != b' ' {
        return None;
    }
    let (h, m, s) = time::hms(&b[11..19])?;
    time::make(
        digits(&b[0..4])?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
        h,
        m,
        s,
        0,
    )
}

/// The phase named by the `while ...` action at the end of the message.
fn phase_of(text: &[u8], default: Phase) -> Phase {
    let Some(i) = memchr::memmem::rfind(text, b" while ") else {
        return default;
    };
    let action = &text[i + 7..];
    if action.starts_with(b"connecting to upstream") {
        Phase::Connect
    } else if action.starts_with(b"SSL handshaking to upstream") {
        Phase::TlsHandshake
    } else if action.starts_with(b"sending request to upstream") {
        Phase::SendRequest
    } else if action.starts_with(b"reading response header from upstream") {
        Phase::ReadHead
    } else if action.starts_with(b"reading upstream") {
        Phase::ReadBody
    } else if action.starts_with(b"proxying upgraded connection") {
        Phase::Upgrade
    } else if contains(action, b"client") {
        Phase::Client
    } else {
        default
    }
}

/// The strerror text inside `failed (NN: TEXT)` or `timed out (NN: TEXT)`.
fn errno_text(text: &[u8]) -> &[u8] {
    let Some(open) = find(text, b" (") else {
        return b"";
    };
    let inner = &text[open + 2..];
    let inner = &inner[..memchr::memchr(b')', inner).unwrap_or(inner.len())];
    match find(inner, b": ") {
        Some(i) => &inner[i + 2..],
        None => inner,
    }
}

fn classify(text: &[u8]) -> Option<Finding<'_>> {
    use Cause::*;
    let f = |rule, cause, phase| Finding::new(Format::Nginx, rule, cause, phase);
    if contains(text, b"upstream timed out") {
        let phase = phase_of(text, Phase::ReadHead);
        let rule = match phase {
            Phase::Connect => "nginx.connect_timeout",
            Phase::TlsHandshake => "nginx.tls_handshake_timeout",
            Phase::SendRequest => "nginx.send_timeout",
            Phase::ReadBody => "nginx.read_body_timeout",
            _ => "nginx.read_header_timeout",
        };
        let mut x = f(rule, Timeout, phase);
        x.status = (phase != Phase::ReadBody).then_some(504);
        return Some(x);
    }
    if let Some(at) = find(text, b"connect() ") {
        let call = &text[at..];
        if contains(call, b"failed (") {
            let unix = call.starts_with(b"connect() to unix:");
            let upstream = if unix || call.starts_with(b"connect() to ") {
                let peer = &call[13..];
                let end = find(peer, b" failed").unwrap_or(peer.len());
                Some(&peer[..end])
            } else {
                None
            };
            let err = errno_text(call);
            let (rule, cause, detail) = connect_error(err, unix)?;
            let mut x = f(rule, cause, Phase::Connect).detail(detail);
            x.upstream = upstream;
            x.status = Some(502);
            if cause == LocalExhausted && !contains(err, b"assign") {
                x.status = Some(500);
            }
            return Some(x);
        }
    }
    if contains(text, b"no live upstreams") {
        let mut x = f("nginx.no_live_upstreams", NoHealthyUpstream, Phase::Select);
        x.status = Some(502);
        return Some(x);
    }
    if contains(text, b"upstream server temporarily disabled") {
        return Some(
            f(
                "nginx.server_temporarily_disabled",
                NoHealthyUpstream,
                Phase::Select,
            )
            .detail("server marked down after failures")
            .role(Role::FollowUp),
        );
    }
    if contains(text, b"upstream prematurely closed") {
        let phase = phase_of(text, Phase::ReadHead);
        let fastcgi = contains(text, b"FastCGI");
        let mut x = f(
            if fastcgi {
                "nginx.fastcgi_closed"
            } else if phase == Phase::ReadBody {
                "nginx.premature_close_body"
            } else {
                "nginx.premature_close_header"
            },
            Closed,
            phase,
        );
        if fastcgi {
            x.detail = "fastcgi (php-fpm)";
        }
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if contains(text, b"upstream sent too big header") {
        let mut x = f("nginx.too_big_header", ResponseTooLarge, Phase::ReadHead);
        x.status = Some(502);
        return Some(x);
    }
    if contains(text, b"upstream sent no valid HTTP/1.0 header") {
        return Some(
            f(
                "nginx.no_valid_http_header",
                InvalidResponse,
                Phase::ReadHead,
            )
            .detail("not HTTP (protocol mismatch)"),
        );
    }
    if contains(text, b"upstream sent unsupported FastCGI protocol version") {
        let mut x = f(
            "nginx.fastcgi_unsupported_version",
            InvalidResponse,
            Phase::ReadHead,
        )
        .detail("not FastCGI (protocol mismatch)");
        x.status = Some(502);
        return Some(x);
    }
    if contains(text, b"upstream sent")
        && (contains(text, b"invalid")
            || contains(text, b"unexpected FastCGI")
            || contains(text, b"Content-Length")
            || contains(text, b"duplicate header")
            || contains(text, b"more data than specified"))
    {
        let phase = phase_of(text, Phase::ReadHead);
        let chunked = contains(text, b"chunked");
        let mut x = f(
            if chunked {
                "nginx.invalid_chunked"
            } else if contains(text, b"FastCGI") {
                "nginx.fastcgi_bad_record"
            } else {
                "nginx.invalid_header"
            },
            InvalidResponse,
            phase,
        );
        x.detail = if chunked {
            "invalid chunked framing"
        } else if contains(text, b"FastCGI") {
            "invalid fastcgi record"
        } else {
            "invalid header"
        };
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if contains(text, b"upstream SSL certificate verify error") {
        return Some(
            f("nginx.ssl_cert_verify", Tls, Phase::TlsHandshake)
                .detail("certificate verify failed"),
        );
    }
    if contains(text, b"upstream SSL certificate does not match") {
        return Some(
            f("nginx.ssl_cert_verify", Tls, Phase::TlsHandshake)
                .detail("certificate name mismatch"),
        );
    }
    if (contains(text, b"SSL_do_handshake() failed")
        || contains(text, b"peer closed connection in SSL handshake"))
        && contains(text, b"to upstream")
    {
        let plain = contains(text, b"wrong version number") || contains(text, b"WRONG_VERSION");
        let mut x = f(
            if plain {
                "nginx.ssl_wrong_version"
            } else {
                "nginx.ssl_handshake_failed"
            },
            Tls,
            Phase::TlsHandshake,
        )
        .detail(if plain {
            "plain HTTP on the TLS port"
        } else {
            "handshake failed"
        });
        x.status = Some(502);
        return Some(x);
    }
    if contains(text, b"upstream rejected request with error") {
        return Some(
            f("nginx.grpc_rejected", Reset, Phase::ReadHead).detail("http/2 stream rejected"),
        );
    }
    // recv()/send() failures: the upstream's side or the client's, by the action.
    if contains(text, b"() failed (")
        && (contains(text, b"Connection reset by peer") || contains(text, b"Broken pipe"))
    {
        let phase = phase_of(text, Phase::ReadHead);
        if phase == Phase::Client || !contains(text, b"upstream") {
            return Some(f("nginx.client_reset", ClientAborted, Phase::Client));
        }
        let mut x = f(
            match phase {
                Phase::SendRequest => "nginx.reset_sending",
                Phase::ReadBody => "nginx.reset_reading_body",
                _ => "nginx.reset_reading_header",
            },
            Reset,
            phase,
        );
        x.status = (phase != Phase::ReadBody).then_some(502);
        return Some(x);
    }
    if contains(text, b" could not be resolved (") {
        let mut x =
            f("nginx.resolve_failed", Dns, Phase::Resolve).detail(dns_detail(errno_text(text)));
        x.status = Some(502);
        x.upstream = Some(&text[..find(text, b" could not").unwrap_or(0)]);
        return Some(x);
    }
    if contains(text, b"no resolver defined to resolve") {
        return Some(f("nginx.no_resolver", Dns, Phase::Resolve).detail("no resolver configured"));
    }
    if contains(text, b"host not found in upstream") {
        return Some(
            f("nginx.host_not_found_at_startup", Dns, Phase::Resolve)
                .detail("name not found at startup")
                .role(Role::Event),
        );
    }
    if contains(text, b"worker_connections are not enough") {
        return Some(
            f("nginx.worker_connections", LocalExhausted, Phase::Connect)
                .detail("worker_connections exhausted"),
        );
    }
    if contains(text, b"Too many open files") || contains(text, b"No file descriptors available") {
        return Some(
            f("nginx.too_many_open_files", LocalExhausted, Phase::Connect)
                .detail("file descriptors exhausted"),
        );
    }
    if contains(text, b"client intended to send too large") {
        return Some(
            f("nginx.client_body_too_large", ClientInvalid, Phase::Client)
                .detail("request body too large"),
        );
    }
    if contains(text, b"client sent") {
        return Some(
            f("nginx.client_invalid", ClientInvalid, Phase::Client).detail("malformed request"),
        );
    }
    if contains(text, b"client timed out") {
        return Some(
            f("nginx.client_timeout", ClientInvalid, Phase::Client).detail("request too slow"),
        );
    }
    if contains(text, b"client prematurely closed connection")
        || contains(text, b"client closed connection")
    {
        return Some(f("nginx.client_closed", ClientAborted, Phase::Client));
    }
    if contains(text, b"limiting requests, excess")
        || contains(text, b"limiting connections by zone")
    {
        return Some(f("nginx.limit_req", RateLimited, Phase::Client));
    }
    if contains(text, b"access forbidden by rule") {
        return Some(f("nginx.access_forbidden", Denied, Phase::Client));
    }
    None
}

fn connect_error(err: &[u8], unix: bool) -> Option<(&'static str, Cause, &'static str)> {
    use Cause::*;
    let has = |s: &[u8]| contains(err, s);
    Some(if unix && has(b"No such file or directory") {
        ("nginx.unix_socket_missing", Refused, "unix socket missing")
    } else if unix && has(b"Permission denied") {
        (
            "nginx.unix_socket_permission",
            Refused,
            "unix socket permission denied",
        )
    } else if unix && (has(b"Resource temporarily unavailable") || has(b"Operation would block")) {
        (
            "nginx.unix_socket_backlog_full",
            Refused,
            "unix socket backlog full",
        )
    } else if has(b"Connection refused") {
        if unix {
            (
                "nginx.unix_socket_refused",
                Refused,
                "unix socket: nothing listening",
            )
        } else {
            ("nginx.connect_refused", Refused, "connection refused")
        }
    } else if has(b"timed out") {
        ("nginx.connect_timeout", Timeout, "connect timed out")
    } else if has(b"No route to host") || has(b"unreachable") || has(b"Host is down") {
        ("nginx.connect_unreachable", Unreachable, "no route")
    } else if has(b"Cannot assign requested address") || has(b"Address not available") {
        (
            "nginx.connect_no_ephemeral_port",
            LocalExhausted,
            "no free local port",
        )
    } else if has(b"Connection reset by peer") {
        ("nginx.connect_reset", Reset, "reset while connecting")
    } else if has(b"Too many open files") {
        (
            "nginx.too_many_open_files",
            LocalExhausted,
            "file descriptors exhausted",
        )
    } else {
        return None;
    })
}

fn dns_detail(err: &[u8]) -> &'static str {
    if contains(err, b"Host not found") || contains(err, b"not found") {
        "name not found"
    } else if contains(err, b"timed out") {
        "resolver timed out"
    } else if contains(err, b"Server failure") {
        "resolver server failure"
    } else {
        "resolution failed"
    }
}

/// PHP-FPM's stderr as nginx relays it: the application's doing, not the gateway's.
fn relayed(text: &[u8]) -> Option<&'static str> {
    if !contains(text, b"FastCGI sent in stderr") {
        return None;
    }
    Some(
        if contains(text, b"Primary script unknown") || contains(text, b"Unable to open primary") {
            "php-fpm: primary script unknown (404)"
        } else if contains(text, b"has been denied (see security.limit_extensions)") {
            "php-fpm: script extension denied (403)"
        } else if contains(text, b"PHP Fatal error") {
            "php fatal error (500)"
        } else {
            "php-fpm stderr message"
        },
    )
}
