/*
 * rest_page.c - paging of the REST lists GET /api/members and GET /api/rooms:
 * the limit/after/q query parameters, the choice of one page of the core's
 * rows, and the RFC 8288 Link header that names the next page.
 */
#include "tw.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

const char *tw_page_parse(const tw_server *s, const char *query, int rooms, tw_page *p)
{
    char v[TW_PAGE_AFTER_MAX + 1];
    uint64_t x;
    memset(p, 0, sizeof(*p));
    p->limit = (unsigned)s->page_limit;
    int rc = tw_query_get(query, "limit", v, sizeof(v));
    if (rc < 0 || (rc > 0 && (tw_parse_u64(v, &x) != 0 || x < 1)))
        return "limit must be a whole number >= 1 (a larger one than page_limit_max is clamped)";
    if (rc > 0)
        p->limit = x > (uint64_t)s->page_limit_max ? (unsigned)s->page_limit_max : (unsigned)x;
    rc = tw_query_get(query, "after", p->after, sizeof(p->after));
    if (rc < 0 || (rc > 0 && !p->after[0]))
        return rooms ? "after must be a room id" : "after must be a member id";
    if (rc > 0 && !rooms) {
        if (tw_parse_u64(p->after, &x) != 0 || x > INT64_MAX) return "after must be a member id";
        p->after_id = (int64_t)x;
    }
    if (tw_query_get(query, "q", p->q, sizeof(p->q)) < 0) return "q must be at most 64 bytes";
    return NULL;
}

/* s starts with prefix, ASCII letters compared without case. */
static int page_prefix(const char *s, const char *prefix)
{
    if (!s) return !*prefix;
    for (; *prefix; s++, prefix++)
        if (!*s || tolower((unsigned char)*s) != tolower((unsigned char)*prefix)) return 0;
    return 1;
}

size_t tw_page_members(const tw_page *p, const chatd_member *rows, size_t n, size_t *out, int *more)
{
    size_t k = 0;
    *more = 0;
    for (size_t i = 0; i < n; i++) {
        const chatd_member *m = CHATD_ROW(chatd_member, rows, i);
        if (m->id <= p->after_id) continue;
        if (p->q[0] && !page_prefix(m->login_id, p->q) && !page_prefix(m->name, p->q)) continue;
        if (k == p->limit) {
            *more = 1;
            break;
        }
        out[k++] = i;
    }
    return k;
}

size_t tw_page_rooms(const tw_page *p, const chatd_room_summary *rows, size_t n, size_t *out,
                     int *more)
{
    size_t k = 0, i = 0;
    *more = 0;
    if (p->after[0]) { /* the store's order (newest first): go on after that room */
        while (i < n && strcmp(CHATD_ROW(chatd_room_summary, rows, i)->room_id, p->after) != 0)
            i++;
        i++;
    }
    for (; i < n; i++) {
        const chatd_room_summary *r = CHATD_ROW(chatd_room_summary, rows, i);
        if (p->q[0] && !page_prefix(r->peer_login, p->q) && !page_prefix(r->peer_name, p->q))
            continue;
        if (k == p->limit) {
            *more = 1;
            break;
        }
        out[k++] = i;
    }
    return k;
}

/* Percent-encode s (all but RFC 3986 unreserved) at the end of out. */
static void page_encode(char *out, size_t outsz, const char *s)
{
    size_t len = strlen(out);
    for (; *s && len + 4 < outsz; s++) {
        unsigned char ch = (unsigned char)*s;
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~')
            out[len++] = (char)ch;
        else
            len += (size_t)snprintf(out + len, outsz - len, "%%%02X", ch);
    }
    out[len] = '\0';
}

void tw_page_link(const tw_page *p, const char *base, const char *last, char *out, size_t outsz)
{
    snprintf(out, outsz, "Link: <%s?after=", base);
    page_encode(out, outsz, last);
    size_t len = strlen(out);
    snprintf(out + len, outsz - len, "&limit=%u", p->limit);
    if (p->q[0]) {
        len = strlen(out);
        snprintf(out + len, outsz - len, "&q=");
        page_encode(out, outsz, p->q);
    }
    len = strlen(out);
    snprintf(out + len, outsz - len, ">; rel=\"next\"\r\n");
}
