/*
 * tests/lib/plugins/test-transport.c - a transport used only by the tests: it
 * accepts no clients, and records every delivery as one line
 * "DESTINATION<TAB>JSON" in the file named by its `record` key, so a test
 * can check the fan-out. It also declares keys of every type so the config
 * tests can check validation against a plugin's key table, and a `stop` key
 * choosing how its stop hook behaves: "sync", "async" (completes on a later
 * loop turn) or "never" (so the core's stop timeout is exercised). (It writes the
 * file synchronously: acceptable for a test plugin, never for a real one.)
 */
#include "config.h"

#include <chatd/plugin.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tt {
    const chatd_api *api;
    chatd_ctx *ctx;
    FILE *rec;
    const char *stop_mode;
    chatd_completion *stopping;
} tt;

static const chatd_cfg_key tt_keys[] = {
    {.name = "record", .type = CHATD_CFG_STRING, .help = "file receiving one line per delivery"},
    {.name = "count",
     .type = CHATD_CFG_INT,
     .default_value = "3",
     .min = 1,
     .max = 10,
     .help = "an integer key for the config tests"},
    {.name = "flag",
     .type = CHATD_CFG_BOOL,
     .default_value = "false",
     .help = "a boolean key for the config tests"},
    {.name = "limit",
     .type = CHATD_CFG_SIZE,
     .default_value = "1k",
     .min = 1,
     .max = 1048576,
     .help = "a size key for the config tests"},
    {.name = "opt.", .type = CHATD_CFG_STRING, .help = "pass-through keys for the config tests"},
    {.name = "stop",
     .type = CHATD_CFG_STRING,
     .default_value = "async",
     .help = "stop hook: sync, async or never"},
    {.name = NULL},
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
    t->stop_mode = api->cfg_str(ctx, "stop");
    if (strcmp(t->stop_mode, "sync") != 0 && strcmp(t->stop_mode, "async") != 0 &&
        strcmp(t->stop_mode, "never") != 0) {
        api->cfg_error(ctx, "stop", "'%s' is not sync, async or never", t->stop_mode);
        if (t->rec) fclose(t->rec);
        free(t);
        return CHATD_ERR_INVALID;
    }
    *inst = t;
    return CHATD_OK;
}

static void tt_record(tt *t, const char *line)
{
    if (t->rec) {
        fprintf(t->rec, "%s\n", line);
        fflush(t->rec);
    }
}

static void tt_stopped(void *arg)
{
    tt *t = arg;
    tt_record(t, "event\tstopped");
    t->api->complete(t->stopping, CHATD_OK, NULL);
    t->stopping = NULL;
}

static chatd_status tt_stop(void *inst, chatd_completion *done)
{
    tt *t = inst;
    tt_record(t, "event\tstop");
    if (strcmp(t->stop_mode, "sync") == 0) return CHATD_OK;
    if (strcmp(t->stop_mode, "never") == 0)
        return CHATD_ASYNC; /* never completes: the core gives up after stop_timeout */
    t->stopping = done;
    if (t->api->post(t->ctx, tt_stopped, t) != CHATD_OK) return CHATD_ERR_UNAVAILABLE;
    return CHATD_ASYNC;
}

static void tt_reload(void *inst)
{
    tt_record(inst, "event\treload");
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
    .version = PACKAGE_VERSION,
    .description = "records deliveries to a file (tests only)",
    .cfg_keys = tt_keys,
    .create = tt_create,
    .stop = tt_stop,
    .destroy = tt_destroy,
    .reload = tt_reload,
    .ops = &tt_ops,
};

CHATD_PLUGIN_DEFINE(tt_desc)
