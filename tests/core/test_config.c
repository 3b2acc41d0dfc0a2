/*
 * tests/core/test_config.c - the configuration parser and validator: a good
 * file, unknown keys, bad values, a missing plugin key, syntax errors,
 * duplicates, --set overrides, and keys checked against a plugin's table
 * (the test transport's), each error naming FILE:LINE or --set.
 */
#include "config.h"

#include "../../core/core.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

static char *dir;

static int setup(void **state)
{
    (void)state;
    dir = temp_dir();
    log_set_level(CHATD_LOG_INFO);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    remove_tree(dir);
    free(dir);
    return 0;
}

/* Parse text as a config file; returns cfg_load + cfg_check_core result
 * and what was logged in *log (free it). */
static int load(const char *text, cfg **out, char **log, char **path)
{
    *path = write_file(dir, "t.conf", text);
    cfg *c = cfg_new();
    assert_non_null(c);
    capture_start();
    int rc = cfg_load(c, *path);
    if (rc == 0) rc = cfg_check_core(c);
    *log = capture_end();
    *out = c;
    return rc;
}

static void expect_error(const char *text, const char *where_fmt, int line, const char *reason)
{
    cfg *c;
    char *log, *path;
    assert_int_equal(load(text, &c, &log, &path), -1);
    char where[600];
    snprintf(where, sizeof(where), where_fmt, path, line);
    if (!strstr(log, where) || !strstr(log, reason))
        fail_msg("expected \"%s\" and \"%s\" in: %s", where, reason, log);
    free(log);
    free(path);
    cfg_free(c);
}

static void good_file(void **state)
{
    (void)state;
    cfg *c;
    char *log, *path;
    assert_int_equal(load("# comment\n"
                          "[chatd]\n"
                          "node_id = 5\n"
                          "log_level = debug\n"
                          "session_ttl = 3600\n"
                          "max_message_bytes = 8k\n"
                          "publish_rate = 0\n"
                          "max_pending = 100\n"
                          "plugin_dir = /opt/chatd\n"
                          "\n"
                          "[ws]\n"
                          "plugin = transport-ws\n"
                          "listen = 127.0.0.1:8080 ; inline comment\n",
                          &c, &log, &path),
                     0);
    assert_int_equal(c->node_id, 5);
    assert_int_equal(c->log_level, CHATD_LOG_DEBUG);
    assert_int_equal(c->session_ttl, 3600);
    assert_int_equal(c->max_message_bytes, 8192);
    assert_int_equal(c->publish_rate, 0);
    assert_int_equal(c->max_pending, 100);
    assert_string_equal(c->plugin_dir, "/opt/chatd");
    cfg_section *ws = cfg_section_find(c, "ws");
    assert_non_null(ws);
    assert_int_equal(ws->line, 11);
    cfg_entry *e = cfg_entry_find(ws, "listen");
    assert_non_null(e);
    assert_string_equal(e->value, "127.0.0.1:8080");
    assert_int_equal(e->line, 13);
    free(log);
    free(path);
    cfg_free(c);
}

static void defaults(void **state)
{
    (void)state;
    cfg *c;
    char *log, *path;
    assert_int_equal(load("[ws]\nplugin = transport-ws\n", &c, &log, &path), 0);
    assert_int_equal(c->node_id, 0);
    assert_int_equal(c->log_level, CHATD_LOG_INFO);
    assert_int_equal(c->max_message_bytes, 4096);
    assert_int_equal(c->publish_rate, 50);
    assert_null(c->plugin_dir);
    free(log);
    free(path);
    cfg_free(c);
}

static void unknown_key(void **state)
{
    (void)state;
    expect_error("[chatd]\nnode_id = 1\nno_such_key = 3\n", "%s:%d:", 3, "unknown key");
}

static void bad_values(void **state)
{
    (void)state;
    expect_error("[chatd]\nnode_id = 1024\n", "%s:%d:", 2, "out of range [0, 1023]");
    expect_error("[chatd]\n\nnode_id = one\n", "%s:%d:", 3, "is not an integer");
    expect_error("[chatd]\nlog_level = loud\n", "%s:%d:", 2, "is not a log level");
    expect_error("[chatd]\nmax_message_bytes = 12q\n", "%s:%d:", 2, "is not a size");
    expect_error("[chatd]\nmax_message_bytes = 2m\n", "%s:%d:", 2, "out of range");
}

static void missing_plugin(void **state)
{
    (void)state;
    expect_error("[chatd]\nnode_id = 1\n\n[store]\npath = x.db\n", "%s:%d:", 4,
                 "missing key 'plugin'");
}

static void syntax_and_duplicates(void **state)
{
    (void)state;
    expect_error("[chatd]\nthis line is not ini\n", "%s:%d:", 2, "syntax error");
    expect_error("[chatd]\nnode_id = 1\nnode_id = 2\n", "%s:%d:", 3, "set twice");
    expect_error("node_id = 1\n", "%s:%d:", 1, "outside any [section]");
    expect_error("[chatd]\nnode_id = 1\n[ws]\nplugin=x\n[chatd]\nlog_level=info\n", "%s:%d:", 5,
                 "appears twice");
}

static void missing_file(void **state)
{
    (void)state;
    cfg *c = cfg_new();
    capture_start();
    assert_int_equal(cfg_load(c, "/nonexistent/chatd.conf"), -1);
    char *log = capture_end();
    assert_non_null(strstr(log, "/nonexistent/chatd.conf: cannot open"));
    free(log);
    cfg_free(c);
}

static void set_overrides(void **state)
{
    (void)state;
    cfg *c;
    char *log, *path;
    assert_int_equal(load("[chatd]\nnode_id = 1\n[ws]\nplugin = transport-ws\n", &c, &log, &path),
                     0);
    free(log);
    assert_int_equal(cfg_set(c, "chatd.node_id=7"), 0);
    assert_int_equal(cfg_set(c, "ws.listen=127.0.0.1:9999"), 0);
    assert_int_equal(cfg_set(c, "ws.kafka.client.id=a=b"), 0);
    assert_int_equal(cfg_check_core(c), 0);
    assert_int_equal(c->node_id, 7);
    cfg_entry *e = cfg_entry_find(cfg_section_find(c, "ws"), "listen");
    assert_non_null(e);
    assert_true(e->from_set);
    assert_string_equal(e->value, "127.0.0.1:9999");
    e = cfg_entry_find(cfg_section_find(c, "ws"), "kafka.client.id");
    assert_non_null(e);
    assert_string_equal(e->value, "a=b");

    /* a bad override is reported as --set SECTION.KEY */
    assert_int_equal(cfg_set(c, "chatd.node_id=5000"), 0);
    capture_start();
    assert_int_equal(cfg_check_core(c), -1);
    log = capture_end();
    assert_non_null(strstr(log, "--set chatd.node_id: 5000 is out of range"));
    free(log);

    capture_start();
    assert_int_equal(cfg_set(c, "nodot=1"), -1);
    assert_int_equal(cfg_set(c, "chatd.node_id"), -1);
    log = capture_end();
    assert_non_null(strstr(log, "--set nodot=1: expected SECTION.KEY=VALUE"));
    free(log);

    /* --set can create a section, which then needs its plugin */
    assert_int_equal(cfg_set(c, "chatd.node_id=2"), 0);
    assert_int_equal(cfg_set(c, "extra.path=x"), 0);
    capture_start();
    assert_int_equal(cfg_check_core(c), -1);
    log = capture_end();
    assert_non_null(strstr(log, "--set extra: missing key 'plugin'"));
    free(log);
    free(path);
    cfg_free(c);
}

/* Keys of a plugin section are checked against the plugin's own table. */
static void plugin_keys(void **state)
{
    (void)state;
    char why[512];
    plugin *p = loader_open(TEST_PLUGINS "/test-transport.so", NULL, "t", why, sizeof(why));
    if (!p) fail_msg("cannot load the test transport: %s", why);
    cfg *c;
    char *log, *path;
    assert_int_equal(load("[t]\nplugin = test-transport\ncount = 4\nflag = yes\nlimit = 2k\n"
                          "opt.anything = goes\n",
                          &c, &log, &path),
                     0);
    free(log);
    cfg_section *s = cfg_section_find(c, "t");
    assert_int_equal(cfg_check_section(c, s, p->desc.cfg_keys), 0);

    static const struct {
        const char *text;
        int line;
        const char *reason;
    } bad[] = {
        {"[t]\nplugin = test-transport\nbogus = 1\n", 3, "[t] bogus: unknown key"},
        {"[t]\nplugin = test-transport\ncount = 11\n", 3, "11 is out of range [1, 10]"},
        {"[t]\nplugin = test-transport\n\ncount = x\n", 4, "is not an integer"},
        {"[t]\nplugin = test-transport\nflag = maybe\n", 3, "is not a boolean"},
        {"[t]\nplugin = test-transport\nlimit = 2g\n", 3, "out of range"},
        {"[t]\nplugin = test-transport\nopt. = x\n", 3, "unknown key"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg *b;
        free(path);
        assert_int_equal(load(bad[i].text, &b, &log, &path), 0);
        free(log);
        capture_start();
        assert_int_equal(cfg_check_section(b, cfg_section_find(b, "t"), p->desc.cfg_keys), -1);
        log = capture_end();
        char where[600];
        snprintf(where, sizeof(where), "%s:%d:", path, bad[i].line);
        if (!strstr(log, where) || !strstr(log, bad[i].reason))
            fail_msg("case %zu: expected \"%s\" and \"%s\" in: %s", i, where, bad[i].reason, log);
        free(log);
        cfg_free(b);
    }

    /* and a bad --set value of a plugin key names the override */
    assert_int_equal(cfg_set(c, "t.count=0"), 0);
    capture_start();
    assert_int_equal(cfg_check_section(c, s, p->desc.cfg_keys), -1);
    log = capture_end();
    assert_non_null(strstr(log, "--set t.count: 0 is out of range [1, 10]"));
    free(log);
    free(path);
    cfg_free(c);
    loader_close(p);
}

static void value_parsers(void **state)
{
    (void)state;
    int64_t n;
    int b;
    assert_int_equal(cfg_parse_size("4k", &n), 0);
    assert_int_equal(n, 4096);
    assert_int_equal(cfg_parse_size("1M", &n), 0);
    assert_int_equal(n, 1048576);
    assert_int_equal(cfg_parse_size("-1", &n), -1);
    assert_int_equal(cfg_parse_size("1kk", &n), -1);
    assert_int_equal(cfg_parse_int("12x", &n), -1);
    assert_int_equal(cfg_parse_int("-12", &n), 0);
    assert_int_equal(n, -12);
    assert_int_equal(cfg_parse_bool("On", &b), 0);
    assert_int_equal(b, 1);
    assert_int_equal(cfg_parse_bool("no", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(cfg_parse_bool("2", &b), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_file),      cmocka_unit_test(defaults),
        cmocka_unit_test(unknown_key),    cmocka_unit_test(bad_values),
        cmocka_unit_test(missing_plugin), cmocka_unit_test(syntax_and_duplicates),
        cmocka_unit_test(missing_file),   cmocka_unit_test(set_overrides),
        cmocka_unit_test(plugin_keys),    cmocka_unit_test(value_parsers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
