/*
 * stomp_session.c - the STOMP session of a transport-ws WebSocket: frame
 * output (escaping per version), ERROR-then-close and DISCONNECT after the
 * publishes in flight, CONNECT/STOMP with version and heart-beat
 * negotiation and authentication, SUBSCRIBE/UNSUBSCRIBE with room and side
 * permission checks, ACK/NACK, the command dispatch and the heart-beat
 * timer. SEND and transactions are in stomp_send.c, subscriptions and the
 * fan-out in subs.c.
 */
#include "config.h"

#include "tw.h"

#include <errno.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <json-c/linkhash.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ---- frame output and errors --------------------------------------------- */

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

void tw_stomp_send_frame(tw_conn *c, const char *cmd, const tw_hdr *h, size_t nh, const char *ctype,
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

void tw_stomp_receipt(tw_conn *c, const char *receipt)
{
    if (!receipt) return;
    tw_hdr h[] = {{"receipt-id", receipt}};
    tw_stomp_send_frame(c, "RECEIPT", h, 1, NULL, NULL, 0);
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
    tw_hdr h[] = {{"message", msg}, {"receipt-id", receipt}};
    tw_stomp_send_frame(c, "ERROR", h, 2, "text/plain", msg, strlen(msg));
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
    tw_stomp_receipt(c, receipt);
    c->st = TW_ST_DONE;
    tw_ws_close(c, WS_CLOSE_NORMAL, "bye");
}

/* The last publish in flight was answered: say what was waiting. */
void tw_stomp_finish_pending(tw_conn *c)
{
    int kind = c->pend_kind;
    c->pend_kind = 0;
    if (c->closed || c->closing) return;
    if (kind == TW_PEND_ERROR)
        error_now(c, c->pend_msg ? c->pend_msg : "error", c->pend_receipt, c->pend_code);
    else if (kind == TW_PEND_DISCONNECT)
        disconnect_now(c, c->pend_receipt);
}

void tw_stomp_shutdown(tw_conn *c)
{
    if (c->closed || c->closing) return;
    if (c->st == TW_ST_CONNECTED) {
        tw_stomp_error(c, "server shutting down", NULL, WS_CLOSE_GOING_AWAY);
    } else if (!c->pend_kind) { /* no session, or one already ended */
        tw_ws_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
    } /* else the pending ERROR or DISCONNECT closes it once answered */
}

/* ---- frame handlers ------------------------------------------------------- */

struct auth_req {
    tw_conn *c;
    char *login;
    char *token; /* kept by the session: a logout of it ends the session */
    int64_t cx, cy;
};

/* The highest STOMP version this connection may speak: the one its
 * WebSocket subprotocol names (v10.stomp, v11.stomp, v12.stomp in the IANA
 * WebSocket Subprotocol Name Registry), 1.2 when none was agreed. */
static int version_cap(const tw_conn *c)
{
    if (strncasecmp(c->subproto, "v10.", 4) == 0) return STOMP_V10;
    if (strncasecmp(c->subproto, "v11.", 4) == 0) return STOMP_V11;
    return STOMP_V12;
}

/* the highest version of accept-version that is at most cap; no header is
 * STOMP 1.0 (1.2 "Protocol Negotiation"); 0 when there is none in common */
static int pick_version(const char *accept, int cap)
{
    static const char *const names[] = {"1.0", "1.1", "1.2"};
    if (!accept) return STOMP_V10;
    for (int v = cap; v >= STOMP_V10; v--)
        if (http_has_token(accept, names[v - STOMP_V10])) return v;
    return 0;
}

static int64_t clamp_hb(const tw_server *s, int64_t ms)
{
    return ms < s->hb_min ? s->hb_min : ms > s->hb_max ? s->hb_max : ms;
}

static void token_hash(const char *token, char out[65]);

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
    if (srv->max_per_member > 0) {
        int64_t open = 0;
        for (tw_conn *o = srv->conns; o; o = o->next)
            if (o != c && !o->closed && o->st == TW_ST_CONNECTED && o->member_id == rows[0].id)
                open++;
        if (open >= srv->max_per_member) {
            char m[128];
            snprintf(m, sizeof(m),
                     "too many sessions for this member: max_connections_per_member = %lld",
                     (long long)srv->max_per_member);
            srv->api->counter_add(srv->ctx, "chatd_ws_refused_sessions_total", 1);
            tw_stomp_error(c, m, NULL, WS_CLOSE_POLICY);
            goto out;
        }
    }
    c->member_id = rows[0].id;
    c->session_token = a->token;
    a->token = NULL;
    token_hash(c->session_token, c->session_hash);
    c->st = TW_ST_CONNECTED;
    tw_ws_limits(c); /* max_frame from now on */
    srv->nsessions++;
    srv->api->gauge_set(srv->ctx, "chatd_ws_sessions", srv->nsessions);
    char hb[48] = "", sess[48];
    if (c->version >= STOMP_V11) {
        int64_t sx = srv->hb_send, sy = srv->hb_recv;
        /* STOMP 1.2 negotiation (the larger of the two). The client's
         * promise is clamped to [heartbeat_min, heartbeat_max]: a promise of
         * 10^15 ms is held to heartbeat_max, and nothing overflows. Our own
         * beats are only capped at heartbeat_max (more often than asked is
         * allowed): never rarer than max(sx, cy), which CONNECTED promised,
         * even when heartbeat_send is below heartbeat_min */
        int64_t out = sx > a->cy ? sx : a->cy;
        c->hb_out_ms = sx && a->cy ? (out > srv->hb_max ? srv->hb_max : out) : 0;
        c->hb_in_ms = sy && a->cx ? clamp_hb(srv, sy > a->cx ? sy : a->cx) : 0;
        snprintf(hb, sizeof(hb), "%" PRId64 ",%" PRId64, sx, sy);
    }
    snprintf(sess, sizeof(sess), "%llx-%llx", (unsigned long long)srv->api->now_ms(),
             (unsigned long long)c->serial);
    tw_hdr h[] = {{"version", c->version == STOMP_V12   ? "1.2"
                              : c->version == STOMP_V11 ? "1.1"
                                                        : "1.0"},
                  {"heart-beat", c->version >= STOMP_V11 ? hb : NULL},
                  {"server", "chatd/" PACKAGE_VERSION},
                  {"session", sess},
                  {"user-name", c->login}};
    tw_stomp_send_frame(c, "CONNECTED", h, 5, NULL, NULL, 0);
    c->last_rx_ms = srv->api->now_ms();
    tw_schedule_tick(c);
    srv->api->log(srv->ctx, CHATD_LOG_DEBUG, "%s: STOMP session of %s (member %" PRId64 ")",
                  c->peer, c->login, c->member_id);
    tw_conn_kick(c);
out:
    free(a->login);
    free(a->token);
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
    int cap = version_cap(c);
    int v = pick_version(stomp_frame_header(f, "accept-version"), cap);
    if (!v) {
        /* the versions this connection supports, by its subprotocol */
        static const char *const list[] = {"1.0", "1.0,1.1", "1.0,1.1,1.2"};
        static const char *const text[] = {"Supported protocol versions are 1.0",
                                           "Supported protocol versions are 1.0 1.1",
                                           "Supported protocol versions are 1.0 1.1 1.2"};
        const char *msg = text[cap - STOMP_V10];
        c->version = STOMP_V12;
        tw_hdr h[] = {{"message", msg}, {"version", list[cap - STOMP_V10]}};
        tw_stomp_send_frame(c, "ERROR", h, 2, "text/plain", msg, strlen(msg));
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
        if (tw_parse_i64(a, &cx) || tw_parse_i64(b, &cy)) {
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
    if (!a || (login && !(a->login = strdup(login))) || !(a->token = strdup(token))) {
        if (a) free(a->login);
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

struct sub_req {
    tw_conn *c;
    char *id;
    char *receipt;
    char *resume; /* resume-after header, NULL when none */
    int ack;
};

#define TW_RESUME_REFUSAL                                                                          \
    "resume-after: malformed cursor, or a cursor of another destination (use the cursor header "   \
    "of a MESSAGE of this destination)"

#define TW_SIDE_UNRESUMABLE                                                                        \
    "resume-after: this side cursor cannot be resumed (the node's position streams did not fit "   \
    "in a cursor); subscribe without resume-after and reload the room list"

static void room_cb(void *arg, chatd_status st, const char *room_id, int64_t peer_id)
{
    (void)peer_id;
    struct sub_req *r = arg;
    tw_conn *c = r->c;
    if (c->closed) goto out;
    c->busy = 0;
    if (st != CHATD_OK) {
        tw_stomp_error(c, c->srv->api->room_refusal(st), r->receipt,
                       st == CHATD_ERR_INVALID ? WS_CLOSE_PROTOCOL : WS_CLOSE_POLICY);
        goto out;
    }
    char dest[128];
    snprintf(dest, sizeof(dest), CHATD_DEST_ROOM_PREFIX "%s", room_id);
    if (tw_sub_find(c, r->id)) {
        tw_stomp_error(c, "subscription id already in use", r->receipt, WS_CLOSE_PROTOCOL);
        goto out;
    }
    uint64_t after = 0;
    if (r->resume && tw_cursor_parse(dest, r->resume, &after) != 0) {
        tw_stomp_error(c, TW_RESUME_REFUSAL, r->receipt, WS_CLOSE_POLICY);
        goto out;
    }
    if (tw_sub_add(c, dest, r->id, r->ack) != 0) {
        tw_stomp_error(c, "out of memory", r->receipt, WS_CLOSE_INTERNAL);
        goto out;
    }
    tw_stomp_receipt(c, r->receipt);
    if (r->resume) tw_resume_begin(c->subs, after, NULL); /* the sub just added */
    tw_conn_kick(c);
out:
    free(r->id);
    free(r->receipt);
    free(r->resume);
    free(r);
    tw_conn_unref(c);
}

static void on_subscribe(tw_conn *c, const stomp_frame *f)
{
    tw_server *srv = c->srv;
    const char *dest = stomp_frame_header(f, "destination");
    const char *id = stomp_frame_header(f, "id");
    const char *resume = stomp_frame_header(f, "resume-after");
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
    if (tw_sub_find(c, id)) {
        tw_stomp_error(c, "subscription id already in use", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (c->nsubs >= srv->max_subscriptions) {
        tw_stomp_error(c, "too many subscriptions on this connection", receipt, WS_CLOSE_POLICY);
        return;
    }
    static const char side[] = CHATD_DEST_SIDE_PREFIX, room[] = CHATD_DEST_ROOM_PREFIX;
    if (strncmp(dest, side, sizeof(side) - 1) == 0) {
        int64_t who;
        char d[64];
        if (tw_parse_i64(dest + sizeof(side) - 1, &who) != 0 || who != c->member_id) {
            tw_stomp_error(c, "forbidden: you may subscribe only to your own side destination",
                           receipt, WS_CLOSE_POLICY);
            return;
        }
        snprintf(d, sizeof(d), "%s%" PRId64, side, who);
        tw_sidevec *vec = NULL;
        int prc = resume ? tw_side_parse(d, resume, &vec) : 0;
        if (prc != 0) {
            tw_stomp_error(c,
                           prc == -2   ? TW_SIDE_UNRESUMABLE
                           : prc == -3 ? "out of memory"
                                       : TW_RESUME_REFUSAL,
                           receipt, prc == -3 ? WS_CLOSE_INTERNAL : WS_CLOSE_POLICY);
            return;
        }
        if (tw_sub_add(c, d, id, ack) != 0) {
            free(vec);
            tw_stomp_error(c, "out of memory", receipt, WS_CLOSE_INTERNAL);
            return;
        }
        tw_stomp_receipt(c, receipt);
        if (vec) tw_resume_begin(c->subs, 0, vec); /* the sub just added */
        return;
    }
    if (strncmp(dest, room, sizeof(room) - 1) != 0) {
        tw_stomp_error(c,
                       "unknown destination: subscribe to " CHATD_DEST_ROOM_PREFIX
                       "{roomId} or " CHATD_DEST_SIDE_PREFIX "{memberId}",
                       receipt, WS_CLOSE_POLICY);
        return;
    }
    struct sub_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->id = strdup(id)) || (receipt && !(r->receipt = strdup(receipt))) ||
        (resume && !(r->resume = strdup(resume)))) {
        if (r) {
            free(r->id);
            free(r->receipt);
        }
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
        s = tw_sub_find(c, id);
    } else if (c->version == STOMP_V10 && stomp_frame_header(f, "destination")) {
        const char *d = stomp_frame_header(f, "destination");
        for (s = c->subs; s && strcmp(s->d->name, d) != 0; s = s->cnext)
            ;
    } else {
        tw_stomp_error(c, "UNSUBSCRIBE needs an id header", receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    if (s) tw_sub_remove(c, s);
    tw_stomp_receipt(c, receipt);
}

static void on_ack(tw_conn *c, const stomp_frame *f)
{
    const char *receipt = stomp_frame_header(f, "receipt");
    int v12 = c->version >= STOMP_V12;
    if (!stomp_frame_header(f, v12 ? "id" : "message-id")) {
        char m[64];
        snprintf(m, sizeof(m), "%s needs %s header", f->command, v12 ? "an id" : "a message-id");
        tw_stomp_error(c, m, receipt, WS_CLOSE_PROTOCOL);
        return;
    }
    /* Messages are durable before delivery and never redelivered here: an
     * acknowledgement only confirms the client saw them. */
    tw_stomp_receipt(c, receipt);
}

/* STOMP 1.2: header names and values are UTF-8. A binary WebSocket message
 * can carry anything; refuse it here, since headers are echoed in text frames
 * (receipt-id, subscription) that must be valid UTF-8 (RFC 6455 5.6). */
static int headers_utf8(const stomp_frame *f)
{
    for (size_t i = 0; i < f->nheaders; i++) {
        const stomp_header *h = &f->headers[i];
        if (!ws_utf8_valid((const uint8_t *)h->name, strlen(h->name)) ||
            !ws_utf8_valid((const uint8_t *)h->value, strlen(h->value)))
            return 0;
    }
    return 1;
}

void tw_stomp_frame(tw_conn *c, const stomp_frame *f)
{
    const char *cmd = f->command;
    if (!headers_utf8(f)) {
        tw_stomp_error(c, "header names and values must be UTF-8", NULL, WS_CLOSE_BAD_DATA);
        return;
    }
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
        tw_stomp_on_send(c, f);
    else if (strcmp(cmd, "SUBSCRIBE") == 0)
        on_subscribe(c, f);
    else if (strcmp(cmd, "UNSUBSCRIBE") == 0)
        on_unsubscribe(c, f);
    else if (strcmp(cmd, "ACK") == 0 || strcmp(cmd, "NACK") == 0)
        on_ack(c, f);
    else if (strcmp(cmd, "BEGIN") == 0)
        tw_stomp_on_begin(c, f);
    else if (strcmp(cmd, "COMMIT") == 0)
        tw_stomp_on_commit(c, f, 1);
    else if (strcmp(cmd, "ABORT") == 0)
        tw_stomp_on_commit(c, f, 0);
    else if (strcmp(cmd, "DISCONNECT") == 0) {
        if (!defer(c, TW_PEND_DISCONNECT, NULL, receipt, WS_CLOSE_NORMAL))
            disconnect_now(c, receipt);
    } else {
        char m[128];
        snprintf(m, sizeof(m), "unknown command %.64s", cmd);
        tw_stomp_error(c, m, receipt, WS_CLOSE_PROTOCOL);
    }
}

/* BLAKE2b-256 of the token in hex: the name the core and the store give the
 * session. */
static void token_hash(const char *token, char out[65])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(out, 65, h, sizeof(h));
}

/* A logout of token ends every STOMP session opened with it here. */
void tw_sessions_end(tw_server *s, const char *token)
{
    char hash[65];
    token_hash(token, hash);
    tw_sessions_end_hash(s, hash);
}

void tw_sessions_end_hash(tw_server *s, const char *token_hash)
{
    tw_conn *c = s->conns, *next;
    for (; c; c = next) {
        next = c->next; /* an ERROR may close c */
        if (c->mode == TW_MODE_WS && c->st == TW_ST_CONNECTED && c->session_token &&
            strcmp(c->session_hash, token_hash) == 0) {
            s->api->counter_add(s->ctx, "chatd_ws_sessions_ended_total", 1);
            tw_stomp_error(c, "session ended", NULL, WS_CLOSE_POLICY);
        }
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
    int64_t tx = tw_tx_oldest(c);
    if (tx && now - tx >= s->max_tx_age * 1000) {
        char m[96];
        snprintf(m, sizeof(m), "transaction open too long: max_tx_age = %llds",
                 (long long)s->max_tx_age);
        tw_stomp_error(c, m, NULL, WS_CLOSE_POLICY);
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
