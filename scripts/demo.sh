#!/usr/bin/env bash
# The main job on this machine: sets up the test bed, builds the `preview` CLI and runs a sample
# app (default: fixtures/apps/python-plain) with `preview up`, the same plan, generator and
# compose path the orchestrator uses for a pull request. Ctrl-C stops and removes it.
#   scripts/demo.sh [APP_DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
app=${1:-fixtures/apps/python-plain}

scripts/testbed.sh >/dev/null
echo "== building the preview CLI"
cargo build --quiet --release -p preview-cli
echo "== the plan for $app"
target/release/preview plan "$app"
echo "== preview up $app  (Ctrl-C to stop)"
exec target/release/preview up "$app"
