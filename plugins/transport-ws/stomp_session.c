/*
 * stomp_session.c - STOMP session logic of transport-ws: CONNECT/STOMP with
 * version and heart-beat negotiation and authentication, SEND to the
 * /pub/chat destinations (publish, RECEIPT once durable), transactions,
 * SUBSCRIBE/UNSUBSCRIBE with room and side permission checks, ACK/NACK,
 * DISCONNECT, ERROR-then-close, heart-beat timers, and the fan-out (deliver)
 * that shares one encoded body by reference among all subscribers.
 */
#include "config.h"

#include "tw.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <json-c/linkhash.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

struct tw_tx_send {
    char *dest;
    char *body;
    size_t len;
    char *receipt;
};

struct tw_tx {
    tw_tx *next;
    char *name;
    struct tw_tx_send *sends;
    size_t n;
};

/* A COMMIT: its RECEIPT goes out when every SEND of it is durable. */
struct tw_group {
    char *receipt;
    int remaining;
    int failed;
};

typedef struct hdr {
    const char *name;
    const char *value;
} hdr;

/* ---- helpers -------------------------------------------------------------- */

void tw_iso_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        strcpy(out, "1970-01-01T00:00:00.000Z");
        return;
    }
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static int parse_i64(const char *s, int64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0) return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

/* "a&b" of two positive decimal ids (either order) -> "low&high". */
int tw_room_canon(const char *in, char *out, size_t outsz)
{
    char a[24], b[24];
    const char *amp = in ? strchr(in, '&') : NULL;
    int64_t x, y;
    if (!amp || (size_t)(amp - in) >= sizeof(a) || strlen(amp + 1) >= sizeof(b)) return -1;
    memcpy(a, in, (size_t)(amp - in));
    a[amp - in] = '\0';
    strcpy(b, amp + 1);
    if (parse_i64(a, &x) || parse_i64(b, &y) || x <= 0 || y <= 0) return -1;
    int n = snprintf(out, outsz, "%" PRId64 "&%" PRId64, x < y ? x : y, x < y ? y : x);
    return n > 0 && (size_t)n < outsz ? 0 : -1;
}

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Append "name:value\n" with the escaping of `version`. */
static int add_header(struct evbuffer *b, const char *name, const char *value, int version)
{
    char stackbuf[512];
    const char *parts[2] = {name, value};
    for (int i = 0; i < 2; i++) {
        size_t n = stomp_escape(stackbuf, sizeof(stackbuf), parts[i], version);
        if (n < sizeof(stackbuf)) {
            if (evbuffer_add(b, stackbuf, n) != 0) return -1;
        } else {
            char *big = malloc(n + 1);
            if (!big) return -1;
            stomp_escape(big, n + 1, parts[i], version);
            int rc = evbuffer_add(b, big, n);
            free(big);
            if (rc != 0) return -1;
        }
        if (evbuffer_add(b, i == 0 ? ":" : "\n", 1) != 0) return -1;
    }
    return 0;
}

static void send_frame(tw_conn *c, const char *cmd, const hdr *h, size_t nh, const char *ctype,
                       const char *body, size_t blen)
{
    if (c->closed || c->closing) return;
    struct evbuffer *b = evbuffer_new();
    int esc = strcmp(cmd, "CONNECTED") == 0 ? STOMP_V10 : c->version;
    int rc = b ? 0 : -1;
    if (rc == 0) rc = evbuffer_add_printf(b, "%s\n", cmd) < 0 ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < nh; i++)
        if (h[i].value) rc = add_header(b, h[i].name, h[i].value, esc);
    if (rc == 0 && body) {
        char len[32];
        snprintf(len, sizeof(len), "%zu", blen);
        if (ctype) rc = add_header(b, "content-type", ctype, esc);
        if (rc == 0) rc = add_header(b, "content-length", len, esc);
    }
    if (rc == 0) rc = evbuffer_add(b, "\n", 1);
    if (rc == 0 && body && blen) rc = evbuffer_add(b, body, blen);
    if (rc == 0) rc = evbuffer_add(b, "", 1);
    if (rc != 0) {
        c->srv->api->log(c->srv->ctx, CHATD_LOG_ERROR, "%s: out of memory building a %s frame",
                         c->peer, cmd);
        if (b) evbuffer_free(b);
        tw_conn_close(c);
        return;
    }
    tw_ws_send_buffer(c, WS_OP_TEXT, b);
    evbuffer_free(b);
    c->srv->api->counter_add(c->srv->ctx, "chatd_stomp_frames_out_total", 1);
}

static void send_receipt(tw_conn *c, const char *receipt)
{
    if (!receipt) return;
    hdr h[] = {{"receipt-id", receipt}};
    send_frame(c, "RECEIPT", h, 1, NULL, NULL, 0);
}

/* Keep an ERROR or DISCONNECT until the publishes in flight are answered.
 * Returns 1 when deferred. */
static int defer(tw_conn *c, int kind, const char *msg, const char *receipt, int ws_code)
{
    if (c->inflight == 0) return 0;
    c->pend_kind = kind;
    c->pend_code = ws_code;
    c->pend_msg = msg ? strdup(msg) : NULL;
    c->pend_receipt = receipt ? strdup(receipt) : NULL;
    if ((msg && !c->pend_msg) || (receipt && !c->pend_receipt)) {
        tw_conn_close(c); /* out of memory: nothing sensible left to say */
        return 1;
    }
    c->st = TW_ST_DONE; /* no further frame is processed */
    c->busy = 0;
    return 1;
}

static void error_now(tw_conn *c, const char *msg, const char *receipt, int ws_code)
{
    c->srv->api->log(c->srv->ctx, CHATD_LOG_INFO, "%s: STOMP ERROR: %s", c->peer, msg);
    hdr h[] = {{"message", msg}, {"receipt-id", receipt}};
    send_frame(c, "ERROR", h, 2, "text/plain", msg, strlen(msg));
    c->st = TW_ST_DONE;
    c->busy = 0;
    c->srv->api->counter_add(c->srv->ctx, "chatd_stomp_errors_total", 1);
    tw_ws_close(c, ws_code, "STOMP ERROR");
}

void tw_stomp_error(tw_conn *c, const char *msg, const char *receipt, int ws_code)
{
    if (c->closed || c->closing || c->st == TW_ST_DONE) return;
    if (!defer(c, TW_PEND_ERROR, msg, receipt, ws_code)) error_now(c, msg, receipt, ws_code);
}

static void disconnect_now(tw_conn *c, const char *receipt)
{
    send_receipt(c, receipt);
    c->st = TW_ST_DONE;
    tw_ws_close(c, WS_CLOSE_NORMAL, "bye");
}

/* The last publish in flight was answered: say what was waiting. */
static void finish_pending(tw_conn *c)
{
    int kind = c->pend_kind;
    c->pend_kind = 0;
    if (c->closed || c->closing) return;
    if (kind == TW_PEND_ERROR)
        error_now(c, c->pend_msg ? c->pend_msg : "error", c->pend_receipt, c->pend_code);
    else if (kind == TW_PEND_DISCONNECT)
        disconnect_now(c, c->pend_receipt);
}

/* ---- subscriptions -------------------------------------------------------- */

static tw_sub *sub_find(tw_conn *c, const char *id)
{
    for (tw_sub *s = c->subs; s; s = s->cnext)
        if (strcmp(s->id, id) == 0) return s;
    return NULL;
}

static int sub_add(tw_conn *c, const char *dest, const char *id, int ack)
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
    free(s->id);
    free(s);
}

static void sub_remove(tw_conn *c, tw_sub *s)
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

/* ---- transactions --------------------------------------------------------- */

static void tx_free(tw_tx *t)
{
    for (size_t i = 0; i < t->n; i++) {
        free(t->sends[i].dest);
        free(t->sends[i].body);
        free(t->sends[i].receipt);
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
        tx_free(t);
    }
    c->ntx = 0;
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
    char *receipt;
    struct tw_group *grp;
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
    if (!g->failed && c && !c->closed) send_receipt(c, g->receipt);
    free(g->receipt);
    free(g);
}

static void publish_cb(void *arg, chatd_status st, const char *reason, chatd_msg *msg)
{
    (void)msg;
    struct pub_req *p = arg;
    tw_conn *c = p->c;
    c->inflight--;
    if (!c->closed) {
        if (st == CHATD_OK) {
            send_receipt(c, p->receipt);
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
    if (c->pend_kind && c->inflight == 0) finish_pending(c);
    int was_full = c->inflight + 1 >= TW_MAX_INFLIGHT;
    free(p->receipt);
    free(p);
    if (was_full) tw_conn_kick(c);
    tw_conn_unref(c);
}

static const char *json_str(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len) *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

/* Publish one SEND. Returns 0, or -1 after an ERROR was sent. */
static int do_publish(tw_conn *c, const char *dest, const char *body, size_t len,
                      const char *receipt, struct tw_group *grp)
{
    tw_server *srv = c->srv;
    chatd_msg_fields f;
    char room[48];
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    f.writer_id = c->member_id;
    f.writer = c->login;

    int chat = strcmp(dest, "/pub/chat/message") == 0;
    int read = strcmp(dest, "/pub/chat/read") == 0;
    if (!chat && !read) {
        tw_stomp_error(c, "unknown destination: SEND to /pub/chat/message or /pub/chat/read",
                       receipt, WS_CLOSE_POLICY);
        return -1;
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return -1;
    }
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (end < len && body[end] && strchr(" \t\r\n", body[end]))
        end++;
    if (!o || jerr != json_tokener_success || end != len ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        tw_stomp_error(c, "the body must be a JSON object", receipt, WS_CLOSE_POLICY);
        return -1;
    }
    const char *rid = json_str(o, "roomId", NULL);
    if (!rid || tw_room_canon(rid, room, sizeof(room)) != 0) {
        json_object_put(o);
        tw_stomp_error(c, "roomId must be a string \"a&b\" of two member ids", receipt,
                       WS_CLOSE_POLICY);
        return -1;
    }
    f.room_id = room;
    if (chat) {
        f.kind = CHATD_MSG_CHAT;
        f.text = json_str(o, "message", &f.text_len);
        if (!f.text) {
            json_object_put(o);
            tw_stomp_error(c, "message must be a string", receipt, WS_CLOSE_POLICY);
            return -1;
        }
    } else {
        f.kind = CHATD_MSG_READ;
        json_object *v;
        int ok = json_object_object_get_ex(o, "upTo", &v);
        if (ok && json_object_is_type(v, json_type_string))
            ok = parse_u64(json_object_get_string(v), &f.up_to) == 0;
        else if (ok && json_object_is_type(v, json_type_int))
            ok = json_object_get_int64(v) > 0 && (f.up_to = (uint64_t)json_object_get_int64(v));
        else
            ok = 0;
        if (!ok || f.up_to == 0) {
            json_object_put(o);
            tw_stomp_error(c, "upTo must be a message id", receipt, WS_CLOSE_POLICY);
            return -1;
        }
    }
    struct pub_req *p = calloc(1, sizeof(*p));
    if (!p || (receipt && !(p->receipt = strdup(receipt)))) {
        free(p);
        json_object_put(o);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return -1;
    }
    p->c = c;
    p->grp = grp;
    if (grp) grp->remaining++;
    tw_conn_ref(c);
    c->inflight++;
    srv->api->publish(srv->ctx, &f, publish_cb, p); /* copies the fields */
    json_object_put(o);
    return 0;
}

/* ---- frame handlers ------------------------------------------------------- */

struct auth_req {
    tw_conn *c;
    char *login;
    int64_t cx, cy;
};

static int pick_version(const char *accept)
{
    if (!accept) return STOMP_V10;
    if (http_has_token(accept, "1.2")) return STOMP_V12;
    if (http_has_token(accept, "1.1")) return STOMP_V11;
    if (http_has_token(accept, "1.0")) return STOMP_V10;
    return 0;
}

static void auth_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct auth_req *a = arg;
    tw_conn *c = a->c;
    tw_server *srv = c->srv;
    if (c->closed) goto out;
    c->busy = 0;
    if (st != CHATD_OK || n < 1) {
        tw_stomp_error(c, "authentication failed: invalid or expired session token", NULL,
                       WS_CLOSE_POLICY);
        goto out;
    }
    if (a->login && *a->login && strcmp(a->login, rows[0].login_id) != 0) {
        tw_stomp_error(c, "authentication failed: login does not match the session token", NULL,
                       WS_CLOSE_POLICY);
        goto out;
    }
    c->login = strdup(rows[0].login_id);
    if (!c->login) {
        tw_stomp_error(c, "out of memory", NULL, WS_CLOSE_INTERNAL);
        goto out;
    }
    c->member_id = rows[0].id;
    c->st = TW_ST_CONNECTED;
    srv->nsessions++;
    srv->api->gauge_set(srv->ctx, "chatd_ws_sessions", srv->nsessions);
    char hb[48] = "", sess[48];
    if (c->version >= STOMP_V11) {
        int64_t sx = srv->hb_send, sy = srv->hb_recv;
        c->hb_out_ms = sx && a->cy ? (sx > a->cy ? sx : a->cy) : 0;
        c->hb_in_ms = sy && a->cx ? (sy > a->cx ? sy : a->cx) : 0;
        snprintf(hb, sizeof(hb), "%" PRId64 ",%" PRId64, sx, sy);
    }
    snprintf(sess, sizeof(sess), "%llx-%llx", (unsigned long long)srv->api->now_ms(),
             (unsigned long long)c->serial);
    hdr h[] = {{"version", c->version == STOMP_V12   ? "1.2"
                           : c->version == STOMP_V11 ? "1.1"
                                                     : "1.0"},
               {"heart-beat", c->version >= STOMP_V11 ? hb : NULL},
               {"server", "chatd/" PACKAGE_VERSION},
               {"session", sess},
               {"user-name", c->login}};
    send_frame(c, "CONNECTED", h, 5, NULL, NULL, 0);
    c->last_rx_ms = srv->api->now_ms();
    tw_schedule_tick(c);
    srv->api->log(srv->ctx, CHATD_LOG_DEBUG, "%s: STOMP session of %s (member %" PRId64 ")",
                  c->peer, c->login, c->member_id);
    tw_conn_kick(c);
out:
    free(a->login);
    free(a);
    tw_conn_unref(c);
}

static void on_connect(tw_conn *c, const stomp_frame *f)
{
    tw_server *srv = c->srv;
    if (c->st != TW_ST_NONE) {
        tw_stomp_error(c, "already connected", stomp_frame_header(f, "receipt"), WS_CLOSE_PROTOCOL);
        return;
    }
    int v = pick_version(stomp_frame_header(f, "accept-version"));
    if (!v) {
        c->version = STOMP_V12;
        hdr h[] = {{"message", "Supported protocol versions are 1.0 1.1 1.2"},
                   {"version", "1.0,1.1,1.2"}};
        send_frame(c, "ERROR", h, 2, "text/plain", "Supported protocol versions are 1.0 1.1 1.2",
                   43);
        c->st = TW_ST_DONE;
        tw_ws_close(c, WS_CLOSE_PROTOCOL, "STOMP ERROR");
        return;
    }
    c->version = v;
    c->sp.version = v;
    int64_t cx = 0, cy = 0;
    const char *hbh = stomp_frame_header(f, "heart-beat");
    if (hbh && v >= STOMP_V11) {
        char a[24], b[24];
        const char *comma = strchr(hbh, ',');
        if (!comma || (size_t)(comma - hbh) >= sizeof(a) || strlen(comma + 1) >= sizeof(b)) {
            tw_stomp_error(c, "malformed heart-beat header", NULL, WS_CLOSE_PROTOCOL);
            return;
        }
        memcpy(a, hbh, (size_t)(comma - hbh));
        a[comma - hbh] = '\0';
        strcpy(b, comma + 1);
        if (parse_i64(a, &cx) || parse_i64(b, &cy)) {
            tw_stomp_error(c, "malformed heart-beat header", NULL, WS_CLOSE_PROTOCOL);
            return;
        }
    }
    const char *login = stomp_frame_header(f, "login");
    const char *token = stomp_frame_header(f, "passcode");
    if (!token || !*token) {
        const char *auth = stomp_frame_header(f, "Authorization");
        if (!auth) auth = stomp_frame_header(f, "authorization");
        if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
            token = auth + 7;
            while (*token == ' ')
                token++;
        } else {
            token = NULL;
        }
        login = NULL; /* login checks apply to passcode only */
    }
    if (!token || !*token) token = c->cookie_token;
    if (!token || !*token) {
        tw_stomp_error(c,
                       "authentication required: log in, then CONNECT with login and passcode "
                       "(the session token), an Authorization: Bearer header or the session "
                       "cookie",
                       NULL, WS_CLOSE_POLICY);
        return;
    }
    struct auth_req *a = calloc(1, sizeof(*a));
    if (!a || (login && !(a->login = strdup(login)))) {
        free(a);
        tw_stomp_error(c, "out of memory", NULL, WS_CLOSE_INTERNAL);
        return;
    }
    a->c = c;
    a->cx = cx;
    a->cy = cy;
    c->st = TW_ST_CONNECTING;
    c->busy = 1;
    tw_conn_ref(c);
    srv->api->authenticate(srv->ctx, token, auth_cb, a);
}

static void on_send(tw_conn *c, const stomp_frame *f)
{
    const char *dest = stomp_frame_header(f, "destination");
    const char *receipt = stomp_frame_header(f, "receipt");
    const char *txn = stomp_frame_header(f, "transaction");
    if (!dest) {
        tw_stomp_error(c, "SEND needs a destination header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (!txn) {
        do_publish(c, dest, f->body, f->body_len, receipt, NULL);
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
    s->receipt = xstrdup(receipt);
    if (!s->dest || !s->body || (receipt && !s->receipt)) {
        free(s->dest);
        free(s->body);
        free(s->receipt);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    memcpy(s->body, f->body, f->body_len);
    s->body[f->body_len] = '\0';
    t->n++;
}

struct sub_req {
    tw_conn *c;
    char *id;
    char *receipt;
    int ack;
};

static void room_cb(void *arg, chatd_status st, const char *room_id, int64_t peer_id)
{
    (void)peer_id;
    struct sub_req *r = arg;
    tw_conn *c = r->c;
    if (c->closed) goto out;
    c->busy = 0;
    if (st != CHATD_OK) {
        const char *m = st == CHATD_ERR_FORBIDDEN  ? "forbidden: you are not a member of this room"
                        : st == CHATD_ERR_NOTFOUND ? "no such room: unknown member id"
                        : st == CHATD_ERR_INVALID  ? "malformed room id (use a&b of member ids)"
                                                   : "room check failed";
        tw_stomp_error(c, m, r->receipt,
                       st == CHATD_ERR_INVALID ? WS_CLOSE_PROTOCOL : WS_CLOSE_POLICY);
        goto out;
    }
    char dest[128];
    snprintf(dest, sizeof(dest), "/sub/chat/room/%s", room_id);
    if (sub_find(c, r->id)) {
        tw_stomp_error(c, "subscription id already in use", r->receipt, WS_CLOSE_PROTOCOL);
        goto out;
    }
    if (sub_add(c, dest, r->id, r->ack) != 0) {
        tw_stomp_error(c, "out of memory", r->receipt, WS_CLOSE_INTERNAL);
        goto out;
    }
    send_receipt(c, r->receipt);
    tw_conn_kick(c);
out:
    free(r->id);
    free(r->receipt);
    free(r);
    tw_conn_unref(c);
}

static void on_subscribe(tw_conn *c, const stomp_frame *f)
{
    tw_server *srv = c->srv;
    const char *dest = stomp_frame_header(f, "destination");
    const char *id = stomp_frame_header(f, "id");
    const char *ackh = stomp_frame_header(f, "ack");
    const char *receipt = stomp_frame_header(f, "receipt");
    int ack = TW_ACK_AUTO;
    if (!dest) {
        tw_stomp_error(c, "SUBSCRIBE needs a destination header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (!id) {
        if (c->version >= STOMP_V11) {
            tw_stomp_error(c, "SUBSCRIBE needs an id header", receipt, WS_CLOSE_PROTOCOL);
            return;
        }
        id = dest;
    }
    if (strlen(id) > TW_MAX_ID) {
        tw_stomp_error(c, "subscription id too long", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (ackh && strcmp(ackh, "auto") != 0) {
        if (strcmp(ackh, "client") == 0)
            ack = TW_ACK_CLIENT;
        else if (strcmp(ackh, "client-individual") == 0)
            ack = TW_ACK_INDIVIDUAL;
        else {
            tw_stomp_error(c, "ack must be auto, client or client-individual", receipt,
                           WS_CLOSE_PROTOCOL);
            return;
        }
    }
    if (sub_find(c, id)) {
        tw_stomp_error(c, "subscription id already in use", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (c->nsubs >= srv->max_subscriptions) {
        tw_stomp_error(c, "too many subscriptions on this connection", receipt, WS_CLOSE_POLICY);
        return;
    }
    static const char side[] = "/sub/chat/side/", room[] = "/sub/chat/room/";
    if (strncmp(dest, side, sizeof(side) - 1) == 0) {
        int64_t who;
        char d[64];
        if (parse_i64(dest + sizeof(side) - 1, &who) != 0 || who != c->member_id) {
            tw_stomp_error(c, "forbidden: you may subscribe only to your own side destination",
                           receipt, WS_CLOSE_POLICY);
            return;
        }
        snprintf(d, sizeof(d), "%s%" PRId64, side, who);
        if (sub_add(c, d, id, ack) != 0) {
            tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
            return;
        }
        send_receipt(c, receipt);
        return;
    }
    if (strncmp(dest, room, sizeof(room) - 1) != 0) {
        tw_stomp_error(c,
                       "unknown destination: subscribe to /sub/chat/room/{roomId} or "
                       "/sub/chat/side/{memberId}",
                       receipt, WS_CLOSE_POLICY);
        return;
    }
    struct sub_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->id = strdup(id)) || (receipt && !(r->receipt = strdup(receipt)))) {
        if (r) free(r->id);
        free(r);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    r->c = c;
    r->ack = ack;
    c->busy = 1;
    tw_conn_ref(c);
    srv->api->room_check(srv->ctx, c->member_id, dest + sizeof(room) - 1, room_cb, r);
}

static void on_unsubscribe(tw_conn *c, const stomp_frame *f)
{
    const char *id = stomp_frame_header(f, "id");
    const char *receipt = stomp_frame_header(f, "receipt");
    tw_sub *s = NULL;
    if (id) {
        s = sub_find(c, id);
    } else if (c->version == STOMP_V10 && stomp_frame_header(f, "destination")) {
        const char *d = stomp_frame_header(f, "destination");
        for (s = c->subs; s && strcmp(s->d->name, d) != 0; s = s->cnext)
            ;
    } else {
        tw_stomp_error(c, "UNSUBSCRIBE needs an id header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (s) sub_remove(c, s);
    send_receipt(c, receipt);
}

static void on_ack(tw_conn *c, const stomp_frame *f)
{
    const char *receipt = stomp_frame_header(f, "receipt");
    const char *need = c->version >= STOMP_V12 ? "id" : "message-id";
    if (!stomp_frame_header(f, need)) {
        char m[64];
        snprintf(m, sizeof(m), "%s needs a %s header", f->command, need);
        tw_stomp_error(c, m, receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    /* Messages are durable before delivery and never redelivered here: an
     * acknowledgement only confirms the client saw them. */
    send_receipt(c, receipt);
}

static void on_begin(tw_conn *c, const stomp_frame *f)
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
    t->next = c->txs;
    c->txs = t;
    c->ntx++;
    send_receipt(c, receipt);
}

static void on_commit(tw_conn *c, const stomp_frame *f, int commit)
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
        tx_free(t);
        send_receipt(c, receipt);
        return;
    }
    struct tw_group *g = calloc(1, sizeof(*g));
    if (!g || (receipt && !(g->receipt = strdup(receipt)))) {
        free(g);
        tx_free(t);
        tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
        return;
    }
    g->remaining = 1; /* held until every SEND is issued */
    tw_conn_ref(c);
    for (size_t i = 0; i < t->n && !c->closed && c->st == TW_ST_CONNECTED; i++)
        if (do_publish(c, t->sends[i].dest, t->sends[i].body, t->sends[i].len, t->sends[i].receipt,
                       g) != 0)
            g->failed = 1;
    tx_free(t);
    group_done(c, g);
    tw_conn_unref(c);
}

void tw_stomp_frame(tw_conn *c, const stomp_frame *f)
{
    const char *cmd = f->command;
    const char *receipt = stomp_frame_header(f, "receipt");
    if (strcmp(cmd, "CONNECT") == 0 || strcmp(cmd, "STOMP") == 0) {
        on_connect(c, f);
        return;
    }
    if (c->st != TW_ST_CONNECTED) {
        tw_stomp_error(c, "not connected: send CONNECT first", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (strcmp(cmd, "SEND") == 0)
        on_send(c, f);
    else if (strcmp(cmd, "SUBSCRIBE") == 0)
        on_subscribe(c, f);
    else if (strcmp(cmd, "UNSUBSCRIBE") == 0)
        on_unsubscribe(c, f);
    else if (strcmp(cmd, "ACK") == 0 || strcmp(cmd, "NACK") == 0)
        on_ack(c, f);
    else if (strcmp(cmd, "BEGIN") == 0)
        on_begin(c, f);
    else if (strcmp(cmd, "COMMIT") == 0)
        on_commit(c, f, 1);
    else if (strcmp(cmd, "ABORT") == 0)
        on_commit(c, f, 0);
    else if (strcmp(cmd, "DISCONNECT") == 0) {
        if (!defer(c, TW_PEND_DISCONNECT, NULL, receipt, WS_CLOSE_NORMAL))
            disconnect_now(c, receipt);
    } else {
        char m[128];
        snprintf(m, sizeof(m), "unknown command %.64s", cmd);
        tw_stomp_error(c, m, receipt, WS_CLOSE_PROTOCOL);
    }
}

/* ---- timers --------------------------------------------------------------- */

void tw_stomp_tick(tw_conn *c, int64_t now)
{
    tw_server *s = c->srv;
    if (c->closed || c->closing) return;
    if (c->st < TW_ST_CONNECTED && now >= c->opened_ms + s->connect_timeout * 1000) {
        tw_stomp_error(c, "no STOMP CONNECT in time", NULL, WS_CLOSE_POLICY);
        return;
    }
    if (c->hb_out_ms > 0 && now - c->last_tx_ms >= c->hb_out_ms) tw_ws_send(c, WS_OP_TEXT, "\n", 1);
    if (c->hb_in_ms > 0) {
        if (now - c->last_rx_ms > 2 * c->hb_in_ms + 1000)
            tw_stomp_error(c, "no heart-beat from the client in time", NULL, WS_CLOSE_POLICY);
        return;
    }
    if (now - c->last_rx_ms >= s->ws_idle_timeout * 1000) {
        tw_ws_close(c, WS_CLOSE_GOING_AWAY, "idle timeout");
    } else if (now - c->last_rx_ms >= s->ws_idle_timeout * 500 && c->ping_ms <= c->last_rx_ms) {
        tw_ws_send(c, WS_OP_PING, "", 0);
        c->ping_ms = now;
    }
}

/* ---- fan-out -------------------------------------------------------------- */

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

void tw_deliver(void *inst, const char *destination, chatd_msg *msg)
{
    tw_server *srv = inst;
    struct lh_entry *e = lh_table_lookup_entry(srv->dests, destination);
    if (!e) return;
    tw_dest *d = (tw_dest *)lh_entry_v(e);
    size_t jlen = 0;
    const char *json = srv->api->msg_json(msg, &jlen);
    if (!json) {
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "no JSON for message %" PRIu64 " (out of memory)",
                      srv->api->msg_id(msg));
        return;
    }
    struct shared_body *b = malloc(sizeof(*b));
    if (!b) {
        srv->api->log(srv->ctx, CHATD_LOG_ERROR, "out of memory delivering to %s", destination);
        return;
    }
    b->api = srv->api;
    b->msg = srv->api->msg_ref(msg);
    b->refs = 1;
    uint64_t id = srv->api->msg_id(msg);
    uint64_t sent = 0, nslow = 0;
    for (tw_sub *s = d->head; s; s = s->dnext) {
        tw_conn *c = s->c;
        if (c->closed || c->closing || c->st != TW_ST_CONNECTED || c->ws_close_sent) continue;
        char sid[2 * TW_MAX_ID + 1], hbuf[1024], ackh[64] = "";
        stomp_escape(sid, sizeof(sid), s->id, c->version);
        if (s->ack != TW_ACK_AUTO)
            snprintf(ackh, sizeof(ackh), "ack:%" PRIu64 "-%" PRIu64 "\n", id, ++c->ack_serial);
        int hl = snprintf(hbuf, sizeof(hbuf),
                          "MESSAGE\ndestination:%s\nmessage-id:%" PRIu64 "\nsubscription:%s\n"
                          "content-type:application/json\ncontent-length:%zu\n%s\n",
                          d->name, id, sid, jlen, ackh);
        if (hl < 0 || (size_t)hl >= sizeof(hbuf)) continue;
        uint8_t wh[10];
        size_t whl = ws_frame_header(wh, WS_OP_TEXT, 1, (uint64_t)hl + jlen + 1);
        struct evbuffer *out = tw_conn_out(c);
        b->refs++;
        if (evbuffer_add(out, wh, whl) != 0 || evbuffer_add(out, hbuf, (size_t)hl) != 0 ||
            evbuffer_add_reference(out, json, jlen, body_cleanup, b) != 0) {
            b->refs--;
            c->slow = 1;
            nslow++;
            continue;
        }
        if (evbuffer_add(out, "", 1) != 0 || tw_conn_over_limit(c)) {
            c->slow = 1;
            nslow++;
            continue;
        }
        c->last_tx_ms = srv->api->now_ms();
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
