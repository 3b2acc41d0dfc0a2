/*
 * transport_ws.c - the transport-ws plugin: descriptor, configuration, the
 * listener, the connection state machine on libevent bufferevents (HTTP/1.1
 * with keep-alive, the WebSocket upgrade at /ws, WebSocket framing, lingering
 * close), optional TLS through bufferevent_openssl, and graceful stop.
 * STOMP sessions live in stomp_session.c, the REST API in rest.c and static
 * files in static_files.c.
 */
#include "config.h"

#include "tw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <json-c/linkhash.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef WEBDIR
#define WEBDIR "web"
#endif

/* ---- configuration -------------------------------------------------------- */

static const chatd_cfg_key tw_cfg_keys[] = {
    {"listen", CHATD_CFG_STRING, "127.0.0.1:8080", 0, 0, "address:port to listen on"},
    {"web_root", CHATD_CFG_STRING, WEBDIR, 0, 0, "directory of the static web page"},
    {"allowed_origins", CHATD_CFG_STRING, "", 0, 0,
     "Origins (space separated) whose chatd_session cookie is accepted on /ws"},
    {"tls_cert", CHATD_CFG_STRING, NULL, 0, 0, "PEM certificate chain; enables TLS"},
    {"tls_key", CHATD_CFG_STRING, NULL, 0, 0, "PEM private key of tls_cert"},
    {"max_connections", CHATD_CFG_INT, "10000", 1, 1000000, "open connections at most"},
    {"max_frame", CHATD_CFG_SIZE, "64k", 1024, 64 << 20,
     "largest WebSocket message and STOMP frame"},
    {"max_headers", CHATD_CFG_INT, "64", 4, 1000, "header fields per HTTP request / STOMP frame"},
    {"max_header_bytes", CHATD_CFG_SIZE, "16k", 1024, 1 << 20,
     "bytes of an HTTP request head; also of one STOMP header line"},
    {"max_request_line", CHATD_CFG_SIZE, "8k", 256, 1 << 20, "bytes of an HTTP request line"},
    {"max_body", CHATD_CFG_SIZE, "64k", 1024, 64 << 20, "bytes of an HTTP request body"},
    {"max_outbuf", CHATD_CFG_SIZE, "1m", 4096, (int64_t)1 << 32,
     "queued output per connection before a slow reader is disconnected"},
    {"max_subscriptions", CHATD_CFG_INT, "256", 1, 100000, "STOMP subscriptions per connection"},
    {"idle_timeout", CHATD_CFG_INT, "60", 1, 86400, "seconds an idle HTTP connection is kept"},
    {"ws_idle_timeout", CHATD_CFG_INT, "120", 5, 86400,
     "seconds without input before a WebSocket without heart-beats is closed"},
    {"connect_timeout", CHATD_CFG_INT, "10", 1, 3600,
     "seconds a WebSocket may take to send its STOMP CONNECT"},
    {"heartbeat_send", CHATD_CFG_INT, "10000", 0, 3600000,
     "ms between server heart-beats offered in CONNECTED (0: none)"},
    {"heartbeat_recv", CHATD_CFG_INT, "10000", 0, 3600000,
     "ms between client heart-beats asked for in CONNECTED (0: none)"},
    {"static_max_file", CHATD_CFG_SIZE, "8m", 1024, 1 << 30, "largest static file served"},
    {NULL, 0, NULL, 0, 0, NULL}};

static void tw_conn_free(tw_conn *c);
static void conn_process(tw_conn *c);

/* ---- connections ---------------------------------------------------------- */

void tw_conn_ref(tw_conn *c)
{
    c->refs++;
}

void tw_conn_unref(tw_conn *c)
{
    if (--c->refs == 0) tw_conn_free(c);
}

static void tw_conn_free(tw_conn *c)
{
    http_parser_free(&c->hp);
    ws_decoder_free(&c->wd);
    stomp_parser_free(&c->sp);
    free(c->cookie_token);
    free(c->login);
    free(c->pend_msg);
    free(c->pend_receipt);
    free(c);
}

struct evbuffer *tw_conn_out(tw_conn *c)
{
    return bufferevent_get_output(c->bev);
}

int tw_conn_over_limit(tw_conn *c)
{
    return (int64_t)evbuffer_get_length(tw_conn_out(c)) > c->srv->max_outbuf;
}

static void stop_check(tw_server *s);

static void update_gauges(tw_server *s)
{
    s->api->gauge_set(s->ctx, "chatd_ws_connections", s->nconns);
    s->api->gauge_set(s->ctx, "chatd_ws_sessions", s->nsessions);
    s->api->gauge_set(s->ctx, "chatd_ws_subscriptions", s->nsubs);
}

void tw_conn_close(tw_conn *c)
{
    tw_server *s = c->srv;
    if (c->closed) return;
    c->closed = 1;
    tw_subs_drop_conn(c);
    tw_tx_free_all(c);
    if (c->member_id) s->nsessions--;
    if (c->tick) {
        event_free(c->tick);
        c->tick = NULL;
    }
    /* drop queued output now: shared message bodies are released here, on
     * the loop, instead of whenever libevent finalizes the bufferevent */
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_drain(out, evbuffer_get_length(out));
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    update_gauges(s);
    stop_check(s);
    tw_conn_unref(c);
}

/* Lingering close: after our last bytes are written, shut down our side and
 * read (and drop) what the peer still sends until it closes, so that the
 * kernel does not reset the connection and destroy the response in flight. */
static void linger_read_cb(struct bufferevent *bev, void *arg)
{
    (void)arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void closing_event_cb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) return;
    tw_conn_close(arg);
}

static void linger_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn_close(arg);
}

static void flushed_cb(struct bufferevent *bev, void *arg)
{
    tw_conn *c = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) return;
    if (c->tls || c->fd < 0) {
        tw_conn_close(c);
        return;
    }
    if (shutdown(c->fd, SHUT_WR) != 0) {
        tw_conn_close(c);
        return;
    }
    /* at most 2 s of silence, and 5 s in all, however the peer trickles */
    struct timeval tv = {2, 0}, cap = {5, 0};
    bufferevent_setcb(bev, linger_read_cb, NULL, closing_event_cb, c);
    bufferevent_set_timeouts(bev, &tv, NULL);
    bufferevent_enable(bev, EV_READ);
    if (!c->tick) c->tick = evtimer_new(c->srv->base, linger_timeout_cb, c);
    if (c->tick) evtimer_add(c->tick, &cap);
}

void tw_conn_close_flush(tw_conn *c)
{
    if (c->closed || c->closing) return;
    c->closing = 1;
    if (c->tick) {
        event_free(c->tick);
        c->tick = NULL;
    }
    struct timeval tv = {5, 0};
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, flushed_cb, closing_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_WRITE);
    if (evbuffer_get_length(tw_conn_out(c)) == 0) flushed_cb(c->bev, c);
}

/* ---- WebSocket output ----------------------------------------------------- */

void tw_ws_send(tw_conn *c, int opcode, const void *data, size_t len)
{
    uint8_t h[10];
    if (c->closed || c->closing || c->ws_close_sent) return;
    size_t hl = ws_frame_header(h, opcode, 1, len);
    struct evbuffer *out = tw_conn_out(c);
    if (evbuffer_add(out, h, hl) != 0 || (len && evbuffer_add(out, data, len) != 0)) {
        c->srv->api->log(c->srv->ctx, CHATD_LOG_ERROR,
                         "%s: out of memory queueing a frame; closing the connection", c->peer);
        tw_conn_close(c);
        return;
    }
    c->last_tx_ms = c->srv->api->now_ms();
}

void tw_ws_send_buffer(tw_conn *c, int opcode, struct evbuffer *payload)
{
    uint8_t h[10];
    if (c->closed || c->closing || c->ws_close_sent) return;
    size_t hl = ws_frame_header(h, opcode, 1, evbuffer_get_length(payload));
    struct evbuffer *out = tw_conn_out(c);
    if (evbuffer_add(out, h, hl) != 0 || evbuffer_add_buffer(out, payload) != 0) {
        c->srv->api->log(c->srv->ctx, CHATD_LOG_ERROR,
                         "%s: out of memory queueing a frame; closing the connection", c->peer);
        tw_conn_close(c);
        return;
    }
    c->last_tx_ms = c->srv->api->now_ms();
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

/* ---- HTTP responses ------------------------------------------------------- */

const char *tw_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static void http_head(tw_conn *c, int status, const char *ctype, const char *extra, size_t len)
{
    struct evbuffer *out = tw_conn_out(c);
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (c->srv->stopping) c->req_keep = 0;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nServer: chatd/%s\r\nDate: %s\r\n", status,
                        tw_status_text(status), PACKAGE_VERSION, date);
    if (status != 204 && status != 304) evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
    if (ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\n", ctype);
    if (extra) evbuffer_add(out, extra, strlen(extra));
    evbuffer_add_printf(out, "Connection: %s\r\n\r\n", c->req_keep ? "keep-alive" : "close");
}

void tw_http_respond(tw_conn *c, int status, const char *ctype, const char *extra, const void *body,
                     size_t len)
{
    if (c->closed) return;
    http_head(c, status, ctype, extra, len);
    if (body && len && !c->req_head) evbuffer_add(tw_conn_out(c), body, len);
}

void tw_http_respond_buffer(tw_conn *c, int status, const char *ctype, const char *extra,
                            struct evbuffer *body)
{
    if (c->closed) return;
    http_head(c, status, ctype, extra, evbuffer_get_length(body));
    if (!c->req_head) evbuffer_add_buffer(tw_conn_out(c), body);
}

/* JSON error body {"error":"..."}; msg is a fixed ASCII text of ours. */
void tw_http_error(tw_conn *c, int status, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", tw_status_text(status));
    tw_http_respond(c, status, "application/json",
                    status == 401 ? "WWW-Authenticate: Bearer realm=\"chatd\"\r\n" : NULL, body,
                    (size_t)n);
}

/* The response of the current request is queued: next request or close. */
void tw_http_done(tw_conn *c)
{
    c->http_busy = 0;
    if (c->closed) return;
    http_parser_reset(&c->hp);
    if (!c->req_keep || c->srv->stopping) {
        tw_conn_close_flush(c);
        return;
    }
    struct timeval tv = {c->srv->idle_timeout, 0};
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    if (!c->out_paused) bufferevent_enable(c->bev, EV_READ);
}

/* ---- origins -------------------------------------------------------------- */

int tw_origin_allowed(tw_server *s, const char *origin, const char *host)
{
    if (!origin) return 0;
    for (size_t i = 0; i < s->norigins; i++)
        if (strcasecmp(origin, s->origins[i]) == 0) return 1;
    /* same origin: scheme://Host of this very request */
    if (host) {
        char self[300];
        snprintf(self, sizeof(self), "%s://%s", s->ssl ? "https" : "http", host);
        if (strcasecmp(origin, self) == 0) return 1;
    }
    return 0;
}

/* ---- WebSocket upgrade ---------------------------------------------------- */

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn *c = arg;
    tw_conn_ref(c);
    tw_stomp_tick(c, c->srv->api->now_ms());
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

static void ws_upgrade(tw_conn *c, const http_request *req)
{
    tw_server *s = c->srv;
    const char *ver = http_request_header(req, "Sec-WebSocket-Version");
    const char *key = http_request_header(req, "Sec-WebSocket-Key");
    char accept[29], protos[512];

    if (strcmp(req->method, "GET") != 0) {
        tw_http_respond(c, 405, "application/json", "Allow: GET\r\n",
                        "{\"error\":\"use GET to open a WebSocket\"}", 38);
        tw_http_done(c);
        return;
    }
    if (!http_request_has_token(req, "Upgrade", "websocket")) {
        c->req_keep = 0;
        tw_http_respond(c, 426, "application/json", "Upgrade: websocket\r\n",
                        "{\"error\":\"WebSocket upgrade required\"}", 38);
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
        tw_http_respond(c, 426, "application/json", "Sec-WebSocket-Version: 13\r\n",
                        "{\"error\":\"unsupported WebSocket version\"}", 41);
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
    ws_decoder_init(&c->wd, (size_t)s->max_frame, 1);
    stomp_limits sl = {(size_t)s->max_headers, (size_t)s->max_header_bytes, (size_t)s->max_frame,
                       (size_t)s->max_frame};
    if (stomp_parser_init(&c->sp, &sl) != 0) {
        free(tok);
        c->req_keep = 0;
        tw_http_error(c, 503, "out of memory");
        tw_http_done(c);
        return;
    }
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
    struct timeval far = {30 * 86400, 0};
    bufferevent_set_timeouts(c->bev, &far, NULL);
    bufferevent_enable(c->bev, EV_READ);
    tw_schedule_tick(c);
    s->api->counter_add(s->ctx, "chatd_ws_upgrades_total", 1);
}

/* ---- output back-pressure ------------------------------------------------- */

/* A peer that sends requests (or pings) but does not read the answers must
 * not make us queue without bound: past half of max_outbuf we stop reading
 * its input until the output has drained to a quarter. */
static int out_full(tw_conn *c)
{
    if ((int64_t)evbuffer_get_length(tw_conn_out(c)) <= c->srv->max_outbuf / 2) return 0;
    c->out_paused = 1;
    return 1;
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    tw_conn *c = arg;
    (void)bev;
    if (c->out_paused && !c->closed && !c->closing &&
        (int64_t)evbuffer_get_length(tw_conn_out(c)) <= c->srv->max_outbuf / 4) {
        c->out_paused = 0;
        tw_conn_kick(c);
    }
}

/* ---- HTTP request dispatch ------------------------------------------------ */

static void http_request_cb(tw_conn *c, const http_request *req)
{
    tw_server *s = c->srv;
    char path[4096];
    const char *q = strchr(req->target, '?');
    size_t plen = q ? (size_t)(q - req->target) : strlen(req->target);

    s->api->counter_add(s->ctx, "chatd_http_requests_total", 1);
    c->req_keep = req->keep_alive;
    c->req_head = strcmp(req->method, "HEAD") == 0;
    c->http_busy = 1;
    if (plen >= sizeof(path)) {
        c->req_keep = 0;
        tw_http_error(c, 414, "request target too long");
        tw_http_done(c);
        return;
    }
    memcpy(path, req->target, plen);
    path[plen] = '\0';
    if (strcmp(path, "/ws") == 0) {
        ws_upgrade(c, req);
        return;
    }
    if (tw_rest_handle(c, req, path, q ? q + 1 : "")) return;
    tw_static_serve(c, req, path);
}

static void http_process(tw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closed && !c->closing && !c->http_busy && c->mode == TW_MODE_HTTP) {
        if (out_full(c)) {
            bufferevent_disable(c->bev, EV_READ);
            break;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) break;
        /* a whole request within idle_timeout, however it trickles in */
        int64_t now = c->srv->api->now_ms();
        if (!c->req_start_ms)
            c->req_start_ms = now;
        else if (now - c->req_start_ms > c->srv->idle_timeout * 1000) {
            c->req_keep = 0;
            c->req_head = 0;
            c->http_busy = 1;
            tw_http_error(c, 408, "request not received in time");
            tw_http_done(c);
            return;
        }
        size_t used = 0;
        int rc = http_parser_feed(&c->hp, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        if (c->hp.expect_continue) {
            /* the head is fine: ask for the body (RFC 9110 10.1.1) */
            c->hp.expect_continue = 0;
            if (rc == HTTP_PARSE_MORE)
                evbuffer_add_printf(tw_conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (rc == HTTP_PARSE_ERROR) {
            c->req_keep = 0;
            c->req_head = 0;
            c->http_busy = 1;
            tw_http_error(c, c->hp.status, c->hp.error);
            tw_http_done(c);
            return;
        }
        if (rc == HTTP_PARSE_DONE) {
            c->req_start_ms = 0;
            bufferevent_disable(c->bev, EV_READ);
            http_request_cb(c, &c->hp.req);
        }
    }
    if (!c->closed && !c->closing && c->mode == TW_MODE_HTTP) {
        if (c->http_busy || c->out_paused)
            bufferevent_disable(c->bev, EV_READ);
        else
            bufferevent_enable(c->bev, EV_READ);
    }
}

/* ---- WebSocket input ------------------------------------------------------ */

static void ws_process(tw_conn *c)
{
    tw_server *s = c->srv;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closed && !c->closing && !c->busy && c->inflight < TW_MAX_INFLIGHT && !out_full(c)) {
        if (c->st != TW_ST_DONE) {
            stomp_frame f;
            int rc = stomp_parser_next(&c->sp, &f);
            if (rc < 0) {
                tw_stomp_error(c, c->sp.error, NULL, WS_CLOSE_PROTOCOL);
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
                tw_stomp_error(c, c->sp.error, NULL, WS_CLOSE_TOO_BIG);
                return;
            }
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

static void conn_process(tw_conn *c)
{
    if (c->in_process) return;
    c->in_process = 1;
    tw_conn_ref(c);
    for (;;) {
        int mode = c->mode;
        if (mode == TW_MODE_HTTP) http_process(c);
        if (!c->closed && c->mode == TW_MODE_WS) ws_process(c);
        if (c->closed || c->mode == mode) break;
    }
    c->in_process = 0;
    tw_conn_unref(c);
}

/* Resume reading after an async answer. */
void tw_conn_kick(tw_conn *c)
{
    if (c->closed || c->closing) return;
    if (c->in_process) return; /* the running loop picks it up */
    conn_process(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    tw_conn *c = arg;
    if (c->mode == TW_MODE_WS) c->last_rx_ms = c->srv->api->now_ms();
    conn_process(c);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    tw_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) return; /* TLS handshake done */
    if (what & BEV_EVENT_ERROR) {
        unsigned long e;
        while ((e = bufferevent_get_openssl_error(bev)) != 0) {
            char buf[256];
            ERR_error_string_n(e, buf, sizeof(buf));
            c->srv->api->log(c->srv->ctx, CHATD_LOG_DEBUG, "%s: TLS: %s", c->peer, buf);
        }
    }
    tw_conn_close(c);
}

/* ---- listener ------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    (void)lis;
    (void)salen;
    tw_server *s = arg;
    if (s->stopping || s->nconns >= s->max_connections) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        if (!s->ssl && send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            /* nothing more to do: the socket is closed next */
        }
        evutil_closesocket(fd);
        s->api->counter_add(s->ctx, "chatd_ws_refused_connections_total", 1);
        return;
    }
    tw_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->refs = 1;
    c->fd = fd;
    c->serial = ++s->serial;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d#%llu", host, port, (unsigned long long)c->serial);
    http_limits hl = {(size_t)s->max_request_line, (size_t)s->max_header_bytes,
                      (size_t)s->max_headers, (size_t)s->max_body};
    if (http_parser_init(&c->hp, &hl) != 0) {
        evutil_closesocket(fd);
        free(c);
        return;
    }
    if (s->ssl) {
        SSL *ssl = SSL_new(s->ssl);
        if (!ssl) {
            evutil_closesocket(fd);
            tw_conn_free(c);
            return;
        }
        c->tls = 1;
        c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) SSL_free(ssl);
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: cannot create a bufferevent (out of memory)",
                    c->peer);
        evutil_closesocket(fd);
        tw_conn_free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    update_gauges(s);
    s->api->counter_add(s->ctx, "chatd_ws_accepted_connections_total", 1);
    struct timeval tv = {s->idle_timeout, 0};
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, (size_t)(s->max_outbuf / 4), 0);
    bufferevent_set_timeouts(c->bev, &tv, NULL);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_server *s = arg;
    if (s->lis && !s->stopping) evconnlistener_enable(s->lis);
}

static void accept_error_cb(struct evconnlistener *lis, void *arg)
{
    tw_server *s = arg;
    int e = EVUTIL_SOCKET_ERROR();
    s->api->log(s->ctx, CHATD_LOG_WARN,
                "accept on %s failed: %s (raise the open files limit or lower max_connections); "
                "pausing accepts for 1 s",
                s->listen, evutil_socket_error_to_string(e));
    /* out of descriptors: the listening socket stays readable, so pause
     * instead of spinning on it */
    if (!s->accept_timer) s->accept_timer = evtimer_new(s->base, accept_resume_cb, s);
    if (s->accept_timer) {
        struct timeval tv = {1, 0};
        evconnlistener_disable(lis);
        evtimer_add(s->accept_timer, &tv);
    }
}

/* ---- plugin hooks --------------------------------------------------------- */

static void tw_destroy(void *inst);

static int split_origins(tw_server *s, const char *list)
{
    char *copy = strdup(list ? list : "");
    if (!copy) return -1;
    char *save = NULL;
    for (char *t = strtok_r(copy, " ,\t", &save); t; t = strtok_r(NULL, " ,\t", &save)) {
        char **n = realloc(s->origins, (s->norigins + 1) * sizeof(char *));
        if (!n) {
            free(copy);
            return -1;
        }
        s->origins = n;
        size_t l = strlen(t);
        while (l > 0 && t[l - 1] == '/')
            t[--l] = '\0';
        if (!(s->origins[s->norigins] = strdup(t))) {
            free(copy);
            return -1;
        }
        s->norigins++;
    }
    free(copy);
    return 0;
}

static chatd_status tw_tls_setup(tw_server *s, const char *cert, const char *key)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "TLS: cannot create a context (out of memory)");
        return CHATD_ERR_NOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        s->api->cfg_error(s->ctx, "tls_cert", "cannot load the PEM certificate chain %s", cert);
        SSL_CTX_free(ctx);
        return CHATD_ERR_INVALID;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        s->api->cfg_error(s->ctx, "tls_key", "cannot load %s or it does not match tls_cert", key);
        SSL_CTX_free(ctx);
        return CHATD_ERR_INVALID;
    }
    s->ssl = ctx;
    return CHATD_OK;
}

static chatd_status tw_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    tw_server *s = calloc(1, sizeof(*s));
    if (!s) return CHATD_ERR_NOMEM;
    s->api = api;
    s->ctx = ctx;
    s->base = api->event_base(ctx);
    s->listen = api->cfg_str(ctx, "listen");
    s->max_connections = api->cfg_int(ctx, "max_connections", 10000);
    s->max_frame = api->cfg_int(ctx, "max_frame", 65536);
    s->max_headers = api->cfg_int(ctx, "max_headers", 64);
    s->max_header_bytes = api->cfg_int(ctx, "max_header_bytes", 16384);
    s->max_request_line = api->cfg_int(ctx, "max_request_line", 8192);
    s->max_body = api->cfg_int(ctx, "max_body", 65536);
    s->max_outbuf = api->cfg_int(ctx, "max_outbuf", 1 << 20);
    s->max_subscriptions = api->cfg_int(ctx, "max_subscriptions", 256);
    s->idle_timeout = api->cfg_int(ctx, "idle_timeout", 60);
    s->ws_idle_timeout = api->cfg_int(ctx, "ws_idle_timeout", 120);
    s->connect_timeout = api->cfg_int(ctx, "connect_timeout", 10);
    s->hb_send = api->cfg_int(ctx, "heartbeat_send", 10000);
    s->hb_recv = api->cfg_int(ctx, "heartbeat_recv", 10000);
    s->static_max = api->cfg_int(ctx, "static_max_file", 8 << 20);
    if (s->max_request_line > s->max_header_bytes) s->max_request_line = s->max_header_bytes;
    if (!s->base) {
        api->log(ctx, CHATD_LOG_ERROR, "the core gave no event base");
        free(s);
        return CHATD_ERR_INTERNAL;
    }
    if (!s->listen || !*s->listen) {
        api->cfg_error(ctx, "listen", "an address:port is required");
        free(s);
        return CHATD_ERR_INVALID;
    }
    if (split_origins(s, api->cfg_str(ctx, "allowed_origins")) != 0) {
        tw_destroy(s);
        return CHATD_ERR_NOMEM;
    }
    const char *root = api->cfg_str(ctx, "web_root");
    if (root && *root) {
        char real[PATH_MAX];
        if (realpath(root, real))
            s->web_root = strdup(real);
        else
            api->log(ctx, CHATD_LOG_WARN,
                     "web_root %s: %s; static files are not served (set web_root to the "
                     "directory of the chat page)",
                     root, strerror(errno));
    }
    const char *cert = api->cfg_str(ctx, "tls_cert"), *key = api->cfg_str(ctx, "tls_key");
    if ((cert && *cert) != (key && *key)) {
        api->cfg_error(ctx, cert && *cert ? "tls_key" : "tls_cert",
                       "tls_cert and tls_key go together");
        tw_destroy(s);
        return CHATD_ERR_INVALID;
    }
    if (cert && *cert) {
        chatd_status st = tw_tls_setup(s, cert, key);
        if (st != CHATD_OK) {
            tw_destroy(s);
            return st;
        }
    }
    s->dests = lh_kchar_table_new(256, NULL);
    if (!s->dests) {
        tw_destroy(s);
        return CHATD_ERR_NOMEM;
    }
    *inst = s;
    return CHATD_OK;
}

static chatd_status tw_start(void *inst)
{
    tw_server *s = inst;
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    memset(&ss, 0, sizeof(ss));
    if (evutil_parse_sockaddr_port(s->listen, (struct sockaddr *)&ss, &sl) != 0) {
        s->api->cfg_error(s->ctx, "listen", "cannot parse '%s' (use ADDRESS:PORT)", s->listen);
        return CHATD_ERR_INVALID;
    }
    s->lis = evconnlistener_new_bind(
        s->base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, sl);
    if (!s->lis) {
        int e = EVUTIL_SOCKET_ERROR();
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot listen on %s: %s (is another server using the port?)", s->listen,
                    evutil_socket_error_to_string(e));
        return CHATD_ERR_IO;
    }
    evconnlistener_set_error_cb(s->lis, accept_error_cb);
    s->api->log(s->ctx, CHATD_LOG_INFO, "listening on %s%s", s->listen, s->ssl ? " (TLS)" : "");
    update_gauges(s);
    return CHATD_OK;
}

static void stop_check(tw_server *s)
{
    if (s->stopping && s->stop_done && s->nconns == 0) {
        chatd_completion *d = s->stop_done;
        s->stop_done = NULL;
        if (s->stop_timer) {
            event_free(s->stop_timer);
            s->stop_timer = NULL;
        }
        s->api->complete(d, CHATD_OK, NULL);
    }
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_server *s = arg;
    s->api->log(s->ctx, CHATD_LOG_WARN, "%lld connection(s) did not close in time; dropping",
                (long long)s->nconns);
    while (s->conns)
        tw_conn_close(s->conns);
    stop_check(s);
}

static chatd_status tw_stop(void *inst, chatd_completion *done)
{
    tw_server *s = inst;
    s->stopping = 1;
    if (s->lis) {
        evconnlistener_free(s->lis);
        s->lis = NULL;
    }
    if (s->accept_timer) evtimer_del(s->accept_timer);
    tw_conn *c = s->conns, *next;
    while (c) {
        next = c->next;
        if (c->mode == TW_MODE_WS)
            tw_ws_close(c, WS_CLOSE_GOING_AWAY, "server shutting down");
        else if (!c->http_busy)
            tw_conn_close_flush(c);
        c = next;
    }
    if (s->nconns == 0) return CHATD_OK;
    s->stop_done = done;
    s->stop_timer = evtimer_new(s->base, stop_timer_cb, s);
    if (s->stop_timer) {
        struct timeval tv = {5, 0};
        evtimer_add(s->stop_timer, &tv);
    }
    return CHATD_ASYNC;
}

static void tw_destroy(void *inst)
{
    tw_server *s = inst;
    if (!s) return;
    s->stop_done = NULL;
    while (s->conns)
        tw_conn_close(s->conns);
    if (s->lis) evconnlistener_free(s->lis);
    if (s->stop_timer) event_free(s->stop_timer);
    if (s->accept_timer) event_free(s->accept_timer);
    if (s->dests) lh_table_free(s->dests);
    if (s->ssl) SSL_CTX_free(s->ssl);
    for (size_t i = 0; i < s->norigins; i++)
        free(s->origins[i]);
    free(s->origins);
    free(s->web_root);
    free(s);
}

static const chatd_transport_ops tw_ops = {sizeof(chatd_transport_ops), tw_deliver};

static const chatd_plugin_desc tw_desc = {
    CHATD_ABI_MAJOR,
    CHATD_ABI_MINOR,
    sizeof(chatd_plugin_desc),
    CHATD_KIND_TRANSPORT,
    "transport-ws",
    PACKAGE_VERSION,
    "HTTP/1.1, WebSocket and STOMP 1.0-1.2 for browsers, the REST API and the chat page",
    tw_cfg_keys,
    tw_create,
    tw_start,
    tw_stop,
    tw_destroy,
    NULL,
    &tw_ops,
};

CHATD_PLUGIN_DEFINE(tw_desc)
