/*
 * tests/store/conformance_idem.c - the store conformance cases for
 * idempotency keys: a second message with a (writer, key) the store holds
 * within idempotency_window is not written and idem_get names the first
 * (ABI 1.2), and idem_recent (ABI 1.7): the newest idempotency records of
 * the window, at most `limit`, given oldest first, then one final call.
 */
#include "conformance.h"

#define RECENT_MAX 64

typedef struct recent_wait {
    int done;
    chatd_status status;
    size_t n; /* records given (only the first RECENT_MAX are kept) */
    struct {
        int64_t member_id;
        char key[32];
        uint64_t msg_id;
        int64_t time_ms;
    } rec[RECENT_MAX];
} recent_wait;

static void on_recent(void *arg, chatd_status st, int64_t member_id, const char *key,
                      uint64_t msg_id, int64_t time_ms)
{
    recent_wait *w = arg;
    if (!key) {
        w->status = st;
        w->done = 1;
        return;
    }
    assert_false(w->done); /* no record after the final call */
    assert_int_equal(st, CHATD_OK);
    if (w->n < RECENT_MAX) {
        w->rec[w->n].member_id = member_id;
        snprintf(w->rec[w->n].key, sizeof(w->rec[w->n].key), "%s", key);
        w->rec[w->n].msg_id = msg_id;
        w->rec[w->n].time_ms = time_ms;
    }
    w->n++;
}

static void st_recent(int64_t since_ms, unsigned limit, recent_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->idem_recent(g_inst, since_ms, limit, on_recent, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
}

static void keyed(uint64_t id, const char *room, int64_t writer, const char *login, const char *key,
                  int64_t time_ms)
{
    chatd_msg_fields f = {.size = sizeof(f),
                          .kind = CHATD_MSG_CHAT,
                          .id = id,
                          .room_id = room,
                          .writer_id = writer,
                          .writer = login,
                          .text = key,
                          .text_len = strlen(key),
                          .time_ms = time_ms,
                          .idem_key = key};
    chatd_msg *m = A->msg_new(g_ctx, &f);
    assert_non_null(m);
    assert_int_equal(st_persist(m), CHATD_OK);
    A->msg_unref(m);
}

/* The records of w written by a or b (this run's), in the order given. */
static size_t mine(const recent_wait *w, int64_t a, int64_t b, size_t *idx)
{
    size_t n = 0;
    assert_true(w->n <= RECENT_MAX);
    for (size_t i = 0; i < w->n; i++) {
        if (i > 0) assert_true(w->rec[i - 1].time_ms <= w->rec[i].time_ms); /* oldest first */
        if (w->rec[i].member_id == a || w->rec[i].member_id == b) idx[n++] = i;
    }
    return n;
}

static void expect(const recent_wait *w, size_t i, int64_t member, const char *key, uint64_t id,
                   int64_t time_ms)
{
    assert_int_equal(w->rec[i].member_id, member);
    assert_string_equal(w->rec[i].key, key);
    assert_true(w->rec[i].msg_id == id);
    assert_int_equal(w->rec[i].time_ms, time_ms);
}

void test_idem_recent(void **state)
{
    char la[96], lb[96], room[64];
    recent_wait w;
    size_t idx[RECENT_MAX];
    (void)state;

    if (!CHATD_HAS(chatd_store_ops, g_ops, idem_recent) || !g_ops->idem_recent)
        skip(); /* a store before ABI 1.7, or one without the hook */
    int64_t a = make_member("recent-a", "Recent A"), b = make_member("recent-b", "Recent B");
    snprintf(la, sizeof(la), "recent-a-%s", g_run);
    snprintf(lb, sizeof(lb), "recent-b-%s", g_run);
    room_of(a, b, room, sizeof(room));
    /* an hour ahead: newer than the records of an earlier run on the same
     * database; runs at the same time (50-pg's concurrent migration) may
     * add theirs, so only this run's records are checked exactly */
    int64_t t = A->now_ms() + 3600 * 1000;
    uint64_t id1 = next_id(), id2 = next_id(), id3 = next_id();
    keyed(id1, room, a, la, "k1", t);
    keyed(id2, room, a, la, "k2", t + 1);
    keyed(id3, room, b, lb, "k1", t + 2); /* the same key, another member */

    st_recent(t, RECENT_MAX, &w);
    assert_int_equal(mine(&w, a, b, idx), 3);
    expect(&w, idx[0], a, "k1", id1, t);
    expect(&w, idx[1], a, "k2", id2, t + 1);
    expect(&w, idx[2], b, "k1", id3, t + 2);
    for (size_t i = 0; i < w.n; i++)
        assert_true(w.rec[i].time_ms >= t);

    /* the newest two, oldest first: none of this run's left out is newer */
    st_recent(t, 2, &w);
    assert_int_equal(w.n, 2);
    size_t n = mine(&w, a, b, idx);
    if (n >= 1) expect(&w, idx[n - 1], b, "k1", id3, t + 2);
    if (n == 2) expect(&w, idx[0], a, "k2", id2, t + 1);
    assert_true(n == 2 || w.rec[0].time_ms >= t + 1);

    st_recent(t + 2, RECENT_MAX, &w);
    assert_int_equal(mine(&w, a, b, idx), 1);
    expect(&w, idx[0], b, "k1", id3, t + 2);

    st_recent(INT64_MAX / 2, RECENT_MAX, &w); /* nothing: the final call only */
    assert_int_equal(w.n, 0);
}

/* The ids of room's history, oldest first (at most 8). */
static size_t room_ids(const char *room, uint64_t *ids)
{
    history_wait h;
    st_history(room, 0, 8, &h);
    for (size_t i = 0; i < h.n; i++)
        ids[i] = A->msg_id(h.msgs[i]);
    size_t n = h.n;
    history_free(&h);
    return n;
}

void test_idem_duplicate(void **state)
{
    char la[96], lb[96], room[64], key[64], old[64];
    uint64_t ids[8];
    history_wait h;
    (void)state;

    if (!CHATD_HAS(chatd_store_ops, g_ops, idem_get) || !g_ops->idem_get)
        skip(); /* a store before ABI 1.2 keeps no keys */
    int64_t window_ms = A->core_limit(g_ctx, "idempotency_window") * 1000;
    assert_true(window_ms > 0);
    int64_t a = make_member("dup-a", "Dup A"), b = make_member("dup-b", "Dup B");
    snprintf(la, sizeof(la), "dup-a-%s", g_run);
    snprintf(lb, sizeof(lb), "dup-b-%s", g_run);
    snprintf(key, sizeof(key), "dup-%s", g_run);
    snprintf(old, sizeof(old), "old-%s", g_run);
    room_of(a, b, room, sizeof(room));
    int64_t t = A->now_ms();
    uint64_t id1 = next_id(), id2 = next_id(), id3 = next_id(), id4 = next_id(), id5 = next_id();

    keyed(id1, room, a, la, key, t);
    keyed(id2, room, a, la, key, t + 1000); /* a duplicate: completes OK, nothing written */
    keyed(id3, room, b, lb, key, t + 2000); /* the same key of another member is its own */
    assert_int_equal(room_ids(room, ids), 2);
    assert_true(ids[0] == id1 && ids[1] == id3);

    memset(&h, 0, sizeof(h));
    g_ops->idem_get(g_inst, a, key, t - window_ms, on_history, &h);
    assert_int_equal(testcore_run_until_flag(&h.done, TIMEOUT_MS), 0);
    assert_int_equal(h.status, CHATD_OK);
    assert_int_equal(h.n, 1);
    assert_true(A->msg_id(h.msgs[0]) == id1);
    history_free(&h);

    /* a record older than the window before the new message does not count */
    keyed(id4, room, a, la, old, t - window_ms - 60000);
    keyed(id5, room, a, la, old, t + 3000);
    assert_int_equal(room_ids(room, ids), 4);
    assert_true(ids[2] == id4 && ids[3] == id5);
}
