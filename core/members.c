/*
 * core/members.c - the member cache and room membership.
 *
 * Members never change once created, so the members the core has seen are
 * kept in memory (a tsearch tree by id, at most member_cache_max, the least
 * recently used dropped first) and room checks on the publish path usually
 * answer without asking the store. A miss asks the store once; concurrent
 * misses for the same id each ask (rare, harmless). An entry held across a
 * store call is pinned, so that it is not dropped meanwhile.
 */
#include "config.h"

#include "core.h"

#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct members {
    core *core;
    void *root; /* tsearch tree of member_entry by id */
    size_t count;
    member_entry *lru_head, *lru_tail; /* most recently used first */
};

static void lru_unlink(members *ms, member_entry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        ms->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        ms->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void lru_front(members *ms, member_entry *e)
{
    e->lru_prev = NULL;
    e->lru_next = ms->lru_head;
    if (ms->lru_head) ms->lru_head->lru_prev = e;
    ms->lru_head = e;
    if (!ms->lru_tail) ms->lru_tail = e;
}

static int by_id(const void *a, const void *b)
{
    const member_entry *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

members *members_new(core *c)
{
    members *ms = calloc(1, sizeof(*ms));
    if (ms) ms->core = c;
    return ms;
}

static void entry_free(void *p)
{
    member_entry *e = p;
    free(e->login_id);
    free(e->name);
    free(e);
}

/* Drop least recently used entries, never a pinned one nor `keep`, until
 * the cache is within member_cache_max. */
static void evict(members *ms, const member_entry *keep)
{
    size_t max = (size_t)ms->core->cfg->member_cache_max;
    member_entry *e = ms->lru_tail;
    while (ms->count > max && e) {
        member_entry *prev = e->lru_prev;
        if (e != keep && e->pins == 0) {
            lru_unlink(ms, e);
            tdelete(e, &ms->root, by_id);
            entry_free(e);
            ms->count--;
        }
        e = prev;
    }
}

void members_free(members *ms)
{
    if (!ms) return;
    tdestroy(ms->root, entry_free);
    free(ms);
}

static const member_entry *lookup(members *ms, int64_t id)
{
    member_entry key = {.id = id};
    member_entry **found = tfind(&key, &ms->root, by_id);
    if (!found) return NULL;
    if (ms->lru_head != *found) {
        lru_unlink(ms, *found);
        lru_front(ms, *found);
    }
    return *found;
}

chatd_member member_row_copy(const chatd_member *row, bool keep_hash)
{
    chatd_member out = {.size = sizeof(out)};
    if (!row || !CHATD_HAS(chatd_member, row, name)) return out;
    out.id = row->id;
    out.login_id = row->login_id;
    out.name = row->name;
    if (keep_hash && CHATD_HAS(chatd_member, row, pw_hash)) out.pw_hash = row->pw_hash;
    if (CHATD_HAS(chatd_member, row, created_ms)) out.created_ms = row->created_ms;
    return out;
}

void members_answer(chatd_member_cb cb, void *arg, chatd_status st, const member_entry *m)
{
    if (st != CHATD_OK || !m) {
        cb(arg, st == CHATD_OK ? CHATD_ERR_NOTFOUND : st, NULL, 0);
        return;
    }
    chatd_member row = {.size = sizeof(row),
                        .id = m->id,
                        .login_id = m->login_id,
                        .name = m->name,
                        .created_ms = m->created_ms};
    cb(arg, CHATD_OK, &row, 1);
}

const member_entry *members_put(members *ms, const chatd_member *m)
{
    if (!m || !CHATD_HAS(chatd_member, m, name) || m->id <= 0 || !m->login_id || !m->name)
        return NULL;
    const member_entry *old = lookup(ms, m->id);
    if (old) return old;
    member_entry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->id = m->id;
    e->login_id = strdup(m->login_id);
    e->name = strdup(m->name);
    e->created_ms = CHATD_HAS(chatd_member, m, created_ms) ? m->created_ms : 0;
    if (!e->login_id || !e->name || !tsearch(e, &ms->root, by_id)) {
        entry_free(e);
        return NULL;
    }
    ms->count++;
    lru_front(ms, e);
    evict(ms, e);
    metrics_gauge_set(ms->core->metrics, "chatd_member_cache_entries", "core", (int64_t)ms->count);
    return e;
}

typedef struct get_req {
    core *core;
    int64_t id;
    member_entry_cb cb;
    void *arg;
} get_req;

static void got_member(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    get_req *r = arg;
    const member_entry *e = NULL;
    if (st == CHATD_OK && n >= 1 && CHATD_HAS(chatd_member, rows, id) && rows->id == r->id)
        e = members_put(r->core->members, rows);
    else if (st == CHATD_OK)
        st = CHATD_ERR_NOTFOUND;
    if (st == CHATD_OK && !e) st = CHATD_ERR_NOMEM;
    r->cb(r->arg, st, e);
    free(r);
}

void members_get(core *c, int64_t id, member_entry_cb cb, void *arg)
{
    if (id <= 0) {
        cb(arg, CHATD_ERR_INVALID, NULL);
        return;
    }
    const member_entry *e = lookup(c->members, id);
    if (e) {
        cb(arg, CHATD_OK, e);
        return;
    }
    const chatd_store_ops *so = core_store(c);
    if (!so || !so->member_get) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL);
        return;
    }
    get_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL);
        return;
    }
    *r = (get_req){.core = c, .id = id, .cb = cb, .arg = arg};
    so->member_get(c->store->inst, id, NULL, got_member, r);
}

chatd_status room_parse(const char *room, int64_t *low, int64_t *high)
{
    if (!room || !low || !high) return CHATD_ERR_INVALID;
    const char *amp = strchr(room, '&');
    if (!amp) return CHATD_ERR_INVALID;
    uint64_t a, b;
    if (ids_parse(room, (size_t)(amp - room), &a) != 0 ||
        ids_parse(amp + 1, strlen(amp + 1), &b) != 0)
        return CHATD_ERR_INVALID;
    if (a == 0 || b == 0 || a == b || a > INT64_MAX || b > INT64_MAX) return CHATD_ERR_INVALID;
    *low = (int64_t)(a < b ? a : b);
    *high = (int64_t)(a < b ? b : a);
    return CHATD_OK;
}

int room_format(char *buf, size_t cap, int64_t a, int64_t b)
{
    if (!buf || cap == 0) return -1;
    buf[0] = '\0';
    if (a <= 0 || b <= 0 || a == b) return -1;
    char t[CHATD_ROOM_ID_MAX]; /* two 19-digit ids and the '&' fit */
    size_t n = fmt_u64(t, (uint64_t)(a < b ? a : b));
    t[n++] = '&';
    n += fmt_u64(t + n, (uint64_t)(a < b ? b : a));
    if (n >= cap) return -1;
    memcpy(buf, t, n);
    buf[n] = '\0';
    return (int)n;
}

const char *room_refusal(chatd_status st)
{
    switch (st) {
    case CHATD_ERR_FORBIDDEN:
        return "forbidden: you are not a member of this room";
    case CHATD_ERR_NOTFOUND:
        return "no such room: unknown member id";
    case CHATD_ERR_INVALID:
        return "malformed room id (use a&b of member ids)";
    case CHATD_ERR_NOMEM:
        return "out of memory";
    default:
        return "room check failed";
    }
}

/* Room check: look up both members (the cache usually has them), then
 * answer with the asking member's entry. */
typedef struct room_req {
    core *core;
    int64_t member_id, low, high;
    int step; /* 0: looking up low, 1: looking up high */
    member_entry *self;
    room_entry_cb cb;
    void *arg;
} room_req;

static void room_unpin(room_req *r)
{
    if (r->self) r->self->pins--;
    r->self = NULL;
}

static void room_step(void *arg, chatd_status st, const member_entry *m);

static void room_next(room_req *r)
{
    members_get(r->core, r->step == 0 ? r->low : r->high, room_step, r);
}

static void room_step(void *arg, chatd_status st, const member_entry *m)
{
    room_req *r = arg;
    if (st != CHATD_OK) {
        room_unpin(r);
        r->cb(r->arg, st, NULL, 0, NULL);
        free(r);
        return;
    }
    if (m->id == r->member_id) {
        r->self = (member_entry *)m; /* pinned while the peer is looked up */
        r->self->pins++;
    }
    if (r->step == 0) {
        r->step = 1;
        room_next(r);
        return;
    }
    char room[CHATD_ROOM_ID_MAX];
    room_format(room, sizeof(room), r->low, r->high);
    r->cb(r->arg, CHATD_OK, room, r->member_id == r->low ? r->high : r->low, r->self);
    room_unpin(r);
    free(r);
}

void members_room_check_entry(core *c, int64_t member_id, const char *room, room_entry_cb cb,
                              void *arg)
{
    int64_t low, high;
    if (room_parse(room, &low, &high) != CHATD_OK) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, NULL);
        return;
    }
    if (member_id != low && member_id != high) {
        cb(arg, CHATD_ERR_FORBIDDEN, NULL, 0, NULL);
        return;
    }
    room_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, NULL);
        return;
    }
    *r = (room_req){
        .core = c, .member_id = member_id, .low = low, .high = high, .cb = cb, .arg = arg};
    room_next(r);
}

/* chatd_api.room_check: the same check, answered without the entry. */
typedef struct check_req {
    chatd_room_cb cb;
    void *arg;
} check_req;

static void check_done(void *arg, chatd_status st, const char *room, int64_t peer,
                       const member_entry *self)
{
    (void)self;
    check_req *r = arg;
    r->cb(r->arg, st, room, peer);
    free(r);
}

void members_room_check(core *c, int64_t member_id, const char *room, chatd_room_cb cb, void *arg)
{
    check_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    *r = (check_req){.cb = cb, .arg = arg};
    members_room_check_entry(c, member_id, room, check_done, r);
}
