//! The cache phase, on routes with `cache = true`: after routing, a fresh stored response
//! answers at once; otherwise the request goes upstream, and what comes back is stored as it
//! streams when the rules allow. When the upstream fails (an error that would be a 502, 503 or
//! 504, or an upstream 500/502/503/504) and a stored copy may be served stale, the copy answers
//! instead, with `Cache-Status` saying so and one WARN line naming the cause it hid.
//!
//! The rules are `cache::policy`'s; this module only applies them to the request at hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use cache::policy::{self, Options, Stored, Usable};
use cache::store::{Entry, Store};
use cause::{Failure, Level};
use http::header::{HeaderMap, HeaderName, HeaderValue, AGE};
use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use crate::body::{Fill, FillCount, ProxyBody, RequestLog};
use crate::flight::{End, Finish, Flight, Flights, Head, Joined, Leader, Waited};
use crate::forward::{Outgoing, Routed};
use crate::headers::X_REQUEST_ID;
use crate::Gateway;

/// How long a request with a stale copy to fall back on waits for the upstream's answer
/// before the copy answers instead.
pub(crate) const FAST_STALE: std::time::Duration = std::time::Duration::from_secs(1);

/// `Cache-Status` (RFC 9211).
pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The store and its settings, shared by every worker and kept across reloads that leave
/// `[cache]` as it was.
pub(crate) struct ResponseCache {
    pub config: config::CacheConfig,
    pub store: Store,
    pub options: Options,
    /// Upstreams that failed a request a stored copy then answered, and when: for
    /// [`FAST_STALE`] after that, requests with a copy to fall back on do not try them.
    failed: std::sync::Mutex<Vec<(Arc<str>, std::time::Instant)>>,
    /// Answers by what the cache did: hits, misses (went upstream), stale copies served.
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale: AtomicU64,
    /// Stored copies an upstream 304 confirmed.
    pub revalidated: AtomicU64,
    /// Answers that shared another request's trip upstream.
    pub collapsed: AtomicU64,
    /// Stale copies that answered within `stale-while-revalidate` while a refresh ran.
    pub while_revalidating: AtomicU64,
    /// Stale copies served instead of an error, by the cause of the error they hid.
    stale_causes: std::sync::Mutex<Vec<(&'static str, u64)>>,
    /// Concurrent misses for one key, coalesced.
    pub flights: Arc<Flights>,
    /// Copies being taken by requests that do not coalesce (`body.rs`'s `Fill`).
    pub fills: Arc<std::sync::atomic::AtomicUsize>,
}

impl ResponseCache {
    pub(crate) fn new(config: config::CacheConfig) -> ResponseCache {
        // Every flight may hold up to max_object: together they stay within the store's size,
        // or 64 flights, whichever allows more.
        let flights = Arc::new(Flights::new(
            (config.size / config.max_object.max(1)).max(64) as usize,
            config.max_object,
        ));
        ResponseCache {
            store: Store::new(config.size, config.max_object, 8),
            options: Options::default(),
            config,
            failed: std::sync::Mutex::new(Vec::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            revalidated: AtomicU64::new(0),
            collapsed: AtomicU64::new(0),
            while_revalidating: AtomicU64::new(0),
            stale_causes: std::sync::Mutex::new(Vec::new()),
            fills: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            flights,
        }
    }

    /// The cache's lines for `/metrics`.
    pub(crate) fn metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        crate::metrics::head(
            out,
            "cleargate_cache_responses_total",
            "counter",
            "Answers on caching routes by what the cache did: hit (from memory), miss (went upstream), stale (a stored copy instead of an error), revalidated (a stored copy the upstream confirmed with a 304), collapsed (shared another request's trip upstream), stale_while_revalidate (a stale copy within the origin's stale-while-revalidate, while a refresh ran).",
        );
        for (result, n) in [
            ("hit", &self.hits),
            ("miss", &self.misses),
            ("stale", &self.stale),
            ("revalidated", &self.revalidated),
            ("collapsed", &self.collapsed),
            ("stale_while_revalidate", &self.while_revalidating),
        ] {
            let _ = writeln!(
                out,
                "cleargate_cache_responses_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        crate::metrics::head(
            out,
            "cleargate_cache_stale_total",
            "counter",
            "Stale copies served instead of an error, by the cause of the error they hid (upstream_status: the upstream's own 5xx).",
        );
        for (cause, n) in self
            .stale_causes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "cleargate_cache_stale_total{{cause=\"{cause}\"}} {n}");
        }
        crate::metrics::head(
            out,
            "cleargate_cache_bytes",
            "gauge",
            "Bytes of headers and bodies the cache holds.",
        );
        let _ = writeln!(out, "cleargate_cache_bytes {}", self.store.bytes());
        crate::metrics::head(
            out,
            "cleargate_cache_fills_in_flight",
            "gauge",
            "Responses on their way from an upstream into the cache, each shared by the requests that wait for it.",
        );
        let _ = writeln!(
            out,
            "cleargate_cache_fills_in_flight {}",
            self.flights.running() + self.fills.load(Ordering::Relaxed)
        );
    }

    /// True when `upstream` failed a request within the last [`FAST_STALE`].
    pub(crate) fn failed_recently(&self, upstream: &str) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        failed
            .iter()
            .any(|(u, at)| &**u == upstream && at.elapsed() < FAST_STALE)
    }

    fn record_failure(&self, upstream: &Arc<str>) {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match failed.iter_mut().find(|(u, _)| u == upstream) {
            Some((_, at)) => *at = now,
            None => failed.push((upstream.clone(), now)),
        }
    }
}

impl Lookup {
    /// True when a stored copy (fresh or not) was found for the request.
    pub(crate) fn has_copy(&self) -> bool {
        self.entry.is_some()
    }

    /// True when the forwarded request asks the upstream to confirm a stored copy.
    pub(crate) fn revalidating(&self) -> bool {
        self.revalidating && self.entry.is_some()
    }
}

/// A request on a caching route, as the cache phase saw it.
pub(crate) struct Lookup {
    cache: Arc<ResponseCache>,
    key: Arc<str>,
    method: Method,
    /// The client's header fields, for the rules and for `Vary`.
    headers: HeaderMap,
    /// What was stored for it, fresh or not.
    entry: Option<Arc<Entry>>,
    request_time: SystemTime,
    /// The forwarded request carries the stored copy's validators: a 304 confirms the copy.
    revalidating: bool,
    /// This request leads the flight for its key: others wait for its answer.
    leader: Option<Leader>,
}

impl Gateway {
    /// Looks the request up when its route caches. `None` on other routes.
    pub(crate) fn cache_lookup(
        &self,
        method: &Method,
        headers: &HeaderMap,
        route_caches: bool,
        tls: bool,
        log: &RequestLog,
    ) -> Option<Lookup> {
        let cache = self.cache.as_ref().filter(|_| route_caches)?.clone();
        let scheme = if tls { "https" } else { "http" };
        let key = Store::key(scheme, &log.record.host, &log.record.path);
        let entry = match *method {
            Method::GET | Method::HEAD => cache.store.lookup(&key, headers),
            _ => None,
        };
        Some(Lookup {
            cache,
            key,
            method: method.clone(),
            headers: headers.clone(),
            entry,
            request_time: SystemTime::now(),
            revalidating: false,
            leader: None,
        })
    }

    /// Coalescing: the first miss for a key leads, and goes on; a later one waits for the
    /// leader's answer and shares it (`Some`), or, when the leader's answer could not be
    /// shared, looks in the store again and, finding nothing fresh, goes upstream on its own
    /// (`None`). Only plain GETs take part: no conditions, ranges, credentials or `no-cache`.
    pub(crate) async fn cache_coalesce(
        &self,
        lookup: &mut Lookup,
        log: &mut RequestLog,
    ) -> Option<Response<ProxyBody>> {
        use http::header::{AUTHORIZATION, IF_MODIFIED_SINCE, IF_NONE_MATCH, RANGE};
        let h = &lookup.headers;
        if lookup.method != Method::GET
            || [IF_NONE_MATCH, IF_MODIFIED_SINCE, RANGE, AUTHORIZATION]
                .iter()
                .any(|n| h.contains_key(n))
            || policy::client_no_cache(h)
        {
            return None;
        }
        let flight = match lookup.cache.flights.join(&lookup.key) {
            Joined::Lead(leader) => {
                // A flight may have ended, and stored a fresh copy, since the lookup.
                if lookup.entry.is_none() {
                    lookup.entry = lookup.cache.store.lookup(&lookup.key, &lookup.headers);
                    if let Some(hit) = self.cache_hit(lookup, log) {
                        return Some(hit);
                    }
                }
                lookup.leader = Some(leader);
                return None;
            }
            Joined::Alone => return None,
            Joined::Follow(flight) => flight,
        };
        let stale_ok = self.stale_allowed(lookup);
        let waited = match stale_ok {
            false => flight.head(false).await,
            // With a copy to fall back on, no longer than a request would wait upstream.
            true => tokio::time::timeout(FAST_STALE, flight.head(true))
                .await
                .unwrap_or(Waited::Background),
        };
        match waited {
            Waited::Shared(head) => {
                let same_variant = policy::vary_names(&head.headers)
                    .unwrap_or_default()
                    .iter()
                    .all(|n| policy::vary_value(&head.request, n) == policy::vary_value(h, n));
                if let Some(reader) = flight.reader().filter(|_| same_variant) {
                    return Some(self.answer_from_flight(lookup, &head, reader, log));
                }
                return None;
            }
            Waited::Background => {
                // The upstream was too slow for an earlier request, and its answer is still on
                // its way: the copy answers at once instead of waiting for it too.
                let slow = Failure::new(cause::Cause::Timeout, cause::Phase::ReadHead).with_detail(
                    "the upstream did not answer in time; a background refresh is on its way",
                );
                return self.serve_stale(lookup, Some(&slow), None, log);
            }
            Waited::Alone => {}
        }
        // Not shared: a 304 may have freshened the copy meanwhile.
        lookup.entry = lookup.cache.store.lookup(&lookup.key, &lookup.headers);
        self.cache_hit(lookup, log)
    }

    /// A follower's answer: the leader's head and, as it arrives, its body.
    fn answer_from_flight(
        &self,
        lookup: &Lookup,
        head: &Head,
        reader: crate::flight::Reader,
        log: &mut RequestLog,
    ) -> Response<ProxyBody> {
        let mut headers = head.headers.clone();
        headers.insert(
            X_REQUEST_ID,
            crate::headers::request_id_value(&log.record.request_id),
        );
        headers.insert(
            CACHE_STATUS,
            HeaderValue::from_static("cleargate; fwd=uri-miss; collapsed"),
        );
        let length = headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        log.record.status = head.status.as_u16();
        log.record.cache = Some("collapsed");
        lookup.cache.collapsed.fetch_add(1, Ordering::Relaxed);
        let log = log.take_boxed(&self.logger);
        let mut resp = Response::new(ProxyBody::shared(reader, length).with_boxed_log(log));
        *resp.status_mut() = head.status;
        *resp.headers_mut() = headers;
        resp
    }

    /// Makes the forwarded request conditional on the stored copy (RFC 9111 §4.3.1), when
    /// there is one to confirm and the client did not send conditions of its own (those go
    /// upstream as they are, and the upstream's answer to them is relayed).
    pub(crate) fn cache_conditions(&self, lookup: &mut Lookup, forwarded: &mut HeaderMap) {
        let Some(entry) = &lookup.entry else {
            return;
        };
        let own = [
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
            http::header::IF_RANGE,
        ];
        if lookup.method != Method::GET || own.iter().any(|h| lookup.headers.contains_key(h)) {
            return;
        }
        let validators = entry.stored.validators();
        if validators.is_empty() {
            return;
        }
        for (name, value) in validators {
            forwarded.insert(name, value);
        }
        lookup.revalidating = true;
    }

    /// The upstream's 304 to a request made conditional by [`Gateway::cache_conditions`]: the
    /// stored copy, its fields updated from the 304 and its age started again, answers.
    pub(crate) fn cache_confirmed(
        &self,
        lookup: &Lookup,
        not_modified: &HeaderMap,
        log: &mut RequestLog,
    ) -> Response<ProxyBody> {
        let Some(entry) = lookup.entry.as_ref() else {
            unreachable!("a revalidating lookup has a stored copy");
        };
        let mut fields = not_modified.clone();
        for name in [X_REQUEST_ID, http::header::VIA] {
            fields.remove(name);
        }
        let now = SystemTime::now();
        let fresh = lookup.cache.store.freshen(
            lookup.key.clone(),
            entry,
            &fields,
            lookup.request_time,
            now,
            &lookup.cache.options,
        );
        log.record.cache = Some("revalidated");
        lookup.cache.revalidated.fetch_add(1, Ordering::Relaxed);
        let status = format!(
            "cleargate; fwd=stale; fwd-status=304; ttl={}",
            fresh.stored.ttl(now)
        );
        self.answer_from_cache(lookup, &fresh, status, now, log)
    }

    /// A fresh stored response for the request, answered from memory.
    pub(crate) fn cache_hit(
        &self,
        lookup: &Lookup,
        log: &mut RequestLog,
    ) -> Option<Response<ProxyBody>> {
        let entry = lookup.entry.as_ref()?;
        let now = SystemTime::now();
        if entry.stored.assess(&lookup.headers, now) != Usable::Fresh {
            return None;
        }
        let status = format!("cleargate; hit; ttl={}", entry.stored.ttl(now));
        log.record.cache = Some("hit");
        lookup.cache.hits.fetch_add(1, Ordering::Relaxed);
        Some(self.answer_from_cache(lookup, entry, status, now, log))
    }

    /// True when the request should not try `upstream` at all: a stored copy may answer and
    /// the upstream failed another such request a moment ago.
    pub(crate) fn presumed_down(&self, lookup: &Lookup, upstream: &str) -> bool {
        lookup.cache.failed_recently(upstream)
    }

    /// True when a stored copy could answer, stale, if the upstream failed now.
    pub(crate) fn stale_allowed(&self, lookup: &Lookup) -> bool {
        lookup.entry.as_ref().is_some_and(|e| {
            e.stored
                .stale_on_error(
                    &lookup.headers,
                    SystemTime::now(),
                    lookup.cache.config.stale_if_error,
                )
                .is_some()
        })
    }

    /// The stored copy, stale, in place of the error `failure` (or of the upstream's own
    /// `upstream_status`), when the rules allow it.
    pub(crate) fn serve_stale(
        &self,
        lookup: &Lookup,
        failure: Option<&Failure>,
        upstream_status: Option<StatusCode>,
        log: &mut RequestLog,
    ) -> Option<Response<ProxyBody>> {
        let entry = lookup.entry.as_ref()?;
        let now = SystemTime::now();
        let grace = lookup.cache.config.stale_if_error;
        let stale_for = entry.stored.stale_on_error(&lookup.headers, now, grace)?;
        // What the client would have had, and why.
        let (hidden, cause, phase, detail) = match (failure, upstream_status) {
            (Some(f), _) => (
                f.answer().status,
                f.cause.as_str(),
                Some(f.phase.as_str()),
                f.detail.clone().unwrap_or_default(),
            ),
            (None, Some(s)) => (
                s.as_u16(),
                "upstream_status",
                None,
                format!("the upstream answered {s}"),
            ),
            (None, None) => return None,
        };
        let status = format!(
            "cleargate; fwd=stale; fwd-status={hidden}; ttl={}; detail=\"{cause}\"",
            entry.stored.ttl(now)
        );
        self.logger.notice(
            Level::Warn,
            &format!("served a stale copy instead of a {hidden}"),
            &[
                ("request_id", json!(log.record.request_id.as_str())),
                ("cause", json!(cause)),
                ("phase", json!(phase)),
                ("upstream", json!(log.record.upstream.as_deref())),
                ("detail", json!(detail)),
                ("stale_s", json!(stale_for.as_secs())),
                ("key", json!(&*lookup.key)),
            ],
        );
        if failure.is_some() {
            if let Some(u) = &log.record.upstream {
                lookup.cache.record_failure(u);
            }
        }
        log.record.cache = Some("stale");
        lookup.cache.stale.fetch_add(1, Ordering::Relaxed);
        {
            let mut causes = lookup
                .cache
                .stale_causes
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match causes.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, n)) => *n += 1,
                None => causes.push((cause, 1)),
            }
        }
        Some(self.answer_from_cache(lookup, entry, status, now, log))
    }

    /// A response made from a stored one: its status, fields and body, with `Age`, this
    /// request's id and `Cache-Status`; a 304 when the client's own conditions hold.
    fn answer_from_cache(
        &self,
        lookup: &Lookup,
        entry: &Entry,
        cache_status: String,
        now: SystemTime,
        log: &mut RequestLog,
    ) -> Response<ProxyBody> {
        let mut headers = entry.headers.clone();
        headers.insert(AGE, entry.stored.age_header(now));
        headers.insert(
            X_REQUEST_ID,
            crate::headers::request_id_value(&log.record.request_id),
        );
        if let Ok(v) = HeaderValue::from_str(&cache_status) {
            headers.insert(CACHE_STATUS, v);
        }
        let mut status = entry.status;
        let mut body = entry.body.clone();
        if entry.status == StatusCode::OK && policy::not_modified_for(&lookup.headers, &headers) {
            status = StatusCode::NOT_MODIFIED;
            body = Bytes::new();
            headers.remove(http::header::CONTENT_LENGTH);
        } else if entry.status == StatusCode::OK {
            // A range of the stored whole body (RFC 9110 §14).
            let len = body.len() as u64;
            match policy::range_asked(&lookup.headers, len) {
                policy::RangeAsked::Whole => {}
                policy::RangeAsked::Part { start, end } => {
                    status = StatusCode::PARTIAL_CONTENT;
                    body = body.slice(start as usize..=end as usize);
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                        headers.insert(http::header::CONTENT_RANGE, v);
                    }
                    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                }
                policy::RangeAsked::Unsatisfiable => {
                    status = StatusCode::RANGE_NOT_SATISFIABLE;
                    body = Bytes::new();
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                        headers.insert(http::header::CONTENT_RANGE, v);
                    }
                    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(0));
                }
            }
        }
        if lookup.method == Method::HEAD {
            body = Bytes::new();
        }
        log.record.status = status.as_u16();
        let log = log.take_boxed(&self.logger);
        let mut resp = Response::new(ProxyBody::full(body).with_boxed_log(log));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The upstream's answer on a caching route: stored as it streams when the rules allow,
    /// with `Cache-Status` saying what happened; an unsafe method's success invalidates. A
    /// leader's storable answer is shared with its flight's followers.
    pub(crate) fn cache_fill(
        &self,
        mut lookup: Lookup,
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        let cache = &lookup.cache;
        cache.misses.fetch_add(1, Ordering::Relaxed);
        if policy::invalidates(&lookup.method, parts.status) {
            cache.store.invalidate(&lookup.key);
        }
        let fwd = if lookup.entry.is_some() {
            "stale"
        } else {
            "uri-miss"
        };
        let storable = policy::storable(
            &lookup.method,
            &lookup.headers,
            parts.status,
            &parts.headers,
            &cache.options,
        );
        let too_large = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > cache.config.max_object);
        if lookup.leader.is_some() || storable.is_err() || too_large {
            // Keys whose answers cannot be stored are not coalesced for a while.
            cache
                .flights
                .set_pass(&lookup.key, storable.is_err() || too_large);
        }
        let (status, body) = match storable {
            Ok(()) if too_large => (format!("cleargate; fwd={fwd}; detail=too-large"), body),
            Ok(()) if lookup.leader.is_some() => {
                let Some(leader) = lookup.leader.take() else {
                    unreachable!("checked just above");
                };
                let commit = commit_for(&lookup, &parts);
                let mut shared = parts.headers.clone();
                shared.remove(X_REQUEST_ID);
                let head = Head {
                    status: parts.status,
                    headers: shared,
                    request: lookup.headers.clone(),
                };
                let (flight, finish) = leader.share(head);
                let length = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let body = self.share_body(flight, finish, body, length, commit);
                (format!("cleargate; fwd={fwd}; stored"), body)
            }
            Ok(()) if cache.fills.load(Ordering::Relaxed) >= cache.flights.limit => {
                // As many copies are being taken as flights may run: this one streams through
                // unstored, so that fills in progress stay bounded in memory.
                (format!("cleargate; fwd={fwd}; detail=busy"), body)
            }
            Ok(()) => {
                let fill = Fill::new(
                    cache.store.max_object(),
                    commit_for(&lookup, &parts),
                    FillCount::new(&cache.fills),
                );
                (
                    format!("cleargate; fwd={fwd}; stored"),
                    body.with_fill(fill),
                )
            }
            Err(why) => (
                format!("cleargate; fwd={fwd}; detail={}", why.as_str()),
                body,
            ),
        };
        if let Ok(v) = HeaderValue::from_str(&status) {
            parts.headers.insert(CACHE_STATUS, v);
        }
        Response::from_parts(parts, body)
    }
}

impl Gateway {
    /// Hands the upstream body to a task that reads it into the flight (and, at its clean
    /// end, stores it), and returns the leader's own reader of the flight in its place.
    fn share_body(
        &self,
        flight: Arc<Flight>,
        finish: Finish,
        mut body: ProxyBody,
        length: Option<u64>,
        commit: Box<dyn FnOnce(Bytes) + Send>,
    ) -> ProxyBody {
        let reader = flight.reader();
        let log = body.take_log();
        // The task's copy of the record names the request in a failure's WARN line; the
        // access line is the leader's own.
        let mut task_log = RequestLog::detached(&self.logger);
        if let Some(log) = &log {
            task_log.record.request_id = log.record.request_id.clone();
            task_log.record.status = log.record.status;
            task_log.attempts = log.attempts;
        }
        let body_task = body.with_log(task_log);
        tokio::spawn(pump(
            Ended {
                flight,
                ended: false,
            },
            body_task,
            finish,
            commit,
        ));
        let Some(reader) = reader else {
            unreachable!("a new flight holds its body from the start");
        };
        let shared = ProxyBody::shared(reader, length);
        match log {
            Some(log) => shared.with_log(log),
            None => shared,
        }
    }
}

/// The reading task's hold on its flight: if the task goes before the body has ended (its
/// runtime shut down, a panic), the readers are told the body broke instead of waiting forever.
struct Ended {
    flight: Arc<Flight>,
    ended: bool,
}

impl Drop for Ended {
    fn drop(&mut self) {
        if !self.ended {
            self.flight
                .end(End::Broken(cause::Cause::Internal, cause::Phase::ReadBody));
        }
    }
}

/// Reads a shared upstream body into its flight, to its end or until nobody needs it.
async fn pump(
    mut hold: Ended,
    mut body: ProxyBody,
    finish: Finish,
    commit: Box<dyn FnOnce(Bytes) + Send>,
) {
    use http_body_util::BodyExt;
    let flight = hold.flight.clone();
    loop {
        if flight.abandoned() {
            // Too large to store and every client gone: the upstream connection is dropped
            // with the rest of the body.
            flight.end(End::Broken(
                cause::Cause::ClientAborted,
                cause::Phase::ReadBody,
            ));
            return;
        }
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    flight.push(data).await;
                }
            }
            Some(Err(_)) => {
                let (cause, phase) = body
                    .failure()
                    .unwrap_or((cause::Cause::InvalidResponse, cause::Phase::ReadBody));
                flight.end(End::Broken(cause, phase));
                return;
            }
        }
    }
    let whole = flight.end(End::Complete);
    hold.ended = true;
    if let Some(bytes) = whole {
        commit(bytes);
    }
    drop(finish);
}

/// What stores the upstream's answer once its whole body is there: the response's fields
/// (without this request's id) and the facts the rules judge it by, taken now, at its head.
fn commit_for(lookup: &Lookup, parts: &http::response::Parts) -> Box<dyn FnOnce(Bytes) + Send> {
    let mut headers = parts.headers.clone();
    headers.remove(X_REQUEST_ID);
    let code = parts.status;
    let cache = &lookup.cache;
    let stored = Stored::new(
        lookup.request_time,
        SystemTime::now(),
        code,
        &headers,
        &cache.options,
    );
    let (store, key, req) = (cache.clone(), lookup.key.clone(), lookup.headers.clone());
    Box::new(move |bytes: Bytes| {
        let entry = Entry::new(code, headers, bytes, stored, &req);
        store.store.insert(key, entry);
    })
}

/// A request the gateway makes itself to refresh a stored copy, as the spawned task carries it.
struct Refresh {
    lookup: Lookup,
    route_index: usize,
    upstream_index: usize,
    key: Option<u64>,
    outgoing: Outgoing,
    log: RequestLog,
}

impl Gateway {
    /// Within the origin's `stale-while-revalidate`: the stored copy answers at once, and one
    /// refresh runs in the background (RFC 5861 §3).
    pub(crate) fn stale_while_revalidate(
        self: &Arc<Self>,
        lookup: &mut Lookup,
        routed: &Routed<'_>,
        outgoing: &Outgoing,
        log: &mut RequestLog,
    ) -> Option<Response<ProxyBody>> {
        let entry = lookup.entry.as_ref()?;
        let now = SystemTime::now();
        if entry.stored.assess(&lookup.headers, now) != Usable::StaleWhileRevalidate {
            return None;
        }
        let entry = entry.clone();
        self.spawn_refresh(lookup, routed, outgoing, false);
        let status = format!(
            "cleargate; hit; ttl={}; detail=stale-while-revalidate",
            entry.stored.ttl(now)
        );
        log.record.cache = Some("stale-while-revalidate");
        lookup
            .cache
            .while_revalidating
            .fetch_add(1, Ordering::Relaxed);
        Some(self.answer_from_cache(lookup, &entry, status, now, log))
    }

    /// Starts a background refresh of the stored copy for this request's key, unless another
    /// request for the key is already on its way upstream. The refresh is a conditional GET
    /// with the upstream's own timeouts; it leads the key's flight (taking it over from this
    /// request when this request led it), so misses meanwhile share it.
    pub(crate) fn spawn_refresh(
        self: &Arc<Self>,
        lookup: &mut Lookup,
        routed: &Routed<'_>,
        outgoing: &Outgoing,
        slow: bool,
    ) {
        let Some(forwarded) = outgoing.parts.as_ref() else {
            return;
        };
        let leader = match lookup.leader.take() {
            Some(leader) => leader,
            None => match lookup.cache.flights.join(&lookup.key) {
                Joined::Lead(leader) => leader,
                _ => return,
            },
        };
        if slow {
            // The upstream is slow: requests with a copy to fall back on take it instead of
            // waiting for this refresh. (A `stale-while-revalidate` refresh is waited for like
            // any leader by requests outside that window.)
            leader.set_background();
        }
        let mut req = Request::new(());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = forwarded.uri.clone();
        *req.version_mut() = forwarded.version;
        *req.headers_mut() = forwarded.headers.clone();
        let (mut parts, ()) = req.into_parts();
        for name in [
            http::header::IF_NONE_MATCH,
            http::header::IF_MODIFIED_SINCE,
            http::header::IF_MATCH,
            http::header::IF_UNMODIFIED_SINCE,
            http::header::IF_RANGE,
            http::header::RANGE,
            http::header::CONTENT_LENGTH,
            http::header::TRANSFER_ENCODING,
        ] {
            parts.headers.remove(name);
        }
        let request_id = crate::headers::new_request_id();
        let id_value = crate::headers::request_id_value(&request_id);
        parts.headers.remove(X_REQUEST_ID);
        // The refresh's own id goes out with the lines added to the client's request.
        let added = outgoing.added.clone();
        let mut refresh_lookup = Lookup {
            cache: lookup.cache.clone(),
            key: lookup.key.clone(),
            method: Method::GET,
            headers: lookup.headers.clone(),
            entry: lookup.entry.clone(),
            request_time: SystemTime::now(),
            revalidating: false,
            leader: Some(leader),
        };
        if let Some(entry) = &refresh_lookup.entry {
            let validators = entry.stored.validators();
            refresh_lookup.revalidating = !validators.is_empty();
            for (name, value) in validators {
                parts.headers.insert(name, value);
            }
        }
        let log = RequestLog {
            record: crate::log::AccessRecord {
                method: Method::GET,
                host: self_host(&lookup.key),
                path: match forwarded.uri.path_and_query() {
                    Some(p) => crate::log::Text::path(p),
                    None => "/".into(),
                },
                proto: "HTTP/1.1",
                request_id,
                upstream: Some(routed.upstream.name.clone()),
                cache: Some("refresh"),
                ..crate::log::AccessRecord::default()
            },
            started: std::time::Instant::now(),
            logger: self.logger.clone(),
            bytes_in: None,
            responded: true,
            attempts: 0,
            inflight: None,
            armed: true,
        };
        let refresh = Refresh {
            lookup: refresh_lookup,
            route_index: routed.route_index,
            upstream_index: routed.upstream_index,
            key: routed.key,
            outgoing: Outgoing {
                parts: Some(parts),
                body: crate::forward::PreparedBody::Buffered(Bytes::new()),
                too_large: None,
                request_id: id_value,
                added,
                upgrade: None,
            },
            log,
        };
        tokio::spawn(self.clone().refresh(refresh));
    }

    /// The background refresh: the upstream's answer replaces or confirms the stored copy;
    /// a failure is logged and remembered like a client request's.
    async fn refresh(self: Arc<Self>, r: Refresh) {
        use http_body_util::BodyExt;
        let Refresh {
            lookup,
            route_index,
            upstream_index,
            key,
            mut outgoing,
            mut log,
        } = r;
        let routed = self.routed_again(route_index, upstream_index, key);
        match self.attempts(&routed, &mut outgoing, &mut log).await {
            Err(failure) => {
                self.logger
                    .gateway_error(&log.record.request_id, &failure, log.attempts, None);
                log.record.status = failure.answer().status;
                log.record.cause = Some(failure.cause);
                log.record.phase = Some(failure.phase);
                log.record.gateway_error = true;
                lookup.cache.record_failure(&routed.upstream.name);
            }
            Ok(answered) => {
                let status = answered.parts.status;
                let request_id = outgoing.request_id.clone();
                let (parts, mut body) = self
                    .respond(answered, &routed, &request_id, &mut log)
                    .into_parts();
                if status == StatusCode::NOT_MODIFIED && lookup.revalidating() {
                    if let Some(mut log) = body.take_log() {
                        drop(body);
                        let confirmed = self.cache_confirmed(&lookup, &parts.headers, &mut log);
                        // Its log is the refresh's access line.
                        drop(confirmed);
                    }
                    return;
                }
                if status.is_server_error() {
                    // Never replaces the good copy. Dropped unread (its connection closes), and
                    // the waiting requests are let go at once.
                    drop(lookup);
                    drop(body);
                    return;
                }
                // Read to its end (a storable answer goes into the store as it is read),
                // nothing kept here; a body past what may be stored is let go.
                let limit = lookup.cache.config.max_object;
                let mut body = self
                    .cache_fill(lookup, Response::from_parts(parts, body))
                    .into_body();
                let mut read = 0u64;
                while let Some(Ok(frame)) = body.frame().await {
                    read += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if read > limit {
                        break;
                    }
                }
            }
        }
    }
}

/// The host of a cache key (`scheme://host/path`), for a refresh's access line.
fn self_host(key: &str) -> crate::log::Text {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    crate::log::Text::copied(rest.split('/').next().unwrap_or(""))
}
