//! The HTTP/1.1 client against a raw socket on loopback that says exactly what each case needs:
//! reuse after a complete body, the moment an idle connection is closed, a body of unknown
//! length sent in chunks, an answer that comes before the request body is sent, bytes after
//! the end of a response, and an early end of the body.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cause::{Cause, Phase};
use http_body_util::BodyExt;
use net::{Conn, ConnectOptions, Deadlines, RequestBody, UpstreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const OPTS: ConnectOptions = ConnectOptions {
    connect_timeout: Duration::from_secs(2),
    max_response_header_bytes: 8192,
    max_response_headers: 100,
    h2: false,
    tls: None,
};

const DEADLINES: Deadlines = Deadlines {
    connect: Duration::from_secs(2),
    send: Duration::from_secs(2),
    response: Duration::from_secs(2),
    body_idle: Duration::from_secs(2),
};

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// Reads from `s` until `buf` holds a whole request head and, if `body` bytes are expected
/// after it, those too. Returns what was read.
async fn read_request(s: &mut TcpStream, body: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if buf.len() >= end + 4 + body {
                return buf;
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the client closed early: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn send(
    conn: Conn,
    req: http::Request<RequestBody>,
) -> Result<(http::Response<UpstreamBody>, Conn, net::Exchange), (cause::Failure, net::Exchange)> {
    let (head, body) = req.into_parts();
    conn.send(&head, body, &DEADLINES).await
}

fn get(path: &str) -> http::Request<RequestBody> {
    http::Request::get(path)
        .header("host", "test")
        .body(RequestBody::empty())
        .unwrap()
}

async fn body_of(
    resp: http::Response<UpstreamBody>,
) -> (UpstreamBody, Result<Bytes, cause::Failure>) {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    loop {
        match body.frame().await {
            None => return (body, Ok(out.into())),
            Some(Err(f)) => return (body, Err(f)),
            Some(Ok(frame)) => {
                if let Ok(d) = frame.into_data() {
                    out.extend_from_slice(&d);
                }
            }
        }
    }
}

/// Waits (bounded) until `done` holds; the socket event has to reach the runtime first.
async fn until(mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the condition never came true");
}

#[tokio::test]
async fn a_connection_is_reused_after_a_whole_body_and_its_idle_close_is_seen_when_it_happens() {
    let (l, addr) = listener().await;
    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        for body in ["one", "two"] {
            let req = read_request(&mut s, 0).await;
            assert!(req.starts_with(b"GET /x HTTP/1.1\r\nhost: test\r\n\r\n"));
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{body}");
            s.write_all(resp.as_bytes()).await.unwrap();
        }
        close_rx.await.unwrap();
        drop(s);
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (resp, mut conn, _) = send(conn, get("/x")).await.unwrap();
    assert!(
        !conn.is_open(),
        "the body has the connection while it is read"
    );
    let (mut body, data) = body_of(resp).await;
    assert_eq!(data.unwrap(), "one");
    conn.rejoin(&mut body);
    assert!(conn.is_ready());
    let (resp, mut conn, exchange) = send(conn, get("/x")).await.unwrap();
    assert!(exchange.reused);
    let (mut body, data) = body_of(resp).await;
    assert_eq!(data.unwrap(), "two");
    conn.rejoin(&mut body);
    assert!(conn.is_ready() && conn.closed_at().is_none());
    let before = Instant::now();
    close_tx.send(()).unwrap();
    until(|| conn.closed_at().is_some()).await;
    assert!(conn.closed_at().unwrap() >= before);
    assert!(!conn.is_ready());
    server.await.unwrap();
}

/// A reused connection keeps the timer its last exchange armed; the next exchange's later
/// deadline does not move it, so it fires early. That early fire is not a timeout: the
/// second answer comes after the first exchange's deadline and within its own, and is read.
#[tokio::test]
async fn a_timer_left_from_the_last_exchange_is_not_this_ones_deadline() {
    let deadlines = Deadlines {
        response: Duration::from_millis(1000),
        ..DEADLINES
    };
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        // The first answer comes half way to its deadline; the second 800 ms after it was
        // asked: 1.3 s after the first exchange began, 0.8 s into its own second.
        for (delay, body) in [(500, "one"), (800, "two")] {
            read_request(&mut s, 0).await;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{body}");
            s.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (head, body) = get("/x").into_parts();
    let (resp, mut conn, _) = conn.send(&head, body, &deadlines).await.unwrap();
    let (mut body, data) = body_of(resp).await;
    assert_eq!(data.unwrap(), "one");
    conn.rejoin(&mut body);
    assert!(conn.is_ready());
    let (head, body) = get("/x").into_parts();
    let (resp, _conn, exchange) = match conn.send(&head, body, &deadlines).await {
        Ok(sent) => sent,
        Err((f, _)) => panic!("the second exchange failed: {f:?}"),
    };
    assert!(exchange.reused);
    assert_eq!(body_of(resp).await.1.unwrap(), "two");
    server.await.unwrap();
}

#[tokio::test]
async fn a_body_of_unknown_length_goes_in_chunks() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let expect: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let req = read_request(&mut s, expect.len()).await;
        let text = String::from_utf8_lossy(&req).into_owned();
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        text
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let req = http::Request::post("/up")
        .header("host", "test")
        .body(RequestBody::new(Chan(rx)))
        .unwrap();
    let feeder = tokio::spawn(async move {
        for part in ["hello", " world"] {
            tx.send(Bytes::from(part)).await.unwrap();
        }
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (resp, _, _) = send(conn, req).await.unwrap();
    assert_eq!(resp.status(), 204);
    feeder.await.unwrap();
    let seen = server.await.unwrap();
    assert!(seen.starts_with("POST /up HTTP/1.1\r\n"), "{seen}");
    assert!(
        seen.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{seen}"
    );
    assert!(!seen.contains("content-length"), "{seen}");
    assert!(
        seen.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{seen}"
    );
}

/// A request body fed frame by frame, of unknown length.
struct Chan(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Chan {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test]
async fn an_answer_before_the_request_body_is_sent_ends_the_connection_after_it() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s, 0).await;
        s.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
            .await
            .unwrap();
        // Keeps the connection open: the client must not wait for anything else.
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let (_tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let req = http::Request::put("/big")
        .header("host", "test")
        .body(RequestBody::new(Chan(rx)))
        .unwrap();
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (resp, mut conn, _) = send(conn, req).await.unwrap();
    assert_eq!(resp.status(), 413);
    let (mut body, data) = body_of(resp).await;
    assert_eq!(data.unwrap(), "big!");
    conn.rejoin(&mut body);
    assert!(
        !conn.is_open(),
        "a connection with half a request on it is not reused"
    );
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn bytes_after_the_end_of_a_response_make_the_connection_unusable() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s, 0).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (resp, mut conn, _) = send(conn, get("/")).await.unwrap();
    let (mut body, data) = body_of(resp).await;
    assert_eq!(data.unwrap(), "ok");
    conn.rejoin(&mut body);
    assert!(!conn.is_ready());
    drop(conn);
    server.await.unwrap();
}

#[tokio::test]
async fn failures_are_classified_with_their_phase() {
    // Each case: what the upstream answers, then the failure of the head or the body.
    let cases: [(&[u8], Cause, Phase); 5] = [
        (b"", Cause::Closed, Phase::ReadHead),
        (b"HTTP/1.1 200 OK\r\nX-Half", Cause::Closed, Phase::ReadHead),
        (
            b"HTTP/1.1 2000 OK\r\n\r\n",
            Cause::InvalidResponse,
            Phase::ReadHead,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            Cause::Closed,
            Phase::ReadBody,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\nzz\r\n",
            Cause::InvalidResponse,
            Phase::ReadBody,
        ),
    ];
    for (answer, cause, phase) in cases {
        let (l, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_request(&mut s, 0).await;
            s.write_all(answer).await.unwrap();
        });
        let conn = net::connect(addr, &OPTS).await.unwrap();
        let f = match send(conn, get("/")).await {
            Err((f, _)) => f,
            Ok((resp, _, exchange)) => {
                let (_, data) = body_of(resp).await;
                net::body_failure(data.expect_err("the body must fail"), &exchange)
            }
        };
        let shown = String::from_utf8_lossy(answer);
        assert_eq!(
            (f.cause, f.phase),
            (cause, phase),
            "{shown}: {:?}",
            f.detail
        );
        server.await.unwrap();
    }
}

#[tokio::test]
async fn header_values_hold_only_what_a_header_value_may_hold() {
    // The values are taken from the head without a second check: the parser's rules must be
    // the same as `HeaderValue`'s. A control byte is refused; tabs and obs-text pass intact.
    let refused: [&[u8]; 4] = [b"a\x00b", b"a\x7fb", b"a\x01b", b"a\rb"];
    for value in refused {
        let (l, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_request(&mut s, 0).await;
            let mut head = b"HTTP/1.1 200 OK\r\nX-Value: ".to_vec();
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
            let _ = s.write_all(&head).await;
        });
        let conn = net::connect(addr, &OPTS).await.unwrap();
        match send(conn, get("/")).await {
            Err((f, _)) => assert_eq!(
                (f.cause, f.phase),
                (Cause::InvalidResponse, Phase::ReadHead),
                "{value:?}"
            ),
            Ok((resp, _, _)) => panic!("{value:?} was accepted as {:?}", resp.headers()),
        }
        server.await.unwrap();
    }
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        read_request(&mut s, 0).await;
        s.write_all(
            b"HTTP/1.1 200 OK\r\nX-Value: caf\xe9\tau lait \x80~\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (resp, _, _) = send(conn, get("/")).await.unwrap();
    assert_eq!(
        resp.headers()["x-value"].as_bytes(),
        b"caf\xe9\tau lait \x80~"
    );
    server.await.unwrap();
}

#[tokio::test]
async fn a_head_over_the_limit_is_too_large_and_one_at_the_limit_is_read() {
    for (extra, cause) in [(0usize, None), (1, Some(Cause::ResponseTooLarge))] {
        let (l, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            read_request(&mut s, 0).await;
            let start = b"HTTP/1.1 204 No Content\r\nX-Pad: ";
            let pad = OPTS.max_response_header_bytes + extra - start.len() - 4;
            let mut head = start.to_vec();
            head.resize(start.len() + pad, b'a');
            head.extend_from_slice(b"\r\n\r\n");
            let _ = s.write_all(&head).await;
        });
        let conn = net::connect(addr, &OPTS).await.unwrap();
        match (send(conn, get("/")).await, cause) {
            (Ok((resp, _, _)), None) => assert_eq!(resp.status(), 204),
            (Err((f, _)), Some(c)) => assert_eq!(f.cause, c),
            (Ok(_), Some(_)) => panic!("a head one byte over the limit was accepted"),
            (Err((f, _)), None) => panic!("a head at the limit failed: {f:?}"),
        }
        server.await.unwrap();
    }
}

#[tokio::test]
async fn added_lines_go_after_the_heads_own_on_both_protocols() {
    use http::{HeaderName, HeaderValue};
    let (xff, id) = (
        HeaderName::from_static("x-forwarded-for"),
        HeaderName::from_static("x-request-id"),
    );
    let (client, request) = (
        HeaderValue::from_static("192.0.2.1"),
        HeaderValue::from_static("abc123"),
    );
    let extra = [(&xff, &client), (&id, &request)];
    // HTTP/1.1: on the wire, after the head's own lines and before the framing.
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let head = read_request(&mut s, 0).await;
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        String::from_utf8(head).unwrap()
    });
    let conn = net::connect(addr, &OPTS).await.unwrap();
    let (head, body) = get("/x").into_parts();
    let (resp, _, _) = conn
        .send_with(&head, &extra, body, &DEADLINES)
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let wire = server.await.unwrap();
    assert_eq!(
        wire,
        "GET /x HTTP/1.1\r\nhost: test\r\nx-forwarded-for: 192.0.2.1\r\nx-request-id: abc123\r\n\r\n"
    );

    // HTTP/2: among the request's headers.
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = std::sync::Mutex::new(Some(tx));
        let service =
            hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                if let Some(tx) = tx.lock().unwrap().take() {
                    let _ = tx.send(req.headers().clone());
                }
                async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                        Bytes,
                    >::new(
                    )))
                }
            });
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(s), service);
        tokio::spawn(conn);
        rx.await.unwrap()
    });
    let opts = ConnectOptions { h2: true, ..OPTS };
    let conn = net::connect(addr, &opts).await.unwrap();
    let (head, body) = http::Request::get("http://test/x")
        .version(http::Version::HTTP_2)
        .body(RequestBody::empty())
        .unwrap()
        .into_parts();
    let (resp, _, _) = conn
        .send_with(&head, &extra, body, &DEADLINES)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = server.await.unwrap();
    assert_eq!(seen["x-forwarded-for"], "192.0.2.1");
    assert_eq!(seen["x-request-id"], "abc123");
}
