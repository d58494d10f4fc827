#!/usr/bin/env bash
# Every non-Rust check of the infrastructure code in terraform/ and ansible/ (issue 7):
#   terraform fmt and the variables' validation rules; ansible-playbook --syntax-check; ansible-lint
#   (production profile); shellcheck of the shipped scripts; `nginx -t` on the nginx role's nginx.conf
#   (HTTP and HTTPS) plus a preview location, rendered by Ansible on localhost; systemd-analyze verify
#   of the units; a real converge of the nginx and orchestrator roles on a Debian container (twice, the
#   second run must change nothing), assertions on its files, users and modes, the nginx reload path
#   exercised as the orchestrator's user; and the docker role in check mode. The swarm role (issue 16):
#   daemon.json rendered for a single server and a Swarm node; the registry's rendered config served by the
#   real docker-registry (push, delete, garbage-collect); the role converged for real on two private
#   dockerds in network namespaces (twice), then its SSH access tasks and `docker -H ssh://` through a real
#   sshd in the worker's namespace.
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
    swarm_cleanup
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

# sshd for the swarm role's SSH check: the binary of Debian's openssh-server, unpacked (not
# installed, so no service starts) into $TOOLS/sshd with the one library it needs beyond the base.
SSHD_ROOT=$TOOLS/sshd
install_sshd() {
    [ -x "$SSHD_ROOT/usr/sbin/sshd" ] && [ -e "$SSHD_ROOT/usr/lib/x86_64-linux-gnu/libwrap.so.0" ] && return
    say "unpacking openssh-server and libwrap0 (apt-get download) into $SSHD_ROOT"
    local dir
    dir=$(mktemp -d)
    (cd "$dir" && apt-get download openssh-server libwrap0 >/dev/null 2>&1) ||
        die "apt-get download openssh-server libwrap0 failed; missing: network access to the Debian mirror"
    mkdir -p "$SSHD_ROOT"
    for deb in "$dir"/*.deb; do dpkg -x "$deb" "$SSHD_ROOT"; done
    rm -rf "$dir"
}
install_sshd
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
# A free loopback port for the registry check.
REGISTRY_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
render() {
    local dir
    for dir in http/preview-configs tls/preview-configs hosts/preview-configs logs root/etc/systemd/system root/etc/tmpfiles.d \
        root/usr/local/sbin root/usr/local/bin root/opt/preview-deployer/bin docker registry/data \
        root/etc/systemd/system/docker-registry.service.d; do
        mkdir -p "$RENDER/$dir"
    done
    (cd ansible && RENDER_DIR=$RENDER REGISTRY_PORT=$REGISTRY_PORT ansible-playbook -i localhost, tests/render.yml) >"$WORK/render.log" 2>&1 ||
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
    # The registry's unit is the docker-registry package's, with the swarm role's drop-in.
    [ -e "$root/usr/lib/systemd/system/docker-registry.service" ] ||
        { echo "the docker-registry package's unit is missing; missing: docker-registry (apt-get install docker-registry)"; return 1; }
    mkdir -p "$root/usr/bin"
    install -m 0755 /usr/bin/docker-registry /usr/bin/systemctl "$root/usr/bin/"
    grep -q '^ReadWritePaths=/var/lib/docker-registry$' "$root/etc/systemd/system/docker-registry.service.d/preview-deployer.conf"
    say "systemd-analyze verify: preview-orchestrator.service preview-nginx-reload.service preview-nginx-reload.path docker-registry.service (+ drop-in) docker-registry-gc.service docker-registry-gc.timer"
    # verify exits 0 on unknown keys and bad values; any output at all is a failure here.
    out=$(systemd-analyze verify --root="$root" --man=no \
        preview-orchestrator.service preview-nginx-reload.service preview-nginx-reload.path docker-registry.service \
        docker-registry-gc.service docker-registry-gc.timer 2>&1) || {
        printf '%s\n' "$out"
        return 1
    }
    [ -z "$out" ] || { printf '%s\n' "$out"; return 1; }
    say "systemd-analyze verify: no findings"
}

# --- the docker role's daemon.json and the swarm role -----------------------------------------------
daemon_json() {
    python3 - "$RENDER/docker/daemon-single.json" "$RENDER/docker/daemon-swarm.json" <<'PY'
import ipaddress, json, sys
single, swarm = (json.load(open(p)) for p in sys.argv[1:3])
pools = [{"base": "172.16.0.0/13", "size": 24}]
for name, conf in (("single", single), ("swarm", swarm)):
    assert conf["default-address-pools"] == pools, (name, conf)
    assert conf["log-opts"] == {"max-size": "10m", "max-file": "3"}, (name, conf)
assert single["insecure-registries"] == [] and single["live-restore"] is True, single
# Swarm mode refuses live-restore; the one insecure registry is the manager's VPC address.
assert swarm["insecure-registries"] == ["10.10.0.2:5000"] and swarm["live-restore"] is False, swarm
bridges = ipaddress.ip_network("172.16.0.0/13")
overlays = ipaddress.ip_network("172.24.0.0/13")
vpc = ipaddress.ip_network("10.0.0.0/8")
assert not bridges.overlaps(overlays) and not bridges.overlaps(vpc) and not overlays.overlaps(vpc)
print(f"[check-infra] daemon.json: pools {pools[0]['base']} in /{pools[0]['size']}s "
      f"({2 ** (24 - 13)} networks), disjoint from the overlays {overlays} and the VPC {vpc}; "
      f"a Swarm node trusts only {swarm['insecure-registries'][0]} over HTTP and has live-restore off")
PY
}

# The registry's rendered configuration, served by the real docker-registry on 127.0.0.1: the test
# bed's engine pushes an image to it (Docker trusts 127.0.0.0/8 without TLS), and a manifest can be
# deleted (delete.enabled). It listens on the configured address only.
registry_check() {
    REGISTRY_PID=
    local url=http://127.0.0.1:$REGISTRY_PORT image=127.0.0.1:$REGISTRY_PORT/check-infra/tiny:$$ digest tries=0 status
    trap '[ -z "$REGISTRY_PID" ] || kill "$REGISTRY_PID" 2>/dev/null || true' EXIT
    command -v docker-registry >/dev/null || { echo "missing: docker-registry (apt-get install docker-registry)"; return 1; }
    grep -q "addr: 127.0.0.1:$REGISTRY_PORT" "$RENDER/registry/config.yml"
    docker-registry serve "$RENDER/registry/config.yml" >"$WORK/registry.log" 2>&1 &
    REGISTRY_PID=$!
    until curl -fsS "$url/v2/" >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { cat "$WORK/registry.log"; echo "the registry did not answer on $url"; return 1; }
        sleep 0.1
    done
    say "docker-registry $(docker-registry --version | awk '{print $3}') answers on $url/v2/"
    if curl -fsS -m 2 "http://127.0.0.2:$REGISTRY_PORT/v2/" >/dev/null 2>&1; then
        echo "the registry answers on 127.0.0.2 too: http.addr is not honoured"
        return 1
    fi
    say "and not on 127.0.0.2 (http.addr binds the one address)"
    printf 'tiny\n' >"$WORK/tiny.txt"
    tar -C "$WORK" -cf "$WORK/tiny.tar" tiny.txt
    docker import "$WORK/tiny.tar" "$image" >/dev/null
    docker push --quiet "$image" >/dev/null || { docker image rm "$image" >/dev/null; return 1; }
    docker image rm "$image" >/dev/null
    digest=$(curl -fsS -o /dev/null -D - -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "$url/v2/check-infra/tiny/manifests/$$" | tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}')
    [ -n "$digest" ] || { echo "no manifest for the pushed image"; return 1; }
    say "pushed $image from the test bed's engine: $digest"
    status=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$url/v2/check-infra/tiny/manifests/$digest")
    [ "$status" = 202 ] || { echo "DELETE of the manifest answered $status, not 202 (delete.enabled)"; return 1; }
    status=$(curl -sS -o /dev/null -w '%{http_code}' "$url/v2/check-infra/tiny/manifests/$digest")
    [ "$status" = 404 ] || { echo "the deleted manifest still answers $status"; return 1; }
    say "deleted it again (202, then 404)"
    local blobs_before blobs_after
    blobs_before=$(find "$RENDER/registry/data" -name data -path '*/blobs/*' | wc -l)
    kill "$REGISTRY_PID"
    wait "$REGISTRY_PID" 2>/dev/null || true
    REGISTRY_PID=
    # As docker-registry-gc.service runs it, with the registry stopped.
    docker-registry garbage-collect --delete-untagged "$RENDER/registry/config.yml" >"$WORK/registry-gc.log" 2>&1 ||
        { cat "$WORK/registry-gc.log"; return 1; }
    blobs_after=$(find "$RENDER/registry/data" -name data -path '*/blobs/*' | wc -l)
    [ "$blobs_before" -gt 0 ] && [ "$blobs_after" = 0 ] ||
        { echo "garbage-collect left $blobs_after of $blobs_before blobs"; return 1; }
    say "garbage-collect --delete-untagged removed the deleted image's $blobs_before blobs"
}

# The swarm role for real, on two private dockerds (not the test bed's engine) in two network
# namespaces joined by a veth pair; each daemon runs with the docker role's rendered daemon.json for
# a Swarm node. Converged twice (the second run must change nothing), then: both nodes ready, the
# worker labelled with its Docker endpoint, overlay networks from the role's pool, and a wrong
# vpc_address refused.
# Also run by the script's own clean-up: it works from the names and the pid file, since the check
# itself runs in a subshell.
swarm_cleanup() {
    local node pid target ns
    if [ -e "$WORK/swarm/nodes" ]; then
        while read -r node pid target; do
            kill "$pid" "$target" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null || kill -0 "$target" 2>/dev/null; do sleep 0.1; done
        done <"$WORK/swarm/nodes"
    fi
    for ns in "pdci-m-$$" "pdci-w-$$"; do
        [ ! -e "/var/run/netns/$ns" ] || ip netns delete "$ns"
    done
    rm -rf "$WORK/swarm"
}

swarm_converge() {
    local net=$((RANDOM % 200 + 20)) node ns dir pid target tries manager worker recap
    local -A address=([manager]=10.232.$net.1 [worker]=10.232.$net.2)
    for tool in ip nsenter dockerd; do
        command -v "$tool" >/dev/null || { echo "missing: $tool"; return 1; }
    done
    manager=pdci-m-$$
    worker=pdci-w-$$
    trap swarm_cleanup EXIT
    mkdir -p "$WORK/swarm"
    for ns in "$manager" "$worker"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "pdm$$" netns "$manager" type veth peer name "pdw$$" netns "$worker"
    ip -n "$manager" addr add "${address[manager]}/30" dev "pdm$$"
    ip -n "$worker" addr add "${address[worker]}/30" dev "pdw$$"
    ip -n "$manager" link set "pdm$$" up
    ip -n "$worker" link set "pdw$$" up
    for node in manager worker; do
        ns=pdci-${node:0:1}-$$
        dir=$WORK/swarm/$node
        mkdir -p "$dir"
        # nsenter --net, not `ip netns exec`, which remounts /sys (dockerd then misses its cgroups).
        nsenter --net="/var/run/netns/$ns" dockerd --config-file "$RENDER/docker/daemon-swarm.json" \
            --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$dir/docker.pid" -H "unix://$dir/docker.sock" \
            --storage-driver vfs --bridge none --iptables=false >"$dir/dockerd.log" 2>&1 &
        pid=$!
        # Ansible reaches the node through this process's namespaces: `ip netns exec` gives it a
        # /sys of the namespace, so the gathered facts (addresses) are the node's. Its own /root,
        # /etc/ssh and /run (tmpfs, in a private mount namespace) take the SSH keys the role writes;
        # /run/docker.sock there is the node's dockerd (what `docker system dial-stdio` dials), and
        # /etc/passwd gains the user sshd's privilege separation needs.
        cp /etc/passwd "$dir/passwd"
        grep -q '^sshd:' "$dir/passwd" || echo 'sshd:x:64999:65534::/run/sshd:/usr/sbin/nologin' >>"$dir/passwd"
        # shellcheck disable=SC2016 # $1 is the inner shell's argument
        ip netns exec "$ns" unshare --mount --propagation private sh -c '
            mount -t tmpfs -o mode=0700 tmpfs /root
            mount -t tmpfs -o mode=0755 tmpfs /etc/ssh
            mount -t tmpfs -o mode=0755 tmpfs /run
            mount --bind "$1/passwd" /etc/passwd
            mkdir -m 0755 /run/sshd
            ln -s "$1/docker.sock" /run/docker.sock
            ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
            exec sleep infinity' sh "$dir" &
        target=$!
        printf '%s %s %s\n' "$node" "$pid" "$target" >>"$WORK/swarm/nodes"
        tries=0
        until docker -H "unix://$dir/docker.sock" info >/dev/null 2>&1; do
            tries=$((tries + 1))
            if [ "$tries" -ge 150 ] || ! kill -0 "$pid" 2>/dev/null; then
                tail -n 20 "$dir/dockerd.log"
                echo "the $node's dockerd did not start"
                return 1
            fi
            sleep 0.2
        done
    done
    local -a pids
    mapfile -t pids < <(awk '{print $3}' "$WORK/swarm/nodes")
    say "two private dockerds (with the rendered daemon-swarm.json) in namespaces $manager and $worker: ${address[manager]} and ${address[worker]}"
    {
        echo "preview_servers:"
        echo "  hosts:"
        echo "    swarm-manager:"
        echo "      ansible_connection: community.docker.nsenter"
        echo "      ansible_nsenter_pid: ${pids[0]}"
        echo "      ansible_python_interpreter: /usr/bin/python3"
        echo "      vpc_address: ${address[manager]}"
        echo "      swarm_test_docker_host: unix://$WORK/swarm/manager/docker.sock"
        echo "preview_workers:"
        echo "  hosts:"
        echo "    swarm-worker-1:"
        echo "      ansible_connection: community.docker.nsenter"
        echo "      ansible_nsenter_pid: ${pids[1]}"
        echo "      ansible_python_interpreter: /usr/bin/python3"
        echo "      vpc_address: ${address[worker]}"
        echo "      swarm_test_docker_host: unix://$WORK/swarm/worker/docker.sock"
        echo "all:"
        echo "  vars:"
        echo "    swarm_ssh_users: [root]"
    } >"$WORK/swarm/inventory.yml"
    swarm_play() {
        local log=$1
        shift
        (cd ansible && ansible-playbook -i "$WORK/swarm/inventory.yml" tests/swarm-converge.yml --skip-tags swarm-registry "$@") >"$log" 2>&1
    }
    say "converging the swarm role (--skip-tags swarm-registry)"
    swarm_play "$WORK/swarm/converge-1.log" || { tail -n 60 "$WORK/swarm/converge-1.log"; return 1; }
    grep -E '^swarm-(manager|worker-1) +:' "$WORK/swarm/converge-1.log"
    say "converging again: nothing may change"
    swarm_play "$WORK/swarm/converge-2.log" || { tail -n 60 "$WORK/swarm/converge-2.log"; return 1; }
    recap=$(grep -E '^swarm-(manager|worker-1) +:' "$WORK/swarm/converge-2.log")
    printf '%s\n' "$recap"
    if grep -vq ' changed=0 ' <<<"$recap"; then
        grep -B3 -E '^changed:' "$WORK/swarm/converge-2.log" | sed -n 1,40p
        echo "the second converge changed something: the swarm role is not idempotent"
        return 1
    fi
    local m="docker -H unix://$WORK/swarm/manager/docker.sock"
    local nodes label pool subnet
    nodes=$($m node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}' | sort)
    printf '  %s\n' "${nodes//$'\n'/$'\n'  }"
    [ "$(grep -c ' Ready' <<<"$nodes")" = 2 ] || { echo "expected two ready nodes"; return 1; }
    [ "$($m info --format '{{.Swarm.NodeAddr}}')" = "${address[manager]}" ] || { echo "the manager does not advertise ${address[manager]}"; return 1; }
    label=$($m node inspect --format '{{index .Spec.Labels "dev.preview-deployer.docker-host"}}' \
        "$(docker -H "unix://$WORK/swarm/worker/docker.sock" info --format '{{.Swarm.NodeID}}')")
    [ "$label" = "ssh://root@${address[worker]}" ] || { echo "the worker's label is '$label'"; return 1; }
    say "the worker is labelled dev.preview-deployer.docker-host=$label"
    pool=$($m info --format '{{json .Swarm.Cluster.DefaultAddrPool}}')
    [ "$pool" = '["172.24.0.0/13"]' ] || { echo "the Swarm's address pool is $pool"; return 1; }
    $m network create --driver overlay check-infra-overlay >/dev/null
    # The Swarm's allocator assigns the subnet a moment after the network exists.
    tries=0
    until subnet=$($m network inspect --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' check-infra-overlay) &&
        [ -n "$subnet" ]; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "the overlay network got no subnet"; return 1; }
        sleep 0.1
    done
    $m network rm check-infra-overlay >/dev/null
    [[ $subnet == 172.2[4-9].*/24 || $subnet == 172.3[01].*/24 ]] || { echo "an overlay network got $subnet"; return 1; }
    subnet=$($m network inspect --format '{{range .IPAM.Config}}{{.Subnet}}{{end}}' docker_gwbridge)
    [[ $subnet == 172.1[6-9].*/24 || $subnet == 172.2[0-3].*/24 ]] || { echo "docker_gwbridge got $subnet"; return 1; }
    say "overlay networks come from $pool in /24s; bridges (docker_gwbridge $subnet) from 172.16.0.0/13"
    if swarm_play "$WORK/swarm/wrong-address.log" -e vpc_address=10.232.$net.3; then
        echo "the role accepted a vpc_address that is on no interface"
        return 1
    fi
    grep -q 'Set vpc_address for every host' "$WORK/swarm/wrong-address.log" || { tail -n 30 "$WORK/swarm/wrong-address.log"; return 1; }
    say "a vpc_address on no interface of the host is refused with a message naming vpc_address"

    say "the SSH access tasks (tests/swarm-ssh-access.yml), twice"
    local play=tests/swarm-ssh-access.yml
    (cd ansible && ansible-playbook -i "$WORK/swarm/inventory.yml" "$play") >"$WORK/swarm/ssh-1.log" 2>&1 ||
        { tail -n 60 "$WORK/swarm/ssh-1.log"; return 1; }
    (cd ansible && ansible-playbook -i "$WORK/swarm/inventory.yml" "$play") >"$WORK/swarm/ssh-2.log" 2>&1 ||
        { tail -n 60 "$WORK/swarm/ssh-2.log"; return 1; }
    recap=$(grep -E '^swarm-(manager|worker-1) +:' "$WORK/swarm/ssh-2.log")
    printf '%s\n' "$recap"
    if grep -vq ' changed=0 ' <<<"$recap"; then
        grep -B3 -E '^changed:' "$WORK/swarm/ssh-2.log" | sed -n 1,40p
        echo "the second run of ssh_access.yml changed something"
        return 1
    fi
    local in_manager=(nsenter --target "${pids[0]}" --mount --net) in_worker=(nsenter --target "${pids[1]}" --mount --net)
    "${in_worker[@]}" grep -q '^restrict,command="docker system dial-stdio" ssh-ed25519 ' /root/.ssh/authorized_keys
    [ "$("${in_manager[@]}" stat -c %a /root/.ssh/id_ed25519)" = 600 ]
    # The worker's sshd, on its VPC address, with the host key the role put in the manager's known_hosts.
    printf '%s\n' "ListenAddress ${address[worker]}:22" 'HostKey /etc/ssh/ssh_host_ed25519_key' \
        'PermitRootLogin prohibit-password' 'PasswordAuthentication no' 'KbdInteractiveAuthentication no' \
        'UsePAM no' 'PidFile /run/sshd.pid' >"$WORK/swarm/sshd_config"
    "${in_worker[@]}" env LD_LIBRARY_PATH="$SSHD_ROOT/usr/lib/x86_64-linux-gnu" "$SSHD_ROOT/usr/sbin/sshd" -D -e \
        -f "$WORK/swarm/sshd_config" >"$WORK/swarm/sshd.log" 2>&1 &
    printf 'sshd %s %s\n' "$!" "$!" >>"$WORK/swarm/nodes"
    tries=0
    until "${in_manager[@]}" bash -c "exec 3<>/dev/tcp/${address[worker]}/22" 2>/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 50 ] || { cat "$WORK/swarm/sshd.log"; echo "sshd did not listen"; return 1; }
        sleep 0.1
    done
    local remote
    remote=$("${in_manager[@]}" timeout 60 docker -H "ssh://root@${address[worker]}" info --format '{{.Swarm.NodeAddr}}') ||
        { cat "$WORK/swarm/sshd.log"; return 1; }
    [ "$remote" = "${address[worker]}" ] || { echo "docker -H ssh:// reached $remote"; return 1; }
    say "from the manager, as root: docker -H ssh://root@${address[worker]} reaches the worker's dockerd (strict host key check)"
    remote=$("${in_manager[@]}" timeout 10 ssh -o BatchMode=yes "root@${address[worker]}" echo hello </dev/null 2>&1 || true)
    if grep -q '^hello$' <<<"$remote"; then
        echo "the key runs any command on the worker, not only docker system dial-stdio"
        return 1
    fi
    say "but the same key cannot run another command (\`ssh root@worker echo hello\` does not echo)"
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
check "the docker role's daemon.json: address pools, insecure registry only with a Swarm" daemon_json
check "the swarm role's registry configuration, served by docker-registry: push and delete" registry_check
check "the swarm role on two private dockerds in network namespaces (twice, idempotent)" swarm_converge

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
