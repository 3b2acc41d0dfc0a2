/*
 * tests/lib/plugins/test-filter.c - a filter used only by the tests:
 *   text containing "badword"  -> CHATD_REJECT, synchronously
 *   text "shout"               -> ASYNC: rewritten to "SHOUT" on a later
 *                                 loop turn, then completed OK
 *   text "twice"               -> ASYNC, then completed twice (a plugin bug
 *                                 the core must catch: exactly once)
 *   anything else              -> CHATD_OK
 */
#include "config.h"

#include <chatd/plugin.h>

#include <stdlib.h>
#include <string.h>

typedef struct tf {
    const chatd_api *api;
    chatd_ctx *ctx;
} tf;

typedef struct later {
    tf *f;
    chatd_msg *msg;
    chatd_completion *done;
} later;

static chatd_status tf_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    tf *f = calloc(1, sizeof(*f));
    if (!f) return CHATD_ERR_NOMEM;
    f->api = api;
    f->ctx = ctx;
    *inst = f;
    return CHATD_OK;
}

static void tf_destroy(void *inst)
{
    free(inst);
}

static void tf_shout(void *arg)
{
    later *l = arg;
    const chatd_api *api = l->f->api;
    chatd_status st = api->msg_set_text(l->msg, "SHOUT", 5);
    api->complete(l->done, st == CHATD_OK ? CHATD_OK : CHATD_ERR_INTERNAL, NULL);
    api->msg_unref(l->msg);
    free(l);
}

static void tf_twice(void *arg)
{
    later *l = arg;
    const chatd_api *api = l->f->api;
    api->complete(l->done, CHATD_OK, NULL);
    api->complete(l->done, CHATD_REJECT, "second completion");
    api->msg_unref(l->msg);
    free(l);
}

static chatd_status tf_filter(void *inst, chatd_msg *msg, chatd_completion *done)
{
    tf *f = inst;
    size_t len;
    const char *text = f->api->msg_text(msg, &len);
    if (strstr(text, "badword")) return CHATD_REJECT;
    if (strcmp(text, "shout") == 0 || strcmp(text, "twice") == 0) {
        later *l = malloc(sizeof(*l));
        if (!l) return CHATD_ERR_NOMEM;
        l->f = f;
        l->msg = f->api->msg_ref(msg);
        l->done = done;
        if (f->api->post(f->ctx, text[0] == 's' ? tf_shout : tf_twice, l) != CHATD_OK) {
            f->api->msg_unref(msg);
            free(l);
            return CHATD_ERR_UNAVAILABLE;
        }
        return CHATD_ASYNC;
    }
    return CHATD_OK;
}

static const chatd_filter_ops tf_ops = {
    .size = sizeof(chatd_filter_ops),
    .filter = tf_filter,
};

static const chatd_plugin_desc tf_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_FILTER,
    .name = "test-filter",
    .version = PACKAGE_VERSION,
    .description = "rejects \"badword\", rewrites \"shout\" asynchronously (tests only)",
    .create = tf_create,
    .destroy = tf_destroy,
    .ops = &tf_ops,
};

CHATD_PLUGIN_DEFINE(tf_desc)
