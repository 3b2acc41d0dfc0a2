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

# start_chatd NAME CONFIG [--set K=V ...]: start chatd in the background with its
# log in $CHATD_OUT/NAME.log; sets CHATD_PID. The caller picks ports with --set.
start_chatd() {
    local name=$1 conf=$2; shift 2
    "$CHATD_BIN" -c "$conf" "$@" >"$CHATD_OUT/$name.log" 2>&1 &
    CHATD_PID=$!
    _chatd_pids+=("$CHATD_PID")
}

# stop_chatd PID: SIGTERM and wait (graceful stop); returns chatd's exit code
stop_chatd() {
    local pid=$1 rc=0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait "$pid" || rc=$?
    return $rc
}

# kill every chatd this script started (trap on EXIT)
cleanup_chatd() {
    local p
    for p in "${_chatd_pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
}
