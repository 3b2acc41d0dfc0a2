/*
 * queue_local.c - queue-local, the embedded in-process queue of chatd.
 *
 * enqueue() takes a reference to the message and appends it to a FIFO; a
 * task posted to the loop (never re-entrantly) hands every queued message
 * back to the core with chatd_api.consume(PERSIST | FANOUT). The enqueue is
 * completed with the status consume() reports, so the sender is acknowledged
 * only after the store has committed the message. Messages are consumed in
 * the order they were enqueued, which keeps every room in order (the store
 * commits and completes in that order too).
 *
 * The number of accepted but not yet finished messages is bounded by
 * `max_pending`; past it enqueue() returns CHATD_ERR_BUSY. stop() refuses new
 * work and completes once every accepted message is finished.
 *
 * Everything runs on the loop thread; the plugin has no globals, so several
 * instances may run side by side.
 */
#include "config.h"

#include <chatd/plugin.h>

#include "../common/plugin_common.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* One accepted message, first queued, then in flight in the core. */
typedef struct ql_item {
    struct ql_item *next;                 /* FIFO link while queued */
    struct ql_item *prev, *inflight_next; /* in-flight list links */
    struct ql *q;
    chatd_msg *msg;         /* our reference */
    chatd_completion *done; /* the enqueue to finish */
} ql_item;

typedef struct ql {
    const chatd_api *api;
    chatd_ctx *ctx;
    int64_t max_pending;
    int64_t pending;      /* queued + in flight */
    ql_item *head, *tail; /* queued, not yet handed to the core */
    ql_item *inflight;    /* handed to consume(), waiting for done */
    int drain_posted;     /* a drain task is queued on the loop */
    int started, stopping;
    pc_busy busy;                /* the max_pending warning of this episode */
    chatd_completion *stop_done; /* set while stop() waits */
} ql;

/* The only place the defaults are written; the core range-checks values. */
static const chatd_cfg_key ql_cfg_keys[] = {
    {.name = "max_pending",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 1,
     .max = 100000000,
     .help = "messages accepted but not yet stored before enqueue refuses with busy"},
    {.name = NULL},
};

static void ql_gauge(ql *q)
{
    q->api->gauge_set(q->ctx, "chatd_queue_local_pending", q->pending);
}

static void ql_inflight_add(ql *q, ql_item *it)
{
    it->prev = NULL;
    it->inflight_next = q->inflight;
    if (q->inflight) q->inflight->prev = it;
    q->inflight = it;
}

static void ql_inflight_del(ql *q, ql_item *it)
{
    if (it->prev)
        it->prev->inflight_next = it->inflight_next;
    else
        q->inflight = it->inflight_next;
    if (it->inflight_next) it->inflight_next->prev = it->prev;
    it->prev = it->inflight_next = NULL;
}

/* The stop completes once nothing accepted is left. */
static void ql_maybe_stopped(ql *q)
{
    if (q->stopping && q->stop_done && q->pending == 0 && !q->drain_posted) {
        chatd_completion *d = q->stop_done;
        q->stop_done = NULL;
        q->api->log(q->ctx, CHATD_LOG_INFO, "stopped: every accepted message is finished");
        q->api->complete(d, CHATD_OK, NULL);
    }
}

/* consume() finished the stages for one message (loop thread). */
static void ql_on_done(void *arg, chatd_status st)
{
    ql_item *it = arg;
    ql *q = it->q;

    ql_inflight_del(q, it);
    if (st != CHATD_OK)
        q->api->log(q->ctx, CHATD_LOG_WARN,
                    "message %llu was not stored (%s); the sender gets the error and may retry",
                    (unsigned long long)q->api->msg_id(it->msg), q->api->status_str(st));
    q->api->complete(it->done, st, st == CHATD_OK ? NULL : "the message could not be stored");
    q->api->msg_unref(it->msg);
    free(it);
    q->pending--;
    pc_busy_drained(&q->busy, q->api, q->ctx, q->pending, q->max_pending);
    ql_gauge(q);
    ql_maybe_stopped(q);
}

/* Posted task: hand everything queued so far to the core, in order. */
static void ql_drain(void *arg)
{
    ql *q = arg;
    ql_item *it = q->head;

    q->drain_posted = 0;
    q->head = q->tail = NULL;
    while (it) {
        ql_item *next = it->next;
        it->next = NULL;
        ql_inflight_add(q, it);
        /* done may run before consume returns; `it` is not touched after. */
        q->api->consume(q->ctx, it->msg, CHATD_CONSUME_PERSIST | CHATD_CONSUME_FANOUT, ql_on_done,
                        it);
        it = next;
    }
    ql_maybe_stopped(q);
}

static chatd_status ql_enqueue(void *inst, chatd_msg *msg, chatd_completion *done)
{
    ql *q = inst;
    ql_item *it;

    if (!msg || !done) return CHATD_ERR_INVALID;
    if (!q->started || q->stopping) return CHATD_ERR_UNAVAILABLE;
    if (q->pending >= q->max_pending) {
        pc_busy_refuse(&q->busy, q->api, q->ctx, CHATD_LOG_WARN, "chatd_queue_local_busy_total",
                       "%lld messages pending (max_pending); refusing publishes until the "
                       "store catches up (raise max_pending if this persists)",
                       (long long)q->pending);
        return CHATD_ERR_BUSY;
    }
    it = calloc(1, sizeof(*it));
    if (!it) return CHATD_ERR_NOMEM;
    if (!q->drain_posted) {
        chatd_status st = q->api->post(q->ctx, ql_drain, q);
        if (st != CHATD_OK) {
            free(it);
            return CHATD_ERR_UNAVAILABLE;
        }
        q->drain_posted = 1;
    }
    it->q = q;
    it->msg = q->api->msg_ref(msg);
    it->done = done;
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    q->pending++;
    ql_gauge(q);
    return CHATD_ASYNC;
}

static chatd_status ql_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    ql *q;
    int64_t maxp;

    if (!pc_api_ok(api, ctx)) return CHATD_ERR_INVALID;
    maxp = pc_cfg_int(api, ctx, "max_pending");
    q = calloc(1, sizeof(*q));
    if (!q) {
        api->log(ctx, CHATD_LOG_ERROR, "out of memory creating the queue");
        return CHATD_ERR_NOMEM;
    }
    q->api = api;
    q->ctx = ctx;
    q->max_pending = maxp;
    *inst = q;
    return CHATD_OK;
}

static chatd_status ql_start(void *inst)
{
    ql *q = inst;
    q->started = 1;
    q->api->log(q->ctx, CHATD_LOG_INFO, "embedded queue ready (max_pending %lld)",
                (long long)q->max_pending);
    return CHATD_OK;
}

static chatd_status ql_stop(void *inst, chatd_completion *done)
{
    ql *q = inst;

    q->stopping = 1;
    if (q->pending == 0 && !q->drain_posted) return CHATD_OK;
    q->api->log(q->ctx, CHATD_LOG_INFO, "stopping: waiting for %lld messages in flight",
                (long long)q->pending);
    q->stop_done = done;
    return CHATD_ASYNC;
}

static void ql_destroy(void *inst)
{
    ql *q = inst;
    ql_item *it, *next;

    if (!q) return;
    if (q->pending)
        q->api->log(q->ctx, CHATD_LOG_WARN,
                    "destroyed with %lld messages unfinished (stop was not awaited); their "
                    "senders were never acknowledged",
                    (long long)q->pending);
    /* Queued ones were never handed to the core: fail their enqueue. */
    for (it = q->head; it; it = next) {
        next = it->next;
        q->api->complete(it->done, CHATD_ERR_UNAVAILABLE, "the queue was destroyed");
        q->api->msg_unref(it->msg);
        free(it);
    }
    /* In-flight ones belong to the core's consume(); it must not call back
     * after destroy. Release our side. */
    for (it = q->inflight; it; it = next) {
        next = it->inflight_next;
        q->api->msg_unref(it->msg);
        free(it);
    }
    free(q);
}

static const chatd_queue_ops ql_ops = {
    .size = sizeof(chatd_queue_ops),
    .enqueue = ql_enqueue,
};

static const chatd_plugin_desc ql_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_QUEUE,
    .name = "queue-local",
    .version = PACKAGE_VERSION,
    .description = "embedded in-process queue: acknowledges after the store commits",
    .cfg_keys = ql_cfg_keys,
    .create = ql_create,
    .start = ql_start,
    .stop = ql_stop,
    .destroy = ql_destroy,
    .reload = NULL,
    .ops = &ql_ops,
};

CHATD_PLUGIN_DEFINE(ql_desc)
