//! Metrics: exact counts after provoked requests, `promtool check metrics` on the exposition,
//! and a real Prometheus scraping the admin listener and answering a query about the gateway
//! errors the test provoked.
//!
//! `.ci/run` installs Prometheus (Debian's `prometheus`, which brings `promtool`). Without it the
//! two checks that need it say so in one line, except under `CI`, where they fail.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use lab::Fault;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn installed(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed: .ci/run must install it (apt-get install prometheus)"
        );
        println!("{tool} is not installed (apt-get install prometheus): that check did not run");
    }
    found
}

fn value(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn counts_are_exact_and_a_real_prometheus_scrapes_them() {
    let h = common::start("").await;
    for _ in 0..3 {
        assert_eq!(
            common::get_fault(&h, Fault::Refused, None).await.status,
            502
        );
    }
    for _ in 0..2 {
        assert_eq!(common::get_fault(&h, Fault::Ok, None).await.status, 200);
    }
    assert_eq!(common::get_fault(&h, Fault::Hang, None).await.status, 504);
    assert_eq!(common::get_fault(&h, Fault::Status, None).await.status, 503);
    // Access lines (and so the request counts) are written when a response ends.
    h.wait_line(|l| l["kind"] == "access" && l["upstream"] == "status")
        .await;

    // The gateway's metrics, through an admin listener.
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(h.gateway.clone().serve_admin(admin, h.shutdown.clone()));
    let answer = http_get(admin_addr, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("content-type: text/plain; version=0.0.4"),
        "{answer}"
    );
    let text = answer.split("\r\n\r\n").nth(1).unwrap().to_string();

    assert_eq!(value(&text, "cleargate_gateway_errors_total{upstream=\"refused\",cause=\"refused\",phase=\"connect\",status=\"502\"}"), 3, "{text}");
    assert_eq!(value(&text, "cleargate_gateway_errors_total{upstream=\"hang\",cause=\"timeout\",phase=\"read_head\",status=\"504\"}"), 1, "{text}");
    assert_eq!(
        value(
            &text,
            "cleargate_requests_total{upstream=\"ok\",code=\"200\"}"
        ),
        2,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cleargate_requests_total{upstream=\"refused\",code=\"502\"}"
        ),
        3,
        "{text}"
    );
    // The upstream's own 503 is a request relayed, never a gateway error.
    assert_eq!(
        value(
            &text,
            "cleargate_requests_total{upstream=\"status\",code=\"503\"}"
        ),
        1,
        "{text}"
    );
    assert!(
        !text.contains("cleargate_gateway_errors_total{upstream=\"status\""),
        "{text}"
    );
    // Refused is tried again (nothing was sent) while the endpoint may be restarting.
    assert!(
        value(
            &text,
            "cleargate_retries_total{upstream=\"refused\",cause=\"refused\"}"
        ) >= 3,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cleargate_request_duration_seconds_count{upstream=\"ok\"}"
        ),
        2,
        "{text}"
    );
    assert!(
        text.contains("cleargate_upstream_endpoint_healthy{upstream=\"ok\",endpoint=\""),
        "{text}"
    );
    // Two requests to `ok` over one pooled upstream connection (or two, if they overlapped).
    let prefix = "cleargate_upstream_connections_opened_total{upstream=\"ok\",endpoint=\"";
    let opened: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((1..=2).contains(&opened), "{text}");
    assert!(
        text.contains("cleargate_upstream_ejections_total{upstream=\"refused\",endpoint=\""),
        "{text}"
    );
    assert!(
        text.contains("\ncleargate_upstream_queued{upstream=\"ok\"} 0\n"),
        "{text}"
    );
    // Every line reached the log: nothing lost for either reason (the series are there at 0).
    for reason in ["slow", "write_error"] {
        let series = format!("\ncleargate_log_lines_lost_total{{reason=\"{reason}\"}} 0\n");
        assert!(text.contains(&series), "{text}");
    }
    assert!(http_get(admin_addr, "/nothing")
        .await
        .starts_with("HTTP/1.1 404 "));

    let dir = std::env::temp_dir().join(format!("cleargate-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if installed("promtool") {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if installed("prometheus") {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cleargate\n    static_configs:\n      - targets: [\"{admin_addr}\"]\n"
            ),
        )
        .unwrap();
        let mut prom = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let query = "/api/v1/query?query=sum%28cleargate_gateway_errors_total%7Bcause%3D%22refused%22%7D%29";
        let mut seen = None;
        for _ in 0..300 {
            if TcpStream::connect(prom_addr).await.is_ok() {
                let answer = http_get(prom_addr, query).await;
                if let Some(body) = answer.split("\r\n\r\n").nth(1) {
                    if body.contains("\"value\"") {
                        seen = Some(body.to_string());
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = prom.kill();
        let _ = prom.wait();
        let body = seen.expect("Prometheus scraped the gateway within 30 s");
        assert!(body.contains("\"status\":\"success\""), "{body}");
        assert!(
            body.contains(",\"3\"]"),
            "the query returns the 3 refused errors: {body}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    h.stop().await;
}

async fn http_req(addr: std::net::SocketAddr, method: &str, path: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

fn json_body(answer: &str) -> serde_json::Value {
    serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[tokio::test]
async fn the_admin_api_shows_state_and_errors_and_drains_endpoints() {
    let h = common::start("").await;
    assert_eq!(
        common::get_fault(&h, Fault::Refused, None).await.status,
        502
    );
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = admin.local_addr().unwrap();
    tokio::spawn(h.gateway.clone().serve_admin(admin, h.shutdown.clone()));

    let up = json_body(&http_req(a, "GET", "/api/upstreams", "").await);
    let ok = up["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == "ok")
        .unwrap();
    let endpoint = ok["endpoints"][0]["endpoint"].as_str().unwrap().to_string();
    assert_eq!(ok["endpoints"][0]["healthy"], true);

    let errors = json_body(&http_req(a, "GET", "/api/errors", "").await);
    let latest = &errors["errors"][0];
    assert_eq!(latest["cause"], "refused");
    assert_eq!(latest["upstream"], "refused");
    assert!(
        latest["request_id"].as_str().is_some_and(|s| s.len() == 16),
        "{latest}"
    );
    assert!(latest.get("upstream_sent").is_none(), "{latest}");

    // A malformed answer: the error shows what the upstream actually sent, escaped.
    assert_eq!(
        common::get_fault(&h, Fault::Garbage, None).await.status,
        502
    );
    let errors = json_body(&http_req(a, "GET", "/api/errors", "").await);
    let latest = &errors["errors"][0];
    assert_eq!(latest["cause"], "invalid_response", "{latest}");
    assert_eq!(
        latest["upstream_sent"], "this is not http\\r\\n\\r\\n",
        "{latest}"
    );
    assert_eq!(
        common::get_fault(&h, Fault::Bigheader, None).await.status,
        502
    );
    let errors = json_body(&http_req(a, "GET", "/api/errors", "").await);
    let latest = &errors["errors"][0];
    assert_eq!(latest["cause"], "response_too_large", "{latest}");
    let sent = latest["upstream_sent"]
        .as_str()
        .unwrap_or_else(|| panic!("{latest}"));
    assert!(sent.starts_with("HTTP/1.1 200 "), "{latest}");
    assert!(sent.len() >= 512, "{latest}");

    // Mutations: POST only, never from another origin.
    let path = format!("/api/upstreams/ok/endpoints/{endpoint}/drain");
    assert!(http_req(a, "GET", &path, "")
        .await
        .starts_with("HTTP/1.1 405 "));
    let cross = http_req(a, "POST", &path, "Origin: https://evil.example\r\n").await;
    assert!(cross.starts_with("HTTP/1.1 403 "), "{cross}");
    let fetch_site = http_req(a, "POST", &path, "Sec-Fetch-Site: cross-site\r\n").await;
    assert!(fetch_site.starts_with("HTTP/1.1 403 "), "{fetch_site}");
    assert_eq!(common::get_fault(&h, Fault::Ok, None).await.status, 200);

    // Drained: the only endpoint is out, with the reason, and requests get a 503 saying so.
    let drained = http_req(a, "POST", &path, "").await;
    assert!(drained.starts_with("HTTP/1.1 200 "), "{drained}");
    let up = json_body(&http_req(a, "GET", "/api/upstreams", "").await);
    let ok = up["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == "ok")
        .unwrap()
        .clone();
    assert_eq!(ok["endpoints"][0]["healthy"], false);
    assert_eq!(ok["endpoints"][0]["why_out"], "drained by the operator");
    let seen = common::get_fault(&h, Fault::Ok, None).await;
    assert_eq!(seen.status, 503, "{}", seen.text());
    assert!(seen
        .header("proxy-status")
        .contains("drained by the operator"));
    let back = http_req(
        a,
        "POST",
        &format!("/api/upstreams/ok/endpoints/{endpoint}/undrain"),
        "",
    )
    .await;
    assert!(back.starts_with("HTTP/1.1 200 "), "{back}");
    assert_eq!(common::get_fault(&h, Fault::Ok, None).await.status, 200);
    assert!(http_req(a, "POST", "/api/dns/flush", "")
        .await
        .starts_with("HTTP/1.1 200 "));
    assert!(
        http_req(a, "POST", "/api/upstreams/nope/endpoints/x/drain", "")
            .await
            .starts_with("HTTP/1.1 404 ")
    );

    // The status page in a real browser: the endpoints and the provoked error, no JS error.
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| installed_quiet(c));
    match chromium {
        Some(browser) => {
            let profile =
                std::env::temp_dir().join(format!("cleargate-chromium-{}", std::process::id()));
            let (profile2, url) = (profile.clone(), format!("http://{a}/"));
            let out = tokio::task::spawn_blocking(move || {
                Command::new(browser)
                    .args([
                        "--headless",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--no-first-run",
                        "--enable-logging=stderr",
                        "--v=0",
                        "--virtual-time-budget=5000",
                    ])
                    .arg(format!("--user-data-dir={}", profile2.display()))
                    .arg("--dump-dom")
                    .arg(url)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let _ = std::fs::remove_dir_all(&profile);
            let dom = String::from_utf8_lossy(&out.stdout);
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                dom.contains("class=\"endpoint\""),
                "no endpoint rows: {dom}\n{log}"
            );
            assert!(dom.contains(&endpoint), "{dom}");
            assert!(dom.contains("class=\"error\""), "no error rows: {dom}");
            assert!(dom.contains(">refused<"), "{dom}");
            // The page's own line says it refreshed (not that the gateway could not be reached).
            assert!(dom.contains("id=\"updated\">updated "), "{dom}");
            for l in log.lines() {
                assert!(
                    !(l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error"))),
                    "a JavaScript error: {l}"
                );
            }
        }
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "chromium is not installed: .ci/run must install it"
            );
            println!("chromium is not installed: the status page was not opened in a browser");
        }
    }
    h.stop().await;
}

fn installed_quiet(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
