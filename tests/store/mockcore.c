/*
 * mockcore.c - a stand-in for the chatd core (see mockcore.h): the chatd_api
 * services on a real libevent loop, for testing store and queue plugins
 * without the daemon.
 */
#define _GNU_SOURCE

#include "mockcore.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------------------ */
/* State                                                                    */
/* ------------------------------------------------------------------------ */

#define MOCK_METRICS_MAX 128

struct chatd_ctx {
    char *name;
    const chatd_cfg_key *keys;
    int npairs;
    char **keyv, **valv;
};

struct chatd_msg {
    long refs;
    chatd_msg_kind kind;
    uint64_t id;
    char *room;
    int64_t writer_id;
    char *writer;
    char *text;
    size_t text_len;
    int64_t time_ms;
    uint64_t up_to;
    char *json;
    size_t json_len;
};

struct chatd_completion {
    mock_done_fn fn;
    void *arg;
};

typedef struct mock_task {
    struct mock_task *next;
    chatd_task_fn fn;
    void *arg;
} mock_task;

typedef struct mock_metric {
    char name[96];
    uint64_t counter;
    int64_t gauge;
} mock_metric;

static struct {
    struct event_base *base;
    struct event *post_ev;
    pthread_t loop_thread;
    pthread_mutex_t mu; /* guards tasks, post_active, stopped */
    mock_task *tasks_head, *tasks_tail;
    int post_active, stopped;
    mock_metric metrics[MOCK_METRICS_MAX];
    size_t nmetrics;
    long msgs_live, completions_live;
    mock_consume_fn consume;
} M = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void mock_loop_only(const char *fn)
{
    if (!pthread_equal(pthread_self(), M.loop_thread)) {
        fprintf(stderr, "mockcore: chatd_api.%s called off the loop thread (ABI violation)\n",
                fn);
        abort();
    }
}

/* ------------------------------------------------------------------------ */
/* Logging, config, status                                                  */
/* ------------------------------------------------------------------------ */

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static void mock_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...)
{
    char line[2048];
    va_list ap;

    if (level == CHATD_LOG_DEBUG && !getenv("CHATD_TEST_DEBUG"))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s [%s] %s\n", level <= CHATD_LOG_DEBUG ? level_names[level] : "?",
            ctx ? ctx->name : "-", line);
}

static const chatd_cfg_key *mock_key(chatd_ctx *ctx, const char *key)
{
    if (!ctx->keys)
        return NULL;
    for (const chatd_cfg_key *k = ctx->keys; k->name; k++) {
        size_t n = strlen(k->name);
        if (strcmp(k->name, key) == 0)
            return k;
        if (n && k->name[n - 1] == '.' && strncmp(k->name, key, n) == 0)
            return k;
    }
    return NULL;
}

static const char *mock_cfg_str(chatd_ctx *ctx, const char *key)
{
    const chatd_cfg_key *k;
    for (int i = ctx->npairs - 1; i >= 0; i--)
        if (strcmp(ctx->keyv[i], key) == 0)
            return ctx->valv[i];
    k = mock_key(ctx, key);
    return k ? k->default_value : NULL;
}

static int mock_parse_int(const char *v, int64_t *out, int size)
{
    char *end;
    long long x;

    errno = 0;
    x = strtoll(v, &end, 10);
    if (errno || end == v)
        return -1;
    if (size && *end) {
        switch (*end) {
        case 'k': case 'K': x *= 1024; break;
        case 'm': case 'M': x *= 1024 * 1024; break;
        case 'g': case 'G': x *= 1024LL * 1024 * 1024; break;
        default: return -1;
        }
        end++;
    }
    if (*end)
        return -1;
    *out = x;
    return 0;
}

static int64_t mock_cfg_int(chatd_ctx *ctx, const char *key, int64_t dflt)
{
    const char *v = mock_cfg_str(ctx, key);
    int64_t x;
    return v && mock_parse_int(v, &x, 1) == 0 ? x : dflt;
}

static int mock_parse_bool(const char *v)
{
    if (!strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on") ||
        !strcmp(v, "1"))
        return 1;
    if (!strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off") ||
        !strcmp(v, "0"))
        return 0;
    return -1;
}

static int mock_cfg_bool(chatd_ctx *ctx, const char *key, int dflt)
{
    const char *v = mock_cfg_str(ctx, key);
    int b = v ? mock_parse_bool(v) : -1;
    return b < 0 ? dflt : b;
}

static int mock_cfg_each(chatd_ctx *ctx, const char *prefix,
                         void (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    size_t n = strlen(prefix);
    int visited = 0;
    for (int i = 0; i < ctx->npairs; i++)
        if (strncmp(ctx->keyv[i], prefix, n) == 0) {
            fn(arg, ctx->keyv[i] + n, ctx->valv[i]);
            visited++;
        }
    return visited;
}

static void mock_cfg_error(chatd_ctx *ctx, const char *key, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "mockcore:0: [%s] %s: %s\n", ctx->name, key ? key : "-", line);
}

static const char *mock_instance_name(chatd_ctx *ctx) { return ctx->name; }

static const char *mock_status_str(chatd_status st)
{
    switch (st) {
    case CHATD_OK: return "ok";
    case CHATD_REJECT: return "reject";
    case CHATD_ASYNC: return "async";
    case CHATD_ERR_INVALID: return "invalid";
    case CHATD_ERR_NOMEM: return "nomem";
    case CHATD_ERR_IO: return "io";
    case CHATD_ERR_BUSY: return "busy";
    case CHATD_ERR_NOTFOUND: return "notfound";
    case CHATD_ERR_EXISTS: return "exists";
    case CHATD_ERR_AUTH: return "auth";
    case CHATD_ERR_FORBIDDEN: return "forbidden";
    case CHATD_ERR_INTERNAL: return "internal";
    case CHATD_ERR_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}

/* ------------------------------------------------------------------------ */
/* Loop services                                                            */
/* ------------------------------------------------------------------------ */

static void *mock_event_base(chatd_ctx *ctx)
{
    (void)ctx;
    return M.base;
}

static void mock_run_posted(evutil_socket_t fd, short what, void *arg)
{
    mock_task *t, *next;
    (void)fd;
    (void)what;
    (void)arg;
    pthread_mutex_lock(&M.mu);
    t = M.tasks_head;
    M.tasks_head = M.tasks_tail = NULL;
    M.post_active = 0;
    pthread_mutex_unlock(&M.mu);
    for (; t; t = next) {
        next = t->next;
        t->fn(t->arg);
        free(t);
    }
}

static chatd_status mock_post(chatd_ctx *ctx, chatd_task_fn fn, void *arg)
{
    mock_task *t;
    (void)ctx;
    t = malloc(sizeof(*t));
    if (!t)
        return CHATD_ERR_NOMEM;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&M.mu);
    if (M.stopped) {
        pthread_mutex_unlock(&M.mu);
        free(t);
        return CHATD_ERR_UNAVAILABLE;
    }
    if (M.tasks_tail)
        M.tasks_tail->next = t;
    else
        M.tasks_head = t;
    M.tasks_tail = t;
    if (!M.post_active) {
        M.post_active = 1;
        event_active(M.post_ev, EV_READ, 0); /* thread-safe: evthread_use_pthreads */
    }
    pthread_mutex_unlock(&M.mu);
    return CHATD_OK;
}

static void mock_complete(chatd_completion *c, chatd_status status, const char *reason)
{
    mock_loop_only("complete");
    if (!c) {
        fprintf(stderr, "mockcore: complete(NULL)\n");
        abort();
    }
    M.completions_live--;
    c->fn(c->arg, status, reason);
    free(c);
}

static int64_t mock_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */
/* ------------------------------------------------------------------------ */

static char *mock_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        if (n)
            memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static void mock_msg_free(chatd_msg *m)
{
    free(m->room);
    free(m->writer);
    free(m->text);
    free(m->json);
    free(m);
    M.msgs_live--;
}

static chatd_msg *mock_msg_new(chatd_ctx *ctx, const chatd_msg_fields *f)
{
    chatd_msg *m;
    (void)ctx;
    mock_loop_only("msg_new");
    if (!f || f->size < sizeof(chatd_msg_fields) || !f->room_id ||
        (f->kind != CHATD_MSG_CHAT && f->kind != CHATD_MSG_READ) ||
        (f->kind == CHATD_MSG_CHAT && !f->text && f->text_len))
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    M.msgs_live++;
    m->refs = 1;
    m->kind = f->kind;
    m->id = f->id;
    m->writer_id = f->writer_id;
    m->time_ms = f->time_ms;
    m->up_to = f->kind == CHATD_MSG_READ ? f->up_to : 0;
    m->room = mock_strndup(f->room_id, strlen(f->room_id));
    m->writer = mock_strndup(f->writer ? f->writer : "", f->writer ? strlen(f->writer) : 0);
    if (f->kind == CHATD_MSG_CHAT) {
        m->text = mock_strndup(f->text ? f->text : "", f->text ? f->text_len : 0);
        m->text_len = f->text ? f->text_len : 0;
    } else {
        m->text = mock_strndup("", 0);
    }
    if (!m->room || !m->writer || !m->text) {
        mock_msg_free(m);
        return NULL;
    }
    return m;
}

static chatd_msg *mock_msg_ref(chatd_msg *m)
{
    mock_loop_only("msg_ref");
    if (m)
        m->refs++;
    return m;
}

static void mock_msg_unref(chatd_msg *m)
{
    mock_loop_only("msg_unref");
    if (!m)
        return;
    if (m->refs <= 0) {
        fprintf(stderr, "mockcore: msg_unref of a freed message\n");
        abort();
    }
    if (--m->refs == 0)
        mock_msg_free(m);
}

static chatd_msg_kind mock_msg_kind(const chatd_msg *m) { return m->kind; }
static uint64_t mock_msg_id(const chatd_msg *m) { return m->id; }
static const char *mock_msg_room(const chatd_msg *m) { return m->room; }
static int64_t mock_msg_writer_id(const chatd_msg *m) { return m->writer_id; }
static const char *mock_msg_writer(const chatd_msg *m) { return m->writer; }
static int64_t mock_msg_time_ms(const chatd_msg *m) { return m->time_ms; }
static uint64_t mock_msg_up_to(const chatd_msg *m) { return m->up_to; }

static const char *mock_msg_text(const chatd_msg *m, size_t *len)
{
    if (len)
        *len = m->text_len;
    return m->text;
}

static void mock_iso8601(int64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, n, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static const char *mock_msg_json(chatd_msg *m, size_t *len)
{
    json_object *o;
    char num[32], ts[96];
    const char *s;
    size_t n;

    mock_loop_only("msg_json");
    if (!m->json) {
        o = json_object_new_object();
        if (!o)
            return NULL;
        json_object_object_add(o, "type", json_object_new_string(m->kind == CHATD_MSG_READ
                                                                     ? "read"
                                                                     : "chat"));
        snprintf(num, sizeof(num), "%" PRIu64, m->id);
        json_object_object_add(o, "id", json_object_new_string(num));
        json_object_object_add(o, "roomId", json_object_new_string(m->room));
        json_object_object_add(o, "writer", json_object_new_string(m->writer));
        json_object_object_add(o, "writerId", json_object_new_int64(m->writer_id));
        if (m->kind == CHATD_MSG_READ) {
            json_object_object_add(o, "memberId", json_object_new_int64(m->writer_id));
            snprintf(num, sizeof(num), "%" PRIu64, m->up_to);
            json_object_object_add(o, "upTo", json_object_new_string(num));
        } else {
            json_object_object_add(o, "message",
                                   json_object_new_string_len(m->text, (int)m->text_len));
        }
        mock_iso8601(m->time_ms, ts, sizeof(ts));
        json_object_object_add(o, "timestamp", json_object_new_string(ts));
        s = json_object_to_json_string_length(
            o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        m->json = s ? mock_strndup(s, n) : NULL;
        m->json_len = s ? n : 0;
        json_object_put(o);
        if (!m->json)
            return NULL;
    }
    if (len)
        *len = m->json_len;
    return m->json;
}

static uint64_t mock_json_u64(json_object *o, const char *key)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v))
        return 0;
    if (json_object_is_type(v, json_type_string))
        return strtoull(json_object_get_string(v), NULL, 10);
    return (uint64_t)json_object_get_int64(v);
}

static const char *mock_json_str(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len)
        *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static chatd_status mock_msg_from_json(chatd_ctx *ctx, const char *json, size_t len,
                                       chatd_msg **out)
{
    json_tokener *tok;
    json_object *o;
    chatd_msg_fields f;
    const char *type, *ts;
    struct tm tm;
    int ms = 0;

    mock_loop_only("msg_from_json");
    if (!json || !out || len > INT32_MAX)
        return CHATD_ERR_INVALID;
    tok = json_tokener_new();
    if (!tok)
        return CHATD_ERR_NOMEM;
    o = json_tokener_parse_ex(tok, json, (int)len);
    json_tokener_free(tok);
    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return CHATD_ERR_INVALID;
    }
    memset(&f, 0, sizeof(f));
    f.size = sizeof(f);
    type = mock_json_str(o, "type", NULL);
    f.kind = type && !strcmp(type, "read") ? CHATD_MSG_READ : CHATD_MSG_CHAT;
    f.id = mock_json_u64(o, "id");
    f.room_id = mock_json_str(o, "roomId", NULL);
    f.writer = mock_json_str(o, "writer", NULL);
    f.writer_id = (int64_t)mock_json_u64(o, "writerId");
    f.text = mock_json_str(o, "message", &f.text_len);
    f.up_to = mock_json_u64(o, "upTo");
    ts = mock_json_str(o, "timestamp", NULL);
    memset(&tm, 0, sizeof(tm));
    if (ts && sscanf(ts, "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                     &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) >= 6) {
        tm.tm_year -= 1900;
        tm.tm_mon -= 1;
        f.time_ms = (int64_t)timegm(&tm) * 1000 + ms;
    }
    *out = f.room_id ? mock_msg_new(ctx, &f) : NULL;
    json_object_put(o);
    return *out ? CHATD_OK : CHATD_ERR_INVALID;
}

static chatd_status mock_msg_set_text(chatd_msg *m, const char *text, size_t len)
{
    (void)m;
    (void)text;
    (void)len;
    return CHATD_ERR_INVALID; /* only inside filters, which the mock does not run */
}

/* ------------------------------------------------------------------------ */
/* Pipeline and member services: not used by stores; answer "unavailable"   */
/* ------------------------------------------------------------------------ */

static void mock_publish(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb,
                         void *arg)
{
    (void)ctx;
    (void)f;
    cb(arg, CHATD_ERR_UNAVAILABLE, "mock core has no pipeline", NULL);
}

static void mock_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                         void *arg)
{
    mock_loop_only("consume");
    if (M.consume) {
        M.consume(ctx, msg, flags, done, arg);
        return;
    }
    if (done)
        done(arg, CHATD_ERR_UNAVAILABLE);
}

static void mock_member_register(chatd_ctx *ctx, const char *login_id, const char *name,
                                 const char *password, chatd_member_cb cb, void *arg)
{
    (void)ctx, (void)login_id, (void)name, (void)password;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_login(chatd_ctx *ctx, const char *login_id, const char *password,
                       chatd_login_cb cb, void *arg)
{
    (void)ctx, (void)login_id, (void)password;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, NULL);
}

static void mock_logout(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg)
{
    (void)ctx, (void)token;
    if (cb)
        cb(arg, CHATD_ERR_UNAVAILABLE);
}

static void mock_authenticate(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg)
{
    (void)ctx, (void)token;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_member_get(chatd_ctx *ctx, int64_t id, const char *login_id,
                            chatd_member_cb cb, void *arg)
{
    (void)ctx, (void)id, (void)login_id;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_member_list(chatd_ctx *ctx, chatd_member_cb cb, void *arg)
{
    (void)ctx;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_room_check(chatd_ctx *ctx, int64_t member_id, const char *room,
                            chatd_room_cb cb, void *arg)
{
    (void)ctx, (void)member_id, (void)room;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_room_list(chatd_ctx *ctx, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    (void)ctx, (void)member_id;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
}

static void mock_history(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t before,
                         unsigned limit, chatd_history_cb cb, void *arg)
{
    (void)ctx, (void)member_id, (void)room, (void)before, (void)limit;
    cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

static mock_metric *mock_metric_find(const char *name, int create)
{
    for (size_t i = 0; i < M.nmetrics; i++)
        if (strcmp(M.metrics[i].name, name) == 0)
            return &M.metrics[i];
    if (!create || M.nmetrics == MOCK_METRICS_MAX || strlen(name) >= sizeof(M.metrics[0].name))
        return NULL;
    snprintf(M.metrics[M.nmetrics].name, sizeof(M.metrics[0].name), "%s", name);
    return &M.metrics[M.nmetrics++];
}

static void mock_counter_add(chatd_ctx *ctx, const char *name, uint64_t delta)
{
    mock_metric *m;
    (void)ctx;
    mock_loop_only("counter_add");
    if ((m = mock_metric_find(name, 1)))
        m->counter += delta;
}

static void mock_gauge_set(chatd_ctx *ctx, const char *name, int64_t value)
{
    mock_metric *m;
    (void)ctx;
    mock_loop_only("gauge_set");
    if ((m = mock_metric_find(name, 1)))
        m->gauge = value;
}

static void mock_metrics_render(chatd_ctx *ctx, chatd_write_fn fn, void *arg)
{
    char line[160];
    (void)ctx;
    for (size_t i = 0; i < M.nmetrics; i++) {
        int n = snprintf(line, sizeof(line), "%s %" PRIu64 "\n", M.metrics[i].name,
                         M.metrics[i].counter);
        if (n > 0)
            fn(arg, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    }
}

static int mock_healthy(chatd_ctx *ctx)
{
    (void)ctx;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* The table and the test-facing functions                                  */
/* ------------------------------------------------------------------------ */

static const chatd_api mock_table = {
    .size = sizeof(chatd_api),
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .log = mock_log,
    .cfg_str = mock_cfg_str,
    .cfg_int = mock_cfg_int,
    .cfg_bool = mock_cfg_bool,
    .cfg_each = mock_cfg_each,
    .cfg_error = mock_cfg_error,
    .instance_name = mock_instance_name,
    .status_str = mock_status_str,
    .event_base = mock_event_base,
    .post = mock_post,
    .complete = mock_complete,
    .now_ms = mock_now_ms,
    .msg_new = mock_msg_new,
    .msg_from_json = mock_msg_from_json,
    .msg_ref = mock_msg_ref,
    .msg_unref = mock_msg_unref,
    .msg_kind = mock_msg_kind,
    .msg_id = mock_msg_id,
    .msg_room = mock_msg_room,
    .msg_writer_id = mock_msg_writer_id,
    .msg_writer = mock_msg_writer,
    .msg_text = mock_msg_text,
    .msg_time_ms = mock_msg_time_ms,
    .msg_up_to = mock_msg_up_to,
    .msg_json = mock_msg_json,
    .msg_set_text = mock_msg_set_text,
    .publish = mock_publish,
    .consume = mock_consume,
    .member_register = mock_member_register,
    .login = mock_login,
    .logout = mock_logout,
    .authenticate = mock_authenticate,
    .member_get = mock_member_get,
    .member_list = mock_member_list,
    .room_check = mock_room_check,
    .room_list = mock_room_list,
    .history = mock_history,
    .counter_add = mock_counter_add,
    .gauge_set = mock_gauge_set,
    .metrics_render = mock_metrics_render,
    .healthy = mock_healthy,
};

const chatd_api *mock_api(void) { return &mock_table; }
void *mock_base(void) { return M.base; }

int mock_init(void)
{
    if (evthread_use_pthreads() != 0) {
        fprintf(stderr, "mockcore: evthread_use_pthreads failed\n");
        return -1;
    }
    M.base = event_base_new();
    if (!M.base)
        return -1;
    M.post_ev = event_new(M.base, -1, 0, mock_run_posted, NULL);
    if (!M.post_ev) {
        event_base_free(M.base);
        M.base = NULL;
        return -1;
    }
    M.loop_thread = pthread_self();
    M.stopped = 0;
    return 0;
}

void mock_shutdown(void)
{
    mock_task *t, *next;
    pthread_mutex_lock(&M.mu);
    M.stopped = 1;
    t = M.tasks_head;
    M.tasks_head = M.tasks_tail = NULL;
    pthread_mutex_unlock(&M.mu);
    for (; t; t = next) {
        next = t->next;
        free(t);
    }
    if (M.post_ev)
        event_free(M.post_ev);
    if (M.base)
        event_base_free(M.base);
    M.post_ev = NULL;
    M.base = NULL;
}

chatd_ctx *mock_ctx_new(const char *name, const chatd_cfg_key *keys, int npairs,
                        char *const *pairs)
{
    chatd_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->name = mock_strndup(name, strlen(name));
    c->keys = keys;
    c->keyv = calloc((size_t)npairs + 1, sizeof(char *));
    c->valv = calloc((size_t)npairs + 1, sizeof(char *));
    if (!c->name || !c->keyv || !c->valv)
        goto fail;
    for (int i = 0; i < npairs; i++) {
        const char *eq = strchr(pairs[i], '=');
        const chatd_cfg_key *k;
        int64_t x;
        if (!eq || eq == pairs[i]) {
            fprintf(stderr, "mockcore: config pair \"%s\" is not key=value\n", pairs[i]);
            goto fail;
        }
        c->keyv[i] = mock_strndup(pairs[i], (size_t)(eq - pairs[i]));
        c->valv[i] = mock_strndup(eq + 1, strlen(eq + 1));
        c->npairs = i + 1;
        if (!c->keyv[i] || !c->valv[i])
            goto fail;
        if (!keys)
            continue;
        k = mock_key(c, c->keyv[i]);
        if (!k) {
            fprintf(stderr, "mockcore: [%s] unknown key \"%s\"\n", name, c->keyv[i]);
            goto fail;
        }
        if ((k->type == CHATD_CFG_INT || k->type == CHATD_CFG_SIZE) &&
            (mock_parse_int(c->valv[i], &x, k->type == CHATD_CFG_SIZE) != 0 || x < k->min ||
             x > k->max)) {
            fprintf(stderr, "mockcore: [%s] %s: \"%s\" is not a number in [%lld, %lld]\n", name,
                    c->keyv[i], c->valv[i], (long long)k->min, (long long)k->max);
            goto fail;
        }
        if (k->type == CHATD_CFG_BOOL && mock_parse_bool(c->valv[i]) < 0) {
            fprintf(stderr, "mockcore: [%s] %s: \"%s\" is not a boolean\n", name, c->keyv[i],
                    c->valv[i]);
            goto fail;
        }
    }
    return c;
fail:
    mock_ctx_free(c);
    return NULL;
}

void mock_ctx_free(chatd_ctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->npairs; i++) {
        free(c->keyv[i]);
        free(c->valv[i]);
    }
    free(c->keyv);
    free(c->valv);
    free(c->name);
    free(c);
}

chatd_completion *mock_completion_new(mock_done_fn fn, void *arg)
{
    chatd_completion *c = malloc(sizeof(*c));
    if (!c)
        return NULL;
    c->fn = fn;
    c->arg = arg;
    M.completions_live++;
    return c;
}

void mock_completion_free(chatd_completion *c)
{
    if (!c)
        return;
    M.completions_live--;
    free(c);
}

static void mock_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg = 1;
}

static int mock_run(const int *flag, const long *count, long target, int timeout_ms)
{
    int timed_out = 0;
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    struct event *t = evtimer_new(M.base, mock_timeout_cb, &timed_out);

    if (!t || evtimer_add(t, &tv) != 0) {
        fprintf(stderr, "mockcore: cannot arm the timeout timer\n");
        if (t)
            event_free(t);
        return -1;
    }
    while (!(flag ? *flag : *count >= target) && !timed_out)
        if (event_base_loop(M.base, EVLOOP_ONCE) < 0)
            break;
    event_free(t);
    return (flag ? *flag : *count >= target) ? 0 : -1;
}

int mock_run_until(const int *flag, int timeout_ms) { return mock_run(flag, NULL, 0, timeout_ms); }

int mock_run_until_count(const long *count, long target, int timeout_ms)
{
    return mock_run(NULL, count, target, timeout_ms);
}

uint64_t mock_counter(const char *name)
{
    mock_metric *m = mock_metric_find(name, 0);
    return m ? m->counter : 0;
}

int64_t mock_gauge(const char *name)
{
    mock_metric *m = mock_metric_find(name, 0);
    return m ? m->gauge : 0;
}

long mock_msgs_live(void) { return M.msgs_live; }
long mock_completions_live(void) { return M.completions_live; }
void mock_set_consume(mock_consume_fn fn) { M.consume = fn; }
