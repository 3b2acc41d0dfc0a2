/*
 * stomp_send.c - what a STOMP client sends to transport-ws: SEND to
 * /pub/chat/message or /pub/chat/read (JSON body checked, published through
 * the core, RECEIPT once durable, ERROR on refusal), and transactions
 * (BEGIN buffers SENDs, COMMIT publishes them with one RECEIPT when all are
 * durable, ABORT drops them).
 */
#include "config.h"

#include "stomp_body.h"
#include "tw.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tw_tx_send {
    char *dest;
    char *body;
    size_t len;
    char *receipt;
    char *key; /* idempotency-key header, NULL when none */
};

struct tw_tx {
    tw_tx *next;
    char *name;
    struct tw_tx_send *sends;
    size_t n;
    size_t bytes;      /* bodies buffered, counted in c->tx_bytes */
    int64_t opened_ms; /* BEGIN, for max_tx_age */
};

/* A COMMIT: its RECEIPT goes out when every SEND of it is durable. */
struct tw_group {
    char *receipt;
    int remaining;
    int failed;
};

/* ---- transactions --------------------------------------------------------- */

static void tx_free(tw_conn *c, tw_tx *t)
{
    c->tx_bytes -= t->bytes;
    for (size_t i = 0; i < t->n; i++) {
        free(t->sends[i].dest);
        free(t->sends[i].body);
        free(t->sends[i].receipt);
        free(t->sends[i].key);
    }
    free(t->sends);
    free(t->name);
    free(t);
}

void tw_tx_free_all(tw_conn *c)
{
    while (c->txs) {
        tw_tx *t = c->txs;
        c->txs = t->next;
        tx_free(c, t);
    }
    c->ntx = 0;
}

int64_t tw_tx_oldest(const tw_conn *c)
{
    int64_t oldest = 0;
    for (const tw_tx *t = c->txs; t; t = t->next)
        if (!oldest || t->opened_ms < oldest) oldest = t->opened_ms;
    return oldest;
}

static tw_tx *tx_take(tw_conn *c, const char *name, int unlink)
{
    for (tw_tx **pp = &c->txs; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->name, name) == 0) {
            tw_tx *t = *pp;
            if (unlink) {
                *pp = t->next;
                c->ntx--;
            }
            return t;
        }
    }
    return NULL;
}

/* ---- publish -------------------------------------------------------------- */

struct pub_req {
    tw_conn *c;
    char *receipt; /* in the same allocation (rcpt), NULL when none */
    struct tw_group *grp;
    int chat; /* a SEND to /pub/chat/message: its RECEIPT names the message */
    char rcpt[];
};

/* A SEND over the member's publish_rate, kept while reading is paused and
 * tried again until the core takes it or rate_grace runs out. */
struct tw_retry {
    char *dest, *body, *receipt, *key;
    size_t len;
    int64_t since_ms;
    int64_t delay_ms;
    struct event *ev;
};

static int refusal_code(chatd_status st)
{
    switch (st) {
    case CHATD_REJECT:
    case CHATD_ERR_INVALID:
    case CHATD_ERR_FORBIDDEN:
    case CHATD_ERR_NOTFOUND:
    case CHATD_ERR_BUSY:
    case CHATD_ERR_AUTH:
        return WS_CLOSE_POLICY;
    default:
        return WS_CLOSE_INTERNAL;
    }
}

static void group_done(tw_conn *c, struct tw_group *g)
{
    if (--g->remaining > 0) return;
    if (!g->failed && c && !c->closed) tw_stomp_receipt(c, g->receipt);
    free(g->receipt);
    free(g);
}

/* The RECEIPT of a SEND to /pub/chat/message, with the message's id: the
 * frame tw_stomp_send_frame would build, written on the stack (through it
 * only when the receipt id is long). */
static void chat_receipt(tw_conn *c, const char *receipt, uint64_t id)
{
    static const char head[] = "RECEIPT\nreceipt-id:";
    char f[320], idbuf[24];
    size_t n = sizeof(head) - 1;
    if (c->closed || c->closing) return;
    snprintf(idbuf, sizeof(idbuf), "%" PRIu64, id);
    memcpy(f, head, n);
    size_t e = stomp_escape(f + n, sizeof(f) - n, receipt, c->version);
    /* then "\nmessage-id:" (12), the id (up to 20), "\n\n" and the NUL */
    if (n + e + 12 + strlen(idbuf) + 3 > sizeof(f)) {
        tw_hdr h[] = {{"receipt-id", receipt}, {"message-id", idbuf}};
        tw_stomp_send_frame(c, "RECEIPT", h, 2, NULL, NULL, 0);
        return;
    }
    n += e;
    n += (size_t)snprintf(f + n, sizeof(f) - n, "\nmessage-id:%s\n\n", idbuf) + 1; /* and NUL */
    tw_ws_send(c, WS_OP_TEXT, f, n);
    c->srv->api->counter_add(c->srv->ctx, "chatd_stomp_frames_out_total", 1);
}

static void publish_cb(void *arg, chatd_status st, const char *reason, chatd_msg *msg)
{
    struct pub_req *p = arg;
    tw_conn *c = p->c;
    c->inflight--;
    if (!c->closed) {
        /* EXISTS with the message: a retry answered by the original */
        if (st == CHATD_OK || (st == CHATD_ERR_EXISTS && msg)) {
            if (p->receipt && p->chat && msg)
                chat_receipt(c, p->receipt, c->srv->api->msg_id(msg));
            else
                tw_stomp_receipt(c, p->receipt);
        } else if (st == CHATD_ERR_BUSY && c->pub_sync && !p->grp) {
            c->rate_limited = 1; /* do_publish keeps the SEND and slows down */
        } else {
            char m[300];
            snprintf(m, sizeof(m), "message refused: %s",
                     reason ? reason : c->srv->api->status_str(st));
            if (p->grp) p->grp->failed = 1;
            tw_stomp_error(c, m, p->receipt ? p->receipt : (p->grp ? p->grp->receipt : NULL),
                           refusal_code(st));
        }
    }
    if (p->grp) group_done(c, p->grp);
    if (c->pend_kind && c->inflight == 0) tw_stomp_finish_pending(c);
    int was_full = c->inflight + 1 >= TW_MAX_INFLIGHT;
    free(p);
    if (was_full) tw_conn_kick(c);
    tw_conn_unref(c);
}

/* The fields of a body json-c read (one stomp_body.c did not take). */
static void body_from_json(json_object *o, tw_send_body *b)
{
    static const char *const keys[] = {"roomId", "message", "upTo"};
    tw_body_field *fs[] = {&b->room, &b->message, &b->up_to};
    for (size_t i = 0; i < 3; i++) {
        json_object *v;
        tw_body_field *f = fs[i];
        *f = (tw_body_field){.type = TW_BODY_ABSENT};
        if (!json_object_object_get_ex(o, keys[i], &v)) continue;
        if (json_object_is_type(v, json_type_string)) {
            /* a string with U+0000 would be cut short in C: not a string */
            f->str = tw_json_str(o, keys[i], &f->len);
            f->type = f->str ? TW_BODY_STRING : TW_BODY_OTHER;
            if (!f->str && i == 2) { /* upTo: read as before, up to the NUL */
                f->str = json_object_get_string(v);
                f->type = TW_BODY_STRING;
            }
        } else if (json_object_is_type(v, json_type_int)) {
            f->type = TW_BODY_INT;
            f->num = json_object_get_int64(v);
        } else {
            f->type = TW_BODY_OTHER;
        }
    }
}

/* Publish one SEND. Returns 0, 1 when the core refused it as busy at once
 * (over publish_rate; nothing was said to the client), or -1 after an ERROR
 * was sent. */
static int publish_now(tw_conn *c, const char *dest, const char *body, size_t len,
                       const char *receipt, const char *key, struct tw_group *grp)
{
    tw_server *srv = c->srv;
    chatd_msg_fields f;
    char room[CHATD_ROOM_ID_MAX];
    int64_t lo, hi;
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.writer_id = c->member_id;
    f.writer = c->login;

    int chat = strcmp(dest, CHATD_DEST_PUBLISH) == 0;
    int read = strcmp(dest, CHATD_DEST_READ) == 0;
    if (!chat && !read) {
        tw_stomp_error(c, "unknown destination: SEND to " CHATD_DEST_PUBLISH " or " CHATD_DEST_READ,
                       receipt, WS_CLOSE_POLICY);
        return -1;
    }
    char buf[TW_BODY_QUICK_MAX];
    tw_send_body b;
    json_object *o = NULL;
    if (!tw_send_body_quick(body, len, buf, &b)) {
        int oom;
        if (!(o = tw_json_parse_object(body, len, &oom))) {
            tw_stomp_error(c, oom ? "out of memory" : "the body must be a JSON object", receipt,
                           oom ? WS_CLOSE_INTERNAL : WS_CLOSE_POLICY);
            return -1;
        }
        body_from_json(o, &b);
    }
    const char *rid = b.room.type == TW_BODY_STRING ? b.room.str : NULL;
    if (!rid || srv->api->room_parse(rid, &lo, &hi) != CHATD_OK ||
        srv->api->room_format(room, sizeof(room), lo, hi) < 0) {
        json_object_put(o);
        tw_stomp_error(c, "roomId must be a string \"a&b\" of two member ids", receipt,
                       WS_CLOSE_POLICY);
        return -1;
    }
    f.room_id = room;
    if (chat) {
        f.kind = CHATD_MSG_CHAT;
        f.idem_key = key; /* validated by the core */
        if (b.message.type != TW_BODY_STRING) {
            json_object_put(o);
            tw_stomp_error(c, "message must be a string", receipt, WS_CLOSE_POLICY);
            return -1;
        }
        f.text = b.message.str;
        f.text_len = b.message.len;
    } else {
        f.kind = CHATD_MSG_READ;
        int ok = 0;
        if (b.up_to.type == TW_BODY_STRING)
            ok = tw_parse_u64(b.up_to.str, &f.up_to) == 0;
        else if (b.up_to.type == TW_BODY_INT)
            ok = b.up_to.num > 0 && (f.up_to = (uint64_t)b.up_to.num);
        if (!ok || f.up_to == 0) {
            json_object_put(o);
            tw_stomp_error(c, "upTo must be a message id", receipt, WS_CLOSE_POLICY);
            return -1;
        }
    }
    size_t rlen = receipt ? strlen(receipt) + 1 : 0;
    struct pub_req *p = malloc(sizeof(*p) + rlen);
    if (!p) {
        json_object_put(o);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return -1;
    }
    p->c = c;
    p->receipt = receipt ? memcpy(p->rcpt, receipt, rlen) : NULL;
    p->grp = grp;
    p->chat = chat;
    if (grp) grp->remaining++;
    tw_conn_ref(c);
    c->inflight++;
    c->rate_limited = 0;
    c->pub_sync = 1; /* an answer while publish runs is a refusal at the door */
    tw_conn_ref(c);
    srv->api->publish(srv->ctx, &f, publish_cb, p); /* copies the fields */
    c->pub_sync = 0;
    json_object_put(o);
    int limited = c->rate_limited;
    c->rate_limited = 0;
    tw_conn_unref(c);
    return limited ? 1 : 0;
}

void tw_send_retry_free(tw_conn *c)
{
    struct tw_retry *r = c->retry;
    if (!r) return;
    c->retry = NULL;
    if (r->ev) event_free(r->ev);
    free(r->dest);
    free(r->body);
    free(r->receipt);
    free(r->key);
    free(r);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg);

static int retry_arm(tw_conn *c)
{
    struct tw_retry *r = c->retry;
    struct timeval tv = {(time_t)(r->delay_ms / 1000), (suseconds_t)((r->delay_ms % 1000) * 1000)};
    if (!r->ev && !(r->ev = evtimer_new(c->srv->base, retry_cb, c))) return -1;
    return evtimer_add(r->ev, &tv);
}

/* The kept SEND's next try: taken (read on), busy again (wait longer, up to
 * 200 ms between tries), or past rate_grace (ERROR). */
static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn *c = arg;
    struct tw_retry *r = c->retry;
    if (!r || c->closed || c->closing || c->st != TW_ST_CONNECTED) return;
    tw_conn_ref(c);
    int rc = publish_now(c, r->dest, r->body, r->len, r->receipt, r->key, NULL);
    if (rc == 1 && c->srv->api->now_ms() - r->since_ms >= c->srv->rate_grace * 1000) {
        char m[160];
        snprintf(m, sizeof(m),
                 "message refused: publish rate exceeded for rate_grace = %llds, slow down",
                 (long long)c->srv->rate_grace);
        tw_stomp_error(c, m, r->receipt, WS_CLOSE_POLICY);
        tw_send_retry_free(c);
    } else if (rc == 1) {
        r->delay_ms = r->delay_ms * 2 > 200 ? 200 : r->delay_ms * 2;
        if (retry_arm(c) != 0) {
            tw_stomp_error(c, "out of memory", r->receipt, WS_CLOSE_INTERNAL);
            tw_send_retry_free(c);
        }
    } else {
        tw_send_retry_free(c);
        c->busy = 0;
        tw_conn_kick(c);
    }
    tw_conn_unref(c);
}

/* Publish one SEND; one over publish_rate is kept and tried again while the
 * connection's reading pauses (slowed, not refused). Returns 0, or -1 after
 * an ERROR was sent. */
static int do_publish(tw_conn *c, const char *dest, const char *body, size_t len,
                      const char *receipt, const char *key, struct tw_group *grp)
{
    int rc = publish_now(c, dest, body, len, receipt, key, grp);
    if (rc != 1) return rc;
    if (grp || c->srv->rate_grace == 0) {
        tw_stomp_error(c, "message refused: publish rate exceeded, slow down", receipt,
                       WS_CLOSE_POLICY);
        return -1;
    }
    struct tw_retry *r = calloc(1, sizeof(*r));
    if (!r || !(r->dest = strdup(dest)) || !(r->body = malloc(len + 1)) ||
        (receipt && !(r->receipt = strdup(receipt))) || (key && !(r->key = strdup(key)))) {
        if (r) {
            free(r->dest);
            free(r->body);
            free(r->receipt);
        }
        free(r);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return -1;
    }
    memcpy(r->body, body, len);
    r->body[len] = '\0';
    r->len = len;
    r->since_ms = c->srv->api->now_ms();
    r->delay_ms = 10;
    c->retry = r;
    c->busy = 1; /* no further frame until this one is taken */
    c->srv->api->counter_add(c->srv->ctx, "chatd_ws_sends_slowed_total", 1);
    if (retry_arm(c) != 0) {
        tw_send_retry_free(c);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return -1;
    }
    return 0;
}

/* ---- frame handlers ------------------------------------------------------- */

void tw_stomp_on_send(tw_conn *c, const stomp_frame *f)
{
    const char *dest = stomp_frame_header(f, "destination");
    const char *receipt = stomp_frame_header(f, "receipt");
    const char *txn = stomp_frame_header(f, "transaction");
    const char *key = stomp_frame_header(f, "idempotency-key");
    if (!dest) {
        tw_stomp_error(c, "SEND needs a destination header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (!txn) {
        do_publish(c, dest, f->body, f->body_len, receipt, key, NULL);
        return;
    }
    tw_tx *t = tx_take(c, txn, 0);
    if (!t) {
        tw_stomp_error(c, "unknown transaction", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (t->n >= TW_MAX_TX_SENDS) {
        tw_stomp_error(c, "too many SENDs in one transaction", receipt, WS_CLOSE_POLICY);
        return;
    }
    if (c->tx_bytes + f->body_len > (size_t)c->srv->max_tx_bytes) {
        char m[128];
        snprintf(m, sizeof(m),
                 "transactions too large: max_tx_bytes = %lld buffered per connection",
                 (long long)c->srv->max_tx_bytes);
        tw_stomp_error(c, m, receipt, WS_CLOSE_POLICY);
        return;
    }
    struct tw_tx_send *ns = realloc(t->sends, (t->n + 1) * sizeof(*ns));
    if (!ns) {
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    t->sends = ns;
    struct tw_tx_send *s = &t->sends[t->n];
    s->dest = strdup(dest);
    s->body = malloc(f->body_len + 1);
    s->len = f->body_len;
    s->receipt = receipt ? strdup(receipt) : NULL;
    s->key = key ? strdup(key) : NULL;
    if (!s->dest || !s->body || (receipt && !s->receipt) || (key && !s->key)) {
        free(s->dest);
        free(s->body);
        free(s->receipt);
        free(s->key);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    memcpy(s->body, f->body, f->body_len);
    s->body[f->body_len] = '\0';
    t->n++;
    t->bytes += f->body_len;
    c->tx_bytes += f->body_len;
}

void tw_stomp_on_begin(tw_conn *c, const stomp_frame *f)
{
    const char *name = stomp_frame_header(f, "transaction");
    const char *receipt = stomp_frame_header(f, "receipt");
    if (!name) {
        tw_stomp_error(c, "BEGIN needs a transaction header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (tx_take(c, name, 0)) {
        tw_stomp_error(c, "transaction already open", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (c->ntx >= TW_MAX_TX || strlen(name) > TW_MAX_ID) {
        tw_stomp_error(c, "too many open transactions", receipt, WS_CLOSE_POLICY);
        return;
    }
    tw_tx *t = calloc(1, sizeof(*t));
    if (!t || !(t->name = strdup(name))) {
        free(t);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    t->opened_ms = c->srv->api->now_ms();
    t->next = c->txs;
    c->txs = t;
    c->ntx++;
    tw_schedule_tick(c); /* max_tx_age */
    tw_stomp_receipt(c, receipt);
}

void tw_stomp_on_commit(tw_conn *c, const stomp_frame *f, int commit)
{
    const char *name = stomp_frame_header(f, "transaction");
    const char *receipt = stomp_frame_header(f, "receipt");
    tw_tx *t = name ? tx_take(c, name, 1) : NULL;
    if (!t) {
        tw_stomp_error(c, name ? "unknown transaction" : "transaction header missing", receipt,
                       WS_CLOSE_PROTOCOL);
        return;
    }
    if (!commit || t->n == 0) {
        tx_free(c, t);
        tw_stomp_receipt(c, receipt);
        return;
    }
    struct tw_group *g = calloc(1, sizeof(*g));
    if (!g || (receipt && !(g->receipt = strdup(receipt)))) {
        free(g);
        tx_free(c, t);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    g->remaining = 1; /* held until every SEND is issued */
    tw_conn_ref(c);
    for (size_t i = 0; i < t->n && !c->closed && c->st == TW_ST_CONNECTED; i++)
        if (do_publish(c, t->sends[i].dest, t->sends[i].body, t->sends[i].len, t->sends[i].receipt,
                       t->sends[i].key, g) != 0)
            g->failed = 1;
    tx_free(c, t);
    group_done(c, g);
    tw_conn_unref(c);
}
