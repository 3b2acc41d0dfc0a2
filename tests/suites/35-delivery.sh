#!/usr/bin/env bash
# tests/suites/35-delivery.sh - the delivery guarantees of docs/delivery.md
# (RECEIPTs that name the message, idempotent SEND and REST send, cursors,
# resume, the chaos test), tests/delivery/*.test.mjs:
#   1. every file against a fresh chatd with the embedded default config
#      (queue-local + store-sqlite in a temporary file); the files that kill
#      and restart chatd (restart, gap) or need limits of their own (backlog)
#      run a chatd of their own;
#   2. the files that use the suite's chatd (idempotency, REST send, resume,
#      chaos) against chatd on PostgreSQL (a throw-away server of
#      tests/plugins/store-pg/pg-start.sh), when store-pg is built.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
source "$CHATD_TOP/tests/lib.sh"
# The ASan/UBSan chatd under ./quickstart.sh test: the suite's chatd (run.sh
# fails on a report in its log) and the ones the tests start themselves
# (tests/delivery/daemon.mjs: their logs are checked below). Except
# gap.test.mjs, on the plain build: its bound is chatd's own RSS, which
# ASan's shadow memory and quarantine make meaningless.
plain_build=$CHATD_BUILD plain_bin=$CHATD_BIN
use_sanitized_chatd
export CHATD_BUILD CHATD_OUT CHATD_BIN
tmp=$(mktemp -d)
stamp=$tmp/started
: >"$stamp"
pg_dir=
cleanup() {
    [ -n "$pg_dir" ] && "$CHATD_TOP/tests/plugins/store-pg/pg-stop.sh" "$pg_dir" || true
    rm -rf "$tmp"
}
trap cleanup EXIT
rc=0
files=()
for f in "$CHATD_TOP"/tests/delivery/*.test.mjs; do
    [ "$(basename "$f")" = gap.test.mjs ] || files+=("$f")
done
CHATD_E2E_NAME=delivery-sqlite "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/chatd.db" --set chatd.publish_rate=0 \
    -- timeout 900 node --test --test-reporter=spec "${files[@]}" || rc=1
CHATD_BUILD=$plain_build CHATD_BIN=$plain_bin timeout 300 \
    node --test --test-reporter=spec "$CHATD_TOP/tests/delivery/gap.test.mjs" || rc=1

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
# a sanitizer report in the log of any chatd started during the suite
for f in "$CHATD_OUT"/*.log; do
    [ "$f" -nt "$stamp" ] && sanitizer_report "$f" && rc=1
done
exit $rc
