/*
 * ss_ckpt.c - the WAL checkpoints of store-sqlite (SQLite's automatic ones
 * are off).
 *
 * Under load: once the WAL holds `checkpoint_pages` frames more than the
 * last checkpoint left, the writer thread asks the checkpoint thread, which
 * runs a PASSIVE checkpoint on a connection of its own while the writer
 * goes on committing (a checkpoint copies and syncs pages for milliseconds;
 * on the writer thread every write arriving meanwhile waited for it). Idle:
 * when no write has come for `checkpoint_idle_ms`, the writer thread, which
 * has nothing else to do, checkpoints itself, and at most every
 * `checkpoint_truncate_s` that one is a TRUNCATE (which never waits for a
 * reader) to give the WAL's disk space back. Two checkpoints at once are
 * fine: SQLite lets one of them return SQLITE_BUSY. Both connections run
 * with SQLite's synchronous=NORMAL, which syncs the WAL before a checkpoint
 * and the database after it.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <string.h>

/* Log a checkpoint's outcome (either thread). */
static void ss_ckpt_log(ss *s, sqlite3 *db, const char *mode, int rc, int log, int done, int64_t t0)
{
    if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "checkpointing the WAL failed on %s: %s (sqlite %d); check free disk space "
                    "and permissions",
                    s->path, sqlite3_errmsg(db), rc);
        return;
    }
    s->api->log(s->ctx, CHATD_LOG_DEBUG, "%s checkpoint: %d of %d WAL frames in %lld ms", mode,
                done, log, (long long)(pc_mono_ms() - t0));
}

/* Writer thread: take in what the checkpoint thread's last run found. */
static void ss_ckpt_collect(ss *s)
{
    pthread_mutex_lock(&s->cmu);
    if (s->ckpt_log >= 0) {
        /* count the threshold from the frames the checkpoint saw: copied, or
         * still needed by a reader; a restarted WAL resets it (wal hook) */
        if (s->ckpt_log <= s->wal_pages) s->wal_base = s->ckpt_log;
        s->ckpt_log = -1;
    }
    pthread_mutex_unlock(&s->cmu);
}

void ss_ckpt_after_batch(ss *s)
{
    ss_ckpt_collect(s);
    if (s->wal_pages - s->wal_base < s->ckpt_pages) return;
    pthread_mutex_lock(&s->cmu);
    if (!s->ckpt_req && !s->ckpt_busy) {
        s->ckpt_req = 1;
        pthread_cond_signal(&s->ccv);
    }
    pthread_mutex_unlock(&s->cmu);
}

void ss_ckpt_idle(ss *s)
{
    int mode = SQLITE_CHECKPOINT_PASSIVE, log = -1, done = -1, rc;
    int64_t t0 = pc_mono_ms();

    ss_ckpt_collect(s);
    if (s->ckpt_truncate_ms > 0 && t0 - s->ckpt_truncated_ms >= s->ckpt_truncate_ms) {
        mode = SQLITE_CHECKPOINT_TRUNCATE;
        s->ckpt_truncated_ms = t0;
        sqlite3_busy_timeout(s->wdb, 0); /* a reader in the way: PASSIVE's work only */
    }
    rc = sqlite3_wal_checkpoint_v2(s->wdb, NULL, mode, &log, &done);
    if (mode == SQLITE_CHECKPOINT_TRUNCATE) sqlite3_busy_timeout(s->wdb, (int)s->busy_ms);
    ss_ckpt_log(s, s->wdb, mode == SQLITE_CHECKPOINT_TRUNCATE ? "truncate" : "passive", rc, log,
                done, t0);
    /* Frames a reader still needs stay: count the threshold from them. */
    s->wal_base = log > done && done >= 0 ? log : 0;
    if (rc == SQLITE_OK && log >= 0 && done == log) s->wal_pages = 0;
}

static void *ss_ckpt_main(void *arg)
{
    ss *s = arg;

    pthread_mutex_lock(&s->cmu);
    for (;;) {
        while (!s->ckpt_req && !s->ckpt_quit)
            pthread_cond_wait(&s->ccv, &s->cmu);
        if (s->ckpt_quit) break;
        s->ckpt_req = 0;
        s->ckpt_busy = 1;
        pthread_mutex_unlock(&s->cmu);
        int log = -1, done = -1;
        int64_t t0 = pc_mono_ms();
        int rc = sqlite3_wal_checkpoint_v2(s->cdb, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        ss_ckpt_log(s, s->cdb, "passive", rc, log, done, t0);
        pthread_mutex_lock(&s->cmu);
        s->ckpt_busy = 0;
        if (rc == SQLITE_OK || rc == SQLITE_BUSY) s->ckpt_log = log;
    }
    pthread_mutex_unlock(&s->cmu);
    return NULL;
}

int ss_ckpt_start(ss *s, sqlite3 *db)
{
    int rc;

    s->ckpt_log = -1;
    if (pthread_mutex_init(&s->cmu, NULL) != 0) return 0;
    if (pthread_cond_init(&s->ccv, NULL) != 0) {
        pthread_mutex_destroy(&s->cmu);
        return 0;
    }
    s->cdb = db; /* closed with the others (ss_close_all) from now on */
    rc = pthread_create(&s->ckpt_thread, NULL, ss_ckpt_main, s);
    if (rc != 0) {
        s->cdb = NULL;
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot start the checkpoint thread: %s",
                    strerror(rc));
        pthread_cond_destroy(&s->ccv);
        pthread_mutex_destroy(&s->cmu);
        return 0;
    }
    s->ckpt_running = 1;
    return 1;
}

void ss_ckpt_stop(ss *s)
{
    if (!s->ckpt_running) return;
    pthread_mutex_lock(&s->cmu);
    s->ckpt_quit = 1;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
    pthread_join(s->ckpt_thread, NULL);
    pthread_cond_destroy(&s->ccv);
    pthread_mutex_destroy(&s->cmu);
    s->ckpt_running = 0;
}
