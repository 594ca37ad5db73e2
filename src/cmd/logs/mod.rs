//! `cleargate logs`: reads the logs of nginx, Apache httpd, HAProxy, Caddy, Envoy and cleargate,
//! and says which gateway errors happened, how often, where, when, and what to do about them.
//!
//! Parsing and aggregation live in `crates/logscan`; this module opens the inputs (files, gzip,
//! stdin, a growing file) and renders the summary as a terminal report (`text.rs`), JSON
//! (`json.rs`) or a self-contained HTML page (`html.rs`).

mod follow;
mod html;
mod json;
mod text;

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use logscan::scan::{scan_file, Scanner};
use logscan::{Format, Summary};

#[derive(clap::Args)]
#[command(after_help = "\
Find out why your site gave 502s last night:
  cleargate logs /var/log/nginx/error.log /var/log/nginx/error.log.1.gz

Formats are detected per line: nginx error.log, Apache httpd error_log (2.4), HAProxy logs with
`option httplog` (syslog or raw), Caddy's JSON log, Envoy's access log in its default format, and
cleargate's own JSON log. Lines that are not gateway errors
are skipped and counted; error lines no rule knows are counted as unrecognized, with examples.

Examples:
  cleargate logs error.log                     the report in the terminal
  cleargate logs --json error.log | jq .by_cause
  cleargate logs --html report.html a.log b.log.gz
  zcat old.log.gz | cleargate logs -           read standard input
  cleargate logs --follow /var/log/nginx/error.log
  cleargate logs --findings error.log          one JSON line per classified line

Every cause is explained in docs/causes.md; the message-to-cause table is in docs/logs.md.")]
pub struct Args {
    /// Log files to read: plain or gzip; `-` reads standard input
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Read every line as this format instead of detecting it: nginx, apache, haproxy, caddy,
    /// envoy, cleargate
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// Print the summary as JSON instead of the terminal report
    #[arg(long, conflicts_with = "findings")]
    json: bool,
    /// Also write a self-contained HTML report (timeline per cause, tables) to this file
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print one JSON line per classified log line instead of a summary
    #[arg(long)]
    findings: bool,
    /// Keep reading the (single) file as it grows, with a live summary; Ctrl-C stops
    #[arg(long, conflicts_with_all = ["json", "findings", "html"])]
    follow: bool,
    /// Threads for large files (default: the number of cores)
    #[arg(long)]
    threads: Option<usize>,
    /// How many upstreams, hosts and incidents to list
    #[arg(long, default_value_t = 5)]
    top: usize,
}

fn parse_format(s: &str) -> Result<Format, String> {
    let names: Vec<&str> = Format::ALL.iter().map(|f| f.as_str()).collect();
    Format::parse(s).ok_or_else(|| format!("unknown format `{s}`; use {}", names.join(", ")))
}

/// What was read from one input.
pub struct FileReport {
    pub name: String,
    pub summary: Summary,
    /// Set when the input could not be read to its end; what was read still counts.
    pub error: Option<String>,
}

impl FileReport {
    /// The format most of its lines had.
    pub fn format(&self) -> &'static str {
        self.summary
            .formats()
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map_or("unknown", |(f, _)| f.as_str())
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.follow {
        anyhow::ensure!(
            args.files.len() == 1 && args.files[0] != Path::new("-"),
            "--follow takes exactly one file (not standard input)"
        );
        return follow::run(&args.files[0], args.format, args.top);
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if args.findings {
        return print_findings(&args);
    }
    let mut files = Vec::new();
    let mut total = Summary::new();
    for path in &args.files {
        let report = read_input(path, args.format, threads);
        total.merge(&report.summary);
        files.push(report);
    }
    let failed = files.iter().filter(|f| f.error.is_some()).count();
    for f in &files {
        if let Some(e) = &f.error {
            eprintln!("cleargate: {}: {e}", f.name);
        }
    }
    let out = io::stdout();
    let mut out = out.lock();
    if args.json {
        let v = json::report(&files, &total, args.top);
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let colour = io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        text::report(&mut out, &files, &total, args.top, colour)?;
    }
    if let Some(html_path) = &args.html {
        let page = html::report(&files, &total, args.top);
        std::fs::write(html_path, page)
            .with_context(|| format!("cannot write {}", html_path.display()))?;
        if !args.json {
            writeln!(out, "\nHTML report written to {}", html_path.display())?;
        }
    }
    out.flush()?;
    Ok(if failed > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "(stdin)".to_string()
    } else {
        path.display().to_string()
    }
}

/// Opens `path` (`-` for stdin), unwrapping gzip when the first bytes say so.
fn open(path: &Path) -> io::Result<(Box<dyn Read>, bool)> {
    let raw: Box<dyn Read> = if path == Path::new("-") {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path)?)
    };
    let mut r = BufReader::with_capacity(256 * 1024, raw);
    let magic = {
        use std::io::BufRead;
        let head = r.fill_buf()?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    if magic {
        Ok((Box::new(flate2::read::MultiGzDecoder::new(r)), true))
    } else {
        Ok((Box::new(r), false))
    }
}

/// Reads one input completely; errors are kept in the report, never fatal for the others.
fn read_input(path: &Path, format: Option<Format>, threads: usize) -> FileReport {
    let name = display_name(path);
    let mut report = FileReport {
        name,
        summary: Summary::new(),
        error: None,
    };
    let is_plain_file = path != Path::new("-")
        && std::fs::metadata(path).is_ok_and(|m| m.is_file())
        && matches!(open(path), Ok((_, false)));
    if is_plain_file {
        match scan_file(path, format, threads) {
            Ok(s) => report.summary = s,
            Err(e) => report.error = Some(format!("cannot read: {e}")),
        }
        return report;
    }
    match open(path) {
        Ok((mut r, _)) => {
            let mut scanner = Scanner::new(format);
            if let Err(e) = scanner.read(&mut r, None) {
                report.error = Some(format!("read stopped early: {e}"));
            }
            report.summary = scanner.summary;
        }
        Err(e) => report.error = Some(format!("cannot open: {e}")),
    }
    report
}

/// `--findings`: one JSON object per classified line, in input order.
fn print_findings(args: &Args) -> anyhow::Result<ExitCode> {
    let out = io::stdout();
    let mut out = io::BufWriter::new(out.lock());
    let mut failed = false;
    for path in &args.files {
        let name = display_name(path);
        let mut write_err: Option<io::Error> = None;
        let mut cb = |f: &logscan::Finding<'_>, line: &[u8]| {
            if write_err.is_some() {
                return;
            }
            let v = json::finding(&name, f, line);
            if let Err(e) = writeln!(out, "{v}") {
                write_err = Some(e);
            }
        };
        let result = open(path).and_then(|(mut r, _)| {
            let mut scanner = Scanner::new(args.format).with_callback(&mut cb);
            scanner.read(&mut r, None)
        });
        if let Some(e) = write_err {
            return Err(e.into());
        }
        if let Err(e) = result {
            eprintln!("cleargate: {name}: {e}");
            failed = true;
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
