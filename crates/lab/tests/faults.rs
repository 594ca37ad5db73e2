//! Every fault observed from a plain TCP client: the exact bytes, EOF versus reset, and timing
//! where timing is the fault. Timeouts here are either the assertion itself ("nothing arrives
//! within 200 ms") or a guard against a hung test, never a way to wait for the server.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lab::{Cause, Fault, Lab, LabOptions, Phase, Stats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
/// Upper bound for anything that should happen promptly; hitting it fails the test.
const GUARD: Duration = Duration::from_secs(10);
/// How long "nothing happens" is watched for.
const QUIET: Duration = Duration::from_millis(200);

fn test_opts() -> LabOptions {
    LabOptions {
        slow_delay: Duration::from_millis(50),
        kashort_ms: 100,
        ..LabOptions::default()
    }
}

async fn one(fault: Fault, opts: LabOptions) -> (Lab, SocketAddr) {
    let lab = Lab::start(&[(fault, 0)], IpAddr::V4(Ipv4Addr::LOCALHOST), opts)
        .await
        .expect("lab starts");
    let addr = lab.addr(fault).expect("fault started");
    (lab, addr)
}

async fn send(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write request");
    stream
}

/// Everything until the stream ends, and how it ended: `None` for EOF, else the error kind.
async fn read_until_end(stream: &mut TcpStream) -> (Vec<u8>, Option<io::ErrorKind>) {
    timeout(GUARD, async {
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return (got, Some(e.kind())),
            }
        }
    })
    .await
    .expect("stream should end")
}

/// One response (head and Content-Length body), keeping bytes past it in `rest`.
async fn read_response(stream: &mut TcpStream, rest: &mut Vec<u8>) -> (String, Vec<u8>) {
    timeout(GUARD, async {
        let mut buf = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut buf).await.expect("read head");
            assert!(
                n > 0,
                "EOF inside head: {:?}",
                String::from_utf8_lossy(rest)
            );
            rest.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8(rest.drain(..head_end).collect()).unwrap();
        let len: usize = header(&head, "content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        while rest.len() < len {
            let n = stream.read(&mut buf).await.expect("read body");
            assert!(n > 0, "EOF inside body");
            rest.extend_from_slice(&buf[..n]);
        }
        let body = rest.drain(..len).collect();
        (head, body)
    })
    .await
    .expect("response should arrive")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn ok_keeps_alive_and_echoes_the_request() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut s = send(
        addr,
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Dup: 1\r\nx-dup: \"2\"\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    assert!(header(&head, "date").is_some_and(|d| d.ends_with(" GMT")));
    assert_eq!(header(&head, "keep-alive"), None);
    assert_eq!(header(&head, "connection"), None);
    assert_eq!(
        text(&body),
        r#"{"fault":"ok","method":"GET","path":"/x","body_bytes":0,"headers":{"host":"x","x-dup":"1, \"2\""}}"#
    );

    // Same connection, second request, asking to close.
    s.write_all(b"DELETE /y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "connection"), Some("close"));
    assert!(text(&body).contains(r#""method":"DELETE","path":"/y""#));
    let (after, end) = read_until_end(&mut s).await;
    assert!(rest.is_empty() && after.is_empty());
    assert_eq!(end, None, "clean EOF after Connection: close");

    assert_eq!(
        lab.stats(Fault::Ok),
        Stats {
            connections: 1,
            requests: 2
        }
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn ok_answers_pipelined_requests_in_order() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut s = send(
        addr,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/5 HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let (_, a) = read_response(&mut s, &mut rest).await;
    let (_, b) = read_response(&mut s, &mut rest).await;
    let (_, c) = read_response(&mut s, &mut rest).await;
    assert!(text(&a).contains(r#""path":"/a""#));
    assert_eq!(b, b"aaaaa");
    assert!(text(&c).contains(r#""path":"/c""#));
    lab.shutdown().await;
}

#[tokio::test]
async fn ok_sends_exactly_n_bytes() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let n = 1_000_003;
    let mut s = send(
        addr,
        format!("GET /bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    let mut rest = Vec::new();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "content-length"), Some("1000003"));
    assert_eq!(body.len(), n);

    s.write_all(b"GET /bytes/0 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "content-length"), Some("0"));
    assert!(body.is_empty());

    // HEAD gets the length without the bytes; the next response follows immediately.
    s.write_all(
        b"HEAD /bytes/10 HTTP/1.1\r\nHost: x\r\n\r\nGET /bytes/2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    // The HEAD response announces 10 bytes but has none: read just its head.
    let head = read_response_head_only(&mut s, &mut rest).await;
    assert_eq!(header(&head, "content-length"), Some("10"));
    let (_, body) = read_response(&mut s, &mut rest).await;
    assert_eq!(body, b"aa");
    lab.shutdown().await;
}

async fn read_response_head_only(stream: &mut TcpStream, rest: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(rest.drain(..i + 4).collect()).unwrap();
            return head;
        }
        let n = timeout(GUARD, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        rest.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn ok_counts_chunked_and_sized_upload_bodies() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut upload = b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=v\r\nhello\r\n1A\r\n".to_vec();
    upload.extend_from_slice(&[b'z'; 26]);
    upload.extend_from_slice(b"\r\n0\r\nX-Trailer: y\r\n\r\n");
    // Pipelined behind the chunked body: must be parsed from the leftover bytes.
    upload.extend_from_slice(b"GET /bytes/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut s = send(addr, &upload).await;
    let mut rest = Vec::new();
    let (_, body) = read_response(&mut s, &mut rest).await;
    assert!(text(&body).contains(r#""method":"POST","path":"/up","body_bytes":31"#));
    let (_, body) = read_response(&mut s, &mut rest).await;
    assert_eq!(body, b"aaa");

    let big = 300_000;
    let mut sized =
        format!("PUT /s HTTP/1.1\r\nHost: x\r\nContent-Length: {big}\r\n\r\n").into_bytes();
    sized.resize(sized.len() + big, b'q');
    s.write_all(&sized).await.unwrap();
    let (_, body) = read_response(&mut s, &mut rest).await;
    assert!(text(&body).contains(r#""body_bytes":300000"#));
    lab.shutdown().await;
}

#[tokio::test]
async fn ok_sends_100_continue_when_asked() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut s = send(
        addr,
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    )
    .await;
    let mut rest = Vec::new();
    let interim = read_response_head_only(&mut s, &mut rest).await;
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"body").await.unwrap();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(text(&body).contains(r#""body_bytes":4"#));
    lab.shutdown().await;
}

#[tokio::test]
async fn ok_rejects_oversized_and_malformed_requests() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.resize(big.len() + 70 * 1024, b'b');
    big.extend_from_slice(b"\r\n\r\n");
    let mut s = send(addr, &big).await;
    let (got, end) = read_until_end(&mut s).await;
    let got = text(&got);
    assert!(
        got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{got}"
    );
    assert!(got.contains("Connection: close\r\n"));
    assert_eq!(end, None);

    let mut s = send(
        addr,
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    let (got, end) = read_until_end(&mut s).await;
    assert!(text(&got).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    assert_eq!(end, None);

    let mut s = send(addr, b"NOT HTTP AT ALL\r\n\r\n").await;
    let (got, _) = read_until_end(&mut s).await;
    assert!(text(&got).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    lab.shutdown().await;
}

#[tokio::test]
async fn ok_closes_http10_unless_kept_alive() {
    let (lab, addr) = one(Fault::Ok, test_opts()).await;
    let mut s = send(addr, b"GET /old HTTP/1.0\r\n\r\n").await;
    let mut rest = Vec::new();
    let (head, _) = read_response(&mut s, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert_eq!(header(&head, "connection"), Some("close"));
    assert_eq!(read_until_end(&mut s).await, (Vec::new(), None));

    let mut s = send(addr, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await;
    let (head, _) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "connection"), Some("keep-alive"));
    s.write_all(b"GET /again HTTP/1.0\r\n\r\n").await.unwrap();
    let (_, body) = read_response(&mut s, &mut rest).await;
    assert!(text(&body).contains("/again"));
    lab.shutdown().await;
}

#[tokio::test]
async fn keepalive_hint_is_sent_only_when_configured_and_never_by_kashort() {
    let opts = LabOptions {
        keepalive_timeout_hint: Some(7),
        ..test_opts()
    };
    let faults = [(Fault::Ok, 0), (Fault::Kashort, 0)];
    let lab = Lab::start(&faults, IpAddr::V4(Ipv4Addr::LOCALHOST), opts)
        .await
        .unwrap();
    let mut rest = Vec::new();
    let mut s = send(lab.addr(Fault::Ok).unwrap(), GET).await;
    let (head, _) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "keep-alive"), Some("timeout=7"));
    let mut s = send(lab.addr(Fault::Kashort).unwrap(), GET).await;
    let (head, _) = read_response(&mut s, &mut rest).await;
    assert_eq!(header(&head, "keep-alive"), None);
    lab.shutdown().await;
}

#[tokio::test]
async fn refused_has_nothing_listening() {
    let (lab, addr) = one(Fault::Refused, test_opts()).await;
    let err = TcpStream::connect(addr).await.expect_err("nothing listens");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    lab.shutdown().await;
}

#[tokio::test]
async fn unaccepted_connects_hang() {
    let (lab, addr) = one(Fault::Unaccepted, test_opts()).await;
    let attempt = timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
    assert!(
        attempt.is_err(),
        "connect completed ({attempt:?}) although the accept queue is full"
    );
    assert_eq!(lab.stats(Fault::Unaccepted), Stats::default());
    lab.shutdown().await;
}

#[tokio::test]
async fn reset_resets_after_the_head() {
    let (lab, addr) = one(Fault::Reset, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert!(got.is_empty());
    assert_eq!(end, Some(io::ErrorKind::ConnectionReset));
    assert_eq!(lab.stats(Fault::Reset).requests, 1);
    lab.shutdown().await;
}

#[tokio::test]
async fn close_closes_cleanly_without_a_byte() {
    let (lab, addr) = one(Fault::Close, test_opts()).await;
    let mut s = send(addr, GET).await;
    assert_eq!(read_until_end(&mut s).await, (Vec::new(), None));
    lab.shutdown().await;
}

#[tokio::test]
async fn midheader_stops_inside_a_header() {
    let (lab, addr) = one(Fault::Midheader, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert_eq!(text(&got), "HTTP/1.1 200 OK\r\nContent-Ty");
    assert_eq!(end, None);
    lab.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers_until_shutdown() {
    let (lab, addr) = one(Fault::Hang, test_opts()).await;
    let mut s = send(addr, GET).await;
    let mut buf = [0u8; 64];
    assert!(
        timeout(QUIET, s.read(&mut buf)).await.is_err(),
        "hang must not answer nor close"
    );
    // Shutdown ends the connection task, which closes the connection.
    lab.shutdown().await;
    let (got, _) = read_until_end(&mut s).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn slow_answers_after_the_delay() {
    let (lab, addr) = one(Fault::Slow, test_opts()).await;
    let started = Instant::now();
    let mut s = send(addr, GET).await;
    let mut rest = Vec::new();
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(text(&body).starts_with(r#"{"fault":"slow","method":"GET","path":"/""#));
    lab.shutdown().await;
}

#[tokio::test]
async fn garbage_is_not_http() {
    let (lab, addr) = one(Fault::Garbage, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert_eq!(text(&got), "this is not http\r\n\r\n");
    assert_eq!(end, None);
    lab.shutdown().await;
}

#[tokio::test]
async fn bigheader_sends_a_huge_head() {
    let (lab, addr) = one(Fault::Bigheader, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert_eq!(end, None);
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(got.ends_with(b"\r\nContent-Length: 0\r\n\r\n"));
    assert!(
        got.len() >= 1024 * 1024 && got.len() < 1024 * 1024 + 2048,
        "{}",
        got.len()
    );
    // Exactly one empty line: the whole thing is one head.
    assert_eq!(got.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
    let first = text(&got[..2000]);
    assert!(first.contains("\r\nX-Filler-0: aaaa"));

    // A client hanging up early (as a gateway over its limit does) is not a problem.
    let mut s = send(addr, GET).await;
    let mut buf = [0u8; 100];
    s.read_exact(&mut buf).await.unwrap();
    drop(s);
    let mut s = send(addr, GET).await;
    let (got, _) = read_until_end(&mut s).await;
    assert!(got.ends_with(b"\r\n\r\n"));

    // `?bytes=N` asks for a head of exactly N bytes, so that a limit can be met to the byte.
    for size in [200, 1013, 1014, 1015, 1016, 2029, 65_536, 65_537] {
        let req = format!("GET /?bytes={size} HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut s = send(addr, req.as_bytes()).await;
        let (got, _) = read_until_end(&mut s).await;
        assert_eq!(got.len(), size, "asked for {size}");
        assert_eq!(got.windows(4).filter(|w| w == b"\r\n\r\n").count(), 1);
        assert!(got.ends_with(b"\r\nContent-Length: 0\r\n\r\n"));
    }
    lab.shutdown().await;
}

#[tokio::test]
async fn truncated_closes_inside_the_body() {
    let (lab, addr) = one(Fault::Truncated, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert_eq!(end, None);
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = text(&got[..split]);
    assert_eq!(header(&head, "content-length"), Some("1000000"));
    assert_eq!(got.len() - split, 1000);
    lab.shutdown().await;
}

#[tokio::test]
async fn badchunk_sends_an_invalid_chunk_size() {
    let (lab, addr) = one(Fault::Badchunk, test_opts()).await;
    let mut s = send(addr, GET).await;
    let (got, end) = read_until_end(&mut s).await;
    assert_eq!(end, None);
    let got = text(&got);
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"));
    assert!(got.contains("\r\nTransfer-Encoding: chunked\r\n"));
    assert!(got.ends_with("\r\n\r\n5\r\nhello\r\nzz\r\n"), "{got:?}");
    lab.shutdown().await;
}

#[tokio::test]
async fn stall_goes_silent_inside_the_body() {
    let (lab, addr) = one(Fault::Stall, test_opts()).await;
    let mut s = send(addr, GET).await;
    let mut rest = Vec::new();
    let head = read_response_head_only(&mut s, &mut rest).await;
    assert_eq!(header(&head, "content-length"), Some("1000000"));
    let mut buf = [0u8; 4096];
    while rest.len() < 1000 {
        let n = timeout(GUARD, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed after {} body bytes", rest.len());
        rest.extend_from_slice(&buf[..n]);
    }
    assert_eq!(rest.len(), 1000);
    assert!(
        timeout(QUIET, s.read(&mut buf)).await.is_err(),
        "stall must neither send more nor close"
    );
    lab.shutdown().await;
    assert_eq!(read_until_end(&mut s).await.0, Vec::<u8>::new());
}

#[tokio::test]
async fn flaky_every_nth_request_is_reset() {
    let opts = LabOptions {
        flaky_every: Some(2),
        ..test_opts()
    };
    let (lab, addr) = one(Fault::Flaky, opts).await;
    for _ in 0..2 {
        let mut s = send(addr, GET).await;
        let mut rest = Vec::new();
        let (head, body) = read_response(&mut s, &mut rest).await;
        assert!(head.starts_with("HTTP/1.1 200 OK"));
        assert!(text(&body).contains(r#""fault":"flaky""#));
        s.write_all(GET).await.unwrap();
        let (got, end) = read_until_end(&mut s).await;
        assert!(got.is_empty());
        assert_eq!(end, Some(io::ErrorKind::ConnectionReset));
    }
    assert_eq!(
        lab.stats(Fault::Flaky),
        Stats {
            connections: 2,
            requests: 4
        }
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn kashort_closes_idle_connections() {
    let (lab, addr) = one(Fault::Kashort, test_opts()).await;
    let mut s = send(addr, GET).await;
    let mut rest = Vec::new();
    read_response(&mut s, &mut rest).await;
    // Not idle yet: a prompt second request is served.
    s.write_all(GET).await.unwrap();
    let (head, _) = read_response(&mut s, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    let idle_from = Instant::now();
    let (got, end) = read_until_end(&mut s).await;
    let idle = idle_from.elapsed();
    assert!(got.is_empty());
    assert_eq!(end, None, "closed with FIN");
    // The server's idle clock started before ours, so allow a little slack below 100 ms.
    assert!(idle >= Duration::from_millis(80), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(2), "closed after {idle:?}");
    lab.shutdown().await;
}

#[tokio::test]
async fn status_answers_its_own_status() {
    let (lab, addr) = one(Fault::Status, test_opts()).await;
    let mut s = send(addr, GET).await;
    let mut rest = Vec::new();
    for _ in 0..2 {
        let (head, body) = read_response(&mut s, &mut rest).await;
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert_eq!(body, b"status 503 from the lab");
        s.write_all(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
            .await
            .unwrap();
    }
    lab.shutdown().await;

    let opts = LabOptions {
        status: 429,
        ..test_opts()
    };
    let (lab, addr) = one(Fault::Status, opts).await;
    let mut s = send(addr, GET).await;
    let (head, body) = read_response(&mut s, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
    assert_eq!(body, b"status 429 from the lab");
    lab.shutdown().await;
}

#[tokio::test]
async fn invalid_options_are_refused() {
    for opts in [
        LabOptions {
            status: 101,
            ..test_opts()
        },
        LabOptions {
            flaky_fraction: 1.5,
            ..test_opts()
        },
    ] {
        let err = Lab::start(&[(Fault::Ok, 0)], IpAddr::V4(Ipv4Addr::LOCALHOST), opts)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}

#[tokio::test]
async fn start_all_serves_every_fault_and_tabulates_them() {
    let lab = Lab::start_all(test_opts()).await.unwrap();
    let addrs = lab.addrs();
    assert_eq!(addrs.len(), Fault::ALL.len());
    let mut ports: Vec<u16> = addrs.iter().map(|(_, a)| a.port()).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), Fault::ALL.len(), "one port per fault");
    for (fault, addr) in &addrs {
        assert_eq!(lab.addr(*fault), Some(*addr));
        assert!(addr.ip().is_loopback());
    }

    let table = lab.table();
    assert!(table.starts_with("fault "));
    assert_eq!(table.lines().count(), Fault::ALL.len() + 2);
    for fault in Fault::ALL {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("{} ", fault.name())))
            .unwrap_or_else(|| panic!("no row for {fault}"));
        assert!(row.contains(&lab.addr(*fault).unwrap().to_string()));
        assert!(row.contains(fault.describe()));
        match fault.provokes() {
            Some((cause, phase)) => {
                assert!(row.ends_with(&format!("{}@{}", cause.as_str(), phase.as_str())))
            }
            None => assert!(row.ends_with(" -")),
        }
    }
    assert_eq!(
        Fault::Reset.provokes(),
        Some((Cause::Reset, Phase::ReadHead))
    );

    // Connections held open by the faults are ended by shutdown.
    let mut hang = send(lab.addr(Fault::Hang).unwrap(), GET).await;
    let mut ok = send(lab.addr(Fault::Ok).unwrap(), GET).await;
    let mut rest = Vec::new();
    read_response(&mut ok, &mut rest).await;
    lab.shutdown().await;
    read_until_end(&mut hang).await;
    read_until_end(&mut ok).await;
}

#[tokio::test]
async fn dropping_the_lab_ends_its_connections() {
    let (lab, addr) = one(Fault::Hang, test_opts()).await;
    let mut s = send(addr, GET).await;
    // Whether or not the connection was accepted yet, it ends: an accepted one with its aborted
    // task, an unaccepted one with the closed listener.
    drop(lab);
    let (got, _) = read_until_end(&mut s).await;
    assert!(got.is_empty());
}
