#!/usr/bin/env bash
# tests/plugins/queue-kafka/chaos.sh - runs the three-node chaos test
# (chaos.mjs next to this file) against a running mock Kafka cluster and
# PostgreSQL: a database and a topic of its own, a start script per node
# whose clock is set CHATD_CHAOS_SKEW seconds off (default "0 -3 4", node 1
# first) with libfaketime (and faketime-cnd.c) preloaded through env(1) (so
# that the pid the test signals is chatd's) and fanout_lookback=0 (the
# fan-out starts from the store's heads, no clock takes part; with
# fanout_start=clock a node ahead would drop the others' first messages),
# then the test, then a sanitizer check of each log.
#
#   chaos.sh --set K=V ...   the settings every node shares (bootstrap.servers, ...)
# Needs CHATD_TOP, CHATD_BIN, CHATD_OUT, KAFKA_MOCK_CTL and KAFKA_MOCK_OUT
# (the mock cluster's control FIFO and output), PGTEST_PORT (pg-start.sh).
# Logs: $CHATD_OUT/kafka-chaos-node{1,2,3}.log.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)}"
# shellcheck source=../../lib.sh
source "$CHATD_TOP/tests/lib.sh"
read -r -a skew <<<"${CHATD_CHAOS_SKEW:-0 -3 4}"
[ ${#skew[@]} -eq 3 ] || { echo "chaos: CHATD_CHAOS_SKEW must give three offsets in seconds" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-chaos.XXXXXX")
cleanup() {
    local p
    for p in "$work"/*.pid; do
        [ -e "$p" ] && kill -KILL "$(cat "$p")" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

fakelib=
for d in x86_64-linux-gnu aarch64-linux-gnu; do
    [ -f "/usr/lib/$d/faketime/libfaketime.so.1" ] && fakelib=/usr/lib/$d/faketime/libfaketime.so.1
done
[ -n "$fakelib" ] || { echo "chaos: libfaketime.so.1 not found (apt-get install faketime)" >&2; exit 1; }
# librdkafka's timed waits under libfaketime (faketime-cnd.c next to this file)
cndfix=$work/faketime-cnd.so
${CC:-cc} -shared -fPIC -o "$cndfix" "$CHATD_TOP/tests/plugins/queue-kafka/faketime-cnd.c" -lpthread ||
    { echo "chaos: cannot build tests/plugins/queue-kafka/faketime-cnd.c" >&2; exit 1; }

db=kafka_chaos_$$
psql -X -q -h 127.0.0.1 -p "$PGTEST_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE DATABASE $db OWNER chatd" >/dev/null
conninfo="host=127.0.0.1 port=$PGTEST_PORT dbname=$db user=chatd"
printf 'topic kchat-chaos-%s 6\n' "$$" >"$KAFKA_MOCK_CTL"
for _ in $(seq 1 100); do
    grep -qx "ok topic kchat-chaos-$$" "$KAFKA_MOCK_OUT" && break
    sleep 0.1
done
grep -qx "ok topic kchat-chaos-$$" "$KAFKA_MOCK_OUT" || { echo "chaos: the mock cluster made no topic" >&2; exit 1; }

urls=() scripts=() metrics=()
for i in 1 2 3; do
    port=$(free_port)
    urls+=("http://127.0.0.1:$port")
    mport=$(free_port)
    metrics+=("http://127.0.0.1:$mport/metrics")
    scripts+=("$work/node$i.sh")
    pre=()
    if [ "${skew[i - 1]}" != 0 ]; then
        # the ASan runtime is linked into chatd: libfaketime may come first
        pre=(env "LD_PRELOAD=$cndfix:$fakelib" "FAKETIME=$(printf %+d "${skew[i - 1]}")s" FAKETIME_DONT_FAKE_MONOTONIC=1
            "ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}verify_asan_link_order=0")
    fi
    {
        printf '#!/usr/bin/env bash\n# chatd node %s of the chaos test, its clock %s s off\n' "$i" "${skew[i - 1]}"
        printf 'cd %q\n' "$CHATD_TOP"
        printf 'exec'
        printf ' %q' "${pre[@]}" "$CHATD_BIN" -c "$CHATD_TOP/etc/chatd-kafka.conf" \
            --set "chatd.node_id=$i" --set chatd.publish_rate=0 \
            --set "ws.listen=127.0.0.1:$port" --set "ws.allowed_origins=http://127.0.0.1:$port" \
            --set "ws.metrics_listen=127.0.0.1:$mport" \
            --set "ws.web_root=$CHATD_TOP/web" \
            --set "store.conninfo=$conninfo" \
            --set "queue.topic=kchat-chaos-$$" --set "queue.group=chaos-$$" \
            --set queue.fanout_lookback=0 "$@"
        printf ' >>%q 2>&1 </dev/null\n' "$CHATD_OUT/kafka-chaos-node$i.log"
    } >"$work/node$i.sh"
done

rc=0
KAFKA_CHAOS_NODES="${urls[*]}" KAFKA_CHAOS_SCRIPTS="${scripts[*]}" KAFKA_CHAOS_SKEW="${skew[*]}" \
    KAFKA_CHAOS_METRICS="${metrics[*]}" \
    KAFKA_CHAOS_PIDDIR="$work" KAFKA_PG="$conninfo" KAFKA_CHAOS_DUMP="$CHATD_OUT/kafka-chaos.json" \
    timeout --kill-after=10 400 node "$CHATD_TOP/tests/plugins/queue-kafka/chaos.mjs" || rc=1
for i in 1 2 3; do
    if sanitizer_report "$CHATD_OUT/kafka-chaos-node$i.log"; then rc=1; fi
done
exit $rc
