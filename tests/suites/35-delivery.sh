#!/usr/bin/env bash
# tests/suites/35-delivery.sh - the delivery guarantees of docs/delivery.md
# (RECEIPTs that name the message, idempotent SEND and REST send, cursors,
# resume, the chaos test), tests/delivery/*.test.mjs:
#   1. every file against a fresh chatd with the embedded default config
#      (queue-local + store-sqlite in a temporary file); the files that kill
#      and restart chatd (restart, gap) run a chatd of their own;
#   2. the files that use the suite's chatd (idempotency, REST send, resume,
#      chaos) against chatd on PostgreSQL (a throw-away server of
#      tests/plugins/store-pg/pg-start.sh), when store-pg is built.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
source "$CHATD_TOP/tests/lib.sh"
export CHATD_BUILD CHATD_OUT CHATD_BIN
tmp=$(mktemp -d)
pg_dir=
cleanup() {
    [ -n "$pg_dir" ] && "$CHATD_TOP/tests/plugins/store-pg/pg-stop.sh" "$pg_dir" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
rc=0
CHATD_E2E_NAME=delivery-sqlite "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/chatd.db" --set chatd.publish_rate=0 \
    -- timeout 900 node --test --test-reporter=spec "$CHATD_TOP"/tests/delivery/*.test.mjs || rc=1

if [ -f "$CHATD_BUILD/plugins/store-pg/.libs/store-pg.so" ]; then
    pg_env=$("$CHATD_TOP/tests/plugins/store-pg/pg-start.sh")
    eval "$pg_env"
    pg_dir=$PGTEST_DIR
    CHATD_E2E_NAME=delivery-pg "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$PGTEST_CONNINFO" --set chatd.publish_rate=0 \
        -- timeout 600 node --test --test-reporter=spec \
        "$CHATD_TOP/tests/delivery/idempotency.test.mjs" \
        "$CHATD_TOP/tests/delivery/rest-send.test.mjs" \
        "$CHATD_TOP/tests/delivery/resume.test.mjs" \
        "$CHATD_TOP/tests/delivery/chaos.test.mjs" || rc=1
else
    echo "35-delivery: store-pg is not built: the PostgreSQL pass is skipped" >&2
fi
exit $rc
