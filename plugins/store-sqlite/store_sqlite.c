/*
 * store_sqlite.c - store-sqlite, the embedded SQLite store of chatd: schema
 * and migrations, configuration, start (open, WAL, migrate, prepare, writer
 * thread), stop, destroy and the descriptor.
 *
 * Data model (schema version SS_SCHEMA_VERSION, kept in PRAGMA user_version
 * and upgraded at start by the ordered migration list below, in one
 * transaction): members, sessions, messages (idempotent insert by the 64-bit
 * id, ordered per room by their position) and per-member room summaries (last message, its time,
 * unread count, last-read id), and the dead letters queues gave up on.
 *
 * Threads and connections: writes go through the writer thread with its own
 * connection (ss_commit.c: group commit, WAL) and, with `synchronous = full`,
 * the sync threads (ss_sync.c: a persist completes once its commit is
 * fdatasynced, so it survives a power loss; the fsync never runs on the loop);
 * reads go through the reader thread with a second, query-only connection
 * (ss_reader.c, ss_reads.c), so no query and no busy wait runs on the loop.
 * All SQL is prepared once with bound parameters.
 *
 * Bounds: `max_pending` staged or uncommitted writes (then CHATD_ERR_BUSY),
 * `max_pending_reads` reads handed to the reader thread, history pages of at most PC_HISTORY_MAX,
 * room lists of SS_ROOMS_MAX rows, member lists of SS_MEMBERS_MAX rows.
 */
#define _POSIX_C_SOURCE 200809L

#include "config.h"

#include "ss.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

/* ------------------------------------------------------------------------ */
/* Schema and migrations                                                    */
/* ------------------------------------------------------------------------ */

/* Migration i brings the schema from version i to i + 1. Append only. */
static const char *const ss_migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE members("
    " id INTEGER PRIMARY KEY,"
    " login_id TEXT NOT NULL UNIQUE,"
    " name TEXT NOT NULL,"
    " pw_hash TEXT,"
    " created_ms INTEGER NOT NULL);"
    "CREATE TABLE sessions("
    " token_hash TEXT PRIMARY KEY,"
    " member_id INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL);"
    "CREATE INDEX sessions_member ON sessions(member_id);"
    "CREATE TABLE messages("
    " id INTEGER PRIMARY KEY,"
    " room_id TEXT NOT NULL,"
    " writer_id INTEGER NOT NULL,"
    " writer TEXT NOT NULL,"
    " text TEXT NOT NULL,"
    " time_ms INTEGER NOT NULL);"
    "CREATE INDEX messages_room_id ON messages(room_id, id);"
    "CREATE TABLE rooms("
    " member_id INTEGER NOT NULL,"
    " room_id TEXT NOT NULL,"
    " peer_id INTEGER NOT NULL,"
    " last_msg_id INTEGER NOT NULL DEFAULT 0,"
    " last_message TEXT NOT NULL DEFAULT '',"
    " last_ms INTEGER NOT NULL DEFAULT 0,"
    " unread INTEGER NOT NULL DEFAULT 0,"
    " last_read_id INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY(member_id, room_id));"
    "CREATE INDEX rooms_member_last ON rooms(member_id, last_ms);",
    /* 1 -> 2: idempotency keys of SENDs, (writer, key) -> message */
    "CREATE TABLE idempotency("
    " member_id INTEGER NOT NULL,"
    " idem_key TEXT NOT NULL,"
    " msg_id INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL,"
    " PRIMARY KEY(member_id, idem_key));"
    "CREATE INDEX idempotency_time ON idempotency(time_ms);",
    /* 2 -> 3: read events themselves, for the side stream's replay */
    "CREATE TABLE reads("
    " id INTEGER PRIMARY KEY,"
    " member_id INTEGER NOT NULL,"
    " writer TEXT NOT NULL,"
    " room_id TEXT NOT NULL,"
    " up_to INTEGER NOT NULL,"
    " time_ms INTEGER NOT NULL);"
    "CREATE INDEX reads_member_id ON reads(member_id, id);",
    /* 3 -> 4: records a queue gave up on (chatd_store_ops.dead_letter) */
    "CREATE TABLE dead_letters("
    " id INTEGER PRIMARY KEY,"
    " source TEXT NOT NULL,"
    " payload BLOB NOT NULL,"
    " reason TEXT NOT NULL,"
    " time_ms INTEGER NOT NULL);",
    /* 4 -> 5: node leases (chatd_store_ops.node_claim) */
    "CREATE TABLE nodes("
    " node_id INTEGER PRIMARY KEY,"
    " holder TEXT NOT NULL,"
    " expires_ms INTEGER NOT NULL,"
    " high_water_ms INTEGER NOT NULL);",
    /* 5 -> 6: member_page's q= (a prefix of login_id or name, ASCII letters
     * without case) searches these instead of every member */
    ("CREATE INDEX members_login_nocase ON members(login_id COLLATE NOCASE);"
     "CREATE INDEX members_name_nocase ON members(name COLLATE NOCASE);"),
    /* 6 -> 7: positions, one delivery order per room (chatd_api.msg_pos);
     * rows stored before keep their order: their position is their id */
    ("ALTER TABLE messages ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;"
     "UPDATE messages SET pos = id;"
     "CREATE INDEX messages_room_pos ON messages(room_id, pos);"
     "ALTER TABLE reads ADD COLUMN pos INTEGER NOT NULL DEFAULT 0;"
     "UPDATE reads SET pos = id;"
     "ALTER TABLE rooms ADD COLUMN last_pos INTEGER NOT NULL DEFAULT 0;"
     "ALTER TABLE rooms ADD COLUMN last_read_pos INTEGER NOT NULL DEFAULT 0;"
     "UPDATE rooms SET last_pos = last_msg_id, last_read_pos = last_read_id;"),
    /* 7 -> 8: the side stream's replay by position ranges (side_replay)
     * finds a member's read events by position */
    "CREATE INDEX reads_member_pos ON reads(member_id, pos);",
    /* 8 -> 9: every read of a room's messages goes by position
     * (messages_room_pos): the (room, id) index only cost each insert */
    "DROP INDEX messages_room_id;",
};
#define SS_SCHEMA_VERSION ((int)(sizeof(ss_migrations) / sizeof(ss_migrations[0])))

/* The only place the defaults are written; the core range-checks values. */
static const chatd_cfg_key ss_cfg_keys[] = {
    {.name = "path",
     .type = CHATD_CFG_STRING,
     .help = "database file (created with its directory if missing)"},
    {.name = "batch_max",
     .type = CHATD_CFG_INT,
     .default_value = "512",
     .min = 1,
     .max = 100000,
     .help = "most writes committed in one transaction"},
    {.name = "busy_timeout_ms",
     .type = CHATD_CFG_INT,
     .default_value = "5000",
     .min = 0,
     .max = 600000,
     .help = "how long the writer and reader threads wait for a lock held by another "
             "process"},
    {.name = "max_pending",
     .type = CHATD_CFG_INT,
     .default_value = "100000",
     .min = 1,
     .max = 100000000,
     .help = "writes accepted but not yet committed before persist refuses with busy"},
    {.name = "checkpoint_pages",
     .type = CHATD_CFG_INT,
     .default_value = "1000",
     .min = 1,
     .max = 10000000,
     .help = "new WAL pages after which the checkpoint thread checkpoints (PASSIVE) while "
             "the writer thread goes on"},
    {.name = "checkpoint_idle_ms",
     .type = CHATD_CFG_INT,
     .default_value = "1000",
     .min = 1,
     .max = 3600000,
     .help = "the writer thread checkpoints the WAL after this long without a write"},
    {.name = "checkpoint_truncate_s",
     .type = CHATD_CFG_INT,
     .default_value = "300",
     .min = 0,
     .max = 86400,
     .help = "at most this often an idle checkpoint truncates the WAL file (0: never)"},
    {.name = "synchronous",
     .type = CHATD_CFG_STRING,
     .default_value = "full",
     .help = "full: a write is reported done once it is on disk (fdatasync of the WAL), it "
             "survives a power loss; normal: once committed to the WAL in the page cache, it "
             "survives a crash or kill of chatd but the last writes may be lost on a power "
             "loss or system crash"},
    {.name = "max_pending_reads",
     .type = CHATD_CFG_INT,
     .default_value = "10000",
     .min = 1,
     .max = 100000000,
     .help = "reads waiting for or running on the reader thread before a read is refused "
             "with busy"},
    {.name = NULL},
};

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static chatd_status ss_create(const chatd_api *api, chatd_ctx *ctx, void **inst)
{
    ss *s;
    const char *path;

    if (!pc_api_ok(api, ctx)) return CHATD_ERR_INVALID;
    if (!sqlite3_threadsafe()) {
        api->log(ctx, CHATD_LOG_ERROR,
                 "the sqlite3 library is built without thread support; install a "
                 "thread-safe libsqlite3");
        return CHATD_ERR_INVALID;
    }
    path = api->cfg_str(ctx, "path");
    if (!path || !*path) {
        api->cfg_error(ctx, "path", "required: the database file, e.g. path = data/chatd.db");
        return CHATD_ERR_INVALID;
    }
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) {
        api->cfg_error(ctx, "path",
                       "must be a file name (WAL needs a file shared by the "
                       "writer and reader connections)");
        return CHATD_ERR_INVALID;
    }
    s = calloc(1, sizeof(*s));
    if (!s || !(s->path = pc_strdup(path))) {
        free(s);
        api->log(ctx, CHATD_LOG_ERROR, "out of memory creating the store");
        return CHATD_ERR_NOMEM;
    }
    s->api = api;
    s->ctx = ctx;
    s->batch_max = pc_cfg_int(api, ctx, "batch_max");
    s->busy_ms = pc_cfg_int(api, ctx, "busy_timeout_ms");
    s->max_pending = pc_cfg_int(api, ctx, "max_pending");
    s->max_pending_reads = pc_cfg_int(api, ctx, "max_pending_reads");
    s->ckpt_pages = pc_cfg_int(api, ctx, "checkpoint_pages");
    s->ckpt_idle_ms = pc_cfg_int(api, ctx, "checkpoint_idle_ms");
    s->ckpt_truncate_ms = pc_cfg_int(api, ctx, "checkpoint_truncate_s") * 1000;
    s->idem_window_ms = api->core_limit(ctx, "idempotency_window") * 1000;
    {
        const char *sync = api->cfg_str(ctx, "synchronous");
        if (!sync || (strcmp(sync, "full") != 0 && strcmp(sync, "normal") != 0)) {
            api->cfg_error(ctx, "synchronous", "must be full or normal");
            free(s->path);
            free(s);
            return CHATD_ERR_INVALID;
        }
        s->sync_full = strcmp(sync, "full") == 0;
    }
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->path);
        free(s);
        return CHATD_ERR_NOMEM;
    }
    if (pthread_cond_init(&s->cv, NULL) != 0) {
        pthread_mutex_destroy(&s->mu);
        free(s->path);
        free(s);
        return CHATD_ERR_NOMEM;
    }
    if (pthread_mutex_init(&s->rmu, NULL) != 0 || pthread_cond_init(&s->rcv, NULL) != 0) {
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s->path);
        free(s);
        return CHATD_ERR_NOMEM;
    }
    *inst = s;
    return CHATD_OK;
}

/* Create the parent directory of the database when it is missing. */
static int ss_make_parent(ss *s)
{
    char *dir = pc_strdup(s->path);
    char *slash;
    int ok = 1;

    if (!dir) return 0;
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
            s->api->log(s->ctx, CHATD_LOG_ERROR,
                        "cannot create directory %s for the database: %s; create it or "
                        "change path",
                        dir, strerror(errno));
            ok = 0;
        }
    }
    free(dir);
    return ok;
}

static int ss_exec(ss *s, sqlite3 *db, const char *sql, const char *what)
{
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "%s failed on %s: %s; check the file, its permissions and free space", what,
                    s->path, err ? err : sqlite3_errstr(rc));
        sqlite3_free(err);
        return 0;
    }
    return 1;
}

static sqlite3 *ss_open(ss *s, const char *role)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot open %s (%s connection): %s; check the path and permissions", s->path,
                    role, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 0);
    return db;
}

/* Bring the schema to SS_SCHEMA_VERSION in one transaction. */
static int ss_migrate(ss *s)
{
    sqlite3_stmt *st = NULL;
    int version = -1, rc;

    if (!ss_exec(s, s->wdb, "BEGIN IMMEDIATE", "locking the database for migration")) return 0;
    rc = sqlite3_prepare_v2(s->wdb, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version < 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot read the schema version of %s: %s", s->path,
                    sqlite3_errmsg(s->wdb));
        goto fail;
    }
    if (version > SS_SCHEMA_VERSION) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "%s has schema version %d, newer than this store-sqlite knows (%d); run a "
                    "newer chatd or restore a matching database",
                    s->path, version, SS_SCHEMA_VERSION);
        goto fail;
    }
    for (int v = version; v < SS_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof(what), "schema migration %d -> %d", v, v + 1);
        if (!ss_exec(s, s->wdb, ss_migrations[v], what)) goto fail;
    }
    if (version < SS_SCHEMA_VERSION) {
        char sql[64];
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SS_SCHEMA_VERSION);
        if (!ss_exec(s, s->wdb, sql, "recording the schema version")) goto fail;
    }
    if (!ss_exec(s, s->wdb, "COMMIT", "committing the schema migration")) goto fail;
    if (version < SS_SCHEMA_VERSION)
        s->api->log(s->ctx, CHATD_LOG_INFO, "schema of %s migrated from version %d to %d", s->path,
                    version, SS_SCHEMA_VERSION);
    return 1;
fail:
    sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
    return 0;
}

static int ss_prepare_all(ss *s, sqlite3 *db, const char *const *sql, sqlite3_stmt **out, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &out[i], NULL);
        if (rc != SQLITE_OK) {
            s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot prepare \"%s\" on %s: %s (a bug)", sql[i],
                        s->path, sqlite3_errmsg(db));
            return 0;
        }
    }
    return 1;
}

static void ss_close_all(ss *s)
{
    for (int i = 0; i < W_COUNT; i++) {
        sqlite3_finalize(s->w[i]);
        s->w[i] = NULL;
    }
    for (int i = 0; i < R_COUNT; i++) {
        sqlite3_finalize(s->r[i]);
        s->r[i] = NULL;
    }
    if (s->rdb && sqlite3_close(s->rdb) != SQLITE_OK)
        s->api->log(s->ctx, CHATD_LOG_WARN, "closing the read connection: %s",
                    sqlite3_errmsg(s->rdb));
    if (s->cdb && sqlite3_close(s->cdb) != SQLITE_OK)
        s->api->log(s->ctx, CHATD_LOG_WARN, "closing the checkpoint connection: %s",
                    sqlite3_errmsg(s->cdb));
    if (s->wdb && sqlite3_close(s->wdb) != SQLITE_OK)
        s->api->log(s->ctx, CHATD_LOG_WARN, "closing the write connection: %s",
                    sqlite3_errmsg(s->wdb));
    s->rdb = s->wdb = s->cdb = NULL;
}

static chatd_status ss_start(void *inst)
{
    ss *s = inst;
    sqlite3_stmt *st = NULL;
    sqlite3 *cdb;
    const char *mode = NULL;
    char sql[96];
    int rc, wal = 0;

    if (!ss_make_parent(s)) return CHATD_ERR_IO;
    /* Start-up work (open, migrate) runs before the daemon serves anyone. */
    s->wdb = ss_open(s, "write");
    if (!s->wdb) return CHATD_ERR_IO;
    sqlite3_busy_timeout(s->wdb, (int)s->busy_ms);
    rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        mode = (const char *)sqlite3_column_text(st, 0);
        wal = mode && strcmp(mode, "wal") == 0;
    }
    sqlite3_finalize(st);
    if (!wal) {
        s->api->log(s->ctx, CHATD_LOG_ERROR,
                    "cannot switch %s to WAL mode (%s); put the database on a local "
                    "filesystem that supports shared memory",
                    s->path, sqlite3_errmsg(s->wdb));
        goto fail;
    }
    /* NORMAL: no fsync inside COMMIT (ss_sync.c makes a batch durable, with
     * synchronous = full), still at checkpoints and when the WAL is reused */
    if (!ss_exec(s, s->wdb, "PRAGMA synchronous=NORMAL", "setting synchronous=NORMAL") ||
        !ss_exec(s, s->wdb, "PRAGMA wal_autocheckpoint=0", "turning automatic checkpoints off") ||
        !ss_migrate(s) || !ss_sync_start(s))
        goto fail;
    /* the writer thread checkpoints (ss_commit.c); the hook tells it when */
    sqlite3_wal_hook(s->wdb, ss_wal_hook, s);
    s->ckpt_truncated_ms = pc_mono_ms();

    s->rdb = ss_open(s, "read");
    if (!s->rdb) goto fail;
    sqlite3_busy_timeout(s->rdb, (int)s->busy_ms); /* sleeps on the reader thread only */
    snprintf(sql, sizeof(sql), "PRAGMA query_only=ON");
    if (!ss_exec(s, s->rdb, sql, "making the read connection query-only") ||
        !ss_exec(s, s->rdb, "PRAGMA wal_autocheckpoint=0", "turning automatic checkpoints off"))
        goto fail;
    if (!ss_prepare_all(s, s->wdb, ss_wsql, s->w, W_COUNT) ||
        !ss_prepare_all(s, s->rdb, ss_rsql, s->r, R_COUNT))
        goto fail;

    /* the checkpoint thread's connection: it never writes a row */
    cdb = ss_open(s, "checkpoint");
    if (!cdb) goto fail;
    if (!ss_exec(s, cdb, "PRAGMA synchronous=NORMAL", "setting synchronous=NORMAL") ||
        !ss_exec(s, cdb, "PRAGMA wal_autocheckpoint=0", "turning automatic checkpoints off") ||
        !ss_ckpt_start(s, cdb)) {
        sqlite3_close(cdb);
        goto fail;
    }

    s->quit = 0;
    rc = pthread_create(&s->thread, NULL, ss_writer_main, s);
    if (rc != 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot start the writer thread: %s", strerror(rc));
        goto fail;
    }
    s->thread_running = 1;
    s->rquit = 0;
    rc = pthread_create(&s->reader, NULL, ss_reader_main, s);
    if (rc != 0) {
        s->api->log(s->ctx, CHATD_LOG_ERROR, "cannot start the reader thread: %s", strerror(rc));
        return CHATD_ERR_IO; /* destroy joins the writer and closes */
    }
    s->reader_running = 1;
    s->started = 1;
    s->api->log(s->ctx, CHATD_LOG_INFO,
                "opened %s (schema %d, WAL, synchronous %s, batch_max %lld, max_pending "
                "%lld, checkpoints by the writer every %lld pages or %lld ms idle)",
                s->path, SS_SCHEMA_VERSION,
                s->sync_full ? "full (fdatasync before a write is done)"
                             : "normal (not durable against power loss)",
                (long long)s->batch_max, (long long)s->max_pending, (long long)s->ckpt_pages,
                (long long)s->ckpt_idle_ms);
    return CHATD_OK;
fail:
    ss_close_all(s);
    return CHATD_ERR_IO;
}

static chatd_status ss_stop(void *inst, chatd_completion *done)
{
    ss *s = inst;

    s->stopping = 1;
    ss_handoff(s); /* do not wait for the posted flush */
    if (s->pending == 0 && !s->flush_posted) return CHATD_OK;
    s->api->log(s->ctx, CHATD_LOG_INFO, "stopping: committing %lld pending writes",
                (long long)s->pending);
    s->stop_done = done;
    return CHATD_ASYNC;
}

static void ss_destroy(void *inst)
{
    ss *s = inst;
    ss_batch *b, *nb;
    ss_job *j, *nj;

    if (!s) return;
    ss_handoff(s);
    if (s->thread_running) {
        pthread_mutex_lock(&s->mu);
        s->quit = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL); /* commits whatever is still queued */
        s->thread_running = 0;
    }
    ss_sync_stop(s); /* after the writer: syncs and releases what it committed */
    ss_ckpt_stop(s);
    /* Batches the loop no longer ran: report them now (loop thread). */
    for (b = s->orphans; b; b = nb) {
        nb = b->next;
        for (j = b->head; j; j = nj) {
            nj = j->next;
            ss_finish_job(s, j);
        }
        free(b);
    }
    s->orphans = NULL;
    ss_reader_join(s);
    /* Only when start failed or never ran can jobs remain queued. */
    for (j = s->wq_head; j; j = nj) {
        nj = j->next;
        j->status = CHATD_ERR_UNAVAILABLE;
        ss_finish_job(s, j);
    }
    ss_close_all(s);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->rcv);
    pthread_mutex_destroy(&s->rmu);
    free(s->path);
    free(s);
}

static const chatd_store_ops ss_ops = {
    .size = sizeof(chatd_store_ops),
    .persist = ss_persist,
    .member_create = ss_member_create,
    .member_get = ss_member_get,
    .member_list = ss_member_list,
    .session_put = ss_session_put,
    .session_get = ss_session_get,
    .session_del = ss_session_del,
    .session_purge = ss_session_purge,
    .room_list = ss_room_list,
    .history = ss_history,
    .idem_get = ss_idem_get,
    .replay = ss_replay,
    .dead_letter = ss_dead_letter,
    .node_claim = ss_node_claim,
    .member_page = ss_member_page,
    .side_replay = ss_side_replay,
    .stream_heads = ss_stream_heads,
    .idem_recent = ss_idem_recent,
};

static const chatd_plugin_desc ss_desc = {
    .abi_major = CHATD_ABI_MAJOR,
    .abi_minor = CHATD_ABI_MINOR,
    .size = sizeof(chatd_plugin_desc),
    .kind = CHATD_KIND_STORE,
    .name = "store-sqlite",
    .version = PACKAGE_VERSION,
    .description = "SQLite store: WAL, group commit on a writer thread, versioned schema",
    .cfg_keys = ss_cfg_keys,
    .create = ss_create,
    .start = ss_start,
    .stop = ss_stop,
    .destroy = ss_destroy,
    .reload = NULL,
    .ops = &ss_ops,
};

CHATD_PLUGIN_DEFINE(ss_desc)
