/*
 * fuzz_rest.c - libFuzzer target for the REST API of transport-ws through
 * its real routing: each input becomes one HTTP request on a loopback
 * connection to a live instance whose core is the test core (fuzz_core.c).
 *   byte 0: bits 0-2 method (GET POST HEAD PUT DELETE OPTIONS PATCH GET),
 *           bits 3-4 credentials (none, alice's Bearer token, alice's
 *           session cookie, an unknown Bearer token), bit 5 Content-Type
 *           application/json (else text/plain), bit 6 Connection: close,
 *           bit 7 the test core answers later (through post()); with bit 6
 *           too, the client goes away before the answer
 *   then the request target (path and query) up to the first LF, then the body.
 * Checks: exactly one well-formed response with an exact Content-Length,
 * never a 500 (the test core never fails), a JSON body wherever the type
 * says JSON, 401 for protected endpoints without valid credentials and 200
 * for /api/me with them; and, when the response keeps the connection, a
 * following GET /healthz on it is answered 200.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const methods[] = {"GET",    "POST",    "HEAD",  "PUT",
                                      "DELETE", "OPTIONS", "PATCH", "GET"};

/* One response; returns it (aborts when missing, malformed or followed by more). */
static void one_response(const fz_buf *out, int head, fz_http_resp *r)
{
    size_t used = fz_http_parse(out->p ? out->p : "", out->len, head, r);
    /* a request refused by the parser is answered with a body and closed,
     * HEAD or not: the method of a malformed request is not trusted */
    if (head && used && used < out->len && r->status >= 400 && r->close)
        used = fz_http_parse(out->p, out->len, 0, r);
    FZ_CHECK(used > 0, "no complete response (%zu bytes: %.80s)", out->len, out->p ? out->p : "");
    FZ_CHECK(used == out->len, "%zu bytes after the response", out->len - used);
    FZ_CHECK(r->status != 500, "500 from the test core: %.*s", (int)r->body_len, r->body);
    if (strncmp(r->ctype, "application/json", 16) == 0 && r->body_len)
        fz_check_json(r->body, r->body_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_start(NULL);
    if (size < 1) return 0;
    const char *method = methods[data[0] & 7];
    int cred = (data[0] >> 3) & 3, json = (data[0] >> 5) & 1, close_it = (data[0] >> 6) & 1;
    int async = data[0] >> 7;
    fz_set_async(async);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    const char *lf = memchr(in, '\n', len);
    size_t tlen = lf ? (size_t)(lf - in) : len;
    const char *body = lf ? lf + 1 : in + len;
    size_t blen = lf ? len - tlen - 1 : 0;

    fz_buf req = {0}, out = {0};
    char head[512];
    fz_buf_add(&req, method, strlen(method));
    fz_buf_add(&req, " ", 1);
    fz_buf_add(&req, in, tlen);
    int n = snprintf(
        head, sizeof(head),
        " HTTP/1.1\r\nHost: fuzz\r\n%s%s%s%s%sContent-Type: %s\r\n"
        "Content-Length: %zu\r\n%s\r\n",
        cred == 1 ? "Authorization: Bearer " FZ_TOKEN_ALICE "\r\n" : "",
        cred == 2 ? "Cookie: theme=dark; chatd_session=" : "", cred == 2 ? FZ_TOKEN_ALICE : "",
        cred == 2 ? "\r\n" : "", cred == 3 ? "Authorization: Bearer nobody\r\n" : "",
        json ? "application/json" : "text/plain", blen, close_it ? "Connection: close\r\n" : "");
    fz_buf_add(&req, head, (size_t)n);
    fz_buf_add(&req, body, blen);

    int fd = fz_connect();
    fz_send(fd, req.p, req.len);
    if (async && close_it) { /* gone while the answer is pending */
        fz_hold(1);
        fz_pump(fd, NULL);
        fz_close(fd);
        fz_buf_free(&req);
        return 0;
    }
    int is_head = strcmp(method, "HEAD") == 0;
    fz_pump_http(fd, &out, is_head);
    fz_http_resp r;
    one_response(&out, is_head, &r);

    /* semantic checks on exact routes (target without a query) */
    char target[256] = "";
    if (tlen < sizeof(target) && !memchr(in, '\0', tlen)) memcpy(target, in, tlen);
    int get = strcmp(method, "GET") == 0 || is_head;
    int authed = cred == 1 || cred == 2;
    if (get && (strcmp(target, "/api/me") == 0 || strcmp(target, "/api/rooms") == 0 ||
                strcmp(target, "/api/members") == 0))
        FZ_CHECK(r.status == (authed ? 200 : 401), "%s %s with credentials %d: %d", method, target,
                 cred, r.status);
    if (get && strcmp(target, "/healthz") == 0) FZ_CHECK(r.status == 200, "healthz %d", r.status);
    if (close_it) FZ_CHECK(r.close, "Connection: close was asked for, the server keeps it");

    if (!r.close) {
        static const char hz[] = "GET /healthz HTTP/1.1\r\nHost: fuzz\r\n\r\n";
        out.len = 0;
        fz_send(fd, hz, sizeof(hz) - 1);
        fz_pump_http(fd, &out, 0);
        one_response(&out, 0, &r);
        FZ_CHECK(r.status == 200, "the kept connection answers /healthz with %d", r.status);
    }
    fz_close(fd);
    fz_buf_free(&req);
    fz_buf_free(&out);
    return 0;
}
