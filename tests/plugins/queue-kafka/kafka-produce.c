/*
 * kafka-produce.c - test helper: produce one record to a topic, as another
 * node (or a broken one) would, and wait for the brokers' acknowledgement.
 *
 *   kafka-produce BOOTSTRAP TOPIC KEY < VALUE
 *
 * The value is standard input, as is (at most 64 KB); the key picks the
 * partition with queue-kafka's partitioner (murmur2_random), so a key equal
 * to a room id lands on that room's partition. acks=all. Prints
 * "produced P OFFSET" and exits 0, or 1 with the reason on stderr.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

static rd_kafka_resp_err_t result = RD_KAFKA_RESP_ERR__IN_PROGRESS;
static int32_t partition = -1;
static int64_t offset = -1;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    (void)opaque;
    result = m->err;
    partition = m->partition;
    offset = m->offset;
}

int main(int argc, char **argv)
{
    static char value[65536];
    char err[512];
    if (argc != 4) {
        fprintf(stderr, "usage: kafka-produce BOOTSTRAP TOPIC KEY < VALUE\n");
        return 1;
    }
    size_t len = fread(value, 1, sizeof value, stdin);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", argv[1], err, sizeof err) ||
        rd_kafka_conf_set(conf, "acks", "all", err, sizeof err) ||
        rd_kafka_conf_set(conf, "partitioner", "murmur2_random", err, sizeof err) ||
        rd_kafka_conf_set(conf, "message.timeout.ms", "20000", err, sizeof err)) {
        fprintf(stderr, "kafka-produce: %s\n", err);
        return 1;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!rk) {
        fprintf(stderr, "kafka-produce: cannot create a producer: %s\n", err);
        return 1;
    }
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(argv[2]), RD_KAFKA_V_KEY(argv[3], strlen(argv[3])),
        RD_KAFKA_V_VALUE(value, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    if (e) {
        fprintf(stderr, "kafka-produce: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return 1;
    }
    rd_kafka_flush(rk, 30000);
    rd_kafka_destroy(rk);
    if (result != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "kafka-produce: not acknowledged: %s\n", rd_kafka_err2str(result));
        return 1;
    }
    printf("produced %" PRId32 " %" PRId64 "\n", partition, offset);
    return 0;
}
