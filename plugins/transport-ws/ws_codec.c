/*
 * ws_codec.c - RFC 6455 frame decoder/encoder, UTF-8 validation and handshake
 * helpers (see ws_codec.h). Independent of libevent.
 */
#include "ws_codec.h"

#include "list_token.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- UTF-8 ---------------------------------------------------------------- */

int ws_utf8_feed(ws_utf8 *st, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (st->need) {
            if (c < st->lo || c > st->hi) return -1;
            st->lo = 0x80;
            st->hi = 0xBF;
            st->need--;
            continue;
        }
        if (c < 0x80) continue;
        st->lo = 0x80;
        st->hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            st->need = 1;
        } else if (c == 0xE0) {
            st->need = 2;
            st->lo = 0xA0;
        } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
            st->need = 2;
        } else if (c == 0xED) {
            st->need = 2;
            st->hi = 0x9F;
        } else if (c == 0xF0) {
            st->need = 3;
            st->lo = 0x90;
        } else if (c >= 0xF1 && c <= 0xF3) {
            st->need = 3;
        } else if (c == 0xF4) {
            st->need = 3;
            st->hi = 0x8F;
        } else {
            return -1;
        }
    }
    return 0;
}

int ws_utf8_complete(const ws_utf8 *st)
{
    return st->need == 0;
}

int ws_utf8_valid(const uint8_t *s, size_t n)
{
    ws_utf8 st = {0, 0x80, 0xBF};
    return ws_utf8_feed(&st, s, n) == 0 && ws_utf8_complete(&st);
}

/* ---- decoder -------------------------------------------------------------- */

void ws_decoder_init(ws_decoder *d, size_t max_message, int require_mask)
{
    memset(d, 0, sizeof(*d));
    d->max_message = max_message;
    d->require_mask = require_mask;
}

void ws_decoder_free(ws_decoder *d)
{
    free(d->msg);
    free(d->ctl);
    d->ctl = NULL;
    d->msg = NULL;
    d->msg_cap = d->msg_len = 0;
}

int ws_close_code_valid(int code)
{
    if (code >= 1000 && code <= 1003) return 1;
    if (code >= 1007 && code <= 1014) return 1;
    return code >= 3000 && code <= 4999;
}

static int derr(ws_decoder *d, int code, const char *why)
{
    d->error = why;
    return -code;
}

/* Header bytes needed so far given what we have (2, then the full size). */
static size_t hdr_size(const ws_decoder *d)
{
    if (d->hdr_len < 2) return 2;
    size_t n = 2, l7 = d->hdr[1] & 0x7F;
    if (l7 == 126)
        n += 2;
    else if (l7 == 127)
        n += 8;
    if (d->hdr[1] & 0x80) n += 4;
    return n;
}

/* Validate a complete header and enter the payload phase. */
static int start_frame(ws_decoder *d)
{
    uint8_t b0 = d->hdr[0], b1 = d->hdr[1];
    size_t pos = 2;
    uint64_t len = b1 & 0x7F;

    d->fin = (b0 & 0x80) != 0;
    d->opcode = b0 & 0x0F;
    d->masked = (b1 & 0x80) != 0;
    if (b0 & 0x70) return derr(d, WS_CLOSE_PROTOCOL, "reserved bits set without an extension");
    if (len == 126) {
        len = ((uint64_t)d->hdr[2] << 8) | d->hdr[3];
        pos = 4;
        if (len < 126) return derr(d, WS_CLOSE_PROTOCOL, "payload length not minimally encoded");
    } else if (len == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | d->hdr[2 + i];
        pos = 10;
        if (len >> 63) return derr(d, WS_CLOSE_PROTOCOL, "payload length has the high bit set");
        if (len < 65536) return derr(d, WS_CLOSE_PROTOCOL, "payload length not minimally encoded");
    }
    if (d->masked) memcpy(d->mask, d->hdr + pos, 4);
    if (d->require_mask && !d->masked)
        return derr(d, WS_CLOSE_PROTOCOL, "client frames must be masked");
    switch (d->opcode) {
    case WS_OP_CLOSE:
    case WS_OP_PING:
    case WS_OP_PONG:
        if (!d->fin) return derr(d, WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (len > 125) return derr(d, WS_CLOSE_PROTOCOL, "control frame payload over 125 bytes");
        d->ctl_len = 0;
        if (!d->ctl && !(d->ctl = malloc(125))) return derr(d, WS_CLOSE_INTERNAL, "out of memory");
        break;
    case WS_OP_CONT:
        if (!d->msg_opcode)
            return derr(d, WS_CLOSE_PROTOCOL, "continuation frame without a message");
        break;
    case WS_OP_TEXT:
    case WS_OP_BINARY:
        if (d->msg_opcode)
            return derr(d, WS_CLOSE_PROTOCOL, "new message before the last one ended");
        d->msg_opcode = d->opcode;
        d->msg_len = 0;
        d->utf8.need = 0;
        break;
    default:
        return derr(d, WS_CLOSE_PROTOCOL, "unknown opcode");
    }
    if (d->opcode < 8) {
        if (len > d->max_message || d->msg_len + len > d->max_message)
            return derr(d, WS_CLOSE_TOO_BIG, "message too big");
        if (d->msg_len + len > d->msg_cap) {
            size_t cap = d->msg_cap ? d->msg_cap : 256;
            while (cap < d->msg_len + len)
                cap *= 2;
            if (cap > d->max_message) cap = d->max_message;
            uint8_t *m = realloc(d->msg, cap ? cap : 1);
            if (!m) return derr(d, WS_CLOSE_INTERNAL, "out of memory");
            d->msg = m;
            d->msg_cap = cap;
        }
    }
    d->left = len;
    d->mask_pos = 0;
    d->in_payload = 1;
    return 0;
}

/* The frame's payload is complete: produce an event if one is due. */
static int end_frame(ws_decoder *d, ws_event *ev)
{
    d->in_payload = 0;
    d->hdr_len = 0;
    memset(ev, 0, sizeof(*ev));
    switch (d->opcode) {
    case WS_OP_PING:
    case WS_OP_PONG:
        ev->type = d->opcode == WS_OP_PING ? WS_EV_PING : WS_EV_PONG;
        ev->data = d->ctl;
        ev->len = d->ctl_len;
        return 1;
    case WS_OP_CLOSE:
        ev->type = WS_EV_CLOSE;
        ev->data = d->ctl;
        ev->len = d->ctl_len;
        ev->close_code = WS_CLOSE_NO_STATUS;
        if (d->ctl_len == 1) return derr(d, WS_CLOSE_PROTOCOL, "close frame payload of one byte");
        if (d->ctl_len >= 2) {
            ev->close_code = (d->ctl[0] << 8) | d->ctl[1];
            if (!ws_close_code_valid(ev->close_code))
                return derr(d, WS_CLOSE_PROTOCOL, "invalid close code");
            if (!ws_utf8_valid(d->ctl + 2, d->ctl_len - 2))
                return derr(d, WS_CLOSE_BAD_DATA, "close reason is not UTF-8");
            ev->reason = (const char *)d->ctl + 2;
            ev->reason_len = d->ctl_len - 2;
        }
        return 1;
    default:
        if (!d->fin) return 0;
        if (d->msg_opcode == WS_OP_TEXT && !ws_utf8_complete(&d->utf8))
            return derr(d, WS_CLOSE_BAD_DATA, "text message is not valid UTF-8");
        ev->type = WS_EV_MESSAGE;
        ev->opcode = d->msg_opcode;
        ev->data = d->msg;
        ev->len = d->msg_len;
        d->msg_opcode = 0;
        d->reset_msg = 1;
        return 1;
    }
}

int ws_decoder_feed(ws_decoder *d, const uint8_t *buf, size_t len, size_t *consumed, ws_event *ev)
{
    size_t i = 0;
    int rc;

    if (d->reset_msg) { /* the message handed out is done with: free it */
        ws_decoder_free(d);
        d->reset_msg = 0;
    }
    if (d->ctl && !d->in_payload) { /* the control frame handed out too */
        free(d->ctl);
        d->ctl = NULL;
    }
    for (;;) {
        if (!d->in_payload) {
            size_t need;
            while ((need = hdr_size(d)) > d->hdr_len) {
                if (i == len) {
                    *consumed = i;
                    return 0;
                }
                d->hdr[d->hdr_len++] = buf[i++];
            }
            if ((rc = start_frame(d)) < 0) {
                *consumed = i;
                return rc;
            }
        }
        if (d->left > 0) {
            size_t n = len - i;
            if (n == 0) {
                *consumed = i;
                return 0;
            }
            if ((uint64_t)n > d->left) n = (size_t)d->left;
            uint8_t *dst = d->opcode >= 8 ? d->ctl + d->ctl_len : d->msg + d->msg_len;
            memcpy(dst, buf + i, n);
            if (d->masked) ws_mask(dst, n, d->mask, d->mask_pos);
            if (d->opcode < 8 && d->msg_opcode == WS_OP_TEXT && ws_utf8_feed(&d->utf8, dst, n)) {
                *consumed = i + n;
                return derr(d, WS_CLOSE_BAD_DATA, "text message is not valid UTF-8");
            }
            if (d->opcode >= 8)
                d->ctl_len += n;
            else
                d->msg_len += n;
            d->mask_pos += n;
            d->left -= n;
            i += n;
            if (d->left > 0) {
                *consumed = i;
                return 0;
            }
        }
        rc = end_frame(d, ev);
        if (rc != 0) {
            *consumed = i;
            return rc;
        }
    }
}

/* ---- encoder -------------------------------------------------------------- */

size_t ws_frame_header(uint8_t out[10], int opcode, int fin, uint64_t len)
{
    out[0] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_frame_header_masked(uint8_t out[14], int opcode, int fin, uint64_t len,
                              const uint8_t key[4])
{
    size_t n = ws_frame_header(out, opcode, fin, len);
    out[1] |= 0x80;
    memcpy(out + n, key, 4);
    return n + 4;
}

void ws_mask(uint8_t *data, size_t n, const uint8_t key[4], size_t pos)
{
    for (size_t i = 0; i < n; i++)
        data[i] ^= key[(pos + i) & 3];
}

size_t ws_close_payload(uint8_t out[125], int code, const char *reason)
{
    size_t n = reason ? strlen(reason) : 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    if (n > 123) {
        n = 123;
        while (n > 0 && ((uint8_t)reason[n] & 0xC0) == 0x80)
            n--; /* do not cut a UTF-8 sequence */
    }
    if (n) memcpy(out + 2, reason, n);
    return 2 + n;
}

/* ---- handshake ------------------------------------------------------------ */

int ws_accept_key(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    unsigned char raw[32], digest[SHA_DIGEST_LENGTH], cat[24 + sizeof(guid)];
    if (!key || strlen(key) != 24 || key[22] != '=' || key[23] != '=') return -1;
    for (int i = 0; i < 22; i++) {
        char c = key[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/'))
            return -1;
    }
    if (EVP_DecodeBlock(raw, (const unsigned char *)key, 24) != 18) /* 16 + 2 pad */
        return -1;
    memcpy(cat, key, 24);
    memcpy(cat + 24, guid, sizeof(guid) - 1);
    if (!SHA1(cat, 24 + sizeof(guid) - 1, digest)) return -1;
    if (EVP_EncodeBlock((unsigned char *)out, digest, SHA_DIGEST_LENGTH) != 28) return -1;
    out[28] = '\0';
    return 0;
}

const char *ws_choose_subprotocol(const char *offered, char *out, size_t outsz)
{
    static const char *const pref[] = {"v12.stomp", "v11.stomp", "v10.stomp"};
    if (!offered || outsz == 0) return NULL;
    for (size_t k = 0; k < 3; k++) {
        size_t pl = strlen(pref[k]), len;
        const char *cur = offered, *t;
        while ((t = list_token_next(&cur, &len)) != NULL) {
            if (len == pl && strncasecmp(t, pref[k], pl) == 0 && pl < outsz) {
                memcpy(out, t, pl); /* answer the client's own spelling */
                out[pl] = '\0';
                return out;
            }
        }
    }
    return NULL;
}
