/*
 * fuzz_static.c - libFuzzer target for static path resolution in
 * transport-ws (static_files.c) through the real HTTP routing. The web root
 * of the test core holds a few files, a link to a file outside it and a link
 * to its parent; next to it lie a secret file and a directory whose name
 * starts with the root's name.
 *   byte 0: bit 0 HEAD (else GET), bit 1 If-None-Match: *, bit 2 a stale
 *           If-Modified-Since
 *   then the request target (a '/' is put in front when missing).
 * Checks: exactly one well-formed response; never a 500; nothing from outside
 * the web root is ever sent; a 200 sends exactly one of the root's files
 * (index.html for "/"), a 301 points at the same path with a '/', a 304 only
 * for a conditional request; other statuses are 400, 404 or 414; a kept
 * connection then serves /index.html.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const files[] = {"/index.html", "/app.js", "/sub/index.html", "/style.css"};

static int routed_elsewhere(const char *t, size_t n)
{
    size_t p = 0;
    while (p < n && t[p] != '?')
        p++;
    return (p == 8 && memcmp(t, "/healthz", 8) == 0) || (p == 8 && memcmp(t, "/metrics", 8) == 0) ||
           (p == 3 && memcmp(t, "/ws", 3) == 0) || (p == 4 && memcmp(t, "/api", 4) == 0) ||
           (p >= 5 && memcmp(t, "/api/", 5) == 0);
}

static void check_response(const fz_buf *out, int head, fz_http_resp *r)
{
    FZ_CHECK(!memmem(out->p ? out->p : "", out->len, FZ_SECRET, strlen(FZ_SECRET)),
             "a file outside the web root was served");
    size_t used = fz_http_parse(out->p ? out->p : "", out->len, head, r);
    if (head && used && used < out->len && r->status >= 400 && r->close)
        used = fz_http_parse(out->p, out->len, 0, r); /* parser refusals carry a body */
    FZ_CHECK(used > 0 && used == out->len, "not exactly one response (%zu of %zu bytes): %s", used,
             out->len, out->p ? out->p : "");
    FZ_CHECK(r->status != 500, "500");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_start(NULL);
    fz_set_async(0);
    if (size < 1) return 0;
    int head = data[0] & 1, inm = (data[0] >> 1) & 1, ims = (data[0] >> 2) & 1;
    const char *t = (const char *)data + 1;
    size_t tl = size - 1;
    const char *lf = memchr(t, '\n', tl);
    if (lf) tl = (size_t)(lf - t);

    fz_buf req = {0}, out = {0};
    char hdrs[256];
    fz_buf_add(&req, head ? "HEAD " : "GET ", head ? 5 : 4);
    if (tl == 0 || t[0] != '/') fz_buf_add(&req, "/", 1);
    size_t path_at = req.len - (tl == 0 || t[0] != '/');
    fz_buf_add(&req, t, tl);
    char *target = strndup(req.p + path_at, req.len - path_at);
    int n = snprintf(hdrs, sizeof(hdrs), " HTTP/1.1\r\nHost: fuzz\r\n%s%s\r\n",
                     inm ? "If-None-Match: *\r\n" : "",
                     ims ? "If-Modified-Since: Mon, 01 Jan 1990 00:00:00 GMT\r\n" : "");
    fz_buf_add(&req, hdrs, (size_t)n);

    int fd = fz_connect();
    fz_send(fd, req.p, req.len);
    fz_pump_http(fd, &out, head);
    fz_http_resp r;
    check_response(&out, head, &r);
    if (!routed_elsewhere(target, strlen(target)) && strlen(target) == req.len - path_at - n) {
        switch (r.status) {
        case 200: {
            int found = 0;
            if (!head)
                for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
                    const char *c = fz_web_file(files[i]);
                    found |= strlen(c) == r.body_len && memcmp(c, r.body, r.body_len) == 0;
                }
            FZ_CHECK(head || found, "200 with a body that is none of the web root's files");
            if (strcmp(target, "/") == 0 && !head)
                FZ_CHECK(r.body_len == strlen(fz_web_file("/index.html")) &&
                             memcmp(r.body, fz_web_file("/index.html"), r.body_len) == 0,
                         "/ is not index.html");
            break;
        }
        case 301: {
            size_t ll = strlen(r.location), pl = strcspn(target, "?");
            FZ_CHECK(ll == pl + 1 && memcmp(r.location, target, pl) == 0 && r.location[pl] == '/',
                     "301 from %s to %s", target, r.location);
            break;
        }
        case 304:
            FZ_CHECK(inm || ims, "304 to an unconditional request");
            break;
        default:
            FZ_CHECK(r.status == 400 || r.status == 404 || r.status == 414 || r.status == 431,
                     "status %d for %s", r.status, target);
        }
    }
    if (!r.close) {
        static const char ix[] = "GET /index.html HTTP/1.1\r\nHost: fuzz\r\n\r\n";
        out.len = 0;
        fz_send(fd, ix, sizeof(ix) - 1);
        fz_pump_http(fd, &out, 0);
        check_response(&out, 0, &r);
        FZ_CHECK(r.status == 200 && r.body_len == strlen(fz_web_file("/index.html")),
                 "the kept connection serves /index.html with %d", r.status);
    }
    fz_close(fd);
    free(target);
    fz_buf_free(&req);
    fz_buf_free(&out);
    return 0;
}
