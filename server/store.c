/* store.c — focald's SQLite storage: migrations, the writer thread, snapshots, replay.
 *
 * Connections: the writer connection is used by the main thread while loading
 * and then only by the writer thread; the checkpoint thread has its own. No
 * HTTP thread touches SQLite: queries are answered from state.c.
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
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "codec.h"
#include "http.h"
#include "log.h"
#include "store_internal.h"

/* The migrations, in order (generated from schema/ by the Makefile). */
extern const char *const focald_schema[];
extern const int focald_schema_count;

/* A snapshot transaction writes rows for at most this long (and this many), so
 * that a batch waiting behind it is delayed by milliseconds, not seconds. */
#define SNAPSHOT_STEP_SECONDS 0.003
#define SNAPSHOT_CHUNK 50000
/* The checkpoint thread runs when the WAL passes this size; a WAL that starts
 * over is cut back to it (journal_size_limit). */
#define CHECKPOINT_BYTES (64ll << 20)

static const char *const sql_text[S_COUNT] = {
    [S_DS_FIND] = "SELECT id, created_at FROM datasets WHERE name = ?1",
    [S_DS_INSERT] = "INSERT INTO datasets (name, created_at) VALUES (?1, ?2)",
    [S_RUN_FIND] = "SELECT id, classes, created_at FROM runs WHERE dataset_id = ?1 AND name = ?2",
    [S_RUN_INSERT] = "INSERT INTO runs (dataset_id, name, classes, created_at) VALUES (?1, ?2, ?3, ?4)",
    [S_BATCH_DUP] = "SELECT 1 FROM batches WHERE run_id = ?1 AND batch_id = ?2",
    [S_BATCH_INSERT] = "INSERT INTO batches (dataset_id, run_id, batch_id, epoch, step, n, loss_config, received_at, "
                       "meta, payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_SAMPLE_UPSERT] = "INSERT INTO samples (dataset_id, key, id, meta, status, corrected_label, confirm_score, meta_seq) "
                        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (dataset_id, key) DO UPDATE SET id = excluded.id, "
                        "meta = excluded.meta, status = excluded.status, corrected_label = excluded.corrected_label, "
                        "confirm_score = excluded.confirm_score, meta_seq = excluded.meta_seq",
    [S_HIST_UPSERT] = "INSERT OR REPLACE INTO history (run_id, key, seq, seen, scored, correct, forgetting, last_loss, "
                      "mean_loss, max_loss, ema_loss, confidence, conf_m2, aum, label, last_correct, label_issue, "
                      "first_step, last_step, recent, stale_labels) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, "
                      "?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)",
    [S_CLS_UPSERT] = "INSERT OR REPLACE INTO class_stats (run_id, class, sum, count) VALUES (?1, ?2, ?3, ?4)",
    [S_RUN_CLS_SEQ] = "UPDATE runs SET cls_seq = ?2 WHERE id = ?1",
    [S_SNAPSHOT_SET] = "UPDATE snapshot SET applied_seq = ?1, written_at = ?2 WHERE id = 1",
    [S_REVIEW_LOG] = "INSERT INTO review_log (dataset_id, key, at, reviewer, from_status, to_status, label_before, "
                     "label_after, note, batch_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
};

double store__now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int64_t store__unix_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int store__exec(sqlite3 *db, const char *sql) {
  char *msg = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
  if (rc != SQLITE_OK) {
    log_kv(LOG_ERROR, "sqlite", "sql", sql, "error", msg ? msg : sqlite3_errstr(rc), NULL);
    sqlite3_free(msg);
  }
  return rc;
}

/* mkdir -p of path's directory. */
static int make_parent(const char *path) {
  char dir[512];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (!slash) return 0;
  *slash = '\0';
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
    *p = '/';
  }
  if (dir[0] && mkdir(dir, 0750) != 0 && errno != EEXIST) return -1;
  return 0;
}

static int open_connection(const config *cfg, sqlite3 **out) {
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(cfg->db, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    log_kv(LOG_ERROR, "cannot open the database", "db", cfg->db, "error", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), NULL);
    sqlite3_close(db);
    return -1;
  }
  sqlite3_busy_timeout(db, 10000);
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
  *out = db;
  return 0;
}

static int migrate(sqlite3 *db) {
  sqlite3_stmt *q;
  int version = 0;
  if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, NULL) != SQLITE_OK) return -1;
  if (sqlite3_step(q) == SQLITE_ROW) version = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  if (version > focald_schema_count) {
    log_msg(LOG_ERROR, "the database is at schema %d; this focald knows %d: refusing to touch it", version,
            focald_schema_count);
    return -1;
  }
  for (int v = version; v < focald_schema_count; v++) {
    char set[64];
    snprintf(set, sizeof set, "PRAGMA user_version=%d;", v + 1);
    if (store__exec(db, "BEGIN IMMEDIATE") || store__exec(db, focald_schema[v]) || store__exec(db, set) || store__exec(db, "COMMIT")) {
      store__exec(db, "ROLLBACK");
      return -1;
    }
    log_msg(LOG_INFO, "applied schema migration %d", v + 1);
  }
  return 0;
}

int store_open(store **out, const config *cfg, st_map *map) {
  store *s = calloc(1, sizeof *s);
  if (!s) return -1;
  s->cfg = *cfg;
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
  if (make_parent(cfg->db) != 0) {
    log_kv(LOG_ERROR, "cannot create the database's directory", "db", cfg->db, "error", strerror(errno), NULL);
    goto fail;
  }
  if (open_connection(cfg, &s->db) != 0 || migrate(s->db) != 0) goto fail;
  for (int i = 0; i < S_COUNT; i++) {
    if (sqlite3_prepare_v3(s->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL) != SQLITE_OK) {
      log_kv(LOG_ERROR, "cannot prepare a statement", "sql", sql_text[i], "error", sqlite3_errmsg(s->db), NULL);
      goto fail;
    }
  }
  s->last_snapshot = store__now_s();
  *out = s;
  return 0;
fail:
  for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  free(s);
  return -1;
}

/* ------------------------------------------------------------------ applying batches to memory */

/* Per-sample meta a batch carries. */
typedef struct batch_meta {
  int n;
  const int32_t *index; /* into the batch's ids */
  char *const *json;
} batch_meta;

/* Applies a committed (or replayed) batch to the in-memory state. */
static int apply_batch(store *s, const char *dsname, int64_t ds_id, int64_t ds_created, const char *runname,
                       int64_t run_id, int32_t classes, int64_t run_created, int64_t seq, uint32_t n,
                       char *const *ids, const hist_obs *obs, const batch_meta *meta) {
  st_dataset *ds = st_find(s->map, dsname);
  if (!ds && st_add_dataset(s->map, dsname, ds_id, ds_created, &ds) != 0) return -1;
  int rc = -1;
  st_write_lock(ds);
  st_run *run = st_find_run(ds, runname);
  if (!run && st_add_run(ds, runname, run_id, classes, run_created, &run) != 0) goto out;
  if (run->classes == 0 && classes > 0 && st_run_set_classes(run, classes) != 0) goto out;
  for (uint32_t i = 0; i < n; i++) {
    int64_t key = st_sample_intern(ds, ids[i]);
    if (key < 0) goto out;
    /* the correction in force when the batch was logged: a replayed batch can be older than later reviews */
    const int32_t corrected = seq > ds->review_batch_seq ? (ds->status[key] == ST_RELABELLED ? ds->corrected_class[key] : -1)
                                                         : st_corrected_at(ds, (uint32_t)key, seq);
    st_observe(run, (uint32_t)key, seq, &obs[i], s->cfg.ema_alpha, corrected);
  }
  if (seq > run->cls_seq) run->cls_seq = seq;
  for (int i = 0; meta && i < meta->n; i++) {
    int64_t key = st_sample_key(ds, ids[meta->index[i]]);
    /* a meta set later by PUT wins over an older batch's being replayed */
    if (key < 0 || seq <= ds->meta_seq[key]) continue;
    if (st_sample_set_meta(ds, (uint32_t)key, meta->json[i]) != 0) goto out;
    ds->meta_seq[key] = seq;
  }
  if (seq > s->last_seq) s->last_seq = seq;
  rc = 0;
out:
  st_write_unlock(ds);
  if (rc != 0) log_kv(LOG_ERROR, "out of memory applying a batch; restart focald to reload it", "dataset", dsname, NULL);
  return rc;
}

/* ------------------------------------------------------------------ loading */

typedef struct id_map {
  int64_t id;
  st_dataset *ds;
  st_run *run;
} id_map;

static st_dataset *dataset_by_id(id_map *m, int n, int64_t id) {
  for (int i = 0; i < n; i++)
    if (m[i].id == id) return m[i].ds;
  return NULL;
}

static id_map *run_by_id(id_map *m, int n, int64_t id) {
  for (int i = 0; i < n; i++)
    if (m[i].id == id) return &m[i];
  return NULL;
}

static void ring_decode(st_run *r, uint32_t key, const void *blob, int len) {
  const unsigned char *b = blob;
  if (len != 2 + HIST_RECENT * (int)sizeof(hist_recent)) return;
  r->ring_head[key] = b[0] % HIST_RECENT;
  r->ring_count[key] = b[1] <= HIST_RECENT ? b[1] : HIST_RECENT;
  memcpy(r->recent + (size_t)key * HIST_RECENT, b + 2, HIST_RECENT * sizeof(hist_recent));
}

int store_load(store *s) {
  sqlite3_stmt *q = NULL;
  id_map *dsm = NULL, *rm = NULL;
  int nds = 0, nrun = 0, rc = -1;
  int64_t applied = 0, replayed = 0;
  double t0 = store__now_s();
#define PREP(sql) \
  if (sqlite3_prepare_v2(s->db, sql, -1, &q, NULL) != SQLITE_OK) goto out
#define DONE() \
  do {         \
    sqlite3_finalize(q); \
    q = NULL;  \
  } while (0)
  PREP("SELECT count(*) FROM datasets");
  if (sqlite3_step(q) == SQLITE_ROW) nds = sqlite3_column_int(q, 0);
  DONE();
  PREP("SELECT count(*) FROM runs");
  if (sqlite3_step(q) == SQLITE_ROW) nrun = sqlite3_column_int(q, 0);
  DONE();
  dsm = calloc((size_t)nds + 1, sizeof *dsm);
  rm = calloc((size_t)nrun + 1, sizeof *rm);
  if (!dsm || !rm) goto out;
  int i = 0;
  PREP("SELECT id, name, created_at FROM datasets");
  while (sqlite3_step(q) == SQLITE_ROW && i < nds) {
    dsm[i].id = sqlite3_column_int64(q, 0);
    if (st_add_dataset(s->map, (const char *)sqlite3_column_text(q, 1), dsm[i].id, sqlite3_column_int64(q, 2), &dsm[i].ds))
      goto out;
    i++;
  }
  nds = i;
  DONE();
  i = 0;
  PREP("SELECT id, dataset_id, name, classes, created_at, cls_seq FROM runs ORDER BY id");
  while (sqlite3_step(q) == SQLITE_ROW && i < nrun) {
    st_dataset *ds = dataset_by_id(dsm, nds, sqlite3_column_int64(q, 1));
    if (!ds) continue;
    rm[i].id = sqlite3_column_int64(q, 0);
    rm[i].ds = ds;
    if (st_add_run(ds, (const char *)sqlite3_column_text(q, 2), rm[i].id, sqlite3_column_int(q, 3),
                   sqlite3_column_int64(q, 4), &rm[i].run))
      goto out;
    rm[i].run->cls_seq = sqlite3_column_int64(q, 5);
    i++;
  }
  nrun = i;
  DONE();
  PREP("SELECT dataset_id, key, id, meta, status, corrected_label, confirm_score, meta_seq FROM samples "
       "ORDER BY dataset_id, key");
  while (sqlite3_step(q) == SQLITE_ROW) {
    st_dataset *ds = dataset_by_id(dsm, nds, sqlite3_column_int64(q, 0));
    if (!ds) continue;
    uint32_t key = (uint32_t)sqlite3_column_int64(q, 1);
    if (st_sample_load(ds, key, (const char *)sqlite3_column_text(q, 2), (const char *)sqlite3_column_text(q, 3),
                       sqlite3_column_int(q, 4)) ||
        st_sample_set_corrected(ds, key, (const char *)sqlite3_column_text(q, 5)))
      goto out;
    ds->confirm_score[key] = sqlite3_column_type(q, 6) == SQLITE_NULL ? NAN : (float)sqlite3_column_double(q, 6);
    ds->meta_seq[key] = sqlite3_column_int64(q, 7);
  }
  DONE();
  if (store__load_reviews(s) != 0) goto out;
  for (int r = 0; r < nrun; r++)
    if (st_run_reserve(rm[r].ds, rm[r].run) != 0) goto out;
  PREP("SELECT run_id, key, seq, seen, scored, correct, forgetting, last_loss, mean_loss, max_loss, ema_loss, "
       "confidence, conf_m2, aum, label, last_correct, label_issue, first_step, last_step, recent, stale_labels FROM history");
  while (sqlite3_step(q) == SQLITE_ROW) {
    id_map *m = run_by_id(rm, nrun, sqlite3_column_int64(q, 0));
    uint32_t key = (uint32_t)sqlite3_column_int64(q, 1);
    if (!m || key >= m->run->cap) continue;
    hist_rec h;
    hist_init(&h);
    h.seen = (uint32_t)sqlite3_column_int64(q, 3);
    h.scored_n = (uint32_t)sqlite3_column_int64(q, 4);
    h.correct_n = (uint32_t)sqlite3_column_int64(q, 5);
    h.forgetting = (uint32_t)sqlite3_column_int64(q, 6);
    h.last_loss = (float)sqlite3_column_double(q, 7);
    h.mean_loss = (float)sqlite3_column_double(q, 8);
    h.max_loss = (float)sqlite3_column_double(q, 9);
    h.ema_loss = (float)sqlite3_column_double(q, 10);
    h.conf_mean = (float)sqlite3_column_double(q, 11);
    h.conf_m2 = (float)sqlite3_column_double(q, 12);
    h.aum = (float)sqlite3_column_double(q, 13);
    h.label = sqlite3_column_type(q, 14) == SQLITE_NULL ? -1 : sqlite3_column_int(q, 14);
    h.last_correct = (uint8_t)sqlite3_column_int(q, 15);
    h.label_issue = (uint8_t)sqlite3_column_int(q, 16);
    h.has_step = sqlite3_column_type(q, 17) != SQLITE_NULL;
    h.first_step = sqlite3_column_int64(q, 17);
    h.last_step = sqlite3_column_int64(q, 18);
    st_row_put(m->run, key, &h);
    m->run->seq[key] = sqlite3_column_int64(q, 2);
    ring_decode(m->run, key, sqlite3_column_blob(q, 19), sqlite3_column_bytes(q, 19));
    m->run->stale_labels[key] = (uint32_t)sqlite3_column_int64(q, 20);
    m->run->observations += h.seen;
    m->run->samples += h.seen > 0;
    if (h.has_step && (!m->run->has_last_step_any || h.last_step > m->run->last_step_any)) {
      m->run->last_step_any = h.last_step;
      m->run->has_last_step_any = 1;
    }
  }
  DONE();
  PREP("SELECT run_id, class, sum, count FROM class_stats");
  while (sqlite3_step(q) == SQLITE_ROW) {
    id_map *m = run_by_id(rm, nrun, sqlite3_column_int64(q, 0));
    int c = sqlite3_column_int(q, 1);
    if (!m || c < 0 || c >= m->run->cls.c) continue;
    m->run->cls.sum[c] = sqlite3_column_double(q, 2);
    m->run->cls.count[c] = (uint64_t)sqlite3_column_int64(q, 3);
  }
  DONE();
  PREP("SELECT applied_seq FROM snapshot WHERE id = 1");
  if (sqlite3_step(q) == SQLITE_ROW) applied = sqlite3_column_int64(q, 0);
  DONE();
  s->last_seq = applied;
  s->logged_seq = applied;
  /* replay the log after the snapshot */
  PREP("SELECT b.seq, d.name, d.id, d.created_at, r.name, r.id, r.classes, r.created_at, b.step, b.meta, b.payload, "
       "b.epoch "
       "FROM batches b JOIN runs r ON r.id = b.run_id JOIN datasets d ON d.id = b.dataset_id WHERE b.seq > ?1 "
       "ORDER BY b.seq");
  sqlite3_bind_int64(q, 1, applied);
  while (sqlite3_step(q) == SQLITE_ROW) {
    codec_unpacked u;
    codec_when when = {sqlite3_column_type(q, 8) != SQLITE_NULL, sqlite3_column_type(q, 11) != SQLITE_NULL,
                       sqlite3_column_int64(q, 8), sqlite3_column_int64(q, 11)};
    if (codec_unpack(sqlite3_column_blob(q, 10), (size_t)sqlite3_column_bytes(q, 10), &when, &u) != 0) {
      log_msg(LOG_ERROR, "batch %lld has a malformed payload; skipped", (long long)sqlite3_column_int64(q, 0));
      continue;
    }
    /* the batch's meta: {"id": {...}} */
    batch_meta meta = {0};
    int32_t *midx = NULL;
    char **mjson = NULL;
    json_t *mobj = NULL;
    if (sqlite3_column_type(q, 9) != SQLITE_NULL) {
      mobj = json_loads((const char *)sqlite3_column_text(q, 9), 0, NULL);
      size_t nm = json_is_object(mobj) ? json_object_size(mobj) : 0;
      midx = calloc(nm + 1, sizeof *midx);
      mjson = calloc(nm + 1, sizeof *mjson);
      const char *k;
      json_t *v;
      if (midx && mjson && nm && u.n) {
        uint32_t hint = 0; /* meta follows the order of ids: look right after the last match first */
        json_object_foreach(mobj, k, v) {
          for (uint32_t t = 0; t < u.n; t++) {
            const uint32_t j = (hint + t) % u.n;
            if (strcmp(u.ids[j], k) == 0) {
              midx[meta.n] = (int32_t)j;
              mjson[meta.n++] = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
              hint = j + 1;
              break;
            }
          }
        }
      }
      meta.index = midx;
      meta.json = mjson;
    }
    int arc = apply_batch(s, (const char *)sqlite3_column_text(q, 1), sqlite3_column_int64(q, 2),
                          sqlite3_column_int64(q, 3), (const char *)sqlite3_column_text(q, 4), sqlite3_column_int64(q, 5),
                          sqlite3_column_int(q, 6), sqlite3_column_int64(q, 7), sqlite3_column_int64(q, 0), u.n, u.ids,
                          u.obs, &meta);
    for (int j = 0; j < meta.n; j++) free(mjson[j]);
    free(midx);
    free(mjson);
    json_decref(mobj);
    codec_unpacked_free(&u);
    if (arc != 0) goto out;
    replayed++;
  }
  DONE();
  s->logged_seq = s->last_seq;
  log_msg(LOG_INFO, "loaded %d datasets, %d runs from the snapshot at batch %lld and replayed %lld batches in %.2f s",
          nds, nrun, (long long)applied, (long long)replayed, store__now_s() - t0);
  rc = 0;
out:
  if (rc != 0) log_kv(LOG_ERROR, "cannot load the database", "error", sqlite3_errmsg(s->db), NULL);
  sqlite3_finalize(q);
  free(dsm);
  free(rm);
  return rc;
#undef PREP
#undef DONE
}

/* ------------------------------------------------------------------ the writer: SQL side of each op */

void store__step_reset(sqlite3_stmt *q) {
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
}

/* Problem for a failed SQLite call inside an op. */
void store__sql_problem(store *s, wop *op, int rc) {
  op->failed = 1;
  if (rc == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR)
    problem_set(&op->err, P_STORAGE_FULL, NULL, "the database could not be written (%s); nothing was stored",
                sqlite3_errstr(rc));
  else problem_set(&op->err, P_INTERNAL, NULL, "database error: %s", sqlite3_errmsg(s->db));
}

/* Finds or creates the dataset row; *created says whether it was new. */
int store__sql_dataset(store *s, const char *name, int create, int64_t *id, int64_t *created_at) {
  sqlite3_stmt *q = s->st[S_DS_FIND];
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    *id = sqlite3_column_int64(q, 0);
    *created_at = sqlite3_column_int64(q, 1);
    store__step_reset(q);
    return SQLITE_OK;
  }
  store__step_reset(q);
  if (rc != SQLITE_DONE) return rc;
  if (!create) return SQLITE_NOTFOUND;
  q = s->st[S_DS_INSERT];
  *created_at = store__unix_ms() / 1000;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, *created_at);
  rc = sqlite3_step(q);
  store__step_reset(q);
  if (rc != SQLITE_DONE) return rc;
  *id = sqlite3_last_insert_rowid(s->db);
  return SQLITE_OK;
}

static int sql_run(store *s, int64_t ds_id, const char *name, int32_t classes, int64_t *id, int32_t *have_classes,
                   int64_t *created_at) {
  sqlite3_stmt *q = s->st[S_RUN_FIND];
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    *id = sqlite3_column_int64(q, 0);
    *have_classes = sqlite3_column_int(q, 1);
    *created_at = sqlite3_column_int64(q, 2);
    store__step_reset(q);
    return SQLITE_OK;
  }
  store__step_reset(q);
  if (rc != SQLITE_DONE) return rc;
  q = s->st[S_RUN_INSERT];
  *created_at = store__unix_ms() / 1000;
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 3, classes);
  sqlite3_bind_int64(q, 4, *created_at);
  rc = sqlite3_step(q);
  store__step_reset(q);
  if (rc != SQLITE_DONE) return rc;
  *id = sqlite3_last_insert_rowid(s->db);
  *have_classes = classes;
  return SQLITE_OK;
}

/* What a batch op needs between its SQL and its memory application. */
typedef struct batch_plan {
  int64_t ds_id, ds_created, run_id, run_created, seq;
  int32_t classes;
  hist_obs *obs;
} batch_plan;

/* The observation each sample of a scored job contributes. */
static hist_obs *job_observations(const job *j) {
  const req *r = &j->rq;
  hist_obs *obs = calloc((size_t)r->n, sizeof *obs);
  if (!obs) return NULL;
  for (int64_t i = 0; i < r->n; i++) {
    const fl_score *sc = &j->scores[i];
    hist_obs *o = &obs[i];
    o->loss = j->loss[i];
    o->scored = sc->rows > 0;
    o->p_t = sc->p_t;
    o->p_max = sc->p_max;
    o->margin = sc->margin;
    o->correct = sc->correct;
    o->pred = sc->pred;
    o->label = -1;
    if (r->labels && r->m == 1) {
      int64_t y = req_label_at(r, i);
      if (y >= 0 && y < r->c) o->label = (int32_t)y;
    }
    o->has_step = r->has_step;
    o->step = r->step;
    o->has_epoch = r->has_epoch;
    o->epoch = r->epoch;
  }
  return obs;
}

static char *loss_config_json(const req *r) {
  json_t *o = json_object();
  json_object_set_new(o, "type", json_string(fl_loss_name(r->params.loss)));
  json_object_set_new(o, "profile", json_string(fl_profile_name(r->params.profile)));
  json_object_set_new(o, "reduction", json_string(fl_reduction_name(r->params.reduction)));
  json_object_set_new(o, "gamma", json_real(r->params.gamma));
  if (r->params.alpha_c) {
    json_t *a = json_array();
    for (int64_t k = 0; k < r->c; k++) json_array_append_new(a, json_real(r->params.alpha_c[k]));
    json_object_set_new(o, "alpha", a);
  } else {
    json_object_set_new(o, "alpha", r->params.alpha >= 0 ? json_real(r->params.alpha) : json_null());
  }
  json_object_set_new(o, "input", json_string(r->params.input == FL_INPUT_PROBS ? "probs" : "logits"));
  json_object_set_new(o, "shape", json_pack("[III]", (json_int_t)r->n, (json_int_t)r->m, (json_int_t)r->c));
  char *text = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(o);
  return text;
}

static char *batch_meta_json(const req *r) {
  if (r->nmeta == 0) return NULL;
  json_t *o = json_object();
  for (int i = 0; i < r->nmeta; i++)
    json_object_set_new(o, r->ids[r->meta_index[i]], json_loads(r->meta_json[i], 0, NULL));
  char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return text;
}

/* The SQL of recording one batch. Returns an SQLite code; refusals set op->failed with SQLITE_OK. */
static int sql_batch(store *s, job *j, batch_plan *plan) {
  const req *r = &j->rq;
  int rc = store__sql_dataset(s, j->op.dataset, 1, &plan->ds_id, &plan->ds_created);
  if (rc != SQLITE_OK) return rc;
  rc = sql_run(s, plan->ds_id, r->run, (int32_t)r->c, &plan->run_id, &plan->classes, &plan->run_created);
  if (rc != SQLITE_OK) return rc;
  if (plan->classes != r->c) {
    j->op.failed = 1;
    problem_set(&j->op.err, P_CLASS_COUNT_CONFLICT, "/logits",
                "run \"%s\" of dataset \"%s\" has %d classes; this batch has %lld", r->run, j->op.dataset,
                plan->classes, (long long)r->c);
    return SQLITE_OK;
  }
  if (r->has_batch_id) {
    sqlite3_stmt *q = s->st[S_BATCH_DUP];
    sqlite3_bind_int64(q, 1, plan->run_id);
    sqlite3_bind_text(q, 2, r->batch_id, -1, SQLITE_STATIC);
    rc = sqlite3_step(q);
    store__step_reset(q);
    if (rc == SQLITE_ROW) {
      j->duplicate = 1;
      return SQLITE_OK;
    }
    if (rc != SQLITE_DONE) return rc;
  }
  plan->obs = job_observations(j);
  unsigned char *payload = NULL;
  size_t plen = 0;
  codec_batch cb = {(uint32_t)r->n, (const char *const *)r->ids, plan->obs};
  if (!plan->obs || codec_pack(&cb, &payload, &plen) != 0) return SQLITE_NOMEM;
  char *cfgjson = loss_config_json(r);
  char *metajson = batch_meta_json(r);
  sqlite3_stmt *q = s->st[S_BATCH_INSERT];
  sqlite3_bind_int64(q, 1, plan->ds_id);
  sqlite3_bind_int64(q, 2, plan->run_id);
  if (r->has_batch_id) sqlite3_bind_text(q, 3, r->batch_id, -1, SQLITE_STATIC);
  if (r->has_epoch) sqlite3_bind_int64(q, 4, r->epoch);
  if (r->has_step) sqlite3_bind_int64(q, 5, r->step);
  sqlite3_bind_int64(q, 6, r->n);
  sqlite3_bind_text(q, 7, cfgjson ? cfgjson : "{}", -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 8, store__unix_ms());
  if (metajson) sqlite3_bind_text(q, 9, metajson, -1, SQLITE_STATIC);
  sqlite3_bind_blob(q, 10, payload, (int)plen, SQLITE_STATIC);
  rc = sqlite3_step(q);
  store__step_reset(q);
  free(payload);
  free(cfgjson);
  free(metajson);
  if (rc != SQLITE_DONE) return rc;
  plan->seq = sqlite3_last_insert_rowid(s->db);
  return SQLITE_OK;
}

static int sql_delete_dataset(store *s, wop *op, int64_t *ds_id) {
  int64_t created;
  int rc = store__sql_dataset(s, op->dataset, 0, ds_id, &created);
  if (rc == SQLITE_NOTFOUND) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
    return SQLITE_OK;
  }
  if (rc != SQLITE_OK) return rc;
  static const char *const del[] = {
      "DELETE FROM history WHERE run_id IN (SELECT id FROM runs WHERE dataset_id = ?1)",
      "DELETE FROM class_stats WHERE run_id IN (SELECT id FROM runs WHERE dataset_id = ?1)",
      "DELETE FROM samples WHERE dataset_id = ?1",
      "DELETE FROM batches WHERE dataset_id = ?1",
      "DELETE FROM review_log WHERE dataset_id = ?1",
      "DELETE FROM queue_items WHERE queue_id IN (SELECT id FROM queues WHERE dataset_id = ?1)",
      "DELETE FROM queues WHERE dataset_id = ?1",
      "DELETE FROM runs WHERE dataset_id = ?1",
      "DELETE FROM datasets WHERE id = ?1",
  };
  for (size_t i = 0; i < sizeof del / sizeof del[0]; i++) {
    sqlite3_stmt *q;
    rc = sqlite3_prepare_v2(s->db, del[i], -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(q, 1, *ds_id);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return rc;
  }
  return SQLITE_OK;
}

/* ------------------------------------------------------------------ the writer loop */

typedef struct op_state {
  wop *op;
  batch_plan plan;
} op_state;

/* Applies a committed (or failed) group to memory, counts it in the metrics and answers its ops. */
static void finish_group(store *s, op_state *ops, int n, int committed) {
  uint64_t samples = 0;
  for (int i = 0; i < n; i++) {
    wop *op = ops[i].op;
    if (!op->failed) {
      if (op->kind == WOP_BATCH) {
        job *j = (job *)op;
        if (!j->duplicate) {
          batch_meta meta = {j->rq.nmeta, j->rq.meta_index, j->rq.meta_json};
          apply_batch(s, op->dataset, ops[i].plan.ds_id, ops[i].plan.ds_created, j->rq.run, ops[i].plan.run_id,
                      ops[i].plan.classes, ops[i].plan.run_created, ops[i].plan.seq, (uint32_t)j->rq.n, j->rq.ids,
                      ops[i].plan.obs, &meta);
          samples += (uint64_t)j->rq.n;
        }
      } else if (op->kind == WOP_DELETE_DATASET) {
        st_dataset *ds = st_find(s->map, op->dataset);
        if (ds) {
          op->deleted_samples = ds->nsamples;
          for (int r = 0; r < ds->nruns; r++) op->deleted_observations += (int64_t)ds->runs[r]->observations;
        }
        st_remove_dataset(s->map, op->dataset);
      } else if (op->kind != WOP_BARRIER) {
        store__apply_review_op(s, op);
      }
    }
    free(ops[i].plan.obs);
    ops[i].plan.obs = NULL;
  }
  atomic_fetch_add(&s->committed_samples, samples);
  /* counted before anyone is answered: a client that reads /metrics after its 2xx sees its commit */
  if (committed) metrics_hist_observe(&s->commit_samples, (double)samples);
  for (int i = 0; i < n; i++) ops[i].op->done(ops[i].op);
}

/* Commits one group of ops: a savepoint per op, one COMMIT for all. */
static void run_group(store *s, wop *list) {
  int n = 0;
  for (wop *o = list; o; o = o->next) n++;
  op_state *ops = calloc((size_t)n, sizeof *ops);
  if (!ops) {
    for (wop *o = list, *next; o; o = next) {
      next = o->next;
      o->failed = 1;
      problem_set(&o->err, P_INTERNAL, NULL, "out of memory");
      o->done(o);
    }
    return;
  }
  int i = 0;
  for (wop *o = list; o; o = o->next) ops[i++].op = o;
  double t0 = store__now_s();
  int rc = store__exec(s->db, "BEGIN IMMEDIATE");
  const int64_t logged_before = s->logged_seq;
  for (i = 0; i < n && rc == SQLITE_OK; i++) {
    wop *op = ops[i].op;
    if (op->failed) continue;
    op->batch_seq = s->logged_seq;
    store__exec(s->db, "SAVEPOINT op");
    int orc = SQLITE_OK;
    int64_t ds_id = 0;
    switch (op->kind) {
    case WOP_BATCH: orc = sql_batch(s, (job *)op, &ops[i].plan); break;
    case WOP_DELETE_DATASET: orc = sql_delete_dataset(s, op, &ds_id); break;
    case WOP_REVIEW: orc = store__sql_review(s, op); break;
    case WOP_META: orc = store__sql_meta(s, op); break;
    case WOP_QUEUE: orc = store__sql_queue(s, op); break;
    case WOP_QUEUE_DELETE: orc = store__sql_queue_delete(s, op); break;
    case WOP_BARRIER: break;
    }
    if (orc != SQLITE_OK) {
      store__sql_problem(s, op, orc);
      store__exec(s->db, "ROLLBACK TO op");
    } else if (op->failed) {
      store__exec(s->db, "ROLLBACK TO op");
    }
    store__exec(s->db, "RELEASE op");
    if (orc == SQLITE_OK && !op->failed && op->kind == WOP_BATCH && ops[i].plan.seq > s->logged_seq)
      s->logged_seq = ops[i].plan.seq;
    if (orc == SQLITE_FULL || (orc & 0xff) == SQLITE_IOERR) rc = orc; /* the rest would fail the same way */
  }
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    /* nothing of the group is stored: every op fails with the reason */
    log_kv(LOG_ERROR, "commit failed", "error", sqlite3_errstr(rc), NULL);
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->logged_seq = logged_before; /* the group's batch seqs were not kept */
    for (i = 0; i < n; i++) {
      if (!ops[i].op->failed || ops[i].op->err.code == P_NONE) store__sql_problem(s, ops[i].op, rc);
      ops[i].op->failed = 1;
    }
  }
  const double seconds = store__now_s() - t0;
  const int committed = rc == SQLITE_OK;
  if (committed) {
    atomic_fetch_add(&s->commits, 1);
    atomic_fetch_add(&s->committed_ops, (uint64_t)n);
    atomic_fetch_add(&s->commit_ns, (unsigned long long)(seconds * 1e9));
    metrics_hist_observe(&s->commit_seconds, seconds);
    metrics_hist_observe(&s->commit_ops, n);
  }
  finish_group(s, ops, n, committed);
  free(ops);
}

/* ------------------------------------------------------------------ snapshots */

static void ring_encode(const st_run *r, uint32_t key, unsigned char *out) {
  out[0] = r->ring_head[key];
  out[1] = r->ring_count[key];
  memcpy(out + 2, r->recent + (size_t)key * HIST_RECENT, HIST_RECENT * sizeof(hist_recent));
}

int store__write_sample(store *s, const st_dataset *ds, uint32_t key) {
  sqlite3_stmt *q = s->st[S_SAMPLE_UPSERT];
  sqlite3_bind_int64(q, 1, ds->id);
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_text(q, 3, ds->ids[key], -1, SQLITE_STATIC);
  if (ds->meta[key]) sqlite3_bind_text(q, 4, ds->meta[key], -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, ds->status[key]);
  if (ds->corrected[key]) sqlite3_bind_text(q, 6, ds->corrected[key], -1, SQLITE_STATIC);
  if (ds->confirm_score[key] >= 0.0f) sqlite3_bind_double(q, 7, ds->confirm_score[key]);
  sqlite3_bind_int64(q, 8, ds->meta_seq[key]);
  int rc = sqlite3_step(q);
  store__step_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int write_row(store *s, const st_run *r, uint32_t key) {
  hist_rec h;
  st_row_get(r, key, &h);
  unsigned char ring[2 + HIST_RECENT * sizeof(hist_recent)];
  ring_encode(r, key, ring);
  sqlite3_stmt *q = s->st[S_HIST_UPSERT];
  sqlite3_bind_int64(q, 1, r->id);
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_int64(q, 3, r->seq[key]);
  sqlite3_bind_int64(q, 4, h.seen);
  sqlite3_bind_int64(q, 5, h.scored_n);
  sqlite3_bind_int64(q, 6, h.correct_n);
  sqlite3_bind_int64(q, 7, h.forgetting);
  sqlite3_bind_double(q, 8, h.last_loss);
  sqlite3_bind_double(q, 9, h.mean_loss);
  sqlite3_bind_double(q, 10, h.max_loss);
  sqlite3_bind_double(q, 11, h.ema_loss);
  sqlite3_bind_double(q, 12, h.conf_mean);
  sqlite3_bind_double(q, 13, h.conf_m2);
  sqlite3_bind_double(q, 14, h.aum);
  if (h.label >= 0) sqlite3_bind_int(q, 15, h.label);
  sqlite3_bind_int(q, 16, h.last_correct);
  sqlite3_bind_int(q, 17, h.label_issue);
  if (h.has_step) {
    sqlite3_bind_int64(q, 18, h.first_step);
    sqlite3_bind_int64(q, 19, h.last_step);
  }
  sqlite3_bind_blob(q, 20, ring, sizeof ring, SQLITE_STATIC);
  sqlite3_bind_int64(q, 21, r->stale_labels[key]);
  int rc = sqlite3_step(q);
  store__step_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int write_classes(store *s, st_run *r) {
  for (int32_t c = 0; c < r->cls.c; c++) {
    if (r->cls.count[c] == 0) continue;
    sqlite3_stmt *q = s->st[S_CLS_UPSERT];
    sqlite3_bind_int64(q, 1, r->id);
    sqlite3_bind_int(q, 2, c);
    sqlite3_bind_double(q, 3, r->cls.sum[c]);
    sqlite3_bind_int64(q, 4, (sqlite3_int64)r->cls.count[c]);
    int rc = sqlite3_step(q);
    store__step_reset(q);
    if (rc != SQLITE_DONE) return rc;
  }
  sqlite3_stmt *q = s->st[S_RUN_CLS_SEQ];
  sqlite3_bind_int64(q, 1, r->id);
  sqlite3_bind_int64(q, 2, r->cls_seq);
  int rc = sqlite3_step(q);
  store__step_reset(q);
  r->cls_dirty = 0;
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Finds the first dataset at or after name in name order (writer side, no locks needed). */
typedef struct next_ds {
  const char *after;
  int inclusive;
  st_dataset *found;
} next_ds;

static void pick_next(st_dataset *ds, void *arg) {
  next_ds *nd = arg;
  int c = strcmp(ds->name, nd->after);
  if ((c > 0 || (nd->inclusive && c == 0)) && !nd->found) nd->found = ds;
}

/* Writes up to `budget` rows of one dataset from the cursor, stopping early at
 * `deadline`; returns rows written (budget when it stopped early) or -1. */
static int snapshot_dataset(store *s, st_dataset *ds, int budget, double deadline) {
  snap_cursor *c = &s->snap;
  int written = 0;
  if (c->run < 0) {
    /* samples first: a history row's key must be in the samples table */
    for (uint32_t k = ds->persisted; k < ds->nsamples && written < budget; k++) {
      if (ds->ids[k] && store__write_sample(s, ds, k) != SQLITE_OK) return -1;
      ds->persisted = k + 1;
      ds->meta_dirty[k] = 0;
      written++;
    }
    if (written >= budget) return written;
    for (uint32_t k = 0; k < ds->persisted && written < budget; k++) {
      if (!ds->meta_dirty[k]) continue;
      if (store__write_sample(s, ds, k) != SQLITE_OK) return -1;
      ds->meta_dirty[k] = 0;
      written++;
    }
    if (written >= budget) return written;
    c->run = 0;
    c->key = 0;
  }
  for (; c->run < ds->nruns; c->run++, c->key = 0) {
    st_run *r = ds->runs[c->run];
    for (uint32_t w = c->key / 64; w < (r->cap + 63) / 64; w++) {
      uint64_t bits = r->dirty[w];
      while (bits) {
        if ((written & 255) == 255 && store__now_s() > deadline) written = budget; /* out of time: stop here */
        if (written >= budget) {
          c->key = w * 64;
          return written;
        }
        uint32_t key = w * 64 + (uint32_t)__builtin_ctzll(bits);
        bits &= bits - 1;
        if (write_row(s, r, key) != SQLITE_OK) return -1;
        r->dirty[w] &= ~(1ull << (key % 64));
        r->ndirty--;
        written++;
      }
    }
    if (r->cls_dirty && write_classes(s, r) != SQLITE_OK) return -1;
  }
  return written;
}

/* One transaction of a snapshot pass. Returns 1 while the pass goes on, 0 when it finished, -1 on error. */
static int snapshot_step(store *s) {
  snap_cursor *c = &s->snap;
  if (store__exec(s->db, "BEGIN IMMEDIATE") != SQLITE_OK) return -1;
  int budget = SNAPSHOT_CHUNK, more = 1;
  const double deadline = store__now_s() + SNAPSHOT_STEP_SECONDS;
  while (budget > 0) {
    next_ds nd = {c->dataset, c->run != -2, NULL};
    st_map_each(s->map, pick_next, &nd);
    if (!nd.found) {
      more = 0;
      break;
    }
    if (strcmp(nd.found->name, c->dataset) != 0) {
      snprintf(c->dataset, sizeof c->dataset, "%s", nd.found->name);
      c->run = -1;
      c->key = 0;
    }
    int w = snapshot_dataset(s, nd.found, budget, deadline);
    if (w < 0) {
      store__exec(s->db, "ROLLBACK");
      return -1;
    }
    budget -= w;
    if (budget > 0) c->run = -2; /* this dataset is done: move past it */
  }
  if (!more) {
    sqlite3_stmt *q = s->st[S_SNAPSHOT_SET];
    sqlite3_bind_int64(q, 1, c->watermark);
    sqlite3_bind_int64(q, 2, store__unix_ms() / 1000);
    int rc = sqlite3_step(q);
    store__step_reset(q);
    if (rc != SQLITE_DONE) {
      store__exec(s->db, "ROLLBACK");
      return -1;
    }
  }
  if (store__exec(s->db, "COMMIT") != SQLITE_OK) {
    store__exec(s->db, "ROLLBACK");
    return -1;
  }
  return more;
}

static void snapshot_begin(store *s) {
  s->snap.active = 1;
  s->snap.watermark = s->last_seq;
  s->snap.dataset[0] = '\0';
  s->snap.run = -1;
  s->snap.key = 0;
  s->snap.started = store__now_s();
}

/* At shutdown: snapshot steps for at most a second. The batch log holds
 * everything the snapshot does not, so a pass cut short costs only replay
 * time at the next start. */
static void snapshot_all(store *s) {
  snapshot_begin(s);
  int rc;
  double until = store__now_s() + 1.0;
  while ((rc = snapshot_step(s)) == 1 && store__now_s() < until) {
  }
  s->snap.active = 0;
  s->last_snapshot = store__now_s();
  if (rc < 0) log_msg(LOG_ERROR, "the final snapshot failed; the batch log still has everything");
  else if (rc > 0) log_msg(LOG_INFO, "the final snapshot was cut short; the next start replays the rest of the log");
}

static void *writer_main(void *arg) {
  store *s = arg;
  for (;;) {
    pthread_mutex_lock(&s->lock);
    while (!s->head && !s->stopping && !s->snap.active) {
      double due = s->last_snapshot + s->cfg.snapshot_interval;
      double wait = due - store__now_s();
      if (wait <= 0) break;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      long long ns = (long long)(wait * 1e9);
      ts.tv_sec += ns / 1000000000;
      ts.tv_nsec += ns % 1000000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&s->wake, &s->lock, &ts);
    }
    wop *list = s->head;
    s->head = s->tail = NULL;
    s->queued = 0;
    int stop = s->stopping;
    pthread_mutex_unlock(&s->lock);
    if (list) run_group(s, list);
    if (atomic_exchange(&s->wal_catchup, 0)) {
      int log_frames = 0, done = 0;
      sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log_frames, &done);
    }
    if (!s->snap.active && store__now_s() >= s->last_snapshot + s->cfg.snapshot_interval) snapshot_begin(s);
    if (s->snap.active) {
      /* one bounded step between groups: batches never wait long, and the pass still finishes */
      int rc = snapshot_step(s);
      if (rc <= 0) {
        s->snap.active = 0;
        s->last_snapshot = store__now_s();
        if (rc < 0) log_msg(LOG_WARN, "a snapshot step failed; the next pass will write its rows");
      }
    }
    if (stop && !list) break;
  }
  snapshot_all(s);
  return NULL;
}

static void *checkpoint_main(void *arg) {
  store *s = arg;
  sqlite3 *db = NULL;
  if (open_connection(&s->cfg, &db) != 0) return NULL;
  char wal[600];
  snprintf(wal, sizeof wal, "%s-wal", s->cfg.db);
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
  if (pthread_create(&s->writer, NULL, writer_main, s) != 0) return -1;
  s->writer_running = 1;
  if (pthread_create(&s->checkpointer, NULL, checkpoint_main, s) != 0) return -1;
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

void store_close(store *s) {
  if (!s) return;
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  pthread_cond_broadcast(&s->wake);
  pthread_mutex_unlock(&s->lock);
  if (s->writer_running) pthread_join(s->writer, NULL);
  if (s->checkpointer_running) pthread_join(s->checkpointer, NULL);
  int frames = 0, done = 0;
  int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, &frames, &done);
  if (rc != SQLITE_OK) log_kv(LOG_WARN, "final checkpoint", "error", sqlite3_errmsg(s->db), NULL);
  for (int i = 0; i < S_COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->wake);
  free(s);
}

void store_get_stats(store *s, store_stats *out) {
  memset(out, 0, sizeof *out);
  out->commits = atomic_load(&s->commits);
  out->committed_ops = atomic_load(&s->committed_ops);
  out->committed_samples = atomic_load(&s->committed_samples);
  out->commit_seconds_total = (double)atomic_load(&s->commit_ns) * 1e-9;
  pthread_mutex_lock(&s->lock);
  out->queue_depth = s->queued;
  pthread_mutex_unlock(&s->lock);
  struct stat st;
  if (stat(s->cfg.db, &st) == 0) out->db_bytes = st.st_size;
  char wal[600];
  snprintf(wal, sizeof wal, "%s-wal", s->cfg.db);
  if (stat(wal, &st) == 0) out->wal_bytes = st.st_size;
}

void store_metrics_write(store *s, char **buf, size_t *len, size_t *cap) {
  buf_printf(buf, len, cap, "# HELP focald_commit_duration_seconds Time of each commit of the writer, from BEGIN to COMMIT.\n"
                            "# TYPE focald_commit_duration_seconds histogram\n");
  metrics_hist_write(buf, len, cap, "focald_commit_duration_seconds", "", &s->commit_seconds);
  buf_printf(buf, len, cap, "# HELP focald_commit_ops Writes (batches, reviews, deletions) per commit.\n"
                            "# TYPE focald_commit_ops histogram\n");
  metrics_hist_write(buf, len, cap, "focald_commit_ops", "", &s->commit_ops);
  buf_printf(buf, len, cap, "# HELP focald_commit_samples Samples recorded per commit (the batch log's rows hold them).\n"
                            "# TYPE focald_commit_samples histogram\n");
  metrics_hist_write(buf, len, cap, "focald_commit_samples", "", &s->commit_samples);
}
