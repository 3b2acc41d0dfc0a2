/*
 * subs.c - STOMP subscriptions of transport-ws and the fan-out: a table of
 * destinations ("/sub/chat/room/1&2", "/sub/chat/side/7") each with its list
 * of subscriptions, and deliver, which formats a message's MESSAGE frame once
 * (all but the subscription and ack headers) and shares it by reference
 * among every subscriber's output buffer. A subscriber whose output is over
 * max_outbuf is disconnected as a slow reader.
 */
#include "config.h"

#include "tw.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <json-c/linkhash.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tw_sub *tw_sub_find(tw_conn *c, const char *id)
{
    for (tw_sub *s = c->subs; s; s = s->cnext)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

int tw_sub_add(tw_conn *c, const char *dest, const char *id, int ack)
{
    tw_server *srv = c->srv;
    tw_sub *s = calloc(1, sizeof(*s));
    if (!s || !(s->id = strdup(id))) {
        free(s);
        return -1;
    }
    tw_dest *d = NULL;
    struct lh_entry *e = lh_table_lookup_entry(srv->dests, dest);
    if (e) {
        d = (tw_dest *)lh_entry_v(e);
    } else {
        d = calloc(1, sizeof(*d));
        if (!d || !(d->name = strdup(dest)) || lh_table_insert(srv->dests, d->name, d) != 0) {
            if (d) free(d->name);
            free(d);
            free(s->id);
            free(s);
            return -1;
        }
    }
    s->c = c;
    s->d = d;
    s->ack = ack;
    s->dnext = d->head;
    if (d->head) d->head->dprev = s;
    d->head = s;
    s->cnext = c->subs;
    c->subs = s;
    c->nsubs++;
    srv->nsubs++;
    srv->api->gauge_set(srv->ctx, "chatd_ws_subscriptions", srv->nsubs);
    return 0;
}

/* Unlink from the destination (dropping it when empty) and free. The caller
 * unlinks it from the connection's list. */
static void sub_free(tw_server *srv, tw_sub *s)
{
    tw_dest *d = s->d;
    if (s->dprev)
        s->dprev->dnext = s->dnext;
    else
        d->head = s->dnext;
    if (s->dnext) s->dnext->dprev = s->dprev;
    if (!d->head) {
        lh_table_delete(srv->dests, d->name);
        free(d->name);
        free(d);
    }
    s->c->nsubs--;
    srv->nsubs--;
    tw_resume_sub_gone(s);
    free(s->vec);
    free(s->id);
    free(s);
}

void tw_sub_remove(tw_conn *c, tw_sub *s)
{
    for (tw_sub **pp = &c->subs; *pp; pp = &(*pp)->cnext) {
        if (*pp == s) {
            *pp = s->cnext;
            break;
        }
    }
    sub_free(c->srv, s);
    c->srv->api->gauge_set(c->srv->ctx, "chatd_ws_subscriptions", c->srv->nsubs);
}

void tw_subs_drop_conn(tw_conn *c)
{
    while (c->subs) {
        tw_sub *s = c->subs;
        c->subs = s->cnext;
        sub_free(c->srv, s);
    }
}

/* What every subscriber's MESSAGE frame of one message shares, formatted
 * once: every header but `subscription` and `ack`, the blank line, the body
 * and its NUL. Each subscriber's output refers to it (no copy); it is freed
 * when the last one has written it. */
struct shared_frame {
    size_t refs;
    size_t len;
    char data[];
};

static void frame_release(struct shared_frame *f)
{
    if (--f->refs == 0) free(f);
}

static void frame_cleanup(const void *data, size_t len, void *extra)
{
    (void)data;
    (void)len;
    frame_release(extra);
}

static struct shared_frame *frame_new(tw_server *srv, const char *dest, chatd_msg *msg, uint64_t id,
                                      const char *cursor)
{
    size_t jlen = 0;
    const char *json = srv->api->msg_json(msg, &jlen);
    if (!json) {
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "no JSON for message %" PRIu64 " (out of memory)",
                      id);
        return NULL;
    }
    static const char fmt[] = "destination:%s\nmessage-id:%" PRIu64 "\ncursor:%s\n"
                              "content-type:application/json\ncontent-length:%zu\n\n";
    size_t cap = sizeof(fmt) + strlen(dest) + strlen(cursor) + 2 * 20 + jlen + 1;
    struct shared_frame *f = malloc(sizeof(*f) + cap);
    int hl = f ? snprintf(f->data, cap, fmt, dest, id, cursor, jlen) : -1;
    if (hl < 0 || (size_t)hl + jlen + 1 > cap) {
        free(f);
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "out of memory delivering message %" PRIu64, id);
        return NULL;
    }
    memcpy(f->data + hl, json, jlen);
    f->data[(size_t)hl + jlen] = '\0';
    f->len = (size_t)hl + jlen + 1;
    f->refs = 1;
    return f;
}

/* Queue the MESSAGE frame of `s`: its WebSocket header, command,
 * subscription and ack headers (the only bytes of its own), then the shared
 * part by reference, handed to the output in one piece. Returns 0, or -1
 * when out of memory. */
static int sub_queue(tw_sub *s, struct shared_frame *f, uint64_t id, int64_t now)
{
    tw_conn *c = s->c;
    static const char cmd[] = "MESSAGE\nsubscription:";
    char buf[10 + sizeof(cmd) + 2 * TW_MAX_ID + 64], *p = buf + 10;
    size_t n = sizeof(cmd) - 1;
    memcpy(p, cmd, n);
    size_t el = stomp_escape(p + n, 2 * TW_MAX_ID + 1, s->id, c->version);
    if (el > 2 * TW_MAX_ID) return 0; /* cannot happen: ids are at most TW_MAX_ID */
    n += el;
    p[n++] = '\n';
    if (s->ack != TW_ACK_AUTO)
        n += (size_t)snprintf(p + n, 64, "ack:%" PRIu64 "-%" PRIu64 "\n", id, ++c->ack_serial);
    uint8_t wh[10];
    size_t whl = ws_frame_header(wh, WS_OP_TEXT, 1, (uint64_t)(n + f->len));
    memcpy(p - whl, wh, whl);
    c->last_tx_ms = now;
    /* straight to the socket when it may (conn.c); what it did not take is
     * queued: the rest of the own bytes, then the rest of the shared part */
    size_t hl = whl + n, done = 0;
    struct iovec iov[2] = {{p - whl, hl}, {f->data, f->len}};
    ssize_t w = tw_conn_write_now(c, iov, 2);
    if (w > 0) done = (size_t)w;
    if (done == hl + f->len) return 0;
    size_t hdone = done < hl ? done : hl, bdone = done - hdone;
    /* assembled aside: the output's callbacks (and the loop's lock they
     * take) run once per frame, not once per piece */
    struct evbuffer *tmp = c->srv->scratch;
    if (!tmp && !(tmp = c->srv->scratch = evbuffer_new())) return -1;
    if (hdone < hl && evbuffer_add(tmp, p - whl + hdone, hl - hdone) != 0) return -1;
    f->refs++;
    if (evbuffer_add_reference(tmp, f->data + bdone, f->len - bdone, frame_cleanup, f) != 0) {
        f->refs--;
        evbuffer_drain(tmp, evbuffer_get_length(tmp));
        return -1;
    }
    if (evbuffer_add_buffer(tw_conn_out(c), tmp) != 0) {
        evbuffer_drain(tmp, evbuffer_get_length(tmp)); /* releases the reference */
        return -1;
    }
    tw_conn_flush_later(c);
    return 0;
}

int tw_sub_write(tw_sub *s, chatd_msg *msg)
{
    tw_server *srv = s->c->srv;
    char cursor[TW_CURSOR_MAX];
    uint64_t id = srv->api->msg_id(msg);
    if (tw_dest_cursor(srv, s, s->d->name, msg, cursor, sizeof(cursor)) != 0) return -1;
    struct shared_frame *f = frame_new(srv, s->d->name, msg, id, cursor);
    if (!f) return -1;
    int rc = sub_queue(s, f, id, srv->api->now_ms());
    frame_release(f);
    if (rc == 0 && s->replay) srv->api->counter_add(srv->ctx, "chatd_ws_replayed_total", 1);
    return rc;
}

/* A resumed side subscription, live, with its own vector (for its life):
 * each position once, and its own cursor. */
static int side_write(tw_sub *s, chatd_msg *msg, uint64_t pos)
{
    if (!tw_side_pass(s, pos)) return 0;
    return tw_sub_write(s, msg);
}

void tw_deliver(void *inst, const char *destination, chatd_msg *msg)
{
    tw_server *srv = inst;
    uint64_t pos = tw_stream_pos(srv->api, msg);
    tw_side_note(srv, pos); /* before any cursor is made */
    struct lh_entry *e = lh_table_lookup_entry(srv->dests, destination);
    if (!e) return;
    tw_dest *d = (tw_dest *)lh_entry_v(e);
    uint64_t id = srv->api->msg_id(msg);
    char cursor[TW_CURSOR_MAX];
    if (tw_dest_cursor(srv, NULL, d->name, msg, cursor, sizeof(cursor)) != 0) return;
    struct shared_frame *f = frame_new(srv, d->name, msg, id, cursor);
    if (!f) return;
    int64_t now = srv->api->now_ms();
    uint64_t sent = 0, nslow = 0;
    for (tw_sub *s = d->head; s; s = s->dnext) {
        tw_conn *c = s->c;
        if (c->closed || c->closing || c->st != TW_ST_CONNECTED || c->ws_close_sent) continue;
        if (s->replay) { /* resuming: held until the replay reaches it */
            tw_resume_hold(s, msg);
            continue;
        }
        if (s->resumed) { /* after a replay: each position once, in order */
            if (pos <= s->last) continue;
            s->last = pos;
        }
        if ((s->vec ? side_write(s, msg, pos) : sub_queue(s, f, id, now)) != 0 ||
            tw_conn_over_limit(c)) {
            c->slow = 1;
            nslow++;
            continue;
        }
        sent++;
    }
    frame_release(f);
    /* close slow readers; closing unlinks their subscriptions (and may free
     * the destination), so look it up again each time */
    while (nslow > 0 && (e = lh_table_lookup_entry(srv->dests, destination)) != NULL) {
        tw_conn *c = NULL;
        for (tw_sub *s = ((tw_dest *)lh_entry_v(e))->head; s && !c; s = s->dnext)
            if (s->c->slow) c = s->c;
        if (!c) break;
        srv->api->log(srv->ctx, CHATD_LOG_WARN,
                      "%s: slow reader (over max_outbuf = %lld bytes queued); disconnecting",
                      c->peer, (long long)srv->max_outbuf);
        srv->api->counter_add(srv->ctx, "chatd_ws_slow_disconnects_total", 1);
        tw_conn_close(c);
    }
    if (sent) srv->api->counter_add(srv->ctx, "chatd_ws_deliveries_total", sent);
}
