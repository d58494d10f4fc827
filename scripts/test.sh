#!/usr/bin/env bash
# The whole test suite: sets up the test bed (packages, dockerd, base images), checks the infra
# code, then runs the gates (fmt, clippy) and every test on the real Docker engine and nginx.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"
started=$(date +%s)

tools_path=$(scripts/testbed.sh | tee /dev/stderr | sed -n 's/^PATH+=//p')
export PATH="$PATH:$tools_path"

if [ -x scripts/check-infra.sh ]; then
    echo "== infrastructure checks"
    scripts/check-infra.sh
fi

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo test"
log=$(mktemp)
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "== the Swarm engine on a two-node swarm (scripts/test-swarm.sh)"
scripts/test-swarm.sh 2>&1 | tee -a "$log"
swarm_status=${PIPESTATUS[0]}
[ "$status" -ne 0 ] || status=$swarm_status
set -e
read -r passed failed < <(awk '/^test result:/ { for (i = 1; i < NF; i++) {
    if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } }
    END { print p + 0, f + 0 }' "$log")
rm -f "$log"
echo "== done in $(( $(date +%s) - started ))s"
echo "tests: $passed passed, $failed failed"
exit "$status"
