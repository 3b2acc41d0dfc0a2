/*
 * fuzz_ws.c - libFuzzer target for the transport-ws RFC 6455 decoder. The
 * first byte picks the chunk size and whether masking is required; every
 * event is checked (text messages must be valid UTF-8, control payloads at
 * most 125 bytes, close codes valid) and handshake helpers get the rest.
 */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ws_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ws_decoder d;
    ws_event ev;
    if (size < 1) return 0;
    size_t chunk = (size_t)(data[0] & 0x3f) + 1;
    ws_decoder_init(&d, 4096, (data[0] & 0x40) != 0);
    size_t off = 1;
    while (off < size) {
        size_t n = size - off < chunk ? size - off : chunk, used = 0;
        int rc = ws_decoder_feed(&d, data + off, n, &used, &ev);
        assert(used <= n);
        off += used;
        if (rc < 0) {
            assert(rc == -1002 || rc == -1007 || rc == -1009 || rc == -1011);
            assert(d.error);
            break;
        }
        if (rc == 0) {
            assert(used == n);
            continue;
        }
        switch (ev.type) {
        case WS_EV_MESSAGE:
            assert(ev.len <= 4096);
            if (ev.opcode == WS_OP_TEXT) assert(ws_utf8_valid(ev.data, ev.len));
            break;
        case WS_EV_CLOSE:
            assert(ev.close_code == WS_CLOSE_NO_STATUS || ws_close_code_valid(ev.close_code));
            assert(ws_utf8_valid((const uint8_t *)ev.reason, ev.reason_len));
            /* fall through */
        case WS_EV_PING:
        case WS_EV_PONG:
            assert(ev.len <= 125);
            break;
        default:
            assert(0);
        }
    }
    ws_decoder_free(&d);

    /* handshake helpers on a NUL-terminated copy */
    char s[64], acc[29];
    size_t n = size - 1 < sizeof(s) - 1 ? size - 1 : sizeof(s) - 1;
    memcpy(s, data + 1, n);
    s[n] = '\0';
    if (ws_accept_key(s, acc) == 0) assert(strlen(acc) == 28);
    char sub[16];
    if (ws_choose_subprotocol(s, sub, sizeof(sub))) assert(strlen(sub) == 9);
    uint8_t cp[125];
    assert(ws_close_payload(cp, 1000, s) <= 125);
    return 0;
}
