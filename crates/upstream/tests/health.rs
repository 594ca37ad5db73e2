//! Passive health on its own: ejection after consecutive failures, the cap on ejected endpoints,
//! the panic threshold, growing ejection times and 5xx ejection. No network: failures are
//! reported the way the proxy reports them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cause::{Cause, Failure, Level, Phase};
use config::{EndpointConfig, UpstreamConfig};
use net::ConnectOptions;
use upstream::{Outcome, Upstream};

type Events = Arc<Mutex<Vec<String>>>;

fn pool(n: usize, tune: impl FnOnce(&mut UpstreamConfig)) -> (Arc<Upstream>, Events) {
    let mut cfg = UpstreamConfig::new("app");
    cfg.endpoints = (0..n)
        .map(|i| EndpointConfig {
            address: format!("127.0.0.1:{}", 1000 + i),
            weight: 1,
        })
        .collect();
    cfg.outlier.consecutive_failures = 2;
    tune(&mut cfg);
    let events: Events = Arc::default();
    let sink = events.clone();
    let connect = ConnectOptions {
        connect_timeout: Duration::from_secs(1),
        max_response_header_bytes: 65536,
        max_response_headers: 100,
        h2: false,
        tls: None,
    };
    let resolver = net::resolver::Resolver::new(
        &["127.0.0.1:53".parse().unwrap()],
        Duration::from_millis(100),
    )
    .unwrap();
    let up = Upstream::new(
        &cfg,
        connect,
        resolver,
        Arc::new(move |_: Level, message: String, _| sink.lock().unwrap().push(message)),
        1,
    );
    (up, events)
}

fn fail(up: &Upstream, i: usize, times: usize) {
    let f = Failure::new(Cause::Refused, Phase::Connect);
    for _ in 0..times {
        up.report(&up.endpoints[i], Outcome::Failed(&f));
    }
}

/// Which endpoints `select` hands out over many picks.
fn chosen(up: &Upstream) -> Vec<usize> {
    let mut seen: Vec<usize> = (0..40)
        .map(|_| up.select(&[], None).unwrap().endpoint.index)
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

#[tokio::test]
async fn consecutive_failures_eject_and_ejections_are_capped() {
    let (up, events) = pool(4, |c| c.panic_threshold = 0);
    fail(&up, 0, 1);
    assert_eq!(chosen(&up), vec![0, 1, 2, 3], "one failure is not enough");
    fail(&up, 0, 1);
    assert_eq!(chosen(&up), vec![1, 2, 3]);
    fail(&up, 1, 2);
    assert_eq!(chosen(&up), vec![2, 3]);
    // 50% of the pool is the most that may be ejected.
    fail(&up, 2, 2);
    assert_eq!(chosen(&up), vec![2, 3]);
    let ev = events.lock().unwrap();
    assert_eq!(
        ev.iter()
            .filter(|m| m.starts_with("endpoint ejected for 10s after 2 consecutive failures"))
            .count(),
        2,
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|m| m.contains("not ejected despite")),
        "{ev:?}"
    );
    // The metrics' counts: endpoints 0 and 1 once each, 2 never (the cap held it in).
    let totals: Vec<u64> = up.endpoints.iter().map(|e| e.ejections_total()).collect();
    assert_eq!(totals, [1, 1, 0, 0]);
}

#[tokio::test]
async fn under_the_panic_threshold_ejections_are_ignored() {
    let (up, _) = pool(4, |c| {
        c.panic_threshold = 75;
        c.outlier.max_ejected_percent = 100;
    });
    fail(&up, 0, 2);
    assert_eq!(chosen(&up), vec![1, 2, 3], "3 of 4 usable: not below 75%");
    fail(&up, 1, 2);
    let choice = up.select(&[], None).unwrap();
    assert!(choice.panic, "2 of 4 usable is below 75%");
    assert_eq!(chosen(&up), vec![0, 1, 2, 3]);
}

#[tokio::test]
async fn every_endpoint_ejected_is_no_healthy_upstream() {
    let (up, _) = pool(2, |c| {
        c.panic_threshold = 0;
        c.outlier.max_ejected_percent = 100;
    });
    fail(&up, 0, 2);
    fail(&up, 1, 2);
    let err = up.select(&[], None).err().expect("nothing to choose");
    assert_eq!(
        (err.cause, err.phase),
        (Cause::NoHealthyUpstream, Phase::Select)
    );
}

#[tokio::test]
async fn upstream_5xx_ejects_when_asked_and_success_resets_the_count() {
    let (up, events) = pool(3, |c| {
        c.panic_threshold = 0;
        c.outlier.consecutive_5xx = 3;
    });
    let e = &up.endpoints[0];
    up.report(e, Outcome::Answered(503));
    up.report(e, Outcome::Answered(503));
    up.report(e, Outcome::Answered(200));
    up.report(e, Outcome::Answered(502));
    up.report(e, Outcome::Answered(502));
    assert_eq!(chosen(&up), vec![0, 1, 2], "the 200 reset the count");
    up.report(e, Outcome::Answered(500));
    assert_eq!(chosen(&up), vec![1, 2]);
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .any(|m| m.contains("3 consecutive 5xx answers (last 500)")));
    // A client that leaves says nothing about the upstream.
    let gone = Failure::new(Cause::ClientAborted, Phase::Client);
    for _ in 0..5 {
        up.report(&up.endpoints[1], Outcome::Failed(&gone));
    }
    assert_eq!(chosen(&up), vec![1, 2]);
}

#[tokio::test]
async fn retries_prefer_endpoints_not_yet_tried() {
    let (up, _) = pool(3, |_| {});
    for _ in 0..10 {
        let c = up.select(&[0, 1], None).unwrap();
        assert_eq!(c.endpoint.index, 2);
    }
    // When every endpoint was tried, any may be chosen again.
    assert!(up.select(&[0, 1, 2], None).is_ok());
}

#[tokio::test]
async fn a_large_pool_is_chosen_from_whole_with_ejections_and_retries() {
    // More endpoints than the selection keeps on the stack: every one is still chosen, an
    // ejected one is skipped, and a retry avoids what was tried.
    let (up, _) = pool(20, |c| c.panic_threshold = 0);
    let mut seen: Vec<usize> = (0..200)
        .map(|_| up.select(&[], None).unwrap().endpoint.index)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    fail(&up, 13, 2);
    let mut seen: Vec<usize> = (0..200)
        .map(|_| up.select(&[], None).unwrap().endpoint.index)
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, (0..20).filter(|&i| i != 13).collect::<Vec<_>>());
    let tried: Vec<usize> = (0..19).collect();
    for _ in 0..20 {
        assert_eq!(up.select(&tried, None).unwrap().endpoint.index, 19);
    }
}
