/*
 * core/completion.c - chatd_completion: the pending result of a hook that
 * returned CHATD_ASYNC, finished exactly once with chatd_api.complete().
 *
 * A finished completion is not freed at once but kept in a small quarantine
 * ring, so that a plugin completing the same handle twice is detected and
 * logged instead of corrupting memory. A completion finished from a thread
 * other than the loop's is moved to the loop with post() (and logged, since
 * the ABI requires the loop thread). Out of memory: completion_new returns
 * NULL and the caller fails its request with CHATD_ERR_NOMEM (core.h).
 */
#include "config.h"

#include "core.h"

#include <stdlib.h>
#include <string.h>

#define COMPLETION_LIVE 0x6c697665u
#define COMPLETION_DONE 0x646f6e65u
#define QUARANTINE 1024

struct chatd_completion {
    uint32_t magic;
    bool abandoned;
    chatd_completion *prev, *next; /* in the abandoned list while abandoned */
    core *core;
    chatd_ctx *owner;
    completion_fn fn;
    void *arg;
};

typedef struct completions {
    chatd_completion *ring[QUARANTINE];
    size_t next;
    chatd_completion *abandoned; /* given up on, never completed (yet) */
} completions;

/* The quarantine, made with the first completion (so it exists for every
 * completion that does). */
static completions *state(core *c)
{
    if (!c->completions) c->completions = calloc(1, sizeof(completions));
    return c->completions;
}

chatd_completion *completion_new(core *c, chatd_ctx *owner, completion_fn fn, void *arg)
{
    chatd_completion *comp = state(c) ? calloc(1, sizeof(*comp)) : NULL;
    if (!comp) {
        log_msg(CHATD_LOG_ERROR, owner ? owner->name : NULL,
                "out of memory for a completion; the request fails with nomem");
        return NULL;
    }
    comp->magic = COMPLETION_LIVE;
    comp->core = c;
    comp->owner = owner;
    comp->fn = fn;
    comp->arg = arg;
    return comp;
}

static void retire(chatd_completion *comp)
{
    comp->magic = COMPLETION_DONE;
    completions *q = comp->core->completions;
    if (comp->abandoned) { /* completed after all: no longer the list's */
        if (comp->prev)
            comp->prev->next = comp->next;
        else
            q->abandoned = comp->next;
        if (comp->next) comp->next->prev = comp->prev;
        comp->prev = comp->next = NULL;
    }
    free(q->ring[q->next]);
    q->ring[q->next] = comp;
    q->next = (q->next + 1) % QUARANTINE;
}

typedef struct late_completion {
    chatd_completion *comp;
    chatd_status status;
    char *reason;
} late_completion;

static void complete_on_loop(void *arg)
{
    late_completion *l = arg;
    completion_complete(l->comp, l->status, l->reason);
    free(l->reason);
    free(l);
}

void completion_complete(chatd_completion *comp, chatd_status status, const char *reason)
{
    if (!comp) {
        log_msg(CHATD_LOG_ERROR, NULL, "complete() called with a NULL completion; ignored");
        return;
    }
    if (comp->magic != COMPLETION_LIVE) {
        log_msg(CHATD_LOG_ERROR, comp->owner ? comp->owner->name : NULL,
                "a completion was finished twice (plugin bug); the second call is ignored");
        return;
    }
    if (!core_on_loop(comp->core)) {
        log_msg(CHATD_LOG_WARN, comp->owner ? comp->owner->name : NULL,
                "complete() called off the loop thread (plugin bug); moving it to the loop");
        late_completion *l = calloc(1, sizeof(*l));
        if (l) {
            l->comp = comp;
            l->status = status;
            l->reason = reason ? strdup(reason) : NULL;
            if (post_add(&comp->core->post, complete_on_loop, l) == CHATD_OK) return;
            free(l->reason);
            free(l);
        }
        return; /* the loop is gone: nobody waits any more */
    }
    if (status == CHATD_ASYNC) {
        log_msg(CHATD_LOG_ERROR, comp->owner ? comp->owner->name : NULL,
                "completed with CHATD_ASYNC (plugin bug); treated as an internal error");
        status = CHATD_ERR_INTERNAL;
    }
    /* mark before calling so that a re-entrant second call is caught */
    comp->magic = COMPLETION_DONE;
    if (!comp->abandoned && comp->fn) comp->fn(comp->arg, status, reason);
    retire(comp);
}

void completion_discard(chatd_completion *comp)
{
    if (comp) retire(comp);
}

void completion_abandon(chatd_completion *comp)
{
    if (!comp || comp->abandoned || comp->magic != COMPLETION_LIVE) return;
    completions *q = comp->core->completions;
    comp->abandoned = true;
    comp->prev = NULL;
    comp->next = q->abandoned;
    if (q->abandoned) q->abandoned->prev = comp;
    q->abandoned = comp;
}

void completion_cleanup(core *c)
{
    completions *q = c->completions;
    if (!q) return;
    for (size_t i = 0; i < QUARANTINE; i++)
        free(q->ring[i]);
    /* plugins are destroyed by now: nobody can complete these any more */
    while (q->abandoned) {
        chatd_completion *next = q->abandoned->next;
        free(q->abandoned);
        q->abandoned = next;
    }
    free(q);
    c->completions = NULL;
}
