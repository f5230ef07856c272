/* store_sql.c — the SQL helpers the store's files share (store__*): clocks, statement stepping, removing a
 * database's files, the problem a failed write becomes, and the dataset and sample rows that several kinds of op write.
 *
 * They sit below the writer (store.c) and its parts (store_group.c, store_batch.c, store_review.c,
 * store_snap.c, store_load.c) and call none of them; like those, they run on the writer thread (or the main thread while
 * loading).
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store_internal.h"

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

void store__unlink_db_files(const char *path) {
  static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
  char f[600];
  for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
    snprintf(f, sizeof f, "%s%s", path, suffixes[i]);
    unlink(f);
  }
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

void store__step_reset(sqlite3_stmt *q) {
  sqlite3_reset(q);
  sqlite3_clear_bindings(q);
}

int store__step_done(sqlite3_stmt *q) {
  int rc = sqlite3_step(q);
  store__step_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* ------------------------------------------------------------------ what a failed op answers */

void store__sql_problem(store *s, wop *op, int rc) {
  op->failed = 1;
  if (rc == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR)
    problem_set(&op->err, P_STORAGE_FULL, NULL, "the database could not be written (%s); nothing was stored",
                sqlite3_errstr(rc));
  else if (rc == SQLITE_NOMEM)
    problem_set(&op->err, P_INTERNAL, NULL, "out of memory recording the change; nothing was stored");
  else problem_set(&op->err, P_INTERNAL, NULL, "database error (%s); nothing was stored", sqlite3_errstr(rc));
  (void)s;
}

void store__oom(wop *op) {
  op->failed = 1;
  problem_set(&op->err, P_INTERNAL, NULL, "out of memory; nothing was stored");
}

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
  if (*created_at <= 0) *created_at = store__unix_ms() / 1000;
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, *created_at);
  rc = store__step_done(q);
  if (rc != SQLITE_OK) return rc;
  *id = sqlite3_last_insert_rowid(s->db);
  return SQLITE_OK;
}

int store__sql_run(store *s, int64_t ds_id, const char *name, int32_t classes, int64_t *id, int32_t *have_classes,
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
  if (*created_at <= 0) *created_at = store__unix_ms() / 1000;
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 3, classes);
  sqlite3_bind_int64(q, 4, *created_at);
  rc = store__step_done(q);
  if (rc != SQLITE_OK) return rc;
  *id = sqlite3_last_insert_rowid(s->db);
  *have_classes = classes;
  return SQLITE_OK;
}

int store__write_sample(store *s, const st_dataset *ds, uint32_t key) {
  sqlite3_stmt *q = s->st[S_SAMPLE_UPSERT];
  const char *meta = st_meta(ds, key), *corrected = st_corrected(ds, key);
  const float confirm = st_confirm_score(ds, key);
  sqlite3_bind_int64(q, 1, st_id(ds));
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_text(q, 3, st_sample_id(ds, key), -1, SQLITE_STATIC);
  if (meta) sqlite3_bind_text(q, 4, meta, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, st_sample_status(ds, key));
  if (corrected) sqlite3_bind_text(q, 6, corrected, -1, SQLITE_STATIC);
  if (confirm >= 0.0f) sqlite3_bind_double(q, 7, confirm);
  sqlite3_bind_int64(q, 8, st_meta_seq(ds, key));
  return store__step_done(q);
}

/* The rows are not counted in the group's prefix here: the op may still fail and be rolled back to its
 * savepoint, its rows with it. The group counts them once the op is kept (store_group.c's keep_prefix). */
int store__write_prefix(store *s, st_dataset *ds, uint32_t key, uint32_t *upto) {
  const uint32_t from = st_prefix(ds); /* the committed prefix, or further when an op kept in this group wrote more */
  *upto = from;
  for (uint32_t k = from; k <= key; k++) {
    int rc = store__write_sample(s, ds, k);
    if (rc != SQLITE_OK) return rc;
    *upto = k + 1;
  }
  return SQLITE_OK;
}

int store__insert_batch(store *s, int64_t ds_id, int64_t run_id, const store_logged_batch *b, int64_t seq,
                        int64_t *out_seq) {
  sqlite3_stmt *q = s->st[S_BATCH_INSERT];
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_int64(q, 2, run_id);
  if (b->batch_id) sqlite3_bind_text(q, 3, b->batch_id, -1, SQLITE_STATIC);
  if (b->has_epoch) sqlite3_bind_int64(q, 4, b->epoch);
  if (b->has_step) sqlite3_bind_int64(q, 5, b->step);
  sqlite3_bind_int64(q, 6, b->n);
  sqlite3_bind_text(q, 7, b->loss_config, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 8, b->received_at);
  if (b->meta) sqlite3_bind_text(q, 9, b->meta, -1, SQLITE_STATIC);
  sqlite3_bind_blob(q, 10, b->payload, (int)b->plen, SQLITE_STATIC);
  if (seq > 0) sqlite3_bind_int64(q, 11, seq);
  if (b->batch_id && b->segments > 0) sqlite3_bind_int64(q, 12, b->segments);
  int rc = store__step_done(q);
  if (rc == SQLITE_OK) *out_seq = seq > 0 ? seq : sqlite3_last_insert_rowid(s->db);
  return rc;
}
