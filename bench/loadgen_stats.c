/*
 * loadgen_stats.c - the load generator's measurements and output: monotonic
 * clock, log lines, the latency histogram (percentiles), server RSS and CPU
 * from /proc, and the end-of-run report (text, CSV row, timeline, histogram).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "loadgen.h"

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void logmsg(const char *fmt, ...)
{
    if (g.quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("[loadgen] ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("[loadgen] error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* ---------------------------------------------------------------- histogram */

static int hist_index(uint64_t v)
{
    if (v < H_SUB) return (int)v;
    int e = 63 - __builtin_clzll(v);
    int sub = (int)((v >> (e - H_SUB_BITS)) & (H_SUB - 1));
    return (e - H_SUB_BITS + 1) * H_SUB + sub;
}

/* highest value that falls in bucket i */
static uint64_t hist_upper(int i)
{
    if (i < H_SUB) return (uint64_t)i;
    int e = i / H_SUB + H_SUB_BITS - 1;
    uint64_t sub = (uint64_t)(i % H_SUB);
    uint64_t lo = (H_SUB | sub) << (e - H_SUB_BITS);
    return lo + (1ull << (e - H_SUB_BITS)) - 1;
}

void hist_add(struct hist *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    if (h->n == 0 || v < h->min) h->min = v;
    if (v > h->max) h->max = v;
    h->n++;
    h->sum += v;
}

static uint64_t hist_pct(const struct hist *h, double p)
{
    if (h->n == 0) return 0;
    uint64_t want = (uint64_t)((p / 100.0) * (double)h->n + 0.999999);
    if (want < 1) want = 1;
    uint64_t acc = 0;
    for (int i = 0; i < H_BUCKETS; i++) {
        acc += h->count[i];
        if (acc >= want) {
            uint64_t u = hist_upper(i);
            return u > h->max ? h->max : u;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------ helpers */

static long read_rss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtol(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat) */
static double read_proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

/* RSS of the --server-pid processes together, in KB (-1 when none can be read) */
long server_rss_kb(void)
{
    long sum = -1;
    for (int i = 0; i < g.nsrv_pids; i++) {
        long kb = read_rss_kb(g.srv_pids[i]);
        if (kb >= 0) sum = (sum < 0 ? 0 : sum) + kb;
    }
    return sum;
}

/* CPU seconds of the --server-pid processes together (a process that is gone counts 0) */
double server_cpu_s(void)
{
    double sum = 0;
    for (int i = 0; i < g.nsrv_pids; i++) {
        double s = read_proc_cpu_s(g.srv_pids[i]);
        if (s > 0) sum += s;
    }
    return sum;
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + tv.tv_usec / 1e6;
}

static double cpu_s(const struct rusage *r)
{
    return tv_s(r->ru_utime) + tv_s(r->ru_stime);
}

/* ----------------------------------------------------------------- report */

void print_report(void)
{
    double conn_s =
        g.t_connect_done > g.t_connect0 ? (double)(g.t_connect_done - g.t_connect0) / 1e9 : 0;
    uint64_t tend = g.t_pub_end ? g.t_pub_end : now_ns();
    double pub_s = g.t_pub0 && tend > g.t_pub0 ? (double)(tend - g.t_pub0) / 1e9 : 0;
    double tot_s = g.t_pub0 && g.t_end > g.t_pub0 ? (double)(g.t_end - g.t_pub0) / 1e9 : pub_s;
    uint64_t sent = 0, rcpt = 0;
    for (int i = 0; i < g.npubs; i++) {
        sent += g.pubs[i]->sent;
        rcpt += g.pubs[i]->receipted;
    }
    if (!g.ru1.ru_utime.tv_sec && !g.ru1.ru_utime.tv_usec) getrusage(RUSAGE_SELF, &g.ru1);
    double cpu = cpu_s(&g.ru1) - cpu_s(&g.ru0);
    double cpu_pct = pub_s > 0 ? 100.0 * cpu / pub_s : 0;
    uint64_t expected = g.expected_total;
    uint64_t lost = expected > g.unique ? expected - g.unique : 0;
    double pub_rate = pub_s > 0 ? (double)sent / pub_s : 0;
    /* delivery rate over the publishing window (steady state, excludes the drain) */
    double deliv_rate = pub_s > 0 ? (double)g.unique_at_pub_end / pub_s : 0;
    double conn_rate = conn_s > 0 ? g.ready / conn_s : 0;
    long rss_delta = (g.rss_before > 0 && g.rss_after > 0) ? g.rss_after - g.rss_before : 0;
    double rss_per_conn = g.ready > 0 ? (double)rss_delta * 1024.0 / g.ready : 0;
    double srv_cpu_pct = (g.srv_cpu0 >= 0 && g.srv_cpu1 > 0 && pub_s > 0)
                             ? 100.0 * (g.srv_cpu1 - g.srv_cpu0) / pub_s
                             : 0;
    const struct hist *h = &g.lat;
    double us = 1e3;
    printf("scenario        %s (%s)\n", g.scenario, g.label);
    printf("connections     %d ready, %d failed in set-up, %d dropped later; set-up %.2f s = "
           "%.0f conn/s\n",
           g.ready, g.failed - g.dropped, g.dropped, conn_s, conn_rate);
    printf("published       %" PRIu64 " in %.2f s = %.0f msg/s; receipts %" PRIu64 "\n", sent,
           pub_s, pub_rate, rcpt);
    printf("delivered       %.0f msg/s while publishing; %" PRIu64 " unique of %" PRIu64
           " expected after %.2f s incl. drain\n",
           deliv_rate, g.unique, expected, tot_s);
    printf("lost %" PRIu64 ", duplicated %" PRIu64 ", gaps %" PRIu64 ", unknown %" PRIu64
           ", STOMP errors %d\n",
           lost, g.dups, g.gaps, g.unknown, g.errors_stomp);
    printf("latency us      p50 %.0f  p99 %.0f  p99.9 %.0f  max %.0f  mean %.0f (n=%" PRIu64 ")\n",
           hist_pct(h, 50) / us, hist_pct(h, 99) / us, hist_pct(h, 99.9) / us, h->max / us,
           h->n ? (double)(h->sum / h->n) / us : 0, h->n);
    if (g.nsrv_pids > 0)
        printf("server RSS      before %ld KB, connected %ld KB, end %ld KB: %.0f B/connection\n",
               g.rss_before, g.rss_after, g.rss_end, rss_per_conn);
    if (g.nsrv_pids > 0)
        printf("server CPU      %.1f%% of one core while publishing = %.2f us per delivery "
               "(%d process%s)\n",
               srv_cpu_pct, deliv_rate > 0 ? srv_cpu_pct / 100.0 * 1e6 / deliv_rate : 0,
               g.nsrv_pids, g.nsrv_pids == 1 ? "" : "es");
    printf("loadgen CPU     %.1f%% of one core while publishing\n", cpu_pct);
    fflush(stdout);

    if (g.csv) {
        FILE *f = fopen(g.csv, "a");
        if (!f) {
            logmsg("cannot append to %s: %s", g.csv, strerror(errno));
        } else {
            if (ftell(f) == 0)
                fprintf(f, "label,target,scenario,conns,subs,pubs,rooms,rate,window,size,duration,"
                           "ready,failed,setup_s,conn_per_s,published,receipts,expected,delivered,"
                           "lost,dups,pub_per_s,deliv_per_s,p50_us,p99_us,p999_us,max_us,mean_us,"
                           "loadgen_cpu_pct,rss_before_kb,rss_conn_kb,rss_end_kb,"
                           "rss_bytes_per_conn,stomp_errors,server_cpu_pct,dropped,inflight,"
                           "server_pids\n");
            fprintf(f,
                    "%s,%s,%s,%d,%d,%d,%d,%.3f,%d,%d,%.1f,%d,%d,%.3f,%.0f,%" PRIu64 ",%" PRIu64
                    ",%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
                    ",%.0f,%.0f,%.1f,%.1f,%.1f,%.1f,%.1f,%.1f,%ld,%ld,%ld,%.0f,%d,%.1f,%d,%d,%d\n",
                    g.label, g.target == TARGET_RABBIT ? "rabbitmq" : "chatd", g.scenario, g.nconns,
                    g.npubsub ? g.npubsub : g.nsubs, g.npubs, g.nrooms, g.rate, g.window, g.size,
                    g.duration, g.ready, g.failed, conn_s, conn_rate, sent, rcpt, expected,
                    g.unique, lost, g.dups, pub_rate, deliv_rate, hist_pct(h, 50) / us,
                    hist_pct(h, 99) / us, hist_pct(h, 99.9) / us, h->max / us,
                    h->n ? (double)(h->sum / h->n) / us : 0, cpu_pct, g.rss_before, g.rss_after,
                    g.rss_end, rss_per_conn, g.errors_stomp, srv_cpu_pct, g.dropped, g.inflight,
                    g.nsrv_pids);
            fclose(f);
        }
    }
    if (g.tl && h->n) {
        FILE *f = fopen(g.timeline, "w");
        if (!f) {
            logmsg("cannot write %s: %s", g.timeline, strerror(errno));
        } else {
            fprintf(f, "# second deliveries p50_us p99_us p999_us max_us\n");
            for (size_t i = 0; i < g.ntl && i <= (size_t)(tot_s + 1); i++) {
                const struct hist *t = &g.tl[i];
                fprintf(f, "%zu %" PRIu64 " %.1f %.1f %.1f %.1f\n", i, t->n, hist_pct(t, 50) / us,
                        hist_pct(t, 99) / us, hist_pct(t, 99.9) / us, t->max / us);
            }
            if (fclose(f) != 0) logmsg("cannot write %s: %s", g.timeline, strerror(errno));
        }
    }
    if (g.hist_out && h->n) {
        FILE *f = fopen(g.hist_out, "w");
        if (!f) {
            logmsg("cannot write %s: %s", g.hist_out, strerror(errno));
        } else {
            fprintf(f, "# percentile latency_us one_over_one_minus_p\n");
            static const double ps[] = {0,  10,   25,   50,    75,    90,     95,
                                        99, 99.5, 99.9, 99.95, 99.99, 99.995, 99.999};
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                fprintf(f, "%g %.1f %g\n", ps[i], hist_pct(h, ps[i] ? ps[i] : 0.0001) / us,
                        1.0 / (1.0 - ps[i] / 100.0));
            fprintf(f, "100 %.1f %g\n", h->max / us, 1e6);
            fclose(f);
        }
    }
}
