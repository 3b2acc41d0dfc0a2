/*
 * core/post.c - the thread-safe "run this on the loop" queue behind
 * chatd_api.post(): a mutex-protected FIFO and a wake-up pipe the loop
 * watches. A poster holds the mutex only to append (and, when the queue was
 * not yet signalled, to write one byte): it never takes libevent's base lock,
 * so a worker thread that is descheduled while posting cannot hold up the
 * loop, and a stream of answers costs one wake-up per loop turn, not one per
 * answer.
 */
#include "config.h"

#include "core.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

struct post_task {
    post_task *next;
    chatd_task_fn fn;
    void *arg;
};

/* Take the whole list under the lock, run it outside. */
static void post_run(post_queue *q)
{
    for (;;) {
        char drain[64];
        while (read(q->fds[0], drain, sizeof(drain)) > 0)
            ;
        pthread_mutex_lock(&q->mu);
        post_task *t = q->head;
        q->head = q->tail = NULL;
        q->signalled = false; /* the next post writes a byte again */
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

static int nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 &&
           fcntl(fd, F_SETFD, FD_CLOEXEC) == 0;
}

int post_init(post_queue *q, struct event_base *base)
{
    q->head = q->tail = NULL;
    q->closed = false;
    q->signalled = false;
    q->ev = NULL;
    if (pipe(q->fds) != 0) return -1;
    if (!nonblocking(q->fds[0]) || !nonblocking(q->fds[1]) ||
        pthread_mutex_init(&q->mu, NULL) != 0) {
        close(q->fds[0]);
        close(q->fds[1]);
        return -1;
    }
    q->ev = event_new(base, q->fds[0], EV_READ | EV_PERSIST, post_cb, q);
    if (!q->ev || event_add(q->ev, NULL) != 0) {
        if (q->ev) event_free(q->ev);
        q->ev = NULL;
        pthread_mutex_destroy(&q->mu);
        close(q->fds[0]);
        close(q->fds[1]);
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
    /* one byte per batch of tasks, written under the lock so that close/free
     * cannot race with us; a full pipe already wakes the loop */
    if (!q->signalled) {
        q->signalled = true;
        while (write(q->fds[1], "", 1) < 0 && errno == EINTR)
            ;
    }
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
    close(q->fds[0]);
    close(q->fds[1]);
}
