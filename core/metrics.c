/*
 * core/metrics.c - counters and gauges per plugin instance, the core's
 * latency histograms, and their rendering in the Prometheus text format.
 *
 * Series are kept in one array sorted by (name, instance), so rendering
 * groups each metric name under a single "# TYPE" line; a small cache keyed
 * by the callers' string pointers finds the series of a repeated update
 * without the search. The number of
 * series is bounded (METRICS_MAX); beyond it new series are dropped and
 * counted in chatd_metrics_dropped_total.
 *
 * Loop lag (chatd_loop_lag_seconds): a periodic timer of LAG_PERIOD_NS on
 * the loop measures, with the monotonic clock, how late each of its ticks
 * runs after its due time: anything that holds the loop shows up there. On
 * Linux the ticks come from a timerfd (the kernel's precise timer, so the
 * measure is not the coarse clock libevent schedules its timers with); a
 * tick the loop missed is observed with its own lateness.
 */
#include "config.h"

#include "core.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/timerfd.h>
#endif

#define METRICS_MAX 4096

/* Slots of the lookup cache: a series found by the same name and instance
 * pointers (the callers' string literals and instance names) is found again
 * without the search, after a check of both strings. */
#define METRICS_CACHE 64

typedef enum { SERIES_COUNTER, SERIES_GAUGE } series_type;

typedef struct series {
    char *name;
    char *instance;
    series_type type;
    uint64_t counter;
    int64_t gauge;
} series;

/* Bucket upper bounds, in the unit of the histogram; +Inf is implicit. */
static const double bucket_ms[] = {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
static const double bucket_lag_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                      0.025,  0.05,    0.1,    0.25,  0.5,   1};
#define NBUCKETS_MAX 16
#define NB(a) (sizeof(a) / sizeof((a)[0]))

/* The loop-lag timer's period: 20 ms. */
#define LAG_PERIOD_NS 20000000LL

typedef struct histogram {
    const char *name;
    const char *help;
    const double *bounds; /* NB <= NBUCKETS_MAX upper bounds, in the unit */
    size_t nbounds;
    double per_ms; /* units per ms observed: 1 for ms, 0.001 for seconds */
    uint64_t buckets[NBUCKETS_MAX];
    uint64_t count;
    double sum;
} histogram;

typedef struct lag_timer {
    struct event *ev;
    int fd;              /* the timerfd, -1 with the libevent timer */
    int64_t next_due_ns; /* monotonic due time of the next tick */
} lag_timer;

typedef struct cache_slot {
    const char *name, *instance; /* the pointers last looked up here */
    size_t idx;                  /* their series then (checked: inserts move series) */
} cache_slot;

struct metrics {
    series *s;
    size_t n, cap;
    uint64_t dropped;
    cache_slot cache[METRICS_CACHE];
    histogram hist[METRIC_HIST_COUNT];
    lag_timer lag;
};

static void hist_init(histogram *h, const char *name, const char *help, const double *bounds,
                      size_t nbounds, double per_ms)
{
    h->name = name;
    h->help = help;
    h->bounds = bounds;
    h->nbounds = nbounds;
    h->per_ms = per_ms;
}

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    hist_init(&m->hist[METRIC_HIST_QUEUE], "chatd_queue_latency_ms",
              "time from enqueue to the queue reporting the message durable", bucket_ms,
              NB(bucket_ms), 1);
    hist_init(&m->hist[METRIC_HIST_STORE], "chatd_store_latency_ms",
              "time from persist to the store reporting it committed", bucket_ms, NB(bucket_ms), 1);
    hist_init(&m->hist[METRIC_HIST_LOOP_LAG], "chatd_loop_lag_seconds",
              "how late a periodic timer runs on the event loop after its due time", bucket_lag_s,
              NB(bucket_lag_s), 0.001);
    m->lag.fd = -1;
    return m;
}

void metrics_free(metrics *m)
{
    if (!m) return;
    if (m->lag.ev) event_free(m->lag.ev);
    if (m->lag.fd >= 0) close(m->lag.fd);
    for (size_t i = 0; i < m->n; i++) {
        free(m->s[i].name);
        free(m->s[i].instance);
    }
    free(m->s);
    free(m);
}

static bool name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 128) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
        if (!alpha && !(p != s && c >= '0' && c <= '9')) return false;
    }
    return true;
}

static int cmp(const series *a, const char *name, const char *instance)
{
    int r = strcmp(a->name, name);
    return r ? r : strcmp(a->instance, instance);
}

/* Find or insert; NULL when full or on a bad name. Every call runs on the
 * loop thread (chatd_api.counter_add, gauge_set), so is the cache. */
static series *find(metrics *m, const char *name, const char *instance, series_type type)
{
    if (!name || !instance) return NULL;
    cache_slot *c =
        &m->cache[(((uintptr_t)name >> 3) ^ ((uintptr_t)instance >> 3) * 31) % METRICS_CACHE];
    if (c->name == name && c->instance == instance && c->idx < m->n &&
        cmp(&m->s[c->idx], name, instance) == 0) /* the same strings: a valid name */
        return m->s[c->idx].type == type ? &m->s[c->idx] : NULL;
    if (!name_ok(name)) return NULL;
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = cmp(&m->s[mid], name, instance);
        if (r == 0) {
            *c = (cache_slot){.name = name, .instance = instance, .idx = mid};
            return m->s[mid].type == type ? &m->s[mid] : NULL;
        }
        if (r < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (m->n >= METRICS_MAX) {
        m->dropped++;
        return NULL;
    }
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        series *ns = realloc(m->s, cap * sizeof(*ns));
        if (!ns) return NULL;
        m->s = ns;
        m->cap = cap;
    }
    series nw = {.name = strdup(name), .instance = strdup(instance), .type = type};
    if (!nw.name || !nw.instance) {
        free(nw.name);
        free(nw.instance);
        return NULL;
    }
    memmove(&m->s[lo + 1], &m->s[lo], (m->n - lo) * sizeof(*m->s));
    m->s[lo] = nw;
    m->n++;
    return &m->s[lo];
}

int metrics_counter_add(metrics *m, const char *name, const char *instance, uint64_t delta)
{
    series *s = find(m, name, instance, SERIES_COUNTER);
    if (!s) return -1;
    s->counter += delta;
    return 0;
}

int metrics_gauge_set(metrics *m, const char *name, const char *instance, int64_t value)
{
    series *s = find(m, name, instance, SERIES_GAUGE);
    if (!s) return -1;
    s->gauge = value;
    return 0;
}

void metrics_observe(metrics *m, int which, double ms)
{
    if (which < 0 || which >= METRIC_HIST_COUNT) return;
    histogram *h = &m->hist[which];
    double v = ms * h->per_ms;
    for (size_t i = 0; i < h->nbounds; i++)
        if (v <= h->bounds[i]) h->buckets[i]++;
    h->count++;
    h->sum += v;
}

/* ------------------------------------------------------------ loop lag */

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Observe every tick due by now, each with its own lateness. */
static void lag_observe_due(metrics *m)
{
    int64_t now = mono_ns();
    while (m->lag.next_due_ns <= now) {
        metrics_observe(m, METRIC_HIST_LOOP_LAG, (double)(now - m->lag.next_due_ns) / 1e6);
        m->lag.next_due_ns += LAG_PERIOD_NS;
    }
}

static void lag_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    metrics *m = arg;
    if (m->lag.fd >= 0) {
        uint64_t expirations;
        if (read(fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
            log_msg(CHATD_LOG_WARN, NULL, "loop lag timer: read failed: %s", strerror(errno));
    }
    lag_observe_due(m);
}

int metrics_lag_start(metrics *m, struct event_base *base)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)(LAG_PERIOD_NS / 1000)};
    m->lag.next_due_ns = mono_ns() + LAG_PERIOD_NS;
#ifdef __linux__
    m->lag.fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (m->lag.fd >= 0) {
        struct itimerspec its = {
            .it_interval = {.tv_sec = 0, .tv_nsec = (long)LAG_PERIOD_NS},
            .it_value = {.tv_sec = (time_t)(m->lag.next_due_ns / 1000000000LL),
                         .tv_nsec = (long)(m->lag.next_due_ns % 1000000000LL)}};
        if (timerfd_settime(m->lag.fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) {
            close(m->lag.fd);
            m->lag.fd = -1;
        }
    }
#endif
    if (m->lag.fd >= 0)
        m->lag.ev = event_new(base, m->lag.fd, EV_READ | EV_PERSIST, lag_tick, m);
    else /* libevent's own timer, rescheduled from each tick's due time */
        m->lag.ev = event_new(base, -1, EV_PERSIST, lag_tick, m);
    if (!m->lag.ev || event_add(m->lag.ev, m->lag.fd >= 0 ? NULL : &tv) != 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "cannot start the loop lag timer (out of memory?)");
        return -1;
    }
    return 0;
}

/* Print through fn with a bounded buffer. */
static void out(chatd_write_fn fn, void *arg, const char *fmt, ...) CHATD_PRINTF(3, 4);
static void out(chatd_write_fn fn, void *arg, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0) return;
    fn(arg, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
}

/* Label values come from config section names (A-Z a-z 0-9 _ -) and, for
 * "instance/kind" pairs, the core; split "core/kind" into two labels. */
static void labels(char *buf, size_t size, const char *instance)
{
    const char *slash = strchr(instance, '/');
    if (slash)
        snprintf(buf, size, "instance=\"%.*s\",kind=\"%s\"", (int)(slash - instance), instance,
                 slash + 1);
    else
        snprintf(buf, size, "instance=\"%s\"", instance);
}

void metrics_render(metrics *m, chatd_write_fn fn, void *arg)
{
    const char *last = "";
    for (size_t i = 0; i < m->n; i++) {
        series *s = &m->s[i];
        if (strcmp(s->name, last) != 0) {
            out(fn, arg, "# TYPE %s %s\n", s->name,
                s->type == SERIES_COUNTER ? "counter" : "gauge");
            last = s->name;
        }
        char lb[256];
        labels(lb, sizeof(lb), s->instance);
        if (s->type == SERIES_COUNTER)
            out(fn, arg, "%s{%s} %llu\n", s->name, lb, (unsigned long long)s->counter);
        else
            out(fn, arg, "%s{%s} %lld\n", s->name, lb, (long long)s->gauge);
    }
    for (int h = 0; h < METRIC_HIST_COUNT; h++) {
        histogram *hi = &m->hist[h];
        out(fn, arg, "# HELP %s %s\n# TYPE %s histogram\n", hi->name, hi->help, hi->name);
        for (size_t b = 0; b < hi->nbounds; b++)
            out(fn, arg, "%s_bucket{le=\"%g\"} %llu\n", hi->name, hi->bounds[b],
                (unsigned long long)hi->buckets[b]);
        out(fn, arg, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.6f\n%s_count %llu\n", hi->name,
            (unsigned long long)hi->count, hi->name, hi->sum, hi->name,
            (unsigned long long)hi->count);
    }
    out(fn, arg, "# TYPE chatd_metrics_dropped_total counter\nchatd_metrics_dropped_total %llu\n",
        (unsigned long long)m->dropped);
}
