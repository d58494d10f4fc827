#!/usr/bin/env bash
# Fuzzes webhook parsing (crates/preview-github/fuzz) for a while.
#
#   scripts/fuzz-webhook.sh [DURATION_SECONDS] [TARGET]
#       DURATION_SECONDS  default 600 (10 minutes)
#       TARGET            parse_webhook (default: signature, content type, every event's parser)
#                         or preview_command (the /preview comment-command parser)
#
# Runs on stable Rust with `--sanitizer none`; installs cargo-fuzz from crates.io if missing.
# The corpus starts from the vendored real payloads. Prints libFuzzer's final stats (executions)
# and exits non-zero if a crash was found (the input is left under fuzz/artifacts/).
set -euo pipefail

duration="${1:-600}"
target="${2:-parse_webhook}"
case "$target" in
    parse_webhook | preview_command) ;;
    *) echo "fuzz-webhook: unknown target '$target' (parse_webhook or preview_command)" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/crates/preview-github/fuzz"
fixtures="$root/crates/preview-github/tests/fixtures"
corpus="$fuzz_dir/corpus/$target"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io" >&2
    cargo install cargo-fuzz --locked
fi

mkdir -p "$corpus"
if [ "$target" = parse_webhook ]; then
    # Seeds: each fixture as JSON (event byte 0 = pull_request, 1 = ping, 6 = issue_comment),
    # signed (third byte 0).
    for f in "$fixtures"/*.json; do
        name="$(basename "$f" .json)"
        case "$name" in
            ping) ev='\x01' ;;
            issue_comment.*) ev='\x06' ;;
            *) ev='\x00' ;;
        esac
        { printf "$ev"'\x00\x00'; cat "$f"; } > "$corpus/seed-$name"
    done
else
    # Seeds: comment bodies, commands and near misses.
    i=0
    for body in '/preview' '/preview redeploy' '/preview destroy' '/Preview  DESTROY' \
        $'\n\n/preview\r\nthanks' '/preview deploy now' '/previewer' '> /preview' 'LGTM'; do
        printf '%s' "$body" > "$corpus/seed-$i"
        i=$((i + 1))
    done
fi

cd "$fuzz_dir"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo fuzz run "$target" --sanitizer none "$corpus" -- \
    -max_total_time="$duration" -print_final_stats=1 -max_len=65536 -timeout=10 2>&1 | tee "$log" \
    | grep --line-buffered -E '^(#[0-9]+[[:space:]]+(DONE|pulse|INITED)|stat::|==[0-9]+== ERROR|SUMMARY|Done )'
status=${PIPESTATUS[0]}
set -e
execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -1)"
echo "fuzz-webhook: $target, ${duration}s, executions: ${execs:-unknown}, exit status ${status}"
if [ "$status" -ne 0 ]; then
    echo "fuzz-webhook: the fuzzer failed or found a crash; see $fuzz_dir/artifacts/" >&2
    tail -40 "$log" >&2
fi
exit "$status"
