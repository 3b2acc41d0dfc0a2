#!/usr/bin/env bash
# tests/suites/20-fuzz.sh - the libFuzzer targets of every parser of untrusted
# input (tests/fuzz/fuzz_*.c): the HTTP, WebSocket and STOMP codecs, the
# message wire form, the configuration, and a real transport-ws instance
# behind a test core (REST, static files, STOMP sessions and SEND bodies),
# the cursors of resume-after (room positions, side position vectors), and
# the quick reading of SEND bodies against json-c's (stomp_body.c).
#
# The core library and the transport-ws objects are built with clang and
# ASan+UBSan+coverage in their own build directory ($CHATD_BUILD_FUZZ,
# default build-fuzz/) and linked into each target. Each target first replays
# its committed corpus (tests/fuzz/corpus/TARGET/), then fuzzes for
# FUZZ_SECONDS (default 60), FUZZ_JOBS (default 2) targets at a time. A crash,
# a failed check or a sanitizer report fails the suite; the input is kept in
# $CHATD_OUT/fuzz/artifacts (add it to the corpus once the bug is fixed).
# FUZZ_MERGE=1 (./quickstart.sh fuzz) merges inputs with new coverage into
# the committed corpus; FUZZ_TARGETS="http ws" runs only those.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CHATD_OUT:=$CHATD_TOP/tests/out}"
: "${CHATD_BUILD_FUZZ:=$CHATD_TOP/build-fuzz}"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_JOBS=${FUZZ_JOBS:-2}
FUZZ_MERGE=${FUZZ_MERGE:-0}
FUZZ_TARGETS=${FUZZ_TARGETS:-"http ws stomp msg config rest static session cursor body"}
CC_FUZZ=${CC_FUZZ:-clang}
FZ=$CHATD_TOP/tests/fuzz
B=$CHATD_BUILD_FUZZ
OUT=$CHATD_OUT/fuzz
mkdir -p "$OUT/artifacts" "$B"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# largest input per target: enough to reach the production limits (64 headers
# in a 16 KB head, 64 KB frames and bodies)
declare -A MAX_LEN=([http]=24576 [ws]=70000 [stomp]=70000 [msg]=8192 [config]=8192
    [rest]=20480 [static]=4500 [session]=70000 [body]=9000)

command -v "$CC_FUZZ" >/dev/null ||
    { echo "20-fuzz: $CC_FUZZ not found (install clang and libclang-rt-dev)" >&2; exit 1; }
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
CFLAGS="-O1 -g -fno-omit-frame-pointer $SAN"

# 1. core + transport-ws with coverage instrumentation (configure failures fail here)
if [ ! -x "$CHATD_TOP/configure" ]; then (cd "$CHATD_TOP" && autoreconf -fi >/dev/null); fi
if [ ! -f "$B/Makefile" ] || [ "$CHATD_TOP/configure" -nt "$B/Makefile" ]; then
    echo "20-fuzz: configuring $B"
    (cd "$B" && "$CHATD_TOP/configure" -q --enable-werror --enable-transport-ws \
        --disable-queue-local --disable-store-sqlite --disable-store-pg --disable-queue-kafka \
        CC="$CC_FUZZ" CFLAGS="$CFLAGS -fsanitize=fuzzer-no-link") >"$OUT/configure.log" 2>&1 ||
        { echo "20-fuzz: configure failed (see $OUT/configure.log)" >&2; tail -n 20 "$OUT/configure.log" >&2; exit 1; }
fi
echo "20-fuzz: building the core library, the test core and transport-ws in $B"
if ! { make -C "$B/core" -s -j"$FUZZ_JOBS" &&
    make -C "$B/plugins/transport-ws" -s -j"$FUZZ_JOBS" &&
    make -C "$B/tests" -s lib/libtestcore.la; } >"$OUT/make.log" 2>&1; then
    echo "20-fuzz: build failed (see $OUT/make.log)" >&2
    tail -n 30 "$OUT/make.log" >&2
    exit 1
fi
# the plugin's objects as its Makefile lists them (so that files renamed or
# removed leave no stale object behind), and any convenience library it links
TW=$B/plugins/transport-ws
# shellcheck disable=SC2016
read -r -a TW_LT <<<"$(make -C "$TW" -s -f Makefile -f - fuzz-objs \
    <<<'fuzz-objs: ; @echo $(transport_ws_la_OBJECTS) $(filter %.la,$(transport_ws_la_LIBADD))')"
TW_OBJS=()
for o in "${TW_LT[@]}"; do
    case $o in
        *.lo) TW_OBJS+=("$TW/.libs/$(basename "${o%.lo}").o") ;;
        *.la) TW_OBJS+=("$TW/$(dirname "$o")/.libs/$(basename "${o%.la}").a") ;;
    esac
done
[ ${#TW_OBJS[@]} -gt 0 ] || { echo "20-fuzz: no transport-ws objects in $B" >&2; exit 1; }
PKGS="libevent libevent_openssl libevent_pthreads json-c inih libsodium openssl"
# shellcheck disable=SC2086
read -r -a DEP_CFLAGS <<<"$(pkg-config --cflags $PKGS)"
# shellcheck disable=SC2086
read -r -a DEP_LIBS <<<"$(pkg-config --libs $PKGS)"
mkdir -p "$B/fuzz"
for t in $FUZZ_TARGETS; do
    echo "20-fuzz: linking fuzz_$t"
    # shellcheck disable=SC2086
    "$CC_FUZZ" -std=c11 $CFLAGS -fsanitize=fuzzer -Wall -Wextra -Werror \
        -I"$B" -I"$CHATD_TOP/include" -I"$CHATD_TOP/core" -I"$CHATD_TOP/tests/lib" \
        -I"$CHATD_TOP/plugins/transport-ws" \
        "${DEP_CFLAGS[@]}" -o "$B/fuzz/fuzz_$t" "$FZ/fuzz_$t.c" "$FZ/fuzz_core.c" "$FZ/fuzz_client.c" \
        "${TW_OBJS[@]}" "$B/tests/lib/.libs/libtestcore.a" "$B/core/.libs/libchatdcore.a" "${DEP_LIBS[@]}" -ldl -lpthread \
        >"$OUT/link_$t.log" 2>&1 ||
        { echo "20-fuzz: fuzz_$t does not build (see $OUT/link_$t.log)" >&2; cat "$OUT/link_$t.log" >&2; exit 1; }
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

# run_target T: replay, fuzz, merge; writes $WORK/T.rc
run_target() {
    local t=$1 bin=$B/fuzz/fuzz_$1 corpus=$FZ/corpus/$1 log=$OUT/fuzz_$1.log
    local dict=() scratch=$WORK/corpus_$1
    [ -f "$FZ/dict/$t.dict" ] && dict=(-dict="$FZ/dict/$t.dict")
    mkdir -p "$corpus" "$scratch"
    local n
    n=$(find "$corpus" -type f | wc -l)
    [ "$n" -gt 0 ] || { echo "20-fuzz: fuzz_$t has no corpus in $corpus" >&2; echo 1 >"$WORK/$t.rc"; return; }
    if ! "$bin" -runs=0 -close_fd_mask=2 -artifact_prefix="$OUT/artifacts/$t-" "$corpus" >"$log.replay" 2>&1; then
        echo "20-fuzz: fuzz_$t FAILED on its regression corpus (see $log.replay)" >&2
        grep -E "ERROR|SUMMARY|check failed|runtime error|Test unit written" "$log.replay" | head -n 20 >&2 || true
        echo 1 >"$WORK/$t.rc"
        return
    fi
    echo "20-fuzz: fuzz_$t replayed $n corpus inputs; fuzzing for ${FUZZ_SECONDS}s"
    if [ "$FUZZ_SECONDS" -gt 0 ]; then
        if ! timeout $((FUZZ_SECONDS + 120)) "$bin" -max_total_time="$FUZZ_SECONDS" \
            -max_len="${MAX_LEN[$t]:-8192}" -timeout=10 -rss_limit_mb=2048 -close_fd_mask=2 \
            -print_final_stats=1 "${dict[@]}" -artifact_prefix="$OUT/artifacts/$t-" \
            "$scratch" "$corpus" >"$log" 2>&1; then
            echo "20-fuzz: fuzz_$t FOUND A PROBLEM (see $log; input in $OUT/artifacts)" >&2
            grep -E "ERROR|SUMMARY|check failed|runtime error|Test unit written" "$log" | head -n 20 >&2 || true
            echo 1 >"$WORK/$t.rc"
            return
        fi
        local runs
        runs=$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")
        echo "20-fuzz: fuzz_$t ok: ${runs:-?} runs in ${FUZZ_SECONDS}s"
    fi
    if [ "$FUZZ_MERGE" = 1 ]; then
        # minimise: the hand-written seeds (named) stay; of the generated
        # inputs (named by their SHA-1) and the new ones, keep the fewest that
        # cover every edge
        local min=$WORK/min_$t gen=$WORK/gen_$t f
        mkdir -p "$min" "$gen"
        for f in "$corpus"/*; do
            if [[ $(basename "$f") =~ ^[0-9a-f]{40}$ ]]; then cp "$f" "$gen/"; else cp "$f" "$min/"; fi
        done
        if ! "$bin" -merge=1 -use_counters=0 -close_fd_mask=2 -max_len="${MAX_LEN[$t]:-8192}" \
            "$min" "$gen" "$scratch" >"$log.merge" 2>&1; then
            echo "20-fuzz: merging fuzz_$t failed (see $log.merge)" >&2
            echo 1 >"$WORK/$t.rc"
            return
        fi
        find "$corpus" -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
        cp -n "$min"/* "$corpus/"
        echo "20-fuzz: fuzz_$t corpus: $n -> $(find "$corpus" -type f | wc -l) inputs"
    fi
    echo 0 >"$WORK/$t.rc"
}

running=0
for t in $FUZZ_TARGETS; do
    if [ "$running" -ge "$FUZZ_JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    run_target "$t" &
    running=$((running + 1))
done
wait || true

rc=0
for t in $FUZZ_TARGETS; do
    if [ "$(cat "$WORK/$t.rc" 2>/dev/null || echo 1)" != 0 ]; then
        echo "20-fuzz: fuzz_$t failed" >&2
        rc=1
    fi
done
[ "$rc" = 0 ] && echo "20-fuzz: all targets clean: $FUZZ_TARGETS"
exit $rc
