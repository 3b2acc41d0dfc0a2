/*
 * http_response.c - HTTP/1.1 responses of transport-ws: the status line and
 * common headers (Date, Server, Content-Length, Connection), JSON error
 * bodies, 405 with Allow, and what follows a response (next pipelined
 * request, or close after the flush).
 */
#include "config.h"

#include "tw.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

const char *tw_status_text(int status)
{
    switch (status) {
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 426:
        return "Upgrade Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

static void http_head(tw_conn *c, int status, const char *ctype, const char *extra, size_t len)
{
    struct evbuffer *out = tw_conn_out(c);
    char date[64];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (c->srv->stopping) c->req_keep = 0;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nServer: chatd/%s\r\nDate: %s\r\n", status,
                        tw_status_text(status), PACKAGE_VERSION, date);
    if (status != 204 && status != 304) evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
    if (ctype)
        evbuffer_add_printf(out, "Content-Type: %s\r\nX-Content-Type-Options: nosniff\r\n", ctype);
    if (extra) evbuffer_add(out, extra, strlen(extra));
    evbuffer_add_printf(out, "Connection: %s\r\n\r\n", c->req_keep ? "keep-alive" : "close");
}

void tw_http_respond(tw_conn *c, int status, const char *ctype, const char *extra, const void *body,
                     size_t len)
{
    if (c->closed) return;
    http_head(c, status, ctype, extra, len);
    if (body && len && !c->req_head) evbuffer_add(tw_conn_out(c), body, len);
}

void tw_http_respond_buffer(tw_conn *c, int status, const char *ctype, const char *extra,
                            struct evbuffer *body)
{
    if (c->closed) return;
    http_head(c, status, ctype, extra, evbuffer_get_length(body));
    if (!c->req_head) evbuffer_add_buffer(tw_conn_out(c), body);
}

/* JSON error body {"error":"..."} with extra header lines (or NULL); msg is
 * a fixed ASCII text of ours. A 401 gets WWW-Authenticate. */
void tw_http_error_extra(tw_conn *c, int status, const char *extra, const char *msg)
{
    char body[512];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", tw_status_text(status));
    if (status == 401 && !extra) extra = "WWW-Authenticate: Bearer realm=\"chatd\"\r\n";
    tw_http_respond(c, status, "application/json", extra, body, (size_t)n);
}

void tw_http_error(tw_conn *c, int status, const char *msg)
{
    tw_http_error_extra(c, status, NULL, msg);
}

/* 405 with the Allow list, and the request is done. */
void tw_http_method_not_allowed(tw_conn *c, const char *allow)
{
    char extra[64];
    snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
    tw_http_error_extra(c, 405, extra, "method not allowed");
    tw_http_done(c);
}

/* The response of the current request is queued: next request or close. */
void tw_http_done(tw_conn *c)
{
    c->http_busy = 0;
    if (c->closed) return;
    if (c->hp) http_parser_reset(c->hp);
    tw_conn_response_queued(c);
    if (!c->req_keep || c->srv->stopping) {
        tw_conn_close_flush(c);
        return;
    }
    tw_conn_timeouts(c, c->srv->idle_timeout);
    if (!c->out_paused && !c->pipe_paused) bufferevent_enable(c->bev, EV_READ);
}
