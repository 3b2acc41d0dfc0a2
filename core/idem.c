/*
 * core/idem.c - idempotent publish: a SEND that carries an idempotency key
 * (chatd_msg_fields.idem_key) is published at most once per member and key
 * within `idempotency_window` seconds.
 *
 * Two memories answer "was this key used?":
 *   - in flight (here, this node): the first publish of a (member, key) is
 *     registered until its outcome is known; a second one with the same pair
 *     waits for it and gets the same outcome (the original message, or the
 *     same error), so two retries racing on one node publish once;
 *   - durable (the store, chatd_store_ops.idem_get): the store keeps
 *     (writer, key) -> message id in the transaction that stores the message,
 *     so a retry after a restart, or on another node, finds the original.
 * A store without idem_get (an ABI 1.0 store) leaves only the first memory;
 * that is logged once.
 *
 * Loop thread only. The pipeline calls idem_join / idem_begin at publish,
 * idem_lookup after the room check and idem_end when the publish finished.
 */
#include "config.h"

#include "core.h"

#include <inttypes.h>
#include <search.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct idem_wait {
    struct idem_wait *next;
    chatd_publish_cb cb;
    void *arg;
} idem_wait;

struct idem_entry {
    idem_who who;
    idem_wait *head, *tail; /* later publishes with the same key, in order */
};

struct idem {
    core *core;
    void *tree; /* tsearch tree of idem_entry by (member_id, key) */
    bool no_store_logged;
};

int idem_who_cmp(const void *a, const void *b)
{
    const idem_who *x = a, *y = b;
    if (x->member_id != y->member_id) return x->member_id < y->member_id ? -1 : 1;
    return strcmp(x->key, y->key);
}

idem *idem_new(core *c)
{
    idem *d = calloc(1, sizeof(*d));
    if (d) d->core = c;
    return d;
}

static void entry_free(void *p)
{
    idem_entry *e = p;
    while (e->head) {
        idem_wait *w = e->head;
        e->head = w->next;
        free(w); /* its transport is gone: nobody left to answer */
    }
    free(e);
}

void idem_free(idem *d)
{
    if (!d) return;
    tdestroy(d->tree, entry_free);
    free(d);
}

static idem_entry *find(idem *d, int64_t member_id, const char *key)
{
    idem_entry probe = {.who.member_id = member_id};
    snprintf(probe.who.key, sizeof(probe.who.key), "%s", key);
    idem_entry **found = tfind(&probe, &d->tree, idem_who_cmp);
    return found ? *found : NULL;
}

int idem_join(core *c, int64_t member_id, const char *key, chatd_publish_cb cb, void *arg)
{
    idem_entry *e = find(c->idem, member_id, key);
    if (!e) return 0;
    idem_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        cb(arg, CHATD_ERR_NOMEM, "out of memory", NULL);
        return 1;
    }
    w->cb = cb;
    w->arg = arg;
    if (e->tail)
        e->tail->next = w;
    else
        e->head = w;
    e->tail = w;
    metrics_counter_add(c->metrics, "chatd_idempotent_waits_total", "core", 1);
    return 1;
}

idem_entry *idem_begin(core *c, int64_t member_id, const char *key)
{
    idem_entry *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->who.member_id = member_id;
    snprintf(e->who.key, sizeof(e->who.key), "%s", key);
    if (!tsearch(e, &c->idem->tree, idem_who_cmp)) {
        free(e);
        return NULL;
    }
    return e;
}

void idem_end(core *c, idem_entry *e, chatd_status st, const char *reason, chatd_msg *msg)
{
    if (!e) return;
    tdelete(e, &c->idem->tree, idem_who_cmp);
    /* a waiter's publish was the same message: for it the original exists */
    chatd_status wst = st == CHATD_OK && msg ? CHATD_ERR_EXISTS : st;
    const char *why = wst == CHATD_ERR_EXISTS ? IDEM_REPLAY_REASON : reason;
    while (e->head) {
        idem_wait *w = e->head;
        e->head = w->next;
        if (wst == CHATD_ERR_EXISTS)
            metrics_counter_add(c->metrics, "chatd_idempotent_replays_total", "core", 1);
        w->cb(w->arg, wst, why ? why : api_status_str(wst), wst == CHATD_ERR_EXISTS ? msg : NULL);
        free(w);
    }
    free(e);
}

typedef struct lookup_req {
    core *core;
    idem_lookup_cb cb;
    void *arg;
} lookup_req;

static void lookup_done(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n, uint64_t next)
{
    (void)next;
    lookup_req *r = arg;
    if (st == CHATD_OK && n >= 1 && msgs[0]) {
        r->cb(r->arg, CHATD_OK, msgs[0]);
    } else if (st == CHATD_OK || st == CHATD_ERR_NOTFOUND) {
        r->cb(r->arg, CHATD_ERR_NOTFOUND, NULL);
    } else {
        log_msg(CHATD_LOG_WARN, r->core->store->name,
                "idempotency key lookup failed: %s (the sender gets an error and may retry)",
                api_status_str(st));
        r->cb(r->arg, st, NULL);
    }
    free(r);
}

void idem_lookup(core *c, int64_t member_id, const char *key, int64_t now_ms, idem_lookup_cb cb,
                 void *arg)
{
    chatd_ctx *s = c->store;
    const chatd_store_ops *so = s ? &s->plugin->ops.store : NULL;
    if (!s || !s->started) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL);
        return;
    }
    if (!so->idem_get) {
        if (!c->idem->no_store_logged)
            log_msg(CHATD_LOG_WARN, s->name,
                    "this store keeps no idempotency keys (it predates ABI 1.1): a SEND retried "
                    "after its first RECEIPT is published again; use a current store plugin");
        c->idem->no_store_logged = true;
        cb(arg, CHATD_ERR_NOTFOUND, NULL);
        return;
    }
    lookup_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL);
        return;
    }
    *r = (lookup_req){.core = c, .cb = cb, .arg = arg};
    so->idem_get(s->inst, member_id, key, now_ms - c->cfg->idempotency_window * 1000, lookup_done,
                 r);
}
