/*
 * list_token.h - the comma-separated list walk of HTTP field values
 * (RFC 9110 5.6.1: "a, b ,c"), shared by the HTTP parser and the WebSocket
 * handshake helpers. Header-only so that each codec stays a standalone
 * object (unit tests and fuzz targets link them one by one).
 */
#ifndef TW_LIST_TOKEN_H
#define TW_LIST_TOKEN_H

#include <stddef.h>

/* Next element of the list at *cursor: returns its first byte and sets *len
 * (surrounding blanks removed), advancing *cursor past it; NULL at the end.
 * Empty elements (",,") are skipped. */
static inline const char *list_token_next(const char **cursor, size_t *len)
{
    const char *s = *cursor;
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == ',')
            s++;
        if (!*s) {
            *cursor = s;
            return NULL;
        }
        const char *e = s;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        *cursor = e;
        if (t > s) {
            *len = (size_t)(t - s);
            return s;
        }
        s = e;
    }
}

#endif
