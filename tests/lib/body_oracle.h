/*
 * tests/lib/body_oracle.h - json-c's strict reading of a STOMP SEND's JSON
 * body (UTF-8 validated, the reading stomp_send.c's body_from_json does),
 * against which the quick reading of stomp_body.c is checked: every body
 * the quick reading takes, json-c takes too, with the same roomId, message
 * and upTo. Shared by the unit test (test_stomp_body.c) and the fuzz target
 * (fuzz_body.c); header-only, for test programs.
 */
#ifndef CHATD_TEST_BODY_ORACLE_H
#define CHATD_TEST_BODY_ORACLE_H

#include "stomp_body.h"

#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

/* json-c's reading of one member */
static void body_oracle_field(json_object *o, const char *key, tw_body_field *f)
{
    json_object *v;
    *f = (tw_body_field){.type = TW_BODY_ABSENT};
    if (!json_object_object_get_ex(o, key, &v)) return;
    if (json_object_is_type(v, json_type_string)) {
        f->type = TW_BODY_STRING;
        f->str = json_object_get_string(v);
        f->len = (size_t)json_object_get_string_len(v);
    } else if (json_object_is_type(v, json_type_int)) {
        f->type = TW_BODY_INT;
        f->num = json_object_get_int64(v);
    } else {
        f->type = TW_BODY_OTHER;
    }
}

/* NULL when both readings agree on member `name`, else what differs */
static const char *body_oracle_same(const char *name, const tw_body_field *q,
                                    const tw_body_field *j, char *why, size_t cap)
{
    if (q->type != j->type)
        snprintf(why, cap, "%s: quick type %d, json-c type %d", name, (int)q->type, (int)j->type);
    else if (q->type == TW_BODY_STRING &&
             (q->len != j->len || memcmp(q->str, j->str, q->len) != 0 || q->str[q->len] != '\0'))
        snprintf(why, cap, "%s: quick \"%.*s\" (%zu bytes), json-c \"%.*s\" (%zu bytes)", name,
                 (int)q->len, q->str, q->len, (int)j->len, j->str, j->len);
    else if (q->type == TW_BODY_INT && q->num != j->num)
        snprintf(why, cap, "%s: quick %lld, json-c %lld", name, (long long)q->num,
                 (long long)j->num);
    else
        return NULL;
    return why;
}

/* Reads `body` both ways. *taken is 1 when the quick reading took it.
 * Returns NULL when the readings agree (or the quick one declined), else a
 * description of the disagreement in `why` (cap bytes). */
static const char *body_oracle_check(const char *body, size_t len, int *taken, char *why,
                                     size_t cap)
{
    static char buf[TW_BODY_QUICK_MAX];
    tw_send_body q;
    *taken = tw_send_body_quick(body, len, buf, &q);
    if (!*taken) return NULL;
    json_tokener *tok = json_tokener_new();
    if (!tok) return "json_tokener_new failed";
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    json_object *o = json_tokener_parse_ex(tok, body, (int)len);
    size_t end = json_tokener_get_parse_end(tok);
    enum json_tokener_error e = json_tokener_get_error(tok);
    json_tokener_free(tok);
    while (end < len && strchr(" \t\r\n", body[end]))
        end++;
    const char *r = NULL;
    if (!o || e != json_tokener_success || end != len || !json_object_is_type(o, json_type_object))
        r = "taken quickly, refused by json-c";
    for (size_t i = 0; !r && i < len; i++) /* no raw control character (RFC 8259 7) */
        if ((unsigned char)body[i] < 0x20 && !strchr(" \t\r\n", body[i]))
            r = "taken quickly with a raw control character";
    if (!r) {
        tw_send_body j;
        body_oracle_field(o, "roomId", &j.room);
        body_oracle_field(o, "message", &j.message);
        body_oracle_field(o, "upTo", &j.up_to);
        if (!(r = body_oracle_same("roomId", &q.room, &j.room, why, cap)) &&
            !(r = body_oracle_same("message", &q.message, &j.message, why, cap)))
            r = body_oracle_same("upTo", &q.up_to, &j.up_to, why, cap);
    }
    if (o) json_object_put(o);
    return r;
}

#endif
