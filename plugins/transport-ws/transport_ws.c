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
    {"metrics_listen", CHATD_CFG_STRING, "127.0.0.1:9321", 0, 0,
     "address:port of GET /metrics (plain HTTP, never on listen); empty: off; a second instance "
     "with the same address leaves it to the first"},
    {"web_root", CHATD_CFG_STRING, WEBDIR, 0, 0, "directory of the static web page"},
    {"allowed_origins", CHATD_CFG_STRING, "", 0, 0,
     "Origins (space separated) whose chatd_session cookie is accepted on /ws"},
    {"tls_cert", CHATD_CFG_STRING, NULL, 0, 0, "PEM certificate chain; enables TLS"},
    {"tls_key", CHATD_CFG_STRING, NULL, 0, 0, "PEM private key of tls_cert"},
    {"cookie_secure", CHATD_CFG_BOOL, "false", 0, 0,
     "the chatd_session cookie says Secure on a plain listener too (behind a TLS proxy); "
     "with tls_cert it always does"},
    {"max_connections", CHATD_CFG_INT, "10000", 1, 1000000, "open connections at most"},
    {"max_frame", CHATD_CFG_SIZE, "64k", 1024, 64 << 20,
     "largest WebSocket message and STOMP frame"},
    {"max_frame_preauth", CHATD_CFG_SIZE, "8k", 1024, 64 << 20,
     "largest WebSocket message and STOMP frame before CONNECT succeeds (at most max_frame)"},
    {"max_headers", CHATD_CFG_INT, "64", 4, 1000, "header fields per HTTP request / STOMP frame"},
    {"max_header_bytes", CHATD_CFG_SIZE, "16k", 1024, 1 << 20,
     "bytes of an HTTP request head; also of one STOMP header line"},
    {"max_request_line", CHATD_CFG_SIZE, "8k", 256, 1 << 20, "bytes of an HTTP request line"},
    {"max_body", CHATD_CFG_SIZE, "64k", 1024, 64 << 20, "bytes of an HTTP request body"},
    {"max_outbuf", CHATD_CFG_SIZE, "1m", 4096, (int64_t)1 << 32,
     "queued output per connection before a slow reader is disconnected"},
    {"max_subscriptions", CHATD_CFG_INT, "256", 1, 100000, "STOMP subscriptions per connection"},
    {"replay_page", CHATD_CFG_INT, "100", 1, CHATD_HISTORY_MAX,
     "messages per store page of a resume-after replay"},
    {"replay_hold", CHATD_CFG_INT, "1024", 1, 65536,
     "live messages held per resuming subscription (past that, one more store page is read)"},
    {"idle_timeout", CHATD_CFG_INT, "60", 1, 86400, "seconds an idle HTTP connection is kept"},
    {"ws_idle_timeout", CHATD_CFG_INT, "120", 5, 86400,
     "seconds without input before a WebSocket without heart-beats is closed"},
    {"connect_timeout", CHATD_CFG_INT, "10", 1, 3600,
     "seconds a WebSocket may take to send its STOMP CONNECT"},
    {"heartbeat_send", CHATD_CFG_INT, "10000", 0, 3600000,
     "ms between server heart-beats offered in CONNECTED (0: none)"},
    {"heartbeat_recv", CHATD_CFG_INT, "10000", 0, 3600000,
     "ms between client heart-beats asked for in CONNECTED (0: none)"},
    {"heartbeat_min", CHATD_CFG_INT, "1000", 100, 3600000,
     "ms: the shortest heart-beat interval a client's CONNECT may negotiate"},
    {"heartbeat_max", CHATD_CFG_INT, "60000", 1000, 3600000,
     "ms: the longest; a client silent for twice this plus 1 s is closed, whatever it promised"},
    {"static_max_file", CHATD_CFG_SIZE, "8m", 1024, 1 << 30, "largest static file served"},
    {"send_timeout", CHATD_CFG_INT, "30", 1, 3600,
     "seconds queued output may make no progress before the connection is closed"},
    {"request_timeout", CHATD_CFG_INT, "10", 1, 3600,
     "seconds from the first byte of an HTTP request to its last (else 408 and close)"},
    {"tls_handshake_timeout", CHATD_CFG_INT, "10", 1, 3600,
     "seconds a TLS handshake may take from the accept"},
    {"max_connections_per_member", CHATD_CFG_INT, "64", 0, 1000000,
     "STOMP sessions one member may hold open (0: no limit)"},
    {"max_connections_per_ip", CHATD_CFG_INT, "0", 0, 1000000,
     "connections from one client address (0: no limit; behind a proxy all share its address)"},
    {"max_tx_bytes", CHATD_CFG_SIZE, "1m", 1024, 1 << 30,
     "SEND bodies one connection may buffer in open transactions"},
    {"max_tx_age", CHATD_CFG_INT, "60", 1, 86400,
     "seconds a STOMP transaction may stay open before the session gets an ERROR"},
    {"rate_grace", CHATD_CFG_INT, "10", 0, 3600,
     "seconds a SEND over publish_rate waits, reading paused, before an ERROR (0: ERROR at once)"},
    {"max_pipeline", CHATD_CFG_INT, "8", 1, 1024,
     "HTTP responses of one connection not yet written before its next request is read"},
    {"page_limit", CHATD_CFG_INT, "50", 1, TW_PAGE_CAP,
     "rows of a page of GET /api/members and GET /api/rooms without limit="},
    {"page_limit_max", CHATD_CFG_INT, "100", 1, TW_PAGE_CAP,
     "most rows of one page of GET /api/members and GET /api/rooms (a larger limit= is clamped)"},
    {NULL, 0, NULL, 0, 0, NULL}};

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

/* ---- connections per client address ------------------------------------- */

static void ip_entry_free(struct lh_entry *e)
{
    free(lh_entry_k(e));
}

int tw_ip_take(tw_server *s, tw_conn *c)
{
    if (s->max_per_ip <= 0) return 0;
    struct lh_entry *e = lh_table_lookup_entry(s->ips, c->host);
    uintptr_t n = e ? (uintptr_t)lh_entry_v(e) : 0;
    if ((int64_t)n >= s->max_per_ip) return -1;
    if (e) {
        lh_entry_set_val(e, (void *)(n + 1));
    } else {
        char *k = strdup(c->host);
        if (!k || lh_table_insert(s->ips, k, (void *)(uintptr_t)1) != 0) {
            free(k);
            return -1;
        }
    }
    c->ip_counted = 1;
    return 0;
}

void tw_ip_release(tw_server *s, tw_conn *c)
{
    if (!c->ip_counted) return;
    c->ip_counted = 0;
    struct lh_entry *e = lh_table_lookup_entry(s->ips, c->host);
    if (!e) return;
    uintptr_t n = (uintptr_t)lh_entry_v(e);
    if (n <= 1)
        lh_table_delete_entry(s->ips, e);
    else
        lh_entry_set_val(e, (void *)(n - 1));
}

/* ---- listener ------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
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
    tw_conn_accept(s, fd, sa, lis == s->mlis);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    tw_server *s = arg;
    if (s->lis && !s->stopping && !tw_side_seeding(s)) evconnlistener_enable(s->lis);
}

/* The side cursor table is seeded (sidecur.c): accept from now on. */
static void accepts_open(tw_server *s)
{
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

/* An INT or SIZE key: its default is written in tw_cfg_keys only. */
static int64_t cfg_int(const chatd_api *api, chatd_ctx *ctx, const char *key)
{
    return api->cfg_int(ctx, key, 0);
}

static chatd_status tw_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    tw_server *s = calloc(1, sizeof(*s));
    if (!s) return CHATD_ERR_NOMEM;
    s->api = api;
    s->ctx = ctx;
    s->base = api->event_base(ctx);
    s->listen = api->cfg_str(ctx, "listen");
    s->metrics_listen = api->cfg_str(ctx, "metrics_listen");
    s->max_connections = cfg_int(api, ctx, "max_connections");
    s->max_frame = cfg_int(api, ctx, "max_frame");
    s->max_frame_preauth = cfg_int(api, ctx, "max_frame_preauth");
    if (s->max_frame_preauth > s->max_frame) s->max_frame_preauth = s->max_frame;
    s->max_headers = cfg_int(api, ctx, "max_headers");
    s->max_header_bytes = cfg_int(api, ctx, "max_header_bytes");
    s->max_request_line = cfg_int(api, ctx, "max_request_line");
    s->max_body = cfg_int(api, ctx, "max_body");
    s->max_outbuf = cfg_int(api, ctx, "max_outbuf");
    s->max_subscriptions = cfg_int(api, ctx, "max_subscriptions");
    s->replay_page = cfg_int(api, ctx, "replay_page");
    s->replay_hold = cfg_int(api, ctx, "replay_hold");
    s->idle_timeout = cfg_int(api, ctx, "idle_timeout");
    s->ws_idle_timeout = cfg_int(api, ctx, "ws_idle_timeout");
    s->connect_timeout = cfg_int(api, ctx, "connect_timeout");
    s->hb_send = cfg_int(api, ctx, "heartbeat_send");
    s->hb_recv = cfg_int(api, ctx, "heartbeat_recv");
    s->hb_min = cfg_int(api, ctx, "heartbeat_min");
    s->hb_max = cfg_int(api, ctx, "heartbeat_max");
    s->static_max = cfg_int(api, ctx, "static_max_file");
    s->send_timeout = cfg_int(api, ctx, "send_timeout");
    s->request_timeout = cfg_int(api, ctx, "request_timeout");
    s->tls_timeout = cfg_int(api, ctx, "tls_handshake_timeout");
    s->max_pipeline = cfg_int(api, ctx, "max_pipeline");
    s->max_per_member = cfg_int(api, ctx, "max_connections_per_member");
    s->max_per_ip = cfg_int(api, ctx, "max_connections_per_ip");
    s->max_tx_bytes = cfg_int(api, ctx, "max_tx_bytes");
    s->max_tx_age = cfg_int(api, ctx, "max_tx_age");
    s->rate_grace = cfg_int(api, ctx, "rate_grace");
    s->cookie_secure = api->cfg_bool(ctx, "cookie_secure", 0);
    s->page_limit = cfg_int(api, ctx, "page_limit");
    s->page_limit_max = cfg_int(api, ctx, "page_limit_max");
    if (s->max_request_line > s->max_header_bytes) s->max_request_line = s->max_header_bytes;
    if (!s->base) {
        api->log(ctx, CHATD_LOG_ERROR, "the core gave no event base");
        free(s);
        return CHATD_ERR_INTERNAL;
    }
    if (s->hb_min > s->hb_max) {
        api->cfg_error(ctx, "heartbeat_min", "%lld is above heartbeat_max = %lld",
                       (long long)s->hb_min, (long long)s->hb_max);
        free(s);
        return CHATD_ERR_INVALID;
    }
    if (s->page_limit > s->page_limit_max) {
        api->cfg_error(ctx, "page_limit", "%lld is above page_limit_max = %lld",
                       (long long)s->page_limit, (long long)s->page_limit_max);
        free(s);
        return CHATD_ERR_INVALID;
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
    s->ips = lh_kchar_table_new(256, ip_entry_free);
    if (!s->dests || !s->ips) {
        tw_destroy(s);
        return CHATD_ERR_NOMEM;
    }
    *inst = s;
    return CHATD_OK;
}

/* The instances whose metrics listener is bound, so that a second instance
 * ([wss] beside [ws]) with the same metrics_listen (the default) leaves the
 * address to the first instead of failing to bind it. Loop thread only. */
#define TW_METRICS_OWNERS 8
static tw_server *metrics_owners[TW_METRICS_OWNERS];

static void metrics_owner_set(tw_server *s, int on)
{
    for (size_t i = 0; i < TW_METRICS_OWNERS; i++) {
        if (on && !metrics_owners[i]) {
            metrics_owners[i] = s;
            return;
        }
        if (!on && metrics_owners[i] == s) metrics_owners[i] = NULL;
    }
}

/* Bind metrics_listen; a failure is logged, not fatal: chat goes on. */
static void metrics_start(tw_server *s)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (!s->metrics_listen || !*s->metrics_listen) return;
    for (size_t i = 0; i < TW_METRICS_OWNERS; i++) {
        if (metrics_owners[i] &&
            strcmp(metrics_owners[i]->metrics_listen, s->metrics_listen) == 0) {
            s->api->log(s->ctx, CHATD_LOG_INFO,
                        "/metrics on %s is served by another transport-ws instance",
                        s->metrics_listen);
            return;
        }
    }
    memset(&ss, 0, sizeof(ss));
    if (evutil_parse_sockaddr_port(s->metrics_listen, (struct sockaddr *)&ss, &sl) != 0) {
        s->api->log(s->ctx, CHATD_LOG_WARN,
                    "metrics_listen: cannot parse '%s' (use ADDRESS:PORT, or empty for none); "
                    "/metrics is not served",
                    s->metrics_listen);
        return;
    }
    s->mlis = evconnlistener_new_bind(
        s->base, accept_cb, s, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
        64, (struct sockaddr *)&ss, sl);
    if (!s->mlis) {
        int e = EVUTIL_SOCKET_ERROR();
        s->api->log(s->ctx, CHATD_LOG_WARN,
                    "cannot listen for /metrics on %s: %s; /metrics is not served (set "
                    "metrics_listen to a free address, or empty)",
                    s->metrics_listen, evutil_socket_error_to_string(e));
        return;
    }
    metrics_owner_set(s, 1);
    s->api->log(s->ctx, CHATD_LOG_INFO, "/metrics on %s", s->metrics_listen);
}

static void metrics_stop(tw_server *s)
{
    if (!s->mlis) return;
    evconnlistener_free(s->mlis);
    s->mlis = NULL;
    metrics_owner_set(s, 0);
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
    s->lis = evconnlistener_new_bind(s->base, accept_cb, s,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_DISABLED,
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
    metrics_start(s);
    tw_update_gauges(s);
    tw_side_table_seed(s, accepts_open); /* accepts once seeded */
    return CHATD_OK;
}

void tw_stop_check(tw_server *s)
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
    tw_stop_check(s);
}

static chatd_status tw_stop(void *inst, chatd_completion *done)
{
    tw_server *s = inst;
    s->stopping = 1;
    metrics_stop(s);
    if (s->lis) {
        evconnlistener_free(s->lis);
        s->lis = NULL;
    }
    if (s->accept_timer) evtimer_del(s->accept_timer);
    tw_conn *c = s->conns, *next;
    while (c) {
        next = c->next;
        if (c->mode == TW_MODE_WS)
            tw_stomp_shutdown(c); /* after its publishes in flight are answered */
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
    metrics_stop(s);
    if (s->stop_timer) event_free(s->stop_timer);
    if (s->accept_timer) event_free(s->accept_timer);
    if (s->dests) lh_table_free(s->dests);
    if (s->ips) lh_table_free(s->ips);
    if (s->scratch) evbuffer_free(s->scratch);
    tw_side_table_free(s);
    tw_conn_flush_drop(s);
    if (s->ssl) SSL_CTX_free(s->ssl);
    for (size_t i = 0; i < s->norigins; i++)
        free(s->origins[i]);
    free(s->origins);
    free(s->web_root);
    free(s);
}

static void tw_session_ended(void *inst, const char *token_hash)
{
    tw_sessions_end_hash(inst, token_hash);
}

static const chatd_transport_ops tw_ops = {
    .size = sizeof(chatd_transport_ops),
    .deliver = tw_deliver,
    .session_ended = tw_session_ended,
};

static const chatd_plugin_desc tw_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_TRANSPORT,
    .name = "transport-ws",
    .version = PACKAGE_VERSION,
    .description =
        "HTTP/1.1, WebSocket and STOMP 1.0-1.2 for browsers, the REST API and the chat page",
    .cfg_keys = tw_cfg_keys,
    .create = tw_create,
    .start = tw_start,
    .stop = tw_stop,
    .destroy = tw_destroy,
    .ops = &tw_ops,
};

CHATD_PLUGIN_DEFINE(tw_desc)
