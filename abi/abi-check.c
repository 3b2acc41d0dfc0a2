/*
 * abi/abi-check.c - the plugin ABI as a compiler check: offsets of every
 * member of every public struct, minimum struct sizes, and every enum value of
 * <chatd/plugin.h> as released. If this file stops compiling, a change broke
 * plugins built against an older header: undo it, or bump CHATD_ABI_MAJOR.
 *
 * Rules: a minor bump (append-only) never edits a line here; it appends
 * asserts for the new members and enumerators under a comment naming the
 * minor. Sizes are checked as "at least", because appending grows them. The
 * program itself checks at run time that CHATD_ABI_* match the version this
 * file was last extended for. Offsets are those of LP64 targets (x86_64,
 * aarch64); elsewhere only the enum values are checked.
 */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <chatd/plugin.h>

#define CHATD_VALUE(name, v) static_assert((name) == (v), #name " changed value")

#if defined(__LP64__)
#define CHATD_OFFSET(type, member, off)                                                            \
    static_assert(offsetof(type, member) == (off), #type "." #member " moved")
#define CHATD_SIZE_AT_LEAST(type, n) static_assert(sizeof(type) >= (n), #type " shrank")
#else
#define CHATD_OFFSET(type, member, off) static_assert(1, "")
#define CHATD_SIZE_AT_LEAST(type, n) static_assert(1, "")
#endif

/* The ABI version whose members are all asserted below. */
#define CHECKED_MAJOR 1
#define CHECKED_MINOR 7

static_assert(CHATD_ABI_MAJOR == CHECKED_MAJOR,
              "new ABI major: rewrite this file from abi/baseline/ of that major");

/* ---- ABI 1.0 ------------------------------------------------------------ */

/* flags of chatd_api.consume() */
CHATD_VALUE(CHATD_CONSUME_PERSIST, 1);
CHATD_VALUE(CHATD_CONSUME_FANOUT, 2);

/* chatd_api */
CHATD_SIZE_AT_LEAST(chatd_api, 344);
CHATD_OFFSET(chatd_api, size, 0);
CHATD_OFFSET(chatd_api, abi_major, 4);
CHATD_OFFSET(chatd_api, abi_minor, 8);
CHATD_OFFSET(chatd_api, log, 16);
CHATD_OFFSET(chatd_api, cfg_str, 24);
CHATD_OFFSET(chatd_api, cfg_int, 32);
CHATD_OFFSET(chatd_api, cfg_bool, 40);
CHATD_OFFSET(chatd_api, cfg_each, 48);
CHATD_OFFSET(chatd_api, cfg_error, 56);
CHATD_OFFSET(chatd_api, instance_name, 64);
CHATD_OFFSET(chatd_api, status_str, 72);
CHATD_OFFSET(chatd_api, event_base, 80);
CHATD_OFFSET(chatd_api, post, 88);
CHATD_OFFSET(chatd_api, complete, 96);
CHATD_OFFSET(chatd_api, now_ms, 104);
CHATD_OFFSET(chatd_api, msg_new, 112);
CHATD_OFFSET(chatd_api, msg_from_json, 120);
CHATD_OFFSET(chatd_api, msg_ref, 128);
CHATD_OFFSET(chatd_api, msg_unref, 136);
CHATD_OFFSET(chatd_api, msg_kind, 144);
CHATD_OFFSET(chatd_api, msg_id, 152);
CHATD_OFFSET(chatd_api, msg_room, 160);
CHATD_OFFSET(chatd_api, msg_writer_id, 168);
CHATD_OFFSET(chatd_api, msg_writer, 176);
CHATD_OFFSET(chatd_api, msg_text, 184);
CHATD_OFFSET(chatd_api, msg_time_ms, 192);
CHATD_OFFSET(chatd_api, msg_up_to, 200);
CHATD_OFFSET(chatd_api, msg_json, 208);
CHATD_OFFSET(chatd_api, msg_set_text, 216);
CHATD_OFFSET(chatd_api, publish, 224);
CHATD_OFFSET(chatd_api, consume, 232);
CHATD_OFFSET(chatd_api, member_register, 240);
CHATD_OFFSET(chatd_api, login, 248);
CHATD_OFFSET(chatd_api, logout, 256);
CHATD_OFFSET(chatd_api, authenticate, 264);
CHATD_OFFSET(chatd_api, member_get, 272);
CHATD_OFFSET(chatd_api, member_list, 280);
CHATD_OFFSET(chatd_api, room_check, 288);
CHATD_OFFSET(chatd_api, room_list, 296);
CHATD_OFFSET(chatd_api, history, 304);
CHATD_OFFSET(chatd_api, counter_add, 312);
CHATD_OFFSET(chatd_api, gauge_set, 320);
CHATD_OFFSET(chatd_api, metrics_render, 328);
CHATD_OFFSET(chatd_api, healthy, 336);

/* chatd_cfg_key */
CHATD_SIZE_AT_LEAST(chatd_cfg_key, 48);
CHATD_OFFSET(chatd_cfg_key, name, 0);
CHATD_OFFSET(chatd_cfg_key, type, 8);
CHATD_OFFSET(chatd_cfg_key, default_value, 16);
CHATD_OFFSET(chatd_cfg_key, min, 24);
CHATD_OFFSET(chatd_cfg_key, max, 32);
CHATD_OFFSET(chatd_cfg_key, help, 40);

/* chatd_filter_ops */
CHATD_SIZE_AT_LEAST(chatd_filter_ops, 16);
CHATD_OFFSET(chatd_filter_ops, size, 0);
CHATD_OFFSET(chatd_filter_ops, filter, 8);

/* chatd_member */
CHATD_SIZE_AT_LEAST(chatd_member, 48);
CHATD_OFFSET(chatd_member, size, 0);
CHATD_OFFSET(chatd_member, id, 8);
CHATD_OFFSET(chatd_member, login_id, 16);
CHATD_OFFSET(chatd_member, name, 24);
CHATD_OFFSET(chatd_member, pw_hash, 32);
CHATD_OFFSET(chatd_member, created_ms, 40);

/* chatd_msg_fields */
CHATD_SIZE_AT_LEAST(chatd_msg_fields, 72);
CHATD_OFFSET(chatd_msg_fields, size, 0);
CHATD_OFFSET(chatd_msg_fields, kind, 4);
CHATD_OFFSET(chatd_msg_fields, id, 8);
CHATD_OFFSET(chatd_msg_fields, room_id, 16);
CHATD_OFFSET(chatd_msg_fields, writer_id, 24);
CHATD_OFFSET(chatd_msg_fields, writer, 32);
CHATD_OFFSET(chatd_msg_fields, text, 40);
CHATD_OFFSET(chatd_msg_fields, text_len, 48);
CHATD_OFFSET(chatd_msg_fields, time_ms, 56);
CHATD_OFFSET(chatd_msg_fields, up_to, 64);

/* chatd_plugin_desc */
CHATD_SIZE_AT_LEAST(chatd_plugin_desc, 96);
CHATD_OFFSET(chatd_plugin_desc, abi_major, 0);
CHATD_OFFSET(chatd_plugin_desc, abi_minor, 4);
CHATD_OFFSET(chatd_plugin_desc, size, 8);
CHATD_OFFSET(chatd_plugin_desc, kind, 12);
CHATD_OFFSET(chatd_plugin_desc, name, 16);
CHATD_OFFSET(chatd_plugin_desc, version, 24);
CHATD_OFFSET(chatd_plugin_desc, description, 32);
CHATD_OFFSET(chatd_plugin_desc, cfg_keys, 40);
CHATD_OFFSET(chatd_plugin_desc, create, 48);
CHATD_OFFSET(chatd_plugin_desc, start, 56);
CHATD_OFFSET(chatd_plugin_desc, stop, 64);
CHATD_OFFSET(chatd_plugin_desc, destroy, 72);
CHATD_OFFSET(chatd_plugin_desc, reload, 80);
CHATD_OFFSET(chatd_plugin_desc, ops, 88);

/* chatd_queue_ops */
CHATD_SIZE_AT_LEAST(chatd_queue_ops, 16);
CHATD_OFFSET(chatd_queue_ops, size, 0);
CHATD_OFFSET(chatd_queue_ops, enqueue, 8);

/* chatd_room_summary */
CHATD_SIZE_AT_LEAST(chatd_room_summary, 88);
CHATD_OFFSET(chatd_room_summary, size, 0);
CHATD_OFFSET(chatd_room_summary, room_id, 8);
CHATD_OFFSET(chatd_room_summary, member_id, 16);
CHATD_OFFSET(chatd_room_summary, peer_id, 24);
CHATD_OFFSET(chatd_room_summary, peer_login, 32);
CHATD_OFFSET(chatd_room_summary, peer_name, 40);
CHATD_OFFSET(chatd_room_summary, last_msg_id, 48);
CHATD_OFFSET(chatd_room_summary, last_message, 56);
CHATD_OFFSET(chatd_room_summary, last_ms, 64);
CHATD_OFFSET(chatd_room_summary, unread, 72);
CHATD_OFFSET(chatd_room_summary, last_read_id, 80);

/* chatd_session */
CHATD_SIZE_AT_LEAST(chatd_session, 32);
CHATD_OFFSET(chatd_session, size, 0);
CHATD_OFFSET(chatd_session, token_hash, 8);
CHATD_OFFSET(chatd_session, member_id, 16);
CHATD_OFFSET(chatd_session, expires_ms, 24);

/* chatd_store_ops */
CHATD_SIZE_AT_LEAST(chatd_store_ops, 80);
CHATD_OFFSET(chatd_store_ops, size, 0);
CHATD_OFFSET(chatd_store_ops, persist, 8);
CHATD_OFFSET(chatd_store_ops, member_create, 16);
CHATD_OFFSET(chatd_store_ops, member_get, 24);
CHATD_OFFSET(chatd_store_ops, member_list, 32);
CHATD_OFFSET(chatd_store_ops, session_put, 40);
CHATD_OFFSET(chatd_store_ops, session_get, 48);
CHATD_OFFSET(chatd_store_ops, session_del, 56);
CHATD_OFFSET(chatd_store_ops, room_list, 64);
CHATD_OFFSET(chatd_store_ops, history, 72);

/* chatd_transport_ops */
CHATD_SIZE_AT_LEAST(chatd_transport_ops, 16);
CHATD_OFFSET(chatd_transport_ops, size, 0);
CHATD_OFFSET(chatd_transport_ops, deliver, 8);

/* enum chatd_cfg_type */
CHATD_VALUE(CHATD_CFG_STRING, 1);
CHATD_VALUE(CHATD_CFG_INT, 2);
CHATD_VALUE(CHATD_CFG_BOOL, 3);
CHATD_VALUE(CHATD_CFG_SIZE, 4);

/* enum chatd_log_level */
CHATD_VALUE(CHATD_LOG_ERROR, 0);
CHATD_VALUE(CHATD_LOG_WARN, 1);
CHATD_VALUE(CHATD_LOG_INFO, 2);
CHATD_VALUE(CHATD_LOG_DEBUG, 3);

/* enum chatd_msg_kind */
CHATD_VALUE(CHATD_MSG_CHAT, 1);
CHATD_VALUE(CHATD_MSG_READ, 2);

/* enum chatd_plugin_kind */
CHATD_VALUE(CHATD_KIND_TRANSPORT, 1);
CHATD_VALUE(CHATD_KIND_QUEUE, 2);
CHATD_VALUE(CHATD_KIND_STORE, 3);
CHATD_VALUE(CHATD_KIND_FILTER, 4);

/* enum chatd_status */
CHATD_VALUE(CHATD_OK, 0);
CHATD_VALUE(CHATD_REJECT, 1);
CHATD_VALUE(CHATD_ASYNC, 2);
CHATD_VALUE(CHATD_ERR_INVALID, -1);
CHATD_VALUE(CHATD_ERR_NOMEM, -2);
CHATD_VALUE(CHATD_ERR_IO, -3);
CHATD_VALUE(CHATD_ERR_BUSY, -4);
CHATD_VALUE(CHATD_ERR_NOTFOUND, -5);
CHATD_VALUE(CHATD_ERR_EXISTS, -6);
CHATD_VALUE(CHATD_ERR_AUTH, -7);
CHATD_VALUE(CHATD_ERR_FORBIDDEN, -8);
CHATD_VALUE(CHATD_ERR_INTERNAL, -9);
CHATD_VALUE(CHATD_ERR_UNAVAILABLE, -10);

/* ---- ABI 1.1 ------------------------------------------------------------ */

/* chatd_api: the room functions */
CHATD_SIZE_AT_LEAST(chatd_api, 368);
CHATD_OFFSET(chatd_api, room_parse, 344);
CHATD_OFFSET(chatd_api, msg_room_members, 352);
CHATD_OFFSET(chatd_api, room_format, 360);

/* room identity and the row accessors (macros: values, not layout) */
CHATD_VALUE(CHATD_ROOM_ID_MAX, 40);
CHATD_VALUE(CHATD_HISTORY_MAX, 200);
CHATD_VALUE(CHATD_HISTORY_DEFAULT, 50);
static_assert(sizeof(CHATD_DEST_PUBLISH) == sizeof("/pub/chat/message"), "CHATD_DEST_PUBLISH");
static_assert(sizeof(CHATD_DEST_ROOM_PREFIX) == sizeof("/sub/chat/room/"),
              "CHATD_DEST_ROOM_PREFIX");
static_assert(sizeof(CHATD_DEST_SIDE_PREFIX) == sizeof("/sub/chat/side/"),
              "CHATD_DEST_SIDE_PREFIX");

/* ---- ABI 1.2 ------------------------------------------------------------ */

/* delivery: idempotency keys */
CHATD_OFFSET(chatd_msg_fields, idem_key, 72);
CHATD_SIZE_AT_LEAST(chatd_msg_fields, 80);
CHATD_SIZE_AT_LEAST(chatd_api, 384);
CHATD_OFFSET(chatd_api, msg_idem_key, 368);
CHATD_OFFSET(chatd_api, core_limit, 376);
CHATD_OFFSET(chatd_store_ops, idem_get, 80);

/* one copy of the room-refusal texts */
CHATD_SIZE_AT_LEAST(chatd_api, 392);
CHATD_OFFSET(chatd_api, room_refusal, 384);

/* dead letters: a queue gives up on a record, the store keeps it */
CHATD_SIZE_AT_LEAST(chatd_api, 400);
CHATD_OFFSET(chatd_api, dead_letter, 392);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 96);
CHATD_OFFSET(chatd_store_ops, dead_letter, 88);

/* ---- ABI 1.3 ------------------------------------------------------------ */

/* delivery: replay (resume, forward paging) */
CHATD_SIZE_AT_LEAST(chatd_api, 408);
CHATD_OFFSET(chatd_api, replay, 400);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 104);
CHATD_OFFSET(chatd_store_ops, replay, 96);

/* auth: throttled password hashing, the client's address and Retry-After */
CHATD_SIZE_AT_LEAST(chatd_api, 432);
CHATD_OFFSET(chatd_api, member_register2, 408);
CHATD_OFFSET(chatd_api, login2, 416);
CHATD_OFFSET(chatd_api, time_format, 424);

/* logout: live sessions ended on every node, expired sessions purged */
CHATD_SIZE_AT_LEAST(chatd_transport_ops, 24);
CHATD_OFFSET(chatd_transport_ops, session_ended, 16);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 112);
CHATD_OFFSET(chatd_store_ops, session_purge, 104);
/* ids: node leases */
CHATD_SIZE_AT_LEAST(chatd_store_ops, 120);
CHATD_OFFSET(chatd_store_ops, node_claim, 112);

/* ---- ABI 1.4 ------------------------------------------------------------ */

/* paged member lists */
CHATD_SIZE_AT_LEAST(chatd_api, 440);
CHATD_OFFSET(chatd_api, member_page, 432);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 128);
CHATD_OFFSET(chatd_store_ops, member_page, 120);

/* order: one delivery order per room (message positions) */
CHATD_SIZE_AT_LEAST(chatd_msg_fields, 88);
CHATD_OFFSET(chatd_msg_fields, pos, 80);
CHATD_SIZE_AT_LEAST(chatd_api, 456);
CHATD_OFFSET(chatd_api, msg_pos, 440);
CHATD_OFFSET(chatd_api, msg_set_pos, 448);

/* ---- ABI 1.5 ------------------------------------------------------------ */

/* the side stream's replay by position ranges */
CHATD_SIZE_AT_LEAST(chatd_api, 464);
CHATD_OFFSET(chatd_api, side_replay, 456);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 136);
CHATD_OFFSET(chatd_store_ops, side_replay, 128);
_Static_assert(CHATD_POS_PARTITIONED == (UINT64_C(1) << 62), "position layout");
_Static_assert(CHATD_POS_STREAM_SHIFT == 48, "position layout");
_Static_assert(CHATD_POS_RANGES_MAX == 64u, "side replay ranges");

/* ---- ABI 1.6 ------------------------------------------------------------ */

/* the stored head of each position stream */
CHATD_SIZE_AT_LEAST(chatd_api, 472);
CHATD_OFFSET(chatd_api, stream_heads, 464);
CHATD_SIZE_AT_LEAST(chatd_store_ops, 144);
CHATD_OFFSET(chatd_store_ops, stream_heads, 136);

/* ---- ABI 1.7 ------------------------------------------------------------ */

/* the newest idempotency records, the fan-out's memory seed */
CHATD_SIZE_AT_LEAST(chatd_store_ops, 152);
CHATD_OFFSET(chatd_store_ops, idem_recent, 144);

/* ---- append asserts of ABI 1.8 here ------------------------------------ */

int main(void)
{
    if (CHATD_ABI_MINOR != CHECKED_MINOR) {
        fprintf(stderr,
                "abi-check: plugin.h says ABI %d.%d but abi/abi-check.c checks %d.%d: "
                "append asserts for the new members\n",
                CHATD_ABI_MAJOR, CHATD_ABI_MINOR, CHECKED_MAJOR, CHECKED_MINOR);
        return 1;
    }
    /* ABI 1.1: the destinations clients and independent tools rely on */
    if (strcmp(CHATD_DEST_PUBLISH, "/pub/chat/message") != 0 ||
        strcmp(CHATD_DEST_READ, "/pub/chat/read") != 0 ||
        strcmp(CHATD_DEST_ROOM_PREFIX, "/sub/chat/room/") != 0 ||
        strcmp(CHATD_DEST_SIDE_PREFIX, "/sub/chat/side/") != 0) {
        fprintf(stderr, "abi-check: a CHATD_DEST_* destination changed\n");
        return 1;
    }
    printf("abi-check: ABI %d.%d layout and enum values intact\n", CHATD_ABI_MAJOR,
           CHATD_ABI_MINOR);
    return 0;
}
