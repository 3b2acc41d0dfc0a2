/*
 * stomp.c - STOMP frame parser and header escaping (see stomp.h).
 * Independent of libevent.
 */
#include "stomp.h"

#include <stdlib.h>
#include <string.h>

static void scan_reset(stomp_parser *p)
{
    p->scan_pos = p->scan_lines = p->body_at = p->body_scan = 0;
    p->scan_len = -1;
}

int stomp_parser_init(stomp_parser *p, const stomp_limits *lim)
{
    memset(p, 0, sizeof(*p));
    p->lim = *lim;
    p->version = STOMP_V12;
    scan_reset(p);
    return 0;
}

/* Nothing buffered: give the memory back (an idle connection holds none). */
static void release(stomp_parser *p)
{
    free(p->buf);
    p->buf = NULL;
    p->start = p->len = p->cap = 0;
}

void stomp_parser_free(stomp_parser *p)
{
    release(p);
    free(p->hdrs);
    p->hdrs = NULL;
}

static int perr(stomp_parser *p, const char *why)
{
    p->error = why;
    return -1;
}

/* An error that is a size limit (the WebSocket close says 1009). */
static int perr_big(stomp_parser *p, const char *why)
{
    p->too_big = 1;
    return perr(p, why);
}

static void drop_last(stomp_parser *p)
{
    free(p->hdrs);
    p->hdrs = NULL;
    p->start += p->last;
    p->last = 0;
    if (p->start >= p->len) release(p);
}

int stomp_parser_feed(stomp_parser *p, const char *data, size_t len)
{
    drop_last(p);
    if (len == 0) return 0;
    if (p->start > 0 && p->len + len > p->cap - 1) {
        memmove(p->buf, p->buf + p->start, p->len - p->start);
        p->len -= p->start;
        p->start = 0;
    }
    size_t limit = 2 * p->lim.max_frame + 1; /* buffered bytes + NUL at most */
    if (p->len + len > limit - 1) {
        return perr_big(p, "frame too large");
    }
    if (p->len + len + 1 > p->cap) { /* grow by doubling from 256 bytes */
        size_t ncap = p->cap ? p->cap * 2 : 256;
        while (ncap < p->len + len + 1)
            ncap *= 2;
        if (ncap > limit) ncap = limit;
        char *nb = realloc(p->buf, ncap);
        if (!nb) {
            p->error = "out of memory";
            return -1;
        }
        p->buf = nb;
        p->cap = ncap;
    }
    memcpy(p->buf + p->len, data, len);
    p->len += len;
    p->buf[p->len] = '\0';
    return 0;
}

/* In-place unescape of a header string. Returns 0, or -1 on an undefined
 * escape sequence (fatal in 1.1 and 1.2). */
static int unescape(char *s, int version)
{
    char *o = s;
    for (char *i = s; *i; i++) {
        if (*i != '\\') {
            *o++ = *i;
            continue;
        }
        i++;
        switch (*i) {
        case 'n':
            *o++ = '\n';
            break;
        case 'c':
            *o++ = ':';
            break;
        case '\\':
            *o++ = '\\';
            break;
        case 'r':
            if (version < STOMP_V12) return -1;
            *o++ = '\r';
            break;
        default:
            return -1;
        }
    }
    *o = '\0';
    return 0;
}

/* Pass 1 over the header block of the frame at b (avail bytes), going on
 * from where the last call stopped: 1 when it is complete (p->body_at set), 0
 * when more is needed, -1 on an error. Nothing is modified. */
static int scan_headers(stomp_parser *p, const char *b, size_t avail)
{
    size_t pos = p->scan_pos, lines = p->scan_lines;
    long long clen = p->scan_len;
    int rc = 0;
    for (;;) {
        const char *nl = memchr(b + pos, '\n', avail - pos);
        if (!nl) {
            if (avail - pos > p->lim.max_header_line) return perr(p, "header line too long");
            if (avail >= p->lim.max_frame) return perr_big(p, "frame too large");
            break;
        }
        size_t ll = (size_t)(nl - (b + pos));
        if (ll > p->lim.max_header_line) return perr(p, "header line too long");
        if (memchr(b + pos, '\0', ll)) return perr(p, "NUL byte in a header line");
        size_t content = ll > 0 && b[pos + ll - 1] == '\r' ? ll - 1 : ll;
        if (content == 0) {
            if (lines == 0) return perr(p, "missing command");
            if (lines - 1 > p->lim.max_headers) return perr(p, "too many headers");
            p->body_at = pos + ll + 1;
            rc = 1;
            break;
        }
        if (lines > 0) {
            if (lines > p->lim.max_headers) return perr(p, "too many headers");
            if (clen < 0 && content >= 15 && memcmp(b + pos, "content-length:", 15) == 0) {
                long long v = 0;
                size_t i = pos + 15;
                if (i == pos + content) return perr(p, "malformed content-length");
                for (; i < pos + content; i++) {
                    if (b[i] < '0' || b[i] > '9') return perr(p, "malformed content-length");
                    v = v * 10 + (b[i] - '0');
                    if (v > (long long)p->lim.max_body) return perr_big(p, "body too large");
                }
                clen = v;
            }
        }
        lines++;
        pos += ll + 1;
    }
    p->scan_pos = pos;
    p->scan_lines = lines;
    p->scan_len = clen;
    return rc;
}

int stomp_parser_next(stomp_parser *p, stomp_frame *f)
{
    drop_last(p);
    /* heart-beats: EOLs between frames */
    while (p->start < p->len) {
        if (p->buf[p->start] == '\n') {
            p->start++;
            p->heartbeats++;
        } else if (p->buf[p->start] == '\r') {
            if (p->start + 1 == p->len) return 0;
            if (p->buf[p->start + 1] != '\n')
                return perr(p, "stray carriage return between frames");
            p->start += 2;
            p->heartbeats++;
        } else {
            break;
        }
    }
    if (p->start >= p->len) {
        release(p);
        return 0;
    }

    /* pass 1: find the end of the header block without modifying anything */
    char *b = p->buf + p->start;
    size_t avail = p->len - p->start;
    if (!p->body_at) {
        int rc = scan_headers(p, b, avail);
        if (rc <= 0) return rc;
    }
    size_t body_at = p->body_at;

    /* the body must be complete too before anything is modified */
    size_t body_len, frame_len;
    if (p->scan_len >= 0) {
        size_t clen = (size_t)p->scan_len;
        if (body_at + clen + 1 > p->lim.max_frame) return perr_big(p, "frame too large");
        if (avail < body_at + clen + 1) return 0;
        if (b[body_at + clen] != '\0') return perr(p, "body not followed by NUL");
        body_len = clen;
    } else {
        size_t from = body_at + p->body_scan;
        char *nul = memchr(b + from, '\0', avail - from);
        if (!nul) {
            p->body_scan = avail - body_at;
            if (avail - body_at > p->lim.max_body) return perr_big(p, "body too large");
            if (avail >= p->lim.max_frame) return perr_big(p, "frame too large");
            return 0;
        }
        body_len = (size_t)(nul - (b + body_at));
        if (body_len > p->lim.max_body) return perr_big(p, "body too large");
    }
    frame_len = body_at + body_len + 1;
    size_t nh = p->scan_lines - 1;
    scan_reset(p);

    /* pass 2: split lines in place */
    p->hdrs = malloc((nh ? nh : 1) * sizeof(stomp_header));
    if (!p->hdrs) return perr(p, "out of memory");
    char *line = b;
    char *nl = strchr(line, '\n'); /* no NUL before the blank line */
    *nl = '\0';
    if (nl > line && nl[-1] == '\r') nl[-1] = '\0';
    if (!*line) return perr(p, "missing command");
    for (char *c = line; *c; c++)
        if (*c < 'A' || *c > 'Z') return perr(p, "malformed command");
    f->command = line;
    int esc =
        strcmp(line, "CONNECT") != 0 && strcmp(line, "CONNECTED") != 0 && p->version >= STOMP_V11;
    f->headers = p->hdrs;
    f->nheaders = 0;
    line = nl + 1;
    while (line < b + body_at) {
        nl = strchr(line, '\n');
        *nl = '\0';
        if (nl > line && nl[-1] == '\r') nl[-1] = '\0';
        if (!*line) break;
        char *colon = strchr(line, ':');
        if (!colon) return perr(p, "header line without a colon");
        if (colon == line) return perr(p, "header with an empty name");
        *colon = '\0';
        if (esc && (unescape(line, p->version) || unescape(colon + 1, p->version)))
            return perr(p, "undefined escape sequence in a header");
        p->hdrs[f->nheaders].name = line;
        p->hdrs[f->nheaders].value = colon + 1;
        f->nheaders++;
        line = nl + 1;
    }
    f->body = b + body_at;
    f->body_len = body_len;
    p->last = frame_len;
    return 1;
}

int stomp_parser_receipt(const stomp_parser *p, char *out, size_t outsz)
{
    if (!p->buf || p->start >= p->len || outsz == 0) return -1;
    const char *b = p->buf + p->start, *end = p->buf + p->len;
    while (b < end && (*b == '\n' || *b == '\r'))
        b++; /* heart-beats before the frame */
    int first = 1;
    for (;;) {
        const char *nl = memchr(b, '\n', (size_t)(end - b));
        if (!nl) return -1; /* only complete lines count */
        size_t ll = (size_t)(nl - b);
        if (memchr(b, '\0', ll)) return -1; /* split by pass 2: not raw any more */
        if (ll > 0 && b[ll - 1] == '\r') ll--;
        if (ll == 0) return -1; /* the end of the headers */
        if (!first && ll >= 8 && memcmp(b, "receipt:", 8) == 0) {
            if (ll - 8 >= outsz) return -1;
            memcpy(out, b + 8, ll - 8);
            out[ll - 8] = '\0';
            return p->version >= STOMP_V11 && unescape(out, p->version) ? -1 : 0;
        }
        first = 0;
        b = nl + 1;
    }
}

const char *stomp_frame_header(const stomp_frame *f, const char *name)
{
    for (size_t i = 0; i < f->nheaders; i++)
        if (strcmp(f->headers[i].name, name) == 0) return f->headers[i].value;
    return NULL;
}

size_t stomp_escape(char *dst, size_t dstsz, const char *src, int version)
{
    size_t n = 0, w = 0; /* escaped length, bytes written */
    for (const char *s = src; *s; s++) {
        char e = 0;
        if (version >= STOMP_V11) {
            switch (*s) {
            case '\n':
                e = 'n';
                break;
            case ':':
                e = 'c';
                break;
            case '\\':
                e = '\\';
                break;
            case '\r':
                e = version >= STOMP_V12 ? 'r' : 0;
                break;
            default:
                break;
            }
        }
        size_t k = e ? 2 : 1;
        /* written whole or not at all: once one does not fit, none after it
         * is written, so the result is a clean prefix with no unwritten byte */
        if (w == n && n + k < dstsz) {
            dst[n] = e ? '\\' : *s;
            if (e) dst[n + 1] = e;
            w = n + k;
        }
        n += k;
    }
    if (dstsz) dst[w] = '\0';
    return n;
}
