/*
 * ss_reader.c - the reader thread of store-sqlite. The read hooks
 * (ss_reads.c) hand each read to it; it runs the query on its own
 * query-only connection (WAL lets it read committed data beside the writer
 * thread, and its busy timeout sleeps here, never on the loop) and posts the
 * answer back to the loop, where the caller's callback runs. At most
 * `max_pending_reads` reads wait or run at once (then CHATD_ERR_BUSY).
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <stdlib.h>
#include <time.h>

void ss_read_free(ss_read *r)
{
    for (size_t i = 0; i < r->rows.nstrs; i++)
        free(r->rows.strs[i]);
    free(r->rows.strs);
    free(r->rows.rows);
    free(r->msgs);
    free(r->key);
    free(r->ranges);
    free(r);
}

/* Posted by the reader thread: answer one read on the loop. */
static void ss_read_done(void *arg)
{
    ss_read *r = arg;
    ss *s = r->s;

    s->reads_pending--;
    ss_read_answer(r);
    ss_read_free(r);
}

/* Answer r with `status` now, without a query (loop thread). */
static void ss_read_refuse(ss_read *r, chatd_status status)
{
    r->status = status;
    ss_read_answer(r);
    ss_read_free(r);
}

void ss_read_submit(ss *s, ss_read *r)
{
    if (!s->reader_running) {
        ss_read_refuse(r, CHATD_ERR_UNAVAILABLE);
        return;
    }
    if (s->reads_pending >= s->max_pending_reads) {
        s->api->log(s->ctx, CHATD_LOG_DEBUG,
                    "%lld reads pending (max_pending_reads): refusing one with busy",
                    (long long)s->reads_pending);
        s->api->counter_add(s->ctx, "chatd_store_reads_refused_total", 1);
        ss_read_refuse(r, CHATD_ERR_BUSY);
        return;
    }
    r->s = s;
    r->next = NULL;
    s->reads_pending++;
    pthread_mutex_lock(&s->rmu);
    if (s->rq_tail)
        s->rq_tail->next = r;
    else
        s->rq_head = r;
    s->rq_tail = r;
    pthread_cond_signal(&s->rcv);
    pthread_mutex_unlock(&s->rmu);
}

void *ss_reader_main(void *arg)
{
    ss *s = arg;

    for (;;) {
        ss_read *r;
        int quit;

        pthread_mutex_lock(&s->rmu);
        while (!s->rq_head && !s->rquit)
            pthread_cond_wait(&s->rcv, &s->rmu);
        r = s->rq_head;
        quit = s->rquit;
        if (r) {
            s->rq_head = r->next;
            if (!s->rq_head) s->rq_tail = NULL;
            r->next = NULL;
        }
        pthread_mutex_unlock(&s->rmu);
        if (!r) break; /* quit, and nothing left */

        if (quit)
            r->status = CHATD_ERR_UNAVAILABLE; /* destroy: answer, do not query */
        else
            ss_read_run(s, r);
        for (;;) {
            chatd_status st = s->api->post(s->ctx, ss_read_done, r);
            if (st == CHATD_OK) break;
            if (st != CHATD_ERR_NOMEM) {
                /* the loop is gone: destroy answers it after the join */
                pthread_mutex_lock(&s->rmu);
                r->next = s->rorphans;
                s->rorphans = r;
                pthread_mutex_unlock(&s->rmu);
                break;
            }
            /* out of memory for the post: the answer waits, the loop goes on */
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

void ss_reader_join(ss *s)
{
    ss_read *r, *next;

    if (s->reader_running) {
        pthread_mutex_lock(&s->rmu);
        s->rquit = 1;
        pthread_cond_signal(&s->rcv);
        pthread_mutex_unlock(&s->rmu);
        pthread_join(s->reader, NULL);
        s->reader_running = 0;
    }
    /* Answers the loop no longer ran (loop thread). */
    for (r = s->rorphans; r; r = next) {
        next = r->next;
        s->reads_pending--;
        ss_read_answer(r);
        ss_read_free(r);
    }
    s->rorphans = NULL;
}
