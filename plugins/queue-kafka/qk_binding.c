/*
 * qk_binding.c - librdkafka bound to the core's libevent loop. Each client's
 * event queue is bound to a pipe (rd_kafka_queue_io_event_enable) watched by
 * the loop; delivery reports, rebalances and messages are then served by
 * non-blocking polls on the loop thread, QK_POLL_BATCH at a time, and
 * consumers are polled every second even when idle (max.poll.interval.ms).
 * librdkafka's own threads never call into the core except through the log
 * callbacks here, which only log (api->log is "any thread"). And the
 * closer thread of the graceful stop: the final commit and the consumers'
 * close, bounded by stop_timeout.
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

const char *const qk_role_name[QK_NROLES] = {"producer", "persist consumer", "fan-out consumer"};

/* ------------------------------------------------------------------------ */
/* librdkafka callbacks that may run on its threads: log only               */
/* ------------------------------------------------------------------------ */

void qk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct qk_client *c = rd_kafka_opaque(rk);
    chatd_log_level l = level <= 2   ? CHATD_LOG_ERROR
                        : level <= 4 ? CHATD_LOG_WARN
                        : level <= 6 ? CHATD_LOG_INFO
                                     : CHATD_LOG_DEBUG;
    c->qk->api->log(c->qk->ctx, l, "%s: librdkafka %s: %s", qk_role_name[c->role], fac, buf);
}

void qk_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct qk_client *c = opaque;
    char fatal[256];
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, fatal, sizeof fatal);
        c->qk->api->log(c->qk->ctx, CHATD_LOG_ERROR,
                        "%s: fatal Kafka error %s: %s; restart this node after checking the "
                        "cluster",
                        qk_role_name[c->role], rd_kafka_err2name(orig), fatal);
        return;
    }
    c->qk->api->log(c->qk->ctx, CHATD_LOG_WARN, "%s: Kafka error %s: %s (check the brokers)",
                    qk_role_name[c->role], rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

void qk_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                  void *opaque)
{
    struct qk_client *c = opaque;
    (void)rk;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
        /* during a rebalance these are expected: the next owner resumes from
         * the last commit and the store ignores what it persists again */
        int routine = err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
                      err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                      err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION;
        c->qk->api->log(c->qk->ctx, routine ? CHATD_LOG_INFO : CHATD_LOG_WARN,
                        "offset commit of group %s failed: %s (retried at the next commit)",
                        c->qk->group, rd_kafka_err2str(err));
    } else if (!err && offsets)
        c->qk->api->log(c->qk->ctx, CHATD_LOG_DEBUG, "committed offsets of %d partitions",
                        offsets->cnt);
}

/* ------------------------------------------------------------------------ */
/* the loop side of each client: pipe readable -> serve its queue          */
/* ------------------------------------------------------------------------ */

static void qk_client_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk_client *c = arg;
    struct qk *qk = c->qk;
    char buf[64];
    int served = 0;
    (void)what;

    while (read(fd, buf, sizeof buf) > 0)
        ;
    if (!c->polling) return;
    if (c->role == QK_PRODUCER) {
        int n;
        while (served < QK_POLL_BATCH && (n = rd_kafka_poll(c->rk, 0)) > 0)
            served += n;
    } else {
        rd_kafka_message_t *m;
        while (c->polling && served < QK_POLL_BATCH && (m = rd_kafka_consumer_poll(c->rk, 0))) {
            served++;
            if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                    qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s: %s", qk_role_name[c->role],
                                 rd_kafka_message_errstr(m));
            } else if (c->role == QK_PERSIST) {
                qk_persist_message(qk, m);
            } else {
                qk_fanout_message(qk, m);
            }
            rd_kafka_message_destroy(m);
        }
    }
    /* the pipe is written only when the queue turns non-empty: if we stopped
     * at the batch bound, come back on the next loop turn */
    if (served >= QK_POLL_BATCH && c->polling) event_active(c->ev, EV_READ, 0);
}

static void qk_keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk_client *c = arg;
    (void)fd;
    (void)what;
    if (c->polling && c->ev) {
        c->qk->api->counter_add(c->qk->ctx, "chatd_kafka_keepalive_polls_total", 1);
        event_active(c->ev, EV_READ, 0);
    }
}

static int qk_client_bind(struct qk *qk, struct qk_client *c)
{
    static const char wake = 'k';
    if (pipe2(c->fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: pipe: %s (raise the fd limit)",
                     qk_role_name[c->role], strerror(errno));
        c->fds[0] = c->fds[1] = -1;
        return -1;
    }
    c->q = c->role == QK_PRODUCER ? rd_kafka_queue_get_main(c->rk)
                                  : rd_kafka_queue_get_consumer(c->rk);
    if (!c->q) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: no librdkafka queue", qk_role_name[c->role]);
        return -1;
    }
    c->ev = event_new(qk->base, c->fds[0], EV_READ | EV_PERSIST, qk_client_cb, c);
    if (!c->ev || event_add(c->ev, NULL) != 0) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: cannot watch the librdkafka queue",
                     qk_role_name[c->role]);
        return -1;
    }
    if (c->role != QK_PRODUCER) {
        /* librdkafka counts the time between consumer polls against
         * max.poll.interval.ms and leaves the group when it runs out: poll
         * every second even when nothing arrives */
        struct timeval tv = {1, 0};
        c->keepalive = event_new(qk->base, -1, EV_PERSIST, qk_keepalive_cb, c);
        if (!c->keepalive || event_add(c->keepalive, &tv) != 0) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: cannot schedule the poll timer",
                         qk_role_name[c->role]);
            return -1;
        }
    }
    c->polling = 1;
    rd_kafka_queue_io_event_enable(c->q, c->fds[1], &wake, 1);
    /* anything queued before the binding: serve it now */
    event_active(c->ev, EV_READ, 0);
    return 0;
}

void qk_client_unbind(struct qk_client *c)
{
    c->polling = 0;
    if (c->keepalive) {
        event_free(c->keepalive);
        c->keepalive = NULL;
    }
    if (c->q) rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (c->fds[i] >= 0) close(c->fds[i]);
        c->fds[i] = -1;
    }
}

void qk_client_destroy(struct qk_client *c)
{
    qk_client_unbind(c);
    if (c->q) {
        rd_kafka_queue_destroy(c->q);
        c->q = NULL;
    }
    if (c->rk) {
        rd_kafka_destroy_flags(c->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
        c->rk = NULL;
    }
    if (c->conf) {
        rd_kafka_conf_destroy(c->conf);
        c->conf = NULL;
    }
}

/* ------------------------------------------------------------------------ */

int qk_client_start(struct qk *qk, struct qk_client *c, int subscribe)
{
    char errstr[512];
    rd_kafka_type_t type = c->role == QK_PRODUCER ? RD_KAFKA_PRODUCER : RD_KAFKA_CONSUMER;

    c->rk = rd_kafka_new(type, c->conf, errstr, sizeof errstr);
    if (!c->rk) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: cannot create the Kafka client: %s",
                     qk_role_name[c->role], errstr);
        return -1;
    }
    c->conf = NULL; /* owned by rk now */
    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_resp_err_t err = rd_kafka_poll_set_consumer(c->rk);
        if (err) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: %s", qk_role_name[c->role],
                         rd_kafka_err2str(err));
            return -1;
        }
    }
    if (qk_client_bind(qk, c) != 0) return -1;
    return type == RD_KAFKA_CONSUMER && subscribe ? qk_client_subscribe(qk, c) : 0;
}

int qk_client_subscribe(struct qk *qk, struct qk_client *c)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_resp_err_t err;
    if (!l) return -1;
    rd_kafka_topic_partition_list_add(l, qk->topic, RD_KAFKA_PARTITION_UA);
    err = rd_kafka_subscribe(c->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: subscribe to %s failed: %s",
                     qk_role_name[c->role], qk->topic, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* closing the consumers at stop (the closer thread)                        */
/* ------------------------------------------------------------------------ */

static int64_t qk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The final commit's answer (closer thread). */
struct qk_final {
    struct qk *qk;
    int answered;
};

static void qk_final_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                               rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    struct qk_final *f = opaque;
    (void)rk;
    (void)offsets;
    f->answered = 1;
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        f->qk->api->log(f->qk->ctx, CHATD_LOG_WARN,
                        "final offset commit failed: %s (those messages are persisted again by "
                        "the next owner; the store ignores duplicates)",
                        rd_kafka_err2str(err));
}

/* Start closing consumer rk on a queue of its own; NULL when that failed
 * (logged: the handle is destroyed without leaving its group). */
static rd_kafka_queue_t *qk_close_start(struct qk *qk, rd_kafka_t *rk, const char *what)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_error_t *err = q ? rd_kafka_consumer_close_queue(rk, q) : NULL;
    if (q && !err) return q;
    qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s close: %s; dropped without leaving its group", what,
                 err ? rd_kafka_error_string(err) : "out of memory");
    if (err) rd_kafka_error_destroy(err);
    if (q) rd_kafka_queue_destroy(q);
    return NULL;
}

/* Serve a closing consumer's queue for up to ms (closer thread). The close
 * forwards the consumer's group queue, and with it the partitions' fetch
 * queues, to q, so besides the rebalance and commit answers it may carry
 * messages fetched before the fetchers stopped. rd_kafka_queue_poll_callback
 * cannot serve those (librdkafka asserts on an op a callback does not take),
 * so q is served as events: a rebalance goes to the rebalance callback
 * (unassign), a commit answer to the commit callback, an error is logged and
 * a fetched message is dropped (it was not persisted, so its offset is not
 * committed and the next owner reads it again). */
static void qk_close_serve(rd_kafka_t *rk, rd_kafka_queue_t *q, int ms)
{
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ms);
    struct qk_client *c = rd_kafka_opaque(rk);
    if (!ev) return;
    switch (rd_kafka_event_type(ev)) {
    case RD_KAFKA_EVENT_REBALANCE:
        qk_rebalance_cb(rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), c);
        break;
    case RD_KAFKA_EVENT_OFFSET_COMMIT:
        qk_commit_cb(rk, rd_kafka_event_error(ev), rd_kafka_event_topic_partition_list(ev), c);
        break;
    case RD_KAFKA_EVENT_ERROR:
        qk_error_cb(rk, rd_kafka_event_error(ev), rd_kafka_event_error_string(ev), c);
        break;
    default: /* fetched messages and the rest: nothing to do at close */
        break;
    }
    rd_kafka_event_destroy(ev);
}

/* The closer thread owns the consumers from now on: commit what was stored,
 * leave the groups, serving their queues (rebalance callbacks only
 * (un)assign) until both closed or stop_timeout ms passed: a close can take
 * longer than session.timeout.ms during a rebalance, and what is left then
 * is abandoned (logged; the group gives the partitions to other nodes when
 * the session times out). Never blocks past that deadline (plus at most one
 * committed-offsets read of the worker, 5 s). */
void *qk_closer_main(void *arg)
{
    struct qk *qk = arg;
    rd_kafka_t *p = qk->cl[QK_PERSIST].rk, *f = qk->cl[QK_FANOUT].rk;
    rd_kafka_queue_t *pq = NULL, *fq = NULL;
    struct qk_final fin = {.qk = qk};
    int64_t deadline = qk_mono_ms() + qk->stop_timeout_ms;

    qk_cq_stop(qk); /* may wait for one rd_kafka_committed call */
    if (p && (pq = rd_kafka_queue_new(p))) {
        rd_kafka_resp_err_t err = rd_kafka_commit_queue(p, NULL, pq, qk_final_commit_cb, &fin);
        if (err) fin.answered = 1;
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            qk->api->log(qk->ctx, CHATD_LOG_WARN,
                         "final offset commit failed: %s (those messages are persisted again "
                         "by the next owner; the store ignores duplicates)",
                         rd_kafka_err2str(err));
        while (!fin.answered && qk_mono_ms() < deadline)
            rd_kafka_queue_poll_callback(pq, 50);
        rd_kafka_queue_destroy(pq);
    }
    if (!fin.answered && p)
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "the final offset commit was not answered within stop_timeout (%" PRId64
                     " ms); the next owner persists those messages again",
                     qk->stop_timeout_ms);
    if (p) pq = qk_close_start(qk, p, "persist consumer");
    if (f) fq = qk_close_start(qk, f, "fan-out consumer");
    for (;;) {
        int pdone = !pq || rd_kafka_consumer_closed(p), fdone = !fq || rd_kafka_consumer_closed(f);
        if (pdone && fdone) break;
        if (qk_mono_ms() >= deadline) {
            qk->api->log(qk->ctx, CHATD_LOG_WARN,
                         "%s%s%s did not close within stop_timeout (%" PRId64
                         " ms; a rebalance, or the brokers unreachable): abandoned, the group "
                         "gives its partitions to other nodes after session.timeout.ms",
                         pdone ? "" : "the persist consumer", pdone || fdone ? "" : " and ",
                         fdone ? "" : "the fan-out consumer", qk->stop_timeout_ms);
            break;
        }
        if (!pdone) qk_close_serve(p, pq, 50);
        if (!fdone) qk_close_serve(f, fq, 50);
    }
    if (pq) rd_kafka_queue_destroy(pq);
    if (fq) rd_kafka_queue_destroy(fq);
    atomic_store(&qk->closed, 1);
    return NULL;
}
