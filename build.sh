#!/usr/bin/env bash
# Earshot's single entry point: ./build.sh {run|test|bench|build|dist|install|clean} [args…]
# Every subcommand sets up what it needs on a fresh Debian 12 / Raspberry Pi OS machine:
# apt packages (installed when root, otherwise the exact command is printed), a .venv, the Cython build.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

# Debian packages, by purpose. Build: compiler, headers, DSP libraries the media core links.
# portaudio19-dev: the venv carries the test extras, and pyaudio builds against it (build and run too).
APT_BUILD="build-essential pkg-config python3-dev python3-venv libspandsp-dev libsoxr-dev portaudio19-dev"
# On the appliance: the runtime libraries (dist/install build the wheel on the target itself).
APT_PI="portaudio19-dev"
# What the installed appliance runs besides the venv: the media core's libraries, and procps
# (the unit's ExecReload=/bin/kill).
APT_RUNTIME="procps libspandsp2 libsoxr0"
# The interpreter the appliance runs: Debian's (Raspberry Pi OS's), never a pyenv or a local build
# that happens to be first on PATH here. The checkout's venv prefers it too, so the wheel it builds
# carries extensions for the same Python.
TARGET_PY="${EARSHOT_TARGET_PYTHON:-/usr/bin/python3}"
# Tests: real peers and signal tools (see docs/testing.md).
APT_TEST="espeak-ng sox libsox-fmt-all baresip baresip-core sip-tester kamailio kamailio-extra-modules
          portaudio19-dev libasound2-plugins alsa-utils tshark systemd-container debootstrap"

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
    for c in "$TARGET_PY" python3 python3.11 python3.12 python3.13; do
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

dist() {
    # A wheel (with the compiled media core for this machine's architecture) plus the units.
    setup_build
    # build/lib* and *.egg-info/SOURCES.txt are setuptools' record of the wheel's files: left
    # over, they ship files the tree no longer has, or hide one the package data lacks
    rm -rf dist build/lib.* build/bdist.* ./*.egg-info && mkdir -p dist
    "$PY" -m pip wheel -q --no-deps --no-build-isolation -w dist . >&2
    tar -C systemd -czf dist/earshot-systemd.tar.gz .
    ls dist
}

on_pi() { grep -qs "Raspberry Pi" /proc/device-tree/model; }

gpio_package() {
    # RPi.GPIO's edge detection fails on the Pi 5 and on kernels >= 6.6 (the gpiochip character
    # device replaced sysfs); rpi-lgpio provides the same module there.
    local k; k=$(uname -r | awk -F. '{ printf "%d%03d", $1, $2 }')
    if grep -qs "Raspberry Pi 5" /proc/device-tree/model || [ "$k" -ge 6006 ]; then echo rpi-lgpio
    else echo RPi.GPIO; fi
}

target_version() {
    # X.Y of the target's interpreter, or a message that says what to do
    if ! "$TARGET_PY" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        log "the appliance runs $TARGET_PY (Python 3.11 or newer with venv), which this machine lacks or cannot run."
        log "Install Debian's python3 and python3-venv, or set EARSHOT_TARGET_PYTHON to the path the target uses."
        return 1
    fi
    "$TARGET_PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'
}

install_appliance() {
    # ./build.sh install [--root DIR]: with --root, lay the files out under DIR (packaging, tests)
    # and touch nothing of the running system.
    local root=""
    if [ "${1:-}" = "--root" ]; then root=$(realpath -m "$2"); shift 2; fi
    if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then log "install needs root (or --root DIR)"; exit 1; fi
    need_apt $APT_RUNTIME
    local target_ver build_ver
    target_ver=$(target_version) || exit 1
    local wheel; wheel=$(dist | grep '\.whl$' | head -1)
    build_ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    if [ "$build_ver" != "$target_ver" ]; then
        log "the checkout's .venv runs Python $build_ver but the target runs $target_ver ($TARGET_PY):"
        log "its wheel would not load there. Run ./build.sh clean, then install again (the new .venv uses $TARGET_PY)"
        exit 1
    fi
    local opt="$root/opt/earshot"
    mkdir -p "$opt" "$root/etc/systemd/system" "$root/etc/udev/rules.d" \
             "$root/usr/lib/tmpfiles.d" "$root/usr/lib/sysusers.d" "$root/etc/earshot"
    # a venv left by an earlier install on another interpreter is made again
    if ! grep -qsx "home = $(dirname "$(realpath -m "$TARGET_PY")")" "$opt/venv/pyvenv.cfg" \
       && ! grep -qsx "home = $(dirname "$TARGET_PY")" "$opt/venv/pyvenv.cfg"; then
        rm -rf "$opt/venv"
    fi
    [ -x "$opt/venv/bin/python" ] || "$TARGET_PY" -m venv "$opt/venv"
    # the wheel itself always replaced (same version, new build); then its dependencies resolved
    "$opt/venv/bin/python" -m pip install -q --force-reinstall --no-deps "dist/$wheel"
    "$opt/venv/bin/python" -m pip install -q "dist/$wheel"
    if on_pi; then
        need_apt $APT_PI
        "$opt/venv/bin/python" -m pip install -q pyaudio "$(gpio_package)"
    fi
    # the units' Documentation= lines point here (file:/opt/earshot/docs/provisioning.md)
    cp README.md "$opt/"
    rm -rf "$opt/docs" && cp -r docs "$opt/docs"
    install -m 0644 systemd/earshot.service systemd/earshot-provision@.service "$root/etc/systemd/system/"
    install -m 0644 systemd/90-earshot-provision.rules systemd/91-earshot-hidraw.rules "$root/etc/udev/rules.d/"
    install -m 0644 systemd/earshot.tmpfiles "$root/usr/lib/tmpfiles.d/earshot.conf"
    install -m 0644 systemd/earshot.sysusers "$root/usr/lib/sysusers.d/earshot.conf"
    if [ -n "$root" ]; then log "installed under $root"; return 0; fi
    systemd-sysusers /usr/lib/sysusers.d/earshot.conf
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/earshot.conf
    udevadm control --reload-rules || true
    systemctl daemon-reload
    systemctl enable --now earshot.service
    log "installed; status: systemctl status earshot; logs: journalctl -u earshot"
}

cmd=${1:-help}; shift || true
case "$cmd" in
    build)
        setup_build ;;
    run)
        setup_build
        exec "$PY" -m firmware run "$@" ;;
    test)
        # test packages first: pip builds pyaudio against portaudio19-dev
        need_apt $APT_TEST
        # MicroPython (wasm, from npm) runs the plain-logic modules; node may come from elsewhere
        command -v npm >/dev/null 2>&1 || need_apt nodejs npm
        setup_build
        # -p no:cacheprovider: CI runs on a read-only-minded clean clone; no .pytest_cache litter.
        exec "$PY" -m pytest -p no:cacheprovider tests "$@" ;;
    bench)
        setup_build
        exec "$PY" -m tests.bench "$@" ;;
    dist)
        dist ;;
    install)
        install_appliance "$@" ;;
    clean)
        rm -rf build "$VENV" cython_mixer/*.c cython_mixer/*.so *.egg-info ;;
    *)
        echo "usage: ./build.sh {run|test|bench|build|dist|install [--root DIR]|clean} [args…]" >&2
        [ "$cmd" = help ] || exit 2 ;;
esac
