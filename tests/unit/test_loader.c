/*
 * tests/unit/test_loader.c - the plugin loader against deliberately broken
 * plugins (tests/plugins/broken-*.c): each must be refused, with a log line
 * naming the file and the reason; a good plugin loads.
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
    /* one log line with the instance, the file and the reason */
    if (!strstr(log, "[inst]") || !strstr(log, path) || !strstr(log, reason))
        fail_msg("%s: log does not name instance, file and reason: %s", name, log);
    free(log);
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
    assert_non_null(strstr(log, TEST_PLUGINS));
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
        cmocka_unit_test(good_plugin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
