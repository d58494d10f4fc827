#!/usr/bin/env bash
# The Swarm engine's end-to-end test on a real two-node swarm made on this machine
# (scripts/swarm-bed.sh: the test bed's engine is the manager, a second dockerd in a network
# namespace the worker, a private registry between them). The test is ignored in the plain
# `cargo test`, as it needs that swarm; this runs it with --ignored, then leaves the test bed's
# engine as it found it, whatever happened: no swarm, no second daemon, no namespace.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# A run killed half-way may have left its swarm: start from nothing.
scripts/swarm-bed.sh down
trap 'scripts/swarm-bed.sh down' EXIT
while IFS= read -r setting; do
    export "${setting?}"
done < <(scripts/swarm-bed.sh up)
# --workspace, as the test command builds: the same features, so nothing is compiled again.
cargo test --workspace --test it swarm:: -- --ignored --nocapture
