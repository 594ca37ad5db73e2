//! Counters for Prometheus, kept without a lock on the request path: one array of atomics per
//! worker (so two workers never write the same cache line), and one that every other thread
//! shares, indexed by upstream, status code, cause and phase, summed over the shards when
//! `/metrics` is read. A worker is the one writer of its array and counts with a plain load
//! and store; only the shared array needs atomic adds.
//!
//! The series follow the names of existing dashboards where they can: `_total` counters, a
//! `_seconds` histogram with Prometheus's default buckets, and `cleargate_` before every name.
//! Only series that have counted something are written.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cause::{Cause, Failure, Phase};

/// Upper bounds of the request duration buckets, in seconds (Prometheus's defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Status codes 100 to 599.
const CODES: usize = 500;

/// The counters; empty until [`Metrics::register`] names the upstreams.
#[derive(Default)]
pub struct Metrics {
    reg: OnceLock<Registry>,
}

struct Registry {
    /// Upstream names, filled in order and never emptied, so that a reload can add names
    /// without a lock on the path that counts; the index after the last slot is "no upstream"
    /// (refused before routing, or a name beyond the slots).
    upstreams: Box<[OnceLock<Arc<str>>]>,
    shards: usize,
    requests: Box<[AtomicU64]>,
    errors: Box<[AtomicU64]>,
    retries: Box<[AtomicU64]>,
    buckets: Box<[AtomicU64]>,
    sum_us: Box<[AtomicU64]>,
}

/// Adds `n` to a counter: a worker, the one writer of its shard, without a locked
/// instruction; the threads that share a shard, with an atomic add.
fn count(counter: &AtomicU64, n: u64, alone: bool) {
    if alone {
        net::add_alone(counter, n);
    } else {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

fn zeros(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Registry {
    fn slots(&self) -> usize {
        self.upstreams.len() + 1
    }

    fn upstream_index(&self, name: Option<&str>) -> usize {
        let none = self.upstreams.len();
        let Some(n) = name else { return none };
        for (i, slot) in self.upstreams.iter().enumerate() {
            match slot.get() {
                // The record's name is most often the registered `Arc` itself.
                Some(u) if (u.len() == n.len() && u.as_ptr() == n.as_ptr()) || &**u == n => {
                    return i
                }
                Some(_) => {}
                None => return none,
            }
        }
        none
    }

    /// Gives `name` a slot if it has none; false when every slot is taken.
    fn add(&self, name: &Arc<str>) -> bool {
        for slot in self.upstreams.iter() {
            if slot.get().is_none() {
                let _ = slot.set(name.clone());
            }
            if slot.get().is_some_and(|u| u == name) {
                return true;
            }
        }
        false
    }

    /// This thread's shard, and whether this thread alone writes it: each worker has its own,
    /// and every other thread (the admin API, signal handling, tests) shares the last.
    fn shard(&self) -> (usize, bool) {
        let w = upstream::worker();
        if upstream::is_worker() && w + 1 < self.shards {
            (w, true)
        } else {
            (self.shards - 1, false)
        }
    }

    fn label(&self, index: usize) -> &str {
        self.upstreams
            .get(index)
            .and_then(|u| u.get())
            .map_or("", |u| u)
    }

    /// Sums `array` over the shards at `offset` (an index within one shard).
    fn sum(&self, array: &[AtomicU64], offset: usize) -> u64 {
        let per = array.len() / self.shards;
        (0..self.shards)
            .map(|s| array[s * per + offset].load(Ordering::Relaxed))
            .sum()
    }
}

fn cause_index(c: Cause) -> usize {
    Cause::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

fn phase_index(p: Phase) -> usize {
    Phase::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

impl Metrics {
    /// Sizes the counters for `upstreams` and `workers` (room for four times as many
    /// upstreams, at least 32, for those a reload adds); counting starts here. Called again
    /// (a reload), it adds the names not counted yet.
    pub fn register(&self, upstreams: Vec<Arc<str>>, workers: usize) {
        if let Some(r) = self.reg.get() {
            for u in &upstreams {
                if !r.add(u) {
                    // Counted under "no upstream" from now on; the names already there stay.
                    break;
                }
            }
            return;
        }
        // One shard per worker, and one for every other thread.
        let shards = workers.max(1) + 1;
        let capacity = (upstreams.len() * 4).max(32);
        let slots = capacity + 1;
        let names: Box<[OnceLock<Arc<str>>]> = (0..capacity)
            .map(|i| {
                let slot = OnceLock::new();
                if let Some(u) = upstreams.get(i) {
                    let _ = slot.set(u.clone());
                }
                slot
            })
            .collect();
        let upstreams = names;
        let (causes, phases) = (Cause::ALL.len(), Phase::ALL.len());
        let _ = self.reg.set(Registry {
            requests: zeros(shards * slots * CODES),
            errors: zeros(shards * slots * causes * phases),
            retries: zeros(shards * slots * causes),
            buckets: zeros(shards * slots * (BUCKETS.len() + 1)),
            sum_us: zeros(shards * slots),
            upstreams,
            shards,
        });
    }

    /// A request answered (by the upstream or the gateway) with `status`, after `duration`.
    pub fn request(&self, upstream: Option<&str>, status: u16, duration: Duration) {
        let Some(r) = self.reg.get() else { return };
        let ((shard, alone), u) = (r.shard(), r.upstream_index(upstream));
        let slots = r.slots();
        let code = usize::from(status.clamp(100, 599) - 100);
        count(&r.requests[(shard * slots + u) * CODES + code], 1, alone);
        let secs = duration.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        count(
            &r.buckets[(shard * slots + u) * (BUCKETS.len() + 1) + bucket],
            1,
            alone,
        );
        count(
            &r.sum_us[shard * slots + u],
            duration.as_micros() as u64,
            alone,
        );
    }

    /// A gateway-made error.
    pub fn gateway_error(&self, f: &Failure) {
        let Some(r) = self.reg.get() else { return };
        let ((shard, alone), u) = (r.shard(), r.upstream_index(f.upstream.as_deref()));
        let (causes, phases) = (Cause::ALL.len(), Phase::ALL.len());
        let i = ((shard * r.slots() + u) * causes + cause_index(f.cause)) * phases
            + phase_index(f.phase);
        count(&r.errors[i], 1, alone);
    }

    /// An attempt that failed and was retried.
    pub fn retry(&self, f: &Failure) {
        let Some(r) = self.reg.get() else { return };
        let ((shard, alone), u) = (r.shard(), r.upstream_index(f.upstream.as_deref()));
        let i = (shard * r.slots() + u) * Cause::ALL.len() + cause_index(f.cause);
        count(&r.retries[i], 1, alone);
    }

    /// The counters in Prometheus's text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        let Some(r) = self.reg.get() else { return };
        let slots = r.slots();
        let (causes, phases) = (Cause::ALL.len(), Phase::ALL.len());
        let upstream_label = |u: usize| escape(r.label(u));

        head(out, "cleargate_requests_total", "counter", "Requests answered, by upstream and status code: the upstream's own answers and the gateway's errors (upstream \"\" when refused before routing).");
        for u in 0..slots {
            for code in 0..CODES {
                let n = r.sum(&r.requests, u * CODES + code);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "cleargate_requests_total{{upstream=\"{}\",code=\"{}\"}} {n}",
                        upstream_label(u),
                        code + 100
                    );
                }
            }
        }
        head(out, "cleargate_gateway_errors_total", "counter", "Errors the gateway made itself (never the upstream's own statuses), by upstream, cause, phase and the status answered.");
        for u in 0..slots {
            for (ci, cause) in Cause::ALL.iter().enumerate() {
                for (pi, phase) in Phase::ALL.iter().enumerate() {
                    let n = r.sum(&r.errors, (u * causes + ci) * phases + pi);
                    if n > 0 {
                        let status = Failure::new(*cause, *phase).answer().status;
                        let _ = writeln!(
                            out,
                            "cleargate_gateway_errors_total{{upstream=\"{}\",cause=\"{cause}\",phase=\"{phase}\",status=\"{status}\"}} {n}",
                            upstream_label(u)
                        );
                    }
                }
            }
        }
        head(out, "cleargate_retries_total", "counter", "Attempts that failed and were tried again, by upstream and the cause of the failed attempt.");
        for u in 0..slots {
            for (ci, cause) in Cause::ALL.iter().enumerate() {
                let n = r.sum(&r.retries, u * causes + ci);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "cleargate_retries_total{{upstream=\"{}\",cause=\"{cause}\"}} {n}",
                        upstream_label(u)
                    );
                }
            }
        }
        head(
            out,
            "cleargate_request_duration_seconds",
            "histogram",
            "Time from the request's arrival to the end of its response, by upstream.",
        );
        for u in 0..slots {
            let per = BUCKETS.len() + 1;
            let counts: Vec<u64> = (0..per).map(|b| r.sum(&r.buckets, u * per + b)).collect();
            let total: u64 = counts.iter().sum();
            if total == 0 {
                continue;
            }
            let label = upstream_label(u);
            let mut cumulative = 0;
            for (b, le) in BUCKETS.iter().enumerate() {
                cumulative += counts[b];
                let _ = writeln!(
                    out,
                    "cleargate_request_duration_seconds_bucket{{upstream=\"{label}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "cleargate_request_duration_seconds_bucket{{upstream=\"{label}\",le=\"+Inf\"}} {total}"
            );
            let sum = r.sum(&r.sum_us, u) as f64 / 1e6;
            let _ = writeln!(
                out,
                "cleargate_request_duration_seconds_sum{{upstream=\"{label}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "cleargate_request_duration_seconds_count{{upstream=\"{label}\"}} {total}"
            );
        }
    }
}

/// `# HELP` and `# TYPE` of a metric family.
pub(crate) fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub(crate) fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_written_by_label_and_summed_over_workers() {
        let m = Metrics::default();
        m.register(vec![Arc::from("app")], 2);
        m.request(Some("app"), 200, Duration::from_millis(3));
        m.request(Some("app"), 200, Duration::from_millis(300));
        m.request(None, 400, Duration::from_millis(1));
        let mut f = Failure::new(Cause::Refused, Phase::Connect);
        f.upstream = Some("app".into());
        m.gateway_error(&f);
        m.retry(&f);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("cleargate_requests_total{upstream=\"app\",code=\"200\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("cleargate_requests_total{upstream=\"\",code=\"400\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("cleargate_gateway_errors_total{upstream=\"app\",cause=\"refused\",phase=\"connect\",status=\"502\"} 1\n"), "{out}");
        assert!(
            out.contains("cleargate_retries_total{upstream=\"app\",cause=\"refused\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "cleargate_request_duration_seconds_bucket{upstream=\"app\",le=\"0.005\"} 1\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "cleargate_request_duration_seconds_bucket{upstream=\"app\",le=\"0.5\"} 2\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("cleargate_request_duration_seconds_count{upstream=\"app\"} 2\n"),
            "{out}"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
