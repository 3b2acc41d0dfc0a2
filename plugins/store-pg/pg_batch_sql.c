/*
 * pg_batch_sql.c - the write batch's SQL of store-pg: one statement per run
 * of CHAT messages (the run's columns bound as arrays, unnest()ed into rows:
 * an INSERT ... RETURNING feeding the room summary upserts, so only rows
 * really inserted touch the summaries) and one per run of READ events, and
 * the encoding of their array parameters. pg_sql.c sends them as prepared
 * statements (send_q); pg_conn.c adds the sync that commits a batch.
 */
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
int send_batch(pg_store *st, size_t n)
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
