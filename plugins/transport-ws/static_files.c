/*
 * static_files.c - serves the chat page from web_root: GET/HEAD only,
 * index.html for directories, Content-Type by extension, ETag and
 * Last-Modified with 304 answers, nosniff, Referrer-Policy and a CSP that
 * forbids framing, no dot-files, and no path traversal (the resolved real
 * path must stay inside the real web_root). Files are capped in size and
 * handed to libevent (evbuffer_add_file) rather than read on the loop.
 */
#include "config.h"

#include "tw.h"

#include <errno.h>
#include <event2/buffer.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *mime_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".webmanifest", "application/manifest+json"},
        {".map", "application/json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
    return "application/octet-stream";
}

static void not_found(tw_conn *c)
{
    tw_http_error(c, 404, "not found");
    tw_http_done(c);
}

void tw_static_serve(tw_conn *c, const http_request *req, const char *path)
{
    tw_server *s = c->srv;
    char rel[PATH_MAX], want[PATH_MAX], real[PATH_MAX];

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        tw_http_method_not_allowed(c, "GET, HEAD");
        return;
    }
    if (!s->web_root) {
        not_found(c);
        return;
    }
    long n = http_percent_decode(path, strlen(path), rel, sizeof(rel));
    if (n <= 0 || rel[0] != '/') {
        tw_http_error(c, 400, "malformed path");
        tw_http_done(c);
        return;
    }
    /* refuse dot segments outright; realpath below also contains symlinks */
    if (strstr(rel, "/../") || strstr(rel, "/./") || strstr(rel, "//") ||
        (n >= 3 && strcmp(rel + n - 3, "/..") == 0) || (n >= 2 && strcmp(rel + n - 2, "/.") == 0)) {
        not_found(c);
        return;
    }
    /* no dot-files or dot-directories (.env, .git/...) */
    if (strstr(rel, "/.")) {
        not_found(c);
        return;
    }
    int w = snprintf(want, sizeof(want), "%s%s%s", s->web_root, rel,
                     rel[n - 1] == '/' ? "index.html" : "");
    if (w < 0 || (size_t)w >= sizeof(want) || !realpath(want, real)) {
        not_found(c);
        return;
    }
    size_t rl = strlen(s->web_root);
    if (strncmp(real, s->web_root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
        s->api->log(s->ctx, CHATD_LOG_WARN, "%s: refused a path outside web_root: %s", c->peer,
                    path);
        not_found(c);
        return;
    }
    struct stat st;
    if (stat(real, &st) != 0) {
        not_found(c);
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        /* a directory without the trailing slash: redirect so that relative
         * links of its index.html resolve */
        char loc[PATH_MAX + 32];
        snprintf(loc, sizeof(loc), "Location: %s/\r\n", path);
        tw_http_respond(c, 301, "text/plain; charset=utf-8", loc, "moved\n", 6);
        tw_http_done(c);
        return;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > s->static_max) {
        not_found(c);
        return;
    }
    char etag[64], lm[64], extra[384];
    struct tm tm;
    snprintf(etag, sizeof(etag), "\"%" PRIx64 "-%" PRIx64 "-%" PRIx64 "\"", (uint64_t)st.st_size,
             (uint64_t)st.st_mtim.tv_sec, (uint64_t)st.st_mtim.tv_nsec);
    gmtime_r(&st.st_mtime, &tm);
    strftime(lm, sizeof(lm), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    snprintf(extra, sizeof(extra),
             "ETag: %s\r\nLast-Modified: %s\r\nCache-Control: no-cache\r\n"
             "Referrer-Policy: no-referrer\r\n"
             "Content-Security-Policy: frame-ancestors 'none'\r\n",
             etag, lm);

    const char *inm = http_request_header(req, "If-None-Match");
    const char *ims = http_request_header(req, "If-Modified-Since");
    int fresh = 0;
    if (inm)
        fresh = strstr(inm, etag) != NULL || strcmp(inm, "*") == 0;
    else if (ims)
        fresh = strcmp(ims, lm) == 0;
    if (fresh) {
        tw_http_respond(c, 304, NULL, extra, NULL, 0);
        tw_http_done(c);
        return;
    }
    int fd = open(real, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        not_found(c);
        return;
    }
    struct stat st2;
    if (fstat(fd, &st2) != 0 || st2.st_size != st.st_size || !S_ISREG(st2.st_mode)) {
        close(fd);
        tw_http_error(c, 503, "file changed while being served; retry");
        tw_http_done(c);
        return;
    }
    /* headers first (length known), then the file segment: libevent sends it
     * with sendfile/mmap and closes fd when done */
    tw_http_respond(c, 200, mime_type(real), extra, NULL, (size_t)st.st_size);
    if (c->req_head || st.st_size == 0) {
        close(fd);
    } else if (evbuffer_add_file(tw_conn_out(c), fd, 0, st.st_size) != 0) {
        close(fd);
        s->api->log(s->ctx, CHATD_LOG_ERROR, "%s: cannot queue %s; closing", c->peer, real);
        c->req_keep = 0;
    }
    tw_http_done(c);
}
