//! The error surface: the response the gateway makes for a failure.
//!
//! Status and headers come from the one mapping in `crates/cause`; this module only renders them.
//! The page is negotiated by `Accept` (HTML for browsers, JSON for API clients, plain text
//! otherwise), names the failing hop, says what happened in plain words and what to do, and
//! carries the request id and time. It embeds no external asset and never shows request headers,
//! cookies or configuration secrets.

use std::time::SystemTime;

use bytes::Bytes;
use cause::{Cause, Failure, Side};
use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::json;

use crate::body::ProxyBody;
use crate::log::rfc3339;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Text,
}

/// Picks the page format from the request's `Accept` header.
pub fn negotiate(headers: &HeaderMap) -> Format {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Format::Text;
    };
    let mut best = (0.0f32, Format::Text);
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "text/html" | "application/xhtml+xml" => Format::Html,
            "application/json" | "application/problem+json" => Format::Json,
            m if m.ends_with("+json") => Format::Json,
            "text/plain" => Format::Text,
            _ => continue,
        };
        // Ties keep the earlier, more specific choice: html before json before text.
        if q > best.0 {
            best = (q, format);
        }
    }
    best.1
}

/// What the page needs to know besides the failure.
pub struct PageContext<'a> {
    pub server_name: &'a str,
    pub request_id: &'a str,
    pub method: &'a Method,
    pub attempts: u32,
    pub format: Format,
    /// The operator's template for this status, if any (HTML only).
    pub template: Option<&'a str>,
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// Builds the complete error response for `failure`.
pub fn error_response(failure: &Failure, cx: &PageContext<'_>) -> Response<ProxyBody> {
    let answer = failure.answer();
    let status = answer.status;
    let time = rfc3339(SystemTime::now());
    let offer_retry = cx.method == Method::GET && failure.cause.is_transient();
    let (content_type, body) = match cx.format {
        Format::Json => ("application/json", json_page(failure, cx, status, &time)),
        Format::Text => (
            "text/plain; charset=utf-8",
            text_page(failure, cx, status, &time),
        ),
        Format::Html => {
            let page = match cx.template {
                Some(t) => fill_template(t, failure, cx, status, &time),
                None => html_page(failure, cx, status, &time, offer_retry, answer.retry_after),
            };
            ("text/html; charset=utf-8", page)
        }
    };
    let mut resp = Response::new(ProxyBody::full(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&failure.proxy_status(cx.server_name, cx.attempts)) {
        h.insert("proxy-status", v);
    }
    if let Some(secs) = answer.retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    if let Ok(v) = HeaderValue::from_str(cx.request_id) {
        h.insert("x-request-id", v);
    }
    if failure.cause == Cause::ClientInvalid {
        // The request stream may be out of step; do not read another request from it.
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The hops of the path, and which one failed: `(label, failed)`.
fn hops(failure: &Failure, server_name: &str) -> [(String, bool); 3] {
    let upstream = match (&failure.upstream, &failure.endpoint) {
        (Some(u), Some(e)) => format!("upstream {u} ({e})"),
        (Some(u), None) => format!("upstream {u}"),
        (None, Some(e)) => format!("upstream {e}"),
        (None, None) => "upstream".to_string(),
    };
    let side = failure.cause.side();
    [
        ("client".to_string(), side == Side::Client),
        (server_name.to_string(), side == Side::Gateway),
        (upstream, side == Side::Upstream),
    ]
}

fn hop_line(failure: &Failure, server_name: &str) -> String {
    hops(failure, server_name)
        .iter()
        .map(|(label, failed)| {
            if *failed {
                format!("[{label}: FAILED]")
            } else {
                label.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn text_page(f: &Failure, cx: &PageContext<'_>, status: u16, time: &str) -> String {
    let mut s = format!(
        "{status} {}\n\n{}\nHop: {}\nCause: {} ({})\n\nWhat you can do: {}\n\nFor the site operator:\n",
        reason(status),
        f.cause.summary(),
        hop_line(f, cx.server_name),
        f.cause,
        f.phase.words(),
        f.cause.visitor_advice(),
    );
    for check in f.cause.operator_checks() {
        s.push_str(&format!("  - check {check}\n"));
    }
    if let Some(d) = &f.detail {
        s.push_str(&format!("\nDetail: {d}\n"));
    }
    s.push_str(&format!(
        "\nRequest id: {}\nTime: {time}\nServer: {}\n",
        cx.request_id, cx.server_name
    ));
    s
}

fn json_page(f: &Failure, cx: &PageContext<'_>, status: u16, time: &str) -> String {
    let hops: Vec<_> = hops(f, cx.server_name)
        .into_iter()
        .map(|(name, failed)| json!({"name": name, "failed": failed}))
        .collect();
    let v = json!({
        "status": status,
        "title": reason(status),
        "cause": f.cause.as_str(),
        "phase": f.phase.as_str(),
        "message": f.cause.summary(),
        "phase_words": f.phase.words(),
        "hops": hops,
        "upstream": f.upstream,
        "endpoint": f.endpoint,
        "detail": f.detail,
        "attempts": cx.attempts,
        "visitor_advice": f.cause.visitor_advice(),
        "operator_checks": f.cause.operator_checks(),
        "retry_after": f.answer().retry_after,
        "request_id": cx.request_id,
        "time": time,
        "server": cx.server_name,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Fills an operator template: `{{status}}`, `{{reason}}`, `{{cause}}`, `{{phase}}`,
/// `{{message}}`, `{{request_id}}`, `{{time}}`, `{{upstream}}`, `{{endpoint}}`, `{{server}}`.
fn fill_template(t: &str, f: &Failure, cx: &PageContext<'_>, status: u16, time: &str) -> String {
    let vars = [
        ("status", status.to_string()),
        ("reason", reason(status).to_string()),
        ("cause", f.cause.as_str().to_string()),
        ("phase", f.phase.as_str().to_string()),
        ("message", f.cause.summary().to_string()),
        ("request_id", cx.request_id.to_string()),
        ("time", time.to_string()),
        ("upstream", f.upstream.clone().unwrap_or_default()),
        ("endpoint", f.endpoint.clone().unwrap_or_default()),
        ("server", cx.server_name.to_string()),
    ];
    let mut out = t.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), &escape_html(&v));
    }
    out
}

fn html_page(
    f: &Failure,
    cx: &PageContext<'_>,
    status: u16,
    time: &str,
    offer_retry: bool,
    retry_after: Option<u32>,
) -> String {
    let e = escape_html;
    let hop_html: Vec<String> = hops(f, cx.server_name)
        .iter()
        .map(|(label, failed)| {
            let class = if *failed { "hop bad" } else { "hop" };
            let mark = if *failed {
                "<span class=\"x\">&#x2716;</span>"
            } else {
                "<span class=\"ok\">&#x2714;</span>"
            };
            format!(
                "<div class=\"{class}\">{mark}<span>{}</span></div>",
                e(label)
            )
        })
        .collect();
    let checks: String = f
        .cause
        .operator_checks()
        .iter()
        .map(|c| format!("<li>{}</li>", e(c)))
        .collect();
    let refresh = match (offer_retry, retry_after) {
        (true, Some(secs)) => format!("<meta http-equiv=\"refresh\" content=\"{secs}\">"),
        _ => String::new(),
    };
    let retry = if offer_retry {
        let when = match retry_after {
            Some(secs) => format!(
                "<p class=\"muted\">This page will try again by itself in {secs} seconds.</p>"
            ),
            None => String::new(),
        };
        format!("<p><a class=\"button\" href=\"\">Try again</a></p>{when}")
    } else {
        String::new()
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
{refresh}<title>{status} {reason}</title>
<style>
:root{{color-scheme:light dark;--bg:#f6f7f9;--card:#fff;--fg:#1d2330;--muted:#5b6475;--bad:#c62828;--ok:#2e7d32;--line:#dde1e8}}
@media (prefers-color-scheme:dark){{:root{{--bg:#14171c;--card:#1d2129;--fg:#e6e9ef;--muted:#9aa3b2;--line:#2f3542}}}}
body{{margin:0;background:var(--bg);color:var(--fg);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}}
main{{max-width:760px;margin:6vh auto;padding:0 20px}}
.card{{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:28px 32px;box-shadow:0 1px 3px rgba(0,0,0,.06)}}
.code{{font-size:14px;letter-spacing:.08em;text-transform:uppercase;color:var(--bad);font-weight:600}}
h1{{margin:.2em 0 .4em;font-size:28px}}
.hops{{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin:22px 0}}
.hop{{border:1px solid var(--line);border-radius:8px;padding:8px 12px;display:flex;gap:8px;align-items:center}}
.hop.bad{{border-color:var(--bad);color:var(--bad);font-weight:600}}
.arrow{{color:var(--muted)}} .ok{{color:var(--ok)}} .x{{color:var(--bad)}}
h2{{font-size:16px;margin:22px 0 6px}} .muted{{color:var(--muted);font-size:14px}}
.button{{display:inline-block;background:var(--fg);color:var(--bg);padding:8px 18px;border-radius:8px;text-decoration:none;font-weight:600}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;font-size:14px;color:var(--muted)}} dd{{margin:0;font-family:ui-monospace,monospace;color:var(--fg)}}
</style></head>
<body><main><div class="card">
<div class="code">Error {status} &middot; {cause}</div>
<h1>{reason}</h1>
<p>{summary}</p>
<div class="hops">{hops}</div>
<h2>What you can do</h2><p>{advice}</p>{retry}
<h2>For the site operator</h2><p class="muted">It failed {phase_words} (cause <code>{cause}</code>, phase <code>{phase}</code>). Check:</p><ul>{checks}</ul>
<dl>{detail}<dt>Request id</dt><dd>{request_id}</dd><dt>Time</dt><dd>{time}</dd><dt>Served by</dt><dd>{server}</dd></dl>
</div></main></body></html>
"#,
        reason = reason(status),
        cause = e(f.cause.as_str()),
        phase = e(f.phase.as_str()),
        summary = e(f.cause.summary()),
        hops = hop_html.join("<span class=\"arrow\">&rarr;</span>"),
        advice = e(f.cause.visitor_advice()),
        phase_words = e(f.phase.words()),
        request_id = e(cx.request_id),
        server = e(cx.server_name),
        detail = f.detail.as_deref().map_or(String::new(), |d| format!(
            "<dt>Detail</dt><dd>{}</dd>",
            e(d)
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt_of(accept: &str) -> Format {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_str(accept).unwrap());
        negotiate(&h)
    }

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(&HeaderMap::new()), Format::Text);
        assert_eq!(
            fmt_of("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            Format::Html
        );
        assert_eq!(fmt_of("application/json"), Format::Json);
        assert_eq!(fmt_of("application/vnd.api+json"), Format::Json);
        assert_eq!(fmt_of("*/*"), Format::Text);
        assert_eq!(fmt_of("text/html;q=0.1, application/json"), Format::Json);
    }

    #[test]
    fn templates_escape_values() {
        let mut f = Failure::new(Cause::Refused, cause::Phase::Connect);
        f.upstream = Some("<app>".into());
        let cx = PageContext {
            server_name: "gw",
            request_id: "r1",
            method: &Method::GET,
            attempts: 1,
            format: Format::Html,
            template: Some("{{status}} {{upstream}} {{request_id}}"),
        };
        let page = fill_template(cx.template.unwrap(), &f, &cx, 502, "t");
        assert_eq!(page, "502 &lt;app&gt; r1");
    }
}
