/*
 * store_pg.c - store-pg, the PostgreSQL store plugin of chatd (libpq, never
 * blocking): the store hooks, configuration, start/stop/destroy and the
 * descriptor. The connection is in pg_conn.c, the SQL in pg_sql.c, the
 * message batches in pg_batch.c, the hooks' answers in pg_results.c, the
 * side stream's replay by position ranges in pg_side.c.
 *
 * One connection, not two (one for writes, one for reads): reads are
 * pipelined on the same connection and the server answers them in order, so
 * a read waits at most for the batch sent before it (a few ms); in exchange
 * there is one reconnect path, one migration, and reads see every batch
 * committed before them.
 *
 * While PostgreSQL is down, persist keeps messages up to max_pending (then
 * CHATD_ERR_BUSY) and commits them once back; reads fail with
 * CHATD_ERR_UNAVAILABLE (reads made while the first connection is being set
 * up wait for it, up to PG_MAX_QUEUED_READS).
 */
#include "config.h"

#include "pg.h"

#include <event2/event.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Stop                                                                     */
/* ------------------------------------------------------------------------ */

void check_stop_done(pg_store *st)
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

void req_submit(pg_store *st, pg_req *r)
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

/* A copy of s (NULL stays NULL); sets *oom when out of memory. */
static char *dup_or_null(const char *s, int *oom)
{
    char *d = pc_strdup(s);
    if (s && !d) *oom = 1;
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
    req_submit(st, r);
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
    req_submit(st, r);
}

static void pg_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    pg_store *st = inst;
    pg_req *r = req_new(REQ_MEMBER_LIST, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    req_submit(st, r);
}

/* The LIKE pattern (backslash is PostgreSQL's LIKE escape) of the strings
 * whose PG_FOLD starts with prefix: ASCII letters lowered, % _ \ escaped,
 * then %. NULL when out of memory. */
static char *like_prefix(const char *prefix)
{
    char *pat = malloc(2 * strlen(prefix) + 2), *o = pat;
    if (!pat) return NULL;
    for (; *prefix; prefix++) {
        char ch = *prefix >= 'A' && *prefix <= 'Z' ? (char)(*prefix - 'A' + 'a') : *prefix;
        if (ch == '%' || ch == '_' || ch == '\\') *o++ = '\\';
        *o++ = ch;
    }
    o[0] = '%';
    o[1] = '\0';
    return pat;
}

static void pg_member_page(void *inst, int64_t after_id, const char *prefix, unsigned limit,
                           chatd_member_cb cb, void *arg)
{
    pg_store *st = inst;
    pg_req *r = req_new(REQ_MEMBER_PAGE, (void *)cb, arg);
    if (!r || (prefix && *prefix && !(r->s[0] = like_prefix(prefix)))) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->i[0] = after_id;
    r->i[1] = limit;
    req_submit(st, r);
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
    req_submit(st, r);
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
    req_submit(st, r);
}

static void pg_session_purge(void *inst, int64_t now_ms, pg_purge_cb cb, void *arg)
{
    pg_req *r = req_new(REQ_SESSION_PURGE, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, 0);
        return;
    }
    r->i[0] = now_ms;
    req_submit(inst, r);
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
    req_submit(st, r);
}

static void pg_dead_letter(void *inst, const char *source, const void *payload, size_t len,
                           const char *reason, chatd_status_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!source || !reason || (len && !payload) || len > INT32_MAX) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    r = req_new(REQ_DEAD_LETTER, (void *)cb, arg);
    if (!r) {
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    r->s[0] = dup_or_null(source, &oom);
    r->s[1] = dup_or_null(reason, &oom);
    r->s[2] = malloc(len ? len : 1); /* bytes, sent in binary format */
    if (r->s[2] && len) memcpy(r->s[2], payload, len);
    r->i[0] = (int64_t)len;
    r->i[1] = st->api->now_ms();
    if (oom || !r->s[2]) {
        req_free(r);
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    req_submit(st, r);
}

static void pg_node_claim(void *inst, uint32_t node_id, const char *holder, int64_t lease_ms,
                          int64_t high_water_ms, chatd_node_cb cb, void *arg)
{
    pg_store *st = inst;
    char hw[24];
    int oom = 0;
    pg_req *r;
    if (!holder || !*holder || lease_ms <= 0 || (node_id > 1023 && node_id != CHATD_NODE_AUTO)) {
        cb(arg, CHATD_ERR_INVALID, 0, 0, NULL);
        return;
    }
    r = req_new(REQ_NODE_CLAIM, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, 0, 0, NULL);
        return;
    }
    snprintf(hw, sizeof(hw), "%" PRId64, high_water_ms);
    r->s[0] = dup_or_null(holder, &oom);
    r->s[1] = dup_or_null(hw, &oom);
    r->s[2] = NULL;
    r->i[0] = node_id == CHATD_NODE_AUTO ? -1 : (int64_t)node_id;
    r->i[1] = st->api->now_ms();
    r->i[2] = lease_ms;
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, 0, 0, NULL);
        return;
    }
    req_submit(st, r);
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
    req_submit(st, r);
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
    r->i[1] = (int64_t)pc_history_limit(limit);
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    req_submit(st, r);
}

static void pg_idem_get(void *inst, int64_t member_id, const char *key, int64_t since_ms,
                        chatd_history_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if (!key || member_id <= 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    r = req_new(REQ_IDEM_GET, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    r->s[0] = dup_or_null(key, &oom);
    r->i[0] = member_id;
    r->i[1] = since_ms;
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    req_submit(st, r);
}

static void pg_replay(void *inst, const char *room_id, int64_t member_id, uint64_t after,
                      unsigned limit, chatd_history_cb cb, void *arg)
{
    pg_store *st = inst;
    int oom = 0;
    pg_req *r;
    if ((!room_id && member_id <= 0) || after > (uint64_t)INT64_MAX) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    r = req_new(REQ_REPLAY, (void *)cb, arg);
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    r->s[0] = room_id ? dup_or_null(room_id, &oom) : NULL;
    r->i[0] = member_id;
    r->i[1] = (int64_t)after;
    r->i[2] = (int64_t)pc_history_limit(limit);
    if (oom) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    req_submit(st, r);
}

/* ------------------------------------------------------------------------ */
/* Plugin life cycle                                                        */
/* ------------------------------------------------------------------------ */

/* The only place the defaults are written; the core range-checks values. */
static const chatd_cfg_key pg_cfg_keys[] = {
    {.name = "conninfo",
     .type = CHATD_CFG_STRING,
     .help = "libpq connection string, e.g. host=127.0.0.1 port=5432 dbname=chatd user=chatd "
             "(required)"},
    {.name = "batch_max",
     .type = CHATD_CFG_INT,
     .default_value = "512",
     .min = 1,
     .max = PG_BATCH_MAX_LIMIT,
     .help = "most messages written in one transaction"},
    {.name = "max_pending",
     .type = CHATD_CFG_INT,
     .default_value = "100000",
     .min = 1,
     .max = 100000000,
     .help = "uncommitted messages kept (e.g. while PostgreSQL is down) before persist refuses "
             "with busy"},
    {.name = "reconnect_min_ms",
     .type = CHATD_CFG_INT,
     .default_value = "100",
     .min = 10,
     .max = 600000,
     .help = "first delay before reconnecting after a failure (doubles each time)"},
    {.name = "reconnect_max_ms",
     .type = CHATD_CFG_INT,
     .default_value = "5000",
     .min = 10,
     .max = 3600000,
     .help = "longest delay between reconnection attempts"},
    {.name = "connect_timeout_ms",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 100,
     .max = 600000,
     .help = "give up a connection attempt after this long"},
    {.name = "stop_timeout_ms",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 0,
     .max = 3600000,
     .help = "at stop, wait this long for pending messages to commit"},
    {.name = "query_timeout_ms",
     .type = CHATD_CFG_INT,
     .default_value = "30000",
     .min = 0,
     .max = 3600000,
     .help = "drop and reopen the connection when a query waits longer than this (0: never)"},
    {.name = "idem_purge_interval_s",
     .type = CHATD_CFG_INT,
     .default_value = "60",
     .min = 0,
     .max = 86400,
     .help = "how often expired idempotency keys are deleted, in the background (0: never)"},
    {.name = "idem_purge_batch",
     .type = CHATD_CFG_INT,
     .default_value = "1000",
     .min = 1,
     .max = 1000000,
     .help = "most expired idempotency keys one background delete removes"},
    {.name = "allow_unsafe_durability",
     .type = CHATD_CFG_BOOL,
     .default_value = "false",
     .help = "accept a PostgreSQL with fsync or synchronous_commit off (a RECEIPT may then "
             "precede durability: throw-away test databases only)"},
    {.name = NULL},
};

static chatd_status pg_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    pg_store *st;
    const char *conninfo;
    char *err = NULL;
    PQconninfoOption *opts;

    if (!pc_api_ok(api, ctx)) return CHATD_ERR_INVALID;
    conninfo = api->cfg_str(ctx, "conninfo");
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
    st->batch_max = (size_t)pc_cfg_int(api, ctx, "batch_max");
    st->max_pending = (size_t)pc_cfg_int(api, ctx, "max_pending");
    st->idem_window_ms = api->core_limit(ctx, "idempotency_window") * 1000;
    st->reconnect_min_ms = pc_cfg_int(api, ctx, "reconnect_min_ms");
    st->reconnect_max_ms = pc_cfg_int(api, ctx, "reconnect_max_ms");
    st->connect_timeout_ms = pc_cfg_int(api, ctx, "connect_timeout_ms");
    st->stop_timeout_ms = pc_cfg_int(api, ctx, "stop_timeout_ms");
    st->query_timeout_ms = pc_cfg_int(api, ctx, "query_timeout_ms");
    st->allow_unsafe = pc_cfg_bool(api, ctx, "allow_unsafe_durability");
    st->purge_every_ms = pc_cfg_int(api, ctx, "idem_purge_interval_s") * 1000;
    st->purge_batch = pc_cfg_int(api, ctx, "idem_purge_batch");
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
    st->ev_purge = evtimer_new(st->base, on_purge, st);
    if (!st->ev_timer || !st->ev_kick || !st->ev_stop || !st->ev_watch || !st->ev_purge) {
        if (st->ev_timer) event_free(st->ev_timer);
        if (st->ev_kick) event_free(st->ev_kick);
        if (st->ev_stop) event_free(st->ev_stop);
        if (st->ev_watch) event_free(st->ev_watch);
        if (st->ev_purge) event_free(st->ev_purge);
        free(st);
        return CHATD_ERR_NOMEM;
    }
    st->state = PG_IDLE;
    *inst = st;
    return CHATD_OK;
}

int pg_durability_refused(pg_store *st, const char *fsync, const char *sync_commit)
{
    const char *what = NULL;

    if (!fsync || strcmp(fsync, "on") != 0)
        what = "fsync is off: a crash of the server's host can lose commits that were"
               " acknowledged; set fsync = on in postgresql.conf and reload PostgreSQL";
    else if (!sync_commit || strcmp(sync_commit, "off") == 0)
        what = "synchronous_commit is off: a commit is acknowledged before its WAL is on disk;"
               " set synchronous_commit = on (postgresql.conf, or ALTER ROLE ... SET"
               " synchronous_commit = on for chatd's role)";
    if (!what) return 0;
    if (st->allow_unsafe) {
        if (!st->unsafe_logged)
            LOG(st, CHATD_LOG_WARN,
                "PostgreSQL %s; accepted because allow_unsafe_durability = true: a RECEIPT"
                " may precede durability (use this for tests only)",
                what);
        st->unsafe_logged = 1;
        return 0;
    }
    LOG(st, CHATD_LOG_ERROR,
        "refusing this PostgreSQL, a RECEIPT could precede durability: %s (or set"
        " allow_unsafe_durability = true in [%s] for a throw-away test database)",
        what, st->api->instance_name(st->ctx));
    return 1;
}

/* Before serving anyone: when PostgreSQL can be reached, refuse to start on
 * one whose settings could acknowledge a message before it is durable. The
 * one blocking connection of this plugin (bounded by connect_timeout_ms),
 * made at start-up like store-sqlite's open; a server that cannot be reached
 * now is checked at each connection instead. 0: go on, -1: refuse. */
static int pg_start_check(pg_store *st)
{
    char secs[24];
    const char *keys[] = {"dbname", "connect_timeout", NULL};
    const char *vals[] = {st->conninfo, secs, NULL};
    PGconn *c;
    PGresult *res;
    int refused = 0;

    /* libpq waits whole seconds, at least 2 */
    snprintf(secs, sizeof(secs), "%" PRId64,
             st->connect_timeout_ms < 2000 ? 2 : (st->connect_timeout_ms + 999) / 1000);
    c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        char buf[PG_ERR_LEN];
        copy_err(buf, sizeof(buf), c ? PQerrorMessage(c) : "out of memory");
        LOG(st, CHATD_LOG_WARN,
            "PostgreSQL is not reachable at start (%s); starting anyway: messages wait for it"
            " and its settings are checked when it connects",
            buf);
        PQfinish(c);
        return 0;
    }
    res = PQexec(c, "SELECT " PG_DURABILITY_COLS);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
        refused = pg_durability_refused(st, PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1));
    PQclear(res);
    PQfinish(c);
    return refused ? -1 : 0;
}

static chatd_status pg_start(void *inst)
{
    pg_store *st = inst;
    struct timeval second = {1, 0};
    if (st->state != PG_IDLE) return CHATD_OK;
    if (pg_start_check(st) != 0) return CHATD_ERR_INVALID;
    if (st->query_timeout_ms > 0 && event_add(st->ev_watch, &second) != 0)
        LOG(st, CHATD_LOG_WARN,
            "could not arm the query watchdog (libevent); a server that"
            " stops answering will not be noticed");
    if (st->purge_every_ms > 0) {
        struct timeval first = {.tv_sec = (time_t)(st->purge_every_ms / 1000)};
        if (evtimer_add(st->ev_purge, &first) != 0)
            LOG(st, CHATD_LOG_WARN, "could not arm the idempotency purge timer (libevent)");
    }
    pg_connect(st); /* asynchronous; failures are retried with backoff */
    return CHATD_OK;
}

static chatd_status pg_stop(void *inst, chatd_completion *done)
{
    pg_store *st = inst;
    struct timeval tv;
    if (st->stopping) return CHATD_OK;
    st->stopping = 1;
    evtimer_del(st->ev_purge);
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
    event_free(st->ev_purge);
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
    .session_purge = pg_session_purge,
    .room_list = pg_room_list,
    .history = pg_history,
    .idem_get = pg_idem_get,
    .replay = pg_replay,
    .dead_letter = pg_dead_letter,
    .node_claim = pg_node_claim,
    .member_page = pg_member_page,
    .side_replay = pg_side_replay,
    .stream_heads = pg_stream_heads,
    .idem_recent = pg_idem_recent,
};

static const chatd_plugin_desc pg_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-pg",
    .version = PACKAGE_VERSION,
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
