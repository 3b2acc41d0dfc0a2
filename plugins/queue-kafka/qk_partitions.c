/*
 * qk_partitions.c - the consumers of queue-kafka on the loop thread:
 *   persist  each message is handed to the core with CHATD_CONSUME_PERSIST;
 *            its offset is stored (rd_kafka_offsets_store) only once it and
 *            every earlier message of its partition are persisted, and
 *            committed by librdkafka's auto-commit: at-least-once, made
 *            exactly-once by the store's idempotent insert. A failed persist
 *            is retried with backoff; after max_persist_attempts the message
 *            goes to the store's dead letters (chatd_api.dead_letter), as does
 *            a record that is no chatd message, and the partition moves on.
 *            Past max_inflight consumed but uncommitted messages (persisting,
 *            or persisted behind an earlier one) the partitions are paused,
 *            resumed once half drained. A message that cannot be tracked (no
 *            memory) is fetched again, never skipped.
 *   fan-out  every partition, delivered to local subscribers
 *            (CHATD_CONSUME_FANOUT) in offset order behind the watermark
 *            (qk_gate.c: the local store's for this node's partitions, the
 *            group's committed offset for the others).
 * And the rebalance callback of both (loop thread, or the closer thread while
 * closing, when it only (un)assigns).
 */
#define _GNU_SOURCE
#include "qk.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void qk_pause_check(struct qk *qk)
{
    rd_kafka_t *rk = qk->cl[QK_PERSIST].rk;
    rd_kafka_topic_partition_list_t *parts = NULL;
    int want_pause;

    if (!rk || atomic_load(&qk->closing)) return;
    if (!qk->paused && qk->nentries >= qk->max_inflight)
        want_pause = 1;
    else if (qk->paused && qk->nentries <= qk->max_inflight / 2)
        want_pause = 0;
    else
        return;
    if (rd_kafka_assignment(rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR || !parts) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "cannot read the consumer assignment to %s it",
                     want_pause ? "pause" : "resume");
        return;
    }
    rd_kafka_resp_err_t err =
        want_pause ? rd_kafka_pause_partitions(rk, parts) : rd_kafka_resume_partitions(rk, parts);
    if (err)
        qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s of %d partitions failed: %s",
                     want_pause ? "pause" : "resume", parts->cnt, rd_kafka_err2str(err));
    qk->paused = want_pause;
    qk->api->log(qk->ctx, want_pause ? CHATD_LOG_WARN : CHATD_LOG_INFO,
                 want_pause ? "store is behind: %" PRId64
                              " messages not yet committed (max_inflight), pausing the persist "
                              "consumer"
                            : "store caught up (%" PRId64 " not yet committed): resuming the "
                              "persist consumer",
                 qk->nentries);
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_paused", want_pause);
    rd_kafka_topic_partition_list_destroy(parts);
}

static struct qk_track *qk_track_new(struct qk *qk, int32_t partition)
{
    struct qk_track *t;
    if (partition < 0 || partition >= QK_MAX_PARTITIONS) return NULL;
    if (partition >= qk->ntracks) {
        int32_t n = partition + 16;
        struct qk_track **nt = realloc(qk->tracks, (size_t)n * sizeof *nt);
        if (!nt) return NULL;
        memset(nt + qk->ntracks, 0, (size_t)(n - qk->ntracks) * sizeof *nt);
        qk->tracks = nt;
        qk->ntracks = n;
    }
    if (qk->tracks[partition]) return qk->tracks[partition];
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->qk = qk;
    t->partition = partition;
    t->gen = qk->assign_gen;
    t->base = -1;
    t->stored = -1;
    TAILQ_INIT(&t->entries);
    qk->tracks[partition] = t;
    return t;
}

void qk_entry_free(struct qk *qk, struct qk_entry *e)
{
    if (e->retry) event_free(e->retry);
    qk->api->msg_unref(e->msg);
    free(e->dead);
    free(e->raw);
    free(e);
}

static void qk_track_revoke(struct qk *qk, int32_t partition)
{
    struct qk_track *t;
    if (partition < 0 || partition >= qk->ntracks || !(t = qk->tracks[partition])) return;
    qk->tracks[partition] = NULL;
    t->revoked = 1;
    if (TAILQ_EMPTY(&t->entries)) free(t);
    /* otherwise freed when its last entry finishes (qk_track_advance) */
}

/* Drop finished entries from the head of the partition; store the offset
 * after the last one so auto-commit writes it. */
static void qk_track_advance(struct qk *qk, struct qk_track *t)
{
    struct qk_entry *e;
    int64_t next = -1;
    while ((e = TAILQ_FIRST(&t->entries)) && e->done) {
        next = e->offset + 1;
        TAILQ_REMOVE(&t->entries, e, link);
        qk_entry_free(qk, e);
        qk->nentries--;
    }
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_entries", qk->nentries);
    if (t->revoked) {
        if (TAILQ_EMPTY(&t->entries)) free(t);
        return;
    }
    if (next >= 0) {
        t->stored = next;
        qk_gate_release(qk, t->partition, 0);
    }
    if (next >= 0 && qk->cl[QK_PERSIST].rk && !atomic_load(&qk->closing)) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        if (!l) {
            qk->api->log(qk->ctx, CHATD_LOG_ERROR, "out of memory storing an offset");
            return;
        }
        rd_kafka_topic_partition_list_add(l, qk->topic, t->partition)->offset = next;
        rd_kafka_resp_err_t err = rd_kafka_offsets_store(qk->cl[QK_PERSIST].rk, l);
        if (err || l->elems[0].err)
            qk->api->log(qk->ctx, CHATD_LOG_DEBUG,
                         "offset store %s[%" PRId32 "]@%" PRId64 " skipped: %s", qk->topic,
                         t->partition, next, rd_kafka_err2str(err ? err : l->elems[0].err));
        rd_kafka_topic_partition_list_destroy(l);
    }
}

static void qk_persist_done(void *arg, chatd_status st);
static void qk_dead_send(struct qk *qk, struct qk_entry *e);

static void qk_persist_send(struct qk *qk, struct qk_entry *e)
{
    e->awaiting = 1;
    qk->awaiting++;
    qk->api->consume(qk->ctx, e->msg, CHATD_CONSUME_PERSIST, qk_persist_done, e);
}

static void qk_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct qk_entry *e = arg;
    struct qk *qk = e->track->qk;
    (void)fd;
    (void)what;
    if (qk->state != QK_RUNNING) return; /* abandoned: not stored, redelivered after a restart */
    if (e->dead)
        qk_dead_send(qk, e);
    else
        qk_persist_send(qk, e);
}

/* Try e again (persist, or its dead letter) after a growing backoff. */
static void qk_retry_later(struct qk *qk, struct qk_entry *e)
{
    e->backoff_ms = e->backoff_ms ? e->backoff_ms * 2 : QK_RETRY_MIN_MS;
    if (e->backoff_ms > QK_RETRY_MAX_MS) e->backoff_ms = QK_RETRY_MAX_MS;
    if (!e->retry) e->retry = evtimer_new(qk->base, qk_retry_cb, e);
    struct timeval tv = {e->backoff_ms / 1000, (e->backoff_ms % 1000) * 1000};
    if (!e->retry || evtimer_add(e->retry, &tv) != 0)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot schedule a retry; %s[%" PRId32 "] stalls until restart", qk->topic,
                     e->track->partition);
}

/* A consume() or dead_letter() call for e was answered. Finishes e when it
 * succeeded (counted in `counter`) or when the answer no longer matters
 * (stopping, or the partition was revoked: left for redelivery), and returns
 * 1 (e may be freed); returns 0 for a failure the caller handles. */
static int qk_entry_answered(struct qk *qk, struct qk_entry *e, chatd_status st,
                             const char *counter, const char *what)
{
    struct qk_track *t = e->track;

    e->awaiting = 0;
    qk->awaiting--;
    if (st != CHATD_OK && qk->state == QK_RUNNING && !t->revoked) return 0;
    if (st != CHATD_OK)
        qk->api->log(qk->ctx, CHATD_LOG_INFO,
                     "%s of %s[%" PRId32 "]@%" PRId64 " failed (%s) while %s; left for "
                     "redelivery",
                     what, qk->topic, t->partition, e->offset, qk->api->status_str(st),
                     t->revoked ? "revoked" : "stopping");
    else
        qk->api->counter_add(qk->ctx, counter, 1);
    if (e->msg) qk->inflight--;
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_inflight", qk->inflight);
    if (st == CHATD_OK || t->revoked) {
        e->done = 1; /* nothing is stored for a revoked partition */
        qk_track_advance(qk, t);
        qk_pause_check(qk);
    }
    return 1;
}

/* The store kept e as a dead letter (or could not): move on, or try again. */
static void qk_dead_done(void *arg, chatd_status st)
{
    struct qk_entry *e = arg;
    struct qk *qk = e->track->qk;

    if (st == CHATD_OK) {
        char reason[256];
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "%s[%" PRId32 "]@%" PRId64 " moved to the store's dead letters: %s; the "
                     "partition goes on (inspect the dead_letters table)",
                     qk->topic, e->track->partition, e->offset, e->dead);
        snprintf(reason, sizeof reason, "the store refused the message (%s)", e->dead);
        qk_gate_refuse(qk, e->track->partition, e->offset, reason);
    }
    if (qk_entry_answered(qk, e, st, "chatd_kafka_dead_letters_total", "dead letter")) return;
    qk->api->log(qk->ctx, CHATD_LOG_WARN,
                 "cannot keep %s[%" PRId32 "]@%" PRId64 " as a dead letter (%s); the partition "
                 "waits, retrying",
                 qk->topic, e->track->partition, e->offset, qk->api->status_str(st));
    qk_retry_later(qk, e);
}

static void qk_dead_send(struct qk *qk, struct qk_entry *e)
{
    char source[128];
    const char *bytes = e->raw;
    size_t len = e->raw_len;

    if (e->msg) bytes = qk->api->msg_json(e->msg, &len);
    snprintf(source, sizeof source, "%s[%" PRId32 "]@%" PRId64, qk->topic, e->track->partition,
             e->offset);
    e->awaiting = 1;
    qk->awaiting++;
    qk->api->dead_letter(qk->ctx, source, bytes ? bytes : "", bytes ? len : 0, e->dead,
                         qk_dead_done, e);
}

/* Give up persisting e: keep it in the store's dead letters, then move on. */
static void qk_dead_letter(struct qk *qk, struct qk_entry *e, const char *reason)
{
    free(e->dead);
    e->dead = pc_strdup(reason);
    if (!e->dead) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "out of memory dead-lettering %s[%" PRId32 "]@%" PRId64 "; retrying",
                     qk->topic, e->track->partition, e->offset);
        qk_retry_later(qk, e);
        return;
    }
    e->backoff_ms = 0;
    qk_dead_send(qk, e);
}

static void qk_persist_done(void *arg, chatd_status st)
{
    struct qk_entry *e = arg;
    struct qk_track *t = e->track;
    struct qk *qk = t->qk;

    if (qk_entry_answered(qk, e, st, "chatd_kafka_persisted_total", "persist")) return;
    if (++e->attempts >= qk->max_persist_attempts) {
        char reason[160];
        snprintf(reason, sizeof reason, "failed to persist %d times (last: %s)", e->attempts,
                 qk->api->status_str(st));
        qk_dead_letter(qk, e, reason);
        return;
    }
    qk->api->log(qk->ctx, CHATD_LOG_WARN,
                 "persist of %s[%" PRId32 "]@%" PRId64 " failed (%s, attempt %d of %" PRId64
                 "); retrying",
                 qk->topic, t->partition, e->offset, qk->api->status_str(st), e->attempts,
                 qk->max_persist_attempts);
    qk->api->counter_add(qk->ctx, "chatd_kafka_persist_retries_total", 1);
    qk_retry_later(qk, e);
}

/* Seek partition back to offset (a message that could not be tracked). */
static void qk_refetch(struct qk *qk, int32_t partition, int64_t offset)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_error_t *err = NULL;
    if (l) {
        rd_kafka_topic_partition_list_add(l, qk->topic, partition)->offset = offset;
        err = rd_kafka_seek_partitions(qk->cl[QK_PERSIST].rk, l, 0);
        rd_kafka_topic_partition_list_destroy(l);
    }
    if (!l || err) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "cannot fetch %s[%" PRId32 "]@%" PRId64 " again (%s); restart this node so "
                     "that it is persisted",
                     qk->topic, partition, offset, err ? rd_kafka_error_string(err) : "no memory");
        if (err) rd_kafka_error_destroy(err);
    }
}

int qk_set_pos(struct qk *qk, chatd_msg *msg, int32_t partition, int64_t offset)
{
    static int warned;
    if (partition >= 0 && partition < QK_POS_PARTITIONS && offset >= 0 && offset < QK_POS_OFFSETS &&
        qk->api->msg_set_pos(msg, QK_POS_FLAG | (uint64_t)partition << 48 | (uint64_t)offset) ==
            CHATD_OK)
        return 0;
    if (!warned++)
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "%s[%" PRId32 "]@%" PRId64 " has no position (partitions beyond %d or "
                     "offsets beyond 2^48 do not fit one); its room's order falls back to ids",
                     qk->topic, partition, offset, QK_POS_PARTITIONS);
    return -1;
}

void qk_persist_message(struct qk *qk, rd_kafka_message_t *m)
{
    struct qk_track *t = NULL;
    struct qk_entry *e;
    chatd_msg *msg = NULL;

    if (m->partition >= 0 && m->partition < qk->ntracks) t = qk->tracks[m->partition];
    if (!t) t = qk_track_new(qk, m->partition);
    e = t ? calloc(1, sizeof *e) : NULL;
    if (!e) {
        /* never store an offset past it: fetch it again */
        qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                     "out of memory tracking %s[%" PRId32 "]@%" PRId64 "; fetching it again",
                     qk->topic, m->partition, m->offset);
        qk_refetch(qk, m->partition, m->offset);
        return;
    }
    e->track = t;
    e->offset = m->offset;
    TAILQ_INSERT_TAIL(&t->entries, e, link);
    qk->nentries++;
    if (qk->api->msg_from_json(qk->ctx, m->payload, m->len, &msg) != CHATD_OK || !msg) {
        qk->api->counter_add(qk->ctx, "chatd_kafka_malformed_total", 1);
        e->raw = malloc(m->len ? m->len : 1);
        if (e->raw && m->len) memcpy(e->raw, m->payload, m->len);
        e->raw_len = m->len;
        qk_dead_letter(qk, e, "not chatd wire JSON");
        qk_pause_check(qk);
        return;
    }
    qk_set_pos(qk, msg, m->partition, m->offset);
    e->msg = msg;
    qk->inflight++;
    qk->api->gauge_set(qk->ctx, "chatd_kafka_persist_inflight", qk->inflight);
    qk_persist_send(qk, e);
    qk_pause_check(qk);
}

int64_t *qk_fanout_slot(struct qk *qk, int32_t partition)
{
    if (partition < 0 || partition >= QK_MAX_PARTITIONS) return NULL;
    if (partition >= qk->nfanout) {
        int32_t n = partition + 16;
        int64_t *nf = realloc(qk->fanout_next, (size_t)n * sizeof *nf);
        if (!nf) return NULL;
        qk->fanout_next = nf;
        uint8_t *ne = realloc(qk->fanout_exact, (size_t)n);
        if (!ne) return NULL;
        qk->fanout_exact = ne;
        for (int32_t i = qk->nfanout; i < n; i++) {
            nf[i] = -1;
            ne[i] = 0;
        }
        qk->nfanout = n;
    }
    return &qk->fanout_next[partition];
}

void qk_fanout_message(struct qk *qk, rd_kafka_message_t *m)
{
    chatd_msg *msg = NULL;
    int64_t *next = qk_fanout_slot(qk, m->partition);
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);

    if (next) {
        if (*next >= 0 && m->offset < *next) return; /* already delivered before a re-assignment */
        *next = m->offset + 1;
    }
    /* a partition the store has nothing of starts near its end: what was
     * produced before this node started (by the producers' clocks) is
     * skipped there, its subscribers came later */
    if ((!next || !qk->fanout_exact[m->partition]) && ts >= 0 &&
        ts < qk->start_ms - qk->fanout_lookback_ms)
        return;
    if (qk->api->msg_from_json(qk->ctx, m->payload, m->len, &msg) != CHATD_OK || !msg) {
        qk->api->log(qk->ctx, CHATD_LOG_WARN,
                     "fan-out: skipping a malformed message at %s[%" PRId32 "]@%" PRId64, qk->topic,
                     m->partition, m->offset);
        qk->api->counter_add(qk->ctx, "chatd_kafka_malformed_total", 1);
        return;
    }
    qk_set_pos(qk, msg, m->partition, m->offset);
    /* persisted here first (and after what is already held, in order) */
    if ((qk_gated(qk, m->partition, m->offset, 1) ||
         (m->partition < qk->nheld_parts && !TAILQ_EMPTY(&qk->held[m->partition]))) &&
        qk_hold(qk, m->partition, m->offset, msg, NULL) == 0) {
        qk_gate_release(qk, m->partition, 0);
        return;
    }
    qk->api->consume(qk->ctx, msg, CHATD_CONSUME_FANOUT, NULL, NULL);
    qk->api->msg_unref(msg);
}

/* ------------------------------------------------------------------------ */
/* rebalance (loop thread, or the closer thread while closing)             */
/* ------------------------------------------------------------------------ */

void qk_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    struct qk_client *c = opaque;
    struct qk *qk = c->qk;
    int coop = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    int closing = atomic_load(&qk->closing);
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        if (c->role == QK_FANOUT && !closing) {
            for (int i = 0; i < parts->cnt; i++) {
                int32_t p = parts->elems[i].partition;
                int64_t *next = qk_fanout_slot(qk, p);
                if (next && *next < 0 && qk->fanout_heads) {
                    /* the store holds nothing of it: nothing of it is stored */
                    parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
                    qk->fanout_exact[p] = 1;
                } else {
                    parts->elems[i].offset =
                        next && *next >= 0 ? *next : RD_KAFKA_OFFSET_TAIL(QK_FANOUT_TAIL);
                }
            }
        }
        if (coop)
            error = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        if (closing) goto out;
        if (c->role == QK_PERSIST) {
            qk->assign_gen++;
            for (int i = 0; i < parts->cnt; i++)
                if (!qk_track_new(qk, parts->elems[i].partition))
                    qk->api->log(qk->ctx, CHATD_LOG_ERROR,
                                 "cannot track partition %" PRId32 " (out of memory or "
                                 "beyond %d partitions)",
                                 parts->elems[i].partition, QK_MAX_PARTITIONS);
            if (qk->paused && parts->cnt > 0) rd_kafka_pause_partitions(rk, parts);
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "persist consumer: assigned %d partitions of %s (group %s)", parts->cnt,
                         qk->topic, qk->group);
            qk->assigned_once = 1;
            qk_cq_ask(qk, parts);
            qk_gate_release_all(qk, 0); /* what another node persists goes now */
        } else {
            /* offsets were set before the assign call below took effect */
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "fan-out consumer ready: reading %d partitions of %s from the end "
                         "(group %s)",
                         parts->cnt, qk->topic, qk->fanout_group);
        }
    } else {
        if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !closing)
            qk->api->log(qk->ctx, CHATD_LOG_WARN, "%s: rebalance error %s; unassigning",
                         qk_role_name[c->role], rd_kafka_err2str(err));
        if (!closing && c->role == QK_PERSIST) {
            for (int i = 0; i < parts->cnt; i++) {
                qk_track_revoke(qk, parts->elems[i].partition);
                qk_gate_release(qk, parts->elems[i].partition, 0);
            }
            qk->api->log(qk->ctx, CHATD_LOG_INFO,
                         "persist consumer: %d partitions revoked (group %s)", parts->cnt,
                         qk->group);
        }
        /* with enable.auto.commit librdkafka commits the stored offsets of
         * the partitions being removed */
        if (coop)
            error = rd_kafka_incremental_unassign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, NULL);
    }
out:
    if (error) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: incremental (un)assign failed: %s",
                     qk_role_name[c->role], rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else if (aerr) {
        qk->api->log(qk->ctx, CHATD_LOG_ERROR, "%s: (un)assign failed: %s", qk_role_name[c->role],
                     rd_kafka_err2str(aerr));
    }
}
