/*
 * abi/abi-ref.c - a tiny shared object that names every public type of
 * <chatd/plugin.h>, so that abidw can describe the plugin ABI from its debug
 * information. Built and compared by abi/check.sh; never installed.
 */
#include <chatd/plugin.h>

/* Every public type reachable from one exported function: the structs reach
 * the callback typedefs and enums through their fields, the rest are named
 * here explicitly. */
typedef struct chatd_abi_all {
    chatd_status status;
    chatd_plugin_kind kind;
    chatd_log_level log_level;
    chatd_msg_kind msg_kind;
    chatd_cfg_type cfg_type;
    const chatd_member *member;
    const chatd_session *session;
    const chatd_room_summary *room_summary;
    const chatd_msg_fields *msg_fields;
    const chatd_cfg_key *cfg_key;
    const chatd_api *api;
    const chatd_transport_ops *transport_ops;
    const chatd_queue_ops *queue_ops;
    const chatd_store_ops *store_ops;
    const chatd_filter_ops *filter_ops;
    const chatd_plugin_desc *desc;
    chatd_plugin_entry_fn entry;
    chatd_task_fn task;
    chatd_publish_cb publish_cb;
    chatd_member_cb member_cb;
    chatd_session_cb session_cb;
    chatd_rooms_cb rooms_cb;
    chatd_history_cb history_cb;
    chatd_login_cb login_cb;
    chatd_status_cb status_cb;
    chatd_room_cb room_cb;
    chatd_write_fn write_fn;
    chatd_ctx *ctx;
    chatd_msg *msg;
    chatd_completion *completion;
    unsigned consume_persist, consume_fanout; /* values of the anonymous enum */
    chatd_node_cb node_cb;
} chatd_abi_all;

CHATD_EXPORT unsigned chatd_abi_ref(chatd_abi_all *all);

CHATD_EXPORT unsigned chatd_abi_ref(chatd_abi_all *all)
{
    all->consume_persist = CHATD_CONSUME_PERSIST;
    all->consume_fanout = CHATD_CONSUME_FANOUT;
    return (unsigned)sizeof(*all);
}
