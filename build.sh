#!/usr/bin/env bash
# Earshot's single entry point: ./build.sh {run|test|bench|build|clean} [args…]
# Every subcommand sets up what it needs on a fresh Debian 12 / Raspberry Pi OS machine:
# apt packages (installed when root, otherwise the exact command is printed), a .venv, the Cython build.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# Debian packages, by purpose. Build: compiler, headers, DSP libraries the media core links.
APT_BUILD="build-essential pkg-config python3-dev python3-venv libspandsp-dev libsoxr-dev"
# Tests: real peers and signal tools (see docs/testing.md).
APT_TEST="espeak-ng sox libsox-fmt-all baresip baresip-core sip-tester kamailio kamailio-extra-modules"

log() { printf '[build] %s\n' "$*" >&2; }

need_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -eq 0 ]; then
        log "installing: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/earshot-apt.log 2>&1; then
            apt-get update -qq >/dev/null 2>&1 || true
            apt-get install -y -qq --no-install-recommends "${missing[@]}" >/tmp/earshot-apt.log 2>&1 \
                || { cat /tmp/earshot-apt.log >&2; log "apt-get install failed"; exit 1; }
        fi
    else
        log "missing Debian packages. Run as root:"
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
}

pick_python() {
    local c
    for c in python3 python3.11 python3.12 python3.13; do
        if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    log "Python 3.11 or newer is required"; exit 1
}

venv() {
    local stamp="$VENV/.earshot-deps" want
    want=$(cat pyproject.toml | sha1sum | cut -c1-12)
    if [ ! -x "$PY" ]; then
        log "creating .venv"
        "$(pick_python)" -m venv "$VENV"
    fi
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        log "installing Python dependencies into .venv"
        "$PY" -m pip install -q --upgrade pip setuptools wheel
        "$PY" -m pip install -q -e '.[test]'
        echo "$want" > "$stamp"
    fi
}

build_ext() {
    # Incremental: setuptools only recompiles extensions whose sources changed.
    "$PY" setup.py -q build_ext --inplace 2>&1 | grep -vE '^(Compiling|\[|running)' >&2 || true
    "$PY" -c 'import cython_mixer' || { log "Cython build failed"; exit 1; }
}

setup_build() { need_apt $APT_BUILD; venv; build_ext; }

cmd=${1:-help}; shift || true
case "$cmd" in
    build)
        setup_build ;;
    run)
        setup_build
        exec "$PY" -m firmware run "$@" ;;
    test)
        setup_build; need_apt $APT_TEST
        # -p no:cacheprovider: CI runs on a read-only-minded clean clone; no .pytest_cache litter.
        exec "$PY" -m pytest -p no:cacheprovider tests "$@" ;;
    bench)
        setup_build
        exec "$PY" -m tests.bench "$@" ;;
    clean)
        rm -rf build "$VENV" cython_mixer/*.c cython_mixer/*.so *.egg-info ;;
    *)
        echo "usage: ./build.sh {run|test|bench|build|clean} [args…]" >&2
        [ "$cmd" = help ] || exit 2 ;;
esac
