/*
 * core/pipeline.c - the message path through the core, in the order a
 * message takes it (read it top-down):
 *
 *   publish  pipeline_publish: validate (size, UTF-8, bound, rate) -> room
 *            check, which also hands on the writer's member entry -> stamp
 *            id and time (pub_build)
 *   filters  pub_filters: every started filter in config order, sync or ASYNC
 *   enqueue  pub_enqueue: the queue makes it durable -> pub_enqueued ->
 *            pub_finish calls the publisher's callback (the transport sends
 *            the RECEIPT from it)
 *   consume  pipeline_consume: the queue hands the message back
 *   persist  the store commits it -> con_persisted
 *   fan-out  fan_out: CHAT to the room's destination and both members' side
 *            destinations, READ to the reader's side only -> con_finish
 *            calls done(), so the queue may commit its offset.
 *
 * Where the RECEIPT goes out relative to fan-out depends on the queue:
 *   queue-local  completes the enqueue with the status of its consume(), so
 *                persist and fan-out (deliver to every transport) come first
 *                and the publisher's callback, hence the RECEIPT, last.
 *   queue-kafka  completes the enqueue at the broker's delivery report, held
 *                until the store has committed the message on partitions this
 *                node persists; its fan-out consumer delivers independently,
 *                so the RECEIPT and the MESSAGE frames may come in either
 *                order, both after the message is persisted.
 *
 * Publishes in flight are bounded by max_pending (CHATD_ERR_BUSY beyond).
 * Each member has a token bucket of publish_rate per second, burst twice
 * that. Out of memory fails the one message (see core.h). Every function
 * and callback here runs on the loop thread.
 */
#include "config.h"

#include "core.h"

#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------- declarations */

/* A member's publish token bucket. */
typedef struct bucket {
    int64_t member_id;
    double tokens;
    double last_ms; /* monotonic */
} bucket;

struct pipeline {
    core *core;
    chatd_ctx **filters, **transports;
    size_t nfilters, ntransports;
    size_t publishing, consuming;
    void *buckets; /* tsearch tree of bucket by member id */
};

/* One publish, from pipeline_publish to pub_finish. */
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
    char room[CHATD_ROOM_ID_MAX]; /* as given (logs), then canonical */
    chatd_msg *msg;
    size_t next_filter;
    double t0;
    char *idem_key;     /* the sender's idempotency key, NULL when none */
    idem_entry *idem;   /* in-flight registration of (writer_id, idem_key) */
    char *writer_login; /* kept while the store looks the key up */
    bool replayed;      /* answered by the original of its idempotency key */
} pub_req;

/* One consume, from pipeline_consume to con_finish. */
typedef struct con_req {
    core *core;
    chatd_ctx *from;
    chatd_msg *msg;
    unsigned flags;
    chatd_status_cb done;
    void *arg;
    double t0;
} con_req;

/* publish */
static void room_copy(char *dst, const char *room);
static const char *pub_refusal(const pipeline *p, const chatd_msg_fields *f, chatd_status *st);
static bool rate_ok(pipeline *p, int64_t member_id);
static void pub_room(void *arg, chatd_status st, const char *room, int64_t peer,
                     const member_entry *writer);
static void pub_idem_looked(void *arg, chatd_status st, chatd_msg *orig);
static void pub_build(pub_req *r, const member_entry *writer);
/* filters */
static void pub_filters(pub_req *r);
static void pub_filtered(void *arg, chatd_status st, const char *reason);
/* enqueue */
static void pub_enqueue(pub_req *r);
static void pub_enqueued(void *arg, chatd_status st, const char *reason);
static void pub_settled(void *arg, chatd_status st, chatd_msg *first);
static void pub_finish(pub_req *r, chatd_status st, const char *reason);
/* consume, persist */
static void con_persist(con_req *r);
static void con_persisted(void *arg, chatd_status st, const char *reason);
/* fan-out */
static void fan_out(pipeline *p, chatd_msg *msg);
static void deliver_all(pipeline *p, const char *dest, chatd_msg *msg);
static void con_finish(con_req *r, chatd_status st);
/* bookkeeping */
static void count_error(core *c, chatd_status st);
static void update_pending(pipeline *p);

/* --------------------------------------------------------------- publish */

void pipeline_publish(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg)
{
    core *c = ctx->core;
    pipeline *p = c->pipeline;
    if (!cb) return;
    chatd_status st = CHATD_OK;
    const char *why = pub_refusal(p, f, &st);
    const char *key = !why && f->kind == CHATD_MSG_CHAT &&
                              f->size >= offsetof(chatd_msg_fields, idem_key) + sizeof(f->idem_key)
                          ? f->idem_key
                          : NULL;
    if (!why && !rate_ok(p, f->writer_id)) {
        st = CHATD_ERR_BUSY;
        why = "publish rate exceeded, slow down";
    }
    if (why) {
        if (st != CHATD_ERR_INVALID || c->state == CORE_RUNNING) count_error(c, st);
        cb(arg, st, why, NULL);
        return;
    }
    /* the same key in flight on this node: answered with its outcome */
    if (key && idem_join(c, f->writer_id, key, cb, arg)) return;
    pub_req *r = calloc(1, sizeof(*r));
    if (r && key &&
        (!(r->idem_key = strdup(key)) || !(r->idem = idem_begin(c, f->writer_id, key)))) {
        free(r->idem_key);
        free(r);
        r = NULL;
    }
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
    room_copy(r->room, f->room_id);
    if (f->kind == CHATD_MSG_CHAT) {
        r->text = malloc(f->text_len + 1);
        if (!r->text) {
            idem_end(c, r->idem, CHATD_ERR_NOMEM, "out of memory", NULL);
            free(r->idem_key);
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
    members_room_check_entry(c, f->writer_id, f->room_id, pub_room, r);
}

/* A room id into a pub_req's room (cut as snprintf would cut it). */
static void room_copy(char *dst, const char *room)
{
    size_t n = strnlen(room, CHATD_ROOM_ID_MAX - 1);
    memcpy(dst, room, n);
    dst[n] = '\0';
}

/* Why a publish is refused before any work (status in *st), or NULL. */
static const char *pub_refusal(const pipeline *p, const chatd_msg_fields *f, chatd_status *st)
{
    const core *c = p->core;
    *st = CHATD_ERR_INVALID;
    if (c->state != CORE_RUNNING) {
        *st = CHATD_ERR_UNAVAILABLE;
        return "chatd is stopping";
    }
    if (!f || f->size < offsetof(chatd_msg_fields, up_to) + sizeof(f->up_to))
        return "bad fields record";
    if (f->kind != CHATD_MSG_CHAT && f->kind != CHATD_MSG_READ) return "unknown message type";
    if (f->writer_id <= 0 || !f->room_id) return "missing writer or room";
    if (f->kind == CHATD_MSG_CHAT) {
        if (!f->text || f->text_len == 0) return "empty message";
        if (f->text_len > (size_t)c->cfg->max_message_bytes) return "message too long";
        if (!utf8_valid(f->text, f->text_len)) return "message is not valid UTF-8";
    }
    if (f->kind == CHATD_MSG_READ && f->up_to == 0) return "read event without upTo";
    if (f->kind == CHATD_MSG_CHAT &&
        f->size >= offsetof(chatd_msg_fields, idem_key) + sizeof(f->idem_key) && f->idem_key &&
        !idem_key_valid(f->idem_key))
        return "malformed idempotency key (1 to 128 visible ASCII characters)";
    if (p->publishing >= (size_t)c->cfg->max_pending) {
        *st = CHATD_ERR_BUSY;
        return "too many messages in flight, retry later";
    }
    *st = CHATD_OK;
    return NULL;
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
    double now = clock_mono_ms();
    double burst = 2.0 * (double)rate;
    if (found) {
        b = *found;
        b->tokens += (now - b->last_ms) * (double)rate / 1000.0;
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

/* The room check answered: go on with the writer's entry it found. */
static void pub_room(void *arg, chatd_status st, const char *room, int64_t peer,
                     const member_entry *writer)
{
    (void)peer;
    pub_req *r = arg;
    if (st != CHATD_OK) {
        pub_finish(r, st, room_refusal(st));
        return;
    }
    room_copy(r->room, room);
    if (r->idem) {
        if (!(r->writer_login = strdup(writer->login_id))) {
            pub_finish(r, CHATD_ERR_NOMEM, "out of memory");
            return;
        }
        idem_lookup(r->core, r->writer_id, r->idem_key, clock_wall_ms(), pub_idem_looked, r);
        return;
    }
    pub_build(r, writer);
}

/* The store's answer for the idempotency key: the original, or go on. */
static void pub_idem_looked(void *arg, chatd_status st, chatd_msg *orig)
{
    pub_req *r = arg;
    if (st == CHATD_OK) {
        r->msg = msg_ref(orig);
        r->replayed = true;
        pub_finish(r, CHATD_ERR_EXISTS, IDEM_REPLAY_REASON);
    } else if (st == CHATD_ERR_NOTFOUND) {
        member_entry writer = {.id = r->writer_id, .login_id = r->writer_login};
        pub_build(r, &writer);
    } else {
        pub_finish(r, st,
                   st == CHATD_ERR_NOMEM ? "out of memory"
                                         : "cannot check the idempotency key now, retry later");
    }
}

/* Stamp id and time and build the message, then run the filters. */
static void pub_build(pub_req *r, const member_entry *writer)
{
    core *c = r->core;
    chatd_msg_fields f = {
        .size = sizeof(f),
        .kind = r->kind,
        .id = ids_next(&c->ids, clock_wall_ms()),
        .room_id = r->room,
        .writer_id = r->writer_id,
        .writer = writer->login_id,
        .text = r->text ? r->text : "",
        .text_len = r->text_len,
        .up_to = r->up_to,
        .idem_key = r->idem_key,
    };
    f.time_ms = ids_time_ms(f.id); /* the id's time, so both always agree */
    chatd_status st = msg_create(&f, &r->msg);
    if (st != CHATD_OK) {
        pub_finish(r, st, st == CHATD_ERR_NOMEM ? "out of memory" : "cannot build the message");
        return;
    }
    pub_filters(r);
}

/* --------------------------------------------------------------- filters */

static void pub_filters(pub_req *r)
{
    pipeline *p = r->core->pipeline;
    while (r->next_filter < p->nfilters) {
        chatd_ctx *f = p->filters[r->next_filter];
        if (!f->started) {
            r->next_filter++;
            continue;
        }
        chatd_completion *comp = completion_new(r->core, f, pub_filtered, r);
        if (!comp) {
            pub_finish(r, CHATD_ERR_NOMEM, "out of memory");
            return;
        }
        msg_set_mutable(r->msg, true);
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

/* A filter answered (synchronously or through its completion). */
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

/* --------------------------------------------------------------- enqueue */

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
    chatd_completion *comp = completion_new(c, c->queue, pub_enqueued, r);
    if (!comp) {
        pub_finish(r, CHATD_ERR_NOMEM, "out of memory");
        return;
    }
    r->t0 = clock_mono_ms();
    chatd_status st = c->queue->plugin->ops.queue.enqueue(c->queue->inst, r->msg, comp);
    if (st == CHATD_ASYNC) return;
    completion_discard(comp);
    if (st == CHATD_OK) {
        pub_enqueued(r, CHATD_OK, NULL);
        return;
    }
    pub_finish(r, st == CHATD_REJECT ? CHATD_ERR_INTERNAL : st, "the queue refused the message");
}

/* The queue says durable (or failed). */
static void pub_enqueued(void *arg, chatd_status st, const char *reason)
{
    pub_req *r = arg;
    metrics_observe(r->core->metrics, METRIC_HIST_QUEUE, clock_mono_ms() - r->t0);
    /* health: a backend failure marks the queue down until it succeeds again */
    if (st == CHATD_OK)
        r->core->queue->failed = false;
    else if (st == CHATD_ERR_IO || st == CHATD_ERR_UNAVAILABLE)
        r->core->queue->failed = true;
    if (st != CHATD_OK)
        log_msg(CHATD_LOG_WARN, r->core->queue->name,
                "enqueue of message %" PRIu64 " failed: %s%s%s", msg_id(r->msg), api_status_str(st),
                reason ? ": " : "", reason ? reason : "");
    if (st == CHATD_OK && msg_idem_key(r->msg)) { /* which copy of the key came first? */
        idem_settle(r->core, r->msg, pub_settled, r);
        return;
    }
    pub_finish(r, st, st == CHATD_OK ? NULL : (reason ? reason : "the queue failed"));
}

/* A keyed publish, durable: another node's copy of the key came first
 * (idem_fanout.c), so the store keeps that one and this publish is answered
 * with it; else with its own message; an error when that is not confirmed
 * (the publisher retries with the same key). */
static void pub_settled(void *arg, chatd_status st, chatd_msg *first)
{
    pub_req *r = arg;
    if (st != CHATD_OK) {
        pub_finish(r, st, IDEM_UNCONFIRMED_REASON);
        return;
    }
    if (first && msg_id(first) != msg_id(r->msg)) {
        msg_unref(r->msg);
        r->msg = msg_ref(first);
        r->replayed = true;
        pub_finish(r, CHATD_ERR_EXISTS, IDEM_REPLAY_REASON);
        return;
    }
    pub_finish(r, CHATD_OK, NULL);
}

/* The publisher's callback: the transport's RECEIPT (or ERROR) comes from
 * here. Called exactly once per publish that got past the first checks. */
static void pub_finish(pub_req *r, chatd_status st, const char *reason)
{
    pipeline *p = r->core->pipeline;
    p->publishing--;
    update_pending(p);
    if (r->msg) msg_set_mutable(r->msg, false);
    if (st == CHATD_OK) {
        metrics_counter_add(r->core->metrics, "chatd_messages_published_total", "core", 1);
        r->cb(r->arg, CHATD_OK, NULL, r->msg);
    } else if (st == CHATD_ERR_EXISTS && r->replayed) { /* answered by the original */
        metrics_counter_add(r->core->metrics, "chatd_idempotent_replays_total", "core", 1);
        r->cb(r->arg, st, IDEM_REPLAY_REASON, r->msg);
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
    /* an EXISTS of the queue or store (an id taken) is an error, not a replay */
    bool delivered = st == CHATD_OK || (st == CHATD_ERR_EXISTS && r->replayed);
    idem_end(r->core, r->idem, delivered ? CHATD_OK : st, reason, delivered ? r->msg : NULL);
    msg_unref(r->msg);
    free(r->text);
    free(r->idem_key);
    free(r->writer_login);
    free(r);
}

/* --------------------------------------------------------------- consume */

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
    if (flags & CHATD_CONSUME_PERSIST) {
        con_persist(r);
        return;
    }
    if (flags & CHATD_CONSUME_FANOUT) fan_out(p, msg);
    con_finish(r, CHATD_OK);
}

/* --------------------------------------------------------------- persist */

static void con_persist(con_req *r)
{
    core *c = r->core;
    if (!c->store || !c->store->started) {
        con_finish(r, CHATD_ERR_UNAVAILABLE);
        return;
    }
    chatd_completion *comp = completion_new(c, c->store, con_persisted, r);
    if (!comp) {
        con_finish(r, CHATD_ERR_NOMEM);
        return;
    }
    r->t0 = clock_mono_ms();
    chatd_status st = c->store->plugin->ops.store.persist(c->store->inst, r->msg, comp);
    if (st == CHATD_ASYNC) return;
    completion_discard(comp);
    if (st == CHATD_OK) {
        con_persisted(r, CHATD_OK, NULL);
        return;
    }
    con_persisted(r, st == CHATD_REJECT ? CHATD_ERR_INVALID : st, "refused by the store");
}

/* The store committed (or failed): fan out when asked, then finish. */
static void con_persisted(void *arg, chatd_status st, const char *reason)
{
    con_req *r = arg;
    core *c = r->core;
    metrics_observe(c->metrics, METRIC_HIST_STORE, clock_mono_ms() - r->t0);
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

/* --------------------------------------------------------------- fan-out */

/* The longest destination fan_out names: a prefix and a room id. */
#define DEST_MAX                                                                                   \
    ((sizeof(CHATD_DEST_ROOM_PREFIX) > sizeof(CHATD_DEST_SIDE_PREFIX)                              \
          ? sizeof(CHATD_DEST_ROOM_PREFIX)                                                         \
          : sizeof(CHATD_DEST_SIDE_PREFIX)) +                                                      \
     CHATD_ROOM_ID_MAX)

/* prefix + room (canonical, shorter than CHATD_ROOM_ID_MAX), or prefix +
 * member id (positive) when room is NULL, into dest (DEST_MAX bytes) */
static void dest_name(char *dest, const char *prefix, const char *room, int64_t member)
{
    size_t n = strlen(prefix);
    memcpy(dest, prefix, n);
    if (room) {
        size_t r = strnlen(room, CHATD_ROOM_ID_MAX - 1);
        memcpy(dest + n, room, r);
        n += r;
    } else {
        n += fmt_u64(dest + n, (uint64_t)member);
    }
    dest[n] = '\0';
}

/* CHAT: the room and both members' sides; READ: the reader's side only.
 * The counters are added once per message (a lookup by name each), not once
 * per destination. */
static void fan_out(pipeline *p, chatd_msg *msg)
{
    if (!idem_admit(p->core, msg)) return; /* a second copy of its key: never stored */
    char dest[DEST_MAX];
    int64_t low, high;
    size_t ndest = 1;
    msg_room_members(msg, &low, &high);
    if (msg_kind(msg) == CHATD_MSG_CHAT) {
        dest_name(dest, CHATD_DEST_ROOM_PREFIX, msg_room(msg), 0);
        deliver_all(p, dest, msg);
        dest_name(dest, CHATD_DEST_SIDE_PREFIX, NULL, low);
        deliver_all(p, dest, msg);
        dest_name(dest, CHATD_DEST_SIDE_PREFIX, NULL, high);
        deliver_all(p, dest, msg);
        ndest = 3;
    } else {
        dest_name(dest, CHATD_DEST_SIDE_PREFIX, NULL, msg_writer_id(msg));
        deliver_all(p, dest, msg);
    }
    metrics_counter_add(p->core->metrics, "chatd_deliveries_total", "core", ndest * p->ntransports);
    metrics_counter_add(p->core->metrics, "chatd_messages_fanned_out_total", "core", 1);
}

static void deliver_all(pipeline *p, const char *dest, chatd_msg *msg)
{
    for (size_t i = 0; i < p->ntransports; i++) {
        chatd_ctx *t = p->transports[i];
        if (t->started) t->plugin->ops.transport.deliver(t->inst, dest, msg);
    }
}

/* The queue's done(): CHATD_OK lets it commit the offset. */
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

/* ----------------------------------------------------------- bookkeeping */

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

size_t pipeline_pending(const pipeline *p)
{
    return p->publishing + p->consuming;
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
