//! The diagnosis: the evidence of every step weighed into ranked likely causes, each with what
//! supports it, the fixes to try and the hop at fault; the first one is the verdict.
//!
//! Evidence has three strengths. *Confirmed*: the doctor saw the failure itself (its own
//! connection failed, `--upstream` failed the same way, repeats failed) or a gateway said so in
//! `Proxy-Status`. *Likely*: a product's own error page, whose usual meaning is known.
//! *Possible*: the other usual meanings of that page. The fixes come from the same knowledge as
//! docs/causes.md (`Cause::operator_checks`), worded for the hop at fault.

use cause::{Cause, Phase, Side};
use serde::Serialize;

use crate::probe::Problem;
use crate::who::Role;
use crate::{Hop, Report};

/// How strong the evidence for a candidate is.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Possible,
    Likely,
    Confirmed,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Possible => "possible",
            Confidence::Likely => "likely",
            Confidence::Confirmed => "confirmed",
        }
    }
}

/// One likely cause.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// `None` when the failure is the application's own answer, not a transport failure.
    #[serde(serialize_with = "crate::display_opt")]
    pub cause: Option<Cause>,
    #[serde(serialize_with = "crate::display_opt")]
    pub phase: Option<Phase>,
    /// `dns`, `server`, `cdn`, `gateway` or `upstream`.
    pub hop: &'static str,
    pub status: Option<u16>,
    pub confidence: Confidence,
    pub title: String,
    pub evidence: Vec<String>,
    pub fixes: Vec<String>,
    #[serde(skip)]
    weight: u32,
}

/// The stable summary: the first candidate, or healthy.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// `null` when the URL is healthy.
    #[serde(serialize_with = "crate::display_opt")]
    pub cause: Option<Cause>,
    #[serde(serialize_with = "crate::display_opt")]
    pub phase: Option<Phase>,
    pub hop: Option<&'static str>,
    /// The status the URL answered with, when it answered.
    pub status: Option<u16>,
    pub healthy: bool,
    pub confidence: Option<Confidence>,
    pub summary: String,
}

impl Verdict {
    pub fn healthy() -> Verdict {
        Verdict {
            cause: None,
            phase: None,
            hop: None,
            status: None,
            healthy: true,
            confidence: None,
            summary: "healthy".into(),
        }
    }
}

struct Builder {
    out: Vec<Candidate>,
}

impl Builder {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        cause: Option<Cause>,
        phase: Option<Phase>,
        hop: &'static str,
        status: Option<u16>,
        confidence: Confidence,
        weight: u32,
        title: String,
        evidence: Vec<String>,
    ) {
        // The same cause at the same hop from two sources is one candidate with more evidence.
        if let Some(c) = self
            .out
            .iter_mut()
            .find(|c| c.cause.is_some() && c.cause == cause && c.hop == hop)
        {
            c.evidence.extend(evidence);
            if c.phase.is_none() {
                c.phase = phase;
            }
            if confidence > c.confidence || (confidence == c.confidence && weight > c.weight) {
                c.confidence = confidence;
                c.weight = weight;
                c.title = title;
            }
            return;
        }
        let fixes = fixes(cause, hop, status);
        self.out.push(Candidate {
            cause,
            phase,
            hop,
            status,
            confidence,
            title,
            evidence,
            fixes,
            weight,
        });
    }
}

fn problem_words(p: &Problem) -> String {
    let mut s = format!("{} {}", p.cause, crate::phase_words(p.phase));
    if let Some(d) = &p.detail {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

fn lower_first(s: &str) -> String {
    let s = s.strip_suffix('.').unwrap_or(s);
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn hop_of_side(cause: Cause, cdn: bool) -> &'static str {
    match cause.side() {
        Side::Upstream => "upstream",
        Side::Gateway if cdn => "cdn",
        Side::Gateway => "gateway",
        Side::Client => "client",
    }
}

/// Weighs the evidence in `report` into `report.diagnosis`, `report.verdict` and `report.hops`.
pub fn diagnose(report: &mut Report) {
    let mut b = Builder { out: Vec::new() };
    let main = &report.probe;
    let http = main.http.as_ref();
    let status = http.and_then(|h| h.status);
    let behind_gateway = report.who.as_ref().is_some_and(|w| !w.products.is_empty());

    // What the doctor's own connection saw.
    if let Some(p) = &main.problem {
        if status.is_none() {
            let (hop, title) = match p.phase {
                Phase::Resolve => (
                    "dns",
                    format!("the name {} does not resolve", report.url.host),
                ),
                Phase::Connect => (
                    "server",
                    format!("no connection to {}", report.url.host_header()),
                ),
                Phase::TlsHandshake => (
                    "server",
                    "the TLS handshake with the server fails".to_string(),
                ),
                _ => (
                    "server",
                    format!("the server gives no valid response ({})", p.cause),
                ),
            };
            let mut evidence = vec![format!("the doctor's own request: {}", problem_words(p))];
            if let Some(t) = &main.tls {
                if let Some(d) = &t.cert_problem_detail {
                    evidence.push(format!("certificate: {d}"));
                }
            }
            if let Some(dns) = &report.dns {
                if p.phase == Phase::Resolve {
                    evidence.push(format!(
                        "resolver {}: A {}, AAAA {}",
                        dns.resolver, dns.a, dns.aaaa
                    ));
                }
            }
            b.add(
                Some(p.cause),
                Some(p.phase),
                hop,
                None,
                Confidence::Confirmed,
                50,
                title,
                evidence,
            );
        } else {
            // The head came, the body broke: a gateway relays what its upstream cut short.
            let hop = if behind_gateway { "upstream" } else { "server" };
            let confidence = if behind_gateway {
                Confidence::Likely
            } else {
                Confidence::Confirmed
            };
            b.add(
                Some(p.cause),
                Some(p.phase),
                hop,
                status,
                confidence,
                40,
                "the response is cut short after its head".into(),
                vec![format!(
                    "status {} arrived, then {} after {} body bytes",
                    status.unwrap_or(0),
                    problem_words(p),
                    http.map(|h| h.body_bytes).unwrap_or(0)
                )],
            );
        }
    }

    // Some addresses work and others do not.
    let working = main.tcp.iter().any(|a| a.problem.is_none());
    for a in main.tcp.iter().filter(|a| a.problem.is_some()) {
        if !working {
            break;
        }
        let p = a.problem.as_ref().expect("filtered");
        b.add(
            Some(p.cause),
            Some(p.phase),
            "server",
            None,
            Confidence::Confirmed,
            20,
            format!(
                "the {} address {} does not work while another does",
                a.family,
                a.addr.ip()
            ),
            vec![format!("{}: {}", a.addr, problem_words(p))],
        );
    }

    // An error status: who made it, and what it says.
    if let (Some(status), Some(who)) = (status, report.who.as_ref()) {
        if status >= 400 {
            if let Some(m) = &who.error_maker {
                let ps = who.proxy_status.iter().find(|p| p.error.is_some());
                if m.direct {
                    let cause = m.hints[0];
                    let hop = if m.hop == "cdn" && cause.side() == Side::Upstream {
                        "upstream"
                    } else {
                        hop_of_side(cause, m.hop == "cdn")
                    };
                    b.add(
                        Some(cause),
                        ps.and_then(|p| p.phase),
                        hop,
                        Some(status),
                        Confidence::Confirmed,
                        60,
                        format!("{} reports: {}", m.by, lower_first(cause.summary())),
                        vec![m.evidence.clone()],
                    );
                } else if m.hop == "gateway" || m.hop == "cdn" {
                    if m.hints.is_empty() {
                        b.add(
                            None,
                            None,
                            "upstream",
                            Some(status),
                            Confidence::Likely,
                            30,
                            format!("{} made this {status} but its page does not say why", m.by),
                            vec![m.evidence.clone()],
                        );
                    }
                    for (i, cause) in m.hints.iter().enumerate() {
                        let confidence = if i == 0 {
                            Confidence::Likely
                        } else {
                            Confidence::Possible
                        };
                        b.add(
                            Some(*cause),
                            None,
                            "upstream",
                            Some(status),
                            confidence,
                            30 - i as u32,
                            format!(
                                "{} could not get a valid answer from the hop behind it",
                                m.by
                            ),
                            vec![format!(
                                "{} answered {status} with {}; that usually means {}",
                                m.by, m.evidence, cause
                            )],
                        );
                    }
                } else {
                    let hop = m.hop;
                    b.add(
                        None,
                        None,
                        hop,
                        Some(status),
                        Confidence::Confirmed,
                        45,
                        format!("the application answered {status} itself"),
                        vec![m.evidence.clone()],
                    );
                }
            }
        }
    }

    // Probing the upstream directly confirms or clears it.
    let url_failed = main.problem.is_some() || status.is_some_and(|s| s >= 500);
    if let Some(up) = &report.upstream {
        let evidence_head = format!("asked directly, the upstream {}", up.url);
        match (&up.problem, up.status()) {
            (Some(p), _) => b.add(
                Some(p.cause),
                Some(p.phase),
                "upstream",
                status,
                Confidence::Confirmed,
                55,
                format!(
                    "the upstream itself fails: {}",
                    lower_first(p.cause.summary())
                ),
                vec![format!("{evidence_head}: {}", problem_words(p))],
            ),
            (None, Some(s)) if s >= 500 => b.add(
                None,
                None,
                "upstream",
                Some(s),
                Confidence::Confirmed,
                52,
                format!("the upstream itself answers {s}"),
                vec![format!("{evidence_head} answers {s}")],
            ),
            (None, Some(s)) if url_failed => b.add(
                None,
                None,
                "gateway",
                status,
                Confidence::Likely,
                35,
                "the upstream answers when asked directly, but not through the gateway".into(),
                vec![format!("{evidence_head} answers {s}, while the URL fails")],
            ),
            _ => {}
        }
    }

    // The same request straight to the origin, bypassing what is in front.
    if let Some(origin) = &report.origin {
        if url_failed && !origin.failed() && origin.status().is_some() {
            let front = report
                .who
                .as_ref()
                .and_then(|w| w.products.first())
                .map(|p| {
                    if p.role == Role::Cdn {
                        "cdn"
                    } else {
                        "gateway"
                    }
                })
                .unwrap_or("cdn");
            b.add(
                None,
                None,
                front,
                status,
                Confidence::Likely,
                34,
                "the origin answers when asked directly: the failure is in front of it".into(),
                vec![format!(
                    "the same request sent to {} answered {}",
                    origin.given,
                    origin.status().unwrap_or(0)
                )],
            );
        } else if url_failed {
            if let Some(p) = &origin.problem {
                b.add(
                    Some(p.cause),
                    Some(p.phase),
                    "upstream",
                    status,
                    Confidence::Confirmed,
                    54,
                    format!(
                        "the origin itself fails: {}",
                        lower_first(p.cause.summary())
                    ),
                    vec![format!(
                        "sent straight to the origin {}: {}",
                        origin.given,
                        problem_words(p)
                    )],
                );
            }
        }
    }

    // Intermittency.
    if let Some(r) = &report.repeat {
        let tries: Vec<_> = r.fresh.iter().chain(&r.reused).collect();
        let failed: Vec<_> = tries.iter().filter(|t| t.failed()).collect();
        if !failed.is_empty() {
            let first = failed[0];
            let (cause, phase, hop) = match (&first.problem, &first.who) {
                (Some(p), _) => (
                    Some(p.cause),
                    Some(p.phase),
                    if behind_gateway { "upstream" } else { "server" },
                ),
                (None, Some(w)) => match &w.error_maker {
                    Some(m) if !m.hints.is_empty() => (
                        Some(m.hints[0]),
                        w.proxy_status.iter().find_map(|p| p.phase),
                        "upstream",
                    ),
                    Some(m) => (None, None, m.hop),
                    None => (None, None, "upstream"),
                },
                _ => (None, None, "upstream"),
            };
            let mut evidence = vec![format!(
                "{} of {} repeated requests failed ({} of {} on new connections, {} of {} on a reused one)",
                failed.len(),
                tries.len(),
                r.fresh_failed,
                r.fresh.len(),
                r.reused_failed,
                r.reused.len()
            )];
            if r.reused_failed > 0 && r.fresh_failed == 0 {
                evidence.push("only reused connections failed: the keep-alive race, the server closes idle connections as they are reused".into());
            }
            let title = if url_failed {
                "the failure repeats".to_string()
            } else {
                "intermittent: some requests fail".to_string()
            };
            b.add(
                cause,
                phase,
                hop,
                first.status.or(status),
                Confidence::Confirmed,
                if url_failed { 10 } else { 48 },
                title,
                evidence,
            );
        }
    }

    // Keep-alive: a second request on the same connection.
    if let Some(k) = &main.keepalive {
        if let Some(p) = &k.problem {
            // After an error response a server may well close the connection; only a healthy
            // one dropping it matters.
            if main.problem.is_none() && status.is_some_and(|s| s < 400) {
                b.add(
                    Some(p.cause),
                    Some(p.phase),
                    if behind_gateway { "upstream" } else { "server" },
                    status,
                    Confidence::Confirmed,
                    47,
                    "the second request on a kept-alive connection fails".into(),
                    vec![format!(
                        "first request fine, second on the same connection: {} (reused, {} response bytes)",
                        problem_words(p),
                        p.received
                    )],
                );
            }
        }
    }

    // Most confident first; among equals, the stronger source.
    b.out.sort_by(|x, y| {
        y.confidence
            .cmp(&x.confidence)
            .then(y.weight.cmp(&x.weight))
    });
    report.diagnosis = b.out;
    let healthy = report.diagnosis.is_empty();
    report.verdict = match report.diagnosis.first() {
        None => Verdict {
            status,
            ..Verdict::healthy()
        },
        Some(c) => Verdict {
            cause: c.cause,
            phase: c.phase,
            hop: Some(c.hop),
            status,
            healthy,
            confidence: Some(c.confidence),
            summary: c.title.clone(),
        },
    };
    report.hops = hops(report);
}

fn hops(report: &Report) -> Vec<Hop> {
    let failed = report.verdict.hop;
    let mut hops = vec![Hop {
        name: "you".into(),
        kind: "you",
        failed: false,
    }];
    if report.dns.is_some() {
        hops.push(Hop {
            name: format!("DNS ({})", report.url.host),
            kind: "dns",
            failed: failed == Some("dns"),
        });
    }
    let products = report
        .who
        .as_ref()
        .map(|w| w.products.clone())
        .unwrap_or_default();
    if products.is_empty() {
        hops.push(Hop {
            name: format!("server {}", report.url.host_header()),
            kind: "server",
            failed: failed == Some("server"),
        });
        if failed == Some("upstream") {
            hops.push(Hop {
                name: "upstream".into(),
                kind: "upstream",
                failed: true,
            });
        }
        return hops;
    }
    for p in &products {
        let kind = if p.role == Role::Cdn {
            "cdn"
        } else {
            "gateway"
        };
        hops.push(Hop {
            name: format!("{} ({kind})", p.name),
            kind,
            failed: failed == Some(kind) || (failed == Some("server") && hops.len() == 2),
        });
    }
    let name = match &report.upstream {
        Some(u) => format!("upstream {}", u.given),
        None => "upstream".into(),
    };
    hops.push(Hop {
        name,
        kind: "upstream",
        failed: failed == Some("upstream"),
    });
    hops
}

/// The fixes to try for `cause` at `hop`, in order.
fn fixes(cause: Option<Cause>, hop: &str, status: Option<u16>) -> Vec<String> {
    let Some(cause) = cause else {
        return match hop {
            "gateway" | "cdn" => vec![
                format!("the {hop}'s configuration for this route: the upstream address and port it forwards to"),
                format!("firewalls and security groups between the {hop} and the upstream"),
                format!("name resolution on the {hop} host, if the upstream is configured by name"),
                format!("the {hop}'s error log at the time of the request"),
            ],
            _ => vec![
                format!(
                    "the application's own logs for this request: it answered {} itself",
                    status.map(|s| s.to_string()).unwrap_or_else(|| "an error".into())
                ),
                "recent deploys, and the application's dependencies (database, other services)".into(),
            ],
        };
    };
    match (cause, hop) {
        (Cause::Dns, "dns") => vec![
            "the host name in the URL is spelled right".into(),
            "the DNS records exist: an A or AAAA record, or a CNAME to a name that has one".into(),
            "the resolver answers (a SERVFAIL or a timeout is the resolver's or the zone's problem, not the site's)".into(),
        ],
        (Cause::Timeout, "dns") => vec![
            "the resolver is reachable from here (firewall, VPN, /etc/resolv.conf)".into(),
            "another resolver answers: compare with --resolver".into(),
        ],
        (_, "server") => cause
            .operator_checks()
            .iter()
            .map(|c| {
                c.replace("upstream", "server")
                    .replace("the gateway's", "the client's")
                    .replace("the gateway uses", "clients use")
                    .replace("the gateway", "the client")
            })
            .collect(),
        _ => cause.operator_checks().iter().map(|c| c.to_string()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_has_fixes_at_every_hop() {
        for c in Cause::ALL {
            for hop in ["dns", "server", "gateway", "upstream", "cdn"] {
                assert!(!fixes(Some(*c), hop, Some(502)).is_empty(), "{c}@{hop}");
            }
        }
        assert!(!fixes(None, "upstream", Some(503)).is_empty());
    }
}
