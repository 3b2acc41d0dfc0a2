/*
 * core/auth.c - members and sessions: registration, login, logout and
 * bearer-token authentication.
 *
 * Passwords are hashed and verified with argon2id (libsodium
 * crypto_pwhash_str) on a small pool of worker threads, never on the loop;
 * results come back through post(). A session token is 32 random bytes
 * (64 hex chars) given to the client once; the store keeps only its
 * BLAKE2b-256 (crypto_generichash) in hex, with an expiry of session_ttl.
 * Resolved tokens are cached in memory (bounded) until they expire.
 *
 * Every hash is admitted by the throttles first (throttle.c): failed logins
 * per login id ("l:") and per client address ("a:"), registrations per
 * address ("r:"), and hashes in flight per address ("h:"). A request holds
 * its keys (a throttle_gate) from admission until it is answered.
 */
#include "config.h"

#include "core.h"

#include <inttypes.h>
#include <search.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_QUEUE_MAX 1024 /* hashing jobs waiting */
#define TOKEN_CACHE_MAX 65536
/* A cached token is re-checked with the store after this long when
 * authenticating (auth_watch.c re-checks them about every second). */
#define TOKEN_RECHECK_MS 60000
#define TOKEN_BYTES 32
#define TOKEN_HEX (TOKEN_BYTES * 2)

typedef enum { JOB_HASH, JOB_VERIFY } job_kind;

typedef struct job job;
typedef void (*job_done_fn)(job *j);

struct job {
    job *next;
    auth *a;
    job_kind kind;
    char *password;
    size_t password_len;
    char hash[crypto_pwhash_STRBYTES]; /* in: for VERIFY; out: for HASH */
    int result;                        /* 0 ok, -1 failure */
    job_done_fn done;                  /* runs on the loop */
    void *req;
};

typedef struct token_entry {
    char hash[HASH_HEX + 1];
    int64_t member_id;
    int64_t expires_ms;
    int64_t checked_ms; /* when the store last confirmed it */
} token_entry;

struct auth {
    core *core;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job *head, *tail;
    size_t queued;
    bool stopping;
    pthread_t *threads;
    unsigned nthreads;
    void *tokens; /* tsearch tree of token_entry by hash */
    size_t ntokens;
    throttle *throttle;
};

/* ------------------------------------------------------------ workers */

static void job_free(job *j)
{
    if (j->password) {
        sodium_memzero(j->password, j->password_len);
        free(j->password);
    }
    sodium_memzero(j->hash, sizeof(j->hash));
    free(j);
}

static void job_on_loop(void *arg)
{
    job *j = arg;
    metrics_counter_add(j->a->core->metrics, "chatd_auth_hashes_total", "core", 1);
    j->done(j);
    job_free(j);
}

static void *worker(void *arg)
{
    auth *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->mu);
        while (!a->head && !a->stopping)
            pthread_cond_wait(&a->cv, &a->mu);
        if (!a->head) {
            pthread_mutex_unlock(&a->mu);
            return NULL;
        }
        job *j = a->head;
        a->head = j->next;
        if (!a->head) a->tail = NULL;
        a->queued--;
        pthread_mutex_unlock(&a->mu);

        if (j->kind == JOB_HASH)
            j->result = crypto_pwhash_str(j->hash, j->password, j->password_len,
                                          crypto_pwhash_OPSLIMIT_INTERACTIVE,
                                          crypto_pwhash_MEMLIMIT_INTERACTIVE);
        else
            j->result = crypto_pwhash_str_verify(j->hash, j->password, j->password_len);
        sodium_memzero(j->password, j->password_len);

        if (post_add(&a->core->post, job_on_loop, j) != CHATD_OK) {
            /* the loop is gone; nobody waits for the answer */
            job_free(j);
        }
    }
}

/* Queue a job; 0 or -1 (full or stopping: the caller answers BUSY). */
static int job_submit(auth *a, job *j)
{
    pthread_mutex_lock(&a->mu);
    if (a->stopping || a->queued >= AUTH_QUEUE_MAX || a->nthreads == 0) {
        pthread_mutex_unlock(&a->mu);
        return -1;
    }
    j->next = NULL;
    if (a->tail)
        a->tail->next = j;
    else
        a->head = j;
    a->tail = j;
    a->queued++;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    return 0;
}

static job *job_new(auth *a, job_kind kind, const char *password, job_done_fn done, void *req)
{
    job *j = calloc(1, sizeof(*j));
    if (!j) return NULL;
    j->a = a;
    j->kind = kind;
    j->password_len = strlen(password);
    j->password = malloc(j->password_len + 1);
    if (!j->password) {
        free(j);
        return NULL;
    }
    memcpy(j->password, password, j->password_len + 1);
    j->done = done;
    j->req = req;
    return j;
}

auth *auth_new(core *c, unsigned threads)
{
    if (sodium_init() < 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "libsodium cannot be initialised");
        return NULL;
    }
    auth *a = calloc(1, sizeof(*a));
    if (!a) return NULL;
    a->core = c;
    if (!(a->throttle = throttle_new((size_t)c->cfg->throttle_max_entries))) {
        free(a);
        return NULL;
    }
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        throttle_free(a->throttle);
        free(a);
        return NULL;
    }
    if (pthread_cond_init(&a->cv, NULL) != 0) {
        pthread_mutex_destroy(&a->mu);
        throttle_free(a->throttle);
        free(a);
        return NULL;
    }
    a->threads = calloc(threads ? threads : 1, sizeof(*a->threads));
    if (!a->threads) {
        auth_free(a);
        return NULL;
    }
    for (unsigned i = 0; i < threads; i++) {
        int rc = pthread_create(&a->threads[i], NULL, worker, a);
        if (rc != 0) {
            log_msg(CHATD_LOG_ERROR, NULL, "cannot start a password hashing thread: %s",
                    strerror(rc));
            break;
        }
        a->nthreads++;
    }
    if (a->nthreads == 0) {
        auth_free(a);
        return NULL;
    }
    return a;
}

void auth_shutdown(auth *a)
{
    if (!a) return;
    pthread_mutex_lock(&a->mu);
    a->stopping = true;
    job *pending = a->head;
    a->head = a->tail = NULL;
    a->queued = 0;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    for (unsigned i = 0; i < a->nthreads; i++)
        pthread_join(a->threads[i], NULL);
    a->nthreads = 0;
    /* jobs never started: answer them as failed, on the loop thread (here) */
    while (pending) {
        job *next = pending->next;
        pending->result = -2;
        pending->done(pending);
        job_free(pending);
        pending = next;
    }
}

void auth_free(auth *a)
{
    if (!a) return;
    auth_shutdown(a);
    tdestroy(a->tokens, free);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    throttle_free(a->throttle);
    free(a->threads);
    free(a);
}

/* The client address as a throttle key part ("" when there is none). */
static const char *addr_part(const char *client_addr)
{
    return client_addr && client_addr[0] ? client_addr : NULL;
}

/* ------------------------------------------------------------ validation */

const char *auth_check_login_id(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 32) return "login id must be 1 to 32 characters";
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return "login id may contain only letters, digits, '_', '.' and '-'";
    }
    return NULL;
}

const char *auth_check_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64) return "name must be 1 to 64 bytes";
    if (!utf8_valid(s, n)) return "name is not valid UTF-8";
    return NULL;
}

const char *auth_check_password(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 8 || n > 256) return "password must be 8 to 256 bytes";
    return NULL;
}

/* ------------------------------------------------------------ tokens */

static int by_hash(const void *a, const void *b)
{
    return strcmp(((const token_entry *)a)->hash, ((const token_entry *)b)->hash);
}

static void token_hash(const char *token, char out[HASH_HEX + 1])
{
    unsigned char h[32];
    crypto_generichash(h, sizeof(h), (const unsigned char *)token, strlen(token), NULL, 0);
    sodium_bin2hex(out, HASH_HEX + 1, h, sizeof(h));
}

static bool token_ok(const char *token)
{
    if (!token || strlen(token) != TOKEN_HEX) return false;
    for (size_t i = 0; i < TOKEN_HEX; i++) {
        char c = token[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

static void token_forget(auth *a, const char *hash)
{
    token_entry key;
    snprintf(key.hash, sizeof(key.hash), "%s", hash);
    token_entry **found = tfind(&key, &a->tokens, by_hash);
    if (!found) return;
    token_entry *e = *found;
    tdelete(&key, &a->tokens, by_hash);
    free(e);
    a->ntokens--;
}

static void token_remember(auth *a, const char *hash, int64_t member_id, int64_t expires_ms)
{
    if (a->ntokens >= TOKEN_CACHE_MAX) {
        tdestroy(a->tokens, free); /* crude but bounded: start over */
        a->tokens = NULL;
        a->ntokens = 0;
    }
    token_entry *e = malloc(sizeof(*e));
    if (!e) return;
    snprintf(e->hash, sizeof(e->hash), "%s", hash);
    e->member_id = member_id;
    e->expires_ms = expires_ms;
    e->checked_ms = clock_wall_ms();
    token_entry **slot = tsearch(e, &a->tokens, by_hash);
    if (!slot) {
        free(e);
        return;
    }
    if (*slot != e) {
        (*slot)->member_id = member_id;
        (*slot)->expires_ms = expires_ms;
        (*slot)->checked_ms = e->checked_ms;
        free(e);
        return;
    }
    a->ntokens++;
}

/* For auth_watch.c: the cached tokens last confirmed before `before`. */
static struct {
    int64_t before;
    char (*out)[HASH_HEX + 1];
    size_t n, max;
} due;

static void due_visit(const void *node, VISIT v, int depth)
{
    (void)depth;
    if (v != postorder && v != leaf) return;
    const token_entry *e = *(token_entry *const *)node;
    if (due.n < due.max && e->checked_ms < due.before)
        memcpy(due.out[due.n++], e->hash, HASH_HEX + 1);
}

size_t auth_tokens_due(auth *a, int64_t before, char (*out)[HASH_HEX + 1], size_t max)
{
    due.before = before;
    due.out = out;
    due.n = 0;
    due.max = max;
    twalk(a->tokens, due_visit);
    return due.n;
}

void auth_token_confirmed(auth *a, const char *hash, int64_t expires_ms)
{
    token_entry key;
    snprintf(key.hash, sizeof(key.hash), "%s", hash);
    token_entry **found = tfind(&key, &a->tokens, by_hash);
    if (!found) return;
    (*found)->expires_ms = expires_ms;
    (*found)->checked_ms = clock_wall_ms();
}

void auth_token_drop(auth *a, const char *hash)
{
    token_forget(a, hash);
}

/* ------------------------------------------------------------ register */

typedef struct reg_req {
    core *core;
    char *login_id, *name, *password;
    char hash[crypto_pwhash_STRBYTES];
    chatd_member_cb cb;
    void *arg;
    throttle_gate gate;
    uint32_t *retry_after;
} reg_req;

static void reg_free(reg_req *r)
{
    if (r->core)
        throttle_gate_close(r->core->auth->throttle, &r->gate,
                            true); /* every registration counts */
    free(r->login_id);
    free(r->name);
    if (r->password) {
        sodium_memzero(r->password, strlen(r->password));
        free(r->password);
    }
    sodium_memzero(r->hash, sizeof(r->hash));
    free(r);
}

static void reg_created(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    reg_req *r = arg;
    if (st == CHATD_OK && n >= 1 && CHATD_HAS(chatd_member, rows, name)) {
        members_put(r->core->members, rows);
        chatd_member row = member_row_copy(rows, false);
        log_msg(CHATD_LOG_INFO, NULL, "member %" PRId64 " registered as '%s'", row.id, r->login_id);
        r->cb(r->arg, CHATD_OK, &row, 1);
    } else {
        r->cb(r->arg, st == CHATD_OK ? CHATD_ERR_INTERNAL : st, NULL, 0);
    }
    reg_free(r);
}

static void reg_hashed(job *j)
{
    reg_req *r = j->req;
    const chatd_store_ops *so = core_store(r->core);
    if (j->result != 0 || !so || !so->member_create) {
        if (j->result == -1)
            log_msg(CHATD_LOG_ERROR, NULL, "password hashing failed (out of memory?)");
        r->cb(r->arg, j->result == -1 ? CHATD_ERR_NOMEM : CHATD_ERR_UNAVAILABLE, NULL, 0);
        reg_free(r);
        return;
    }
    memcpy(r->hash, j->hash, sizeof(r->hash));
    chatd_member m = {.size = sizeof(m),
                      .login_id = r->login_id,
                      .name = r->name,
                      .pw_hash = r->hash,
                      .created_ms = clock_wall_ms()};
    so->member_create(r->core->store->inst, &m, reg_created, r);
}

static void reg_checked(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    (void)rows;
    reg_req *r = arg;
    if (st == CHATD_OK && n > 0) {
        r->cb(r->arg, CHATD_ERR_EXISTS, NULL, 0);
        reg_free(r);
        return;
    }
    if (st != CHATD_OK && st != CHATD_ERR_NOTFOUND) {
        r->cb(r->arg, st, NULL, 0);
        reg_free(r);
        return;
    }
    job *j = job_new(r->core->auth, JOB_HASH, r->password, reg_hashed, r);
    if (!j || job_submit(r->core->auth, j) != 0) {
        if (j) job_free(j);
        if (r->retry_after) *r->retry_after = 1;
        r->cb(r->arg, CHATD_ERR_BUSY, NULL, 0);
        reg_free(r);
    }
}

void auth_register(core *c, const char *login_id, const char *name, const char *password,
                   chatd_member_cb cb, void *arg)
{
    auth_register2(c, login_id, name, password, NULL, NULL, cb, arg);
}

void auth_register2(core *c, const char *login_id, const char *name, const char *password,
                    const char *client_addr, uint32_t *retry_after, chatd_member_cb cb, void *arg)
{
    if (auth_check_login_id(login_id) || auth_check_name(name) || auth_check_password(password)) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    const chatd_store_ops *so = core_store(c);
    if (!so || !so->member_get || !so->member_create) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    reg_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->login_id = strdup(login_id)) || !(r->name = strdup(name)) ||
        !(r->password = strdup(password))) {
        if (r) reg_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->core = c;
    r->cb = cb;
    r->arg = arg;
    r->retry_after = retry_after;
    const char *addr = addr_part(client_addr);
    char rk[80], hk[80];
    snprintf(rk, sizeof(rk), "r:%s", addr ? addr : "");
    snprintf(hk, sizeof(hk), "h:%s", addr ? addr : "");
    const char *keys[THROTTLE_GATE_KEYS] = {addr ? rk : NULL, addr ? hk : NULL, NULL};
    const int64_t limits[THROTTLE_GATE_KEYS] = {c->cfg->register_limit, c->cfg->max_hashes_per_addr,
                                                0};
    int64_t wait = throttle_gate_open(c->auth->throttle, &r->gate, keys, limits,
                                      c->cfg->register_window * 1000);
    if (wait > 0) {
        throttle_refused(c, "registration", addr, wait, retry_after);
        reg_free(r);
        cb(arg, CHATD_ERR_BUSY, NULL, 0);
        return;
    }
    /* refuse a taken login id before spending a hash on it */
    so->member_get(c->store->inst, 0, r->login_id, reg_checked, r);
}

/* ------------------------------------------------------------ login */

typedef struct login_req {
    core *core;
    char *password;
    chatd_member member;
    char *login_id, *name;
    chatd_login_cb cb;
    void *arg;
    char token[TOKEN_HEX + 1];
    char hash[HASH_HEX + 1];
    int64_t expires_ms;
    throttle_gate gate;
    bool failed; /* wrong password or unknown login id */
    uint32_t *retry_after;
} login_req;

static void login_free(login_req *r)
{
    if (r->core) throttle_gate_close(r->core->auth->throttle, &r->gate, r->failed);
    if (r->password) {
        sodium_memzero(r->password, strlen(r->password));
        free(r->password);
    }
    sodium_memzero(r->token, sizeof(r->token));
    free(r->login_id);
    free(r->name);
    free(r);
}

static void login_stored(void *arg, chatd_status st)
{
    login_req *r = arg;
    if (st != CHATD_OK) {
        log_msg(CHATD_LOG_WARN, r->core->store->name, "cannot store a session for '%s': %s",
                r->login_id, api_status_str(st));
        r->cb(r->arg, st, NULL, NULL);
        login_free(r);
        return;
    }
    token_remember(r->core->auth, r->hash, r->member.id, r->expires_ms);
    r->member.login_id = r->login_id;
    r->member.name = r->name;
    r->member.pw_hash = NULL;
    r->cb(r->arg, CHATD_OK, r->token, &r->member);
    login_free(r);
}

static void login_verified(job *j)
{
    login_req *r = j->req;
    r->failed = j->result == -1;
    if (j->result == 0) {
        char lk[80];
        snprintf(lk, sizeof(lk), "l:%s", r->login_id);
        throttle_clear(r->core->auth->throttle, lk);
    }
    if (j->result != 0) {
        r->cb(r->arg, j->result == -2 ? CHATD_ERR_UNAVAILABLE : CHATD_ERR_AUTH, NULL, NULL);
        login_free(r);
        return;
    }
    const chatd_store_ops *so = core_store(r->core);
    if (!so || !so->session_put) {
        r->cb(r->arg, CHATD_ERR_UNAVAILABLE, NULL, NULL);
        login_free(r);
        return;
    }
    unsigned char raw[TOKEN_BYTES];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(r->token, sizeof(r->token), raw, sizeof(raw));
    sodium_memzero(raw, sizeof(raw));
    token_hash(r->token, r->hash);
    r->expires_ms = clock_wall_ms() + r->core->cfg->session_ttl * 1000;
    chatd_session s = {.size = sizeof(s),
                       .token_hash = r->hash,
                       .member_id = r->member.id,
                       .expires_ms = r->expires_ms};
    so->session_put(r->core->store->inst, &s, login_stored, r);
}

/* Unknown login id: a hash of the given password was computed anyway, so
 * that both cases take the same time; answer like a wrong password. */
static void login_unknown(job *j)
{
    login_req *r = j->req;
    r->failed = j->result != -2;
    r->cb(r->arg, j->result == -2 ? CHATD_ERR_UNAVAILABLE : CHATD_ERR_AUTH, NULL, NULL);
    login_free(r);
}

static void login_found(void *arg, chatd_status st, const chatd_member *rows, size_t n)
{
    login_req *r = arg;
    if (st != CHATD_OK && st != CHATD_ERR_NOTFOUND) {
        r->cb(r->arg, st, NULL, NULL);
        login_free(r);
        return;
    }
    chatd_member row = member_row_copy(st == CHATD_OK && n >= 1 ? rows : NULL, true);
    bool known = row.pw_hash && row.name;
    job *j = known ? job_new(r->core->auth, JOB_VERIFY, r->password, login_verified, r)
                   : job_new(r->core->auth, JOB_HASH, r->password, login_unknown, r);
    if (!j || (known && !(r->name = strdup(row.name)))) {
        if (j) job_free(j);
        r->cb(r->arg, CHATD_ERR_NOMEM, NULL, NULL);
        login_free(r);
        return;
    }
    if (known) {
        r->member = row;
        snprintf(j->hash, sizeof(j->hash), "%s", row.pw_hash);
        members_put(r->core->members, rows);
    }
    if (job_submit(r->core->auth, j) != 0) {
        job_free(j);
        if (r->retry_after) *r->retry_after = 1;
        r->cb(r->arg, CHATD_ERR_BUSY, NULL, NULL);
        login_free(r);
    }
}

void auth_login(core *c, const char *login_id, const char *password, chatd_login_cb cb, void *arg)
{
    auth_login2(c, login_id, password, NULL, NULL, cb, arg);
}

void auth_login2(core *c, const char *login_id, const char *password, const char *client_addr,
                 uint32_t *retry_after, chatd_login_cb cb, void *arg)
{
    if (auth_check_login_id(login_id) || !password || strlen(password) > 256) {
        cb(arg, CHATD_ERR_AUTH, NULL, NULL);
        return;
    }
    const chatd_store_ops *so = core_store(c);
    if (!so || !so->member_get) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, NULL);
        return;
    }
    login_req *r = calloc(1, sizeof(*r));
    if (!r || !(r->password = strdup(password)) || !(r->login_id = strdup(login_id))) {
        if (r) login_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, NULL);
        return;
    }
    r->core = c;
    r->cb = cb;
    r->arg = arg;
    r->retry_after = retry_after;
    const char *addr = addr_part(client_addr);
    char lk[80], ak[80], hk[80];
    snprintf(lk, sizeof(lk), "l:%s", login_id);
    snprintf(ak, sizeof(ak), "a:%s", addr ? addr : "");
    snprintf(hk, sizeof(hk), "h:%s", addr ? addr : "");
    const char *keys[THROTTLE_GATE_KEYS] = {lk, addr ? ak : NULL, addr ? hk : NULL};
    const int64_t limits[THROTTLE_GATE_KEYS] = {c->cfg->login_fail_limit, c->cfg->login_fail_limit,
                                                c->cfg->max_hashes_per_addr};
    int64_t wait = throttle_gate_open(c->auth->throttle, &r->gate, keys, limits,
                                      c->cfg->login_fail_window * 1000);
    if (wait > 0) {
        throttle_refused(c, "login", login_id, wait, retry_after);
        login_free(r);
        cb(arg, CHATD_ERR_BUSY, NULL, NULL);
        return;
    }
    so->member_get(c->store->inst, 0, r->login_id, login_found, r);
}

/* ------------------------------------------------------------ logout */

void auth_logout(core *c, const char *token, chatd_status_cb cb, void *arg)
{
    if (!token_ok(token)) {
        if (cb) cb(arg, CHATD_ERR_AUTH);
        return;
    }
    char hash[HASH_HEX + 1];
    token_hash(token, hash);
    token_forget(c->auth, hash);
    const chatd_store_ops *so = core_store(c);
    if (!so || !so->session_del) {
        if (cb) cb(arg, CHATD_ERR_UNAVAILABLE);
        return;
    }
    so->session_del(c->store->inst, hash, cb, arg);
}

/* ------------------------------------------------------------ authenticate */

typedef struct authn_req {
    core *core;
    char hash[HASH_HEX + 1];
    chatd_member_cb cb;
    void *arg;
} authn_req;

static void authn_member(void *arg, chatd_status st, const member_entry *m)
{
    authn_req *r = arg;
    members_answer(r->cb, r->arg, st == CHATD_ERR_NOTFOUND ? CHATD_ERR_AUTH : st, m);
    free(r);
}

static void authn_session(void *arg, chatd_status st, const chatd_session *s)
{
    authn_req *r = arg;
    if (st == CHATD_ERR_NOTFOUND || (st == CHATD_OK && (!s || s->expires_ms <= clock_wall_ms()))) {
        r->cb(r->arg, CHATD_ERR_AUTH, NULL, 0);
        free(r);
        return;
    }
    if (st != CHATD_OK) {
        r->cb(r->arg, st, NULL, 0);
        free(r);
        return;
    }
    token_remember(r->core->auth, r->hash, s->member_id, s->expires_ms);
    members_get(r->core, s->member_id, authn_member, r);
}

void auth_authenticate(core *c, const char *token, chatd_member_cb cb, void *arg)
{
    if (!token_ok(token)) {
        cb(arg, CHATD_ERR_AUTH, NULL, 0);
        return;
    }
    authn_req *r = calloc(1, sizeof(*r));
    if (!r) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    r->core = c;
    r->cb = cb;
    r->arg = arg;
    token_hash(token, r->hash);
    token_entry key;
    memcpy(key.hash, r->hash, sizeof(key.hash));
    token_entry **found = tfind(&key, &c->auth->tokens, by_hash);
    if (found) {
        int64_t now = clock_wall_ms();
        if ((*found)->expires_ms <= now) {
            token_forget(c->auth, r->hash);
            cb(arg, CHATD_ERR_AUTH, NULL, 0);
            free(r);
            return;
        }
        if (now - (*found)->checked_ms < TOKEN_RECHECK_MS) {
            members_get(c, (*found)->member_id, authn_member, r);
            return;
        }
        token_forget(c->auth, r->hash); /* stale: ask the store again */
    }
    const chatd_store_ops *so = core_store(c);
    if (!so || !so->session_get) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        free(r);
        return;
    }
    so->session_get(c->store->inst, r->hash, authn_session, r);
}
