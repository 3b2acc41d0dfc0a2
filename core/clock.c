/*
 * core/clock.c - the core's two clocks, in one place: the wall clock (ids,
 * timestamps, session expiry; chatd_api.now_ms) and the monotonic clock
 * (latency histograms, publish rate buckets).
 */
#include "config.h"

#include "core.h"

#include <time.h>

int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}
