#!/usr/bin/env bash
# tests/plugins/store-pg/pg-stop.sh DIR - stop the PostgreSQL server started by pg-start.sh in
# DIR (its PGTEST_DIR) and remove DIR. Safe to call twice or on a stopped server.
#   pg-stop.sh DIR --keep    stop only (pg-start.sh's server can be restarted
#                            with: pg_ctl -D DIR/data -l DIR/server.log start)
set -uo pipefail
dir=${1:?usage: pg-stop.sh PGTEST_DIR [--keep]}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
case "$dir" in
    */chatd-pg.*) ;;
    *) echo "pg-stop: $dir was not made by pg-start.sh; refusing" >&2; exit 1 ;;
esac
if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -w -t 30 -m fast stop >&2 ||
        as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >&2 || true
fi
[ "${2:-}" = --keep ] || rm -rf "$dir"
