/*
 * pg_sql.c - the SQL of store-pg: the schema migrations (applied at connect
 * inside one transaction holding pg_advisory_xact_lock, so several nodes may
 * start at once) and every statement sent, with bound parameters only.
 *
 * A write batch is one statement per run of CHAT messages (the run's
 * columns bound as arrays, unnest()ed into rows: INSERT ... ON CONFLICT DO
 * NOTHING RETURNING feeding the room summary upserts, so only rows really
 * inserted touch the summaries) and one per run of READ events; pg_conn.c
 * adds the sync that commits them as one implicit transaction.
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

/* Room summaries of a run of CHAT messages: `input` rows are inserted
 * idempotently; only rows really inserted (RETURNING) feed the upsert of both
 * members' summaries. Per member and room: the inserted message of highest
 * position (chatd_api.msg_pos, $9) becomes the last one (if past the stored
 * one); when the member wrote in the batch, the read mark moves up to their
 * newest message and unread is recounted
 * (the peer's messages after it, stored before or in this batch; the subqueries
 * on `messages` do not see this statement's own inserts, hence the two terms),
 * else unread grows by the peer's new messages after last_read_id.
 * The batch's own terms are joins and aggregates (`tally`: the peer's new
 * messages after the member's newest, the proposed row's unread), linear in
 * the batch; a member who did not write adds the peer's new messages
 * (`peer_new`: their count and first position per room and writer, so a read
 * mark before all of them needs no scan), and only a read mark already past
 * the member's newest message, or past the first of the peer's new ones,
 * scans the batch's rows once per summary.
 * Idempotency keys ($10: the window in ms): the first message of a
 * (writer, key) in the room's order owns it, an owner older than the window is replaced; a
 * message whose key another message owns is not inserted (nothing else of
 * it is written). An id already stored with other content fails the
 * statement: the insert's conflict arm updates only a stored row whose
 * content differs, and that update calls chatd_id_taken, which raises
 * SQLSTATE CH001 (so the id is checked by the insert's own probe of the
 * primary key, and only rows that conflict are compared); the batch is then
 * retried one message per transaction. An id twice in one batch is inserted
 * once, its first row (an upsert may not touch a row twice). The lookup of
 * a key's owner per input row is EXISTS ... OFFSET 0, which the planner
 * keeps as a per-row index probe: as a join or a hashed subplan it reads
 * the whole table whenever its statistics lag behind the table's growth
 * (the id check was such a join: a seq scan of `messages` per batch,
 * measured at 70% of the statement's time with 76,000 rows). */
static const char sql_chat[] =
    "WITH input (id, room_id, writer_id, writer, message, created_ms, peer_id, idem_key, pos, ord)"
    " AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[],"
    "  $6::bigint[], $7::bigint[], $8::text[], $9::bigint[]) WITH ORDINALITY"
    "), claim AS ("
    " INSERT INTO idempotency AS d (member_id, idem_key, msg_id, created_ms)"
    " SELECT DISTINCT ON (writer_id, idem_key) writer_id, idem_key, id, created_ms FROM input"
    " WHERE idem_key IS NOT NULL ORDER BY writer_id, idem_key, pos"
    " ON CONFLICT (member_id, idem_key) DO UPDATE SET msg_id = EXCLUDED.msg_id,"
    "  created_ms = EXCLUDED.created_ms WHERE d.created_ms < EXCLUDED.created_ms - $10::bigint"
    " RETURNING msg_id)"
    ", ins AS ("
    " INSERT INTO messages AS m (id, room_id, writer_id, writer, message, created_ms, pos)"
    " SELECT DISTINCT ON (id) id, room_id, writer_id, writer, message, created_ms, pos FROM input"
    " WHERE idem_key IS NULL OR id IN (SELECT msg_id FROM claim) OR EXISTS (SELECT 1"
    "  FROM idempotency o WHERE o.member_id = input.writer_id AND o.idem_key = input.idem_key"
    "  AND o.msg_id = input.id OFFSET 0)"
    " ORDER BY id, ord"
    " ON CONFLICT (id) DO UPDATE SET id = CASE WHEN chatd_id_taken(EXCLUDED.id) THEN m.id END"
    " WHERE (m.room_id, m.writer_id, m.writer, m.message, m.created_ms) IS DISTINCT FROM"
    "  (EXCLUDED.room_id, EXCLUDED.writer_id, EXCLUDED.writer, EXCLUDED.message,"
    "  EXCLUDED.created_ms)"
    " RETURNING id, room_id, writer_id, message, created_ms, pos"
    "), pairs AS ("
    " SELECT i.id, i.pos, i.room_id, i.writer_id, p.member_id, p.peer_id FROM ins i"
    " JOIN (SELECT DISTINCT ON (id) id, peer_id FROM input) n ON n.id = i.id"
    " CROSS JOIN LATERAL (VALUES (i.writer_id, n.peer_id), (n.peer_id, i.writer_id))"
    "  AS p (member_id, peer_id)"
    "), agg AS ("
    " SELECT member_id, room_id, min(peer_id) AS peer_id, max(pos) AS last_pos,"
    "  coalesce(max(pos) FILTER (WHERE writer_id = member_id), 0) AS mine"
    " FROM pairs GROUP BY member_id, room_id"
    "), tally AS ("
    " SELECT a.member_id, a.room_id, count(*) AS unread FROM agg a JOIN pairs q"
    "  ON q.member_id = a.member_id AND q.room_id = a.room_id AND q.writer_id <> a.member_id"
    "  AND q.pos > a.mine GROUP BY a.member_id, a.room_id"
    "), peer_new AS MATERIALIZED ("
    " SELECT room_id, writer_id, min(pos) AS first_pos, count(*) AS n FROM ins"
    " GROUP BY room_id, writer_id"
    ") INSERT INTO rooms AS r"
    " (member_id, room_id, peer_id, last_msg_id, last_message, last_ms, unread, last_read_id,"
    "  last_pos, last_read_pos)"
    " SELECT a.member_id, a.room_id, a.peer_id, l.id, l.message, l.created_ms,"
    "  coalesce(t.unread, 0), coalesce(w.id, 0), a.last_pos, a.mine"
    " FROM agg a JOIN ins l ON l.room_id = a.room_id AND l.pos = a.last_pos"
    " LEFT JOIN tally t ON t.member_id = a.member_id AND t.room_id = a.room_id"
    " LEFT JOIN ins w ON w.room_id = a.room_id AND w.pos = a.mine"
    " ORDER BY a.member_id, a.room_id"
    " ON CONFLICT (member_id, room_id) DO UPDATE SET"
    "  last_msg_id = CASE WHEN EXCLUDED.last_pos > r.last_pos"
    "   THEN EXCLUDED.last_msg_id ELSE r.last_msg_id END,"
    "  last_message = CASE WHEN EXCLUDED.last_pos > r.last_pos"
    "   THEN EXCLUDED.last_message ELSE r.last_message END,"
    "  last_ms = CASE WHEN EXCLUDED.last_pos > r.last_pos"
    "   THEN EXCLUDED.last_ms ELSE r.last_ms END,"
    "  last_pos = GREATEST(r.last_pos, EXCLUDED.last_pos),"
    "  unread = CASE WHEN EXCLUDED.last_read_pos > 0 THEN"
    "   (SELECT count(*) FROM messages m WHERE m.room_id = r.room_id"
    "    AND m.writer_id = r.peer_id AND m.pos > GREATEST(r.last_read_pos, EXCLUDED.last_read_pos))"
    "   + CASE WHEN EXCLUDED.last_read_pos >= r.last_read_pos THEN EXCLUDED.unread"
    "    ELSE (SELECT count(*) FROM ins q WHERE q.room_id = r.room_id"
    "     AND q.writer_id = r.peer_id AND q.pos > r.last_read_pos) END"
    "  ELSE r.unread + coalesce((SELECT CASE WHEN p.first_pos > r.last_read_pos THEN p.n"
    "   ELSE (SELECT count(*) FROM ins q WHERE q.room_id = r.room_id"
    "    AND q.writer_id = r.peer_id AND q.pos > r.last_read_pos) END"
    "   FROM peer_new p WHERE p.room_id = r.room_id AND p.writer_id = r.peer_id), 0) END,"
    "  last_read_id = CASE WHEN EXCLUDED.last_read_pos > r.last_read_pos"
    "   THEN EXCLUDED.last_read_id ELSE r.last_read_id END,"
    "  last_read_pos = GREATEST(r.last_read_pos, EXCLUDED.last_read_pos)";

/* A run of READ events: the read mark moves to the message up_to names when
 * its position is past the stored mark (positions, not ids, decide what is
 * read), unread recounted as the peer's messages after it; a mark naming a
 * message not stored changes nothing. The message is looked up per event
 * by its key (LATERAL ... OFFSET 0: never a scan of `messages`). Like store-sqlite, a read mark
 * only updates an existing summary (a room appears with its first message). */
static const char sql_read[] =
    "WITH input (room_id, member_id, up_to, id, writer, created_ms, pos) AS ("
    " SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],"
    "  $6::bigint[], $7::bigint[])"
    "), kept AS ("
    " INSERT INTO reads (id, member_id, writer, room_id, up_to, created_ms, pos)"
    " SELECT id, member_id, writer, room_id, up_to, created_ms, pos FROM input"
    " ON CONFLICT (id) DO NOTHING"
    "), rd AS ("
    " SELECT DISTINCT ON (i.room_id, i.member_id) i.room_id, i.member_id, m.id AS up_to,"
    "  m.pos AS up_pos FROM input i CROSS JOIN LATERAL (SELECT id, pos FROM messages"
    "  WHERE id = i.up_to AND room_id = i.room_id OFFSET 0) m"
    " ORDER BY i.room_id, i.member_id, m.pos DESC"
    ") UPDATE rooms AS r SET"
    "  last_read_id = CASE WHEN rd.up_pos > r.last_read_pos THEN rd.up_to ELSE r.last_read_id END,"
    "  last_read_pos = GREATEST(r.last_read_pos, rd.up_pos),"
    "  unread = (SELECT count(*) FROM messages m WHERE m.room_id = r.room_id"
    "   AND m.writer_id = r.peer_id AND m.pos > GREATEST(r.last_read_pos, rd.up_pos))"
    " FROM rd WHERE r.member_id = rd.member_id AND r.room_id = rd.room_id";

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
static int send_q(pg_store *st, const char *sql, int n, const char *const *values,
                  const int *lengths, const int *formats)
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

/* ------------------------------------------------------------------------ */
/* Batches                                                                  */
/* ------------------------------------------------------------------------ */

/* An array parameter. Text arrays go in PostgreSQL's binary format (as
 * array_recv reads it: ndim, has-nulls, element type, length, lower bound,
 * then each element as its length, -1 for NULL, and its bytes, big-endian),
 * so that no text needs quoting; integer arrays as text ("{1,2,3}"), so that
 * a value PostgreSQL's bigint cannot hold is refused by the server, as a
 * scalar parameter would be. */
typedef struct parr {
    char *p;
    size_t len, cap;
    size_t n; /* elements so far */
    int oom;
} parr;

#define PG_OID_TEXT 25

static void pa_put(parr *a, const void *bytes, size_t n)
{
    if (a->oom) return;
    if (a->len + n > a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 256;
        while (ncap < a->len + n)
            ncap *= 2;
        char *np = realloc(a->p, ncap);
        if (!np) {
            a->oom = 1;
            return;
        }
        a->p = np;
        a->cap = ncap;
    }
    memcpy(a->p + a->len, bytes, n);
    a->len += n;
}

static void pa_u32(parr *a, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    pa_put(a, b, 4);
}

/* A binary text[] of n elements. */
static void pa_text_begin(parr *a, size_t n, int has_nulls)
{
    pa_u32(a, 1);
    pa_u32(a, has_nulls ? 1 : 0);
    pa_u32(a, PG_OID_TEXT);
    pa_u32(a, (uint32_t)n);
    pa_u32(a, 1);
}

/* an element of a binary text[] (exact bytes; NULL: SQL NULL) */
static void pa_text(parr *a, const char *t, size_t len)
{
    if (!t) {
        pa_u32(a, 0xffffffffu);
        return;
    }
    pa_u32(a, (uint32_t)len);
    pa_put(a, t, len);
}

/* an element of a text-form bigint[] ("-" for a signed value below 0) */
static void pa_num(parr *a, uint64_t magnitude, int negative)
{
    char buf[24];
    size_t k = sizeof(buf);
    do { /* the digits from the right, then the sign and the separator */
        buf[--k] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (negative) buf[--k] = '-';
    buf[--k] = a->n ? ',' : '{';
    a->n++;
    pa_put(a, buf + k, sizeof(buf) - k);
}

static void pa_i64(parr *a, int64_t v)
{
    pa_num(a, v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, v < 0);
}

/* close a text-form bigint[] */
static void pa_num_end(parr *a)
{
    pa_put(a, a->n ? "}" : "{}", a->n ? 2 : 3); /* with its NUL */
}

/* Send one run of `run` messages of `kind` from p, as the arrays of its
 * statement. *next: the message after the run. */
static int send_run(pg_store *st, pg_pending *p, size_t run, chatd_msg_kind kind, pg_pending **next)
{
    /* which parameters are text[] (binary), the others bigint[] (text) */
    static const int chat_text[PG_CHAT_PARAMS] = {0, 1, 0, 1, 1, 0, 0, 1, 0};
    static const int read_text[PG_READ_PARAMS] = {1, 0, 0, 0, 1, 0, 0};
    const chatd_api *api = st->api;
    int chat = kind == CHATD_MSG_CHAT, np = chat ? PG_CHAT_PARAMS : PG_READ_PARAMS, ok = 0;
    const int *is_text = chat ? chat_text : read_text;
    parr a[PG_CHAT_PARAMS];
    const char *vals[PG_CHAT_PARAMS + 1];
    int lens[PG_CHAT_PARAMS + 1], fmts[PG_CHAT_PARAMS + 1];
    char window[24];
    int nulls = 0, oom = 0;

    memset(a, 0, sizeof(a));
    if (chat) {
        size_t k = 0;
        for (pg_pending *q = p; k < run && !nulls; q = q->next, k++)
            nulls = api->msg_idem_key(q->msg) == NULL;
    }
    for (int k = 0; k < np; k++)
        if (is_text[k]) pa_text_begin(&a[k], run, chat && k == 7 && nulls);
    for (size_t k = 0; k < run; k++, p = p->next) {
        const char *room = api->msg_room(p->msg), *writer = api->msg_writer(p->msg);
        uint64_t id = api->msg_id(p->msg);
        int64_t writer_id = api->msg_writer_id(p->msg);
        if (!writer) writer = "";
        if (chat) {
            size_t tlen = 0;
            const char *text = api->msg_text(p->msg, &tlen);
            const char *key = api->msg_idem_key(p->msg);
            int64_t low, high;
            api->msg_room_members(p->msg, &low, &high);
            pa_num(&a[0], id, 0);
            pa_text(&a[1], room, strlen(room));
            pa_i64(&a[2], writer_id);
            pa_text(&a[3], writer, strlen(writer));
            pa_text(&a[4], text ? text : "", text ? tlen : 0);
            pa_i64(&a[5], api->msg_time_ms(p->msg));
            pa_i64(&a[6], writer_id == low ? high : low);
            pa_text(&a[7], key, key ? strlen(key) : 0);
            pa_num(&a[8], api->msg_pos(p->msg), 0);
        } else {
            pa_text(&a[0], room, strlen(room));
            pa_i64(&a[1], writer_id);
            pa_num(&a[2], api->msg_up_to(p->msg), 0);
            pa_num(&a[3], id, 0);
            pa_text(&a[4], writer, strlen(writer));
            pa_i64(&a[5], api->msg_time_ms(p->msg));
            pa_num(&a[6], api->msg_pos(p->msg), 0);
        }
    }
    *next = p;
    for (int k = 0; k < np; k++) {
        if (!is_text[k]) pa_num_end(&a[k]);
        oom |= a[k].oom || a[k].len > INT32_MAX;
        vals[k] = a[k].p;
        lens[k] = (int)a[k].len;
        fmts[k] = is_text[k];
    }
    if (chat) { /* $10: the idempotency window */
        snprintf(window, sizeof(window), "%lld", (long long)st->idem_window_ms);
        vals[np] = window;
        lens[np] = 0;
        fmts[np] = 0;
    }
    if (oom)
        LOG(st, CHATD_LOG_ERROR, "out of memory encoding a batch of %zu messages", run);
    else
        ok = send_q(st, chat ? sql_chat : sql_read, chat ? np + 1 : np, vals, lens, fmts);
    for (int k = 0; k < np; k++)
        free(a[k].p);
    return ok;
}

/* Send a write batch of `n` pending messages from the head of the list: one
 * statement per run of CHAT / READ messages; the caller adds the sync that
 * commits them as one implicit transaction. */
static int send_batch(pg_store *st, size_t n)
{
    pg_pending *p = st->p_head;
    int ok = 1;

    while (n > 0 && ok) {
        chatd_msg_kind kind = st->api->msg_kind(p->msg);
        size_t run = 0;
        for (pg_pending *q = p; q && run < n && st->api->msg_kind(q->msg) == kind; q = q->next)
            run++;
        ok = send_run(st, p, run, kind, &p);
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
