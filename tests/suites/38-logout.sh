#!/usr/bin/env bash
# tests/suites/38-logout.sh - logout and expiry end live sessions on every node
# (issue 13 item 4) and expired sessions are purged (item 3): two chatd nodes
# (node_id 1 and 2, queue-local each) share one SQLite store in WAL mode;
# tests/logout/*.test.mjs runs against both (CHATD_URL_A node A, CHATD_URL
# node B, CHATD_DB the store file), with session_purge_interval = 1 s.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export CHATD_DB=$tmp/chatd.db
common=(--set "store.path=$CHATD_DB" --set "chatd.session_purge_interval=1")
# node A runs the rest: node B inside it, with A's address kept in CHATD_URL_A
CHATD_E2E_NAME=logout-a "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" "${common[@]}" \
    --set chatd.node_id=1 -- env CHATD_E2E_NAME=logout-b bash -c \
    'CHATD_URL_A=$CHATD_URL exec "$0" "$@"' "$CHATD_TOP/tests/e2e/run.sh" \
    "$CHATD_TOP/etc/chatd.conf" "${common[@]}" --set chatd.node_id=2 -- \
    timeout 300 node --test --test-concurrency=1 --test-reporter=spec "$CHATD_TOP"/tests/logout/*.test.mjs
