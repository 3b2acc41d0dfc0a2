/* tests/lib/plugins/broken-noentry.c - a shared object without the entry
 * symbol (its function has another name): refused. */
#include "broken.h"

static const chatd_plugin_desc desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .name = "broken-noentry",
    .create = broken_create,
    .destroy = broken_destroy,
    .ops = &broken_ops,
    BROKEN_DESC_FIELDS,
};

CHATD_EXPORT const chatd_plugin_desc *chatd_plugin_entry_misspelt(void);
CHATD_EXPORT const chatd_plugin_desc *chatd_plugin_entry_misspelt(void)
{
    return &desc;
}
