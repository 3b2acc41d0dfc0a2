/*
 * fuzz_client.c - the client side of the fuzz targets that talk to a live
 * transport-ws (see fuzz_core.h): loopback connections driven by running
 * the test core's loop until nothing moves, and strict parsers of what the
 * server sends back (HTTP responses, JSON bodies), plus masked WebSocket
 * frames to send.
 */
#include "config.h"

#include "fuzz_core.h"

#include "testcore.h"
#include "ws_codec.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

void fz_buf_add(fz_buf *b, const void *data, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len + 1)
            cap *= 2;
        b->p = realloc(b->p, cap);
        FZ_CHECK(b->p, "out of memory");
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->len, data, len);
    b->len += len;
    b->p[b->len] = '\0';
}

void fz_buf_free(fz_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ---- connections -------------------------------------------------------------- */

static void loop_once(void)
{
    event_base_loop(testcore_base(), EVLOOP_NONBLOCK);
}

int fz_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    FZ_CHECK(fd >= 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* closed with a reset, so that thousands of connections a second leave
     * no TIME_WAIT behind to exhaust the ports */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    int rc = connect(fd, (const struct sockaddr *)fz_server_addr(), sizeof(struct sockaddr_in));
    FZ_CHECK(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    long before = fz_server_conns();
    for (int i = 0; i < 100000 && fz_server_conns() == before; i++)
        loop_once();
    FZ_CHECK(fz_server_conns() == before + 1, "the server did not accept (%ld connections)",
             fz_server_conns());
    int err = 0;
    socklen_t el = sizeof(err);
    FZ_CHECK(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err == 0, "connect: %s",
             strerror(err));
    return fd;
}

/* Read what is there; 1 on EOF or error. */
static int drain(int fd, fz_buf *out, size_t *got)
{
    char buf[65536];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n > 0) {
            if (out) fz_buf_add(out, buf, (size_t)n);
            *got += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
        if (n < 0 && errno == EINTR) continue;
        return 1;
    }
}

int fz_pump(int fd, fz_buf *out)
{
    int quiet = 0, eof = 0;
    for (int i = 0; i < 1000000 && quiet < 4; i++) {
        loop_once();
        size_t got = 0;
        if (!eof) eof = drain(fd, out, &got);
        if (got == 0 && event_base_get_num_events(testcore_base(), EVENT_BASE_COUNT_ACTIVE) == 0)
            quiet++;
        else
            quiet = 0;
    }
    return eof;
}

void fz_send(int fd, const void *data, size_t len)
{
    const char *p = data;
    int stalls = 0;
    while (len > 0 && stalls < 50) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            stalls = 0;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return;
        if (fz_pump(fd, NULL)) return; /* closed: what it answered is lost, as for a client */
        stalls++;
    }
}

void fz_step(int n)
{
    for (int i = 0; i < n; i++)
        loop_once();
}

void fz_close(int fd)
{
    close(fd);
    /* answers held or still posted come now, for a client that is gone (a
     * connection waiting for one does not read, so it notices only then) */
    fz_hold(0);
    for (int i = 0; i < 1000000 && fz_server_conns() > 0; i++)
        loop_once();
    FZ_CHECK(fz_server_conns() == 0, "the server kept %ld connection(s) after the client closed",
             fz_server_conns());
    for (int i = 0;
         i < 100000 && event_base_get_num_events(testcore_base(), EVENT_BASE_COUNT_ACTIVE) > 0; i++)
        loop_once();
    FZ_CHECK(testcore_msgs_live() == 0, "%ld message references left after the connection closed",
             testcore_msgs_live());
}

/* ---- client-side checks ---------------------------------------------------------- */

static const char *find_crlf2(const char *p, size_t len)
{
    for (size_t i = 0; i + 3 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') return p + i;
    return NULL;
}

size_t fz_http_parse(const char *p, size_t len, int head, fz_http_resp *r)
{
    memset(r, 0, sizeof(*r));
    r->content_length = -1;
    const char *end = find_crlf2(p, len);
    if (!end) {
        FZ_CHECK(len < 65536, "a response head of more than 64 KB");
        return 0;
    }
    size_t hlen = (size_t)(end - p) + 4;
    FZ_CHECK(hlen > 17 && memcmp(p, "HTTP/1.1 ", 9) == 0 && p[9] >= '1' && p[9] <= '5' &&
                 p[10] >= '0' && p[10] <= '9' && p[11] >= '0' && p[11] <= '9' && p[12] == ' ',
             "bad status line: %.40s", p);
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *line = memchr(p, '\n', hlen) + 1;
    while (line < end + 2) {
        const char *eol = memchr(line, '\n', (size_t)(end + 4 - line));
        FZ_CHECK(eol && eol > line && eol[-1] == '\r', "header line without CRLF");
        size_t ll = (size_t)(eol - 1 - line);
        const char *colon = memchr(line, ':', ll);
        FZ_CHECK(colon && colon > line && colon[1] == ' ', "bad header line: %.*s", (int)ll, line);
        for (const char *q = line; q < eol - 1; q++)
            FZ_CHECK((unsigned char)*q >= 0x20 && *q != 0x7f, "control byte in a header: %.*s",
                     (int)ll, line);
        size_t nl = (size_t)(colon - line), vl = ll - nl - 2;
        const char *v = colon + 2;
        if (nl == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            FZ_CHECK(r->content_length < 0, "two Content-Length headers");
            char num[24];
            FZ_CHECK(vl > 0 && vl < sizeof(num), "bad Content-Length");
            memcpy(num, v, vl);
            num[vl] = '\0';
            char *e;
            r->content_length = strtol(num, &e, 10);
            FZ_CHECK(!*e && r->content_length >= 0, "bad Content-Length %s", num);
        } else if (nl == 12 && strncasecmp(line, "Content-Type", 12) == 0) {
            snprintf(r->ctype, sizeof(r->ctype), "%.*s", (int)vl, v);
        } else if (nl == 8 && strncasecmp(line, "Location", 8) == 0) {
            snprintf(r->location, sizeof(r->location), "%.*s", (int)vl, v);
        } else if (nl == 10 && strncasecmp(line, "Connection", 10) == 0) {
            FZ_CHECK((vl == 5 && memcmp(v, "close", 5) == 0) ||
                         (vl == 10 && memcmp(v, "keep-alive", 10) == 0) ||
                         (vl == 7 && memcmp(v, "Upgrade", 7) == 0),
                     "Connection: %.*s", (int)vl, v);
            r->close = vl == 5;
        }
        line = eol + 1;
    }
    int bodyless = r->status < 200 || r->status == 204 || r->status == 304;
    if (!bodyless) FZ_CHECK(r->content_length >= 0, "status %d without Content-Length", r->status);
    size_t blen = head || bodyless ? 0 : (size_t)r->content_length;
    if (len - hlen < blen) return 0;
    r->body = p + hlen;
    r->body_len = blen;
    return hlen + blen;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int fz_pump_http(int fd, fz_buf *out, int head)
{
    int eof = fz_pump(fd, out);
    fz_http_resp r;
    /* wall time, not rounds: on a starved machine the server's next write
     * (a timer, a deferred callback) may take a while to come round */
    int64_t end = mono_ms() + 5000;
    while (!eof && out->len > 0 && fz_http_parse(out->p, out->len, head, &r) == 0 &&
           mono_ms() < end) {
        struct timespec nap = {0, 1000000};
        nanosleep(&nap, NULL);
        eof = fz_pump(fd, out);
    }
    return eof;
}

void fz_check_json(const char *body, size_t len)
{
    json_tokener *tok = json_tokener_new();
    FZ_CHECK(tok, "out of memory");
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    int ok = o && json_tokener_get_error(tok) == json_tokener_success &&
             json_tokener_get_parse_end(tok) == len &&
             (json_object_is_type(o, json_type_object) || json_object_is_type(o, json_type_array));
    json_tokener_free(tok);
    json_object_put(o);
    FZ_CHECK(ok, "not a JSON object: %.*s", (int)(len > 200 ? 200 : len), body);
}

void fz_ws_frame(fz_buf *out, int opcode, int fin, const void *data, size_t len)
{
    static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t h[14];
    fz_buf_add(out, h, ws_frame_header_masked(h, opcode, fin, len, key));
    size_t at = out->len;
    fz_buf_add(out, data, len);
    ws_mask((uint8_t *)out->p + at, len, key, 0);
}
