//! Never a needless 502: the gateway under faults, with exact counts.
//!
//! Each scenario is bounded in requests and time. Where a test sleeps, the sleep is part of the
//! scenario (a client's think time, an endpoint down for a second), never a way to wait for the
//! gateway: those waits poll for the log line or counter that proves the state was reached.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use lab::{Fault, LabOptions};

fn upstream(name: &str, endpoints: &[String], extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "[upstream.{name}]\nendpoints = [{}]\n{extra}\n",
        list.join(", ")
    )
}

fn route(path: &str, upstream: &str, extra: &str) -> String {
    format!("[[route]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n{extra}\n")
}

const TOP: &str = "listen = [\"127.0.0.1:0\"]\n";

fn addr_of(lab: &lab::Lab, fault: Fault) -> SocketAddr {
    lab.addr(fault).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_race_costs_no_get_and_only_named_posts() {
    let opts = LabOptions {
        kashort_ms: 60,
        ..LabOptions::default()
    };
    let lab = one(Fault::Kashort, [127, 0, 0, 1], 0, opts).await;
    let text = format!(
        "{TOP}{}{}",
        upstream(
            "app",
            &[addr_of(&lab, Fault::Kashort).to_string()],
            "idle_timeout = \"30s\""
        ),
        route("/", "app", "")
    );
    let gw = gateway(&text).await;
    let addr = gw.addr;
    let mut tasks = Vec::new();
    for client in 0..16u64 {
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut results = Vec::new();
            for i in 0..100u64 {
                // Think time around the upstream's idle limit, where the race lives.
                let gap = 40 + (client * 7 + i * 13) % 45;
                tokio::time::sleep(Duration::from_millis(gap)).await;
                let method = if i % 10 == 0 { "POST" } else { "GET" };
                let seen = c.request(method, "/race", b"payload").await;
                results.push((
                    method,
                    seen.status.as_u16(),
                    seen.header("proxy-status").to_string(),
                ));
            }
            results
        }));
    }
    let mut get_errors = 0;
    let mut post_errors = Vec::new();
    let mut total = 0;
    for t in tasks {
        for (method, status, ps) in t.await.unwrap() {
            total += 1;
            match (method, status) {
                (_, 200) => {}
                ("GET", _) => get_errors += 1,
                _ => post_errors.push(ps),
            }
        }
    }
    assert_eq!(total, 1600);
    assert_eq!(get_errors, 0, "a GET lost the keep-alive race");
    for ps in &post_errors {
        // The only POST failures allowed are the race itself, which the rules forbid to retry.
        assert!(
            ps.contains("reused=true") && ps.contains("received=0"),
            "{ps}"
        );
    }
    eprintln!(
        "keep-alive race: {total} requests, {} POST failures (each the race)",
        post_errors.len()
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_killed_mid_load_costs_nothing_and_returns() {
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let b = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let c = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let c_addr = addr_of(&c, Fault::Ok);
    let eps = [
        addr_of(&a, Fault::Ok).to_string(),
        addr_of(&b, Fault::Ok).to_string(),
        c_addr.to_string(),
    ];
    let health = "[upstream.app.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n[upstream.app.outlier]\nconsecutive_failures = 2\nbase_ejection = \"10s\"\n";
    let text = format!(
        "{TOP}{}{}",
        route("/", "app", ""),
        upstream("app", &eps, health)
    );
    let gw = gateway(&text).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (stop, done, addr) = (stop.clone(), done.clone(), gw.addr);
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut errors = Vec::new();
            // Bounded: at most 3000 requests per client.
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let seen = c.request("GET", "/load", b"").await;
                if seen.status != 200 || seen.body.is_err() {
                    errors.push(format!("{} {}", seen.status, seen.header("proxy-status")));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            errors
        }));
    }
    let wait_done = |n: usize| {
        let done = done.clone();
        async move {
            for _ in 0..1000 {
                if done.load(Ordering::Relaxed) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_done(200).await;
    c.shutdown().await;
    gw.wait_line("c marked unhealthy by active checks", |l| {
        l["endpoint"] == c_addr.to_string()
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("marked unhealthy"))
    })
    .await;
    let before = done.load(Ordering::Relaxed);
    wait_done(before + 200).await;
    let c2 = one(
        Fault::Ok,
        [127, 0, 0, 1],
        c_addr.port(),
        LabOptions::default(),
    )
    .await;
    gw.wait_line("c readmitted", |l| {
        l["endpoint"] == c_addr.to_string()
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("healthy again"))
    })
    .await;
    let before = done.load(Ordering::Relaxed);
    wait_done(before + 300).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    assert!(
        c2.stats(Fault::Ok).requests > 0,
        "the endpoint got traffic again after it came back"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_for_a_second_costs_no_get() {
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let port = addr_of(&a, Fault::Ok).port();
    let text = format!(
        "{TOP}{}{}",
        upstream(
            "app",
            &[format!("127.0.0.1:{port}")],
            "restart_wait = \"3s\""
        ),
        route("/", "app", "")
    );
    let gw = gateway(&text).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, addr) = (stop.clone(), gw.addr);
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut statuses = Vec::new();
            for _ in 0..5000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let seen = c.request("GET", "/gap", b"").await;
                statuses.push((
                    seen.status.as_u16(),
                    seen.header("proxy-status").to_string(),
                ));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.shutdown().await;
    // The scenario: the application is down for one second, as during a restart.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back = one(Fault::Ok, [127, 0, 0, 1], port, LabOptions::default()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in tasks {
        for (status, ps) in t.await.unwrap() {
            total += 1;
            assert_eq!(status, 200, "{ps}");
        }
    }
    assert!(total > 50, "{total} requests");
    assert!(back.stats(Fault::Ok).requests > 0);
    gw.stop().await;
}

#[tokio::test]
async fn all_endpoints_down_is_a_fast_503_without_connect_storm() {
    let dead1 = one(Fault::Refused, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let dead2 = one(Fault::Refused, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let eps = [
        addr_of(&dead1, Fault::Refused).to_string(),
        addr_of(&dead2, Fault::Refused).to_string(),
    ];
    let health =
        "[upstream.app.health]\ntcp = true\ninterval = \"50ms\"\ntimeout = \"50ms\"\nfall = 1\n";
    let text = format!(
        "{TOP}{}{}",
        upstream("app", &eps, health),
        route("/", "app", "")
    );
    let gw = gateway(&text).await;
    for ep in &eps {
        gw.wait_line("marked unhealthy", |l| {
            l["endpoint"] == ep.as_str()
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("marked unhealthy"))
        })
        .await;
    }
    for _ in 0..20 {
        let started = Instant::now();
        let seen = send(
            gw.addr,
            get(gw.addr, "/")
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await;
        let took = started.elapsed();
        assert_eq!(seen.status, 503);
        assert_eq!(seen.header("retry-after"), "5");
        assert!(seen
            .header("proxy-status")
            .contains("cause=no_healthy_upstream phase=select"));
        assert!(took < Duration::from_millis(200), "answered in {took:?}");
    }
    // No request tried to connect: the attempts list of every access line is empty.
    let lines = gw.log_lines();
    let access: Vec<_> = lines.iter().filter(|l| l["kind"] == "access").collect();
    assert_eq!(access.len(), 20);
    for l in access {
        assert_eq!(l["attempts"], serde_json::json!([]), "{l}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_503_within_the_queue_deadline_never_502() {
    let opts = LabOptions {
        slow_delay: Duration::from_millis(400),
        ..LabOptions::default()
    };
    let slow = one(Fault::Slow, [127, 0, 0, 1], 0, opts).await;
    let extra =
        "max_in_flight = 2\nqueue_size = 2\nqueue_timeout = \"100ms\"\nresponse_timeout = \"2s\"";
    let text = format!(
        "{TOP}{}{}",
        upstream("app", &[addr_of(&slow, Fault::Slow).to_string()], extra),
        route("/", "app", "")
    );
    let gw = gateway(&text).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let seen = send(
                addr,
                get(addr, "/")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await;
            (seen, started.elapsed())
        }));
    }
    let mut ok = 0;
    let mut overloaded = 0;
    for t in tasks {
        let (seen, took) = t.await.unwrap();
        match seen.status.as_u16() {
            200 => ok += 1,
            503 => {
                overloaded += 1;
                assert!(
                    seen.header("proxy-status")
                        .contains("cause=overloaded phase=queue"),
                    "{}",
                    seen.header("proxy-status")
                );
                assert_eq!(seen.header("retry-after"), "2");
                assert!(
                    took < Duration::from_millis(350),
                    "rejected after {took:?}, past the queue deadline"
                );
            }
            other => panic!("status {other}: {}", seen.header("proxy-status")),
        }
    }
    assert_eq!((ok, overloaded), (2, 8));
    assert_eq!(
        slow.stats(Fault::Slow).requests,
        2,
        "only admitted requests reached the upstream"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_changes_are_followed_failures_bridged_and_unknown_names_are_502_dns() {
    let dns = FakeDns::start().await;
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let port = addr_of(&a, Fault::Ok).port();
    let b = one(Fault::Ok, [127, 0, 0, 2], port, LabOptions::default()).await;
    dns.set("app.test", DnsAnswer::A(vec![[127, 0, 0, 1].into()], 1));
    let text = format!(
        "{TOP}[resolver]\nnameservers = [\"{}\"]\ntimeout = \"200ms\"\n{}{}{}{}",
        dns.addr,
        upstream(
            "app",
            &[format!("app.test:{port}")],
            "dns_min_ttl = \"100ms\"\ndns_max_ttl = \"1s\""
        ),
        upstream("ghost", &[format!("never.test:{port}")], ""),
        route("/app", "app", ""),
        route("/ghost", "ghost", ""),
    );
    let gw = gateway(&text).await;
    let mut c = Client::connect(gw.addr).await;
    assert_eq!(c.request("GET", "/app", b"").await.status, 200);
    assert!(a.stats(Fault::Ok).requests >= 1);

    // The answer changes: traffic follows within the TTL (1 s), in-flight requests unharmed.
    dns.set("app.test", DnsAnswer::A(vec![[127, 0, 0, 2].into()], 1));
    let changed = Instant::now();
    while b.stats(Fault::Ok).requests == 0 {
        assert!(
            changed.elapsed() < Duration::from_secs(6),
            "traffic did not follow the new address"
        );
        assert_eq!(c.request("GET", "/app", b"").await.status, 200);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The TTL is 1 s; the rest is slack for a loaded two-core machine running tests in parallel.
    assert!(
        changed.elapsed() < Duration::from_secs(4),
        "followed after {:?}",
        changed.elapsed()
    );
    gw.wait_line("address change logged", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("now resolves to other addresses"))
    })
    .await;

    // The name server goes silent: the last good answer is kept, with a WARN.
    dns.set("app.test", DnsAnswer::Silent);
    gw.wait_line("resolver failure logged", |l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("keeping the last good answer"))
    })
    .await;
    let before = b.stats(Fault::Ok).requests;
    assert_eq!(c.request("GET", "/app", b"").await.status, 200);
    assert_eq!(b.stats(Fault::Ok).requests, before + 1);

    // A name that never resolves.
    let seen = c.request("GET", "/ghost", b"").await;
    assert_eq!(seen.status, 502);
    assert!(
        seen.header("proxy-status")
            .contains("cause=dns phase=resolve"),
        "{}",
        seen.header("proxy-status")
    );
    gw.stop().await;
}

#[tokio::test]
async fn retry_budget_bounds_attempts_when_everything_fails() {
    let labs = [
        one(Fault::Reset, [127, 0, 0, 1], 0, LabOptions::default()).await,
        one(Fault::Reset, [127, 0, 0, 1], 0, LabOptions::default()).await,
        one(Fault::Reset, [127, 0, 0, 1], 0, LabOptions::default()).await,
    ];
    let eps: Vec<String> = labs
        .iter()
        .map(|l| addr_of(l, Fault::Reset).to_string())
        .collect();
    let extra = "retry_budget_percent = 10\nretry_budget_min_per_second = 1\n[upstream.app.outlier]\nconsecutive_failures = 0\n";
    let text = format!(
        "{TOP}{}{}",
        route("/", "app", ""),
        upstream("app", &eps, extra)
    );
    let gw = gateway(&text).await;
    let started = Instant::now();
    let mut c = Client::connect(gw.addr).await;
    for i in 0..100 {
        let seen = c.request("GET", "/", b"").await;
        assert_eq!(seen.status, 502);
        if i == 0 {
            // The first request was retried once (the floor): both attempts are in Proxy-Status.
            let ps = seen.header("proxy-status");
            assert!(
                ps.contains("cause=reset")
                    && ps.contains("attempts=2")
                    && ps.contains(" earlier=127.0.0.1:"),
                "{ps}"
            );
        }
    }
    let secs = started.elapsed().as_secs() + 1;
    let attempts: u64 = labs.iter().map(|l| l.stats(Fault::Reset).requests).sum();
    // Without a budget: 300 attempts. With it: 10% of the requests, or 1 per second.
    let allowed = 100 + 10 + secs * 2;
    assert!(attempts > 100, "some retries happened: {attempts}");
    assert!(
        attempts <= allowed,
        "{attempts} attempts, budget allows {allowed}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn weighted_and_hash_balancing() {
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let b = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let (aa, ba) = (addr_of(&a, Fault::Ok), addr_of(&b, Fault::Ok));
    let text = format!(
        "{TOP}[upstream.w]\nendpoints = [{{ address = \"{aa}\", weight = 3 }}, \"{ba}\"]\nbalance = \"weighted\"\n\
         [upstream.h]\nendpoints = [\"{aa}\", \"{ba}\"]\nbalance = \"hash\"\nhash_on = \"header:x-user\"\n{}{}",
        route("/w", "w", ""),
        route("/h", "h", "")
    );
    let gw = gateway(&text).await;
    let mut c = Client::connect(gw.addr).await;
    for _ in 0..40 {
        assert_eq!(c.request("GET", "/w", b"").await.status, 200);
    }
    assert_eq!(
        (a.stats(Fault::Ok).requests, b.stats(Fault::Ok).requests),
        (30, 10)
    );

    // The same user always lands on the same endpoint.
    for user in ["alice", "bob", "carol", "dave"] {
        let mut seen_on = std::collections::BTreeSet::new();
        for _ in 0..5 {
            let before = (a.stats(Fault::Ok).requests, b.stats(Fault::Ok).requests);
            let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get("/h")
                .header("host", "gw.test")
                .header("x-user", user)
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap();
            assert_eq!(s.send_request(req).await.unwrap().status(), 200);
            let after = (a.stats(Fault::Ok).requests, b.stats(Fault::Ok).requests);
            seen_on.insert(if after.0 > before.0 { "a" } else { "b" });
        }
        assert_eq!(seen_on.len(), 1, "{user} moved between endpoints");
    }
    gw.stop().await;
}

#[tokio::test]
async fn h2_refused_streams_and_goaway_are_replayed_even_for_post() {
    use lab::h2::{H2Lab, H2Mode};
    let refuse = H2Lab::start(H2Mode::RefuseEveryOther).await.unwrap();
    let goaway = H2Lab::start(H2Mode::GoawayEveryOther).await.unwrap();
    let text = format!(
        "{TOP}{}{}{}{}",
        upstream("r", &[refuse.addr.to_string()], "protocol = \"h2c\""),
        upstream("g", &[goaway.addr.to_string()], "protocol = \"h2c\""),
        route("/r", "r", ""),
        route("/g", "g", ""),
    );
    let gw = gateway(&text).await;
    let mut c = Client::connect(gw.addr).await;
    for _ in 0..10 {
        let seen = c.request("POST", "/r", b"order=1").await;
        assert_eq!(seen.status, 200, "{}", seen.header("proxy-status"));
        assert_eq!(seen.text(), "ok from h2\n");
    }
    let st = &refuse.stats;
    assert_eq!(
        st.refused.load(Ordering::Relaxed),
        10,
        "every request was refused once"
    );
    assert_eq!(st.answered.load(Ordering::Relaxed), 10, "and replayed once");
    assert_eq!(
        st.connections.load(Ordering::Relaxed),
        1,
        "over one multiplexed connection"
    );

    for _ in 0..5 {
        let seen = c.request("POST", "/g", b"order=2").await;
        assert_eq!(seen.status, 200, "{}", seen.header("proxy-status"));
    }
    assert_eq!(goaway.stats.goaways.load(Ordering::Relaxed), 1);
    assert_eq!(goaway.stats.answered.load(Ordering::Relaxed), 5);
    let lines = gw.log_lines();
    let replayed = lines
        .iter()
        .filter(|l| l["kind"] == "access" && l["attempts"].as_array().is_some_and(|a| a.len() == 2))
        .count();
    assert_eq!(
        replayed, 11,
        "10 refused streams and 1 GOAWAY, each replayed once"
    );
    gw.stop().await;
}

#[tokio::test]
async fn dns_flush_resolves_names_again_at_once() {
    let dns = FakeDns::start().await;
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let port = addr_of(&a, Fault::Ok).port();
    let b = one(Fault::Ok, [127, 0, 0, 2], port, LabOptions::default()).await;
    dns.set("app.test", DnsAnswer::A(vec![[127, 0, 0, 1].into()], 3600));
    let text = format!(
        "{TOP}[resolver]\nnameservers = [\"{}\"]\n{}{}",
        dns.addr,
        upstream("app", &[format!("app.test:{port}")], "dns_max_ttl = \"1h\""),
        route("/", "app", ""),
    );
    let gw = gateway(&text).await;
    let mut c = Client::connect(gw.addr).await;
    assert_eq!(c.request("GET", "/", b"").await.status, 200);
    dns.set("app.test", DnsAnswer::A(vec![[127, 0, 0, 2].into()], 3600));
    // The hour-long TTL would keep the old address; a flush (SIGUSR1 on `serve`) does not wait.
    gw.gateway.flush_dns();
    gw.wait_line("address change", |l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.contains("now resolves to other addresses"))
    })
    .await;
    assert_eq!(c.request("GET", "/", b"").await.status, 200);
    assert_eq!(b.stats(Fault::Ok).requests, 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_endpoint_that_resets_new_connections_is_waited_for() {
    // A process being killed still has its listener for a moment: the kernel accepts new
    // connections, which then die before a response byte. Idempotent requests wait it out.
    let dying = one(Fault::Reset, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let port = addr_of(&dying, Fault::Reset).port();
    let text = format!(
        "{TOP}{}{}",
        upstream(
            "app",
            &[format!("127.0.0.1:{port}")],
            "restart_wait = \"5s\""
        ),
        route("/", "app", "")
    );
    let gw = gateway(&text).await;
    let addr = gw.addr;
    let waiting =
        tokio::spawn(async move { Client::connect(addr).await.request("GET", "/", b"").await });
    for _ in 0..500 {
        if dying.stats(Fault::Reset).requests >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A POST that reached the dying process may have been processed: it is not sent again.
    let post = Client::connect(addr).await.request("POST", "/", b"x").await;
    assert_eq!(post.status, 502);
    assert!(
        post.header("proxy-status").contains("cause=reset")
            && post.header("proxy-status").contains("attempts=1")
    );
    dying.shutdown().await;
    let back = one(Fault::Ok, [127, 0, 0, 1], port, LabOptions::default()).await;
    let seen = waiting.await.unwrap();
    assert_eq!(seen.status, 200, "{}", seen.header("proxy-status"));
    assert_eq!(back.stats(Fault::Ok).requests, 1);
    gw.stop().await;
}

/// Three endpoints, one of which takes requests and never answers; `lanes` keep-alive clients
/// each send `per_lane` requests of `method`. Returns the statuses seen (with `Proxy-Status` for
/// errors), the requests the hung endpoint and the healthy ones received, and the gateway.
async fn load_with_a_hung_endpoint(
    method: &'static str,
    lanes: usize,
    per_lane: usize,
) -> (Vec<String>, u64, u64, Gw, String) {
    let a = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let b = one(Fault::Ok, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let hung = one(Fault::Hang, [127, 0, 0, 1], 0, LabOptions::default()).await;
    let hung_addr = addr_of(&hung, Fault::Hang).to_string();
    let eps = [
        addr_of(&a, Fault::Ok).to_string(),
        hung_addr.clone(),
        addr_of(&b, Fault::Ok).to_string(),
    ];
    let settings =
        "response_timeout = \"300ms\"\n[upstream.app.outlier]\nbase_ejection = \"30s\"\n";
    let text = format!(
        "{TOP}{}{}",
        route("/", "app", ""),
        upstream("app", &eps, settings)
    );
    let gw = gateway(&text).await;
    let mut tasks = Vec::new();
    for _ in 0..lanes {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let mut seen = Vec::new();
            for _ in 0..per_lane {
                let r = c.request(method, "/load", b"order=1").await;
                seen.push(if r.status == 200 && r.body.is_ok() {
                    "200".to_string()
                } else {
                    format!("{} {}", r.status, r.header("proxy-status"))
                });
            }
            seen
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.extend(t.await.unwrap());
    }
    let healthy = a.stats(Fault::Ok).requests + b.stats(Fault::Ok).requests;
    (
        statuses,
        hung.stats(Fault::Hang).requests,
        healthy,
        gw,
        hung_addr,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_endpoint_costs_no_get_and_leaves_at_its_first_timeout() {
    let lanes = 4;
    let (statuses, hung, healthy, gw, hung_addr) =
        load_with_a_hung_endpoint("GET", lanes, 100).await;
    let errors: Vec<&String> = statuses.iter().filter(|s| *s != "200").collect();
    assert!(errors.is_empty(), "client-visible errors: {errors:?}");
    // Each lane can have sent one request there before the first timeout ejected it.
    assert!(
        (1..=lanes as u64).contains(&hung),
        "the hung endpoint got {hung} requests"
    );
    assert_eq!(
        healthy,
        statuses.len() as u64,
        "every GET answered once, by a healthy endpoint"
    );
    gw.wait_line("the hung endpoint ejected", |l| {
        l["endpoint"] == hung_addr.as_str()
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("ejected") && m.contains("response timeout"))
    })
    .await;
    let retried = gw
        .wait_line("the retried attempt's WARN line", |l| {
            l["kind"] == "attempt_retried"
        })
        .await;
    assert_eq!(retried["level"], "WARN");
    assert_eq!(retried["cause"], "timeout");
    assert_eq!(retried["phase"], "read_head");
    assert!(retried["message"].as_str().unwrap().contains("retried"));
    let access = gw
        .wait_line("an access line with both attempts", |l| {
            l["kind"] == "access" && l["attempts"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(access["status"], 200);
    assert_eq!(access["attempts"][0]["cause"], "timeout", "{access}");
    assert_eq!(access["attempts"][0]["endpoint"], hung_addr.as_str());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_to_a_hung_endpoint_are_504s_never_sent_twice_and_still_eject_it() {
    let lanes = 4;
    let started = Instant::now();
    let (statuses, hung, healthy, gw, hung_addr) =
        load_with_a_hung_endpoint("POST", lanes, 30).await;
    // A request with a body gets the response timeout (300 ms) once its body is sent, not the
    // send timeout (30 s): the end of the body starts the response deadline.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let timeouts = statuses
        .iter()
        .filter(|s| s.starts_with("504") && s.contains("cause=timeout phase=read_head"))
        .count() as u64;
    let ok = statuses.iter().filter(|s| *s == "200").count() as u64;
    assert_eq!(ok + timeouts, statuses.len() as u64, "{statuses:?}");
    assert_eq!(timeouts, hung, "every POST the hung endpoint took is a 504");
    assert!((1..=lanes as u64).contains(&hung), "{hung}");
    assert_eq!(healthy, ok, "no POST was sent twice");
    gw.wait_line("the hung endpoint ejected", |l| {
        l["endpoint"] == hung_addr.as_str()
            && l["message"].as_str().is_some_and(|m| m.contains("ejected"))
    })
    .await;
    gw.stop().await;
}
