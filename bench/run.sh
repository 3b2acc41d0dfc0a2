#!/usr/bin/env bash
# bench/run.sh - the benchmark of issue 15, end to end, in one run: installs
# what it needs (Debian 12), builds chatd and the load generator, measures the
# one-write-per-delivery floor (bench/floor), starts every server on 127.0.0.1
# with its own data dir, runs each scenario on each server in turn, profiles
# chatd with perf, stops everything it started and writes the figures section
# of docs/benchmarks.md (plots under docs/img/). Timings are printed, never
# asserted.
#
#   bench/run.sh                 full run (about 6-10 minutes on 2 cores)
#   bench/run.sh --quick         small sizes, checks the machinery (~2 minutes)
#   options: --targets "chatd chatd-nosync chatd-pg chatd-kafka-pg rabbitmq"
#            --no-doc            leave docs/benchmarks.md alone (report in the results dir)
#            --no-profile        skip the perf profiles of chatd
#            --no-install        never call apt-get
#            --out DIR           results directory (default bench/out/DATE)
#            --scenarios "4 1 2 5 3"  which scenarios (5 needs 2 in the same run)
# Servers: chatd = embedded (queue-local + store-sqlite); chatd-nosync = the
# same with store.synchronous=normal (no fsync; scenario 1 only: what the
# disk's sync adds to the 1:1 latency); chatd-pg = queue-local
# + store-pg (PostgreSQL, fsync and synchronous_commit on); chatd-kafka-pg =
# queue-kafka on librdkafka's mock cluster + store-pg; rabbitmq = Debian
# rabbitmq-server with rabbitmq_web_stomp, on loopback, started and stopped here.
# Environment: CHATD_BUILD (build dir; default build-bench, configured and
# built when missing), BENCH_DURATION (seconds per measured run),
# BENCH_KAFKA_SETS (more chatd --set KEY=VALUE words for chatd-kafka-pg, e.g.
# "queue.linger=5", to compare settings on the Kafka path), BENCH_CHATD_SETS (the
# same for the embedded chatd, e.g. "store.synchronous=normal"), BENCH_KAFKA_FLATOUT=1
# (chatd-kafka-pg in the flat-out scenario too: what a setting costs at full
# load), BENCH_LOADGEN (another load generator binary, to compare generators).
set -euo pipefail
TOP=$(cd "$(dirname "$0")/.." && pwd)
cd "$TOP"

QUICK=0 DOC=1 PROFILE=1 INSTALL=1 OUT="" TARGETS="chatd chatd-nosync chatd-pg chatd-kafka-pg rabbitmq"
SCENARIOS="4 1 2 5 3"
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) QUICK=1 ;;
    --no-doc) DOC=0 ;;
    --no-profile) PROFILE=0 ;;
    --no-install) INSTALL=0 ;;
    --targets) TARGETS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

BUILD=${CHATD_BUILD:-$TOP/build-bench}
OUT=${OUT:-$TOP/bench/out/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT/logs"
CSV=$OUT/results.csv
LG=${BENCH_LOADGEN:-$BUILD/bench/loadgen}
T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

log() { printf '[bench %4ds] %s\n' $(($(date +%s) - T0)) "$*" | tee -a "$OUT/run.log" >&2; }

# ------------------------------------------------------------- packages
# what the bench needs on a fresh Debian 12: chatd's build dependencies, the
# load generator's, the servers it compares, the plotter and the profiler
PKGS=(build-essential autoconf automake libtool pkg-config libevent-dev librdkafka-dev libpq-dev
    libsqlite3-dev libjson-c-dev libinih-dev libsodium-dev libssl-dev postgresql rabbitmq-server
    python3 python3-matplotlib linux-perf procps curl)
install_pkgs() {
    local missing=() p made_policy=0
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$INSTALL" = 0 ] || [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "missing packages: ${missing[*]} (run as root on Debian, or install them); going on without"
        return 0
    fi
    log "installing: ${missing[*]}"
    # the packages' own services (rabbitmq-server, postgresql) must not start:
    # the bench starts its own instances on free loopback ports
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    apt-get update -qq >"$OUT/logs/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >>"$OUT/logs/apt.log" 2>&1 || log "apt-get install failed (see $OUT/logs/apt.log); going on"
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    return 0
}
install_pkgs
# the plots need matplotlib: Debian's python3 has it (python3-matplotlib)
PY=python3
python3 -c 'import matplotlib' 2>/dev/null || { [ -x /usr/bin/python3 ] && PY=/usr/bin/python3; }

# the servers inherit this cap (10,000 connections plus margin)
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
log "open-file limit $(ulimit -n); results in $OUT"

if [ "$QUICK" = 1 ]; then
    D=${BENCH_DURATION:-3}
    CHAT_CONNS=200 CHAT_ROOMS=100 FAN_SUBS=200 IDLE_CONNS=1000 IDLE_ROOMS=100 FLOOR_ROUNDS=50 SYNC_ROUNDS=300
else
    D=${BENCH_DURATION:-10}
    CHAT_CONNS=2000 CHAT_ROOMS=1000 FAN_SUBS=1000 IDLE_CONNS=10000 IDLE_ROOMS=1000 FLOOR_ROUNDS=300 SYNC_ROUNDS=20000
fi
FLAT_CONNS=100 FLAT_ROOMS=50 FLAT_WINDOW=16 SIZE=64

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

proc_cpu() { # PID... -> utime+stime in clock ticks, summed
    local p s=0 v
    for p in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || v=0
        s=$((s + ${v:-0}))
    done
    echo "$s"
}

# proc_tree PID: PID and all its descendants (RabbitMQ: beam.smp, erl_child_setup, inet_gethost)
proc_tree() {
    ps -e -o pid=,ppid= | awk -v root="$1" '{ par[$1] = $2 }
        END { t[root] = 1; do { grew = 0; for (p in par) if (!(p in t) && (par[p] in t)) { t[p] = 1; grew = 1 } } while (grew)
              s = root; for (p in t) if (p != root) s = s " " p; print s }'
}

# cool_down PID...: wait (at most COOL_MAX seconds, default 20) until the
# server uses < 5% of a core
cool_down() {
    local a b i hz
    hz=$(getconf CLK_TCK)
    for ((i = 0; i < ${COOL_MAX:-20} * 2; i++)); do
        a=$(proc_cpu "$@"); sleep 0.5; b=$(proc_cpu "$@")
        [ $(((b - a) * 100 * 2)) -lt $((5 * hz)) ] && return 0
    done
    log "server $* still busy after ${COOL_MAX:-20} s; going on"
}

# ------------------------------------------------------------------ cleanup
PIDS=() CHATD_PIDS=() RMQ_PID="" PG_DIRS=() DATA_DIRS=()
cleanup() {
    set +e
    local p i d
    # chatd first (a graceful stop flushes its queue), then its helpers
    for p in "${CHATD_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${CHATD_PIDS[@]}"; do
        for ((i = 0; i < 150; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
    done
    if [ -n "$RMQ_PID" ]; then
        kill -TERM "$RMQ_PID" 2>/dev/null
        for ((i = 0; i < 30; i++)); do kill -0 "$RMQ_PID" 2>/dev/null || break; sleep 1; done
        kill -KILL "$RMQ_PID" 2>/dev/null
    fi
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
    sleep 1
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    for d in "${PG_DIRS[@]}"; do "$TOP/tests/plugins/store-pg/pg-stop.sh" "$d" >/dev/null 2>&1; done
    # the servers' data (hundreds of MB); logs and results stay
    for d in "${DATA_DIRS[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# -------------------------------------------------------------------- build
log "building the load generator and the floor program"
make -s -C "$TOP/bench" OUT="$BUILD/bench" >"$OUT/logs/build-loadgen.log" 2>&1 ||
    { cat "$OUT/logs/build-loadgen.log" >&2; log "cannot build bench/loadgen (needs libevent, openssl, json-c dev packages)"; exit 1; }

CHATD_OK=0
if [[ " $TARGETS " == *" chatd"* ]]; then
    log "building chatd in $BUILD (frame pointers kept for the profile)"
    [ -x "$TOP/configure" ] || autoreconf -fi >/dev/null 2>&1
    mkdir -p "$BUILD"
    if { [ -f "$BUILD/Makefile" ] || (cd "$BUILD" && "$TOP/configure" -q CFLAGS="-O2 -g -fno-omit-frame-pointer" >"$OUT/logs/configure.log" 2>&1); } &&
        make -s -C "$BUILD" -j"$(nproc)" >"$OUT/logs/build-chatd.log" 2>&1 &&
        [ -x "$BUILD/core/chatd" ]; then
        CHATD_OK=1
    else
        log "chatd does not build (see $OUT/logs/build-chatd.log); measuring the others only"
    fi
fi

# the machine's floor: CPU per write() of a 200-byte message to FAN_SUBS
# loopback sockets (the reader in another process), in the same run
log "measuring the one-write-per-delivery floor ($FAN_SUBS sockets, $FLOOR_ROUNDS rounds)"
FLOOR=$("$BUILD/bench/floor" -n "$FAN_SUBS" -r "$FLOOR_ROUNDS" -s 200 | tee "$OUT/floor.txt" |
    sed -n 's/.*cpu_us_per_write=\([0-9.]*\).*/\1/p') || FLOOR=""
log "floor: ${FLOOR:-?} us of CPU per write"
# the disk's floor for a durable delivery: one fdatasync() of a 4 KB append
# at a time, on the file system the servers write to, before they start;
# 20,000 of them (a few seconds: this VM's disk stalls now and then)
log "measuring the one-fdatasync-per-commit floor ($SYNC_ROUNDS syncs in $OUT)"
SYNCFLOOR=$("$BUILD/bench/syncfloor" -f "$OUT/syncfloor.tmp" -n "$SYNC_ROUNDS" -s 4096 | tee "$OUT/syncfloor.txt") ||
    SYNCFLOOR=""
log "sync floor: ${SYNCFLOOR:-?}"

# ------------------------------------------------------------------ servers
declare -A PORT PID LABEL METRICS SEED SEEDK
chatd_common_sets() { # PORT METRICS-PORT
    echo --set "ws.listen=127.0.0.1:$1" --set "ws.metrics_listen=127.0.0.1:$2" \
        --set chatd.publish_rate=0 --set chatd.log_level=warn --set chatd.register_limit=0 \
        --set chatd.login_fail_limit=0 --set ws.max_connections=19000 \
        --set ws.max_connections_per_member=0 --set "ws.web_root=$TOP/web"
}

# start_chatd TARGET CONF LABEL [--set ...]: start one chatd and wait for its port
start_chatd() {
    local t=$1 conf=$2 label=$3 dir=$OUT/$1 port mport
    shift 3
    mkdir -p "$dir"
    port=$(free_port) mport=$(free_port)
    # shellcheck disable=SC2046
    "$BUILD/core/chatd" -c "$conf" $(chatd_common_sets "$port" "$mport") "$@" >"$dir/chatd.log" 2>&1 &
    PID[$t]=$! PORT[$t]=$port METRICS[$t]=$mport LABEL[$t]=$label
    CHATD_PIDS+=("${PID[$t]}")
    wait_port "$port" 30 || { log "$t did not open $port: $(tail -5 "$dir/chatd.log")"; return 1; }
}

start_pg() { # a throw-away PostgreSQL (fsync on, synchronous_commit on)
    [ -x "$TOP/tests/plugins/store-pg/pg-start.sh" ] || { log "tests/plugins/store-pg/pg-start.sh missing"; return 1; }
    eval "$("$TOP/tests/plugins/store-pg/pg-start.sh" 2>>"$OUT/logs/pg-start.log")" ||
        { log "cannot start PostgreSQL (see $OUT/logs/pg-start.log)"; return 1; }
    PG_DIRS+=("$PGTEST_DIR")
    PG_PSQL="$PGTEST_BIN/psql -h 127.0.0.1 -p $PGTEST_PORT -U chatd -d chatd"
    [ "$(id -u)" -eq 0 ] && PG_PSQL="runuser -u postgres -- $PG_PSQL"
    SYNC_COMMIT=$(runuser -u postgres -- "$PGTEST_BIN/psql" -X -At -h 127.0.0.1 -p "$PGTEST_PORT" -U postgres \
        -d postgres -c "SELECT current_setting('fsync') || ' / ' || current_setting('synchronous_commit')" 2>/dev/null || echo "?")
}

start_chatd_sqlite() { # TARGET LABEL [--set ...]
    local t=$1 label=$2 w sets=()
    shift 2
    for w in ${BENCH_CHATD_SETS:-}; do sets+=(--set "$w"); done
    DATA_DIRS+=("$OUT/$t/data")
    mkdir -p "$OUT/$t/data"
    SEED[$t]=$OUT/$t/data/chatd.db SEEDK[$t]=--sqlite
    start_chatd "$t" "$TOP/etc/chatd.conf" "$label" --set "store.path=$OUT/$t/data/chatd.db" "$@" "${sets[@]}"
}

# chatd-pg shares chatd-kafka-pg's PostgreSQL database when that runs (its
# members and sessions too, so they are registered once), as node 2
start_chatd_pg() {
    if [ -z "${PG_SHARED:-}" ]; then
        start_pg || return 1
        PG_SHARED=$PGTEST_CONNINFO
    fi
    SEED[chatd-pg]=$PG_PSQL SEEDK[chatd-pg]=--psql
    start_chatd chatd-pg "$TOP/etc/chatd-postgres.conf" \
        "chatd (queue-local + store-pg, PostgreSQL 15 with fsync / synchronous_commit = $SYNC_COMMIT)" \
        --set "store.conninfo=$PG_SHARED" --set chatd.node_id=2
}

start_chatd_kafka_pg() {
    local dir=$OUT/chatd-kafka-pg boot w sets=()
    for w in ${BENCH_KAFKA_SETS:-}; do sets+=(--set "$w"); done
    mkdir -p "$dir"
    [ -f "$TOP/tests/plugins/queue-kafka/mock-cluster.c" ] ||
        { log "tests/plugins/queue-kafka/mock-cluster.c missing; skipping chatd-kafka-pg"; return 1; }
    make -s -C "$BUILD/tests" plugins/queue-kafka/mock-cluster >"$dir/build.log" 2>&1 ||
        { log "cannot build the mock Kafka cluster (see $dir/build.log)"; return 1; }
    start_pg || return 1
    PG_SHARED=$PGTEST_CONNINFO
    SEED[chatd-kafka-pg]=$PG_PSQL SEEDK[chatd-kafka-pg]=--psql
    rm -f "$dir/mock.ctl" && mkfifo "$dir/mock.ctl"
    "$BUILD/tests/plugins/queue-kafka/mock-cluster" -b 3 -t kafka-chat -p 6 -c "$dir/mock.ctl" \
        >"$dir/mock.out" 2>"$dir/mock.log" &
    PIDS+=($!) MOCK_PID=$!
    for _ in $(seq 50); do grep -q '^bootstrap ' "$dir/mock.out" && break; sleep 0.2; done
    boot=$(awk '/^bootstrap /{print $2; exit}' "$dir/mock.out")
    [ -n "$boot" ] || { log "mock Kafka cluster did not start (see $dir/mock.log)"; return 1; }
    # the mock cluster holds an idle fetch for fetch_wait even when data
    # arrives (a real broker answers at once): 3 ms makes it behave like one
    start_chatd chatd-kafka-pg "$TOP/etc/chatd-kafka.conf" \
        "chatd (queue-kafka on the librdkafka mock cluster, 3 brokers + store-pg, fsync / synchronous_commit = $SYNC_COMMIT)" \
        --set "queue.kafka.bootstrap.servers=$boot" --set "store.conninfo=$PGTEST_CONNINFO" \
        --set queue.min_insync_replicas=1 --set queue.fetch_wait=3 "${sets[@]}"
}

start_rabbitmq() {
    local dir=$OUT/rabbitmq amqp dist stomp i EPMD_PORT
    [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] ||
        { log "rabbitmq-server not installed (Debian package rabbitmq-server)"; return 1; }
    mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
    DATA_DIRS+=("$dir/mnesia")
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
    local env=(HOME="$dir/home" RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log"
        RABBITMQ_NODENAME="bench$$@localhost" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
        RABBITMQ_NODE_PORT="$amqp" RABBITMQ_DIST_PORT="$dist" ERL_EPMD_PORT="$EPMD_PORT"
        ERL_EPMD_ADDRESS=127.0.0.1 RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/pid"
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")
    (cd "$dir" && env "${env[@]}" setsid /usr/lib/rabbitmq/bin/rabbitmq-server >"$dir/out.log" 2>&1 &)
    wait_port "$stomp" 120 || { log "RabbitMQ did not open Web-STOMP $stomp (see $dir/out.log)"; return 1; }
    for i in $(seq 50); do [ -s "$dir/pid" ] && break; sleep 0.2; done
    RMQ_PID=$(cat "$dir/pid")
    PID[rabbitmq]=$RMQ_PID PORT[rabbitmq]=$stomp
    LABEL[rabbitmq]="RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) Web-STOMP (beam.smp and its children)"
}

ACTIVE=()
ORDERED=""
for t in chatd chatd-nosync chatd-kafka-pg chatd-pg rabbitmq; do [[ " $TARGETS " == *" $t "* ]] && ORDERED+=" $t"; done
for t in $TARGETS; do [[ " $ORDERED " == *" $t "* ]] || ORDERED+=" $t"; done
for t in $ORDERED; do
    case $t in
    chatd) [ "$CHATD_OK" = 1 ] && start_chatd_sqlite chatd "chatd (embedded: queue-local + store-sqlite)" &&
        ACTIVE+=(chatd) ;;
    chatd-nosync) [ "$CHATD_OK" = 1 ] && start_chatd_sqlite chatd-nosync \
        "chatd (embedded, store.synchronous = normal: committed to SQLite's WAL, no fsync)" \
        --set store.synchronous=normal && ACTIVE+=(chatd-nosync) ;;
    chatd-pg) [ "$CHATD_OK" = 1 ] && start_chatd_pg && ACTIVE+=(chatd-pg) ;;
    chatd-kafka-pg) [ "$CHATD_OK" = 1 ] && start_chatd_kafka_pg && ACTIVE+=(chatd-kafka-pg) ;;
    rabbitmq) start_rabbitmq && ACTIVE+=(rabbitmq) ;;
    *) log "unknown target $t" ;;
    esac || log "target $t unavailable; going on without it"
done
[ ${#ACTIVE[@]} -gt 0 ] || { log "no server could be started"; exit 1; }
log "servers: ${ACTIVE[*]}"
for t in "${ACTIVE[@]}"; do echo "$t|${LABEL[$t]}|${PID[$t]}|${PORT[$t]}"; done >"$OUT/targets.txt"
active() { [[ " ${ACTIVE[*]} " == *" $1 "* ]]; }

# ---------------------------------------------------------------- scenarios
# lg TARGET SCENARIO ARGS...: one loadgen run, a CSV row, the output in logs/
lg() {
    local t=$1 s=$2 pids; shift 2
    active "$t" || return 0
    if [ "$t" = rabbitmq ]; then pids=$(proc_tree "${PID[$t]}"); else pids=${PID[$t]}; fi
    local args=(--port "${PORT[$t]}" --label "$t" --scenario "$s" --csv "$CSV"
        --server-pid "${pids// /,}" --size "$SIZE")
    if [ "$t" = rabbitmq ]; then
        args+=(--target rabbit)
    else
        args+=(--target chatd --token-cache "$OUT/$t.tokens" --http-conc 8)
    fi
    # shellcheck disable=SC2086
    cool_down $pids
    scrape "$t" "$OUT/logs/$s-$t.metrics0"
    log "$s on $t (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if ! "$LG" "${args[@]}" "$@" >"$OUT/logs/$s-$t.txt" 2>"$OUT/logs/$s-$t.err"; then
        log "$s on $t: loadgen failed: $(tail -3 "$OUT/logs/$s-$t.err" | tr '\n' ' ')"
    fi
    sed 's/^/    /' "$OUT/logs/$s-$t.txt" >&2
    scrape "$t" "$OUT/logs/$s-$t.metrics"
}

# scrape TARGET FILE: chatd's /metrics (its loop lag histogram, before and after a run)
scrape() {
    [ -n "${METRICS[$1]:-}" ] || return 0
    curl -s -m 5 "http://127.0.0.1:${METRICS[$1]}/metrics" >"$2" 2>/dev/null || rm -f "$2"
}

col_of() { # TARGET SCENARIO COLUMN: a value of the last CSV row of that run
    awk -F, -v t="$1" -v s="$2" -v c="$3" 'NR == 1 { for (i = 1; i <= NF; i++) k[$i] = i; next }
        $1 == t && $3 == s { v = $k[c] } END { print v + 0 }' "$CSV"
}

# Members for chatd: lga0/lgb0 are registered and logged in through the REST
# API; the others are written straight into the store with lga0's password
# hash and a session each (bench/seed.py): argon2id through the API would take
# 4,000 hashes of 64 MiB for 2,000 members. Every run reuses these tokens.
members() { # TARGET ROOMS
    active "$1" || return 0
    log "members on $1: 2 through the REST API, $((2 * $2 - 2)) seeded into its store (one-off, not measured)"
    "$LG" --target chatd --port "${PORT[$1]}" --token-cache "$OUT/$1.tokens" --http-conc 2 \
        --pubsub 1 --rooms 1 --pubs 0 --duration 1 --settle 0 --drain 0 \
        --setup-timeout 300 -q >"$OUT/logs/0-members-$1.txt" 2>&1 ||
        { log "member registration on $1 failed: $(tail -3 "$OUT/logs/0-members-$1.txt" | tr '\n' ' ')"; return 0; }
    "$PY" "$TOP/bench/seed.py" "${SEEDK[$1]}" "${SEED[$1]}" --prefix lg --rooms "$2" --cache "$OUT/$1.tokens" \
        >>"$OUT/logs/0-members-$1.txt" 2>&1 ||
        log "seeding members on $1 failed: $(tail -3 "$OUT/logs/0-members-$1.txt" | tr '\n' ' ')"
}
members chatd "$CHAT_ROOMS"
members chatd-nosync "$CHAT_ROOMS"
members chatd-kafka-pg "$CHAT_ROOMS"
# same database: chatd-pg's members are chatd-kafka-pg's
active chatd-kafka-pg && active chatd-pg && cp "$OUT/chatd-kafka-pg.tokens" "$OUT/chatd-pg.tokens"
members chatd-pg "$FLAT_ROOMS"

scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }
# (4) idle subscribed connections: RSS delta per connection (first: fresh heap)
scenario 4 && for t in chatd rabbitmq; do
    lg "$t" 4-idle --subs "$IDLE_CONNS" --pubs 0 --rooms "$IDLE_ROOMS" --duration 3 --settle 2 \
        --connect-conc 500 --drain 0 --setup-timeout 300
done
# RabbitMQ takes a while to tear down 10,000 connections and their queues
# shellcheck disable=SC2046
active rabbitmq && COOL_MAX=240 cool_down $(proc_tree "${PID[rabbitmq]}")
# stop_kafka: stop chatd-kafka-pg and the mock cluster once their last
# scenario is done. Idle, they are not idle: the mock holds each empty fetch
# for fetch_wait (3 ms) and the consumers ask again at once, about 20% of a
# core between them, taken from every other server's run
stop_kafka() {
    active chatd-kafka-pg || return 0
    local p=${PID[chatd-kafka-pg]} i t keep=()
    log "stopping chatd-kafka-pg and the mock cluster (their scenarios are done)"
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    if [ -n "${MOCK_PID:-}" ]; then kill -TERM "$MOCK_PID" 2>/dev/null || true; fi
    for t in "${ACTIVE[@]}"; do [ "$t" = chatd-kafka-pg ] || keep+=("$t"); done
    ACTIVE=("${keep[@]}")
}
# (1) 1:1 rooms, 2 members each, 1 msg/s per member (the Kafka path first,
# then it stops unless the flat-out scenario needs it)
scenario 1 && for t in chatd-kafka-pg chatd chatd-nosync rabbitmq; do
    lg "$t" 1-chat1to1 --pubsub "$CHAT_CONNS" --rooms "$CHAT_ROOMS" --rate 1 --window 0 \
        --duration $((2 * D)) --hist "$OUT/hist-1-$t.dat" --timeline "$OUT/timeline-1-$t.dat"
    if [ "$t" = chatd-kafka-pg ] && [ "${BENCH_KAFKA_FLATOUT:-0}" != 1 ]; then stop_kafka; fi
done
# (2) fan-out at in-flight 1: one publisher, FAN_SUBS subscribers of one room,
# the next SEND once every subscriber has the last message
scenario 2 && for t in chatd rabbitmq; do
    lg "$t" 2-fanout --subs "$FAN_SUBS" --pubs 1 --rooms 1 --rate 0 --inflight 1 --window 16 \
        --duration "$D" --hist "$OUT/hist-2-$t.dat"
done
# (5) fan-out paced at half of that server's own in-flight-1 peak
scenario 5 && for t in chatd rabbitmq; do
    active "$t" || continue
    peak=$(col_of "$t" 2-fanout pub_per_s)
    if [ "${peak%.*}" -le 1 ] 2>/dev/null; then
        log "no fan-out peak for $t; skipping the half-peak run"
        continue
    fi
    rate=$(awk -v p="$peak" 'BEGIN { printf "%.3f", p / 2 }')
    lg "$t" 5-fanout-half --subs "$FAN_SUBS" --pubs 1 --rooms 1 --rate "$rate" --window 0 \
        --duration $((2 * D)) --hist "$OUT/hist-5-$t.dat" --timeline "$OUT/timeline-5-$t.dat"
done
# (3) persisted messages/s flat out: a RECEIPT after the commit (RabbitMQ:
# durable subscriptions, persistent messages, confirmed after its fsync)
FLAT_TARGETS="chatd chatd-pg rabbitmq"
[ "${BENCH_KAFKA_FLATOUT:-0}" = 1 ] && FLAT_TARGETS="chatd chatd-pg chatd-kafka-pg rabbitmq"
scenario 3 && for t in $FLAT_TARGETS; do
    extra=()
    [ "$t" = rabbitmq ] && extra=(--persistent)
    lg "$t" 3-flatout --pubsub "$FLAT_CONNS" --rooms "$FLAT_ROOMS" --rate 0 --window "$FLAT_WINDOW" \
        --duration "$D" "${extra[@]}"
done

# ------------------------------------------------------------------ profile
# extra_start NAME LOADGEN-ARGS...: an extra run on the embedded chatd (not in
# the figures), its output in logs/NAME.*; returns once its publishing phase
# has begun (connections up, then 2 s), its loadgen's pid in EXTRA_PID
extra_start() {
    local name=$1 i; shift
    cool_down "${PID[chatd]}"
    "$LG" --target chatd --port "${PORT[chatd]}" --token-cache "$OUT/chatd.tokens" --size "$SIZE" \
        --server-pid "${PID[chatd]}" --duration "$D" --settle 2 "$@" \
        >"$OUT/logs/$name.txt" 2>"$OUT/logs/$name.err" &
    EXTRA_PID=$!
    for ((i = 0; i < 600; i++)); do
        grep -q 'connections ready' "$OUT/logs/$name.err" 2>/dev/null && break
        kill -0 "$EXTRA_PID" 2>/dev/null || break
        sleep 0.1
    done
    sleep 2
}

# perf record -g of the embedded chatd during extra runs (not in the figures)
# of fan-out at in-flight 1, of 1:1 chat and of the persisted flat-out run
profile_run() { # SCENARIO LOADGEN-ARGS...
    local s=$1; shift
    log "profiling chatd with perf record -g during $s (extra run, not in the figures)"
    extra_start "profile-$s" "$@"
    perf record -F 999 -g -p "${PID[chatd]}" -o "$OUT/perf-$s.data" -- sleep $((D - 1)) \
        >"$OUT/logs/perf-record-$s.log" 2>&1 || log "perf record failed (see $OUT/logs/perf-record-$s.log)"
    wait "$EXTRA_PID" || true
    perf report -i "$OUT/perf-$s.data" --stdio --no-children --sort dso,symbol --percent-limit 0.8 \
        -g none 2>/dev/null | grep -v -e '^$' -e '^# *$' -e Tip >"$OUT/perf-$s-flat.txt" || true
    perf report -i "$OUT/perf-$s.data" --stdio --children --sort symbol --percent-limit 1.5 \
        -g none 2>/dev/null | grep -v -e '^$' -e '^# *$' -e Tip >"$OUT/perf-$s-children.txt" || true
    perf report -i "$OUT/perf-$s.data" --stdio --no-children --sort pid,dso --percent-limit 0.5 \
        -g none 2>/dev/null | grep -v -e '^$' -e '^# *$' -e Tip >"$OUT/perf-$s-dso.txt" || true
    rm -f "$OUT/perf-$s.data.old"
}
# sync_trace_run: an extra 1:1 run with every fdatasync() of chatd timed by
# perf trace: what the disk's syncs cost on that path
sync_trace_run() {
    log "timing chatd's fdatasync calls with perf trace during 1-chat1to1 (extra run, not in the figures)"
    extra_start synctrace-1-chat1to1 --pubsub "$CHAT_CONNS" --rooms "$CHAT_ROOMS" --rate 1 --window 0
    timeout $((D - 1)) perf trace -e fdatasync -p "${PID[chatd]}" -o "$OUT/synctrace-1-chat1to1.txt" \
        >"$OUT/logs/perf-trace.log" 2>&1 || true
    wait "$EXTRA_PID" || true
}
if [ "$PROFILE" = 1 ] && active chatd; then
    if command -v perf >/dev/null && perf record -o /dev/null -- true >/dev/null 2>&1; then
        scenario 2 && profile_run 2-fanout --subs "$FAN_SUBS" --pubs 1 --rooms 1 --rate 0 --inflight 1 --window 16
        scenario 1 && profile_run 1-chat1to1 --pubsub "$CHAT_CONNS" --rooms "$CHAT_ROOMS" --rate 1 --window 0
        scenario 3 && profile_run 3-flatout --pubsub "$FLAT_CONNS" --rooms "$FLAT_ROOMS" --rate 0 --window "$FLAT_WINDOW"
        scenario 1 && sync_trace_run
    else
        log "perf is not usable here (perf_event_paranoid or a container); no profile"
    fi
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
    echo "postgresql|$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null) (fsync / synchronous_commit = ${SYNC_COMMIT:-?})"
    echo "libevent|$(pkg-config --modversion libevent 2>/dev/null)"
    echo "floor|${FLOOR:-}"
    echo "syncfloor|${SYNCFLOOR:-}"
    echo "quick|$QUICK"
    echo "duration|$D"
    echo "elapsed|$(($(date +%s) - T0))"
    echo "load|$LOAD0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (1, 5, 15 min)"
    echo "date|$(date -u +%Y-%m-%dT%H:%MZ)"
} >"$OUT/machine.txt"
log "whole run took $(($(date +%s) - T0)) s"
if [ "$DOC" = 1 ]; then
    "$PY" "$TOP/bench/report.py" "$OUT" "$TOP/docs/benchmarks.md" "$TOP/docs/img"
else
    "$PY" "$TOP/bench/report.py" "$OUT" "$OUT/benchmarks.md" "$OUT/img"
fi
