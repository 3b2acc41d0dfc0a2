/*
 * core/metrics.c - counters and gauges per plugin instance, the core's
 * latency histograms, and their rendering in the Prometheus text format.
 *
 * Series are kept in one array sorted by (name, instance), so rendering
 * groups each metric name under a single "# TYPE" line. The number of
 * series is bounded (METRICS_MAX); beyond it new series are dropped and
 * counted in chatd_metrics_dropped_total.
 */
#include "config.h"

#include "core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX 4096

typedef enum { SERIES_COUNTER, SERIES_GAUGE } series_type;

typedef struct series {
    char *name;
    char *instance;
    series_type type;
    uint64_t counter;
    int64_t gauge;
} series;

/* Latency buckets in ms (upper bounds); +Inf is implicit. */
static const double bucket_ms[] = {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000};
#define NBUCKETS (sizeof(bucket_ms) / sizeof(bucket_ms[0]))

typedef struct histogram {
    const char *name;
    const char *help;
    uint64_t buckets[NBUCKETS];
    uint64_t count;
    double sum;
} histogram;

struct metrics {
    series *s;
    size_t n, cap;
    uint64_t dropped;
    histogram hist[METRIC_HIST_COUNT];
};

metrics *metrics_new(void)
{
    metrics *m = calloc(1, sizeof(*m));
    if (!m) return NULL;
    m->hist[METRIC_HIST_QUEUE].name = "chatd_queue_latency_ms";
    m->hist[METRIC_HIST_QUEUE].help =
        "time from enqueue to the queue reporting the message durable";
    m->hist[METRIC_HIST_STORE].name = "chatd_store_latency_ms";
    m->hist[METRIC_HIST_STORE].help = "time from persist to the store reporting it committed";
    return m;
}

void metrics_free(metrics *m)
{
    if (!m) return;
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

/* Find or insert; NULL when full or on a bad name. */
static series *find(metrics *m, const char *name, const char *instance, series_type type)
{
    if (!name_ok(name) || !instance) return NULL;
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int r = cmp(&m->s[mid], name, instance);
        if (r == 0) return m->s[mid].type == type ? &m->s[mid] : NULL;
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
    for (size_t i = 0; i < NBUCKETS; i++)
        if (ms <= bucket_ms[i]) h->buckets[i]++;
    h->count++;
    h->sum += ms;
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
        for (size_t b = 0; b < NBUCKETS; b++)
            out(fn, arg, "%s_bucket{le=\"%g\"} %llu\n", hi->name, bucket_ms[b],
                (unsigned long long)hi->buckets[b]);
        out(fn, arg, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.3f\n%s_count %llu\n", hi->name,
            (unsigned long long)hi->count, hi->name, hi->sum, hi->name,
            (unsigned long long)hi->count);
    }
    out(fn, arg, "# TYPE chatd_metrics_dropped_total counter\nchatd_metrics_dropped_total %llu\n",
        (unsigned long long)m->dropped);
}
