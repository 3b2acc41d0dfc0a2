/* tests/lib/plugins/broken-nohook.c - a transport without its mandatory
 * deliver hook: refused. */
#include "broken.h"

static const chatd_transport_ops no_deliver = {
    .size = sizeof(chatd_transport_ops),
    .deliver = NULL,
};

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-nohook",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &no_deliver,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
