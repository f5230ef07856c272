/* store.c — focald's SQLite storage: migrations, the writer thread, checkpoints.
 *
 * Connections: the writer connection is used by the main thread while loading
 * and then only by the writer thread; the checkpoint thread has its own. No
 * HTTP thread touches SQLite: queries are answered from the in-memory state (state.h).
 *
 * The writer takes what is queued as a group and records it in one
 * transaction (store_group.c); between groups it catches up with a cluster's
 * log, copies the WAL's last frames when the checkpointer asks, and takes a
 * step of the snapshot pass (store_snap.c).
 *
 * Durability: batches are committed in WAL mode with synchronous FULL (a 2xx
 * survives power loss) or NORMAL (it survives a crash of focald, not of the
 * machine), as configured. Automatic checkpoints are off; the checkpoint
 * thread runs passive checkpoints beside the writer so commits never wait for
 * one, the writer then copies the few frames it added meanwhile so that the
 * WAL can start over (a WAL that is always being appended to never would),
 * and close runs a truncating checkpoint.
 */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_internal.h"

/* The migrations, in order (generated from schema/ by the Makefile). */
extern const char *const focald_schema[];
extern const int focald_schema_count;

/* The checkpoint thread runs when the WAL passes this size; a WAL that starts
 * over is cut back to it (journal_size_limit). */
#define CHECKPOINT_BYTES (64ll << 20)

static const char *const sql_text[S_COUNT] = {
    [S_DS_FIND] = "SELECT id, created_at FROM datasets WHERE name = ?1",
    [S_DS_INSERT] = "INSERT INTO datasets (name, created_at) VALUES (?1, ?2)",
    [S_RUN_FIND] = "SELECT id, classes, created_at FROM runs WHERE dataset_id = ?1 AND name = ?2",
    [S_RUN_INSERT] = "INSERT INTO runs (dataset_id, name, classes, created_at) VALUES (?1, ?2, ?3, ?4)",
    [S_BATCH_DUP] = "SELECT n, payload, seq, segments FROM batches WHERE run_id = ?1 AND batch_id = ?2",
    [S_BATCH_AT] = "SELECT n, payload FROM batches WHERE seq = ?1 AND run_id = ?2",
    /* ?11, the seq, is bound only on a cluster node (the log's position); unbound, the next rowid */
    [S_BATCH_INSERT] = "INSERT INTO batches (seq, dataset_id, run_id, batch_id, epoch, step, n, loss_config, received_at, "
                       "meta, payload, segments) VALUES (?11, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?12)",
    [S_SAMPLE_UPSERT] = "INSERT INTO samples (dataset_id, key, id, meta, status, corrected_label, confirm_score, meta_seq) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (dataset_id, key) DO UPDATE SET id = excluded.id, "
                        "meta = excluded.meta, status = excluded.status, corrected_label = excluded.corrected_label, "
                        "confirm_score = excluded.confirm_score, meta_seq = excluded.meta_seq",
    [S_HIST_UPSERT] = "INSERT OR REPLACE INTO history (run_id, key, seq, seen, scored, correct, forgetting, last_loss, "
                      "mean_loss, max_loss, ema_loss, confidence, conf_m2, aum, label, last_correct, label_issue, "
                      "first_step, last_step, recent, stale_labels, other_n, el2n, el2n_n, grand, grand_n, series, other_class, early_n, "
                      "early_other_n) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, "
                      "?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)",
    [S_CLS_UPSERT] = "INSERT OR REPLACE INTO class_stats (run_id, class, sum, count) VALUES (?1, ?2, ?3, ?4)",
    [S_RUN_CLS_SEQ] = "UPDATE runs SET cls_seq = ?2 WHERE id = ?1",
    [S_SNAPSHOT_SET] = "UPDATE snapshot SET applied_seq = ?1, written_at = ?2 WHERE id = 1",
    [S_REVIEW_LOG] = "INSERT INTO review_log (dataset_id, key, at, reviewer, from_status, to_status, label_before, "
                     "label_after, note, batch_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_IDEM_FIND] = "SELECT request, status, response FROM idempotency_keys WHERE dataset_id = ?1 AND key = ?2 "
                    "AND created_at >= ?3",
    [S_IDEM_PUT] = "INSERT OR REPLACE INTO idempotency_keys (dataset_id, key, request, status, response, created_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [S_IDEM_PURGE] = "DELETE FROM idempotency_keys WHERE rowid IN (SELECT rowid FROM idempotency_keys "
                     "WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)",
};

/* path's directory into dir: "." for a bare name, "/" for a name at the root. */
static void parent_dir(const char *path, char dir[512] /* OUT */) {
  snprintf(dir, 512, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) snprintf(dir, 512, ".");
  else if (slash == dir) dir[1] = '\0';
  else *slash = '\0';
}

/* mkdir -p of path's directory. */
static int make_parent(const char *path) {
  if (!strchr(path, '/')) return 0; /* the working directory */
  char dir[512];
  parent_dir(path, dir);
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (dir[0] && mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
  return 0;
}

/* Opens the database file path (creating it) with no setting applied yet; the caller closes *out. */
static int open_path(const char *path, sqlite3 **out /* OUT */) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    log_kv(LOG_ERROR, "cannot open the database", "db", path, "error", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), NULL);
    sqlite3_close(db);
    return -1;
  }
  sqlite3_busy_timeout(db, 10000);
  *out = db;
  return 0;
}

/* Applies focald's settings to a connection open_path opened; closes it on failure. */
static int set_pragmas(const config *cfg, sqlite3 *db) {
  /* Debian's SQLite defaults differ from upstream's; say what focald wants. */
  const char *pragmas = cfg->durability == DUR_FULL
                            ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA secure_delete=OFF;"
                              "PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-32768;"
                              "PRAGMA journal_size_limit=67108864;"
                            : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA secure_delete=OFF;"
                              "PRAGMA wal_autocheckpoint=0; PRAGMA temp_store=MEMORY; PRAGMA cache_size=-32768;"
                              "PRAGMA journal_size_limit=67108864;";
  if (store__exec(db, pragmas) != SQLITE_OK) {
    sqlite3_close(db);
    return -1;
  }
  return 0;
}

static int open_connection(const config *cfg, sqlite3 **out /* OUT */) {
  sqlite3 *db;
  if (open_path(cfg->db, &db) != 0 || set_pragmas(cfg, db) != 0) return -1;
  *out = db;
  return 0;
}

/* Whether the file open_path opened is focald's to write: a new (empty) database, or one with a focald schema
 * version and focald's first tables. The schema version is SQLite's user_version, a signed 32-bit number; focald
 * never writes a negative one, so a file that has one (another application's, or a damaged header) is not
 * focald's, tables or none. Decided, as read_version's refusal is, before anything is written, even the switch to
 * WAL (which changes the file's header) or the checkpoint on close of a WAL of its own: a file focald refuses is
 * left as it was. A read-only file is refused too, rather than served until the first write fails. Returns 0, or
 * -1 with db closed. */
static int check_owned(const config *cfg, sqlite3 *db, int had_wal) {
  sqlite3_stmt *q = NULL;
  int rc = SQLITE_READONLY;
  /* SQLite opens a file it may not write read-only; reading a WAL database would then still make its -shm */
  if (sqlite3_db_readonly(db, "main") == 1) {
    log_kv(LOG_ERROR, "the database file is read-only: focald must write it", "db", cfg->db, NULL);
  } else {
    rc = sqlite3_prepare_v2(db,
                            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master), "
                            "(SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('datasets', 'runs', "
                            "'batches', 'samples', 'history', 'class_stats', 'snapshot'))",
                            -1, &q, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(q);
    if (rc != SQLITE_ROW) {
      log_kv(LOG_ERROR, "cannot read the database", "db", cfg->db, "error", sqlite3_errmsg(db), NULL);
    } else {
      const int version = sqlite3_column_int(q, 0), objects = sqlite3_column_int(q, 1), ours = sqlite3_column_int(q, 2);
      if (version < 0) {
        log_msg(LOG_ERROR, "the database is not focald's (its schema version %d is negative, which focald never "
                "writes): refusing to touch %s", version, cfg->db);
        rc = SQLITE_ERROR;
      } else if ((version == 0 && objects > 0) || (version > 0 && ours < 7)) {
        log_kv(LOG_ERROR, "the database is not focald's (another application's tables, no focald schema): refusing to "
               "touch it", "db", cfg->db, NULL);
        rc = SQLITE_ERROR;
      }
    }
  }
  sqlite3_finalize(q);
  if (rc == SQLITE_ROW) return 0;
  if (had_wal) sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
  sqlite3_close(db);
  return -1;
}

/* Reads the database's schema version before anything is written to it, and refuses one that a newer focald
 * wrote: untouched, as the message says. So no setting is applied before (journal_mode=WAL rewrites the header
 * of a database in another journal mode), and the connection is closed without its checkpoint when the
 * database had a WAL of its own (the checkpoint would copy that WAL into the file and delete it). Returns 0 with
 * *version set, or -1 with db closed. */
static int read_version(const config *cfg, sqlite3 *db, int had_wal, int *version /* OUT */) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) *version = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  if (rc != SQLITE_ROW) {
    log_kv(LOG_ERROR, "cannot read the schema version", "db", cfg->db, "error", sqlite3_errmsg(db), NULL);
  } else if (*version < 0) { /* check_owned refuses it first; migrate must never index focald_schema with it */
    log_msg(LOG_ERROR, "the database's schema version %d is not focald's: refusing to touch %s", *version, cfg->db);
    rc = SQLITE_ERROR;
  } else if (*version > focald_schema_count) {
    log_msg(LOG_ERROR,
            "the database is at schema %d; this focald knows %d: refusing to touch it (a newer focald wrote %s: "
            "run that version, or one as new, on it)",
            *version, focald_schema_count, cfg->db);
    rc = SQLITE_ERROR;
  } else {
    return 0;
  }
  if (had_wal) sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
  sqlite3_close(db);
  return -1;
}

/* Brings db from schema version to focald's newest: each migration and its user_version in one transaction,
 * so that a start interrupted anywhere leaves the database at a version the next start goes on from. */
static int migrate(sqlite3 *db, int version) {
  for (int v = version; v < focald_schema_count; v++) {
    char set[64];
    snprintf(set, sizeof set, "PRAGMA user_version=%d;", v + 1);
    if (store__exec(db, "BEGIN IMMEDIATE") || store__exec(db, focald_schema[v]) || store__exec(db, set) || store__exec(db, "COMMIT")) {
      sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
      return -1;
    }
    log_msg(LOG_INFO, "applied schema migration %d", v + 1);
  }
  return 0;
}

/* Whether cfg->db is still to be made: no file, or an empty one (a valid empty SQLite database, and what an
 * older focald left when the disk was full at its first start) that focald may write, with no WAL beside it
 * that could hold content of its own. */
static int db_is_new(const config *cfg) {
  char wal[sizeof cfg->db + 8];
  struct stat st;
  snprintf(wal, sizeof wal, "%s-wal", cfg->db);
  if (stat(wal, &st) == 0 && st.st_size > 0) return 0;
  if (stat(cfg->db, &st) != 0) return errno == ENOENT;
  return S_ISREG(st.st_mode) && st.st_size == 0 && access(cfg->db, W_OK) == 0;
}

/* Opens path's directory (for a lock on it, and an fsync after a rename in it). Returns the descriptor, or -1. */
static int open_parent(const char *path) {
  char dir[512];
  parent_dir(path, dir);
  return open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Takes an exclusive flock on the directory fd, waiting while another process holds it (said once in the
 * log). Returns 0, or -1 when flock itself fails. */
static int lock_dir(int fd, const char *db) {
  int said = 0;
  for (;;) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno != EWOULDBLOCK && errno != EINTR) return -1;
    if (!said) {
      log_kv(LOG_INFO, "waiting for another process creating a database in the directory of --db", "db", db, NULL);
      said = 1;
    }
    usleep(20 * 1000);
  }
}

/* Makes a new database at cfg->db with every migration applied. It is built beside it, as cfg->db.creating,
 * checkpointed into one file and renamed into place only when complete: a creation that fails anywhere (a full
 * disk, an I/O error, a kill) leaves no database behind, only a .creating file the next start removes, so that
 * the next start creates it again rather than meet a half-made file (which a cluster node would also take
 * for a database of its own and not begin from the cluster's snapshot). Two focald starting on one new path
 * at once must not both build it (the second rename would replace a database the first already writes to):
 * the creation holds an exclusive flock on the directory, and whoever takes it second finds the database
 * made and opens it. Returns 0, or -1 (logged). */
static int create_db(const config *cfg) {
  const int dirfd = open_parent(cfg->db);
  if (dirfd < 0) {
    log_kv(LOG_ERROR, "cannot open the directory of --db to create the database", "db", cfg->db, "error",
           strerror(errno), NULL);
    return -1;
  }
  if (lock_dir(dirfd, cfg->db) != 0) /* a file system without flock: created unguarded, as SQLite would */
    log_kv(LOG_WARN, "cannot lock the directory of --db while creating the database", "db", cfg->db, "error",
           strerror(errno), NULL);
  if (!db_is_new(cfg)) { /* made by another focald while this one waited */
    close(dirfd);
    return 0;
  }
  char tmp[sizeof cfg->db + 16];
  snprintf(tmp, sizeof tmp, "%s.creating", cfg->db);
  store__unlink_db_files(tmp); /* what a creation that was killed left */
  sqlite3 *db = NULL;
  int rc = open_path(tmp, &db);
  if (rc == 0) {
    rc = set_pragmas(cfg, db); /* closes db on failure */
    if (rc != 0) db = NULL;
  }
  /* the WAL copied into the file and emptied; closing the last connection then deletes it */
  if (rc == 0 && (migrate(db, 0) != 0 || store__exec(db, "PRAGMA wal_checkpoint(TRUNCATE)") != SQLITE_OK)) rc = -1;
  if (db && sqlite3_close(db) != SQLITE_OK) rc = -1;
  char wal[sizeof tmp + 8];
  struct stat st;
  snprintf(wal, sizeof wal, "%s-wal", tmp);
  if (rc == 0 && stat(wal, &st) == 0) rc = -1; /* the close could not checkpoint: the file alone is not the database */
  if (rc == 0 && (rename(tmp, cfg->db) != 0 || fsync(dirfd) != 0)) {
    log_kv(LOG_ERROR, "cannot move the new database into place", "db", cfg->db, "error", strerror(errno), NULL);
    rc = -1;
  }
  if (rc != 0) {
    store__unlink_db_files(tmp);
    log_kv(LOG_ERROR, "cannot create the database: nothing was left at its path, the next start creates it again",
           "db", cfg->db, NULL);
  }
  close(dirfd); /* and with it the lock */
  return rc;
}

int store_open(store **out, const config *cfg, st_map *map) {
  store *s = calloc(1, sizeof *s);
  if (!s) return -1;
  fault_point(FP_LOAD);
  s->cfg = cfg;
  static const double seconds_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10};
  static const double ops_bounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  static const double samples_bounds[] = {0, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576};
  s->commit_seconds.bounds = seconds_bounds;
  s->commit_seconds.nbounds = (int)(sizeof seconds_bounds / sizeof seconds_bounds[0]);
  s->commit_ops.bounds = ops_bounds;
  s->commit_ops.nbounds = (int)(sizeof ops_bounds / sizeof ops_bounds[0]);
  s->commit_samples.bounds = samples_bounds;
  s->commit_samples.nbounds = (int)(sizeof samples_bounds / sizeof samples_bounds[0]);
  s->map = map;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->wake, NULL);
  if (store__cluster_admit(cfg) != 0) goto fail;
  if (make_parent(cfg->db) != 0) {
    log_kv(LOG_ERROR, "cannot create the database's directory", "db", cfg->db, "error", strerror(errno), NULL);
    goto fail;
  }
  if (store__cluster_bootstrap(cfg) != 0) goto fail;
  if (db_is_new(cfg) && create_db(cfg) != 0) goto fail;
  char wal[sizeof cfg->db + 8];
  struct stat st;
  snprintf(wal, sizeof wal, "%s-wal", cfg->db);
  const int had_wal = stat(wal, &st) == 0;
  int version = 0;
  if (open_path(cfg->db, &s->db) != 0) goto fail;
  if (check_owned(cfg, s->db, had_wal) != 0 || read_version(cfg, s->db, had_wal, &version) != 0 ||
      set_pragmas(cfg, s->db) != 0) {
    s->db = NULL; /* closed */
    goto fail;
  }
  if (migrate(s->db, version) != 0) goto fail;
  for (int i = 0; i < S_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) != SQLITE_OK) {
      log_kv(LOG_ERROR, "cannot prepare a statement", "sql", sql_text[i], "error", sqlite3_errmsg(s->db), NULL);
      goto fail;
    }
  }
  if (store__cluster_open(s) != 0) goto fail;
  s->snap_due = store__now_s() + cfg->snapshot_interval;
  *out = s;
  return 0;
fail:
  store__cluster_stop(s);
  for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->wake);
  free(s);
  return -1;
}

int store_load(store *s) {
  fault_point(FP_LOAD);
  if (store__load(s) != 0) return -1;
  /* a cluster node then applies what the log has beyond its local copy */
  if (store__group_catch_up(s) != 0) {
    log_msg(LOG_ERROR, "could not catch up with the cluster's log");
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ the writer */

static void writer_wait(store *s) {
  /* a pass is due after the interval once something was applied; otherwise wait for work */
  while (!s->head && !s->stopping && !s->snap.active && !atomic_load(&s->pg_wanted)) {
    struct timespec ts;
    if (s->snap_wanted) {
      double wait = s->snap_due - store__now_s();
      if (wait <= 0) return;
      clock_gettime(CLOCK_REALTIME, &ts);
      long long ns = (long long)(wait * 1e9);
      ts.tv_sec += ns / 1000000000;
      ts.tv_nsec += ns % 1000000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&s->wake, &s->lock, &ts);
    } else {
      pthread_cond_wait(&s->wake, &s->lock);
    }
  }
}

static void *writer_main(void *arg) {
  store *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    writer_wait(s);
    if (s->head && focald_fault_point) {
      /* a harness may hold the writer here, while more ops queue up behind it */
      pthread_mutex_unlock(&s->lock);
      fault_point(FP_WAKE);
      pthread_mutex_lock(&s->lock);
    }
    int n = 0;
    wop *group = store__group_take(s, &n);
    const int stop = s->stopping && !s->head;
    pthread_mutex_unlock(&s->lock);
    if (group) store__group_run(s, group, n);
    /* a cluster node applies what other nodes appended, between groups */
    if (atomic_exchange(&s->pg_wanted, 0)) store__group_catch_up(s);
    if (atomic_exchange(&s->wal_catchup, 0)) {
      fault_point(FP_CHECKPOINT);
      int log_frames = 0, done = 0;
      sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
    }
    if (!s->snap.active && s->snap_wanted && store__now_s() >= s->snap_due) store__snap_begin(s);
    if (s->snap.active) {
      /* one bounded step between groups: batches never wait long, and the pass still finishes */
      fault_point(FP_SNAPSHOT);
      int rc = store__snap_step(s);
      if (rc <= 0) store__snap_end(s, rc);
    }
    if (stop && !group) break;
  }
  /* at shutdown: snapshot steps for at most a second. The batch log holds
   * everything the snapshot does not, so a pass cut short costs only replay
   * time at the next start. */
  fault_point(FP_CLOSE);
  if (!s->snap.active && s->snap_wanted) store__snap_begin(s);
  /* a pass that could not begin (out of memory: store__snap_begin ended it, logged) takes no step: its
   * watermark would be written without the class means it copies as it begins */
  if (s->snap.active) {
    int rc;
    const double until = store__now_s() + 1.0;
    while ((rc = store__snap_step(s)) == 1 && store__now_s() < until) {
    }
    store__snap_end(s, rc);
    if (rc < 0) log_msg(LOG_ERROR, "the final snapshot failed; the batch log still has everything");
    else if (rc > 0) log_msg(LOG_INFO, "the final snapshot was cut short; the next start replays the rest of the log");
  }
  return NULL;
}

static void *checkpoint_main(void *arg) {
  store *s = arg;
  sqlite3 *db = NULL;
  if (open_connection(s->cfg, &db) != 0) return NULL;
  char wal[600];
  snprintf(wal, sizeof wal, "%s-wal", s->cfg->db);
  for (;;) {
    pthread_mutex_lock(&s->lock);
    int stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (stop) break;
    struct stat st;
    if (stat(wal, &st) == 0 && st.st_size > CHECKPOINT_BYTES) {
      int log_frames = 0, done = 0;
      sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
      /* the writer kept appending meanwhile, so the WAL cannot start over yet: ask it to copy the
       * last few frames itself between two groups, after which its next commit rewinds the WAL */
      atomic_store(&s->wal_catchup, 1);
    }
    struct timespec nap = {0, 200000000};
    nanosleep(&nap, NULL);
  }
  sqlite3_close(db);
  return NULL;
}

int store_start(store *s) {
  if (store__cluster_start(s) != 0) return -1;
  int rc = pthread_create(&s->writer, NULL, writer_main, s);
  if (rc != 0) {
    log_kv(LOG_ERROR, "cannot start a thread", "thread", "writer", "error", strerror(rc), NULL);
    return -1;
  }
  s->writer_running = 1;
  rc = pthread_create(&s->checkpointer, NULL, checkpoint_main, s);
  if (rc != 0) {
    log_kv(LOG_ERROR, "cannot start a thread", "thread", "checkpointer", "error", strerror(rc), NULL);
    return -1;
  }
  s->checkpointer_running = 1;
  return 0;
}

void store_submit(store *s, wop *op) {
  op->next = NULL;
  pthread_mutex_lock(&s->lock);
  if (s->tail) s->tail->next = op;
  else s->head = op;
  s->tail = op;
  s->queued++;
  pthread_cond_signal(&s->wake);
  pthread_mutex_unlock(&s->lock);
}

void store_stopping(store *s) {
  if (s) store__cluster_stopping(s);
}

void store_close(store *s) {
  if (!s) return;
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->lock);
  store_stopping(s);
  if (s->writer_running) pthread_join(s->writer, NULL);
  if (s->checkpointer_running) pthread_join(s->checkpointer, NULL);
  store__cluster_stop(s);
  store__snap_free();
  fault_point(FP_CHECKPOINT);
  int frames = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &frames, &done);
  if (rc != SQLITE_OK) log_kv(LOG_WARN, "final checkpoint", "error", sqlite3_errmsg(s->db), NULL);
  for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->wake);
  free(s);
}

void store_on_applied(store *s, void (*moved)(int64_t position), void (*head)(int64_t position)) {
  s->applied_moved = moved;
  s->head_moved = head;
}

void store_get_stats(store *s, store_stats *out) {
  memset(out, 0, sizeof *out);
  out->commits = atomic_load(&s->commits);
  out->committed_ops = atomic_load(&s->committed_ops);
  out->committed_samples = atomic_load(&s->committed_samples);
  out->failed_commits = atomic_load(&s->failed_commits);
  out->snapshot_failures = atomic_load(&s->snapshot_failures);
  out->duplicate_batches = atomic_load(&s->duplicate_batches);
  out->idempotent_replays = atomic_load(&s->idempotent_replays);
  out->commit_seconds_total = (double)atomic_load(&s->commit_ns) * 1e-9;
  pthread_mutex_lock(&s->lock);
  out->queue_depth = s->queued;
  pthread_mutex_unlock(&s->lock);
  struct stat st;
  if (stat(s->cfg->db, &st) == 0) out->db_bytes = st.st_size;
  char wal[600];
  snprintf(wal, sizeof wal, "%s-wal", s->cfg->db);
  if (stat(wal, &st) == 0) out->wal_bytes = st.st_size;
}

int64_t store_stuck_position(store *s) {
  return s ? atomic_load(&s->pg_stuck) : 0;
}

void store_metrics_write(store *s, buf *o) {
  if (s->cfg->store[0]) {
    buf_printf(o, "# HELP focald_log_applied_position The last position of the cluster's shared log this node applied.\n"
                  "# TYPE focald_log_applied_position gauge\nfocald_log_applied_position %lld\n"
                  "# HELP focald_log_head_position The shared log's head as this node last saw it (-1: PostgreSQL cannot "
                  "be reached).\n# TYPE focald_log_head_position gauge\nfocald_log_head_position %lld\n",
               (long long)atomic_load(&s->applied_pos), (long long)atomic_load(&s->pg_head));
  }
  buf_printf(o, "# HELP focald_commit_duration_seconds Time of each commit of the writer, from BEGIN to COMMIT.\n"
                "# TYPE focald_commit_duration_seconds histogram\n");
  metrics_hist_write(o, "focald_commit_duration_seconds", "", &s->commit_seconds);
  buf_printf(o, "# HELP focald_commit_ops Writes (batches, reviews, meta, queues, deletions) per commit.\n"
                "# TYPE focald_commit_ops histogram\n");
  metrics_hist_write(o, "focald_commit_ops", "", &s->commit_ops);
  buf_printf(o, "# HELP focald_commit_samples Samples of the batches of each commit (retried batches excluded).\n"
                "# TYPE focald_commit_samples histogram\n");
  metrics_hist_write(o, "focald_commit_samples", "", &s->commit_samples);
}
