#!/usr/bin/env bash
# Proxy throughput and latency: cleargate, nginx and HAProxy in front of the same origin, in one
# run, reported as ratios to nginx: with 1 worker each (the figure that counts on 2 cores), then
# with 2 workers each; HTTP/1.1 on /hello and /16k (wrk), and h2c on /hello (h2load); and a cache
# hit: /cached (the origin's /hello with `Cache-Control: max-age=3600`) answered from nginx's
# proxy_cache, HAProxy's cache and cleargate's cache, beside the proxied /hello.
#
#   bench/proxy.sh                    (about 9 minutes)
#   DURATION=8 bench/proxy.sh         (seconds measured per target, response and round; default 5)
#   ROUNDS=1 bench/proxy.sh           (rounds per response; default 3)
#   WORKERS=1 bench/proxy.sh          (only these worker counts: nginx workers, HAProxy threads,
#                                      cleargate workers; default "1 2")
#
# h2c: nginx listens with `http2` on a second port, HAProxy binds a second port with `proto h2`,
# cleargate tells h2c from HTTP/1 on its one port. `h2load -c64 -m10` (64 connections, 10 streams
# each) runs the same warm-up and measurement; its mean time per request stands in for p50.
#
# One nginx origin serves `/hello` (`return 200 "hello\n"`) and `/16k` (a 16 KiB static file)
# on loopback with keep-alive. The three proxies forward `/` to it, each with pooled keep-alive
# upstream connections and an access log written to a file. For each response, `wrk` runs against
# the origin directly (the baseline), then through each proxy in turn, never two at a time: a 2 s
# warm-up, then the measurement, with the same parameters. wrk, the proxy and the origin share
# the machine's cores. Each response is measured in ROUNDS rounds, every proxy once a round, the
# order turned by one each round (so that no proxy always runs first, or right after another): a
# shared VM's speed drifts by tens of percent over minutes, and a single 5 s sample of each proxy
# can fall on either side of a drift. The table gives each figure's median over the rounds, and
# the lowest and highest of the per-round ratios to nginx (each round's figure over nginx's figure
# in the same round). Ports are free ones picked by the kernel; everything lives in a temporary
# directory that is removed at exit, and every process started here is stopped by a trap.
#
# Prints a table (req/s, p50, p99, ratio to nginx, proxy CPU per request, upstream connections
# opened) as text and as markdown. Figures go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
WORKERS=${WORKERS:-1 2}
BIN=${BIN:-target/release/cleargate}
PATH=$PATH:/usr/sbin:/sbin

need=()
for tool in wrk h2load nginx haproxy curl python3; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    pkgs=()
    for t in "${need[@]}"; do
      case $t in wrk | nginx | haproxy | curl) pkgs+=("$t") ;; h2load) pkgs+=(nghttp2-client) ;; *)
        echo "missing: $t" >&2
        exit 1
        ;;
      esac
    done
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}"
  else
    echo "missing: ${need[*]} (install them, e.g. apt-get install -y wrk nghttp2-client nginx haproxy; CI=true does it)" >&2
    exit 1
  fi
fi
[ -x "$BIN" ] || cargo build --release

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cleargate-proxy-bench.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # nginx masters stop their workers on TERM; give everyone a moment, then insist.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/common.sh
. bench/common.sh
read -r ORIGIN_PORT NGINX_PORT HAPROXY_PORT CLEARGATE_PORT NGINX_H2_PORT HAPROXY_H2_PORT < <(free_ports 6)

# The origin: one worker, no access log, keep-alive without a request limit.
mkdir -p "$DIR/www" "$DIR/origin-tmp" "$DIR/nginx-tmp"
# 12288 random bytes are exactly 16384 base64 characters; no pipe is cut short.
head -c 12288 /dev/urandom | base64 -w 0 >"$DIR/www/16k"
cat >"$DIR/origin.conf" <<EOF
$(nginx_common origin)
worker_processes 1;
http {
$(nginx_http_common origin)
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $DIR/www;
        location = /hello { return 200 "hello\n"; }
        location = /16k { }
        location = /cached { add_header Cache-Control "max-age=3600"; return 200 "hello\n"; }
        location = /status { stub_status; }
    }
}
EOF

# The three proxies' configurations for $1 workers (threads).
write_proxy_configs() { # WORKERS
# nginx as the proxy: $1 workers, pooled upstream connections, combined access log to a file.
cat >"$DIR/nginx.conf" <<EOF
$(nginx_common nginx)
worker_processes $1;
http {
$(nginx_http_common nginx)
    access_log $DIR/nginx-access.log combined;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 1024;
        keepalive_requests 1000000;
    }
    proxy_cache_path $DIR/nginx-cache keys_zone=hits:10m;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        listen 127.0.0.1:$NGINX_H2_PORT http2;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /cached {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hits;
        }
    }
}
EOF

# HAProxy: $1 threads, safe connection reuse, the httplog line of every request to stdout, which
# goes to a file (one write per line, as nginx's unbuffered access_log).
cat >"$DIR/haproxy.cfg" <<EOF
global
    nbthread $1
    maxconn 4096
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    http-reuse safe
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    bind 127.0.0.1:$HAPROXY_H2_PORT proto h2
    default_backend be
cache hits
    total-max-size 64
    max-age 3600
backend be
    http-request cache-use hits if { path /cached }
    http-response cache-store hits
    server origin 127.0.0.1:$ORIGIN_PORT
EOF

# cleargate: JSON access log to a file (written by its log thread), pool sized as nginx's: above
# the 640 streams of the h2c run, so that neither pool churns.
cat >"$DIR/cleargate.toml" <<EOF
listen = ["127.0.0.1:$CLEARGATE_PORT"]
workers = $1

[log]
format = "json"
destination = "$DIR/cleargate.log"

[upstream.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
max_idle_per_endpoint = 1024

[cache]
size = "64MiB"

[[route]]
path = "/cached"
upstream = "origin"
cache = true

[[route]]
path = "/"
upstream = "origin"
EOF
}

wait_port() { # PORT NAME
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "$2 did not start on port $1; its output:" >&2
  cat "$DIR/$2.out" >&2 || true
  exit 1
}

start() { # NAME PORT COMMAND...
  local name=$1 port=$2
  shift 2
  "$@" >>"$DIR/$name.out" 2>&1 &
  PIDS+=($!)
  eval "${name^^}_PID=$!"
  wait_port "$port" "$name"
}

# CPU seconds of a process and its direct children (nginx's workers): user and system.
cpu_of() { # PID
  python3 - "$1" <<'PY'
import os, sys
root = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")
user = system = 0
for p in os.listdir("/proc"):
    if not p.isdigit():
        continue
    try:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if p == root or fields[1] == root:
        user += int(fields[11])
        system += int(fields[12])
print(user / hz, system / hz)
PY
}
origin_accepts() {
  curl -s "http://127.0.0.1:$ORIGIN_PORT/status" | awk 'NR == 3 { print $1 }'
}

nginx -t -q -p "$DIR/" -e "$DIR/origin-error.log" -c "$DIR/origin.conf"
start origin "$ORIGIN_PORT" nginx -p "$DIR/" -e "$DIR/origin-error.log" -c "$DIR/origin.conf"
printf 'hello\n' >"$DIR/hello.expected"

stop() { # PID
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
}

# One measurement: a warm-up, then the run, with the proxy's CPU time and the origin's accepted
# connections counted around it. Appends a line to $RESULTS.
measure() { # WORKERS PROTO PATH NAME PORT PID ROUND
  local w=$1 proto=$2 path=$3 name=$4 port=$5 pid=$6 round=$7
  local url=http://127.0.0.1:$port/$path out=$DIR/run-$w-$proto-$name-$path-$round.txt
  if [ "$proto" = h1 ]; then
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" "$url" >"$DIR/warmup-$name-$w-$proto-$path-$round.txt"
  else
    h2load -t"$THREADS" -c"$CONNS" -m10 -D"$WARMUP" "$url" >"$DIR/warmup-$name-$w-$proto-$path-$round.txt"
  fi
  local accepts_before cpu_before cpu_after accepts_after
  accepts_before=$(origin_accepts)
  cpu_before=$(cpu_of "$pid")
  if [ "$proto" = h1 ]; then
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$out"
  else
    h2load -t"$THREADS" -c"$CONNS" -m10 -D"$DURATION" "$url" >"$out"
  fi
  cpu_after=$(cpu_of "$pid")
  accepts_after=$(origin_accepts)
  # The origin's own /status request opens one connection; it is not the proxy's.
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$proto" "$path" "$name" "$round" \
    "$(python3 -c "b, a = '$cpu_before'.split(), '$cpu_after'.split(); print(float(a[0]) - float(b[0]), float(a[1]) - float(b[1]))")" \
    "$((accepts_after - accepts_before - 1))" "$out" >>"$RESULTS"
  echo "measured $name /$path ($proto, $w worker(s), round $round)"
}

# ROUNDS rounds of every proxy (with $w workers), the order turned by one each round.
rounds() { # PROTO PATH TARGET... (each NAME:PORT:PID)
  local proto=$1 path=$2 round i n
  shift 2
  local targets=("$@")
  n=${#targets[@]}
  for round in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((n - 1))); do
      IFS=: read -r name port pid <<<"${targets[$(((i + round - 1) % n))]}"
      measure "$w" "$proto" "$path" "$name" "$port" "$pid" "$round"
    done
  done
}
RESULTS=$DIR/results.tsv
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
first=1
for w in $WORKERS; do
  write_proxy_configs "$w"
  nginx -t -q -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf"
  haproxy -c -q -f "$DIR/haproxy.cfg"
  "$BIN" check -c "$DIR/cleargate.toml" >/dev/null
  start nginx "$NGINX_PORT" nginx -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf"
  start haproxy "$HAPROXY_PORT" haproxy -db -f "$DIR/haproxy.cfg"
  start cleargate "$CLEARGATE_PORT" "$BIN" serve -c "$DIR/cleargate.toml"

  # Correctness first: every target answers 200 with the right body, over HTTP/1.1 and h2c.
  for target in origin:$ORIGIN_PORT nginx:$NGINX_PORT haproxy:$HAPROXY_PORT cleargate:$CLEARGATE_PORT \
    nginx-h2c:$NGINX_H2_PORT haproxy-h2c:$HAPROXY_H2_PORT cleargate-h2c:$CLEARGATE_PORT; do
    name=${target%%:*} port=${target##*:}
    h2=()
    [[ $name == *-h2c ]] && h2=(--http2-prior-knowledge)
    for path in hello 16k cached; do
      expected=$DIR/hello.expected
      [ "$path" = 16k ] && expected=$DIR/www/16k
      code=$(curl -s "${h2[@]}" -o "$DIR/got" -w '%{http_code} %{http_version}' "http://127.0.0.1:$port/$path")
      want="200 1.1"
      [ ${#h2[@]} -gt 0 ] && want="200 2"
      if [ "$code" != "$want" ] || ! cmp -s "$DIR/got" "$expected"; then
        echo "check failed: $name /$path gave $code (wanted $want), body $(wc -c <"$DIR/got") bytes" >&2
        exit 1
      fi
    done
  done
  echo "check ($w worker(s)): every target answers 200 with the right body on /hello, /16k and /cached, HTTP/1.1 and h2c"

  for path in hello 16k cached; do
    [ "$first" = 1 ] && measure "$w" h1 "$path" origin "$ORIGIN_PORT" "$ORIGIN_PID" 1
    rounds h1 "$path" "nginx:$NGINX_PORT:$NGINX_PID" "haproxy:$HAPROXY_PORT:$HAPROXY_PID" \
      "cleargate:$CLEARGATE_PORT:$CLEARGATE_PID"
  done
  rounds h2c hello "nginx:$NGINX_H2_PORT:$NGINX_PID" "haproxy:$HAPROXY_H2_PORT:$HAPROXY_PID" \
    "cleargate:$CLEARGATE_PORT:$CLEARGATE_PID"
  stop "$NGINX_PID"
  stop "$HAPROXY_PID"
  stop "$CLEARGATE_PID"
  first=0
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Every proxy logs every request: count the lines against the requests the load tools completed
# (the startup probes and the checks add a few lines; requests cut off at a run's end add a few).
sleep 0.5
sent() {
  cat "$DIR"/warmup-"$1"-*.txt "$DIR"/run-*-"$1"-*.txt |
    awk '/requests in/ { n += $1 } /^requests: / { n += $8 } END { print n }'
}
lines() { # FILE PATTERN NAME
  grep -F "$2" "$1" | awk -v sent="$(sent "$3")" '{ n++; b += length($0) + 1 }
    END { printf "%d lines for %d requests, %.0f bytes a line", n, sent, n ? b / n : 0 }'
}
NGINX_LINES=$(lines "$DIR/nginx-access.log" ' "GET /' nginx)
HAPROXY_LINES=$(lines "$DIR/haproxy.out" ' "GET /' haproxy)
CLEARGATE_LINES=$(lines "$DIR/cleargate.log" '"kind":"access"' cleargate)

echo
echo "machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), kernel $(uname -r), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(wrk -v 2>&1 | awk 'NR==1 {print "wrk " $2}'), $(h2load --version | head -1), $("$BIN" --version 2>/dev/null || echo cleargate)"
echo "HTTP/1.1: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency; h2c: h2load -t$THREADS -c$CONNS -m10 -D$DURATION; each after a ${WARMUP}s warm-up, one target at a time, $ROUNDS round(s) of every proxy (medians below); the load tool, proxy and origin share the cores"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo "access logs: nginx $NGINX_LINES; haproxy $HAPROXY_LINES; cleargate $CLEARGATE_LINES"
echo

python3 - "$RESULTS" <<'PY'
import re, statistics, sys

def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 0.001, "ms": 1, "s": 1000}[unit]

runs = []
for line in open(sys.argv[1]):
    workers, proto, path, name, rnd, cpu, conns, out_file = line.rstrip("\n").split("\t")
    user, system = (float(x) for x in cpu.split())
    out = open(out_file).read()
    problems = []
    if proto == "h1":
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        p50 = ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        errs = re.search(r"Socket errors: (.*)", out)
        if bad:
            problems.append(f"{bad.group(1)} non-2xx")
        if errs:
            problems.append("socket errors: " + errs.group(1))
    else:
        rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
        # h2load gives min, max, mean and sd per request: the mean stands in for p50, no p99.
        p50 = ms(re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out).group(1))
        p99 = None
        m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
        total = int(m.group(2))
        if int(m.group(3)) or int(m.group(4)):
            problems.append(f"{m.group(3)} failed, {m.group(4)} errored")
        codes = re.search(r"status codes: (\d+) 2xx", out)
        if not codes or int(codes.group(1)) != total:
            problems.append("not every answer was 2xx")
    runs.append(dict(workers=workers, proto=proto, path=path, name=name, round=rnd, rps=rps,
                     p50=p50, p99=p99,
                     cpu_us=(user + system) / total * 1e6 if total else 0.0,
                     sys_share=system / (user + system) if user + system else 0.0,
                     conns=int(conns), problems=problems))

# One row per target: the median of its rounds, and beside each ratio to nginx the lowest and
# highest of the per-round ratios (the same round's nginx figure as the divisor).
def key(r):
    return (r["workers"], r["proto"], r["path"], r["name"])

groups = {}
for r in runs:
    groups.setdefault(key(r), []).append(r)

def med(rs, field):
    vals = [r[field] for r in rs if r[field] is not None]
    return statistics.median(vals) if vals else None

def nginx_of(r):
    if r["name"] == "origin":
        return [x for x in runs if x["path"] == r["path"] and x["name"] == "nginx"
                and x["proto"] == "h1" and x["workers"] == runs[0]["workers"]]
    return groups[(r["workers"], r["proto"], r["path"], "nginx")]

def fmt_ms(v):
    if v is None:
        return "-"
    return f"{v:.2f} ms" if v < 10 else f"{v:.1f} ms"

def ratio(rs, base, field):
    """The ratio of medians, and the range of the per-round ratios."""
    a, b = med(rs, field), med(base, field)
    if a is None or not b:
        return "-"
    if rs is base:
        return "1.00x"
    text = f"{a / b:.2f}x"
    by_round = {x["round"]: x[field] for x in base}
    each = [r[field] / by_round[r["round"]] for r in rs
            if r[field] is not None and by_round.get(r["round"])]
    if len(each) > 1:
        text += f" ({min(each):.2f}–{max(each):.2f})"
    return text

header = ["workers", "protocol", "response", "target", "req/s", "p50 (h2c: mean)", "p99",
          "ratio to nginx (req/s)", "proxy CPU per request", "ratio to nginx (CPU)",
          "ratio to nginx (p99)", "system share of CPU", "upstream conns opened", "errors"]
table = []
for k, rs in groups.items():
    r = rs[0]
    base = nginx_of(r)
    proxy = r["name"] != "origin"
    name = "origin (direct, baseline)" if not proxy else r["name"]
    problems = "; ".join(p for x in rs for p in x["problems"]) or "-"
    table.append([r["workers"] if proxy else "-", "HTTP/1.1" if r["proto"] == "h1" else "h2c",
                  "/" + r["path"], name, f"{med(rs, 'rps'):.0f}", fmt_ms(med(rs, "p50")),
                  fmt_ms(med(rs, "p99")), ratio(rs, base, "rps"),
                  f"{med(rs, 'cpu_us'):.1f} µs" if proxy else "-",
                  ratio(rs, base, "cpu_us") if proxy else "-",
                  ratio(rs, base, "p99") if proxy else "-",
                  f"{med(rs, 'sys_share') * 100:.0f}%",
                  "/".join(str(x["conns"]) for x in rs) if proxy else "-", problems])

widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
print(line(header))
for row in table:
    print(line(row))
print()
print("| " + " | ".join(header) + " |")
print("| " + " | ".join("---" for _ in header) + " |")
for row in table:
    print("| " + " | ".join(row) + " |")
PY
