/*
 * loadgen.c - the chatd benchmark load generator: many WebSocket + STOMP 1.2
 * clients in one process on one libevent loop, against chatd (members logged in
 * through its REST API, rooms "a&b") or RabbitMQ Web-STOMP (/topic/... with
 * guest/guest). Measures delivered messages/s, publish-to-delivery latency
 * (send time embedded in the body, log-bucket histogram), lost and duplicated
 * messages (per-publisher sequence numbers), connection set-up rate, server RSS
 * per connection, and its own CPU share. Loopback only; every run is bounded by
 * a duration and a connection cap. See bench/README.md and docs/benchmarks.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#define LG_MAX_CONNS 20000         /* hard cap on connections per run */
#define LG_MAX_DURATION 600        /* seconds */
#define LG_MAX_SIZE 60000          /* largest message text */
#define LG_MAX_WS_FRAME (1u << 20) /* largest inbound WebSocket message */
#define LG_MAX_STOMP_PENDING (1u << 20)
#define LG_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum target { TARGET_CHATD, TARGET_RABBIT };

enum cstate {
    CS_IDLE,
    CS_TCP,
    CS_WS,
    CS_STOMP,
    CS_SUBSCRIBING,
    CS_READY,
    CS_FAILED,
};

struct member {
    char login[48];
    long id;
    char token[200];
    bool have;
};

struct room {
    char sub_dest[128];
    char pub_dest[128];
    char room_id[64]; /* chatd: "low&high" */
    int members[2];   /* indexes into g.members (chatd) */
    int npubs;        /* publishers in this room */
    int nsubs_ready;  /* subscribers READY when publishing starts */
};

struct conn {
    int idx;
    int room;
    int side; /* which of the room's two members this connection logs in as */
    bool is_sub, is_pub;
    enum cstate state;
    struct bufferevent *bev;
    struct evbuffer *frag;     /* WebSocket fragments being reassembled */
    struct evbuffer *stomp_in; /* STOMP bytes not yet forming a frame */
    char ws_key[32];
    uint64_t t_start, t_connected;
    /* publisher */
    int pub_idx;     /* global publisher index, -1 if none */
    int pos_in_room; /* index among the room's publishers */
    uint64_t seq, sent, receipted;
    int outstanding;
    uint64_t pub_t0;
    double pub_interval_us;
    struct event *tick;
    /* subscriber: last sequence seen per publisher of the room */
    uint64_t *last_seq;
};

/* HDR-like histogram: 32 linear sub-buckets per power of two (about 3%). */
#define H_SUB_BITS 5
#define H_SUB (1 << H_SUB_BITS)
#define H_BUCKETS (64 * H_SUB)
struct hist {
    uint64_t count[H_BUCKETS];
    uint64_t n, max, min;
    long double sum;
};

static struct {
    /* options */
    enum target target;
    int port;
    const char *path;
    const char *label;
    const char *scenario;
    int nsubs, npubs, npubsub, nrooms;
    double rate; /* per publisher msgs/s; 0 = flat out (window) */
    int window;
    int size;
    double duration, drain, settle;
    int connect_conc;
    int http_conc;
    double setup_timeout;
    const char *csv;
    const char *hist_out;
    const char *token_cache;
    const char *prefix;
    const char *password;
    const char *dest_prefix;
    bool persistent;
    bool quiet;
    pid_t rss_pid;
    /* state */
    struct event_base *base;
    struct member *members;
    int nmembers;
    struct room *rooms;
    struct conn *conns;
    int nconns;
    struct conn **pubs;
    int next_connect, connecting, ready, failed, errors_stomp;
    int dropped; /* connections lost after they were ready */
    int members_done, members_failed, members_next;
    uint64_t t_setup0, t_connect0, t_connect_done;
    uint64_t t_pub0, t_pub_end, t_end;
    bool publishing, draining;
    struct hist lat;
    uint64_t delivered, unique, dups, gaps, unknown;
    uint64_t expected_total;
    struct rusage ru0, ru1;
    long rss_before, rss_after, rss_end;
    double srv_cpu0, srv_cpu1;
    struct event *phase_timer;
    struct event *sig_ev;
    char nonce[24];
    unsigned char mask_pool[4096];
    size_t mask_pos;
    char *scratch; /* one outgoing STOMP frame */
    char *body;    /* one outgoing SEND body */
    char *pad;
    uint64_t unique_at_pub_end;
    const char *timeline;
    /* per second of the run (from the start of publishing): deliveries, latency sum and max */
    uint64_t tl_n[LG_MAX_DURATION + 130], tl_max[LG_MAX_DURATION + 130];
    double tl_sum[LG_MAX_DURATION + 130];
    bool interrupted;
} g;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    if (g.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("[loadgen] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("[loadgen] error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---------------------------------------------------------------- histogram */

static int hist_index(uint64_t v)
{
    if (v < H_SUB) return (int)v;
    int e = 63 - __builtin_clzll(v);
    int sub = (int)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
    return (e - H_SUB_BITS + 1) * H_SUB + sub;
}

/* highest value that falls in bucket i */
static uint64_t hist_upper(int i)
{
    if (i < H_SUB) return (uint64_t)i;
    int e = i / H_SUB + H_SUB_BITS - 1;
    uint64_t sub = (uint64_t)(i % H_SUB);
    uint64_t lo = (H_SUB | sub) << (e - H_SUB_BITS);
    return lo + (1ull << (e - H_SUB_BITS)) - 1;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    if (h->n == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->n++;
    h->sum += v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (h->n == 0) return 0;
    uint64_t want = (uint64_t)((p / 100.0) * (double)h->n + 0.999999);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->count[i];
        if (acc >= want) {
            uint64_t u = hist_upper(i);
            return u > h->max ? h->max : u;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------ helpers */

static long read_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat) */
static double read_proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static double cpu_s(const struct rusage *r)
{
    return tv_s(r->ru_utime) + tv_s(r->ru_stime);
}

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

static void conn_fail(struct conn *c, const char *why);
static void check_setup_done(void);
static void start_more_connections(void);
static void pub_send_due(struct conn *c);

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
static int stomp_send(struct conn *c, const char *cmd, const char *headers, const char *body,
                      size_t blen)
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
    const struct conn *p = g.pubs[pub];
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
        if (g.t_pub0 && t > g.t_pub0) {
            uint64_t sec = (t - g.t_pub0) / 1000000000ull;
            if (sec < LG_MAX_DURATION + 130) {
                g.tl_n[sec]++;
                g.tl_sum[sec] += (double)lat;
                if (lat > g.tl_max[sec]) g.tl_max[sec] = lat;
            }
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

static void conn_fail(struct conn *c, const char *why)
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

static void start_more_connections(void)
{
    while (g.connecting < g.connect_conc && g.next_connect < g.nconns)
        conn_start(&g.conns[g.next_connect++]);
}

/* -------------------------------------------------------------- publishing */

static int pub_send_one(struct conn *c)
{
    const struct room *r = &g.rooms[c->room];
    c->seq++;
    char marker[80];
    int ml = snprintf(marker, sizeof marker, "~LG%d.%" PRIu64 ".%" PRIu64 "~", c->pub_idx, c->seq,
                      now_ns());
    if (ml < 0 || (size_t)ml >= sizeof marker) return -1;
    int padn = g.size > ml ? g.size - ml : 0;
    char *body = g.body;
    int bl = snprintf(body, LG_MAX_SIZE + 512, "{\"roomId\":\"%s\",\"message\":\"%s%.*s\"}",
                      r->room_id, marker, padn, g.pad);
    if (bl < 0) return -1;
    char h[256];
    snprintf(h, sizeof h, "destination:%s\ncontent-type:application/json\n%sreceipt:%" PRIu64 "\n",
             r->pub_dest, g.persistent && g.target == TARGET_RABBIT ? "persistent:true\n" : "",
             c->seq);
    if (bl >= LG_MAX_SIZE + 512 || stomp_send(c, "SEND", h, body, (size_t)bl) != 0) return -1;
    c->sent++;
    c->outstanding++;
    return 0;
}

static void pub_send_due(struct conn *c)
{
    if (c->state != CS_READY || !g.publishing) return;
    if (g.rate <= 0) {
        while (c->outstanding < g.window)
            if (pub_send_one(c) != 0) {
                conn_fail(c, "cannot queue SEND");
                return;
            }
        return;
    }
    double el_us = (double)(now_ns() - c->pub_t0) / 1e3;
    uint64_t due = (uint64_t)(el_us / c->pub_interval_us) + 1;
    int burst = 0;
    while (c->sent < due && burst < 1000) {
        if (g.window > 0 && c->outstanding >= g.window) break;
        if (pub_send_one(c) != 0) {
            conn_fail(c, "cannot queue SEND");
            return;
        }
        burst++;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!g.publishing || c->state != CS_READY) return;
    if (c->sent == 0) c->pub_t0 = now_ns();
    pub_send_due(c);
    double iv = c->pub_interval_us < 1000 ? 1000 : c->pub_interval_us;
    struct timeval tv = {(time_t)(iv / 1e6), (suseconds_t)((uint64_t)iv % 1000000)};
    event_add(c->tick, &tv);
}

/* ------------------------------------------------------------------ phases */

static void print_report(void);
static void phase_cb(evutil_socket_t fd, short what, void *arg);

static void schedule_phase(double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(g.phase_timer, &tv);
}

enum phase { PH_SETUP_TIMEOUT, PH_SETTLED, PH_PUB_END, PH_DRAIN_POLL, PH_DONE };
static enum phase g_phase = PH_SETUP_TIMEOUT;

static void start_publishing(void)
{
    for (int i = 0; i < g.nrooms; i++)
        g.rooms[i].nsubs_ready = 0;
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->is_sub && c->state == CS_READY) g.rooms[c->room].nsubs_ready++;
    }
    if (g.rss_pid > 0) g.rss_after = read_rss_kb(g.rss_pid);
    getrusage(RUSAGE_SELF, &g.ru0);
    if (g.rss_pid > 0) g.srv_cpu0 = read_proc_cpu_s(g.rss_pid);
    g.t_pub0 = now_ns();
    g.publishing = g.npubs > 0;
    for (int i = 0; i < g.npubs; i++) {
        struct conn *c = g.pubs[i];
        if (c->state != CS_READY) continue;
        c->pub_t0 = now_ns();
        if (g.rate <= 0) {
            pub_send_due(c);
        } else {
            /* spread publishers evenly over one interval */
            double off = c->pub_interval_us * (double)i / (double)g.npubs;
            struct timeval tv = {(time_t)(off / 1e6), (suseconds_t)((uint64_t)off % 1000000)};
            c->tick = evtimer_new(g.base, on_tick, c);
            if (!c->tick) die("out of memory for publisher timers");
            evtimer_add(c->tick, &tv);
        }
    }
    g_phase = PH_PUB_END;
    schedule_phase(g.duration);
}

static void check_setup_done(void)
{
    if (g_phase != PH_SETUP_TIMEOUT) return;
    if (g.ready + (g.failed - g.dropped) < g.nconns) return;
    g.t_connect_done = now_ns();
    double s = (double)(g.t_connect_done - g.t_connect0) / 1e9;
    logmsg("%d connections ready, %d failed, in %.2f s (%.0f/s)", g.ready, g.failed, s,
           s > 0 ? g.ready / s : 0);
    if (g.ready == 0) {
        g_phase = PH_DONE;
        event_base_loopexit(g.base, NULL);
        return;
    }
    g_phase = PH_SETTLED;
    event_del(g.phase_timer);
    schedule_phase(g.settle);
}

static uint64_t expected_now(void)
{
    uint64_t e = 0;
    for (int i = 0; i < g.npubs; i++) {
        const struct conn *c = g.pubs[i];
        e += c->sent * (uint64_t)g.rooms[c->room].nsubs_ready;
    }
    return e;
}

static void phase_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    switch (g_phase) {
    case PH_SETUP_TIMEOUT:
        logmsg("set-up timed out: %d ready, %d failed, %d pending; going on with the ready ones",
               g.ready, g.failed, g.nconns - g.ready - g.failed);
        for (int i = 0; i < g.nconns; i++)
            if (g.conns[i].state != CS_READY && g.conns[i].state != CS_FAILED)
                conn_fail(&g.conns[i], "set-up timeout");
        g.next_connect = g.nconns;
        check_setup_done();
        break;
    case PH_SETTLED:
        start_publishing();
        if (!g.publishing) {
            g_phase = PH_PUB_END;
        }
        break;
    case PH_PUB_END:
        g.publishing = false;
        g.t_pub_end = now_ns();
        getrusage(RUSAGE_SELF, &g.ru1);
        if (g.rss_pid > 0) g.srv_cpu1 = read_proc_cpu_s(g.rss_pid);
        g.draining = true;
        g.unique_at_pub_end = g.unique;
        g.expected_total = expected_now();
        g_phase = PH_DRAIN_POLL;
        schedule_phase(0.05);
        break;
    case PH_DRAIN_POLL: {
        double waited = (double)(now_ns() - g.t_pub_end) / 1e9;
        uint64_t outstanding = 0;
        for (int i = 0; i < g.npubs; i++)
            if (g.pubs[i]->state == CS_READY) outstanding += (uint64_t)g.pubs[i]->outstanding;
        if ((g.unique >= g.expected_total && outstanding == 0) || waited >= g.drain) {
            g.t_end = now_ns();
            if (g.rss_pid > 0) g.rss_end = read_rss_kb(g.rss_pid);
            g_phase = PH_DONE;
            event_base_loopexit(g.base, NULL);
        } else {
            schedule_phase(0.05);
        }
        break;
    }
    case PH_DONE:
        break;
    }
}

static void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    logmsg("interrupted; reporting what was measured");
    g.interrupted = true;
    if (g.publishing) {
        g.publishing = false;
        g.t_pub_end = now_ns();
        getrusage(RUSAGE_SELF, &g.ru1);
        g.unique_at_pub_end = g.unique;
        g.expected_total = expected_now();
    }
    g.t_end = now_ns();
    event_base_loopexit(g.base, NULL);
}

/* ------------------------------------------------- chatd REST: members */

static void member_next(struct evhttp_connection *hc);

struct http_job {
    struct evhttp_connection *hc;
    int member;
    int step; /* 0 register, 1 login */
};

static void token_cache_load(void)
{
    if (!g.token_cache) return;
    FILE *f = fopen(g.token_cache, "r");
    if (!f) return;
    char login[64], token[200];
    long id;
    int n = 0;
    while (fscanf(f, "%63s %ld %199s", login, &id, token) == 3)
        for (int i = 0; i < g.nmembers; i++)
            if (!g.members[i].have && strcmp(g.members[i].login, login) == 0) {
                g.members[i].id = id;
                snprintf(g.members[i].token, sizeof g.members[i].token, "%s", token);
                g.members[i].have = true;
                n++;
                break;
            }
    fclose(f);
    logmsg("token cache %s: %d of %d members", g.token_cache, n, g.nmembers);
}

/* Write the cache: this run's members, plus the entries of other members
 * already in the file (runs with fewer rooms must not forget the others). */
static void token_cache_save(void)
{
    if (!g.token_cache) return;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", g.token_cache);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        logmsg("cannot write token cache %s: %s", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < g.nmembers; i++)
        if (g.members[i].have)
            fprintf(f, "%s %ld %s\n", g.members[i].login, g.members[i].id, g.members[i].token);
    FILE *old = fopen(g.token_cache, "r");
    if (old) {
        char login[64], token[200];
        long id;
        while (fscanf(old, "%63s %ld %199s", login, &id, token) == 3) {
            bool ours = false;
            for (int i = 0; i < g.nmembers && !ours; i++)
                ours = strcmp(g.members[i].login, login) == 0;
            if (!ours) fprintf(f, "%s %ld %s\n", login, id, token);
        }
        fclose(old);
    }
    if (fclose(f) != 0 || rename(tmp, g.token_cache) != 0)
        logmsg("cannot write token cache %s: %s", g.token_cache, strerror(errno));
}

static void build_rooms_and_connect(void);

static void members_check_done(void)
{
    if (g.members_done + g.members_failed < g.nmembers) return;
    double s = (double)(now_ns() - g.t_setup0) / 1e9;
    logmsg("members ready: %d, failed: %d (%.1f s)", g.members_done, g.members_failed, s);
    if (g.members_failed) {
        logmsg("cannot log in every member; check the chatd log and the REST API");
        g_phase = PH_DONE;
        event_base_loopexit(g.base, NULL);
        return;
    }
    token_cache_save();
    build_rooms_and_connect();
}

static void http_post(struct http_job *job, const char *uri, const char *body);

static void http_done(struct evhttp_request *req, void *arg)
{
    struct http_job *job = arg;
    struct member *m = &g.members[job->member];
    int code = req ? evhttp_request_get_response_code(req) : 0;
    struct evbuffer *in = req ? evhttp_request_get_input_buffer(req) : NULL;
    size_t len = in ? evbuffer_get_length(in) : 0;
    char *txt = NULL;
    if (in && len) {
        txt = malloc(len + 1);
        if (txt) {
            evbuffer_copyout(in, txt, len);
            txt[len] = '\0';
        }
    }
    if (job->step == 0) {
        if (code == 201 || code == 409) {
            job->step = 1;
            char b[256];
            snprintf(b, sizeof b, "{\"loginId\":\"%s\",\"password\":\"%s\"}", m->login, g.password);
            free(txt);
            http_post(job, "/api/login", b);
            return;
        }
        logmsg("POST /api/members for %s: HTTP %d %s", m->login, code, txt ? txt : "");
        g.members_failed++;
    } else {
        struct json_object *root = (code == 200 && txt) ? json_tokener_parse(txt) : NULL;
        struct json_object *tok = NULL, *mem = NULL, *id = NULL;
        if (root && json_object_object_get_ex(root, "token", &tok) &&
            json_object_object_get_ex(root, "member", &mem) &&
            json_object_object_get_ex(mem, "id", &id)) {
            snprintf(m->token, sizeof m->token, "%s", json_object_get_string(tok));
            m->id = json_object_get_int64(id);
            m->have = true;
            g.members_done++;
        } else {
            logmsg("POST /api/login for %s: HTTP %d %s", m->login, code, txt ? txt : "");
            g.members_failed++;
        }
        if (root) json_object_put(root);
    }
    free(txt);
    struct evhttp_connection *hc = job->hc;
    free(job);
    members_check_done();
    if (g_phase == PH_SETUP_TIMEOUT) member_next(hc);
}

static void http_post(struct http_job *job, const char *uri, const char *body)
{
    struct evhttp_request *req = evhttp_request_new(http_done, job);
    if (!req) die("out of memory for an HTTP request");
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char host[32];
    snprintf(host, sizeof host, "127.0.0.1:%d", g.port);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    if (evhttp_make_request(job->hc, req, EVHTTP_REQ_POST, uri) != 0)
        die("cannot send HTTP request %s", uri);
}

static void member_next(struct evhttp_connection *hc)
{
    while (g.members_next < g.nmembers && g.members[g.members_next].have)
        g.members_next++;
    if (g.members_next >= g.nmembers) return;
    struct http_job *job = calloc(1, sizeof *job);
    if (!job) die("out of memory");
    job->hc = hc;
    job->member = g.members_next++;
    struct member *m = &g.members[job->member];
    char b[256];
    snprintf(b, sizeof b, "{\"loginId\":\"%s\",\"name\":\"%s\",\"password\":\"%s\"}", m->login,
             m->login, g.password);
    http_post(job, "/api/members", b);
}

static void members_setup(void)
{
    g.nmembers = 2 * g.nrooms;
    g.members = calloc((size_t)g.nmembers, sizeof *g.members);
    if (!g.members) die("out of memory");
    for (int r = 0; r < g.nrooms; r++) {
        snprintf(g.members[2 * r].login, sizeof g.members[0].login, "%sa%d", g.prefix, r);
        snprintf(g.members[2 * r + 1].login, sizeof g.members[0].login, "%sb%d", g.prefix, r);
    }
    token_cache_load();
    for (int i = 0; i < g.nmembers; i++)
        if (g.members[i].have) g.members_done++;
    if (g.members_done == g.nmembers) {
        members_check_done();
        return;
    }
    for (int k = 0; k < g.http_conc; k++) {
        struct evhttp_connection *hc =
            evhttp_connection_base_new(g.base, NULL, "127.0.0.1", (unsigned short)g.port);
        if (!hc) die("cannot create an HTTP connection to 127.0.0.1:%d", g.port);
        evhttp_connection_set_timeout(hc, 60);
        member_next(hc);
    }
}

/* ------------------------------------------------------------- topology */

static void build_rooms_and_connect(void)
{
    for (int r = 0; r < g.nrooms; r++) {
        struct room *rm = &g.rooms[r];
        if (g.target == TARGET_RABBIT) {
            snprintf(rm->sub_dest, sizeof rm->sub_dest, "/topic/%s%s.%d", g.dest_prefix, g.nonce,
                     r);
            snprintf(rm->pub_dest, sizeof rm->pub_dest, "%s", rm->sub_dest);
            snprintf(rm->room_id, sizeof rm->room_id, "%d", r);
        } else {
            rm->members[0] = 2 * r;
            rm->members[1] = 2 * r + 1;
            long a = g.members[2 * r].id, b = g.members[2 * r + 1].id;
            long lo = a < b ? a : b, hi = a < b ? b : a;
            snprintf(rm->room_id, sizeof rm->room_id, "%ld&%ld", lo, hi);
            snprintf(rm->sub_dest, sizeof rm->sub_dest, "/sub/chat/room/%s", rm->room_id);
            snprintf(rm->pub_dest, sizeof rm->pub_dest, "/pub/chat/message");
        }
    }
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->is_sub && g.rooms[c->room].npubs > 0) {
            c->last_seq = calloc((size_t)g.rooms[c->room].npubs, sizeof *c->last_seq);
            if (!c->last_seq) die("out of memory");
        }
    }
    if (g.rss_pid > 0) g.rss_before = read_rss_kb(g.rss_pid);
    g.t_connect0 = now_ns();
    start_more_connections();
}

static void topology(void)
{
    int subs_only = g.npubsub ? 0 : g.nsubs;
    int pubs_only = g.npubsub ? 0 : g.npubs;
    g.nconns = g.npubsub + subs_only + pubs_only;
    g.npubs = g.npubsub ? (g.npubs ? g.npubsub : 0) : pubs_only;
    if (g.nconns <= 0) die("no connections: give --subs/--pubs or --pubsub");
    if (g.nconns > LG_MAX_CONNS) die("%d connections exceed the cap of %d", g.nconns, LG_MAX_CONNS);
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    g.rooms = calloc((size_t)g.nrooms, sizeof *g.rooms);
    g.pubs = calloc((size_t)(g.npubs ? g.npubs : 1), sizeof *g.pubs);
    if (!g.conns || !g.rooms || !g.pubs) die("out of memory");
    int p = 0;
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        c->idx = i;
        c->pub_idx = -1;
        if (g.npubsub) {
            c->is_sub = true;
            c->is_pub = g.npubs > 0;
            c->room = i % g.nrooms;
            c->side = (i / g.nrooms) % 2;
        } else if (i < subs_only) {
            c->is_sub = true;
            c->room = i % g.nrooms;
            c->side = (i / g.nrooms) % 2;
        } else {
            int k = i - subs_only;
            c->is_pub = true;
            c->room = k % g.nrooms;
            c->side = ((k / g.nrooms) + 1) % 2;
        }
        if (c->is_pub) {
            c->pub_idx = p;
            g.pubs[p++] = c;
            c->pos_in_room = g.rooms[c->room].npubs++;
            c->pub_interval_us = g.rate > 0 ? 1e6 / g.rate : 0;
        }
    }
}

/* ----------------------------------------------------------------- report */

static void print_report(void)
{
    double conn_s =
        g.t_connect_done > g.t_connect0 ? (double)(g.t_connect_done - g.t_connect0) / 1e9 : 0;
    uint64_t tend = g.t_pub_end ? g.t_pub_end : now_ns();
    double pub_s = g.t_pub0 && tend > g.t_pub0 ? (double)(tend - g.t_pub0) / 1e9 : 0;
    double tot_s = g.t_pub0 && g.t_end > g.t_pub0 ? (double)(g.t_end - g.t_pub0) / 1e9 : pub_s;
    uint64_t sent = 0, rcpt = 0;
    for (int i = 0; i < g.npubs; i++) {
        sent += g.pubs[i]->sent;
        rcpt += g.pubs[i]->receipted;
    }
    if (!g.ru1.ru_utime.tv_sec && !g.ru1.ru_utime.tv_usec) getrusage(RUSAGE_SELF, &g.ru1);
    double cpu = cpu_s(&g.ru1) - cpu_s(&g.ru0);
    double cpu_pct = pub_s > 0 ? 100.0 * cpu / pub_s : 0;
    uint64_t expected = g.expected_total;
    uint64_t lost = expected > g.unique ? expected - g.unique : 0;
    double pub_rate = pub_s > 0 ? (double)sent / pub_s : 0;
    /* delivery rate over the publishing window (steady state, excludes the drain) */
    double deliv_rate = pub_s > 0 ? (double)g.unique_at_pub_end / pub_s : 0;
    double conn_rate = conn_s > 0 ? g.ready / conn_s : 0;
    long rss_delta = (g.rss_before > 0 && g.rss_after > 0) ? g.rss_after - g.rss_before : 0;
    double rss_per_conn = g.ready > 0 ? (double)rss_delta * 1024.0 / g.ready : 0;
    double srv_cpu_pct = (g.srv_cpu0 >= 0 && g.srv_cpu1 > 0 && pub_s > 0)
                             ? 100.0 * (g.srv_cpu1 - g.srv_cpu0) / pub_s
                             : 0;
    const struct hist *h = &g.lat;
    double us = 1e3;
    printf("scenario        %s (%s)\n", g.scenario, g.label);
    printf("connections     %d ready, %d failed in set-up, %d dropped later; set-up %.2f s = "
           "%.0f conn/s\n",
           g.ready, g.failed - g.dropped, g.dropped, conn_s, conn_rate);
    printf("published       %" PRIu64 " in %.2f s = %.0f msg/s; receipts %" PRIu64 "\n", sent,
           pub_s, pub_rate, rcpt);
    printf("delivered       %.0f msg/s while publishing; %" PRIu64 " unique of %" PRIu64
           " expected after %.2f s incl. drain\n",
           deliv_rate, g.unique, expected, tot_s);
    printf("lost %" PRIu64 ", duplicated %" PRIu64 ", gaps %" PRIu64 ", unknown %" PRIu64
           ", STOMP errors %d\n",
           lost, g.dups, g.gaps, g.unknown, g.errors_stomp);
    printf("latency us      p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f (n=%" PRIu64 ")\n",
           hist_pct(h, 50) / us, hist_pct(h, 99) / us, hist_pct(h, 99.9) / us, h->max / us,
           h->n ? (double)(h->sum / h->n) / us : 0, h->n);
    if (g.rss_pid > 0)
        printf("server RSS      before %ld KB, connected %ld KB, end %ld KB: %.0f B/connection\n",
               g.rss_before, g.rss_after, g.rss_end, rss_per_conn);
    if (g.rss_pid > 0) printf("server CPU      %.1f%% of one core while publishing\n", srv_cpu_pct);
    printf("loadgen CPU     %.1f%% of one core while publishing\n", cpu_pct);
    fflush(stdout);

    if (g.csv) {
        FILE *f = fopen(g.csv, "a");
        if (!f) {
            logmsg("cannot append to %s: %s", g.csv, strerror(errno));
        } else {
            if (ftell(f) == 0)
                fprintf(f, "label,target,scenario,conns,subs,pubs,rooms,rate,window,size,duration,"
                           "ready,failed,setup_s,conn_per_s,published,receipts,expected,delivered,"
                           "lost,dups,pub_per_s,deliv_per_s,p50_us,p99_us,p999_us,max_us,mean_us,"
                           "loadgen_cpu_pct,rss_before_kb,rss_conn_kb,rss_end_kb,"
                           "rss_bytes_per_conn,stomp_errors,server_cpu_pct,dropped\n");
            fprintf(f,
                    "%s,%s,%s,%d,%d,%d,%d,%.3f,%d,%d,%.1f,%d,%d,%.3f,%.0f,%" PRIu64 ",%" PRIu64
                    ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                    ",%.0f,%.0f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%ld,%ld,%ld,%.0f,%d,%.1f,%d\n",
                    g.label, g.target == TARGET_RABBIT ? "rabbitmq" : "chatd", g.scenario, g.nconns,
                    g.npubsub ? g.npubsub : g.nsubs, g.npubs, g.nrooms, g.rate, g.window, g.size,
                    g.duration, g.ready, g.failed, conn_s, conn_rate, sent, rcpt, expected,
                    g.unique, lost, g.dups, pub_rate, deliv_rate, hist_pct(h, 50) / us,
                    hist_pct(h, 99) / us, hist_pct(h, 99.9) / us, h->max / us,
                    h->n ? (double)(h->sum / h->n) / us : 0, cpu_pct, g.rss_before, g.rss_after,
                    g.rss_end, rss_per_conn, g.errors_stomp, srv_cpu_pct, g.dropped);
            fclose(f);
        }
    }
    if (g.timeline && h->n) {
        FILE *f = fopen(g.timeline, "w");
        if (!f) {
            logmsg("cannot write %s: %s", g.timeline, strerror(errno));
        } else {
            fprintf(f, "# second deliveries mean_latency_us max_latency_us\n");
            for (size_t i = 0; i < LG_MAX_DURATION + 130 && i <= (size_t)(tot_s + 1); i++)
                fprintf(f, "%zu %" PRIu64 " %.1f %.1f\n", i, g.tl_n[i],
                        g.tl_n[i] ? g.tl_sum[i] / (double)g.tl_n[i] / us : 0, g.tl_max[i] / us);
            fclose(f);
        }
    }
    if (g.hist_out && h->n) {
        FILE *f = fopen(g.hist_out, "w");
        if (!f) {
            logmsg("cannot write %s: %s", g.hist_out, strerror(errno));
        } else {
            fprintf(f, "# percentile latency_us one_over_one_minus_p\n");
            static const double ps[] = {0,  10,   25,   50,    75,    90,     95,
                                        99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                fprintf(f, "%g %.1f %g\n", ps[i], hist_pct(h, ps[i] ? ps[i] : 0.0001) / us,
                        1.0 / (1.0 - ps[i] / 100.0));
            fprintf(f, "100 %.1f %g\n", h->max / us, 1e6);
            fclose(f);
        }
    }
}

/* ------------------------------------------------------------------- main */

static void usage(void)
{
    puts("usage: loadgen --target chatd|rabbit --port P [options]\n"
         "  --path /ws            WebSocket path\n"
         "  --subs N --pubs M     N subscriber and M publisher connections\n"
         "  --pubsub N            N connections that each subscribe and publish (1:1 chat);\n"
         "                        add --pubs 0 to make them subscribe only\n"
         "  --rooms R             destinations (chatd: rooms of two members each)\n"
         "  --rate X              messages/s per publisher (0 = flat out with --window)\n"
         "  --window W            outstanding receipts per publisher (flat out; default 16)\n"
         "  --size B              message text bytes (default 64)\n"
         "  --duration S          publishing seconds (default 10, max 600)\n"
         "  --drain S             seconds to wait for in-flight messages (default 5)\n"
         "  --settle S            seconds between set-up and publishing (default 1)\n"
         "  --connect-conc K      connection attempts in flight (default 200)\n"
         "  --setup-timeout S     give up on slow connections after S (default 120)\n"
         "  --persistent          rabbit: durable subscriptions and persistent messages\n"
         "  --server-pid PID      report the server's RSS delta per connection and its\n"
         "                        CPU share while publishing (alias --rss-pid)\n"
         "  --csv FILE            append a CSV row (header when the file is new)\n"
         "  --hist FILE           write the latency percentile distribution\n"
         "  --timeline FILE       write deliveries and mean/max latency per second\n"
         "  --label L --scenario S  names in the CSV\n"
         "  chatd: --prefix P (member login prefix), --password W, --token-cache FILE,\n"
         "         --http-conc K (parallel REST requests while logging in)\n"
         "  rabbit: --dest-prefix P (topic name prefix)\n"
         "  -q quiet");
}

int main(int argc, char **argv)
{
    g.path = "/ws";
    g.label = "run";
    g.scenario = "custom";
    g.nrooms = 1;
    g.window = 16;
    g.size = 64;
    g.duration = 10;
    g.drain = 5;
    g.settle = 1;
    g.connect_conc = 200;
    g.http_conc = 4;
    g.setup_timeout = 120;
    g.prefix = "lg";
    g.password = "bench-password-1";
    g.dest_prefix = "room";
    g.npubs = -1;
    bool target_set = false;

    static const struct option opts[] = {
        {"target", 1, 0, 't'},        {"port", 1, 0, 'p'},         {"path", 1, 0, 'P'},
        {"subs", 1, 0, 's'},          {"pubs", 1, 0, 'm'},         {"pubsub", 1, 0, 'b'},
        {"rooms", 1, 0, 'r'},         {"rate", 1, 0, 'R'},         {"window", 1, 0, 'w'},
        {"size", 1, 0, 'z'},          {"duration", 1, 0, 'd'},     {"drain", 1, 0, 'D'},
        {"settle", 1, 0, 'S'},        {"connect-conc", 1, 0, 'k'}, {"http-conc", 1, 0, 'H'},
        {"setup-timeout", 1, 0, 'T'}, {"csv", 1, 0, 'c'},          {"hist", 1, 0, 'h'},
        {"label", 1, 0, 'l'},         {"scenario", 1, 0, 'n'},     {"token-cache", 1, 0, 'C'},
        {"prefix", 1, 0, 'x'},        {"password", 1, 0, 'W'},     {"dest-prefix", 1, 0, 'X'},
        {"persistent", 0, 0, 'Y'},    {"rss-pid", 1, 0, 'M'},      {"server-pid", 1, 0, 'M'},
        {"help", 0, 0, 'Z'},          {"timeline", 1, 0, 'L'},     {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            if (strcmp(optarg, "chatd") == 0)
                g.target = TARGET_CHATD;
            else if (strcmp(optarg, "rabbit") == 0 || strcmp(optarg, "rabbitmq") == 0)
                g.target = TARGET_RABBIT;
            else
                die("--target must be chatd or rabbit");
            target_set = true;
            break;
        case 'p':
            g.port = atoi(optarg);
            break;
        case 'P':
            g.path = optarg;
            break;
        case 's':
            g.nsubs = atoi(optarg);
            break;
        case 'm':
            g.npubs = atoi(optarg);
            break;
        case 'b':
            g.npubsub = atoi(optarg);
            break;
        case 'r':
            g.nrooms = atoi(optarg);
            break;
        case 'R':
            g.rate = atof(optarg);
            break;
        case 'w':
            g.window = atoi(optarg);
            break;
        case 'z':
            g.size = atoi(optarg);
            break;
        case 'd':
            g.duration = atof(optarg);
            break;
        case 'D':
            g.drain = atof(optarg);
            break;
        case 'S':
            g.settle = atof(optarg);
            break;
        case 'k':
            g.connect_conc = atoi(optarg);
            break;
        case 'H':
            g.http_conc = atoi(optarg);
            break;
        case 'T':
            g.setup_timeout = atof(optarg);
            break;
        case 'c':
            g.csv = optarg;
            break;
        case 'h':
            g.hist_out = optarg;
            break;
        case 'l':
            g.label = optarg;
            break;
        case 'n':
            g.scenario = optarg;
            break;
        case 'C':
            g.token_cache = optarg;
            break;
        case 'x':
            g.prefix = optarg;
            break;
        case 'W':
            g.password = optarg;
            break;
        case 'X':
            g.dest_prefix = optarg;
            break;
        case 'Y':
            g.persistent = true;
            break;
        case 'M':
            g.rss_pid = (pid_t)atoi(optarg);
            break;
        case 'q':
            g.quiet = true;
            break;
        case 'L':
            g.timeline = optarg;
            break;
        case 'Z':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (!target_set || g.port <= 0 || g.port > 65535)
        die("give --target chatd|rabbit and --port (see --help)");
    if (g.npubs < 0) g.npubs = g.npubsub ? g.npubsub : 0;
    if (g.nrooms < 1 || g.nrooms > LG_MAX_CONNS) die("--rooms must be 1..%d", LG_MAX_CONNS);
    if (g.size < 0 || g.size > LG_MAX_SIZE) die("--size must be 0..%d", LG_MAX_SIZE);
    if (g.duration <= 0 || g.duration > LG_MAX_DURATION)
        die("--duration must be in (0, %d] seconds", LG_MAX_DURATION);
    if (g.drain < 0 || g.drain > 120 || g.settle < 0 || g.settle > 120)
        die("--drain and --settle must be 0..120 seconds");
    if (g.window < 0 || (g.rate <= 0 && g.window < 1))
        die("flat out (--rate 0) needs --window >= 1");
    if (g.connect_conc < 1 || g.http_conc < 1 || g.http_conc > 64)
        die("--connect-conc >= 1 and --http-conc 1..64");
    if (g.setup_timeout <= 0 || g.setup_timeout > 600) die("--setup-timeout must be in (0, 600]");
    if (strchr(g.password, '"') || strchr(g.prefix, '"') || strlen(g.prefix) > 20)
        die("--prefix (<= 20 chars) and --password must not contain quotes");

    /* one fd per connection, plus a margin; never above the hard limit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)LG_MAX_CONNS;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
        if (rl.rlim_cur < want) {
            rl.rlim_cur = want;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                logmsg("cannot raise the open-file limit: %s", strerror(errno));
        }
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g.nonce, sizeof g.nonce, "%lx%x", (long)time(NULL) & 0xffffff, (unsigned)getpid());
    g.mask_pos = sizeof g.mask_pool;
    g.scratch = malloc(LG_MAX_SIZE + 4096);
    g.pad = malloc(LG_MAX_SIZE + 1);
    g.body = malloc(LG_MAX_SIZE + 512);
    if (!g.scratch || !g.pad || !g.body) die("out of memory");
    for (int i = 0; i < LG_MAX_SIZE; i++)
        g.pad[i] = (char)('a' + i % 26);
    g.pad[LG_MAX_SIZE] = '\0';

    topology();
    g.base = event_base_new();
    if (!g.base) die("cannot create the event loop");
    g.phase_timer = evtimer_new(g.base, phase_cb, NULL);
    g.sig_ev = evsignal_new(g.base, SIGINT, on_signal, NULL);
    struct event *sig_term = evsignal_new(g.base, SIGTERM, on_signal, NULL);
    if (!g.phase_timer || !g.sig_ev || !sig_term) die("cannot create timers");
    event_add(g.sig_ev, NULL);
    event_add(sig_term, NULL);
    schedule_phase(g.setup_timeout);
    g.t_setup0 = now_ns();
    if (g.target == TARGET_CHATD)
        members_setup();
    else
        build_rooms_and_connect();

    event_base_dispatch(g.base);
    if (g_phase == PH_DONE || g.interrupted || g.t_pub0) print_report();
    int rc = (g.ready == 0) ? 1 : 0;
    /* durable rabbit subscriptions: remove their queues */
    if (g.target == TARGET_RABBIT && g.persistent) {
        for (int i = 0; i < g.nconns; i++) {
            struct conn *c = &g.conns[i];
            if (c->state == CS_READY && c->is_sub) {
                char h[128];
                snprintf(h, sizeof h, "id:s%s-%d\ndurable:true\n", g.nonce, c->idx);
                if (stomp_send(c, "UNSUBSCRIBE", h, NULL, 0) != 0)
                    logmsg("conn %d: cannot queue UNSUBSCRIBE", c->idx);
            }
        }
        struct timeval tv = {1, 0};
        event_base_loopexit(g.base, &tv);
        event_base_dispatch(g.base);
    }
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->bev) bufferevent_free(c->bev);
        if (c->frag) evbuffer_free(c->frag);
        if (c->stomp_in) evbuffer_free(c->stomp_in);
        if (c->tick) event_free(c->tick);
        free(c->last_seq);
    }
    event_free(g.phase_timer);
    event_free(g.sig_ev);
    event_free(sig_term);
    event_base_free(g.base);
    free(g.conns);
    free(g.rooms);
    free(g.pubs);
    free(g.members);
    free(g.scratch);
    free(g.pad);
    free(g.body);
    return rc;
}
