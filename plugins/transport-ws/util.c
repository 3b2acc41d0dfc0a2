/*
 * util.c - small helpers shared by the files of transport-ws: ISO 8601
 * times, strict decimal ids, the JSON string getter,
 * and the bytes a TCP peer acknowledged.
 */
#include "config.h"

#include "tw.h"

#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int tw_parse_i64(const char *s, int64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < 0) return -1;
    *out = v;
    return 0;
}

int tw_parse_u64(const char *s, uint64_t *out)
{
    if (!s || *s < '0' || *s > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return -1;
    *out = v;
    return 0;
}

const char *tw_json_str(json_object *o, const char *key, size_t *len)
{
    json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    /* a string with U+0000 would be cut short in C: refuse it instead */
    if (strlen(s) != n) return NULL;
    if (len) *len = n;
    return s;
}

int tw_tcp_acked(int fd, uint64_t *acked)
{
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0, sizeof(ti));
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
        return -1;
    *acked = ti.tcpi_bytes_acked;
    return 0;
}
