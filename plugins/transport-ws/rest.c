/*
 * rest.c - the REST API of transport-ws (JSON through json-c): members,
 * login/logout with the chatd_session cookie, the member's rooms, room
 * history pages, /healthz and /metrics. Every call that needs the core is
 * asynchronous: the connection stops reading until the answer is written.
 */
#include "config.h"

#include "tw.h"

#include <event2/buffer.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { OP_ME = 1, OP_MEMBERS, OP_ROOMS, OP_HISTORY };

struct rest_op {
    tw_conn *c;
    int kind;
    int64_t member_id;
    char room[128];
    uint64_t before;
    unsigned limit;
    char after[TW_CURSOR_MAX + 1]; /* after=<cursor>: page forward; "" when absent */
    uint32_t retry_after;          /* seconds, set by the core with CHATD_ERR_BUSY */
    tw_page page;                  /* GET /api/members, /api/rooms: the page asked for */
    struct evbuffer *fwd_page;     /* a full forward history page, waiting for its look-ahead */
    char fwd_next[TW_CURSOR_MAX];  /* ... and the cursor of its last item */
};

int tw_status_http(chatd_status st)
{
    switch (st) {
    case CHATD_OK:
        return 200;
    case CHATD_REJECT:
        return 422;
    case CHATD_ERR_INVALID:
        return 400;
    case CHATD_ERR_AUTH:
        return 401;
    case CHATD_ERR_FORBIDDEN:
        return 403;
    case CHATD_ERR_NOTFOUND:
        return 404;
    case CHATD_ERR_EXISTS:
        return 409;
    case CHATD_ERR_BUSY:
        return 429;
    case CHATD_ERR_UNAVAILABLE:
        return 503;
    default:
        return 500;
    }
}

/* ---- request helpers ------------------------------------------------------ */

char *tw_cookie_get(const char *cookies, const char *name)
{
    size_t nl = strlen(name);
    const char *s = cookies;
    while (s && *s) {
        while (*s == ' ' || *s == ';' || *s == '\t')
            s++;
        const char *end = strchr(s, ';');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len > nl && strncmp(s, name, nl) == 0 && s[nl] == '=') {
            const char *v = s + nl + 1;
            size_t vl = len - nl - 1;
            while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
                vl--;
            if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
                v++;
                vl -= 2;
            }
            if (vl == 0) return NULL;
            return strndup(v, vl);
        }
        s = end;
    }
    return NULL;
}

char *tw_request_token(const http_request *req, int *from_cookie)
{
    const char *auth = http_request_header(req, "Authorization");
    *from_cookie = 0;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        return *t ? strdup(t) : NULL;
    }
    const char *cookies = http_request_header(req, "Cookie");
    if (!cookies) return NULL;
    char *t = tw_cookie_get(cookies, "chatd_session");
    *from_cookie = t != NULL;
    return t;
}

/* Value of `key` in a query string, percent-decoded into out. 1 found,
 * 0 absent, -1 malformed. */
int tw_query_get(const char *q, const char *key, char *out, size_t outsz)
{
    size_t kl = strlen(key);
    const char *s = q;
    while (s && *s) {
        const char *end = strchr(s, '&');
        size_t len = end ? (size_t)(end - s) : strlen(s);
        if (len >= kl && strncmp(s, key, kl) == 0 && (len == kl || s[kl] == '=')) {
            const char *v = len == kl ? s + kl : s + kl + 1;
            size_t vl = len == kl ? 0 : len - kl - 1;
            return http_percent_decode(v, vl, out, outsz) < 0 ? -1 : 1;
        }
        s = end ? end + 1 : NULL;
    }
    return 0;
}

/* Decimal `key` of the query in [lo, hi] into *out: 1 found, 0 absent or
 * empty, -1 malformed or out of range. */
static int query_u64(const char *q, const char *key, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char v[32];
    int rc = tw_query_get(q, key, v, sizeof(v));
    if (rc <= 0) return rc;
    if (!*v) return 0;
    uint64_t x;
    if (tw_parse_u64(v, &x) != 0 || x < lo || x > hi) return -1;
    *out = x;
    return 1;
}

/* ---- responses ------------------------------------------------------------ */

static void respond_json(tw_conn *c, int status, json_object *o, const char *extra)
{
    size_t len = 0;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    char hdrs[1024];
    snprintf(hdrs, sizeof(hdrs), "Cache-Control: no-store\r\n%s", extra ? extra : "");
    if (!s) {
        tw_http_error(c, 500, "out of memory");
        return;
    }
    tw_http_respond(c, status, "application/json", hdrs, s, len);
}

static void respond_status(tw_conn *c, chatd_status st, const char *msg)
{
    tw_http_error(c, tw_status_http(st), msg ? msg : c->srv->api->status_str(st));
}

static json_object *member_json(const chatd_member *m)
{
    json_object *o = json_object_new_object();
    if (!o) return NULL;
    json_object_object_add(o, "id", json_object_new_int64(m->id));
    json_object_object_add(o, "loginId", json_object_new_string(m->login_id ? m->login_id : ""));
    json_object_object_add(o, "name", json_object_new_string(m->name ? m->name : ""));
    return o;
}

static void op_finish(struct rest_op *op)
{
    tw_conn *c = op->c;
    if (!c->closed) {
        tw_http_done(c);
        tw_conn_kick(c);
    }
    free(op);
    tw_conn_unref(c);
}

static struct rest_op *op_new(tw_conn *c, int kind)
{
    struct rest_op *op = calloc(1, sizeof(*op));
    if (!op) return NULL;
    op->c = c;
    op->kind = kind;
    tw_conn_ref(c);
    return op;
}

/* RFC 8259 where json-c's strict mode is lenient: no raw control character
 * (U+0000..U+001F) inside a string (section 7), and outside strings only
 * structure, numbers and the literals true, false, null (json-c takes NaN). */
static int json_text_plain(const char *s, size_t len)
{
    int in_str = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (in_str) {
            if (ch < 0x20) return 0;
            if (ch == '\\')
                i++; /* the escaped character; json-c checks the escape */
            else if (ch == '"')
                in_str = 0;
        } else if (ch == '"') {
            in_str = 1;
        } else if (ch == '\0' || !strchr(" \t\r\n{}[],:-+.0123456789eEtrufalsn", ch)) {
            return 0;
        }
    }
    return 1;
}

json_object *tw_json_parse_object(const char *s, size_t len, int *oom)
{
    *oom = 0;
    if (len > INT_MAX || !json_text_plain(s, len)) return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        *oom = 1;
        return NULL;
    }
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, s, (int)len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);
    while (end < len && s[end] && strchr(" \t\r\n", s[end]))
        end++;
    if (!o || e != json_tokener_success || end != len ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return NULL;
    }
    return o;
}

/* Content-Type application/json, with or without parameters (RFC 9110
 * 8.3.1: type and subtype without case, then ";" or the end). */
static int content_type_json(const char *ct)
{
    if (!ct || strncasecmp(ct, "application/json", 16) != 0) return 0;
    ct += 16;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* parse the JSON object body of a POST; responds and returns NULL on error */
json_object *tw_rest_body_json(tw_conn *c, const http_request *req)
{
    if (!content_type_json(http_request_header(req, "Content-Type"))) {
        tw_http_error(c, 415, "send the body as Content-Type: application/json");
        return NULL;
    }
    int oom;
    json_object *o = tw_json_parse_object(req->body, req->body_len, &oom);
    if (!o)
        tw_http_error(c, oom ? 503 : 400, oom ? "out of memory" : "the body must be a JSON object");
    return o;
}

/* ---- POST /api/members, /api/login: throttled password hashing ------------- */

/* 429 with the core's Retry-After (1 s when it gave none). */
static void throttled(tw_conn *c, uint32_t retry_after)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_after ? retry_after : 1);
    tw_http_error_extra(c, 429, extra, "too many attempts: retry later");
}

/* The client's address without port, from c->peer ("host:port#serial"). */
static void peer_host(const tw_conn *c, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", c->peer);
    char *colon = strrchr(buf, ':');
    if (colon) *colon = '\0';
}

/* Has the core the address-aware calls of ABI 1.2 (member_register2, login2)? */
static int has_auth2(const chatd_api *api)
{
    return CHATD_HAS(chatd_api, api, login2);
}

static void register_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (!c->closed) {
        if (st == CHATD_OK && n > 0) {
            json_object *o = member_json(&rows[0]);
            respond_json(c, 201, o, NULL);
            json_object_put(o);
        } else if (st == CHATD_ERR_EXISTS) {
            tw_http_error(c, 409, "that login id is taken");
        } else if (st == CHATD_ERR_INVALID) {
            tw_http_error(c, 400, "invalid loginId, name or password");
        } else if (st == CHATD_ERR_BUSY) {
            throttled(c, op->retry_after);
        } else {
            respond_status(c, st == CHATD_OK ? CHATD_ERR_INTERNAL : st, NULL);
        }
    }
    op_finish(op);
}

/* The cookie attribute "; Secure" on a TLS connection or with cookie_secure
 * (behind a TLS-terminating proxy), else "". */
static const char *cookie_secure(const tw_conn *c)
{
    return c->tls || c->srv->cookie_secure ? "; Secure" : "";
}

static void login_cb(void *arg, chatd_status st, const char *token, const chatd_member *m)
{
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (!c->closed) {
        if (st == CHATD_OK && token && m) {
            json_object *o = json_object_new_object();
            json_object_object_add(o, "token", json_object_new_string(token));
            json_object_object_add(o, "member", member_json(m));
            char cookie[256];
            snprintf(cookie, sizeof(cookie),
                     "Set-Cookie: chatd_session=%s; HttpOnly; SameSite=Strict; Path=/%s\r\n", token,
                     cookie_secure(c));
            respond_json(c, 200, o, cookie);
            json_object_put(o);
        } else if (st == CHATD_ERR_AUTH || st == CHATD_ERR_NOTFOUND) {
            tw_http_error(c, 401, "wrong login id or password");
        } else if (st == CHATD_ERR_BUSY) {
            throttled(c, op->retry_after);
        } else {
            respond_status(c, st == CHATD_OK ? CHATD_ERR_INTERNAL : st, NULL);
        }
    }
    op_finish(op);
}

static void logout_cb(void *arg, chatd_status st)
{
    (void)st;
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (!c->closed) {
        char cookie[160];
        snprintf(cookie, sizeof(cookie),
                 "Cache-Control: no-store\r\nSet-Cookie: chatd_session=; HttpOnly; "
                 "SameSite=Strict; Path=/; Max-Age=0%s\r\n",
                 cookie_secure(c));
        tw_http_respond(c, 204, NULL, cookie, NULL, 0);
    }
    op_finish(op);
}

/* ---- authenticated GETs --------------------------------------------------- */

static json_object *room_json(const chatd_api *api, const chatd_room_summary *r)
{
    json_object *o = json_object_new_object(), *peer = json_object_new_object();
    if (!o || !peer) {
        json_object_put(o);
        json_object_put(peer);
        return NULL;
    }
    char ts[32], id[24], rd[24];
    json_object_object_add(peer, "id", json_object_new_int64(r->peer_id));
    json_object_object_add(peer, "loginId",
                           json_object_new_string(r->peer_login ? r->peer_login : ""));
    json_object_object_add(peer, "name", json_object_new_string(r->peer_name ? r->peer_name : ""));
    json_object_object_add(o, "roomId", json_object_new_string(r->room_id));
    json_object_object_add(o, "peer", peer);
    json_object_object_add(o, "lastMessage",
                           json_object_new_string(r->last_message ? r->last_message : ""));
    snprintf(id, sizeof(id), "%" PRIu64, r->last_msg_id);
    json_object_object_add(o, "lastMessageId", r->last_msg_id ? json_object_new_string(id) : NULL);
    if (r->last_ms > 0) {
        api->time_format(r->last_ms, ts, sizeof(ts));
        json_object_object_add(o, "lastTimestamp", json_object_new_string(ts));
    } else {
        json_object_object_add(o, "lastTimestamp", NULL);
    }
    json_object_object_add(o, "unread", json_object_new_int64(r->unread));
    snprintf(rd, sizeof(rd), "%" PRIu64, r->last_read_id);
    json_object_object_add(o, "lastReadId", r->last_read_id ? json_object_new_string(rd) : NULL);
    return o;
}

/* Answer a list callback: the error, or a JSON array of the page's rows
 * (idx[0..k) of rows) with a Link header when there is a next page. */
static void respond_page(struct rest_op *op, chatd_status st, const void *rows, const size_t *idx,
                         size_t k, int more,
                         json_object *(*row)(const chatd_api *api, const void *rows, size_t i),
                         const char *base, const char *last)
{
    tw_conn *c = op->c;
    if (!c->closed) {
        if (st != CHATD_OK) {
            respond_status(c, st, NULL);
        } else {
            json_object *a = json_object_new_array();
            for (size_t i = 0; a && i < k; i++)
                json_object_array_add(a, row(c->srv->api, rows, idx[i]));
            char link[3 * (TW_PAGE_AFTER_MAX + TW_PAGE_Q_MAX) + 96] = "";
            if (more && last) tw_page_link(&op->page, base, last, link, sizeof(link));
            if (a)
                respond_json(c, 200, a, link);
            else
                tw_http_error(c, 503, "out of memory");
            json_object_put(a);
        }
    }
    op_finish(op);
}

static json_object *member_row(const chatd_api *api, const void *rows, size_t i)
{
    (void)api;
    return member_json(CHATD_ROW(chatd_member, (const chatd_member *)rows, i));
}

static json_object *room_row(const chatd_api *api, const void *rows, size_t i)
{
    return room_json(api, CHATD_ROW(chatd_room_summary, (const chatd_room_summary *)rows, i));
}

/* One page asked of chatd_api.member_page with one row more than shown. */
static void member_page_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct rest_op *op = arg;
    size_t idx[TW_PAGE_CAP], k = 0;
    char last[24] = "";
    if (st == CHATD_OK)
        for (; k < n && k < op->page.limit; k++)
            idx[k] = k;
    if (k) snprintf(last, sizeof(last), "%" PRId64, CHATD_ROW(chatd_member, rows, k - 1)->id);
    respond_page(op, st, rows, idx, k, st == CHATD_OK && n > k, member_row, "/api/members",
                 k ? last : NULL);
}

static void members_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct rest_op *op = arg;
    size_t idx[TW_PAGE_CAP], k = 0;
    int more = 0;
    char last[24] = "";
    if (st == CHATD_OK) k = tw_page_members(&op->page, rows, n, idx, &more);
    if (k) snprintf(last, sizeof(last), "%" PRId64, CHATD_ROW(chatd_member, rows, idx[k - 1])->id);
    respond_page(op, st, rows, idx, k, more, member_row, "/api/members", k ? last : NULL);
}

static void rooms_cb(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n)
{
    struct rest_op *op = arg;
    size_t idx[TW_PAGE_CAP], k = 0;
    int more = 0;
    if (st == CHATD_OK) k = tw_page_rooms(&op->page, rows, n, idx, &more);
    respond_page(op, st, rows, idx, k, more, room_row, "/api/rooms",
                 k ? CHATD_ROW(chatd_room_summary, rows, idx[k - 1])->room_id : NULL);
}

/* Answer a history page: b holds it up to the last item; next is the cursor
 * or id of the next page, NULL for none. */
static void history_respond(tw_conn *c, struct evbuffer *b, const char *next)
{
    int rc = -1;
    if (b && next)
        rc = evbuffer_add_printf(b, "],\"next\":\"%s\"}", next) < 0 ? -1 : 0;
    else if (b)
        rc = evbuffer_add(b, "],\"next\":null}", 14);
    if (rc == 0)
        tw_http_respond_buffer(c, 200, "application/json", "Cache-Control: no-store\r\n", b);
    else
        tw_http_error(c, 503, "out of memory");
}

/* The look-ahead after a full forward page: its next is the last item's
 * cursor when a message follows (or the look-ahead failed: the next page
 * tells), null when the page reached the newest message. */
static void history_more_cb(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n,
                            uint64_t next)
{
    (void)msgs;
    (void)next;
    struct rest_op *op = arg;
    struct evbuffer *b = op->fwd_page;
    op->fwd_page = NULL;
    if (!op->c->closed) history_respond(op->c, b, st != CHATD_OK || n > 0 ? op->fwd_next : NULL);
    evbuffer_free(b);
    op_finish(op);
}

static void history_cb(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n, uint64_t next)
{
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (!c->closed) {
        const chatd_api *api = c->srv->api; /* srv may be gone once c is closed */
        if (st != CHATD_OK) {
            respond_status(c, st, NULL);
        } else {
            /* the bodies are the messages' own JSON wire form, spliced with the
             * room cursor of each added before the closing brace */
            char dest[sizeof(CHATD_DEST_ROOM_PREFIX) + sizeof(op->room)], cur[TW_CURSOR_MAX];
            char id[24];
            snprintf(dest, sizeof(dest), "%s%s", CHATD_DEST_ROOM_PREFIX, op->room);
            struct evbuffer *b = evbuffer_new();
            int rc = b ? evbuffer_add(b, "{\"messages\":[", 13) : -1;
            for (size_t i = 0; rc == 0 && i < n; i++) {
                if (i > 0) rc = evbuffer_add(b, ",", 1);
                if (rc == 0) rc = tw_msg_json_cursor(api, dest, msgs[i], b, cur);
            }
            if (rc != 0) {
                tw_http_error(c, 503, "out of memory");
            } else if (op->after[0] && n == op->limit) {
                /* forward and full: is there a message after the last? */
                op->fwd_page = b;
                b = NULL;
                snprintf(op->fwd_next, sizeof(op->fwd_next), "%s", cur);
                api->replay(c->srv->ctx, op->member_id, op->room, api->msg_pos(msgs[n - 1]), 1,
                            history_more_cb, op);
                return;
            } else if (op->after[0]) { /* forward, and the newest message is in it */
                history_respond(c, b, NULL);
            } else { /* backward: the store's next older id */
                snprintf(id, sizeof(id), "%" PRIu64, next);
                history_respond(c, b, next ? id : NULL);
            }
            if (b) evbuffer_free(b);
        }
    }
    op_finish(op);
}

static void history_room_cb(void *arg, chatd_status st, const char *room_id, int64_t peer)
{
    (void)peer;
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (c->closed || st != CHATD_OK) {
        if (!c->closed) respond_status(c, st, c->srv->api->room_refusal(st));
        op_finish(op);
        return;
    }
    snprintf(op->room, sizeof(op->room), "%s", room_id);
    if (op->after[0]) {
        char dest[sizeof(CHATD_DEST_ROOM_PREFIX) + sizeof(op->room)];
        uint64_t after;
        snprintf(dest, sizeof(dest), "%s%s", CHATD_DEST_ROOM_PREFIX, op->room);
        if (tw_cursor_parse(dest, op->after, &after) != 0) {
            tw_http_error(c, 400, "after must be a cursor of this room (the cursor of a message)");
            op_finish(op);
            return;
        }
        c->srv->api->replay(c->srv->ctx, op->member_id, op->room, after, op->limit, history_cb, op);
        return;
    }
    c->srv->api->history(c->srv->ctx, op->member_id, op->room, op->before, op->limit, history_cb,
                         op);
}

static void rest_auth_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct rest_op *op = arg;
    tw_conn *c = op->c;
    if (c->closed) {
        op_finish(op);
        return;
    }
    const chatd_api *api = c->srv->api;
    chatd_ctx *ctx = c->srv->ctx;
    if (st != CHATD_OK || n < 1) {
        tw_http_error(c, 401, "authentication required: log in first");
        op_finish(op);
        return;
    }
    op->member_id = rows[0].id;
    switch (op->kind) {
    case OP_ME: {
        json_object *o = member_json(&rows[0]);
        respond_json(c, 200, o, NULL);
        json_object_put(o);
        op_finish(op);
        return;
    }
    case OP_MEMBERS:
        if (CHATD_HAS(chatd_api, api, member_page) && api->member_page) /* ABI 1.4 */
            api->member_page(ctx, op->page.after_id, op->page.q, op->page.limit + 1, member_page_cb,
                             op);
        else
            api->member_list(ctx, members_cb, op);
        return;
    case OP_ROOMS:
        api->room_list(ctx, op->member_id, rooms_cb, op);
        return;
    case OP_HISTORY:
        api->room_check(ctx, op->member_id, op->room, history_room_cb, op);
        return;
    default:
        tw_http_error(c, 500, "internal error");
        op_finish(op);
    }
}

/* ---- /metrics ------------------------------------------------------------- */

static void metrics_write(void *arg, const char *data, size_t len)
{
    evbuffer_add(arg, data, len);
}

/* ---- router --------------------------------------------------------------- */

static void start_authed(tw_conn *c, const http_request *req, struct rest_op *op)
{
    int from_cookie = 0;
    char *token = tw_request_token(req, &from_cookie);
    if (!token) {
        tw_http_error(c, 401, "authentication required: log in first");
        op_finish(op);
        return;
    }
    c->srv->api->authenticate(c->srv->ctx, token, rest_auth_cb, op);
    free(token);
}

/* Answer an error for the current request; returns 1 (handled). */
static int reply_error(tw_conn *c, int status, const char *msg)
{
    tw_http_error(c, status, msg);
    tw_http_done(c);
    return 1;
}

/* The JSON body of a POST and its string members keys[0..n) into vals
 * (each non-empty when nonempty), and the operation that will answer it.
 * On any failure the error is answered and NULL returned; otherwise the
 * caller owns *o (put it after using vals). */
static struct rest_op *post_begin(tw_conn *c, const http_request *req, json_object **o,
                                  const char *const *keys, const char **vals, size_t n,
                                  int nonempty, const char *missing)
{
    if (!(*o = tw_rest_body_json(c, req))) {
        tw_http_done(c);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        vals[i] = tw_json_str(*o, keys[i], NULL);
        if (!vals[i] || (nonempty && !*vals[i])) {
            json_object_put(*o);
            reply_error(c, 400, missing);
            return NULL;
        }
    }
    struct rest_op *op = op_new(c, 0);
    if (!op) {
        json_object_put(*o);
        reply_error(c, 503, "out of memory");
    }
    return op;
}

static void post_register(tw_conn *c, const http_request *req)
{
    static const char *const keys[] = {"loginId", "name", "password"};
    const char *v[3];
    json_object *o;
    struct rest_op *op = post_begin(
        c, req, &o, keys, v, 3, 1, "loginId, name and password are required strings (without NUL)");
    if (!op) return;
    char host[64];
    peer_host(c, host, sizeof(host));
    if (has_auth2(c->srv->api))
        c->srv->api->member_register2(c->srv->ctx, v[0], v[1], v[2], host, &op->retry_after,
                                      register_cb, op);
    else
        c->srv->api->member_register(c->srv->ctx, v[0], v[1], v[2], register_cb, op);
    json_object_put(o);
}

static void post_login(tw_conn *c, const http_request *req)
{
    static const char *const keys[] = {"loginId", "password"};
    const char *v[2];
    json_object *o;
    struct rest_op *op =
        post_begin(c, req, &o, keys, v, 2, 0, "loginId and password are required strings");
    if (!op) return;
    char host[64];
    peer_host(c, host, sizeof(host));
    if (has_auth2(c->srv->api))
        c->srv->api->login2(c->srv->ctx, v[0], v[1], host, &op->retry_after, login_cb, op);
    else
        c->srv->api->login(c->srv->ctx, v[0], v[1], login_cb, op);
    json_object_put(o);
}

static void post_logout(tw_conn *c, const http_request *req)
{
    tw_server *s = c->srv;
    int from_cookie = 0;
    char *token = tw_request_token(req, &from_cookie);
    const char *origin = http_request_header(req, "Origin");
    if (token && from_cookie && origin &&
        !tw_origin_allowed(s, origin, http_request_header(req, "Host"))) {
        /* a cross-site page may not end the session through the cookie */
        free(token);
        reply_error(c, 403, "Origin not allowed");
        return;
    }
    struct rest_op *op = op_new(c, 0);
    if (!op) {
        free(token);
        reply_error(c, 503, "out of memory");
        return;
    }
    if (token) {
        tw_sessions_end(s, token);
        s->api->logout(s->ctx, token, logout_cb, op);
    } else {
        logout_cb(op, CHATD_OK);
    }
    free(token);
}

int tw_rest_handle(tw_conn *c, const http_request *req, const char *path, const char *query)
{
    tw_server *s = c->srv;
    const chatd_api *api = s->api;
    int get = strcmp(req->method, "GET") == 0 || strcmp(req->method, "HEAD") == 0;
    int post = strcmp(req->method, "POST") == 0;

    if (strcmp(path, "/healthz") == 0) {
        if (!get) {
            tw_http_method_not_allowed(c, "GET, HEAD");
            return 1;
        }
        int up = api->healthy(s->ctx) && !s->stopping;
        const char *b = up ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}";
        tw_http_respond(c, up ? 200 : 503, "application/json", "Cache-Control: no-store\r\n", b,
                        strlen(b));
        tw_http_done(c);
        return 1;
    }
    if (strcmp(path, "/metrics") == 0) {
        if (!c->metrics) /* never on a public listener */
            return reply_error(c, 404, "not found (metrics are served on metrics_listen)");
        if (!get) {
            tw_http_method_not_allowed(c, "GET, HEAD");
            return 1;
        }
        struct evbuffer *b = evbuffer_new();
        if (!b) {
            tw_http_error(c, 503, "out of memory");
        } else {
            api->metrics_render(s->ctx, metrics_write, b);
            tw_http_respond_buffer(c, 200, "text/plain; version=0.0.4; charset=utf-8",
                                   "Cache-Control: no-store\r\n", b);
            evbuffer_free(b);
        }
        tw_http_done(c);
        return 1;
    }
    if (strncmp(path, "/api/", 5) != 0 && strcmp(path, "/api") != 0) return 0;

    if (strcmp(path, "/api/members") == 0 && post) {
        post_register(c, req);
        return 1;
    }
    if (strcmp(path, "/api/login") == 0 && post) {
        post_login(c, req);
        return 1;
    }
    if (strcmp(path, "/api/logout") == 0 && post) {
        post_logout(c, req);
        return 1;
    }
    int kind = 0;
    char room[128] = "";
    if (strcmp(path, "/api/me") == 0) {
        kind = OP_ME;
    } else if (strcmp(path, "/api/members") == 0) {
        kind = OP_MEMBERS;
    } else if (strcmp(path, "/api/rooms") == 0) {
        kind = OP_ROOMS;
    } else if (strncmp(path, "/api/rooms/", 11) == 0) {
        const char *seg = path + 11, *slash = strchr(seg, '/');
        if (slash && strcmp(slash, "/messages") == 0 && slash > seg &&
            http_percent_decode(seg, (size_t)(slash - seg), room, sizeof(room)) > 0)
            kind = OP_HISTORY;
    }
    if (!kind) {
        int known = strcmp(path, "/api/members") == 0 || strcmp(path, "/api/login") == 0 ||
                    strcmp(path, "/api/logout") == 0;
        if (known) {
            tw_http_method_not_allowed(c, strcmp(path, "/api/members") == 0 ? "GET, HEAD, POST"
                                                                            : "POST");
        } else {
            reply_error(c, 404, "no such API endpoint");
        }
        return 1;
    }
    if (post && kind == OP_HISTORY) {
        tw_rest_send(c, req, room);
        return 1;
    }
    if (!get) {
        tw_http_method_not_allowed(c, kind == OP_MEMBERS || kind == OP_HISTORY ? "GET, HEAD, POST"
                                                                               : "GET, HEAD");
        return 1;
    }
    struct rest_op *op = op_new(c, kind);
    if (!op) {
        return reply_error(c, 503, "out of memory");
    }
    if (kind == OP_MEMBERS || kind == OP_ROOMS) {
        const char *err = tw_page_parse(s, query, kind == OP_ROOMS, &op->page);
        if (err) {
            tw_http_error(c, 400, err);
            op_finish(op);
            return 1;
        }
    }
    if (kind == OP_HISTORY) {
        uint64_t v;
        snprintf(op->room, sizeof(op->room), "%s", room);
        if (query_u64(query, "before", 0, UINT64_MAX, &op->before) < 0) {
            tw_http_error(c, 400, "before must be a message id");
            op_finish(op);
            return 1;
        }
        int rc = query_u64(query, "limit", 1, CHATD_HISTORY_MAX, &v);
        if (rc < 0) {
            char m[48];
            snprintf(m, sizeof(m), "limit must be 1..%u", (unsigned)CHATD_HISTORY_MAX);
            tw_http_error(c, 400, m);
            op_finish(op);
            return 1;
        }
        op->limit = rc > 0 ? (unsigned)v : CHATD_HISTORY_DEFAULT;
        rc = tw_query_get(query, "after", op->after, sizeof(op->after));
        if (rc < 0 || (rc > 0 && !op->after[0]) || (rc > 0 && op->before)) {
            tw_http_error(c, 400,
                          rc < 0 || !op->after[0] ? "after must be a cursor"
                                                  : "give before or after, not both");
            op_finish(op);
            return 1;
        }
        if (rc == 0) op->after[0] = '\0';
    }
    start_authed(c, req, op);
    return 1;
}
