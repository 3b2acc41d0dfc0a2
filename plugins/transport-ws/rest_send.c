/*
 * rest_send.c - POST /api/rooms/{roomId}/messages of transport-ws: send a
 * chat message over HTTP, for bots and integrations (docs/delivery.md).
 *
 *   body {"message":"..."}, optional header Idempotency-Key (the STOMP
 *   idempotency-key: 1 to 128 visible ASCII characters)
 *   201  the message JSON with its room "cursor", once the queue says durable
 *   200  the same key again (same member, within idempotency_window): the
 *        original message, nothing published
 *   400  bad body, empty text, invalid UTF-8, malformed key (or two key lines)
 *   401  not logged in; 403 not a member of the room; 404 unknown member
 *   413  text over max_message_bytes; 415 body not application/json
 *   429  publish_rate or a bound reached (Retry-After: 1); 503 stopping
 * The publish goes through the core like a STOMP SEND, so the rate limits,
 * filters and the RECEIPT's durability promise are the same.
 */
#include "config.h"

#include "tw.h"

#include <event2/buffer.h>

#include <inttypes.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct send_op {
    tw_conn *c;
    char room[128];
    char *text;
    size_t len;
    char *key;
};

static void send_op_free(struct send_op *op)
{
    tw_conn *c = op->c;
    if (!c->closed) {
        tw_http_done(c);
        tw_conn_kick(c);
    }
    free(op->text);
    free(op->key);
    free(op);
    tw_conn_unref(c);
}

static void send_cb(void *arg, chatd_status st, const char *reason, chatd_msg *msg)
{
    struct send_op *op = arg;
    tw_conn *c = op->c;
    if (!c->closed) {
        const chatd_api *api = c->srv->api;
        if (st == CHATD_OK || (st == CHATD_ERR_EXISTS && msg)) {
            /* the message JSON with its room cursor, as history items have */
            char dest[sizeof(CHATD_DEST_ROOM_PREFIX) + CHATD_ROOM_ID_MAX];
            const char *room = api->msg_room(msg);
            struct evbuffer *b = evbuffer_new();
            snprintf(dest, sizeof(dest), "%s%s", CHATD_DEST_ROOM_PREFIX, room ? room : "");
            if (b && room && tw_msg_json_cursor(api, dest, msg, b, NULL) == 0)
                tw_http_respond_buffer(c, st == CHATD_OK ? 201 : 200, "application/json",
                                       "Cache-Control: no-store\r\n", b);
            else
                tw_http_error(c, 503, "out of memory");
            if (b) evbuffer_free(b);
        } else if (st == CHATD_ERR_BUSY) {
            char body[320];
            int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}",
                             reason ? reason : "busy, retry later");
            tw_http_respond(c, 429, "application/json",
                            "Cache-Control: no-store\r\nRetry-After: 1\r\n", body,
                            n > 0 && (size_t)n < sizeof(body) ? (size_t)n : 0);
        } else {
            tw_http_error(c, tw_status_http(st), reason ? reason : api->status_str(st));
        }
    }
    send_op_free(op);
}

static void send_auth_cb(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    struct send_op *op = arg;
    tw_conn *c = op->c;
    if (c->closed) {
        send_op_free(op);
        return;
    }
    if (st != CHATD_OK || n < 1) {
        tw_http_error(c, 401, "authentication required: log in first");
        send_op_free(op);
        return;
    }
    chatd_msg_fields f = {
        .size = sizeof(f),
        .kind = CHATD_MSG_CHAT,
        .room_id = op->room,
        .writer_id = rows[0].id,
        .writer = rows[0].login_id,
        .text = op->text,
        .text_len = op->len,
        .idem_key = op->key,
    };
    c->srv->api->publish(c->srv->ctx, &f, send_cb, op); /* copies the fields */
}

void tw_rest_send(tw_conn *c, const http_request *req, const char *room)
{
    const chatd_api *api = c->srv->api;
    json_object *o = tw_rest_body_json(c, req);
    if (!o) {
        tw_http_done(c);
        return;
    }
    size_t len = 0;
    const char *text = tw_json_str(o, "message", &len);
    const char *key = http_request_header(req, "Idempotency-Key");
    int64_t max = api->core_limit(c->srv->ctx, "max_message_bytes");
    int status = 0;
    const char *why = NULL;
    if (!text) {
        status = 400;
        why = "message is a required string (without NUL)";
    } else if (len == 0) {
        status = 400;
        why = "empty message";
    } else if (max > 0 && len > (size_t)max) {
        status = 413;
        why = "message too long (over max_message_bytes)";
    } else if (key && http_request_header_lines(req, "Idempotency-Key") > 1) {
        /* one value: repeated lines combine into "a, b" (RFC 9110 5.3), no key */
        status = 400;
        why = "malformed idempotency key: Idempotency-Key given more than once";
    }
    struct send_op *op = status ? NULL : calloc(1, sizeof(*op));
    if (op) {
        op->text = malloc(len + 1);
        op->key = key ? strdup(key) : NULL;
        if (!op->text || (key && !op->key)) {
            free(op->text);
            free(op->key);
            free(op);
            op = NULL;
        }
    }
    if (!op) {
        json_object_put(o);
        tw_http_error(c, status ? status : 503, status ? why : "out of memory");
        tw_http_done(c);
        return;
    }
    memcpy(op->text, text, len);
    op->text[len] = '\0';
    op->len = len;
    json_object_put(o);
    snprintf(op->room, sizeof(op->room), "%s", room);
    op->c = c;
    tw_conn_ref(c);
    int from_cookie = 0;
    char *token = tw_request_token(req, &from_cookie);
    if (!token) {
        tw_http_error(c, 401, "authentication required: log in first");
        send_op_free(op);
        return;
    }
    api->authenticate(c->srv->ctx, token, send_auth_cb, op);
    free(token);
}
