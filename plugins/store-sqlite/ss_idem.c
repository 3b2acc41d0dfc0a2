/*
 * ss_idem.c - idem_recent of store-sqlite (chatd_store_ops, ABI 1.7): the
 * newest idempotency records, read once per node start by the core to seed
 * its fan-out's memory of keys. The reader thread reads them newest first
 * through the index of their time (idempotency_time, schema version 2),
 * copying each row out of SQLite; the loop hands them to the caller oldest
 * first, one call each, then the final call.
 */
#define _POSIX_C_SOURCE 200809L

#include "ss.h"

#include <stdlib.h>

/* ?1 since (ms), ?2 the limit: a backward walk of idempotency_time */
const char ss_sql_idem_recent[] = "SELECT member_id, idem_key, msg_id, time_ms FROM idempotency"
                                  " WHERE time_ms >= ?1 ORDER BY time_ms DESC LIMIT ?2";

typedef struct ss_idem_row {
    int64_t member_id;
    const char *key; /* owned by the read's list */
    uint64_t msg_id;
    int64_t time_ms;
} ss_idem_row;

static void ss_idem_fill(sqlite3_stmt *st, ss_list *l, void *row)
{
    ss_idem_row *d = row;

    d->member_id = sqlite3_column_int64(st, 0);
    d->key = ss_col(l, st, 1);
    d->msg_id = (uint64_t)sqlite3_column_int64(st, 2);
    d->time_ms = sqlite3_column_int64(st, 3);
}

void ss_q_idem_recent(ss *s, ss_read *r)
{
    sqlite3_stmt *st = ss_rstmt(s, R_IDEM_RECENT);

    sqlite3_bind_int64(st, 1, r->since_ms);
    sqlite3_bind_int64(st, 2, (int64_t)r->limit);
    r->status = ss_list_run(s, st, &r->rows, "reading the newest idempotency keys", ss_idem_fill);
}

void ss_idem_recent_answer(ss_read *r)
{
    const ss_idem_row *rows = r->rows.rows;

    if (r->status == CHATD_OK)
        for (size_t i = r->rows.n; i-- > 0;) /* read newest first; given oldest first */
            r->idem_recent_cb(r->arg, CHATD_OK, rows[i].member_id, rows[i].key, rows[i].msg_id,
                              rows[i].time_ms);
    r->idem_recent_cb(r->arg, r->status, 0, NULL, 0, 0);
}

void ss_idem_recent(void *inst, int64_t since_ms, unsigned limit, ss_idem_recent_cb cb, void *arg)
{
    ss_read *r;

    if (!cb) return;
    if (limit == 0) {
        cb(arg, CHATD_OK, 0, NULL, 0, 0);
        return;
    }
    if (!(r = ss_read_new(inst, READ_IDEM_RECENT, NULL, sizeof(ss_idem_row)))) {
        cb(arg, CHATD_ERR_NOMEM, 0, NULL, 0, 0);
        return;
    }
    r->since_ms = since_ms;
    r->limit = limit;
    r->idem_recent_cb = cb;
    r->arg = arg;
    ss_read_submit(inst, r);
}
