/* tests/lib/plugins/broken-minor.c - built for a newer ABI minor: refused. */
#include "broken.h"

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR + 1,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-minor",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &broken_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
