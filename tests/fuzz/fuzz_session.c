/*
 * fuzz_session.c - libFuzzer target for the STOMP session state machine of
 * transport-ws and the JSON body of SEND, through a real WebSocket on a live
 * instance behind the test core (fuzz_core.c).
 *   byte 0: bits 0-1 mode: 0 the rest is the client's STOMP byte stream;
 *             1 the same after a CONNECT as alice; 2 after CONNECT and a
 *             SUBSCRIBE to room 1&2; 3 after both, the rest is the body of
 *             one SEND (with a receipt) to /pub/chat/message, or with bit 2
 *             to /pub/chat/read
 *           bit 2 (modes 0-2): binary instead of text WebSocket messages
 *           bit 3: each WebSocket message in two fragments
 *           bits 4-5: accept-version 1.2, 1.1, 1.0 or "1.0,1.1,1.2"
 *           bit 6: log in with the session cookie (else login/passcode)
 *           bit 7: the test core answers later (through post()); with bit 3
 *           too, the client goes away while answers are pending
 * The stream is cut into one WebSocket message per STOMP frame (after each
 * NUL). Checks on what the server sends: a valid unmasked WebSocket stream;
 * its messages are STOMP frames CONNECTED, MESSAGE, RECEIPT or ERROR only,
 * nothing after an ERROR but the close; MESSAGE frames carry destination,
 * message-id and subscription, an exact content-length and a JSON body; the
 * server never sends a close code a peer may not send. For a SEND body: a
 * RECEIPT or an ERROR answers it; after a RECEIPT a chat line for room 1&2 is
 * delivered exactly once, with the text that was sent.
 */
#include "config.h"

#include <inttypes.h>
#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_core.h"
#include "stomp.h"
#include "ws_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct seen {
    int connected, messages, receipts, errors, closed;
    int after_error; /* frames after an ERROR */
    char receipt[64];
    char *text; /* "message" of the last MESSAGE to s1 */
    size_t text_len;
} seen;

static void check_frame(seen *s, const stomp_frame *f)
{
    const char *cmd = f->command;
    if (s->errors) s->after_error++;
    const char *cl = stomp_frame_header(f, "content-length");
    if (cl)
        FZ_CHECK(strtoull(cl, NULL, 10) == f->body_len, "content-length %s of %zu", cl,
                 f->body_len);
    if (strcmp(cmd, "CONNECTED") == 0) {
        FZ_CHECK(!s->connected++, "two CONNECTED");
        FZ_CHECK(stomp_frame_header(f, "version"), "CONNECTED without version");
    } else if (strcmp(cmd, "MESSAGE") == 0) {
        FZ_CHECK(s->connected, "MESSAGE before CONNECTED");
        const char *sub = stomp_frame_header(f, "subscription");
        FZ_CHECK(stomp_frame_header(f, "destination") && stomp_frame_header(f, "message-id") && sub,
                 "MESSAGE without destination, message-id or subscription");
        fz_check_json(f->body, f->body_len);
        if (strcmp(sub, "s1") == 0) {
            json_object *o = json_tokener_parse(f->body), *m;
            if (o && json_object_object_get_ex(o, "message", &m)) {
                free(s->text);
                s->text_len = (size_t)json_object_get_string_len(m);
                s->text = malloc(s->text_len + 1);
                FZ_CHECK(s->text, "out of memory");
                memcpy(s->text, json_object_get_string(m), s->text_len + 1);
                s->messages++;
            }
            json_object_put(o);
        }
    } else if (strcmp(cmd, "RECEIPT") == 0) {
        const char *id = stomp_frame_header(f, "receipt-id");
        FZ_CHECK(id, "RECEIPT without receipt-id");
        snprintf(s->receipt, sizeof(s->receipt), "%s", id);
        s->receipts++;
    } else if (strcmp(cmd, "ERROR") == 0) {
        FZ_CHECK(stomp_frame_header(f, "message"), "ERROR without message");
        s->errors++;
    } else {
        FZ_CHECK(0, "the server sent a %s frame", cmd);
    }
}

/* Decode everything the server sent after the 101 head. */
static void check_stream(const fz_buf *out, size_t from, seen *s)
{
    ws_decoder d;
    ws_event ev;
    stomp_parser p;
    stomp_limits lim = {1000, 1 << 18, 1 << 18, 1 << 18};
    stomp_frame f;
    ws_decoder_init(&d, 1 << 18, 0);
    FZ_CHECK(stomp_parser_init(&p, &lim) == 0, "init");
    size_t off = from;
    while (off < out->len) {
        size_t used = 0;
        int rc = ws_decoder_feed(&d, (const uint8_t *)out->p + off, out->len - off, &used, &ev);
        off += used;
        FZ_CHECK(rc >= 0, "the server's WebSocket stream is invalid: %s", d.error);
        if (rc == 0) break;
        FZ_CHECK(!s->closed, "data after the server's close frame");
        if (ev.type == WS_EV_CLOSE) {
            FZ_CHECK(ev.close_code == WS_CLOSE_NO_STATUS || ws_close_code_valid(ev.close_code),
                     "close code %d", ev.close_code);
            s->closed = 1;
            continue;
        }
        if (ev.type != WS_EV_MESSAGE) continue;
        FZ_CHECK(ev.opcode == WS_OP_TEXT, "a binary message from the server");
        FZ_CHECK(stomp_parser_feed(&p, (const char *)ev.data, ev.len) == 0, "feed");
        int r;
        while ((r = stomp_parser_next(&p, &f)) == 1) {
            check_frame(s, &f);
            /* later frames are escaped as the negotiated version says */
            const char *v = stomp_frame_header(&f, "version");
            if (strcmp(f.command, "CONNECTED") == 0 && v)
                p.version = strcmp(v, "1.0") == 0   ? STOMP_V10
                            : strcmp(v, "1.1") == 0 ? STOMP_V11
                                                    : STOMP_V12;
        }
        FZ_CHECK(r == 0, "the server sent a malformed STOMP frame: %s", p.error);
    }
    FZ_CHECK(off == out->len, "the server's stream ends inside a frame");
    stomp_parser_free(&p);
    ws_decoder_free(&d);
}

static void send_message(fz_buf *w, int opcode, int split, const char *p, size_t n)
{
    if (split && n >= 2) {
        fz_ws_frame(w, opcode, 0, p, n / 2);
        fz_ws_frame(w, WS_OP_CONT, 1, p + n / 2, n - n / 2);
    } else {
        fz_ws_frame(w, opcode, 1, p, n);
    }
}

/* The client's STOMP stream cut after each NUL into WebSocket messages. */
static void send_stream(fz_buf *w, int opcode, int split, const char *p, size_t n)
{
    while (n > 0) {
        const char *nul = memchr(p, '\0', n);
        size_t k = nul ? (size_t)(nul - p) + 1 : n;
        send_message(w, opcode, split, p, k);
        p += k;
        n -= k;
    }
}

static void check_send(const seen *s, int read, const uint8_t *body, size_t len)
{
    FZ_CHECK(s->receipts + s->errors >= 1, "a SEND with a receipt got neither RECEIPT nor ERROR");
    if (!s->receipts) return;
    FZ_CHECK(strcmp(s->receipt, "r1") == 0 && s->receipts == 1, "receipt %s", s->receipt);
    if (read) return;
    json_tokener *tok = json_tokener_new();
    FZ_CHECK(tok, "out of memory");
    json_object *o = json_tokener_parse_ex(tok, (const char *)body, (int)len), *m, *room;
    json_tokener_free(tok);
    FZ_CHECK(o && json_object_object_get_ex(o, "message", &m) &&
                 json_object_object_get_ex(o, "roomId", &room),
             "a RECEIPT for a body without message and roomId: %.*s", (int)len, body);
    int64_t lo, hi;
    int mine = sscanf(json_object_get_string(room), "%" SCNd64 "&%" SCNd64, &lo, &hi) == 2 &&
               ((lo == 1 && hi == 2) || (lo == 2 && hi == 1));
    if (mine) {
        FZ_CHECK(s->messages == 1, "%d deliveries of one chat line to its room", s->messages);
        FZ_CHECK(s->text_len == (size_t)json_object_get_string_len(m) &&
                     memcmp(s->text, json_object_get_string(m), s->text_len) == 0,
                 "the delivered text differs from the sent one");
    }
    json_object_put(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_start(NULL);
    if (size < 1) return 0;
    int mode = data[0] & 3, bin = (data[0] >> 2) & 1, split = (data[0] >> 3) & 1;
    int cookie = (data[0] >> 6) & 1, async = data[0] >> 7;
    fz_set_async(async);
    static const char *const versions[] = {"1.2", "1.1", "1.0", "1.0,1.1,1.2"};
    const char *ver = versions[(data[0] >> 4) & 3];
    const char *body = (const char *)data + 1;
    size_t blen = size - 1;

    fz_buf w = {0}, out = {0};
    char hs[512];
    int n = snprintf(
        hs, sizeof(hs),
        "GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: v12.stomp, v11.stomp, v10.stomp\r\n%s\r\n",
        cookie ? "Origin: http://fuzz\r\nCookie: chatd_session=" FZ_TOKEN_ALICE "\r\n" : "");
    fz_buf_add(&w, hs, (size_t)n);
    if (mode >= 1) {
        char c[512];
        n = snprintf(c, sizeof(c), "CONNECT\naccept-version:%s\nhost:fuzz\n%s\n", ver,
                     cookie ? "" : "login:alice\npasscode:" FZ_TOKEN_ALICE "\n");
        send_message(&w, WS_OP_TEXT, split, c, (size_t)n + 1);
    }
    if (mode >= 2) {
        static const char sub[] = "SUBSCRIBE\nid:s1\ndestination:/sub/chat/room/2&1\nack:auto\n\n";
        send_message(&w, WS_OP_TEXT, split, sub, sizeof(sub));
    }
    int read = mode == 3 && bin;
    if (mode == 3) {
        char h[256];
        n = snprintf(h, sizeof(h),
                     "SEND\ndestination:/pub/chat/%s\ncontent-type:application/json\n"
                     "content-length:%zu\nreceipt:r1\n\n",
                     read ? "read" : "message", blen);
        fz_buf msg = {0};
        fz_buf_add(&msg, h, (size_t)n);
        fz_buf_add(&msg, body, blen);
        fz_buf_add(&msg, "", 1);
        /* binary: the body's bytes reach STOMP and JSON whatever they are */
        send_message(&w, WS_OP_BINARY, split, msg.p, msg.len);
        fz_buf_free(&msg);
    } else {
        send_stream(&w, bin ? WS_OP_BINARY : WS_OP_TEXT, split, body, blen);
    }

    int fd = fz_connect();
    fz_send(fd, w.p, w.len);
    if (async && split) {
        fz_hold(1);
        fz_pump(fd, NULL);
        fz_close(fd);
        fz_buf_free(&w);
        return 0;
    }
    int eof = fz_pump(fd, &out);
    fz_http_resp r;
    size_t head = fz_http_parse(out.p ? out.p : "", out.len, 0, &r);
    FZ_CHECK(head > 0 && r.status == 101, "no 101 to the handshake (%d)", r.status);
    seen s = {0};
    check_stream(&out, head, &s);
    FZ_CHECK(s.after_error == 0, "%d frames after an ERROR", s.after_error);
    if (s.errors) FZ_CHECK(s.closed || eof, "an ERROR without closing the connection");
    if (mode >= 1 && s.errors == 0 && !s.closed)
        FZ_CHECK(s.connected, "a CONNECT with valid credentials got no CONNECTED");
    if (mode == 3 && s.connected) check_send(&s, read, (const uint8_t *)body, blen);
    fz_close(fd);
    free(s.text);
    fz_buf_free(&w);
    fz_buf_free(&out);
    return 0;
}
