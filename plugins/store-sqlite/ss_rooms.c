/*
 * ss_rooms.c - the room summaries of a write batch (writer thread).
 *
 * The CHAT messages a batch inserts are gathered per room (ss_rooms_add),
 * and each member's summary row is written once per batch and room
 * (ss_rooms_flush) instead of twice per message. The result is the one the
 * messages would give one after the other:
 *   - last message: the inserted message of highest position, if past the
 *     stored one;
 *   - a member who wrote in the batch: everything up to their newest message
 *     is read, unread recounted (the peer's messages after it, the batch's
 *     included: they are in `messages` already);
 *   - a member who did not: unread grows by the peer's new messages past
 *     their read mark (looked up once).
 * The batch flushes before a READ event (which recounts from `messages`
 * and must see the summaries of the messages before it) and before its
 * commit; a failed flush fails the whole batch (its senders retry).
 */
#include "ss.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rooms_hash(const char *room)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)room; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* Put entry `k` (an index of r->v) in its slot. */
static void rooms_place(ss_rooms *r, size_t k)
{
    size_t mask = r->nslots - 1, at = (size_t)r->v[k].hash & mask;
    while (r->slots[at])
        at = (at + 1) & mask;
    r->slots[at] = (uint32_t)k + 1;
}

/* Room for one more entry: 0 when out of memory (nothing changed). */
static int rooms_grow(ss_rooms *r)
{
    if (r->n < r->cap && (r->n + 1) * 2 <= r->nslots) return 1;
    size_t cap = r->cap ? r->cap * 2 : 64;
    ss_room_acc *v = realloc(r->v, cap * sizeof(*v));
    if (!v) return 0;
    r->v = v;
    r->cap = cap;
    uint32_t *slots = calloc(cap * 2, sizeof(*slots));
    if (!slots) return 0;
    free(r->slots);
    r->slots = slots;
    r->nslots = cap * 2;
    for (size_t k = 0; k < r->n; k++)
        rooms_place(r, k);
    return 1;
}

void ss_rooms_free(ss_rooms *r)
{
    free(r->v);
    free(r->slots);
    memset(r, 0, sizeof(*r));
}

/* Forget the gathered rooms (their storage stays for the next batch). */
static void rooms_clear(ss_rooms *r)
{
    if (r->n) memset(r->slots, 0, r->nslots * sizeof(*r->slots));
    r->n = 0;
    r->first = NULL;
}

int ss_rooms_add(ss *s, ss_job *j)
{
    ss_rooms *r = &s->rooms;
    uint64_t h = rooms_hash(j->room);
    ss_room_acc *e = NULL;

    if (r->nslots) {
        size_t mask = r->nslots - 1;
        for (size_t at = (size_t)h & mask; r->slots[at]; at = (at + 1) & mask) {
            ss_room_acc *c = &r->v[r->slots[at] - 1];
            if (c->hash == h && strcmp(c->room, j->room) == 0) {
                e = c;
                break;
            }
        }
    }
    if (!e) {
        if (!rooms_grow(r)) return 0;
        e = &r->v[r->n];
        memset(e, 0, sizeof(*e));
        e->room = j->room;
        e->hash = h;
        e->side[0].member = j->writer_id;
        e->side[1].member = j->peer_id;
        rooms_place(r, r->n++);
    }
    if (!r->first) r->first = j;
    ss_room_side *w = &e->side[j->writer_id == e->side[0].member ? 0 : 1];
    if (!e->last || j->pos > e->last->pos) e->last = j;
    if (!w->mine || j->pos > w->mine->pos) w->mine = j;
    if (w->n == 0 || j->pos < w->min_pos) w->min_pos = j->pos;
    w->n++;
    j->in_rooms = 1;
    return 1;
}

/* The peer's messages of this batch in room e past read mark `lrp`. */
static int64_t rooms_unread_since(ss *s, const ss_room_acc *e, const ss_room_side *peer,
                                  int64_t lrp)
{
    int64_t n = 0;
    if (peer->n == 0 || peer->min_pos > lrp) return peer->n; /* the usual case: all of them */
    for (const ss_job *j = s->rooms.first; j; j = j->next)
        n += j->in_rooms && j->writer_id == peer->member && j->pos > lrp &&
             strcmp(j->room, e->room) == 0;
    return n;
}

/* The stored read mark of member in room (0 when it has no summary yet). */
static int rooms_read_mark(ss *s, int64_t member, const char *room, int64_t *lrp)
{
    sqlite3_stmt *st = s->w[W_ROOM_MARK];
    int rc;

    sqlite3_bind_int64(st, 1, member);
    sqlite3_bind_text(st, 2, room, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *lrp = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        ss_wlog(s, "reading a room summary", rc);
        return 0;
    }
    return 1;
}

/* Write one member's summary of room e: side k of it. */
static int rooms_write(ss *s, const ss_room_acc *e, int k)
{
    const ss_room_side *me = &e->side[k], *peer = &e->side[1 - k];
    sqlite3_stmt *st = s->w[W_ROOM_SUM];
    int64_t add = 0;
    int rc;

    if (!me->mine) {
        int64_t lrp;
        if (!rooms_read_mark(s, me->member, e->room, &lrp)) return 0;
        add = rooms_unread_since(s, e, peer, lrp);
    }
    sqlite3_bind_int64(st, 1, me->member);
    sqlite3_bind_text(st, 2, e->room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, peer->member);
    sqlite3_bind_int64(st, 4, e->last->id);
    sqlite3_bind_text(st, 5, e->last->text, (int)e->last->text_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, e->last->time_ms);
    sqlite3_bind_int64(st, 7, e->last->pos);
    sqlite3_bind_int64(st, 8, me->mine ? me->mine->id : 0);
    sqlite3_bind_int64(st, 9, me->mine ? me->mine->pos : 0);
    sqlite3_bind_int64(st, 10, add);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "updating a room summary", rc);
        return 0;
    }
    return 1;
}

int ss_rooms_flush(ss *s)
{
    ss_rooms *r = &s->rooms;
    int ok = 1;

    for (size_t k = 0; k < r->n && ok; k++)
        ok = rooms_write(s, &r->v[k], 0) && rooms_write(s, &r->v[k], 1);
    rooms_clear(r);
    return ok;
}

void ss_rooms_drop(ss *s)
{
    rooms_clear(&s->rooms);
}
