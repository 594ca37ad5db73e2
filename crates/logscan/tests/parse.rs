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
fn caddy_json_lines() {
    let req = r#""request":{"remote_ip":"203.0.113.7","remote_port":"51234","proto":"HTTP/1.1","method":"GET","host":"shop.example","uri":"/api/x","headers":{"User-Agent":["curl/8.5.0"]}}"#;
    let err = |msg: &str, status: u16| {
        format!(
            r#"{{"level":"error","ts":1796220715.9084802,"logger":"http.log.error.log0","msg":"{msg}",{req},"duration":0.0012,"status":{status},"err_id":"mhk806s37","err_trace":"reverseproxy.statusError (reverseproxy.go:1272)"}}"#
        )
    };
    let cases = [
        ("dial tcp 10.0.2.15:8080: connect: connection refused", 502, "refused connect: connection refused"),
        ("dial tcp 10.0.2.15:8080: i/o timeout", 502, "timeout connect: connect timed out"),
        ("dial tcp 10.0.2.15:8080: connect: no route to host", 502, "unreachable connect: no route"),
        ("dial tcp [2001:db8::5]:8080: connect: network is unreachable", 502, "unreachable connect: no route"),
        ("dial tcp: lookup payments.internal on 127.0.0.53:53: no such host", 502, "dns resolve: name not found"),
        ("dial tcp: lookup payments.internal on 127.0.0.53:53: read udp 127.0.0.1:40000->127.0.0.53:53: i/o timeout", 502, "timeout resolve: resolver timed out"),
        ("dial unix /run/php/php-fpm.sock: connect: no such file or directory", 502, "refused connect: unix socket missing"),
        ("dial unix /run/php/php-fpm.sock: connect: connection refused", 502, "refused connect: unix socket: nothing listening"),
        ("dial tcp 10.0.2.15:8080: connect: cannot assign requested address", 502, "local_exhausted connect: no free local port"),
        ("net/http: timeout awaiting response headers", 504, "timeout read_head"),
        ("context deadline exceeded", 504, "timeout read_head: deadline exceeded"),
        ("read tcp 127.0.0.1:58356->10.0.2.15:8080: read: connection reset by peer", 502, "reset read_head"),
        ("read tcp 127.0.0.1:58356->10.0.2.15:8080: i/o timeout", 504, "timeout read_head"),
        ("readfrom tcp 127.0.0.1:58356->10.0.2.15:8080: write tcp 127.0.0.1:58356->10.0.2.15:8080: write: broken pipe", 502, "reset send_request"),
        ("readfrom tcp 127.0.0.1:58356->10.0.2.15:8080: http: request body too large", 502, "client_invalid client: request body too large"),
        ("EOF", 502, "closed read_head"),
        ("unexpected EOF", 502, "closed read_head"),
        (r#"net/http: HTTP/1.x transport connection broken: malformed HTTP status code \"is\""#, 502, "invalid_response read_head: malformed response head"),
        (r#"net/http: HTTP/1.x transport connection broken: malformed MIME header: missing colon: \"Content-Ty\""#, 502, "invalid_response read_head: malformed response head"),
        ("net/http: HTTP/1.x transport connection broken: net/http: server response headers exceeded 64000 bytes; aborted", 502, "response_too_large read_head"),
        ("net/http: HTTP/1.x transport connection broken: something new", 502, "invalid_response read_head: connection broken"),
        ("tls: first record does not look like a TLS handshake", 502, "tls tls_handshake: plain HTTP on the TLS port"),
        ("x509: certificate signed by unknown authority", 502, "tls tls_handshake: certificate verify failed"),
        ("x509: certificate is valid for a.example, not b.example", 502, "tls tls_handshake: certificate name mismatch"),
        ("remote error: tls: handshake failure", 502, "tls tls_handshake: handshake failed"),
        ("net/http: TLS handshake timeout", 502, "timeout tls_handshake: TLS handshake timed out"),
        ("http2: server sent GOAWAY and closed the connection; LastStreamID=1, ErrCode=NO_ERROR", 502, "reset read_head: http/2 stream reset"),
        ("no upstreams available", 503, "no_healthy_upstream select: no upstreams available"),
        ("something nobody has seen before", 502, "unrecognized"),
        ("open /srv/www/missing.html: no such file or directory", 404, "skipped"),
    ];
    for (msg, status, expect) in cases {
        check(&err(msg, status), expect);
    }
    let body = |msg: &str, error: &str| {
        format!(
            r#"{{"level":"error","ts":1796220715.92724,"logger":"http.handlers.reverse_proxy","msg":"{msg}","error":"{error}"}}"#
        )
    };
    check(
        &body("reading from backend", "unexpected EOF"),
        "closed read_body",
    );
    check(
        &body("reading from backend", "invalid byte in chunk length"),
        "invalid_response read_body: invalid chunked framing",
    );
    check(
        &body(
            "reading from backend",
            "read tcp 127.0.0.1:35252->10.0.2.15:8080: i/o timeout",
        ),
        "timeout read_body",
    );
    check(
        &body(
            "aborting with incomplete response",
            "write tcp 127.0.0.1:8080->203.0.113.7:51234: write: broken pipe",
        ),
        "client_aborted client",
    );
    check(
        r#"{"level":"error","ts":1796220716.1,"logger":"http.handlers.reverse_proxy.health_checker.active","msg":"HTTP request failed","host":"10.0.2.15:8080","error":"Get \"http://10.0.2.15:8080/health\": dial tcp 10.0.2.15:8080: connect: connection refused"}"#,
        "event refused connect: health check failed",
    );
    let access = |status: u16, headers: &str| {
        format!(
            r#"{{"level":"error","ts":1796220715.9085157,"logger":"http.log.access.log0","msg":"handled request",{req},"user_id":"","duration":0.0012,"size":0,"status":{status},"resp_headers":{headers}}}"#
        )
    };
    check(
        &access(200, r#"{"Server":["Caddy","app"],"Content-Length":["2"]}"#),
        "skipped",
    );
    check(
        &access(503, r#"{"Server":["Caddy","app"],"Content-Length":["23"]}"#),
        "relayed: the upstream answered 5xx",
    );
    check(
        &access(504, r#"{"Server":["Caddy"]}"#),
        "timeout read_head: access line only",
    );
    check(&access(502, r#"{"Server":["Caddy"]}"#), "unrecognized");
    check(
        r#"{"level":"info","ts":1796220715.75,"logger":"http.log","msg":"server running","name":"srv0"}"#,
        "skipped",
    );
    check(
        r#"{"level":"error","ts":"2026-12-02T14:11:55.908Z","logger":"tls.obtain","msg":"could not get certificate from issuer"}"#,
        "skipped",
    );
}

#[test]
fn caddy_lines_of_one_request_count_once() {
    let req = r#""request":{"remote_ip":"127.0.0.1","remote_port":"35614","proto":"HTTP/1.1","method":"GET","host":"a","uri":"/x","headers":{}}"#;
    let other = r#""request":{"remote_ip":"127.0.0.1","remote_port":"40000","proto":"HTTP/1.1","method":"GET","host":"a","uri":"/y","headers":{}}"#;
    let lines = [
        format!(r#"{{"level":"debug","ts":1796220715.9083,"logger":"http.handlers.reverse_proxy","msg":"upstream roundtrip","upstream":"127.0.0.1:41001","duration":0.0009,{req},"error":"dial tcp 127.0.0.1:41001: connect: connection refused"}}"#),
        // Another request's line in between does not break the chain.
        format!(r#"{{"level":"info","ts":1796220715.9084,"logger":"http.log.access.log0","msg":"handled request",{other},"status":200,"resp_headers":{{"Server":["Caddy","app"]}}}}"#),
        format!(r#"{{"level":"error","ts":1796220715.9084,"logger":"http.log.error.log0","msg":"dial tcp 127.0.0.1:41001: connect: connection refused",{req},"status":502}}"#),
        format!(r#"{{"level":"error","ts":1796220715.9085,"logger":"http.log.access.log0","msg":"handled request",{req},"status":502,"resp_headers":{{"Server":["Caddy"]}}}}"#),
        // The next request on the same connection is a new failure.
        format!(r#"{{"level":"error","ts":1796220716.5,"logger":"http.log.error.log0","msg":"EOF",{req},"status":502}}"#),
        format!(r#"{{"level":"error","ts":1796220716.5,"logger":"http.log.access.log0","msg":"handled request",{req},"status":502,"resp_headers":{{"Server":["Caddy"]}}}}"#),
        r#"{"level":"error","ts":1796220717.1,"logger":"http.handlers.reverse_proxy","msg":"reading from backend","error":"unexpected EOF"}"#.to_string(),
        r#"{"level":"error","ts":1796220717.1,"logger":"http.handlers.reverse_proxy","msg":"aborting with incomplete response","error":"unexpected EOF"}"#.to_string(),
    ];
    let mut state = State::default();
    let got: Vec<String> = lines
        .iter()
        .map(|l| describe(&parse_line(l.as_bytes(), None, &mut state)))
        .collect();
    assert_eq!(
        got,
        [
            "refused connect: connection refused",
            "skipped",
            "follow_up refused connect: connection refused",
            "follow_up refused connect",
            "closed read_head",
            "follow_up closed read_head",
            "closed read_body",
            "follow_up closed read_body",
        ]
    );
    let Line::Finding(f) = parse_line(lines[2].as_bytes(), None, &mut State::default()) else {
        panic!("not a finding");
    };
    assert_eq!(f.upstream, Some(&b"127.0.0.1:41001"[..]));
    assert_eq!(f.request, Some(&b"/x"[..]));
    assert_eq!(f.status, Some(502));
    assert_eq!(f.time, Some(1_796_220_715_908));
}

/// One line per response flag in Envoy's default access-log format, with the expected result
/// beside it in `default-format.expected`.
#[test]
fn envoy_default_format_flags() {
    let lines = include_str!("fixtures/envoy/default-format.log");
    let expected = include_str!("fixtures/envoy/default-format.expected");
    let lines: Vec<&str> = lines.lines().collect();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(lines.len(), expected.len());
    let mut unrecognized = 0;
    for (line, expect) in lines.iter().zip(&expected) {
        let got = parse_line(line.as_bytes(), None, &mut State::default());
        if matches!(got, Line::Unrecognized(_)) {
            unrecognized += 1;
        }
        assert_eq!(&describe(&got), expect, "for line: {line}");
        if let Line::Finding(f) = &got {
            assert_eq!(f.format, logscan::Format::Envoy);
            assert!(f.time.is_some(), "no time: {line}");
        }
    }
    // The one unknown flag of the file; every documented one is known.
    assert_eq!(unrecognized, 1);
    let line = lines[3];
    let Line::Finding(f) = parse_line(line.as_bytes(), None, &mut State::default()) else {
        panic!("not a finding");
    };
    assert_eq!(f.upstream, Some(&b"10.0.2.15:8080"[..]));
    assert_eq!(f.client, Some(&b"203.0.113.9"[..]));
    assert_eq!(f.host, Some(&b"shop.example"[..]));
    assert_eq!(f.request, Some(&b"GET /api/orders HTTP/1.1"[..]));
    assert_eq!(f.status, Some(503));
    assert_eq!(
        logscan::time::format(f.time.unwrap()),
        "2026-05-01 10:00:21"
    );
}

#[test]
fn odd_input_never_fails() {
    let odd: [&[u8]; 17] = [
        b"",
        b"\xff\xfe\x00garbage\x01\x02",
        b"2024/05/01 12:00:00 [error] \xff\xff connect() failed (111: Connection refused",
        b"2024/05/01",
        b"[Wed May 01",
        b"[Wed May 01 10:00:03.114502 2024] [proxy:error] [pid",
        b"1.2.3.4:5 [01/May/2024:10:10:03.118] fe",
        b"{\"kind\":\"access\",\"cause\":\"",
        b"2024/99/99 99:99:99 [error] 1#1: *1 upstream timed out (110: Connection timed out) while connecting to upstream",
        b"{\"level\":\"error\",\"ts\":",
        b"{\"level\":\"error\",\"ts\":99999999999999999999999,\"logger\":\"http.log.error\",\"msg\":\"dial \\",
        b"{\"level\":\"error\",\"logger\":\"http.handlers.reverse_proxy\",\"msg\":\"reading from backend\"}",
        b"{\"level\":\"error\",\"logger\":\"http.log.access\",\"msg\":\"handled request\",\"request\":{\"remote_ip\":\"\xff",
        b"[2026-05-01T10:00:00.000Z] \"",
        b"[2026-05-01T10:00:00.000Z] \"GET / HTTP/1.1\" 503",
        b"[2026-05-01T10:00:00.000Z] \"GET / HTTP/1.1\" 503 UF,,URX 0 0 0 - \"\xff\" \"",
        b"[9999-99-99T99:99:99.999Z] \"GET / HTTP/1.1\" 99999999 UH",
    ];
    for line in odd {
        let _ = parse_line(line, None, &mut State::default());
        for f in logscan::Format::ALL {
            let _ = parse_line(line, Some(*f), &mut State::default());
        }
    }
    // Every prefix of a real line, in every format: cut-off lines are lines too.
    let real = "2024/05/01 12:00:00 [error] 2741#2741: *1583 connect() to unix:/run/php.sock failed (2: No such file or directory) while connecting to upstream, client: 1.2.3.4, server: a, request: \"GET / HTTP/1.1\", upstream: \"fastcgi://unix:/run/php.sock:\", host: \"a\"";
    let caddy = r#"{"level":"error","ts":1796220715.9084802,"logger":"http.log.error.log0","msg":"dial tcp 127.0.0.1:41001: connect: connection refused","request":{"remote_ip":"127.0.0.1","remote_port":"35614","host":"a","uri":"/x"},"status":502}"#;
    let envoy = r#"[2026-05-01T10:00:21.111Z] "GET /api/orders HTTP/1.1" 503 UF,URX 0 91 1002 - "203.0.113.9" "curl/8.5.0" "36f675cc" "shop.example" "10.0.2.15:8080""#;
    for real in [real, caddy, envoy] {
        for n in 0..real.len() {
            let _ = parse_line(&real.as_bytes()[..n], None, &mut State::default());
            for f in logscan::Format::ALL {
                let _ = parse_line(&real.as_bytes()[..n], Some(*f), &mut State::default());
            }
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
