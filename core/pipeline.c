/*
 * core/pipeline.c - the message path through the core:
 *
 *   publish: validate (size, UTF-8, rate, room membership) -> stamp id and
 *            time -> filters in config order (sync or ASYNC) -> queue
 *            enqueue -> the publisher's callback once the queue says durable.
 *   consume: (from the queue) persist in the store -> fan-out to every
 *            transport: chat to /sub/chat/room/{room} and both members'
 *            /sub/chat/side/{id}; read events to the reader's side only ->
 *            done(), so the queue may commit.
 *
 * Publishes in flight are bounded by max_pending (CHATD_ERR_BUSY beyond).
 * Each member has a token bucket of publish_rate per second, burst twice
 * that. Every callback runs on the loop thread.
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct bucket {
    int64_t member_id;
    double tokens;
    int64_t last_ms;
} bucket;

struct pipeline {
    core *core;
    chatd_ctx **filters, **transports;
    size_t nfilters, ntransports;
    size_t publishing, consuming;
    void *buckets; /* tsearch tree of bucket by member id */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_ms_f(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void collect(void *arg, chatd_ctx *ctx)
{
    chatd_ctx ***arr = arg;
    size_t n = 0;
    while ((*arr)[n])
        n++;
    (*arr)[n] = ctx;
}

pipeline *pipeline_new(core *c)
{
    pipeline *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->core = c;
    p->filters = calloc(c->ninst + 1, sizeof(*p->filters));
    p->transports = calloc(c->ninst + 1, sizeof(*p->transports));
    if (!p->filters || !p->transports) {
        pipeline_free(p);
        return NULL;
    }
    core_each(c, CHATD_KIND_FILTER, collect, &p->filters);
    core_each(c, CHATD_KIND_TRANSPORT, collect, &p->transports);
    while (p->filters[p->nfilters])
        p->nfilters++;
    while (p->transports[p->ntransports])
        p->ntransports++;
    return p;
}

void pipeline_free(pipeline *p)
{
    if (!p) return;
    tdestroy(p->buckets, free);
    free(p->filters);
    free(p->transports);
    free(p);
}

size_t pipeline_pending(const pipeline *p)
{
    return p->publishing + p->consuming;
}

static void count_error(core *c, chatd_status st)
{
    char inst[64];
    snprintf(inst, sizeof(inst), "core/%s", api_status_str(st));
    metrics_counter_add(c->metrics, "chatd_errors_total", inst, 1);
}

static void update_pending(pipeline *p)
{
    metrics_gauge_set(p->core->metrics, "chatd_pending_messages", "core",
                      (int64_t)(p->publishing + p->consuming));
}

static int by_member(const void *a, const void *b)
{
    const bucket *x = a, *y = b;
    return x->member_id < y->member_id ? -1 : x->member_id > y->member_id;
}

/* Token bucket: returns true when the member may publish now. */
static bool rate_ok(pipeline *p, int64_t member_id)
{
    int64_t rate = p->core->cfg->publish_rate;
    if (rate <= 0) return true;
    bucket key = {.member_id = member_id};
    bucket **found = tfind(&key, &p->buckets, by_member);
    bucket *b;
    int64_t now = mono_ms();
    double burst = 2.0 * (double)rate;
    if (found) {
        b = *found;
        b->tokens += (double)(now - b->last_ms) * (double)rate / 1000.0;
        if (b->tokens > burst) b->tokens = burst;
        b->last_ms = now;
    } else {
        b = malloc(sizeof(*b));
        if (!b) return false;
        *b = (bucket){.member_id = member_id, .tokens = burst, .last_ms = now};
        if (!tsearch(b, &p->buckets, by_member)) {
            free(b);
            return false;
        }
    }
    if (b->tokens < 1.0) return false;
    b->tokens -= 1.0;
    return true;
}

/* ------------------------------------------------------------- publish */

typedef struct pub_req {
    core *core;
    chatd_ctx *from;
    chatd_publish_cb cb;
    void *arg;
    chatd_msg_kind kind;
    int64_t writer_id;
    uint64_t up_to;
    char *text;
    size_t text_len;
    char room[48];
    chatd_msg *msg;
    size_t next_filter;
    double t0;
} pub_req;

static void pub_finish(pub_req *r, chatd_status st, const char *reason)
{
    pipeline *p = r->core->pipeline;
    p->publishing--;
    update_pending(p);
    if (r->msg) msg_set_mutable(r->msg, false);
    if (st == CHATD_OK) {
        metrics_counter_add(r->core->metrics, "chatd_messages_published_total", "core", 1);
        r->cb(r->arg, CHATD_OK, NULL, r->msg);
    } else {
        if (st != CHATD_REJECT)
            count_error(r->core, st);
        else
            metrics_counter_add(r->core->metrics, "chatd_messages_rejected_total", "core", 1);
        log_msg(CHATD_LOG_DEBUG, r->from->name,
                "publish by member %" PRId64 " to %s refused: %s (%s)", r->writer_id, r->room,
                api_status_str(st), reason ? reason : "-");
        r->cb(r->arg, st, reason ? reason : api_status_str(st), NULL);
    }
    msg_unref(r->msg);
    free(r->text);
    free(r);
}

static void pub_enqueued(void *arg, chatd_status st, const char *reason)
{
    pub_req *r = arg;
    metrics_observe(r->core->metrics, METRIC_HIST_QUEUE, mono_ms_f() - r->t0);
    /* health: a backend failure marks the queue down until it succeeds again */
    if (st == CHATD_OK)
        r->core->queue->failed = false;
    else if (st == CHATD_ERR_IO || st == CHATD_ERR_UNAVAILABLE)
        r->core->queue->failed = true;
    if (st != CHATD_OK)
        log_msg(CHATD_LOG_WARN, r->core->queue->name,
                "enqueue of message %" PRIu64 " failed: %s%s%s", msg_id(r->msg), api_status_str(st),
                reason ? ": " : "", reason ? reason : "");
    pub_finish(r, st, st == CHATD_OK ? NULL : (reason ? reason : "the queue failed"));
}

static void pub_enqueue(pub_req *r)
{
    core *c = r->core;
    msg_set_mutable(r->msg, false);
    if (!c->queue || !c->queue->started || c->state == CORE_STOPPED) {
        pub_finish(r, CHATD_ERR_UNAVAILABLE, "the queue is not running");
        return;
    }
    size_t len;
    if (!msg_json(r->msg, &len)) { /* encode once, before it is shared */
        pub_finish(r, CHATD_ERR_NOMEM, "out of memory");
        return;
    }
    r->t0 = mono_ms_f();
    chatd_completion *comp = completion_new(c, c->queue, pub_enqueued, r);
    chatd_status st = c->queue->plugin->ops.queue.enqueue(c->queue->inst, r->msg, comp);
    if (st == CHATD_ASYNC) return;
    completion_discard(comp);
    if (st == CHATD_OK) {
        pub_enqueued(r, CHATD_OK, NULL);
        return;
    }
    pub_finish(r, st == CHATD_REJECT ? CHATD_ERR_INTERNAL : st, "the queue refused the message");
}

static void pub_filters(pub_req *r);

static void pub_filtered(void *arg, chatd_status st, const char *reason)
{
    pub_req *r = arg;
    chatd_ctx *f = r->core->pipeline->filters[r->next_filter];
    if (st == CHATD_OK) {
        r->next_filter++;
        pub_filters(r);
        return;
    }
    char why[256];
    snprintf(why, sizeof(why), "%s by filter %s%s%s", st == CHATD_REJECT ? "rejected" : "failed",
             f->name, reason ? ": " : "", reason ? reason : "");
    pub_finish(r, st, why);
}

static void pub_filters(pub_req *r)
{
    pipeline *p = r->core->pipeline;
    while (r->next_filter < p->nfilters) {
        chatd_ctx *f = p->filters[r->next_filter];
        if (!f->started) {
            r->next_filter++;
            continue;
        }
        msg_set_mutable(r->msg, true);
        chatd_completion *comp = completion_new(r->core, f, pub_filtered, r);
        chatd_status st = f->plugin->ops.filter.filter(f->inst, r->msg, comp);
        if (st == CHATD_ASYNC) return;
        completion_discard(comp);
        msg_set_mutable(r->msg, false);
        if (st != CHATD_OK) {
            pub_filtered(r, st, NULL);
            return;
        }
        r->next_filter++;
    }
    pub_enqueue(r);
}

static void pub_writer(void *arg, chatd_status st, const member_entry *m)
{
    pub_req *r = arg;
    if (st != CHATD_OK) {
        pub_finish(r, st, "unknown writer");
        return;
    }
    core *c = r->core;
    chatd_msg_fields f = {
        .size = sizeof(f),
        .kind = r->kind,
        .id = ids_next(&c->ids, wall_ms()),
        .room_id = r->room,
        .writer_id = r->writer_id,
        .writer = m->login_id,
        .text = r->text ? r->text : "",
        .text_len = r->text_len,
        .up_to = r->up_to,
    };
    f.time_ms = ids_time_ms(f.id); /* the id's time, so both always agree */
    st = msg_create(&f, &r->msg);
    if (st != CHATD_OK) {
        pub_finish(r, st, "cannot build the message");
        return;
    }
    pub_filters(r);
}

static void pub_room(void *arg, chatd_status st, const char *room, int64_t peer)
{
    (void)peer;
    pub_req *r = arg;
    if (st != CHATD_OK) {
        pub_finish(r, st,
                   st == CHATD_ERR_FORBIDDEN  ? "you are not a member of this room"
                   : st == CHATD_ERR_NOTFOUND ? "no such member in this room"
                   : st == CHATD_ERR_INVALID  ? "malformed room id (expected \"a&b\")"
                                              : "room check failed");
        return;
    }
    snprintf(r->room, sizeof(r->room), "%s", room);
    members_get(r->core, r->writer_id, pub_writer, r);
}

void pipeline_publish(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg)
{
    core *c = ctx->core;
    pipeline *p = c->pipeline;
    chatd_status st = CHATD_OK;
    const char *why = NULL;
    if (!cb) return;
    if (c->state != CORE_RUNNING) {
        st = CHATD_ERR_UNAVAILABLE;
        why = "chatd is stopping";
    } else if (!f || f->size < offsetof(chatd_msg_fields, up_to) + sizeof(f->up_to)) {
        st = CHATD_ERR_INVALID;
        why = "bad fields record";
    } else if (f->kind != CHATD_MSG_CHAT && f->kind != CHATD_MSG_READ) {
        st = CHATD_ERR_INVALID;
        why = "unknown message type";
    } else if (f->writer_id <= 0 || !f->room_id) {
        st = CHATD_ERR_INVALID;
        why = "missing writer or room";
    } else if (f->kind == CHATD_MSG_CHAT && (!f->text || f->text_len == 0)) {
        st = CHATD_ERR_INVALID;
        why = "empty message";
    } else if (f->kind == CHATD_MSG_CHAT && f->text_len > (size_t)c->cfg->max_message_bytes) {
        st = CHATD_ERR_INVALID;
        why = "message too long";
    } else if (f->kind == CHATD_MSG_CHAT && !utf8_valid(f->text, f->text_len)) {
        st = CHATD_ERR_INVALID;
        why = "message is not valid UTF-8";
    } else if (f->kind == CHATD_MSG_READ && f->up_to == 0) {
        st = CHATD_ERR_INVALID;
        why = "read event without upTo";
    } else if (p->publishing >= (size_t)c->cfg->max_pending) {
        st = CHATD_ERR_BUSY;
        why = "too many messages in flight, retry later";
    } else if (!rate_ok(p, f->writer_id)) {
        st = CHATD_ERR_BUSY;
        why = "publish rate exceeded, slow down";
    }
    if (st != CHATD_OK) {
        if (st != CHATD_ERR_INVALID || c->state == CORE_RUNNING) count_error(c, st);
        cb(arg, st, why, NULL);
        return;
    }
    pub_req *r = calloc(1, sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, "out of memory", NULL);
        return;
    }
    r->core = c;
    r->from = ctx;
    r->cb = cb;
    r->arg = arg;
    r->kind = f->kind;
    r->writer_id = f->writer_id;
    r->up_to = f->kind == CHATD_MSG_READ ? f->up_to : 0;
    snprintf(r->room, sizeof(r->room), "%.41s", f->room_id);
    if (f->kind == CHATD_MSG_CHAT) {
        r->text = malloc(f->text_len + 1);
        if (!r->text) {
            free(r);
            cb(arg, CHATD_ERR_NOMEM, "out of memory", NULL);
            return;
        }
        memcpy(r->text, f->text, f->text_len);
        r->text[f->text_len] = '\0';
        r->text_len = f->text_len;
    }
    p->publishing++;
    update_pending(p);
    members_room_check(c, f->writer_id, f->room_id, pub_room, r);
}

/* ------------------------------------------------------------- consume */

typedef struct con_req {
    core *core;
    chatd_ctx *from;
    chatd_msg *msg;
    unsigned flags;
    chatd_status_cb done;
    void *arg;
    double t0;
} con_req;

static void con_finish(con_req *r, chatd_status st)
{
    pipeline *p = r->core->pipeline;
    p->consuming--;
    update_pending(p);
    if (st != CHATD_OK) count_error(r->core, st);
    if (r->done) r->done(r->arg, st);
    msg_unref(r->msg);
    free(r);
}

static void deliver_all(pipeline *p, const char *dest, chatd_msg *msg)
{
    for (size_t i = 0; i < p->ntransports; i++) {
        chatd_ctx *t = p->transports[i];
        if (t->started) t->plugin->ops.transport.deliver(t->inst, dest, msg);
    }
    metrics_counter_add(p->core->metrics, "chatd_deliveries_total", "core", p->ntransports);
}

static void fan_out(pipeline *p, chatd_msg *msg)
{
    char dest[96];
    int64_t low, high;
    if (room_parse(msg_room(msg), &low, &high) != 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "message %" PRIu64 " has a malformed room id; not delivered",
                msg_id(msg));
        return;
    }
    if (msg_kind(msg) == CHATD_MSG_CHAT) {
        snprintf(dest, sizeof(dest), "/sub/chat/room/%s", msg_room(msg));
        deliver_all(p, dest, msg);
        snprintf(dest, sizeof(dest), "/sub/chat/side/%" PRId64, low);
        deliver_all(p, dest, msg);
        snprintf(dest, sizeof(dest), "/sub/chat/side/%" PRId64, high);
        deliver_all(p, dest, msg);
    } else {
        snprintf(dest, sizeof(dest), "/sub/chat/side/%" PRId64, msg_writer_id(msg));
        deliver_all(p, dest, msg);
    }
    metrics_counter_add(p->core->metrics, "chatd_messages_fanned_out_total", "core", 1);
}

static void con_persisted(void *arg, chatd_status st, const char *reason)
{
    con_req *r = arg;
    core *c = r->core;
    metrics_observe(c->metrics, METRIC_HIST_STORE, mono_ms_f() - r->t0);
    if (st == CHATD_OK)
        c->store->failed = false;
    else if (st == CHATD_ERR_IO || st == CHATD_ERR_UNAVAILABLE)
        c->store->failed = true;
    if (st != CHATD_OK) {
        log_msg(st == CHATD_ERR_BUSY ? CHATD_LOG_DEBUG : CHATD_LOG_WARN, c->store->name,
                "persist of message %" PRIu64 " failed: %s%s%s (the queue will redeliver)",
                msg_id(r->msg), api_status_str(st), reason ? ": " : "", reason ? reason : "");
        con_finish(r, st);
        return;
    }
    metrics_counter_add(c->metrics, "chatd_messages_persisted_total", "core", 1);
    if (r->flags & CHATD_CONSUME_FANOUT) fan_out(c->pipeline, r->msg);
    con_finish(r, CHATD_OK);
}

void pipeline_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                      void *arg)
{
    core *c = ctx->core;
    pipeline *p = c->pipeline;
    if (ctx->kind != CHATD_KIND_QUEUE) {
        log_msg(CHATD_LOG_ERROR, ctx->name, "consume() is for queue plugins; ignored");
        if (done) done(arg, CHATD_ERR_INVALID);
        return;
    }
    if (!msg || msg_id(msg) == 0 ||
        (flags & ~(unsigned)(CHATD_CONSUME_PERSIST | CHATD_CONSUME_FANOUT))) {
        log_msg(CHATD_LOG_ERROR, ctx->name, "consume() with %s; ignored",
                msg ? "unknown flags or a message without id" : "no message");
        if (done) done(arg, CHATD_ERR_INVALID);
        return;
    }
    if (c->state == CORE_STOPPED) {
        if (done) done(arg, CHATD_ERR_UNAVAILABLE);
        return;
    }
    con_req *r = calloc(1, sizeof(*r));
    if (!r) {
        if (done) done(arg, CHATD_ERR_NOMEM);
        return;
    }
    *r = (con_req){
        .core = c, .from = ctx, .msg = msg_ref(msg), .flags = flags, .done = done, .arg = arg};
    p->consuming++;
    update_pending(p);
    if (!(flags & CHATD_CONSUME_PERSIST)) {
        if (flags & CHATD_CONSUME_FANOUT) fan_out(p, msg);
        con_finish(r, CHATD_OK);
        return;
    }
    if (!c->store || !c->store->started) {
        con_finish(r, CHATD_ERR_UNAVAILABLE);
        return;
    }
    r->t0 = mono_ms_f();
    chatd_completion *comp = completion_new(c, c->store, con_persisted, r);
    chatd_status st = c->store->plugin->ops.store.persist(c->store->inst, msg, comp);
    if (st == CHATD_ASYNC) return;
    completion_discard(comp);
    if (st == CHATD_OK) {
        con_persisted(r, CHATD_OK, NULL);
        return;
    }
    con_persisted(r, st == CHATD_REJECT ? CHATD_ERR_INVALID : st, "refused by the store");
}
