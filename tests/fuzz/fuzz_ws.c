/*
 * fuzz_ws.c - libFuzzer target for the transport-ws RFC 6455 decoder, with
 * the server's default max_frame (from the plugin's key table). The first
 * byte picks the chunk size and whether masking is required. Checks: bytes
 * used never exceed what was fed, errors are one of the documented close
 * codes, text messages are valid UTF-8 and within max_frame, control
 * payloads at most 125 bytes, close codes valid; every message and ping
 * re-encoded (masked) decodes to the same bytes; the handshake helpers give
 * well-formed answers for any input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz_core.h"
#include "ws_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Encode (masked, in two fragments when long) and decode again. */
static void round_trip(int opcode, const uint8_t *p, size_t len, size_t max)
{
    static const uint8_t key[4] = {0xa5, 0x00, 0x3c, 0xff};
    int control = opcode >= 8;
    size_t first = control || len < 2 ? len : len / 2;
    uint8_t *buf = malloc(len + 28);
    FZ_CHECK(buf, "out of memory");
    size_t hl = ws_frame_header_masked(buf, opcode, first == len, first, key);
    if (first) memcpy(buf + hl, p, first);
    ws_mask(buf + hl, first, key, 0);
    size_t n = hl + first;
    if (first < len) {
        size_t h2 = ws_frame_header_masked(buf + n, WS_OP_CONT, 1, len - first, key);
        memcpy(buf + n + h2, p + first, len - first);
        ws_mask(buf + n + h2, len - first, key, 0);
        n += h2 + len - first;
    }
    ws_decoder d;
    ws_event ev;
    ws_decoder_init(&d, max, 1);
    size_t off = 0, used = 0;
    int rc = 0;
    while (off < n && (rc = ws_decoder_feed(&d, buf + off, n - off, &used, &ev)) == 0)
        off += used;
    FZ_CHECK(rc == 1, "re-encoded frame of %zu bytes gave %d (%s)", len, rc,
             d.error ? d.error : "");
    FZ_CHECK(ev.len == len && (len == 0 || memcmp(ev.data, p, len) == 0), "round trip differs");
    FZ_CHECK(control ? (ev.type != WS_EV_MESSAGE) : (ev.opcode == opcode), "type changed");
    ws_decoder_free(&d);
    free(buf);
}

static void handshake_helpers(const uint8_t *data, size_t size)
{
    char s[256], acc[29], sub[16];
    size_t n = size < sizeof(s) - 1 ? size : sizeof(s) - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    if (ws_accept_key(s, acc) == 0) {
        FZ_CHECK(strlen(acc) == 28 && acc[27] == '=', "accept %s", acc);
        for (int i = 0; i < 27; i++)
            FZ_CHECK(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                            acc[i]) &&
                         acc[i],
                     "accept %s is not base64", acc);
    }
    if (ws_choose_subprotocol(s, sub, sizeof(sub))) {
        FZ_CHECK(strcasecmp(sub, "v12.stomp") == 0 || strcasecmp(sub, "v11.stomp") == 0 ||
                     strcasecmp(sub, "v10.stomp") == 0,
                 "chose %s", sub);
        FZ_CHECK(strstr(s, sub) != NULL, "chose %s, which was not offered", sub);
    }
    uint8_t cp[125];
    size_t cl = ws_close_payload(cp, 1000, s);
    FZ_CHECK(cl >= 2 && cl <= 125 && cp[0] == 0x03 && cp[1] == 0xe8, "close payload %zu", cl);
    if (ws_utf8_valid((const uint8_t *)s, strlen(s)))
        FZ_CHECK(ws_utf8_valid(cp + 2, cl - 2) && memcmp(cp + 2, s, cl - 2) == 0,
                 "close reason not a valid prefix of the reason");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t max = (size_t)fz_default("max_frame");
    ws_decoder d;
    ws_event ev;
    if (size < 1) return 0;
    size_t chunk = (size_t)(data[0] & 0x3f) + 1;
    if ((data[0] & 0x80) != 0) chunk = size;
    ws_decoder_init(&d, max, (data[0] & 0x40) != 0);
    size_t off = 1;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk, used = 0;
        int rc = ws_decoder_feed(&d, data + off, n, &used, &ev);
        FZ_CHECK(used <= n, "used %zu of %zu", used, n);
        off += used;
        if (rc < 0) {
            FZ_CHECK(rc == -1002 || rc == -1007 || rc == -1009 || rc == -1011, "rc %d", rc);
            FZ_CHECK(d.error && d.error[0], "error without a reason");
            break;
        }
        if (rc == 0) {
            FZ_CHECK(used == n, "need more input but used %zu of %zu", used, n);
            continue;
        }
        switch (ev.type) {
        case WS_EV_MESSAGE:
            FZ_CHECK(ev.len <= max, "message of %zu bytes", ev.len);
            FZ_CHECK(ev.opcode == WS_OP_TEXT || ev.opcode == WS_OP_BINARY, "opcode %d", ev.opcode);
            if (ev.opcode == WS_OP_TEXT)
                FZ_CHECK(ws_utf8_valid(ev.data, ev.len), "invalid UTF-8 text message");
            round_trip(ev.opcode, ev.data, ev.len, max);
            break;
        case WS_EV_CLOSE:
            FZ_CHECK(ev.close_code == WS_CLOSE_NO_STATUS || ws_close_code_valid(ev.close_code),
                     "close code %d", ev.close_code);
            FZ_CHECK(ev.reason_len <= 123 &&
                         ws_utf8_valid((const uint8_t *)ev.reason, ev.reason_len),
                     "close reason");
            FZ_CHECK(ev.len <= 125, "control payload %zu", ev.len);
            break;
        case WS_EV_PING:
        case WS_EV_PONG:
            FZ_CHECK(ev.len <= 125, "control payload %zu", ev.len);
            round_trip(ev.type == WS_EV_PING ? WS_OP_PING : WS_OP_PONG, ev.data, ev.len, max);
            break;
        default:
            FZ_CHECK(0, "event type %d", ev.type);
        }
    }
    FZ_CHECK(off <= size, "consumed past the input");
    ws_decoder_free(&d);
    handshake_helpers(data + 1, size - 1);
    return 0;
}
