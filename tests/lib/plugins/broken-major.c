/* tests/lib/plugins/broken-major.c - built for another ABI major: refused. */
#include "broken.h"

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR + 1,
    .abi_minor = 0,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-major",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &broken_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
