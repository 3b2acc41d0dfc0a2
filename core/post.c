/*
 * core/post.c - the thread-safe "run this on the loop" queue behind
 * chatd_api.post(): a mutex-protected FIFO and one libevent event that any
 * thread activates (libevent is set up with evthread_use_pthreads, which
 * makes event_active safe from other threads).
 */
#include "config.h"

#include "core.h"

#include <event2/event.h>
#include <stdlib.h>

struct post_task {
    post_task *next;
    chatd_task_fn fn;
    void *arg;
};

/* Take the whole list under the lock, run it outside. */
static void post_run(post_queue *q)
{
    for (;;) {
        pthread_mutex_lock(&q->mu);
        post_task *t = q->head;
        q->head = q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        if (!t) return;
        while (t) {
            post_task *next = t->next;
            t->fn(t->arg);
            free(t);
            t = next;
        }
    }
}

static void post_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    post_run(arg);
}

int post_init(post_queue *q, struct event_base *base)
{
    q->head = q->tail = NULL;
    q->closed = false;
    if (pthread_mutex_init(&q->mu, NULL) != 0) return -1;
    q->ev = event_new(base, -1, 0, post_cb, q);
    if (!q->ev) {
        pthread_mutex_destroy(&q->mu);
        return -1;
    }
    return 0;
}

chatd_status post_add(post_queue *q, chatd_task_fn fn, void *arg)
{
    if (!fn) return CHATD_ERR_INVALID;
    post_task *t = malloc(sizeof(*t));
    if (!t) return CHATD_ERR_NOMEM;
    t->next = NULL;
    t->fn = fn;
    t->arg = arg;
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        free(t);
        return CHATD_ERR_UNAVAILABLE;
    }
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
    /* activate under the lock so close/free cannot race with us */
    event_active(q->ev, EV_READ, 0);
    pthread_mutex_unlock(&q->mu);
    return CHATD_OK;
}

void post_close(post_queue *q)
{
    post_run(q);
    pthread_mutex_lock(&q->mu);
    q->closed = true;
    pthread_mutex_unlock(&q->mu);
    post_run(q);
}

void post_free(post_queue *q)
{
    if (!q->ev) return;
    post_close(q);
    event_free(q->ev);
    q->ev = NULL;
    pthread_mutex_destroy(&q->mu);
}
