#!/bin/sh
# tests/plugins/queue-local/queue-local.sh - make check: the queue-local plugin against the test core (tests/lib/).
# Run from the build tree's tests/ directory (as make check does).
set -eu
so=../plugins/queue-local/.libs/queue-local.so
if [ ! -f "$so" ]; then
    echo "queue-local.sh: $so is not built; run make first" >&2
    exit 99
fi
exec ./plugins/queue-local/queue_local_test "$so"
