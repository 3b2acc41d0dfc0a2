/*
 * core/throttle.c - counters per key (a login id, a client address) over a
 * fixed window, for the password-hashing throttles of auth.c.
 *
 * An entry counts events (failed logins, registrations) since the first one
 * of its window and the attempts still in flight (hashes queued or running).
 * A key is admitted while count + inflight is under its limit; otherwise the
 * caller is told how long until the window ends. The table is bounded
 * (throttle_max_entries): when it is full, entries whose window is over are
 * swept, and a new key that still finds no room is refused, so a flood of
 * fresh keys cannot reset the counts of the keys already held.
 *
 * A gate (throttle_gate_*) is the set of keys one attempt holds from its
 * admission until it is answered, and the Retry-After of a refused one.
 */
#include "config.h"

#include "core.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096

typedef struct tentry {
    struct tentry *next;
    int64_t start_ms; /* first event of the window */
    uint32_t count;   /* events in the window */
    uint32_t inflight;
    char key[];
} tentry;

struct throttle {
    tentry *b[BUCKETS];
    size_t n, max;
};

throttle *throttle_new(size_t max_entries)
{
    throttle *t = calloc(1, sizeof(*t));
    if (t) t->max = max_entries;
    return t;
}

void throttle_free(throttle *t)
{
    if (!t) return;
    for (size_t i = 0; i < BUCKETS; i++) {
        tentry *e = t->b[i];
        while (e) {
            tentry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(t);
}

static size_t bucket_of(const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h % BUCKETS;
}

/* An entry whose window is over and that holds nothing in flight. */
static bool spent(const tentry *e, int64_t window_ms, int64_t now)
{
    return e->inflight == 0 && now - e->start_ms >= window_ms;
}

void throttle_sweep(throttle *t, int64_t window_ms, int64_t now)
{
    for (size_t i = 0; i < BUCKETS; i++) {
        tentry **pp = &t->b[i];
        while (*pp) {
            tentry *e = *pp;
            if (spent(e, window_ms, now)) {
                *pp = e->next;
                free(e);
                t->n--;
            } else {
                pp = &e->next;
            }
        }
    }
}

/* The entry of `key`, its window restarted if over; created when `create`.
 * NULL: not there (or no room, or no memory, when creating). */
static tentry *entry(throttle *t, const char *key, int64_t window_ms, int64_t now, bool create)
{
    size_t b = bucket_of(key);
    for (tentry *e = t->b[b]; e; e = e->next)
        if (strcmp(e->key, key) == 0) {
            if (now - e->start_ms >= window_ms) {
                e->start_ms = now;
                e->count = 0;
            }
            return e;
        }
    if (!create) return NULL;
    if (t->n >= t->max) throttle_sweep(t, window_ms, now);
    if (t->n >= t->max) return NULL;
    size_t kl = strlen(key);
    tentry *e = calloc(1, sizeof(*e) + kl + 1);
    if (!e) return NULL;
    memcpy(e->key, key, kl + 1);
    e->start_ms = now;
    e->next = t->b[b];
    t->b[b] = e;
    t->n++;
    return e;
}

int64_t throttle_wait(throttle *t, const char *key, int64_t limit, int64_t window_ms, int64_t now)
{
    if (limit <= 0) return 0;
    tentry *e = entry(t, key, window_ms, now, true);
    if (!e) return window_ms; /* no room to count it: refuse, fail closed */
    if ((int64_t)e->count + e->inflight < limit) return 0;
    int64_t left = e->start_ms + window_ms - now;
    return left > 0 ? left : 1;
}

int throttle_begin(throttle *t, const char *key, int64_t window_ms, int64_t now)
{
    tentry *e = entry(t, key, window_ms, now, true);
    if (!e) return -1;
    e->inflight++;
    return 0;
}

void throttle_end(throttle *t, const char *key, bool counted, int64_t window_ms, int64_t now)
{
    tentry *e = entry(t, key, window_ms, now, counted);
    if (!e) return;
    if (e->inflight > 0) e->inflight--;
    if (counted && e->count < UINT32_MAX) e->count++;
}

void throttle_clear(throttle *t, const char *key)
{
    tentry *e = entry(t, key, INT64_MAX, 0, false);
    if (e) e->count = 0;
}

size_t throttle_size(const throttle *t)
{
    return t->n;
}

/* ---- gates ---------------------------------------------------------------- */

void throttle_gate_close(throttle *t, throttle_gate *g, bool failed)
{
    int64_t now = clock_wall_ms();
    for (int i = 0; i < g->n; i++) {
        throttle_end(t, g->key[i], failed && g->key[i][0] != 'h', g->window_ms, now);
        free(g->key[i]);
        g->key[i] = NULL;
    }
    g->n = 0;
}

int64_t throttle_gate_open(throttle *t, throttle_gate *g,
                           const char *const keys[THROTTLE_GATE_KEYS],
                           const int64_t limits[THROTTLE_GATE_KEYS], int64_t window_ms)
{
    int64_t now = clock_wall_ms(), wait = 0;
    g->window_ms = window_ms;
    for (int i = 0; i < THROTTLE_GATE_KEYS; i++) {
        if (!keys[i] || limits[i] <= 0) continue;
        int64_t w = throttle_wait(t, keys[i], limits[i], window_ms, now);
        if (w > 0 && keys[i][0] == 'h') w = 1000; /* a hash slot frees soon */
        if (w > wait) wait = w;
    }
    if (wait > 0) return wait;
    for (int i = 0; i < THROTTLE_GATE_KEYS; i++) {
        if (!keys[i] || limits[i] <= 0) continue;
        char *k = strdup(keys[i]);
        if (!k || throttle_begin(t, k, window_ms, now) != 0) {
            free(k);
            throttle_gate_close(t, g, false);
            return window_ms;
        }
        g->key[g->n++] = k;
    }
    return 0;
}

void throttle_refused(core *c, const char *what, const char *who, int64_t wait_ms,
                      uint32_t *retry_after)
{
    int64_t s = (wait_ms + 999) / 1000;
    if (retry_after) *retry_after = (uint32_t)(s < 1 ? 1 : s > 86400 ? 86400 : s);
    metrics_counter_add(c->metrics, "chatd_auth_throttled_total", "core", 1);
    log_msg(CHATD_LOG_DEBUG, NULL, "%s throttled for '%s': retry after %" PRId64 " s", what, who,
            s);
}
