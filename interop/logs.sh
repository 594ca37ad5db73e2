#!/usr/bin/env bash
# Real nginx, Apache httpd, HAProxy and Caddy in front of `cleargate lab`: does `cleargate logs`
# classify every error line they write into the expected cause?
#
# For each server, one location per lab fault (plus unix-socket, FastCGI, TLS and IPv6 cases) gets
# one request; nginx and Apache write each location's errors to their own file, HAProxy names the
# backend in each line. Caddy writes one JSON log (at debug level, so its per-attempt lines are in
# it too) and some of its lines name no request, so its locations are requested one after the
# other and the log is cut after each request's access line. `cleargate logs --findings` must put every finding of a location into one
# of the causes allowed by crates/logscan/tests/fixtures/real/expected.tsv, find something where
# the table says it must, and leave no error line unrecognized. The HTML report is then opened in
# headless Chromium and the screenshot must show the timeline bars.
#
# UPDATE_FIXTURES=1 copies the captured logs (ports and paths made stable) into
# crates/logscan/tests/fixtures/real/, which `cargo test` reads.
# Writes its table to docs/logs-interop.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cleargate
FIXTURES=$ROOT/crates/logscan/tests/fixtures/real
[ -x "$BIN" ] || { echo "logs.sh: build first: cargo build --release" >&2; exit 1; }
for tool in nginx haproxy apache2 caddy curl python3; do
  command -v "$tool" >/dev/null || { echo "logs.sh: $tool is not installed" >&2; exit 1; }
done

D=$(mktemp -d /tmp/cleargate-logs.XXXXXX)
# Servers that drop privileges must still reach the sockets in here.
chmod 755 "$D"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$D/apache/httpd.pid" ] && kill "$(cat "$D/apache/httpd.pid")" 2>/dev/null || true
  [ -f "$D/nginx.pid" ] && kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
  [ -n "${CADDY_PID:-}" ] && kill "$CADDY_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] || rm -rf "$D"
}
trap cleanup EXIT

# A base port with 100 free ports above it.
BASE=$(python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 60000)
    ok = True
    for p in range(base, base + 100):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        break
PY
)
FAULTS=(ok refused unaccepted reset close midheader hang slow garbage bigheader truncated badchunk stall flaky kashort status)
port_of() { local i; for i in "${!FAULTS[@]}"; do [ "${FAULTS[$i]}" = "$1" ] && echo $((BASE + i)); done; }
NGINX_PORT=$((BASE + 20))
HAPROXY_PORT=$((BASE + 21))
CADDY_PORT=$((BASE + 22))
APACHE_BASE=$((BASE + 30))
IPV6=""
python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null && IPV6=1

# Only the faults the servers are pointed at: the others (TLS, upgrades) would take ports above.
"$BIN" lab --faults "$(IFS=,; echo "${FAULTS[*]}")" --port-base "$BASE" --slow-delay 500ms --flaky-fraction 1 >"$D/lab.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  curl -fs -m 2 -o /dev/null "http://127.0.0.1:$(port_of ok)/" && break
  sleep 0.1
done

# A unix socket file with nothing behind it: bound, never listening, so connect is refused.
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$D/stale.sock"

# Locations per server: one per lab fault, plus the cases below. `fcgi_http` and `tls_plain` point
# at nginx's own plain HTTP port: the lab waits for a whole HTTP request head before answering,
# while these cases need an HTTP server that answers 400 at once to bytes that are not HTTP.
LAB_LOCS=(refused unaccepted reset close midheader hang garbage bigheader truncated badchunk stall flaky ok slow status)

# --- nginx -----------------------------------------------------------------------------------
mkdir -p "$D/nginx" "$D/tmp"
{
  echo "worker_processes 1; daemon off; pid $D/nginx.pid; error_log $D/nginx-main.log notice;"
  [ "$(id -u)" = 0 ] && echo "user $(id -un) $(id -gn);"
  echo "events { worker_connections 256; }"
  echo "http {"
  echo "  access_log $D/nginx-access.log;"
  for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $D/tmp/$t;"; done
  echo "  proxy_connect_timeout 1s; proxy_read_timeout 2s; fastcgi_connect_timeout 1s; fastcgi_read_timeout 2s;"
  echo "  upstream pool_down { server 127.0.0.1:$(port_of refused) max_fails=1 fail_timeout=60s; }"
  echo "  server {"
  echo "    listen 127.0.0.1:$NGINX_PORT;"
  for loc in "${LAB_LOCS[@]}"; do
    echo "    location /$loc/ { error_log $D/nginx/$loc.log info; proxy_pass http://127.0.0.1:$(port_of "$loc"); }"
  done
  echo "    location /sock_missing/ { error_log $D/nginx/sock_missing.log info; include /etc/nginx/fastcgi_params; fastcgi_pass unix:$D/missing.sock; }"
  echo "    location /sock_stale/ { error_log $D/nginx/sock_stale.log info; include /etc/nginx/fastcgi_params; fastcgi_pass unix:$D/stale.sock; }"
  echo "    location /fcgi_http/ { error_log $D/nginx/fcgi_http.log info; include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:$NGINX_PORT; }"
  echo "    location /tls_plain/ { error_log $D/nginx/tls_plain.log info; proxy_pass https://127.0.0.1:$NGINX_PORT; }"
  [ -n "$IPV6" ] && echo "    location /ipv6_refused/ { error_log $D/nginx/ipv6_refused.log info; proxy_pass http://[::1]:$(port_of refused); }"
  echo "    location /pool_down/ { error_log $D/nginx/pool_down.log info; proxy_pass http://pool_down; }"
  echo "  }"
  echo "}"
} >"$D/nginx.conf"
nginx -c "$D/nginx.conf" -e "$D/nginx-main.log" >"$D/nginx.out" 2>&1 &
PIDS+=($!)

# --- Apache httpd: one virtual host (and error log) per location ------------------------------
mkdir -p "$D/apache/logs"
M=/usr/lib/apache2/modules
{
  echo "ServerRoot $D/apache"
  echo "PidFile $D/apache/httpd.pid"
  echo "DefaultRuntimeDir $D/apache"
  echo "ServerName localhost"
  for m in mpm_event authz_core proxy proxy_http proxy_fcgi ssl; do echo "LoadModule ${m}_module $M/mod_$m.so"; done
  [ "$(id -u)" = 0 ] && { echo "User nobody"; echo "Group nogroup"; }
  echo "ErrorLog $D/apache-main.log"
  echo "LogLevel warn"
  echo "Timeout 2"
  echo "SSLProxyEngine on"
  echo "SSLProxyVerify none"
  i=0
  apache_vhost() {  # name target-url
    local port=$((APACHE_BASE + i)); i=$((i + 1))
    echo "Listen 127.0.0.1:$port"
    echo "<VirtualHost 127.0.0.1:$port>"
    echo "  ErrorLog $D/apache/$1.log"
    echo "  ProxyPass / $2 connectiontimeout=1 timeout=2 retry=0"
    echo "</VirtualHost>"
    echo "$1 $port" >>"$D/apache-ports"
  }
  for loc in "${LAB_LOCS[@]}"; do apache_vhost "$loc" "http://127.0.0.1:$(port_of "$loc")/"; done
  apache_vhost sock_missing "unix:$D/missing.sock|fcgi://localhost/"
  apache_vhost fcgi_http "fcgi://127.0.0.1:$NGINX_PORT/"
  apache_vhost tls_plain "https://127.0.0.1:$NGINX_PORT/"
  [ -n "$IPV6" ] && apache_vhost ipv6_refused "http://[::1]:$(port_of refused)/"
} >"$D/httpd.conf"
apache2 -f "$D/httpd.conf" -DFOREGROUND >"$D/apache.out" 2>&1 &
PIDS+=($!)

# --- HAProxy: one backend per location, logging to stdout --------------------------------------
{
  echo "global"
  echo "  log stdout format raw local0"
  echo "  maxconn 256"
  echo "defaults"
  echo "  mode http"
  echo "  log global"
  echo "  option httplog"
  echo "  retries 0"
  echo "  timeout connect 1s"
  echo "  timeout client 10s"
  echo "  timeout server 2s"
  echo "frontend fe"
  echo "  bind 127.0.0.1:$HAPROXY_PORT"
  HLOCS=("${LAB_LOCS[@]}" nosrv)
  [ -n "$IPV6" ] && HLOCS+=(ipv6_refused)
  for loc in "${HLOCS[@]}"; do echo "  use_backend b_$loc if { path_beg /$loc/ }"; done
  for loc in "${LAB_LOCS[@]}"; do
    echo "backend b_$loc"
    echo "  server s_$loc 127.0.0.1:$(port_of "$loc")"
  done
  echo "backend b_nosrv"
  [ -n "$IPV6" ] && { echo "backend b_ipv6_refused"; echo "  server s_ipv6_refused [::1]:$(port_of refused)"; }
} >"$D/haproxy.cfg"
haproxy -f "$D/haproxy.cfg" -db >"$D/haproxy.log" 2>"$D/haproxy.err" &
PIDS+=($!)

# --- Caddy: one site, one route per location, JSON log at debug level -------------------------
mkdir -p "$D/caddy"
caddy_route() {  # location upstream [transport lines...]
  local loc=$1 up=$2; shift 2
  echo "  handle /$loc/* {"
  echo "    reverse_proxy $up {"
  echo "      transport http {"
  echo "        dial_timeout 1s"
  echo "        response_header_timeout 2s"
  echo "        read_timeout 2s"
  for l in "$@"; do echo "        $l"; done
  echo "      }"
  [ "$loc" = pool_down ] && { echo "      fail_duration 60s"; echo "      max_fails 1"; }
  echo "    }"
  echo "  }"
}
{
  echo "{"
  echo "  admin off"
  echo "  auto_https off"
  echo "  storage file_system $D/caddy/storage"
  echo "  log {"
  echo "    output file $D/caddy.log"
  echo "    format json"
  echo "    level DEBUG"
  echo "  }"
  echo "}"
  echo "http://127.0.0.1:$CADDY_PORT {"
  echo "  bind 127.0.0.1"
  echo "  log {"
  echo "    output file $D/caddy.log"
  echo "    format json"
  echo "  }"
  for loc in "${LAB_LOCS[@]}"; do
    # Caddy's own limit on a response head is Go's 10 MB, more than `bigheader` sends.
    if [ "$loc" = bigheader ]; then
      caddy_route "$loc" "127.0.0.1:$(port_of "$loc")" "max_response_header 64KB"
    else
      caddy_route "$loc" "127.0.0.1:$(port_of "$loc")"
    fi
  done
  caddy_route sock_missing "unix/$D/missing.sock"
  caddy_route sock_stale "unix/$D/stale.sock"
  caddy_route tls_plain "https://127.0.0.1:$NGINX_PORT" "tls_insecure_skip_verify"
  [ -n "$IPV6" ] && caddy_route ipv6_refused "[::1]:$(port_of refused)"
  caddy_route pool_down "127.0.0.1:$(port_of refused)"
  echo "}"
} >"$D/Caddyfile"
HOME=$D/caddy XDG_CONFIG_HOME=$D/caddy XDG_DATA_HOME=$D/caddy \
  caddy run --config "$D/Caddyfile" --adapter caddyfile >"$D/caddy.out" 2>&1 &
CADDY_PID=$!
PIDS+=($CADDY_PID)

wait_port() {  # port path
  for _ in $(seq 100); do
    curl -s -m 2 -o /dev/null "http://127.0.0.1:$1$2" && return 0
    sleep 0.1
  done
  echo "logs.sh: nothing answers on port $1" >&2
  cat "$D"/*.out "$D"/*-main.log "$D/haproxy.err" 2>/dev/null >&2 || true
  exit 1
}
wait_port "$NGINX_PORT" /ok/; wait_port "$HAPROXY_PORT" /ok/; wait_port "$APACHE_BASE" /
wait_port "$CADDY_PORT" /ok/

# --- the requests: all locations at once, bounded by curl's own timeout ------------------------
for loc in "${LAB_LOCS[@]}" sock_missing sock_stale fcgi_http tls_plain ${IPV6:+ipv6_refused}; do
  curl -s -o /dev/null -m 8 "http://127.0.0.1:$NGINX_PORT/$loc/x" &
done
while read -r loc port; do curl -s -o /dev/null -m 8 "http://127.0.0.1:$port/x" & done <"$D/apache-ports"
for loc in "${HLOCS[@]}"; do curl -s -o /dev/null -m 8 "http://127.0.0.1:$HAPROXY_PORT/$loc/x" & done
# Caddy, one location after the other: after each request, the log is cut where its access line
# ends (`pool_down` gets two requests, like nginx's).
CLOCS=("${LAB_LOCS[@]}" sock_missing sock_stale tls_plain ${IPV6:+ipv6_refused} pool_down)
python3 - "$D/caddy.log" "$D/caddy-cuts" "$CADDY_PORT" "${CLOCS[@]}" <<'PY' &
import os, subprocess, sys, time
log, cuts, port, locs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def access_lines(uri):
    try:
        data = open(log, "rb").read()
    except FileNotFoundError:
        return 0, 0
    needle = b'"uri":"%s"' % uri.encode()
    return sum(1 for l in data.splitlines() if b'"msg":"handled request"' in l and needle in l), len(data)
with open(cuts, "w") as out:
    out.write("start %d\n" % access_lines("/")[1])
    for loc in locs:
        uri = "/%s/x" % loc
        n = 2 if loc == "pool_down" else 1
        for _ in range(n):
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-m", "8", "http://127.0.0.1:%s%s" % (port, uri)])
        deadline = time.monotonic() + 10
        while True:
            seen, size = access_lines(uri)
            if seen >= n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        out.write("%s %d\n" % (loc, size))
PY
wait $(jobs -p | grep -v -x -F "$(printf '%s\n' "${PIDS[@]}")") 2>/dev/null || true
# The pool: the first request marks its only server down, the second finds none left.
curl -s -o /dev/null -m 8 "http://127.0.0.1:$NGINX_PORT/pool_down/x"
curl -s -o /dev/null -m 8 "http://127.0.0.1:$NGINX_PORT/pool_down/x"

# Stop the servers so that every line is written.
kill "$(cat "$D/nginx.pid")" 2>/dev/null || true
kill "$(cat "$D/apache/httpd.pid")" 2>/dev/null || true
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
PIDS=()

# --- stable copies: lab ports as 40000+index, listen ports and the temp dir fixed --------------
mkdir -p "$D/captured/nginx" "$D/captured/apache" "$D/captured/haproxy" "$D/captured/caddy"
# Caddy's log cut at the recorded offsets; what comes before the first request and after the
# last one (start and shutdown) is its main.log.
python3 - "$D/caddy.log" "$D/caddy-cuts" "$D/caddy" <<'PY'
import sys
log, cuts, out = sys.argv[1:4]
data = open(log, "rb").read()
rows = [l.split() for l in open(cuts) if l.strip()]
start = int(rows[0][1])
for loc, end in rows[1:]:
    open("%s/%s.log" % (out, loc), "wb").write(data[start:int(end)])
    start = int(end)
open("%s/main.log" % out, "wb").write(data[:int(rows[0][1])] + data[start:])
PY
stabilize() {  # in out
  python3 - "$1" "$2" "$BASE" "$D" <<'PY'
import sys
src, dst, base, tmp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
data = open(src, "rb").read()
data = data.replace(tmp.encode(), b"/tmp/cleargate-logs")
# Longest numbers first, so that one port never rewrites part of another.
for i in range(99, -1, -1):
    data = data.replace(b":%d" % (base + i), b":%d" % (40000 + i))
open(dst, "wb").write(data)
PY
}
for f in "$D"/nginx/*.log; do stabilize "$f" "$D/captured/nginx/$(basename "$f")"; done
for f in "$D"/apache/*.log; do stabilize "$f" "$D/captured/apache/$(basename "$f")"; done
stabilize "$D/haproxy.log" "$D/captured/haproxy/haproxy.log"
stabilize "$D/nginx-main.log" "$D/captured/nginx/main.log"
stabilize "$D/apache-main.log" "$D/captured/apache/main.log"
for f in "$D"/caddy/*.log; do stabilize "$f" "$D/captured/caddy/$(basename "$f")"; done

# --- the check --------------------------------------------------------------------------------
python3 - "$BIN" "$D/captured" "$FIXTURES/expected.tsv" "$ROOT/docs/logs-interop.md" <<'PY'
import json, os, subprocess, sys
bin_, cap, table, doc = sys.argv[1:5]
expected = {}
for line in open(table):
    if line.startswith("#") or not line.strip():
        continue
    server, loc, allowed, required = line.rstrip("\n").split("\t")
    expected[(server, loc)] = ([] if allowed == "-" else allowed.split(","), required == "yes")

def findings(path):
    out = subprocess.run([bin_, "logs", "--findings", path], check=True, capture_output=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.strip()]

got = {}
for server in ("nginx", "apache", "caddy"):
    for name in sorted(os.listdir(os.path.join(cap, server))):
        loc = name[:-4]
        got[(server, loc)] = [f for f in findings(os.path.join(cap, server, name)) if not f["follow_up"]]
for f in findings(os.path.join(cap, "haproxy", "haproxy.log")):
    up = f.get("upstream") or ""
    loc = up.split("/")[0][2:] if up.startswith("b_") else "?"
    got.setdefault(("haproxy", loc), []).append(f)

failures, rows = [], []
for key, (allowed, required) in sorted(expected.items()):
    fs = got.get(key, [])
    causes = sorted({f["cause"] for f in fs})
    bad = [f for f in fs if f["cause"] not in allowed]
    ok = not bad and (fs or not required)
    if key not in got and key[1] == "ipv6_refused" and not any(k[1] == "ipv6_refused" for k in got):
        ok, causes = True, ["(no IPv6 loopback)"]
    rows.append((key[0], key[1], ", ".join(allowed) or "-", ", ".join(causes) or "-", "ok" if ok else "FAIL"))
    if not ok:
        failures.append((key, [f["line"] for f in bad] or ["no finding"]))
for key in sorted(set(got) - set(expected)):
    if got[key]:
        failures.append((key, ["location not in expected.tsv: " + got[key][0]["line"]]))

# Every error line of every capture, main logs included: none may be unrecognized.
files = []
for root, _, names in os.walk(cap):
    files += [os.path.join(root, n) for n in names]
summary = json.loads(subprocess.run([bin_, "logs", "--json", *sorted(files)], check=True, capture_output=True).stdout)
if summary["unrecognized"]:
    failures.append((("all", "unrecognized"), summary["unrecognized_examples"]))

with open(doc, "w") as out:
    out.write("# `cleargate logs` against real servers\n\n")
    out.write("Written by `interop/logs.sh`: real nginx, Apache httpd, HAProxy and Caddy (OS packages) in front\n")
    out.write("of `cleargate lab`, one request per location; `cleargate logs` classified what they logged.\n\n")
    out.write("| server | location | expected | classified | |\n| --- | --- | --- | --- | --- |\n")
    for r in rows:
        out.write("| %s | %s | %s | %s | %s |\n" % r)
    out.write("\nUnrecognized error lines in all captured logs: %d. Gateway errors by cause: %s.\n"
              % (summary["unrecognized"], ", ".join("%s %d" % kv for kv in summary["by_cause"].items())))
for r in rows:
    print("  %-8s %-14s %-40s %-30s %s" % r)
for key, lines in failures:
    print("FAIL %s/%s:" % key)
    for l in lines[:3]:
        print("    " + l)
sys.exit(1 if failures else 0)
PY

# --- the HTML report in a real browser ---------------------------------------------------------
BROWSER=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -n "$BROWSER" ]; then
  "$BIN" logs --html "$D/report.html" "$D"/captured/*/*.log >/dev/null
  timeout 60 "$BROWSER" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1200,2400 --screenshot="$D/report.png" "file://$D/report.html" >/dev/null 2>&1 || true
  python3 - "$D/report.png" <<'PY'
import struct, sys, zlib
# A small PNG reader (8-bit RGB/RGBA, not interlaced) to count pixels of the chart's bar colour.
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), "unexpected PNG type"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride, prev, bars = zlib.decompress(idat), w * bpp, bytearray(w * bpp), 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    bars += sum(1 for x in range(0, stride, bpp) if abs(line[x] - 0xd9) < 12 and abs(line[x + 1] - 0x48) < 12 and abs(line[x + 2] - 0x0f) < 12)
    prev = line
print("  html report: %d chart pixels in the screenshot" % bars)
sys.exit(0 if bars >= 50 else 1)
PY
else
  echo "  html report: no Chromium, screenshot check skipped"
fi

if [ -n "${UPDATE_FIXTURES:-}" ]; then
  for s in nginx apache haproxy caddy; do rm -rf "${FIXTURES:?}/$s"; cp -r "$D/captured/$s" "$FIXTURES/$s"; done
  echo "  fixtures updated in $FIXTURES"
fi
echo "logs.sh: ok"
