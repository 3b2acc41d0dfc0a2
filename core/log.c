/*
 * core/log.c - leveled logging to stderr, one line per event.
 *
 * Format:  2026-11-24T19:00:00.123Z info [store] message
 * Under systemd (JOURNAL_STREAM is set) the line starts with the syslog
 * priority "<N>" instead of the time, so journald keeps the level and adds
 * its own timestamp. Each line is written with a single write(2) so that
 * lines from several threads never interleave. Control characters in the
 * message are replaced so one event is always one line.
 */
#include "config.h"

#include "core.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048

static atomic_int log_level = CHATD_LOG_INFO;
static atomic_int log_journal = -1; /* -1: not checked yet */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {3, 4, 6, 7};

void log_set_level(chatd_log_level level)
{
    atomic_store(&log_level, (int)level);
}

chatd_log_level log_get_level(void)
{
    return (chatd_log_level)atomic_load(&log_level);
}

int log_level_parse(const char *s, chatd_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (chatd_log_level)i;
            return 0;
        }
    }
    if (strcmp(s, "warning") == 0) {
        *out = CHATD_LOG_WARN;
        return 0;
    }
    return -1;
}

void log_vmsg(chatd_log_level level, const char *instance, const char *fmt, va_list ap)
{
    if ((int)level < 0 || level > CHATD_LOG_DEBUG) level = CHATD_LOG_ERROR;
    if ((int)level > atomic_load(&log_level)) return;

    int journal = atomic_load(&log_journal);
    if (journal < 0) {
        journal = getenv("JOURNAL_STREAM") != NULL;
        atomic_store(&log_journal, journal);
    }

    char line[LOG_LINE_MAX];
    size_t off = 0;
    int n;
    if (journal) {
        n = snprintf(line, sizeof(line), "<%d>%s [%s] ", syslog_prio[level], level_names[level],
                     instance ? instance : "core");
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        char ts[32];
        time_format_iso((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, ts, sizeof(ts));
        n = snprintf(line, sizeof(line), "%s %s [%s] ", ts, level_names[level],
                     instance ? instance : "core");
    }
    if (n < 0) return;
    off = (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1;

    n = vsnprintf(line + off, sizeof(line) - off, fmt, ap);
    if (n < 0) return;
    size_t end = off + (size_t)n;
    if (end > sizeof(line) - 2) end = sizeof(line) - 2; /* truncated: keep room for the newline */
    for (size_t i = off; i < end; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch < 0x20 || ch == 0x7f) line[i] = ' ';
    }
    line[end++] = '\n';

    size_t done = 0;
    while (done < end) {
        ssize_t w = write(STDERR_FILENO, line + done, end - done);
        if (w <= 0) break; /* nowhere to report a failing stderr */
        done += (size_t)w;
    }
}

void log_msg(chatd_log_level level, const char *instance, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, instance, fmt, ap);
    va_end(ap);
}
