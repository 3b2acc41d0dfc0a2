/*
 * core/idem_fanout.c - the fan-out memory of idempotency keys: two nodes
 * that receive the same (member, key) at once both publish, and the queue
 * carries two copies. Both copies are in the room's one order (one Kafka
 * partition), so every node's fan-out sees them in the same order, and the
 * store keeps the first (it persists in that order and claims the key for
 * the first). This memory makes every node agree with the store:
 *   - idem_admit: the first copy of a (member, key) within the
 *     idempotency window is delivered and remembered; a later copy with
 *     another id is not delivered;
 *   - idem_settle: a keyed publish the queue reported durable is answered
 *     once this node's fan-out has seen the first copy of its key (at once
 *     when it has already, e.g. with queue-local, which fans out before it
 *     answers): its own message when it was first, else the first one (the
 *     loser's RECEIPT names the stored message); after idem_fanout_wait ms
 *     without it (a node that does not fan out), its own message.
 * Bounded by idem_fanout_memory keys (the oldest is forgotten first; racing
 * copies are seconds apart). Loop thread only.
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct settle_wait settle_wait;
struct settle_wait {
    settle_wait *next;
    struct idem_fanout *f;
    struct fan_entry *e;
    struct event *timer;
    idem_settle_cb cb;
    void *arg;
};

typedef struct fan_entry {
    idem_who who;
    chatd_msg *first;   /* the first copy fanned out, NULL until then */
    settle_wait *waits; /* publishes waiting for the first copy */
    size_t slot;        /* its place in the ring, once `first` is set */
} fan_entry;

struct idem_fanout {
    core *core;
    void *tree;       /* fan_entry by (member_id, key) */
    fan_entry **ring; /* remembered entries, oldest at `head` */
    size_t cap, head, n;
};

idem_fanout *idem_fanout_new(core *c)
{
    idem_fanout *f = calloc(1, sizeof(*f));
    if (!f) return NULL;
    f->core = c;
    f->cap = (size_t)c->cfg->idem_fanout_memory;
    f->ring = calloc(f->cap, sizeof(*f->ring));
    if (!f->ring) {
        free(f);
        return NULL;
    }
    return f;
}

static void entry_free(void *p)
{
    fan_entry *e = p;
    while (e->waits) {
        settle_wait *w = e->waits;
        e->waits = w->next;
        event_free(w->timer);
        free(w); /* shutting down: nobody left to answer */
    }
    msg_unref(e->first);
    free(e);
}

void idem_fanout_free(idem_fanout *f)
{
    if (!f) return;
    tdestroy(f->tree, entry_free);
    free(f->ring);
    free(f);
}

static fan_entry *lookup(idem_fanout *f, int64_t member_id, const char *key, int add)
{
    fan_entry probe = {.who.member_id = member_id};
    snprintf(probe.who.key, sizeof(probe.who.key), "%s", key);
    fan_entry **found = tfind(&probe, &f->tree, idem_who_cmp);
    if (found || !add) return found ? *found : NULL;
    fan_entry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    *e = probe;
    if (!tsearch(e, &f->tree, idem_who_cmp)) {
        free(e);
        return NULL;
    }
    return e;
}

static void wake(fan_entry *e, chatd_msg *first);

/* Drop e; a publish still waiting on it is answered as unknown. */
static void forget(idem_fanout *f, fan_entry *e)
{
    tdelete(e, &f->tree, idem_who_cmp);
    wake(e, NULL);
    entry_free(e);
}

/* Remember e (its first copy is set) in the ring, forgetting the oldest. */
static void ring_add(idem_fanout *f, fan_entry *e)
{
    if (f->n == f->cap) {
        fan_entry *old = f->ring[f->head];
        f->ring[f->head] = NULL;
        f->head = (f->head + 1) % f->cap;
        f->n--;
        if (old) forget(f, old);
    }
    e->slot = (f->head + f->n) % f->cap;
    f->ring[e->slot] = e;
    f->n++;
}

/* Answer every publish waiting on e with its first copy (NULL: unknown). */
static void wake(fan_entry *e, chatd_msg *first)
{
    while (e->waits) {
        settle_wait *w = e->waits;
        e->waits = w->next;
        event_free(w->timer);
        w->cb(w->arg, first);
        free(w);
    }
}

/* Is the remembered first copy of e too old to stand for msg? */
static bool expired(idem_fanout *f, const fan_entry *e, const chatd_msg *msg)
{
    return msg_time_ms(msg) - msg_time_ms(e->first) > f->core->cfg->idempotency_window * 1000;
}

bool idem_admit(core *c, chatd_msg *msg)
{
    idem_fanout *f = c->idem_fanout;
    const char *key = msg_idem_key(msg);
    if (!f || !key || msg_kind(msg) != CHATD_MSG_CHAT) return true;
    fan_entry *e = lookup(f, msg_writer_id(msg), key, 1);
    if (!e) return true; /* out of memory: deliver, as without this memory */
    if (e->first && msg_id(e->first) != msg_id(msg) && !expired(f, e, msg)) {
        metrics_counter_add(c->metrics, "chatd_idempotent_copies_dropped_total", "core", 1);
        return false; /* a second copy of the key: the store keeps the first */
    }
    if (!e->first) {
        e->first = msg_ref(msg);
        ring_add(f, e);
    } else if (msg_id(e->first) != msg_id(msg)) { /* the window passed: a new first */
        msg_unref(e->first);
        e->first = msg_ref(msg);
    }
    wake(e, e->first);
    return true;
}

static void settle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    settle_wait *w = arg;
    fan_entry *e = w->e;
    for (settle_wait **pp = &e->waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    idem_fanout *f = w->f;
    event_free(w->timer);
    w->cb(w->arg, NULL);
    free(w);
    if (!e->first && !e->waits) forget(f, e);
}

void idem_settle(core *c, chatd_msg *msg, idem_settle_cb cb, void *arg)
{
    idem_fanout *f = c->idem_fanout;
    const char *key = msg_idem_key(msg);
    int64_t wait_ms = c->cfg->idem_fanout_wait;
    if (!f || !key || wait_ms == 0) {
        cb(arg, NULL);
        return;
    }
    fan_entry *e = lookup(f, msg_writer_id(msg), key, 1);
    if (e && e->first && !expired(f, e, msg)) {
        cb(arg, e->first);
        return;
    }
    settle_wait *w = e ? calloc(1, sizeof(*w)) : NULL;
    struct timeval tv = {.tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000};
    if (w) w->timer = evtimer_new(c->base, settle_timeout, w);
    if (!w || !w->timer || evtimer_add(w->timer, &tv) != 0) {
        if (w && w->timer) event_free(w->timer);
        free(w);
        if (e && !e->first && !e->waits) forget(f, e);
        cb(arg, NULL); /* out of memory: answer as without this memory */
        return;
    }
    *w = (settle_wait){.next = e->waits, .f = f, .e = e, .timer = w->timer, .cb = cb, .arg = arg};
    e->waits = w;
}
