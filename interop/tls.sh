#!/usr/bin/env bash
# TLS and WebSocket with real clients, cleargate and nginx side by side, both terminating TLS with
# the same two certificates in front of `cleargate lab`:
#
# - curl with --resolve: SNI picks the certificate (a.test, and *.b.test by wildcard); ALPN gives
#   HTTP/2 by default and HTTP/1.1 when asked; openssl s_client without SNI gets the first one;
# - a plain HTTP request sent to the TLS port;
# - Python's websockets: an echo of 300 messages through ws:// and wss://.
#
# - h2spec over TLS (ALPN h2), when an h2spec binary is found in $CONFORMANCE_SUITES/h2spec/ or on
#   PATH (see interop/conformance/README.md); without one, that row says so.
#
# Writes the table to docs/tls-interop.md. Needs nginx, curl, openssl and Python's websockets;
# .ci/run installs them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cleargate
[ -x "$BIN" ] || { echo "tls.sh: build first: cargo build --release" >&2; exit 1; }
PATH=$PATH:/usr/sbin:/sbin
for tool in nginx curl openssl; do
  command -v "$tool" >/dev/null || { echo "tls.sh: $tool is not installed" >&2; exit 1; }
done
PY=""
for p in python3 /usr/bin/python3; do
  if "$p" -c 'import websockets' 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "tls.sh: Python's websockets is not installed (apt-get install python3-websockets)" >&2; exit 1; }

D=$(mktemp -d /tmp/cleargate-tls.XXXXXX)
chmod 755 "$D"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$D/nginx.pid" ] && kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT

# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
BASE=$(free_base 20)
[ -n "$BASE" ] || { echo "tls.sh: no 20 free consecutive ports" >&2; exit 1; }
LAB_OK=$BASE LAB_WS=$((BASE + 1))
CG_PLAIN=$((BASE + 5)) CG_TLS=$((BASE + 6)) NG_PLAIN=$((BASE + 7)) NG_TLS=$((BASE + 8))

# A CA and two certificates.
cd "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=interop-ca \
  -keyout ca.key -out ca.pem >/dev/null 2>&1
for site in "a a.test,www.a.test" "b *.b.test"; do
  set -- $site
  sans=$(echo "$2" | sed 's/\([^,]*\)/DNS:\1/g')
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=${2%%,*}" \
    -keyout "$1.key" -out "$1.csr" >/dev/null 2>&1
  printf 'subjectAltName=%s\n' "$sans" >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile "$1.ext" -out "$1.pem" >/dev/null 2>&1
done
cd "$ROOT"

"$BIN" lab --faults ok,websocket --port-base "$BASE" >"$D/lab.out" 2>&1 &
PIDS+=($!)

cat >"$D/cleargate.toml" <<EOF
listen = ["127.0.0.1:$CG_PLAIN"]
listen_tls = ["127.0.0.1:$CG_TLS"]
workers = 1
[log]
destination = "$D/cleargate.log"
[[certificate]]
cert = "$D/a.pem"
key = "$D/a.key"
[[certificate]]
cert = "$D/b.pem"
key = "$D/b.key"
[upstream.ok]
endpoints = ["127.0.0.1:$LAB_OK"]
[upstream.ws]
endpoints = ["127.0.0.1:$LAB_WS"]
[[route]]
path = "/chat"
upstream = "ws"
[[route]]
upstream = "ok"
EOF
"$BIN" serve -c "$D/cleargate.toml" >"$D/cleargate.out" 2>&1 &
PIDS+=($!)

cat >"$D/nginx.conf" <<EOF
worker_processes 1;
pid $D/nginx.pid;
error_log $D/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$NG_PLAIN;
    listen 127.0.0.1:$NG_TLS ssl http2;
    ssl_certificate $D/a.pem;
    ssl_certificate_key $D/a.key;
    location / { proxy_pass http://127.0.0.1:$LAB_OK; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /chat {
      proxy_pass http://127.0.0.1:$LAB_WS;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
    }
  }
  server {
    listen 127.0.0.1:$NG_TLS ssl http2;
    server_name *.b.test;
    ssl_certificate $D/b.pem;
    ssl_certificate_key $D/b.key;
    location / { proxy_pass http://127.0.0.1:$LAB_OK; }
  }
}
EOF
nginx -c "$D/nginx.conf" -p "$D" 2>>"$D/nginx-error.log"

for port in $LAB_OK $CG_TLS $NG_TLS; do
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
done

FAILED=0
ROWS=()
check() { # name, cleargate result, nginx result, expected (a regex)
  local c=PASS n=PASS
  [[ "$2" =~ $4 ]] || { c="FAIL ($2)"; FAILED=1; }
  [[ "$3" =~ $4 ]] || n="FAIL ($3)"
  ROWS+=("| $1 | $c | $n |")
  echo "$1: cleargate $c, nginx $n"
}
curl_get() { # port, name, extra curl args...
  local port=$1 name=$2; shift 2
  curl -s -o /dev/null --max-time 5 --cacert "$D/ca.pem" --resolve "$name:$port:127.0.0.1" \
    -w '%{http_version} %{http_code}' "$@" "https://$name:$port/" || true
}
subject() { # port, servername or -noservername
  local args=(-servername "$2")
  [ "$2" = "-" ] && args=(-noservername)
  openssl s_client -connect "127.0.0.1:$1" "${args[@]}" </dev/null 2>/dev/null |
    openssl x509 -noout -subject 2>/dev/null | sed 's/.*CN *= *//' || true
}

check "curl --resolve a.test: ALPN h2, 200" "$(curl_get $CG_TLS a.test)" "$(curl_get $NG_TLS a.test)" '^2 200$'
check "curl --resolve a.test --http1.1: 200" "$(curl_get $CG_TLS a.test --http1.1)" "$(curl_get $NG_TLS a.test --http1.1)" '^1\.1 200$'
check "curl --resolve shop.b.test (wildcard): 200" "$(curl_get $CG_TLS shop.b.test)" "$(curl_get $NG_TLS shop.b.test)" '^2 200$'
check "SNI shop.b.test gets *.b.test" "$(subject $CG_TLS shop.b.test)" "$(subject $NG_TLS shop.b.test)" '^\*\.b\.test$'
check "no SNI gets the first certificate" "$(subject $CG_TLS -)" "$(subject $NG_TLS -)" '^a\.test$'
plain_cg=$(curl -s --max-time 5 "http://127.0.0.1:$CG_TLS/" -w ' %{http_code}' || true)
plain_ng=$(curl -s --max-time 5 "http://127.0.0.1:$NG_TLS/" -w ' %{http_code}' || true)
check "plain HTTP to the TLS port: 400" "$(echo "$plain_cg" | tail -c 4)" "$(echo "$plain_ng" | tail -c 4)" '400'

ws_echo() { # uri, port, server_hostname (empty for ws://)
  "$PY" - "$1" "$2" "$3" "$D/ca.pem" <<'PY'
import asyncio, socket, ssl, sys
import websockets

uri, port, name, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]

async def main():
    sock = socket.create_connection(("127.0.0.1", port))
    kw = {"sock": sock, "max_size": 2**20}
    if name:
        ctx = ssl.create_default_context(cafile=ca)
        kw.update(ssl=ctx, server_hostname=name)
    async with websockets.connect(uri, **kw) as ws:
        for i in range(300):
            msg = ("m%d-" % i) * (1 + i % 50)
            await ws.send(msg)
            if await ws.recv() != msg:
                print("mismatch at %d" % i)
                return
        data = bytes(range(256)) * 300
        await ws.send(data)
        if await ws.recv() != data:
            print("binary mismatch")
            return
    print("300 echoed")

try:
    asyncio.run(asyncio.wait_for(main(), 20))
except Exception as e:
    print("error: %r" % e)
PY
}
check "websockets: 300 messages over ws://" \
  "$(ws_echo "ws://a.test:$CG_PLAIN/chat" $CG_PLAIN "")" "$(ws_echo "ws://a.test:$NG_PLAIN/chat" $NG_PLAIN "")" '^300 echoed$'
check "websockets: 300 messages over wss://" \
  "$(ws_echo "wss://a.test:$CG_TLS/chat" $CG_TLS a.test)" "$(ws_echo "wss://a.test:$NG_TLS/chat" $NG_TLS a.test)" '^300 echoed$'

H2SPEC=""
if [ -n "${CONFORMANCE_SUITES:-}" ] && [ -x "$CONFORMANCE_SUITES/h2spec/h2spec" ]; then
  H2SPEC=$CONFORMANCE_SUITES/h2spec/h2spec
elif command -v h2spec >/dev/null; then
  H2SPEC=$(command -v h2spec)
fi
h2spec_tls() { # port: "passed/total"
  { timeout 600 "$H2SPEC" -t -k -h 127.0.0.1 -p "$1" -o 2 2>&1 || true; } |
    awk '/tests, .* passed/ {print $3 "/" $1}' | tail -1
}
if [ -n "$H2SPEC" ]; then
  cg=$(h2spec_tls $CG_TLS) ng=$(h2spec_tls $NG_TLS)
  ROWS+=("| h2spec over TLS, passed | $cg | $ng |")
  echo "h2spec over TLS: cleargate $cg, nginx $ng"
  [ "${cg%%/*}" = "${cg##*/}" ] || FAILED=1
else
  echo "tls.sh: no h2spec binary (CONFORMANCE_SUITES/h2spec/h2spec or PATH): the h2spec row is not run"
  ROWS+=("| h2spec over TLS | not run: no h2spec binary | not run |")
fi

{
  echo "# TLS and WebSocket with real clients"
  echo
  echo "Written by \`interop/tls.sh\` ($(date -u +%Y-%m-%d)): cleargate and nginx $(nginx -v 2>&1 | sed 's/.*nginx\///') terminate TLS"
  echo "with the same two certificates (a.test, *.b.test) in front of \`cleargate lab\`; curl"
  echo "$(curl --version | head -1 | cut -d' ' -f2), OpenSSL's s_client and Python websockets $("$PY" -c 'import websockets; print(websockets.__version__)') are the clients."
  echo
  echo "| check | cleargate | nginx |"
  echo "| --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
} >"$ROOT/docs/tls-interop.md"

if [ "$FAILED" = 1 ]; then
  echo "tls.sh: cleargate failed a check" >&2
  tail -20 "$D/cleargate.log" >&2 || true
  exit 1
fi
echo "tls.sh: every check passed"
