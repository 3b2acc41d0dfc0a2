/*
 * ss_sync.c - the sync stage of store-sqlite: makes each committed batch
 * durable before its results go back to the loop, without holding up the
 * writer thread.
 *
 * With `synchronous = full` (the default) the write connection runs with
 * SQLite's synchronous=NORMAL: a COMMIT writes its frames to the WAL and
 * returns without an fsync (SQLite still syncs the WAL before each
 * checkpoint, the database after it and the WAL header when the WAL is
 * reused, so the database stays consistent after a power loss). The writer
 * thread then hands the batch here (ss_sync_submit) and goes on with the
 * next one while SS_SYNC_THREADS threads fdatasync the WAL file: a sync
 * started after a batch's COMMIT returned covers it, so every batch up to
 * the newest one written when a sync started is durable once that sync
 * returns. Results are released in batch order (a later sync that finishes
 * first releases the earlier batches too, being a superset), so a persist
 * is still completed only after its message is on disk, exactly as with
 * SQLite's own synchronous=FULL, but a message that arrives during a sync
 * waits for its own sync only, not for the one in flight and then its own.
 *
 * With `synchronous = normal` the stage is skipped: a batch is released as
 * soon as its COMMIT returns. That survives a crash or SIGKILL of chatd (the
 * WAL is in the kernel's page cache), not a power loss or an operating
 * system crash, which can lose the last acknowledged messages.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Hand a finished batch to the loop, or keep it for destroy when the loop
 * no longer takes tasks. */
static void ss_sync_post(ss *s, ss_batch *b)
{
    if (s->api->post(s->ctx, ss_finish_batch, b) == CHATD_OK) return;
    pthread_mutex_lock(&s->mu);
    b->next = s->orphans;
    s->orphans = b;
    pthread_mutex_unlock(&s->mu);
}

/* Open the WAL file for the sync threads; 0 on failure, logged. */
static int ss_sync_open(ss *s)
{
    char *wal = malloc(strlen(s->path) + 5);
    int fd;

    if (!wal) return 0;
    sprintf(wal, "%s-wal", s->path);
    fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot open the WAL file %s to sync it: %s; check its permissions", wal,
                    strerror(errno));
        free(wal);
        return 0;
    }
    free(wal);
    s->wal_fd = fd;
    return 1;
}

/* fdatasync the WAL (sync thread, smu not held): 1 when durable. */
static int ss_sync_wal(ss *s)
{
    struct stat st;

    /* The WAL is only deleted when the last connection closes, and ours
     * stay open; should another program have removed it all the same, its
     * syncs would prove nothing: refuse rather than acknowledge. */
    if (fstat(s->wal_fd, &st) == 0 && st.st_nlink == 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "the WAL file of %s was removed while chatd runs; writes fail until chatd "
                    "is restarted (no other program may change its journal mode)",
                    s->path);
        return 0;
    }
    if (fdatasync(s->wal_fd) == 0) return 1;
    s->api->log(s->ctx, CHATD_LOG_ERROR,
                "fdatasync of the WAL of %s failed: %s; the writes it covered are failed (their "
                "senders retry); check the disk",
                s->path, strerror(errno));
    return 0;
}

/* A sync up to `seq` failed: every batch it covers that is not released yet
 * reports its writes as failed (smu held). */
static void ss_sync_fail(ss *s, uint64_t seq)
{
    for (ss_batch *b = s->sq_head; b && b->seq <= seq; b = b->next) {
        b->committed = 0;
        for (ss_job *j = b->head; j; j = j->next)
            if (j->status == CHATD_OK) j->status = CHATD_ERR_IO;
    }
}

static void *ss_sync_main(void *arg)
{
    ss *s = arg;

    pthread_mutex_lock(&s->smu);
    for (;;) {
        while (s->written_seq == s->started_seq && !s->squit)
            pthread_cond_wait(&s->scv, &s->smu);
        if (s->written_seq == s->started_seq) break; /* quit, nothing left to sync */
        uint64_t seq = s->written_seq;
        s->started_seq = seq;
        pthread_mutex_unlock(&s->smu);
        int ok = ss_sync_wal(s);
        pthread_mutex_lock(&s->smu);
        if (!ok) ss_sync_fail(s, seq);
        if (seq > s->durable_seq) s->durable_seq = seq;
        /* in order, under smu: the loop runs them in the order posted */
        while (s->sq_head && s->sq_head->seq <= s->durable_seq) {
            ss_batch *b = s->sq_head;
            s->sq_head = b->next;
            if (!s->sq_head) s->sq_tail = NULL;
            b->next = NULL;
            ss_sync_post(s, b);
        }
    }
    pthread_mutex_unlock(&s->smu);
    return NULL;
}

void ss_sync_submit(ss *s, ss_batch *b)
{
    if (!s->sync_full) {
        ss_sync_post(s, b);
        return;
    }
    pthread_mutex_lock(&s->smu);
    b->seq = ++s->written_seq;
    b->next = NULL;
    if (s->sq_tail)
        s->sq_tail->next = b;
    else
        s->sq_head = b;
    s->sq_tail = b;
    pthread_cond_signal(&s->scv);
    pthread_mutex_unlock(&s->smu);
}

int ss_sync_start(ss *s)
{
    int rc;

    s->wal_fd = -1;
    s->sync_started = 1;
    if (!s->sync_full) return 1;
    if (!ss_sync_open(s)) return 0;
    if (pthread_mutex_init(&s->smu, NULL) != 0) goto fail_fd;
    if (pthread_cond_init(&s->scv, NULL) != 0) {
        pthread_mutex_destroy(&s->smu);
        goto fail_fd;
    }
    s->sync_inited = 1;
    for (int i = 0; i < SS_SYNC_THREADS; i++) {
        rc = pthread_create(&s->syncer[i], NULL, ss_sync_main, s);
        if (rc != 0) {
            s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot start a sync thread: %s", strerror(rc));
            return 0; /* ss_sync_stop joins those that started */
        }
        s->nsyncers++;
    }
    return 1;
fail_fd:
    s->api->log(s->ctx, CHATD_LOG_ERROR, "out of memory starting the sync threads");
    close(s->wal_fd);
    s->wal_fd = -1;
    return 0;
}

void ss_sync_stop(ss *s)
{
    if (s->sync_inited) {
        pthread_mutex_lock(&s->smu);
        s->squit = 1;
        pthread_cond_broadcast(&s->scv);
        pthread_mutex_unlock(&s->smu);
        for (int i = 0; i < s->nsyncers; i++)
            pthread_join(s->syncer[i], NULL); /* each syncs what is left, then ends */
        s->nsyncers = 0;
        /* no thread ran (start failed half-way): release what was written */
        while (s->sq_head) {
            ss_batch *b = s->sq_head;
            ss_sync_fail(s, b->seq);
            s->sq_head = b->next;
            b->next = NULL;
            ss_sync_post(s, b);
        }
        s->sq_tail = NULL;
        pthread_cond_destroy(&s->scv);
        pthread_mutex_destroy(&s->smu);
        s->sync_inited = 0;
    }
    if (s->sync_started && s->wal_fd >= 0) close(s->wal_fd);
    s->wal_fd = -1;
    s->sync_started = 0;
}
