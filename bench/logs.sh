#!/usr/bin/env bash
# `cleargate logs` against `grep -c` on a 1 GiB realistic nginx error log, in the same run.
#
#   bench/logs.sh [SIZE_BYTES]      (default 1 GiB; the log is generated once and kept)
#
# Both commands read the same file from the page cache (it is read once before timing); each runs
# three times and the best and median wall times are printed with cleargate's peak memory. The
# target is cleargate within 2x of grep's wall time. Figures go to BENCHMARKS.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1073741824}
BIN=target/release/cleargate
[ -x "$BIN" ] || cargo build --release
DIR=${BENCH_DIR:-${TMPDIR:-/tmp}/cleargate-bench}
LOG=$DIR/nginx-error-$SIZE.log
mkdir -p "$DIR"
if [ ! -s "$LOG" ]; then
  echo "generating $LOG ..."
  python3 bench/gen-nginx-error-log.py "$LOG.part" "$SIZE"
  mv "$LOG.part" "$LOG"
fi
cat "$LOG" >/dev/null

python3 - "$BIN" "$LOG" <<'PY'
import os, resource, statistics, subprocess, sys, time
bin_, log = sys.argv[1], sys.argv[2]
env = dict(os.environ, LC_ALL="C")

def run(cmd, runs=3):
    walls, cpus, rss = [], [], 0
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env).stdout
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        rss = max(rss, after.ru_maxrss)
    return min(walls), statistics.median(walls), statistics.median(cpus), rss, out

size = os.path.getsize(log)
g_best, g_med, g_cpu, _, g_out = run(["grep", "-c", "upstream", log])
c_best, c_med, c_cpu, c_rss, c_out = run([bin_, "logs", "--json", log])
s_best, s_med, s_cpu, s_rss, _ = run([bin_, "logs", "--json", "--threads", "1", log])
load = os.getloadavg()[0]
import json
report = json.loads(c_out)
print("file: %s (%.2f GiB, %d lines, %d gateway errors, %d unrecognized)" % (
    log, size / 2**30, report["lines"], report["gateway_errors"], report["unrecognized"]))
print("cores: %d, load average during the run: %.1f" % (os.cpu_count(), load))
print("| command | best wall | median wall | median CPU (user+sys) | throughput (best) | peak memory |")
print("| --- | --- | --- | --- | --- | --- |")
print("| `grep -c upstream` (%s matches) | %.2f s | %.2f s | %.2f s | %.0f MB/s | - |" % (g_out.decode().strip(), g_best, g_med, g_cpu, size / g_best / 1e6))
print("| `cleargate logs --json` | %.2f s | %.2f s | %.2f s | %.0f MB/s | %.0f MiB |" % (c_best, c_med, c_cpu, size / c_best / 1e6, c_rss / 1024))
print("| `cleargate logs --json --threads 1` | %.2f s | %.2f s | %.2f s | %.0f MB/s | %.0f MiB |" % (s_best, s_med, s_cpu, size / s_best / 1e6, s_rss / 1024))
ratio = c_med / g_med
print("cleargate / grep (median wall): %.2fx (target: at most 2x)" % ratio)
print("cleargate CPU / grep CPU: %.2fx" % (c_cpu / g_cpu))
sys.exit(0 if ratio <= 2.0 else 1)
PY
