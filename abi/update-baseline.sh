#!/usr/bin/env bash
# abi/update-baseline.sh - records the plugin ABI of include/chatd/plugin.h as
# abi/baseline/chatd-plugin-MAJOR.MINOR.abi after a version bump.
#
# Use: append to the ABI (new function at the end of a table, new field at the
# end of a struct, new enumerator), bump CHATD_ABI_MINOR in plugin.h and
# configure.ac, run this script, append static_asserts for the new members to
# abi/abi-check.c, and commit the new baseline with the change. A released
# baseline is never rewritten: the script refuses to change an existing one
# and refuses a minor bump that is not append-only (bump MAJOR for that).
set -euo pipefail
top=${CHATD_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
export CHATD_TOP=$top
header=$top/include/chatd/plugin.h
major=$(sed -n 's/^#define CHATD_ABI_MAJOR \([0-9][0-9]*\).*/\1/p' "$header")
minor=$(sed -n 's/^#define CHATD_ABI_MINOR \([0-9][0-9]*\).*/\1/p' "$header")
base=$top/abi/baseline/chatd-plugin-$major.$minor.abi

if [ -f "$base" ]; then
    # already recorded: only report whether it still matches
    if "$top/abi/check.sh"; then
        echo "update-baseline: ABI $major.$minor is already recorded and unchanged"
        exit 0
    fi
    echo "update-baseline: ABI $major.$minor is already recorded and must not change;" \
        "bump CHATD_ABI_MINOR (append-only) or CHATD_ABI_MAJOR (breaking)" >&2
    exit 1
fi
if [ "$minor" -ne 0 ] && ! ls "$top"/abi/baseline/chatd-plugin-"$major".*.abi >/dev/null 2>&1; then
    echo "update-baseline: a new major starts at minor 0 (set CHATD_ABI_MINOR 0)" >&2
    exit 1
fi

mkdir -p "$top/abi/baseline"
"$top/abi/check.sh" --write "$base.tmp"
mv "$base.tmp" "$base"
# check again: configure.ac agreement and append-only against older minors
if ! "$top/abi/check.sh"; then
    rm -f "$base"
    echo "update-baseline: not recorded; fix the errors above" >&2
    exit 1
fi
echo "update-baseline: recorded $base; commit it with the header change"
