/*
 * subs.c - STOMP subscriptions of transport-ws and the fan-out: a table of
 * destinations ("/sub/chat/room/1&2", "/sub/chat/side/7") each with its list
 * of subscriptions, and deliver, which encodes a message once and shares the
 * body by reference among every subscriber's output buffer. A subscriber
 * whose output is over max_outbuf is disconnected as a slow reader.
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

/* One encoded body shared by reference by every subscriber's output buffer:
 * the message reference is dropped when the last buffer releases it. */
struct shared_body {
    const chatd_api *api;
    chatd_msg *msg;
    size_t refs;
};

static void shared_body_release(struct shared_body *b)
{
    if (--b->refs == 0) {
        b->api->msg_unref(b->msg);
        free(b);
    }
}

static void body_cleanup(const void *data, size_t len, void *extra)
{
    (void)data;
    (void)len;
    shared_body_release(extra);
}

/* Queue one MESSAGE frame of `s` (id, cursor, body shared through b).
 * Returns 0, or -1 when the output is over max_outbuf or out of memory. */
static int sub_frame(tw_sub *s, uint64_t id, const char *cursor, const char *json, size_t jlen,
                     struct shared_body *b)
{
    tw_conn *c = s->c;
    char sid[2 * TW_MAX_ID + 1], hbuf[1024], ackh[64] = "";
    stomp_escape(sid, sizeof(sid), s->id, c->version);
    if (s->ack != TW_ACK_AUTO)
        snprintf(ackh, sizeof(ackh), "ack:%" PRIu64 "-%" PRIu64 "\n", id, ++c->ack_serial);
    int hl = snprintf(hbuf, sizeof(hbuf),
                      "MESSAGE\ndestination:%s\nmessage-id:%" PRIu64 "\nsubscription:%s\n"
                      "cursor:%s\ncontent-type:application/json\ncontent-length:%zu\n%s\n",
                      s->d->name, id, sid, cursor, jlen, ackh);
    if (hl < 0 || (size_t)hl >= sizeof(hbuf)) return 0; /* cannot happen: ids are bounded */
    uint8_t wh[10];
    size_t whl = ws_frame_header(wh, WS_OP_TEXT, 1, (uint64_t)hl + jlen + 1);
    struct evbuffer *out = tw_conn_out(c);
    b->refs++;
    if (evbuffer_add(out, wh, whl) != 0 || evbuffer_add(out, hbuf, (size_t)hl) != 0 ||
        evbuffer_add_reference(out, json, jlen, body_cleanup, b) != 0) {
        b->refs--;
        return -1;
    }
    if (evbuffer_add(out, "", 1) != 0) return -1;
    c->last_tx_ms = c->srv->api->now_ms();
    return 0;
}

static struct shared_body *body_new(tw_server *srv, chatd_msg *msg, const char **json, size_t *jlen)
{
    *json = srv->api->msg_json(msg, jlen);
    if (!*json) {
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "no JSON for message %" PRIu64 " (out of memory)",
                      srv->api->msg_id(msg));
        return NULL;
    }
    struct shared_body *b = malloc(sizeof(*b));
    if (!b) {
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "out of memory delivering message %" PRIu64,
                      srv->api->msg_id(msg));
        return NULL;
    }
    b->api = srv->api;
    b->msg = srv->api->msg_ref(msg);
    b->refs = 1;
    return b;
}

int tw_sub_write(tw_sub *s, chatd_msg *msg)
{
    tw_server *srv = s->c->srv;
    const char *json;
    size_t jlen;
    char cursor[TW_CURSOR_MAX];
    uint64_t id = srv->api->msg_id(msg);
    if (tw_cursor_make(s->d->name, id, cursor, sizeof(cursor)) != 0) return -1;
    struct shared_body *b = body_new(srv, msg, &json, &jlen);
    if (!b) return -1;
    int rc = sub_frame(s, id, cursor, json, jlen, b);
    shared_body_release(b);
    if (rc == 0) srv->api->counter_add(srv->ctx, "chatd_ws_replayed_total", 1);
    return rc;
}

void tw_deliver(void *inst, const char *destination, chatd_msg *msg)
{
    tw_server *srv = inst;
    struct lh_entry *e = lh_table_lookup_entry(srv->dests, destination);
    if (!e) return;
    tw_dest *d = (tw_dest *)lh_entry_v(e);
    const char *json;
    size_t jlen = 0;
    uint64_t id = srv->api->msg_id(msg);
    char cursor[TW_CURSOR_MAX];
    if (tw_cursor_make(d->name, id, cursor, sizeof(cursor)) != 0) return;
    struct shared_body *b = body_new(srv, msg, &json, &jlen);
    if (!b) return;
    uint64_t sent = 0, nslow = 0;
    for (tw_sub *s = d->head; s; s = s->dnext) {
        tw_conn *c = s->c;
        if (c->closed || c->closing || c->st != TW_ST_CONNECTED || c->ws_close_sent) continue;
        if (s->replay) { /* resuming: held until the replay reaches it */
            tw_resume_hold(s, msg);
            continue;
        }
        if (s->resumed) { /* after a replay: each position once, in order */
            if (id <= s->last) continue;
            s->last = id;
        }
        if (sub_frame(s, id, cursor, json, jlen, b) != 0 || tw_conn_over_limit(c)) {
            c->slow = 1;
            nslow++;
            continue;
        }
        sent++;
    }
    shared_body_release(b);
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
