#!/bin/sh
# tests/plugins/store-sqlite/store-sqlite.sh - make check: the store conformance suite against
# store-sqlite, on a database file in a temporary directory.
# Run from the build tree's tests/ directory (as make check does).
set -eu
so=../plugins/store-sqlite/.libs/store-sqlite.so
if [ ! -f "$so" ]; then
    echo "store-sqlite.sh: $so is not built; run make first" >&2
    exit 99
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatd-store-sqlite.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
# small batches too, so that a run spans several transactions
./store/store_conformance "$so" "path=$tmp/sub/chatd.db" batch_max=256 busy_timeout_ms=2000
# a checkpoint requested after every batch (the checkpoint thread runs while
# the writer commits), and the sync stage skipped (synchronous = normal)
rm -rf "$tmp/sub"
./store/store_conformance "$so" "path=$tmp/sub/chatd.db" batch_max=16 checkpoint_pages=1 \
    busy_timeout_ms=2000
rm -rf "$tmp/sub"
./store/store_conformance "$so" "path=$tmp/sub/chatd.db" synchronous=normal busy_timeout_ms=2000
