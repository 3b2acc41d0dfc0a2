/*
 * core/loader.c - finds a plugin module, dlopens it and checks its ABI.
 *
 * The rules (see include/chatd/plugin.h): one entry symbol returning a
 * descriptor; refuse another major, a newer minor, a descriptor or an ops
 * table shorter than this major requires, and a missing mandatory hook. Only
 * the bytes a plugin declares (desc->size, ops->size) are ever read; the
 * rest of our copies stays zero, so hooks appended later read as absent.
 */
#include "config.h"

#include "core.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef PLUGINDIR
#define PLUGINDIR "/usr/local/lib/chatd/plugins"
#endif

/* Smallest sizes a plugin of ABI 1.0 can declare. */
#define DESC_MIN_SIZE (offsetof(chatd_plugin_desc, ops) + sizeof(const void *))
#define OPS_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

const char *loader_kind_name(chatd_plugin_kind kind)
{
    switch (kind) {
    case CHATD_KIND_TRANSPORT:
        return "transport";
    case CHATD_KIND_QUEUE:
        return "queue";
    case CHATD_KIND_STORE:
        return "store";
    case CHATD_KIND_FILTER:
        return "filter";
    }
    return "unknown";
}

/* The build directory when this executable is BUILDDIR/core/chatd. */
static const char *build_tree(void)
{
#ifdef BUILDDIR
    static char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) return NULL;
    exe[n] = '\0';
    char want[PATH_MAX];
    char real_build[PATH_MAX];
    if (!realpath(BUILDDIR, real_build)) return NULL;
    static const char *const tails[] = {"/core/chatd", "/core/.libs/chatd"};
    for (size_t i = 0; i < 2; i++) {
        int w = snprintf(want, sizeof(want), "%s%s", real_build, tails[i]);
        if (w > 0 && (size_t)w < sizeof(want) && strcmp(exe, want) == 0) return BUILDDIR;
    }
#endif
    return NULL;
}

static int try_path(char *out, size_t size, const char *dir, const char *sub, const char *name)
{
    int n = snprintf(out, size, "%s%s/%s.so", dir, sub, name);
    if (n < 0 || (size_t)n >= size) return -1;
    return access(out, F_OK) == 0 ? 0 : -1;
}

/* Resolve spec to a file; 0, or -1 with the places looked at in why. */
static int resolve(const char *spec, const char *plugin_dir, char *out, size_t size, char *why,
                   size_t whylen)
{
    if (strchr(spec, '/')) {
        if (snprintf(out, size, "%s", spec) >= (int)size || access(out, F_OK) != 0) {
            snprintf(why, whylen, "plugin file not found: %s", spec);
            return -1;
        }
        return 0;
    }
    for (const char *p = spec; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.')) {
            snprintf(why, whylen, "bad plugin name '%s' (letters, digits, _ - .)", spec);
            return -1;
        }
    }
    char sub[PATH_MAX];
    const char *build = build_tree();
    if (plugin_dir && try_path(out, size, plugin_dir, "", spec) == 0) return 0;
    if (build) {
        snprintf(sub, sizeof(sub), "/plugins/%s/.libs", spec);
        if (try_path(out, size, build, sub, spec) == 0) return 0;
    }
    if (!plugin_dir && try_path(out, size, PLUGINDIR, "", spec) == 0) return 0;
    snprintf(why, whylen,
             "plugin '%s' not found: looked for %s.so in %s%s%s%s (set plugin_dir in [chatd] or "
             "install it)",
             spec, spec, plugin_dir ? plugin_dir : PLUGINDIR, build ? " and " : "",
             build ? build : "", build ? "/plugins/NAME/.libs" : "");
    return -1;
}

/* Copy an ops table of a declared size; check its mandatory hook. */
static int copy_ops(plugin *p, char *why, size_t whylen)
{
    const uint32_t *declared = p->desc.ops;
    if (!declared) {
        snprintf(why, whylen, "descriptor has no ops table for its kind (%s)",
                 loader_kind_name(p->desc.kind));
        return -1;
    }
    size_t full, need;
    const char *hook;
    switch (p->desc.kind) {
    case CHATD_KIND_TRANSPORT:
        full = sizeof(chatd_transport_ops);
        need = OPS_END(chatd_transport_ops, deliver);
        hook = "deliver";
        break;
    case CHATD_KIND_QUEUE:
        full = sizeof(chatd_queue_ops);
        need = OPS_END(chatd_queue_ops, enqueue);
        hook = "enqueue";
        break;
    case CHATD_KIND_STORE:
        full = sizeof(chatd_store_ops);
        need = OPS_END(chatd_store_ops, persist);
        hook = "persist";
        break;
    case CHATD_KIND_FILTER:
        full = sizeof(chatd_filter_ops);
        need = OPS_END(chatd_filter_ops, filter);
        hook = "filter";
        break;
    default:
        snprintf(why, whylen, "unknown plugin kind %d", (int)p->desc.kind);
        return -1;
    }
    uint32_t size = *declared;
    if (size < need) {
        snprintf(why, whylen, "%s ops table too short: %u bytes declared, at least %zu needed",
                 loader_kind_name(p->desc.kind), size, need);
        return -1;
    }
    memset(&p->ops, 0, sizeof(p->ops));
    memcpy(&p->ops, declared, size < full ? size : full);
    const void *fn = NULL;
    switch (p->desc.kind) {
    case CHATD_KIND_TRANSPORT:
        fn = (const void *)p->ops.transport.deliver;
        break;
    case CHATD_KIND_QUEUE:
        fn = (const void *)p->ops.queue.enqueue;
        break;
    case CHATD_KIND_STORE:
        fn = (const void *)p->ops.store.persist;
        break;
    case CHATD_KIND_FILTER:
        fn = (const void *)p->ops.filter.filter;
        break;
    }
    if (!fn) {
        snprintf(why, whylen, "missing mandatory %s hook '%s'", loader_kind_name(p->desc.kind),
                 hook);
        return -1;
    }
    return 0;
}

static int check_desc(plugin *p, const chatd_plugin_desc *d, char *why, size_t whylen)
{
    /* abi_major, abi_minor and size come first in every version. */
    if (d->abi_major != CHATD_ABI_MAJOR) {
        snprintf(why, whylen,
                 "built for plugin ABI %u.%u, this chatd speaks %d.%d (rebuild the plugin against "
                 "this chatd)",
                 d->abi_major, d->abi_minor, CHATD_ABI_MAJOR, CHATD_ABI_MINOR);
        return -1;
    }
    if (d->abi_minor > CHATD_ABI_MINOR) {
        snprintf(why, whylen,
                 "built for a newer plugin ABI %u.%u than this chatd's %d.%d (upgrade chatd)",
                 d->abi_major, d->abi_minor, CHATD_ABI_MAJOR, CHATD_ABI_MINOR);
        return -1;
    }
    if (d->size < DESC_MIN_SIZE) {
        snprintf(why, whylen, "descriptor too short: %u bytes declared, ABI %d needs at least %zu",
                 d->size, CHATD_ABI_MAJOR, (size_t)DESC_MIN_SIZE);
        return -1;
    }
    memset(&p->desc, 0, sizeof(p->desc));
    memcpy(&p->desc, d, d->size < sizeof(p->desc) ? d->size : sizeof(p->desc));
    if (!p->desc.name || !p->desc.name[0]) {
        snprintf(why, whylen, "descriptor has no name");
        return -1;
    }
    if (!p->desc.create) {
        snprintf(why, whylen, "missing mandatory hook 'create'");
        return -1;
    }
    if (!p->desc.destroy) {
        snprintf(why, whylen, "missing mandatory hook 'destroy'");
        return -1;
    }
    return copy_ops(p, why, whylen);
}

plugin *loader_open(const char *spec, const char *plugin_dir, const char *instance, char *why,
                    size_t whylen)
{
    char local_why[512];
    if (!why || whylen == 0) {
        why = local_why;
        whylen = sizeof(local_why);
    }
    why[0] = '\0';
    char path[PATH_MAX];
    if (resolve(spec, plugin_dir, path, sizeof(path), why, whylen) != 0) return NULL;
    plugin *p = calloc(1, sizeof(*p));
    if (!p || !(p->path = strdup(path))) {
        free(p);
        snprintf(why, whylen, "%s: out of memory", path);
        return NULL;
    }
    dlerror();
    p->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!p->dl) {
        const char *e = dlerror();
        snprintf(why, whylen, "cannot load: %s", e ? e : "unknown dlopen error");
        goto refuse;
    }
    dlerror();
    void *sym = dlsym(p->dl, CHATD_PLUGIN_ENTRY);
    if (!sym) {
        snprintf(why, whylen, "no entry symbol '%s' (not a chatd plugin?)", CHATD_PLUGIN_ENTRY);
        goto refuse;
    }
    chatd_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof(entry)); /* object pointer to function pointer */
    const chatd_plugin_desc *d = entry();
    if (!d) {
        snprintf(why, whylen, "entry symbol returned no descriptor");
        goto refuse;
    }
    if (check_desc(p, d, why, whylen) != 0) goto refuse;
    if (strcmp(p->desc.name, spec) != 0 && !strchr(spec, '/'))
        log_msg(CHATD_LOG_WARN, instance, "%s: calls itself '%s', loaded as '%s'", path,
                p->desc.name, spec);
    log_msg(CHATD_LOG_DEBUG, instance, "%s: loaded %s plugin %s %s (ABI %u.%u)", path,
            loader_kind_name(p->desc.kind), p->desc.name, p->desc.version ? p->desc.version : "?",
            d->abi_major, d->abi_minor);
    return p;

refuse : {
    char reason[512];
    snprintf(reason, sizeof(reason), "%s", why);
    snprintf(why, whylen, "%s: plugin refused: %s", path, reason);
    loader_close(p);
    return NULL;
}
}

void loader_close(plugin *p)
{
    if (!p) return;
    /* CHATD_NO_DLCLOSE (chatd(8)): keep modules mapped for leak checkers */
    if (p->dl && !getenv("CHATD_NO_DLCLOSE")) dlclose(p->dl);
    free(p->path);
    free(p);
}
