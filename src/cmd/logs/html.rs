//! The HTML report of `cleargate logs --html`: one self-contained page (inline CSS and SVG, no
//! scripts, no external assets) with a timeline chart per cause and the tables of the terminal
//! report, so it can be mailed or attached to a ticket.

use std::fmt::Write;

use logscan::time::format as time;
use logscan::Summary;

use super::FileReport;

/// Columns of each timeline chart.
const COLUMNS: usize = 96;
/// The bar colour; the interop script looks for it in a screenshot to check the chart drew.
pub const BAR: &str = "#d9480f";

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

fn chart(cols: &[u64], first: &str, last: &str) -> String {
    let (w, h) = (COLUMNS as u64 * 6, 60u64);
    let max = cols.iter().copied().max().unwrap_or(0).max(1);
    let mut s = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {}\" width=\"{w}\" height=\"{}\" role=\"img\">",
        h + 14,
        h + 14
    );
    let _ = write!(
        s,
        "<line x1=\"0\" y1=\"{h}\" x2=\"{w}\" y2=\"{h}\" stroke=\"#999\"/>"
    );
    for (i, &n) in cols.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let bh = (n * (h - 4) / max).max(2);
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"5\" height=\"{bh}\" fill=\"{BAR}\"><title>{n}</title></rect>",
            i * 6,
            h - bh
        );
    }
    let _ = write!(
        s,
        "<text x=\"0\" y=\"{}\" font-size=\"10\">{}</text><text x=\"{w}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{}</text></svg>",
        h + 12,
        esc(first),
        h + 12,
        esc(last)
    );
    s
}

pub fn report(files: &[FileReport], total: &Summary, n: usize) -> String {
    let mut p = String::new();
    let all = total.total();
    let first = total.first_seen().map(time).unwrap_or_default();
    let last = total.last_seen().map(time).unwrap_or_default();
    p.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>cleargate logs report</title><style>\
         body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}\
         h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}\
         table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;text-align:left;border-bottom:1px solid #eee;vertical-align:top}\
         th{background:#f6f6f6}td.n{text-align:right}code{background:#f3f3f3;padding:0 .2em}\
         .cause{font-weight:bold;color:#b02a0a}.muted{color:#666}.chart{display:block;margin:.3em 0 1em}\
         </style></head><body>",
    );
    let _ = write!(
        p,
        "<h1>{all} gateway error(s) in {} line(s)</h1><p class=\"muted\">{} .. {}</p>",
        total.lines,
        esc(&first),
        esc(&last)
    );
    p.push_str("<h2>Inputs</h2><table><tr><th>input</th><th>format</th><th>lines</th><th>errors</th><th>unrecognized</th></tr>");
    for f in files {
        let _ = write!(
            p,
            "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td></tr>",
            esc(&f.name),
            f.format(),
            f.summary.lines,
            f.summary.total(),
            f.summary.unrecognized
        );
    }
    p.push_str("</table>");

    p.push_str("<h2>Timeline per cause</h2>");
    for (c, s) in total.ranked() {
        let _ = write!(
            p,
            "<h3><span class=cause>{c}</span> <span class=muted>{} · {}</span></h3>{}",
            s.count,
            esc(c.summary()),
            chart(&total.columns(Some(c), COLUMNS), &first, &last)
        );
    }

    p.push_str("<h2>Causes</h2><table><tr><th>cause</th><th>count</th><th>share</th><th>first seen</th><th>last seen</th><th>phases</th><th>top upstreams</th><th>top hosts</th></tr>");
    for (c, s) in total.ranked() {
        let share = if all == 0 {
            0.0
        } else {
            s.count as f64 * 100.0 / all as f64
        };
        let phases: Vec<String> = s
            .phases()
            .iter()
            .map(|(k, v)| format!("{k} ({v})"))
            .collect();
        let ups: Vec<String> = s
            .upstreams
            .top(n)
            .into_iter()
            .map(|(k, v)| format!("{} ({v})", esc(&k)))
            .collect();
        let hosts: Vec<String> = s
            .hosts
            .top(n)
            .into_iter()
            .map(|(k, v)| format!("{} ({v})", esc(&k)))
            .collect();
        let _ = write!(
            p,
            "<tr><td class=cause>{c}</td><td class=n>{}</td><td class=n>{share:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            s.count,
            s.first.map(time).unwrap_or_default(),
            s.last.map(time).unwrap_or_default(),
            phases.join("<br>"),
            ups.join("<br>"),
            hosts.join("<br>")
        );
    }
    p.push_str("</table>");

    let incidents = total.incidents();
    if !incidents.is_empty() {
        p.push_str("<h2>Incidents</h2><table><tr><th>from</th><th>to</th><th>errors</th><th>causes</th></tr>");
        for inc in incidents.iter().take(n.max(10)) {
            let causes: Vec<String> = inc
                .causes
                .iter()
                .map(|(c, k)| format!("{c} ({k})"))
                .collect();
            let _ = write!(
                p,
                "<tr><td>{}</td><td>{}</td><td class=n>{}</td><td>{}</td></tr>",
                time(inc.start),
                time(inc.end),
                inc.count,
                causes.join(", ")
            );
        }
        p.push_str("</table>");
    }
    let patterns = total.patterns();
    if !patterns.is_empty() {
        p.push_str("<h2>Patterns</h2><ul>");
        for pat in patterns {
            let _ = write!(p, "<li>{} <code>{}</code></li>", esc(&pat.text), pat.name);
        }
        p.push_str("</ul>");
    }
    let recs = total.recommendations();
    if !recs.is_empty() {
        p.push_str("<h2>What to do, most impactful first</h2><ol>");
        for r in recs {
            let _ = write!(
                p,
                "<li><span class=cause>{}</span> ({})<ul>",
                r.cause, r.count
            );
            for fix in r.fixes.iter().take(4) {
                let _ = write!(p, "<li>{}</li>", esc(fix));
            }
            p.push_str("</ul></li>");
        }
        p.push_str("</ol>");
    }
    p.push_str("<h2>Not counted as gateway errors</h2><table>");
    let _ = write!(
        p,
        "<tr><td>follow-up lines</td><td class=n>{}</td></tr><tr><td>skipped</td><td class=n>{}</td></tr><tr><td>unrecognized</td><td class=n>{}</td></tr>",
        total.follow_ups, total.skipped, total.unrecognized
    );
    for (d, k) in &total.relayed {
        let _ = write!(
            p,
            "<tr><td>relayed: {}</td><td class=n>{k}</td></tr>",
            esc(d)
        );
    }
    p.push_str("</table>");
    for e in &total.unrecognized_examples {
        let _ = write!(p, "<pre>{}</pre>", esc(e));
    }
    p.push_str("</body></html>\n");
    p
}
