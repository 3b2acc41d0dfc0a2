#!/usr/bin/env bash
# abi/check.sh - checks the plugin ABI of include/chatd/plugin.h against the
# committed baselines in abi/baseline/ (abidw/abidiff from abigail-tools).
#
#   1. The header's CHATD_ABI_MAJOR.MINOR matches configure.ac (which the
#      installed chatd-plugin.pc advertises).
#   2. The ABI the header describes today is exactly the baseline of its
#      version: any change to a public type needs a version bump and a new
#      baseline (abi/update-baseline.sh).
#   3. It is an append-only extension of every older baseline of the same
#      major: no member or enumerator removed, moved, retyped or renumbered.
#
# Exit 0: ABI intact. 1: ABI broken or baseline missing. 77: cannot check
# here (no abigail-tools, or not a 64-bit target), the automake "skip" code.
# Environment: CC (default cc), CHATD_TOP (default: this script's parent).
# With --write FILE it only writes the current ABI description to FILE.
set -euo pipefail

top=${CHATD_TOP:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
cc=${CC:-cc}
header=$top/include/chatd/plugin.h

say() { printf 'abi-check: %s\n' "$*" >&2; }

for tool in abidw abidiff; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        say "SKIP: $tool not found (install the Debian package abigail-tools)"
        exit 77
    fi
done
if [ "$(getconf LONG_BIT)" != 64 ]; then
    say "SKIP: the baselines describe a 64-bit (LP64) target"
    exit 77
fi

abi_version() { # abi_version FILE MACRO -> value of #define MACRO N
    sed -n "s/^#define $2 \\([0-9][0-9]*\\).*/\\1/p" "$1"
}
major=$(abi_version "$header" CHATD_ABI_MAJOR)
minor=$(abi_version "$header" CHATD_ABI_MINOR)
if [ -z "$major" ] || [ -z "$minor" ]; then
    say "FAIL: cannot read CHATD_ABI_MAJOR/CHATD_ABI_MINOR from $header"
    exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatd-abi.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The reference object is compiled from inside abi/ with a relative source
# name, so that no build path ends up in the description.
(cd "$top/abi" && $cc -std=c11 -g -O0 -fPIC -shared -fvisibility=hidden \
    -I"$top/include" -o "$tmp/abi-ref.so" abi-ref.c) || {
    say "FAIL: cannot compile abi/abi-ref.c with $cc against $header"
    exit 1
}
abidw --no-corpus-path --no-comp-dir-path --no-show-locs --no-architecture \
    --drop-undefined-syms --type-id-style hash --out-file "$tmp/current.abi" \
    "$tmp/abi-ref.so"

if [ "${1:-}" = --write ]; then
    cp "$tmp/current.abi" "$2"
    exit 0
fi

fail=0

# 1. configure.ac and the header agree
ac_major=$(sed -n 's/^AC_SUBST(\[CHATD_ABI_MAJOR\], \[\([0-9]*\)\]).*/\1/p' "$top/configure.ac")
ac_minor=$(sed -n 's/^AC_SUBST(\[CHATD_ABI_MINOR\], \[\([0-9]*\)\]).*/\1/p' "$top/configure.ac")
if [ "$ac_major.$ac_minor" != "$major.$minor" ]; then
    say "FAIL: configure.ac says ABI $ac_major.$ac_minor but plugin.h says $major.$minor;" \
        "set both (chatd-plugin.pc is generated from configure.ac)"
    fail=1
fi

# 2. the current ABI is exactly the baseline of the current version
base=$top/abi/baseline/chatd-plugin-$major.$minor.abi
if [ ! -f "$base" ]; then
    say "FAIL: no baseline for ABI $major.$minor ($base)."
    say "      After appending to the ABI and bumping CHATD_ABI_MINOR (or MAJOR),"
    say "      run abi/update-baseline.sh and commit the new file."
    exit 1
fi
if ! abidiff -l --harmless "$base" "$tmp/current.abi" >"$tmp/same.txt" 2>&1; then
    say "FAIL: include/chatd/plugin.h no longer matches the ABI $major.$minor baseline:"
    sed 's/^/    /' "$tmp/same.txt" >&2
    say "      An append-only change needs CHATD_ABI_MINOR+1 (plugin.h and configure.ac)"
    say "      and abi/update-baseline.sh; anything else breaks plugins: CHATD_ABI_MAJOR+1."
    fail=1
else
    say "ok: ABI $major.$minor matches $(basename "$base")"
fi

# 3. append-only against every older minor of this major
# Leaf-mode abidiff lists each changed type once; the only changes allowed are
# grown sizes, members inserted at the end and enumerators inserted.
compat_filter() {
    awk '
        /^(Leaf changes summary|Changed leaf types summary|Removed\/Changed\/Added)/ { next }
        /^[[:space:]]*$/ { next }
        /^\047(struct|enum|union|typedef) [^\047]*\047 changed:$/ { next }
        /^  type size hasn\047t changed$/ { next }
        /^  type size changed from [0-9]+ to [0-9]+ \(in bits\)$/ {
            if ($5 + 0 > $7 + 0) { print; bad = 1 }
            next
        }
        /^  [0-9]+ data member insertions?:$/ { ins = 1; next }
        /^  [0-9]+ enumerator insertions?:$/ { ins = 1; next }
        /^    / && ins { next }
        { ins = 0; print; bad = 1 }
        END { exit bad }
    '
}
for old in "$top"/abi/baseline/chatd-plugin-"$major".*.abi; do
    [ -e "$old" ] || continue
    v=${old##*/chatd-plugin-}; v=${v%.abi}
    [ "$v" = "$major.$minor" ] && continue
    [ "${v#*.}" -lt "$minor" ] || continue
    abidiff -l --harmless "$old" "$tmp/current.abi" >"$tmp/diff.txt" 2>&1 || true
    if grep -q 'Removed/Changed/Added functions summary: 0 Removed' "$tmp/diff.txt" &&
        compat_filter <"$tmp/diff.txt" >"$tmp/bad.txt"; then
        say "ok: ABI $major.$minor is an append-only extension of $v"
    else
        say "FAIL: ABI $major.$minor is not compatible with $v; these changes break plugins:"
        sed 's/^/    /' "$tmp/bad.txt" >&2
        fail=1
    fi
done

exit $fail
