/*
 * test_http_parser.c - cmocka unit tests of the strict HTTP/1.1 request
 * parser: complete and byte-by-byte requests, pipelining, bodies, keep-alive
 * chunked bodies, bare-LF lines, absolute-form targets, Expect, and every
 * refusal status (400, 413, 414, 417, 431, 501, 505).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "http_parser.h"

static const http_limits LIM = {256, 1024, 8, 100};

static int feed_all(http_parser *p, const char *s, size_t len, size_t *used)
{
    return http_parser_feed(p, s, len, used);
}

static void test_simple_get(void **st)
{
    (void)st;
    http_parser p;
    assert_int_equal(http_parser_init(&p, &LIM), 0);
    const char *r = "GET /api/me?x=1 HTTP/1.1\r\nHost: a\r\nCookie:  a=b  \r\n\r\n";
    size_t used;
    assert_int_equal(feed_all(&p, r, strlen(r), &used), HTTP_PARSE_DONE);
    assert_int_equal(used, strlen(r));
    assert_string_equal(p.req.method, "GET");
    assert_string_equal(p.req.target, "/api/me?x=1");
    assert_int_equal(p.req.version_minor, 1);
    assert_string_equal(http_request_header(&p.req, "cookie"), "a=b");
    assert_int_equal(p.req.keep_alive, 1);
    assert_int_equal(p.req.body_len, 0);
    http_parser_free(&p);
}

static void test_byte_by_byte_and_pipeline(void **st)
{
    (void)st;
    http_parser p;
    assert_int_equal(http_parser_init(&p, &LIM), 0);
    const char *r = "POST /api/login HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                    "Connection: close\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n";
    size_t i = 0, used = 0;
    int rc = HTTP_PARSE_MORE;
    while (rc == HTTP_PARSE_MORE && i < strlen(r)) {
        rc = http_parser_feed(&p, r + i, 1, &used);
        i += used;
    }
    assert_int_equal(rc, HTTP_PARSE_DONE);
    assert_int_equal(p.req.body_len, 5);
    assert_memory_equal(p.req.body, "hello", 5);
    assert_int_equal(p.req.keep_alive, 0);
    http_parser_reset(&p);
    rc = http_parser_feed(&p, r + i, strlen(r) - i, &used);
    assert_int_equal(rc, HTTP_PARSE_DONE);
    assert_int_equal(i + used, strlen(r));
    assert_int_equal(p.req.version_minor, 0);
    assert_int_equal(p.req.keep_alive, 0);
    http_parser_free(&p);
}

static void test_leftover_after_upgrade(void **st)
{
    (void)st;
    http_parser p;
    assert_int_equal(http_parser_init(&p, &LIM), 0);
    const char *r = "GET /ws HTTP/1.1\r\nHost: a\r\n\r\n\x81\x85";
    size_t used;
    assert_int_equal(http_parser_feed(&p, r, strlen(r), &used), HTTP_PARSE_DONE);
    assert_int_equal(used, strlen(r) - 2);
    http_parser_free(&p);
}

static int status_of(const char *r)
{
    http_parser p;
    size_t used;
    assert_int_equal(http_parser_init(&p, &LIM), 0);
    int rc = http_parser_feed(&p, r, strlen(r), &used);
    int s = rc == HTTP_PARSE_ERROR ? p.status : rc == HTTP_PARSE_DONE ? 200 : 0;
    http_parser_free(&p);
    return s;
}

static void test_refusals(void **st)
{
    (void)st;
    char big[600];
    assert_int_equal(status_of("GET / HTTP/1.1\r\n\r\n"), 400); /* no Host */
    assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_int_equal(status_of("GET / HTTX/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("BREW / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
    assert_int_equal(status_of("GET http:// HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: x:y:z\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n"), 200);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 200);
    assert_int_equal(status_of("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nExpect: tea\r\n\r\n"), 417);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
                     501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               "Content-Length: 3\r\n\r\n"),
                     400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               "\r\nzz\r\n"),
                     400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                               "\r\n65\r\n"),
                     413);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01\r\n\r\n"), 400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n"), 413);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400);
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        400);
    assert_int_equal(
        status_of("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
                  "G: 1\r\nH: 1\r\n\r\n"),
        431);
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET /", 5);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(status_of(big), 414);
    char hdrs[1200];
    snprintf(hdrs, sizeof(hdrs), "GET / HTTP/1.1\r\nHost: a\r\nX: %01000d\r\n\r\n", 1);
    assert_int_equal(status_of(hdrs), 431);
}

static void test_chunked_lf_absolute(void **st)
{
    (void)st;
    http_parser p;
    size_t used, off = 0;
    assert_int_equal(http_parser_init(&p, &LIM), 0);
    static const char full[] =
        "POST http://h:1/api/x?y=1 HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
        "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n3\r\n\0ab\r\n0\r\n"
        "Trailer: x\r\n\r\nGET / HTTP/1.1\n";
    int rc = HTTP_PARSE_MORE;
    while (rc == HTTP_PARSE_MORE && off < sizeof(full) - 1) {
        rc = http_parser_feed(&p, full + off, 3, &used);
        if (p.expect_continue) p.expect_continue = 0;
        off += used;
    }
    assert_int_equal(rc, HTTP_PARSE_DONE);
    assert_string_equal(p.req.target, "/api/x?y=1");
    assert_int_equal(p.req.body_len, 8);
    assert_memory_equal(p.req.body, "hello\0ab", 8);
    assert_memory_equal(full + off, "GET", 3);
    http_parser_reset(&p);
    /* bare LF line ends */
    const char *lf = "GET /healthz HTTP/1.1\nHost: x\n\n";
    assert_int_equal(http_parser_feed(&p, lf, strlen(lf), &used), HTTP_PARSE_DONE);
    assert_string_equal(http_request_header(&p.req, "host"), "x");
    http_parser_reset(&p);
    /* list headers over several lines */
    const char *two = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n"
                      "Connection: Upgrade\r\nP: a\r\nP: b\r\n\r\n";
    char out[32];
    assert_int_equal(http_parser_feed(&p, two, strlen(two), &used), HTTP_PARSE_DONE);
    assert_true(http_request_has_token(&p.req, "connection", "upgrade"));
    assert_int_equal(http_request_count(&p.req, "p"), 2);
    assert_string_equal(http_request_join(&p.req, "p", out, sizeof(out)), "a, b");
    http_parser_free(&p);
}

static void test_helpers(void **st)
{
    (void)st;
    char out[32];
    assert_true(http_has_token("keep-alive, Upgrade", "upgrade"));
    assert_false(http_has_token("keep-alive, Upgrades", "upgrade"));
    assert_int_equal(http_percent_decode("3%264", 5, out, sizeof(out)), 3);
    assert_string_equal(out, "3&4");
    assert_int_equal(http_percent_decode("%2", 2, out, sizeof(out)), -1);
    assert_int_equal(http_percent_decode("%00", 3, out, sizeof(out)), -1);
    assert_int_equal(http_percent_decode("%zz", 3, out, sizeof(out)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_byte_by_byte_and_pipeline),
        cmocka_unit_test(test_leftover_after_upgrade),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_chunked_lf_absolute),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
