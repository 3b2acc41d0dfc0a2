/* tests/lib/plugins/broken-nocreate.c - a descriptor without create: refused. */
#include "broken.h"

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-nocreate",
    .create = NULL,
    .destroy = broken_destroy,
    .ops = &broken_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
