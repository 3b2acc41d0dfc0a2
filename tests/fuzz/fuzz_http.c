/*
 * fuzz_http.c - libFuzzer target for the transport-ws HTTP/1.1 request
 * parser, with the server's default limits (read from the plugin's key
 * table). The first input byte picks the chunk size the rest is fed in, so
 * that incremental parsing, pipelining and leftovers are all exercised.
 * Checks: bytes used never exceed what was fed, errors carry one of the
 * documented statuses, a parsed request is within every limit, its header
 * names are tokens and values trimmed without CR/LF, and percent-decoding
 * never grows a target nor yields a NUL.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz_core.h"
#include "http_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

static void check_request(const http_request *r, const http_limits *lim)
{
    FZ_CHECK(r->method && r->method[0] && r->target && r->target[0] == '/', "method/target");
    for (const char *m = r->method; *m; m++)
        FZ_CHECK(tchar((unsigned char)*m), "method %s is not a token", r->method);
    FZ_CHECK(r->version_minor == 0 || r->version_minor == 1, "version 1.%d", r->version_minor);
    FZ_CHECK(strlen(r->target) + strlen(r->method) + 10 <= lim->max_request_line + 1,
             "request line over %zu", lim->max_request_line);
    FZ_CHECK(r->nheaders <= lim->max_headers, "%zu headers", r->nheaders);
    size_t bytes = 0;
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name, *v = r->headers[i].value;
        FZ_CHECK(n[0], "empty header name");
        for (const char *q = n; *q; q++)
            FZ_CHECK(tchar((unsigned char)*q), "header name %s is not a token", n);
        size_t vl = strlen(v);
        FZ_CHECK(!strpbrk(v, "\r\n"), "CR or LF in the value of %s", n);
        FZ_CHECK(vl == 0 || (v[0] != ' ' && v[0] != '\t' && v[vl - 1] != ' ' && v[vl - 1] != '\t'),
                 "value of %s not trimmed: '%s'", n, v);
        bytes += strlen(n) + vl;
        FZ_CHECK(http_request_header(r, n) != NULL, "header %s not found by name", n);
        FZ_CHECK(http_request_count(r, n) >= 1, "header %s not counted", n);
    }
    FZ_CHECK(bytes <= lim->max_header_bytes, "%zu header bytes", bytes);
    FZ_CHECK(r->body && r->body_len <= lim->max_body && r->body[r->body_len] == '\0' &&
                 strlen(r->body) <= r->body_len,
             "body of %zu bytes", r->body_len);
    char out[8192];
    size_t tl = strlen(r->target);
    long n = http_percent_decode(r->target, tl, out, sizeof(out));
    if (n >= 0) FZ_CHECK((size_t)n <= tl && strlen(out) == (size_t)n, "decoded to %ld", n);
    char joined[512];
    if (http_request_join(r, "Connection", joined, sizeof(joined)))
        FZ_CHECK(strlen(joined) < sizeof(joined), "join");
    (void)http_request_has_token(r, "Connection", "upgrade");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    http_limits lim = {(size_t)fz_default("max_request_line"),
                       (size_t)fz_default("max_header_bytes"), (size_t)fz_default("max_headers"),
                       (size_t)fz_default("max_body")};
    http_parser p;
    if (size < 1) return 0;
    FZ_CHECK(http_parser_init(&p, &lim) == 0, "init");
    size_t chunk = (size_t)(data[0] % 64) + 1;
    if (data[0] >= 192) chunk = size; /* all at once */
    const char *in = (const char *)data + 1;
    size_t len = size - 1, off = 0;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk, used = 0;
        int rc = http_parser_feed(&p, in + off, n, &used);
        FZ_CHECK(used <= n, "used %zu of %zu", used, n);
        off += used;
        if (rc == HTTP_PARSE_ERROR) {
            static const int ok[] = {400, 411, 413, 414, 417, 431, 501, 503, 505};
            int found = 0;
            for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                found |= p.status == ok[i];
            FZ_CHECK(found && p.error && p.error[0], "error status %d", p.status);
            break;
        }
        if (rc == HTTP_PARSE_DONE) {
            check_request(&p.req, &lim);
            http_parser_reset(&p);
        } else {
            FZ_CHECK(rc == HTTP_PARSE_MORE && used == n, "rc %d used %zu of %zu", rc, used, n);
        }
    }
    FZ_CHECK(off <= len, "consumed past the input");
    http_parser_free(&p);
    return 0;
}
