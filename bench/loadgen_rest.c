/*
 * loadgen_rest.c - chatd set-up for the load generator: register and log in
 * the members over the REST API (a few HTTP connections in parallel) and keep
 * their session tokens in the --token-cache file between runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <json-c/json.h>

#include "loadgen.h"

/* ------------------------------------------------- chatd REST: members */

static void member_next(struct evhttp_connection *hc);

struct http_job {
    struct evhttp_connection *hc;
    int member;
    int step; /* 0 register, 1 login */
};

static void token_cache_load(void)
{
    if (!g.token_cache) return;
    FILE *f = fopen(g.token_cache, "r");
    if (!f) return;
    char login[64], token[200];
    long id;
    int n = 0;
    while (fscanf(f, "%63s %ld %199s", login, &id, token) == 3)
        for (int i = 0; i < g.nmembers; i++)
            if (!g.members[i].have && strcmp(g.members[i].login, login) == 0) {
                g.members[i].id = id;
                snprintf(g.members[i].token, sizeof g.members[i].token, "%s", token);
                g.members[i].have = true;
                n++;
                break;
            }
    fclose(f);
    logmsg("token cache %s: %d of %d members", g.token_cache, n, g.nmembers);
}

/* Write the cache: this run's members, plus the entries of other members
 * already in the file (runs with fewer rooms must not forget the others). */
static void token_cache_save(void)
{
    if (!g.token_cache) return;
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp", g.token_cache);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        logmsg("cannot write token cache %s: %s", tmp, strerror(errno));
        return;
    }
    for (int i = 0; i < g.nmembers; i++)
        if (g.members[i].have)
            fprintf(f, "%s %ld %s\n", g.members[i].login, g.members[i].id, g.members[i].token);
    FILE *old = fopen(g.token_cache, "r");
    if (old) {
        char login[64], token[200];
        long id;
        while (fscanf(old, "%63s %ld %199s", login, &id, token) == 3) {
            bool ours = false;
            for (int i = 0; i < g.nmembers && !ours; i++)
                ours = strcmp(g.members[i].login, login) == 0;
            if (!ours) fprintf(f, "%s %ld %s\n", login, id, token);
        }
        fclose(old);
    }
    if (fclose(f) != 0 || rename(tmp, g.token_cache) != 0)
        logmsg("cannot write token cache %s: %s", g.token_cache, strerror(errno));
}

static void members_check_done(void)
{
    if (g.members_done + g.members_failed < g.nmembers) return;
    double s = (double)(now_ns() - g.t_setup0) / 1e9;
    logmsg("members ready: %d, failed: %d (%.1f s)", g.members_done, g.members_failed, s);
    if (g.members_failed) {
        logmsg("cannot log in every member; check the chatd log and the REST API");
        g_phase = PH_DONE;
        event_base_loopexit(g.base, NULL);
        return;
    }
    token_cache_save();
    build_rooms_and_connect();
}

static void http_post(struct http_job *job, const char *uri, const char *body);

static void http_done(struct evhttp_request *req, void *arg)
{
    struct http_job *job = arg;
    struct member *m = &g.members[job->member];
    int code = req ? evhttp_request_get_response_code(req) : 0;
    struct evbuffer *in = req ? evhttp_request_get_input_buffer(req) : NULL;
    size_t len = in ? evbuffer_get_length(in) : 0;
    char *txt = NULL;
    if (in && len) {
        txt = malloc(len + 1);
        if (txt) {
            evbuffer_copyout(in, txt, len);
            txt[len] = '\0';
        }
    }
    if (job->step == 0) {
        if (code == 201 || code == 409) {
            job->step = 1;
            char b[256];
            snprintf(b, sizeof b, "{\"loginId\":\"%s\",\"password\":\"%s\"}", m->login, g.password);
            free(txt);
            http_post(job, "/api/login", b);
            return;
        }
        logmsg("POST /api/members for %s: HTTP %d %s", m->login, code, txt ? txt : "");
        g.members_failed++;
    } else {
        struct json_object *root = (code == 200 && txt) ? json_tokener_parse(txt) : NULL;
        struct json_object *tok = NULL, *mem = NULL, *id = NULL;
        if (root && json_object_object_get_ex(root, "token", &tok) &&
            json_object_object_get_ex(root, "member", &mem) &&
            json_object_object_get_ex(mem, "id", &id)) {
            snprintf(m->token, sizeof m->token, "%s", json_object_get_string(tok));
            m->id = json_object_get_int64(id);
            m->have = true;
            g.members_done++;
        } else {
            logmsg("POST /api/login for %s: HTTP %d %s", m->login, code, txt ? txt : "");
            g.members_failed++;
        }
        if (root) json_object_put(root);
    }
    free(txt);
    struct evhttp_connection *hc = job->hc;
    free(job);
    members_check_done();
    if (g_phase == PH_SETUP_TIMEOUT) member_next(hc);
}

static void http_post(struct http_job *job, const char *uri, const char *body)
{
    struct evhttp_request *req = evhttp_request_new(http_done, job);
    if (!req) die("out of memory for an HTTP request");
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char host[32];
    snprintf(host, sizeof host, "127.0.0.1:%d", g.port);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), body, strlen(body));
    if (evhttp_make_request(job->hc, req, EVHTTP_REQ_POST, uri) != 0)
        die("cannot send HTTP request %s", uri);
}

static void member_next(struct evhttp_connection *hc)
{
    while (g.members_next < g.nmembers && g.members[g.members_next].have)
        g.members_next++;
    if (g.members_next >= g.nmembers) return;
    struct http_job *job = calloc(1, sizeof *job);
    if (!job) die("out of memory");
    job->hc = hc;
    job->member = g.members_next++;
    struct member *m = &g.members[job->member];
    char b[256];
    snprintf(b, sizeof b, "{\"loginId\":\"%s\",\"name\":\"%s\",\"password\":\"%s\"}", m->login,
             m->login, g.password);
    http_post(job, "/api/members", b);
}

void members_setup(void)
{
    g.nmembers = 2 * g.nrooms;
    g.members = calloc((size_t)g.nmembers, sizeof *g.members);
    if (!g.members) die("out of memory");
    for (int r = 0; r < g.nrooms; r++) {
        snprintf(g.members[2 * r].login, sizeof g.members[0].login, "%sa%d", g.prefix, r);
        snprintf(g.members[2 * r + 1].login, sizeof g.members[0].login, "%sb%d", g.prefix, r);
    }
    token_cache_load();
    for (int i = 0; i < g.nmembers; i++)
        if (g.members[i].have) g.members_done++;
    if (g.members_done == g.nmembers) {
        members_check_done();
        return;
    }
    for (int k = 0; k < g.http_conc; k++) {
        struct evhttp_connection *hc =
            evhttp_connection_base_new(g.base, NULL, "127.0.0.1", (unsigned short)g.port);
        if (!hc) die("cannot create an HTTP connection to 127.0.0.1:%d", g.port);
        evhttp_connection_set_timeout(hc, 60);
        member_next(hc);
    }
}
