/*
 * stomp_body.h - the quick reading of a STOMP SEND's JSON body: the fields
 * publish_now needs, for the plain bodies clients send, without a json-c
 * object tree. A body it does not take is read by json-c as before.
 */
#ifndef TW_STOMP_BODY_H
#define TW_STOMP_BODY_H

#include <stddef.h>
#include <stdint.h>

/* Bodies longer than this go to json-c (the decoded strings fit a buffer
 * of this size on the caller's stack). */
#define TW_BODY_QUICK_MAX 8192

typedef enum { TW_BODY_ABSENT, TW_BODY_STRING, TW_BODY_INT, TW_BODY_OTHER } tw_body_type;

/* One member of the body that publish_now reads: its last occurrence wins,
 * as in json-c. A string is NUL-terminated in the caller's buffer. */
typedef struct tw_body_field {
    tw_body_type type;
    const char *str;
    size_t len;
    int64_t num;
} tw_body_field;

typedef struct tw_send_body {
    tw_body_field room, message, up_to; /* "roomId", "message", "upTo" */
} tw_send_body;

/* 1 when the body is a JSON object (RFC 8259, UTF-8) made only of members
 * whose values are strings without \u escapes, integers of at most 18
 * digits, true, false or null: *out holds its fields, their strings decoded
 * into buf (TW_BODY_QUICK_MAX bytes). 0 when it is anything else (also a
 * body json-c refuses): read it with json-c. */
int tw_send_body_quick(const char *body, size_t len, char *buf, tw_send_body *out);

#endif
