/*
 * core/api.c - the chatd_api services table handed to every plugin
 * instance: thin, checked wrappers around the core modules (log, config,
 * loop, messages, pipeline, members and sessions, metrics).
 */
#include "config.h"

#include "core.h"

#include <ctype.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *api_status_str(chatd_status st)
{
    switch (st) {
    case CHATD_OK:
        return "ok";
    case CHATD_REJECT:
        return "rejected";
    case CHATD_ASYNC:
        return "async";
    case CHATD_ERR_INVALID:
        return "invalid";
    case CHATD_ERR_NOMEM:
        return "nomem";
    case CHATD_ERR_IO:
        return "io";
    case CHATD_ERR_BUSY:
        return "busy";
    case CHATD_ERR_NOTFOUND:
        return "notfound";
    case CHATD_ERR_EXISTS:
        return "exists";
    case CHATD_ERR_AUTH:
        return "auth";
    case CHATD_ERR_FORBIDDEN:
        return "forbidden";
    case CHATD_ERR_INTERNAL:
        return "internal";
    case CHATD_ERR_UNAVAILABLE:
        return "unavailable";
    }
    return "unknown";
}

/* --- logging, config ------------------------------------------------- */

static void a_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...) CHATD_PRINTF(3, 4);
static void a_log(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, ctx ? ctx->name : NULL, fmt, ap);
    va_end(ap);
}

static const char *a_cfg_str(chatd_ctx *ctx, const char *key)
{
    if (!ctx || !ctx->sec || !key) return NULL;
    cfg_entry *e = cfg_entry_find(ctx->sec, key);
    if (e) return e->value;
    const chatd_cfg_key *k = cfg_key_match(ctx->sec->keys, key);
    return k ? k->default_value : NULL;
}

static int64_t a_cfg_int(chatd_ctx *ctx, const char *key, int64_t dflt)
{
    const char *v = a_cfg_str(ctx, key);
    int64_t n;
    if (!v) return dflt;
    if (cfg_parse_int(v, &n) == 0 || cfg_parse_size(v, &n) == 0) return n;
    return dflt;
}

static int a_cfg_bool(chatd_ctx *ctx, const char *key, int dflt)
{
    const char *v = a_cfg_str(ctx, key);
    int b;
    if (!v || cfg_parse_bool(v, &b) != 0) return dflt;
    return b;
}

static int a_cfg_each(chatd_ctx *ctx, const char *prefix,
                      void (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    if (!ctx || !ctx->sec || !prefix || !fn) return 0;
    size_t n = strlen(prefix);
    int count = 0;
    for (size_t i = 0; i < ctx->sec->n; i++) {
        cfg_entry *e = &ctx->sec->entries[i];
        if (strncmp(e->key, prefix, n) == 0) {
            fn(arg, e->key + n, e->value);
            count++;
        }
    }
    return count;
}

static void a_cfg_error(chatd_ctx *ctx, const char *key, const char *fmt, ...) CHATD_PRINTF(3, 4);
static void a_cfg_error(chatd_ctx *ctx, const char *key, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (ctx && ctx->sec) {
        cfg_entry *e = key ? cfg_entry_find(ctx->sec, key) : NULL;
        if (e || !key) {
            cfg_verror(ctx->core->cfg, ctx->sec, e, fmt, ap);
        } else {
            char reason[512];
            vsnprintf(reason, sizeof(reason), fmt, ap);
            cfg_error(ctx->core->cfg, ctx->sec, NULL, "%s: %s", key, reason);
        }
    } else {
        log_vmsg(CHATD_LOG_ERROR, ctx ? ctx->name : NULL, fmt, ap);
    }
    va_end(ap);
}

static const char *a_instance_name(chatd_ctx *ctx)
{
    return ctx ? ctx->name : "core";
}

/* --- loop ------------------------------------------------------------ */

static void *a_event_base(chatd_ctx *ctx)
{
    return ctx->core->base;
}

static chatd_status a_post(chatd_ctx *ctx, chatd_task_fn fn, void *arg)
{
    if (!ctx) return CHATD_ERR_INVALID;
    return post_add(&ctx->core->post, fn, arg);
}

static void a_complete(chatd_completion *c, chatd_status status, const char *reason)
{
    completion_complete(c, status, reason);
}

/* --- messages ---------------------------------------------------------- */

static chatd_msg *a_msg_new(chatd_ctx *ctx, const chatd_msg_fields *f)
{
    (void)ctx;
    chatd_msg *m;
    return msg_create(f, &m) == CHATD_OK ? m : NULL;
}

static chatd_status a_msg_from_json(chatd_ctx *ctx, const char *json, size_t len, chatd_msg **out)
{
    (void)ctx;
    if (!out) return CHATD_ERR_INVALID;
    return msg_parse_json(json, len, out);
}

/* --- members, rooms ---------------------------------------------------- */

static void a_member_register(chatd_ctx *ctx, const char *login_id, const char *name,
                              const char *password, chatd_member_cb cb, void *arg)
{
    auth_register(ctx->core, login_id, name, password, cb, arg);
}

static void a_login(chatd_ctx *ctx, const char *login_id, const char *password, chatd_login_cb cb,
                    void *arg)
{
    auth_login(ctx->core, login_id, password, cb, arg);
}

static void a_member_register2(chatd_ctx *ctx, const char *login_id, const char *name,
                               const char *password, const char *client_addr, uint32_t *retry_after,
                               chatd_member_cb cb, void *arg)
{
    auth_register2(ctx->core, login_id, name, password, client_addr, retry_after, cb, arg);
}

static void a_login2(chatd_ctx *ctx, const char *login_id, const char *password,
                     const char *client_addr, uint32_t *retry_after, chatd_login_cb cb, void *arg)
{
    auth_login2(ctx->core, login_id, password, client_addr, retry_after, cb, arg);
}

static void a_logout(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg)
{
    auth_logout(ctx->core, token, cb, arg);
}

static void a_authenticate(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg)
{
    auth_authenticate(ctx->core, token, cb, arg);
}

typedef struct mget_req {
    chatd_member_cb cb;
    void *arg;
} mget_req;

static void mget_done(void *arg, chatd_status st, const member_entry *m)
{
    mget_req *r = arg;
    members_answer(r->cb, r->arg, st, m);
    free(r);
}

/* Strip password hashes before handing store rows to a plugin. */
typedef struct strip_req {
    core *core;
    chatd_member_cb cb;
    void *arg;
} strip_req;

static void strip_done(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    strip_req *r = arg;
    if (st == CHATD_OK && n > 0 && !CHATD_HAS(chatd_member, rows, name)) {
        log_msg(CHATD_LOG_ERROR, r->core->store->name,
                "member rows of %u bytes do not even hold id, login_id and name (store bug)",
                (unsigned)rows->size);
        st = CHATD_ERR_INTERNAL;
    }
    if (st != CHATD_OK || n == 0) {
        r->cb(r->arg, st, NULL, 0);
        free(r);
        return;
    }
    chatd_member *copy = calloc(n, sizeof(*copy));
    if (!copy) {
        r->cb(r->arg, CHATD_ERR_NOMEM, NULL, 0);
        free(r);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        /* the store's rows are indexed by its own record size (plugin.h) */
        const chatd_member *row = CHATD_ROW(chatd_member, rows, i);
        copy[i] = member_row_copy(row, false);
        members_put(r->core->members, row);
    }
    r->cb(r->arg, CHATD_OK, copy, n);
    free(copy);
    free(r);
}

static void a_dead_letter(chatd_ctx *ctx, const char *source, const void *payload, size_t len,
                          const char *reason, chatd_status_cb cb, void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    if (!so || !so->dead_letter) {
        log_msg(CHATD_LOG_ERROR, ctx->name,
                "cannot keep the dead letter %s (%s): %s; it is kept where it is", source, reason,
                so ? "the store has no dead-letter table (ABI 1.0 store?)" : "no store");
        if (cb) cb(arg, CHATD_ERR_UNAVAILABLE);
        return;
    }
    so->dead_letter(ctx->core->store->inst, source, payload, len, reason, cb, arg);
}

static void a_member_get(chatd_ctx *ctx, int64_t id, const char *login_id, chatd_member_cb cb,
                         void *arg)
{
    if (!login_id) {
        mget_req *r = malloc(sizeof(*r));
        if (!r) {
            cb(arg, CHATD_ERR_NOMEM, NULL, 0);
            return;
        }
        r->cb = cb;
        r->arg = arg;
        members_get(ctx->core, id, mget_done, r);
        return;
    }
    const chatd_store_ops *so = core_store(ctx->core);
    strip_req *r = malloc(sizeof(*r));
    if (!so || !so->member_get || !r) {
        free(r);
        cb(arg, so ? CHATD_ERR_NOMEM : CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    *r = (strip_req){.core = ctx->core, .cb = cb, .arg = arg};
    so->member_get(ctx->core->store->inst, 0, login_id, strip_done, r);
}

static void a_member_list(chatd_ctx *ctx, chatd_member_cb cb, void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    strip_req *r = malloc(sizeof(*r));
    if (!so || !so->member_list || !r) {
        free(r);
        cb(arg, so ? CHATD_ERR_NOMEM : CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    *r = (strip_req){.core = ctx->core, .cb = cb, .arg = arg};
    so->member_list(ctx->core->store->inst, strip_done, r);
}

/* s starts with prefix, ASCII letters compared without case. */
static bool starts_nocase(const char *s, const char *prefix)
{
    if (!s) return !*prefix;
    for (; *prefix; s++, prefix++)
        if (!*s || tolower((unsigned char)*s) != tolower((unsigned char)*prefix)) return false;
    return true;
}

/* member_page of a store without the hook: one page of member_list. */
typedef struct page_req {
    strip_req strip;
    int64_t after_id;
    unsigned limit;
    char prefix[]; /* "" for every member */
} page_req;

static void page_list_done(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    page_req *r = arg;
    strip_req *sr = malloc(sizeof(*sr));
    chatd_member *sel =
        st == CHATD_OK && n > 0 ? calloc(n < r->limit ? n : r->limit, sizeof(*sel)) : NULL;
    size_t k = 0;
    if (!sr || (st == CHATD_OK && n > 0 && !sel)) {
        r->strip.cb(r->strip.arg, CHATD_ERR_NOMEM, NULL, 0);
        goto out;
    }
    *sr = r->strip;
    if (st == CHATD_OK && n > 0 && !CHATD_HAS(chatd_member, rows, name)) {
        strip_done(sr, st, rows, n); /* logs the store bug, answers CHATD_ERR_INTERNAL */
        sr = NULL;
        goto out;
    }
    for (size_t i = 0; st == CHATD_OK && i < n && k < r->limit; i++) {
        const chatd_member *m = CHATD_ROW(chatd_member, rows, i);
        if (m->id <= r->after_id) continue;
        if (r->prefix[0] && !starts_nocase(m->login_id, r->prefix) &&
            !starts_nocase(m->name, r->prefix))
            continue;
        sel[k++] = member_row_copy(m, false);
    }
    strip_done(sr, st, sel, k);
    sr = NULL;
out:
    free(sr);
    free(sel);
    free(r);
}

static void a_member_page(chatd_ctx *ctx, int64_t after_id, const char *prefix, unsigned limit,
                          chatd_member_cb cb, void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    if (limit == 0 || after_id < 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    if (!prefix) prefix = "";
    if (so && so->member_page) {
        strip_req *r = malloc(sizeof(*r));
        if (!r) {
            cb(arg, CHATD_ERR_NOMEM, NULL, 0);
            return;
        }
        *r = (strip_req){.core = ctx->core, .cb = cb, .arg = arg};
        so->member_page(ctx->core->store->inst, after_id, prefix, limit, strip_done, r);
        return;
    }
    size_t pl = strlen(prefix);
    page_req *r = malloc(sizeof(*r) + pl + 1);
    if (!so || !so->member_list || !r) {
        free(r);
        cb(arg, so ? CHATD_ERR_NOMEM : CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    r->strip = (strip_req){.core = ctx->core, .cb = cb, .arg = arg};
    r->after_id = after_id;
    r->limit = limit;
    memcpy(r->prefix, prefix, pl + 1);
    so->member_list(ctx->core->store->inst, page_list_done, r);
}

static void a_room_check(chatd_ctx *ctx, int64_t member_id, const char *room, chatd_room_cb cb,
                         void *arg)
{
    members_room_check(ctx->core, member_id, room, cb, arg);
}

static void a_room_list(chatd_ctx *ctx, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    if (member_id <= 0) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    if (!so || !so->room_list) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    so->room_list(ctx->core->store->inst, member_id, cb, arg);
}

typedef struct hist_req {
    chatd_ctx *ctx;
    uint64_t before;
    uint64_t after; /* replay: messages after this position */
    bool replay;
    unsigned limit;
    chatd_history_cb cb;
    void *arg;
} hist_req;

static void hist_checked(void *arg, chatd_status st, const char *room, int64_t peer)
{
    (void)peer;
    hist_req *r = arg;
    const chatd_store_ops *so = core_store(r->ctx->core);
    if (st != CHATD_OK) {
        r->cb(r->arg, st, NULL, 0, 0);
    } else if (r->replay) {
        if (so && so->replay)
            so->replay(r->ctx->core->store->inst, room, 0, r->after, r->limit, r->cb, r->arg);
        else
            r->cb(r->arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
    } else if (!so || !so->history) {
        r->cb(r->arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
    } else {
        so->history(r->ctx->core->store->inst, room, r->before, r->limit, r->cb, r->arg);
    }
    free(r);
}

static void a_history(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t before,
                      unsigned limit, chatd_history_cb cb, void *arg)
{
    hist_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    if (limit == 0) limit = CHATD_HISTORY_DEFAULT;
    if (limit > CHATD_HISTORY_MAX) limit = CHATD_HISTORY_MAX;
    *r = (hist_req){.ctx = ctx, .before = before, .limit = limit, .cb = cb, .arg = arg};
    members_room_check(ctx->core, member_id, room, hist_checked, r);
}

static void a_replay(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t after,
                     unsigned limit, chatd_history_cb cb, void *arg)
{
    if (limit == 0) limit = CHATD_HISTORY_DEFAULT;
    if (limit > CHATD_HISTORY_MAX) limit = CHATD_HISTORY_MAX;
    if (!room) { /* the member's side stream: nothing to check */
        const chatd_store_ops *so = core_store(ctx->core);
        if (member_id <= 0)
            cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        else if (!so || !so->replay)
            cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        else
            so->replay(ctx->core->store->inst, NULL, member_id, after, limit, cb, arg);
        return;
    }
    hist_req *r = malloc(sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    *r = (hist_req){
        .ctx = ctx, .after = after, .replay = true, .limit = limit, .cb = cb, .arg = arg};
    members_room_check(ctx->core, member_id, room, hist_checked, r);
}

static void a_side_replay(chatd_ctx *ctx, int64_t member_id, const uint64_t *after,
                          const uint64_t *until, size_t n, unsigned limit, chatd_history_cb cb,
                          void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    bool ok = member_id > 0 && n > 0 && n <= CHATD_POS_RANGES_MAX && after && until;
    for (size_t i = 0; ok && i < n; i++)
        ok = after[i] < until[i] && (i + 1 == n || until[i] <= after[i + 1]);
    if (!ok) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!so || !so->side_replay) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    if (limit == 0) limit = CHATD_HISTORY_DEFAULT;
    if (limit > CHATD_HISTORY_MAX) limit = CHATD_HISTORY_MAX;
    so->side_replay(ctx->core->store->inst, member_id, after, until, n, limit, cb, arg);
}

static void a_stream_heads(chatd_ctx *ctx, chatd_positions_cb cb, void *arg)
{
    const chatd_store_ops *so = core_store(ctx->core);
    if (!so || !so->stream_heads) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    so->stream_heads(ctx->core->store->inst, cb, arg);
}

/* --- metrics, health --------------------------------------------------- */

static void a_counter_add(chatd_ctx *ctx, const char *name, uint64_t delta)
{
    if (metrics_counter_add(ctx->core->metrics, name, ctx->name, delta) != 0)
        log_msg(CHATD_LOG_DEBUG, ctx->name, "counter '%s' refused (bad name or too many series)",
                name ? name : "(null)");
}

static void a_gauge_set(chatd_ctx *ctx, const char *name, int64_t value)
{
    if (metrics_gauge_set(ctx->core->metrics, name, ctx->name, value) != 0)
        log_msg(CHATD_LOG_DEBUG, ctx->name, "gauge '%s' refused (bad name or too many series)",
                name ? name : "(null)");
}

static void a_metrics_render(chatd_ctx *ctx, chatd_write_fn fn, void *arg)
{
    metrics_render(ctx->core->metrics, fn, arg);
}

static int a_healthy(chatd_ctx *ctx)
{
    core *c = ctx->core;
    return c->state == CORE_RUNNING && c->store && c->store->started && !c->store->failed &&
           c->queue && c->queue->started && !c->queue->failed;
}

/* --- ABI 1.1 ---------------------------------------------------------- */

static int64_t a_core_limit(chatd_ctx *ctx, const char *key)
{
    const cfg *c = ctx && ctx->core ? ctx->core->cfg : NULL;
    if (!c || !key) return -1;
    if (strcmp(key, "max_message_bytes") == 0) return c->max_message_bytes;
    if (strcmp(key, "publish_rate") == 0) return c->publish_rate;
    if (strcmp(key, "idempotency_window") == 0) return c->idempotency_window;
    if (strcmp(key, "max_pending") == 0) return c->max_pending;
    return -1;
}

static const chatd_api api = {
    .size = sizeof(chatd_api),
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .log = a_log,
    .cfg_str = a_cfg_str,
    .cfg_int = a_cfg_int,
    .cfg_bool = a_cfg_bool,
    .cfg_each = a_cfg_each,
    .cfg_error = a_cfg_error,
    .instance_name = a_instance_name,
    .status_str = api_status_str,
    .event_base = a_event_base,
    .post = a_post,
    .complete = a_complete,
    .now_ms = clock_wall_ms,
    .msg_new = a_msg_new,
    .msg_from_json = a_msg_from_json,
    .msg_ref = msg_ref,
    .msg_unref = msg_unref,
    .msg_kind = msg_kind,
    .msg_id = msg_id,
    .msg_room = msg_room,
    .msg_writer_id = msg_writer_id,
    .msg_writer = msg_writer,
    .msg_text = msg_text,
    .msg_time_ms = msg_time_ms,
    .msg_up_to = msg_up_to,
    .msg_json = msg_json,
    .msg_set_text = msg_set_text,
    .publish = pipeline_publish,
    .consume = pipeline_consume,
    .member_register = a_member_register,
    .login = a_login,
    .logout = a_logout,
    .authenticate = a_authenticate,
    .member_get = a_member_get,
    .member_list = a_member_list,
    .room_check = a_room_check,
    .room_list = a_room_list,
    .history = a_history,
    .counter_add = a_counter_add,
    .gauge_set = a_gauge_set,
    .metrics_render = a_metrics_render,
    .healthy = a_healthy,
    .room_parse = room_parse,
    .msg_room_members = msg_room_members,
    .room_format = room_format,
    .msg_idem_key = msg_idem_key,
    .core_limit = a_core_limit,
    .room_refusal = room_refusal,
    .dead_letter = a_dead_letter,
    .replay = a_replay,
    .member_register2 = a_member_register2,
    .login2 = a_login2,
    .time_format = time_format_iso,
    .member_page = a_member_page,
    .msg_pos = msg_pos,
    .msg_set_pos = msg_set_pos,
    .side_replay = a_side_replay,
    .stream_heads = a_stream_heads,
};

const chatd_api *api_table(void)
{
    return &api;
}
