#!/usr/bin/env bash
# tests/suites/10-core.sh - the daemon as a program: config check (-t) of the
# shipped config, refusal of a bad config with FILE:LINE, bad --set values,
# -V/-h, a start with the default config on a free port and a temporary data
# path, SIGHUP, a graceful stop on SIGTERM with exit 0, a second SIGTERM while
# the stop waits for the store (exit 1, no crash), and `make distcheck`.
# Under ./quickstart.sh test the daemon is the ASan/UBSan build: a leak or any
# other report (also on a refused config) changes an exit code or fails a check.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
use_sanitized_chatd

tmp=$(mktemp -d)
trap 'cleanup_chatd; rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok - $*"; }
not_ok() { echo "not ok - $*" >&2; fails=$((fails + 1)); }
check() { # check DESCRIPTION COMMAND...
    local d=$1; shift
    if "$@"; then ok "$d"; else not_ok "$d"; fi
}

[ -x "$CHATD_BIN" ] || { echo "no chatd binary at $CHATD_BIN (build first)" >&2; exit 1; }
cd "$CHATD_TOP"

# 1. the shipped config is valid
check "chatd -t -c etc/chatd.conf exits 0" "$CHATD_BIN" -t -c etc/chatd.conf

# 2. an unknown key: exit 1, naming file and line
cp etc/chatd.conf "$tmp/bad.conf"
line=$(($(wc -l <"$tmp/bad.conf") + 1))
echo "no_such_key = 1" >>"$tmp/bad.conf"
rc=0
"$CHATD_BIN" -t -c "$tmp/bad.conf" 2>"$tmp/bad.err" || rc=$?
check "unknown key exits 1" test "$rc" -eq 1
check "unknown key names $tmp/bad.conf:$line" grep -q "$tmp/bad.conf:$line: .*no_such_key: unknown key" "$tmp/bad.err"

# 3. a bad value and a bad --set
printf '[chatd]\nnode_id = 4096\n' >"$tmp/range.conf"
rc=0
"$CHATD_BIN" -t -c "$tmp/range.conf" 2>"$tmp/range.err" || rc=$?
check "out-of-range value exits 1 with FILE:LINE" \
    bash -c "test $rc -eq 1 && grep -q '$tmp/range.conf:2: .*out of range' '$tmp/range.err'"
rc=0
"$CHATD_BIN" -t -c etc/chatd.conf --set chatd.log_level=loud 2>"$tmp/set.err" || rc=$?
check "bad --set exits 1 naming the override" \
    bash -c "test $rc -eq 1 && grep -q -- '--set chatd.log_level: ' '$tmp/set.err'"
rc=0
"$CHATD_BIN" -t -c etc/chatd.conf --set store.no_such=1 2>"$tmp/set2.err" || rc=$?
check "unknown plugin key by --set exits 1" \
    bash -c "test $rc -eq 1 && grep -q -- '--set store.no_such: unknown key' '$tmp/set2.err'"
rc=0
"$CHATD_BIN" -t -c "$tmp/missing.conf" 2>/dev/null || rc=$?
check "missing config file exits 1" test "$rc" -eq 1
check "-V prints the version" bash -c "'$CHATD_BIN' -V | grep -q '^chatd [0-9]'"
check "-h prints usage" bash -c "'$CHATD_BIN' -h | grep -q -- '--set'"
check "-h chatd lists the [chatd] keys with their defaults" \
    bash -c "'$CHATD_BIN' -h chatd | grep -q '^ *idempotency_window  *integer .*(default 86400)'"
undocumented=$("$CHATD_BIN" -h chatd | awk 'NR > 1 { print $1 }' | while read -r k; do
    grep -q "^\.BR $k[ \"]" man/chatd.conf.5.in || printf '%s ' "$k"
done)
check "every key of -h chatd is in chatd.conf(5) (missing: ${undocumented:-none})" test -z "$undocumented"
rc=0
"$CHATD_BIN" --no-such-option 2>/dev/null || rc=$?
check "a bad option exits 2" test "$rc" -eq 2

# 4. start with the default config, reload, stop on SIGTERM with exit 0
port=$(free_port)
start_chatd core-default etc/chatd.conf --set "ws.listen=127.0.0.1:$port" \
    --set "store.path=$tmp/data/chatd.db" --set chatd.log_level=debug
pid=$CHATD_PID
if wait_port "$port" 20; then
    ok "chatd listens on 127.0.0.1:$port"
    kill -HUP "$pid"
    check "SIGHUP is logged" wait_log "$CHATD_OUT/core-default.log" "SIGHUP" 10
    check "SIGHUP keeps it running" kill -0 "$pid"
    check "it answers /healthz after SIGHUP" curl -fsS -o /dev/null --max-time 5 "http://127.0.0.1:$port/healthz"
else
    not_ok "chatd did not start (see $CHATD_OUT/core-default.log)"
fi
rc=0
(sleep 30; kill -KILL "$pid" 2>/dev/null) &
watchdog=$!
kill -TERM "$pid"
wait "$pid" || rc=$?
kill "$watchdog" 2>/dev/null || true
wait "$watchdog" 2>/dev/null || true
check "SIGTERM: graceful stop with exit 0" test "$rc" -eq 0
if sanitizer_report "$CHATD_OUT/core-default.log"; then not_ok "a sanitizer report in the log"; else ok "no sanitizer report in the log"; fi
check "stop is logged" grep -q "\[core\] stopped" "$CHATD_OUT/core-default.log"
check "the store file was created" test -s "$tmp/data/chatd.db"

# 4b. a second SIGTERM while the node lease's release waits for the store
# (another process holds SQLite's write lock): a stop without waiting, exit 1,
# and nothing left to run on what the forced stop freed
port=$(free_port)
start_chatd core-forced etc/chatd.conf --set "ws.listen=127.0.0.1:$port" \
    --set "store.path=$tmp/forced/chatd.db" --set store.busy_timeout_ms=3000 \
    --set chatd.log_level=debug
pid=$CHATD_PID
flog=$CHATD_OUT/core-forced.log
if wait_port "$port" 20; then
    coproc locker { python3 -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()' "$tmp/forced/chatd.db"; }
    lpid=$locker_PID
    read -r -t 30 line <&"${locker[0]}" || line=
    check "another process holds the store's write lock" test "$line" = locked
    kill -TERM "$pid"
    check "the stop releases the node lease" wait_log "$flog" "releasing the lease" 20
    kill -TERM "$pid"
    rc=0
    (sleep 30; kill -KILL "$pid" 2>/dev/null) &
    watchdog=$!
    wait "$pid" || rc=$?
    kill "$watchdog" 2>/dev/null || true
    wait "$watchdog" 2>/dev/null || true
    kill "$lpid" 2>/dev/null || true
    wait "$lpid" 2>/dev/null || true
    check "a second SIGTERM: stop without waiting, exit 1 (was $rc)" test "$rc" -eq 1
    check "the second signal is logged" grep -q "again: stopping now" "$flog"
    if sanitizer_report "$flog"; then not_ok "a sanitizer report in $flog"; else ok "no sanitizer report after the forced stop"; fi
else
    not_ok "chatd did not start (see $flog)"
fi

# 5. make distcheck in a scratch build directory
if [ "${CHATD_SKIP_DISTCHECK:-0}" = 1 ]; then
    echo "ok - make distcheck # SKIP (CHATD_SKIP_DISTCHECK=1)"
else
    dc="$tmp/distcheck"
    mkdir -p "$dc"
    if (cd "$dc" && "$CHATD_TOP/configure" -q >"$CHATD_OUT/distcheck.log" 2>&1 &&
        timeout 1500 make -j"$(nproc 2>/dev/null || echo 2)" distcheck >>"$CHATD_OUT/distcheck.log" 2>&1); then
        ok "make distcheck"
    else
        not_ok "make distcheck (see $CHATD_OUT/distcheck.log)"
        tail -40 "$CHATD_OUT/distcheck.log" >&2 || true
    fi
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed" >&2; exit 1; }
echo "10-core: all checks passed"
