/*
 * qk.h - internal declarations shared by the files of the queue-kafka
 * plugin: the instance, its three librdkafka clients, the persist
 * consumer's partition tracker, the watermark holds, and what each file
 * offers the others:
 *   queue_kafka.c    config, the producer (enqueue, delivery reports),
 *                    create/start, graceful stop, destroy, descriptor
 *   qk_gate.c        the persisted watermark gate and the committed-offsets
 *                    worker thread
 *   qk_partitions.c  the persist consumer's partition tracker (ordered offset
 *                    store, retries, backpressure), fan-out, rebalance
 *   qk_binding.c     librdkafka bound to the core's libevent loop (queue
 *                    pipes, polls, keepalive), librdkafka's log callbacks,
 *                    and the closer thread of the graceful stop
 *   qk_topic_check.c the topic's replication, checked at start
 * Not installed; not part of the ABI.
 */
#ifndef QK_H
#define QK_H

#include <chatd/plugin.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <librdkafka/rdkafka.h>

#include "../common/plugin_common.h"

#define QK_POLL_BATCH 256        /* events served per loop callback */
#define QK_MAX_PARTITIONS 100000 /* bound on the partition tracker table */
#define QK_RETRY_MIN_MS 200      /* first persist retry delay */
#define QK_RETRY_MAX_MS 5000     /* largest persist retry delay */
#define QK_STOP_TICK_MS 20
#define QK_CQ_RETRY_MS 1000  /* a failed committed-offsets lookup is asked again after */
#define QK_CQ_WARN_MS 10000  /* failed lookups are logged at most this often */
#define QK_CQ_LOST_MS 6000   /* a read unanswered this long (the worker waits 5 s) is asked again */
#define QK_FANOUT_TAIL 10000 /* fan-out starts this far before the end */

/* A message's position (chatd_api.msg_pos) is where Kafka put it: bit 62
 * set (above every id, so rows stored before positions existed, whose
 * position is their id, stay first), the partition in bits 48-61, the offset
 * in bits 0-47. A room is always on one partition (key = roomId), so its
 * positions increase in offset order on every node. */
#define QK_POS_FLAG (UINT64_C(1) << 62)
#define QK_POS_PARTITIONS (1 << 14)
#define QK_POS_OFFSETS (INT64_C(1) << 48)

enum qk_role { QK_PRODUCER = 0, QK_PERSIST = 1, QK_FANOUT = 2, QK_NROLES = 3 };
extern const char *const qk_role_name[QK_NROLES]; /* for log lines */

enum qk_state { QK_CREATED, QK_RUNNING, QK_STOPPING, QK_STOPPED };
enum qk_stop_phase { QK_STOP_FLUSH, QK_STOP_PERSIST, QK_STOP_CLOSE };

struct qk;

/* One librdkafka handle and the pipe that wakes the loop for its queue. */
struct qk_client {
    struct qk *qk;
    enum qk_role role;
    rd_kafka_conf_t *conf; /* until rd_kafka_new takes it */
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    int fds[2];
    struct event *ev;
    struct event *keepalive; /* consumers: poll even when idle */
    int polling;             /* the loop serves this client's queue */
};

struct qk_track;

/* One consumed message of the persist consumer, in partition order. */
struct qk_entry {
    TAILQ_ENTRY(qk_entry) link;
    struct qk_track *track;
    int64_t offset;
    chatd_msg *msg; /* held until persisted */
    struct event *retry;
    int backoff_ms;
    int done;     /* persisted, or kept as a dead letter */
    int awaiting; /* a consume() or dead_letter() call is outstanding */
    int attempts; /* persists that failed */
    char *dead;   /* the reason, once it is being dead-lettered */
    void *raw;    /* a record that is no chatd message: its bytes */
    size_t raw_len;
};
TAILQ_HEAD(qk_entry_list, qk_entry);

/* Per-partition ordering of the persist consumer's offsets. */
struct qk_track {
    struct qk *qk;
    int32_t partition;
    int revoked;    /* no longer ours: finish entries, store nothing */
    uint64_t gen;   /* assignment generation that created it */
    int64_t base;   /* group's committed offset at assignment, -1 unknown */
    int64_t stored; /* offset after the last persisted message, -1 none */
    struct qk_entry_list entries;
};

/* Something waiting for the persisted watermark of its partition: a
 * fan-out delivery (msg) or a sender's completion (done). */
struct qk_held {
    TAILQ_ENTRY(qk_held) link;
    int64_t offset;
    int64_t since_ms;
    chatd_msg *msg;
    chatd_completion *done;
};
TAILQ_HEAD(qk_held_list, qk_held);

/* Per partition, beside its held list: the fan-out deliveries held (the
 * fan-out consumer pauses the partition past max_inflight of them), the
 * RECEIPTs held (so that a release stops scanning once none is left), when
 * an overdue hold was last logged, and the late releases not yet logged (at
 * most one line per gate_timeout each: after a stall every completion
 * releases a few). */
struct qk_held_part {
    int64_t msgs;
    int64_t receipts;
    int64_t warned_ms;
    int64_t late_logged_ms, late_receipts;      /* RECEIPTs answered without the store */
    int64_t overdue_logged_ms, overdue, waited; /* deliveries released past gate_timeout */
    int paused;
};

/* A request to the committed-offsets worker. */
struct qk_cq {
    struct qk *qk;
    uint64_t gen;
    rd_kafka_topic_partition_list_t *parts;
    rd_kafka_resp_err_t err;
    int64_t took_ms; /* how long rd_kafka_committed blocked */
};

/* One produce waiting for its delivery report. */
struct qk_send {
    struct qk *qk;
    chatd_completion *done;
    chatd_msg *msg;      /* a reference: given its position on delivery */
    chatd_status status; /* for a failure reported through post() */
    char reason[160];
};

struct qk {
    const chatd_api *api;
    chatd_ctx *ctx;
    struct event_base *base;
    enum qk_state state;

    /* config */
    const char *topic;
    const char *group;
    char fanout_group[96];
    int persist;
    int fanout;
    int64_t max_inflight;
    int64_t stop_timeout_ms;
    int64_t fanout_lookback_ms;
    int fanout_by_clock; /* fanout_start = clock: no store heads */
    int64_t start_ms;

    struct qk_client cl[QK_NROLES];
    rd_kafka_topic_t *rkt;

    /* producer */
    int64_t produce_pending;

    /* persist consumer */
    struct qk_track **tracks;
    int32_t ntracks;
    int64_t inflight; /* consumed, not yet persisted */
    int64_t nentries; /* consumed, offset not yet stored (bounded by max_inflight) */
    int64_t max_persist_attempts;
    int64_t awaiting; /* consume() calls outstanding */
    int paused;

    /* persisted-watermark holds, one list per partition */
    struct qk_held_list *held;
    struct qk_held_part *held_part; /* nheld_parts of them too */
    int32_t nheld_parts;
    int64_t nheld;
    int64_t gate_timeout_ms; /* a held fan-out is overdue (logged), a held RECEIPT answered */
    /* the persist group's committed offset of each partition, as last read
     * (-1 unknown): the watermark of the partitions other nodes persist */
    int64_t *committed;
    int32_t ncommitted;
    int64_t remote_poll_ms; /* how often it is read while fan-out waits on it */
    struct event *remote_poll;
    int64_t remote_asked_ms;     /* when the outstanding read was asked for, 0: none */
    int64_t cq_warned_ms;        /* the last failed read that was logged */
    int64_t min_insync_replicas; /* the replication the topic must have */
    int64_t check_timeout_ms;    /* the start-up topic check waits this long */
    int assigned_once;           /* the persist consumer has had an assignment */
    uint64_t assign_gen;
    struct event *gate_tick;
    struct event *cq_retry; /* asks again for unknown committed offsets */

    /* committed-offsets worker */
    pthread_t cq_thread;
    int cq_started;
    pthread_mutex_t cq_mu;
    pthread_cond_t cq_cv;
    struct qk_cq *cq_req; /* one pending request (the newest wins) */
    int cq_quit;
    int cq_init;

    /* fan-out consumer: next offset per partition, -1 when unknown; exact:
     * 1 where it was set from the store's head (no time filter applies) */
    int64_t *fanout_next;
    uint8_t *fanout_exact;
    int fanout_heads; /* the store told its heads: a partition without one starts at its start */
    int32_t nfanout;
    struct qk_fanout_ask *fanout_ask; /* the store's heads, still unanswered */

    /* stop */
    chatd_completion *stop_done;
    enum qk_stop_phase stop_phase;
    int64_t stop_started_ms;
    int64_t phase_started_ms;
    int purged;
    struct event *stop_tick;
    pthread_t closer;
    int closer_started;
    atomic_int closing; /* consumers belong to the closer thread */
    atomic_int closed;  /* the closer thread has finished */
};

/* qk_gate.c: the persisted watermark (loop thread) */
/* Must (partition, offset) wait for the store? A RECEIPT (fanout 0) waits
 * for this node's own store commit only; a fan-out (fanout 1) of a partition
 * another node persists waits for the group's committed offset to pass it. */
int qk_gated(struct qk *qk, int32_t partition, int64_t offset, int fanout);
/* Hold msg (a reference is taken over) or done until the watermark passes
 * offset. Returns 0, or -1 when it could not be held (release it now). */
int qk_hold(struct qk *qk, int32_t partition, int64_t offset, chatd_msg *msg,
            chatd_completion *done);
/* Release what no longer waits in one partition (everything when force). */
void qk_gate_release(struct qk *qk, int32_t partition, int force);
void qk_gate_release_all(struct qk *qk, int force);
/* The message at (partition, offset) will never be in the store (it went to
 * the dead letters): its held RECEIPT becomes an error with `reason`, its
 * held fan-out is dropped. (A fan-out that arrives after this goes out.) */
void qk_gate_refuse(struct qk *qk, int32_t partition, int64_t offset, const char *reason);
/* The committed-offsets worker: thread body, request, stop (joins). */
void *qk_cq_main(void *arg);
/* 0, or -1 when it could not be asked (logged) */
int qk_cq_ask(struct qk *qk, const rd_kafka_topic_partition_list_t *parts);
void qk_cq_stop(struct qk *qk);

/* qk_partitions.c: the position of (partition, offset) set on msg; 0, or -1
 * when it does not fit (logged once; the message keeps its id as position) */
int qk_set_pos(struct qk *qk, chatd_msg *msg, int32_t partition, int64_t offset);
/* qk_partitions.c: the consumers' messages and the rebalance callback */
void qk_persist_message(struct qk *qk, rd_kafka_message_t *m);
void qk_fanout_message(struct qk *qk, rd_kafka_message_t *m);
/* The fan-out's next offset of partition (-1 unknown), grown on demand;
 * NULL past QK_MAX_PARTITIONS or out of memory. Loop thread. */
int64_t *qk_fanout_slot(struct qk *qk, int32_t partition);
/* qk_fanout_start.c: ask the store for its heads, then subscribe the fan-out
 * consumer from them. 0 asked, or -1 (no memory, logged). Loop thread. */
int qk_fanout_seed(struct qk *qk);
/* Forget an unanswered ask (at destroy): its answer is then dropped. */
void qk_fanout_seed_drop(struct qk *qk);
void qk_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *parts, void *opaque);
void qk_entry_free(struct qk *qk, struct qk_entry *e);

/* qk_binding.c: clients on the loop, librdkafka's callbacks */
void qk_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf);
void qk_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
void qk_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *offsets,
                  void *opaque);
/* Create the client from c->conf, bind its queue to the loop, and subscribe
 * a consumer when `subscribe`. 0, or -1 (logged). */
int qk_client_start(struct qk *qk, struct qk_client *c, int subscribe);
/* Subscribe consumer c to the topic. 0, or -1 (logged). */
int qk_client_subscribe(struct qk *qk, struct qk_client *c);
void qk_client_unbind(struct qk_client *c);
void qk_client_destroy(struct qk_client *c);
/* The closer thread's body: commit, then close both consumers, within
 * stop_timeout ms (what is not closed by then is abandoned, logged); sets
 * qk->closed at the end. */
void *qk_closer_main(void *arg);

/* qk_topic_check.c: does the topic have the replication chatd requires
 * (start-up only; blocks up to check_timeout)? 0: yes, -1: refuse (logged). */
int qk_topic_check(struct qk *qk);

#endif /* QK_H */
