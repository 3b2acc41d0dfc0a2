/*
 * tests/core/test_abi10.c - plugins built against ABI 1.0 under this core.
 *
 * tests/abi10/store-abi10.c is compiled with the frozen 1.0 header and loaded
 * into the real core with queue-local and the test transport. Members are
 * registered and log in through chatd_api, then member_list (the core's
 * strip_done copy), member_get and room_list (store rows handed straight to
 * the transport, as transport-ws's REST handlers get them) are read back the
 * way every reader must, with CHATD_ROW and CHATD_HAS, and every field of
 * every row is checked. The second run has the store declare records shorter
 * than this core's (what a 1.0 writer looks like once a record has grown): a
 * reader indexing rows by its own sizeof gets every row after the first
 * wrong, and this test fails.
 */
#include "config.h"

#include "../../core/core.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#define NMEMBERS 3

typedef struct fixture {
    char *dir;
    cfg *cf;
    core *c;
    chatd_ctx *t;
    const chatd_api *api;
    int short_rows;
    int64_t ids[NMEMBERS];
} fixture;

static const char *const logins[NMEMBERS] = {"ann", "ben", "cid"};
static const char *const names[NMEMBERS] = {"Ann", "Ben", "Cid"};

typedef struct result {
    volatile int done;
    chatd_status st;
    size_t n;
    chatd_member members[8];
    char strings[8][2][64];
    chatd_room_summary rooms[8];
    bool has_last_read[8];
    char token[80];
    int calls;
} result;

#define WAIT(fx, r) assert_true(loop_until((fx)->c->base, &(r).done, 30))

/* Copies rows read with CHATD_ROW, as a transport must read them. */
static void members_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    result *r = arg;
    r->st = st;
    r->n = n;
    r->calls++;
    for (size_t i = 0; i < n && i < 8; i++) {
        const chatd_member *m = CHATD_ROW(chatd_member, rows, i);
        r->members[i] = *m;
        snprintf(r->strings[i][0], 64, "%s", m->login_id);
        snprintf(r->strings[i][1], 64, "%s", m->name);
    }
    r->done = 1;
}

static void rooms_cb(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n)
{
    result *r = arg;
    r->st = st;
    r->n = n;
    r->calls++;
    for (size_t i = 0; i < n && i < 8; i++) {
        const chatd_room_summary *s = CHATD_ROW(chatd_room_summary, rows, i);
        /* the fields every 1.0 writer has, then the last one only if declared */
        memcpy(&r->rooms[i], s, offsetof(chatd_room_summary, last_read_id));
        r->has_last_read[i] = CHATD_HAS(chatd_room_summary, s, last_read_id);
        r->rooms[i].last_read_id = r->has_last_read[i] ? s->last_read_id : 0;
        snprintf(r->strings[i][0], 64, "%s", s->room_id);
        snprintf(r->strings[i][1], 64, "%s|%s|%s", s->peer_login, s->peer_name, s->last_message);
    }
    r->done = 1;
}

static void login_cb(void *arg, chatd_status st, const char *token, const chatd_member *m)
{
    result *r = arg;
    r->st = st;
    if (st == CHATD_OK) {
        snprintf(r->token, sizeof(r->token), "%s", token);
        r->members[0] = *m;
    }
    r->done = 1;
}

static void publish_cb(void *arg, chatd_status st, const char *reason, chatd_msg *msg)
{
    (void)reason;
    (void)msg;
    result *r = arg;
    r->st = st;
    r->calls++;
    r->done = 1;
}

static int setup_with(void **state, int short_rows)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->short_rows = short_rows;
    fx->dir = temp_dir();
    char conf[4096];
    snprintf(conf, sizeof(conf),
             "[chatd]\nnode_id = 1\nlog_level = warn\npublish_rate = 0\n\n"
             "[t]\nplugin = %s/test-transport.so\n\n"
             "[queue]\nplugin = %s/plugins/queue-local/.libs/queue-local.so\n\n"
             "[store]\nplugin = %s/store-abi10.so\nshort_rows = %s\n",
             TEST_PLUGINS, TOP_BUILDDIR, TEST_PLUGINS, short_rows ? "true" : "false");
    char *path = write_file(fx->dir, "chatd.conf", conf);
    fx->cf = cfg_new();
    assert_non_null(fx->cf);
    assert_int_equal(cfg_load(fx->cf, path), 0);
    free(path);
    assert_int_equal(cfg_check_core(fx->cf), 0);
    fx->c = core_new(fx->cf);
    assert_non_null(fx->c);
    assert_int_equal(core_start(fx->c), 0);
    fx->t = core_instance(fx->c, "t");
    assert_non_null(fx->t);
    fx->api = api_table();
    /* the 1.0 store loaded as what it is */
    assert_int_equal(fx->c->store->plugin->desc.abi_minor, 0);
    assert_int_equal(fx->api->healthy(fx->t), 1);
    for (size_t i = 0; i < NMEMBERS; i++) {
        result r = {0};
        fx->api->member_register(fx->t, logins[i], names[i], "secret password", members_cb, &r);
        WAIT(fx, r);
        assert_int_equal(r.st, CHATD_OK);
        assert_int_equal(r.n, 1);
        fx->ids[i] = r.members[0].id;
        assert_int_equal(fx->ids[i], (int64_t)i + 1);
        assert_string_equal(r.strings[0][0], logins[i]);
        assert_null(r.members[0].pw_hash);
    }
    *state = fx;
    return 0;
}

static int setup_full(void **state)
{
    return setup_with(state, 0);
}

static int setup_short(void **state)
{
    return setup_with(state, 1);
}

static int teardown(void **state)
{
    fixture *fx = *state;
    core_stop(fx->c);
    while (fx->c->state != CORE_STOPPED)
        event_base_loop(fx->c->base, EVLOOP_ONCE);
    core_free(fx->c);
    cfg_free(fx->cf);
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx);
    return 0;
}

/* What the store's created_ms reaches the reader as. */
static int64_t created(const fixture *fx, int64_t id)
{
    return fx->short_rows ? 0 : INT64_C(1700000000000) + id;
}

static void member_rows(void **state)
{
    fixture *fx = *state;
    result r = {0};
    fx->api->member_list(fx->t, members_cb, &r);
    WAIT(fx, r);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.st, CHATD_OK);
    assert_int_equal(r.n, NMEMBERS);
    for (size_t i = 0; i < NMEMBERS; i++) {
        /* the core hands on rows of its own size, whatever the store's */
        assert_int_equal(r.members[i].size, sizeof(chatd_member));
        assert_int_equal(r.members[i].id, fx->ids[i]);
        assert_string_equal(r.strings[i][0], logins[i]);
        assert_string_equal(r.strings[i][1], names[i]);
        assert_null(r.members[i].pw_hash);
        assert_int_equal(r.members[i].created_ms, created(fx, fx->ids[i]));
    }

    /* by login id: the store's row through the same copy */
    result g = {0};
    fx->api->member_get(fx->t, 0, "cid", members_cb, &g);
    WAIT(fx, g);
    assert_int_equal(g.st, CHATD_OK);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.members[0].id, fx->ids[2]);
    assert_string_equal(g.strings[0][1], "Cid");
    assert_null(g.members[0].pw_hash);
    assert_int_equal(g.members[0].created_ms, created(fx, fx->ids[2]));

    /* by id: from the member cache, filled from those rows */
    result h = {0};
    fx->api->member_get(fx->t, fx->ids[1], NULL, members_cb, &h);
    WAIT(fx, h);
    assert_int_equal(h.st, CHATD_OK);
    assert_string_equal(h.strings[0][0], "ben");
    assert_int_equal(h.members[0].created_ms, created(fx, fx->ids[1]));

    /* member_page (ABI 1.4) of a store without the hook: the core pages
     * member_list, after the id, by prefix of login id or name */
    result p = {0};
    fx->api->member_page(fx->t, fx->ids[0], NULL, 1, members_cb, &p);
    WAIT(fx, p);
    assert_int_equal(p.st, CHATD_OK);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.members[0].id, fx->ids[1]);
    assert_null(p.members[0].pw_hash);
    result q = {0};
    fx->api->member_page(fx->t, 0, "CI", 5, members_cb, &q);
    WAIT(fx, q);
    assert_int_equal(q.st, CHATD_OK);
    assert_int_equal(q.n, 1);
    assert_string_equal(q.strings[0][1], "Cid");
    result z = {0};
    fx->api->member_page(fx->t, 0, "ann", 0, members_cb, &z);
    WAIT(fx, z);
    assert_int_equal(z.st, CHATD_ERR_INVALID);
}

static void room_rows(void **state)
{
    fixture *fx = *state;
    result r = {0};
    fx->api->room_list(fx->t, fx->ids[1], rooms_cb, &r);
    WAIT(fx, r);
    assert_int_equal(r.calls, 1);
    assert_int_equal(r.st, CHATD_OK);
    assert_int_equal(r.n, NMEMBERS - 1);
    static const char *const want_room[] = {"1&2", "2&3"};
    static const char *const want_text[] = {"ann|Ann|last from ann", "cid|Cid|last from cid"};
    const int64_t peers[] = {fx->ids[0], fx->ids[2]};
    for (size_t i = 0; i < 2; i++) {
        const chatd_room_summary *s = &r.rooms[i];
        assert_string_equal(r.strings[i][0], want_room[i]);
        assert_string_equal(r.strings[i][1], want_text[i]);
        assert_int_equal(s->member_id, fx->ids[1]);
        assert_int_equal(s->peer_id, peers[i]);
        assert_int_equal(s->last_msg_id, 1000 + (uint64_t)peers[i]);
        assert_int_equal(s->last_ms, 5000 + peers[i]);
        assert_int_equal(s->unread, peers[i]);
        assert_int_equal(r.has_last_read[i], !fx->short_rows);
        assert_int_equal(s->last_read_id, fx->short_rows ? 0 : 100 + (uint64_t)peers[i]);
    }
}

/* Login reads the store's row (with its hash) through the same copy, and a
 * publish goes through the 1.0 store's persist to the RECEIPT callback. */
static void login_and_publish(void **state)
{
    fixture *fx = *state;
    result l = {0};
    fx->api->login(fx->t, "ann", "secret password", login_cb, &l);
    WAIT(fx, l);
    assert_int_equal(l.st, CHATD_OK);
    assert_int_equal(strlen(l.token), 64);
    assert_int_equal(l.members[0].id, fx->ids[0]);
    assert_null(l.members[0].pw_hash);
    result a = {0};
    fx->api->authenticate(fx->t, l.token, members_cb, &a);
    WAIT(fx, a);
    assert_int_equal(a.st, CHATD_OK);
    assert_string_equal(a.strings[0][0], "ann");

    result p = {0};
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .room_id = "2&1",
                          .writer_id = fx->ids[0],
                          .text = "hello",
                          .text_len = 5};
    fx->api->publish(fx->t, &f, publish_cb, &p);
    WAIT(fx, p);
    assert_int_equal(p.st, CHATD_OK);
    assert_int_equal(p.calls, 1);
}

static void history_cb(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n,
                       uint64_t next_before)
{
    result *r = arg;
    (void)msgs;
    (void)next_before;
    r->st = st;
    r->n = n;
    r->calls++;
    r->done = 1;
}

/* side_replay (ABI 1.5) of a store without the hook: ranges the contract
 * refuses are CHATD_ERR_INVALID, valid ones CHATD_ERR_UNAVAILABLE, the
 * callback once each. */
static void side_replay_without_hook(void **state)
{
    fixture *fx = *state;
    const uint64_t after[] = {0, CHATD_POS_PARTITIONED}, until[] = {CHATD_POS_PARTITIONED, 0};
    const uint64_t whole[] = {CHATD_POS_PARTITIONED}; /* the unpartitioned stream */
    result bad = {0}, none = {0}, ok = {0};
    fx->api->side_replay(fx->t, fx->ids[0], after, until, 2, 10, history_cb, &bad);
    WAIT(fx, bad);
    assert_int_equal(bad.st, CHATD_ERR_INVALID); /* until[1] <= after[1] */
    fx->api->side_replay(fx->t, fx->ids[0], after, until, 0, 10, history_cb, &none);
    WAIT(fx, none);
    assert_int_equal(none.st, CHATD_ERR_INVALID);
    fx->api->side_replay(fx->t, fx->ids[0], after, whole, 1, 10, history_cb, &ok);
    WAIT(fx, ok);
    assert_int_equal(ok.st, CHATD_ERR_UNAVAILABLE);
    assert_int_equal(bad.calls + none.calls + ok.calls, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        {"member rows, 1.0 records", member_rows, setup_full, teardown, NULL},
        {"room rows, 1.0 records", room_rows, setup_full, teardown, NULL},
        {"login and publish, 1.0 records", login_and_publish, setup_full, teardown, NULL},
        {"member rows, short records", member_rows, setup_short, teardown, NULL},
        {"room rows, short records", room_rows, setup_short, teardown, NULL},
        {"login and publish, short records", login_and_publish, setup_short, teardown, NULL},
        {"side replay without the store hook", side_replay_without_hook, setup_full, teardown,
         NULL},
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
