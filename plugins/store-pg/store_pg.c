/*
 * store-pg - the PostgreSQL store plugin of chatd (libpq, never blocking).
 *
 * One libpq connection per instance, in non-blocking pipeline mode, driven by
 * libevent events on PQsocket() registered on the core's event base:
 *   - connecting: PQconnectStart + PQconnectPoll on socket readiness, with a
 *     connect timeout; then the schema is migrated inside one transaction that
 *     holds pg_advisory_xact_lock, so several nodes may start at once;
 *   - requests (reads, member and session writes, message batches) are sent
 *     with PQsendQueryParams (bound parameters only) followed by
 *     PQpipelineSync; results are read with PQconsumeInput/PQisBusy/
 *     PQgetResult when the socket is readable, in the order sent; PQflush runs
 *     when the socket is writable.
 *
 * One connection, not two (one for writes, one for reads): reads are
 * pipelined on the same connection and the server answers them in order, so
 * a read waits at most for the batch sent before it (a few ms); in exchange
 * there is one reconnect path, one migration, and reads see every batch
 * committed before them.
 *
 * Messages (persist) are queued in memory in arrival order and written in
 * batches of up to batch_max: one multi-row statement per run of CHAT
 * messages (INSERT ... ON CONFLICT DO NOTHING RETURNING feeding the room
 * summary upserts, so only rows really inserted touch the summaries), one per
 * run of READ events, then the sync. The statements of a pipeline up to a
 * sync form one implicit transaction (PostgreSQL protocol, "Pipelining"):
 * committed at the sync, rolled back as a whole if one fails, with nothing
 * left open on the connection. No explicit BEGIN/COMMIT is used, so a failed
 * batch never leaves an aborted transaction in front of the requests
 * pipelined behind it. At most one batch is in flight; the next one collects
 * whatever arrived meanwhile. Completions are completed only once the sync
 * reports the commit. A batch that fails on an SQL error is retried one
 * message per transaction so that only the bad message fails.
 *
 * When the connection is lost: log it, reconnect with exponential backoff,
 * keep every uncommitted message (a batch whose COMMIT outcome is unknown is
 * simply sent again: the insert is idempotent by id), and commit them once
 * back. While pending messages reach max_pending, persist returns
 * CHATD_ERR_BUSY; reads while down fail with CHATD_ERR_UNAVAILABLE (reads made
 * while the first connection is being set up wait for it).
 */
#include <chatd/plugin.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_VERSION_STR "0.1.0"
#define PG_MAX_QUEUED_READS 4096          /* reads waiting for the first connection */
#define PG_ADVISORY_KEY "109342543180800" /* arbitrary constant: the schema migration lock */
#define PG_ERR_LEN 256
#define PG_BATCH_MAX_LIMIT 8192 /* 6 parameters per message stays under 65535 */
#define PG_HISTORY_DEFAULT 50u  /* history page when limit is 0 (as store-sqlite) */
#define PG_HISTORY_MAX 1000u    /* largest history page */
#define PG_ROOMS_MAX "10000"    /* most room summaries returned */
#define PG_MEMBERS_MAX "100000" /* most members returned by member_list */

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

static const struct {
    int version;
    const char *const *stmts;
} migrations[] = {
    {1, migration_v1},
};
#define PG_SCHEMA_VERSION 1

/* Room summaries of a run of CHAT messages: `input` rows are inserted
 * idempotently; only rows really inserted (RETURNING) feed the upsert of both
 * members' summaries. Per member and room: the newest inserted message becomes
 * the last one (if newer than the stored one); when the member wrote in the
 * batch, last_read_id moves up to their newest message and unread is recounted
 * (the peer's messages after it, stored before or in this batch; the subqueries
 * on `messages` do not see this statement's own inserts, hence the two terms),
 * else unread grows by the peer's new messages after last_read_id. */
static const char sql_chat_head[] =
    "WITH input (id, room_id, writer_id, writer, message, created_ms) AS (VALUES ";
static const char sql_chat_tail[] =
    "), ins AS ("
    " INSERT INTO messages (id, room_id, writer_id, writer, message, created_ms)"
    " SELECT id, room_id, writer_id, writer, message, created_ms FROM input"
    " ON CONFLICT (id) DO NOTHING"
    " RETURNING id, room_id, writer_id, message, created_ms"
    "), pairs AS ("
    " SELECT i.id, i.room_id, i.writer_id, p.member_id, p.peer_id FROM ins i"
    " CROSS JOIN LATERAL (VALUES"
    "  (split_part(i.room_id, '&', 1)::bigint, split_part(i.room_id, '&', 2)::bigint),"
    "  (split_part(i.room_id, '&', 2)::bigint, split_part(i.room_id, '&', 1)::bigint))"
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
static const char sql_read_head[] = "WITH input (room_id, member_id, up_to) AS (VALUES ";
static const char sql_read_tail[] =
    "), rd AS ("
    " SELECT room_id, member_id, max(up_to) AS up_to FROM input GROUP BY room_id, member_id"
    ") UPDATE rooms AS r SET"
    "  last_read_id = GREATEST(r.last_read_id, rd.up_to),"
    "  unread = (SELECT count(*) FROM messages m WHERE m.room_id = r.room_id"
    "   AND m.writer_id = r.peer_id AND m.id > GREATEST(r.last_read_id, rd.up_to))"
    " FROM rd WHERE r.member_id = rd.member_id AND r.room_id = rd.room_id";

#define MEMBER_COLS "id, login_id, name, pw_hash, created_ms"

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum pg_state {
    PG_IDLE,       /* created, not started */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_MIGRATING,  /* connected; schema check/migration in flight */
    PG_READY,      /* serving requests */
    PG_DOWN,       /* waiting for the reconnect timer */
    PG_STOPPED     /* stop finished (or timed out) */
} pg_state;

/* One message waiting to be committed. */
typedef struct pg_pending {
    struct pg_pending *next;
    chatd_msg *msg;
    chatd_completion *done;
} pg_pending;

typedef enum pg_req_kind {
    REQ_MIGRATE_CHECK,
    REQ_MIGRATE_APPLY,
    REQ_BATCH,
    REQ_MEMBER_CREATE,
    REQ_MEMBER_GET,
    REQ_MEMBER_LIST,
    REQ_SESSION_PUT,
    REQ_SESSION_GET,
    REQ_SESSION_DEL,
    REQ_ROOM_LIST,
    REQ_HISTORY
} pg_req_kind;

/* One request: a few queries followed by a pipeline sync. */
typedef struct pg_req {
    struct pg_req *next;
    pg_req_kind kind;
    int main_q;      /* index of the query whose result is kept, -1: none */
    int nres;        /* query results received so far */
    int expect_null; /* a result was read; libpq ends it with a NULL */
    int failed;
    char err[PG_ERR_LEN];
    char sqlstate[6];
    PGresult *res; /* result of main_q */
    void *cb;      /* the caller's callback (type by kind) */
    void *arg;
    char *s[3];      /* owned copies of string arguments */
    int64_t i[3];    /* integer arguments */
    size_t nbatch;   /* REQ_BATCH: number of pending messages it covers */
    int64_t sent_ms; /* when it was put on the connection */
} pg_req;

typedef struct pg_store {
    const chatd_api *api;
    chatd_ctx *ctx;
    struct event_base *base;

    /* config */
    const char *conninfo;
    size_t batch_max;
    size_t max_pending;
    int64_t reconnect_min_ms, reconnect_max_ms, connect_timeout_ms, stop_timeout_ms;
    int64_t query_timeout_ms;

    pg_state state;
    int ever_ready; /* the first connection succeeded once */
    int64_t backoff_ms;
    PGconn *conn;
    struct event *ev_conn;  /* connecting: one-shot read/write */
    struct event *ev_read;  /* ready: persistent read */
    struct event *ev_write; /* ready: one-shot write while PQflush has more */
    struct event *ev_timer; /* reconnect backoff / connect timeout */
    struct event *ev_kick;  /* deferred pump (never send from inside a callback) */
    struct event *ev_stop;  /* stop timeout */
    struct event *ev_watch; /* every second: is the oldest request answered in time? */
    int schema_version;     /* read by REQ_MIGRATE_CHECK */

    /* requests */
    pg_req *q_head, *q_tail; /* not sent yet */
    size_t nqueued;
    pg_req *f_head, *f_tail; /* sent, awaiting results (in order) */

    /* messages */
    pg_pending *p_head, *p_tail;
    size_t npending;  /* all uncommitted, including the batch in flight */
    size_t inflight;  /* first `inflight` pending messages are in a sent batch */
    size_t solo_left; /* after a failed batch: this many go one per transaction */
    int busy_logged;
    unsigned failures; /* failed connection attempts since the last success */

    int stopping;
    chatd_completion *stop_done;
} pg_store;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

#define LOG(st, lvl, ...) (st)->api->log((st)->ctx, (lvl), __VA_ARGS__)

/* libpq error texts end with a newline; keep one line. */
static void copy_err(char *dst, size_t cap, const char *src)
{
    size_t n;
    if (!src || !*src) src = "unknown error";
    n = strcspn(src, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static const char *conn_err(pg_store *st, char *buf, size_t cap)
{
    copy_err(buf, cap, st->conn ? PQerrorMessage(st->conn) : "no connection");
    return buf;
}

static int64_t parse_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static uint64_t parse_u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

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

/* ------------------------------------------------------------------------ */
/* Request lists                                                            */
/* ------------------------------------------------------------------------ */

static pg_req *req_new(pg_req_kind kind, void *cb, void *arg)
{
    pg_req *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->main_q = -1;
    return r;
}

static void req_free(pg_req *r)
{
    if (!r) return;
    if (r->res) PQclear(r->res);
    for (size_t k = 0; k < 3; k++)
        free(r->s[k]);
    free(r);
}

static void list_push(pg_req **head, pg_req **tail, pg_req *r)
{
    r->next = NULL;
    if (*tail)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
}

static pg_req *list_pop(pg_req **head, pg_req **tail)
{
    pg_req *r = *head;
    if (!r) return NULL;
    *head = r->next;
    if (!*head) *tail = NULL;
    r->next = NULL;
    return r;
}

/* ------------------------------------------------------------------------ */
/* Callbacks to callers                                                     */
/* ------------------------------------------------------------------------ */

/* Report a status with no rows to the caller of request r. */
static void req_fail_cb(pg_store *st, pg_req *r, chatd_status status)
{
    switch (r->kind) {
    case REQ_MEMBER_CREATE:
    case REQ_MEMBER_GET:
    case REQ_MEMBER_LIST:
        ((chatd_member_cb)r->cb)(r->arg, status, NULL, 0);
        break;
    case REQ_SESSION_PUT:
    case REQ_SESSION_DEL:
        if (r->cb) ((chatd_status_cb)r->cb)(r->arg, status);
        break;
    case REQ_SESSION_GET:
        ((chatd_session_cb)r->cb)(r->arg, status, NULL);
        break;
    case REQ_ROOM_LIST:
        ((chatd_rooms_cb)r->cb)(r->arg, status, NULL, 0);
        break;
    case REQ_HISTORY:
        ((chatd_history_cb)r->cb)(r->arg, status, NULL, 0, 0);
        break;
    case REQ_MIGRATE_CHECK:
    case REQ_MIGRATE_APPLY:
    case REQ_BATCH:
        break;
    }
    (void)st;
}

static void deliver_members(pg_store *st, pg_req *r, int with_hash)
{
    PGresult *res = r->res;
    int n = res ? PQntuples(res) : 0;
    chatd_member *rows = NULL;
    if (n > 0) {
        rows = calloc((size_t)n, sizeof(*rows));
        if (!rows) {
            LOG(st, CHATD_LOG_ERROR, "out of memory reading %d members", n);
            ((chatd_member_cb)r->cb)(r->arg, CHATD_ERR_NOMEM, NULL, 0);
            return;
        }
    }
    for (int k = 0; k < n; k++) {
        rows[k].size = sizeof(chatd_member);
        rows[k].id = parse_i64(PQgetvalue(res, k, 0));
        rows[k].login_id = PQgetvalue(res, k, 1);
        rows[k].name = PQgetvalue(res, k, 2);
        rows[k].pw_hash = (with_hash && !PQgetisnull(res, k, 3)) ? PQgetvalue(res, k, 3) : NULL;
        rows[k].created_ms = parse_i64(PQgetvalue(res, k, 4));
    }
    if (n == 0 && r->kind != REQ_MEMBER_LIST) {
        chatd_status s = r->kind == REQ_MEMBER_CREATE ? CHATD_ERR_EXISTS : CHATD_ERR_NOTFOUND;
        ((chatd_member_cb)r->cb)(r->arg, s, NULL, 0);
    } else {
        ((chatd_member_cb)r->cb)(r->arg, CHATD_OK, rows, (size_t)n);
    }
    free(rows);
}

static void deliver_rooms(pg_store *st, pg_req *r)
{
    PGresult *res = r->res;
    int n = res ? PQntuples(res) : 0;
    chatd_room_summary *rows = NULL;
    if (n > 0) {
        rows = calloc((size_t)n, sizeof(*rows));
        if (!rows) {
            LOG(st, CHATD_LOG_ERROR, "out of memory reading %d room summaries", n);
            ((chatd_rooms_cb)r->cb)(r->arg, CHATD_ERR_NOMEM, NULL, 0);
            return;
        }
    }
    for (int k = 0; k < n; k++) {
        rows[k].size = sizeof(chatd_room_summary);
        rows[k].room_id = PQgetvalue(res, k, 0);
        rows[k].member_id = parse_i64(PQgetvalue(res, k, 1));
        rows[k].peer_id = parse_i64(PQgetvalue(res, k, 2));
        rows[k].peer_login = PQgetvalue(res, k, 3);
        rows[k].peer_name = PQgetvalue(res, k, 4);
        rows[k].last_msg_id = parse_u64(PQgetvalue(res, k, 5));
        rows[k].last_message = PQgetvalue(res, k, 6);
        rows[k].last_ms = parse_i64(PQgetvalue(res, k, 7));
        rows[k].unread = parse_i64(PQgetvalue(res, k, 8));
        rows[k].last_read_id = parse_u64(PQgetvalue(res, k, 9));
    }
    ((chatd_rooms_cb)r->cb)(r->arg, CHATD_OK, rows, (size_t)n);
    free(rows);
}

static void deliver_history(pg_store *st, pg_req *r)
{
    PGresult *res = r->res;
    int got = res ? PQntuples(res) : 0;
    size_t limit = (size_t)r->i[1];
    size_t n = (size_t)got > limit ? limit : (size_t)got;
    chatd_msg **msgs = NULL;
    uint64_t next_before = 0;
    chatd_status status = CHATD_OK;

    if (n > 0) {
        msgs = calloc(n, sizeof(*msgs));
        if (!msgs) {
            LOG(st, CHATD_LOG_ERROR, "out of memory reading %zu messages of history", n);
            ((chatd_history_cb)r->cb)(r->arg, CHATD_ERR_NOMEM, NULL, 0, 0);
            return;
        }
    }
    /* rows come newest first; deliver oldest first */
    for (size_t k = 0; k < n; k++) {
        int row = (int)(n - 1 - k);
        chatd_msg_fields f;
        memset(&f, 0, sizeof(f));
        f.size = sizeof(f);
        f.kind = CHATD_MSG_CHAT;
        f.id = parse_u64(PQgetvalue(res, row, 0));
        f.room_id = PQgetvalue(res, row, 1);
        f.writer_id = parse_i64(PQgetvalue(res, row, 2));
        f.writer = PQgetvalue(res, row, 3);
        f.text = PQgetvalue(res, row, 4);
        f.text_len = (size_t)PQgetlength(res, row, 4);
        f.time_ms = parse_i64(PQgetvalue(res, row, 5));
        msgs[k] = st->api->msg_new(st->ctx, &f);
        if (!msgs[k]) {
            LOG(st, CHATD_LOG_ERROR,
                "could not rebuild message %" PRIu64 " of room %s from the"
                " database (invalid fields or out of memory)",
                f.id, f.room_id);
            status = CHATD_ERR_INTERNAL;
            break;
        }
    }
    if (status == CHATD_OK) {
        if ((size_t)got > limit && n > 0) next_before = st->api->msg_id(msgs[0]);
        ((chatd_history_cb)r->cb)(r->arg, CHATD_OK, msgs, n, next_before);
    } else {
        ((chatd_history_cb)r->cb)(r->arg, status, NULL, 0, 0);
    }
    for (size_t k = 0; k < n; k++)
        st->api->msg_unref(msgs[k]);
    free(msgs);
}

/* ------------------------------------------------------------------------ */
/* Connection life cycle                                                    */
/* ------------------------------------------------------------------------ */

static void pg_connect(pg_store *st);
static void pump(pg_store *st);
static void kick(pg_store *st);
static void check_stop_done(pg_store *st);

static void conn_close(pg_store *st)
{
    if (st->ev_conn) {
        event_free(st->ev_conn);
        st->ev_conn = NULL;
    }
    if (st->ev_read) {
        event_free(st->ev_read);
        st->ev_read = NULL;
    }
    if (st->ev_write) {
        event_free(st->ev_write);
        st->ev_write = NULL;
    }
    if (st->conn) {
        PQfinish(st->conn);
        st->conn = NULL;
    }
}

/* Fail every request not yet answered (sent or not) with `status`; the
 * batch in flight only gives its messages back to the pending list. */
static void fail_requests(pg_store *st, chatd_status status)
{
    pg_req *sent = st->f_head, *queued = st->q_head, *r;
    st->f_head = st->f_tail = NULL;
    st->q_head = st->q_tail = NULL;
    st->nqueued = 0;
    st->inflight = 0;
    while ((r = sent)) {
        sent = r->next;
        req_fail_cb(st, r, status);
        req_free(r);
    }
    while ((r = queued)) {
        queued = r->next;
        req_fail_cb(st, r, status);
        req_free(r);
    }
}

/* Complete every pending message with `status` (stop timeout, destroy). */
static void fail_pending(pg_store *st, chatd_status status, const char *reason)
{
    pg_pending *p = st->p_head, *next;
    st->p_head = st->p_tail = NULL;
    st->npending = 0;
    st->inflight = 0;
    for (; p; p = next) {
        next = p->next;
        st->api->complete(p->done, status, reason);
        st->api->msg_unref(p->msg);
        free(p);
    }
}

static void schedule_reconnect(pg_store *st)
{
    struct timeval tv;
    int64_t ms = st->backoff_ms;
    st->state = PG_DOWN;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    if (evtimer_add(st->ev_timer, &tv) != 0)
        LOG(st, CHATD_LOG_ERROR,
            "could not arm the reconnect timer (libevent); PostgreSQL will"
            " not be retried: restart chatd");
    st->backoff_ms =
        st->backoff_ms * 2 > st->reconnect_max_ms ? st->reconnect_max_ms : st->backoff_ms * 2;
}

/* The connection failed or was lost: log it, keep the messages, give
 * UNAVAILABLE to reads, and try again after a backoff. */
static void conn_lost(pg_store *st, const char *what)
{
    int was_ready = st->state == PG_READY || st->state == PG_MIGRATING;
    evtimer_del(st->ev_timer);
    conn_close(st);
    st->state = PG_DOWN;
    st->api->counter_add(st->ctx, "chatd_store_connection_failures_total", 1);
    st->failures++;
    if (was_ready)
        LOG(st, CHATD_LOG_ERROR,
            "lost the connection to PostgreSQL (%s); keeping %zu"
            " uncommitted messages, reconnecting in %" PRId64 " ms",
            what, st->npending, st->backoff_ms);
    else /* the first failures, then every 10th, so that a long outage stays readable */
        LOG(st, st->failures <= 3 || st->failures % 10 == 0 ? CHATD_LOG_WARN : CHATD_LOG_DEBUG,
            "cannot reach PostgreSQL (%s): check that the server is up and conninfo is right;"
            " %zu messages waiting, attempt %u, retrying in %" PRId64 " ms",
            what, st->npending, st->failures, st->backoff_ms);
    schedule_reconnect(st);
    fail_requests(st, CHATD_ERR_UNAVAILABLE);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    pg_store *st = arg;
    (void)fd;
    (void)what;
    if (st->state == PG_DOWN) {
        pg_connect(st);
    } else if (st->state == PG_CONNECTING) {
        char buf[64];
        snprintf(buf, sizeof(buf), "no answer within %" PRId64 " ms", st->connect_timeout_ms);
        conn_lost(st, buf);
    }
}

/* A server that stops answering without closing the connection (a dead
 * host, a network partition) would hold the messages forever: drop the
 * connection when the oldest request waits longer than query_timeout_ms. */
static void on_watch(evutil_socket_t fd, short what, void *arg)
{
    pg_store *st = arg;
    (void)fd;
    (void)what;
    if (st->query_timeout_ms > 0 && st->conn && st->f_head &&
        st->api->now_ms() - st->f_head->sent_ms > st->query_timeout_ms) {
        char buf[96];
        snprintf(buf, sizeof(buf), "no answer to a query within %" PRId64 " ms",
                 st->query_timeout_ms);
        conn_lost(st, buf);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

static void kick(pg_store *st)
{
    event_active(st->ev_kick, EV_TIMEOUT, 0);
}

/* ------------------------------------------------------------------------ */
/* Sending                                                                  */
/* ------------------------------------------------------------------------ */

static int send_q(pg_store *st, const char *sql, int n, const char *const *values,
                  const int *lengths, const int *formats)
{
    return PQsendQueryParams(st->conn, sql, n, NULL, values, lengths, formats, 0);
}

static void flush_out(pg_store *st)
{
    int rc;
    if (!st->conn) return;
    rc = PQflush(st->conn);
    if (rc < 0) {
        char buf[PG_ERR_LEN];
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
    } else if (rc > 0 && st->ev_write) {
        if (event_add(st->ev_write, NULL) != 0)
            LOG(st, CHATD_LOG_ERROR, "could not watch the PostgreSQL socket (libevent)");
    }
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
        int per = kind == CHATD_MSG_CHAT ? 6 : 3;
        size_t np = run * (size_t)per;
        const char **vals = calloc(np, sizeof(*vals));
        int *lens = calloc(np, sizeof(*lens));
        int *fmts = calloc(np, sizeof(*fmts));
        char(*nums)[24] = calloc(run * 3, sizeof(*nums));
        sbuf sql = {0};
        if (!vals || !lens || !fmts || !nums) {
            ok = 0;
        } else {
            sb_add(&sql, "%s", kind == CHATD_MSG_CHAT ? sql_chat_head : sql_read_head);
            for (size_t k = 0; k < run; k++, p = p->next) {
                size_t b = k * (size_t)per;
                char *n0 = nums[k * 3], *n1 = nums[k * 3 + 1], *n2 = nums[k * 3 + 2];
                snprintf(n0, 24, "%" PRIu64, api->msg_id(p->msg));
                snprintf(n1, 24, "%" PRId64, api->msg_writer_id(p->msg));
                if (kind == CHATD_MSG_CHAT) {
                    size_t tlen = 0;
                    const char *text = api->msg_text(p->msg, &tlen);
                    snprintf(n2, 24, "%" PRId64, api->msg_time_ms(p->msg));
                    vals[b] = n0;
                    vals[b + 1] = api->msg_room(p->msg);
                    vals[b + 2] = n1;
                    vals[b + 3] = api->msg_writer(p->msg);
                    vals[b + 4] = text ? text : "";
                    lens[b + 4] = (int)tlen; /* binary text: exact bytes, no NUL needed */
                    fmts[b + 4] = 1;
                    vals[b + 5] = n2;
                    sb_add(&sql,
                           "%s($%zu::bigint,$%zu::text,$%zu::bigint,$%zu::text,$%zu::text,"
                           "$%zu::bigint)",
                           k ? "," : "", b + 1, b + 2, b + 3, b + 4, b + 5, b + 6);
                } else {
                    snprintf(n2, 24, "%" PRIu64, api->msg_up_to(p->msg));
                    vals[b] = api->msg_room(p->msg);
                    vals[b + 1] = n1;
                    vals[b + 2] = n2;
                    sb_add(&sql, "%s($%zu::text,$%zu::bigint,$%zu::bigint)", k ? "," : "", b + 1,
                           b + 2, b + 3);
                }
            }
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
static int req_send(pg_store *st, pg_req *r)
{
    char n0[24], n1[24], n2[24];
    const char *v[4];
    int ok = 0;

    switch (r->kind) {
    case REQ_MIGRATE_CHECK: {
        const char *key[1] = {PG_ADVISORY_KEY};
        ok = send_q(st, "BEGIN", 0, NULL, NULL, NULL) &&
             send_q(st, "SELECT pg_advisory_xact_lock($1::bigint)", 1, key, NULL, NULL) &&
             send_q(st,
                    "CREATE TABLE IF NOT EXISTS chatd_schema (version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())",
                    0, NULL, NULL, NULL) &&
             send_q(st, "SELECT coalesce(max(version), 0) FROM chatd_schema", 0, NULL, NULL, NULL);
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
    }
    return ok && PQpipelineSync(st->conn);
}

/* Send r now and track it; on failure the connection is dropped (which also
 * fails or requeues r). Returns 0 when the connection is gone. */
static int send_tracked(pg_store *st, pg_req *r)
{
    r->sent_ms = st->api->now_ms();
    list_push(&st->f_head, &st->f_tail, r);
    if (!req_send(st, r)) {
        char buf[PG_ERR_LEN];
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return 0;
    }
    return 1;
}

/* Send what can be sent: queued requests, then the next batch. */
static void pump(pg_store *st)
{
    if (st->state == PG_READY) {
        pg_req *r;
        while (st->state == PG_READY && (r = list_pop(&st->q_head, &st->q_tail))) {
            st->nqueued--;
            if (!send_tracked(st, r)) break;
        }
        if (st->state == PG_READY && st->inflight == 0 && st->npending > 0) {
            size_t n = st->npending < st->batch_max ? st->npending : st->batch_max;
            if (st->solo_left > 0) n = 1;
            r = req_new(REQ_BATCH, NULL, NULL);
            if (!r) {
                LOG(st, CHATD_LOG_ERROR,
                    "out of memory starting a batch of %zu messages;"
                    " retrying soon",
                    n);
            } else {
                r->nbatch = n;
                st->inflight = n;
                send_tracked(st, r);
            }
        }
        if (st->state == PG_READY) flush_out(st);
    }
    check_stop_done(st);
}

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

static void go_ready(pg_store *st)
{
    st->state = PG_READY;
    st->backoff_ms = st->reconnect_min_ms;
    st->failures = 0;
    st->busy_logged = 0;
    if (!st->ever_ready)
        LOG(st, CHATD_LOG_INFO, "connected to PostgreSQL (server %d, schema version %d)",
            PQserverVersion(st->conn), PG_SCHEMA_VERSION);
    else
        LOG(st, CHATD_LOG_WARN, "PostgreSQL is back; committing %zu pending messages",
            st->npending);
    st->ever_ready = 1;
}

/* A batch finished (sync received). */
static void batch_done(pg_store *st, pg_req *r)
{
    size_t n = r->nbatch;
    if (n > st->inflight) n = st->inflight; /* defensive; equal by construction */
    st->inflight = 0;
    if (!r->failed) {
        st->api->counter_add(st->ctx, "chatd_store_commits_total", 1);
        st->api->counter_add(st->ctx, "chatd_store_persisted_total", n);
        for (size_t k = 0; k < n; k++) {
            pg_pending *p = st->p_head;
            st->p_head = p->next;
            if (!st->p_head) st->p_tail = NULL;
            st->npending--;
            if (st->solo_left > 0) st->solo_left--;
            st->api->complete(p->done, CHATD_OK, NULL);
            st->api->msg_unref(p->msg);
            free(p);
        }
        if (st->npending < st->max_pending / 2) st->busy_logged = 0;
        st->api->gauge_set(st->ctx, "chatd_store_pending", (int64_t)st->npending);
        return;
    }
    st->api->counter_add(st->ctx, "chatd_store_failed_batches_total", 1);
    if (n > 1) {
        LOG(st, CHATD_LOG_WARN,
            "a batch of %zu messages failed (%s%s%s); retrying them one per"
            " transaction",
            n, r->err, r->sqlstate[0] ? ", SQLSTATE " : "", r->sqlstate);
        st->solo_left = n;
        return;
    }
    if (n == 1) {
        pg_pending *p = st->p_head;
        char reason[PG_ERR_LEN + 32];
        st->api->gauge_set(st->ctx, "chatd_store_pending", (int64_t)st->npending - 1);
        st->p_head = p->next;
        if (!st->p_head) st->p_tail = NULL;
        st->npending--;
        if (st->solo_left > 0) st->solo_left--;
        LOG(st, CHATD_LOG_ERROR,
            "PostgreSQL refused message %" PRIu64 " (%s%s%s); the queue"
            " will redeliver it",
            st->api->msg_id(p->msg), r->err, r->sqlstate[0] ? ", SQLSTATE " : "", r->sqlstate);
        snprintf(reason, sizeof(reason), "database error: %s", r->err);
        st->api->complete(p->done, CHATD_ERR_IO, reason);
        st->api->msg_unref(p->msg);
        free(p);
    }
}

/* A request finished (its sync result arrived): tell its caller. */
static void req_finish(pg_store *st, pg_req *r)
{
    if (r->kind == REQ_BATCH) {
        batch_done(st, r);
        return;
    }
    if (r->kind == REQ_MIGRATE_CHECK || r->kind == REQ_MIGRATE_APPLY) {
        if (r->failed) {
            char buf[PG_ERR_LEN + 64];
            snprintf(buf, sizeof(buf), "schema migration failed: %s", r->err);
            conn_lost(st, buf);
            return;
        }
        if (r->kind == REQ_MIGRATE_CHECK) {
            pg_req *apply;
            st->schema_version = r->res ? (int)parse_i64(PQgetvalue(r->res, 0, 0)) : 0;
            if (st->schema_version > PG_SCHEMA_VERSION) {
                char buf[128];
                snprintf(buf, sizeof(buf),
                         "the database schema is version %d, newer than this"
                         " store-pg (%d): upgrade chatd",
                         st->schema_version, PG_SCHEMA_VERSION);
                conn_lost(st, buf);
                return;
            }
            if (st->schema_version < PG_SCHEMA_VERSION)
                LOG(st, CHATD_LOG_INFO, "migrating the database schema from version %d to %d",
                    st->schema_version, PG_SCHEMA_VERSION);
            apply = req_new(REQ_MIGRATE_APPLY, NULL, NULL);
            if (!apply) {
                conn_lost(st, "out of memory");
                return;
            }
            if (send_tracked(st, apply)) flush_out(st);
            return;
        }
        go_ready(st);
        kick(st);
        return;
    }
    if (r->failed) {
        chatd_status s = CHATD_ERR_IO;
        if (strcmp(r->sqlstate, "23505") == 0)
            s = CHATD_ERR_EXISTS;
        else if (strncmp(r->sqlstate, "22", 2) == 0)
            s = CHATD_ERR_INVALID;
        LOG(st, s == CHATD_ERR_IO ? CHATD_LOG_ERROR : CHATD_LOG_DEBUG,
            "PostgreSQL query failed: %s%s%s", r->err, r->sqlstate[0] ? ", SQLSTATE " : "",
            r->sqlstate);
        req_fail_cb(st, r, s);
        return;
    }
    switch (r->kind) {
    case REQ_MEMBER_CREATE:
    case REQ_MEMBER_GET:
        deliver_members(st, r, 1);
        break;
    case REQ_MEMBER_LIST:
        deliver_members(st, r, 0);
        break;
    case REQ_SESSION_PUT:
    case REQ_SESSION_DEL:
        if (r->cb) ((chatd_status_cb)r->cb)(r->arg, CHATD_OK);
        break;
    case REQ_SESSION_GET:
        if (!r->res || PQntuples(r->res) == 0) {
            ((chatd_session_cb)r->cb)(r->arg, CHATD_ERR_NOTFOUND, NULL);
        } else {
            chatd_session s;
            memset(&s, 0, sizeof(s));
            s.size = sizeof(s);
            s.token_hash = PQgetvalue(r->res, 0, 0);
            s.member_id = parse_i64(PQgetvalue(r->res, 0, 1));
            s.expires_ms = parse_i64(PQgetvalue(r->res, 0, 2));
            ((chatd_session_cb)r->cb)(r->arg, CHATD_OK, &s);
        }
        break;
    case REQ_ROOM_LIST:
        deliver_rooms(st, r);
        break;
    case REQ_HISTORY:
        deliver_history(st, r);
        break;
    default:
        break;
    }
}

/* Read every result that has arrived, in order, finishing requests at their
 * sync. Returns 0 if the connection went away meanwhile. */
static int read_results(pg_store *st)
{
    pg_req *r;
    while (st->conn && (r = st->f_head)) {
        PGresult *res;
        ExecStatusType s;
        if (PQisBusy(st->conn)) break;
        res = PQgetResult(st->conn);
        if (!res) {
            if (r->expect_null) {
                r->expect_null = 0;
                continue;
            }
            break;
        }
        s = PQresultStatus(res);
        if (s == PGRES_PIPELINE_SYNC) {
            PQclear(res);
            list_pop(&st->f_head, &st->f_tail);
            req_finish(st, r);
            req_free(r);
            continue;
        }
        r->expect_null = 1;
        if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
            if (r->nres == r->main_q && !r->res) {
                r->res = res; /* kept for req_finish */
                res = NULL;
            }
        } else if (!r->failed) {
            const char *code = PQresultErrorField(res, PG_DIAG_SQLSTATE);
            const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
            r->failed = 1;
            copy_err(r->err, sizeof(r->err),
                     s == PGRES_PIPELINE_ABORTED ? "pipeline aborted"
                     : primary                   ? primary
                                                 : PQresultErrorMessage(res));
            if (code) snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", code);
        }
        if (res) PQclear(res);
        r->nres++;
    }
    if (st->conn && PQstatus(st->conn) == CONNECTION_BAD) {
        char buf[PG_ERR_LEN];
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return 0;
    }
    return st->conn != NULL;
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    pg_store *st = arg;
    (void)fd;
    (void)what;
    if (!st->conn) return;
    if (!PQconsumeInput(st->conn)) {
        char buf[PG_ERR_LEN];
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return;
    }
    if (!read_results(st)) return;
    flush_out(st);
    pump(st);
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flush_out(arg);
}

static void on_notice(void *arg, const char *message)
{
    pg_store *st = arg;
    char buf[PG_ERR_LEN];
    copy_err(buf, sizeof(buf), message);
    LOG(st, CHATD_LOG_DEBUG, "PostgreSQL: %s", buf);
}

/* The connection is up: go non-blocking and pipelined, then migrate. */
static void conn_established(pg_store *st)
{
    char buf[PG_ERR_LEN];
    int fd = PQsocket(st->conn);
    pg_req *check;

    evtimer_del(st->ev_timer);
    if (st->ev_conn) {
        event_free(st->ev_conn);
        st->ev_conn = NULL;
    }
    PQsetNoticeProcessor(st->conn, on_notice, st);
    if (PQsetnonblocking(st->conn, 1) != 0 || !PQenterPipelineMode(st->conn)) {
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return;
    }
    st->ev_read = event_new(st->base, fd, EV_READ | EV_PERSIST, on_read, st);
    st->ev_write = event_new(st->base, fd, EV_WRITE, on_write, st);
    check = req_new(REQ_MIGRATE_CHECK, NULL, NULL);
    if (!st->ev_read || !st->ev_write || !check || event_add(st->ev_read, NULL) != 0) {
        req_free(check);
        conn_lost(st, "out of memory or libevent failure watching the socket");
        return;
    }
    st->state = PG_MIGRATING;
    if (send_tracked(st, check)) flush_out(st);
}

static void conn_poll(pg_store *st);

static void on_conn_event(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    conn_poll(arg);
}

/* Drive PQconnectPoll; wait on the socket it asks for (it may change). */
static void conn_poll(pg_store *st)
{
    char buf[PG_ERR_LEN];
    PostgresPollingStatusType ps = PQconnectPoll(st->conn);
    short ev;

    if (ps == PGRES_POLLING_OK) {
        conn_established(st);
        return;
    }
    if (ps == PGRES_POLLING_FAILED) {
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return;
    }
    ev = ps == PGRES_POLLING_READING ? EV_READ : EV_WRITE;
    if (st->ev_conn) event_free(st->ev_conn);
    st->ev_conn = event_new(st->base, PQsocket(st->conn), ev, on_conn_event, st);
    if (!st->ev_conn || event_add(st->ev_conn, NULL) != 0)
        conn_lost(st, "libevent failure watching the socket");
}

static void pg_connect(pg_store *st)
{
    char buf[PG_ERR_LEN];
    struct timeval tv;

    conn_close(st);
    st->state = PG_CONNECTING;
    st->conn = PQconnectStart(st->conninfo);
    if (!st->conn) {
        conn_lost(st, "out of memory");
        return;
    }
    if (PQstatus(st->conn) == CONNECTION_BAD) {
        conn_lost(st, conn_err(st, buf, sizeof(buf)));
        return;
    }
    tv.tv_sec = (time_t)(st->connect_timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((st->connect_timeout_ms % 1000) * 1000);
    evtimer_add(st->ev_timer, &tv);
    /* libpq: before the first PQconnectPoll, wait as if it said WRITING */
    st->ev_conn = event_new(st->base, PQsocket(st->conn), EV_WRITE, on_conn_event, st);
    if (!st->ev_conn || event_add(st->ev_conn, NULL) != 0)
        conn_lost(st, "libevent failure watching the socket");
}

/* ------------------------------------------------------------------------ */
/* Stop                                                                     */
/* ------------------------------------------------------------------------ */

static void check_stop_done(pg_store *st)
{
    chatd_completion *done;
    if (!st->stopping || !st->stop_done) return;
    if (st->npending > 0 || st->f_head || st->q_head) return;
    done = st->stop_done;
    st->stop_done = NULL;
    evtimer_del(st->ev_stop);
    evtimer_del(st->ev_timer);
    event_del(st->ev_watch);
    conn_close(st);
    st->state = PG_STOPPED;
    st->api->complete(done, CHATD_OK, NULL);
}

static void on_stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    pg_store *st = arg;
    chatd_completion *done = st->stop_done;
    (void)fd;
    (void)what;
    if (!done) return;
    st->stop_done = NULL;
    LOG(st, CHATD_LOG_ERROR,
        "stopping: PostgreSQL did not commit %zu messages within %" PRId64
        " ms; they stay with the queue, which redelivers them at the next start",
        st->npending, st->stop_timeout_ms);
    evtimer_del(st->ev_timer);
    event_del(st->ev_watch);
    conn_close(st);
    st->state = PG_STOPPED;
    fail_requests(st, CHATD_ERR_UNAVAILABLE);
    fail_pending(st, CHATD_ERR_UNAVAILABLE, "store stopped before PostgreSQL committed it");
    st->api->complete(done, CHATD_ERR_UNAVAILABLE, "PostgreSQL did not commit in time");
}

/* ------------------------------------------------------------------------ */
/* Store hooks                                                              */
/* ------------------------------------------------------------------------ */

/* Queue request r (or fail it at once when the database is down). */
static void submit(pg_store *st, pg_req *r)
{
    if (st->stopping || st->state == PG_STOPPED || st->state == PG_IDLE || st->state == PG_DOWN ||
        (st->ever_ready && st->state != PG_READY) || st->nqueued >= PG_MAX_QUEUED_READS) {
        /* down, stopping, or the first connection is taking too many reads */
        req_fail_cb(st, r,
                    st->nqueued >= PG_MAX_QUEUED_READS ? CHATD_ERR_BUSY : CHATD_ERR_UNAVAILABLE);
        req_free(r);
        return;
    }
    list_push(&st->q_head, &st->q_tail, r);
    st->nqueued++;
    if (st->state == PG_READY) kick(st);
}

static chatd_status pg_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    pg_store *st = inst;
    chatd_msg_kind kind = st->api->msg_kind(msg);
    pg_pending *p;

    if (kind != CHATD_MSG_CHAT && kind != CHATD_MSG_READ) return CHATD_ERR_INVALID;
    if (st->stopping || st->state == PG_STOPPED || st->state == PG_IDLE)
        return CHATD_ERR_UNAVAILABLE;
    if (st->npending >= st->max_pending) {
        st->api->counter_add(st->ctx, "chatd_store_busy_total", 1);
        if (!st->busy_logged) {
            if (st->state != PG_READY)
                LOG(st, CHATD_LOG_ERROR,
                    "PostgreSQL is unavailable and %zu messages wait for it"
                    " (max_pending): refusing new messages until it is back",
                    st->npending);
            else
                LOG(st, CHATD_LOG_WARN,
                    "%zu messages wait for PostgreSQL (max_pending): refusing"
                    " new messages until it catches up",
                    st->npending);
            st->busy_logged = 1;
        }
        return CHATD_ERR_BUSY;
    }
    p = calloc(1, sizeof(*p));
    if (!p) return CHATD_ERR_NOMEM;
    p->msg = st->api->msg_ref(msg);
    p->done = done;
    if (st->p_tail)
        st->p_tail->next = p;
    else
        st->p_head = p;
    st->p_tail = p;
    st->npending++;
    if ((st->npending & 63) == 0 || st->state != PG_READY)
        st->api->gauge_set(st->ctx, "chatd_store_pending", (int64_t)st->npending);
    if (st->state == PG_READY) kick(st);
    return CHATD_ASYNC;
}

static char *dup_or_null(const char *s, int *oom)
{
    char *d;
    if (!s) return NULL;
    d = strdup(s);
    if (!d) *oom = 1;
    return d;
}

static void pg_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!m || !m->login_id || !m->name) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    r = req_new(REQ_MEMBER_CREATE, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->s[0] = dup_or_null(m->login_id, &oom);
    r->s[1] = dup_or_null(m->name, &oom);
    r->s[2] = dup_or_null(m->pw_hash, &oom);
    r->i[0] = m->created_ms ? m->created_ms : st->api->now_ms();
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    submit(st, r);
}

static void pg_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb,
                          void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r = req_new(REQ_MEMBER_GET, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->s[0] = dup_or_null(login_id, &oom);
    r->i[0] = id;
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    submit(st, r);
}

static void pg_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    pg_store *st = inst;
    pg_req *r = req_new(REQ_MEMBER_LIST, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    submit(st, r);
}

static void pg_session_put(void *inst, const chatd_session *s, chatd_status_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!s || !s->token_hash) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    r = req_new(REQ_SESSION_PUT, (void *)cb, arg);
    if (!r) {
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    r->s[0] = dup_or_null(s->token_hash, &oom);
    r->i[0] = s->member_id;
    r->i[1] = s->expires_ms;
    if (oom) {
        req_free(r);
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    submit(st, r);
}

static void pg_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!token_hash) {
        cb(arg, CHATD_ERR_INVALID, NULL);
        return;
    }
    r = req_new(REQ_SESSION_GET, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL);
        return;
    }
    r->s[0] = dup_or_null(token_hash, &oom);
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL);
        return;
    }
    submit(st, r);
}

static void pg_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!token_hash) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    r = req_new(REQ_SESSION_DEL, (void *)cb, arg);
    if (!r) {
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    r->s[0] = dup_or_null(token_hash, &oom);
    if (oom) {
        req_free(r);
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    submit(st, r);
}

static void pg_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    pg_store *st = inst;
    pg_req *r = req_new(REQ_ROOM_LIST, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->i[0] = member_id;
    submit(st, r);
}

static void pg_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                       chatd_history_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!room_id) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    r = req_new(REQ_HISTORY, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    r->s[0] = dup_or_null(room_id, &oom);
    r->i[0] = (before == 0 || before > (uint64_t)INT64_MAX) ? INT64_MAX : (int64_t)before;
    if (limit == 0) limit = PG_HISTORY_DEFAULT;
    if (limit > PG_HISTORY_MAX) limit = PG_HISTORY_MAX;
    r->i[1] = (int64_t)limit;
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    submit(st, r);
}

/* ------------------------------------------------------------------------ */
/* Plugin life cycle                                                        */
/* ------------------------------------------------------------------------ */

static const chatd_cfg_key pg_cfg_keys[] = {
    {"conninfo", CHATD_CFG_STRING, NULL, 0, 0,
     "libpq connection string, e.g. host=127.0.0.1 port=5432 dbname=chatd user=chatd (required)"},
    {"batch_max", CHATD_CFG_INT, "512", 1, PG_BATCH_MAX_LIMIT,
     "most messages written in one transaction"},
    {"max_pending", CHATD_CFG_INT, "100000", 1, 100000000,
     "uncommitted messages kept (e.g. while PostgreSQL is down) before persist refuses with busy"},
    {"reconnect_min_ms", CHATD_CFG_INT, "100", 10, 600000,
     "first delay before reconnecting after a failure (doubles each time)"},
    {"reconnect_max_ms", CHATD_CFG_INT, "5000", 10, 3600000,
     "longest delay between reconnection attempts"},
    {"connect_timeout_ms", CHATD_CFG_INT, "10000", 100, 600000,
     "give up a connection attempt after this long"},
    {"stop_timeout_ms", CHATD_CFG_INT, "10000", 0, 3600000,
     "at stop, wait this long for pending messages to commit"},
    {"query_timeout_ms", CHATD_CFG_INT, "30000", 0, 3600000,
     "drop and reopen the connection when a query waits longer than this (0: never)"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static chatd_status pg_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    pg_store *st;
    const char *conninfo = api->cfg_str(ctx, "conninfo");
    char *err = NULL;
    PQconninfoOption *opts;

    if (!conninfo || !*conninfo) {
        api->cfg_error(ctx, "conninfo",
                       "required: a libpq connection string such as"
                       " host=127.0.0.1 port=5432 dbname=chatd user=chatd");
        return CHATD_ERR_INVALID;
    }
    opts = PQconninfoParse(conninfo, &err);
    if (!opts) {
        char buf[PG_ERR_LEN];
        copy_err(buf, sizeof(buf), err ? err : "out of memory");
        api->cfg_error(ctx, "conninfo", "not a valid libpq connection string: %s", buf);
        PQfreemem(err);
        return CHATD_ERR_INVALID;
    }
    PQconninfoFree(opts);

    st = calloc(1, sizeof(*st));
    if (!st) return CHATD_ERR_NOMEM;
    st->api = api;
    st->ctx = ctx;
    st->conninfo = conninfo;
    st->base = api->event_base(ctx);
    st->batch_max = (size_t)api->cfg_int(ctx, "batch_max", 512);
    st->max_pending = (size_t)api->cfg_int(ctx, "max_pending", 100000);
    st->reconnect_min_ms = api->cfg_int(ctx, "reconnect_min_ms", 100);
    st->reconnect_max_ms = api->cfg_int(ctx, "reconnect_max_ms", 5000);
    st->connect_timeout_ms = api->cfg_int(ctx, "connect_timeout_ms", 10000);
    st->stop_timeout_ms = api->cfg_int(ctx, "stop_timeout_ms", 10000);
    st->query_timeout_ms = api->cfg_int(ctx, "query_timeout_ms", 30000);
    if (st->batch_max < 1 || st->batch_max > PG_BATCH_MAX_LIMIT) st->batch_max = 512;
    if (st->max_pending < 1) st->max_pending = 1;
    if (st->reconnect_min_ms < 1) st->reconnect_min_ms = 100;
    if (st->reconnect_max_ms < st->reconnect_min_ms) st->reconnect_max_ms = st->reconnect_min_ms;
    st->backoff_ms = st->reconnect_min_ms;
    if (!st->base) {
        LOG(st, CHATD_LOG_ERROR, "the core gave no event base; cannot run");
        free(st);
        return CHATD_ERR_INTERNAL;
    }
    st->ev_timer = evtimer_new(st->base, on_timer, st);
    st->ev_kick = event_new(st->base, -1, 0, on_kick, st);
    st->ev_stop = evtimer_new(st->base, on_stop_timeout, st);
    st->ev_watch = event_new(st->base, -1, EV_PERSIST, on_watch, st);
    if (!st->ev_timer || !st->ev_kick || !st->ev_stop || !st->ev_watch) {
        if (st->ev_timer) event_free(st->ev_timer);
        if (st->ev_kick) event_free(st->ev_kick);
        if (st->ev_stop) event_free(st->ev_stop);
        if (st->ev_watch) event_free(st->ev_watch);
        free(st);
        return CHATD_ERR_NOMEM;
    }
    st->state = PG_IDLE;
    *inst = st;
    return CHATD_OK;
}

static chatd_status pg_start(void *inst)
{
    pg_store *st = inst;
    struct timeval second = {1, 0};
    if (st->state != PG_IDLE) return CHATD_OK;
    if (st->query_timeout_ms > 0 && event_add(st->ev_watch, &second) != 0)
        LOG(st, CHATD_LOG_WARN,
            "could not arm the query watchdog (libevent); a server that"
            " stops answering will not be noticed");
    pg_connect(st); /* asynchronous; failures are retried with backoff */
    return CHATD_OK;
}

static chatd_status pg_stop(void *inst, chatd_completion *done)
{
    pg_store *st = inst;
    struct timeval tv;
    if (st->stopping) return CHATD_OK;
    st->stopping = 1;
    if (st->npending == 0 && !st->f_head && !st->q_head) {
        evtimer_del(st->ev_timer);
        event_del(st->ev_watch);
        conn_close(st);
        st->state = PG_STOPPED;
        return CHATD_OK;
    }
    LOG(st, CHATD_LOG_INFO, "stopping: committing %zu pending messages", st->npending);
    st->stop_done = done;
    tv.tv_sec = (time_t)(st->stop_timeout_ms / 1000);
    tv.tv_usec = (suseconds_t)((st->stop_timeout_ms % 1000) * 1000);
    evtimer_add(st->ev_stop, &tv);
    if (st->state == PG_READY) kick(st);
    return CHATD_ASYNC;
}

static void pg_destroy(void *inst)
{
    pg_store *st = inst;
    if (!st) return;
    conn_close(st);
    if (st->npending > 0)
        LOG(st, CHATD_LOG_WARN,
            "destroyed with %zu uncommitted messages; the queue redelivers"
            " them",
            st->npending);
    st->state = PG_STOPPED;
    fail_requests(st, CHATD_ERR_UNAVAILABLE);
    fail_pending(st, CHATD_ERR_UNAVAILABLE, "store destroyed before PostgreSQL committed it");
    if (st->stop_done) st->api->complete(st->stop_done, CHATD_ERR_UNAVAILABLE, "destroyed");
    event_free(st->ev_timer);
    event_free(st->ev_kick);
    event_free(st->ev_stop);
    event_free(st->ev_watch);
    free(st);
}

static const chatd_store_ops pg_ops = {
    .size = sizeof(chatd_store_ops),
    .persist = pg_persist,
    .member_create = pg_member_create,
    .member_get = pg_member_get,
    .member_list = pg_member_list,
    .session_put = pg_session_put,
    .session_get = pg_session_get,
    .session_del = pg_session_del,
    .room_list = pg_room_list,
    .history = pg_history,
};

static const chatd_plugin_desc pg_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-pg",
    .version = PG_VERSION_STR,
    .description = "PostgreSQL store (libpq, non-blocking, batched, survives outages)",
    .cfg_keys = pg_cfg_keys,
    .create = pg_create,
    .start = pg_start,
    .stop = pg_stop,
    .destroy = pg_destroy,
    .reload = NULL,
    .ops = &pg_ops,
};

CHATD_PLUGIN_DEFINE(pg_desc)
