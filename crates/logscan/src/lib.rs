//! `logscan`: reads the error logs of other gateways and classifies every gateway error in them
//! into cleargate's cause vocabulary.
//!
//! The parsers are pure functions from one line of bytes to a [`Line`]: a [`Finding`] (cause,
//! phase, detail and the facts of the request), a relayed upstream error, a line that is not a
//! gateway error, or one that looks like an error but is not recognised. They never fail and never
//! panic on odd input: binary garbage, invalid UTF-8 and cut-off lines are just lines. [`Summary`]
//! aggregates findings in bounded memory and merges, so a file can be scanned in parallel byte
//! ranges. [`scan`] drives both over any reader.
//!
//! This crate does no async, no terminal or HTML rendering, and no file-system walking: the
//! `cleargate logs` command does those.

use cause::{Cause, Phase};

pub use scan::{scan_reader, Scanner};
pub use summary::Summary;

/// The log formats the scanner reads.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    Nginx,
    Apache,
    Haproxy,
    Cleargate,
    Caddy,
    Envoy,
}

impl Format {
    pub const ALL: &'static [Format] = &[
        Format::Nginx,
        Format::Apache,
        Format::Haproxy,
        Format::Cleargate,
        Format::Caddy,
        Format::Envoy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Nginx => "nginx",
            Format::Apache => "apache",
            Format::Haproxy => "haproxy",
            Format::Cleargate => "cleargate",
            Format::Caddy => "caddy",
            Format::Envoy => "envoy",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.as_str() == s)
    }
}

/// How a finding counts.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// One failed request (or attempt): counted under its cause.
    Request,
    /// A state change not tied to one request (a health check marking a server down, a worker
    /// limit reached): counted under its cause too, since it is often the only trace.
    Event,
    /// A second line about a failure already counted (Apache's `AH00898` after `AH01102`, nginx's
    /// "temporarily disabled" after the connect error, cleargate's `gateway_error` line next to
    /// its access line). Classified, but counted apart so one request is not counted twice.
    FollowUp,
}

/// One classified gateway error, borrowing its text from the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding<'a> {
    pub format: Format,
    pub role: Role,
    pub cause: Cause,
    pub phase: Phase,
    /// What exactly, in a few words ("unix socket missing", "certificate verify failed").
    pub detail: &'static str,
    /// The stable name of the rule that matched, like `nginx.connect_refused`.
    pub rule: &'static str,
    pub time: Option<time::Millis>,
    /// The status the client got because of this line, when the line says.
    pub status: Option<u16>,
    /// The upstream endpoint: `10.0.2.15:8080`, `[::1]:8080`, `unix:/run/php/fpm.sock`.
    pub upstream: Option<&'a [u8]>,
    pub client: Option<&'a [u8]>,
    pub host: Option<&'a [u8]>,
    /// The request line or path, as the log wrote it.
    pub request: Option<&'a [u8]>,
    /// The failing attempt ran on a reused keep-alive connection, when the log says.
    pub reused: Option<bool>,
}

impl<'a> Finding<'a> {
    fn new(format: Format, rule: &'static str, cause: Cause, phase: Phase) -> Finding<'a> {
        Finding {
            format,
            role: Role::Request,
            cause,
            phase,
            detail: "",
            rule,
            time: None,
            status: None,
            upstream: None,
            client: None,
            host: None,
            request: None,
            reused: None,
        }
    }

    fn detail(mut self, detail: &'static str) -> Self {
        self.detail = detail;
        self
    }

    fn role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }
}

/// An error the upstream made and the gateway only passed on (a 5xx the application answered,
/// a PHP fatal error). Counted apart: the gateway did its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub format: Format,
    pub detail: &'static str,
    pub time: Option<time::Millis>,
    pub status: Option<u16>,
    pub upstream: Option<&'a [u8]>,
}

/// What one line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line<'a> {
    Finding(Finding<'a>),
    Relayed(Relayed<'a>),
    /// A line of a known format that is not a gateway error (startup notices, normal traffic),
    /// or a line of no known format.
    Skipped(Option<Format>),
    /// A line of a known format at error level that no rule recognises.
    Unrecognized(Format),
}

/// Guesses the format of one line from its first bytes; `None` for no known format.
pub fn sniff(line: &[u8]) -> Option<Format> {
    let b = line;
    if b.first() == Some(&b'{') {
        return Some(json_format(b));
    }
    if b.len() > 20 && b[4] == b'/' && b[7] == b'/' && b[10] == b' ' && b[0].is_ascii_digit() {
        return Some(Format::Nginx);
    }
    if b.get(5) == Some(&b'-') && envoy::looks_like(b) {
        return Some(Format::Envoy);
    }
    if b.len() > 28 && b[0] == b'[' && b[4] == b' ' && b[8] == b' ' && b[3].is_ascii_alphabetic() {
        return Some(Format::Apache);
    }
    if haproxy::looks_like(b) {
        return Some(Format::Haproxy);
    }
    None
}

/// Which JSON log a line that starts with `{` is: cleargate's starts with `"time"` and has a
/// `"kind"`; Caddy's (zap) starts with `"level"` or `"ts"`, or has a `"msg"`.
fn json_format(b: &[u8]) -> Format {
    if b.starts_with(b"{\"time\":") {
        return Format::Cleargate;
    }
    if b.starts_with(b"{\"level\":") || b.starts_with(b"{\"ts\":") {
        return Format::Caddy;
    }
    if !bytes::contains(b, b"\"kind\":\"") && bytes::contains(b, b"\"msg\":\"") {
        return Format::Caddy;
    }
    Format::Cleargate
}

/// Parses one line (without its line ending) as `format`, or as whatever it looks like.
///
/// `state` carries what a format needs from earlier lines of the same file to tell a follow-up
/// line from a first one; give each stream its own.
pub fn parse_line<'a>(line: &'a [u8], format: Option<Format>, state: &mut State) -> Line<'a> {
    let Some(format) = format.or_else(|| sniff(line)) else {
        return Line::Skipped(None);
    };
    match format {
        Format::Nginx => nginx::parse(line, state),
        Format::Apache => apache::parse(line, state),
        Format::Haproxy => haproxy::parse(line),
        Format::Cleargate => cleargate::parse(line),
        Format::Caddy => caddy::parse(line, state),
        Format::Envoy => envoy::parse(line),
    }
}

/// Per-stream memory of the previous request-level finding, keyed by what ties lines of one
/// request together (Apache's pid:tid, nginx's connection number). Tiny and fixed-size.
#[derive(Default, Debug)]
pub struct State {
    last_key: u64,
    last_time: Option<time::Millis>,
    has_last: bool,
    /// The last timestamp text parsed and its value: consecutive lines mostly share it.
    stamp: [u8; 24],
    stamp_len: usize,
    stamp_ms: Option<time::Millis>,
    /// Caddy's recent failures by request (its lines of one request may interleave with others).
    recent: [Option<Recent>; 8],
    recent_next: usize,
}

/// One recent failure: what ties its lines together, when, and what it was classified as.
#[derive(Copy, Clone, Debug)]
struct Recent {
    key: u64,
    time: Option<time::Millis>,
    cause: Cause,
    phase: Phase,
}

impl State {
    /// True when a line keyed `key` at `time` continues the failure logged just before it.
    fn continues(&self, key: u64, time: Option<time::Millis>) -> bool {
        self.has_last
            && self.last_key == key
            && match (self.last_time, time) {
                (Some(a), Some(b)) => (b - a).abs() <= 2_000,
                _ => true,
            }
    }

    /// Parses the timestamp text `raw` with `parse`, or reuses the previous result for the same text.
    fn stamp(
        &mut self,
        raw: &[u8],
        parse: impl FnOnce(&[u8]) -> Option<time::Millis>,
    ) -> Option<time::Millis> {
        if raw.len() <= self.stamp.len()
            && self.stamp_len == raw.len()
            && &self.stamp[..raw.len()] == raw
        {
            return self.stamp_ms;
        }
        let ms = parse(raw);
        if raw.len() <= self.stamp.len() {
            self.stamp[..raw.len()].copy_from_slice(raw);
            self.stamp_len = raw.len();
            self.stamp_ms = ms;
        }
        ms
    }

    /// The failure remembered for `key` (within a minute of `time`), if any.
    fn recent(&self, key: u64, time: Option<time::Millis>) -> Option<Recent> {
        self.recent.iter().flatten().copied().find(|r| {
            r.key == key
                && match (r.time, time) {
                    (Some(a), Some(b)) => (b - a).abs() <= 60_000,
                    _ => true,
                }
        })
    }

    /// Remembers a failure for `key`, replacing an older one for the same key or the oldest.
    fn remember_recent(&mut self, r: Recent) {
        if let Some(slot) = self
            .recent
            .iter_mut()
            .find(|s| s.is_some_and(|x| x.key == r.key))
        {
            *slot = Some(r);
            return;
        }
        self.recent[self.recent_next] = Some(r);
        self.recent_next = (self.recent_next + 1) % self.recent.len();
    }

    /// Forgets the failure of `key`: its request has ended.
    fn forget_recent(&mut self, key: u64) {
        for slot in &mut self.recent {
            if slot.is_some_and(|x| x.key == key) {
                *slot = None;
            }
        }
    }

    fn remember(&mut self, key: u64, time: Option<time::Millis>) {
        self.last_key = key;
        self.last_time = time;
        self.has_last = true;
    }
}

/// FNV-1a, for keys that only need to be told apart.
fn hash(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &c in b {
        h ^= u64::from(c);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// `has!(hay, b"needle")`: whether `hay` contains the literal, with its searcher built once per
/// call site. Building a substring searcher costs more than running it on one log line.
macro_rules! has {
    ($hay:expr, $needle:literal) => {
        find!($hay, $needle).is_some()
    };
}

/// `find!(hay, b"needle")`: where the literal starts in `hay`.
macro_rules! find {
    ($hay:expr, $needle:literal) => {{
        static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new($needle));
        FINDER.find($hay)
    }};
}

/// `after!(hay, b"key", b'end')`: the text after the literal up to `end` or the end of `hay`.
macro_rules! after {
    ($hay:expr, $key:literal, $end:expr) => {{
        let hay: &[u8] = $hay;
        find!(hay, $key).map(|i| {
            let rest = &hay[i + $key.len()..];
            &rest[..memchr::memchr($end, rest).unwrap_or(rest.len())]
        })
    }};
}

mod apache;
mod caddy;
mod cleargate;
mod envoy;
mod haproxy;
mod nginx;
pub mod scan;
pub mod summary;
pub mod time;

/// Helpers on byte slices shared by the parsers.
mod bytes {
    use memchr::memmem;

    pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        memmem::find(hay, needle)
    }

    pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
        memmem::find(hay, needle).is_some()
    }

    /// The text after `key` up to `end` (or the end of `hay`).
    pub fn after<'a>(hay: &'a [u8], key: &[u8], end: u8) -> Option<&'a [u8]> {
        let start = find(hay, key)? + key.len();
        let rest = &hay[start..];
        Some(&rest[..memchr::memchr(end, rest).unwrap_or(rest.len())])
    }

    /// The endpoint inside an upstream URL: `http://10.0.2.15:8080/x` -> `10.0.2.15:8080`,
    /// `fastcgi://unix:/run/php.sock:` -> `unix:/run/php.sock`, `http://[::1]:80/` -> `[::1]:80`.
    pub fn endpoint_of_url(url: &[u8]) -> &[u8] {
        let rest = match find(url, b"://") {
            Some(i) => &url[i + 3..],
            None => url,
        };
        if rest.starts_with(b"unix:") {
            let end = memchr::memrchr(b':', rest)
                .filter(|&i| i > 4)
                .unwrap_or(rest.len());
            return &rest[..end];
        }
        if rest.starts_with(b"[") {
            let close = memchr::memchr(b']', rest).unwrap_or(rest.len() - 1);
            let tail = &rest[close + 1..];
            let end = memchr::memchr(b'/', tail).map_or(rest.len(), |i| close + 1 + i);
            return &rest[..end];
        }
        &rest[..memchr::memchr(b'/', rest).unwrap_or(rest.len())]
    }

    /// Text for display: invalid UTF-8 replaced, control characters dropped, at most `max` chars.
    pub fn display(b: &[u8], max: usize) -> String {
        let s = String::from_utf8_lossy(b);
        let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
        if s.chars().count() > max {
            out.push('…');
        }
        out
    }
}

pub use bytes::display;
