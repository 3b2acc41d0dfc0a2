/*
 * tests/core/test_pipeline.c - the whole pipeline through the real core,
 * driven by the test transport (tests/lib/plugins/test-transport.c, which
 * records deliveries) with the real queue-local and store-sqlite plugins
 * and the test filter:
 *   - members register and log in (argon2id off the loop), tokens resolve;
 *   - a publish is acknowledged only after the store committed it (checked
 *     with a separate SQLite connection inside the receipt callback);
 *   - fan-out goes to /sub/chat/room/{room} and both /sub/chat/side/{id};
 *     a read event only to the reader's side;
 *   - redelivering the same message stores it once;
 *   - a restarted core's fan-out drops a second copy of a stored key;
 *   - validation (room membership, size, UTF-8), filters (sync reject,
 *     async rewrite), rate limit, graceful stop.
 */
#include "config.h"

#include "../../core/core.h"
#include "testutil.h"

#include <inttypes.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

typedef struct fixture {
    char *dir;
    char *conf;
    char *db;
    char *rec;
    cfg *cf;
    core *c;
    chatd_ctx *t; /* the test transport's context */
    const chatd_api *api;
    int64_t alice, bob, carol;
} fixture;

/* ------------------------------------------------------------ helpers */

typedef struct result {
    volatile int done;
    chatd_status st;
    char reason[256];
    chatd_msg *msg;
    int64_t id;
    char token[80];
    size_t n;
    int64_t unread;
    uint64_t ids[16];
    char texts[16][64];
    long committed; /* rows with the message id seen at receipt time */
    int calls;      /* how often the publish callback ran */
    fixture *fx;
} result;

static void member_done(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    result *r = arg;
    r->st = st;
    r->n = n;
    r->id = (st == CHATD_OK && n) ? rows[0].id : 0;
    if (st == CHATD_OK && n) assert_null(rows[0].pw_hash);
    r->done = 1;
}

static void login_done(void *arg, chatd_status st, const char *token, const chatd_member *m)
{
    result *r = arg;
    r->st = st;
    if (st == CHATD_OK) {
        snprintf(r->token, sizeof(r->token), "%s", token);
        r->id = m->id;
        assert_null(m->pw_hash);
    }
    r->done = 1;
}

static void status_done(void *arg, chatd_status st)
{
    result *r = arg;
    r->st = st;
    r->done = 1;
}

static long count_rows(const char *db, uint64_t id)
{
    sqlite3 *s;
    long n = -1;
    if (sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) return -1;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s, "SELECT count(*) FROM messages WHERE id = ?", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(s);
    return n;
}

static void publish_done(void *arg, chatd_status st, const char *reason, chatd_msg *msg)
{
    result *r = arg;
    r->calls++;
    r->st = st;
    snprintf(r->reason, sizeof(r->reason), "%s", reason ? reason : "");
    if (msg) {
        r->msg = r->fx->api->msg_ref(msg);
        /* the receipt: the store must have committed it already */
        r->committed = count_rows(r->fx->db, r->fx->api->msg_id(msg));
    }
    r->done = 1;
}

static void history_done(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n,
                         uint64_t next)
{
    (void)next;
    result *r = arg;
    r->st = st;
    r->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        r->ids[i] = msg_id(msgs[i]);
        snprintf(r->texts[i], sizeof(r->texts[i]), "%s", msg_text(msgs[i], NULL));
    }
    r->done = 1;
}

static void rooms_done(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n)
{
    result *r = arg;
    r->st = st;
    r->n = n;
    r->unread = n ? rows[0].unread : -1;
    r->done = 1;
}

static void room_done(void *arg, chatd_status st, const char *room, int64_t peer)
{
    result *r = arg;
    r->st = st;
    if (st == CHATD_OK) {
        snprintf(r->reason, sizeof(r->reason), "%s", room);
        r->id = peer;
    }
    r->done = 1;
}

static void sink(void *arg, const char *data, size_t len)
{
    char **buf = arg;
    size_t old = *buf ? strlen(*buf) : 0;
    char *nb = realloc(*buf, old + len + 1);
    assert_non_null(nb);
    memcpy(nb + old, data, len);
    nb[old + len] = '\0';
    *buf = nb;
}

#define WAIT(fx, r) assert_true(loop_until((fx)->c->base, &(r).done, 30))

static int64_t do_register(fixture *fx, const char *login, const char *name, const char *pw)
{
    result r = {.fx = fx};
    fx->api->member_register(fx->t, login, name, pw, member_done, &r);
    WAIT(fx, r);
    assert_int_equal(r.st, CHATD_OK);
    assert_true(r.id > 0);
    return r.id;
}

static result publish(fixture *fx, chatd_msg_kind kind, int64_t writer, const char *room,
                      const char *text, uint64_t up_to)
{
    result r = {.fx = fx};
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = kind,
                          .room_id = room,
                          .writer_id = writer,
                          .text = text,
                          .text_len = text ? strlen(text) : 0,
                          .up_to = up_to};
    fx->api->publish(fx->t, &f, publish_done, &r);
    WAIT(fx, r);
    return r;
}

/* Lines of the delivery record (destination \t json), appended since `from`. */
static char *read_record(fixture *fx, long *offset)
{
    FILE *f = fopen(fx->rec, "r");
    assert_non_null(f);
    assert_int_equal(fseek(f, *offset, SEEK_SET), 0);
    char *buf = calloc(1, 65536);
    assert_non_null(buf);
    size_t n = fread(buf, 1, 65535, f);
    *offset += (long)n;
    fclose(f);
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* ------------------------------------------------------------ fixture */

static int setup_with(void **state, const char *chatd_extra, const char *t_extra)
{
    fixture *fx = calloc(1, sizeof(*fx));
    assert_non_null(fx);
    fx->dir = temp_dir();
    fx->db = malloc(strlen(fx->dir) + 16);
    fx->rec = malloc(strlen(fx->dir) + 16);
    sprintf(fx->db, "%s/chatd.db", fx->dir);
    sprintf(fx->rec, "%s/record.txt", fx->dir);
    char conf[4096];
    snprintf(conf, sizeof(conf),
             "[chatd]\nnode_id = 3\nlog_level = warn\npublish_rate = 0\nmax_message_bytes = 64\n"
             "session_ttl = 3600\n%s\n"
             "[t]\nplugin = %s/test-transport.so\nrecord = %s\n%s\n"
             "[f]\nplugin = %s/test-filter.so\n\n"
             "[queue]\nplugin = %s/plugins/queue-local/.libs/queue-local.so\n\n"
             "[store]\nplugin = %s/plugins/store-sqlite/.libs/store-sqlite.so\npath = %s\n",
             chatd_extra, TEST_PLUGINS, fx->rec, t_extra, TEST_PLUGINS, TOP_BUILDDIR, TOP_BUILDDIR,
             fx->db);
    fx->conf = write_file(fx->dir, "chatd.conf", conf);
    fx->cf = cfg_new();
    assert_int_equal(cfg_load(fx->cf, fx->conf), 0);
    assert_int_equal(cfg_check_core(fx->cf), 0);
    fx->c = core_new(fx->cf);
    assert_non_null(fx->c);
    assert_int_equal(core_start(fx->c), 0);
    fx->t = core_instance(fx->c, "t");
    assert_non_null(fx->t);
    fx->api = api_table();
    assert_int_equal(fx->api->healthy(fx->t), 1);
    *state = fx;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, "", "");
}

static int teardown(void **state)
{
    fixture *fx = *state;
    core_stop(fx->c);
    while (fx->c->state != CORE_STOPPED)
        event_base_loop(fx->c->base, EVLOOP_ONCE);
    assert_int_equal(fx->api->healthy(fx->t), 0);
    core_free(fx->c);
    cfg_free(fx->cf);
    remove_tree(fx->dir);
    free(fx->dir);
    free(fx->conf);
    free(fx->db);
    free(fx->rec);
    free(fx);
    return 0;
}

/* ------------------------------------------------------------ tests */

static void members_and_sessions(void **state)
{
    fixture *fx = *state;
    fx->alice = do_register(fx, "alice", "Alice", "correct horse");
    fx->bob = do_register(fx, "bob", "\xeb\xb0\xa5", "battery staple");
    assert_int_not_equal(fx->alice, fx->bob);

    result r = {.fx = fx};
    fx->api->member_register(fx->t, "alice", "Other", "whatever1", member_done, &r);
    WAIT(fx, r);
    assert_int_equal(r.st, CHATD_ERR_EXISTS);
    static const char *const bad[][3] = {
        {"", "n", "password1"},
        {"bad id", "n", "password1"},
        {"x", "", "password1"},
        {"x", "n", "short"},
        {"012345678901234567890123456789012", "n", "password1"},
        {"x", "\xff", "password1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        result b = {.fx = fx};
        fx->api->member_register(fx->t, bad[i][0], bad[i][1], bad[i][2], member_done, &b);
        WAIT(fx, b);
        assert_int_equal(b.st, CHATD_ERR_INVALID);
    }

    result l = {.fx = fx};
    fx->api->login(fx->t, "bob", "battery staple", login_done, &l);
    WAIT(fx, l);
    assert_int_equal(l.st, CHATD_OK);
    assert_int_equal(strlen(l.token), 64);
    assert_int_equal(l.id, fx->bob);

    result w = {.fx = fx};
    fx->api->login(fx->t, "bob", "wrong password", login_done, &w);
    WAIT(fx, w);
    assert_int_equal(w.st, CHATD_ERR_AUTH);
    result u = {.fx = fx};
    fx->api->login(fx->t, "nobody", "battery staple", login_done, &u);
    WAIT(fx, u);
    assert_int_equal(u.st, CHATD_ERR_AUTH);

    result a = {.fx = fx};
    fx->api->authenticate(fx->t, l.token, member_done, &a);
    WAIT(fx, a);
    assert_int_equal(a.st, CHATD_OK);
    assert_int_equal(a.id, fx->bob);

    result lo = {.fx = fx};
    fx->api->logout(fx->t, l.token, status_done, &lo);
    WAIT(fx, lo);
    assert_int_equal(lo.st, CHATD_OK);
    result a2 = {.fx = fx};
    fx->api->authenticate(fx->t, l.token, member_done, &a2);
    WAIT(fx, a2);
    assert_int_equal(a2.st, CHATD_ERR_AUTH);
    result a3 = {.fx = fx};
    fx->api->authenticate(fx->t, "not-a-token", member_done, &a3);
    WAIT(fx, a3);
    assert_int_equal(a3.st, CHATD_ERR_AUTH);

    /* room checks */
    char room[64];
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, fx->bob, fx->alice); /* reversed */
    result rc = {.fx = fx};
    fx->api->room_check(fx->t, fx->alice, room, room_done, &rc);
    WAIT(fx, rc);
    assert_int_equal(rc.st, CHATD_OK);
    assert_int_equal(rc.id, fx->bob);
    char canon[64];
    snprintf(canon, sizeof(canon), "%" PRId64 "&%" PRId64,
             fx->alice < fx->bob ? fx->alice : fx->bob, fx->alice < fx->bob ? fx->bob : fx->alice);
    assert_string_equal(rc.reason, canon);
}

static void publish_persist_fanout(void **state)
{
    fixture *fx = *state;
    fx->alice = do_register(fx, "alice", "Alice", "correct horse");
    fx->bob = do_register(fx, "bob", "Bob", "battery staple");
    fx->carol = do_register(fx, "carol", "Carol", "carol's pass");
    int64_t lo = fx->alice < fx->bob ? fx->alice : fx->bob;
    int64_t hi = fx->alice < fx->bob ? fx->bob : fx->alice;
    char room[64], rev[64];
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, lo, hi);
    snprintf(rev, sizeof(rev), "%" PRId64 "&%" PRId64, hi, lo);
    long off = 0;

    /* publish -> receipt after commit -> fan-out to room and both sides */
    result p = publish(fx, CHATD_MSG_CHAT, fx->alice, rev, "hello bob", 0);
    assert_int_equal(p.st, CHATD_OK);
    assert_non_null(p.msg);
    uint64_t id = msg_id(p.msg);
    assert_int_equal(ids_node(id), 3);
    assert_string_equal(msg_room(p.msg), room);
    assert_string_equal(msg_writer(p.msg), "alice");
    assert_int_equal(p.committed, 1); /* committed before the receipt */
    char *rec = read_record(fx, &off);
    assert_int_equal(count_lines(rec), 3);
    char want[256];
    snprintf(want, sizeof(want), "/sub/chat/room/%s\t{", room);
    assert_non_null(strstr(rec, want));
    snprintf(want, sizeof(want), "/sub/chat/side/%" PRId64 "\t{", lo);
    assert_non_null(strstr(rec, want));
    snprintf(want, sizeof(want), "/sub/chat/side/%" PRId64 "\t{", hi);
    assert_non_null(strstr(rec, want));
    snprintf(want, sizeof(want), "\"id\":\"%" PRIu64 "\"", id);
    assert_non_null(strstr(rec, want));
    assert_non_null(strstr(rec, "\"message\":\"hello bob\""));
    free(rec);

    /* idempotent redelivery: consume the same message twice -> stored once */
    chatd_ctx *q = core_instance(fx->c, "queue");
    for (int i = 0; i < 2; i++) {
        result d = {.fx = fx};
        fx->api->consume(q, p.msg, CHATD_CONSUME_PERSIST | CHATD_CONSUME_FANOUT, status_done, &d);
        WAIT(fx, d);
        assert_int_equal(d.st, CHATD_OK);
    }
    assert_int_equal(count_rows(fx->db, id), 1);
    result h = {.fx = fx};
    fx->api->history(fx->t, fx->bob, room, 0, 50, history_done, &h);
    WAIT(fx, h);
    assert_int_equal(h.st, CHATD_OK);
    assert_int_equal(h.n, 1);
    assert_true(h.ids[0] == id);
    result rl = {.fx = fx};
    fx->api->room_list(fx->t, fx->bob, rooms_done, &rl);
    WAIT(fx, rl);
    assert_int_equal(rl.st, CHATD_OK);
    assert_int_equal(rl.n, 1);
    assert_int_equal(rl.unread, 1); /* not 3: the redeliveries changed nothing */
    rec = read_record(fx, &off);
    free(rec);

    /* a read event goes to the reader's side only */
    result rd = publish(fx, CHATD_MSG_READ, fx->bob, room, NULL, id);
    assert_int_equal(rd.st, CHATD_OK);
    rec = read_record(fx, &off);
    assert_int_equal(count_lines(rec), 1);
    snprintf(want, sizeof(want), "/sub/chat/side/%" PRId64 "\t{\"type\":\"read\"", fx->bob);
    assert_non_null(strstr(rec, want));
    free(rec);
    result rl2 = {.fx = fx};
    fx->api->room_list(fx->t, fx->bob, rooms_done, &rl2);
    WAIT(fx, rl2);
    assert_int_equal(rl2.unread, 0);

    /* filters: sync reject, async rewrite */
    result f1 = publish(fx, CHATD_MSG_CHAT, fx->alice, room, "a badword here", 0);
    assert_int_equal(f1.st, CHATD_REJECT);
    assert_non_null(strstr(f1.reason, "filter f"));
    result f2 = publish(fx, CHATD_MSG_CHAT, fx->bob, room, "shout", 0);
    assert_int_equal(f2.st, CHATD_OK);
    assert_string_equal(msg_text(f2.msg, NULL), "SHOUT");
    assert_true(msg_id(f2.msg) > id);
    result h2 = {.fx = fx};
    fx->api->history(fx->t, fx->alice, room, 0, 50, history_done, &h2);
    WAIT(fx, h2);
    assert_int_equal(h2.n, 2);
    assert_string_equal(h2.texts[1], "SHOUT");

    /* validation */
    char other[64];
    snprintf(other, sizeof(other), "%" PRId64 "&%" PRId64, fx->bob, fx->carol);
    assert_int_equal(publish(fx, CHATD_MSG_CHAT, fx->alice, other, "hi", 0).st,
                     CHATD_ERR_FORBIDDEN);
    snprintf(other, sizeof(other), "%" PRId64 "&999999", fx->alice);
    assert_int_equal(publish(fx, CHATD_MSG_CHAT, fx->alice, other, "hi", 0).st, CHATD_ERR_NOTFOUND);
    assert_int_equal(publish(fx, CHATD_MSG_CHAT, fx->alice, "1-2", "hi", 0).st, CHATD_ERR_INVALID);
    assert_int_equal(publish(fx, CHATD_MSG_CHAT, fx->alice, room, "bad \xc3\x28 utf8", 0).st,
                     CHATD_ERR_INVALID);
    assert_int_equal(publish(fx, CHATD_MSG_CHAT, fx->alice, room, "", 0).st, CHATD_ERR_INVALID);
    char big[100];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    result tb = publish(fx, CHATD_MSG_CHAT, fx->alice, room, big, 0);
    assert_int_equal(tb.st, CHATD_ERR_INVALID);
    assert_non_null(strstr(tb.reason, "too long"));
    result hf = {.fx = fx};
    fx->api->history(fx->t, fx->carol, room, 0, 50, history_done, &hf);
    WAIT(fx, hf);
    assert_int_equal(hf.st, CHATD_ERR_FORBIDDEN);
    rec = read_record(fx, &off);
    assert_int_equal(count_lines(rec), 3); /* only the SHOUT message */
    free(rec);

    /* a filter completing twice: logged, the publisher answered once */
    capture_start();
    result tw = publish(fx, CHATD_MSG_CHAT, fx->alice, room, "twice", 0);
    int idle = 0;
    loop_until(fx->c->base, &idle, 1); /* let anything late arrive */
    char *log = capture_end();
    assert_int_equal(tw.st, CHATD_OK);
    assert_int_equal(tw.calls, 1);
    assert_non_null(strstr(log, "[f] a completion was finished twice"));
    free(log);
    assert_int_equal(count_rows(fx->db, msg_id(tw.msg)), 1);
    msg_unref(tw.msg);

    /* metrics */
    char *text = NULL;
    fx->api->metrics_render(fx->t, sink, &text);
    assert_non_null(text);
    assert_non_null(strstr(text, "chatd_messages_published_total{instance=\"core\"} 4\n"));
    assert_non_null(strstr(text, "chatd_test_deliveries_total{instance=\"t\"}"));
    assert_non_null(strstr(text, "chatd_errors_total{instance=\"core\",kind=\"forbidden\"} 1\n"));
    assert_non_null(strstr(text, "chatd_store_latency_ms_count"));
    free(text);
    msg_unref(p.msg);
    msg_unref(rd.msg);
    msg_unref(f2.msg);
}

static void rate_limit(void **state)
{
    fixture *fx = *state;
    fx->cf->publish_rate = 1; /* burst 2 */
    int busy = 0;
    for (int i = 0; i < 4; i++) {
        result r = publish(fx, CHATD_MSG_CHAT, 1, "1&2", "x", 0);
        if (r.st == CHATD_ERR_BUSY) {
            assert_non_null(strstr(r.reason, "rate"));
            busy++;
        }
    }
    assert_int_equal(busy, 2);
    fx->cf->publish_rate = 0;

    /* max_pending: the second publish while one is in flight is busy
     * (the test filter holds a "shout" until a later loop turn) */
    int64_t a = do_register(fx, "alice", "Alice", "correct horse");
    int64_t b = do_register(fx, "bob", "Bob", "battery staple");
    char room[64];
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, a, b);
    fx->cf->max_pending = 1;
    result first = {.fx = fx}, second = {.fx = fx};
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .room_id = room,
                          .writer_id = a,
                          .text = "shout",
                          .text_len = 5};
    fx->api->publish(fx->t, &f, publish_done, &first);
    assert_false(first.done);
    fx->api->publish(fx->t, &f, publish_done, &second);
    assert_true(second.done); /* answered at once */
    assert_int_equal(second.st, CHATD_ERR_BUSY);
    assert_non_null(strstr(second.reason, "in flight"));
    WAIT(fx, first);
    assert_int_equal(first.st, CHATD_OK);
    msg_unref(first.msg);
    fx->cf->max_pending = 10000;
}

/* ------------------------------------------------------------ idempotency seed */

static void settle_done(void *arg, chatd_status st, chatd_msg *first)
{
    result *r = arg;
    r->st = st;
    r->msg = first ? msg_ref(first) : NULL;
    r->done = 1;
}

static void consume_wait(fixture *fx, chatd_msg *m)
{
    result d = {.fx = fx};
    fx->api->consume(core_instance(fx->c, "queue"), m, CHATD_CONSUME_PERSIST | CHATD_CONSUME_FANOUT,
                     status_done, &d);
    WAIT(fx, d);
    assert_int_equal(d.st, CHATD_OK);
}

/* Times `needle` is in the delivery record past `from`. */
static size_t record_count(fixture *fx, long from, const char *needle)
{
    char *rec = read_record(fx, &from);
    size_t n = 0;
    for (const char *p = rec; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(rec);
    return n;
}

/* A node that starts after the first copy of a key was stored but before a
 * second copy (another id, the same member and key: two nodes published it
 * at once) is fanned out must not deliver the second (issue 12: every node
 * delivers only the copy the store keeps). The restarted core's fan-out
 * memory starts from the store's keys. */
static void idem_seed_after_restart(void **state)
{
    fixture *fx = *state;
    fx->alice = do_register(fx, "alice", "Alice", "correct horse");
    fx->bob = do_register(fx, "bob", "Bob", "battery staple");
    char room[64];
    snprintf(room, sizeof(room), "%" PRId64 "&%" PRId64, fx->alice < fx->bob ? fx->alice : fx->bob,
             fx->alice < fx->bob ? fx->bob : fx->alice);
    result p1 = {.fx = fx};
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .room_id = room,
                          .writer_id = fx->alice,
                          .text = "first",
                          .text_len = 5,
                          .idem_key = "seed-k1"};
    fx->api->publish(fx->t, &f, publish_done, &p1);
    WAIT(fx, p1);
    assert_int_equal(p1.st, CHATD_OK);
    uint64_t id1 = msg_id(p1.msg);
    msg_unref(p1.msg);

    /* a fresh start on the same store */
    core_stop(fx->c);
    while (fx->c->state != CORE_STOPPED)
        event_base_loop(fx->c->base, EVLOOP_ONCE);
    core_free(fx->c);
    long from = 0;
    free(read_record(fx, &from));
    fx->c = core_new(fx->cf);
    assert_non_null(fx->c);
    fx->t = core_instance(fx->c, "t");
    log_set_level(CHATD_LOG_INFO);
    capture_start();
    assert_int_equal(core_start(fx->c), 0);
    char *log = capture_end();
    log_set_level(fx->cf->log_level);
    assert_non_null(
        strstr(log, "fan-out memory of idempotency keys: seeded from the store, 1 keys"));
    free(log);

    /* copy 2 of the key, as another node published it */
    f.id = ids_next(&fx->c->ids, clock_wall_ms());
    f.text = "second";
    f.text_len = 6;
    f.writer = "alice";
    f.time_ms = clock_wall_ms();
    chatd_msg *m2 = fx->api->msg_new(fx->t, &f);
    assert_non_null(m2);
    /* its publisher's RECEIPT names the stored copy (the store's record) */
    result st = {.fx = fx};
    idem_settle(fx->c, m2, settle_done, &st);
    WAIT(fx, st);
    assert_int_equal(st.st, CHATD_OK);
    assert_non_null(st.msg);
    assert_true(msg_id(st.msg) == id1);
    consume_wait(fx, m2);

    /* the stream settles: a marker after it, then nothing of copy 2 */
    result mk = publish(fx, CHATD_MSG_CHAT, fx->bob, room, "marker", 0);
    assert_int_equal(mk.st, CHATD_OK);
    msg_unref(mk.msg);
    for (int i = 0; i < 30 && record_count(fx, from, "\"message\":\"marker\"") < 3; i++) {
        int idle = 0;
        loop_until(fx->c->base, &idle, 0); /* about a second */
    }
    assert_int_equal(record_count(fx, from, "\"message\":\"marker\""), 3);
    assert_int_equal(record_count(fx, from, "\"message\":\"second\""), 0);

    /* the seeded copy itself is the first one: delivered when it comes
     * (a fan-out that re-reads), and copy 2 is still not */
    consume_wait(fx, st.msg);
    consume_wait(fx, m2);
    assert_int_equal(record_count(fx, from, "\"message\":\"first\""), 3);
    assert_int_equal(record_count(fx, from, "\"message\":\"second\""), 0);
    assert_int_equal(count_rows(fx->db, id1), 1);
    assert_int_equal(count_rows(fx->db, msg_id(m2)), 0);
    msg_unref(st.msg);
    msg_unref(m2);
}

/* Stop order and hooks: an async stop completes; one that never completes
 * is given up after stop_timeout, and chatd still stops. */
static void stop_async(void **state)
{
    fixture *fx = *state;
    core_stop(fx->c);
    result late = {.fx = fx};
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .room_id = "1&2",
                          .writer_id = 1,
                          .text = "x",
                          .text_len = 1};
    fx->api->publish(fx->t, &f, publish_done, &late);
    assert_true(late.done);
    assert_int_equal(late.st, CHATD_ERR_UNAVAILABLE);
    while (fx->c->state != CORE_STOPPED)
        event_base_loop(fx->c->base, EVLOOP_ONCE);
    long off = 0;
    char *rec = read_record(fx, &off);
    assert_non_null(strstr(rec, "event\tstop\nevent\tstopped\n"));
    free(rec);
}

static int setup_never(void **state)
{
    return setup_with(state, "stop_timeout = 1\n", "stop = never\n");
}

static void stop_timeout(void **state)
{
    fixture *fx = *state;
    time_t t0 = time(NULL);
    capture_start();
    core_stop(fx->c);
    while (fx->c->state != CORE_STOPPED)
        event_base_loop(fx->c->base, EVLOOP_ONCE);
    char *log = capture_end();
    assert_true(time(NULL) - t0 <= 3);
    assert_non_null(strstr(log, "[t] did not stop within 1s"));
    free(log);
    assert_false(core_instance(fx->c, "store")->started);
    assert_false(core_instance(fx->c, "queue")->started);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(members_and_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(publish_persist_fanout, setup, teardown),
        cmocka_unit_test_setup_teardown(rate_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(idem_seed_after_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_async, setup, teardown),
        cmocka_unit_test_setup_teardown(stop_timeout, setup_never, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
