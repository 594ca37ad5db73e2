#!/usr/bin/env bash
# The HTTP caching test suite (github.com/http-tests/cache-tests) against cleargate's cache and
# nginx's proxy_cache, side by side, in front of the suite's own origin server.
#
#   CACHE_TESTS=/work/suites/cache-tests bash interop/cache.sh
#
# The suite is not in this repository: CACHE_TESTS names a checkout of it (its `npm i` is run
# when node_modules is missing; npm's registry is the only network it needs). Without it (as in
# CI) the script says so in one line and exits 0, leaving docs/cache.md as it is.
#
# Servers, on free loopback ports, all files under a temporary directory: the suite's origin
# (`npm run server`), cleargate (target/release/cleargate) with `cache = true` on its only route,
# and nginx from the OS packages with proxy_cache and proxy_cache_revalidate on, as the suite's
# own Docker image configures it. Each client run is bounded by `timeout`.
#
# Writes docs/cache.md (interop/cache/report.mjs: counts, every test cleargate does not pass
# with the reason from interop/cache/reasons.txt). Exits non-zero when cleargate passes fewer
# tests than nginx, fails more, or fails one nginx passes with no reason written down.
# KEEP=1 keeps the temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/target/release/cleargate
SUITE=${CACHE_TESTS:-}

if [ -z "$SUITE" ] || [ ! -f "$SUITE/tests/index.mjs" ]; then
  echo "cache.sh: no cache-tests checkout (CACHE_TESTS=${SUITE:-unset}); skipped"
  exit 0
fi
SUITE=$(cd "$SUITE" && pwd)
for tool in node npm nginx; do
  command -v "$tool" >/dev/null || { echo "cache.sh: $tool is not installed" >&2; exit 1; }
done
[ -x "$BIN" ] || { echo "cache.sh: build target/release/cleargate first" >&2; exit 1; }
if [ ! -d "$SUITE/node_modules/undici" ]; then
  (cd "$SUITE" && npm i --omit=dev --no-audit --no-fund --silent)
fi
. "$ROOT/bench/common.sh"

DIR=$(mktemp -d /tmp/cleargate-cache-tests.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = "1" ]; then echo "cache.sh: kept $DIR"; else rm -rf "$DIR"; fi
}
trap cleanup EXIT
read -r P_ORIGIN P_CG P_NGINX < <(free_ports 3)

wait_port() { # PORT NAME
  for _ in $(seq 100); do
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2)' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "cache.sh: $2 did not start on port $1" >&2
  exit 1
}

# The suite's origin.
(cd "$SUITE" && exec npm run --silent server --port="$P_ORIGIN" --pidfile="$DIR/origin.pid") \
  >"$DIR/origin.log" 2>&1 &
PIDS+=($!)
wait_port "$P_ORIGIN" origin

# cleargate.
cat >"$DIR/cleargate.toml" <<CONF
listen = ["127.0.0.1:$P_CG"]

[upstream.origin]
endpoints = ["127.0.0.1:$P_ORIGIN"]

[[route]]
path = "/"
upstream = "origin"
cache = true

[cache]
size = "64MiB"
CONF
"$BIN" serve -c "$DIR/cleargate.toml" >"$DIR/cleargate.log" 2>&1 &
PIDS+=($!)
wait_port "$P_CG" cleargate

# nginx, configured as the suite's Docker image configures it.
mkdir -p "$DIR/nginx-tmp" "$DIR/nginx-cache"
{
  nginx_common nginx
  echo "http {"
  nginx_http_common nginx
  cat <<CONF
    access_log off;
    proxy_cache_path $DIR/nginx-cache levels=1:2 keys_zone=suite:8m max_size=1000m inactive=600m;
    server {
        listen 127.0.0.1:$P_NGINX;
        location / {
            proxy_pass http://127.0.0.1:$P_ORIGIN;
            proxy_cache suite;
            proxy_cache_revalidate on;
            proxy_http_version 1.1;
        }
    }
}
CONF
} >"$DIR/nginx.conf"
nginx -p "$DIR" -c "$DIR/nginx.conf" -e "$DIR/nginx-error.log" &
PIDS+=($!)
wait_port "$P_NGINX" nginx

run() { # NAME PORT
  echo "cache.sh: running the suite against $1"
  (cd "$SUITE" && timeout 900 npm run --silent cli --base="http://127.0.0.1:$2") \
    >"$DIR/$1.json" 2>"$DIR/$1.err" || {
    echo "cache.sh: the suite's client failed against $1; see $DIR/$1.err" >&2
    tail -5 "$DIR/$1.err" >&2
    exit 1
  }
}
run cleargate "$P_CG"
run nginx "$P_NGINX"

NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
SUITE_VERSION=$(cd "$SUITE" && (git rev-parse --short HEAD 2>/dev/null || node -p 'require("./package.json").version'))
node "$ROOT/interop/cache/report.mjs" "$SUITE" "$ROOT/interop/cache/reasons.txt" \
  "$ROOT/docs/cache.md" "nginx $NGINX_VERSION" "$SUITE_VERSION" \
  "$DIR/cleargate.json" "$DIR/nginx.json"
