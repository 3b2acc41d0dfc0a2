/*
 * core/members.c - the member cache and room membership.
 *
 * Members never change once created, so every member the core has seen is
 * kept in memory (a tsearch tree by id) and room checks on the publish path
 * usually answer without asking the store. A miss asks the store once;
 * concurrent misses for the same id each ask (rare, harmless).
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
};

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
    return found ? *found : NULL;
}

const member_entry *members_put(members *ms, const chatd_member *m)
{
    if (!m || m->id <= 0 || !m->login_id || !m->name) return NULL;
    const member_entry *old = lookup(ms, m->id);
    if (old) return old;
    member_entry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->id = m->id;
    e->login_id = strdup(m->login_id);
    e->name = strdup(m->name);
    e->created_ms =
        m->size >= offsetof(chatd_member, created_ms) + sizeof(int64_t) ? m->created_ms : 0;
    if (!e->login_id || !e->name || !tsearch(e, &ms->root, by_id)) {
        entry_free(e);
        return NULL;
    }
    ms->count++;
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
    if (st == CHATD_OK && n >= 1 && rows[0].id == r->id)
        e = members_put(r->core->members, &rows[0]);
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
    const chatd_store_ops *so = c->store ? &c->store->plugin->ops.store : NULL;
    if (!so || !so->member_get || !c->store->created) {
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

int room_parse(const char *room, int64_t *low, int64_t *high)
{
    if (!room) return -1;
    const char *amp = strchr(room, '&');
    if (!amp) return -1;
    uint64_t a, b;
    if (ids_parse(room, (size_t)(amp - room), &a) != 0 ||
        ids_parse(amp + 1, strlen(amp + 1), &b) != 0)
        return -1;
    if (a == 0 || b == 0 || a == b || a > INT64_MAX || b > INT64_MAX) return -1;
    *low = (int64_t)(a < b ? a : b);
    *high = (int64_t)(a < b ? b : a);
    return 0;
}

void room_format(int64_t low, int64_t high, char *buf, size_t size)
{
    snprintf(buf, size, "%" PRId64 "&%" PRId64, low, high);
}

/* Room check: look up both members, then answer. */
typedef struct room_req {
    core *core;
    int64_t member_id, low, high;
    int step; /* 0: looking up low, 1: looking up high */
    chatd_room_cb cb;
    void *arg;
} room_req;

static void room_step(void *arg, chatd_status st, const member_entry *m);

static void room_next(room_req *r)
{
    members_get(r->core, r->step == 0 ? r->low : r->high, room_step, r);
}

static void room_step(void *arg, chatd_status st, const member_entry *m)
{
    (void)m;
    room_req *r = arg;
    if (st != CHATD_OK) {
        r->cb(r->arg, st, NULL, 0);
        free(r);
        return;
    }
    if (r->step == 0) {
        r->step = 1;
        room_next(r);
        return;
    }
    char room[48];
    room_format(r->low, r->high, room, sizeof(room));
    r->cb(r->arg, CHATD_OK, room, r->member_id == r->low ? r->high : r->low);
    free(r);
}

void members_room_check(core *c, int64_t member_id, const char *room, chatd_room_cb cb, void *arg)
{
    int64_t low, high;
    if (!room || strlen(room) > 41 || room_parse(room, &low, &high) != 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    if (member_id != low && member_id != high) {
        cb(arg, CHATD_ERR_FORBIDDEN, NULL, 0);
        return;
    }
    room_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    *r = (room_req){
        .core = c, .member_id = member_id, .low = low, .high = high, .cb = cb, .arg = arg};
    room_next(r);
}
