#!/usr/bin/env bash
# Benchmarks `preview plan` on a generated 10,000-file monorepo (an npm workspace with one
# deployable app among 200 library packages) with hyperfine. The target is under 50 ms.
#
#   scripts/bench-plan.sh            # release build, 10,000 files
#   FILES=50000 scripts/bench-plan.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
files=${FILES:-10000}
command -v hyperfine >/dev/null || { echo "hyperfine is missing: apt-get install hyperfine" >&2; exit 1; }

cargo build --release --quiet -p preview-cli
bin=$PWD/target/release/preview

repo=$(mktemp -d)
trap 'rm -rf "$repo"' EXIT
packages=200
# Each package holds package.json, index.js and per_package sources; the root and the app add 4.
per_package=$(( (files - 4 + packages - 1) / packages - 2 ))
cat >"$repo/package.json" <<'JSON'
{ "name": "bench-monorepo", "private": true, "workspaces": ["apps/*", "packages/*"] }
JSON
mkdir -p "$repo/apps/api"
cp fixtures/apps/express/package.json fixtures/apps/express/package-lock.json fixtures/apps/express/app.js "$repo/apps/api/"
for p in $(seq -w 1 "$packages"); do
    dir="$repo/packages/pkg-$p"
    mkdir -p "$dir/src"
    printf '{ "name": "@bench/pkg-%s", "version": "1.0.0", "main": "index.js" }\n' "$p" >"$dir/package.json"
    printf 'module.exports = require("./src/f1.js");\n' >"$dir/index.js"
    for f in $(seq 1 "$per_package"); do
        printf 'exports.f%d = () => %d;\n' "$f" "$f" >"$dir/src/f$f.js"
    done
done
count=$(find "$repo" -type f | wc -l)
echo "generated a monorepo of $count files in $repo"
"$bin" plan "$repo" --json | grep -E '"(app_dir|framework)"'

hyperfine -N --warmup 5 --min-runs 30 --export-json "$repo/bench.json" \
    "$bin plan $repo --json" "$bin plan $repo"
mean_ms=$(python3 -c "import json,sys; r=json.load(open('$repo/bench.json'))['results'][0]; print(f\"{r['mean']*1000:.1f} ms mean, {r['stddev']*1000:.1f} ms stddev, {r['max']*1000:.1f} ms max\")")
echo "preview plan on $count files: $mean_ms (target < 50 ms)"
