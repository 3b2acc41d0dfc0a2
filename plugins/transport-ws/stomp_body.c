/*
 * stomp_body.c - the quick reading of a STOMP SEND's JSON body (see
 * stomp_body.h): one pass over the bytes for a flat object, the three
 * members publish_now reads decoded into the caller's buffer. Whatever is
 * not plainly such an object (nesting, \u escapes, fractions, exponents,
 * long numbers, invalid UTF-8, control characters, trailing bytes, a body
 * over TW_BODY_QUICK_MAX) is declined and read by json-c, so what this
 * takes is exactly what json-c's strict mode would take, with the same
 * values.
 */
#include "config.h"

#include "stomp_body.h"

#include "ws_codec.h"

#include <string.h>

typedef struct reader {
    const char *p, *end;
    char *out; /* next free byte of the caller's buffer */
} reader;

static void skip_ws(reader *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\r' || *r->p == '\n'))
        r->p++;
}

/* A string at r->p (its opening quote): decoded to r->out when keep, its
 * start in *s and length in *n. 0, or -1 to decline. */
static int read_string(reader *r, int keep, const char **s, size_t *n)
{
    if (r->p >= r->end || *r->p != '"') return -1;
    r->p++;
    char *o = r->out;
    while (r->p < r->end) {
        unsigned char ch = (unsigned char)*r->p++;
        if (ch == '"') {
            if (keep) {
                *o = '\0';
                *s = r->out;
                *n = (size_t)(o - r->out);
                r->out = o + 1;
            }
            return 0;
        }
        if (ch < 0x20) return -1;
        if (ch == '\\') {
            if (r->p >= r->end) return -1;
            switch (*r->p++) {
            case '"':
                ch = '"';
                break;
            case '\\':
                ch = '\\';
                break;
            case '/':
                ch = '/';
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case 'n':
                ch = '\n';
                break;
            case 'r':
                ch = '\r';
                break;
            case 't':
                ch = '\t';
                break;
            default:
                return -1; /* \u and anything else: json-c's */
            }
        }
        if (keep) *o++ = (char)ch;
    }
    return -1;
}

/* An integer of at most 18 digits (no fraction, no exponent). */
static int read_int(reader *r, int64_t *v)
{
    int neg = 0, digits = 0;
    int64_t x = 0;
    if (r->p < r->end && *r->p == '-') {
        neg = 1;
        r->p++;
    }
    if (r->p < r->end && *r->p == '0') {
        r->p++;
        digits = 1;
    } else {
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
            if (++digits > 18) return -1;
            x = x * 10 + (*r->p++ - '0');
        }
    }
    if (digits == 0) return -1;
    if (r->p < r->end &&
        ((*r->p >= '0' && *r->p <= '9') || *r->p == '.' || *r->p == 'e' || *r->p == 'E'))
        return -1;
    *v = neg ? -x : x;
    return 0;
}

static int read_literal(reader *r, const char *lit, size_t n)
{
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0) return -1;
    r->p += n;
    return 0;
}

/* One member's value into f (NULL: a member publish_now does not read). */
static int read_value(reader *r, tw_body_field *f)
{
    if (r->p >= r->end) return -1;
    char ch = *r->p;
    tw_body_field v = {.type = TW_BODY_OTHER};
    int rc;
    if (ch == '"') {
        v.type = TW_BODY_STRING;
        rc = read_string(r, f != NULL, &v.str, &v.len);
        /* a string with U+0000 cannot be one: never here (no \u) */
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
        v.type = TW_BODY_INT;
        rc = read_int(r, &v.num);
    } else if (ch == 't') {
        rc = read_literal(r, "true", 4);
    } else if (ch == 'f') {
        rc = read_literal(r, "false", 5);
    } else if (ch == 'n') {
        rc = read_literal(r, "null", 4);
    } else {
        return -1; /* an object or array: json-c's */
    }
    if (rc == 0 && f) *f = v;
    return rc;
}

static tw_body_field *field_of(tw_send_body *b, const char *key, size_t n)
{
    if (n == 6 && memcmp(key, "roomId", 6) == 0) return &b->room;
    if (n == 7 && memcmp(key, "message", 7) == 0) return &b->message;
    if (n == 4 && memcmp(key, "upTo", 4) == 0) return &b->up_to;
    return NULL;
}

int tw_send_body_quick(const char *body, size_t len, char *buf, tw_send_body *out)
{
    memset(out, 0, sizeof(*out));
    if (len > TW_BODY_QUICK_MAX || !ws_utf8_valid((const uint8_t *)body, len)) return 0;
    reader r = {.p = body, .end = body + len, .out = buf};
    skip_ws(&r);
    if (r.p >= r.end || *r.p++ != '{') return 0;
    skip_ws(&r);
    if (r.p < r.end && *r.p == '}') {
        r.p++;
    } else {
        for (;;) {
            /* the key is decoded at the buffer's end of use and dropped */
            const char *key = NULL;
            size_t klen = 0;
            char *mark = r.out;
            if (read_string(&r, 1, &key, &klen) != 0) return 0;
            tw_body_field *f = field_of(out, key, klen);
            r.out = mark;
            skip_ws(&r);
            if (r.p >= r.end || *r.p++ != ':') return 0;
            skip_ws(&r);
            if (read_value(&r, f) != 0) return 0;
            skip_ws(&r);
            if (r.p >= r.end) return 0;
            if (*r.p == ',') {
                r.p++;
                skip_ws(&r);
                continue;
            }
            if (*r.p++ != '}') return 0;
            break;
        }
    }
    skip_ws(&r);
    return r.p == r.end;
}
