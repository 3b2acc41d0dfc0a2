/*
 * loadgen_client.c - one load generator connection: TCP connect, the RFC 6455
 * client handshake and masked frames, STOMP 1.2 CONNECT/SUBSCRIBE/SEND framing
 * and parsing, and the accounting of each MESSAGE (latency, lost, duplicated).
 */
#define _GNU_SOURCE
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "loadgen.h"

static void mask_key(unsigned char out[4])
{
    if (g.mask_pos + 4 > sizeof g.mask_pool) {
        if (RAND_bytes(g.mask_pool, sizeof g.mask_pool) != 1)
            die("RAND_bytes failed (OpenSSL random generator unavailable)");
        g.mask_pos = 0;
    }
    memcpy(out, g.mask_pool + g.mask_pos, 4);
    g.mask_pos += 4;
}

/* ---------------------------------------------------------------- websocket */

/* Queue one masked client frame with opcode op carrying n bytes of data. */
static int ws_send(struct conn *c, int op, const char *data, size_t n)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t hl = 2 + 4 + (n < 126 ? 0 : n < 65536 ? 2 : 8);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, hl + n, &v, 1) < 1 || v.iov_len < hl + n) return -1;
    unsigned char *p = v.iov_base;
    size_t i = 0;
    p[i++] = (unsigned char)(0x80 | op);
    if (n < 126) {
        p[i++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        p[i++] = 0x80 | 126;
        p[i++] = (unsigned char)(n >> 8);
        p[i++] = (unsigned char)n;
    } else {
        p[i++] = 0x80 | 127;
        for (int s = 56; s >= 0; s -= 8)
            p[i++] = (unsigned char)((uint64_t)n >> s);
    }
    unsigned char m[4];
    mask_key(m);
    memcpy(p + i, m, 4);
    i += 4;
    for (size_t k = 0; k < n; k++)
        p[i + k] = (unsigned char)data[k] ^ m[k & 3];
    v.iov_len = hl + n;
    return evbuffer_commit_space(out, &v, 1);
}

/* Send one STOMP frame: command, headers (already "k:v\n" joined), body. */
int stomp_send(struct conn *c, const char *cmd, const char *headers, const char *body, size_t blen)
{
    int h = snprintf(g.scratch, 1024, "%s\n%s", cmd, headers);
    if (h < 0 || h >= 1024) return -1;
    size_t n = (size_t)h;
    if (body) {
        int k = snprintf(g.scratch + n, 64, "content-length:%zu\n", blen);
        if (k < 0 || k >= 64) return -1;
        n += (size_t)k;
    }
    g.scratch[n++] = '\n';
    if (body) {
        memcpy(g.scratch + n, body, blen);
        n += blen;
    }
    g.scratch[n++] = '\0';
    return ws_send(c, 1, g.scratch, n);
}

static const char *member_login(const struct conn *c)
{
    return g.members[g.rooms[c->room].members[c->side]].login;
}

static void send_connect(struct conn *c)
{
    char h[512];
    if (g.target == TARGET_RABBIT)
        snprintf(h, sizeof h,
                 "accept-version:1.2\nhost:/\nlogin:guest\npasscode:guest\nheart-beat:0,0\n");
    else
        snprintf(h, sizeof h,
                 "accept-version:1.2\nhost:127.0.0.1\nlogin:%s\npasscode:%s\nheart-beat:0,0\n",
                 member_login(c), g.members[g.rooms[c->room].members[c->side]].token);
    if (stomp_send(c, "CONNECT", h, NULL, 0) != 0)
        conn_fail(c, "cannot queue CONNECT");
    else
        c->state = CS_STOMP;
}

static void send_subscribe(struct conn *c)
{
    char h[512];
    const struct room *r = &g.rooms[c->room];
    if (g.target == TARGET_RABBIT && g.persistent)
        snprintf(h, sizeof h,
                 "id:s%s-%d\ndestination:%s\nack:auto\ndurable:true\nauto-delete:false\n"
                 "receipt:sub\n",
                 g.nonce, c->idx, r->sub_dest);
    else
        snprintf(h, sizeof h, "id:s%d\ndestination:%s\nack:auto\nreceipt:sub\n", c->idx,
                 r->sub_dest);
    if (stomp_send(c, "SUBSCRIBE", h, NULL, 0) != 0)
        conn_fail(c, "cannot queue SUBSCRIBE");
    else
        c->state = CS_SUBSCRIBING;
}

static void conn_ready(struct conn *c)
{
    c->state = CS_READY;
    g.ready++;
    g.connecting--;
    start_more_connections();
    check_setup_done();
}

/* ------------------------------------------------------------------- stomp */

static const char *hdr_find(const char *hdrs, size_t hlen, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = hdrs, *end = hdrs + hlen;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && memcmp(p, name, nl) == 0) {
            *vlen = (size_t)(eol - p) - nl - 1;
            if (*vlen && p[nl + 1 + *vlen - 1] == '\r') (*vlen)--;
            return p + nl + 1;
        }
        p = eol + 1;
    }
    return NULL;
}

/* A MESSAGE body arrived: find the marker "~LG<pub>.<seq>.<ns>~" and account. */
static void on_message(struct conn *c, const char *body, size_t blen)
{
    uint64_t t = now_ns();
    g.delivered++;
    const char *m = memmem(body, blen, "~LG", 3);
    if (!m) {
        g.unknown++;
        return;
    }
    char *e;
    unsigned long pub = strtoul(m + 3, &e, 10);
    if (*e != '.') {
        g.unknown++;
        return;
    }
    unsigned long long seq = strtoull(e + 1, &e, 10);
    if (*e != '.') {
        g.unknown++;
        return;
    }
    unsigned long long ts = strtoull(e + 1, &e, 10);
    if (*e != '~' || pub >= (unsigned long)g.npubs || !c->last_seq) {
        g.unknown++;
        return;
    }
    struct conn *p = g.pubs[pub];
    if (p->room != c->room) {
        g.unknown++;
        return;
    }
    uint64_t *last = &c->last_seq[p->pos_in_room];
    if (seq > *last) {
        if (seq != *last + 1) g.gaps += seq - *last - 1;
        *last = seq;
        g.unique++;
        uint64_t lat = t > ts ? t - ts : 0;
        hist_add(&g.lat, lat);
        if (g.tl && g.t_pub0 && t > g.t_pub0) {
            uint64_t sec = (t - g.t_pub0) / 1000000000ull;
            if (sec < g.ntl) hist_add(&g.tl[sec], lat);
        }
        /* --inflight: the last copy of a message lets its publisher send the next */
        if (p->copies &&
            ++p->copies[seq % (uint64_t)g.inflight] >= (uint32_t)g.rooms[p->room].nsubs_ready) {
            p->copies[seq % (uint64_t)g.inflight] = 0;
            p->full++;
            if (g.publishing) pub_send_due(p);
        }
    } else {
        g.dups++;
    }
}

static void on_frame(struct conn *c, const char *f, size_t n)
{
    const char *eol = memchr(f, '\n', n);
    if (!eol) return;
    size_t clen = (size_t)(eol - f);
    if (clen && f[clen - 1] == '\r') clen--;
    const char *hdrs = eol + 1;
    const char *hend = memmem(hdrs, n - (size_t)(hdrs - f), "\n\n", 2);
    size_t hlen;
    const char *body;
    if (hend) {
        hlen = (size_t)(hend - hdrs) + 1;
        body = hend + 2;
    } else if (hdrs < f + n && hdrs[0] == '\n') {
        hlen = 0;
        body = hdrs + 1;
    } else {
        hlen = n - (size_t)(hdrs - f);
        body = f + n;
    }
    size_t blen = (size_t)(f + n - body);

    if (clen == 7 && memcmp(f, "MESSAGE", 7) == 0) {
        on_message(c, body, blen);
    } else if (clen == 7 && memcmp(f, "RECEIPT", 7) == 0) {
        size_t vl;
        const char *v = hdr_find(hdrs, hlen, "receipt-id", &vl);
        if (v && vl == 3 && memcmp(v, "sub", 3) == 0) {
            if (c->state == CS_SUBSCRIBING) {
                c->t_connected = now_ns();
                conn_ready(c);
            }
        } else if (v) {
            c->receipted++;
            if (c->outstanding > 0) c->outstanding--;
            if (g.publishing && g.rate <= 0) pub_send_due(c);
        }
    } else if (clen == 9 && memcmp(f, "CONNECTED", 9) == 0) {
        if (c->state == CS_STOMP) {
            if (c->is_sub) {
                send_subscribe(c);
            } else {
                c->t_connected = now_ns();
                conn_ready(c);
            }
        }
    } else if (clen == 5 && memcmp(f, "ERROR", 5) == 0) {
        size_t vl = 0;
        const char *v = hdr_find(hdrs, hlen, "message", &vl);
        g.errors_stomp++;
        if (g.errors_stomp <= 5)
            logmsg("conn %d: STOMP ERROR: %.*s %.*s", c->idx, (int)vl, v ? v : "",
                   (int)(blen > 200 ? 200 : blen), body);
        conn_fail(c, "STOMP ERROR");
    }
}

/* Parse as many complete STOMP frames as p[0..n) holds; return bytes used. */
static size_t stomp_parse(struct conn *c, const char *p, size_t n)
{
    size_t used = 0;
    while (used < n && c->state != CS_FAILED) {
        const char *s = p + used;
        size_t left = n - used;
        /* heart-beat EOLs between frames */
        if (s[0] == '\n' || s[0] == '\r') {
            used++;
            continue;
        }
        const char *hend = memmem(s, left, "\n\n", 2);
        if (!hend) break;
        size_t vl;
        const char *cl = hdr_find(s, (size_t)(hend - s), "content-length", &vl);
        size_t flen;
        if (cl) {
            size_t blen = strtoul(cl, NULL, 10);
            size_t need = (size_t)(hend + 2 - s) + blen + 1;
            if (left < need) break;
            flen = need - 1;
        } else {
            const char *nul = memchr(hend, '\0', left - (size_t)(hend - s));
            if (!nul) break;
            flen = (size_t)(nul - s);
        }
        on_frame(c, s, flen);
        used += flen + 1;
    }
    return used;
}

static void stomp_feed(struct conn *c, const char *p, size_t n)
{
    if (evbuffer_get_length(c->stomp_in) == 0) {
        size_t used = stomp_parse(c, p, n);
        if (used < n && c->state != CS_FAILED) evbuffer_add(c->stomp_in, p + used, n - used);
    } else {
        evbuffer_add(c->stomp_in, p, n);
        size_t len = evbuffer_get_length(c->stomp_in);
        const char *q = (const char *)evbuffer_pullup(c->stomp_in, -1);
        size_t used = stomp_parse(c, q, len);
        if (c->state != CS_FAILED) evbuffer_drain(c->stomp_in, used);
    }
    if (c->state != CS_FAILED && evbuffer_get_length(c->stomp_in) > LG_MAX_STOMP_PENDING)
        conn_fail(c, "STOMP frame too large or unterminated");
}

/* ------------------------------------------------------- connection reads */

static void ws_on_payload(struct conn *c, int op, const unsigned char *p, size_t n)
{
    if (op == 9) { /* ping */
        if (ws_send(c, 10, (const char *)p, n) != 0) conn_fail(c, "cannot queue pong");
    } else if (op == 8) {
        char why[160];
        if (n >= 2)
            snprintf(why, sizeof why, "server closed the WebSocket: code %d %.*s",
                     (p[0] << 8) | p[1], (int)(n - 2 > 100 ? 100 : n - 2), (const char *)p + 2);
        else
            snprintf(why, sizeof why, "server closed the WebSocket");
        conn_fail(c, why);
    } else if (op == 1 || op == 2) {
        stomp_feed(c, (const char *)p, n);
    }
}

static void ws_read(struct conn *c, struct evbuffer *in)
{
    while (c->state != CS_FAILED) {
        unsigned char h[14];
        size_t have = evbuffer_get_length(in);
        if (have < 2) return;
        size_t hn = have < sizeof h ? have : sizeof h;
        if (evbuffer_copyout(in, h, hn) < 2) return;
        int fin = h[0] & 0x80, op = h[0] & 0x0f;
        if (h[1] & 0x80) {
            conn_fail(c, "server sent a masked frame");
            return;
        }
        uint64_t len = h[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (hn < 4) return;
            len = ((uint64_t)h[2] << 8) | h[3];
            hl = 4;
        } else if (len == 127) {
            if (hn < 10) return;
            len = 0;
            for (int i = 2; i < 10; i++)
                len = (len << 8) | h[i];
            hl = 10;
        }
        if (len > LG_MAX_WS_FRAME) {
            conn_fail(c, "WebSocket frame too large");
            return;
        }
        if (have < hl + len) return;
        const unsigned char *p = evbuffer_pullup(in, (ev_ssize_t)(hl + len)) + hl;
        if (op == 0) {
            evbuffer_add(c->frag, p, (size_t)len);
            if (evbuffer_get_length(c->frag) > LG_MAX_WS_FRAME) {
                conn_fail(c, "fragmented message too large");
                return;
            }
            if (fin) {
                size_t fl = evbuffer_get_length(c->frag);
                /* first byte of frag holds the original opcode */
                const unsigned char *fp = evbuffer_pullup(c->frag, -1);
                ws_on_payload(c, fp[0], fp + 1, fl - 1);
                if (c->state != CS_FAILED) evbuffer_drain(c->frag, fl);
            }
        } else if (!fin && (op == 1 || op == 2)) {
            unsigned char o = (unsigned char)op;
            evbuffer_drain(c->frag, evbuffer_get_length(c->frag));
            evbuffer_add(c->frag, &o, 1);
            evbuffer_add(c->frag, p, (size_t)len);
        } else {
            ws_on_payload(c, op, p, (size_t)len);
        }
        if (c->state == CS_FAILED) return;
        evbuffer_drain(in, hl + len);
    }
}

static bool handshake_ok(struct conn *c, const char *resp, size_t n)
{
    if (n < 12 || memcmp(resp, "HTTP/1.1 101", 12) != 0) return false;
    unsigned char sha[SHA_DIGEST_LENGTH];
    char src[96], want[64];
    snprintf(src, sizeof src, "%s%s", c->ws_key, LG_WS_GUID);
    SHA1((const unsigned char *)src, strlen(src), sha);
    EVP_EncodeBlock((unsigned char *)want, sha, SHA_DIGEST_LENGTH);
    const char *p = resp;
    const char *end = resp + n;
    while (p < end) {
        const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > 21 && strncasecmp(p, "Sec-WebSocket-Accept:", 21) == 0) {
            const char *v = p + 21;
            while (*v == ' ')
                v++;
            return (size_t)(eol - v) == strlen(want) && memcmp(v, want, strlen(want)) == 0;
        }
        p = eol + 2;
    }
    return false;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->state == CS_WS) {
        struct evbuffer_ptr e = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (e.pos < 0) {
            if (evbuffer_get_length(in) > 8192) conn_fail(c, "handshake response too large");
            return;
        }
        size_t hl = (size_t)e.pos + 4;
        const char *resp = (const char *)evbuffer_pullup(in, (ev_ssize_t)hl);
        if (!handshake_ok(c, resp, hl)) {
            if (g.failed < 3)
                logmsg("conn %d: WebSocket handshake refused: %.*s", c->idx,
                       (int)(hl > 120 ? 120 : hl), resp);
            conn_fail(c, "handshake refused");
            return;
        }
        evbuffer_drain(in, hl);
        send_connect(c);
    }
    if (c->state != CS_FAILED && c->state != CS_WS) ws_read(c, in);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        unsigned char raw[16];
        if (RAND_bytes(raw, sizeof raw) != 1) {
            conn_fail(c, "RAND_bytes failed");
            return;
        }
        EVP_EncodeBlock((unsigned char *)c->ws_key, raw, sizeof raw);
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                         "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n",
                         g.path, g.port, c->ws_key);
        if (n < 0 || (size_t)n >= sizeof req || bufferevent_write(bev, req, (size_t)n) != 0) {
            conn_fail(c, "cannot queue handshake");
            return;
        }
        c->state = CS_WS;
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
        const char *why = (what & BEV_EVENT_EOF)
                              ? "server closed the connection"
                              : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR());
        conn_fail(c, why);
    }
}

void conn_fail(struct conn *c, const char *why)
{
    if (c->state == CS_FAILED) return;
    bool setup = c->state != CS_READY && c->state != CS_IDLE;
    if (!setup) g.dropped++;
    if (g.failed < 5 && !g.interrupted)
        logmsg("conn %d %s: %s", c->idx, setup ? "failed during set-up" : "dropped", why);
    c->state = CS_FAILED;
    g.failed++;
    if (c->tick) event_del(c->tick);
    if (c->bev) {
        /* freed at exit: a callback may still be running on this bev */
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        shutdown(bufferevent_getfd(c->bev), SHUT_RDWR);
    }
    if (setup) {
        g.connecting--;
        start_more_connections();
        check_setup_done();
    }
}

static void conn_start(struct conn *c)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)g.port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->bev = bufferevent_socket_new(g.base, -1, BEV_OPT_CLOSE_ON_FREE);
    c->frag = evbuffer_new();
    c->stomp_in = evbuffer_new();
    if (!c->bev || !c->frag || !c->stomp_in) die("out of memory creating connection %d", c->idx);
    bufferevent_setcb(c->bev, on_read, NULL, on_event, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->t_start = now_ns();
    c->state = CS_TCP;
    g.connecting++;
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin, sizeof sin) != 0)
        conn_fail(c, "connect() failed (is the server listening? file descriptors left?)");
}

void start_more_connections(void)
{
    while (g.connecting < g.connect_conc && g.next_connect < g.nconns)
        conn_start(&g.conns[g.next_connect++]);
}
