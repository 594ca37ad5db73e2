//! `cleargate logs --follow`: reads a growing file and refreshes the summary as lines arrive.
//!
//! The file is polled, not watched: that works the same on every file system and needs no
//! extra dependency. A file that shrinks was rotated or truncated and is read again from its
//! start. Only complete lines are classified; a partial last line waits for its newline.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use logscan::scan::{Scanner, MAX_LINE};
use logscan::Format;

/// Follows one file from wherever it was last read.
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    skipping: bool,
}

impl Tail {
    pub fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
            skipping: false,
        }
    }

    /// Reads what was appended since the last call; returns how many lines were classified.
    pub fn poll(&mut self, scanner: &mut Scanner<'_>) -> io::Result<u64> {
        let mut file = File::open(&self.path)?;
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut lines = 0;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.offset += n as u64;
            let mut rest = &buf[..n];
            while let Some(i) = memchr_newline(rest) {
                if self.skipping {
                    self.skipping = false;
                } else if self.partial.is_empty() {
                    scanner.line(&rest[..i]);
                    lines += 1;
                } else {
                    let take = (MAX_LINE - self.partial.len().min(MAX_LINE)).min(i);
                    self.partial.extend_from_slice(&rest[..take]);
                    scanner.line(&self.partial);
                    self.partial.clear();
                    lines += 1;
                }
                rest = &rest[i + 1..];
            }
            if !self.skipping {
                let take = (MAX_LINE - self.partial.len().min(MAX_LINE)).min(rest.len());
                self.partial.extend_from_slice(&rest[..take]);
                if self.partial.len() >= MAX_LINE {
                    scanner.line(&self.partial);
                    self.partial.clear();
                    self.skipping = true;
                    lines += 1;
                }
            }
        }
        Ok(lines)
    }
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

pub fn run(path: &Path, format: Option<Format>, top: usize) -> anyhow::Result<ExitCode> {
    let mut scanner = Scanner::new(format);
    let mut tail = Tail::new(path);
    let tty = io::stdout().is_terminal();
    let mut last_print = Instant::now() - Duration::from_secs(60);
    let mut dirty = true;
    loop {
        match tail.poll(&mut scanner) {
            Ok(n) => dirty |= n > 0,
            Err(e) => eprintln!("cleargate: {}: {e}", path.display()),
        }
        if dirty && last_print.elapsed() >= Duration::from_secs(2) {
            let out = io::stdout();
            let mut out = out.lock();
            let s = &scanner.summary;
            if tty {
                // Redraw the whole report in place.
                write!(out, "\x1b[2J\x1b[H")?;
                let file = super::FileReport {
                    name: path.display().to_string(),
                    summary: s.clone(),
                    error: None,
                };
                super::text::report(&mut out, std::slice::from_ref(&file), s, top, true)?;
                writeln!(out, "\nfollowing {} (Ctrl-C stops)", path.display())?;
            } else {
                let causes: Vec<String> = s
                    .ranked()
                    .iter()
                    .map(|(c, st)| format!("{c}={}", st.count))
                    .collect();
                writeln!(
                    out,
                    "{} lines, {} gateway errors: {}",
                    s.lines,
                    s.total(),
                    causes.join(" ")
                )?;
            }
            out.flush()?;
            last_print = Instant::now();
            dirty = false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_appended_lines_waits_for_partial_ones_and_survives_truncation() {
        let dir = std::env::temp_dir().join(format!("cleargate-follow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("error.log");
        let line = "2024/05/01 10:12:09 [error] 1#1: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 203.0.113.7, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://10.0.2.15:8080/\", host: \"a\"\n";
        std::fs::write(&path, line).unwrap();
        let mut scanner = Scanner::new(None);
        let mut tail = Tail::new(&path);
        assert_eq!(tail.poll(&mut scanner).unwrap(), 1);
        // Half a line: not classified until its newline arrives.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&line.as_bytes()[..50]).unwrap();
        assert_eq!(tail.poll(&mut scanner).unwrap(), 0);
        f.write_all(&line.as_bytes()[50..]).unwrap();
        assert_eq!(tail.poll(&mut scanner).unwrap(), 1);
        assert_eq!(scanner.summary.total(), 2);
        // Rotation by truncation: read again from the start.
        std::fs::write(&path, line).unwrap();
        assert_eq!(tail.poll(&mut scanner).unwrap(), 1);
        assert_eq!(scanner.summary.total(), 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
