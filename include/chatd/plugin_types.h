/*
 * chatd/plugin_types.h - part of the public plugin ABI: status codes, room
 * identity, opaque handles, plain records, callbacks and config keys.
 *
 * Included by <chatd/plugin.h>, which is the one header a plugin includes
 * (it defines the ABI version, the export macros and the ABI promise that
 * apply here too); this file is never included on its own.
 */
#ifndef CHATD_PLUGIN_TYPES_H
#define CHATD_PLUGIN_TYPES_H

#ifndef CHATD_PLUGIN_H
#error "include <chatd/plugin.h>, not <chatd/plugin_types.h>"
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

/* ABI 1.5: position streams (docs/delivery.md, "Order"). A message's
 * position (chatd_api.msg_pos) belongs to one stream, and the positions of
 * one stream increase in the order its messages are delivered, on every
 * node; all messages of a room are in one stream. A position with
 * CHATD_POS_PARTITIONED set belongs to stream pos >> CHATD_POS_STREAM_SHIFT
 * (queue-kafka: the partition in bits 48-61, the offset below), spanning
 * [stream << SHIFT, (stream + 1) << SHIFT); any other position belongs to
 * the one unpartitioned stream, spanning [1, CHATD_POS_PARTITIONED).
 * Positions of different streams do not compare. */
#define CHATD_POS_PARTITIONED (UINT64_C(1) << 62)
#define CHATD_POS_STREAM_SHIFT 48
/** At most this many ranges in one side replay (chatd_api.side_replay). */
#define CHATD_POS_RANGES_MAX 64u

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
    /* --- ABI 1.4: read only when `size` covers the field ------------------ */
    /** The message's position in its room's delivery order (see
     *  chatd_api.msg_pos): 0 on publish and from queues (the position is
     *  then the id until a queue sets it); stores pass back the position
     *  they kept. */
    uint64_t pos;
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

/** ABI 1.6: n message positions (borrowed); on an error NULL and 0. */
typedef void (*chatd_positions_cb)(void *arg, chatd_status status, const uint64_t *pos, size_t n);

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

#endif /* CHATD_PLUGIN_TYPES_H */
