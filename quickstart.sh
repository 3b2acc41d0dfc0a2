#!/usr/bin/env bash
# quickstart.sh - the two commands of the README.
#   ./quickstart.sh        install what is missing, build, serve the chat on
#                          http://127.0.0.1:8080 (embedded queue + SQLite)
#   ./quickstart.sh test   install, build with -Werror (build-test/) and with
#                          ASan+UBSan (build-asan/), run every test suite
#   ./quickstart.sh test --full   the same plus the slow parts (README: Tests)
#   ./quickstart.sh fuzz [SECONDS]  run every fuzz target SECONDS (default 60)
#                          each and merge new coverage into tests/fuzz/corpus
set -euo pipefail
cd "$(dirname "$0")"
TOP=$PWD
JOBS=$(nproc 2>/dev/null || echo 2)

BUILD_DEPS=(build-essential autoconf automake libtool pkg-config libevent-dev librdkafka-dev
    libpq-dev libsqlite3-dev libjson-c-dev libinih-dev libsodium-dev libssl-dev libcmocka-dev)
# every tool the suites run: clang + its runtime (sanitizers, libFuzzer), the
# PostgreSQL server, chromium and a Korean font (browser test), abidw/abidiff
# (ABI check), systemd-analyze (unit check), python3, curl, faketime, strace
TEST_DEPS=(clang clang-format libclang-rt-14-dev postgresql chromium fonts-nanum abigail-tools systemd procps
    curl python3 faketime strace openssl)
CLANG_SANITIZE="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

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

# build DIR [configure args...]: configure DIR (again when the arguments
# changed) and make in it; a failed autoreconf, configure or make fails it
build() {
    local dir=$1 args; shift
    [ -x configure ] || autoreconf -fi >/dev/null || { log "autoreconf -fi failed"; return 1; }
    mkdir -p "$dir" || return 1
    args=$(printf '%q ' "$@")
    if [ ! -f "$dir/Makefile" ] || [ configure -nt "$dir/Makefile" ] ||
        [ "$(cat "$dir/.configure-args" 2>/dev/null)" != "$args" ]; then
        rm -f "$dir/.configure-args"
        (cd "$dir" && "$TOP/configure" -q "$@") || { log "configure failed in $dir (see $dir/config.log)"; return 1; }
        printf '%s' "$args" >"$dir/.configure-args"
    fi
    make -C "$dir" -s -j"$JOBS" || { log "make failed in $dir"; return 1; }
}

serve() {
    install_deps "${BUILD_DEPS[@]}"
    build build
    mkdir -p data
    log "serving the chat on http://127.0.0.1:8080 (Ctrl-C stops)"
    exec build/core/chatd -c etc/chatd.conf
}

# run_tests [--full]: every stage, each one timed; the last line is the tally.
# The test builds have their own directories (build-test/, build-asan/), always
# configured with -Werror, whatever a plain ./quickstart.sh left in build/.
run_tests() {
    case "${1:-}" in
        "") export CHATD_FULL=0 ;;
        --full) # what does not fit in 45 minutes on 2 cores: 5 minutes of
            # fuzzing per target, a five times longer PostgreSQL outage stream
            export CHATD_FULL=1 FUZZ_SECONDS=${FUZZ_SECONDS:-300} OUTAGE_COUNT=${OUTAGE_COUNT:-3000} ;;
        *) echo "usage: $0 test [--full]" >&2; exit 2 ;;
    esac
    install_deps "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    export CHATD_TOP=$TOP CHATD_BUILD=$TOP/build-test CHATD_BUILD_ASAN=$TOP/build-asan
    export CHATD_OUT=$TOP/tests/out
    rm -rf "$CHATD_OUT"; mkdir -p "$CHATD_OUT"
    local pass=0 fail=0 failed=() times=() s name i
    stage() { # stage NAME COMMAND...
        local name=$1 t0=$SECONDS res; shift
        log "=== $name"
        if "$@"; then pass=$((pass + 1)); res=ok
        else fail=$((fail + 1)); failed+=("$name"); res=FAILED; fi
        times+=("$(printf '%-22s %-7s %4d:%02d' "$name" "$res" $(((SECONDS - t0) / 60)) $(((SECONDS - t0) % 60)))")
        log "--- $name: $res ($((SECONDS - t0)) s)"
    }
    stage build build build-test --enable-werror
    stage format make -C build-test -s format-check
    stage unit make -C build-test -s check
    stage asan-build build build-asan --enable-werror CC=clang CFLAGS="$CLANG_SANITIZE"
    stage asan-unit env ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 make -C build-asan -s check
    for s in tests/suites/*.sh; do
        [ -e "$s" ] || continue
        name=$(basename "$s" .sh)
        stage "$name" bash "$s"
    done
    log "$(printf '%-22s %-7s %7s' stage result time)"
    for i in "${times[@]}"; do log "$i"; done
    log "total $((SECONDS / 60)) min $((SECONDS % 60)) s$([ "$CHATD_FULL" = 1 ] && echo ' (--full)')"
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
    test) shift; run_tests "$@" ;;
    fuzz) run_fuzz "${2:-60}" ;;
    *) echo "usage: $0 [test [--full] | fuzz [SECONDS]]" >&2; exit 2 ;;
esac
