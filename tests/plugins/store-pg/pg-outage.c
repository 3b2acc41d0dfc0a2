/*
 * pg-outage.c - store-pg against a real PostgreSQL that goes away and comes
 * back (cmocka, on the test core of tests/lib/testcore.c).
 *
 *   pg-outage PLUGIN.so
 * with env PGTEST_CONNINFO (the database), PGTEST_STOP_CMD and
 * PGTEST_START_CMD (shell commands that stop and start that server; run by
 * tests/suites/50-pg.sh).
 *
 * stream_survives_outage: messages are persisted in a steady stream while
 *   another thread stops PostgreSQL and starts it again; every message must
 *   complete OK, and afterwards be stored exactly once, with room summaries
 *   counted exactly once (a batch whose COMMIT was lost is retried).
 * busy_and_unavailable_while_down: with max_pending = 50 and PostgreSQL down,
 *   50 messages are kept, the 51st is refused with CHATD_ERR_BUSY, reads fail
 *   with CHATD_ERR_UNAVAILABLE; when it is back, the 50 are committed.
 * bad_message_fails_alone: a batch holding one message PostgreSQL refuses is
 *   retried one message per transaction: the others commit, only that one
 *   fails (CHATD_ERR_IO), and the store carries on.
 * Also: two instances of the plugin in one process (instances, not globals).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../lib/testcore.h"

#include <event2/event.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const chatd_plugin_desc *desc;
static const chatd_store_ops *ops;
static const char *conninfo, *stop_cmd, *start_cmd;
static uint64_t next_id;

/* ---- one store instance ---- */

typedef struct inst {
    chatd_ctx *ctx;
    void *st;
} inst;

static void inst_open(inst *in, const char *name, const char *max_pending)
{
    char ci[512], mp[64];
    char *pairs[6];
    snprintf(ci, sizeof(ci), "conninfo=%s", conninfo);
    snprintf(mp, sizeof(mp), "max_pending=%s", max_pending);
    pairs[0] = ci;
    pairs[1] = mp;
    pairs[2] = (char *)"batch_max=64";
    pairs[3] = (char *)"reconnect_min_ms=50";
    pairs[4] = (char *)"reconnect_max_ms=400";
    pairs[5] = (char *)"stop_timeout_ms=20000";
    in->ctx = testcore_ctx_new(name, desc->cfg_keys, 6, pairs);
    assert_non_null(in->ctx);
    assert_int_equal(desc->create(testcore_api(), in->ctx, &in->st), CHATD_OK);
    assert_int_equal(desc->start(in->st), CHATD_OK);
}

static void stop_done(void *arg, chatd_status st, const char *reason)
{
    (void)reason;
    *(int *)arg = st == CHATD_OK ? 1 : -1;
}

static void inst_close(inst *in)
{
    int done = 0;
    chatd_completion *c = testcore_completion_new(stop_done, &done);
    chatd_status s = desc->stop(in->st, c);
    if (s == CHATD_ASYNC) {
        assert_int_equal(testcore_run_until_flag(&done, 30000), 0);
        assert_int_equal(done, 1);
    } else {
        assert_int_equal(s, CHATD_OK);
        testcore_completion_free(c);
    }
    desc->destroy(in->st);
    testcore_ctx_free(in->ctx);
}

/* ---- waiting for callbacks ---- */

typedef struct res {
    int done;
    chatd_status status;
    int64_t id;
    size_t n;
    int64_t unread;
    uint64_t next_before;
    uint64_t ids[1024];
} res;

static void member_cb(void *arg, chatd_status status, const chatd_member *rows, size_t n)
{
    res *r = arg;
    r->status = status;
    r->n = n;
    r->id = n ? rows[0].id : 0;
    r->done = 1;
}

static void rooms_cb(void *arg, chatd_status status, const chatd_room_summary *rows, size_t n)
{
    res *r = arg;
    r->status = status;
    r->n = n;
    r->unread = n ? rows[0].unread : -1;
    r->done = 1;
}

static void history_cb(void *arg, chatd_status status, chatd_msg *const *msgs, size_t n,
                       uint64_t next_before)
{
    res *r = arg;
    r->status = status;
    r->n = n;
    for (size_t k = 0; k < n && k < 1024; k++)
        r->ids[k] = testcore_api()->msg_id(msgs[k]);
    r->next_before = next_before;
    r->done = 1;
}

/* a member whose login is unique to this run (the database may be reused) */
static int64_t member(inst *in, const char *prefix)
{
    res r = {0};
    char login[64];
    chatd_member m = {sizeof(m), 0, login, login, "x", 0};
    snprintf(login, sizeof(login), "%s-%" PRIu64, prefix, next_id);
    ops->member_create(in->st, &m, member_cb, &r);
    assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
    if (r.status == CHATD_ERR_EXISTS) {
        memset(&r, 0, sizeof(r));
        ops->member_get(in->st, 0, login, member_cb, &r);
        assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
    }
    assert_int_equal(r.status, CHATD_OK);
    return r.id;
}

/* count the messages of a room (all pages) and check they are distinct */
static size_t count_room(inst *in, const char *room)
{
    size_t total = 0;
    uint64_t before = 0, last_oldest = UINT64_MAX;
    for (;;) {
        static res r;
        memset(&r, 0, sizeof(r));
        ops->history(in->st, room, before, 1000, history_cb, &r);
        assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
        assert_int_equal(r.status, CHATD_OK);
        for (size_t k = 1; k < r.n; k++)
            assert_true(r.ids[k - 1] < r.ids[k]); /* distinct */
        if (r.n) {
            assert_true(r.ids[r.n - 1] < last_oldest);
            last_oldest = r.ids[0];
        }
        total += r.n;
        if (!r.next_before) break;
        before = r.next_before;
    }
    return total;
}

/* an instance that is still waiting to reconnect answers reads with
 * CHATD_ERR_UNAVAILABLE: ask again for up to 10 s */
static int64_t unread_of(inst *in, int64_t member_id)
{
    res r = {0};
    for (int tries = 0; tries < 100; tries++) {
        memset(&r, 0, sizeof(r));
        ops->room_list(in->st, member_id, rooms_cb, &r);
        assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
        if (r.status != CHATD_ERR_UNAVAILABLE) break;
        testcore_run_for(100);
    }
    assert_int_equal(r.status, CHATD_OK);
    assert_int_equal(r.n, 1);
    return r.unread;
}

/* ---- persisting ---- */

static long completed_ok, completed_err;

static void persist_done(void *arg, chatd_status st, const char *reason)
{
    (void)arg;
    if (st == CHATD_OK) {
        completed_ok++;
    } else {
        completed_err++;
        fprintf(stderr, "pg-outage: persist failed: %d %s\n", st, reason ? reason : "");
    }
}

static chatd_status persist_id(inst *in, const char *room, int64_t writer_id, const char *writer,
                               int seq, uint64_t id);
static chatd_status persist_one(inst *in, const char *room, int64_t writer_id, const char *writer,
                                int seq);

/* A message the core accepts and PostgreSQL refuses: its id does not fit
 * the bigint column (chatd ids stay below 2^63 until about 2093). */
#define ID_PAST_BIGINT (UINT64_C(1) << 63)

static void bad_message_fails_alone(void **state)
{
    inst in;
    int64_t a, b;
    char room[64];
    (void)state;

    inst_open(&in, "pg4", "1000");
    a = member(&in, "pge");
    b = member(&in, "pgf");
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, a < b ? a : b, a < b ? b : a);
    completed_ok = completed_err = 0;
    /* all ten in one loop turn, so in one batch; the 5th has an id that
     * PostgreSQL's bigint cannot hold */
    for (int k = 0; k < 10; k++)
        assert_int_equal(k == 4 ? persist_id(&in, room, a, "pge", k, ID_PAST_BIGINT + next_id)
                                : persist_one(&in, room, a, "pge", k),
                         CHATD_ASYNC);
    assert_int_equal(testcore_run_until_count(&completed_ok, 9, 30000), 0);
    assert_int_equal(testcore_run_until_count(&completed_err, 1, 30000), 0);
    assert_int_equal(completed_ok, 9);
    assert_int_equal(count_room(&in, room), 9);
    assert_int_equal(unread_of(&in, b), 9);
    /* and batches work again afterwards */
    for (int k = 0; k < 20; k++)
        assert_int_equal(persist_one(&in, room, a, "pge", k), CHATD_ASYNC);
    assert_int_equal(testcore_run_until_count(&completed_ok, 29, 30000), 0);
    assert_int_equal(completed_err, 1);
    inst_close(&in);
    assert_int_equal(testcore_completions_live(), 0);
}

static chatd_status persist_one(inst *in, const char *room, int64_t writer_id, const char *writer,
                                int seq)
{
    return persist_id(in, room, writer_id, writer, seq, ++next_id);
}

static chatd_status persist_id(inst *in, const char *room, int64_t writer_id, const char *writer,
                               int seq, uint64_t id)
{
    char text[64];
    chatd_msg_fields f;
    chatd_msg *m;
    chatd_completion *c;
    chatd_status s;
    memset(&f, 0, sizeof(f));
    snprintf(text, sizeof(text), "outage %d 메시지", seq);
    f.size = sizeof(f);
    f.kind = CHATD_MSG_CHAT;
    f.id = id;
    f.room_id = room;
    f.writer_id = writer_id;
    f.writer = writer;
    f.text = text;
    f.text_len = strlen(text);
    f.time_ms = testcore_api()->now_ms();
    m = testcore_api()->msg_new(NULL, &f);
    assert_non_null(m);
    c = testcore_completion_new(persist_done, NULL);
    s = ops->persist(in->st, m, c);
    if (s != CHATD_ASYNC) testcore_completion_free(c);
    testcore_api()->msg_unref(m);
    return s;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* PostgreSQL's state as this program left it: a test that fails while the
 * server is down must not leave it down for the next test (teardown). */
static int pg_down;
static pthread_t outage_th;
static int outage_running;
static int outage_stop_rc = -1, outage_start_rc = -1;

static int pg_stop(void)
{
    int rc = system(stop_cmd);
    if (rc == 0) pg_down = 1;
    return rc;
}

static int pg_start(void)
{
    int rc = system(start_cmd);
    if (rc == 0) pg_down = 0;
    return rc;
}

static void *outage_thread(void *arg)
{
    (void)arg;
    sleep_ms(300);
    outage_stop_rc = pg_stop();
    sleep_ms(1500);
    outage_start_rc = pg_start();
    return NULL;
}

/* teardown of every test: the outage thread is over and PostgreSQL is up */
static int pg_back_up(void **state)
{
    (void)state;
    if (outage_running) {
        pthread_join(outage_th, NULL);
        outage_running = 0;
    }
    if (pg_down && pg_start() != 0) {
        fprintf(stderr, "pg-outage: cannot start PostgreSQL again (%s)\n", start_cmd);
        return -1;
    }
    return 0;
}

typedef struct streamer {
    inst *in;
    const char *room;
    int64_t writer_id;
    int sent, target;
    struct event *ev;
} streamer;

static void stream_tick(evutil_socket_t fd, short what, void *arg)
{
    streamer *s = arg;
    (void)fd;
    (void)what;
    for (int k = 0; k < 3 && s->sent < s->target; k++) {
        assert_int_equal(persist_one(s->in, s->room, s->writer_id, "pga", s->sent), CHATD_ASYNC);
        s->sent++;
    }
    if (s->sent < s->target) {
        struct timeval tv = {0, 5000};
        evtimer_add(s->ev, &tv);
    }
}

static void stream_survives_outage(void **state)
{
    inst in;
    int64_t a, b;
    char room[64];
    streamer s = {0};
    struct timeval tv = {0, 0};
    (void)state;

    inst_open(&in, "pg1", "100000");
    a = member(&in, "pga");
    b = member(&in, "pgb");
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, a < b ? a : b, a < b ? b : a);

    uint64_t failures0 = testcore_counter("chatd_store_connection_failures_total");
    completed_ok = completed_err = 0;
    s.in = &in;
    s.room = room;
    s.writer_id = a;
    s.target = 1500; /* 3 every 5 ms: about 2.5 s of traffic */
    s.ev = evtimer_new(testcore_base(), stream_tick, &s);
    assert_non_null(s.ev);
    evtimer_add(s.ev, &tv);
    outage_stop_rc = outage_start_rc = -1;
    assert_int_equal(pthread_create(&outage_th, NULL, outage_thread, NULL), 0);
    outage_running = 1;
    testcore_run_until_count(&completed_ok, s.target, 60000);
    pthread_join(outage_th, NULL);
    outage_running = 0;
    event_free(s.ev);
    assert_int_equal(outage_stop_rc, 0);
    assert_int_equal(outage_start_rc, 0);
    assert_int_equal(completed_err, 0);
    assert_int_equal(completed_ok, s.target);
    /* the stream did live through the outage: the store lost its server */
    assert_true(testcore_counter("chatd_store_connection_failures_total") > failures0);

    /* every message once, and the peer's unread counted once per message */
    assert_int_equal(count_room(&in, room), (size_t)s.target);
    assert_int_equal(unread_of(&in, b), s.target);
    assert_int_equal(unread_of(&in, a), 0);
    inst_close(&in);
    assert_int_equal(testcore_completions_live(), 0);
}

static void busy_and_unavailable_while_down(void **state)
{
    inst in, other;
    int64_t a, b;
    char room[64];
    int up = 0;
    (void)state;

    inst_open(&in, "pg2", "50");
    inst_open(&other, "pg3", "1000"); /* a second instance of the same .so */
    a = member(&in, "pgc");
    b = member(&other, "pgd");
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, a < b ? a : b, a < b ? b : a);

    assert_int_equal(pg_stop(), 0);
    /* wait until the store has noticed: reads fail with UNAVAILABLE */
    for (int tries = 0; tries < 100; tries++) {
        res r = {0};
        ops->room_list(in.st, a, rooms_cb, &r);
        assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
        if (r.status == CHATD_ERR_UNAVAILABLE) {
            up = 1;
            break;
        }
        assert_int_equal(r.status, CHATD_OK);
        testcore_run_for(100); /* let the loop see the connection drop */
    }
    assert_true(up);

    completed_ok = completed_err = 0;
    for (int k = 0; k < 50; k++)
        assert_int_equal(persist_one(&in, room, a, "pgc", k), CHATD_ASYNC);
    uint64_t busy0 = testcore_counter("chatd_store_busy_total");
    assert_int_equal(persist_one(&in, room, a, "pgc", 50), CHATD_ERR_BUSY);
    assert_int_equal(testcore_counter("chatd_store_busy_total") - busy0, 1);
    {
        res r = {0};
        ops->history(in.st, room, 0, 10, history_cb, &r);
        assert_int_equal(testcore_run_until_flag(&r.done, 15000), 0);
        assert_int_equal(r.status, CHATD_ERR_UNAVAILABLE);
    }
    assert_int_equal(completed_ok + completed_err, 0); /* nothing completed while down */

    assert_int_equal(pg_start(), 0);
    assert_int_equal(testcore_run_until_count(&completed_ok, 50, 30000), 0);
    assert_int_equal(completed_err, 0);
    assert_int_equal(count_room(&in, room), 50);
    assert_int_equal(unread_of(&other, b), 50);
    /* and it takes new messages again */
    assert_int_equal(persist_one(&in, room, a, "pgc", 51), CHATD_ASYNC);
    assert_int_equal(testcore_run_until_count(&completed_ok, 51, 15000), 0);
    inst_close(&in);
    inst_close(&other);
    assert_int_equal(testcore_completions_live(), 0);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(stream_survives_outage, pg_back_up),
        cmocka_unit_test_teardown(busy_and_unavailable_while_down, pg_back_up),
        cmocka_unit_test_teardown(bad_message_fails_alone, pg_back_up),
    };
    int rc;

    conninfo = getenv("PGTEST_CONNINFO");
    stop_cmd = getenv("PGTEST_STOP_CMD");
    start_cmd = getenv("PGTEST_START_CMD");
    if (argc != 2 || !conninfo || !stop_cmd || !start_cmd) {
        fprintf(stderr,
                "usage: PGTEST_CONNINFO=... PGTEST_STOP_CMD=... PGTEST_START_CMD=..."
                " %s store-pg.so\n",
                argv[0]);
        return 2;
    }
    const void *store_ops;
    desc = testcore_load(argv[1], CHATD_KIND_STORE, &store_ops);
    if (!desc) return 1;
    ops = store_ops;
    if (testcore_init() != 0) return 1;
    /* ids like the core's: ms since 2024-01-01 << 22, so runs never collide */
    next_id = ((uint64_t)(testcore_api()->now_ms() - 1704067200000LL)) << 22;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    testcore_shutdown();
    return rc;
}
