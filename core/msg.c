/*
 * core/msg.c - the reference-counted message (chatd_msg): creation from
 * fields, the JSON wire form (encoded once and cached, so one body is shared
 * by every subscriber and the queue), and parsing it back (json-c).
 *
 * A message is immutable once it leaves the filter stage; msg_set_text is
 * refused outside it.
 */
#include "config.h"

#include "core.h"

#include <json-c/json.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Longest login id accepted from the wire. */
#define WRITER_MAX 64

struct chatd_msg {
    atomic_uint refs;
    bool mut; /* msg_set_text allowed (filter stage) */
    chatd_msg_kind kind;
    uint64_t id;
    _Atomic uint64_t pos; /* position in the room's order; 0: the id (set once, msg_set_pos) */
    uint64_t up_to;
    int64_t writer_id;
    int64_t time_ms;
    int64_t low, high; /* the room's members */
    char *room;        /* canonical "low&high" */
    char *writer;
    char *text;
    size_t text_len;
    char *idem_key; /* the sender's idempotency key, NULL when none */
    char *json;     /* cached wire form */
    size_t json_len;
    bool text_own; /* text is its own allocation (msg_set_text), not in strs */
    char strs[];   /* room, writer, key and text, in the message's allocation */
};

bool utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        if (c == 0) return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false; /* continuation byte, overlong lead or > U+10FFFF */
        }
        if (len - i <= n) return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

static void put_digits(char *p, unsigned v, int n)
{
    while (n-- > 0) {
        p[n] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* Days since 1970-01-01 to a proleptic Gregorian date (the civil-from-days
 * computation on 400-year eras). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

void time_format_iso(int64_t ms, char *buf, size_t size)
{
    int64_t sec = ms / 1000;
    int milli = (int)(ms % 1000);
    if (milli < 0) {
        milli += 1000;
        sec--;
    }
    int64_t days = sec / 86400, rem = sec % 86400;
    if (rem < 0) {
        rem += 86400;
        days--;
    }
    int64_t year;
    unsigned mon, mday;
    civil_from_days(days, &year, &mon, &mday);
    if (year < 0 || year > 9999) { /* what %04d makes of it, as before */
        time_t t = (time_t)sec;
        struct tm tm;
        if (!gmtime_r(&t, &tm)) {
            snprintf(buf, size, "1970-01-01T00:00:00.000Z");
            return;
        }
        snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, milli);
        return;
    }
    char t[] = "0000-00-00T00:00:00.000Z";
    put_digits(t, (unsigned)year, 4);
    put_digits(t + 5, mon, 2);
    put_digits(t + 8, mday, 2);
    put_digits(t + 11, (unsigned)(rem / 3600), 2);
    put_digits(t + 14, (unsigned)(rem / 60 % 60), 2);
    put_digits(t + 17, (unsigned)(rem % 60), 2);
    put_digits(t + 20, (unsigned)milli, 3);
    if (size == 0) return;
    size_t n = sizeof(t) - 1 < size - 1 ? sizeof(t) - 1 : size - 1; /* as snprintf cuts */
    memcpy(buf, t, n);
    buf[n] = '\0';
}

/* "YYYY-MM-DDTHH:MM:SS[.mmm]Z" -> Unix ms; 0 or -1. */
static int time_parse_iso(const char *s, int64_t *out)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p) return -1;
    int milli = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (digits < 3) milli = milli * 10 + (*p - '0');
            digits++;
            p++;
        }
        if (digits == 0) return -1;
        for (; digits < 3; digits++)
            milli *= 10;
    }
    if (strcmp(p, "Z") != 0) return -1;
    time_t t = timegm(&tm);
    if (t == (time_t)-1) return -1;
    *out = (int64_t)t * 1000 + milli;
    return 0;
}

bool idem_key_valid(const char *key)
{
    size_t n = 0;
    if (!key) return false;
    for (; key[n]; n++)
        if ((unsigned char)key[n] < 0x21 || (unsigned char)key[n] > 0x7e || n >= IDEM_KEY_MAX)
            return false;
    return n > 0;
}

chatd_status msg_create(const chatd_msg_fields *f, chatd_msg **out)
{
    *out = NULL;
    if (!f || f->size < offsetof(chatd_msg_fields, up_to) + sizeof(f->up_to))
        return CHATD_ERR_INVALID;
    if (f->kind != CHATD_MSG_CHAT && f->kind != CHATD_MSG_READ) return CHATD_ERR_INVALID;
    int64_t low, high;
    if (room_parse(f->room_id, &low, &high) != CHATD_OK || !f->writer || !f->writer[0] ||
        strlen(f->writer) > WRITER_MAX || f->writer_id <= 0)
        return CHATD_ERR_INVALID;
    const char *text = "";
    size_t text_len = 0;
    const char *key = f->size >= offsetof(chatd_msg_fields, idem_key) + sizeof(f->idem_key) &&
                              f->kind == CHATD_MSG_CHAT
                          ? f->idem_key
                          : NULL;
    if (key && !idem_key_valid(key)) return CHATD_ERR_INVALID;
    if (f->kind == CHATD_MSG_CHAT) {
        if (!f->text || !utf8_valid(f->text, f->text_len)) return CHATD_ERR_INVALID;
        text = f->text;
        text_len = f->text_len;
    }
    char room[CHATD_ROOM_ID_MAX];
    int rl = room_format(room, sizeof(room), low, high);
    if (rl < 0) return CHATD_ERR_INVALID;
    size_t room_len = (size_t)rl, writer_len = strlen(f->writer),
           key_len = key ? strlen(key) + 1 : 0;
    /* one allocation: the record, then its strings */
    chatd_msg *m = malloc(sizeof(*m) + room_len + 1 + writer_len + 1 + key_len + text_len + 1);
    if (!m) return CHATD_ERR_NOMEM;
    memset(m, 0, sizeof(*m));
    atomic_init(&m->refs, 1);
    m->kind = f->kind;
    m->id = f->id;
    atomic_init(&m->pos, CHATD_HAS(chatd_msg_fields, f, pos) ? f->pos : 0);
    m->up_to = f->kind == CHATD_MSG_READ ? f->up_to : 0;
    m->writer_id = f->writer_id;
    m->time_ms = f->time_ms;
    m->low = low;
    m->high = high;
    char *p = m->strs;
    m->room = memcpy(p, room, room_len + 1);
    p += room_len + 1;
    m->writer = memcpy(p, f->writer, writer_len + 1);
    p += writer_len + 1;
    if (key) {
        m->idem_key = memcpy(p, key, key_len);
        p += key_len;
    }
    m->text = p;
    memcpy(m->text, text, text_len);
    m->text[text_len] = '\0';
    m->text_len = text_len;
    *out = m;
    return CHATD_OK;
}

chatd_msg *msg_ref(chatd_msg *m)
{
    if (m) atomic_fetch_add(&m->refs, 1);
    return m;
}

void msg_unref(chatd_msg *m)
{
    if (!m || atomic_fetch_sub(&m->refs, 1) != 1) return;
    if (m->text_own) free(m->text);
    free(m->json);
    free(m);
}

chatd_msg_kind msg_kind(const chatd_msg *m)
{
    return m->kind;
}
uint64_t msg_id(const chatd_msg *m)
{
    return m->id;
}
const char *msg_room(const chatd_msg *m)
{
    return m->room;
}
void msg_room_members(const chatd_msg *m, int64_t *low, int64_t *high)
{
    if (low) *low = m->low;
    if (high) *high = m->high;
}
int64_t msg_writer_id(const chatd_msg *m)
{
    return m->writer_id;
}
const char *msg_writer(const chatd_msg *m)
{
    return m->writer;
}
int64_t msg_time_ms(const chatd_msg *m)
{
    return m->time_ms;
}
uint64_t msg_pos(const chatd_msg *m)
{
    uint64_t pos = atomic_load_explicit(&m->pos, memory_order_acquire);
    return pos ? pos : m->id;
}
/* Any value while the caller holds the only reference; on a shared message
 * (one being published) only once, from unset: readers on other threads see
 * either the id or the final position, never a change after that. */
chatd_status msg_set_pos(chatd_msg *m, uint64_t pos)
{
    uint64_t unset = 0;
    if (!m || pos == 0) return CHATD_ERR_INVALID;
    if (atomic_load(&m->refs) == 1) {
        atomic_store_explicit(&m->pos, pos, memory_order_release);
        return CHATD_OK;
    }
    if (atomic_compare_exchange_strong_explicit(&m->pos, &unset, pos, memory_order_acq_rel,
                                                memory_order_acquire) ||
        unset == pos)
        return CHATD_OK;
    return CHATD_ERR_INVALID;
}
uint64_t msg_up_to(const chatd_msg *m)
{
    return m->up_to;
}
const char *msg_idem_key(const chatd_msg *m)
{
    return m->idem_key;
}

const char *msg_text(const chatd_msg *m, size_t *len)
{
    if (len) *len = m->text_len;
    return m->text;
}

void msg_set_mutable(chatd_msg *m, bool on)
{
    m->mut = on;
}

chatd_status msg_set_text(chatd_msg *m, const char *text, size_t len)
{
    if (!m || !m->mut || m->kind != CHATD_MSG_CHAT || !text || !utf8_valid(text, len))
        return CHATD_ERR_INVALID;
    char *t = malloc(len + 1);
    if (!t) return CHATD_ERR_NOMEM;
    memcpy(t, text, len);
    t[len] = '\0';
    if (m->text_own) free(m->text);
    m->text = t;
    m->text_own = true;
    m->text_len = len;
    free(m->json);
    m->json = NULL;
    m->json_len = 0;
    return CHATD_OK;
}

/* The wire form is written by hand, byte for byte what json-c writes with
 * JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE (keys in this
 * order, no spaces, '"' '\\' and the C0 controls escaped, \b \f \n \r \t by
 * name, the others as \u00xx, everything else as is): one allocation
 * instead of a json-c object tree per message. */
static size_t json_escaped_len(const char *s, size_t n)
{
    size_t out = n;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\' || ch == '\b' || ch == '\f' || ch == '\n' || ch == '\r' ||
            ch == '\t')
            out++;
        else if (ch < 0x20)
            out += 5;
    }
    return out;
}

static char *put_str(char *p, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc = 0;
        switch (ch) {
        case '"':
            esc = '"';
            break;
        case '\\':
            esc = '\\';
            break;
        case '\b':
            esc = 'b';
            break;
        case '\f':
            esc = 'f';
            break;
        case '\n':
            esc = 'n';
            break;
        case '\r':
            esc = 'r';
            break;
        case '\t':
            esc = 't';
            break;
        default:
            break;
        }
        if (esc) {
            *p++ = '\\';
            *p++ = esc;
        } else if (ch < 0x20) {
            memcpy(p, "\\u00", 4);
            p[4] = hex[ch >> 4];
            p[5] = hex[ch & 15];
            p += 6;
        } else {
            *p++ = (char)ch;
        }
    }
    *p++ = '"';
    return p;
}

/* "KEY": (the key is a literal without anything to escape) */
static char *put_key(char *p, const char *key, size_t n)
{
    *p++ = '"';
    memcpy(p, key, n);
    p += n;
    *p++ = '"';
    *p++ = ':';
    return p;
}
#define PUT_KEY(p, lit) put_key((p), (lit), sizeof(lit) - 1)

size_t fmt_u64(char *dst, uint64_t v)
{
    char d[20];
    size_t n = 0, k = 0;
    do {
        d[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        dst[k++] = d[--n];
    return k;
}

static char *put_u64(char *p, uint64_t v)
{
    return p + fmt_u64(p, v);
}

static char *put_i64(char *p, int64_t v)
{
    if (v < 0) {
        *p++ = '-';
        return put_u64(p, (uint64_t)0 - (uint64_t)v);
    }
    return put_u64(p, (uint64_t)v);
}

const char *msg_json(chatd_msg *m, size_t *len)
{
    if (m->json) {
        if (len) *len = m->json_len;
        return m->json;
    }
    char ts[32];
    time_format_iso(m->time_ms, ts, sizeof(ts));
    bool chat = m->kind == CHATD_MSG_CHAT;
    size_t room_len = strlen(m->room), writer_len = strlen(m->writer), ts_len = strlen(ts);
    size_t key_len = m->idem_key ? strlen(m->idem_key) : 0;
    /* keys, quotes, colons and commas: 160 is more than all of them; each
     * number at most 20 digits and a sign */
    size_t cap = 160 + 4 * 21 + json_escaped_len(m->room, room_len) +
                 json_escaped_len(m->writer, writer_len) + ts_len +
                 (chat ? json_escaped_len(m->text, m->text_len) : 0) +
                 (key_len ? json_escaped_len(m->idem_key, key_len) : 0);
    char *out = malloc(cap);
    if (!out) return NULL;
    char *p = out;
    *p++ = '{';
    p = PUT_KEY(p, "type");
    p = put_str(p, chat ? "chat" : "read", 4);
    *p++ = ',';
    p = PUT_KEY(p, "id");
    *p++ = '"';
    p = put_u64(p, m->id);
    *p++ = '"';
    *p++ = ',';
    p = PUT_KEY(p, "roomId");
    p = put_str(p, m->room, room_len);
    *p++ = ',';
    p = PUT_KEY(p, "writer");
    p = put_str(p, m->writer, writer_len);
    *p++ = ',';
    p = PUT_KEY(p, "writerId");
    p = put_i64(p, m->writer_id);
    *p++ = ',';
    if (chat) {
        p = PUT_KEY(p, "message");
        p = put_str(p, m->text, m->text_len);
        *p++ = ',';
        if (m->idem_key) {
            p = PUT_KEY(p, "idempotencyKey");
            p = put_str(p, m->idem_key, key_len);
            *p++ = ',';
        }
    } else {
        p = PUT_KEY(p, "memberId");
        p = put_i64(p, m->writer_id);
        *p++ = ',';
        p = PUT_KEY(p, "upTo");
        *p++ = '"';
        p = put_u64(p, m->up_to);
        *p++ = '"';
        *p++ = ',';
    }
    p = PUT_KEY(p, "timestamp");
    p = put_str(p, ts, ts_len);
    *p++ = '}';
    *p = '\0';
    m->json = out;
    m->json_len = (size_t)(p - out);
    if (len) *len = m->json_len;
    return m->json;
}

static const char *get_str(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    if (len) *len = (size_t)json_object_get_string_len(v);
    return json_object_get_string(v);
}

static int get_id(json_object *o, const char *key, uint64_t *out)
{
    size_t n;
    const char *s = get_str(o, key, &n);
    return s ? ids_parse(s, n, out) : -1;
}

static int get_int(json_object *o, const char *key, int64_t *out)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int)) return -1;
    *out = json_object_get_int64(v);
    return 0;
}

chatd_status msg_parse_json(const char *json, size_t len, chatd_msg **out)
{
    *out = NULL;
    if (!json || len == 0 || len > 16 * 1024 * 1024) return CHATD_ERR_INVALID;
    json_tokener *tok = json_tokener_new();
    if (!tok) return CHATD_ERR_NOMEM;
    json_object *o = json_tokener_parse_ex(tok, json, (int)len);
    bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                    json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    chatd_status st = CHATD_ERR_INVALID;
    if (!o || !complete || !json_object_is_type(o, json_type_object)) goto out;

    chatd_msg_fields f = {.size = sizeof(f)};
    const char *type = get_str(o, "type", NULL);
    if (!type) goto out;
    if (strcmp(type, "chat") == 0)
        f.kind = CHATD_MSG_CHAT;
    else if (strcmp(type, "read") == 0)
        f.kind = CHATD_MSG_READ;
    else
        goto out;
    const char *ts = get_str(o, "timestamp", NULL);
    f.room_id = get_str(o, "roomId", NULL);
    f.writer = get_str(o, "writer", NULL);
    if (get_id(o, "id", &f.id) != 0 || f.id == 0 || !ts || time_parse_iso(ts, &f.time_ms) != 0 ||
        get_int(o, "writerId", &f.writer_id) != 0)
        goto out;
    if (f.kind == CHATD_MSG_CHAT) {
        f.text = get_str(o, "message", &f.text_len);
        if (!f.text) goto out;
        json_object *k;
        if (json_object_object_get_ex(o, "idempotencyKey", &k) &&
            !(f.idem_key = get_str(o, "idempotencyKey", NULL)))
            goto out;
    } else {
        int64_t member;
        if (get_id(o, "upTo", &f.up_to) != 0 || get_int(o, "memberId", &member) != 0 ||
            member != f.writer_id)
            goto out;
    }
    st = msg_create(&f, out);
out:
    json_object_put(o);
    return st;
}
