/*
 * fuzz_config.c - libFuzzer target for the configuration of the core
 * (core/config.c). The input up to the first NUL is a configuration file;
 * each further NUL-separated piece is a --set SECTION.KEY=VALUE. The file is
 * loaded, the overrides applied, [chatd] checked, and every other section
 * checked against a key table with each value type (STRING, INT, SIZE,
 * BOOL, a prefix key). Checks: an accepted INT or SIZE lies within its
 * range and reads back the same through chatd_api.cfg_int; the value
 * parsers agree with each other (a SIZE without suffix is the INT, "Nk" is
 * 1024 N, a BOOL is one of the eight words); the [chatd] values are in range.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core.h"
#include "fuzz_core.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const chatd_cfg_key keys[] = {
    {"name", CHATD_CFG_STRING, "dflt", 0, 0, "a string"},
    {"count", CHATD_CFG_INT, "5", -10, 1000, "an integer in [-10, 1000]"},
    {"any", CHATD_CFG_INT, NULL, 0, 0, "an integer without a range"},
    {"size", CHATD_CFG_SIZE, "4k", 1024, INT64_C(1) << 40, "a size in [1k, 1t]"},
    {"flag", CHATD_CFG_BOOL, "true", 0, 0, "a boolean"},
    {"kafka.", CHATD_CFG_STRING, NULL, 0, 0, "pass-through properties"},
    {NULL, 0, NULL, 0, 0, NULL}};

static void check_parsers(const char *v)
{
    int64_t i, s, s2;
    int b;
    int iok = cfg_parse_int(v, &i) == 0, sok = cfg_parse_size(v, &s) == 0;
    size_t n = strlen(v);
    if (sok && n && v[n - 1] >= '0' && v[n - 1] <= '9')
        FZ_CHECK(iok && i == s, "size '%s' = %lld but int gives %d/%lld", v, (long long)s, iok,
                 (long long)i);
    if (iok) {
        char back[32];
        snprintf(back, sizeof(back), "%lld", (long long)i);
        int64_t j;
        FZ_CHECK(cfg_parse_int(back, &j) == 0 && j == i, "int '%s' does not print back", v);
    }
    if (sok && n < 64 && n && v[n - 1] >= '0' && v[n - 1] <= '9') {
        char k[80];
        snprintf(k, sizeof(k), "%sk", v);
        int kok = cfg_parse_size(k, &s2) == 0;
        if (s <= INT64_MAX / 1024)
            FZ_CHECK(kok && s2 == s * 1024, "'%s' is not 1024 x '%s'", k, v);
        else
            FZ_CHECK(!kok, "'%s' overflows but parsed", k);
    }
    if (cfg_parse_bool(v, &b) == 0) {
        static const char *const w[] = {"true", "yes", "on", "1", "false", "no", "off", "0"};
        int found = -1;
        for (int x = 0; x < 8; x++)
            if (strcasecmp(v, w[x]) == 0) found = x;
        FZ_CHECK(found >= 0 && b == (found < 4), "bool '%s' = %d", v, b);
    }
}

static void prefix_count(void *arg, const char *key, const char *value)
{
    FZ_CHECK(key[0] && value, "empty pass-through key");
    ++*(int *)arg;
}

static void check_section(cfg *c, cfg_section *s)
{
    chatd_ctx ctx = {0};
    core k = {0};
    k.cfg = c;
    ctx.core = &k;
    ctx.name = s->name;
    ctx.sec = s;
    const chatd_api *api = api_table();
    int ok = cfg_check_section(c, s, keys) == 0;
    for (size_t i = 0; i < s->n; i++)
        check_parsers(s->entries[i].value);
    if (!ok) return;
    FZ_CHECK(s->keys == keys, "accepted section without its keys");
    int64_t count = api->cfg_int(&ctx, "count", -99), size = api->cfg_int(&ctx, "size", -99);
    FZ_CHECK(count >= -10 && count <= 1000, "count %lld", (long long)count);
    FZ_CHECK(size >= 1024 && size <= (INT64_C(1) << 40), "size %lld", (long long)size);
    cfg_entry *e = cfg_entry_find(s, "count");
    int64_t v;
    if (e) FZ_CHECK(cfg_parse_int(e->value, &v) == 0 && v == count, "count read back");
    if (!e) FZ_CHECK(count == 5, "count default %lld", (long long)count);
    e = cfg_entry_find(s, "size");
    if (e) FZ_CHECK(cfg_parse_size(e->value, &v) == 0 && v == size, "size read back");
    if (!e) FZ_CHECK(size == 4096, "size default %lld", (long long)size);
    int flag = api->cfg_bool(&ctx, "flag", -1);
    FZ_CHECK(flag == 0 || flag == 1, "flag %d", flag);
    const char *name = api->cfg_str(&ctx, "name");
    FZ_CHECK(name, "name without its default");
    FZ_CHECK(api->cfg_int(&ctx, "unknown-key", 77) == 77, "an undeclared key has a value");
    int visited = 0, expect = 0;
    for (size_t i = 0; i < s->n; i++)
        expect += strncmp(s->entries[i].key, "kafka.", 6) == 0;
    FZ_CHECK(api->cfg_each(&ctx, "kafka.", prefix_count, &visited) == expect && visited == expect,
             "cfg_each visited %d of %d", visited, expect);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        log_set_level(CHATD_LOG_ERROR);
        fd = memfd_create("chatd-fuzz.conf", 0);
        FZ_CHECK(fd >= 0, "memfd_create");
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t flen = nul ? (size_t)(nul - data) : size;
    FZ_CHECK(ftruncate(fd, 0) == 0 && pwrite(fd, data, flen, 0) == (ssize_t)flen, "write");

    cfg *c = cfg_new();
    FZ_CHECK(c, "cfg_new");
    int ok = cfg_load(c, path) == 0;
    if (nul) {
        char *rest = malloc(size - flen);
        FZ_CHECK(rest, "out of memory");
        memcpy(rest, nul + 1, size - flen - 1);
        rest[size - flen - 1] = '\0';
        for (char *a = rest; a < rest + (size - flen - 1); a += strlen(a) + 1)
            if (cfg_set(c, a) != 0) ok = 0;
        free(rest);
    }
    if (ok && cfg_check_core(c) == 0) {
        FZ_CHECK(c->node_id >= -1 && c->node_id <= 1023 && c->session_ttl >= 60 &&
                     c->max_message_bytes >= 1 && c->max_message_bytes <= 1048576 &&
                     c->publish_rate >= 0 && c->max_pending >= 1 && c->stop_timeout >= 1 &&
                     c->auth_threads >= 1 && c->auth_threads <= 64,
                 "a [chatd] value out of range");
        FZ_CHECK(c->log_level >= CHATD_LOG_ERROR && c->log_level <= CHATD_LOG_DEBUG, "log level");
        for (size_t i = 0; i < c->n; i++) {
            cfg_section *s = c->sections[i];
            FZ_CHECK(cfg_section_find(c, s->name) == s, "section %s twice", s->name);
            if (strcmp(s->name, CFG_CORE_SECTION) != 0) check_section(c, s);
        }
    } else {
        for (size_t i = 0; i < c->n; i++)
            for (size_t j = 0; j < c->sections[i]->n; j++)
                check_parsers(c->sections[i]->entries[j].value);
    }
    cfg_free(c);
    return 0;
}
