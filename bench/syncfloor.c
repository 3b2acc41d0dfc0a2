/*
 * bench/syncfloor.c - the machine's floor for a durable delivery: how long
 * one fdatasync() of a small append takes on the disk the servers write to.
 *
 * Appends SIZE bytes to FILE and fdatasync()s it, COUNT times in a row, as a
 * store that makes each message durable before its RECEIPT would at one
 * message per commit, and prints the distribution of the fdatasync() times.
 * No server can deliver a message with a sync on its path faster than this
 * at the same percentile. The file is removed at the end.
 *
 *   syncfloor -f FILE [-n COUNT] [-s SIZE]
 *
 * Prints one line: "syncfloor n=N size=S secs=.. p50_ms=.. p90_ms=.. p99_ms=..
 * p999_ms=.. max_ms=.. over_2.5ms=.. over_20ms=..": a few syncs of a run of
 * seconds can stall for far longer than the percentiles say, so the counts
 * of slow ones are printed too.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long count = 3000, size = 4096;
    int opt;
    while ((opt = getopt(argc, argv, "f:n:s:")) != -1) {
        switch (opt) {
        case 'f':
            path = optarg;
            break;
        case 'n':
            count = strtol(optarg, NULL, 10);
            break;
        case 's':
            size = strtol(optarg, NULL, 10);
            break;
        default:
            fprintf(stderr, "usage: syncfloor -f FILE [-n COUNT] [-s SIZE]\n");
            return 2;
        }
    }
    if (!path || count < 1 || count > 1000000 || size < 1 || size > 1 << 20) {
        fprintf(stderr, "usage: syncfloor -f FILE [-n 1..1000000] [-s 1..1048576]\n");
        return 2;
    }
    char *buf = malloc((size_t)size);
    double *lat = malloc(sizeof(double) * (size_t)count);
    if (!buf || !lat) {
        fprintf(stderr, "syncfloor: out of memory\n");
        return 1;
    }
    memset(buf, 'x', (size_t)size);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (fd < 0) {
        fprintf(stderr, "syncfloor: cannot create %s: %s\n", path, strerror(errno));
        return 1;
    }
    int rc = 0;
    double start = now_ms();
    for (long i = 0; i < count; i++) {
        if (write(fd, buf, (size_t)size) != (ssize_t)size) {
            fprintf(stderr, "syncfloor: write to %s failed: %s\n", path, strerror(errno));
            rc = 1;
            break;
        }
        double t0 = now_ms();
        if (fdatasync(fd) != 0) {
            fprintf(stderr, "syncfloor: fdatasync of %s failed: %s\n", path, strerror(errno));
            rc = 1;
            break;
        }
        lat[i] = now_ms() - t0;
    }
    double secs = (now_ms() - start) / 1e3;
    close(fd);
    unlink(path);
    if (rc == 0) {
        long slow = 0, stalled = 0;
        for (long i = 0; i < count; i++) {
            slow += lat[i] > 2.5;
            stalled += lat[i] > 20;
        }
        qsort(lat, (size_t)count, sizeof(double), cmp_double);
#define Q(p) lat[(size_t)((double)(count - 1) * (p))]
        printf("syncfloor n=%ld size=%ld secs=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f "
               "p999_ms=%.3f max_ms=%.3f over_2.5ms=%ld over_20ms=%ld\n",
               count, size, secs, Q(0.5), Q(0.9), Q(0.99), Q(0.999), lat[count - 1], slow, stalled);
#undef Q
    }
    free(buf);
    free(lat);
    return rc;
}
