/*
 * pg_batch.c - the messages of store-pg: persist() queues them in memory in
 * arrival order (bounded by max_pending, then CHATD_ERR_BUSY), and pump()
 * writes them in batches of up to batch_max, at most one batch in flight;
 * the next one collects whatever arrived meanwhile, and is sent as soon as
 * the previous one has committed, before its messages are completed (so
 * the server works while the loop runs the completions). The statements of a
 * pipeline up to a sync form one implicit transaction (PostgreSQL protocol,
 * "Pipelining"): committed at the sync, rolled back as a whole if one fails,
 * with nothing left open on the connection. Completions are completed only
 * once the sync reports the commit. A batch that fails on an SQL error is
 * retried one message per transaction so that only the bad message fails.
 *
 * Expired idempotency keys are deleted in the background: every
 * idem_purge_interval_s a request on the same pipeline deletes at most
 * idem_purge_batch keys older than the window, and the next batch follows at
 * once while a batch comes back full (a bounded statement, so the reads and
 * batches queued behind it wait little; never a blocking call).
 */
#include "pg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Complete every pending message with `status` (stop timeout, destroy). */
void fail_pending(pg_store *st, chatd_status status, const char *reason)
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

/* Put queued requests, then the next batch, on the connection. */
static void pump_send(pg_store *st)
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
}

/* Send what can be sent: queued requests, then the next batch. */
void pump(pg_store *st)
{
    pump_send(st);
    check_stop_done(st);
}

/* A batch finished (sync received). */
void batch_done(pg_store *st, pg_req *r)
{
    size_t n = r->nbatch;
    if (n > st->inflight) n = st->inflight; /* defensive; equal by construction */
    st->inflight = 0;
    if (!r->failed) {
        pg_pending *done = st->p_head, *p, *next;
        st->api->counter_add(st->ctx, "chatd_store_commits_total", 1);
        st->api->counter_add(st->ctx, "chatd_store_persisted_total", n);
        /* take the committed messages off the list, and have the server
         * work on the next batch (what arrived meanwhile) while the loop
         * completes these: one batch in flight still, committed in order */
        p = done;
        for (size_t k = 1; k < n; k++)
            p = p->next;
        st->p_head = n ? p->next : done;
        if (!st->p_head) st->p_tail = NULL;
        if (n)
            p->next = NULL;
        else
            done = NULL;
        st->npending -= n;
        st->solo_left = st->solo_left > n ? st->solo_left - n : 0;
        pump_send(st);
        for (p = done; p; p = next) {
            next = p->next;
            st->api->complete(p->done, CHATD_OK, NULL);
            st->api->msg_unref(p->msg);
            free(p);
        }
        pc_busy_drained(&st->busy, st->api, st->ctx, (int64_t)st->npending,
                        (int64_t)st->max_pending);
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
        if (strcmp(r->sqlstate, PG_SQLSTATE_ID_TAKEN) == 0) {
            st->api->counter_add(st->ctx, "chatd_store_id_conflicts_total", 1);
            LOG(st, CHATD_LOG_ERROR,
                "message id %" PRIu64 " (room %s, writer %lld) is already stored with different"
                " content: refused; two nodes share a node_id or a node's clock went back"
                " (give each node its own node_id)",
                st->api->msg_id(p->msg), st->api->msg_room(p->msg),
                (long long)st->api->msg_writer_id(p->msg));
            st->api->complete(p->done, CHATD_ERR_EXISTS, "its id is taken by another message");
        } else {
            LOG(st, CHATD_LOG_ERROR,
                "PostgreSQL refused message %" PRIu64 " (%s%s%s); the queue will redeliver it",
                st->api->msg_id(p->msg), r->err, r->sqlstate[0] ? ", SQLSTATE " : "", r->sqlstate);
            snprintf(reason, sizeof(reason), "database error: %s", r->err);
            st->api->complete(p->done, CHATD_ERR_IO, reason);
        }
        st->api->msg_unref(p->msg);
        free(p);
    }
}

chatd_status pg_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    pg_store *st = inst;
    chatd_msg_kind kind = st->api->msg_kind(msg);
    pg_pending *p;

    if (kind != CHATD_MSG_CHAT && kind != CHATD_MSG_READ) return CHATD_ERR_INVALID;
    if (st->stopping || st->state == PG_STOPPED || st->state == PG_IDLE)
        return CHATD_ERR_UNAVAILABLE;
    if (st->npending >= st->max_pending) {
        int down = st->state != PG_READY;
        pc_busy_refuse(&st->busy, st->api, st->ctx, down ? CHATD_LOG_ERROR : CHATD_LOG_WARN,
                       "chatd_store_busy_total",
                       "%zu messages wait for PostgreSQL (max_pending): refusing new messages "
                       "until it %s",
                       st->npending, down ? "is back (it is unavailable)" : "catches up");
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

/* Arm the purge timer for `ms` from now. */
static void purge_arm(pg_store *st, int64_t ms)
{
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    if (st->purge_every_ms > 0 && !st->stopping && evtimer_add(st->ev_purge, &tv) != 0)
        LOG(st, CHATD_LOG_WARN, "could not arm the idempotency purge timer (libevent)");
}

void on_purge(evutil_socket_t fd, short what, void *arg)
{
    pg_store *st = arg;
    pg_req *r;
    (void)fd;
    (void)what;
    if (st->purge_inflight || st->stopping) return;
    if (st->state != PG_READY || !(r = req_new(REQ_IDEM_PURGE, NULL, NULL))) {
        purge_arm(st, st->purge_every_ms); /* down (or no memory): next time */
        return;
    }
    r->i[0] = st->api->now_ms() - st->idem_window_ms;
    r->i[1] = st->purge_batch;
    st->purge_inflight = 1;
    list_push(&st->q_head, &st->q_tail, r);
    st->nqueued++;
    kick(st);
}

void purge_done(pg_store *st, int64_t deleted)
{
    st->purge_inflight = 0;
    if (deleted > 0) {
        st->api->counter_add(st->ctx, "chatd_store_idem_purged_total", (uint64_t)deleted);
        LOG(st, CHATD_LOG_DEBUG, "deleted %lld expired idempotency keys", (long long)deleted);
    }
    /* a full batch: more are expired, go on soon (still one at a time) */
    purge_arm(st, deleted >= st->purge_batch ? 10 : st->purge_every_ms);
}
