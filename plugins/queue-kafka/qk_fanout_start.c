/*
 * qk_fanout_start.c - where this node's fan-out consumer starts reading.
 *
 * Each partition's fan-out starts right after the store's head of that
 * partition (chatd_api.stream_heads: the highest stored position, whose low
 * 48 bits are the Kafka offset, qk_set_pos). Everything at or below the head
 * is in the store, where history and resume read it; everything above it
 * comes live, through the gate (qk_gate.c) once stored. No clock takes part,
 * so nodes whose clocks disagree lose nothing at start. The heads are read
 * before the fan-out consumer subscribes; the core starts the queue before
 * the transports, and a store answers its reads in order, so these heads are
 * at or below the ones transport-ws seeds its side cursors with: a message
 * between the two reads may come live once more, and resumed subscriptions
 * drop what they already have (docs/delivery.md).
 *
 * A partition the store has no head of (nothing of it stored) starts at its
 * start. A store belongs to one topic: its heads are that topic's offsets
 * (a head past the partition's end sends the fan-out to the end, the fan-out
 * consumer's auto.offset.reset). Every partition when the store cannot tell
 * (no stream_heads, or an error), or with fanout_start = clock, starts
 * QK_FANOUT_TAIL messages before its end and skips what was produced more
 * than fanout_lookback ms before this node started, by the producers' clocks.
 */
#include "qk.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>

struct qk_fanout_ask {
    struct qk *qk; /* NULL once the instance is gone: the answer is dropped */
};

/* Set the starts from the heads (or not, st != CHATD_OK), then subscribe. */
static void qk_fanout_begin(struct qk *qk, chatd_status st, const uint64_t *pos, size_t n)
{
    size_t exact = 0;

    if (st == CHATD_OK) {
        for (size_t i = 0; i < n; i++) {
            if (!(pos[i] & QK_POS_FLAG)) continue;
            int32_t p = (int32_t)((pos[i] & ~QK_POS_FLAG) >> 48);
            int64_t *next = qk_fanout_slot(qk, p);
            if (!next) {
                qk->api->log(qk->ctx, CHATD_LOG_WARN,
                             "fan-out: no room for partition %" PRId32 "'s start (out of memory "
                             "or past %d partitions): it starts by the clock instead",
                             p, QK_MAX_PARTITIONS);
                continue;
            }
            *next = (int64_t)(pos[i] & (uint64_t)(QK_POS_OFFSETS - 1)) + 1;
            qk->fanout_exact[p] = 1;
            exact++;
        }
        qk->fanout_heads = 1;
        qk->api->log(qk->ctx, CHATD_LOG_INFO,
                     "fan-out starts after the store's head of %zu partition(s), any other "
                     "at its start (the store holds nothing of it)",
                     exact);
    } else {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "the store cannot tell its heads (%s): fan-out starts %" PRId64
                     " ms before this node's start by the producers' clocks (fanout_lookback; "
                     "if this node's clock is ahead of a producer's by more, it misses that "
                     "producer's first messages)",
                     qk->api->status_str(st), qk->fanout_lookback_ms);
    }
    if (qk->state != QK_RUNNING) return; /* stopping: nothing to start */
    if (qk_client_subscribe(qk, &qk->cl[QK_FANOUT]) != 0)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "fan-out cannot start: this node delivers nothing live; restart it "
                     "once the cluster answers");
}

static void qk_fanout_heads(void *arg, chatd_status st, const uint64_t *pos, size_t n)
{
    struct qk_fanout_ask *ask = arg;
    struct qk *qk = ask->qk;

    free(ask);
    if (!qk) return;
    qk->fanout_ask = NULL;
    qk_fanout_begin(qk, st, pos, n);
}

int qk_fanout_seed(struct qk *qk)
{
    const chatd_api *api = qk->api;
    struct qk_fanout_ask *ask;

    if (qk->fanout_by_clock) {
        api->log(qk->ctx, CHATD_LOG_INFO,
                 "fan-out starts %" PRId64 " ms before this node's start (fanout_start = clock)",
                 qk->fanout_lookback_ms);
        return qk_client_subscribe(qk, &qk->cl[QK_FANOUT]) == 0 ? 0 : -1;
    }
    if (!PC_API_HAS(api, stream_heads) || !api->stream_heads) {
        qk_fanout_begin(qk, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return 0;
    }
    if (!(ask = malloc(sizeof(*ask)))) {
        api->log(qk->ctx, CHATD_LOG_ERROR, "out of memory starting the fan-out");
        return -1;
    }
    ask->qk = qk;
    qk->fanout_ask = ask;
    api->stream_heads(qk->ctx, qk_fanout_heads, ask);
    return 0;
}

void qk_fanout_seed_drop(struct qk *qk)
{
    if (qk->fanout_ask) qk->fanout_ask->qk = NULL;
    qk->fanout_ask = NULL;
}
