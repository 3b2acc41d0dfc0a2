/*
 * store_sqlite.c - store-sqlite, the embedded SQLite store of chatd.
 *
 * Data model (schema version SS_SCHEMA_VERSION, kept in PRAGMA user_version
 * and upgraded at start by the ordered migration list below, in one
 * transaction): members, sessions, messages (idempotent insert by the 64-bit
 * id) and per-member room summaries (last message, its time, unread count,
 * last-read id).
 *
 * Threads and connections
 *   - Writes (persist, member_create, session_put, session_del) are staged on
 *     the loop thread; a task posted once per loop turn hands the whole stage
 *     to a writer thread, which commits up to `batch_max` jobs in ONE
 *     transaction (group commit) on its own connection, with WAL and
 *     synchronous=FULL, so a completed persist survives a crash and the fsync
 *     never runs on the loop. Results go back to the loop with
 *     chatd_api.post(); completions and callbacks run there, in job order.
 *   - Reads (member_get, member_list, session_get, room_list, history) run on
 *     the loop thread with a second, query-only connection: WAL lets it read
 *     committed data without waiting for the writer.
 *   All SQL is prepared once with bound parameters.
 *
 * Bounds: `max_pending` staged or uncommitted writes (then CHATD_ERR_BUSY),
 * history pages of at most SS_HISTORY_MAX, room lists of SS_ROOMS_MAX rows,
 * member lists of SS_MEMBERS_MAX rows.
 */
#define _POSIX_C_SOURCE 200809L

#include <chatd/plugin.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#define SS_HISTORY_MAX 1000u
#define SS_HISTORY_DEFAULT 50u
#define SS_ROOMS_MAX 10000u
#define SS_MEMBERS_MAX 100000u
#define SS_READER_BUSY_MAX_MS 200

/* ------------------------------------------------------------------------ */
/* Schema and migrations                                                    */
/* ------------------------------------------------------------------------ */

/* Migration i brings the schema from version i to i + 1. Append only. */
static const char *const ss_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE members("
    " id INTEGER PRIMARY KEY,"
    " login_id TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL,"
    " pw_hash TEXT,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE sessions("
    " token_hash TEXT PRIMARY KEY,"
    " member_id INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL);"
    "CREATE INDEX sessions_member ON sessions(member_id);"
    "CREATE TABLE messages("
    " id INTEGER PRIMARY KEY,"
    " room_id TEXT NOT NULL,"
    " writer_id INTEGER NOT NULL,"
    " writer TEXT NOT NULL,"
    " text TEXT NOT NULL,"
    " time_ms INTEGER NOT NULL);"
    "CREATE INDEX messages_room_id ON messages(room_id, id);"
    "CREATE TABLE rooms("
    " member_id INTEGER NOT NULL,"
    " room_id TEXT NOT NULL,"
    " peer_id INTEGER NOT NULL,"
    " last_msg_id INTEGER NOT NULL DEFAULT 0,"
    " last_message TEXT NOT NULL DEFAULT '',"
    " last_ms INTEGER NOT NULL DEFAULT 0,"
    " unread INTEGER NOT NULL DEFAULT 0,"
    " last_read_id INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(member_id, room_id));"
    "CREATE INDEX rooms_member_last ON rooms(member_id, last_ms);",
};
#define SS_SCHEMA_VERSION ((int)(sizeof(ss_migrations) / sizeof(ss_migrations[0])))

/* Writer-thread statements. */
enum {
    W_BEGIN,
    W_COMMIT,
    W_ROLLBACK,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_MSG_INSERT,
    W_ROOM_WRITER,
    W_ROOM_PEER,
    W_ROOM_READ,
    W_MEMBER_INSERT,
    W_SESSION_PUT,
    W_SESSION_DEL,
    W_COUNT
};

static const char *const ss_wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT job",
    [W_RELEASE] = "RELEASE job",
    [W_ROLLBACK_TO] = "ROLLBACK TO job",
    [W_MSG_INSERT] = "INSERT OR IGNORE INTO messages(id, room_id, writer_id, writer, text, time_ms)"
                     " VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
    /* writer: newest message, everything up to it read, unread recounted */
    [W_ROOM_WRITER] =
        "INSERT INTO rooms(member_id, room_id, peer_id, last_msg_id, last_message, last_ms,"
        " unread, last_read_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 0, ?4)"
        " ON CONFLICT(member_id, room_id) DO UPDATE SET"
        " last_message = CASE WHEN excluded.last_msg_id > rooms.last_msg_id"
        "   THEN excluded.last_message ELSE rooms.last_message END,"
        " last_ms = CASE WHEN excluded.last_msg_id > rooms.last_msg_id"
        "   THEN excluded.last_ms ELSE rooms.last_ms END,"
        " last_msg_id = max(rooms.last_msg_id, excluded.last_msg_id),"
        " last_read_id = max(rooms.last_read_id, excluded.last_read_id),"
        " unread = (SELECT count(*) FROM messages m WHERE m.room_id = excluded.room_id"
        "   AND m.writer_id = excluded.peer_id"
        "   AND m.id > max(rooms.last_read_id, excluded.last_read_id))",
    /* peer: newest message, one more unread unless already read past it */
    [W_ROOM_PEER] =
        "INSERT INTO rooms(member_id, room_id, peer_id, last_msg_id, last_message, last_ms,"
        " unread, last_read_id) VALUES(?1, ?2, ?3, ?4, ?5, ?6, 1, 0)"
        " ON CONFLICT(member_id, room_id) DO UPDATE SET"
        " last_message = CASE WHEN excluded.last_msg_id > rooms.last_msg_id"
        "   THEN excluded.last_message ELSE rooms.last_message END,"
        " last_ms = CASE WHEN excluded.last_msg_id > rooms.last_msg_id"
        "   THEN excluded.last_ms ELSE rooms.last_ms END,"
        " last_msg_id = max(rooms.last_msg_id, excluded.last_msg_id),"
        " unread = rooms.unread + (excluded.last_msg_id > rooms.last_read_id)",
    /* read mark: max semantics, unread recounted from the peer's messages */
    [W_ROOM_READ] = "UPDATE rooms SET last_read_id = max(last_read_id, ?3),"
                    " unread = (SELECT count(*) FROM messages m WHERE m.room_id = rooms.room_id"
                    "   AND m.writer_id = rooms.peer_id AND m.id > max(rooms.last_read_id, ?3))"
                    " WHERE member_id = ?1 AND room_id = ?2",
    [W_MEMBER_INSERT] = "INSERT INTO members(login_id, name, pw_hash, created_ms)"
                        " VALUES(?1, ?2, ?3, ?4)",
    [W_SESSION_PUT] = "INSERT OR REPLACE INTO sessions(token_hash, member_id, expires_ms)"
                      " VALUES(?1, ?2, ?3)",
    [W_SESSION_DEL] = "DELETE FROM sessions WHERE token_hash = ?1",
};

/* Loop-thread (read connection) statements. */
enum {
    R_MEMBER_BY_ID,
    R_MEMBER_BY_LOGIN,
    R_MEMBER_LIST,
    R_SESSION_GET,
    R_ROOM_LIST,
    R_HISTORY,
    R_COUNT
};

static const char *const ss_rsql[R_COUNT] = {
    [R_MEMBER_BY_ID] = "SELECT id, login_id, name, pw_hash, created_ms FROM members WHERE id = ?1",
    [R_MEMBER_BY_LOGIN] = "SELECT id, login_id, name, pw_hash, created_ms FROM members"
                          " WHERE login_id = ?1",
    [R_MEMBER_LIST] = "SELECT id, login_id, name, created_ms FROM members ORDER BY id LIMIT ?1",
    [R_SESSION_GET] = "SELECT token_hash, member_id, expires_ms FROM sessions"
                      " WHERE token_hash = ?1",
    [R_ROOM_LIST] = "SELECT r.room_id, r.peer_id, m.login_id, m.name, r.last_msg_id,"
                    " r.last_message, r.last_ms, r.unread, r.last_read_id"
                    " FROM rooms r LEFT JOIN members m ON m.id = r.peer_id"
                    " WHERE r.member_id = ?1 ORDER BY r.last_ms DESC, r.last_msg_id DESC"
                    " LIMIT ?2",
    [R_HISTORY] = "SELECT id, writer_id, writer, text, time_ms FROM messages"
                  " WHERE room_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
};

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum ss_job_kind {
    JOB_PERSIST = 1,
    JOB_MEMBER_CREATE,
    JOB_SESSION_PUT,
    JOB_SESSION_DEL
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
    int64_t id, writer_id, peer_id, time_ms, up_to;
    const char *room, *writer, *text;
    size_t text_len;

    /* member_create / session_* */
    chatd_member_cb member_cb;
    chatd_status_cb status_cb;
    void *arg;
    int64_t member_id, created_ms, expires_ms;
    char *login_id, *name, *pw_hash, *token_hash; /* owned copies */
} ss_job;

typedef struct ss_batch {
    struct ss_batch *next;
    struct ss *s;
    ss_job *head;
    size_t njobs, npersist;
    int committed;
} ss_batch;

typedef struct ss {
    const chatd_api *api;
    chatd_ctx *ctx;
    char *path;
    int64_t batch_max, busy_ms, max_pending;

    sqlite3 *rdb; /* loop thread */
    sqlite3_stmt *r[R_COUNT];

    /* loop thread only */
    ss_job *stage_head, *stage_tail;
    int flush_posted;
    int64_t pending; /* staged + handed to the writer, not yet finished */
    int started, stopping;
    int busy_logged; /* a "busy" warning was logged; reset when pending drains */
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
} ss;

static const chatd_cfg_key ss_cfg_keys[] = {
    {"path", CHATD_CFG_STRING, NULL, 0, 0, "database file (created with its directory if missing)"},
    {"batch_max", CHATD_CFG_INT, "512", 1, 100000, "most writes committed in one transaction"},
    {"busy_timeout_ms", CHATD_CFG_INT, "5000", 0, 600000,
     "how long the writer waits for a lock held by another process"},
    {"max_pending", CHATD_CFG_INT, "100000", 1, 100000000,
     "writes accepted but not yet committed before persist refuses with busy"},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static char *ss_strdup(const char *s)
{
    size_t n;
    char *d;
    if (!s)
        return NULL;
    n = strlen(s) + 1;
    d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int64_t ss_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *ss_col_str(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return t ? (const char *)t : "";
}

/* Parse "a&b" (decimal ids > 0). Returns 0 on success. */
static int ss_parse_room(const char *room, int64_t *a, int64_t *b)
{
    const char *p = room;
    char *end;
    long long x, y;

    if (!room || *room < '1' || *room > '9')
        return -1;
    errno = 0;
    x = strtoll(p, &end, 10);
    if (errno || *end != '&' || x <= 0)
        return -1;
    p = end + 1;
    if (*p < '1' || *p > '9')
        return -1;
    y = strtoll(p, &end, 10);
    if (errno || *end != '\0' || y <= 0)
        return -1;
    *a = x;
    *b = y;
    return 0;
}

static void ss_job_free(ss_job *j)
{
    free(j->login_id);
    free(j->name);
    free(j->pw_hash);
    free(j->token_hash);
    free(j);
}

/* ------------------------------------------------------------------------ */
/* Writer thread                                                            */
/* ------------------------------------------------------------------------ */

/* Step a writer statement to completion and reset it. */
static int ss_wstep(ss *s, int which)
{
    sqlite3_stmt *st = s->w[which];
    int rc = sqlite3_step(st);
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc;
}

static void ss_wlog(ss *s, const char *what, int rc)
{
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "%s failed on %s: %s (sqlite %d); check free disk space, permissions and "
                "that no other program holds the database",
                what, s->path, sqlite3_errmsg(s->wdb), rc);
}

static chatd_status ss_run_persist(ss *s, ss_job *j)
{
    sqlite3_stmt *st;
    int rc;

    if (j->mkind == CHATD_MSG_READ) {
        st = s->w[W_ROOM_READ];
        sqlite3_bind_int64(st, 1, j->writer_id);
        sqlite3_bind_text(st, 2, j->room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, j->up_to);
        rc = ss_wstep(s, W_ROOM_READ);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "recording a read mark", rc);
            return CHATD_ERR_IO;
        }
        return CHATD_OK;
    }

    st = s->w[W_MSG_INSERT];
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_text(st, 2, j->room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->writer_id);
    sqlite3_bind_text(st, 4, j->writer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, j->text, (int)j->text_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, j->time_ms);
    rc = ss_wstep(s, W_MSG_INSERT);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "inserting a message", rc);
        return CHATD_ERR_IO;
    }
    if (sqlite3_changes(s->wdb) == 0)
        return CHATD_OK; /* already stored: redelivery changes nothing */

    for (int w = W_ROOM_WRITER; w <= W_ROOM_PEER; w++) {
        int64_t member = w == W_ROOM_WRITER ? j->writer_id : j->peer_id;
        int64_t peer = w == W_ROOM_WRITER ? j->peer_id : j->writer_id;
        st = s->w[w];
        sqlite3_bind_int64(st, 1, member);
        sqlite3_bind_text(st, 2, j->room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, peer);
        sqlite3_bind_int64(st, 4, j->id);
        sqlite3_bind_text(st, 5, j->text, (int)j->text_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, j->time_ms);
        rc = ss_wstep(s, w);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "updating a room summary", rc);
            return CHATD_ERR_IO;
        }
        if (j->peer_id == j->writer_id)
            break; /* a room with oneself has one summary */
    }
    return CHATD_OK;
}

static chatd_status ss_run_job(ss *s, ss_job *j)
{
    sqlite3_stmt *st;
    int rc;

    switch (j->kind) {
    case JOB_PERSIST:
        return ss_run_persist(s, j);
    case JOB_MEMBER_CREATE:
        st = s->w[W_MEMBER_INSERT];
        sqlite3_bind_text(st, 1, j->login_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, j->name, -1, SQLITE_STATIC);
        if (j->pw_hash)
            sqlite3_bind_text(st, 3, j->pw_hash, -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(st, 3);
        sqlite3_bind_int64(st, 4, j->created_ms);
        rc = ss_wstep(s, W_MEMBER_INSERT);
        if (rc == SQLITE_CONSTRAINT)
            return CHATD_ERR_EXISTS;
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "creating a member", rc);
            return CHATD_ERR_IO;
        }
        j->member_id = sqlite3_last_insert_rowid(s->wdb);
        return CHATD_OK;
    case JOB_SESSION_PUT:
        st = s->w[W_SESSION_PUT];
        sqlite3_bind_text(st, 1, j->token_hash, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, j->member_id);
        sqlite3_bind_int64(st, 3, j->expires_ms);
        rc = ss_wstep(s, W_SESSION_PUT);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "storing a session", rc);
            return CHATD_ERR_IO;
        }
        return CHATD_OK;
    case JOB_SESSION_DEL:
        st = s->w[W_SESSION_DEL];
        sqlite3_bind_text(st, 1, j->token_hash, -1, SQLITE_STATIC);
        rc = ss_wstep(s, W_SESSION_DEL);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "deleting a session", rc);
            return CHATD_ERR_IO;
        }
        return CHATD_OK;
    }
    return CHATD_ERR_INTERNAL;
}

/* Commit a list of jobs in one transaction; each job gets its status. */
static int ss_commit_batch(ss *s, ss_job *head)
{
    ss_job *j;
    int rc;

    rc = ss_wstep(s, W_BEGIN);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "starting a transaction", rc);
        for (j = head; j; j = j->next)
            j->status = CHATD_ERR_IO;
        return 0;
    }
    for (j = head; j; j = j->next) {
        /* A savepoint per job: a refused job (e.g. login id taken) leaves
         * the rest of the batch intact and itself fully undone. */
        rc = ss_wstep(s, W_SAVEPOINT);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "opening a savepoint", rc);
            j->status = CHATD_ERR_IO;
        } else {
            j->status = ss_run_job(s, j);
            if (j->status != CHATD_OK && !sqlite3_get_autocommit(s->wdb))
                ss_wstep(s, W_ROLLBACK_TO);
            if (!sqlite3_get_autocommit(s->wdb))
                ss_wstep(s, W_RELEASE);
        }
        if (sqlite3_get_autocommit(s->wdb)) {
            /* SQLite rolled the whole transaction back (disk full, I/O). */
            s->api->log(s->ctx, CHATD_LOG_ERROR,
                        "transaction on %s was rolled back: %s; the batch is failed and "
                        "will be retried by its senders",
                        s->path, sqlite3_errmsg(s->wdb));
            for (j = head; j; j = j->next)
                j->status = CHATD_ERR_IO;
            return 0;
        }
    }
    rc = ss_wstep(s, W_COMMIT);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "committing a batch", rc);
        if (!sqlite3_get_autocommit(s->wdb))
            ss_wstep(s, W_ROLLBACK);
        for (j = head; j; j = j->next)
            j->status = CHATD_ERR_IO;
        return 0;
    }
    return 1;
}

static void ss_finish_batch(void *arg);

static void *ss_writer_main(void *arg)
{
    ss *s = arg;

    for (;;) {
        ss_job *head, *tail, *j;
        ss_batch *b;
        size_t n = 0, np = 0;
        int64_t t0;

        pthread_mutex_lock(&s->mu);
        while (!s->wq_head && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->wq_head) {
            pthread_mutex_unlock(&s->mu);
            break; /* quit, and nothing left */
        }
        head = tail = s->wq_head;
        for (j = head; j && (int64_t)n < s->batch_max; j = j->next) {
            tail = j;
            n++;
        }
        s->wq_head = tail->next;
        if (!s->wq_head)
            s->wq_tail = NULL;
        tail->next = NULL;
        pthread_mutex_unlock(&s->mu);

        for (j = head; j; j = j->next)
            np += j->kind == JOB_PERSIST;
        t0 = ss_mono_ms();
        b = calloc(1, sizeof(*b));
        if (!b) {
            /* Cannot report without memory: keep the jobs queued and retry. */
            s->api->log(s->ctx, CHATD_LOG_ERROR, "out of memory in the writer; retrying");
            pthread_mutex_lock(&s->mu);
            tail->next = s->wq_head;
            s->wq_head = head;
            if (!s->wq_tail)
                s->wq_tail = tail;
            pthread_mutex_unlock(&s->mu);
            struct timespec ts = {0, 100 * 1000000L};
            nanosleep(&ts, NULL);
            continue;
        }
        b->s = s;
        b->head = head;
        b->njobs = n;
        b->npersist = np;
        b->committed = ss_commit_batch(s, head);
        s->api->log(s->ctx, CHATD_LOG_DEBUG, "batch of %zu writes (%zu messages) %s in %lld ms",
                    n, np, b->committed ? "committed" : "failed",
                    (long long)(ss_mono_ms() - t0));
        if (s->api->post(s->ctx, ss_finish_batch, b) != CHATD_OK) {
            pthread_mutex_lock(&s->mu);
            b->next = s->orphans;
            s->orphans = b;
            pthread_mutex_unlock(&s->mu);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Loop side of writes                                                      */
/* ------------------------------------------------------------------------ */

static void ss_maybe_stopped(ss *s)
{
    if (s->stopping && s->stop_done && s->pending == 0 && !s->flush_posted) {
        chatd_completion *d = s->stop_done;
        s->stop_done = NULL;
        s->api->log(s->ctx, CHATD_LOG_INFO, "stopped: every accepted write is committed");
        s->api->complete(d, CHATD_OK, NULL);
    }
}

/* Report one finished job to its caller (loop thread) and free it. */
static void ss_finish_job(ss *s, ss_job *j)
{
    chatd_member m;

    switch (j->kind) {
    case JOB_PERSIST:
        s->api->complete(j->done, j->status,
                         j->status == CHATD_OK ? NULL : "the message could not be committed");
        s->api->msg_unref(j->msg);
        break;
    case JOB_MEMBER_CREATE:
        memset(&m, 0, sizeof(m));
        m.size = sizeof(m);
        m.id = j->member_id;
        m.login_id = j->login_id;
        m.name = j->name;
        m.pw_hash = j->pw_hash;
        m.created_ms = j->created_ms;
        j->member_cb(j->arg, j->status, j->status == CHATD_OK ? &m : NULL,
                     j->status == CHATD_OK ? 1 : 0);
        break;
    case JOB_SESSION_PUT:
    case JOB_SESSION_DEL:
        if (j->status_cb)
            j->status_cb(j->arg, j->status);
        break;
    }
    ss_job_free(j);
}

/* Posted by the writer thread: a batch is finished. */
static void ss_finish_batch(void *arg)
{
    ss_batch *b = arg;
    ss *s = b->s;
    ss_job *j, *next;

    for (j = b->head; j; j = next) {
        next = j->next;
        ss_finish_job(s, j);
    }
    s->pending -= (int64_t)b->njobs;
    if (s->busy_logged && s->pending < s->max_pending / 2) {
        s->busy_logged = 0;
        s->api->log(s->ctx, CHATD_LOG_INFO, "writes pending back to %lld; accepting again",
                    (long long)s->pending);
    }
    if (b->committed) {
        s->api->counter_add(s->ctx, "chatd_store_commits_total", 1);
        s->api->counter_add(s->ctx, "chatd_store_persisted_total", b->npersist);
    } else {
        s->api->counter_add(s->ctx, "chatd_store_failed_batches_total", 1);
    }
    s->api->gauge_set(s->ctx, "chatd_store_pending", s->pending);
    free(b);
    ss_maybe_stopped(s);
}

/* Hand everything staged so far to the writer thread. */
static void ss_handoff(ss *s)
{
    if (!s->stage_head)
        return;
    pthread_mutex_lock(&s->mu);
    if (s->wq_tail)
        s->wq_tail->next = s->stage_head;
    else
        s->wq_head = s->stage_head;
    s->wq_tail = s->stage_tail;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->stage_head = s->stage_tail = NULL;
}

/* Posted once per loop turn in which something was staged. */
static void ss_flush(void *arg)
{
    ss *s = arg;

    s->flush_posted = 0;
    ss_handoff(s);
    ss_maybe_stopped(s);
}

/* Check that a write may be accepted now. */
static chatd_status ss_admit(ss *s)
{
    if (!s->started || s->stopping)
        return CHATD_ERR_UNAVAILABLE;
    if (s->pending >= s->max_pending) {
        if (!s->busy_logged)
            s->api->log(s->ctx, CHATD_LOG_WARN,
                        "%lld writes pending (max_pending); refusing until the disk catches "
                        "up (raise max_pending or use faster storage if this persists)",
                        (long long)s->pending);
        s->busy_logged = 1;
        s->api->counter_add(s->ctx, "chatd_store_busy_total", 1);
        return CHATD_ERR_BUSY;
    }
    if (!s->flush_posted) {
        if (s->api->post(s->ctx, ss_flush, s) != CHATD_OK)
            return CHATD_ERR_UNAVAILABLE;
        s->flush_posted = 1;
    }
    return CHATD_OK;
}

static void ss_stage(ss *s, ss_job *j)
{
    j->next = NULL;
    if (s->stage_tail)
        s->stage_tail->next = j;
    else
        s->stage_head = j;
    s->stage_tail = j;
    s->pending++;
}

static chatd_status ss_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    ss_job *j;
    chatd_status st;
    int64_t a, b;
    uint64_t id;

    if (!msg || !done)
        return CHATD_ERR_INVALID;
    id = api->msg_id(msg);
    if (id == 0 || id > (uint64_t)INT64_MAX) {
        api->log(s->ctx, CHATD_LOG_ERROR, "refusing message with id %" PRIu64 " (out of range)",
                 id);
        return CHATD_ERR_INVALID;
    }
    if (ss_parse_room(api->msg_room(msg), &a, &b) != 0 ||
        (api->msg_writer_id(msg) != a && api->msg_writer_id(msg) != b)) {
        api->log(s->ctx, CHATD_LOG_ERROR,
                 "refusing message %" PRIu64 ": room \"%s\" is malformed or lacks writer %lld",
                 id, api->msg_room(msg) ? api->msg_room(msg) : "(null)",
                 (long long)api->msg_writer_id(msg));
        return CHATD_ERR_INVALID;
    }
    if (api->msg_kind(msg) != CHATD_MSG_CHAT && api->msg_kind(msg) != CHATD_MSG_READ)
        return CHATD_ERR_INVALID;
    st = ss_admit(s);
    if (st != CHATD_OK)
        return st;
    j = calloc(1, sizeof(*j));
    if (!j)
        return CHATD_ERR_NOMEM;
    j->kind = JOB_PERSIST;
    j->msg = api->msg_ref(msg);
    j->done = done;
    j->mkind = api->msg_kind(msg);
    j->id = (int64_t)id;
    j->room = api->msg_room(msg);
    j->writer_id = api->msg_writer_id(msg);
    j->peer_id = j->writer_id == a ? b : a;
    j->writer = api->msg_writer(msg);
    if (!j->writer)
        j->writer = "";
    j->text = api->msg_text(msg, &j->text_len);
    if (!j->text) {
        j->text = "";
        j->text_len = 0;
    }
    if (j->text_len > INT32_MAX) {
        api->msg_unref(j->msg);
        free(j);
        return CHATD_ERR_INVALID;
    }
    j->time_ms = api->msg_time_ms(msg);
    j->up_to = (int64_t)(api->msg_up_to(msg) > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX
                                                                   : api->msg_up_to(msg));
    ss_stage(s, j);
    return CHATD_ASYNC;
}

static void ss_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg)
{
    ss *s = inst;
    ss_job *j;
    chatd_status st;

    if (!cb)
        return;
    if (!m || !m->login_id || !*m->login_id || !m->name) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    st = ss_admit(s);
    if (st != CHATD_OK) {
        cb(arg, st, NULL, 0);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j || !(j->login_id = ss_strdup(m->login_id)) || !(j->name = ss_strdup(m->name)) ||
        (m->pw_hash && !(j->pw_hash = ss_strdup(m->pw_hash)))) {
        if (j)
            ss_job_free(j);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    j->kind = JOB_MEMBER_CREATE;
    j->member_cb = cb;
    j->arg = arg;
    j->created_ms = m->created_ms > 0 ? m->created_ms : s->api->now_ms();
    ss_stage(s, j);
}

static void ss_session_write(ss *s, ss_job_kind kind, const char *token_hash, int64_t member_id,
                             int64_t expires_ms, chatd_status_cb cb, void *arg)
{
    ss_job *j;
    chatd_status st;

    if (!token_hash || !*token_hash) {
        if (cb)
            cb(arg, CHATD_ERR_INVALID);
        return;
    }
    st = ss_admit(s);
    if (st != CHATD_OK) {
        if (cb)
            cb(arg, st);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j || !(j->token_hash = ss_strdup(token_hash))) {
        if (j)
            ss_job_free(j);
        if (cb)
            cb(arg, CHATD_ERR_NOMEM);
        return;
    }
    j->kind = kind;
    j->member_id = member_id;
    j->expires_ms = expires_ms;
    j->status_cb = cb;
    j->arg = arg;
    ss_stage(s, j);
}

static void ss_session_put(void *inst, const chatd_session *sess, chatd_status_cb cb, void *arg)
{
    if (!sess) {
        if (cb)
            cb(arg, CHATD_ERR_INVALID);
        return;
    }
    ss_session_write(inst, JOB_SESSION_PUT, sess->token_hash, sess->member_id, sess->expires_ms,
                     cb, arg);
}

static void ss_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg)
{
    ss_session_write(inst, JOB_SESSION_DEL, token_hash, 0, 0, cb, arg);
}

/* ------------------------------------------------------------------------ */
/* Reads (loop thread, read connection)                                     */
/* ------------------------------------------------------------------------ */

static void ss_rlog(ss *s, const char *what, int rc)
{
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "%s failed on %s: %s (sqlite %d); check the database file and its permissions",
                what, s->path, sqlite3_errmsg(s->rdb), rc);
}

static sqlite3_stmt *ss_rstmt(ss *s, int which)
{
    sqlite3_stmt *st = s->r[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

static void ss_member_get(void *inst, int64_t id, const char *login_id, chatd_member_cb cb,
                          void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_member m;
    int rc;

    if (!cb)
        return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    if (login_id) {
        st = ss_rstmt(s, R_MEMBER_BY_LOGIN);
        sqlite3_bind_text(st, 1, login_id, -1, SQLITE_STATIC);
    } else {
        st = ss_rstmt(s, R_MEMBER_BY_ID);
        sqlite3_bind_int64(st, 1, id);
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(&m, 0, sizeof(m));
        m.size = sizeof(m);
        m.id = sqlite3_column_int64(st, 0);
        m.login_id = ss_col_str(st, 1);
        m.name = ss_col_str(st, 2);
        m.pw_hash = (const char *)sqlite3_column_text(st, 3);
        m.created_ms = sqlite3_column_int64(st, 4);
        cb(arg, CHATD_OK, &m, 1);
    } else if (rc == SQLITE_DONE) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL, 0);
    } else {
        ss_rlog(s, "reading a member", rc);
        cb(arg, CHATD_ERR_IO, NULL, 0);
    }
    sqlite3_reset(st);
}

static void ss_member_list(void *inst, chatd_member_cb cb, void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_member *rows = NULL, *grown;
    size_t n = 0, cap = 0, i;
    chatd_status status = CHATD_OK;
    int rc;

    if (!cb)
        return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    st = ss_rstmt(s, R_MEMBER_LIST);
    sqlite3_bind_int64(st, 1, SS_MEMBERS_MAX);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chatd_member *m;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            grown = realloc(rows, cap * sizeof(*rows));
            if (!grown) {
                status = CHATD_ERR_NOMEM;
                break;
            }
            rows = grown;
        }
        m = &rows[n];
        memset(m, 0, sizeof(*m));
        m->size = sizeof(*m);
        m->id = sqlite3_column_int64(st, 0);
        m->login_id = ss_strdup(ss_col_str(st, 1));
        m->name = ss_strdup(ss_col_str(st, 2));
        m->created_ms = sqlite3_column_int64(st, 3);
        n++;
        if (!m->login_id || !m->name) {
            status = CHATD_ERR_NOMEM;
            break;
        }
    }
    if (status == CHATD_OK && rc != SQLITE_DONE) {
        ss_rlog(s, "listing members", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    if (status == CHATD_OK && n == SS_MEMBERS_MAX)
        s->api->log(s->ctx, CHATD_LOG_WARN, "member list truncated to %u rows", SS_MEMBERS_MAX);
    cb(arg, status, status == CHATD_OK ? rows : NULL, status == CHATD_OK ? n : 0);
    for (i = 0; i < n; i++) {
        free((char *)rows[i].login_id);
        free((char *)rows[i].name);
    }
    free(rows);
}

static void ss_session_get(void *inst, const char *token_hash, chatd_session_cb cb, void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_session sess;
    int rc;

    if (!cb)
        return;
    if (!token_hash) {
        cb(arg, CHATD_ERR_INVALID, NULL);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL);
        return;
    }
    st = ss_rstmt(s, R_SESSION_GET);
    sqlite3_bind_text(st, 1, token_hash, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(&sess, 0, sizeof(sess));
        sess.size = sizeof(sess);
        sess.token_hash = ss_col_str(st, 0);
        sess.member_id = sqlite3_column_int64(st, 1);
        sess.expires_ms = sqlite3_column_int64(st, 2);
        cb(arg, CHATD_OK, &sess);
    } else if (rc == SQLITE_DONE) {
        cb(arg, CHATD_ERR_NOTFOUND, NULL);
    } else {
        ss_rlog(s, "reading a session", rc);
        cb(arg, CHATD_ERR_IO, NULL);
    }
    sqlite3_reset(st);
}

static void ss_room_list(void *inst, int64_t member_id, chatd_rooms_cb cb, void *arg)
{
    ss *s = inst;
    sqlite3_stmt *st;
    chatd_room_summary *rows = NULL, *grown;
    size_t n = 0, cap = 0, i;
    chatd_status status = CHATD_OK;
    int rc;

    if (!cb)
        return;
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    st = ss_rstmt(s, R_ROOM_LIST);
    sqlite3_bind_int64(st, 1, member_id);
    sqlite3_bind_int64(st, 2, SS_ROOMS_MAX);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chatd_room_summary *r;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            grown = realloc(rows, cap * sizeof(*rows));
            if (!grown) {
                status = CHATD_ERR_NOMEM;
                break;
            }
            rows = grown;
        }
        r = &rows[n];
        memset(r, 0, sizeof(*r));
        r->size = sizeof(*r);
        r->member_id = member_id;
        r->room_id = ss_strdup(ss_col_str(st, 0));
        r->peer_id = sqlite3_column_int64(st, 1);
        r->peer_login = ss_strdup(ss_col_str(st, 2));
        r->peer_name = ss_strdup(ss_col_str(st, 3));
        r->last_msg_id = (uint64_t)sqlite3_column_int64(st, 4);
        {
            const void *t = sqlite3_column_text(st, 5);
            size_t len = (size_t)sqlite3_column_bytes(st, 5);
            char *c = malloc(len + 1);
            if (c) {
                if (len)
                    memcpy(c, t, len);
                c[len] = '\0';
            }
            r->last_message = c;
        }
        r->last_ms = sqlite3_column_int64(st, 6);
        r->unread = sqlite3_column_int64(st, 7);
        r->last_read_id = (uint64_t)sqlite3_column_int64(st, 8);
        n++;
        if (!r->room_id || !r->peer_login || !r->peer_name || !r->last_message) {
            status = CHATD_ERR_NOMEM;
            break;
        }
    }
    if (status == CHATD_OK && rc != SQLITE_DONE) {
        ss_rlog(s, "listing rooms", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    cb(arg, status, status == CHATD_OK ? rows : NULL, status == CHATD_OK ? n : 0);
    for (i = 0; i < n; i++) {
        free((char *)rows[i].room_id);
        free((char *)rows[i].peer_login);
        free((char *)rows[i].peer_name);
        free((char *)rows[i].last_message);
    }
    free(rows);
}

static void ss_history(void *inst, const char *room_id, uint64_t before, unsigned limit,
                       chatd_history_cb cb, void *arg)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    sqlite3_stmt *st;
    chatd_msg *msgs[SS_HISTORY_MAX];
    size_t n = 0, i;
    int more = 0, rc;
    chatd_status status = CHATD_OK;
    uint64_t next = 0;

    if (!cb)
        return;
    if (!room_id) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    if (!s->rdb) {
        cb(arg, CHATD_ERR_UNAVAILABLE, NULL, 0, 0);
        return;
    }
    if (limit == 0)
        limit = SS_HISTORY_DEFAULT;
    if (limit > SS_HISTORY_MAX)
        limit = SS_HISTORY_MAX;
    if (before == 0 || before > (uint64_t)INT64_MAX)
        before = (uint64_t)INT64_MAX;

    st = ss_rstmt(s, R_HISTORY);
    sqlite3_bind_text(st, 1, room_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (int64_t)before);
    sqlite3_bind_int64(st, 3, (int64_t)limit + 1);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        chatd_msg_fields f;
        if (n == limit) {
            more = 1;
            break;
        }
        memset(&f, 0, sizeof(f));
        f.size = sizeof(f);
        f.kind = CHATD_MSG_CHAT;
        f.id = (uint64_t)sqlite3_column_int64(st, 0);
        f.room_id = room_id;
        f.writer_id = sqlite3_column_int64(st, 1);
        f.writer = ss_col_str(st, 2);
        f.text = ss_col_str(st, 3);
        f.text_len = (size_t)sqlite3_column_bytes(st, 3);
        f.time_ms = sqlite3_column_int64(st, 4);
        msgs[n] = api->msg_new(s->ctx, &f);
        if (!msgs[n]) {
            api->log(s->ctx, CHATD_LOG_ERROR, "could not build message %" PRIu64 " of room %s",
                     f.id, room_id);
            status = CHATD_ERR_NOMEM;
            break;
        }
        n++;
    }
    if (status == CHATD_OK && !more && rc != SQLITE_DONE) {
        ss_rlog(s, "reading history", rc);
        status = CHATD_ERR_IO;
    }
    sqlite3_reset(st);
    if (status != CHATD_OK) {
        for (i = 0; i < n; i++)
            api->msg_unref(msgs[i]);
        cb(arg, status, NULL, 0, 0);
        return;
    }
    /* rows came newest first; deliver oldest first */
    for (i = 0; i < n / 2; i++) {
        chatd_msg *t = msgs[i];
        msgs[i] = msgs[n - 1 - i];
        msgs[n - 1 - i] = t;
    }
    if (more && n > 0)
        next = api->msg_id(msgs[0]);
    cb(arg, CHATD_OK, msgs, n, next);
    for (i = 0; i < n; i++)
        api->msg_unref(msgs[i]);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static chatd_status ss_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    ss *s;
    const char *path;

    if (!api || api->abi_major != CHATD_ABI_MAJOR || api->size < sizeof(chatd_api)) {
        if (api && api->size > offsetof(chatd_api, log) && api->log)
            api->log(ctx, CHATD_LOG_ERROR, "the core's service table is older than this "
                                           "plugin needs; use a matching chatd");
        return CHATD_ERR_INVALID;
    }
    if (!sqlite3_threadsafe()) {
        api->log(ctx, CHATD_LOG_ERROR,
                 "the sqlite3 library is built without thread support; install a "
                 "thread-safe libsqlite3");
        return CHATD_ERR_INVALID;
    }
    path = api->cfg_str(ctx, "path");
    if (!path || !*path) {
        api->cfg_error(ctx, "path", "required: the database file, e.g. path = data/chatd.db");
        return CHATD_ERR_INVALID;
    }
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) {
        api->cfg_error(ctx, "path", "must be a file name (WAL needs a file shared by the "
                                    "writer and reader connections)");
        return CHATD_ERR_INVALID;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->path = ss_strdup(path))) {
        free(s);
        api->log(ctx, CHATD_LOG_ERROR, "out of memory creating the store");
        return CHATD_ERR_NOMEM;
    }
    s->api = api;
    s->ctx = ctx;
    s->batch_max = api->cfg_int(ctx, "batch_max", 512);
    s->busy_ms = api->cfg_int(ctx, "busy_timeout_ms", 5000);
    s->max_pending = api->cfg_int(ctx, "max_pending", 100000);
    if (s->batch_max < 1 || s->busy_ms < 0 || s->max_pending < 1 || s->busy_ms > INT32_MAX) {
        api->cfg_error(ctx, s->batch_max < 1 ? "batch_max"
                            : s->max_pending < 1 ? "max_pending" : "busy_timeout_ms",
                       "out of range");
        free(s->path);
        free(s);
        return CHATD_ERR_INVALID;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->path);
        free(s);
        return CHATD_ERR_NOMEM;
    }
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s->path);
        free(s);
        return CHATD_ERR_NOMEM;
    }
    *inst = s;
    return CHATD_OK;
}

/* Create the parent directory of the database when it is missing. */
static int ss_make_parent(ss *s)
{
    char *dir = ss_strdup(s->path);
    char *slash;
    int ok = 1;

    if (!dir)
        return 0;
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            s->api->log(s->ctx, CHATD_LOG_ERROR,
                        "cannot create directory %s for the database: %s; create it or "
                        "change path",
                        dir, strerror(errno));
            ok = 0;
        }
    }
    free(dir);
    return ok;
}

static int ss_exec(ss *s, sqlite3 *db, const char *sql, const char *what)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "%s failed on %s: %s; check the file, its permissions and free space", what,
                    s->path, err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return 0;
    }
    return 1;
}

static sqlite3 *ss_open(ss *s, const char *role)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(s->path, &db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot open %s (%s connection): %s; check the path and permissions",
                    s->path, role, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 0);
    return db;
}

/* Bring the schema to SS_SCHEMA_VERSION in one transaction. */
static int ss_migrate(ss *s)
{
    sqlite3_stmt *st = NULL;
    int version = -1, rc;

    if (!ss_exec(s, s->wdb, "BEGIN IMMEDIATE", "locking the database for migration"))
        return 0;
    rc = sqlite3_prepare_v2(s->wdb, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot read the schema version of %s: %s",
                    s->path, sqlite3_errmsg(s->wdb));
        goto fail;
    }
    if (version > SS_SCHEMA_VERSION) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "%s has schema version %d, newer than this store-sqlite knows (%d); run a "
                    "newer chatd or restore a matching database",
                    s->path, version, SS_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < SS_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof(what), "schema migration %d -> %d", v, v + 1);
        if (!ss_exec(s, s->wdb, ss_migrations[v], what))
            goto fail;
    }
    if (version < SS_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SS_SCHEMA_VERSION);
        if (!ss_exec(s, s->wdb, sql, "recording the schema version"))
            goto fail;
    }
    if (!ss_exec(s, s->wdb, "COMMIT", "committing the schema migration"))
        goto fail;
    if (version < SS_SCHEMA_VERSION)
        s->api->log(s->ctx, CHATD_LOG_INFO, "schema of %s migrated from version %d to %d",
                    s->path, version, SS_SCHEMA_VERSION);
    return 1;
fail:
    sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    return 0;
}

static int ss_prepare_all(ss *s, sqlite3 *db, const char *const *sql, sqlite3_stmt **out, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &out[i], NULL);
        if (rc != SQLITE_OK) {
            s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot prepare \"%s\" on %s: %s (a bug)",
                        sql[i], s->path, sqlite3_errmsg(db));
            return 0;
        }
    }
    return 1;
}

static void ss_close_all(ss *s)
{
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(s->w[i]);
        s->w[i] = NULL;
    }
    for (int i = 0; i < R_COUNT; i++) {
        sqlite3_finalize(s->r[i]);
        s->r[i] = NULL;
    }
    if (s->rdb && sqlite3_close(s->rdb) != SQLITE_OK)
        s->api->log(s->ctx, CHATD_LOG_WARN, "closing the read connection: %s",
                    sqlite3_errmsg(s->rdb));
    if (s->wdb && sqlite3_close(s->wdb) != SQLITE_OK)
        s->api->log(s->ctx, CHATD_LOG_WARN, "closing the write connection: %s",
                    sqlite3_errmsg(s->wdb));
    s->rdb = s->wdb = NULL;
}

static chatd_status ss_start(void *inst)
{
    ss *s = inst;
    sqlite3_stmt *st = NULL;
    const char *mode = NULL;
    char sql[96];
    int rc, wal = 0;

    if (!ss_make_parent(s))
        return CHATD_ERR_IO;
    /* Start-up work (open, migrate) runs before the daemon serves anyone. */
    s->wdb = ss_open(s, "write");
    if (!s->wdb)
        return CHATD_ERR_IO;
    sqlite3_busy_timeout(s->wdb, (int)s->busy_ms);
    rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        mode = (const char *)sqlite3_column_text(st, 0);
        wal = mode && strcmp(mode, "wal") == 0;
    }
    sqlite3_finalize(st);
    if (!wal) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot switch %s to WAL mode (%s); put the database on a local "
                    "filesystem that supports shared memory",
                    s->path, sqlite3_errmsg(s->wdb));
        goto fail;
    }
    if (!ss_exec(s, s->wdb, "PRAGMA synchronous=FULL", "setting synchronous=FULL") ||
        !ss_migrate(s))
        goto fail;

    s->rdb = ss_open(s, "read");
    if (!s->rdb)
        goto fail;
    rc = (int)(s->busy_ms < SS_READER_BUSY_MAX_MS ? s->busy_ms : SS_READER_BUSY_MAX_MS);
    sqlite3_busy_timeout(s->rdb, rc);
    snprintf(sql, sizeof(sql), "PRAGMA query_only=ON");
    if (!ss_exec(s, s->rdb, sql, "making the read connection query-only"))
        goto fail;
    if (!ss_prepare_all(s, s->wdb, ss_wsql, s->w, W_COUNT) ||
        !ss_prepare_all(s, s->rdb, ss_rsql, s->r, R_COUNT))
        goto fail;

    s->quit = 0;
    rc = pthread_create(&s->thread, NULL, ss_writer_main, s);
    if (rc != 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot start the writer thread: %s",
                    strerror(rc));
        goto fail;
    }
    s->thread_running = 1;
    s->started = 1;
    s->api->log(s->ctx, CHATD_LOG_INFO,
                "opened %s (schema %d, WAL, synchronous=FULL, batch_max %lld, max_pending "
                "%lld)",
                s->path, SS_SCHEMA_VERSION, (long long)s->batch_max, (long long)s->max_pending);
    return CHATD_OK;
fail:
    ss_close_all(s);
    return CHATD_ERR_IO;
}

static chatd_status ss_stop(void *inst, chatd_completion *done)
{
    ss *s = inst;

    s->stopping = 1;
    ss_handoff(s); /* do not wait for the posted flush */
    if (s->pending == 0 && !s->flush_posted)
        return CHATD_OK;
    s->api->log(s->ctx, CHATD_LOG_INFO, "stopping: committing %lld pending writes",
                (long long)s->pending);
    s->stop_done = done;
    return CHATD_ASYNC;
}

static void ss_destroy(void *inst)
{
    ss *s = inst;
    ss_batch *b, *nb;
    ss_job *j, *nj;

    if (!s)
        return;
    ss_handoff(s);
    if (s->thread_running) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL); /* commits whatever is still queued */
        s->thread_running = 0;
    }
    /* Batches the loop no longer ran: report them now (loop thread). */
    for (b = s->orphans; b; b = nb) {
        nb = b->next;
        for (j = b->head; j; j = nj) {
            nj = j->next;
            ss_finish_job(s, j);
        }
        free(b);
    }
    s->orphans = NULL;
    /* Only when start failed or never ran can jobs remain queued. */
    for (j = s->wq_head; j; j = nj) {
        nj = j->next;
        j->status = CHATD_ERR_UNAVAILABLE;
        ss_finish_job(s, j);
    }
    ss_close_all(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s->path);
    free(s);
}

static const chatd_store_ops ss_ops = {
    .size = sizeof(chatd_store_ops),
    .persist = ss_persist,
    .member_create = ss_member_create,
    .member_get = ss_member_get,
    .member_list = ss_member_list,
    .session_put = ss_session_put,
    .session_get = ss_session_get,
    .session_del = ss_session_del,
    .room_list = ss_room_list,
    .history = ss_history,
};

static const chatd_plugin_desc ss_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-sqlite",
    .version = "1.0.0",
    .description = "SQLite store: WAL, group commit on a writer thread, versioned schema",
    .cfg_keys = ss_cfg_keys,
    .create = ss_create,
    .start = ss_start,
    .stop = ss_stop,
    .destroy = ss_destroy,
    .reload = NULL,
    .ops = &ss_ops,
};

CHATD_PLUGIN_DEFINE(ss_desc)
