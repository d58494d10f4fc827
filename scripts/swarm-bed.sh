#!/usr/bin/env bash
# A two-node Docker Swarm on this one machine, for the Swarm engine's tests:
#   up           the test bed's engine becomes the manager; a second dockerd, in a network
#                namespace joined by a veth pair, joins as a worker; a private registry serves
#                both (docker-registry: 127.0.0.1:5000 for pushes from the manager, which Docker
#                trusts without TLS, and the manager's veth address for the worker, which is
#                started with that address as an insecure registry; both share one storage).
#   kill-worker  kills everything in the worker's namespace (its dockerd, containerd and
#                containers), as a droplet that dies would.
#   down         leaves the swarm on both nodes, stops the worker and the registry, deletes the
#                namespace, the veth and what swarm mode left (docker_gwbridge), and the
#                registry's storage: the test bed's engine is as it was.
# `up` prints the settings the tests read, as NAME=value lines.
# Only loopback and the addresses of the namespace made here (10.231.0.0/30) are used.
set -euo pipefail

NS=preview-swarm-worker
HOST_IF=pvsw0
NS_IF=pvsw1
MANAGER_ADDR=10.231.0.1
WORKER_ADDR=10.231.0.2
STATE=/run/preview-swarm-bed
WORKER_SOCK=unix://$STATE/worker/docker.sock
REGISTRY_PORT=5000
# The worker's containers go under their own cgroup, so that killing the worker kills them too
# (their processes live outside its network namespace).
CGROUP=preview-swarm-worker

say() { echo "[swarm-bed] $*" >&2; }
die() { say "error: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "it must run as root (network namespaces, a second dockerd)"
for cmd in ip nsenter dockerd docker docker-registry curl; do
    command -v "$cmd" >/dev/null || die "missing: $cmd"
done

worker() { docker -H "$WORKER_SOCK" "$@"; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2
    shift 2
    for _ in $(seq $((secs * 10))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "timed out after ${secs}s waiting for $what"
}

registry_config() { # registry_config ADDRESS
    cat <<EOF
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $STATE/registry }
  delete: { enabled: true }
http: { addr: "$1:$REGISTRY_PORT" }
EOF
}

up() {
    docker info >/dev/null 2>&1 || die "the test bed's Docker engine does not answer (run scripts/testbed.sh)"
    [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ] ||
        die "the test bed's engine is already in a swarm; run '$0 down' first"
    mkdir -p "$STATE/worker" "$STATE/registry"

    say "network namespace $NS, veth $HOST_IF ($MANAGER_ADDR) <-> $NS_IF ($WORKER_ADDR)"
    ip netns add "$NS"
    ip link add "$HOST_IF" type veth peer name "$NS_IF"
    ip link set "$NS_IF" netns "$NS"
    ip addr add "$MANAGER_ADDR/30" dev "$HOST_IF"
    ip link set "$HOST_IF" up
    ip -n "$NS" addr add "$WORKER_ADDR/30" dev "$NS_IF"
    ip -n "$NS" link set "$NS_IF" up
    ip -n "$NS" link set lo up

    say "registry at 127.0.0.1:$REGISTRY_PORT and $MANAGER_ADDR:$REGISTRY_PORT"
    for addr in 127.0.0.1 "$MANAGER_ADDR"; do
        registry_config "$addr" >"$STATE/registry-$addr.yml"
        setsid docker-registry serve "$STATE/registry-$addr.yml" >"$STATE/registry-$addr.log" 2>&1 &
        echo $! >"$STATE/registry-$addr.pid"
    done
    wait_for 20 "the registry" curl -fsS "http://127.0.0.1:$REGISTRY_PORT/v2/"
    wait_for 20 "the registry on the veth" curl -fsS "http://$MANAGER_ADDR:$REGISTRY_PORT/v2/"

    say "worker dockerd in $NS"
    # nsenter --net, not `ip netns exec`: the latter remounts /sys and dockerd then fails.
    setsid nsenter --net="/var/run/netns/$NS" dockerd \
        --data-root "$STATE/worker/data" --exec-root "$STATE/worker/exec" \
        --pidfile "$STATE/worker/dockerd.pid" -H "$WORKER_SOCK" \
        --bridge none --iptables=false --ip-masq=false --cgroup-parent "/$CGROUP" \
        --insecure-registry "$MANAGER_ADDR:$REGISTRY_PORT" \
        >"$STATE/worker/dockerd.log" 2>&1 &
    wait_for 60 "the worker's dockerd" worker info

    say "swarm: manager on the test bed's engine, worker joins"
    docker swarm init --advertise-addr "$MANAGER_ADDR" --listen-addr "$MANAGER_ADDR:2377" \
        --dispatcher-heartbeat 1s >/dev/null
    token=$(docker swarm join-token -q worker)
    worker swarm join --token "$token" --advertise-addr "$WORKER_ADDR" \
        --listen-addr "$WORKER_ADDR:2377" "$MANAGER_ADDR:2377" >/dev/null
    worker_id=$(worker info --format '{{.Swarm.NodeID}}')
    wait_for 30 "the worker to be ready" \
        sh -c "docker node inspect $worker_id --format '{{.Status.State}}' | grep -qx ready"
    docker node update --label-add "dev.preview-deployer.docker-host=$WORKER_SOCK" "$worker_id" >/dev/null
    say "up: manager $(docker info --format '{{.Swarm.NodeID}}'), worker $worker_id"
    echo "SWARM_REGISTRY=$MANAGER_ADDR:$REGISTRY_PORT"
    echo "SWARM_PUSH_REGISTRY=127.0.0.1:$REGISTRY_PORT"
    echo "SWARM_WORKER_HOST=$WORKER_SOCK"
    echo "SWARM_WORKER_ID=$worker_id"
    echo "SWARM_WORKER_ADDR=$WORKER_ADDR"
    echo "SWARM_MANAGER_ADDR=$MANAGER_ADDR"
}

kill_worker() {
    local pids=()
    # Its daemons are in $NS; its containers' processes are in the worker's cgroup.
    mapfile -t pids < <(ip netns pids "$NS" 2>/dev/null || true)
    mapfile -t -O "${#pids[@]}" pids < <(pgrep -f "$STATE/worker" || true)
    mapfile -t -O "${#pids[@]}" pids < <(find "/sys/fs/cgroup/pids/$CGROUP" -name cgroup.procs \
        -exec cat {} + 2>/dev/null || true)
    if [ ${#pids[@]} -gt 0 ]; then
        kill -9 "${pids[@]}" 2>/dev/null || true
    fi
    say "killed the worker (${#pids[@]} processes)"
}

down() {
    if worker info >/dev/null 2>&1; then
        worker swarm leave --force >/dev/null 2>&1 || true
    fi
    if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != inactive ]; then
        docker swarm leave --force >/dev/null 2>&1 || true
    fi
    kill_worker 2>/dev/null || true
    # Images tagged for the bed's registry: a failed test leaves them on the manager.
    docker image ls --format '{{.Repository}}:{{.Tag}}' |
        grep -E "^(127\.0\.0\.1|${MANAGER_ADDR//./\\.}):$REGISTRY_PORT/" |
        xargs -r docker image rm --force >/dev/null 2>&1 || true
    for f in "$STATE"/registry-*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    # Swarm mode leaves its bridge network behind; `swarm leave` removed the ingress.
    for _ in $(seq 50); do
        docker network rm docker_gwbridge >/dev/null 2>&1 || true
        docker network inspect docker_gwbridge >/dev/null 2>&1 || break
        sleep 0.2
    done
    ip link del "$HOST_IF" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
    # The worker's mounts (overlay layers, netns files) must go before its data root.
    grep " $STATE/" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$STATE"
    # The worker's empty cgroups, deepest first.
    find /sys/fs/cgroup/*/"$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
    say "down: no swarm, no worker, no namespace"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    kill-worker) kill_worker ;;
    *) die "usage: $0 up|down|kill-worker" ;;
esac
