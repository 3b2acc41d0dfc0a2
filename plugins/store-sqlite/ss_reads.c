/*
 * ss_reads.c - the reads of store-sqlite (member_get, member_list, member_page,
 * session_get, room_list, history). They run on the loop thread with the
 * second, query-only connection: WAL lets it read committed data without
 * waiting for the writer thread, and its busy timeout is capped at
 * SS_READER_BUSY_MAX_MS so that a lock held by another process never stalls
 * the loop for long. Rows are copied out of SQLite before the callback, which
 * borrows them.
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
                    " WHERE r.member_id = ?1 ORDER BY r.last_ms DESC, r.last_msg_id DESC"
                    " LIMIT ?2",
    [R_HISTORY] = "SELECT id, writer_id, writer, text, time_ms FROM messages"
                  " WHERE room_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
    [R_IDEM_GET] = "SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.text, m.time_ms, 0"
                   " FROM idempotency i JOIN messages m ON m.id = i.msg_id"
                   " WHERE i.member_id = ?1 AND i.idem_key = ?2 AND i.time_ms >= ?3",
    /* replay: kind 1 chat, 2 read; columns id, kind, room, writer_id, writer, text, time, up_to */
    [R_REPLAY_ROOM] = "SELECT id, 1, room_id, writer_id, writer, text, time_ms, 0 FROM messages"
                      " WHERE room_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [R_REPLAY_SIDE] = "SELECT * FROM ("
                      " SELECT m.id, 1, m.room_id, m.writer_id, m.writer, m.text, m.time_ms, 0"
                      " FROM rooms r JOIN messages m ON m.room_id = r.room_id"
                      " WHERE r.member_id = ?1 AND m.id > ?2"
                      " UNION ALL"
                      " SELECT id, 2, room_id, member_id, writer, '', time_ms, up_to FROM reads"
                      " WHERE member_id = ?1 AND id > ?2)"
                      " ORDER BY 1 LIMIT ?3",
    /* member_list, member_page: by id (the primary key); q= through the NOCASE indexes of
     * login_id and name (migration 5 -> 6), a LIKE pattern of the prefix */
    [R_MEMBER_PAGE] = "SELECT id, login_id, name, NULL, created_ms FROM members WHERE id > ?1"
                      " ORDER BY id LIMIT ?2",
    [R_MEMBER_PAGE_Q] = "SELECT id, login_id, name, NULL, created_ms FROM members WHERE id > ?1"
                        " AND (login_id LIKE ?3 ESCAPE '\\' OR name LIKE ?3 ESCAPE '\\')"
                        " ORDER BY id LIMIT ?2",
};

/*
 * A list result being built: rows of `elem` bytes (each starting with its
 * size field) and the strings they point to, copies freed together.
 */
typedef struct ss_list {
    void *rows;
    size_t n, cap, elem;
    char **strs;
    size_t nstrs, capstrs;
    int oom;
} ss_list;

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

static void ss_list_free(ss_list *l)
{
    for (size_t i = 0; i < l->nstrs; i++)
        free(l->strs[i]);
    free(l->strs);
    free(l->rows);
}

/* Text of a column ("" for NULL): borrowed from the statement when copy is
 * NULL, else a copy (exact bytes) owned by copy (NULL and copy->oom when
 * out of memory). */
static const char *ss_col(ss_list *copy, sqlite3_stmt *st, int col)
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

static sqlite3_stmt *ss_rstmt(ss *s, int which)
{
    sqlite3_stmt *st = s->r[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Step a bound list query to the end, one record per row by fill(). */
static chatd_status ss_list_run(ss *s, sqlite3_stmt *st, ss_list *l, const char *what,
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

void ss_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb, void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_member m;
    int rc;

    if (!cb) return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    if (login_id) {
        st = ss_rstmt(s, R_MEMBER_BY_LOGIN);
        sqlite3_bind_text(st, 1, login_id, -1, SQLITE_STATIC);
    } else {
        st = ss_rstmt(s, R_MEMBER_BY_ID);
        sqlite3_bind_int64(st, 1, id);
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(&m, 0, sizeof(m));
        ss_member_row(st, NULL, &m);
        cb(arg, CHATD_OK, &m, 1);
    } else if (rc == SQLITE_DONE) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL, 0);
    } else {
        ss_rlog(s, "reading a member", rc);
        cb(arg, CHATD_ERR_IO, NULL, 0);
    }
    sqlite3_reset(st);
}

static void ss_member_fill(sqlite3_stmt *st, ss_list *l, void *row)
{
    ss_member_row(st, l, row);
}

/* A page of members by id (after_id, LIKE pattern pat or NULL, at most
 * limit) to cb; `list`: member_list, which warns when it is cut short. */
static void ss_members_read(ss *s, int64_t after_id, const char *pat, unsigned limit, int list,
                            chatd_member_cb cb, void *arg)
{
    ss_list l = {.elem = sizeof(chatd_member)};
    sqlite3_stmt *st = ss_rstmt(s, pat ? R_MEMBER_PAGE_Q : R_MEMBER_PAGE);
    sqlite3_bind_int64(st, 1, after_id);
    sqlite3_bind_int64(st, 2, limit);
    if (pat) sqlite3_bind_text(st, 3, pat, -1, SQLITE_STATIC);
    chatd_status status = ss_list_run(s, st, &l, "listing members", ss_member_fill);
    sqlite3_clear_bindings(st);
    if (list && status == CHATD_OK && l.n == limit)
        s->api->log(s->ctx, CHATD_LOG_WARN, "member list truncated to %u rows", limit);
    cb(arg, status, status == CHATD_OK ? l.rows : NULL, status == CHATD_OK ? l.n : 0);
    ss_list_free(&l);
}

void ss_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    ss *s = inst;
    if (!cb) return;
    if (!s->rdb)
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
    else
        ss_members_read(s, 0, NULL, SS_MEMBERS_MAX, 1, cb, arg);
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
    ss *s = inst;
    char *pat = NULL;
    if (!cb) return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
    } else if (prefix && *prefix && !(pat = ss_like_prefix(prefix))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
    } else {
        ss_members_read(s, after_id, pat, limit, 0, cb, arg);
        free(pat);
    }
}

void ss_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_session sess;
    int rc;

    if (!cb) return;
    if (!token_hash) {
        cb(arg, CHATD_ERR_INVALID, NULL);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL);
        return;
    }
    st = ss_rstmt(s, R_SESSION_GET);
    sqlite3_bind_text(st, 1, token_hash, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(&sess, 0, sizeof(sess));
        sess.size = sizeof(sess);
        sess.token_hash = ss_col(NULL, st, 0);
        sess.member_id = sqlite3_column_int64(st, 1);
        sess.expires_ms = sqlite3_column_int64(st, 2);
        cb(arg, CHATD_OK, &sess);
    } else if (rc == SQLITE_DONE) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL);
    } else {
        ss_rlog(s, "reading a session", rc);
        cb(arg, CHATD_ERR_IO, NULL);
    }
    sqlite3_reset(st);
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

void ss_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    ss *s = inst;
    ss_list l = {.elem = sizeof(chatd_room_summary)};
    chatd_room_summary *rows;
    sqlite3_stmt *st;
    chatd_status status;

    if (!cb) return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    st = ss_rstmt(s, R_ROOM_LIST);
    sqlite3_bind_int64(st, 1, member_id);
    sqlite3_bind_int64(st, 2, SS_ROOMS_MAX);
    status = ss_list_run(s, st, &l, "listing rooms", ss_room_fill);
    rows = l.rows;
    for (size_t i = 0; i < l.n; i++)
        rows[i].member_id = member_id;
    cb(arg, status, status == CHATD_OK ? rows : NULL, status == CHATD_OK ? l.n : 0);
    ss_list_free(&l);
}

void ss_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                chatd_history_cb cb, void *arg)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    sqlite3_stmt *st;
    chatd_msg *msgs[PC_HISTORY_MAX];
    size_t n = 0, i;
    int more = 0, rc;
    chatd_status status = CHATD_OK;
    uint64_t next = 0;

    if (!cb) return;
    if (!room_id) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    limit = pc_history_limit(limit);
    if (before == 0 || before > (uint64_t)INT64_MAX) before = (uint64_t)INT64_MAX;

    st = ss_rstmt(s, R_HISTORY);
    sqlite3_bind_text(st, 1, room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)before);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chatd_msg_fields f;
        if (n == limit) {
            more = 1;
            break;
        }
        memset(&f, 0, sizeof(f));
        f.size = sizeof(f);
        f.kind = CHATD_MSG_CHAT;
        f.id = (uint64_t)sqlite3_column_int64(st, 0);
        f.room_id = room_id;
        f.writer_id = sqlite3_column_int64(st, 1);
        f.writer = ss_col(NULL, st, 2);
        f.text = ss_col(NULL, st, 3);
        f.text_len = (size_t)sqlite3_column_bytes(st, 3);
        f.time_ms = sqlite3_column_int64(st, 4);
        msgs[n] = api->msg_new(s->ctx, &f);
        if (!msgs[n]) {
            api->log(s->ctx, CHATD_LOG_ERROR, "could not build message %" PRIu64 " of room %s",
                     f.id, room_id);
            status = CHATD_ERR_NOMEM;
            break;
        }
        n++;
    }
    if (status == CHATD_OK && !more && rc != SQLITE_DONE) {
        ss_rlog(s, "reading history", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    if (status != CHATD_OK) {
        for (i = 0; i < n; i++)
            api->msg_unref(msgs[i]);
        cb(arg, status, NULL, 0, 0);
        return;
    }
    /* rows came newest first; deliver oldest first */
    for (i = 0; i < n / 2; i++) {
        chatd_msg *t = msgs[i];
        msgs[i] = msgs[n - 1 - i];
        msgs[n - 1 - i] = t;
    }
    if (more && n > 0) next = api->msg_id(msgs[0]);
    cb(arg, CHATD_OK, msgs, n, next);
    for (i = 0; i < n; i++)
        api->msg_unref(msgs[i]);
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
    chatd_msg *m = s->api->msg_new(s->ctx, &f);
    if (!m)
        s->api->log(s->ctx, CHATD_LOG_ERROR, "could not build message %" PRIu64 " (out of memory)",
                    f.id);
    return m;
}

void ss_idem_get(void *inst, int64_t member_id, const char *key, int64_t since_ms,
                 chatd_history_cb cb, void *arg)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    sqlite3_stmt *st;
    chatd_msg *msg = NULL;
    chatd_status status = CHATD_ERR_NOTFOUND;
    int rc;

    if (!cb) return;
    if (!key || member_id <= 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    st = ss_rstmt(s, R_IDEM_GET);
    sqlite3_bind_int64(st, 1, member_id);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, since_ms);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        msg = ss_stream_msg(s, st, key);
        status = msg ? CHATD_OK : CHATD_ERR_NOMEM;
    } else if (rc != SQLITE_DONE) {
        ss_rlog(s, "looking up an idempotency key", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    cb(arg, status, msg ? &msg : NULL, msg ? 1 : 0, 0);
    if (msg) api->msg_unref(msg);
}

void ss_replay(void *inst, const char *room_id, int64_t member_id, uint64_t after, unsigned limit,
               chatd_history_cb cb, void *arg)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    sqlite3_stmt *st;
    chatd_msg *msgs[PC_HISTORY_MAX];
    size_t n = 0, i;
    int rc;
    chatd_status status = CHATD_OK;

    if (!cb) return;
    if ((!room_id && member_id <= 0) || after > (uint64_t)INT64_MAX) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    limit = pc_history_limit(limit);
    st = ss_rstmt(s, room_id ? R_REPLAY_ROOM : R_REPLAY_SIDE);
    if (room_id)
        sqlite3_bind_text(st, 1, room_id, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(st, 1, member_id);
    sqlite3_bind_int64(st, 2, (int64_t)after);
    sqlite3_bind_int64(st, 3, (int64_t)limit);
    while (n < limit && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!(msgs[n] = ss_stream_msg(s, st, NULL))) {
            status = CHATD_ERR_NOMEM;
            break;
        }
        n++;
    }
    if (status == CHATD_OK && n < limit && rc != SQLITE_DONE) {
        ss_rlog(s, "reading messages to replay", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    if (status == CHATD_OK) cb(arg, CHATD_OK, msgs, n, 0);
    for (i = 0; i < n; i++)
        api->msg_unref(msgs[i]);
    if (status != CHATD_OK) cb(arg, status, NULL, 0, 0);
}
