/*
 * tests/store/conformance.c - the one conformance suite every chatd store
 * plugin must pass (the program store_conformance), written only against the
 * store ABI (chatd/plugin.h). It loads the store's .so with the daemon's
 * loader, drives it in the test core (tests/lib/testcore.h: the daemon's
 * loop, messages, completions, post and config) and checks the behaviour the
 * core relies on.
 *
 * Usage
 *     store_conformance STORE.so [key=value ...]
 *     CHATD_STORE_SO=STORE.so CHATD_STORE_CFG='key=value<newline>key=value' \
 *         store_conformance
 * Each key=value is one config key of the store's section (checked against
 * the plugin's cfg_keys table, as the daemon does). Examples:
 *     store_conformance plugins/store-sqlite/.libs/store-sqlite.so \
 *         path=/tmp/x/chatd.db
 *     store_conformance plugins/store-pg/.libs/store-pg.so \
 *         'conninfo=host=127.0.0.1 port=5432 dbname=chatd user=chatd'
 * The suite creates its own members (login ids unique per run) and message
 * ids (increasing, unique per run), so it may run against a database that
 * already holds data. CHATD_TEST_DEBUG=1 shows the plugin's debug log;
 * CMOCKA_MESSAGE_OUTPUT=TAP gives TAP output.
 *
 * Cases: members, sessions, idempotent insert (and an id taken by another
 * message: CHATD_ERR_EXISTS, counted), history paging, room
 * summaries, read marks, batched commits, non-ASCII text, 64 KiB messages,
 * the max_pending bound (when the store has that key; CHATD_ERR_BUSY),
 * dead letters (when the store has the ABI 1.1 hook), positions (ABI 1.4) and
 * the side stream's replay by position ranges (ABI 1.5, when the store has
 * side_replay), the newest idempotency records (ABI 1.7, idem_recent),
 * durability across a stop/start of the store, and across a crash: a child
 * process (this program with --crash-child) persists messages until it is
 * killed with SIGKILL; every message it saw acknowledged must be stored once.
 *
 * This file: the store under test, the synchronous wrappers, main.
 * The cases: conformance_data.c (members, sessions, messages, summaries,
 * read marks), conformance_durable.c (batching, text, bounds, restart,
 * crash), conformance_order.c (positions), conformance_side.c (side_replay, stream_heads),
 * conformance_idem.c (idem_recent).
 */
#define _POSIX_C_SOURCE 200809L

#include "conformance.h"

/* ------------------------------------------------------------------------ */
/* The store under test                                                     */
/* ------------------------------------------------------------------------ */

const char *g_so;
char *g_pairs[MAX_CFG];
int g_npairs;
const chatd_plugin_desc *g_desc;
const chatd_store_ops *g_ops;
const chatd_api *A;
chatd_ctx *g_ctx;
void *g_inst;
char g_run[32]; /* unique per run: suffix of login ids */
uint64_t g_id_base, g_id_next;
int64_t g_time_base;

const char *g_self; /* argv[0], to start the crash child */

/* ids one run may use: the low 16 bits of its ids */
#define RUN_IDS 65536

uint64_t next_id(void)
{
    if (g_id_next >= RUN_IDS) {
        fprintf(stderr, "store_conformance: more than %d message ids in one run\n", RUN_IDS);
        abort();
    }
    return g_id_base + g_id_next++;
}

void on_completion(void *arg, chatd_status st, const char *reason)
{
    wait_status *w = arg;
    (void)reason;
    w->status = st;
    w->done = 1;
}

void on_status(void *arg, chatd_status st)
{
    wait_status *w = arg;
    w->status = st;
    w->done = 1;
}

int store_open(void)
{
    chatd_status st;

    g_ctx = testcore_ctx_new("store", g_desc->cfg_keys, g_npairs, g_pairs);
    if (!g_ctx) return -1;
    st = g_desc->create(A, g_ctx, &g_inst);
    if (st != CHATD_OK) {
        fprintf(stderr, "store create failed: %s\n", A->status_str(st));
        testcore_ctx_free(g_ctx);
        g_ctx = NULL;
        return -1;
    }
    if (g_desc->start && (st = g_desc->start(g_inst)) != CHATD_OK) {
        fprintf(stderr, "store start failed: %s\n", A->status_str(st));
        g_desc->destroy(g_inst);
        testcore_ctx_free(g_ctx);
        g_ctx = NULL;
        return -1;
    }
    return 0;
}

int store_close(void)
{
    int rc = 0;

    if (!g_ctx) return 0;
    if (g_desc->stop) {
        wait_status w = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_completion, &w);
        chatd_status st = g_desc->stop(g_inst, c);
        if (st == CHATD_ASYNC) {
            if (testcore_run_until_flag(&w.done, TIMEOUT_MS) != 0 || w.status != CHATD_OK) rc = -1;
        } else {
            testcore_completion_free(c);
            rc = st == CHATD_OK ? 0 : -1;
        }
    }
    g_desc->destroy(g_inst);
    g_inst = NULL;
    testcore_ctx_free(g_ctx);
    g_ctx = NULL;
    return rc;
}

/* Start the test core and load the store plugin (g_so). */
int load_store(void)
{
    const void *ops;

    if (testcore_init() != 0) return -1;
    A = testcore_api();
    g_desc = testcore_load(g_so, CHATD_KIND_STORE, &ops);
    if (!g_desc) return -1;
    g_ops = ops;
    if (g_ops->size < sizeof(chatd_store_ops) || !g_ops->persist || !g_ops->member_create ||
        !g_ops->member_get || !g_ops->member_list || !g_ops->session_put || !g_ops->session_get ||
        !g_ops->session_del || !g_ops->room_list || !g_ops->history) {
        fprintf(stderr, "%s lacks store hooks\n", g_so);
        return -1;
    }
    return 0;
}

int group_setup(void **state)
{
    (void)state;
    if (load_store() != 0) return -1;
    g_time_base = A->now_ms();
    snprintf(g_run, sizeof(g_run), "%" PRIx64 "%x", (uint64_t)g_time_base,
             (unsigned)getpid() & 0xffff);
    /* Real chatd ids: ms since 2024 << 22 | node << 12 | seq. Here the low
     * 22 bits are the process id's low 6 bits and 16 bits counted within
     * this run, so ids are increasing, and unique even across runs started
     * in the same millisecond on one database (50-pg.sh starts three). */
    g_id_base = (uint64_t)(g_time_base - EPOCH_2024_MS) << 22 | (uint64_t)(getpid() & 0x3f) << 16;
    g_id_next = 1;
    fprintf(stderr, "store under test: %s %s (%s), run %s\n", g_desc->name,
            g_desc->version ? g_desc->version : "?", g_so, g_run);
    return store_open();
}

int group_teardown(void **state)
{
    int rc = 0;
    (void)state;
    if (store_close() != 0) rc = -1;
    if (testcore_msgs_live() != 0) {
        fprintf(stderr, "%ld messages leaked (a reference the store never dropped)\n",
                testcore_msgs_live());
        rc = -1;
    }
    if (testcore_completions_live() != 0) {
        fprintf(stderr, "%ld completions never completed\n", testcore_completions_live());
        rc = -1;
    }
    testcore_shutdown();
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Synchronous wrappers: call the hook, run the loop until the answer       */
/* ------------------------------------------------------------------------ */

void copy_member(member_copy *d, const chatd_member *m)
{
    memset(d, 0, sizeof(*d));
    d->id = m->id;
    snprintf(d->login_id, sizeof(d->login_id), "%s", m->login_id ? m->login_id : "");
    snprintf(d->name, sizeof(d->name), "%s", m->name ? m->name : "");
    d->has_pw = m->pw_hash != NULL;
    snprintf(d->pw_hash, sizeof(d->pw_hash), "%s", m->pw_hash ? m->pw_hash : "");
    d->created_ms = m->created_ms;
}

void on_members(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    member_wait *w = arg;
    w->status = st;
    w->n = n;
    for (size_t i = 0; i < n && i < w->cap; i++)
        copy_member(&w->rows[i], &rows[i]);
    w->done = 1;
}

chatd_status st_member_create(const char *login, const char *name, const char *pw,
                              int64_t created_ms, member_copy *out)
{
    member_copy row;
    member_wait w = {0, CHATD_OK, 0, &row, 1};
    chatd_member m = {sizeof(chatd_member), 0, login, name, pw, created_ms};

    g_ops->member_create(g_inst, &m, on_members, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    if (w.status == CHATD_OK) {
        assert_int_equal(w.n, 1);
        if (out) *out = row;
    }
    return w.status;
}

chatd_status st_member_get(int64_t id, const char *login, member_copy *out)
{
    member_copy row;
    member_wait w = {0, CHATD_OK, 0, &row, 1};

    g_ops->member_get(g_inst, id, login, on_members, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    if (w.status == CHATD_OK) {
        assert_int_equal(w.n, 1);
        if (out) *out = row;
    } else {
        assert_int_equal(w.n, 0);
    }
    return w.status;
}

/* Make a member with a unique login id; returns its id. */
int64_t make_member(const char *who, const char *name)
{
    char login[96];
    member_copy m;
    snprintf(login, sizeof(login), "%s-%s", who, g_run);
    assert_int_equal(st_member_create(login, name, "$argon2id$v=19$m=65536,t=2,p=1$c2FsdA$aGFzaA",
                                      A->now_ms(), &m),
                     CHATD_OK);
    assert_true(m.id > 0);
    return m.id;
}

void room_of(int64_t a, int64_t b, char *buf, size_t n)
{
    snprintf(buf, n, "%lld&%lld", (long long)(a < b ? a : b), (long long)(a < b ? b : a));
}

chatd_msg *new_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                    const char *text, size_t len, int64_t time_ms)
{
    return new_chat_at(id, 0, room, writer_id, writer, text, len, time_ms);
}

chatd_msg *new_chat_at(uint64_t id, uint64_t pos, const char *room, int64_t writer_id,
                       const char *writer, const char *text, size_t len, int64_t time_ms)
{
    chatd_msg_fields f;
    chatd_msg *m;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.kind = CHATD_MSG_CHAT;
    f.id = id;
    f.pos = pos;
    f.room_id = room;
    f.writer_id = writer_id;
    f.writer = writer;
    f.text = text;
    f.text_len = len;
    f.time_ms = time_ms;
    m = A->msg_new(g_ctx, &f);
    assert_non_null(m);
    return m;
}

chatd_msg *new_read(uint64_t id, const char *room, int64_t reader, const char *login,
                    uint64_t up_to)
{
    return new_read_at(id, 0, room, reader, login, up_to);
}

chatd_msg *new_read_at(uint64_t id, uint64_t pos, const char *room, int64_t reader,
                       const char *login, uint64_t up_to)
{
    chatd_msg_fields f;
    chatd_msg *m;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.kind = CHATD_MSG_READ;
    f.id = id;
    f.pos = pos;
    f.room_id = room;
    f.writer_id = reader;
    f.writer = login;
    f.time_ms = A->now_ms();
    f.up_to = up_to;
    m = A->msg_new(g_ctx, &f);
    assert_non_null(m);
    return m;
}

/* Persist one message and wait for its commit. The caller keeps its ref. */
chatd_status st_persist(chatd_msg *m)
{
    wait_status w = {0, CHATD_OK};
    chatd_completion *c = testcore_completion_new(on_completion, &w);
    chatd_status st = g_ops->persist(g_inst, m, c);
    if (st != CHATD_ASYNC) {
        testcore_completion_free(c);
        return st;
    }
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    return w.status;
}

chatd_status st_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                     const char *text, int64_t time_ms)
{
    chatd_msg *m = new_chat(id, room, writer_id, writer, text, strlen(text), time_ms);
    chatd_status st = st_persist(m);
    A->msg_unref(m);
    return st;
}

chatd_status st_read(const char *room, int64_t reader, uint64_t up_to)
{
    chatd_msg *m = new_read(next_id(), room, reader, "reader", up_to);
    chatd_status st = st_persist(m);
    A->msg_unref(m);
    return st;
}

void on_history(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n, uint64_t next_before)
{
    history_wait *w = arg;
    w->status = st;
    w->n = n;
    w->next_before = next_before;
    w->msgs = n ? calloc(n, sizeof(*w->msgs)) : NULL;
    for (size_t i = 0; i < n && w->msgs; i++)
        w->msgs[i] = A->msg_ref(msgs[i]);
    w->done = 1;
}

void st_history(const char *room, uint64_t before, unsigned limit, history_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->history(g_inst, room, before, limit, on_history, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
    if (w->n) assert_non_null(w->msgs);
}

void history_free(history_wait *w)
{
    for (size_t i = 0; i < w->n; i++)
        A->msg_unref(w->msgs[i]);
    free(w->msgs);
    w->msgs = NULL;
    w->n = 0;
}

void on_rooms(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n)
{
    rooms_wait *w = arg;
    w->status = st;
    w->n = n;
    w->rows = n ? calloc(n, sizeof(*w->rows)) : NULL;
    for (size_t i = 0; i < n && w->rows; i++) {
        room_copy *d = &w->rows[i];
        const chatd_room_summary *r = &rows[i];
        snprintf(d->room_id, sizeof(d->room_id), "%s", r->room_id ? r->room_id : "");
        d->member_id = r->member_id;
        d->peer_id = r->peer_id;
        snprintf(d->peer_login, sizeof(d->peer_login), "%s", r->peer_login ? r->peer_login : "");
        snprintf(d->peer_name, sizeof(d->peer_name), "%s", r->peer_name ? r->peer_name : "");
        d->last_msg_id = r->last_msg_id;
        d->last_len = r->last_message ? strlen(r->last_message) : 0;
        d->last_message = strdup(r->last_message ? r->last_message : "");
        d->last_ms = r->last_ms;
        d->unread = r->unread;
        d->last_read_id = r->last_read_id;
    }
    w->done = 1;
}

void st_rooms(int64_t member, rooms_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->room_list(g_inst, member, on_rooms, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
    if (w->n) assert_non_null(w->rows);
}

void rooms_free(rooms_wait *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->rows[i].last_message);
    free(w->rows);
    w->rows = NULL;
    w->n = 0;
}

/* Copy of the summary of `room` in member's list (must exist). */
room_copy get_room(int64_t member, const char *room)
{
    rooms_wait w;
    room_copy r;
    size_t i;

    st_rooms(member, &w);
    for (i = 0; i < w.n; i++)
        if (strcmp(w.rows[i].room_id, room) == 0) break;
    if (i == w.n)
        fail_msg("room %s missing from the room list of member %lld", room, (long long)member);
    r = w.rows[i];
    w.rows[i].last_message = NULL;
    rooms_free(&w);
    return r;
}

/* ------------------------------------------------------------------------ */
/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

static int usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s STORE.so [key=value ...]\n"
            "   or: CHATD_STORE_SO=STORE.so CHATD_STORE_CFG='key=value\\nkey=value' %s\n",
            prog, prog);
    return 2;
}

int main(int argc, char **argv)
{
    static char *env_cfg;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_members),           cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_idempotent_insert), cmocka_unit_test(test_history_paging),
        cmocka_unit_test(test_room_summaries),    cmocka_unit_test(test_read_marks),
        cmocka_unit_test(test_batched_commits),   cmocka_unit_test(test_non_ascii),
        cmocka_unit_test(test_long_message),      cmocka_unit_test(test_durable_across_restart),
        cmocka_unit_test(test_max_pending),       cmocka_unit_test(test_crash_durability),
        cmocka_unit_test(test_dead_letter),       cmocka_unit_test(test_member_page),
        cmocka_unit_test(test_positions),         cmocka_unit_test(test_side_replay),
        cmocka_unit_test(test_stream_heads),      cmocka_unit_test(test_idem_recent),
        cmocka_unit_test(test_idem_duplicate),
    };

    g_self = argv[0];
    if (argc >= 2 && !strcmp(argv[1], "--crash-child")) return crash_child(argc, argv);

    if (argc >= 2) {
        if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) return usage(argv[0]);
        g_so = argv[1];
        for (int i = 2; i < argc; i++) {
            if (g_npairs == MAX_CFG) return usage(argv[0]);
            g_pairs[g_npairs++] = argv[i];
        }
    } else {
        const char *cfg = getenv("CHATD_STORE_CFG");
        g_so = getenv("CHATD_STORE_SO");
        if (!g_so || !*g_so) return usage(argv[0]);
        if (cfg && *cfg) {
            char *save = NULL, *tok;
            env_cfg = strdup(cfg);
            if (!env_cfg) return 1;
            for (tok = strtok_r(env_cfg, "\n", &save); tok; tok = strtok_r(NULL, "\n", &save)) {
                if (!*tok) continue;
                if (g_npairs == MAX_CFG) return usage(argv[0]);
                g_pairs[g_npairs++] = tok;
            }
        }
    }
    return cmocka_run_group_tests_name("store conformance", tests, group_setup, group_teardown);
}
