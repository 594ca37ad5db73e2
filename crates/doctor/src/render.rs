//! The report for people (sections with pass/fail marks, a timing waterfall, the hop diagram,
//! the ranked diagnosis) and for machines (JSON, `verdict` first).
//!
//! Colour is the caller's choice (a terminal without `NO_COLOR`); the text is the same without it.

use std::fmt::Write;

use crate::probe::{Exchange, Probe, Problem};
use crate::{Report, SideProbe};

/// The report as pretty JSON.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report).expect("the report serialises")
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn pass(&self) -> String {
        self.paint("32", "[ok]  ")
    }
    fn fail(&self) -> String {
        self.paint("31;1", "[FAIL]")
    }
    fn warn(&self) -> String {
        self.paint("33", "[warn]")
    }
    fn skip(&self) -> String {
        self.paint("2", "[--]  ")
    }
    fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

fn problem_line(p: &Problem) -> String {
    let mut s = format!("{} {}", p.cause, crate::phase_words(p.phase));
    if let Some(d) = &p.detail {
        s.push_str(&format!(" ({d})"));
    }
    s
}

/// The human report.
pub fn human(report: &Report, color: bool) -> String {
    let st = Style { color };
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, "{} {}", st.bold("cleargate doctor"), report.url.url);
    let _ = writeln!(w);

    // 1. URL
    let u = &report.url;
    let mark = if u.slips.is_empty() {
        st.pass()
    } else {
        st.warn()
    };
    let _ = writeln!(
        w,
        "{mark} URL        {} host {}, port {}, path {}",
        u.scheme, u.host, u.port, u.path
    );
    for s in &u.slips {
        let _ = writeln!(w, "             ! {s}");
    }

    // 2. DNS
    match &report.dns {
        None => {
            let _ = writeln!(
                w,
                "{} DNS        {} is an address: no lookup",
                st.skip(),
                u.host
            );
        }
        Some(d) => {
            let mark = if d.problem.is_some() {
                st.fail()
            } else {
                st.pass()
            };
            let _ = writeln!(
                w,
                "{mark} DNS        {} via {}: A {}, AAAA {} in {} ms",
                d.name, d.resolver, d.a, d.aaaa, d.ms
            );
            for c in &d.cnames {
                let _ = writeln!(
                    w,
                    "             {} is an alias of {} (CNAME, ttl {}s)",
                    c.name, c.target, c.ttl
                );
            }
            for a in &d.addrs {
                let _ = writeln!(w, "             {} (ttl {}s)", a.ip, a.ttl);
            }
            if let Some(p) = &d.problem {
                let _ = writeln!(w, "             {}", problem_line(p));
            }
            for c in &d.compared {
                let verdict = if c.agrees { "agrees" } else { "DISAGREES" };
                let _ = writeln!(
                    w,
                    "             resolver {}: A {}, AAAA {}, {} {}",
                    c.resolver,
                    c.a,
                    c.aaaa,
                    join(&c.addrs),
                    verdict
                );
            }
        }
    }

    // 3-5.
    probe_sections(w, &st, &report.probe, "");

    // 6. Who
    if let Some(who) = &report.who {
        if who.products.is_empty() {
            let _ = writeln!(
                w,
                "{} Who        no gateway or CDN recognised{}",
                st.pass(),
                who.server_header
                    .as_ref()
                    .map(|s| format!(" (Server: {s})"))
                    .unwrap_or_default()
            );
        } else {
            let names: Vec<String> = who
                .products
                .iter()
                .map(|p| format!("{} ({})", p.name, role(p.role)))
                .collect();
            let _ = writeln!(w, "{} Who        {}", st.pass(), names.join(" -> "));
            for p in &who.products {
                let _ = writeln!(w, "             {}: {}", p.name, p.evidence);
            }
        }
        for ps in &who.proxy_status {
            let _ = writeln!(
                w,
                "             Proxy-Status from {}: error={}{}",
                ps.proxy,
                ps.error.as_deref().unwrap_or("-"),
                match (ps.cause, ps.phase) {
                    (Some(c), Some(p)) => format!(" -> {c} ({p})"),
                    _ => String::new(),
                }
            );
        }
        if let Some(m) = &who.error_maker {
            let _ = writeln!(
                w,
                "             the error was made by: {} ({})",
                m.by, m.evidence
            );
        }
    }

    // 7. Repeat
    if let Some(r) = &report.repeat {
        let bad = r.fresh_failed + r.reused_failed;
        let mark = if bad > 0 { st.fail() } else { st.pass() };
        let spread = match (r.min_ms, r.median_ms, r.max_ms) {
            (Some(a), Some(b), Some(c)) => format!("; min/median/max {a} / {b} / {c} ms"),
            _ => String::new(),
        };
        let _ = writeln!(
            w,
            "{mark} Repeat     {} of {} failed on new connections, {} of {} on a reused one{spread}",
            r.fresh_failed,
            r.fresh.len(),
            r.reused_failed,
            r.reused.len()
        );
        for t in r.fresh.iter().chain(&r.reused).filter(|t| t.failed()) {
            let what = match (&t.problem, t.status) {
                (Some(p), _) => problem_line(p),
                (None, Some(s)) => format!("status {s}"),
                _ => "failed".into(),
            };
            let kind = if t.reused { "reused" } else { "new" };
            let _ = writeln!(w, "             {kind} connection: {what}");
        }
        if let Some(n) = &r.note {
            let _ = writeln!(w, "             {n}");
        }
    }

    // 8. Origin, upstream, error log.
    for (label, side) in [("Origin", &report.origin), ("Upstream", &report.upstream)] {
        if let Some(s) = side {
            side_line(w, &st, label, s);
        }
    }
    if let Some(e) = &report.error_log {
        let mark = if e.available { st.pass() } else { st.skip() };
        let _ = writeln!(w, "{mark} Error log  {}: {}", e.file, e.note);
        for f in &e.findings {
            let _ = writeln!(w, "             {f}");
        }
    }

    // Waterfall.
    let t = &report.probe.timing;
    let _ = writeln!(w);
    let _ = writeln!(w, "{}", st.bold("Timing"));
    let rows = [
        ("dns", t.dns_ms),
        ("connect", t.connect_ms),
        ("tls", t.tls_ms),
        ("first byte", t.first_byte_ms),
        ("body", t.body_ms),
    ];
    let total: f64 = rows.iter().filter_map(|r| r.1).sum::<f64>().max(0.001);
    let mut offset = 0.0;
    for (name, v) in rows {
        match v {
            Some(v) => {
                let start = ((offset / total) * 40.0).round() as usize;
                let len = (((v / total) * 40.0).round() as usize)
                    .max(1)
                    .min(40 - start.min(39));
                let bar = format!("{}{}", " ".repeat(start.min(39)), "#".repeat(len));
                let _ = writeln!(w, "  {name:<11}|{bar:<40}| {v} ms");
                offset += v;
            }
            None => {
                let _ = writeln!(w, "  {name:<11}|{:<40}| -", "");
            }
        }
    }
    let _ = writeln!(
        w,
        "  {:<11} {:<40}  {} ms",
        "total",
        "",
        (total * 100.0).round() / 100.0
    );

    // Hops.
    let _ = writeln!(w);
    let _ = writeln!(w, "{}", st.bold("Hops"));
    let diagram: Vec<String> = report
        .hops
        .iter()
        .map(|h| {
            if h.failed {
                st.paint("31;1", &format!("[{}: FAILED]", h.name))
            } else {
                h.name.clone()
            }
        })
        .collect();
    let _ = writeln!(w, "  {}", diagram.join(" -> "));

    // Diagnosis.
    let _ = writeln!(w);
    let _ = writeln!(w, "{}", st.bold("Diagnosis"));
    if report.diagnosis.is_empty() {
        let _ = writeln!(w, "  no problem found");
    }
    for (i, c) in report.diagnosis.iter().enumerate() {
        let what = match (c.cause, c.phase) {
            (Some(cause), Some(phase)) => format!("{cause} ({phase})"),
            (Some(cause), None) => cause.to_string(),
            (None, _) => "no transport failure".into(),
        };
        let _ = writeln!(
            w,
            "  {}. {what} {} [{}]: {}",
            i + 1,
            hop_words(c.hop),
            c.confidence.as_str(),
            c.title
        );
        for e in &c.evidence {
            let _ = writeln!(w, "     evidence: {e}");
        }
        if i == 0 {
            for f in &c.fixes {
                let _ = writeln!(w, "     check: {f}");
            }
        }
    }
    if !report.notes.is_empty() {
        let _ = writeln!(w);
        let _ = writeln!(w, "{}", st.bold("Notes"));
        for n in &report.notes {
            let _ = writeln!(w, "  - {n}");
        }
    }
    let _ = writeln!(w);
    let v = &report.verdict;
    let line = if v.healthy {
        st.paint(
            "32;1",
            &format!(
                "Verdict: healthy{}",
                v.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
            ),
        )
    } else {
        st.paint(
            "31;1",
            &format!(
                "Verdict: {} {}{}",
                match (v.cause, v.phase) {
                    (Some(c), Some(p)) => format!("{c} ({p})"),
                    (Some(c), None) => c.to_string(),
                    (None, _) => "an error answered by the application".into(),
                },
                hop_words(v.hop.unwrap_or("?")),
                v.status.map(|s| format!(", HTTP {s}")).unwrap_or_default()
            ),
        )
    };
    let _ = writeln!(w, "{line}");
    o
}

fn hop_words(hop: &str) -> String {
    match hop {
        "dns" => "in DNS".into(),
        "cdn" => "at the CDN".into(),
        other => format!("at the {other}"),
    }
}

fn role(r: crate::who::Role) -> &'static str {
    match r {
        crate::who::Role::Cdn => "CDN",
        crate::who::Role::Gateway => "gateway",
    }
}

fn join<T: std::fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        return "no address".into();
    }
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn probe_sections(w: &mut String, st: &Style, p: &Probe, indent: &str) {
    if p.tcp.is_empty() {
        let _ = writeln!(
            w,
            "{indent}{} TCP        no address to connect to",
            st.skip()
        );
    }
    for a in &p.tcp {
        match &a.problem {
            None => {
                let _ = writeln!(
                    w,
                    "{indent}{} TCP        {} ({}) connected in {} ms",
                    st.pass(),
                    a.addr,
                    a.family,
                    a.ms
                );
            }
            Some(pr) => {
                let _ = writeln!(
                    w,
                    "{indent}{} TCP        {} ({}): {} after {} ms",
                    st.fail(),
                    a.addr,
                    a.family,
                    problem_line(pr),
                    a.ms
                );
            }
        }
    }
    if let Some(t) = &p.tls {
        let mark = if t.problem.is_some() {
            st.fail()
        } else {
            st.pass()
        };
        let _ = writeln!(
            w,
            "{indent}{mark} TLS        {} {}, ALPN {}, in {} ms",
            t.version.as_deref().unwrap_or("no version agreed"),
            t.cipher.as_deref().unwrap_or(""),
            t.alpn.as_deref().unwrap_or("none"),
            t.ms
        );
        for (i, c) in t.chain.iter().enumerate() {
            let _ = writeln!(
                w,
                "{indent}             cert {i}: {} (issuer {}), names {}, {} day(s) left",
                c.subject,
                c.issuer,
                if c.names.is_empty() {
                    "none".into()
                } else {
                    c.names.join(", ")
                },
                c.days_left
            );
        }
        if let Some(pr) = &t.problem {
            let _ = writeln!(w, "{indent}             {}", problem_line(pr));
        }
    }
    if let Some(h) = &p.http {
        exchange_line(w, st, h, "HTTP      ", indent);
    } else if p.problem.as_ref().is_some_and(|pr| !pr.phase.before_send()) {
        let _ = writeln!(
            w,
            "{indent}{} HTTP       {}",
            st.fail(),
            problem_line(p.problem.as_ref().unwrap())
        );
    }
    if let Some(k) = &p.keepalive {
        exchange_line(w, st, k, "Keep-alive", indent);
    } else if let Some(n) = &p.keepalive_note {
        let _ = writeln!(w, "{indent}{} Keep-alive {n}", st.skip());
    }
}

fn exchange_line(w: &mut String, st: &Style, h: &Exchange, label: &str, indent: &str) {
    let bad = h.problem.is_some() || h.status.is_some_and(|s| s >= 500);
    let mark = if bad {
        st.fail()
    } else if h.status.is_some_and(|s| s >= 400) {
        st.warn()
    } else {
        st.pass()
    };
    let first = h.request.lines().next().unwrap_or("");
    let reused = if h.reused { " (same connection)" } else { "" };
    match h.status {
        Some(s) => {
            let _ = writeln!(
                w,
                "{indent}{mark} {label} {first}{reused} -> {s} {}, {} body bytes{}, first byte in {} ms",
                h.reason.as_deref().unwrap_or(""),
                h.body_bytes,
                if h.body_complete { "" } else { " (incomplete)" },
                h.first_byte_ms.unwrap_or(0.0)
            );
        }
        None => {
            let _ = writeln!(w, "{indent}{mark} {label} {first}{reused} -> no response");
        }
    }
    if let Some(p) = &h.problem {
        let _ = writeln!(w, "{indent}             {}", problem_line(p));
    }
    if label.starts_with("HTTP") {
        for (n, v) in &h.headers {
            let v = if v.len() > 100 {
                format!(
                    "{}...",
                    &v[..v.char_indices().nth(97).map(|(i, _)| i).unwrap_or(v.len())]
                )
            } else {
                v.clone()
            };
            let _ = writeln!(w, "{indent}             {n}: {v}");
        }
    }
}

fn side_line(w: &mut String, st: &Style, label: &str, s: &SideProbe) {
    let mark = if s.failed() { st.fail() } else { st.pass() };
    let what = match (&s.problem, s.status()) {
        (Some(p), _) => problem_line(p),
        (None, Some(code)) => format!("answered {code}"),
        _ => "no answer".into(),
    };
    let _ = writeln!(w, "{mark} {label:<10} {}: {what}", s.url);
    if let Some(h) = s.probe.as_ref().and_then(|p| p.http.as_ref()) {
        if h.status.is_some() {
            let _ = writeln!(w, "             response head: {} bytes", h.head_bytes);
        }
    }
    if let Some(r) = &s.repeat {
        let _ = writeln!(
            w,
            "             asked {} more times on new connections: {} failed{}",
            r.tries,
            r.failed,
            if r.failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.failures.join(", "))
            }
        );
    }
    if let Some(t) = &s.tls_check {
        let _ = writeln!(w, "             TLS on the same port: {}", t.detail);
    }
    if let Some(who) = &s.who {
        if let Some(m) = &who.error_maker {
            let _ = writeln!(
                w,
                "             the error was made by: {} ({})",
                m.by, m.evidence
            );
        }
    }
}
