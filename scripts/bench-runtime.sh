#!/usr/bin/env bash
# Benchmark of the runtime on the real engine: time-to-preview through the orchestrator (signed
# `opened` webhook -> first 200 through nginx at /{slug}/pr-{N}/) against raw
# `docker compose up -d --build` of the same rendered Dockerfile and compose file plus a tight HTTP
# loop on the published port, cold and warm; and an update's time (`synchronize` changing only the
# app source) against a first deploy's. It prints median and min per measurement and PASS/FAIL per
# bar (overhead <= 10% and <= 1 s over raw compose; update <= 0.5x a first deploy). The exit code
# reflects errors only, never a bar.
#
#   scripts/bench-runtime.sh                 # 3 repetitions
#   BENCH_REPS=5 scripts/bench-runtime.sh    # more repetitions
#   BENCH_POLL_MS=10                         # HTTP poll interval of both paths (default 10)
#
# It needs the test bed (scripts/testbed.sh): dockerd, Compose v2+, nginx and the local
# python:3.12-slim-bookworm base image; the Flask sample's `pip install` reaches PyPI. The
# orchestrator runs in-process in a release build of crates/preview-orchestrator/examples/
# bench_runtime.rs with a fake GitHub API (comments, deployments and statuses are sent to it).
# "Cold" rebuilds the app's dependency layer (a fresh nonce in requirements.txt, so no cache
# entry matches; nobody else's images or cache are pruned), "warm" finds it cached and only the
# app source is new. Everything it creates (previews, the raw compose projects, the images they
# built, temp dirs) is removed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH:/opt/preview-testbed/bin"

docker info >/dev/null 2>&1 || { echo "bench-runtime: Docker does not answer (run scripts/testbed.sh)" >&2; exit 1; }
docker compose version >/dev/null 2>&1 || { echo "bench-runtime: Docker Compose v2+ is missing" >&2; exit 1; }
docker image inspect python:3.12-slim-bookworm >/dev/null 2>&1 \
    || { echo "bench-runtime: the base image python:3.12-slim-bookworm is missing (scripts/testbed.sh builds it)" >&2; exit 1; }

echo "== building the benchmark (release)" >&2
cargo build --release --quiet -p preview-orchestrator --example bench_runtime
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/examples/bench_runtime"

echo "== context: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), $(docker ps -q | wc -l) containers running on this engine" >&2
"$bin"
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
