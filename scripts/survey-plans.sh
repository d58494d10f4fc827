#!/usr/bin/env bash
# Plans every app directory under DIR with `preview plan --json` and prints one line per app:
# framework, start command, port and base image, or the refusal. For surveying a corpus of
# upstream apps taken unchanged (fixtures/upstream-sources.tsv lists the one used for issue 12:
# repository, commit and path of each app, with its licence). The apps themselves are not in
# this repository; fetch them at those commits into DIR/<name>/.
set -euo pipefail
dir=${1:?usage: scripts/survey-plans.sh DIR}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build -q -p preview-cli
planned=0 refused=0
for app in "$dir"/*/; do
    app=${app%/}
    name=$(basename "$app")
    [ "$name" = licenses ] && continue
    if json=$(target/debug/preview plan "$app" --json 2>/tmp/survey-err); then
        planned=$((planned + 1))
        printf '%-34s %s\n' "$name" "$(python3 -c 'import json,sys; j=json.load(sys.stdin)
print(j["framework"] or j["language"], "|", j["start_command"], "|", j["port"], "|", j["base_image"])' <<<"$json")"
    else
        refused=$((refused + 1))
        printf '%-34s REFUSED %s\n' "$name" "$(tail -n 1 /tmp/survey-err)"
    fi
done
echo "$planned planned, $refused refused"
