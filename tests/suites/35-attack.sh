#!/usr/bin/env bash
# tests/suites/35-attack.sh - hostile clients against a running chatd
# (tests/attack/*.test.mjs): each attack asserts with numbers that the
# daemon's descriptors and RSS (from /proc) stay under stated bounds, that
# the attacker is cut off within its deadline, and that a member chatting
# meanwhile gets every message. chatd runs the embedded default config with
# a plain listener and a TLS listener (a throw-away certificate made here
# by openssl), and with the limits of transport-ws set low enough that each
# deadline is reached in seconds; the tests read those values from env.
# tls.test.mjs drives the page over https in chromium (CHATD_CHROMIUM), which
# trusts the test certificate's key through its SPKI hash (CHATD_TLS_SPKI).
# Then, on a chatd of its own, what idle connections cost and the pre-auth
# frame limit (tests/attack/idle-memory.mjs).
set -euo pipefail
: "${CHATD_TOP:=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
export CHATD_TOP
# shellcheck source=../lib.sh
source "$CHATD_TOP/tests/lib.sh"

say() { printf '[35-attack] %s\n' "$*"; }
fail() {
    printf '[35-attack] FAIL: %s\n' "$*" >&2
    tail -n 40 "$CHATD_OUT/attack.log" >&2 || true
    exit 1
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/chatd-attack.XXXXXX")
cleanup() {
    cleanup_chatd
    rm -rf "$tmp"
}
trap cleanup EXIT

# the plain build, not the sanitized one: the RSS bounds are of chatd itself
command -v openssl >/dev/null || fail "openssl is not installed"
command -v python3 >/dev/null || fail "python3 is not installed (paused.test.mjs locks SQLite with it)"
[ -x "$CHATD_BIN" ] || fail "no chatd binary at $CHATD_BIN (build first)"
node_modules_ready || fail "the npm packages of tests/ are missing"
chromium=${CHATD_CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || fail "no chromium at $chromium (apt-get install chromium)"

# a test CA and a server certificate for 127.0.0.1
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=chatd test CA" \
    -keyout "$tmp/ca.key" -out "$tmp/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$tmp/ext.cnf"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
    -CAcreateserial -days 2 -extfile "$tmp/ext.cnf" -out "$tmp/server.pem" 2>/dev/null
# the base64 SHA-256 of its public key, for chromium's --ignore-certificate-errors-spki-list
spki=$(openssl x509 -in "$tmp/server.pem" -pubkey -noout | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64)
[ -n "$spki" ] || fail "cannot compute the SPKI hash of the test certificate"

# a web root with the page and one larger file for the pipelining attack
mkdir -p "$tmp/web"
cp "$CHATD_TOP"/web/*.html "$CHATD_TOP"/web/*.js "$CHATD_TOP"/web/*.css "$tmp/web/"
head -c 262144 /dev/zero | tr '\0' 'x' >"$tmp/web/big.txt"
printf 'secret\n' >"$tmp/web/.env"

port=$(free_port)
tport=$(free_port)
pport=$(free_port) # a plain listener as behind a TLS proxy for https://chat.example.org
url=http://127.0.0.1:$port

# the limits under test (the tests read them back from env)
export CHATD_ATTACK_SEND_TIMEOUT=5 CHATD_ATTACK_REQUEST_TIMEOUT=3 CHATD_ATTACK_TLS_TIMEOUT=3
export CHATD_ATTACK_CONNECT_TIMEOUT=3 CHATD_ATTACK_HB_MAX=2000 CHATD_ATTACK_PIPELINE=8
export CHATD_ATTACK_MAX_TX_BYTES=1048576 CHATD_ATTACK_MAX_TX_AGE=3 CHATD_ATTACK_PER_MEMBER=5
export CHATD_ATTACK_PER_IP=30 CHATD_ATTACK_PUBLISH_RATE=50

cat >"$tmp/chatd.conf" <<CONF
[chatd]
node_id = 1
log_level = info
publish_rate = $CHATD_ATTACK_PUBLISH_RATE

[ws]
plugin = transport-ws
listen = 127.0.0.1:$port
web_root = $tmp/web
allowed_origins = $url
send_timeout = $CHATD_ATTACK_SEND_TIMEOUT
request_timeout = $CHATD_ATTACK_REQUEST_TIMEOUT
connect_timeout = $CHATD_ATTACK_CONNECT_TIMEOUT
heartbeat_send = 1000
heartbeat_recv = 1000
heartbeat_max = $CHATD_ATTACK_HB_MAX
max_pipeline = $CHATD_ATTACK_PIPELINE
max_tx_bytes = $CHATD_ATTACK_MAX_TX_BYTES
max_tx_age = $CHATD_ATTACK_MAX_TX_AGE
max_connections_per_member = $CHATD_ATTACK_PER_MEMBER

[wss]
plugin = transport-ws
listen = 127.0.0.1:$tport
web_root = $tmp/web
tls_cert = $tmp/server.pem
tls_key = $tmp/server.key
tls_handshake_timeout = $CHATD_ATTACK_TLS_TIMEOUT
max_connections_per_ip = $CHATD_ATTACK_PER_IP

[proxied]
plugin = transport-ws
listen = 127.0.0.1:$pport
web_root = $tmp/web
metrics_listen =
allowed_origins = https://chat.example.org
cookie_secure = true

[queue]
plugin = queue-local

[store]
plugin = store-sqlite
path = $tmp/chatd.db
# paused.test.mjs holds the write lock from another process: the writer waits
busy_timeout_ms = 60000
CONF

cd "$CHATD_TOP"
start_chatd attack "$tmp/chatd.conf"
pid=$CHATD_PID
wait_healthz "$url" "$pid" 30 || fail "chatd is not ready"
say "chatd (pid $pid) on $url and https://127.0.0.1:$tport"

rc=0
CHATD_URL=$url CHATD_PID=$pid CHATD_TLS_PORT=$tport CHATD_TLS_CA=$tmp/ca.pem \
    CHATD_TLS_SPKI=$spki CHATD_CHROMIUM=$chromium CHATD_PROXIED_PORT=$pport CHATD_ATTACK_DB=$tmp/chatd.db \
    timeout --kill-after=10 600 node --test --test-concurrency=1 --test-reporter=spec \
    "$CHATD_TOP"/tests/attack/*.test.mjs || rc=$?
kill -0 "$pid" 2>/dev/null || fail "chatd died during the attacks (see $CHATD_OUT/attack.log)"
stop_rc=0
stop_chatd "$pid" || stop_rc=$?
[ $stop_rc -eq 0 ] || fail "chatd exited with $stop_rc on SIGTERM (want 0)"
[ $rc -eq 0 ] || fail "attack tests failed"

# Idle memory and the pre-auth frame limit, on a chatd of their own: one
# member holds every session (no per-member limit), 2,000 connections each
# side need descriptors beyond the usual 1,024.
export CHATD_IDLE_N=2000 CHATD_IDLE_PREAUTH=8192
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 8192 ]; then ulimit -n 8192; else ulimit -n "$hard"; fi
[ "$(ulimit -n)" -ge $((2 * CHATD_IDLE_N + 500)) ] ||
    fail "the open-file limit $(ulimit -n) is below $((2 * CHATD_IDLE_N + 500)) (raise ulimit -Hn)"
iport=$(free_port)
cat >"$tmp/idle.conf" <<CONF
[chatd]
node_id = 1
log_level = warn

[ws]
plugin = transport-ws
listen = 127.0.0.1:$iport
metrics_listen =
web_root = $tmp/web
max_connections_per_member = 0
max_frame_preauth = $CHATD_IDLE_PREAUTH

[queue]
plugin = queue-local

[store]
plugin = store-sqlite
path = $tmp/idle.db
CONF
start_chatd attack-idle "$tmp/idle.conf"
ipid=$CHATD_PID
wait_healthz "http://127.0.0.1:$iport" "$ipid" 30 || fail "the idle-memory chatd is not ready"
rc=0
CHATD_URL=http://127.0.0.1:$iport CHATD_PID=$ipid timeout --kill-after=10 420 \
    node --test --test-reporter=spec "$CHATD_TOP/tests/attack/idle-memory.mjs" || rc=$?
kill -0 "$ipid" 2>/dev/null || fail "chatd died during the idle-memory test (see $CHATD_OUT/attack-idle.log)"
stop_rc=0
stop_chatd "$ipid" || stop_rc=$?
[ $stop_rc -eq 0 ] || fail "the idle-memory chatd exited with $stop_rc on SIGTERM (want 0)"
[ $rc -eq 0 ] || fail "idle-memory test failed"
say "all attacks bounded"
