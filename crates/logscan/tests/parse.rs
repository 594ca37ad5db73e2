//! Classification of single lines, data-driven: every case goes through one `check` helper that
//! compares a one-line description of what the scanner made of the line.

use logscan::{parse_line, Line, Role, State};

/// `cause phase[: detail]`, prefixed `follow_up ` or `event ` by role; `relayed: detail`;
/// `skipped`; `unrecognized`.
fn describe(line: &Line<'_>) -> String {
    match line {
        Line::Finding(f) => {
            let role = match f.role {
                Role::Request => "",
                Role::Event => "event ",
                Role::FollowUp => "follow_up ",
            };
            let detail = if f.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", f.detail)
            };
            format!("{role}{} {}{detail}", f.cause, f.phase)
        }
        Line::Relayed(r) => format!("relayed: {}", r.detail),
        Line::Skipped(_) => "skipped".into(),
        Line::Unrecognized(_) => "unrecognized".into(),
    }
}

#[track_caller]
fn check(input: &str, expect: &str) {
    let got = describe(&parse_line(input.as_bytes(), None, &mut State::default()));
    assert_eq!(got, expect, "for line: {input}");
}

#[test]
fn nginx_messages() {
    let tail = ", client: 203.0.113.7, server: a.example, request: \"GET /x HTTP/1.1\", upstream: \"http://10.0.2.15:8080/x\", host: \"a.example\"";
    let pre = "2024/05/01 12:00:00 [error] 2741#2741: *1583 ";
    let cases = [
        ("connect() failed (111: Connection refused) while connecting to upstream", "refused connect: connection refused"),
        ("upstream timed out (110: Connection timed out) while connecting to upstream", "timeout connect"),
        ("upstream timed out (110: Connection timed out) while reading response header from upstream", "timeout read_head"),
        ("upstream timed out (110: Connection timed out) while reading upstream", "timeout read_body"),
        ("upstream timed out (110: Connection timed out) while sending request to upstream", "timeout send_request"),
        ("connect() failed (113: No route to host) while connecting to upstream", "unreachable connect: no route"),
        ("connect() to [2001:db8::5]:8080 failed (101: Network is unreachable) while connecting to upstream", "unreachable connect: no route"),
        ("recv() failed (104: Connection reset by peer) while reading response header from upstream", "reset read_head"),
        ("writev() failed (32: Broken pipe) while sending request to upstream", "reset send_request"),
        ("upstream prematurely closed connection while reading response header from upstream", "closed read_head"),
        ("upstream prematurely closed connection while reading upstream", "closed read_body"),
        ("upstream sent invalid chunked response while reading upstream", "invalid_response read_body: invalid chunked framing"),
        ("upstream sent no valid HTTP/1.0 header while reading response header from upstream", "invalid_response read_head: not HTTP (protocol mismatch)"),
        ("upstream sent too big header while reading response header from upstream", "response_too_large read_head"),
        ("no live upstreams while connecting to upstream", "no_healthy_upstream select"),
        ("SSL_do_handshake() failed (SSL: error:0A00010B:SSL routines::wrong version number) while SSL handshaking to upstream", "tls tls_handshake: plain HTTP on the TLS port"),
        ("upstream SSL certificate verify error: (10:certificate has expired) while SSL handshaking to upstream", "tls tls_handshake: certificate verify failed"),
        ("payments.internal could not be resolved (3: Host not found)", "dns resolve: name not found"),
        ("client intended to send too large body: 10485761 bytes", "client_invalid client: request body too large"),
        ("epoll_wait() reported that client prematurely closed connection, so upstream connection is closed too while reading response header from upstream", "client_aborted client"),
        ("FastCGI sent in stderr: \"Primary script unknown\" while reading response header from upstream", "relayed: php-fpm: primary script unknown (404)"),
        ("something nobody has seen before", "unrecognized"),
    ];
    for (msg, expect) in cases {
        check(&format!("{pre}{msg}{tail}"), expect);
    }
    check(
        "2024/05/01 12:00:00 [crit] 2741#2741: *1583 connect() to unix:/run/php/php8.2-fpm.sock failed (2: No such file or directory) while connecting to upstream, client: 203.0.113.7, server: a, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/php8.2-fpm.sock:\", host: \"a\"",
        "refused connect: unix socket missing",
    );
    check(
        "2024/05/01 09:59:58 [notice] 1#1: signal 1 (SIGHUP) received from 4242, reconfiguring",
        "skipped",
    );
    check(
        "2024/05/01 09:59:58 [warn] 1#1: an upstream response is buffered to a temporary file",
        "skipped",
    );
}

#[test]
fn nginx_fields_ipv6_and_unix_upstreams() {
    let line = "2024/05/01 12:00:00 [error] 7#7: *9 connect() failed (111: Connection refused) while connecting to upstream, client: 2001:db8::1, server: a, request: \"GET /v1 HTTP/1.1\", upstream: \"http://[2001:db8::5]:8080/v1\", host: \"api.example\"";
    let Line::Finding(f) = parse_line(line.as_bytes(), None, &mut State::default()) else {
        panic!("not a finding");
    };
    assert_eq!(f.upstream, Some(&b"[2001:db8::5]:8080"[..]));
    assert_eq!(f.client, Some(&b"2001:db8::1"[..]));
    assert_eq!(f.host, Some(&b"api.example"[..]));
    assert_eq!(f.request, Some(&b"GET /v1 HTTP/1.1"[..]));
    assert_eq!(f.status, Some(502));
    let unix = "2024/05/01 12:00:00 [error] 7#7: *9 recv() failed (104: Connection reset by peer) while reading response header from upstream, client: 1.2.3.4, server: a, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php/fpm.sock:\", host: \"a\"";
    let Line::Finding(f) = parse_line(unix.as_bytes(), None, &mut State::default()) else {
        panic!("not a finding");
    };
    assert_eq!(f.upstream, Some(&b"unix:/run/php/fpm.sock"[..]));
}

#[test]
fn apache_messages() {
    let pre = "[Wed May 01 10:00:03.114502 2024] [proxy:error] [pid 2214:tid 140227111233088] ";
    let cases = [
        ("(111)Connection refused: AH00957: http: attempt to connect to 127.0.0.1:8080 (127.0.0.1:8080) failed", "refused connect: connection refused"),
        ("(70007)The timeout specified has expired: AH00957: http: attempt to connect to 10.0.0.9:80 (*:80) failed", "timeout connect: connect timed out"),
        ("(70007)The timeout specified has expired: [client 203.0.113.7:51301] AH01102: error reading status line from remote server 10.0.2.15:8080", "timeout read_head"),
        ("(104)Connection reset by peer: [client 1.2.3.4:5] AH01102: error reading status line from remote server 10.0.2.15:8080", "reset read_head"),
        ("(70014)End of file found: [client 1.2.3.4:5] AH01102: error reading status line from remote server 10.0.2.15:8080", "closed read_head"),
        ("(2)No such file or directory: AH02454: FCGI: attempt to connect to Unix domain socket /run/php/php8.1-fpm.sock (localhost:8000) failed", "refused connect: unix socket missing"),
        ("[client 1.2.3.4:5] AH01068: Got bogus version 72", "invalid_response read_head: not FastCGI (protocol mismatch)"),
        ("[client 1.2.3.4:5] AH00898: DNS lookup failure for: payments.internal returned by /api/pay", "dns resolve: name not found"),
        ("[client 1.2.3.4:5] AH01170: balancer://appcluster: All workers are in error state", "no_healthy_upstream select: all balancer members in error state"),
        ("[client 1.2.3.4:5] AH01071: Got error 'Primary script unknown'", "relayed: php-fpm: primary script unknown (404)"),
        ("[client 1.2.3.4:5] AH00999: a message no rule knows", "unrecognized"),
        // A summary line with no reason before it is the only trace of its request.
        ("[client 1.2.3.4:5] AH01114: HTTP: failed to make connection to backend: 127.0.0.1", "refused connect: failed to make connection"),
    ];
    for (msg, expect) in cases {
        check(&format!("{pre}{msg}"), expect);
    }
    check("[Wed May 01 09:59:58.001122 2024] [mpm_event:notice] [pid 1001:tid 1] AH00489: Apache/2.4.58 (Ubuntu) configured -- resuming normal operations", "skipped");
}

#[test]
fn apache_follow_up_lines_count_once() {
    let lines = [
        "[Wed May 01 10:07:45.908812 2024] [proxy_http:error] [pid 2215:tid 7] (70007)The timeout specified has expired: [client 203.0.113.7:51301] AH01102: error reading status line from remote server 10.0.2.15:8080",
        "[Wed May 01 10:07:45.908866 2024] [proxy:error] [pid 2215:tid 7] [client 203.0.113.7:51301] AH00898: Error reading from remote server returned by /reports/yearly",
    ];
    let mut state = State::default();
    let got: Vec<String> = lines
        .iter()
        .map(|l| describe(&parse_line(l.as_bytes(), None, &mut state)))
        .collect();
    assert_eq!(got, ["timeout read_head", "follow_up closed read_head"]);
}

#[test]
fn haproxy_lines() {
    let cases = [
        ("May  1 10:00:04 lb1 haproxy[4242]: 203.0.113.9:52001 [01/May/2024:10:00:04.010] fe~ be_app/app2 0/0/-1/-1/3 503 214 - - SC-- 15/15/3/0/3 0/0 \"GET /api HTTP/1.1\"", "refused connect: connection refused"),
        ("203.0.113.7:51420 [01/May/2024:10:10:03.118] fe be_app/<NOSRV> 0/-1/-1/-1/0 503 214 - - SC-- 12/12/0/0/0 0/0 \"GET / HTTP/1.1\"", "no_healthy_upstream select"),
        ("[::1]:51420 [01/May/2024:10:10:03.118] fe be/s1 0/0/1/-1/30001 504 195 - - sH-- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"", "timeout read_head"),
        ("1.2.3.4:5 [01/May/2024:10:10:03.118] fe be/s1 0/0/1/12/13 502 206 - - PH-- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"", "invalid_response read_head"),
        ("1.2.3.4:5 [01/May/2024:10:10:03.118] fe be/s1 0/0/1/12/13 200 512 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"", "skipped"),
        ("1.2.3.4:5 [01/May/2024:10:10:03.118] fe be/s1 0/0/1/12/13 500 512 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"", "relayed: the server answered 5xx"),
        ("Server be_app/app2 is DOWN, reason: Layer4 connection problem, info: \"Connection refused\", check duration: 0ms. 1 active and 0 backup servers left.", "event refused connect: health check failed"),
        ("May  1 10:10:02 lb1 haproxy[4242]: backend be_app has no server available!", "event no_healthy_upstream select: every server down"),
    ];
    for (line, expect) in cases {
        check(line, expect);
    }
}

#[test]
fn cleargate_json_lines() {
    check(
        r#"{"time":"2026-11-23T10:04:05.123Z","level":"INFO","kind":"access","client":"127.0.0.1:5555","method":"GET","host":"a","path":"/x","proto":"HTTP/1.1","status":502,"request_id":"r1","upstream":"app","endpoint":"127.0.0.1:3001","cause":"reset","phase":"read_head","gateway_error":true,"attempts":[{"endpoint":"127.0.0.1:3001","reused":true,"cause":"reset","phase":"read_head","status":null}]}"#,
        "reset read_head: on a reused connection",
    );
    check(
        r#"{"time":"2026-11-23T10:04:05.120Z","level":"WARN","kind":"gateway_error","request_id":"r1","status":502,"cause":"reset","phase":"read_head","upstream":"app","endpoint":"127.0.0.1:3001","reused":true}"#,
        "follow_up reset read_head: on a reused connection",
    );
    check(
        r#"{"time":"2026-11-23T10:04:05.123Z","level":"INFO","kind":"access","status":200,"cause":null,"gateway_error":false,"attempts":[]}"#,
        "skipped",
    );
    check(
        r#"{"kind":"gateway_error","cause":"nonsense"}"#,
        "unrecognized",
    );
    check(r#"{"some":"other json"}"#, "skipped");
}

#[test]
fn odd_input_never_fails() {
    let odd: [&[u8]; 9] = [
        b"",
        b"\xff\xfe\x00garbage\x01\x02",
        b"2024/05/01 12:00:00 [error] \xff\xff connect() failed (111: Connection refused",
        b"2024/05/01",
        b"[Wed May 01",
        b"[Wed May 01 10:00:03.114502 2024] [proxy:error] [pid",
        b"1.2.3.4:5 [01/May/2024:10:10:03.118] fe",
        b"{\"kind\":\"access\",\"cause\":\"",
        b"2024/99/99 99:99:99 [error] 1#1: *1 upstream timed out (110: Connection timed out) while connecting to upstream",
    ];
    for line in odd {
        let _ = parse_line(line, None, &mut State::default());
        for f in logscan::Format::ALL {
            let _ = parse_line(line, Some(*f), &mut State::default());
        }
    }
    // Every prefix of a real line, in every format: cut-off lines are lines too.
    let real = "2024/05/01 12:00:00 [error] 2741#2741: *1583 connect() to unix:/run/php.sock failed (2: No such file or directory) while connecting to upstream, client: 1.2.3.4, server: a, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php.sock:\", host: \"a\"";
    for n in 0..real.len() {
        for f in logscan::Format::ALL {
            let _ = parse_line(&real.as_bytes()[..n], Some(*f), &mut State::default());
        }
    }
}

/// Every example of the research catalog for nginx, Apache and HAProxy gets the cause the
/// mapping in docs/logs.md gives it.
#[test]
fn catalog_examples() {
    let table = include_str!("fixtures/catalog-examples.tsv");
    let mut failures = Vec::new();
    let mut n = 0;
    for row in table.lines().filter(|l| !l.starts_with('#')) {
        let mut cols = row.splitn(3, '\t');
        let (Some(id), Some(expect), Some(line)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        n += 1;
        let got = match parse_line(line.as_bytes(), None, &mut State::default()) {
            Line::Finding(f) => f.cause.as_str().to_string(),
            other => describe(&other).split(':').next().unwrap_or("").to_string(),
        };
        if got != expect {
            failures.push(format!("{id}: expected {expect}, got {got}"));
        }
    }
    assert!(n > 100, "only {n} examples");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// ARCHITECTURE.md: logscan depends on the cause vocabulary and memchr, nothing else.
#[test]
fn dependencies_stay_few() {
    let manifest = include_str!("../Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    let names: Vec<&str> = deps
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(names, ["cleargate-cause", "memchr"]);
}
