#!/usr/bin/env bash
# tests/suites/55-faults.sh - chatd on the embedded default config
# (etc/chatd.conf: queue-local + store-sqlite) under faults, with real
# @stomp/stompjs clients sending with receipts (tests/faults/):
#   1. kill9.mjs: SIGKILL at random moments under load, at least 10 times,
#      restarted each time; every receipted message stored exactly once,
#      nothing unreceipted twice, room lists agree with the messages;
#   2. sigterm.mjs: SIGTERM with publishes in flight, 4 times: exit 0, every
#      SEND answered by a RECEIPT or an ERROR before the close, what got a
#      RECEIPT stored once, what got an ERROR not stored;
#   3. fsync.mjs: chatd under strace: for every receipted SEND, the WAL write
#      holding the message, then a sync of the WAL, then the RECEIPT bytes.
# Needs CHATD_TOP, CHATD_BUILD, CHATD_OUT (see tests/lib.sh). Logs go to
# $CHATD_OUT/faults-*.log.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
export CHATD_OUT CHATD_BUILD

say() { printf '[55-faults] %s\n' "$*" >&2; }
[ -x "$CHATD_BIN" ] || { say "no chatd at $CHATD_BIN: build first"; exit 1; }
command -v strace >/dev/null || { say "strace is not installed (apt-get install strace)"; exit 1; }
command -v node >/dev/null || { say "node is not installed (apt-get install nodejs npm)"; exit 1; }
(
    cd "$CHATD_TOP/tests"
    if [ ! -d node_modules/@stomp/stompjs ] || [ ! -d node_modules/ws ]; then
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
    fi
)

work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-faults.XXXXXX")
export FAULTS_PIDFILE=$work/chatd.pid
cleanup() {
    [ -f "$FAULTS_PIDFILE" ] && kill -KILL "$(cat "$FAULTS_PIDFILE")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$CHATD_TOP"

fails=()
# run NAME SCRIPT [chatd --set ...]: a suite against a fresh database, chatd
# on the embedded default config and a free port
run() {
    local name=$1 script=$2 port
    shift 2
    port=$(free_port)
    export FAULTS_URL=http://127.0.0.1:$port FAULTS_LOG=$CHATD_OUT/faults-$name.log
    : >"$FAULTS_LOG"
    say "=== $name"
    if timeout --kill-after=10 "${FAULTS_TIMEOUT:-240}" node "$CHATD_TOP/tests/faults/$script" -- \
        "$CHATD_BIN" -c "$CHATD_TOP/etc/chatd.conf" \
        --set "ws.listen=127.0.0.1:$port" --set "ws.allowed_origins=$FAULTS_URL" \
        --set "ws.web_root=$CHATD_TOP/web" --set "store.path=$work/$name.db" \
        --set chatd.publish_rate=0 "$@"; then
        say "--- $name: ok"
    else
        say "--- $name: FAILED (log: $FAULTS_LOG)"
        fails+=("$name")
    fi
    [ -f "$FAULTS_PIDFILE" ] && kill -KILL "$(cat "$FAULTS_PIDFILE")" 2>/dev/null || true
    rm -f "$FAULTS_PIDFILE"
}

run kill9 kill9.mjs
run sigterm sigterm.mjs
export FAULTS_TRACE=$CHATD_OUT/faults-fsync.trace
run fsync fsync.mjs

if [ ${#fails[@]} -gt 0 ]; then
    say "failed: ${fails[*]}"
    exit 1
fi
say "all passed"
