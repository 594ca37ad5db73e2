//! The gateway against the lab, end to end: the cause spine, header semantics, limits, the open
//! proxy guard, h2c clients, truncation after the head, shutdown, and the CLI.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cause::{Cause, Phase};
use common::*;
use http::Request;
use http_body_util::Full;
use lab::Fault;

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

/// Causes that come from the request itself rather than from an upstream fault.
const REQUEST_SIDE: &[Cause] = &[Cause::NoRoute, Cause::ClientInvalid, Cause::ClientAborted];

/// Causes provoked through the gateway's own state in `tests/resilience.rs`.
const GATEWAY_STATE: &[Cause] = &[Cause::Dns, Cause::NoHealthyUpstream, Cause::Overloaded];

#[tokio::test]
async fn spine_every_lab_fault_is_reported_the_same_everywhere() {
    let h = start("").await;
    let mut covered = Vec::new();
    for fault in Fault::ALL {
        let Some((cause, phase)) = fault.provokes() else {
            continue;
        };
        covered.push(cause);
        if phase == Phase::ReadBody {
            // After the head the status cannot change; the client must see a broken body.
            let seen = get_fault(&h, *fault, None).await;
            assert_eq!(seen.status, 200, "{fault}");
            assert!(
                seen.body.is_err(),
                "{fault}: body ended cleanly: {:?}",
                seen.body
            );
            let id = seen.header("x-request-id").to_string();
            let line = h.access_line(&id).await;
            assert_eq!(line["cause"], cause.as_str(), "{fault}: {line}");
            assert_eq!(line["phase"], phase.as_str(), "{fault}: {line}");
            h.wait_line(|l| {
                l["kind"] == "gateway_error"
                    && l["request_id"] == id.as_str()
                    && l["level"] == "WARN"
            })
            .await;
            continue;
        }
        let expect_status = cause::Failure::new(cause, phase).answer().status;
        for (accept, marker) in [
            (
                Some("text/html,application/xhtml+xml,*/*;q=0.8"),
                "<!doctype html>",
            ),
            (Some("application/json"), "\"cause\": \""),
            (None, "Cause: "),
        ] {
            let seen = get_fault(&h, *fault, accept).await;
            assert_eq!(seen.status.as_u16(), expect_status, "{fault}");
            let ps = seen.header("proxy-status");
            assert_eq!(
                cause::parse_details(ps),
                Some((cause, phase)),
                "{fault}: {ps}"
            );
            assert!(
                ps.contains(&format!("next-hop=\"{}\"", h.lab.addr(*fault).unwrap())),
                "{ps}"
            );
            let body = seen.text();
            assert!(body.contains(marker), "{fault}: {body}");
            assert!(
                body.contains(seen.header("x-request-id")),
                "{fault}: page names the request id"
            );
            if accept == Some("application/json") {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["cause"], cause.as_str());
                assert_eq!(v["phase"], phase.as_str());
                assert_eq!(v["hops"][2]["failed"], true);
            }
            let id = seen.header("x-request-id").to_string();
            let line = h.access_line(&id).await;
            assert_eq!(line["status"], expect_status, "{line}");
            assert_eq!(line["cause"], cause.as_str(), "{line}");
            assert_eq!(line["phase"], phase.as_str(), "{line}");
            assert_eq!(line["gateway_error"], true);
            let warn = h
                .wait_line(|l| l["kind"] == "gateway_error" && l["request_id"] == id.as_str())
                .await;
            assert_eq!(warn["level"], "WARN");
            assert_eq!(warn["cause"], cause.as_str());
        }
    }
    // Every cause is either provoked by a lab fault above, by a request-side test in this file, or
    // documented as not provokable here, with the reason.
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/causes.md")).unwrap();
    for cause in Cause::ALL {
        let section = docs
            .split(&format!("## `{}`", cause.as_str()))
            .nth(1)
            .unwrap_or_else(|| panic!("docs/causes.md has no section for `{cause}`"));
        let section = section.split("\n## ").next().unwrap();
        let lab_line = section
            .lines()
            .find(|l| l.starts_with("**Lab:**"))
            .unwrap_or_else(|| panic!("`{cause}` section has no **Lab:** line"));
        if covered.contains(cause) {
            for fault in Fault::ALL
                .iter()
                .filter(|f| f.provokes().map(|p| p.0) == Some(*cause))
            {
                assert!(
                    lab_line.contains(&format!("`{}`", fault.name())),
                    "`{cause}` docs must name lab fault `{fault}`"
                );
            }
        } else if REQUEST_SIDE.contains(cause) {
            assert!(
                lab_line.contains("provoked by the request itself"),
                "{lab_line}"
            );
        } else if GATEWAY_STATE.contains(cause) {
            assert!(
                lab_line.contains("provoked by the gateway's own state"),
                "{lab_line}"
            );
        } else {
            assert!(
                lab_line.contains("not provoked here:"),
                "`{cause}` needs a lab fault or a documented reason: {lab_line}"
            );
        }
    }
    h.stop().await;
}

#[tokio::test]
async fn upstream_made_errors_are_relayed_not_counted_as_ours() {
    let h = start("").await;
    let seen = get_fault(&h, Fault::Status, None).await;
    assert_eq!(seen.status, 503);
    assert_eq!(seen.header("proxy-status"), "");
    assert_eq!(seen.text(), "status 503 from the lab");
    let line = h.access_line(seen.header("x-request-id")).await;
    assert_eq!(line["gateway_error"], false);
    assert_eq!(line["cause"], serde_json::Value::Null);
    h.stop().await;
}

#[tokio::test]
async fn html_page_offers_retry_for_transient_get_only() {
    let h = start("").await;
    let html = Some("text/html");
    let refused = get_fault(&h, Fault::Refused, html).await.text();
    assert!(refused.contains("class=\"button\""), "a try-again button");
    assert!(refused.contains("upstream refused ("), "names the hop");
    assert!(
        !refused.contains("http://") && !refused.contains("https://"),
        "no external asset"
    );
    let garbage = get_fault(&h, Fault::Garbage, html).await.text();
    assert!(
        !garbage.contains("class=\"button\""),
        "invalid_response is not transient"
    );
    let post = send(
        h.addr,
        Request::post("/f/refused")
            .header("accept", "text/html")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert!(
        !post.text().contains("class=\"button\""),
        "no retry offered for POST"
    );
    h.stop().await;
}

#[tokio::test]
async fn operator_page_overrides_the_built_in_one() {
    let dir = std::env::temp_dir().join(format!("cg-pages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let page = dir.join("502.html");
    std::fs::write(&page, "<p>down: {{cause}} id={{request_id}}</p>").unwrap();
    let top = format!("[error_pages]\n502 = \"{}\"\n", page.display());
    let h = start(&top).await;
    let seen = get_fault(&h, Fault::Reset, Some("text/html")).await;
    assert_eq!(seen.status, 502);
    assert_eq!(
        seen.text(),
        format!("<p>down: reset id={}</p>", seen.header("x-request-id"))
    );
    assert!(seen
        .header("proxy-status")
        .contains("error=connection_terminated"));
    h.stop().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn header_semantics() {
    let h = start("").await;
    let req = get(h.addr, "/f/ok?q=1")
        .header("connection", "keep-alive, x-hop-secret")
        .header("x-hop-secret", "must not pass")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("x-forwarded-for", "203.0.113.9")
        // Set by the gateway alone: what a client says of them does not reach the upstream.
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.test")
        .header("via", "1.1 cdn")
        .header("x-request-id", "client-chosen-42")
        .header("x-app", "kept")
        .body(empty())
        .unwrap();
    let seen = send(h.addr, req).await;
    assert_eq!(seen.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&seen.text()).unwrap();
    let hdr = &echo["headers"];
    assert_eq!(echo["path"], "/f/ok?q=1");
    for gone in ["x-hop-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            hdr.get(gone).is_none(),
            "{gone} reached the upstream: {hdr}"
        );
    }
    assert_eq!(hdr["x-app"], "kept");
    assert_eq!(hdr["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(hdr["x-forwarded-proto"], "http");
    assert_eq!(hdr["x-forwarded-host"], "gw.test");
    assert_eq!(hdr["host"], "gw.test");
    assert_eq!(hdr["via"], "1.1 cdn, 1.1 cleargate");
    assert_eq!(hdr["x-request-id"], "client-chosen-42");
    assert_eq!(seen.header("x-request-id"), "client-chosen-42");
    assert_eq!(seen.header("via"), "1.1 cleargate");
    assert_eq!(seen.header("connection"), "");

    // An insane request id is replaced, and the new one travels both ways.
    let seen = send(
        h.addr,
        get(h.addr, "/f/ok")
            .header("x-request-id", "bad id <script>")
            .body(empty())
            .unwrap(),
    )
    .await;
    let echo: serde_json::Value = serde_json::from_str(&seen.text()).unwrap();
    let id = seen.header("x-request-id");
    assert_eq!(id.len(), 16);
    assert_eq!(echo["headers"]["x-request-id"], id);
    // A client that sent no X-Forwarded-For: the upstream gets its address alone (the value
    // its connection made once).
    assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    let line = h.access_line(id).await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["upstream"], "ok");
    assert!(line["attempts"][0]["first_byte_ms"].as_f64().is_some());
    h.stop().await;
}

#[tokio::test]
async fn timings_that_span_a_wait_are_measured_in_full() {
    // Within one poll of a connection the clock is read once (`net::clock`); what spans a wait,
    // like the lab's `slow` answering after 100 ms, is measured between polls and keeps its
    // length in the access line.
    let h = start("").await;
    let seen = get_fault_at(h.addr, Fault::Slow).await;
    assert_eq!(seen.status, 200);
    let line = h.access_line(seen.header("x-request-id")).await;
    let duration = line["duration_ms"].as_f64().unwrap();
    let first_byte = line["attempts"][0]["first_byte_ms"].as_f64().unwrap();
    assert!(
        first_byte >= 100.0,
        "first byte after {first_byte} ms: {line}"
    );
    assert!(duration >= first_byte, "{line}");
    h.stop().await;
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let h = start("").await;
    let ok = send_h2(
        h.addr,
        Request::get(format!("http://{}/f/ok", h.addr))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, 200);
    let echo: serde_json::Value = serde_json::from_str(&ok.text()).unwrap();
    assert_eq!(echo["headers"]["via"], "2 cleargate");
    assert_eq!(echo["headers"]["host"], h.addr.to_string());
    let refused = send_h2(
        h.addr,
        Request::get(format!("http://{}/f/refused", h.addr))
            .header("accept", "application/json")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, 502);
    assert_eq!(
        cause::parse_details(refused.header("proxy-status")),
        Some((Cause::Refused, Phase::Connect))
    );
    // After the head, an h2 stream is reset: the client sees an error, not a clean end.
    let cut = send_h2(
        h.addr,
        Request::get(format!("http://{}/f/truncated", h.addr))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(cut.status, 200);
    assert!(cut.body.is_err(), "{:?}", cut.body);
    h.stop().await;
}

#[tokio::test]
async fn truncation_after_head_aborts_the_client_connection() {
    let h = start("").await;
    for fault in [Fault::Truncated, Fault::Badchunk, Fault::Stall] {
        let seen = get_fault(&h, fault, None).await;
        assert_eq!(seen.status, 200);
        assert!(seen.body.is_err(), "{fault}: {:?}", seen.body);
    }
    // With a raw client: a Content-Length promise broken by a closed connection.
    let text = raw(h.addr, b"GET /f/truncated HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let body_len = text.split("\r\n\r\n").nth(1).map_or(0, str::len);
    assert!(text.contains("content-length: 1000000"), "{text:.200}");
    assert!(
        body_len < 1_000_000,
        "the connection closed short of the promised length"
    );
    h.stop().await;
}

#[tokio::test]
async fn keep_alive_upstream_connections_are_reused() {
    let h = start("").await;
    for _ in 0..3 {
        assert_eq!(get_fault(&h, Fault::Ok, None).await.status, 200);
    }
    let stats = h.lab.stats(Fault::Ok);
    assert_eq!(stats.requests, 3);
    assert_eq!(
        stats.connections, 1,
        "one pooled connection served all three"
    );
    let reused: Vec<bool> = h
        .log_lines()
        .iter()
        .filter(|l| l["kind"] == "access")
        .map(|l| l["attempts"][0]["reused"].as_bool().unwrap())
        .collect();
    assert_eq!(reused, vec![false, true, true]);
    h.stop().await;
}

#[tokio::test]
async fn client_limits_answer_with_client_invalid_and_keep_serving() {
    let top = "[limits]\nmax_request_header_bytes = \"8KiB\"\nmax_request_body_bytes = \"1KiB\"\nrequest_header_timeout = \"300ms\"\n";
    let h = start(top).await;

    let big = send(
        h.addr,
        get(h.addr, "/f/ok")
            .header("x-big", "a".repeat(9000))
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(big.status, 431);
    assert_eq!(
        cause::parse_details(big.header("proxy-status")),
        Some((Cause::ClientInvalid, Phase::Client))
    );

    let post = Request::post("/f/ok")
        .header("host", "x")
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let seen = send(h.addr, post).await;
    assert_eq!(seen.status, 413);
    assert!(seen.header("proxy-status").contains("cause=client_invalid"));

    // A chunked body has no length up front: it is cut off when it passes the limit.
    let mut chunked =
        b"POST /f/ok HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n800\r\n".to_vec();
    chunked.extend(std::iter::repeat_n(b'x', 2048));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let text = raw(h.addr, &chunked).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text:.300}");

    // A request head that trickles in gets a 408 page, not a silent close.
    let text = raw(h.addr, b"GET /f/ok HTTP/1.1\r\nHost: x\r\nX-Slow: ").await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text:.300}");
    assert!(
        text.contains("proxy-status: cleargate; error=http_request_error"),
        "{text}"
    );
    assert!(text.contains("cause=client_invalid phase=client"), "{text}");

    // Garbage is answered 400 and logged as the client's fault.
    let text = raw(h.addr, b"GARBAGE\x01 / HTTP/1.1\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text:.300}");
    h.wait_line(|l| {
        l["kind"] == "gateway_error" && l["cause"] == "client_invalid" && l["status"] == 400
    })
    .await;
    h.wait_line(|l| {
        l["kind"] == "gateway_error" && l["cause"] == "client_invalid" && l["status"] == 408
    })
    .await;

    // And the gateway keeps serving.
    assert_eq!(get_fault(&h, Fault::Ok, None).await.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_its_upload_gets_408_not_a_504() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // 100 KB announced (too large to buffer for replay, so it streams), 10 bytes sent, then
    // silence: the upstream is not to blame, and its health must not suffer for it.
    let h = start("").await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"POST /f/ok HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789")
        .await
        .unwrap();
    let mut out = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("cause=client_invalid phase=client"), "{text}");
    h.stop().await;
}

#[tokio::test]
async fn never_an_open_proxy() {
    let h = start("").await;
    // Absolute form routes like any request: the catch-all route serves it, the target's host
    // is only matched against routes (and forwarded as Host), never dialed.
    let text = raw(
        h.addr,
        b"GET http://elsewhere.example/f/ok HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text:.300}");
    assert!(
        text.contains("\"host\":\"elsewhere.example\""),
        "{text:.900}"
    );
    assert!(!text.contains("other.example"), "{text:.900}");
    assert_eq!(h.lab.stats(Fault::Ok).requests, 1);
    let text = raw(
        h.addr,
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text:.300}");
    assert!(text.contains("cause=no_route"), "{text:.400}");
    assert_eq!(
        h.lab.stats(Fault::Ok).requests,
        1,
        "CONNECT was not forwarded"
    );
    let seen = send(
        h.addr,
        get(h.addr, "/nowhere")
            .header("accept", "application/json")
            .body(empty())
            .unwrap(),
    )
    .await;
    assert_eq!(seen.status, 404);
    let v: serde_json::Value = serde_json::from_str(&seen.text()).unwrap();
    assert_eq!(v["cause"], "no_route");
    assert_eq!(
        v["hops"][1]["failed"], true,
        "the gateway's own hop is marked"
    );
    h.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_is_logged_as_client_aborted() {
    let h = start("").await;
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"GET /f/hang HTTP/1.1\r\nHost: x\r\nX-Request-Id: leaver\r\n\r\n")
            .await
            .unwrap();
        // Wait until the hang fault has the request, then leave.
        for _ in 0..500 {
            if h.lab.stats(Fault::Hang).requests == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let line = h.access_line("leaver").await;
    assert_eq!(line["status"], 499);
    assert_eq!(line["cause"], "client_aborted");
    h.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let h = start("shutdown_timeout = \"5s\"").await;
    let addr = h.addr;
    let slow = tokio::spawn(async move { get_fault_at(addr, Fault::Slow).await });
    for _ in 0..500 {
        if h.lab.stats(Fault::Slow).requests == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.shutdown.cancel();
    let seen = slow.await.unwrap();
    assert_eq!(seen.status, 200, "the in-flight request completed");
    assert!(seen.body.is_ok());
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .unwrap()
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn shutdown_closes_a_kept_alive_connection_that_waits_between_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The idle timeout is far away: only the shutdown can close this connection, and it must
    // reach a watchdog whose task the connection's own reads and writes woke until now.
    let h = start("shutdown_timeout = \"5s\"\n[limits]\nclient_idle_timeout = \"60s\"\n").await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /f/ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
    }
    h.shutdown.cancel();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the waiting connection was not closed within 10 s of the shutdown"
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .expect("the gateway did not stop after its last connection closed")
        .unwrap();
}

async fn get_fault_at(addr: std::net::SocketAddr, fault: Fault) -> Seen {
    send(
        addr,
        get(addr, &format!("/f/{}", fault.name()))
            .body(empty())
            .unwrap(),
    )
    .await
}

#[test]
fn check_reports_every_problem_with_its_position() {
    let dir = std::env::temp_dir().join(format!("cg-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "listen = [\"127.0.0.1:8080\"]\nlisten_x = 1\n[upstream.app]\nendpoints = []\n[[route]]\npath = \"/\"\nupstream = \"apq\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}:2:1: unknown key `listen_x` in the top level; did you mean `listen`?"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:4:13: [upstream.app] has an empty endpoint list"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:7:12: route names unknown upstream `apq`; did you mean `app`?"
        )),
        "{err}"
    );
    assert!(err.contains("3 problem(s) found"), "{err}");

    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "listen = [\"127.0.0.1:8080\"]\n\n[upstream.app]\nendpoints = [\"127.0.0.1:3001\", \"127.0.0.1:3002\"]\nconnect_timeout = \"1s\"\nresponse_timeout = \"30s\"\n\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("ok: 1 listener(s), 1 upstream(s) with 2 endpoint(s), 1 route(s)"));

    for example in ["examples/minimal.toml", "examples/full.toml"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
            .args(["check", "-c", example])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // `serve` refuses the bad file before binding anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was started"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn serve_runs_one_event_loop_per_worker_on_one_shared_port() {
    use std::io::BufRead;
    let lab = lab::Lab::start(
        &[(Fault::Ok, 0)],
        [127, 0, 0, 1].into(),
        lab::LabOptions::default(),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("cg-workers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.toml");
    std::fs::write(
        &file,
        format!(
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\n[upstream.app]\nendpoints = [\"{}\"]\n[[route]]\npath = \"/\"\nupstream = \"app\"\n",
            lab.addr(Fault::Ok).unwrap()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cleargate"))
        .args(["serve", "-c"])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let serving: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(serving["message"], "serving", "{first}");
    assert_eq!(serving["workers"], 2, "{first}");
    let addr: std::net::SocketAddr = serving["listen"][0].as_str().unwrap().parse().unwrap();
    // Two worker threads, each its own event loop.
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    for w in ["cleargate-w0", "cleargate-w1"] {
        assert!(names.iter().any(|n| n == w), "{names:?}");
    }
    // Connections spread over the workers' listeners; every one is served.
    for _ in 0..16 {
        let seen = send(addr, get(addr, "/f").body(empty()).unwrap()).await;
        assert_eq!(seen.status, 200);
    }
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let rest: Vec<String> = out.lines().map(|l| l.unwrap()).collect();
    assert_eq!(
        rest.iter()
            .filter(|l| l.contains("\"kind\":\"access\""))
            .count(),
        16,
        "{rest:#?}"
    );
    assert!(
        rest.last().unwrap().contains("\"message\":\"stopped\""),
        "{rest:#?}"
    );
    lab.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn an_empty_upstream_body_is_complete_not_a_client_leaving() {
    // `Content-Length: 0` from the upstream: hyper never polls such a body, it only drops it.
    let h = start("").await;
    let req = get(h.addr, "/f/bigheader?bytes=300")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = send(h.addr, req).await;
    assert_eq!(seen.status, 200);
    let line = h.access_line(seen.header("x-request-id")).await;
    assert_eq!(line["cause"], serde_json::Value::Null, "{line}");
    assert_eq!(line["status"], 200);
    h.stop().await;
}

/// Reads one response (head and `Content-Length` body) from `s`, leaving the connection open.
async fn read_response(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before a whole response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_kept_alive_connection_gets_the_head_deadline_for_its_next_request_and_the_idle_one_after(
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The idle timeout is far longer than the head timeout: a head that starts on a connection
    // that already served a request must move the watchdog's deadline earlier.
    let top = "[limits]\nrequest_header_timeout = \"300ms\"\nclient_idle_timeout = \"60s\"\n";
    let h = start(top).await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /f/ok HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_response(&mut s).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:.300}");
    s.write_all(b"GET /f/ok HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "no answer to the stalled head within 10 s (its deadline is 300 ms)"
    );
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:.300}");
    h.stop().await;

    // And a kept-alive connection with nothing more to send is closed after the idle timeout.
    let top = "[limits]\nrequest_header_timeout = \"60s\"\nclient_idle_timeout = \"300ms\"\n";
    let h = start(top).await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    for _ in 0..3 {
        s.write_all(b"GET /f/ok HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
    }
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "the idle connection was not closed within 10 s (its timeout is 300 ms)"
    );
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    h.stop().await;
}
