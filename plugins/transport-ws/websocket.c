/*
 * websocket.c - the WebSocket side of a transport-ws connection: the
 * upgrade at /ws (RFC 6455 4.2), framing of our output, close frames, the
 * per-connection timer (CONNECT deadline, heart-beats, idle ping) and the
 * input loop that feeds whole messages to the STOMP parser.
 */
#include "config.h"

#include "tw.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- WebSocket output ----------------------------------------------------- */

/* Queue one unfragmented frame: data (len bytes) or, when payload is not
 * NULL, the whole of payload (moved, not copied). */
static void ws_queue(tw_conn *c, int opcode, const void *data, size_t len, struct evbuffer *payload)
{
    uint8_t h[10];
    if (c->closed || c->closing || c->ws_close_sent) return;
    if (payload) len = evbuffer_get_length(payload);
    size_t hl = ws_frame_header(h, opcode, 1, len);
    struct evbuffer *out = tw_conn_out(c);
    int rc = evbuffer_add(out, h, hl);
    if (rc == 0 && payload)
        rc = evbuffer_add_buffer(out, payload);
    else if (rc == 0 && len)
        rc = evbuffer_add(out, data, len);
    if (rc != 0) {
        c->srv->api->log(c->srv->ctx, CHATD_LOG_ERROR,
                         "%s: out of memory queueing a frame; closing the connection", c->peer);
        tw_conn_close(c);
        return;
    }
    c->last_tx_ms = c->srv->api->now_ms();
    tw_conn_flush_later(c);
}

void tw_ws_send(tw_conn *c, int opcode, const void *data, size_t len)
{
    ws_queue(c, opcode, data, len, NULL);
}

void tw_ws_send_buffer(tw_conn *c, int opcode, struct evbuffer *payload)
{
    ws_queue(c, opcode, NULL, 0, payload);
}

/* Send a close frame (once) and close the connection after the flush. */
void tw_ws_close(tw_conn *c, int code, const char *reason)
{
    uint8_t p[125];
    if (c->closed || c->closing) return;
    if (!c->ws_close_sent) {
        size_t n = ws_close_payload(p, code, reason);
        tw_ws_send(c, WS_OP_CLOSE, p, n);
        c->ws_close_sent = 1;
    }
    tw_conn_close_flush(c);
}

/* ---- timers and upgrade --------------------------------------------------- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn *c = arg;
    int64_t now = c->srv->api->now_ms();
    tw_conn_ref(c);
    tw_conn_note_unread(c, now);
    tw_stomp_tick(c, now);
    if (!c->closed && !c->closing) tw_schedule_tick(c);
    tw_conn_unref(c);
}

/* Next wake-up: the nearest of CONNECT deadline, heart-beat send/check and
 * idle ping. */
void tw_schedule_tick(tw_conn *c)
{
    tw_server *s = c->srv;
    int64_t now = s->api->now_ms(), next = now + 60000;
    if (c->closed || c->closing) return;
    if (c->st < TW_ST_CONNECTED) {
        int64_t t = c->opened_ms + s->connect_timeout * 1000;
        if (t < next) next = t;
    }
    int64_t tx = tw_tx_oldest(c);
    if (tx && tx + s->max_tx_age * 1000 < next) next = tx + s->max_tx_age * 1000;
    if (c->hb_out_ms > 0 && c->last_tx_ms + c->hb_out_ms < next)
        next = c->last_tx_ms + c->hb_out_ms;
    if (c->hb_in_ms > 0) {
        int64_t t = c->last_rx_ms + 2 * c->hb_in_ms + 1000;
        if (t < next) next = t;
    } else {
        int64_t half = c->last_rx_ms + s->ws_idle_timeout * 500;
        int64_t t = c->ping_ms > c->last_rx_ms ? c->last_rx_ms + s->ws_idle_timeout * 1000 : half;
        if (t < next) next = t;
    }
    int64_t d = next - now;
    if (d < 100) d = 100;
    struct timeval tv = {(time_t)(d / 1000), (suseconds_t)((d % 1000) * 1000)};
    if (!c->tick) {
        c->tick = event_new(s->base, -1, 0, tick_cb, c);
        if (!c->tick) {
            s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: out of memory for a timer; closing", c->peer);
            tw_conn_close(c);
            return;
        }
    }
    event_add(c->tick, &tv);
}

void tw_ws_limits(tw_conn *c)
{
    tw_server *s = c->srv;
    int64_t frame = c->st == TW_ST_CONNECTED ? s->max_frame : s->max_frame_preauth;
    int64_t line = s->max_header_bytes < frame ? s->max_header_bytes : frame;
    c->wd.max_message = (size_t)frame;
    c->sp.lim = (stomp_limits){(size_t)s->max_headers, (size_t)line, (size_t)frame, (size_t)frame};
}

void tw_ws_upgrade(tw_conn *c, const http_request *req)
{
    tw_server *s = c->srv;
    const char *ver = http_request_header(req, "Sec-WebSocket-Version");
    const char *key = http_request_header(req, "Sec-WebSocket-Key");
    char accept[29], protos[512];

    if (strcmp(req->method, "GET") != 0) {
        tw_http_error_extra(c, 405, "Allow: GET\r\n", "use GET to open a WebSocket");
        tw_http_done(c);
        return;
    }
    if (!http_request_has_token(req, "Upgrade", "websocket")) {
        c->req_keep = 0;
        tw_http_error_extra(c, 426, "Upgrade: websocket\r\n", "WebSocket upgrade required");
        tw_http_done(c);
        return;
    }
    if (req->version_minor != 1 || !http_request_has_token(req, "Connection", "upgrade")) {
        c->req_keep = 0;
        tw_http_error(c, 400, "bad WebSocket handshake: Connection must include Upgrade");
        tw_http_done(c);
        return;
    }
    if (http_request_count(req, "Sec-WebSocket-Key") > 1 ||
        http_request_count(req, "Sec-WebSocket-Version") > 1) {
        c->req_keep = 0;
        tw_http_error(c, 400, "bad WebSocket handshake: repeated Sec-WebSocket-Key or -Version");
        tw_http_done(c);
        return;
    }
    if (!ver || strcmp(ver, "13") != 0) {
        c->req_keep = 0;
        tw_http_error_extra(c, 426, "Sec-WebSocket-Version: 13\r\n",
                            "unsupported WebSocket version");
        tw_http_done(c);
        return;
    }
    if (ws_accept_key(key, accept) != 0) {
        c->req_keep = 0;
        tw_http_error(c, 400, "bad WebSocket handshake: invalid Sec-WebSocket-Key");
        tw_http_done(c);
        return;
    }
    if (s->stopping) {
        c->req_keep = 0;
        tw_http_error(c, 503, "server is shutting down");
        tw_http_done(c);
        return;
    }
    /* the session cookie counts only for pages of an allowed origin */
    int from_cookie = 0;
    char *tok = NULL;
    const char *cookies = http_request_header(req, "Cookie");
    if (cookies) tok = tw_cookie_get(cookies, "chatd_session");
    from_cookie = tok != NULL;
    if (from_cookie) {
        const char *origin = http_request_header(req, "Origin");
        if (!tw_origin_allowed(s, origin, http_request_header(req, "Host"))) {
            s->api->log(s->ctx, CHATD_LOG_INFO,
                        "%s: session cookie on /ws ignored: Origin %s is not in allowed_origins",
                        c->peer, origin ? origin : "(none)");
            free(tok);
            tok = NULL;
        }
    }
    /* both buffers are allocated as bytes arrive and freed once consumed;
     * until CONNECT succeeds they are bounded by max_frame_preauth */
    ws_decoder_init(&c->wd, (size_t)s->max_frame_preauth, 1);
    stomp_limits sl = {0};
    if (stomp_parser_init(&c->sp, &sl) != 0) {
        free(tok);
        c->req_keep = 0;
        tw_http_error(c, 503, "out of memory");
        tw_http_done(c);
        return;
    }
    tw_ws_limits(c);
    c->cookie_token = tok;
    const char *sub = ws_choose_subprotocol(
        http_request_join(req, "Sec-WebSocket-Protocol", protos, sizeof(protos)), c->subproto,
        sizeof(c->subproto));
    struct evbuffer *out = tw_conn_out(c);
    evbuffer_add_printf(out,
                        "HTTP/1.1 101 Switching Protocols\r\nServer: chatd/%s\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: %s\r\n",
                        PACKAGE_VERSION, accept);
    if (sub) evbuffer_add_printf(out, "Sec-WebSocket-Protocol: %s\r\n", sub);
    evbuffer_add(out, "\r\n", 2);
    c->mode = TW_MODE_WS;
    c->http_busy = 0;
    c->st = TW_ST_NONE;
    c->version = STOMP_V12;
    c->opened_ms = c->last_rx_ms = c->last_tx_ms = s->api->now_ms();
    /* The HTTP read timeout must go: the WebSocket idle rule and STOMP
     * heart-beats (tw_stomp_tick) take over. Clearing it with NULL is not
     * enough in libevent 2.1: a persistent event keeps its old I/O timeout
     * and re-arms it after the next read. So replace it with one far beyond
     * any idle rule (30 days). */
    tw_conn_timeouts(c, 30 * 86400);
    tw_conn_http_release(c); /* req is not used after this */
    bufferevent_enable(c->bev, EV_READ);
    tw_schedule_tick(c);
    s->api->counter_add(s->ctx, "chatd_ws_upgrades_total", 1);
}

/* ---- WebSocket input ------------------------------------------------------ */

/* the receipt of the frame the STOMP parser stopped in, for its ERROR; only
 * a UTF-8 one (a binary message can carry anything, and the ERROR is a text
 * frame: RFC 6455 5.6) */
static const char *parse_receipt(const tw_conn *c, char *buf, size_t bufsz)
{
    if (stomp_parser_receipt(&c->sp, buf, bufsz) != 0) return NULL;
    return ws_utf8_valid((const uint8_t *)buf, strlen(buf)) ? buf : NULL;
}

void tw_ws_process(tw_conn *c)
{
    tw_server *s = c->srv;
    char rcpt[1024];
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closed && !c->closing && !c->busy && c->inflight < TW_MAX_INFLIGHT &&
           !tw_conn_out_full(c)) {
        if (c->st != TW_ST_DONE) {
            stomp_frame f;
            int rc = stomp_parser_next(&c->sp, &f);
            if (rc < 0) {
                tw_stomp_error(c, c->sp.error, parse_receipt(c, rcpt, sizeof(rcpt)),
                               c->sp.too_big ? WS_CLOSE_TOO_BIG : WS_CLOSE_PROTOCOL);
                return;
            }
            if (rc == 1) {
                s->api->counter_add(s->ctx, "chatd_stomp_frames_in_total", 1);
                tw_stomp_frame(c, &f);
                continue;
            }
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) break;
        size_t used = 0;
        ws_event ev;
        int rc = ws_decoder_feed(&c->wd, v.iov_base, v.iov_len, &used, &ev);
        evbuffer_drain(in, used);
        if (rc == -WS_CLOSE_TOO_BIG && c->st != TW_ST_DONE) { /* say so in STOMP too */
            char msg[128];
            snprintf(msg, sizeof(msg), "frame too large: over %s = %zu bytes",
                     c->st == TW_ST_CONNECTED ? "max_frame" : "max_frame_preauth",
                     c->wd.max_message);
            tw_stomp_error(c, msg, parse_receipt(c, rcpt, sizeof(rcpt)), WS_CLOSE_TOO_BIG);
            return;
        }
        if (rc < 0) {
            s->api->log(s->ctx, CHATD_LOG_INFO, "%s: WebSocket error %d: %s", c->peer, -rc,
                        c->wd.error);
            tw_ws_close(c, -rc, c->wd.error);
            return;
        }
        if (rc == 0) continue;
        switch (ev.type) {
        case WS_EV_MESSAGE:
            s->api->counter_add(s->ctx, "chatd_ws_messages_in_total", 1);
            if (c->st == TW_ST_DONE) break;
            if (stomp_parser_feed(&c->sp, (const char *)ev.data, ev.len) != 0) {
                tw_stomp_error(c, c->sp.error, parse_receipt(c, rcpt, sizeof(rcpt)),
                               WS_CLOSE_TOO_BIG);
                return;
            }
            ws_decoder_free(&c->wd); /* copied: an idle connection holds no buffer */
            break;
        case WS_EV_PING:
            tw_ws_send(c, WS_OP_PONG, ev.data, ev.len);
            break;
        case WS_EV_PONG:
            break;
        case WS_EV_CLOSE: {
            /* echo the code (RFC 6455 5.5.1), then close after the flush */
            int code = ev.close_code == WS_CLOSE_NO_STATUS ? WS_CLOSE_NORMAL : ev.close_code;
            tw_ws_close(c, code, NULL);
            return;
        }
        default:
            break;
        }
    }
    if (!c->closed && !c->closing) {
        if (c->busy || c->inflight >= TW_MAX_INFLIGHT || c->out_paused)
            bufferevent_disable(c->bev, EV_READ);
        else
            bufferevent_enable(c->bev, EV_READ);
    }
}
