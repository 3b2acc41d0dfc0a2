/*
 * plugin_common.h - small helpers compiled into each of chatd's own plugins
 * (store-sqlite, store-pg, queue-local, queue-kafka) so that the logic they
 * share is written once: the service-table check at create, typed config
 * reads that rely on the key table's declared default, the monotonic clock,
 * and the "refusing, bound reached" warning logged once per episode.
 * Not installed; not part of the ABI (third-party plugins need only
 * <chatd/plugin.h>).
 */
#ifndef CHATD_PLUGIN_COMMON_H
#define CHATD_PLUGIN_COMMON_H

#include <chatd/plugin.h>

#include <stddef.h>
#include <stdint.h>

/* 1 when the core's service table is of this header's major and at least as
 * long as this plugin's, else logs what to do (when it can) and returns 0. */
int pc_api_ok(const chatd_api *api, chatd_ctx *ctx);

/* 1 when the core's service table is long enough to hold member `field` (an
 * older core of this major gives a shorter one); the member may still be NULL. */
#define PC_API_HAS(api, field) ((api)->size >= offsetof(chatd_api, field) + sizeof((api)->field))

/* Value of an INT/SIZE (pc_cfg_int) or BOOL (pc_cfg_bool) key. Every key
 * read through these declares its default in the plugin's key table, which
 * is the only place a default is written; the core has range-checked it. */
int64_t pc_cfg_int(const chatd_api *api, chatd_ctx *ctx, const char *key);
int pc_cfg_bool(const chatd_api *api, chatd_ctx *ctx, const char *key);

/* Monotonic clock in ms (durations, deadlines). Any thread. */
int64_t pc_mono_ms(void);

/* Largest history page a store returns, and the page when the caller asks
 * for 0 messages: the ABI's, which the core clamps to as well. */
#define PC_HISTORY_MAX CHATD_HISTORY_MAX
#define PC_HISTORY_DEFAULT CHATD_HISTORY_DEFAULT

/* The history page size a store serves for a requested `limit`. */
unsigned pc_history_limit(unsigned limit);

/* The n ranges of a side replay (chatd_store_ops.side_replay), after[i] <
 * p < until[i], as the signed bounds stores keep positions in (below 2^63):
 * bounds[2i] < p <= bounds[2i+1]; a range beyond INT64_MAX is empty. 1 when
 * the ranges are as the contract says (n in 1..CHATD_POS_RANGES_MAX, sorted,
 * disjoint), else 0. */
int pc_pos_ranges(const uint64_t *after, const uint64_t *until, size_t n, int64_t *bounds);

/* strdup that passes NULL through; NULL also when out of memory. */
char *pc_strdup(const char *s);

/*
 * A bound (max_pending, ...) refuses work: the first refusal of an episode
 * logs a warning, every refusal counts in `counter`; the episode ends when
 * the backlog is back under half the bound (pc_busy_drained logs it) or on
 * pc_busy_reset.
 */
typedef struct pc_busy {
    int logged;
} pc_busy;

void pc_busy_refuse(pc_busy *b, const chatd_api *api, chatd_ctx *ctx, chatd_log_level level,
                    const char *counter, const char *fmt, ...) CHATD_PRINTF(6, 7);
void pc_busy_drained(pc_busy *b, const chatd_api *api, chatd_ctx *ctx, int64_t pending,
                     int64_t bound);
void pc_busy_reset(pc_busy *b);

#endif /* CHATD_PLUGIN_COMMON_H */
