//! `cleargate doctor URL --watch` end to end, on loopback only: the binary watches lab faults
//! started in-process on port 0 for a bounded number of probes, and the availability it measures
//! is compared with what the fault was configured to do.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use lab::{Fault, Lab, LabOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cleargate");

/// Runs `cleargate doctor ARGS` off the runtime's threads, so the lab keeps serving.
async fn doctor(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("doctor")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Every stdout line as JSON: the probes, then the summary.
fn json_lines(out: &Output) -> (Vec<Value>, Value) {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut values: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = values.pop().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{text}");
    assert_eq!(summary["summary"], true);
    assert!(values.iter().all(|v| v["type"] == "probe"), "{text}");
    (values, summary)
}

async fn one(fault: Fault, opts: LabOptions) -> Lab {
    Lab::start(&[(fault, 0)], [127, 0, 0, 1].into(), opts)
        .await
        .expect("lab starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_every_fourth_request_reset_measures_75_percent() {
    // Deterministic: the lab resets its 4th, 8th, ... request, and each probe is one request.
    let every = 4u32;
    let probes = 40u64;
    let lab = one(
        Fault::Flaky,
        LabOptions {
            flaky_every: Some(every),
            ..LabOptions::default()
        },
    )
    .await;
    let addr = lab.addr(Fault::Flaky).unwrap();
    let out = doctor(args(&[
        &format!("http://{addr}/health"),
        "--watch",
        "20ms",
        "--count",
        &probes.to_string(),
        "--timeout",
        "2s",
        "--json",
    ]))
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (lines, summary) = json_lines(&out);
    assert_eq!(lines.len() as u64, probes);
    for (i, l) in lines.iter().enumerate() {
        let seq = i as u64 + 1;
        assert_eq!(l["seq"], seq);
        assert!(l["time"].as_str().unwrap().ends_with('Z'), "{l}");
        assert!(l["ms"].as_f64().unwrap() >= 0.0);
        if seq % u64::from(every) == 0 {
            assert_eq!(l["ok"], false, "{l}");
            assert_eq!(l["cause"], "reset", "{l}");
            assert_eq!(l["phase"], "read_head", "{l}");
            assert_eq!(l["status"], Value::Null, "{l}");
        } else {
            assert_eq!(l["ok"], true, "{l}");
            assert_eq!(l["status"], 200, "{l}");
            assert_eq!(l["cause"], Value::Null, "{l}");
        }
    }
    let expected = 100.0 * (1.0 - 1.0 / f64::from(every));
    let measured = summary["availability_pct"].as_f64().unwrap();
    assert!(
        (measured - expected).abs() <= 3.0,
        "measured {measured}%, configured {expected}%"
    );
    assert_eq!(summary["probes"], probes);
    assert_eq!(summary["ok"], 30);
    assert_eq!(summary["failed"], 10);
    assert_eq!(summary["stopped"], "count");
    let by = summary["failures_by_cause"].as_array().unwrap();
    assert_eq!(by.len(), 1, "{summary}");
    assert_eq!(by[0]["key"], "reset@read_head");
    assert_eq!(by[0]["count"], 10);
    assert_eq!(summary["longest_outage"]["failures"], 1);
    assert_eq!(summary["latency_ms"]["count"], 30);
    // The lab saw one request per probe.
    assert_eq!(lab.stats(Fault::Flaky).requests, probes);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_ok_is_100_percent_and_exit_0() {
    let lab = one(Fault::Ok, LabOptions::default()).await;
    let url = format!("http://{}/", lab.addr(Fault::Ok).unwrap());
    let out = doctor(args(&[&url, "--watch", "20ms", "--count", "10"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("10/10 = 100.0%"), "{text}");
    assert!(text.contains("failures        none"), "{text}");
    assert!(!text.contains("FAIL"), "{text}");
    // Not a terminal: no status line redrawn in place.
    assert!(
        !text.contains("\x1b[2K") && !text.contains('\r'),
        "{text:?}"
    );

    // --for bounds the watch by time; the JSON says why it stopped.
    let out = doctor(args(&[&url, "--watch", "20ms", "--for", "200ms", "--json"])).await;
    assert_eq!(out.status.code(), Some(0));
    let (lines, summary) = json_lines(&out);
    assert!(!lines.is_empty() && lines.len() <= 11, "{}", lines.len());
    assert_eq!(summary["stopped"], "duration");
    assert_eq!(summary["availability_pct"], 100.0);
    assert_eq!(summary["probes"], lines.len());
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_error_page_is_named_by_its_proxy_status_and_failures_print_a_line() {
    let h = common::start("").await;
    let url = format!("http://{}/f/refused", h.addr);
    let out = doctor(args(&[&url, "--watch", "20ms", "--count", "3", "--json"])).await;
    assert_eq!(out.status.code(), Some(1));
    let (lines, summary) = json_lines(&out);
    for l in &lines {
        assert_eq!(l["status"], 502, "{l}");
        assert_eq!(l["cause"], "refused", "{l}");
        assert_eq!(l["phase"], "connect", "{l}");
        assert_eq!(l["by"], "cleargate", "{l}");
    }
    assert_eq!(summary["failures_by_cause"][0]["key"], "refused@connect");
    assert_eq!(summary["longest_outage"]["failures"], 3);
    assert_eq!(summary["longest_outage"]["ongoing"], true);

    // The application's own 503: no cause, the status is counted.
    let url = format!("http://{}/f/status", h.addr);
    let out = doctor(args(&[&url, "--watch", "20ms", "--count", "2"])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(text.matches("FAIL").count(), 2, "{text}");
    assert!(text.contains("status 503"), "{text}");
    assert!(text.contains("2 status 503"), "{text}");
    assert!(text.contains("0/2 = 0.0%"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_ends_the_watch_with_a_summary() {
    let lab = one(Fault::Ok, LabOptions::default()).await;
    let url = format!("http://{}/", lab.addr(Fault::Ok).unwrap());
    let (first, rest, code) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(BIN)
            .args(["doctor", &url, "--watch", "20ms", "--json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        // The first probe is printed, so the Ctrl-C handler is in place.
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let rest: Vec<String> = out.lines().map(Result::unwrap).collect();
        let code = child.wait().unwrap().code();
        (first, rest, code)
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(v["seq"], 1);
    let summary: Value = serde_json::from_str(rest.last().expect("a summary")).unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["stopped"], "interrupted");
    assert_eq!(code, Some(0));
    lab.shutdown().await;
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for bad in [
        vec![
            "http://127.0.0.1:1/",
            "--watch",
            "--upstream",
            "127.0.0.1:2",
        ],
        vec!["http://127.0.0.1:1/", "--watch", "--origin", "127.0.0.1"],
        vec!["http://127.0.0.1:1/", "--watch", "--repeat", "2"],
        vec!["http://127.0.0.1:1/", "--watch", "--error-log", "x.log"],
        vec!["http://127.0.0.1:1/", "--for", "1s"],
        vec!["http://127.0.0.1:1/", "--watch", "0s", "--count", "1"],
        vec!["http://127.0.0.1:1/", "--watch", "soon"],
        vec!["--watch", "http://127.0.0.1:1/"],
        vec!["ftp://x/", "--watch", "--count", "1"],
    ] {
        let out = doctor(args(&bad)).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = doctor(args(&["--help"])).await;
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--watch") && help.contains("--for"), "{help}");
    assert!(!help.contains("--count"), "--count is hidden: {help}");
}
