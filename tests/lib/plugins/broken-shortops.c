/* tests/lib/plugins/broken-shortops.c - an ops table declaring a size too
 * short to hold the mandatory hook: refused. */
#include "broken.h"

static const chatd_transport_ops short_ops = {
    .size = sizeof(uint32_t),
    .deliver = broken_deliver,
};

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-shortops",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &short_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
