#!/usr/bin/env bash
# tests/plugins/store-pg/pg-start.sh - start a throw-away PostgreSQL 15 server for the tests.
#
#   eval "$(tests/plugins/store-pg/pg-start.sh)"    # exports PGTEST_DIR PGTEST_PORT PGTEST_BIN
#                                     #         PGTEST_CONNINFO
#   ... tests ...
#   tests/plugins/store-pg/pg-stop.sh "$PGTEST_DIR"
#
# The cluster lives in a new temp dir owned by the postgres user (initdb and
# pg_ctl refuse to run as root, so as root they run through runuser), listens on
# 127.0.0.1 only, on a free port, with trust authentication (local tests only),
# and has a role and a database both named chatd. Only the export lines go to
# stdout; progress and errors go to stderr. PG_BIN overrides the server binaries
# directory (default: /usr/lib/postgresql/15/bin).
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
[ -x "$PG_BIN/initdb" ] || {
    echo "pg-start: $PG_BIN/initdb not found: install the Debian package postgresql (15) or set PG_BIN" >&2
    exit 1
}

# as_pg CMD...: run as the postgres user when we are root, else as ourselves
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
dir=$(mktemp -d "${TMPDIR:-/tmp}/chatd-pg.XXXXXX")
[ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
chmod 700 "$dir"

as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; echo "pg-start: initdb failed (log above)" >&2; exit 1; }

# Settings go into the cluster's own config so that a plain restart (the outage
# tests: pg_ctl stop, then pg_ctl start) keeps them. fsync stays on (the
# default, said here to be plain): store-pg refuses a server that could
# acknowledge a commit before it is durable, and the tests check durability.
cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = on
max_connections = 100
CONF
as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >&2 || { cat "$dir/server.log" >&2; echo "pg-start: pg_ctl start failed (log above)" >&2; exit 1; }

as_pg "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE chatd LOGIN" -c "CREATE DATABASE chatd OWNER chatd" >&2 ||
    { echo "pg-start: could not create role/database chatd" >&2; exit 1; }

echo "pg-start: PostgreSQL listening on 127.0.0.1:$port (data in $dir)" >&2
printf 'export PGTEST_DIR=%q PGTEST_PORT=%q PGTEST_BIN=%q\n' "$dir" "$port" "$PG_BIN"
printf 'export PGTEST_CONNINFO=%q\n' "host=127.0.0.1 port=$port dbname=chatd user=chatd"
# shell commands that stop and start this server again (outage tests)
q_pgctl=$(printf '%q ' "$PG_BIN/pg_ctl" -D "$dir/data")
[ "$(id -u)" -eq 0 ] && q_pgctl="runuser -u postgres -- $q_pgctl"
printf 'export PGTEST_STOP_CMD=%q\n' "$q_pgctl-w -t 30 -m fast stop >/dev/null"
printf 'export PGTEST_START_CMD=%q\n' "$q_pgctl-l $(printf %q "$dir/server.log") -w -t 60 start >/dev/null"
