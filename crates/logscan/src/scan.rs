//! Streaming: bytes in, lines out, findings into a [`Summary`], in bounded memory.
//!
//! Lines are cut with `memchr` out of a fixed buffer; a line longer than [`MAX_LINE`] is
//! classified on its first [`MAX_LINE`] bytes and the rest is dropped, so one endless line cannot
//! grow memory. `\r\n` endings and a last line without a newline are fine. A large regular file is
//! split into byte ranges at newline boundaries and scanned by several threads, whose summaries
//! are merged.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use crate::{parse_line, Finding, Format, Line, State, Summary};

/// The longest line classified whole, in bytes.
pub const MAX_LINE: usize = 64 * 1024;
const BUF: usize = 1024 * 1024;
/// Files smaller than this are scanned by one thread: splitting costs more than it saves.
pub const PARALLEL_MIN: u64 = 32 * 1024 * 1024;

/// What `--findings` and the tests hand every finding to, with its line.
pub type OnFinding<'s> = &'s mut dyn FnMut(&Finding<'_>, &[u8]);

/// Classifies lines into a summary, and optionally hands each finding to a callback.
pub struct Scanner<'s> {
    pub format: Option<Format>,
    pub summary: Summary,
    state: State,
    on_finding: Option<OnFinding<'s>>,
}

impl<'s> Scanner<'s> {
    pub fn new(format: Option<Format>) -> Scanner<'s> {
        Scanner {
            format,
            summary: Summary::new(),
            state: State::default(),
            on_finding: None,
        }
    }

    /// Calls `f` for every finding (follow-ups included), with its line.
    pub fn with_callback(mut self, f: OnFinding<'s>) -> Self {
        self.on_finding = Some(f);
        self
    }

    /// One line, without its `\n`.
    pub fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            self.summary.line(None);
            self.summary.skipped();
            return;
        }
        match parse_line(line, self.format, &mut self.state) {
            Line::Finding(f) => {
                self.summary.line(Some(f.format));
                self.summary.finding(&f, line);
                if let Some(cb) = self.on_finding.as_mut() {
                    cb(&f, line);
                }
            }
            Line::Relayed(r) => {
                self.summary.line(Some(r.format));
                self.summary.relayed(&r);
            }
            Line::Skipped(fmt) => {
                self.summary.line(fmt);
                self.summary.skipped();
            }
            Line::Unrecognized(fmt) => {
                self.summary.line(Some(fmt));
                self.summary.unrecognized(line);
            }
        }
    }

    /// Reads `r` to its end (or until `limit` bytes), one line at a time.
    pub fn read(&mut self, r: &mut dyn Read, limit: Option<u64>) -> io::Result<()> {
        let mut lines = LineReader::new();
        lines.run(r, limit, &mut |l| self.line(l))
    }
}

/// Cuts a byte stream into lines with a fixed buffer.
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes of the current, too long line are being dropped until its newline.
    skipping: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        Self::new()
    }
}

impl LineReader {
    pub fn new() -> LineReader {
        LineReader {
            buf: vec![0; BUF],
            skipping: false,
        }
    }

    /// Feeds every line of `r` to `each`; the last line needs no newline.
    pub fn run(
        &mut self,
        r: &mut dyn Read,
        limit: Option<u64>,
        each: &mut dyn FnMut(&[u8]),
    ) -> io::Result<()> {
        let mut filled = 0;
        let mut left = limit.unwrap_or(u64::MAX);
        loop {
            let room = (self.buf.len() - filled).min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = if room == 0 {
                0
            } else {
                match r.read(&mut self.buf[filled..filled + room]) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            left -= n as u64;
            let end = filled + n;
            let mut start = 0;
            while let Some(i) = memchr::memchr(b'\n', &self.buf[start..end]) {
                if self.skipping {
                    self.skipping = false;
                } else {
                    each(&self.buf[start..start + i]);
                }
                start += i + 1;
            }
            if n == 0 {
                if start < end && !self.skipping {
                    each(&self.buf[start..end]);
                }
                self.skipping = false;
                return Ok(());
            }
            // Keep the partial line; if it fills the buffer, classify its head and drop the rest.
            let partial = end - start;
            if partial >= MAX_LINE && !self.skipping {
                each(&self.buf[start..start + MAX_LINE]);
                self.skipping = true;
            }
            if self.skipping {
                filled = 0;
            } else {
                self.buf.copy_within(start..end, 0);
                filled = partial;
            }
        }
    }
}

/// Scans any reader with one thread.
pub fn scan_reader(r: &mut dyn Read, format: Option<Format>) -> io::Result<Summary> {
    let mut s = Scanner::new(format);
    s.read(r, None)?;
    Ok(s.summary)
}

/// Splits `file` of `len` bytes into up to `parts` ranges that start right after a newline.
pub fn split_ranges(file: &mut File, len: u64, parts: usize) -> io::Result<Vec<(u64, u64)>> {
    let mut cuts = vec![0u64];
    for i in 1..parts.max(1) {
        let guess = len * i as u64 / parts as u64;
        let prev = *cuts.last().expect("starts with 0");
        if guess <= prev {
            continue;
        }
        file.seek(SeekFrom::Start(guess))?;
        let mut probe = vec![0u8; 64 * 1024];
        let mut at = guess;
        let cut = loop {
            let n = file.read(&mut probe)?;
            if n == 0 {
                break len;
            }
            if let Some(i) = memchr::memchr(b'\n', &probe[..n]) {
                break at + i as u64 + 1;
            }
            at += n as u64;
        };
        if cut > prev && cut < len {
            cuts.push(cut);
        }
    }
    cuts.push(len);
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).collect())
}

/// Scans a regular file, in parallel byte ranges when it is large.
pub fn scan_file(path: &Path, format: Option<Format>, threads: usize) -> io::Result<Summary> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if threads <= 1 || len < PARALLEL_MIN {
        return scan_reader(&mut file, format);
    }
    scan_ranges(path, &mut file, len, format, threads)
}

/// Scans `file` in `threads` byte ranges at once and merges their summaries.
fn scan_ranges(
    path: &Path,
    file: &mut File,
    len: u64,
    format: Option<Format>,
    threads: usize,
) -> io::Result<Summary> {
    let ranges = split_ranges(file, len, threads)?;
    let results: Vec<io::Result<Summary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                scope.spawn(move || -> io::Result<Summary> {
                    let mut f = File::open(path)?;
                    f.seek(SeekFrom::Start(start))?;
                    let mut s = Scanner::new(format);
                    s.read(&mut f, Some(end - start))?;
                    Ok(s.summary)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("a scanning thread panicked")))
            })
            .collect()
    });
    let mut total = Summary::new();
    for r in results {
        total.merge(&r?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        LineReader::new()
            .run(&mut &input[..], None, &mut |l| out.push(l.to_vec()))
            .unwrap();
        out
    }

    #[test]
    fn cuts_lines_with_and_without_final_newline() {
        assert_eq!(lines_of(b"a\nb\n"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(lines_of(b"a\nb"), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(lines_of(b"").is_empty());
    }

    #[test]
    fn ranges_start_at_lines_and_their_merge_equals_one_pass() {
        let path = std::env::temp_dir().join(format!("logscan-ranges-{}", std::process::id()));
        let lines = [
            "2024/05/01 10:12:09 [error] 1#1: *1 connect() failed (111: Connection refused) while connecting to upstream, client: 1.2.3.4, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://10.0.0.1:80/\", host: \"a\"",
            "2024/05/01 10:13:09 [error] 1#1: *2 upstream timed out (110: Connection timed out) while reading response header from upstream, client: 1.2.3.4, server: a, request: \"GET / HTTP/1.1\", upstream: \"http://10.0.0.2:80/\", host: \"b\"",
            "2024/05/01 10:14:09 [notice] 1#1: signal process started",
            "2024/05/01 10:15:09 [error] 1#1: *3 something new",
        ];
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(lines[i % lines.len()]);
            text.push('\n');
        }
        std::fs::write(&path, &text).unwrap();
        let one = scan_reader(&mut File::open(&path).unwrap(), None).unwrap();
        let mut f = File::open(&path).unwrap();
        let len = text.len() as u64;
        for (start, _) in split_ranges(&mut f, len, 3).unwrap() {
            assert!(start == 0 || text.as_bytes()[start as usize - 1] == b'\n');
        }
        let many = scan_ranges(&path, &mut f, len, None, 3).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(many.lines, 5000);
        assert_eq!(many.lines, one.lines);
        assert_eq!(many.total(), one.total());
        assert_eq!(many.unrecognized, one.unrecognized);
        assert_eq!(many.skipped, one.skipped);
        assert_eq!(many.incidents(), one.incidents());
    }

    #[test]
    fn very_long_line_is_cut_and_the_next_survives() {
        let mut input = vec![b'x'; 3 * BUF];
        input.extend_from_slice(b"\nnext\n");
        let got = lines_of(&input);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), MAX_LINE);
        assert_eq!(got[1], b"next");
    }
}
