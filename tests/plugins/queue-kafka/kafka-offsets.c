/*
 * kafka-offsets.c - test helper: what a consumer group has committed on a
 * topic, and what the topic holds, so that a test can compare it with the
 * store (tests/faults/sigterm.mjs on Kafka).
 *
 *   kafka-offsets BOOTSTRAP TOPIC GROUP
 *
 * Prints, for each partition of TOPIC:
 *   partition P committed C high H     (C = -1: nothing committed)
 * then one line per record of the partition, oldest first:
 *   record P OFFSET ID TYPE ROOM       (ID: the chatd message id of the
 *                                       record's JSON, or - if it has none;
 *                                       TYPE: its "type", chat or read, or -;
 *                                       ROOM: its "roomId", or -)
 * The group is only read (its committed offsets are fetched, never changed:
 * the records are read by a consumer without a group). Exit 0, or 1 with the
 * reason on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#define TIMEOUT_MS 10000

static rd_kafka_t *client(const char *bootstrap, const char *group)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.offset.store", "false", err, sizeof err) ||
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err)) {
        fprintf(stderr, "kafka-offsets: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (!rk) fprintf(stderr, "kafka-offsets: cannot create a consumer: %s\n", err);
    return rk;
}

/* the value of a top-level key of a chatd wire message: digits (a number or
 * a string of digits), letters or '&' (room ids); 0, or -1 when absent */
static int record_field(const rd_kafka_message_t *m, const char *key, char *out, size_t n)
{
    char buf[4096], pat[32];
    size_t len = m->len < sizeof buf - 1 ? m->len : sizeof buf - 1;
    memcpy(buf, m->payload ? m->payload : "", len);
    buf[len] = '\0';
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(buf, pat);
    if (!p) return -1;
    p += strlen(pat);
    while (*p == ' ' || *p == '"')
        p++;
    size_t k = 0;
    while (((p[k] >= '0' && p[k] <= '9') || (p[k] >= 'a' && p[k] <= 'z') || p[k] == '&') &&
           k + 1 < n) {
        out[k] = p[k];
        k++;
    }
    out[k] = '\0';
    return k ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: kafka-offsets BOOTSTRAP TOPIC GROUP\n");
        return 1;
    }
    const char *topic = argv[2];
    rd_kafka_t *rk = client(argv[1], argv[3]);
    if (!rk) return 1;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err =
        rkt ? rd_kafka_metadata(rk, 0, rkt, &md, TIMEOUT_MS) : RD_KAFKA_RESP_ERR__INVALID_ARG;
    if (err || !md || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "kafka-offsets: no metadata for topic %s: %s\n", topic,
                rd_kafka_err2str(err                   ? err
                                 : md && md->topic_cnt ? md->topics[0].err
                                                       : err));
        return 1;
    }
    int nparts = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);

    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
    for (int p = 0; p < nparts; p++)
        rd_kafka_topic_partition_list_add(parts, topic, p);
    if ((err = rd_kafka_committed(rk, parts, TIMEOUT_MS))) {
        fprintf(stderr, "kafka-offsets: committed offsets of group %s: %s\n", argv[3],
                rd_kafka_err2str(err));
        return 1;
    }
    int64_t *high = calloc((size_t)nparts, sizeof *high);
    if (!high) return 1;
    for (int p = 0; p < nparts; p++) {
        int64_t lo = 0, c = parts->elems[p].offset;
        if ((err = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &high[p], TIMEOUT_MS))) {
            fprintf(stderr, "kafka-offsets: watermarks of %s [%d]: %s\n", topic, p,
                    rd_kafka_err2str(err));
            return 1;
        }
        printf("partition %d committed %" PRId64 " high %" PRId64 "\n", p, c < 0 ? -1 : c, high[p]);
    }

    /* every record, read from the start of each partition */
    for (int p = 0; p < nparts; p++)
        parts->elems[p].offset = RD_KAFKA_OFFSET_BEGINNING;
    if ((err = rd_kafka_assign(rk, parts))) {
        fprintf(stderr, "kafka-offsets: assign: %s\n", rd_kafka_err2str(err));
        return 1;
    }
    int left = 0;
    for (int p = 0; p < nparts; p++)
        left += high[p] > 0;
    int64_t *next = calloc((size_t)nparts, sizeof *next);
    if (!next) return 1;
    int idle = 0;
    while (left > 0 && idle < 30) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
        if (!m) {
            idle++;
            continue;
        }
        idle = 0;
        if (!m->err && m->partition >= 0 && m->partition < nparts) {
            char id[32], type[16], room[64];
            int p = m->partition;
            printf("record %d %" PRId64 " %s %s %s\n", p, m->offset,
                   record_field(m, "id", id, sizeof id) == 0 ? id : "-",
                   record_field(m, "type", type, sizeof type) == 0 ? type : "-",
                   record_field(m, "roomId", room, sizeof room) == 0 ? room : "-");
            next[p] = m->offset + 1;
            if (next[p] == high[p]) left--;
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_topic_partition_list_destroy(parts);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    free(high);
    free(next);
    if (left > 0) {
        fprintf(stderr, "kafka-offsets: %d partitions not read to their end within 30 s\n", left);
        return 1;
    }
    return 0;
}
