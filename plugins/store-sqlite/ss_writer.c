/*
 * ss_writer.c - the loop side of the writes of store-sqlite (persist,
 * member_create, session_put, session_del, session_purge, dead_letter).
 *
 * A write is checked and staged on the loop thread (ss_admit, ss_stage); a
 * task posted once per loop turn hands the whole stage to the writer thread
 * (ss_handoff), which commits it in batches (ss_commit.c). A finished batch
 * is posted back to the loop (ss_finish_batch), where the completions and
 * callbacks run, in job order.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ss_job_free(ss_job *j)
{
    free(j->login_id);
    free(j->name);
    free(j->pw_hash);
    free(j->token_hash);
    free(j->source);
    free(j->reason);
    free(j->payload);
    free(j->holder);
    free(j->other);
    free(j);
}
/* ------------------------------------------------------------------------ */
/* Loop side of writes                                                      */
/* ------------------------------------------------------------------------ */

static void ss_maybe_stopped(ss *s)
{
    if (s->stopping && s->stop_done && s->pending == 0 && !s->flush_posted) {
        chatd_completion *d = s->stop_done;
        s->stop_done = NULL;
        s->api->log(s->ctx, CHATD_LOG_INFO, "stopped: every accepted write is committed");
        s->api->complete(d, CHATD_OK, NULL);
    }
}

/* Report one finished job to its caller (loop thread) and free it. */
void ss_finish_job(ss *s, ss_job *j)
{
    chatd_member m;

    switch (j->kind) {
    case JOB_PERSIST:
        if (j->status == CHATD_ERR_EXISTS)
            s->api->counter_add(s->ctx, "chatd_store_id_conflicts_total", 1);
        s->api->complete(j->done, j->status,
                         j->status == CHATD_OK           ? NULL
                         : j->status == CHATD_ERR_EXISTS ? "its id is taken by another message"
                                                         : "the message could not be committed");
        s->api->msg_unref(j->msg);
        break;
    case JOB_MEMBER_CREATE:
        memset(&m, 0, sizeof(m));
        m.size = sizeof(m);
        m.id = j->member_id;
        m.login_id = j->login_id;
        m.name = j->name;
        m.pw_hash = j->pw_hash;
        m.created_ms = j->created_ms;
        j->member_cb(j->arg, j->status, j->status == CHATD_OK ? &m : NULL,
                     j->status == CHATD_OK ? 1 : 0);
        break;
    case JOB_SESSION_PUT:
    case JOB_SESSION_DEL:
    case JOB_DEAD_LETTER:
        if (j->status_cb) j->status_cb(j->arg, j->status);
        break;
    case JOB_SESSION_PURGE:
        j->purge_cb(j->arg, j->status, j->status == CHATD_OK ? (uint64_t)j->member_id : 0);
        break;
    case JOB_NODE_CLAIM:
        if (j->status == CHATD_OK)
            j->node_cb(j->arg, CHATD_OK, j->node_id, j->high_water_ms, NULL);
        else
            j->node_cb(j->arg, j->status, 0, 0, j->status == CHATD_ERR_EXISTS ? j->other : NULL);
        break;
    }
    ss_job_free(j);
}

/* Posted by the writer thread: a batch is finished. */
void ss_finish_batch(void *arg)
{
    ss_batch *b = arg;
    ss *s = b->s;
    ss_job *j, *next;

    for (j = b->head; j; j = next) {
        next = j->next;
        ss_finish_job(s, j);
    }
    s->pending -= (int64_t)b->njobs;
    pc_busy_drained(&s->busy, s->api, s->ctx, s->pending, s->max_pending);
    if (b->committed) {
        s->api->counter_add(s->ctx, "chatd_store_commits_total", 1);
        s->api->counter_add(s->ctx, "chatd_store_persisted_total", b->npersist);
    } else {
        s->api->counter_add(s->ctx, "chatd_store_failed_batches_total", 1);
    }
    s->api->gauge_set(s->ctx, "chatd_store_pending", s->pending);
    free(b);
    ss_maybe_stopped(s);
}

/* Hand everything staged so far to the writer thread. */
void ss_handoff(ss *s)
{
    if (!s->stage_head) return;
    pthread_mutex_lock(&s->mu);
    if (s->wq_tail)
        s->wq_tail->next = s->stage_head;
    else
        s->wq_head = s->stage_head;
    s->wq_tail = s->stage_tail;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    s->stage_head = s->stage_tail = NULL;
}

/* Posted once per loop turn in which something was staged. */
static void ss_flush(void *arg)
{
    ss *s = arg;

    s->flush_posted = 0;
    ss_handoff(s);
    ss_maybe_stopped(s);
}

/* Check that a write may be accepted now. */
chatd_status ss_admit(ss *s)
{
    if (!s->started || s->stopping) return CHATD_ERR_UNAVAILABLE;
    if (s->pending >= s->max_pending) {
        pc_busy_refuse(&s->busy, s->api, s->ctx, CHATD_LOG_WARN, "chatd_store_busy_total",
                       "%lld writes pending (max_pending); refusing until the disk catches up "
                       "(raise max_pending or use faster storage if this persists)",
                       (long long)s->pending);
        return CHATD_ERR_BUSY;
    }
    if (!s->flush_posted) {
        if (s->api->post(s->ctx, ss_flush, s) != CHATD_OK) return CHATD_ERR_UNAVAILABLE;
        s->flush_posted = 1;
    }
    return CHATD_OK;
}

void ss_stage(ss *s, ss_job *j)
{
    j->next = NULL;
    if (s->stage_tail)
        s->stage_tail->next = j;
    else
        s->stage_head = j;
    s->stage_tail = j;
    s->pending++;
}

chatd_status ss_persist(void *inst, chatd_msg *msg, chatd_completion *done)
{
    ss *s = inst;
    const chatd_api *api = s->api;
    ss_job *j;
    chatd_status st;
    int64_t a, b;
    uint64_t id;

    if (!msg || !done) return CHATD_ERR_INVALID;
    id = api->msg_id(msg);
    if (id == 0 || id > (uint64_t)INT64_MAX) {
        api->log(s->ctx, CHATD_LOG_ERROR, "refusing message with id %" PRIu64 " (out of range)",
                 id);
        return CHATD_ERR_INVALID;
    }
    api->msg_room_members(msg, &a, &b);
    if (api->msg_writer_id(msg) != a && api->msg_writer_id(msg) != b) {
        api->log(s->ctx, CHATD_LOG_ERROR,
                 "refusing message %" PRIu64 ": its writer %lld is not a member of room %s", id,
                 (long long)api->msg_writer_id(msg), api->msg_room(msg));
        return CHATD_ERR_INVALID;
    }
    if (api->msg_kind(msg) != CHATD_MSG_CHAT && api->msg_kind(msg) != CHATD_MSG_READ)
        return CHATD_ERR_INVALID;
    st = ss_admit(s);
    if (st != CHATD_OK) return st;
    j = calloc(1, sizeof(*j));
    if (!j) return CHATD_ERR_NOMEM;
    j->kind = JOB_PERSIST;
    j->msg = api->msg_ref(msg);
    j->done = done;
    j->mkind = api->msg_kind(msg);
    j->id = (int64_t)id;
    j->room = api->msg_room(msg);
    j->writer_id = api->msg_writer_id(msg);
    j->peer_id = j->writer_id == a ? b : a;
    j->writer = api->msg_writer(msg);
    if (!j->writer) j->writer = "";
    j->text = api->msg_text(msg, &j->text_len);
    if (!j->text) {
        j->text = "";
        j->text_len = 0;
    }
    if (j->text_len > INT32_MAX) {
        api->msg_unref(j->msg);
        free(j);
        return CHATD_ERR_INVALID;
    }
    j->time_ms = api->msg_time_ms(msg);
    j->idem_key = j->mkind == CHATD_MSG_CHAT ? api->msg_idem_key(msg) : NULL;
    j->up_to = (int64_t)(api->msg_up_to(msg) > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX
                                                                   : api->msg_up_to(msg));
    j->pos = (int64_t)(api->msg_pos(msg) > (uint64_t)INT64_MAX ? (uint64_t)INT64_MAX
                                                               : api->msg_pos(msg));
    ss_stage(s, j);
    return CHATD_ASYNC;
}

void ss_member_create(void *inst, const chatd_member *m, chatd_member_cb cb, void *arg)
{
    ss *s = inst;
    ss_job *j;
    chatd_status st;

    if (!cb) return;
    if (!m || !m->login_id || !*m->login_id || !m->name) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0);
        return;
    }
    st = ss_admit(s);
    if (st != CHATD_OK) {
        cb(arg, st, NULL, 0);
        return;
    }
    j = calloc(1, sizeof(*j));
    if (!j || !(j->login_id = pc_strdup(m->login_id)) || !(j->name = pc_strdup(m->name)) ||
        (m->pw_hash && !(j->pw_hash = pc_strdup(m->pw_hash)))) {
        if (j) ss_job_free(j);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    j->kind = JOB_MEMBER_CREATE;
    j->member_cb = cb;
    j->arg = arg;
    j->created_ms = m->created_ms > 0 ? m->created_ms : s->api->now_ms();
    ss_stage(s, j);
}

/* A new job of `kind` for a status-callback write, once admitted; NULL when
 * refused (cb was told why). */
static ss_job *ss_status_job(ss *s, ss_job_kind kind, chatd_status_cb cb, void *arg)
{
    chatd_status st = ss_admit(s);
    ss_job *j;

    if (st != CHATD_OK) {
        if (cb) cb(arg, st);
        return NULL;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        if (cb) cb(arg, CHATD_ERR_NOMEM);
        return NULL;
    }
    j->kind = kind;
    j->status_cb = cb;
    j->arg = arg;
    return j;
}

/* Stage j, or answer CHATD_ERR_NOMEM when a copy of its fields failed. */
static void ss_stage_or_nomem(ss *s, ss_job *j, int copied)
{
    if (copied) {
        ss_stage(s, j);
        return;
    }
    if (j->status_cb) j->status_cb(j->arg, CHATD_ERR_NOMEM);
    ss_job_free(j);
}

static void ss_session_write(ss *s, ss_job_kind kind, const char *token_hash, int64_t member_id,
                             int64_t expires_ms, chatd_status_cb cb, void *arg)
{
    ss_job *j;

    if (!token_hash || !*token_hash) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    if (!(j = ss_status_job(s, kind, cb, arg))) return;
    j->member_id = member_id;
    j->expires_ms = expires_ms;
    ss_stage_or_nomem(s, j, (j->token_hash = pc_strdup(token_hash)) != NULL);
}

void ss_session_put(void *inst, const chatd_session *sess, chatd_status_cb cb, void *arg)
{
    if (!sess) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    ss_session_write(inst, JOB_SESSION_PUT, sess->token_hash, sess->member_id, sess->expires_ms, cb,
                     arg);
}

void ss_session_del(void *inst, const char *token_hash, chatd_status_cb cb, void *arg)
{
    ss_session_write(inst, JOB_SESSION_DEL, token_hash, 0, 0, cb, arg);
}

void ss_session_purge(void *inst, int64_t now_ms,
                      void (*cb)(void *arg, chatd_status status, uint64_t n), void *arg)
{
    ss *s = inst;
    chatd_status st = ss_admit(s);
    ss_job *j = st == CHATD_OK ? calloc(1, sizeof(*j)) : NULL;

    if (!j) {
        cb(arg, st == CHATD_OK ? CHATD_ERR_NOMEM : st, 0);
        return;
    }
    j->kind = JOB_SESSION_PURGE;
    j->purge_cb = cb;
    j->arg = arg;
    j->expires_ms = now_ms;
    ss_stage(s, j);
}

void ss_dead_letter(void *inst, const char *source, const void *payload, size_t len,
                    const char *reason, chatd_status_cb cb, void *arg)
{
    ss *s = inst;
    ss_job *j;

    if (!source || !reason || (len && !payload) || len > INT32_MAX) {
        if (cb) cb(arg, CHATD_ERR_INVALID);
        return;
    }
    if (!(j = ss_status_job(s, JOB_DEAD_LETTER, cb, arg))) return;
    j->created_ms = s->api->now_ms();
    j->payload_len = len;
    j->source = pc_strdup(source);
    j->reason = pc_strdup(reason);
    j->payload = malloc(len ? len : 1);
    if (j->payload && len) memcpy(j->payload, payload, len);
    ss_stage_or_nomem(s, j, j->source && j->reason && j->payload);
}
