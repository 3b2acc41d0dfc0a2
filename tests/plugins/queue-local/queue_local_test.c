/*
 * queue_local_test.c - tests of the queue-local plugin against the test core:
 * messages are handed back with consume(PERSIST | FANOUT) from the loop (never
 * inside enqueue), in order; the enqueue completes with consume's status
 * (acknowledged only after the store); max_pending bounds it; stop() waits
 * for messages in flight; two instances do not share state.
 *
 * Usage: queue_local_test QUEUE-LOCAL.so
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../../lib/testcore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIMEOUT_MS 10000
#define MAX_SEEN 64

static const char *g_so;
static const chatd_plugin_desc *g_desc;
static const chatd_queue_ops *g_ops;
static const chatd_api *A;

/* what the test core's consume saw */
typedef struct seen {
    chatd_ctx *ctx;
    chatd_msg *msg; /* our reference */
    unsigned flags;
    chatd_status_cb done;
    void *arg;
} seen;

static seen g_seen[MAX_SEEN];
static long g_nseen;
static int g_sync_status_set; /* answer inside consume itself */
static chatd_status g_sync_status;

static void fake_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                         void *arg)
{
    if (g_sync_status_set) {
        done(arg, g_sync_status);
        return;
    }
    assert_true(g_nseen < MAX_SEEN);
    g_seen[g_nseen] = (seen){ctx, A->msg_ref(msg), flags, done, arg};
    g_nseen++;
}

/* finish the i-th consumed message as the core would */
static void finish(long i, chatd_status st)
{
    chatd_msg *m = g_seen[i].msg;
    g_seen[i].done(g_seen[i].arg, st);
    A->msg_unref(m);
    g_seen[i].msg = NULL;
}

typedef struct enq {
    int done;
    chatd_status status;
} enq;

static void on_enq(void *arg, chatd_status st, const char *reason)
{
    enq *e = arg;
    (void)reason;
    e->status = st;
    e->done = 1;
}

typedef struct inst {
    chatd_ctx *ctx;
    void *q;
} inst;

static inst open_queue(const char *name, char *const *pairs, int npairs)
{
    inst in;
    in.ctx = testcore_ctx_new(name, g_desc->cfg_keys, npairs, pairs);
    assert_non_null(in.ctx);
    assert_int_equal(g_desc->create(A, in.ctx, &in.q), CHATD_OK);
    if (g_desc->start) assert_int_equal(g_desc->start(in.q), CHATD_OK);
    return in;
}

static void close_queue(inst *in)
{
    if (g_desc->stop) {
        enq e = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_enq, &e);
        chatd_status st = g_desc->stop(in->q, c);
        if (st == CHATD_ASYNC) {
            assert_int_equal(testcore_run_until_flag(&e.done, TIMEOUT_MS), 0);
            assert_int_equal(e.status, CHATD_OK);
        } else {
            assert_int_equal(st, CHATD_OK);
            testcore_completion_free(c);
        }
    }
    g_desc->destroy(in->q);
    testcore_ctx_free(in->ctx);
}

static chatd_msg *chat(uint64_t id, const char *room, const char *text)
{
    chatd_msg_fields f;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.kind = CHATD_MSG_CHAT;
    f.id = id;
    f.room_id = room;
    f.writer_id = 1;
    f.writer = "w";
    f.text = text;
    f.text_len = strlen(text);
    f.time_ms = A->now_ms();
    return A->msg_new(NULL, &f);
}

static chatd_status enqueue(inst *in, uint64_t id, const char *room, enq *e)
{
    chatd_msg *m = chat(id, room, "x");
    chatd_completion *c = testcore_completion_new(on_enq, e);
    chatd_status st;
    assert_non_null(m);
    memset(e, 0, sizeof(*e));
    st = g_ops->enqueue(in->q, m, c);
    if (st != CHATD_ASYNC) testcore_completion_free(c);
    A->msg_unref(m); /* the queue keeps its own reference */
    return st;
}

static int setup(void **state)
{
    (void)state;
    g_nseen = 0;
    g_sync_status_set = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (long i = 0; i < g_nseen; i++)
        if (g_seen[i].msg) A->msg_unref(g_seen[i].msg);
    g_nseen = 0;
    if (testcore_msgs_live() != 0 || testcore_completions_live() != 0) {
        fprintf(stderr, "leak: %ld messages, %ld completions\n", testcore_msgs_live(),
                testcore_completions_live());
        return -1;
    }
    return 0;
}

static void test_order_and_ack_after_store(void **state)
{
    inst in = open_queue("queue", NULL, 0);
    enq e[4];
    const char *rooms[4] = {"1&2", "3&4", "1&2", "1&2"};
    (void)state;

    for (int i = 0; i < 4; i++)
        assert_int_equal(enqueue(&in, 100 + i, rooms[i], &e[i]), CHATD_ASYNC);
    /* never re-entrant: nothing consumed inside enqueue */
    assert_int_equal(g_nseen, 0);
    assert_int_equal(testcore_run_until_count(&g_nseen, 4, TIMEOUT_MS), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(A->msg_id(g_seen[i].msg), 100 + i); /* in order */
        assert_string_equal(A->msg_room(g_seen[i].msg), rooms[i]);
        assert_int_equal(g_seen[i].flags, CHATD_CONSUME_PERSIST | CHATD_CONSUME_FANOUT);
        assert_false(e[i].done); /* not acknowledged before the store */
    }
    finish(0, CHATD_OK);
    assert_true(e[0].done);
    assert_int_equal(e[0].status, CHATD_OK);
    assert_false(e[1].done);
    finish(1, CHATD_OK);
    finish(2, CHATD_ERR_IO); /* a failed store fails the publish */
    finish(3, CHATD_OK);
    assert_int_equal(e[1].status, CHATD_OK);
    assert_true(e[2].done);
    assert_int_equal(e[2].status, CHATD_ERR_IO);
    assert_int_equal(e[3].status, CHATD_OK);
    close_queue(&in);
}

static void test_done_inside_consume(void **state)
{
    inst in = open_queue("queue", NULL, 0);
    enq e;
    (void)state;

    g_sync_status_set = 1;
    g_sync_status = CHATD_ERR_UNAVAILABLE;
    assert_int_equal(enqueue(&in, 7, "1&2", &e), CHATD_ASYNC);
    assert_false(e.done);
    assert_int_equal(testcore_run_until_flag(&e.done, TIMEOUT_MS), 0);
    assert_int_equal(e.status, CHATD_ERR_UNAVAILABLE);
    g_sync_status = CHATD_OK;
    assert_int_equal(enqueue(&in, 8, "1&2", &e), CHATD_ASYNC);
    assert_int_equal(testcore_run_until_flag(&e.done, TIMEOUT_MS), 0);
    assert_int_equal(e.status, CHATD_OK);
    close_queue(&in);
}

static void test_bounded(void **state)
{
    char *cfg[] = {"max_pending=2"};
    inst in = open_queue("queue", cfg, 1);
    enq e[4];
    (void)state;

    assert_int_equal(enqueue(&in, 1, "1&2", &e[0]), CHATD_ASYNC);
    assert_int_equal(enqueue(&in, 2, "1&2", &e[1]), CHATD_ASYNC);
    assert_int_equal(enqueue(&in, 3, "1&2", &e[2]), CHATD_ERR_BUSY);
    assert_false(e[2].done);
    assert_int_equal(testcore_run_until_count(&g_nseen, 2, TIMEOUT_MS), 0);
    /* still bounded while in flight in the core */
    assert_int_equal(enqueue(&in, 3, "1&2", &e[2]), CHATD_ERR_BUSY);
    finish(0, CHATD_OK);
    assert_int_equal(enqueue(&in, 3, "1&2", &e[2]), CHATD_ASYNC);
    assert_int_equal(testcore_run_until_count(&g_nseen, 3, TIMEOUT_MS), 0);
    finish(1, CHATD_OK);
    finish(2, CHATD_OK);
    assert_int_equal(e[2].status, CHATD_OK);
    close_queue(&in);
}

static void test_stop_waits_for_inflight(void **state)
{
    inst in = open_queue("queue", NULL, 0);
    enq e, e2, stopped = {0, CHATD_OK};
    chatd_completion *c;
    (void)state;

    assert_int_equal(enqueue(&in, 1, "1&2", &e), CHATD_ASYNC);
    assert_int_equal(enqueue(&in, 2, "3&4", &e2), CHATD_ASYNC);
    /* stop before the loop ran: both are still handed to the core */
    c = testcore_completion_new(on_enq, &stopped);
    assert_int_equal(g_desc->stop(in.q, c), CHATD_ASYNC);
    assert_int_equal(testcore_run_until_count(&g_nseen, 2, TIMEOUT_MS), 0);
    assert_false(stopped.done);
    /* no new work once stopping */
    {
        enq e3;
        assert_int_equal(enqueue(&in, 3, "1&2", &e3), CHATD_ERR_UNAVAILABLE);
    }
    finish(0, CHATD_OK);
    assert_false(stopped.done);
    finish(1, CHATD_OK);
    assert_true(stopped.done);
    assert_int_equal(stopped.status, CHATD_OK);
    assert_int_equal(e.status, CHATD_OK);
    assert_int_equal(e2.status, CHATD_OK);
    g_desc->destroy(in.q);
    testcore_ctx_free(in.ctx);
}

static void test_two_instances(void **state)
{
    char *one[] = {"max_pending=1"};
    inst a = open_queue("qa", one, 1), b = open_queue("qb", NULL, 0);
    enq e[3];
    (void)state;

    assert_int_equal(enqueue(&a, 1, "1&2", &e[0]), CHATD_ASYNC);
    assert_int_equal(enqueue(&a, 2, "1&2", &e[1]), CHATD_ERR_BUSY);
    assert_int_equal(enqueue(&b, 3, "1&2", &e[2]), CHATD_ASYNC); /* b has its own bound */
    assert_int_equal(testcore_run_until_count(&g_nseen, 2, TIMEOUT_MS), 0);
    for (int i = 0; i < 2; i++) {
        /* each message came back through its own instance's ctx */
        if (A->msg_id(g_seen[i].msg) == 1)
            assert_ptr_equal(g_seen[i].ctx, a.ctx);
        else
            assert_ptr_equal(g_seen[i].ctx, b.ctx);
        finish(i, CHATD_OK);
    }
    assert_int_equal(e[0].status, CHATD_OK);
    assert_int_equal(e[2].status, CHATD_OK);
    close_queue(&a);
    close_queue(&b);
}

static int group_setup(void **state)
{
    const void *ops;
    (void)state;
    if (testcore_init() != 0) return -1;
    A = testcore_api();
    testcore_set_consume(fake_consume);
    g_desc = testcore_load(g_so, CHATD_KIND_QUEUE, &ops);
    if (!g_desc) return -1;
    g_ops = ops;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    testcore_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_order_and_ack_after_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_inside_consume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_waits_for_inflight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_instances, setup, teardown),
    };
    if (argc != 2) {
        fprintf(stderr, "usage: %s QUEUE-LOCAL.so\n", argv[0]);
        return 2;
    }
    g_so = argv[1];
    return cmocka_run_group_tests_name("queue-local", tests, group_setup, group_teardown);
}
