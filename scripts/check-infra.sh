#!/usr/bin/env bash
# Every non-Rust check of the infrastructure code in terraform/ and ansible/ (issue 7):
#   terraform fmt and the variables' validation rules; ansible-playbook --syntax-check; ansible-lint
#   (production profile); shellcheck of the shipped scripts; `nginx -t` on the nginx role's nginx.conf
#   (HTTP and HTTPS) plus a preview location, rendered by Ansible on localhost; systemd-analyze verify
#   of the units; a real converge of the nginx and orchestrator roles on a Debian container (twice, the
#   second run must change nothing), assertions on its files, users and modes, the nginx reload path
#   exercised as the orchestrator's user; and the docker role in check mode.
# The container checks run in the background alongside the local ones; each check prints what it
# checks, and the script ends non-zero with the list of failed checks if any failed.
# The HCL structure test runs under `cargo test -p preview-infra`.
# Tools go to $TESTBED_TOOLS/infra-venv (default /opt/preview-testbed); a warm run reinstalls nothing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TESTBED_TOOLS:-/opt/preview-testbed}
VENV=$TOOLS/infra-venv
REQUIREMENTS=$ROOT/ansible/tests/requirements.txt
IMAGE=python:3.12-slim-bookworm
CONTAINER=preview-infra-check-$$-$RANDOM
WORK=$(mktemp -d /tmp/preview-infra-check.XXXXXX)
started=$(date +%s)
failures=()

say() { printf '[check-infra] %s\n' "$*"; }
die() {
    printf '[check-infra] FAILED: %s\n' "$*" >&2
    exit 1
}

LANE_PID=
CHECK_PID=
# Ends a process and its descendants, by id (an interrupted run must not leave ansible behind).
kill_tree() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        kill_tree "$child"
    done
    kill "$1" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in $LANE_PID $CHECK_PID; do
        kill_tree "$pid"
    done
    docker rm -f "$CONTAINER" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs one named check in a background subshell so that `set -e` applies inside it (it would be
# ignored in an `if`), records a failure and goes on with the next check.
check() {
    local name=$1 t0
    shift
    t0=$(date +%s)
    printf '\n[check-infra] == %s\n' "$name"
    (set -euo pipefail; "$@") &
    CHECK_PID=$!
    local rc=0
    wait "$CHECK_PID" || rc=$?
    CHECK_PID=
    if [ "$rc" = 0 ]; then
        say "ok: $name ($(($(date +%s) - t0))s)"
    else
        say "FAILED: $name ($(($(date +%s) - t0))s)"
        failures+=("$name")
    fi
}

# --- prerequisites --------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root: the converge test drives Docker; missing: root"
for tool in terraform nginx systemd-analyze openssl docker; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool is not on PATH; missing: $tool (scripts/testbed.sh installs nginx, systemd and docker; terraform >= 1.5 must be installed by hand)"
done
if ! docker info >/dev/null 2>&1 || ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "dockerd or the $IMAGE image is missing; running scripts/testbed.sh"
    "$ROOT/scripts/testbed.sh" >&2 || die "scripts/testbed.sh could not set up dockerd and $IMAGE"
fi

install_tools() {
    local want python
    want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
    if [ -x "$VENV/bin/ansible-playbook" ] && [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" = "$want" ] &&
        "$VENV/bin/python" -c 'import ansible, ansiblelint' 2>/dev/null; then
        say "tools: ansible, ansible-lint and shellcheck already in $VENV"
        return
    fi
    # Debian's python3, not whatever python3 comes first on PATH: the venv must outlive shims.
    python=/usr/bin/python3
    [ -x "$python" ] || python=$(command -v python3) || die "no python3; missing: python3"
    if ! "$python" -c 'import ensurepip' 2>/dev/null; then
        say "installing python3-venv"
        apt-get update -qq || die "apt-get update failed; missing: network access to the Debian mirror"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
            die "apt-get install python3-venv failed; missing: python3-venv"
    fi
    say "installing $(grep -c '^[a-z]' "$REQUIREMENTS") pinned packages from PyPI into $VENV (about a minute)"
    rm -rf "$VENV"
    "$python" -m venv "$VENV" || die "python3 -m venv $VENV failed"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQUIREMENTS" ||
        die "pip install -r $REQUIREMENTS failed; missing: network access to PyPI"
    printf '%s\n' "$want" >"$VENV/.requirements.sha256"
}
install_tools
export PATH="$VENV/bin:$PATH"
export ANSIBLE_CONFIG=$ROOT/ansible/ansible.cfg ANSIBLE_NOCOLOR=1 ANSIBLE_PIPELINING=1
export ANSIBLE_HOME=$TOOLS/ansible-home ANSIBLE_LOCAL_TEMP=$WORK/ansible-tmp
export ANSIBLE_DEPRECATION_WARNINGS=0 ANSIBLE_CALLBACK_RESULT_FORMAT=yaml
export CHECKPOINT_DISABLE=1
# The environment may name a terraform CLI config that does not exist; terraform then warns.
[ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ] && unset TF_CLI_CONFIG_FILE

cd "$ROOT"

# --- terraform --------------------------------------------------------------------------------------
terraform_fmt() {
    say "terraform fmt -check -diff -recursive terraform/ ($(terraform version | sed -n 1p))"
    terraform fmt -check -diff -recursive terraform/
}

# `terraform validate` needs the DigitalOcean provider, which cannot be downloaded here; the
# variables' validation rules need no provider, so they are exercised by planning variables.tf alone.
terraform_variables() {
    local dir=$WORK/tf-variables key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKeyTestKeyTestKey you@laptop"
    mkdir -p "$dir"
    cp terraform/variables.tf "$dir/"
    (cd "$dir" && terraform init -input=false -no-color >/dev/null)
    plan() { (cd "$dir" && terraform plan -input=false -no-color -lock=false -var "ssh_public_key=$key" "$@" >"$dir/out" 2>&1); }
    accept() {
        plan "$@" || { cat "$dir/out"; echo "rejected valid input: $*"; return 1; }
        say "accepted: ${*:-defaults}"
    }
    reject() {
        if plan "$@"; then echo "accepted invalid input: $*"; return 1; fi
        grep -q 'Invalid value for variable' "$dir/out" || { cat "$dir/out"; return 1; }
        say "rejected: $*"
    }
    accept
    accept -var region=nyc3 -var droplet_size=s-1vcpu-2gb -var 'admin_cidrs=["203.0.113.7/32","2001:db8::/32"]' -var alert_email=ops@example.com
    reject -var region=mars1
    reject -var droplet_size=s-1vcpu-1gb
    reject -var droplet_size=huge
    reject -var 'admin_cidrs=[]'
    reject -var 'admin_cidrs=["203.0.113.7/33"]'
    reject -var alert_email=not-an-address
    reject -var name=Bad_Name
    reject -var alert_threshold_percent=0
    accept -var preview_domain=preview.example.com -var dns_zone=example.com
    reject -var preview_domain=Preview.Example.com
    reject -var dns_zone=example..com
    accept -var worker_count=3 -var worker_size=s-4vcpu-8gb -var vpc_ip_range=10.20.0.0/16
    accept -var worker_count=20 -var vpc_uuid=0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b
    reject -var worker_count=21
    reject -var worker_count=-1
    reject -var worker_count=1.5
    reject -var worker_size=s-1vcpu-1gb
    reject -var vpc_uuid=default
    reject -var vpc_ip_range=172.16.0.0/16
    reject -var vpc_ip_range=10.10.0.0/12
    reject -var vpc_ip_range=10.10.0.0/28
    reject -var vpc_ip_range=10.10.0.1/20
    reject -var vpc_ip_range=10.300.0.0/16
    (cd "$dir" && terraform plan -input=false -no-color -lock=false -var "ssh_public_key=not a key" >"$dir/out" 2>&1) &&
        { echo "accepted an invalid ssh_public_key"; return 1; }
    say "rejected: ssh_public_key=not a key"
}

# --- ansible: syntax, lint, shellcheck --------------------------------------------------------------
syntax_check() {
    say "$(ansible-playbook --version | sed -n 1p)"
    (cd ansible && ansible-playbook -i inventory.example.yml --syntax-check playbook.yml)
    (cd ansible && ansible-playbook -i localhost, --syntax-check tests/render.yml tests/verify.yml)
}

lint() {
    say "$(ansible-lint --version --nocolor 2>/dev/null | sed -n 1p)"
    (cd ansible && ansible-lint --offline --profile production --nocolor)
}

# --- templates rendered by Ansible on localhost ------------------------------------------------------
RENDER=$WORK/render
render() {
    local dir
    for dir in http/preview-configs tls/preview-configs hosts/preview-configs logs root/etc/systemd/system root/etc/tmpfiles.d \
        root/usr/local/sbin root/usr/local/bin root/opt/preview-deployer/bin; do
        mkdir -p "$RENDER/$dir"
    done
    (cd ansible && RENDER_DIR=$RENDER ansible-playbook -i localhost, tests/render.yml) >"$WORK/render.log" 2>&1 ||
        { cat "$WORK/render.log"; return 1; }
    say "rendered into $RENDER: $(cd "$RENDER" && find . -type f | sort | tr '\n' ' ')"
    : >"$WORK/render-done"
}

shellcheck_scripts() {
    shellcheck --version | sed -n 2p
    shellcheck scripts/check-infra.sh ansible/roles/nginx/files/reload-nginx.sh \
        "$RENDER/root/usr/local/sbin/preview-nginx-apply" "$RENDER/root/usr/local/bin/preview-nginx-reload"
    say "shellcheck: clean"
}

nginx_test() {
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=previews.example.test \
        -keyout "$RENDER/tls/privkey.pem" -out "$RENDER/tls/fullchain.pem" 2>/dev/null
    local variant
    for variant in http tls; do
        grep -q 'location /owner-repo/pr-1/' "$RENDER/$variant/preview-configs/owner-repo-pr-1.conf"
        say "nginx -t on the $variant nginx.conf with the preview location included"
        nginx -t -c "$RENDER/$variant/nginx.conf"
    done
    grep -Eq 'server_name a{54}-x1-pr-1[.]previews[.]example[.]test;' "$RENDER/hosts/preview-configs/owner-repo-pr-1.conf"
    say "nginx -t on the hostname nginx.conf with a preview server block of a 63-character label"
    nginx -t -c "$RENDER/hosts/nginx.conf"
    # The check must be able to fail: a broken preview location is refused.
    printf 'location /broken/ {\n    proxy_pass http://127.0.0.1:8001/\n}\n' >"$RENDER/http/preview-configs/broken.conf"
    if nginx -t -q -c "$RENDER/http/nginx.conf" 2>/dev/null; then
        echo "nginx -t accepted a broken preview location"
        return 1
    fi
    rm "$RENDER/http/preview-configs/broken.conf"
    say "nginx -t refuses a broken preview location, as it should"
}

systemd_verify() {
    local root=$RENDER/root out
    # verify resolves dependencies (docker.service, nginx.service, paths.target) and ExecStart paths
    # inside --root, so the tree gets the host's unit library and a stand-in binary.
    mkdir -p "$root/usr/lib/systemd" "$root/opt/preview-deployer/bin"
    cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
    install -m 0755 ansible/tests/files/stand-in-orchestrator.py "$root/opt/preview-deployer/bin/preview-orchestrator"
    say "systemd-analyze verify: preview-orchestrator.service preview-nginx-reload.service preview-nginx-reload.path"
    # verify exits 0 on unknown keys and bad values; any output at all is a failure here.
    out=$(systemd-analyze verify --root="$root" --man=no \
        preview-orchestrator.service preview-nginx-reload.service preview-nginx-reload.path 2>&1) || {
        printf '%s\n' "$out"
        return 1
    }
    [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
    say "systemd-analyze verify: no findings"
}

# --- converge on a Debian container --------------------------------------------------------------------
INVENTORY=$WORK/inventory.yml
write_inventory() {
    install -m 0755 ansible/tests/files/stand-in-orchestrator.py "$WORK/preview-orchestrator"
    cat >"$INVENTORY" <<EOF
preview_servers:
  hosts:
    converge-target:
      ansible_connection: community.docker.docker
      ansible_host: $CONTAINER
      ansible_user: root
      ansible_become: false
      ansible_python_interpreter: /usr/bin/python3
      orchestrator_binary_src: $WORK/preview-orchestrator
      orchestrator_github_token: ghp_testbed000000000000000000000000000000
      orchestrator_webhook_secret: testbed-webhook-secret-0123456789
      orchestrator_api_token: testbed-api-token-0123456789abcdef
      orchestrator_allowed_repos: ["acme/*", "octo/app"]
      orchestrator_preview_base_url: http://previews.test
EOF
}

# Runs the real playbook against the container; prints the recap line of the target.
playbook() {
    local log=$1
    shift
    if ! (cd ansible && ansible-playbook -i "$INVENTORY" playbook.yml "$@") >"$log" 2>&1; then
        tail -n 60 "$log"
        return 1
    fi
    grep -E '^converge-target +:' "$log"
}

converge() {
    say "starting container $CONTAINER from $IMAGE"
    docker run -d --name "$CONTAINER" --label preview-deployer.test=check-infra "$IMAGE" sleep infinity >/dev/null
    write_inventory
    say "converging the nginx and orchestrator roles (playbook.yml --skip-tags docker)"
    playbook "$WORK/converge-1.log" --skip-tags docker
    say "converging again: nothing may change"
    local recap
    recap=$(playbook "$WORK/converge-2.log" --skip-tags docker)
    printf '%s\n' "$recap"
    if ! grep -q ' changed=0 ' <<<"$recap"; then
        grep -B3 -E '^changed:' "$WORK/converge-2.log" | sed -n 1,40p
        echo "the second converge changed something: the roles are not idempotent"
        return 1
    fi
}

converged() { docker inspect "$CONTAINER" >/dev/null 2>&1 && [ -s "$WORK/converge-2.log" ]; }

verify() {
    converged || { echo "not run: the converge failed"; return 1; }
    (cd ansible && ansible-playbook -i "$INVENTORY" tests/verify.yml) >"$WORK/verify.log" 2>&1 ||
        { tail -n 40 "$WORK/verify.log"; return 1; }
    grep -E '^converge-target +:' "$WORK/verify.log"
    say "files, owners, modes, the user and its groups, the env file and the unit are as specified"
}

# Runs the converged nginx for real: the stand-in orchestrator behind /webhook/, a preview app, and
# the reload path (request as preview-deployer, answer as root) that the path unit drives on a server.
in_box() { docker exec "$CONTAINER" "$@"; }
as_deployer() { docker exec -u preview-deployer "$CONTAINER" "$@"; }
probe() { in_box /usr/bin/python3 /tmp/http-probe.py "$@"; }

# The path unit's part, without systemd: wait for a new nonce, then run the root-side script with
# `systemctl reload nginx` mapped to `nginx -s reload`, as the container has no systemd.
answer_reload_request() {
    local before=$1 tries=0
    while [ "$(in_box cat /var/lib/preview-nginx-reload/request)" = "$before" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "no reload request was written"; return 1; }
        sleep 0.1
    done
    in_box env PATH=/tmp/shim:/usr/sbin:/usr/bin:/sbin:/bin /usr/local/sbin/preview-nginx-apply
}

request_reload() {
    local before out_file=$WORK/reload.out pid rc=0
    before=$(in_box cat /var/lib/preview-nginx-reload/request)
    as_deployer /usr/local/bin/preview-nginx-reload >"$out_file" 2>&1 &
    pid=$!
    answer_reload_request "$before"
    wait "$pid" || rc=$?
    sed 's/^/  reload: /' "$out_file"
    return "$rc"
}

exercise() {
    converged || { echo "not run: the converge failed"; return 1; }
    # The preview location comes from the render check, which runs at the same time.
    local waited=0
    until [ -e "$WORK/render-done" ]; do
        [ ! -e "$WORK/render-failed" ] && [ "$waited" -lt 600 ] || { echo "not run: the render check failed"; return 1; }
        sleep 0.5
        waited=$((waited + 1))
    done
    docker cp ansible/tests/files/http-probe.py "$CONTAINER:/tmp/http-probe.py" >/dev/null
    in_box mkdir -p /tmp/shim /srv/app
    printf '#!/bin/sh\n[ "$*" = "reload nginx" ] && exec nginx -s reload\necho "systemctl stand-in: $*" >&2\nexit 1\n' |
        docker exec -i "$CONTAINER" tee /tmp/shim/systemctl >/dev/null
    in_box chmod 0755 /tmp/shim/systemctl
    echo "preview owner-repo pr-1" | docker exec -i "$CONTAINER" tee /srv/app/index.html >/dev/null

    say "nginx -t on the converged configuration, then start nginx"
    in_box nginx -t
    in_box nginx
    say "start the stand-in orchestrator as preview-deployer and a preview app on 127.0.0.1:8000"
    docker exec -d -u preview-deployer "$CONTAINER" /opt/preview-deployer/bin/preview-orchestrator
    docker exec -d "$CONTAINER" python3 -m http.server 8000 --bind 127.0.0.1 --directory /srv/app

    say "only the webhook of the orchestrator is reachable through nginx"
    probe GET http://127.0.0.1:3000/health 200 healthy
    probe POST http://127.0.0.1/webhook/github 202 "accepted /webhook/github"
    probe POST http://127.0.0.1/webhook 202 "accepted /webhook"
    probe GET http://127.0.0.1/webhook/ 403
    probe GET http://127.0.0.1/health 404
    probe GET http://127.0.0.1/owner-repo/pr-1/ 404

    say "preview-deployer writes a preview location and asks for a reload"
    docker exec -i -u preview-deployer "$CONTAINER" tee /etc/nginx/preview-configs/owner-repo-pr-1.conf \
        <"$RENDER/http/preview-configs/owner-repo-pr-1.conf" >/dev/null
    request_reload
    grep -q 'test is successful' "$WORK/reload.out"
    probe GET http://127.0.0.1/owner-repo/pr-1/ 200 "preview owner-repo pr-1"

    say "a broken location is refused by nginx -t, reported to the orchestrator, and nothing breaks"
    printf 'location /broken/ {\n    proxy_pass http://127.0.0.1:8001/\n}\n' |
        docker exec -i -u preview-deployer "$CONTAINER" tee /etc/nginx/preview-configs/broken.conf >/dev/null
    if request_reload; then
        echo "the reload command succeeded on a broken configuration"
        return 1
    fi
    grep -q 'test failed' "$WORK/reload.out"
    probe GET http://127.0.0.1/owner-repo/pr-1/ 200 "preview owner-repo pr-1"
    as_deployer rm /etc/nginx/preview-configs/broken.conf

    say "the orchestrator's user cannot touch what it does not own"
    must_fail() {
        if as_deployer "$@" >/dev/null 2>&1; then
            echo "preview-deployer could: $*"
            return 1
        fi
        say "refused as preview-deployer: $*"
    }
    must_fail sh -c ': >/etc/nginx/nginx.conf'
    must_fail sh -c ': >/var/lib/preview-nginx-reload/status'
    must_fail ln -s /etc/shadow /var/lib/preview-nginx-reload/request.new
    must_fail tee /usr/local/sbin/preview-nginx-apply
    as_deployer test -r /opt/preview-deployer/orchestrator.env
    in_box stat -c '%U:%G %a %n' /var/lib/preview-nginx-reload/status /var/lib/preview-nginx-reload/request
}

docker_check_mode() {
    converged || { echo "not run: the converge failed"; return 1; }
    say "docker role in check mode (playbook.yml --tags docker --check)"
    local recap
    recap=$(playbook "$WORK/docker-check.log" --tags docker --check)
    printf '%s\n' "$recap"
    grep -q ' failed=0 ' <<<"$recap"
    # Docker's apt repository is unreachable here: the key download and the docker-ce install
    # are the two tasks allowed to fail, and only in check mode (ignore_errors: ansible_check_mode).
    if ! grep -q ' ignored=[0-2] ' <<<"$recap"; then
        echo "more than the two network-bound tasks failed in check mode"
        return 1
    fi
    awk '/^TASK \[/ { task = $0; sub(/^TASK \[/, "", task); sub(/\] \**$/, "", task) }
         /^\.\.\.ignoring/ { print "  ignored in check mode (Docker'"'"'s repository is unreachable here): " task }' \
        "$WORK/docker-check.log"
}

# --- run ----------------------------------------------------------------------------------------------
# The container checks mostly wait on docker exec and apt, so they start first and run in the
# background while the CPU-bound local checks (ansible-lint above all) run here; their output follows.
container_lane() {
    failures=()
    check "converge nginx + orchestrator roles on a $IMAGE container (twice, idempotent)" converge
    # Check mode changes nothing on the container, so it runs beside the verification.
    docker_lane >"$WORK/docker-check.out" 2>&1 &
    local docker_pid=$!
    check "assert the converged files, users and modes (tests/verify.yml)" verify
    check "run the converged nginx: webhook only, a preview location, reload as preview-deployer" exercise
    wait "$docker_pid" || true
    cat "$WORK/docker-check.out"
    [ ! -s "$WORK/docker-failures" ] || mapfile -t -O "${#failures[@]}" failures <"$WORK/docker-failures"
    [ ${#failures[@]} -eq 0 ] || printf '%s\n' "${failures[@]}" >"$WORK/lane-failures"
    : >"$WORK/lane-done"
}
docker_lane() {
    local -a failures=()
    check "docker role in check mode" docker_check_mode
    [ ${#failures[@]} -eq 0 ] || printf '%s\n' "${failures[@]}" >"$WORK/docker-failures"
}
printf '\n[check-infra] == starting the container checks in the background (output at the end)\n'
container_lane >"$WORK/lane.log" 2>&1 &
LANE_PID=$!

check "terraform fmt" terraform_fmt
check "terraform variable validation (variables.tf planned without providers)" terraform_variables
check "ansible-playbook --syntax-check" syntax_check
check "render the roles' templates with Ansible on localhost" render
[ -e "$WORK/render-done" ] || : >"$WORK/render-failed"
check "ansible-lint --profile production" lint
check "shellcheck of the shipped shell scripts" shellcheck_scripts
check "nginx -t on the rendered nginx.conf (HTTP and HTTPS) plus a preview location" nginx_test
check "systemd-analyze verify of the units" systemd_verify

if [ -n "$LANE_PID" ] && kill -0 "$LANE_PID" 2>/dev/null; then
    say "waiting for the container checks"
fi
wait "$LANE_PID" || true
LANE_PID=
printf '\n[check-infra] ---- container checks (ran alongside the checks above) ----\n'
cat "$WORK/lane.log"
[ -e "$WORK/lane-done" ] || failures+=("the container checks did not finish")
[ ! -s "$WORK/lane-failures" ] || mapfile -t -O "${#failures[@]}" failures <"$WORK/lane-failures"

# --- summary ------------------------------------------------------------------------------------------
echo
if [ ${#failures[@]} -gt 0 ]; then
    say "${#failures[@]} check(s) FAILED in $(($(date +%s) - started))s:"
    printf '[check-infra]   - %s\n' "${failures[@]}"
    exit 1
fi
say "all infrastructure checks passed in $(($(date +%s) - started))s"
