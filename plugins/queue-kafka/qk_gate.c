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
 * A fan-out delivery is never released before the store holds it, however
 * long that takes (the persisting node killed: until the group gave its
 * partitions to another node and that one committed): past gate_timeout it
 * is logged as overdue (every gate_timeout, chatd_kafka_held_overdue_total,
 * chatd_kafka_held_oldest_ms), and past max_inflight held deliveries the
 * fan-out consumer pauses the partition, so memory stays bounded. A held
 * RECEIPT is answered after gate_timeout (the message is durable in Kafka).
 * Committed offsets are read by a worker thread, since rd_kafka_committed
 * blocks.
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

/* Is (partition, offset) not yet known to be in the store? (Whatever the
 * state: the graceful stop asks it too.) */
static int qk_unstored(struct qk *qk, int32_t partition, int64_t offset, int fanout)
{
    struct qk_track *t;
    int64_t lw;
    if (!qk->persist || qk->gate_timeout_ms == 0) return 0;
    if (!qk->assigned_once) return 1; /* the group has not told us yet which partitions are ours */
    if (partition < 0 || partition >= qk->ntracks || !(t = qk->tracks[partition]))
        /* another node persists it: its commit of the offset says it is stored */
        return fanout && offset >= qk_committed_of(qk, partition);
    if (t->base < 0) return 1; /* committed offset not known yet */
    lw = t->stored > t->base ? t->stored : t->base;
    return offset >= lw;
}

/* Must (partition, offset) wait for the store? */
int qk_gated(struct qk *qk, int32_t partition, int64_t offset, int fanout)
{
    return qk->state == QK_RUNNING && qk_unstored(qk, partition, offset, fanout);
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
                     "other nodes persist waits for the next assignment or gate tick");
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

/* Pause (or resume) the fan-out consumer's partition: its held deliveries
 * passed max_inflight (or drained to half of it). */
static void qk_fanout_pause(struct qk *qk, int32_t partition, int pause)
{
    rd_kafka_t *rk = qk->cl[QK_FANOUT].rk;
    rd_kafka_topic_partition_list_t *l;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__FAIL;
    if (!rk || atomic_load(&qk->closing)) return;
    if ((l = rd_kafka_topic_partition_list_new(1))) {
        rd_kafka_topic_partition_list_add(l, qk->topic, partition);
        err = pause ? rd_kafka_pause_partitions(rk, l) : rd_kafka_resume_partitions(rk, l);
        if (!err) err = l->elems[0].err;
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (err) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "fan-out consumer: %s of %s[%" PRId32 "] failed: %s",
                     pause ? "pause" : "resume", qk->topic, partition, rd_kafka_err2str(err));
        /* a partition no longer assigned has nothing to resume: not again */
        if (!pause) qk->held_part[partition].paused = 0;
        return;
    }
    qk->held_part[partition].paused = pause;
    qk->api->log(qk->ctx, pause ? CHATD_LOG_WARN : CHATD_LOG_INFO,
                 pause ? "fan-out of %s[%" PRId32 "]: %" PRId64 " deliveries wait for the store "
                         "(max_inflight): pausing the partition's fan-out consumer"
                       : "fan-out of %s[%" PRId32 "]: %" PRId64 " deliveries wait for the store: "
                         "resuming the partition's fan-out consumer",
                 qk->topic, partition, qk->held_part[partition].msgs);
}

/* h leaves its list: a fan-out delivery is handed to the core (deliver) or
 * dropped, a completion answered. */
static void qk_held_release(struct qk *qk, int32_t partition, struct qk_held *h, int deliver)
{
    TAILQ_REMOVE(&qk->held[partition], h, link);
    qk->nheld--;
    if (!h->msg) qk->held_part[partition].receipts--;
    if (h->done) qk->api->complete(h->done, CHATD_OK, NULL);
    if (h->msg) {
        struct qk_held_part *hp = &qk->held_part[partition];
        hp->msgs--;
        if (deliver) qk->api->consume(qk->ctx, h->msg, CHATD_CONSUME_FANOUT, NULL, NULL);
        qk->api->msg_unref(h->msg);
        if (hp->paused && hp->msgs <= qk->max_inflight / 2) qk_fanout_pause(qk, partition, 0);
    }
    free(h);
}

/* Log, every gate_timeout, a partition whose oldest held delivery has waited
 * that long; it is still held (a delivery never goes out before the store
 * holds it: a resume at that moment would miss it). */
static void qk_overdue_log(struct qk *qk, int32_t partition, const struct qk_held *h, int64_t now)
{
    struct qk_held_part *hp = &qk->held_part[partition];
    if (now - h->since_ms < qk->gate_timeout_ms || now - hp->warned_ms < qk->gate_timeout_ms)
        return;
    hp->warned_ms = now;
    qk->api->counter_add(qk->ctx, "chatd_kafka_held_overdue_total", 1);
    qk->api->log(qk->ctx, CHATD_LOG_WARN,
                 "fan-out of %s[%" PRId32 "] held for %" PRId64 " ms (gate_timeout %" PRId64
                 " ms): %" PRId64 " deliveries from offset %" PRId64 " wait for %s; none goes out "
                 "before the store holds it (is the store down, or is the persist group "
                 "rebalancing?)",
                 qk->topic, partition, now - h->since_ms, qk->gate_timeout_ms, hp->msgs, h->offset,
                 qk_remote(qk, partition) ? "the persisting node's commit"
                                          : "the local store's commit");
}

/* Log what was released late in a partition: added to what is not yet
 * logged, at most one line of each kind per gate_timeout (the first at once). */
static void qk_late_log(struct qk *qk, int32_t partition, int late, int overdue, int64_t waited,
                        int64_t now)
{
    struct qk_held_part *hp = &qk->held_part[partition];
    hp->late_receipts += late;
    hp->overdue += overdue;
    if (waited > hp->waited) hp->waited = waited;
    if (hp->late_receipts && now - hp->late_logged_ms >= qk->gate_timeout_ms) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "%" PRId64 " RECEIPTs of %s[%" PRId32 "] answered after %" PRId64
                     " ms without the local store's commit (durable in Kafka; is the store slow "
                     "or down?)",
                     hp->late_receipts, qk->topic, partition, qk->gate_timeout_ms);
        hp->late_logged_ms = now;
        hp->late_receipts = 0;
    }
    if (hp->overdue && now - hp->overdue_logged_ms >= qk->gate_timeout_ms) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "fan-out of %s[%" PRId32 "]: %" PRId64 " overdue deliveries released once "
                     "stored, after up to %" PRId64 " ms",
                     qk->topic, partition, hp->overdue, hp->waited);
        hp->overdue_logged_ms = now;
        hp->overdue = hp->waited = 0;
    }
}

/* Release what no longer waits in one partition, keeping fan-out messages in
 * offset order: a fan-out delivery once the store holds it (however long
 * that takes), a RECEIPT once the local store committed it or after
 * gate_timeout (the message is durable in Kafka). With force (the graceful
 * stop) every RECEIPT is answered and the deliveries not yet stored, and
 * every one after them, are dropped: this node's subscribers are leaving,
 * and a gap behind their cursors would be missed at their resume.
 * Without force the scan stops where nothing after can go: the fan-out
 * deliveries after an unstored one wait behind it, and the RECEIPTs come in
 * offset and arrival order (one producer, idempotent: its delivery reports
 * are in offset order per partition), so after one that still waits, and
 * not yet for gate_timeout, every later one waits too. Each call thus costs
 * what it releases plus the head it keeps, not the whole backlog (it runs
 * for every record the fan-out consumer holds and every store completion). */
void qk_gate_release(struct qk *qk, int32_t partition, int force)
{
    struct qk_held *h, *next;
    const struct qk_held *oldest = NULL;
    int keep_msgs = 0, late = 0, dropped = 0, overdue = 0;
    int64_t now, waited = 0, receipts_left;

    if (partition < 0 || partition >= qk->nheld_parts) return;
    now = qk->api->now_ms();
    receipts_left = qk->held_part[partition].receipts;
    for (h = TAILQ_FIRST(&qk->held[partition]); h; h = next) {
        next = TAILQ_NEXT(h, link);
        if (!force && keep_msgs && receipts_left <= 0) break;
        if (!h->msg) receipts_left--;
        if (h->msg) {
            if (keep_msgs || qk_unstored(qk, partition, h->offset, 1)) {
                keep_msgs = 1;
                if (!force) {
                    if (!oldest) oldest = h;
                    continue;
                }
                dropped++;
                qk_held_release(qk, partition, h, 0);
                continue;
            }
            if (now - h->since_ms >= qk->gate_timeout_ms) {
                overdue++;
                if (now - h->since_ms > waited) waited = now - h->since_ms;
            }
        } else if (!force && qk_gated(qk, partition, h->offset, 0)) {
            if (now - h->since_ms < qk->gate_timeout_ms) {
                if (keep_msgs) break; /* every later entry waits too */
                continue;
            }
            late++;
        }
        qk_held_release(qk, partition, h, 1);
    }
    if (oldest) qk_overdue_log(qk, partition, oldest, now);
    qk_late_log(qk, partition, late, overdue, waited, now);
    if (dropped)
        qk->api->log(qk->ctx, CHATD_LOG_INFO,
                     "stopping: %d deliveries of %s[%" PRId32 "] not yet stored are not fanned "
                     "out here",
                     dropped, qk->topic, partition);
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
}

void qk_gate_refuse(struct qk *qk, int32_t partition, int64_t offset, const char *reason)
{
    struct qk_held *h, *next;

    if (partition < 0 || partition >= qk->nheld_parts) return;
    for (h = TAILQ_FIRST(&qk->held[partition]); h; h = next) {
        next = TAILQ_NEXT(h, link);
        if (h->offset != offset) continue;
        if (h->done) qk->api->complete(h->done, CHATD_ERR_IO, reason);
        h->done = NULL;
        qk_held_release(qk, partition, h, 0); /* never fanned out: it is not in the history */
    }
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
}

void qk_gate_release_all(struct qk *qk, int force)
{
    int remote = 0;
    int64_t oldest_ms = 0, now = qk->api->now_ms();
    for (int32_t p = 0; p < qk->nheld_parts; p++) {
        const struct qk_held *h;
        qk_gate_release(qk, p, force);
        remote = remote || (!TAILQ_EMPTY(&qk->held[p]) && qk_remote(qk, p));
        TAILQ_FOREACH(h, &qk->held[p], link)
        if (h->msg) {
            if (now - h->since_ms > oldest_ms) oldest_ms = now - h->since_ms;
            break;
        }
    }
    /* how long the oldest fan-out delivery has waited for the store */
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held_oldest_ms", oldest_ms);
    if (qk->nheld == 0 && qk->gate_tick) event_del(qk->gate_tick);
    if (remote) qk_remote_poll_later(qk); /* e.g. partitions just revoked */
}

static void qk_gate_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    qk_gate_release_all(arg, 0);
}

/* Grow the per-partition tables to hold partition. 0, or -1 (no memory). */
static int qk_held_grow(struct qk *qk, int32_t partition)
{
    int32_t n = partition + 16;
    struct qk_held_part *np;
    struct qk_held_list *nl;
    if (partition < qk->nheld_parts) return 0;
    np = realloc(qk->held_part, (size_t)n * sizeof *np);
    if (!np) return -1;
    memset(np + qk->nheld_parts, 0, (size_t)(n - qk->nheld_parts) * sizeof *np);
    qk->held_part = np;
    nl = realloc(qk->held, (size_t)n * sizeof *nl);
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
    return 0;
}

/* Hold msg (a reference is taken over) or done until the watermark passes
 * offset. Returns 0, or -1 when it could not be held (release it now). */
int qk_hold(struct qk *qk, int32_t partition, int64_t offset, chatd_msg *msg,
            chatd_completion *done)
{
    struct qk_held *h;
    if (partition < 0 || partition >= QK_MAX_PARTITIONS || qk_held_grow(qk, partition) != 0)
        return -1;
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
    if (!msg) qk->held_part[partition].receipts++;
    if (msg) {
        struct qk_held_part *hp = &qk->held_part[partition];
        if (++hp->msgs >= qk->max_inflight && (!hp->paused || hp->msgs % 256 == 0))
            qk_fanout_pause(qk, partition, 1); /* again now and then: a re-assignment resumes */
        if (qk_remote(qk, partition)) qk_remote_poll_later(qk);
    }
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
 * unknown (a failed lookup would otherwise hold its fan-out until the next
 * assignment). */
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
                     "partitions wait until they are known");
}

/* Keep the committed offset of partition just read (the worker answers in
 * order, so this is the newest). */
static void qk_committed_set(struct qk *qk, int32_t partition, int64_t offset)
{
    if (partition < 0 || partition >= QK_MAX_PARTITIONS) return;
    if (partition >= qk->ncommitted) {
        int32_t n = partition + 16;
        int64_t *nc = realloc(qk->committed, (size_t)n * sizeof *nc);
        if (!nc) return; /* unknown: its fan-out waits for the next read */
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
                     " ms); deliveries wait until they are read (asked again)",
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
