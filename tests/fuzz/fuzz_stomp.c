/*
 * fuzz_stomp.c - libFuzzer target for the transport-ws STOMP parser. The
 * first byte picks the escaping version and the chunk size; each frame's
 * invariants are checked (command in A-Z, body within limits, NUL after it)
 * and header values are escaped back.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "stomp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const stomp_limits lim = {16, 512, 2048, 4096};
    stomp_parser p;
    stomp_frame f;
    if (size < 1 || stomp_parser_init(&p, &lim) != 0) return 0;
    static const int versions[] = {STOMP_V10, STOMP_V11, STOMP_V12, STOMP_V12};
    p.version = versions[data[0] & 3];
    size_t chunk = (size_t)(data[0] >> 2) + 1;
    size_t off = 1;
    int bad = 0;
    while (off < size && !bad) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (stomp_parser_feed(&p, (const char *)data + off, n) != 0) break;
        off += n;
        for (;;) {
            int rc = stomp_parser_next(&p, &f);
            if (rc < 0) {
                assert(p.error);
                bad = 1;
                break;
            }
            if (rc == 0) break;
            assert(f.command[0] >= 'A' && f.command[0] <= 'Z');
            assert(f.nheaders <= lim.max_headers);
            assert(f.body_len <= lim.max_body);
            assert(f.body[f.body_len] == '\0');
            for (size_t i = 0; i < f.nheaders; i++) {
                char esc[64];
                size_t need = stomp_escape(esc, sizeof(esc), f.headers[i].value, p.version);
                assert(need >= strlen(f.headers[i].value) || need < sizeof(esc));
            }
            (void)stomp_frame_header(&f, "content-length");
        }
    }
    stomp_parser_free(&p);
    return 0;
}
