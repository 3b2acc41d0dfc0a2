/*
 * test_stomp.c - cmocka unit tests of the STOMP parser: several frames per
 * chunk and one frame over many, heart-beat EOLs, CRLF, content-length bodies
 * with NUL, repeated headers, escaping per version (CONNECT unescaped), and
 * the limits and malformed frames that must give an error, and the receipt
 * of the frame an error stopped in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "stomp.h"

static const stomp_limits LIM = {8, 128, 256, 1024};

static void test_frames_and_heartbeats(void **st)
{
    (void)st;
    stomp_parser p;
    stomp_frame f;
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    static const char in[] = "\n\r\nCONNECT\r\naccept-version:1.2\r\nhost:x\r\n\r\n\0"
                             "SEND\ndestination:/a\ncontent-length:3\n\na\0b\0\n"
                             "SEND\nx:1\nx:2\n\nbody\0";
    assert_int_equal(stomp_parser_feed(&p, in, sizeof(in) - 1), 0);
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(f.command, "CONNECT");
    assert_int_equal(p.heartbeats, 2);
    assert_string_equal(stomp_frame_header(&f, "accept-version"), "1.2");
    assert_string_equal(stomp_frame_header(&f, "host"), "x");
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(f.command, "SEND");
    assert_int_equal(f.body_len, 3);
    assert_memory_equal(f.body, "a\0b", 3);
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(stomp_frame_header(&f, "x"), "1"); /* first wins */
    assert_int_equal(f.nheaders, 2);
    assert_string_equal(f.body, "body");
    assert_int_equal(stomp_parser_next(&p, &f), 0);
    assert_int_equal(p.heartbeats, 3);
    stomp_parser_free(&p);
}

static void test_split_frame(void **st)
{
    (void)st;
    stomp_parser p;
    stomp_frame f;
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    static const char in[] = "SEND\ndestination:/pub/chat/message\ncontent-length:5\n\nhe\0lo\0";
    for (size_t i = 0; i < sizeof(in) - 2; i++) {
        assert_int_equal(stomp_parser_feed(&p, in + i, 1), 0);
        assert_int_equal(stomp_parser_next(&p, &f), 0);
    }
    assert_int_equal(stomp_parser_feed(&p, in + sizeof(in) - 2, 1), 0);
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_int_equal(f.body_len, 5);
    assert_string_equal(stomp_frame_header(&f, "destination"), "/pub/chat/message");
    stomp_parser_free(&p);
}

static void test_escaping(void **st)
{
    (void)st;
    stomp_parser p;
    stomp_frame f;
    char out[64];
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    static const char in[] = "SEND\na\\cb:x\\ny\\\\z\\r\n\n\0CONNECT\nlogin:a\\b\n\n\0";
    assert_int_equal(stomp_parser_feed(&p, in, sizeof(in) - 1), 0);
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(f.headers[0].name, "a:b");
    assert_string_equal(f.headers[0].value, "x\ny\\z\r");
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(stomp_frame_header(&f, "login"), "a\\b"); /* CONNECT: not escaped */
    stomp_parser_free(&p);

    /* 1.1 has no \r escape; 1.0 has no escaping at all */
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    p.version = STOMP_V11;
    static const char in11[] = "SEND\na:\\r\n\n\0";
    assert_int_equal(stomp_parser_feed(&p, in11, sizeof(in11) - 1), 0);
    assert_int_equal(stomp_parser_next(&p, &f), -1);
    stomp_parser_free(&p);
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    p.version = STOMP_V10;
    static const char in10[] = "SEND\na:\\q\n\n\0";
    assert_int_equal(stomp_parser_feed(&p, in10, sizeof(in10) - 1), 0);
    assert_int_equal(stomp_parser_next(&p, &f), 1);
    assert_string_equal(stomp_frame_header(&f, "a"), "\\q");
    stomp_parser_free(&p);

    assert_int_equal(stomp_escape(out, sizeof(out), "a:b\nc\\d\re", STOMP_V12), 13);
    assert_string_equal(out, "a\\cb\\nc\\\\d\\re");
    assert_int_equal(stomp_escape(out, sizeof(out), "a:b", STOMP_V10), 3);
    assert_string_equal(out, "a:b");
    /* too short: cut before the escape that does not fit whole, no byte
     * left unwritten before the NUL */
    char small[3] = {'x', 'x', 'x'};
    assert_int_equal(stomp_escape(small, sizeof(small), "a:b", STOMP_V12), 4);
    assert_int_equal(small[0], 'a');
    assert_int_equal(small[1], '\0');
}

static int err_of(const char *in, size_t len)
{
    stomp_parser p;
    stomp_frame f;
    assert_int_equal(stomp_parser_init(&p, &LIM), 0);
    int rc = stomp_parser_feed(&p, in, len);
    if (rc == 0) rc = stomp_parser_next(&p, &f);
    stomp_parser_free(&p);
    return rc;
}

static void test_errors(void **st)
{
    (void)st;
    char big[600];
#define E(s) err_of(s, sizeof(s) - 1)
    assert_int_equal(E("send\n\n\0"), -1);                      /* lowercase */
    assert_int_equal(E("SEND\nnocolon\n\n\0"), -1);             /* header without : */
    assert_int_equal(E("SEND\n:v\n\n\0"), -1);                  /* empty name */
    assert_int_equal(E("SEND\ncontent-length:x\n\n\0"), -1);    /* bad length */
    assert_int_equal(E("SEND\ncontent-length:2\n\nabc\0"), -1); /* no NUL after */
    assert_int_equal(E("SEND\ncontent-length:999\n\n\0"), -1);  /* over max_body */
    assert_int_equal(E("SEND\na:\\t\n\n\0"), -1);               /* undefined escape */
    assert_int_equal(E("\rX"), -1);                             /* stray CR */
    assert_int_equal(E("S\na:1\nb:1\nc:1\nd:1\ne:1\nf:1\ng:1\nh:1\ni:1\n\n\0"), -1); /* count */
    memset(big, 'a', sizeof(big));
    memcpy(big, "SEND\nx:", 7);
    assert_int_equal(err_of(big, 200), -1); /* header line over 128 */
    memset(big, 'a', sizeof(big));
    memcpy(big, "SEND\n\n", 6);
    assert_int_equal(err_of(big, 300), -1); /* NUL-terminated body over max_body */
    assert_int_equal(E("SEND\n\nincomplete"), 0);
#undef E
}

/* the receipt of the frame the parser stopped in: raw complete header lines
 * only, unescaped, never the command line or the body */
static void test_error_receipt(void **st)
{
    (void)st;
    static const struct {
        const char *in;
        const char *want; /* NULL: none */
    } cases[] = {
        {"\nSEND\ncontent-length:999\nreceipt:r\\c1\n\n", "r:1"}, /* after the bad header */
        {"SEND\nreceipt:first\nreceipt:second\ncontent-length:999\n\n", "first"},
        {"SEND\nx:y\n\nreceipt:in-body", NULL},
        {"receipt:x\ncontent-length:999\n\n", NULL},         /* a command line, not a header */
        {"SEND\ncontent-length:999\nreceipt:cut", NULL},     /* not a complete line */
        {"SEND\ncontent-length:999\nreceipt:\\t\n\n", NULL}, /* undefined escape */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        stomp_parser p;
        stomp_frame f;
        char out[64];
        assert_int_equal(stomp_parser_init(&p, &LIM), 0);
        int rc = stomp_parser_feed(&p, cases[i].in, strlen(cases[i].in));
        if (rc == 0) rc = stomp_parser_next(&p, &f);
        if (cases[i].want) {
            assert_int_equal(rc, -1);
            assert_int_equal(stomp_parser_receipt(&p, out, sizeof(out)), 0);
            assert_string_equal(out, cases[i].want);
        } else {
            assert_int_equal(stomp_parser_receipt(&p, out, sizeof(out)), -1);
        }
        assert_int_equal(stomp_parser_receipt(&p, out, 2), -1); /* does not fit */
        stomp_parser_free(&p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames_and_heartbeats),
        cmocka_unit_test(test_split_frame),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_error_receipt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
