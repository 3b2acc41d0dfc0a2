#!/usr/bin/env bash
# tests/suites/40-browser.sh - the chat page in Debian's chromium, driven by
# playwright-core: two members in two browser contexts chat, the unread marker
# comes and goes, markup in a message stays text (chat.test.mjs); behind a TCP
# proxy that cuts it, the page misses nothing and shows nothing twice: the
# outbox, resume after reconnect, the history/live seam (delivery.test.mjs).
# Screenshots in $CHATD_OUT.
# chatd is the ASan/UBSan build under ./quickstart.sh test (see 30-e2e.sh).
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
use_sanitized_chatd
chromium=${CHATD_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
    echo "40-browser: no chromium at $chromium (apt-get install chromium)" >&2
    exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
CHATD_E2E_NAME=browser "$CHATD_TOP/tests/e2e/run.sh" "$CHATD_TOP/etc/chatd.conf" \
    --set "store.path=$tmp/chatd.db" \
    -- timeout 600 node --test --test-reporter=spec "$CHATD_TOP"/tests/browser/*.test.mjs
