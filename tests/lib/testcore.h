/*
 * tests/lib/testcore.h - the test core: the daemon's own core library
 * (core/libchatdcore.la) set up around one plugin instance that a test
 * drives by hand, without a configuration file or the other plugins.
 *
 * Everything a plugin sees is the daemon's code: the chatd_api table of
 * core/api.c, messages and their JSON (core/msg.c), completions
 * (core/completion.c), post() (core/post.c), config values checked against
 * the plugin's key table (core/config.c), the loader (core/loader.c) and the
 * metrics. The test core adds only what a test needs on top:
 *   - the consume service is the test's (testcore_set_consume), so a queue
 *     test sees what the queue hands to the core;
 *   - log lines can be watched (testcore_set_log_hook);
 *   - message references and completions are counted, so leaks fail tests;
 *   - msg_ref/msg_unref/complete abort when called off the loop thread,
 *     so plugin threading mistakes show up as test failures;
 *   - the loop runs until a condition holds, with a deadline.
 * One test core per process; everything here runs on the thread that
 * called testcore_init (the loop thread) unless its comment says otherwise.
 */
#ifndef CHATD_TESTS_TESTCORE_H
#define CHATD_TESTS_TESTCORE_H

#include <chatd/plugin.h>

#include <stddef.h>
#include <stdint.h>

/** Completion callback: status and reason (reason may be NULL). */
typedef void (*testcore_done_fn)(void *arg, chatd_status status, const char *reason);

/** The consume service as a test provides it (default: CHATD_ERR_UNAVAILABLE). */
typedef void (*testcore_consume_fn)(chatd_ctx *ctx, chatd_msg *msg, unsigned flags,
                                    chatd_status_cb done, void *arg);

/** Sees every line a plugin logs, before the level filter. Any thread. */
typedef void (*testcore_log_fn)(chatd_ctx *ctx, chatd_log_level level, const char *line);

/** Start the test core (its loop runs on the calling thread). 0 or -1.
 *  CHATD_TEST_DEBUG=1 in the environment shows debug lines. */
int testcore_init(void);
/** Run what is still posted, then free the core. */
void testcore_shutdown(void);
/** The services table to hand to a plugin's create(). */
const chatd_api *testcore_api(void);
/** The loop, as `struct event_base *`. */
void *testcore_base(void);

/**
 * Load the plugin at `path` with the daemon's loader and check it is of
 * `kind`. Returns its descriptor (copied within the sizes the plugin
 * declared) and in *ops its hooks table, or NULL with the reason on stderr.
 * The plugin stays loaded until the process exits.
 */
const chatd_plugin_desc *testcore_load(const char *path, chatd_plugin_kind kind, const void **ops);

/**
 * A plugin instance context named `name` (a config section name), configured
 * with `npairs` "key=value" strings, each checked against `keys` as the
 * daemon checks a section (keys may be NULL only when npairs is 0); defaults
 * come from `keys`. Returns NULL (reason logged) on a bad pair.
 */
chatd_ctx *testcore_ctx_new(const char *name, const chatd_cfg_key *keys, int npairs,
                            char *const *pairs);
void testcore_ctx_free(chatd_ctx *ctx);

/** A completion that calls fn(arg, status, reason) once, on complete(). */
chatd_completion *testcore_completion_new(testcore_done_fn fn, void *arg);
/** Drop a completion that was never handed over (the hook did not return
 *  CHATD_ASYNC). */
void testcore_completion_free(chatd_completion *c);

/** Run the loop until cond(arg) is true or timeout_ms passes: 0 when it
 *  held, -1 on timeout. */
int testcore_run_until(int (*cond)(void *arg), void *arg, int timeout_ms);
/** Run the loop until *flag is non-zero (0), or timeout_ms passes (-1). */
int testcore_run_until_flag(const int *flag, int timeout_ms);
/** Run the loop until *count reaches target (0), or timeout_ms passes (-1). */
int testcore_run_until_count(const long *count, long target, int timeout_ms);
/** Run the loop for ms milliseconds: only to let late, unwanted events
 *  (duplicates, early answers) arrive before asserting they did not. */
void testcore_run_for(int ms);

/** Sum over instances of a counter added with counter_add. */
uint64_t testcore_counter(const char *name);
/** Message references held (created or ref'd, not yet unref'd). */
long testcore_msgs_live(void);
/** Completions created and neither completed nor freed. */
long testcore_completions_live(void);
/** Replace the consume service (NULL: the default). */
void testcore_set_consume(testcore_consume_fn fn);
/** Watch log lines (NULL: none). */
void testcore_set_log_hook(testcore_log_fn fn);

/** The dead_letter service as a test provides it (chatd_api.dead_letter). */
typedef void (*testcore_dead_letter_fn)(chatd_ctx *ctx, const char *source, const void *payload,
                                        size_t len, const char *reason, chatd_status_cb cb,
                                        void *arg);
/** Replace the dead_letter service (NULL: the core's, which needs a store). */
void testcore_set_dead_letter(testcore_dead_letter_fn fn);

#endif /* CHATD_TESTS_TESTCORE_H */
