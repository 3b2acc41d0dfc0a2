/*
 * tests/store/conformance_data.c - store conformance cases about what a
 * store keeps: members, sessions, idempotent inserts, history paging, room
 * summaries and read marks. See conformance.c.
 */
#define _POSIX_C_SOURCE 200809L

#include "conformance.h"

/* Cases                                                                    */
/* ------------------------------------------------------------------------ */

void test_members(void **state)
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

/* member_page (ABI 1.4): one page at a time by id, q= a prefix of the
 * login id or the name, ASCII letters without case, LIKE wildcards literal. */
static chatd_status st_member_page(int64_t after, const char *prefix, unsigned limit,
                                   member_copy *rows, size_t cap, size_t *n)
{
    member_wait w = {.rows = rows, .cap = cap};
    g_ops->member_page(g_inst, after, prefix, limit, on_members, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    *n = w.n;
    return w.status;
}

void test_member_page(void **state)
{
    enum { N = 5 };
    char login[96], name[96], q[96];
    int64_t ids[N];
    member_copy rows[8];
    size_t n;
    (void)state;
    if (!CHATD_HAS(chatd_store_ops, g_ops, member_page) || !g_ops->member_page) {
        skip(); /* optional: the core pages member_list instead */
        return;
    }
    for (int i = 0; i < N; i++) { /* names of 1 and 3 start "ZQ<run>" */
        member_copy m;
        snprintf(login, sizeof(login), "mp%s-%d", g_run, i);
        if (i % 2)
            snprintf(name, sizeof(name), "ZQ%s %d", g_run, i);
        else
            snprintf(name, sizeof(name), "Name %d", i);
        assert_int_equal(st_member_create(login, name, "$argon2id$mp", 0, &m), CHATD_OK);
        ids[i] = m.id;
        if (i > 0) assert_true(ids[i] > ids[i - 1]);
    }
    /* first, a prefix that is not UTF-8 (a client's q=%FF), again and
     * again: no member or refused, and the store still pages afterwards */
    for (int i = 0; i < 3; i++) {
        chatd_status st = st_member_page(0, "\xff\xfe", 8, rows, 8, &n);
        assert_true(st == CHATD_ERR_INVALID || (st == CHATD_OK && n == 0));
    }
    /* by login id prefix, in upper case, pages of 3 then 2 then none */
    snprintf(q, sizeof(q), "MP%s-", g_run);
    for (char *c = q; *c; c++)
        if (*c >= 'a' && *c <= 'z') *c = (char)(*c - 'a' + 'A');
    assert_int_equal(st_member_page(0, q, 3, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(rows[i].id, ids[i]);
        assert_false(rows[i].has_pw);
    }
    snprintf(login, sizeof(login), "mp%s-0", g_run);
    assert_string_equal(rows[0].login_id, login);
    assert_int_equal(st_member_page(ids[2], q, 3, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, ids[3]);
    assert_int_equal(rows[1].id, ids[4]);
    assert_int_equal(st_member_page(ids[4], q, 3, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 0);
    /* by name prefix, in lower case */
    snprintf(q, sizeof(q), "zq%s", g_run);
    assert_int_equal(st_member_page(0, q, 8, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 2);
    assert_int_equal(rows[0].id, ids[1]);
    assert_int_equal(rows[1].id, ids[3]);
    snprintf(name, sizeof(name), "ZQ%s 1", g_run);
    assert_string_equal(rows[0].name, name);
    /* LIKE wildcards in the prefix are plain characters */
    snprintf(q, sizeof(q), "mp%s_", g_run);
    assert_int_equal(st_member_page(0, q, 8, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 0);
    snprintf(q, sizeof(q), "mp%s%%", g_run);
    assert_int_equal(st_member_page(0, q, 8, rows, 8, &n), CHATD_OK);
    assert_int_equal(n, 0);
    /* no prefix: every member after the id, by id. Runs sharing the store
     * (50-pg's concurrent step) add members of their own in between, so
     * walk the pages up to ids[4]: ascending, and ours among them. */
    int64_t after = ids[2];
    int seen = 0;
    for (int page = 0; page < 1000 && after < ids[4]; page++) {
        assert_int_equal(st_member_page(after, page % 2 ? "" : NULL, 2, rows, 8, &n), CHATD_OK);
        assert_true(n >= 1 && n <= 2);
        for (size_t i = 0; i < n; i++) {
            assert_true(rows[i].id > after);
            after = rows[i].id;
            seen += after == ids[3] || after == ids[4];
        }
    }
    assert_true(after >= ids[4]);
    assert_int_equal(seen, 2);
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

void test_sessions(void **state)
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

void test_idempotent_insert(void **state)
{
    int64_t a = make_member("idem-a", "A"), b = make_member("idem-b", "B");
    char room[64];
    uint64_t id = next_id();
    int64_t t = A->now_ms();
    history_wait h;
    room_copy rb;
    size_t len;
    uint64_t conflicts;
    (void)state;

    room_of(a, b, room, sizeof(room));
    assert_int_equal(st_chat(id, room, a, "idem-a", "first", t), CHATD_OK);
    /* redelivery of the same message changes nothing */
    assert_int_equal(st_chat(id, room, a, "idem-a", "first", t), CHATD_OK);
    /* another message with that id is refused and counted, never "stored" */
    conflicts = testcore_counter("chatd_store_id_conflicts_total");
    assert_int_equal(st_chat(id, room, a, "idem-a", "second", t + 5), CHATD_ERR_EXISTS);
    assert_int_equal(st_chat(id, room, b, "idem-b", "first", t), CHATD_ERR_EXISTS);
    assert_int_equal(testcore_counter("chatd_store_id_conflicts_total"), conflicts + 2);

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

void test_history_paging(void **state)
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

void test_room_summaries(void **state)
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

void test_read_marks(void **state)
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

/* A record a queue gave up on is kept (ABI 1.1, optional: skipped for a
 * store without the hook): any bytes, committed before the callback;
 * a missing source or reason is refused. */
void test_dead_letter(void **state)
{
    static const char bytes[] = "{\"not\":\"chatd\"}\0\xff tail";
    wait_status w;
    (void)state;

    if (!CHATD_HAS(chatd_store_ops, g_ops, dead_letter) || !g_ops->dead_letter) {
        fprintf(stderr, "  the store keeps no dead letters (ABI 1.0 table): skipped\n");
        return;
    }
    memset(&w, 0, sizeof(w));
    g_ops->dead_letter(g_inst, "kafka-chat[3]@1207", bytes, sizeof(bytes),
                       "failed to persist 5 times: exists", on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);
    memset(&w, 0, sizeof(w));
    g_ops->dead_letter(g_inst, "kafka-chat[0]@1", NULL, 0, "empty record", on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_OK);
    memset(&w, 0, sizeof(w));
    g_ops->dead_letter(g_inst, NULL, bytes, 1, "no source", on_status, &w);
    assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
    assert_int_equal(w.status, CHATD_ERR_INVALID);
}
