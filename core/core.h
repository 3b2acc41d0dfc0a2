/*
 * core/core.h - internal interfaces between the modules of the chatd daemon.
 *
 * Nothing here is part of the plugin ABI (that is include/chatd/plugin.h).
 * Every function runs on the event-loop thread unless its comment says
 * otherwise.
 *
 * Out of memory: the core's one policy, followed by every module here.
 *   - A request (a publish, a consume, a store query, a login, a completion
 *     for a hook) that cannot get memory fails on its own: its callback gets
 *     CHATD_ERR_NOMEM (a publish also gets the reason "out of memory"), the
 *     daemon runs on. Allocating functions return NULL or CHATD_ERR_NOMEM;
 *     their callers pass that on and never abort().
 *   - At start-up (config parsing, loading, create, start) a failed
 *     allocation is logged as "out of memory" and chatd exits with status 1.
 *   - While stopping, when the stop's own bookkeeping cannot be allocated,
 *     chatd logs it and stops at once without waiting for the plugins (as
 *     on a second SIGTERM), exit status 1.
 *   A cache that cannot grow (members_put) is not an error: the entry is
 *   simply not cached.
 */
#ifndef CHATD_CORE_H
#define CHATD_CORE_H

#include <chatd/plugin.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct event;

typedef struct core core;
typedef struct lease lease;

/* ------------------------------------------------------------------ log.c */

/** Only messages at this level or more severe are written. Any thread. */
void log_set_level(chatd_log_level level);
chatd_log_level log_get_level(void);
/** "error", "warn", "info", "debug" -> level; returns 0, or -1 when unknown. */
int log_level_parse(const char *s, chatd_log_level *out);
/** One line to stderr: level, instance (or "core"), message. Any thread. */
void log_msg(chatd_log_level level, const char *instance, const char *fmt, ...) CHATD_PRINTF(3, 4);
void log_vmsg(chatd_log_level level, const char *instance, const char *fmt, va_list ap)
    CHATD_PRINTF(3, 0);

/* ---------------------------------------------------------------- clock.c */

/** Wall clock, ms since the Unix epoch (chatd_api.now_ms). Any thread. */
int64_t clock_wall_ms(void);
/** Monotonic clock in ms, with a fraction (latencies, rate buckets). Any
 *  thread. */
double clock_mono_ms(void);

/* --------------------------------------------------------------- config.c */

/** One key = value line of a section (or a --set override). */
typedef struct cfg_entry {
    char *key;
    char *value;
    int line;      /**< line in the file; 0 for --set */
    bool from_set; /**< value comes from --set SECTION.KEY=VALUE */
} cfg_entry;

/** One [section]: [chatd] or a plugin instance. */
typedef struct cfg_section {
    char *name;
    int line; /**< line of the [header] (0 when created by --set) */
    cfg_entry *entries;
    size_t n, cap;
    const chatd_cfg_key *keys; /**< accepted keys once validated */
} cfg_section;

/** A parsed configuration and the values of the [chatd] section. */
typedef struct cfg {
    char *file;
    cfg_section **sections; /**< in file order */
    size_t n, cap;

    int64_t node_id;    /**< 0..1023, or CFG_NODE_AUTO */
    int64_t node_lease; /**< ms a node's claim on its node_id lasts */
    chatd_log_level log_level;
    int64_t session_ttl;       /**< seconds */
    int64_t max_message_bytes; /**< bytes of UTF-8 text */
    int64_t publish_rate;      /**< per member per second; 0 = unlimited */
    const char *plugin_dir;    /**< NULL: the compiled-in directory */
    int64_t max_pending;       /**< publishes in flight */
    int64_t stop_timeout;      /**< seconds per stop phase */
    int64_t auth_threads;      /**< password hashing threads */

    int64_t idempotency_window;     /**< seconds a SEND's idempotency key is remembered */
    int64_t idem_fanout_memory;     /**< keys fan-out remembers to drop second copies */
    int64_t idem_fanout_wait;       /**< ms a keyed RECEIPT waits for the local fan-out */
    int64_t login_fail_limit;       /**< failed logins per login id / address per window; 0 off */
    int64_t login_fail_window;      /**< seconds */
    int64_t register_limit;         /**< registrations per address per window; 0 off */
    int64_t register_window;        /**< seconds */
    int64_t max_hashes_per_addr;    /**< hashes queued or running per address; 0 off */
    int64_t throttle_max_entries;   /**< login ids and addresses tracked */
    int64_t member_cache_max;       /**< members kept in memory */
    int64_t session_purge_interval; /**< seconds between expired-session purges */
} cfg;

/** Name of the core's own section. */
#define CFG_CORE_SECTION "chatd"
/** cfg.node_id of `node_id = auto`: the store picks a free one. */
#define CFG_NODE_AUTO INT64_C(-1)

cfg *cfg_new(void);
void cfg_free(cfg *c);
/** Parse FILE. Errors logged as "FILE:LINE: reason"; returns 0 or -1. */
int cfg_load(cfg *c, const char *file);
/** Apply "SECTION.KEY=VALUE". Errors logged as "--set ARG: reason". */
int cfg_set(cfg *c, const char *assignment);
/** Validate [chatd] and the section names, fill the cfg_* values. 0 or -1. */
int cfg_check_core(cfg *c);
/** Validate the keys of a plugin section against `keys` (may be NULL). 0/-1. */
int cfg_check_section(cfg *c, cfg_section *s, const chatd_cfg_key *keys);
cfg_section *cfg_section_find(const cfg *c, const char *name);
cfg_entry *cfg_entry_find(const cfg_section *s, const char *key);
/** The accepted keys of [chatd] (what chatd -h chatd lists). */
const chatd_cfg_key *cfg_core_keys(void);
/** The accepted-key entry matching `key` (exact, or a prefix ending in '.'). */
const chatd_cfg_key *cfg_key_match(const chatd_cfg_key *keys, const char *key);
/** Log "FILE:LINE: [section] key: reason" for entry e (or the section). */
void cfg_verror(const cfg *c, const cfg_section *s, const cfg_entry *e, const char *fmt, va_list ap)
    CHATD_PRINTF(4, 0);
void cfg_error(const cfg *c, const cfg_section *s, const cfg_entry *e, const char *fmt, ...)
    CHATD_PRINTF(4, 5);
/** Value parsers; each returns 0, or -1 with a reason in why. */
int cfg_parse_int(const char *s, int64_t *out);
int cfg_parse_size(const char *s, int64_t *out);
int cfg_parse_bool(const char *s, int *out);

/* --------------------------------------------------------------- loader.c */

/** A loaded plugin module: its descriptor and hooks, copied within the sizes
 *  the plugin declared (fields beyond them are zero). */
typedef struct plugin {
    char *path;
    void *dl;
    chatd_plugin_desc desc;
    union {
        chatd_transport_ops transport;
        chatd_queue_ops queue;
        chatd_store_ops store;
        chatd_filter_ops filter;
    } ops;
} plugin;

/**
 * Find and load plugin `spec` (a name, looked up in plugin_dir or the
 * compiled-in directory and, when running from the build tree, the build's
 * plugins/NAME/.libs; or a path containing '/'). Checks the ABI. On refusal
 * returns NULL with "FILE: plugin refused: reason" (or where it looked) in
 * why, and logs nothing: the caller logs the refusal once, with its context.
 * `instance` names the instance in the debug line of a successful load.
 */
plugin *loader_open(const char *spec, const char *plugin_dir, const char *instance, char *why,
                    size_t whylen);
void loader_close(plugin *p);
/** Name of a plugin kind ("transport", ...) or "unknown". */
const char *loader_kind_name(chatd_plugin_kind kind);

/* ------------------------------------------------------------------ ids.c */

/** Epoch of message ids: 2024-01-01T00:00:00Z in ms since the Unix epoch. */
#define IDS_EPOCH_MS INT64_C(1704067200000)

typedef struct ids {
    uint64_t node_id;
    int64_t last_ms; /**< ms since IDS_EPOCH_MS of the last id */
    uint32_t seq;
} ids;

void ids_init(ids *g, uint64_t node_id);
/** Never make an id at or below wall time high_water_ms (Unix ms; 0: no
 *  floor); later ids stay on the last ms used while the clock is behind. */
void ids_floor(ids *g, int64_t high_water_ms);
/** Wall time (Unix ms) of the last id made, 0 before the first. */
int64_t ids_last_ms(const ids *g);
/** Next id for wall time now_ms (Unix ms); strictly increasing. */
uint64_t ids_next(ids *g, int64_t now_ms);
/** Wall time (Unix ms) and node of an id. */
int64_t ids_time_ms(uint64_t id);
unsigned ids_node(uint64_t id);
/** Strict decimal parse ("0" or no leading zero, no sign); 0 or -1. */
int ids_parse(const char *s, size_t len, uint64_t *out);

/* ------------------------------------------------------------------ msg.c */

/** Allocate a message from fields (strings copied, validated). */
chatd_status msg_create(const chatd_msg_fields *f, chatd_msg **out);
chatd_status msg_parse_json(const char *json, size_t len, chatd_msg **out);
chatd_msg *msg_ref(chatd_msg *m);
void msg_unref(chatd_msg *m);
chatd_msg_kind msg_kind(const chatd_msg *m);
uint64_t msg_id(const chatd_msg *m);
const char *msg_room(const chatd_msg *m);
/** The two members of the message's room (chatd_api.msg_room_members). */
void msg_room_members(const chatd_msg *m, int64_t *low, int64_t *high);
int64_t msg_writer_id(const chatd_msg *m);
const char *msg_writer(const chatd_msg *m);
const char *msg_text(const chatd_msg *m, size_t *len);
int64_t msg_time_ms(const chatd_msg *m);
uint64_t msg_up_to(const chatd_msg *m);
uint64_t msg_pos(const chatd_msg *m);
chatd_status msg_set_pos(chatd_msg *m, uint64_t pos);
/** The sender's idempotency key (CHAT only), NULL when none. */
const char *msg_idem_key(const chatd_msg *m);
/** Longest idempotency key, in characters. */
#define IDEM_KEY_MAX 128
/** 1..IDEM_KEY_MAX characters, each visible ASCII (0x21-0x7e)? */
bool idem_key_valid(const char *key);
const char *msg_json(chatd_msg *m, size_t *len);
chatd_status msg_set_text(chatd_msg *m, const char *text, size_t len);
/** Allow or forbid msg_set_text (only during the filter stage). */
void msg_set_mutable(chatd_msg *m, bool on);
/** Is [s, s+len) valid UTF-8 without NUL, overlongs or surrogates? */
bool utf8_valid(const char *s, size_t len);
/** Format Unix ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (>= 25 bytes). */
void time_format_iso(int64_t ms, char *buf, size_t size);
/** Write v in decimal to dst (at most 20 bytes, no NUL); returns the length. */
size_t fmt_u64(char *dst, uint64_t v);

/* ----------------------------------------------------------- completion.c */

/** Called once when a completion finishes; reason NULL when none. */
typedef void (*completion_fn)(void *arg, chatd_status status, const char *reason);

/** A completion for `owner` (used in logs); NULL when out of memory. */
chatd_completion *completion_new(core *c, chatd_ctx *owner, completion_fn fn, void *arg);
/** Finish: calls fn exactly once; a second completion is logged and ignored. */
void completion_complete(chatd_completion *comp, chatd_status status, const char *reason);
/** Drop a completion the plugin never got (hook returned non-ASYNC). */
void completion_discard(chatd_completion *comp);
/** Keep the completion alive but never call fn (the waiter gave up). */
void completion_abandon(chatd_completion *comp);
/** Free the quarantine of finished completions (at shutdown). */
void completion_cleanup(core *c);

/* ----------------------------------------------------------------- post.c */

typedef struct post_task post_task;

typedef struct post_queue {
    pthread_mutex_t mu;
    post_task *head, *tail;
    bool closed;
    bool signalled; /* a byte is in the pipe for the tasks queued */
    int fds[2];     /* the wake-up pipe: read end on the loop, write end for posters */
    struct event *ev;
} post_queue;

int post_init(post_queue *q, struct event_base *base);
/** Queue fn(arg) to run on the loop. Any thread. CHATD_ERR_UNAVAILABLE when
 *  closed. */
chatd_status post_add(post_queue *q, chatd_task_fn fn, void *arg);
/** Refuse further posts and run what is queued (loop thread, at shutdown). */
void post_close(post_queue *q);
void post_free(post_queue *q);

/* -------------------------------------------------------------- metrics.c */

typedef struct metrics metrics;

/** Histograms of the core; metrics_observe takes ms for every one. */
enum { METRIC_HIST_QUEUE = 0, METRIC_HIST_STORE = 1, METRIC_HIST_LOOP_LAG = 2, METRIC_HIST_COUNT };

metrics *metrics_new(void);
void metrics_free(metrics *m);
/** name must be a Prometheus metric name; instance a label value. */
int metrics_counter_add(metrics *m, const char *name, const char *instance, uint64_t delta);
int metrics_gauge_set(metrics *m, const char *name, const char *instance, int64_t value);
void metrics_observe(metrics *m, int which, double ms);
void metrics_render(metrics *m, chatd_write_fn fn, void *arg);
/** Start the loop-lag timer on base (chatd_loop_lag_seconds); -1 logged. */
int metrics_lag_start(metrics *m, struct event_base *base);

/* -------------------------------------------------------------- members.c */

/** A cached member (members never change once created). An entry is valid
 *  in the callback it is passed to; keep it longer only while pinned. */
typedef struct member_entry {
    int64_t id;
    char *login_id;
    char *name;
    int64_t created_ms;
    /* members.c: recency list (most recent first) and pins against eviction */
    struct member_entry *lru_prev, *lru_next;
    uint32_t pins;
} member_entry;

typedef void (*member_entry_cb)(void *arg, chatd_status status, const member_entry *m);

typedef struct members members;

members *members_new(core *c);
void members_free(members *ms);
/** The member with this id, from the cache or the store. */
void members_get(core *c, int64_t id, member_entry_cb cb, void *arg);
/** Remember a member record (e.g. after register or login); `m` is a store
 *  row of any declared size. NULL when not cached (bad row, no memory). */
const member_entry *members_put(members *ms, const chatd_member *m);
/** A store row (of the store's declared size) as a record of this core's
 *  size: fields the row lacks are 0/NULL; pw_hash only with keep_hash. */
chatd_member member_row_copy(const chatd_member *row, bool keep_hash);
/** Answer a chatd_member_cb with one cached member (without pw_hash), or
 *  with st (CHATD_ERR_NOTFOUND when st is OK but m is NULL). */
void members_answer(chatd_member_cb cb, void *arg, chatd_status st, const member_entry *m);
/** chatd_api.room_parse: "a&b" (positive decimal ids without leading zeros,
 *  a != b, either order) into low < high; CHATD_OK or CHATD_ERR_INVALID.
 *  Any thread. */
chatd_status room_parse(const char *room, int64_t *low, int64_t *high);
/** chatd_api.room_format: canonical "low&high" of members a and b (either
 *  order) into buf; the length written, or -1 (buf "" when cap > 0) for ids
 *  that make no room or a buffer too small (CHATD_ROOM_ID_MAX always fits).
 *  Any thread. */
int room_format(char *buf, size_t cap, int64_t a, int64_t b);
/** chatd_api.room_refusal: what a client is told when a room check answered
 *  st (the one copy of these texts). Static. */
const char *room_refusal(chatd_status st);
/** Result of members_room_check_entry: on CHATD_OK the canonical room, the
 *  peer and the cached entry of the member who asked (all borrowed). */
typedef void (*room_entry_cb)(void *arg, chatd_status status, const char *room, int64_t peer,
                              const member_entry *self);
/** Room check (see chatd_api.room_check) that also hands on the asking
 *  member's entry, so the publish path need not look it up again. */
void members_room_check_entry(core *c, int64_t member_id, const char *room, room_entry_cb cb,
                              void *arg);
/** chatd_api.room_check. */
void members_room_check(core *c, int64_t member_id, const char *room, chatd_room_cb cb, void *arg);

/* ------------------------------------------------------------- pipeline.c */

typedef struct pipeline pipeline;

pipeline *pipeline_new(core *c);
void pipeline_free(pipeline *p);
void pipeline_publish(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg);
void pipeline_consume(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                      void *arg);
/** Publishes and consumes in flight. */
size_t pipeline_pending(const pipeline *p);

/* ----------------------------------------------------------------- idem.c */

typedef struct idem idem;
typedef struct idem_entry idem_entry;
/** A (member, idempotency key): the first member of the entries idem.c and
 *  idem_fanout.c keep in their tsearch trees, ordered by idem_who_cmp. */
typedef struct idem_who {
    int64_t member_id;
    char key[IDEM_KEY_MAX + 1];
} idem_who;
int idem_who_cmp(const void *a, const void *b);
/** Reason given with CHATD_ERR_EXISTS to a publish answered by its original. */
#define IDEM_REPLAY_REASON "already published with this idempotency key"

idem *idem_new(core *c);
/** At shutdown, after the plugins are destroyed: waiters are dropped. */
void idem_free(idem *d);
/** When (member, key) is in flight, queue cb to get its outcome and return 1
 *  (cb may already have been called, on NOMEM); else 0. */
int idem_join(core *c, int64_t member_id, const char *key, chatd_publish_cb cb, void *arg);
/** Register (member, key) as in flight; NULL when out of memory. */
idem_entry *idem_begin(core *c, int64_t member_id, const char *key);
/** The in-flight publish finished: st CHATD_OK with msg (the message, or the
 *  original it was answered with) gives every waiter CHATD_ERR_EXISTS with
 *  msg; any other st is passed on as is (msg NULL). Forgets the entry. */
void idem_end(core *c, idem_entry *e, chatd_status st, const char *reason, chatd_msg *msg);
/** Result of idem_lookup: CHATD_OK with the original (borrowed), or
 *  CHATD_ERR_NOTFOUND, or the store's error. */
typedef void (*idem_lookup_cb)(void *arg, chatd_status st, chatd_msg *orig);
/** Ask the store for the message member_id published with key within the
 *  idempotency window before now_ms. */
void idem_lookup(core *c, int64_t member_id, const char *key, int64_t now_ms, idem_lookup_cb cb,
                 void *arg);

/* ---------------------------------------------------------- idem_fanout.c */

typedef struct idem_fanout idem_fanout;
idem_fanout *idem_fanout_new(core *c);
/** At shutdown: waiting publishes are dropped. */
void idem_fanout_free(idem_fanout *f);
/** At start, after the store started and before the queue does: remember
 *  the store's newest keys (chatd_store_ops.idem_recent, those of the
 *  window, at most idem_fanout_memory) as first copies, waiting for them
 *  (at most node_lease ms). A store without the hook, or one that fails,
 *  leaves the memory empty (logged); start goes on. */
void idem_fanout_seed(core *c);
/** Fan-out of msg: false when it is a second copy of its (member, key)
 *  within the window (do not deliver it), else true (remembered). */
bool idem_admit(core *c, chatd_msg *msg);
/** Result of idem_settle: CHATD_OK with the first copy (borrowed; msg
 *  itself when it was first; NULL: no check was made, answer with msg), or
 *  CHATD_ERR_UNAVAILABLE with NULL when which copy the store keeps could not
 *  be confirmed (the publisher is told to retry with the same key). */
typedef void (*idem_settle_cb)(void *arg, chatd_status st, chatd_msg *first);
/** Reason given with CHATD_ERR_UNAVAILABLE by idem_settle. */
#define IDEM_UNCONFIRMED_REASON                                                                    \
    "durable, but which copy of its idempotency key is kept is not confirmed yet: send it "        \
    "again with the same idempotency-key"
/** A keyed msg the queue reported durable: cb once this node's fan-out has
 *  seen the first copy of its key, or the store's idempotency record names
 *  the message it kept (asked every fifth of idem_fanout_wait), or after
 *  idem_fanout_wait ms with neither (CHATD_ERR_UNAVAILABLE). cb may run
 *  before idem_settle returns. */
void idem_settle(core *c, chatd_msg *msg, idem_settle_cb cb, void *arg);

/* ------------------------------------------------------------- throttle.c */

/** Counters per key over a fixed window (see throttle.c). Loop thread. */
typedef struct throttle throttle;
throttle *throttle_new(size_t max_entries);
void throttle_free(throttle *t);
/** Milliseconds until `key` may start one more attempt: 0 now (count plus
 *  inflight under limit, or limit <= 0); the rest of the window otherwise,
 *  and the whole window when the table has no room for the key. */
int64_t throttle_wait(throttle *t, const char *key, int64_t limit, int64_t window_ms, int64_t now);
/** One more attempt of `key` in flight; -1 no room (nothing counted). */
int throttle_begin(throttle *t, const char *key, int64_t window_ms, int64_t now);
/** An attempt of throttle_begin is over; `counted`: it counts in the window. */
void throttle_end(throttle *t, const char *key, bool counted, int64_t window_ms, int64_t now);
/** Forget the events of `key` (in-flight attempts stay). */
void throttle_clear(throttle *t, const char *key);
/** Drop the entries whose window is over and that hold nothing in flight. */
void throttle_sweep(throttle *t, int64_t window_ms, int64_t now);
size_t throttle_size(const throttle *t);

/** The throttle keys one attempt holds while it runs (auth.c's requests). */
#define THROTTLE_GATE_KEYS 3
typedef struct throttle_gate {
    char *key[THROTTLE_GATE_KEYS];
    int n;
    int64_t window_ms;
} throttle_gate;
/** Admit one attempt under limits[i] for keys[i] (NULL key or limit 0: not
 *  limited; a key starting with 'h' counts hashes in flight only). Returns 0
 *  and holds the keys in g, or the milliseconds to wait (nothing held). */
int64_t throttle_gate_open(throttle *t, throttle_gate *g,
                           const char *const keys[THROTTLE_GATE_KEYS],
                           const int64_t limits[THROTTLE_GATE_KEYS], int64_t window_ms);
/** The attempt is over: release g's keys; `failed` counts it in the window of
 *  each key but the 'h' one. */
void throttle_gate_close(throttle *t, throttle_gate *g, bool failed);
/** Answer a refused attempt: log at debug, count it in
 *  chatd_auth_throttled_total, write Retry-After (1..86400 s). */
void throttle_refused(core *c, const char *what, const char *who, int64_t wait_ms,
                      uint32_t *retry_after);

/* ----------------------------------------------------------------- auth.c */

typedef struct auth auth;

auth *auth_new(core *c, unsigned threads);
/** Stop the hashing threads; callbacks of unfinished requests get
 *  CHATD_ERR_UNAVAILABLE. */
void auth_shutdown(auth *a);
void auth_free(auth *a);
void auth_register(core *c, const char *login_id, const char *name, const char *password,
                   chatd_member_cb cb, void *arg);
void auth_login(core *c, const char *login_id, const char *password, chatd_login_cb cb, void *arg);
/** auth_register and auth_login with the client's address and the throttle's
 *  Retry-After (chatd_api.member_register2, login2). */
void auth_register2(core *c, const char *login_id, const char *name, const char *password,
                    const char *client_addr, uint32_t *retry_after, chatd_member_cb cb, void *arg);
void auth_login2(core *c, const char *login_id, const char *password, const char *client_addr,
                 uint32_t *retry_after, chatd_login_cb cb, void *arg);
void auth_logout(core *c, const char *token, chatd_status_cb cb, void *arg);
void auth_authenticate(core *c, const char *token, chatd_member_cb cb, void *arg);
#define HASH_HEX 64 /**< a token's BLAKE2b-256 in hex */
/** The cached tokens last confirmed by the store before `before` (at most max). */
size_t auth_tokens_due(auth *a, int64_t before, char (*out)[HASH_HEX + 1], size_t max);
/** The store still has this session: cache it as confirmed now. */
void auth_token_confirmed(auth *a, const char *hash, int64_t expires_ms);
/** Forget a cached token (its session ended). */
void auth_token_drop(auth *a, const char *hash);

/* ----------------------------------------------------------- auth_watch.c */

/** Re-validates the cached tokens against the store about every second and
 *  tells the transports about ended sessions (session_ended); purges expired
 *  sessions from the store (session_purge). */
typedef struct auth_watch auth_watch;
auth_watch *auth_watch_new(core *c);
void auth_watch_free(auth_watch *w);
/** Validation rules of the member fields; return NULL or the reason. */
const char *auth_check_login_id(const char *login_id);
const char *auth_check_name(const char *name);
const char *auth_check_password(const char *password);

/* ------------------------------------------------------------------ api.c */

/** The services table handed to every plugin instance. */
const chatd_api *api_table(void);
const char *api_status_str(chatd_status st);

/* ----------------------------------------------------------------- core.c */

/** A plugin instance (or the core itself), as plugins see it. */
struct chatd_ctx {
    core *core;
    const char *name; /**< the section name ("core" for the core) */
    cfg_section *sec; /**< NULL for the core */
    plugin *plugin;   /**< NULL for the core */
    void *inst;
    chatd_plugin_kind kind;
    bool created, started, failed;
};

typedef enum core_state { CORE_LOADED = 0, CORE_RUNNING, CORE_STOPPING, CORE_STOPPED } core_state;

struct core {
    cfg *cfg;
    struct event_base *base;
    pthread_t loop_thread;
    core_state state;
    int exit_code;

    chatd_ctx self;    /**< the core's own context ("core") */
    chatd_ctx **insts; /**< plugin instances in config order */
    size_t ninst;
    chatd_ctx *queue, *store;

    ids ids;
    post_queue post;
    metrics *metrics;
    members *members;
    pipeline *pipeline;
    idem *idem;
    idem_fanout *idem_fanout;
    auth *auth;
    auth_watch *auth_watch;
    void *completions; /**< completion.c state */

    struct event *sig_int, *sig_term, *sig_hup;
    bool starting;     /**< core_start under way: a stop signal waits for its end */
    bool stop_pending; /**< SIGINT/SIGTERM came while starting */
    void *stopper;     /**< core.c stop state while stopping */
    lease *lease;      /**< nodes.c: the claim on node_id; NULL without one */
};

/* ---------------------------------------------------------------- nodes.c */

/** Claim node_id in the store (waits for the answer on the loop), set the
 *  ids' floor, start renewals; -1 (logged) when refused or failed. */
int nodes_start(core *c);
/** Stop renewing (stopping). */
void nodes_stop(core *c);
/** Release the lease (stopping, once no more ids can be made, the store
 *  still running): 1 when done(arg) will be called once the store answered
 *  (or after node_lease ms), 0 when there is nothing to wait for. */
int nodes_release(core *c, void (*done)(void *arg), void *arg);
/** A forced stop ends the wait: done will not be called (its arg is freed). */
void nodes_release_cancel(core *c);
/** Free the lease; after the store is destroyed. */
void nodes_free(core *c);

/** The configuration must have been checked with cfg_check_core. Loads every
 *  plugin and validates its section; returns NULL on any error (logged). */
core *core_new(cfg *c);
/** Create every instance and start them (store, queue, filters, transports).
 *  0, or -1 after undoing what was started. */
int core_start(core *c);
/** Begin a graceful stop (idempotent). The loop exits once stopped. */
void core_stop(core *c);
/** Run the loop until stopped; returns the exit code (0 after a clean stop). */
int core_run(core *c);
/** Destroy instances, unload plugins, free. Does not free the cfg. */
void core_free(core *c);
chatd_ctx *core_instance(core *c, const char *name);
/** Every instance of a kind, in config order, through fn. */
void core_each(core *c, chatd_plugin_kind kind, void (*fn)(void *arg, chatd_ctx *ctx), void *arg);
bool core_on_loop(const core *c);
/** The store's hooks for queries (members, sessions, rooms, history): NULL
 *  until the store instance is created and after it is destroyed. The one
 *  way the core looks them up; callers answer CHATD_ERR_UNAVAILABLE on NULL
 *  or on a NULL hook. */
const chatd_store_ops *core_store(const core *c);
/** Start-up only (before the transports start, so no client waits on the
 *  loop): run the loop until *done, for at most timeout_ms. 1: done, 0: timed
 *  out, -1: out of memory (not run). */
int core_wait(core *c, const bool *done, int64_t timeout_ms);

#endif /* CHATD_CORE_H */
