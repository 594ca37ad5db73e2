#!/usr/bin/env bash
# `cleargate doctor` against real nginx and HAProxy in front of the lab's faults.
#
# Starts the lab, nginx and HAProxy (from the OS packages, run as the current user, every file in
# a temporary directory, loopback ports only), one location/backend per fault. For each gateway and
# fault it runs `cleargate doctor --json` twice, without and with `--upstream`, and checks:
#   - server: the doctor recognises the gateway (nginx by its Server header whenever a response
#     head arrives; HAProxy, which sends no Server header, when it made the error itself);
#   - status: the doctor reports the status curl sees;
#   - cause: with --upstream, the doctor names the cause the lab fault provokes.
# The accuracy table is written into docs/doctor.md between the interop markers. Exits non-zero
# when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/cleargate
DOC=docs/doctor.md
[ -x "$BIN" ] || { echo "doctor.sh: build first: cargo build --release" >&2; exit 1; }
for tool in nginx haproxy curl; do
  command -v "$tool" >/dev/null || { echo "doctor.sh: $tool is not installed (apt-get install $tool)" >&2; exit 1; }
done

TMP=$(mktemp -d)
PIDS=()
cleanup() {
  for f in "$TMP/nginx.pid" "$TMP/haproxy.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

FAULTS=(ok refused unaccepted reset close midheader hang garbage bigheader truncated badchunk stall status)
# What a gateway should report for each fault (the lab's table); "-" when the upstream answers.
declare -A EXPECT=(
  [ok]=- [refused]=refused [unaccepted]=timeout [reset]=reset [close]=closed [midheader]=closed
  [hang]=timeout [garbage]=invalid_response [bigheader]=response_too_large [truncated]=closed
  [badchunk]=invalid_response [stall]=timeout [status]=-
)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A run of free ports: the lab's faults, then nginx, then HAProxy.
NEED=$((${#FAULTS[@]} + 2))
for _ in $(seq 50); do
  BASE=$((20000 + RANDOM % 30000))
  ok=1
  for i in $(seq 0 $((NEED - 1))); do port_free $((BASE + i)) || { ok=0; break; }; done
  [ "$ok" = 1 ] && break
done
[ "${ok:-0}" = 1 ] || { echo "doctor.sh: no free ports" >&2; exit 1; }
NGINX_PORT=$((BASE + ${#FAULTS[@]}))
HAPROXY_PORT=$((NGINX_PORT + 1))
declare -A PORT
for i in "${!FAULTS[@]}"; do PORT[${FAULTS[$i]}]=$((BASE + i)); done

IFS=, ; FAULT_LIST="${FAULTS[*]}"; unset IFS
"$BIN" lab --faults "$FAULT_LIST" --port-base "$BASE" >"$TMP/lab.log" 2>&1 &
PIDS+=($!)

# nginx: one exact location per fault.
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user $(id -un);"
{
  echo "$USER_LINE"
  echo "worker_processes 1; pid $TMP/nginx.pid; error_log $TMP/nginx-error.log warn;"
  echo "events { worker_connections 256; }"
  echo "http {"
  echo "  access_log off;"
  for d in client_body proxy fastcgi uwsgi scgi; do echo "  ${d}_temp_path $TMP/nginx-$d;"; done
  echo "  proxy_connect_timeout 1s; proxy_read_timeout 1s; proxy_send_timeout 1s;"
  echo "  server {"
  echo "    listen 127.0.0.1:$NGINX_PORT;"
  for f in "${FAULTS[@]}"; do echo "    location = /f/$f { proxy_pass http://127.0.0.1:${PORT[$f]}; }"; done
  echo "  }"
  echo "}"
} >"$TMP/nginx.conf"
nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"

# HAProxy: one backend per fault, chosen by path.
{
  echo "global"
  echo "  log stderr format short local0 emerg"
  echo "defaults"
  echo "  mode http"
  echo "  retries 1"
  echo "  timeout connect 1s"
  echo "  timeout client 10s"
  echo "  timeout server 1s"
  echo "frontend fe"
  echo "  bind 127.0.0.1:$HAPROXY_PORT"
  for f in "${FAULTS[@]}"; do echo "  use_backend be_$f if { path /f/$f }"; done
  for f in "${FAULTS[@]}"; do
    echo "backend be_$f"
    echo "  server s1 127.0.0.1:${PORT[$f]}"
  done
} >"$TMP/haproxy.cfg"
haproxy -D -f "$TMP/haproxy.cfg" -p "$TMP/haproxy.pid"

# Wait (bounded) until all three listen.
for _ in $(seq 100); do
  if ! port_free "${PORT[ok]}" && ! port_free "$NGINX_PORT" && ! port_free "$HAPROXY_PORT"; then break; fi
  sleep 0.1
done

# Reads one field of the doctor's JSON verdict (the first object, one key per line).
verdict() { sed -n '/"verdict"/,/}/p' "$1" | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" | head -1; }

ROWS=()
FAILS=0
TOTAL=0
for gw in nginx haproxy; do
  if [ "$gw" = nginx ]; then GPORT=$NGINX_PORT; NAME=nginx; else GPORT=$HAPROXY_PORT; NAME=HAProxy; fi
  for f in "${FAULTS[@]}"; do
    url="http://127.0.0.1:$GPORT/f/$f"
    want_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
    "$BIN" doctor "$url" --json --timeout 3s --repeat 0 >"$TMP/plain.json" 2>/dev/null || true
    "$BIN" doctor "$url" --json --timeout 3s --repeat 0 --upstream "127.0.0.1:${PORT[$f]}" >"$TMP/up.json" 2>/dev/null || true
    status=$(verdict "$TMP/plain.json" status)
    guess=$(verdict "$TMP/plain.json" cause)
    cause=$(verdict "$TMP/up.json" cause)
    made_by=$(grep -m1 -o '"by": "[^"]*"' "$TMP/plain.json" | sed 's/.*: "//; s/"//' || true)
    identified=no
    grep -q "\"name\": \"$NAME\"" "$TMP/plain.json" && identified=yes
    # Which checks apply: HAProxy can only be recognised by the pages it makes itself.
    gateway_made=no
    [ "$made_by" = "$NAME" ] && gateway_made=yes
    want_cause=${EXPECT[$f]}
    [ "$want_cause" = - ] && want_cause=null
    [ "$want_status" = 000 ] && want_status=null

    ok_server=yes
    if [ "$status" = null ]; then
      # No response head reached the client (nginx relays a non-HTTP answer as HTTP/0.9, or
      # drops the connection): there is nothing to recognise a server by.
      ok_server=n/a
    elif [ "$gw" = nginx ] || [ "$gateway_made" = yes ]; then
      [ "$identified" = yes ] || ok_server=NO
    else
      ok_server=n/a
    fi
    ok_status=yes; [ "$status" = "$want_status" ] || ok_status=NO
    ok_cause=yes; [ "$cause" = "$want_cause" ] || ok_cause=NO
    for c in "$ok_server" "$ok_status" "$ok_cause"; do
      [ "$c" = n/a ] && continue
      TOTAL=$((TOTAL + 1))
      [ "$c" = NO ] && FAILS=$((FAILS + 1))
    done
    ROWS+=("| $NAME | \`$f\` | $want_status | $status ($ok_status) | ${made_by:--} | $identified ($ok_server) | ${guess} | ${cause} ($ok_cause) |")
    echo "$NAME $f: status $status/$want_status server=$identified made_by=${made_by:--} guess=$guess cause=$cause/$want_cause"
  done
done

NGINX_V=$(nginx -v 2>&1 | sed 's/.*version: //')
HAPROXY_V=$(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')
{
  echo "<!-- interop:begin (written by interop/doctor.sh; do not edit by hand) -->"
  echo "Measured with $NGINX_V and HAProxy $HAPROXY_V in front of the lab; $((TOTAL - FAILS)) of $TOTAL checks pass."
  echo
  echo "| gateway | lab fault | curl sees | doctor's status | error made by | gateway recognised | cause, URL alone | cause with \`--upstream\` |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${ROWS[@]}"
  echo "<!-- interop:end -->"
} >"$TMP/table.md"

if [ -f "$DOC" ] && grep -q "<!-- interop:begin" "$DOC"; then
  awk -v table="$TMP/table.md" '
    /<!-- interop:begin/ { while ((getline line < table) > 0) print line; skip = 1; next }
    /<!-- interop:end -->/ { skip = 0; next }
    !skip { print }
  ' "$DOC" >"$TMP/doc.md"
  cp "$TMP/doc.md" "$DOC"
else
  cat "$TMP/table.md"
fi

echo "doctor interop: $((TOTAL - FAILS)) of $TOTAL checks pass"
[ "$FAILS" = 0 ]
