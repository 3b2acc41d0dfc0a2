/* tests/lib/plugins/broken-short.c - declares a descriptor too short to hold
 * the hooks of this ABI major: refused. */
#include "broken.h"

#include <stddef.h>

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = offsetof(chatd_plugin_desc, create),
    .name = "broken-short",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &broken_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_PLUGIN_DEFINE(desc)
