//! Aggregation of findings: counts per cause, first and last seen, top upstreams and hosts, a
//! time histogram, incidents, recognisable patterns and the fixes to try first.
//!
//! Memory is bounded whatever the size of the input: top lists keep at most [`TOP_CAP`] distinct
//! keys (later new keys are counted as "others"), the histogram coarsens its buckets when it
//! grows past [`MAX_BUCKETS`], and examples are a handful of lines. Summaries of parts of one
//! input merge into the summary of the whole. No rendering happens here.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use cause::{Cause, Phase};

use crate::time::Millis;
use crate::{display, hash, Finding, Format, Relayed, Role};

/// Distinct keys kept per top list.
pub const TOP_CAP: usize = 4096;
/// Histogram buckets kept before they are merged two by two.
pub const MAX_BUCKETS: usize = 16_384;
/// Unrecognised lines kept as examples.
pub const EXAMPLES: usize = 5;
/// Longest example line kept, in characters.
pub const EXAMPLE_CHARS: usize = 400;
/// Two error buckets at most this far apart belong to one incident.
pub const INCIDENT_GAP_MS: i64 = 2 * 60_000;

fn cause_index(c: Cause) -> usize {
    Cause::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

/// A quick hash for the short keys of top lists (addresses, host names, request lines). Not
/// resistant to crafted collisions, which the bound of [`TOP_CAP`] keys makes harmless.
#[derive(Default, Clone, Copy)]
struct QuickHasher(u64);

impl Hasher for QuickHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Counts per key, bounded.
#[derive(Clone, Debug, Default)]
pub struct Top {
    counts: HashMap<Box<[u8]>, u64, BuildHasherDefault<QuickHasher>>,
    /// Occurrences of keys that came after the list was full.
    pub others: u64,
}

impl Top {
    pub fn add(&mut self, key: &[u8], n: u64) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += n;
        } else if self.counts.len() < TOP_CAP {
            self.counts.insert(key.into(), n);
        } else {
            self.others += n;
        }
    }

    pub fn merge(&mut self, other: &Top) {
        for (k, n) in &other.counts {
            self.add(k, *n);
        }
        self.others += other.others;
    }

    /// The `n` most frequent keys, ties by name, for display.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .counts
            .iter()
            .map(|(k, c)| (display(k, 120), *c))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    pub fn distinct(&self) -> usize {
        self.counts.len()
    }
}

/// Everything known about one cause.
#[derive(Clone, Debug, Default)]
pub struct CauseStats {
    pub count: u64,
    pub first: Option<Millis>,
    pub last: Option<Millis>,
    phases: [u64; 10],
    /// Few distinct details per cause: a list beats a map, and equal details share one pointer.
    details: Vec<(&'static str, u64)>,
    pub statuses: BTreeMap<u16, u64>,
    formats: [u64; FORMATS],
    pub upstreams: Top,
    pub hosts: Top,
    pub requests: Top,
    /// Failures on connections that had served requests before.
    pub reused: u64,
    /// The first line seen, shortened.
    pub example: Option<String>,
}

fn phase_index(p: Phase) -> usize {
    Phase::ALL.iter().position(|x| *x == p).unwrap_or(0)
}

/// How many formats there are, for the per-format counters.
const FORMATS: usize = Format::ALL.len();

fn format_index(f: Format) -> usize {
    Format::ALL.iter().position(|x| *x == f).unwrap_or(0)
}

impl CauseStats {
    /// Phases with their counts, in the order of a request's life.
    pub fn phases(&self) -> Vec<(Phase, u64)> {
        Phase::ALL
            .iter()
            .zip(self.phases)
            .filter(|(_, n)| *n > 0)
            .map(|(p, n)| (*p, n))
            .collect()
    }

    /// Details with their counts, by name.
    pub fn details(&self) -> Vec<(&'static str, u64)> {
        let mut v = self.details.clone();
        v.sort_unstable();
        v
    }

    /// Findings per log format.
    pub fn formats(&self) -> Vec<(Format, u64)> {
        counted(&self.formats)
    }

    fn add_detail(&mut self, detail: &'static str, n: u64) {
        let same = |d: &&'static str| std::ptr::eq(d.as_ptr(), detail.as_ptr()) || *d == detail;
        match self.details.iter_mut().find(|(d, _)| same(d)) {
            Some((_, c)) => *c += n,
            None => self.details.push((detail, n)),
        }
    }
}

fn counted(counts: &[u64; FORMATS]) -> Vec<(Format, u64)> {
    Format::ALL
        .iter()
        .zip(counts)
        .filter(|(_, n)| **n > 0)
        .map(|(f, n)| (*f, *n))
        .collect()
}

/// One histogram bucket.
#[derive(Clone, Debug, Default)]
struct Bucket {
    counts: [u64; 19],
    /// Up to a few upstreams (hashed) that failed to connect or were all down in this bucket.
    down: Vec<u64>,
}

const DOWN_CAP: usize = 16;

impl Bucket {
    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn merge(&mut self, other: &Bucket) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for h in &other.down {
            if self.down.len() < DOWN_CAP && !self.down.contains(h) {
                self.down.push(*h);
            }
        }
    }
}

/// A burst of errors close together in time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    pub start: Millis,
    /// The end of the last bucket with errors.
    pub end: Millis,
    pub count: u64,
    pub causes: BTreeMap<Cause, u64>,
    /// Distinct upstreams that could not be connected to (or all were down), at least.
    pub upstreams_down: usize,
    /// Most errors in one bucket.
    pub peak: u64,
}

/// A recognised shape in the errors, with what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    pub name: &'static str,
    pub text: String,
}

/// What to do, most impactful first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recommendation {
    pub cause: Cause,
    pub count: u64,
    pub fixes: Vec<String>,
}

/// The summary of one or more inputs.
#[derive(Clone, Debug)]
pub struct Summary {
    pub lines: u64,
    pub skipped: u64,
    pub unrecognized: u64,
    pub unrecognized_examples: Vec<String>,
    pub follow_ups: u64,
    pub relayed: BTreeMap<&'static str, u64>,
    /// Lines read per format.
    formats: [u64; FORMATS],
    /// Per cause, in the order of `Cause::ALL`; a count of 0 means not seen.
    causes: Vec<CauseStats>,
    bucket_ms: i64,
    buckets: HashMap<i64, Bucket, BuildHasherDefault<QuickHasher>>,
    /// Times of close/reset failures before the response head, for the keep-alive race.
    race_times: Vec<Millis>,
}

const RACE_CAP: usize = 8192;

impl Default for Summary {
    fn default() -> Self {
        Summary {
            lines: 0,
            skipped: 0,
            unrecognized: 0,
            unrecognized_examples: Vec::new(),
            follow_ups: 0,
            relayed: BTreeMap::new(),
            formats: [0; FORMATS],
            causes: vec![CauseStats::default(); Cause::ALL.len()],
            bucket_ms: 60_000,
            buckets: HashMap::default(),
            race_times: Vec::new(),
        }
    }
}

fn min_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_opt(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Summary {
    pub fn new() -> Summary {
        Summary::default()
    }

    /// Counts a line read, whatever it turns out to be.
    pub fn line(&mut self, format: Option<Format>) {
        self.lines += 1;
        if let Some(f) = format {
            self.formats[format_index(f)] += 1;
        }
    }

    pub fn skipped(&mut self) {
        self.skipped += 1;
    }

    pub fn unrecognized(&mut self, line: &[u8]) {
        self.unrecognized += 1;
        if self.unrecognized_examples.len() < EXAMPLES {
            self.unrecognized_examples
                .push(display(line, EXAMPLE_CHARS));
        }
    }

    pub fn relayed(&mut self, r: &Relayed<'_>) {
        *self.relayed.entry(r.detail).or_default() += 1;
    }

    pub fn finding(&mut self, f: &Finding<'_>, line: &[u8]) {
        if f.role == Role::FollowUp {
            self.follow_ups += 1;
            return;
        }
        let s = &mut self.causes[cause_index(f.cause)];
        s.count += 1;
        s.first = min_opt(s.first, f.time);
        s.last = max_opt(s.last, f.time);
        s.phases[phase_index(f.phase)] += 1;
        if !f.detail.is_empty() {
            s.add_detail(f.detail, 1);
        }
        if let Some(st) = f.status {
            *s.statuses.entry(st).or_default() += 1;
        }
        s.formats[format_index(f.format)] += 1;
        if let Some(u) = f.upstream {
            s.upstreams.add(u, 1);
        }
        if let Some(h) = f.host {
            s.hosts.add(h, 1);
        }
        if let Some(r) = f.request {
            s.requests.add(r, 1);
        }
        if f.reused == Some(true) {
            s.reused += 1;
        }
        if s.example.is_none() {
            s.example = Some(display(line, EXAMPLE_CHARS));
        }
        let Some(t) = f.time else { return };
        if matches!(f.cause, Cause::Closed | Cause::Reset)
            && matches!(f.phase, Phase::SendRequest | Phase::ReadHead)
            && self.race_times.len() < RACE_CAP
        {
            self.race_times.push(t);
        }
        let key = t.div_euclid(self.bucket_ms) * self.bucket_ms;
        let b = self.buckets.entry(key).or_default();
        b.counts[cause_index(f.cause)] += 1;
        let down = matches!(f.cause, Cause::Refused | Cause::Unreachable)
            || (f.cause == Cause::Timeout && f.phase == Phase::Connect);
        if down && b.down.len() < DOWN_CAP {
            if let Some(u) = f.upstream {
                let h = hash(u);
                if !b.down.contains(&h) {
                    b.down.push(h);
                }
            }
        }
        if self.buckets.len() > MAX_BUCKETS {
            self.coarsen(self.bucket_ms * 2);
        }
    }

    /// The histogram's buckets in time order.
    fn sorted_buckets(&self) -> Vec<(&i64, &Bucket)> {
        let mut v: Vec<(&i64, &Bucket)> = self.buckets.iter().collect();
        v.sort_unstable_by_key(|(k, _)| **k);
        v
    }

    /// Re-buckets the histogram at `width` (a multiple of the current width).
    fn coarsen(&mut self, width: i64) {
        let old = std::mem::take(&mut self.buckets);
        self.bucket_ms = width;
        for (k, b) in old {
            self.buckets
                .entry(k.div_euclid(width) * width)
                .or_default()
                .merge(&b);
        }
        while self.buckets.len() > MAX_BUCKETS {
            self.coarsen(self.bucket_ms * 2);
        }
    }

    /// Adds everything `other` counted.
    pub fn merge(&mut self, other: &Summary) {
        self.lines += other.lines;
        self.skipped += other.skipped;
        self.unrecognized += other.unrecognized;
        for e in &other.unrecognized_examples {
            if self.unrecognized_examples.len() < EXAMPLES {
                self.unrecognized_examples.push(e.clone());
            }
        }
        self.follow_ups += other.follow_ups;
        for (k, n) in &other.relayed {
            *self.relayed.entry(k).or_default() += n;
        }
        for (a, b) in self.formats.iter_mut().zip(other.formats) {
            *a += b;
        }
        for (s, o) in self.causes.iter_mut().zip(&other.causes) {
            s.count += o.count;
            s.first = min_opt(s.first, o.first);
            s.last = max_opt(s.last, o.last);
            for (a, b) in s.phases.iter_mut().zip(o.phases) {
                *a += b;
            }
            for (d, n) in &o.details {
                s.add_detail(d, *n);
            }
            for (k, n) in &o.statuses {
                *s.statuses.entry(*k).or_default() += n;
            }
            for (a, b) in s.formats.iter_mut().zip(o.formats) {
                *a += b;
            }
            s.upstreams.merge(&o.upstreams);
            s.hosts.merge(&o.hosts);
            s.requests.merge(&o.requests);
            s.reused += o.reused;
            if s.example.is_none() {
                s.example.clone_from(&o.example);
            }
        }
        if other.bucket_ms > self.bucket_ms {
            self.coarsen(other.bucket_ms);
        }
        for (k, b) in &other.buckets {
            let key = k.div_euclid(self.bucket_ms) * self.bucket_ms;
            self.buckets.entry(key).or_default().merge(b);
        }
        if self.buckets.len() > MAX_BUCKETS {
            self.coarsen(self.bucket_ms * 2);
        }
        for t in &other.race_times {
            if self.race_times.len() < RACE_CAP {
                self.race_times.push(*t);
            }
        }
    }

    /// What was counted under `cause`, if anything.
    pub fn cause(&self, cause: Cause) -> Option<&CauseStats> {
        Some(&self.causes[cause_index(cause)]).filter(|s| s.count > 0)
    }

    /// Lines read per format.
    pub fn formats(&self) -> Vec<(Format, u64)> {
        counted(&self.formats)
    }

    /// Gateway errors counted under a cause (requests and events; follow-ups apart).
    pub fn total(&self) -> u64 {
        self.causes.iter().map(|s| s.count).sum()
    }

    /// Causes by count, largest first.
    pub fn ranked(&self) -> Vec<(Cause, &CauseStats)> {
        let mut v: Vec<(Cause, &CauseStats)> = Cause::ALL
            .iter()
            .copied()
            .zip(&self.causes)
            .filter(|(_, s)| s.count > 0)
            .collect();
        v.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(&b.0)));
        v
    }

    pub fn first_seen(&self) -> Option<Millis> {
        self.causes.iter().filter_map(|s| s.first).min()
    }

    pub fn last_seen(&self) -> Option<Millis> {
        self.causes.iter().filter_map(|s| s.last).max()
    }

    /// The histogram's bucket width in milliseconds.
    pub fn bucket_ms(&self) -> i64 {
        self.bucket_ms
    }

    /// Non-empty buckets in time order: start and count for `cause`.
    pub fn series(&self, cause: Cause) -> Vec<(Millis, u64)> {
        let i = cause_index(cause);
        self.sorted_buckets()
            .into_iter()
            .filter(|(_, b)| b.counts[i] > 0)
            .map(|(k, b)| (*k, b.counts[i]))
            .collect()
    }

    /// Counts of `cause` in `columns` equal slices of [`first_seen`, `last_seen`].
    pub fn columns(&self, cause: Option<Cause>, columns: usize) -> Vec<u64> {
        let mut out = vec![0; columns.max(1)];
        let (Some(first), Some(last)) = (self.first_seen(), self.last_seen()) else {
            return out;
        };
        let start = first.div_euclid(self.bucket_ms) * self.bucket_ms;
        let span = (last - start + self.bucket_ms).max(1);
        for (k, b) in &self.buckets {
            let n = match cause {
                Some(c) => b.counts[cause_index(c)],
                None => b.total(),
            };
            let col = (((k - start) as i128 * out.len() as i128) / span as i128) as usize;
            let col = col.min(out.len() - 1);
            out[col] += n;
        }
        out
    }

    /// Bursts of errors: runs of buckets with errors no more than [`INCIDENT_GAP_MS`] apart,
    /// largest first.
    pub fn incidents(&self) -> Vec<Incident> {
        let gap = INCIDENT_GAP_MS.max(self.bucket_ms * 2);
        let mut out: Vec<Incident> = Vec::new();
        let mut down: Vec<u64> = Vec::new();
        let mut prev_end = i64::MIN;
        for (k, b) in self.sorted_buckets() {
            let total = b.total();
            if total == 0 {
                continue;
            }
            let start_new = out.is_empty() || *k - prev_end > gap;
            if start_new {
                if let Some(last) = out.last_mut() {
                    last.upstreams_down = down.len();
                }
                down.clear();
                out.push(Incident {
                    start: *k,
                    end: *k + self.bucket_ms,
                    count: 0,
                    causes: BTreeMap::new(),
                    upstreams_down: 0,
                    peak: 0,
                });
            }
            let inc = out.last_mut().expect("pushed above");
            inc.end = *k + self.bucket_ms;
            inc.count += total;
            inc.peak = inc.peak.max(total);
            for (i, n) in b.counts.iter().enumerate() {
                if *n > 0 {
                    *inc.causes.entry(Cause::ALL[i]).or_default() += n;
                }
            }
            for h in &b.down {
                if !down.contains(h) && down.len() < 1024 {
                    down.push(*h);
                }
            }
            prev_end = *k + self.bucket_ms;
        }
        if let Some(last) = out.last_mut() {
            last.upstreams_down = down.len();
        }
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.start.cmp(&b.start)));
        out
    }

    /// Shapes worth naming: the keep-alive race, everything down at once, slow endpoints.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut out = Vec::new();

        // All upstreams down at once: several endpoints could not be connected to within one
        // bucket, or the gateway said outright that none was left.
        let together: Vec<(&i64, &Bucket)> = self
            .sorted_buckets()
            .into_iter()
            .filter(|(_, b)| {
                b.down.len() >= 2 || b.counts[cause_index(Cause::NoHealthyUpstream)] > 0
            })
            .collect();
        if let Some((start, b)) = together.first() {
            let others = together.len() - 1;
            out.push(Pattern {
                name: "all_upstreams_down",
                text: format!(
                    "at {} {}{}: a deploy, restart or outage of the whole pool rather than one bad \
                     server",
                    crate::time::format(**start),
                    if b.down.len() >= 2 {
                        format!("{} upstream endpoints failed to connect at once", b.down.len())
                    } else {
                        "no upstream was left in service".to_string()
                    },
                    if others > 0 {
                        format!(" (and in {others} more period(s))")
                    } else {
                        String::new()
                    }
                ),
            });
        }

        // The keep-alive race: closes and resets before the response head, on reused
        // connections when the log says so, or scattered one by one in time when it does not.
        let races = self.race_times.len() as u64;
        let reused: u64 = [Cause::Closed, Cause::Reset]
            .iter()
            .filter_map(|c| self.cause(*c))
            .map(|s| s.reused)
            .sum();
        if reused >= 3 && reused * 2 >= races {
            out.push(Pattern {
                name: "keepalive_race",
                text: format!(
                    "{reused} close/reset failures happened on reused upstream connections: the \
                     keep-alive race, where the upstream closes an idle connection just as the \
                     gateway sends on it. Keep the gateway's idle timeout below the upstream's"
                ),
            });
        } else if races >= 8 {
            let mut t = self.race_times.clone();
            t.sort_unstable();
            let isolated = t
                .iter()
                .enumerate()
                .filter(|(i, x)| {
                    let before = i.checked_sub(1).map(|j| **x - t[j]);
                    let after = t.get(i + 1).map(|y| y - **x);
                    before.is_none_or(|d| d > 30_000) && after.is_none_or(|d| d > 30_000)
                })
                .count();
            let gaps: Vec<i64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let steady = steady_interval(&gaps);
            // Scattered alone is weak evidence; a steady rhythm or many of them is not.
            if isolated * 10 >= t.len() * 8 && (steady.is_some() || isolated >= 20) {
                out.push(Pattern {
                    name: "keepalive_race",
                    text: format!(
                        "{} connections closed or reset before the response head, one at a \
                         time{}: the signature of the keep-alive race (the upstream closes idle \
                         connections the gateway still reuses). Keep the gateway's upstream \
                         idle timeout below the upstream's keep-alive timeout",
                        t.len(),
                        match steady {
                            Some(s) => format!(" at a steady interval of about {}s", s / 1000),
                            None => String::new(),
                        }
                    ),
                });
            }
        }

        // Timeouts that concentrate on one request.
        if let Some(s) = self.cause(Cause::Timeout) {
            if let Some((req, n)) = s.requests.top(1).into_iter().next() {
                if n >= 3 && n * 2 >= s.count && s.requests.distinct() > 1 {
                    out.push(Pattern {
                        name: "slow_endpoint",
                        text: format!(
                            "{n} of {} timeouts were for `{req}`: one slow endpoint rather than \
                             a slow upstream",
                            s.count
                        ),
                    });
                }
            }
        }
        out
    }

    /// Fixes per cause, the most frequent cause first; specific fixes for a detail before the
    /// general checks of the cause.
    pub fn recommendations(&self) -> Vec<Recommendation> {
        self.ranked()
            .into_iter()
            .map(|(cause, s)| {
                let mut details = s.details();
                details.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                let mut fixes: Vec<String> = details
                    .iter()
                    .filter_map(|(d, _)| detail_fix(d))
                    .map(str::to_string)
                    .collect();
                fixes.extend(cause.operator_checks().iter().map(|c| format!("check {c}")));
                fixes.dedup();
                Recommendation {
                    cause,
                    count: s.count,
                    fixes,
                }
            })
            .collect()
    }
}

/// The typical gap when gaps are regular (spread under a quarter of the median), in ms.
fn steady_interval(gaps: &[i64]) -> Option<i64> {
    if gaps.len() < 4 {
        return None;
    }
    let mut g = gaps.to_vec();
    g.sort_unstable();
    let median = g[g.len() / 2];
    let q1 = g[g.len() / 4];
    let q3 = g[g.len() * 3 / 4];
    (median >= 1000 && (q3 - q1) * 4 <= median).then_some(median)
}

/// The fix that a detail calls for, when it is more precise than the cause's checks.
pub fn detail_fix(detail: &str) -> Option<&'static str> {
    Some(match detail {
        "unix socket missing" => {
            "start the application server (php-fpm) and make the socket path in the gateway's configuration the one it creates"
        }
        "unix socket permission denied" => {
            "let the gateway's user connect to the socket (php-fpm: listen.owner, listen.group, listen.mode = 0660)"
        }
        "unix socket backlog full" => {
            "the application server accepts too slowly: add workers (pm.max_children) or raise its listen backlog"
        }
        "unix socket: nothing listening" => {
            "a stale socket file is left with no process behind it: restart the application server"
        }
        "plain HTTP on the TLS port" => {
            "the upstream speaks plain HTTP on that port: use http:// for it, or point the gateway at its TLS port"
        }
        "certificate verify failed" => {
            "make the gateway trust the CA that signed the upstream's certificate, or renew the expired certificate"
        }
        "certificate name mismatch" => {
            "connect with the name the upstream's certificate carries, or reissue the certificate for the name used"
        }
        "not FastCGI (protocol mismatch)" => {
            "the FastCGI target is an HTTP server: point fastcgi at php-fpm's port, or proxy to it with http://"
        }
        "not HTTP (protocol mismatch)" => {
            "the upstream port does not speak HTTP: check the port and the protocol in the configuration"
        }
        "no free local port" => {
            "reuse upstream connections (keep-alive) and widen net.ipv4.ip_local_port_range"
        }
        "worker_connections exhausted" => {
            "raise worker_connections and the file descriptor limit of the gateway"
        }
        "file descriptors exhausted" => "raise the gateway's file descriptor limit (ulimit -n, LimitNOFILE)",
        "no resolver configured" => {
            "add a resolver: names in variables are resolved at run time only with one"
        }
        "MaxRequestWorkers reached" => {
            "raise MaxRequestWorkers if memory allows, and find what holds workers (slow upstreams, long keep-alive)"
        }
        "queue timeout" => "add servers or raise their maxconn; find what makes requests slow",
        "fastcgi (php-fpm)" => {
            "check the php-fpm log for killed or crashed children (request_terminate_timeout, memory_limit)"
        }
        "health check failed" => "read the health-check reason next to the DOWN line and fix the server",
        "on a reused connection" => {
            "keep the gateway's upstream idle timeout below the upstream's keep-alive timeout"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(cause: Cause, phase: Phase, minute: i64, upstream: &[u8]) -> Finding<'_> {
        Finding {
            format: Format::Nginx,
            role: Role::Request,
            cause,
            phase,
            detail: "",
            rule: "test",
            time: Some(minute * 60_000),
            status: None,
            upstream: Some(upstream),
            client: None,
            host: None,
            request: None,
            reused: None,
        }
    }

    #[test]
    fn top_lists_stay_bounded() {
        let mut t = Top::default();
        for i in 0..TOP_CAP + 10 {
            t.add(format!("k{i}").as_bytes(), 1);
        }
        t.add(b"k0", 5);
        assert_eq!(t.distinct(), TOP_CAP);
        assert_eq!(t.others, 10);
        assert_eq!(t.top(1), vec![("k0".to_string(), 6)]);
    }

    #[test]
    fn histogram_coarsens_instead_of_growing() {
        let mut s = Summary::new();
        let n = MAX_BUCKETS as i64 * 3;
        for m in 0..n {
            s.finding(&finding(Cause::Timeout, Phase::ReadHead, m * 7, b"a"), b"");
        }
        assert!(s.buckets.len() <= MAX_BUCKETS);
        assert!(s.bucket_ms > 60_000);
        assert_eq!(s.columns(None, 10).iter().sum::<u64>(), n as u64);
    }

    #[test]
    fn names_the_keepalive_race_and_the_pool_going_down() {
        let mut s = Summary::new();
        for m in 0..4 {
            let mut f = finding(Cause::Reset, Phase::ReadHead, m * 30, b"a");
            f.reused = Some(true);
            s.finding(&f, b"");
        }
        s.finding(&finding(Cause::Refused, Phase::Connect, 500, b"a"), b"");
        s.finding(&finding(Cause::Refused, Phase::Connect, 500, b"b"), b"");
        let names: Vec<&str> = s.patterns().iter().map(|p| p.name).collect();
        assert_eq!(names, ["all_upstreams_down", "keepalive_race"]);
        let incidents = s.incidents();
        assert_eq!(incidents.len(), 5);
        assert_eq!(incidents[0].count, 2);
        assert_eq!(incidents[0].upstreams_down, 2);
    }

    #[test]
    fn steady_gaps_are_told_from_random_ones() {
        assert_eq!(steady_interval(&[60_000; 6]), Some(60_000));
        assert_eq!(
            steady_interval(&[1_000, 90_000, 5_000, 400_000, 60_000, 2_000]),
            None
        );
    }
}
