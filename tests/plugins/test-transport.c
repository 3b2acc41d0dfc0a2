/*
 * tests/plugins/test-transport.c - a transport used only by the tests: it
 * accepts no clients, and records every delivery as one line
 * "DESTINATION<TAB>JSON" in the file named by its `record` key, so a test
 * can check the fan-out. It also declares keys of every type so the config
 * tests can check validation against a plugin's key table. (It writes the
 * file synchronously: acceptable for a test plugin, never for a real one.)
 */
#include <chatd/plugin.h>

#include <stdio.h>
#include <stdlib.h>

typedef struct tt {
    const chatd_api *api;
    chatd_ctx *ctx;
    FILE *rec;
} tt;

static const chatd_cfg_key tt_keys[] = {
    {"record", CHATD_CFG_STRING, NULL, 0, 0, "file receiving one line per delivery"},
    {"count", CHATD_CFG_INT, "3", 1, 10, "an integer key for the config tests"},
    {"flag", CHATD_CFG_BOOL, "false", 0, 0, "a boolean key for the config tests"},
    {"limit", CHATD_CFG_SIZE, "1k", 1, 1048576, "a size key for the config tests"},
    {"opt.", CHATD_CFG_STRING, NULL, 0, 0, "pass-through keys for the config tests"},
    {NULL, 0, NULL, 0, 0, NULL},
};

static chatd_status tt_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    tt *t = calloc(1, sizeof(*t));
    if (!t) return CHATD_ERR_NOMEM;
    t->api = api;
    t->ctx = ctx;
    const char *path = api->cfg_str(ctx, "record");
    if (path) {
        t->rec = fopen(path, "a");
        if (!t->rec) {
            api->cfg_error(ctx, "record", "cannot open %s", path);
            free(t);
            return CHATD_ERR_INVALID;
        }
    }
    *inst = t;
    return CHATD_OK;
}

static void tt_destroy(void *inst)
{
    tt *t = inst;
    if (t->rec) fclose(t->rec);
    free(t);
}

static void tt_deliver(void *inst, const char *destination, chatd_msg *msg)
{
    tt *t = inst;
    size_t len;
    const char *json = t->api->msg_json(msg, &len);
    if (t->rec && json) {
        fprintf(t->rec, "%s\t%.*s\n", destination, (int)len, json);
        fflush(t->rec);
    }
    t->api->counter_add(t->ctx, "chatd_test_deliveries_total", 1);
}

static const chatd_transport_ops tt_ops = {
    .size = sizeof(chatd_transport_ops),
    .deliver = tt_deliver,
};

static const chatd_plugin_desc tt_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_TRANSPORT,
    .name = "test-transport",
    .version = "1.0",
    .description = "records deliveries to a file (tests only)",
    .cfg_keys = tt_keys,
    .create = tt_create,
    .destroy = tt_destroy,
    .ops = &tt_ops,
};

CHATD_PLUGIN_DEFINE(tt_desc)
