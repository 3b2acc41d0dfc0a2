/*
 * tests/lib/plugins/broken.h - the parts shared by the deliberately broken
 * plugins the loader tests must see refused: a valid transport whose
 * descriptor each broken-*.c then spoils in one way.
 */
#ifndef CHATD_TEST_BROKEN_H
#define CHATD_TEST_BROKEN_H

#include "config.h"

#include <chatd/plugin.h>

static inline chatd_status broken_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    (void)api;
    (void)ctx;
    *inst = NULL;
    return CHATD_OK;
}

static inline void broken_destroy(void *inst)
{
    (void)inst;
}

static inline void broken_deliver(void *inst, const char *destination, chatd_msg *msg)
{
    (void)inst;
    (void)destination;
    (void)msg;
}

static const chatd_transport_ops broken_ops = {
    .size = sizeof(chatd_transport_ops),
    .deliver = broken_deliver,
};

#define BROKEN_DESC_FIELDS                                                                         \
    .kind = CHATD_KIND_TRANSPORT, .version = PACKAGE_VERSION,                                      \
    .description = "broken on purpose (tests)"

#endif
