#!/usr/bin/env bash
# tests/suites/20-fuzz.sh - builds the libFuzzer targets of the three
# transport-ws codecs (HTTP/1.1 request parser, WebSocket codec, STOMP parser)
# with clang + ASan/UBSan, replays the committed regression corpus in
# tests/fuzz/corpus/, then fuzzes each target for FUZZ_SECONDS (default 60).
# Crash inputs are kept under $CHATD_OUT/fuzz/artifacts: copy one into the
# target's corpus directory once the bug is fixed, as a regression input.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
: "${CHATD_OUT:=$CHATD_TOP/tests/out}"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CC_FUZZ=${CC_FUZZ:-clang}
SRC=$CHATD_TOP/plugins/transport-ws
FZ=$CHATD_TOP/tests/fuzz
OUT=$CHATD_OUT/fuzz
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT/artifacts"

command -v "$CC_FUZZ" >/dev/null || { echo "20-fuzz: $CC_FUZZ not found (install clang and libclang-rt-dev)" >&2; exit 1; }
CFLAGS=(-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$SRC")
OPENSSL_LIBS=$(pkg-config --libs openssl 2>/dev/null || echo -lcrypto)

build() { # build NAME SOURCES... -- LIBS...
    local name=$1; shift
    echo "20-fuzz: building $name"
    # shellcheck disable=SC2086
    "$CC_FUZZ" "${CFLAGS[@]}" -o "$WORK/$name" "$@"
}
build fuzz_http "$FZ/fuzz_http.c" "$SRC/http_parser.c"
build fuzz_ws "$FZ/fuzz_ws.c" "$SRC/ws_codec.c" $OPENSSL_LIBS
build fuzz_stomp "$FZ/fuzz_stomp.c" "$SRC/stomp.c"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
rc=0
for t in http ws stomp; do
    bin=$WORK/fuzz_$t
    corpus=$FZ/corpus/$t
    log=$OUT/fuzz_$t.log
    # 1. regression: every committed input once
    echo "20-fuzz: replaying $(ls "$corpus" | wc -l) corpus inputs of fuzz_$t"
    if ! "$bin" -runs=0 "$corpus" >"$log.replay" 2>&1; then
        echo "20-fuzz: fuzz_$t FAILED on the regression corpus (see $log.replay)" >&2
        tail -n 30 "$log.replay" >&2
        rc=1
        continue
    fi
    # 2. bounded fuzzing from a scratch copy (the repository corpus stays as is)
    mkdir -p "$WORK/corpus_$t"
    cp "$corpus"/* "$WORK/corpus_$t/"
    echo "20-fuzz: fuzzing fuzz_$t for ${FUZZ_SECONDS}s"
    if ! timeout $((FUZZ_SECONDS + 60)) "$bin" -max_total_time="$FUZZ_SECONDS" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$OUT/artifacts/${t}-" "$WORK/corpus_$t" >"$log" 2>&1; then
        echo "20-fuzz: fuzz_$t FOUND A PROBLEM (see $log; inputs in $OUT/artifacts)" >&2
        grep -E "ERROR|SUMMARY|runtime error" "$log" | head -n 20 >&2 || true
        rc=1
        continue
    fi
    echo "20-fuzz: fuzz_$t ok: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs"
done
exit $rc
