/*
 * qk_topic_check.c - what queue-kafka requires of its topic, checked once at
 * start before anyone is served: acks=all is only as strong as the topic's
 * replication and its min.insync.replicas, so chatd refuses to start unless
 * every partition has at least `min_insync_replicas` replicas (metadata) and
 * the topic's min.insync.replicas (DescribeConfigs, admin API) is at least
 * that too. `min_insync_replicas = 1` turns the check off (one broker, tests).
 * Both requests block for at most `check_timeout` ms, at start-up only.
 */
#include "qk.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The topic's min.insync.replicas through DescribeConfigs; -1 when it cannot
 * be read (reason in why). */
static int64_t qk_topic_min_isr(struct qk *qk, rd_kafka_t *rk, int timeout_ms, char *why,
                                size_t cap)
{
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_ConfigResource_t *res =
        rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, qk->topic);
    rd_kafka_event_t *ev = NULL;
    const rd_kafka_DescribeConfigs_result_t *dr;
    const rd_kafka_ConfigResource_t **rs;
    const rd_kafka_ConfigEntry_t **ce;
    size_t nrs = 0, nce = 0;
    int64_t v = -1;

    snprintf(why, cap, "out of memory");
    if (q && res) {
        rd_kafka_DescribeConfigs(rk, &res, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, timeout_ms);
        snprintf(why, cap, "no answer within %d ms", timeout_ms);
    }
    if (ev && rd_kafka_event_error(ev)) {
        snprintf(why, cap, "%s", rd_kafka_event_error_string(ev));
    } else if (ev && (dr = rd_kafka_event_DescribeConfigs_result(ev)) &&
               (rs = rd_kafka_DescribeConfigs_result_resources(dr, &nrs)) && nrs == 1) {
        if (rd_kafka_ConfigResource_error(rs[0])) {
            snprintf(why, cap, "%s", rd_kafka_ConfigResource_error_string(rs[0]));
        } else {
            ce = rd_kafka_ConfigResource_configs(rs[0], &nce);
            snprintf(why, cap, "the broker did not list it");
            for (size_t i = 0; i < nce; i++)
                if (strcmp(rd_kafka_ConfigEntry_name(ce[i]), "min.insync.replicas") == 0 &&
                    rd_kafka_ConfigEntry_value(ce[i]))
                    v = strtoll(rd_kafka_ConfigEntry_value(ce[i]), NULL, 10);
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    if (res) rd_kafka_ConfigResource_destroy(res);
    if (q) rd_kafka_queue_destroy(q);
    return v;
}

int qk_topic_check(struct qk *qk)
{
    rd_kafka_t *rk = qk->cl[QK_PRODUCER].rk;
    const struct rd_kafka_metadata *md = NULL;
    const rd_kafka_metadata_topic_t *t;
    int timeout = (int)qk->check_timeout_ms, rf = -1, ok = 0;
    int64_t need = qk->min_insync_replicas, min_isr;
    rd_kafka_resp_err_t err;
    char why[256];

    if (need <= 1) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "min_insync_replicas = 1: the replication of topic %s is not checked; a "
                     "broker lost can lose messages that got a RECEIPT",
                     qk->topic);
        return 0;
    }
    err = rd_kafka_metadata(rk, 0, qk->rkt, &md, timeout);
    if (err || !md || md->topic_cnt != 1) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot read the metadata of topic %s within %d ms: %s; chatd checks the "
                     "topic's replication before it starts: start it once Kafka answers (or "
                     "set min_insync_replicas = 1 in [%s] to skip the check)",
                     qk->topic, timeout, rd_kafka_err2str(err), qk->api->instance_name(qk->ctx));
        goto out;
    }
    t = &md->topics[0];
    if (t->err || t->partition_cnt < 1) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "topic %s is not usable (%s); create it with a replication factor of at "
                     "least %" PRId64 " and min.insync.replicas=%" PRId64 " (see docs/kafka.md)",
                     qk->topic, rd_kafka_err2str(t->err), need, need);
        goto out;
    }
    for (int i = 0; i < t->partition_cnt; i++)
        if (rf < 0 || t->partitions[i].replica_cnt < rf) rf = t->partitions[i].replica_cnt;
    if (rf < need) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "topic %s has a replication factor of %d, below min_insync_replicas = "
                     "%" PRId64 ": a RECEIPT could rest on fewer brokers; recreate the topic "
                     "with a replication factor of at least %" PRId64 " (or lower "
                     "min_insync_replicas in [%s], knowingly)",
                     qk->topic, rf, need, need, qk->api->instance_name(qk->ctx));
        goto out;
    }
    min_isr = qk_topic_min_isr(qk, rk, timeout, why, sizeof(why));
    if (min_isr < 0) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot read min.insync.replicas of topic %s (%s); allow chatd's "
                     "principal DescribeConfigs on the topic (or set min_insync_replicas = 1 "
                     "in [%s] to skip the check)",
                     qk->topic, why, qk->api->instance_name(qk->ctx));
        goto out;
    }
    if (min_isr < need) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "topic %s has min.insync.replicas=%" PRId64 ", below min_insync_replicas "
                     "= %" PRId64 ": acks=all would accept a write held by fewer brokers; run "
                     "kafka-configs --alter --entity-type topics --entity-name %s --add-config "
                     "min.insync.replicas=%" PRId64 " (or lower min_insync_replicas in [%s], "
                     "knowingly)",
                     qk->topic, min_isr, need, qk->topic, need, qk->api->instance_name(qk->ctx));
        goto out;
    }
    qk->api->log(qk->ctx, CHATD_LOG_INFO,
                 "topic %s: %d partitions, replication factor %d, min.insync.replicas=%" PRId64
                 " (at least %" PRId64 " required)",
                 qk->topic, t->partition_cnt, rf, min_isr, need);
    ok = 1;
out:
    if (md) rd_kafka_metadata_destroy(md);
    return ok ? 0 : -1;
}
