#!/usr/bin/env bash
# bench/run.sh - runs the benchmark end to end: builds chatd and the load
# generator, starts chatd (embedded default: in-process queue + SQLite; and,
# when the test helpers are there, queue-kafka on librdkafka's in-memory mock
# cluster + store-pg on a throw-away PostgreSQL) and RabbitMQ Web-STOMP, all on
# 127.0.0.1 with their own data dirs, runs the five scenarios alternating the
# servers, and rewrites the figures section of docs/benchmarks.md (with plots
# under docs/img/).
#
#   bench/run.sh                 full run (about 10-15 minutes on 2 cores)
#   bench/run.sh --quick         small sizes, to check the machinery (~3 min)
#   options: --targets "chatd chatd-kafka-pg rabbitmq"   which servers
#            --no-doc            leave docs/benchmarks.md alone
#            --no-profile        skip the perf profile of chatd
#            --out DIR           results directory (default bench/out/DATE)
# Environment: CHATD_BUILD (build dir with core/chatd; default build-bench,
# configured and built when missing), BENCH_DURATION (seconds per run).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"

QUICK=0 DOC=1 PROFILE=1 OUT="" TARGETS="chatd chatd-kafka-pg rabbitmq"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-doc) DOC=0 ;;
    --no-profile) PROFILE=0 ;;
    --targets) TARGETS=$2; shift ;;
    --out) OUT=$2; shift ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

BUILD=${CHATD_BUILD:-$TOP/build-bench}
OUT=${OUT:-$TOP/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"
CSV=$OUT/results.csv
LG=$BUILD/bench/loadgen
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[bench %4ds] %s\n' $(($(date +%s) - T0)) "$*" | tee -a "$OUT/run.log" >&2; }

# the servers inherit this: 10,000 connections plus margin (the cap is 20000)
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
log "open-file limit $(ulimit -n); results in $OUT"

if [ "$QUICK" = 1 ]; then
    D=${BENCH_DURATION:-4}
    S1_CONNS=200 S1_ROOMS=100 S2_SUBS=200 S4_CONNS=1000 S4_ROOMS=100 ROOMS_MAX=100
else
    D=${BENCH_DURATION:-10}
    S1_CONNS=2000 S1_ROOMS=1000 S2_SUBS=1000 S4_CONNS=10000 S4_ROOMS=1000 ROOMS_MAX=1000
fi
S3_CONNS=100 S3_ROOMS=50 S3_WINDOW=16 S2_PUBS=4 S2_WINDOW=16 SIZE=64

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() { # PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

proc_cpu() { # PID -> utime+stime in clock ticks
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# cool_down PID: wait (at most 20 s) until the server uses < 5% of a core
cool_down() {
    local pid=$1 a b i hz
    hz=$(getconf CLK_TCK)
    for ((i = 0; i < 40; i++)); do
        a=$(proc_cpu "$pid"); sleep 0.5; b=$(proc_cpu "$pid")
        [ $(((b - a) * 100 * 2)) -lt $((5 * hz)) ] && return 0
    done
    log "server $pid still busy after 20 s; going on"
}

# ------------------------------------------------------------------ cleanup
PIDS=() CHATD_PIDS=() RMQ_ENV=() RMQ_PID="" PG_DIR=""
cleanup() {
    set +e
    local p i
    # chatd first (a graceful stop flushes its queue), then its helpers
    for p in "${CHATD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${CHATD_PIDS[@]}"; do
        for ((i = 0; i < 100; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [ -n "$RMQ_PID" ]; then
        kill -TERM "$RMQ_PID" 2>/dev/null
        for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do kill -0 "$RMQ_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$RMQ_PID" 2>/dev/null
    fi
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ -n "$PG_DIR" ] && "$TOP/tests/plugins/store-pg/pg-stop.sh" "$PG_DIR" >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -------------------------------------------------------------------- build
log "building the load generator"
make -s -C "$TOP/bench" OUT="$BUILD/bench" >"$OUT/logs/build-loadgen.log" 2>&1 ||
    { cat "$OUT/logs/build-loadgen.log" >&2; log "cannot build bench/loadgen (needs libevent, openssl, json-c dev packages)"; exit 1; }

# the machine's floor: CPU per write() of a 200-byte message to S2_SUBS
# loopback sockets (the reader in another process), in the same run
log "measuring the one-write-per-delivery floor ($S2_SUBS sockets)"
FLOOR=$("$BUILD/bench/floor" -n "$S2_SUBS" -r 200 -s 200 | tee "$OUT/floor.txt" |
    sed -n 's/.*cpu_us_per_write=\([0-9.]*\).*/\1/p')
log "floor: ${FLOOR:-?} us of CPU per write"

CHATD_OK=0
if [[ " $TARGETS " == *" chatd"* ]]; then
    log "building chatd in $BUILD"
    [ -x "$TOP/configure" ] || autoreconf -fi >/dev/null 2>&1
    if { [ -f "$BUILD/Makefile" ] || (cd "$BUILD" && "$TOP/configure" -q); } &&
        make -s -C "$BUILD" -j"$(nproc)" >"$OUT/logs/build-chatd.log" 2>&1 &&
        [ -x "$BUILD/core/chatd" ]; then
        CHATD_OK=1
    else
        log "chatd does not build (see $OUT/logs/build-chatd.log); measuring RabbitMQ only"
    fi
fi

# ------------------------------------------------------------------ servers
declare -A PORT PID LABEL
chatd_common_sets() { # PORT DIR
    echo --set "ws.listen=127.0.0.1:$1" --set chatd.publish_rate=1000000 \
        --set chatd.log_level=warn --set ws.max_connections=19000 --set "ws.web_root=$TOP/web"
}

start_chatd_embedded() {
    local dir=$OUT/chatd port
    mkdir -p "$dir"
    port=$(free_port)
    # shellcheck disable=SC2046
    "$BUILD/core/chatd" -c "$TOP/etc/chatd.conf" $(chatd_common_sets "$port" "$dir") \
        --set "store.path=$dir/chatd.db" >"$dir/chatd.log" 2>&1 &
    PID[chatd]=$! PORT[chatd]=$port
    CHATD_PIDS+=("${PID[chatd]}")
    LABEL[chatd]="chatd (embedded: queue-local + store-sqlite)"
    wait_port "$port" 20 || { log "chatd did not open $port: $(tail -5 "$dir/chatd.log")"; return 1; }
}

start_chatd_kafka_pg() {
    local dir=$OUT/chatd-kafka-pg port boot
    mkdir -p "$dir"
    [ -x "$TOP/tests/plugins/store-pg/pg-start.sh" ] && [ -f "$TOP/tests/plugins/queue-kafka/mock-cluster.c" ] ||
        { log "tests/plugins/store-pg or tests/plugins/queue-kafka helpers missing; skipping chatd-kafka-pg"; return 1; }
    make -s -C "$BUILD/tests" plugins/queue-kafka/mock-cluster >"$dir/build.log" 2>&1 ||
        { log "cannot build the mock Kafka cluster (see $dir/build.log)"; return 1; }
    eval "$("$TOP/tests/plugins/store-pg/pg-start.sh" 2>"$dir/pg-start.log")" ||
        { log "cannot start PostgreSQL (see $dir/pg-start.log)"; return 1; }
    PG_DIR=$PGTEST_DIR
    mkfifo "$dir/mock.ctl"
    "$BUILD/tests/plugins/queue-kafka/mock-cluster" -b 3 -t kafka-chat -p 6 -c "$dir/mock.ctl" >"$dir/mock.out" 2>"$dir/mock.log" &
    PIDS+=($!)
    for _ in $(seq 50); do grep -q '^bootstrap ' "$dir/mock.out" && break; sleep 0.2; done
    boot=$(awk '/^bootstrap /{print $2; exit}' "$dir/mock.out")
    [ -n "$boot" ] || { log "mock Kafka cluster did not start (see $dir/mock.log)"; return 1; }
    port=$(free_port)
    local conf=$TOP/etc/chatd-kafka.conf
    if [ ! -f "$conf" ]; then # older trees: a minimal Kafka + PostgreSQL config
        conf=$dir/chatd.conf
        printf '%s\n' '[chatd]' 'node_id = 1' '[ws]' 'plugin = transport-ws' '[queue]' \
            'plugin = queue-kafka' '[store]' 'plugin = store-pg' >"$conf"
    fi
    # shellcheck disable=SC2046
    "$BUILD/core/chatd" -c "$conf" $(chatd_common_sets "$port" "$dir") \
        --set "queue.kafka.bootstrap.servers=$boot" --set "store.conninfo=$PGTEST_CONNINFO" \
        >"$dir/chatd.log" 2>&1 &
    PID[chatd-kafka-pg]=$! PORT[chatd-kafka-pg]=$port
    CHATD_PIDS+=("${PID[chatd-kafka-pg]}")
    LABEL[chatd-kafka-pg]="chatd (queue-kafka on the librdkafka mock cluster + store-pg, fsync=off)"
    wait_port "$port" 30 || { log "chatd-kafka-pg did not open $port: $(tail -5 "$dir/chatd.log")"; return 1; }
}

start_rabbitmq() {
    local dir=$OUT/rabbitmq amqp dist stomp i EPMD_PORT
    command -v rabbitmq-server >/dev/null && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] ||
        { log "rabbitmq-server not installed (Debian package rabbitmq-server)"; return 1; }
    mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
    amqp=$(free_port) dist=$(free_port) stomp=$(free_port) EPMD_PORT=$(free_port)
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$amqp
web_stomp.tcp.ip = 127.0.0.1
web_stomp.tcp.port = $stomp
loopback_users = none
EOF
    echo '[rabbitmq_web_stomp].' >"$dir/enabled_plugins"
    # our own epmd on a free port, so that it can be stopped with the rest
    epmd -address 127.0.0.1 -port "$EPMD_PORT" >"$dir/epmd.log" 2>&1 &
    PIDS+=($!)
    wait_port "$EPMD_PORT" 10 || { log "epmd did not start on $EPMD_PORT"; return 1; }
    RMQ_ENV=(HOME="$dir/home" RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log"
        RABBITMQ_NODENAME="bench$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$amqp" RABBITMQ_DIST_PORT="$dist" ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
    (cd "$dir" && env "${RMQ_ENV[@]}" setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/out.log" 2>&1 &)
    wait_port "$stomp" 90 || { log "RabbitMQ did not open Web-STOMP $stomp (see $dir/out.log)"; return 1; }
    for i in $(seq 50); do [ -s "$dir/pid" ] && break; sleep 0.2; done
    RMQ_PID=$(cat "$dir/pid")
    PID[rabbitmq]=$RMQ_PID PORT[rabbitmq]=$stomp
    LABEL[rabbitmq]="RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) Web-STOMP"
}

ACTIVE=()
for t in $TARGETS; do
    case $t in
    chatd) [ "$CHATD_OK" = 1 ] && start_chatd_embedded && ACTIVE+=(chatd) ;;
    chatd-kafka-pg) [ "$CHATD_OK" = 1 ] && start_chatd_kafka_pg && ACTIVE+=(chatd-kafka-pg) ;;
    rabbitmq) start_rabbitmq && ACTIVE+=(rabbitmq) ;;
    *) log "unknown target $t" ;;
    esac || log "target $t unavailable; going on without it"
done
[ ${#ACTIVE[@]} -gt 0 ] || { log "no server could be started"; exit 1; }
log "servers: ${ACTIVE[*]}"
for t in "${ACTIVE[@]}"; do echo "$t|${LABEL[$t]}|${PID[$t]}|${PORT[$t]}"; done >"$OUT/targets.txt"

# ---------------------------------------------------------------- scenarios
# lg TARGET SCENARIO ARGS...: one loadgen run, a CSV row, the output in logs/
lg() {
    local t=$1 s=$2; shift 2
    local args=(--port "${PORT[$t]}" --label "$t" --scenario "$s" --csv "$CSV"
        --server-pid "${PID[$t]}" --size "$SIZE")
    if [ "$t" = rabbitmq ]; then
        args+=(--target rabbit)
    else
        args+=(--target chatd --token-cache "$OUT/$t.tokens" --http-conc 8)
    fi
    cool_down "${PID[$t]}"
    log "$s on $t (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! "$LG" "${args[@]}" "$@" >"$OUT/logs/$s-$t.txt" 2>"$OUT/logs/$s-$t.err"; then
        log "$s on $t: loadgen failed: $(tail -3 "$OUT/logs/$s-$t.err" | tr '\n' ' ')"
    fi
    sed 's/^/    /' "$OUT/logs/$s-$t.txt" >&2
}

peak_of() { # TARGET: publish rate of the flat-out run
    awk -F, -v t="$1" '$1 == t && $3 == "3-flatout" { v = $22 } END { print v + 0 }' "$CSV"
}

# Members for chatd are registered and logged in by the first run (argon2id
# hashing makes that take a while); every later run reuses their tokens.
for t in "${ACTIVE[@]}"; do
    [ "$t" = rabbitmq ] && continue
    log "registering $((2 * ROOMS_MAX)) members on $t (one-off, not measured)"
    "$LG" --target chatd --port "${PORT[$t]}" --token-cache "$OUT/$t.tokens" --http-conc 8 \
        --pubsub "$ROOMS_MAX" --rooms "$ROOMS_MAX" --pubs 0 --duration 1 --settle 0 --drain 0 \
        --setup-timeout 600 -q >"$OUT/logs/0-members-$t.txt" 2>&1 ||
        log "member set-up on $t failed: $(tail -3 "$OUT/logs/0-members-$t.txt" | tr '\n' ' ')"
done

for t in "${ACTIVE[@]}"; do # (4) idle connections: server memory per connection (first: fresh heap)
    lg "$t" 4-idle --subs "$S4_CONNS" --pubs 0 --rooms "$S4_ROOMS" --duration 3 --settle 2 \
        --connect-conc 500 --drain 0
done
for t in "${ACTIVE[@]}"; do # (1) 1:1 chat, many rooms, 1 msg/s each
    lg "$t" 1-chat1to1 --pubsub "$S1_CONNS" --rooms "$S1_ROOMS" --rate 1 --window 0 \
        --duration $((2 * D)) --hist "$OUT/hist-1-$t.dat"
done
for t in "${ACTIVE[@]}"; do # (2) fan-out: one destination, many subscribers
    lg "$t" 2-fanout --subs "$S2_SUBS" --pubs "$S2_PUBS" --rooms 1 --rate 0 \
        --window "$S2_WINDOW" --duration "$D"
done
for t in "${ACTIVE[@]}"; do # (3) flat-out publish with persistence
    extra=()
    [ "$t" = rabbitmq ] && extra=(--persistent)
    lg "$t" 3-flatout --pubsub "$S3_CONNS" --rooms "$S3_ROOMS" --rate 0 --window "$S3_WINDOW" \
        --duration "$D" "${extra[@]}"
done
for t in "${ACTIVE[@]}"; do # (5) latency at 50% of the flat-out peak
    peak=$(peak_of "$t")
    if [ "${peak%.*}" -le 0 ] 2>/dev/null; then
        log "no flat-out peak for $t; skipping the 50% latency run"
        continue
    fi
    rate=$(awk -v p="$peak" -v n="$S3_CONNS" 'BEGIN { printf "%.3f", p / 2 / n }')
    extra=()
    [ "$t" = rabbitmq ] && extra=(--persistent)
    lg "$t" 5-latency50 --pubsub "$S3_CONNS" --rooms "$S3_ROOMS" --rate "$rate" --window 0 \
        --duration "$((2 * D))" --hist "$OUT/hist-5-$t.dat" --timeline "$OUT/timeline-5-$t.dat" \
        "${extra[@]}"
done

# ------------------------------------------------------------------ profile
# perf of the embedded chatd during an extra run (not in the figures) of the
# two busiest scenarios: fan-out and flat-out publish with persistence
profile_run() { # SCENARIO LOADGEN-ARGS...
    local s=$1; shift
    log "profiling chatd with perf during $s (extra run, not in the figures)"
    perf record -F 499 -g -p "${PID[chatd]}" -o "$OUT/perf-$s.data" -- sleep $((D + 3)) \
        >"$OUT/logs/perf-record-$s.log" 2>&1 &
    local perf_pid=$!
    sleep 1
    "$LG" --target chatd --port "${PORT[chatd]}" --token-cache "$OUT/chatd.tokens" --size "$SIZE" \
        --server-pid "${PID[chatd]}" --duration "$D" "$@" >"$OUT/logs/profile-$s.txt" 2>&1 || true
    wait "$perf_pid" || true
    perf report -i "$OUT/perf-$s.data" --stdio --no-children --sort dso,symbol --percent-limit 1 \
        -g none 2>/dev/null | grep -v '^$' | grep -v '^# *$' | grep -v Tip >"$OUT/perf-$s-flat.txt" || true
    perf report -i "$OUT/perf-$s.data" --stdio --no-children --sort pid,dso --percent-limit 0.5 \
        -g none 2>/dev/null | grep -v '^$' | grep -v '^# *$' | grep -v Tip >"$OUT/perf-$s-dso.txt" || true
}
if [ "$PROFILE" = 1 ] && [[ " ${ACTIVE[*]} " == *" chatd "* ]] && command -v perf >/dev/null; then
    cool_down "${PID[chatd]}"
    profile_run 2-fanout --subs "$S2_SUBS" --pubs "$S2_PUBS" --rooms 1 --rate 0 --window "$S2_WINDOW"
    cool_down "${PID[chatd]}"
    profile_run 3-flatout --pubsub "$S3_CONNS" --rooms "$S3_ROOMS" --rate 0 --window "$S3_WINDOW"
fi

# ------------------------------------------------------------------- report
{
    echo "host|$(hostname)"
    echo "cpu|$(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }') ($(nproc) cores online)"
    echo "mem|$(free -g | awk '/Mem:/ { print $2 " GB" }')"
    echo "kernel|$(uname -sr)"
    echo "os|$(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "chatd|$(git -C "$TOP" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "rabbitmq|$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null), Erlang $(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null)"
    echo "libevent|$(pkg-config --modversion libevent)"
    echo "floor|${FLOOR:-}"
    echo "quick|$QUICK"
    echo "duration|$D"
    echo "elapsed|$(($(date +%s) - T0))"
    echo "load|$LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (1, 5, 15 min)"
    echo "date|$(date -u +%Y-%m-%dT%H:%MZ)"
} >"$OUT/machine.txt"
log "whole run took $(($(date +%s) - T0)) s"
if [ "$DOC" = 1 ]; then
    python3 "$TOP/bench/report.py" "$OUT" "$TOP/docs/benchmarks.md" "$TOP/docs/img" &&
        log "rewrote docs/benchmarks.md figures and docs/img/*.png"
else
    python3 "$TOP/bench/report.py" "$OUT" "$OUT/benchmarks.md" "$OUT/img" &&
        log "report in $OUT/benchmarks.md"
fi
