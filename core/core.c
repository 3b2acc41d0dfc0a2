/*
 * core/core.c - the daemon's lifecycle: load every configured plugin
 * instance, create and start them (store, then the node lease and the
 * fan-out's memory of keys read from it, queue, filters, transports), run
 * the event loop, handle signals (SIGINT/SIGTERM: graceful stop; SIGHUP:
 * reload hooks), stop in reverse order with a timeout per phase, destroy.
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ loading */

static chatd_ctx *ctx_new(core *c, cfg_section *s, plugin *p)
{
    chatd_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) return NULL;
    ctx->core = c;
    ctx->name = s->name;
    ctx->sec = s;
    ctx->plugin = p;
    ctx->kind = p->desc.kind;
    return ctx;
}

static int load_all(core *c)
{
    cfg *cf = c->cfg;
    int bad = 0;
    size_t nq = 0, ns = 0, nt = 0;
    c->insts = calloc(cf->n ? cf->n : 1, sizeof(*c->insts));
    if (!c->insts) return -1;
    for (size_t i = 0; i < cf->n; i++) {
        cfg_section *s = cf->sections[i];
        if (strcmp(s->name, CFG_CORE_SECTION) == 0) continue;
        cfg_entry *pe = cfg_entry_find(s, "plugin");
        char why[512];
        plugin *p = loader_open(pe->value, cf->plugin_dir, s->name, why, sizeof(why));
        if (!p) {
            cfg_error(cf, s, pe, "cannot use plugin '%s': %s", pe->value, why);
            bad = 1;
            continue;
        }
        if (cfg_check_section(cf, s, p->desc.cfg_keys) != 0) {
            loader_close(p);
            bad = 1;
            continue;
        }
        chatd_ctx *ctx = ctx_new(c, s, p);
        if (!ctx) {
            loader_close(p);
            return -1;
        }
        c->insts[c->ninst++] = ctx;
        switch (ctx->kind) {
        case CHATD_KIND_QUEUE:
            nq++;
            c->queue = ctx;
            break;
        case CHATD_KIND_STORE:
            ns++;
            c->store = ctx;
            break;
        case CHATD_KIND_TRANSPORT:
            nt++;
            break;
        case CHATD_KIND_FILTER:
            break;
        }
    }
    if (bad) return -1;
    if (nq != 1) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "%s: exactly one queue instance is needed, found %zu (e.g. [queue] plugin = "
                "queue-local)",
                cf->file, nq);
        bad = 1;
    }
    if (ns != 1) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "%s: exactly one store instance is needed, found %zu (e.g. [store] plugin = "
                "store-sqlite)",
                cf->file, ns);
        bad = 1;
    }
    if (nt < 1) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "%s: at least one transport instance is needed (e.g. [ws] plugin = transport-ws)",
                cf->file);
        bad = 1;
    }
    return bad ? -1 : 0;
}

core *core_new(cfg *cf)
{
    static bool threads_on;
    if (!threads_on) {
        if (evthread_use_pthreads() != 0) {
            log_msg(CHATD_LOG_ERROR, NULL, "libevent: cannot enable thread support");
            return NULL;
        }
        threads_on = true;
    }
    core *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->cfg = cf;
    c->loop_thread = pthread_self();
    c->self.core = c;
    c->self.name = "core";
    c->state = CORE_LOADED;
    ids_init(&c->ids, (uint64_t)cf->node_id);
    log_set_level(cf->log_level);

    c->base = event_base_new();
    if (!c->base) {
        log_msg(CHATD_LOG_ERROR, NULL, "libevent: cannot create the event loop");
        free(c);
        return NULL;
    }
    if (post_init(&c->post, c->base) != 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot set up the post queue");
        event_base_free(c->base);
        free(c);
        return NULL;
    }
    c->metrics = metrics_new();
    c->members = members_new(c);
    c->idem = idem_new(c);
    c->idem_fanout = idem_fanout_new(c);
    if (!c->metrics || !c->members || !c->idem || !c->idem_fanout || load_all(c) != 0 ||
        !(c->pipeline = pipeline_new(c))) {
        core_free(c);
        return NULL;
    }
    return c;
}

chatd_ctx *core_instance(core *c, const char *name)
{
    for (size_t i = 0; i < c->ninst; i++)
        if (strcmp(c->insts[i]->name, name) == 0) return c->insts[i];
    return NULL;
}

void core_each(core *c, chatd_plugin_kind kind, void (*fn)(void *arg, chatd_ctx *ctx), void *arg)
{
    for (size_t i = 0; i < c->ninst; i++)
        if (c->insts[i]->kind == kind) fn(arg, c->insts[i]);
}

const chatd_store_ops *core_store(const core *c)
{
    return c->store && c->store->created ? &c->store->plugin->ops.store : NULL;
}

bool core_on_loop(const core *c)
{
    return pthread_equal(pthread_self(), c->loop_thread) != 0;
}

/* ------------------------------------------------------------ starting */

static const chatd_plugin_kind start_order[] = {CHATD_KIND_STORE, CHATD_KIND_QUEUE,
                                                CHATD_KIND_FILTER, CHATD_KIND_TRANSPORT};

static int start_one(chatd_ctx *ctx)
{
    const chatd_plugin_desc *d = &ctx->plugin->desc;
    if (d->start) {
        chatd_status st = d->start(ctx->inst);
        if (st != CHATD_OK) {
            log_msg(CHATD_LOG_ERROR, ctx->name, "start failed: %s (see the lines above)",
                    api_status_str(st));
            ctx->failed = true;
            return -1;
        }
    }
    ctx->started = true;
    log_msg(CHATD_LOG_DEBUG, ctx->name, "started (%s %s)", d->name, d->version ? d->version : "");
    return 0;
}

static void wait_poll(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg; /* only wakes the loop to look at the deadline */
}

int core_wait(core *c, const bool *done, int64_t timeout_ms)
{
    struct event *poll = event_new(c->base, -1, EV_PERSIST, wait_poll, NULL);
    struct timeval tv = {.tv_sec = 0, .tv_usec = 20000};
    double end = clock_mono_ms() + (double)timeout_ms;
    if (!poll || evtimer_add(poll, &tv) != 0) {
        if (poll) event_free(poll);
        return -1;
    }
    while (!*done && clock_mono_ms() < end)
        event_base_loop(c->base, EVLOOP_ONCE);
    event_free(poll);
    return *done ? 1 : 0;
}

static int signals_install(core *c);

int core_start(core *c)
{
    c->loop_thread = pthread_self();
    /* before anything starts: a SIGTERM right after the "running" line (or
     * during start-up) must be a graceful stop, never the default action */
    if (signals_install(c) != 0) return -1;
    c->starting = true;
    c->auth = auth_new(c, (unsigned)c->cfg->auth_threads);
    if (!c->auth) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot start the password hashing threads");
        return -1;
    }
    const chatd_api *api = api_table();
    for (size_t i = 0; i < c->ninst; i++) {
        chatd_ctx *ctx = c->insts[i];
        void *inst = NULL;
        chatd_status st = ctx->plugin->desc.create(api, ctx, &inst);
        if (st != CHATD_OK) {
            log_msg(CHATD_LOG_ERROR, ctx->name, "%s: create failed: %s (see the lines above)",
                    ctx->plugin->path, api_status_str(st));
            ctx->failed = true;
            goto fail;
        }
        ctx->inst = inst;
        ctx->created = true;
    }
    c->state = CORE_RUNNING;
    for (size_t k = 0; k < sizeof(start_order) / sizeof(start_order[0]); k++) {
        for (size_t i = 0; i < c->ninst; i++)
            if (c->insts[i]->kind == start_order[k] && start_one(c->insts[i]) != 0) goto fail;
        if (start_order[k] == CHATD_KIND_STORE && nodes_start(c) != 0) goto fail;
        /* before the queue starts: its fan-out must find the stored keys */
        if (start_order[k] == CHATD_KIND_STORE) idem_fanout_seed(c);
    }
    if (!(c->auth_watch = auth_watch_new(c))) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot start the session watch timers (out of memory?)");
        goto fail;
    }
    if (metrics_lag_start(c->metrics, c->base) != 0) goto fail; /* after start-up work */
    c->starting = false;
    log_msg(CHATD_LOG_INFO, NULL, "chatd %s running: node %lld, %zu plugin instances",
            PACKAGE_VERSION, (long long)c->cfg->node_id, c->ninst);
    return 0;
fail:
    c->starting = false;
    core_stop(c);
    while (c->state != CORE_STOPPED)
        event_base_loop(c->base, EVLOOP_ONCE);
    return -1;
}

/* ------------------------------------------------------------ stopping */

typedef struct stopper stopper;

typedef struct stop_wait {
    stopper *s;
    chatd_ctx *ctx;
    chatd_completion *comp;
    bool done;
} stop_wait;

struct stopper {
    core *c;
    size_t phase;
    size_t waiting;
    stop_wait *waits; /* one per instance of the current phase */
    size_t nwaits;
    struct event *timer;
    bool released; /* nodes_release asked, before the store phase */
};

static const chatd_plugin_kind stop_order[] = {CHATD_KIND_TRANSPORT, CHATD_KIND_FILTER,
                                               CHATD_KIND_QUEUE, CHATD_KIND_STORE};
#define NPHASES (sizeof(stop_order) / sizeof(stop_order[0]))

static void stop_phase(stopper *s);

/* Out of memory while stopping (core.h): stop at once, as on a second
 * signal; core_free abandons whatever still waits. */
static void stop_now(core *c, const char *what)
{
    log_msg(CHATD_LOG_ERROR, NULL,
            "out of memory while stopping (%s): stopping now without waiting", what);
    c->exit_code = 1;
    c->state = CORE_STOPPED;
    event_base_loopbreak(c->base);
}

static void stop_next(stopper *s)
{
    evtimer_del(s->timer);
    free(s->waits);
    s->waits = NULL;
    s->nwaits = 0;
    s->waiting = 0;
    s->phase++;
    stop_phase(s);
}

static void stop_done(void *arg, chatd_status st, const char *reason)
{
    stop_wait *w = arg;
    w->done = true;
    w->ctx->started = false;
    if (st != CHATD_OK)
        log_msg(CHATD_LOG_WARN, w->ctx->name, "stopped with %s%s%s", api_status_str(st),
                reason ? ": " : "", reason ? reason : "");
    else
        log_msg(CHATD_LOG_DEBUG, w->ctx->name, "stopped");
    stopper *s = w->s;
    if (--s->waiting == 0) stop_next(s);
}

static void stop_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stopper *s = arg;
    for (size_t i = 0; i < s->nwaits; i++) {
        stop_wait *w = &s->waits[i];
        if (w->comp && !w->done) {
            log_msg(CHATD_LOG_WARN, w->ctx->name, "did not stop within %llds; going on without it",
                    (long long)s->c->cfg->stop_timeout);
            completion_abandon(w->comp);
            w->ctx->started = false;
        }
    }
    stop_next(s);
}

static void stop_finish(stopper *s)
{
    core *c = s->c;
    c->state = CORE_STOPPED;
    event_free(s->timer);
    free(s->waits);
    free(s);
    c->stopper = NULL;
    log_msg(CHATD_LOG_INFO, NULL, "stopped");
    event_base_loopexit(c->base, NULL);
}

static void stop_released(void *arg)
{
    stop_phase(arg);
}

static void stop_phase(stopper *s)
{
    core *c = s->c;
    for (; s->phase < NPHASES; s->phase++) {
        chatd_plugin_kind kind = stop_order[s->phase];
        if (kind == CHATD_KIND_FILTER && c->auth) /* transports are down: no more logins */
            auth_shutdown(c->auth);
        if (kind == CHATD_KIND_STORE && !s->released) { /* the queue is down: no more ids */
            s->released = true;
            if (nodes_release(c, stop_released, s)) return; /* stop_released continues */
        }
        s->waits = calloc(c->ninst ? c->ninst : 1, sizeof(*s->waits));
        if (!s->waits) {
            stop_now(c, "phase");
            return;
        }
        s->nwaits = 0;
        s->waiting = 0;
        /* count first, so a synchronous completion cannot end the phase early */
        for (size_t i = 0; i < c->ninst; i++) {
            chatd_ctx *ctx = c->insts[i];
            if (ctx->kind != kind || !ctx->started) continue;
            stop_wait *w = &s->waits[s->nwaits++];
            w->s = s;
            w->ctx = ctx;
            s->waiting++;
        }
        s->waiting++; /* held until every stop() has been called */
        for (size_t i = 0; i < s->nwaits; i++) {
            stop_wait *w = &s->waits[i];
            const chatd_plugin_desc *d = &w->ctx->plugin->desc;
            chatd_status st = CHATD_OK;
            if (d->stop && !(w->comp = completion_new(c, w->ctx, stop_done, w))) {
                st = CHATD_ERR_NOMEM; /* not stopped gracefully; destroyed later */
            } else if (d->stop) {
                st = d->stop(w->ctx->inst, w->comp);
                if (st == CHATD_ASYNC) continue;
                completion_discard(w->comp);
                w->comp = NULL;
            }
            if (st != CHATD_OK)
                log_msg(CHATD_LOG_WARN, w->ctx->name, "stop failed: %s", api_status_str(st));
            w->done = true;
            w->ctx->started = false;
            s->waiting--;
        }
        if (--s->waiting > 0) {
            struct timeval tv = {.tv_sec = (time_t)c->cfg->stop_timeout};
            evtimer_add(s->timer, &tv);
            return; /* stop_done or stop_timeout continues */
        }
        free(s->waits);
        s->waits = NULL;
        s->nwaits = 0;
    }
    stop_finish(s);
}

void core_stop(core *c)
{
    if (c->stopper || c->state == CORE_STOPPED) return;
    auth_watch_free(c->auth_watch); /* its answers still in flight see NULL */
    c->auth_watch = NULL;
    stopper *s = calloc(1, sizeof(*s));
    if (!s) {
        stop_now(c, "stopper");
        return;
    }
    s->c = c;
    s->timer = evtimer_new(c->base, stop_timeout, s);
    if (!s->timer) {
        free(s);
        stop_now(c, "stop timer");
        return;
    }
    c->stopper = s;
    c->state = CORE_STOPPING;
    nodes_stop(c);
    log_msg(CHATD_LOG_INFO, NULL, "stopping: transports, filters, queue, store");
    stop_phase(s);
}

/* ------------------------------------------------------------ signals */

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    core *c = arg;
    if (c->starting) { /* core_run stops once everything is started */
        log_msg(CHATD_LOG_INFO, NULL, "signal %d during start-up: graceful stop once started",
                (int)sig);
        c->stop_pending = true;
        return;
    }
    if (c->state == CORE_STOPPING) {
        log_msg(CHATD_LOG_WARN, NULL, "signal %d again: stopping now without waiting", (int)sig);
        c->exit_code = 1;
        event_base_loopbreak(c->base);
        return;
    }
    log_msg(CHATD_LOG_INFO, NULL, "signal %d: graceful stop", (int)sig);
    core_stop(c);
}

static void on_hup(evutil_socket_t sig, short what, void *arg);

/* SIGINT/SIGTERM: graceful stop; SIGHUP: reload; SIGPIPE ignored */
static int signals_install(core *c)
{
    signal(SIGPIPE, SIG_IGN);
    c->sig_int = evsignal_new(c->base, SIGINT, on_stop_signal, c);
    c->sig_term = evsignal_new(c->base, SIGTERM, on_stop_signal, c);
    c->sig_hup = evsignal_new(c->base, SIGHUP, on_hup, c);
    if (!c->sig_int || !c->sig_term || !c->sig_hup || evsignal_add(c->sig_int, NULL) != 0 ||
        evsignal_add(c->sig_term, NULL) != 0 || evsignal_add(c->sig_hup, NULL) != 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot install signal handlers (out of memory?)");
        return -1;
    }
    return 0;
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    core *c = arg;
    log_msg(CHATD_LOG_INFO, NULL, "SIGHUP: reloading plugins");
    for (size_t i = 0; i < c->ninst; i++) {
        chatd_ctx *ctx = c->insts[i];
        if (ctx->started && ctx->plugin->desc.reload) ctx->plugin->desc.reload(ctx->inst);
    }
}

int core_run(core *c)
{
    if (c->stop_pending) core_stop(c); /* SIGINT/SIGTERM came while starting */
    if (event_base_dispatch(c->base) < 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "the event loop failed");
        c->exit_code = 1;
    }
    return c->exit_code;
}

/* ------------------------------------------------------------ freeing */

void core_free(core *c)
{
    if (!c) return;
    if (c->state == CORE_RUNNING || c->state == CORE_STOPPING) {
        if (c->exit_code == 0) {
            core_stop(c);
            while (c->state != CORE_STOPPED && event_base_loop(c->base, EVLOOP_ONCE) == 0)
                ;
        }
    }
    if (c->stopper) { /* forced stop: the phase never finished */
        stopper *s = c->stopper;
        nodes_release_cancel(c); /* a release answered by the store's destroy must not resume s */
        for (size_t i = 0; i < s->nwaits; i++)
            if (s->waits[i].comp && !s->waits[i].done) completion_abandon(s->waits[i].comp);
        event_free(s->timer);
        free(s->waits);
        free(s);
        c->stopper = NULL;
    }
    if (c->auth) auth_shutdown(c->auth);
    if (c->post.ev) post_close(&c->post);
    /* destroy in stop order: transports, filters, queue, store */
    for (size_t k = 0; k < NPHASES; k++)
        for (size_t i = c->ninst; i-- > 0;)
            if (c->insts[i]->kind == stop_order[k] && c->insts[i]->created) {
                c->insts[i]->plugin->desc.destroy(c->insts[i]->inst);
                c->insts[i]->created = false;
            }
    auth_watch_free(c->auth_watch);
    c->auth_watch = NULL;
    nodes_free(c);
    auth_free(c->auth);
    if (c->sig_int) event_free(c->sig_int);
    if (c->sig_term) event_free(c->sig_term);
    if (c->sig_hup) event_free(c->sig_hup);
    post_free(&c->post);
    pipeline_free(c->pipeline);
    idem_free(c->idem);
    idem_fanout_free(c->idem_fanout);
    members_free(c->members);
    metrics_free(c->metrics);
    completion_cleanup(c);
    for (size_t i = 0; i < c->ninst; i++) {
        loader_close(c->insts[i]->plugin);
        free(c->insts[i]);
    }
    free(c->insts);
    if (c->base) event_base_free(c->base);
    free(c);
}
