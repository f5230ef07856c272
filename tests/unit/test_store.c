/* test_store.c — the SQLite store: group commit, duplicates, conflicts, deletion, reload and replay.
 *
 * Each test opens a store on a fresh temporary database and submits jobs as
 * the HTTP layer would (already scored: the losses and scores are made up
 * here, since the store only records them).
 *
 * The test defines the fault-injection hook (faultpoint.h) to hold the writer
 * before it takes what is queued, so that ops submitted meanwhile make one
 * group.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <jansson.h>
#include <sqlite3.h>

#include "faultpoint.h"
#include "log.h"
#include "review.h"
#include "store.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int completed;

static void on_done(wop *op) {
  (void)op;
  pthread_mutex_lock(&mu);
  completed++;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}

static void wait_for(int n) {
  pthread_mutex_lock(&mu);
  while (completed < n) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

/* while set (under mu), the writer waits at FP_WAKE, before it takes what is queued */
static int writer_held;

void focald_fault_point(int step) {
  if (step != FP_WAKE) return;
  pthread_mutex_lock(&mu);
  while (writer_held) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

/* Submits n ops as one group: the writer is held until all are queued. Waits until they are done. */
static void submit_group(store *st, wop **ops, int n) {
  pthread_mutex_lock(&mu);
  writer_held = 1;
  const int target = completed + n;
  pthread_mutex_unlock(&mu);
  for (int i = 0; i < n; i++) store_submit(st, ops[i]);
  pthread_mutex_lock(&mu);
  writer_held = 0;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  wait_for(target);
}

/* jansson's allocator for the tests: it refuses every request while jansson_fails is set. */
static atomic_int jansson_fails;

static void *jansson_malloc(size_t n) {
  return atomic_load(&jansson_fails) ? NULL : malloc(n);
}

typedef struct env {
  char dir[256];
  config cfg;
  st_map *map;
  store *st;
} env;

static void open_env(env *e) {
  e->map = st_map_new();
  assert_non_null(e->map);
  assert_int_equal(store_open(&e->st, &e->cfg, e->map), 0);
  assert_int_equal(store_load(e->st), 0);
  assert_int_equal(store_start(e->st), 0);
}

static void close_env(env *e) {
  store_close(e->st);
  st_map_free(e->map);
  e->st = NULL;
  e->map = NULL;
}

static int setup(void **state) {
  env *e = calloc(1, sizeof *e);
  snprintf(e->dir, sizeof e->dir, "/tmp/focald-test-store-XXXXXX");
  assert_non_null(mkdtemp(e->dir));
  memset(&e->cfg, 0, sizeof e->cfg);
  snprintf(e->cfg.db, sizeof e->cfg.db, "%s/db/f.db", e->dir);
  e->cfg.durability = DUR_NORMAL;
  e->cfg.ema_alpha = 0.3;
  e->cfg.early_observations = 10;
  e->cfg.snapshot_interval = 3600; /* snapshots only at close, unless a test asks */
  log_set_level(LOG_ERROR);
  completed = 0;
  open_env(e);
  *state = e;
  return 0;
}

static int teardown(void **state) {
  env *e = *state;
  if (e->st) close_env(e);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", e->dir);
  assert_int_equal(system(cmd), 0);
  free(e);
  return 0;
}

/* A scored job of n samples "<prefix><i>" with losses base + i. */
static job *make_job(const char *dataset, const char *run, const char *batch_id, int n, int c, float base, int64_t step) {
  job *j = calloc(1, sizeof *j);
  j->store = 1;
  j->op.kind = WOP_BATCH;
  j->op.done = on_done;
  snprintf(j->op.dataset, sizeof j->op.dataset, "%s", dataset);
  req *r = &j->rq;
  snprintf(r->run, sizeof r->run, "%s", run);
  if (batch_id) {
    snprintf(r->batch_id, sizeof r->batch_id, "%s", batch_id);
    r->has_batch_id = 1;
  }
  r->has_step = 1;
  r->step = step;
  fl_params_init(&r->params, FL_SIGMOID_FOCAL);
  r->n = n;
  r->m = 1;
  r->c = c;
  r->x_name = "logits";
  r->x = req_alloc(r, (size_t)(n * c) * sizeof *r->x);
  int64_t *labels = req_alloc(r, (size_t)n * sizeof *labels);
  r->labels = labels;
  r->label_type = FL_LABEL_I64;
  r->ids = malloc((size_t)n * sizeof *r->ids + (size_t)n * 16);
  char *p = (char *)(r->ids + n);
  j->loss = malloc((size_t)n * sizeof *j->loss);
  j->scores = calloc((size_t)n, sizeof *j->scores);
  for (int i = 0; i < n; i++) {
    r->ids[i] = p;
    p += sprintf(p, "s%d", i) + 1;
    labels[i] = i % c;
    j->loss[i] = base + (float)i;
    j->scores[i] = (fl_score){.p_t = 0.5f, .p_max = 0.6f, .margin = 1.0f, .correct = 1.0f, .pred = i % c, .rows = 1};
  }
  return j;
}

static void submit_wait(env *e, job **jobs, int n) {
  int target = completed + n;
  for (int i = 0; i < n; i++) store_submit(e->st, &jobs[i]->op);
  wait_for(target);
}

static uint64_t observations(st_map *m, const char *dataset) {
  const st_dataset *ds = st_acquire(m, dataset);
  if (!ds) return 0;
  uint64_t n = st_observations(ds);
  st_release(ds);
  return n;
}

/* snapshot.applied_seq as committed, read on a connection of its own. */
static int64_t applied_seq(const env *e) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  int64_t v = -1;
  if (sqlite3_open_v2(e->cfg.db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT applied_seq FROM snapshot WHERE id = 1", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW)
    v = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

/* Waits (up to 10 s) until a snapshot pass has committed a watermark of at least seq. */
static void wait_for_snapshot(const env *e, int64_t seq) {
  for (int i = 0; i < 1000 && applied_seq(e) < seq; i++) usleep(10000);
  assert_true(applied_seq(e) >= seq);
}

/* Copies the database files as they are now (what a crash leaves) to dir/name/f.db; returns an env for it. */
static env crash_copy(const env *e, const char *name) {
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "mkdir -p %s/%s && cp %s %s/%s/f.db && cp %s-wal %s/%s/f.db-wal", e->dir, name, e->cfg.db, e->dir,
           name, e->cfg.db, e->dir, name);
  assert_int_equal(system(cmd), 0);
  env c = *e;
  snprintf(c.cfg.db, sizeof c.cfg.db, "%s/%s/f.db", e->dir, name);
  return c;
}

static void test_store_group_commit_and_reload(void **state) {
  env *e = *state;
  job *jobs[3] = {make_job("d", "r", "b1", 10, 4, 1.0f, 1), make_job("d", "r", "b2", 10, 4, 3.0f, 2),
                  make_job("d", "other", NULL, 5, 4, 0.5f, 3)};
  submit_wait(e, jobs, 3);
  for (int i = 0; i < 3; i++) assert_false(jobs[i]->op.failed);
  assert_int_equal(observations(e->map, "d"), 25);
  const st_dataset *ds = st_acquire(e->map, "d");
  hist_rec before, after;
  memset(&before, 0, sizeof before); /* padding too: the records are compared as bytes */
  memset(&after, 0, sizeof after);
  st_history(st_find_run(ds, "r"), (uint32_t)st_key(ds, "s3"), &before);
  st_release(ds);
  assert_int_equal(before.seen, 2);
  assert_true(fabs(before.mean_loss - (4.0 + 6.0) / 2) < 1e-6);
  close_env(e);
  open_env(e);
  assert_int_equal(observations(e->map, "d"), 25);
  ds = st_acquire(e->map, "d");
  assert_non_null(ds);
  st_history(st_find_run(ds, "r"), (uint32_t)st_key(ds, "s3"), &after);
  st_release(ds);
  assert_memory_equal(&before, &after, sizeof before);
  for (int i = 0; i < 3; i++) job_free(jobs[i]);
}

static void test_store_duplicate_batch_id_counts_once(void **state) {
  env *e = *state;
  job *a = make_job("d", "r", "same", 4, 3, 1.0f, 1), *b = make_job("d", "r", "same", 4, 3, 9.0f, 2);
  job *c = make_job("d", "r2", "same", 4, 3, 1.0f, 1); /* another run: not a duplicate */
  job *all[3] = {a, b, c};
  submit_wait(e, all, 3);
  assert_false(a->duplicate);
  assert_true(b->duplicate);
  assert_false(b->op.failed);
  assert_false(c->duplicate);
  assert_int_equal(observations(e->map, "d"), 8);
  for (int i = 0; i < 3; i++) job_free(all[i]);
}

static void test_store_class_count_conflict(void **state) {
  env *e = *state;
  job *a = make_job("d", "r", NULL, 3, 3, 1.0f, 1), *b = make_job("d", "r", NULL, 3, 5, 1.0f, 2);
  job *all[2] = {a, b};
  submit_wait(e, all, 2);
  assert_false(a->op.failed);
  assert_true(b->op.failed);
  assert_int_equal(b->op.err.code, P_CLASS_COUNT_CONFLICT);
  assert_int_equal(observations(e->map, "d"), 3);
  job_free(a);
  job_free(b);
}

static void test_store_delete_dataset(void **state) {
  env *e = *state;
  job *a = make_job("gone", "r", NULL, 6, 2, 1.0f, 1), *k = make_job("kept", "r", NULL, 2, 2, 1.0f, 1);
  job *all[2] = {a, k};
  submit_wait(e, all, 2);
  wop del = {.kind = WOP_DELETE_DATASET, .done = on_done};
  snprintf(del.dataset, sizeof del.dataset, "gone");
  int target = completed + 1;
  store_submit(e->st, &del);
  wait_for(target);
  assert_false(del.failed);
  assert_int_equal(del.deleted_samples, 6);
  /* the answer, built by the writer before the commit (the caller owns it) */
  assert_int_equal(del.answer_status, 200);
  assert_string_equal(del.answer, "{\"deleted\":\"gone\",\"samples\":6,\"observations\":6}");
  free(del.answer);
  assert_null(st_acquire(e->map, "gone"));
  wop again = {.kind = WOP_DELETE_DATASET, .done = on_done};
  snprintf(again.dataset, sizeof again.dataset, "gone");
  target = completed + 1;
  store_submit(e->st, &again);
  wait_for(target);
  assert_true(again.failed);
  assert_int_equal(again.err.code, P_DATASET_NOT_FOUND);
  assert_null(again.answer); /* refused: nothing to answer but the problem */
  close_env(e);
  open_env(e);
  assert_null(st_acquire(e->map, "gone"));
  assert_int_equal(observations(e->map, "kept"), 2);
  job_free(a);
  job_free(k);
}

/* A copy of the database files taken while focald runs, before any snapshot:
 * what a crash leaves. Loading it must replay the batch log. */
static void test_store_replays_log_without_snapshot(void **state) {
  env *e = *state;
  job *jobs[2] = {make_job("d", "r", "x1", 20, 3, 1.0f, 1), make_job("d", "r", "x2", 20, 3, 2.0f, 2)};
  submit_wait(e, jobs, 2);
  env c = crash_copy(e, "crash");
  open_env(&c);
  assert_int_equal(observations(c.map, "d"), 40);
  const st_dataset *ds = st_acquire(c.map, "d");
  hist_rec h;
  st_history(st_find_run(ds, "r"), (uint32_t)st_key(ds, "s5"), &h);
  st_release(ds);
  assert_int_equal(h.seen, 2);
  assert_true(fabs(h.mean_loss - (6.0 + 7.0) / 2) < 1e-6);
  assert_true(h.has_step && h.first_step == 1 && h.last_step == 2);
  close_env(&c);
  for (int i = 0; i < 2; i++) job_free(jobs[i]);
}

/* A snapshot pass that has committed, then more batches, then a crash: the reload holds each
 * batch once (the first from the snapshot, the second from the log). */
static void test_store_snapshot_then_more_batches(void **state) {
  env *e = *state;
  close_env(e);
  e->cfg.snapshot_interval = 0; /* a pass after every group */
  open_env(e);
  job *a = make_job("d", "r", "y1", 30, 3, 1.0f, 1);
  submit_wait(e, &a, 1);
  wait_for_snapshot(e, a->seq[0]);
  job *b = make_job("d", "r", "y2", 30, 3, 5.0f, 2);
  close_env(e); /* no pass after b: it stays in the log alone */
  e->cfg.snapshot_interval = 3600;
  open_env(e);
  submit_wait(e, &b, 1);
  assert_true(applied_seq(e) == a->seq[0]);
  env c = crash_copy(e, "c2");
  open_env(&c);
  assert_int_equal(observations(c.map, "d"), 60);
  const st_dataset *ds = st_acquire(c.map, "d");
  hist_rec h;
  st_history(st_find_run(ds, "r"), (uint32_t)st_key(ds, "s4"), &h);
  st_release(ds);
  assert_int_equal(h.seen, 2);
  assert_true(fabs(h.mean_loss - (5.0 + 9.0) / 2) < 1e-6);
  close_env(&c);
  job_free(a);
  job_free(b);
}

/* The batch log's seqs are never used twice: after the dataset holding the newest batches is
 * deleted, a new batch gets a seq above the snapshot's watermark, so a crash before the next pass
 * replays it (a reused seq would sit below the watermark and be skipped). */
static void test_store_batch_seq_never_reused_after_delete(void **state) {
  env *e = *state;
  close_env(e);
  e->cfg.snapshot_interval = 0;
  open_env(e);
  job *k = make_job("kept", "r", NULL, 2, 2, 1.0f, 1);
  submit_wait(e, &k, 1);
  job *g[3] = {make_job("gone", "r", NULL, 3, 2, 1.0f, 1), make_job("gone", "r", NULL, 3, 2, 1.0f, 2),
               make_job("gone", "r", NULL, 3, 2, 1.0f, 3)};
  submit_wait(e, g, 3);
  wait_for_snapshot(e, g[2]->seq[0]);
  wop del = {.kind = WOP_DELETE_DATASET, .done = on_done};
  snprintf(del.dataset, sizeof del.dataset, "gone");
  int target = completed + 1;
  store_submit(e->st, &del);
  wait_for(target);
  assert_false(del.failed);
  free(del.answer);
  close_env(e);
  e->cfg.snapshot_interval = 3600; /* no pass: the next batch is in the log only */
  open_env(e);
  job *n = make_job("new", "r", NULL, 4, 2, 1.0f, 9);
  submit_wait(e, &n, 1);
  assert_true(n->seq[0] > g[2]->seq[0]);
  env c = crash_copy(e, "c3");
  open_env(&c);
  assert_int_equal(observations(c.map, "new"), 4);
  assert_int_equal(observations(c.map, "kept"), 2);
  assert_null(st_acquire(c.map, "gone"));
  close_env(&c);
  job_free(k);
  job_free(n);
  for (int i = 0; i < 3; i++) job_free(g[i]);
}

/* Writes a database file at path with the given user_version (and, when table is set, a table of another
 * application's). */
static void write_foreign_db(const char *path, int version, int table) {
  sqlite3 *db = NULL;
  char sql[128];
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  snprintf(sql, sizeof sql, "PRAGMA user_version = %d;%s", version, table ? "CREATE TABLE notes (x TEXT);" : "");
  assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* The bytes of the file at path (malloc'd; *len its size). */
static unsigned char *file_bytes(const char *path, long *len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  assert_int_equal(fseek(f, 0, SEEK_END), 0);
  *len = ftell(f);
  assert_true(*len > 0);
  rewind(f);
  unsigned char *b = malloc((size_t)*len);
  assert_non_null(b);
  assert_int_equal(fread(b, 1, (size_t)*len, f), (size_t)*len);
  fclose(f);
  return b;
}

/* SQLite's user_version is a signed 32-bit number and focald never writes a negative one: a file with one
 * (another application's database, or a damaged header), with tables or without, is refused like any database
 * that is not focald's, and left byte for byte as it was (not switched to WAL: header bytes 18 and 19 stay 1). */
static void test_store_refuses_negative_schema_version(void **state) {
  env *e = *state;
  static const int versions[] = {-1, INT32_MIN};
  for (size_t v = 0; v < sizeof versions / sizeof versions[0]; v++) {
    for (int table = 0; table < 2; table++) {
      config cfg = e->cfg;
      snprintf(cfg.db, sizeof cfg.db, "%s/foreign-%zu-%d.db", e->dir, v, table);
      write_foreign_db(cfg.db, versions[v], table);
      long before_len = 0, after_len = 0;
      unsigned char *before = file_bytes(cfg.db, &before_len);
      assert_int_equal(before[18], 1);
      assert_int_equal(before[19], 1);
      st_map *map = st_map_new();
      assert_non_null(map);
      store *st = NULL;
      assert_int_equal(store_open(&st, &cfg, map), -1);
      st_map_free(map);
      unsigned char *after = file_bytes(cfg.db, &after_len);
      assert_int_equal(after_len, before_len);
      assert_memory_equal(after, before, (size_t)before_len);
      char wal[sizeof cfg.db + 8];
      snprintf(wal, sizeof wal, "%s-wal", cfg.db);
      assert_int_not_equal(access(wal, F_OK), 0);
      free(before);
      free(after);
    }
  }
}

/* The samples table's rows of the only dataset: *rows of them, keys below *end. */
static void samples_rows(const env *e, int64_t *rows, int64_t *end) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  assert_int_equal(sqlite3_open_v2(e->cfg.db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*), coalesce(max(key) + 1, 0) FROM samples", -1, &q, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(q), SQLITE_ROW);
  *rows = sqlite3_column_int64(q, 0);
  *end = sqlite3_column_int64(q, 1);
  sqlite3_finalize(q);
  sqlite3_close(db);
}

/* An op of the group that writes samples rows below its sample (the table is a prefix of the keys) and then
 * fails is rolled back to its savepoint, those rows with it: a later op of the group must write them again.
 * Here a review of s5 writes rows 0..5 and fails for want of memory recording its Idempotency-Key (jansson
 * refuses every allocation); a meta put on s2 in the same group must then write rows 0..2, not count them
 * written, or the table has a hole that the dataset's persisted prefix passes and the next start refuses. */
static void test_store_failed_op_leaves_samples_prefix(void **state) {
  env *e = *state;
  job *b = make_job("d", "r", "p1", 10, 3, 1.0f, 1);
  submit_wait(e, &b, 1);
  assert_false(b->op.failed);
  int64_t rows = -1, end = -1;
  samples_rows(e, &rows, &end);
  assert_int_equal(rows, 0); /* no snapshot yet: the batch is in the log only */
  review_op *r = calloc(1, sizeof *r);
  meta_op *m = calloc(1, sizeof *m);
  assert_non_null(r);
  assert_non_null(m);
  r->op.kind = WOP_REVIEW;
  r->op.done = on_done;
  snprintf(r->op.dataset, sizeof r->op.dataset, "d");
  snprintf(r->op.idem_key, sizeof r->op.idem_key, "review-s5");
  snprintf(r->id, sizeof r->id, "s5");
  r->to = ST_CONFIRMED;
  m->op.kind = WOP_META;
  m->op.done = on_done;
  snprintf(m->op.dataset, sizeof m->op.dataset, "d");
  snprintf(m->id, sizeof m->id, "s2");
  m->meta = strdup("{\"a\":1}");
  assert_non_null(m->meta);
  wop *group[2] = {&r->op, &m->op};
  json_set_alloc_funcs(jansson_malloc, free);
  atomic_store(&jansson_fails, 1);
  submit_group(e->st, group, 2);
  atomic_store(&jansson_fails, 0);
  json_set_alloc_funcs(malloc, free);
  assert_true(r->op.failed);
  assert_int_equal(r->op.err.code, P_INTERNAL);
  assert_false(m->op.failed);
  samples_rows(e, &rows, &end);
  assert_int_equal(rows, 3);
  assert_int_equal(end, 3);
  review_op_free(&r->op);
  review_op_free(&m->op);
  close_env(e); /* the final snapshot writes the keys past the prefix */
  open_env(e);
  const st_dataset *ds = st_acquire(e->map, "d");
  assert_non_null(ds);
  assert_int_equal(st_sample_status(ds, (uint32_t)st_key(ds, "s5")), ST_OPEN);
  assert_string_equal(st_meta(ds, (uint32_t)st_key(ds, "s2")), "{\"a\":1}");
  st_release(ds);
  samples_rows(e, &rows, &end);
  assert_int_equal(rows, 10);
  assert_int_equal(end, 10);
  job_free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_store_group_commit_and_reload, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_duplicate_batch_id_counts_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_class_count_conflict, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_delete_dataset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_replays_log_without_snapshot, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_snapshot_then_more_batches, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_batch_seq_never_reused_after_delete, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_refuses_negative_schema_version, setup, teardown),
      cmocka_unit_test_setup_teardown(test_store_failed_op_leaves_samples_prefix, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
