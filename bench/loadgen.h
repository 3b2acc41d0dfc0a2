/*
 * loadgen.h - internal header of the benchmark load generator (bench/loadgen*.c):
 * limits, the connection/room/member records, the latency histogram, the one
 * global state g, and the functions the files call across each other.
 */
#ifndef LOADGEN_H
#define LOADGEN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#define LG_MAX_CONNS 20000         /* hard cap on connections per run */
#define LG_MAX_DURATION 600        /* seconds */
#define LG_MAX_SIZE 60000          /* largest message text */
#define LG_MAX_WS_FRAME (1u << 20) /* largest inbound WebSocket message */
#define LG_MAX_STOMP_PENDING (1u << 20)
#define LG_MAX_SERVER_PIDS 64 /* processes summed as "the server" */
#define LG_WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum target { TARGET_CHATD, TARGET_RABBIT };

enum cstate {
    CS_IDLE,
    CS_TCP,
    CS_WS,
    CS_STOMP,
    CS_SUBSCRIBING,
    CS_READY,
    CS_FAILED,
};

struct member {
    char login[48];
    long id;
    char token[200];
    bool have;
};

struct room {
    char sub_dest[128];
    char pub_dest[128];
    char room_id[64]; /* chatd: "low&high" */
    int members[2];   /* indexes into g.members (chatd) */
    int npubs;        /* publishers in this room */
    int nsubs_ready;  /* subscribers READY when publishing starts */
};

struct conn {
    int idx;
    int room;
    int side; /* which of the room's two members this connection logs in as */
    bool is_sub, is_pub;
    enum cstate state;
    struct bufferevent *bev;
    struct evbuffer *frag;     /* WebSocket fragments being reassembled */
    struct evbuffer *stomp_in; /* STOMP bytes not yet forming a frame */
    char ws_key[32];
    uint64_t t_start, t_connected;
    /* publisher */
    int pub_idx;     /* global publisher index, -1 if none */
    int pos_in_room; /* index among the room's publishers */
    uint64_t seq, sent, receipted;
    int outstanding;
    uint64_t pub_t0;
    double pub_interval_us;
    /* --inflight: copies seen of each message still in flight (ring indexed
     * by seq % inflight) and the messages every subscriber has had */
    uint32_t *copies;
    uint64_t full;
    struct event *tick;
    /* subscriber: last sequence seen per publisher of the room */
    uint64_t *last_seq;
};

/* HDR-like histogram: 32 linear sub-buckets per power of two (about 3%). */
#define H_SUB_BITS 5
#define H_SUB (1 << H_SUB_BITS)
#define H_BUCKETS (64 * H_SUB)
struct hist {
    uint64_t count[H_BUCKETS];
    uint64_t n, max, min;
    long double sum;
};

/* the one process-wide state: options, then the run */
struct lg_state {
    /* options */
    enum target target;
    int port;
    const char *path;
    const char *label;
    const char *scenario;
    int nsubs, npubs, npubsub, nrooms;
    double rate; /* per publisher msgs/s; 0 = flat out (window) */
    int window;
    int inflight; /* messages per publisher not yet delivered to every subscriber (0: off) */
    int size;
    double duration, drain, settle;
    int connect_conc;
    int http_conc;
    double setup_timeout;
    const char *csv;
    const char *hist_out;
    const char *token_cache;
    const char *prefix;
    const char *password;
    const char *dest_prefix;
    bool persistent;
    bool quiet;
    pid_t srv_pids[LG_MAX_SERVER_PIDS]; /* --server-pid: summed CPU and RSS */
    int nsrv_pids;
    /* state */
    struct event_base *base;
    struct member *members;
    int nmembers;
    struct room *rooms;
    struct conn *conns;
    int nconns;
    struct conn **pubs;
    int next_connect, connecting, ready, failed, errors_stomp;
    int dropped; /* connections lost after they were ready */
    int members_done, members_failed, members_next;
    uint64_t t_setup0, t_connect0, t_connect_done;
    uint64_t t_pub0, t_pub_end, t_end;
    bool publishing, draining;
    struct hist lat;
    uint64_t delivered, unique, dups, gaps, unknown;
    uint64_t expected_total;
    struct rusage ru0, ru1;
    long rss_before, rss_after, rss_end;
    double srv_cpu0, srv_cpu1;
    struct event *phase_timer;
    struct event *sig_ev;
    char nonce[24];
    unsigned char mask_pool[4096];
    size_t mask_pos;
    char *scratch; /* one outgoing STOMP frame */
    char *body;    /* one outgoing SEND body */
    char *pad;
    uint64_t unique_at_pub_end;
    const char *timeline;
    /* one latency histogram per second of the run (from the start of publishing) */
    struct hist *tl;
    size_t ntl;
    bool interrupted;
};
extern struct lg_state g;

/* the run's phases (loadgen_run.c): set-up, settle, publish, drain */
enum phase { PH_SETUP_TIMEOUT, PH_SETTLED, PH_PUB_END, PH_DRAIN_POLL, PH_DONE };
extern enum phase g_phase;

/* loadgen_stats.c: clock, logging, histogram, /proc readers, the report */
uint64_t now_ns(void);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void hist_add(struct hist *h, uint64_t v);
long server_rss_kb(void);
double server_cpu_s(void);
void print_report(void);

/* loadgen_client.c: the WebSocket + STOMP client connections */
int stomp_send(struct conn *c, const char *cmd, const char *headers, const char *body, size_t blen);
void conn_fail(struct conn *c, const char *why);
void start_more_connections(void);

/* loadgen_run.c: topology, publishing and the phase timer */
void topology(void);
void build_rooms_and_connect(void);
void check_setup_done(void);
void pub_send_due(struct conn *c);
void schedule_phase(double seconds);
void phase_cb(evutil_socket_t fd, short what, void *arg);
void on_signal(evutil_socket_t fd, short what, void *arg);

/* loadgen_rest.c: chatd members and session tokens over the REST API */
void members_setup(void);

#endif
