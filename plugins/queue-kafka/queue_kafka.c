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
 *              local subscribers (CHATD_CONSUME_FANOUT). Each partition starts
 *              right after the store's head of it (qk_fanout_start.c), so
 *              nothing not yet stored is missed and no clock takes part.
 *
 * Threading: librdkafka's threads never call into the core. Each client's
 * event queue is bound to a pipe (rd_kafka_queue_io_event_enable) watched by
 * the core's libevent loop; delivery reports, rebalances and messages are then
 * served by non-blocking polls on the loop thread. The only other thread is
 * the one that closes the consumers at stop (qk_binding.c: a close can
 * block, so it runs there, and gives up after stop_timeout); it touches
 * nothing but those two handles and flags.
 *
 * Persist before fan-out and RECEIPT: for the partitions this node's persist
 * consumer owns, a fanned-out message and a sender's completion are held
 * until the store has committed that offset (the "persisted watermark"), so
 * a subscriber or sender who then asks for history finds the message. On a
 * single node that is every partition. Fan-out of a partition another node
 * persists waits for the group's committed offset to pass it (read every
 * remote_gate_poll ms while something waits); its delivery report goes out
 * at once. A fan-out delivery waits however long the store takes (logged
 * past gate_timeout); a RECEIPT at most gate_timeout ms. Committed offsets
 * are read by a worker thread, since rd_kafka_committed blocks (qk_gate.c).
 *
 * Backpressure: when more than max_inflight consumed messages are not yet
 * committed, the persist consumer's partitions are paused and resumed once
 * half drained. Poison: a message that fails to persist max_persist_attempts
 * times goes to the store's dead letters and its partition moves on.
 *
 * This file: config, the producer, create/start, the graceful stop and the
 * descriptor; the gate is in qk_gate.c, the consumers and the rebalance in
 * qk_partitions.c, the loop binding in qk_binding.c (see qk.h).
 */
#define _GNU_SOURCE
#include "config.h"

#include "qk.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* config                                                                   */
/* ------------------------------------------------------------------------ */

/* The only place the defaults are written; the core range-checks values. */
static const chatd_cfg_key qk_cfg_keys[] = {
    {.name = "topic",
     .type = CHATD_CFG_STRING,
     .default_value = "kafka-chat",
     .help = "Kafka topic carrying chat messages"},
    {.name = "group",
     .type = CHATD_CFG_STRING,
     .default_value = "chatd-persist",
     .help = "consumer group shared by every node that persists"},
    {.name = "persist",
     .type = CHATD_CFG_BOOL,
     .default_value = "true",
     .help = "this node joins the persisting consumer group"},
    {.name = "fanout",
     .type = CHATD_CFG_BOOL,
     .default_value = "true",
     .help = "this node reads every partition to deliver to its own subscribers"},
    {.name = "max_inflight",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 1,
     .max = 1000000,
     .help = "messages consumed but not yet committed (persisting, or persisted behind an "
             "earlier one) before the persist consumer pauses; also the fan-out deliveries "
             "held for the store, per partition, before the fan-out consumer pauses it (a "
             "pause drops what librdkafka had fetched ahead, fetched again on resume: keep it "
             "above a few seconds of traffic)"},
    {.name = "max_persist_attempts",
     .type = CHATD_CFG_INT,
     .default_value = "5",
     .min = 1,
     .max = 1000,
     .help = "failed persists of one message before it goes to the store's dead letters and "
             "its partition moves on"},
    {.name = "stop_timeout",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 100,
     .max = 600000,
     .help = "ms a graceful stop waits for delivery reports and persists"},
    {.name = "fanout_start",
     .type = CHATD_CFG_STRING,
     .default_value = "heads",
     .help = "where each partition's fan-out starts: heads, right after the store's head of "
             "it, or its beginning if the store holds nothing of it (no clock takes part); clock, "
             "fanout_lookback ms before this node's start by the producers' clocks"},
    {.name = "fanout_lookback",
     .type = CHATD_CFG_INT,
     .default_value = "2000",
     .min = 0,
     .max = 3600000,
     .help = "with fanout_start = clock (or a store without heads): ms before this node's "
             "start from which fan-out delivers (clock skew between nodes)"},
    {.name = "gate_timeout",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 0,
     .max = 600000,
     .help = "ms after which a fan-out delivery still waiting for the store is logged as "
             "overdue (again every gate_timeout; it goes out only once stored) and a RECEIPT "
             "waiting for this node's store is answered (durable in Kafka); 0: no wait for the "
             "store at all"},
    {.name = "remote_gate_poll",
     .type = CHATD_CFG_INT,
     .default_value = "20",
     .min = 1,
     .max = 10000,
     .help = "ms between reads of the persist group's committed offsets while fan-out of a "
             "partition another node persists waits for them"},
    {.name = "fetch_wait",
     .type = CHATD_CFG_INT,
     .default_value = "100",
     .min = 0,
     .max = 300000,
     .help = "ms a consumer's fetch waits at the broker while no message is there "
             "(fetch.wait.max.ms): a broker answers as soon as one arrives, so this bounds the "
             "idle fetches, not the latency (librdkafka's mock cluster waits it out: a few ms "
             "against it)"},
    {.name = "linger",
     .type = CHATD_CFG_INT,
     .default_value = "2",
     .min = 0,
     .max = 900000,
     .help = "ms the producer waits to batch messages before it sends them (linger.ms): added to "
             "each message's latency at chat rates; 0 saves it on a node of a few hundred msg/s, "
             "but costs a request per message (more CPU, and a longer tail when the machine is "
             "busy) from about a thousand"},
    {.name = "commit_interval",
     .type = CHATD_CFG_INT,
     .default_value = "20",
     .min = 1,
     .max = 60000,
     .help = "ms between commits of the persist consumer's stored offsets "
             "(auto.commit.interval.ms; nothing is sent when none moved): the other nodes fan a "
             "message out once that commit passes it, so it is most of their delivery delay"},
    {.name = "min_insync_replicas",
     .type = CHATD_CFG_INT,
     .default_value = "2",
     .min = 1,
     .max = 100,
     .help = "refuse to start unless the topic has at least this replication factor and "
             "min.insync.replicas (1: no check)"},
    {.name = "check_timeout",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 100,
     .max = 600000,
     .help = "ms the start-up check of the topic waits for the brokers"},
    {.name = "kafka.",
     .type = CHATD_CFG_STRING,
     .help =
         "librdkafka property for every client (kafka.producer.* / kafka.consumer.*: one side); "
         "chatd sets socket.nagle.disable=true (requests are not held for the answer to the one "
         "before), which kafka.socket.nagle.disable overrides"},
    {.name = NULL},
};

/* properties chatd sets itself: overriding them would break its guarantees */
static const char *const qk_fixed_props[] = {
    "acks",     "request.required.acks", "enable.idempotence",
    "group.id", "enable.auto.commit",    "enable.auto.offset.store",
    NULL};

struct qk_cfg_walk {
    struct qk *qk;
    int failed;
    int has_bootstrap;
};

static int qk_conf_set(struct qk *qk, rd_kafka_conf_t *conf, const char *cfgkey, const char *name,
                       const char *value)
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

/* Set librdkafka property name from the integer chatd key cfgkey. */
static int qk_conf_int(struct qk *qk, rd_kafka_conf_t *conf, const char *name, const char *cfgkey)
{
    char v[24];
    snprintf(v, sizeof v, "%" PRId64, pc_cfg_int(qk->api, qk->ctx, cfgkey));
    return qk_conf_set(qk, conf, cfgkey, name, v);
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
/* producer: enqueue and delivery reports (loop thread)                     */
/* ------------------------------------------------------------------------ */

static void qk_send_free(struct qk_send *s)
{
    if (s->msg) s->qk->api->msg_unref(s->msg);
    free(s);
}

static void qk_send_fail_task(void *arg)
{
    struct qk_send *s = arg;
    s->qk->api->complete(s->done, s->status, s->reason);
    qk_send_free(s);
}

static void qk_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    struct qk_client *c = opaque;
    struct qk *qk = c->qk;
    struct qk_send *s = m->_private;
    (void)rk;
    if (!s) return;
    qk->produce_pending--;
    if (m->err) {
        char reason[200];
        snprintf(reason, sizeof reason, "Kafka delivery failed: %s", rd_kafka_err2str(m->err));
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s", reason);
        qk->api->counter_add(qk->ctx, "chatd_kafka_produce_errors_total", 1);
        qk->api->complete(s->done, CHATD_ERR_IO, reason);
    } else {
        qk->api->counter_add(qk->ctx, "chatd_kafka_produced_total", 1);
        qk_set_pos(qk, s->msg, m->partition, m->offset); /* the publisher's answer names it */
        /* durable now; wait for the local store when it persists this */
        if (!qk_gated(qk, m->partition, m->offset, 0) ||
            qk_hold(qk, m->partition, m->offset, NULL, s->done) != 0)
            qk->api->complete(s->done, CHATD_OK, NULL);
    }
    qk->api->gauge_set(qk->ctx, "chatd_kafka_produce_pending", qk->produce_pending);
    qk_send_free(s);
}

static chatd_status qk_enqueue(void *inst, chatd_msg *msg, chatd_completion *done)
{
    struct qk *qk = inst;
    const chatd_api *api = qk->api;
    size_t len = 0;
    const char *json, *room;
    struct qk_send *s;
    rd_kafka_resp_err_t err;

    if (qk->state != QK_RUNNING || !qk->cl[QK_PRODUCER].rk) return CHATD_ERR_UNAVAILABLE;
    json = api->msg_json(msg, &len);
    room = api->msg_room(msg);
    if (!json || !room) return CHATD_ERR_NOMEM;
    s = calloc(1, sizeof *s);
    if (!s) return CHATD_ERR_NOMEM;
    s->qk = qk;
    s->done = done;
    s->msg = api->msg_ref(msg);
    err = rd_kafka_producev(qk->cl[QK_PRODUCER].rk, RD_KAFKA_V_RKT(qk->rkt),
                            RD_KAFKA_V_KEY(room, strlen(room)), RD_KAFKA_V_VALUE((void *)json, len),
                            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(s),
                            RD_KAFKA_V_END);
    if (err) {
        /* report the cause to the sender: complete on the next loop turn */
        s->status = err == RD_KAFKA_RESP_ERR__QUEUE_FULL          ? CHATD_ERR_BUSY
                    : err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ? CHATD_ERR_INVALID
                                                                  : CHATD_ERR_IO;
        snprintf(s->reason, sizeof s->reason, "Kafka produce failed: %s", rd_kafka_err2str(err));
        api->log(qk->ctx, CHATD_LOG_WARN, "%s (topic %s)", s->reason, qk->topic);
        api->counter_add(qk->ctx, "chatd_kafka_produce_errors_total", 1);
        if (api->post(qk->ctx, qk_send_fail_task, s) != CHATD_OK) {
            chatd_status st = s->status;
            qk_send_free(s);
            return st;
        }
        return CHATD_ASYNC;
    }
    qk->produce_pending++;
    api->gauge_set(qk->ctx, "chatd_kafka_produce_pending", qk->produce_pending);
    return CHATD_ASYNC;
}

/* create / start                                                           */
/* ------------------------------------------------------------------------ */

static void qk_free(struct qk *qk)
{
    qk_cq_stop(qk);
    if (qk->stop_tick) event_free(qk->stop_tick);
    if (qk->gate_tick) event_free(qk->gate_tick);
    if (qk->cq_retry) event_free(qk->cq_retry);
    if (qk->remote_poll) event_free(qk->remote_poll);
    for (int32_t p = 0; p < qk->nheld_parts; p++) {
        struct qk_held *h;
        while ((h = TAILQ_FIRST(&qk->held[p]))) {
            TAILQ_REMOVE(&qk->held[p], h, link);
            qk->api->msg_unref(h->msg); /* completions were finished at stop */
            free(h);
        }
    }
    free(qk->held);
    free(qk->held_part);
    if (qk->rkt) rd_kafka_topic_destroy(qk->rkt);
    for (int r = 0; r < QK_NROLES; r++)
        qk_client_destroy(&qk->cl[r]);
    for (int32_t p = 0; p < qk->ntracks; p++) {
        struct qk_track *t = qk->tracks[p];
        struct qk_entry *e;
        if (!t) continue;
        while ((e = TAILQ_FIRST(&t->entries))) {
            TAILQ_REMOVE(&t->entries, e, link);
            qk_entry_free(qk, e);
        }
        free(t);
    }
    free(qk->tracks);
    qk_fanout_seed_drop(qk);
    free(qk->fanout_next);
    free(qk->fanout_exact);
    free(qk->committed);
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

    if (!qk) return CHATD_ERR_NOMEM;
    if (!pc_api_ok(api, ctx)) {
        free(qk);
        return CHATD_ERR_INVALID;
    }
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
    qk->persist = pc_cfg_bool(api, ctx, "persist");
    qk->fanout = pc_cfg_bool(api, ctx, "fanout");
    qk->max_inflight = pc_cfg_int(api, ctx, "max_inflight");
    qk->max_persist_attempts = pc_cfg_int(api, ctx, "max_persist_attempts");
    qk->stop_timeout_ms = pc_cfg_int(api, ctx, "stop_timeout");
    qk->fanout_lookback_ms = pc_cfg_int(api, ctx, "fanout_lookback");
    const char *fstart = api->cfg_str(ctx, "fanout_start");
    if (!fstart || (strcmp(fstart, "heads") != 0 && strcmp(fstart, "clock") != 0)) {
        api->cfg_error(ctx, "fanout_start", "must be heads or clock");
        failed = 1;
    }
    qk->fanout_by_clock = fstart && strcmp(fstart, "clock") == 0;
    qk->gate_timeout_ms = pc_cfg_int(api, ctx, "gate_timeout");
    qk->remote_poll_ms = pc_cfg_int(api, ctx, "remote_gate_poll");
    qk->min_insync_replicas = pc_cfg_int(api, ctx, "min_insync_replicas");
    qk->check_timeout_ms = pc_cfg_int(api, ctx, "check_timeout");
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
        /* a request written while an earlier one is unacknowledged goes
         * out at once (TCP_NODELAY), not after the broker's answer */
        if (qk_conf_set(qk, conf, NULL, "client.id", "chatd") != 0 ||
            qk_conf_set(qk, conf, NULL, "socket.nagle.disable", "true") != 0)
            failed = 1;
        if (r == QK_PRODUCER) {
            /* murmur2 places keys as the Java clients do */
            if (qk_conf_set(qk, conf, NULL, "partitioner", "murmur2_random") != 0 ||
                qk_conf_int(qk, conf, "linger.ms", "linger") != 0)
                failed = 1;
        } else {
            /* stored offsets are committed every commit_interval: other
             * nodes hold fan-out of a partition until its owner's commit
             * (qk_gate.c), and a rebalance re-persists little */
            /* persist: from the start of what it has not committed; fan-out:
             * a start from the store's head past the partition's end (a
             * recreated topic) or before its start (trimmed) goes to the end,
             * what is not yet stored there is read from the store once stored */
            if (qk_conf_set(qk, conf, NULL, "auto.offset.reset",
                            r == QK_PERSIST ? "earliest" : "latest") != 0 ||
                qk_conf_int(qk, conf, "fetch.wait.max.ms", "fetch_wait") != 0 ||
                (r == QK_PERSIST &&
                 qk_conf_int(qk, conf, "auto.commit.interval.ms", "commit_interval") != 0))
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
    if (qk_conf_set(qk, pc, NULL, "acks", "all") ||
        qk_conf_set(qk, pc, NULL, "enable.idempotence", "true") ||
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

static chatd_status qk_start(void *inst)
{
    struct qk *qk = inst;
    qk->base = qk->api->event_base(qk->ctx);
    qk->start_ms = qk->api->now_ms();
    if (!qk->base) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "no event loop");
        return CHATD_ERR_INTERNAL;
    }
    if (qk_client_start(qk, &qk->cl[QK_PRODUCER], 0) != 0) return CHATD_ERR_IO;
    qk->rkt = rd_kafka_topic_new(qk->cl[QK_PRODUCER].rk, qk->topic, NULL);
    if (!qk->rkt) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "cannot open topic %s: %s", qk->topic,
                     rd_kafka_err2str(rd_kafka_last_error()));
        return CHATD_ERR_IO;
    }
    if (qk_topic_check(qk) != 0) return CHATD_ERR_INVALID;
    if (qk->persist && qk_client_start(qk, &qk->cl[QK_PERSIST], 1) != 0) return CHATD_ERR_IO;
    if (qk->persist) {
        int rc = pthread_create(&qk->cq_thread, NULL, qk_cq_main, qk);
        if (rc != 0) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "cannot start a thread: %s", strerror(rc));
            return CHATD_ERR_NOMEM;
        }
        qk->cq_started = 1;
    }
    /* created now, subscribed once the store's heads say where to start */
    if (qk->fanout && qk_client_start(qk, &qk->cl[QK_FANOUT], 0) != 0) return CHATD_ERR_IO;
    qk->state = QK_RUNNING;
    if (qk->fanout && qk_fanout_seed(qk) != 0) return CHATD_ERR_IO;
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "producing to topic %s; persist %s (group %s); fan-out %s", qk->topic,
                 qk->persist ? "on" : "off", qk->group, qk->fanout ? "on" : "off");
    return CHATD_OK;
}

/* ------------------------------------------------------------------------ */
/* graceful stop                                                            */
/* ------------------------------------------------------------------------ */

static void qk_stop_finish(struct qk *qk)
{
    chatd_completion *done = qk->stop_done;
    qk->state = QK_STOPPED;
    qk->stop_done = NULL;
    if (qk->stop_tick) event_del(qk->stop_tick);
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "stopped in %" PRId64 " ms (%" PRId64 " deliveries and %" PRId64
                 " persists left pending)",
                 qk->api->now_ms() - qk->stop_started_ms, qk->produce_pending, qk->awaiting);
    if (done) qk->api->complete(done, CHATD_OK, NULL);
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
        if (prod) rd_kafka_poll(prod, 0);
        if (qk->produce_pending > 0 || (prod && rd_kafka_outq_len(prod) > 0)) {
            if (!qk->purged && in_phase > qk->stop_timeout_ms / 2 && prod) {
                qk->api->log(qk->ctx, CHATD_LOG_WARN,
                             "%" PRId64 " messages still undelivered after %" PRId64
                             " ms: purging them (their senders get an error)",
                             qk->produce_pending, in_phase);
                rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
                qk->purged = 1;
            }
            if (in_phase < qk->stop_timeout_ms) return;
        }
        qk->stop_phase = QK_STOP_PERSIST;
        qk->phase_started_ms = now;
        /* fall through */
    case QK_STOP_PERSIST:
        if (qk->awaiting > 0 && now - qk->stop_started_ms < qk->stop_timeout_ms) return;
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

    if (qk->state != QK_RUNNING) return CHATD_OK;
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
    if (!qk) return;
    if (qk->closer_started) {
        /* bounded: the closer gives up after stop_timeout (qk_binding.c) */
        pthread_join(qk->closer, NULL);
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
    .version = PACKAGE_VERSION,
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
