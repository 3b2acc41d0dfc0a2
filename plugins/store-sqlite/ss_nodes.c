/*
 * ss_nodes.c - node leases of the store-sqlite plugin (chatd_store_ops
 * node_claim): a row per node id in table nodes (holder, expires_ms,
 * high_water_ms), claimed or renewed by a job of the writer thread, inside
 * its batch's transaction, so two processes sharing the database file can
 * never both hold one id.
 */
#include "ss.h"

#include <stdlib.h>
#include <string.h>

#define SS_NODE_MAX 1023u /* node ids are 10 bits */

void ss_node_claim(void *inst, uint32_t node_id, const char *holder, int64_t lease_ms,
                   int64_t high_water_ms, chatd_node_cb cb, void *arg)
{
    ss *s = inst;
    chatd_status st;
    ss_job *j;

    if (!holder || !*holder || lease_ms <= 0 ||
        (node_id > SS_NODE_MAX && node_id != CHATD_NODE_AUTO)) {
        cb(arg, CHATD_ERR_INVALID, 0, 0, NULL);
        return;
    }
    if ((st = ss_admit(s)) != CHATD_OK) {
        cb(arg, st, 0, 0, NULL);
        return;
    }
    if (!(j = calloc(1, sizeof(*j))) || !(j->holder = pc_strdup(holder))) {
        free(j);
        cb(arg, CHATD_ERR_NOMEM, 0, 0, NULL);
        return;
    }
    j->kind = JOB_NODE_CLAIM;
    j->node_cb = cb;
    j->arg = arg;
    j->node_id = node_id;
    j->lease_ms = lease_ms;
    j->high_water_ms = high_water_ms;
    j->created_ms = s->api->now_ms();
    ss_stage(s, j);
}

static int ss_node_step(ss *s, int which, const char *what)
{
    int rc = sqlite3_step(s->w[which]);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s failed on %s: %s (sqlite %d)", what, s->path,
                    sqlite3_errmsg(s->wdb), rc);
    return rc;
}

static void ss_node_reset(ss *s, int which)
{
    sqlite3_reset(s->w[which]);
    sqlite3_clear_bindings(s->w[which]);
}

/* The lowest id in 1..SS_NODE_MAX free for j->holder, or 0 (none free) or
 * -1 (failed). */
static int64_t ss_node_pick(ss *s, const ss_job *j)
{
    int64_t want = 1;
    int rc;

    while ((rc = ss_node_step(s, W_NODE_LIST, "listing node leases")) == SQLITE_ROW) {
        sqlite3_stmt *st = s->w[W_NODE_LIST];
        int64_t id = sqlite3_column_int64(st, 0);
        const char *h = (const char *)sqlite3_column_text(st, 1);
        int free_row = sqlite3_column_int64(st, 2) <= j->created_ms || (h && !strcmp(h, j->holder));
        if (id < want) continue;
        if (id > want || free_row) break;
        want++;
    }
    ss_node_reset(s, W_NODE_LIST);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return -1;
    return want <= SS_NODE_MAX ? want : 0;
}

chatd_status ss_run_node_claim(ss *s, ss_job *j)
{
    sqlite3_stmt *st = s->w[W_NODE_GET];
    int64_t id = j->node_id, hw = 0;
    int rc;

    if (j->node_id == CHATD_NODE_AUTO && (id = ss_node_pick(s, j)) <= 0)
        return id < 0 ? CHATD_ERR_IO : CHATD_ERR_EXISTS; /* j->other NULL: every id */
    sqlite3_bind_int64(st, 1, id);
    rc = ss_node_step(s, W_NODE_GET, "reading a node lease");
    if (rc == SQLITE_ROW) {
        const char *h = (const char *)sqlite3_column_text(st, 0);
        hw = sqlite3_column_int64(st, 2);
        if (sqlite3_column_int64(st, 1) > j->created_ms && h && strcmp(h, j->holder) != 0) {
            j->other = pc_strdup(h);
            ss_node_reset(s, W_NODE_GET);
            return j->other ? CHATD_ERR_EXISTS : CHATD_ERR_NOMEM;
        }
    }
    ss_node_reset(s, W_NODE_GET);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return CHATD_ERR_IO;
    if (j->high_water_ms > hw) hw = j->high_water_ms;
    st = s->w[W_NODE_PUT];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, j->holder, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, j->created_ms + j->lease_ms);
    sqlite3_bind_int64(st, 4, hw);
    rc = ss_node_step(s, W_NODE_PUT, "storing a node lease");
    ss_node_reset(s, W_NODE_PUT);
    if (rc != SQLITE_DONE) return CHATD_ERR_IO;
    j->node_id = (uint32_t)id;
    j->high_water_ms = hw;
    return CHATD_OK;
}
