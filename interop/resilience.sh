#!/usr/bin/env bash
# cleargate, nginx and HAProxy under the same upstream faults: how many errors do clients see?
#
# Starts `cleargate lab` upstreams, then cleargate, nginx and HAProxy (OS packages, run as the
# current user, every file in a temporary directory, loopback ports only), each configured the
# usual way, one route/location/backend per scenario:
#   1. keep-alive race: the upstream closes idle connections after 100 ms, clients pause about
#      that long between requests (GET, and every tenth a POST);
#   2. one of three endpoints killed mid-load, and started again;
#   3. the only endpoint down for one second (a restart) during GET load;
#   4. all endpoints down: status and time to answer;
#   5. overload: a slow upstream behind a concurrency limit, a burst of concurrent requests;
#   6. one of three endpoints hangs (reads requests, never answers), 2 s response timeouts, 10 s
#      of GET load; also counts the requests the hanging endpoint received (from the gateways'
#      own logs and stats).
# The load driver is python3 (stdlib http.client, keep-alive, threads); every scenario is bounded
# in requests and time. The table of client-visible errors goes to docs/resilience.md. Exits
# non-zero when cleargate has errors where the rules allow none (1 GET, 2, 3, 6), any 502 in 5, no
# fast 503 in 4, or more errors than nginx or HAProxy in any scenario.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cleargate
DOC=$ROOT/docs/resilience.md
[ -x "$BIN" ] || { echo "resilience.sh: build first: cargo build --release" >&2; exit 1; }
for tool in nginx haproxy python3; do
  command -v "$tool" >/dev/null || { echo "resilience.sh: $tool is not installed" >&2; exit 1; }
done

D=$(mktemp -d /tmp/cleargate-resilience.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/res" "$D/nginx-tmp"
declare -A LAB_PID=()
DRIVERS=()
cleanup() {
  local p
  for p in "${DRIVERS[@]}" "${LAB_PID[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$D/nginx.pid" "$D/haproxy.pid" "$D/cleargate.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "resilience.sh: kept $D" >&2 || rm -rf "$D"
}
trap cleanup EXIT

# --- ports: a run of free ones, picked by binding --------------------------------------------
free_base() {
  python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000)
    socks = []
    try:
        for p in range(base, base + 16):
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(base)
    break
PY
}
BASE=$(free_base)
[ -n "$BASE" ] || { echo "resilience.sh: no free ports" >&2; exit 1; }
P_RACE=$BASE P_TRIO_A=$((BASE + 1)) P_TRIO_B=$((BASE + 2)) P_TRIO_C=$((BASE + 3))
P_RESTART=$((BASE + 4)) P_DOWN_A=$((BASE + 5)) P_DOWN_B=$((BASE + 6)) P_SLOW=$((BASE + 7))
P_CLEARGATE=$((BASE + 10)) P_NGINX=$((BASE + 11)) P_HAPROXY=$((BASE + 12))
P_HANG_A=$((BASE + 13)) P_HANG_B=$((BASE + 14)) P_HANG_C=$((BASE + 15))
# The ports the doc shows: names instead of this run's numbers.
doc_ports() {
  P_RACE=RACE P_TRIO_A=TRIO_A P_TRIO_B=TRIO_B P_TRIO_C=TRIO_C P_RESTART=RESTART P_DOWN_A=DOWN_A
  P_DOWN_B=DOWN_B P_SLOW=SLOW P_HANG_A=HANG_A P_HANG_B=HANG_B P_HANG_C=HANG_C
  P_CLEARGATE=8080 P_NGINX=8080 P_HAPROXY=8080 D=/run/gw AS_ROOT=
}
AS_ROOT=
[ "$(id -u)" = 0 ] && AS_ROOT=1

wait_port() {  # port [what]
  local i
  for i in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "resilience.sh: nothing listens on port $1 (${2:-?})" >&2
  exit 1
}

# --- the lab: one process per endpoint, so that one can be killed and started again ------------
start_lab() {  # name port fault [lab options...]
  local name=$1 port=$2 fault=$3
  shift 3
  "$BIN" lab --faults "$fault" --port-base "$port" "$@" >>"$D/lab-$name.log" 2>&1 &
  LAB_PID[$name]=$!
  wait_port "$port" "lab $name"
}
stop_lab() {  # name signal: TERM stops it as a service manager does, KILL as a crash
  kill "-$2" "${LAB_PID[$1]}" 2>/dev/null || true
  wait "${LAB_PID[$1]}" 2>/dev/null || true
  unset "LAB_PID[$1]"
}

# --- the three gateways, one route per scenario ------------------------------------------------
cleargate_toml() {
  cat <<EOF
listen = ["127.0.0.1:$P_CLEARGATE"]

[log]
destination = "$D/cleargate.log"

# 1. keep-alive race: the defaults (idle connections kept 30 s, GETs retried).
[upstream.race]
endpoints = ["127.0.0.1:$P_RACE"]

# 2. one of three killed: active health checks, as for 4.
[upstream.trio]
endpoints = ["127.0.0.1:$P_TRIO_A", "127.0.0.1:$P_TRIO_B", "127.0.0.1:$P_TRIO_C"]
[upstream.trio.health]
path = "/health"
interval = "200ms"
timeout = "200ms"
rise = 2
fall = 2

# 3. the only endpoint restarting: idempotent requests wait for it.
[upstream.restart]
endpoints = ["127.0.0.1:$P_RESTART"]
restart_wait = "3s"

# 4. all down.
[upstream.down]
endpoints = ["127.0.0.1:$P_DOWN_A", "127.0.0.1:$P_DOWN_B"]
[upstream.down.health]
tcp = true
interval = "200ms"
timeout = "200ms"
fall = 2

# 5. overload: 4 at once, the rest wait in the queue up to 750 ms.
[upstream.slow]
endpoints = ["127.0.0.1:$P_SLOW"]
max_in_flight = 4
queue_size = 100
queue_timeout = "750ms"

# 6. one of three hangs: a response timeout of 2 s, no active health checks.
[upstream.hang]
endpoints = ["127.0.0.1:$P_HANG_A", "127.0.0.1:$P_HANG_B", "127.0.0.1:$P_HANG_C"]
response_timeout = "2s"

[[route]]
path = "/race/"
upstream = "race"

[[route]]
path = "/trio/"
upstream = "trio"

[[route]]
path = "/restart/"
upstream = "restart"

[[route]]
path = "/down/"
upstream = "down"

[[route]]
path = "/slow/"
upstream = "slow"

[[route]]
path = "/hang/"
upstream = "hang"
EOF
}

nginx_conf() {
  echo "worker_processes 1;"
  echo "pid $D/nginx.pid;"
  echo "error_log $D/nginx-error.log warn;"
  [ -n "$AS_ROOT" ] && echo "user $(id -un) $(id -gn);"
  echo "events { worker_connections 1024; }"
  echo "http {"
  echo "  access_log off;"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $D/nginx-tmp/$t;"; done
  cat <<EOF
  # Upstream keep-alive, the usual way. Timeouts, max_fails=1, fail_timeout=10s and
  # proxy_next_upstream error timeout are the defaults.
  proxy_http_version 1.1;
  proxy_set_header Connection "";

  upstream race    { server 127.0.0.1:$P_RACE; keepalive 16; }
  upstream trio    { server 127.0.0.1:$P_TRIO_A; server 127.0.0.1:$P_TRIO_B; server 127.0.0.1:$P_TRIO_C; keepalive 16; }
  upstream restart { server 127.0.0.1:$P_RESTART; keepalive 16; }
  upstream down    { server 127.0.0.1:$P_DOWN_A; server 127.0.0.1:$P_DOWN_B; keepalive 16; }
  # Open source nginx has no queue: max_conns alone.
  upstream slow    { server 127.0.0.1:$P_SLOW max_conns=4; keepalive 16; }
  upstream hang    { server 127.0.0.1:$P_HANG_A; server 127.0.0.1:$P_HANG_B; server 127.0.0.1:$P_HANG_C; keepalive 16; }

  server {
    listen 127.0.0.1:$P_NGINX;
    location /race/    { proxy_pass http://race; }
    location /trio/    { proxy_pass http://trio; }
    location /restart/ { proxy_pass http://restart; }
    location /down/    { proxy_pass http://down; }
    location /slow/    { proxy_pass http://slow; }
    location /hang/    { proxy_pass http://hang; proxy_read_timeout 2s; }
  }
}
EOF
}

haproxy_cfg() {
  cat <<EOF
global
  maxconn 1024
  # Read by the script (show stat) to count the requests each server got.
  stats socket $D/haproxy.sock mode 600 level user

defaults
  mode http
  http-reuse safe
  retries 3
  option redispatch
  timeout connect 5s
  timeout client 30s
  timeout server 30s

frontend fe
  bind 127.0.0.1:$P_HAPROXY
  use_backend race    if { path_beg /race/ }
  use_backend trio    if { path_beg /trio/ }
  use_backend restart if { path_beg /restart/ }
  use_backend down    if { path_beg /down/ }
  use_backend slow    if { path_beg /slow/ }
  use_backend hang    if { path_beg /hang/ }

backend race
  server r1 127.0.0.1:$P_RACE

backend trio
  option httpchk GET /health
  server t1 127.0.0.1:$P_TRIO_A check inter 200ms rise 2 fall 2
  server t2 127.0.0.1:$P_TRIO_B check inter 200ms rise 2 fall 2
  server t3 127.0.0.1:$P_TRIO_C check inter 200ms rise 2 fall 2

backend restart
  server s1 127.0.0.1:$P_RESTART check

backend down
  server d1 127.0.0.1:$P_DOWN_A check inter 200ms fall 2
  server d2 127.0.0.1:$P_DOWN_B check inter 200ms fall 2

backend slow
  timeout queue 750ms
  server w1 127.0.0.1:$P_SLOW maxconn 4

backend hang
  timeout server 2s
  server h1 127.0.0.1:$P_HANG_A
  server h2 127.0.0.1:$P_HANG_B
  server h3 127.0.0.1:$P_HANG_C
EOF
}

start_gateways() {
  cleargate_toml >"$D/cleargate.toml"
  "$BIN" check -c "$D/cleargate.toml" >/dev/null
  "$BIN" serve -c "$D/cleargate.toml" >"$D/cleargate.out" 2>&1 &
  echo $! >"$D/cleargate.pid"
  nginx_conf >"$D/nginx.conf"
  nginx -p "$D" -c "$D/nginx.conf" -e "$D/nginx-error.log"
  haproxy_cfg >"$D/haproxy.cfg"
  haproxy -D -f "$D/haproxy.cfg" -p "$D/haproxy.pid" >"$D/haproxy.out" 2>&1
  wait_port "$P_CLEARGATE" cleargate
  wait_port "$P_NGINX" nginx
  wait_port "$P_HAPROXY" haproxy
}

# --- the load driver -------------------------------------------------------------------------
cat >"$D/drive.py" <<'PY'
"""Load for one gateway; prints a JSON summary. Every request is bounded by a 10 s timeout.

load:  CLIENTS keep-alive connections, REQUESTS each, a pause between requests;
timed: as load, but each connection goes on for REQUESTS seconds (a request under way then
       still ends, within its own timeout);
burst: CLIENTS requests at once, one connection each, sent together.
A request is an error unless it got a 2xx with a complete body."""
import http.client, json, statistics, sys, threading, time

mode, port, path, clients, requests = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
gap_min, gap_max, post_every = (float(x) for x in sys.argv[6:9]) if len(sys.argv) > 8 else (0, 0, 0)
post_every = int(post_every)
lock = threading.Lock()
results = []  # (method, outcome, ms, proxy_status)

def one(conn, method):
    body = b"payload" if method == "POST" else None
    started = time.monotonic()
    status, ps = None, ""
    try:
        conn.request(method, path, body=body)
        r = conn.getresponse()
        status, ps = r.status, r.getheader("proxy-status", "")
        r.read()  # IncompleteRead when the body is cut short
        if r.will_close:
            conn.close()
        outcome = str(status)
    except Exception as e:
        conn.close()
        outcome = ("broken body after %s" % status) if status else "no response"
    return method, outcome, (time.monotonic() - started) * 1000, ps

def client(k, barrier):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    mine = []
    if barrier:
        barrier.wait()
    deadline = time.monotonic() + requests
    i = -1
    while True:
        i += 1
        if (time.monotonic() >= deadline) if mode == "timed" else (i >= requests):
            break
        if gap_max:
            # Spread over [gap_min, gap_max] in steps of 0.1 ms, the same sequence every run.
            steps = int((gap_max - gap_min) * 10) + 1
            time.sleep((gap_min + (k * 7 + i * 13) % steps / 10) / 1000)
        method = "POST" if post_every and i % post_every == post_every - 1 else "GET"
        mine.append(one(conn, method))
    conn.close()
    with lock:
        results.extend(mine)

barrier = threading.Barrier(clients) if mode == "burst" else None
threads = [threading.Thread(target=client, args=(k, barrier)) for k in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()

summary = {}
for method in ("GET", "POST"):
    mine = [r for r in results if r[0] == method]
    if not mine:
        continue
    outcomes = {}
    for r in mine:
        outcomes[r[1]] = outcomes.get(r[1], 0) + 1
    errors = [r for r in mine if not r[1].startswith("2") or not r[1].isdigit()]
    summary[method] = {
        "requests": len(mine),
        "errors": len(errors),
        "outcomes": outcomes,
        "median_ms": round(statistics.median(r[2] for r in mine), 1),
        "max_ms": round(max(r[2] for r in mine), 1),
        "error_samples": sorted({r[3] for r in errors if r[3]})[:5],
    }
print(json.dumps(summary))
PY

GATEWAYS=(cleargate nginx haproxy)
port_of() { case $1 in cleargate) echo "$P_CLEARGATE" ;; nginx) echo "$P_NGINX" ;; haproxy) echo "$P_HAPROXY" ;; esac; }

# Starts the driver against every gateway at once (the same faults hit all three).
drive_all_start() {  # scenario mode path clients requests [gap_min gap_max post_every]
  local scenario=$1 gw
  shift
  DRIVERS=()
  for gw in "${GATEWAYS[@]}"; do
    timeout 120 python3 "$D/drive.py" "$1" "$(port_of "$gw")" "${@:2}" >"$D/res/$scenario-$gw.json" &
    DRIVERS+=($!)
  done
}
drive_all_wait() {
  local p
  for p in "${DRIVERS[@]}"; do wait "$p"; done
  DRIVERS=()
}
# Drives one gateway after the other (for latencies and bursts, without contention).
drive_each() {  # scenario mode path clients requests
  local scenario=$1 gw
  shift
  for gw in "${GATEWAYS[@]}"; do
    timeout 60 python3 "$D/drive.py" "$1" "$(port_of "$gw")" "${@:2}" >"$D/res/$scenario-$gw.json"
  done
}

# --- the scenarios ---------------------------------------------------------------------------
scenario_race() {
  echo "1. keep-alive race"
  drive_all_start race load /race/x 32 60 97 103 10
  drive_all_wait
}

scenario_trio() {
  echo "2. one of three endpoints killed mid-load"
  drive_all_start trio load /trio/x 6 500 5 5 0
  sleep 0.8
  stop_lab trio_c KILL
  sleep 1.5
  start_lab trio_c "$P_TRIO_C" ok
  drive_all_wait
}

scenario_restart() {  # scenario signal
  echo "3. the only endpoint down for one second (SIG$2)"
  drive_all_start "$1" load /restart/x 4 300 10 10 0
  sleep 0.8
  stop_lab restart "$2"
  sleep 1
  start_lab restart "$P_RESTART" ok
  drive_all_wait
}

scenario_down() {
  echo "4. all endpoints down"
  # Bounded wait until cleargate's checks have marked both down; HAProxy checks as often.
  local i
  for i in $(seq 100); do
    [ "$(grep -c 'marked unhealthy' "$D/cleargate.log" || true)" -ge 2 ] && break
    sleep 0.05
  done
  sleep 0.5
  drive_each down load /down/x 1 20 0 0 0
}

scenario_overload() {
  echo "5. overload"
  drive_each slow burst /slow/x 20 1
}

# How many requests the hanging endpoint got through each gateway (the lab keeps no tally it
# would show): cleargate's access lines list every attempt; nginx logs each time-out with the
# server; HAProxy counts per server (show stat, field stot). null when a source is unreadable.
count_hung() {  # port
  python3 - "$D" "$1" <<'PY'
import csv, json, socket, sys
d, port = sys.argv[1], sys.argv[2]
addr = "127.0.0.1:" + port
counts = {}
try:
    n = 0
    for line in open(d + "/cleargate.log"):
        if '"kind":"access"' in line:
            r = json.loads(line)
            if (r.get("path") or "").startswith("/hang/"):
                n += sum(1 for a in r.get("attempts") or [] if a.get("endpoint") == addr)
    counts["cleargate"] = n
except (OSError, ValueError):
    counts["cleargate"] = None
try:
    needle = 'upstream: "http://%s/hang/' % addr
    counts["nginx"] = sum(1 for line in open(d + "/nginx-error.log")
                          if "upstream timed out" in line and needle in line)
except OSError:
    counts["nginx"] = None
counts["haproxy"] = None
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(d + "/haproxy.sock")
    s.sendall(b"show stat\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    rows = list(csv.reader(data.decode().lstrip("# ").splitlines()))
    head = rows[0]
    for row in rows[1:]:
        r = dict(zip(head, row))
        if r.get("pxname") == "hang" and r.get("svname") == "h3":
            counts["haproxy"] = int(r["stot"])
except (OSError, ValueError, IndexError, KeyError):
    pass
print(json.dumps(counts))
PY
}

scenario_hang() {
  echo "6. one of three endpoints hangs"
  drive_all_start hang timed /hang/x 8 10 5 5 0
  drive_all_wait
  sleep 0.2  # cleargate writes its log every 50 ms
  count_hung "$P_HANG_C" >"$D/res/hang-counts.json"
}

start_lab race "$P_RACE" kashort --kashort-ms 100
start_lab trio_a "$P_TRIO_A" ok
start_lab trio_b "$P_TRIO_B" ok
start_lab trio_c "$P_TRIO_C" ok
start_lab restart "$P_RESTART" ok
start_lab slow "$P_SLOW" slow --slow-delay 500ms
start_lab hang_a "$P_HANG_A" ok
start_lab hang_b "$P_HANG_B" ok
start_lab hang_c "$P_HANG_C" hang
start_gateways
sleep 0.5  # the first health checks
START=$SECONDS
scenario_race
scenario_trio
scenario_restart restart TERM
scenario_restart crash KILL
scenario_down
scenario_overload
scenario_hang
echo "scenarios took $((SECONDS - START)) s"

# --- the configurations as the doc shows them ------------------------------------------------
OUT=$D
(
  doc_ports
  cleargate_toml >"$OUT/doc-cleargate.toml"
  nginx_conf >"$OUT/doc-nginx.conf"
  haproxy_cfg >"$OUT/doc-haproxy.cfg"
)

# --- the table and the verdict ---------------------------------------------------------------
python3 - "$D" "$DOC" "$(nginx -v 2>&1 | sed 's/.*version: //')" \
  "$(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')" "$("$BIN" --version)" <<'PY'
import json, sys
d, doc, nginx_v, haproxy_v, cleargate_v = sys.argv[1:6]
GW = ("cleargate", "nginx", "haproxy")
NAMES = {"cleargate": "cleargate", "nginx": "nginx", "haproxy": "HAProxy"}
res = {(s, g): json.load(open("%s/res/%s-%s.json" % (d, s, g))) for s in ("race", "trio", "restart", "crash", "down", "slow", "hang") for g in GW}
hung = json.load(open("%s/res/hang-counts.json" % d))

def part(s, g, method="GET"):
    return res[(s, g)].get(method, {"requests": 0, "errors": 0, "outcomes": {}, "median_ms": 0, "error_samples": []})

def cell(p, latency=False):
    bad = {k: v for k, v in sorted(p["outcomes"].items()) if not (k.isdigit() and k.startswith("2"))}
    text = "**%d**" % p["errors"]
    if bad:
        text += " (" + ", ".join("%s × %d" % (k, v) for k, v in bad.items()) + ")"
    if latency:
        text += ", median %s ms" % p["median_ms"]
    return text

ROWS = [
    ("1. keep-alive race, GET", "race", "GET", False),
    ("1. keep-alive race, POST", "race", "POST", False),
    ("2. one of three endpoints killed, GET", "trio", "GET", False),
    ("3a. only endpoint restarted (SIGTERM), down 1 s, GET", "restart", "GET", False),
    ("3b. only endpoint crashed (SIGKILL), down 1 s, GET", "crash", "GET", False),
    ("4. all endpoints down, GET", "down", "GET", True),
    ("5. overload (4 at once), 20 concurrent GETs", "slow", "GET", False),
    ("6. one of three endpoints hangs (2 s timeouts), GET", "hang", "GET", False),
]
failures = []
lines = []
for label, s, m, lat in ROWS:
    parts = {g: part(s, g, m) for g in GW}
    n = parts["cleargate"]["requests"]
    c = parts["cleargate"]
    if s == "hang":
        # Timed load: each gateway gets as many requests as it answers in 10 s.
        lines.append("| %s | 8 lanes × 10 s | %s |" % (label, " | ".join(
            "%s of %d; %s to the hanging endpoint"
            % (cell(parts[g]), parts[g]["requests"], "?" if hung.get(g) is None else hung[g])
            for g in GW)))
        if any(parts[g]["requests"] == 0 for g in GW):
            failures.append("%s: no requests: %s" % (label, {g: parts[g]["requests"] for g in GW}))
    else:
        lines.append("| %s | %d | %s |" % (label, n, " | ".join(cell(parts[g], lat) for g in GW)))
        if c["requests"] == 0 or any(parts[g]["requests"] != n for g in GW):
            failures.append("%s: request counts differ: %s" % (label, {g: parts[g]["requests"] for g in GW}))
    for g in ("nginx", "haproxy"):
        if c["errors"] > parts[g]["errors"]:
            failures.append("%s: cleargate %d errors, %s %d" % (label, c["errors"], NAMES[g], parts[g]["errors"]))
    if (s, m) in (("race", "GET"), ("trio", "GET"), ("restart", "GET"), ("crash", "GET"),
                  ("hang", "GET")) and c["errors"]:
        failures.append("%s: cleargate has %d errors where none are allowed: %s" % (label, c["errors"], c["outcomes"]))
    if s == "slow" and c["outcomes"].get("502"):
        failures.append("%s: cleargate answered 502 %d times" % (label, c["outcomes"]["502"]))
    if s == "down" and (set(c["outcomes"]) != {"503"} or c["median_ms"] > 50
                        or not all("no_healthy_upstream" in x for x in c["error_samples"])):
        failures.append("%s: cleargate did not answer a fast 503 no_healthy_upstream: %s, median %s ms, %s"
                        % (label, c["outcomes"], c["median_ms"], c["error_samples"]))
    for g in GW:
        for sample in parts[g]["error_samples"]:
            print("  %s %s: %s" % (label, NAMES[g], sample))

def fenced(name, lang):
    return "```%s\n%s```\n" % (lang, open("%s/doc-%s" % (d, name)).read())

slow = {g: ", ".join("%s × %d" % kv for kv in sorted(part("slow", g)["outcomes"].items())) for g in GW}
if failures:
    verdict = "**Checks failed in this run:**\n\n" + "".join("- %s\n" % f for f in failures)
else:
    verdict = ("Checks passed: no cleargate error in 1 (GET), 2, 3 and 6, no 502 in 5, a fast 503 in 4, "
               "and nowhere more errors than nginx or HAProxy.\n")
with open(doc, "w") as out:
    out.write("""# Resilience: cleargate, nginx and HAProxy under the same faults

Written by `interop/resilience.sh` (run by `.ci/run`); do not edit by hand.

Three gateways stand in front of the same `cleargate lab` upstreams, on loopback: cleargate, nginx
and HAProxy from the OS packages, each configured the usual way (below). A python client
(`http.client`, keep-alive connections, threads) sends the same load through each and counts the
requests that did not end in a 2xx with a complete body. Scenarios 1 to 3 and 6 load the three
gateways at the same time, so that the same fault hits all three at the same moment; 4 and 5 drive
one gateway after the other.

1. **Keep-alive race.** The upstream (`lab` fault `kashort`) closes a connection after 100 ms idle,
   without announcing it; each gateway keeps idle upstream connections far longer (its defaults).
   32 clients pause 97 to 103 ms between requests, so requests meet connections the upstream is
   closing at that very moment. Every tenth request is a POST, which no gateway may replay once
   sent: the rules allow errors there.
2. **One of three endpoints killed mid-load.** Three `lab` processes (`ok`); 6 clients send GETs
   every 5 ms; 0.8 s in, one process is killed (SIGKILL), and started again on the same port 1.5 s
   later.
3. **The only endpoint down for one second.** One `lab` process; 4 clients send a GET every 10 ms;
   0.8 s in, it is stopped and started again on the same port one second later: (a) stopped with
   SIGTERM, as a service manager restarts it (the lab closes its listener, then its connections);
   (b) killed with SIGKILL, as in a crash, with requests in flight.
4. **All endpoints down.** Two endpoints where nothing listens, after the health checks had time to
   notice; 20 GETs one after the other. Every request fails everywhere; what differs is the status
   and how fast it comes (median latency in the table).
5. **Overload.** A slow upstream (`lab` fault `slow`, 500 ms per answer) behind a limit of 4
   requests at once; 20 concurrent GETs. A queue lets 4 more through after the first 4 (750 ms
   wait); the others must get 503, the status for "too busy", never 502.
6. **One of three endpoints hangs.** Three `lab` processes, two `ok` and one `hang`, which reads
   each request and neither answers nor closes. Each gateway waits 2 s for a response head (nginx
   `proxy_read_timeout 2s`, HAProxy `timeout server 2s`, cleargate `response_timeout = "2s"`), and
   none checks this pool actively. 8 clients send a GET every 5 ms for 10 s, so a gateway that
   waits on the hanging endpoint serves fewer requests; the table gives each gateway's count and
   how many of them reached the hanging endpoint (from cleargate's access lines, nginx's error log
   and HAProxy's per-server `stot`).

## Results

Measured with cleargate %s, %s and HAProxy %s. Errors per gateway, with the statuses
(or failures) seen.

| scenario | requests | cleargate errors | nginx errors | HAProxy errors |
| --- | --- | --- | --- | --- |
%s

Statuses in scenario 5: cleargate %s; nginx %s; HAProxy %s.

%s
## Notes

- "no response" means the gateway closed the client connection without answering (Python reports
  `RemoteDisconnected`). HAProxy does this when a request fails on a reused server connection, so
  that the client may retry; browsers retry idempotent requests then, most HTTP client libraries
  do not.
- **1, keep-alive race.** All three notice most upstream closes before reusing a connection; the
  race bites when the close crosses the request. nginx then retries a GET (a failed cached
  connection does not count as a try) but answers 502 to a POST; HAProxy closes the client
  connection. cleargate retries GETs too, and after the first early close it lowers its idle
  timeout for that endpoint below the upstream's (logged as `pool idle timeout lowered`), so it
  stops racing at all; a POST, which may not be retried, only reuses a connection idle for under
  half that limit. Counts vary between runs: the race needs a close and a request within
  microseconds of each other.
- **2 and 3.** nginx and HAProxy retry a failed connect on another server (`proxy_next_upstream
  error`, `retries 3` + `option redispatch`). With a single server, nginx has nowhere to go and
  answers 502 for the whole outage; HAProxy waits about one second between connect retries to a
  server that refused, which bridges a short restart (its longest answers took about 2 s).
  cleargate holds idempotent requests up to `restart_wait` while every endpoint refuses (backing off
  from 25 to 250 ms between tries) and connects as soon as one listens again.
- **4.** Open source nginx has no active health checks: it tries both servers, marks them failed
  (`max_fails=1`, `fail_timeout=10s`) and answers 502 `no live upstreams` without connecting after
  that. HAProxy and cleargate know from their checks that nothing is up and answer 503 without
  trying; cleargate adds `Retry-After` and names the cause `no_healthy_upstream`.
- **5.** Open source nginx has no queue: with `max_conns` reached it has no server left and answers
  502. HAProxy (`maxconn` + `timeout queue`) and cleargate (`max_in_flight`, `queue_timeout`) queue
  the excess and answer 503 when the wait runs out.
- **6.** nginx passes a timed-out request to the next server (`proxy_next_upstream error
  timeout`, the default) and, with `max_fails=1`, leaves the hanging one alone for `fail_timeout`
  (10 s): each lane waits 2 s once, then no more. HAProxy retries only failed connects (`retries`
  with the default `retry-on connect-failure`), so every request balanced onto the hanging server
  ends in 504 after 2 s; with no health check it keeps getting one request in three, and the lanes
  spend most of the 10 s waiting. cleargate retries a timed-out attempt on another endpoint when
  the request is safe to repeat even if the first try was processed (GET, HEAD, OPTIONS, TRACE, or
  any request with an `Idempotency-Key`; `timeout` is in the default `retry.on`), and after 5
  consecutive failures ejects the endpoint for 10 s (its default `outlier` settings).
- nginx runs one worker so that `max_conns` is one limit (without a shared `zone`, each worker
  counts its own).

## Configurations

Ports as names; everything else as run.

cleargate:

%s
nginx:

%s
HAProxy:

%s""" % (cleargate_v.split()[-1], nginx_v, haproxy_v, "\n".join(lines),
         slow["cleargate"], slow["nginx"], slow["haproxy"], verdict,
         fenced("cleargate.toml", "toml"), fenced("nginx.conf", "nginx"), fenced("haproxy.cfg", "haproxy")))

print("\n".join(lines))
for f in failures:
    print("FAIL " + f)
sys.exit(1 if failures else 0)
PY
echo "resilience.sh: ok"
