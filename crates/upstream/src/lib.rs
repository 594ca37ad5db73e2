//! Upstreams: named groups of endpoints, and everything that keeps requests away from endpoints
//! that would fail them.
//!
//! - `lib.rs`: [`Upstream`] and [`Endpoint`]; connection pools (checked before reuse, idle
//!   timeouts learned from the upstream); in-flight limits and the wait for a free slot.
//! - `balance.rs`: choosing an endpoint (round-robin, weighted, least-request, hash), with slow
//!   start and the panic threshold.
//! - `health.rs`: active checks and passive outlier ejection; every transition is an event.
//! - `dns.rs`: endpoints named by host name, re-resolved as their TTL expires.
//! - `budget.rs`: the retry budget.
//!
//! Connecting and classifying failures is `crates/net`'s job; deciding whether to retry is the
//! proxy's. This crate only knows which endpoint to try and what happened to each.

mod balance;
mod budget;
mod dns;
mod health;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cause::{Cause, Failure, Level, Phase};
use config::UpstreamConfig;
use net::{Conn, ConnectOptions};

pub use balance::hash_key;
pub use balance::Choice;
pub use budget::RetryBudget;
pub use dns::Names;
pub use health::{HealthState, Outcome};

/// Where upstream events (health transitions, ejections, address changes) are reported.
pub type Events = Arc<dyn Fn(Level, String, Vec<(&'static str, String)>) + Send + Sync>;

/// The shortest idle timeout the pool will learn; below it pooling is pointless.
const MIN_LEARNED_IDLE: Duration = Duration::from_millis(50);

/// The longest idle time assumed safe for requests that must not be sent twice, while the
/// upstream's own idle limit is unknown; they reuse connections idle for under half of it.
const CAUTIOUS_IDLE: Duration = Duration::from_secs(2);

/// How long a learned idle timeout is kept before the configured one applies again.
const LEARNED_IDLE_LIFETIME: Duration = Duration::from_secs(300);

thread_local! {
    /// The worker this thread serves, set by [`set_worker`]; 0 elsewhere.
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// Whether [`set_worker`] was called on this thread.
    static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Makes this thread worker number `index`: from now on it takes and gives back connections in
/// that worker's pools only, so a connection (whose task runs on the worker's event loop) is
/// never used from another thread.
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
    IS_WORKER.with(|w| w.set(true));
}

/// Whether this thread is one of the workers (the admin API, signals and tests are not).
pub fn is_worker() -> bool {
    IS_WORKER.with(|w| w.get())
}

/// The worker this thread serves (0 outside the workers).
pub fn worker() -> usize {
    WORKER.with(|w| w.get())
}

/// One place an upstream can be reached.
pub struct Endpoint {
    /// `host:port` as configured; shared, so that a request's log takes it without a copy.
    pub name: Arc<str>,
    pub weight: u32,
    pub index: usize,
    /// Idle connections, one pool per worker.
    idle: Box<[Mutex<VecDeque<Conn>>]>,
    /// The shared HTTP/2 connection per worker, when the upstream speaks h2c.
    shared: Box<[Mutex<Option<Conn>>]>,
    in_flight: AtomicUsize,
    /// Changed through [`Endpoint::health_mut`] only, which keeps `published` up to date.
    pub(crate) health: Mutex<HealthState>,
    pub(crate) published: health::Published,
    /// Idle timeout learned from `Keep-Alive: timeout=` or from early closes, if shorter.
    learned_idle: LearnedIdle,
    pub(crate) names: Names,
    /// Taken out of rotation by the operator: no new requests, in-flight ones finish.
    draining: std::sync::atomic::AtomicBool,
    /// Connections opened to it, ever (for the metrics).
    opened: AtomicU64,
    /// Times it was ejected, ever (`HealthState::ejections` counts only the current run).
    pub(crate) ejected_total: AtomicU64,
}

/// An idle timeout learned from an upstream, and when: read by every checkout and release of a
/// connection, without a lock; written rarely, one writer at a time.
#[derive(Default)]
struct LearnedIdle {
    /// The timeout in nanoseconds; 0 while none was learned.
    nanos: AtomicU64,
    at: net::clock::AtomicInstant,
    write: Mutex<()>,
}

impl LearnedIdle {
    fn get(&self) -> Option<(Duration, Instant)> {
        match self.nanos.load(Ordering::Acquire) {
            0 => None,
            n => Some((Duration::from_nanos(n), self.at.load()?)),
        }
    }

    /// Under `write`. The time goes first: whoever sees the new timeout sees its time.
    fn set(&self, idle: Duration, at: Instant) {
        self.at.store(Some(at));
        let nanos = u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.nanos.store(nanos, Ordering::Release);
    }
}

/// What an endpoint looks like now, for the admin API and the status page.
#[derive(Clone, Debug)]
pub struct EndpointState {
    pub name: Arc<str>,
    /// Takes requests: active checks pass, not ejected, not drained.
    pub healthy: bool,
    /// Why it is out, in words, when it is.
    pub why_out: Option<String>,
    pub active_up: bool,
    pub ejected_for: Option<Duration>,
    pub ejections: u32,
    pub draining: bool,
    pub in_flight: usize,
    pub idle: usize,
    pub learned_idle: Option<Duration>,
    pub addrs: Vec<std::net::SocketAddr>,
}

/// The host of an endpoint written `host:port` (`[v6]:port`): the name TLS checks.
pub fn endpoint_host(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => name,
    }
}

impl Endpoint {
    /// True when the endpoint takes requests: its active checks pass, it is not ejected and
    /// not drained.
    pub fn healthy(&self) -> bool {
        self.published.up()
            && self
                .published
                .ejected_until()
                .is_none_or(|u| net::clock::now() >= u)
            && !self.is_draining()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Takes the endpoint out of rotation (`true`) or puts it back. Draining closes its idle
    /// connections; requests in flight finish.
    pub fn drain(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        if on {
            for pool in self.idle.iter() {
                pool.lock().unwrap().clear();
            }
        }
    }

    /// Its state now.
    pub fn state(&self) -> EndpointState {
        let now = Instant::now();
        let (active_up, ejected_for, ejections) = {
            let h = self.health.lock().unwrap();
            (
                h.active_up,
                h.ejected_until
                    .filter(|u| *u > now)
                    .map(|u| u.saturating_duration_since(now)),
                h.ejections(),
            )
        };
        let draining = self.is_draining();
        let why_out = if draining {
            Some("drained by the operator".to_string())
        } else if !active_up {
            Some("failing its active health checks".to_string())
        } else {
            ejected_for.map(|d| format!("ejected after failures, back in {}s", d.as_secs()))
        };
        let learned_idle = self.learned_idle.get().map(|(d, _)| d);
        EndpointState {
            name: self.name.clone(),
            healthy: why_out.is_none(),
            why_out,
            active_up,
            ejected_for,
            ejections,
            draining,
            in_flight: self.in_flight(),
            idle: self.idle_count(),
            learned_idle,
            addrs: self.names.addrs(),
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .finish()
    }
}

impl Endpoint {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Connections opened to this endpoint since it was configured.
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Times this endpoint was ejected since it was configured.
    pub fn ejections_total(&self) -> u64 {
        self.ejected_total.load(Ordering::Relaxed)
    }

    /// Idle connections held right now, in every worker's pool.
    pub fn idle_count(&self) -> usize {
        self.idle.iter().map(|p| p.lock().unwrap().len()).sum()
    }

    /// This worker's idle pool.
    fn pool(&self) -> &Mutex<VecDeque<Conn>> {
        &self.idle[WORKER.with(|w| w.get()) % self.idle.len()]
    }

    /// This worker's shared HTTP/2 connection.
    fn shared(&self) -> &Mutex<Option<Conn>> {
        &self.shared[WORKER.with(|w| w.get()) % self.shared.len()]
    }

    /// The idle timeout in force: the configured one, or a shorter learned one.
    pub fn idle_timeout(&self, configured: Duration) -> Duration {
        match self.learned_idle.get() {
            // A lesson expires: a crash can look like an early close, and the upstream's
            // settings change. What is still true is learned again from the next close.
            Some((l, at)) if net::clock::since(at) < LEARNED_IDLE_LIFETIME => l.min(configured),
            _ => configured,
        }
    }

    /// Keeps future idle connections below `upstream_idle`, the upstream's own idle limit.
    fn learn_idle(&self, upstream_idle: Duration, events: &Events, upstream: &str, why: &str) {
        let safe = (upstream_idle * 3 / 4).max(MIN_LEARNED_IDLE);
        let _one_at_a_time = self.learned_idle.write.lock().unwrap();
        let current = self
            .learned_idle
            .get()
            .filter(|(_, at)| at.elapsed() < LEARNED_IDLE_LIFETIME);
        if current.is_none_or(|(l, _)| safe < l) {
            self.learned_idle.set(safe, Instant::now());
            events(
                Level::Info,
                format!("pool idle timeout lowered to {safe:?}: {why}"),
                vec![
                    ("upstream", upstream.to_string()),
                    ("endpoint", self.name.to_string()),
                ],
            );
        }
    }
}

/// A named group of endpoints with its pools, health and limits.
pub struct Upstream {
    pub name: Arc<str>,
    pub endpoints: Vec<Arc<Endpoint>>,
    pub config: UpstreamConfig,
    connect: ConnectOptions,
    pub(crate) rr: AtomicUsize,
    pub(crate) swrr: Mutex<Vec<i64>>,
    in_flight: AtomicUsize,
    /// Held while checking the limits and taking a slot, so two requests never take the last one.
    admit: Mutex<()>,
    waiting: AtomicUsize,
    freed: tokio::sync::Notify,
    pub budget: RetryBudget,
    pub(crate) events: Events,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish()
    }
}

/// A connection checked out for one attempt, with the slot it holds.
pub struct Checkout {
    pub conn: Conn,
    pub endpoint: Arc<Endpoint>,
    /// How long the connection had been idle in the pool, when it was reused.
    pub idle_for: Option<Duration>,
    pub slot: Slot,
}

/// An in-flight slot on an endpoint and its upstream; released when dropped.
pub struct Slot {
    upstream: Arc<Upstream>,
    endpoint: Arc<Endpoint>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.upstream.freed.notify_one();
    }
}

impl Upstream {
    /// An upstream served by `workers` workers, each with its own pools.
    pub fn new(
        config: &UpstreamConfig,
        connect: ConnectOptions,
        resolver: net::resolver::Resolver,
        events: Events,
        workers: usize,
    ) -> Arc<Upstream> {
        let workers = workers.max(1);
        let endpoints = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, e)| {
                Arc::new(Endpoint {
                    name: Arc::from(e.address.as_str()),
                    weight: e.weight,
                    index,
                    idle: (0..workers).map(|_| Mutex::new(VecDeque::new())).collect(),
                    shared: (0..workers).map(|_| Mutex::new(None)).collect(),
                    in_flight: AtomicUsize::new(0),
                    health: Mutex::new(HealthState::default()),
                    published: health::Published::default(),
                    learned_idle: LearnedIdle::default(),
                    names: Names::new(&e.address, resolver.clone()),
                    draining: std::sync::atomic::AtomicBool::new(false),
                    opened: AtomicU64::new(0),
                    ejected_total: AtomicU64::new(0),
                })
            })
            .collect::<Vec<_>>();
        let n = endpoints.len();
        Arc::new(Upstream {
            name: Arc::from(config.name.as_str()),
            endpoints,
            config: config.clone(),
            connect,
            rr: AtomicUsize::new(0),
            swrr: Mutex::new(vec![0; n]),
            in_flight: AtomicUsize::new(0),
            admit: Mutex::new(()),
            waiting: AtomicUsize::new(0),
            freed: tokio::sync::Notify::new(),
            budget: RetryBudget::new(
                config.retry_budget_percent,
                config.retry_budget_min_per_second,
            ),
            events,
        })
    }

    /// Starts the background tasks: DNS refresh for named endpoints and active health checks.
    /// They stop when `stop` is cancelled.
    pub fn start(self: &Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        for e in &self.endpoints {
            if e.names.is_name() {
                tokio::spawn(dns::refresh(self.clone(), e.clone(), stop.clone()));
            }
        }
        if self.config.health.is_some() {
            for e in &self.endpoints {
                tokio::spawn(health::check_loop(self.clone(), e.clone(), stop.clone()));
            }
        }
    }

    /// Takes an in-flight slot on `endpoint`, waiting in the queue while the upstream or the
    /// endpoint is at its limit. `overloaded` when the queue is full or the wait too long.
    pub async fn acquire(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        deadline: Instant,
    ) -> Result<Slot, Failure> {
        let cfg = &self.config;
        let limited = cfg.max_in_flight > 0 || cfg.max_in_flight_per_endpoint > 0;
        // Takes a slot if one is free, checking and taking under one lock.
        let take = |up: &Upstream, ep: &Endpoint| {
            let _admit = if limited {
                Some(up.admit.lock().unwrap())
            } else {
                None
            };
            let fits = (cfg.max_in_flight == 0
                || up.in_flight.load(Ordering::Acquire) < cfg.max_in_flight)
                && (cfg.max_in_flight_per_endpoint == 0
                    || ep.in_flight.load(Ordering::Acquire) < cfg.max_in_flight_per_endpoint);
            if fits {
                up.in_flight.fetch_add(1, Ordering::AcqRel);
                ep.in_flight.fetch_add(1, Ordering::AcqRel);
            }
            fits
        };
        if !take(self, endpoint) {
            if self.waiting.load(Ordering::Acquire) >= cfg.queue_size {
                return Err(self.overloaded("the queue is full"));
            }
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let wait_until = (Instant::now() + cfg.queue_timeout).min(deadline);
            let mut ok = false;
            loop {
                let notified = self.freed.notified();
                if take(self, endpoint) {
                    ok = true;
                    break;
                }
                if Instant::now() >= wait_until
                    || tokio::time::timeout_at(wait_until.into(), notified)
                        .await
                        .is_err()
                {
                    break;
                }
            }
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            if !ok {
                return Err(
                    self.overloaded(&format!("no free slot within {:?}", cfg.queue_timeout))
                );
            }
        }
        Ok(Slot {
            upstream: self.clone(),
            endpoint: endpoint.clone(),
        })
    }

    fn overloaded(&self, why: &str) -> Failure {
        let mut f = Failure::new(Cause::Overloaded, Phase::Queue).with_detail(format!(
            "{why} (in flight: {}, limit {}; per endpoint limit {})",
            self.in_flight.load(Ordering::Relaxed),
            self.config.max_in_flight,
            self.config.max_in_flight_per_endpoint
        ));
        f.upstream = Some(self.name.to_string());
        f
    }

    /// A ready connection to `endpoint`: a checked idle one if there is one, else a new one.
    ///
    /// A `cautious` request (one that must not be sent twice) only reuses a connection idle for
    /// well under the upstream's idle limit, so that it cannot meet the keep-alive race; otherwise
    /// it gets a new connection and the idle ones stay for requests that may be retried.
    pub async fn checkout(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        slot: Slot,
        cautious: bool,
    ) -> Result<Checkout, Failure> {
        let configured_idle = self.config.idle_timeout;
        let fresh_enough = (endpoint.idle_timeout(configured_idle).min(CAUTIOUS_IDLE)) / 2;
        if self.connect.h2 {
            let shared = endpoint.shared().lock().unwrap().as_ref().and_then(|c| {
                if c.is_open() {
                    c.share()
                } else {
                    None
                }
            });
            if let Some(mut conn) = shared {
                if conn.ready(Duration::from_millis(50)).await {
                    return Ok(Checkout {
                        conn,
                        endpoint: endpoint.clone(),
                        idle_for: None,
                        slot,
                    });
                }
            }
        } else {
            let pool = endpoint.pool();
            loop {
                let next = {
                    let mut idle = pool.lock().unwrap();
                    let too_idle = idle
                        .front()
                        .is_some_and(|c| cautious && net::clock::since(c.last_used) > fresh_enough);
                    if too_idle {
                        None
                    } else {
                        idle.pop_front()
                    }
                };
                let Some(mut conn) = next else { break };
                let idle_for = net::clock::since(conn.last_used);
                if let Some(closed) = conn.closed_at() {
                    // The upstream closed it while idle: learn how long it keeps idle connections.
                    let lasted = closed.saturating_duration_since(conn.last_used);
                    endpoint.learn_idle(
                        lasted,
                        &self.events,
                        &self.name,
                        "the upstream closed idle connections early",
                    );
                    continue;
                }
                if idle_for >= endpoint.idle_timeout(configured_idle) {
                    continue;
                }
                // A connection whose upstream closed it while idle is never handed out. The
                // check costs no timer unless the last exchange is still being wound up.
                if conn.is_ready() || conn.ready(Duration::from_millis(5)).await {
                    return Ok(Checkout {
                        conn,
                        endpoint: endpoint.clone(),
                        idle_for: Some(idle_for),
                        slot,
                    });
                }
            }
        }
        // A new connection: boxed, so that the connect and handshake states do not make every
        // request's future larger.
        let conn = Box::pin(self.connect_new(endpoint)).await?;
        Ok(Checkout {
            conn,
            endpoint: endpoint.clone(),
            idle_for: None,
            slot,
        })
    }

    async fn connect_new(&self, endpoint: &Arc<Endpoint>) -> Result<Conn, Failure> {
        let addr = endpoint.names.pick().await.map_err(|mut f| {
            f.endpoint = Some(endpoint.name.to_string());
            f.upstream = Some(self.name.to_string());
            f
        })?;
        let host = endpoint_host(&endpoint.name);
        let conn = net::connect_host(addr, host, &self.connect)
            .await
            .map_err(|mut f| {
                f.upstream = Some(self.name.to_string());
                f.endpoint = Some(endpoint.name.to_string());
                f
            })?;
        endpoint.opened.fetch_add(1, Ordering::Relaxed);
        if self.connect.h2 {
            *endpoint.shared().lock().unwrap() = conn.share();
        }
        Ok(conn)
    }

    /// Gives a connection back after a complete exchange, for reuse. `keep_alive` is the
    /// upstream's `Keep-Alive: timeout=` in seconds, if it sent one.
    pub fn release(&self, endpoint: &Endpoint, conn: Conn, keep_alive: Option<u64>) {
        if let Some(secs) = keep_alive {
            endpoint.learn_idle(
                Duration::from_secs(secs),
                &self.events,
                &self.name,
                "the upstream announced Keep-Alive: timeout",
            );
        }
        if conn.is_h2() || !conn.is_open() || self.config.max_idle_per_endpoint == 0 {
            return;
        }
        let idle_timeout = endpoint.idle_timeout(self.config.idle_timeout);
        let mut idle = endpoint.pool().lock().unwrap();
        // The most recently used connection is the least likely to be closed by the upstream.
        // The least recently used one sits at the back; once it is idle too long it goes, so the
        // pool holds what traffic really uses, up to the cap.
        let now = conn.last_used;
        idle.push_front(conn);
        while idle
            .back()
            .is_some_and(|c| now.saturating_duration_since(c.last_used) >= idle_timeout)
        {
            idle.pop_back();
        }
        idle.truncate(self.config.max_idle_per_endpoint);
    }

    /// A reused connection failed before any response byte: the keep-alive race. The pool
    /// keeps future idle connections shorter than the idle time that lost the race.
    pub fn lost_race(&self, endpoint: &Endpoint, idle_for: Duration) {
        endpoint.learn_idle(
            idle_for,
            &self.events,
            &self.name,
            "a pooled connection was closed by the upstream as it was reused",
        );
        for pool in endpoint.idle.iter() {
            pool.lock()
                .unwrap()
                .retain(|c| c.last_used.elapsed() < idle_for * 3 / 4);
        }
    }

    /// Requests in flight to the whole upstream.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting in the queue for an in-flight slot now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Drops every idle connection to addresses a name no longer resolves to.
    pub(crate) fn forget_addresses(&self, endpoint: &Endpoint, keep: &[SocketAddr]) {
        for pool in endpoint.idle.iter() {
            pool.lock().unwrap().retain(|c| keep.contains(&c.addr));
        }
        for shared in endpoint.shared.iter() {
            let mut shared = shared.lock().unwrap();
            if shared.as_ref().is_some_and(|c| !keep.contains(&c.addr)) {
                *shared = None;
            }
        }
    }

    /// Re-resolves every named endpoint now.
    pub fn flush_dns(&self) {
        for e in &self.endpoints {
            e.names.flush();
        }
    }
}
