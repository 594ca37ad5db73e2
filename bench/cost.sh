#!/usr/bin/env bash
# Cost per proxied request that a busy machine cannot blur: user-space instructions (counted by
# valgrind's callgrind, the same count run after run), system calls and context switches (counted
# by the kernel through `perf stat`). cleargate, nginx and HAProxy, each with one worker, in front
# of the same nginx origin, with the same access logs as bench/proxy.sh.
#
#   bench/cost.sh                     (about 3 minutes)
#   N=5000 bench/cost.sh              (requests measured per target and response; default 20000)
#   KEEP=dir bench/cost.sh            (keep the callgrind profiles in dir, for callgrind_annotate)
#   PROXIES=cleargate bench/cost.sh   (only some of them; ratios need nginx)
#
# For each proxy and response: the proxy starts under callgrind, `h2load --h1` sends N/10
# requests (warm-up), the counters are zeroed, N requests are sent on 64 keep-alive connections,
# and the counters are dumped; instructions per request = the dump's total / N. Then the proxy
# runs again without valgrind and `perf stat -e raw_syscalls:sys_enter,context-switches` counts
# while N requests are sent. Counts cover every thread of the proxy (cleargate's log thread too).
# The kernel's own work per system call is not in the instruction count; the system-call count
# stands in for it.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-20000}
KEEP=${KEEP:-}
PROXIES=${PROXIES:-nginx haproxy cleargate}
CONNS=${CONNS:-64}
BIN=${BIN:-target/release/cleargate}
PATH=$PATH:/usr/sbin:/sbin

need=()
for tool in h2load nginx haproxy curl python3 valgrind perf callgrind_control; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "missing: ${need[*]} (apt-get install -y nghttp2-client nginx haproxy valgrind linux-perf)" >&2
  exit 1
fi
[ -x "$BIN" ] || cargo build --release

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cleargate-cost.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do
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
read -r ORIGIN_PORT PROXY_PORT < <(free_ports 2)

mkdir -p "$DIR/www" "$DIR/origin-tmp" "$DIR/nginx-tmp"
head -c 12288 /dev/urandom | base64 -w 0 >"$DIR/www/16k"
cat >"$DIR/origin.conf" <<EOF
$(nginx_common origin)
http {
$(nginx_http_common origin)
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $DIR/www;
        location = /hello { return 200 "hello\n"; }
        location = /16k { }
    }
}
worker_processes 1;
EOF
# Under valgrind nginx runs without its master process: the one process is the worker.
cat >"$DIR/nginx.conf" <<EOF
$(nginx_common nginx)
http {
$(nginx_http_common nginx)
    access_log $DIR/nginx-access.log combined;
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
master_process off;
worker_processes 1;
EOF
cat >"$DIR/haproxy.cfg" <<EOF
global
    nbthread 1
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
    bind 127.0.0.1:$PROXY_PORT
    default_backend be
backend be
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
cat >"$DIR/cleargate.toml" <<EOF
listen = ["127.0.0.1:$PROXY_PORT"]
workers = 1

[log]
format = "json"
destination = "$DIR/cleargate.log"

[upstream.origin]
endpoints = ["127.0.0.1:$ORIGIN_PORT"]
max_idle_per_endpoint = 64

[[route]]
path = "/"
upstream = "origin"
EOF

command_of() { # NAME
  case $1 in
    nginx) echo nginx -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf" ;;
    haproxy) echo haproxy -db -f "$DIR/haproxy.cfg" ;;
    cleargate) echo "$BIN" serve -c "$DIR/cleargate.toml" ;;
  esac
}

wait_port() { # PORT
  for _ in $(seq 1 600); do
    if curl -s -o /dev/null --max-time 5 "http://127.0.0.1:$1/hello" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing answered on port $1" >&2
  exit 1
}
stop() { # PID
  kill -INT "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$1" 2>/dev/null || true
}
load() { # COUNT PATH
  h2load --h1 -n "$1" -c "$CONNS" -t 1 "http://127.0.0.1:$PROXY_PORT/$2" >"$DIR/h2load.txt"
  if ! grep -q "succeeded, 0 failed, 0 errored" "$DIR/h2load.txt" ||
    ! grep -q "status codes: $1 2xx" "$DIR/h2load.txt"; then
    echo "load on /$2 did not get $1 answers of 200:" >&2
    cat "$DIR/h2load.txt" >&2
    exit 1
  fi
}

nginx -t -q -p "$DIR/" -e "$DIR/origin-error.log" -c "$DIR/origin.conf"
nginx -t -q -p "$DIR/" -e "$DIR/nginx-error.log" -c "$DIR/nginx.conf"
haproxy -c -q -f "$DIR/haproxy.cfg"
"$BIN" check -c "$DIR/cleargate.toml" >/dev/null
nginx -p "$DIR/" -e "$DIR/origin-error.log" -c "$DIR/origin.conf" >"$DIR/origin.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ORIGIN_PORT/hello" && break; sleep 0.05; done

RESULTS=$DIR/results.tsv
: >"$RESULTS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for path in hello 16k; do
  for name in $PROXIES; do
    # shellcheck disable=SC2046
    valgrind --tool=callgrind --callgrind-out-file="$DIR/callgrind.$name.$path.%p" \
      $(command_of "$name") >"$DIR/$name.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$PROXY_PORT"
    load $((N / 10)) "$path"
    callgrind_control -z "$pid" >/dev/null 2>&1
    load "$N" "$path"
    callgrind_control -d "$pid" >/dev/null 2>&1
    stop "$pid"
    # The dump made by -d is the part after the zeroing (its name ends in .1); its "summary:"
    # line holds the instructions of every thread.
    instr=$(awk '/^summary:/ { n += $2 } END { print n + 0 }' "$DIR/callgrind.$name.$path.$pid.1")
    if [ -n "$KEEP" ]; then mkdir -p "$KEEP" && cp "$DIR/callgrind.$name.$path.$pid.1" "$KEEP/"; fi
    rm -f "$DIR"/callgrind."$name"."$path".*

    # shellcheck disable=SC2046
    $(command_of "$name") >"$DIR/$name.out" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_port "$PROXY_PORT"
    load $((N / 10)) "$path"
    perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$DIR/perf.txt" &
    perf_pid=$!
    sleep 0.2
    load "$N" "$path"
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    stop "$pid"
    syscalls=$(awk -F, '/raw_syscalls:sys_enter/ { print $1 }' "$DIR/perf.txt")
    switches=$(awk -F, '/context-switches/ { print $1 }' "$DIR/perf.txt")
    printf '%s\t%s\t%s\t%s\t%s\n' "$path" "$name" "$instr" "$syscalls" "$switches" >>"$RESULTS"
    echo "measured $name /$path" >&2
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "versions: $(nginx -v 2>&1 | sed 's/^nginx version: //'), HAProxy $(haproxy -v | awk 'NR==1 {print $3}'), $(valgrind --version), $("$BIN" --version 2>/dev/null || echo cleargate)"
echo "h2load --h1 -n $N -c $CONNS, after $((N / 10)) warm-up requests; one worker each; access logs to files"
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER (the counts do not depend on it)"
echo
python3 - "$RESULTS" "$N" <<'PY'
import sys
n = int(sys.argv[2])
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
header = ["response", "proxy", "instructions per request", "ratio to nginx",
          "system calls per request", "context switches per request"]
table = []
for path, name, instr, sc, cs in rows:
    ref = next((r for r in rows if r[0] == path and r[1] == "nginx"), None)
    ratio = f"{int(instr) / int(ref[2]):.2f}x" if ref else "-"
    table.append(["/" + path, name, f"{int(instr) / n:,.0f}", ratio,
                  f"{int(sc) / n:.2f}", f"{int(cs) / n:.3f}"])
widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
print(fmt(header))
for r in table:
    print(fmt(r))
print()
print("| " + " | ".join(header) + " |")
print("| " + " | ".join("---" for _ in header) + " |")
for r in table:
    print("| " + " | ".join(r) + " |")
PY
