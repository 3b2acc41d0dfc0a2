/*
 * http_parser.h - strict, incremental HTTP/1.1 request parser of transport-ws.
 *
 * Pure C, no libevent: fed with whatever bytes arrived, it copies one request
 * into its own bounded buffer and reports how many input bytes it used, so the
 * rest (a pipelined request, or WebSocket frames after an upgrade) stays with
 * the caller. Its buffers are allocated as bytes arrive (growing to the limits
 * at most) and freed by http_parser_reset, so an idle parser holds none; the
 * head is scanned once, each call going on where the last one stopped. Bodies come with
 * Content-Length or Transfer-Encoding: chunked (trailers are dropped). Violations yield the HTTP
 * status to answer with: 400 malformed (also Content-Length together with Transfer-Encoding), 413
 * body or chunk too large, 414 request line too long, 417 an Expect other than 100-continue, 431
 * too many or too large headers, 501 unknown method or a transfer coding other than chunked, 503 no
 * memory for the body, 505 version.
 */
#ifndef TW_HTTP_PARSER_H
#define TW_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

typedef struct http_limits {
    size_t max_request_line; /* bytes of "METHOD target HTTP/1.1" */
    size_t max_header_bytes; /* request line + all header lines */
    size_t max_headers;      /* number of header fields */
    size_t max_body;         /* Content-Length bound */
} http_limits;

typedef struct http_header {
    const char *name;  /* as received (compare case-insensitively) */
    const char *value; /* leading/trailing whitespace removed */
} http_header;

typedef struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *target; /* origin-form, raw (not percent-decoded) */
    int version_minor;  /* 0 or 1 (HTTP/1.x) */
    http_header *headers;
    size_t nheaders;
    const char *body; /* NUL-terminated copy; body_len bytes */
    size_t body_len;
    int keep_alive; /* after this response, keep the connection */
} http_request;

enum { HTTP_PARSE_MORE = 0, HTTP_PARSE_DONE = 1, HTTP_PARSE_ERROR = -1 };

typedef struct http_parser {
    http_limits lim;
    int state;  /* internal */
    char *head; /* request line + headers so far + NUL; NULL until a byte */
    size_t head_len, head_cap;
    /* the scan of the head so far (it resumes there): the state of the line
     * end (0 in a line, 1 after LF, 2 after LF CR), an LF seen, lines ended */
    int eol;
    int head_lf;
    size_t head_lines;
    char *body;       /* the body so far + NUL */
    size_t body_need; /* bytes still due (Content-Length or current chunk) */
    int chunked;
    char line[80];   /* chunk-size line being read */
    size_t line_len; /* its length (also counts bytes of trailer lines) */
    size_t trailer_bytes;
    /* Set once the head of a request with "Expect: 100-continue" and a body
     * is parsed: the caller sends "100 Continue" and clears it. */
    int expect_continue;
    http_request req;  /* valid after HTTP_PARSE_DONE until reset/feed */
    int status;        /* HTTP status of the error after HTTP_PARSE_ERROR */
    const char *error; /* static reason after HTTP_PARSE_ERROR */
} http_parser;

/* Set up (nothing is allocated yet). Returns 0, or -1 on unusable limits. */
int http_parser_init(http_parser *p, const http_limits *lim);
void http_parser_free(http_parser *p);
/* Forget the current request and free its buffers; ready for the next one. */
void http_parser_reset(http_parser *p);

/* Feed bytes; *consumed says how many were used (the rest belongs to what
 * follows the request). Returns HTTP_PARSE_MORE, HTTP_PARSE_DONE (p->req is
 * complete) or HTTP_PARSE_ERROR (p->status, p->error; answer and close). */
int http_parser_feed(http_parser *p, const char *data, size_t len, size_t *consumed);

/* First header called `name` (case-insensitive), or NULL. */
const char *http_request_header(const http_request *r, const char *name);
/* How many field lines are called `name` (a singleton field given twice is
 * malformed, RFC 9110 5.3). */
size_t http_request_header_lines(const http_request *r, const char *name);

/* Does the comma-separated list `value` contain `token` (case-insensitive)? */
int http_has_token(const char *value, const char *token);

/* The same over every field line called `name` (a list may be split). */
int http_request_has_token(const http_request *r, const char *name, const char *token);

/* Number of field lines called `name`. */
size_t http_request_count(const http_request *r, const char *name);

/* Every field line called `name` joined with ", " into out (NUL-terminated).
 * Returns out, or NULL when there is none or it does not fit. */
const char *http_request_join(const http_request *r, const char *name, char *out, size_t outsz);

/* Percent-decode `in` (len bytes) into out (size outsz, NUL-terminated).
 * '+' is kept. Returns the decoded length, or -1 on a bad escape, an encoded
 * NUL, or no room. */
long http_percent_decode(const char *in, size_t len, char *out, size_t outsz);

#endif
