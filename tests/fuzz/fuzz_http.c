/*
 * fuzz_http.c - libFuzzer target for the transport-ws HTTP/1.1 request
 * parser. The first input byte picks the chunk size the rest is fed in, so
 * that incremental parsing, pipelining and leftovers are all exercised.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "http_parser.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const http_limits lim = {512, 2048, 16, 4096};
    http_parser p;
    if (size < 1 || http_parser_init(&p, &lim) != 0) return 0;
    size_t chunk = (size_t)(data[0] % 64) + 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1, off = 0;
    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk, used = 0;
        int rc = http_parser_feed(&p, in + off, n, &used);
        assert(used <= n);
        off += used;
        if (rc == HTTP_PARSE_ERROR) {
            assert(p.status >= 400 && p.status < 600 && p.error);
            break;
        }
        if (rc == HTTP_PARSE_DONE) {
            const http_request *r = &p.req;
            assert(r->method && r->target && r->target[0] == '/');
            assert(strlen(r->body) <= r->body_len);
            (void)http_request_header(r, "Host");
            for (size_t i = 0; i < r->nheaders; i++)
                (void)http_has_token(r->headers[i].value, "upgrade");
            char out[256];
            (void)http_percent_decode(r->target, strlen(r->target), out, sizeof(out));
            http_parser_reset(&p);
        } else {
            assert(used == n);
        }
    }
    http_parser_free(&p);
    return 0;
}
