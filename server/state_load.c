/* state_load.c — the datasets rebuilt from the database at start-up. Each
 * st_load_* refuses a row that does not fit what focald writes, with a message
 * naming it, so that focald never starts on half a state.
 */
#include <stdarg.h>
#include <stdio.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state_core.h"

/* ------------------------------------------------------------------ loading */

static int load_fail(char *err, size_t errn, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int load_fail(char *err, size_t errn, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errn, fmt, ap);
  va_end(ap);
  return -1;
}

int st_load_dataset(st_map *m, int64_t id, const char *name, int64_t created_at, char *err, size_t errn) {
  if (!name || !*name || strlen(name) > ST_NAME_MAX) return load_fail(err, errn, "dataset %lld has no valid name", (long long)id);
  if (st_w_find(m, id) || st_w_find_name(m, name))
    return load_fail(err, errn, "dataset %lld (\"%s\") is there twice", (long long)id, name);
  st_dataset *ds = st__dataset_new(name, id, created_at);
  if (!ds || st__map_reserve(m, 1) != 0) {
    st__dataset_free(ds);
    return load_fail(err, errn, "out of memory");
  }
  st__map_insert(m, ds);
  return 0;
}

int st_load_run(st_map *m, int64_t ds_id, int64_t id, const char *name, int32_t classes, int64_t created_at,
                int64_t cls_seq, char *err, size_t errn) {
  st_dataset *ds = st_w_find(m, ds_id);
  if (!ds) return load_fail(err, errn, "run %lld belongs to dataset %lld, which does not exist", (long long)id, (long long)ds_id);
  if (!name || !*name || strlen(name) > ST_NAME_MAX || classes < 1)
    return load_fail(err, errn, "run %lld has no valid name or class count", (long long)id);
  if (st_find_run(ds, name)) return load_fail(err, errn, "run \"%s\" of dataset \"%s\" is there twice", name, ds->name);
  if (m->nruns > 0 && m->runs[m->nruns - 1].id >= id) return load_fail(err, errn, "runs are not in id order at run %lld", (long long)id);
  if (st__grow_array((void **)&m->runs, &m->capruns, m->nruns + 1, sizeof *m->runs) != 0)
    return load_fail(err, errn, "out of memory");
  st_run *r = st__run_new(name, id, classes, created_at, ds->cap, m->series_points);
  if (!r) return load_fail(err, errn, "out of memory");
  r->cls_seq = r->cls_saved = cls_seq;
  /* a query can come while focald loads: what readers see changes under the dataset's write lock */
  pthread_rwlock_wrlock(&ds->lock);
  int rc = st__grow_array((void **)&ds->runs, &ds->capruns, ds->nruns + 1, sizeof *ds->runs);
  if (rc == 0) ds->runs[ds->nruns++] = r;
  pthread_rwlock_unlock(&ds->lock);
  if (rc != 0) {
    st__run_free(r);
    return load_fail(err, errn, "out of memory");
  }
  m->runs[m->nruns++] = (run_ref){id, r, ds};
  return 0;
}

static run_ref *load_run_ref(st_map *m, int64_t id) {
  int lo = 0, hi = m->nruns - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    if (m->runs[mid].id == id) return &m->runs[mid];
    if (m->runs[mid].id < id) lo = mid + 1;
    else hi = mid - 1;
  }
  return NULL;
}

int st_load_sample(st_map *m, int64_t ds_id, uint32_t key, const char *id, const char *meta, int status,
                   const char *corrected, float confirm, int64_t meta_seq, char *err, size_t errn) {
  st_dataset *ds = st_w_find(m, ds_id);
  if (!ds) return load_fail(err, errn, "sample key %u belongs to dataset %lld, which does not exist", key, (long long)ds_id);
  if (key != ds->nsamples)
    return load_fail(err, errn, "dataset \"%s\" has sample key %u where key %u was due: the samples table has a hole",
                     ds->name, key, ds->nsamples);
  if (!id || !*id) return load_fail(err, errn, "sample key %u of dataset \"%s\" has no id", key, ds->name);
  if (st_key(ds, id) >= 0) return load_fail(err, errn, "sample \"%.200s\" of dataset \"%s\" is there twice", id, ds->name);
  if (status < 0 || status >= ST_STATUS_COUNT)
    return load_fail(err, errn, "sample \"%.200s\" of dataset \"%s\" has status %d", id, ds->name, status);
  char *meta_copy = meta ? strdup(meta) : NULL, *corrected_copy = corrected ? strdup(corrected) : NULL;
  pthread_rwlock_wrlock(&ds->lock);
  const int rc = st__reserve_samples(ds, (uint64_t)key + 1) != 0 || st__arena_reserve(ds, strlen(id) + 1) != 0 ||
                 (meta && !meta_copy) || (corrected && !corrected_copy) ? -1 : 0;
  if (rc == 0) {
    st__intern_reserved(ds, id);
    ds->meta[key] = meta_copy;
    ds->status[key] = (uint8_t)status;
    st__set_corrected(ds, key, corrected_copy);
    ds->confirm_score[key] = confirm;
    ds->meta_seq[key] = meta_seq;
    ds->persisted = key + 1;
  }
  pthread_rwlock_unlock(&ds->lock);
  if (rc != 0) {
    free(meta_copy);
    free(corrected_copy);
    return load_fail(err, errn, "out of memory");
  }
  return 0;
}

int st_load_row(st_map *m, int64_t run_id, uint32_t key, const st_row *row, char *err, size_t errn) {
  run_ref *ref = load_run_ref(m, run_id);
  if (!ref) return load_fail(err, errn, "a history row (key %u) belongs to run %lld, which does not exist", key, (long long)run_id);
  st_dataset *ds = ref->ds;
  st_run *r = ref->run;
  if (key >= ds->nsamples)
    return load_fail(err, errn, "run \"%s\" of dataset \"%s\" has a history row for key %u, which is no sample", r->name,
                     ds->name, key);
  const hist_rec *h = &row->h;
  if (r->seq[key] != 0 || r->seen[key] != 0)
    return load_fail(err, errn, "run \"%s\" of dataset \"%s\" has two history rows for key %u", r->name, ds->name, key);
  const float reals[] = {h->last_loss, h->mean_loss, h->max_loss, h->ema_loss, h->conf_mean, h->conf_m2, h->aum, h->el2n, h->grand};
  int finite = 1;
  for (size_t i = 0; i < sizeof reals / sizeof *reals; i++) finite &= isfinite(reals[i]) != 0;
  if (!finite || h->seen == 0 || h->scored_n > h->seen || h->correct_n > h->scored_n || h->other_n > h->scored_n ||
      h->el2n_n > h->scored_n || h->grand_n > h->scored_n || row->seq <= 0 || row->ring[0] >= HIST_RECENT ||
      row->ring[1] > HIST_RECENT || h->label < -1 || h->label >= r->classes || h->other_class < -1 ||
      h->other_class >= r->classes || (h->other_class >= 0 && h->other_n == 0) ||
      (h->early_n == HIST_EARLY_UNKNOWN ? h->early_other_n != 0
                                        : h->early_n > h->scored_n || h->early_other_n > h->early_n || h->early_other_n > h->other_n))
    return load_fail(err, errn, "run \"%s\" of dataset \"%s\" has an inconsistent history row for key %u", r->name, ds->name,
                     key);
  hist_rec before;
  pthread_rwlock_wrlock(&ds->lock);
  st__row_get(r, key, &before);
  st__row_put(r, key, h);
  r->seq[key] = row->seq;
  r->stale_labels[key] = row->stale_labels;
  r->ring_head[key] = row->ring[0];
  r->ring_count[key] = row->ring[1];
  memcpy(r->recent + (size_t)key * HIST_RECENT, row->ring + 2, HIST_RECENT * sizeof(hist_recent));
  if (r->series_points && row->series_count) {
    /* written with a larger cap, it keeps what this one would have */
    uint8_t shift = row->series_shift;
    hist_series_fit(r->series + (size_t)key * (size_t)r->series_points, r->series_points, row->series, row->series_count,
                    &shift);
    r->series_count[key] = row->series_count;
    r->series_shift[key] = shift;
  }
  st__count_row(r, &before, h);
  pthread_rwlock_unlock(&ds->lock);
  return 0;
}

int st_load_classes(st_map *m, int64_t run_id, int32_t cls, double sum, uint64_t count, char *err, size_t errn) {
  run_ref *ref = load_run_ref(m, run_id);
  if (!ref) return load_fail(err, errn, "class means of run %lld, which does not exist", (long long)run_id);
  st_run *r = ref->run;
  if (cls < 0 || cls >= r->cls.c)
    return load_fail(err, errn, "run \"%s\" has class means for class %d of %d", r->name, cls, r->cls.c);
  r->cls.sum[cls] = sum;
  r->cls.count[cls] = count;
  return 0;
}

int st_load_review(st_map *m, int64_t ds_id, st_review *e, char *err, size_t errn) {
  st_dataset *ds = st_w_find(m, ds_id);
  int rc = 0;
  if (!ds) rc = load_fail(err, errn, "audit entry %lld belongs to dataset %lld, which does not exist", (long long)e->seq, (long long)ds_id);
  else if (e->key >= ds->nsamples)
    rc = load_fail(err, errn, "audit entry %lld of dataset \"%s\" is for key %u, which is no sample", (long long)e->seq,
                   ds->name, e->key);
  else if (e->from >= ST_STATUS_COUNT || e->to >= ST_STATUS_COUNT)
    rc = load_fail(err, errn, "audit entry %lld of dataset \"%s\" has an unknown status", (long long)e->seq, ds->name);
  else if (ds->nreviews > 0 && ds->reviews[ds->nreviews - 1].seq >= e->seq)
    rc = load_fail(err, errn, "audit entries of dataset \"%s\" are not in order at %lld", ds->name, (long long)e->seq);
  if (rc == 0) {
    pthread_rwlock_wrlock(&ds->lock);
    if (st__grow_array((void **)&ds->reviews, &ds->capreviews, ds->nreviews + 1, sizeof *ds->reviews) != 0)
      rc = load_fail(err, errn, "out of memory");
    else st__add_review(ds, e);
    pthread_rwlock_unlock(&ds->lock);
  }
  if (rc != 0) st__review_strings_free(e);
  return rc;
}

int st_load_queue(st_map *m, int64_t ds_id, st_queue *q, char *err, size_t errn) {
  st_dataset *ds = st_w_find(m, ds_id);
  int rc = 0;
  if (!ds) rc = load_fail(err, errn, "queue %lld belongs to dataset %lld, which does not exist", (long long)q->id, (long long)ds_id);
  for (uint32_t i = 0; rc == 0 && i < q->n; i++)
    if (q->keys[i] >= ds->nsamples)
      rc = load_fail(err, errn, "queue \"%s\" of dataset \"%s\" lists key %u, which is no sample", q->name, ds->name, q->keys[i]);
  if (rc == 0 && st_find_queue(ds, q->name)) rc = load_fail(err, errn, "queue \"%s\" of dataset \"%s\" is there twice", q->name, ds->name);
  if (rc == 0) {
    pthread_rwlock_wrlock(&ds->lock);
    if (st__grow_array((void **)&ds->queues, &ds->capqueues, ds->nqueues + 1, sizeof *ds->queues) != 0)
      rc = load_fail(err, errn, "out of memory");
    else ds->queues[ds->nqueues++] = q;
    pthread_rwlock_unlock(&ds->lock);
  }
  if (rc != 0) st_queue_free(q);
  return rc;
}

void st_load_done(st_map *m) {
  free(m->runs);
  m->runs = NULL;
  m->nruns = m->capruns = 0;
}
