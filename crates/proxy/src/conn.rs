//! The state of one client connection that its watchdog, its I/O and its requests share: what
//! is in flight, when the connection went idle, when a request head started, and what the head
//! scanner found. It depends on nothing else in the crate but the header helpers, so that the
//! server (which owns the connection), the request log (which ends a request) and the
//! lifecycle can all use it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use net::clock::AtomicInstant;

/// What a connection's listener adds to each of its requests.
#[derive(Debug, Default)]
pub struct Edge {
    /// The connection came in over TLS.
    pub tls: bool,
    /// A plain listener that sends every request to `https://` on this port.
    pub redirect_https: Option<u16>,
    /// `Strict-Transport-Security` for every response of a TLS listener.
    pub hsts: Option<http::HeaderValue>,
    /// The worker's tasks that graceful shutdown waits for: upgraded connections join them.
    pub tracker: Option<tokio_util::task::TaskTracker>,
}

/// What the watchdog of one client connection knows about it.
#[derive(Debug)]
pub struct ConnState {
    pub(crate) inflight: AtomicUsize,
    pub(crate) requests: AtomicU64,
    /// When the first byte of a not yet complete request head arrived. (Atomics, not locks:
    /// each request sets and reads these a few times.)
    pub(crate) head_started: AtomicInstant,
    /// When the connection last became idle (always set).
    pub(crate) idle_since: AtomicInstant,
    pub(crate) h2: AtomicBool,
    /// The number of the request head that carried both `Content-Length` and
    /// `Transfer-Encoding` on the wire, or `u64::MAX`.
    pub(crate) cl_and_te: AtomicU64,
    /// The number of the first request head over the size limit, or `u64::MAX`, and its size.
    pub(crate) oversized: AtomicU64,
    pub(crate) oversized_bytes: AtomicUsize,
    /// Woken when a request ends outside the connection's own poll (an upgraded connection).
    pub(crate) wake: tokio::sync::Notify,
    /// Set while the watchdog polls the connection: it looks at this state right after, so
    /// what changes during the poll needs no wake-up.
    pub(crate) polling: AtomicBool,
    pub(crate) edge: Arc<Edge>,
    /// The client's address as `X-Forwarded-For` gives it, made once for every request.
    pub(crate) client_ip: http::HeaderValue,
    /// The client's address and port as the access line gives them, made once too.
    pub(crate) client_text: Option<crate::log::Inline>,
}

impl ConnState {
    pub(crate) fn new(edge: Arc<Edge>, client: std::net::SocketAddr) -> ConnState {
        ConnState {
            edge,
            client_ip: crate::headers::ip_value(client.ip()),
            client_text: client_text(client),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            head_started: AtomicInstant::new(None),
            idle_since: AtomicInstant::new(Some(Instant::now())),
            h2: AtomicBool::new(false),
            cl_and_te: AtomicU64::new(u64::MAX),
            oversized: AtomicU64::new(u64::MAX),
            oversized_bytes: AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            polling: AtomicBool::new(false),
        }
    }

    /// Counts a request in; returns its number on the connection (1 for the first).
    pub(crate) fn request_started(&self) -> u64 {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        self.head_started.store(None);
        n
    }

    /// True when request number `n` carried both `Content-Length` and `Transfer-Encoding`.
    pub fn had_length_and_coding(&self, n: u64) -> bool {
        self.cl_and_te.load(Ordering::Relaxed) == n
    }

    /// The size of request number `n`'s head, when it was over the limit.
    pub fn oversized_head(&self, n: u64) -> Option<usize> {
        (self.oversized.load(Ordering::Relaxed) == n)
            .then(|| self.oversized_bytes.load(Ordering::Relaxed))
    }

    /// When the connection last became idle.
    pub(crate) fn idle_since(&self) -> Instant {
        // Set when made and whenever a request ends: never empty.
        self.idle_since.load().unwrap_or_else(Instant::now)
    }

    /// Called when a request's response is over (sent, aborted or abandoned).
    pub fn request_done(&self) {
        if self.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(Some(net::clock::now()));
            self.wake_watchdog();
        }
    }

    pub(crate) fn bytes_arrived(&self) {
        if self.inflight.load(Ordering::Acquire) == 0 {
            // Only the connection's own reads call this: no other writer between the two.
            if !self.head_started.is_some() {
                self.head_started.store(Some(net::clock::now()));
                self.wake_watchdog();
            }
        }
    }

    /// The watchdog looks at the state after each poll of the connection; from anywhere else
    /// (another task), it is woken.
    fn wake_watchdog(&self) {
        if !self.polling.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }
}

/// `client` as the access line writes it (`203.0.113.7:51234`, `[2001:db8::1]:443`), when it
/// is short enough to be held in place.
fn client_text(client: std::net::SocketAddr) -> Option<crate::log::Inline> {
    let mut text = crate::headers::IpText::new();
    text.push_socket_addr(client);
    std::str::from_utf8(text.as_bytes())
        .ok()
        .and_then(crate::log::Inline::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_text_made_once_is_the_address_as_written() {
        for addr in [
            "127.0.0.1:40250",
            "10.0.0.255:1",
            "[::1]:8080",
            "[2001:db8::1:0:0:1]:65535",
        ] {
            let addr: std::net::SocketAddr = addr.parse().unwrap();
            assert_eq!(client_text(addr).unwrap().as_str(), addr.to_string());
        }
        // Too long to be held in place: the line writes it from the address.
        let long: std::net::SocketAddr = "[2001:db8:1234:5678:9abc:def0:1234:5678]:65535"
            .parse()
            .unwrap();
        assert!(client_text(long).is_none());
    }
}
