#!/usr/bin/env bash
# quickstart.sh - the two commands of the README.
#   ./quickstart.sh        install what is missing, build, serve the chat on
#                          http://127.0.0.1:8080 (embedded queue + SQLite)
#   ./quickstart.sh test   install, build with -Werror, run every test suite
#   ./quickstart.sh fuzz [SECONDS]  run every fuzz target SECONDS (default 60)
#                          each and merge new coverage into tests/fuzz/corpus
set -euo pipefail
cd "$(dirname "$0")"
TOP=$PWD
JOBS=$(nproc 2>/dev/null || echo 2)

BUILD_DEPS=(build-essential autoconf automake libtool pkg-config libevent-dev librdkafka-dev
    libpq-dev libsqlite3-dev libjson-c-dev libinih-dev libsodium-dev libssl-dev libcmocka-dev)
TEST_DEPS=(clang libclang-rt-14-dev postgresql chromium fonts-nanum abigail-tools procps curl)

log() { printf '[quickstart] %s\n' "$*" >&2; }

install_deps() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    command -v node >/dev/null && command -v npm >/dev/null || missing+=(nodejs npm)
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { log "missing packages: ${missing[*]} (run as root or install sudo)"; exit 1; }
        sudo=sudo
    fi
    log "installing: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# build DIR [configure args...]: configure (once) and make in DIR
build() {
    local dir=$1; shift
    [ -x configure ] || autoreconf -fi >/dev/null
    mkdir -p "$dir"
    if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/Makefile" ]; then
        (cd "$dir" && "$TOP/configure" -q "$@")
    fi
    make -C "$dir" -s -j"$JOBS"
}

serve() {
    install_deps "${BUILD_DEPS[@]}"
    build build
    mkdir -p data
    log "serving the chat on http://127.0.0.1:8080 (Ctrl-C stops)"
    exec build/core/chatd -c etc/chatd.conf
}

run_tests() {
    install_deps "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    export CHATD_TOP=$TOP CHATD_BUILD=$TOP/build CHATD_BUILD_ASAN=$TOP/build-asan
    export CHATD_OUT=$TOP/tests/out
    rm -rf "$CHATD_OUT"; mkdir -p "$CHATD_OUT"
    local pass=0 fail=0 failed=() s name
    stage() { # stage NAME COMMAND...
        local name=$1; shift
        log "=== $name"
        if "$@"; then pass=$((pass + 1)); log "--- $name: ok"
        else fail=$((fail + 1)); failed+=("$name"); log "--- $name: FAILED"; fi
    }
    stage build build build --enable-werror
    stage unit make -C build -s check
    stage asan-ubsan build build-asan --enable-werror CC=clang \
        CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
    stage asan-unit env ASAN_OPTIONS=detect_leaks=1 make -C build-asan -s check
    for s in tests/suites/*.sh; do
        [ -e "$s" ] || continue
        name=$(basename "$s" .sh)
        stage "$name" bash "$s"
    done
    log "failed stages: ${failed[*]:-none}"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

run_fuzz() {
    case "$1" in '' | *[!0-9]*) echo "usage: $0 fuzz [SECONDS]" >&2; exit 2 ;; esac
    install_deps "${BUILD_DEPS[@]}" clang libclang-rt-14-dev
    CHATD_TOP=$TOP CHATD_OUT=$TOP/tests/out FUZZ_SECONDS=$1 FUZZ_MERGE=1 bash tests/suites/20-fuzz.sh
}

case "${1:-serve}" in
    serve) serve ;;
    test) run_tests ;;
    fuzz) run_fuzz "${2:-60}" ;;
    *) echo "usage: $0 [test | fuzz [SECONDS]]" >&2; exit 2 ;;
esac
