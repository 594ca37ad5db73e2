//! The JSON forms of `cleargate logs`: the whole summary (`--json`) and one object per
//! classified line (`--findings`). Field names are part of the interface; see docs/logs.md.

use logscan::summary::Top;
use logscan::time::format as time;
use logscan::{display, Finding, Role, Summary};
use serde_json::{json, Map, Value};

use super::FileReport;

fn top(t: &Top, n: usize) -> Value {
    Value::Array(
        t.top(n)
            .into_iter()
            .map(|(k, c)| json!({ "name": k, "count": c }))
            .collect(),
    )
}

fn counts<K: ToString, V: Into<Value> + Copy>(it: impl IntoIterator<Item = (K, V)>) -> Value {
    let mut m = Map::new();
    for (k, v) in it {
        m.insert(k.to_string(), v.into());
    }
    Value::Object(m)
}

pub fn report(files: &[FileReport], total: &Summary, n: usize) -> Value {
    let all = total.total();
    let by_cause = counts(total.ranked().iter().map(|(c, s)| (c.as_str(), s.count)));
    let causes: Vec<Value> = total
        .ranked()
        .into_iter()
        .map(|(c, s)| {
            json!({
                "cause": c.as_str(),
                "count": s.count,
                "share": if all == 0 { 0.0 } else { (s.count as f64 * 1000.0 / all as f64).round() / 1000.0 },
                "first_seen": s.first.map(time),
                "last_seen": s.last.map(time),
                "phases": counts(s.phases().into_iter().map(|(p, v)| (p.as_str(), v))),
                "details": counts(s.details()),
                "statuses": counts(s.statuses.iter().map(|(st, v)| (st, *v))),
                "top_upstreams": top(&s.upstreams, n),
                "top_hosts": top(&s.hosts, n),
                "top_requests": top(&s.requests, n),
                "reused_connection": s.reused,
                "summary": c.summary(),
                "example": s.example,
            })
        })
        .collect();
    let timeline: Vec<Value> = total
        .ranked()
        .into_iter()
        .map(|(c, _)| {
            json!({
                "cause": c.as_str(),
                "buckets": total.series(c).into_iter().map(|(t, k)| json!([time(t), k])).collect::<Vec<_>>(),
            })
        })
        .collect();
    let incidents: Vec<Value> = total
        .incidents()
        .into_iter()
        .take(n.max(10))
        .map(|i| {
            json!({
                "start": time(i.start),
                "end": time(i.end),
                "count": i.count,
                "peak_per_bucket": i.peak,
                "upstreams_down": i.upstreams_down,
                "causes": counts(i.causes.iter().map(|(c, v)| (c.as_str(), *v))),
            })
        })
        .collect();
    let patterns: Vec<Value> = total
        .patterns()
        .into_iter()
        .map(|p| json!({ "pattern": p.name, "text": p.text }))
        .collect();
    let recommendations: Vec<Value> = total
        .recommendations()
        .into_iter()
        .map(|r| json!({ "cause": r.cause.as_str(), "count": r.count, "fixes": r.fixes }))
        .collect();
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "file": f.name,
                "format": f.format(),
                "lines": f.summary.lines,
                "gateway_errors": f.summary.total(),
                "unrecognized": f.summary.unrecognized,
                "error": f.error,
            })
        })
        .collect();
    json!({
        "by_cause": by_cause,
        "gateway_errors": all,
        "unrecognized": total.unrecognized,
        "unrecognized_examples": total.unrecognized_examples,
        "lines": total.lines,
        "skipped": total.skipped,
        "follow_up": total.follow_ups,
        "relayed": counts(total.relayed.iter().map(|(d, v)| (*d, *v))),
        "first_seen": total.first_seen().map(time),
        "last_seen": total.last_seen().map(time),
        "files": files,
        "causes": causes,
        "timeline": { "bucket_seconds": total.bucket_ms() / 1000, "series": timeline },
        "incidents": incidents,
        "patterns": patterns,
        "recommendations": recommendations,
    })
}

pub fn finding(file: &str, f: &Finding<'_>, line: &[u8]) -> Value {
    let text = |b: Option<&[u8]>| b.map(|b| display(b, 300));
    json!({
        "file": file,
        "format": f.format.as_str(),
        "cause": f.cause.as_str(),
        "phase": f.phase.as_str(),
        "detail": if f.detail.is_empty() { None } else { Some(f.detail) },
        "rule": f.rule,
        "follow_up": f.role == Role::FollowUp,
        "event": f.role == Role::Event,
        "time": f.time.map(time),
        "status": f.status,
        "upstream": text(f.upstream),
        "client": text(f.client),
        "host": text(f.host),
        "request": text(f.request),
        "reused": f.reused,
        "line": display(line, 2000),
    })
}
