#!/usr/bin/env bash
# tests/suites/55-faults.sh - chatd on the embedded default config
# (etc/chatd.conf: queue-local + store-sqlite) under faults, with real
# @stomp/stompjs clients sending with receipts (tests/faults/):
#   1. kill9.mjs: SIGKILL at random moments under load, at least 10 times,
#      restarted each time; every receipted message stored exactly once,
#      nothing unreceipted twice, room lists agree with the messages;
#   2. sigterm.mjs: SIGTERM with publishes in flight, 4 times: exit 0, every
#      SEND answered by a RECEIPT or an ERROR before the close, what got a
#      RECEIPT stored once, what got an ERROR not stored;
#   3. fsync.mjs: chatd under strace: for every receipted SEND, the WAL write
#      holding the message, then a sync of the WAL, then the RECEIPT bytes;
#   3b. nodes.mjs: a second node with the same node_id refuses to start,
#      node_id = auto takes another id (and exits 0 on SIGTERM right after
#      start), a node restarted with its clock an hour back (faketime) still
#      makes larger ids, losing nothing; a graceful stop releases the lease
#      (auto takes the id at once), a SIGKILL does not (until node_lease ran
#      out); on SQLite here, and again on PostgreSQL (3c, nodes-pg);
#   4. kill9.mjs again on a Kafka + PostgreSQL node (etc/chatd-kafka.conf,
#      librdkafka's mock cluster of tests/plugins/queue-kafka/mock-cluster, a
#      throw-away PostgreSQL with fsync=on), killed 10 times;
#   4b. sigterm.mjs again on a Kafka + PostgreSQL node (a mock cluster of
#      its own): after each SIGTERM, on every partition the chat records below
#      the group's committed offset (read by kafka-offsets) are stored and
#      none past it is: offsets committed for exactly what was persisted;
#   4c. poison.mjs on a Kafka + PostgreSQL node: a record the store refuses
#      (its id stored with another text), produced by the test: dead-lettered
#      after max_persist_attempts (row, reason, metrics) while every other
#      room of its partition keeps flowing (RECEIPTs within 5 s, delivered
#      live and stored once);
#   5. pgkill.mjs: chatd on PostgreSQL while the server is killed under load
#      (pg_ctl -m immediate, SIGKILL of the postmaster) and started again:
#      every publish answered, what got a RECEIPT stored once;
#   6. pghang.mjs: the connection to PostgreSQL hangs silently (a proxy that
#      stops forwarding): dropped within store.query_timeout_ms (3 s here) +
#      2 s, and a new one carries on; what got a RECEIPT stored once.
# Needs CHATD_TOP, CHATD_BUILD, CHATD_OUT (see tests/lib.sh). Logs go to
# $CHATD_OUT/faults-*.log.
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"
# The ASan/UBSan chatd (and its plugins) under ./quickstart.sh test, for
# every run (about as fast as the plain build here: the runs wait on I/O and
# timers): a sanitizer report in a run's log fails that run. fsync runs
# without LeakSanitizer (it cannot work under strace), and nodes' faketime
# restart with verify_asan_link_order=0 (libfaketime is preloaded first).
use_sanitized_chatd
export CHATD_OUT CHATD_BUILD

say() { printf '[55-faults] %s\n' "$*" >&2; }
[ -x "$CHATD_BIN" ] || { say "no chatd at $CHATD_BIN: build first"; exit 1; }
command -v strace >/dev/null || { say "strace is not installed (apt-get install strace)"; exit 1; }
command -v node >/dev/null || { say "node is not installed (apt-get install nodejs npm)"; exit 1; }
(
    cd "$CHATD_TOP/tests"
    if [ ! -d node_modules/@stomp/stompjs ] || [ ! -d node_modules/ws ]; then
        PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
    fi
)

work=$(mktemp -d "${TMPDIR:-/tmp}/chatd-faults.XXXXXX")
export FAULTS_PIDFILE=$work/chatd.pid
pg_dir=""
cleanup() {
    [ -f "$FAULTS_PIDFILE" ] && kill -KILL "$(cat "$FAULTS_PIDFILE")" 2>/dev/null || true
    declare -F mock_down >/dev/null && mock_down
    [ -n "$pg_dir" ] && "$CHATD_TOP/tests/plugins/store-pg/pg-stop.sh" "$pg_dir" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$CHATD_TOP"

fails=()
# run NAME SCRIPT [chatd --set ...]: a suite against a fresh database, chatd
# on the embedded default config and a free port
run() {
    local name=$1 script=$2 conf=$CHATD_TOP/etc/chatd.conf port
    shift 2
    local store=(--set "store.path=$work/$name.db") # the default config's SQLite file
    if [ "${1:-}" = "-c" ]; then conf=$2 store=(); shift 2; fi
    port=$(free_port)
    export FAULTS_URL=http://127.0.0.1:$port FAULTS_LOG=$CHATD_OUT/faults-$name.log
    : >"$FAULTS_LOG"
    say "=== $name"
    if timeout --kill-after=10 "${FAULTS_TIMEOUT:-240}" node "$CHATD_TOP/tests/faults/$script" -- \
        "$CHATD_BIN" -c "$conf" \
        --set "ws.listen=127.0.0.1:$port" --set "ws.allowed_origins=$FAULTS_URL" \
        --set "ws.web_root=$CHATD_TOP/web" "${store[@]}" \
        --set chatd.publish_rate=0 "$@"; then
        say "--- $name: ok"
    else
        say "--- $name: FAILED (log: $FAULTS_LOG)"
        fails+=("$name")
    fi
    [ -f "$FAULTS_PIDFILE" ] && kill -KILL "$(cat "$FAULTS_PIDFILE")" 2>/dev/null || true
    rm -f "$FAULTS_PIDFILE"
    if sanitizer_report "$FAULTS_LOG"; then
        say "--- $name: FAILED: sanitizer report in $FAULTS_LOG"
        fails+=("$name (sanitizer)")
    fi
}

run kill9 kill9.mjs
run sigterm sigterm.mjs
export FAULTS_TRACE=$CHATD_OUT/faults-fsync.trace
# LeakSanitizer cannot run under ptrace (strace): this run only checks with
# ASan and UBSan
ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 run fsync fsync.mjs
command -v faketime >/dev/null || { say "faketime is not installed (apt-get install faketime)"; exit 1; }
run nodes nodes.mjs

# PostgreSQL (fsync=on) for the runs below, started once
pg_up() {
    local pg_env
    [ -f "$CHATD_BUILD/plugins/store-pg/.libs/store-pg.so" ] ||
        { say "store-pg is not built (libpq-dev)"; return 1; }
    pg_env=$("$CHATD_TOP/tests/plugins/store-pg/pg-start.sh") || return 1
    eval "$pg_env"
    export PGTEST_DIR PGTEST_START_CMD PGTEST_STOP_CMD
    pg_dir=$PGTEST_DIR
}
make_db() {
    psql -X -q -h 127.0.0.1 -p "$PGTEST_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE DATABASE $1 OWNER chatd" >/dev/null
}
conninfo() { printf 'host=127.0.0.1 port=%s dbname=%s user=chatd' "${2:-$PGTEST_PORT}" "$1"; }

# 3c. nodes.mjs on PostgreSQL: the node leases of store-pg
nodes_pg() {
    make_db faults_nodes || return 1
    run nodes-pg nodes.mjs -c "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$(conninfo faults_nodes)"
}

# mock_up TOPIC: a mock cluster of its own (3 brokers, TOPIC of 6 partitions)
# for the next run; sets boot (its bootstrap list), kafka_args (the node's
# queue settings, group faults-TOPIC-PID) and kafka_tools (the helpers' dir)
mock_pids=()
mock_up() {
    local mock=$CHATD_BUILD/tests/plugins/queue-kafka/mock-cluster tool
    kafka_tools=$CHATD_BUILD/tests/plugins/queue-kafka boot=""
    [ -f "$CHATD_BUILD/plugins/queue-kafka/.libs/queue-kafka.so" ] ||
        { say "queue-kafka is not built (librdkafka-dev)"; return 1; }
    for tool in mock-cluster kafka-offsets kafka-produce; do
        [ -x "$kafka_tools/$tool" ] || make -C "$CHATD_BUILD/tests" -s "plugins/queue-kafka/$tool" >&2 || return 1
    done
    "$mock" -b 3 -p 6 -t "$1" >"$work/mock-$1.out" 2>"$CHATD_OUT/faults-kafka-mock-$1.log" &
    mock_pids+=($!)
    for _ in $(seq 1 100); do
        boot=$(awk '/^bootstrap /{print $2; exit}' "$work/mock-$1.out" 2>/dev/null || true)
        [ -n "$boot" ] && break
        sleep 0.1
    done
    [ -n "$boot" ] || { say "mock-cluster printed no bootstrap address"; return 1; }
    kafka_args=(--set "queue.kafka.bootstrap.servers=$boot" --set "queue.topic=$1"
        --set "queue.group=faults-$1-$$"
        --set queue.kafka.consumer.session.timeout.ms=6000
        --set queue.kafka.consumer.heartbeat.interval.ms=500
        --set queue.kafka.consumer.fetch.wait.max.ms=10
        --set queue.min_insync_replicas=1)
}
mock_down() {
    local p
    for p in "${mock_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    mock_pids=()
}

# 4. a Kafka + PostgreSQL node, killed 10 times
kafka_pg() {
    mock_up kfaults || return 1
    make_db faults_kafka || return 1
    FAULTS_KILLS=10 run kill9-kafka-pg kill9.mjs -c "$CHATD_TOP/etc/chatd-kafka.conf" \
        --set "store.conninfo=$(conninfo faults_kafka)" "${kafka_args[@]}"
    mock_down
}

# 4b. sigterm.mjs on a Kafka + PostgreSQL node: after each graceful stop the
# group's committed offsets are read (kafka-offsets) and compared with the
# store: committed = persisted
sigterm_kafka() {
    mock_up kstop || return 1
    make_db faults_kstop || return 1
    FAULTS_OFFSETS="$kafka_tools/kafka-offsets $boot kstop faults-kstop-$$" \
        FAULTS_STORED="psql -X -At -h 127.0.0.1 -p $PGTEST_PORT -U chatd -d faults_kstop -c 'SELECT id FROM messages'" \
        run sigterm-kafka-pg sigterm.mjs -c "$CHATD_TOP/etc/chatd-kafka.conf" \
        --set "store.conninfo=$(conninfo faults_kstop)" "${kafka_args[@]}"
    mock_down
}

# 4c. poison.mjs: a record the store refuses (an id already stored with
# another text), produced to the topic by kafka-produce: dead-lettered after
# max_persist_attempts (3 here), the other rooms of its partition flowing
poison_kafka() {
    local mport
    mock_up kpoison || return 1
    make_db faults_kpoison || return 1
    mport=$(free_port)
    FAULTS_OFFSETS="$kafka_tools/kafka-offsets $boot kpoison faults-kpoison-$$" \
        FAULTS_PRODUCE="$kafka_tools/kafka-produce $boot kpoison" \
        FAULTS_SQL="psql -X -At -h 127.0.0.1 -p $PGTEST_PORT -U chatd -d faults_kpoison -c" \
        FAULTS_METRICS="http://127.0.0.1:$mport/metrics" FAULTS_ATTEMPTS=3 \
        run poison-kafka-pg poison.mjs -c "$CHATD_TOP/etc/chatd-kafka.conf" \
        --set "store.conninfo=$(conninfo faults_kpoison)" "${kafka_args[@]}" \
        --set queue.max_persist_attempts=3 --set "ws.metrics_listen=127.0.0.1:$mport"
    mock_down
}

# 5. PostgreSQL killed under load (pg_ctl -m immediate, SIGKILL of the postmaster).
# A restart of the server can take over 15 s on a loaded machine, and a node
# that cannot renew its lease for a whole node_lease (default 15 s) stops by
# design: a lease of 60 s here, so that the outages are what is tested.
pg_kill() {
    make_db faults_pgkill || return 1
    run pgkill pgkill.mjs -c "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$(conninfo faults_pgkill)" --set store.reconnect_max_ms=500 \
        --set chatd.node_lease=60000
}

# 6. a PostgreSQL connection that hangs silently (tests/faults/pghang.mjs's
# proxy stops forwarding): dropped within store.query_timeout_ms
pg_hang() {
    local proxy
    make_db faults_pghang || return 1
    proxy=$(free_port)
    FAULTS_PROXY_PORT=$proxy FAULTS_QUERY_TIMEOUT_MS=3000 PGTEST_PORT=$PGTEST_PORT \
        run pghang pghang.mjs -c "$CHATD_TOP/etc/chatd-postgres.conf" \
        --set "store.conninfo=$(conninfo faults_pghang "$proxy")" \
        --set store.query_timeout_ms=3000 --set store.reconnect_max_ms=500
}

if ! pg_up; then
    fails+=("postgresql")
else
    nodes_pg || fails+=("nodes-pg (set-up)")
    kafka_pg || fails+=("kill9-kafka-pg (set-up)")
    sigterm_kafka || fails+=("sigterm-kafka-pg (set-up)")
    poison_kafka || fails+=("poison-kafka-pg (set-up)")
    pg_kill || fails+=("pgkill (set-up)")
    pg_hang || fails+=("pghang (set-up)")
fi

if [ ${#fails[@]} -gt 0 ]; then
    say "failed: ${fails[*]}"
    exit 1
fi
say "all passed"
