/*
 * tw.h - internal declarations shared by the files of the transport-ws
 * plugin: the instance (server), connections, STOMP subscriptions, and the
 * functions each file offers the others. Not installed; not part of the ABI.
 */
#ifndef TW_H
#define TW_H

#include <chatd/plugin.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "http_parser.h"
#include "stomp.h"
#include "ws_codec.h"

struct event_base;
struct evconnlistener;
struct bufferevent;
struct event;
struct lh_table;
struct evbuffer;
struct evbuffer_cb_entry;
typedef struct ssl_ctx_st SSL_CTX;
struct sockaddr;
struct json_object;

typedef struct tw_server tw_server;
typedef struct tw_conn tw_conn;
typedef struct tw_sub tw_sub;
typedef struct tw_dest tw_dest;
typedef struct tw_tx tw_tx;
struct tw_retry;

/* Most publishes one connection may have in flight before reading pauses. */
#define TW_MAX_INFLIGHT 256
/* Open transactions per connection, and SENDs buffered per transaction. */
#define TW_MAX_TX 16
#define TW_MAX_TX_SENDS 1024
/* Longest subscription id / transaction name / receipt we keep. */
#define TW_MAX_ID 256

/* sidecur.c: the node table, for each position stream (index k: 0 the
 * unpartitioned one, 1 + partition) the highest position fanned out here */
typedef struct tw_sidetable {
    uint64_t *pos; /* pos[k], 0 when none yet */
    size_t cap;
    int broken;               /* out of memory growing it: side cursors are not resumable */
    struct tw_sideseed *seed; /* the store's stream heads asked for, not answered yet */
} tw_sidetable;

/* a side cursor's vector: for each stream (ascending k), the last position covered */
typedef struct tw_sidevec {
    size_t n;
    struct tw_sidepos {
        uint32_t k;
        uint64_t v;
    } e[];
} tw_sidevec;

struct tw_server {
    const chatd_api *api;
    chatd_ctx *ctx;
    struct event_base *base;
    /* config */
    const char *listen;
    const char *metrics_listen; /* "": /metrics is not served */
    char *web_root;             /* realpath, NULL when static files are off */
    char **origins;
    size_t norigins;
    SSL_CTX *ssl;
    int cookie_secure; /* the session cookie says Secure without TLS here */
    int64_t max_connections, max_frame, max_frame_preauth, max_headers, max_header_bytes,
        max_request_line, max_body, max_outbuf, max_subscriptions, replay_page, replay_hold,
        idle_timeout, ws_idle_timeout, connect_timeout, hb_send, hb_recv, hb_min, hb_max,
        static_max, send_timeout, request_timeout, tls_timeout, max_pipeline, max_per_member,
        max_per_ip, max_tx_bytes, max_tx_age, rate_grace, page_limit, page_limit_max;
    /* state */
    struct evconnlistener *lis;
    struct evconnlistener *mlis; /* metrics_listen, NULL when not bound */
    tw_conn *conns;
    int64_t nconns, nsessions, nsubs;
    struct lh_table *dests; /* destination name -> tw_dest */
    struct lh_table *ips;   /* client address -> open connections (max_per_ip) */
    int stopping;
    chatd_completion *stop_done;
    struct event *stop_timer;
    struct event *accept_timer; /* resumes accepting after EMFILE */
    uint64_t serial;
    struct evbuffer *scratch;         /* a MESSAGE frame assembled before it is queued (subs.c) */
    struct event *flush_ev;           /* writes the output queued this loop round (conn.c) */
    tw_conn *flush_head, *flush_tail; /* ... of these connections, in order */
    tw_sidetable side;                /* side cursors (sidecur.c) */
    int flush_armed;                  /* flush_ev is active: this round ends with it */
    struct event *watch_ev;           /* looks at the send queues written this second */
    tw_conn *watch_head;              /* ... of these connections (one reference each) */
    uint64_t round;                   /* counts the rounds that armed flush_ev */
};

enum { TW_MODE_HTTP = 0, TW_MODE_WS = 1 };
enum { TW_ST_NONE = 0, TW_ST_CONNECTING, TW_ST_CONNECTED, TW_ST_DONE };
enum { TW_ACK_AUTO = 0, TW_ACK_CLIENT, TW_ACK_INDIVIDUAL };
enum { TW_PEND_ERROR = 1, TW_PEND_DISCONNECT = 2 };

struct tw_conn {
    tw_server *srv;
    tw_conn *prev, *next;
    int refs;
    int closed;  /* socket gone; only async callbacks still hold it */
    int closing; /* flushing output, then lingering, then closed */
    struct bufferevent *bev;
    int fd;
    int tls;
    int metrics; /* accepted on metrics_listen: only GET /metrics */
    char peer[64];
    char host[48]; /* the client's address, key of srv->ips when counted */
    int ip_counted;
    uint64_t serial;
    int mode;
    int flush_queued; /* in srv->flush_head's list (one reference) */
    tw_conn *flush_next;
    uint64_t direct_round; /* srv->round of its last write from the deliver path */
    int watch_listed;      /* in srv->watch_head's list: its send queue is looked at */
    tw_conn *watch_next;
    /* HTTP */
    http_parser *hp;                  /* NULL once upgraded */
    int http_busy;                    /* an async REST call is pending */
    int req_keep;                     /* keep-alive after the current response */
    int req_head;                     /* current request is HEAD */
    int req_reading;                  /* bytes of a request arrived: request_timeout runs */
    int pipe_paused;                  /* reading stopped: max_pipeline responses unwritten */
    uint64_t *resp_end;               /* ring of max_pipeline output offsets, one per */
    size_t resp_head, resp_n;         /* response not yet written to the socket */
    uint64_t out_added, out_gone;     /* bytes ever queued / written (or dropped) */
    struct evbuffer_cb_entry *out_cb; /* counts them; removed at the upgrade */
    int tls_done;                     /* TLS handshake finished */
    struct event *deadline;           /* TLS handshake or HTTP request deadline */
    struct event *drain_ev;           /* send_timeout on the kernel send queue */
    uint64_t drain_q;                 /* bytes acknowledged at the last check */
    int64_t drain_ms;                 /* when the peer last took any */
    /* WebSocket + STOMP */
    ws_decoder wd;
    stomp_parser sp;
    int ws_close_sent;
    char subproto[16];
    char *cookie_token;
    char *session_token;   /* the token the STOMP session authenticated with */
    char session_hash[65]; /* its BLAKE2b-256 in hex, as the core names sessions */
    int st;
    int version; /* STOMP_V10/11/12 */
    int busy;    /* waiting for an async answer before the next frame */
    int in_process;
    int slow;       /* over max_outbuf: disconnect */
    int out_paused; /* input paused until the peer reads our output */
    /* An ERROR or DISCONNECT waits for the publishes in flight before it, so
     * that their RECEIPTs go out first (STOMP 1.2 graceful disconnect). */
    int pend_kind; /* 0, TW_PEND_ERROR or TW_PEND_DISCONNECT */
    int pend_code;
    char *pend_msg, *pend_receipt;
    int inflight;           /* publishes pending */
    int pub_sync;           /* inside api->publish */
    int rate_limited;       /* ... which refused the SEND as busy at once */
    struct tw_retry *retry; /* a SEND over publish_rate, waiting (stomp_send.c) */
    int64_t member_id;
    char *login;
    int64_t hb_out_ms, hb_in_ms;
    int64_t opened_ms, last_rx_ms, last_tx_ms, ping_ms;
    int unread_seen; /* bytes waiting in the kernel at the last tick (FIONREAD) */
    struct event *tick;
    tw_sub *subs;
    int64_t nsubs;
    tw_tx *txs;
    int ntx;
    size_t tx_bytes; /* SEND bodies buffered in open transactions */
    uint64_t ack_serial;
};

struct tw_dest {
    char *name;
    tw_sub *head;
};

struct tw_sub {
    tw_conn *c;
    tw_dest *d;
    tw_sub *dprev, *dnext; /* in the destination's list */
    tw_sub *cnext;         /* in the connection's list */
    char *id;
    int ack;
    /* resume-after (resume.c) */
    int resumed;              /* positions are filtered: each once, in order */
    uint64_t last;            /* position of the last message written to it (rooms) */
    tw_sidevec *vec;          /* side: per stream (sidecur.c); NULL when the table's */
    struct tw_replay *replay; /* the replay in progress; NULL once live */
};

typedef struct tw_hdr {
    const char *name;
    const char *value; /* NULL: the header is left out */
} tw_hdr;

/* transport_ws.c: the plugin, its configuration and the listener */
int tw_origin_allowed(tw_server *s, const char *origin, const char *host);
/* Count c against max_connections_per_ip: 0, or -1 when over (not counted). */
int tw_ip_take(tw_server *s, tw_conn *c);
void tw_ip_release(tw_server *s, tw_conn *c);
void tw_stop_check(tw_server *s);

/* conn.c: connections, output back-pressure, the HTTP request loop */
void tw_conn_accept(tw_server *s, int fd, const struct sockaddr *sa, int metrics);
void tw_conn_ref(tw_conn *c);
void tw_conn_unref(tw_conn *c);
void tw_conn_close(tw_conn *c);
void tw_conn_close_flush(tw_conn *c);
struct evbuffer *tw_conn_out(tw_conn *c);
int tw_conn_over_limit(tw_conn *c);
int tw_conn_out_full(tw_conn *c);
void tw_conn_kick(tw_conn *c);
void tw_update_gauges(tw_server *s);
void tw_conn_timeouts(tw_conn *c, int64_t read_sec);
void tw_conn_response_queued(tw_conn *c);
void tw_conn_note_unread(tw_conn *c, int64_t now);
/* Output was queued on upgraded c: write it at the end of this loop round
 * (plain TCP; a no-op when the bufferevent writes it). */
void tw_conn_flush_later(tw_conn *c);
/* Write the n pieces of one frame to upgraded c's socket now, when nothing
 * of c's waits before them and c had no such write yet this round. Returns
 * the bytes the kernel took (the caller queues the rest and calls
 * tw_conn_flush_later), or -1: nothing written, queue it all. */
ssize_t tw_conn_write_now(tw_conn *c, const struct iovec *iov, int n);
/* The server goes: forget the connections waiting for that. */
void tw_conn_flush_drop(tw_server *s);
/* The connection leaves HTTP (upgraded): free what only HTTP needs. */
void tw_conn_http_release(tw_conn *c);

/* websocket.c: upgrade, framing, per-connection timer, input loop */
void tw_ws_upgrade(tw_conn *c, const http_request *req);
void tw_ws_process(tw_conn *c);
void tw_ws_send(tw_conn *c, int opcode, const void *data, size_t len);
void tw_ws_send_buffer(tw_conn *c, int opcode, struct evbuffer *payload);
void tw_ws_close(tw_conn *c, int code, const char *reason);
void tw_schedule_tick(tw_conn *c);
/* The frame limits of c: max_frame_preauth until CONNECT succeeds, then
 * max_frame. */
void tw_ws_limits(tw_conn *c);

/* http_response.c. extra: "Name: value\r\n" lines or NULL. */
void tw_http_respond(tw_conn *c, int status, const char *ctype, const char *extra, const void *body,
                     size_t len);
void tw_http_respond_buffer(tw_conn *c, int status, const char *ctype, const char *extra,
                            struct evbuffer *body);
void tw_http_error(tw_conn *c, int status, const char *msg);
void tw_http_error_extra(tw_conn *c, int status, const char *extra, const char *msg);
void tw_http_method_not_allowed(tw_conn *c, const char *allow);
void tw_http_done(tw_conn *c);
const char *tw_status_text(int status);

/* rest.c: /api/..., /healthz, /metrics. Returns 1 when the path is its. */
int tw_rest_handle(tw_conn *c, const http_request *req, const char *path, const char *query);

/* Paging of GET /api/members and GET /api/rooms (rest_page.c): limit
 * (default page_limit, clamped to page_limit_max), after (a member id, or a
 * room id in the store's order), q (a prefix of the login id or the name).
 * TW_PAGE_CAP bounds both keys. */
#define TW_PAGE_CAP 1000
#define TW_PAGE_AFTER_MAX 127
#define TW_PAGE_Q_MAX 64
typedef struct tw_page {
    unsigned limit;
    int64_t after_id; /* members: after=<id>, 0 when absent */
    char after[TW_PAGE_AFTER_MAX + 1];
    char q[TW_PAGE_Q_MAX + 1];
} tw_page;
/* Percent-decode query parameter `key` into out: 1 found, 0 absent, -1
 * malformed or too long (rest.c). */
int tw_query_get(const char *q, const char *key, char *out, size_t outsz);
/* Parse the query with s's page limits; NULL, or the 400 message. */
const char *tw_page_parse(const tw_server *s, const char *query, int rooms, tw_page *p);
/* The indices of the page's rows into out[p->limit]; *more: a next page.
 * tw_page_members pages a whole member list (a core older than ABI 1.4). */
size_t tw_page_members(const tw_page *p, const chatd_member *rows, size_t n, size_t *out,
                       int *more);
size_t tw_page_rooms(const tw_page *p, const chatd_room_summary *rows, size_t n, size_t *out,
                     int *more);
/* The Link header (with CRLF) of the page after `last`, base "/api/...". */
void tw_page_link(const tw_page *p, const char *base, const char *last, char *out, size_t outsz);
/* The JSON object body of a POST; answers the error (not done) and returns
 * NULL when it is not one. The caller puts the object. */
struct json_object *tw_rest_body_json(tw_conn *c, const http_request *req);
/* A JSON text (RFC 8259, strict: UTF-8, no trailing comma, comment, NaN or
 * raw control character) that is one object, then only whitespace; NULL
 * when not, *oom set when out of memory. The caller puts the object. */
struct json_object *tw_json_parse_object(const char *s, size_t len, int *oom);

/* resume.c: cursors and SUBSCRIBE resume-after (docs/delivery.md) */
#define TW_CURSOR_MAX 257 /* a cursor with its NUL (issue 12: at most 256 bytes) */
/* The position of msg (chatd_api.msg_pos; the id before ABI 1.4). */
uint64_t tw_stream_pos(const chatd_api *api, const chatd_msg *msg);
/* The cursor of msg on destination `dest` (a room's or a side's), written
 * to subscription s (NULL: a subscription that follows the node table); 0,
 * or -1. */
int tw_dest_cursor(tw_server *srv, const tw_sub *s, const char *dest, const chatd_msg *msg,
                   char *out, size_t cap);
/* The prefix of destination dest's cursors, "room.A-B." or "side.M.", into
 * out; its length, or -1 for another destination or when it does not fit. */
int tw_cursor_prefix(const char *dest, char *out, size_t cap);
/* The cursor naming position `id` of destination `dest`; 0, or -1. */
int tw_cursor_make(const char *dest, uint64_t id, char *out, size_t cap);
/* Append msg's JSON wire form with `"cursor":"<its cursor in dest>"` added
 * before the closing brace (history items, the REST send's answer); the
 * cursor is also left in cur (TW_CURSOR_MAX bytes) when cur is not NULL. 0,
 * or -1 (out of memory, or no cursor fits). */
int tw_msg_json_cursor(const chatd_api *api, const char *dest, chatd_msg *msg, struct evbuffer *b,
                       char *cur);
/* The position a cursor of destination `dest` names; 0, or -1 when it is
 * malformed or from another destination. */
int tw_cursor_parse(const char *dest, const char *cursor, uint64_t *id);
/* Replay the messages of s after position `after` (a room), or after the
 * side cursor's vector `vec` (taken over, freed here), then go live. */
void tw_resume_begin(tw_sub *s, uint64_t after, tw_sidevec *vec);
/* A live message for s while it replays: held, delivered at the seam. */
void tw_resume_hold(tw_sub *s, chatd_msg *msg);
/* The output of c drained: replays waiting for it go on. */
void tw_resume_drained(tw_conn *c);
/* s is being freed: its replay, if any, is abandoned. */
void tw_resume_sub_gone(tw_sub *s);
/* sidecur.c: side cursors (position vectors) and the node table */
/* The stream index of a position: 0 unpartitioned, 1 + partition. */
uint32_t tw_pos_stream(uint64_t pos);
/* A message at `pos` is being fanned out: the table's entry follows it. */
void tw_side_note(tw_server *srv, uint64_t pos);
void tw_side_table_free(tw_server *srv);
/* Seed the table with the store's head of each partitioned stream
 * (chatd_api.stream_heads), then call ready(srv) (on the loop, maybe
 * before this returns), whether or not the store could tell: the
 * listener accepts only after it. */
void tw_side_table_seed(tw_server *srv, void (*ready)(tw_server *srv));
int tw_side_seeding(const tw_server *srv);
/* The side cursor of subscription s (NULL: the table's) on side destination
 * dest: its vector while it replays, the larger of its vector and the table
 * once live; side.<m>.x when it does not fit. 0, or -1. */
int tw_side_cursor(tw_server *srv, const tw_sub *s, const char *dest, char *out, size_t cap);
/* Parse a side cursor of side destination dest into a new vector: 0; -1
 * malformed or another destination's; -2 the form that cannot be resumed
 * (side.<m>.x); -3 out of memory. */
int tw_side_parse(const char *dest, const char *cursor, tw_sidevec **out);
/* A resumed side subscription's vector: the cursor's entries, and the
 * table's for the streams the cursor lacks. NULL when out of memory. */
tw_sidevec *tw_side_seed(tw_server *srv, const tw_sidevec *cur);
/* Whether a message at pos is written to resumed side subscription s (each
 * position once, in order per stream, for the subscription's life); its
 * vector follows it. */
int tw_side_pass(tw_sub *s, uint64_t pos);
/* The replay ranges (entry, end of its stream) of v's entries from `from`,
 * at most max; how many. */
size_t tw_side_ranges(const tw_sidevec *v, size_t from, uint64_t *after, uint64_t *until,
                      size_t max);
/* subs.c: queue one MESSAGE frame of msg for s (with its cursor); 0 or -1 */
int tw_sub_write(tw_sub *s, chatd_msg *msg);

/* rest_send.c: POST /api/rooms/{room}/messages (room percent-decoded) */
void tw_rest_send(tw_conn *c, const http_request *req, const char *room);
int tw_status_http(chatd_status st);
char *tw_request_token(const http_request *req, int *from_cookie);
char *tw_cookie_get(const char *cookies, const char *name);

/* static_files.c */
void tw_static_serve(tw_conn *c, const http_request *req, const char *path);

/* stomp_session.c: frame output, errors, CONNECT, SUBSCRIBE, dispatch */
void tw_stomp_frame(tw_conn *c, const stomp_frame *f);
void tw_stomp_send_frame(tw_conn *c, const char *cmd, const tw_hdr *h, size_t nh, const char *ctype,
                         const char *body, size_t blen);
void tw_stomp_receipt(tw_conn *c, const char *receipt);
void tw_stomp_error(tw_conn *c, const char *msg, const char *receipt, int ws_code);
void tw_stomp_finish_pending(tw_conn *c);
/* The server stops: once every publish in flight on c is answered (RECEIPT
 * or ERROR), an ERROR "server shutting down" and close 1001, so that a SEND
 * never ends with a bare close. */
void tw_stomp_shutdown(tw_conn *c);
void tw_stomp_tick(tw_conn *c, int64_t now);
void tw_sessions_end(tw_server *s, const char *token);
/* The session_ended hook: the same, by the token's hash (any node's logout
 * or the session's expiry). */
void tw_sessions_end_hash(tw_server *s, const char *token_hash);

/* stomp_send.c: SEND and transactions */
void tw_stomp_on_send(tw_conn *c, const stomp_frame *f);
void tw_stomp_on_begin(tw_conn *c, const stomp_frame *f);
void tw_stomp_on_commit(tw_conn *c, const stomp_frame *f, int commit);
void tw_tx_free_all(tw_conn *c);
void tw_send_retry_free(tw_conn *c);
/* When the oldest open transaction began (ms), or 0 when none is open. */
int64_t tw_tx_oldest(const tw_conn *c);

/* subs.c: subscriptions and fan-out */
tw_sub *tw_sub_find(tw_conn *c, const char *id);
int tw_sub_add(tw_conn *c, const char *dest, const char *id, int ack);
void tw_sub_remove(tw_conn *c, tw_sub *s);
void tw_subs_drop_conn(tw_conn *c);
void tw_deliver(void *inst, const char *destination, chatd_msg *msg);

/* util.c */
int tw_parse_i64(const char *s, int64_t *out); /* decimal >= 0, whole string */
int tw_parse_u64(const char *s, uint64_t *out);
/* String member `key` of o (length in *len when len), NULL when absent, not
 * a string, or holding U+0000. */
const char *tw_json_str(struct json_object *o, const char *key, size_t *len);
/* Bytes the peer of TCP socket fd acknowledged (TCP_INFO); 0, or -1 when
 * the kernel does not say. */
int tw_tcp_acked(int fd, uint64_t *acked);

#endif
