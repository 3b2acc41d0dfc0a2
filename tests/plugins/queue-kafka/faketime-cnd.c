/*
 * faketime-cnd.c - test helper, preloaded before libfaketime on the nodes
 * whose clocks the Kafka tests skew: libfaketime fakes timespec_get() but
 * not C11 cnd_timedwait(), which librdkafka waits with, so under a clock set
 * back every librdkafka timed wait ended at once (committed-offset reads
 * failing, the group join and its threads spinning) and under a clock set
 * forward it lasted longer. This cnd_timedwait waits through
 * pthread_cond_timedwait, which libfaketime translates (glibc's cnd_t and
 * mtx_t are its pthread_cond_t and pthread_mutex_t).
 *   cc -shared -fPIC -o faketime-cnd.so faketime-cnd.c -lpthread
 */
#include <errno.h>
#include <pthread.h>
#include <threads.h>
#include <time.h>

int cnd_timedwait(cnd_t *restrict cond, mtx_t *restrict mtx, const struct timespec *restrict ts)
{
    int rc = pthread_cond_timedwait((pthread_cond_t *)cond, (pthread_mutex_t *)mtx, ts);
    return rc == 0 ? thrd_success : rc == ETIMEDOUT ? thrd_timedout : thrd_error;
}
