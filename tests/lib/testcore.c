/*
 * tests/lib/testcore.c - the test core (see testcore.h): a `core` of the
 * daemon's library with no configuration file and no plugins of its own,
 * and the daemon's chatd_api table with the few test hooks on top.
 */
#include "config.h"

#include "testcore.h"

#include "../../core/core.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TESTCORE_METRICS_BUF 65536

static struct {
    core c;
    chatd_api api;
    long msgs_live, completions_live;
    testcore_consume_fn consume;
    testcore_dead_letter_fn dead_letter;
    testcore_log_fn log_hook;
    bool up;
} T;

static void loop_only(const char *fn)
{
    if (!core_on_loop(&T.c)) {
        fprintf(stderr, "testcore: chatd_api.%s called off the loop thread (ABI violation)\n", fn);
        abort();
    }
}

/* ------------------------------------------------------- the test hooks */

static void t_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...) CHATD_PRINTF(3, 4);
static void t_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    testcore_log_fn hook = __atomic_load_n(&T.log_hook, __ATOMIC_ACQUIRE);
    if (hook) hook(ctx, level, line);
    log_msg(level, ctx ? ctx->name : NULL, "%s", line);
}

static void t_complete(chatd_completion *c, chatd_status status, const char *reason)
{
    loop_only("complete");
    T.completions_live--;
    completion_complete(c, status, reason);
}

/* msg_new and msg_from_json: any thread (plugin.h), so the count is atomic */
static chatd_msg *t_msg_new(chatd_ctx *ctx, const chatd_msg_fields *f)
{
    chatd_msg *m = api_table()->msg_new(ctx, f);
    if (m) __atomic_add_fetch(&T.msgs_live, 1, __ATOMIC_RELAXED);
    return m;
}

static chatd_status t_msg_from_json(chatd_ctx *ctx, const char *json, size_t len, chatd_msg **out)
{
    chatd_status st = api_table()->msg_from_json(ctx, json, len, out);
    if (st == CHATD_OK) __atomic_add_fetch(&T.msgs_live, 1, __ATOMIC_RELAXED);
    return st;
}

static chatd_msg *t_msg_ref(chatd_msg *m)
{
    loop_only("msg_ref");
    if (m) __atomic_add_fetch(&T.msgs_live, 1, __ATOMIC_RELAXED);
    return msg_ref(m);
}

static void t_msg_unref(chatd_msg *m)
{
    loop_only("msg_unref");
    if (m) __atomic_sub_fetch(&T.msgs_live, 1, __ATOMIC_RELAXED);
    msg_unref(m);
}

static void t_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                      void *arg)
{
    loop_only("consume");
    if (T.consume)
        T.consume(ctx, msg, flags, done, arg);
    else if (done)
        done(arg, CHATD_ERR_UNAVAILABLE);
}

static void t_dead_letter(chatd_ctx *ctx, const char *source, const void *payload, size_t len,
                          const char *reason, chatd_status_cb cb, void *arg)
{
    loop_only("dead_letter");
    if (T.dead_letter)
        T.dead_letter(ctx, source, payload, len, reason, cb, arg);
    else
        api_table()->dead_letter(ctx, source, payload, len, reason, cb, arg);
}

/* ------------------------------------------------------------ the core */

int testcore_init(void)
{
    static bool threads_on;
    if (!threads_on) {
        if (evthread_use_pthreads() != 0) {
            fprintf(stderr, "testcore: libevent: cannot enable thread support\n");
            return -1;
        }
        threads_on = true;
    }
    /* as chatd's core does: a write to a peer that is gone is an error
     * (EPIPE), not a signal that ends the process */
    signal(SIGPIPE, SIG_IGN);
    memset(&T, 0, sizeof(T));
    core *c = &T.c;
    log_set_level(getenv("CHATD_TEST_DEBUG") ? CHATD_LOG_DEBUG : CHATD_LOG_INFO);
    c->cfg = cfg_new();
    /* the core's limits at their defaults, as chatd runs with an empty
     * [chatd] section (core_limit reads them: a store's idempotency_window) */
    if (c->cfg && cfg_check_core(c->cfg) != 0) {
        fprintf(stderr, "testcore: the core's default configuration is refused\n");
        cfg_free(c->cfg);
        return -1;
    }
    c->loop_thread = pthread_self();
    c->self.core = c;
    c->self.name = "core";
    c->state = CORE_RUNNING;
    ids_init(&c->ids, 1);
    c->base = event_base_new();
    if (!c->cfg || !c->base || post_init(&c->post, c->base) != 0) {
        fprintf(stderr, "testcore: cannot set up the loop\n");
        if (c->base) event_base_free(c->base);
        cfg_free(c->cfg);
        return -1;
    }
    c->metrics = metrics_new();
    c->members = members_new(c);
    c->pipeline = pipeline_new(c);
    c->auth = auth_new(c, 1);
    if (!c->metrics || !c->members || !c->pipeline || !c->auth) {
        fprintf(stderr, "testcore: cannot set up the core's modules\n");
        T.up = true;
        testcore_shutdown();
        return -1;
    }
    T.api = *api_table();
    T.api.log = t_log;
    T.api.complete = t_complete;
    T.api.msg_new = t_msg_new;
    T.api.msg_from_json = t_msg_from_json;
    T.api.msg_ref = t_msg_ref;
    T.api.msg_unref = t_msg_unref;
    T.api.consume = t_consume;
    T.api.dead_letter = t_dead_letter;
    T.up = true;
    return 0;
}

void testcore_shutdown(void)
{
    core *c = &T.c;
    if (!T.up) return;
    c->state = CORE_STOPPED;
    post_free(&c->post);
    if (c->auth) {
        auth_shutdown(c->auth);
        auth_free(c->auth);
    }
    pipeline_free(c->pipeline);
    members_free(c->members);
    metrics_free(c->metrics);
    completion_cleanup(c);
    event_base_free(c->base);
    cfg_free(c->cfg);
    memset(c, 0, sizeof(*c));
    T.up = false;
}

const chatd_api *testcore_api(void)
{
    return &T.api;
}

void *testcore_base(void)
{
    return T.c.base;
}

const chatd_plugin_desc *testcore_load(const char *path, chatd_plugin_kind kind, const void **ops)
{
    char why[512];
    plugin *p = loader_open(path, NULL, "testcore", why, sizeof(why));
    if (!p) return NULL; /* the loader logged why */
    if (p->desc.kind != kind) {
        fprintf(stderr, "testcore: %s is a %s plugin, not a %s plugin\n", path,
                loader_kind_name(p->desc.kind), loader_kind_name(kind));
        loader_close(p);
        return NULL;
    }
    /* never closed (the plugin's libraries may run late destructors), but
     * kept reachable, so that a leak checker does not report it */
    static plugin *loaded[16];
    static size_t nloaded;
    if (nloaded < sizeof(loaded) / sizeof(loaded[0])) loaded[nloaded++] = p;
    if (ops) *ops = &p->ops;
    return &p->desc;
}

/* ------------------------------------------------------------ contexts */

/* A context owns its own cfg holding one section, so that a name can be
 * used again with other values. */
typedef struct test_ctx {
    chatd_ctx ctx; /* first: a chatd_ctx * is a test_ctx * */
    cfg *cf;
} test_ctx;

chatd_ctx *testcore_ctx_new(const char *name, const chatd_cfg_key *keys, int npairs,
                            char *const *pairs)
{
    test_ctx *tc = calloc(1, sizeof(*tc));
    cfg *cf = cfg_new();
    char *nm = strdup(name);
    char *set = NULL;
    if (!tc || !cf || !nm) goto fail;
    /* "plugin" is a key of every instance section and is never checked: it
     * makes the section exist when there are no pairs */
    for (int i = -1; i < npairs; i++) {
        const char *pair = i < 0 ? "plugin=test" : pairs[i];
        free(set);
        set = malloc(strlen(name) + strlen(pair) + 2);
        if (!set) goto fail;
        sprintf(set, "%s.%s", name, pair);
        if (cfg_set(cf, set) != 0) goto fail;
    }
    cfg_section *sec = cfg_section_find(cf, name);
    if (!sec || cfg_check_section(cf, sec, keys) != 0) goto fail;
    free(set);
    tc->ctx.core = &T.c;
    tc->ctx.name = nm;
    tc->ctx.sec = sec;
    tc->cf = cf;
    return &tc->ctx;
fail:
    fprintf(stderr, "testcore: cannot configure instance [%s] (see above)\n", name);
    free(set);
    free(nm);
    cfg_free(cf);
    free(tc);
    return NULL;
}

void testcore_ctx_free(chatd_ctx *ctx)
{
    if (!ctx) return;
    test_ctx *tc = (test_ctx *)ctx;
    cfg_free(tc->cf);
    free((char *)ctx->name);
    free(tc);
}

/* --------------------------------------------------------- completions */

chatd_completion *testcore_completion_new(testcore_done_fn fn, void *arg)
{
    T.completions_live++;
    return completion_new(&T.c, &T.c.self, fn, arg);
}

void testcore_completion_free(chatd_completion *c)
{
    if (!c) return;
    T.completions_live--;
    completion_discard(c);
}

/* ------------------------------------------------------------- the loop */

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

int testcore_run_until(int (*cond)(void *arg), void *arg, int timeout_ms)
{
    int timed_out = 0;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    struct event *t = evtimer_new(T.c.base, timeout_cb, &timed_out);
    if (!t || evtimer_add(t, &tv) != 0) {
        fprintf(stderr, "testcore: cannot arm the deadline timer\n");
        if (t) event_free(t);
        return -1;
    }
    while (!(cond && cond(arg)) && !timed_out)
        if (event_base_loop(T.c.base, EVLOOP_ONCE) < 0) break;
    event_free(t);
    return cond && cond(arg) ? 0 : -1;
}

static int flag_set(void *arg)
{
    return *(const int *)arg != 0;
}

int testcore_run_until_flag(const int *flag, int timeout_ms)
{
    return testcore_run_until(flag_set, (void *)flag, timeout_ms);
}

typedef struct count_goal {
    const long *count;
    long target;
} count_goal;

static int count_reached(void *arg)
{
    const count_goal *g = arg;
    return *g->count >= g->target;
}

int testcore_run_until_count(const long *count, long target, int timeout_ms)
{
    count_goal g = {count, target};
    return testcore_run_until(count_reached, &g, timeout_ms);
}

void testcore_run_for(int ms)
{
    testcore_run_until(NULL, NULL, ms);
}

/* ------------------------------------------------------ what was seen */

typedef struct render_buf {
    char *s;
    size_t n;
} render_buf;

static void render_out(void *arg, const char *data, size_t len)
{
    render_buf *b = arg;
    if (b->n + len >= TESTCORE_METRICS_BUF) len = TESTCORE_METRICS_BUF - 1 - b->n;
    memcpy(b->s + b->n, data, len);
    b->n += len;
    b->s[b->n] = '\0';
}

uint64_t testcore_counter(const char *name)
{
    render_buf b = {malloc(TESTCORE_METRICS_BUF), 0};
    uint64_t sum = 0;
    size_t nl = strlen(name);
    if (!b.s) abort();
    b.s[0] = '\0';
    metrics_render(T.c.metrics, render_out, &b);
    for (char *line = b.s; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) != 0 || line[nl] != '{') continue;
        const char *v = strstr(line, "} ");
        if (v) sum += strtoull(v + 2, NULL, 10);
    }
    free(b.s);
    return sum;
}

long testcore_msgs_live(void)
{
    return __atomic_load_n(&T.msgs_live, __ATOMIC_RELAXED);
}

long testcore_completions_live(void)
{
    return T.completions_live;
}

void testcore_set_consume(testcore_consume_fn fn)
{
    T.consume = fn;
}

void testcore_set_log_hook(testcore_log_fn fn)
{
    __atomic_store_n(&T.log_hook, fn, __ATOMIC_RELEASE);
}

void testcore_set_dead_letter(testcore_dead_letter_fn fn)
{
    T.dead_letter = fn;
}
