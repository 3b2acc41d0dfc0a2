/*
 * core/ids.c - 64-bit message ids, unique across nodes and sortable by time:
 *
 *     (ms since 2024-01-01T00:00:00Z) << 22 | node_id << 12 | seq
 *
 * 41 bits of time (69 years), 10 bits of node, 12 bits of sequence (4096
 * ids per ms per node). When a millisecond's sequence is used up, or the
 * wall clock steps back, ids continue from the last millisecond used, so
 * they always increase on one node. ids_floor (nodes.c, from the node's
 * lease in the store) carries that across restarts.
 */
#include "config.h"

#include "core.h"

#define IDS_NODE_BITS 10
#define IDS_SEQ_BITS 12
#define IDS_SEQ_MAX ((1u << IDS_SEQ_BITS) - 1)

void ids_init(ids *g, uint64_t node_id)
{
    g->node_id = node_id & ((1u << IDS_NODE_BITS) - 1);
    g->last_ms = -1;
    g->seq = 0;
}

void ids_floor(ids *g, int64_t high_water_ms)
{
    int64_t t = high_water_ms - IDS_EPOCH_MS;
    if (high_water_ms <= 0 || t < g->last_ms) return;
    g->last_ms = t; /* the next id is on a later ms than t */
    g->seq = IDS_SEQ_MAX;
}

int64_t ids_last_ms(const ids *g)
{
    return g->last_ms < 0 ? 0 : g->last_ms + IDS_EPOCH_MS;
}

uint64_t ids_next(ids *g, int64_t now_ms)
{
    int64_t t = now_ms - IDS_EPOCH_MS;
    if (t < 0) t = 0;
    if (t > g->last_ms) {
        g->last_ms = t;
        g->seq = 0;
    } else if (g->seq < IDS_SEQ_MAX) {
        g->seq++; /* same ms, or the clock went back: stay on last_ms */
    } else {
        g->last_ms++; /* sequence exhausted: borrow the next millisecond */
        g->seq = 0;
    }
    return ((uint64_t)g->last_ms << (IDS_NODE_BITS + IDS_SEQ_BITS)) | (g->node_id << IDS_SEQ_BITS) |
           g->seq;
}

int64_t ids_time_ms(uint64_t id)
{
    return (int64_t)(id >> (IDS_NODE_BITS + IDS_SEQ_BITS)) + IDS_EPOCH_MS;
}

unsigned ids_node(uint64_t id)
{
    return (unsigned)((id >> IDS_SEQ_BITS) & ((1u << IDS_NODE_BITS) - 1));
}

int ids_parse(const char *s, size_t len, uint64_t *out)
{
    if (!s || len == 0 || len > 20 || (len > 1 && s[0] == '0')) return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}
