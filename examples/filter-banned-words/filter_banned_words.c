/*
 * filter_banned_words.c - an example third-party chatd FILTER plugin.
 *
 * Refuses or masks chat messages that contain banned words. Built out of the
 * chatd source tree with nothing but the installed SDK (see the Makefile next
 * to it and docs/plugin-guide.md, which walks through this file).
 *
 * Config (one section per instance; the section name is the instance name):
 *     [banned]
 *     plugin = filter-banned-words
 *     words = spam scam
 *     words_file = /etc/chatd/banned-words.txt
 *     mode = mask
 *     replacement = ***
 * words are separated by blanks or commas; words_file holds more of them
 * (blanks, commas or newlines; lines starting with # are comments) and is
 * read again on SIGHUP, so the list changes without a restart. At least one
 * of the two is required. mode is mask (the default: each banned word becomes
 * the replacement) or reject (the message is refused, and its sender told
 * why).
 *
 * Matching is ASCII case-insensitive and on whole words: a banned word
 * matches where the bytes before and after it are not letters, digits, '_'
 * or non-ASCII bytes. So "Spam!" matches "spam" but "spammer" does not, and
 * a match never splits a UTF-8 sequence, which keeps the masked text valid.
 */
#include <chatd/plugin.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 256   /* bound on the word list */
#define MAX_WORD_LEN 64 /* bytes per banned word */
#define MAX_REPLACEMENT 16
#define MAX_FILE_BYTES 65536 /* bound on words_file */

typedef enum { MODE_MASK, MODE_REJECT } filter_mode;

/* The word list: one allocation of lowercased words and their lengths. */
typedef struct word_list {
    size_t n;
    char *words[MAX_WORDS];
    size_t lens[MAX_WORDS];
} word_list;

/* One instance. Everything lives here, nothing in globals, so the plugin can
 * be loaded twice under two section names with two word lists. */
typedef struct banned {
    const chatd_api *api;
    chatd_ctx *ctx;
    word_list list;
    filter_mode mode;
    char replacement[MAX_REPLACEMENT + 1];
} banned;

static const chatd_cfg_key banned_keys[] = {
    {.name = "words",
     .type = CHATD_CFG_STRING,
     .help = "banned words, separated by spaces or commas"},
    {.name = "words_file",
     .type = CHATD_CFG_STRING,
     .help = "file of more banned words (one or more per line, # comments); re-read on SIGHUP"},
    {.name = "mode",
     .type = CHATD_CFG_STRING,
     .default_value = "mask",
     .help = "mask: replace each banned word; reject: refuse"},
    {.name = "replacement",
     .type = CHATD_CFG_STRING,
     .default_value = "***",
     .help = "text written instead of a banned word"},
    {.name = NULL},
};

static char lower_ascii(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c >= 0x80;
}

static void words_clear(word_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->words[i]);
    l->n = 0;
}

static bool is_separator(char c)
{
    return c == ' ' || c == '\t' || c == ',' || c == '\n' || c == '\r';
}

/* Append the words of "a b,c" (lowercased) to l. Returns NULL or a reason;
 * on a reason, l may hold some of the words (the caller clears it). */
static const char *words_parse(word_list *l, const char *spec)
{
    const char *p = spec;
    while (*p) {
        while (is_separator(*p))
            p++;
        if (!*p) break;
        const char *start = p;
        while (*p && !is_separator(*p))
            p++;
        size_t len = (size_t)(p - start);
        if (len > MAX_WORD_LEN) return "a word is longer than 64 bytes";
        if (l->n == MAX_WORDS) return "more than 256 words";
        char *w = malloc(len + 1);
        if (!w) return "out of memory";
        for (size_t i = 0; i < len; i++)
            w[i] = lower_ascii(start[i]);
        w[len] = '\0';
        l->words[l->n] = w;
        l->lens[l->n] = len;
        l->n++;
    }
    return NULL;
}

/* Append the words of file `path` to l; lines whose first non-blank byte
 * is '#' are comments. A small local file, read at create and on SIGHUP:
 * the one bounded read a filter does on the loop thread. Returns NULL or a
 * reason (in buf). */
static const char *words_read_file(word_list *l, const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(buf, size, "cannot open %s: %s", path, strerror(errno));
        return buf;
    }
    char *text = malloc(MAX_FILE_BYTES + 1);
    if (!text) {
        fclose(f);
        return "out of memory";
    }
    size_t n = fread(text, 1, MAX_FILE_BYTES + 1, f);
    int err = ferror(f);
    fclose(f);
    const char *why = NULL;
    if (err) {
        snprintf(buf, size, "cannot read %s", path);
        why = buf;
    } else if (n > MAX_FILE_BYTES) {
        snprintf(buf, size, "%s is larger than %d bytes", path, MAX_FILE_BYTES);
        why = buf;
    } else {
        text[n] = '\0';
        for (char *line = text; line && !why;) {
            char *next = strchr(line, '\n');
            if (next) *next++ = '\0';
            const char *q = line;
            while (*q == ' ' || *q == '\t')
                q++;
            if (*q != '#') why = words_parse(l, q);
            line = next;
        }
    }
    free(text);
    return why;
}

/* Length of the banned word that starts at text[i] on a word boundary, or 0. */
static size_t match_at(const word_list *l, const char *text, size_t len, size_t i)
{
    if (i > 0 && is_word_byte((unsigned char)text[i - 1])) return 0;
    for (size_t w = 0; w < l->n; w++) {
        size_t wl = l->lens[w];
        if (wl > len - i) continue;
        if (i + wl < len && is_word_byte((unsigned char)text[i + wl])) continue;
        size_t k = 0;
        while (k < wl && lower_ascii(text[i + k]) == l->words[w][k])
            k++;
        if (k == wl) return wl;
    }
    return 0;
}

/* Report a bad value: a config error (FILE:LINE) at create, a warning at
 * reload, where the old configuration stays. */
static void report(banned *b, bool at_create, const char *key, const char *why)
{
    if (at_create)
        b->api->cfg_error(b->ctx, key, "%s", why);
    else
        b->api->log(b->ctx, CHATD_LOG_WARN, "%s: %s; kept the previous configuration", key, why);
}

/* Read (or re-read) words, words_file, mode and replacement into b. On an
 * error, reports it and leaves b as it was. */
static chatd_status banned_configure(banned *b, bool at_create)
{
    const chatd_api *api = b->api;
    const char *words = api->cfg_str(b->ctx, "words");
    const char *file = api->cfg_str(b->ctx, "words_file");
    const char *mode = api->cfg_str(b->ctx, "mode");
    const char *repl = api->cfg_str(b->ctx, "replacement");
    filter_mode m;
    char buf[256];

    if (strcmp(mode, "mask") == 0) {
        m = MODE_MASK;
    } else if (strcmp(mode, "reject") == 0) {
        m = MODE_REJECT;
    } else {
        snprintf(buf, sizeof(buf), "'%s' is not mask or reject", mode);
        report(b, at_create, "mode", buf);
        return CHATD_ERR_INVALID;
    }
    if (strlen(repl) > MAX_REPLACEMENT) {
        report(b, at_create, "replacement", "longer than 16 bytes");
        return CHATD_ERR_INVALID;
    }

    /* build a fresh list; swap it in only when everything is valid */
    word_list fresh = {0};
    const char *why = words ? words_parse(&fresh, words) : NULL;
    const char *key = "words";
    if (!why && file) {
        why = words_read_file(&fresh, file, buf, sizeof(buf));
        key = "words_file";
    }
    if (!why && fresh.n == 0) why = "no banned words: set words = w1 w2 ... or words_file = PATH";
    if (why) {
        words_clear(&fresh);
        report(b, at_create, key, why);
        return CHATD_ERR_INVALID;
    }
    words_clear(&b->list);
    b->list = fresh;
    b->mode = m;
    memcpy(b->replacement, repl, strlen(repl) + 1);
    return CHATD_OK;
}

/* ---- descriptor hooks ---------------------------------------------------- */

static chatd_status banned_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    banned *b = calloc(1, sizeof(*b));
    if (!b) {
        api->log(ctx, CHATD_LOG_ERROR, "out of memory creating the instance");
        return CHATD_ERR_NOMEM;
    }
    b->api = api;
    b->ctx = ctx;
    chatd_status st = banned_configure(b, true);
    if (st != CHATD_OK) {
        free(b);
        return st;
    }
    api->log(ctx, CHATD_LOG_INFO, "%zu banned word(s), mode %s", b->list.n,
             b->mode == MODE_MASK ? "mask" : "reject");
    *inst = b;
    return CHATD_OK;
}

static void banned_destroy(void *inst)
{
    banned *b = inst;
    words_clear(&b->list);
    free(b);
}

/* SIGHUP: read words_file again (an operator edits it, then runs
 * `systemctl reload chatd`); a bad file keeps the old list. */
static void banned_reload(void *inst)
{
    banned *b = inst;
    if (banned_configure(b, false) == CHATD_OK)
        b->api->log(b->ctx, CHATD_LOG_INFO, "reloaded: %zu banned word(s)", b->list.n);
}

/* ---- the filter hook ----------------------------------------------------- */

/* Loop thread. msg is borrowed; it may be rewritten only here, before we
 * return (or complete). Never blocks: a scan of at most max_message_bytes. */
static chatd_status banned_filter(void *inst, chatd_msg *msg, chatd_completion *done)
{
    banned *b = inst;
    const chatd_api *api = b->api;

    if (api->msg_kind(msg) != CHATD_MSG_CHAT) return CHATD_OK; /* read events carry no text */

    size_t len;
    const char *text = api->msg_text(msg, &len);
    size_t repl_len = strlen(b->replacement);
    size_t hits = 0, out_len = 0;

    /* pass 1: count matches and the length of the masked text */
    for (size_t i = 0; i < len;) {
        size_t wl = match_at(&b->list, text, len, i);
        if (wl) {
            hits++;
            out_len += repl_len;
            i += wl;
        } else {
            out_len++;
            i++;
        }
    }
    if (hits == 0) return CHATD_OK;

    if (b->mode == MODE_REJECT) {
        api->counter_add(b->ctx, "chatd_filter_rejected_total", 1);
        api->log(b->ctx, CHATD_LOG_DEBUG, "rejected a message of %s in room %s",
                 api->msg_writer(msg), api->msg_room(msg));
        /* Finishing through the completion is how a filter gives the sender
         * a reason; returning CHATD_REJECT alone refuses without one. */
        api->complete(done, CHATD_REJECT, "the message contains a banned word");
        return CHATD_ASYNC;
    }

    /* pass 2: build the masked text */
    char *out = malloc(out_len + 1);
    if (!out) {
        api->log(b->ctx, CHATD_LOG_ERROR, "out of memory masking a message; refused it");
        return CHATD_ERR_NOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t wl = match_at(&b->list, text, len, i);
        if (wl) {
            memcpy(out + o, b->replacement, repl_len);
            o += repl_len;
            i += wl;
        } else {
            out[o++] = text[i++];
        }
    }
    out[o] = '\0';
    chatd_status st = api->msg_set_text(msg, out, o); /* copies */
    free(out);
    if (st != CHATD_OK) {
        api->log(b->ctx, CHATD_LOG_WARN, "could not rewrite a message (%s); refused it",
                 api->status_str(st));
        return st;
    }
    api->counter_add(b->ctx, "chatd_filter_masked_total", hits);
    return CHATD_OK;
}

/* ---- what the plugin is -------------------------------------------------- */

static const chatd_filter_ops banned_ops = {
    .size = sizeof(chatd_filter_ops),
    .filter = banned_filter,
};

static const chatd_plugin_desc banned_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_FILTER,
    .name = "filter-banned-words",
    .version = "1.0.0",
    .description = "masks or rejects chat messages containing banned words",
    .cfg_keys = banned_keys,
    .create = banned_create,
    .start = NULL, /* nothing to start: the word list is ready after create */
    .stop = NULL,
    .destroy = banned_destroy,
    .reload = banned_reload,
    .ops = &banned_ops,
};

CHATD_PLUGIN_DEFINE(banned_desc)
