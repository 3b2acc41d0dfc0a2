/*
 * http_parser.c - strict, incremental HTTP/1.1 request parser (see
 * http_parser.h). Independent of libevent so that it can be fuzzed and unit
 * tested on its own.
 */
#include "http_parser.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum { ST_HEAD = 0, ST_BODY = 1, ST_DONE = 2, ST_ERROR = 3 };

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
    if (p->lim.max_headers == 0 || p->lim.max_header_bytes < 16)
        return -1;
    p->head = malloc(p->lim.max_header_bytes + 1);
    p->req.headers = calloc(p->lim.max_headers, sizeof(http_header));
    if (!p->head || !p->req.headers) {
        http_parser_free(p);
        return -1;
    }
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
}

void http_parser_reset(http_parser *p)
{
    http_header *h = p->req.headers;
    free(p->body);
    p->body = NULL;
    p->state = ST_HEAD;
    p->head_len = 0;
    p->body_need = 0;
    p->status = 0;
    p->error = NULL;
    memset(&p->req, 0, sizeof(p->req));
    p->req.headers = h;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Parse the complete head in p->head (CRLF-terminated lines, final blank
 * line), in place. */
static int parse_head(http_parser *p)
{
    char *s = p->head, *eol, *sp1, *sp2;
    http_request *r = &p->req;

    eol = strstr(s, "\r\n");
    if (!eol)
        return fail(p, 400, "malformed request line");
    if ((size_t)(eol - s) > p->lim.max_request_line)
        return fail(p, 414, "request line too long");
    *eol = '\0';
    sp1 = strchr(s, ' ');
    if (!sp1 || sp1 == s || sp1 - s > 15)
        return fail(p, 400, "malformed method");
    *sp1 = '\0';
    for (char *c = s; *c; c++)
        if (!is_tchar((unsigned char)*c))
            return fail(p, 400, "malformed method");
    r->target = sp1 + 1;
    sp2 = strchr(r->target, ' ');
    if (!sp2 || sp2 == r->target)
        return fail(p, 400, "malformed request target");
    *sp2 = '\0';
    if (r->target[0] != '/')
        return fail(p, 400, "request target must be an absolute path");
    for (const char *c = r->target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return fail(p, 400, "invalid character in request target");
    const char *ver = sp2 + 1;
    if (strncmp(ver, "HTTP/", 5) != 0 || strlen(ver) != 8 || ver[6] != '.' ||
        ver[5] < '0' || ver[5] > '9' || ver[7] < '0' || ver[7] > '9')
        return fail(p, 400, "malformed HTTP version");
    if (ver[5] != '1' || (ver[7] != '0' && ver[7] != '1'))
        return fail(p, 505, "HTTP version not supported");
    r->version_minor = ver[7] - '0';
    r->method = s;
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                        "PATCH", NULL};
    int ok = 0;
    for (int i = 0; known[i]; i++)
        if (strcmp(s, known[i]) == 0)
            ok = 1;
    if (!ok)
        return fail(p, 501, "method not implemented");

    /* header fields */
    s = eol + 2;
    r->nheaders = 0;
    for (;;) {
        eol = strstr(s, "\r\n");
        if (!eol)
            return fail(p, 400, "malformed header line");
        if (eol == s)
            break; /* blank line: end of head */
        *eol = '\0';
        if (is_ows(*s))
            return fail(p, 400, "obsolete header line folding");
        char *colon = s;
        while (is_tchar((unsigned char)*colon))
            colon++;
        if (*colon != ':' || colon == s)
            return fail(p, 400, "malformed header name");
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
        if (r->nheaders >= p->lim.max_headers)
            return fail(p, 431, "too many header fields");
        r->headers[r->nheaders].name = s;
        r->headers[r->nheaders].value = v;
        r->nheaders++;
        s = eol + 2;
    }

    /* semantics */
    size_t nhost = 0;
    long long clen = -1;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        if (strcasecmp(n, "Host") == 0) {
            nhost++;
        } else if (strcasecmp(n, "Transfer-Encoding") == 0) {
            return fail(p, 411, "Transfer-Encoding request bodies are not accepted; "
                                "send Content-Length");
        } else if (strcasecmp(n, "Content-Length") == 0) {
            long long val = 0;
            if (!*v)
                return fail(p, 400, "malformed Content-Length");
            for (const char *c = v; *c; c++) {
                if (*c < '0' || *c > '9')
                    return fail(p, 400, "malformed Content-Length");
                if (val > (long long)p->lim.max_body)
                    return fail(p, 413, "request body too large");
                val = val * 10 + (*c - '0');
            }
            if (clen >= 0 && clen != val)
                return fail(p, 400, "conflicting Content-Length");
            clen = val;
        }
    }
    if (r->version_minor == 1 && nhost != 1)
        return fail(p, 400, "exactly one Host header is required");
    if (clen > (long long)p->lim.max_body)
        return fail(p, 413, "request body too large");
    const char *conn = http_request_header(r, "Connection");
    if (r->version_minor == 1)
        r->keep_alive = !(conn && http_has_token(conn, "close"));
    else
        r->keep_alive = conn && http_has_token(conn, "keep-alive");
    p->body_need = clen > 0 ? (size_t)clen : 0;
    p->body = malloc(p->body_need + 1);
    if (!p->body)
        return fail(p, 503, "out of memory");
    p->body[0] = '\0';
    r->body = p->body;
    r->body_len = 0;
    return HTTP_PARSE_MORE;
}

int http_parser_feed(http_parser *p, const char *data, size_t len, size_t *consumed)
{
    size_t used = 0;
    *consumed = 0;
    if (p->state == ST_ERROR)
        return HTTP_PARSE_ERROR;
    if (p->state == ST_DONE)
        return HTTP_PARSE_DONE;
    if (p->state == ST_HEAD) {
        /* tolerate blank lines before a request (RFC 9112 2.2) */
        while (p->head_len == 0 && used < len && (data[used] == '\r' || data[used] == '\n'))
            used++;
        size_t room = p->lim.max_header_bytes - p->head_len;
        size_t take = len - used < room ? len - used : room;
        size_t from = p->head_len > 3 ? p->head_len - 3 : 0;
        for (size_t i = 0; i < take; i++) {
            if (data[used + i] == '\0')
                return fail(p, 400, "NUL byte in request head");
        }
        memcpy(p->head + p->head_len, data + used, take);
        p->head_len += take;
        p->head[p->head_len] = '\0';
        char *end = NULL;
        for (size_t i = from; i + 4 <= p->head_len; i++) {
            if (memcmp(p->head + i, "\r\n\r\n", 4) == 0) {
                end = p->head + i + 4;
                break;
            }
        }
        if (!end) {
            used += take;
            *consumed = used;
            char *crlf = memchr(p->head, '\n', p->head_len);
            if (!crlf && p->head_len > p->lim.max_request_line + 1)
                return fail(p, 414, "request line too long");
            if (p->head_len >= p->lim.max_header_bytes)
                return fail(p, crlf ? 431 : 414, crlf ? "request header fields too large"
                                                      : "request line too long");
            return HTTP_PARSE_MORE;
        }
        size_t head_used = (size_t)(end - p->head);
        used += take - (p->head_len - head_used);
        p->head_len = head_used;
        p->head[head_used] = '\0';
        if (parse_head(p) == HTTP_PARSE_ERROR) {
            *consumed = used;
            return HTTP_PARSE_ERROR;
        }
        p->state = ST_BODY;
    }
    if (p->state == ST_BODY) {
        size_t take = len - used < p->body_need ? len - used : p->body_need;
        memcpy(p->body + p->req.body_len, data + used, take);
        p->req.body_len += take;
        p->body_need -= take;
        p->body[p->req.body_len] = '\0';
        used += take;
        *consumed = used;
        if (p->body_need == 0) {
            p->state = ST_DONE;
            return HTTP_PARSE_DONE;
        }
        return HTTP_PARSE_MORE;
    }
    *consumed = used;
    return HTTP_PARSE_MORE;
}

const char *http_request_header(const http_request *r, const char *name)
{
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int http_has_token(const char *value, const char *token)
{
    size_t tl = strlen(token);
    const char *s = value;
    while (*s) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == tl && strncasecmp(s, token, tl) == 0)
            return 1;
        s = e;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long http_percent_decode(const char *in, size_t len, char *out, size_t outsz)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '%') {
            if (i + 2 >= len)
                return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            if (c == '\0')
                return -1;
            i += 2;
        } else if (c == '\0') {
            return -1;
        }
        if (o + 1 >= outsz)
            return -1;
        out[o++] = c;
    }
    if (outsz == 0)
        return -1;
    out[o] = '\0';
    return (long)o;
}
