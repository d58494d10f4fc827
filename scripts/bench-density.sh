#!/usr/bin/env bash
# Density benchmark on the real engine: the orchestrator binary, a private nginx and a fake
# GitHub (the ignored test `bench_density` in crates/preview-orchestrator/tests/it). It opens N
# previews of the stdlib Python sample, each with a Postgres database on the shared server
# (DATABASE_MODE=shared), puts all but a few to sleep, wakes sleeping ones through
# nginx as a browser would, and prints the memory of an awake and of a sleeping preview, the wake
# latency (first request through nginx to its 200) p50 and p95, and how many previews 4 GB holds
# by those figures. Its last line has this shape, to compare runs over time:
#
#   density: awake X MB, asleep Y MB per preview, wake p50 A s p95 B s, fits N previews in 4 GB
#
#   scripts/bench-density.sh                       # 30 previews, 3 awake, 20 wakes
#   BENCH_DENSITY_N=12 scripts/bench-density.sh    # fewer previews (a shorter run)
#   BENCH_DENSITY_AWAKE=5 BENCH_DENSITY_WAKES=40   # more awake, more wakes
#
# It needs the test bed (scripts/testbed.sh): dockerd, Compose v2+, nginx and the local
# python:3.12-slim-bookworm base image. Every preview it opens is closed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH:/opt/preview-testbed/bin"

docker info >/dev/null 2>&1 || { echo "bench-density: Docker does not answer (run scripts/testbed.sh)" >&2; exit 1; }
docker compose version >/dev/null 2>&1 || { echo "bench-density: Docker Compose v2+ is missing" >&2; exit 1; }
docker image inspect python:3.12-slim-bookworm >/dev/null 2>&1 \
    || { echo "bench-density: the base image python:3.12-slim-bookworm is missing (scripts/testbed.sh builds it)" >&2; exit 1; }

echo "== context: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(docker ps -q | wc -l) containers running on this engine" >&2
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
cargo test --quiet -p preview-orchestrator --test it bench_density::bench_density \
    -- --ignored --exact --nocapture --test-threads 1 | tee "$out" >&2
line="$(grep '^density: ' "$out" | tail -n 1)"
[ -n "$line" ] || { echo "bench-density: the benchmark printed no result" >&2; exit 1; }
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$line"
