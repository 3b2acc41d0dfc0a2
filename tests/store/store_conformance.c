/*
 * store_conformance.c - the one conformance suite every chatd store plugin
 * must pass, written only against the store ABI (chatd/plugin.h). It loads
 * the store's .so with the daemon's loader, drives it through the test core (tests/lib/testcore.c:
 * a real libevent loop, messages, completions, post, config) and checks the
 * behaviour the core relies on.
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
 * Cases: members, sessions, idempotent insert, history paging, room
 * summaries, read marks, batched commits, non-ASCII text, 64 KiB messages,
 * the max_pending bound (when the store has that key; CHATD_ERR_BUSY),
 * durability across a stop/start of the store, and across a crash: a child
 * process (this program with --crash-child) persists messages until it is
 * killed with SIGKILL; every message it saw acknowledged must be stored once.
 */
#define _POSIX_C_SOURCE 200809L

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../lib/testcore.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 60000
#define EPOCH_2024_MS 1704067200000LL
#define MAX_CFG 64
#define CRASH_MAX 20000      /* messages the crash child may write */
#define CRASH_ROUND 25       /* persists per loop turn in the crash child */
#define CRASH_KILL_AFTER 300 /* acknowledged messages before SIGKILL */

/* ------------------------------------------------------------------------ */
/* The store under test                                                     */
/* ------------------------------------------------------------------------ */

static const char *g_so;
static char *g_pairs[MAX_CFG];
static int g_npairs;
static const chatd_plugin_desc *g_desc;
static const chatd_store_ops *g_ops;
static const chatd_api *A;
static chatd_ctx *g_ctx;
static void *g_inst;
static char g_run[32]; /* unique per run: suffix of login ids */
static uint64_t g_id_base, g_id_next;
static int64_t g_time_base;

static const char *g_self; /* argv[0], to start the crash child */

/* ids one run may use: the low 16 bits of its ids */
#define RUN_IDS 65536

static uint64_t next_id(void)
{
    if (g_id_next >= RUN_IDS) {
        fprintf(stderr, "store_conformance: more than %d message ids in one run\n", RUN_IDS);
        abort();
    }
    return g_id_base + g_id_next++;
}

typedef struct wait_status {
    int done;
    chatd_status status;
} wait_status;

static void on_completion(void *arg, chatd_status st, const char *reason)
{
    wait_status *w = arg;
    (void)reason;
    w->status = st;
    w->done = 1;
}

static void on_status(void *arg, chatd_status st)
{
    wait_status *w = arg;
    w->status = st;
    w->done = 1;
}

static int store_open(void)
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

static int store_close(void)
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
static int load_store(void)
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

static int group_setup(void **state)
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

static int group_teardown(void **state)
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

typedef struct member_copy {
    int64_t id;
    char login_id[128];
    char name[128];
    char pw_hash[160];
    int has_pw;
    int64_t created_ms;
} member_copy;

typedef struct member_wait {
    int done;
    chatd_status status;
    size_t n;
    member_copy *rows; /* up to cap */
    size_t cap;
} member_wait;

static void copy_member(member_copy *d, const chatd_member *m)
{
    memset(d, 0, sizeof(*d));
    d->id = m->id;
    snprintf(d->login_id, sizeof(d->login_id), "%s", m->login_id ? m->login_id : "");
    snprintf(d->name, sizeof(d->name), "%s", m->name ? m->name : "");
    d->has_pw = m->pw_hash != NULL;
    snprintf(d->pw_hash, sizeof(d->pw_hash), "%s", m->pw_hash ? m->pw_hash : "");
    d->created_ms = m->created_ms;
}

static void on_members(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    member_wait *w = arg;
    w->status = st;
    w->n = n;
    for (size_t i = 0; i < n && i < w->cap; i++)
        copy_member(&w->rows[i], &rows[i]);
    w->done = 1;
}

static chatd_status st_member_create(const char *login, const char *name, const char *pw,
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

static chatd_status st_member_get(int64_t id, const char *login, member_copy *out)
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
static int64_t make_member(const char *who, const char *name)
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

static void room_of(int64_t a, int64_t b, char *buf, size_t n)
{
    snprintf(buf, n, "%lld&%lld", (long long)(a < b ? a : b), (long long)(a < b ? b : a));
}

static chatd_msg *new_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                           const char *text, size_t len, int64_t time_ms)
{
    chatd_msg_fields f;
    chatd_msg *m;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.kind = CHATD_MSG_CHAT;
    f.id = id;
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

static chatd_msg *new_read(uint64_t id, const char *room, int64_t reader, const char *login,
                           uint64_t up_to)
{
    chatd_msg_fields f;
    chatd_msg *m;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.kind = CHATD_MSG_READ;
    f.id = id;
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
static chatd_status st_persist(chatd_msg *m)
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

static chatd_status st_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                            const char *text, int64_t time_ms)
{
    chatd_msg *m = new_chat(id, room, writer_id, writer, text, strlen(text), time_ms);
    chatd_status st = st_persist(m);
    A->msg_unref(m);
    return st;
}

static chatd_status st_read(const char *room, int64_t reader, uint64_t up_to)
{
    chatd_msg *m = new_read(next_id(), room, reader, "reader", up_to);
    chatd_status st = st_persist(m);
    A->msg_unref(m);
    return st;
}

typedef struct history_wait {
    int done;
    chatd_status status;
    chatd_msg **msgs; /* referenced copies */
    size_t n;
    uint64_t next_before;
} history_wait;

static void on_history(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n,
                       uint64_t next_before)
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

static void st_history(const char *room, uint64_t before, unsigned limit, history_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->history(g_inst, room, before, limit, on_history, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
    if (w->n) assert_non_null(w->msgs);
}

static void history_free(history_wait *w)
{
    for (size_t i = 0; i < w->n; i++)
        A->msg_unref(w->msgs[i]);
    free(w->msgs);
    w->msgs = NULL;
    w->n = 0;
}

typedef struct room_copy {
    char room_id[64];
    int64_t member_id, peer_id;
    char peer_login[128], peer_name[128];
    uint64_t last_msg_id;
    char *last_message; /* malloc'd */
    size_t last_len;
    int64_t last_ms, unread;
    uint64_t last_read_id;
} room_copy;

typedef struct rooms_wait {
    int done;
    chatd_status status;
    room_copy *rows;
    size_t n;
} rooms_wait;

static void on_rooms(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n)
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

static void st_rooms(int64_t member, rooms_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->room_list(g_inst, member, on_rooms, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
    if (w->n) assert_non_null(w->rows);
}

static void rooms_free(rooms_wait *w)
{
    for (size_t i = 0; i < w->n; i++)
        free(w->rows[i].last_message);
    free(w->rows);
    w->rows = NULL;
    w->n = 0;
}

/* Copy of the summary of `room` in member's list (must exist). */
static room_copy get_room(int64_t member, const char *room)
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
/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

static void test_members(void **state)
{
    char alice[96], bob[96];
    member_copy a, b, got;
    member_wait w;
    member_copy *rows;
    size_t cap = 200000, i;
    int seen_a = 0, seen_b = 0;
    (void)state;

    snprintf(alice, sizeof(alice), "alice-%s", g_run);
    snprintf(bob, sizeof(bob), "bob-%s", g_run);
    assert_int_equal(
        st_member_create(alice, "Alice 앨리스", "$argon2id$alice", 1700000000123LL, &a), CHATD_OK);
    assert_true(a.id > 0);
    assert_string_equal(a.login_id, alice);
    assert_string_equal(a.name, "Alice 앨리스");
    assert_int_equal(st_member_create(bob, "Bob", "$argon2id$bob", 1700000000456LL, &b), CHATD_OK);
    assert_true(b.id > 0);
    assert_true(b.id != a.id);

    /* a taken login id is refused, whatever the other fields */
    assert_int_equal(st_member_create(alice, "Another Alice", "$argon2id$x", 0, NULL),
                     CHATD_ERR_EXISTS);

    /* by id, with the password hash */
    assert_int_equal(st_member_get(a.id, NULL, &got), CHATD_OK);
    assert_int_equal(got.id, a.id);
    assert_string_equal(got.login_id, alice);
    assert_string_equal(got.name, "Alice 앨리스");
    assert_true(got.has_pw);
    assert_string_equal(got.pw_hash, "$argon2id$alice");
    assert_int_equal(got.created_ms, 1700000000123LL);

    /* by login id */
    assert_int_equal(st_member_get(0, bob, &got), CHATD_OK);
    assert_int_equal(got.id, b.id);
    assert_string_equal(got.name, "Bob");
    assert_string_equal(got.pw_hash, "$argon2id$bob");
    assert_int_equal(got.created_ms, 1700000000456LL);

    /* unknown */
    assert_int_equal(st_member_get(INT64_MAX - 7, NULL, NULL), CHATD_ERR_NOTFOUND);
    {
        char nobody[96];
        snprintf(nobody, sizeof(nobody), "nobody-%s", g_run);
        assert_int_equal(st_member_get(0, nobody, NULL), CHATD_ERR_NOTFOUND);
    }

    /* the list: ordered by id, without password hashes */
    rows = calloc(cap, sizeof(*rows));
    assert_non_null(rows);
    memset(&w, 0, sizeof(w));
    w.rows = rows;
    w.cap = cap;
    g_ops->member_list(g_inst, on_members, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);
    assert_true(w.n >= 2);
    for (i = 0; i < w.n && i < cap; i++) {
        if (i > 0) assert_true(rows[i].id > rows[i - 1].id);
        assert_false(rows[i].has_pw);
        if (rows[i].id == a.id) {
            assert_string_equal(rows[i].login_id, alice);
            assert_string_equal(rows[i].name, "Alice 앨리스");
            seen_a = 1;
        }
        if (rows[i].id == b.id) {
            assert_string_equal(rows[i].login_id, bob);
            seen_b = 1;
        }
    }
    assert_true(seen_a && seen_b);
    free(rows);
}

typedef struct session_wait {
    int done;
    chatd_status status;
    char token_hash[80];
    int64_t member_id, expires_ms;
} session_wait;

static void on_session(void *arg, chatd_status st, const chatd_session *s)
{
    session_wait *w = arg;
    w->status = st;
    if (st == CHATD_OK) {
        assert_non_null(s);
        snprintf(w->token_hash, sizeof(w->token_hash), "%s", s->token_hash);
        w->member_id = s->member_id;
        w->expires_ms = s->expires_ms;
    }
    w->done = 1;
}

static chatd_status st_session_get(const char *hash, session_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->session_get(g_inst, hash, on_session, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    return w->status;
}

static void token_hash_of(const char *tag, char out[65])
{
    /* 64 lowercase hex chars, unique per run and tag (not a real hash:
     * the store only keys on it) */
    char raw[64];
    size_t i, n;
    n = (size_t)snprintf(raw, sizeof(raw), "%s/%s", g_run, tag);
    for (i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", (unsigned char)(i < n ? raw[i] : (unsigned char)i));
    out[64] = '\0';
}

static void test_sessions(void **state)
{
    char h1[65], h2[65];
    int64_t mid = make_member("sess", "Session Owner");
    int64_t exp = A->now_ms() + 3600 * 1000;
    chatd_session s;
    wait_status w;
    session_wait got;
    (void)state;

    token_hash_of("one", h1);
    token_hash_of("two", h2);
    s = (chatd_session){sizeof(chatd_session), h1, mid, exp};
    memset(&w, 0, sizeof(w));
    g_ops->session_put(g_inst, &s, on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);

    /* a put with no callback works too; writes are ordered, so once a later
     * write has answered, the earlier one is visible */
    s.token_hash = h2;
    g_ops->session_put(g_inst, &s, NULL, NULL);
    s.token_hash = h1;
    memset(&w, 0, sizeof(w));
    g_ops->session_put(g_inst, &s, on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);

    assert_int_equal(st_session_get(h1, &got), CHATD_OK);
    assert_string_equal(got.token_hash, h1);
    assert_int_equal(got.member_id, mid);
    assert_int_equal(got.expires_ms, exp);
    assert_int_equal(st_session_get(h2, &got), CHATD_OK);
    assert_int_equal(got.member_id, mid);

    {
        char unknown[65];
        token_hash_of("never-stored", unknown);
        assert_int_equal(st_session_get(unknown, &got), CHATD_ERR_NOTFOUND);
    }

    memset(&w, 0, sizeof(w));
    g_ops->session_del(g_inst, h1, on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);
    assert_int_equal(st_session_get(h1, &got), CHATD_ERR_NOTFOUND);
    assert_int_equal(st_session_get(h2, &got), CHATD_OK); /* the other one stays */

    g_ops->session_del(g_inst, h2, NULL, NULL);
    /* writes are ordered: a read after a later write's answer sees it */
    memset(&w, 0, sizeof(w));
    s.token_hash = h1;
    g_ops->session_put(g_inst, &s, on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(st_session_get(h2, &got), CHATD_ERR_NOTFOUND);
    assert_int_equal(st_session_get(h1, &got), CHATD_OK);
}

static void test_idempotent_insert(void **state)
{
    int64_t a = make_member("idem-a", "A"), b = make_member("idem-b", "B");
    char room[64];
    uint64_t id = next_id();
    int64_t t = A->now_ms();
    history_wait h;
    room_copy rb;
    size_t len;
    (void)state;

    room_of(a, b, room, sizeof(room));
    assert_int_equal(st_chat(id, room, a, "idem-a", "first", t), CHATD_OK);
    /* redelivery of the same id (even with other content) changes nothing */
    assert_int_equal(st_chat(id, room, a, "idem-a", "first", t), CHATD_OK);
    assert_int_equal(st_chat(id, room, a, "idem-a", "second", t + 5), CHATD_OK);

    st_history(room, 0, 50, &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(A->msg_id(h.msgs[0]), id);
    assert_string_equal(A->msg_text(h.msgs[0], &len), "first");
    assert_int_equal(h.next_before, 0);
    history_free(&h);

    rb = get_room(b, room);
    assert_int_equal(rb.unread, 1); /* counted once */
    assert_int_equal(rb.last_msg_id, id);
    assert_string_equal(rb.last_message, "first");
    free(rb.last_message);
}

static void test_history_paging(void **state)
{
    enum { N = 250 };
    int64_t a = make_member("page-a", "Pager A"), b = make_member("page-b", "Pager B");
    char room[64], login_a[96], login_b[96], text[64];
    uint64_t ids[N];
    long finished = 0;
    wait_status ws[N];
    history_wait h;
    size_t len;
    int64_t t0 = A->now_ms();
    (void)state;

    snprintf(login_a, sizeof(login_a), "page-a-%s", g_run);
    snprintf(login_b, sizeof(login_b), "page-b-%s", g_run);
    room_of(a, b, room, sizeof(room));
    memset(ws, 0, sizeof(ws));
    /* all in one loop turn; checked one by one below */
    for (int i = 0; i < N; i++) {
        chatd_msg *m;
        chatd_completion *c;
        ids[i] = next_id();
        snprintf(text, sizeof(text), "message %d", i);
        m = new_chat(ids[i], room, i % 2 ? b : a, i % 2 ? login_b : login_a, text, strlen(text),
                     t0 + i);
        c = testcore_completion_new(on_completion, &ws[i]);
        assert_int_equal(g_ops->persist(g_inst, m, c), CHATD_ASYNC);
        A->msg_unref(m);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(testcore_run_until_flag(&ws[i].done, TIMEOUT_MS), 0);
        assert_int_equal(ws[i].status, CHATD_OK);
        finished++;
    }
    assert_int_equal(finished, N);

    /* newest page first, each page oldest first */
    struct {
        uint64_t before;
        size_t first, n;
        uint64_t next;
    } pages[3] = {
        {0, 150, 100, ids[150]},
        {ids[150], 50, 100, ids[50]},
        {ids[50], 0, 50, 0},
    };
    for (int p = 0; p < 3; p++) {
        st_history(room, pages[p].before, 100, &h);
        assert_int_equal(h.n, pages[p].n);
        assert_int_equal(h.next_before, pages[p].next);
        for (size_t i = 0; i < h.n; i++) {
            size_t k = pages[p].first + i;
            char want[64];
            snprintf(want, sizeof(want), "message %zu", k);
            assert_int_equal(A->msg_kind(h.msgs[i]), CHATD_MSG_CHAT);
            assert_int_equal(A->msg_id(h.msgs[i]), ids[k]);
            assert_string_equal(A->msg_room(h.msgs[i]), room);
            assert_int_equal(A->msg_writer_id(h.msgs[i]), k % 2 ? b : a);
            assert_string_equal(A->msg_writer(h.msgs[i]), k % 2 ? login_b : login_a);
            assert_string_equal(A->msg_text(h.msgs[i], &len), want);
            assert_int_equal(len, strlen(want));
            assert_int_equal(A->msg_time_ms(h.msgs[i]), t0 + (int64_t)k);
        }
        history_free(&h);
    }

    /* an exact fit has no older page */
    st_history(room, ids[100], 100, &h);
    assert_int_equal(h.n, 100);
    assert_int_equal(A->msg_id(h.msgs[0]), ids[0]);
    assert_int_equal(h.next_before, 0);
    history_free(&h);

    /* a cursor in the middle of nothing, and an unknown room */
    st_history(room, ids[0], 100, &h);
    assert_int_equal(h.n, 0);
    assert_int_equal(h.next_before, 0);
    history_free(&h);
    st_history("999999998&999999999", 0, 100, &h);
    assert_int_equal(h.n, 0);
    assert_int_equal(h.next_before, 0);
    history_free(&h);
}

static void test_room_summaries(void **state)
{
    char la[96], lb[96], lc[96], rab[64], rac[64];
    int64_t a, b, c, t = A->now_ms();
    uint64_t m1, m2, m3, m4;
    room_copy r;
    rooms_wait w;
    (void)state;

    a = make_member("sum-a", "Summary A");
    b = make_member("sum-b", "요약 B");
    c = make_member("sum-c", "Summary C");
    snprintf(la, sizeof(la), "sum-a-%s", g_run);
    snprintf(lb, sizeof(lb), "sum-b-%s", g_run);
    snprintf(lc, sizeof(lc), "sum-c-%s", g_run);
    room_of(a, b, rab, sizeof(rab));
    room_of(a, c, rac, sizeof(rac));

    /* a fresh member has no conversations */
    st_rooms(c, &w);
    assert_int_equal(w.n, 0);
    rooms_free(&w);

    m1 = next_id();
    assert_int_equal(st_chat(m1, rab, a, la, "hello b", t + 1), CHATD_OK);
    r = get_room(a, rab);
    assert_int_equal(r.member_id, a);
    assert_int_equal(r.peer_id, b);
    assert_string_equal(r.peer_login, lb);
    assert_string_equal(r.peer_name, "요약 B");
    assert_int_equal(r.last_msg_id, m1);
    assert_string_equal(r.last_message, "hello b");
    assert_int_equal(r.last_ms, t + 1);
    assert_int_equal(r.unread, 0);
    assert_int_equal(r.last_read_id, m1);
    free(r.last_message);
    r = get_room(b, rab);
    assert_int_equal(r.member_id, b);
    assert_int_equal(r.peer_id, a);
    assert_string_equal(r.peer_login, la);
    assert_string_equal(r.peer_name, "Summary A");
    assert_int_equal(r.last_msg_id, m1);
    assert_string_equal(r.last_message, "hello b");
    assert_int_equal(r.last_ms, t + 1);
    assert_int_equal(r.unread, 1);
    assert_int_equal(r.last_read_id, 0);
    free(r.last_message);

    /* b answers: b has read everything, a has one unread */
    m2 = next_id();
    assert_int_equal(st_chat(m2, rab, b, lb, "hi a", t + 2), CHATD_OK);
    r = get_room(b, rab);
    assert_int_equal(r.unread, 0);
    assert_int_equal(r.last_read_id, m2);
    assert_int_equal(r.last_msg_id, m2);
    assert_string_equal(r.last_message, "hi a");
    assert_int_equal(r.last_ms, t + 2);
    free(r.last_message);
    r = get_room(a, rab);
    assert_int_equal(r.unread, 1);
    assert_int_equal(r.last_read_id, m1);
    assert_int_equal(r.last_msg_id, m2);
    free(r.last_message);

    /* a writes twice more: a's unread clears, b has two */
    m3 = next_id();
    m4 = next_id();
    assert_int_equal(st_chat(m3, rab, a, la, "three", t + 3), CHATD_OK);
    assert_int_equal(st_chat(m4, rab, a, la, "four", t + 4), CHATD_OK);
    r = get_room(a, rab);
    assert_int_equal(r.unread, 0);
    assert_int_equal(r.last_read_id, m4);
    assert_string_equal(r.last_message, "four");
    free(r.last_message);
    r = get_room(b, rab);
    assert_int_equal(r.unread, 2);
    assert_int_equal(r.last_msg_id, m4);
    assert_int_equal(r.last_ms, t + 4);
    free(r.last_message);

    /* a later conversation with c comes first in a's list */
    assert_int_equal(st_chat(next_id(), rac, c, lc, "from c", t + 10), CHATD_OK);
    st_rooms(a, &w);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.rows[0].room_id, rac);
    assert_int_equal(w.rows[0].peer_id, c);
    assert_string_equal(w.rows[0].peer_login, lc);
    assert_int_equal(w.rows[0].unread, 1);
    assert_string_equal(w.rows[1].room_id, rab);
    rooms_free(&w);
    st_rooms(c, &w);
    assert_int_equal(w.n, 1);
    assert_string_equal(w.rows[0].room_id, rac);
    assert_int_equal(w.rows[0].unread, 0);
    rooms_free(&w);
    /* b is not in a&c */
    st_rooms(b, &w);
    assert_int_equal(w.n, 1);
    rooms_free(&w);
}

static void test_read_marks(void **state)
{
    char la[96], lb[96], room[64];
    int64_t a, b, t = A->now_ms();
    uint64_t m[5];
    room_copy r;
    (void)state;

    a = make_member("read-a", "Reader A");
    b = make_member("read-b", "Reader B");
    snprintf(la, sizeof(la), "read-a-%s", g_run);
    snprintf(lb, sizeof(lb), "read-b-%s", g_run);
    room_of(a, b, room, sizeof(room));
    for (int i = 0; i < 5; i++) {
        char text[32];
        m[i] = next_id();
        snprintf(text, sizeof(text), "unread %d", i);
        /* a writes 0, 1, 3, 4; b writes 2 */
        assert_int_equal(st_chat(m[i], room, i == 2 ? b : a, i == 2 ? lb : la, text, t + i),
                         CHATD_OK);
    }
    r = get_room(b, room);
    assert_int_equal(r.unread, 2); /* 3 and 4 after b's own 2 */
    assert_int_equal(r.last_read_id, m[2]);
    free(r.last_message);

    /* reading up to 3 leaves 4 unread */
    assert_int_equal(st_read(room, b, m[3]), CHATD_OK);
    r = get_room(b, room);
    assert_int_equal(r.last_read_id, m[3]);
    assert_int_equal(r.unread, 1);
    free(r.last_message);

    /* an older read mark never moves it back (max semantics) */
    assert_int_equal(st_read(room, b, m[0]), CHATD_OK);
    r = get_room(b, room);
    assert_int_equal(r.last_read_id, m[3]);
    assert_int_equal(r.unread, 1);
    free(r.last_message);

    /* reading to the end clears it; a read of the same mark is harmless */
    assert_int_equal(st_read(room, b, m[4]), CHATD_OK);
    assert_int_equal(st_read(room, b, m[4]), CHATD_OK);
    r = get_room(b, room);
    assert_int_equal(r.last_read_id, m[4]);
    assert_int_equal(r.unread, 0);
    assert_int_equal(r.last_msg_id, m[4]); /* a read is not a message */
    assert_string_equal(r.last_message, "unread 4");
    free(r.last_message);

    /* a's side: b's message 2 is older than a's own 3 and 4: nothing unread;
     * a read by b does not touch a's summary */
    r = get_room(a, room);
    assert_int_equal(r.unread, 0);
    assert_int_equal(r.last_read_id, m[4]);
    free(r.last_message);

    /* a read mark in the middle recounts from the messages themselves */
    {
        uint64_t n1 = next_id(), n2 = next_id(), n3 = next_id();
        assert_int_equal(st_chat(n1, room, a, la, "n1", t + 10), CHATD_OK);
        assert_int_equal(st_chat(n2, room, a, la, "n2", t + 11), CHATD_OK);
        assert_int_equal(st_chat(n3, room, a, la, "n3", t + 12), CHATD_OK);
        r = get_room(b, room);
        assert_int_equal(r.unread, 3);
        free(r.last_message);
        assert_int_equal(st_read(room, b, n1), CHATD_OK);
        r = get_room(b, room);
        assert_int_equal(r.unread, 2);
        assert_int_equal(r.last_read_id, n1);
        free(r.last_message);
    }

    /* reads are not history */
    {
        history_wait h;
        st_history(room, 0, 100, &h);
        assert_int_equal(h.n, 8);
        for (size_t i = 0; i < h.n; i++)
            assert_int_equal(A->msg_kind(h.msgs[i]), CHATD_MSG_CHAT);
        history_free(&h);
    }
}

typedef struct batch_ctx {
    long finished, ok, in_order;
    long next_expected;
} batch_ctx;

typedef struct batch_item {
    batch_ctx *b;
    long index;
} batch_item;

static void on_batch_done(void *arg, chatd_status st, const char *reason)
{
    batch_item *it = arg;
    (void)reason;
    if (st == CHATD_OK) it->b->ok++;
    if (it->index == it->b->next_expected) it->b->in_order++;
    it->b->next_expected = it->index + 1;
    it->b->finished++;
}

static void test_batched_commits(void **state)
{
    enum { N = 1000 };
    int64_t a = make_member("batch-a", "Batch A"), b = make_member("batch-b", "Batch B");
    char room[64], la[96];
    batch_ctx bc = {0, 0, 0, 0};
    batch_item *items = calloc(N, sizeof(*items));
    uint64_t commits0 = testcore_counter("chatd_store_commits_total"), commits;
    uint64_t first = 0, cursor = 0, prev = 0;
    size_t total = 0;
    int64_t t0 = A->now_ms();
    history_wait h;
    room_copy r;
    (void)state;

    assert_non_null(items);
    snprintf(la, sizeof(la), "batch-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    /* 1000 persists in one loop turn: none may complete before the loop runs */
    for (long i = 0; i < N; i++) {
        char text[32];
        uint64_t id = next_id();
        chatd_msg *m;
        chatd_completion *c;
        if (i == 0) first = id;
        snprintf(text, sizeof(text), "batch %ld", i);
        m = new_chat(id, room, a, la, text, strlen(text), t0 + i);
        items[i].b = &bc;
        items[i].index = i;
        c = testcore_completion_new(on_batch_done, &items[i]);
        assert_int_equal(g_ops->persist(g_inst, m, c), CHATD_ASYNC);
        A->msg_unref(m); /* the store keeps its own reference */
    }
    assert_int_equal(bc.finished, 0);
    assert_int_equal(testcore_run_until_count(&bc.finished, N, TIMEOUT_MS), 0);
    assert_int_equal(bc.ok, N);
    assert_int_equal(bc.in_order, N); /* completed in persist order */

    commits = testcore_counter("chatd_store_commits_total") - commits0;
    if (commits > 0) {
        fprintf(stderr, "  %d persists committed in %" PRIu64 " transactions\n", N, commits);
        assert_true(commits <= N / 10); /* group commit, not one fsync each */
    } else {
        fprintf(stderr, "  (store reports no chatd_store_commits_total; batching not counted)\n");
    }

    /* every one stored exactly once, in order */
    do {
        st_history(room, cursor, 100, &h);
        for (size_t i = 0; i < h.n; i++) {
            uint64_t id = A->msg_id(h.msgs[i]);
            if (i > 0) assert_true(id > prev);
            prev = id;
        }
        if (h.n) assert_true(A->msg_id(h.msgs[0]) >= first);
        total += h.n;
        cursor = h.next_before;
        history_free(&h);
        prev = 0;
    } while (cursor != 0);
    assert_int_equal(total, N);

    r = get_room(b, room);
    assert_int_equal(r.unread, N);
    assert_string_equal(r.last_message, "batch 999");
    free(r.last_message);
    free(items);
}

static void roundtrip(int64_t a, const char *login_a, const char *room, const char *text,
                      size_t len)
{
    uint64_t id = next_id();
    int64_t t = A->now_ms();
    chatd_msg *m = new_chat(id, room, a, login_a, text, len, t);
    history_wait h;
    const char *got;
    size_t glen;

    assert_int_equal(st_persist(m), CHATD_OK);
    A->msg_unref(m);
    st_history(room, id + 1, 1, &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(A->msg_id(h.msgs[0]), id);
    got = A->msg_text(h.msgs[0], &glen);
    assert_int_equal(glen, len);
    assert_memory_equal(got, text, len);
    assert_string_equal(A->msg_writer(h.msgs[0]), login_a);
    history_free(&h);
}

static void test_non_ascii(void **state)
{
    static const char *const texts[] = {
        "안녕하세요, 반갑습니다! 오후 03:12에 만나요 ㅋㅋ",
        "채팅방 3&4 · 읽지 않음",
        "こんにちは世界、日本語のテキスト",
        "你好，世界！中文消息",
        "مرحبا بالعالم",
        "שלום עולם",
        "Привет, мир! Ёё",
        "สวัสดีชาวโลก",
        "e\xcc\x81 (combining acute) and \xc3\xa9 (precomposed)",
        "emoji 😀 👩‍👩‍👧‍👦 🇰🇷 ❤️",
        "quotes \" ' ` backslash \\ tab \t newline \n end",
        "'); DROP TABLE messages; -- $1 %s %n ?",
        "<b>not html</b> &amp; &#x27;",
        "\xf4\x8f\xbf\xbf max code point, \xef\xbb\xbf BOM",
    };
    int64_t a = make_member("utf-a", "김철수"), b = make_member("utf-b", "이영희 🌸");
    char la[96], room[64];
    member_copy mc;
    room_copy r;
    (void)state;

    snprintf(la, sizeof(la), "utf-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        roundtrip(a, la, room, texts[i], strlen(texts[i]));

    /* the summary carries the last text byte-exact too */
    r = get_room(b, room);
    assert_string_equal(r.last_message, texts[sizeof(texts) / sizeof(texts[0]) - 1]);
    assert_string_equal(r.peer_name, "김철수");
    free(r.last_message);
    r = get_room(a, room);
    assert_string_equal(r.peer_name, "이영희 🌸");
    free(r.last_message);

    /* non-ASCII login ids and names */
    {
        char login[96];
        snprintf(login, sizeof(login), "사용자-%s", g_run);
        assert_int_equal(st_member_create(login, "홍길동", NULL, 0, &mc), CHATD_OK);
        assert_int_equal(st_member_get(0, login, &mc), CHATD_OK);
        assert_string_equal(mc.login_id, login);
        assert_string_equal(mc.name, "홍길동");
        assert_false(mc.has_pw);
    }
}

static void test_long_message(void **state)
{
    const size_t len = 64 * 1024;
    static const char unit[] = "가나다라마바사 chatd "; /* 21 + 7 bytes of UTF-8 */
    int64_t a = make_member("long-a", "Long A"), b = make_member("long-b", "Long B");
    char la[96], room[64];
    char *text = malloc(len + 1);
    size_t n = 0;
    room_copy r;
    (void)state;

    assert_non_null(text);
    /* whole units, then ASCII to the exact size: valid UTF-8 of 65536 bytes */
    while (n + sizeof(unit) - 1 <= len) {
        memcpy(text + n, unit, sizeof(unit) - 1);
        n += sizeof(unit) - 1;
    }
    while (n < len)
        text[n++] = 'x';
    text[len] = '\0';
    snprintf(la, sizeof(la), "long-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    roundtrip(a, la, room, text, len);
    roundtrip(a, la, room, text, len - 1); /* ...and a different length */
    r = get_room(b, room);
    assert_int_equal(r.last_len, len - 1);
    assert_memory_equal(r.last_message, text, len - 1);
    free(r.last_message);
    free(text);
}

static void test_durable_across_restart(void **state)
{
    int64_t a = make_member("dur-a", "Durable A"), b = make_member("dur-b", "Durable B");
    char la[96], room[64];
    uint64_t id = next_id();
    member_copy mc;
    history_wait h;
    size_t len;
    room_copy r;
    (void)state;

    snprintf(la, sizeof(la), "dur-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    assert_int_equal(st_chat(id, room, a, la, "kept across restarts 유지", A->now_ms()), CHATD_OK);
    /* persists issued right before stop are committed by stop */
    {
        chatd_msg *m = new_chat(next_id(), room, a, la, "in flight at stop", 17, A->now_ms());
        wait_status w = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_completion, &w);
        assert_int_equal(g_ops->persist(g_inst, m, c), CHATD_ASYNC);
        A->msg_unref(m);
        assert_int_equal(store_close(), 0);
        assert_int_equal(w.done, 1);
        assert_int_equal(w.status, CHATD_OK);
    }
    assert_int_equal(store_open(), 0); /* reopening re-runs migrations: a no-op */

    assert_int_equal(st_member_get(0, la, &mc), CHATD_OK);
    assert_int_equal(mc.id, a);
    st_history(room, 0, 10, &h);
    assert_int_equal(h.n, 2);
    assert_int_equal(A->msg_id(h.msgs[0]), id);
    assert_string_equal(A->msg_text(h.msgs[0], &len), "kept across restarts 유지");
    assert_string_equal(A->msg_text(h.msgs[1], &len), "in flight at stop");
    history_free(&h);
    r = get_room(b, room);
    assert_int_equal(r.unread, 2);
    free(r.last_message);

    /* the same id after the restart is still a duplicate */
    assert_int_equal(st_chat(id, room, a, la, "duplicate", A->now_ms()), CHATD_OK);
    st_history(room, 0, 10, &h);
    assert_int_equal(h.n, 2);
    history_free(&h);
}

/* A store with a `max_pending` key refuses past it with CHATD_ERR_BUSY
 * (synchronously, without completing) and accepts again once it drained.
 * Runs on a second instance of the store with the same config. */
static void test_max_pending(void **state)
{
    enum { BOUND = 5 };
    int64_t a = make_member("bound-a", "Bound A"), b = make_member("bound-b", "Bound B");
    char la[96], room[64], bound[32];
    char *pairs[MAX_CFG + 1];
    chatd_ctx *ctx;
    void *inst;
    wait_status ws[BOUND + 1];
    chatd_status st;
    int has_key = 0;
    history_wait h;
    (void)state;

    for (const chatd_cfg_key *k = g_desc->cfg_keys; k && k->name; k++)
        has_key |= !strcmp(k->name, "max_pending");
    if (!has_key) {
        fprintf(stderr, "  (store has no max_pending key; bound not tested)\n");
        skip();
    }
    snprintf(la, sizeof(la), "bound-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    snprintf(bound, sizeof(bound), "max_pending=%d", BOUND);
    for (int i = 0; i < g_npairs; i++)
        pairs[i] = g_pairs[i];
    pairs[g_npairs] = bound; /* the last value of a key wins */
    ctx = testcore_ctx_new("store2", g_desc->cfg_keys, g_npairs + 1, pairs);
    assert_non_null(ctx);
    assert_int_equal(g_desc->create(A, ctx, &inst), CHATD_OK);
    if (g_desc->start) assert_int_equal(g_desc->start(inst), CHATD_OK);

    memset(ws, 0, sizeof(ws));
    for (int i = 0; i <= BOUND; i++) {
        chatd_msg *m = new_chat(next_id(), room, a, la, "bounded", 7, A->now_ms());
        chatd_completion *c = testcore_completion_new(on_completion, &ws[i]);
        st = g_ops->persist(inst, m, c);
        A->msg_unref(m);
        if (i < BOUND) {
            assert_int_equal(st, CHATD_ASYNC);
        } else {
            assert_int_equal(st, CHATD_ERR_BUSY);
            testcore_completion_free(c);
        }
    }
    for (int i = 0; i < BOUND; i++) {
        assert_int_equal(testcore_run_until_flag(&ws[i].done, TIMEOUT_MS), 0);
        assert_int_equal(ws[i].status, CHATD_OK);
    }
    {
        chatd_msg *m = new_chat(next_id(), room, a, la, "accepted again", 14, A->now_ms());
        chatd_completion *c = testcore_completion_new(on_completion, &ws[BOUND]);
        assert_int_equal(g_ops->persist(inst, m, c), CHATD_ASYNC);
        A->msg_unref(m);
        assert_int_equal(testcore_run_until_flag(&ws[BOUND].done, TIMEOUT_MS), 0);
        assert_int_equal(ws[BOUND].status, CHATD_OK);
    }
    if (g_desc->stop) {
        wait_status w = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_completion, &w);
        st = g_desc->stop(inst, c);
        if (st == CHATD_ASYNC)
            assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
        else
            testcore_completion_free(c);
    }
    g_desc->destroy(inst);
    testcore_ctx_free(ctx);

    /* what the second instance wrote, the first one reads */
    st_history(room, 0, 100, &h);
    assert_int_equal(h.n, BOUND + 1);
    history_free(&h);
}

/* ------------------------------------------------------------------------ */
/* Crash durability: a child process persists until it is SIGKILLed        */
/* ------------------------------------------------------------------------ */

typedef struct crash_item {
    uint64_t id;
    long *finished;
} crash_item;

static void on_crash_done(void *arg, chatd_status st, const char *reason)
{
    crash_item *it = arg;
    (void)reason;
    if (st == CHATD_OK) {
        /* acknowledged: report it before anything else happens */
        char line[32];
        int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", it->id);
        if (write(STDOUT_FILENO, line, (size_t)n) != n) _exit(3);
    }
    (*it->finished)++;
}

/* store_conformance --crash-child SO ROOM WRITER_ID WRITER ID_START [k=v...] */
static int crash_child(int argc, char **argv)
{
    static crash_item items[CRASH_MAX];
    const char *room, *writer;
    int64_t writer_id;
    uint64_t id;
    long finished = 0;

    if (argc < 7) return 2;
    g_so = argv[2];
    room = argv[3];
    writer_id = strtoll(argv[4], NULL, 10);
    writer = argv[5];
    id = strtoull(argv[6], NULL, 10);
    for (int i = 7; i < argc && g_npairs < MAX_CFG; i++)
        g_pairs[g_npairs++] = argv[i];
    if (load_store() != 0 || store_open() != 0) return 1;
    /* keep up to three rounds in flight, so the kill lands mid-commit */
    for (long sent = 0; sent < CRASH_MAX;) {
        for (int i = 0; i < CRASH_ROUND; i++, sent++) {
            char text[48];
            chatd_msg *m;
            chatd_completion *c;
            int len = snprintf(text, sizeof(text), "crash %ld 충돌", sent);
            items[sent].id = id++;
            items[sent].finished = &finished;
            m = new_chat(items[sent].id, room, writer_id, writer, text, (size_t)len, A->now_ms());
            c = testcore_completion_new(on_crash_done, &items[sent]);
            if (g_ops->persist(g_inst, m, c) != CHATD_ASYNC) {
                testcore_completion_free(c);
                finished++;
            }
            A->msg_unref(m);
        }
        if (testcore_run_until_count(&finished, sent - 2 * CRASH_ROUND, TIMEOUT_MS) != 0) return 1;
    }
    if (testcore_run_until_count(&finished, CRASH_MAX, TIMEOUT_MS) != 0) return 1;
    store_close();
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void test_crash_durability(void **state)
{
    int64_t a = make_member("crash-a", "Crash A"), b = make_member("crash-b", "Crash B");
    char la[96], room[64], ida[32], idstart[32];
    char *args[MAX_CFG + 8];
    uint64_t start = next_id(), *acked = calloc(CRASH_MAX, sizeof(uint64_t)), cursor = 0;
    size_t nacked = 0, nstored = 0, found = 0;
    char buf[4096], line[32];
    size_t linelen = 0;
    int fds[2], status, killed = 0, nargs = 0;
    pid_t pid;
    int64_t deadline = A->now_ms() + TIMEOUT_MS;
    history_wait h;
    (void)state;

    assert_non_null(acked);
    g_id_next += CRASH_MAX; /* the child's ids */
    snprintf(la, sizeof(la), "crash-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    snprintf(ida, sizeof(ida), "%lld", (long long)a);
    snprintf(idstart, sizeof(idstart), "%" PRIu64, start);
    args[nargs++] = (char *)g_self;
    args[nargs++] = "--crash-child";
    args[nargs++] = (char *)g_so;
    args[nargs++] = room;
    args[nargs++] = ida;
    args[nargs++] = la;
    args[nargs++] = idstart;
    for (int i = 0; i < g_npairs; i++)
        args[nargs++] = g_pairs[i];
    args[nargs] = NULL;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv("/proc/self/exe", args);
        execvp(g_self, args);
        _exit(127);
    }
    close(fds[1]);
    /* read acknowledged ids; kill -9 once enough are in, while more are
     * in flight; then drain what was acknowledged before the kill */
    for (;;) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int64_t left = deadline - A->now_ms();
        ssize_t n;
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the crash child acknowledged only %zu messages in time", nacked);
        }
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) fail_msg("poll: %s", strerror(errno));
        n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (linelen < sizeof(line) - 1) line[linelen++] = buf[i];
                continue;
            }
            line[linelen] = '\0';
            linelen = 0;
            assert_true(nacked < CRASH_MAX);
            acked[nacked++] = strtoull(line, NULL, 10);
        }
        if (!killed && nacked >= CRASH_KILL_AFTER) {
            kill(pid, SIGKILL);
            killed = 1;
        }
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(killed);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    fprintf(stderr, "  child killed after %zu acknowledged messages\n", nacked);

    /* every acknowledged message is stored, exactly once */
    qsort(acked, nacked, sizeof(*acked), cmp_u64);
    do {
        uint64_t prev = 0;
        st_history(room, cursor, 500, &h);
        for (size_t i = 0; i < h.n; i++) {
            uint64_t id = A->msg_id(h.msgs[i]);
            assert_true(id > prev); /* no duplicates */
            prev = id;
            assert_true(id >= start && id < start + CRASH_MAX);
            if (bsearch(&id, acked, nacked, sizeof(*acked), cmp_u64)) found++;
        }
        nstored += h.n;
        cursor = h.next_before;
        history_free(&h);
    } while (cursor != 0);
    fprintf(stderr, "  %zu stored after the crash, %zu of %zu acknowledged\n", nstored, found,
            nacked);
    assert_int_equal(found, nacked);
    assert_true(nstored >= nacked);
    free(acked);
}

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
