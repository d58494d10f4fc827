#!/usr/bin/env bash
# Fuzzes the planning parsers: the preview-config.yml parser and the docker-compose.preview.yml
# sanitiser (crates/preview-core/fuzz). Runs each target for DURATION seconds (default 600),
# seeded with the fixtures, then prints executions and crashes per target.
#
#   scripts/fuzz-planning.sh            # 10 minutes per target
#   scripts/fuzz-planning.sh 120        # 2 minutes per target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable with `--sanitizer none`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../crates/preview-core/fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
duration=${1:-600}
targets=(preview_config compose_sanitizer)

command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2; exit 1; }
cargo fuzz build --sanitizer none

status=0
summary=()
for target in "${targets[@]}"; do
    corpus="corpus/$target"
    mkdir -p "$corpus" "artifacts/$target"
    cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    log=$(mktemp)
    echo "== fuzzing $target for ${duration}s"
    set +e
    # -rss_limit_mb: a parser that balloons on a hostile input is a finding too.
    cargo fuzz run --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$duration" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    crashes=$(find "artifacts/$target" -type f | wc -l)
    corpus_size=$(find "$corpus" -type f | wc -l)
    summary+=("$target: ${execs:-?} executions (${rate:-?}/s), corpus $corpus_size, crashes $crashes, exit $rc")
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        status=1
        tail -n 40 "$log"
    fi
    rm -f "$log"
done
echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
exit "$status"
