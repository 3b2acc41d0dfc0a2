/*
 * tests/core/testutil.h - helpers shared by the core's unit tests: capture
 * what the code under test logs to stderr, write temporary files, and run
 * the event loop until a condition holds (bounded in time).
 */
#ifndef CHATD_TESTUTIL_H
#define CHATD_TESTUTIL_H

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Redirect stderr to a temporary file until capture_end(). */
static int capture_fd = -1;
static FILE *capture_file;

static inline void capture_start(void)
{
    fflush(stderr);
    capture_file = tmpfile();
    if (!capture_file) abort();
    capture_fd = dup(STDERR_FILENO);
    if (capture_fd < 0 || dup2(fileno(capture_file), STDERR_FILENO) < 0) abort();
}

/* Restore stderr; returns what was written (free it), and echoes it. */
static inline char *capture_end(void)
{
    fflush(stderr);
    if (dup2(capture_fd, STDERR_FILENO) < 0) abort();
    close(capture_fd);
    capture_fd = -1;
    long n = ftell(capture_file);
    if (n < 0) abort();
    char *buf = calloc(1, (size_t)n + 1);
    if (!buf) abort();
    rewind(capture_file);
    if (n > 0 && fread(buf, 1, (size_t)n, capture_file) != (size_t)n) abort();
    fclose(capture_file);
    capture_file = NULL;
    fputs(buf, stderr);
    return buf;
}

/* A fresh temporary directory (free the result). */
static inline char *temp_dir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof(tmpl), "%s/chatd-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    if (!d) abort();
    return strdup(d);
}

/* Write text to dir/name; returns the path (free it). */
static inline char *write_file(const char *dir, const char *name, const char *text)
{
    char *path = malloc(strlen(dir) + strlen(name) + 2);
    if (!path) abort();
    sprintf(path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0) abort();
    return path;
}

static inline void remove_tree(const char *dir)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
}

/* Run the loop until *flag becomes nonzero or `seconds` pass; returns *flag. */
static inline int loop_until(struct event_base *base, const volatile int *flag, int seconds)
{
    time_t end = time(NULL) + seconds;
    struct timeval tick = {0, 10000};
    while (!*flag && time(NULL) <= end) {
        event_base_loopexit(base, &tick);
        event_base_dispatch(base);
    }
    return *flag;
}

#endif
