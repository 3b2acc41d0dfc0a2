/*
 * chatd/plugin_api.h - part of the public plugin ABI: the core services
 * table (chatd_api) handed to every plugin instance.
 *
 * Included by <chatd/plugin.h>, which is the one header a plugin includes
 * (it defines the ABI version, the export macros and the ABI promise that
 * apply here too); this file is never included on its own.
 */
#ifndef CHATD_PLUGIN_API_H
#define CHATD_PLUGIN_API_H

#ifndef CHATD_PLUGIN_H
#error "include <chatd/plugin.h>, not <chatd/plugin_api.h>"
#endif

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
     *  CHATD_HISTORY_MAX), for resume and forward paging: a room's by
     *  position (msg_pos, 1.4; before 1.4 the id), a side stream's by id
     *  (docs/delivery.md "Order").
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

    /** Write time `ms` (ms since the Unix epoch, negative for times before
     *  1970) as ISO-8601 UTC, "YYYY-MM-DDTHH:MM:SS.mmmZ", the form of the
     *  wire's "timestamp", into buf (truncated to size - 1 bytes; 25 bytes
     *  hold it whole). Any thread. */
    void (*time_format)(int64_t ms, char *buf, size_t size);

    /* --- ABI 1.4: check `size` (or abi_minor >= 4) before calling --------- */

    /** One page of the member list (GET /api/members): at most `limit`
     *  members with id > after_id, by id; prefix (borrowed; NULL or "" for
     *  all) keeps those whose login_id or name starts with it, ASCII letters
     *  without case. The store's member_page when it has one, else the core
     *  pages member_list. Ask for one more than you show to learn whether a
     *  next page exists. Loop thread.
     *  Statuses seen by cb: CHATD_OK n rows (pw_hash NULL, n may be 0);
     *  CHATD_ERR_INVALID limit 0 or after_id < 0; those of member_list. */
    void (*member_page)(chatd_ctx *ctx, int64_t after_id, const char *prefix, unsigned limit,
                        chatd_member_cb cb, void *arg);

    /** The message's position: where it sits in its room's one delivery
     *  order (docs/delivery.md, "Order"), which history, replay, unread
     *  counts and read marks follow. Positions of one room increase in the
     *  order its messages are delivered; positions of different rooms need
     *  not be comparable. The id unless a queue set another (msg_set_pos) or
     *  a store passed one back (chatd_msg_fields.pos). Any thread. */
    uint64_t (*msg_pos)(const chatd_msg *msg);

    /** Queues only: set the position of a message. Either of one the queue
     *  made itself (msg_from_json) and still holds the only reference to,
     *  before handing it to consume(); or, once, of a message being
     *  published (the one enqueue() was given), when the queue learns where
     *  it was placed, before it completes the enqueue: the publisher's
     *  answer then names that position (the REST send's cursor). Statuses:
     *  CHATD_OK (also when a shared message already has this position);
     *  CHATD_ERR_INVALID pos 0, or a shared message that already has another
     *  position. Loop thread. */
    chatd_status (*msg_set_pos)(chatd_msg *msg, uint64_t pos);

    /* --- ABI 1.5: check `size` (or abi_minor >= 5) before calling --------- */

    /** member_id's side stream by position ranges, for resuming a side
     *  subscription exactly when it spans several position streams
     *  (CHATD_POS_PARTITIONED): at most `limit` (0: CHATD_HISTORY_DEFAULT;
     *  clamped to CHATD_HISTORY_MAX) of the CHAT messages of every room of
     *  member_id and member_id's own READ events whose position p lies in one
     *  of the n ranges after[i] < p < until[i], by position, oldest first.
     *  The ranges must be sorted and disjoint (after[i] < until[i] <=
     *  after[i+1]); both arrays are borrowed for the call only. Each message
     *  carries its position (msg_pos). Loop thread.
     *  Statuses seen by cb: CHATD_OK n messages (n may be 0, next_before 0);
     *  CHATD_ERR_INVALID member_id <= 0, n == 0 or over
     *  CHATD_POS_RANGES_MAX, ranges not sorted and disjoint;
     *  CHATD_ERR_UNAVAILABLE the store cannot (no side_replay: an older
     *  store); the store's errors. */
    void (*side_replay)(chatd_ctx *ctx, int64_t member_id, const uint64_t *after,
                        const uint64_t *until, size_t n, unsigned limit, chatd_history_cb cb,
                        void *arg);

    /* --- ABI 1.6: check `size` (or abi_minor >= 6) before calling --------- */

    /** The stored head of every partitioned position stream
     *  (CHATD_POS_PARTITIONED) that holds a CHAT message: its highest
     *  position, one per stream, ascending (transport-ws seeds its side
     *  cursor table with them at start). Loop thread.
     *  Statuses seen by cb: CHATD_OK n positions (n may be 0, borrowed);
     *  CHATD_ERR_UNAVAILABLE the store cannot (no stream_heads: an older
     *  store); the store's errors. */
    void (*stream_heads)(chatd_ctx *ctx, chatd_positions_cb cb, void *arg);
} chatd_api;

#endif /* CHATD_PLUGIN_API_H */
