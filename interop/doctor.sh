#!/usr/bin/env bash
# `cleargate doctor` against real nginx, real HAProxy and cleargate itself in front of the lab.
#
# Starts the lab, nginx and HAProxy (from the OS packages, run as the current user, every file in
# a temporary directory, loopback ports only) and `cleargate serve`, one location/backend/route
# per case. Each gateway writes its log to a file. For each gateway and case it runs
# `cleargate doctor --json --error-log LOG` twice, without and with `--upstream`, and checks:
#   - server: the doctor recognises the gateway (nginx and cleargate whenever a response head
#     arrives; HAProxy, which sends no Server header, when it made the error itself);
#   - status: the doctor reports the status curl sees;
#   - cause and phase: with --upstream, the doctor names the cause and phase the case provokes;
#   - exit: the doctor exits 1 whenever the case is a failure, even one the gateway covered for.
# Besides one case per lab fault there are the classes where evidence must outweigh the error
# page: response heads over the gateway's limit (20 000 bytes: over nginx's and HAProxy's, under
# cleargate's; 80 000 bytes: over all three), a gateway that speaks TLS to a plain-HTTP upstream
# (nginx and HAProxy; cleargate does not speak TLS to upstreams), and an upstream resetting every
# third request, which cleargate's retries hide from the client.
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
  [ -s "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT

FAULTS=(ok refused unaccepted reset close midheader hang garbage bigheader truncated badchunk stall status flaky)
# What each lab fault provokes behind a gateway, as cause@phase; "-" when the upstream answers.
declare -A PROVOKES=(
  [ok]=- [refused]=refused@connect [unaccepted]=timeout@connect [reset]=reset@read_head
  [close]=closed@read_head [midheader]=closed@read_head [hang]=timeout@read_head
  [garbage]=invalid_response@read_head [bigheader]=response_too_large@read_head
  [truncated]=closed@read_body [badchunk]=invalid_response@read_body [stall]=timeout@read_body
  [status]=- [flaky]=reset@read_head
)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# A run of free ports: the lab's faults, then nginx, HAProxy and cleargate.
NEED=$((${#FAULTS[@]} + 3))
for _ in $(seq 50); do
  BASE=$((20000 + RANDOM % 30000))
  ok=1
  for i in $(seq 0 $((NEED - 1))); do port_free $((BASE + i)) || { ok=0; break; }; done
  [ "$ok" = 1 ] && break
done
[ "${ok:-0}" = 1 ] || { echo "doctor.sh: no free ports" >&2; exit 1; }
NGINX_PORT=$((BASE + ${#FAULTS[@]}))
HAPROXY_PORT=$((NGINX_PORT + 1))
CLEARGATE_PORT=$((NGINX_PORT + 2))
declare -A PORT
for i in "${!FAULTS[@]}"; do PORT[${FAULTS[$i]}]=$((BASE + i)); done

IFS=, ; FAULT_LIST="${FAULTS[*]}"; unset IFS
"$BIN" lab --faults "$FAULT_LIST" --port-base "$BASE" --flaky-every 3 >"$TMP/lab.log" 2>&1 &
PIDS+=($!)

# The cases: name, path on the gateway, the lab fault behind it, cause@phase expected with
# --upstream per gateway (nginx, HAProxy, cleargate; "-" for an answer, "n/a" where the case
# cannot be built), and extra doctor options.
CASES=()
for f in "${FAULTS[@]}"; do
  e=${PROVOKES[$f]}
  if [ "$f" = flaky ]; then
    CASES+=("$f|/f/$f|$f|$e|$e|$e|--repeat 4")
  else
    CASES+=("$f|/f/$f|$f|$e|$e|$e|--repeat 0")
  fi
done
CASES+=("bigheader 20 KB|/f/bigheader?bytes=20000|bigheader|response_too_large@read_head|response_too_large@read_head|-|--repeat 0")
CASES+=("bigheader 80 KB|/f/bigheader?bytes=80000|bigheader|response_too_large@read_head|response_too_large@read_head|response_too_large@read_head|--repeat 0")
CASES+=("TLS to plain HTTP|/tls/ok|ok|tls@tls_handshake|tls@tls_handshake|n/a|--repeat 0")

# nginx: one exact location per fault, and one that speaks TLS to the plain `ok`.
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
  echo "    location = /tls/ok { proxy_pass https://127.0.0.1:${PORT[ok]}; }"
  echo "  }"
  echo "}"
} >"$TMP/nginx.conf"
nginx -p "$TMP" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log"

# HAProxy: one backend per fault, chosen by path; its log (httplog) goes to a file.
{
  echo "global"
  echo "  log stdout format raw local0 info"
  echo "defaults"
  echo "  mode http"
  echo "  log global"
  echo "  option httplog"
  echo "  retries 1"
  echo "  timeout connect 1s"
  echo "  timeout client 10s"
  echo "  timeout server 1s"
  echo "frontend fe"
  echo "  bind 127.0.0.1:$HAPROXY_PORT"
  for f in "${FAULTS[@]}"; do echo "  use_backend be_$f if { path /f/$f }"; done
  echo "  use_backend be_tls_ok if { path /tls/ok }"
  for f in "${FAULTS[@]}"; do
    echo "backend be_$f"
    echo "  server s1 127.0.0.1:${PORT[$f]}"
  done
  echo "backend be_tls_ok"
  echo "  server s1 127.0.0.1:${PORT[ok]} ssl verify none"
} >"$TMP/haproxy.cfg"
haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
PIDS+=($!)

# cleargate: one upstream and route per fault, its JSON log in a file.
{
  echo "listen = [\"127.0.0.1:$CLEARGATE_PORT\"]"
  echo "[log]"
  echo "destination = \"$TMP/cleargate.log\""
  for f in "${FAULTS[@]}"; do
    echo "[upstream.$f]"
    echo "endpoints = [\"127.0.0.1:${PORT[$f]}\"]"
    echo "connect_timeout = \"1s\""
    echo "response_timeout = \"1s\""
    echo "body_timeout = \"1s\""
    echo "[[route]]"
    echo "path = \"/f/$f\""
    echo "upstream = \"$f\""
  done
} >"$TMP/cleargate.toml"
"$BIN" serve -c "$TMP/cleargate.toml" >"$TMP/cleargate.out" 2>&1 &
PIDS+=($!)

# Wait (bounded) until all of them listen.
for _ in $(seq 100); do
  if ! port_free "${PORT[ok]}" && ! port_free "$NGINX_PORT" && ! port_free "$HAPROXY_PORT" && ! port_free "$CLEARGATE_PORT"; then break; fi
  sleep 0.1
done

# Reads one field of the doctor's JSON verdict (the first object, one key per line).
verdict() { sed -n '/"verdict"/,/}/p' "$1" | sed -n "s/^ *\"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}\$/\1/p" | head -1; }

ROWS=()
FAILS=0
TOTAL=0
check() { # check NAME yes|NO|n/a
  [ "$2" = n/a ] && return 0
  TOTAL=$((TOTAL + 1))
  if [ "$2" = NO ]; then FAILS=$((FAILS + 1)); echo "  FAILED: $1"; fi
}
for gw in nginx haproxy cleargate; do
  case $gw in
    nginx) GPORT=$NGINX_PORT; NAME=nginx; LOG=$TMP/nginx-error.log; col=4 ;;
    haproxy) GPORT=$HAPROXY_PORT; NAME=HAProxy; LOG=$TMP/haproxy.log; col=5 ;;
    cleargate) GPORT=$CLEARGATE_PORT; NAME=cleargate; LOG=$TMP/cleargate.log; col=6 ;;
  esac
  for c in "${CASES[@]}"; do
    IFS='|' read -r label path fault e_nginx e_haproxy e_cleargate extra <<<"$c"
    case $gw in nginx) want=$e_nginx ;; haproxy) want=$e_haproxy ;; cleargate) want=$e_cleargate ;; esac
    [ "$want" = n/a ] && continue
    url="http://127.0.0.1:$GPORT$path"
    want_status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
    # shellcheck disable=SC2086
    "$BIN" doctor "$url" --json --timeout 3s $extra --error-log "$LOG" >"$TMP/plain.json" 2>/dev/null || true
    # shellcheck disable=SC2086
    set +e
    "$BIN" doctor "$url" --json --timeout 3s $extra --error-log "$LOG" --upstream "127.0.0.1:${PORT[$fault]}" >"$TMP/up.json" 2>/dev/null
    code=$?
    set -e
    status=$(verdict "$TMP/plain.json" status)
    guess=$(verdict "$TMP/plain.json" cause)
    cause=$(verdict "$TMP/up.json" cause)
    phase=$(verdict "$TMP/up.json" phase)
    absorbed=$(verdict "$TMP/up.json" absorbed)
    made_by=$(grep -m1 -o '"by": "[^"]*"' "$TMP/plain.json" | sed 's/.*: "//; s/"//' || true)
    identified=no
    grep -q "\"name\": \"$NAME\"" "$TMP/plain.json" && identified=yes
    gateway_made=no
    [ "$made_by" = "$NAME" ] && gateway_made=yes
    [ "$want_status" = 000 ] && want_status=null
    if [ "$want" = - ]; then
      # The upstream answers: healthy, unless it answers an error status itself.
      want_cause=null; want_phase=null; want_code=0
      [ "$want_status" != null ] && [ "$want_status" -ge 500 ] && want_code=1
    else want_cause=${want%@*}; want_phase=${want#*@}; want_code=1; fi

    ok_server=yes
    if [ "$status" = null ]; then
      # No response head reached the client (nginx relays a non-HTTP answer as HTTP/0.9, or
      # drops the connection): there is nothing to recognise a server by.
      ok_server=n/a
    elif [ "$gw" != haproxy ] || [ "$gateway_made" = yes ]; then
      [ "$identified" = yes ] || ok_server=NO
    else
      ok_server=n/a
    fi
    ok_status=yes; [ "$status" = "$want_status" ] || ok_status=NO
    # Every third request to `flaky` is reset, counted across every gateway: whether curl's
    # request or the doctor's is the one depends on the count.
    [ "$fault" = flaky ] && [ "$ok_status" = NO ] && ok_status=n/a
    ok_cause=yes; [ "$cause" = "$want_cause" ] && [ "$phase" = "$want_phase" ] || ok_cause=NO
    # HAProxy logs a reset that lands on a connection it is reusing like a close (the same
    # termination state), so its `flaky` case reads as either, depending on timing.
    [ "$fault" = flaky ] && [ "$gw" = haproxy ] && [ "$cause@$phase" = closed@read_head ] && ok_cause=yes
    ok_code=yes; [ "$code" = "$want_code" ] || ok_code=NO
    check "$NAME $label server" "$ok_server"
    check "$NAME $label status" "$ok_status"
    check "$NAME $label cause" "$ok_cause"
    check "$NAME $label exit" "$ok_code"
    shown="$cause@$phase"; [ "$cause" = null ] && shown=null
    wanted="$want_cause@$want_phase"; [ "$want_cause" = null ] && wanted=null
    note=""; [ "$absorbed" = true ] && note=" (covered for: clients did not see it)"
    ROWS+=("| $NAME | \`$label\` | $want_status | $status ($ok_status) | ${made_by:--} | $identified ($ok_server) | ${guess} | ${shown}$note ($ok_cause) | $code ($ok_code) |")
    echo "$NAME $label: status $status/$want_status server=$identified made_by=${made_by:--} guess=$guess cause=$shown/$wanted exit=$code/$want_code$note"
  done
done

NGINX_V=$(nginx -v 2>&1 | sed 's/.*version: //')
HAPROXY_V=$(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')
{
  echo "<!-- interop:begin (written by interop/doctor.sh; do not edit by hand) -->"
  echo "Measured with $NGINX_V, HAProxy $HAPROXY_V and cleargate in front of the lab, each gateway's log given with \`--error-log\`; $((TOTAL - FAILS)) of $TOTAL checks pass."
  echo
  echo "| gateway | case | curl sees | doctor's status | error made by | gateway recognised | cause, URL and log alone | cause and phase with \`--upstream\` | exit code |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
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
