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
 *   Nothing is ever removed or reordered inside a major. The core refuses a
 *   plugin built against a newer minor than its own, so a plugin may call
 *   every function its own header declares.
 *
 * Sizes: how each structure grows
 *   - Tables (chatd_api, chatd_*_ops) and records (chatd_member,
 *     chatd_session, chatd_room_summary, chatd_msg_fields) start with
 *     `uint32_t size`, the sizeof of the writer's version; they grow at
 *     their end. A reader reads a field only when `size` covers it
 *     (CHATD_HAS), and a field not covered reads as 0 / NULL.
 *   - Arrays of records (the rows of chatd_member_cb and chatd_rooms_cb) are
 *     indexed by the writer's size, never by the reader's sizeof: row i is
 *     CHATD_ROW(type, rows, i). Every row of one array has the same size.
 *   - chatd_plugin_desc starts with abi_major, abi_minor, then size (in that
 *     order in every version) and grows at its end; the core reads only
 *     `size` bytes of it.
 *   - chatd_cfg_key has no size: it is fixed for the whole major (a table
 *     of keys ends with a NULL name). New per-key attributes would come as a
 *     new, separately sized table named by a new chatd_plugin_desc field.
 *
 * Threading
 *   chatd runs one event-loop thread. Every hook below is called on it, and
 *   every chatd_api function may be called only on it, unless its comment
 *   says "any thread" (each says which). Hooks never block: work that waits
 *   (disk sync, network) is started, the hook returns CHATD_ASYNC, and the
 *   plugin finishes it with chatd_api.complete() on the loop thread (from a
 *   thread of its own, it gets there with chatd_api.post()).
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

/** ABI version this header describes. See the ABI promise above.
 *  1.1 appended: CHATD_ROW, CHATD_HAS, the room, destination and history
 *  constants, chatd_api.room_parse, msg_room_members and room_format.
 *  1.2 appended: idempotency keys (chatd_msg_fields.idem_key,
 *  chatd_api.msg_idem_key and core_limit, chatd_store_ops.idem_get), dead letters
 *  (chatd_api.dead_letter, chatd_store_ops.dead_letter).
 *  1.3 appended: replay (chatd_api.replay, chatd_store_ops.replay). */
#define CHATD_ABI_MAJOR 1
#define CHATD_ABI_MINOR 3

/** Name of the one symbol each plugin exports (see chatd_plugin_entry_fn). */
#define CHATD_PLUGIN_ENTRY "chatd_plugin_entry"

#if defined(__GNUC__)
#define CHATD_EXPORT __attribute__((visibility("default")))
#define CHATD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CHATD_EXPORT
#define CHATD_PRINTF(f, a)
#endif

/* ---- Status codes ---------------------------------------------------- */

/**
 * Result of every hook and of most services. Values are fixed forever.
 * Negative values are errors; chatd_api.status_str() names each one. Which
 * statuses each function may return, complete with or pass to its callback,
 * and what each means there, is listed with the function ("Returns:",
 * "Completes with:", "Statuses seen by cb:").
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

/* ---- Rooms and destinations ------------------------------------------ */

/*
 * A room is the conversation of two members. Its id is "low&high": the two
 * member ids in decimal (no sign, no leading zero), the smaller first,
 * joined by '&' (e.g. "3&17"). Parse one with chatd_api.room_parse (which
 * accepts either order), write one with chatd_api.room_format, and get the
 * two members of a message's room with chatd_api.msg_room_members: never
 * parse it yourself.
 */

/** Size of a buffer that holds any room id, the terminating NUL included
 *  (two 19-digit ids and '&'). */
#define CHATD_ROOM_ID_MAX 40

/** Largest history page chatd_api.history asks a store for, and the page it
 *  asks for when the caller gives a limit of 0. */
#define CHATD_HISTORY_MAX 200u
#define CHATD_HISTORY_DEFAULT 50u

/** Destination a client SENDs chat lines to (a CHAT message). */
#define CHATD_DEST_PUBLISH "/pub/chat/message"

/** Destination a client SENDs read events to (a READ message). */
#define CHATD_DEST_READ "/pub/chat/read"

/** Destination of one room: CHATD_DEST_ROOM_PREFIX + room id, e.g.
 *  "/sub/chat/room/3&17". Receives every CHAT message of that room. */
#define CHATD_DEST_ROOM_PREFIX "/sub/chat/room/"

/** A member's "side" destination: CHATD_DEST_SIDE_PREFIX + member id, e.g.
 *  "/sub/chat/side/3". The side of member N receives every CHAT message of
 *  every room N is in (to update N's room list and unread counts) and N's own
 *  READ events (so N's other sessions see what N has read). */
#define CHATD_DEST_SIDE_PREFIX "/sub/chat/side/"

/* ---- Opaque handles -------------------------------------------------- */

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

/* ---- Plain records (filled by stores, read by the core and transports)  */

/**
 * Does sized record or table `rec` (a pointer to `type`) cover `field`?
 * True when the writer's declared size reaches the end of the field, e.g.
 *     CHATD_HAS(chatd_member, row, created_ms) ? row->created_ms : 0
 */
#define CHATD_HAS(type, rec, field)                                                                \
    ((size_t)(rec)->size >= offsetof(type, field) + sizeof(((const type *)0)->field))

/**
 * Row i of an array of records handed to a callback (n > 0), indexed by the
 * size the writer declared in its rows, not by the reader's sizeof (which
 * grows with later minors):  const chatd_member *m = CHATD_ROW(chatd_member,
 * rows, i);  Read fields added after 1.0 only when CHATD_HAS says so.
 */
#define CHATD_ROW(type, rows, i)                                                                   \
    ((const type *)(const void *)((const char *)(rows) + (size_t)(i) * (size_t)(rows)->size))

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
    /* --- ABI 1.2: read only when `size` covers the field ------------------ */
    /** CHAT: the sender's idempotency key, 1 to 128 visible ASCII characters
     *  (0x21-0x7e), or NULL. On publish the core refuses a malformed key
     *  (CHATD_ERR_INVALID); stores pass back the key they kept. Copied. */
    const char *idem_key;
} chatd_msg_fields;

/* ---- Callbacks used by services and store queries -------------------- */

/* Every callback below is called exactly once per call that takes it, on the
 * loop thread, possibly before that call returns; what it is passed is
 * borrowed for the callback. The statuses it can see are listed with the
 * function that calls it ("Statuses seen by cb:"); "the store's errors" are
 * whatever the store's hook answered (usually CHATD_ERR_IO or _BUSY). */

/** Loop-thread function queued with chatd_api.post() or a timer. */
typedef void (*chatd_task_fn)(void *arg);

/** Result of chatd_api.publish. On CHATD_OK `msg` is the message as queued
 *  (borrowed: ref it to keep it) and `reason` is NULL; otherwise `msg` is
 *  NULL (but see 1.2 below) and `reason` a human-readable cause (borrowed),
 *  never NULL.
 *  ABI 1.2: CHATD_ERR_EXISTS with a non-NULL `msg` answers a publish whose
 *  idempotency key (chatd_msg_fields.idem_key) the same member already used
 *  within the idempotency window: nothing new was published, `msg` is the
 *  original message (durable), and `reason` says so. Only publishes that
 *  carry a key can see it. */
typedef void (*chatd_publish_cb)(void *arg, chatd_status status, const char *reason,
                                 chatd_msg *msg);

/** Member result: on CHATD_OK, rows[0..n) (index with CHATD_ROW), borrowed
 *  for the call; n may be 0 for a list. On an error rows is NULL, n 0. */
typedef void (*chatd_member_cb)(void *arg, chatd_status status, const chatd_member *rows, size_t n);

/** Session result: on CHATD_OK one record (borrowed), else NULL. */
typedef void (*chatd_session_cb)(void *arg, chatd_status status, const chatd_session *s);

/** Room summaries, newest conversation first: on CHATD_OK rows[0..n) (index
 *  with CHATD_ROW; n may be 0), borrowed; on an error NULL and 0. */
typedef void (*chatd_rooms_cb)(void *arg, chatd_status status, const chatd_room_summary *rows,
                               size_t n);

/** A page of history, oldest first. msgs[0..n) borrowed: ref what you keep.
 *  `next_before` is the cursor for the next older page, 0 when none. On an
 *  error msgs is NULL, n and next_before 0. */
typedef void (*chatd_history_cb)(void *arg, chatd_status status, chatd_msg *const *msgs, size_t n,
                                 uint64_t next_before);

/** Login result: on CHATD_OK the new bearer token (borrowed, 64 hex chars)
 *  and the member (borrowed, pw_hash NULL); else both NULL. */
typedef void (*chatd_login_cb)(void *arg, chatd_status status, const char *token,
                               const chatd_member *member);

/** Generic result with a status only. */
typedef void (*chatd_status_cb)(void *arg, chatd_status status);

/** Room check result: on CHATD_OK the canonical room id (borrowed) and the
 *  peer's id; else NULL and 0. */
typedef void (*chatd_room_cb)(void *arg, chatd_status status, const char *room_id, int64_t peer_id);
/** chatd_store_ops.node_claim (ABI 1.3): CHATD_OK with the node id claimed
 *  and its high-water mark (Unix ms; 0 when the id was never used);
 *  CHATD_ERR_EXISTS with `holder` (borrowed), the live holder of the id; or
 *  an error (node_id and high_water_ms 0, holder NULL). */
typedef void (*chatd_node_cb)(void *arg, chatd_status status, uint32_t node_id,
                              int64_t high_water_ms, const char *holder);

/** node_claim's node_id asking for the lowest free id (1..1023). */
#define CHATD_NODE_AUTO UINT32_MAX

/** Metrics output: called with successive chunks of Prometheus text
 *  (borrowed), synchronously, before metrics_render returns. */
typedef void (*chatd_write_fn)(void *arg, const char *data, size_t len);

/* ---- Configuration keys a plugin accepts ----------------------------- */

/** Type of a config value; the core checks it before create is called. */
typedef enum chatd_cfg_type {
    CHATD_CFG_STRING = 1,
    CHATD_CFG_INT = 2,  /**< decimal integer within [min, max] */
    CHATD_CFG_BOOL = 3, /**< true/false, yes/no, on/off, 1/0 */
    CHATD_CFG_SIZE = 4  /**< integer with optional k/m/g suffix (x1024), within [min, max] */
} chatd_cfg_type;

/** One accepted key. A plugin's table ends with an entry whose name is NULL.
 *  Keys starting with a prefix that ends in '.' (e.g. "kafka.") match any key
 *  with that prefix (pass-through properties). This record has no `size`
 *  and never changes within a major (see "Sizes" at the top). */
typedef struct chatd_cfg_key {
    const char *name;
    chatd_cfg_type type;
    const char *default_value; /**< NULL: no default (absent unless set) */
    int64_t min, max;          /**< for INT and SIZE */
    const char *help;          /**< one line, shown by chatd -h PLUGIN */
} chatd_cfg_key;

/* ---- Core services --------------------------------------------------- */

/**
 * The core's services, passed to create(). Append-only. The core is of the
 * plugin's minor or newer (it refuses newer plugins), so every function the
 * plugin's header declares is present.
 *
 * Each function says on which thread it may be called ("loop thread" or
 * "any thread"), what it borrows, copies or hands over, and, when it
 * reports through a callback, which statuses that callback can see.
 */
typedef struct chatd_api {
    uint32_t size;      /**< sizeof(chatd_api) of the core */
    uint32_t abi_major; /**< the core's CHATD_ABI_MAJOR */
    uint32_t abi_minor; /**< the core's CHATD_ABI_MINOR */

    /* --- logging, config, errors ---------------------------------------- */

    /** Log one line, prefixed with the level and the instance name. The
     *  line is formatted before log returns. Any thread. */
    void (*log)(chatd_ctx *ctx, chatd_log_level level, const char *fmt, ...) CHATD_PRINTF(3, 4);

    /** Value of a key of this instance's config section, or its declared
     *  default, or NULL when neither. The string lives as long as the
     *  instance. Any thread (the configuration never changes once loaded). */
    const char *(*cfg_str)(chatd_ctx *ctx, const char *key);

    /** Integer (INT or SIZE key) value; when the key is absent, its declared
     *  default_value, or `dflt` when the key declares none. Declare every
     *  default in the key table and pass a `dflt` that is never used. Any
     *  thread. */
    int64_t (*cfg_int)(chatd_ctx *ctx, const char *key, int64_t dflt);

    /** Boolean value; when absent, the declared default, else `dflt`. Any
     *  thread. */
    int (*cfg_bool)(chatd_ctx *ctx, const char *key, int dflt);

    /** Iterate every key of the section starting with `prefix` (e.g. "kafka.").
     *  `fn` gets the key with the prefix removed and the value; both borrowed
     *  for that call. fn runs synchronously. Returns the number of keys
     *  visited. Any thread. */
    int (*cfg_each)(chatd_ctx *ctx, const char *prefix,
                    void (*fn)(void *arg, const char *key, const char *value), void *arg);

    /** Log a config error as "FILE:LINE: [instance] key: reason" (line of the
     *  key, or of the section when the key is absent). Use from create() and
     *  return CHATD_ERR_INVALID. Loop thread. */
    void (*cfg_error)(chatd_ctx *ctx, const char *key, const char *fmt, ...) CHATD_PRINTF(3, 4);

    /** Name of this instance (its config section). Lives as long as ctx.
     *  Any thread. */
    const char *(*instance_name)(chatd_ctx *ctx);

    /** Short name of a status code ("ok", "forbidden", ...; "unknown" for a
     *  value not in chatd_status). Static. Any thread. */
    const char *(*status_str)(chatd_status st);

    /* --- event loop ------------------------------------------------------- */

    /** The core's libevent 2.1 `struct event_base *`, as an opaque pointer.
     *  Plugins that link libevent may register events on it; their callbacks
     *  run on the loop thread. Loop thread. */
    void *(*event_base)(chatd_ctx *ctx);

    /** Run fn(arg) on the loop thread soon, never from inside post. Any
     *  thread; never blocks.
     *  Statuses: CHATD_OK queued (fn will run exactly once, also when chatd
     *  stops); CHATD_ERR_UNAVAILABLE the loop has stopped; CHATD_ERR_INVALID
     *  fn or ctx is NULL; CHATD_ERR_NOMEM. On an error fn is never called and
     *  the caller still owns arg. */
    chatd_status (*post)(chatd_ctx *ctx, chatd_task_fn fn, void *arg);

    /** Finish a hook that returned CHATD_ASYNC, exactly once; the handle is
     *  gone afterwards. `reason` (copied; may be NULL) explains a non-OK
     *  status. Which statuses mean what is listed with each hook.
     *  Completing with CHATD_ASYNC is a bug (logged, treated as
     *  CHATD_ERR_INTERNAL); a second completion is logged and ignored. Loop
     *  thread (a completion from another thread is logged and moved to the
     *  loop). */
    void (*complete)(chatd_completion *c, chatd_status status, const char *reason);

    /** Wall clock, ms since the Unix epoch. Any thread. */
    int64_t (*now_ms)(void);

    /* --- messages --------------------------------------------------------- */

    /** New message from fields (strings copied; the room canonicalised).
     *  Returns a handle with one reference owned by the caller, or NULL for
     *  invalid fields (unknown kind, bad room, no writer, text not UTF-8) or
     *  no memory. Any thread. */
    chatd_msg *(*msg_new)(chatd_ctx *ctx, const chatd_msg_fields *f);

    /** Parse the JSON wire form (as produced by msg_json; `json` borrowed)
     *  into a new message with one reference owned by the caller, in *out.
     *  Statuses: CHATD_OK; CHATD_ERR_INVALID malformed input (*out NULL);
     *  CHATD_ERR_NOMEM. Any thread. */
    chatd_status (*msg_from_json)(chatd_ctx *ctx, const char *json, size_t len, chatd_msg **out);

    /** Add a reference; returns msg. Loop thread. */
    chatd_msg *(*msg_ref)(chatd_msg *msg);
    /** Drop a reference; frees at zero. NULL is ignored. Loop thread. */
    void (*msg_unref)(chatd_msg *msg);

    /* The accessors below read a message that no longer changes (it has left
     * the filter stage, or was made by msg_new or msg_from_json and not yet
     * published): any thread, while you hold a reference. What they return
     * is borrowed from msg. */

    chatd_msg_kind (*msg_kind)(const chatd_msg *msg);
    /** 64-bit id: time, node and sequence; increases with time. 0 before the
     *  core stamps a publish. */
    uint64_t (*msg_id)(const chatd_msg *msg);
    /** Canonical room id "low&high". */
    const char *(*msg_room)(const chatd_msg *msg);
    int64_t (*msg_writer_id)(const chatd_msg *msg);
    /** Writer's login id. */
    const char *(*msg_writer)(const chatd_msg *msg);
    /** Text and its length in bytes (UTF-8, no NUL inside); "" for READ. */
    const char *(*msg_text)(const chatd_msg *msg, size_t *len);
    int64_t (*msg_time_ms)(const chatd_msg *msg);
    /** READ events: the newest id read. 0 for CHAT. */
    uint64_t (*msg_up_to)(const chatd_msg *msg);
    /** The JSON wire body (what subscribers receive and queues carry),
     *  encoded once and cached; borrowed from msg, valid while you hold a
     *  reference. NULL only when out of memory. Loop thread (it may encode
     *  and cache); a published message is already encoded. */
    const char *(*msg_json)(chatd_msg *msg, size_t *len);

    /** Replace the text (copied). Only inside a filter hook, before its
     *  completion. Statuses: CHATD_OK; CHATD_ERR_INVALID outside a filter
     *  hook, on a READ event, or text not valid UTF-8; CHATD_ERR_NOMEM (the
     *  text is unchanged). Loop thread. */
    chatd_status (*msg_set_text)(chatd_msg *msg, const char *text, size_t len);

    /* --- pipeline ----------------------------------------------------------- */

    /**
     * Publish from an authenticated member (transports). The core validates
     * (room membership, size, UTF-8), stamps id and time, runs filters, hands
     * it to the queue, and calls cb once the queue reports it durable or
     * failed. f->writer_id must be the authenticated member; f->writer, f->id
     * and f->time_ms are ignored; `f` and its strings are copied before
     * publish returns. cb is always called exactly once, possibly before
     * publish returns. Loop thread.
     * Statuses seen by cb:
     *   CHATD_OK               durable in the queue: it will not be lost.
     *   CHATD_ERR_INVALID      bad fields record or kind, no writer or room,
     *                          text empty, over max_message_bytes or not UTF-8,
     *                          READ without up_to, malformed room id.
     *   CHATD_ERR_FORBIDDEN    the writer is not one of the room's members.
     *   CHATD_ERR_NOTFOUND     a member of the room does not exist.
     *   CHATD_ERR_BUSY         max_pending publishes in flight, the member's
     *                          publish_rate exceeded, or the queue's bound:
     *                          retry later.
     *   CHATD_REJECT           a filter refused it (reason names the filter).
     *   CHATD_ERR_UNAVAILABLE  chatd is stopping, the queue is not running or
     *                          its backend is down.
     *   CHATD_ERR_IO           the queue's backend failed.
     *   CHATD_ERR_NOMEM        out of memory (this message only).
     *   CHATD_ERR_INTERNAL     the queue answered CHATD_REJECT (a queue bug).
     *   CHATD_ERR_EXISTS       (1.2, only with f->idem_key) the member already
     *                          published this key within idempotency_window:
     *                          msg is that original message, nothing new was
     *                          published. A malformed key is CHATD_ERR_INVALID.
     *   Any other error a filter or the queue answers is passed on as is.
     */
    void (*publish)(chatd_ctx *ctx, const chatd_msg_fields *f, chatd_publish_cb cb, void *arg);

    /**
     * A queue hands a message back to the core (queues only). `flags` says
     * which stages to run (CHATD_CONSUME_*). msg borrowed: the core takes its
     * own reference. When the requested stages are done, done(arg, status)
     * is called once, possibly before consume returns (done may be NULL when
     * nothing waits). Loop thread.
     * Statuses seen by done:
     *   CHATD_OK               every asked stage done (persisted, if asked):
     *                          commit the offset now.
     *   CHATD_ERR_BUSY         the store's pending bound: redeliver later.
     *   CHATD_ERR_IO           the store failed: redeliver later.
     *   CHATD_ERR_UNAVAILABLE  chatd has stopped or the store is not running.
     *   CHATD_ERR_INVALID      called by a plugin that is not a queue, no
     *                          message, id 0 or unknown flags (logged), or the
     *                          store refused the message as malformed.
     *   CHATD_ERR_NOMEM        out of memory: redeliver later.
     *   Any other error the store's persist answers is passed on as is.
     */
    void (*consume)(chatd_ctx *ctx, chatd_msg *msg, unsigned flags, chatd_status_cb done,
                    void *arg);

    /* --- members, sessions, rooms (transports) ---------------------------- */

    /** Register a member; strings copied. The password is hashed with
     *  argon2id off the loop thread; cb runs on the loop. Loop thread.
     *  Statuses seen by cb:
     *    CHATD_OK one row, the new member (pw_hash NULL);
     *    CHATD_ERR_INVALID login id, name or password break the rules;
     *    CHATD_ERR_EXISTS the login id is taken;
     *    CHATD_ERR_BUSY too many passwords waiting to be hashed;
     *    CHATD_ERR_UNAVAILABLE no store, or chatd is stopping;
     *    CHATD_ERR_NOMEM; CHATD_ERR_INTERNAL the store created no row;
     *    the store's errors. */
    void (*member_register)(chatd_ctx *ctx, const char *login_id, const char *name,
                            const char *password, chatd_member_cb cb, void *arg);

    /** Verify a password and open a session; strings copied. Loop thread.
     *  Statuses seen by cb:
     *    CHATD_OK the token and the member;
     *    CHATD_ERR_AUTH unknown login id or wrong password (the same answer
     *    and the same work for both);
     *    CHATD_ERR_BUSY too many passwords waiting to be verified;
     *    CHATD_ERR_UNAVAILABLE no store, or chatd is stopping;
     *    CHATD_ERR_NOMEM; the store's errors. */
    void (*login)(chatd_ctx *ctx, const char *login_id, const char *password, chatd_login_cb cb,
                  void *arg);

    /** Close the session of `token` (copied). cb may be NULL. Loop thread.
     *  Statuses seen by cb: CHATD_OK (also when no such session existed,
     *  if the store says so); CHATD_ERR_AUTH not a well-formed token;
     *  CHATD_ERR_UNAVAILABLE no store; the store's errors. */
    void (*logout)(chatd_ctx *ctx, const char *token, chatd_status_cb cb, void *arg);

    /** Resolve a bearer token to its member. Cached; usually answers before
     *  returning. Loop thread.
     *  Statuses seen by cb: CHATD_OK one row (pw_hash NULL);
     *  CHATD_ERR_AUTH unknown, expired or malformed token;
     *  CHATD_ERR_UNAVAILABLE no store; CHATD_ERR_NOMEM; the store's errors. */
    void (*authenticate)(chatd_ctx *ctx, const char *token, chatd_member_cb cb, void *arg);

    /** One member by id (login_id NULL; answered from the member cache when
     *  it can) or by login id (id 0). Loop thread.
     *  Statuses seen by cb: CHATD_OK one row (pw_hash NULL);
     *  CHATD_ERR_NOTFOUND no such member; CHATD_ERR_INVALID id <= 0 without
     *  a login id; CHATD_ERR_UNAVAILABLE no store; CHATD_ERR_NOMEM;
     *  CHATD_ERR_INTERNAL the store's rows are too short; the store's errors. */
    void (*member_get)(chatd_ctx *ctx, int64_t id, const char *login_id, chatd_member_cb cb,
                       void *arg);

    /** All members, by id. Loop thread.
     *  Statuses seen by cb: CHATD_OK n rows (pw_hash NULL, n may be 0);
     *  CHATD_ERR_UNAVAILABLE no store; CHATD_ERR_NOMEM; CHATD_ERR_INTERNAL
     *  the store's rows are too short; the store's errors. */
    void (*member_list)(chatd_ctx *ctx, chatd_member_cb cb, void *arg);

    /** Check that `member_id` may use room `room` ("a&b" in either order,
     *  both existing members, member_id one of them). Loop thread.
     *  Statuses seen by cb: CHATD_OK the canonical room and the peer;
     *  CHATD_ERR_INVALID malformed room id; CHATD_ERR_FORBIDDEN member_id
     *  is not in it; CHATD_ERR_NOTFOUND a member of it does not exist;
     *  CHATD_ERR_UNAVAILABLE no store to look members up in;
     *  CHATD_ERR_NOMEM; the store's errors. */
    void (*room_check)(chatd_ctx *ctx, int64_t member_id, const char *room, chatd_room_cb cb,
                       void *arg);

    /** The member's conversations, newest first: the store's rows, passed
     *  on as they are (index them with CHATD_ROW). Loop thread.
     *  Statuses seen by cb: CHATD_OK n rows (n may be 0);
     *  CHATD_ERR_INVALID member_id <= 0; CHATD_ERR_UNAVAILABLE no store;
     *  the store's errors. */
    void (*room_list)(chatd_ctx *ctx, int64_t member_id, chatd_rooms_cb cb, void *arg);

    /** History of a room the member is in: up to `limit` messages with
     *  id < before (0: newest), oldest first. A limit of 0 means
     *  CHATD_HISTORY_DEFAULT, one above CHATD_HISTORY_MAX means that.
     *  Loop thread.
     *  Statuses seen by cb: the statuses of room_check, then CHATD_OK a
     *  page; CHATD_ERR_UNAVAILABLE no store; CHATD_ERR_NOMEM; the store's
     *  errors. */
    void (*history)(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t before,
                    unsigned limit, chatd_history_cb cb, void *arg);

    /* --- metrics ---------------------------------------------------------- */

    /** Add to a counter named `name` (Prometheus metric name, e.g.
     *  "chatd_ws_frames_total"; copied), labelled with this instance. A bad
     *  name or too many series is logged at debug and ignored. Loop thread. */
    void (*counter_add)(chatd_ctx *ctx, const char *name, uint64_t delta);

    /** Set a gauge, labelled with this instance; as counter_add. Loop
     *  thread. */
    void (*gauge_set)(chatd_ctx *ctx, const char *name, int64_t value);

    /** Write every metric in Prometheus text format through fn, before
     *  returning. Loop thread. */
    void (*metrics_render)(chatd_ctx *ctx, chatd_write_fn fn, void *arg);

    /** Is the pipeline up (chatd running, queue and store started and their
     *  last operation not a backend failure)? Returns 1 or 0. Loop thread. */
    int (*healthy)(chatd_ctx *ctx);

    /* --- rooms (ABI 1.1) -------------------------------------------------- */

    /** Parse room id `room`: "a&b", two different positive decimal member
     *  ids without sign or leading zero, in either order. Any thread.
     *  Statuses: CHATD_OK *low < *high set; CHATD_ERR_INVALID anything else
     *  (NULL included), *low and *high untouched. */
    chatd_status (*room_parse)(const char *room, int64_t *low, int64_t *high);

    /** The two members of the room of `msg` (low < high), without parsing.
     *  Any thread (while you hold a reference). */
    void (*msg_room_members)(const chatd_msg *msg, int64_t *low, int64_t *high);

    /** Write the canonical room id "low&high" of members a and b (either
     *  order) into buf. Returns its length (without the NUL), or -1 when a or
     *  b is not positive, a == b, or cap is too small (buf is then "" if
     *  cap > 0). A buffer of CHATD_ROOM_ID_MAX always fits. Any thread. */
    int (*room_format)(char *buf, size_t cap, int64_t a, int64_t b);

    /* --- ABI 1.2: check `size` (or abi_minor >= 2) before calling --------- */

    /** The message's idempotency key (borrowed from msg), or NULL when it was
     *  published without one. Any thread. */
    const char *(*msg_idem_key)(const chatd_msg *msg);

    /** Value of an integer key of the core's own [chatd] section, for limits a
     *  plugin must apply exactly as the core does: "max_message_bytes" (bytes),
     *  "publish_rate", "idempotency_window" (seconds), "max_pending". Returns
     *  -1 for any other key. Any thread. */
    int64_t (*core_limit)(chatd_ctx *ctx, const char *key);

    /** The text a client is shown when a room check (room_check, or the
     *  room step of publish) answered `st`: e.g. CHATD_ERR_FORBIDDEN gives
     *  "forbidden: you are not a member of this room". Static; never NULL.
     *  Any thread. */
    const char *(*room_refusal)(chatd_status st);

    /* --- dead letters (ABI 1.2) ------------------------------------------- */

    /** Queues: hand a record you give up on (it failed to persist too many
     *  times, or is not a chatd message) to the store's dead-letter table
     *  (chatd_store_ops.dead_letter, same arguments: `source` says where it
     *  was, e.g. "kafka-chat[3]@1207", `payload` its `len` bytes, `reason`
     *  why; all borrowed for the call). Loop thread. cb may be NULL.
     *  Statuses seen by cb: CHATD_OK committed (move past the record now);
     *  CHATD_ERR_UNAVAILABLE no store, or the store keeps no dead letters
     *  (logged); the store's errors. On an error keep the record. */
    void (*dead_letter)(chatd_ctx *ctx, const char *source, const void *payload, size_t len,
                        const char *reason, chatd_status_cb cb, void *arg);

    /* --- ABI 1.3: check `size` (or abi_minor >= 3) before calling --------- */

    /** The messages of one stream after position `after`, oldest first,
     *  at most `limit` (0: CHATD_HISTORY_DEFAULT; clamped to
     *  CHATD_HISTORY_MAX), for resume and forward paging. A message's
     *  position is its id (docs/delivery.md: the order fan-out follows).
     *  room != NULL: the CHAT messages of that room, which member_id must be
     *  in (statuses as history). room NULL: member_id's side stream, the CHAT
     *  messages of every room of member_id and member_id's own READ events.
     *  cb's next_before is 0. CHATD_ERR_UNAVAILABLE when the store cannot
     *  replay (an older store). */
    void (*replay)(chatd_ctx *ctx, int64_t member_id, const char *room, uint64_t after,
                   unsigned limit, chatd_history_cb cb, void *arg);

    /** member_register with the client's address, for the throttles of the
     *  [chatd] section: at most register_limit registrations per address per
     *  register_window, and at most max_hashes_per_addr password hashes
     *  queued or running per address. Both are decided before any hash.
     *  `client_addr`: the peer's IP address as text, without port (copied);
     *  NULL or "" skips the per-address limits (member_register does that).
     *  `retry_after`: NULL, or where the core writes, before cb sees
     *  CHATD_ERR_BUSY, the seconds (>= 1) after which a retry can succeed
     *  (HTTP Retry-After); untouched otherwise. It must stay valid until cb
     *  has been called. Loop thread.
     *  Statuses seen by cb: those of member_register; CHATD_ERR_BUSY
     *  throttled or the hashing queue is full: retry after *retry_after s. */
    void (*member_register2)(chatd_ctx *ctx, const char *login_id, const char *name,
                             const char *password, const char *client_addr, uint32_t *retry_after,
                             chatd_member_cb cb, void *arg);

    /** login with the client's address: once login_fail_limit failed logins
     *  (counting those still being checked) were made for this login id, or
     *  from this address, within login_fail_window, further attempts are
     *  refused with CHATD_ERR_BUSY, before any hash, until the window ends;
     *  a success clears the login id's count. max_hashes_per_addr applies
     *  as for member_register2. `client_addr` and `retry_after` as for
     *  member_register2 (NULL address: only the per-login-id limit). Loop
     *  thread.
     *  Statuses seen by cb: those of login; CHATD_ERR_BUSY throttled or the
     *  hashing queue is full: retry after *retry_after s. */
    void (*login2)(chatd_ctx *ctx, const char *login_id, const char *password,
                   const char *client_addr, uint32_t *retry_after, chatd_login_cb cb, void *arg);
} chatd_api;

/* ---- Per-kind hook tables -------------------------------------------- */

/*
 * Every hook is called on the loop thread and must not block. A hook that
 * takes a chatd_completion and returns CHATD_ASYNC finishes it later with
 * chatd_api.complete(), exactly once; a hook that returns anything else must
 * not touch it. "Returns:" lists what a hook may return and what the core
 * does with each; "Completes with:" what it may complete with.
 */

/** Transport hooks. */
typedef struct chatd_transport_ops {
    uint32_t size;
    /** Mandatory. Deliver `msg` to local subscribers of `destination`
     *  (CHATD_DEST_ROOM_PREFIX + room id, or CHATD_DEST_SIDE_PREFIX + member
     *  id; borrowed for the call). msg borrowed: take a reference to keep it
     *  (e.g. while its JSON is queued on sockets). Never blocks; nothing is
     *  returned: a subscriber that cannot take it is the transport's matter. */
    void (*deliver)(void *inst, const char *destination, chatd_msg *msg);

    /* --- ABI 1.3: optional; the core checks `size` and NULL --------------- */

    /** The login session whose token hashes to `token_hash` (BLAKE2b-256 of
     *  the token, 64 lowercase hex chars; borrowed for the call) has ended:
     *  logged out on any node, or expired. End every live session opened with
     *  that token here (STOMP: ERROR with message:session ended, then close).
     *  Never blocks. */
    void (*session_ended)(void *inst, const char *token_hash);
} chatd_transport_ops;

/** Queue hooks. */
typedef struct chatd_queue_ops {
    uint32_t size;
    /** Mandatory. Make msg durable, then complete(done); later hand it back
     *  with chatd_api.consume(). msg borrowed: ref to keep.
     *  Returns: CHATD_ASYNC accepted (normal), complete `done` later;
     *  CHATD_OK already durable (`done` is discarded by the core);
     *  CHATD_ERR_BUSY, _UNAVAILABLE, _IO or _NOMEM refused, the publisher
     *  gets that status. (CHATD_REJECT is a queue bug: the publisher gets
     *  CHATD_ERR_INTERNAL.)
     *  Completes with: CHATD_OK durable (the publisher's RECEIPT); any
     *  error, passed to the publisher with the reason. CHATD_ERR_IO and
     *  CHATD_ERR_UNAVAILABLE mark the queue down (chatd_api.healthy 0) until
     *  the next CHATD_OK. */
    chatd_status (*enqueue)(void *inst, chatd_msg *msg, chatd_completion *done);
} chatd_queue_ops;

/**
 * Store hooks. Every query reports through its callback, on the loop thread,
 * exactly once per call, possibly before the hook returns. Record strings
 * and rows are borrowed for the callback. The core passes a query's status
 * on to the plugin that asked (see chatd_api), so answer with the statuses
 * listed here: CHATD_OK, the one "not there" status a query names, or
 * CHATD_ERR_IO (backend failed), CHATD_ERR_BUSY (a bound is reached),
 * CHATD_ERR_UNAVAILABLE (stopping, or the backend is gone),
 * CHATD_ERR_NOMEM.
 */
typedef struct chatd_store_ops {
    uint32_t size;
    /** Mandatory. Persist a CHAT message (idempotent by id: a second call with
     *  the same message changes nothing; another message whose id is stored
     *  already completes CHATD_ERR_EXISTS, logged and counted in
     *  chatd_store_id_conflicts_total, never CHATD_OK) and both members' room
     *  summaries; or apply a READ event (last_read_id = max(old, up_to),
     *  unread recounted).
     *  Batch freely; complete(done) only after the batch has committed. msg
     *  borrowed: ref to keep it until then.
     *  Returns: CHATD_ASYNC (normal); CHATD_OK committed already (`done` is
     *  discarded); CHATD_ERR_BUSY the pending bound is reached (the queue
     *  redelivers later; logged at debug); CHATD_ERR_IO,
     *  CHATD_ERR_UNAVAILABLE, CHATD_ERR_NOMEM failed (the queue redelivers);
     *  CHATD_ERR_INVALID a message it can never store. (CHATD_REJECT is
     *  taken as CHATD_ERR_INVALID.)
     *  Completes with: the same statuses. CHATD_OK lets the queue commit and
     *  fans the message out; CHATD_ERR_IO and CHATD_ERR_UNAVAILABLE mark the
     *  store down (chatd_api.healthy 0) until the next CHATD_OK. */
    chatd_status (*persist)(void *inst, chatd_msg *msg, chatd_completion *done);

    /** Create a member (m->id ignored; m and its strings borrowed for the
     *  call). cb: CHATD_OK one row, the member with its new id;
     *  CHATD_ERR_EXISTS the login id is taken; or an error. */
    void (*member_create)(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg);

    /** Find a member by id (login_id NULL) or login id; pw_hash included.
     *  cb: CHATD_OK one row; CHATD_ERR_NOTFOUND none; or an error. */
    void (*member_get)(void *inst, int64_t id, const char *login_id, chatd_member_cb cb, void *arg);

    /** All members ordered by id (pw_hash NULL). cb: CHATD_OK n rows (n may
     *  be 0); or an error. */
    void (*member_list)(void *inst, chatd_member_cb cb, void *arg);

    /** Store a session (s borrowed for the call). cb may be NULL.
     *  cb: CHATD_OK stored; or an error (the login fails with it). */
    void (*session_put)(void *inst, const chatd_session *s, chatd_status_cb cb, void *arg);

    /** Find a session by token hash. cb: CHATD_OK one row (expired rows may
     *  be returned; the core checks expires_ms); CHATD_ERR_NOTFOUND none; or
     *  an error. */
    void (*session_get)(void *inst, const char *token_hash, chatd_session_cb cb, void *arg);

    /** Delete a session. cb may be NULL. cb: CHATD_OK deleted or not there;
     *  or an error. */
    void (*session_del)(void *inst, const char *token_hash, chatd_status_cb cb, void *arg);

    /** Room summaries of a member, newest last_ms first. cb: CHATD_OK n rows
     *  (n may be 0); or an error. */
    void (*room_list)(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg);

    /** Up to `limit` CHAT messages of `room_id` (canonical, checked by the
     *  core) with id < before (0: no bound), delivered oldest first;
     *  next_before is the smallest id returned when older messages exist,
     *  else 0. Messages built with msg_new; the callback borrows them (unref
     *  yours after it returns). The core never asks for more than
     *  CHATD_HISTORY_MAX. cb: CHATD_OK n messages (n may be 0); or an
     *  error. */
    void (*history)(void *inst, const char *room_id, uint64_t before, unsigned limit,
                    chatd_history_cb cb, void *arg);

    /* --- ABI 1.2: optional; the core checks `size` and NULL --------------- */

    /**
     * Idempotency memory. persist() of a CHAT message that carries a key
     * (chatd_api.msg_idem_key) records (writer_id, key) -> message id in the
     * same transaction as the message; when the store already holds that
     * (writer_id, key) for another message newer than the window
     * (chatd_api.core_limit "idempotency_window" seconds before the new
     * message's time), the new message is a duplicate: nothing is written and
     * persist completes CHATD_OK. Records older than the window may be
     * deleted at any time.
     *
     * idem_get: the CHAT message member_id published with `key` at or after
     * since_ms (Unix ms): cb(arg, CHATD_OK, &msg, 1, 0), msg built with
     * msg_new and carrying its key; CHATD_ERR_NOTFOUND with n 0 when there is
     * none; CHATD_ERR_IO / CHATD_ERR_UNAVAILABLE when the store cannot say.
     * `key` borrowed for the call. Loop thread; cb exactly once.
     */
    void (*idem_get)(void *inst, int64_t member_id, const char *key, int64_t since_ms,
                     chatd_history_cb cb, void *arg);

    /** Optional (ABI 1.2). Keep a record a queue gave up on in a dead-letter
     *  table, durably, with where it came from, its bytes and why
     *  (chatd_api.dead_letter; strings and payload copied). cb may be NULL.
     *  cb: CHATD_OK committed; CHATD_ERR_BUSY the pending bound is reached;
     *  or an error. */
    void (*dead_letter)(void *inst, const char *source, const void *payload, size_t len,
                        const char *reason, chatd_status_cb cb, void *arg);

    /* --- ABI 1.3: optional; the core checks `size` and NULL --------------- */

    /**
     * Replay: up to `limit` messages with id > after, by id,
     * oldest first. room_id (canonical, checked by the core) != NULL: the
     * CHAT messages of that room (member_id 0). room_id NULL: the side stream
     * of member_id: the CHAT messages of every room member_id has a summary
     * of, and every READ event member_id published (so persist() of a READ
     * keeps the event itself, not only the read mark). Messages built with
     * msg_new (READ ones with up_to); borrowed by cb; next_before 0.
     * cb: CHATD_OK n messages (n may be 0), or an error. Loop thread.
     */
    void (*replay)(void *inst, const char *room_id, int64_t member_id, uint64_t after,
                   unsigned limit, chatd_history_cb cb, void *arg);

    /**
     * Delete every session whose expires_ms <= now_ms (expired sessions are
     * never valid again). cb: CHATD_OK (n sessions deleted, counted by the
     * core), or an error. Loop thread; the core calls it from a timer.
     */
    void (*session_purge)(void *inst, int64_t now_ms,
                          void (*cb)(void *arg, chatd_status status, uint64_t n), void *arg);

    /**
     * Node lease: claim node_id (0..1023, or CHATD_NODE_AUTO for the lowest
     * free id in 1..1023) for `holder` (borrowed; unique per process) until
     * now + lease_ms, durably, in one transaction. The id is free when no
     * row holds it, its lease expired, or `holder` holds it (a renewal: the
     * core calls again every lease_ms / 3 with the same holder and id). The
     * row keeps high_water_ms = max(stored, high_water_ms): the largest
     * message id time (Unix ms) the node may have used; the first claim
     * passes 0 and learns the stored mark.
     * cb: CHATD_OK (node_id, stored high-water mark); CHATD_ERR_EXISTS the
     * id (for CHATD_NODE_AUTO: every id) is held by another live holder,
     * named in cb; CHATD_ERR_IO, CHATD_ERR_UNAVAILABLE, CHATD_ERR_BUSY,
     * CHATD_ERR_NOMEM. Loop thread; cb exactly once. Optional: without it
     * the core uses node_id unchecked.
     */
    void (*node_claim)(void *inst, uint32_t node_id, const char *holder, int64_t lease_ms,
                       int64_t high_water_ms, chatd_node_cb cb, void *arg);
} chatd_store_ops;

/** Filter hooks. */
typedef struct chatd_filter_ops {
    uint32_t size;
    /** Mandatory. Inspect msg before it is queued; it may rewrite the text
     *  with chatd_api.msg_set_text until it returns or completes. msg
     *  borrowed: ref to keep.
     *  Returns: CHATD_OK pass (the next filter, then the queue);
     *  CHATD_REJECT refuse (the publisher gets CHATD_REJECT, "rejected by
     *  filter NAME"); CHATD_ASYNC complete `done` later; an error fails the
     *  publish with that status ("failed by filter NAME").
     *  Completes with: CHATD_OK, CHATD_REJECT with a reason the sender sees
     *  ("rejected by filter NAME: reason"), or an error. */
    chatd_status (*filter)(void *inst, chatd_msg *msg, chatd_completion *done);
} chatd_filter_ops;

/* ---- The descriptor -------------------------------------------------- */

/**
 * What a plugin is. Returned by its entry symbol; static storage, never freed.
 * abi_major, abi_minor and size come first in every version; the core reads
 * only the first `size` bytes and treats fields beyond them as NULL. Write it
 * with designated initializers. Every hook runs on the loop thread.
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
     *  valid until destroy returns. Returns: CHATD_OK; or an error, logged
     *  by the plugin (CHATD_ERR_INVALID after cfg_error for a bad value,
     *  CHATD_ERR_NOMEM, CHATD_ERR_IO), and chatd does not start (exit 1);
     *  destroy is not called for this instance. */
    chatd_status (*create)(const chatd_api *api, chatd_ctx *ctx, void **inst);

    /** Optional. Begin work (listen, connect, consume). Stores and queues are
     *  started before filters, transports last. Returns: CHATD_OK; or an
     *  error (logged by the plugin): chatd stops what it started and exits 1. */
    chatd_status (*start)(void *inst);

    /** Optional. Graceful stop: stop taking new work, finish what is in
     *  flight. Transports stop first, then filters, queues, stores. Returns:
     *  CHATD_OK stopped; CHATD_ASYNC complete `done` when stopped (with
     *  CHATD_OK, or an error that is logged); any other error is logged and
     *  the instance counts as stopped. A stop not completed within
     *  stop_timeout is given up on (logged) and chatd goes on. */
    chatd_status (*stop)(void *inst, chatd_completion *done);

    /** Mandatory. Free everything. The loop no longer runs your events;
     *  called for every created instance, after stop (or a given-up stop). */
    void (*destroy)(void *inst);

    /** Optional. SIGHUP: reopen files, re-read what can change at run time. */
    void (*reload)(void *inst);

    /** Kind-specific hooks: a chatd_transport_ops, chatd_queue_ops,
     *  chatd_store_ops or chatd_filter_ops, according to `kind`; static
     *  storage. */
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
