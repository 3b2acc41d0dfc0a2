/*
 * tests/plugins/transport-ws/test_stomp_body.c - the quick reading of a
 * SEND's JSON body (stomp_body.c) against json-c in strict mode with UTF-8
 * validation, the reading it stands in for: every body it takes, json-c
 * takes too, with the same roomId, message and upTo; and the plain bodies
 * clients send are taken (not all left to json-c).
 */
#include "config.h"

#include "body_oracle.h"
#include "stomp_body.h"

#include <json-c/json.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

/* 1 when the quick reading took the body (and then agreed with json-c) */
static int check(const char *body, size_t len)
{
    char why[512];
    int taken;
    const char *r = body_oracle_check(body, len, &taken, why, sizeof(why));
    if (r) fail_msg("%s: %.*s", r, (int)len, body);
    return taken;
}

static int check_str(const char *body)
{
    return check(body, strlen(body));
}

static void plain_bodies_taken(void **state)
{
    (void)state;
    static const char *const taken[] = {
        "{\"roomId\":\"1&2\",\"message\":\"hello\"}",
        (" {\r\n\t\"roomId\" : \"1&2\" , \"message\" : \"a \\\"b\\\" \\\\ \\/ \\b\\f\\n\\r\\t\" } "
         "\n"),
        "{\"roomId\":\"3&4\",\"upTo\":\"123\"}",
        "{\"roomId\":\"3&4\",\"upTo\":123}",
        "{\"roomId\":\"3&4\",\"upTo\":-7,\"x\":true,\"y\":false,\"z\":null,\"w\":0}",
        "{\"message\":1,\"message\":\"last wins\"}",
        "{\"message\":\"first\",\"message\":null}",
        "{\"roomId\":\"\xec\x95\x88\",\"message\":\"\xf0\x9f\x98\x80\"}",
        "{}",
        "{\"upTo\":999999999999999999}",
    };
    for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++)
        if (!check_str(taken[i])) fail_msg("not taken: %s", taken[i]);
}

static void others_declined(void **state)
{
    (void)state;
    static const char *const declined[] = {
        "{\"message\":\"\\u0041\"}",      /* \u: json-c's */
        "{\"a\":{\"b\":1}}",              /* nesting */
        "{\"a\":[1]}",                    /* arrays */
        "{\"upTo\":1.5}",                 /* fractions */
        "{\"upTo\":1e3}",                 /* exponents */
        "{\"upTo\":0123}",                /* leading zero */
        "{\"upTo\":1234567890123456789}", /* past 18 digits */
        "{\"upTo\":-}",
        "{\"a\":1,}", /* trailing comma */
        "{\"a\" 1}",
        "{\"a\":1} x",              /* trailing bytes */
        "{\"a\":\"\x01\"}",         /* raw control character */
        "{\"a\":\"\xc0\xaf\"}",     /* overlong UTF-8 */
        "{\"a\":\"\xed\xa0\x80\"}", /* surrogate in UTF-8 */
        "{'a':1}",
        "{\"a\":NaN}",
        "{\"a\":tru}",
        "[1]",
        "\"s\"",
        "",
        "{",
        "{\"a\":\"unterminated}",
        "{\"a\":\"\\x\"}",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        if (check_str(declined[i])) fail_msg("taken: %s", declined[i]);
    char big[TW_BODY_QUICK_MAX + 64];
    int n = snprintf(big, sizeof(big), "{\"roomId\":\"1&2\",\"message\":\"");
    memset(big + n, 'x', sizeof(big) - (size_t)n - 3);
    memcpy(big + sizeof(big) - 3, "\"}", 3);
    assert_int_equal(check(big, sizeof(big) - 1), 0); /* over TW_BODY_QUICK_MAX */
}

/* Random bodies from JSON-ish pieces, and single-byte mutations of them:
 * whatever is taken must agree with json-c. */
static void random_bodies_agree(void **state)
{
    (void)state;
    static const char *const pieces[] = {"{",
                                         "}",
                                         "[",
                                         "]",
                                         ",",
                                         ":",
                                         " ",
                                         "\t",
                                         "\n",
                                         "\"roomId\"",
                                         "\"message\"",
                                         "\"upTo\"",
                                         "\"x\"",
                                         "\"1&2\"",
                                         "\"a\\\"b\"",
                                         "\"\\\\\"",
                                         "\"\\n\"",
                                         "\"\\u00e9\"",
                                         "\"\xc3\xa9\"",
                                         "0",
                                         "-1",
                                         "17",
                                         "1.0",
                                         "1e2",
                                         "true",
                                         "false",
                                         "null",
                                         "\"\"",
                                         "-",
                                         "\"\\/\"",
                                         "x"};
    const size_t np = sizeof(pieces) / sizeof(pieces[0]);
    char body[512];
    size_t taken = 0;
    srand(15);
    for (int i = 0; i < 200000; i++) {
        size_t n = 0;
        if (i % 2) { /* shaped like an object: members of key, colon, value */
            body[n++] = '{';
            int members = rand() % 4;
            for (int k = 0; k < members; k++) {
                const char *parts[] = {k ? "," : "", pieces[9 + rand() % 4], ":",
                                       pieces[13 + rand() % (int)(np - 13)]};
                for (size_t p = 0; p < 4; p++) {
                    size_t l = strlen(parts[p]);
                    memcpy(body + n, parts[p], l);
                    n += l;
                }
            }
            body[n++] = '}';
        } else {
            int k = 1 + rand() % 12;
            for (int p = 0; p < k; p++) {
                const char *s = pieces[rand() % (int)np];
                size_t l = strlen(s);
                memcpy(body + n, s, l);
                n += l;
            }
        }
        if (i % 3 == 0 && n > 0) body[rand() % (int)n] = (char)(rand() % 256);
        taken += (size_t)check(body, n);
    }
    assert_true(taken > 10000); /* the generator makes plenty of plain bodies */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_bodies_taken),
        cmocka_unit_test(others_declined),
        cmocka_unit_test(random_bodies_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
