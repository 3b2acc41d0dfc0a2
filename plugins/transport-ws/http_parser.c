/*
 * http_parser.c - strict, incremental HTTP/1.1 request parser (see
 * http_parser.h). Independent of libevent so that it can be fuzzed and unit
 * tested on its own.
 */
#include "http_parser.h"

#include "list_token.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
    ST_HEAD = 0,
    ST_BODY,
    ST_CHUNK_SIZE,
    ST_CHUNK_DATA,
    ST_CHUNK_END,
    ST_TRAILER,
    ST_DONE,
    ST_ERROR
};

static int fail(http_parser *p, int status, const char *why)
{
    p->state = ST_ERROR;
    p->status = status;
    p->error = why;
    return HTTP_PARSE_ERROR;
}

int http_parser_init(http_parser *p, const http_limits *lim)
{
    memset(p, 0, sizeof(*p));
    p->lim = *lim;
    if (p->lim.max_headers == 0 || p->lim.max_header_bytes < 16) return -1;
    return 0;
}

void http_parser_free(http_parser *p)
{
    free(p->head);
    free(p->body);
    free(p->req.headers);
    p->head = NULL;
    p->body = NULL;
    p->req.headers = NULL;
    p->head_cap = 0;
}

void http_parser_reset(http_parser *p)
{
    http_parser_free(p);
    p->state = ST_HEAD;
    p->head_len = 0;
    p->eol = 0;
    p->head_lf = 0;
    p->head_lines = 0;
    p->body_need = 0;
    p->chunked = 0;
    p->line_len = 0;
    p->trailer_bytes = 0;
    p->expect_continue = 0;
    p->status = 0;
    p->error = NULL;
    memset(&p->req, 0, sizeof(p->req));
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Host = uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2); may be empty. */
static int host_valid(const char *h)
{
    const char *port;
    if (*h == '[') {
        const char *e = strchr(h, ']');
        if (!e || e == h + 1) return 0;
        for (const char *c = h + 1; c < e; c++)
            if (!strchr("0123456789abcdefABCDEF:.", *c)) return 0;
        port = e + 1;
    } else {
        const char *c = h;
        for (; *c && *c != ':'; c++) {
            unsigned char u = (unsigned char)*c;
            if (!((u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') ||
                  strchr("-._~%!$&'()*+,;=", u)))
                return 0;
        }
        port = c;
    }
    if (*port == '\0') return 1;
    if (*port != ':') return 0;
    for (const char *c = port + 1; *c; c++)
        if (*c < '0' || *c > '9') return 0;
    return 1;
}

/* Cut the line starting at s at its LF (and a CR before it); returns the
 * start of the next line, or NULL when there is no LF. */
static char *cut_line(char *s)
{
    char *nl = strchr(s, '\n');
    if (!nl) return NULL;
    *nl = '\0';
    if (nl > s && nl[-1] == '\r') nl[-1] = '\0';
    return nl + 1;
}

/* Parse the complete head in p->head (lines ending in LF or CRLF, then an
 * empty line), in place. */
static int parse_head(http_parser *p)
{
    char *s = p->head, *next, *sp1, *sp2;
    http_request *r = &p->req;

    char *nl = strchr(s, '\n');
    if (!nl) return fail(p, 400, "malformed request line");
    if ((size_t)(nl - s) > p->lim.max_request_line) return fail(p, 414, "request line too long");
    next = cut_line(s);
    sp1 = strchr(s, ' ');
    if (!sp1 || sp1 == s || sp1 - s > 15) return fail(p, 400, "malformed method");
    *sp1 = '\0';
    for (char *c = s; *c; c++)
        if (!is_tchar((unsigned char)*c)) return fail(p, 400, "malformed method");
    r->target = sp1 + 1;
    sp2 = strchr(r->target, ' ');
    if (!sp2 || sp2 == r->target) return fail(p, 400, "malformed request target");
    *sp2 = '\0';
    for (const char *c = r->target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return fail(p, 400, "invalid character in request target");
    if (strchr(r->target, '#')) return fail(p, 400, "a fragment is not part of a request target");
    if (strncasecmp(r->target, "http://", 7) == 0 || strncasecmp(r->target, "https://", 8) == 0) {
        /* absolute-form (RFC 9112 3.2.2): keep the path and query */
        const char *auth = strstr(r->target, "//") + 2;
        const char *path = auth + strcspn(auth, "/?");
        if (path == auth) return fail(p, 400, "absolute-form target without a host");
        if (*path == '/')
            r->target = path;
        else if (*path == '\0')
            r->target = "/";
        else
            return fail(p, 400, "absolute-form target without a path");
    }
    if (r->target[0] != '/') return fail(p, 400, "request target must be an absolute path");
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/", 5) != 0 || strlen(ver) != 8 || ver[6] != '.' || ver[5] < '0' ||
        ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
        return fail(p, 400, "malformed HTTP version");
    if (ver[5] != '1') return fail(p, 505, "HTTP version not supported");
    /* a higher minor version is read as the highest one known (RFC 9110 2.5) */
    r->version_minor = ver[7] == '0' ? 0 : 1;
    r->method = s;
    static const char *const known[] = {"GET",    "HEAD",    "POST",  "PUT",
                                        "DELETE", "OPTIONS", "PATCH", NULL};
    int ok = 0;
    for (int i = 0; known[i]; i++)
        if (strcmp(s, known[i]) == 0) ok = 1;
    if (!ok) return fail(p, 501, "method not implemented");

    /* header fields: at most one per line between the request line and the
     * empty line (head_lines counts both) */
    size_t nh = p->head_lines - 2 < p->lim.max_headers ? p->head_lines - 2 : p->lim.max_headers;
    r->headers = malloc((nh ? nh : 1) * sizeof(http_header));
    if (!r->headers) return fail(p, 503, "out of memory");
    s = next;
    r->nheaders = 0;
    for (;;) {
        next = cut_line(s);
        if (!next) return fail(p, 400, "malformed header line");
        if (!*s) break; /* empty line: end of head */
        if (is_ows(*s)) return fail(p, 400, "obsolete header line folding");
        char *colon = s;
        while (is_tchar((unsigned char)*colon))
            colon++;
        if (*colon != ':' || colon == s) return fail(p, 400, "malformed header name");
        *colon = '\0';
        char *v = colon + 1;
        while (is_ows(*v))
            v++;
        char *end = v + strlen(v);
        while (end > v && is_ows(end[-1]))
            *--end = '\0';
        for (const char *c = v; *c; c++) {
            unsigned char u = (unsigned char)*c;
            if ((u < 0x20 && u != '\t') || u == 0x7f)
                return fail(p, 400, "invalid character in header value");
        }
        if (r->nheaders >= p->lim.max_headers) return fail(p, 431, "too many header fields");
        r->headers[r->nheaders].name = s;
        r->headers[r->nheaders].value = v;
        r->nheaders++;
        s = next;
    }

    /* semantics */
    size_t nhost = 0, nte = 0;
    long long clen = -1;
    const char *te = NULL;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (strcasecmp(n, "Host") == 0) {
            nhost++;
            if (!host_valid(v)) return fail(p, 400, "invalid Host");
        } else if (strcasecmp(n, "Transfer-Encoding") == 0) {
            nte++;
            te = v;
        } else if (strcasecmp(n, "Content-Length") == 0) {
            long long val = 0;
            if (!*v) return fail(p, 400, "malformed Content-Length");
            for (const char *c = v; *c; c++) {
                if (*c < '0' || *c > '9') return fail(p, 400, "malformed Content-Length");
                if (val > (long long)p->lim.max_body) return fail(p, 413, "request body too large");
                val = val * 10 + (*c - '0');
            }
            if (clen >= 0 && clen != val) return fail(p, 400, "conflicting Content-Length");
            clen = val;
        }
    }
    if (r->version_minor == 1 && nhost != 1)
        return fail(p, 400, "exactly one Host header is required");
    if (nte > 0) {
        if (clen >= 0) return fail(p, 400, "Content-Length together with Transfer-Encoding");
        if (r->version_minor == 0) return fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (nte > 1 || strcasecmp(te, "chunked") != 0)
            return fail(p, 501, "only the chunked transfer coding is supported");
        p->chunked = 1;
    }
    if (clen > (long long)p->lim.max_body) return fail(p, 413, "request body too large");
    const char *expect = http_request_header(r, "Expect");
    if (expect) {
        if (strcasecmp(expect, "100-continue") != 0)
            return fail(p, 417, "only Expect: 100-continue is understood");
        p->expect_continue = r->version_minor == 1 && (p->chunked || clen > 0);
    }
    r->keep_alive = r->version_minor == 1 ? !http_request_has_token(r, "Connection", "close")
                                          : http_request_has_token(r, "Connection", "keep-alive");
    p->body_need = clen > 0 ? (size_t)clen : 0;
    p->body = malloc(p->body_need + 1);
    if (!p->body) return fail(p, 503, "out of memory");
    p->body[0] = '\0';
    r->body = p->body;
    r->body_len = 0;
    return HTTP_PARSE_MORE;
}

/* Room for n more head bytes and the NUL: the buffer grows by doubling from
 * 256 bytes to max_header_bytes + 1 at most. */
static int head_room(http_parser *p, size_t n)
{
    size_t need = p->head_len + n + 1, cap = p->head_cap ? p->head_cap : 256;
    if (need <= p->head_cap) return 0;
    while (cap < need)
        cap *= 2;
    if (cap > p->lim.max_header_bytes + 1) cap = p->lim.max_header_bytes + 1;
    char *h = realloc(p->head, cap);
    if (!h) return -1;
    p->head = h;
    p->head_cap = cap;
    return 0;
}

/* Scan the new bytes once (the state of the last call carries on), copy them
 * up to the end of the head, and parse the head when it is complete. */
static int feed_head(http_parser *p, const char *data, size_t len, size_t *used)
{
    size_t u = 0;
    /* tolerate blank lines before a request (RFC 9112 2.2) */
    while (p->head_len == 0 && u < len && (data[u] == '\r' || data[u] == '\n'))
        u++;
    size_t room = p->lim.max_header_bytes - p->head_len;
    size_t avail = len - u < room ? len - u : room, take = 0;
    int end = 0;
    while (take < avail && !end) {
        char ch = data[u + take++];
        if (ch == '\n') {
            end = p->eol != 0; /* the line ending here is empty: the head ends */
            p->eol = 1;
            p->head_lf = 1;
            p->head_lines++;
        } else if (ch == '\r') {
            p->eol = p->eol == 1 ? 2 : 0;
        } else {
            p->eol = 0;
            if (ch == '\0') {
                *used = u + take;
                return fail(p, 400, "NUL byte in the request head");
            }
        }
    }
    if (take && head_room(p, take) != 0) {
        *used = u;
        return fail(p, 503, "out of memory");
    }
    if (take) memcpy(p->head + p->head_len, data + u, take);
    p->head_len += take;
    if (p->head) p->head[p->head_len] = '\0';
    *used = u + take;
    if (!end) {
        if (!p->head_lf && p->head_len > p->lim.max_request_line + 1)
            return fail(p, 414, "request line too long");
        if (p->head_len >= p->lim.max_header_bytes)
            return fail(p, p->head_lf ? 431 : 414,
                        p->head_lf ? "request header fields too large" : "request line too long");
        return HTTP_PARSE_MORE;
    }
    if (parse_head(p) == HTTP_PARSE_ERROR) return HTTP_PARSE_ERROR;
    p->state = p->chunked ? ST_CHUNK_SIZE : ST_BODY;
    return HTTP_PARSE_MORE;
}

/* Copy what is due of the body (Content-Length or current chunk) from data;
 * returns the bytes used. */
static size_t body_take(http_parser *p, const char *data, size_t avail)
{
    size_t take = avail < p->body_need ? avail : p->body_need;
    memcpy(p->body + p->req.body_len, data, take);
    p->req.body_len += take;
    p->body_need -= take;
    p->body[p->req.body_len] = '\0';
    return take;
}

/* Parse a complete chunk-size line in p->line. */
static int chunk_size(http_parser *p)
{
    size_t n = p->line_len, size = 0, i = 0;
    if (n > 0 && p->line[n - 1] == '\r') n--;
    p->line[n] = '\0';
    for (; i < n; i++) {
        char c = p->line[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) break;
        if (i >= 15) return fail(p, 413, "chunk too large");
        size = size * 16 + (size_t)d;
    }
    if (i == 0) return fail(p, 400, "malformed chunk size");
    while (i < n && is_ows(p->line[i]))
        i++;
    if (i < n && p->line[i] != ';') return fail(p, 400, "malformed chunk size");
    p->line_len = 0;
    if (size == 0) {
        p->state = ST_TRAILER;
        return HTTP_PARSE_MORE;
    }
    if (size > p->lim.max_body || p->req.body_len + size > p->lim.max_body)
        return fail(p, 413, "request body too large");
    char *b = realloc(p->body, p->req.body_len + size + 1);
    if (!b) return fail(p, 503, "out of memory");
    p->body = b;
    p->req.body = b;
    p->body_need = size;
    p->state = ST_CHUNK_DATA;
    return HTTP_PARSE_MORE;
}

int http_parser_feed(http_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t used = 0;
    int rc = HTTP_PARSE_MORE;
    *consumed = 0;
    if (p->state == ST_ERROR) return HTTP_PARSE_ERROR;
    if (p->state == ST_DONE) return HTTP_PARSE_DONE;
    if (p->state == ST_HEAD) {
        rc = feed_head(p, data, len, &used);
        if (rc == HTTP_PARSE_ERROR || p->state == ST_HEAD) {
            *consumed = used;
            return rc;
        }
    }
    while (used < len || (p->state == ST_BODY && p->body_need == 0)) {
        char c;
        switch (p->state) {
        case ST_BODY:
            used += body_take(p, data + used, len - used);
            if (p->body_need == 0) p->state = ST_DONE;
            break;
        case ST_CHUNK_DATA: {
            used += body_take(p, data + used, len - used);
            if (p->body_need == 0) {
                p->state = ST_CHUNK_END;
                p->line_len = 0;
            }
            break;
        }
        case ST_CHUNK_SIZE:
            c = data[used++];
            if (c == '\n') {
                if (chunk_size(p) == HTTP_PARSE_ERROR) {
                    *consumed = used;
                    return HTTP_PARSE_ERROR;
                }
            } else if (p->line_len + 1 >= sizeof(p->line)) {
                *consumed = used;
                return fail(p, 400, "chunk size line too long");
            } else {
                p->line[p->line_len++] = c;
            }
            break;
        case ST_CHUNK_END:
            c = data[used++];
            if (c == '\n') {
                p->state = ST_CHUNK_SIZE;
                p->line_len = 0;
            } else if (c != '\r' || p->line_len++ > 0) {
                *consumed = used;
                return fail(p, 400, "chunk data not followed by CRLF");
            }
            break;
        case ST_TRAILER:
            c = data[used++];
            if (++p->trailer_bytes > p->lim.max_header_bytes) {
                *consumed = used;
                return fail(p, 431, "trailer fields too large");
            }
            if (c == '\0') {
                *consumed = used;
                return fail(p, 400, "NUL byte in a trailer");
            }
            if (c == '\n') {
                if (p->line_len == 0) {
                    p->state = ST_DONE;
                    break;
                }
                p->line_len = 0;
            } else if (c != '\r') {
                p->line_len++;
            }
            break;
        default:
            break;
        }
        if (p->state == ST_DONE) {
            *consumed = used;
            return HTTP_PARSE_DONE;
        }
    }
    *consumed = used;
    return HTTP_PARSE_MORE;
}

const char *http_request_header(const http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) return r->headers[i].value;
    return NULL;
}

size_t http_request_header_lines(const http_request *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) n++;
    return n;
}

int http_request_has_token(const http_request *r, const char *name, const char *token)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0 && http_has_token(r->headers[i].value, token))
            return 1;
    return 0;
}

size_t http_request_count(const http_request *r, const char *name)
{
    size_t n = 0;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) n++;
    return n;
}

const char *http_request_join(const http_request *r, const char *name, char *out, size_t outsz)
{
    size_t o = 0;
    int any = 0;
    if (outsz == 0) return NULL;
    out[0] = '\0';
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, name) != 0) continue;
        int n = snprintf(out + o, outsz - o, "%s%s", any ? ", " : "", r->headers[i].value);
        if (n < 0 || (size_t)n >= outsz - o) return NULL;
        o += (size_t)n;
        any = 1;
    }
    return any ? out : NULL;
}

int http_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token), len;
    const char *cur = value, *t;
    while ((t = list_token_next(&cur, &len)) != NULL)
        if (len == tl && strncasecmp(t, token, tl) == 0) return 1;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long http_percent_decode(const char *in, size_t len, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len) return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi * 16 + lo);
            if (c == '\0') return -1;
            i += 2;
        } else if (c == '\0') {
            return -1;
        }
        if (o + 1 >= outsz) return -1;
        out[o++] = c;
    }
    if (outsz == 0) return -1;
    out[o] = '\0';
    return (long)o;
}
