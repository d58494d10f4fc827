#!/usr/bin/env bash
# Materialises official upstream starter apps from the npm registry and PyPI, with each
# framework's own generator or distribution at a pinned version, into $UPSTREAM_DIR (default
# $TESTBED_TOOLS/upstream, i.e. /opt/preview-testbed/upstream). The orchestrator's upstream e2e
# test deploys them unchanged. Nothing of them is committed: they are made here, from the
# registries, on every machine.
#
# Each starter is $UPSTREAM_DIR/<name>/, with $UPSTREAM_DIR/<name>.source beside it saying where it
# came from (package@version, the command, the licence). A starter whose .source matches this
# script's pin is kept, so a warm run takes milliseconds. Only registry tools run here (npm exec
# of the generators, pip, uv); nothing from this repository's apps runs on the host.
set -euo pipefail

TOOLS=${TESTBED_TOOLS:-/opt/preview-testbed}
UPSTREAM=${UPSTREAM_DIR:-$TOOLS/upstream}

# The pins. Bump a version here and the starter is generated again on the next run.
EXPRESS_GENERATOR=4.16.1 # express-generator (MIT): the official Express generator
NEST_CLI=12.0.15         # @nestjs/cli (MIT): `nest new`, the official NestJS starter
NEST_SCHEMATICS=12.0.17  # @nestjs/schematics (MIT): the templates `nest new` writes
FASTAPI_NEW=0.0.7        # fastapi-new (MIT): the FastAPI team's `fastapi-new` project creator
UV=0.13.9                # uv (MIT/Apache-2.0): fastapi-new runs `uv init` and `uv add`
DJANGO=5.2.19            # Django (BSD-3-Clause): `django-admin startproject`
FLASK=3.1.3              # Flask (BSD-3-Clause): its sdist ships examples/javascript

say() { printf '[upstream] %s\n' "$*"; }
die() { printf '[upstream] cannot make the upstream starters: %s\n' "$*" >&2; exit 1; }

mkdir -p "$UPSTREAM"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# is_current NAME SOURCE: the starter exists and was made from SOURCE.
is_current() {
    [ -d "$UPSTREAM/$1" ] && [ "$(cat "$UPSTREAM/$1.source" 2>/dev/null)" = "$2" ]
}

# install_starter NAME DIR SOURCE: moves the generated DIR into the cache, then writes SOURCE.
install_starter() {
    rm -rf "${UPSTREAM:?}/$1" "$UPSTREAM/$1.source"
    mv "$2" "$UPSTREAM/$1"
    printf '%s\n' "$3" >"$UPSTREAM/$1.source"
    say "made $1: $(head -n 1 "$UPSTREAM/$1.source")"
}

node_ready=
need_node() {
    [ -n "$node_ready" ] && return
    command -v npm >/dev/null 2>&1 || die "npm is not installed; missing: Node.js and npm"
    npm view "express-generator@$EXPRESS_GENERATOR" version >/dev/null 2>&1 ||
        die "npm cannot reach the npm registry (npm view express-generator failed); missing: network access to the npm registry"
    node_ready=1
}

venv=$UPSTREAM/.venv
python_ready=
need_python() {
    [ -n "$python_ready" ] && return
    local pins=("fastapi-new==$FASTAPI_NEW" "uv==$UV" "Django==$DJANGO")
    if [ "$(cat "$venv/pins" 2>/dev/null)" != "${pins[*]}" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv" || die "python3 -m venv failed; missing: python3-venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}" ||
            die "pip install ${pins[*]} failed; missing: network access to PyPI"
        printf '%s\n' "${pins[*]}" >"$venv/pins"
    fi
    python_ready=1
}

# Express: `express --no-view` writes app.js, bin/www, routes/ and public/index.html
# ("Welcome to Express"); `npm start` runs node ./bin/www on $PORT (default 3000).
source="express-generator@$EXPRESS_GENERATOR: express --no-view express-app (MIT)"
if ! is_current express "$source"; then
    need_node
    (cd "$work" && npm exec --yes --package="express-generator@$EXPRESS_GENERATOR" -- \
        express --no-view express-app >/dev/null) || die "express-generator failed"
    install_starter express "$work/express-app" "$source"
fi

# NestJS: `nest new` writes the official TypeScript starter (GET / -> "Hello World!", listens on
# $PORT or 3000); --skip-install and --skip-git leave exactly the generated files.
source="@nestjs/cli@$NEST_CLI with @nestjs/schematics@$NEST_SCHEMATICS: nest new nest-app --skip-install --skip-git --package-manager npm (MIT)"
if ! is_current nestjs "$source"; then
    need_node
    (cd "$work" && npm exec --yes --package="@nestjs/cli@$NEST_CLI" \
        --package="@nestjs/schematics@$NEST_SCHEMATICS" -- \
        nest new nest-app --skip-install --skip-git --package-manager npm >/dev/null) ||
        die "nest new failed"
    install_starter nestjs "$work/nest-app" "$source"
fi

# FastAPI: `fastapi-new` runs `uv init --bare` and `uv add "fastapi[standard]"` and writes main.py
# (GET / -> {"message":"Hello World"}): pyproject.toml, uv.lock, main.py, README.md. uv's .venv
# is left out, as git leaves it out (uv writes a .gitignore of `*` into it).
source="fastapi-new==$FASTAPI_NEW (with uv==$UV): fastapi-new fastapi-app (MIT)"
if ! is_current fastapi "$source"; then
    need_python
    (cd "$work" && PATH="$venv/bin:$PATH" UV_PYTHON_DOWNLOADS=never UV_CACHE_DIR="$UPSTREAM/.uv-cache" \
        "$venv/bin/fastapi-new" fastapi-app >"$work/fastapi-new.log" 2>&1) ||
        { tail -n 20 "$work/fastapi-new.log" >&2; die "fastapi-new failed"; }
    [ -f "$work/fastapi-app/main.py" ] && [ -f "$work/fastapi-app/uv.lock" ] ||
        die "fastapi-new wrote no main.py and uv.lock"
    rm -rf "$work/fastapi-app/.venv"
    install_starter fastapi "$work/fastapi-app" "$source"
fi

# Django: `django-admin startproject mysite .` (the tutorial's project). A bare project has no
# dependency file; the one addition is requirements.txt with the single line `Django==<version>`,
# which every user adds before deploying. Everything else is as generated (DEBUG = True,
# ALLOWED_HOSTS = [], SQLite).
source="Django==$DJANGO: django-admin startproject mysite . ; plus requirements.txt 'Django==$DJANGO' (BSD-3-Clause)"
if ! is_current django "$source"; then
    need_python
    mkdir "$work/django"
    "$venv/bin/django-admin" startproject mysite "$work/django" || die "django-admin startproject failed"
    printf 'Django==%s\n' "$DJANGO" >"$work/django/requirements.txt"
    install_starter django "$work/django" "$source"
fi

# Flask: the sdist on PyPI ships the project's examples; examples/javascript is a packaged app
# (pyproject.toml, dependencies = ["flask"], app = Flask(__name__) in js_example/__init__.py),
# taken unchanged with its LICENSE.txt.
source="Flask==$FLASK sdist: examples/javascript (js_example) (BSD-3-Clause)"
if ! is_current flask "$source"; then
    need_python
    "$venv/bin/pip" download -q --disable-pip-version-check --no-deps --no-binary :all: \
        -d "$work/sdist" "Flask==$FLASK" >/dev/null ||
        die "pip download Flask==$FLASK failed; missing: network access to PyPI"
    tar -xzf "$work"/sdist/flask-*.tar.gz -C "$work"
    [ -f "$work/flask-$FLASK/examples/javascript/pyproject.toml" ] ||
        die "the Flask $FLASK sdist has no examples/javascript"
    install_starter flask "$work/flask-$FLASK/examples/javascript" "$source"
fi

say "starters in $UPSTREAM: $(cd "$UPSTREAM" && ls -d -- */ | tr -d / | tr '\n' ' ')"
