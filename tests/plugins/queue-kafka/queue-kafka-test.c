/*
 * queue-kafka-test.c - integration test of the queue-kafka plugin on its own:
 * loads queue-kafka.so into the test core (tests/lib/testcore.c: the daemon's
 * api table, messages, completions and loop; the test provides consume),
 * runs it against librdkafka's in-process mock cluster (3 brokers, 6
 * partitions), and checks what the core relies on:
 *   1. every enqueue completes OK once its delivery report arrives; every
 *      message is persisted and fanned out exactly once, in order per room;
 *   2. a failed persist is retried, and later offsets wait for it;
 *   3. a graceful stop commits: a new member of the group persists nothing
 *      old, and then exactly the new messages;
 *   4. backpressure: with persists held, at most max_inflight (20) are
 *      outstanding (the persist consumer pauses at max_inflight,
 *      docs/kafka.md); releasing them drains everything;
 *   5. brokers down then up: nothing is acknowledged while they are down, and
 *      every publish gets its RECEIPT when they return within
 *      message.timeout.ms (docs/kafka.md "Kafka unreachable");
 *   6. the fan-out waits for the store however long: with every persist held
 *      past gate_timeout, the RECEIPTs are answered (durable in Kafka) but
 *      nothing is fanned out, the wait is logged as overdue and the fan-out
 *      consumer pauses partitions at max_inflight held deliveries; once
 *      persisted, each is fanned out once, in order (docs/kafka.md);
 *   7. a stop while records are fetched and not yet served: the close
 *      forwards them to the closer thread's queue, which must drop them
 *      (librdkafka aborts when a callback-served queue meets a message).
 * Usage: queue-kafka-test [PATH/queue-kafka.so] (default: the build tree's)
 */
#include "../../lib/testcore.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define NROOMS 10
#define MAXMSG 4096
#define MAXKEYS 16
#define MAX_INFLIGHT 20 /* step 4's max_inflight */

static const chatd_api *A;
static const chatd_plugin_desc *desc;
static const chatd_queue_ops *ops;
static rd_kafka_mock_cluster_t *mcluster;
static char bootstrap[512];
static int failures;
static int64_t t0;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

/* ---- what the core saw ----------------------------------------------------- */

static int persisted[MAXMSG], fanned[MAXMSG];
static uint64_t last_persist_seq[NROOMS], last_fanout_seq[NROOMS];
static int order_errors, fanout_order_errors;
static int early_fanout, early_receipt; /* before the message was persisted */
static int fail_next_persist;           /* answer this many persists with ERR_IO */
static int hold_persists;               /* keep done callbacks instead of answering */
static int paused_logged;               /* the plugin said it paused (any thread) */
static int brokers_down_logged;         /* the producer saw every broker down */
static int overdue_logged;              /* a held fan-out was logged as overdue */
static int fanout_paused_logged, fanout_resumed_logged; /* a fan-out partition */
static uint64_t poison_id;                              /* this message's persist always fails */
static int poison_attempts;                             /* its persists */
static int dead_letters;                                /* records handed to dead_letter */
static char dead_source[128], dead_reason[200];
struct held {
    chatd_status_cb done;
    void *arg;
    chatd_msg *msg;
};
static struct held held[MAXMSG];
static int nheld, max_held;
static int persist_calls; /* persists answered OK */

/* the enqueue of message id: its completion's outcome */
struct enqueued {
    int completed;
    chatd_status status;
    char reason[200];
};

struct batch {
    int from, to; /* ids [from, to) */
    struct enqueued e[MAXMSG];
};
static struct batch B;

static void watch_log(chatd_ctx *ctx, chatd_log_level level, const char *line)
{
    (void)ctx;
    (void)level;
    if (strstr(line, "pausing the persist consumer"))
        __atomic_store_n(&paused_logged, 1, __ATOMIC_SEQ_CST);
    if (strstr(line, "producer: Kafka error") && strstr(line, "ALL_BROKERS_DOWN"))
        __atomic_store_n(&brokers_down_logged, 1, __ATOMIC_SEQ_CST);
    if (strstr(line, "none goes out before the store holds it"))
        __atomic_store_n(&overdue_logged, 1, __ATOMIC_SEQ_CST);
    if (strstr(line, "pausing the partition's fan-out consumer"))
        __atomic_store_n(&fanout_paused_logged, 1, __ATOMIC_SEQ_CST);
    if (strstr(line, "resuming the partition's fan-out consumer"))
        __atomic_store_n(&fanout_resumed_logged, 1, __ATOMIC_SEQ_CST);
}

static void on_enqueued(void *arg, chatd_status st, const char *reason)
{
    struct enqueued *e = arg;
    if (st == CHATD_OK && !persisted[e - B.e]) early_receipt++;
    CHECK(!e->completed, "enqueue %d completed twice", (int)(e - B.e));
    e->completed = 1;
    e->status = st;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
}

static chatd_msg *msg_make(uint64_t id, const char *room)
{
    char text[32];
    snprintf(text, sizeof text, "m%" PRIu64, id);
    chatd_msg_fields f = {.size = sizeof f,
                          .kind = CHATD_MSG_CHAT,
                          .id = id,
                          .room_id = room,
                          .writer_id = 1,
                          .writer = "a",
                          .text = text,
                          .text_len = strlen(text),
                          .time_ms = A->now_ms()};
    chatd_msg *m = A->msg_new(NULL, &f);
    if (!m) abort();
    return m;
}

/* ids encode room and sequence: id = seq * NROOMS + room */
static void note_order(uint64_t *last, uint64_t id)
{
    int room = (int)(id % NROOMS);
    if (id <= last[room] && last[room] != 0) order_errors++;
    last[room] = id;
}

static void consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done, void *arg)
{
    (void)ctx;
    uint64_t id = A->msg_id(msg);
    if (id >= MAXMSG) {
        CHECK(0, "consumed unknown id %" PRIu64, id);
        if (done) done(arg, CHATD_OK);
        return;
    }
    if (flags & CHATD_CONSUME_FANOUT) {
        if (!persisted[id]) early_fanout++;
        fanned[id]++;
        int before = order_errors;
        note_order(last_fanout_seq, id);
        if (order_errors != before) {
            fanout_order_errors++;
            if (getenv("QK_TEST_DEBUG")) fprintf(stderr, "fan-out order: %" PRIu64 "\n", id);
        }
    }
    if (flags & CHATD_CONSUME_PERSIST) {
        if (poison_id && id == poison_id) {
            poison_attempts++;
            done(arg, CHATD_ERR_EXISTS); /* e.g. its id is taken by another message */
            return;
        }
        if (fail_next_persist > 0) {
            fail_next_persist--;
            done(arg, CHATD_ERR_IO);
            return;
        }
        if (hold_persists) {
            held[nheld].done = done;
            held[nheld].arg = arg;
            held[nheld].msg = A->msg_ref(msg);
            nheld++;
            if (nheld > max_held) max_held = nheld;
            return;
        }
        persisted[id]++;
        persist_calls++;
        note_order(last_persist_seq, id);
        done(arg, CHATD_OK);
    }
}

static void dead_letter(chatd_ctx *ctx, const char *source, const void *payload, size_t len,
                        const char *reason, chatd_status_cb cb, void *arg)
{
    (void)ctx;
    (void)payload;
    (void)len;
    dead_letters++;
    snprintf(dead_source, sizeof dead_source, "%s", source);
    snprintf(dead_reason, sizeof dead_reason, "%s", reason);
    if (cb) cb(arg, CHATD_OK);
}

/* ---- helpers --------------------------------------------------------------- */

/* an instance's config section, built up key by key */
struct conf {
    const char *name;
    char *pairs[MAXKEYS];
    char buf[MAXKEYS][600];
    int n;
};

static void conf_set(struct conf *c, const char *k, const char *v)
{
    if (c->n == MAXKEYS) abort();
    snprintf(c->buf[c->n], sizeof c->buf[0], "%s=%s", k, v);
    c->pairs[c->n] = c->buf[c->n];
    c->n++;
}

static void conf_init(struct conf *c, const char *name, const char *group)
{
    c->name = name;
    c->n = 0;
    conf_set(c, "kafka.bootstrap.servers", bootstrap);
    conf_set(c, "min_insync_replicas", "1"); /* the mock does not answer DescribeConfigs */
    conf_set(c, "kafka.consumer.session.timeout.ms", "6000");
    conf_set(c, "kafka.consumer.auto.commit.interval.ms", "200");
    conf_set(c, "kafka.consumer.fetch.wait.max.ms", "10");
    conf_set(c, "kafka.topic.metadata.refresh.interval.ms", "1000");
    conf_set(c, "group", group);
}

/* create() with this config: its status (the context is freed) */
static chatd_status create_status(struct conf *c)
{
    chatd_ctx *ctx = testcore_ctx_new(c->name, desc->cfg_keys, c->n, c->pairs);
    void *inst = NULL;
    if (!ctx) return CHATD_ERR_INVALID;
    chatd_status st = desc->create(A, ctx, &inst);
    if (st == CHATD_OK) desc->destroy(inst);
    testcore_ctx_free(ctx);
    return st;
}

/* run the loop until cond() or the timeout; returns cond() */
static int run_until(int (*cond)(void *), void *arg, int timeout_ms)
{
    return testcore_run_until(cond, arg, timeout_ms) == 0;
}

static int paused(void *arg)
{
    (void)arg;
    return __atomic_load_n(&paused_logged, __ATOMIC_SEQ_CST);
}

/* the keepalive polls counted: (long) chatd_kafka_keepalive_polls_total */
static long polls;

static int polls_reach(void *arg)
{
    polls = (long)testcore_counter("chatd_kafka_keepalive_polls_total");
    return polls >= *(long *)arg;
}

static int overdue_and_paused(void *arg)
{
    (void)arg;
    return __atomic_load_n(&overdue_logged, __ATOMIC_SEQ_CST) &&
           __atomic_load_n(&fanout_paused_logged, __ATOMIC_SEQ_CST);
}

static int brokers_down(void *arg)
{
    (void)arg;
    return __atomic_load_n(&brokers_down_logged, __ATOMIC_SEQ_CST);
}

/* the partitions (of 6) the rooms of ids [from, to) are produced to
 * (queue-kafka's partitioner: murmur2_random on the room id), as a bit set */
static unsigned rooms_partitions(int from, int to)
{
    unsigned set = 0;
    char room[32];
    for (int id = from; id < to; id++) {
        snprintf(room, sizeof room, "%d&%d", id % NROOMS + 1, id % NROOMS + 100);
        int32_t p =
            rd_kafka_msg_partitioner_murmur2_random(NULL, room, strlen(room), 6, NULL, NULL);
        if (p >= 0 && p < 6) set |= 1u << p;
    }
    return set;
}

static int all_completed(void *arg)
{
    struct batch *b = arg;
    for (int i = b->from; i < b->to; i++)
        if (!b->e[i].completed) return 0;
    return 1;
}

struct counts {
    int from, to;
    int *arr;
};

static int all_seen(void *arg)
{
    struct counts *c = arg;
    for (int i = c->from; i < c->to; i++)
        if (c->arr[i] < 1) return 0;
    return 1;
}

static void enqueue_range(void *inst, struct batch *b, int from, int to)
{
    char room[32];
    b->from = from;
    b->to = to;
    for (int id = from; id < to; id++) {
        snprintf(room, sizeof room, "%d&%d", id % NROOMS + 1, id % NROOMS + 100);
        chatd_msg *m = msg_make((uint64_t)id, room);
        memset(&b->e[id], 0, sizeof b->e[id]);
        chatd_completion *c = testcore_completion_new(on_enqueued, &b->e[id]);
        chatd_status st = ops->enqueue(inst, m, c);
        CHECK(st == CHATD_ASYNC, "enqueue %d returned %d", id, st);
        if (st != CHATD_ASYNC) testcore_completion_free(c);
        A->msg_unref(m);
    }
}

struct instance {
    chatd_ctx *ctx;
    void *inst;
};

static int instance_start(struct instance *in, struct conf *c)
{
    in->inst = NULL;
    in->ctx = testcore_ctx_new(c->name, desc->cfg_keys, c->n, c->pairs);
    CHECK(in->ctx, "config of %s refused", c->name);
    if (!in->ctx) return -1;
    chatd_status st = desc->create(A, in->ctx, &in->inst);
    CHECK(st == CHATD_OK, "create %s: %d", c->name, st);
    if (st != CHATD_OK) return -1;
    st = desc->start(in->inst);
    CHECK(st == CHATD_OK, "start %s: %d", c->name, st);
    return st == CHATD_OK ? 0 : -1;
}

struct stopped {
    int done;
    chatd_status status;
};

static void on_stopped(void *arg, chatd_status st, const char *reason)
{
    struct stopped *s = arg;
    (void)reason;
    s->status = st;
    s->done = 1;
}

static void instance_stop(struct instance *in)
{
    struct stopped s = {0, CHATD_OK};
    chatd_completion *c = testcore_completion_new(on_stopped, &s);
    chatd_status st = desc->stop(in->inst, c);
    if (st == CHATD_ASYNC) {
        CHECK(testcore_run_until_flag(&s.done, 30000) == 0, "stop did not complete");
        CHECK(s.status == CHATD_OK, "stop: %d", s.status);
    } else {
        testcore_completion_free(c);
        CHECK(st == CHATD_OK, "stop: %d", st);
    }
    desc->destroy(in->inst);
    testcore_ctx_free(in->ctx);
    in->inst = NULL;
    in->ctx = NULL;
}

static int count_range(int *arr, int from, int to, int want)
{
    int bad = 0;
    for (int i = from; i < to; i++)
        if (arr[i] != want) bad++;
    return bad;
}

static double elapsed(void)
{
    return (double)(A->now_ms() - t0) / 1000.0;
}

int main(int argc, char **argv)
{
    char errstr[256];
    const void *queue_ops;
    struct instance inst;
    struct conf a, b, c, d, e, bad;
    rd_kafka_conf_t *conf;
    rd_kafka_t *mrk;

    const char *plugin = argc > 1 ? argv[1] : QK_PLUGIN_PATH;
    if (testcore_init() != 0) return 1;
    A = testcore_api();
    t0 = A->now_ms();
    testcore_set_consume(consume);
    testcore_set_dead_letter(dead_letter);
    testcore_set_log_hook(watch_log);
    desc = testcore_load(plugin, CHATD_KIND_QUEUE, &queue_ops);
    if (!desc) return 1;
    ops = queue_ops;

    conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof errstr);
    mrk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
    mcluster = mrk ? rd_kafka_mock_cluster_new(mrk, 3) : NULL;
    if (!mcluster || rd_kafka_mock_topic_create(mcluster, "kafka-chat", 6, 3)) {
        fprintf(stderr, "cannot start the mock cluster\n");
        return 1;
    }
    snprintf(bootstrap, sizeof bootstrap, "%s", rd_kafka_mock_cluster_bootstraps(mcluster));

    /* config errors are refused at create */
    conf_init(&bad, "bad", "g0");
    conf_set(&bad, "kafka.acks", "1");
    CHECK(create_status(&bad) == CHATD_ERR_INVALID, "kafka.acks override accepted");
    conf_init(&bad, "bad", "g0");
    conf_set(&bad, "kafka.no.such.property", "1");
    CHECK(create_status(&bad) == CHATD_ERR_INVALID, "unknown property accepted");
    bad.n = 0;
    CHECK(create_status(&bad) == CHATD_ERR_INVALID, "missing bootstrap accepted");

    /* 1. produce, persist once, fan out once, in order per room */
    fprintf(stderr, "-- 1: produce / persist / fan-out (t=%.1fs)\n", elapsed());
    conf_init(&a, "a", "grp-test");
    conf_set(&a, "max_persist_attempts", "3");
    if (instance_start(&inst, &a) != 0) return 1;
    /* no wait for the fan-out group to join: nothing published after start
     * may be missed */
    enqueue_range(inst.inst, &B, 1, 301);
    CHECK(run_until(all_completed, &B, 30000), "not every enqueue completed");
    for (int i = 1; i < 301; i++)
        CHECK(B.e[i].status == CHATD_OK, "enqueue %d: %d %s", i, B.e[i].status, B.e[i].reason);
    struct counts pc = {1, 301, persisted}, fc = {1, 301, fanned};
    CHECK(run_until(all_seen, &pc, 30000), "not every message persisted");
    CHECK(run_until(all_seen, &fc, 30000), "not every message fanned out");
    /* exactly once is checked once the instance has stopped (step 3) */

    /* 2. a failed persist is retried */
    fprintf(stderr, "-- 2: persist retry (t=%.1fs)\n", elapsed());
    fail_next_persist = 2;
    enqueue_range(inst.inst, &B, 301, 311);
    pc.from = 301, pc.to = 311;
    CHECK(run_until(all_seen, &pc, 30000), "failed persists were not retried");
    CHECK(fail_next_persist == 0, "%d of 2 persist failures never happened", fail_next_persist);
    fc.from = 301, fc.to = 311;
    CHECK(run_until(all_seen, &fc, 30000), "retried messages were not fanned out");

    /* 2b. a record the store always refuses goes to the dead letters after
     * max_persist_attempts (3 here); its partition moves on */
    fprintf(stderr, "-- 2b: poison record (t=%.1fs)\n", elapsed());
    poison_id = 365;
    enqueue_range(inst.inst, &B, 361, 381);
    CHECK(run_until(all_completed, &B, 30000), "not every enqueue completed past the poison");
    CHECK(testcore_run_until_flag(&dead_letters, 30000) == 0, "the poison was not dead-lettered");
    for (int i = 361; i < 381; i++)
        CHECK(i == 365 ? persisted[i] == 0 : persisted[i] == 1, "message %d persisted %d times", i,
              persisted[i]);
    CHECK(poison_attempts == 3, "poison persisted %d times, not max_persist_attempts 3",
          poison_attempts);
    CHECK(dead_letters == 1, "%d dead letters, not 1", dead_letters);
    CHECK(B.e[365].status != CHATD_OK, "the poison's sender got a RECEIPT for a message the "
                                       "store refused");
    CHECK(fanned[365] == 0, "the poison was fanned out");
    CHECK(testcore_counter("chatd_kafka_dead_letters_total") == 1, "dead letter not counted");
    CHECK(strncmp(dead_source, "kafka-chat[", 11) == 0, "dead letter source %s", dead_source);
    CHECK(strstr(dead_reason, "failed to persist 3 times") != NULL, "dead letter reason %s",
          dead_reason);
    poison_id = 0; /* from now on it would persist: a redelivery would show */

    /* 3. graceful stop commits; a new group member resumes after it */
    fprintf(stderr, "-- 3: stop commits, restart resumes (t=%.1fs)\n", elapsed());
    instance_stop(&inst);
    /* settled: a stopped instance hands nothing more to the core */
    CHECK(count_range(persisted, 1, 311, 1) == 0, "a message persisted more than once");
    CHECK(count_range(fanned, 1, 311, 1) == 0, "a message fanned out more than once");
    CHECK(order_errors == 0, "%d messages out of room order", order_errors);
    /* one node owns every partition: fan-out and RECEIPT wait for the store */
    CHECK(early_fanout == 0, "%d messages fanned out before they were persisted", early_fanout);
    CHECK(early_receipt == 0, "%d completions before the message was persisted", early_receipt);
    conf_init(&b, "b", "grp-test");
    conf_set(&b, "fanout", "false");
    if (instance_start(&inst, &b) != 0) return 1;
    /* the new messages reach every partition: an old message fetched again
     * would come before them on its partition */
    CHECK((rooms_partitions(1, 311) & ~rooms_partitions(311, 361)) == 0,
          "the new messages miss partitions of the old ones (%#x, %#x)", rooms_partitions(1, 311),
          rooms_partitions(311, 361));
    enqueue_range(inst.inst, &B, 311, 361);
    pc.from = 311, pc.to = 361;
    CHECK(run_until(all_seen, &pc, 30000), "new member did not persist new messages");
    CHECK(count_range(persisted, 1, 311, 1) == 0, "messages persisted again after restart");
    instance_stop(&inst);
    CHECK(count_range(persisted, 1, 361, 1) == 0, "duplicates after restart");
    CHECK(persisted[365] == 0 && dead_letters == 1, "the dead letter came back after restart");
    for (int i = 361; i < 381; i++)
        CHECK(persisted[i] == (i != 365), "message %d persisted %d times after the restart", i,
              persisted[i]);

    /* 4. backpressure: the group starts from the beginning, 360 messages are
     * there; with every persist held, at most max_inflight are taken */
    fprintf(stderr, "-- 4: backpressure (t=%.1fs)\n", elapsed());
    conf_init(&c, "c", "grp-backpressure");
    conf_set(&c, "max_inflight", "20");
    conf_set(&c, "fanout", "false");
    conf_set(&c, "kafka.consumer.fetch.max.bytes", "2000");
    conf_set(&c, "kafka.consumer.message.max.bytes", "2000");
    conf_set(&c, "kafka.consumer.max.partition.fetch.bytes", "1000");
    conf_set(&c, "kafka.consumer.queued.max.messages.kbytes", "1");
    hold_persists = 1;
    __atomic_store_n(&paused_logged, 0, __ATOMIC_SEQ_CST);
    if (instance_start(&inst, &c) != 0) return 1;
    CHECK(run_until(paused, NULL, 30000), "consumer never paused with persists held");
    /* two keepalive polls of the paused consumer (each drains its queue):
     * a persist handed out past the pause would have come by then */
    long want = (long)testcore_counter("chatd_kafka_keepalive_polls_total") + 2;
    CHECK(run_until(polls_reach, &want, 30000), "the paused consumer was not polled (%ld of %ld)",
          polls, want);
    CHECK(max_held <= MAX_INFLIGHT, "held %d persists: more than max_inflight %d", max_held,
          MAX_INFLIGHT);
    CHECK(max_held == MAX_INFLIGHT, "paused with %d persists held, not at max_inflight %d",
          max_held, MAX_INFLIGHT);
    hold_persists = 0;
    memset(persisted, 0, sizeof persisted);
    memset(last_persist_seq, 0, sizeof last_persist_seq);
    for (int i = 0; i < nheld; i++) {
        persisted[A->msg_id(held[i].msg)]++;
        held[i].done(held[i].arg, CHATD_OK);
        A->msg_unref(held[i].msg);
    }
    nheld = 0;
    pc.from = 1, pc.to = 361;
    CHECK(run_until(all_seen, &pc, 30000), "not everything persisted after release");
    instance_stop(&inst);

    /* 5. brokers down and up within message.timeout.ms: every publish is
     * acknowledged once they are back, none while they are down */
    fprintf(stderr, "-- 5: broker outage (t=%.1fs)\n", elapsed());
    conf_init(&d, "d", "grp-outage");
    conf_set(&d, "persist", "false");
    conf_set(&d, "fanout", "false");
    conf_set(&d, "kafka.producer.message.timeout.ms", "30000");
    if (instance_start(&inst, &d) != 0) return 1;
    enqueue_range(inst.inst, &B, 400, 401); /* connect first */
    CHECK(run_until(all_completed, &B, 15000), "warm-up publish did not complete");
    rd_kafka_mock_broker_set_down(mcluster, -1);
    enqueue_range(inst.inst, &B, 401, 421);
    /* the producer has found every broker down: an answer, if any, would
     * have come before */
    CHECK(run_until(brokers_down, NULL, 30000), "the producer never reported all brokers down");
    int early = 0;
    for (int i = 401; i < 421; i++)
        early += B.e[i].completed;
    CHECK(early == 0, "%d publishes answered while every broker was down", early);
    rd_kafka_mock_broker_set_up(mcluster, -1);
    CHECK(run_until(all_completed, &B, 40000), "publishes left without an answer");
    int ok = 0;
    for (int i = 401; i < 421; i++) {
        ok += B.e[i].status == CHATD_OK;
        CHECK(B.e[i].status == CHATD_OK, "publish %d after the outage: %s %s", i,
              A->status_str(B.e[i].status), B.e[i].reason);
    }
    fprintf(stderr, "   %d of 20 acknowledged after the outage\n", ok);
    instance_stop(&inst);

    /* 6. the fan-out waits for the store past gate_timeout (300 ms): a new
     * group persists the topic from the start, every persist held */
    fprintf(stderr, "-- 6: fan-out held past gate_timeout (t=%.1fs)\n", elapsed());
    conf_init(&e, "e", "grp-gate");
    conf_set(&e, "gate_timeout", "300");
    conf_set(&e, "max_inflight", "20");
    hold_persists = 1;
    nheld = 0;
    int early_before = early_fanout;
    fanout_order_errors = 0;
    if (instance_start(&inst, &e) != 0) return 1;
    enqueue_range(inst.inst, &B, 600, 900);
    CHECK(run_until(all_completed, &B, 30000), "RECEIPTs not answered past gate_timeout");
    for (int i = 600; i < 900; i++)
        CHECK(B.e[i].status == CHATD_OK, "publish %d: %s %s", i, A->status_str(B.e[i].status),
              B.e[i].reason);
    CHECK(run_until(overdue_and_paused, NULL, 30000),
          "the held fan-out was not logged as overdue (%d) or no partition paused (%d)",
          overdue_logged, fanout_paused_logged);
    CHECK(count_range(fanned, 600, 900, 0) == 0, "%d messages fanned out before they were stored",
          300 - count_range(fanned, 600, 900, 0));
    hold_persists = 0;
    for (int i = 0; i < nheld; i++) {
        persisted[A->msg_id(held[i].msg)]++;
        held[i].done(held[i].arg, CHATD_OK);
        A->msg_unref(held[i].msg);
    }
    nheld = 0;
    pc.from = 600, pc.to = 900, pc.arr = fanned;
    CHECK(run_until(all_seen, &pc, 30000), "not everything fanned out once persisted");
    CHECK(count_range(fanned, 600, 900, 1) == 0, "messages fanned out more than once");
    CHECK(early_fanout == early_before, "%d messages fanned out before they were persisted",
          early_fanout - early_before);
    CHECK(fanout_order_errors == 0, "%d fan-outs out of room order", fanout_order_errors);
    CHECK(fanout_resumed_logged, "no paused fan-out partition was resumed");
    instance_stop(&inst);

    /* 7. a new group persists the topic (about 700 records) from its start and
     * the node stops after its first persist, with fetched records queued */
    fprintf(stderr, "-- 7: stop with fetched records unserved (t=%.1fs)\n", elapsed());
    struct conf f;
    conf_init(&f, "f", "grp-close");
    conf_set(&f, "fanout", "false");
    memset(last_persist_seq, 0, sizeof last_persist_seq);
    persist_calls = 0;
    if (instance_start(&inst, &f) != 0) return 1;
    CHECK(testcore_run_until_flag(&persist_calls, 30000) == 0, "the new group persisted nothing");
    instance_stop(&inst); /* aborted here before the close served its queue as events */
    fprintf(stderr, "   stopped after %d persists\n", persist_calls);

    CHECK(testcore_msgs_live() == 0, "%ld message references never dropped", testcore_msgs_live());
    CHECK(testcore_completions_live() == 0, "%ld completions never finished",
          testcore_completions_live());
    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(mrk);
    testcore_shutdown();
    if (failures) {
        fprintf(stderr, "queue-kafka-test: %d failures\n", failures);
        return 1;
    }
    fprintf(stderr, "queue-kafka-test: all passed\n");
    return 0;
}
