#!/usr/bin/env bash
# tests/suites/50-pg.sh - store-pg against a real PostgreSQL 15 server:
#   1. the store conformance suite (tests/store/) against store-pg (and against
#      the ASan/UBSan build of it when that build exists);
#   2. schema migration when several stores start at once on an empty database;
#   3. outages at the store level (tests/plugins/store-pg/pg-outage.c): a stream of messages
#      while PostgreSQL stops and starts; max_pending -> CHATD_ERR_BUSY and
#      reads -> CHATD_ERR_UNAVAILABLE while it is down;
#   4. outage end to end: chatd on etc/chatd-postgres.conf, a stream published
#      with @stomp/stompjs while PostgreSQL stops and starts; every message that
#      got a RECEIPT is stored exactly once (tests/plugins/store-pg/outage.mjs, checked with psql);
#      and with PostgreSQL down, publishes beyond store.max_pending are refused
#      with a STOMP ERROR (tests/plugins/store-pg/busy.mjs); a server with fsync
#      or synchronous_commit off is refused at start (tests/plugins/store-pg/unsafe.sh);
#      expired idempotency keys are deleted in the background
#      (tests/plugins/store-pg/idem-purge.mjs);
#   5. the end-to-end chat suites (tests/e2e/) against chatd on PostgreSQL.
# Steps 4 and 5 run the ASan/UBSan chatd when CHATD_BUILD_ASAN is set
# (./quickstart.sh test); steps 1 and 3 run in both builds then.
# The server runs in a temp dir on 127.0.0.1 and a free port, and is stopped
# and removed at the end (tests/plugins/store-pg/pg-start.sh, pg-stop.sh).
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
export CHATD_BUILD CHATD_OUT

so=$CHATD_BUILD/plugins/store-pg/.libs/store-pg.so
[ -f "$so" ] || { echo "50-pg: $so is not built (configure found no libpq >= 14? install libpq-dev)" >&2; exit 1; }
command -v psql >/dev/null || { echo "50-pg: psql not found: install the Debian package postgresql" >&2; exit 1; }

# the C test programs (built by make check; build them if needed), also in
# the ASan/UBSan build when there is one: a build failure fails the suite
make -C "$CHATD_BUILD/tests" -s store/store_conformance plugins/store-pg/pg-outage >&2 ||
    { echo "50-pg: cannot build the test programs in $CHATD_BUILD" >&2; exit 1; }
if [ -n "${CHATD_BUILD_ASAN:-}" ]; then
    [ -f "$CHATD_BUILD_ASAN/plugins/store-pg/.libs/store-pg.so" ] ||
        { echo "50-pg: store-pg is not built in $CHATD_BUILD_ASAN" >&2; exit 1; }
    make -C "$CHATD_BUILD_ASAN/tests" -s store/store_conformance plugins/store-pg/pg-outage >&2 ||
        { echo "50-pg: cannot build the test programs in $CHATD_BUILD_ASAN" >&2; exit 1; }
fi

pg_env=$("$CHATD_TOP/tests/plugins/store-pg/pg-start.sh")
eval "$pg_env"
cleanup() {
    cleanup_chatd
    "$CHATD_TOP/tests/plugins/store-pg/pg-stop.sh" "$PGTEST_DIR" || true
}
trap cleanup EXIT

failures=()
step() { # step NAME COMMAND...: run one part, remember failures, go on
    local name=$1; shift
    echo "50-pg: === $name" >&2
    if "$@"; then
        echo "50-pg: --- $name: ok" >&2
    else
        echo "50-pg: --- $name: FAILED" >&2
        failures+=("$name")
    fi
    # a step that stops PostgreSQL must start it again, even when it fails
    if ! "$PGTEST_BIN/pg_isready" -q -h 127.0.0.1 -p "$PGTEST_PORT" -t 10; then
        echo "50-pg: $name left PostgreSQL down: starting it again for the next steps" >&2
        failures+=("$name (left PostgreSQL down)")
        eval "$PGTEST_START_CMD" || { echo "50-pg: cannot start PostgreSQL again" >&2; exit 1; }
    fi
}

conformance() { # conformance BUILD_DIR [key=value...]
    local b=$1; shift
    timeout 300 "$b/tests/store/store_conformance" "$b/plugins/store-pg/.libs/store-pg.so" \
        "conninfo=$PGTEST_CONNINFO" "$@"
}

# 1. conformance: default config, then small batches (many transactions)
step conformance conformance "$CHATD_BUILD"
step conformance-batch64 conformance "$CHATD_BUILD" batch_max=64
if [ -n "${CHATD_BUILD_ASAN:-}" ]; then
    conformance_asan() { ASAN_OPTIONS=detect_leaks=1 conformance "$CHATD_BUILD_ASAN" batch_max=64; }
    step conformance-asan conformance_asan
fi

# 2. three stores start at once on an empty database: one migration, all pass
concurrent_migration() {
    local ci="host=127.0.0.1 port=$PGTEST_PORT dbname=chatd_multi user=chatd" pids=() p rc=0 v
    psql "host=127.0.0.1 port=$PGTEST_PORT dbname=postgres user=postgres" -X -q -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE chatd_multi OWNER chatd" || return 1
    for p in 1 2 3; do
        timeout 300 "$CHATD_BUILD/tests/store/store_conformance" "$so" "conninfo=$ci" \
            >"$CHATD_OUT/pg-multi-$p.log" 2>&1 &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    [ $rc -eq 0 ] || { tail -n 20 "$CHATD_OUT"/pg-multi-*.log >&2; return 1; }
    v=$(psql "$ci" -X -A -t -c "SELECT string_agg(version::text, ',' ORDER BY version) FROM chatd_schema")
    echo "50-pg: schema versions recorded: $v" >&2
    # every migration of plugins/store-pg/pg_sql.c recorded once: 1,2,...,N
    [ "$v" = "$(seq -s, 1 "${v##*,}")" ]
}
step concurrent-migration concurrent_migration

# 3. outages at the store level
pg_outage() { # pg_outage BUILD_DIR
    timeout 300 "$1/tests/plugins/store-pg/pg-outage" "$1/plugins/store-pg/.libs/store-pg.so"
}
step outage-store pg_outage "$CHATD_BUILD"
if [ -n "${CHATD_BUILD_ASAN:-}" ]; then
    pg_outage_asan() { ASAN_OPTIONS=detect_leaks=1 pg_outage "$CHATD_BUILD_ASAN"; }
    step outage-store-asan pg_outage_asan
fi

# from here on chatd runs from the ASan/UBSan build when there is one
use_sanitized_chatd || exit 1

# 4. outage end to end (chatd on etc/chatd-postgres.conf; the e2e runner starts
# and stops chatd and checks it exits 0 with no sanitizer report)
outage_e2e() {
    local log=$CHATD_OUT/pg-outage-e2e.log
    CHATD_E2E_NAME=pg-outage-e2e CHATD_E2E_TIMEOUT=300 "$CHATD_TOP/tests/e2e/run.sh" \
        "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$PGTEST_CONNINFO" --set store.reconnect_max_ms=1000 \
        --set chatd.publish_rate=1000 \
        -- node --test --test-reporter=spec "$CHATD_TOP/tests/plugins/store-pg/outage.mjs" || return 1
    # chatd said what happened
    grep -q "lost the connection to PostgreSQL" "$log" || { echo "50-pg: no 'lost the connection' in $log" >&2; return 1; }
    grep -q "PostgreSQL is back" "$log" || { echo "50-pg: no 'PostgreSQL is back' in $log" >&2; return 1; }
}
step outage-e2e outage_e2e

# 4b. the pending bound end to end: chatd with store.max_pending=10 while
# PostgreSQL is down refuses further publishes with a STOMP ERROR
busy_e2e() {
    local log=$CHATD_OUT/pg-busy-e2e.log
    BUSY_MAX_PENDING=10 CHATD_E2E_NAME=pg-busy-e2e CHATD_E2E_TIMEOUT=180 \
        "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$PGTEST_CONNINFO" --set store.max_pending=10 \
        --set store.reconnect_max_ms=500 \
        -- node --test --test-reporter=spec "$CHATD_TOP/tests/plugins/store-pg/busy.mjs" || return 1
    grep -q "refusing new messages until it is back" "$log" ||
        { echo "50-pg: no max_pending refusal logged in $log" >&2; return 1; }
}
step busy-e2e busy_e2e

# 4b'. expired idempotency keys are deleted in the background, in batches
idem_purge_e2e() {
    PURGE_WINDOW_S=3 CHATD_E2E_NAME=pg-idem-purge CHATD_E2E_TIMEOUT=180 \
        "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$PGTEST_CONNINFO" --set chatd.idempotency_window=3 \
        --set store.idem_purge_interval_s=1 --set store.idem_purge_batch=3 \
        -- node --test --test-reporter=spec "$CHATD_TOP/tests/plugins/store-pg/idem-purge.mjs"
}
step idem-purge idem_purge_e2e

# 4c. a server on which a RECEIPT could precede durability (fsync or
# synchronous_commit off) is refused at start, unless allowed explicitly
step unsafe-settings "$CHATD_TOP/tests/plugins/store-pg/unsafe.sh"

# 5. the end-to-end chat suites on PostgreSQL
step e2e-pg env CHATD_E2E_NAME=e2e-pg "$CHATD_TOP/tests/e2e/run.sh" \
    "$CHATD_TOP/etc/chatd-postgres.conf" --set "store.conninfo=$PGTEST_CONNINFO" \
    -- timeout 600 node --test --test-reporter=spec "$CHATD_TOP"/tests/e2e/*.test.mjs

if [ ${#failures[@]} -gt 0 ]; then
    echo "50-pg: failed: ${failures[*]} (logs in $CHATD_OUT)" >&2
    exit 1
fi
echo "50-pg: all passed" >&2
