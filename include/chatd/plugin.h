/*
 * chatd/plugin.h - the public, versioned plugin ABI of chatd.
 *
 * This is the only header a third-party plugin includes. It declares:
 *   - the descriptor every plugin returns from its single exported entry symbol,
 *   - the per-kind hook tables (transport, queue, store, filter),
 * and includes its two parts:
 *   - <chatd/plugin_types.h>: status codes, room identity, the opaque message
 *     handle, the plain result records stores fill in, callbacks, config keys;
 *   - <chatd/plugin_api.h>: the core services table (chatd_api) handed to
 *     every instance at create.
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
 *  1.3 appended: replay (chatd_api.replay, chatd_store_ops.replay), the
 *  throttled logins (chatd_api.member_register2, login2), sessions ended
 *  everywhere (chatd_transport_ops.session_ended, chatd_store_ops
 *  .session_purge), node leases (chatd_store_ops.node_claim) and
 *  chatd_api.time_format.
 *  1.4 appended: paged member lists (chatd_store_ops.member_page,
 *  chatd_api.member_page); message positions, one delivery order per room
 *  (chatd_msg_fields.pos, chatd_api.msg_pos and msg_set_pos).
 *  1.5 appended: position streams (CHATD_POS_PARTITIONED,
 *  CHATD_POS_STREAM_SHIFT, CHATD_POS_RANGES_MAX) and the side stream's
 *  replay by position ranges (chatd_store_ops.side_replay,
 *  chatd_api.side_replay).
 *  1.6 appended: the stored head of each position stream
 *  (chatd_positions_cb, chatd_store_ops.stream_heads,
 *  chatd_api.stream_heads).
 *  1.7 appended: the newest idempotency records, read once per node start
 *  to seed the fan-out's memory of keys (chatd_store_ops.idem_recent). */
#define CHATD_ABI_MAJOR 1
#define CHATD_ABI_MINOR 7

/** Name of the one symbol each plugin exports (see chatd_plugin_entry_fn). */
#define CHATD_PLUGIN_ENTRY "chatd_plugin_entry"

#if defined(__GNUC__)
#define CHATD_EXPORT __attribute__((visibility("default")))
#define CHATD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CHATD_EXPORT
#define CHATD_PRINTF(f, a)
#endif

/* The types every table below uses, then the core services table. */
#include <chatd/plugin_types.h>

#include <chatd/plugin_api.h>

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
     *  core) with id < before (0: no bound), delivered oldest first (1.4:
     *  by position, below the position of message `before`, and persist()
     *  keeps chatd_api.msg_pos; the room summary's last message and read
     *  mark are the ones of highest position);
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
     * Replay: up to `limit` messages after `after`, oldest first: for a
     * room, position > after by position (chatd_api.msg_pos; 1.4: the store
     * keeps each message's position and passes it back in
     * chatd_msg_fields.pos; before 1.4 the id); for a side stream, which
     * spans rooms whose positions need not compare, id > after by id. room_id (canonical, checked
     * by the core) != NULL: the CHAT messages of that room (member_id 0). room_id NULL: the side
     * stream of member_id: the CHAT messages of every room member_id has a summary of, and every
     * READ event member_id published (so persist() of a READ keeps the event itself, not only the
     * read mark). Messages built with msg_new (READ ones with up_to); borrowed by cb; next_before
     * 0. cb: CHATD_OK n messages (n may be 0), or an error. Loop thread.
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
     * core calls again every lease_ms / 3 with the same holder and id; at a
     * graceful stop it releases the id with a last claim of lease_ms = 1). The
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

    /* --- ABI 1.4: optional; the core checks `size` and NULL --------------- */

    /**
     * One page of the member list: at most `limit` (>= 1) members with
     * id > after_id, ordered by id, pw_hash NULL. prefix (borrowed; NULL or
     * "" for every member): only members whose login_id or name starts with
     * it, ASCII letters compared without case (other characters as they
     * are). Answered from an index, never by reading every member.
     * cb: CHATD_OK n rows (n may be 0); or an error. Loop thread; cb exactly
     * once. Optional: without it the core pages member_list itself.
     */
    void (*member_page)(void *inst, int64_t after_id, const char *prefix, unsigned limit,
                        chatd_member_cb cb, void *arg);

    /* --- ABI 1.5: optional; the core checks `size` and NULL --------------- */

    /**
     * The side stream of member_id by position ranges: at most `limit`
     * (1..CHATD_HISTORY_MAX) of the CHAT messages of every room member_id
     * has a summary of and of the READ events member_id published, whose
     * position p lies in one of the n (1..CHATD_POS_RANGES_MAX) ranges
     * after[i] < p < until[i], ordered by position, oldest first. The
     * ranges are sorted and disjoint (after[i] < until[i] <= after[i+1]);
     * both arrays are borrowed for the call only. A READ event's position
     * is the one its message had when persist() was called with it (kept
     * with the event, as a CHAT message's is). Messages built with msg_new
     * with pos set (READ ones with up_to); borrowed by cb; next_before 0.
     * cb: CHATD_OK n messages (n may be 0), or an error. Loop thread; cb
     * exactly once. Optional: without it the core answers
     * chatd_api.side_replay with CHATD_ERR_UNAVAILABLE.
     */
    void (*side_replay)(void *inst, int64_t member_id, const uint64_t *after, const uint64_t *until,
                        size_t n, unsigned limit, chatd_history_cb cb, void *arg);

    /* --- ABI 1.6: optional; the core checks `size` and NULL --------------- */

    /**
     * The head of every partitioned position stream (CHATD_POS_PARTITIONED)
     * that holds a stored CHAT message: the highest such message's position,
     * one per stream, ascending. Read once per node start (it may scan the
     * messages). cb: CHATD_OK n positions (n may be 0; borrowed), or an
     * error. Loop thread; cb exactly once. Optional: without it the core
     * answers chatd_api.stream_heads with CHATD_ERR_UNAVAILABLE.
     */
    void (*stream_heads)(void *inst, chatd_positions_cb cb, void *arg);

    /* --- ABI 1.7: optional; the core checks `size` and NULL --------------- */

    /**
     * The newest idempotency records (see idem_get): at most `limit` (>= 1)
     * of the (writer, key) -> message records whose message time is at or
     * after since_ms (Unix ms), the newest ones when there are more, handed
     * to cb oldest first, one call per record: cb(arg, CHATD_OK, member_id,
     * key, msg_id, time_ms), with the message's id and time (key borrowed for
     * that call). Then one last call with key NULL: CHATD_OK when every
     * record was given; CHATD_ERR_IO, CHATD_ERR_UNAVAILABLE, CHATD_ERR_BUSY
     * or CHATD_ERR_NOMEM when the store could not read them (then no record
     * was given before it). Answered from an index of the records' time,
     * never by reading every record. Loop thread; every call of cb on it.
     * The core reads it once per start, before the queue starts, to seed the
     * fan-out's memory of keys (core/idem_fanout.c): a node that starts
     * between two racing copies of a key then drops the second one as the
     * nodes that saw the first one live do. Optional: without it a node
     * starts with that memory empty.
     */
    void (*idem_recent)(void *inst, int64_t since_ms, unsigned limit,
                        void (*cb)(void *arg, chatd_status status, int64_t member_id,
                                   const char *key, uint64_t msg_id, int64_t time_ms),
                        void *arg);
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
