/*
 * fuzz_stomp.c - libFuzzer target for the transport-ws STOMP parser, with
 * the limits a session uses (max_headers, max_header_bytes, max_frame from
 * the plugin's key table). The first byte picks the escaping version and the
 * chunk size. Checks: each frame's command is A-Z, headers and body within
 * the limits, a NUL after the body; and every header re-escaped with
 * stomp_escape and parsed again (by a second parser) comes back identical,
 * so escaping and unescaping are exact inverses.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_core.h"
#include "stomp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *escaped(const char *s, int version)
{
    size_t n = stomp_escape(NULL, 0, s, version);
    FZ_CHECK(n >= strlen(s), "escaping shrank '%s'", s);
    char *out = malloc(n + 1);
    FZ_CHECK(out, "out of memory");
    FZ_CHECK(stomp_escape(out, n + 1, s, version) == n && strlen(out) == n, "escape length");
    return out;
}

/* SEND with one header name:value, escaped, parsed back by a fresh parser. */
static void round_trip(const stomp_limits *lim, int version, const char *name, const char *value)
{
    if (version < STOMP_V12 && (strchr(name, '\r') || strchr(value, '\r')))
        return; /* no escape for CR before 1.2 */
    if (strcmp(name, "content-length") == 0) return;
    char *en = escaped(name, version), *ev = escaped(value, version);
    size_t len = strlen(en) + strlen(ev) + 16;
    char *frame = malloc(len);
    FZ_CHECK(frame, "out of memory");
    int n = snprintf(frame, len, "SEND\n%s:%s\n\n", en, ev);
    stomp_parser q;
    stomp_frame f;
    stomp_limits big = *lim;
    big.max_header_line = big.max_frame = (size_t)n * 2 + 64;
    FZ_CHECK(stomp_parser_init(&q, &big) == 0, "init");
    q.version = version;
    FZ_CHECK(stomp_parser_feed(&q, frame, (size_t)n + 1) == 0, "feed");
    int rc = stomp_parser_next(&q, &f);
    FZ_CHECK(rc == 1 && f.nheaders == 1, "re-escaped header %s does not parse (%d: %s)", en, rc,
             q.error ? q.error : "");
    FZ_CHECK(strcmp(f.headers[0].name, name) == 0 && strcmp(f.headers[0].value, value) == 0,
             "round trip of '%s' changed it", en);
    stomp_parser_free(&q);
    free(frame);
    free(en);
    free(ev);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t frame = (size_t)fz_default("max_frame");
    stomp_limits lim = {(size_t)fz_default("max_headers"), (size_t)fz_default("max_header_bytes"),
                        frame, frame};
    stomp_parser p;
    stomp_frame f;
    if (size < 1) return 0;
    FZ_CHECK(stomp_parser_init(&p, &lim) == 0, "init");
    static const int versions[] = {STOMP_V10, STOMP_V11, STOMP_V12, STOMP_V12};
    p.version = versions[data[0] & 3];
    size_t chunk = (size_t)(data[0] >> 2) + 1;
    if (data[0] >= 0xf0) chunk = size;
    size_t off = 1;
    int bad = 0;
    while (off < size && !bad) {
        size_t n = size - off < chunk ? size - off : chunk;
        if (stomp_parser_feed(&p, (const char *)data + off, n) != 0) {
            FZ_CHECK(p.error, "feed refused without a reason");
            break;
        }
        off += n;
        for (;;) {
            int rc = stomp_parser_next(&p, &f);
            if (rc < 0) {
                FZ_CHECK(p.error && p.error[0], "error without a reason");
                char rcpt[64];
                if (stomp_parser_receipt(&p, rcpt, sizeof(rcpt)) == 0)
                    FZ_CHECK(strlen(rcpt) < sizeof(rcpt), "receipt overflow");
                bad = 1;
                break;
            }
            if (rc == 0) break;
            FZ_CHECK(f.command[0], "empty command");
            for (const char *c = f.command; *c; c++)
                FZ_CHECK(*c >= 'A' && *c <= 'Z', "command %s", f.command);
            FZ_CHECK(strlen(f.command) <= lim.max_header_line, "command too long");
            FZ_CHECK(f.nheaders <= lim.max_headers, "%zu headers", f.nheaders);
            FZ_CHECK(f.body_len <= lim.max_body && f.body[f.body_len] == '\0', "body");
            int esc = strcmp(f.command, "CONNECT") != 0 && strcmp(f.command, "CONNECTED") != 0;
            for (size_t i = 0; i < f.nheaders; i++) {
                const char *k = f.headers[i].name, *v = f.headers[i].value;
                FZ_CHECK(k[0], "empty header name");
                FZ_CHECK(strlen(k) + strlen(v) + 1 <= lim.max_header_line, "header line");
                FZ_CHECK(stomp_frame_header(&f, k) != NULL, "header %s not found", k);
                if (esc) round_trip(&lim, p.version, k, v);
            }
            const char *cl = stomp_frame_header(&f, "content-length");
            if (cl && *cl >= '0' && *cl <= '9' && strspn(cl, "0123456789") == strlen(cl))
                FZ_CHECK(strtoull(cl, NULL, 10) == f.body_len, "content-length %s, body %zu", cl,
                         f.body_len);
        }
    }
    stomp_parser_free(&p);
    return 0;
}
