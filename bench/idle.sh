#!/usr/bin/env bash
# Memory per idle keep-alive client connection: opens N client connections (default 10,000) to a
# cleargate with one worker, sends one request on each and reads its answer, and reports the
# growth of the gateway's resident memory divided by N.
#
#   bench/idle.sh            N=2000 bench/idle.sh
#
# The origin is nginx with keep-alive when it is installed (python's http.server otherwise) on a
# free loopback port; everything stops at exit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
BIN=${BIN:-target/release/cleargate}
[ -x "$BIN" ] || cargo build --release
DIR=$(mktemp -d "${TMPDIR:-/tmp}/cleargate-idle.XXXXXX")
PIDS=()
cleanup() { kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
# shellcheck source=bench/common.sh
. bench/common.sh
read -r ORIGIN GW < <(free_ports 2)
mkdir -p "$DIR/www" && echo hello >"$DIR/www/hello"
PATH=$PATH:/usr/sbin:/sbin
if command -v nginx >/dev/null 2>&1; then
  # A keep-alive origin, as in production: the gateway's upstream connections are pooled.
  ORIGIN_KIND="nginx (keep-alive)"
  mkdir -p "$DIR/origin-tmp"
  cat >"$DIR/origin.conf" <<EOF
$(nginx_common origin)
worker_processes 1;
http {
$(nginx_http_common origin)
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN;
        root $DIR/www;
    }
}
EOF
  nginx -p "$DIR/" -e "$DIR/origin-error.log" -c "$DIR/origin.conf" >/dev/null 2>&1 &
else
  # python's http.server answers HTTP/1.0 and closes: a new upstream connection per request.
  ORIGIN_KIND="python http.server (a new upstream connection per request)"
  python3 -m http.server --bind 127.0.0.1 --directory "$DIR/www" "$ORIGIN" >/dev/null 2>&1 &
fi
PIDS+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$ORIGIN/hello" && break; sleep 0.05; done
cat >"$DIR/gw.toml" <<CONF
listen = ["127.0.0.1:$GW"]
workers = 1
[log]
destination = "$DIR/gw.log"
[upstream.origin]
endpoints = ["127.0.0.1:$ORIGIN"]
[[route]]
path = "/"
upstream = "origin"
CONF
"$BIN" serve -c "$DIR/gw.toml" >/dev/null 2>&1 &
PIDS+=($!)
GW_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/hello" && break; sleep 0.05; done
timeout 300 python3 - "$GW_PID" "$GW" "$N" "$ORIGIN_KIND" <<'PY'
import socket, sys
pid, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
req = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
first = socket.create_connection(("127.0.0.1", port))
first.sendall(req)
first.recv(4096)
base = rss()
socks = []
# One request at a time, so what is measured is what idle connections hold, not the peak of
# many requests in flight at once.
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    s.recv(4096)
    socks.append(s)
after = rss()
print(f"origin: {sys.argv[4]}")
print(f"{n} idle keep-alive connections: RSS {base} KiB -> {after} KiB, {(after - base) / n:.1f} KiB each")
PY
