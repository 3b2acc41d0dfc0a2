#!/usr/bin/env bash
# tests/plugins/store-pg/unsafe.sh - store-pg refuses a PostgreSQL on which a
# RECEIPT could precede durability, and says what to change:
#   1. fsync = off on the server: chatd (etc/chatd-postgres.conf) exits at
#      start with an error naming fsync and allow_unsafe_durability;
#   2. the same with store.allow_unsafe_durability = true: chatd starts and
#      warns;
#   3. synchronous_commit = off for chatd's role: refused at start too.
# Run by tests/suites/50-pg.sh with the PGTEST_* variables of pg-start.sh;
# the server's settings are restored on exit.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
# shellcheck source=../../lib.sh
source "$CHATD_TOP/tests/lib.sh"
: "${PGTEST_PORT:?run from tests/suites/50-pg.sh (needs tests/plugins/store-pg/pg-start.sh)}"

su_psql() { psql "host=127.0.0.1 port=$PGTEST_PORT dbname=postgres user=postgres" -X -q -v ON_ERROR_STOP=1 "$@"; }
restore() {
    su_psql -c "ALTER SYSTEM RESET fsync" -c "ALTER ROLE chatd RESET synchronous_commit" \
        -c "SELECT pg_reload_conf()" >/dev/null || true
    cleanup_chatd
}
trap restore EXIT
fail() { echo "unsafe: FAILED: $*" >&2; exit 1; }

# run_chatd NAME [--set ...]: start chatd on PostgreSQL; sets PORT
run_chatd() {
    local name=$1; shift
    PORT=$(free_port)
    start_chatd "$name" "$CHATD_TOP/etc/chatd-postgres.conf" --set "ws.listen=127.0.0.1:$PORT" \
        --set "ws.web_root=$CHATD_TOP/web" --set "store.conninfo=$PGTEST_CONNINFO" "$@"
}

# expect_refused NAME SETTING: chatd exits non-zero within 30 s, its log names
# the setting and the key that would allow it
expect_refused() {
    local name=$1 setting=$2 log=$CHATD_OUT/$1.log rc=0 i
    run_chatd "$name"
    for ((i = 0; i < 300; i++)); do kill -0 "$CHATD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$CHATD_PID" 2>/dev/null && fail "$name: chatd still runs on an unsafe server"
    wait "$CHATD_PID" || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: chatd exited 0"
    grep -q "refusing this PostgreSQL.*$setting is off.*allow_unsafe_durability" "$log" ||
        fail "$name: no refusal naming $setting in $log"
    echo "unsafe: $name: refused (exit $rc) with: $(grep -o "$setting is off[^;]*" "$log" | head -n 1)" >&2
}

# 1. fsync off
su_psql -c "ALTER SYSTEM SET fsync = off" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5 # pg_reload_conf only signals the postmaster
[ "$(psql "$PGTEST_CONNINFO" -X -A -t -c 'SHOW fsync')" = off ] || fail "could not turn fsync off"
expect_refused pg-unsafe-fsync fsync

# 2. allowed explicitly
run_chatd pg-unsafe-allowed --set store.allow_unsafe_durability=true
wait_port "$PORT" 30 || fail "chatd with allow_unsafe_durability did not start"
grep -q "accepted because allow_unsafe_durability = true" "$CHATD_OUT/pg-unsafe-allowed.log" ||
    fail "no warning about the accepted unsafe setting"
stop_chatd "$CHATD_PID" || fail "chatd with allow_unsafe_durability did not stop cleanly"
su_psql -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null

# 3. synchronous_commit off for the role
su_psql -c "ALTER ROLE chatd SET synchronous_commit = off" >/dev/null
expect_refused pg-unsafe-sync-commit synchronous_commit
echo "unsafe: all passed" >&2
