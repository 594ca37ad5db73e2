//! The terminal report of `cleargate logs`: what went wrong, how often, where, when, and what
//! to do, in that order. Colour only when writing to a terminal.

use std::io::{self, Write};

use logscan::time::format as time;
use logscan::Summary;

use super::FileReport;

const SPARK: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
pub const SPARK_COLUMNS: usize = 40;

/// One character per column, scaled to the largest column; blank where nothing happened.
pub fn sparkline(cols: &[u64]) -> String {
    let max = cols.iter().copied().max().unwrap_or(0).max(1);
    cols.iter()
        .map(|&n| {
            if n == 0 {
                ' '
            } else {
                SPARK[((n * 8 - 1) / max).min(7) as usize]
            }
        })
        .collect()
}

struct Style {
    on: bool,
}

impl Style {
    fn bold(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[1m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn red(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[1;31m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    fn dim(&self, s: &str) -> String {
        if self.on {
            format!("\x1b[2m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

fn list(items: &[(String, u64)]) -> String {
    items
        .iter()
        .map(|(k, n)| format!("{k} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn report(
    out: &mut dyn Write,
    files: &[FileReport],
    total: &Summary,
    n: usize,
    colour: bool,
) -> io::Result<()> {
    let st = Style { on: colour };
    let all = total.total();
    let span = match (total.first_seen(), total.last_seen()) {
        (Some(a), Some(b)) => format!(", {} .. {}", time(a), time(b)),
        _ => String::new(),
    };
    writeln!(
        out,
        "{}",
        st.bold(&format!(
            "{} gateway error(s) in {} line(s) of {} input(s){span}",
            all,
            total.lines,
            files.len()
        ))
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "  {:<10} {:>10} {:>8}  input",
        "format", "lines", "errors"
    )?;
    for f in files {
        writeln!(
            out,
            "  {:<10} {:>10} {:>8}  {}{}",
            f.format(),
            f.summary.lines,
            f.summary.total(),
            f.name,
            f.error
                .as_ref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        )?;
    }

    if all > 0 {
        writeln!(out)?;
        writeln!(out, "{}", st.bold("Causes"))?;
        writeln!(
            out,
            "  {:<20} {:>7} {:>5}  {:<19}  {:<19}  timeline",
            "cause", "count", "share", "first seen", "last seen"
        )?;
        for (c, s) in total.ranked() {
            let share = s.count as f64 * 100.0 / all as f64;
            writeln!(
                out,
                "  {} {:>7} {:>4.0}%  {:<19}  {:<19}  |{}|",
                st.red(&format!("{:<20}", c.as_str())),
                s.count,
                share,
                s.first.map(time).unwrap_or_else(|| "-".into()),
                s.last.map(time).unwrap_or_else(|| "-".into()),
                sparkline(&total.columns(Some(c), SPARK_COLUMNS))
            )?;
            writeln!(out, "      {}", st.dim(c.summary()))?;
            let phases: Vec<String> = s
                .phases()
                .iter()
                .map(|(p, k)| format!("{p} ({k})"))
                .collect();
            writeln!(out, "      phase: {}", phases.join(", "))?;
            if !s.details().is_empty() {
                let mut d: Vec<(String, u64)> = s
                    .details()
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect();
                d.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                writeln!(out, "      detail: {}", list(&d))?;
            }
            if !s.statuses.is_empty() {
                let sts: Vec<String> = s
                    .statuses
                    .iter()
                    .map(|(k, v)| format!("{k} x{v}"))
                    .collect();
                writeln!(out, "      status: {}", sts.join(", "))?;
            }
            let ups = s.upstreams.top(n);
            if !ups.is_empty() {
                writeln!(out, "      upstreams: {}", list(&ups))?;
            }
            let hosts = s.hosts.top(n);
            if !hosts.is_empty() {
                writeln!(out, "      hosts: {}", list(&hosts))?;
            }
        }
        writeln!(
            out,
            "  {}",
            st.dim(&format!(
                "timeline: {} columns from first to last error",
                SPARK_COLUMNS
            ))
        )?;

        let incidents = total.incidents();
        if !incidents.is_empty() {
            writeln!(out)?;
            writeln!(
                out,
                "{}",
                st.bold("Incidents (errors close together, largest first)")
            )?;
            for (i, inc) in incidents.iter().take(n).enumerate() {
                let mut causes: Vec<(String, u64)> = inc
                    .causes
                    .iter()
                    .map(|(c, k)| (c.as_str().to_string(), *k))
                    .collect();
                causes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                writeln!(
                    out,
                    "  {}. {} .. {}  {} error(s): {}",
                    i + 1,
                    time(inc.start),
                    time(inc.end),
                    inc.count,
                    list(&causes)
                )?;
            }
            if incidents.len() > n {
                writeln!(out, "  ... and {} more", incidents.len() - n)?;
            }
        }
    }

    let patterns = total.patterns();
    if !patterns.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", st.bold("Patterns"))?;
        for p in patterns {
            writeln!(out, "  - {} ({})", p.text, p.name)?;
        }
    }

    writeln!(out)?;
    writeln!(out, "{}", st.bold("Not counted as gateway errors"))?;
    writeln!(
        out,
        "  follow-up lines:     {:>8}  (more lines about errors counted above)",
        total.follow_ups
    )?;
    let relayed: u64 = total.relayed.values().sum();
    writeln!(
        out,
        "  relayed from upstream: {relayed:>6}  (the application's own errors, passed on)"
    )?;
    for (d, k) in &total.relayed {
        writeln!(out, "      {d}: {k}")?;
    }
    writeln!(
        out,
        "  skipped:             {:>8}  (not gateway errors)",
        total.skipped
    )?;
    writeln!(
        out,
        "  unrecognized:        {:>8}  (look like errors, no rule knows them)",
        total.unrecognized
    )?;
    for e in &total.unrecognized_examples {
        writeln!(out, "      {}", st.dim(e))?;
    }

    let recs = total.recommendations();
    if !recs.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", st.bold("What to do, most impactful first"))?;
        for (i, r) in recs.iter().enumerate() {
            writeln!(out, "  {}. {} ({}):", i + 1, r.cause, r.count)?;
            for fix in r.fixes.iter().take(4) {
                writeln!(out, "     - {fix}")?;
            }
        }
        writeln!(
            out,
            "  {}",
            st.dim("each cause is explained in docs/causes.md")
        )?;
    }
    Ok(())
}
