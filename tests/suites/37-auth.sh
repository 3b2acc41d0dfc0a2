#!/usr/bin/env bash
# tests/suites/37-auth.sh - password hashing under a throttle (issue 13 item
# 3): the login flood, the password guesser and the registration flood get
# 429 with Retry-After after the configured count, the number of argon2
# hashes (chatd_auth_hashes_total) stays within the limits, and a normal
# member logs in and chats meanwhile; the member cache stays within
# member_cache_max and every room check stays right (tests/auth/*.test.mjs). chatd runs the
# embedded default config with the login limits at their defaults and a low
# register_limit; the tests read the limits from env.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# login_fail_limit and login_fail_window stay at their defaults (10, 600 s)
export CHATD_AUTH_FAIL_LIMIT=10 CHATD_AUTH_FAIL_WINDOW=600 CHATD_AUTH_REGISTER_LIMIT=5
export CHATD_AUTH_MEMBER_CACHE_MAX=16
sets=(--set "store.path=$tmp/chatd.db" --set "chatd.register_limit=$CHATD_AUTH_REGISTER_LIMIT"
    --set "chatd.member_cache_max=$CHATD_AUTH_MEMBER_CACHE_MAX")
# /metrics: on its own listener when transport-ws has one, else on the public one
# (grep reads it all: with -q it may exit first, and pipefail sees chatd's SIGPIPE)
if "$CHATD_BIN" -h transport-ws 2>/dev/null | grep '^ *metrics_listen' >/dev/null; then
    mport=$(free_port)
    sets+=(--set "ws.metrics_listen=127.0.0.1:$mport")
    export CHATD_METRICS_URL=http://127.0.0.1:$mport/metrics
fi
CHATD_E2E_NAME=auth "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" "${sets[@]}" \
    -- timeout 600 node --test --test-concurrency=1 --test-reporter=spec \
    "$CHATD_TOP"/tests/auth/*.test.mjs
