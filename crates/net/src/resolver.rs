//! Name resolution for upstream endpoints, with the answer's TTL and errors classified as
//! causes: a name that does not exist or a server failure is `dns`, a resolver that does not answer
//! in time is `timeout` in phase `resolve`.
//!
//! Caching and re-resolution policy (TTL clamps, keeping the last good answer) belong to
//! `crates/upstream`; this module only asks and classifies.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cause::{Cause, Failure, Phase};
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

/// One answer: the addresses and how long they may be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    pub ttl: Duration,
}

/// A resolver asking either the system's name servers or the configured ones.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// `nameservers` empty means the system configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Resolver, String> {
        let mut builder = if nameservers.is_empty() {
            TokioResolver::builder_tokio()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        } else {
            let servers = nameservers
                .iter()
                .map(|addr| {
                    let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                    for c in &mut ns.connections {
                        c.port = addr.port();
                    }
                    ns
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), servers),
                TokioRuntimeProvider::default(),
            )
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        // The gateway keeps its own answers by TTL; a second cache would only hide changes.
        opts.cache_size = 0;
        builder
            .build()
            .map(|inner| Resolver { inner })
            .map_err(|e| format!("cannot build the resolver: {e}"))
    }

    /// Resolves `host` to addresses.
    pub async fn lookup(&self, host: &str) -> Result<Answer, Failure> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Answer {
                addrs: vec![ip],
                ttl: Duration::MAX,
            });
        }
        let started = Instant::now();
        match self.inner.lookup_ip(host).await {
            Ok(lookup) => {
                let addrs: Vec<IpAddr> = lookup.iter().collect();
                if addrs.is_empty() {
                    return Err(Failure::new(Cause::Dns, Phase::Resolve)
                        .with_detail(format!("`{host}` has no address")));
                }
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now());
                Ok(Answer { addrs, ttl })
            }
            Err(e) => {
                let text = e.to_string();
                let timed_out = text.to_ascii_lowercase().contains("timed out")
                    || text.to_ascii_lowercase().contains("timeout");
                let cause = if timed_out {
                    Cause::Timeout
                } else {
                    Cause::Dns
                };
                Err(Failure::new(cause, Phase::Resolve).with_detail(format!(
                    "resolving `{host}` failed after {:?}: {text}",
                    started.elapsed()
                )))
            }
        }
    }

    /// Forgets anything cached.
    pub fn flush(&self) {
        self.inner.clear_cache();
    }
}
