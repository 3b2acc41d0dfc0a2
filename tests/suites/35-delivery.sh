#!/usr/bin/env bash
# tests/suites/35-delivery.sh - the delivery guarantees of docs/delivery.md
# (RECEIPTs that name the message, idempotent SEND and REST send, cursors,
# resume, the chaos test) against a fresh chatd with the embedded default
# config (queue-local + store-sqlite in a temporary file). The suites that
# restart chatd themselves get its binary, config and database through
# CHATD_DELIVERY_* variables.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CHATD_E2E_NAME=delivery-sqlite "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/chatd.db" --set chatd.publish_rate=0 \
    -- timeout 900 node --test --test-reporter=spec "$CHATD_TOP"/tests/delivery/*.test.mjs
