/*
 * ss_commit.c - the writer thread of store-sqlite: its statements, each
 * write job run inside a batch's transaction, the group commit and the WAL
 * checkpoints.
 *
 * The thread takes up to `batch_max` jobs handed over by the loop
 * (ss_handoff, ss_writer.c) and commits them in ONE transaction on its own
 * connection with WAL and SQLite's synchronous=NORMAL (group commit: a CHAT
 * message is one INSERT, any other job gets a savepoint so that a refused
 * job leaves the rest intact; the room summaries are written once per room
 * and batch, ss_rooms.c). The finished batch goes to the sync stage
 * (ss_sync.c), which fdatasyncs the WAL while this thread writes the next
 * batch and then posts it back to the loop (ss_finish_batch): a completed
 * persist survives a power loss and no fsync runs on the loop.
 *
 * Checkpoints are never inside a commit (wal_autocheckpoint is off): under
 * load they run on the checkpoint thread, when idle on this one (ss_ckpt.c);
 * a receipt needs only the sync of the WAL that covers its commit.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *const ss_wsql[W_COUNT] = {
    [W_BEGIN] = "BEGIN IMMEDIATE",
    [W_COMMIT] = "COMMIT",
    [W_ROLLBACK] = "ROLLBACK",
    [W_SAVEPOINT] = "SAVEPOINT job",
    [W_RELEASE] = "RELEASE job",
    [W_ROLLBACK_TO] = "ROLLBACK TO job",
    [W_MSG_INSERT] = "INSERT OR IGNORE INTO messages(id, room_id, writer_id, writer, text, time_ms,"
                     " pos) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    /* a row when the stored message of that id is this one */
    [W_MSG_SAME] = "SELECT 1 FROM messages WHERE id = ?1 AND room_id = ?2 AND writer_id = ?3"
                   " AND writer = ?4 AND text = ?5 AND time_ms = ?6",
    /* one member's summary of a room after a batch (ss_rooms.c): ?4-?7 the
     * batch's newest message in the room; ?8, ?9 the member's own newest
     * (0, 0: they wrote none), after which everything is read and unread is
     * recounted; else ?10 more unread */
    [W_ROOM_SUM] =
        "INSERT INTO rooms(member_id, room_id, peer_id, last_msg_id, last_message, last_ms,"
        " unread, last_read_id, last_pos, last_read_pos)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?9 > 0 THEN (SELECT count(*) FROM messages m"
        "   WHERE m.room_id = ?2 AND m.writer_id = ?3 AND m.pos > ?9) ELSE ?10 END, ?8, ?7, ?9)"
        " ON CONFLICT(member_id, room_id) DO UPDATE SET"
        " last_message = CASE WHEN excluded.last_pos > rooms.last_pos"
        "   THEN excluded.last_message ELSE rooms.last_message END,"
        " last_ms = CASE WHEN excluded.last_pos > rooms.last_pos"
        "   THEN excluded.last_ms ELSE rooms.last_ms END,"
        " last_msg_id = CASE WHEN excluded.last_pos > rooms.last_pos"
        "   THEN excluded.last_msg_id ELSE rooms.last_msg_id END,"
        " last_pos = max(rooms.last_pos, excluded.last_pos),"
        " last_read_id = CASE WHEN excluded.last_read_pos > rooms.last_read_pos"
        "   THEN excluded.last_read_id ELSE rooms.last_read_id END,"
        " last_read_pos = max(rooms.last_read_pos, excluded.last_read_pos),"
        " unread = CASE WHEN excluded.last_read_pos > 0 THEN (SELECT count(*) FROM messages m"
        "   WHERE m.room_id = excluded.room_id AND m.writer_id = excluded.peer_id"
        "   AND m.pos > max(rooms.last_read_pos, excluded.last_read_pos))"
        "   ELSE rooms.unread + ?10 END",
    [W_ROOM_MARK] = "SELECT last_read_pos FROM rooms WHERE member_id = ?1 AND room_id = ?2",
    /* read mark: the position of message up_to (?3) in the room, max
     * semantics, unread recounted from the peer's messages after it; a mark
     * naming a message the store does not hold changes nothing */
    [W_ROOM_READ] =
        "UPDATE rooms SET"
        " last_read_id = CASE WHEN p.pos > rooms.last_read_pos THEN ?3 ELSE last_read_id END,"
        " last_read_pos = max(last_read_pos, p.pos),"
        " unread = (SELECT count(*) FROM messages m WHERE m.room_id = rooms.room_id"
        "   AND m.writer_id = rooms.peer_id AND m.pos > max(rooms.last_read_pos, p.pos))"
        " FROM (SELECT pos FROM messages WHERE id = ?3 AND room_id = ?2) AS p"
        " WHERE member_id = ?1 AND room_id = ?2",
    [W_MEMBER_INSERT] = "INSERT INTO members(login_id, name, pw_hash, created_ms)"
                        " VALUES(?1, ?2, ?3, ?4)",
    [W_SESSION_PUT] = "INSERT OR REPLACE INTO sessions(token_hash, member_id, expires_ms)"
                      " VALUES(?1, ?2, ?3)",
    [W_SESSION_DEL] = "DELETE FROM sessions WHERE token_hash = ?1",
    /* the first message of (writer, key) owns it; an expired owner is replaced */
    [W_IDEM_CLAIM] = "INSERT INTO idempotency(member_id, idem_key, msg_id, time_ms)"
                     " VALUES(?1, ?2, ?3, ?4) ON CONFLICT(member_id, idem_key) DO UPDATE SET"
                     " msg_id = excluded.msg_id, time_ms = excluded.time_ms"
                     " WHERE idempotency.time_ms < ?5",
    [W_IDEM_OWNER] = "SELECT msg_id FROM idempotency WHERE member_id = ?1 AND idem_key = ?2",
    [W_IDEM_PURGE] = "DELETE FROM idempotency WHERE time_ms < ?1",
    [W_READ_INSERT] = "INSERT OR IGNORE INTO reads(id, member_id, writer, room_id, up_to, time_ms,"
                      " pos) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    [W_SESSION_PURGE] = "DELETE FROM sessions WHERE expires_ms <= ?1",
    [W_DEAD_LETTER] = "INSERT INTO dead_letters(source, payload, reason, time_ms)"
                      " VALUES(?1, ?2, ?3, ?4)",
    [W_NODE_GET] = "SELECT holder, expires_ms, high_water_ms FROM nodes WHERE node_id = ?1",
    [W_NODE_LIST] = "SELECT node_id, holder, expires_ms FROM nodes ORDER BY node_id",
    [W_NODE_PUT] = "INSERT OR REPLACE INTO nodes(node_id, holder, expires_ms, high_water_ms)"
                   " VALUES(?1, ?2, ?3, ?4)",
};

/* Once a minute (writer thread): forget keys older than the window. */
#define SS_IDEM_PURGE_EVERY_MS 60000

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

void ss_wlog(ss *s, const char *what, int rc)
{
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "%s failed on %s: %s (sqlite %d); check free disk space, permissions and "
                "that no other program holds the database",
                what, s->path, sqlite3_errmsg(s->wdb), rc);
}

/* Step write statement `which` to its end: CHATD_OK, or CHATD_ERR_IO logged
 * as failing `what`. */
static chatd_status ss_wdone(ss *s, int which, const char *what)
{
    int rc = ss_wstep(s, which);
    if (rc == SQLITE_DONE) return CHATD_OK;
    ss_wlog(s, what, rc);
    return CHATD_ERR_IO;
}

/* Claim (writer, key) for message j; *dup when another message owns it. */
static chatd_status ss_idem_claim(ss *s, ss_job *j, int *dup)
{
    sqlite3_stmt *st = s->w[W_IDEM_CLAIM];
    int rc;

    if (j->time_ms - s->idem_purged_ms >= SS_IDEM_PURGE_EVERY_MS) {
        sqlite3_bind_int64(s->w[W_IDEM_PURGE], 1, j->time_ms - s->idem_window_ms);
        rc = ss_wstep(s, W_IDEM_PURGE);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "forgetting expired idempotency keys", rc);
            return CHATD_ERR_IO;
        }
        s->idem_purged_ms = j->time_ms;
    }
    sqlite3_bind_int64(st, 1, j->writer_id);
    sqlite3_bind_text(st, 2, j->idem_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->id);
    sqlite3_bind_int64(st, 4, j->time_ms);
    sqlite3_bind_int64(st, 5, j->time_ms - s->idem_window_ms);
    rc = ss_wstep(s, W_IDEM_CLAIM);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "recording an idempotency key", rc);
        return CHATD_ERR_IO;
    }
    st = s->w[W_IDEM_OWNER];
    sqlite3_bind_int64(st, 1, j->writer_id);
    sqlite3_bind_text(st, 2, j->idem_key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *dup = rc == SQLITE_ROW && sqlite3_column_int64(st, 0) != j->id;
    if (rc == SQLITE_ROW) rc = SQLITE_DONE;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "reading an idempotency key", rc);
        return CHATD_ERR_IO;
    }
    return CHATD_OK;
}

/* Bind ?1..?6 of W_MSG_INSERT / W_MSG_SAME (and the insert's position ?7) to the message of j. */
static void ss_bind_msg(sqlite3_stmt *st, const ss_job *j)
{
    sqlite3_bind_int64(st, 1, j->id);
    sqlite3_bind_text(st, 2, j->room, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->writer_id);
    sqlite3_bind_text(st, 4, j->writer, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, j->text, (int)j->text_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, j->time_ms);
    if (sqlite3_bind_parameter_count(st) >= 7) sqlite3_bind_int64(st, 7, j->pos); /* insert */
}

/* The id of j is stored already: a redelivery of the same message is fine,
 * another message with that id (two nodes with one node_id, a clock that
 * went back) is refused, never acknowledged as if it were stored. */
static chatd_status ss_check_same(ss *s, ss_job *j)
{
    sqlite3_stmt *st = s->w[W_MSG_SAME];
    int rc;

    ss_bind_msg(st, j);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc == SQLITE_ROW) return CHATD_OK;
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "comparing a redelivered message", rc);
        return CHATD_ERR_IO;
    }
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "message id %lld (room %s, writer %lld) is already stored with different "
                "content: refused; two nodes share a node_id or a node's clock went back "
                "(give each node its own node_id)",
                (long long)j->id, j->room, (long long)j->writer_id);
    return CHATD_ERR_EXISTS;
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
        st = s->w[W_READ_INSERT]; /* the event itself, replayed on the side stream */
        sqlite3_bind_int64(st, 1, j->id);
        sqlite3_bind_int64(st, 2, j->writer_id);
        sqlite3_bind_text(st, 3, j->writer, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, j->room, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, j->up_to);
        sqlite3_bind_int64(st, 6, j->time_ms);
        sqlite3_bind_int64(st, 7, j->pos);
        return ss_wdone(s, W_READ_INSERT, "recording a read event");
    }

    if (j->idem_key) {
        int dup = 0;
        chatd_status ist = ss_idem_claim(s, j, &dup);
        if (ist != CHATD_OK) return ist;
        if (dup) return CHATD_OK; /* another message owns the key: store nothing */
    }

    ss_bind_msg(s->w[W_MSG_INSERT], j);
    rc = ss_wstep(s, W_MSG_INSERT);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "inserting a message", rc);
        return CHATD_ERR_IO;
    }
    if (sqlite3_changes(s->wdb) == 0) return ss_check_same(s, j); /* a redelivery changes nothing */
    j->inserted = 1; /* its room summaries: once per room, with the batch (ss_rooms.c) */
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
        if (rc == SQLITE_CONSTRAINT) return CHATD_ERR_EXISTS;
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
        return ss_wdone(s, W_SESSION_PUT, "storing a session");
    case JOB_SESSION_DEL:
        st = s->w[W_SESSION_DEL];
        sqlite3_bind_text(st, 1, j->token_hash, -1, SQLITE_STATIC);
        return ss_wdone(s, W_SESSION_DEL, "deleting a session");
    case JOB_SESSION_PURGE:
        sqlite3_bind_int64(s->w[W_SESSION_PURGE], 1, j->expires_ms);
        rc = ss_wstep(s, W_SESSION_PURGE);
        if (rc != SQLITE_DONE) {
            ss_wlog(s, "deleting expired sessions", rc);
            return CHATD_ERR_IO;
        }
        j->member_id = sqlite3_changes(s->wdb); /* the count, for purge_cb */
        return CHATD_OK;
    case JOB_DEAD_LETTER:
        st = s->w[W_DEAD_LETTER];
        sqlite3_bind_text(st, 1, j->source, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, j->payload ? j->payload : "", (int)j->payload_len, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, j->reason, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, j->created_ms);
        return ss_wdone(s, W_DEAD_LETTER, "keeping a dead letter");
    case JOB_NODE_CLAIM:
        return ss_run_node_claim(s, j);
    }
    return CHATD_ERR_INTERNAL;
}

/* The batch failed as a whole: undo it, every job gets CHATD_ERR_IO. */
static int ss_fail_batch(ss *s, ss_job *head)
{
    if (!sqlite3_get_autocommit(s->wdb)) ss_wstep(s, W_ROLLBACK);
    ss_rooms_drop(s);
    for (ss_job *j = head; j; j = j->next)
        j->status = CHATD_ERR_IO;
    return 0;
}

/* Run job j inside the batch's transaction. A CHAT message without an
 * idempotency key is one statement, atomic by itself; any other job gets a
 * savepoint, so that a refused job (e.g. login id taken) leaves the rest of
 * the batch intact and itself fully undone. */
static void ss_run_in_batch(ss *s, ss_job *j)
{
    j->inserted = j->in_rooms = 0;
    if (j->kind == JOB_PERSIST && j->mkind == CHATD_MSG_CHAT && !j->idem_key) {
        j->status = ss_run_persist(s, j);
        return;
    }
    int rc = ss_wstep(s, W_SAVEPOINT);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "opening a savepoint", rc);
        j->status = CHATD_ERR_IO;
        return;
    }
    j->status = ss_run_job(s, j);
    if (j->status != CHATD_OK && !sqlite3_get_autocommit(s->wdb)) ss_wstep(s, W_ROLLBACK_TO);
    if (!sqlite3_get_autocommit(s->wdb)) ss_wstep(s, W_RELEASE);
}

/* Commit a list of jobs in one transaction; each job gets its status. */
static int ss_commit_batch(ss *s, ss_job *head)
{
    ss_job *j;
    int rc;

    rc = ss_wstep(s, W_BEGIN);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "starting a transaction", rc);
        return ss_fail_batch(s, head);
    }
    for (j = head; j; j = j->next) {
        /* a read mark recounts from the summaries of the messages before it */
        if (j->kind == JOB_PERSIST && j->mkind == CHATD_MSG_READ && !ss_rooms_flush(s))
            return ss_fail_batch(s, head);
        ss_run_in_batch(s, j);
        if (j->status == CHATD_OK && j->inserted && !ss_rooms_add(s, j) &&
            (!ss_rooms_flush(s) || !ss_rooms_add(s, j))) {
            s->api->log(s->ctx, CHATD_LOG_ERROR,
                        "out of memory gathering the room summaries of a batch; the batch is "
                        "failed and will be retried by its senders");
            return ss_fail_batch(s, head);
        }
        if (sqlite3_get_autocommit(s->wdb)) {
            /* SQLite rolled the whole transaction back (disk full, I/O). */
            s->api->log(s->ctx, CHATD_LOG_ERROR,
                        "transaction on %s was rolled back: %s; the batch is failed and "
                        "will be retried by its senders",
                        s->path, sqlite3_errmsg(s->wdb));
            return ss_fail_batch(s, head);
        }
    }
    if (!ss_rooms_flush(s)) return ss_fail_batch(s, head);
    rc = ss_wstep(s, W_COMMIT);
    if (rc != SQLITE_DONE) {
        ss_wlog(s, "committing a batch", rc);
        return ss_fail_batch(s, head);
    }
    return 1;
}

int ss_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    ss *s = arg;
    (void)db;
    (void)name;
    s->wal_pages = pages;
    if (pages < s->wal_base) s->wal_base = 0; /* the WAL was restarted */
    return SQLITE_OK;
}

/* Wait for work (s->mu held); 0 when the idle wait ended with none. */
static int ss_writer_wait(ss *s)
{
    while (!s->wq_head && !s->quit) {
        struct timespec ts;
        if (s->wal_pages == 0) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t)(s->ckpt_idle_ms / 1000);
        ts.tv_nsec += (long)(s->ckpt_idle_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) != 0 && !s->wq_head && !s->quit) return 0;
    }
    return 1;
}

void *ss_writer_main(void *arg)
{
    ss *s = arg;

    for (;;) {
        ss_job *head, *tail, *j;
        ss_batch *b;
        size_t n = 0, np = 0;
        int64_t t0;

        pthread_mutex_lock(&s->mu);
        if (!ss_writer_wait(s)) {
            pthread_mutex_unlock(&s->mu);
            ss_ckpt_idle(s); /* ss_ckpt.c */
            continue;
        }
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
        if (!s->wq_head) s->wq_tail = NULL;
        tail->next = NULL;
        pthread_mutex_unlock(&s->mu);

        for (j = head; j; j = j->next)
            np += j->kind == JOB_PERSIST;
        t0 = pc_mono_ms();
        b = calloc(1, sizeof(*b));
        if (!b) {
            /* Cannot report without memory: keep the jobs queued and retry. */
            s->api->log(s->ctx, CHATD_LOG_ERROR, "out of memory in the writer; retrying");
            pthread_mutex_lock(&s->mu);
            tail->next = s->wq_head;
            s->wq_head = head;
            if (!s->wq_tail) s->wq_tail = tail;
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
        s->api->log(s->ctx, CHATD_LOG_DEBUG, "batch of %zu writes (%zu messages) %s in %lld ms", n,
                    np, b->committed ? "committed" : "failed", (long long)(pc_mono_ms() - t0));
        ss_sync_submit(s, b); /* back to the loop once durable (ss_sync.c) */
        /* on the checkpoint thread, never inside the commit (ss_ckpt.c) */
        ss_ckpt_after_batch(s);
    }
    ss_rooms_free(&s->rooms);
    return NULL;
}
