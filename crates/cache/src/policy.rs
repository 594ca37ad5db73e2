//! The caching rules of a shared cache, from RFC 9111 (HTTP Caching) and RFC 5861 (the
//! `stale-while-revalidate` and `stale-if-error` extensions), as pure functions.
//!
//! - [`storable`]: may this response be stored at all (and why not);
//! - [`Stored::new`]: the facts kept with a stored response (its age, lifetime, validators);
//! - [`Stored::assess`]: may it answer this request now: fresh, stale while a revalidation runs,
//!   or only after revalidation;
//! - [`Stored::stale_on_error`]: may it answer, stale, a request whose upstream failed;
//! - [`update_headers`]: a 304's header fields merged into the stored ones;
//! - [`invalidates`]: does a request's answer invalidate what is stored for its URI.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

/// The largest delta-seconds a cache must represent (RFC 9111 §1.2.2): larger values, and
/// calculations that overflow, become this.
pub const DELTA_MAX: u64 = 1 << 31;

/// The cache's own settings that the rules depend on.
#[derive(Clone, Debug)]
pub struct Options {
    /// Heuristic freshness for responses with `Last-Modified` and no explicit lifetime, as a
    /// percentage of the time since they were last modified (0: none).
    pub heuristic_percent: u32,
    /// The most a heuristic lifetime may be.
    pub heuristic_max: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heuristic_percent: 10,
            heuristic_max: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why a response is not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotStored {
    /// Only answers to GET are stored.
    Method,
    /// A status whose caching rules the cache does not know, or a partial answer.
    Status,
    /// `no-store` in the request or the response.
    NoStore,
    /// `private`: for one user's cache only.
    Private,
    /// The request carried `Authorization` and the response did not say it may be shared.
    Authorization,
    /// The response sets a cookie: stored, it would hand one user's cookie to others.
    SetCookie,
    /// `Vary: *`: no later request can be known to match.
    VaryStar,
    /// No explicit lifetime, no heuristic one, no validator: nothing to reuse it by.
    NoFreshness,
}

impl NotStored {
    /// A word for `Cache-Status` and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Method => "method",
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
        }
    }
}

/// Cache-Control directives, as parsed from every line of the field: names in lower case,
/// values unquoted. The first occurrence of a directive is the one that counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    list: Vec<(String, Option<String>)>,
}

/// The value of a directive that takes delta-seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delta {
    Seconds(u64),
    /// Present but not a number (`max-age=-1`, `max-age=1.5`, `max-age=`): RFC 9111 §4.2.1
    /// makes such a response stale.
    Invalid,
}

impl Directives {
    /// Parses every `name` line of `headers`.
    pub fn of(headers: &HeaderMap, name: &HeaderName) -> Directives {
        let mut d = Directives::default();
        for v in headers.get_all(name) {
            d.parse_line(v.as_bytes());
        }
        d
    }

    fn parse_line(&mut self, line: &[u8]) {
        let mut i = 0;
        while i < line.len() {
            // One directive: up to the next comma that is not inside a quoted string.
            let start = i;
            let mut quoted = false;
            while i < line.len() {
                match line[i] {
                    b'"' => quoted = !quoted,
                    b'\\' if quoted => i += 1,
                    b',' if !quoted => break,
                    _ => {}
                }
                i += 1;
            }
            let part = &line[start..i.min(line.len())];
            i += 1;
            let part = part.trim_ascii_start();
            let (name, value) = match part.iter().position(|&b| b == b'=') {
                Some(eq) => (&part[..eq], Some(&part[eq + 1..])),
                None => (part.trim_ascii_end(), None),
            };
            // No whitespace around `=` and none inside a name: such a directive is not one.
            if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
                continue;
            }
            let value = match value {
                None => None,
                Some(v) => {
                    let v = v.trim_ascii_end();
                    match unquote(v) {
                        Some(v) => Some(v),
                        None => continue,
                    }
                }
            };
            let name = String::from_utf8_lossy(name).to_ascii_lowercase();
            if !self.list.iter().any(|(n, _)| *n == name) {
                self.list.push((name, value));
            }
        }
    }

    /// True when the directive is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    /// The value of the directive, unquoted.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.list
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// A delta-seconds directive: `None` when absent.
    pub fn delta(&self, name: &str) -> Option<Delta> {
        let (_, v) = self.list.iter().find(|(n, _)| n == name)?;
        Some(match v.as_deref().and_then(parse_delta) {
            Some(s) => Delta::Seconds(s),
            None => Delta::Invalid,
        })
    }

    /// A delta-seconds directive when present and valid.
    pub fn seconds(&self, name: &str) -> Option<u64> {
        match self.delta(name)? {
            Delta::Seconds(s) => Some(s),
            Delta::Invalid => None,
        }
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A token or a quoted-string, as text; `None` when it is neither.
fn unquote(v: &[u8]) -> Option<String> {
    if let Some(inner) = v.strip_prefix(b"\"") {
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            match inner[i] {
                b'\\' if i + 1 < inner.len() => {
                    out.push(inner[i + 1]);
                    i += 2;
                }
                b'"' => {
                    return (i + 1 == inner.len()).then(|| String::from_utf8_lossy(&out).into());
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        None
    } else if v.iter().all(|b| is_tchar(*b)) {
        Some(String::from_utf8_lossy(v).into())
    } else {
        None
    }
}

/// delta-seconds: digits only, clamped at [`DELTA_MAX`].
pub fn parse_delta(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = v.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(DELTA_MAX);
    }
    Some(digits.parse::<u64>().unwrap_or(0).min(DELTA_MAX))
}

/// An HTTP-date in any of its three forms (RFC 9110 §5.6.7): IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and ANSI C's
/// asctime (`Sun Nov  6 08:49:37 1994`), each exactly as the grammar spells it, except that
/// names may be in any case and the weekday is not checked against the date (recipients are
/// asked to be lenient in both). `None` for anything else: an invalid `Expires` means expired.
pub fn parse_date(v: &HeaderValue) -> Option<SystemTime> {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    const DAYS: [&[u8]; 7] = [b"mon", b"tue", b"wed", b"thu", b"fri", b"sat", b"sun"];
    const LONG_DAYS: [&[u8]; 7] = [
        b"monday",
        b"tuesday",
        b"wednesday",
        b"thursday",
        b"friday",
        b"saturday",
        b"sunday",
    ];
    let text = v.as_bytes().trim_ascii().to_ascii_lowercase();
    let digits = |b: &[u8]| -> Option<u64> {
        (!b.is_empty() && b.iter().all(u8::is_ascii_digit))
            .then(|| std::str::from_utf8(b).ok()?.parse().ok())
            .flatten()
    };
    let month = |b: &[u8]| MONTHS.iter().position(|m| *m == b).map(|m| m as u64 + 1);
    let time = |b: &[u8]| -> Option<u64> {
        let [h1, h2, b':', m1, m2, b':', s1, s2] = *b else {
            return None;
        };
        let (h, m, s) = (digits(&[h1, h2])?, digits(&[m1, m2])?, digits(&[s1, s2])?);
        (h < 24 && m < 60 && s <= 60).then_some(h * 3600 + m * 60 + s.min(59))
    };
    let parts: Vec<&[u8]> = text.split(|&b| b == b' ').collect();
    let (year, month, day, secs) = match parts[..] {
        // IMF-fixdate: `sun, 06 nov 1994 08:49:37 gmt`.
        [wd, d, mo, y, t, b"gmt"] if wd.len() == 4 && DAYS.contains(&&wd[..3]) && wd[3] == b',' => {
            if d.len() != 2 || y.len() != 4 {
                return None;
            }
            (digits(y)?, month(mo)?, digits(d)?, time(t)?)
        }
        // RFC 850: `sunday, 06-nov-94 08:49:37 gmt`.
        [wd, dmy, t, b"gmt"]
            if wd.last() == Some(&b',') && LONG_DAYS.contains(&&wd[..wd.len() - 1]) =>
        {
            let [d, mo, y] = dmy.split(|&b| b == b'-').collect::<Vec<_>>()[..] else {
                return None;
            };
            if d.len() != 2 || y.len() != 2 {
                return None;
            }
            // Two digits: a year that looks more than 50 years ahead is in the past.
            let y = digits(y)?;
            let y = if y >= 70 { 1900 + y } else { 2000 + y };
            (y, month(mo)?, digits(d)?, time(t)?)
        }
        // asctime: `sun nov  6 08:49:37 1994` (a one-digit day is padded with a space).
        [wd, mo, b"", d, t, y] | [wd, mo, d, t, y]
            if DAYS.contains(&wd) && (d.len() == 2 || parts.len() == 6) =>
        {
            if (parts.len() == 6 && d.len() != 1) || y.len() != 4 {
                return None;
            }
            (digits(y)?, month(mo)?, digits(d)?, time(t)?)
        }
        _ => return None,
    };
    if year < 1970 || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(days * 86_400 + secs))
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `Age` of a response: the first member of its first line, when it is delta-seconds;
/// 0 otherwise.
fn age_value(headers: &HeaderMap) -> u64 {
    headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_delta(v.split(',').next().unwrap_or("").trim()))
        .unwrap_or(0)
}

/// Final statuses the cache may store (RFC 9111 §3): all but partial content (not stored
/// in part) and 304 (which updates a stored response, never becomes one).
fn understood(status: StatusCode) -> bool {
    matches!(status.as_u16(), 200..=599) && !matches!(status.as_u16(), 206 | 304)
}

/// Statuses whose caching rules this cache implements, for `must-understand`: those defined
/// by RFC 9110 that it stores.
fn understands_caching_of(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses that may be given a heuristic lifetime (RFC 9110 §15.1).
fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// `CDN-Cache-Control` (RFC 9213): directives for the caches in front of the origin only.
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The response's caching directives for this cache: `CDN-Cache-Control` when it is there and
/// holds at least one valid directive (RFC 9213 §2.1: `Cache-Control` is then ignored), else
/// `Cache-Control`.
fn response_directives(resp: &HeaderMap) -> Directives {
    if resp.contains_key(&CDN_CACHE_CONTROL)
        && resp
            .get_all(&CDN_CACHE_CONTROL)
            .iter()
            .all(|v| valid_cdn_line(v.as_bytes()))
    {
        let cdn = Directives::of(resp, &CDN_CACHE_CONTROL);
        if !cdn.list.is_empty() {
            return cdn;
        }
    }
    Directives::of(resp, &header::CACHE_CONTROL)
}

/// True when a `CDN-Cache-Control` line is a Structured Fields dictionary (RFC 8941 §3.2, as
/// RFC 9213 §2.1 defines it) whose lifetimes are integers: keys in lower case, values
/// integers, tokens, strings or booleans. A field that is not is ignored as a whole.
fn valid_cdn_line(line: &[u8]) -> bool {
    let mut members = Vec::new();
    let (mut start, mut quoted, mut i) = (0, false, 0);
    while i < line.len() {
        match line[i] {
            b'"' => quoted = !quoted,
            b'\\' if quoted => i += 1,
            b',' if !quoted => {
                members.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    members.push(&line[start.min(line.len())..]);
    members.iter().all(|m| {
        let m = m.trim_ascii();
        let (key, value) = match m.iter().position(|&b| b == b'=') {
            Some(eq) => (&m[..eq], Some(&m[eq + 1..])),
            None => (m, None),
        };
        let key_ok = key
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || *b == b'*')
            && key
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(b));
        let integer = |v: &[u8]| {
            let d = v.strip_prefix(b"-").unwrap_or(v);
            !d.is_empty() && d.len() <= 15 && d.iter().all(u8::is_ascii_digit)
        };
        let value_ok = match value {
            None => true,
            Some(v)
                if [
                    "max-age",
                    "s-maxage",
                    "stale-while-revalidate",
                    "stale-if-error",
                ]
                .iter()
                .any(|k| k.as_bytes() == key) =>
            {
                integer(v)
            }
            Some(v) => {
                integer(v)
                    || v == b"?0"
                    || v == b"?1"
                    || (v.len() >= 2 && v.starts_with(b"\"") && v.ends_with(b"\""))
                    || (v
                        .first()
                        .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'*')
                        && v.iter().all(|b| is_tchar(*b) || b":/".contains(b)))
            }
        };
        key_ok && value_ok
    })
}

/// May a shared cache store this response to this request (RFC 9111 §3)?
pub fn storable(
    method: &Method,
    req: &HeaderMap,
    status: StatusCode,
    resp: &HeaderMap,
    options: &Options,
) -> Result<(), NotStored> {
    if method != Method::GET {
        return Err(NotStored::Method);
    }
    if status == StatusCode::PARTIAL_CONTENT || !understood(status) {
        return Err(NotStored::Status);
    }
    let rcc = Directives::of(req, &header::CACHE_CONTROL);
    let cc = response_directives(resp);
    // `must-understand` (RFC 9111 §5.2.2.3): a status whose caching rules the cache knows may
    // be stored despite the response's `no-store`; any other status may not be stored at all.
    let understood_here = cc.has("must-understand") && understands_caching_of(status);
    if cc.has("must-understand") && !understood_here {
        return Err(NotStored::Status);
    }
    if rcc.has("no-store") || (cc.has("no-store") && !understood_here) {
        return Err(NotStored::NoStore);
    }
    // `private="Set-Cookie"` (a list of fields) still lets the rest be shared in theory; the
    // gateway does not store such a response at all.
    if cc.has("private") {
        return Err(NotStored::Private);
    }
    if req.contains_key(header::AUTHORIZATION)
        && !(cc.has("public") || cc.has("s-maxage") || cc.has("must-revalidate"))
    {
        return Err(NotStored::Authorization);
    }
    if resp.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    if vary_names(resp).is_err() {
        return Err(NotStored::VaryStar);
    }
    let explicit = cc.has("s-maxage") || cc.has("max-age") || resp.contains_key(header::EXPIRES);
    let heuristic = heuristically_cacheable(status)
        && options.heuristic_percent > 0
        && resp.contains_key(header::LAST_MODIFIED);
    let validators = resp.contains_key(header::ETAG) || resp.contains_key(header::LAST_MODIFIED);
    if !(explicit || heuristic || cc.has("public") || (cc.has("no-cache") && validators)) {
        return Err(NotStored::NoFreshness);
    }
    Ok(())
}

/// The header fields named by `Vary`, in lower case; `VaryStar` for `*` anywhere in it.
pub fn vary_names(resp: &HeaderMap) -> Result<Vec<HeaderName>, NotStored> {
    let mut names = Vec::new();
    for v in resp.get_all(header::VARY) {
        for name in v.as_bytes().split(|&b| b == b',') {
            let name = name.trim_ascii();
            if name.is_empty() {
                continue;
            }
            if name == b"*" {
                return Err(NotStored::VaryStar);
            }
            if let Ok(n) = HeaderName::from_bytes(name) {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
    }
    Ok(names)
}

/// A request's value of one field named by `Vary`, normalised: its lines joined with `, `,
/// the whitespace around each comma-separated member removed. `None` when absent.
pub fn vary_value(req: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in req.get_all(name) {
        for member in v.as_bytes().split(|&b| b == b',') {
            let member = String::from_utf8_lossy(member.trim_ascii());
            let s = out.get_or_insert_with(String::new);
            if !s.is_empty() {
                s.push_str(", ");
            }
            s.push_str(&member);
        }
    }
    out
}

/// The facts a stored response is judged by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// When the request that brought it was sent, and when its head arrived (the cache's clock).
    pub request_time: SystemTime,
    pub response_time: SystemTime,
    /// Its age when it arrived (RFC 9111 §4.2.3's corrected_initial_age).
    pub initial_age: Duration,
    /// How long it is fresh from its origin's point of view.
    pub lifetime: Duration,
    /// RFC 5861: how long past its freshness it may answer while a revalidation runs, and
    /// when the upstream fails (from the response's own directives).
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// No stale use at all: `must-revalidate`, `proxy-revalidate` or `s-maxage` (RFC 9111
    /// §5.2.2.2, §5.2.2.8, §5.2.2.10).
    pub must_revalidate: bool,
    /// `no-cache` (without field names): every use is revalidated first.
    pub no_cache: bool,
    /// Validators, for a conditional request.
    pub etag: Option<HeaderValue>,
    pub last_modified: Option<HeaderValue>,
}

/// How a stored response may answer a request, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usable {
    /// Fresh: it answers as it is.
    Fresh,
    /// Stale, but within `stale-while-revalidate`: it answers, and one revalidation refreshes it.
    StaleWhileRevalidate,
    /// Only after the upstream confirms it (a conditional request) or replaces it.
    Revalidate,
}

impl Stored {
    /// The facts of a response stored now, that was requested at `request_time` and whose head
    /// arrived at `response_time`.
    pub fn new(
        request_time: SystemTime,
        response_time: SystemTime,
        status: StatusCode,
        resp: &HeaderMap,
        options: &Options,
    ) -> Stored {
        let cc = response_directives(resp);
        let date = resp.get(header::DATE).and_then(parse_date);
        // RFC 9111 §4.2.3.
        let apparent_age = date
            .and_then(|d| response_time.duration_since(d).ok())
            .unwrap_or_default();
        let response_delay = response_time
            .duration_since(request_time)
            .unwrap_or_default();
        let corrected_age_value = Duration::from_secs(age_value(resp)) + response_delay;
        let initial_age = apparent_age.max(corrected_age_value);

        let lifetime = lifetime(&cc, status, resp, date.unwrap_or(response_time), options);
        let must_revalidate =
            cc.has("must-revalidate") || cc.has("proxy-revalidate") || cc.has("s-maxage");
        let stale = |name| match must_revalidate {
            true => Duration::ZERO,
            false => Duration::from_secs(cc.seconds(name).unwrap_or(0)),
        };
        Stored {
            request_time,
            response_time,
            initial_age,
            lifetime,
            stale_while_revalidate: stale("stale-while-revalidate"),
            stale_if_error: stale("stale-if-error"),
            must_revalidate,
            no_cache: cc.has("no-cache") && cc.value("no-cache").is_none(),
            etag: resp.get(header::ETAG).cloned(),
            last_modified: resp.get(header::LAST_MODIFIED).cloned(),
        }
    }

    /// Its age now (RFC 9111 §4.2.3's current_age), in whole seconds as `Age` says it.
    pub fn age(&self, now: SystemTime) -> Duration {
        let resident = now.duration_since(self.response_time).unwrap_or_default();
        self.initial_age + resident
    }

    /// The `Age` header value for an answer now.
    pub fn age_header(&self, now: SystemTime) -> HeaderValue {
        HeaderValue::from(self.age(now).as_secs().min(DELTA_MAX))
    }

    /// Time left fresh now: negative once stale (in whole seconds, as `Cache-Status`'s `ttl`).
    pub fn ttl(&self, now: SystemTime) -> i64 {
        self.lifetime.as_secs() as i64 - self.age(now).as_secs() as i64
    }

    /// True when it is fresh now.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.lifetime
    }

    /// How long it has been stale now (zero while fresh).
    pub fn staleness(&self, now: SystemTime) -> Duration {
        self.age(now).saturating_sub(self.lifetime)
    }

    /// May it answer a request with these headers now (RFC 9111 §4.2, §5.2.1; RFC 5861 §3)?
    pub fn assess(&self, req: &HeaderMap, now: SystemTime) -> Usable {
        if self.no_cache || client_no_cache(req) {
            return Usable::Revalidate;
        }
        let rcc = Directives::of(req, &header::CACHE_CONTROL);
        let age = self.age(now);
        if let Some(max_age) = rcc.delta("max-age") {
            match max_age {
                Delta::Seconds(s) if age.as_secs() <= s => {}
                _ => return Usable::Revalidate,
            }
        }
        if let Some(Delta::Seconds(min_fresh)) = rcc.delta("min-fresh") {
            if self.lifetime.saturating_sub(age) < Duration::from_secs(min_fresh) {
                return Usable::Revalidate;
            }
        }
        if age < self.lifetime {
            return Usable::Fresh;
        }
        let stale_for = age - self.lifetime;
        if !self.must_revalidate {
            // `max-stale` (no value: any staleness) lets the client take a stale answer.
            let client_takes = match (rcc.has("max-stale"), rcc.value("max-stale")) {
                (false, _) => false,
                (true, None) => true,
                (true, Some(_)) => rcc
                    .seconds("max-stale")
                    .is_some_and(|l| stale_for <= Duration::from_secs(l)),
            };
            if client_takes {
                return Usable::Fresh;
            }
            if stale_for < self.stale_while_revalidate {
                return Usable::StaleWhileRevalidate;
            }
        }
        Usable::Revalidate
    }

    /// May it answer, stale, a request with these headers whose upstream failed (an error that
    /// would be a 502/503/504, or an upstream 500/502/503/504)? `grace` is the cache's own
    /// allowance past freshness; the response's `stale-if-error` and the request's may extend
    /// it. Never against `must-revalidate` (and its kin), `no-cache`, or a client that asked
    /// for `no-cache`. `Some(staleness)` when it may.
    pub fn stale_on_error(
        &self,
        req: &HeaderMap,
        now: SystemTime,
        grace: Duration,
    ) -> Option<Duration> {
        if self.must_revalidate || self.no_cache || client_no_cache(req) {
            return None;
        }
        let rcc = Directives::of(req, &header::CACHE_CONTROL);
        if matches!(
            rcc.delta("max-age"),
            Some(Delta::Seconds(0)) | Some(Delta::Invalid)
        ) {
            return None;
        }
        let request_sie = rcc
            .seconds("stale-if-error")
            .map(Duration::from_secs)
            .unwrap_or_default();
        let allowed = grace.max(self.stale_if_error).max(request_sie);
        let stale_for = self.staleness(now);
        (stale_for <= allowed).then_some(stale_for)
    }

    /// The conditional request headers that revalidate it: `If-None-Match` with its ETag,
    /// `If-Modified-Since` with its `Last-Modified`.
    pub fn validators(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Some(etag) = &self.etag {
            out.push((header::IF_NONE_MATCH, etag.clone()));
        }
        if let Some(lm) = &self.last_modified {
            out.push((header::IF_MODIFIED_SINCE, lm.clone()));
        }
        out
    }
}

/// The request refuses a stored answer not revalidated: `Cache-Control: no-cache`, or
/// `Pragma: no-cache` without any `Cache-Control` (RFC 9111 §5.4).
pub fn client_no_cache(req: &HeaderMap) -> bool {
    let rcc = Directives::of(req, &header::CACHE_CONTROL);
    if rcc.has("no-cache") {
        return true;
    }
    !req.contains_key(header::CACHE_CONTROL)
        && req
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache"))
}

/// The freshness lifetime (RFC 9111 §4.2.1): `s-maxage`, then `max-age`, then `Expires` minus
/// `Date`, then the heuristic. An invalid explicit value makes it zero (stale at once).
fn lifetime(
    cc: &Directives,
    status: StatusCode,
    resp: &HeaderMap,
    date: SystemTime,
    options: &Options,
) -> Duration {
    for name in ["s-maxage", "max-age"] {
        match cc.delta(name) {
            Some(Delta::Seconds(s)) => return Duration::from_secs(s),
            Some(Delta::Invalid) => return Duration::ZERO,
            None => {}
        }
    }
    let mut expires = resp.get_all(header::EXPIRES).iter();
    if let Some(first) = expires.next() {
        // A second Expires, or one that is not a date, means already expired.
        if expires.next().is_some() {
            return Duration::ZERO;
        }
        return parse_date(first)
            .and_then(|e| e.duration_since(date).ok())
            .unwrap_or_default();
    }
    if cc.has("public") && !resp.contains_key(header::LAST_MODIFIED) {
        return Duration::ZERO;
    }
    if !heuristically_cacheable(status) || options.heuristic_percent == 0 {
        return Duration::ZERO;
    }
    let Some(modified) = resp.get(header::LAST_MODIFIED).and_then(parse_date) else {
        return Duration::ZERO;
    };
    let since = date.duration_since(modified).unwrap_or_default();
    (since * options.heuristic_percent / 100).min(options.heuristic_max)
}

/// Header fields a stored response never takes from a 304 (RFC 9111 §3.2): its framing and
/// the hop-by-hop ones.
const NOT_UPDATED: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
];

/// Merges the header fields of a 304 (or of a HEAD answer) into a stored response's
/// (RFC 9111 §3.2, §4.3.4): each field the 304 carries replaces the stored one.
pub fn update_headers(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    for name in not_modified.keys() {
        if NOT_UPDATED.contains(name) {
            continue;
        }
        stored.remove(name);
        for v in not_modified.get_all(name) {
            stored.append(name.clone(), v.clone());
        }
    }
}

/// Does a response with `status` to a request with `method` invalidate what is stored for
/// the request's URI (RFC 9111 §4.4)? Unsafe and unknown methods do, when the answer is not
/// an error.
pub fn invalidates(method: &Method, status: StatusCode) -> bool {
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !safe && (status.is_success() || status.is_redirection())
}

/// Does a stored response with these validators satisfy the client's own conditional request
/// (RFC 9110 §13.2.2: `If-None-Match` first, then `If-Modified-Since`), so that the answer
/// can be a 304 from the cache?
pub fn not_modified_for(req: &HeaderMap, stored: &HeaderMap) -> bool {
    if req.contains_key(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG) else {
            return false;
        };
        let opaque = |t: &[u8]| t.strip_prefix(b"W/").unwrap_or(t).to_vec();
        let mine = opaque(etag.as_bytes().trim_ascii());
        return req.get_all(header::IF_NONE_MATCH).iter().any(|v| {
            v.as_bytes().split(|&b| b == b',').any(|t| {
                let t = t.trim_ascii();
                t == b"*" || opaque(t) == mine
            })
        });
    }
    // Without `Last-Modified`, the stored response's `Date` stands in (RFC 9111 §4.3.2).
    let (Some(since), Some(modified)) = (
        req.get(header::IF_MODIFIED_SINCE).and_then(parse_date),
        stored
            .get(header::LAST_MODIFIED)
            .or_else(|| stored.get(header::DATE))
            .and_then(parse_date),
    ) else {
        return false;
    };
    modified <= since
}

/// What a request's `Range` asks of a stored complete body of `len` bytes (RFC 9110 §14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeAsked {
    /// No range to honour (none, several, not bytes, `If-Range`, or not parsable): the whole
    /// body answers, as RFC 9110 §14.2 allows.
    Whole,
    /// Bytes `start..=end` of it: a 206.
    Part { start: u64, end: u64 },
    /// A range that starts past its end: a 416.
    Unsatisfiable,
}

/// The single byte range a request asks of a body of `len` bytes.
pub fn range_asked(req: &HeaderMap, len: u64) -> RangeAsked {
    let mut ranges = req.get_all(header::RANGE).iter();
    let (Some(v), None) = (ranges.next(), ranges.next()) else {
        return RangeAsked::Whole;
    };
    if req.contains_key(header::IF_RANGE) {
        return RangeAsked::Whole;
    }
    let Some(spec) = v
        .to_str()
        .ok()
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return RangeAsked::Whole;
    };
    if spec.contains(',') {
        return RangeAsked::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeAsked::Whole;
    };
    let number = |t: &str| parse_delta(t.trim()).filter(|_| t.trim().len() <= 18);
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // `-N`: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAsked::Unsatisfiable,
            Some(n) if len > 0 => RangeAsked::Part {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeAsked::Unsatisfiable,
            None => RangeAsked::Whole,
        },
        // `A-` or `A-B`.
        (false, open) => {
            let Some(start) = number(first) else {
                return RangeAsked::Whole;
            };
            let end = match open {
                true => u64::MAX,
                false => match number(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeAsked::Whole,
                },
            };
            if start >= len {
                return RangeAsked::Unsatisfiable;
            }
            RangeAsked::Part {
                start,
                end: end.min(len - 1),
            }
        }
        (true, true) => RangeAsked::Whole,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A header map from name and value pairs, in order (repeated names append).
    pub(crate) fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(at(secs))
    }

    fn stored(resp: &[(&str, &str)]) -> Stored {
        Stored::new(
            at(0),
            at(0),
            StatusCode::OK,
            &headers(resp),
            &Options::default(),
        )
    }

    fn store(req: &[(&str, &str)], status: u16, resp: &[(&str, &str)]) -> Result<(), NotStored> {
        storable(
            &Method::GET,
            &headers(req),
            StatusCode::from_u16(status).unwrap(),
            &headers(resp),
            &Options::default(),
        )
    }

    #[test]
    fn directives_parse_as_a_list_with_quotes_and_first_wins() {
        let d = Directives::of(
            &headers(&[
                ("cache-control", "Max-Age=60, private=\"a, b\", no-cache"),
                ("cache-control", "max-age=5, s-maxage=\"10\""),
            ]),
            &header::CACHE_CONTROL,
        );
        assert_eq!(d.seconds("max-age"), Some(60));
        assert_eq!(d.value("private"), Some("a, b"));
        assert!(d.has("no-cache"));
        assert_eq!(d.seconds("s-maxage"), Some(10));
        for bad in ["max-age=-1", "max-age=1.5", "max-age=", "max-age=abc"] {
            let d = Directives::of(&headers(&[("cache-control", bad)]), &header::CACHE_CONTROL);
            assert_eq!(d.delta("max-age"), Some(Delta::Invalid), "{bad}");
        }
        // Not a directive at all: whitespace before `=`.
        let d = Directives::of(
            &headers(&[("cache-control", "max-age =60")]),
            &header::CACHE_CONTROL,
        );
        assert_eq!(d.delta("max-age"), None);
        assert_eq!(parse_delta("0003600"), Some(3600));
        assert_eq!(parse_delta("99999999999999999999"), Some(DELTA_MAX));
    }

    #[test]
    fn must_understand_stores_known_statuses_only() {
        let cc = [("cache-control", "max-age=3600, no-store, must-understand")];
        assert_eq!(store(&[], 200, &cc), Ok(()));
        assert_eq!(store(&[], 599, &cc), Err(NotStored::Status));
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=3600, no-store")]),
            Err(NotStored::NoStore)
        );
        // The client's no-store still wins.
        assert_eq!(
            store(&[("cache-control", "no-store")], 200, &cc),
            Err(NotStored::NoStore)
        );
    }

    #[test]
    fn ranges_of_a_stored_body() {
        let r = |v: &str| range_asked(&headers(&[("range", v)]), 11);
        assert_eq!(r("bytes=0-1"), RangeAsked::Part { start: 0, end: 1 });
        assert_eq!(r("bytes=5-"), RangeAsked::Part { start: 5, end: 10 });
        assert_eq!(r("bytes=-3"), RangeAsked::Part { start: 8, end: 10 });
        assert_eq!(r("bytes=-30"), RangeAsked::Part { start: 0, end: 10 });
        assert_eq!(r("bytes=3-99"), RangeAsked::Part { start: 3, end: 10 });
        assert_eq!(r("bytes=11-"), RangeAsked::Unsatisfiable);
        assert_eq!(r("bytes=-0"), RangeAsked::Unsatisfiable);
        for whole in [
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=5-2",
            "bytes=x-1",
            "bytes=-",
        ] {
            assert_eq!(r(whole), RangeAsked::Whole, "{whole}");
        }
        assert_eq!(range_asked(&headers(&[]), 11), RangeAsked::Whole);
        let with_if_range = headers(&[("range", "bytes=0-1"), ("if-range", "\"v1\"")]);
        assert_eq!(range_asked(&with_if_range, 11), RangeAsked::Whole);
    }

    #[test]
    fn dates_in_every_form_and_case() {
        let expect = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "SUN, 06 NOV 1994 08:49:37 gmt",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            // The weekday is not checked against the date.
            "Thu, 06 Nov 1994 08:49:37 GMT",
        ] {
            let v = HeaderValue::from_static(text);
            assert_eq!(parse_date(&v), Some(expect), "{text}");
        }
        let leap = HeaderValue::from_static("Thu, 29 Feb 2024 00:00:00 GMT");
        assert_eq!(
            parse_date(&leap),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_709_164_800))
        );
        for bad in [
            "0",
            "-1",
            "yesterday",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sun, 06  Nov  1994 08:49:37 GMT",
            "Sun, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08.49.37 GMT",
            "Sun, 06 Nov 1994 8:49:37 GMT",
            "Sun Nov 6 08:49:37 1994",
        ] {
            assert_eq!(parse_date(&HeaderValue::from_static(bad)), None, "{bad}");
        }
    }

    #[test]
    fn age_is_the_first_member_and_cdn_cache_control_wins() {
        assert_eq!(age_value(&headers(&[("age", "7200, 0")])), 7200);
        assert_eq!(age_value(&headers(&[("age", "0, 7200")])), 0);
        assert_eq!(age_value(&headers(&[("age", "old")])), 0);
        // RFC 9213: the targeted field replaces Cache-Control for this cache.
        let s = stored(&[
            ("date", &date(0)),
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=60"),
        ]);
        assert_eq!(s.lifetime, Duration::from_secs(60));
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("cache-control", "no-store"),
                    ("cdn-cache-control", "max-age=60")
                ]
            ),
            Ok(())
        );
        assert_eq!(
            store(
                &[],
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "private")
                ]
            ),
            Err(NotStored::Private)
        );
        // Not a valid dictionary, or a lifetime that is not an integer: Cache-Control counts.
        for bad in [
            "=",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "Max-Age=60",
        ] {
            assert_eq!(
                store(
                    &[],
                    200,
                    &[("cache-control", "no-store"), ("cdn-cache-control", bad)]
                ),
                Err(NotStored::NoStore),
                "{bad}"
            );
        }
        assert!(valid_cdn_line(
            b"max-age=60, stale-if-error=600, foo=\"a, b\", bar=?1"
        ));
    }

    #[test]
    fn what_a_shared_cache_may_store() {
        assert_eq!(store(&[], 200, &[("cache-control", "max-age=60")]), Ok(()));
        assert_eq!(
            store(&[], 200, &[("cache-control", "max-age=60, private")]),
            Err(NotStored::Private)
        );
        assert_eq!(
            store(&[], 200, &[("cache-control", "no-store, max-age=60")]),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                &[("cache-control", "no-store")],
                200,
                &[("cache-control", "max-age=60")]
            ),
            Err(NotStored::NoStore)
        );
        assert_eq!(
            store(
                &[],
                200,
                &[("cache-control", "max-age=60"), ("set-cookie", "a=b")]
            ),
            Err(NotStored::SetCookie)
        );
        // Authorization (RFC 9111 §3.5): only what says it may be shared.
        let auth = [("authorization", "Basic eDp5")];
        assert_eq!(
            store(&auth, 200, &[("cache-control", "max-age=60")]),
            Err(NotStored::Authorization)
        );
        for ok in [
            "max-age=60, public",
            "s-maxage=60",
            "max-age=60, must-revalidate",
        ] {
            assert_eq!(store(&auth, 200, &[("cache-control", ok)]), Ok(()), "{ok}");
        }
        for star in ["*", "accept, *", "*, *", ", *"] {
            assert_eq!(
                store(&[], 200, &[("cache-control", "max-age=60"), ("vary", star)]),
                Err(NotStored::VaryStar),
                "{star}"
            );
        }
        // Nothing to reuse it by: no lifetime, no Last-Modified, no validator.
        assert_eq!(store(&[], 200, &[]), Err(NotStored::NoFreshness));
        assert_eq!(
            store(&[], 200, &[("last-modified", &date(0))]),
            Ok(()),
            "heuristic"
        );
        assert_eq!(
            store(&[], 206, &[("cache-control", "max-age=60")]),
            Err(NotStored::Status)
        );
        assert_eq!(
            storable(
                &Method::POST,
                &HeaderMap::new(),
                StatusCode::OK,
                &headers(&[("cache-control", "max-age=60")]),
                &Options::default()
            ),
            Err(NotStored::Method)
        );
    }

    #[test]
    fn age_follows_rfc_9111_4_2_3() {
        // Sent at 0, head at 2 s, Date 1 s (the origin's clock), Age 10 from a cache before.
        let s = Stored::new(
            at(0),
            at(2),
            StatusCode::OK,
            &headers(&[
                ("date", &date(1)),
                ("age", "10"),
                ("cache-control", "max-age=100"),
            ]),
            &Options::default(),
        );
        // corrected_age_value = 10 + 2 (delay) beats apparent_age = 1.
        assert_eq!(s.initial_age, Duration::from_secs(12));
        assert_eq!(s.age(at(32)), Duration::from_secs(42));
        assert_eq!(s.ttl(at(32)), 58);
        // An origin clock ahead of ours: apparent age is zero, not negative.
        let s = stored(&[("date", &date(50)), ("cache-control", "max-age=10")]);
        assert_eq!(s.age(at(0)), Duration::ZERO);
        // Age is the first line, and only when it is a number.
        let s = stored(&[("age", "abc"), ("cache-control", "max-age=10")]);
        assert_eq!(s.age(at(0)), Duration::ZERO);
    }

    #[test]
    fn lifetime_precedence_expires_and_heuristics() {
        let fresh_for = |resp: &[(&str, &str)]| stored(resp).lifetime.as_secs();
        assert_eq!(fresh_for(&[("cache-control", "max-age=60, s-maxage=5")]), 5);
        assert_eq!(
            fresh_for(&[("cache-control", "max-age=60"), ("expires", &date(5))]),
            60
        );
        assert_eq!(fresh_for(&[("date", &date(0)), ("expires", &date(30))]), 30);
        // Expires against Date, not the local clock: Date 100 s ahead of us.
        assert_eq!(
            fresh_for(&[("date", &date(100)), ("expires", &date(130))]),
            30
        );
        assert_eq!(fresh_for(&[("expires", "0")]), 0);
        assert_eq!(
            fresh_for(&[("expires", &date(30)), ("expires", &date(60))]),
            0
        );
        assert_eq!(fresh_for(&[("cache-control", "max-age=-5")]), 0);
        // 10% of the time since it was last modified, capped at a day.
        assert_eq!(
            fresh_for(&[("date", &date(1000)), ("last-modified", &date(0))]),
            100
        );
        assert_eq!(
            fresh_for(&[("date", &date(100 * 86400)), ("last-modified", &date(0))]),
            86400
        );
    }

    #[test]
    fn a_request_may_be_answered_fresh_stale_or_after_revalidation() {
        let none = HeaderMap::new();
        let s = stored(&[("cache-control", "max-age=10, stale-while-revalidate=20")]);
        assert_eq!(s.assess(&none, at(5)), Usable::Fresh);
        assert_eq!(s.assess(&none, at(15)), Usable::StaleWhileRevalidate);
        assert_eq!(s.assess(&none, at(31)), Usable::Revalidate);
        let no_cache = headers(&[("cache-control", "no-cache")]);
        assert_eq!(s.assess(&no_cache, at(5)), Usable::Revalidate);
        let pragma = headers(&[("pragma", "no-cache")]);
        assert_eq!(s.assess(&pragma, at(5)), Usable::Revalidate);
        let max_age = headers(&[("cache-control", "max-age=3")]);
        assert_eq!(s.assess(&max_age, at(5)), Usable::Revalidate);
        let min_fresh = headers(&[("cache-control", "min-fresh=8")]);
        assert_eq!(s.assess(&min_fresh, at(5)), Usable::Revalidate);
        let max_stale = headers(&[("cache-control", "max-stale=100")]);
        assert_eq!(s.assess(&max_stale, at(60)), Usable::Fresh);
        // must-revalidate: no stale use, whatever anyone asks.
        let strict = stored(&[(
            "cache-control",
            "max-age=10, must-revalidate, stale-while-revalidate=20",
        )]);
        assert_eq!(strict.assess(&none, at(15)), Usable::Revalidate);
        assert_eq!(strict.assess(&max_stale, at(15)), Usable::Revalidate);
        // no-cache in the response: stored, but every use revalidates.
        let nc = stored(&[("cache-control", "no-cache"), ("etag", "\"a\"")]);
        assert_eq!(nc.assess(&none, at(0)), Usable::Revalidate);
        assert_eq!(
            nc.validators(),
            [(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\""))]
        );
    }

    #[test]
    fn stale_on_error_within_the_allowance_and_never_against_the_rules() {
        let none = HeaderMap::new();
        let grace = Duration::from_secs(60);
        let s = stored(&[("cache-control", "max-age=10")]);
        assert_eq!(
            s.stale_on_error(&none, at(40), grace),
            Some(Duration::from_secs(30))
        );
        assert_eq!(s.stale_on_error(&none, at(71), grace), None);
        // The origin's stale-if-error extends the cache's own allowance.
        let sie = stored(&[("cache-control", "max-age=10, stale-if-error=600")]);
        assert!(sie.stale_on_error(&none, at(500), grace).is_some());
        assert!(sie.stale_on_error(&none, at(500), Duration::ZERO).is_some());
        assert_eq!(sie.stale_on_error(&none, at(611), grace), None);
        for never in [
            "max-age=10, must-revalidate, stale-if-error=600",
            "max-age=10, proxy-revalidate",
            "s-maxage=10, stale-if-error=600",
            "no-cache",
        ] {
            let s = stored(&[("cache-control", never), ("etag", "\"x\"")]);
            assert_eq!(s.stale_on_error(&none, at(20), grace), None, "{never}");
        }
        let client = headers(&[("cache-control", "no-cache")]);
        assert_eq!(s.stale_on_error(&client, at(20), grace), None);
        // A fresh copy is of course usable too (zero staleness).
        assert_eq!(s.stale_on_error(&none, at(5), grace), Some(Duration::ZERO));
    }

    #[test]
    fn a_304_updates_the_stored_fields_but_not_the_framing() {
        let mut h = headers(&[
            ("content-length", "5"),
            ("x-test", "old"),
            ("cache-control", "max-age=1"),
            ("etag", "\"a\""),
        ]);
        update_headers(
            &mut h,
            &headers(&[
                ("content-length", "0"),
                ("x-test", "new"),
                ("cache-control", "max-age=60"),
            ]),
        );
        assert_eq!(h["content-length"], "5");
        assert_eq!(h["x-test"], "new");
        assert_eq!(h["cache-control"], "max-age=60");
        assert_eq!(h["etag"], "\"a\"");
    }

    #[test]
    fn vary_and_invalidation_and_conditionals() {
        let resp = headers(&[("vary", "Accept-Encoding, accept"), ("vary", "accept")]);
        assert_eq!(
            vary_names(&resp).unwrap(),
            [header::ACCEPT_ENCODING, header::ACCEPT]
        );
        let req = headers(&[("accept", "a ,b"), ("accept", "c")]);
        assert_eq!(
            vary_value(&req, &header::ACCEPT).as_deref(),
            Some("a, b, c")
        );
        assert_eq!(vary_value(&req, &header::ACCEPT_ENCODING), None);

        assert!(invalidates(&Method::POST, StatusCode::OK));
        assert!(invalidates(
            &Method::from_bytes(b"M-SEARCH").unwrap(),
            StatusCode::SEE_OTHER
        ));
        assert!(!invalidates(
            &Method::POST,
            StatusCode::INTERNAL_SERVER_ERROR
        ));
        assert!(!invalidates(&Method::GET, StatusCode::OK));

        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", &date(0))]);
        assert!(not_modified_for(
            &headers(&[("if-none-match", "\"x\", \"v1\"")]),
            &stored
        ));
        // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
        assert!(!not_modified_for(
            &headers(&[("if-none-match", "\"x\""), ("if-modified-since", &date(10))]),
            &stored
        ));
        assert!(not_modified_for(
            &headers(&[("if-modified-since", &date(10))]),
            &stored
        ));
        assert!(!not_modified_for(
            &headers(&[("if-modified-since", &date(0).replace("GMT", "XYZ"))]),
            &stored
        ));
    }
}
