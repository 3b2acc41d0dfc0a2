#!/usr/bin/env bash
# tests/plugins/queue-kafka/topic-check.sh - queue-kafka refuses to start on a topic whose
# replication cannot hold what a RECEIPT promises, and says what to change:
#   1. a topic with replication factor 1 (a one-broker mock cluster) and the
#      default min_insync_replicas = 2: chatd exits non-zero naming the
#      replication factor;
#   2. a replicated topic whose min.insync.replicas chatd cannot confirm (the
#      mock cluster does not answer DescribeConfigs): refused too;
#   3. the one-broker topic with min_insync_replicas = 1 set explicitly:
#      chatd starts, warns, and stops cleanly.
# Run by tests/suites/60-kafka.sh; the store is SQLite (nothing is stored).
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
# shellcheck source=../../lib.sh
source "$CHATD_TOP/tests/lib.sh"
mock=$CHATD_BUILD/tests/plugins/queue-kafka/mock-cluster
work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-topic-check.XXXXXX")
mocks=()
cleanup() {
    local p
    cleanup_chatd
    for p in "${mocks[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "topic-check: FAILED: $*" >&2; exit 1; }

# start_mock BROKERS: a mock cluster with topic kchat-check; prints its bootstrap
start_mock() {
    local out=$work/mock$1.out i boot=""
    mkfifo "$work/ctl$1"
    "$mock" -b "$1" -r "$1" -p 2 -t kchat-check -c "$work/ctl$1" >"$out" \
        2>>"$CHATD_OUT/kafka-topic-check-mock.log" &
    mocks+=($!)
    for ((i = 0; i < 100; i++)); do
        boot=$(awk '/^bootstrap /{print $2; exit}' "$out" 2>/dev/null || true)
        [ -n "$boot" ] && break
        sleep 0.1
    done
    [ -n "$boot" ] || fail "mock-cluster -b $1 printed no bootstrap address"
    BOOT=$boot
}

conf=$work/chatd.conf
sed '/^\[store\]/,$d' "$CHATD_TOP/etc/chatd-kafka.conf" >"$conf"
printf '[store]\nplugin = store-sqlite\npath = %s\n' "$work/check.db" >>"$conf"

# run NAME BOOTSTRAP [--set ...]: start chatd on the topic; sets PORT
run() {
    local name=$1 boot=$2; shift 2
    PORT=$(free_port)
    start_chatd "$name" "$conf" --set "ws.listen=127.0.0.1:$PORT" --set "ws.web_root=$CHATD_TOP/web" \
        --set "queue.kafka.bootstrap.servers=$boot" --set queue.topic=kchat-check \
        --set "queue.group=check-$$" --set queue.check_timeout=3000 "$@"
}

# refused NAME BOOTSTRAP PATTERN: chatd exits non-zero within 30 s and logs PATTERN
refused() {
    local name=$1 log=$CHATD_OUT/$1.log pat=$3 rc=0 i
    run "$name" "$2"
    for ((i = 0; i < 300; i++)); do kill -0 "$CHATD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$CHATD_PID" 2>/dev/null && fail "$name: chatd still runs on an unsafe topic"
    wait "$CHATD_PID" || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: chatd exited 0"
    grep -q "$pat" "$log" || fail "$name: no \"$pat\" in $log"
    echo "topic-check: $name: refused (exit $rc): $(grep -o "$pat.*" "$log" | head -n 1 | cut -c1-120)" >&2
}

start_mock 1
one=$BOOT
start_mock 3
three=$BOOT

refused kafka-check-rf1 "$one" "topic kchat-check has a replication factor of 1, below min_insync_replicas = 2"
refused kafka-check-minisr "$three" "min.insync.replicas"

run kafka-check-lowered "$one" --set queue.min_insync_replicas=1
wait_port "$PORT" 30 || fail "chatd with min_insync_replicas = 1 did not start"
grep -q "min_insync_replicas = 1: the replication of topic kchat-check is not checked" \
    "$CHATD_OUT/kafka-check-lowered.log" || fail "no warning with min_insync_replicas = 1"
stop_chatd "$CHATD_PID" || fail "chatd with min_insync_replicas = 1 did not stop cleanly"
echo "topic-check: all passed" >&2
