/*
 * ws_codec.h - RFC 6455 WebSocket codec of transport-ws: an incremental frame
 * decoder that reassembles messages and enforces the protocol rules, a frame
 * header encoder for server frames, UTF-8 validation, close payloads and the
 * opening handshake computations (Sec-WebSocket-Accept, subprotocol choice).
 * Pure C plus OpenSSL (SHA-1, base64); no libevent, so it can be fuzzed.
 */
#ifndef TW_WS_CODEC_H
#define TW_WS_CODEC_H

#include <stddef.h>
#include <stdint.h>

enum ws_opcode {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA
};

/* Close codes used by the server. */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_PROTOCOL = 1002,
    WS_CLOSE_NO_STATUS = 1005, /* received close frame carried no code */
    WS_CLOSE_BAD_DATA = 1007,
    WS_CLOSE_POLICY = 1008,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011
};

/* Incremental UTF-8 validator (state survives across fragments). */
typedef struct ws_utf8 {
    uint8_t need;   /* continuation bytes still expected */
    uint8_t lo, hi; /* allowed range of the next continuation byte */
} ws_utf8;

/* Returns 0 while valid so far, -1 on an invalid sequence. */
int ws_utf8_feed(ws_utf8 *st, const uint8_t *s, size_t n);
/* 1 when no sequence is left open. */
int ws_utf8_complete(const ws_utf8 *st);
/* Whole-buffer check: 1 valid, 0 not. */
int ws_utf8_valid(const uint8_t *s, size_t n);

enum ws_event_type { WS_EV_MESSAGE = 1, WS_EV_PING, WS_EV_PONG, WS_EV_CLOSE };

typedef struct ws_event {
    int type;            /* enum ws_event_type */
    int opcode;          /* WS_EV_MESSAGE: WS_OP_TEXT or WS_OP_BINARY */
    const uint8_t *data; /* message / control payload; valid until the next feed */
    size_t len;
    int close_code;     /* WS_EV_CLOSE: the code, or WS_CLOSE_NO_STATUS */
    const char *reason; /* WS_EV_CLOSE: reason bytes (not NUL-terminated) */
    size_t reason_len;
} ws_event;

typedef struct ws_decoder {
    size_t max_message; /* bound of a reassembled message (close 1009 beyond) */
    int require_mask;   /* server side: client frames must be masked */
    /* current frame */
    uint8_t hdr[14];
    size_t hdr_len;
    int in_payload;
    int fin, opcode, masked;
    uint8_t mask[4];
    uint64_t left;   /* payload bytes still to read */
    size_t mask_pos; /* payload bytes read so far (mask index) */
    /* current message */
    int msg_opcode; /* 0: none in progress */
    uint8_t *msg;
    size_t msg_len, msg_cap;
    ws_utf8 utf8;
    int reset_msg; /* the last event handed out msg: free it on the next feed */
    uint8_t *ctl;  /* control frame payload (125 bytes); only while one is read */
    size_t ctl_len;
    const char *error; /* static reason after an error */
} ws_decoder;

void ws_decoder_init(ws_decoder *d, size_t max_message, int require_mask);
/* Free the message buffer; the decoder stays usable (between messages, or
 * after an error). */
void ws_decoder_free(ws_decoder *d);

/* Feed bytes. Returns 1 with *ev filled (event data valid until the next
 * call), 0 when all bytes were used and more are needed, or a negative close
 * code (-1002, -1007, -1009; d->error says why; -1011 out of memory) after
 * which the connection must be closed with that code. *consumed is set in
 * every case. */
int ws_decoder_feed(ws_decoder *d, const uint8_t *buf, size_t len, size_t *consumed, ws_event *ev);

/* Header of an unmasked server frame into out (<= 10 bytes); returns its size. */
size_t ws_frame_header(uint8_t out[10], int opcode, int fin, uint64_t len);

/* Header of a masked (client) frame (<= 14 bytes); for tests and tools. */
size_t ws_frame_header_masked(uint8_t out[14], int opcode, int fin, uint64_t len,
                              const uint8_t key[4]);
/* XOR data with the mask key, starting at mask offset `pos`. */
void ws_mask(uint8_t *data, size_t n, const uint8_t key[4], size_t pos);

/* Is `code` a close code a peer may send (RFC 6455 7.4)? */
int ws_close_code_valid(int code);

/* Close frame payload: 2-byte code + reason truncated to fit 125 bytes (at a
 * UTF-8 boundary). Returns its length. */
size_t ws_close_payload(uint8_t out[125], int code, const char *reason);

/* Sec-WebSocket-Accept of a client key. The key must be base64 of 16 bytes.
 * out gets 28 chars + NUL. Returns 0, or -1 on an invalid key. */
int ws_accept_key(const char *key, char out[29]);

/* Choose from a Sec-WebSocket-Protocol list: v12.stomp > v11.stomp >
 * v10.stomp (names compared case-insensitively). The chosen value is copied
 * into out exactly as the client offered it, since the answer must be one of
 * the offered values. Returns out, or NULL when none is offered. */
const char *ws_choose_subprotocol(const char *offered, char *out, size_t outsz);

#endif
