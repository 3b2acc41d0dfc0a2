#!/usr/bin/env bash
# tests/suites/30-e2e.sh - the node:test end-to-end suites (real @stomp/stompjs
# and ws clients, raw WebSocket frames, REST) against a fresh chatd with the
# embedded default config (queue-local + store-sqlite in a temporary file);
# under ./quickstart.sh test, chatd is the ASan/UBSan build (LeakSanitizer at
# its SIGTERM exit): a sanitizer report fails the suite.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
use_sanitized_chatd
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CHATD_E2E_NAME=e2e-sqlite "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/chatd.db" \
    -- timeout 600 node --test --test-reporter=spec "$CHATD_TOP"/tests/e2e/*.test.mjs
# the paged lists, against a store that holds only the members that test makes
CHATD_E2E_NAME=e2e-paging "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/paging.db" \
    -- timeout 300 node --test --test-reporter=spec "$CHATD_TOP"/tests/e2e/paging.mjs
# STOMP heart-beats when heartbeat_send is below heartbeat_min: chatd still
# beats as often as its CONNECTED promised
CHATD_HB_MIN=5000 CHATD_E2E_NAME=e2e-heartbeat "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/heartbeat.db" --set ws.heartbeat_send=300 --set ws.heartbeat_min=5000 \
    -- timeout 120 node --test --test-reporter=spec "$CHATD_TOP"/tests/e2e/heartbeat-config.mjs
