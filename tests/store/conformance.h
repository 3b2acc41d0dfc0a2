/*
 * tests/store/conformance.h - what the files of the store conformance
 * suite share: the store under test (loaded into the test core), the run's
 * unique ids and login ids, and synchronous wrappers of the store hooks
 * (call the hook, run the loop until its answer). See conformance.c.
 */
#ifndef CHATD_TESTS_CONFORMANCE_H
#define CHATD_TESTS_CONFORMANCE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "../lib/testcore.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define TIMEOUT_MS 60000
#define EPOCH_2024_MS 1704067200000LL
#define MAX_CFG 64
#define CRASH_MAX 20000      /* messages the crash child may write */
#define CRASH_ROUND 25       /* persists per loop turn in the crash child */
#define CRASH_KILL_AFTER 300 /* acknowledged messages before SIGKILL */

/* the store under test and this run */
extern const char *g_so;
extern char *g_pairs[MAX_CFG];
extern int g_npairs;
extern const chatd_plugin_desc *g_desc;
extern const chatd_store_ops *g_ops;
extern const chatd_api *A;
extern chatd_ctx *g_ctx;
extern void *g_inst;
extern char g_run[32]; /* unique per run: suffix of login ids */
extern uint64_t g_id_base, g_id_next;
extern int64_t g_time_base;
extern const char *g_self; /* argv[0], to start the crash child */

typedef struct wait_status {
    int done;
    chatd_status status;
} wait_status;

typedef struct member_copy {
    int64_t id;
    char login_id[128];
    char name[128];
    char pw_hash[160];
    int has_pw;
    int64_t created_ms;
} member_copy;

typedef struct member_wait {
    int done;
    chatd_status status;
    size_t n;
    member_copy *rows; /* up to cap */
    size_t cap;
} member_wait;

typedef struct history_wait {
    int done;
    chatd_status status;
    chatd_msg **msgs; /* referenced copies */
    size_t n;
    uint64_t next_before;
} history_wait;

typedef struct room_copy {
    char room_id[64];
    int64_t member_id, peer_id;
    char peer_login[128], peer_name[128];
    uint64_t last_msg_id;
    char *last_message; /* malloc'd */
    size_t last_len;
    int64_t last_ms, unread;
    uint64_t last_read_id;
} room_copy;

typedef struct rooms_wait {
    int done;
    chatd_status status;
    room_copy *rows;
    size_t n;
} rooms_wait;

uint64_t next_id(void);
void on_completion(void *arg, chatd_status st, const char *reason);
void on_status(void *arg, chatd_status st);
int store_open(void);
int store_close(void);
int load_store(void);
int group_setup(void **state);
int group_teardown(void **state);
void copy_member(member_copy *d, const chatd_member *m);
void on_members(void *arg, chatd_status st, const chatd_member *rows, size_t n);
chatd_status st_member_create(const char *login, const char *name, const char *pw,
                              int64_t created_ms, member_copy *out);
chatd_status st_member_get(int64_t id, const char *login, member_copy *out);
int64_t make_member(const char *who, const char *name);
void room_of(int64_t a, int64_t b, char *buf, size_t n);
chatd_msg *new_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                    const char *text, size_t len, int64_t time_ms);
/* new_chat with a position (ABI 1.4; 0: the id) */
chatd_msg *new_chat_at(uint64_t id, uint64_t pos, const char *room, int64_t writer_id,
                       const char *writer, const char *text, size_t len, int64_t time_ms);
chatd_msg *new_read(uint64_t id, const char *room, int64_t reader, const char *login,
                    uint64_t up_to);
/* new_read with a position (ABI 1.4; 0: the id) */
chatd_msg *new_read_at(uint64_t id, uint64_t pos, const char *room, int64_t reader,
                       const char *login, uint64_t up_to);
chatd_status st_persist(chatd_msg *m);
chatd_status st_chat(uint64_t id, const char *room, int64_t writer_id, const char *writer,
                     const char *text, int64_t time_ms);
chatd_status st_read(const char *room, int64_t reader, uint64_t up_to);
void on_history(void *arg, chatd_status st, chatd_msg *const *msgs, size_t n, uint64_t next_before);
void st_history(const char *room, uint64_t before, unsigned limit, history_wait *w);
void history_free(history_wait *w);
void on_rooms(void *arg, chatd_status st, const chatd_room_summary *rows, size_t n);
void st_rooms(int64_t member, rooms_wait *w);
void rooms_free(rooms_wait *w);
room_copy get_room(int64_t member, const char *room);

/* the cases (conformance_data.c, conformance_durable.c) */
void test_members(void **state);
void test_member_page(void **state);
void test_sessions(void **state);
void test_idempotent_insert(void **state);
void test_history_paging(void **state);
void test_room_summaries(void **state);
void test_read_marks(void **state);
void test_batched_commits(void **state);
void test_non_ascii(void **state);
void test_long_message(void **state);
void test_durable_across_restart(void **state);
void test_max_pending(void **state);
void test_crash_durability(void **state);
void test_dead_letter(void **state);
void test_positions(void **state);
void test_side_replay(void **state);
void test_stream_heads(void **state);
void test_idem_recent(void **state);
void test_idem_duplicate(void **state);
/** The crash child: store_conformance --crash-child ... (conformance_durable.c). */
int crash_child(int argc, char **argv);

#endif /* CHATD_TESTS_CONFORMANCE_H */
