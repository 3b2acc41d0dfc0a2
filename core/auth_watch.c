/*
 * core/auth_watch.c - login sessions end everywhere: about every second the
 * cached tokens (those authenticate() resolved on this node, which includes
 * every open STOMP session's) are re-checked with the store in one batch of
 * asynchronous session_get calls. A session that is gone (logged out on any
 * node) or expired is forgotten and every transport is told through its
 * session_ended hook. A second timer deletes expired sessions from the store
 * (session_purge) every session_purge_interval seconds.
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#define WATCH_TICK_MS 1000
#define WATCH_BATCH 4096 /* tokens re-checked per tick at most */

struct auth_watch {
    core *core;
    struct event *tick, *purge;
    size_t inflight;
    bool purging;
    char (*due)[HASH_HEX + 1];
};

typedef struct watch_req {
    core *core;
    char hash[HASH_HEX + 1];
} watch_req;

static void tell_transports(void *arg, chatd_ctx *t)
{
    const char *hash = arg;
    if (t->started && t->plugin->ops.transport.session_ended)
        t->plugin->ops.transport.session_ended(t->inst, hash);
}

static void watch_checked(void *arg, chatd_status st, const chatd_session *s)
{
    watch_req *r = arg;
    auth_watch *w = r->core->auth_watch;
    if (!w) { /* stopping */
        free(r);
        return;
    }
    w->inflight--;
    if (st == CHATD_OK && s && s->expires_ms > clock_wall_ms()) {
        auth_token_confirmed(r->core->auth, r->hash, s->expires_ms);
    } else if (st == CHATD_OK || st == CHATD_ERR_NOTFOUND) {
        auth_token_drop(r->core->auth, r->hash);
        metrics_counter_add(r->core->metrics, "chatd_sessions_ended_total", "core", 1);
        core_each(r->core, CHATD_KIND_TRANSPORT, tell_transports, r->hash);
    } /* else the store failed: asked again next tick */
    free(r);
}

static void watch_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    auth_watch *w = arg;
    core *c = w->core;
    const chatd_store_ops *so = core_store(c);
    if (w->inflight || c->state != CORE_RUNNING || !so || !so->session_get || !c->store->started)
        return;
    size_t n = auth_tokens_due(c->auth, clock_wall_ms() - WATCH_TICK_MS / 2, w->due, WATCH_BATCH);
    for (size_t i = 0; i < n; i++) {
        watch_req *r = malloc(sizeof(*r));
        if (!r) {
            log_msg(CHATD_LOG_WARN, NULL, "out of memory re-checking sessions: next tick retries");
            return;
        }
        r->core = c;
        memcpy(r->hash, w->due[i], sizeof(r->hash));
        w->inflight++;
        so->session_get(c->store->inst, r->hash, watch_checked, r);
    }
}

static void purged(void *arg, chatd_status st, uint64_t n)
{
    core *c = arg;
    auth_watch *w = c->auth_watch;
    if (!w) return;
    w->purging = false;
    if (st != CHATD_OK) {
        log_msg(CHATD_LOG_WARN, NULL,
                "deleting expired sessions failed: %s (retried in session_purge_interval "
                "seconds; check the store)",
                api_status_str(st));
        return;
    }
    if (n) log_msg(CHATD_LOG_DEBUG, NULL, "deleted %llu expired sessions", (unsigned long long)n);
    metrics_counter_add(c->metrics, "chatd_sessions_purged_total", "core", n);
}

static void purge_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    auth_watch *w = arg;
    core *c = w->core;
    const chatd_store_ops *so = core_store(c);
    if (w->purging || c->state != CORE_RUNNING || !so || !so->session_purge || !c->store->started)
        return;
    w->purging = true;
    so->session_purge(c->store->inst, clock_wall_ms(), purged, c);
}

auth_watch *auth_watch_new(core *c)
{
    auth_watch *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->core = c;
    w->due = calloc(WATCH_BATCH, sizeof(*w->due));
    w->tick = event_new(c->base, -1, EV_PERSIST, watch_tick, w);
    w->purge = event_new(c->base, -1, EV_PERSIST, purge_tick, w);
    struct timeval tick = {.tv_sec = WATCH_TICK_MS / 1000,
                           .tv_usec = (WATCH_TICK_MS % 1000) * 1000};
    struct timeval every = {.tv_sec = (time_t)c->cfg->session_purge_interval};
    if (!w->due || !w->tick || !w->purge || event_add(w->tick, &tick) != 0 ||
        event_add(w->purge, &every) != 0) {
        auth_watch_free(w);
        return NULL;
    }
    metrics_counter_add(c->metrics, "chatd_sessions_ended_total", "core", 0);
    metrics_counter_add(c->metrics, "chatd_sessions_purged_total", "core", 0);
    return w;
}

void auth_watch_free(auth_watch *w)
{
    if (!w) return;
    if (w->tick) event_free(w->tick);
    if (w->purge) event_free(w->purge);
    free(w->due);
    free(w);
}
