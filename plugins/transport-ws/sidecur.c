/*
 * sidecur.c - side cursors of transport-ws: position vectors, and the node
 * table they are taken from (docs/delivery.md, "Cursors" and "Resume").
 *
 * A member's side stream spans rooms, whose positions lie in several
 * position streams (CHATD_POS_PARTITIONED: one per Kafka partition, plus the
 * unpartitioned one) that do not compare. A side cursor therefore names, for
 * each stream, the last position it covers:
 *   side.<memberId>.p<base64url, no padding>
 * of the entries by ascending stream index k (0: the unpartitioned stream,
 * 1 + partition for a partitioned one), each two unsigned LEB128 varints:
 * k minus the previous entry's k minus 1 (the first entry: k itself), then
 * the position within the stream (unpartitioned: the position; partitioned:
 * its low CHATD_POS_STREAM_SHIFT bits). Parsing is strict: canonical
 * base64url and varints, values in range, at least one entry, nothing after.
 * The form of earlier releases, side.<memberId>.<decimal>, reads as one
 * unpartitioned entry. When the entries do not fit TW_CURSOR_MAX, the cursor
 * is side.<memberId>.x, which resume-after refuses (the client reloads).
 *
 * The node table: for each stream, the highest position this node has
 * fanned out (tw_side_note, from tw_deliver, for every message, CHAT and
 * READ). One node fans out each stream in its order, after the store has
 * the message, so a live subscription has been given every message of its
 * side stream up to the table's positions (those before it subscribed are
 * before its first cursor): its cursor is the table. A resumed one keeps its
 * own vector (s->vec) for its whole life: its cursor is the greater of the
 * two per stream, and a live message at or below the vector's entry for its
 * stream is never written to it (tw_side_pass). The table alone would not
 * do: seeded from the store's heads at start it is past what the replay
 * wrote at once, while the node's fan-out may still deliver messages at or
 * below the seed (those it reads again at its start).
 *
 * Before the listener accepts, the table is seeded with the store's head of
 * every partitioned stream (tw_side_table_seed): so a stream this node has
 * not fanned out yet is in every cursor, at a position no message published
 * after the seed can be at or below (Kafka appends at increasing offsets,
 * and what is stored was appended before), while every message at or below
 * it was published before any subscription here. A cursor then covers
 * exactly what its subscription was given, plus messages that came before
 * it subscribed.
 */
#include "config.h"

#include "tw.h"
#include "../common/plugin_common.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POS_LOW_MASK ((UINT64_C(1) << CHATD_POS_STREAM_SHIFT) - 1)
/* stream index of partition 0; the last index is that of partition 2^14 - 1 */
#define STREAM_BASE (CHATD_POS_PARTITIONED >> CHATD_POS_STREAM_SHIFT)
#define STREAM_MAX ((uint32_t)(UINT64_C(1) << (62 - CHATD_POS_STREAM_SHIFT)))
/* raw bytes of the entries: base64url of them fits TW_CURSOR_MAX */
#define RAW_MAX ((TW_CURSOR_MAX - 1) * 3 / 4)

uint32_t tw_pos_stream(uint64_t pos)
{
    if (!(pos & CHATD_POS_PARTITIONED)) return 0;
    return (uint32_t)((pos >> CHATD_POS_STREAM_SHIFT) - STREAM_BASE) + 1;
}

/* The first position past stream k. */
static uint64_t stream_end(uint32_t k)
{
    if (k == 0) return CHATD_POS_PARTITIONED;
    return (STREAM_BASE + k) << CHATD_POS_STREAM_SHIFT;
}

void tw_side_note(tw_server *srv, uint64_t pos)
{
    tw_sidetable *t = &srv->side;
    uint32_t k = tw_pos_stream(pos);
    if (pos == 0 || k > STREAM_MAX) return;
    if (k >= t->cap) { /* a stream not seen before: grow, once per stream */
        size_t cap = t->cap ? t->cap : 8;
        while (cap <= k)
            cap *= 2;
        uint64_t *p = realloc(t->pos, cap * sizeof(*p));
        if (!p) {
            if (!t->broken)
                srv->api->log(srv->ctx, CHATD_LOG_ERROR,
                              "out of memory growing the side cursor table: side cursors cannot "
                              "be resumed on this node until it restarts");
            t->broken = 1;
            return;
        }
        memset(p + t->cap, 0, (cap - t->cap) * sizeof(*p));
        t->pos = p;
        t->cap = cap;
    }
    if (pos > t->pos[k]) t->pos[k] = pos;
}

struct tw_sideseed {
    tw_server *srv; /* NULL: the server went away before the answer */
    void (*ready)(tw_server *srv);
};

static void seed_apply(tw_server *srv, void (*ready)(tw_server *), chatd_status st,
                       const uint64_t *pos, size_t n)
{
    if (st == CHATD_OK) {
        for (size_t i = 0; i < n; i++)
            if (pos[i] & CHATD_POS_PARTITIONED) tw_side_note(srv, pos[i]);
    } else {
        srv->api->log(srv->ctx, st == CHATD_ERR_UNAVAILABLE ? CHATD_LOG_INFO : CHATD_LOG_WARN,
                      "cannot read the head of each position stream from the store (%s): side "
                      "cursors of this node lack a Kafka partition until it fans one out, and a "
                      "resume can miss that partition's messages (docs/delivery.md, Resume); "
                      "restart the node once the store answers",
                      srv->api->status_str(st));
    }
    ready(srv);
}

static void seed_done(void *arg, chatd_status st, const uint64_t *pos, size_t n)
{
    struct tw_sideseed *q = arg;
    tw_server *srv = q->srv;
    void (*ready)(tw_server *) = q->ready;
    free(q);
    if (!srv) return;
    srv->side.seed = NULL;
    seed_apply(srv, ready, st, pos, n);
}

void tw_side_table_seed(tw_server *srv, void (*ready)(tw_server *srv))
{
    const chatd_api *api = srv->api;
    struct tw_sideseed *q;
    if (!PC_API_HAS(api, stream_heads) || !api->stream_heads) {
        seed_apply(srv, ready, CHATD_ERR_UNAVAILABLE, NULL, 0);
        return;
    }
    if (!(q = malloc(sizeof(*q)))) {
        srv->api->log(srv->ctx, CHATD_LOG_WARN, "out of memory seeding the side cursor table");
        ready(srv);
        return;
    }
    q->srv = srv;
    q->ready = ready;
    srv->side.seed = q;
    api->stream_heads(srv->ctx, seed_done, q);
}

int tw_side_seeding(const tw_server *srv)
{
    return srv->side.seed != NULL;
}

void tw_side_table_free(tw_server *srv)
{
    if (srv->side.seed) srv->side.seed->srv = NULL; /* answered later: dropped */
    srv->side.seed = NULL;
    free(srv->side.pos);
    srv->side.pos = NULL;
    srv->side.cap = 0;
}

/* ------------------------------------------------------------ encoding */

struct enc {
    uint8_t raw[RAW_MAX + 10];
    size_t n;
    int64_t prevk;
    int over;
};

static void put_varint(struct enc *e, uint64_t v)
{
    do {
        if (e->n >= sizeof(e->raw)) {
            e->over = 1;
            return;
        }
        uint8_t b = v & 0x7f;
        v >>= 7;
        e->raw[e->n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
}

static void put_entry(struct enc *e, uint32_t k, uint64_t pos)
{
    if (e->over) return;
    put_varint(e, (uint64_t)((int64_t)k - e->prevk - 1));
    put_varint(e, k == 0 ? pos : pos & POS_LOW_MASK);
    e->prevk = k;
    if (e->n > RAW_MAX) e->over = 1;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url of e->raw into out (cap bytes with the NUL); 0, or -1. */
static int b64_put(const struct enc *e, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < e->n; i += 3) {
        uint32_t v = (uint32_t)e->raw[i] << 16;
        size_t left = e->n - i;
        if (left > 1) v |= (uint32_t)e->raw[i + 1] << 8;
        if (left > 2) v |= e->raw[i + 2];
        size_t chars = left >= 3 ? 4 : left + 1;
        if (o + chars >= cap) return -1;
        for (size_t j = 0; j < chars; j++)
            out[o++] = B64[(v >> (18 - 6 * j)) & 0x3f];
    }
    out[o] = '\0';
    return 0;
}

/* The cursor: prefix, then "p" and the entries, or "x" when they do not fit. */
static int finish(const char *dest, const struct enc *e, char *out, size_t cap)
{
    int pl = tw_cursor_prefix(dest, out, cap);
    if (pl < 0 || (size_t)pl + 2 >= cap) return -1;
    if (e->over || e->n == 0 || b64_put(e, out + pl + 1, cap - (size_t)pl - 1) != 0) {
        memcpy(out + pl, "x", 2);
        return 0;
    }
    out[pl] = 'p';
    return 0;
}

int tw_side_cursor(tw_server *srv, const tw_sub *s, const char *dest, char *out, size_t cap)
{
    const tw_sidetable *t = &srv->side;
    const tw_sidevec *v = s ? s->vec : NULL;
    int use_table = !v || !s->replay; /* replaying: its own vector only */
    struct enc e = {.n = 0, .prevk = -1, .over = t->broken && use_table};
    size_t i = 0, k = 0, kmax = use_table ? t->cap : 0;
    while (!e.over && (k < kmax || (v && i < v->n))) {
        while (k < kmax && t->pos[k] == 0)
            k++;
        uint64_t tk = k < kmax ? k : UINT64_MAX, vk = v && i < v->n ? v->e[i].k : UINT64_MAX;
        if (tk == UINT64_MAX && vk == UINT64_MAX) break;
        if (tk < vk) {
            put_entry(&e, (uint32_t)tk, t->pos[k]);
            k++;
        } else if (vk < tk) {
            put_entry(&e, v->e[i].k, v->e[i].v);
            i++;
        } else {
            uint64_t a = t->pos[k], b = v->e[i].v;
            put_entry(&e, (uint32_t)tk, a > b ? a : b);
            k++;
            i++;
        }
    }
    return finish(dest, &e, out, cap);
}

/* ------------------------------------------------------------- parsing */

static int b64_val(char ch)
{
    const char *p = ch ? strchr(B64, ch) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Strict base64url (no padding, unused bits zero) of s into raw; bytes or -1. */
static long b64_get(const char *s, uint8_t *raw, size_t cap)
{
    size_t len = strlen(s), n = 0;
    if (len == 0 || len % 4 == 1) return -1;
    for (size_t i = 0; i < len; i += 4) {
        size_t chars = len - i >= 4 ? 4 : len - i;
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int d = j < chars ? b64_val(s[i + j]) : 0;
            if (d < 0) return -1;
            v = v << 6 | (uint32_t)d;
        }
        size_t bytes = chars - 1;
        if ((bytes == 1 && (v & 0xffff)) || (bytes == 2 && (v & 0xff))) return -1;
        if (n + bytes > cap) return -1;
        for (size_t j = 0; j < bytes; j++)
            raw[n++] = (uint8_t)(v >> (16 - 8 * j));
    }
    return (long)n;
}

/* A canonical varint of at most 64 bits at raw[*at]; 0, or -1. */
static int get_varint(const uint8_t *raw, size_t n, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*at >= n) return -1;
        uint8_t b = raw[(*at)++];
        if (shift == 63 && b > 1) return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            if (b == 0 && shift > 0) return -1; /* not the shortest form */
            *out = v;
            return 0;
        }
    }
    return -1;
}

static tw_sidevec *vec_new(size_t n)
{
    tw_sidevec *v = calloc(1, sizeof(*v) + (n ? n : 1) * sizeof(v->e[0]));
    if (v) v->n = n;
    return v;
}

int tw_side_parse(const char *dest, const char *cursor, tw_sidevec **out)
{
    char pre[TW_CURSOR_MAX];
    *out = NULL;
    int pl = tw_cursor_prefix(dest, pre, sizeof(pre));
    if (!cursor || pl < 0 || strncmp(cursor, pre, (size_t)pl) != 0) return -1;
    const char *p = cursor + pl;
    if (strlen(cursor) >= TW_CURSOR_MAX) return -1;
    if (strcmp(p, "x") == 0) return -2;
    if (p[0] >= '0' && p[0] <= '9') { /* side.<memberId>.<id>: before vectors */
        uint64_t id;
        if (p[0] == '0' || tw_parse_u64(p, &id) != 0 || id >= CHATD_POS_PARTITIONED) return -1;
        if (!(*out = vec_new(1))) return -3;
        (*out)->e[0].k = 0;
        (*out)->e[0].v = id;
        return 0;
    }
    if (p[0] != 'p') return -1;
    uint8_t raw[RAW_MAX + 4];
    long n = b64_get(p + 1, raw, sizeof(raw));
    if (n <= 0) return -1;
    tw_sidevec *v = vec_new((size_t)n / 2);
    if (!v) return -3;
    size_t at = 0, cnt = 0;
    int64_t prevk = -1;
    while (at < (size_t)n) {
        uint64_t dk, val;
        if (get_varint(raw, (size_t)n, &at, &dk) != 0 || dk > STREAM_MAX ||
            get_varint(raw, (size_t)n, &at, &val) != 0)
            goto bad;
        int64_t k = prevk + 1 + (int64_t)dk;
        if (k > (int64_t)STREAM_MAX) goto bad;
        if (k == 0 ? val == 0 || val >= CHATD_POS_PARTITIONED : val > POS_LOW_MASK) goto bad;
        v->e[cnt].k = (uint32_t)k;
        v->e[cnt].v =
            k == 0 ? val : (STREAM_BASE + (uint64_t)k - 1) << CHATD_POS_STREAM_SHIFT | val;
        cnt++;
        prevk = k;
    }
    if (cnt == 0) goto bad;
    v->n = cnt;
    *out = v;
    return 0;
bad:
    free(v);
    return -1;
}

/* ---------------------------------------------- resumed subscriptions */

tw_sidevec *tw_side_seed(tw_server *srv, const tw_sidevec *cur)
{
    const tw_sidetable *t = &srv->side;
    size_t extra = 0;
    for (size_t k = 0; k < t->cap; k++)
        extra += t->pos[k] != 0;
    tw_sidevec *v = vec_new(cur->n + extra);
    if (!v) return NULL;
    size_t i = 0, k = 0, n = 0;
    for (;;) {
        while (k < t->cap && t->pos[k] == 0)
            k++;
        uint64_t tk = k < t->cap ? k : UINT64_MAX, ck = i < cur->n ? cur->e[i].k : UINT64_MAX;
        if (tk == UINT64_MAX && ck == UINT64_MAX) break;
        if (ck <= tk) { /* the cursor's entry wins */
            v->e[n++] = cur->e[i++];
            if (ck == tk) k++;
        } else {
            v->e[n].k = (uint32_t)tk;
            v->e[n++].v = t->pos[k++];
        }
    }
    v->n = n;
    return v;
}

/* The entry of stream k in v, or NULL. */
static struct tw_sidepos *vec_find(tw_sidevec *v, uint32_t k)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->e[mid].k == k) return &v->e[mid];
        if (v->e[mid].k < k)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int tw_side_pass(tw_sub *s, uint64_t pos)
{
    struct tw_sidepos *e = vec_find(s->vec, tw_pos_stream(pos));
    if (!e) return 1; /* a stream new on this node since the resume: live, in order */
    if (pos <= e->v) return 0;
    e->v = pos;
    return 1;
}

size_t tw_side_ranges(const tw_sidevec *v, size_t from, uint64_t *after, uint64_t *until,
                      size_t max)
{
    size_t n = 0;
    for (size_t i = from; i < v->n && n < max; i++, n++) {
        after[n] = v->e[i].v;
        until[n] = stream_end(v->e[i].k);
    }
    return n;
}
