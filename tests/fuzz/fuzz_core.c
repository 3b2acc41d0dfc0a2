/*
 * fuzz_core.c - the server side of the transport-ws fuzz targets (see
 * fuzz_core.h): one transport-ws instance on the shared test core, its
 * section checked against the plugin's own key table (so every limit is the
 * production default), and a fixed world of three members answering the
 * member, session, room, history and publish calls, at once or later through
 * post(). Published messages are delivered back through the transport's
 * deliver hook, as the core does. The client side is fuzz_client.c.
 */
#include "config.h"

#include "fuzz_core.h"

#include "core.h"
#include "testcore.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sanitizer/common_interface_defs.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

const chatd_plugin_desc *chatd_plugin_entry(void);

static struct {
    int started;
    int async; /* answer through post() instead of before returning */
    int hold;  /* keep those answers until fz_hold(0) */
    chatd_ctx *ctx;
    chatd_api api;
    const chatd_plugin_desc *desc;
    void *inst;
    struct sockaddr_in addr;
    char dir[256];
    long conns;
    uint64_t next_id;
} fz;

static const chatd_member world[] = {
    {.size = sizeof(chatd_member), .id = 1, .login_id = "alice", .name = "Alice"},
    {.size = sizeof(chatd_member), .id = 2, .login_id = "bob", .name = "Bob"},
    {.size = sizeof(chatd_member), .id = 3, .login_id = "carol", .name = "Carol"},
};
#define NWORLD (sizeof(world) / sizeof(world[0]))

void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s:%d: check failed: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    /* also where the sanitizers report, which survives -close_fd_mask=2 */
    char msg[512];
    va_start(ap, fmt);
    int n = snprintf(msg, sizeof(msg), "fuzz check failed at %s:%d: %s: ", file, line, cond);
    if (n > 0 && (size_t)n < sizeof(msg)) vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    __sanitizer_report_error_summary(msg);
    abort();
}

int64_t fz_default(const char *key)
{
    const chatd_cfg_key *k = cfg_key_match(chatd_plugin_entry()->cfg_keys, key);
    int64_t v;
    FZ_CHECK(
        k && k->default_value &&
            (cfg_parse_int(k->default_value, &v) == 0 || cfg_parse_size(k->default_value, &v) == 0),
        "transport-ws declares no numeric default for %s", key);
    return v;
}

/* ---- the world ------------------------------------------------------------ */

static const chatd_member *member_by(int64_t id, const char *login)
{
    for (size_t i = 0; i < NWORLD; i++)
        if ((login && strcmp(world[i].login_id, login) == 0) || (!login && world[i].id == id))
            return &world[i];
    return NULL;
}

static void t_authenticate_now(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg)
{
    (void)ctx;
    const chatd_member *m = NULL;
    if (token && strcmp(token, FZ_TOKEN_ALICE) == 0) m = &world[0];
    if (token && strcmp(token, FZ_TOKEN_BOB) == 0) m = &world[1];
    if (m)
        cb(arg, CHATD_OK, m, 1);
    else
        cb(arg, CHATD_ERR_AUTH, NULL, 0);
}

static void t_register_now(chatd_ctx *ctx, const char *login, const char *name, const char *pw,
                           chatd_member_cb cb, void *arg)
{
    (void)ctx;
    if (auth_check_login_id(login) || auth_check_name(name) || auth_check_password(pw)) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    if (member_by(0, login)) {
        cb(arg, CHATD_ERR_EXISTS, NULL, 0);
        return;
    }
    chatd_member m = {
        .size = sizeof(m), .id = 4, .login_id = login, .name = name, .created_ms = fz.api.now_ms()};
    cb(arg, CHATD_OK, &m, 1);
}

static void t_login_now(chatd_ctx *ctx, const char *login, const char *pw, chatd_login_cb cb,
                        void *arg)
{
    (void)ctx;
    const chatd_member *m = login ? member_by(0, login) : NULL;
    if (m && m->id == 1 && pw && strcmp(pw, FZ_PASSWORD) == 0)
        cb(arg, CHATD_OK, FZ_TOKEN_ALICE, m);
    else
        cb(arg, CHATD_ERR_AUTH, NULL, NULL);
}

static void t_logout_now(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg)
{
    (void)ctx;
    FZ_CHECK(token, "logout without a token");
    if (cb) cb(arg, CHATD_OK);
}

static void t_member_get_now(chatd_ctx *ctx, int64_t id, const char *login, chatd_member_cb cb,
                             void *arg)
{
    (void)ctx;
    const chatd_member *m = member_by(id, login);
    if (m)
        cb(arg, CHATD_OK, m, 1);
    else
        cb(arg, CHATD_ERR_NOTFOUND, NULL, 0);
}

static void t_member_list_now(chatd_ctx *ctx, chatd_member_cb cb, void *arg)
{
    (void)ctx;
    cb(arg, CHATD_OK, world, NWORLD);
}

/* One page of the fixed world: ids above after_id whose login id or name
 * starts with prefix (ASCII case folded), at most limit rows. */
static void t_member_page_now(chatd_ctx *ctx, int64_t after_id, const char *prefix, unsigned limit,
                              chatd_member_cb cb, void *arg)
{
    (void)ctx;
    chatd_member rows[NWORLD];
    size_t n = 0, pl = prefix ? strlen(prefix) : 0;
    for (size_t i = 0; i < NWORLD && n < limit; i++)
        if (world[i].id > after_id && (pl == 0 || strncasecmp(world[i].login_id, prefix, pl) == 0 ||
                                       strncasecmp(world[i].name, prefix, pl) == 0))
            rows[n++] = world[i];
    cb(arg, CHATD_OK, n ? rows : NULL, n);
}

/* The real parser of room ids, then membership in the fixed world. */
static chatd_status room_of(int64_t member, const char *room, char *canon, int64_t *peer)
{
    int64_t lo, hi;
    if (!room || room_parse(room, &lo, &hi) != CHATD_OK) return CHATD_ERR_INVALID;
    if (!member_by(lo, NULL) || !member_by(hi, NULL)) return CHATD_ERR_NOTFOUND;
    if (member != lo && member != hi) return CHATD_ERR_FORBIDDEN;
    FZ_CHECK(room_format(canon, CHATD_ROOM_ID_MAX, lo, hi) > 0, "room_format");
    *peer = member == lo ? hi : lo;
    return CHATD_OK;
}

static void t_room_check_now(chatd_ctx *ctx, int64_t member, const char *room, chatd_room_cb cb,
                             void *arg)
{
    (void)ctx;
    char canon[CHATD_ROOM_ID_MAX];
    int64_t peer = 0;
    chatd_status st = room_of(member, room, canon, &peer);
    cb(arg, st, st == CHATD_OK ? canon : NULL, peer);
}

static void t_room_list_now(chatd_ctx *ctx, int64_t member, chatd_rooms_cb cb, void *arg)
{
    (void)ctx;
    const chatd_member *peer = member == 1 ? &world[1] : &world[0];
    chatd_room_summary r = {.size = sizeof(r),
                            .room_id = member == 1 ? "1&2" : "1&3",
                            .member_id = member,
                            .peer_id = peer->id,
                            .peer_login = peer->login_id,
                            .peer_name = peer->name,
                            .last_msg_id = 42,
                            .last_message = "hi \"there\"",
                            .last_ms = 1704067260000,
                            .unread = 1,
                            .last_read_id = 41};
    cb(arg, CHATD_OK, &r, 1);
}

static void t_history_now(chatd_ctx *ctx, int64_t member, const char *room, uint64_t before,
                          unsigned limit, chatd_history_cb cb, void *arg)
{
    (void)ctx;
    char canon[CHATD_ROOM_ID_MAX];
    int64_t peer;
    chatd_status st = room_of(member, room, canon, &peer);
    FZ_CHECK(limit > 0, "history with limit 0");
    if (st != CHATD_OK) {
        cb(arg, st, NULL, 0, 0);
        return;
    }
    chatd_msg *msgs[3];
    size_t n = 0;
    uint64_t top = before ? before : 1000;
    for (uint64_t id = top > 3 ? top - 3 : 1; id < top && n < limit && n < 3; id++) {
        chatd_msg_fields f = {.size = sizeof(f),
                              .kind = CHATD_MSG_CHAT,
                              .id = id,
                              .room_id = canon,
                              .writer_id = member,
                              .writer = member_by(member, NULL)->login_id,
                              .text = "line\n\"x\"\\",
                              .text_len = 9,
                              .time_ms = 1704067200000 + (int64_t)id};
        FZ_CHECK((msgs[n] = fz.api.msg_new(fz.ctx, &f)) != NULL, "msg_new");
        n++;
    }
    cb(arg, CHATD_OK, msgs, n, n && top > 4 ? top - 3 : 0);
    for (size_t i = 0; i < n; i++)
        fz.api.msg_unref(msgs[i]);
}

static void deliver_task(void *arg)
{
    chatd_msg *m = arg;
    char dest[64];
    snprintf(dest, sizeof(dest), "/sub/chat/room/%s", msg_room(m));
    const chatd_transport_ops *ops = fz.desc->ops;
    ops->deliver(fz.inst, dest, m);
    fz.api.msg_unref(m);
}

static void t_publish_now(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg)
{
    (void)ctx;
    const chatd_member *w = member_by(f->writer_id, NULL);
    char canon[CHATD_ROOM_ID_MAX];
    int64_t peer;
    FZ_CHECK(w, "publish from writer %lld, who is not authenticated", (long long)f->writer_id);
    chatd_status st = room_of(f->writer_id, f->room_id, canon, &peer);
    if (st != CHATD_OK) {
        cb(arg, st, "not a room of yours", NULL);
        return;
    }
    chatd_msg_fields g = *f;
    g.size = sizeof(g);
    g.id = ++fz.next_id;
    g.writer = w->login_id;
    g.room_id = canon;
    g.time_ms = fz.api.now_ms();
    if (g.kind == CHATD_MSG_CHAT && g.text_len > 4096) {
        cb(arg, CHATD_ERR_INVALID, "message too long", NULL);
        return;
    }
    chatd_msg *m = fz.api.msg_new(fz.ctx, &g);
    if (!m) {
        cb(arg, CHATD_ERR_INVALID, "invalid message", NULL);
        return;
    }
    cb(arg, CHATD_OK, NULL, m);
    if (fz.api.post(fz.ctx, deliver_task, m) != CHATD_OK) fz.api.msg_unref(m);
}

/* ---- answers through post() (fz_set_async) --------------------------------- */

enum {
    L_AUTH,
    L_REGISTER,
    L_LOGIN,
    L_LOGOUT,
    L_MGET,
    L_MLIST,
    L_MPAGE,
    L_RCHECK,
    L_RLIST,
    L_HIST,
    L_PUB
};

typedef struct later {
    struct later *next;
    int op;
    char *s[3];
    size_t len;
    int64_t i;
    uint64_t u;
    unsigned n;
    chatd_msg_fields f;
    void (*cb)(void);
    void *arg;
} later;

void fz_set_async(int on)
{
    fz.async = on;
}

static char *dup_or_null(const char *s, size_t len)
{
    if (!s) return NULL;
    char *d = malloc(len + 1);
    FZ_CHECK(d, "out of memory");
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

static void run_later(void *arg)
{
    later *l = arg;
    chatd_ctx *c = fz.ctx;
    switch (l->op) {
    case L_AUTH:
        t_authenticate_now(c, l->s[0], (chatd_member_cb)l->cb, l->arg);
        break;
    case L_REGISTER:
        t_register_now(c, l->s[0], l->s[1], l->s[2], (chatd_member_cb)l->cb, l->arg);
        break;
    case L_LOGIN:
        t_login_now(c, l->s[0], l->s[1], (chatd_login_cb)l->cb, l->arg);
        break;
    case L_LOGOUT:
        t_logout_now(c, l->s[0], (chatd_status_cb)l->cb, l->arg);
        break;
    case L_MGET:
        t_member_get_now(c, l->i, l->s[0], (chatd_member_cb)l->cb, l->arg);
        break;
    case L_MLIST:
        t_member_list_now(c, (chatd_member_cb)l->cb, l->arg);
        break;
    case L_MPAGE:
        t_member_page_now(c, l->i, l->s[0], l->n, (chatd_member_cb)l->cb, l->arg);
        break;
    case L_RCHECK:
        t_room_check_now(c, l->i, l->s[0], (chatd_room_cb)l->cb, l->arg);
        break;
    case L_RLIST:
        t_room_list_now(c, l->i, (chatd_rooms_cb)l->cb, l->arg);
        break;
    case L_HIST:
        t_history_now(c, l->i, l->s[0], l->u, l->n, (chatd_history_cb)l->cb, l->arg);
        break;
    case L_PUB:
        l->f.room_id = l->s[0];
        l->f.text = l->s[1];
        l->f.writer = l->s[2];
        t_publish_now(c, &l->f, (chatd_publish_cb)l->cb, l->arg);
        break;
    }
    for (int k = 0; k < 3; k++)
        free(l->s[k]);
    free(l);
}

static later *later_new(int op, void (*cb)(void), void *arg, const char *s0, const char *s1,
                        const char *s2)
{
    later *l = calloc(1, sizeof(*l));
    FZ_CHECK(l, "out of memory");
    l->op = op;
    l->cb = cb;
    l->arg = arg;
    l->s[0] = dup_or_null(s0, s0 ? strlen(s0) : 0);
    l->s[1] = dup_or_null(s1, s1 ? strlen(s1) : 0);
    l->s[2] = dup_or_null(s2, s2 ? strlen(s2) : 0);
    return l;
}

static later *held, **held_end = &held;

static void post_later(later *l)
{
    if (fz.hold) {
        *held_end = l;
        held_end = &l->next;
        return;
    }
    FZ_CHECK(fz.api.post(fz.ctx, run_later, l) == CHATD_OK, "post");
}

void fz_hold(int on)
{
    fz.hold = on;
    if (on) return;
    later *l = held;
    held = NULL;
    held_end = &held;
    while (l) {
        later *next = l->next;
        l->next = NULL;
        post_later(l);
        l = next;
    }
}

#define CB(f) ((void (*)(void))(f))

static void t_authenticate(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg)
{
    if (!fz.async) {
        t_authenticate_now(ctx, token, cb, arg);
        return;
    }
    post_later(later_new(L_AUTH, CB(cb), arg, token, NULL, NULL));
}

static void t_register(chatd_ctx *ctx, const char *login, const char *name, const char *pw,
                       chatd_member_cb cb, void *arg)
{
    if (!fz.async) {
        t_register_now(ctx, login, name, pw, cb, arg);
        return;
    }
    post_later(later_new(L_REGISTER, CB(cb), arg, login, name, pw));
}

static void t_login(chatd_ctx *ctx, const char *login, const char *pw, chatd_login_cb cb, void *arg)
{
    if (!fz.async) {
        t_login_now(ctx, login, pw, cb, arg);
        return;
    }
    post_later(later_new(L_LOGIN, CB(cb), arg, login, pw, NULL));
}

static void t_logout(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg)
{
    if (!fz.async) {
        t_logout_now(ctx, token, cb, arg);
        return;
    }
    post_later(later_new(L_LOGOUT, CB(cb), arg, token, NULL, NULL));
}

static void t_member_get(chatd_ctx *ctx, int64_t id, const char *login, chatd_member_cb cb,
                         void *arg)
{
    if (!fz.async) {
        t_member_get_now(ctx, id, login, cb, arg);
        return;
    }
    later *l = later_new(L_MGET, CB(cb), arg, login, NULL, NULL);
    l->i = id;
    post_later(l);
}

static void t_member_list(chatd_ctx *ctx, chatd_member_cb cb, void *arg)
{
    if (!fz.async) {
        t_member_list_now(ctx, cb, arg);
        return;
    }
    post_later(later_new(L_MLIST, CB(cb), arg, NULL, NULL, NULL));
}

static void t_member_page(chatd_ctx *ctx, int64_t after_id, const char *prefix, unsigned limit,
                          chatd_member_cb cb, void *arg)
{
    if (!fz.async) {
        t_member_page_now(ctx, after_id, prefix, limit, cb, arg);
        return;
    }
    later *l = later_new(L_MPAGE, CB(cb), arg, prefix, NULL, NULL);
    l->i = after_id;
    l->n = limit;
    post_later(l);
}

static void t_room_check(chatd_ctx *ctx, int64_t member, const char *room, chatd_room_cb cb,
                         void *arg)
{
    if (!fz.async) {
        t_room_check_now(ctx, member, room, cb, arg);
        return;
    }
    later *l = later_new(L_RCHECK, CB(cb), arg, room, NULL, NULL);
    l->i = member;
    post_later(l);
}

static void t_room_list(chatd_ctx *ctx, int64_t member, chatd_rooms_cb cb, void *arg)
{
    if (!fz.async) {
        t_room_list_now(ctx, member, cb, arg);
        return;
    }
    later *l = later_new(L_RLIST, CB(cb), arg, NULL, NULL, NULL);
    l->i = member;
    post_later(l);
}

static void t_history(chatd_ctx *ctx, int64_t member, const char *room, uint64_t before,
                      unsigned limit, chatd_history_cb cb, void *arg)
{
    if (!fz.async) {
        t_history_now(ctx, member, room, before, limit, cb, arg);
        return;
    }
    later *l = later_new(L_HIST, CB(cb), arg, room, NULL, NULL);
    l->i = member;
    l->u = before;
    l->n = limit;
    post_later(l);
}

static void t_publish(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg)
{
    if (!fz.async) {
        t_publish_now(ctx, f, cb, arg);
        return;
    }
    later *l = later_new(L_PUB, CB(cb), arg, f->room_id, NULL, f->writer);
    l->f = *f;
    l->s[1] = dup_or_null(f->text, f->text_len);
    post_later(l);
}

static void t_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                      void *arg)
{
    (void)ctx;
    (void)msg;
    (void)flags;
    (void)done;
    (void)arg;
    FZ_CHECK(0, "a transport called consume");
}

static int t_healthy(chatd_ctx *ctx)
{
    (void)ctx;
    return 1;
}

static void t_gauge_set(chatd_ctx *ctx, const char *name, int64_t value)
{
    if (strcmp(name, "chatd_ws_connections") == 0) fz.conns = (long)value;
    testcore_api()->gauge_set(ctx, name, value);
}

/* ---- web root --------------------------------------------------------------- */

static const struct {
    const char *rel, *content;
} web_files[] = {
    {"/index.html", "<!doctype html><title>index</title>\n"},
    {"/app.js", "console.log('app');\n"},
    {"/sub/index.html", "<p>sub index</p>\n"},
    {"/style.css", ""},
};

const char *fz_web_file(const char *rel)
{
    for (size_t i = 0; i < sizeof(web_files) / sizeof(web_files[0]); i++)
        if (strcmp(web_files[i].rel, rel) == 0) return web_files[i].content;
    return NULL;
}

static void put_file(const char *path, const char *content)
{
    FILE *f = fopen(path, "w");
    FZ_CHECK(f && fputs(content, f) >= 0 && fclose(f) == 0, "cannot write %s", path);
}

static void cleanup(void)
{
    if (fz.inst) fz.desc->destroy(fz.inst);
    fz.inst = NULL;
    if (fz.dir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fz.dir);
        if (system(cmd) != 0) fprintf(stderr, "fuzz: cannot remove %s\n", fz.dir);
    }
}

static void make_web_root(void)
{
    const char *tmp = getenv("TMPDIR");
    char p[512];
    snprintf(fz.dir, sizeof(fz.dir), "%s/chatd-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FZ_CHECK(mkdtemp(fz.dir), "mkdtemp %s: %s", fz.dir, strerror(errno));
    snprintf(p, sizeof(p), "%s/root", fz.dir);
    FZ_CHECK(mkdir(p, 0700) == 0, "mkdir");
    snprintf(p, sizeof(p), "%s/root/sub", fz.dir);
    FZ_CHECK(mkdir(p, 0700) == 0, "mkdir");
    for (size_t i = 0; i < sizeof(web_files) / sizeof(web_files[0]); i++) {
        snprintf(p, sizeof(p), "%s/root%s", fz.dir, web_files[i].rel);
        put_file(p, web_files[i].content);
    }
    snprintf(p, sizeof(p), "%s/secret.txt", fz.dir);
    put_file(p, FZ_SECRET "\n");
    snprintf(p, sizeof(p), "%s/rootsibling", fz.dir); /* a prefix of "root" plus more */
    FZ_CHECK(mkdir(p, 0700) == 0, "mkdir");
    snprintf(p, sizeof(p), "%s/rootsibling/index.html", fz.dir);
    put_file(p, FZ_SECRET "\n");
    snprintf(p, sizeof(p), "%s/root/leak.txt", fz.dir);
    FZ_CHECK(symlink("../secret.txt", p) == 0, "symlink");
    snprintf(p, sizeof(p), "%s/root/up", fz.dir);
    FZ_CHECK(symlink("..", p) == 0, "symlink");
}

void fz_start(const char *const *extra)
{
    if (fz.started) return;
    fz.started = 1;
    make_web_root();
    atexit(cleanup);

    /* a free loopback port */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t sl = sizeof(fz.addr);
    fz.addr.sin_family = AF_INET;
    fz.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    FZ_CHECK(s >= 0 && bind(s, (struct sockaddr *)&fz.addr, sizeof(fz.addr)) == 0 &&
                 getsockname(s, (struct sockaddr *)&fz.addr, &sl) == 0,
             "cannot find a free port: %s", strerror(errno));
    close(s);

    FZ_CHECK(testcore_init() == 0, "test core");
    log_set_level(getenv("FUZZ_VERBOSE") ? CHATD_LOG_DEBUG : CHATD_LOG_ERROR);
    fz.desc = chatd_plugin_entry();
    char *pairs[64];
    int np = 0;
    pairs[np] = malloc(64);
    snprintf(pairs[np++], 64, "listen=127.0.0.1:%d", ntohs(fz.addr.sin_port));
    pairs[np] = malloc(strlen(fz.dir) + 16);
    sprintf(pairs[np++], "web_root=%s/root", fz.dir);
    for (size_t i = 0; extra && extra[i] && np < 64; i++)
        pairs[np++] = strdup(extra[i]);
    fz.ctx = testcore_ctx_new("ws", fz.desc->cfg_keys, np, pairs);
    FZ_CHECK(fz.ctx, "config section");
    for (int i = 0; i < np; i++)
        free(pairs[i]);

    fz.api = *testcore_api();
    fz.api.publish = t_publish;
    fz.api.consume = t_consume;
    fz.api.member_register = t_register;
    fz.api.login = t_login;
    fz.api.logout = t_logout;
    fz.api.authenticate = t_authenticate;
    fz.api.member_get = t_member_get;
    fz.api.member_list = t_member_list;
    fz.api.member_page = t_member_page;
    fz.api.room_check = t_room_check;
    fz.api.room_list = t_room_list;
    fz.api.history = t_history;
    fz.api.healthy = t_healthy;
    fz.api.gauge_set = t_gauge_set;

    FZ_CHECK(fz.desc->create(&fz.api, fz.ctx, &fz.inst) == CHATD_OK, "create");
    FZ_CHECK(fz.desc->start(fz.inst) == CHATD_OK, "start");
}

long fz_server_conns(void)
{
    return fz.conns;
}

const struct sockaddr_in *fz_server_addr(void)
{
    return &fz.addr;
}
