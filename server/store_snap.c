/* store_snap.c — the snapshot: the state the batch log implies, written in bounded steps between groups.
 *
 * A pass begins at a watermark, the newest batch applied in memory, and goes
 * through the datasets in id order. Of each dataset it writes the samples rows
 * of keys new since the last pass (in key order, so the table is always a
 * prefix of the keys), the rows whose meta changed, then each run's changed
 * history rows: only of keys whose samples row is written, so no history row
 * ever refers to a sample the table does not have. Each step is one
 * transaction of at most SNAPSHOT_CHUNK rows and SNAPSHOT_STEP_SECONDS, so a
 * batch waiting behind it waits milliseconds, not seconds.
 *
 * Memory follows the commit: a step notes what it wrote and only after its
 * COMMIT clears those rows' marks and moves the pass's cursor; if the step
 * fails, the marks stay and a later pass writes the rows.
 *
 * A row written during the pass may hold batches past the watermark; its seq
 * says which, and replay skips those for that row. The class means are
 * different: replay recomputes other_n (label_issue's counts) from them, so they must be
 * exactly the means as of the watermark. The pass copies them when it begins
 * and writes the copies in its last step, with snapshot.applied_seq, in one
 * transaction: at every commit, the class means and applied_seq agree.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store_internal.h"

#define SNAPSHOT_STEP_SECONDS 0.003
#define SNAPSHOT_CHUNK 50000

enum { PH_SAMPLES = 0, PH_META, PH_RUNS };
enum { MK_PERSIST, MK_META, MK_ROW };

/* A row a step wrote: its mark is cleared once the step commits. */
typedef struct snap_mark {
  st_dataset *ds;
  int kind;
  int run;
  uint32_t key;   /* MK_PERSIST: the new prefix length */
} snap_mark;

static snap_mark *marks; /* the writer's; freed by store__snap_free at close */
static size_t nmarks, capmarks;
static unsigned char *series_buf; /* the writer's: a row's series as stored */
static size_t series_cap;

void store__snap_free(void) {
  free(marks);
  marks = NULL;
  nmarks = capmarks = 0;
  free(series_buf);
  series_buf = NULL;
  series_cap = 0;
}

static int mark(st_dataset *ds, int kind, int run, uint32_t key) {
  if (nmarks == capmarks) {
    size_t cap = capmarks ? capmarks * 2 : 4096;
    snap_mark *m = realloc(marks, cap * sizeof *m);
    if (!m) return SQLITE_NOMEM;
    marks = m;
    capmarks = cap;
  }
  marks[nmarks++] = (snap_mark){ds, kind, run, key};
  return SQLITE_OK;
}

static int write_history_row(store *s, const st_run *r, uint32_t key) {
  st_row row;
  st_row_save(r, key, &row);
  const hist_rec *h = &row.h;
  sqlite3_stmt *q = s->st[S_HIST_UPSERT];
  sqlite3_bind_int64(q, 1, st_run_id(r));
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_int64(q, 3, row.seq);
  sqlite3_bind_int64(q, 4, h->seen);
  sqlite3_bind_int64(q, 5, h->scored_n);
  sqlite3_bind_int64(q, 6, h->correct_n);
  sqlite3_bind_int64(q, 7, h->forgetting);
  sqlite3_bind_double(q, 8, h->last_loss);
  sqlite3_bind_double(q, 9, h->mean_loss);
  sqlite3_bind_double(q, 10, h->max_loss);
  sqlite3_bind_double(q, 11, h->ema_loss);
  sqlite3_bind_double(q, 12, h->conf_mean);
  sqlite3_bind_double(q, 13, h->conf_m2);
  sqlite3_bind_double(q, 14, h->aum);
  if (h->label >= 0) sqlite3_bind_int(q, 15, h->label);
  sqlite3_bind_int(q, 16, h->last_correct);
  sqlite3_bind_int(q, 17, 0); /* label_issue: unused since schema 4 (derived from other_n when asked) */
  if (h->has_step) {
    sqlite3_bind_int64(q, 18, h->first_step);
    sqlite3_bind_int64(q, 19, h->last_step);
  }
  sqlite3_bind_blob(q, 20, row.ring, ST_RING_BYTES, SQLITE_STATIC);
  sqlite3_bind_int64(q, 21, row.stale_labels);
  sqlite3_bind_int64(q, 22, h->other_n);
  sqlite3_bind_double(q, 23, h->el2n);
  sqlite3_bind_int(q, 24, h->el2n_n);
  sqlite3_bind_double(q, 25, h->grand);
  sqlite3_bind_int(q, 26, h->grand_n);
  sqlite3_bind_int(q, 28, h->other_class);
  sqlite3_bind_int(q, 29, h->early_n == HIST_EARLY_UNKNOWN ? -1 : h->early_n);
  sqlite3_bind_int(q, 30, h->early_other_n);
  if (row.series_count) {
    const size_t need = HIST_SERIES_HEAD + (size_t)hist_series_len(row.series_count, row.series_shift) * HIST_POINT_BYTES;
    if (need > series_cap) {
      unsigned char *b = realloc(series_buf, need);
      if (!b) {
        store__step_reset(q);
        return SQLITE_NOMEM;
      }
      series_buf = b;
      series_cap = need;
    }
    sqlite3_bind_blob(q, 27, series_buf, (int)hist_series_pack(series_buf, row.series, row.series_count, row.series_shift),
                      SQLITE_STATIC);
  }
  return store__step_done(q);
}

/* The run of ds with id run_id, or NULL (its dataset deleted, or it). */
static const st_run *run_with_id(st_map *m, int64_t ds_id, int64_t run_id) {
  st_dataset *ds = st_w_find(m, ds_id);
  for (int i = 0; ds && i < st_nruns(ds); i++)
    if (st_run_id(st_run_at(ds, i)) == run_id) return st_run_at(ds, i);
  return NULL;
}

/* The pass's last writes: the class means as of the watermark, and the watermark. */
static int write_watermark(store *s) {
  snap_pass *p = &s->snap;
  for (int i = 0; i < p->ncls; i++) {
    const st_classes *c = &p->cls[i];
    if (!run_with_id(s->map, c->ds_id, c->run_id)) continue; /* deleted since */
    for (int32_t k = 0; k < c->c; k++) {
      if (c->count[k] == 0) continue;
      sqlite3_stmt *q = s->st[S_CLS_UPSERT];
      sqlite3_bind_int64(q, 1, c->run_id);
      sqlite3_bind_int(q, 2, k);
      sqlite3_bind_double(q, 3, c->sum[k]);
      sqlite3_bind_int64(q, 4, (sqlite3_int64)c->count[k]);
      int rc = store__step_done(q);
      if (rc != SQLITE_OK) return rc;
    }
    sqlite3_stmt *q = s->st[S_RUN_CLS_SEQ];
    sqlite3_bind_int64(q, 1, c->run_id);
    sqlite3_bind_int64(q, 2, c->seq);
    int rc = store__step_done(q);
    if (rc != SQLITE_OK) return rc;
  }
  sqlite3_stmt *q = s->st[S_SNAPSHOT_SET];
  sqlite3_bind_int64(q, 1, p->watermark);
  sqlite3_bind_int64(q, 2, store__unix_ms() / 1000);
  return store__step_done(q);
}

/* Where a step is in the pass: tentative until the step commits. */
typedef struct snap_cursor {
  int64_t ds_id;
  int phase, run;
  uint32_t key;
} snap_cursor;

/* Writes ds's rows from the cursor until budget rows are written (counting in
 * *written) or the deadline passes; *more says it stopped before the end. */
static int write_dataset(store *s, st_dataset *ds, snap_cursor *c, int *written, int budget, double deadline, int *more) {
  int rc = SQLITE_OK;
  const uint32_t persisted = st_persisted(ds), n = st_nsamples(ds);
  uint32_t upto = persisted; /* the prefix once this step commits */
  *more = 1;
#define OUT_OF_ROOM() (*written >= budget || ((*written & 255) == 255 && store__now_s() > deadline))
  if (c->phase == PH_SAMPLES) {
    /* new samples first: a history row's key must be in the samples table */
    for (uint32_t k = persisted; k < n; k++) {
      if (OUT_OF_ROOM()) break;
      if ((rc = store__write_sample(s, ds, k)) != SQLITE_OK) return rc;
      upto = k + 1;
      (*written)++;
    }
    if (upto > persisted && (rc = mark(ds, MK_PERSIST, 0, upto)) != SQLITE_OK) return rc;
    if (upto < n) return SQLITE_OK;
    c->phase = PH_META;
    c->key = 0;
  }
  if (c->phase == PH_META) {
    /* samples written before whose meta a batch has changed since (new ones were just written whole) */
    for (int64_t k = st_next_meta_dirty(ds, c->key); k >= 0 && k < persisted; k = st_next_meta_dirty(ds, (uint32_t)k + 1)) {
      if (OUT_OF_ROOM()) {
        c->key = (uint32_t)k;
        return SQLITE_OK;
      }
      if ((rc = store__write_sample(s, ds, (uint32_t)k)) != SQLITE_OK || (rc = mark(ds, MK_META, 0, (uint32_t)k)) != SQLITE_OK)
        return rc;
      (*written)++;
    }
    c->phase = PH_RUNS;
    c->run = 0;
    c->key = 0;
  }
  for (; c->run < st_nruns(ds); c->run++, c->key = 0) {
    const st_run *r = st_run_at(ds, c->run);
    /* rows of keys whose samples row is not written yet wait for the next pass */
    for (int64_t k = st_next_dirty(ds, c->run, c->key); k >= 0 && k < upto; k = st_next_dirty(ds, c->run, (uint32_t)k + 1)) {
      if (OUT_OF_ROOM()) {
        c->key = (uint32_t)k;
        return SQLITE_OK;
      }
      if ((rc = write_history_row(s, r, (uint32_t)k)) != SQLITE_OK || (rc = mark(ds, MK_ROW, c->run, (uint32_t)k)) != SQLITE_OK)
        return rc;
      (*written)++;
    }
  }
#undef OUT_OF_ROOM
  *more = 0;
  return SQLITE_OK;
}

/* Clears what a committed step wrote. */
static void clean_marks(void) {
  for (size_t i = 0; i < nmarks; i++) {
    snap_mark *m = &marks[i];
    switch (m->kind) {
    case MK_PERSIST:
      /* the new rows were written with their meta as it stood */
      for (uint32_t k = st_persisted(m->ds); k < m->key; k++) st_meta_clean(m->ds, k);
      st_set_persisted(m->ds, m->key);
      break;
    case MK_META: st_meta_clean(m->ds, m->key); break;
    default: st_row_clean(m->ds, m->run, m->key); break;
    }
  }
  nmarks = 0;
}

int store__snap_step(store *s) {
  snap_pass *p = &s->snap;
  snap_cursor c = {p->ds_id, p->phase, p->run, p->key};
  int written = 0, finished = 0, visited = 0;
  const double deadline = store__now_s() + SNAPSHOT_STEP_SECONDS;
  nmarks = 0;
  int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  while (rc == SQLITE_OK) {
    st_dataset *ds = st_w_next(s->map, c.ds_id);
    if (!ds) {
      finished = 1;
      break;
    }
    if (st_id(ds) != c.ds_id) c = (snap_cursor){st_id(ds), PH_SAMPLES, 0, 0};
    int more = 0;
    rc = write_dataset(s, ds, &c, &written, SNAPSHOT_CHUNK, deadline, &more);
    if (rc != SQLITE_OK || more) break;
    c = (snap_cursor){st_id(ds) + 1, PH_SAMPLES, 0, 0};
    /* datasets with little to write do not reach the row budget: thousands of them still end the step
     * at its deadline, so that batches waiting for the writer wait milliseconds */
    if ((++visited & 63) == 0 && store__now_s() > deadline) break;
  }
  if (rc == SQLITE_OK && finished) rc = write_watermark(s);
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    log_kv(LOG_WARN, "a snapshot step failed", "error", sqlite3_errstr(rc), NULL);
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    nmarks = 0;
    return -1;
  }
  clean_marks();
  p->ds_id = c.ds_id;
  p->phase = c.phase;
  p->run = c.run;
  p->key = c.key;
  if (!finished) return 1;
  for (int i = 0; i < p->ncls; i++) st_classes_saved(s->map, p->cls[i].ds_id, p->cls[i].run_id, p->cls[i].seq);
  s->applied_seq = p->watermark;
  return 0;
}

static void free_classes(snap_pass *p) {
  for (int i = 0; i < p->ncls; i++) st_classes_free(&p->cls[i]);
  free(p->cls);
  p->cls = NULL;
  p->ncls = 0;
}

void store__snap_begin(store *s) {
  snap_pass *p = &s->snap;
  memset(p, 0, sizeof *p);
  p->active = 1;
  p->watermark = s->last_seq;
  p->started = store__now_s();
  s->snap_wanted = 0;
  /* the class means as they stand at the watermark: now, on the writer thread */
  int cap = 0;
  for (st_dataset *ds = st_w_next(s->map, 0); ds; ds = st_w_next(s->map, st_id(ds) + 1)) {
    for (int i = 0; i < st_nruns(ds); i++) {
      if (p->ncls == cap) {
        cap = cap ? cap * 2 : 16;
        st_classes *n = realloc(p->cls, (size_t)cap * sizeof *n);
        if (!n) goto oom;
        p->cls = n;
      }
      if (st_classes_copy(ds, st_run_at(ds, i), &p->cls[p->ncls]) != 0) goto oom;
      if (p->cls[p->ncls].c > 0) p->ncls++;
    }
  }
  return;
oom:
  log_msg(LOG_WARN, "out of memory beginning a snapshot pass; it is put off");
  store__snap_end(s, -1);
}

void store__snap_end(store *s, int rc) {
  snap_pass *p = &s->snap;
  free_classes(p);
  p->active = 0;
  const double now = store__now_s();
  /* after a failure, a pause before the next try however short the interval: the disk may be full */
  const double pause = rc < 0 && s->cfg->snapshot_interval < 1 ? 1 : s->cfg->snapshot_interval;
  s->snap_due = now + pause;
  if (rc < 0) {
    atomic_fetch_add(&s->snapshot_failures, 1);
    log_msg(LOG_WARN, "a snapshot pass failed; its rows are still marked, and the next pass writes them");
  }
  if (rc != 0) s->snap_wanted = 1;
}
