//! The response cache in front of the lab: fresh copies answer without the upstream, what must
//! not be shared is never served from the cache, and with the upstream gone a stored copy
//! answers stale (saying so) instead of a 502, while a URL never cached still gets its 502.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use lab::{Fault, Lab, LabOptions};

async fn lab() -> Lab {
    Lab::start(
        &[(Fault::Ok, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions::default(),
    )
    .await
    .unwrap()
}

fn text(lab: &Lab) -> String {
    format!(
        "listen = [\"127.0.0.1:0\"]\n[cache]\nsize = \"16MiB\"\nstale_if_error = \"10m\"\n[upstream.app]\nendpoints = [\"{}\"]\n[[route]]\nupstream = \"app\"\ncache = true\n",
        lab.addr(Fault::Ok).unwrap()
    )
}

async fn get(gw: &common::Gw, path: &str) -> common::Seen {
    let req = common::get(gw.addr, path)
        .body(Full::new(Bytes::new()))
        .unwrap();
    common::send(gw.addr, req).await
}

#[tokio::test]
async fn fresh_copies_answer_and_private_ones_never_do() {
    let lab = lab().await;
    let gw = common::gateway(&text(&lab)).await;
    let requests = || lab.stats(Fault::Ok).requests;

    let first = get(&gw, "/page?cc=max-age%3D60").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("cache-status"),
        "cleargate; fwd=uri-miss; stored"
    );
    let second = get(&gw, "/page?cc=max-age%3D60").await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), first.text(), "the stored body");
    assert!(
        second
            .header("cache-status")
            .starts_with("cleargate; hit; ttl="),
        "{}",
        second.header("cache-status")
    );
    assert!(second.header("age").parse::<u64>().is_ok());
    assert_ne!(second.header("x-request-id"), first.header("x-request-id"));
    assert_eq!(requests(), 1, "the second came from the cache");
    let hit = gw
        .wait_line("the hit's access line", |l| {
            l["kind"] == "access" && l["cache"] == "hit"
        })
        .await;
    assert_eq!(hit["status"], 200);
    // A range of the stored body, from the cache.
    let whole = first.text();
    let req = common::get(gw.addr, "/page?cc=max-age%3D60")
        .header("range", "bytes=0-4")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let part = common::send(gw.addr, req).await;
    assert_eq!(part.status, 206);
    assert_eq!(part.text(), whole[..5]);
    assert_eq!(
        part.header("content-range"),
        format!("bytes 0-4/{}", whole.len())
    );
    assert_eq!(requests(), 1, "the range came from the cache");

    // Never from the cache: private, Set-Cookie, no-store, and a client's no-cache.
    for (path, why) in [
        ("/p?cc=max-age%3D60%2C%20private", "private"),
        ("/s?cc=max-age%3D60&cookie=session%3D1", "set-cookie"),
        ("/n?cc=no-store", "no-store"),
    ] {
        let before = requests();
        for _ in 0..2 {
            let seen = get(&gw, path).await;
            assert_eq!(seen.status, 200);
            assert_eq!(
                seen.header("cache-status"),
                format!("cleargate; fwd=uri-miss; detail={why}")
            );
        }
        assert_eq!(requests(), before + 2, "{path}");
    }
    let before = requests();
    let req = common::get(gw.addr, "/page?cc=max-age%3D60")
        .header("cache-control", "no-cache")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = common::send(gw.addr, req).await;
    assert_eq!(seen.status, 200);
    assert_eq!(
        requests(),
        before + 1,
        "no-cache from the client goes upstream"
    );

    // An unsafe method's success invalidates the stored copy.
    let req = common::get(gw.addr, "/page?cc=max-age%3D60")
        .method("POST")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    assert_eq!(common::send(gw.addr, req).await.status, 200);
    let before = requests();
    let again = get(&gw, "/page?cc=max-age%3D60").await;
    assert!(again.header("cache-status").contains("fwd=uri-miss"));
    assert_eq!(requests(), before + 1);
    gw.stop().await;
    lab.shutdown().await;
}

#[tokio::test]
async fn with_the_upstream_gone_stale_copies_answer_instead_of_502() {
    let lab = lab().await;
    let gw = common::gateway(&text(&lab)).await;
    // Stored, and stale at once (max-age=0): every later request would go upstream.
    let stored = get(&gw, "/news?cc=max-age%3D0").await;
    assert_eq!(stored.status, 200);
    assert!(stored.header("cache-status").ends_with("stored"));
    lab.shutdown().await;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let req = common::get(addr, "/news?cc=max-age%3D0")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                seen.push(common::send(addr, req).await);
            }
            seen
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let took = started.elapsed();
    assert_eq!(answers.len(), 200);
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(a.text(), stored.text());
        let cs = a.header("cache-status");
        assert!(cs.starts_with("cleargate; fwd=stale; fwd-status="), "{cs}");
        assert!(cs.contains("; ttl=") && cs.contains("; detail=\""), "{cs}");
    }
    assert!(
        took < Duration::from_secs(10),
        "200 stale answers took {took:?}"
    );
    // One WARN line per stale answer, naming the cause it hid.
    let warned = gw
        .log_lines()
        .into_iter()
        .filter(|l| {
            l["level"] == "WARN"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("served a stale copy instead of a 50"))
        })
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 200);
    assert!(
        warned.iter().all(|l| l["cause"].is_string()),
        "{:?}",
        warned[0]
    );

    // Never cached: the explained 502, which says the cache went upstream and was not stored.
    let never = get(&gw, "/other?cc=max-age%3D60").await;
    assert!(never.status.as_u16() >= 502, "{}", never.status);
    assert!(never.header("proxy-status").contains("error="), "{never:?}");
    assert!(
        never
            .header("cache-status")
            .starts_with("cleargate; fwd=uri-miss; detail=\""),
        "{never:?}"
    );
    let again = get(&gw, "/other?cc=max-age%3D60").await;
    assert!(
        again.status.as_u16() >= 502,
        "a gateway error is never stored"
    );
    let metrics = gw.gateway.metrics_text();
    for line in [
        "cleargate_cache_responses_total{result=\"stale\"} 200",
        "cleargate_cache_responses_total{result=\"hit\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("cleargate_cache_bytes 0\n"), "{metrics}");
    // By the cause each stale answer hid: the counts add up to the 200.
    let by_cause: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("cleargate_cache_stale_total{cause="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(by_cause, 200, "{metrics}");
    gw.stop().await;
}

#[tokio::test]
async fn a_stale_copy_is_revalidated_and_a_304_confirms_it() {
    let lab = lab().await;
    let gw = common::gateway(&text(&lab)).await;
    let requests = || lab.stats(Fault::Ok).requests;
    // `max-age=0`: stale at once, so every later request asks the upstream to confirm it.
    let path = "/doc?cc=max-age%3D0&etag=%22v1%22";
    let first = get(&gw, path).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("cache-status"),
        "cleargate; fwd=uri-miss; stored"
    );
    let second = get(&gw, path).await;
    assert_eq!(second.status, 200, "the client asked unconditionally");
    assert_eq!(second.text(), first.text(), "the stored body");
    assert_eq!(second.header("etag"), "\"v1\"");
    assert!(
        second
            .header("cache-status")
            .starts_with("cleargate; fwd=stale; fwd-status=304; ttl="),
        "{}",
        second.header("cache-status")
    );
    assert_eq!(requests(), 2, "the revalidation went upstream");
    let line = gw
        .wait_line("the revalidated request's access line", |l| {
            l["kind"] == "access" && l["cache"] == "revalidated"
        })
        .await;
    assert_eq!(line["status"], 200);
    // The client's own condition is answered from the confirmed copy.
    let req = common::get(gw.addr, path)
        .header("if-none-match", "\"v1\"")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = common::send(gw.addr, req).await;
    assert_eq!(seen.status, 304);
    gw.stop().await;
    lab.shutdown().await;
}

/// A gateway caching in front of the lab's slow endpoint (each answer takes `delay`).
async fn slow_lab(delay: Duration) -> (Lab, String) {
    let lab = Lab::start(
        &[(Fault::Slow, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions {
            slow_delay: delay,
            ..LabOptions::default()
        },
    )
    .await
    .unwrap();
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\n[cache]\nsize = \"16MiB\"\n[upstream.app]\nendpoints = [\"{}\"]\nresponse_timeout = \"30s\"\n[[route]]\nupstream = \"app\"\ncache = true\n",
        lab.addr(Fault::Slow).unwrap()
    );
    (lab, text)
}

/// `n` concurrent GETs of `path`, each on its own connection.
async fn concurrently(gw: &common::Gw, path: &'static str, n: usize) -> Vec<common::Seen> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let req = common::get(addr, path)
                .body(Full::new(Bytes::new()))
                .unwrap();
            common::send(addr, req).await
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen
}

#[tokio::test]
async fn concurrent_misses_for_one_url_make_one_upstream_request() {
    let (lab, text) = slow_lab(Duration::from_millis(400)).await;
    let gw = common::gateway(&text).await;
    let seen = concurrently(&gw, "/slow?cc=max-age%3D60", 100).await;
    assert_eq!(
        lab.stats(Fault::Slow).requests,
        1,
        "exactly one went upstream"
    );
    let body = seen[0].text();
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    for s in &seen {
        assert_eq!(s.status, 200);
        assert_eq!(s.text(), body, "every client got the one answer");
        let cs = s.header("cache-status");
        let kind = if cs.ends_with("collapsed") {
            "collapsed"
        } else if cs.ends_with("stored") {
            "stored"
        } else if cs.starts_with("cleargate; hit") {
            "hit"
        } else {
            panic!("unexpected Cache-Status {cs}")
        };
        *by_status.entry(kind.into()).or_default() += 1;
    }
    assert_eq!(by_status.get("stored"), Some(&1), "{by_status:?}");
    let collapsed = by_status.get("collapsed").copied().unwrap_or(0);
    assert_eq!(
        collapsed + by_status.get("hit").copied().unwrap_or(0),
        99,
        "{by_status:?}"
    );
    let metrics = gw.gateway.metrics_text();
    let line = format!("cleargate_cache_responses_total{{result=\"collapsed\"}} {collapsed}");
    assert!(metrics.contains(&line), "{line} in {metrics}");
    // Stored whole: the next request is a hit.
    let after = get(&gw, "/slow?cc=max-age%3D60").await;
    assert!(after.header("cache-status").starts_with("cleargate; hit"));
    assert_eq!(after.text(), body);
    assert_eq!(lab.stats(Fault::Slow).requests, 1);

    // An answer that cannot be stored: the waiting requests go on their own, and from then on
    // the key is not coalesced, so nothing waits for anything.
    let seen = concurrently(&gw, "/once?cc=no-store", 10).await;
    assert!(seen.iter().all(|s| s.status == 200
        && s.header("cache-status") == "cleargate; fwd=uri-miss; detail=no-store"));
    assert_eq!(lab.stats(Fault::Slow).requests, 11);
    let seen = concurrently(&gw, "/once?cc=no-store", 10).await;
    assert!(seen.iter().all(|s| s.status == 200));
    assert_eq!(lab.stats(Fault::Slow).requests, 21);
    gw.stop().await;
    lab.shutdown().await;
}

/// A gateway caching in front of the lab's `stall` (a head promising 1,000,000 bytes, 1,000 of
/// them sent, then silence), with the upstream's body timeout `body_timeout`.
async fn stall_lab(body_timeout: &str) -> (Lab, String) {
    let lab = Lab::start(
        &[(Fault::Stall, 0)],
        "127.0.0.1".parse().unwrap(),
        LabOptions::default(),
    )
    .await
    .unwrap();
    let text = format!(
        "listen = [\"127.0.0.1:0\"]\n[cache]\nsize = \"16MiB\"\nmax_object = \"2MiB\"\n[upstream.app]\nendpoints = [\"{}\"]\nbody_timeout = \"{body_timeout}\"\n[[route]]\nupstream = \"app\"\ncache = true\n",
        lab.addr(Fault::Stall).unwrap()
    );
    (lab, text)
}

/// Sends a GET on a new connection and reads until the head and `body` bytes of the body
/// have arrived; returns the head and the connection, still open.
async fn head_and_some(
    addr: std::net::SocketAddr,
    path: &str,
    body: usize,
) -> (String, tokio::net::TcpStream) {
    head_and_some_with(addr, path, "", body).await
}

/// [`head_and_some`] with extra header lines (`extra` ends each with CRLF).
async fn head_and_some_with(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
    body: usize,
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: cache.test\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() - (end + 4) >= body {
                return (String::from_utf8_lossy(&got[..end]).into_owned(), s);
            }
        }
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn followers_are_fed_as_the_body_streams_and_a_broken_fill_stores_nothing() {
    use tokio::io::AsyncReadExt;
    // The lab's `stall` sends a head promising 1,000,000 bytes, 1,000 of them, and goes quiet.
    let (lab, text) = stall_lab("3s").await;
    let gw = common::gateway(&text).await;
    let path = "/big?cc=max-age%3D60";
    // The leader has its head and the first 1,000 bytes while the body is still open.
    let (head, leader) = head_and_some(gw.addr, path, 1000).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("cache-status: cleargate; fwd=uri-miss; stored"),
        "{head}"
    );
    // Followers get the same bytes from the flight, though its body has not ended.
    let mut followers = Vec::new();
    for _ in 0..4 {
        let (head, conn) = head_and_some(gw.addr, path, 1000).await;
        assert!(
            head.contains("cache-status: cleargate; fwd=uri-miss; collapsed"),
            "{head}"
        );
        assert!(head.contains("content-length: 1000000"), "{head}");
        followers.push(conn);
    }
    assert_eq!(lab.stats(Fault::Stall).requests, 1, "one trip upstream");
    // The body times out: every client's response is cut short, none looks complete.
    followers.push(leader);
    for mut conn in followers {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
        assert!(rest.len() < 1_000_000 - 1000);
    }
    let warn = gw
        .wait_line("the body timeout's WARN line", |l| {
            l["kind"] == "gateway_error" && l["cause"] == "timeout"
        })
        .await;
    assert_eq!(warn["phase"], "read_body");
    // Every client's access line records the failure it shared (written as each body ends).
    let aborted = || {
        gw.log_lines()
            .into_iter()
            .filter(|l| l["kind"] == "access" && l["cause"] == "timeout")
            .count()
    };
    for _ in 0..500 {
        if aborted() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(aborted(), 5, "{:#?}", gw.log_lines());
    let errors = gw
        .log_lines()
        .into_iter()
        .filter(|l| l["kind"] == "gateway_error")
        .count();
    assert_eq!(errors, 1, "one upstream failure, logged once");
    // Nothing was stored: the next request goes upstream again.
    let (head, _conn) = head_and_some(gw.addr, path, 1000).await;
    assert!(head.contains("fwd=uri-miss; stored"), "{head}");
    assert_eq!(lab.stats(Fault::Stall).requests, 2);
    gw.stop().await;
    lab.shutdown().await;
}

#[tokio::test]
async fn within_stale_while_revalidate_the_copy_answers_and_one_refresh_runs() {
    let lab = lab().await;
    let gw = common::gateway(&text(&lab)).await;
    let path = "/swr?cc=max-age%3D0%2C%20stale-while-revalidate%3D60";
    let first = get(&gw, path).await;
    assert!(first.header("cache-status").ends_with("stored"));
    let second = get(&gw, path).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), first.text());
    let cs = second.header("cache-status");
    assert!(
        cs.starts_with("cleargate; hit; ttl=") && cs.ends_with("detail=stale-while-revalidate"),
        "{cs}"
    );
    // The refresh is the gateway's own request, with its own access line.
    let refresh = gw
        .wait_line("the refresh's access line", |l| {
            l["kind"] == "access" && l["cache"] == "refresh"
        })
        .await;
    assert_eq!(refresh["status"], 200);
    assert_eq!(lab.stats(Fault::Ok).requests, 2);
    let metrics = gw.gateway.metrics_text();
    assert!(
        metrics.contains("cleargate_cache_responses_total{result=\"stale_while_revalidate\"} 1"),
        "{metrics}"
    );
    gw.stop().await;
    lab.shutdown().await;
}

#[tokio::test]
async fn a_slow_upstream_is_refreshed_in_the_background_while_the_copy_answers() {
    let (lab, text) = slow_lab(Duration::from_millis(1500)).await;
    let gw = common::gateway(&text).await;
    let path = "/slowpage?cc=max-age%3D0";
    let first = get(&gw, path).await;
    assert!(first.header("cache-status").ends_with("stored"));
    // Stale, and the upstream takes 1.5 s: after a second the copy answers, and the request
    // for the upstream's answer goes on in the background.
    let second = get(&gw, path).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.text(), first.text());
    assert!(second.header("cache-status").contains("fwd=stale"));
    // While the refresh runs, the copy answers at once.
    let third = get(&gw, path).await;
    assert_eq!(third.status, 200);
    let id = third.header("x-request-id");
    let warn = gw
        .wait_line("the third request's WARN line", |l| {
            l["level"] == "WARN" && l["request_id"] == id
        })
        .await;
    assert!(
        warn["detail"]
            .as_str()
            .is_some_and(|d| d.contains("background refresh is on its way")),
        "{warn}"
    );
    let refresh = gw
        .wait_line("the refresh's access line", |l| {
            l["kind"] == "access" && l["cache"] == "refresh"
        })
        .await;
    assert_eq!(refresh["status"], 200);
    // The store, the second request's attempt (given up after a second), the refresh.
    assert_eq!(lab.stats(Fault::Slow).requests, 3);
    gw.stop().await;
    lab.shutdown().await;
}

#[tokio::test]
async fn the_admin_api_purges_one_url_or_a_prefix() {
    let lab = lab().await;
    let gw = common::gateway(&text(&lab)).await;
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    tokio::spawn(gw.gateway.clone().serve_admin(admin, gw.shutdown.clone()));
    let requests = || lab.stats(Fault::Ok).requests;
    for path in [
        "/a/1?cc=max-age%3D60",
        "/a/2?cc=max-age%3D60",
        "/b?cc=max-age%3D60",
    ] {
        assert!(get(&gw, path)
            .await
            .header("cache-status")
            .ends_with("stored"));
    }
    let post = |query: &'static str| async move {
        let req = http::Request::post(format!("/api/cache/purge{query}"))
            .header("host", admin_addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let seen = common::send(admin_addr, req).await;
        let v: serde_json::Value = serde_json::from_str(&seen.text()).unwrap_or_default();
        (seen.status.as_u16(), v)
    };
    // One URL, by its key (%-encoded).
    let (status, v) = post("?url=http%3A%2F%2Fgw.test%2Fb%3Fcc%3Dmax-age%253D60").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["purged"], 1, "{v}");
    // A prefix.
    let (status, v) = post("?prefix=http%3A%2F%2Fgw.test%2Fa%2F").await;
    assert_eq!(
        (status, v["purged"].clone()),
        (200, serde_json::json!(2)),
        "{v}"
    );
    let (status, _) = post("").await;
    assert_eq!(status, 400, "what to purge must be named");
    let before = requests();
    for path in [
        "/a/1?cc=max-age%3D60",
        "/a/2?cc=max-age%3D60",
        "/b?cc=max-age%3D60",
    ] {
        let seen = get(&gw, path).await;
        assert!(
            seen.header("cache-status").contains("fwd=uri-miss"),
            "{path}"
        );
    }
    assert_eq!(requests(), before + 3, "purged copies are gone");
    let warn = gw
        .wait_line("the purge's WARN line", |l| {
            l["message"] == "cache purged by the operator"
        })
        .await;
    assert_eq!(warn["purged"], 1);
    gw.stop().await;
    lab.shutdown().await;
}

#[tokio::test]
async fn copies_taken_at_once_are_bounded() {
    // Requests with `Cache-Control: no-cache` do not coalesce: each takes its own copy of the
    // body as it streams. The lab's stall keeps 64 of them in progress; the 65th streams
    // through unstored.
    let (lab, text) = stall_lab("5s").await;
    let gw = common::gateway(&text).await;
    let mut open = Vec::new();
    for i in 0..64 {
        let path = format!("/f{i}?cc=max-age%3D60");
        let (head, conn) =
            head_and_some_with(gw.addr, &path, "Cache-Control: no-cache\r\n", 1000).await;
        assert!(head.contains("fwd=uri-miss; stored"), "{i}: {head}");
        open.push(conn);
    }
    let metrics = gw.gateway.metrics_text();
    assert!(
        metrics.contains("cleargate_cache_fills_in_flight 64"),
        "{metrics}"
    );
    let (head, _conn) = head_and_some_with(
        gw.addr,
        "/f64?cc=max-age%3D60",
        "Cache-Control: no-cache\r\n",
        1000,
    )
    .await;
    assert!(head.contains("fwd=uri-miss; detail=busy"), "{head}");
    drop(open);
    gw.stop().await;
    lab.shutdown().await;
}
