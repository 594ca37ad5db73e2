//! Endpoints named by host name: resolved before first use, re-resolved as the answer's TTL
//! expires (clamped between the upstream's `dns_min_ttl` and `dns_max_ttl`), and the last good
//! answer kept through resolver failures. Address changes apply to new connections only: a
//! request in flight keeps its connection, idle connections to addresses that left are dropped.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cause::{Failure, Level};
use net::resolver::Resolver;
use tokio_util::sync::CancellationToken;

use crate::{Endpoint, Upstream};

/// The addresses of one endpoint.
pub struct Names {
    host: String,
    port: u16,
    fixed: Option<SocketAddr>,
    resolver: Resolver,
    state: Mutex<State>,
    flush: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    addrs: Vec<SocketAddr>,
    next: usize,
    last_error: Option<Failure>,
}

impl Names {
    pub fn new(endpoint: &str, resolver: Resolver) -> Names {
        let fixed = endpoint.parse::<SocketAddr>().ok();
        let (host, port) = match endpoint.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().unwrap_or(80),
            ),
            None => (endpoint.to_string(), 80),
        };
        Names {
            host,
            port,
            fixed,
            resolver,
            state: Mutex::new(State::default()),
            flush: tokio::sync::Notify::new(),
        }
    }

    pub fn is_name(&self) -> bool {
        self.fixed.is_none()
    }

    /// The current addresses (empty for a name that never resolved).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        match self.fixed {
            Some(a) => vec![a],
            None => self.state.lock().unwrap().addrs.clone(),
        }
    }

    /// The address for the next connection, round-robin over the current answer.
    pub async fn pick(&self) -> Result<SocketAddr, Failure> {
        if let Some(a) = self.fixed {
            return Ok(a);
        }
        {
            let mut st = self.state.lock().unwrap();
            if !st.addrs.is_empty() {
                st.next = st.next.wrapping_add(1);
                return Ok(st.addrs[st.next % st.addrs.len()]);
            }
        }
        // Never resolved yet (or never successfully): ask now, so the first request need not
        // wait for the refresh task.
        // Boxed: the lookup's state is large and this path is rare, so it is kept out of the
        // future of every request.
        match Box::pin(self.resolver.lookup(&self.host)).await {
            Ok(answer) => {
                let addrs = self.to_addrs(&answer.addrs);
                let mut st = self.state.lock().unwrap();
                if st.addrs.is_empty() {
                    st.addrs = addrs;
                }
                Ok(st.addrs[0])
            }
            Err(f) => {
                self.state.lock().unwrap().last_error = Some(f.clone());
                Err(f)
            }
        }
    }

    fn to_addrs(&self, ips: &[IpAddr]) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = ips
            .iter()
            .map(|ip| SocketAddr::new(*ip, self.port))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Re-resolve now.
    pub fn flush(&self) {
        self.resolver.flush();
        self.flush.notify_one();
    }
}

/// Keeps `endpoint`'s addresses fresh until `stop`.
pub(crate) async fn refresh(
    upstream: Arc<Upstream>,
    endpoint: Arc<Endpoint>,
    stop: CancellationToken,
) {
    let names = &endpoint.names;
    let cfg = &upstream.config;
    let fields = || {
        vec![
            ("upstream", upstream.name.to_string()),
            ("endpoint", endpoint.name.to_string()),
        ]
    };
    loop {
        let wait = match names.resolver.lookup(&names.host).await {
            Ok(answer) => {
                let new = names.to_addrs(&answer.addrs);
                let old = {
                    let mut st = names.state.lock().unwrap();
                    st.last_error = None;
                    std::mem::replace(&mut st.addrs, new.clone())
                };
                if old != new {
                    let list = |v: &[SocketAddr]| {
                        v.iter()
                            .map(|a| a.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    let mut f = fields();
                    f.push(("from", list(&old)));
                    f.push(("to", list(&new)));
                    if !old.is_empty() {
                        (upstream.events)(
                            Level::Info,
                            format!("`{}` now resolves to other addresses", names.host),
                            f,
                        );
                        upstream.forget_addresses(&endpoint, &new);
                    }
                }
                answer.ttl.clamp(cfg.dns_min_ttl, cfg.dns_max_ttl)
            }
            Err(f) => {
                let has_answer = !names.state.lock().unwrap().addrs.is_empty();
                let message = if has_answer {
                    format!(
                        "resolving `{}` failed; keeping the last good answer",
                        names.host
                    )
                } else {
                    format!(
                        "resolving `{}` failed; requests to it fail with cause dns",
                        names.host
                    )
                };
                let mut fl = fields();
                fl.push(("cause", f.cause.to_string()));
                fl.push(("detail", f.detail.clone().unwrap_or_default()));
                (upstream.events)(Level::Warn, message, fl);
                names.state.lock().unwrap().last_error = Some(f);
                // Try again soon, but never faster than the minimum TTL.
                cfg.dns_min_ttl.max(Duration::from_millis(500))
            }
        };
        let until = Instant::now() + wait;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = names.flush.notified() => {}
            _ = tokio::time::sleep_until(until.into()) => {}
        }
    }
}
