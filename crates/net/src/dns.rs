//! Name resolution with its details: A and AAAA answers with their TTLs, the CNAME chain, which
//! resolver was asked, how long it took, and a failure told apart as NXDOMAIN, SERVFAIL (or
//! another error code), no address, or no answer in time.
//!
//! The gateway's plain [`crate::resolve`] only needs addresses; the doctor needs the evidence.
//! Only this file looks at hickory's errors; a failure leaves it as a [`Failure`] (`dns` in
//! phase `resolve`, or `timeout` in phase `resolve` when the resolver did not answer).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use cause::{Cause, Failure, Phase};
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

/// One address in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAddr {
    pub ip: IpAddr,
    pub ttl: u32,
}

/// One link of a CNAME chain: `name` is an alias of `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsAlias {
    pub name: String,
    pub target: String,
    pub ttl: u32,
}

/// The outcome of one record type's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsOutcome {
    /// Addresses came back.
    Answer,
    /// The name exists but has no record of this type (NOERROR, empty answer).
    NoData,
    /// The name does not exist.
    NxDomain,
    /// The server answered with another error code (`SERVFAIL`, `REFUSED`...).
    ErrorCode(String),
    /// No answer in time.
    Timeout,
    /// The query could not be made or the answer not read.
    Error(String),
}

impl DnsOutcome {
    /// A stable lowercase name for reports.
    pub fn name(&self) -> String {
        match self {
            DnsOutcome::Answer => "answer".into(),
            DnsOutcome::NoData => "no_data".into(),
            DnsOutcome::NxDomain => "nxdomain".into(),
            DnsOutcome::ErrorCode(c) => c.to_ascii_lowercase(),
            DnsOutcome::Timeout => "timeout".into(),
            DnsOutcome::Error(_) => "error".into(),
        }
    }
}

/// Everything one lookup showed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsReport {
    /// The resolver asked: `IP:PORT`, or the system's first name server.
    pub resolver: String,
    /// True when the system configuration (resolv.conf, hosts file) was used.
    pub system: bool,
    pub a: DnsOutcome,
    pub aaaa: DnsOutcome,
    pub addrs: Vec<DnsAddr>,
    pub aliases: Vec<DnsAlias>,
    pub elapsed: Duration,
}

impl DnsReport {
    /// The failure this lookup amounts to, if no address came back.
    pub fn failure(&self, name: &str) -> Option<Failure> {
        if !self.addrs.is_empty() {
            return None;
        }
        let (cause, detail) = match (&self.a, &self.aaaa) {
            (DnsOutcome::NxDomain, _) | (_, DnsOutcome::NxDomain) => {
                (Cause::Dns, format!("{name}: no such name (NXDOMAIN)"))
            }
            (DnsOutcome::ErrorCode(c), _) | (_, DnsOutcome::ErrorCode(c)) => {
                (Cause::Dns, format!("{name}: the resolver answered {c}"))
            }
            (DnsOutcome::Timeout, _) | (_, DnsOutcome::Timeout) => (
                Cause::Timeout,
                format!(
                    "{name}: the resolver {} did not answer in time",
                    self.resolver
                ),
            ),
            (DnsOutcome::Error(e), _) | (_, DnsOutcome::Error(e)) => {
                (Cause::Dns, format!("{name}: {e}"))
            }
            _ => (Cause::Dns, format!("{name}: the name has no address")),
        };
        Some(Failure::new(cause, Phase::Resolve).with_detail(detail))
    }
}

/// Looks `name` up (A and AAAA at once), through `server` when given, else the system's
/// configuration; each query gets `timeout` and one attempt.
pub async fn lookup(name: &str, server: Option<SocketAddr>, timeout: Duration) -> DnsReport {
    let started = Instant::now();
    let (resolver, label, system) = match build(server, timeout) {
        Ok(r) => r,
        Err(e) => {
            let outcome = DnsOutcome::Error(e);
            return DnsReport {
                resolver: server
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "system".into()),
                system: server.is_none(),
                a: outcome.clone(),
                aaaa: outcome,
                addrs: Vec::new(),
                aliases: Vec::new(),
                elapsed: started.elapsed(),
            };
        }
    };
    // A dotted name is taken as complete, so that no search domain is tried behind the user's back.
    let query = if name.contains('.') && !name.ends_with('.') {
        format!("{name}.")
    } else {
        name.to_string()
    };
    let (a, aaaa) = tokio::join!(
        resolver.lookup(query.as_str(), RecordType::A),
        resolver.lookup(query.as_str(), RecordType::AAAA)
    );
    let mut report = DnsReport {
        resolver: label,
        system,
        a: DnsOutcome::Answer,
        aaaa: DnsOutcome::Answer,
        addrs: Vec::new(),
        aliases: Vec::new(),
        elapsed: started.elapsed(),
    };
    for (result, slot) in [(a, 0), (aaaa, 1)] {
        let outcome = match result {
            Ok(lookup) => {
                let mut any = false;
                for r in lookup.answers() {
                    match &r.data {
                        RData::A(a) => {
                            any = true;
                            report.addrs.push(DnsAddr {
                                ip: IpAddr::V4(a.0),
                                ttl: r.ttl,
                            });
                        }
                        RData::AAAA(a) => {
                            any = true;
                            report.addrs.push(DnsAddr {
                                ip: IpAddr::V6(a.0),
                                ttl: r.ttl,
                            });
                        }
                        RData::CNAME(c) => {
                            let alias = DnsAlias {
                                name: trim_dot(&r.name.to_string()),
                                target: trim_dot(&c.0.to_string()),
                                ttl: r.ttl,
                            };
                            if !report.aliases.contains(&alias) {
                                report.aliases.push(alias);
                            }
                        }
                        _ => {}
                    }
                }
                if any {
                    DnsOutcome::Answer
                } else {
                    DnsOutcome::NoData
                }
            }
            Err(e) => classify(&e),
        };
        if slot == 0 {
            report.a = outcome;
        } else {
            report.aaaa = outcome;
        }
    }
    report.elapsed = started.elapsed();
    report
}

fn trim_dot(s: &str) -> String {
    s.strip_suffix('.').unwrap_or(s).to_string()
}

fn classify(e: &NetError) -> DnsOutcome {
    use hickory_resolver::net::DnsError;
    if e.is_nx_domain() {
        return DnsOutcome::NxDomain;
    }
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NoError => DnsOutcome::NoData,
            ResponseCode::NXDomain => DnsOutcome::NxDomain,
            code => DnsOutcome::ErrorCode(code_name(code)),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => DnsOutcome::ErrorCode(code_name(*code)),
        NetError::Timeout => DnsOutcome::Timeout,
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => DnsOutcome::Timeout,
        other => {
            let text = other.to_string();
            // The name server pool folds per-server errors into messages; keep the timeout
            // distinguishable, since it points at the resolver rather than at the name.
            if text.contains("timed out") {
                DnsOutcome::Timeout
            } else {
                DnsOutcome::Error(text)
            }
        }
    }
}

fn code_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        other => format!("{other:?}").to_ascii_uppercase(),
    }
}

fn build(
    server: Option<SocketAddr>,
    timeout: Duration,
) -> Result<(TokioResolver, String, bool), String> {
    let mut opts = ResolverOpts::default();
    opts.timeout = timeout;
    opts.attempts = 1;
    opts.preserve_intermediates = true;
    opts.cache_size = 0;
    match server {
        Some(addr) => {
            let mut ns = NameServerConfig::udp(addr.ip());
            for c in &mut ns.connections {
                c.port = addr.port();
            }
            let mut config = ResolverConfig::default();
            config.add_name_server(ns);
            // The user asked this server; the hosts file would only get in the way.
            opts.use_hosts_file = ResolveHosts::Never;
            let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| format!("cannot set up the resolver: {e}"))?;
            Ok((resolver, addr.to_string(), false))
        }
        None => {
            let (config, system) = hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?;
            let label = config
                .name_servers()
                .first()
                .map(|ns| {
                    let port = ns.connections.first().map(|c| c.port).unwrap_or(53);
                    format!("{} (system)", SocketAddr::new(ns.ip, port))
                })
                .unwrap_or_else(|| "system".into());
            opts.ndots = system.ndots;
            let resolver = Resolver::builder_with_config(config, TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| format!("cannot set up the resolver: {e}"))?;
            Ok((resolver, label, true))
        }
    }
}
