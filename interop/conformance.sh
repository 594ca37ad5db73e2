#!/usr/bin/env bash
# Public HTTP conformance and security suites against cleargate, nginx and HAProxy, side by side.
#
#   CONFORMANCE_SUITES=/work/suites bash interop/conformance.sh
#
# The suites are not in this repository: CONFORMANCE_SUITES names a folder holding checkouts of
# them (interop/conformance/README.md says how to lay it out). Each missing suite is named in one
# line and skipped; with none present (as in CI) the script says so in one line and exits 0,
# leaving docs/conformance.md as it is.
#
#   httpwookiee/            HTTPWookiee: HTTP/1.1 parsing and smuggling tests, client mode and
#                           reverse-proxy mode (its own backend thread behind the gateway)
#   http-desync-guardian/   the request corpus of http-desync-guardian (tests/*.yaml), replayed
#                           by interop/conformance/desync.py
#   h2spec/h2spec           an h2spec binary (or h2spec on PATH): HTTP/2 over h2c prior knowledge
#   smuggler/               smuggler: CL.TE / TE.CL desync probes
#   REDbot                  the `redbot` command (PyPI package redbot) on the origin's page
#
# Python: CONFORMANCE_PYTHON, else $CONFORMANCE_SUITES/venv/bin/python3 when it exists, else
# python3; HTTPWookiee needs termcolor and six, the corpus runner PyYAML, REDbot its own package.
#
# Servers: cleargate (target/release/cleargate, when built; its column stays empty otherwise),
# nginx and HAProxy from the OS packages, run as the current user with every file in a temporary
# directory, on free loopback ports, each in front of the same origin (interop/conformance/
# origin.py) and, under /proxy, of HTTPWookiee's backend. Each suite run is bounded by `timeout`.
# CONFORMANCE_ONLY=desync,h2spec runs some suites only; KEEP=1 keeps the temporary directory.
# Writes docs/conformance.md. Exits 0 unless a server does not start; with CONFORMANCE_STRICT=1
# also non-zero when cleargate fails more tests of a suite than both nginx and HAProxy.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cleargate
DOC=$ROOT/docs/conformance.md
HERE=$ROOT/interop/conformance
SUITES=${CONFORMANCE_SUITES:-}
ONLY=${CONFORMANCE_ONLY:-}

if [ -z "$SUITES" ] || [ ! -d "$SUITES" ]; then
  echo "conformance.sh: no suites (CONFORMANCE_SUITES=${SUITES:-unset}); see interop/conformance/README.md; skipped"
  exit 0
fi
SUITES=$(cd "$SUITES" && pwd)
PY=${CONFORMANCE_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$SUITES/venv/bin/python3" ]; then PY=$SUITES/venv/bin/python3; else PY=$(command -v python3); fi
fi
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
has_module() { "$PY" -c "import $1" 2>/dev/null; }

# --- which suites are here ------------------------------------------------------------------
RUN=()
MISSING=()
note_missing() { MISSING+=("conformance.sh: $1: $2; skipped"); }
if wanted httpwookiee; then
  if [ ! -f "$SUITES/httpwookiee/httpwookiee.py" ]; then note_missing httpwookiee "no $SUITES/httpwookiee/httpwookiee.py"
  elif ! has_module termcolor || ! has_module six; then note_missing httpwookiee "$PY lacks termcolor or six"
  else RUN+=(httpwookiee); fi
fi
if wanted desync; then
  if ! ls "$SUITES"/http-desync-guardian/tests/*.yaml >/dev/null 2>&1; then
    note_missing desync "no $SUITES/http-desync-guardian/tests/*.yaml"
  elif ! has_module yaml; then note_missing desync "$PY lacks PyYAML"
  else RUN+=(desync); fi
fi
H2SPEC=
if wanted h2spec; then
  if [ -x "$SUITES/h2spec/h2spec" ]; then H2SPEC=$SUITES/h2spec/h2spec
  elif command -v h2spec >/dev/null; then H2SPEC=$(command -v h2spec); fi
  if [ -n "$H2SPEC" ]; then RUN+=(h2spec); else note_missing h2spec "no $SUITES/h2spec/h2spec binary and none on PATH"; fi
fi
if wanted smuggler; then
  if [ -f "$SUITES/smuggler/smuggler.py" ]; then RUN+=(smuggler); else note_missing smuggler "no $SUITES/smuggler/smuggler.py"; fi
fi
REDBOT=
if wanted redbot; then
  if [ -x "$(dirname "$PY")/redbot" ]; then REDBOT=$(dirname "$PY")/redbot
  elif command -v redbot >/dev/null; then REDBOT=$(command -v redbot); fi
  if [ -n "$REDBOT" ]; then RUN+=(redbot); else note_missing redbot "no redbot command (pip install redbot)"; fi
fi
if [ ${#RUN[@]} -eq 0 ]; then
  echo "conformance.sh: none of the suites is in $SUITES; nothing run"
  exit 0
fi
for m in "${MISSING[@]}"; do echo "$m"; done

# --- which servers ----------------------------------------------------------------------------
SERVERS=()
if [ -x "$BIN" ]; then SERVERS+=(cleargate); else echo "conformance.sh: cleargate: $BIN not built; its column stays empty"; fi
command -v nginx >/dev/null && SERVERS+=(nginx) || echo "conformance.sh: nginx: not installed; its column stays empty"
command -v haproxy >/dev/null && SERVERS+=(haproxy) || echo "conformance.sh: haproxy: not installed; its column stays empty"
if [ ${#SERVERS[@]} -eq 0 ]; then
  echo "conformance.sh: no server to test; nothing run"
  exit 0
fi
echo "conformance.sh: suites: ${RUN[*]}; servers: ${SERVERS[*]}"

D=$(mktemp -d /tmp/cleargate-conformance.XXXXXX)
chmod 755 "$D"
mkdir -p "$D/res" "$D/nginx-tmp" "$D/logs"
PIDS=()
cleanup() {
  local p f
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$D/nginx.pid" "$D/haproxy.pid" "$D/cleargate.pid"; do
    [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "conformance.sh: kept $D" >&2 || rm -rf "$D"
}
trap cleanup EXIT

# --- ports: a run of free ones, picked by binding --------------------------------------------
BASE=$(python3 - <<'PY'
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
)
[ -n "$BASE" ] || { echo "conformance.sh: no free ports" >&2; exit 1; }
P_ORIGIN=$BASE
declare -A P_HTTP=([cleargate]=$((BASE + 1)) [nginx]=$((BASE + 2)) [haproxy]=$((BASE + 3)))
declare -A P_H2=([cleargate]=$((BASE + 4)) [nginx]=$((BASE + 5)) [haproxy]=$((BASE + 6)))
# One HTTPWookiee backend port per server, so that no run sees another's leftovers.
declare -A P_WOOKIEE=([cleargate]=$((BASE + 7)) [nginx]=$((BASE + 8)) [haproxy]=$((BASE + 9)))
P_DEAD=$((BASE + 10))  # nothing listens here: the gateways' own error responses, for REDbot
# The ports the doc shows: names instead of this run's numbers.
doc_ports() {
  P_ORIGIN=ORIGIN P_DEAD=DEAD D=/run/gw AS_ROOT=
  P_HTTP=([cleargate]=8080 [nginx]=8080 [haproxy]=8080)
  P_H2=([cleargate]=8081 [nginx]=8081 [haproxy]=8081)
  P_WOOKIEE=([cleargate]=WOOKIEE [nginx]=WOOKIEE [haproxy]=WOOKIEE)
}
AS_ROOT=
[ "$(id -u)" = 0 ] && AS_ROOT=1

wait_port() {  # port what
  local i
  for i in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "conformance.sh: nothing listens on port $1 ($2)" >&2
  exit 1
}

# --- the gateways: "/" to the origin, "/proxy" to HTTPWookiee's backend, "/down" to no one -----
# cleargate speaks h2c (prior knowledge) on every listener; the second one is for h2spec.
cleargate_toml() {
  cat <<EOF
listen = ["127.0.0.1:${P_HTTP[cleargate]}", "127.0.0.1:${P_H2[cleargate]}"]

[log]
destination = "$D/logs/cleargate.log"

[upstream.origin]
endpoints = ["127.0.0.1:$P_ORIGIN"]

[upstream.wookiee]
endpoints = ["127.0.0.1:${P_WOOKIEE[cleargate]}"]

[upstream.down]
endpoints = ["127.0.0.1:$P_DEAD"]

[[route]]
path = "/proxy"
upstream = "wookiee"

[[route]]
path = "/down"
upstream = "down"

[[route]]
path = "/"
upstream = "origin"
EOF
}

nginx_conf() {
  echo "worker_processes 1;"
  echo "pid $D/nginx.pid;"
  echo "error_log $D/logs/nginx-error.log info;"
  [ -n "$AS_ROOT" ] && echo "user $(id -un) $(id -gn);"
  echo "events { worker_connections 1024; }"
  echo "http {"
  echo "  access_log off;"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $D/nginx-tmp/$t;"; done
  cat <<EOF
  # Upstream keep-alive and the client's Host, the usual way.
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host \$host;

  upstream origin  { server 127.0.0.1:$P_ORIGIN; keepalive 16; }
  upstream wookiee { server 127.0.0.1:${P_WOOKIEE[nginx]}; keepalive 16; }
  upstream down    { server 127.0.0.1:$P_DEAD; }

  server {
    listen 127.0.0.1:${P_HTTP[nginx]};
    # h2c with prior knowledge: a listener of its own in nginx.
    listen 127.0.0.1:${P_H2[nginx]} http2;
    location /      { proxy_pass http://origin; }
    location /proxy { proxy_pass http://wookiee; }
    location /down  { proxy_pass http://down; }
  }
}
EOF
}

haproxy_cfg() {
  cat <<EOF
global
  maxconn 1024

defaults
  mode http
  http-reuse safe
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-request 10s

frontend fe
  bind 127.0.0.1:${P_HTTP[haproxy]}
  # h2c with prior knowledge: a listener of its own in HAProxy.
  bind 127.0.0.1:${P_H2[haproxy]} proto h2
  use_backend wookiee if { path_beg /proxy }
  use_backend down if { path_beg /down }
  default_backend origin

backend origin
  server o1 127.0.0.1:$P_ORIGIN

backend wookiee
  server w1 127.0.0.1:${P_WOOKIEE[haproxy]}

backend down
  server d1 127.0.0.1:$P_DEAD
EOF
}

start_servers() {
  python3 "$HERE/origin.py" "$P_ORIGIN" "$D/origin.jsonl" >"$D/logs/origin.out" 2>&1 &
  PIDS+=($!)
  wait_port "$P_ORIGIN" origin
  local s
  for s in "${SERVERS[@]}"; do
    case $s in
      cleargate)
        cleargate_toml >"$D/cleargate.toml"
        "$BIN" check -c "$D/cleargate.toml" >/dev/null
        "$BIN" serve -c "$D/cleargate.toml" >"$D/logs/cleargate.out" 2>&1 &
        echo $! >"$D/cleargate.pid" ;;
      nginx)
        nginx_conf >"$D/nginx.conf"
        nginx -p "$D" -c "$D/nginx.conf" -e "$D/logs/nginx-error.log" ;;
      haproxy)
        haproxy_cfg >"$D/haproxy.cfg"
        haproxy -D -f "$D/haproxy.cfg" -p "$D/haproxy.pid" >"$D/logs/haproxy.out" 2>&1 ;;
    esac
  done
  for s in "${SERVERS[@]}"; do
    wait_port "${P_HTTP[$s]}" "$s"
    wait_port "${P_H2[$s]}" "$s h2"
  done
}

# A suite's run for one server: bounded, its exit status kept, never fatal to the script.
bounded() {  # seconds suite server command...
  local secs=$1 suite=$2 server=$3 rc=0
  shift 3
  local started=$SECONDS
  timeout --kill-after=10 "$secs" "$@" >"$D/logs/$suite-$server.out" 2>"$D/logs/$suite-$server.err" </dev/null || rc=$?
  echo "{\"rc\": $rc, \"seconds\": $((SECONDS - started)), \"limit\": $secs}" >"$D/res/$suite-$server.run.json"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    echo "  $suite $server: stopped after ${secs}s (timeout)"
  else
    echo "  $suite $server: done in $((SECONDS - started)) s (exit $rc)"
  fi
}

# --- the suites -------------------------------------------------------------------------------
run_httpwookiee() {  # server
  local s=$1 conf="$D/wookiee-$1.conf"
  cat >"$conf" <<EOF
[main]
SERVER_HOST: localhost
SERVER_IP: 127.0.0.1
SERVER_PORT: ${P_HTTP[$s]}
SERVER_SSL: false
SERVER_DEFAULT_LOCATION: /index.html
SERVER_DEFAULT_LOCATION_CONTENT: It works
CLIENT_SOCKET_READ_TIMEOUT_MS: ${WOOKIEE_READ_TIMEOUT_MS:-300}
BACKEND_PORT: ${P_WOOKIEE[$s]}
BACKEND_LOCATION_PREFIX: /proxy
I_HAVE_READ_AND_UNDERSTAND_THE_FAQ_AND_I_AM_RESPONSIBLE_OF_MY_ACTS: true
EOF
  bounded 1500 httpwookiee "$s" "$PY" "$HERE/wookiee.py" "$SUITES/httpwookiee" "$conf" "$D/res/httpwookiee-$s.json"
}

run_desync() {
  bounded 600 desync "$1" "$PY" "$HERE/desync.py" "$SUITES/http-desync-guardian/tests" "${P_HTTP[$1]}" "$1" \
    "$D/origin.jsonl" "$D/res/desync-$1.json"
}

run_h2spec() {
  bounded 600 h2spec "$1" "$H2SPEC" -h 127.0.0.1 -p "${P_H2[$1]}" -o 2 -j "$D/res/h2spec-$1.xml"
}

run_smuggler() {
  # smuggler writes the payloads it finds into its own payloads/ folder: a copy per run here.
  rm -rf "$D/smuggler-$1"
  cp -r "$SUITES/smuggler" "$D/smuggler-$1"
  bounded 900 smuggler "$1" "$PY" "$D/smuggler-$1/smuggler.py" -u "http://127.0.0.1:${P_HTTP[$1]}/" \
    -m POST -t 3 --no-color -l "$D/res/smuggler-$1.log"
}

run_redbot() {
  bounded 120 redbot-origin "$1" "$REDBOT" -o har "http://127.0.0.1:${P_HTTP[$1]}/"
  cp "$D/logs/redbot-origin-$1.out" "$D/res/redbot-origin-$1.har"
  bounded 120 redbot-error "$1" "$REDBOT" -o har "http://127.0.0.1:${P_HTTP[$1]}/down/"
  cp "$D/logs/redbot-error-$1.out" "$D/res/redbot-error-$1.har"
}

start_servers
START=$SECONDS
for suite in "${RUN[@]}"; do
  echo "== $suite"
  case $suite in
    httpwookiee|smuggler)
      # Mostly waiting on read timeouts: the servers side by side, each with its own backend.
      pids=()
      for s in "${SERVERS[@]}"; do "run_$suite" "$s" & pids+=($!); done
      for p in "${pids[@]}"; do wait "$p" || true; done ;;
    *)
      for s in "${SERVERS[@]}"; do "run_$suite" "$s"; done ;;
  esac
done
echo "suites took $((SECONDS - START)) s"

# The configurations as the doc shows them.
OUT=$D/res
(
  doc_ports
  cleargate_toml >"$OUT/doc-cleargate.toml"
  nginx_conf >"$OUT/doc-nginx.conf"
  haproxy_cfg >"$OUT/doc-haproxy.cfg"
)

# --- versions and the document ----------------------------------------------------------------
{
  echo "{"
  echo "  \"suites\": \"${RUN[*]}\","
  echo "  \"servers\": \"${SERVERS[*]}\","
  echo "  \"cleargate\": \"$([ -x "$BIN" ] && "$BIN" --version 2>/dev/null | awk '{print $NF}')\","
  echo "  \"nginx\": \"$(command -v nginx >/dev/null && nginx -v 2>&1 | sed 's/.*version: nginx\///')\","
  echo "  \"haproxy\": \"$(command -v haproxy >/dev/null && haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')\","
  for suite in httpwookiee http-desync-guardian h2spec smuggler; do
    rev=
    if [ -f "$SUITES/$suite/.revision" ]; then rev=$(head -c 12 "$SUITES/$suite/.revision")
    elif [ -e "$SUITES/$suite/.git" ]; then rev=$(git -C "$SUITES/$suite" rev-parse --short=12 HEAD 2>/dev/null || true); fi
    echo "  \"rev-$suite\": \"$rev\","
  done
  echo "  \"h2spec-version\": \"$([ -n "$H2SPEC" ] && "$H2SPEC" --version 2>/dev/null | sed 's/Version: //' | head -1)\","
  echo "  \"redbot-version\": \"$([ -n "$REDBOT" ] && "$PY" -c 'import importlib.metadata as m; print(m.version("redbot"))' 2>/dev/null)\""
  echo "}"
} >"$D/res/meta.json"

python3 "$HERE/report.py" "$D/res" "$DOC"
