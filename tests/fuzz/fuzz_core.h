/*
 * fuzz_core.h - the test core of the fuzz targets that drive a real
 * transport-ws instance (REST, static files, STOMP sessions): the real core's
 * configuration, messages, metrics and post queue, with members, sessions,
 * rooms, history and publishing answered from a fixed in-memory world, and
 * one loopback TCP connection per input. Plus the client-side checks of what
 * the server sends back (HTTP responses, WebSocket frames).
 *
 * The plumbing is the shared test core (tests/lib/testcore.c): the daemon's
 * api table with counted message references, post() and config checking.
 * The world: members 1 alice, 2 bob, 3 carol; tokens FZ_TOKEN_ALICE and
 * FZ_TOKEN_BOB; alice's password FZ_PASSWORD. Any failed check abort()s.
 */
#ifndef FUZZ_CORE_H
#define FUZZ_CORE_H

#include <chatd/plugin.h>
#include <stddef.h>
#include <stdint.h>

#define FZ_TOKEN_ALICE "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define FZ_TOKEN_BOB "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
#define FZ_PASSWORD "correct horse"

/* Abort with a message when a check fails (also in builds without assert). */
#define FZ_CHECK(cond, ...)                                                                        \
    do {                                                                                           \
        if (!(cond)) fz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                              \
    } while (0)
void fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Default of a numeric transport-ws key, from the plugin's own key table. */
int64_t fz_default(const char *key);

typedef struct fz_buf {
    char *p;
    size_t len, cap;
} fz_buf;
void fz_buf_add(fz_buf *b, const void *data, size_t len);
void fz_buf_free(fz_buf *b);

/* Start the transport-ws instance once per process (later calls do nothing).
 * extra: "key=value" settings of its section, NULL-terminated, or NULL. The
 * web root holds index.html, app.js, sub/index.html and links that point
 * outside it, next to a file whose content is FZ_SECRET. */
void fz_start(const char *const *extra);
#define FZ_SECRET "SECRET-OUTSIDE-THE-WEB-ROOT"
/* 1: the test core answers members, sessions, rooms, history and publishes
 * later (through post()), as a real store would; 0: before returning. */
void fz_set_async(int on);
/* 1: keep those answers until fz_hold(0) (or fz_close) posts them, so that
 * a client can go away while they are pending. */
void fz_hold(int on);
/* Content of web root file `rel` ("/index.html"), or NULL. */
const char *fz_web_file(const char *rel);

/* A new client connection, accepted by the server; returns its fd. */
int fz_connect(void);
/* Write all of data (pumping the loop while the socket is full); stops early
 * when the server no longer reads or has closed. */
void fz_send(int fd, const void *data, size_t len);
/* Run the loop until nothing moves; append what the server sent to out.
 * Returns 1 when the server has closed the connection (EOF or reset). */
int fz_pump(int fd, fz_buf *out);
/* Run n rounds of the loop (no waiting for quiet). */
void fz_step(int n);
/* Close the client side (a reset) and check that the server drops the
 * connection, and that once the answers still posted have run no message
 * reference is left. */
void fz_close(int fd);
/* Open connections on the server side (its chatd_ws_connections gauge). */
long fz_server_conns(void);
/* The address it listens on. */
struct sockaddr_in;
const struct sockaddr_in *fz_server_addr(void);

/* One HTTP/1.1 response parsed strictly from p[0..len): returns the bytes it
 * took, 0 when incomplete, and aborts when malformed. head: the request was
 * HEAD (no body follows). */
typedef struct fz_http_resp {
    int status;
    int close; /* Connection: close */
    long content_length;
    char ctype[128];
    char location[512];
    const char *body;
    size_t body_len;
} fz_http_resp;
size_t fz_http_parse(const char *p, size_t len, int head, fz_http_resp *r);
/* fz_pump, then more while the bytes that came are the start of an HTTP
 * response that is not whole yet (its later writes not readable yet on a busy
 * machine); 1 on EOF. */
int fz_pump_http(int fd, fz_buf *out, int head);
/* A JSON body must parse completely as an object or array. */
void fz_check_json(const char *body, size_t len);

/* Encode one masked client WebSocket frame into out. */
void fz_ws_frame(fz_buf *out, int opcode, int fin, const void *data, size_t len);

#endif
