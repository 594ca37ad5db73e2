//! `cleargate doctor` end to end, on loopback only: pointed straight at every lab fault, at the
//! gateway in front of each (reading its `Proxy-Status`), with `--upstream` confirming the cause;
//! DNS cases against a fake name server; TLS cases against test certificates; snapshots of the
//! human report and of the JSON; and the CLI's exit codes.

mod common;
#[path = "support/fake_dns.rs"]
mod fake_dns;
#[path = "support/tls_server.rs"]
mod tls_server;

use std::net::Ipv4Addr;
use std::time::Duration;

use cause::{Cause, Phase};
use doctor::{Options, Report};
use fake_dns::{FakeDns, Zone};
use lab::{Fault, Lab, LabOptions};

/// Long enough that a healthy loopback answer never misses it on a loaded machine, short enough
/// that the timeout cases stay quick.
const STEP: Duration = Duration::from_secs(1);

async fn run(url: &str, tune: impl FnOnce(&mut Options)) -> Report {
    let mut opts = Options::new(url);
    opts.timeout = STEP;
    opts.max_time = Duration::from_secs(20);
    opts.repeat = Some(0);
    tune(&mut opts);
    doctor::run(&opts, &|_| {}).await.expect("a valid URL")
}

fn verdict(
    r: &Report,
) -> (
    Option<Cause>,
    Option<Phase>,
    Option<&'static str>,
    Option<u16>,
) {
    (
        r.verdict.cause,
        r.verdict.phase,
        r.verdict.hop,
        r.verdict.status,
    )
}

/// The lab's CA, for the TLS faults.
fn lab_roots(lab: &Lab) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    net::tls::load_pem_certs(lab.ca_pem().unwrap().as_bytes()).unwrap()
}

async fn lab() -> Lab {
    Lab::start_all(LabOptions {
        slow_delay: Duration::from_millis(50),
        flaky_every: Some(2),
        ..LabOptions::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn straight_at_every_lab_fault_the_cause_and_phase_are_named() {
    let lab = lab().await;
    let roots = lab_roots(&lab);
    for (fault, addr) in lab.addrs() {
        if fault == Fault::Noupgrade {
            // Shows only to a request asking to switch protocols, which the doctor does not make.
            continue;
        }
        // The TLS faults are asked over https://, trusting the lab's CA.
        let scheme = if fault.tls() { "https" } else { "http" };
        let r = run(&format!("{scheme}://{addr}/x"), |o| {
            o.extra_roots = roots.clone()
        })
        .await;
        match fault.provokes() {
            Some((cause, phase)) => {
                assert_eq!(r.verdict.cause, Some(cause), "{fault}: {:#?}", r.diagnosis);
                assert_eq!(r.verdict.phase, Some(phase), "{fault}");
                assert_eq!(r.verdict.hop, Some("server"), "{fault}");
                assert!(!r.verdict.healthy);
                assert_eq!(r.exit_code(), 1);
            }
            None if fault == Fault::Status => {
                assert_eq!(verdict(&r), (None, None, Some("server"), Some(503)));
                assert!(!r.verdict.healthy);
            }
            None if fault == Fault::Flaky => {
                // The keep-alive request is the lab's second: reset.
                assert_eq!(r.verdict.cause, Some(Cause::Reset), "{:#?}", r.diagnosis);
            }
            None => {
                assert!(r.verdict.healthy, "{fault}: {:#?}", r.diagnosis);
                assert_eq!(r.verdict.status, Some(200));
                assert_eq!(r.exit_code(), 0);
            }
        }
    }
    lab.shutdown().await;
}

#[tokio::test]
async fn through_cleargate_proxy_status_names_the_cause_and_upstream_confirms_it() {
    let h = common::start("").await;
    let roots = lab_roots(&h.lab);
    for fault in Fault::ALL {
        let Some((cause, phase)) = fault.provokes() else {
            continue;
        };
        if fault.upgrade() {
            // Shows only to a request asking to switch protocols, which the doctor does not make.
            continue;
        }
        let url = format!("http://{}/f/{}", h.addr, fault.name());
        let upstream = match fault.tls() {
            true => format!("https://{}", h.lab.addr(*fault).unwrap()),
            false => h.lab.addr(*fault).unwrap().to_string(),
        };
        let r = run(&url, |o| o.timeout = Duration::from_secs(1)).await;
        let who = r.who.as_ref().expect("the gateway answered");
        assert!(who.has("cleargate"), "{fault}: {:?}", who.products);
        if phase == Phase::ReadBody {
            // The head was relayed before the upstream broke off: no Proxy-Status, a cut body.
            assert_eq!(r.verdict.phase, Some(Phase::ReadBody), "{fault}");
            assert_eq!(r.verdict.hop, Some("upstream"), "{fault}");
        } else {
            let status = cause::Failure::new(cause, phase).answer().status;
            assert_eq!(
                verdict(&r),
                (Some(cause), Some(phase), Some("upstream"), Some(status)),
                "{fault}: {:#?}",
                r.diagnosis
            );
            assert_eq!(who.error_maker.as_ref().unwrap().by, "cleargate");
            assert!(r.hops.iter().any(|h| h.kind == "upstream" && h.failed));
        }
        let r = run(&url, |o| {
            o.timeout = Duration::from_secs(1);
            o.upstream = Some(upstream.clone());
            o.extra_roots = roots.clone();
        })
        .await;
        let up = r.upstream.as_ref().expect("the upstream was probed");
        let seen = up.problem.as_ref().expect("the upstream fails");
        assert_eq!((seen.cause, seen.phase), (cause, phase), "{fault}");
        assert_eq!(r.verdict.cause, Some(cause), "{fault}: {:#?}", r.diagnosis);
        assert_eq!(r.verdict.hop, Some("upstream"), "{fault}");
        assert_eq!(r.diagnosis[0].confidence.as_str(), "confirmed");
    }
    h.stop().await;
}

#[tokio::test]
async fn relayed_application_error_is_not_the_gateways() {
    let h = common::start("").await;
    let r = run(&format!("http://{}/f/status", h.addr), |_| {}).await;
    assert_eq!(verdict(&r), (None, None, Some("upstream"), Some(503)));
    assert_eq!(r.who.unwrap().error_maker.unwrap().by, "upstream");
    // Healthy through the gateway: no problem, exit 0.
    let r = run(&format!("http://{}/f/ok", h.addr), |o| o.repeat = Some(2)).await;
    assert!(r.verdict.healthy, "{:#?}", r.diagnosis);
    assert_eq!(r.repeat.as_ref().unwrap().fresh_failed, 0);
    h.stop().await;
}

#[tokio::test]
async fn intermittent_resets_are_measured_by_the_repeats() {
    let lab = lab().await;
    let addr = lab.addr(Fault::Flaky).unwrap();
    let r = run(&format!("http://{addr}/"), |o| o.repeat = Some(4)).await;
    let rep = r.repeat.as_ref().unwrap();
    assert!(rep.fresh_failed + rep.reused_failed > 0, "{rep:#?}");
    assert!(rep.fresh.iter().any(|t| !t.failed()), "{rep:#?}");
    assert_eq!(r.verdict.cause, Some(Cause::Reset));
    assert!(r.diagnosis.iter().any(|c| c
        .evidence
        .iter()
        .any(|e| e.text.contains("repeated requests failed"))));
    lab.shutdown().await;
}

#[tokio::test]
async fn origin_bypasses_the_front_and_an_unreadable_error_log_is_said_so() {
    let lab = lab().await;
    let ok = lab.addr(Fault::Ok).unwrap();
    let refused = lab.addr(Fault::Refused).unwrap();
    // The URL's address refuses, the origin answers: the front is at fault.
    let r = run(&format!("http://{refused}/"), |o| {
        o.origin = Some(ok.to_string());
        o.error_log = Some("/nonexistent/error.log".into());
    })
    .await;
    assert_eq!(r.origin.as_ref().unwrap().status(), Some(200));
    assert!(r
        .diagnosis
        .iter()
        .any(|c| c.title.contains("origin answers")));
    let log = r.error_log.as_ref().unwrap();
    assert!(!log.available);
    assert!(log.note.starts_with("cannot read it"), "{}", log.note);
    assert_eq!(r.exit_code(), 1);
    lab.shutdown().await;
}

#[tokio::test]
async fn error_log_lines_near_the_request_are_classified() {
    let lab = lab().await;
    let refused = lab.addr(Fault::Refused).unwrap();
    let dir = std::env::temp_dir().join(format!("cg-doctor-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("error.log");
    // An nginx line written now (UTC), and one from long ago that must not be shown.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let stamp = |secs: i64| {
        let (y, m, d, h, mi, sec) = logscan::time::civil(secs * 1000);
        format!("{y:04}/{m:02}/{d:02} {h:02}:{mi:02}:{sec:02}")
    };
    let line = |t: i64, port: u16| {
        format!(
            "{} [error] 31#31: *7 connect() failed (111: Connection refused) while connecting to upstream, client: 127.0.0.1, server: _, request: \"GET / HTTP/1.1\", upstream: \"http://127.0.0.1:{port}/\", host: \"x\"\n",
            stamp(t)
        )
    };
    std::fs::write(
        &file,
        format!("{}{}", line(now - 86_400, 1111), line(now, 2222)),
    )
    .unwrap();
    let r = run(&format!("http://{refused}/"), |o| {
        o.error_log = Some(file.clone())
    })
    .await;
    let log = r.error_log.as_ref().unwrap();
    assert!(log.available, "{}", log.note);
    assert_eq!(log.findings.len(), 1, "{:?}", log.findings);
    assert!(
        log.findings[0].contains("refused@connect"),
        "{:?}",
        log.findings
    );
    assert!(
        log.findings[0].contains("127.0.0.1:2222"),
        "{:?}",
        log.findings
    );
    assert!(
        log.note.starts_with("1 gateway error(s) within 5 minutes"),
        "{}",
        log.note
    );
    std::fs::remove_dir_all(&dir).unwrap();
    lab.shutdown().await;
}

// ---- DNS, against a fake name server on loopback.

async fn dns() -> FakeDns {
    FakeDns::start(&[
        ("missing.test", Zone::NxDomain),
        ("broken.test", Zone::ServFail),
        ("silent.test", Zone::Silent),
        ("www.app.test", Zone::Cname("edge.app.test")),
        ("edge.app.test", Zone::Cname("origin.app.test")),
        ("origin.app.test", Zone::A(Ipv4Addr::LOCALHOST)),
        (
            "dual.test",
            Zone::Dual(Ipv4Addr::LOCALHOST, std::net::Ipv6Addr::LOCALHOST),
        ),
        ("good.test", Zone::A(Ipv4Addr::LOCALHOST)),
    ])
    .await
}

#[tokio::test]
async fn dns_nxdomain_servfail_and_timeout_are_told_apart() {
    let server = dns().await;
    for (name, cause, outcome) in [
        ("missing.test", Cause::Dns, "nxdomain"),
        ("broken.test", Cause::Dns, "servfail"),
        ("silent.test", Cause::Timeout, "timeout"),
    ] {
        let r = run(&format!("http://{name}/"), |o| {
            o.resolvers = vec![server.addr]
        })
        .await;
        assert_eq!(
            verdict(&r),
            (Some(cause), Some(Phase::Resolve), Some("dns"), None),
            "{name}: {:#?}",
            r.dns
        );
        let d = r.dns.as_ref().unwrap();
        assert_eq!(d.a, outcome, "{name}");
        assert_eq!(d.resolver, server.addr.to_string());
        assert!(r.hops.iter().any(|h| h.kind == "dns" && h.failed));
        if name == "missing.test" {
            check_snapshot("dns_nxdomain.txt", &doctor::render::human(&r, false));
        }
    }
}

#[tokio::test]
async fn dns_cname_chain_ttls_and_a_healthy_probe_by_name() {
    let server = dns().await;
    let lab = lab().await;
    let port = lab.addr(Fault::Ok).unwrap().port();
    let r = run(&format!("http://www.app.test:{port}/"), |o| {
        o.resolvers = vec![server.addr]
    })
    .await;
    assert!(r.verdict.healthy, "{:#?}", r.diagnosis);
    let d = r.dns.as_ref().unwrap();
    let chain: Vec<(&str, &str)> = d
        .cnames
        .iter()
        .map(|c| (c.name.as_str(), c.target.as_str()))
        .collect();
    assert_eq!(
        chain,
        [
            ("www.app.test", "edge.app.test"),
            ("edge.app.test", "origin.app.test")
        ]
    );
    assert_eq!(d.addrs.len(), 1);
    assert_eq!(d.addrs[0].ttl, fake_dns::TTL);
    assert_eq!(d.aaaa, "no_data");
    // The request carried the name, not the address.
    assert!(r
        .probe
        .http
        .as_ref()
        .unwrap()
        .request
        .contains(&format!("Host: www.app.test:{port}")));

    // Both families: each address is tried; ::1 refuses (nothing listens there on that port).
    let r = run(&format!("http://dual.test:{port}/"), |o| {
        o.resolvers = vec![server.addr]
    })
    .await;
    assert_eq!(r.probe.tcp.len(), 2, "{:#?}", r.probe.tcp);
    lab.shutdown().await;
}

#[tokio::test]
async fn dns_resolvers_are_compared() {
    let first = dns().await;
    let second = FakeDns::start(&[("good.test", Zone::A(Ipv4Addr::new(127, 0, 0, 2)))]).await;
    let r = run("http://good.test:1/", |o| {
        o.resolvers = vec![first.addr, second.addr];
        o.timeout = Duration::from_millis(200);
    })
    .await;
    let d = r.dns.unwrap();
    assert_eq!(d.compared.len(), 1);
    assert!(!d.compared[0].agrees);
}

// ---- TLS, with test certificates.

#[tokio::test]
async fn tls_good_expired_wrong_name_self_signed_and_plaintext() {
    let ca = tls_server::ca();
    let server = dns().await;
    let (good, _g) =
        tls_server::serve(tls_server::signed(&ca, &["good.test", "127.0.0.1"], false)).await;
    let (expired, _e) = tls_server::serve(tls_server::signed(&ca, &["127.0.0.1"], true)).await;
    let (wrong, _w) = tls_server::serve(tls_server::signed(&ca, &["other.test"], false)).await;
    let (selfs, _s) = tls_server::serve(tls_server::self_signed(&["127.0.0.1"])).await;
    let lab = lab().await;
    let plain = lab.addr(Fault::Ok).unwrap();
    let trust = |o: &mut Options| o.extra_roots = vec![ca.der.clone()];

    let r = run(&format!("https://good.test:{}/", good.port()), |o| {
        trust(o);
        o.resolvers = vec![server.addr];
    })
    .await;
    assert!(r.verdict.healthy, "{:#?}", r.diagnosis);
    let t = r.probe.tls.as_ref().unwrap();
    assert!(t.verified);
    assert_eq!(t.version.as_deref(), Some("TLSv1.3"));
    assert_eq!(t.alpn, None);
    assert!(t.chain[0].names.contains(&"good.test".to_string()));
    assert!(t.chain[0].days_left > 300);

    for (addr, kind) in [
        (expired, "expired"),
        (wrong, "wrong_name"),
        (selfs, "self_signed"),
    ] {
        let r = run(&format!("https://{addr}/"), trust).await;
        assert_eq!(
            verdict(&r),
            (
                Some(Cause::Tls),
                Some(Phase::TlsHandshake),
                Some("server"),
                None
            ),
            "{kind}"
        );
        let t = r.probe.tls.as_ref().unwrap();
        assert_eq!(t.cert_problem.as_deref(), Some(kind), "{t:#?}");
        assert!(
            !t.chain.is_empty(),
            "{kind}: the rejected chain is still inspected"
        );
        assert!(
            r.probe.http.is_none(),
            "{kind}: nothing is sent over an untrusted connection"
        );
    }
    let r = run(&format!("https://{addr}/", addr = expired), trust).await;
    check_snapshot("tls_expired.txt", &doctor::render::human(&r, false));
    assert!(r.probe.tls.unwrap().chain[0].days_left < 0);

    let r = run(&format!("https://{plain}/"), trust).await;
    assert_eq!(
        verdict(&r),
        (
            Some(Cause::Tls),
            Some(Phase::TlsHandshake),
            Some("server"),
            None
        )
    );
    let detail = r.probe.problem.unwrap().detail.unwrap();
    assert!(detail.contains("plain HTTP"), "{detail}");
    lab.shutdown().await;
}

// ---- Snapshots of the report, timings, ports and dates normalised.

/// Replaces what changes from run to run: numbers before `ms`, ports of 127.0.0.1, dates,
/// request ids, lengths of pages that embed those, and the waterfall's bars.
fn normalise(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut line = line.to_string();
        if let (Some(a), Some(b)) = (line.find('|'), line.rfind('|')) {
            if a < b {
                line = format!("{}|{:40}|{}", &line[..a], "", &line[b + 1..]);
            }
        }
        for key in [
            "date: ",
            "x-request-id: ",
            "content-length: ",
            "\"date\", ",
            "\"x-request-id\", ",
            "\"content-length\", ",
        ] {
            if let Some(i) = line.find(key) {
                line = format!("{}{key}X", &line[..i]);
            }
        }
        // Restart-gap waits make the attempt count depend on timing.
        while let Some(i) = line
            .find("attempts=")
            .filter(|i| line[i + 9..].starts_with(|c: char| c.is_ascii_digit()))
        {
            let digits = line[i + 9..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .count();
            line.replace_range(i..i + 9 + digits, "attempts#N");
        }
        // So do the earlier attempts listed in Proxy-Status.
        if let Some(i) = line.find(" earlier=") {
            let end = line[i + 1..]
                .find(['"', ' ', '\\'])
                .map_or(line.len(), |e| i + 1 + e);
            line.replace_range(i..end, "");
        }
        out.push_str(&replace_numbers(&line).replace("attempts#N", "attempts=N"));
        out.push('\n');
    }
    out
}

fn replace_numbers(line: &str) -> String {
    let bytes = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let num = &line[start..i];
            let before = &line[..start];
            let after = &line[i..];
            let is_port = before.ends_with("127.0.0.1:")
                || before.ends_with("]:")
                || before.ends_with("\"port\": ")
                || before.ends_with(", port ");
            let is_ms = after.starts_with(" day(s)")
                || before.ends_with("\"days_left\": ")
                || after.starts_with(" ms")
                || after.starts_with(" / ")
                || before.ends_with("_ms\": ")
                || before.ends_with("\"ms\": ");
            let is_bytes = before.ends_with("\"body_bytes\": ")
                || after.starts_with(" body bytes")
                || after.starts_with(" response bytes");
            if is_port {
                out.push_str("PORT");
            } else if is_ms {
                out.push('N');
            } else if is_bytes {
                out.push('B');
            } else {
                out.push_str(num);
            }
            continue;
        }
        out.push(line[i..].chars().next().unwrap());
        i += line[i..].chars().next().unwrap().len_utf8();
    }
    out
}

/// Normalises a JSON report: header values that change per run, then the text rules.
fn normalise_json(text: &str) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Array(items) => {
                let header = items.len() == 2
                    && items[0]
                        .as_str()
                        .is_some_and(|n| ["date", "x-request-id", "content-length"].contains(&n));
                if header {
                    items[1] = "X".into();
                }
                items.iter_mut().for_each(walk);
            }
            serde_json::Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v: serde_json::Value = serde_json::from_str(text).unwrap();
    walk(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

fn check_snapshot(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(name);
    let actual = if name.ends_with(".json") {
        normalise(&normalise_json(actual))
    } else {
        normalise(actual)
    };
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() || !path.exists() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "snapshot {name} differs (UPDATE_SNAPSHOTS=1 rewrites it):\n{}\n--- actual:\n{actual}",
            diff.join("\n")
        );
    }
}

#[tokio::test]
async fn snapshots_of_the_human_report_and_the_json() {
    let h = common::start("").await;
    let refused = h.lab.addr(Fault::Refused).unwrap();
    let ok = h.lab.addr(Fault::Ok).unwrap();

    let r = run(&format!("http://{refused}/x"), |_| {}).await;
    check_snapshot("direct_refused.txt", &doctor::render::human(&r, false));
    check_snapshot("direct_refused.json", &doctor::render::json(&r));

    let r = run(&format!("http://{}/f/refused", h.addr), |o| {
        o.upstream = Some(refused.to_string());
        o.error_log = Some("/var/log/gateway/error.log".into());
    })
    .await;
    check_snapshot(
        "gateway_refused_upstream.txt",
        &doctor::render::human(&r, false),
    );
    check_snapshot("gateway_refused_upstream.json", &doctor::render::json(&r));

    let r = run(&format!("{ok}/hello"), |o| o.repeat = Some(1)).await;
    check_snapshot("healthy_no_scheme.txt", &doctor::render::human(&r, false));
    h.stop().await;
}

// ---- The command line.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_and_json_verdict() {
    let lab = lab().await;
    let refused = lab.addr(Fault::Refused).unwrap();
    let ok = lab.addr(Fault::Ok).unwrap();
    let bin = env!("CARGO_BIN_EXE_cleargate");
    let out = std::process::Command::new(bin)
        .args([
            "doctor",
            &format!("http://{refused}/"),
            "--json",
            "--timeout",
            "300ms",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["cause"], "refused");
    assert_eq!(v["verdict"]["phase"], "connect");
    assert_eq!(v["verdict"]["status"], serde_json::Value::Null);
    let first_key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap_or("")
        .to_string();
    assert!(
        first_key.contains("\"verdict\""),
        "verdict comes first: {first_key}"
    );

    let out = std::process::Command::new(bin)
        .args([
            "doctor",
            &format!("http://{ok}/"),
            "--json",
            "--repeat",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"]["cause"], serde_json::Value::Null);
    assert_eq!(v["verdict"]["status"], 200);

    for bad in [
        vec!["doctor", "ftp://x/"],
        vec!["doctor", "http://x:0/"],
        vec!["doctor"],
        vec!["doctor", "http://a/", "--origin", "nope"],
    ] {
        let out = std::process::Command::new(bin).args(&bad).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = std::process::Command::new(bin)
        .args(["doctor", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--upstream") && help.contains("Exit codes"),
        "{help}"
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn failures_cleargate_covers_for_are_found_in_its_log() {
    use proxy::log::{Format, Logger, Sink};
    // Every third request reset: cleargate retries each one, so the client sees only 200s.
    let lab = Lab::start_all(LabOptions {
        flaky_every: Some(3),
        ..LabOptions::default()
    })
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cg-doctor-absorbed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cleargate.log");
    let config = config::Config::parse(
        &common::config_text(&lab, ""),
        "test.toml",
        std::path::Path::new("."),
    )
    .unwrap();
    let logger = std::sync::Arc::new(Logger::new(Format::Json, Sink::File(file.clone())).unwrap());
    let gateway = proxy::Gateway::new(config, logger).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = proxy::CancellationToken::new();
    let task = tokio::spawn(gateway.serve(vec![listener], stop.clone()));

    let url = format!("http://{addr}/f/flaky");
    let r = run(&url, |o| {
        o.repeat = Some(4);
        o.error_log = Some(file.clone());
    })
    .await;
    let rep = r.repeat.as_ref().unwrap();
    assert_eq!(rep.fresh_failed + rep.reused_failed, 0, "{rep:#?}");
    assert_eq!(r.probe.http.as_ref().unwrap().status, Some(200));
    assert_eq!(
        verdict(&r),
        (
            Some(Cause::Reset),
            Some(Phase::ReadHead),
            Some("upstream"),
            Some(200)
        ),
        "{:#?}",
        r.diagnosis
    );
    assert!(r.verdict.absorbed && !r.verdict.healthy);
    assert_eq!(r.exit_code(), 1);
    assert!(r.diagnosis[0]
        .evidence
        .iter()
        .any(|e| e.source == "error_log"
            && e.text.contains("cleargate.attempt_retried")
            && e.text.contains("during this run")));

    // Asked directly, the upstream's failure rate is measured as well.
    let upstream = lab.addr(Fault::Flaky).unwrap().to_string();
    let r = run(&url, |o| {
        o.repeat = Some(5);
        o.upstream = Some(upstream.clone());
    })
    .await;
    let side = r.upstream.as_ref().unwrap().repeat.as_ref().unwrap();
    assert_eq!(side.tries, 5);
    assert!((1..=2).contains(&side.failed), "{side:#?}");
    assert_eq!(r.verdict.cause, Some(Cause::Reset), "{:#?}", r.diagnosis);
    assert_eq!(r.exit_code(), 1);

    stop.cancel();
    let _ = task.await;
    lab.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
