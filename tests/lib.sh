# tests/lib.sh - helpers sourced by the suite scripts in tests/suites/:
# free ports, starting and stopping chatd with a config, waiting for it.
# Expects CHATD_TOP, CHATD_BUILD and CHATD_OUT (set by ./quickstart.sh test).
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${CHATD_BUILD:=$CHATD_TOP/build}"
: "${CHATD_OUT:=$CHATD_TOP/tests/out}"
mkdir -p "$CHATD_OUT"
CHATD_BIN=${CHATD_BIN:-$CHATD_BUILD/core/chatd}
_chatd_pids=()
declare -A _chatd_logs=()

# use_sanitized_chatd: when CHATD_BUILD_ASAN names a build (./quickstart.sh test
# sets it), run chatd and its plugins from that ASan/UBSan build, with every
# report fatal and LeakSanitizer at exit; stop_chatd then fails on a report.
# Fails when that build has no chatd (its stage failed): no silent fallback.
use_sanitized_chatd() {
    [ -n "${CHATD_BUILD_ASAN:-}" ] || return 0
    if [ ! -x "$CHATD_BUILD_ASAN/core/chatd" ]; then
        echo "no sanitized chatd at $CHATD_BUILD_ASAN/core/chatd (build it: see the asan-build stage)" >&2
        return 1
    fi
    CHATD_BUILD=$CHATD_BUILD_ASAN
    CHATD_BIN=$CHATD_BUILD/core/chatd
    export CHATD_BUILD CHATD_BIN
    export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1
    export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
    export CHATD_NO_DLCLOSE=1 # plugins stay mapped: leak reports name their functions
    echo "chatd under ASan+UBSan: $CHATD_BIN" >&2
}

# sanitizer_report LOG: when LOG holds a sanitizer report, print it and return 0
sanitizer_report() {
    local re='ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: [A-Za-z]*Sanitizer'
    [ -f "$1" ] && grep -qE "$re" "$1" || return 1
    echo "---- sanitizer report in $1 ----" >&2
    grep -E -A40 "$re" "$1" | head -n 120 >&2
    return 0
}

# free_port: print a TCP port nobody listens on (127.0.0.1)
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_port PORT [SECONDS]: wait until 127.0.0.1:PORT accepts connections
wait_port() {
    local port=$1 t=${2:-20} i
    for ((i = 0; i < t * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "port $port did not open within ${t}s" >&2
    return 1
}

# wait_log FILE REGEX [SECONDS]: wait (default 10 s) until a line of FILE
# matches the extended REGEX
wait_log() {
    local t=${3:-10} i
    for ((i = 0; i < t * 10; i++)); do
        grep -qE -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "no line matching '$2' in $1 within ${t}s" >&2
    return 1
}

# start_chatd NAME CONFIG [--set K=V ...]: start chatd in the background with its
# log in $CHATD_OUT/NAME.log; sets CHATD_PID. The caller picks ports with --set.
start_chatd() {
    local name=$1 conf=$2; shift 2
    "$CHATD_BIN" -c "$conf" "$@" >"$CHATD_OUT/$name.log" 2>&1 &
    CHATD_PID=$!
    _chatd_pids+=("$CHATD_PID")
    _chatd_logs[$CHATD_PID]=$CHATD_OUT/$name.log
}

# wait_healthz URL PID [SECONDS]: wait until URL/healthz answers 200 (the
# whole pipeline up); fails when chatd PID exits first or time runs out
wait_healthz() {
    local url=$1 pid=$2 t=${3:-30} i
    for ((i = 0; i < t * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || { echo "chatd exited during start-up" >&2; return 1; }
        curl -fsS -o /dev/null --max-time 2 "$url/healthz" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "chatd did not answer $url/healthz within ${t} s" >&2
    return 1
}

# stop_chatd PID: SIGTERM and wait (graceful stop); returns chatd's exit code,
# or 1 when its log (of start_chatd) holds a sanitizer report
stop_chatd() {
    local pid=$1 rc=0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait "$pid" || rc=$?
    if sanitizer_report "${_chatd_logs[$pid]:-}"; then
        [ $rc -ne 0 ] || rc=1
    fi
    return $rc
}

# kill every chatd this script started (trap on EXIT)
cleanup_chatd() {
    local p
    for p in "${_chatd_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}

# node_modules_ready: the npm packages of tests/ (@stomp/stompjs, ws,
# playwright-core), installed from the lock with `npm ci` when missing or older
# than the lock; fails when node is older than any locked package needs.
node_modules_ready() {
    command -v node >/dev/null && command -v npm >/dev/null ||
        { echo "node and npm are not installed (apt-get install nodejs npm)" >&2; return 1; }
    local need
    need=$(node -e '
        const lock = require(process.argv[1]);
        let need = 0;
        for (const p of Object.values(lock.packages || {})) {
            const m = /^>=\s*(\d+)/.exec((p.engines && p.engines.node) || "");
            if (m) need = Math.max(need, Number(m[1]));
        }
        const have = Number(process.versions.node.split(".")[0]);
        if (have < need) { console.log(need); process.exit(1); }' "$CHATD_TOP/tests/package-lock.json") ||
        { echo "node $(node -v) is older than tests/package-lock.json needs (>= $need): install a newer nodejs" >&2; return 1; }
    (
        cd "$CHATD_TOP/tests" || exit 1
        if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
            PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 timeout 600 npm ci --no-audit --no-fund --loglevel=error
        fi
    ) || { echo "npm ci in tests/ failed" >&2; return 1; }
}
