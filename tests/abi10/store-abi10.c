/*
 * tests/abi10/store-abi10.c - a store built against the frozen ABI 1.0
 * header (tests/abi10/chatd/plugin.h), loaded into the current core by
 * tests/core/test_abi10.c to prove that 1.0 plugins keep working.
 *
 * It keeps members and sessions in memory, accepts every persist, has no
 * history, and answers room_list with one summary per other member whose
 * fields are derived from the peer's id (so the test knows what to expect).
 *
 * Its rows are packed at the stride its records declare in `size`. With
 * `short_rows = true` it declares records that end before their last field
 * (chatd_member without created_ms, chatd_room_summary without last_read_id):
 * to a reader that is exactly what an older writer looks like once the
 * reader's record has grown, so a reader indexing by its own sizeof reads
 * every row after the first wrong.
 */
#include <chatd/plugin.h>

#if CHATD_ABI_MAJOR != 1 || CHATD_ABI_MINOR != 0
#error "store-abi10 must be built against tests/abi10/chatd/plugin.h (ABI 1.0)"
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SA_MEMBERS 16
#define SA_SESSIONS 16

typedef struct sa_member {
    int64_t id;
    char login[64], name[64], hash[256];
    int64_t created_ms;
} sa_member;

typedef struct sa_session {
    char hash[80];
    int64_t member_id, expires_ms;
} sa_session;

typedef struct sa {
    const chatd_api *api;
    chatd_ctx *ctx;
    int short_rows;
    sa_member members[SA_MEMBERS];
    size_t nmembers;
    sa_session sessions[SA_SESSIONS];
    size_t nsessions;
} sa;

static const chatd_cfg_key sa_keys[] = {
    {.name = "short_rows",
     .type = CHATD_CFG_BOOL,
     .default_value = "false",
     .help = "declare records without their last field"},
    {.name = NULL},
};

static size_t member_stride(const sa *s)
{
    return s->short_rows ? offsetof(chatd_member, created_ms) : sizeof(chatd_member);
}

static size_t room_stride(const sa *s)
{
    return s->short_rows ? offsetof(chatd_room_summary, last_read_id) : sizeof(chatd_room_summary);
}

static chatd_member member_row(const sa *s, const sa_member *m, int with_hash)
{
    chatd_member r = {.size = (uint32_t)member_stride(s),
                      .id = m->id,
                      .login_id = m->login,
                      .name = m->name,
                      .pw_hash = with_hash ? m->hash : NULL,
                      .created_ms = m->created_ms};
    return r;
}

/* Pack row i (its first `stride` bytes) into buf. */
static void pack(char *buf, size_t i, const void *row, size_t stride)
{
    memcpy(buf + i * stride, row, stride);
}

static chatd_status sa_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    sa *s = calloc(1, sizeof(*s));
    if (!s) return CHATD_ERR_NOMEM;
    s->api = api;
    s->ctx = ctx;
    s->short_rows = api->cfg_bool(ctx, "short_rows", 0); /* declared default: false */
    *inst = s;
    return CHATD_OK;
}

static void sa_destroy(void *inst)
{
    free(inst);
}

static chatd_status sa_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    sa *s = inst;
    (void)msg;
    s->api->complete(done, CHATD_OK, NULL);
    return CHATD_ASYNC;
}

static void sa_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg)
{
    sa *s = inst;
    for (size_t i = 0; i < s->nmembers; i++)
        if (strcmp(s->members[i].login, m->login_id) == 0) {
            cb(arg, CHATD_ERR_EXISTS, NULL, 0);
            return;
        }
    if (s->nmembers == SA_MEMBERS) {
        cb(arg, CHATD_ERR_BUSY, NULL, 0);
        return;
    }
    sa_member *n = &s->members[s->nmembers];
    n->id = (int64_t)++s->nmembers;
    snprintf(n->login, sizeof(n->login), "%s", m->login_id);
    snprintf(n->name, sizeof(n->name), "%s", m->name);
    snprintf(n->hash, sizeof(n->hash), "%s", m->pw_hash ? m->pw_hash : "");
    n->created_ms = INT64_C(1700000000000) + n->id;
    chatd_member row = member_row(s, n, 0);
    cb(arg, CHATD_OK, &row, 1);
}

static void sa_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb,
                          void *arg)
{
    sa *s = inst;
    for (size_t i = 0; i < s->nmembers; i++) {
        sa_member *m = &s->members[i];
        if (login_id ? strcmp(m->login, login_id) == 0 : m->id == id) {
            chatd_member row = member_row(s, m, 1);
            cb(arg, CHATD_OK, &row, 1);
            return;
        }
    }
    cb(arg, CHATD_ERR_NOTFOUND, NULL, 0);
}

static void sa_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    sa *s = inst;
    size_t stride = member_stride(s);
    char *buf = calloc(s->nmembers ? s->nmembers : 1, stride);
    if (!buf) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < s->nmembers; i++) {
        chatd_member row = member_row(s, &s->members[i], 0);
        pack(buf, i, &row, stride);
    }
    cb(arg, CHATD_OK, (const chatd_member *)(const void *)buf, s->nmembers);
    free(buf);
}

static void sa_session_put(void *inst, const chatd_session *x, chatd_status_cb cb, void *arg)
{
    sa *s = inst;
    chatd_status st = CHATD_ERR_BUSY;
    if (s->nsessions < SA_SESSIONS) {
        sa_session *n = &s->sessions[s->nsessions++];
        snprintf(n->hash, sizeof(n->hash), "%s", x->token_hash);
        n->member_id = x->member_id;
        n->expires_ms = x->expires_ms;
        st = CHATD_OK;
    }
    if (cb) cb(arg, st);
}

static void sa_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    sa *s = inst;
    for (size_t i = 0; i < s->nsessions; i++)
        if (strcmp(s->sessions[i].hash, token_hash) == 0) {
            chatd_session r = {.size = sizeof(r),
                               .token_hash = s->sessions[i].hash,
                               .member_id = s->sessions[i].member_id,
                               .expires_ms = s->sessions[i].expires_ms};
            cb(arg, CHATD_OK, &r);
            return;
        }
    cb(arg, CHATD_ERR_NOTFOUND, NULL);
}

static void sa_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg)
{
    sa *s = inst;
    for (size_t i = 0; i < s->nsessions; i++)
        if (strcmp(s->sessions[i].hash, token_hash) == 0)
            s->sessions[i] = s->sessions[--s->nsessions];
    if (cb) cb(arg, CHATD_OK);
}

/* One summary per other member p: room "low&high", last message id 1000+p,
 * text "last from LOGIN", time 5000+p, unread p, last read 100+p. */
static void sa_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    sa *s = inst;
    size_t stride = room_stride(s);
    char *buf = calloc(s->nmembers ? s->nmembers : 1, stride);
    char(*rooms)[48] = calloc(s->nmembers ? s->nmembers : 1, sizeof(*rooms));
    char(*texts)[96] = calloc(s->nmembers ? s->nmembers : 1, sizeof(*texts));
    if (!buf || !rooms || !texts) {
        free(buf);
        free(rooms);
        free(texts);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->nmembers; i++) {
        const sa_member *p = &s->members[i];
        if (p->id == member_id) continue;
        int64_t lo = p->id < member_id ? p->id : member_id;
        int64_t hi = p->id < member_id ? member_id : p->id;
        snprintf(rooms[n], sizeof(rooms[n]), "%lld&%lld", (long long)lo, (long long)hi);
        snprintf(texts[n], sizeof(texts[n]), "last from %s", p->login);
        chatd_room_summary r = {.size = (uint32_t)stride,
                                .room_id = rooms[n],
                                .member_id = member_id,
                                .peer_id = p->id,
                                .peer_login = p->login,
                                .peer_name = p->name,
                                .last_msg_id = 1000 + (uint64_t)p->id,
                                .last_message = texts[n],
                                .last_ms = 5000 + p->id,
                                .unread = p->id,
                                .last_read_id = 100 + (uint64_t)p->id};
        pack(buf, n++, &r, stride);
    }
    cb(arg, CHATD_OK, (const chatd_room_summary *)(const void *)buf, n);
    free(buf);
    free(rooms);
    free(texts);
}

static void sa_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                       chatd_history_cb cb, void *arg)
{
    (void)inst;
    (void)room_id;
    (void)before;
    (void)limit;
    cb(arg, CHATD_OK, NULL, 0, 0);
}

static const chatd_store_ops sa_ops = {
    .size = sizeof(chatd_store_ops),
    .persist = sa_persist,
    .member_create = sa_member_create,
    .member_get = sa_member_get,
    .member_list = sa_member_list,
    .session_put = sa_session_put,
    .session_get = sa_session_get,
    .session_del = sa_session_del,
    .room_list = sa_room_list,
    .history = sa_history,
};

static const chatd_plugin_desc sa_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-abi10",
    .version = "1.0", /* its own: it stands for a plugin built outside chatd */
    .description = "in-memory store built against the ABI 1.0 header (tests only)",
    .cfg_keys = sa_keys,
    .create = sa_create,
    .destroy = sa_destroy,
    .ops = &sa_ops,
};

CHATD_PLUGIN_DEFINE(sa_desc)
