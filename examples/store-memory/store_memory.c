/*
 * store_memory.c - an example chatd STORE plugin that keeps everything in
 * memory: a skeleton for writing a real store, with every hook implemented
 * and documented (what it must do, what it owns, when it answers).
 *
 * It works (chatd runs on it; restart and everything is gone), so use it to
 * try chatd without a database, or as the starting point of a store for
 * another backend: replace each hook's body with a call to that backend,
 * keep the contract written above it.
 *
 * Config:
 *     [store]
 *     plugin = store-memory
 *     max_messages = 100000
 * max_messages bounds the history kept; beyond it the oldest are forgotten.
 *
 * Threading: every hook runs on chatd's event-loop thread and must not
 * block. This store answers at once, so it calls each callback (and
 * completes each persist) before the hook returns, which the ABI allows. A
 * store with a network or disk backend instead starts the work, returns, and
 * answers later on the loop thread: from its own threads through
 * chatd_api.post(), or from libevent callbacks on chatd_api.event_base().
 *
 * Data structures are plain arrays with linear or binary search: clear, and
 * fast enough for an example; a real store uses its backend's indexes.
 */
#include <chatd/plugin.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct mem_member {
    int64_t id;
    char *login_id, *name, *pw_hash;
    int64_t created_ms;
} mem_member;

typedef struct mem_session {
    char *token_hash;
    int64_t member_id;
    int64_t expires_ms;
} mem_session;

/* One member's summary of one room. */
typedef struct mem_summary {
    int64_t member_id, peer_id;
    char *room_id;
    uint64_t last_msg_id;
    char *last_message;
    int64_t last_ms;
    int64_t unread;
    uint64_t last_read_id;
} mem_summary;

/* A growable array of fixed-size elements. */
typedef struct vec {
    void *items;
    size_t n, cap, elem;
} vec;

/* One instance; nothing global, so two instances never share data. */
typedef struct mem_store {
    const chatd_api *api;
    chatd_ctx *ctx;
    int64_t max_messages;
    int64_t next_member_id;
    vec members;   /* mem_member, ordered by id */
    vec sessions;  /* mem_session */
    vec summaries; /* mem_summary */
    vec messages;  /* chatd_msg *, CHAT only, ordered by id; one reference each */
} mem_store;

static const chatd_cfg_key mem_keys[] = {
    {.name = "max_messages",
     .type = CHATD_CFG_INT,
     .default_value = "100000",
     .min = 1,
     .max = 100000000,
     .help = "chat messages kept; the oldest are forgotten"},
    {.name = NULL},
};

/* ---- small helpers ------------------------------------------------------- */

static void vec_init(vec *v, size_t elem)
{
    v->items = NULL;
    v->n = v->cap = 0;
    v->elem = elem;
}

/* Room for one more element; returns it (uninitialised) or NULL. */
static void *vec_push(vec *v)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 16;
        void *p = realloc(v->items, cap * v->elem);
        if (!p) return NULL;
        v->items = p;
        v->cap = cap;
    }
    return (char *)v->items + v->n++ * v->elem;
}

static void *vec_at(const vec *v, size_t i)
{
    return (char *)v->items + i * v->elem;
}

static char *dup_str(const char *s)
{
    if (!s) return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static mem_member *member_by_id(mem_store *s, int64_t id)
{
    for (size_t i = 0; i < s->members.n; i++) {
        mem_member *m = vec_at(&s->members, i);
        if (m->id == id) return m;
    }
    return NULL;
}

static mem_member *member_by_login(mem_store *s, const char *login_id)
{
    for (size_t i = 0; i < s->members.n; i++) {
        mem_member *m = vec_at(&s->members, i);
        if (strcmp(m->login_id, login_id) == 0) return m;
    }
    return NULL;
}

static chatd_member member_record(const mem_member *m, bool with_hash)
{
    chatd_member r = {
        .size = sizeof(chatd_member),
        .id = m->id,
        .login_id = m->login_id,
        .name = m->name,
        .pw_hash = with_hash ? m->pw_hash : NULL,
        .created_ms = m->created_ms,
    };
    return r;
}

static mem_summary *summary_find(mem_store *s, int64_t member_id, const char *room)
{
    for (size_t i = 0; i < s->summaries.n; i++) {
        mem_summary *r = vec_at(&s->summaries, i);
        if (r->member_id == member_id && strcmp(r->room_id, room) == 0) return r;
    }
    return NULL;
}

static mem_summary *summary_get(mem_store *s, int64_t member_id, int64_t peer_id, const char *room)
{
    mem_summary *r = summary_find(s, member_id, room);
    if (r) return r;
    char *room_copy = dup_str(room);
    char *empty = dup_str("");
    r = room_copy && empty ? vec_push(&s->summaries) : NULL;
    if (!r) {
        free(room_copy);
        free(empty);
        return NULL;
    }
    *r = (mem_summary){
        .member_id = member_id, .peer_id = peer_id, .room_id = room_copy, .last_message = empty};
    return r;
}

/* Index of the first message with id >= id (binary search). */
static size_t message_lower_bound(mem_store *s, uint64_t id)
{
    const chatd_api *api = s->api;
    size_t lo = 0, hi = s->messages.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        chatd_msg *m = *(chatd_msg **)vec_at(&s->messages, mid);
        if (api->msg_id(m) < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Unread messages of `member_id` in `room`: from the peer, after last_read. */
static int64_t unread_count(mem_store *s, const char *room, int64_t member_id, uint64_t after)
{
    const chatd_api *api = s->api;
    int64_t n = 0;
    for (size_t i = message_lower_bound(s, after + 1); i < s->messages.n; i++) {
        chatd_msg *m = *(chatd_msg **)vec_at(&s->messages, i);
        if (api->msg_writer_id(m) != member_id && strcmp(api->msg_room(m), room) == 0) n++;
    }
    return n;
}

/* Copy a summary's newest message fields from msg when it is newer. */
static chatd_status summary_take_last(mem_store *s, mem_summary *r, chatd_msg *msg)
{
    const chatd_api *api = s->api;
    uint64_t id = api->msg_id(msg);
    if (id <= r->last_msg_id)
        return CHATD_OK; /* a redelivered older message does not move "last" */
    size_t len;
    const char *text = api->msg_text(msg, &len);
    char *copy = malloc(len + 1);
    if (!copy) return CHATD_ERR_NOMEM;
    memcpy(copy, text, len);
    copy[len] = '\0';
    free(r->last_message);
    r->last_message = copy;
    r->last_msg_id = id;
    r->last_ms = api->msg_time_ms(msg);
    return CHATD_OK;
}

/* ---- store hooks --------------------------------------------------------- */

/* A CHAT message: keep it (once per id) and update both members' summaries:
 * the writer has read up to it, the peer has one more unread. */
static chatd_status persist_chat(mem_store *s, chatd_msg *msg)
{
    const chatd_api *api = s->api;
    uint64_t id = api->msg_id(msg);
    size_t at = message_lower_bound(s, id);
    if (at < s->messages.n && api->msg_id(*(chatd_msg **)vec_at(&s->messages, at)) == id)
        return CHATD_OK; /* idempotent: a redelivery changes nothing */

    const char *room = api->msg_room(msg);
    int64_t a, b, writer = api->msg_writer_id(msg);
    api->msg_room_members(msg, &a, &b); /* the core checked the room */
    int64_t peer = writer == a ? b : a;
    mem_summary *mine = summary_get(s, writer, peer, room);
    mem_summary *theirs = mine ? summary_get(s, peer, writer, room) : NULL;
    if (!mine || !theirs) return CHATD_ERR_NOMEM;
    /* summary_get may move the array: look mine up again */
    mine = summary_find(s, writer, room);

    if ((int64_t)s->messages.n >= s->max_messages) {
        /* forget the oldest message (the summaries keep their copies) */
        chatd_msg *old = *(chatd_msg **)vec_at(&s->messages, 0);
        api->msg_unref(old);
        memmove(s->messages.items, vec_at(&s->messages, 1), (s->messages.n - 1) * s->messages.elem);
        s->messages.n--;
        if (at > 0) at--;
    }
    if (!vec_push(&s->messages)) return CHATD_ERR_NOMEM;
    memmove(vec_at(&s->messages, at + 1), vec_at(&s->messages, at),
            (s->messages.n - 1 - at) * s->messages.elem);
    *(chatd_msg **)vec_at(&s->messages, at) = api->msg_ref(msg); /* we keep a reference */

    if (summary_take_last(s, mine, msg) != CHATD_OK ||
        summary_take_last(s, theirs, msg) != CHATD_OK)
        return CHATD_ERR_NOMEM;
    if (id > mine->last_read_id) mine->last_read_id = id;
    mine->unread = 0; /* writing in a room means having read it */
    if (id > theirs->last_read_id) theirs->unread++;
    return CHATD_OK;
}

/* A READ event: the reader has read the room up to msg_up_to. */
static chatd_status persist_read(mem_store *s, chatd_msg *msg)
{
    const chatd_api *api = s->api;
    const char *room = api->msg_room(msg);
    int64_t reader = api->msg_writer_id(msg);
    mem_summary *r = summary_find(s, reader, room);
    if (!r) return CHATD_OK; /* nothing was ever said in this room */
    uint64_t up_to = api->msg_up_to(msg);
    if (up_to > r->last_read_id) r->last_read_id = up_to;
    r->unread = unread_count(s, room, reader, r->last_read_id);
    return CHATD_OK;
}

/*
 * persist - mandatory. Called for every consumed message the core asks to
 * persist. `msg` is borrowed: take a reference (msg_ref) to keep it, as this
 * store does. Must be idempotent by message id (queues redeliver). Complete
 * `done` exactly once, after the data is durable (a real store: after its
 * transaction commits; it may batch several messages into one commit), and
 * return CHATD_ASYNC. Returning an error instead (CHATD_ERR_BUSY at a bound)
 * means "not taken": do not complete then.
 */
static chatd_status mem_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    mem_store *s = inst;
    chatd_status st =
        s->api->msg_kind(msg) == CHATD_MSG_CHAT ? persist_chat(s, msg) : persist_read(s, msg);
    if (st != CHATD_OK)
        s->api->log(s->ctx, CHATD_LOG_ERROR, "could not persist message %llu: %s",
                    (unsigned long long)s->api->msg_id(msg), s->api->status_str(st));
    s->api->complete(done, st, st == CHATD_OK ? NULL : "store-memory could not keep it");
    return CHATD_ASYNC;
}

/*
 * member_create - create a member from m (m->id is ignored; the store
 * assigns ids, > 0). Strings in m are borrowed: copy them. Answer cb exactly
 * once with the new member (its strings are borrowed by cb only), or
 * CHATD_ERR_EXISTS when the login id is taken.
 */
static void mem_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg)
{
    mem_store *s = inst;
    if (member_by_login(s, m->login_id)) {
        cb(arg, CHATD_ERR_EXISTS, NULL, 0);
        return;
    }
    mem_member nm = {
        .id = s->next_member_id,
        .login_id = dup_str(m->login_id),
        .name = dup_str(m->name),
        .pw_hash = dup_str(m->pw_hash ? m->pw_hash : ""),
        .created_ms = m->created_ms ? m->created_ms : s->api->now_ms(),
    };
    mem_member *slot = nm.login_id && nm.name && nm.pw_hash ? vec_push(&s->members) : NULL;
    if (!slot) {
        free(nm.login_id);
        free(nm.name);
        free(nm.pw_hash);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    *slot = nm;
    s->next_member_id++;
    chatd_member r = member_record(slot, false);
    cb(arg, CHATD_OK, &r, 1);
}

/*
 * member_get - one member by id (login_id NULL) or by login id, with its
 * pw_hash (the core verifies passwords). CHATD_ERR_NOTFOUND when none.
 */
static void mem_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb,
                           void *arg)
{
    mem_store *s = inst;
    mem_member *m = login_id ? member_by_login(s, login_id) : member_by_id(s, id);
    if (!m) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL, 0);
        return;
    }
    chatd_member r = member_record(m, true);
    cb(arg, CHATD_OK, &r, 1);
}

/* member_list - every member ordered by id, without password hashes. The
 * rows array is ours; cb borrows it for the call. */
static void mem_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    mem_store *s = inst;
    size_t n = s->members.n;
    chatd_member *rows = calloc(n ? n : 1, sizeof(*rows));
    if (!rows) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < n; i++)
        rows[i] = member_record(vec_at(&s->members, i), false);
    cb(arg, CHATD_OK, rows, n);
    free(rows);
}

/* Does s start with prefix, ASCII letters compared without case? */
static bool starts_nocase(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        char a = *s >= 'A' && *s <= 'Z' ? (char)(*s - 'A' + 'a') : *s;
        char b = *prefix >= 'A' && *prefix <= 'Z' ? (char)(*prefix - 'A' + 'a') : *prefix;
        if (!*s || a != b) return false;
    }
    return true;
}

/* member_page (ABI 1.4, optional) - at most `limit` members with id >
 * after_id, by id, whose login id or name starts with prefix (NULL or "":
 * all), without password hashes. A real store answers it from indexes (the
 * id, and login id / name folded to lower case) instead of this scan. */
static void mem_member_page(void *inst, int64_t after_id, const char *prefix, unsigned limit,
                            chatd_member_cb cb, void *arg)
{
    mem_store *s = inst;
    chatd_member *rows = calloc(limit ? limit : 1, sizeof(*rows));
    size_t k = 0;
    if (!rows) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    for (size_t i = 0; i < s->members.n && k < limit; i++) {
        mem_member *m = vec_at(&s->members, i);
        chatd_member r = member_record(m, false);
        if (r.id <= after_id) continue;
        if (prefix && *prefix && !starts_nocase(r.login_id, prefix) &&
            !starts_nocase(r.name, prefix))
            continue;
        rows[k++] = r;
    }
    cb(arg, CHATD_OK, rows, k);
    free(rows);
}

/* session_put - keep a login session (token hash, member, expiry), and drop
 * the expired ones. cb may be NULL when nobody waits. */
static void mem_session_put(void *inst, const chatd_session *ses, chatd_status_cb cb, void *arg)
{
    mem_store *s = inst;
    /* forget expired sessions, so the table stays bounded by live logins */
    int64_t now = s->api->now_ms();
    for (size_t i = s->sessions.n; i-- > 0;) {
        mem_session *x = vec_at(&s->sessions, i);
        if (x->expires_ms <= now) {
            free(x->token_hash);
            *x = *(mem_session *)vec_at(&s->sessions, s->sessions.n - 1);
            s->sessions.n--;
        }
    }
    char *hash = dup_str(ses->token_hash);
    mem_session *slot = hash ? vec_push(&s->sessions) : NULL;
    if (!slot) {
        free(hash);
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    *slot = (mem_session){hash, ses->member_id, ses->expires_ms};
    if (cb) cb(arg, CHATD_OK);
}

static mem_session *session_find(mem_store *s, const char *token_hash, size_t *index)
{
    for (size_t i = 0; i < s->sessions.n; i++) {
        mem_session *x = vec_at(&s->sessions, i);
        if (strcmp(x->token_hash, token_hash) == 0) {
            if (index) *index = i;
            return x;
        }
    }
    return NULL;
}

/* session_get - a session by token hash, or CHATD_ERR_NOTFOUND. Expired
 * sessions may be returned: the core checks expires_ms. */
static void mem_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    mem_store *s = inst;
    mem_session *x = session_find(s, token_hash, NULL);
    if (!x) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL);
        return;
    }
    chatd_session r = {sizeof(chatd_session), x->token_hash, x->member_id, x->expires_ms};
    cb(arg, CHATD_OK, &r);
}

/* session_del - forget a session (logout). Deleting an unknown one is OK. */
static void mem_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg)
{
    mem_store *s = inst;
    size_t i;
    mem_session *x = session_find(s, token_hash, &i);
    if (x) {
        free(x->token_hash);
        *x = *(mem_session *)vec_at(&s->sessions, s->sessions.n - 1);
        s->sessions.n--;
    }
    if (cb) cb(arg, CHATD_OK);
}

static int summary_newer_first(const void *pa, const void *pb)
{
    const chatd_room_summary *a = pa, *b = pb;
    if (a->last_ms != b->last_ms) return a->last_ms > b->last_ms ? -1 : 1;
    return a->last_msg_id > b->last_msg_id ? -1 : a->last_msg_id < b->last_msg_id;
}

/* room_list - the member's conversations, newest last message first, with
 * the peer's login and name. Rows and strings borrowed by cb. */
static void mem_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    mem_store *s = inst;
    chatd_room_summary *rows = calloc(s->summaries.n ? s->summaries.n : 1, sizeof(*rows));
    if (!rows) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    size_t n = 0;
    for (size_t i = 0; i < s->summaries.n; i++) {
        mem_summary *r = vec_at(&s->summaries, i);
        if (r->member_id != member_id) continue;
        mem_member *peer = member_by_id(s, r->peer_id);
        rows[n++] = (chatd_room_summary){
            .size = sizeof(chatd_room_summary),
            .room_id = r->room_id,
            .member_id = r->member_id,
            .peer_id = r->peer_id,
            .peer_login = peer ? peer->login_id : "",
            .peer_name = peer ? peer->name : "",
            .last_msg_id = r->last_msg_id,
            .last_message = r->last_message,
            .last_ms = r->last_ms,
            .unread = r->unread,
            .last_read_id = r->last_read_id,
        };
    }
    qsort(rows, n, sizeof(*rows), summary_newer_first);
    cb(arg, CHATD_OK, rows, n);
    free(rows);
}

/*
 * history - up to `limit` CHAT messages of a room with id < before (0: no
 * bound): the newest such messages, delivered oldest first. next_before is
 * the smallest id returned when older messages exist, else 0. The message
 * handles are borrowed by cb (a store reading a database builds them with
 * chatd_api.msg_new and unrefs them after cb returns).
 */
static void mem_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                        chatd_history_cb cb, void *arg)
{
    mem_store *s = inst;
    const chatd_api *api = s->api;
    chatd_msg **page = calloc(limit ? limit : 1, sizeof(*page));
    if (!page) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    size_t end = before ? message_lower_bound(s, before) : s->messages.n;
    size_t n = 0;
    bool older = false;
    /* walk back from the newest candidate, collecting newest first */
    for (size_t i = end; i-- > 0;) {
        chatd_msg *m = *(chatd_msg **)vec_at(&s->messages, i);
        if (strcmp(api->msg_room(m), room_id) != 0) continue;
        if (n == limit) {
            older = true;
            break;
        }
        page[n++] = m;
    }
    for (size_t i = 0; i < n / 2; i++) { /* oldest first */
        chatd_msg *t = page[i];
        page[i] = page[n - 1 - i];
        page[n - 1 - i] = t;
    }
    cb(arg, CHATD_OK, page, n, older && n ? api->msg_id(page[0]) : 0);
    free(page);
}

/* ---- descriptor hooks ---------------------------------------------------- */

/* create - read the config, allocate, but accept no work yet. */
static chatd_status mem_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    mem_store *s = calloc(1, sizeof(*s));
    if (!s) {
        api->log(ctx, CHATD_LOG_ERROR, "out of memory creating the instance");
        return CHATD_ERR_NOMEM;
    }
    s->api = api;
    s->ctx = ctx;
    /* the key table declares the default: the fallback 0 is never used */
    s->max_messages = api->cfg_int(ctx, "max_messages", 0);
    s->next_member_id = 1;
    vec_init(&s->members, sizeof(mem_member));
    vec_init(&s->sessions, sizeof(mem_session));
    vec_init(&s->summaries, sizeof(mem_summary));
    vec_init(&s->messages, sizeof(chatd_msg *));
    *inst = s;
    return CHATD_OK;
}

/* start - a store is started first (before queues and transports). A real
 * store connects, creates its schema and starts its workers here. */
static chatd_status mem_start(void *inst)
{
    mem_store *s = inst;
    s->api->log(s->ctx, CHATD_LOG_INFO,
                "in-memory store ready (keeps %lld messages; nothing survives a restart)",
                (long long)s->max_messages);
    return CHATD_OK;
}

/* stop - stores stop last. Finish what is in flight (flush the last batch),
 * then complete; return CHATD_OK when nothing is pending, as here. */
static chatd_status mem_stop(void *inst, chatd_completion *done)
{
    (void)inst;
    (void)done;
    return CHATD_OK;
}

/* destroy - free everything, including our message references. */
static void mem_destroy(void *inst)
{
    mem_store *s = inst;
    for (size_t i = 0; i < s->members.n; i++) {
        mem_member *m = vec_at(&s->members, i);
        free(m->login_id);
        free(m->name);
        free(m->pw_hash);
    }
    for (size_t i = 0; i < s->sessions.n; i++)
        free(((mem_session *)vec_at(&s->sessions, i))->token_hash);
    for (size_t i = 0; i < s->summaries.n; i++) {
        mem_summary *r = vec_at(&s->summaries, i);
        free(r->room_id);
        free(r->last_message);
    }
    for (size_t i = 0; i < s->messages.n; i++)
        s->api->msg_unref(*(chatd_msg **)vec_at(&s->messages, i));
    free(s->members.items);
    free(s->sessions.items);
    free(s->summaries.items);
    free(s->messages.items);
    free(s);
}

static const chatd_store_ops mem_ops = {
    .size = sizeof(chatd_store_ops),
    .persist = mem_persist,
    .member_create = mem_member_create,
    .member_get = mem_member_get,
    .member_list = mem_member_list,
    .session_put = mem_session_put,
    .session_get = mem_session_get,
    .session_del = mem_session_del,
    .room_list = mem_room_list,
    .history = mem_history,
    .member_page = mem_member_page,
};

static const chatd_plugin_desc mem_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-memory",
    .version = "1.0.0",
    .description = "keeps members, sessions and messages in memory (example)",
    .cfg_keys = mem_keys,
    .create = mem_create,
    .start = mem_start,
    .stop = mem_stop,
    .destroy = mem_destroy,
    .reload = NULL, /* nothing to reopen */
    .ops = &mem_ops,
};

CHATD_PLUGIN_DEFINE(mem_desc)
