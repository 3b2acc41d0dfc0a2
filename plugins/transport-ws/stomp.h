/*
 * stomp.h - STOMP 1.0/1.1/1.2 frame parser and header escaping of
 * transport-ws. The parser works on a byte stream: several frames per
 * WebSocket message, one frame split over several, heart-beat EOLs between
 * frames, content-length bodies that contain NUL, NUL-terminated bodies, LF or
 * CRLF line ends. Repeated headers are kept; lookups return the first (the
 * one that wins). Pure C, no libevent, so it can be fuzzed.
 */
#ifndef TW_STOMP_H
#define TW_STOMP_H

#include <stddef.h>

/* Escaping rules: 10 = STOMP 1.0 (none), 11 = 1.1 (\n \c \\), 12 = 1.2 (+ \r). */
enum { STOMP_V10 = 10, STOMP_V11 = 11, STOMP_V12 = 12 };

typedef struct stomp_limits {
    size_t max_headers;     /* header lines per frame */
    size_t max_header_line; /* bytes of one line (command or header) */
    size_t max_body;        /* body bytes */
    size_t max_frame;       /* whole frame; also bounds buffered partial input */
} stomp_limits;

typedef struct stomp_header {
    char *name;
    char *value;
} stomp_header;

typedef struct stomp_frame {
    const char *command;
    stomp_header *headers;
    size_t nheaders;
    const char *body; /* body_len bytes, followed by a NUL */
    size_t body_len;
} stomp_frame;

typedef struct stomp_parser {
    stomp_limits lim;
    int version; /* escaping rules for frames other than CONNECT/CONNECTED */
    char *buf;   /* NULL while nothing is buffered (freed when emptied) */
    size_t start, len, cap;
    size_t last;        /* size of the frame handed out last; dropped on the next call */
    stomp_header *hdrs; /* headers of the frame handed out last */
    /* the scan of the frame at `start` so far, in offsets from start: the
     * next call goes on from there instead of from the frame's first byte */
    size_t scan_pos;          /* first header line not yet seen whole */
    size_t scan_lines;        /* lines seen whole (the command and headers) */
    long long scan_len;       /* content-length, or -1 */
    size_t body_at;           /* where the body starts; 0 while the headers are not all in */
    size_t body_scan;         /* body bytes already searched for the NUL */
    unsigned long heartbeats; /* EOLs seen between frames */
    const char *error;        /* static reason after an error */
    int too_big;              /* the error is a size limit (frame or body) */
} stomp_parser;

/* Returns 0 (nothing is allocated until bytes arrive). version starts as
 * STOMP_V12 for escaping purposes; the session sets p->version after
 * negotiation. */
int stomp_parser_init(stomp_parser *p, const stomp_limits *lim);
void stomp_parser_free(stomp_parser *p);

/* Append bytes. Returns 0, or -1 (p->error) when more than the limits allow
 * would be buffered (or out of memory: the buffer grows on demand). The
 * caller may raise p->lim between calls (e.g. once authenticated).
 * Invalidates the last frame. */
int stomp_parser_feed(stomp_parser *p, const char *data, size_t len);

/* Next complete frame: 1 (frame valid until the next feed/next call), 0 (need
 * more input), -1 (malformed or over a limit: p->error; send ERROR, close). */
int stomp_parser_next(stomp_parser *p, stomp_frame *f);

/* After an error of the parser: the receipt header (the first, unescaped)
 * of the frame it was reading, from its complete raw header lines, so that
 * the ERROR can name it (STOMP 1.2 "ERROR": receipt-id). 0 with out set, or
 * -1 when there is none, it does not fit or the lines were already split. */
int stomp_parser_receipt(const stomp_parser *p, char *out, size_t outsz);

/* First header `name` (case-sensitive, as STOMP says), or NULL. */
const char *stomp_frame_header(const stomp_frame *f, const char *name);

/* Escape src for a header of `version` into dst (size dstsz, NUL-terminated;
 * when short, cut before the first character or escape that does not fit
 * whole). Returns the full escaped length, like snprintf. */
size_t stomp_escape(char *dst, size_t dstsz, const char *src, int version);

#endif
