/*
 * fuzz_cursor.c - libFuzzer target for the cursors of transport-ws
 * (resume.c, sidecur.c): the value of a SUBSCRIBE's resume-after header, any
 * bytes a client sends. The first input byte picks the destination (even: a
 * room, odd: a side stream), the rest is the cursor. Checks: a room cursor
 * that parses is made again byte for byte from its position; a side cursor
 * that parses is a vector of ascending streams whose positions lie in their
 * streams, and one of the vector form ("p...") is written again byte for
 * byte from its vector; the unresumable form is side.<m>.x only.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_core.h"
#include "tw.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ROOM_DEST CHATD_DEST_ROOM_PREFIX "1&2"
#define SIDE_DEST CHATD_DEST_SIDE_PREFIX "7"

static void room_case(const char *cur)
{
    uint64_t pos = 0;
    if (tw_cursor_parse(ROOM_DEST, cur, &pos) != 0) return;
    char again[TW_CURSOR_MAX];
    FZ_CHECK(tw_cursor_make(ROOM_DEST, pos, again, sizeof(again)) == 0, "no cursor for %s", cur);
    FZ_CHECK(strcmp(again, cur) == 0, "room cursor %s parsed and made again as %s", cur, again);
}

static void side_case(const char *cur)
{
    tw_sidevec *v = NULL;
    int rc = tw_side_parse(SIDE_DEST, cur, &v);
    FZ_CHECK(rc == 0 || !v, "a vector returned with status %d", rc);
    FZ_CHECK(rc != -2 || strcmp(cur, "side.7.x") == 0, "%s read as the unresumable form", cur);
    if (rc != 0) return;
    FZ_CHECK(v && v->n > 0, "an empty vector from %s", cur);
    for (size_t i = 0; i < v->n; i++) {
        FZ_CHECK(i == 0 || v->e[i].k > v->e[i - 1].k, "streams not ascending in %s", cur);
        FZ_CHECK(v->e[i].v != 0 && tw_pos_stream(v->e[i].v) == v->e[i].k,
                 "position %llu of %s is not in stream %u", (unsigned long long)v->e[i].v, cur,
                 (unsigned)v->e[i].k);
    }
    if (strncmp(cur, "side.7.p", 8) == 0) {
        static tw_server srv; /* an empty node table */
        tw_sub s;
        memset(&s, 0, sizeof(s));
        s.vec = v;
        s.replay = (struct tw_replay *)&s; /* replaying: the cursor is the vector alone */
        char again[TW_CURSOR_MAX];
        FZ_CHECK(tw_side_cursor(&srv, &s, SIDE_DEST, again, sizeof(again)) == 0,
                 "no side cursor for %s", cur);
        FZ_CHECK(strcmp(again, cur) == 0, "side cursor %s parsed and written again as %s", cur,
                 again);
    }
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 2 * TW_CURSOR_MAX) return 0;
    char cur[2 * TW_CURSOR_MAX + 1];
    memcpy(cur, data + 1, size - 1);
    cur[size - 1] = '\0';
    if (data[0] & 1)
        side_case(cur);
    else
        room_case(cur);
    return 0;
}
