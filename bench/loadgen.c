/*
 * loadgen.c - the chatd benchmark load generator: many WebSocket + STOMP 1.2
 * clients in one process on one libevent loop, against chatd (members logged in
 * through its REST API, rooms "a&b") or RabbitMQ Web-STOMP (/topic/... with
 * guest/guest). Measures delivered messages/s, publish-to-delivery latency
 * (send time embedded in the body, log-bucket histogram), lost and duplicated
 * messages (per-publisher sequence numbers), connection set-up rate, server RSS
 * per connection, and its own CPU share. Loopback only; every run is bounded by
 * a duration and a connection cap. See bench/README.md and docs/benchmarks.md.
 *
 * This file: the options and main(); the rest is in loadgen_*.c (loadgen.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>

#include <event2/buffer.h>

#include "loadgen.h"

struct lg_state g;

/* ------------------------------------------------------------------- main */

static void usage(void)
{
    puts("usage: loadgen --target chatd|rabbit --port P [options]\n"
         "  --path /ws            WebSocket path\n"
         "  --subs N --pubs M     N subscriber and M publisher connections\n"
         "  --pubsub N            N connections that each subscribe and publish (1:1 chat);\n"
         "                        add --pubs 0 to make them subscribe only\n"
         "  --rooms R             destinations (chatd: rooms of two members each)\n"
         "  --rate X              messages/s per publisher (0 = flat out with --window)\n"
         "  --window W            outstanding receipts per publisher (flat out; default 16)\n"
         "  --inflight N          flat out: at most N messages per publisher not yet received\n"
         "                        by every subscriber of its room (1: the next SEND waits\n"
         "                        for every copy of the last)\n"
         "  --size B              message text bytes (default 64)\n"
         "  --duration S          publishing seconds (default 10, max 600)\n"
         "  --drain S             seconds to wait for in-flight messages (default 5)\n"
         "  --settle S            seconds between set-up and publishing (default 1)\n"
         "  --connect-conc K      connection attempts in flight (default 200)\n"
         "  --setup-timeout S     give up on slow connections after S (default 120)\n"
         "  --persistent          rabbit: durable subscriptions and persistent messages\n"
         "  --server-pid PID[,PID...]  report the server's RSS delta per connection and its\n"
         "                        CPU share while publishing, summed over the processes\n"
         "                        given (alias --rss-pid)\n"
         "  --csv FILE            append a CSV row (header when the file is new)\n"
         "  --hist FILE           write the latency percentile distribution\n"
         "  --timeline FILE       write deliveries and p50/p99/p99.9/max latency per second\n"
         "  --label L --scenario S  names in the CSV\n"
         "  chatd: --prefix P (member login prefix), --password W, --token-cache FILE,\n"
         "         --http-conc K (parallel REST requests while logging in)\n"
         "  rabbit: --dest-prefix P (topic name prefix)\n"
         "  -q quiet");
}

int main(int argc, char **argv)
{
    g.path = "/ws";
    g.label = "run";
    g.scenario = "custom";
    g.nrooms = 1;
    g.window = 16;
    g.size = 64;
    g.duration = 10;
    g.drain = 5;
    g.settle = 1;
    g.connect_conc = 200;
    g.http_conc = 4;
    g.setup_timeout = 120;
    g.prefix = "lg";
    g.password = "bench-password-1";
    g.dest_prefix = "room";
    g.npubs = -1;
    bool target_set = false;

    static const struct option opts[] = {{"target", 1, 0, 't'},
                                         {"port", 1, 0, 'p'},
                                         {"path", 1, 0, 'P'},
                                         {"subs", 1, 0, 's'},
                                         {"pubs", 1, 0, 'm'},
                                         {"pubsub", 1, 0, 'b'},
                                         {"rooms", 1, 0, 'r'},
                                         {"rate", 1, 0, 'R'},
                                         {"window", 1, 0, 'w'},
                                         {"size", 1, 0, 'z'},
                                         {"duration", 1, 0, 'd'},
                                         {"drain", 1, 0, 'D'},
                                         {"settle", 1, 0, 'S'},
                                         {"connect-conc", 1, 0, 'k'},
                                         {"http-conc", 1, 0, 'H'},
                                         {"setup-timeout", 1, 0, 'T'},
                                         {"csv", 1, 0, 'c'},
                                         {"hist", 1, 0, 'h'},
                                         {"label", 1, 0, 'l'},
                                         {"scenario", 1, 0, 'n'},
                                         {"token-cache", 1, 0, 'C'},
                                         {"prefix", 1, 0, 'x'},
                                         {"password", 1, 0, 'W'},
                                         {"dest-prefix", 1, 0, 'X'},
                                         {"persistent", 0, 0, 'Y'},
                                         {"rss-pid", 1, 0, 'M'},
                                         {"server-pid", 1, 0, 'M'},
                                         {"help", 0, 0, 'Z'},
                                         {"timeline", 1, 0, 'L'},
                                         {"inflight", 1, 0, 'I'},
                                         {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "q", opts, NULL)) != -1) {
        switch (o) {
        case 't':
            if (strcmp(optarg, "chatd") == 0)
                g.target = TARGET_CHATD;
            else if (strcmp(optarg, "rabbit") == 0 || strcmp(optarg, "rabbitmq") == 0)
                g.target = TARGET_RABBIT;
            else
                die("--target must be chatd or rabbit");
            target_set = true;
            break;
        case 'p':
            g.port = atoi(optarg);
            break;
        case 'P':
            g.path = optarg;
            break;
        case 's':
            g.nsubs = atoi(optarg);
            break;
        case 'm':
            g.npubs = atoi(optarg);
            break;
        case 'b':
            g.npubsub = atoi(optarg);
            break;
        case 'r':
            g.nrooms = atoi(optarg);
            break;
        case 'R':
            g.rate = atof(optarg);
            break;
        case 'w':
            g.window = atoi(optarg);
            break;
        case 'z':
            g.size = atoi(optarg);
            break;
        case 'd':
            g.duration = atof(optarg);
            break;
        case 'D':
            g.drain = atof(optarg);
            break;
        case 'S':
            g.settle = atof(optarg);
            break;
        case 'k':
            g.connect_conc = atoi(optarg);
            break;
        case 'H':
            g.http_conc = atoi(optarg);
            break;
        case 'T':
            g.setup_timeout = atof(optarg);
            break;
        case 'c':
            g.csv = optarg;
            break;
        case 'h':
            g.hist_out = optarg;
            break;
        case 'l':
            g.label = optarg;
            break;
        case 'n':
            g.scenario = optarg;
            break;
        case 'C':
            g.token_cache = optarg;
            break;
        case 'x':
            g.prefix = optarg;
            break;
        case 'W':
            g.password = optarg;
            break;
        case 'X':
            g.dest_prefix = optarg;
            break;
        case 'Y':
            g.persistent = true;
            break;
        case 'M':
            for (char *e, *q = optarg; *q; q = *e ? e + 1 : e) {
                long v = strtol(q, &e, 10);
                if (e == q || v <= 0 || (*e && *e != ',') || g.nsrv_pids >= LG_MAX_SERVER_PIDS)
                    die("--server-pid takes up to %d process ids separated by commas",
                        LG_MAX_SERVER_PIDS);
                g.srv_pids[g.nsrv_pids++] = (pid_t)v;
            }
            break;
        case 'I':
            g.inflight = atoi(optarg);
            break;
        case 'q':
            g.quiet = true;
            break;
        case 'L':
            g.timeline = optarg;
            break;
        case 'Z':
            usage();
            return 0;
        default:
            usage();
            return 2;
        }
    }
    if (!target_set || g.port <= 0 || g.port > 65535)
        die("give --target chatd|rabbit and --port (see --help)");
    if (g.npubs < 0) g.npubs = g.npubsub ? g.npubsub : 0;
    if (g.nrooms < 1 || g.nrooms > LG_MAX_CONNS) die("--rooms must be 1..%d", LG_MAX_CONNS);
    if (g.size < 0 || g.size > LG_MAX_SIZE) die("--size must be 0..%d", LG_MAX_SIZE);
    if (g.duration <= 0 || g.duration > LG_MAX_DURATION)
        die("--duration must be in (0, %d] seconds", LG_MAX_DURATION);
    if (g.drain < 0 || g.drain > 120 || g.settle < 0 || g.settle > 120)
        die("--drain and --settle must be 0..120 seconds");
    if (g.window < 0 || (g.rate <= 0 && g.window < 1))
        die("flat out (--rate 0) needs --window >= 1");
    if (g.inflight < 0 || g.inflight > 1024 || (g.inflight && g.rate > 0))
        die("--inflight must be 0..1024 and needs --rate 0 (flat out)");
    if (g.connect_conc < 1 || g.http_conc < 1 || g.http_conc > 64)
        die("--connect-conc >= 1 and --http-conc 1..64");
    if (g.setup_timeout <= 0 || g.setup_timeout > 600) die("--setup-timeout must be in (0, 600]");
    if (strchr(g.password, '"') || strchr(g.prefix, '"') || strlen(g.prefix) > 20)
        die("--prefix (<= 20 chars) and --password must not contain quotes");

    /* one fd per connection, plus a margin; never above the hard limit */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rlim_t want = (rlim_t)LG_MAX_CONNS;
        if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) want = rl.rlim_max;
        if (rl.rlim_cur < want) {
            rl.rlim_cur = want;
            if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
                logmsg("cannot raise the open-file limit: %s", strerror(errno));
        }
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(g.nonce, sizeof g.nonce, "%lx%x", (long)time(NULL) & 0xffffff, (unsigned)getpid());
    g.mask_pos = sizeof g.mask_pool;
    g.scratch = malloc(LG_MAX_SIZE + 4096);
    g.pad = malloc(LG_MAX_SIZE + 1);
    g.body = malloc(LG_MAX_SIZE + 512);
    if (!g.scratch || !g.pad || !g.body) die("out of memory");
    for (int i = 0; i < LG_MAX_SIZE; i++)
        g.pad[i] = (char)('a' + i % 26);
    g.pad[LG_MAX_SIZE] = '\0';

    topology();
    /* precise timers: the publishers' schedules are sub-millisecond apart
     * (2,000 members at 1 msg/s: one SEND every 0.5 ms), finer than the
     * millisecond timeout of epoll_wait that libevent uses by default */
    struct event_config *ecfg = event_config_new();
    if (!ecfg) die("out of memory for the event loop's configuration");
    event_config_set_flag(ecfg, EVENT_BASE_FLAG_PRECISE_TIMER);
    g.base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (!g.base) die("cannot create the event loop");
    g.phase_timer = evtimer_new(g.base, phase_cb, NULL);
    g.sig_ev = evsignal_new(g.base, SIGINT, on_signal, NULL);
    struct event *sig_term = evsignal_new(g.base, SIGTERM, on_signal, NULL);
    if (!g.phase_timer || !g.sig_ev || !sig_term) die("cannot create timers");
    event_add(g.sig_ev, NULL);
    event_add(sig_term, NULL);
    schedule_phase(g.setup_timeout);
    g.t_setup0 = now_ns();
    if (g.target == TARGET_CHATD)
        members_setup();
    else
        build_rooms_and_connect();

    event_base_dispatch(g.base);
    if (g_phase == PH_DONE || g.interrupted || g.t_pub0) print_report();
    int rc = (g.ready == 0) ? 1 : 0;
    /* durable rabbit subscriptions: remove their queues */
    if (g.target == TARGET_RABBIT && g.persistent) {
        for (int i = 0; i < g.nconns; i++) {
            struct conn *c = &g.conns[i];
            if (c->state == CS_READY && c->is_sub) {
                char h[128];
                snprintf(h, sizeof h, "id:s%s-%d\ndurable:true\n", g.nonce, c->idx);
                if (stomp_send(c, "UNSUBSCRIBE", h, NULL, 0) != 0)
                    logmsg("conn %d: cannot queue UNSUBSCRIBE", c->idx);
            }
        }
        struct timeval tv = {1, 0};
        event_base_loopexit(g.base, &tv);
        event_base_dispatch(g.base);
    }
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->bev) bufferevent_free(c->bev);
        if (c->frag) evbuffer_free(c->frag);
        if (c->stomp_in) evbuffer_free(c->stomp_in);
        if (c->tick) event_free(c->tick);
        free(c->last_seq);
        free(c->copies);
    }
    free(g.tl);
    event_free(g.phase_timer);
    event_free(g.sig_ev);
    event_free(sig_term);
    event_base_free(g.base);
    free(g.conns);
    free(g.rooms);
    free(g.pubs);
    free(g.members);
    free(g.scratch);
    free(g.pad);
    free(g.body);
    return rc;
}
