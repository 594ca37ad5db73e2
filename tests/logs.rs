//! `cleargate logs` end to end: the binary on fixture logs, its terminal report and JSON compared
//! with snapshots, and the inputs that must never break it (gzip, stdin, CRLF, garbage, empty
//! files, cut-off lines, several formats at once).
//!
//! Snapshots live in tests/snapshots/; `UPDATE_SNAPSHOTS=1 cargo test --test logs` rewrites them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/logscan/tests/fixtures/samples")
}

/// A fresh scratch folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cleargate-logs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `cleargate logs ARGS` in `dir` with `stdin`; returns (exit code, stdout).
fn logs(dir: &Path, args: &[&str], stdin: &[u8]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .arg("logs")
        .args(args)
        .current_dir(dir)
        .env_remove("NO_COLOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("utf-8 output"),
    )
}

fn json(dir: &Path, args: &[&str], stdin: &[u8]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out) = logs(dir, &all, stdin);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(&out).unwrap()
}

#[track_caller]
fn snapshot(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no snapshot {name}; run with UPDATE_SNAPSHOTS=1"));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "snapshot {name} differs from line {}:\nexpected: {:?}\nactual:   {:?}\n(UPDATE_SNAPSHOTS=1 to accept)",
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

const FILES: [&str; 4] = [
    "nginx-error.sample.log",
    "apache-error.sample.log",
    "haproxy.sample.log",
    "cleargate.log",
];

#[test]
fn terminal_report_snapshot() {
    let (code, out) = logs(&samples(), &FILES, b"");
    assert_eq!(code, 0);
    assert!(!out.contains('\x1b'), "no colour when not on a terminal");
    snapshot("logs-report.txt", &out);
}

#[test]
fn json_snapshot() {
    let v = json(&samples(), &FILES, b"");
    snapshot(
        "logs-report.json",
        &serde_json::to_string_pretty(&v).unwrap(),
    );
}

#[test]
fn json_counts_what_the_samples_hold() {
    let dir = samples();
    let check = |file: &str, by_cause: serde_json::Value, unrecognized: u64| {
        let v = json(&dir, &[file], b"");
        assert_eq!(v["by_cause"], by_cause, "{file}");
        assert_eq!(v["unrecognized"], unrecognized, "{file}");
    };
    check(
        "cleargate.log",
        serde_json::json!({ "refused": 1, "reset": 1 }),
        0,
    );
    let v = json(&dir, &["cleargate.log"], b"");
    assert_eq!(
        v["follow_up"], 2,
        "gateway_error lines are follow-ups of access lines"
    );
    assert_eq!(v["relayed"]["the upstream answered 5xx"], 1);
    assert_eq!(v["causes"][1]["reused_connection"], 1);
    assert_eq!(v["causes"][0]["top_hosts"][0]["name"], "shop.example");
}

#[test]
fn gzip_stdin_and_mixed_formats_add_up() {
    let dir = scratch("gzip");
    let nginx = std::fs::read(samples().join("nginx-error.sample.log")).unwrap();
    let apache = std::fs::read(samples().join("apache-error.sample.log")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&nginx).unwrap();
    std::fs::write(dir.join("error.log.gz"), gz.finish().unwrap()).unwrap();
    let plain = json(&samples(), &["nginx-error.sample.log"], b"");
    let zipped = json(&dir, &["error.log.gz"], b"");
    assert_eq!(plain["by_cause"], zipped["by_cause"]);
    let stdin = json(&dir, &["-"], &nginx);
    assert_eq!(plain["by_cause"], stdin["by_cause"]);
    assert_eq!(stdin["files"][0]["file"], "(stdin)");

    // Two formats in one stream: each line is read as what it looks like.
    let mut mixed = nginx.clone();
    mixed.extend_from_slice(&apache);
    let both = json(&dir, &["-"], &mixed);
    let apart = json(
        &samples(),
        &["nginx-error.sample.log", "apache-error.sample.log"],
        b"",
    );
    assert_eq!(both["by_cause"], apart["by_cause"]);
    assert_eq!(both["gateway_errors"], apart["gateway_errors"]);
}

#[test]
fn odd_inputs_are_counted_not_fatal() {
    let dir = scratch("odd");
    let line = "2024/05/01 10:12:09 [error] 2742#2742: *1755 connect() failed (111: Connection refused) while connecting to upstream, client: 203.0.113.7, server: api, request: \"GET / HTTP/1.1\", upstream: \"http://[2001:db8::15]:8080/\", host: \"api\"";
    let write = |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).unwrap();
    write("empty.log", b"");
    write("zero.gz", b"");
    let mut empty_gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    empty_gz.write_all(b"").unwrap();
    write("empty-content.gz", &empty_gz.finish().unwrap());
    write("crlf.log", format!("{line}\r\n{line}\r\n").as_bytes());
    let mut garbage: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    garbage.extend_from_slice(b"\n\xff\xfe[error] \x00\n");
    write("garbage.bin", &garbage);
    write("truncated.log", &line.as_bytes()[..line.len() - 40]);
    let mut long = format!("{line}, referrer: \"").into_bytes();
    long.extend(std::iter::repeat_n(b'a', 3 * 1024 * 1024));
    long.extend_from_slice(format!("\"\n{line}\n").as_bytes());
    write("long.log", &long);

    let v = json(
        &dir,
        &[
            "empty.log",
            "zero.gz",
            "empty-content.gz",
            "crlf.log",
            "garbage.bin",
            "truncated.log",
            "long.log",
        ],
        b"",
    );
    // crlf 2 + truncated 1 + the long line (classified on its head) and the one after it.
    assert_eq!(v["by_cause"], serde_json::json!({ "refused": 5 }), "{v:#}");
    assert_eq!(
        v["causes"][0]["top_upstreams"][0]["name"],
        "[2001:db8::15]:8080"
    );
    for f in v["files"].as_array().unwrap() {
        assert!(f["error"].is_null(), "{f}");
    }

    // A corrupt gzip keeps what it read and says so, with exit code 2, without stopping the rest.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(format!("{line}\n").repeat(1000).as_bytes())
        .unwrap();
    let bytes = gz.finish().unwrap();
    write("cut.gz", &bytes[..bytes.len() / 2]);
    let (code, out) = logs(&dir, &["--json", "cut.gz", "crlf.log"], b"");
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(v["files"][0]["error"].is_string());
    assert!(v["by_cause"]["refused"].as_u64().unwrap() >= 2);

    let (code, _) = logs(&dir, &["missing.log"], b"");
    assert_eq!(code, 2);
}

#[test]
fn html_report_is_self_contained() {
    let dir = scratch("html");
    let out = dir.join("report.html");
    let (code, _) = logs(
        &samples(),
        &["--html", out.to_str().unwrap(), "nginx-error.sample.log"],
        b"",
    );
    assert_eq!(code, 0);
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.starts_with("<!doctype html>"));
    assert!(page.contains("<svg class=\"chart\""));
    assert!(page.contains("fill=\"#d9480f\""), "timeline bars drawn");
    for external in ["src=\"http", "href=\"http", "<script", "@import", "url("] {
        assert!(!page.contains(external), "{external}");
    }
}

#[test]
fn findings_are_one_json_object_per_line() {
    let (code, out) = logs(&samples(), &["--findings", "apache-error.sample.log"], b"");
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 22 lines: a startup notice is skipped, a PHP-FPM message is relayed, the rest are findings.
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0]["cause"], "refused");
    assert_eq!(rows[0]["upstream"], "127.0.0.1:8080");
    assert_eq!(rows[1]["follow_up"], true);
}
