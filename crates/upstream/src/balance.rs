//! Choosing an endpoint for an attempt.
//!
//! Endpoints failing active health checks are never chosen. Ejected endpoints (passive outlier
//! detection) are skipped, unless so few endpoints remain that the panic threshold is crossed:
//! then ejections are ignored, so a blip never empties the pool. Among the candidates, the
//! upstream's policy picks one; an endpoint back from failure gets a growing share (slow start).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cause::{Cause, Failure, Phase};
use config::Balance;

use crate::{Endpoint, Upstream};

/// A short list of endpoints, on the stack up to `FEW` of them and on the heap past that.
struct Few<'a> {
    inline: [&'a Arc<Endpoint>; FEW],
    len: usize,
    spilled: Vec<&'a Arc<Endpoint>>,
}

const FEW: usize = 8;

impl<'a> Few<'a> {
    /// `filler` only fills the unused slots; it is not in the list.
    fn new(filler: &'a Arc<Endpoint>) -> Few<'a> {
        Few {
            inline: [filler; FEW],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, e: &'a Arc<Endpoint>) {
        if self.len < FEW {
            self.inline[self.len] = e;
        } else {
            if self.len == FEW {
                self.spilled.extend_from_slice(&self.inline);
            }
            self.spilled.push(e);
        }
        self.len += 1;
    }

    fn as_slice(&self) -> &[&'a Arc<Endpoint>] {
        match self.len <= FEW {
            true => &self.inline[..self.len],
            false => &self.spilled,
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'a Arc<Endpoint>> + '_ {
        self.as_slice().iter().copied()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn retain(&mut self, keep: impl Fn(&Endpoint) -> bool) {
        let mut kept = Few::new(self.inline[0]);
        for e in self.iter() {
            if keep(e) {
                kept.push(e);
            }
        }
        *self = kept;
    }
}

/// The endpoint chosen for an attempt.
pub struct Choice {
    pub endpoint: Arc<Endpoint>,
    /// Chosen while the panic threshold was crossed (ejections ignored).
    pub panic: bool,
}

impl Upstream {
    /// Picks an endpoint, avoiding those in `tried` when another candidate exists. `key` is the
    /// request's hash key for the `hash` policy.
    pub fn select(&self, tried: &[usize], key: Option<u64>) -> Result<Choice, Failure> {
        let now = net::clock::now();
        let Some(first) = self.endpoints.first() else {
            return Err(self.no_healthy("the upstream has no endpoints"));
        };
        // Gathered on the stack: choosing an endpoint allocates nothing.
        let mut active = Few::new(first);
        let mut not_ejected = Few::new(first);
        let mut draining = 0;
        for e in &self.endpoints {
            if e.is_draining() {
                draining += 1;
                continue;
            }
            if !self.active_up(e) {
                continue;
            }
            active.push(e);
            if !self.is_ejected(e, now) {
                not_ejected.push(e);
            }
        }
        if active.is_empty() && draining == self.endpoints.len() {
            return Err(self.no_healthy("every endpoint is drained by the operator"));
        }
        if active.is_empty() {
            return Err(self.no_healthy("every endpoint fails its active health checks"));
        }
        let panic = (not_ejected.len() as u64) * 100
            < (active.len() as u64) * self.config.panic_threshold as u64;
        let mut candidates = if panic { active } else { not_ejected };
        if candidates.is_empty() {
            return Err(self.no_healthy("every endpoint is ejected after failures"));
        }
        if candidates.iter().any(|e| !tried.contains(&e.index)) {
            candidates.retain(|e| !tried.contains(&e.index));
        }
        let candidates = candidates.as_slice();
        let endpoint = match &self.config.balance {
            Balance::RoundRobin => self.round_robin(candidates, now),
            Balance::Weighted => self.weighted(candidates, now),
            Balance::LeastRequest => self.least_request(candidates, now),
            Balance::Hash(_) => match key {
                Some(k) => rendezvous(candidates, k),
                None => self.round_robin(candidates, now),
            },
        };
        Ok(Choice { endpoint, panic })
    }

    fn no_healthy(&self, why: &str) -> Failure {
        let mut f =
            Failure::new(Cause::NoHealthyUpstream, Phase::Select).with_detail(why.to_string());
        f.upstream = Some(self.name.to_string());
        f
    }

    /// Share of traffic for an endpoint in slow start, from 0.1 to 1.
    fn ramp(&self, e: &Endpoint, now: Instant) -> f64 {
        let slow = self.config.slow_start;
        if slow.is_zero() {
            return 1.0;
        }
        match e.health.lock().unwrap().recovered_at {
            Some(at) => (now.saturating_duration_since(at).as_secs_f64() / slow.as_secs_f64())
                .clamp(0.1, 1.0),
            None => 1.0,
        }
    }

    fn round_robin(&self, c: &[&Arc<Endpoint>], now: Instant) -> Arc<Endpoint> {
        for _ in 0..c.len() * 4 {
            let e = c[self.rr.fetch_add(1, Ordering::Relaxed) % c.len()];
            let ramp = self.ramp(e, now);
            if ramp >= 1.0 || fastrand::f64() < ramp {
                return e.clone();
            }
        }
        c[self.rr.fetch_add(1, Ordering::Relaxed) % c.len()].clone()
    }

    /// Smooth weighted round-robin: deterministic, and spreads heavy endpoints' turns out.
    fn weighted(&self, c: &[&Arc<Endpoint>], now: Instant) -> Arc<Endpoint> {
        let mut current = self.swrr.lock().unwrap();
        let mut total = 0i64;
        let mut best: Option<&Arc<Endpoint>> = None;
        for e in c {
            let w = ((e.weight as f64) * self.ramp(e, now) * 100.0).max(1.0) as i64;
            total += w;
            current[e.index] += w;
            if best.is_none_or(|b| current[e.index] > current[b.index]) {
                best = Some(e);
            }
        }
        let best = best.expect("candidates are never empty");
        current[best.index] -= total;
        best.clone()
    }

    /// Power of two choices over in-flight requests per unit of weight.
    fn least_request(&self, c: &[&Arc<Endpoint>], now: Instant) -> Arc<Endpoint> {
        if c.len() == 1 {
            return c[0].clone();
        }
        let a = fastrand::usize(..c.len());
        let mut b = fastrand::usize(..c.len() - 1);
        if b >= a {
            b += 1;
        }
        let load =
            |e: &Endpoint| (e.in_flight() as f64 + 1.0) / (e.weight as f64 * self.ramp(e, now));
        if load(c[b]) < load(c[a]) {
            c[b].clone()
        } else {
            c[a].clone()
        }
    }
}

/// Rendezvous hashing: the same key goes to the same endpoint, and only keys of an endpoint that
/// leaves move.
fn rendezvous(c: &[&Arc<Endpoint>], key: u64) -> Arc<Endpoint> {
    c.iter()
        .max_by_key(|e| {
            let mut h = DefaultHasher::new();
            (key, &e.name).hash(&mut h);
            h.finish()
        })
        .map(|e| (*e).clone())
        .expect("candidates are never empty")
}

/// The hash key of a string (a header value, a cookie, a client address).
pub fn hash_key(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}
