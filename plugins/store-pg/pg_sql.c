/*
 * pg_sql.c - the SQL of store-pg: the schema migrations (applied at connect
 * inside one transaction holding pg_advisory_xact_lock, so several nodes may
 * start at once) and every statement sent, with bound parameters only.
 *
 * A write batch is one multi-row statement per run of CHAT messages
 * (INSERT ... ON CONFLICT DO NOTHING RETURNING feeding the room summary
 * upserts, so only rows really inserted touch the summaries) and one per run
 * of READ events; pg_conn.c adds the sync that commits them as one implicit
 * transaction.
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

/* Version 2: an id stored with other content is an error (SQLSTATE
 * PG_SQLSTATE_ID_TAKEN), never a silent "already stored". Called per input
 * row of the CHAT insert below; a redelivery of the same message passes. */
static const char *const migration_v2[] = {
    "CREATE FUNCTION chatd_check_id(p_id bigint, p_room text, p_writer_id bigint,"
    " p_writer text, p_message text, p_ms bigint) RETURNS boolean LANGUAGE plpgsql AS $f$"
    " BEGIN"
    "  PERFORM 1 FROM messages m WHERE m.id = p_id AND (m.room_id, m.writer_id, m.writer,"
    "   m.message, m.created_ms) IS DISTINCT FROM (p_room, p_writer_id, p_writer, p_message,"
    "   p_ms);"
    "  IF FOUND THEN"
    "   RAISE EXCEPTION 'message id % is already stored with different content', p_id"
    "    USING ERRCODE = '" PG_SQLSTATE_ID_TAKEN "';"
    "  END IF;"
    "  RETURN true;"
    " END $f$",
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

static const struct {
    int version;
    const char *const *stmts;
} migrations[] = {
    {1, migration_v1}, {2, migration_v2}, {3, migration_v3}, {4, migration_v4},
    {5, migration_v5}, {6, migration_v6}, {7, migration_v7},
};
/* versions are 1..N in order, and the code knows N */
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == PG_SCHEMA_VERSION,
               "PG_SCHEMA_VERSION (pg.h) is not the last migration");

/* Room summaries of a run of CHAT messages: `input` rows are inserted
 * idempotently; only rows really inserted (RETURNING) feed the upsert of both
 * members' summaries. Per member and room: the newest inserted message becomes
 * the last one (if newer than the stored one); when the member wrote in the
 * batch, last_read_id moves up to their newest message and unread is recounted
 * (the peer's messages after it, stored before or in this batch; the subqueries
 * on `messages` do not see this statement's own inserts, hence the two terms),
 * else unread grows by the peer's new messages after last_read_id. */
static const char sql_chat_head[] = "WITH input (id, room_id, writer_id, writer, message,"
                                    " created_ms, peer_id, idem_key) AS (VALUES ";
/* Idempotency keys (printf: the window in ms): the first message of a
 * (writer, key) owns it, an owner older than the window is replaced; a
 * message whose key another message owns is not inserted (nothing else of
 * it is written). */
static const char sql_chat_claim[] =
    "), claim AS ("
    " INSERT INTO idempotency AS d (member_id, idem_key, msg_id, created_ms)"
    " SELECT DISTINCT ON (writer_id, idem_key) writer_id, idem_key, id, created_ms FROM input"
    " WHERE idem_key IS NOT NULL ORDER BY writer_id, idem_key, id"
    " ON CONFLICT (member_id, idem_key) DO UPDATE SET msg_id = EXCLUDED.msg_id,"
    "  created_ms = EXCLUDED.created_ms WHERE d.created_ms < EXCLUDED.created_ms - %lld"
    " RETURNING msg_id)";
static const char sql_chat_tail[] =
    ", ins AS ("
    " INSERT INTO messages (id, room_id, writer_id, writer, message, created_ms)"
    " SELECT id, room_id, writer_id, writer, message, created_ms FROM input"
    " WHERE (idem_key IS NULL OR id IN (SELECT msg_id FROM claim) OR EXISTS (SELECT 1"
    "  FROM idempotency o WHERE o.member_id = input.writer_id AND o.idem_key = input.idem_key"
    "  AND o.msg_id = input.id))"
    " AND chatd_check_id(id, room_id, writer_id, writer, message, created_ms)"
    " ON CONFLICT (id) DO NOTHING"
    " RETURNING id, room_id, writer_id, message, created_ms"
    "), pairs AS ("
    " SELECT i.id, i.room_id, i.writer_id, p.member_id, p.peer_id FROM ins i"
    " JOIN (SELECT DISTINCT ON (id) id, peer_id FROM input) n ON n.id = i.id"
    " CROSS JOIN LATERAL (VALUES (i.writer_id, n.peer_id), (n.peer_id, i.writer_id))"
    "  AS p (member_id, peer_id)"
    "), agg AS ("
    " SELECT member_id, room_id, min(peer_id) AS peer_id, max(id) AS last_id,"
    "  coalesce(max(id) FILTER (WHERE writer_id = member_id), 0) AS mine"
    " FROM pairs GROUP BY member_id, room_id"
    ") INSERT INTO rooms AS r"
    " (member_id, room_id, peer_id, last_msg_id, last_message, last_ms, unread, last_read_id)"
    " SELECT a.member_id, a.room_id, a.peer_id, a.last_id, l.message, l.created_ms,"
    "  (SELECT count(*) FROM pairs q WHERE q.member_id = a.member_id"
    "   AND q.room_id = a.room_id AND q.writer_id <> a.member_id AND q.id > a.mine),"
    "  a.mine"
    " FROM agg a JOIN ins l ON l.id = a.last_id"
    " ORDER BY a.member_id, a.room_id"
    " ON CONFLICT (member_id, room_id) DO UPDATE SET"
    "  last_msg_id = GREATEST(r.last_msg_id, EXCLUDED.last_msg_id),"
    "  last_message = CASE WHEN EXCLUDED.last_msg_id > r.last_msg_id"
    "   THEN EXCLUDED.last_message ELSE r.last_message END,"
    "  last_ms = CASE WHEN EXCLUDED.last_msg_id > r.last_msg_id"
    "   THEN EXCLUDED.last_ms ELSE r.last_ms END,"
    "  unread = CASE WHEN EXCLUDED.last_read_id > 0 THEN"
    "   (SELECT count(*) FROM messages m WHERE m.room_id = r.room_id"
    "    AND m.writer_id = r.peer_id AND m.id > GREATEST(r.last_read_id, EXCLUDED.last_read_id))"
    "   + (SELECT count(*) FROM ins q WHERE q.room_id = r.room_id"
    "    AND q.writer_id = r.peer_id AND q.id > GREATEST(r.last_read_id, EXCLUDED.last_read_id))"
    "  ELSE r.unread + (SELECT count(*) FROM ins q WHERE q.room_id = r.room_id"
    "   AND q.writer_id = r.peer_id AND q.id > r.last_read_id) END,"
    "  last_read_id = GREATEST(r.last_read_id, EXCLUDED.last_read_id)";

/* A run of READ events: last_read_id = GREATEST(old, up_to), unread recounted
 * as the peer's messages after it. Like store-sqlite, a read mark only updates
 * an existing summary (a room appears with its first message). */
static const char sql_read_head[] =
    "WITH input (room_id, member_id, up_to, id, writer, created_ms) AS (VALUES ";
static const char sql_read_tail[] =
    "), kept AS ("
    " INSERT INTO reads (id, member_id, writer, room_id, up_to, created_ms)"
    " SELECT id, member_id, writer, room_id, up_to, created_ms FROM input"
    " ON CONFLICT (id) DO NOTHING"
    "), rd AS ("
    " SELECT room_id, member_id, max(up_to) AS up_to FROM input GROUP BY room_id, member_id"
    ") UPDATE rooms AS r SET"
    "  last_read_id = GREATEST(r.last_read_id, rd.up_to),"
    "  unread = (SELECT count(*) FROM messages m WHERE m.room_id = r.room_id"
    "   AND m.writer_id = r.peer_id AND m.id > GREATEST(r.last_read_id, rd.up_to))"
    " FROM rd WHERE r.member_id = rd.member_id AND r.room_id = rd.room_id";

#define MEMBER_COLS "id, login_id, name, pw_hash, created_ms"

/* Growable SQL text (bounded by batch_max times a constant). */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) CHATD_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    if (b->oom) return;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? room : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap ? b->cap * 2 : 4096;
        while (ncap < b->len + (size_t)n + 1)
            ncap *= 2;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

static int send_q(pg_store *st, const char *sql, int n, const char *const *values,
                  const int *lengths, const int *formats)
{
    return PQsendQueryParams(st->conn, sql, n, NULL, values, lengths, formats, 0);
}

/* Send a write batch of `n` pending messages from the head of the list: one
 * statement per run of CHAT / READ messages; the caller adds the sync that
 * commits them as one implicit transaction. */
static int send_batch(pg_store *st, size_t n)
{
    const chatd_api *api = st->api;
    pg_pending *p = st->p_head;
    int ok = 1;

    while (n > 0 && ok) {
        chatd_msg_kind kind = api->msg_kind(p->msg);
        size_t run = 0;
        for (pg_pending *q = p; q && run < n && api->msg_kind(q->msg) == kind; q = q->next)
            run++;
        int per = kind == CHATD_MSG_CHAT ? PG_CHAT_PARAMS : PG_READ_PARAMS;
        size_t np = run * (size_t)per;
        const char **vals = calloc(np, sizeof(*vals));
        int *lens = calloc(np, sizeof(*lens));
        int *fmts = calloc(np, sizeof(*fmts));
        char(*nums)[24] = calloc(run * 4, sizeof(*nums));
        sbuf sql = {0};
        if (!vals || !lens || !fmts || !nums) {
            ok = 0;
        } else {
            sb_add(&sql, "%s", kind == CHATD_MSG_CHAT ? sql_chat_head : sql_read_head);
            for (size_t k = 0; k < run; k++, p = p->next) {
                size_t b = k * (size_t)per;
                char *n0 = nums[k * 4], *n1 = nums[k * 4 + 1], *n2 = nums[k * 4 + 2];
                char *n3 = nums[k * 4 + 3];
                snprintf(n0, 24, "%" PRIu64, api->msg_id(p->msg));
                snprintf(n1, 24, "%" PRId64, api->msg_writer_id(p->msg));
                if (kind == CHATD_MSG_CHAT) {
                    size_t tlen = 0;
                    const char *text = api->msg_text(p->msg, &tlen);
                    int64_t low, high, writer = api->msg_writer_id(p->msg);
                    api->msg_room_members(p->msg, &low, &high);
                    snprintf(n2, 24, "%" PRId64, api->msg_time_ms(p->msg));
                    snprintf(n3, 24, "%" PRId64, writer == low ? high : low);
                    vals[b] = n0;
                    vals[b + 1] = api->msg_room(p->msg);
                    vals[b + 2] = n1;
                    vals[b + 3] = api->msg_writer(p->msg);
                    vals[b + 4] = text ? text : "";
                    lens[b + 4] = (int)tlen; /* binary text: exact bytes, no NUL needed */
                    fmts[b + 4] = 1;
                    vals[b + 5] = n2;
                    vals[b + 6] = n3;
                    vals[b + 7] = api->msg_idem_key(p->msg); /* NULL: SQL NULL */
                    sb_add(&sql,
                           "%s($%zu::bigint,$%zu::text,$%zu::bigint,$%zu::text,$%zu::text,"
                           "$%zu::bigint,$%zu::bigint,$%zu::text)",
                           k ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 7, b + 8);
                } else {
                    snprintf(n2, 24, "%" PRIu64, api->msg_up_to(p->msg));
                    snprintf(n3, 24, "%" PRId64, api->msg_time_ms(p->msg));
                    vals[b] = api->msg_room(p->msg);
                    vals[b + 1] = n1;
                    vals[b + 2] = n2;
                    vals[b + 3] = n0;
                    vals[b + 4] = api->msg_writer(p->msg);
                    vals[b + 5] = n3;
                    sb_add(&sql,
                           "%s($%zu::text,$%zu::bigint,$%zu::bigint,$%zu::bigint,$%zu::text,"
                           "$%zu::bigint)",
                           k ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6);
                }
            }
            if (kind == CHATD_MSG_CHAT) sb_add(&sql, sql_chat_claim, (long long)st->idem_window_ms);
            sb_add(&sql, "%s", kind == CHATD_MSG_CHAT ? sql_chat_tail : sql_read_tail);
            if (sql.oom)
                ok = 0;
            else
                ok = send_q(st, sql.p, (int)np, vals, lens, fmts);
        }
        free(sql.p);
        free(vals);
        free(lens);
        free(fmts);
        free(nums);
        n -= run;
    }
    return ok;
}

static int send_migrate_apply(pg_store *st)
{
    char ver[16];
    const char *vals[1] = {ver};
    for (size_t m = 0; m < sizeof(migrations) / sizeof(migrations[0]); m++) {
        if (migrations[m].version <= st->schema_version) continue;
        for (const char *const *s = migrations[m].stmts; *s; s++)
            if (!send_q(st, *s, 0, NULL, NULL, NULL)) return 0;
        snprintf(ver, sizeof(ver), "%d", migrations[m].version);
        if (!send_q(st, "INSERT INTO chatd_schema (version, applied_at) VALUES ($1, now())", 1,
                    vals, NULL, NULL))
            return 0;
    }
    return send_q(st, "COMMIT", 0, NULL, NULL, NULL);
}

/* Put the queries of r on the connection, then a sync. 0 on failure. */
int req_send(pg_store *st, pg_req *r)
{
    char n0[24], n1[24], n2[24];
    const char *v[5];
    int ok = 0;

    switch (r->kind) {
    case REQ_MIGRATE_CHECK: {
        const char *key[1] = {PG_ADVISORY_KEY};
        ok =
            send_q(st, "BEGIN", 0, NULL, NULL, NULL) &&
            send_q(st, "SELECT pg_advisory_xact_lock($1::bigint)", 1, key, NULL, NULL) &&
            send_q(st,
                   "CREATE TABLE IF NOT EXISTS chatd_schema (version integer PRIMARY KEY,"
                   " applied_at timestamptz NOT NULL DEFAULT now())",
                   0, NULL, NULL, NULL) &&
            send_q(st, "SELECT coalesce(max(version), 0), " PG_DURABILITY_COLS " FROM chatd_schema",
                   0, NULL, NULL, NULL);
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
                    " ORDER BY r.last_ms DESC, r.last_msg_id DESC, r.room_id LIMIT " PG_ROOMS_MAX,
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
                    "SELECT id, room_id, writer_id, writer, message, created_ms"
                    " FROM messages WHERE room_id = $1 AND id < $2::bigint"
                    " ORDER BY id DESC LIMIT $3::bigint",
                    3, v, NULL, NULL);
        r->main_q = 0;
        break;
    case REQ_REPLAY: /* columns: id, kind (1 chat, 2 read), room, writer id, writer, text,
                      * time, up_to */
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        snprintf(n2, sizeof(n2), "%" PRId64, r->i[2]);
        if (r->s[0]) {
            v[0] = r->s[0];
            v[1] = n1;
            v[2] = n2;
            ok = send_q(st,
                        "SELECT id, 1, room_id, writer_id, writer, message, created_ms, 0"
                        " FROM messages WHERE room_id = $1 AND id > $2::bigint"
                        " ORDER BY id LIMIT $3::bigint",
                        3, v, NULL, NULL);
        } else {
            v[0] = n0;
            v[1] = n1;
            v[2] = n2;
            ok =
                send_q(st,
                       "SELECT * FROM ("
                       " SELECT m.id, 1 AS kind, m.room_id, m.writer_id, m.writer, m.message,"
                       "  m.created_ms, 0::bigint AS up_to"
                       " FROM rooms r JOIN messages m ON m.room_id = r.room_id"
                       " WHERE r.member_id = $1::bigint AND m.id > $2::bigint"
                       " UNION ALL"
                       " SELECT id, 2, room_id, member_id, writer, '', created_ms, up_to FROM reads"
                       " WHERE member_id = $1::bigint AND id > $2::bigint) s"
                       " ORDER BY 1 LIMIT $3::bigint",
                       3, v, NULL, NULL);
        }
        r->main_q = 0;
        break;
    case REQ_IDEM_GET:
        snprintf(n0, sizeof(n0), "%" PRId64, r->i[0]);
        snprintf(n1, sizeof(n1), "%" PRId64, r->i[1]);
        v[0] = n0;
        v[1] = r->s[0];
        v[2] = n1;
        ok = send_q(st,
                    "SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.message, m.created_ms, 0"
                    " FROM idempotency i JOIN messages m ON m.id = i.msg_id"
                    " WHERE i.member_id = $1::bigint AND i.idem_key = $2"
                    " AND i.created_ms >= $3::bigint",
                    3, v, NULL, NULL);
        r->main_q = 0;
        break;
    }
    return ok && PQpipelineSync(st->conn);
}
