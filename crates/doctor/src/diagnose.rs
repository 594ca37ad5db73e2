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

/// How much a piece of evidence weighs, from the weakest.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weight {
    /// An error page's usual meaning, or a log line from before the run.
    Weak,
    /// The gateway's own log lines written while the doctor ran, and what the doctor saw when
    /// it talked to the upstream (or the origin) directly.
    Strong,
    /// A `Proxy-Status` header, and the doctor's own connection to the URL.
    Direct,
}

impl Weight {
    /// The points one piece of evidence of this weight adds to (or takes from) a candidate.
    pub fn points(self) -> i32 {
        match self {
            Weight::Weak => 1,
            Weight::Strong => 4,
            Weight::Direct => 6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Weight::Weak => "weak",
            Weight::Strong => "strong",
            Weight::Direct => "direct",
        }
    }
}

/// One piece of evidence for (or against) a candidate.
#[derive(Clone, Debug, Serialize)]
pub struct Evidence {
    pub weight: Weight,
    /// Positive for the candidate, negative against it.
    pub points: i32,
    /// `own_request`, `proxy_status`, `error_page`, `error_log`, `upstream`, `origin`,
    /// `repeats` or `keepalive`.
    pub source: &'static str,
    pub text: String,
}

impl Evidence {
    fn new(weight: Weight, source: &'static str, text: impl Into<String>) -> Evidence {
        Evidence {
            weight,
            points: weight.points(),
            source,
            text: text.into(),
        }
    }

    fn against(weight: Weight, source: &'static str, text: impl Into<String>) -> Evidence {
        Evidence {
            points: -weight.points(),
            ..Evidence::new(weight, source, text)
        }
    }
}

impl std::fmt::Display for Evidence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.points < 0 {
            write!(
                f,
                "[{} {}, against] {}",
                self.weight.as_str(),
                self.points,
                self.text
            )
        } else {
            write!(
                f,
                "[{} +{}] {}",
                self.weight.as_str(),
                self.points,
                self.text
            )
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
    /// The sum of the evidence's points: candidates are ranked by it.
    pub score: i32,
    pub title: String,
    pub evidence: Vec<Evidence>,
    pub fixes: Vec<String>,
    /// Among candidates of equal score and confidence, the higher rank comes first.
    #[serde(skip)]
    rank: u32,
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
    /// True when the failure was covered for by the gateway (retried, ejected): clients did
    /// not see it, but the application behind is failing.
    pub absorbed: bool,
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
            absorbed: false,
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
        rank: u32,
        title: String,
        evidence: Vec<Evidence>,
    ) {
        // The same cause at the same hop from two sources is one candidate with more evidence.
        if let Some(c) = self
            .out
            .iter_mut()
            .find(|c| c.cause.is_some() && c.cause == cause && c.hop == hop)
        {
            c.evidence.extend(evidence);
            // The phase comes from the most direct source that names one: the doctor asking
            // the upstream itself says more exactly where it broke than a gateway's log.
            if c.phase.is_none() || (phase.is_some() && rank > c.rank) {
                c.phase = phase.or(c.phase);
            }
            if confidence > c.confidence || (confidence == c.confidence && rank > c.rank) {
                c.confidence = confidence;
                c.rank = rank;
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
            score: 0,
            title,
            evidence,
            fixes,
            rank,
        });
    }

    /// Adds evidence against every candidate `which` selects.
    fn oppose(&mut self, which: impl Fn(&Candidate) -> bool, evidence: Evidence) {
        for c in self.out.iter_mut().filter(|c| which(c)) {
            c.evidence.push(evidence.clone());
        }
    }
}

/// The usual limit on the size of a response head of the gateway named `product`, and the
/// setting that raises it.
pub fn head_limit(product: Option<&str>) -> (usize, &'static str) {
    match product {
        Some("nginx") => (
            4 * 1024,
            "nginx's proxy_buffer_size (4 or 8 KiB by default)",
        ),
        Some("HAProxy") => (
            15 * 1024,
            "HAProxy's tune.bufsize less tune.maxrewrite (16 KiB less 1 KiB by default)",
        ),
        Some("Envoy") => (
            60 * 1024,
            "Envoy's max_response_headers_kb (60 KiB by default)",
        ),
        Some("cleargate") => (
            64 * 1024,
            "cleargate's max_response_header_bytes (64 KiB by default)",
        ),
        Some("Apache") => (
            8 * 1024,
            "Apache's LimitRequestFieldSize for each line (8 KiB by default)",
        ),
        _ => (8 * 1024, "the 8 KiB many gateways allow by default"),
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
    let url_failed = main.problem.is_some() || status.is_some_and(|s| s >= 500);
    // Whether any of the doctor's requests through the URL failed: when none did, failures
    // found elsewhere were covered for.
    let client_saw = url_failed
        || report
            .repeat
            .as_ref()
            .is_some_and(|r| r.fresh_failed + r.reused_failed > 0);
    let gateway_made = report
        .who
        .as_ref()
        .and_then(|w| w.error_maker.as_ref())
        .is_some_and(|m| m.direct || m.hop == "gateway" || m.hop == "cdn");
    let gateway_name = report
        .who
        .as_ref()
        .and_then(|w| w.products.iter().find(|p| p.role != Role::Cdn))
        .map(|p| p.name);

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
            let mut evidence = vec![Evidence::new(
                Weight::Direct,
                "own_request",
                format!("the doctor's own request: {}", problem_words(p)),
            )];
            if let Some(t) = &main.tls {
                if let Some(d) = &t.cert_problem_detail {
                    evidence.push(Evidence::new(
                        Weight::Direct,
                        "own_request",
                        format!("certificate: {d}"),
                    ));
                }
            }
            if let Some(dns) = &report.dns {
                if p.phase == Phase::Resolve {
                    evidence.push(Evidence::new(
                        Weight::Direct,
                        "own_request",
                        format!("resolver {}: A {}, AAAA {}", dns.resolver, dns.a, dns.aaaa),
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
            // Behind a gateway the doctor sees the cut as the gateway passed it on, not the
            // upstream's own failure: it weighs less than asking the upstream.
            let (confidence, weight) = if behind_gateway {
                (Confidence::Likely, Weight::Strong)
            } else {
                (Confidence::Confirmed, Weight::Direct)
            };
            b.add(
                Some(p.cause),
                Some(p.phase),
                hop,
                status,
                confidence,
                40,
                "the response is cut short after its head".into(),
                vec![Evidence::new(
                    weight,
                    "own_request",
                    format!(
                        "status {} arrived, then {} after {} body bytes",
                        status.unwrap_or(0),
                        problem_words(p),
                        http.map(|h| h.body_bytes).unwrap_or(0)
                    ),
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
            vec![Evidence::new(
                Weight::Direct,
                "own_request",
                format!("{}: {}", a.addr, problem_words(p)),
            )],
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
                        vec![Evidence::new(
                            Weight::Direct,
                            "proxy_status",
                            m.evidence.clone(),
                        )],
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
                            vec![Evidence::new(
                                Weight::Weak,
                                "error_page",
                                m.evidence.clone(),
                            )],
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
                            vec![Evidence::new(
                                Weight::Weak,
                                "error_page",
                                format!(
                                    "{} answered {status} with {}; that usually means {}",
                                    m.by, m.evidence, cause
                                ),
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
                        vec![Evidence::new(
                            Weight::Direct,
                            "own_request",
                            m.evidence.clone(),
                        )],
                    );
                }
            }
        }
    }

    // The gateway's own log lines about the same moment.
    let upstream_given = report.upstream.as_ref().and_then(upstream_address);
    let up_exchange = report
        .upstream
        .as_ref()
        .filter(|u| u.problem.is_none())
        .and_then(|u| u.probe.as_ref()?.http.as_ref())
        .filter(|h| h.status.is_some());
    // A head over the gateway's limit, measured by asking the upstream directly.
    let (limit, limit_setting) = head_limit(gateway_name);
    let head_too_large = up_exchange.filter(|h| {
        url_failed && gateway_made && h.head_bytes as usize > limit && h.status.is_some()
    });
    // Too large for the gateway, or even for the doctor.
    let head_large = head_too_large.is_some()
        || report.upstream.as_ref().is_some_and(|u| {
            u.problem
                .as_ref()
                .is_some_and(|p| p.cause == Cause::ResponseTooLarge)
        });
    let mut log_groups: Vec<LogGroup> = Vec::new();
    if let Some(log) = &report.error_log {
        for e in &log.entries {
            if let Some(u) = &upstream_given {
                if !e.may_be_about(u) {
                    continue;
                }
            }
            // The client's side of a request says nothing of the upstream (and may well be the
            // doctor's own connection closing).
            if e.cause.side() == Side::Client {
                continue;
            }
            // HAProxy's PH is "an invalid or too large header": the measured size says which.
            let (cause, phase) =
                if head_large && e.cause == Cause::InvalidResponse && e.phase == Phase::ReadHead {
                    (Cause::ResponseTooLarge, Phase::ReadHead)
                } else {
                    (e.cause, e.phase)
                };
            match log_groups
                .iter_mut()
                .find(|g| g.cause == cause && g.phase == phase && g.during_run == e.during_run)
            {
                Some(g) => {
                    g.count += 1;
                    g.absorbed += e.absorbed as usize;
                    if !g.rules.contains(&e.rule) {
                        g.rules.push(e.rule.clone());
                    }
                }
                None => log_groups.push(LogGroup {
                    cause,
                    phase,
                    during_run: e.during_run,
                    count: 1,
                    before: 0,
                    absorbed: e.absorbed as usize,
                    rules: vec![e.rule.clone()],
                    remapped: cause != e.cause,
                }),
            }
        }
    }
    // Lines of a cause written before the run add nothing when the run itself produced some:
    // they are counted with them, not weighed again.
    let earlier: Vec<(Cause, Phase, usize)> = log_groups
        .iter()
        .filter(|g| !g.during_run)
        .map(|g| (g.cause, g.phase, g.count))
        .collect();
    let during: Vec<(Cause, Phase)> = log_groups
        .iter()
        .filter(|g| g.during_run)
        .map(|g| (g.cause, g.phase))
        .collect();
    log_groups.retain(|g| g.during_run || !during.contains(&(g.cause, g.phase)));
    for g in log_groups.iter_mut().filter(|g| g.during_run) {
        g.before = earlier
            .iter()
            .filter(|(c, p, _)| *c == g.cause && *p == g.phase)
            .map(|(_, _, n)| *n)
            .sum();
    }
    let mut absorbed = false;
    for g in &log_groups {
        let weight = if g.during_run {
            Weight::Strong
        } else {
            Weight::Weak
        };
        let when = if g.during_run {
            "during this run"
        } else {
            "in the minutes before this run"
        };
        let mut text = format!(
            "the gateway's error log, {when}: {} line(s) {}@{} [{}]",
            g.count,
            g.cause,
            g.phase,
            g.rules.join(", ")
        );
        if g.before > 0 {
            text.push_str(&format!(" (and {} like it just before the run)", g.before));
        }
        if g.absorbed > 0 {
            text.push_str(&format!(
                "; {} of them failures the gateway covered for (retried or ejected)",
                g.absorbed
            ));
        }
        if g.remapped {
            text.push_str(
                "; logged as an invalid header, and the head's measured size says it is too large",
            );
        }
        let hop = hop_of_side(g.cause, false);
        if !url_failed {
            // The URL answered, yet the gateway logged failures at the same moment: it covered
            // for them (a retry, another endpoint), or other requests failed. Either way the
            // application is failing underneath.
            // Only lines of the run itself: older ones may be about any other route.
            if !g.during_run {
                continue;
            }
            absorbed = true;
            b.add(
                Some(g.cause),
                Some(g.phase),
                hop,
                status,
                if g.during_run {
                    Confidence::Confirmed
                } else {
                    Confidence::Likely
                },
                49,
                if client_saw {
                    format!(
                        "the upstream fails, and the gateway covered for it only in part: {}",
                        lower_first(g.cause.summary())
                    )
                } else {
                    format!(
                        "the upstream fails, but the gateway covered for it: {} (clients did not see it)",
                        lower_first(g.cause.summary())
                    )
                },
                vec![Evidence::new(weight, "error_log", text)],
            );
        } else {
            b.add(
                Some(g.cause),
                Some(g.phase),
                hop,
                status,
                if g.during_run {
                    Confidence::Confirmed
                } else {
                    Confidence::Likely
                },
                // Below the doctor's own view of the upstream: a log line is second hand.
                if g.during_run { 53 } else { 25 },
                format!(
                    "the gateway's log names it: {}",
                    lower_first(g.cause.summary())
                ),
                vec![Evidence::new(weight, "error_log", text)],
            );
        }
    }

    // Probing the upstream directly confirms or clears it.
    let mut explained_by_upstream = false;
    if let Some(up) = &report.upstream {
        let evidence_head = format!("asked directly, the upstream {}", up.url);
        let covered = if client_saw {
            ""
        } else {
            " (the gateway covered for it: clients did not see it)"
        };
        match (&up.problem, up.status()) {
            (Some(p), _) => {
                absorbed |= !url_failed;
                b.add(
                    Some(p.cause),
                    Some(p.phase),
                    "upstream",
                    status,
                    Confidence::Confirmed,
                    55,
                    format!(
                        "the upstream itself fails: {}{covered}",
                        lower_first(p.cause.summary())
                    ),
                    vec![Evidence::new(
                        Weight::Strong,
                        "upstream",
                        format!("{evidence_head}: {}", problem_words(p)),
                    )],
                )
            }
            (None, Some(s)) if s >= 500 => b.add(
                None,
                None,
                "upstream",
                Some(s),
                Confidence::Confirmed,
                52,
                format!("the upstream itself answers {s}"),
                vec![Evidence::new(
                    Weight::Strong,
                    "upstream",
                    format!("{evidence_head} answers {s}"),
                )],
            ),
            _ => {}
        }
        // How often it fails, asked again and again.
        if let Some(r) = up.repeat.as_ref().filter(|r| r.failed > 0) {
            let first = up.problem.as_ref().map(|p| (p.cause, p.phase)).or_else(|| {
                r.failures.iter().find_map(|f| {
                    let (c, p) = f.split_once('@')?;
                    Some((c.parse().ok()?, p.parse().ok()?))
                })
            });
            let tries = r.tries + 1;
            let failed = r.failed + up.failed() as usize;
            let text = format!(
                "asked directly {tries} times, the upstream failed {failed} ({}%): {}",
                failed * 100 / tries,
                tally(&r.failures)
            );
            if let Some((cause, phase)) = first {
                absorbed |= !url_failed;
                b.add(
                    Some(cause),
                    Some(phase),
                    "upstream",
                    status,
                    Confidence::Confirmed,
                    54,
                    format!(
                        "the upstream fails {failed} time(s) in {tries}: {}{covered}",
                        lower_first(cause.summary())
                    ),
                    vec![Evidence::new(Weight::Strong, "upstream", text)],
                );
            }
        }
        // A head larger than the gateway takes.
        if let Some(h) = head_too_large {
            explained_by_upstream = true;
            b.add(
                Some(Cause::ResponseTooLarge),
                Some(Phase::ReadHead),
                "upstream",
                status,
                Confidence::Confirmed,
                57,
                "the upstream's response head is larger than the gateway accepts".into(),
                vec![Evidence::new(
                    Weight::Strong,
                    "upstream",
                    format!(
                        "{evidence_head} answers {} with a {}-byte response head, over {}",
                        h.status.unwrap_or(0),
                        h.head_bytes,
                        limit_setting
                    ),
                )],
            );
            b.oppose(
                |c| {
                    c.cause != Some(Cause::ResponseTooLarge)
                        && c.evidence.iter().all(|e| e.weight == Weight::Weak)
                },
                Evidence::against(
                    Weight::Weak,
                    "upstream",
                    format!(
                        "the upstream's {}-byte head explains the error better",
                        h.head_bytes
                    ),
                ),
            );
        }
        // A port that answers plain HTTP, behind a gateway that cannot get through to it: does
        // the gateway speak TLS to it?
        if let Some(check) = up.tls_check.as_ref().filter(|c| !c.speaks_tls) {
            let connect_like = |c: &Candidate| {
                matches!(c.phase, Some(Phase::Connect) | Some(Phase::TlsHandshake))
                    || (c.phase.is_none()
                        && matches!(
                            c.cause,
                            Some(Cause::Refused) | Some(Cause::Timeout) | Some(Cause::Tls)
                        ))
            };
            let tls_logged = log_groups
                .iter()
                .any(|g| g.phase == Phase::TlsHandshake || g.cause == Cause::Tls);
            // What the gateway said of its failure: its log or Proxy-Status when there is one,
            // the first meaning of its error page otherwise.
            let firm = |c: &Candidate| {
                c.evidence
                    .iter()
                    .any(|e| e.source != "upstream" && e.weight > Weight::Weak)
            };
            let any_firm = b.out.iter().any(|c| c.hop != "server" && firm(c));
            let gateway_said: Vec<String> = b
                .out
                .iter()
                .filter(|c| {
                    c.hop != "server"
                        && connect_like(c)
                        && if any_firm {
                            firm(c)
                        } else {
                            c.confidence == Confidence::Likely
                        }
                })
                .map(|c| match c.phase {
                    Some(p) => format!("{}@{}", c.cause.map(|x| x.as_str()).unwrap_or("error"), p),
                    None => c.cause.map(|x| x.as_str()).unwrap_or("error").to_string(),
                })
                .collect();
            if url_failed && head_too_large.is_none() && (tls_logged || !gateway_said.is_empty()) {
                explained_by_upstream = true;
                let said = gateway_said.join(", ");
                let mut evidence = vec![Evidence::new(
                    Weight::Strong,
                    "upstream",
                    format!(
                        "{evidence_head} answers {} in plain HTTP, and a TLS handshake with it fails: {}",
                        up.status().unwrap_or(0),
                        check.detail
                    ),
                )];
                let title = if tls_logged {
                    evidence.push(Evidence::new(
                        Weight::Strong,
                        "error_log",
                        "the gateway's log says its TLS handshake with the upstream failed",
                    ));
                    "the gateway speaks TLS to an upstream that speaks plain HTTP".to_string()
                } else {
                    evidence.push(Evidence::new(
                        Weight::Strong,
                        "upstream",
                        format!(
                            "the gateway reported a connection failure ({said}), but the upstream accepts connections: \
                             the likely cause is TLS, a protocol mismatch"
                        ),
                    ));
                    "protocol mismatch: the gateway likely speaks TLS to an upstream that speaks plain HTTP".to_string()
                };
                b.add(
                    Some(Cause::Tls),
                    Some(Phase::TlsHandshake),
                    "upstream",
                    status,
                    if tls_logged {
                        Confidence::Confirmed
                    } else {
                        Confidence::Likely
                    },
                    59,
                    title,
                    evidence,
                );
                b.oppose(
                    |c| c.cause != Some(Cause::Tls) && c.hop != "server" && connect_like(c),
                    Evidence::against(
                        Weight::Strong,
                        "upstream",
                        "the upstream accepts connections when asked directly; the handshake, not the connection, fails",
                    ),
                );
            }
        }
        if let (None, Some(s)) = (&up.problem, up.status()) {
            if url_failed && s < 500 && !explained_by_upstream {
                b.add(
                    None,
                    None,
                    "gateway",
                    status,
                    Confidence::Likely,
                    35,
                    "the upstream answers when asked directly, but not through the gateway".into(),
                    vec![Evidence::new(
                        Weight::Strong,
                        "upstream",
                        format!("{evidence_head} answers {s}, while the URL fails"),
                    )],
                );
                b.oppose(
                    |c| c.cause == Some(Cause::Refused) && c.hop == "upstream",
                    Evidence::against(
                        Weight::Strong,
                        "upstream",
                        "the upstream accepts connections when asked directly (from here)",
                    ),
                );
            }
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
                vec![Evidence::new(
                    Weight::Strong,
                    "origin",
                    format!(
                        "the same request sent to {} answered {}",
                        origin.given,
                        origin.status().unwrap_or(0)
                    ),
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
                    vec![Evidence::new(
                        Weight::Strong,
                        "origin",
                        format!(
                            "sent straight to the origin {}: {}",
                            origin.given,
                            problem_words(p)
                        ),
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
            // The repeats confirm that the failure repeats; its cause weighs as much as the
            // source that names it.
            let (cause, phase, hop, weight) = match (&first.problem, &first.who) {
                (Some(p), _) => (
                    Some(p.cause),
                    Some(p.phase),
                    if behind_gateway { "upstream" } else { "server" },
                    Weight::Direct,
                ),
                (None, Some(w)) => match &w.error_maker {
                    Some(m) if !m.hints.is_empty() => (
                        Some(m.hints[0]),
                        w.proxy_status.iter().find_map(|p| p.phase),
                        "upstream",
                        if m.direct {
                            Weight::Direct
                        } else {
                            Weight::Weak
                        },
                    ),
                    Some(m) => (None, None, m.hop, Weight::Direct),
                    None => (None, None, "upstream", Weight::Direct),
                },
                _ => (None, None, "upstream", Weight::Direct),
            };
            let mut first_evidence = Evidence::new(
                weight,
                "repeats",
                format!(
                    "{} of {} repeated requests failed ({} of {} on new connections, {} of {} on a reused one)",
                    failed.len(),
                    tries.len(),
                    r.fresh_failed,
                    r.fresh.len(),
                    r.reused_failed,
                    r.reused.len()
                ),
            );
            if weight == Weight::Weak {
                // A page that repeats says the failure repeats, not which of its meanings it is.
                first_evidence.points = 0;
            }
            let mut evidence = vec![first_evidence];
            if r.reused_failed > 0 && r.fresh_failed == 0 {
                evidence.push(Evidence::new(weight, "repeats", "only reused connections failed: the keep-alive race, the server closes idle connections as they are reused"));
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
                    vec![Evidence::new(Weight::Direct, "keepalive", format!(
                        "first request fine, second on the same connection: {} (reused, {} response bytes)",
                        problem_words(p),
                        p.received
                    ))],
                );
            }
        }
    }

    for c in &mut b.out {
        c.score = c.evidence.iter().map(|e| e.points).sum();
    }
    // Usual meanings that the rest of the evidence outweighs are ruled out, not listed.
    if b.out.iter().any(|c| c.score > 0) {
        let before = b.out.len();
        b.out.retain(|c| c.score > 0);
        let ruled_out = before - b.out.len();
        if ruled_out > 0 {
            report.notes.push(format!(
                "{ruled_out} other possible cause(s) ruled out by stronger evidence"
            ));
        }
    }
    // The most points first; among equals, the more confident, then the stronger source.
    b.out.sort_by(|x, y| {
        y.score
            .cmp(&x.score)
            .then(y.confidence.cmp(&x.confidence))
            .then(y.rank.cmp(&x.rank))
    });
    report.diagnosis = b.out;
    let healthy = report.diagnosis.is_empty();
    let absorbed = absorbed && !client_saw;
    if absorbed {
        report.notes.push(
            "the URL answered, but the gateway covered for failures of the upstream (retries, ejections): clients did not see them, the application is failing underneath".into(),
        );
    }
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
            absorbed,
            summary: c.title.clone(),
        },
    };
    report.hops = hops(report);
}

/// Log lines of one cause and phase.
struct LogGroup {
    cause: Cause,
    phase: Phase,
    during_run: bool,
    count: usize,
    /// Lines of the same cause and phase from before the run, when this group is of the run.
    before: usize,
    absorbed: usize,
    rules: Vec<String>,
    /// Read as another cause than the line's rule gives, in the light of other evidence.
    remapped: bool,
}

/// `HOST:PORT` of the upstream probed directly.
fn upstream_address(up: &crate::SideProbe) -> Option<String> {
    let rest = up.url.split_once("://")?.1;
    Some(rest.split('/').next()?.to_string())
}

/// "3 × reset@read_head, 1 × status 503".
fn tally(items: &[String]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for i in items {
        match counts.iter_mut().find(|(k, _)| k == i) {
            Some((_, n)) => *n += 1,
            None => counts.push((i, 1)),
        }
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} × {k}"))
        .collect::<Vec<_>>()
        .join(", ")
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
    use crate::errorlog::{ErrorLogStep, LogEntry};
    use crate::probe::{Exchange, Probe, Timing};
    use crate::{SideProbe, TlsCheck};

    fn exchange(status: u16, body: &str, head_bytes: u64) -> Exchange {
        Exchange {
            request: String::new(),
            reused: false,
            status: Some(status),
            reason: None,
            version: None,
            headers: vec![("content-type".into(), "text/html".into())],
            head_bytes,
            body_bytes: body.len() as u64,
            body_complete: true,
            first_byte_ms: Some(1.0),
            total_ms: 1.0,
            problem: None,
            body_start: body.as_bytes().to_vec(),
        }
    }

    fn probe_of(ex: Option<Exchange>, problem: Option<Problem>) -> Probe {
        Probe {
            tcp: Vec::new(),
            tls: None,
            http: ex,
            keepalive: None,
            keepalive_note: None,
            timing: Timing::default(),
            problem,
            used: Some("127.0.0.1:1".parse().unwrap()),
        }
    }

    /// A report of the URL answering `status` with `body`, nothing else asked yet.
    fn report(status: u16, body: &str) -> Report {
        let ex = exchange(status, body, 200);
        let who = crate::who::identify(&ex);
        Report {
            verdict: Verdict::healthy(),
            url: crate::url::parse("http://127.0.0.1:8080/").unwrap(),
            dns: None,
            probe: probe_of(Some(ex), None),
            who: Some(who),
            repeat: None,
            origin: None,
            upstream: None,
            error_log: None,
            hops: Vec::new(),
            diagnosis: Vec::new(),
            notes: Vec::new(),
            elapsed_ms: 0.0,
        }
    }

    fn upstream(ex: Option<Exchange>, problem: Option<Problem>) -> SideProbe {
        SideProbe {
            given: "127.0.0.1:3001".into(),
            url: "http://127.0.0.1:3001/".into(),
            dns: None,
            probe: Some(probe_of(ex, problem.clone())),
            who: None,
            problem,
            repeat: None,
            tls_check: None,
        }
    }

    fn problem(cause: Cause, phase: Phase) -> Problem {
        Problem::from(&cause::Failure::new(cause, phase))
    }

    fn log(entries: &[(Cause, Phase, &str, bool, bool)]) -> ErrorLogStep {
        let entries: Vec<LogEntry> = entries
            .iter()
            .map(|(cause, phase, rule, during_run, absorbed)| LogEntry {
                time: None,
                cause: *cause,
                phase: *phase,
                detail: String::new(),
                upstream: None,
                rule: rule.to_string(),
                status: None,
                during_run: *during_run,
                absorbed: *absorbed,
            })
            .collect();
        ErrorLogStep {
            file: "error.log".into(),
            available: true,
            note: String::new(),
            findings: entries.iter().map(LogEntry::text).collect(),
            entries,
        }
    }

    const HAPROXY_502: &str = "<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>";
    const HAPROXY_503: &str = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>";
    const NGINX_502: &str = "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";

    fn top(r: &Report) -> (Option<Cause>, Option<Phase>, Option<&'static str>) {
        (r.verdict.cause, r.verdict.phase, r.verdict.hop)
    }

    #[test]
    fn the_page_alone_gives_its_usual_meaning_as_likely() {
        let mut r = report(502, NGINX_502);
        diagnose(&mut r);
        assert_eq!(top(&r), (Some(Cause::Refused), None, Some("upstream")));
        assert_eq!(r.verdict.confidence, Some(Confidence::Likely));
        let first = &r.diagnosis[0].evidence[0];
        assert_eq!((first.weight, first.points), (Weight::Weak, 1));
    }

    #[test]
    fn a_large_head_measured_at_the_upstream_outweighs_the_page_and_reads_haproxys_ph() {
        let mut r = report(502, HAPROXY_502);
        r.error_log = Some(log(&[(
            Cause::InvalidResponse,
            Phase::ReadHead,
            "haproxy.PH",
            true,
            false,
        )]));
        r.upstream = Some(upstream(Some(exchange(200, "", 81_000)), None));
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (
                Some(Cause::ResponseTooLarge),
                Some(Phase::ReadHead),
                Some("upstream")
            ),
            "{:#?}",
            r.diagnosis
        );
        let c = &r.diagnosis[0];
        assert_eq!(c.confidence, Confidence::Confirmed);
        assert!(c.evidence.iter().any(|e| e.source == "error_log"
            && e.weight == Weight::Strong
            && e.text.contains("haproxy.PH")));
        assert!(c.evidence.iter().any(|e| e.text.contains("81000-byte")));
        // The page's first meaning, `closed`, is ruled out.
        assert!(r.diagnosis.iter().all(|c| c.cause != Some(Cause::Closed)));
        // A head under HAProxy's limit explains nothing.
        let mut r = report(502, HAPROXY_502);
        r.upstream = Some(upstream(Some(exchange(200, "", 9_000)), None));
        diagnose(&mut r);
        assert_ne!(r.verdict.cause, Some(Cause::ResponseTooLarge));
    }

    #[test]
    fn a_connect_failure_against_an_upstream_that_accepts_is_a_protocol_mismatch() {
        let mut r = report(503, HAPROXY_503);
        r.error_log = Some(log(&[(
            Cause::Timeout,
            Phase::Connect,
            "haproxy.sC",
            true,
            false,
        )]));
        let mut up = upstream(Some(exchange(200, "hello", 100)), None);
        up.tls_check = Some(TlsCheck {
            speaks_tls: false,
            detail: "the server speaks plain HTTP on this port".into(),
        });
        r.upstream = Some(up.clone());
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (
                Some(Cause::Tls),
                Some(Phase::TlsHandshake),
                Some("upstream")
            ),
            "{:#?}",
            r.diagnosis
        );
        assert!(r.diagnosis[0].evidence.iter().any(|e| e
            .text
            .contains("but the upstream accepts connections: the likely cause is TLS")));
        // The logged connect failure is kept, with the evidence against it.
        let logged = r
            .diagnosis
            .iter()
            .find(|c| c.cause == Some(Cause::Timeout) && c.phase == Some(Phase::Connect));
        if let Some(c) = logged {
            assert!(c.evidence.iter().any(|e| e.points < 0));
            assert!(c.score < r.diagnosis[0].score);
        }
        // A port that speaks TLS too is no mismatch.
        let mut r2 = report(503, HAPROXY_503);
        up.tls_check = Some(TlsCheck {
            speaks_tls: true,
            detail: "the handshake completes".into(),
        });
        r2.upstream = Some(up);
        diagnose(&mut r2);
        assert_ne!(r2.verdict.cause, Some(Cause::Tls));
    }

    #[test]
    fn failures_the_gateway_covered_for_are_a_problem_even_when_the_url_answers() {
        let mut r = report(200, "fine");
        r.who = Some(crate::who::Who::default());
        r.error_log = Some(log(&[
            (
                Cause::Reset,
                Phase::ReadHead,
                "cleargate.attempt_retried",
                true,
                true,
            ),
            // The client's own side says nothing of the upstream.
            (
                Cause::ClientAborted,
                Phase::ReadBody,
                "cleargate",
                true,
                false,
            ),
        ]));
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (Some(Cause::Reset), Some(Phase::ReadHead), Some("upstream"))
        );
        assert!(!r.verdict.healthy);
        assert!(r.verdict.absorbed);
        assert_eq!(r.exit_code(), 1);
        assert!(r.diagnosis[0].title.contains("clients did not see it"));
        assert_eq!(r.diagnosis.len(), 1, "{:#?}", r.diagnosis);
        // Lines from before the run, covered for or not, may be about any route: old news
        // for a URL that answers.
        let mut r = report(200, "fine");
        r.error_log = Some(log(&[
            (Cause::Reset, Phase::ReadHead, "nginx.reset", false, false),
            (
                Cause::Reset,
                Phase::ReadHead,
                "cleargate.attempt_retried",
                false,
                true,
            ),
        ]));
        diagnose(&mut r);
        assert!(r.verdict.healthy, "{:#?}", r.diagnosis);
    }

    #[test]
    fn the_upstream_asked_directly_outranks_a_log_that_cannot_tell_reset_from_close() {
        // HAProxy logs `SH` for both; the doctor's own request to the upstream sees a reset.
        let mut r = report(502, HAPROXY_502);
        r.error_log = Some(log(&[(
            Cause::Closed,
            Phase::ReadHead,
            "haproxy.SH",
            true,
            false,
        )]));
        r.upstream = Some(upstream(None, Some(problem(Cause::Reset, Phase::ReadHead))));
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (Some(Cause::Reset), Some(Phase::ReadHead), Some("upstream")),
            "{:#?}",
            r.diagnosis
        );
        // And for the phase: the upstream's own says where it broke.
        let mut r = report(502, HAPROXY_502);
        r.error_log = Some(log(&[(
            Cause::InvalidResponse,
            Phase::ReadHead,
            "haproxy.PH",
            true,
            false,
        )]));
        r.upstream = Some(upstream(
            None,
            Some(problem(Cause::InvalidResponse, Phase::ReadBody)),
        ));
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (
                Some(Cause::InvalidResponse),
                Some(Phase::ReadBody),
                Some("upstream")
            )
        );
    }

    #[test]
    fn repeated_direct_probes_measure_how_often_the_upstream_fails() {
        let mut r = report(200, "fine");
        let mut up = upstream(Some(exchange(200, "ok", 100)), None);
        up.repeat = Some(crate::SideRepeat {
            tries: 4,
            failed: 2,
            failures: vec!["reset@read_head".into(), "reset@read_head".into()],
        });
        r.upstream = Some(up);
        diagnose(&mut r);
        assert_eq!(
            top(&r),
            (Some(Cause::Reset), Some(Phase::ReadHead), Some("upstream"))
        );
        assert!(r.verdict.absorbed);
        assert!(r.diagnosis[0].evidence.iter().any(|e| e
            .text
            .contains("asked directly 5 times, the upstream failed 2 (40%)")));
    }

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
