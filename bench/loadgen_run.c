/*
 * loadgen_run.c - the load generator's scenario driver: which connection
 * subscribes or publishes in which room, the publishers' pacing (rate or
 * window of receipts), and the phases set-up, settle, publish, drain, done.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>

#include "loadgen.h"

/* -------------------------------------------------------------- publishing */

static int pub_send_one(struct conn *c)
{
    const struct room *r = &g.rooms[c->room];
    c->seq++;
    char marker[80];
    int ml = snprintf(marker, sizeof marker, "~LG%d.%" PRIu64 ".%" PRIu64 "~", c->pub_idx, c->seq,
                      now_ns());
    if (ml < 0 || (size_t)ml >= sizeof marker) return -1;
    int padn = g.size > ml ? g.size - ml : 0;
    char *body = g.body;
    int bl = snprintf(body, LG_MAX_SIZE + 512, "{\"roomId\":\"%s\",\"message\":\"%s%.*s\"}",
                      r->room_id, marker, padn, g.pad);
    if (bl < 0) return -1;
    char h[256];
    snprintf(h, sizeof h, "destination:%s\ncontent-type:application/json\n%sreceipt:%" PRIu64 "\n",
             r->pub_dest, g.persistent && g.target == TARGET_RABBIT ? "persistent:true\n" : "",
             c->seq);
    if (bl >= LG_MAX_SIZE + 512 || stomp_send(c, "SEND", h, body, (size_t)bl) != 0) return -1;
    c->sent++;
    c->outstanding++;
    return 0;
}

void pub_send_due(struct conn *c)
{
    if (c->state != CS_READY || !g.publishing) return;
    if (g.rate <= 0) {
        while (c->outstanding < g.window &&
               (g.inflight == 0 || c->sent - c->full < (uint64_t)g.inflight))
            if (pub_send_one(c) != 0) {
                conn_fail(c, "cannot queue SEND");
                return;
            }
        return;
    }
    uint64_t now = now_ns();
    if (now < c->pub_t0) return; /* its schedule has not begun */
    double el_us = (double)(now - c->pub_t0) / 1e3;
    uint64_t due = (uint64_t)(el_us / c->pub_interval_us) + 1;
    int burst = 0;
    while (c->sent < due && burst < 1000) {
        if (g.window > 0 && c->outstanding >= g.window) break;
        if (pub_send_one(c) != 0) {
            conn_fail(c, "cannot queue SEND");
            return;
        }
        burst++;
    }
}

/* Each publisher's k-th message is due at pub_t0 + k x interval on its own
 * fixed schedule (pub_t0 holds the publisher's offset in the interval), and
 * its timer is armed for that instant from a fresh clock. Re-arming "one
 * interval from now" instead drifts with every late wake-up and, since
 * libevent measures a timeout from the time cached at the start of the loop
 * turn, makes the publishers whose ticks ran in one turn due together from
 * then on: the offered load would turn into clumps that grow with the run. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct conn *c = arg;
    if (!g.publishing || c->state != CS_READY) return;
    pub_send_due(c);
    uint64_t due = c->pub_t0 + (uint64_t)((double)c->sent * c->pub_interval_us * 1e3);
    event_base_update_cache_time(g.base);
    uint64_t now = now_ns();
    uint64_t wait_us = due > now ? (due - now + 999) / 1000 : 0;
    struct timeval tv = {(time_t)(wait_us / 1000000), (suseconds_t)(wait_us % 1000000)};
    event_add(c->tick, &tv);
}

/* ------------------------------------------------------------------ phases */

void schedule_phase(double seconds)
{
    struct timeval tv = {(time_t)seconds, (suseconds_t)((seconds - (double)(time_t)seconds) * 1e6)};
    event_add(g.phase_timer, &tv);
}

enum phase g_phase = PH_SETUP_TIMEOUT;

static void start_publishing(void)
{
    for (int i = 0; i < g.nrooms; i++)
        g.rooms[i].nsubs_ready = 0;
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->is_sub && c->state == CS_READY) g.rooms[c->room].nsubs_ready++;
    }
    if (g.nsrv_pids > 0) g.rss_after = server_rss_kb();
    getrusage(RUSAGE_SELF, &g.ru0);
    if (g.nsrv_pids > 0) g.srv_cpu0 = server_cpu_s();
    g.t_pub0 = now_ns();
    g.publishing = g.npubs > 0;
    for (int i = 0; i < g.npubs; i++) {
        struct conn *c = g.pubs[i];
        if (c->state != CS_READY) continue;
        c->pub_t0 = g.t_pub0;
        if (g.rate <= 0) {
            pub_send_due(c);
        } else {
            /* spread publishers evenly over one interval */
            double off = c->pub_interval_us * (double)i / (double)g.npubs;
            c->pub_t0 = g.t_pub0 + (uint64_t)(off * 1e3);
            struct timeval tv = {(time_t)(off / 1e6), (suseconds_t)((uint64_t)off % 1000000)};
            c->tick = evtimer_new(g.base, on_tick, c);
            if (!c->tick) die("out of memory for publisher timers");
            evtimer_add(c->tick, &tv);
        }
    }
    g_phase = PH_PUB_END;
    schedule_phase(g.duration);
}

void check_setup_done(void)
{
    if (g_phase != PH_SETUP_TIMEOUT) return;
    if (g.ready + (g.failed - g.dropped) < g.nconns) return;
    g.t_connect_done = now_ns();
    double s = (double)(g.t_connect_done - g.t_connect0) / 1e9;
    logmsg("%d connections ready, %d failed, in %.2f s (%.0f/s)", g.ready, g.failed, s,
           s > 0 ? g.ready / s : 0);
    if (g.ready == 0) {
        g_phase = PH_DONE;
        event_base_loopexit(g.base, NULL);
        return;
    }
    g_phase = PH_SETTLED;
    event_del(g.phase_timer);
    schedule_phase(g.settle);
}

static uint64_t expected_now(void)
{
    uint64_t e = 0;
    for (int i = 0; i < g.npubs; i++) {
        const struct conn *c = g.pubs[i];
        e += c->sent * (uint64_t)g.rooms[c->room].nsubs_ready;
    }
    return e;
}

void phase_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    switch (g_phase) {
    case PH_SETUP_TIMEOUT:
        logmsg("set-up timed out: %d ready, %d failed, %d pending; going on with the ready ones",
               g.ready, g.failed, g.nconns - g.ready - g.failed);
        for (int i = 0; i < g.nconns; i++)
            if (g.conns[i].state != CS_READY && g.conns[i].state != CS_FAILED)
                conn_fail(&g.conns[i], "set-up timeout");
        g.next_connect = g.nconns;
        check_setup_done();
        break;
    case PH_SETTLED:
        start_publishing();
        if (!g.publishing) {
            g_phase = PH_PUB_END;
        }
        break;
    case PH_PUB_END:
        g.publishing = false;
        g.t_pub_end = now_ns();
        getrusage(RUSAGE_SELF, &g.ru1);
        if (g.nsrv_pids > 0) g.srv_cpu1 = server_cpu_s();
        g.draining = true;
        g.unique_at_pub_end = g.unique;
        g.expected_total = expected_now();
        g_phase = PH_DRAIN_POLL;
        schedule_phase(0.05);
        break;
    case PH_DRAIN_POLL: {
        double waited = (double)(now_ns() - g.t_pub_end) / 1e9;
        uint64_t outstanding = 0;
        for (int i = 0; i < g.npubs; i++)
            if (g.pubs[i]->state == CS_READY) outstanding += (uint64_t)g.pubs[i]->outstanding;
        if ((g.unique >= g.expected_total && outstanding == 0) || waited >= g.drain) {
            g.t_end = now_ns();
            if (g.nsrv_pids > 0) g.rss_end = server_rss_kb();
            g_phase = PH_DONE;
            event_base_loopexit(g.base, NULL);
        } else {
            schedule_phase(0.05);
        }
        break;
    }
    case PH_DONE:
        break;
    }
}

void on_signal(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    logmsg("interrupted; reporting what was measured");
    g.interrupted = true;
    if (g.publishing) {
        g.publishing = false;
        g.t_pub_end = now_ns();
        getrusage(RUSAGE_SELF, &g.ru1);
        g.unique_at_pub_end = g.unique;
        g.expected_total = expected_now();
    }
    g.t_end = now_ns();
    event_base_loopexit(g.base, NULL);
}

/* ------------------------------------------------------------- topology */

void build_rooms_and_connect(void)
{
    for (int r = 0; r < g.nrooms; r++) {
        struct room *rm = &g.rooms[r];
        if (g.target == TARGET_RABBIT) {
            snprintf(rm->sub_dest, sizeof rm->sub_dest, "/topic/%s%s.%d", g.dest_prefix, g.nonce,
                     r);
            snprintf(rm->pub_dest, sizeof rm->pub_dest, "%s", rm->sub_dest);
            snprintf(rm->room_id, sizeof rm->room_id, "%d", r);
        } else {
            rm->members[0] = 2 * r;
            rm->members[1] = 2 * r + 1;
            long a = g.members[2 * r].id, b = g.members[2 * r + 1].id;
            long lo = a < b ? a : b, hi = a < b ? b : a;
            snprintf(rm->room_id, sizeof rm->room_id, "%ld&%ld", lo, hi);
            snprintf(rm->sub_dest, sizeof rm->sub_dest, "/sub/chat/room/%s", rm->room_id);
            snprintf(rm->pub_dest, sizeof rm->pub_dest, "/pub/chat/message");
        }
    }
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        if (c->is_sub && g.rooms[c->room].npubs > 0) {
            c->last_seq = calloc((size_t)g.rooms[c->room].npubs, sizeof *c->last_seq);
            if (!c->last_seq) die("out of memory");
        }
    }
    for (int i = 0; g.inflight > 0 && i < g.npubs; i++) {
        g.pubs[i]->copies = calloc((size_t)g.inflight, sizeof *g.pubs[i]->copies);
        if (!g.pubs[i]->copies) die("out of memory");
    }
    if (g.timeline) {
        g.ntl = (size_t)(g.duration + g.drain) + 3;
        g.tl = calloc(g.ntl, sizeof *g.tl);
        if (!g.tl) die("out of memory for the timeline (%zu seconds)", g.ntl);
    }
    if (g.nsrv_pids > 0) g.rss_before = server_rss_kb();
    g.t_connect0 = now_ns();
    start_more_connections();
}

void topology(void)
{
    int subs_only = g.npubsub ? 0 : g.nsubs;
    int pubs_only = g.npubsub ? 0 : g.npubs;
    g.nconns = g.npubsub + subs_only + pubs_only;
    g.npubs = g.npubsub ? (g.npubs ? g.npubsub : 0) : pubs_only;
    if (g.nconns <= 0) die("no connections: give --subs/--pubs or --pubsub");
    if (g.nconns > LG_MAX_CONNS) die("%d connections exceed the cap of %d", g.nconns, LG_MAX_CONNS);
    g.conns = calloc((size_t)g.nconns, sizeof *g.conns);
    g.rooms = calloc((size_t)g.nrooms, sizeof *g.rooms);
    g.pubs = calloc((size_t)(g.npubs ? g.npubs : 1), sizeof *g.pubs);
    if (!g.conns || !g.rooms || !g.pubs) die("out of memory");
    int p = 0;
    for (int i = 0; i < g.nconns; i++) {
        struct conn *c = &g.conns[i];
        c->idx = i;
        c->pub_idx = -1;
        if (g.npubsub) {
            c->is_sub = true;
            c->is_pub = g.npubs > 0;
            c->room = i % g.nrooms;
            c->side = (i / g.nrooms) % 2;
        } else if (i < subs_only) {
            c->is_sub = true;
            c->room = i % g.nrooms;
            c->side = (i / g.nrooms) % 2;
        } else {
            int k = i - subs_only;
            c->is_pub = true;
            c->room = k % g.nrooms;
            c->side = ((k / g.nrooms) + 1) % 2;
        }
        if (c->is_pub) {
            c->pub_idx = p;
            g.pubs[p++] = c;
            c->pos_in_room = g.rooms[c->room].npubs++;
            c->pub_interval_us = g.rate > 0 ? 1e6 / g.rate : 0;
        }
    }
}
