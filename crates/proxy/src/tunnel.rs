//! An upgraded connection (WebSocket, or another protocol both ends switched to after a `101`):
//! bytes copied both ways until either side closes, with an idle timeout.
//!
//! A side that ends its stream (EOF) gets its peer's write side shut, so half-closes pass
//! through; the tunnel ends when both directions have ended, on an error, when no byte moved
//! either way for `tunnel_idle_timeout`, or [`FIN_WAIT`] after one direction ended while the
//! other stays silent (a peer that never closes its half must not hold the tunnel). It runs in the worker's task tracker, so graceful
//! shutdown waits for it (up to `shutdown_timeout`), and its connection is never pooled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// How long the other direction may stay silent once one has ended.
pub(crate) const FIN_WAIT: Duration = Duration::from_secs(5);

/// How a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Both sides closed their direction.
    Closed,
    /// No byte either way for the idle timeout.
    Idle,
    /// A read or write failed (a reset, usually).
    Broken,
}

impl Ended {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Ended::Closed => "closed",
            Ended::Idle => "idle_timeout",
            Ended::Broken => "broken",
        }
    }
}

/// What went through a tunnel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tunnel {
    pub from_client: u64,
    pub from_upstream: u64,
    pub ended: Ended,
}

/// When bytes last moved, as milliseconds since the tunnel started, and whether a direction
/// has ended.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    half_closed: std::sync::atomic::AtomicBool,
    /// Wakes the idle watch when a direction ends, to shorten its wait.
    fin: tokio::sync::Notify,
}

impl Activity {
    fn stamp(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Copies from `r` to `w` until `r` ends, then shuts `w`; counts into `moved`, stamps `last`.
async fn pipe<R, W>(r: &mut R, w: &mut W, moved: &AtomicU64, last: &Activity) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) => {
                last.stamp();
                last.half_closed.store(true, Ordering::Relaxed);
                last.fin.notify_one();
                return w.shutdown().await.is_ok();
            }
            Ok(n) => n,
            Err(_) => return false,
        };
        last.stamp();
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            return false;
        }
        moved.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Runs the tunnel between `client` and `upstream` until it ends.
pub(crate) async fn run<C, U>(client: C, upstream: U, idle: Duration) -> Tunnel
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut ur, mut uw) = tokio::io::split(upstream);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let last = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        half_closed: std::sync::atomic::AtomicBool::new(false),
        fin: tokio::sync::Notify::new(),
    };
    let copy = async {
        let (a, b) = tokio::join!(
            pipe(&mut cr, &mut uw, &up, &last),
            pipe(&mut ur, &mut cw, &down, &last)
        );
        if a && b {
            Ended::Closed
        } else {
            Ended::Broken
        }
    };
    let watch = async {
        loop {
            let limit = match last.half_closed.load(Ordering::Relaxed) {
                true => idle.min(FIN_WAIT),
                false => idle,
            };
            let at = last.last() + limit;
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = last.fin.notified() => continue,
            }
            let limit = match last.half_closed.load(Ordering::Relaxed) {
                true => idle.min(FIN_WAIT),
                false => idle,
            };
            if last.last() + limit <= Instant::now() {
                return Ended::Idle;
            }
        }
    };
    let ended = tokio::select! {
        e = copy => e,
        e = watch => e,
    };
    Tunnel {
        from_client: up.load(Ordering::Relaxed),
        from_upstream: down.load(Ordering::Relaxed),
        ended,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_go_both_ways_and_an_idle_tunnel_ends() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(run(client, upstream, Duration::from_secs(60)));
        client_peer.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        upstream_peer.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        client_peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hi");
        // Nothing more either way: the idle timeout ends it (paused time runs on).
        let t = task.await.unwrap();
        assert_eq!(
            (t.from_client, t.from_upstream, t.ended),
            (5, 2, Ended::Idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_closed_tunnel_waits_only_so_long_for_the_other_half() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(run(client, upstream, Duration::from_secs(600)));
        // The upstream ends its half; the client never ends its own.
        drop(upstream_peer);
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        let started = Instant::now();
        let t = task.await.unwrap();
        assert!(started.elapsed() <= FIN_WAIT + Duration::from_millis(10));
        assert_eq!(t.ended, Ended::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn closes_pass_through_and_end_the_tunnel() {
        let (client, mut client_peer) = tokio::io::duplex(1024);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1024);
        let task = tokio::spawn(run(client, upstream, Duration::from_secs(60)));
        client_peer.write_all(b"bye").await.unwrap();
        client_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"bye");
        upstream_peer.write_all(b"ok").await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"ok");
        let t = task.await.unwrap();
        assert_eq!(
            (t.from_client, t.from_upstream, t.ended),
            (3, 2, Ended::Closed)
        );
    }
}
