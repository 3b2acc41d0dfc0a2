/*
 * qk_gate.c - the persisted watermark of queue-kafka: a fanned-out message
 * is held until the store has committed it, so that a subscriber who then
 * asks for history (or resumes) finds it, on every node:
 *   - partitions this node's persist consumer owns: until the local store
 *     committed that offset (t->stored); a sender's completion waits the same
 *     way. On a single node that is every partition.
 *   - partitions another node persists: until the persist group's committed
 *     offset is past it (the owner commits an offset only after its store
 *     committed it and everything before), read by the worker thread every
 *     remote_gate_poll ms while such messages wait. RECEIPTs of those
 *     partitions do not wait (the message is durable in Kafka).
 * A hold never lasts longer than gate_timeout ms. Committed offsets are read
 * by a worker thread, since rd_kafka_committed blocks.
 */
#define _GNU_SOURCE
#include "qk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The group's committed offset of partition as last read, or -1. */
static int64_t qk_committed_of(const struct qk *qk, int32_t partition)
{
    return partition >= 0 && partition < qk->ncommitted ? qk->committed[partition] : -1;
}

/* Must (partition, offset) wait for the store? */
int qk_gated(struct qk *qk, int32_t partition, int64_t offset, int fanout)
{
    struct qk_track *t;
    int64_t lw;
    if (!qk->persist || qk->state != QK_RUNNING || qk->gate_timeout_ms == 0) return 0;
    if (!qk->assigned_once) return 1; /* the group has not told us yet which partitions are ours */
    if (partition < 0 || partition >= qk->ntracks || !(t = qk->tracks[partition]))
        /* another node persists it: its commit of the offset says it is stored */
        return fanout && offset >= qk_committed_of(qk, partition);
    if (t->base < 0) return 1; /* committed offset not known yet */
    lw = t->stored > t->base ? t->stored : t->base;
    return offset >= lw;
}

/* Is partition persisted by another node (its watermark read by polling)? */
static int qk_remote(const struct qk *qk, int32_t partition)
{
    return qk->assigned_once &&
           (partition < 0 || partition >= qk->ntracks || !qk->tracks[partition]);
}

static void qk_remote_poll_cb(evutil_socket_t fd, short what, void *arg);

/* Read the committed offsets again in remote_gate_poll ms when fan-out of a
 * remote partition waits and no read is outstanding. */
static void qk_remote_poll_later(struct qk *qk)
{
    struct timeval tv = {qk->remote_poll_ms / 1000, (qk->remote_poll_ms % 1000) * 1000};
    if (qk->state != QK_RUNNING || !qk->cq_started) return;
    if (qk->remote_asked_ms && qk->api->now_ms() - qk->remote_asked_ms < QK_CQ_LOST_MS) return;
    if (!qk->remote_poll) qk->remote_poll = evtimer_new(qk->base, qk_remote_poll_cb, qk);
    if (qk->remote_poll && evtimer_pending(qk->remote_poll, NULL)) return;
    if (!qk->remote_poll || evtimer_add(qk->remote_poll, &tv) != 0)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot schedule reading the committed offsets; fan-out of partitions "
                     "other nodes persist waits gate_timeout");
}

/* Ask for the committed offsets of the remote partitions with held fan-out. */
static void qk_remote_poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk *qk = arg;
    rd_kafka_topic_partition_list_t *l;
    (void)fd;
    (void)what;
    if (qk->state != QK_RUNNING) return;
    if (qk->remote_asked_ms && qk->api->now_ms() - qk->remote_asked_ms < QK_CQ_LOST_MS) return;
    if (!(l = rd_kafka_topic_partition_list_new(16))) {
        qk_remote_poll_later(qk);
        return;
    }
    for (int32_t p = 0; p < qk->nheld_parts; p++) {
        struct qk_held *h;
        if (!qk_remote(qk, p)) continue;
        TAILQ_FOREACH(h, &qk->held[p], link)
        if (h->msg) {
            rd_kafka_topic_partition_list_add(l, qk->topic, p);
            break;
        }
    }
    if (l->cnt > 0 && qk_cq_ask(qk, l) == 0) qk->remote_asked_ms = qk->api->now_ms();
    rd_kafka_topic_partition_list_destroy(l);
}

static void qk_held_release(struct qk *qk, struct qk_held *h)
{
    if (h->done) qk->api->complete(h->done, CHATD_OK, NULL);
    if (h->msg) {
        qk->api->consume(qk->ctx, h->msg, CHATD_CONSUME_FANOUT, NULL, NULL);
        qk->api->msg_unref(h->msg);
    }
    free(h);
}

/* Release what no longer waits in one partition (everything when force),
 * keeping fan-out messages in offset order. */
void qk_gate_release(struct qk *qk, int32_t partition, int force)
{
    struct qk_held *h, *next;
    int keep_msgs = 0, timed_out = 0;
    int64_t now;

    if (partition < 0 || partition >= qk->nheld_parts) return;
    now = qk->api->now_ms();
    for (h = TAILQ_FIRST(&qk->held[partition]); h; h = next) {
        next = TAILQ_NEXT(h, link);
        if (!force) {
            int wait = qk_gated(qk, partition, h->offset, h->msg != NULL);
            if (wait && now - h->since_ms >= qk->gate_timeout_ms) {
                wait = 0;
                timed_out++;
            }
            if (wait || (h->msg && keep_msgs)) {
                if (h->msg) keep_msgs = 1;
                continue;
            }
        }
        TAILQ_REMOVE(&qk->held[partition], h, link);
        qk->nheld--;
        qk_held_release(qk, h);
    }
    if (timed_out)
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "%d deliveries of %s[%" PRId32 "] released after %" PRId64
                     " ms without %s (is the store slow or down?)",
                     timed_out, qk->topic, partition, qk->gate_timeout_ms,
                     qk_remote(qk, partition) ? "the persisting node's commit"
                                              : "the local store's commit");
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
}

void qk_gate_refuse(struct qk *qk, int32_t partition, int64_t offset, const char *reason)
{
    struct qk_held *h, *next;

    if (partition < 0 || partition >= qk->nheld_parts) return;
    for (h = TAILQ_FIRST(&qk->held[partition]); h; h = next) {
        next = TAILQ_NEXT(h, link);
        if (h->offset != offset) continue;
        TAILQ_REMOVE(&qk->held[partition], h, link);
        qk->nheld--;
        if (h->done) qk->api->complete(h->done, CHATD_ERR_IO, reason);
        qk->api->msg_unref(h->msg); /* never fanned out: it is not in the history */
        free(h);
    }
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
}

void qk_gate_release_all(struct qk *qk, int force)
{
    int remote = 0;
    for (int32_t p = 0; p < qk->nheld_parts; p++) {
        qk_gate_release(qk, p, force);
        remote = remote || (!TAILQ_EMPTY(&qk->held[p]) && qk_remote(qk, p));
    }
    if (qk->nheld == 0 && qk->gate_tick) event_del(qk->gate_tick);
    if (remote) qk_remote_poll_later(qk); /* e.g. partitions just revoked */
}

static void qk_gate_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    qk_gate_release_all(arg, 0);
}

/* Hold msg (a reference is taken over) or done until the watermark passes
 * offset. Returns 0, or -1 when it could not be held (release it now). */
int qk_hold(struct qk *qk, int32_t partition, int64_t offset, chatd_msg *msg,
            chatd_completion *done)
{
    struct qk_held *h;
    if (partition < 0 || partition >= QK_MAX_PARTITIONS) return -1;
    if (partition >= qk->nheld_parts) {
        int32_t n = partition + 16;
        struct qk_held_list *nl = realloc(qk->held, (size_t)n * sizeof *nl);
        if (!nl) return -1;
        /* TAILQ heads point into themselves: re-link the moved ones */
        for (int32_t i = 0; i < qk->nheld_parts; i++) {
            if (TAILQ_EMPTY(&nl[i]))
                TAILQ_INIT(&nl[i]);
            else
                TAILQ_FIRST(&nl[i])->link.tqe_prev = &TAILQ_FIRST(&nl[i]);
        }
        for (int32_t i = qk->nheld_parts; i < n; i++)
            TAILQ_INIT(&nl[i]);
        qk->held = nl;
        qk->nheld_parts = n;
    }
    if (!qk->gate_tick) {
        qk->gate_tick = event_new(qk->base, -1, EV_PERSIST, qk_gate_tick_cb, qk);
        if (!qk->gate_tick) return -1;
    }
    if (!evtimer_pending(qk->gate_tick, NULL)) {
        struct timeval tv = {0, 100 * 1000};
        if (evtimer_add(qk->gate_tick, &tv) != 0) return -1;
    }
    h = calloc(1, sizeof *h);
    if (!h) return -1;
    h->offset = offset;
    h->since_ms = qk->api->now_ms();
    h->msg = msg;
    h->done = done;
    TAILQ_INSERT_TAIL(&qk->held[partition], h, link);
    qk->nheld++;
    if (msg && qk_remote(qk, partition)) qk_remote_poll_later(qk);
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
    return 0;
}

/* committed-offsets worker: rd_kafka_committed blocks, so it runs here and
 * posts the answer to the loop */
static void qk_cq_free(struct qk_cq *r)
{
    if (r) {
        rd_kafka_topic_partition_list_destroy(r->parts);
        free(r);
    }
}

/* Ask again for every assigned partition whose committed offset is still
 * unknown (a failed lookup would otherwise gate it until gate_timeout, for
 * every message). */
static void qk_cq_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk *qk = arg;
    rd_kafka_topic_partition_list_t *l;
    (void)fd;
    (void)what;
    if (qk->state != QK_RUNNING || !(l = rd_kafka_topic_partition_list_new(16))) return;
    for (int32_t p = 0; p < qk->ntracks; p++)
        if (qk->tracks[p] && qk->tracks[p]->base < 0)
            rd_kafka_topic_partition_list_add(l, qk->topic, p);
    if (l->cnt > 0) {
        qk->api->log(qk->ctx, CHATD_LOG_INFO,
                     "asking again for the committed offsets of %d partitions", l->cnt);
        qk_cq_ask(qk, l);
    }
    rd_kafka_topic_partition_list_destroy(l);
}

/* Schedule qk_cq_retry_cb when a partition's committed offset is unknown. */
static void qk_cq_retry_later(struct qk *qk)
{
    struct timeval tv = {QK_CQ_RETRY_MS / 1000, (QK_CQ_RETRY_MS % 1000) * 1000};
    int unknown = 0;
    for (int32_t p = 0; p < qk->ntracks && !unknown; p++)
        unknown = qk->tracks[p] && qk->tracks[p]->base < 0;
    if (!unknown) return;
    if (!qk->cq_retry) qk->cq_retry = evtimer_new(qk->base, qk_cq_retry_cb, qk);
    if (!qk->cq_retry || evtimer_add(qk->cq_retry, &tv) != 0)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot schedule asking again for committed offsets; deliveries of those "
                     "partitions wait gate_timeout each");
}

/* Keep the committed offset of partition just read (the worker answers in
 * order, so this is the newest). */
static void qk_committed_set(struct qk *qk, int32_t partition, int64_t offset)
{
    if (partition < 0 || partition >= QK_MAX_PARTITIONS) return;
    if (partition >= qk->ncommitted) {
        int32_t n = partition + 16;
        int64_t *nc = realloc(qk->committed, (size_t)n * sizeof *nc);
        if (!nc) return; /* unknown: its fan-out waits at most gate_timeout */
        for (int32_t i = qk->ncommitted; i < n; i++)
            nc[i] = -1;
        qk->committed = nc;
        qk->ncommitted = n;
    }
    qk->committed[partition] = offset;
}

static void qk_cq_done(void *arg)
{
    struct qk_cq *r = arg;
    struct qk *qk = r->qk;
    if (qk->state != QK_RUNNING) {
        qk_cq_free(r);
        return;
    }
    qk->remote_asked_ms = 0;
    if (r->err && qk->api->now_ms() - qk->cq_warned_ms >= QK_CQ_WARN_MS) {
        qk->cq_warned_ms = qk->api->now_ms();
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "cannot read the committed offsets of group %s: %s (after %" PRId64
                     " ms); deliveries wait at most gate_timeout",
                     qk->group, rd_kafka_err2str(r->err), r->took_ms);
    }
    for (int i = 0; i < r->parts->cnt && !r->err; i++) {
        rd_kafka_topic_partition_t *e = &r->parts->elems[i];
        int32_t p = e->partition;
        struct qk_track *t = p >= 0 && p < qk->ntracks ? qk->tracks[p] : NULL;
        if (e->err) continue;
        if (e->offset >= 0) qk_committed_set(qk, p, e->offset);
        if (!t || t->base >= 0 || t->gen > r->gen) continue;
        /* no commit yet: the group starts at the beginning, all of it ours */
        t->base = e->offset >= 0 ? e->offset : 0;
    }
    qk_cq_free(r);
    qk_gate_release_all(qk, 0);
    qk_cq_retry_later(qk);
}

void *qk_cq_main(void *arg)
{
    struct qk *qk = arg;
    pthread_mutex_lock(&qk->cq_mu);
    for (;;) {
        while (!qk->cq_req && !qk->cq_quit)
            pthread_cond_wait(&qk->cq_cv, &qk->cq_mu);
        if (qk->cq_quit) break;
        struct qk_cq *r = qk->cq_req;
        qk->cq_req = NULL;
        pthread_mutex_unlock(&qk->cq_mu);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r->err = rd_kafka_committed(qk->cl[QK_PERSIST].rk, r->parts, 5000);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        r->took_ms = (int64_t)(t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (qk->api->post(qk->ctx, qk_cq_done, r) != CHATD_OK) qk_cq_free(r);
        pthread_mutex_lock(&qk->cq_mu);
    }
    pthread_mutex_unlock(&qk->cq_mu);
    return NULL;
}

/* ask the worker for the committed offsets of partitions */
int qk_cq_ask(struct qk *qk, const rd_kafka_topic_partition_list_t *parts)
{
    int rc = 0;
    if (!qk->cq_started || parts->cnt == 0) return -1;
    pthread_mutex_lock(&qk->cq_mu);
    if (!qk->cq_req) {
        qk->cq_req = calloc(1, sizeof *qk->cq_req);
        if (qk->cq_req) {
            qk->cq_req->qk = qk;
            qk->cq_req->parts = rd_kafka_topic_partition_list_new(parts->cnt);
            if (!qk->cq_req->parts) {
                free(qk->cq_req);
                qk->cq_req = NULL;
            }
        }
    }
    if (qk->cq_req) {
        qk->cq_req->gen = qk->assign_gen;
        for (int i = 0; i < parts->cnt; i++)
            rd_kafka_topic_partition_list_add(qk->cq_req->parts, parts->elems[i].topic,
                                              parts->elems[i].partition);
        pthread_cond_signal(&qk->cq_cv);
    } else {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "out of memory asking for committed offsets");
        rc = -1;
    }
    pthread_mutex_unlock(&qk->cq_mu);
    return rc;
}

void qk_cq_stop(struct qk *qk)
{
    if (!qk->cq_started) return;
    pthread_mutex_lock(&qk->cq_mu);
    qk->cq_quit = 1;
    pthread_cond_signal(&qk->cq_cv);
    pthread_mutex_unlock(&qk->cq_mu);
    pthread_join(qk->cq_thread, NULL);
    qk->cq_started = 0;
    qk_cq_free(qk->cq_req);
    qk->cq_req = NULL;
}
