//! The lab: fault-injecting HTTP/1.1 upstream servers, one per failure mode, each on its own port,
//! for trying a gateway (cleargate or any other, nginx included) against every cause it must
//! report.
//!
//! The servers are written over raw TCP with tokio and a tiny hand-written HTTP/1.1 parser; they
//! share no code with the gateway, so the gateway's HTTP stack is tested against an independent
//! one. Where a fault is not deliberately broken, the bytes are ordinary HTTP/1.1.
//!
//! - `fault.rs`: the list of faults, their names, descriptions and the cause × phase each provokes.
//! - `lab.rs`: starting listeners, accepting, counting, the summary table, shutdown.
//! - `serve.rs`: what each fault does with a connection.
//! - `wire.rs`: request-head reading, body discarding, response heads.
//! - `tls.rs`: the TLS faults, and the lab's own CA and certificates made at start.
//! - `ws.rs`: the upgrade faults: a WebSocket echo, and an application that does not switch.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use lab::{Fault, Lab, LabOptions};
//! let lab = Lab::start_all(LabOptions::default()).await?;
//! println!("{}", lab.table());
//! let reset = lab.addr(Fault::Reset).unwrap();
//! # let _ = reset;
//! lab.shutdown().await;
//! # Ok(()) }
//! ```

mod fault;
pub mod h2;
mod lab;
mod serve;
mod tls;
mod wire;
pub mod ws;

use std::time::Duration;

pub use cause::{Cause, Phase};
pub use fault::{Fault, UnknownFault};
pub use lab::Lab;

/// Knobs of the faults that have any; the defaults are what `cleargate lab` serves.
#[derive(Clone, Debug, PartialEq)]
pub struct LabOptions {
    /// How long `slow` waits before answering.
    pub slow_delay: Duration,
    /// The share of requests `flaky` resets (0.0 to 1.0), when `flaky_every` is not set.
    pub flaky_fraction: f64,
    /// Makes `flaky` deterministic: reset every Nth request it reads (counted per lab, across
    /// connections); `Some(0)` never resets.
    pub flaky_every: Option<u32>,
    /// How long `kashort` lets a connection sit idle between requests before closing it.
    pub kashort_ms: u64,
    /// The status `status` answers with (200 to 599).
    pub status: u16,
    /// About how many bytes of response head `bigheader` sends.
    pub bigheader_bytes: usize,
    /// When set, the keep-alive faults other than `kashort` send `Keep-Alive: timeout=N` and
    /// close connections idle for N seconds, as servers that advertise it do.
    pub keepalive_timeout_hint: Option<u32>,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            slow_delay: Duration::from_secs(2),
            flaky_fraction: 0.5,
            flaky_every: None,
            kashort_ms: 1000,
            status: 503,
            bigheader_bytes: 1024 * 1024,
            keepalive_timeout_hint: None,
        }
    }
}

/// What one fault's listener has seen so far.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections accepted.
    pub connections: u64,
    /// Request heads read, counting the invalid or oversized ones that got 400/431 or still
    /// triggered the fault.
    pub requests: u64,
}
