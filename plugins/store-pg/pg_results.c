/*
 * pg_results.c - the answers of store-pg's hook requests: the rows of a
 * request's kept result turned into the ABI's records (members, sessions,
 * room summaries, messages) for the caller's callback, and a failed
 * request's SQLSTATE turned into a status. Called from pg_conn.c when a
 * request's sync arrives (hook_finish) or when requests are failed at once
 * (req_fail_cb).
 */
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t parse_i64(const char *s)
{
    return s ? strtoll(s, NULL, 10) : 0;
}

static uint64_t parse_u64(const char *s)
{
    return s ? strtoull(s, NULL, 10) : 0;
}

/* Report a status with no rows to the caller of request r. */
void req_fail_cb(pg_store *st, pg_req *r, chatd_status status)
{
    switch (r->kind) {
    case REQ_MEMBER_CREATE:
    case REQ_MEMBER_GET:
    case REQ_MEMBER_LIST:
    case REQ_MEMBER_PAGE:
        ((chatd_member_cb)r->cb)(r->arg, status, NULL, 0);
        break;
    case REQ_SESSION_PUT:
    case REQ_SESSION_DEL:
    case REQ_DEAD_LETTER:
        if (r->cb) ((chatd_status_cb)r->cb)(r->arg, status);
        break;
    case REQ_SESSION_GET:
        ((chatd_session_cb)r->cb)(r->arg, status, NULL);
        break;
    case REQ_SESSION_PURGE:
        ((pg_purge_cb)r->cb)(r->arg, status, 0);
        break;
    case REQ_ROOM_LIST:
        ((chatd_rooms_cb)r->cb)(r->arg, status, NULL, 0);
        break;
    case REQ_HISTORY:
    case REQ_IDEM_GET:
    case REQ_REPLAY:
    case REQ_SIDE_REPLAY:
        ((chatd_history_cb)r->cb)(r->arg, status, NULL, 0, 0);
        break;
    case REQ_STREAM_HEADS:
        ((chatd_positions_cb)r->cb)(r->arg, status, NULL, 0);
        break;
    case REQ_IDEM_RECENT:
        ((pg_idem_recent_cb)r->cb)(r->arg, status, 0, NULL, 0, 0);
        break;
    case REQ_NODE_CLAIM:
        ((chatd_node_cb)r->cb)(r->arg, status, 0, 0, NULL);
        break;
    case REQ_IDEM_PURGE:
        purge_done(st, -1);
        break;
    case REQ_MIGRATE_CHECK:
    case REQ_MIGRATE_APPLY:
    case REQ_BATCH:
        break;
    }
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
    if (n == 0 && r->kind != REQ_MEMBER_LIST && r->kind != REQ_MEMBER_PAGE) {
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
        f.pos = parse_u64(PQgetvalue(res, row, 6));
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

/* A message from row `row` of REQ_IDEM_GET / REQ_REPLAY: id, kind (1 chat,
 * 2 read), room, writer id, writer, text, time, up_to, position; `key` its key. */
static chatd_msg *stream_msg(pg_store *st, PGresult *res, int row, const char *key)
{
    chatd_msg_fields f = {.size = sizeof(f), .idem_key = key};
    f.id = parse_u64(PQgetvalue(res, row, 0));
    f.kind = parse_i64(PQgetvalue(res, row, 1)) == 2 ? CHATD_MSG_READ : CHATD_MSG_CHAT;
    f.room_id = PQgetvalue(res, row, 2);
    f.writer_id = parse_i64(PQgetvalue(res, row, 3));
    f.writer = PQgetvalue(res, row, 4);
    f.text = PQgetvalue(res, row, 5);
    f.text_len = (size_t)PQgetlength(res, row, 5);
    f.time_ms = parse_i64(PQgetvalue(res, row, 6));
    f.up_to = parse_u64(PQgetvalue(res, row, 7));
    f.pos = parse_u64(PQgetvalue(res, row, 8));
    chatd_msg *m = st->api->msg_new(st->ctx, &f);
    if (!m)
        LOG(st, CHATD_LOG_ERROR, "could not rebuild message %" PRIu64 " from the database", f.id);
    return m;
}

/* The message an idempotency key names (one row), or NOTFOUND. */
static void deliver_idem(pg_store *st, pg_req *r)
{
    chatd_msg *m;
    if (!r->res || PQntuples(r->res) == 0) {
        ((chatd_history_cb)r->cb)(r->arg, CHATD_ERR_NOTFOUND, NULL, 0, 0);
    } else if (!(m = stream_msg(st, r->res, 0, r->s[0]))) {
        ((chatd_history_cb)r->cb)(r->arg, CHATD_ERR_INTERNAL, NULL, 0, 0);
    } else {
        ((chatd_history_cb)r->cb)(r->arg, CHATD_OK, &m, 1, 0);
        st->api->msg_unref(m);
    }
}

/* A replay page: chat messages and read events, oldest first. */
static void deliver_replay(pg_store *st, pg_req *r)
{
    PGresult *res = r->res;
    size_t n = res ? (size_t)PQntuples(res) : 0;
    chatd_msg **msgs = n ? calloc(n, sizeof(*msgs)) : NULL;
    size_t k = 0;
    if (n && !msgs) {
        ((chatd_history_cb)r->cb)(r->arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    while (k < n && (msgs[k] = stream_msg(st, res, (int)k, NULL)))
        k++;
    if (k == n)
        ((chatd_history_cb)r->cb)(r->arg, CHATD_OK, msgs, n, 0);
    else
        ((chatd_history_cb)r->cb)(r->arg, CHATD_ERR_INTERNAL, NULL, 0, 0);
    for (size_t j = 0; j < k; j++)
        st->api->msg_unref(msgs[j]);
    free(msgs);
}

/* A hook's request finished (its sync result arrived): tell its caller. */
void hook_finish(pg_store *st, pg_req *r)
{
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
    case REQ_MEMBER_PAGE:
        deliver_members(st, r, 0);
        break;
    case REQ_SESSION_PUT:
    case REQ_SESSION_DEL:
    case REQ_DEAD_LETTER:
        if (r->cb) ((chatd_status_cb)r->cb)(r->arg, CHATD_OK);
        break;
    case REQ_SESSION_PURGE:
        ((pg_purge_cb)r->cb)(r->arg, CHATD_OK, r->res ? parse_u64(PQcmdTuples(r->res)) : 0);
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
    case REQ_IDEM_GET:
        deliver_idem(st, r);
        break;
    case REQ_REPLAY:
    case REQ_SIDE_REPLAY:
        deliver_replay(st, r);
        break;
    case REQ_STREAM_HEADS:
        pg_deliver_heads(st, r);
        break;
    case REQ_IDEM_RECENT:
        pg_deliver_idem_recent(st, r);
        break;
    case REQ_NODE_CLAIM:
        if (!r->res || PQntuples(r->res) == 0)
            ((chatd_node_cb)r->cb)(r->arg, CHATD_ERR_EXISTS, 0, 0, NULL);
        else if (!PQgetisnull(r->res, 0, 2))
            ((chatd_node_cb)r->cb)(r->arg, CHATD_ERR_EXISTS, 0, 0, PQgetvalue(r->res, 0, 2));
        else
            ((chatd_node_cb)r->cb)(r->arg, CHATD_OK, (uint32_t)parse_u64(PQgetvalue(r->res, 0, 0)),
                                   parse_i64(PQgetvalue(r->res, 0, 1)), NULL);
        break;
    default:
        break;
    }
}
