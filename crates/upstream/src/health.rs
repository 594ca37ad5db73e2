//! Health: active checks (HTTP or TCP, rise/fall) and passive outlier ejection (consecutive
//! gateway failures or upstream 5xx, ejection time growing with repeats, at most a share of the
//! endpoints ejected at once). Every transition is reported as an event with its cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use cause::{Failure, Level, Side};
use config::HealthCheck;
use net::{ConnectOptions, Deadlines, RequestBody};
use tokio_util::sync::CancellationToken;

use crate::{Endpoint, Upstream};

/// What is known of an endpoint's health.
#[derive(Debug)]
pub struct HealthState {
    /// Passing active checks (always true when none are configured).
    pub active_up: bool,
    passes: u32,
    fails: u32,
    consecutive_failures: u32,
    consecutive_5xx: u32,
    pub ejected_until: Option<Instant>,
    ejections: u32,
    /// When the endpoint last came back (for slow start).
    pub recovered_at: Option<Instant>,
    /// The cap on ejections was already reported for the current run of failures.
    cap_reported: bool,
}

impl HealthState {
    /// Ejections in the current run of failures.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// Nothing that an answer resets is set.
    fn calm(&self) -> bool {
        self.consecutive_failures == 0
            && self.consecutive_5xx == 0
            && self.ejections == 0
            && !self.cap_reported
    }
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            active_up: true,
            passes: 0,
            fails: 0,
            consecutive_failures: 0,
            consecutive_5xx: 0,
            ejected_until: None,
            ejections: 0,
            recovered_at: None,
            cap_reported: false,
        }
    }
}

/// What the request path reads of an endpoint's [`HealthState`], without its lock: published
/// under the lock by every change ([`HealthGuard`]'s drop), read with plain loads by each
/// choice of an endpoint and each report of an answer.
#[derive(Debug)]
pub(crate) struct Published {
    up: AtomicBool,
    ejected_until: net::clock::AtomicInstant,
    /// Nothing that an answer resets is set (no failures counted, no ejection in the current
    /// run, no cap reported): an answer has nothing to change.
    calm: AtomicBool,
}

impl Default for Published {
    fn default() -> Self {
        let h = HealthState::default();
        Published {
            up: AtomicBool::new(h.active_up),
            ejected_until: net::clock::AtomicInstant::new(h.ejected_until),
            calm: AtomicBool::new(h.calm()),
        }
    }
}

impl Published {
    fn publish(&self, h: &HealthState) {
        self.up.store(h.active_up, Ordering::Release);
        self.ejected_until.store(h.ejected_until);
        self.calm.store(h.calm(), Ordering::Release);
    }

    fn calm(&self) -> bool {
        self.calm.load(Ordering::Acquire)
    }

    pub(crate) fn up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub(crate) fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until.load()
    }
}

/// An endpoint's health, locked for a change: what changed is published when it is let go.
pub(crate) struct HealthGuard<'a> {
    state: MutexGuard<'a, HealthState>,
    published: &'a Published,
}

impl std::ops::Deref for HealthGuard<'_> {
    type Target = HealthState;
    fn deref(&self) -> &HealthState {
        &self.state
    }
}

impl std::ops::DerefMut for HealthGuard<'_> {
    fn deref_mut(&mut self) -> &mut HealthState {
        &mut self.state
    }
}

impl Drop for HealthGuard<'_> {
    fn drop(&mut self) {
        self.published.publish(&self.state);
    }
}

impl Endpoint {
    /// The health state, locked for a change.
    pub(crate) fn health_mut(&self) -> HealthGuard<'_> {
        HealthGuard {
            state: self.health.lock().unwrap(),
            published: &self.published,
        }
    }
}

/// How an attempt ended, for passive health.
pub enum Outcome<'a> {
    /// The upstream answered with this status.
    Answered(u16),
    Failed(&'a Failure),
}

impl Upstream {
    pub(crate) fn active_up(&self, e: &Endpoint) -> bool {
        e.published.up()
    }

    /// True while `e` is ejected; an ejection that has run out ends here, with an event.
    pub(crate) fn is_ejected(&self, e: &Endpoint, now: Instant) -> bool {
        // Without the lock while nothing is to change: not ejected, or still ejected.
        match e.published.ejected_until() {
            None => return false,
            Some(until) if now < until => return true,
            Some(_) => {}
        }
        let mut h = e.health_mut();
        match h.ejected_until {
            Some(until) if now < until => true,
            Some(_) => {
                h.ejected_until = None;
                h.recovered_at = Some(now);
                h.consecutive_failures = 0;
                h.consecutive_5xx = 0;
                drop(h);
                self.event(
                    Level::Info,
                    e,
                    "endpoint returns from ejection".into(),
                    vec![],
                );
                false
            }
            None => false,
        }
    }

    fn event(
        &self,
        level: Level,
        e: &Endpoint,
        message: String,
        mut fields: Vec<(&'static str, String)>,
    ) {
        fields.insert(0, ("endpoint", e.name.to_string()));
        fields.insert(0, ("upstream", self.name.to_string()));
        (self.events)(level, message, fields);
    }

    /// Records how an attempt on `e` ended; ejects the endpoint when it keeps failing.
    pub fn report(&self, e: &Endpoint, outcome: Outcome<'_>) {
        let o = &self.config.outlier;
        if matches!(outcome, Outcome::Answered(status) if status < 500) && e.published.calm() {
            // The usual answer to the usual endpoint: no count to reset, no lock taken.
            return;
        }
        let mut h = e.health_mut();
        let reason = match outcome {
            Outcome::Answered(status) if status >= 500 => {
                h.consecutive_failures = 0;
                h.consecutive_5xx += 1;
                if o.consecutive_5xx == 0 || h.consecutive_5xx < o.consecutive_5xx {
                    return;
                }
                format!(
                    "{} consecutive 5xx answers (last {status})",
                    h.consecutive_5xx
                )
            }
            Outcome::Answered(_) => {
                h.consecutive_failures = 0;
                h.consecutive_5xx = 0;
                h.cap_reported = false;
                // The clock is read only for an endpoint back from an ejection.
                if h.recovered_at
                    .is_some_and(|at| at.elapsed() > o.max_ejection)
                {
                    // Healthy long enough: the next ejection starts short again.
                    h.ejections = 0;
                }
                return;
            }
            Outcome::Failed(f) => {
                // Only the upstream's own failures count; a client leaving says nothing of it.
                if f.cause.side() != Side::Upstream {
                    return;
                }
                h.consecutive_failures += 1;
                // An endpoint that accepts a request and never answers it (a hung worker) costs
                // every request sent to it a whole response timeout: out at the first one.
                let hung = f.cause == cause::Cause::Timeout && f.phase == cause::Phase::ReadHead;
                if o.consecutive_failures == 0
                    || (!hung && h.consecutive_failures < o.consecutive_failures)
                {
                    return;
                }
                if hung {
                    format!(
                        "a response timeout ({}): it takes requests and does not answer them",
                        f.detail.as_deref().unwrap_or("no response head in time")
                    )
                } else {
                    format!(
                        "{} consecutive failures (last {}@{})",
                        h.consecutive_failures, f.cause, f.phase
                    )
                }
            }
        };
        let now = Instant::now();
        if h.ejected_until.is_some_and(|u| now < u) {
            return;
        }
        drop(h);
        let ejected_now = self
            .endpoints
            .iter()
            .filter(|x| x.published.ejected_until().is_some_and(|u| now < u))
            .count();
        if (ejected_now as u64 + 1) * 100
            > self.endpoints.len() as u64 * o.max_ejected_percent as u64
        {
            // Said once per run of failures, not at every failure after the threshold.
            if std::mem::replace(&mut e.health_mut().cap_reported, true) {
                return;
            }
            self.event(
                Level::Warn,
                e,
                format!("endpoint not ejected despite {reason}: {}% of the pool is the most that may be ejected", o.max_ejected_percent),
                vec![],
            );
            return;
        }
        let mut h = e.health_mut();
        h.ejections += 1;
        e.ejected_total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let time = (o.base_ejection * h.ejections).min(o.max_ejection);
        h.ejected_until = Some(now + time);
        h.consecutive_failures = 0;
        h.consecutive_5xx = 0;
        let n = h.ejections;
        drop(h);
        self.event(
            Level::Warn,
            e,
            format!("endpoint ejected for {time:?} after {reason}"),
            vec![("ejections", n.to_string())],
        );
    }

    /// Records an active check result and applies rise/fall.
    fn active_result(&self, e: &Endpoint, result: Result<(), String>) {
        let Some(hc) = &self.config.health else {
            return;
        };
        let mut h = e.health_mut();
        match result {
            Ok(()) => {
                h.fails = 0;
                h.passes += 1;
                if !h.active_up && h.passes >= hc.rise {
                    h.active_up = true;
                    h.recovered_at = Some(Instant::now());
                    h.ejected_until = None;
                    h.consecutive_failures = 0;
                    let passes = h.passes;
                    drop(h);
                    self.event(
                        Level::Info,
                        e,
                        format!("endpoint is healthy again after {passes} passing checks"),
                        vec![],
                    );
                }
            }
            Err(why) => {
                h.passes = 0;
                h.fails += 1;
                if h.active_up && h.fails >= hc.fall {
                    h.active_up = false;
                    let fails = h.fails;
                    drop(h);
                    self.event(
                        Level::Warn,
                        e,
                        format!("endpoint marked unhealthy after {fails} failed checks: {why}"),
                        vec![("check", why)],
                    );
                }
            }
        }
    }
}

/// Runs active checks on `e` until `stop`.
pub(crate) async fn check_loop(upstream: Arc<Upstream>, e: Arc<Endpoint>, stop: CancellationToken) {
    let Some(hc) = upstream.config.health.clone() else {
        return;
    };
    // Spread the endpoints' checks over the interval instead of probing all at once.
    let offset = hc
        .interval
        .mul_f64(e.index as f64 / upstream.endpoints.len().max(1) as f64);
    let mut next = tokio::time::Instant::now() + offset;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += hc.interval;
        let result = tokio::time::timeout(
            hc.timeout,
            probe(&upstream, &e, &hc.check, &hc.expect, hc.timeout),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", hc.timeout)));
        upstream.active_result(&e, result);
    }
}

async fn probe(
    upstream: &Upstream,
    e: &Endpoint,
    check: &HealthCheck,
    expect: &[(u16, u16)],
    timeout: Duration,
) -> Result<(), String> {
    let addr = e.names.pick().await.map_err(|f| describe(&f))?;
    let opts = ConnectOptions {
        connect_timeout: timeout,
        h2: false,
        ..upstream.connect.clone()
    };
    let conn = net::connect_host(addr, crate::endpoint_host(&e.name), &opts)
        .await
        .map_err(|f| describe(&f))?;
    let HealthCheck::Http { path } = check else {
        return Ok(());
    };
    let req = http::Request::get(path.as_str())
        .header(http::header::HOST, &*e.name)
        .header(http::header::USER_AGENT, "cleargate-health-check")
        .header(http::header::CONNECTION, "close")
        .body(RequestBody::empty())
        .map_err(|e| e.to_string())?;
    let deadlines = Deadlines {
        connect: timeout,
        send: timeout,
        response: timeout,
        body_idle: timeout,
    };
    let (head, body) = req.into_parts();
    let (resp, _, _) = conn
        .send(&head, body, &deadlines)
        .await
        .map_err(|(f, _)| describe(&f))?;
    let status = resp.status().as_u16();
    if expect.iter().any(|(lo, hi)| (*lo..=*hi).contains(&status)) {
        Ok(())
    } else {
        Err(format!("status {status} from {path}"))
    }
}

fn describe(f: &Failure) -> String {
    match &f.detail {
        Some(d) => format!("{}@{}: {d}", f.cause, f.phase),
        None => format!("{}@{}", f.cause, f.phase),
    }
}
