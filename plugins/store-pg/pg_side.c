/*
 * pg_side.c - the side stream's replay by position ranges
 * (chatd_store_ops.side_replay) of store-pg: the hook, which checks the
 * ranges and passes them as two bigint[] (text), and its statement (sent by
 * req_send in pg_sql.c, answered by deliver_replay in pg_results.c). Also
 * the head of each position stream (chatd_store_ops.stream_heads), read
 * once per node start to seed transport-ws's side cursor table, and the
 * newest idempotency records (chatd_store_ops.idem_recent), read once per
 * node start to seed the core's fan-out memory of keys.
 *
 * One statement for every range: per range and per room of the member (the
 * member's summaries), the room's first `limit` messages in the range
 * through messages_room_pos, and the member's first `limit` read events in
 * it through reads_member_pos; of those, the first `limit` by position. So a
 * page reads at most (rooms + 1) x ranges x limit rows, never a scan.
 */
#include "pg.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

const char pg_sql_side_replay[] =
    "WITH g (lo, hi) AS (SELECT * FROM unnest($2::bigint[], $3::bigint[]))"
    " SELECT * FROM ("
    " SELECT m.id, 1 AS kind, m.room_id, m.writer_id, m.writer, m.message, m.created_ms,"
    "  0::bigint AS up_to, m.pos"
    " FROM rooms r CROSS JOIN g CROSS JOIN LATERAL (SELECT * FROM messages x"
    "  WHERE x.room_id = r.room_id AND x.pos > g.lo AND x.pos <= g.hi"
    "  ORDER BY x.pos LIMIT $4::bigint) m"
    " WHERE r.member_id = $1::bigint"
    " UNION ALL"
    " SELECT e.id, 2, e.room_id, e.member_id, e.writer, '', e.created_ms, e.up_to, e.pos"
    " FROM g CROSS JOIN LATERAL (SELECT * FROM reads y"
    "  WHERE y.member_id = $1::bigint AND y.pos > g.lo AND y.pos <= g.hi"
    "  ORDER BY y.pos LIMIT $4::bigint) e"
    ") s ORDER BY pos, kind, id LIMIT $4::bigint";

/* bounds[2k + which] for k < n as the text of a bigint[] ("{1,2}"); NULL
 * when out of memory. */
static char *bounds_text(const int64_t *bounds, size_t n, int which)
{
    size_t cap = n * 21 + 3, len = 0;
    char *t = malloc(cap);
    if (!t) return NULL;
    t[len++] = '{';
    for (size_t k = 0; k < n; k++)
        len += (size_t)snprintf(t + len, cap - len, "%s%" PRId64, k ? "," : "",
                                bounds[2 * k + (size_t)which]);
    snprintf(t + len, cap - len, "}");
    return t;
}

void pg_side_replay(void *inst, int64_t member_id, const uint64_t *after, const uint64_t *until,
                    size_t n, unsigned limit, chatd_history_cb cb, void *arg)
{
    int64_t bounds[2 * CHATD_POS_RANGES_MAX];
    pg_req *r;

    if (!cb) return;
    if (member_id <= 0 || !pc_pos_ranges(after, until, n, bounds)) {
        cb(arg, CHATD_ERR_INVALID, NULL, 0, 0);
        return;
    }
    r = req_new(REQ_SIDE_REPLAY, (void *)cb, arg);
    if (!r || !(r->s[0] = bounds_text(bounds, n, 0)) || !(r->s[1] = bounds_text(bounds, n, 1))) {
        req_free(r);
        cb(arg, CHATD_ERR_NOMEM, NULL, 0, 0);
        return;
    }
    r->i[0] = member_id;
    r->i[1] = (int64_t)pc_history_limit(limit);
    req_submit(inst, r);
}

/* 4611686018427387904 = CHATD_POS_PARTITIONED, 48 = CHATD_POS_STREAM_SHIFT; a scan of the
 * messages, once per node start */
const char pg_sql_stream_heads[] = "SELECT max(pos) FROM messages WHERE pos >= 4611686018427387904"
                                   " GROUP BY pos >> 48 ORDER BY 1";
_Static_assert(CHATD_POS_PARTITIONED == UINT64_C(4611686018427387904) &&
                   CHATD_POS_STREAM_SHIFT == 48,
               "pg_sql_stream_heads spells the position layout");

void pg_stream_heads(void *inst, chatd_positions_cb cb, void *arg)
{
    pg_req *r;

    if (!cb) return;
    if (!(r = req_new(REQ_STREAM_HEADS, (void *)cb, arg))) {
        cb(arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    req_submit(inst, r);
}

void pg_deliver_heads(pg_store *st, pg_req *r)
{
    size_t n = r->res ? (size_t)PQntuples(r->res) : 0;
    uint64_t *pos = n ? calloc(n, sizeof(*pos)) : NULL;
    (void)st;
    if (n && !pos) {
        ((chatd_positions_cb)r->cb)(r->arg, CHATD_ERR_NOMEM, NULL, 0);
        return;
    }
    for (size_t k = 0; k < n; k++)
        pos[k] = (uint64_t)parse_i64(PQgetvalue(r->res, (int)k, 0));
    ((chatd_positions_cb)r->cb)(r->arg, CHATD_OK, pos, n);
    free(pos);
}

/* a backward walk of idempotency_time (schema version 3) */
const char pg_sql_idem_recent[] = "SELECT member_id, idem_key, msg_id, created_ms FROM idempotency"
                                  " WHERE created_ms >= $1::bigint"
                                  " ORDER BY created_ms DESC LIMIT $2::bigint";

void pg_idem_recent(void *inst, int64_t since_ms, unsigned limit, pg_idem_recent_cb cb, void *arg)
{
    pg_req *r;

    if (!cb) return;
    if (limit == 0) {
        cb(arg, CHATD_OK, 0, NULL, 0, 0);
        return;
    }
    if (!(r = req_new(REQ_IDEM_RECENT, (void *)cb, arg))) {
        cb(arg, CHATD_ERR_NOMEM, 0, NULL, 0, 0);
        return;
    }
    r->i[0] = since_ms;
    r->i[1] = (int64_t)limit;
    req_submit(inst, r);
}

void pg_deliver_idem_recent(pg_store *st, pg_req *r)
{
    pg_idem_recent_cb cb = (pg_idem_recent_cb)r->cb;
    int n = r->res ? PQntuples(r->res) : 0;
    (void)st;
    for (int k = n; k-- > 0;) /* newest first from the server; given oldest first */
        cb(r->arg, CHATD_OK, parse_i64(PQgetvalue(r->res, k, 0)), PQgetvalue(r->res, k, 1),
           (uint64_t)parse_i64(PQgetvalue(r->res, k, 2)), parse_i64(PQgetvalue(r->res, k, 3)));
    cb(r->arg, CHATD_OK, 0, NULL, 0, 0);
}
