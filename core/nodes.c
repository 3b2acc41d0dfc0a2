/*
 * core/nodes.c - the node's lease on its node_id (chatd_store_ops
 * node_claim): claimed at start before the queue and the transports start,
 * renewed every node_lease / 3 ms, each renewal storing how far ids may have
 * gone (the wall time of the last id or now, whichever is later, plus one
 * lease), so ids restart above every id this node_id ever made, even with
 * the clock set back. A restarted node takes over the lease of its own
 * dead process (same host, pid gone). A lease lost at run time (another holder took it, or
 * no renewal succeeded for a whole lease) stops the daemon with exit code 1.
 * A graceful stop releases the lease once no more ids can be made (after the
 * queue stopped, before the store does): a claim of 1 ms keeping the
 * high-water mark, so the node_id is free again at once; a killed node's
 * lease runs out instead (or is taken over by its restart on the same host).
 */
#include "config.h"

#include "core.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

struct lease {
    core *c;
    char holder[160];
    uint32_t node_id;
    int64_t lease_ms;
    int64_t last_ok_ms; /* monotonic time of the last successful claim */
    bool answered, busy, failing;
    chatd_status st;
    int64_t high_water_ms;
    char other[160];
    struct event *timer;
    struct event *retry; /* a failed renewal is tried again soon, not a third later */
    /* nodes_release: called back once the release is answered or gave up */
    void (*release_done)(void *arg);
    void *release_arg;
    bool release_wanted, release_sent, release_over;
    struct event *release_timer;
};

static void lease_cb(void *arg, chatd_status st, uint32_t node_id, int64_t high_water_ms,
                     const char *holder)
{
    lease *L = arg;
    L->answered = true;
    L->busy = false;
    L->st = st;
    if (st == CHATD_OK) {
        L->node_id = node_id;
        L->high_water_ms = high_water_ms;
        L->last_ok_ms = (int64_t)clock_mono_ms();
    }
    snprintf(L->other, sizeof(L->other), "%s", holder ? holder : "");
}

static void lease_call(lease *L, uint32_t node_id, int64_t high_water_ms)
{
    core *c = L->c;
    const chatd_store_ops *ops = core_store(c);
    L->answered = false;
    L->busy = true;
    L->st = CHATD_ERR_INTERNAL;
    ops->node_claim(c->store->inst, node_id, L->holder, L->lease_ms, high_water_ms, lease_cb, L);
}

/* How far this node's ids may go before the next renewal. */
static int64_t lease_reserve(const lease *L)
{
    int64_t now = clock_wall_ms(), last = ids_last_ms(&L->c->ids);
    return (last > now ? last : now) + L->lease_ms;
}

static void lease_lost(lease *L, const char *why)
{
    core *c = L->c;
    log_msg(CHATD_LOG_ERROR, NULL,
            "node %u: lease lost (%s); stopping so that two nodes never make ids with one "
            "node_id; check the other nodes' chatd.node_id and the store, then restart",
            (unsigned)L->node_id, why);
    c->exit_code = 1;
    core_stop(c);
}

static void lease_release_send(lease *L);

static void lease_renewed(void *arg, chatd_status st, uint32_t node_id, int64_t high_water_ms,
                          const char *holder)
{
    lease *L = arg;
    lease_cb(L, st, node_id, high_water_ms, holder);
    if (L->release_wanted) {
        lease_release_send(L); /* a renewal was in flight when the stop came */
        return;
    }
    if (L->c->state != CORE_RUNNING) return;
    if (st == CHATD_ERR_EXISTS) {
        char why[220];
        snprintf(why, sizeof(why), "held by %s", L->other[0] ? L->other : "another node");
        lease_lost(L, why);
    } else if (st != CHATD_OK) {
        int64_t soon = L->lease_ms / 20 < 200 ? L->lease_ms / 20 : 200;
        struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)soon * 1000};
        if (!L->failing)
            log_msg(CHATD_LOG_WARN, NULL,
                    "node %u: renewing the lease failed: %s; retrying every %lld ms",
                    (unsigned)L->node_id, api_status_str(st), (long long)soon);
        L->failing = true;
        if ((int64_t)clock_mono_ms() - L->last_ok_ms > L->lease_ms)
            lease_lost(L, "no renewal succeeded for a whole node_lease");
        else if (L->retry)
            evtimer_add(L->retry, &tv);
    } else if (L->failing) {
        L->failing = false;
        log_msg(CHATD_LOG_INFO, NULL, "node %u: lease renewed again", (unsigned)L->node_id);
    }
}

static void lease_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lease *L = arg;
    if (L->busy || L->c->state != CORE_RUNNING) return;
    const chatd_store_ops *ops = core_store(L->c);
    L->busy = true;
    ops->node_claim(L->c->store->inst, L->node_id, L->holder, L->lease_ms, lease_reserve(L),
                    lease_renewed, L);
}

/* A holder on this host whose process is gone (killed or stopped; its
 * lease not yet expired): this node may take its lease over. */
static bool lease_stale(const lease *L)
{
    char host[64], mine[64];
    long pid;
    long long started;
    if (sscanf(L->other, "%63s pid %ld started %lld", host, &pid, &started) != 3) return false;
    if (sscanf(L->holder, "%63s", mine) != 1 || strcmp(host, mine) != 0) return false;
    return pid > 0 && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Run the loop until the pending claim is answered, for at most a lease
 * (then CHATD_ERR_UNAVAILABLE; a late answer is ignored). */
static void lease_wait(lease *L)
{
    int r = core_wait(L->c, &L->answered, L->lease_ms);
    if (r < 0)
        L->st = CHATD_ERR_NOMEM;
    else if (r == 0)
        L->st = CHATD_ERR_UNAVAILABLE;
}

int nodes_start(core *c)
{
    const chatd_store_ops *ops = core_store(c);
    bool have = ops &&
                ops->size >= offsetof(chatd_store_ops, node_claim) + sizeof(ops->node_claim) &&
                ops->node_claim;
    if (!have) {
        if (c->cfg->node_id == CFG_NODE_AUTO) {
            log_msg(CHATD_LOG_ERROR, c->store->name,
                    "node_id = auto needs a store with node leases (ABI 1.3); set chatd.node_id "
                    "to a number unique among the nodes");
            return -1;
        }
        log_msg(CHATD_LOG_WARN, c->store->name,
                "this store keeps no node leases: node_id %lld is used unchecked (give each "
                "node its own chatd.node_id)",
                (long long)c->cfg->node_id);
        return 0;
    }
    lease *L = calloc(1, sizeof(*L));
    if (!L) {
        log_msg(CHATD_LOG_ERROR, NULL, "out of memory for the node lease");
        return -1;
    }
    c->lease = L;
    L->c = c;
    L->lease_ms = c->cfg->node_lease;
    char host[64] = "";
    if (gethostname(host, sizeof(host) - 1) != 0) snprintf(host, sizeof(host), "unknown");
    snprintf(L->holder, sizeof(L->holder), "%s pid %ld started %lld", host, (long)getpid(),
             (long long)clock_wall_ms());
    uint32_t want = c->cfg->node_id == CFG_NODE_AUTO ? CHATD_NODE_AUTO : (uint32_t)c->cfg->node_id;
    lease_call(L, want, 0);
    lease_wait(L);
    if (L->st == CHATD_ERR_EXISTS && want != CHATD_NODE_AUTO && lease_stale(L)) {
        log_msg(CHATD_LOG_INFO, NULL,
                "node_id %u: taking over the lease of \"%s\", a process of this host that is "
                "gone",
                want, L->other);
        snprintf(L->holder, sizeof(L->holder), "%s", L->other);
        lease_call(L, want, 0);
        lease_wait(L);
    }
    if (L->st == CHATD_ERR_EXISTS && want == CHATD_NODE_AUTO) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "node_id = auto: every node id 1..1023 is held by a live node; stop unused "
                "nodes or wait node_lease ms for their leases to expire");
        return -1;
    }
    if (L->st == CHATD_ERR_EXISTS) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "node_id %u is held by another live node (%s) on this store: give this node "
                "another chatd.node_id (or node_id = auto), or stop the other one and wait "
                "its node_lease",
                want, L->other[0] ? L->other : "unknown");
        return -1;
    }
    if (L->st != CHATD_OK) {
        log_msg(CHATD_LOG_ERROR, c->store->name, "claiming node_id failed: %s (see above)",
                api_status_str(L->st));
        return -1;
    }
    int64_t floor = L->high_water_ms;
    ids_init(&c->ids, L->node_id);
    ids_floor(&c->ids, floor);
    c->cfg->node_id = L->node_id;
    /* store the reservation before the first id is made */
    lease_call(L, L->node_id, lease_reserve(L));
    lease_wait(L);
    if (L->st != CHATD_OK) {
        log_msg(CHATD_LOG_ERROR, c->store->name, "renewing the node lease failed: %s",
                api_status_str(L->st));
        return -1;
    }
    L->timer = event_new(c->base, -1, EV_PERSIST, lease_tick, L);
    L->retry = evtimer_new(c->base, lease_tick, L);
    int64_t every = L->lease_ms / 3;
    struct timeval tv = {.tv_sec = (time_t)(every / 1000),
                         .tv_usec = (suseconds_t)(every % 1000) * 1000};
    if (!L->timer || !L->retry || evtimer_add(L->timer, &tv) != 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot start the node lease timer");
        return -1;
    }
    log_msg(CHATD_LOG_INFO, NULL, "node %u: lease held as \"%s\", ids above %lld", L->node_id,
            L->holder, (long long)floor);
    return 0;
}

static void lease_release_end(lease *L)
{
    void (*done)(void *) = L->release_done;
    L->release_done = NULL;
    L->release_over = true;
    if (L->release_timer) evtimer_del(L->release_timer);
    if (done) done(L->release_arg);
}

static void lease_released(void *arg, chatd_status st, uint32_t node_id, int64_t high_water_ms,
                           const char *holder)
{
    (void)node_id;
    (void)high_water_ms;
    lease *L = arg;
    if (st == CHATD_OK)
        log_msg(CHATD_LOG_INFO, NULL, "node %u: lease released", (unsigned)L->node_id);
    else
        log_msg(CHATD_LOG_WARN, NULL,
                "node %u: releasing the lease failed: %s%s%s; a restart with this node_id waits "
                "up to node_lease ms",
                (unsigned)L->node_id, api_status_str(st), holder ? ", held by " : "",
                holder ? holder : "");
    lease_release_end(L);
}

static void lease_release_late(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    lease *L = arg;
    log_msg(CHATD_LOG_WARN, NULL,
            "node %u: the store did not answer the lease release within %lld ms; stopping "
            "without it (a restart with this node_id waits up to node_lease ms)",
            (unsigned)L->node_id, (long long)L->lease_ms);
    lease_release_end(L);
}

/* The last claim: 1 ms from now, the high-water mark where the ids ended. */
static void lease_release_send(lease *L)
{
    const chatd_store_ops *ops = core_store(L->c);
    int64_t now = clock_wall_ms(), last = ids_last_ms(&L->c->ids);
    L->release_wanted = false;
    L->release_sent = true;
    L->busy = true;
    log_msg(CHATD_LOG_DEBUG, NULL, "node %u: releasing the lease", (unsigned)L->node_id);
    ops->node_claim(L->c->store->inst, L->node_id, L->holder, 1, last > now ? last : now,
                    lease_released, L);
}

int nodes_release(core *c, void (*done)(void *arg), void *arg)
{
    lease *L = c->lease;
    if (!L || !L->timer || L->release_sent || L->release_wanted || !core_store(c)) return 0;
    L->release_timer = evtimer_new(c->base, lease_release_late, L);
    struct timeval tv = {.tv_sec = (time_t)(L->lease_ms / 1000),
                         .tv_usec = (suseconds_t)(L->lease_ms % 1000) * 1000};
    if (!L->release_timer || evtimer_add(L->release_timer, &tv) != 0) {
        log_msg(CHATD_LOG_WARN, NULL,
                "node %u: no timer for the lease release (out of memory?); not released",
                (unsigned)L->node_id);
        return 0;
    }
    if (L->busy)
        L->release_wanted = true; /* lease_renewed sends it */
    else
        lease_release_send(L);
    if (L->release_over) return 0; /* answered at once: nothing to wait for */
    L->release_done = done;
    L->release_arg = arg;
    return 1;
}

void nodes_release_cancel(core *c)
{
    if (c->lease) c->lease->release_done = NULL;
}

void nodes_stop(core *c)
{
    if (c->lease && c->lease->timer) evtimer_del(c->lease->timer);
    if (c->lease && c->lease->retry) evtimer_del(c->lease->retry);
}

void nodes_free(core *c)
{
    lease *L = c->lease;
    if (!L) return;
    if (L->timer) event_free(L->timer);
    if (L->release_timer) event_free(L->release_timer);
    if (L->retry) event_free(L->retry);
    free(L);
    c->lease = NULL;
}
