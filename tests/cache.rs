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

    // Never cached: the explained 502.
    let never = get(&gw, "/other?cc=max-age%3D60").await;
    assert!(never.status.as_u16() >= 502, "{}", never.status);
    assert!(never.header("proxy-status").contains("error="), "{never:?}");
    let metrics = gw.gateway.metrics_text();
    for line in [
        "cleargate_cache_responses_total{result=\"stale\"} 200",
        "cleargate_cache_responses_total{result=\"hit\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("cleargate_cache_bytes 0\n"), "{metrics}");
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
