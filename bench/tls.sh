#!/usr/bin/env bash
# TLS cost, cleargate beside nginx in one run, one worker each, the same ECDSA P-256 certificate,
# in front of the same nginx origin (/hello):
#
# - full handshakes per second: `openssl s_time -new` (a new session every connection, one
#   client process), for SECONDS seconds;
# - requests per second over kept-alive TLS: `h2load --h1` (HTTP/1.1) and `h2load` (h2 over TLS),
#   64 connections, N requests, with the proxy's CPU per request from /proc.
#
#   bench/tls.sh                (about 1 minute)
#   N=50000 SECONDS_EACH=5 bench/tls.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
N=${N:-40000}
SECONDS_EACH=${SECONDS_EACH:-5}
BIN=target/release/cleargate
PATH=$PATH:/usr/sbin:/sbin
for tool in nginx h2load openssl python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install -y nginx nghttp2-client openssl)" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build --release

DIR=$(mktemp -d "${TMPDIR:-/tmp}/cleargate-tls.XXXXXX")
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
# shellcheck source=bench/common.sh
. bench/common.sh
read -r ORIGIN NGINX CG_PLAIN CG_TLS <<<"$(free_ports 4)"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$DIR/site.key" -out "$DIR/site.pem" >/dev/null 2>&1

mkdir -p "$DIR/origin-tmp" "$DIR/nginx-tmp"
cat >"$DIR/origin.conf" <<EOF
$(nginx_common origin)
worker_processes 1;
http {
$(nginx_http_common origin)
    access_log off;
    server { listen 127.0.0.1:$ORIGIN; location /hello { return 200 "hello\n"; } }
}
EOF
cat >"$DIR/nginx.conf" <<EOF
$(nginx_common nginx)
worker_processes 1;
http {
$(nginx_http_common nginx)
    access_log $DIR/nginx-access.log;
    upstream o { server 127.0.0.1:$ORIGIN; keepalive 1024; }
    server {
        listen 127.0.0.1:$NGINX ssl http2;
        ssl_certificate $DIR/site.pem;
        ssl_certificate_key $DIR/site.key;
        ssl_session_cache shared:SSL:10m;
        location / { proxy_pass http://o; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
cat >"$DIR/cleargate.toml" <<EOF
listen = ["127.0.0.1:$CG_PLAIN"]
listen_tls = ["127.0.0.1:$CG_TLS"]
workers = 1
[log]
destination = "$DIR/cleargate-access.log"
[[certificate]]
cert = "$DIR/site.pem"
key = "$DIR/site.key"
[upstream.o]
endpoints = ["127.0.0.1:$ORIGIN"]
max_idle_per_endpoint = 1024
[[route]]
upstream = "o"
EOF
nginx -c "$DIR/origin.conf" -p "$DIR" & PIDS+=($!)
nginx -c "$DIR/nginx.conf" -p "$DIR" & NGINX_PID=$!; PIDS+=($NGINX_PID)
"$BIN" serve -c "$DIR/cleargate.toml" >"$DIR/cleargate.out" 2>&1 & CG_PID=$!; PIDS+=($CG_PID)
for port in $ORIGIN $NGINX $CG_TLS; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done
done
# nginx's worker is the child of its master.
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| proxy | full handshakes/s | h1 keep-alive req/s | CPU per request (h1) | h2 req/s | CPU per request (h2) |\n'
printf '| --- | --- | --- | --- | --- | --- |\n'
for target in nginx cleargate; do
  case $target in
    nginx) port=$NGINX pid=$NGINX_WORKER ;;
    cleargate) port=$CG_TLS pid=$CG_PID ;;
  esac
  url="https://127.0.0.1:$port/hello"
  hs=$(openssl s_time -connect "127.0.0.1:$port" -new -time "$SECONDS_EACH" 2>/dev/null |
    awk '/real seconds/ {printf "%.0f", $1/$4}' | head -1)
  h2load --h1 -n 2000 -c 64 "$url" >/dev/null 2>&1 || true
  before=$(cpu_ticks "$pid")
  h1=$(h2load --h1 -n "$N" -c 64 "$url" 2>/dev/null | awk '/^finished in/ {gsub(",",""); print $4}')
  after=$(cpu_ticks "$pid")
  h1cpu=$(python3 -c "print(f'{($after-$before)/$TICK/$N*1e6:.1f} µs')")
  before=$(cpu_ticks "$pid")
  h2=$(h2load -n "$N" -c 64 -m 10 "$url" 2>/dev/null | awk '/^finished in/ {gsub(",",""); print $4}')
  after=$(cpu_ticks "$pid")
  h2cpu=$(python3 -c "print(f'{($after-$before)/$TICK/$N*1e6:.1f} µs')")
  printf '| %s | %s | %s | %s | %s | %s |\n' "$target" "${hs:-?}" "$h1" "$h1cpu" "$h2" "$h2cpu"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
