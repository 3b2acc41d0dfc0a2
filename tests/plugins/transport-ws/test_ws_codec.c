/*
 * test_ws_codec.c - cmocka unit tests of the RFC 6455 codec: the handshake
 * accept key (RFC example), subprotocol choice, masked frames, fragmentation
 * with interleaved control frames, and every close code the decoder gives
 * (1002, 1007, 1009), UTF-8 validation across fragments, close payloads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "ws_codec.h"

static const uint8_t KEY[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Build a masked client frame into out; returns its size. */
static size_t frame(uint8_t *out, int op, int fin, const void *payload, size_t len)
{
    size_t h = ws_frame_header_masked(out, op, fin, len, KEY);
    memcpy(out + h, payload, len);
    ws_mask(out + h, len, KEY, 0);
    return h + len;
}

static void test_accept_key(void **st)
{
    (void)st;
    char out[29];
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out), 0);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_int_equal(ws_accept_key("short", out), -1);
    assert_int_equal(ws_accept_key("dGhlIHNhbXBsZSBub25jZQ!=", out), -1);
    assert_int_equal(ws_accept_key(NULL, out), -1);
}

static void test_subprotocol(void **st)
{
    (void)st;
    char b[16];
    assert_string_equal(ws_choose_subprotocol("v10.stomp, v11.stomp, v12.stomp", b, sizeof(b)),
                        "v12.stomp");
    assert_string_equal(ws_choose_subprotocol("v10.stomp,v11.stomp", b, sizeof(b)), "v11.stomp");
    assert_string_equal(ws_choose_subprotocol("v10.stomp", b, sizeof(b)), "v10.stomp");
    assert_string_equal(ws_choose_subprotocol("mqtt, V12.STOMP", b, sizeof(b)), "V12.STOMP");
    assert_null(ws_choose_subprotocol("mqtt", b, sizeof(b)));
    assert_null(ws_choose_subprotocol(NULL, b, sizeof(b)));
    assert_null(ws_choose_subprotocol("v12.stomp", b, 4));
}

static void test_fragmented_text_with_ping(void **st)
{
    (void)st;
    ws_decoder d;
    ws_event ev;
    uint8_t buf[256];
    size_t n = 0, used;
    ws_decoder_init(&d, 1024, 1);
    /* "h\xc3\xa9llo" split inside the two-byte sequence, a ping in between */
    n += frame(buf + n, WS_OP_TEXT, 0, "h\xc3", 2);
    n += frame(buf + n, WS_OP_PING, 1, "p", 1);
    n += frame(buf + n, WS_OP_CONT, 1, "\xa9llo", 4);
    size_t off = 0;
    assert_int_equal(ws_decoder_feed(&d, buf, n, &used, &ev), 1);
    assert_int_equal(ev.type, WS_EV_PING);
    assert_int_equal(ev.len, 1);
    off += used;
    /* the rest one byte at a time */
    int rc = 0;
    while (off < n && rc == 0) {
        rc = ws_decoder_feed(&d, buf + off, 1, &used, &ev);
        off += used;
    }
    assert_int_equal(rc, 1);
    assert_int_equal(off, n);
    assert_int_equal(ev.type, WS_EV_MESSAGE);
    assert_int_equal(ev.opcode, WS_OP_TEXT);
    assert_int_equal(ev.len, 6);
    assert_memory_equal(ev.data, "h\xc3\xa9llo", 6);
    ws_decoder_free(&d);
}

static int first_error(const uint8_t *buf, size_t n, size_t max)
{
    ws_decoder d;
    ws_event ev;
    size_t off = 0, used;
    int rc = 0;
    ws_decoder_init(&d, max, 1);
    while (off < n) {
        rc = ws_decoder_feed(&d, buf + off, n - off, &used, &ev);
        off += used;
        if (rc < 0 || (rc == 0 && used == 0)) break;
    }
    ws_decoder_free(&d);
    return rc < 0 ? -rc : 0;
}

static void test_errors(void **st)
{
    (void)st;
    uint8_t b[300], big[200];
    size_t n;
    /* unmasked */
    uint8_t unmasked[] = {0x81, 0x01, 'a'};
    assert_int_equal(first_error(unmasked, 3, 100), 1002);
    /* RSV1 */
    n = frame(b, WS_OP_TEXT, 1, "a", 1);
    b[0] |= 0x40;
    assert_int_equal(first_error(b, n, 100), 1002);
    /* unknown opcode */
    n = frame(b, 0x3, 1, "a", 1);
    assert_int_equal(first_error(b, n, 100), 1002);
    /* fragmented ping */
    n = frame(b, WS_OP_PING, 0, "a", 1);
    assert_int_equal(first_error(b, n, 100), 1002);
    /* control frame over 125 bytes */
    memset(big, 'x', sizeof(big));
    n = frame(b, WS_OP_PING, 1, big, 126);
    assert_int_equal(first_error(b, n, 1000), 1002);
    /* continuation without a start */
    n = frame(b, WS_OP_CONT, 1, "a", 1);
    assert_int_equal(first_error(b, n, 100), 1002);
    /* new message inside a fragmented one */
    n = frame(b, WS_OP_TEXT, 0, "a", 1);
    n += frame(b + n, WS_OP_TEXT, 1, "b", 1);
    assert_int_equal(first_error(b, n, 100), 1002);
    /* too big, in one frame and across fragments */
    n = frame(b, WS_OP_BINARY, 1, big, 101);
    assert_int_equal(first_error(b, n, 100), 1009);
    n = frame(b, WS_OP_BINARY, 0, big, 60);
    n += frame(b + n, WS_OP_CONT, 1, big, 60);
    assert_int_equal(first_error(b, n, 100), 1009);
    /* invalid UTF-8, overlong, surrogate, truncated at the end */
    n = frame(b, WS_OP_TEXT, 1, "\xc0\xaf", 2);
    assert_int_equal(first_error(b, n, 100), 1007);
    n = frame(b, WS_OP_TEXT, 1, "\xed\xa0\x80", 3);
    assert_int_equal(first_error(b, n, 100), 1007);
    n = frame(b, WS_OP_TEXT, 1, "ok\xe2\x82", 4);
    assert_int_equal(first_error(b, n, 100), 1007);
    /* binary need not be UTF-8 */
    n = frame(b, WS_OP_BINARY, 1, "\xff", 1);
    assert_int_equal(first_error(b, n, 100), 0);
    /* close frames: one byte, bad code, bad reason */
    n = frame(b, WS_OP_CLOSE, 1, "\x03", 1);
    assert_int_equal(first_error(b, n, 100), 1002);
    n = frame(b, WS_OP_CLOSE, 1, "\x03\xed", 2); /* 1005 may not be sent */
    assert_int_equal(first_error(b, n, 100), 1002);
    n = frame(b, WS_OP_CLOSE, 1, "\x03\xe8\xff", 3);
    assert_int_equal(first_error(b, n, 100), 1007);
    /* non-minimal length */
    uint8_t nm[] = {0x82, 0xFE, 0x00, 0x05, 1, 2, 3, 4};
    assert_int_equal(first_error(nm, sizeof(nm), 100), 1002);
}

static void test_close_and_lengths(void **st)
{
    (void)st;
    ws_decoder d;
    ws_event ev;
    uint8_t b[70000];
    size_t used;
    ws_decoder_init(&d, 70000, 1);
    size_t n = frame(b, WS_OP_CLOSE, 1,
                     "\x03\xe8"
                     "bye",
                     5);
    assert_int_equal(ws_decoder_feed(&d, b, n, &used, &ev), 1);
    assert_int_equal(ev.type, WS_EV_CLOSE);
    assert_int_equal(ev.close_code, 1000);
    assert_int_equal(ev.reason_len, 3);
    n = frame(b, WS_OP_CLOSE, 1, "", 0);
    assert_int_equal(ws_decoder_feed(&d, b, n, &used, &ev), 1);
    assert_int_equal(ev.close_code, WS_CLOSE_NO_STATUS);
    /* 16-bit and 64-bit lengths */
    static uint8_t payload[66000];
    memset(payload, 'z', sizeof(payload));
    n = frame(b, WS_OP_BINARY, 1, payload, 300);
    assert_int_equal(ws_decoder_feed(&d, b, n, &used, &ev), 1);
    assert_int_equal(ev.len, 300);
    n = frame(b, WS_OP_BINARY, 1, payload, 66000);
    assert_int_equal(ws_decoder_feed(&d, b, n, &used, &ev), 1);
    assert_int_equal(ev.len, 66000);
    assert_int_equal(used, n);
    ws_decoder_free(&d);

    uint8_t h[10];
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 1, 5), 2);
    assert_int_equal(h[0], 0x81);
    assert_int_equal(h[1], 5);
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 1, 126), 4);
    assert_int_equal(ws_frame_header(h, WS_OP_TEXT, 1, 70000), 10);
    uint8_t cp[125];
    char longr[200];
    memset(longr, 'r', sizeof(longr));
    longr[199] = '\0';
    assert_int_equal(ws_close_payload(cp, 1002, longr), 125);
    assert_int_equal(ws_close_payload(cp, 1000, NULL), 2);
    assert_true(ws_close_code_valid(4000));
    assert_false(ws_close_code_valid(1006));
    assert_false(ws_close_code_valid(999));
}

static void test_utf8(void **st)
{
    (void)st;
    assert_true(ws_utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80 \xea\xb0\x80", 8));
    assert_false(ws_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(ws_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3));     /* overlong */
    assert_false(ws_utf8_valid((const uint8_t *)"\x80", 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),
        cmocka_unit_test(test_subprotocol),
        cmocka_unit_test(test_fragmented_text_with_ping),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_close_and_lengths),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
