//! The schema walk: visits the spanned TOML tree, builds the typed [`Config`] and collects every
//! problem with its position. Each reader returns `None` after recording a problem, so one bad
//! value never hides the next.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::values::{parse_duration, parse_size};
use crate::*;

const TOP_KEYS: &[&str] = &[
    "listen",
    "listen_tls",
    "certificate",
    "acme",
    "admin",
    "cache",
    "server_name",
    "shutdown_timeout",
    "log",
    "limits",
    "error_pages",
    "upstream",
    "route",
    "resolver",
    "trusted_clients",
    "workers",
];
const LISTEN_KEYS: &[&str] = &["address", "redirect_https"];
const LISTEN_TLS_KEYS: &[&str] = &["address", "hsts"];
const CERTIFICATE_KEYS: &[&str] = &["cert", "key"];
const ACME_KEYS: &[&str] = &[
    "email",
    "directory",
    "domains",
    "storage",
    "ca",
    "renew_before",
    "challenge",
];
const ADMIN_KEYS: &[&str] = &["listen", "allow_remote"];
const LOG_KEYS: &[&str] = &["format", "destination"];
const LIMIT_KEYS: &[&str] = &[
    "max_request_header_bytes",
    "max_request_body_bytes",
    "request_header_timeout",
    "client_idle_timeout",
    "tunnel_idle_timeout",
    "max_response_header_bytes",
    "max_response_headers",
    "max_client_connections",
    "max_replay_body_bytes",
];
const UPSTREAM_KEYS: &[&str] = &[
    "endpoints",
    "connect_timeout",
    "send_timeout",
    "response_timeout",
    "body_timeout",
    "max_idle_per_endpoint",
    "idle_timeout",
    "balance",
    "hash_on",
    "protocol",
    "max_in_flight",
    "max_in_flight_per_endpoint",
    "queue_size",
    "queue_timeout",
    "restart_wait",
    "slow_start",
    "panic_threshold",
    "retry_budget_percent",
    "retry_budget_min_per_second",
    "dns_min_ttl",
    "dns_max_ttl",
    "health",
    "outlier",
    "tls",
];
const UPSTREAM_TLS_KEYS: &[&str] = &["ca", "sni", "verify", "client_cert", "client_key"];
const ENDPOINT_KEYS: &[&str] = &["address", "weight"];
const HEALTH_KEYS: &[&str] = &[
    "path", "tcp", "interval", "timeout", "expect", "rise", "fall",
];
const OUTLIER_KEYS: &[&str] = &[
    "consecutive_failures",
    "consecutive_5xx",
    "base_ejection",
    "max_ejection",
    "max_ejected_percent",
];
const ROUTE_KEYS: &[&str] = &["host", "path", "upstream", "retry", "cache"];
const CACHE_KEYS: &[&str] = &["size", "max_object", "stale_if_error"];
const RETRY_KEYS: &[&str] = &["attempts", "per_try_timeout", "deadline", "on"];
const RESOLVER_KEYS: &[&str] = &["nameservers", "timeout"];

type Value<'i> = Spanned<DeValue<'i>>;

struct Walker<'a> {
    src: &'a str,
    file: &'a str,
    /// The configuration file's folder: relative paths start there.
    base: &'a Path,
    problems: Vec<Problem>,
}

impl Walker<'_> {
    fn place(&self, span: Range<usize>) -> Place {
        let (line, column) = line_column(self.src, span.start);
        Place {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    fn problem(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = line_column(self.src, span.start);
        self.problems.push(Problem {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        });
    }

    /// Reports keys outside `allowed`, with a suggestion when one is close.
    fn known_keys(&mut self, table: &DeTable, allowed: &[&str], what: &str) {
        for (key, _) in table.iter() {
            let name: &str = key.get_ref();
            if allowed.contains(&name) {
                continue;
            }
            let hint = match closest(name, allowed) {
                Some(s) => format!("; did you mean `{s}`?"),
                None => format!("; known keys: {}", allowed.join(", ")),
            };
            self.problem(key.span(), format!("unknown key `{name}` in {what}{hint}"));
        }
    }

    fn table<'t, 'i>(&mut self, v: &'t Value<'i>, what: &str) -> Option<&'t DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.problem(
                    v.span(),
                    format!("{what} must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn string<'t>(&mut self, v: &'t Value, what: &str) -> Option<&'t str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            other => {
                self.problem(
                    v.span(),
                    format!("{what} must be a string, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn duration(&mut self, v: &Value, what: &str) -> Option<Duration> {
        let s = self.string(v, what)?;
        match parse_duration(s) {
            Ok(d) if d.is_zero() => {
                self.problem(v.span(), format!("{what} must be longer than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(v.span(), format!("{what}: {e}"));
                None
            }
        }
    }

    fn size(&mut self, v: &Value, what: &str) -> Option<u64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) if n > 0 => Ok(n as u64),
                _ => Err(format!("{what} must be a positive number of bytes")),
            },
            DeValue::String(s) => parse_size(s).map_err(|e| format!("{what}: {e}")),
            other => Err(format!(
                "{what} must be a size such as \"64KiB\" or a number of bytes, found {}",
                other.type_str()
            )),
        };
        match n {
            Ok(0) => {
                self.problem(v.span(), format!("{what} must be larger than zero"));
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                self.problem(v.span(), e);
                None
            }
        }
    }

    fn integer(
        &mut self,
        v: &Value,
        what: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let n = v
            .get_ref()
            .as_integer()
            .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok());
        match n {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.problem(
                    v.span(),
                    format!(
                        "{what} must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value, what: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.problem(
                    v.span(),
                    format!("{what} must be true or false, found {}", other.type_str()),
                );
                None
            }
        }
    }

    fn array<'t, 'i>(&mut self, v: &'t Value<'i>, what: &str) -> Option<&'t [Value<'i>]> {
        match v.get_ref() {
            DeValue::Array(a) => Some(a),
            other => {
                self.problem(
                    v.span(),
                    format!("{what} must be an array, found {}", other.type_str()),
                );
                None
            }
        }
    }
}

/// Reads one entry of `listen` or `listen_tls`: an address, or a table with an `address` and
/// the listener's options.
fn listener(w: &mut Walker, item: &Value, key: &str, tls: bool) -> Option<ListenerConfig> {
    let (addr_value, options) = match item.get_ref() {
        DeValue::Table(t) => {
            w.known_keys(
                t,
                if tls { LISTEN_TLS_KEYS } else { LISTEN_KEYS },
                &format!("a `{key}` entry"),
            );
            match t.get("address") {
                Some(v) => (v, Some(t)),
                None => {
                    w.problem(
                        item.span(),
                        format!("a `{key}` entry needs an `address` such as \"127.0.0.1:8080\""),
                    );
                    return None;
                }
            }
        }
        _ => (item, None),
    };
    let s = w.string(addr_value, &format!("a `{key}` address"))?;
    let addr = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            w.problem(
                addr_value.span(),
                format!("cannot read `{s}` as a listen address; write IP:PORT such as \"127.0.0.1:8080\" or \"[::1]:8080\""),
            );
            return None;
        }
    };
    let mut l = ListenerConfig {
        addr,
        tls,
        redirect_https: false,
        hsts: None,
    };
    if let Some(t) = options {
        if let Some(b) = t
            .get("redirect_https")
            .and_then(|v| w.boolean(v, "`redirect_https`"))
        {
            l.redirect_https = b;
        }
        if let Some(v) = t.get("hsts") {
            match v.get_ref() {
                DeValue::Boolean(true) => l.hsts = Some(DEFAULT_HSTS.to_string()),
                DeValue::Boolean(false) => {}
                DeValue::String(h) => {
                    let digits = h
                        .strip_prefix("max-age=")
                        .map(|r| r.split(';').next().unwrap_or("").trim());
                    if digits
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                        && h.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                    {
                        l.hsts = Some(h.to_string());
                    } else {
                        w.problem(v.span(), format!("`hsts` must be true or a header value such as \"max-age=31536000; includeSubDomains\", found `{h}`"));
                    }
                }
                other => w.problem(
                    v.span(),
                    format!(
                        "`hsts` must be true or a header value, found {}",
                        other.type_str()
                    ),
                ),
            }
        }
    }
    Some(l)
}

/// Reads `[acme]`.
fn acme(w: &mut Walker, t: &DeTable, span: Range<usize>, plain: bool) -> Option<AcmeConfig> {
    w.known_keys(t, ACME_KEYS, "[acme]");
    let email = t.get("email").and_then(|v| {
        let s = w.string(v, "`email`")?;
        if s.contains('@') && !s.contains(char::is_whitespace) {
            Some(s.to_string())
        } else {
            w.problem(
                v.span(),
                format!("`email` must be an address such as \"ops@example.com\", found `{s}`"),
            );
            None
        }
    });
    let directory = match t.get("directory") {
        Some(v) => {
            let s = w.string(v, "`directory`")?;
            if !s.starts_with("https://") {
                w.problem(
                    v.span(),
                    format!("`directory` must be an https:// URL, found `{s}`"),
                );
                return None;
            }
            s.to_string()
        }
        None => LETS_ENCRYPT.to_string(),
    };
    let mut domains = Vec::new();
    match t.get("domains") {
        Some(v) => {
            for item in w.array(v, "`domains`").unwrap_or(&[]) {
                let Some(d) = w.string(item, "a domain") else {
                    continue;
                };
                let d = d.trim().to_ascii_lowercase();
                let ok = !d.is_empty()
                    && d.len() <= 253
                    && d.split('.').count() >= 2
                    && d.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if ok {
                    domains.push(d);
                } else {
                    w.problem(item.span(), format!("`{d}` is not a domain name an ACME server can issue for (no wildcards: they need DNS-01)"));
                }
            }
            if domains.is_empty() {
                w.problem(
                    v.span(),
                    "`domains` is empty; name the domains of the certificate",
                );
                return None;
            }
        }
        None => {
            w.problem(
                span,
                "[acme] has no `domains`; name the domains of the certificate",
            );
            return None;
        }
    }
    let storage = match t.get("storage") {
        Some(v) => w.base.join(w.string(v, "`storage`")?),
        None => w.base.join("acme"),
    };
    let ca = match t.get("ca") {
        Some(v) => Some(w.base.join(w.string(v, "`ca`")?)),
        None => None,
    };
    let renew_before = match t.get("renew_before") {
        Some(v) => w.duration(v, "`renew_before`")?,
        None => Duration::from_secs(30 * 86_400),
    };
    // HTTP-01 needs a plain listener; without one, TLS-ALPN-01 on the TLS listener.
    let challenge = match t.get("challenge") {
        Some(v) => match w.string(v, "`challenge`")? {
            "http-01" => AcmeChallenge::Http01,
            "tls-alpn-01" => AcmeChallenge::TlsAlpn01,
            other => {
                w.problem(
                    v.span(),
                    format!("unknown challenge `{other}`; use \"http-01\" or \"tls-alpn-01\""),
                );
                return None;
            }
        },
        None if plain => AcmeChallenge::Http01,
        None => AcmeChallenge::TlsAlpn01,
    };
    Some(AcmeConfig {
        email,
        directory,
        domains,
        storage,
        ca,
        renew_before,
        challenge,
        at: w.place(span),
    })
}

/// Reads `[upstream.NAME.tls]`.
fn upstream_tls(w: &mut Walker, t: &DeTable, span: Range<usize>, what: &str) -> UpstreamTlsConfig {
    w.known_keys(t, UPSTREAM_TLS_KEYS, &format!("{what}.tls"));
    let mut file = |name: &str| {
        let v = t.get(name)?;
        let p = w.string(v, &format!("`{name}`"))?;
        if p.is_empty() {
            w.problem(v.span(), format!("`{name}` is empty; give a PEM file"));
            return None;
        }
        Some((w.base.join(p), w.place(v.span())))
    };
    let ca = file("ca");
    let client_cert = file("client_cert");
    let client_key = file("client_key");
    let sni = t.get("sni").and_then(|v| {
        let s = w.string(v, "`sni`")?;
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if ok {
            Some(s.to_ascii_lowercase())
        } else {
            w.problem(
                v.span(),
                format!("`sni` must be a DNS name such as \"api.internal\", found `{s}`"),
            );
            None
        }
    });
    let verify = t
        .get("verify")
        .and_then(|v| w.boolean(v, "`verify`"))
        .unwrap_or(true);
    if client_cert.is_some() != client_key.is_some() {
        w.problem(
            span.clone(),
            "mutual TLS needs both `client_cert` and `client_key`",
        );
    }
    UpstreamTlsConfig {
        ca,
        sni,
        verify,
        client_cert,
        client_key,
        at: w.place(span),
    }
}

/// Reads one `[upstream.NAME]` table.
fn upstream(
    w: &mut Walker,
    name: String,
    key_span: Range<usize>,
    u: &DeTable,
    what: &str,
) -> UpstreamConfig {
    let mut up = UpstreamConfig::new(&name);
    match u.get("endpoints") {
        Some(ev) => {
            if let Some(items) = w.array(ev, "`endpoints`") {
                if items.is_empty() {
                    w.problem(
                        ev.span(),
                        format!(
                            "{what} has an empty endpoint list; add at least one \"host:port\""
                        ),
                    );
                }
                for item in items {
                    let (address, weight, span) = match item.get_ref() {
                        DeValue::String(s) => (s.to_string(), 1, item.span()),
                        DeValue::Table(t) => {
                            w.known_keys(t, ENDPOINT_KEYS, "an endpoint");
                            let Some(a) = t.get("address") else {
                                w.problem(item.span(), "an endpoint table needs `address`");
                                continue;
                            };
                            let Some(s) = w.string(a, "`address`") else {
                                continue;
                            };
                            let weight = t
                                .get("weight")
                                .and_then(|v| w.integer(v, "`weight`", 1..=1000))
                                .unwrap_or(1);
                            (s.to_string(), weight as u32, a.span())
                        }
                        other => {
                            w.problem(
                                item.span(),
                                format!("an endpoint must be \"host:port\" or {{ address = \"host:port\", weight = N }}, found {}", other.type_str()),
                            );
                            continue;
                        }
                    };
                    if let Err(e) = check_endpoint(&address) {
                        w.problem(span, e);
                    } else if up.endpoints.iter().any(|x| x.address == address) {
                        w.problem(span, format!("duplicate endpoint `{address}` in {what}"));
                    } else {
                        up.endpoints.push(EndpointConfig { address, weight });
                    }
                }
            }
        }
        None => w.problem(
            key_span.clone(),
            format!("{what} has no `endpoints`; add endpoints = [\"127.0.0.1:3000\"]"),
        ),
    }
    let tm = &mut up.timeouts;
    for (k, slot) in [
        ("connect_timeout", &mut tm.connect),
        ("send_timeout", &mut tm.send),
        ("response_timeout", &mut tm.response),
        ("body_timeout", &mut tm.body_idle),
        ("idle_timeout", &mut up.idle_timeout),
        ("queue_timeout", &mut up.queue_timeout),
        ("restart_wait", &mut up.restart_wait),
        ("dns_min_ttl", &mut up.dns_min_ttl),
        ("dns_max_ttl", &mut up.dns_max_ttl),
    ] {
        if let Some(d) = u.get(k).and_then(|v| w.duration(v, &format!("`{k}`"))) {
            *slot = d;
        }
    }
    if let Some(v) = u.get("slow_start") {
        // "0s" turns slow start off, so zero is allowed here.
        if let Some(s) = w.string(v, "`slow_start`") {
            match parse_duration(s) {
                Ok(d) => up.slow_start = d,
                Err(e) => w.problem(v.span(), format!("`slow_start`: {e}")),
            }
        }
    }
    if up.dns_min_ttl > up.dns_max_ttl {
        let span = u.get("dns_min_ttl").map_or(key_span.clone(), |v| v.span());
        w.problem(span, "`dns_min_ttl` is larger than `dns_max_ttl`");
    }
    for (k, slot, range) in [
        (
            "max_idle_per_endpoint",
            &mut up.max_idle_per_endpoint,
            0..=100_000,
        ),
        ("max_in_flight", &mut up.max_in_flight, 0..=10_000_000),
        (
            "max_in_flight_per_endpoint",
            &mut up.max_in_flight_per_endpoint,
            0..=10_000_000,
        ),
        ("queue_size", &mut up.queue_size, 0..=10_000_000),
        (
            "retry_budget_min_per_second",
            &mut up.retry_budget_min_per_second,
            0..=1_000_000,
        ),
    ] {
        if let Some(n) = u
            .get(k)
            .and_then(|v| w.integer(v, &format!("`{k}`"), range))
        {
            *slot = n as usize;
        }
    }
    for (k, slot) in [
        ("panic_threshold", &mut up.panic_threshold),
        ("retry_budget_percent", &mut up.retry_budget_percent),
    ] {
        if let Some(n) = u
            .get(k)
            .and_then(|v| w.integer(v, &format!("`{k}`"), 0..=100))
        {
            *slot = n as u32;
        }
    }
    if let Some(v) = u.get("protocol") {
        match w.string(v, "`protocol`") {
            Some("http1") => up.protocol = Protocol::Http1,
            Some("h2c") => up.protocol = Protocol::H2c,
            Some(other) => w.problem(
                v.span(),
                format!("unknown protocol `{other}`; use \"http1\" or \"h2c\""),
            ),
            None => {}
        }
    }
    if let Some(v) = u.get("balance") {
        let known = ["round_robin", "weighted", "least_request", "hash"];
        match w.string(v, "`balance`") {
            Some("round_robin") => up.balance = Balance::RoundRobin,
            Some("weighted") => up.balance = Balance::Weighted,
            Some("least_request") => up.balance = Balance::LeastRequest,
            Some("hash") => up.balance = Balance::Hash(HashOn::ClientIp),
            Some(other) => {
                let hint = closest(other, &known)
                    .map_or(String::new(), |s| format!("; did you mean `{s}`?"));
                w.problem(
                    v.span(),
                    format!("unknown balance `{other}`; use {}{hint}", known.join(", ")),
                );
            }
            None => {}
        }
    }
    if let Some(v) = u.get("hash_on") {
        if let Some(s) = w.string(v, "`hash_on`") {
            let on = if s == "client_ip" {
                Some(HashOn::ClientIp)
            } else if let Some(h) = s.strip_prefix("header:").filter(|h| !h.is_empty()) {
                Some(HashOn::Header(h.to_ascii_lowercase()))
            } else {
                s.strip_prefix("cookie:")
                    .filter(|c| !c.is_empty())
                    .map(|c| HashOn::Cookie(c.to_string()))
            };
            match (on, &up.balance) {
                (Some(on), Balance::Hash(_)) => up.balance = Balance::Hash(on),
                (Some(_), _) => w.problem(v.span(), "`hash_on` needs balance = \"hash\""),
                (None, _) => w.problem(v.span(), format!("cannot read hash_on `{s}`; use \"client_ip\", \"header:NAME\" or \"cookie:NAME\"")),
            }
        }
    }
    if let Some(t) = u.get("health").and_then(|v| w.table(v, "`health`")) {
        w.known_keys(t, HEALTH_KEYS, &format!("{what}.health"));
        let mut h = HealthConfig::default();
        let tcp = t
            .get("tcp")
            .and_then(|v| w.boolean(v, "`tcp`"))
            .unwrap_or(false);
        match (t.get("path"), tcp) {
            (Some(p), false) => {
                if let Some(path) = w.string(p, "`path`") {
                    if path.starts_with('/') {
                        h.check = HealthCheck::Http {
                            path: path.to_string(),
                        };
                    } else {
                        w.problem(
                            p.span(),
                            format!("health `path` must start with `/`, found `{path}`"),
                        );
                    }
                }
            }
            (Some(p), true) => w.problem(
                p.span(),
                "a health check is either `tcp = true` or an HTTP `path`, not both",
            ),
            (None, true) => h.check = HealthCheck::Tcp,
            (None, false) => {}
        }
        for (k, slot) in [("interval", &mut h.interval), ("timeout", &mut h.timeout)] {
            if let Some(d) = t
                .get(k)
                .and_then(|v| w.duration(v, &format!("health `{k}`")))
            {
                *slot = d;
            }
        }
        for (k, slot) in [("rise", &mut h.rise), ("fall", &mut h.fall)] {
            if let Some(n) = t
                .get(k)
                .and_then(|v| w.integer(v, &format!("health `{k}`"), 1..=100))
            {
                *slot = n as u32;
            }
        }
        if let Some(v) = t.get("expect") {
            if let Some(items) = w.array(v, "health `expect`") {
                let mut ranges = Vec::new();
                for item in items {
                    match item.get_ref() {
                        DeValue::Integer(_) => {
                            if let Some(n) = w.integer(item, "an expected status", 100..=599) {
                                ranges.push((n as u16, n as u16));
                            }
                        }
                        DeValue::String(s)
                            if s.len() == 3
                                && s.ends_with("xx")
                                && ('1'..='5').contains(&s.chars().next().unwrap()) =>
                        {
                            let base = s[..1].parse::<u16>().unwrap() * 100;
                            ranges.push((base, base + 99));
                        }
                        _ => w.problem(
                            item.span(),
                            "an expected status is a number such as 200 or a class such as \"2xx\"",
                        ),
                    }
                }
                if !ranges.is_empty() {
                    h.expect = ranges;
                }
            }
        }
        if h.timeout > h.interval {
            w.problem(
                t.get("timeout").map_or(key_span.clone(), |v| v.span()),
                "health `timeout` is longer than its `interval`",
            );
        }
        up.health = Some(h);
    }
    if let Some(v) = u.get("tls") {
        if let Some(t) = w.table(v, "`tls`") {
            up.tls = Some(upstream_tls(w, t, v.span(), what));
            if up.protocol == Protocol::H2c {
                w.problem(
                    v.span(),
                    "h2c is HTTP/2 without TLS; remove `protocol = \"h2c\"` or the [tls] table",
                );
            }
        }
    }
    if let Some(t) = u.get("outlier").and_then(|v| w.table(v, "`outlier`")) {
        w.known_keys(t, OUTLIER_KEYS, &format!("{what}.outlier"));
        let o = &mut up.outlier;
        for (k, slot) in [
            ("consecutive_failures", &mut o.consecutive_failures),
            ("consecutive_5xx", &mut o.consecutive_5xx),
        ] {
            if let Some(n) = t
                .get(k)
                .and_then(|v| w.integer(v, &format!("outlier `{k}`"), 0..=10_000))
            {
                *slot = n as u32;
            }
        }
        if let Some(n) = t
            .get("max_ejected_percent")
            .and_then(|v| w.integer(v, "outlier `max_ejected_percent`", 0..=100))
        {
            o.max_ejected_percent = n as u32;
        }
        for (k, slot) in [
            ("base_ejection", &mut o.base_ejection),
            ("max_ejection", &mut o.max_ejection),
        ] {
            if let Some(d) = t
                .get(k)
                .and_then(|v| w.duration(v, &format!("outlier `{k}`")))
            {
                *slot = d;
            }
        }
    }
    up
}

/// Reads a route's `retry` table.
fn retry(w: &mut Walker, t: &DeTable) -> RetryConfig {
    w.known_keys(t, RETRY_KEYS, "a route's `retry`");
    let mut r = RetryConfig::default();
    if let Some(n) = t
        .get("attempts")
        .and_then(|v| w.integer(v, "retry `attempts`", 1..=10))
    {
        r.attempts = n as u32;
    }
    if let Some(d) = t
        .get("per_try_timeout")
        .and_then(|v| w.duration(v, "retry `per_try_timeout`"))
    {
        r.per_try_timeout = Some(d);
    }
    if let Some(d) = t
        .get("deadline")
        .and_then(|v| w.duration(v, "retry `deadline`"))
    {
        r.deadline = d;
    }
    if let Some(v) = t.get("on") {
        if let Some(items) = w.array(v, "retry `on`") {
            let mut on = Vec::new();
            for item in items {
                let Some(s) = w.string(item, "a cause") else {
                    continue;
                };
                match s.parse::<cause::Cause>() {
                    Ok(c) if RETRYABLE.contains(&c) => on.push(c),
                    Ok(c) => w.problem(
                        item.span(),
                        format!(
                            "cause `{c}` is never retried; retryable causes: {}",
                            names(RETRYABLE)
                        ),
                    ),
                    Err(_) => w.problem(
                        item.span(),
                        format!(
                            "unknown cause `{s}`; retryable causes: {}",
                            names(RETRYABLE)
                        ),
                    ),
                }
            }
            r.on = on;
        }
    }
    r
}

fn names(causes: &[cause::Cause]) -> String {
    causes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(src: &str, at: usize) -> (usize, usize) {
    let before = &src[..at.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The allowed name closest to `name`, if it is close enough to be a slip.
fn closest<'a>(name: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(name, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min()
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Checks `host:port` (an IP address or a name, and a port).
fn check_endpoint(s: &str) -> Result<(), String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("endpoint `{s}` needs a port, as in \"{s}:8080\""));
    };
    if port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("endpoint `{s}` has an invalid port `{port}`"));
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !name_ok {
        return Err(format!(
            "endpoint `{s}` is neither an IP address nor a valid host name"
        ));
    }
    Ok(())
}

pub(crate) fn parse(src: &str, file: &str, base: &Path) -> Result<Config, Problems> {
    let mut w = Walker {
        src,
        file,
        base,
        problems: Vec::new(),
    };
    let (root, errors) = DeTable::parse_recoverable(src);
    for e in &errors {
        let span = e.span().unwrap_or(0..0);
        let message = e.message().trim().to_string();
        w.problem(span, message);
    }
    if !errors.is_empty() {
        return Err(Problems(w.problems));
    }
    let root = root.get_ref();
    w.known_keys(root, TOP_KEYS, "the top level");

    let mut cfg = Config {
        listeners: Vec::new(),
        certificates: Vec::new(),
        server_name: "cleargate".into(),
        log: LogConfig {
            format: LogFormat::Json,
            destination: LogDestination::Stdout,
        },
        limits: Limits::default(),
        shutdown_timeout: Duration::from_secs(10),
        error_pages: BTreeMap::new(),
        upstreams: Vec::new(),
        routes: Vec::new(),
        resolver: ResolverConfig::default(),
        acme: None,
        admin: None,
        cache: None,
        trusted_clients: default_trusted_clients(),
        workers: default_workers(),
    };

    for (key, tls) in [("listen", false), ("listen_tls", true)] {
        let Some(v) = root.get(key) else { continue };
        let Some(items) = w.array(v, &format!("`{key}`")) else {
            continue;
        };
        if items.is_empty() {
            w.problem(
                v.span(),
                format!("`{key}` is empty; give at least one address such as \"127.0.0.1:8080\""),
            );
        }
        for item in items {
            if let Some(l) = listener(&mut w, item, key, tls) {
                // Port 0 (the kernel picks one, as in tests) may appear more than once.
                if l.addr.port() != 0 && cfg.listeners.iter().any(|o| o.addr == l.addr) {
                    w.problem(
                        item.span(),
                        format!("duplicate listen address `{}`", l.addr),
                    );
                } else {
                    cfg.listeners.push(l);
                }
            }
        }
    }
    if root.get("listen").is_none() && root.get("listen_tls").is_none() {
        w.problem(
            0..0,
            "missing `listen`; add for example listen = [\"127.0.0.1:8080\"]",
        );
    }

    if let Some(v) = root.get("certificate") {
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items {
                    let Some(t) = w.table(item, "a [[certificate]]") else {
                        continue;
                    };
                    w.known_keys(t, CERTIFICATE_KEYS, "[[certificate]]");
                    let mut file = |name: &str| match t.get(name) {
                        Some(v) => {
                            let p = w.string(v, &format!("`{name}`"))?;
                            if p.is_empty() {
                                w.problem(v.span(), format!("`{name}` is empty; give a PEM file"));
                                return None;
                            }
                            Some((base.join(p), w.place(v.span())))
                        }
                        None => {
                            w.problem(
                                item.span(),
                                format!("[[certificate]] has no `{name}`; give the PEM file"),
                            );
                            None
                        }
                    };
                    let cert = file("cert");
                    let key = file("key");
                    if let (Some((cert, cert_at)), Some((key, key_at))) = (cert, key) {
                        cfg.certificates.push(CertificateConfig {
                            cert,
                            key,
                            cert_at,
                            key_at,
                        });
                    }
                }
            }
            _ => w.problem(
                v.span(),
                "`certificate` must be an array of tables: write [[certificate]]",
            ),
        }
    }
    if let Some(t) = root.get("admin").and_then(|v| w.table(v, "`admin`")) {
        w.known_keys(t, ADMIN_KEYS, "[admin]");
        let remote = t
            .get("allow_remote")
            .and_then(|v| w.boolean(v, "`allow_remote`"))
            .unwrap_or(false);
        match t.get("listen") {
            Some(v) => {
                if let Some(s) = w.string(v, "`admin.listen`") {
                    match s.parse::<SocketAddr>() {
                        Ok(a) if !a.ip().is_loopback() && !remote => w.problem(
                            v.span(),
                            format!("the admin listener `{s}` is not on loopback; it shows the gateway's state to anyone who reaches it: listen on 127.0.0.1 or ::1, or set allow_remote = true"),
                        ),
                        Ok(a) if cfg.listeners.iter().any(|l| l.addr == a && a.port() != 0) => {
                            w.problem(v.span(), format!("`{s}` is also a proxy listener; the admin listener needs its own address"))
                        }
                        Ok(a) => cfg.admin = Some(AdminConfig { listen: a }),
                        Err(_) => w.problem(v.span(), format!("cannot read `{s}` as a listen address; write IP:PORT such as \"127.0.0.1:9901\"")),
                    }
                }
            }
            None => w.problem(
                0..0,
                "[admin] has no `listen`; add for example listen = \"127.0.0.1:9901\"",
            ),
        }
    }
    if let Some(t) = root.get("cache").and_then(|v| w.table(v, "`cache`")) {
        w.known_keys(t, CACHE_KEYS, "[cache]");
        let mut c = CacheConfig::default();
        if let Some(n) = t.get("size").and_then(|v| w.size(v, "`cache.size`")) {
            c.size = n;
        }
        if let Some(v) = t.get("max_object") {
            if let Some(n) = w.size(v, "`cache.max_object`") {
                if n > c.size {
                    w.problem(
                        v.span(),
                        "`cache.max_object` is larger than `cache.size`: no such object could be stored",
                    );
                }
                c.max_object = n;
            }
        }
        if let Some(v) = t.get("stale_if_error") {
            // "0s" is allowed: only the origin's own stale-if-error then.
            match w.string(v, "`cache.stale_if_error`").map(parse_duration) {
                Some(Ok(d)) => c.stale_if_error = d,
                Some(Err(e)) => w.problem(v.span(), format!("`cache.stale_if_error`: {e}")),
                None => {}
            }
        }
        cfg.cache = Some(c);
    }
    if let Some(v) = root.get("acme") {
        if let Some(t) = w.table(v, "`acme`") {
            let plain = cfg.listeners.iter().any(|l| !l.tls);
            cfg.acme = acme(&mut w, t, v.span(), plain);
        }
    }
    if cfg.certificates.is_empty() && cfg.acme.is_none() {
        if let Some(v) = root.get("listen_tls") {
            w.problem(
                v.span(),
                "`listen_tls` needs a certificate; add [[certificate]] with `cert` and `key`, or [acme]",
            );
        }
    }
    if cfg.listeners.iter().any(|l| l.redirect_https) && !cfg.listeners.iter().any(|l| l.tls) {
        if let Some(v) = root.get("listen") {
            w.problem(
                v.span(),
                "`redirect_https` sends clients to a TLS listener, and there is none; add `listen_tls`",
            );
        }
    }

    if let Some(v) = root.get("server_name") {
        if let Some(s) = w.string(v, "`server_name`") {
            if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic()) {
                w.problem(
                    v.span(),
                    "`server_name` must be 1 to 64 visible ASCII characters without spaces",
                );
            } else {
                cfg.server_name = s.to_string();
            }
        }
    }
    if let Some(v) = root.get("shutdown_timeout") {
        if let Some(d) = w.duration(v, "`shutdown_timeout`") {
            cfg.shutdown_timeout = d;
        }
    }

    if let Some(t) = root.get("log").and_then(|v| w.table(v, "`log`")) {
        w.known_keys(t, LOG_KEYS, "[log]");
        if let Some(v) = t.get("format") {
            match w.string(v, "`log.format`") {
                Some("json") => cfg.log.format = LogFormat::Json,
                Some("text") => cfg.log.format = LogFormat::Text,
                Some(other) => w.problem(
                    v.span(),
                    format!("unknown log format `{other}`; use \"json\" or \"text\""),
                ),
                None => {}
            }
        }
        if let Some(v) = t.get("destination") {
            match w.string(v, "`log.destination`") {
                Some("stdout") => cfg.log.destination = LogDestination::Stdout,
                Some("stderr") => cfg.log.destination = LogDestination::Stderr,
                Some("") => w.problem(
                    v.span(),
                    "`log.destination` is empty; use \"stdout\", \"stderr\" or a file path",
                ),
                Some(path) => cfg.log.destination = LogDestination::File(base.join(path)),
                None => {}
            }
        }
    }

    if let Some(t) = root.get("limits").and_then(|v| w.table(v, "`limits`")) {
        w.known_keys(t, LIMIT_KEYS, "[limits]");
        let l = &mut cfg.limits;
        if let Some(n) = t
            .get("max_request_header_bytes")
            .and_then(|v| w.size(v, "`max_request_header_bytes`"))
        {
            l.max_request_header_bytes = n as usize;
        }
        if let Some(n) = t
            .get("max_request_body_bytes")
            .and_then(|v| w.size(v, "`max_request_body_bytes`"))
        {
            l.max_request_body_bytes = n;
        }
        if let Some(d) = t
            .get("request_header_timeout")
            .and_then(|v| w.duration(v, "`request_header_timeout`"))
        {
            l.request_header_timeout = d;
        }
        if let Some(d) = t
            .get("client_idle_timeout")
            .and_then(|v| w.duration(v, "`client_idle_timeout`"))
        {
            l.client_idle_timeout = d;
        }
        if let Some(d) = t
            .get("tunnel_idle_timeout")
            .and_then(|v| w.duration(v, "`tunnel_idle_timeout`"))
        {
            l.tunnel_idle_timeout = d;
        }
        if let Some(v) = t.get("max_response_header_bytes") {
            if let Some(n) = w.size(v, "`max_response_header_bytes`") {
                if n < 8192 {
                    w.problem(
                        v.span(),
                        "`max_response_header_bytes` must be at least 8KiB",
                    );
                } else {
                    l.max_response_header_bytes = n as usize;
                }
            }
        }
        if let Some(n) = t
            .get("max_response_headers")
            .and_then(|v| w.integer(v, "`max_response_headers`", 1..=10_000))
        {
            l.max_response_headers = n as usize;
        }
        if let Some(n) = t
            .get("max_replay_body_bytes")
            .and_then(|v| w.size(v, "`max_replay_body_bytes`"))
        {
            l.max_replay_body_bytes = n as usize;
        }
        if let Some(n) = t
            .get("max_client_connections")
            .and_then(|v| w.integer(v, "`max_client_connections`", 1..=10_000_000))
        {
            l.max_client_connections = n as usize;
        }
    }

    if let Some(n) = root
        .get("workers")
        .and_then(|v| w.integer(v, "`workers`", 1..=1024))
    {
        cfg.workers = n as usize;
    }

    if let Some(v) = root.get("trusted_clients") {
        if let Some(items) = w.array(v, "`trusted_clients`") {
            cfg.trusted_clients.clear();
            for item in items {
                let Some(s) = w.string(item, "a `trusted_clients` entry") else {
                    continue;
                };
                // A bare address is a network of one.
                let net = s
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
                match net {
                    Ok(n) => cfg.trusted_clients.push(n.trunc()),
                    Err(_) => w.problem(
                        item.span(),
                        format!("cannot read `{s}` as a network; write a CIDR such as \"10.0.0.0/8\" or an address such as \"::1\""),
                    ),
                }
            }
        }
    }

    if let Some(t) = root.get("resolver").and_then(|v| w.table(v, "`resolver`")) {
        w.known_keys(t, RESOLVER_KEYS, "[resolver]");
        if let Some(v) = t.get("nameservers") {
            if let Some(items) = w.array(v, "`nameservers`") {
                for item in items {
                    let Some(s) = w.string(item, "a nameserver") else {
                        continue;
                    };
                    let addr = s.parse::<SocketAddr>().or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    });
                    match addr {
                        Ok(a) => cfg.resolver.nameservers.push(a),
                        Err(_) => w.problem(item.span(), format!("cannot read nameserver `{s}`; write an IP address, optionally with a port")),
                    }
                }
            }
        }
        if let Some(d) = t
            .get("timeout")
            .and_then(|v| w.duration(v, "resolver `timeout`"))
        {
            cfg.resolver.timeout = d;
        }
    }

    if let Some(t) = root
        .get("error_pages")
        .and_then(|v| w.table(v, "`error_pages`"))
    {
        for (key, v) in t.iter() {
            let status = key
                .get_ref()
                .parse::<u16>()
                .ok()
                .filter(|s| (400..600).contains(s));
            let Some(status) = status else {
                w.problem(
                    key.span(),
                    format!(
                        "`{}` is not an error status; use a number from 400 to 599 such as \"502\"",
                        key.get_ref()
                    ),
                );
                continue;
            };
            let Some(p) = w.string(v, "an error page path") else {
                continue;
            };
            let path: PathBuf = base.join(p);
            match std::fs::read_to_string(&path) {
                Ok(template) => {
                    cfg.error_pages.insert(status, ErrorPage { path, template });
                }
                Err(e) => w.problem(
                    v.span(),
                    format!("cannot read error page `{}`: {e}", path.display()),
                ),
            }
        }
    }

    let mut upstream_names = BTreeSet::new();
    if let Some(t) = root.get("upstream").and_then(|v| w.table(v, "`upstream`")) {
        for (key, v) in t.iter() {
            let name = key.get_ref().to_string();
            let what = format!("[upstream.{name}]");
            let Some(u) = w.table(v, &what) else { continue };
            upstream_names.insert(name.clone());
            w.known_keys(u, UPSTREAM_KEYS, &what);
            let up = upstream(&mut w, name, key.span(), u, &what);
            cfg.upstreams.push(up);
        }
    }

    match root.get("route") {
        Some(v) => {
            let items: Vec<&Value> = match v.get_ref() {
                DeValue::Array(a) => a.iter().collect(),
                _ => {
                    w.problem(
                        v.span(),
                        "`route` must be an array of tables: write [[route]]",
                    );
                    Vec::new()
                }
            };
            let mut seen = BTreeSet::new();
            for item in items {
                let Some(r) = w.table(item, "a [[route]]") else {
                    continue;
                };
                w.known_keys(r, ROUTE_KEYS, "[[route]]");
                let host = r.get("host").and_then(|v| {
                    let s = w.string(v, "`host`")?;
                    let h = s.trim().to_ascii_lowercase();
                    if h.is_empty() || h.contains(['/', ' ', ':']) {
                        w.problem(v.span(), format!("`host` must be a host name without scheme, port or path, found `{s}`"));
                        None
                    } else {
                        Some(h)
                    }
                });
                let path = match r.get("path") {
                    Some(v) => w.string(v, "`path`").and_then(|p| {
                        if p.starts_with('/') {
                            Some(p.to_string())
                        } else {
                            w.problem(v.span(), format!("`path` must start with `/`, found `{p}`"));
                            None
                        }
                    }),
                    None => Some("/".to_string()),
                };
                let upstream = match r.get("upstream") {
                    Some(v) => w.string(v, "`upstream`").and_then(|u| {
                        if upstream_names.contains(u) {
                            Some(u.to_string())
                        } else {
                            let known: Vec<&str> =
                                upstream_names.iter().map(String::as_str).collect();
                            let hint = match closest(u, &known) {
                                Some(s) => format!("; did you mean `{s}`?"),
                                None if known.is_empty() => {
                                    "; define it with [upstream.NAME]".to_string()
                                }
                                None => format!("; known upstreams: {}", known.join(", ")),
                            };
                            w.problem(
                                v.span(),
                                format!("route names unknown upstream `{u}`{hint}"),
                            );
                            None
                        }
                    }),
                    None => {
                        w.problem(item.span(), "[[route]] has no `upstream`");
                        None
                    }
                };
                let retry_cfg = match r.get("retry") {
                    Some(v) => match w.table(v, "`retry`") {
                        Some(t) => retry(&mut w, t),
                        None => RetryConfig::default(),
                    },
                    None => RetryConfig::default(),
                };
                let cache = match r.get("cache") {
                    Some(v) => {
                        let on = w.boolean(v, "`cache`").unwrap_or(false);
                        if on && !root.contains_key("cache") {
                            w.problem(
                                v.span(),
                                "this route has cache = true but there is no [cache] section; add [cache] (size = \"256MiB\" for example)",
                            );
                        }
                        on
                    }
                    None => false,
                };
                if let (Some(path), Some(upstream)) = (path, upstream) {
                    if !seen.insert((host.clone(), path.clone())) {
                        w.problem(
                            item.span(),
                            format!(
                                "duplicate route for host {} and path `{path}`",
                                host.as_deref().unwrap_or("*")
                            ),
                        );
                    }
                    cfg.routes.push(RouteConfig {
                        host,
                        path,
                        upstream,
                        retry: retry_cfg,
                        cache,
                    });
                }
            }
        }
        None => w.problem(
            0..0,
            "no [[route]]: add one with path = \"/\" and upstream = \"NAME\"",
        ),
    }

    w.problems.sort_by_key(|p| (p.line, p.column));
    if w.problems.is_empty() {
        Ok(cfg)
    } else {
        Err(Problems(w.problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(src: &str) -> Vec<String> {
        match Config::parse(src, "t.toml", Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(p) => p.0.iter().map(|p| p.to_string()).collect(),
        }
    }

    const MINIMAL: &str = r#"listen = ["127.0.0.1:8080"]

[upstream.app]
endpoints = ["127.0.0.1:3001", "127.0.0.1:3002"]
connect_timeout = "1s"
response_timeout = "30s"

[[route]]
path = "/"
upstream = "app"
"#;

    #[test]
    fn the_minimal_file_works_as_written() {
        let c = Config::parse(MINIMAL, "t.toml", Path::new(".")).unwrap();
        assert_eq!(c.listen_addrs(), vec!["127.0.0.1:8080".parse().unwrap()]);
        assert_eq!(c.upstreams[0].endpoints.len(), 2);
        assert_eq!(c.upstreams[0].timeouts.connect, Duration::from_secs(1));
        assert_eq!(c.upstreams[0].timeouts.response, Duration::from_secs(30));
        assert_eq!(c.routes[0].upstream, "app");
        assert_eq!(
            c.summary(),
            "1 listener(s), 1 upstream(s) with 2 endpoint(s), 1 route(s)"
        );
    }

    #[test]
    fn trusted_clients_default_to_loopback_and_are_checked() {
        let c = Config::parse(MINIMAL, "t.toml", Path::new(".")).unwrap();
        assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.is_trusted("::1".parse().unwrap()));
        assert!(!c.is_trusted("192.0.2.1".parse().unwrap()));
        let src = format!("trusted_clients = [\"10.0.0.0/8\", \"2001:db8::1\"]\n{MINIMAL}");
        let c = Config::parse(&src, "t.toml", Path::new(".")).unwrap();
        assert!(c.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(c.is_trusted("2001:db8::1".parse().unwrap()));
        assert!(!c.is_trusted("127.0.0.1".parse().unwrap()));
        let c = Config::parse(
            &format!("trusted_clients = []\n{MINIMAL}"),
            "t.toml",
            Path::new("."),
        )
        .unwrap();
        assert!(!c.is_trusted("127.0.0.1".parse().unwrap()));
        assert_eq!(
            problems(&format!("trusted_clients = [\"10.0.0.0/33\"]\n{MINIMAL}")),
            vec!["t.toml:1:20: cannot read `10.0.0.0/33` as a network; write a CIDR such as \"10.0.0.0/8\" or an address such as \"::1\"".to_string()]
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let src = r#"listen = ["127.0.0.1:8080", "nonsense"]
lisen = 3

[upstream.app]
endpoints = []
conect_timeout = "1s"
response_timeout = "30 parsecs"

[upstream.api]
endpoints = ["127.0.0.1:99999", "db.internal:5432", "127.0.0.1:5000", "127.0.0.1:5000"]
send_timeout = 5

[[route]]
path = "/"
upstream = "aap"

[[route]]
path = "api"
upstream = "nowhere"
"#;
        let got = problems(src);
        let expect = [
            "t.toml:1:29: cannot read `nonsense` as a listen address",
            "t.toml:2:1: unknown key `lisen` in the top level; did you mean `listen`?",
            "t.toml:5:13: [upstream.app] has an empty endpoint list",
            "t.toml:6:1: unknown key `conect_timeout` in [upstream.app]; did you mean `connect_timeout`?",
            "t.toml:7:20: `response_timeout`: unknown unit `parsecs`",
            "t.toml:10:14: endpoint `127.0.0.1:99999` has an invalid port `99999`",
            "t.toml:10:71: duplicate endpoint `127.0.0.1:5000` in [upstream.api]",
            "t.toml:11:16: `send_timeout` must be a string, found integer",
            "t.toml:15:12: route names unknown upstream `aap`; did you mean `app`?",
            "t.toml:18:8: `path` must start with `/`, found `api`",
            "t.toml:19:12: route names unknown upstream `nowhere`; known upstreams: api, app",
        ];
        for e in expect {
            assert!(
                got.iter().any(|g| g.starts_with(e)),
                "missing {e:?} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }

    #[test]
    fn toml_syntax_errors_have_positions() {
        let got = problems("listen = [\"127.0.0.1:8080\"\n[upstream.app]\n");
        assert!(got[0].starts_with("t.toml:"), "{got:?}");
        let got = problems(
            "listen = [\"127.0.0.1:8080\"]\n[upstream.a]\nendpoints=[\"x:1\"]\n[upstream.a]\n",
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("t.toml:4:") && g.contains("duplicate")),
            "{got:?}"
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let got = problems("");
        assert!(
            got.iter().any(|g| g.contains("missing `listen`")),
            "{got:?}"
        );
        assert!(got.iter().any(|g| g.contains("no [[route]]")), "{got:?}");
        let got = problems("listen=[\"127.0.0.1:1\"]\n[upstream.a]\n[[route]]\nupstream=\"a\"\npath=\"/\"\n[[route]]\nupstream=\"a\"\n");
        assert!(
            got.iter().any(|g| g.contains("has no `endpoints`")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("t.toml:6:1: duplicate route")),
            "{got:?}"
        );
    }

    #[test]
    fn resilience_settings() {
        let src = r#"listen = ["127.0.0.1:8080"]
[upstream.app]
endpoints = ["127.0.0.1:1", { address = "127.0.0.1:2", weight = 3 }]
balance = "hash"
hash_on = "cookie:sid"
protocol = "h2c"
max_in_flight = 10
queue_timeout = "50ms"
[upstream.app.health]
path = "/h"
expect = [204, "3xx"]
fall = 1
[upstream.app.outlier]
consecutive_5xx = 2
[[route]]
path = "/"
upstream = "app"
retry = { attempts = 2, on = ["timeout"] }
"#;
        let c = Config::parse(src, "t.toml", Path::new(".")).unwrap();
        let u = &c.upstreams[0];
        assert_eq!(
            u.endpoints[1],
            EndpointConfig {
                address: "127.0.0.1:2".into(),
                weight: 3
            }
        );
        assert_eq!(u.balance, Balance::Hash(HashOn::Cookie("sid".into())));
        assert_eq!(u.protocol, Protocol::H2c);
        assert_eq!(u.max_in_flight, 10);
        let h = u.health.as_ref().unwrap();
        assert_eq!(h.check, HealthCheck::Http { path: "/h".into() });
        assert_eq!(h.expect, vec![(204, 204), (300, 399)]);
        assert_eq!(u.outlier.consecutive_5xx, 2);
        assert_eq!(c.routes[0].retry.attempts, 2);
        assert_eq!(c.routes[0].retry.on, vec![cause::Cause::Timeout]);

        let bad = src
            .replace("\"hash\"", "\"hsah\"")
            .replace("on = [\"timeout\"]", "on = [\"no_route\"]")
            .replace("fall = 1", "fall = 0");
        let got = problems(&bad);
        assert!(got.iter().any(|g| g.contains("unknown balance `hsah`") && g.contains("did you mean `hash`?")), "{got:?}");
        assert!(
            got.iter()
                .any(|g| g.contains("cause `no_route` is never retried")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("health `fall` must be a whole number from 1 to 100")),
            "{got:?}"
        );
    }

    #[test]
    fn full_file_reads_every_setting() {
        let dir = std::env::temp_dir().join(format!("cg-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("502.html"), "<h1>{{status}}</h1>").unwrap();
        let src = r#"listen = ["127.0.0.1:8080", "[::1]:8080"]
server_name = "edge-1"
shutdown_timeout = "3s"
[log]
format = "text"
destination = "access.log"
[limits]
max_request_header_bytes = "16KiB"
max_request_body_bytes = "1MiB"
request_header_timeout = "5s"
max_response_header_bytes = 32768
[error_pages]
502 = "502.html"
[upstream.app]
endpoints = ["localhost:3000"]
send_timeout = "2s"
body_timeout = "9s"
idle_timeout = "4s"
max_idle_per_endpoint = 8
[[route]]
host = "Example.COM"
path = "/api"
upstream = "app"
"#;
        let c = Config::parse(src, "t.toml", &dir).unwrap();
        assert_eq!(c.server_name, "edge-1");
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(
            c.log.destination,
            LogDestination::File(dir.join("access.log"))
        );
        assert_eq!(c.limits.max_request_header_bytes, 16384);
        assert_eq!(c.limits.max_request_body_bytes, 1 << 20);
        assert_eq!(c.limits.max_response_header_bytes, 32768);
        assert_eq!(c.error_pages[&502].template, "<h1>{{status}}</h1>");
        assert_eq!(c.upstreams[0].timeouts.send, Duration::from_secs(2));
        assert_eq!(c.upstreams[0].timeouts.body_idle, Duration::from_secs(9));
        assert_eq!(c.upstreams[0].max_idle_per_endpoint, 8);
        assert_eq!(c.routes[0].host.as_deref(), Some("example.com"));
        let bad = src.replace("\"502.html\"", "\"missing.html\"");
        let err = Config::parse(&bad, "t.toml", &dir).unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:13:7: cannot read error page"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_and_caching_routes() {
        let src = "listen = [\"127.0.0.1:8080\"]\n[cache]\nsize = \"64MiB\"\nmax_object = \"1MiB\"\nstale_if_error = \"5m\"\n[upstream.a]\nendpoints = [\"127.0.0.1:9000\"]\n[[route]]\nupstream = \"a\"\ncache = true\n";
        let c = Config::parse(src, "t.toml", Path::new(".")).unwrap();
        assert_eq!(
            c.cache,
            Some(CacheConfig {
                size: 64 << 20,
                max_object: 1 << 20,
                stale_if_error: Duration::from_secs(300),
            })
        );
        assert!(c.routes[0].cache);
        let got = problems(
            "listen = [\"127.0.0.1:8080\"]\n[upstream.a]\nendpoints = [\"127.0.0.1:9000\"]\n[[route]]\nupstream = \"a\"\ncache = true\n",
        );
        assert_eq!(
            got,
            ["t.toml:6:9: this route has cache = true but there is no [cache] section; add [cache] (size = \"256MiB\" for example)"]
        );
        let got = problems(
            "listen = [\"127.0.0.1:8080\"]\n[cache]\nsize = \"1MiB\"\nmax_object = \"2MiB\"\nstale = 1\n[upstream.a]\nendpoints = [\"127.0.0.1:9000\"]\n[[route]]\nupstream = \"a\"\n",
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].starts_with("t.toml:4:14: `cache.max_object` is larger"),
            "{got:?}"
        );
        assert!(got[1].starts_with("t.toml:5:1: "), "{got:?}");
    }

    #[test]
    fn tls_listeners_and_certificates() {
        let src = r#"listen = [{ address = "127.0.0.1:8080", redirect_https = true }]
listen_tls = ["127.0.0.1:8443", { address = "[::1]:8443", hsts = true }]
[[certificate]]
cert = "site.pem"
key = "site.key"
[upstream.a]
endpoints = ["127.0.0.1:9000"]
[[route]]
upstream = "a"
"#;
        let c = Config::parse(src, "t.toml", Path::new("/etc/cg")).unwrap();
        assert_eq!(c.listeners.len(), 3);
        assert!(!c.listeners[0].tls && c.listeners[0].redirect_https);
        assert!(c.listeners[1].tls && c.listeners[1].hsts.is_none());
        assert_eq!(c.listeners[2].hsts.as_deref(), Some(DEFAULT_HSTS));
        assert_eq!(c.plain_addrs(), vec!["127.0.0.1:8080".parse().unwrap()]);
        let cert = &c.certificates[0];
        assert_eq!(cert.cert, Path::new("/etc/cg/site.pem"));
        assert_eq!((cert.cert_at.line, cert.cert_at.column), (4, 8));
        assert_eq!((cert.key_at.line, cert.key_at.column), (5, 7));
        assert!(c.summary().ends_with(", 1 certificate(s)"));

        let got = problems(
            "listen_tls = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", hsts = \"1y\" }]\n[upstream.a]\nendpoints=[\"x:1\"]\n[[route]]\nupstream=\"a\"\n",
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("t.toml:1:14: `listen_tls` needs a certificate")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.contains("`hsts` must be true or a header value")),
            "{got:?}"
        );
        let got = problems(
            "listen = [{ address = \"127.0.0.1:1\", redirect_https = true }]\n[[certificate]]\ncert = \"c\"\n[upstream.a]\nendpoints=[\"x:1\"]\n[[route]]\nupstream=\"a\"\n",
        );
        assert!(
            got.iter()
                .any(|g| g.contains("there is none; add `listen_tls`")),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|g| g.starts_with("t.toml:2:1: [[certificate]] has no `key`")),
            "{got:?}"
        );
    }
}
