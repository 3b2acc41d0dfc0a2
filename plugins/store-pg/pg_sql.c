/*
 * pg_sql.c - the SQL of store-pg: the schema migrations (applied at connect
 * inside one transaction holding pg_advisory_xact_lock, so several nodes may
 * start at once) and every statement sent, with bound parameters only.
 *
 * A write batch's statements and their parameters are in pg_batch_sql.c;
 * pg_conn.c adds the sync that commits them as one implicit transaction.
 *
 * Every statement but the migrations' is prepared once per connection
 * (PQsendPrepare in the pipeline, just ahead of its first execution; a new
 * connection prepares again) and executed with PQsendQueryPrepared: the
 * server parses and plans it once, and a batch's text does not depend on
 * its size. Parameters: text, except the message text, bytea and the
 * batch's arrays (binary).
 */
#include "pg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Schema                                                                   */
/* ------------------------------------------------------------------------ */

/* Version 1. Append new versions to `migrations`; never edit a shipped one. */
static const char *const migration_v1[] = {
    "CREATE TABLE members ("
    " id bigserial PRIMARY KEY,"
    " login_id text NOT NULL UNIQUE,"
    " name text NOT NULL,"
    " pw_hash text,"
    " created_ms bigint NOT NULL)",
    "CREATE TABLE sessions ("
    " token_hash text PRIMARY KEY,"
    " member_id bigint NOT NULL,"
    " expires_ms bigint NOT NULL)",
    "CREATE INDEX sessions_member ON sessions (member_id)",
    "CREATE TABLE messages ("
    " id bigint PRIMARY KEY,"
    " room_id text NOT NULL,"
    " writer_id bigint NOT NULL,"
    " writer text NOT NULL,"
    " message text NOT NULL,"
    " created_ms bigint NOT NULL)",
    "CREATE INDEX messages_room_id ON messages (room_id, id)",
    "CREATE TABLE rooms ("
    " member_id bigint NOT NULL,"
    " room_id text NOT NULL,"
    " peer_id bigint NOT NULL,"
    " last_msg_id bigint NOT NULL DEFAULT 0,"
    " last_message text NOT NULL DEFAULT '',"
    " last_ms bigint NOT NULL DEFAULT 0,"
    " unread bigint NOT NULL DEFAULT 0,"
    " last_read_id bigint NOT NULL DEFAULT 0,"
    " PRIMARY KEY (member_id, room_id))",
    "CREATE INDEX rooms_member_last ON rooms (member_id, last_ms DESC)",
    NULL,
};

/* The end of the functions that refuse message id p_id (SQLSTATE
 * PG_SQLSTATE_ID_TAKEN) when the condition before it holds. */
#define PG_RAISE_TAKEN                                                                             \
    "   RAISE EXCEPTION 'message id % is already stored with different content', p_id"             \
    "    USING ERRCODE = '" PG_SQLSTATE_ID_TAKEN "';"                                              \
    "  END IF;"                                                                                    \
    "  RETURN true;"                                                                               \
    " END $f$"

/* Version 2: an id stored with other content is an error (SQLSTATE
 * PG_SQLSTATE_ID_TAKEN), never a silent "already stored". Called per input
 * row of the CHAT insert up to version 10 (kept for nodes that still do;
 * now the `taken` join and chatd_id_taken of version 11); a redelivery of
 * the same message passes. */
static const char *const migration_v2[] = {
    "CREATE FUNCTION chatd_check_id(p_id bigint, p_room text, p_writer_id bigint,"
    " p_writer text, p_message text, p_ms bigint) RETURNS boolean LANGUAGE plpgsql AS $f$"
    " BEGIN"
    "  PERFORM 1 FROM messages m WHERE m.id = p_id AND (m.room_id, m.writer_id, m.writer,"
    "   m.message, m.created_ms) IS DISTINCT FROM (p_room, p_writer_id, p_writer, p_message,"
    "   p_ms);"
    "  IF FOUND THEN" PG_RAISE_TAKEN,
    NULL,
};

/* Version 3: idempotency keys of SENDs, (writer, key) -> message. */
static const char *const migration_v3[] = {
    "CREATE TABLE idempotency ("
    " member_id bigint NOT NULL,"
    " idem_key text NOT NULL,"
    " msg_id bigint NOT NULL,"
    " created_ms bigint NOT NULL,"
    " PRIMARY KEY (member_id, idem_key))",
    "CREATE INDEX idempotency_time ON idempotency (created_ms)",
    NULL,
};

/* Version 4: read events themselves, for the side stream's replay. */
static const char *const migration_v4[] = {
    "CREATE TABLE reads ("
    " id bigint PRIMARY KEY,"
    " member_id bigint NOT NULL,"
    " writer text NOT NULL,"
    " room_id text NOT NULL,"
    " up_to bigint NOT NULL,"
    " created_ms bigint NOT NULL)",
    "CREATE INDEX reads_member_id ON reads (member_id, id)",
    NULL,
};

/* Version 5: records a queue gave up on (chatd_store_ops.dead_letter). */
static const char *const migration_v5[] = {
    "CREATE TABLE dead_letters ("
    " id bigserial PRIMARY KEY,"
    " source text NOT NULL,"
    " payload bytea NOT NULL,"
    " reason text NOT NULL,"
    " created_ms bigint NOT NULL)",
    NULL,
};

/* Version 6: node leases (chatd_store_ops.node_claim). */
static const char *const migration_v6[] = {
    "CREATE TABLE nodes ("
    " node_id bigint PRIMARY KEY,"
    " holder text NOT NULL,"
    " expires_ms bigint NOT NULL,"
    " high_water_ms bigint NOT NULL)",
    NULL,
};

/* ASCII letters of a column folded to lower case (only those: the
 * member_page contract), the expression its prefix indexes are built on */
#define PG_FOLD(col)                                                                               \
    "translate(" col ", 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"

/* Version 7: member_page's q= (a prefix of login_id or name, ASCII letters
 * without case) is searched in these instead of every member. */
static const char *const migration_v7[] = {
    "CREATE INDEX members_login_fold ON members (" PG_FOLD("login_id") " text_pattern_ops)",
    "CREATE INDEX members_name_fold ON members (" PG_FOLD("name") " text_pattern_ops)",
    NULL,
};

/* Version 8: positions, one delivery order per room (chatd_api.msg_pos);
 * rows stored before keep their order: their position is their id. */
static const char *const migration_v8[] = {
    "ALTER TABLE messages ADD COLUMN pos bigint NOT NULL DEFAULT 0",
    "UPDATE messages SET pos = id",
    "CREATE INDEX messages_room_pos ON messages (room_id, pos)",
    "ALTER TABLE reads ADD COLUMN pos bigint NOT NULL DEFAULT 0",
    "UPDATE reads SET pos = id",
    ("ALTER TABLE rooms ADD COLUMN last_pos bigint NOT NULL DEFAULT 0,"
     " ADD COLUMN last_read_pos bigint NOT NULL DEFAULT 0"),
    "UPDATE rooms SET last_pos = last_msg_id, last_read_pos = last_read_id",
    NULL,
};

/* Version 9: the side stream's replay by position ranges (side_replay)
 * finds a member's read events by position. */
static const char *const migration_v9[] = {
    "CREATE INDEX reads_member_pos ON reads (member_id, pos)",
    NULL,
};

/* Version 10: every read of a room's messages goes by position
 * (messages_room_pos): the (room, id) index only cost each insert. */
static const char *const migration_v10[] = {
    "DROP INDEX messages_room_id",
    NULL,
};

/* Version 11: a batch checks its ids against the stored messages with one
 * join and raises at most once (instead of chatd_check_id per row). */
static const char *const migration_v11[] = {
    "CREATE FUNCTION chatd_id_taken(p_id bigint) RETURNS boolean LANGUAGE plpgsql AS $f$"
    " BEGIN"
    "  IF p_id IS NOT NULL THEN" PG_RAISE_TAKEN,
    NULL,
};

static const struct {
    int version;
    const char *const *stmts;
} migrations[] = {
    {1, migration_v1}, {2, migration_v2},   {3, migration_v3},   {4, migration_v4},
    {5, migration_v5}, {6, migration_v6},   {7, migration_v7},   {8, migration_v8},
    {9, migration_v9}, {10, migration_v10}, {11, migration_v11},
};
/* versions are 1..N in order, and the code knows N */
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == PG_SCHEMA_VERSION,
               "PG_SCHEMA_VERSION (pg.h) is not the last migration");

#define MEMBER_COLS "id, login_id, name, pw_hash, created_ms"

/* ------------------------------------------------------------------------ */
/* Prepared statements                                                      */
/* ------------------------------------------------------------------------ */

/* A statement as sent once (the migrations: DDL, BEGIN, COMMIT). */
static int send_raw(pg_store *st, const char *sql, int n, const char *const *values)
{
    st->sending->nsent++;
    return PQsendQueryParams(st->conn, sql, n, NULL, values, NULL, NULL, 0);
}

/* The slot of sql among the connection's statements; -1 when full. */
static int stmt_slot(pg_store *st, const char *sql)
{
    for (size_t k = 0; k < st->nstmts; k++)
        if (st->stmts[k].sql == sql) return (int)k;
    for (size_t k = 0; k < st->nstmts; k++)
        if (strcmp(st->stmts[k].sql, sql) == 0) return (int)k;
    if (st->nstmts == PG_STMTS_MAX) return -1;
    st->stmts[st->nstmts].sql = sql;
    st->stmts[st->nstmts].ready = 0;
    return (int)st->nstmts++;
}

void stmts_forget(pg_store *st, pg_req *r)
{
    for (int k = 0; k < r->nprep; k++)
        if ((r->prep_failed & (1u << k)) && r->prep_slot[k] < (int)st->nstmts)
            st->stmts[r->prep_slot[k]].ready = 0;
}

/* Execute sql (static text) as a prepared statement of this connection:
 * prepared first, in the pipeline, when this connection has not yet. */
int send_q(pg_store *st, const char *sql, int n, const char *const *values, const int *lengths,
           const int *formats)
{
    pg_req *r = st->sending;
    int slot = stmt_slot(st, sql);

    if (slot < 0 || (!st->stmts[slot].ready && r->nprep == PG_REQ_PREPS_MAX)) {
        LOG(st, CHATD_LOG_DEBUG, "statement not prepared (%zu prepared already)", st->nstmts);
        r->nsent++;
        return PQsendQueryParams(st->conn, sql, n, NULL, values, lengths, formats, 0);
    }
    pg_stmt *ps = &st->stmts[slot];
    if (!ps->ready) {
        snprintf(ps->name, sizeof(ps->name), "chatd_%u", st->stmt_seq++);
        if (!PQsendPrepare(st->conn, ps->name, sql, 0, NULL)) return 0;
        ps->ready = 1;
        r->prep_at[r->nprep] = r->nsent++;
        r->prep_slot[r->nprep++] = slot;
    }
    r->nsent++;
    return PQsendQueryPrepared(st->conn, ps->name, n, values, lengths, formats, 0);
}

static int send_migrate_apply(pg_store *st)
{
    char ver[16];
    const char *vals[1] = {ver};
    for (size_t m = 0; m < sizeof(migrations) / sizeof(migrations[0]); m++) {
        if (migrations[m].version <= st->schema_version) continue;
        for (const char *const *s = migrations[m].stmts; *s; s++)
            if (!send_raw(st, *s, 0, NULL)) return 0;
        snprintf(ver, sizeof(ver), "%d", migrations[m].version);
        if (!send_raw(st, "INSERT INTO chatd_schema (version, applied_at) VALUES ($1, now())", 1,
                      vals))
            return 0;
    }
    return send_raw(st, "COMMIT", 0, NULL);
}

/* Put the queries of r on the connection, then a sync. 0 on failure. */
int req_send(pg_store *st, pg_req *r)
{
    char n0[24], n1[24], n2[24];
    const char *v[5];
    int ok = 0;

    st->sending = r;
    switch (r->kind) {
    case REQ_IDEM_PURGE: /* a bounded batch of the keys older than the window */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = n1;
        ok = send_q(st,
                    "DELETE FROM idempotency WHERE (member_id, idem_key) IN (SELECT member_id,"
                    " idem_key FROM idempotency WHERE created_ms < $1::bigint LIMIT $2::bigint)",
                    2, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_MIGRATE_CHECK: {
        const char *key[1] = {PG_ADVISORY_KEY};
        ok = send_raw(st, "BEGIN", 0, NULL) &&
             send_raw(st, "SELECT pg_advisory_xact_lock($1::bigint)", 1, key) &&
             send_raw(st,
                      "CREATE TABLE IF NOT EXISTS chatd_schema (version integer PRIMARY KEY,"
                      " applied_at timestamptz NOT NULL DEFAULT now())",
                      0, NULL) &&
             send_raw(st,
                      "SELECT coalesce(max(version), 0), " PG_DURABILITY_COLS " FROM chatd_schema",
                      0, NULL);
        r->main_q = 3;
        break;
    }
    case REQ_MIGRATE_APPLY:
        ok = send_migrate_apply(st);
        break;
    case REQ_BATCH:
        ok = send_batch(st, r->nbatch);
        break;
    case REQ_MEMBER_CREATE:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        v[0] = r->s[0];
        v[1] = r->s[1];
        v[2] = r->s[2];
        v[3] = n0;
        ok = send_q(st,
                    "INSERT INTO members (login_id, name, pw_hash, created_ms)"
                    " VALUES ($1, $2, $3, $4::bigint) ON CONFLICT (login_id) DO NOTHING"
                    " RETURNING " MEMBER_COLS,
                    4, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_MEMBER_GET:
        if (r->s[0]) {
            v[0] = r->s[0];
            ok = send_q(st, "SELECT " MEMBER_COLS " FROM members WHERE login_id = $1", 1, v, NULL,
                        NULL);
        } else {
            snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
            v[0] = n0;
            ok = send_q(st, "SELECT " MEMBER_COLS " FROM members WHERE id = $1::bigint", 1, v, NULL,
                        NULL);
        }
        r->main_q = 0;
        break;
    case REQ_MEMBER_LIST:
        ok = send_q(st, "SELECT " MEMBER_COLS " FROM members ORDER BY id LIMIT " PG_MEMBERS_MAX, 0,
                    NULL, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_MEMBER_PAGE: /* s[0]: NULL, or the LIKE pattern of the folded prefix */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = n1;
        v[2] = r->s[0];
        if (r->s[0])
            ok = send_q(st,
                        "SELECT " MEMBER_COLS " FROM members WHERE id > $1::bigint"
                        " AND (" PG_FOLD("login_id") " LIKE $3 OR " PG_FOLD(
                            "name") " LIKE $3)"
                                    " ORDER BY id LIMIT $2::bigint",
                        3, v, NULL, NULL);
        else
            ok = send_q(st,
                        "SELECT " MEMBER_COLS " FROM members WHERE id > $1::bigint"
                        " ORDER BY id LIMIT $2::bigint",
                        2, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_SESSION_PUT:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = r->s[0];
        v[1] = n0;
        v[2] = n1;
        ok = send_q(st,
                    "INSERT INTO sessions (token_hash, member_id, expires_ms)"
                    " VALUES ($1, $2::bigint, $3::bigint) ON CONFLICT (token_hash) DO UPDATE"
                    " SET member_id = EXCLUDED.member_id, expires_ms = EXCLUDED.expires_ms",
                    3, v, NULL, NULL);
        break;
    case REQ_SESSION_GET:
        v[0] = r->s[0];
        ok = send_q(st,
                    "SELECT token_hash, member_id, expires_ms FROM sessions"
                    " WHERE token_hash = $1",
                    1, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_SESSION_DEL:
        v[0] = r->s[0];
        ok = send_q(st, "DELETE FROM sessions WHERE token_hash = $1", 1, v, NULL, NULL);
        break;
    case REQ_SESSION_PURGE:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        v[0] = n0;
        ok = send_q(st, "DELETE FROM sessions WHERE expires_ms <= $1::bigint", 1, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_ROOM_LIST:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        v[0] = n0;
        ok = send_q(st,
                    "SELECT r.room_id, r.member_id, r.peer_id, coalesce(m.login_id, ''),"
                    " coalesce(m.name, ''), r.last_msg_id, r.last_message, r.last_ms, r.unread,"
                    " r.last_read_id FROM rooms r LEFT JOIN members m ON m.id = r.peer_id"
                    " WHERE r.member_id = $1::bigint"
                    " ORDER BY r.last_ms DESC, r.last_pos DESC, r.room_id LIMIT " PG_ROOMS_MAX,
                    1, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_DEAD_LETTER: {
        int lens[4] = {0, (int)r->i[0], 0, 0}, fmts[4] = {0, 1, 0, 0};
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[1]);
        v[0] = r->s[0];
        v[1] = r->s[2];
        v[2] = r->s[1];
        v[3] = n0;
        ok = send_q(st,
                    "INSERT INTO dead_letters (source, payload, reason, created_ms)"
                    " VALUES ($1, $2::bytea, $3, $4::bigint)",
                    4, v, lens, fmts);
        break;
    }
    case REQ_NODE_CLAIM:
        /* one statement: claim the id (or the lowest free one for -1) when
         * free, expired or ours; else the live holder (none: every id held) */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n2, sizeof(n2), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = r->s[0];
        v[2] = n2;
        v[3] = r->s[1];
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[2]);
        v[4] = n1;
        ok = send_q(
            st,
            "WITH c AS (SELECT CASE WHEN $1::bigint >= 0 THEN $1::bigint ELSE"
            "  (SELECT g FROM generate_series(1, 1023) g LEFT JOIN nodes n ON n.node_id = g"
            "   WHERE n.node_id IS NULL OR n.expires_ms <= $3::bigint OR n.holder = $2"
            "   ORDER BY g LIMIT 1) END AS id),"
            " up AS (INSERT INTO nodes (node_id, holder, expires_ms, high_water_ms)"
            "  SELECT id, $2, $3::bigint + $5::bigint, $4::bigint FROM c WHERE id IS NOT NULL"
            "  ON CONFLICT (node_id) DO UPDATE SET holder = excluded.holder,"
            "  expires_ms = excluded.expires_ms,"
            "  high_water_ms = GREATEST(nodes.high_water_ms, excluded.high_water_ms)"
            "  WHERE nodes.holder = excluded.holder OR nodes.expires_ms <= $3::bigint"
            "  RETURNING node_id, high_water_ms)"
            " SELECT node_id, high_water_ms, NULL::text FROM up"
            " UNION ALL SELECT n.node_id, 0, n.holder FROM nodes n, c"
            " WHERE n.node_id = c.id AND NOT EXISTS (SELECT 1 FROM up)",
            5, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_HISTORY:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n2, sizeof(n2), "%" PRId64, r->i[1] + 1); /* one more: are there older? */
        v[0] = r->s[0];
        v[1] = n0;
        v[2] = n2;
        ok = send_q(st,
                    "SELECT id, room_id, writer_id, writer, message, created_ms, pos"
                    " FROM messages WHERE room_id = $1 AND pos < coalesce((SELECT b.pos"
                    "  FROM messages b WHERE b.id = $2::bigint AND b.room_id = $1), $2::bigint)"
                    " ORDER BY pos DESC LIMIT $3::bigint",
                    3, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_REPLAY: /* columns: id, kind (1 chat, 2 read), room, writer id, writer, text,
                      * time, up_to, position; a room by position, a side stream by id */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        snprintf(n2, sizeof(n2), "%" PRId64, r->i[2]);
        if (r->s[0]) {
            v[0] = r->s[0];
            v[1] = n1;
            v[2] = n2;
            ok = send_q(st,
                        "SELECT id, 1, room_id, writer_id, writer, message, created_ms, 0, pos"
                        " FROM messages WHERE room_id = $1 AND pos > $2::bigint"
                        " ORDER BY pos LIMIT $3::bigint",
                        3, v, NULL, NULL);
        } else {
            v[0] = n0;
            v[1] = n1;
            v[2] = n2;
            ok = send_q(st,
                        "SELECT * FROM ("
                        " SELECT m.id, 1 AS kind, m.room_id, m.writer_id, m.writer, m.message,"
                        "  m.created_ms, 0::bigint AS up_to, m.pos"
                        " FROM rooms r JOIN messages m ON m.room_id = r.room_id"
                        " WHERE r.member_id = $1::bigint AND m.id > $2::bigint"
                        " UNION ALL"
                        " SELECT id, 2, room_id, member_id, writer, '', created_ms, up_to, pos"
                        " FROM reads"
                        " WHERE member_id = $1::bigint AND id > $2::bigint) s"
                        " ORDER BY 1 LIMIT $3::bigint",
                        3, v, NULL, NULL);
        }
        r->main_q = 0;
        break;
    case REQ_SIDE_REPLAY: /* s[0], s[1]: the ranges' bounds as bigint[] text */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = r->s[0];
        v[2] = r->s[1];
        v[3] = n1;
        ok = send_q(st, pg_sql_side_replay, 4, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_STREAM_HEADS:
        ok = send_q(st, pg_sql_stream_heads, 0, NULL, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_IDEM_RECENT:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = n1;
        ok = send_q(st, pg_sql_idem_recent, 2, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_IDEM_GET:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = r->s[0];
        v[2] = n1;
        ok = send_q(st,
                    "SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.message, m.created_ms, 0,"
                    " m.pos FROM idempotency i JOIN messages m ON m.id = i.msg_id"
                    " WHERE i.member_id = $1::bigint AND i.idem_key = $2"
                    " AND i.created_ms >= $3::bigint",
                    3, v, NULL, NULL);
        r->main_q = 0;
        break;
    }
    return ok && PQpipelineSync(st->conn);
}
