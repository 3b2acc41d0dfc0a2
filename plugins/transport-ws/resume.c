/*
 * resume.c - cursors and SUBSCRIBE resume-after of transport-ws
 * (docs/delivery.md).
 *
 * A cursor names one message's place in one destination's stream:
 *   /sub/chat/room/A&B  ->  "room.A-B.<position>"
 *   /sub/chat/side/M    ->  "side.M.p<vector>"  (sidecur.c)
 * where a room's position is the message's position (chatd_api.msg_pos: the
 * id with queue-local, the Kafka partition and offset with queue-kafka, the
 * same on every node), and a side cursor, since the side stream spans rooms
 * whose positions lie in streams that do not compare, is a vector: the last
 * position covered in each stream. Every MESSAGE frame carries its cursor.
 *
 * resume-after: the subscription is registered first, so nothing published
 * from then on is missed; while it replays, live deliveries for it are held
 * (at most replay_hold; past that they are dropped and the replay reads
 * again, from the store, which has them: the core persists before it fans
 * out). Pages of replay_page come from chatd_api.replay (a room) or
 * chatd_api.side_replay (a side: the ranges after each stream's entry, at
 * most CHATD_POS_RANGES_MAX streams a page, the streams in turn); the next
 * page is asked for only when the connection's output has drained to a
 * quarter of max_outbuf, and a page (like the held messages at the seam) is
 * written only while that output is at most half of max_outbuf, the rest
 * when it drains: however many subscriptions of a connection resume at
 * once, their replays leave half of max_outbuf to its live deliveries
 * (bounded memory, and a resuming client is never disconnected as slow
 * for what the replay wrote). A short page (of the last streams) with nothing
 * dropped ends the replay: the held messages after the last replayed
 * positions are written, and the subscription goes live with a position
 * filter (each position once, in order, per stream), which makes the seam
 * exact. A store without side_replay replays a side stream by id, which is
 * exact when every position is unpartitioned (queue-local: the id); with
 * partitioned positions it refuses the resume.
 */
#include "config.h"

#include "tw.h"
#include "../common/plugin_common.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tw_replay {
    tw_sub *s;         /* NULL once the subscription is gone */
    tw_conn *c;        /* referenced until the replay is freed */
    int fetching;      /* a page request is outstanding */
    int scheduled;     /* run_cb is scheduled on the loop */
    int waiting;       /* waiting for the output to drain */
    int dropped;       /* held messages were dropped: one more page is needed */
    size_t chunk;      /* side: the first stream (vector entry) of the page */
    int byid;          /* side, a store without side_replay: replayed by id */
    uint64_t after_id; /* ... after this id */
    size_t npage;      /* messages of the page being written */
    int paged;         /* a page is being written: then page_more decides */
    chatd_msg **pend;  /* a page or the seam's held messages, written from ipend */
    size_t npend, ipend, cap;
    size_t nheld;
    chatd_msg *held[]; /* replay_hold of them */
};

int tw_cursor_prefix(const char *dest, char *out, size_t cap)
{
    int n;
    if (strncmp(dest, CHATD_DEST_ROOM_PREFIX, sizeof(CHATD_DEST_ROOM_PREFIX) - 1) == 0) {
        const char *room = dest + sizeof(CHATD_DEST_ROOM_PREFIX) - 1;
        const char *amp = strchr(room, '&');
        if (!amp) return -1;
        n = snprintf(out, cap, "room.%.*s-%s.", (int)(amp - room), room, amp + 1);
    } else if (strncmp(dest, CHATD_DEST_SIDE_PREFIX, sizeof(CHATD_DEST_SIDE_PREFIX) - 1) == 0) {
        n = snprintf(out, cap, "side.%s.", dest + sizeof(CHATD_DEST_SIDE_PREFIX) - 1);
    } else {
        return -1;
    }
    return n > 0 && (size_t)n < cap ? n : -1;
}

static int is_side(const char *dest)
{
    return strncmp(dest, CHATD_DEST_SIDE_PREFIX, sizeof(CHATD_DEST_SIDE_PREFIX) - 1) == 0;
}

uint64_t tw_stream_pos(const chatd_api *api, const chatd_msg *msg)
{
    if (PC_API_HAS(api, msg_pos)) return api->msg_pos(msg);
    return api->msg_id(msg);
}

int tw_dest_cursor(tw_server *srv, const tw_sub *s, const char *dest, const chatd_msg *msg,
                   char *out, size_t cap)
{
    if (is_side(dest)) return tw_side_cursor(srv, s, dest, out, cap);
    return tw_cursor_make(dest, tw_stream_pos(srv->api, msg), out, cap);
}

int tw_cursor_make(const char *dest, uint64_t id, char *out, size_t cap)
{
    char pre[TW_CURSOR_MAX];
    if (tw_cursor_prefix(dest, pre, sizeof(pre)) < 0) return -1;
    int n = snprintf(out, cap, "%s%" PRIu64, pre, id);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

int tw_msg_json_cursor(const chatd_api *api, const char *dest, chatd_msg *msg, struct evbuffer *b,
                       char *cur)
{
    char own[TW_CURSOR_MAX];
    size_t jl = 0;
    if (!cur) cur = own;
    const char *j = api->msg_json(msg, &jl);
    if (!j || jl < 2 || tw_cursor_make(dest, tw_stream_pos(api, msg), cur, TW_CURSOR_MAX) != 0)
        return -1;
    if (evbuffer_add(b, j, jl - 1) != 0) return -1;
    return evbuffer_add_printf(b, ",\"cursor\":\"%s\"}", cur) < 0 ? -1 : 0;
}

int tw_cursor_parse(const char *dest, const char *cursor, uint64_t *id)
{
    char pre[TW_CURSOR_MAX];
    int pl = cursor ? tw_cursor_prefix(dest, pre, sizeof(pre)) : -1;
    if (pl < 0 || strncmp(cursor, pre, (size_t)pl) != 0) return -1;
    const char *p = cursor + pl;
    if (p[0] == '0' && p[1]) return -1; /* one spelling per position */
    return tw_parse_u64(p, id);
}

/* Frees the replay and drops its reference to the connection. */
static void replay_free(struct tw_replay *r)
{
    tw_conn *c = r->c;
    const chatd_api *api = c->srv->api;
    for (size_t i = 0; i < r->nheld; i++)
        api->msg_unref(r->held[i]);
    for (size_t i = r->ipend; i < r->npend; i++)
        api->msg_unref(r->pend[i]);
    free(r->pend);
    free(r);
    tw_conn_unref(c);
}

/* Write msg to s unless its position was written already. */
static int write_after(tw_sub *s, chatd_msg *msg)
{
    uint64_t pos = tw_stream_pos(s->c->srv->api, msg);
    if (s->vec) {
        if (s->replay && s->replay->byid && tw_pos_stream(pos) != 0) return 0;
        if (!tw_side_pass(s, pos)) return 0;
    } else {
        if (pos <= s->last) return 0;
        s->last = pos;
    }
    return tw_sub_write(s, msg);
}

/* The replay of s ends (or fails): detach and free it. */
static void replay_end(tw_sub *s)
{
    struct tw_replay *r = s->replay;
    s->replay = NULL;
    replay_free(r);
}

static void schedule(struct tw_replay *r);
static void replay_go(struct tw_replay *r);

/* The store has no side_replay: by id when every stream is the
 * unpartitioned one (positions are ids there), else refused. 0, or -1. */
static int side_by_id(struct tw_replay *r)
{
    tw_sub *s = r->s;
    if (s->vec->n != 1 || s->vec->e[0].k != 0) {
        replay_end(s);
        tw_stomp_error(r->c,
                       "resume failed: this store cannot replay the side stream by position "
                       "(it lacks side_replay); subscribe without resume-after and reload",
                       NULL, WS_CLOSE_INTERNAL);
        return -1;
    }
    r->byid = 1;
    r->after_id = s->vec->e[0].v;
    return 0;
}

/* Whether another page is needed after one of n messages. */
static int page_more(struct tw_replay *r, size_t n)
{
    tw_sub *s = r->s;
    size_t full = (size_t)r->c->srv->replay_page;
    if (!s->vec || r->byid || n == full) {
        int more = n == full || r->dropped;
        r->dropped = 0;
        return more;
    }
    /* side by position: the next streams; after the last, again if held
     * messages were dropped meanwhile */
    r->chunk += CHATD_POS_RANGES_MAX;
    if (r->chunk < s->vec->n) return 1;
    r->chunk = 0;
    int more = r->dropped;
    r->dropped = 0;
    return more;
}

static void page_cb(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n, uint64_t next)
{
    (void)next;
    struct tw_replay *r = arg;
    tw_conn *c = r->c;
    tw_sub *s = r->s;
    r->fetching = 0;
    if (!s) { /* unsubscribed or closed meanwhile */
        replay_free(r);
        return;
    }
    if (c->closed || c->closing) return; /* freed with the subscription */
    if (st == CHATD_ERR_UNAVAILABLE && s->vec && !r->byid) {
        if (side_by_id(r) == 0) schedule(r);
        return;
    }
    if (st != CHATD_OK) {
        char m[160];
        snprintf(m, sizeof(m), "resume failed: the store could not replay (%s); retry later",
                 c->srv->api->status_str(st));
        replay_end(s);
        tw_stomp_error(c, m, NULL, WS_CLOSE_INTERNAL);
        return;
    }
    if (n > r->cap) { /* more than the page asked for */
        replay_end(s);
        tw_stomp_error(c, "resume failed: the store answered a longer page than asked for", NULL,
                       WS_CLOSE_INTERNAL);
        return;
    }
    for (size_t i = 0; i < n; i++)
        r->pend[i] = c->srv->api->msg_ref(msgs[i]);
    r->npend = n;
    r->ipend = 0;
    r->npage = n;
    r->paged = 1;
    if (r->byid && n > 0) r->after_id = c->srv->api->msg_id(msgs[n - 1]);
    replay_go(r);
}

/* Write what is pending while the output is at most half of max_outbuf:
 * 1 when all is written, 0 when the rest waits for the output to drain, -1
 * when a write failed (out of memory). */
static int pend_flush(struct tw_replay *r)
{
    tw_conn *c = r->c;
    const chatd_api *api = c->srv->api;
    while (r->ipend < r->npend) {
        if ((int64_t)evbuffer_get_length(tw_conn_out(c)) > c->srv->max_outbuf / 2) return 0;
        chatd_msg *m = r->pend[r->ipend++];
        int rc = write_after(r->s, m);
        api->msg_unref(m);
        if (rc != 0) return -1;
    }
    r->npend = r->ipend = 0;
    return 1;
}

/* Go on with the replay: write what is pending, then ask for the next page,
 * or at the seam write what was held during the replay (with the replay's
 * own cursors: the table may be past messages still held), then go live. */
static void replay_go(struct tw_replay *r)
{
    tw_sub *s = r->s;
    tw_conn *c = r->c;
    int f;
    while ((f = pend_flush(r)) > 0) {
        if (r->paged) { /* a page is written: another one? */
            r->paged = 0;
            if (!page_more(r, r->npage)) continue;
            if ((int64_t)evbuffer_get_length(tw_conn_out(c)) > c->srv->max_outbuf / 4)
                r->waiting = 1; /* tw_resume_drained goes on */
            else
                schedule(r);
            return;
        }
        if (r->dropped) { /* held ones dropped while the seam was written: the store has them */
            r->dropped = 0;
            schedule(r);
            return;
        }
        if (r->nheld == 0) break;
        memcpy(r->pend, r->held, r->nheld * sizeof(r->held[0])); /* the seam */
        r->npend = r->nheld;
        r->nheld = 0;
    }
    if (f == 0) {
        r->waiting = 1; /* tw_resume_drained goes on */
        return;
    }
    s->replay = NULL;
    replay_free(r);
    if (f < 0) tw_conn_close(c); /* out of memory */
}

/* Ask the store for the next page (on a fresh stack, from the loop). */
static void run_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct tw_replay *r = arg;
    r->scheduled = 0;
    tw_sub *s = r->s;
    if (!s) {
        replay_free(r);
        return;
    }
    tw_conn *c = s->c;
    if (c->closed || c->closing) return;
    if (r->ipend < r->npend) { /* the output drained: write the rest */
        replay_go(r);
        return;
    }
    const chatd_api *api = c->srv->api;
    unsigned page = (unsigned)c->srv->replay_page;
    if (s->vec && !r->byid) {
        if (!PC_API_HAS(api, side_replay)) {
            if (side_by_id(r) == 0) schedule(r); /* a core before ABI 1.5 */
            return;
        }
        uint64_t after[CHATD_POS_RANGES_MAX], until[CHATD_POS_RANGES_MAX];
        size_t n = tw_side_ranges(s->vec, r->chunk, after, until, CHATD_POS_RANGES_MAX);
        r->fetching = 1;
        api->side_replay(c->srv->ctx, c->member_id, after, until, n, page, page_cb, r);
        return;
    }
    char room[CHATD_ROOM_ID_MAX] = "";
    if (!s->vec)
        snprintf(room, sizeof(room), "%s", s->d->name + sizeof(CHATD_DEST_ROOM_PREFIX) - 1);
    r->fetching = 1;
    api->replay(c->srv->ctx, c->member_id, s->vec ? NULL : room, s->vec ? r->after_id : s->last,
                page, page_cb, r);
}

static void schedule(struct tw_replay *r)
{
    struct timeval now = {0, 0};
    r->scheduled = 1;
    if (event_base_once(r->c->srv->base, -1, EV_TIMEOUT, run_cb, r, &now) != 0) {
        r->scheduled = 0;
        if (r->s) {
            tw_sub *s = r->s;
            replay_end(s);
            tw_stomp_error(s->c, "out of memory", NULL, WS_CLOSE_INTERNAL);
        }
    }
}

void tw_resume_begin(tw_sub *s, uint64_t after, tw_sidevec *vec)
{
    struct tw_replay *r =
        calloc(1, sizeof(*r) + (size_t)s->c->srv->replay_hold * sizeof(r->held[0]));
    int nomem = !r;
    if (r) { /* a page, or the held messages at the seam */
        r->cap = (size_t)(s->c->srv->replay_page > s->c->srv->replay_hold ? s->c->srv->replay_page
                                                                          : s->c->srv->replay_hold);
        nomem |= !(r->pend = calloc(r->cap, sizeof(r->pend[0])));
    }
    if (vec) { /* side: per stream, the cursor's and the node's for the others */
        s->vec = tw_side_seed(s->c->srv, vec);
        nomem |= !s->vec;
        free(vec);
    } else {
        s->resumed = 1;
        s->last = after;
    }
    if (nomem) {
        if (r) free(r->pend);
        free(r);
        tw_stomp_error(s->c, "out of memory", NULL, WS_CLOSE_INTERNAL);
        return;
    }
    r->s = s;
    r->c = s->c;
    tw_conn_ref(r->c);
    s->replay = r;
    s->c->srv->api->counter_add(s->c->srv->ctx, "chatd_ws_resumes_total", 1);
    schedule(r);
}

void tw_resume_hold(tw_sub *s, chatd_msg *msg)
{
    struct tw_replay *r = s->replay;
    const chatd_api *api = s->c->srv->api;
    if (r->nheld == (size_t)s->c->srv->replay_hold) { /* the store has them: read one more page */
        for (size_t i = 0; i < r->nheld; i++)
            api->msg_unref(r->held[i]);
        r->nheld = 0;
        r->dropped = 1;
    }
    r->held[r->nheld++] = api->msg_ref(msg);
}

void tw_resume_drained(tw_conn *c)
{
    for (tw_sub *s = c->subs; s; s = s->cnext)
        if (s->replay && s->replay->waiting) {
            s->replay->waiting = 0;
            schedule(s->replay);
        }
}

void tw_resume_sub_gone(tw_sub *s)
{
    struct tw_replay *r = s->replay;
    if (!r) return;
    s->replay = NULL;
    r->s = NULL;
    /* a page asked for or a run scheduled frees it when it comes back */
    if (!r->fetching && !r->scheduled) replay_free(r);
}
