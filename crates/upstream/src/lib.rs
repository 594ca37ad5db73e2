//! Upstreams: named groups of endpoints, each endpoint with its own pool of idle connections, and
//! the choice of endpoint for each attempt.
//!
//! A pooled connection is handed out only after it was checked: not closed by the upstream, not
//! idle for longer than the idle timeout, and ready for a request. Whether an attempt ran on a
//! reused connection is known exactly (`Conn::uses`), which the retry rules and the log rely on.
//! Connecting and classifying failures is `crates/net`'s job.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cause::Failure;
use net::{Conn, ConnectOptions};

/// Settings of one upstream, from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub connect: ConnectOptions,
    pub max_idle_per_endpoint: usize,
    pub idle_timeout: Duration,
}

/// One place an upstream can be reached, as written in the configuration.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port` as configured.
    pub name: String,
    idle: Mutex<VecDeque<Conn>>,
}

/// A named group of endpoints.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub endpoints: Vec<Arc<Endpoint>>,
    settings: Settings,
    next: AtomicUsize,
}

/// A connection checked out for one attempt, with where it goes.
pub struct Checkout {
    pub conn: Conn,
    pub endpoint: Arc<Endpoint>,
}

impl Upstream {
    pub fn new(name: &str, endpoints: &[String], settings: Settings) -> Upstream {
        Upstream {
            name: name.to_string(),
            endpoints: endpoints
                .iter()
                .map(|e| {
                    Arc::new(Endpoint {
                        name: e.clone(),
                        idle: Mutex::new(VecDeque::new()),
                    })
                })
                .collect(),
            settings,
            next: AtomicUsize::new(0),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The endpoint for the next attempt, round-robin.
    pub fn pick(&self) -> Arc<Endpoint> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[i].clone()
    }

    /// A ready connection to `endpoint`: a checked idle one if there is one, else a new one.
    pub async fn checkout(&self, endpoint: &Arc<Endpoint>) -> Result<Checkout, Failure> {
        while let Some(mut conn) = endpoint.take_idle(self.settings.idle_timeout) {
            // A connection whose upstream closed it while idle is never handed out.
            if conn.ready(Duration::from_millis(5)).await {
                return Ok(Checkout {
                    conn,
                    endpoint: endpoint.clone(),
                });
            }
        }
        let addr = self.address_of(endpoint).await?;
        let conn = net::connect(addr, &self.settings.connect)
            .await
            .map_err(|mut f| {
                f.upstream = Some(self.name.clone());
                f
            })?;
        Ok(Checkout {
            conn,
            endpoint: endpoint.clone(),
        })
    }

    async fn address_of(&self, endpoint: &Endpoint) -> Result<SocketAddr, Failure> {
        net::resolve(&endpoint.name)
            .await
            .map(|addrs| addrs[0])
            .map_err(|mut f| {
                f.endpoint = Some(endpoint.name.clone());
                f.upstream = Some(self.name.clone());
                f
            })
    }

    /// Gives a connection back after a complete exchange, for reuse.
    pub fn release(&self, endpoint: &Endpoint, conn: Conn) {
        if !conn.is_open() || self.settings.max_idle_per_endpoint == 0 {
            return;
        }
        let mut idle = endpoint.idle.lock().unwrap();
        // The most recently used connection is the least likely to be closed by the upstream.
        idle.push_front(conn);
        idle.truncate(self.settings.max_idle_per_endpoint);
    }
}

impl Endpoint {
    fn take_idle(&self, idle_timeout: Duration) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(conn) = idle.pop_front() {
            if conn.is_open() && conn.last_used.elapsed() < idle_timeout {
                return Some(conn);
            }
        }
        None
    }

    /// Idle connections held right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap().len()
    }
}
