/*
 * tests/core/test_loader.c - the plugin loader against deliberately broken
 * plugins (tests/lib/plugins/broken-*.c): each must be refused with a reason
 * naming the file, logged exactly once (by the caller, with the config line);
 * a good plugin loads.
 */
#include "config.h"

#include "../../core/core.h"
#include "testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

/* Load NAME from the test plugins; expect refusal with `reason`. */
static void refused(const char *name, const char *reason)
{
    char why[512];
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s.so", TEST_PLUGINS, name);
    capture_start();
    plugin *p = loader_open(name, TEST_PLUGINS, "inst", why, sizeof(why));
    char *log = capture_end();
    if (p) fail_msg("%s was loaded, expected refusal (%s)", name, reason);
    if (!strstr(why, reason)) fail_msg("%s: reason \"%s\" does not say \"%s\"", name, why, reason);
    if (!strstr(why, path)) fail_msg("%s: reason \"%s\" does not name %s", name, why, path);
    /* the loader itself logs nothing: its caller logs the refusal once */
    if (log[0]) fail_msg("%s: the loader logged the refusal itself: %s", name, log);
    free(log);
}

/* Count the occurrences of needle in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* Through core_new, as chatd runs: one line, with the config file and line,
 * the instance, the file and the reason. */
static void refusal_logged_once(void **state)
{
    (void)state;
    char *dir = temp_dir();
    char *conf =
        write_file(dir, "c.conf",
                   "[chatd]\nnode_id = 1\n\n[bad]\nplugin = " TEST_PLUGINS "/broken-major.so\n");
    cfg *cf = cfg_new();
    assert_non_null(cf);
    assert_int_equal(cfg_load(cf, conf), 0);
    assert_int_equal(cfg_check_core(cf), 0);
    capture_start();
    core *c = core_new(cf);
    char *log = capture_end();
    assert_null(c);
    assert_int_equal(count_of(log, "built for plugin ABI"), 1);
    char where[1024];
    snprintf(where, sizeof(where), "%s:5: [bad]", conf);
    if (!strstr(log, where) || !strstr(log, TEST_PLUGINS "/broken-major.so"))
        fail_msg("the refusal does not name the config line and the file: %s", log);
    free(log);
    cfg_free(cf);
    free(conf);
    remove_tree(dir);
    free(dir);
}

static void wrong_major(void **state)
{
    (void)state;
    char want[128];
    snprintf(want, sizeof(want), "built for plugin ABI %d.0, this chatd speaks %d.%d",
             CHATD_ABI_MAJOR + 1, CHATD_ABI_MAJOR, CHATD_ABI_MINOR);
    refused("broken-major", want);
}

static void newer_minor(void **state)
{
    (void)state;
    refused("broken-minor", "newer plugin ABI");
}

static void short_descriptor(void **state)
{
    (void)state;
    refused("broken-short", "descriptor too short");
}

static void no_entry_symbol(void **state)
{
    (void)state;
    refused("broken-noentry", "no entry symbol 'chatd_plugin_entry'");
}

static void missing_kind_hook(void **state)
{
    (void)state;
    refused("broken-nohook", "missing mandatory transport hook 'deliver'");
}

static void missing_create(void **state)
{
    (void)state;
    refused("broken-nocreate", "missing mandatory hook 'create'");
}

static void short_ops(void **state)
{
    (void)state;
    refused("broken-shortops", "ops table too short");
}

static void missing_file(void **state)
{
    (void)state;
    char why[512];
    capture_start();
    plugin *p = loader_open("no-such-plugin", TEST_PLUGINS, "inst", why, sizeof(why));
    char *log = capture_end();
    assert_null(p);
    assert_non_null(strstr(why, "plugin 'no-such-plugin' not found"));
    assert_non_null(strstr(why, TEST_PLUGINS));
    assert_string_equal(log, "");
    free(log);
    capture_start();
    p = loader_open("../etc/passwd", TEST_PLUGINS, "inst", why, sizeof(why));
    log = capture_end();
    assert_null(p);
    assert_non_null(strstr(why, "not found"));
    free(log);
}

static void good_plugin(void **state)
{
    (void)state;
    char why[512];
    plugin *p = loader_open("test-transport", TEST_PLUGINS, "t", why, sizeof(why));
    if (!p) fail_msg("test-transport refused: %s", why);
    assert_int_equal(p->desc.kind, CHATD_KIND_TRANSPORT);
    assert_string_equal(p->desc.name, "test-transport");
    assert_non_null(p->ops.transport.deliver);
    assert_int_equal(p->ops.transport.size, sizeof(chatd_transport_ops));
    assert_non_null(p->desc.cfg_keys);
    loader_close(p);

    /* the same module loaded twice (two instances) is fine */
    plugin *a = loader_open(TEST_PLUGINS "/test-transport.so", NULL, "a", why, sizeof(why));
    plugin *b = loader_open(TEST_PLUGINS "/test-transport.so", NULL, "b", why, sizeof(why));
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_equal(a->desc.create, b->desc.create);
    loader_close(a);
    loader_close(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wrong_major),       cmocka_unit_test(newer_minor),
        cmocka_unit_test(short_descriptor),  cmocka_unit_test(no_entry_symbol),
        cmocka_unit_test(missing_kind_hook), cmocka_unit_test(missing_create),
        cmocka_unit_test(short_ops),         cmocka_unit_test(missing_file),
        cmocka_unit_test(good_plugin),       cmocka_unit_test(refusal_logged_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
