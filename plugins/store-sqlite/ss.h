/*
 * ss.h - internal declarations shared by the files of the store-sqlite
 * plugin: the instance, the write jobs and batches, the prepared statement
 * indexes, and what each file offers the others:
 *   store_sqlite.c  schema migrations, open/start/stop/destroy, descriptor
 *   ss_writer.c     writes on the loop: the hooks, staging, results back
 *   ss_commit.c     the writer thread: its statements, the group commit of a
 *                   batch, checkpoints
 *   ss_ckpt.c       the WAL checkpoints: the checkpoint thread, the idle ones
 *   ss_sync.c       the sync threads: the WAL made durable before results
 *                   go back to the loop, in order
 *   ss_rooms.c      the room summaries of a batch, once per member and room
 *   ss_reads.c      the read hooks (loop) and their queries (reader thread)
 *   ss_reader.c     the reader thread: its queue, and answers back on the loop
 *   ss_nodes.c      node leases (node_claim)
 * Not installed; not part of the ABI.
 */
#ifndef SS_H
#define SS_H

#include <chatd/plugin.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/plugin_common.h"

#define SS_ROOMS_MAX 10000u    /* most room summaries one room_list returns */
#define SS_MEMBERS_MAX 100000u /* most members one member_list returns */
/* fdatasyncs of the WAL that may run at once (ss_sync.c): the kernel runs
 * them in parallel, so a batch written during a sync need not wait for it */
#define SS_SYNC_THREADS 2

/* Writer-thread statements (ss_wsql in ss_commit.c). */
enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_MSG_INSERT,
    W_MSG_SAME,
    W_ROOM_SUM,
    W_ROOM_MARK,
    W_ROOM_READ,
    W_MEMBER_INSERT,
    W_SESSION_PUT,
    W_SESSION_DEL,
    W_IDEM_CLAIM,
    W_IDEM_OWNER,
    W_IDEM_PURGE,
    W_READ_INSERT,
    W_DEAD_LETTER,
    W_SESSION_PURGE,
    W_NODE_GET,
    W_NODE_LIST,
    W_NODE_PUT,
    W_COUNT
};

/* Reader-thread (read connection) statements (ss_rsql in ss_reads.c). */
enum {
    R_MEMBER_BY_ID,
    R_MEMBER_BY_LOGIN,
    R_SESSION_GET,
    R_ROOM_LIST,
    R_HISTORY,
    R_IDEM_GET,
    R_REPLAY_ROOM,
    R_REPLAY_SIDE,
    R_MEMBER_PAGE,
    R_MEMBER_PAGE_Q,
    R_SIDE_RANGE,
    R_STREAM_HEADS,
    R_IDEM_RECENT,
    R_COUNT
};

extern const char *const ss_wsql[W_COUNT];
extern const char *const ss_rsql[R_COUNT];

typedef enum ss_job_kind {
    JOB_PERSIST = 1,
    JOB_MEMBER_CREATE,
    JOB_SESSION_PUT,
    JOB_SESSION_DEL,
    JOB_DEAD_LETTER,
    JOB_SESSION_PURGE,
    JOB_NODE_CLAIM
} ss_job_kind;

/* One write. Fields read by the writer thread are fixed before it is handed
 * over; the message reference is only touched on the loop thread. */
typedef struct ss_job {
    struct ss_job *next;
    ss_job_kind kind;
    chatd_status status; /* set by the writer thread */

    /* persist: pointers borrowed from msg, which we hold a reference to */
    chatd_msg *msg;
    chatd_completion *done;
    chatd_msg_kind mkind;
    int64_t id, writer_id, peer_id, time_ms, up_to, pos;
    const char *room, *writer, *text;
    const char *idem_key; /* the sender's idempotency key, NULL when none */
    size_t text_len;
    int inserted; /* writer thread: the message was new (not a redelivery) */
    int in_rooms; /* writer thread: gathered into the batch's room summaries */

    /* member_create / session_* */
    chatd_member_cb member_cb;
    chatd_status_cb status_cb;
    void (*purge_cb)(void *arg, chatd_status status, uint64_t n); /* session_purge */
    void *arg;
    int64_t member_id, created_ms, expires_ms;
    char *login_id, *name, *pw_hash, *token_hash; /* owned copies */

    /* dead_letter: owned copies */
    char *source, *reason, *payload;
    size_t payload_len;

    /* node_claim: holder owned; other set by the writer (owned) */
    chatd_node_cb node_cb;
    uint32_t node_id;
    int64_t lease_ms, high_water_ms;
    char *holder, *other;
} ss_job;

/* ss_rooms.c: one member of a room in the batch being written */
typedef struct ss_room_side {
    int64_t member;
    const ss_job *mine; /* their inserted message of highest position, NULL: none */
    int64_t n;          /* their messages inserted by the batch */
    int64_t min_pos;    /* the lowest position among those */
} ss_room_side;

/* ss_rooms.c: what the batch inserted into one room */
typedef struct ss_room_acc {
    const char *room; /* borrowed from a job of the batch */
    uint64_t hash;
    const ss_job *last; /* the inserted message of highest position */
    ss_room_side side[2];
} ss_room_acc;

/* ss_rooms.c: the rooms of a batch, by room id (open addressing) */
typedef struct ss_rooms {
    ss_room_acc *v;
    size_t n, cap;
    uint32_t *slots; /* index + 1 into v, 0: free; 2 * cap of them */
    size_t nslots;
    const ss_job *first; /* the first job gathered since the last flush */
} ss_rooms;

typedef struct ss_batch {
    struct ss_batch *next;
    struct ss *s;
    ss_job *head;
    size_t njobs, npersist;
    int committed;
    uint64_t seq; /* ss_sync.c: its place in the order batches were written */
} ss_batch;

/*
 * A list result being built: rows of `elem` bytes (each starting with its
 * size field) and the strings they point to, copies freed together.
 */
typedef struct ss_list {
    void *rows;
    size_t n, cap, elem;
    char **strs;
    size_t nstrs, capstrs;
    int oom;
} ss_list;

typedef enum ss_read_kind {
    READ_MEMBER_GET = 1,
    READ_MEMBER_LIST,
    READ_MEMBER_PAGE,
    READ_SESSION_GET,
    READ_ROOM_LIST,
    READ_HISTORY,
    READ_IDEM_GET,
    READ_REPLAY,
    READ_SIDE_REPLAY,
    READ_STREAM_HEADS,
    READ_IDEM_RECENT
} ss_read_kind;

/* The callback of chatd_store_ops.idem_recent. */
typedef void (*ss_idem_recent_cb)(void *arg, chatd_status status, int64_t member_id,
                                  const char *key, uint64_t msg_id, int64_t time_ms);

/* One read. The query is fixed on the loop before it is handed to the
 * reader thread, which fills the answer; the callback runs on the loop. */
typedef struct ss_read {
    struct ss_read *next;
    struct ss *s;
    ss_read_kind kind;

    /* the query */
    int64_t id;       /* member id */
    char *key;        /* login id, token hash, room id or idempotency key (owned) */
    uint64_t pos;     /* history: before; replay: after */
    int64_t since_ms; /* idem_get, idem_recent */
    unsigned limit;
    int64_t *ranges; /* side_replay: nranges (low, high] pairs (pc_pos_ranges), owned;
                      * stream_heads: the answer, nranges positions */
    size_t nranges;

    /* the caller: one of these, by kind */
    chatd_member_cb member_cb;
    chatd_session_cb session_cb;
    chatd_rooms_cb rooms_cb;
    chatd_history_cb history_cb;
    chatd_positions_cb positions_cb;
    ss_idem_recent_cb idem_recent_cb;
    void *arg;

    /* the answer (reader thread) */
    chatd_status status;
    ss_list rows;     /* member, session, room and idempotency rows with their strings */
    chatd_msg **msgs; /* history, idem_get, replay: built with msg_new */
    size_t nmsgs;
    uint64_t next_before;
} ss_read;

typedef struct ss {
    const chatd_api *api;
    chatd_ctx *ctx;
    char *path;
    int64_t batch_max, busy_ms, max_pending;
    int64_t idem_window_ms; /* the core's idempotency_window */
    int64_t max_pending_reads;

    /* reader thread only (after start) */
    sqlite3 *rdb;
    sqlite3_stmt *r[R_COUNT];

    /* shared with the reader thread, under rmu */
    pthread_mutex_t rmu;
    pthread_cond_t rcv;
    ss_read *rq_head, *rq_tail;
    int rquit;
    ss_read *rorphans; /* answers the loop no longer accepted */
    int reader_running;
    pthread_t reader;
    int64_t reads_pending; /* loop thread: handed over, not yet answered */

    /* loop thread only */
    ss_job *stage_head, *stage_tail;
    int flush_posted;
    int64_t pending; /* staged + handed to the writer, not yet finished */
    int started, stopping;
    pc_busy busy; /* the max_pending warning of the current episode */
    chatd_completion *stop_done;

    /* shared with the writer thread, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ss_job *wq_head, *wq_tail;
    int quit;
    ss_batch *orphans; /* results the loop no longer accepted */
    int thread_running;
    pthread_t thread;

    /* writer thread only (after start) */
    sqlite3 *wdb;
    sqlite3_stmt *w[W_COUNT];
    int64_t idem_purged_ms;                             /* last purge of expired idempotency keys */
    int64_t ckpt_pages, ckpt_idle_ms, ckpt_truncate_ms; /* the checkpoint_* keys */
    int wal_pages;             /* frames in the WAL after the last commit (wal hook) */
    int wal_base;              /* frames a checkpoint could not copy (readers held them) */
    int64_t ckpt_truncated_ms; /* last TRUNCATE checkpoint (monotonic) */

    /* the checkpoint thread (ss_ckpt.c) and its connection; requests and
     * results under cmu */
    sqlite3 *cdb;
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    pthread_t ckpt_thread;
    int ckpt_running, ckpt_req, ckpt_busy, ckpt_quit;
    int ckpt_log;   /* frames the last checkpoint of the thread saw, -1: none new */
    ss_rooms rooms; /* the room summaries of the batch being written */

    /* the sync stage (ss_sync.c); the queue and sequence numbers under smu */
    int sync_full; /* the synchronous key: 1 full (fdatasync before results), 0 normal */
    int sync_started, sync_inited, nsyncers, squit;
    int wal_fd; /* the WAL file, opened by ss_sync_start */
    pthread_mutex_t smu;
    pthread_cond_t scv;
    ss_batch *sq_head, *sq_tail; /* committed, not yet released to the loop, in order */
    uint64_t written_seq;        /* the newest batch handed over */
    uint64_t started_seq;        /* the newest batch a sync in flight or done covers */
    uint64_t durable_seq;        /* the newest batch a finished sync covers */
    pthread_t syncer[SS_SYNC_THREADS];
} ss;

/* ss_writer.c: write hooks, and the loop side of results */
chatd_status ss_persist(void *inst, chatd_msg *msg, chatd_completion *done);
void ss_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg);
void ss_session_put(void *inst, const chatd_session *sess, chatd_status_cb cb, void *arg);
void ss_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg);
void ss_session_purge(void *inst, int64_t now_ms,
                      void (*cb)(void *arg, chatd_status status, uint64_t n), void *arg);
void ss_dead_letter(void *inst, const char *source, const void *payload, size_t len,
                    const char *reason, chatd_status_cb cb, void *arg);
/* Hand everything staged so far to the writer thread (loop thread). */
void ss_handoff(ss *s);
/* Report one finished job to its caller and free it (loop thread). */
void ss_finish_job(ss *s, ss_job *j);

/* Posted by the writer thread: report a finished batch (loop thread). */
void ss_finish_batch(void *arg);

/* ss_commit.c: the writer thread */
void *ss_writer_main(void *arg);
/* sqlite3_wal_hook of the write connection: record the WAL's size. */
int ss_wal_hook(void *arg, sqlite3 *db, const char *name, int pages);
/* Log a failed write statement (writer thread). */
void ss_wlog(ss *s, const char *what, int rc);

/* ss_ckpt.c: start the checkpoint thread on its connection db (0: failed,
 * logged), stop it (before db is closed); the writer thread's calls after a
 * batch (asks the checkpoint thread once the WAL has grown enough) and when
 * idle (checkpoints itself, TRUNCATE at most every checkpoint_truncate_s). */
int ss_ckpt_start(ss *s, sqlite3 *db);
void ss_ckpt_stop(ss *s);
void ss_ckpt_after_batch(ss *s);
void ss_ckpt_idle(ss *s);

/* ss_sync.c: the sync stage. Start it once the write connection is open in
 * WAL mode (0: failed, logged); the writer thread hands each finished batch
 * to it (released to the loop once durable, in order); stop it after the
 * writer thread has ended (releases everything, joins the threads). */
int ss_sync_start(ss *s);
void ss_sync_submit(ss *s, ss_batch *b);
void ss_sync_stop(ss *s);

/* ss_rooms.c (writer thread): gather the inserted CHAT message j into the
 * batch's room summaries (0: out of memory, nothing gathered); write them
 * (0: a statement failed, logged; the batch must fail); forget them (a
 * failed batch); free the storage (destroy). */
int ss_rooms_add(ss *s, ss_job *j);
int ss_rooms_flush(ss *s);
void ss_rooms_drop(ss *s);
void ss_rooms_free(ss_rooms *r);

/* Admission against max_pending, and staging of an admitted job (loop). */
chatd_status ss_admit(ss *s);
void ss_stage(ss *s, ss_job *j);
void ss_job_free(ss_job *j);

/* ss_nodes.c: node leases */
void ss_node_claim(void *inst, uint32_t node_id, const char *holder, int64_t lease_ms,
                   int64_t high_water_ms, chatd_node_cb cb, void *arg);
/* Writer thread: run a JOB_NODE_CLAIM inside the batch's transaction. */
chatd_status ss_run_node_claim(ss *s, ss_job *j);

/* ss_reader.c: the reader thread */
void *ss_reader_main(void *arg);
/* Hand a read to the reader thread, or answer it now with an error (loop). */
void ss_read_submit(ss *s, ss_read *r);
/* Stop the reader thread and answer what it left (loop thread, destroy). */
void ss_reader_join(ss *s);
void ss_read_free(ss_read *r);

/* ss_reads.c: read hooks (loop), a read's query (reader thread) and its
 * answer to the caller (loop) */
void ss_read_run(ss *s, ss_read *r);
void ss_read_answer(ss_read *r);
void ss_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb, void *arg);
void ss_member_list(void *inst, chatd_member_cb cb, void *arg);
void ss_member_page(void *inst, int64_t after_id, const char *prefix, unsigned limit,
                    chatd_member_cb cb, void *arg);
void ss_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg);
void ss_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg);
void ss_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                chatd_history_cb cb, void *arg);
void ss_idem_get(void *inst, int64_t member_id, const char *key, int64_t since_ms,
                 chatd_history_cb cb, void *arg);
void ss_replay(void *inst, const char *room_id, int64_t member_id, uint64_t after, unsigned limit,
               chatd_history_cb cb, void *arg);
void ss_side_replay(void *inst, int64_t member_id, const uint64_t *after, const uint64_t *until,
                    size_t n, unsigned limit, chatd_history_cb cb, void *arg);
void ss_stream_heads(void *inst, chatd_positions_cb cb, void *arg);
/* Shared with ss_idem.c: a new read of `kind` with a copy of key (NULL when
 * out of memory); a reset statement of the read connection; a column's text
 * (copied into `copy` when not NULL); a bound list query stepped to the end,
 * one row by fill() (reader thread). */
ss_read *ss_read_new(ss *s, ss_read_kind kind, const char *key, size_t elem);
sqlite3_stmt *ss_rstmt(ss *s, int which);
const char *ss_col(ss_list *copy, sqlite3_stmt *st, int col);
chatd_status ss_list_run(ss *s, sqlite3_stmt *st, ss_list *l, const char *what,
                         void (*fill)(sqlite3_stmt *st, ss_list *l, void *row));

/* ss_idem.c: idem_recent, the newest idempotency records */
extern const char ss_sql_idem_recent[];
void ss_idem_recent(void *inst, int64_t since_ms, unsigned limit, ss_idem_recent_cb cb, void *arg);
void ss_q_idem_recent(ss *s, ss_read *r); /* reader thread */
void ss_idem_recent_answer(ss_read *r);   /* loop */

#endif /* SS_H */
