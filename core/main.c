/*
 * core/main.c - the chatd command line: read the configuration (-c FILE,
 * --set overrides), check it (-t), or run the daemon until SIGINT/SIGTERM.
 *
 * Exit codes: 0 success or clean stop; 1 bad configuration or failed
 * start; 2 bad command line.
 */
#include "config.h"

#include "core.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SYSCONFDIR
#define SYSCONFDIR "/usr/local/etc/chatd"
#endif

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: chatd [-c FILE] [-t] [--set SECTION.KEY=VALUE]... \n"
            "       chatd -h [PLUGIN]\n"
            "       chatd -V\n"
            "\n"
            "chatd is a chat message broker: STOMP over WebSocket in front, a queue\n"
            "and a store behind, each a plugin named in the configuration file.\n"
            "\n"
            "  -c, --config FILE      configuration file (default %s/chatd.conf)\n"
            "  -t, --test             check the configuration and exit (0: ok, 1: not)\n"
            "  -s, --set S.K=V        override key K of section [S]; repeatable\n"
            "  -V, --version          print the version and exit\n"
            "  -h, --help [PLUGIN]    print this help, or the keys PLUGIN accepts\n"
            "                         (chatd: the keys of the [chatd] section)\n",
            SYSCONFDIR);
}

static const char *type_name(chatd_cfg_type t)
{
    switch (t) {
    case CHATD_CFG_STRING:
        return "string";
    case CHATD_CFG_INT:
        return "integer";
    case CHATD_CFG_BOOL:
        return "boolean";
    case CHATD_CFG_SIZE:
        return "size";
    }
    return "?";
}

/* One line per key of a key table: name, type, range, default, help. */
static void keys_print(const chatd_cfg_key *keys)
{
    for (const chatd_cfg_key *k = keys; k && k->name; k++) {
        printf("  %-24s %-8s", k->name, type_name(k->type));
        if (k->type == CHATD_CFG_INT || k->type == CHATD_CFG_SIZE)
            printf(" [%lld..%lld]", (long long)k->min, (long long)k->max);
        if (k->default_value) printf(" (default %s)", k->default_value);
        printf("  %s\n", k->help ? k->help : "");
    }
}

/* chatd -h PLUGIN: the keys a plugin accepts; chatd -h chatd: those of [chatd]. */
static int plugin_help(const char *name, const char *plugin_dir)
{
    char why[512];
    if (strcmp(name, "chatd") == 0) {
        printf("chatd %s: the keys of the [chatd] section\n", PACKAGE_VERSION);
        keys_print(cfg_core_keys());
        return 0;
    }
    plugin *p = loader_open(name, plugin_dir, "help", why, sizeof(why));
    if (!p) {
        log_msg(CHATD_LOG_ERROR, NULL, "-h %s: %s", name, why);
        return 1;
    }
    printf("%s %s (%s plugin): %s\n", p->desc.name, p->desc.version ? p->desc.version : "",
           loader_kind_name(p->desc.kind), p->desc.description ? p->desc.description : "");
    printf("  plugin = %s\n", name);
    keys_print(p->desc.cfg_keys);
    loader_close(p);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
        {"set", required_argument, NULL, 's'},    {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char *file = SYSCONFDIR "/chatd.conf";
    bool test = false, help = false;
    const char **sets = calloc((size_t)argc + 1, sizeof(*sets));
    size_t nsets = 0;
    if (!sets) {
        fprintf(stderr, "chatd: out of memory\n");
        return 1;
    }
    int ch;
    while ((ch = getopt_long(argc, argv, "c:ts:Vh", opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            file = optarg;
            break;
        case 't':
            test = true;
            break;
        case 's':
            sets[nsets++] = optarg;
            break;
        case 'V':
            printf("chatd %s (plugin ABI %d.%d)\n", PACKAGE_VERSION, CHATD_ABI_MAJOR,
                   CHATD_ABI_MINOR);
            free(sets);
            return 0;
        case 'h':
            help = true;
            break;
        default:
            usage(stderr);
            free(sets);
            return 2;
        }
    }
    if (help) {
        int rc = 0;
        if (optind < argc) {
            const char *dir = NULL;
            for (size_t i = 0; i < nsets; i++)
                if (strncmp(sets[i], "chatd.plugin_dir=", 17) == 0) dir = sets[i] + 17;
            rc = plugin_help(argv[optind], dir);
        } else {
            usage(stdout);
        }
        free(sets);
        return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "chatd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        free(sets);
        return 2;
    }

    int rc = 1;
    core *c = NULL;
    cfg *cf = cfg_new();
    if (!cf) {
        fprintf(stderr, "chatd: out of memory\n");
        free(sets);
        return 1;
    }
    if (cfg_load(cf, file) != 0) goto out;
    for (size_t i = 0; i < nsets; i++)
        if (cfg_set(cf, sets[i]) != 0) goto out;
    if (cfg_check_core(cf) != 0) goto out;
    log_set_level(cf->log_level);
    c = core_new(cf);
    if (!c) goto out;
    if (test) {
        fprintf(stderr, "%s: configuration ok\n", file);
        rc = 0;
        goto out;
    }
    if (core_start(c) != 0) goto out;
    rc = core_run(c);
out:
    if (rc != 0 && !c)
        log_msg(CHATD_LOG_ERROR, NULL, "%s: configuration refused; chatd not started", file);
    core_free(c);
    cfg_free(cf);
    free(sets);
    return rc;
}
