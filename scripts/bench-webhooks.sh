#!/usr/bin/env bash
# Benchmark of webhook intake: signed 20 KB pull_request deliveries, each with its own delivery id,
# driven by wrk at the release binary.
#
#   scripts/bench-webhooks.sh [REQUESTS] [CONNECTIONS]      defaults: 1000000 16
#
# The orchestrator runs in its hidden BENCHMARK MODE (--dry-run-jobs): every delivery is verified,
# parsed, validated, deduplicated, queued, written to the store (group commit, fsync) and its job
# runs, but the job body only takes ports and marks the preview building; no Docker, git, nginx or
# GitHub. Each delivery carries a new commit for its PR (32 PRs), so it supersedes the previous
# one: the expensive path. Logging is on at the default level (info), to stdout and the log file.
#
# Prints req/s, p50/p99 latency, server CPU per 1,000 requests (utime+stime from /proc/PID/stat),
# and RSS when idle and after the load. wrk runs on the same cores as the server.
set -euo pipefail

requests="${1:-1000000}"
conns="${2:-16}"
threads=2
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d /tmp/bench-webhooks.XXXXXX)"
secret="bench-secret-$(date +%s)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "bench-webhooks: wrk is missing (apt-get install wrk)" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench-webhooks: python3 is missing" >&2; exit 1; }

echo "== building the release binary"
(cd "$root" && cargo build --release -q -p preview-orchestrator)
bin="${CARGO_TARGET_DIR:-$root/target}/release/preview-orchestrator"

echo "== making 1,024 signed 20 KB deliveries (32 PRs x 32 commits)"
python3 "$root/scripts/bench/make_bodies.py" \
    "$root/crates/preview-github/tests/fixtures/pull_request.synchronize.json" "$secret" "$work/bodies.txt" 32 32

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
"$bin" --dry-run-jobs \
    --github-token bench --github-webhook-secret "$secret" \
    --allowed-repos 'Codertocat/*' --preview-base-url https://previews.example \
    --api-token "bench-api-token-0123456789" --bind "127.0.0.1:$port" \
    --deployments-db "$work/deployments.json" --logs-dir "$work/logs" \
    --app-port-range 42000-42999 --db-port-range 43000-43999 --max-concurrent-previews 1000 \
    >/dev/null 2>"$work/stderr" &
server_pid=$!
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/health" 2>/dev/null && break
    sleep 0.05
done
curl -fsS -o /dev/null "http://127.0.0.1:$port/health" || { cat "$work/stderr" >&2; exit 1; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$server_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
hz="$(getconf CLK_TCK)"

sleep 1
idle_rss="$(rss_kb)"
# Context: how long an fsync takes on this disk right now (every acknowledgement waits for one).
fsync_ms="$(python3 - "$work" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT)
lat = []
for _ in range(50):
    t = time.perf_counter(); os.write(fd, b"x" * 4096); os.fsync(fd); lat.append(time.perf_counter() - t)
os.close(fd); os.unlink(path)
lat.sort()
print("%.2f" % (lat[25] * 1000))
PY
)"
load="$(cut -d' ' -f1-3 /proc/loadavg)"
# Context: this machine's speed right now. A VM's CPU time per request drifts by 10-20% between
# runs minutes apart; SHA-256 throughput (OpenSSL, one core) measured before and after the run
# shows which way. The server's own HMAC is SHA-256 over every 20 KB body.
sha_mbs() {
    python3 -c 'import hashlib, time
b = bytes(1 << 20); t = time.perf_counter()
for _ in range(256): hashlib.sha256(b).digest()
print("%.0f" % (256 / (time.perf_counter() - t)))'
}
sha_before="$(sha_mbs)"

lua="$root/scripts/bench/webhooks.lua"
run_wrk() { # duration nonce
    wrk -t"$threads" -c"$conns" -d"$1"s --timeout 5s -s "$lua" "http://127.0.0.1:$port" \
        -- "$work/bodies.txt" "$2" "$threads"
}

echo "== calibrating (5 s)"
cal="$(run_wrk 5 cal)"
cal_rps="$(echo "$cal" | awk '/^Requests\/sec/ {print int($2)}')"
[ "${cal_rps:-0}" -gt 0 ] || { echo "$cal"; echo "calibration failed" >&2; exit 1; }
duration=$(( (requests + cal_rps - 1) / cal_rps ))
echo "   ~${cal_rps} req/s; running ${duration} s for ~${requests} requests"

writes0="$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^preview_store_writes_total/ {print $2}')"
cpu0="$(cpu_ticks)"
out="$(run_wrk "$duration" main)"
cpu1="$(cpu_ticks)"
writes1="$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^preview_store_writes_total/ {print $2}')"
sha_after="$(sha_mbs)"
sleep 1
load_rss="$(rss_kb)"
echo "$out" | grep -v '^WRK '

line="$(echo "$out" | grep '^WRK ')"
val() { echo "$line" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k {print $2}'; }
reqs="$(val requests)"; dur_us="$(val duration_us)"
rps="$(awk -v r="$reqs" -v d="$dur_us" 'BEGIN {printf "%.0f", r / (d / 1e6)}')"
cpu_ms="$(awk -v t=$((cpu1 - cpu0)) -v hz="$hz" 'BEGIN {printf "%.0f", t * 1000 / hz}')"
per_k="$(awk -v c="$cpu_ms" -v r="$reqs" 'BEGIN {printf "%.1f", c / (r / 1000)}')"
non2xx="$(echo "$out" | awk '/Non-2xx/ {print $5}')"
stored="$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['deployments']), sum(1 for r in d['deployments'].values() if r['status']['state']=='running'))" "$work/deployments.json")"

cat <<REPORT

== webhook intake benchmark (benchmark mode: --dry-run-jobs; ${conns} connections, wrk -t${threads}, same 2 cores)
requests          ${reqs} in $(awk -v d="$dur_us" 'BEGIN {printf "%.1f", d / 1e6}') s (socket errors $(val errors), non-2xx ${non2xx:-0})
throughput        ${rps} req/s
latency p50       $(awk -v u="$(val p50_us)" 'BEGIN {printf "%.2f", u / 1000}') ms
latency p90       $(awk -v u="$(val p90_us)" 'BEGIN {printf "%.2f", u / 1000}') ms
latency p99       $(awk -v u="$(val p99_us)" 'BEGIN {printf "%.2f", u / 1000}') ms   (bar: <= 5 ms)
server CPU        ${cpu_ms} ms total, ${per_k} ms per 1,000 requests   (bar: <= 60 ms)
RSS idle          $(awk -v k="$idle_rss" 'BEGIN {printf "%.1f", k / 1024}') MB   (bar: <= 15 MB)
RSS after load    $(awk -v k="$load_rss" 'BEGIN {printf "%.1f", k / 1024}') MB   (bar: <= 40 MB after 1M requests)
store             ${stored} (deployments, running); $(( ${writes1%.*} - ${writes0%.*} )) atomic writes during the run, $(awk -v r="$reqs" -v w="$(( ${writes1%.*} - ${writes0%.*} ))" 'BEGIN {printf "%.1f", r / w}') acknowledgements per write
context           fsync p50 on this disk ${fsync_ms} ms; load average before the run ${load}
machine speed     SHA-256 ${sha_before} MB/s before the run, ${sha_after} MB/s after (one core; lower means a slower phase of this VM)
REPORT
