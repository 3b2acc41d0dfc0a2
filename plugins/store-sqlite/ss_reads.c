/*
 * ss_reads.c - the reads of store-sqlite (member_get, member_list,
 * member_page, session_get, room_list, history, idem_get, replay,
 * side_replay, stream_heads; idem_recent in ss_idem.c). A hook (loop thread) checks its arguments
 * and hands the read to the reader thread (ss_reader.c), which runs its query here (ss_read_run) on
 * the second, query-only connection: rows are copied out of SQLite and messages built with msg_new
 * there. The answer goes back to the loop, where ss_read_answer calls the callback, which borrows
 * the rows and messages.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

const char *const ss_rsql[R_COUNT] = {
    [R_MEMBER_BY_ID] = "SELECT id, login_id, name, pw_hash, created_ms FROM members WHERE id = ?1",
    [R_MEMBER_BY_LOGIN] = "SELECT id, login_id, name, pw_hash, created_ms FROM members"
                          " WHERE login_id = ?1",
    [R_SESSION_GET] = "SELECT token_hash, member_id, expires_ms FROM sessions"
                      " WHERE token_hash = ?1",
    [R_ROOM_LIST] = "SELECT r.room_id, r.peer_id, m.login_id, m.name, r.last_msg_id,"
                    " r.last_message, r.last_ms, r.unread, r.last_read_id"
                    " FROM rooms r LEFT JOIN members m ON m.id = r.peer_id"
                    " WHERE r.member_id = ?1 ORDER BY r.last_ms DESC, r.last_pos DESC"
                    " LIMIT ?2",
    /* below the position of message ?2 (a message not stored: position ?2) */
    [R_HISTORY] = "SELECT id, writer_id, writer, text, time_ms, pos FROM messages"
                  " WHERE room_id = ?1 AND pos < coalesce((SELECT pos FROM messages"
                  "  WHERE id = ?2 AND room_id = ?1), ?2) ORDER BY pos DESC LIMIT ?3",
    [R_IDEM_GET] = "SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.text, m.time_ms, 0, m.pos"
                   " FROM idempotency i JOIN messages m ON m.id = i.msg_id"
                   " WHERE i.member_id = ?1 AND i.idem_key = ?2 AND i.time_ms >= ?3",
    /* replay: kind 1 chat, 2 read; columns id, kind, room, writer_id, writer, text, time, up_to,
     * position; a room by position, the side stream (which spans rooms, whose positions need
     * not compare) by id */
    [R_REPLAY_ROOM] =
        "SELECT id, 1, room_id, writer_id, writer, text, time_ms, 0, pos FROM messages"
        " WHERE room_id = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
    [R_REPLAY_SIDE] =
        "SELECT * FROM ("
        " SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.text, m.time_ms, 0,"
        " m.pos FROM rooms r JOIN messages m ON m.room_id = r.room_id"
        " WHERE r.member_id = ?1 AND m.id > ?2"
        " UNION ALL"
        " SELECT id, 2, room_id, member_id, writer, '', time_ms, up_to, pos FROM reads"
        " WHERE member_id = ?1 AND id > ?2)"
        " ORDER BY 1 LIMIT ?3",
    /* side_replay, one position range (?2, ?3] of member ?1's side stream: the CHAT messages
     * of the member's rooms (each room's first ?4 through messages_room_pos, so a page never
     * sorts more than rooms x ?4 rows) and the member's READ events (reads_member_pos) */
    [R_SIDE_RANGE] =
        "SELECT * FROM ("
        " SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.text, m.time_ms, 0, m.pos"
        " FROM rooms r JOIN messages m ON m.id IN (SELECT x.id FROM messages x"
        "  WHERE x.room_id = r.room_id AND x.pos > ?2 AND x.pos <= ?3 ORDER BY x.pos LIMIT ?4)"
        " WHERE r.member_id = ?1"
        " UNION ALL"
        " SELECT * FROM (SELECT id, 2, room_id, member_id, writer, '', time_ms, up_to, pos"
        "  FROM reads WHERE member_id = ?1 AND pos > ?2 AND pos <= ?3 ORDER BY pos LIMIT ?4))"
        " ORDER BY 9, 2, 1 LIMIT ?4",
    /* stream_heads: the highest position of each partitioned stream (?1: CHATD_POS_PARTITIONED,
     * ?2: CHATD_POS_STREAM_SHIFT); read once per node start, a scan of the messages */
    [R_STREAM_HEADS] =
        "SELECT max(pos) FROM messages WHERE pos >= ?1 GROUP BY pos >> ?2 ORDER BY 1",
    [R_IDEM_RECENT] = ss_sql_idem_recent,
    /* member_list, member_page: by id (the primary key); q= through the NOCASE indexes of
     * login_id and name (migration 5 -> 6), a LIKE pattern of the prefix */
    [R_MEMBER_PAGE] = "SELECT id, login_id, name, NULL, created_ms FROM members WHERE id > ?1"
                      " ORDER BY id LIMIT ?2",
    [R_MEMBER_PAGE_Q] = "SELECT id, login_id, name, NULL, created_ms FROM members WHERE id > ?1"
                        " AND (login_id LIKE ?3 ESCAPE '\\' OR name LIKE ?3 ESCAPE '\\')"
                        " ORDER BY id LIMIT ?2",
};

/* Grow *p (holding *cap items of `elem` bytes) to hold one more. 0: no memory. */
static int ss_grow(void **p, size_t *cap, size_t used, size_t elem)
{
    size_t ncap;
    void *grown;

    if (used < *cap) return 1;
    ncap = *cap ? *cap * 2 : 16;
    grown = realloc(*p, ncap * elem);
    if (!grown) return 0;
    *p = grown;
    *cap = ncap;
    return 1;
}

/* A new zeroed row at the end of l, or NULL (l->oom) when out of memory. */
static void *ss_list_add(ss_list *l)
{
    char *row;

    if (!ss_grow(&l->rows, &l->cap, l->n, l->elem)) {
        l->oom = 1;
        return NULL;
    }
    row = (char *)l->rows + l->n++ * l->elem;
    memset(row, 0, l->elem);
    return row;
}

/* Text of a column ("" for NULL): borrowed from the statement when copy is
 * NULL, else a copy (exact bytes) owned by copy (NULL and copy->oom when
 * out of memory). */
const char *ss_col(ss_list *copy, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);
    char *c;

    if (!copy) return t ? (const char *)t : "";
    if (!ss_grow((void **)&copy->strs, &copy->capstrs, copy->nstrs, sizeof(char *)) ||
        !(c = malloc(len + 1))) {
        copy->oom = 1;
        return NULL;
    }
    if (len) memcpy(c, t, len);
    c[len] = '\0';
    copy->strs[copy->nstrs++] = c;
    return c;
}

/* One members row (id, login_id, name, pw_hash, created_ms) as a record. */
static void ss_member_row(sqlite3_stmt *st, ss_list *copy, chatd_member *m)
{
    m->size = sizeof(*m);
    m->id = sqlite3_column_int64(st, 0);
    m->login_id = ss_col(copy, st, 1);
    m->name = ss_col(copy, st, 2);
    m->pw_hash = sqlite3_column_type(st, 3) == SQLITE_NULL ? NULL : ss_col(copy, st, 3);
    m->created_ms = sqlite3_column_int64(st, 4);
}

static void ss_rlog(ss *s, const char *what, int rc)
{
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "%s failed on %s: %s (sqlite %d); check the database file and its permissions",
                what, s->path, sqlite3_errmsg(s->rdb), rc);
}

sqlite3_stmt *ss_rstmt(ss *s, int which)
{
    sqlite3_stmt *st = s->r[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Step a bound list query to the end, one record per row by fill(). */
chatd_status ss_list_run(ss *s, sqlite3_stmt *st, ss_list *l, const char *what,
                         void (*fill)(sqlite3_stmt *st, ss_list *l, void *row))
{
    chatd_status status = CHATD_OK;
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        void *row = ss_list_add(l);
        if (row) fill(st, l, row);
        if (l->oom) {
            s->api->log(s->ctx, CHATD_LOG_ERROR, "out of memory %s", what);
            status = CHATD_ERR_NOMEM;
            break;
        }
    }
    if (status == CHATD_OK && rc != SQLITE_DONE) {
        ss_rlog(s, what, rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Queries (reader thread): each fills r->status and the answer             */
/* ------------------------------------------------------------------------ */

static void ss_member_fill(sqlite3_stmt *st, ss_list *l, void *row)
{
    ss_member_row(st, l, row);
}

static void ss_q_member_get(ss *s, ss_read *r)
{
    sqlite3_stmt *st;

    if (r->key) {
        st = ss_rstmt(s, R_MEMBER_BY_LOGIN);
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    } else {
        st = ss_rstmt(s, R_MEMBER_BY_ID);
        sqlite3_bind_int64(st, 1, r->id);
    }
    r->status = ss_list_run(s, st, &r->rows, "reading a member", ss_member_fill);
    if (r->status == CHATD_OK && r->rows.n == 0) r->status = CHATD_ERR_NOTFOUND;
}

/* member_list and member_page: members by id after r->id, at most r->limit,
 * matching the LIKE pattern r->key when there is one */
static void ss_q_members(ss *s, ss_read *r)
{
    sqlite3_stmt *st = ss_rstmt(s, r->key ? R_MEMBER_PAGE_Q : R_MEMBER_PAGE);

    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, r->limit);
    if (r->key) sqlite3_bind_text(st, 3, r->key, -1, SQLITE_STATIC);
    r->status = ss_list_run(s, st, &r->rows, "listing members", ss_member_fill);
    if (r->kind == READ_MEMBER_LIST && r->status == CHATD_OK && r->rows.n == r->limit)
        s->api->log(s->ctx, CHATD_LOG_WARN, "member list truncated to %u rows", r->limit);
}

static void ss_session_fill(sqlite3_stmt *st, ss_list *l, void *row)
{
    chatd_session *sess = row;

    sess->size = sizeof(*sess);
    sess->token_hash = ss_col(l, st, 0);
    sess->member_id = sqlite3_column_int64(st, 1);
    sess->expires_ms = sqlite3_column_int64(st, 2);
}

static void ss_q_session_get(ss *s, ss_read *r)
{
    sqlite3_stmt *st = ss_rstmt(s, R_SESSION_GET);

    sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    r->status = ss_list_run(s, st, &r->rows, "reading a session", ss_session_fill);
    if (r->status == CHATD_OK && r->rows.n == 0) r->status = CHATD_ERR_NOTFOUND;
}

/* One row of R_ROOM_LIST as a summary; member_id is set by the caller. */
static void ss_room_fill(sqlite3_stmt *st, ss_list *l, void *row)
{
    chatd_room_summary *r = row;

    r->size = sizeof(*r);
    r->room_id = ss_col(l, st, 0);
    r->peer_id = sqlite3_column_int64(st, 1);
    r->peer_login = ss_col(l, st, 2);
    r->peer_name = ss_col(l, st, 3);
    r->last_msg_id = (uint64_t)sqlite3_column_int64(st, 4);
    r->last_message = ss_col(l, st, 5);
    r->last_ms = sqlite3_column_int64(st, 6);
    r->unread = sqlite3_column_int64(st, 7);
    r->last_read_id = (uint64_t)sqlite3_column_int64(st, 8);
}

static void ss_q_room_list(ss *s, ss_read *r)
{
    sqlite3_stmt *st = ss_rstmt(s, R_ROOM_LIST);
    chatd_room_summary *rows;

    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, SS_ROOMS_MAX);
    r->status = ss_list_run(s, st, &r->rows, "listing rooms", ss_room_fill);
    rows = r->rows.rows;
    for (size_t i = 0; i < r->rows.n; i++)
        rows[i].member_id = r->id;
}

/* Room for the messages of a read of up to `limit` (r->msgs). */
static int ss_msgs_alloc(ss *s, ss_read *r, unsigned limit)
{
    r->msgs = calloc(limit ? limit : 1, sizeof(*r->msgs));
    if (r->msgs) return 1;
    s->api->log(s->ctx, CHATD_LOG_ERROR, "out of memory reading messages");
    r->status = CHATD_ERR_NOMEM;
    return 0;
}

static void ss_q_history(ss *s, ss_read *r)
{
    const chatd_api *api = s->api;
    sqlite3_stmt *st;
    int more = 0, rc = SQLITE_DONE;
    uint64_t before = r->pos;

    r->status = CHATD_OK;
    if (!ss_msgs_alloc(s, r, r->limit)) return;
    if (before == 0 || before > (uint64_t)INT64_MAX) before = (uint64_t)INT64_MAX;
    st = ss_rstmt(s, R_HISTORY);
    sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)before);
    sqlite3_bind_int64(st, 3, (int64_t)r->limit + 1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chatd_msg_fields f;
        if (r->nmsgs == r->limit) {
            more = 1;
            break;
        }
        memset(&f, 0, sizeof(f));
        f.size = sizeof(f);
        f.kind = CHATD_MSG_CHAT;
        f.id = (uint64_t)sqlite3_column_int64(st, 0);
        f.room_id = r->key;
        f.writer_id = sqlite3_column_int64(st, 1);
        f.writer = ss_col(NULL, st, 2);
        f.text = ss_col(NULL, st, 3);
        f.text_len = (size_t)sqlite3_column_bytes(st, 3);
        f.time_ms = sqlite3_column_int64(st, 4);
        f.pos = (uint64_t)sqlite3_column_int64(st, 5);
        r->msgs[r->nmsgs] = api->msg_new(s->ctx, &f);
        if (!r->msgs[r->nmsgs]) {
            api->log(s->ctx, CHATD_LOG_ERROR, "could not build message %" PRIu64 " of room %s",
                     f.id, r->key);
            r->status = CHATD_ERR_NOMEM;
            break;
        }
        r->nmsgs++;
    }
    if (r->status == CHATD_OK && !more && rc != SQLITE_DONE) {
        ss_rlog(s, "reading history", rc);
        r->status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    if (r->status != CHATD_OK) return;
    /* rows came newest first; deliver oldest first */
    for (size_t i = 0; i < r->nmsgs / 2; i++) {
        chatd_msg *t = r->msgs[i];
        r->msgs[i] = r->msgs[r->nmsgs - 1 - i];
        r->msgs[r->nmsgs - 1 - i] = t;
    }
    if (more && r->nmsgs > 0) r->next_before = api->msg_id(r->msgs[0]);
}

/* A message from a row of R_IDEM_GET / R_REPLAY_*: id, kind (1 chat, 2 read),
 * room, writer id, writer, text, time, up_to; `key` its idempotency key. */
static chatd_msg *ss_stream_msg(ss *s, sqlite3_stmt *st, const char *key)
{
    chatd_msg_fields f = {.size = sizeof(f), .idem_key = key};
    f.id = (uint64_t)sqlite3_column_int64(st, 0);
    f.kind = sqlite3_column_int(st, 1) == 2 ? CHATD_MSG_READ : CHATD_MSG_CHAT;
    f.room_id = ss_col(NULL, st, 2);
    f.writer_id = sqlite3_column_int64(st, 3);
    f.writer = ss_col(NULL, st, 4);
    f.text = ss_col(NULL, st, 5);
    f.text_len = (size_t)sqlite3_column_bytes(st, 5);
    f.time_ms = sqlite3_column_int64(st, 6);
    f.up_to = (uint64_t)sqlite3_column_int64(st, 7);
    f.pos = (uint64_t)sqlite3_column_int64(st, 8);
    chatd_msg *m = s->api->msg_new(s->ctx, &f);
    if (!m)
        s->api->log(s->ctx, CHATD_LOG_ERROR, "could not build message %" PRIu64 " (out of memory)",
                    f.id);
    return m;
}

static void ss_q_idem_get(ss *s, ss_read *r)
{
    sqlite3_stmt *st;
    int rc;

    r->status = CHATD_ERR_NOTFOUND;
    if (!ss_msgs_alloc(s, r, 1)) return;
    st = ss_rstmt(s, R_IDEM_GET);
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, r->since_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->msgs[0] = ss_stream_msg(s, st, r->key);
        r->nmsgs = r->msgs[0] ? 1 : 0;
        r->status = r->msgs[0] ? CHATD_OK : CHATD_ERR_NOMEM;
    } else if (rc != SQLITE_DONE) {
        ss_rlog(s, "looking up an idempotency key", rc);
        r->status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
}

/* Append the rows of the bound stream query st (ss_stream_msg's columns) to
 * r->msgs, up to r->limit in all; r->status tells how it went. */
static void ss_stream_rows(ss *s, ss_read *r, sqlite3_stmt *st)
{
    int rc = SQLITE_DONE;

    while (r->nmsgs < r->limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!(r->msgs[r->nmsgs] = ss_stream_msg(s, st, NULL))) {
            r->status = CHATD_ERR_NOMEM;
            break;
        }
        r->nmsgs++;
    }
    if (r->status == CHATD_OK && r->nmsgs < r->limit && rc != SQLITE_DONE) {
        ss_rlog(s, "reading messages to replay", rc);
        r->status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
}

static void ss_q_replay(ss *s, ss_read *r)
{
    sqlite3_stmt *st;

    r->status = CHATD_OK;
    if (!ss_msgs_alloc(s, r, r->limit)) return;
    st = ss_rstmt(s, r->key ? R_REPLAY_ROOM : R_REPLAY_SIDE);
    if (r->key)
        sqlite3_bind_text(st, 1, r->key, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, (int64_t)r->pos);
    sqlite3_bind_int64(st, 3, (int64_t)r->limit);
    ss_stream_rows(s, r, st);
}

/* The ranges are sorted and disjoint, so every position of range i is below
 * every position of range i + 1: by position is range by range, each one by
 * position, and the page is full once `limit` rows came. */
static void ss_q_side_replay(ss *s, ss_read *r)
{
    r->status = CHATD_OK;
    if (!ss_msgs_alloc(s, r, r->limit)) return;
    for (size_t i = 0; i < r->nranges && r->nmsgs < r->limit && r->status == CHATD_OK; i++) {
        sqlite3_stmt *st = ss_rstmt(s, R_SIDE_RANGE);
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_int64(st, 2, r->ranges[2 * i]);
        sqlite3_bind_int64(st, 3, r->ranges[2 * i + 1]);
        sqlite3_bind_int64(st, 4, (int64_t)(r->limit - r->nmsgs));
        ss_stream_rows(s, r, st);
    }
}

/* At most one head per stream: 2^(62 - CHATD_POS_STREAM_SHIFT) streams. */
static void ss_q_stream_heads(ss *s, ss_read *r)
{
    sqlite3_stmt *st = ss_rstmt(s, R_STREAM_HEADS);
    size_t cap = 0;
    int rc;

    r->status = CHATD_OK;
    sqlite3_bind_int64(st, 1, (int64_t)CHATD_POS_PARTITIONED);
    sqlite3_bind_int64(st, 2, CHATD_POS_STREAM_SHIFT);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (r->nranges == cap) {
            int64_t *p = realloc(r->ranges, (cap ? 2 * cap : 16) * sizeof(*p));
            if (!p) {
                r->status = CHATD_ERR_NOMEM;
                break;
            }
            r->ranges = p;
            cap = cap ? 2 * cap : 16;
        }
        r->ranges[r->nranges++] = sqlite3_column_int64(st, 0);
    }
    if (r->status == CHATD_OK && rc != SQLITE_DONE) {
        ss_rlog(s, "reading the head of each position stream", rc);
        r->status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
}

void ss_read_run(ss *s, ss_read *r)
{
    switch (r->kind) {
    case READ_MEMBER_GET:
        ss_q_member_get(s, r);
        return;
    case READ_MEMBER_LIST:
    case READ_MEMBER_PAGE:
        ss_q_members(s, r);
        return;
    case READ_SESSION_GET:
        ss_q_session_get(s, r);
        return;
    case READ_ROOM_LIST:
        ss_q_room_list(s, r);
        return;
    case READ_HISTORY:
        ss_q_history(s, r);
        return;
    case READ_IDEM_GET:
        ss_q_idem_get(s, r);
        return;
    case READ_REPLAY:
        ss_q_replay(s, r);
        return;
    case READ_SIDE_REPLAY:
        ss_q_side_replay(s, r);
        return;
    case READ_STREAM_HEADS:
        ss_q_stream_heads(s, r);
        return;
    case READ_IDEM_RECENT:
        ss_q_idem_recent(s, r);
        return;
    }
    r->status = CHATD_ERR_INTERNAL;
}

/* ------------------------------------------------------------------------ */
/* Loop side: the hooks and the answers                                     */
/* ------------------------------------------------------------------------ */

void ss_read_answer(ss_read *r)
{
    int ok = r->status == CHATD_OK;
    size_t n = ok ? r->rows.n : 0;

    switch (r->kind) {
    case READ_MEMBER_GET:
    case READ_MEMBER_LIST:
    case READ_MEMBER_PAGE:
        r->member_cb(r->arg, r->status, ok ? r->rows.rows : NULL, n);
        break;
    case READ_SESSION_GET:
        r->session_cb(r->arg, r->status, ok && n ? r->rows.rows : NULL);
        break;
    case READ_ROOM_LIST:
        r->rooms_cb(r->arg, r->status, ok ? r->rows.rows : NULL, n);
        break;
    case READ_HISTORY:
    case READ_IDEM_GET:
    case READ_REPLAY:
    case READ_SIDE_REPLAY:
        r->history_cb(r->arg, r->status, ok ? r->msgs : NULL, ok ? r->nmsgs : 0,
                      ok ? r->next_before : 0);
        for (size_t i = 0; i < r->nmsgs; i++)
            r->s->api->msg_unref(r->msgs[i]);
        r->nmsgs = 0;
        break;
    case READ_STREAM_HEADS:
        r->positions_cb(r->arg, r->status, ok ? (const uint64_t *)r->ranges : NULL,
                        ok ? r->nranges : 0);
        break;
    case READ_IDEM_RECENT:
        ss_idem_recent_answer(r);
        break;
    }
}

/* A new read of `kind` with a copy of key (may be NULL); NULL when out of
 * memory (the caller answers CHATD_ERR_NOMEM). */
ss_read *ss_read_new(ss *s, ss_read_kind kind, const char *key, size_t elem)
{
    ss_read *r = calloc(1, sizeof(*r));

    if (!r) return NULL;
    if (key && !(r->key = pc_strdup(key))) {
        free(r);
        return NULL;
    }
    r->s = s;
    r->kind = kind;
    r->rows.elem = elem;
    return r;
}

void ss_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!(r = ss_read_new(inst, READ_MEMBER_GET, login_id, sizeof(chatd_member)))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->id = id;
    r->member_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}

void ss_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!(r = ss_read_new(inst, READ_MEMBER_LIST, NULL, sizeof(chatd_member)))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->limit = SS_MEMBERS_MAX;
    r->member_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}

/* The LIKE pattern matching strings that start with prefix: its % _ and \
 * escaped with \, then %. NULL when out of memory. */
static char *ss_like_prefix(const char *prefix)
{
    size_t n = strlen(prefix);
    char *pat = malloc(2 * n + 2), *o = pat;
    if (!pat) return NULL;
    for (const char *p = prefix; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\') *o++ = '\\';
        *o++ = *p;
    }
    *o++ = '%';
    *o = '\0';
    return pat;
}

void ss_member_page(void *inst, int64_t after_id, const char *prefix, unsigned limit,
                    chatd_member_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!(r = ss_read_new(inst, READ_MEMBER_PAGE, NULL, sizeof(chatd_member))) ||
        (prefix && *prefix && !(r->key = ss_like_prefix(prefix)))) {
        if (r) ss_read_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->id = after_id;
    r->limit = limit;
    r->member_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}

void ss_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!token_hash) {
        cb(arg, CHATD_ERR_INVALID, NULL);
        return;
    }
    if (!(r = ss_read_new(inst, READ_SESSION_GET, token_hash, sizeof(chatd_session)))) {
        cb(arg, CHATD_ERR_NOMEM, NULL);
        return;
    }
    r->session_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}

void ss_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!(r = ss_read_new(inst, READ_ROOM_LIST, NULL, sizeof(chatd_room_summary)))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->id = member_id;
    r->rooms_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}

/* A message read (history, idem_get, replay) for cb, or NULL when out of
 * memory (cb told). */
static ss_read *ss_msgs_read(ss *s, ss_read_kind kind, const char *key, chatd_history_cb cb,
                             void *arg)
{
    ss_read *r = ss_read_new(s, kind, key, 0);

    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return NULL;
    }
    r->history_cb = cb;
    r->arg = arg;
    return r;
}

void ss_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                chatd_history_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!room_id) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!(r = ss_msgs_read(inst, READ_HISTORY, room_id, cb, arg))) return;
    r->pos = before;
    r->limit = pc_history_limit(limit);
    ss_read_submit(inst, r);
}

void ss_idem_get(void *inst, int64_t member_id, const char *key, int64_t since_ms,
                 chatd_history_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!key || member_id <= 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!(r = ss_msgs_read(inst, READ_IDEM_GET, key, cb, arg))) return;
    r->id = member_id;
    r->since_ms = since_ms;
    ss_read_submit(inst, r);
}

void ss_replay(void *inst, const char *room_id, int64_t member_id, uint64_t after, unsigned limit,
               chatd_history_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if ((!room_id && member_id <= 0) || after > (uint64_t)INT64_MAX) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!(r = ss_msgs_read(inst, READ_REPLAY, room_id, cb, arg))) return;
    r->id = member_id;
    r->pos = after;
    r->limit = pc_history_limit(limit);
    ss_read_submit(inst, r);
}

void ss_side_replay(void *inst, int64_t member_id, const uint64_t *after, const uint64_t *until,
                    size_t n, unsigned limit, chatd_history_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (member_id <= 0 || n == 0 || n > CHATD_POS_RANGES_MAX) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!(r = ss_msgs_read(inst, READ_SIDE_REPLAY, NULL, cb, arg))) return;
    if (!(r->ranges = malloc(2 * n * sizeof(*r->ranges)))) {
        ss_read_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    if (!pc_pos_ranges(after, until, n, r->ranges)) {
        ss_read_free(r);
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    r->nranges = n;
    r->id = member_id;
    r->limit = pc_history_limit(limit);
    ss_read_submit(inst, r);
}

void ss_stream_heads(void *inst, chatd_positions_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (!(r = ss_read_new(inst, READ_STREAM_HEADS, NULL, 0))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->positions_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}
