//! `cleargate doctor URL --watch [INTERVAL]`: an uptime watch.
//!
//! Every interval, one request on a new connection with the doctor's own probe (`probe.rs`),
//! each network step bounded by `--timeout`. The name is resolved through the same lookup the
//! checklist uses (`net::dns`), again once the shortest TTL of the answer has passed (every probe
//! for a TTL of 0, and after every failed lookup). A probe fails when the connection or the
//! exchange has a problem (its cause and phase come from the connector) or when the status is
//! 500 or more; for an error page a gateway made, its `Proxy-Status` names the cause when it can.
//!
//! [`Tally`] keeps the arithmetic (availability, outages, failures by cause, latency) apart from
//! the network, so it is tested on made-up samples. The text and JSON lines are written here too;
//! `src/cmd/doctor.rs` only prints them and handles the terminal.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use cause::{Cause, Phase};
use net::tls::TlsOptions;
use serde_json::{json, Value};

use crate::probe::{self, ms, Destination, Probe, Problem};
use crate::url::Target;
use crate::{who, Budget, InputError, Options};

/// The interval when `--watch` is given without one.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// How many `--timeout` steps one probe may take in all (DNS, connects, TLS, the response head,
/// the body).
const PROBE_STEPS: u32 = 6;

/// The longest detail kept on a failure line.
const DETAIL_CHARS: usize = 120;

/// How to watch; the URL, resolvers, `--timeout` and trusted roots come from [`Options`].
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Time between the starts of two probes (a probe slower than that delays the next one).
    pub interval: Duration,
    /// Stop after this long (`--for`); no probe starts after it, the one under way finishes.
    pub duration: Option<Duration>,
    /// Stop after this many probes.
    pub count: Option<u64>,
}

impl WatchOptions {
    pub fn new(interval: Duration) -> WatchOptions {
        WatchOptions {
            interval,
            duration: None,
            count: None,
        }
    }
}

/// One probe's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// 1, 2, 3... in the order the probes started.
    pub seq: u64,
    /// When the probe started.
    pub time: SystemTime,
    /// Milliseconds from the start of the watch to the start of the probe.
    pub at_ms: f64,
    pub ok: bool,
    pub status: Option<u16>,
    pub cause: Option<Cause>,
    pub phase: Option<Phase>,
    pub detail: Option<String>,
    /// Who made an error response (a product name, `upstream` or `server`), when one came.
    pub by: Option<String>,
    /// The address the request went to.
    pub addr: Option<SocketAddr>,
    /// The name lookup's time, when this probe made one.
    pub dns_ms: Option<f64>,
    /// The whole probe, lookup included.
    pub ms: f64,
}

impl Sample {
    /// What the failure is counted as: `cause@phase`, else `status 503`, else `no response`.
    pub fn key(&self) -> Option<String> {
        if self.ok {
            return None;
        }
        Some(match (self.cause, self.phase, self.status) {
            (Some(c), Some(p), _) => format!("{c}@{p}"),
            (Some(c), None, _) => c.to_string(),
            (None, _, Some(s)) => format!("status {s}"),
            (None, _, None) => "no response".into(),
        })
    }

    /// The probe as one JSON object (`"type": "probe"`), without a newline.
    pub fn json(&self) -> String {
        json!({
            "type": "probe",
            "time": rfc3339(self.time),
            "unix_ms": unix_ms(self.time),
            "seq": self.seq,
            "ok": self.ok,
            "status": self.status,
            "cause": self.cause.map(|c| c.to_string()),
            "phase": self.phase.map(|p| p.to_string()),
            "detail": self.detail,
            "by": self.by,
            "addr": self.addr.map(|a| a.to_string()),
            "dns_ms": self.dns_ms,
            "ms": self.ms,
        })
        .to_string()
    }

    /// A failure as one line for people: time, probe number, status (or `none`), cause and
    /// phase (or `-`), and a short detail.
    pub fn human(&self) -> String {
        let status = self
            .status
            .map_or_else(|| "none".to_string(), |s| s.to_string());
        let what = match (self.cause, self.phase) {
            (Some(c), Some(p)) => format!("{c}@{p}"),
            (Some(c), None) => c.to_string(),
            _ => "-".into(),
        };
        let mut line = format!(
            "{}  FAIL #{:<4} status {status:<4}  {what:<24}",
            rfc3339(self.time),
            self.seq
        );
        if let Some(d) = &self.detail {
            line.push_str("  ");
            line.push_str(&short(d));
        }
        line.trim_end().to_string()
    }
}

/// A streak of consecutive failures.
#[derive(Clone, Debug, PartialEq)]
pub struct Outage {
    pub failures: u64,
    /// From the start of the first failed probe to the start of the next successful one, or to
    /// the end of the watch when none came.
    pub ms: f64,
    pub first_seq: u64,
    pub start: SystemTime,
    /// True when the watch ended during it.
    pub ongoing: bool,
}

impl Outage {
    /// `recovered after 3 failures, outage 2.0 s`.
    pub fn recovered_line(&self, now: SystemTime) -> String {
        format!(
            "{}  recovered after {} failure{}, outage {}",
            rfc3339(now),
            self.failures,
            plural(self.failures),
            seconds(self.ms)
        )
    }
}

/// Failures counted under one key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CauseCount {
    /// `cause@phase`, `status 503` or `no response`.
    pub key: String,
    pub cause: Option<Cause>,
    pub phase: Option<Phase>,
    /// Set when the failure has no cause (an application's 5xx, or a gateway page that does not
    /// say why).
    pub status: Option<u16>,
    pub count: u64,
}

/// Latency of the successful probes, in milliseconds (nearest-rank percentiles).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: usize,
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// Why the watch ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Ctrl-C (or whatever future the caller gave).
    Interrupted,
    /// `--for` elapsed.
    Duration,
    /// The probe count was reached.
    Count,
    /// The caller asked to stop (its output went away).
    Output,
}

impl Stopped {
    pub fn name(&self) -> &'static str {
        match self {
            Stopped::Interrupted => "interrupted",
            Stopped::Duration => "duration",
            Stopped::Count => "count",
            Stopped::Output => "output",
        }
    }
}

/// The running counts; fed one sample at a time.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub probes: u64,
    pub ok: u64,
    by_key: BTreeMap<String, CauseCount>,
    latencies: Vec<f64>,
    /// The open streak of failures, with the start of its first failure (ms from the start).
    streak: Option<(f64, Outage)>,
    longest: Option<Outage>,
    last: Option<(bool, Option<u16>, f64)>,
}

impl Tally {
    pub fn failed(&self) -> u64 {
        self.probes - self.ok
    }

    /// Successful probes over all probes, in percent; `None` before the first probe.
    pub fn availability(&self) -> Option<f64> {
        (self.probes > 0).then(|| self.ok as f64 * 100.0 / self.probes as f64)
    }

    /// Counts `s`. Returns the outage that `s` ends, when it is the first success after failures.
    pub fn add(&mut self, s: &Sample) -> Option<Outage> {
        self.probes += 1;
        self.last = Some((s.ok, s.status, s.ms));
        if s.ok {
            self.ok += 1;
            self.latencies.push(s.ms);
            let (start_ms, mut ended) = self.streak.take()?;
            ended.ms = round2(s.at_ms - start_ms);
            ended.ongoing = false;
            self.note_outage(&ended);
            return Some(ended);
        }
        let key = s.key().unwrap_or_default();
        self.by_key
            .entry(key.clone())
            .or_insert_with(|| CauseCount {
                key,
                cause: s.cause,
                phase: s.phase,
                status: if s.cause.is_none() { s.status } else { None },
                count: 0,
            })
            .count += 1;
        match &mut self.streak {
            Some((_, o)) => o.failures += 1,
            None => {
                self.streak = Some((
                    s.at_ms,
                    Outage {
                        failures: 1,
                        ms: 0.0,
                        first_seq: s.seq,
                        start: s.time,
                        ongoing: true,
                    },
                ))
            }
        }
        None
    }

    fn note_outage(&mut self, o: &Outage) {
        let longer = match &self.longest {
            None => true,
            Some(l) => o.ms > l.ms || (o.ms == l.ms && o.failures > l.failures),
        };
        if longer {
            self.longest = Some(o.clone());
        }
    }

    /// The failures by key, most frequent first.
    pub fn by_cause(&self) -> Vec<CauseCount> {
        let mut v: Vec<CauseCount> = self.by_key.values().cloned().collect();
        v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        v
    }

    pub fn latency(&self) -> Latency {
        let mut t = self.latencies.clone();
        t.sort_by(|a, b| a.total_cmp(b));
        let rank = |p: f64| {
            let n = t.len();
            let i = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            t[i]
        };
        if t.is_empty() {
            return Latency::default();
        }
        Latency {
            count: t.len(),
            min: t.first().copied(),
            median: Some(rank(0.5)),
            p95: Some(rank(0.95)),
            max: t.last().copied(),
        }
    }

    /// The longest outage, the one still going at `end_ms` (from the watch's start) included.
    pub fn longest_outage(&self, end_ms: f64) -> Option<Outage> {
        let mut longest = self.longest.clone();
        if let Some((start_ms, open)) = &self.streak {
            let mut o = open.clone();
            o.ms = round2((end_ms - start_ms).max(0.0));
            let longer = match &longest {
                None => true,
                Some(l) => o.ms > l.ms || (o.ms == l.ms && o.failures > l.failures),
            };
            if longer {
                longest = Some(o);
            }
        }
        longest
    }

    /// `12 probes, 2 failed, 83.3% available, last 200 in 1.2 ms`.
    pub fn status_line(&self) -> String {
        let mut line = format!(
            "{} probe{}, {} failed, {} available",
            self.probes,
            plural(self.probes),
            self.failed(),
            percent(self.availability())
        );
        match self.last {
            Some((true, Some(s), ms)) => line.push_str(&format!(", last {s} in {}", millis(ms))),
            Some((false, _, _)) => line.push_str(", last FAILED"),
            _ => {}
        }
        line
    }

    /// The summary at `end_ms` from the watch's start.
    pub fn summary(&self, end_ms: f64) -> Summary {
        Summary {
            url: String::new(),
            interval_ms: 0.0,
            started: SystemTime::UNIX_EPOCH,
            elapsed_ms: round2(end_ms),
            stopped: Stopped::Interrupted,
            probes: self.probes,
            ok: self.ok,
            failed: self.failed(),
            availability: self.availability(),
            by_cause: self.by_cause(),
            longest_outage: self.longest_outage(end_ms),
            latency: self.latency(),
        }
    }
}

/// The end of a watch.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub url: String,
    pub interval_ms: f64,
    pub started: SystemTime,
    pub elapsed_ms: f64,
    pub stopped: Stopped,
    pub probes: u64,
    pub ok: u64,
    pub failed: u64,
    /// Percent of probes that succeeded; `None` when none was made.
    pub availability: Option<f64>,
    pub by_cause: Vec<CauseCount>,
    pub longest_outage: Option<Outage>,
    pub latency: Latency,
}

impl Summary {
    /// 0 when every probe succeeded, 1 when any failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed > 0)
    }

    /// The summary as one JSON object (`"type": "summary"`, `"summary": true`), no newline.
    pub fn json(&self) -> String {
        let outage = self.longest_outage.as_ref().map(|o| {
            json!({
                "failures": o.failures,
                "ms": o.ms,
                "first_seq": o.first_seq,
                "start": rfc3339(o.start),
                "ongoing": o.ongoing,
            })
        });
        let causes: Vec<Value> = self
            .by_cause
            .iter()
            .map(|c| {
                json!({
                    "key": c.key,
                    "cause": c.cause.map(|x| x.to_string()),
                    "phase": c.phase.map(|x| x.to_string()),
                    "status": c.status,
                    "count": c.count,
                })
            })
            .collect();
        json!({
            "type": "summary",
            "summary": true,
            "url": self.url,
            "started": rfc3339(self.started),
            "interval_ms": self.interval_ms,
            "elapsed_ms": self.elapsed_ms,
            "stopped": self.stopped.name(),
            "probes": self.probes,
            "ok": self.ok,
            "failed": self.failed,
            "availability_pct": self.availability.map(round2),
            "failures_by_cause": causes,
            "longest_outage": outage,
            "latency_ms": {
                "count": self.latency.count,
                "min": self.latency.min,
                "median": self.latency.median,
                "p95": self.latency.p95,
                "max": self.latency.max,
            },
        })
        .to_string()
    }

    /// The summary for people, several lines, ending with a newline.
    pub fn human(&self) -> String {
        let why = match self.stopped {
            Stopped::Interrupted => "stopped by Ctrl-C",
            Stopped::Duration => "--for elapsed",
            Stopped::Count => "probe count reached",
            Stopped::Output => "output closed",
        };
        let mut out = format!(
            "\nWatched {} for {} ({why})\n",
            self.url,
            seconds(self.elapsed_ms)
        );
        out.push_str(&format!(
            "  probes          {} ({} ok, {} failed)\n",
            self.probes, self.ok, self.failed
        ));
        out.push_str(&format!(
            "  availability    {}/{} = {}\n",
            self.ok,
            self.probes,
            percent(self.availability)
        ));
        if self.by_cause.is_empty() {
            out.push_str("  failures        none\n");
        } else {
            let list: Vec<String> = self
                .by_cause
                .iter()
                .map(|c| format!("{} {}", c.count, c.key))
                .collect();
            out.push_str(&format!("  failures        {}\n", list.join(", ")));
        }
        match &self.longest_outage {
            Some(o) => out.push_str(&format!(
                "  longest outage  {} failure{} in a row, {}, from probe #{} at {}{}\n",
                o.failures,
                plural(o.failures),
                seconds(o.ms),
                o.first_seq,
                rfc3339(o.start),
                if o.ongoing { " (still failing)" } else { "" }
            )),
            None => out.push_str("  longest outage  none\n"),
        }
        let l = &self.latency;
        match (l.min, l.median, l.p95, l.max) {
            (Some(min), Some(med), Some(p95), Some(max)) => out.push_str(&format!(
                "  latency         min {}, median {}, p95 {}, max {} ({} successful probe{})\n",
                millis(min),
                millis(med),
                millis(p95),
                millis(max),
                l.count,
                plural(l.count as u64)
            )),
            _ => out.push_str("  latency         no successful probe\n"),
        }
        out
    }
}

/// What the caller is told after each probe.
pub struct Step<'a> {
    pub sample: &'a Sample,
    pub tally: &'a Tally,
    /// Set when this probe is the first success after failures.
    pub recovered: Option<&'a Outage>,
}

/// Checks the URL and the options without probing anything.
pub fn check(opts: &Options, w: &WatchOptions) -> Result<Target, InputError> {
    let target = crate::url::parse(&opts.url)
        .map_err(|e| InputError(format!("{}: {e}", opts.url.trim())))?;
    if w.interval.is_zero() {
        return Err(InputError("--watch: the interval must be above 0".into()));
    }
    if w.duration.is_some_and(|d| d.is_zero()) {
        return Err(InputError("--for: the duration must be above 0".into()));
    }
    if w.count == Some(0) {
        return Err(InputError("--count: give at least 1".into()));
    }
    Ok(target)
}

/// Probes `opts.url` every `w.interval` until `stop` resolves, `w.duration` has passed or
/// `w.count` probes are done. `on_step` is called after each probe; returning `false` stops.
pub async fn watch<S, F>(
    opts: &Options,
    w: &WatchOptions,
    stop: S,
    mut on_step: F,
) -> Result<Summary, InputError>
where
    S: Future<Output = ()>,
    F: FnMut(Step<'_>) -> bool,
{
    let target = check(opts, w)?;
    let tls = TlsOptions {
        extra_roots: opts.extra_roots.clone(),
        timeout: opts.timeout,
    };
    let mut names = Names::new(&target, opts.resolvers.first().copied());
    let base = Destination {
        tls: target.is_tls(),
        server_name: target.host.clone(),
        host_header: target.host_header(),
        path: target.path.clone(),
        addrs: Vec::new(),
    };
    let started = Instant::now();
    let started_at = SystemTime::now();
    let deadline = w.duration.map(|d| started + d);
    let mut ticks = tokio::time::interval(w.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tally = Tally::default();
    tokio::pin!(stop);

    let stopped = loop {
        if w.count.is_some_and(|n| tally.probes >= n) {
            break Stopped::Count;
        }
        tokio::select! {
            biased;
            _ = &mut stop => break Stopped::Interrupted,
            _ = until(deadline) => break Stopped::Duration,
            _ = ticks.tick() => {}
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Stopped::Duration;
        }
        let seq = tally.probes + 1;
        let one = probe_once(&mut names, &base, &tls, opts.timeout, seq, started);
        let sample = tokio::select! {
            biased;
            _ = &mut stop => break Stopped::Interrupted,
            s = one => s,
        };
        let recovered = tally.add(&sample);
        let go_on = on_step(Step {
            sample: &sample,
            tally: &tally,
            recovered: recovered.as_ref(),
        });
        if !go_on {
            break Stopped::Output;
        }
    };

    let mut summary = tally.summary(ms(started.elapsed()));
    summary.url = target.url.clone();
    summary.interval_ms = ms(w.interval);
    summary.started = started_at;
    summary.stopped = stopped;
    Ok(summary)
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

/// The URL's addresses, looked up again once their TTL has passed.
struct Names {
    host: String,
    port: u16,
    fixed: Option<SocketAddr>,
    resolver: Option<SocketAddr>,
    cached: Option<(Vec<SocketAddr>, Instant)>,
}

impl Names {
    fn new(target: &Target, resolver: Option<SocketAddr>) -> Names {
        Names {
            host: target.host.clone(),
            port: target.port,
            fixed: target.ip().map(|ip| SocketAddr::new(ip, target.port)),
            resolver,
            cached: None,
        }
    }

    /// The addresses, and the lookup's time when one was made.
    async fn get(&mut self, timeout: Duration) -> (Result<Vec<SocketAddr>, Problem>, Option<f64>) {
        if let Some(a) = self.fixed {
            return (Ok(vec![a]), None);
        }
        if let Some((addrs, until)) = &self.cached {
            if Instant::now() < *until {
                return (Ok(addrs.clone()), None);
            }
        }
        let report = net::dns::lookup(&self.host, self.resolver, timeout).await;
        let took = Some(ms(report.elapsed));
        if let Some(f) = report.failure(&self.host) {
            self.cached = None;
            return (Err(Problem::from(&f)), took);
        }
        let ttl = report.addrs.iter().map(|a| a.ttl).min().unwrap_or(0);
        let addrs: Vec<SocketAddr> = report
            .addrs
            .iter()
            .map(|a| SocketAddr::new(a.ip, self.port))
            .collect();
        self.cached = (ttl > 0).then(|| {
            (
                addrs.clone(),
                Instant::now() + Duration::from_secs(u64::from(ttl)),
            )
        });
        (Ok(addrs), took)
    }
}

async fn probe_once(
    names: &mut Names,
    base: &Destination,
    tls: &TlsOptions,
    timeout: Duration,
    seq: u64,
    started: Instant,
) -> Sample {
    let t0 = Instant::now();
    let mut s = Sample {
        seq,
        time: SystemTime::now(),
        at_ms: ms(t0.duration_since(started)),
        ok: false,
        status: None,
        cause: None,
        phase: None,
        detail: None,
        by: None,
        addr: None,
        dns_ms: None,
        ms: 0.0,
    };
    let budget = Budget::new(timeout, timeout.saturating_mul(PROBE_STEPS));
    let (addrs, dns_ms) = names.get(budget.step()).await;
    s.dns_ms = dns_ms;
    match addrs {
        Err(p) => set_problem(&mut s, &p),
        Ok(addrs) => {
            let dest = Destination {
                addrs,
                ..base.clone()
            };
            let p = probe::probe(&dest, tls, &budget, false).await;
            judge(&mut s, &p);
        }
    }
    s.ms = ms(t0.elapsed());
    s
}

fn set_problem(s: &mut Sample, p: &Problem) {
    s.ok = false;
    s.cause = Some(p.cause);
    s.phase = Some(p.phase);
    s.detail = p.detail.clone();
}

/// Success or failure of one probe, with the cause when it can be named.
fn judge(s: &mut Sample, p: &Probe) {
    s.addr = p.used.or_else(|| p.tcp.first().map(|a| a.addr));
    let http = p.http.as_ref();
    s.status = http.and_then(|h| h.status);
    if let Some(problem) = &p.problem {
        set_problem(s, problem);
        return;
    }
    let (Some(ex), Some(status)) = (http, s.status) else {
        s.ok = false;
        s.detail = Some("no response".into());
        return;
    };
    if status < 500 {
        s.ok = true;
        return;
    }
    s.ok = false;
    let reason = ex.reason.as_deref().unwrap_or("");
    let who = who::identify(ex);
    let Some(m) = who.error_maker else {
        s.detail = Some(format!("{status} {reason}").trim_end().to_string());
        return;
    };
    s.by = Some(m.by.clone());
    if m.direct {
        s.cause = m.hints.first().copied();
        s.phase = who.proxy_status.iter().find_map(|ps| ps.phase);
        let ps = who.proxy_status.iter().find(|p| p.error.is_some());
        let mut said = ps.and_then(|p| p.error.clone()).unwrap_or_default();
        if let Some(hop) = ps.and_then(|p| p.next_hop.as_deref()) {
            said.push_str(&format!(", next hop {hop}"));
        }
        s.detail = Some(format!(
            "{} made this {status} (Proxy-Status: {said})",
            m.by
        ));
        return;
    }
    s.detail = Some(match m.hop {
        "gateway" | "cdn" => match m.hints.first() {
            Some(h) => format!("{}'s own {status} page (it usually means {h})", m.by),
            None => format!("{}'s own {status} page, which does not say why", m.by),
        },
        _ => format!("the application's own {status} {reason}")
            .trim_end()
            .to_string(),
    });
}

fn short(s: &str) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() <= DETAIL_CHARS {
        return one;
    }
    let cut: String = one.chars().take(DETAIL_CHARS - 3).collect();
    format!("{cut}...")
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `83.3%`, or `n/a` before any probe.
fn percent(p: Option<f64>) -> String {
    match p {
        Some(p) => format!("{p:.1}%"),
        None => "n/a".into(),
    }
}

fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

fn seconds(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{:.0} ms", ms)
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-23T10:04:05.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = unix_ms(t);
    let (y, mo, d, h, mi, s) = logscan::time::civil(ms);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
        ms.rem_euclid(1000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A probe starting `at` ms into the watch.
    fn sample(seq: u64, at: f64, outcome: Result<u16, (Cause, Phase)>, took: f64) -> Sample {
        let mut s = Sample {
            seq,
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(at as u64),
            at_ms: at,
            ok: false,
            status: None,
            cause: None,
            phase: None,
            detail: None,
            by: None,
            addr: None,
            dns_ms: None,
            ms: took,
        };
        match outcome {
            Ok(st) => {
                s.status = Some(st);
                s.ok = st < 500;
            }
            Err((c, p)) => {
                s.cause = Some(c);
                s.phase = Some(p);
            }
        }
        s
    }

    const RESET: Result<u16, (Cause, Phase)> = Err((Cause::Reset, Phase::ReadHead));
    const REFUSED: Result<u16, (Cause, Phase)> = Err((Cause::Refused, Phase::Connect));

    #[test]
    fn availability_counts_successes_over_probes() {
        let mut t = Tally::default();
        assert_eq!(t.availability(), None);
        for i in 1..=40u64 {
            let outcome = if i % 4 == 0 { RESET } else { Ok(200) };
            t.add(&sample(i, i as f64 * 20.0, outcome, 1.0));
        }
        assert_eq!((t.probes, t.ok, t.failed()), (40, 30, 10));
        assert_eq!(t.availability(), Some(75.0));
        let s = t.summary(820.0);
        assert_eq!(s.exit_code(), 1);
        assert!(s.human().contains("30/40 = 75.0%"), "{}", s.human());
        // A 4xx is an answer, not an outage.
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, Ok(404), 1.0));
        assert_eq!(t.availability(), Some(100.0));
        assert_eq!(t.summary(10.0).exit_code(), 0);
    }

    #[test]
    fn one_decimal_percentage() {
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, Ok(200), 1.0));
        t.add(&sample(2, 1.0, Ok(200), 1.0));
        t.add(&sample(3, 2.0, Ok(503), 1.0));
        assert_eq!(percent(t.availability()), "66.7%");
        let v: Value = serde_json::from_str(&t.summary(3.0).json()).unwrap();
        assert_eq!(v["availability_pct"], 66.67);
    }

    #[test]
    fn the_longest_outage_runs_from_the_first_failure_to_the_next_success() {
        let mut t = Tally::default();
        assert!(t.add(&sample(1, 0.0, Ok(200), 1.0)).is_none());
        assert!(t.add(&sample(2, 1000.0, RESET, 1.0)).is_none());
        let o = t.add(&sample(3, 2000.0, Ok(200), 1.0)).unwrap();
        assert_eq!((o.failures, o.ms, o.first_seq), (1, 1000.0, 2));
        assert!(t.add(&sample(4, 3000.0, REFUSED, 1.0)).is_none());
        assert!(t.add(&sample(5, 4000.0, REFUSED, 1.0)).is_none());
        assert!(t.add(&sample(6, 5000.0, Ok(502), 1.0)).is_none());
        let o = t.add(&sample(7, 6500.0, Ok(200), 1.0)).unwrap();
        assert_eq!((o.failures, o.ms, o.first_seq), (3, 3500.0, 4));
        assert!(o
            .recovered_line(SystemTime::UNIX_EPOCH)
            .contains("recovered after 3 failures, outage 3.5 s"));
        let l = t.longest_outage(7000.0).unwrap();
        assert_eq!((l.failures, l.ms, l.ongoing), (3, 3500.0, false));
    }

    #[test]
    fn an_outage_still_going_at_the_end_counts_to_the_end() {
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, RESET, 1.0));
        t.add(&sample(2, 100.0, Ok(200), 1.0));
        t.add(&sample(3, 200.0, RESET, 1.0));
        t.add(&sample(4, 300.0, RESET, 1.0));
        let l = t.longest_outage(450.0).unwrap();
        assert_eq!(
            (l.failures, l.ms, l.first_seq, l.ongoing),
            (2, 250.0, 3, true)
        );
        // A finished, longer one wins over a short open one.
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, RESET, 1.0));
        t.add(&sample(2, 900.0, Ok(200), 1.0));
        t.add(&sample(3, 1000.0, RESET, 1.0));
        let l = t.longest_outage(1100.0).unwrap();
        assert_eq!((l.failures, l.ms, l.ongoing), (1, 900.0, false));
        assert!(t
            .summary(1100.0)
            .human()
            .contains("longest outage  1 failure in a row"));
    }

    #[test]
    fn failures_are_counted_by_cause_and_phase_or_by_status() {
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, RESET, 1.0));
        t.add(&sample(2, 1.0, Ok(503), 1.0));
        t.add(&sample(3, 2.0, RESET, 1.0));
        t.add(&sample(4, 3.0, REFUSED, 1.0));
        t.add(&sample(5, 4.0, Ok(503), 1.0));
        t.add(&sample(6, 5.0, RESET, 1.0));
        t.add(&sample(7, 6.0, Ok(500), 1.0));
        t.add(&sample(8, 7.0, Ok(200), 1.0));
        let by: Vec<(String, u64)> = t.by_cause().into_iter().map(|c| (c.key, c.count)).collect();
        assert_eq!(
            by,
            vec![
                ("reset@read_head".to_string(), 3),
                ("status 503".to_string(), 2),
                ("refused@connect".to_string(), 1),
                ("status 500".to_string(), 1),
            ]
        );
        let s = t.summary(8.0);
        assert_eq!(s.by_cause[1].status, Some(503));
        assert_eq!(s.by_cause[0].status, None);
        assert!(
            s.human().contains(
                "failures        3 reset@read_head, 2 status 503, 1 refused@connect, 1 status 500"
            ),
            "{}",
            s.human()
        );
        let v: Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["failures_by_cause"][0]["cause"], "reset");
        assert_eq!(v["failures_by_cause"][0]["phase"], "read_head");
        assert_eq!(v["failures_by_cause"][1]["status"], 503);
        assert_eq!(v["summary"], true);
        assert_eq!(v["type"], "summary");
    }

    #[test]
    fn latency_of_successful_probes_only() {
        let mut t = Tally::default();
        for (i, ms) in [5.0, 1.0, 3.0, 2.0, 4.0].into_iter().enumerate() {
            t.add(&sample(i as u64 + 1, i as f64, Ok(200), ms));
        }
        t.add(&sample(6, 6.0, RESET, 999.0));
        let l = t.latency();
        assert_eq!(l.count, 5);
        assert_eq!(
            (l.min, l.median, l.p95, l.max),
            (Some(1.0), Some(3.0), Some(5.0), Some(5.0))
        );
        let mut t = Tally::default();
        for i in 1..=100u64 {
            t.add(&sample(i, i as f64, Ok(200), i as f64));
        }
        let l = t.latency();
        assert_eq!((l.median, l.p95), (Some(50.0), Some(95.0)));
        assert_eq!(Tally::default().latency(), Latency::default());
    }

    #[test]
    fn lines_for_people_and_for_scripts() {
        let mut s = sample(7, 1500.0, RESET, 2.5);
        s.detail = Some("the connection was\nreset".into());
        let line = s.human();
        assert!(
            line.starts_with("1970-01-01T00:00:01.500Z  FAIL #7"),
            "{line}"
        );
        assert!(line.contains("status none"), "{line}");
        assert!(line.contains("reset@read_head"), "{line}");
        assert!(line.ends_with("the connection was reset"), "{line}");
        let v: Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["type"], "probe");
        assert_eq!(v["seq"], 7);
        assert_eq!(v["ok"], false);
        assert_eq!(v["status"], Value::Null);
        assert_eq!(v["cause"], "reset");
        assert_eq!(v["phase"], "read_head");
        assert_eq!(v["unix_ms"], 1500);
        assert_eq!(v["time"], "1970-01-01T00:00:01.500Z");
        let s = sample(8, 0.0, Ok(503), 1.0);
        assert!(s.human().contains("status 503"));
        assert!(s.human().ends_with("status 503   -"), "{}", s.human());
        let mut t = Tally::default();
        t.add(&sample(1, 0.0, Ok(200), 1.25));
        assert_eq!(
            t.status_line(),
            "1 probe, 0 failed, 100.0% available, last 200 in 1.25 ms"
        );
    }

    #[test]
    fn bad_watch_options_are_input_errors() {
        let opts = Options::new("http://127.0.0.1:1/");
        assert!(check(&opts, &WatchOptions::new(Duration::ZERO)).is_err());
        let mut w = WatchOptions::new(DEFAULT_INTERVAL);
        w.count = Some(0);
        assert!(check(&opts, &w).is_err());
        assert!(check(
            &Options::new("ftp://x/"),
            &WatchOptions::new(DEFAULT_INTERVAL)
        )
        .is_err());
        assert!(check(&opts, &WatchOptions::new(DEFAULT_INTERVAL)).is_ok());
    }
}
