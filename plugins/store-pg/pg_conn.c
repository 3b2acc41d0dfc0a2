/*
 * pg_conn.c - the connection of store-pg: one libpq connection in
 * non-blocking pipeline mode, driven by libevent events on PQsocket().
 *   - connecting: PQconnectStart + PQconnectPoll on socket readiness, with a
 *     connect timeout; then the schema check and migration (pg_sql.c);
 *   - requests are sent as prepared statements (pg_sql.c prepares each one
 *     once per connection, in the pipeline ahead of its first use) followed
 *     by PQpipelineSync;
 *     results are read with PQconsumeInput/PQisBusy/PQgetResult when the
 *     socket is readable, in the order sent, and each request is finished at
 *     its sync; PQflush runs when the socket is writable;
 *   - when the connection is lost (or a query waits longer than
 *     query_timeout_ms: a silent server): log it, fail the reads with
 *     CHATD_ERR_UNAVAILABLE, keep every uncommitted message (pg_batch.c
 *     sends them again: the insert is idempotent by id) and reconnect with
 *     exponential backoff.
 */
#include "pg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libpq error texts end with a newline; keep one line. */
void copy_err(char *dst, size_t cap, const char *src)
{
    size_t n;
    if (!src || !*src) src = "unknown error";
    n = strcspn(src, "\n");
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

const char *conn_err(pg_store *st, char *buf, size_t cap)
{
    copy_err(buf, cap, st->conn ? PQerrorMessage(st->conn) : "no connection");
    return buf;
}

pg_req *req_new(pg_req_kind kind, void *cb, void *arg)
{
    pg_req *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->main_q = -1;
    return r;
}

void req_free(pg_req *r)
{
    if (!r) return;
    if (r->res) PQclear(r->res);
    for (size_t k = 0; k < 3; k++)
        free(r->s[k]);
    free(r);
}

void list_push(pg_req **head, pg_req **tail, pg_req *r)
{
    r->next = NULL;
    if (*tail)
        (*tail)->next = r;
    else
        *head = r;
    *tail = r;
}

pg_req *list_pop(pg_req **head, pg_req **tail)
{
    pg_req *r = *head;
    if (!r) return NULL;
    *head = r->next;
    if (!*head) *tail = NULL;
    r->next = NULL;
    return r;
}

void conn_close(pg_store *st)
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
    st->nstmts = 0; /* prepared statements die with their connection */
}

/* Fail every request not yet answered (sent or not) with `status`; the
 * batch in flight only gives its messages back to the pending list. */
void fail_requests(pg_store *st, chatd_status status)
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
void conn_lost(pg_store *st, const char *what)
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

void on_timer(evutil_socket_t fd, short what, void *arg)
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
void on_watch(evutil_socket_t fd, short what, void *arg)
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

void on_kick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    pump(arg);
}

void kick(pg_store *st)
{
    event_active(st->ev_kick, EV_TIMEOUT, 0);
}

/* ------------------------------------------------------------------------ */

void flush_out(pg_store *st)
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

/* Send r now and track it; on failure the connection is dropped (which also
 * fails or requeues r). Returns 0 when the connection is gone. */
int send_tracked(pg_store *st, pg_req *r)
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

static void go_ready(pg_store *st)
{
    st->state = PG_READY;
    st->backoff_ms = st->reconnect_min_ms;
    st->failures = 0;
    pc_busy_reset(&st->busy);
    if (!st->ever_ready)
        LOG(st, CHATD_LOG_INFO, "connected to PostgreSQL (server %d, schema version %d)",
            PQserverVersion(st->conn), PG_SCHEMA_VERSION);
    else
        LOG(st, CHATD_LOG_WARN, "PostgreSQL is back; committing %zu pending messages",
            st->npending);
    st->ever_ready = 1;
}

static void req_finish(pg_store *st, pg_req *r)
{
    if (r->failed) stmts_forget(st, r);
    if (r->kind == REQ_IDEM_PURGE) {
        if (r->failed)
            LOG(st, CHATD_LOG_WARN, "deleting expired idempotency keys failed: %s%s%s", r->err,
                r->sqlstate[0] ? ", SQLSTATE " : "", r->sqlstate);
        purge_done(st, r->failed || !r->res ? -1 : parse_i64(PQcmdTuples(r->res)));
        return;
    }
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
            if (!r->res ||
                pg_durability_refused(st, PQgetvalue(r->res, 0, 1), PQgetvalue(r->res, 0, 2))) {
                conn_lost(st, "its durability settings are refused (see the error above)");
                return;
            }
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
    hook_finish(st, r);
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
        /* the result of a prepare sent ahead of a query, or of a query */
        int prep = r->nprep_seen < r->nprep && r->prep_at[r->nprep_seen] == r->npos;
        r->npos++;
        if (prep && s != PGRES_COMMAND_OK) r->prep_failed |= 1u << r->nprep_seen;
        if (prep) r->nprep_seen++;
        if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
            if (!prep && r->nres == r->main_q && !r->res) {
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
        if (!prep) r->nres++;
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

void pg_connect(pg_store *st)
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
