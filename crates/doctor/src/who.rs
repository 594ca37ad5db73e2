//! Step 6, who answered: the servers, gateways and CDNs a response passed through, recognised
//! from headers and from the error pages they make themselves, and which of them made an error
//! response (as opposed to relaying the application's own).
//!
//! A `Proxy-Status` header (RFC 9209) is direct evidence and read first: cleargate's `details`
//! give the exact cause and phase, any other gateway's `error` type maps onto the causes. The
//! fingerprints are facts about the defaults of each product (headers they add, the words of
//! their built-in pages); a hint is what that product's page for that status usually means.

use cause::{Cause, Phase};
use serde::Serialize;

use crate::probe::Exchange;

/// Where a product sits in front of the application.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Cdn,
    Gateway,
}

/// One product recognised in the response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Product {
    pub name: &'static str,
    pub role: Role,
    pub evidence: String,
}

/// One member of a `Proxy-Status` header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    pub proxy: String,
    pub error: Option<String>,
    pub next_hop: Option<String>,
    pub details: Option<String>,
    /// The cause and phase it states: exact from cleargate's details, mapped from `error` otherwise.
    #[serde(serialize_with = "crate::display_opt")]
    pub cause: Option<Cause>,
    #[serde(serialize_with = "crate::display_opt")]
    pub phase: Option<Phase>,
}

/// Who made an error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Maker {
    /// A product name, or `upstream` for the application behind the recognised gateways, or
    /// `server` when nothing in front was recognised.
    pub by: String,
    /// `cdn`, `gateway`, `upstream` or `server`.
    pub hop: &'static str,
    pub evidence: String,
    /// Causes that page usually stands for, most likely first; empty when it says nothing.
    #[serde(serialize_with = "crate::display_list")]
    pub hints: Vec<Cause>,
    /// True when a `Proxy-Status` named the cause.
    pub direct: bool,
}

/// Everything recognised about who answered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Who {
    pub server_header: Option<String>,
    pub via: Option<String>,
    /// Recognised products, CDNs first, then gateways.
    pub products: Vec<Product>,
    pub proxy_status: Vec<ProxyStatus>,
    /// For an error status (4xx/5xx): who made it.
    pub error_maker: Option<Maker>,
}

impl Who {
    pub fn has(&self, name: &str) -> bool {
        self.products.iter().any(|p| p.name == name)
    }
}

/// Recognises who answered `ex`.
pub fn identify(ex: &Exchange) -> Who {
    let mut who = Who {
        server_header: ex.header("server").map(str::to_string),
        via: ex.header("via").map(str::to_string),
        ..Who::default()
    };
    if let Some(ps) = ex.header("proxy-status") {
        who.proxy_status = parse_proxy_status(ps);
    }
    let server = who
        .server_header
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let via = who.via.clone().unwrap_or_default().to_ascii_lowercase();
    let body = ex.body_text();
    // Pages wrap their sentences anywhere; compare with the whitespace collapsed.
    let lower_body = body
        .to_ascii_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let status = ex.status.unwrap_or(0);
    let mut add = |name: &'static str, role: Role, evidence: String| {
        if !who.products.iter().any(|p| p.name == name) {
            who.products.push(Product {
                name,
                role,
                evidence,
            });
        }
    };

    // CDNs first: they are the outer hop.
    if server == "cloudflare" || ex.header("cf-ray").is_some() {
        add(
            "Cloudflare",
            Role::Cdn,
            evidence_of(ex, &["server", "cf-ray"]),
        );
    }
    if server == "cloudfront" || ex.header("x-amz-cf-id").is_some() || via.contains("cloudfront") {
        add(
            "CloudFront",
            Role::Cdn,
            evidence_of(ex, &["server", "x-amz-cf-id", "via"]),
        );
    }
    let fastly = ex.header("x-fastly-request-id").is_some()
        || ex
            .header("x-served-by")
            .is_some_and(|v| v.starts_with("cache-"));
    if fastly {
        add(
            "Fastly",
            Role::Cdn,
            evidence_of(ex, &["x-served-by", "x-fastly-request-id"]),
        );
    }
    if server.starts_with("akamai") || ex.header("akamai-grn").is_some() {
        add(
            "Akamai",
            Role::Cdn,
            evidence_of(ex, &["server", "akamai-grn"]),
        );
    }
    if (ex.header("x-varnish").is_some() || via.contains("varnish")) && !fastly {
        add(
            "Varnish",
            Role::Gateway,
            evidence_of(ex, &["x-varnish", "via"]),
        );
    }
    for p in &who.proxy_status.clone() {
        if let Some(name) = product_of_token(&p.proxy) {
            add(
                name,
                Role::Gateway,
                format!("Proxy-Status names `{}`", p.proxy),
            );
        }
    }
    if via.contains("cleargate") {
        add(
            "cleargate",
            Role::Gateway,
            format!("Via: {}", who.via.clone().unwrap_or_default()),
        );
    }
    if server.starts_with("nginx") || server.starts_with("openresty") {
        add(
            "nginx",
            Role::Gateway,
            format!("Server: {}", who.server_header.clone().unwrap_or_default()),
        );
    }
    if server.starts_with("apache") {
        add(
            "Apache",
            Role::Gateway,
            format!("Server: {}", who.server_header.clone().unwrap_or_default()),
        );
    }
    if server == "envoy" || ex.header("x-envoy-upstream-service-time").is_some() {
        add(
            "Envoy",
            Role::Gateway,
            evidence_of(ex, &["server", "x-envoy-upstream-service-time"]),
        );
    }
    if server == "caddy" {
        add("Caddy", Role::Gateway, "Server: Caddy".into());
    }
    if server.starts_with("haproxy") {
        add(
            "HAProxy",
            Role::Gateway,
            format!("Server: {}", who.server_header.clone().unwrap_or_default()),
        );
    }
    if server.starts_with("traefik") {
        add(
            "Traefik",
            Role::Gateway,
            format!("Server: {}", who.server_header.clone().unwrap_or_default()),
        );
    }

    // The error pages products make themselves.
    let mut page = if status >= 400 {
        page_maker(status, &body, &lower_body, &server)
    } else {
        None
    };
    if let Some(p) = page.as_mut().filter(|p| p.0 == "Varnish" && fastly) {
        // Fastly runs Varnish; its pages are Fastly's.
        p.0 = "Fastly";
        p.1 = Role::Cdn;
    }
    if let Some((name, role, ..)) = &page {
        add(name, *role, "its built-in error page".into());
    }
    who.products.sort_by_key(|p| p.role != Role::Cdn);

    if status >= 400 {
        who.error_maker = Some(decide_maker(&who, status, page));
    }
    who
}

fn evidence_of(ex: &Exchange, names: &[&str]) -> String {
    let found: Vec<String> = names
        .iter()
        .filter_map(|n| {
            ex.header(n)
                .map(|v| format!("{}: {}", canonical(n), short(v)))
        })
        .collect();
    found.join(", ")
}

fn canonical(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn short(v: &str) -> String {
    if v.len() > 60 {
        format!(
            "{}...",
            &v[..v.char_indices().nth(57).map(|(i, _)| i).unwrap_or(v.len())]
        )
    } else {
        v.to_string()
    }
}

fn product_of_token(token: &str) -> Option<&'static str> {
    let t = token.to_ascii_lowercase();
    [
        ("cleargate", "cleargate"),
        ("envoy", "Envoy"),
        ("nginx", "nginx"),
        ("haproxy", "HAProxy"),
        ("caddy", "Caddy"),
        ("traefik", "Traefik"),
        ("cloudflare", "Cloudflare"),
        ("cloudfront", "CloudFront"),
        ("fastly", "Fastly"),
        ("akamai", "Akamai"),
        ("varnish", "Varnish"),
        ("apache", "Apache"),
    ]
    .iter()
    .find(|(k, _)| t.contains(k))
    .map(|(_, v)| *v)
}

type Page = (&'static str, Role, String, Vec<Cause>);

/// Recognises a product's own error page, with what it usually means.
fn page_maker(status: u16, body: &str, lower: &str, server: &str) -> Option<Page> {
    use Cause::*;
    let trimmed = body.trim();
    if lower.contains("hop: client -> cleargate")
        || lower.contains("\"hops\"") && lower.contains("cleargate")
    {
        return Some((
            "cleargate",
            Role::Gateway,
            "cleargate's error page".into(),
            vec![],
        ));
    }
    if lower.contains("<center>nginx") || lower.contains("<center>openresty") {
        let hints = match status {
            502 => vec![
                Refused,
                Reset,
                Closed,
                InvalidResponse,
                Dns,
                Tls,
                Unreachable,
            ],
            504 => vec![Timeout],
            503 => vec![Overloaded],
            _ => vec![],
        };
        return Some((
            "nginx",
            Role::Gateway,
            "the body is nginx's built-in error page".into(),
            hints,
        ));
    }
    if lower.contains("no server is available to handle this request") {
        return Some((
            "HAProxy",
            Role::Gateway,
            "HAProxy's built-in 503 page (\"No server is available to handle this request\")"
                .into(),
            vec![Refused, NoHealthyUpstream, Timeout],
        ));
    }
    if lower.contains("the server returned an invalid or incomplete response") {
        return Some((
            "HAProxy",
            Role::Gateway,
            "HAProxy's built-in 502 page (\"The server returned an invalid or incomplete response\")".into(),
            vec![Closed, Reset, InvalidResponse, ResponseTooLarge],
        ));
    }
    if lower.contains("the server didn't respond in time") {
        return Some((
            "HAProxy",
            Role::Gateway,
            "HAProxy's built-in 504 page (\"The server didn't respond in time\")".into(),
            vec![Timeout],
        ));
    }
    if lower.contains("upstream connect error or disconnect/reset before headers") {
        let hint = if lower.contains("connection refused") {
            vec![Refused]
        } else if lower.contains("connection timeout") || lower.contains("timed out") {
            vec![Timeout]
        } else if lower.contains("tls") || lower.contains("ssl") || lower.contains("certificate") {
            vec![Tls]
        } else if lower.contains("connection termination") || lower.contains("remote reset") {
            vec![Reset, Closed]
        } else if lower.contains("protocol error") {
            vec![InvalidResponse]
        } else if lower.contains("overflow") {
            vec![Overloaded]
        } else {
            vec![Refused, Reset, Closed]
        };
        return Some((
            "Envoy",
            Role::Gateway,
            format!("Envoy's local reply: \"{}\"", short(trimmed)),
            hint,
        ));
    }
    if trimmed == "no healthy upstream" {
        return Some((
            "Envoy",
            Role::Gateway,
            "Envoy's local reply \"no healthy upstream\"".into(),
            vec![NoHealthyUpstream],
        ));
    }
    if trimmed == "upstream request timeout" {
        return Some((
            "Envoy",
            Role::Gateway,
            "Envoy's local reply \"upstream request timeout\"".into(),
            vec![Timeout],
        ));
    }
    if lower.contains("the proxy server received an invalid")
        || lower.contains("<title>502 proxy error")
    {
        return Some((
            "Apache",
            Role::Gateway,
            "Apache mod_proxy's built-in \"Proxy Error\" page".into(),
            vec![Closed, Reset, InvalidResponse, Timeout],
        ));
    }
    if lower.contains("the server is temporarily unable to service your request") {
        return Some((
            "Apache",
            Role::Gateway,
            "Apache's built-in 503 page".into(),
            vec![Refused, NoHealthyUpstream],
        ));
    }
    if lower.contains("generated by cloudfront")
        || lower.contains("the request could not be satisfied")
    {
        return Some((
            "CloudFront",
            Role::Cdn,
            "CloudFront's built-in error page".into(),
            cdn_hints(status),
        ));
    }
    if (520..=527).contains(&status) || lower.contains("cloudflare") && lower.contains("ray id") {
        return Some((
            "Cloudflare",
            Role::Cdn,
            format!("Cloudflare's {status} error page"),
            cdn_hints(status),
        ));
    }
    if lower.contains("guru meditation") || lower.contains("backend fetch failed") {
        let name = if lower.contains("fastly") {
            "Fastly"
        } else {
            "Varnish"
        };
        let role = if name == "Fastly" {
            Role::Cdn
        } else {
            Role::Gateway
        };
        return Some((
            name,
            role,
            "Varnish's \"Backend fetch failed\" page".into(),
            vec![Refused, Timeout, Reset, Closed],
        ));
    }
    if lower.contains("fastly error") {
        return Some((
            "Fastly",
            Role::Cdn,
            "Fastly's built-in error page".into(),
            vec![],
        ));
    }
    if server.starts_with("akamai") && lower.contains("reference") {
        return Some((
            "Akamai",
            Role::Cdn,
            "Akamai's built-in error page with a reference number".into(),
            cdn_hints(status),
        ));
    }
    if (trimmed == "Bad Gateway"
        || trimmed == "Gateway Timeout"
        || trimmed == "Service Unavailable")
        && server.is_empty()
    {
        let hints = match status {
            504 => vec![Timeout],
            502 => vec![Refused, Reset, Closed, InvalidResponse],
            _ => vec![NoHealthyUpstream],
        };
        return Some((
            "Traefik",
            Role::Gateway,
            format!("a bare \"{trimmed}\" body, as Traefik sends by default"),
            hints,
        ));
    }
    if server == "caddy" && trimmed.is_empty() && status >= 500 {
        let hints = match status {
            504 => vec![Timeout],
            _ => vec![Refused, Reset, Closed, InvalidResponse],
        };
        return Some((
            "Caddy",
            Role::Gateway,
            "Server: Caddy with an empty error body, Caddy's default".into(),
            hints,
        ));
    }
    None
}

fn cdn_hints(status: u16) -> Vec<Cause> {
    use Cause::*;
    match status {
        520 => vec![InvalidResponse, Closed, Reset],
        521 => vec![Refused],
        522 => vec![Timeout],
        523 => vec![Unreachable, Dns],
        524 => vec![Timeout],
        525 | 526 => vec![Tls],
        502 => vec![Refused, Reset, Closed, InvalidResponse],
        503 => vec![NoHealthyUpstream, Overloaded],
        504 => vec![Timeout],
        _ => vec![],
    }
}

fn decide_maker(who: &Who, status: u16, page: Option<Page>) -> Maker {
    // Direct evidence: a proxy that says it made the error.
    if let Some(ps) = who.proxy_status.iter().find(|p| p.error.is_some()) {
        let name = product_of_token(&ps.proxy).unwrap_or("a gateway");
        let hop = if matches!(name, "Cloudflare" | "CloudFront" | "Fastly" | "Akamai") {
            "cdn"
        } else {
            "gateway"
        };
        return Maker {
            by: name.to_string(),
            hop,
            evidence: format!(
                "Proxy-Status from `{}`: error={}{}",
                ps.proxy,
                ps.error.clone().unwrap_or_default(),
                ps.details
                    .as_ref()
                    .map(|d| format!(", details=\"{d}\""))
                    .unwrap_or_default()
            ),
            hints: ps.cause.into_iter().collect(),
            direct: ps.cause.is_some(),
        };
    }
    if let Some((name, role, evidence, hints)) = page {
        return Maker {
            by: name.to_string(),
            hop: if role == Role::Cdn { "cdn" } else { "gateway" },
            evidence,
            hints,
            direct: false,
        };
    }
    if let Some(front) = who.products.last() {
        return Maker {
            by: "upstream".into(),
            hop: "upstream",
            evidence: format!(
                "the {status} is not {}'s own error page: the application behind it answered it and it was relayed",
                front.name
            ),
            hints: vec![],
            direct: false,
        };
    }
    Maker {
        by: "server".into(),
        hop: "server",
        evidence: format!(
            "no gateway or CDN was recognised: the server at the URL answered {status} itself"
        ),
        hints: vec![],
        direct: false,
    }
}

/// Parses a `Proxy-Status` field value (a structured-field list) leniently: a member it cannot
/// read is kept with what could be read.
pub fn parse_proxy_status(value: &str) -> Vec<ProxyStatus> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .map(|member| {
            let mut parts = split_outside_quotes(&member, ';').into_iter();
            let proxy = parts
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"')
                .to_string();
            let mut ps = ProxyStatus {
                proxy,
                error: None,
                next_hop: None,
                details: None,
                cause: None,
                phase: None,
            };
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                let v = unquote(v.trim());
                match k.trim() {
                    "error" => ps.error = Some(v),
                    "next-hop" => ps.next_hop = Some(v),
                    "details" => ps.details = Some(v),
                    _ => {}
                }
            }
            if let Some((c, p)) = cause::parse_details(&member) {
                ps.cause = Some(c);
                ps.phase = Some(p);
            } else if let Some((c, p)) = ps.error.as_deref().and_then(rfc_error_cause) {
                ps.cause = Some(c);
                ps.phase = Some(p);
            }
            ps
        })
        .collect()
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c == sep && !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// The cause an RFC 9209 error type stands for, with the phase it implies.
pub fn rfc_error_cause(error: &str) -> Option<(Cause, Phase)> {
    use Cause::*;
    use Phase::*;
    Some(match error {
        "dns_timeout" => (Timeout, Resolve),
        "dns_error" => (Dns, Resolve),
        "destination_not_found" => (NoRoute, Select),
        "destination_unavailable" => (NoHealthyUpstream, Select),
        "destination_ip_prohibited" => (Denied, Connect),
        "destination_ip_unroutable" => (Unreachable, Connect),
        "connection_refused" => (Refused, Connect),
        "connection_terminated" => (Reset, ReadHead),
        "connection_timeout" => (Timeout, Connect),
        "connection_read_timeout" => (Timeout, ReadBody),
        "connection_write_timeout" => (Timeout, SendRequest),
        "connection_limit_reached" => (Overloaded, Queue),
        "tls_protocol_error" | "tls_certificate_error" | "tls_alert_received" => {
            (Tls, TlsHandshake)
        }
        "http_request_error" => (ClientInvalid, Client),
        "http_request_denied" => (Denied, Client),
        "http_response_incomplete" => (Closed, ReadHead),
        "http_response_header_section_size" | "http_response_header_size" => {
            (ResponseTooLarge, ReadHead)
        }
        "http_response_body_size" => (ResponseTooLarge, ReadBody),
        "http_response_transfer_coding" | "http_response_content_coding" => {
            (InvalidResponse, ReadBody)
        }
        "http_response_timeout" => (Timeout, ReadHead),
        "http_upgrade_failed" => (UpgradeFailed, Upgrade),
        "http_protocol_error" => (InvalidResponse, ReadHead),
        "proxy_internal_response"
        | "proxy_internal_error"
        | "proxy_configuration_error"
        | "proxy_loop_detected" => (Internal, Select),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_status_members() {
        let v = parse_proxy_status(
            "cleargate; error=connection_refused; next-hop=\"127.0.0.1:1\"; details=\"cause=refused phase=connect attempts=1\", \
             \"cdn.example\"; error=http_response_timeout",
        );
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].proxy, "cleargate");
        assert_eq!(v[0].cause, Some(Cause::Refused));
        assert_eq!(v[0].next_hop.as_deref(), Some("127.0.0.1:1"));
        assert_eq!(v[1].proxy, "cdn.example");
        assert_eq!(
            (v[1].cause, v[1].phase),
            (Some(Cause::Timeout), Some(Phase::ReadHead))
        );
        assert_eq!(
            parse_proxy_status("envoy; error=weird_thing")[0].cause,
            None
        );
    }

    fn exchange(status: u16, headers: &[(&str, &str)], body: &str) -> Exchange {
        Exchange {
            request: String::new(),
            reused: false,
            status: Some(status),
            reason: None,
            version: None,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            head_bytes: 0,
            body_bytes: body.len() as u64,
            body_complete: true,
            first_byte_ms: None,
            total_ms: 0.0,
            problem: None,
            body_start: body.as_bytes().to_vec(),
        }
    }

    /// `products`: the names recognised, outer first; `maker` and its first hint.
    fn check(
        status: u16,
        headers: &[(&str, &str)],
        body: &str,
        products: &[&str],
        maker: Option<&str>,
        hint: Option<Cause>,
    ) {
        let who = identify(&exchange(status, headers, body));
        let names: Vec<&str> = who.products.iter().map(|p| p.name).collect();
        assert_eq!(names, products, "{headers:?} {body:?}");
        let m = who.error_maker.as_ref();
        assert_eq!(m.map(|m| m.by.as_str()), maker, "{headers:?} {body:?}");
        assert_eq!(m.and_then(|m| m.hints.first().copied()), hint, "{body:?}");
    }

    #[test]
    fn fingerprints() {
        use Cause::*;
        let nginx_502 = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n";
        check(
            502,
            &[("server", "nginx/1.22.1")],
            nginx_502,
            &["nginx"],
            Some("nginx"),
            Some(Refused),
        );
        check(
            504,
            &[("server", "nginx")],
            &nginx_502.replace("502 Bad Gateway", "504 Gateway Time-out"),
            &["nginx"],
            Some("nginx"),
            Some(Timeout),
        );
        // nginx relaying the application's own 503.
        check(
            503,
            &[("server", "nginx")],
            "maintenance",
            &["nginx"],
            Some("upstream"),
            None,
        );
        check(200, &[("server", "nginx")], "hello", &["nginx"], None, None);
        check(503, &[], "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>\n", &["HAProxy"], Some("HAProxy"), Some(Refused));
        check(502, &[], "<html><body><h1>502 Bad Gateway</h1>\nThe server returned an invalid or incomplete response.\n</body></html>\n", &["HAProxy"], Some("HAProxy"), Some(Closed));
        check(504, &[], "<html><body><h1>504 Gateway Time-out</h1>\nThe server didn't respond in time.\n</body></html>\n", &["HAProxy"], Some("HAProxy"), Some(Timeout));
        check(503, &[("server", "envoy")], "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: 111 Connection refused", &["Envoy"], Some("Envoy"), Some(Refused));
        check(
            503,
            &[("server", "envoy")],
            "no healthy upstream",
            &["Envoy"],
            Some("Envoy"),
            Some(NoHealthyUpstream),
        );
        check(
            504,
            &[("server", "envoy")],
            "upstream request timeout",
            &["Envoy"],
            Some("Envoy"),
            Some(Timeout),
        );
        check(502, &[("server", "Apache/2.4.62 (Debian)")], "<title>502 Proxy Error</title><p>The proxy server received an invalid\nresponse from an upstream server.", &["Apache"], Some("Apache"), Some(Closed));
        check(503, &[("server", "Apache/2.4.62 (Debian)")], "<p>The server is temporarily unable to service your\nrequest due to maintenance downtime or capacity\nproblems.", &["Apache"], Some("Apache"), Some(Refused));
        check(
            502,
            &[("server", "Caddy")],
            "",
            &["Caddy"],
            Some("Caddy"),
            Some(Refused),
        );
        check(
            502,
            &[],
            "Bad Gateway",
            &["Traefik"],
            Some("Traefik"),
            Some(Refused),
        );
        check(
            521,
            &[("server", "cloudflare"), ("cf-ray", "8a1b2c3d4e5f6a7b-AMS")],
            "<title>example.com | 521: Web server is down</title>",
            &["Cloudflare"],
            Some("Cloudflare"),
            Some(Refused),
        );
        check(
            524,
            &[("server", "cloudflare"), ("cf-ray", "x")],
            "",
            &["Cloudflare"],
            Some("Cloudflare"),
            Some(Timeout),
        );
        check(502, &[("server", "CloudFront"), ("x-amz-cf-id", "abc"), ("x-cache", "Error from cloudfront")], "<H1>502 ERROR</H1><H2>The request could not be satisfied.</H2>Generated by cloudfront (CloudFront)", &["CloudFront"], Some("CloudFront"), Some(Refused));
        check(
            503,
            &[
                ("x-served-by", "cache-ams21000-AMS"),
                ("via", "1.1 varnish"),
            ],
            "Error 503 Backend fetch failed\nGuru Meditation: XID: 123\nVarnish cache server",
            &["Fastly"],
            Some("Fastly"),
            Some(Refused),
        );
        check(
            503,
            &[("x-varnish", "32770"), ("via", "1.1 varnish (Varnish/7.1)")],
            "<h1>Error 503 Backend fetch failed</h1><p>Guru Meditation:</p>",
            &["Varnish"],
            Some("Varnish"),
            Some(Refused),
        );
        check(
            502,
            &[("server", "AkamaiGHost")],
            "An error occurred while processing your request.<p>Reference&#32;&#35;97&#46;1234",
            &["Akamai"],
            Some("Akamai"),
            Some(Refused),
        );
        // A CDN in front of a gateway: outer first.
        check(
            200,
            &[("server", "nginx"), ("cf-ray", "x")],
            "ok",
            &["Cloudflare", "nginx"],
            None,
            None,
        );
        // cleargate: Proxy-Status is direct evidence.
        check(
            504,
            &[("proxy-status", "cleargate; error=http_response_timeout; next-hop=\"10.0.0.1:80\"; details=\"cause=timeout phase=read_head attempts=1 reused=false sent=60 received=0\""), ("via", "1.1 cleargate")],
            "504 Gateway Timeout\n\nHop: client -> cleargate -> [upstream: FAILED]",
            &["cleargate"],
            Some("cleargate"),
            Some(Timeout),
        );
        // Another RFC 9209 gateway.
        check(
            502,
            &[("proxy-status", "envoy; error=connection_refused")],
            "",
            &["Envoy"],
            Some("Envoy"),
            Some(Refused),
        );
        // Nothing recognised: the server answered itself.
        check(
            500,
            &[("server", "gunicorn")],
            "Internal Server Error",
            &[],
            Some("server"),
            None,
        );
    }

    #[test]
    fn every_cleargate_error_type_maps_back() {
        for c in Cause::ALL {
            for p in Phase::ALL {
                let t = c.proxy_status_error(*p);
                assert!(rfc_error_cause(t).is_some(), "{t}");
            }
        }
    }
}
