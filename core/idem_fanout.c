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
 *     loser's RECEIPT names the stored message). The fan-out can be held
 *     longer than that (queue-kafka holds a partition another node persists
 *     until that node's commit is seen), so every fifth of idem_fanout_wait
 *     the store's idempotency record is asked too: once the store has the
 *     key, its message is the answer. After idem_fanout_wait ms with
 *     neither (a node that does not fan out, a store that does not answer,
 *     the node persisting the partition down), an error that tells the
 *     client to send again with the same key: naming its own copy could
 *     name one the store drops.
 * Bounded by idem_fanout_memory keys (the oldest is forgotten first; racing
 * copies are seconds apart). Seeded at start (idem_fanout_seed) with the
 * store's newest keys of the window, their first copies known by id only:
 * a node that starts after the first copy was stored but before the second
 * is fanned out (queue-kafka's fan-out starts after the store's head, so it
 * never sees the first copy) drops the second as the other nodes do; the
 * seeded id itself, when it comes (a fan-out that re-reads), is the first
 * copy, and a publish settled against a seeded key is answered with the
 * store's record. Loop thread only.
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The store is asked every IDEM_SETTLE_ASKS-th of idem_fanout_wait. */
#define IDEM_SETTLE_ASKS 5

typedef struct settle_wait settle_wait;
struct settle_wait {
    settle_wait *next;
    struct idem_fanout *f;
    struct fan_entry *e; /* NULL once answered */
    struct event *timer;
    idem_settle_cb cb;
    void *arg;
    int asks;    /* store lookups started */
    bool asking; /* one is outstanding: freed when it returns */
};

typedef struct fan_entry {
    idem_who who;
    uint64_t first_id;  /* the first copy's id, 0 until it is known */
    int64_t first_ms;   /* and its time */
    chatd_msg *first;   /* the first copy fanned out; NULL until then, and for
                         * a seeded key until its copy comes (if ever) */
    settle_wait *waits; /* publishes waiting for the first copy */
    size_t slot;        /* its place in the ring, once first_id is set */
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
        if (w->timer) event_free(w->timer);
        /* shutting down: nobody left to answer; the store, destroyed
         * before, returns no lookup after this */
        free(w);
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

/* Take w off its entry's list and answer it with (st, first); freed now, or
 * when its outstanding store lookup returns. */
static void answer(settle_wait *w, chatd_status st, chatd_msg *first)
{
    fan_entry *e = w->e;
    for (settle_wait **pp = &e->waits; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    w->e = NULL;
    if (w->timer) event_free(w->timer);
    w->timer = NULL;
    w->cb(w->arg, st, first);
    if (!w->asking) free(w);
}

/* Answer every publish waiting on e with its first copy (NULL: not known,
 * an error: the publisher retries with the same key). */
static void wake(fan_entry *e, chatd_msg *first)
{
    while (e->waits)
        answer(e->waits, first ? CHATD_OK : CHATD_ERR_UNAVAILABLE, first);
}

/* Is the remembered first copy of e too old to stand for msg? */
static bool expired(idem_fanout *f, const fan_entry *e, const chatd_msg *msg)
{
    return msg_time_ms(msg) - e->first_ms > f->core->cfg->idempotency_window * 1000;
}

/* msg is the first copy of e's key from now on. */
static void set_first(fan_entry *e, chatd_msg *msg)
{
    msg_unref(e->first);
    e->first = msg_ref(msg);
    e->first_id = msg_id(msg);
    e->first_ms = msg_time_ms(msg);
}

bool idem_admit(core *c, chatd_msg *msg)
{
    idem_fanout *f = c->idem_fanout;
    const char *key = msg_idem_key(msg);
    if (!f || !key || msg_kind(msg) != CHATD_MSG_CHAT) return true;
    fan_entry *e = lookup(f, msg_writer_id(msg), key, 1);
    if (!e) return true; /* out of memory: deliver, as without this memory */
    if (e->first_id && e->first_id != msg_id(msg) && !expired(f, e, msg)) {
        metrics_counter_add(c->metrics, "chatd_idempotent_copies_dropped_total", "core", 1);
        return false; /* a second copy of the key: the store keeps the first */
    }
    if (!e->first_id) {
        set_first(e, msg);
        ring_add(f, e);
    } else if (e->first_id != msg_id(msg) || !e->first) {
        set_first(e, msg); /* the window passed: a new first; or the seeded copy itself */
    }
    wake(e, e->first);
    return true;
}

/* The wait is over and nothing confirmed which copy of the key is kept:
 * naming this one could name a copy the store drops, so the publisher gets
 * an error and retries with the same key (its retry finds the kept message
 * in the store, or waits again). e is forgotten when nothing else holds it. */
static void settle_give_up(settle_wait *w)
{
    fan_entry *e = w->e;
    idem_fanout *f = w->f;
    log_msg(CHATD_LOG_WARN, "core",
            "member %" PRId64 "'s SEND with idempotency key \"%s\" is durable, but neither the "
            "fan-out nor the store showed which copy of the key is kept within idem_fanout_wait "
            "(%" PRId64 " ms; is the store, or the node persisting the room's partition, down?): "
            "answered with an error, the client sends it again with the same key",
            e->who.member_id, e->who.key, f->core->cfg->idem_fanout_wait);
    metrics_counter_add(f->core->metrics, "chatd_idempotent_unconfirmed_total", "core", 1);
    answer(w, CHATD_ERR_UNAVAILABLE, NULL);
    if (!e->first_id && !e->waits) forget(f, e);
}

static void settle_timeout(evutil_socket_t fd, short what, void *arg);

/* Wait another step for the fan-out, then ask the store again. */
static void settle_rearm(settle_wait *w)
{
    int64_t step = w->f->core->cfg->idem_fanout_wait / IDEM_SETTLE_ASKS;
    if (step < 1) step = 1;
    struct timeval tv = {.tv_sec = step / 1000, .tv_usec = (step % 1000) * 1000};
    if (!w->timer) w->timer = evtimer_new(w->f->core->base, settle_timeout, w);
    if (!w->timer || evtimer_add(w->timer, &tv) != 0) settle_give_up(w);
}

/* The store's idempotency record of the key: its message is the one kept. */
static void settle_looked(void *arg, chatd_status st, chatd_msg *orig)
{
    settle_wait *w = arg;
    w->asking = false;
    if (!w->e) { /* answered by the fan-out meanwhile */
        free(w);
        return;
    }
    if (st == CHATD_OK && orig) {
        fan_entry *e = w->e;
        idem_fanout *f = w->f;
        answer(w, CHATD_OK, orig);
        if (!e->first_id && !e->waits) forget(f, e);
    } else if (w->asks >= IDEM_SETTLE_ASKS) {
        settle_give_up(w);
    } else {
        settle_rearm(w);
    }
}

/* Ask the store which message its idempotency record names. */
static void settle_ask(settle_wait *w)
{
    w->asks++;
    w->asking = true;
    idem_lookup(w->f->core, w->e->who.member_id, w->e->who.key, clock_wall_ms(), settle_looked, w);
}

/* No first copy in the fan-out yet: ask the store. */
static void settle_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    settle_ask(arg);
}

void idem_settle(core *c, chatd_msg *msg, idem_settle_cb cb, void *arg)
{
    idem_fanout *f = c->idem_fanout;
    const char *key = msg_idem_key(msg);
    if (!f || !key || c->cfg->idem_fanout_wait == 0) {
        cb(arg, CHATD_OK, NULL);
        return;
    }
    fan_entry *e = lookup(f, msg_writer_id(msg), key, 1);
    bool known = e && e->first_id && !expired(f, e, msg);
    if (known && e->first) {
        cb(arg, CHATD_OK, e->first);
        return;
    }
    settle_wait *w = e ? calloc(1, sizeof(*w)) : NULL;
    if (!w) {
        if (e && !e->first_id && !e->waits) forget(f, e);
        cb(arg, CHATD_OK, NULL); /* out of memory: answer as without this memory */
        return;
    }
    *w = (settle_wait){.next = e->waits, .f = f, .e = e, .cb = cb, .arg = arg};
    e->waits = w;
    if (known)
        settle_ask(w); /* seeded: the store's record names the first copy, its message */
    else
        settle_rearm(w);
}

/* ------------------------------------------------------------ the seed */

typedef struct seed {
    idem_fanout *f; /* NULL once the wait gave up: a late answer only frees this */
    size_t n;       /* keys remembered */
    chatd_status st;
    bool done;
} seed;

static void seed_record(void *arg, chatd_status st, int64_t member_id, const char *key,
                        uint64_t msg_id, int64_t time_ms)
{
    seed *s = arg;
    if (!key) { /* the last call */
        if (!s->f) {
            free(s);
            return;
        }
        s->st = st;
        s->done = true;
        return;
    }
    if (!s->f || st != CHATD_OK || msg_id == 0 || strlen(key) > IDEM_KEY_MAX) return;
    fan_entry *e = lookup(s->f, member_id, key, 1);
    if (!e || e->first_id) return; /* out of memory, or given twice */
    e->first_id = msg_id;
    e->first_ms = time_ms;
    ring_add(s->f, e);
    s->n++;
}

/* A blocking wait, but before the queue and the transports start: nothing
 * is fanned out and no client is served until the seed is in. */
void idem_fanout_seed(core *c)
{
    idem_fanout *f = c->idem_fanout;
    const chatd_store_ops *ops = core_store(c);
    int64_t window_ms = c->cfg->idempotency_window * 1000;
    if (!f || !ops || !CHATD_HAS(chatd_store_ops, ops, idem_recent) || !ops->idem_recent) {
        log_msg(CHATD_LOG_INFO, c->store ? c->store->name : NULL,
                "fan-out memory of idempotency keys: not seeded, this store cannot list its "
                "keys (ABI 1.7 idem_recent); a second copy of a key racing this node's start "
                "may be delivered here");
        return;
    }
    seed *s = calloc(1, sizeof(*s));
    if (!s) {
        log_msg(CHATD_LOG_WARN, c->store->name,
                "fan-out memory of idempotency keys: not seeded (out of memory)");
        return;
    }
    s->f = f;
    ops->idem_recent(c->store->inst, clock_wall_ms() - window_ms, (unsigned)f->cap, seed_record, s);
    int r = core_wait(c, &s->done, c->cfg->node_lease);
    if (r == 1 && s->st == CHATD_OK) {
        log_msg(CHATD_LOG_INFO, c->store->name,
                "fan-out memory of idempotency keys: seeded from the store, %zu keys (the "
                "newest of the last %lld s, at most idem_fanout_memory %zu)",
                s->n, (long long)c->cfg->idempotency_window, f->cap);
    } else {
        log_msg(CHATD_LOG_WARN, c->store->name,
                "fan-out memory of idempotency keys: reading the store's keys %s (%zu "
                "remembered): a second copy of a key racing this node's start may be delivered "
                "here; check the store",
                r == 1   ? api_status_str(s->st)
                : r == 0 ? "got no answer within node_lease"
                         : "failed: out of memory",
                s->n);
    }
    if (s->done)
        free(s);
    else
        s->f = NULL; /* its last call frees it */
}
