/*
 * plugin_common.c - the helpers of plugin_common.h, compiled into each of
 * chatd's own plugins (hidden visibility: every plugin has its own copy of
 * the object, none of the source).
 */
#define _POSIX_C_SOURCE 200809L

#include "plugin_common.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int pc_api_ok(const chatd_api *api, chatd_ctx *ctx)
{
    if (api && api->abi_major == CHATD_ABI_MAJOR && api->size >= sizeof(chatd_api)) return 1;
    if (api && api->size > offsetof(chatd_api, log) && api->log)
        api->log(ctx, CHATD_LOG_ERROR,
                 "the core's service table is older than this plugin needs; use a matching "
                 "chatd");
    return 0;
}

int64_t pc_cfg_int(const chatd_api *api, chatd_ctx *ctx, const char *key)
{
    return api->cfg_int(ctx, key, 0); /* 0 is never used: the key declares its default */
}

int pc_cfg_bool(const chatd_api *api, chatd_ctx *ctx, const char *key)
{
    return api->cfg_bool(ctx, key, 0); /* as above */
}

int64_t pc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

unsigned pc_history_limit(unsigned limit)
{
    if (limit == 0) return PC_HISTORY_DEFAULT;
    return limit > PC_HISTORY_MAX ? PC_HISTORY_MAX : limit;
}

int pc_pos_ranges(const uint64_t *after, const uint64_t *until, size_t n, int64_t *bounds)
{
    if (!after || !until || n == 0 || n > CHATD_POS_RANGES_MAX) return 0;
    for (size_t i = 0; i < n; i++) {
        if (after[i] >= until[i] || (i + 1 < n && until[i] > after[i + 1])) return 0;
        bounds[2 * i] = after[i] > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)after[i];
        bounds[2 * i + 1] =
            until[i] - 1 > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)(until[i] - 1);
    }
    return 1;
}

char *pc_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

void pc_busy_refuse(pc_busy *b, const chatd_api *api, chatd_ctx *ctx, chatd_log_level level,
                    const char *counter, const char *fmt, ...)
{
    api->counter_add(ctx, counter, 1);
    if (!b->logged) {
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        api->log(ctx, level, "%s", line);
        b->logged = 1;
    }
}

void pc_busy_drained(pc_busy *b, const chatd_api *api, chatd_ctx *ctx, int64_t pending,
                     int64_t bound)
{
    if (b->logged && pending < bound / 2) {
        b->logged = 0;
        api->log(ctx, CHATD_LOG_INFO,
                 "%lld pending, under half of the bound (%lld): accepting again",
                 (long long)pending, (long long)bound);
    }
}

void pc_busy_reset(pc_busy *b)
{
    b->logged = 0;
}
