/*
 * mockcore.h - a stand-in for the chatd core, for testing plugins alone.
 *
 * It implements the chatd_api table with a real libevent loop (post() from
 * any thread wakes it), reference-counted messages (JSON through json-c),
 * completions, config from key=value pairs checked against the plugin's
 * cfg_keys table, logging to stderr and metrics in memory. Every loop-thread
 * service aborts with a message when called from another thread, so plugin
 * threading mistakes show up as test failures.
 */
#ifndef CHATD_TESTS_MOCKCORE_H
#define CHATD_TESTS_MOCKCORE_H

#include <chatd/plugin.h>

#include <stddef.h>
#include <stdint.h>

/** Completion callback of the mock: status and reason (reason may be NULL). */
typedef void (*mock_done_fn)(void *arg, chatd_status status, const char *reason);

/** Consume hook for queue tests; default answers CHATD_ERR_UNAVAILABLE. */
typedef void (*mock_consume_fn)(chatd_ctx *ctx, chatd_msg *msg, unsigned flags,
                                chatd_status_cb done, void *arg);

/** Start the mock (loop on the calling thread). Returns 0 or -1. */
int mock_init(void);
/** Free the loop. Posts after this return CHATD_ERR_UNAVAILABLE. */
void mock_shutdown(void);
/** The services table. */
const chatd_api *mock_api(void);
/** The loop, as `struct event_base *`. */
void *mock_base(void);

/**
 * A plugin instance context named `name`, configured with `npairs`
 * "key=value" strings. Keys are checked against `keys` (may be NULL: then
 * every key is accepted) as the core does; defaults come from `keys`.
 * Returns NULL (with a message on stderr) on an unknown or malformed pair.
 */
chatd_ctx *mock_ctx_new(const char *name, const chatd_cfg_key *keys, int npairs,
                        char *const *pairs);
void mock_ctx_free(chatd_ctx *ctx);

/** A completion that calls fn(arg, status, reason) once, on complete(). */
chatd_completion *mock_completion_new(mock_done_fn fn, void *arg);
/** Free a completion that was never completed (hook did not return ASYNC). */
void mock_completion_free(chatd_completion *c);

/**
 * Run the loop until *flag becomes non-zero or timeout_ms passes.
 * Returns 0 when the flag was set, -1 on timeout.
 */
int mock_run_until(const int *flag, int timeout_ms);
/** Run the loop until *count reaches target or timeout_ms passes. */
int mock_run_until_count(const long *count, long target, int timeout_ms);

/** Value of a counter added with counter_add (summed over instances). */
uint64_t mock_counter(const char *name);
/** Last value set with gauge_set, 0 if never. */
int64_t mock_gauge(const char *name);
/** Messages alive (created and not yet freed). */
long mock_msgs_live(void);
/** Completions created and not yet completed or freed. */
long mock_completions_live(void);
/** Replace the consume service (NULL: the default). */
void mock_set_consume(mock_consume_fn fn);

#endif /* CHATD_TESTS_MOCKCORE_H */
