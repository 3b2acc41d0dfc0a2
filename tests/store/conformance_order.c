/*
 * tests/store/conformance_order.c - the store conformance case for message
 * positions (ABI 1.4, docs/delivery.md "Order"): a room's history, replay,
 * last message, read mark and unread count follow the positions the queue
 * assigned, not the ids (which come from each node's clock).
 */
#include "conformance.h"

/* Positions as queue-kafka makes them: bit 62, partition 3, offset k. */
#define POS(k) ((UINT64_C(1) << 62) | (UINT64_C(3) << 48) | (uint64_t)(k))

static void st_replay_room(const char *room, uint64_t after, history_wait *w)
{
    memset(w, 0, sizeof(*w));
    g_ops->replay(g_inst, room, 0, after, 100, on_history, w);
    assert_int_equal(testcore_run_until_flag(&w->done, TIMEOUT_MS), 0);
    assert_int_equal(w->status, CHATD_OK);
}

/* The texts of w, joined by spaces, in buf. */
static const char *texts(const history_wait *w, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < w->n && len < cap; i++) {
        size_t tl = 0;
        const char *t = A->msg_text(w->msgs[i], &tl);
        int n = snprintf(buf + len, cap - len, "%s%.*s", i ? " " : "", (int)tl, t);
        if (n < 0) break;
        len += (size_t)n;
    }
    return buf;
}

void test_positions(void **state)
{
    char la[96], lb[96], room[64], buf[256];
    int64_t a, b, t = A->now_ms();
    uint64_t id[5];
    history_wait h;
    room_copy r;
    (void)state;

    if (!g_ops->replay) skip(); /* a store before ABI 1.3 */
    a = make_member("pos-a", "Pos A");
    b = make_member("pos-b", "Pos B");
    snprintf(la, sizeof(la), "pos-a-%s", g_run);
    snprintf(lb, sizeof(lb), "pos-b-%s", g_run);
    room_of(a, b, room, sizeof(room));
    /* the queue's order p0..p4 (a, b, a, a, b); ids the other way round, as
     * from a node whose clock is ahead writing first */
    for (int i = 0; i < 5; i++)
        id[i] = next_id();
    for (int i = 0; i < 5; i++) {
        char text[8];
        int by_b = i == 1 || i == 4;
        snprintf(text, sizeof(text), "p%d", i);
        chatd_msg *m = new_chat_at(id[4 - i], POS(10 + i), room, by_b ? b : a, by_b ? lb : la, text,
                                   strlen(text), t + 5 - i);
        assert_int_equal(st_persist(m), CHATD_OK);
        A->msg_unref(m);
    }

    /* history: by position, each with its position; before = an id pages
     * below that message's position */
    st_history(room, 0, 100, &h);
    assert_string_equal(texts(&h, buf, sizeof(buf)), "p0 p1 p2 p3 p4");
    for (size_t i = 0; i < h.n; i++)
        assert_true(A->msg_pos(h.msgs[i]) == POS(10 + i));
    history_free(&h);
    st_history(room, id[4 - 3], 100, &h); /* before p3 */
    assert_string_equal(texts(&h, buf, sizeof(buf)), "p0 p1 p2");
    history_free(&h);
    st_history(room, 0, 2, &h); /* the newest page of two, and the cursor below it */
    assert_string_equal(texts(&h, buf, sizeof(buf)), "p3 p4");
    assert_true(h.next_before == id[4 - 3]);
    history_free(&h);

    /* replay: after a position, by position */
    st_replay_room(room, POS(11), &h);
    assert_string_equal(texts(&h, buf, sizeof(buf)), "p2 p3 p4");
    history_free(&h);

    /* the room list: the last message is the one of highest position (the
     * smallest id); b read up to its own p4; a up to p3, p4 unread */
    r = get_room(a, room);
    assert_true(r.last_msg_id == id[0]);
    assert_string_equal(r.last_message, "p4");
    assert_true(r.last_read_id == id[4 - 3]);
    assert_int_equal(r.unread, 1);
    free(r.last_message);
    r = get_room(b, room);
    assert_true(r.last_read_id == id[0]);
    assert_int_equal(r.unread, 0);
    free(r.last_message);

    /* read marks compare positions: a reads up to p2 (a larger id than p3's)
     * and nothing moves back; a reads p4 and nothing is unread */
    assert_int_equal(st_read(room, a, id[4 - 2]), CHATD_OK);
    r = get_room(a, room);
    assert_true(r.last_read_id == id[4 - 3]);
    assert_int_equal(r.unread, 1);
    free(r.last_message);
    assert_int_equal(st_read(room, a, id[0]), CHATD_OK);
    r = get_room(a, room);
    assert_true(r.last_read_id == id[0]);
    assert_int_equal(r.unread, 0);
    free(r.last_message);

    /* b's next message (next position): one unread for a again */
    {
        chatd_msg *m = new_chat_at(next_id(), POS(15), room, b, lb, "p5", 2, t + 6);
        assert_int_equal(st_persist(m), CHATD_OK);
        A->msg_unref(m);
    }
    r = get_room(a, room);
    assert_string_equal(r.last_message, "p5");
    assert_int_equal(r.unread, 1);
    free(r.last_message);
}
