/*
 * fuzz_msg.c - libFuzzer target for the message wire form of the core
 * (core/msg.c): msg_parse_json and chatd_api.msg_from_json read Kafka
 * records that other nodes wrote, so any bytes may arrive. Checks: a
 * message that parses has a kind, a canonical room of two distinct ids, a
 * writer of 1-64 bytes, valid UTF-8 text, a READ's up_to; its msg_json
 * parses back (through the api table) to the same fields and to the same
 * JSON byte for byte, and rewriting the text invalidates the cached form.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core.h"
#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const chatd_msg *a, const chatd_msg *b)
{
    size_t la, lb;
    const char *ta = msg_text(a, &la), *tb = msg_text(b, &lb);
    FZ_CHECK(msg_kind(a) == msg_kind(b) && msg_id(a) == msg_id(b) &&
                 strcmp(msg_room(a), msg_room(b)) == 0 && msg_writer_id(a) == msg_writer_id(b) &&
                 strcmp(msg_writer(a), msg_writer(b)) == 0 && la == lb && memcmp(ta, tb, la) == 0 &&
                 msg_time_ms(a) == msg_time_ms(b) && msg_up_to(a) == msg_up_to(b),
             "the message changed on a round trip through JSON");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const chatd_api *api = api_table();
    chatd_msg *m = NULL;
    chatd_status st = msg_parse_json((const char *)data, size, &m);
    chatd_msg *m2 = NULL;
    chatd_status st2 = api->msg_from_json(NULL, (const char *)data, size, &m2);
    FZ_CHECK(st == st2 && (m != NULL) == (m2 != NULL), "msg_from_json and msg_parse_json differ");
    if (m2) msg_unref(m2);
    if (st != CHATD_OK) {
        FZ_CHECK(!m && (st == CHATD_ERR_INVALID || st == CHATD_ERR_NOMEM), "status %d", st);
        return 0;
    }
    FZ_CHECK(m, "OK without a message");
    int64_t lo, hi;
    char canon[CHATD_ROOM_ID_MAX];
    FZ_CHECK(room_parse(msg_room(m), &lo, &hi) == 0 && lo < hi &&
                 room_format(canon, sizeof(canon), lo, hi) > 0 && strcmp(canon, msg_room(m)) == 0,
             "room %s is not canonical", msg_room(m));
    size_t wl = strlen(msg_writer(m));
    FZ_CHECK(wl >= 1 && wl <= 64 && msg_writer_id(m) > 0 && msg_id(m) > 0, "writer/id");
    size_t tl;
    const char *text = msg_text(m, &tl);
    FZ_CHECK(text[tl] == '\0', "text not terminated");
    if (msg_kind(m) == CHATD_MSG_CHAT) {
        FZ_CHECK(utf8_valid(text, tl), "text is not valid UTF-8");
        FZ_CHECK(msg_up_to(m) == 0, "CHAT with up_to");
    } else {
        FZ_CHECK(msg_kind(m) == CHATD_MSG_READ && tl == 0, "READ with text");
    }

    size_t jl;
    const char *j = msg_json(m, &jl);
    FZ_CHECK(j && strlen(j) == jl, "msg_json");
    chatd_msg *back = NULL;
    FZ_CHECK(api->msg_from_json(NULL, j, jl, &back) == CHATD_OK,
             "msg_json output does not parse: %s", j);
    same(m, back);
    size_t bl;
    const char *bj = msg_json(back, &bl);
    FZ_CHECK(bj && bl == jl && memcmp(bj, j, jl) == 0, "JSON differs: %s / %s", j, bj);
    FZ_CHECK(msg_json(m, NULL) == j, "cached JSON not reused");

    /* the filter stage may rewrite the text: the cached JSON must follow */
    if (msg_kind(back) == CHATD_MSG_CHAT) {
        FZ_CHECK(msg_set_text(back, "x", 1) == CHATD_ERR_INVALID, "set_text outside a filter");
        msg_set_mutable(back, true);
        FZ_CHECK(msg_set_text(back, "rewritten", 9) == CHATD_OK, "set_text");
        const char *nj = msg_json(back, NULL);
        FZ_CHECK(nj && strstr(nj, "\"message\":\"rewritten\""), "stale JSON after set_text");
    }
    FZ_CHECK(msg_ref(m) == m, "ref");
    msg_unref(m);
    msg_unref(m);
    msg_unref(back);
    return 0;
}
