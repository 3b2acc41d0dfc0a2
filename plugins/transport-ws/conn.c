/*
 * conn.c - a transport-ws connection on a libevent bufferevent: accept
 * setup, reference counting, close with flush and lingering, output
 * back-pressure, the HTTP/1.1 request loop (keep-alive, pipelining, request
 * deadline) and the dispatch of each request to /ws, the REST API or the
 * static files.
 */
#include "config.h"

#include "tw.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static void tw_conn_free(tw_conn *c);

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
    if (c->hp) http_parser_free(c->hp);
    free(c->hp);
    ws_decoder_free(&c->wd);
    stomp_parser_free(&c->sp);
    free(c->cookie_token);
    free(c->session_token);
    free(c->login);
    free(c->pend_msg);
    free(c->pend_receipt);
    free(c->resp_end);
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

void tw_update_gauges(tw_server *s)
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
    tw_send_retry_free(c);
    if (c->member_id) s->nsessions--;
    tw_ip_release(s, c);
    if (c->tick) {
        event_free(c->tick);
        c->tick = NULL;
    }
    if (c->deadline) {
        event_free(c->deadline);
        c->deadline = NULL;
    }
    if (c->drain_ev) {
        event_free(c->drain_ev);
        c->drain_ev = NULL;
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
    tw_update_gauges(s);
    tw_stop_check(s);
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
    if (c->deadline) evtimer_del(c->deadline);
    struct timeval tv = {c->srv->send_timeout < 5 ? c->srv->send_timeout : 5, 0};
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setcb(c->bev, NULL, flushed_cb, closing_event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    bufferevent_enable(c->bev, EV_WRITE);
    if (evbuffer_get_length(tw_conn_out(c)) == 0) flushed_cb(c->bev, c);
}

/* ---- deadlines ------------------------------------------------------------ */

/* The bufferevent's timeouts: reads after read_sec seconds of silence (while
 * reading), and always send_timeout for output that makes no progress:
 * output that does not drain closes the connection whatever the read state. */
void tw_conn_timeouts(tw_conn *c, int64_t read_sec)
{
    struct timeval rd = {(time_t)read_sec, 0}, wr = {(time_t)c->srv->send_timeout, 0};
    bufferevent_set_timeouts(c->bev, &rd, &wr);
}

static int deadline_arm(tw_conn *c, int64_t sec);
static void drain_watch(tw_conn *c);
static void drain_cb(evutil_socket_t fd, short what, void *arg);

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn *c = arg;
    tw_server *s = c->srv;
    if (c->closed || c->closing) return;
    if (c->tls && !c->tls_done) {
        s->api->log(s->ctx, CHATD_LOG_INFO, "%s: TLS handshake not done in %llds; closing", c->peer,
                    (long long)s->tls_timeout);
        s->api->counter_add(s->ctx, "chatd_ws_deadline_closes_total", 1);
        tw_conn_close(c);
        return;
    }
    if (c->mode == TW_MODE_HTTP && c->req_reading && c->http_busy) {
        /* the request ahead of it is still ours to answer: wait for that */
        if (deadline_arm(c, s->request_timeout) != 0) tw_conn_close(c);
        return;
    }
    if (c->mode == TW_MODE_HTTP && c->req_reading) {
        s->api->counter_add(s->ctx, "chatd_ws_deadline_closes_total", 1);
        c->req_keep = 0;
        c->req_head = 0;
        c->http_busy = 1;
        tw_http_error(c, 408, "request not received in time");
        tw_http_done(c);
    }
}

/* Arm the connection's deadline sec seconds from now. */
static int deadline_arm(tw_conn *c, int64_t sec)
{
    struct timeval tv = {(time_t)sec, 0};
    if (!c->deadline && !(c->deadline = evtimer_new(c->srv->base, deadline_cb, c))) return -1;
    return evtimer_add(c->deadline, &tv);
}

/* ---- output back-pressure ------------------------------------------------- */

/* Every byte queued and every byte gone from the output, to know which
 * pipelined responses are still waiting for the socket. Counting only. */
static void out_count_cb(struct evbuffer *b, const struct evbuffer_cb_info *info, void *arg)
{
    (void)b;
    tw_conn *c = arg;
    c->out_added += info->n_added;
    c->out_gone += info->n_deleted;
}

/* The current response is queued: remember where its bytes end. */
void tw_conn_response_queued(tw_conn *c)
{
    if (!c->resp_end || c->resp_n >= (size_t)c->srv->max_pipeline) return;
    c->resp_end[(c->resp_head + c->resp_n) % (size_t)c->srv->max_pipeline] = c->out_added;
    c->resp_n++;
}

/* Are max_pipeline responses still unwritten? Written ones are forgotten.
 * Each may hold a file descriptor (a static file), so the next request is
 * read only when one has gone. */
static int pipeline_full(tw_conn *c)
{
    size_t cap = (size_t)c->srv->max_pipeline;
    while (c->resp_n > 0 && c->resp_end[c->resp_head] <= c->out_gone) {
        c->resp_head = (c->resp_head + 1) % cap;
        c->resp_n--;
    }
    return c->resp_n >= cap;
}

/* A peer that sends requests (or pings) but does not read the answers must
 * not make us queue without bound: past half of max_outbuf we stop reading
 * its input until the output has drained to a quarter. */
int tw_conn_out_full(tw_conn *c)
{
    if ((int64_t)evbuffer_get_length(tw_conn_out(c)) <= c->srv->max_outbuf / 2) return 0;
    c->out_paused = 1;
    return 1;
}

/* Output handed to the kernel must drain too: a peer that never reads lets
 * the socket's send queue fill while ours is empty. While bytes wait there,
 * look every second whether the peer took any; close when it has not for
 * send_timeout. */
/* What changes while the peer takes our bytes: the bytes it acknowledged,
 * or else the length q of the send queue. */
static uint64_t drain_mark(tw_conn *c, int q)
{
    uint64_t acked;
    return tw_tcp_acked(c->fd, &acked) == 0 ? acked : (uint64_t)q;
}

static int drain_arm(tw_conn *c)
{
    struct timeval tv = {1, 0};
    if (!c->drain_ev && !(c->drain_ev = evtimer_new(c->srv->base, drain_cb, c))) return -1;
    return evtimer_add(c->drain_ev, &tv);
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_conn *c = arg;
    tw_server *s = c->srv;
    int q = 0;
    if (c->closed) return;
    if (c->fd < 0 || ioctl(c->fd, SIOCOUTQ, &q) != 0 || q == 0 ||
        evbuffer_get_length(tw_conn_out(c)) > 0) { /* drained, or the write timeout runs */
        event_free(c->drain_ev);                   /* an idle connection keeps no timer */
        c->drain_ev = NULL;
        return;
    }
    int64_t now = s->api->now_ms();
    uint64_t mark = drain_mark(c, q);
    if (mark != c->drain_q) {
        c->drain_q = mark;
        c->drain_ms = now;
    } else if (now - c->drain_ms >= s->send_timeout * 1000) {
        s->api->log(s->ctx, CHATD_LOG_INFO,
                    "%s: %d bytes unread by the peer for send_timeout = %llds; closing", c->peer, q,
                    (long long)s->send_timeout);
        s->api->counter_add(s->ctx, "chatd_ws_send_timeouts_total", 1);
        tw_conn_close(c);
        return;
    }
    drain_arm(c);
}

static void drain_watch(tw_conn *c)
{
    int q = 0;
    if (c->drain_ev && evtimer_pending(c->drain_ev, NULL)) return; /* looks once a second */
    if (c->closed || c->fd < 0 || ioctl(c->fd, SIOCOUTQ, &q) != 0 || q == 0) return;
    c->drain_q = drain_mark(c, q);
    c->drain_ms = c->srv->api->now_ms();
    drain_arm(c);
}

/* Which send queues to look at is noted per write and looked at once a
 * second for all of them: a system call per connection and second, not one
 * per delivery. */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_server *s = arg;
    tw_conn *list = s->watch_head;
    s->watch_head = NULL;
    while (list) {
        tw_conn *c = list;
        list = c->watch_next;
        c->watch_next = NULL;
        c->watch_listed = 0;
        if (!c->closed && evbuffer_get_length(tw_conn_out(c)) == 0) drain_watch(c);
        tw_conn_unref(c);
    }
}

/* c's output is empty and the kernel may hold some of it: look soon. */
static void watch_later(tw_conn *c)
{
    tw_server *s = c->srv;
    struct timeval tv = {1, 0};
    if (c->watch_listed || c->closed) return;
    if (c->drain_ev && evtimer_pending(c->drain_ev, NULL)) return; /* being looked at */
    if (!s->watch_ev && !(s->watch_ev = evtimer_new(s->base, watch_cb, s))) {
        drain_watch(c); /* no memory for the timer: look now */
        return;
    }
    if (!s->watch_head && evtimer_add(s->watch_ev, &tv) != 0) {
        drain_watch(c);
        return;
    }
    c->watch_listed = 1;
    tw_conn_ref(c);
    c->watch_next = s->watch_head;
    s->watch_head = c;
}

/* Some output was written: resume what waited for it. */
static void out_progress(tw_conn *c)
{
    if (evbuffer_get_length(tw_conn_out(c)) == 0) watch_later(c);
    int kick = 0;
    if (c->out_paused && (int64_t)evbuffer_get_length(tw_conn_out(c)) <= c->srv->max_outbuf / 4) {
        c->out_paused = 0;
        kick = 1;
    }
    if (c->pipe_paused && !pipeline_full(c)) {
        c->pipe_paused = 0;
        kick = 1;
    }
    if (kick) tw_conn_kick(c);
    if (!c->closed && !c->closing) tw_resume_drained(c); /* replays paced by the output */
}

/* ---- direct writes --------------------------------------------------------
 * An upgraded plain-TCP connection is not registered for writability while
 * its output is empty. What is queued for it is written at the end of the
 * loop round, everything of the round in one write, and only what the
 * socket does not take waits for writability (and send_timeout) through the
 * bufferevent. A delivery then costs one system call instead of three
 * (register, write, unregister). TLS connections always go through the
 * bufferevent. */
static int direct_ok(const tw_conn *c)
{
    return c->mode == TW_MODE_WS && !c->tls && !c->closing && !c->closed && c->fd >= 0;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_server *s = arg;
    s->flush_armed = 0;     /* the round ends: the next direct write arms a new one */
    while (s->flush_head) { /* flushes may queue more (a resumed input loop) */
        tw_conn *c = s->flush_head;
        s->flush_head = c->flush_next;
        c->flush_next = NULL;
        c->flush_queued = 0;
        if (direct_ok(c)) {
            struct evbuffer *out = tw_conn_out(c);
            /* -1 (EAGAIN, or an error): the bufferevent writes the rest
             * and reports an error through event_cb. Like it, unfreeze the
             * start of its output for the write. */
            evbuffer_unfreeze(out, 1);
            int n = evbuffer_write(out, c->fd);
            evbuffer_freeze(out, 1);
            if (n < 0 || evbuffer_get_length(out) > 0)
                bufferevent_enable(c->bev, EV_WRITE);
            else
                out_progress(c);
        }
        tw_conn_unref(c);
    }
}

/* flush_ev ends this round: armed once per round (a new round when armed). */
static int flush_arm(tw_server *s)
{
    if (!s->flush_ev && !(s->flush_ev = event_new(s->base, -1, 0, flush_cb, s))) return -1;
    if (!s->flush_armed) {
        event_active(s->flush_ev, EV_TIMEOUT, 1);
        s->flush_armed = 1;
        s->round++;
    }
    return 0;
}

void tw_conn_flush_later(tw_conn *c)
{
    tw_server *s = c->srv;
    if (c->flush_queued || !direct_ok(c) || (bufferevent_get_enabled(c->bev) & EV_WRITE)) return;
    if (flush_arm(s) != 0) {
        bufferevent_enable(c->bev, EV_WRITE); /* no memory for the event: the usual way */
        return;
    }
    c->flush_queued = 1;
    tw_conn_ref(c);
    c->flush_next = NULL; /* in order: what was queued first is written first */
    if (s->flush_head)
        s->flush_tail->flush_next = c;
    else
        s->flush_head = c;
    s->flush_tail = c;
}

/* The first frame of a round for c goes out from the deliver path itself,
 * with no copy and no buffer: one system call. Frames that follow it in the
 * same round join the output and leave in its one write at the round's end
 * (a burst to one connection stays one write). */
ssize_t tw_conn_write_now(tw_conn *c, const struct iovec *iov, int n)
{
    tw_server *s = c->srv;
    /* one of several subscriptions (the page's room and side) may get a
     * frame per subscription of one message: those leave together in the
     * round's one write, one system call, not one here and one there */
    if (!direct_ok(c) || c->nsubs > 1 || c->flush_queued ||
        (bufferevent_get_enabled(c->bev) & EV_WRITE) || evbuffer_get_length(tw_conn_out(c)) > 0)
        return -1;
    /* armed first: a round that has not begun yet (no write since the last
     * flush) is a new one, also for the connection that wrote last */
    if (flush_arm(s) != 0 || c->direct_round == s->round) return -1;
    c->direct_round = s->round;
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) /* a full socket waits for writability; an error is the bufferevent's to report */
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    if ((size_t)w == total) watch_later(c);
    return w;
}

void tw_conn_flush_drop(tw_server *s)
{
    while (s->flush_head) {
        tw_conn *c = s->flush_head;
        s->flush_head = c->flush_next;
        c->flush_queued = 0;
        tw_conn_unref(c);
    }
    if (s->flush_ev) event_free(s->flush_ev);
    s->flush_ev = NULL;
    s->flush_armed = 0;
    while (s->watch_head) {
        tw_conn *c = s->watch_head;
        s->watch_head = c->watch_next;
        c->watch_listed = 0;
        tw_conn_unref(c);
    }
    if (s->watch_ev) event_free(s->watch_ev);
    s->watch_ev = NULL;
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    tw_conn *c = arg;
    if (c->closed || c->closing) return;
    /* drained: direct writes again (see above) */
    if (direct_ok(c) && evbuffer_get_length(tw_conn_out(c)) == 0)
        bufferevent_disable(bev, EV_WRITE);
    out_progress(c);
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
    if (c->metrics && strcmp(path, "/metrics") != 0) {
        tw_http_error(c, 404, "only /metrics is served on metrics_listen");
        tw_http_done(c);
        return;
    }
    if (strcmp(path, "/ws") == 0) {
        tw_ws_upgrade(c, req);
        return;
    }
    if (tw_rest_handle(c, req, path, q ? q + 1 : "")) return;
    tw_static_serve(c, req, path);
}

static void http_process(tw_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (!c->closed && !c->closing && !c->http_busy && c->mode == TW_MODE_HTTP) {
        if (tw_conn_out_full(c)) {
            bufferevent_disable(c->bev, EV_READ);
            break;
        }
        if (pipeline_full(c)) {
            c->pipe_paused = 1;
            break;
        }
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0) break;
        /* a whole request within request_timeout, however it trickles in */
        if (!c->req_reading) {
            c->req_reading = 1;
            if (deadline_arm(c, c->srv->request_timeout) != 0) {
                c->srv->api->log(c->srv->ctx, CHATD_LOG_ERROR,
                                 "%s: out of memory for a timer; closing", c->peer);
                tw_conn_close(c);
                return;
            }
        }
        size_t used = 0;
        int rc = http_parser_feed(c->hp, v.iov_base, v.iov_len, &used);
        evbuffer_drain(in, used);
        if (c->hp->expect_continue) {
            /* the head is fine: ask for the body (RFC 9110 10.1.1) */
            c->hp->expect_continue = 0;
            if (rc == HTTP_PARSE_MORE)
                evbuffer_add_printf(tw_conn_out(c), "HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (rc == HTTP_PARSE_ERROR) {
            c->req_keep = 0;
            c->req_head = 0;
            c->http_busy = 1;
            tw_http_error(c, c->hp->status, c->hp->error);
            tw_http_done(c);
            return;
        }
        if (rc == HTTP_PARSE_DONE) {
            c->req_reading = 0;
            evtimer_del(c->deadline);
            bufferevent_disable(c->bev, EV_READ);
            http_request_cb(c, &c->hp->req);
        }
    }
    if (!c->closed && !c->closing && c->mode == TW_MODE_HTTP) {
        if (c->http_busy || c->out_paused || c->pipe_paused)
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
        if (!c->closed && c->mode == TW_MODE_WS) tw_ws_process(c);
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
    tw_server *s = c->srv;
    if (what & BEV_EVENT_CONNECTED) { /* TLS handshake done */
        c->tls_done = 1;
        if (c->deadline) evtimer_del(c->deadline);
        return;
    }
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_WRITING)) {
        s->api->log(s->ctx, CHATD_LOG_INFO,
                    "%s: output did not drain for send_timeout = %llds; closing", c->peer,
                    (long long)s->send_timeout);
        s->api->counter_add(s->ctx, "chatd_ws_send_timeouts_total", 1);
    }
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

void tw_conn_http_release(tw_conn *c)
{
    if (c->hp) http_parser_free(c->hp);
    free(c->hp);
    c->hp = NULL;
    free(c->resp_end);
    c->resp_end = NULL;
    c->resp_n = 0;
    if (c->deadline) {
        event_free(c->deadline);
        c->deadline = NULL;
    }
    if (c->out_cb) {
        evbuffer_remove_cb_entry(tw_conn_out(c), c->out_cb);
        c->out_cb = NULL;
    }
}

/* Bytes the peer sent that wait in the kernel (our reads paused) are life:
 * those that arrived since the last look (more waiting than then), so that
 * bytes left unread long ago do not keep a silent peer alive. */
void tw_conn_note_unread(tw_conn *c, int64_t now)
{
    int n = 0;
    if (c->closed || c->fd < 0 || ioctl(c->fd, FIONREAD, &n) != 0) return;
    if (n > c->unread_seen) c->last_rx_ms = now;
    c->unread_seen = n;
}

/* ---- accept --------------------------------------------------------------- */

/* A new connection on fd from sa (the listener has checked the limits). */
void tw_conn_accept(tw_server *s, evutil_socket_t fd, const struct sockaddr *sa, int metrics)
{
    tw_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->refs = 1;
    c->fd = fd;
    c->serial = ++s->serial;
    c->metrics = metrics;
    /* every response and frame is queued whole: send it at once, so that a
     * short write (a file after its header, a frame after the last one) does
     * not wait for the peer's delayed ACK (Nagle) */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        s->api->log(s->ctx, CHATD_LOG_DEBUG, "TCP_NODELAY refused; small writes may be delayed");
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer, sizeof(c->peer), "%s:%d#%llu", host, port, (unsigned long long)c->serial);
    snprintf(c->host, sizeof(c->host), "%s", host);
    if (tw_ip_take(s, c) != 0) {
        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Connection: close\r\n\r\n";
        s->api->log(s->ctx, CHATD_LOG_INFO,
                    "%s: refused: max_connections_per_ip = %lld open from this address", c->peer,
                    (long long)s->max_per_ip);
        s->api->counter_add(s->ctx, "chatd_ws_refused_connections_total", 1);
        if (!s->ssl && send(fd, busy, sizeof(busy) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            /* nothing more to do: the socket is closed next */
        }
        evutil_closesocket(fd);
        free(c);
        return;
    }
    http_limits hl = {(size_t)s->max_request_line, (size_t)s->max_header_bytes,
                      (size_t)s->max_headers, (size_t)s->max_body};
    if (!(c->hp = malloc(sizeof(*c->hp))) || http_parser_init(c->hp, &hl) != 0 ||
        !(c->resp_end = calloc((size_t)s->max_pipeline, sizeof(*c->resp_end)))) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: out of memory for a new connection", c->peer);
        evutil_closesocket(fd);
        tw_ip_release(s, c);
        tw_conn_free(c);
        return;
    }
    if (s->ssl && !metrics) {
        SSL *ssl = SSL_new(s->ssl);
        if (!ssl) {
            evutil_closesocket(fd);
            tw_ip_release(s, c);
            tw_conn_free(c);
            return;
        }
        c->tls = 1;
        /* on failure libevent has freed ssl already (BEV_OPT_CLOSE_ON_FREE),
         * but not the socket: each is freed once */
        c->bev = bufferevent_openssl_socket_new(s->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!c->bev) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: cannot create a bufferevent (out of memory)",
                    c->peer);
        evutil_closesocket(fd);
        tw_ip_release(s, c);
        tw_conn_free(c);
        return;
    }
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    tw_update_gauges(s);
    s->api->counter_add(s->ctx, "chatd_ws_accepted_connections_total", 1);
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(c->bev, EV_WRITE, (size_t)(s->max_outbuf / 4), 0);
    tw_conn_timeouts(c, s->idle_timeout);
    if (!(c->out_cb = evbuffer_add_cb(tw_conn_out(c), out_count_cb, c)) ||
        (c->tls && deadline_arm(c, s->tls_timeout) != 0)) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: out of memory for a new connection", c->peer);
        tw_conn_close(c);
        return;
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}
