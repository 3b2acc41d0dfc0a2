/*
 * core/config.c - the configuration file: parsing (inih), --set overrides,
 * and validation of the [chatd] section and of every plugin section against
 * the keys its plugin declares.
 *
 * Every error names where the value came from: "FILE:LINE: reason" for the
 * file, "--set SECTION.KEY: reason" for an override.
 */
#include "config.h"

#include "core.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Accepted keys of [chatd]; same form as a plugin's table. */
static const chatd_cfg_key core_keys[] = {
    {.name = "node_id",
     .type = CHATD_CFG_INT,
     .default_value = "0",
     .min = 0,
     .max = 1023,
     .help = "node number in message ids, leased in the store (unique per node), or auto: "
             "the lowest free one"},
    {.name = "node_lease",
     .type = CHATD_CFG_INT,
     .default_value = "15000",
     .min = 300,
     .max = 3600000,
     .help = "ms a node's claim on its node_id lasts; renewed every third of it"},
    {.name = "log_level",
     .type = CHATD_CFG_STRING,
     .default_value = "info",
     .help = "error, warn, info or debug"},
    {.name = "session_ttl",
     .type = CHATD_CFG_INT,
     .default_value = "604800",
     .min = 60,
     .max = INT64_C(315360000),
     .help = "seconds a login session lasts"},
    {.name = "max_message_bytes",
     .type = CHATD_CFG_SIZE,
     .default_value = "4096",
     .min = 1,
     .max = 1048576,
     .help = "largest chat message text accepted, in bytes of UTF-8"},
    {.name = "publish_rate",
     .type = CHATD_CFG_INT,
     .default_value = "50",
     .min = 0,
     .max = 1000000,
     .help = "publishes per member per second, bursts up to twice that (0: unlimited)"},
    {.name = "plugin_dir", .type = CHATD_CFG_STRING, .help = "directory of the plugin modules"},
    {.name = "max_pending",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 1,
     .max = 10000000,
     .help = "messages in flight before publishes are refused as busy"},
    {.name = "stop_timeout",
     .type = CHATD_CFG_INT,
     .default_value = "10",
     .min = 1,
     .max = 3600,
     .help = "seconds each stop phase may take"},
    {.name = "auth_threads",
     .type = CHATD_CFG_INT,
     .default_value = "2",
     .min = 1,
     .max = 64,
     .help = "threads hashing passwords"},
    {.name = "idempotency_window",
     .type = CHATD_CFG_INT,
     .default_value = "86400",
     .min = 1,
     .max = INT64_C(31536000),
     .help = "seconds a SEND's idempotency key is remembered (a retry within it is not stored "
             "again)"},
    {.name = "idem_fanout_memory",
     .type = CHATD_CFG_INT,
     .default_value = "4096",
     .min = 16,
     .max = 10000000,
     .help = "idempotency keys fan-out remembers, to drop a second copy of a key published by "
             "two nodes at once"},
    {.name = "idem_fanout_wait",
     .type = CHATD_CFG_INT,
     .default_value = "5000",
     .min = 0,
     .max = 600000,
     .help = "ms the RECEIPT of a SEND with a key waits for this node's fan-out (or the store's "
             "record of the key, asked every fifth of it) to show which copy of the key came "
             "first; after it with neither, an ERROR tells the client to send again with the same "
             "key (0: no wait, the RECEIPT names the SEND's own copy)"},
    {.name = "login_fail_limit",
     .type = CHATD_CFG_INT,
     .default_value = "10",
     .min = 0,
     .max = 1000000,
     .help = "failed logins per login id and per client address within login_fail_window; "
             "then 429 until it ends (0: no limit)"},
    {.name = "login_fail_window",
     .type = CHATD_CFG_INT,
     .default_value = "600",
     .min = 1,
     .max = 86400,
     .help = "seconds over which failed logins are counted"},
    {.name = "register_limit",
     .type = CHATD_CFG_INT,
     .default_value = "200",
     .min = 0,
     .max = 1000000,
     .help = "registrations per client address within register_window; then 429 (0: no limit)"},
    {.name = "register_window",
     .type = CHATD_CFG_INT,
     .default_value = "600",
     .min = 1,
     .max = 86400,
     .help = "seconds over which registrations are counted"},
    {.name = "max_hashes_per_addr",
     .type = CHATD_CFG_INT,
     .default_value = "16",
     .min = 0,
     .max = 1024,
     .help = "password hashes queued or running per client address; more get 429 (0: no limit)"},
    {.name = "session_purge_interval",
     .type = CHATD_CFG_INT,
     .default_value = "60",
     .min = 1,
     .max = 86400,
     .help = "seconds between deletions of expired sessions from the store"},
    {.name = "member_cache_max",
     .type = CHATD_CFG_INT,
     .default_value = "100000",
     .min = 16,
     .max = 100000000,
     .help = "members kept in memory; the least recently used beyond are dropped"},
    {.name = "throttle_max_entries",
     .type = CHATD_CFG_INT,
     .default_value = "100000",
     .min = 16,
     .max = 10000000,
     .help = "login ids and client addresses the throttles track; a new one beyond gets 429"},
    {.name = NULL},
};

/* ------------------------------------------------------------ helpers */

/* Out of memory while parsing is a start-up failure (core.h): the parser
 * functions log it and return an error, and chatd exits with status 1. */
static void oom(void)
{
    log_msg(CHATD_LOG_ERROR, NULL, "out of memory while reading the configuration");
}

cfg *cfg_new(void)
{
    cfg *c = calloc(1, sizeof(*c));
    if (!c || !(c->file = strdup("(none)"))) {
        free(c);
        return NULL;
    }
    return c; /* the values are set by cfg_check_core, from core_keys */
}

static void section_free(cfg_section *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->entries[i].key);
        free(s->entries[i].value);
    }
    free(s->entries);
    free(s->name);
    free(s);
}

void cfg_free(cfg *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->n; i++)
        section_free(c->sections[i]);
    free(c->sections);
    free(c->file);
    free(c);
}

cfg_section *cfg_section_find(const cfg *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->sections[i]->name, name) == 0) return c->sections[i];
    return NULL;
}

cfg_entry *cfg_entry_find(const cfg_section *s, const char *key)
{
    if (!s) return NULL;
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->entries[i].key, key) == 0) return &s->entries[i];
    return NULL;
}

/* Append a section; NULL (logged) when out of memory. */
static cfg_section *section_add(cfg *c, const char *name, int line)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        cfg_section **grown = realloc(c->sections, cap * sizeof(*grown));
        if (!grown) goto oom;
        c->sections = grown;
        c->cap = cap;
    }
    cfg_section *s = calloc(1, sizeof(*s));
    if (!s || !(s->name = strdup(name))) {
        free(s);
        goto oom;
    }
    s->line = line;
    c->sections[c->n++] = s;
    return s;
oom:
    oom();
    return NULL;
}

/* Append an entry; NULL (logged) when out of memory. */
static cfg_entry *entry_add(cfg_section *s, const char *key, const char *value, int line,
                            bool from_set)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        cfg_entry *grown = realloc(s->entries, cap * sizeof(*grown));
        if (!grown) goto oom;
        s->entries = grown;
        s->cap = cap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        goto oom;
    }
    cfg_entry *e = &s->entries[s->n++];
    *e = (cfg_entry){.key = k, .value = v, .line = line, .from_set = from_set};
    return e;
oom:
    oom();
    return NULL;
}

void cfg_verror(const cfg *c, const cfg_section *s, const cfg_entry *e, const char *fmt, va_list ap)
{
    char reason[1024];
    vsnprintf(reason, sizeof(reason), fmt, ap);
    if (e && e->from_set)
        log_msg(CHATD_LOG_ERROR, NULL, "--set %s.%s: %s", s ? s->name : "?", e->key, reason);
    else if (e)
        log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: [%s] %s: %s", c->file, e->line, s ? s->name : "?",
                e->key, reason);
    else if (s && s->line > 0)
        log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: [%s] %s", c->file, s->line, s->name, reason);
    else if (s)
        log_msg(CHATD_LOG_ERROR, NULL, "--set %s: %s", s->name, reason);
    else
        log_msg(CHATD_LOG_ERROR, NULL, "%s: %s", c->file, reason);
}

void cfg_error(const cfg *c, const cfg_section *s, const cfg_entry *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cfg_verror(c, s, e, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ values */

int cfg_parse_int(const char *s, int64_t *out)
{
    if (!s || !*s) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || end == s) return -1;
    *out = v;
    return 0;
}

int cfg_parse_size(const char *s, int64_t *out)
{
    if (!s || !*s || *s == '-') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || v < 0) return -1;
    int64_t mul = 1;
    if (*end) {
        switch (*end) {
        case 'k':
        case 'K':
            mul = 1024;
            break;
        case 'm':
        case 'M':
            mul = 1024 * 1024;
            break;
        case 'g':
        case 'G':
            mul = INT64_C(1024) * 1024 * 1024;
            break;
        default:
            return -1;
        }
        end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end) return -1;
    }
    if (v > INT64_MAX / mul) return -1;
    *out = v * mul;
    return 0;
}

int cfg_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

const chatd_cfg_key *cfg_core_keys(void)
{
    return core_keys;
}

const chatd_cfg_key *cfg_key_match(const chatd_cfg_key *keys, const char *key)
{
    if (!keys) return NULL;
    for (const chatd_cfg_key *k = keys; k->name; k++) {
        size_t n = strlen(k->name);
        if (n > 0 && k->name[n - 1] == '.') {
            if (strncmp(key, k->name, n) == 0 && key[n] != '\0') return k;
        } else if (strcmp(key, k->name) == 0) {
            return k;
        }
    }
    return NULL;
}

/* Check one value against its declared type; NULL or a reason in buf. */
static const char *value_check(const chatd_cfg_key *k, const char *v, char *buf, size_t size)
{
    int64_t n;
    int b;
    switch (k->type) {
    case CHATD_CFG_STRING:
        return NULL;
    case CHATD_CFG_BOOL:
        if (cfg_parse_bool(v, &b) != 0) {
            snprintf(buf, size, "'%s' is not a boolean (use true/false, yes/no, on/off, 1/0)", v);
            return buf;
        }
        return NULL;
    case CHATD_CFG_INT:
    case CHATD_CFG_SIZE:
        if ((k->type == CHATD_CFG_INT ? cfg_parse_int(v, &n) : cfg_parse_size(v, &n)) != 0) {
            snprintf(buf, size, "'%s' is not %s", v,
                     k->type == CHATD_CFG_INT ? "an integer" : "a size (number with k/m/g)");
            return buf;
        }
        if (k->min < k->max && (n < k->min || n > k->max)) {
            snprintf(buf, size, "%lld is out of range [%lld, %lld]", (long long)n,
                     (long long)k->min, (long long)k->max);
            return buf;
        }
        return NULL;
    default:
        snprintf(buf, size, "the plugin declares an unknown type %d for this key", (int)k->type);
        return buf;
    }
}

/* ------------------------------------------------------------ parsing */

typedef struct parse_state {
    cfg *c;
    FILE *f;
    int line;        /* line the reader returned last */
    int header_line; /* line of the last [section] header */
    cfg_section *cur;
    int errors;
} parse_state;

/* fgets-style reader for inih that counts lines and refuses long ones. */
static char *reader(char *str, int num, void *stream)
{
    parse_state *ps = stream;
    if (!fgets(str, num, ps->f)) return NULL;
    ps->line++;
    size_t len = strlen(str);
    if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(ps->f)) {
        int ch;
        while ((ch = fgetc(ps->f)) != EOF && ch != '\n')
            ;
        if (ps->errors++ == 0)
            log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: line too long (at most %d bytes)", ps->c->file,
                    ps->line, num - 2);
        str[0] = '#'; /* make inih skip it */
        str[1] = '\0';
        return str;
    }
    const char *p = str;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '[') ps->header_line = ps->line;
    return str;
}

static bool name_ok(const char *s, size_t max, bool dots)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-' || (dots && ch == '.')))
            return false;
    }
    return true;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    cfg *c = ps->c;
    if (!section[0]) {
        if (ps->errors++ == 0)
            log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: key '%s' outside any [section]", c->file,
                    ps->line, name);
        return 1;
    }
    if (!ps->cur || strcmp(ps->cur->name, section) != 0) {
        cfg_section *old = cfg_section_find(c, section);
        if (old) {
            if (ps->errors++ == 0)
                log_msg(CHATD_LOG_ERROR, NULL,
                        "%s:%d: section [%s] appears twice (first at line %d)", c->file,
                        ps->header_line, section, old->line);
            ps->cur = old;
        } else {
            if (!name_ok(section, 64, false)) {
                if (ps->errors++ == 0)
                    log_msg(CHATD_LOG_ERROR, NULL,
                            "%s:%d: bad section name [%s] (1..64 of A-Z a-z 0-9 _ -)", c->file,
                            ps->header_line, section);
            }
            ps->cur = section_add(c, section, ps->header_line);
            if (!ps->cur) {
                ps->errors++;
                return 1;
            }
        }
    }
    if (!name_ok(name, 128, true)) {
        if (ps->errors++ == 0)
            log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: bad key name '%s' (A-Z a-z 0-9 _ - .)", c->file,
                    ps->line, name);
        return 1;
    }
    cfg_entry *e = cfg_entry_find(ps->cur, name);
    if (e) {
        if (ps->errors++ == 0)
            log_msg(CHATD_LOG_ERROR, NULL, "%s:%d: [%s] %s: set twice (first at line %d)", c->file,
                    ps->line, section, name, e->line);
        return 1;
    }
    if (!entry_add(ps->cur, name, value, ps->line, false)) ps->errors++;
    return 1;
}

int cfg_load(cfg *c, const char *file)
{
    char *name = strdup(file);
    if (!name) {
        oom();
        return -1;
    }
    free(c->file);
    c->file = name;
    parse_state ps = {.c = c};
    ps.f = fopen(file, "r");
    if (!ps.f) {
        log_msg(CHATD_LOG_ERROR, NULL, "%s: cannot open: %s", file, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(reader, &ps, handler, &ps);
    int rerr = ferror(ps.f);
    fclose(ps.f);
    if (rerr) {
        log_msg(CHATD_LOG_ERROR, NULL, "%s: read error", file);
        return -1;
    }
    if (ps.errors) return -1;
    if (rc > 0) {
        log_msg(CHATD_LOG_ERROR, NULL,
                "%s:%d: syntax error (expected [section], key = value or a # comment)", file, rc);
        return -1;
    }
    if (rc < 0) {
        log_msg(CHATD_LOG_ERROR, NULL, "%s: cannot parse (out of memory)", file);
        return -1;
    }
    return 0;
}

int cfg_set(cfg *c, const char *arg)
{
    const char *eq = strchr(arg, '=');
    const char *dot = strchr(arg, '.');
    if (!eq || !dot || dot > eq || dot == arg || dot + 1 == eq) {
        log_msg(CHATD_LOG_ERROR, NULL, "--set %s: expected SECTION.KEY=VALUE", arg);
        return -1;
    }
    char section[128], key[256];
    size_t sl = (size_t)(dot - arg), kl = (size_t)(eq - dot - 1);
    if (sl >= sizeof(section) || kl >= sizeof(key)) {
        log_msg(CHATD_LOG_ERROR, NULL, "--set %s: section or key name too long", arg);
        return -1;
    }
    memcpy(section, arg, sl);
    section[sl] = '\0';
    memcpy(key, dot + 1, kl);
    key[kl] = '\0';
    if (!name_ok(section, 64, false) || !name_ok(key, 128, true)) {
        log_msg(CHATD_LOG_ERROR, NULL, "--set %s.%s: bad section or key name", section, key);
        return -1;
    }
    cfg_section *s = cfg_section_find(c, section);
    if (!s && !(s = section_add(c, section, 0))) return -1;
    cfg_entry *e = cfg_entry_find(s, key);
    if (!e) return entry_add(s, key, eq + 1, 0, true) ? 0 : -1;
    char *v = strdup(eq + 1);
    if (!v) {
        oom();
        return -1;
    }
    free(e->value);
    e->value = v;
    e->from_set = true;
    e->line = 0;
    return 0;
}

int cfg_check_section(cfg *c, cfg_section *s, const chatd_cfg_key *keys)
{
    int bad = 0;
    bool core_sec = strcmp(s->name, CFG_CORE_SECTION) == 0;
    for (size_t i = 0; i < s->n; i++) {
        cfg_entry *e = &s->entries[i];
        if (!core_sec && strcmp(e->key, "plugin") == 0) continue;
        const chatd_cfg_key *k = cfg_key_match(keys, e->key);
        if (!k) {
            cfg_error(c, s, e, "unknown key");
            bad = 1;
            continue;
        }
        char buf[256];
        const char *why = core_sec && !strcmp(e->key, "node_id") && !strcmp(e->value, "auto")
                              ? NULL
                              : value_check(k, e->value, buf, sizeof(buf));
        if (why) {
            cfg_error(c, s, e, "%s", why);
            bad = 1;
        }
    }
    if (!bad) s->keys = keys;
    return bad ? -1 : 0;
}

/* The value of a [chatd] key, or its default from core_keys (the only place
 * a default is written); NULL when it has neither. */
static const char *core_str(cfg_section *s, const char *key)
{
    cfg_entry *e = cfg_entry_find(s, key);
    return e ? e->value : cfg_key_match(core_keys, key)->default_value;
}

static int64_t core_int(cfg_section *s, const char *key)
{
    const chatd_cfg_key *k = cfg_key_match(core_keys, key);
    const char *v = core_str(s, key);
    int64_t n = 0;
    if (k->type == CHATD_CFG_SIZE)
        cfg_parse_size(v, &n);
    else
        cfg_parse_int(v, &n);
    return n;
}

int cfg_check_core(cfg *c)
{
    int bad = 0;
    cfg_section *s = cfg_section_find(c, CFG_CORE_SECTION);
    if (!s && !(s = section_add(c, CFG_CORE_SECTION, 0))) return -1;
    if (cfg_check_section(c, s, core_keys) != 0) bad = 1;
    if (log_level_parse(core_str(s, "log_level"), &c->log_level) != 0) {
        cfg_entry *ll = cfg_entry_find(s, "log_level");
        cfg_error(c, s, ll, "'%s' is not a log level (error, warn, info, debug)", ll->value);
        bad = 1;
    }
    cfg_entry *pd = cfg_entry_find(s, "plugin_dir");
    if (pd && !pd->value[0]) {
        cfg_error(c, s, pd, "empty directory");
        bad = 1;
    }
    for (size_t i = 0; i < c->n; i++) {
        cfg_section *p = c->sections[i];
        if (p == s) continue;
        if (!name_ok(p->name, 64, false)) {
            cfg_error(c, p, NULL, "bad section name (1..64 of A-Z a-z 0-9 _ -)");
            bad = 1;
        }
        cfg_entry *pl = cfg_entry_find(p, "plugin");
        if (!pl) {
            cfg_error(c, p, NULL, "missing key 'plugin' (the plugin module of this instance)");
            bad = 1;
        } else if (!pl->value[0]) {
            cfg_error(c, p, pl, "empty plugin name");
            bad = 1;
        }
    }
    if (bad) return -1;
    c->node_id = strcmp(core_str(s, "node_id"), "auto") ? core_int(s, "node_id") : CFG_NODE_AUTO;
    c->node_lease = core_int(s, "node_lease");
    c->session_ttl = core_int(s, "session_ttl");
    c->max_message_bytes = core_int(s, "max_message_bytes");
    c->publish_rate = core_int(s, "publish_rate");
    c->max_pending = core_int(s, "max_pending");
    c->stop_timeout = core_int(s, "stop_timeout");
    c->auth_threads = core_int(s, "auth_threads");
    c->idempotency_window = core_int(s, "idempotency_window");
    c->idem_fanout_memory = core_int(s, "idem_fanout_memory");
    c->idem_fanout_wait = core_int(s, "idem_fanout_wait");
    c->login_fail_limit = core_int(s, "login_fail_limit");
    c->login_fail_window = core_int(s, "login_fail_window");
    c->register_limit = core_int(s, "register_limit");
    c->register_window = core_int(s, "register_window");
    c->max_hashes_per_addr = core_int(s, "max_hashes_per_addr");
    c->throttle_max_entries = core_int(s, "throttle_max_entries");
    c->member_cache_max = core_int(s, "member_cache_max");
    c->session_purge_interval = core_int(s, "session_purge_interval");
    c->plugin_dir = pd ? pd->value : NULL;
    return 0;
}
