/*
 * tests/abi10/chatd/plugin.h - a frozen copy of <chatd/plugin.h> as released
 * with plugin ABI 1.0 (below, unchanged but for formatting). The 1.0
 * compatibility tests build plugins against it and load them into the
 * current core. Never edit it; a new frozen copy goes into a new directory.
 */
/*
 * chatd/plugin.h - the public, versioned plugin ABI of chatd.
 *
 * This is the only header a third-party plugin needs. It declares:
 *   - the descriptor every plugin returns from its single exported entry symbol,
 *   - the per-kind hook tables (transport, queue, store, filter),
 *   - the core services table (chatd_api) handed to every instance at create,
 *   - the opaque message handle and the plain result records stores fill in.
 *
 * ABI promise
 *   CHATD_ABI_MAJOR changes only when an existing type, field, enum value or
 *   function changes meaning or layout; the core refuses a plugin of another
 *   major. CHATD_ABI_MINOR grows when something is appended: a new function at
 *   the end of a table, a new field at the end of a struct, a new enum value.
 *   Nothing is ever removed or reordered inside a major. Every table and record
 *   starts with a `size` field so that both sides read only what the other
 *   declared. The core refuses a plugin built against a newer minor than its own.
 *
 * Threading
 *   chatd runs one event-loop thread. Every hook below is called on it, and
 *   every chatd_api function may be called only on it, unless its comment says
 *   "any thread". Hooks never block: work that waits (disk sync, network) is
 *   started, the hook returns CHATD_ASYNC, and the plugin later finishes it with
 *   chatd_api.complete() on the loop thread (use chatd_api.post() to get there
 *   from a thread of its own).
 *
 * Ownership
 *   Pointers passed into a hook or callback are borrowed for the duration of
 *   that call only, unless the function's name or comment says take, copy or
 *   ref. Strings are NUL-terminated UTF-8 unless a length is given with them.
 *
 * No libevent, librdkafka, libpq or json-c type appears here.
 */
#ifndef CHATD_PLUGIN_H
#define CHATD_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** ABI version this header describes. See the ABI promise above. */
#define CHATD_ABI_MAJOR 1
#define CHATD_ABI_MINOR 0

/** Name of the one symbol each plugin exports (see chatd_plugin_entry_fn). */
#define CHATD_PLUGIN_ENTRY "chatd_plugin_entry"

#if defined(__GNUC__)
#define CHATD_EXPORT __attribute__((visibility("default")))
#define CHATD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CHATD_EXPORT
#define CHATD_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------ */
/* Status codes                                                             */
/* ------------------------------------------------------------------------ */

/**
 * Result of every hook and of most services. Values are fixed forever.
 * Negative values are errors; chatd_api.status_str() names each one.
 */
typedef enum chatd_status {
    CHATD_OK = 0,               /**< done, synchronously */
    CHATD_REJECT = 1,           /**< refused by policy (filter, validation); not an error */
    CHATD_ASYNC = 2,            /**< accepted; finished later through the completion */
    CHATD_ERR_INVALID = -1,     /**< bad argument or malformed input */
    CHATD_ERR_NOMEM = -2,       /**< out of memory */
    CHATD_ERR_IO = -3,          /**< I/O or backend failure (disk, database, network) */
    CHATD_ERR_BUSY = -4,        /**< a configured bound is reached; retry later */
    CHATD_ERR_NOTFOUND = -5,    /**< no such member, session, room or message */
    CHATD_ERR_EXISTS = -6,      /**< already exists (e.g. login id taken) */
    CHATD_ERR_AUTH = -7,        /**< not authenticated (bad password, expired token) */
    CHATD_ERR_FORBIDDEN = -8,   /**< authenticated but not allowed (not a room member) */
    CHATD_ERR_INTERNAL = -9,    /**< a bug; logged with details */
    CHATD_ERR_UNAVAILABLE = -10 /**< stopping, or a stage is down */
} chatd_status;

/** Plugin kinds. A plugin implements exactly one. Values are fixed forever. */
typedef enum chatd_plugin_kind {
    CHATD_KIND_TRANSPORT = 1, /**< accepts clients; publishes; delivers fan-out */
    CHATD_KIND_QUEUE = 2,     /**< makes messages durable and hands them back */
    CHATD_KIND_STORE = 3,     /**< persists members, sessions, messages, rooms */
    CHATD_KIND_FILTER = 4     /**< may reject or rewrite messages before the queue */
} chatd_plugin_kind;

/** Log levels, most severe first. */
typedef enum chatd_log_level {
    CHATD_LOG_ERROR = 0,
    CHATD_LOG_WARN = 1,
    CHATD_LOG_INFO = 2,
    CHATD_LOG_DEBUG = 3
} chatd_log_level;

/** What a message is. Values are fixed forever. */
typedef enum chatd_msg_kind {
    CHATD_MSG_CHAT = 1, /**< a chat line written by a member into a room */
    CHATD_MSG_READ = 2  /**< a member read a room up to a message id */
} chatd_msg_kind;

/** Which stages chatd_api.consume() runs for a consumed message. */
enum {
    CHATD_CONSUME_PERSIST = 1u << 0, /**< hand it to the store */
    CHATD_CONSUME_FANOUT = 1u << 1   /**< deliver it to local subscribers */
};

/* ------------------------------------------------------------------------ */
/* Opaque handles                                                           */
/* ------------------------------------------------------------------------ */

/** One plugin instance as the core knows it. Passed back to every service. */
typedef struct chatd_ctx chatd_ctx;

/**
 * A message (chat line or read event). Immutable once it has left the filter
 * stage, reference counted, freed at the last unref. Read it with the msg_*
 * accessors of chatd_api.
 */
typedef struct chatd_msg chatd_msg;

/**
 * The pending result of a hook that returned CHATD_ASYNC. The plugin must
 * finish it exactly once with chatd_api.complete(); after that the handle is
 * gone. A hook that returns anything but CHATD_ASYNC must not complete it.
 */
typedef struct chatd_completion chatd_completion;

/* ------------------------------------------------------------------------ */
/* Plain records (filled by stores, read by the core and transports)        */
/* ------------------------------------------------------------------------ */

/** A member. All strings borrowed for the call that passes the record. */
typedef struct chatd_member {
    uint32_t size;        /**< sizeof(chatd_member) of the writer */
    int64_t id;           /**< numeric id, > 0, assigned by the store */
    const char *login_id; /**< unique login name */
    const char *name;     /**< display name */
    const char *pw_hash;  /**< argon2id hash string; NULL outside the core */
    int64_t created_ms;   /**< creation time, ms since the Unix epoch */
} chatd_member;

/** A login session. token_hash is the BLAKE2b-256 of the token, hex. */
typedef struct chatd_session {
    uint32_t size;
    const char *token_hash; /**< 64 lowercase hex chars */
    int64_t member_id;
    int64_t expires_ms; /**< ms since the Unix epoch */
} chatd_session;

/** One member's summary of one conversation. Strings borrowed. */
typedef struct chatd_room_summary {
    uint32_t size;
    const char *room_id;      /**< canonical "low&high" */
    int64_t member_id;        /**< whose summary this is */
    int64_t peer_id;          /**< the other member */
    const char *peer_login;   /**< the other member's login id */
    const char *peer_name;    /**< the other member's display name */
    uint64_t last_msg_id;     /**< id of the newest message, 0 if none */
    const char *last_message; /**< its text ("" if none) */
    int64_t last_ms;          /**< its time, ms since the Unix epoch */
    int64_t unread;           /**< messages from the peer after last_read_id */
    uint64_t last_read_id;    /**< newest message id this member has read */
} chatd_room_summary;

/** Fields for chatd_api.msg_new(). Strings are copied. */
typedef struct chatd_msg_fields {
    uint32_t size;
    chatd_msg_kind kind;
    uint64_t id;         /**< 0 on publish (the core assigns); set by stores */
    const char *room_id; /**< canonical "low&high" */
    int64_t writer_id;   /**< for READ: the reader */
    const char *writer;  /**< login id of writer_id */
    const char *text;    /**< CHAT: the message text; READ: NULL */
    size_t text_len;
    int64_t time_ms; /**< 0 on publish (the core stamps it) */
    uint64_t up_to;  /**< READ: the last message id read; CHAT: 0 */
} chatd_msg_fields;

/* ------------------------------------------------------------------------ */
/* Callbacks used by services and store queries                             */
/* ------------------------------------------------------------------------ */

/** Loop-thread function queued with chatd_api.post() or a timer. */
typedef void (*chatd_task_fn)(void *arg);

/** Result of a publish. `msg` is borrowed (ref it to keep it); NULL on error.
 *  `reason` is a human-readable cause when status != CHATD_OK, else NULL. */
typedef void (*chatd_publish_cb)(void *arg, chatd_status status, const char *reason,
                                 chatd_msg *msg);

/** Member result: rows[0..n) borrowed for the call. n is 0 on error. */
typedef void (*chatd_member_cb)(void *arg, chatd_status status, const chatd_member *rows, size_t n);

/** Session result: one row or NULL. */
typedef void (*chatd_session_cb)(void *arg, chatd_status status, const chatd_session *s);

/** Room summaries, newest conversation first. */
typedef void (*chatd_rooms_cb)(void *arg, chatd_status status, const chatd_room_summary *rows,
                               size_t n);

/** A page of history, oldest first. msgs[i] borrowed: ref what you keep.
 *  `next_before` is the cursor for the next older page, 0 when none. */
typedef void (*chatd_history_cb)(void *arg, chatd_status status, chatd_msg *const *msgs, size_t n,
                                 uint64_t next_before);

/** Login result: token is the new bearer token (borrowed, 64 hex chars). */
typedef void (*chatd_login_cb)(void *arg, chatd_status status, const char *token,
                               const chatd_member *member);

/** Generic completion with a status only. */
typedef void (*chatd_status_cb)(void *arg, chatd_status status);

/** Room check result: canonical room id and the peer, on CHATD_OK. */
typedef void (*chatd_room_cb)(void *arg, chatd_status status, const char *room_id, int64_t peer_id);

/** Metrics output: called with successive chunks of Prometheus text. */
typedef void (*chatd_write_fn)(void *arg, const char *data, size_t len);

/* ------------------------------------------------------------------------ */
/* Configuration keys a plugin accepts                                      */
/* ------------------------------------------------------------------------ */

/** Type of a config value; the core checks it before create is called. */
typedef enum chatd_cfg_type {
    CHATD_CFG_STRING = 1,
    CHATD_CFG_INT = 2,  /**< decimal integer within [min, max] */
    CHATD_CFG_BOOL = 3, /**< true/false, yes/no, on/off, 1/0 */
    CHATD_CFG_SIZE = 4  /**< integer with optional k/m/g suffix (x1024), within [min, max] */
} chatd_cfg_type;

/** One accepted key. A plugin's table ends with an entry whose name is NULL.
 *  Keys starting with a prefix that ends in '.' (e.g. "kafka.") match any key
 *  with that prefix (pass-through properties). */
typedef struct chatd_cfg_key {
    const char *name;
    chatd_cfg_type type;
    const char *default_value; /**< NULL: no default (absent unless set) */
    int64_t min, max;          /**< for INT and SIZE */
    const char *help;          /**< one line, shown by chatd -h PLUGIN */
} chatd_cfg_key;

/* ------------------------------------------------------------------------ */
/* Core services                                                            */
/* ------------------------------------------------------------------------ */

/**
 * The core's services, passed to create(). Append-only: check `size` (or
 * `abi_minor`) before calling a function added after CHATD_ABI_MINOR 0.
 * All functions: loop thread only, unless marked "any thread".
 */
typedef struct chatd_api {
    uint32_t size;      /**< sizeof(chatd_api) of the core */
    uint32_t abi_major; /**< the core's CHATD_ABI_MAJOR */
    uint32_t abi_minor; /**< the core's CHATD_ABI_MINOR */

    /* --- logging, config, errors ---------------------------------------- */

    /** Log one line, prefixed with the level and the instance name.
     *  Any thread. */
    void (*log)(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...) CHATD_PRINTF(3, 4);

    /** Value of a key of this instance's config section, or its declared
     *  default, or NULL when neither. The string lives as long as the instance. */
    const char *(*cfg_str)(chatd_ctx *ctx, const char *key);

    /** Integer (INT or SIZE key) value; when the key is absent, its declared
     *  default_value, or `dflt` when the key declares none. */
    int64_t (*cfg_int)(chatd_ctx *ctx, const char *key, int64_t dflt);

    /** Boolean value; when absent, the declared default, else `dflt`. */
    int (*cfg_bool)(chatd_ctx *ctx, const char *key, int dflt);

    /** Iterate every key of the section starting with `prefix` (e.g. "kafka.").
     *  `fn` gets the key with the prefix removed and the value; both borrowed.
     *  Returns the number of keys visited. */
    int (*cfg_each)(chatd_ctx *ctx, const char *prefix,
                    void (*fn)(void *arg, const char *key, const char *value), void *arg);

    /** Log a config error as "FILE:LINE: [instance] key: reason" (line of the
     *  key, or of the section when the key is absent). Use from create() and
     *  return CHATD_ERR_INVALID. */
    void (*cfg_error)(chatd_ctx *ctx, const char *key, const char *fmt, ...) CHATD_PRINTF(3, 4);

    /** Name of this instance (its config section). Lives as long as ctx. */
    const char *(*instance_name)(chatd_ctx *ctx);

    /** Short name of a status code ("ok", "forbidden", ...). Static. Any thread. */
    const char *(*status_str)(chatd_status st);

    /* --- event loop ------------------------------------------------------- */

    /** The core's libevent 2.1 `struct event_base *`, as an opaque pointer.
     *  Plugins that link libevent may register events on it (loop thread). */
    void *(*event_base)(chatd_ctx *ctx);

    /** Run fn(arg) on the loop thread soon. Any thread; never blocks.
     *  Returns CHATD_OK, or CHATD_ERR_UNAVAILABLE after the loop has stopped
     *  (fn is then never called; the caller still owns arg). */
    chatd_status (*post)(chatd_ctx *ctx, chatd_task_fn fn, void *arg);

    /** Finish a hook that returned CHATD_ASYNC. `reason` (copied) explains a
     *  non-OK status. Loop thread. */
    void (*complete)(chatd_completion *c, chatd_status status, const char *reason);

    /** Wall clock, ms since the Unix epoch. Any thread. */
    int64_t (*now_ms)(void);

    /* --- messages --------------------------------------------------------- */

    /** New message from fields (strings copied). Returns a handle with one
     *  reference owned by the caller, or NULL (invalid fields / no memory). */
    chatd_msg *(*msg_new)(chatd_ctx *ctx, const chatd_msg_fields *f);

    /** Parse the JSON wire form (as produced by msg_json) into a new message
     *  owned by the caller. Returns CHATD_ERR_INVALID on malformed input. */
    chatd_status (*msg_from_json)(chatd_ctx *ctx, const char *json, size_t len, chatd_msg **out);

    /** Add a reference; returns msg. Loop thread. */
    chatd_msg *(*msg_ref)(chatd_msg *msg);
    /** Drop a reference; frees at zero. NULL is ignored. Loop thread. */
    void (*msg_unref)(chatd_msg *msg);

    chatd_msg_kind (*msg_kind)(const chatd_msg *msg);
    /** 64-bit id: time, node and sequence; increases with time. */
    uint64_t (*msg_id)(const chatd_msg *msg);
    /** Canonical room id "low&high". Borrowed from msg. */
    const char *(*msg_room)(const chatd_msg *msg);
    int64_t (*msg_writer_id)(const chatd_msg *msg);
    /** Writer's login id. Borrowed from msg. */
    const char *(*msg_writer)(const chatd_msg *msg);
    /** Text and its length in bytes (UTF-8). Borrowed; "" for READ. */
    const char *(*msg_text)(const chatd_msg *msg, size_t *len);
    int64_t (*msg_time_ms)(const chatd_msg *msg);
    /** READ events: the newest id read. 0 for CHAT. */
    uint64_t (*msg_up_to)(const chatd_msg *msg);
    /** The JSON wire body (what subscribers receive and queues carry),
     *  encoded once and cached; borrowed from msg, valid while you hold a
     *  reference. NULL only when out of memory. */
    const char *(*msg_json)(chatd_msg *msg, size_t *len);

    /** Replace the text. Only inside a filter hook, before completion;
     *  otherwise returns CHATD_ERR_INVALID. Text copied; must be valid UTF-8. */
    chatd_status (*msg_set_text)(chatd_msg *msg, const char *text, size_t len);

    /* --- pipeline ----------------------------------------------------------- */

    /**
     * Publish from an authenticated member (transports). The core validates
     * (room membership, size, UTF-8), stamps id and time, runs filters, hands
     * it to the queue, and calls cb once the queue reports it durable
     * (CHATD_OK: it will not be lost) or failed. f->writer_id must be the
     * authenticated member; f->writer, f->id and f->time_ms are ignored.
     * cb is always called exactly once, possibly before publish returns.
     */
    void (*publish)(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg);

    /**
     * A queue hands a message back to the core (queues). `flags` says which
     * stages to run (CHATD_CONSUME_*). The core takes its own reference.
     * When the requested stages are done, done(arg, status) is called: CHATD_OK
     * means persisted (if asked) — commit the offset now. On an error the queue
     * should redeliver later. done may be NULL when nothing waits.
     */
    void (*consume)(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                    void *arg);

    /* --- members, sessions, rooms (transports) ---------------------------- */

    /** Register a member. Password hashed with argon2id off the loop thread.
     *  cb gets the new member, CHATD_ERR_EXISTS or CHATD_ERR_INVALID. */
    void (*member_register)(chatd_ctx *ctx, const char *login_id, const char *name,
                            const char *password, chatd_member_cb cb, void *arg);

    /** Verify a password and open a session. cb gets the token or
     *  CHATD_ERR_AUTH. */
    void (*login)(chatd_ctx *ctx, const char *login_id, const char *password, chatd_login_cb cb,
                  void *arg);

    /** Close the session of `token`. cb may be NULL. */
    void (*logout)(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg);

    /** Resolve a bearer token to its member; CHATD_ERR_AUTH when unknown or
     *  expired. Cached; usually answers before returning. */
    void (*authenticate)(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg);

    /** One member by id (login_id NULL) or by login id (id 0). */
    void (*member_get)(chatd_ctx *ctx, int64_t id, const char *login_id, chatd_member_cb cb,
                       void *arg);

    /** All members, by id. */
    void (*member_list)(chatd_ctx *ctx, chatd_member_cb cb, void *arg);

    /** Check that `member_id` may use room `room` ("a&b" in either order,
     *  both existing members, member_id one of them). CHATD_ERR_INVALID for a
     *  malformed id, CHATD_ERR_NOTFOUND for an unknown member,
     *  CHATD_ERR_FORBIDDEN when member_id is not in it. */
    void (*room_check)(chatd_ctx *ctx, int64_t member_id, const char *room, chatd_room_cb cb,
                       void *arg);

    /** The member's conversations, newest first. */
    void (*room_list)(chatd_ctx *ctx, int64_t member_id, chatd_rooms_cb cb, void *arg);

    /** History of a room the member is in: up to `limit` messages with
     *  id < before (0: newest), oldest first. */
    void (*history)(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t before,
                    unsigned limit, chatd_history_cb cb, void *arg);

    /* --- metrics ---------------------------------------------------------- */

    /** Add to a counter named `name` (Prometheus metric name, e.g.
     *  "chatd_ws_frames_total"), labelled with this instance. */
    void (*counter_add)(chatd_ctx *ctx, const char *name, uint64_t delta);

    /** Set a gauge, labelled with this instance. */
    void (*gauge_set)(chatd_ctx *ctx, const char *name, int64_t value);

    /** Write every metric in Prometheus text format through fn. */
    void (*metrics_render)(chatd_ctx *ctx, chatd_write_fn fn, void *arg);

    /** Is the pipeline up (queue and store started and not failing)?
     *  Returns 1 or 0. */
    int (*healthy)(chatd_ctx *ctx);
} chatd_api;

/* ------------------------------------------------------------------------ */
/* Per-kind hook tables                                                     */
/* ------------------------------------------------------------------------ */

/** Transport hooks. */
typedef struct chatd_transport_ops {
    uint32_t size;
    /** Mandatory. Deliver `msg` to local subscribers of `destination`
     *  (e.g. "/sub/chat/room/3&4"). msg borrowed: take a reference to keep it
     *  (e.g. while its JSON is queued on sockets). Never blocks. */
    void (*deliver)(void *inst, const char *destination, chatd_msg *msg);
} chatd_transport_ops;

/** Queue hooks. */
typedef struct chatd_queue_ops {
    uint32_t size;
    /** Mandatory. Make msg durable, then complete(done, CHATD_OK); later hand
     *  it back with chatd_api.consume(). msg borrowed: ref to keep. Return
     *  CHATD_ASYNC (normal), or an error without completing. */
    chatd_status (*enqueue)(void *inst, chatd_msg *msg, chatd_completion *done);
} chatd_queue_ops;

/**
 * Store hooks. All results are delivered through the given callback on the
 * loop thread, possibly before the hook returns; the callback is called
 * exactly once for every call. Record strings are borrowed for the callback.
 */
typedef struct chatd_store_ops {
    uint32_t size;
    /** Mandatory. Persist a CHAT message (idempotent by id: a second call with
     *  the same id changes nothing) and both members' room summaries; or apply
     *  a READ event (last_read_id = max(old, up_to), unread recounted).
     *  Batch freely; complete(done) only after the batch has committed.
     *  Return CHATD_ASYNC, or CHATD_ERR_BUSY when the pending bound is reached. */
    chatd_status (*persist)(void *inst, chatd_msg *msg, chatd_completion *done);

    /** Create a member (m->id ignored). cb: the member with its id, or
     *  CHATD_ERR_EXISTS for a taken login id. */
    void (*member_create)(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg);

    /** Find a member by id (login_id NULL) or login id; pw_hash included.
     *  CHATD_ERR_NOTFOUND when none. */
    void (*member_get)(void *inst, int64_t id, const char *login_id, chatd_member_cb cb, void *arg);

    /** All members ordered by id (pw_hash NULL). */
    void (*member_list)(void *inst, chatd_member_cb cb, void *arg);

    /** Store a session. cb may be NULL. */
    void (*session_put)(void *inst, const chatd_session *s, chatd_status_cb cb, void *arg);

    /** Find a session by token hash. CHATD_ERR_NOTFOUND when none (expired
     *  rows may be returned; the core checks expires_ms). */
    void (*session_get)(void *inst, const char *token_hash, chatd_session_cb cb, void *arg);

    /** Delete a session. cb may be NULL. */
    void (*session_del)(void *inst, const char *token_hash, chatd_status_cb cb, void *arg);

    /** Room summaries of a member, newest last_ms first. */
    void (*room_list)(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg);

    /** Up to `limit` CHAT messages of `room_id` with id < before (0: no
     *  bound), delivered oldest first; next_before is the smallest id returned
     *  when older messages exist, else 0. Messages built with msg_new. */
    void (*history)(void *inst, const char *room_id, uint64_t before, unsigned limit,
                    chatd_history_cb cb, void *arg);
} chatd_store_ops;

/** Filter hooks. */
typedef struct chatd_filter_ops {
    uint32_t size;
    /** Mandatory. Inspect msg before it is queued: return CHATD_OK to pass,
     *  CHATD_REJECT to refuse (the sender gets an error; give a reason with
     *  chatd_api.log at debug or by returning ASYNC and completing with a
     *  reason), may rewrite with chatd_api.msg_set_text. CHATD_ASYNC: finish
     *  with complete(done, CHATD_OK | CHATD_REJECT, reason). */
    chatd_status (*filter)(void *inst, chatd_msg *msg, chatd_completion *done);
} chatd_filter_ops;

/* ------------------------------------------------------------------------ */
/* The descriptor                                                           */
/* ------------------------------------------------------------------------ */

/**
 * What a plugin is. Returned by its entry symbol; static storage, never freed.
 * The core reads only the first `size` bytes.
 */
typedef struct chatd_plugin_desc {
    uint32_t abi_major; /**< CHATD_ABI_MAJOR the plugin was built with */
    uint32_t abi_minor; /**< CHATD_ABI_MINOR the plugin was built with */
    uint32_t size;      /**< sizeof(chatd_plugin_desc) the plugin was built with */
    chatd_plugin_kind kind;
    const char *name;              /**< e.g. "store-sqlite" */
    const char *version;           /**< the plugin's own version, e.g. "1.2.0" */
    const char *description;       /**< one line */
    const chatd_cfg_key *cfg_keys; /**< accepted keys, NULL-name terminated; may be NULL */

    /** Mandatory. Make an instance: read config through api, allocate, but do
     *  not accept work yet. Store the instance in *inst. `api` and `ctx` stay
     *  valid until destroy returns. Return CHATD_OK or an error (logged). */
    chatd_status (*create)(const chatd_api *api, chatd_ctx *ctx, void **inst);

    /** Optional. Begin work (listen, connect, consume). Stores and queues are
     *  started before transports. Return CHATD_OK or an error (start fails). */
    chatd_status (*start)(void *inst);

    /** Optional. Graceful stop: stop taking new work, finish what is in
     *  flight, then complete(done). Return CHATD_OK when already stopped
     *  synchronously, or CHATD_ASYNC. Transports stop first, then filters,
     *  queues, stores. */
    chatd_status (*stop)(void *inst, chatd_completion *done);

    /** Mandatory. Free everything. The loop no longer runs your events. */
    void (*destroy)(void *inst);

    /** Optional. SIGHUP: reopen files, re-read what can change at run time. */
    void (*reload)(void *inst);

    /** Kind-specific hooks: a chatd_transport_ops, chatd_queue_ops,
     *  chatd_store_ops or chatd_filter_ops, according to `kind`. */
    const void *ops;
} chatd_plugin_desc;

/** Type of the entry symbol CHATD_PLUGIN_ENTRY. Called once per dlopen. */
typedef const chatd_plugin_desc *(*chatd_plugin_entry_fn)(void);

/**
 * Declare the entry symbol in a plugin:
 *     CHATD_PLUGIN_DEFINE(my_desc)
 * where my_desc is a `static const chatd_plugin_desc`.
 */
#define CHATD_PLUGIN_DEFINE(desc)                                                                  \
    CHATD_EXPORT const chatd_plugin_desc *chatd_plugin_entry(void);                                \
    CHATD_EXPORT const chatd_plugin_desc *chatd_plugin_entry(void)                                 \
    {                                                                                              \
        return &(desc);                                                                            \
    }

#ifdef __cplusplus
}
#endif

#endif /* CHATD_PLUGIN_H */
