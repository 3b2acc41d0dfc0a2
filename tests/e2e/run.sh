#!/usr/bin/env bash
# tests/e2e/run.sh - start a fresh chatd with a config, run a test command
# against it with CHATD_URL set, then stop chatd (SIGTERM; it must exit 0).
#
#   tests/e2e/run.sh [CONF] [--set SECTION.KEY=VALUE]... [-- COMMAND ARGS...]
#
# CONF defaults to etc/chatd.conf. The listen address (a free 127.0.0.1 port),
# the allowed origins (that address) and the web root (web/ of the tree) are
# set here; pass the store/queue settings of your config with --set, e.g.
#   tests/e2e/run.sh etc/chatd.conf --set store.path=/tmp/x/chatd.db
#   tests/e2e/run.sh etc/examples/pg.conf --set store.conninfo=... -- node --test tests/e2e/chat.test.mjs
# COMMAND defaults to every tests/e2e/*.test.mjs under node --test. The npm
# packages of tests/ are installed first when missing (npm ci from the lock).
#
# A suite that called use_sanitized_chatd (tests/lib.sh) passes the ASan/UBSan
# chatd in CHATD_BIN; a sanitizer report in chatd's log fails the run.
#
# Environment: CHATD_TOP, CHATD_BUILD, CHATD_OUT, CHATD_BIN (see tests/lib.sh);
# CHATD_WS_SECTION (the transport's section name, default "ws");
# CHATD_E2E_NAME (log name, default "e2e": $CHATD_OUT/NAME.log);
# CHATD_E2E_TIMEOUT (seconds for COMMAND, default 900). COMMAND gets CHATD_URL
# and CHATD_PID (the pid of chatd).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${CHATD_TOP:=$(cd "$here/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
export CHATD_OUT

conf=$CHATD_TOP/etc/chatd.conf
if [ $# -gt 0 ] && [ "$1" != "--" ] && [ "$1" != "--set" ]; then
    conf=$1
    shift
fi
case $conf in /*) ;; *) conf=$PWD/$conf ;; esac
sets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case $1 in
        --set) sets+=("--set" "$2"); shift 2 ;;
        --set=*) sets+=("--set" "${1#--set=}"); shift ;;
        *) echo "run.sh: unexpected argument '$1' (want --set K=V or -- COMMAND)" >&2; exit 2 ;;
    esac
done
[ "${1:-}" = "--" ] && shift
cmd=("$@")
if [ ${#cmd[@]} -eq 0 ]; then
    cmd=(node --test "$CHATD_TOP"/tests/e2e/*.test.mjs)
fi

name=${CHATD_E2E_NAME:-e2e}
section=${CHATD_WS_SECTION:-ws}
[ -f "$conf" ] || { echo "run.sh: no config file $conf" >&2; exit 2; }
[ -x "$CHATD_BIN" ] || { echo "run.sh: no chatd binary at $CHATD_BIN (build first, or set CHATD_BUILD/CHATD_BIN)" >&2; exit 2; }
command -v node >/dev/null || { echo "run.sh: node is not installed (apt-get install nodejs npm)" >&2; exit 2; }

node_modules_ready || exit 2

port=$(free_port)
url=http://127.0.0.1:$port
trap 'cleanup_chatd' EXIT
cd "$CHATD_TOP"
start_chatd "$name" "$conf" \
    --set "$section.listen=127.0.0.1:$port" \
    --set "$section.allowed_origins=$url http://localhost:$port" \
    --set "$section.web_root=$CHATD_TOP/web" \
    "${sets[@]}"
pid=$CHATD_PID

fail() {
    echo "run.sh: $*" >&2
    echo "---- last lines of $CHATD_OUT/$name.log ----" >&2
    tail -n 40 "$CHATD_OUT/$name.log" >&2 || true
    exit 1
}

wait_healthz "$url" "$pid" 30 || fail "chatd is not ready"
echo "run.sh: chatd (pid $pid) ready on $url with $(basename "$conf") ${sets[*]}" >&2

rc=0
CHATD_URL=$url CHATD_PID=$pid timeout --kill-after=10 "${CHATD_E2E_TIMEOUT:-900}" "${cmd[@]}" || rc=$?
[ $rc -eq 124 ] && echo "run.sh: the tests timed out" >&2

if ! kill -0 "$pid" 2>/dev/null; then
    sanitizer_report "$CHATD_OUT/$name.log" || true
    fail "chatd died during the tests (see the log)"
fi
stop_rc=0
( sleep 30; kill -KILL "$pid" 2>/dev/null && echo "run.sh: chatd ignored SIGTERM for 30 s; killed" >&2 ) &
watchdog=$!
stop_chatd "$pid" || stop_rc=$?
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
if [ $stop_rc -ne 0 ]; then
    fail "chatd exited with $stop_rc on SIGTERM (want 0 and no sanitizer report)"
fi
echo "run.sh: chatd stopped cleanly" >&2
exit $rc
