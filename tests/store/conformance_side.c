/*
 * tests/store/conformance_side.c - the store conformance case for the side
 * stream's replay by position ranges (ABI 1.5, chatd_store_ops.side_replay;
 * docs/delivery.md "Order"): a member's side stream (the CHAT messages of
 * the member's rooms and the member's own READ events, each READ at its own
 * position) spans position streams (Kafka partitions and the unpartitioned
 * one); a replay names one range per stream and gets the messages in those
 * ranges, by position, each with its position, at most `limit`, and pages
 * by moving each range's start to the last position it returned there.
 */
#include "conformance.h"

#include <unistd.h>

/* partition k's positions, as queue-kafka makes them, and the end of its
 * stream (the next stream's first position; 2^63 for the last partition) */
#define PPOS(k, off) (CHATD_POS_PARTITIONED | (uint64_t)(k) << CHATD_POS_STREAM_SHIFT | (off))
#define PEND(k)                                                                                    \
    (((CHATD_POS_PARTITIONED >> CHATD_POS_STREAM_SHIFT) + (uint64_t)(k) + 1)                       \
     << CHATD_POS_STREAM_SHIFT)
/* an unpartitioned position (queue-local: the id) */
#define UPOS(k) ((uint64_t)(k) + 1000)
#define LAST_PARTITION 16383 /* its stream ends at 2^63, past a signed 64-bit column */

#define SIDE_MSGS 16

/* what the case stored: each message's id, position, kind and label */
typedef struct side_msg {
    uint64_t id, pos, up_to;
    chatd_msg_kind kind;
    char room[64];
    char label[16];
} side_msg;

static side_msg g_side[SIDE_MSGS];
static size_t g_nside;

/* Store a CHAT (up_to 0) or READ message at pos; its label names it in the
 * expected outcomes. The ids run against the positions: higher ids first. */
static void side_put(const char *label, uint64_t id, uint64_t pos, const char *room, int64_t writer,
                     uint64_t up_to)
{
    chatd_msg *m = up_to ? new_read_at(id, pos, room, writer, "side-reader", up_to)
                         : new_chat_at(id, pos, room, writer, "side-writer", label, strlen(label),
                                       A->now_ms());
    side_msg *d = &g_side[g_nside++];
    assert_true(g_nside <= SIDE_MSGS);
    assert_int_equal(st_persist(m), CHATD_OK);
    A->msg_unref(m);
    d->id = id;
    d->pos = pos;
    d->up_to = up_to;
    d->kind = up_to ? CHATD_MSG_READ : CHATD_MSG_CHAT;
    snprintf(d->room, sizeof(d->room), "%s", room);
    snprintf(d->label, sizeof(d->label), "%s", label);
}

static uint64_t side_id(const char *label)
{
    for (size_t i = 0; i < g_nside; i++)
        if (!strcmp(g_side[i].label, label)) return g_side[i].id;
    fail_msg("no message %s", label);
    return 0;
}

static void st_side(int64_t member, const uint64_t *after, const uint64_t *until, size_t n,
                    unsigned limit, history_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->side_replay(g_inst, member, after, until, n, limit, on_history, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
}

/* The labels of w's messages, joined by spaces, each checked against what
 * was stored: its position, kind, and for a READ its up_to. */
static const char *side_labels(const history_wait *w, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    assert_int_equal(w->status, CHATD_OK);
    for (size_t i = 0; i < w->n; i++) {
        const side_msg *d = NULL;
        for (size_t k = 0; k < g_nside && !d; k++)
            if (g_side[k].id == A->msg_id(w->msgs[i])) d = &g_side[k];
        if (!d)
            fail_msg("side replay returned message %" PRIu64 ", not one of the member's",
                     A->msg_id(w->msgs[i]));
        assert_true(A->msg_pos(w->msgs[i]) == d->pos);
        assert_int_equal(A->msg_kind(w->msgs[i]), d->kind);
        assert_true(A->msg_up_to(w->msgs[i]) == d->up_to);
        assert_string_equal(A->msg_room(w->msgs[i]), d->room);
        int k = snprintf(buf + len, cap - len, "%s%s", i ? " " : "", d->label);
        assert_true(k > 0 && (size_t)k < cap - len);
        len += (size_t)k;
    }
    return buf;
}

/* One side replay, whose labels must be `want`. */
static void expect_side(int64_t member, const uint64_t *after, const uint64_t *until, size_t n,
                        unsigned limit, const char *want)
{
    char buf[512];
    history_wait w;
    st_side(member, after, until, n, limit, &w);
    assert_string_equal(side_labels(&w, buf, sizeof(buf)), want);
    assert_true(w.next_before == 0);
    history_free(&w);
}

/* Replay member's side stream over the ranges (after and until, n) in pages
 * of `limit`, moving each range's start to the last position a page returned
 * in it, until a page comes back empty; the labels of all pages, and each
 * page's size in sizes ("3 3 1 0"). */
static void side_pages(int64_t member, const uint64_t *after0, const uint64_t *until, size_t n,
                       unsigned limit, char *labels, size_t lcap, char *sizes, size_t scap)
{
    uint64_t after[8];
    char page[512];
    size_t ll = 0, sl = 0;
    history_wait w;

    assert_true(n <= sizeof(after) / sizeof(after[0]));
    memcpy(after, after0, n * sizeof(*after));
    labels[0] = sizes[0] = '\0';
    for (int round = 0; round < 20; round++) {
        st_side(member, after, until, n, limit, &w);
        side_labels(&w, page, sizeof(page));
        assert_true(w.n <= limit);
        sl += (size_t)snprintf(sizes + sl, scap - sl, "%s%zu", round ? " " : "", w.n);
        if (w.n) ll += (size_t)snprintf(labels + ll, lcap - ll, "%s%s", ll ? " " : "", page);
        assert_true(sl < scap && ll < lcap);
        for (size_t i = 0; i < w.n; i++) {
            uint64_t p = A->msg_pos(w.msgs[i]);
            size_t r = 0;
            while (r < n && !(after[r] < p && p < until[r]))
                r++;
            assert_true(r < n); /* every message is in one of the ranges asked */
            assert_true(p > after[r]);
            after[r] = p;
        }
        size_t got = w.n;
        history_free(&w);
        if (got == 0) return;
    }
    fail_msg("side replay did not end after 20 pages");
}

void test_side_replay(void **state)
{
    char ac[64], ab[64], ae[64], bd[64], buf[512], sizes[64];
    int64_t a, b, c, d, e;
    uint64_t id[SIDE_MSGS];
    history_wait w;
    (void)state;

    if (g_ops->size < offsetof(chatd_store_ops, side_replay) + sizeof(g_ops->side_replay) ||
        !g_ops->side_replay)
        skip(); /* a store before ABI 1.5, or one without the hook */
    a = make_member("side-a", "Side A");
    b = make_member("side-b", "Side B");
    c = make_member("side-c", "Side C");
    d = make_member("side-d", "Side D");
    e = make_member("side-e", "Side E");
    room_of(a, b, ab, sizeof(ab)); /* partition 3 */
    room_of(b, d, bd, sizeof(bd)); /* partition 3 too; a is not in it */
    room_of(a, c, ac, sizeof(ac)); /* partition 5 */
    room_of(a, e, ae, sizeof(ae)); /* unpartitioned */
    for (int i = 0; i < SIDE_MSGS; i++)
        id[i] = next_id();
    g_nside = 0;
    /* the streams interleaved in time; ids against the positions */
    side_put("ab1", id[15], PPOS(3, 10), ab, a, 0);
    side_put("ac1", id[14], PPOS(5, 20), ac, c, 0);
    side_put("ae1", id[13], UPOS(100), ae, e, 0);
    side_put("bd1", id[12], PPOS(3, 11), bd, b, 0);
    side_put("ab2", id[11], PPOS(3, 12), ab, b, 0);
    side_put("ac2", id[10], PPOS(5, 21), ac, a, 0);
    side_put("ae2", id[9], UPOS(101), ae, e, 0);
    side_put("Rab", id[8], PPOS(3, 13), ab, a, side_id("ab2"));  /* a read ab up to ab2 */
    side_put("Rbab", id[7], PPOS(3, 14), ab, b, side_id("ab2")); /* b's: not on a's stream */
    side_put("Rcac", id[6], PPOS(5, 22), ac, c, side_id("ac2")); /* c's: neither */
    side_put("Rae", id[5], UPOS(102), ae, a, side_id("ae2"));
    side_put("ab3", id[4], PPOS(3, 15), ab, b, 0);
    side_put("bd2", id[3], PPOS(3, 16), bd, d, 0);
    side_put("ac3", id[2], PPOS(5, 23), ac, c, 0);
    side_put("ae3", id[1], UPOS(103), ae, a, 0);

    {
        /* every stream a is in (and the last partition's, ending at 2^63) */
        const uint64_t after[] = {0, PPOS(3, 0), PPOS(5, 0), PPOS(LAST_PARTITION, 0)};
        const uint64_t until[] = {CHATD_POS_PARTITIONED, PEND(3), PEND(5), PEND(LAST_PARTITION)};
        const char *all = "ae1 ae2 Rae ae3 ab1 ab2 Rab ab3 ac1 ac2 ac3";
        assert_true(PEND(LAST_PARTITION) == UINT64_C(1) << 63);

        expect_side(a, after, until, 4, 100, all);

        /* limit honoured: the first messages by position */
        expect_side(a, after, until, 4, 1, "ae1");
        expect_side(a, after, until, 4, 6, "ae1 ae2 Rae ae3 ab1 ab2");

        /* paging: every message once, in order, in full pages */
        side_pages(a, after, until, 4, 3, buf, sizeof(buf), sizes, sizeof(sizes));
        assert_string_equal(buf, all);
        assert_string_equal(sizes, "3 3 3 2 0");
        side_pages(a, after, until, 4, 11, buf, sizeof(buf), sizes, sizeof(sizes));
        assert_string_equal(buf, all);
        assert_string_equal(sizes, "11 0");

        /* d is in bd only: none of a's rooms, none of a's reads */
        expect_side(d, after, until, 4, 100, "bd1 bd2");
        /* b: ab and bd on partition 3, with b's own read of ab */
        expect_side(b, after, until, 4, 100, "ab1 bd1 ab2 Rbab ab3 bd2");
    }
    /* the ranges say which streams: partition 5 and the unpartitioned one */
    {
        const uint64_t after[] = {0, PPOS(5, 0)}, until[] = {CHATD_POS_PARTITIONED, PEND(5)};
        expect_side(a, after, until, 2, 100, "ae1 ae2 Rae ae3 ac1 ac2 ac3");
    }
    /* partition 3 alone, from within: after excluded, until excluded */
    {
        const uint64_t after[] = {PPOS(3, 12)}, until[] = {PEND(3)};
        const uint64_t after2[] = {PPOS(3, 0)}, until2[] = {PPOS(3, 13)};
        expect_side(a, after, until, 1, 100, "Rab ab3");
        expect_side(a, after2, until2, 1, 100, "ab1 ab2");
    }
    /* resumed mid-way on every stream: what came after each stream's last */
    {
        const uint64_t after[] = {UPOS(101), PPOS(3, 15), PPOS(5, 20)};
        const uint64_t until[] = {CHATD_POS_PARTITIONED, PEND(3), PEND(5)};
        expect_side(a, after, until, 3, 100, "Rae ae3 ac2 ac3");
    }
    /* a stream with nothing of a's, and ranges that are not as the contract says */
    {
        const uint64_t after[] = {PPOS(4, 0)}, until[] = {PEND(4)};
        const uint64_t bad_after[] = {PPOS(5, 0), 0}, bad_until[] = {PEND(5), 10};
        const uint64_t empty_after[] = {5}, empty_until[] = {5};
        expect_side(a, after, until, 1, 100, "");
        st_side(a, bad_after, bad_until, 2, 100, &w); /* not sorted */
        assert_int_equal(w.status, CHATD_ERR_INVALID);
        st_side(a, empty_after, empty_until, 1, 100, &w); /* after == until */
        assert_int_equal(w.status, CHATD_ERR_INVALID);
        st_side(a, after, until, 0, 100, &w);
        assert_int_equal(w.status, CHATD_ERR_INVALID);
        st_side(0, after, until, 1, 100, &w);
        assert_int_equal(w.status, CHATD_ERR_INVALID);
    }
}

/* ---- stream_heads (ABI 1.6) ---------------------------------------------- */

#define HEADS_MAX 64

typedef struct heads_wait {
    int done;
    chatd_status status;
    uint64_t pos[HEADS_MAX];
    size_t n;
} heads_wait;

static void on_heads(void *arg, chatd_status st, const uint64_t *pos, size_t n)
{
    heads_wait *w = arg;
    w->status = st;
    w->n = n;
    assert_true(n <= HEADS_MAX);
    if (n) memcpy(w->pos, pos, n * sizeof(*pos));
    w->done = 1;
}

/* The heads, checked: partitioned, one per stream, ascending. */
static void st_heads(heads_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->stream_heads(g_inst, on_heads, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
    for (size_t i = 0; i < w->n; i++) {
        assert_true(w->pos[i] & CHATD_POS_PARTITIONED);
        if (i)
            assert_true(w->pos[i - 1] >> CHATD_POS_STREAM_SHIFT < w->pos[i] >>
                        CHATD_POS_STREAM_SHIFT);
    }
}

/* The head of partition k in w, or 0. */
static uint64_t head_of(const heads_wait *w, uint64_t k)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->pos[i] >> CHATD_POS_STREAM_SHIFT == PPOS(k, 0) >> CHATD_POS_STREAM_SHIFT)
            return w->pos[i];
    return 0;
}

/* The highest stored CHAT position of each partitioned stream: what is
 * stored stays (no head goes down); two partitions of this run's own (by the
 * process id, skipping any that already has a head: the suites run the cases
 * again, and at once from several processes, on one database) gain their
 * highest message, whatever the order of the stores; READ events and
 * unpartitioned messages are no head. */
void test_stream_heads(void **state)
{
    char room[64];
    heads_wait before, after;
    int64_t a, b;
    (void)state;

    if (!CHATD_HAS(chatd_store_ops, g_ops, stream_heads) || !g_ops->stream_heads)
        skip(); /* a store before ABI 1.6, or one without the hook */
    a = make_member("heads-a", "Heads A");
    b = make_member("heads-b", "Heads B");
    room_of(a, b, room, sizeof(room));
    st_heads(&before);
    uint64_t k = 1000 + 2 * ((uint64_t)getpid() % 7000);
    while (head_of(&before, k) || head_of(&before, k + 1))
        k = k + 2 < 16000 ? k + 2 : 1000;
    g_nside = 0;
    side_put("h1", next_id(), PPOS(k, 7), room, a, 0);
    side_put("h2", next_id(), PPOS(k, 30), room, b, 0);
    side_put("h3", next_id(), PPOS(k, 12), room, a, 0);
    side_put("h4", next_id(), PPOS(k + 1, 0), room, b, 0);
    side_put("hR", next_id(), PPOS(k + 1, 5), room, a, side_id("h4")); /* a READ: no head */
    side_put("hU", next_id(), UPOS(900), room, a, 0);                  /* unpartitioned */
    st_heads(&after);
    assert_true(after.n >= before.n + 2);
    assert_true(head_of(&after, k) == PPOS(k, 30));
    assert_true(head_of(&after, k + 1) == PPOS(k + 1, 0));
    for (size_t i = 0; i < before.n; i++) /* the others still there, none lower */
        assert_true(head_of(&after, (before.pos[i] >> CHATD_POS_STREAM_SHIFT) -
                                        (CHATD_POS_PARTITIONED >> CHATD_POS_STREAM_SHIFT)) >=
                    before.pos[i]);
}
