/*
 * pg.h - internal declarations shared by the files of the store-pg plugin:
 * the instance, the requests (a few queries and a pipeline sync each), the
 * pending messages, and what each file offers the others:
 *   store_pg.c  the store hooks, config, start/stop/destroy
 *   pg_results.c the hooks' answers: result rows to records, errors to statuses
 *   pg_conn.c   the connection: connect, pipeline I/O, results in order,
 *               loss and reconnect with backoff, the query watchdog
 *   pg_sql.c    the schema (migrations) and every statement sent
 *   pg_batch.c  the pending messages and their batched commits
 *   pg_side.c   the side stream's replay by position ranges (side_replay),
 *               and the reads of a node's start (stream_heads, idem_recent)
 * Not installed; not part of the ABI.
 */
#ifndef PG_H
#define PG_H

#include <chatd/plugin.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include <stddef.h>
#include <stdint.h>

#include "../common/plugin_common.h"

#define PG_MAX_QUEUED_READS 4096          /* reads waiting for the first connection */
#define PG_ADVISORY_KEY "109342543180800" /* arbitrary constant: the schema migration lock */
#define PG_ERR_LEN 256
#define PG_CHAT_PARAMS 9        /* arrays bound per run of CHAT messages of a batch (+ window) */
#define PG_READ_PARAMS 7        /* arrays bound per run of READ events of a batch */
#define PG_BATCH_MAX_LIMIT 8190 /* most messages of one batch */
#define PG_STMTS_MAX 32         /* statements prepared on one connection */
#define PG_REQ_PREPS_MAX 4      /* prepares sent ahead of one request's queries */
#define PG_ROOMS_MAX "10000"    /* most room summaries returned */
#define PG_MEMBERS_MAX "100000" /* most members returned by member_list */
#define PG_SCHEMA_VERSION 11    /* the last entry of the migrations in pg_sql.c */
/* SQLSTATE raised when a message id is stored already with other content */
#define PG_SQLSTATE_ID_TAKEN "CH001"

/* The server settings a RECEIPT's durability rests on, as two columns. */
#define PG_DURABILITY_COLS "current_setting('fsync'), current_setting('synchronous_commit')"

#define LOG(st, lvl, ...) (st)->api->log((st)->ctx, (lvl), __VA_ARGS__)

typedef enum pg_state {
    PG_IDLE,       /* created, not started */
    PG_CONNECTING, /* PQconnectPoll in progress */
    PG_MIGRATING,  /* connected; schema check/migration in flight */
    PG_READY,      /* serving requests */
    PG_DOWN,       /* waiting for the reconnect timer */
    PG_STOPPED     /* stop finished (or timed out) */
} pg_state;

/* One message waiting to be committed. */
typedef struct pg_pending {
    struct pg_pending *next;
    chatd_msg *msg;
    chatd_completion *done;
} pg_pending;

typedef enum pg_req_kind {
    REQ_MIGRATE_CHECK,
    REQ_MIGRATE_APPLY,
    REQ_BATCH,
    REQ_MEMBER_CREATE,
    REQ_MEMBER_GET,
    REQ_MEMBER_LIST,
    REQ_SESSION_PUT,
    REQ_SESSION_GET,
    REQ_SESSION_DEL,
    REQ_ROOM_LIST,
    REQ_HISTORY,
    REQ_IDEM_GET,
    REQ_REPLAY,
    REQ_DEAD_LETTER,
    REQ_SESSION_PURGE,
    REQ_NODE_CLAIM,
    REQ_MEMBER_PAGE,
    REQ_SIDE_REPLAY,
    REQ_STREAM_HEADS,
    REQ_IDEM_RECENT,
    REQ_IDEM_PURGE /* internal: expired idempotency keys, a bounded batch */
} pg_req_kind;
typedef void (*pg_purge_cb)(void *arg, chatd_status status, uint64_t n);
/* The callback of chatd_store_ops.idem_recent. */
typedef void (*pg_idem_recent_cb)(void *arg, chatd_status status, int64_t member_id,
                                  const char *key, uint64_t msg_id, int64_t time_ms);

/* One request: a few queries followed by a pipeline sync. */
typedef struct pg_req {
    struct pg_req *next;
    pg_req_kind kind;
    int main_q;      /* index of the query whose result is kept, -1: none */
    int nres;        /* query results received so far */
    int expect_null; /* a result was read; libpq ends it with a NULL */
    int failed;
    char err[PG_ERR_LEN];
    char sqlstate[6];
    PGresult *res; /* result of main_q */
    void *cb;      /* the caller's callback (type by kind) */
    void *arg;
    char *s[3];      /* owned copies of string arguments */
    int64_t i[3];    /* integer arguments */
    size_t nbatch;   /* REQ_BATCH: number of pending messages it covers */
    int64_t sent_ms; /* when it was put on the connection */
    /* statements prepared ahead of this request's queries (pg_sql.c): the
     * position of each prepare's result among all of its results, its slot */
    int nsent, npos, nprep, nprep_seen;
    int prep_at[PG_REQ_PREPS_MAX], prep_slot[PG_REQ_PREPS_MAX];
    unsigned prep_failed; /* bit k: prepare k did not succeed (its statement may not exist) */
} pg_req;

/* A statement prepared on the current connection, by its SQL text. */
typedef struct pg_stmt {
    const char *sql; /* static text: compared by address, then by content */
    char name[16];
    int ready; /* prepared (or its prepare is on its way) */
} pg_stmt;

typedef struct pg_store {
    const chatd_api *api;
    chatd_ctx *ctx;
    struct event_base *base;

    /* config */
    const char *conninfo;
    size_t batch_max;
    size_t max_pending;
    int64_t reconnect_min_ms, reconnect_max_ms, connect_timeout_ms, stop_timeout_ms;
    int64_t query_timeout_ms;
    int64_t idem_window_ms; /* the core's idempotency_window */
    int allow_unsafe;       /* allow_unsafe_durability: accept fsync / synchronous_commit off */
    int unsafe_logged;      /* the warning about accepting them was logged */

    pg_state state;
    int ever_ready; /* the first connection succeeded once */
    int64_t backoff_ms;
    PGconn *conn;
    struct event *ev_conn;               /* connecting: one-shot read/write */
    struct event *ev_read;               /* ready: persistent read */
    struct event *ev_write;              /* ready: one-shot write while PQflush has more */
    struct event *ev_timer;              /* reconnect backoff / connect timeout */
    struct event *ev_kick;               /* deferred pump (never send from inside a callback) */
    struct event *ev_stop;               /* stop timeout */
    struct event *ev_watch;              /* every second: is the oldest request answered in time? */
    int schema_version;                  /* read by REQ_MIGRATE_CHECK */
    struct event *ev_purge;              /* the next purge of expired idempotency keys */
    int64_t purge_every_ms, purge_batch; /* idem_purge_interval_s, idem_purge_batch */
    int purge_inflight;

    /* prepared statements of the connection (cleared when it closes) */
    pg_stmt stmts[PG_STMTS_MAX];
    size_t nstmts;
    unsigned stmt_seq; /* names are never reused on a connection */
    pg_req *sending;   /* the request req_send is putting on the connection */

    /* requests */
    pg_req *q_head, *q_tail; /* not sent yet */
    size_t nqueued;
    pg_req *f_head, *f_tail; /* sent, awaiting results (in order) */

    /* messages */
    pg_pending *p_head, *p_tail;
    size_t npending;   /* all uncommitted, including the batch in flight */
    size_t inflight;   /* first `inflight` pending messages are in a sent batch */
    size_t solo_left;  /* after a failed batch: this many go one per transaction */
    pc_busy busy;      /* the max_pending warning of this episode */
    unsigned failures; /* failed connection attempts since the last success */

    int stopping;
    chatd_completion *stop_done;
} pg_store;

/* pg_conn.c */
/* Copy a libpq error text (which ends with a newline) as one line. */
void copy_err(char *dst, size_t cap, const char *src);
/* The connection's error as one line in buf. */
const char *conn_err(pg_store *st, char *buf, size_t cap);
pg_req *req_new(pg_req_kind kind, void *cb, void *arg);
void req_free(pg_req *r);
void list_push(pg_req **head, pg_req **tail, pg_req *r);
pg_req *list_pop(pg_req **head, pg_req **tail);
/* Start connecting (asynchronous; failures are retried with backoff). */
void pg_connect(pg_store *st);
void conn_close(pg_store *st);
/* The connection failed or was lost: keep the messages, fail the reads,
 * reconnect after a backoff. */
void conn_lost(pg_store *st, const char *what);
/* Fail every request not yet answered (sent or not) with `status`. */
void fail_requests(pg_store *st, chatd_status status);
/* Send r now and track it; 0 when the connection is gone (it was dropped). */
int send_tracked(pg_store *st, pg_req *r);
void flush_out(pg_store *st);
/* Run pump() from the loop soon (never send from inside a callback). */
void kick(pg_store *st);
/* Event callbacks armed by create/start. */
void on_timer(evutil_socket_t fd, short what, void *arg);
void on_watch(evutil_socket_t fd, short what, void *arg);
void on_kick(evutil_socket_t fd, short what, void *arg);

/* pg_sql.c: put the queries of r on the connection, then a sync. 0 on failure. */
int req_send(pg_store *st, pg_req *r);
/* r failed: the statements whose prepare failed do not exist; prepare them again
 * (a statement prepared fine stays: a failed execution does not drop it). */
void stmts_forget(pg_store *st, pg_req *r);
/* Execute sql (static text) as a prepared statement of this connection (as
 * PQsendQueryPrepared; prepared first when it is not yet). 0 on failure. */
int send_q(pg_store *st, const char *sql, int n, const char *const *values, const int *lengths,
           const int *formats);

/* pg_batch_sql.c: send the statements of a write batch of n pending messages
 * from the head of the list (the caller adds the sync). 0 on failure. */
int send_batch(pg_store *st, size_t n);

/* pg_batch.c */
chatd_status pg_persist(void *inst, chatd_msg *msg, chatd_completion *done);
/* Send what can be sent: queued requests, then the next batch. */
void pump(pg_store *st);
/* A batch's sync arrived: complete its messages, or retry them one by one. */
void batch_done(pg_store *st, pg_req *r);
/* Complete every pending message with `status` (stop timeout, destroy). */
void fail_pending(pg_store *st, chatd_status status, const char *reason);
/* The purge timer: delete a batch of expired idempotency keys. */
void on_purge(evutil_socket_t fd, short what, void *arg);
/* A purge finished (deleted: rows, -1 on failure): arm the next one. */
void purge_done(pg_store *st, int64_t deleted);

/* pg_results.c */
int64_t parse_i64(const char *s);
/* Report a status with no rows to the caller of request r. */
void req_fail_cb(pg_store *st, pg_req *r, chatd_status status);
/* A hook's request finished: deliver its rows or its error. */
void hook_finish(pg_store *st, pg_req *r);

/* store_pg.c */
/* Could a RECEIPT precede durability on a server with these settings (the
 * two columns of PG_DURABILITY_COLS)? Logs what to change. 1: refuse this
 * server (unless allow_unsafe_durability), 0: go on. */
int pg_durability_refused(pg_store *st, const char *fsync, const char *sync_commit);
/* Complete a waiting stop once nothing is left. */
void check_stop_done(pg_store *st);
/* Queue request r (or fail it at once when the database is down). */
void req_submit(pg_store *st, pg_req *r);

/* pg_side.c */
void pg_side_replay(void *inst, int64_t member_id, const uint64_t *after, const uint64_t *until,
                    size_t n, unsigned limit, chatd_history_cb cb, void *arg);
/* Its statement: $1 member, $2 and $3 the ranges' (low, high] bounds as
 * bigint[], $4 the limit; the columns of a replay (pg_results.c). */
extern const char pg_sql_side_replay[];
void pg_stream_heads(void *inst, chatd_positions_cb cb, void *arg);
/* Its statement (no parameters): the highest position of each partitioned
 * stream, ascending; its answer to the caller. */
extern const char pg_sql_stream_heads[];
void pg_deliver_heads(pg_store *st, pg_req *r);
void pg_idem_recent(void *inst, int64_t since_ms, unsigned limit, pg_idem_recent_cb cb, void *arg);
/* Its statement: $1 since (ms), $2 the limit; the newest records first. */
extern const char pg_sql_idem_recent[];
/* Its answer: one call per record, oldest first, then the final one. */
void pg_deliver_idem_recent(pg_store *st, pg_req *r);

#endif /* PG_H */
