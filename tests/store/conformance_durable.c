/*
 * tests/store/conformance_durable.c - store conformance cases about how a
 * store keeps it: batched commits, non-ASCII and 64 KiB texts, the
 * max_pending bound, durability across a restart and across a crash (a child
 * process killed with SIGKILL). See conformance.c.
 */
#define _POSIX_C_SOURCE 200809L

#include "conformance.h"

typedef struct batch_ctx {
    long finished, ok, in_order;
    long next_expected;
} batch_ctx;

typedef struct batch_item {
    batch_ctx *b;
    long index;
} batch_item;

static void on_batch_done(void *arg, chatd_status st, const char *reason)
{
    batch_item *it = arg;
    (void)reason;
    if (st == CHATD_OK) it->b->ok++;
    if (it->index == it->b->next_expected) it->b->in_order++;
    it->b->next_expected = it->index + 1;
    it->b->finished++;
}

void test_batched_commits(void **state)
{
    enum { N = 1000 };
    int64_t a = make_member("batch-a", "Batch A"), b = make_member("batch-b", "Batch B");
    char room[64], la[96];
    batch_ctx bc = {0, 0, 0, 0};
    batch_item *items = calloc(N, sizeof(*items));
    uint64_t commits0 = testcore_counter("chatd_store_commits_total"), commits;
    uint64_t first = 0, cursor = 0, prev = 0;
    size_t total = 0;
    int64_t t0 = A->now_ms();
    history_wait h;
    room_copy r;
    (void)state;

    assert_non_null(items);
    snprintf(la, sizeof(la), "batch-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    /* 1000 persists in one loop turn: none may complete before the loop runs */
    for (long i = 0; i < N; i++) {
        char text[32];
        uint64_t id = next_id();
        chatd_msg *m;
        chatd_completion *c;
        if (i == 0) first = id;
        snprintf(text, sizeof(text), "batch %ld", i);
        m = new_chat(id, room, a, la, text, strlen(text), t0 + i);
        items[i].b = &bc;
        items[i].index = i;
        c = testcore_completion_new(on_batch_done, &items[i]);
        assert_int_equal(g_ops->persist(g_inst, m, c), CHATD_ASYNC);
        A->msg_unref(m); /* the store keeps its own reference */
    }
    assert_int_equal(bc.finished, 0);
    assert_int_equal(testcore_run_until_count(&bc.finished, N, TIMEOUT_MS), 0);
    assert_int_equal(bc.ok, N);
    assert_int_equal(bc.in_order, N); /* completed in persist order */

    commits = testcore_counter("chatd_store_commits_total") - commits0;
    if (commits > 0) {
        fprintf(stderr, "  %d persists committed in %" PRIu64 " transactions\n", N, commits);
        assert_true(commits <= N / 10); /* group commit, not one fsync each */
    } else {
        fprintf(stderr, "  (store reports no chatd_store_commits_total; batching not counted)\n");
    }

    /* every one stored exactly once, in order */
    do {
        st_history(room, cursor, 100, &h);
        for (size_t i = 0; i < h.n; i++) {
            uint64_t id = A->msg_id(h.msgs[i]);
            if (i > 0) assert_true(id > prev);
            prev = id;
        }
        if (h.n) assert_true(A->msg_id(h.msgs[0]) >= first);
        total += h.n;
        cursor = h.next_before;
        history_free(&h);
        prev = 0;
    } while (cursor != 0);
    assert_int_equal(total, N);

    r = get_room(b, room);
    assert_int_equal(r.unread, N);
    assert_string_equal(r.last_message, "batch 999");
    free(r.last_message);
    free(items);
}

static void roundtrip(int64_t a, const char *login_a, const char *room, const char *text,
                      size_t len)
{
    uint64_t id = next_id();
    int64_t t = A->now_ms();
    chatd_msg *m = new_chat(id, room, a, login_a, text, len, t);
    history_wait h;
    const char *got;
    size_t glen;

    assert_int_equal(st_persist(m), CHATD_OK);
    A->msg_unref(m);
    st_history(room, id + 1, 1, &h);
    assert_int_equal(h.n, 1);
    assert_int_equal(A->msg_id(h.msgs[0]), id);
    got = A->msg_text(h.msgs[0], &glen);
    assert_int_equal(glen, len);
    assert_memory_equal(got, text, len);
    assert_string_equal(A->msg_writer(h.msgs[0]), login_a);
    history_free(&h);
}

void test_non_ascii(void **state)
{
    static const char *const texts[] = {
        "안녕하세요, 반갑습니다! 오후 03:12에 만나요 ㅋㅋ",
        "채팅방 3&4 · 읽지 않음",
        "こんにちは世界、日本語のテキスト",
        "你好，世界！中文消息",
        "مرحبا بالعالم",
        "שלום עולם",
        "Привет, мир! Ёё",
        "สวัสดีชาวโลก",
        "e\xcc\x81 (combining acute) and \xc3\xa9 (precomposed)",
        "emoji 😀 👩‍👩‍👧‍👦 🇰🇷 ❤️",
        "quotes \" ' ` backslash \\ tab \t newline \n end",
        "'); DROP TABLE messages; -- $1 %s %n ?",
        "<b>not html</b> &amp; &#x27;",
        "\xf4\x8f\xbf\xbf max code point, \xef\xbb\xbf BOM",
    };
    int64_t a = make_member("utf-a", "김철수"), b = make_member("utf-b", "이영희 🌸");
    char la[96], room[64];
    member_copy mc;
    room_copy r;
    (void)state;

    snprintf(la, sizeof(la), "utf-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        roundtrip(a, la, room, texts[i], strlen(texts[i]));

    /* the summary carries the last text byte-exact too */
    r = get_room(b, room);
    assert_string_equal(r.last_message, texts[sizeof(texts) / sizeof(texts[0]) - 1]);
    assert_string_equal(r.peer_name, "김철수");
    free(r.last_message);
    r = get_room(a, room);
    assert_string_equal(r.peer_name, "이영희 🌸");
    free(r.last_message);

    /* non-ASCII login ids and names */
    {
        char login[96];
        snprintf(login, sizeof(login), "사용자-%s", g_run);
        assert_int_equal(st_member_create(login, "홍길동", NULL, 0, &mc), CHATD_OK);
        assert_int_equal(st_member_get(0, login, &mc), CHATD_OK);
        assert_string_equal(mc.login_id, login);
        assert_string_equal(mc.name, "홍길동");
        assert_false(mc.has_pw);
    }
}

void test_long_message(void **state)
{
    const size_t len = 64 * 1024;
    static const char unit[] = "가나다라마바사 chatd "; /* 21 + 7 bytes of UTF-8 */
    int64_t a = make_member("long-a", "Long A"), b = make_member("long-b", "Long B");
    char la[96], room[64];
    char *text = malloc(len + 1);
    size_t n = 0;
    room_copy r;
    (void)state;

    assert_non_null(text);
    /* whole units, then ASCII to the exact size: valid UTF-8 of 65536 bytes */
    while (n + sizeof(unit) - 1 <= len) {
        memcpy(text + n, unit, sizeof(unit) - 1);
        n += sizeof(unit) - 1;
    }
    while (n < len)
        text[n++] = 'x';
    text[len] = '\0';
    snprintf(la, sizeof(la), "long-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    roundtrip(a, la, room, text, len);
    roundtrip(a, la, room, text, len - 1); /* ...and a different length */
    r = get_room(b, room);
    assert_int_equal(r.last_len, len - 1);
    assert_memory_equal(r.last_message, text, len - 1);
    free(r.last_message);
    free(text);
}

void test_durable_across_restart(void **state)
{
    int64_t a = make_member("dur-a", "Durable A"), b = make_member("dur-b", "Durable B");
    char la[96], room[64];
    uint64_t id = next_id();
    int64_t t0 = A->now_ms();
    member_copy mc;
    history_wait h;
    size_t len;
    room_copy r;
    (void)state;

    snprintf(la, sizeof(la), "dur-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    assert_int_equal(st_chat(id, room, a, la, "kept across restarts 유지", t0), CHATD_OK);
    /* persists issued right before stop are committed by stop */
    {
        chatd_msg *m = new_chat(next_id(), room, a, la, "in flight at stop", 17, A->now_ms());
        wait_status w = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_completion, &w);
        assert_int_equal(g_ops->persist(g_inst, m, c), CHATD_ASYNC);
        A->msg_unref(m);
        assert_int_equal(store_close(), 0);
        assert_int_equal(w.done, 1);
        assert_int_equal(w.status, CHATD_OK);
    }
    assert_int_equal(store_open(), 0); /* reopening re-runs migrations: a no-op */

    assert_int_equal(st_member_get(0, la, &mc), CHATD_OK);
    assert_int_equal(mc.id, a);
    st_history(room, 0, 10, &h);
    assert_int_equal(h.n, 2);
    assert_int_equal(A->msg_id(h.msgs[0]), id);
    assert_string_equal(A->msg_text(h.msgs[0], &len), "kept across restarts 유지");
    assert_string_equal(A->msg_text(h.msgs[1], &len), "in flight at stop");
    history_free(&h);
    r = get_room(b, room);
    assert_int_equal(r.unread, 2);
    free(r.last_message);

    /* the same message after the restart is still a duplicate; another one
     * with its id is still refused */
    assert_int_equal(st_chat(id, room, a, la, "kept across restarts 유지", t0), CHATD_OK);
    assert_int_equal(st_chat(id, room, a, la, "duplicate", A->now_ms()), CHATD_ERR_EXISTS);
    st_history(room, 0, 10, &h);
    assert_int_equal(h.n, 2);
    history_free(&h);
}

/* A store with a `max_pending` key refuses past it with CHATD_ERR_BUSY
 * (synchronously, without completing) and accepts again once it drained.
 * Runs on a second instance of the store with the same config. */
void test_max_pending(void **state)
{
    enum { BOUND = 5 };
    int64_t a = make_member("bound-a", "Bound A"), b = make_member("bound-b", "Bound B");
    char la[96], room[64], bound[32];
    char *pairs[MAX_CFG + 1];
    chatd_ctx *ctx;
    void *inst;
    wait_status ws[BOUND + 1];
    chatd_status st;
    int has_key = 0;
    history_wait h;
    (void)state;

    for (const chatd_cfg_key *k = g_desc->cfg_keys; k && k->name; k++)
        has_key |= !strcmp(k->name, "max_pending");
    if (!has_key) {
        fprintf(stderr, "  (store has no max_pending key; bound not tested)\n");
        skip();
    }
    snprintf(la, sizeof(la), "bound-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    snprintf(bound, sizeof(bound), "max_pending=%d", BOUND);
    for (int i = 0; i < g_npairs; i++)
        pairs[i] = g_pairs[i];
    pairs[g_npairs] = bound; /* the last value of a key wins */
    ctx = testcore_ctx_new("store2", g_desc->cfg_keys, g_npairs + 1, pairs);
    assert_non_null(ctx);
    assert_int_equal(g_desc->create(A, ctx, &inst), CHATD_OK);
    if (g_desc->start) assert_int_equal(g_desc->start(inst), CHATD_OK);

    memset(ws, 0, sizeof(ws));
    for (int i = 0; i <= BOUND; i++) {
        chatd_msg *m = new_chat(next_id(), room, a, la, "bounded", 7, A->now_ms());
        chatd_completion *c = testcore_completion_new(on_completion, &ws[i]);
        st = g_ops->persist(inst, m, c);
        A->msg_unref(m);
        if (i < BOUND) {
            assert_int_equal(st, CHATD_ASYNC);
        } else {
            assert_int_equal(st, CHATD_ERR_BUSY);
            testcore_completion_free(c);
        }
    }
    for (int i = 0; i < BOUND; i++) {
        assert_int_equal(testcore_run_until_flag(&ws[i].done, TIMEOUT_MS), 0);
        assert_int_equal(ws[i].status, CHATD_OK);
    }
    {
        chatd_msg *m = new_chat(next_id(), room, a, la, "accepted again", 14, A->now_ms());
        chatd_completion *c = testcore_completion_new(on_completion, &ws[BOUND]);
        assert_int_equal(g_ops->persist(inst, m, c), CHATD_ASYNC);
        A->msg_unref(m);
        assert_int_equal(testcore_run_until_flag(&ws[BOUND].done, TIMEOUT_MS), 0);
        assert_int_equal(ws[BOUND].status, CHATD_OK);
    }
    if (g_desc->stop) {
        wait_status w = {0, CHATD_OK};
        chatd_completion *c = testcore_completion_new(on_completion, &w);
        st = g_desc->stop(inst, c);
        if (st == CHATD_ASYNC)
            assert_int_equal(testcore_run_until_flag(&w.done, TIMEOUT_MS), 0);
        else
            testcore_completion_free(c);
    }
    g_desc->destroy(inst);
    testcore_ctx_free(ctx);

    /* what the second instance wrote, the first one reads */
    st_history(room, 0, 100, &h);
    assert_int_equal(h.n, BOUND + 1);
    history_free(&h);
}

/* ------------------------------------------------------------------------ */
/* Crash durability: a child process persists until it is SIGKILLed        */
/* ------------------------------------------------------------------------ */

typedef struct crash_item {
    uint64_t id;
    long *finished;
} crash_item;

static void on_crash_done(void *arg, chatd_status st, const char *reason)
{
    crash_item *it = arg;
    (void)reason;
    if (st == CHATD_OK) {
        /* acknowledged: report it before anything else happens */
        char line[32];
        int n = snprintf(line, sizeof(line), "%" PRIu64 "\n", it->id);
        if (write(STDOUT_FILENO, line, (size_t)n) != n) _exit(3);
    }
    (*it->finished)++;
}

/* store_conformance --crash-child SO ROOM WRITER_ID WRITER ID_START [k=v...] */
int crash_child(int argc, char **argv)
{
    static crash_item items[CRASH_MAX];
    const char *room, *writer;
    int64_t writer_id;
    uint64_t id;
    long finished = 0;

    if (argc < 7) return 2;
    g_so = argv[2];
    room = argv[3];
    writer_id = strtoll(argv[4], NULL, 10);
    writer = argv[5];
    id = strtoull(argv[6], NULL, 10);
    for (int i = 7; i < argc && g_npairs < MAX_CFG; i++)
        g_pairs[g_npairs++] = argv[i];
    if (load_store() != 0 || store_open() != 0) return 1;
    /* keep up to three rounds in flight, so the kill lands mid-commit */
    for (long sent = 0; sent < CRASH_MAX;) {
        for (int i = 0; i < CRASH_ROUND; i++, sent++) {
            char text[48];
            chatd_msg *m;
            chatd_completion *c;
            int len = snprintf(text, sizeof(text), "crash %ld 충돌", sent);
            items[sent].id = id++;
            items[sent].finished = &finished;
            m = new_chat(items[sent].id, room, writer_id, writer, text, (size_t)len, A->now_ms());
            c = testcore_completion_new(on_crash_done, &items[sent]);
            if (g_ops->persist(g_inst, m, c) != CHATD_ASYNC) {
                testcore_completion_free(c);
                finished++;
            }
            A->msg_unref(m);
        }
        if (testcore_run_until_count(&finished, sent - 2 * CRASH_ROUND, TIMEOUT_MS) != 0) return 1;
    }
    if (testcore_run_until_count(&finished, CRASH_MAX, TIMEOUT_MS) != 0) return 1;
    store_close();
    return 0;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

void test_crash_durability(void **state)
{
    int64_t a = make_member("crash-a", "Crash A"), b = make_member("crash-b", "Crash B");
    char la[96], room[64], ida[32], idstart[32];
    char *args[MAX_CFG + 8];
    uint64_t start = next_id(), *acked = calloc(CRASH_MAX, sizeof(uint64_t)), cursor = 0;
    size_t nacked = 0, nstored = 0, found = 0;
    char buf[4096], line[32];
    size_t linelen = 0;
    int fds[2], status, killed = 0, nargs = 0;
    pid_t pid;
    int64_t deadline = A->now_ms() + TIMEOUT_MS;
    history_wait h;
    (void)state;

    assert_non_null(acked);
    g_id_next += CRASH_MAX; /* the child's ids */
    snprintf(la, sizeof(la), "crash-a-%s", g_run);
    room_of(a, b, room, sizeof(room));
    snprintf(ida, sizeof(ida), "%lld", (long long)a);
    snprintf(idstart, sizeof(idstart), "%" PRIu64, start);
    args[nargs++] = (char *)g_self;
    args[nargs++] = "--crash-child";
    args[nargs++] = (char *)g_so;
    args[nargs++] = room;
    args[nargs++] = ida;
    args[nargs++] = la;
    args[nargs++] = idstart;
    for (int i = 0; i < g_npairs; i++)
        args[nargs++] = g_pairs[i];
    args[nargs] = NULL;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execv("/proc/self/exe", args);
        execvp(g_self, args);
        _exit(127);
    }
    close(fds[1]);
    /* read acknowledged ids; kill -9 once enough are in, while more are
     * in flight; then drain what was acknowledged before the kill */
    for (;;) {
        struct pollfd p = {fds[0], POLLIN, 0};
        int64_t left = deadline - A->now_ms();
        ssize_t n;
        if (left <= 0) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail_msg("the crash child acknowledged only %zu messages in time", nacked);
        }
        if (poll(&p, 1, (int)left) < 0 && errno != EINTR) fail_msg("poll: %s", strerror(errno));
        n = read(fds[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (linelen < sizeof(line) - 1) line[linelen++] = buf[i];
                continue;
            }
            line[linelen] = '\0';
            linelen = 0;
            assert_true(nacked < CRASH_MAX);
            acked[nacked++] = strtoull(line, NULL, 10);
        }
        if (!killed && nacked >= CRASH_KILL_AFTER) {
            kill(pid, SIGKILL);
            killed = 1;
        }
    }
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(killed);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    fprintf(stderr, "  child killed after %zu acknowledged messages\n", nacked);

    /* every acknowledged message is stored, exactly once */
    qsort(acked, nacked, sizeof(*acked), cmp_u64);
    do {
        uint64_t prev = 0;
        st_history(room, cursor, 500, &h);
        for (size_t i = 0; i < h.n; i++) {
            uint64_t id = A->msg_id(h.msgs[i]);
            assert_true(id > prev); /* no duplicates */
            prev = id;
            assert_true(id >= start && id < start + CRASH_MAX);
            if (bsearch(&id, acked, nacked, sizeof(*acked), cmp_u64)) found++;
        }
        nstored += h.n;
        cursor = h.next_before;
        history_free(&h);
    } while (cursor != 0);
    fprintf(stderr, "  %zu stored after the crash, %zu of %zu acknowledged\n", nstored, found,
            nacked);
    assert_int_equal(found, nacked);
    assert_true(nstored >= nacked);
    free(acked);
}
