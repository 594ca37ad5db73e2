//! Request safety, case by case over raw sockets: nothing a client or an upstream sends can
//! make the gateway route by one host and deliver to another, frame a body two ways, relay a
//! body framed ambiguously, or show an untrusted visitor where its upstreams live. Each test is
//! named after the case it pins down, so that a hyper upgrade cannot change these answers
//! unnoticed.

#[path = "support/canned.rs"]
mod canned;
mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use lab::{Fault, Lab, LabOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const REQUEST_HEAD_LIMIT: usize = 8192;
const RESPONSE_HEAD_LIMIT: usize = 16384;

struct Setup {
    gw: Gw,
    canned: canned::Canned,
    lab: Option<Lab>,
}

/// A gateway with one route, `a.example` to the canned upstream; `top` goes at the top of the
/// configuration, and `with_lab` adds the lab's `bigheader` (host `big.test`) and `refused`
/// (host `down.test`) behind it.
async fn setup(top: &str, with_lab: bool) -> Setup {
    setup_limits(top, "", with_lab).await
}

/// As [`setup`], with `limits` added to the `[limits]` table.
async fn setup_with(limits: &str, with_lab: bool) -> Setup {
    setup_limits("", limits, with_lab).await
}

async fn setup_limits(top: &str, limits: &str, with_lab: bool) -> Setup {
    let canned = canned::start().await;
    let mut text = format!(
        "listen = [\"127.0.0.1:0\"]\n{top}\n[limits]\nmax_request_header_bytes = {REQUEST_HEAD_LIMIT}\nmax_response_header_bytes = {RESPONSE_HEAD_LIMIT}\n{limits}\n\n[upstream.app]\nendpoints = [\"{}\"]\n{UPSTREAM_TIMEOUTS}\n[[route]]\nhost = \"a.example\"\npath = \"/\"\nupstream = \"app\"\n",
        canned.addr
    );
    let lab = if with_lab {
        let lab = Lab::start_all(LabOptions::default()).await.unwrap();
        for (name, fault, host) in [
            ("big", Fault::Bigheader, "big.test"),
            ("down", Fault::Refused, "down.test"),
        ] {
            text.push_str(&format!(
                "[upstream.{name}]\nendpoints = [\"{}\"]\n{UPSTREAM_TIMEOUTS}\n[[route]]\nhost = \"{host}\"\npath = \"/\"\nupstream = \"{name}\"\n",
                lab.addr(fault).unwrap()
            ));
        }
        Some(lab)
    } else {
        None
    };
    Setup {
        gw: gateway(&text).await,
        canned,
        lab,
    }
}

impl Setup {
    async fn stop(self) {
        self.gw.stop().await;
        if let Some(lab) = self.lab {
            lab.shutdown().await;
        }
    }
}

/// A response read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    /// The body as sent (chunk framing included).
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn has(&self, line: &str) -> bool {
        self.head.lines().any(|l| l.eq_ignore_ascii_case(line))
    }
    fn count(&self, name: &str) -> usize {
        self.head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
            .count()
    }
}

/// Sends `bytes` on a new connection and reads until the gateway closes it.
async fn wire(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the gateway closes the connection")
        .ok();
    out
}

async fn ask(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let out = wire(addr, bytes).await;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Answer {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

/// What the upstream received, from `/echo`'s body.
fn forwarded(a: &Answer) -> String {
    assert_eq!(a.status, 200, "{a:?}");
    a.text().to_ascii_lowercase()
}

fn refused(a: &Answer, status: u16) {
    assert_eq!(a.status, status, "{}\n{}", a.head, a.text());
    assert!(
        a.head.contains("cause=client_invalid phase=client"),
        "{}",
        a.head
    );
}

#[tokio::test]
async fn absolute_form_is_routed_and_forwarded_by_the_targets_host_never_the_host_header() {
    let s = setup("", false).await;
    // The route exists for a.example only; the Host line names another virtual host.
    let a = ask(
        s.gw.addr,
        b"GET http://a.example/echo HTTP/1.1\r\nHost: admin.internal\r\nConnection: close\r\n\r\n",
    )
    .await;
    let up = forwarded(&a);
    assert!(up.contains("\r\nhost: a.example\r\n"), "{up}");
    assert!(!up.contains("admin.internal"), "{up}");
    // The other way round: routed by the target's host, which has no route.
    let a = ask(
        s.gw.addr,
        b"GET http://admin.internal/echo HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 404, "{}", a.head);
    assert!(a.head.contains("cause=no_route"), "{}", a.head);
    // Userinfo in the authority is refused.
    let a = ask(
        s.gw.addr,
        b"GET http://user@a.example/echo HTTP/1.1\r\nHost: a.example\r\n\r\n",
    )
    .await;
    refused(&a, 400);
    s.stop().await;
}

#[tokio::test]
async fn a_request_without_exactly_one_valid_host_is_refused() {
    let s = setup("", false).await;
    for (case, head) in [
        (
            "two Host lines",
            "Host: a.example\r\nHost: evil.example\r\n",
        ),
        ("no Host", "X-A: b\r\n"),
        ("empty Host", "Host: \r\n"),
        ("space in Host", "Host: a b\r\n"),
        ("userinfo in Host", "Host: x@a.example\r\n"),
        ("bad port", "Host: a.example:8o\r\n"),
    ] {
        let req = format!("GET /echo HTTP/1.1\r\n{head}\r\n");
        let a = ask(s.gw.addr, req.as_bytes()).await;
        assert_eq!(a.status, 400, "{case}: {}", a.head);
        assert!(
            a.head.contains("cause=client_invalid"),
            "{case}: {}",
            a.head
        );
    }
    assert_eq!(
        s.canned.connections.load(Ordering::SeqCst),
        0,
        "nothing forwarded"
    );
    // The gateway keeps serving.
    let a = ask(
        s.gw.addr,
        b"GET /echo HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(a.status, 200);
    s.stop().await;
}

#[tokio::test]
async fn transfer_encoding_other_than_one_chunked_is_refused() {
    let s = setup("", false).await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for (case, fields, status) in [
        (
            "two TE lines",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "chunked twice in a list",
            "Transfer-Encoding: chunked, chunked\r\n",
            501,
        ),
        (
            "gzip then chunked",
            "Transfer-Encoding: gzip, chunked\r\n",
            501,
        ),
        (
            "length then coding",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
        (
            "coding then length",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
            400,
        ),
        (
            "coding and a wrong length",
            "Content-Length: 40\r\nTransfer-Encoding: chunked\r\n",
            400,
        ),
    ] {
        let req = format!("POST /echo HTTP/1.1\r\nHost: a.example\r\n{fields}\r\n{body}");
        let a = ask(s.gw.addr, req.as_bytes()).await;
        refused(&a, status);
        assert!(a.has("connection: close"), "{case}: {}", a.head);
    }
    assert_eq!(
        s.canned.connections.load(Ordering::SeqCst),
        0,
        "nothing forwarded"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_chunk_size_that_overflows_is_a_400_never_a_499_on_the_wire() {
    let s = setup("", false).await;
    for size in ["10000000000000000", "ffffffffffffffffff"] {
        let req = format!(
            "POST /echo HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello\r\n0\r\n\r\n"
        );
        let a = ask(s.gw.addr, req.as_bytes()).await;
        refused(&a, 400);
        let id = a
            .head
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .unwrap()
            .to_string();
        let warn =
            s.gw.wait_line("the WARN line", |l| {
                l["kind"] == "gateway_error" && l["request_id"] == id.as_str()
            })
            .await;
        assert_eq!(warn["level"], "WARN");
        assert_eq!(warn["cause"], "client_invalid");
        let access =
            s.gw.wait_line("the access line", |l| {
                l["kind"] == "access" && l["request_id"] == id.as_str()
            })
            .await;
        assert_eq!(access["status"], 400, "{access}");
    }
    s.stop().await;
}

#[tokio::test]
async fn chunked_bodies_reach_the_upstream_for_every_method() {
    let s = setup("", false).await;
    // Small: read whole and sent with its length, so a failed attempt could be replayed.
    for method in ["GET", "POST", "DELETE"] {
        let req = format!(
            "{method} /echo HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        let up = forwarded(&ask(s.gw.addr, req.as_bytes()).await);
        assert!(up.contains("\r\ncontent-length: 5\r\n"), "{method}: {up}");
        assert!(!up.contains("transfer-encoding"), "{method}: {up}");
        assert!(up.ends_with("\r\n\r\nhello"), "{method}: {up}");
    }
    // Larger than the replay limit: streamed on, chunked, GET included.
    let mut req = b"GET /echo HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..25 {
        req.extend_from_slice(format!("{:x}\r\n", 4096).as_bytes());
        req.extend(std::iter::repeat_n(b'x', 4096));
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let up = forwarded(&ask(s.gw.addr, &req).await);
    assert!(
        up.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{:.300}",
        up
    );
    let (_, body) = up.split_once("\r\n\r\n").unwrap();
    assert_eq!(body.bytes().filter(|b| *b == b'x').count(), 25 * 4096);
    s.stop().await;
}

#[tokio::test]
async fn length_lists_are_refused_and_double_spaces_normalised_on_the_way_up() {
    let s = setup("", false).await;
    // hyper's parser refuses a request length that is not a single number, as nginx does.
    for fields in [
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: +5",
    ] {
        let req = format!("POST /echo HTTP/1.1\r\nHost: a.example\r\n{fields}\r\n\r\nhello");
        let a = ask(s.gw.addr, req.as_bytes()).await;
        assert_eq!(a.status, 400, "{fields}: {}", a.head);
    }
    assert_eq!(
        s.canned.connections.load(Ordering::SeqCst),
        0,
        "nothing forwarded"
    );
    let up = forwarded(
        &ask(
            s.gw.addr,
            b"GET  /echo  HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(up.starts_with("get /echo http/1.1\r\n"), "{up}");
    s.stop().await;
}

#[tokio::test]
async fn bytes_that_are_neither_http1_nor_http2_are_closed_without_an_answer() {
    let s = setup("", false).await;
    let out = wire(s.gw.addr, b"INVALID CONNECTION PREFACE\r\n\r\n").await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    let out = wire(s.gw.addr, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").await;
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    let warn =
        s.gw.wait_line("the WARN line", |l| l["kind"] == "gateway_error")
            .await;
    assert_eq!(warn["cause"], "client_invalid");
    // A short first line is still HTTP/1's to answer.
    let a = ask(s.gw.addr, b"GET /\r\n\r\n").await;
    assert_eq!(a.status, 400);
    s.stop().await;
}

/// A request head of exactly `size` bytes.
fn head_of(size: usize) -> Vec<u8> {
    let start = "GET /echo HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\nX-Pad: ";
    let pad = size - start.len() - 4;
    let mut h = start.as_bytes().to_vec();
    h.extend(std::iter::repeat_n(b'p', pad));
    h.extend_from_slice(b"\r\n\r\n");
    assert_eq!(h.len(), size);
    h
}

#[tokio::test]
async fn the_request_head_limit_is_exact_and_answered_with_proxy_status() {
    let s = setup("", false).await;
    let a = ask(s.gw.addr, &head_of(REQUEST_HEAD_LIMIT)).await;
    assert_eq!(a.status, 200, "{}", a.head);
    let a = ask(s.gw.addr, &head_of(REQUEST_HEAD_LIMIT + 1)).await;
    refused(&a, 431);
    assert!(a.head.contains("proxy-status: cleargate;"), "{}", a.head);
    assert_eq!(s.canned.connections.load(Ordering::SeqCst), 1);
    s.stop().await;
}

fn get_req(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn a_response_with_length_and_coding_is_relayed_by_its_coding_and_not_pooled() {
    let s = setup("", false).await;
    for (path, body) in [("/te-cl-short", "hello world"), ("/te-cl-long", "hello")] {
        let a = ask(s.gw.addr, &get_req(path)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.count("content-length"), 0, "{path}: {}", a.head);
        assert!(a.has("transfer-encoding: chunked"), "{path}: {}", a.head);
        let expect = format!("{:X}\r\n{body}\r\n0\r\n\r\n", body.len());
        assert_eq!(a.text(), expect, "{path}");
    }
    // Neither connection went back to the pool.
    let a = ask(s.gw.addr, &get_req("/ok")).await;
    assert_eq!(a.status, 200);
    assert_eq!(s.canned.connections.load(Ordering::SeqCst), 3);
    s.stop().await;
}

#[tokio::test]
async fn a_transfer_coding_the_gateway_does_not_decode_is_an_invalid_response() {
    let s = setup("", false).await;
    for path in ["/te-gzip", "/te-gzip-chunked"] {
        let a = ask(s.gw.addr, &get_req(path)).await;
        assert_eq!(a.status, 502, "{path}: {}", a.head);
        assert!(
            a.head.contains("cause=invalid_response phase=read_head"),
            "{path}: {}",
            a.head
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn length_lists_from_the_upstream_are_written_once() {
    let s = setup("", false).await;
    for path in ["/cl-list", "/cl-twice"] {
        let a = ask(s.gw.addr, &get_req(path)).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.count("content-length"), 1, "{path}: {}", a.head);
        assert!(a.has("content-length: 5"), "{path}: {}", a.head);
        assert_eq!(a.text(), "hello");
    }
    s.stop().await;
}

#[tokio::test]
async fn response_header_lines_are_limited_by_max_response_headers() {
    // 100 by default, as HAProxy and Envoy: 300 lines are too many.
    let s = setup("", false).await;
    let a = ask(s.gw.addr, &get_req("/many-headers")).await;
    assert_eq!(a.status, 502, "{:.300}", a.head);
    assert!(a.head.contains("cause=response_too_large"), "{}", a.head);
    let warn =
        s.gw.wait_line("the WARN line", |l| l["kind"] == "gateway_error")
            .await;
    assert!(warn.to_string().contains("100 header lines"), "{warn}");
    s.stop().await;
    // Raised, every line is relayed.
    let s = setup_with("max_response_headers = 400", false).await;
    let a = ask(s.gw.addr, &get_req("/many-headers")).await;
    assert_eq!(a.status, 200, "{:.300}", a.head);
    assert_eq!(a.head.lines().filter(|l| l.starts_with("x-h")).count(), 300);
    s.stop().await;
}

#[tokio::test]
async fn a_body_broken_at_its_first_chunk_is_a_502_not_a_cut_200() {
    let s = setup("", false).await;
    let a = ask(s.gw.addr, &get_req("/overflow-chunk")).await;
    assert_eq!(a.status, 502, "{}", a.head);
    assert!(
        a.head.contains("cause=invalid_response phase=read_body"),
        "{}",
        a.head
    );
    let access =
        s.gw.wait_line("the access line", |l| l["kind"] == "access")
            .await;
    assert_eq!(
        access["status"], 502,
        "the log records the status sent: {access}"
    );
    s.stop().await;
}

#[tokio::test]
async fn the_response_head_limit_is_exact() {
    let s = setup("", true).await;
    let big = |bytes: usize| {
        format!("GET /?bytes={bytes} HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\n\r\n")
    };
    let a = ask(s.gw.addr, big(RESPONSE_HEAD_LIMIT).as_bytes()).await;
    assert_eq!(a.status, 200, "{:.300}", a.head);
    let a = ask(s.gw.addr, big(RESPONSE_HEAD_LIMIT + 1).as_bytes()).await;
    assert_eq!(a.status, 502, "{}", a.head);
    assert!(
        a.head.contains("cause=response_too_large phase=read_head"),
        "{}",
        a.head
    );
    let warn =
        s.gw.wait_line("the WARN line", |l| {
            l["kind"] == "gateway_error" && l["cause"] == "response_too_large"
        })
        .await;
    assert!(
        warn.to_string()
            .contains(&format!("limit of {RESPONSE_HEAD_LIMIT} bytes")),
        "{warn}"
    );
    s.stop().await;
}

/// Connects from `from` (any 127/8 address is this host) and sends `bytes`.
async fn ask_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .unwrap()
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_untrusted_client_never_sees_an_upstream_address() {
    let s = setup("trusted_clients = [\"127.0.0.1/32\"]", true).await;
    let lab = s.lab.as_ref().unwrap();
    let endpoint = lab.addr(Fault::Refused).unwrap().to_string();
    let port = lab.addr(Fault::Refused).unwrap().port().to_string();
    for accept in ["text/html", "application/json", "text/plain"] {
        let req = format!(
            "GET / HTTP/1.1\r\nHost: down.test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        );
        let seen = ask_from("127.0.0.2", s.gw.addr, req.as_bytes()).await;
        assert!(seen.starts_with("HTTP/1.1 502"), "{seen:.300}");
        assert!(seen.contains("next-hop=\"down\""), "{accept}: {seen}");
        assert!(
            seen.contains("cause=refused phase=connect"),
            "{accept}: {seen}"
        );
        assert!(!seen.contains("127.0.0.1"), "{accept}: {seen}");
        assert!(!seen.contains(&port), "{accept}: {seen}");
        assert!(!seen.contains("os error"), "{accept}: {seen}");
        // The trusted operator sees the address.
        let seen = ask_from("127.0.0.1", s.gw.addr, req.as_bytes()).await;
        assert!(seen.contains(&format!("next-hop=\"{endpoint}\"")), "{seen}");
    }
    // The log has everything.
    let warn =
        s.gw.wait_line("the WARN line", |l| {
            l["kind"] == "gateway_error" && l["cause"] == "refused"
        })
        .await;
    assert!(warn.to_string().contains(&endpoint), "{warn}");
    s.stop().await;
}

#[tokio::test]
async fn look_alikes_of_framing_and_forwarding_headers_never_reach_the_upstream() {
    let s = setup("", false).await;
    let up = forwarded(
        &ask(
            s.gw.addr,
            b"GET /echo HTTP/1.1\r\nHost: a.example\r\nTransfer_Encoding: chunked\r\nContent_Length: 9\r\nTransfer---Encoding: chunked\r\nX_Forwarded_For: 10.9.9.9\r\nX-Kept: 1\r\nConnection: close\r\n\r\n",
        )
        .await,
    );
    assert!(!up.contains("_encoding") && !up.contains("---"), "{up}");
    assert!(
        !up.contains("content_length") && !up.contains("10.9.9.9"),
        "{up}"
    );
    assert!(up.contains("\r\nx-kept: 1\r\n"), "{up}");
    s.stop().await;
}
