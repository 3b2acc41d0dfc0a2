#!/usr/bin/env bash
# tests/suites/70-sdk.sh - the plugin SDK and the operator's view, from an
# installed chatd:
#   1. configure + make install into a temporary prefix (a separate build dir)
#      and check what was installed: header, chatd-plugin.pc, plugins, man
#      pages, systemd unit, config, web page, plugin guide;
#   2. build both examples/ plugins out of tree with nothing but
#      `pkg-config chatd-plugin` and `make install` them into its plugindir;
#   3. the ABI check (abidiff against the baseline, and the static asserts
#      compiled against the installed header);
#   4. the installed config passes `chatd -t`; the shipped unit is sane;
#      `chatd -h PLUGIN` lists a third-party plugin's keys; a bad value is
#      refused with FILE:LINE; plugins built for ABI major+1 or minor+1 are
#      refused with a log line naming both versions;
#   5. the installed chatd with the filter loaded twice ([mask], [block]):
#      a real STOMP client sees masked and rejected messages, GET /metrics is
#      scraped during the chat; SIGHUP makes [mask] re-read its words_file
#      (and keep the old list when the new file is bad);
#   6. the installed chatd on the store-memory example: a whole chat works.
# Needs: a C compiler, make, pkg-config, node + tests/node_modules, abidw and
# abidiff (abigail-tools) and systemd-analyze (systemd); a missing one fails.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"

say() { printf '[70-sdk] %s\n' "$*"; }
fail() { printf '[70-sdk] FAIL: %s\n' "$*" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatd-sdk.XXXXXX")
cleanup() {
    cleanup_chatd
    rm -rf "$tmp"
}
trap cleanup EXIT
prefix=$tmp/prefix
jobs=$(nproc 2>/dev/null || echo 2)

# ---- 1. install into a temporary prefix ------------------------------------
[ -x "$CHATD_TOP/configure" ] || fail "no configure in $CHATD_TOP (run autoreconf -fi or ./quickstart.sh)"
say "configure --prefix=$prefix and make install (build in $tmp/build)"
mkdir -p "$tmp/build"
(
    cd "$tmp/build"
    timeout 300 "$CHATD_TOP/configure" -q --prefix="$prefix" \
        --enable-transport-ws --enable-queue-local --enable-store-sqlite \
        --disable-store-pg --disable-queue-kafka >"$CHATD_OUT/70-sdk-build.log" 2>&1 &&
        timeout 600 make -s -j"$jobs" >>"$CHATD_OUT/70-sdk-build.log" 2>&1 &&
        timeout 300 make -s install >>"$CHATD_OUT/70-sdk-build.log" 2>&1
) || { tail -30 "$CHATD_OUT/70-sdk-build.log" >&2; fail "build/install into $prefix (log: $CHATD_OUT/70-sdk-build.log)"; }

for f in bin/chatd include/chatd/plugin.h include/chatd/plugin_types.h include/chatd/plugin_api.h lib/pkgconfig/chatd-plugin.pc \
    lib/chatd/plugins/transport-ws.so lib/chatd/plugins/queue-local.so \
    lib/chatd/plugins/store-sqlite.so share/man/man8/chatd.8 share/man/man5/chatd.conf.5 \
    etc/chatd/chatd.conf lib/systemd/system/chatd.service lib/sysusers.d/chatd.conf \
    share/chatd/web/index.html \
    share/doc/chatd/plugin-guide.md; do
    [ -e "$prefix/$f" ] || fail "make install did not install $f"
done
for so in "$prefix"/lib/chatd/plugins/*.so; do
    syms=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBR]$/ {print $3}' | sort -u | tr '\n' ' ')
    [ "$syms" = "chatd_plugin_entry " ] || fail "$(basename "$so") exports more than the entry point: $syms"
done
say "installed layout ok"

export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
pc() { pkg-config "$@" chatd-plugin; }
[ "$(pc --variable=plugindir)" = "$prefix/lib/chatd/plugins" ] || fail "plugindir is $(pc --variable=plugindir)"
hdr_major=$(sed -n 's/^#define CHATD_ABI_MAJOR \([0-9]*\).*/\1/p' "$prefix/include/chatd/plugin.h")
hdr_minor=$(sed -n 's/^#define CHATD_ABI_MINOR \([0-9]*\).*/\1/p' "$prefix/include/chatd/plugin.h")
[ "$(pc --variable=abi_major).$(pc --variable=abi_minor)" = "$hdr_major.$hdr_minor" ] ||
    fail "chatd-plugin.pc says ABI $(pc --variable=abi_major).$(pc --variable=abi_minor), the header $hdr_major.$hdr_minor"
case " $(pc --cflags) " in *" -I$prefix/include "*) ;; *) fail "Cflags lack -I$prefix/include: $(pc --cflags)" ;; esac
say "chatd-plugin.pc ok: ABI $hdr_major.$hdr_minor, plugindir $(pc --variable=plugindir)"

# DESTDIR staging must keep every file under DESTDIR (as distcheck and packagers need)
make -s -C "$tmp/build" install DESTDIR="$tmp/staged" >>"$CHATD_OUT/70-sdk-build.log" 2>&1 ||
    fail "make install DESTDIR=..."
[ -f "$tmp/staged$prefix/include/chatd/plugin.h" ] || fail "DESTDIR install misses the header"
[ -f "$tmp/staged$prefix/etc/chatd/chatd.conf" ] || fail "DESTDIR install misses the config"

# ---- 2. the examples, out of tree ------------------------------------------
mkdir -p "$tmp/src"
cp -R "$CHATD_TOP/examples/filter-banned-words" "$CHATD_TOP/examples/store-memory" "$tmp/src/"
for ex in filter-banned-words store-memory; do
    (cd "$tmp/src/$ex" && make clean >/dev/null && make && make install) \
        >"$CHATD_OUT/70-sdk-$ex.log" 2>&1 || { cat "$CHATD_OUT/70-sdk-$ex.log" >&2; fail "building example $ex"; }
    [ -f "$prefix/lib/chatd/plugins/$ex.so" ] || fail "make install of $ex did not reach the plugindir"
    syms=$(nm -D --defined-only "$prefix/lib/chatd/plugins/$ex.so" | awk '$2 ~ /^[TDBR]$/ {print $3}' | tr '\n' ' ')
    [ "$syms" = "chatd_plugin_entry " ] || fail "$ex exports more than the entry point: $syms"
done
say "examples built out of tree with pkg-config and installed"

# ---- 3. ABI check -----------------------------------------------------------
cc=${CC:-cc}
read -ra sdk_cflags <<<"$(pc --cflags)"
"$cc" -std=c11 -Wall -Wextra -Werror "${sdk_cflags[@]}" -fPIE -o "$tmp/abi-check" "$CHATD_TOP/abi/abi-check.c" ||
    fail "abi/abi-check.c does not compile against the installed header: the ABI is broken"
"$tmp/abi-check" || fail "abi-check"
rc=0
CC=$cc "$CHATD_TOP/abi/check.sh" || rc=$?
case $rc in
    0) ;;
    77) fail "abi/check.sh could not check the ABI here (reason above; install abigail-tools)" ;;
    *) fail "abi/check.sh: the ABI differs from its baseline" ;;
esac

# ---- 4. installed config and unit -------------------------------------------
chatd=$prefix/bin/chatd
export CHATD_BIN=$chatd # start_chatd runs the installed daemon
unit=$prefix/lib/systemd/system/chatd.service
grep -qx "ExecStart=$chatd -c $prefix/etc/chatd/chatd.conf" "$unit" || fail "ExecStart of chatd.service"
grep -qx 'ExecReload=/bin/kill -HUP $MAINPID' "$unit" || fail "ExecReload of chatd.service"
grep -qx 'StateDirectory=chatd' "$unit" || fail "StateDirectory of chatd.service"
grep -qx 'User=chatd' "$unit" || fail "User of chatd.service"
command -v systemd-analyze >/dev/null 2>&1 || fail "systemd-analyze not found: install the Debian package systemd"
timeout 30 systemd-analyze verify --man=no "$unit" >"$tmp/verify.log" 2>&1 ||
    fail "systemd-analyze verify chatd.service: $(cat "$tmp/verify.log")"
if [ -s "$tmp/verify.log" ]; then fail "systemd-analyze verify warns: $(cat "$tmp/verify.log")"; fi
grep -q "^web_root = $prefix/share/chatd/web\$" "$prefix/etc/chatd/chatd.conf" || fail "web_root of the installed config"
grep -q '^path = /var/lib/chatd/chatd.db$' "$prefix/etc/chatd/chatd.conf" || fail "store path of the installed config"
timeout 20 "$chatd" -t -c "$prefix/etc/chatd/chatd.conf" --set store.path="$tmp/var/chatd.db" \
    >"$CHATD_OUT/70-sdk-t.log" 2>&1 || { cat "$CHATD_OUT/70-sdk-t.log" >&2; fail "chatd -t on the installed config"; }
say "installed config and unit ok"

# ---- 4b. what a plugin author sees from the installed daemon -------------------
"$chatd" -h filter-banned-words >"$tmp/help.txt" 2>&1 || fail "chatd -h filter-banned-words"
grep -q '^ *words_file ' "$tmp/help.txt" || fail "chatd -h does not list the filter's keys: $(cat "$tmp/help.txt")"
# a bad value is refused at create, with the file and line of the key
cat >"$tmp/bad.conf" <<EOF
[ws]
plugin = transport-ws
listen = 127.0.0.1:$(free_port)
[banned]
plugin = filter-banned-words
words = spam
mode = drop
[queue]
plugin = queue-local
[store]
plugin = store-memory
EOF
rc=0
timeout 20 "$chatd" -c "$tmp/bad.conf" >"$tmp/bad.log" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "chatd with mode = drop exited $rc, not 1"
grep -q "bad.conf:7: \[banned\] mode: 'drop' is not mask or reject" "$tmp/bad.log" ||
    fail "no FILE:LINE error for a bad filter value: $(cat "$tmp/bad.log")"
# the ABI promise, enforced: a plugin of another major, or of a newer minor, is refused
for v in MAJOR MINOR; do
    lv=${v,,}
    d=$tmp/abi-$lv
    mkdir -p "$d"
    sed -e "s/CHATD_ABI_$v,/CHATD_ABI_$v + 1,/" -e "s/\"filter-banned-words\"/\"filter-abi-$lv\"/" \
        "$tmp/src/filter-banned-words/filter_banned_words.c" >"$d/f.c"
    grep -q "CHATD_ABI_$v + 1," "$d/f.c" || fail "could not make the ABI $lv test plugin"
    "$cc" -std=c11 "${sdk_cflags[@]}" -shared -o "$d/filter-abi-$lv.so" "$d/f.c" || fail "building the $lv test plugin"
    # a plugin named by path (with a '/') is loaded from there
    sed -e "s|^plugin = filter-banned-words|plugin = $d/filter-abi-$lv.so|" -e 's/^mode = drop/mode = mask/' \
        "$tmp/bad.conf" >"$d/chatd.conf"
    rc=0
    timeout 20 "$chatd" -t -c "$d/chatd.conf" >"$d/log" 2>&1 || rc=$?
    [ "$rc" = 1 ] || fail "a plugin of ABI $lv+1 was not refused (exit $rc): $(cat "$d/log")"
    if [ $v = MAJOR ]; then want="built for plugin ABI $((hdr_major + 1))\\.$hdr_minor, this chatd speaks $hdr_major\\.$hdr_minor"
    else want="built for a newer plugin ABI $hdr_major\\.$((hdr_minor + 1)) than this chatd's $hdr_major\\.$hdr_minor"; fi
    grep -q "\[banned\].*$want" "$d/log" || fail "the refusal of ABI $lv+1 does not say why: $(cat "$d/log")"
    say "ABI $lv+1 plugin refused: $(grep "$want" "$d/log" | head -1 | sed 's/^[^]]*] //' | cut -c1-160)"
done

# ---- 5. the filter, end to end, and /metrics ----------------------------------
node_modules_ready || fail "the npm packages of tests/ (see above)"
port=$(free_port)
mport=$(free_port)
mkdir -p "$tmp/var"
printf '# words masked by [mask], besides its words key\nscam\n' >"$tmp/banned.txt"
cat >"$tmp/filter.conf" <<EOF
# 70-sdk: the installed chatd with the example filter loaded twice
[chatd]
log_level = info
[ws]
plugin = transport-ws
listen = 127.0.0.1:$port
metrics_listen = 127.0.0.1:$mport
allowed_origins = http://127.0.0.1:$port
[mask]
plugin = filter-banned-words
words = spam
words_file = $tmp/banned.txt
[block]
plugin = filter-banned-words
words = forbidden
mode = reject
[queue]
plugin = queue-local
[store]
plugin = store-sqlite
path = $tmp/var/chatd.db
EOF
start_chatd 70-sdk-filter "$tmp/filter.conf"
pid=$CHATD_PID
wait_port "$port" 20 || { cat "$CHATD_OUT/70-sdk-filter.log" >&2; fail "chatd with the filter did not listen"; }
grep -q '\[mask\].*banned word' "$CHATD_OUT/70-sdk-filter.log" || fail "[mask] did not log its word list"
grep -q '\[block\].*mode reject' "$CHATD_OUT/70-sdk-filter.log" || fail "[block] did not start in reject mode"
CHATD_METRICS_URL=http://127.0.0.1:$mport/metrics CHATD_URL=http://127.0.0.1:$port timeout 120 node "$CHATD_TOP/tests/suites/70-sdk-chat.mjs" filter ||
    { tail -30 "$CHATD_OUT/70-sdk-filter.log" >&2; fail "the filter chat"; }

# SIGHUP: [mask] re-reads its words_file; chatd keeps serving
echo 'eggs' >>"$tmp/banned.txt"
kill -HUP "$pid"
wait_log "$CHATD_OUT/70-sdk-filter.log" '\[mask\] reloaded: 3 banned word' ||
    fail "SIGHUP did not make [mask] re-read its words_file"
CHATD_URL=http://127.0.0.1:$port timeout 60 node "$CHATD_TOP/tests/suites/70-sdk-chat.mjs" reload ||
    fail "the reloaded word list"
# a bad file on reload is refused and the old list kept
printf '%070d\n' 0 >>"$tmp/banned.txt"
kill -HUP "$pid"
wait_log "$CHATD_OUT/70-sdk-filter.log" '\[mask\] words_file: a word is longer than 64 bytes; kept the previous' ||
    fail "a bad words_file on SIGHUP was not refused with a warning"
kill -0 "$pid" 2>/dev/null || fail "chatd died on SIGHUP"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
[ "$code" = 200 ] || fail "GET /healthz after SIGHUP: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
[ "$code" = 404 ] || fail "GET /metrics on the public listener: $code (want 404)"
code=$(curl -s -o "$CHATD_OUT/70-sdk-metrics.txt" -w '%{http_code}' "http://127.0.0.1:$mport/metrics")
[ "$code" = 200 ] || fail "GET /metrics on metrics_listen: $code (want 200)"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$mport/api/me")
[ "$code" = 404 ] || fail "GET /api/me on metrics_listen: $code (want 404: only /metrics there)"
stop_chatd "$pid" || fail "chatd did not stop cleanly (see $CHATD_OUT/70-sdk-filter.log)"
say "filter end to end, /metrics and SIGHUP ok (metrics: $CHATD_OUT/70-sdk-metrics.txt)"

# ---- 6. store-memory ----------------------------------------------------------
port=$(free_port)
cat >"$tmp/memory.conf" <<EOF
# 70-sdk: the installed chatd on the example in-memory store
[chatd]
log_level = info
[ws]
plugin = transport-ws
listen = 127.0.0.1:$port
allowed_origins = http://127.0.0.1:$port
[queue]
plugin = queue-local
[store]
plugin = store-memory
max_messages = 1000
EOF
start_chatd 70-sdk-memory "$tmp/memory.conf"
pid=$CHATD_PID
wait_port "$port" 20 || { cat "$CHATD_OUT/70-sdk-memory.log" >&2; fail "chatd on store-memory did not listen"; }
grep -q '\[store\].*in-memory store ready' "$CHATD_OUT/70-sdk-memory.log" || fail "store-memory did not start"
CHATD_URL=http://127.0.0.1:$port timeout 120 node "$CHATD_TOP/tests/suites/70-sdk-chat.mjs" store ||
    { tail -30 "$CHATD_OUT/70-sdk-memory.log" >&2; fail "the chat on store-memory"; }
stop_chatd "$pid" || fail "chatd on store-memory did not stop cleanly"
say "store-memory end to end ok"
say "all ok"
