/*
 * queue-kafka-test.c - integration test of the queue-kafka plugin on its own:
 * loads queue-kafka.so with a mock chatd_api table (the ABI lets tests pass
 * their own), runs it on a libevent loop against librdkafka's in-process mock
 * cluster (3 brokers, 6 partitions), and checks what the core relies on:
 *   1. every enqueue completes OK once its delivery report arrives; every
 *      message is persisted and fanned out exactly once, in order per room;
 *   2. a failed persist is retried, and later offsets wait for it;
 *   3. a graceful stop commits: a new member of the group persists nothing
 *      old, and then exactly the new messages;
 *   4. backpressure: with persists held, at most max_inflight (+ one fetch
 *      batch) are outstanding; releasing them drains everything;
 *   5. brokers down then up: every publish completes (OK or an error), none
 *      is left hanging.
 * Usage: queue-kafka-test [PATH/queue-kafka.so] (default: the build tree's)
 */
#define _GNU_SOURCE
#include <chatd/plugin.h>

#include <dlfcn.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <json-c/json.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define NROOMS 10
#define MAXMSG 4096

static struct event_base *base;
static const chatd_plugin_desc *desc;
static rd_kafka_mock_cluster_t *mcluster;
static char bootstrap[512];
static int failures;
static int verbose;

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* ---- mock core objects --------------------------------------------------- */

struct chatd_msg {
    int refs;
    uint64_t id;
    char room[32];
    char *json;
};

struct chatd_completion {
    chatd_status status;
    int completed;
    char reason[200];
};

#define MAXKEYS 16
struct chatd_ctx {
    const char *name;
    const char *keys[MAXKEYS];
    const char *vals[MAXKEYS];
    int nkeys;
    int fanout_ready;
    int paused_logged;
};

/* what the mock core saw */
static int persisted[MAXMSG], fanned[MAXMSG];
static uint64_t last_persist_seq[NROOMS], last_fanout_seq[NROOMS];
static int order_errors;
static int early_fanout, early_receipt; /* before the message was persisted */
static int fail_next_persist; /* answer this many persists with ERR_IO */
static int hold_persists;     /* keep done callbacks instead of answering */
struct held {
    chatd_status_cb done;
    void *arg;
    chatd_msg *msg;
};
static struct held held[MAXMSG];
static int nheld, max_held;

static void api_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* both flags are read on the loop thread after a poll; racy reads are
     * harmless for these one-way 0 -> 1 flags */
    if (strstr(line, "fan-out consumer ready"))
        __atomic_store_n(&ctx->fanout_ready, 1, __ATOMIC_SEQ_CST);
    if (strstr(line, "pausing the persist consumer"))
        __atomic_store_n(&ctx->paused_logged, 1, __ATOMIC_SEQ_CST);
    if (verbose || level <= CHATD_LOG_WARN)
        fprintf(stderr, "[%s] %d %s\n", ctx->name, level, line);
}

static const char *api_cfg_str(chatd_ctx *ctx, const char *key)
{
    for (int i = 0; i < ctx->nkeys; i++)
        if (strcmp(ctx->keys[i], key) == 0)
            return ctx->vals[i];
    for (const chatd_cfg_key *k = desc->cfg_keys; k && k->name; k++)
        if (strcmp(k->name, key) == 0)
            return k->default_value;
    return NULL;
}

static int64_t api_cfg_int(chatd_ctx *ctx, const char *key, int64_t dflt)
{
    const char *v = api_cfg_str(ctx, key);
    return v ? strtoll(v, NULL, 10) : dflt;
}

static int api_cfg_bool(chatd_ctx *ctx, const char *key, int dflt)
{
    const char *v = api_cfg_str(ctx, key);
    return v ? (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) : dflt;
}

static int api_cfg_each(chatd_ctx *ctx, const char *prefix,
                        void (*fn)(void *, const char *, const char *), void *arg)
{
    int n = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < ctx->nkeys; i++)
        if (strncmp(ctx->keys[i], prefix, pl) == 0) {
            fn(arg, ctx->keys[i] + pl, ctx->vals[i]);
            n++;
        }
    return n;
}

static void api_cfg_error(chatd_ctx *ctx, const char *key, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "[%s] config %s: ", ctx->name, key ? key : "-");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const char *api_instance_name(chatd_ctx *ctx) { return ctx->name; }

static const char *api_status_str(chatd_status st)
{
    switch (st) {
    case CHATD_OK: return "ok";
    case CHATD_ERR_IO: return "io";
    case CHATD_ERR_BUSY: return "busy";
    case CHATD_ERR_UNAVAILABLE: return "unavailable";
    default: return "other";
    }
}

static void *api_event_base(chatd_ctx *ctx) { return base; }

struct posted {
    chatd_task_fn fn;
    void *arg;
};

static void posted_cb(evutil_socket_t fd, short what, void *arg)
{
    struct posted *p = arg;
    p->fn(p->arg);
    free(p);
}

static chatd_status api_post(chatd_ctx *ctx, chatd_task_fn fn, void *arg)
{
    struct posted *p = malloc(sizeof *p);
    struct timeval tv = {0, 0};
    if (!p)
        return CHATD_ERR_NOMEM;
    p->fn = fn;
    p->arg = arg;
    if (event_base_once(base, -1, EV_TIMEOUT, posted_cb, p, &tv) != 0) {
        free(p);
        return CHATD_ERR_UNAVAILABLE;
    }
    return CHATD_OK;
}

struct batch {
    int from, to; /* ids [from, to) */
    chatd_completion c[MAXMSG];
};
static struct batch B;
static int64_t t0;

static void api_complete(chatd_completion *c, chatd_status st, const char *reason)
{
    if (c >= B.c && c < B.c + MAXMSG && st == CHATD_OK && !persisted[c - B.c])
        early_receipt++;
    if (c->completed)
        failures++, fprintf(stderr, "FAIL: completion finished twice\n");
    c->completed = 1;
    c->status = st;
    snprintf(c->reason, sizeof c->reason, "%s", reason ? reason : "");
}

static int64_t api_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static chatd_msg *msg_make(uint64_t id, const char *room)
{
    chatd_msg *m = calloc(1, sizeof *m);
    char buf[256];
    if (!m)
        abort();
    m->refs = 1;
    m->id = id;
    snprintf(m->room, sizeof m->room, "%s", room);
    snprintf(buf, sizeof buf,
             "{\"type\":\"chat\",\"id\":\"%" PRIu64 "\",\"roomId\":\"%s\",\"writer\":\"a\","
             "\"writerId\":1,\"message\":\"m%" PRIu64 "\",\"timestamp\":\"2026-01-01T00:00:00Z\"}",
             id, room, id);
    m->json = strdup(buf);
    return m;
}

static chatd_status api_msg_from_json(chatd_ctx *ctx, const char *json, size_t len,
                                      chatd_msg **out)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, json, (int)len), *id, *room;
    chatd_status st = CHATD_ERR_INVALID;
    json_tokener_free(tok);
    if (o && json_object_object_get_ex(o, "id", &id) &&
        json_object_object_get_ex(o, "roomId", &room)) {
        *out = msg_make(strtoull(json_object_get_string(id), NULL, 10),
                        json_object_get_string(room));
        st = CHATD_OK;
    }
    json_object_put(o);
    return st;
}

static chatd_msg *api_msg_ref(chatd_msg *m)
{
    m->refs++;
    return m;
}

static void api_msg_unref(chatd_msg *m)
{
    if (m && --m->refs == 0) {
        free(m->json);
        free(m);
    }
}

static uint64_t api_msg_id(const chatd_msg *m) { return m->id; }
static const char *api_msg_room(const chatd_msg *m) { return m->room; }
static const char *api_msg_json(chatd_msg *m, size_t *len)
{
    *len = strlen(m->json);
    return m->json;
}

/* ids encode room and sequence: id = seq * NROOMS + room */
static void note_order(uint64_t *last, uint64_t id)
{
    int room = (int)(id % NROOMS);
    if (id <= last[room] && last[room] != 0)
        order_errors++;
    last[room] = id;
}

static void api_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                        void *arg)
{
    uint64_t id = msg->id;
    if (id >= MAXMSG) {
        failures++;
        fprintf(stderr, "FAIL: consumed unknown id %" PRIu64 "\n", id);
        if (done)
            done(arg, CHATD_OK);
        return;
    }
    if (flags & CHATD_CONSUME_FANOUT) {
        if (!persisted[id])
            early_fanout++;
        fanned[id]++;
        note_order(last_fanout_seq, id);
    }
    if (flags & CHATD_CONSUME_PERSIST) {
        if (fail_next_persist > 0) {
            fail_next_persist--;
            done(arg, CHATD_ERR_IO);
            return;
        }
        if (hold_persists) {
            held[nheld].done = done;
            held[nheld].arg = arg;
            held[nheld].msg = api_msg_ref(msg);
            nheld++;
            if (nheld > max_held)
                max_held = nheld;
            return;
        }
        persisted[id]++;
        note_order(last_persist_seq, id);
        done(arg, CHATD_OK);
    }
}

static void api_counter_add(chatd_ctx *ctx, const char *name, uint64_t d) {}
static void api_gauge_set(chatd_ctx *ctx, const char *name, int64_t v) {}

static chatd_api api;

static void api_init(void)
{
    api.size = sizeof api;
    api.abi_major = CHATD_ABI_MAJOR;
    api.abi_minor = CHATD_ABI_MINOR;
    api.log = api_log;
    api.cfg_str = api_cfg_str;
    api.cfg_int = api_cfg_int;
    api.cfg_bool = api_cfg_bool;
    api.cfg_each = api_cfg_each;
    api.cfg_error = api_cfg_error;
    api.instance_name = api_instance_name;
    api.status_str = api_status_str;
    api.event_base = api_event_base;
    api.post = api_post;
    api.complete = api_complete;
    api.now_ms = api_now_ms;
    api.msg_from_json = api_msg_from_json;
    api.msg_ref = api_msg_ref;
    api.msg_unref = api_msg_unref;
    api.msg_id = api_msg_id;
    api.msg_room = api_msg_room;
    api.msg_json = api_msg_json;
    api.consume = api_consume;
    api.counter_add = api_counter_add;
    api.gauge_set = api_gauge_set;
}

/* ---- helpers --------------------------------------------------------------- */

static void ctx_set(chatd_ctx *c, const char *k, const char *v)
{
    c->keys[c->nkeys] = k;
    c->vals[c->nkeys] = v;
    c->nkeys++;
}

static void ctx_init(chatd_ctx *c, const char *name, const char *group)
{
    memset(c, 0, sizeof *c);
    c->name = name;
    ctx_set(c, "kafka.bootstrap.servers", bootstrap);
    ctx_set(c, "kafka.consumer.session.timeout.ms", "6000");
    ctx_set(c, "kafka.consumer.auto.commit.interval.ms", "200");
    ctx_set(c, "kafka.consumer.fetch.wait.max.ms", "10");
    ctx_set(c, "kafka.topic.metadata.refresh.interval.ms", "1000");
    ctx_set(c, "group", group);
}

/* run the loop until cond() or the timeout; returns cond() */
static int run_until(int (*cond)(void *), void *arg, int timeout_ms)
{
    int64_t end = api_now_ms() + timeout_ms;
    struct timeval tv = {0, 20000};
    while (!cond(arg) && api_now_ms() < end) {
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return cond(arg);
}

static int never(void *arg) { return 0; }
static int paused(void *arg)
{
    return __atomic_load_n(&((chatd_ctx *)arg)->paused_logged, __ATOMIC_SEQ_CST);
}

static int all_completed(void *arg)
{
    struct batch *b = arg;
    for (int i = b->from; i < b->to; i++)
        if (!b->c[i].completed)
            return 0;
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
        if (c->arr[i] < 1)
            return 0;
    return 1;
}

static void enqueue_range(void *inst, struct batch *b, int from, int to)
{
    const chatd_queue_ops *ops = desc->ops;
    char room[32];
    b->from = from;
    b->to = to;
    for (int id = from; id < to; id++) {
        snprintf(room, sizeof room, "%d&%d", id % NROOMS + 1, id % NROOMS + 100);
        chatd_msg *m = msg_make((uint64_t)id, room);
        memset(&b->c[id], 0, sizeof b->c[id]);
        chatd_status st = ops->enqueue(inst, m, &b->c[id]);
        CHECK(st == CHATD_ASYNC, "enqueue %d returned %d", id, st);
        api_msg_unref(m);
    }
}

static void *instance_start(chatd_ctx *ctx)
{
    void *inst = NULL;
    chatd_status st = desc->create(&api, ctx, &inst);
    CHECK(st == CHATD_OK, "create %s: %d", ctx->name, st);
    if (st != CHATD_OK)
        return NULL;
    st = desc->start(inst);
    CHECK(st == CHATD_OK, "start %s: %d", ctx->name, st);
    return inst;
}

static int stop_done(void *arg) { return ((chatd_completion *)arg)->completed; }

static void instance_stop(void *inst)
{
    chatd_completion c = {0};
    chatd_status st = desc->stop(inst, &c);
    if (st == CHATD_ASYNC)
        CHECK(run_until(stop_done, &c, 30000), "stop did not complete");
    else
        CHECK(st == CHATD_OK, "stop: %d", st);
    desc->destroy(inst);
}

static int count_range(int *arr, int from, int to, int want)
{
    int bad = 0;
    for (int i = from; i < to; i++)
        if (arr[i] != want)
            bad++;
    return bad;
}



int main(int argc, char **argv)
{
    char errstr[256];
    void *dl, *inst;
    chatd_ctx a, b, c, d;
    rd_kafka_conf_t *conf;
    rd_kafka_t *mrk;

    const char *plugin = argc > 1 ? argv[1] : QK_PLUGIN_PATH;
    verbose = getenv("QK_VERBOSE") != NULL;
    t0 = api_now_ms();
    evthread_use_pthreads();
    base = event_base_new();
    api_init();
    dl = dlopen(plugin, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        fprintf(stderr, "dlopen %s: %s\n", plugin, dlerror());
        return 1;
    }
    desc = ((chatd_plugin_entry_fn)dlsym(dl, CHATD_PLUGIN_ENTRY))();
    CHECK(desc && desc->kind == CHATD_KIND_QUEUE && desc->abi_major == CHATD_ABI_MAJOR,
          "bad descriptor");

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
    {
        chatd_ctx bad;
        void *x = NULL;
        ctx_init(&bad, "bad", "g0");
        ctx_set(&bad, "kafka.acks", "1");
        CHECK(desc->create(&api, &bad, &x) == CHATD_ERR_INVALID, "kafka.acks override accepted");
        ctx_init(&bad, "bad", "g0");
        ctx_set(&bad, "kafka.no.such.property", "1");
        CHECK(desc->create(&api, &bad, &x) == CHATD_ERR_INVALID, "unknown property accepted");
        memset(&bad, 0, sizeof bad);
        bad.name = "bad";
        CHECK(desc->create(&api, &bad, &x) == CHATD_ERR_INVALID, "missing bootstrap accepted");
    }

    /* 1. produce, persist once, fan out once, in order per room */
    fprintf(stderr, "-- 1: produce / persist / fan-out (t=%.1fs)\n", (api_now_ms() - t0) / 1000.0);
    ctx_init(&a, "a", "grp-test");
    inst = instance_start(&a);
    if (!inst)
        return 1;
    /* no wait for the fan-out group to join: nothing published after start
     * may be missed */
    enqueue_range(inst, &B, 1, 301);
    CHECK(run_until(all_completed, &B, 30000), "not every enqueue completed");
    for (int i = 1; i < 301; i++)
        CHECK(B.c[i].status == CHATD_OK, "enqueue %d: %d %s", i, B.c[i].status, B.c[i].reason);
    struct counts pc = {1, 301, persisted}, fc = {1, 301, fanned};
    CHECK(run_until(all_seen, &pc, 30000), "not every message persisted");
    CHECK(run_until(all_seen, &fc, 30000), "not every message fanned out");
    run_until(never, NULL, 500);
    CHECK(count_range(persisted, 1, 301, 1) == 0, "a message persisted more than once");
    CHECK(count_range(fanned, 1, 301, 1) == 0, "a message fanned out more than once");
    CHECK(order_errors == 0, "%d messages out of room order", order_errors);
    /* one node owns every partition: fan-out and RECEIPT wait for the store */
    CHECK(early_fanout == 0, "%d messages fanned out before they were persisted", early_fanout);
    CHECK(early_receipt == 0, "%d completions before the message was persisted", early_receipt);

    /* 2. a failed persist is retried */
    fprintf(stderr, "   fanned out: missing %d\n", count_range(fanned, 1, 301, 1));
    fprintf(stderr, "-- 2: persist retry (t=%.1fs)\n", (api_now_ms() - t0) / 1000.0);
    fail_next_persist = 2;
    enqueue_range(inst, &B, 301, 311);
    pc.from = 301, pc.to = 311;
    CHECK(run_until(all_seen, &pc, 30000), "failed persists were not retried");
    CHECK(count_range(persisted, 301, 311, 1) == 0, "retry persisted twice");
    run_until(never, NULL, 600); /* let auto-commit run */

    /* 3. graceful stop commits; a new group member resumes after it */
    fprintf(stderr, "-- 3: stop commits, restart resumes (t=%.1fs)\n", (api_now_ms() - t0) / 1000.0);
    instance_stop(inst);
    ctx_init(&b, "b", "grp-test");
    ctx_set(&b, "fanout", "false");
    inst = instance_start(&b);
    run_until(never, NULL, 4000);
    CHECK(count_range(persisted, 1, 311, 1) == 0, "messages persisted again after restart");
    enqueue_range(inst, &B, 311, 361);
    pc.from = 311, pc.to = 361;
    CHECK(run_until(all_seen, &pc, 30000), "new member did not persist new messages");
    CHECK(count_range(persisted, 1, 361, 1) == 0, "duplicates after restart");
    instance_stop(inst);

    /* 4. backpressure */
    fprintf(stderr, "-- 4: backpressure (t=%.1fs)\n", (api_now_ms() - t0) / 1000.0);
    ctx_init(&c, "c", "grp-backpressure");
    ctx_set(&c, "max_inflight", "20");
    ctx_set(&c, "fanout", "false");
    ctx_set(&c, "kafka.consumer.fetch.max.bytes", "2000");
    ctx_set(&c, "kafka.consumer.message.max.bytes", "2000");
    ctx_set(&c, "kafka.consumer.max.partition.fetch.bytes", "1000");
    ctx_set(&c, "kafka.consumer.queued.max.messages.kbytes", "1");
    hold_persists = 1;
    inst = instance_start(&c);
    CHECK(run_until(paused, &c, 30000), "consumer never paused with persists held");
    run_until(never, NULL, 1500); /* nothing more comes in while paused */
    /* the group starts from the beginning: 360 messages are there */
    CHECK(max_held < 360, "held %d persists: consumption was not bounded", max_held);
    fprintf(stderr, "   held %d persists at most (max_inflight 20)\n", max_held);
    hold_persists = 0;
    memset(persisted, 0, sizeof persisted);
    memset(last_persist_seq, 0, sizeof last_persist_seq);
    for (int i = 0; i < nheld; i++) {
        persisted[held[i].msg->id]++;
        held[i].done(held[i].arg, CHATD_OK);
        api_msg_unref(held[i].msg);
    }
    nheld = 0;
    pc.from = 1, pc.to = 361;
    CHECK(run_until(all_seen, &pc, 30000), "not everything persisted after release");
    instance_stop(inst);

    /* 5. brokers down and up: every publish completes */
    fprintf(stderr, "-- 5: broker outage (t=%.1fs)\n", (api_now_ms() - t0) / 1000.0);
    ctx_init(&d, "d", "grp-outage");
    ctx_set(&d, "persist", "false");
    ctx_set(&d, "fanout", "false");
    ctx_set(&d, "kafka.producer.message.timeout.ms", "30000");
    inst = instance_start(&d);
    enqueue_range(inst, &B, 400, 401); /* connect first */
    CHECK(run_until(all_completed, &B, 15000), "warm-up publish did not complete");
    rd_kafka_mock_broker_set_down(mcluster, -1);
    enqueue_range(inst, &B, 401, 421);
    run_until(never, NULL, 3000);
    int early = 0;
    for (int i = 401; i < 421; i++)
        early += B.c[i].completed && B.c[i].status == CHATD_OK;
    CHECK(early == 0, "%d publishes acknowledged while every broker was down", early);
    rd_kafka_mock_broker_set_up(mcluster, -1);
    CHECK(run_until(all_completed, &B, 40000), "publishes left without an answer");
    int ok = 0;
    for (int i = 401; i < 421; i++)
        ok += B.c[i].status == CHATD_OK;
    fprintf(stderr, "   %d of 20 acknowledged after the outage, %d errors\n", ok, 20 - ok);
    instance_stop(inst);

    rd_kafka_mock_cluster_destroy(mcluster);
    rd_kafka_destroy(mrk);
    event_base_free(base);
    if (failures) {
        fprintf(stderr, "queue-kafka-test: %d failures\n", failures);
        return 1;
    }
    fprintf(stderr, "queue-kafka-test: all passed\n");
    return 0;
}
