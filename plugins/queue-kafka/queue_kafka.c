/*
 * queue_kafka.c - the queue-kafka plugin: Apache Kafka as chatd's message bus
 * (librdkafka).
 *
 * Three librdkafka clients per instance:
 *   producer   acks=all, idempotent, key = roomId (one partition per room keeps
 *              its order). enqueue completes when the delivery report arrives.
 *   persist    consumer of the group shared by every persisting node (`group`).
 *              Each message is handed to the core with CHATD_CONSUME_PERSIST;
 *              its offset is stored (rd_kafka_offsets_store) only once it and
 *              every earlier message of its partition are persisted, and
 *              committed by librdkafka's auto-commit: at-least-once, made
 *              exactly-once by the store's idempotent insert.
 *   fan-out    a consumer in a group of its own (unique id per process, no
 *              commits): this node reads every partition and delivers to its
 *              local subscribers (CHATD_CONSUME_FANOUT). It starts near the end
 *              of each partition (the last QK_FANOUT_TAIL messages) and skips
 *              what was produced before the node started (minus
 *              fanout_lookback ms), so nothing published after start is
 *              missed while the group is still joining.
 *
 * Threading: librdkafka's threads never call into the core. Each client's
 * event queue is bound to a pipe (rd_kafka_queue_io_event_enable) watched by
 * the core's libevent loop; delivery reports, rebalances and messages are then
 * served by non-blocking polls on the loop thread. The only other thread is
 * the one that closes the consumers at stop (rd_kafka_consumer_close blocks);
 * it touches nothing but those two handles and flags.
 *
 * Persist before fan-out and RECEIPT: for the partitions this node's persist
 * consumer owns, a fanned-out message and a sender's completion are held
 * until the store has committed that offset (the "persisted watermark"), so
 * a subscriber or sender who then asks for history finds the message. On a
 * single node that is every partition. Partitions owned by another node are
 * not waited for (their delivery report / fan-out go out at once); a hold
 * never lasts longer than gate_timeout ms. The base of each watermark (the
 * group's committed offset) is asked for by a worker thread, since
 * rd_kafka_committed blocks.
 *
 * Backpressure: when more than max_inflight persists are outstanding, the
 * persist consumer's partitions are paused and resumed once half drained.
 */
#define _GNU_SOURCE
#include <chatd/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <unistd.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#define QK_VERSION "0.1.0"
#define QK_POLL_BATCH 256            /* events served per loop callback */
#define QK_MAX_PARTITIONS 100000     /* bound on the partition tracker table */
#define QK_RETRY_MIN_MS 200          /* first persist retry delay */
#define QK_RETRY_MAX_MS 5000         /* largest persist retry delay */
#define QK_STOP_TICK_MS 20
#define QK_FANOUT_TAIL 10000         /* fan-out starts this far before the end */

enum qk_role { QK_PRODUCER = 0, QK_PERSIST = 1, QK_FANOUT = 2, QK_NROLES = 3 };
static const char *const qk_role_name[QK_NROLES] = {"producer", "persist consumer",
                                                    "fan-out consumer"};

enum qk_state { QK_CREATED, QK_RUNNING, QK_STOPPING, QK_STOPPED };
enum qk_stop_phase { QK_STOP_FLUSH, QK_STOP_PERSIST, QK_STOP_CLOSE };

struct qk;

/* One librdkafka handle and the pipe that wakes the loop for its queue. */
struct qk_client {
    struct qk *qk;
    enum qk_role role;
    rd_kafka_conf_t *conf; /* until rd_kafka_new takes it */
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int fds[2];
    struct event *ev;
    struct event *keepalive; /* consumers: poll even when idle */
    int polling; /* the loop serves this client's queue */
};

struct qk_track;

/* One consumed message of the persist consumer, in partition order. */
struct qk_entry {
    TAILQ_ENTRY(qk_entry) link;
    struct qk_track *track;
    int64_t offset;
    chatd_msg *msg;    /* held until persisted */
    struct event *retry;
    int backoff_ms;
    int done;          /* persisted (or skipped as malformed) */
    int awaiting;      /* a consume() call is outstanding */
};
TAILQ_HEAD(qk_entry_list, qk_entry);

/* Per-partition ordering of the persist consumer's offsets. */
struct qk_track {
    struct qk *qk;
    int32_t partition;
    int revoked; /* no longer ours: finish entries, store nothing */
    uint64_t gen; /* assignment generation that created it */
    int64_t base;   /* group's committed offset at assignment, -1 unknown */
    int64_t stored; /* offset after the last persisted message, -1 none */
    struct qk_entry_list entries;
};

/* Something waiting for the persisted watermark of its partition: a
 * fan-out delivery (msg) or a sender's completion (done). */
struct qk_held {
    TAILQ_ENTRY(qk_held) link;
    int64_t offset;
    int64_t since_ms;
    chatd_msg *msg;
    chatd_completion *done;
};
TAILQ_HEAD(qk_held_list, qk_held);

/* A request to the committed-offsets worker. */
struct qk_cq {
    struct qk *qk;
    uint64_t gen;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_resp_err_t err;
};

/* One produce waiting for its delivery report. */
struct qk_send {
    struct qk *qk;
    chatd_completion *done;
    chatd_status status; /* for a failure reported through post() */
    char reason[160];
};

struct qk {
    const chatd_api *api;
    chatd_ctx *ctx;
    struct event_base *base;
    enum qk_state state;

    /* config */
    const char *topic;
    const char *group;
    char fanout_group[96];
    int persist;
    int fanout;
    int64_t max_inflight;
    int64_t stop_timeout_ms;
    int64_t fanout_lookback_ms;
    int64_t start_ms;

    struct qk_client cl[QK_NROLES];
    rd_kafka_topic_t *rkt;

    /* producer */
    int64_t produce_pending;

    /* persist consumer */
    struct qk_track **tracks;
    int32_t ntracks;
    int64_t inflight;  /* consumed, not yet persisted */
    int64_t awaiting;  /* consume() calls outstanding */
    int paused;

    /* persisted-watermark holds, one list per partition */
    struct qk_held_list *held;
    int32_t nheld_parts;
    int64_t nheld;
    int64_t gate_timeout_ms;
    int assigned_once; /* the persist consumer has had an assignment */
    uint64_t assign_gen;
    struct event *gate_tick;

    /* committed-offsets worker */
    pthread_t cq_thread;
    int cq_started;
    pthread_mutex_t cq_mu;
    pthread_cond_t cq_cv;
    struct qk_cq *cq_req; /* one pending request (the newest wins) */
    int cq_quit;
    int cq_init;

    /* fan-out consumer: next offset per partition, -1 when unknown */
    int64_t *fanout_next;
    int32_t nfanout;

    /* stop */
    chatd_completion *stop_done;
    enum qk_stop_phase stop_phase;
    int64_t stop_started_ms;
    int64_t phase_started_ms;
    int purged;
    struct event *stop_tick;
    pthread_t closer;
    int closer_started;
    atomic_int closing; /* consumers belong to the closer thread */
    atomic_int closed;  /* the closer thread has finished */
};

/* ------------------------------------------------------------------------ */
/* config                                                                   */
/* ------------------------------------------------------------------------ */

static const chatd_cfg_key qk_cfg_keys[] = {
    {"topic", CHATD_CFG_STRING, "kafka-chat", 0, 0, "Kafka topic carrying chat messages"},
    {"group", CHATD_CFG_STRING, "chatd-persist", 0, 0,
     "consumer group shared by every node that persists"},
    {"persist", CHATD_CFG_BOOL, "true", 0, 0, "this node joins the persisting consumer group"},
    {"fanout", CHATD_CFG_BOOL, "true", 0, 0,
     "this node reads every partition to deliver to its own subscribers"},
    {"max_inflight", CHATD_CFG_INT, "1000", 1, 1000000,
     "persists outstanding before the persist consumer pauses"},
    {"stop_timeout", CHATD_CFG_INT, "10000", 100, 600000,
     "ms a graceful stop waits for delivery reports and persists"},
    {"fanout_lookback", CHATD_CFG_INT, "2000", 0, 3600000,
     "ms before this node's start from which fan-out delivers (clock skew between nodes)"},
    {"gate_timeout", CHATD_CFG_INT, "10000", 0, 600000,
     "ms a fan-out or RECEIPT waits at most for the local store to commit its message"},
    {"kafka.", CHATD_CFG_STRING, NULL, 0, 0,
     "librdkafka property for every client (kafka.producer.* / kafka.consumer.*: one side)"},
    {NULL, 0, NULL, 0, 0, NULL}};

/* properties chatd sets itself: overriding them would break its guarantees */
static const char *const qk_fixed_props[] = {
    "acks", "request.required.acks", "enable.idempotence", "group.id", "enable.auto.commit",
    "enable.auto.offset.store", NULL};

struct qk_cfg_walk {
    struct qk *qk;
    int failed;
    int has_bootstrap;
};

static int qk_conf_set(struct qk *qk, rd_kafka_conf_t *conf, const char *cfgkey,
                       const char *name, const char *value)
{
    char errstr[256];
    if (rd_kafka_conf_set(conf, name, value, errstr, sizeof errstr) != RD_KAFKA_CONF_OK) {
        if (cfgkey)
            qk->api->cfg_error(qk->ctx, cfgkey, "%s", errstr);
        else
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "librdkafka refused %s=%s: %s", name, value,
                         errstr);
        return -1;
    }
    return 0;
}

static void qk_cfg_one(void *arg, const char *key, const char *value)
{
    struct qk_cfg_walk *w = arg;
    struct qk *qk = w->qk;
    char cfgkey[256];
    const char *prop = key;
    int roles[QK_NROLES] = {1, 1, 1};

    if (snprintf(cfgkey, sizeof cfgkey, "kafka.%s", key) >= (int)sizeof cfgkey) {
        qk->api->cfg_error(qk->ctx, NULL, "kafka.%.40s...: key too long", key);
        w->failed = 1;
        return;
    }
    if (strncmp(key, "producer.", 9) == 0) {
        prop = key + 9;
        roles[QK_PERSIST] = roles[QK_FANOUT] = 0;
    } else if (strncmp(key, "consumer.", 9) == 0) {
        prop = key + 9;
        roles[QK_PRODUCER] = 0;
    }
    for (const char *const *f = qk_fixed_props; *f; f++) {
        if (strcmp(prop, *f) == 0) {
            qk->api->cfg_error(qk->ctx, cfgkey,
                               "set by chatd itself (acks=all, idempotence, offsets stored "
                               "after persist); use the group key for the group id");
            w->failed = 1;
            return;
        }
    }
    if (strcmp(prop, "bootstrap.servers") == 0 || strcmp(prop, "metadata.broker.list") == 0)
        w->has_bootstrap = 1;
    for (int r = 0; r < QK_NROLES; r++) {
        if (roles[r] && qk_conf_set(qk, qk->cl[r].conf, cfgkey, prop, value) != 0) {
            w->failed = 1;
            return;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* librdkafka callbacks that may run on its threads: log only               */
/* ------------------------------------------------------------------------ */

static void qk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    struct qk_client *c = rd_kafka_opaque(rk);
    chatd_log_level l = level <= 2   ? CHATD_LOG_ERROR
                        : level <= 4 ? CHATD_LOG_WARN
                        : level <= 6 ? CHATD_LOG_INFO
                                     : CHATD_LOG_DEBUG;
    c->qk->api->log(c->qk->ctx, l, "%s: librdkafka %s: %s", qk_role_name[c->role], fac, buf);
}

static void qk_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
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

static void qk_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *offsets, void *opaque)
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
    }
    else if (!err && offsets)
        c->qk->api->log(c->qk->ctx, CHATD_LOG_DEBUG, "committed offsets of %d partitions",
                        offsets->cnt);
}

/* ------------------------------------------------------------------------ */
/* persisted watermark: hold fan-out and RECEIPTs until the local store     */
/* has committed (loop thread)                                              */
/* ------------------------------------------------------------------------ */

/* Must (partition, offset) wait for the local store? */
static int qk_gated(struct qk *qk, int32_t partition, int64_t offset)
{
    struct qk_track *t;
    int64_t lw;
    if (!qk->persist || qk->state != QK_RUNNING || qk->gate_timeout_ms == 0)
        return 0;
    if (!qk->assigned_once)
        return 1; /* the group has not told us yet which partitions are ours */
    if (partition < 0 || partition >= qk->ntracks || !(t = qk->tracks[partition]))
        return 0; /* another node persists it */
    if (t->base < 0)
        return 1; /* committed offset not known yet */
    lw = t->stored > t->base ? t->stored : t->base;
    return offset >= lw;
}

static void qk_held_release(struct qk *qk, struct qk_held *h)
{
    if (h->done)
        qk->api->complete(h->done, CHATD_OK, NULL);
    if (h->msg) {
        qk->api->consume(qk->ctx, h->msg, CHATD_CONSUME_FANOUT, NULL, NULL);
        qk->api->msg_unref(h->msg);
    }
    free(h);
}

/* Release what no longer waits in one partition (everything when force),
 * keeping fan-out messages in offset order. */
static void qk_gate_release(struct qk *qk, int32_t partition, int force)
{
    struct qk_held *h, *next;
    int keep_msgs = 0, timed_out = 0;
    int64_t now;

    if (partition < 0 || partition >= qk->nheld_parts)
        return;
    now = qk->api->now_ms();
    for (h = TAILQ_FIRST(&qk->held[partition]); h; h = next) {
        next = TAILQ_NEXT(h, link);
        if (!force) {
            int wait = qk_gated(qk, partition, h->offset);
            if (wait && now - h->since_ms >= qk->gate_timeout_ms) {
                wait = 0;
                timed_out++;
            }
            if (wait || (h->msg && keep_msgs)) {
                if (h->msg)
                    keep_msgs = 1;
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
                     " ms without the local store's commit (is the store slow or down?)",
                     timed_out, qk->topic, partition, qk->gate_timeout_ms);
    qk->api->gauge_set(qk->ctx, "chatd_kafka_held", qk->nheld);
}

static void qk_gate_release_all(struct qk *qk, int force)
{
    for (int32_t p = 0; p < qk->nheld_parts; p++)
        qk_gate_release(qk, p, force);
    if (qk->nheld == 0 && qk->gate_tick)
        event_del(qk->gate_tick);
}

static void qk_gate_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    qk_gate_release_all(arg, 0);
}

/* Hold msg (a reference is taken over) or done until the watermark passes
 * offset. Returns 0, or -1 when it could not be held (release it now). */
static int qk_hold(struct qk *qk, int32_t partition, int64_t offset, chatd_msg *msg,
                   chatd_completion *done)
{
    struct qk_held *h;
    if (partition < 0 || partition >= QK_MAX_PARTITIONS)
        return -1;
    if (partition >= qk->nheld_parts) {
        int32_t n = partition + 16;
        struct qk_held_list *nl = realloc(qk->held, (size_t)n * sizeof *nl);
        if (!nl)
            return -1;
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
        if (!qk->gate_tick)
            return -1;
    }
    if (!evtimer_pending(qk->gate_tick, NULL)) {
        struct timeval tv = {0, 100 * 1000};
        if (evtimer_add(qk->gate_tick, &tv) != 0)
            return -1;
    }
    h = calloc(1, sizeof *h);
    if (!h)
        return -1;
    h->offset = offset;
    h->since_ms = qk->api->now_ms();
    h->msg = msg;
    h->done = done;
    TAILQ_INSERT_TAIL(&qk->held[partition], h, link);
    qk->nheld++;
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

static void qk_cq_done(void *arg)
{
    struct qk_cq *r = arg;
    struct qk *qk = r->qk;
    if (qk->state != QK_RUNNING) {
        qk_cq_free(r);
        return;
    }
    if (r->err)
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "cannot read the committed offsets of group %s: %s; deliveries wait at "
                     "most gate_timeout",
                     qk->group, rd_kafka_err2str(r->err));
    for (int i = 0; i < r->parts->cnt && !r->err; i++) {
        rd_kafka_topic_partition_t *e = &r->parts->elems[i];
        int32_t p = e->partition;
        struct qk_track *t = p >= 0 && p < qk->ntracks ? qk->tracks[p] : NULL;
        if (!t || t->base >= 0 || t->gen > r->gen || e->err)
            continue;
        /* no commit yet: the group starts at the beginning, all of it ours */
        t->base = e->offset >= 0 ? e->offset : 0;
    }
    qk_cq_free(r);
    qk_gate_release_all(qk, 0);
}

static void *qk_cq_main(void *arg)
{
    struct qk *qk = arg;
    pthread_mutex_lock(&qk->cq_mu);
    for (;;) {
        while (!qk->cq_req && !qk->cq_quit)
            pthread_cond_wait(&qk->cq_cv, &qk->cq_mu);
        if (qk->cq_quit)
            break;
        struct qk_cq *r = qk->cq_req;
        qk->cq_req = NULL;
        pthread_mutex_unlock(&qk->cq_mu);
        r->err = rd_kafka_committed(qk->cl[QK_PERSIST].rk, r->parts, 5000);
        if (qk->api->post(qk->ctx, qk_cq_done, r) != CHATD_OK)
            qk_cq_free(r);
        pthread_mutex_lock(&qk->cq_mu);
    }
    pthread_mutex_unlock(&qk->cq_mu);
    return NULL;
}

/* ask the worker for the committed offsets of newly assigned partitions */
static void qk_cq_ask(struct qk *qk, const rd_kafka_topic_partition_list_t *parts)
{
    if (!qk->cq_started || parts->cnt == 0)
        return;
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
    }
    pthread_mutex_unlock(&qk->cq_mu);
}

static void qk_cq_stop(struct qk *qk)
{
    if (!qk->cq_started)
        return;
    pthread_mutex_lock(&qk->cq_mu);
    qk->cq_quit = 1;
    pthread_cond_signal(&qk->cq_cv);
    pthread_mutex_unlock(&qk->cq_mu);
    pthread_join(qk->cq_thread, NULL);
    qk->cq_started = 0;
    qk_cq_free(qk->cq_req);
    qk->cq_req = NULL;
}

/* ------------------------------------------------------------------------ */
/* producer: enqueue and delivery reports (loop thread)                     */
/* ------------------------------------------------------------------------ */

static void qk_send_fail_task(void *arg)
{
    struct qk_send *s = arg;
    s->qk->api->complete(s->done, s->status, s->reason);
    free(s);
}

static void qk_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct qk_client *c = opaque;
    struct qk *qk = c->qk;
    struct qk_send *s = m->_private;
    (void)rk;
    if (!s)
        return;
    qk->produce_pending--;
    if (m->err) {
        char reason[200];
        snprintf(reason, sizeof reason, "Kafka delivery failed: %s", rd_kafka_err2str(m->err));
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s", reason);
        qk->api->counter_add(qk->ctx, "chatd_kafka_produce_errors_total", 1);
        qk->api->complete(s->done, CHATD_ERR_IO, reason);
    } else {
        qk->api->counter_add(qk->ctx, "chatd_kafka_produced_total", 1);
        /* durable now; wait for the local store when it persists this */
        if (!qk_gated(qk, m->partition, m->offset) ||
            qk_hold(qk, m->partition, m->offset, NULL, s->done) != 0)
            qk->api->complete(s->done, CHATD_OK, NULL);
    }
    qk->api->gauge_set(qk->ctx, "chatd_kafka_produce_pending", qk->produce_pending);
    free(s);
}

static chatd_status qk_enqueue(void *inst, chatd_msg *msg, chatd_completion *done)
{
    struct qk *qk = inst;
    const chatd_api *api = qk->api;
    size_t len = 0;
    const char *json, *room;
    struct qk_send *s;
    rd_kafka_resp_err_t err;

    if (qk->state != QK_RUNNING || !qk->cl[QK_PRODUCER].rk)
        return CHATD_ERR_UNAVAILABLE;
    json = api->msg_json(msg, &len);
    room = api->msg_room(msg);
    if (!json || !room)
        return CHATD_ERR_NOMEM;
    s = calloc(1, sizeof *s);
    if (!s)
        return CHATD_ERR_NOMEM;
    s->qk = qk;
    s->done = done;
    err = rd_kafka_producev(qk->cl[QK_PRODUCER].rk, RD_KAFKA_V_RKT(qk->rkt),
                            RD_KAFKA_V_KEY(room, strlen(room)),
                            RD_KAFKA_V_VALUE((void *)json, len),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(s),
                            RD_KAFKA_V_END);
    if (err) {
        /* report the cause to the sender: complete on the next loop turn */
        s->status = err == RD_KAFKA_RESP_ERR__QUEUE_FULL         ? CHATD_ERR_BUSY
                    : err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? CHATD_ERR_INVALID
                                                                  : CHATD_ERR_IO;
        snprintf(s->reason, sizeof s->reason, "Kafka produce failed: %s",
                 rd_kafka_err2str(err));
        api->log(qk->ctx, CHATD_LOG_WARN, "%s (topic %s)", s->reason, qk->topic);
        api->counter_add(qk->ctx, "chatd_kafka_produce_errors_total", 1);
        if (api->post(qk->ctx, qk_send_fail_task, s) != CHATD_OK) {
            chatd_status st = s->status;
            free(s);
            return st;
        }
        return CHATD_ASYNC;
    }
    qk->produce_pending++;
    api->gauge_set(qk->ctx, "chatd_kafka_produce_pending", qk->produce_pending);
    return CHATD_ASYNC;
}

/* ------------------------------------------------------------------------ */
/* persist consumer: ordered offset store, retries, backpressure           */
/* ------------------------------------------------------------------------ */

static void qk_pause_check(struct qk *qk)
{
    rd_kafka_t *rk = qk->cl[QK_PERSIST].rk;
    rd_kafka_topic_partition_list_t *parts = NULL;
    int want_pause;

    if (!rk || atomic_load(&qk->closing))
        return;
    if (!qk->paused && qk->inflight >= qk->max_inflight)
        want_pause = 1;
    else if (qk->paused && qk->inflight <= qk->max_inflight / 2)
        want_pause = 0;
    else
        return;
    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "cannot read the consumer assignment to %s it",
                     want_pause ? "pause" : "resume");
        return;
    }
    rd_kafka_resp_err_t err = want_pause ? rd_kafka_pause_partitions(rk, parts)
                                         : rd_kafka_resume_partitions(rk, parts);
    if (err)
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s of %d partitions failed: %s",
                     want_pause ? "pause" : "resume", parts->cnt, rd_kafka_err2str(err));
    qk->paused = want_pause;
    qk->api->log(qk->ctx, want_pause ? CHATD_LOG_WARN : CHATD_LOG_INFO,
                 want_pause ? "store is behind: %" PRId64
                              " persists in flight, pausing the persist consumer"
                            : "store caught up (%" PRId64 " in flight): resuming the persist "
                              "consumer",
                 qk->inflight);
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_paused", want_pause);
    rd_kafka_topic_partition_list_destroy(parts);
}

static struct qk_track *qk_track_new(struct qk *qk, int32_t partition)
{
    struct qk_track *t;
    if (partition < 0 || partition >= QK_MAX_PARTITIONS)
        return NULL;
    if (partition >= qk->ntracks) {
        int32_t n = partition + 16;
        struct qk_track **nt = realloc(qk->tracks, (size_t)n * sizeof *nt);
        if (!nt)
            return NULL;
        memset(nt + qk->ntracks, 0, (size_t)(n - qk->ntracks) * sizeof *nt);
        qk->tracks = nt;
        qk->ntracks = n;
    }
    if (qk->tracks[partition])
        return qk->tracks[partition];
    t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->qk = qk;
    t->partition = partition;
    t->gen = qk->assign_gen;
    t->base = -1;
    t->stored = -1;
    TAILQ_INIT(&t->entries);
    qk->tracks[partition] = t;
    return t;
}

static void qk_entry_free(struct qk *qk, struct qk_entry *e)
{
    if (e->retry)
        event_free(e->retry);
    qk->api->msg_unref(e->msg);
    free(e);
}

static void qk_track_revoke(struct qk *qk, int32_t partition)
{
    struct qk_track *t;
    if (partition < 0 || partition >= qk->ntracks || !(t = qk->tracks[partition]))
        return;
    qk->tracks[partition] = NULL;
    t->revoked = 1;
    if (TAILQ_EMPTY(&t->entries))
        free(t);
    /* otherwise freed when its last entry finishes (qk_track_advance) */
}

/* Drop finished entries from the head of the partition; store the offset
 * after the last one so auto-commit writes it. */
static void qk_track_advance(struct qk *qk, struct qk_track *t)
{
    struct qk_entry *e;
    int64_t next = -1;
    while ((e = TAILQ_FIRST(&t->entries)) && e->done) {
        next = e->offset + 1;
        TAILQ_REMOVE(&t->entries, e, link);
        qk_entry_free(qk, e);
    }
    if (t->revoked) {
        if (TAILQ_EMPTY(&t->entries))
            free(t);
        return;
    }
    if (next >= 0) {
        t->stored = next;
        qk_gate_release(qk, t->partition, 0);
    }
    if (next >= 0 && qk->cl[QK_PERSIST].rk && !atomic_load(&qk->closing)) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        if (!l) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "out of memory storing an offset");
            return;
        }
        rd_kafka_topic_partition_list_add(l, qk->topic, t->partition)->offset = next;
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(qk->cl[QK_PERSIST].rk, l);
        if (err || l->elems[0].err)
            qk->api->log(qk->ctx, CHATD_LOG_DEBUG, "offset store %s[%" PRId32 "]@%" PRId64
                         " skipped: %s", qk->topic, t->partition, next,
                         rd_kafka_err2str(err ? err : l->elems[0].err));
        rd_kafka_topic_partition_list_destroy(l);
    }
}

static void qk_persist_done(void *arg, chatd_status st);

static void qk_persist_send(struct qk *qk, struct qk_entry *e)
{
    e->awaiting = 1;
    qk->awaiting++;
    qk->api->consume(qk->ctx, e->msg, CHATD_CONSUME_PERSIST, qk_persist_done, e);
}

static void qk_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk_entry *e = arg;
    struct qk *qk = e->track->qk;
    (void)fd;
    (void)what;
    if (qk->state != QK_RUNNING)
        return; /* abandoned: not stored, redelivered after a restart */
    qk_persist_send(qk, e);
}

static void qk_persist_done(void *arg, chatd_status st)
{
    struct qk_entry *e = arg;
    struct qk_track *t = e->track;
    struct qk *qk = t->qk;

    e->awaiting = 0;
    qk->awaiting--;
    if (st == CHATD_OK) {
        e->done = 1;
        qk->inflight--;
        qk->api->counter_add(qk->ctx, "chatd_kafka_persisted_total", 1);
        qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_inflight", qk->inflight);
        qk_track_advance(qk, t);
        qk_pause_check(qk);
        return;
    }
    if (qk->state != QK_RUNNING || t->revoked) {
        /* never stored: the next owner of the partition gets it again */
        qk->api->log(qk->ctx, CHATD_LOG_INFO,
                     "persist of %s[%" PRId32 "]@%" PRId64 " failed (%s) while %s; left for "
                     "redelivery",
                     qk->topic, t->partition, e->offset, qk->api->status_str(st),
                     t->revoked ? "revoked" : "stopping");
        qk->inflight--;
        if (t->revoked) {
            e->done = 1; /* nothing is stored for a revoked partition */
            qk_track_advance(qk, t);
        }
        return;
    }
    e->backoff_ms = e->backoff_ms ? e->backoff_ms * 2 : QK_RETRY_MIN_MS;
    if (e->backoff_ms > QK_RETRY_MAX_MS)
        e->backoff_ms = QK_RETRY_MAX_MS;
    qk->api->log(qk->ctx, CHATD_LOG_WARN,
                 "persist of %s[%" PRId32 "]@%" PRId64 " failed (%s); retrying in %d ms",
                 qk->topic, t->partition, e->offset, qk->api->status_str(st), e->backoff_ms);
    qk->api->counter_add(qk->ctx, "chatd_kafka_persist_retries_total", 1);
    if (!e->retry)
        e->retry = evtimer_new(qk->base, qk_retry_cb, e);
    struct timeval tv = {e->backoff_ms / 1000, (e->backoff_ms % 1000) * 1000};
    if (!e->retry || evtimer_add(e->retry, &tv) != 0)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot schedule a persist retry; %s[%" PRId32 "] stalls until restart",
                     qk->topic, t->partition);
}

static void qk_persist_message(struct qk *qk, rd_kafka_message_t *m)
{
    struct qk_track *t = NULL;
    struct qk_entry *e;
    chatd_msg *msg = NULL;

    if (m->partition >= 0 && m->partition < qk->ntracks)
        t = qk->tracks[m->partition];
    if (!t)
        t = qk_track_new(qk, m->partition);
    e = t ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "out of memory tracking %s[%" PRId32 "]@%" PRId64 "; it is redelivered "
                     "after a restart",
                     qk->topic, m->partition, m->offset);
        return;
    }
    e->track = t;
    e->offset = m->offset;
    TAILQ_INSERT_TAIL(&t->entries, e, link);
    if (qk->api->msg_from_json(qk->ctx, m->payload, m->len, &msg) != CHATD_OK || !msg) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "skipping a malformed message at %s[%" PRId32 "]@%" PRId64
                     " (not chatd wire JSON)",
                     qk->topic, m->partition, m->offset);
        qk->api->counter_add(qk->ctx, "chatd_kafka_malformed_total", 1);
        e->done = 1;
        qk_track_advance(qk, t);
        return;
    }
    e->msg = msg;
    qk->inflight++;
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_inflight", qk->inflight);
    qk_persist_send(qk, e);
    qk_pause_check(qk);
}

static int64_t *qk_fanout_slot(struct qk *qk, int32_t partition)
{
    if (partition < 0 || partition >= QK_MAX_PARTITIONS)
        return NULL;
    if (partition >= qk->nfanout) {
        int32_t n = partition + 16;
        int64_t *nf = realloc(qk->fanout_next, (size_t)n * sizeof *nf);
        if (!nf)
            return NULL;
        for (int32_t i = qk->nfanout; i < n; i++)
            nf[i] = -1;
        qk->fanout_next = nf;
        qk->nfanout = n;
    }
    return &qk->fanout_next[partition];
}

static void qk_fanout_message(struct qk *qk, rd_kafka_message_t *m)
{
    chatd_msg *msg = NULL;
    int64_t *next = qk_fanout_slot(qk, m->partition);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);

    if (next) {
        if (*next >= 0 && m->offset < *next)
            return; /* already delivered before a re-assignment */
        *next = m->offset + 1;
    }
    if (ts >= 0 && ts < qk->start_ms - qk->fanout_lookback_ms)
        return; /* produced before this node started: its subscribers came later */
    if (qk->api->msg_from_json(qk->ctx, m->payload, m->len, &msg) != CHATD_OK || !msg) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "fan-out: skipping a malformed message at %s[%" PRId32 "]@%" PRId64,
                     qk->topic, m->partition, m->offset);
        qk->api->counter_add(qk->ctx, "chatd_kafka_malformed_total", 1);
        return;
    }
    /* persisted here first (and after what is already held, in order) */
    if ((qk_gated(qk, m->partition, m->offset) ||
         (m->partition < qk->nheld_parts && !TAILQ_EMPTY(&qk->held[m->partition]))) &&
        qk_hold(qk, m->partition, m->offset, msg, NULL) == 0) {
        qk_gate_release(qk, m->partition, 0);
        return;
    }
    qk->api->consume(qk->ctx, msg, CHATD_CONSUME_FANOUT, NULL, NULL);
    qk->api->msg_unref(msg);
}

/* ------------------------------------------------------------------------ */
/* rebalance (loop thread, or the closer thread while closing)             */
/* ------------------------------------------------------------------------ */

static void qk_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                            rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct qk_client *c = opaque;
    struct qk *qk = c->qk;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int closing = atomic_load(&qk->closing);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (c->role == QK_FANOUT && !closing) {
            for (int i = 0; i < parts->cnt; i++) {
                int64_t *next = qk_fanout_slot(qk, parts->elems[i].partition);
                parts->elems[i].offset =
                    next && *next >= 0 ? *next : RD_KAFKA_OFFSET_TAIL(QK_FANOUT_TAIL);
            }
        }
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        if (closing)
            goto out;
        if (c->role == QK_PERSIST) {
            qk->assign_gen++;
            for (int i = 0; i < parts->cnt; i++)
                if (!qk_track_new(qk, parts->elems[i].partition))
                    qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                                 "cannot track partition %" PRId32 " (out of memory or "
                                 "beyond %d partitions)",
                                 parts->elems[i].partition, QK_MAX_PARTITIONS);
            if (qk->paused && parts->cnt > 0)
                rd_kafka_pause_partitions(rk, parts);
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "persist consumer: assigned %d partitions of %s (group %s)",
                         parts->cnt, qk->topic, qk->group);
            qk->assigned_once = 1;
            qk_cq_ask(qk, parts);
            qk_gate_release_all(qk, 0); /* what another node persists goes now */
        } else {
            /* offsets were set before the assign call below took effect */
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "fan-out consumer ready: reading %d partitions of %s from the end "
                         "(group %s)",
                         parts->cnt, qk->topic, qk->fanout_group);
        }
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !closing)
            qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s: rebalance error %s; unassigning",
                         qk_role_name[c->role], rd_kafka_err2str(err));
        if (!closing && c->role == QK_PERSIST) {
            for (int i = 0; i < parts->cnt; i++) {
                qk_track_revoke(qk, parts->elems[i].partition);
                qk_gate_release(qk, parts->elems[i].partition, 0);
            }
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "persist consumer: %d partitions revoked (group %s)", parts->cnt,
                         qk->group);
        }
        /* with enable.auto.commit librdkafka commits the stored offsets of
         * the partitions being removed */
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
    }
out:
    if (error) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: incremental (un)assign failed: %s",
                     qk_role_name[c->role], rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: (un)assign failed: %s",
                     qk_role_name[c->role], rd_kafka_err2str(aerr));
    }
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
    if (!c->polling)
        return;
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
    if (served >= QK_POLL_BATCH && c->polling)
        event_active(c->ev, EV_READ, 0);
}

static void qk_keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk_client *c = arg;
    (void)fd;
    (void)what;
    if (c->polling && c->ev)
        event_active(c->ev, EV_READ, 0);
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
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: no librdkafka queue",
                     qk_role_name[c->role]);
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

static void qk_client_unbind(struct qk_client *c)
{
    c->polling = 0;
    if (c->keepalive) {
        event_free(c->keepalive);
        c->keepalive = NULL;
    }
    if (c->q)
        rd_kafka_queue_io_event_enable(c->q, -1, NULL, 0);
    if (c->ev) {
        event_free(c->ev);
        c->ev = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (c->fds[i] >= 0)
            close(c->fds[i]);
        c->fds[i] = -1;
    }
}

static void qk_client_destroy(struct qk_client *c)
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
/* create / start                                                           */
/* ------------------------------------------------------------------------ */

static void qk_free(struct qk *qk)
{
    qk_cq_stop(qk);
    if (qk->stop_tick)
        event_free(qk->stop_tick);
    if (qk->gate_tick)
        event_free(qk->gate_tick);
    for (int32_t p = 0; p < qk->nheld_parts; p++) {
        struct qk_held *h;
        while ((h = TAILQ_FIRST(&qk->held[p]))) {
            TAILQ_REMOVE(&qk->held[p], h, link);
            qk->api->msg_unref(h->msg); /* completions were finished at stop */
            free(h);
        }
    }
    free(qk->held);
    if (qk->rkt)
        rd_kafka_topic_destroy(qk->rkt);
    for (int r = 0; r < QK_NROLES; r++)
        qk_client_destroy(&qk->cl[r]);
    for (int32_t p = 0; p < qk->ntracks; p++) {
        struct qk_track *t = qk->tracks[p];
        struct qk_entry *e;
        if (!t)
            continue;
        while ((e = TAILQ_FIRST(&t->entries))) {
            TAILQ_REMOVE(&t->entries, e, link);
            qk_entry_free(qk, e);
        }
        free(t);
    }
    free(qk->tracks);
    free(qk->fanout_next);
    if (qk->cq_init) {
        pthread_mutex_destroy(&qk->cq_mu);
        pthread_cond_destroy(&qk->cq_cv);
    }
    free(qk);
}

static chatd_status qk_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    struct qk *qk = calloc(1, sizeof *qk);
    struct qk_cfg_walk w = {0};
    unsigned char rnd[8];
    int failed = 0;

    if (!qk)
        return CHATD_ERR_NOMEM;
    qk->api = api;
    qk->ctx = ctx;
    qk->state = QK_CREATED;
    atomic_init(&qk->closing, 0);
    atomic_init(&qk->closed, 0);
    if (pthread_mutex_init(&qk->cq_mu, NULL) != 0) {
        free(qk);
        return CHATD_ERR_NOMEM;
    }
    if (pthread_cond_init(&qk->cq_cv, NULL) != 0) {
        pthread_mutex_destroy(&qk->cq_mu);
        free(qk);
        return CHATD_ERR_NOMEM;
    }
    qk->cq_init = 1;
    for (int r = 0; r < QK_NROLES; r++) {
        qk->cl[r].qk = qk;
        qk->cl[r].role = (enum qk_role)r;
        qk->cl[r].fds[0] = qk->cl[r].fds[1] = -1;
    }
    qk->topic = api->cfg_str(ctx, "topic");
    qk->group = api->cfg_str(ctx, "group");
    qk->persist = api->cfg_bool(ctx, "persist", 1);
    qk->fanout = api->cfg_bool(ctx, "fanout", 1);
    qk->max_inflight = api->cfg_int(ctx, "max_inflight", 1000);
    qk->stop_timeout_ms = api->cfg_int(ctx, "stop_timeout", 10000);
    qk->fanout_lookback_ms = api->cfg_int(ctx, "fanout_lookback", 2000);
    qk->gate_timeout_ms = api->cfg_int(ctx, "gate_timeout", 10000);
    if (!qk->topic || !*qk->topic) {
        api->cfg_error(ctx, "topic", "must not be empty");
        failed = 1;
    }
    if (!qk->group || !*qk->group) {
        api->cfg_error(ctx, "group", "must not be empty");
        failed = 1;
    }
    if (failed) {
        qk_free(qk);
        return CHATD_ERR_INVALID;
    }
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        api->log(ctx, CHATD_LOG_ERROR, "getrandom failed: %s", strerror(errno));
        qk_free(qk);
        return CHATD_ERR_IO;
    }
    snprintf(qk->fanout_group, sizeof qk->fanout_group,
             "%.60s-fanout-%02x%02x%02x%02x%02x%02x%02x%02x", qk->group, rnd[0], rnd[1], rnd[2],
             rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);

    for (int r = 0; r < QK_NROLES; r++) {
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        qk->cl[r].conf = conf;
        if (!conf) {
            qk_free(qk);
            return CHATD_ERR_NOMEM;
        }
        rd_kafka_conf_set_opaque(conf, &qk->cl[r]);
        rd_kafka_conf_set_log_cb(conf, qk_log_cb);
        rd_kafka_conf_set_error_cb(conf, qk_error_cb);
        if (qk_conf_set(qk, conf, NULL, "client.id", "chatd") != 0)
            failed = 1;
        if (r == QK_PRODUCER) {
            /* murmur2 places keys as the Java clients do */
            if (qk_conf_set(qk, conf, NULL, "partitioner", "murmur2_random") != 0)
                failed = 1;
        } else {
            /* a broker answers a fetch as soon as data arrives; this bounds
             * the wait of an idle fetch (and the latency with brokers, such
             * as librdkafka's mock cluster, that always wait it out). Offsets
             * are committed every second so that a rebalance re-persists
             * little. */
            if (qk_conf_set(qk, conf, NULL, "auto.offset.reset", "earliest") != 0 ||
                qk_conf_set(qk, conf, NULL, "fetch.wait.max.ms", "100") != 0 ||
                qk_conf_set(qk, conf, NULL, "auto.commit.interval.ms", "1000") != 0)
                failed = 1;
        }
    }
    w.qk = qk;
    api->cfg_each(ctx, "kafka.", qk_cfg_one, &w);
    if (w.failed || failed) {
        qk_free(qk);
        return CHATD_ERR_INVALID;
    }
    if (!w.has_bootstrap) {
        api->cfg_error(ctx, "kafka.bootstrap.servers",
                       "required: the brokers to connect to, e.g. kafka1:9092,kafka2:9092");
        qk_free(qk);
        return CHATD_ERR_INVALID;
    }
    /* what chatd's guarantees rest on, set last so nothing overrides it */
    rd_kafka_conf_t *pc = qk->cl[QK_PRODUCER].conf, *cc = qk->cl[QK_PERSIST].conf,
                    *fc = qk->cl[QK_FANOUT].conf;
    rd_kafka_conf_set_dr_msg_cb(pc, qk_dr_cb);
    rd_kafka_conf_set_rebalance_cb(cc, qk_rebalance_cb);
    rd_kafka_conf_set_offset_commit_cb(cc, qk_commit_cb);
    rd_kafka_conf_set_rebalance_cb(fc, qk_rebalance_cb);
    if (qk_conf_set(qk, pc, NULL, "acks", "all") || qk_conf_set(qk, pc, NULL, "enable.idempotence", "true") ||
        qk_conf_set(qk, cc, NULL, "group.id", qk->group) ||
        qk_conf_set(qk, cc, NULL, "enable.auto.commit", "true") ||
        qk_conf_set(qk, cc, NULL, "enable.auto.offset.store", "false") ||
        qk_conf_set(qk, fc, NULL, "group.id", qk->fanout_group) ||
        qk_conf_set(qk, fc, NULL, "enable.auto.commit", "false") ||
        qk_conf_set(qk, fc, NULL, "enable.auto.offset.store", "false")) {
        qk_free(qk);
        return CHATD_ERR_INVALID;
    }
    *inst = qk;
    return CHATD_OK;
}

static int qk_client_start(struct qk *qk, struct qk_client *c)
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
    if (qk_client_bind(qk, c) != 0)
        return -1;
    if (type == RD_KAFKA_CONSUMER) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_resp_err_t err;
        if (!l)
            return -1;
        rd_kafka_topic_partition_list_add(l, qk->topic, RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        if (err) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: subscribe to %s failed: %s",
                         qk_role_name[c->role], qk->topic, rd_kafka_err2str(err));
            return -1;
        }
    }
    return 0;
}

static chatd_status qk_start(void *inst)
{
    struct qk *qk = inst;
    qk->base = qk->api->event_base(qk->ctx);
    qk->start_ms = qk->api->now_ms();
    if (!qk->base) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "no event loop");
        return CHATD_ERR_INTERNAL;
    }
    if (qk_client_start(qk, &qk->cl[QK_PRODUCER]) != 0)
        return CHATD_ERR_IO;
    qk->rkt = rd_kafka_topic_new(qk->cl[QK_PRODUCER].rk, qk->topic, NULL);
    if (!qk->rkt) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "cannot open topic %s: %s", qk->topic,
                     rd_kafka_err2str(rd_kafka_last_error()));
        return CHATD_ERR_IO;
    }
    if (qk->persist && qk_client_start(qk, &qk->cl[QK_PERSIST]) != 0)
        return CHATD_ERR_IO;
    if (qk->persist) {
        int rc = pthread_create(&qk->cq_thread, NULL, qk_cq_main, qk);
        if (rc != 0) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "cannot start a thread: %s", strerror(rc));
            return CHATD_ERR_NOMEM;
        }
        qk->cq_started = 1;
    }
    if (qk->fanout && qk_client_start(qk, &qk->cl[QK_FANOUT]) != 0)
        return CHATD_ERR_IO;
    qk->state = QK_RUNNING;
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "producing to topic %s; persist %s (group %s); fan-out %s", qk->topic,
                 qk->persist ? "on" : "off", qk->group, qk->fanout ? "on" : "off");
    return CHATD_OK;
}

/* ------------------------------------------------------------------------ */
/* graceful stop                                                            */
/* ------------------------------------------------------------------------ */

/* The closer thread owns the consumers from now on: commit what was stored,
 * leave the groups. Rebalance callbacks it triggers only (un)assign. */
static void *qk_closer_main(void *arg)
{
    struct qk *qk = arg;
    rd_kafka_t *p = qk->cl[QK_PERSIST].rk, *f = qk->cl[QK_FANOUT].rk;
    qk_cq_stop(qk); /* may wait for one rd_kafka_committed call */
    if (p) {
        rd_kafka_resp_err_t err = rd_kafka_commit(p, NULL, 0);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            qk->api->log(qk->ctx, CHATD_LOG_WARN,
                         "final offset commit failed: %s (those messages are persisted again "
                         "by the next owner; the store ignores duplicates)",
                         rd_kafka_err2str(err));
        err = rd_kafka_consumer_close(p);
        if (err)
            qk->api->log(qk->ctx, CHATD_LOG_WARN, "persist consumer close: %s",
                         rd_kafka_err2str(err));
    }
    if (f) {
        rd_kafka_resp_err_t err = rd_kafka_consumer_close(f);
        if (err)
            qk->api->log(qk->ctx, CHATD_LOG_WARN, "fan-out consumer close: %s",
                         rd_kafka_err2str(err));
    }
    atomic_store(&qk->closed, 1);
    return NULL;
}

static void qk_stop_finish(struct qk *qk)
{
    chatd_completion *done = qk->stop_done;
    qk->state = QK_STOPPED;
    qk->stop_done = NULL;
    if (qk->stop_tick)
        event_del(qk->stop_tick);
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "stopped in %" PRId64 " ms (%" PRId64 " deliveries and %" PRId64
                 " persists left pending)",
                 qk->api->now_ms() - qk->stop_started_ms, qk->produce_pending, qk->awaiting);
    if (done)
        qk->api->complete(done, CHATD_OK, NULL);
}

static void qk_stop_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk *qk = arg;
    int64_t now = qk->api->now_ms();
    int64_t in_phase = now - qk->phase_started_ms;
    rd_kafka_t *prod = qk->cl[QK_PRODUCER].rk;
    (void)fd;
    (void)what;

    switch (qk->stop_phase) {
    case QK_STOP_FLUSH:
        if (prod)
            rd_kafka_poll(prod, 0);
        if (qk->produce_pending > 0 || (prod && rd_kafka_outq_len(prod) > 0)) {
            if (!qk->purged && in_phase > qk->stop_timeout_ms / 2 && prod) {
                qk->api->log(qk->ctx, CHATD_LOG_WARN,
                             "%" PRId64 " messages still undelivered after %" PRId64
                             " ms: purging them (their senders get an error)",
                             qk->produce_pending, in_phase);
                rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                qk->purged = 1;
            }
            if (in_phase < qk->stop_timeout_ms)
                return;
        }
        qk->stop_phase = QK_STOP_PERSIST;
        qk->phase_started_ms = now;
        /* fall through */
    case QK_STOP_PERSIST:
        if (qk->awaiting > 0 && now - qk->stop_started_ms < qk->stop_timeout_ms)
            return;
        qk_client_unbind(&qk->cl[QK_PERSIST]);
        qk_client_unbind(&qk->cl[QK_FANOUT]);
        atomic_store(&qk->closing, 1);
        qk->stop_phase = QK_STOP_CLOSE;
        qk->phase_started_ms = now;
        if (qk->cl[QK_PERSIST].rk || qk->cl[QK_FANOUT].rk) {
            int rc = pthread_create(&qk->closer, NULL, qk_closer_main, qk);
            if (rc != 0) {
                qk->api->log(qk->ctx, CHATD_LOG_WARN,
                             "cannot start the consumer closer thread: %s; consumers are "
                             "dropped without leaving their groups",
                             strerror(rc));
                atomic_store(&qk->closed, 1);
            } else {
                qk->closer_started = 1;
            }
        } else {
            atomic_store(&qk->closed, 1);
        }
        /* fall through */
    case QK_STOP_CLOSE:
        if (atomic_load(&qk->closed)) {
            if (qk->closer_started) {
                pthread_join(qk->closer, NULL);
                qk->closer_started = 0;
            }
            qk_stop_finish(qk);
        } else if (in_phase > qk->stop_timeout_ms) {
            qk->api->log(qk->ctx, CHATD_LOG_WARN,
                         "consumers did not close within %" PRId64 " ms; finishing the stop "
                         "(the brokers may be unreachable)",
                         qk->stop_timeout_ms);
            qk_stop_finish(qk);
        }
        return;
    }
}

static chatd_status qk_stop(void *inst, chatd_completion *done)
{
    struct qk *qk = inst;
    struct timeval tv = {0, QK_STOP_TICK_MS * 1000};

    if (qk->state != QK_RUNNING)
        return CHATD_OK;
    qk->state = QK_STOPPING;
    qk->stop_done = done;
    qk->stop_started_ms = qk->phase_started_ms = qk->api->now_ms();
    qk->stop_phase = QK_STOP_FLUSH;
    /* no new consumption: fan-out has no subscribers left, persist work not
     * yet started is redelivered to the group's next owner */
    qk->cl[QK_FANOUT].polling = 0;
    qk->cl[QK_PERSIST].polling = 0;
    qk_gate_release_all(qk, 1); /* durable already: answer the senders */
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "stopping: flushing %" PRId64 " deliveries, waiting for %" PRId64 " persists",
                 qk->produce_pending, qk->awaiting);
    qk->stop_tick = event_new(qk->base, -1, EV_PERSIST, qk_stop_tick_cb, qk);
    if (!qk->stop_tick || event_add(qk->stop_tick, &tv) != 0) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "cannot schedule the stop; stopping at once");
        qk->stop_done = NULL;
        qk->state = QK_STOPPED;
        return CHATD_OK;
    }
    return CHATD_ASYNC;
}

static void qk_destroy(void *inst)
{
    struct qk *qk = inst;
    if (!qk)
        return;
    if (qk->closer_started) {
        pthread_join(qk->closer, NULL); /* the loop is gone: waiting is fine */
        qk->closer_started = 0;
    }
    qk_free(qk);
}

static const chatd_queue_ops qk_ops = {
    .size = sizeof(chatd_queue_ops),
    .enqueue = qk_enqueue,
};

static const chatd_plugin_desc qk_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_QUEUE,
    .name = "queue-kafka",
    .version = QK_VERSION,
    .description = "Apache Kafka queue: idempotent producer, shared persist group, "
                   "per-node fan-out (librdkafka)",
    .cfg_keys = qk_cfg_keys,
    .create = qk_create,
    .start = qk_start,
    .stop = qk_stop,
    .destroy = qk_destroy,
    .reload = NULL,
    .ops = &qk_ops,
};

CHATD_PLUGIN_DEFINE(qk_desc)
