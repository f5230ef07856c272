/* state_write.c — the writer's changes to the datasets, in two steps, and the
 * snapshot's bookkeeping of what changed.
 *
 * A prepare step runs before the writer's transaction commits and may allocate
 * and fail; an apply step runs after and may not (see state.h). Preparing a
 * batch therefore looks its ids up, counts the new ones and grows every per-key
 * array, the hash and the id arena to hold them; new datasets and runs are built
 * aside ("fresh") and only linked in by the apply. What a group prepared is
 * tallied on the dataset (pend_*), so that several changes to one dataset in one
 * group reserve room for all of them, and st_tx_end forgets the tally and frees
 * what was never linked in.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state_core.h"

/* ------------------------------------------------------------------ the writer: groups */

static void dataset_tx_end(st_dataset *ds) {
  for (int i = 0; i < ds->nfresh_runs; i++) st__run_free(ds->fresh_runs[i]);
  ds->nfresh_runs = 0;
  ds->pend_new = 0;
  ds->pend_bytes = 0;
  ds->pend_reviews = 0;
  ds->pend_queues = 0;
  ds->pend_prefix = 0;
}

void st_tx_end(st_map *m) {
  for (int i = 0; i < m->ntouched; i++) {
    st_dataset *ds = m->touched[i];
    ds->touched = 0;
    if (!ds->fresh) dataset_tx_end(ds); /* a fresh one never applied is freed below */
  }
  m->ntouched = 0;
  for (int i = 0; i < m->nfresh; i++) st__dataset_free(m->fresh[i]);
  m->nfresh = 0;
}

/* Lists ds among the datasets the group prepares changes to. */
static int touch(st_map *m, st_dataset *ds) {
  if (ds->touched) return 0;
  if (st__grow_array((void **)&m->touched, &m->captouched, m->ntouched + 1, sizeof *m->touched) != 0) return -1;
  m->touched[m->ntouched++] = ds;
  ds->touched = 1;
  return 0;
}

/* The dataset with id among the group's fresh ones, or NULL. */
static st_dataset *fresh_find(st_map *m, int64_t id) {
  for (int i = 0; i < m->nfresh; i++)
    if (m->fresh[i]->id == id) return m->fresh[i];
  return NULL;
}

static st_run *run_by_id(st_dataset *ds, int64_t id) {
  for (int i = 0; i < ds->nruns; i++)
    if (ds->runs[i]->id == id) return ds->runs[i];
  for (int i = 0; i < ds->nfresh_runs; i++)
    if (ds->fresh_runs[i]->id == id) return ds->fresh_runs[i];
  return NULL;
}

/* Write-locks ds for a reservation that may move arrays readers use (a fresh dataset has no readers). */
static void reserve_lock(st_dataset *ds) {
  if (!ds->fresh) pthread_rwlock_wrlock(&ds->lock);
}

static void reserve_unlock(st_dataset *ds) {
  if (!ds->fresh) pthread_rwlock_unlock(&ds->lock);
}

int st_prepare_batch(st_map *m, const st_batch_ref *ref, uint32_t n, char *const *ids, st_batch_prep *p) {
  memset(p, 0, sizeof *p);
  st_dataset *ds = st_w_find(m, ref->ds_id);
  if (!ds) ds = fresh_find(m, ref->ds_id);
  if (!ds) {
    if (st__grow_array((void **)&m->fresh, &m->capfresh, m->nfresh + 1, sizeof *m->fresh) != 0) return -1;
    if (!(ds = st__dataset_new(ref->ds_name, ref->ds_id, ref->ds_created))) return -1;
    ds->fresh = 1;
    m->fresh[m->nfresh++] = ds;
    if (st__map_reserve(m, m->nfresh) != 0) return -1;
  }
  if (touch(m, ds) != 0) return -1;
  st_run *run = run_by_id(ds, ref->run_id);
  if (!run) {
    reserve_lock(ds);
    int grown = st__grow_array((void **)&ds->runs, &ds->capruns, ds->nruns + ds->nfresh_runs + 1, sizeof *ds->runs);
    reserve_unlock(ds);
    if (grown != 0 ||
        st__grow_array((void **)&ds->fresh_runs, &ds->capfresh_runs, ds->nfresh_runs + 1, sizeof *ds->fresh_runs) != 0)
      return -1;
    if (!(run = st__run_new(ref->run_name, ref->run_id, ref->classes, ref->run_created, ds->cap, m->series_points))) return -1;
    ds->fresh_runs[ds->nfresh_runs++] = run;
  }
  p->keys = malloc((size_t)(n ? n : 1) * sizeof *p->keys);
  if (!p->keys) return -1;
  uint32_t fresh_ids = 0;
  size_t bytes = 0;
  for (uint32_t i = 0; i < n; i++) {
    int64_t k = st_key(ds, ids[i]);
    p->keys[i] = k >= 0 ? (uint32_t)k : ST_NEW_KEY;
    if (k < 0) {
      fresh_ids++;
      bytes += strlen(ids[i]) + 1;
    }
  }
  p->ds = ds;
  p->run = run;
  p->n = n;
  if (fresh_ids == 0) return 0;
  ds->pend_new += fresh_ids;
  ds->pend_bytes += bytes;
  reserve_lock(ds);
  int rc = st__reserve_samples(ds, (uint64_t)ds->nsamples + ds->pend_new) != 0 || st__arena_reserve(ds, ds->pend_bytes) != 0 ? -1 : 0;
  reserve_unlock(ds);
  if (rc != 0) st_batch_prep_free(p);
  return rc;
}

void st_batch_prep_free(st_batch_prep *p) {
  free(p->keys);
  p->keys = NULL;
}

/* Counts one more observed sample and the run's latest step (applying, and loading rows). */
void st__count_row(st_run *r, const hist_rec *before, const hist_rec *after) {
  if (before->seen == 0 && after->seen > 0) r->samples++;
  r->observations += after->seen - before->seen;
  if (after->has_step && (!r->has_last_step_any || after->last_step > r->last_step_any)) {
    r->last_step_any = after->last_step;
    r->has_last_step_any = 1;
  }
}

static void mark_dirty(st_run *r, uint32_t key) {
  uint64_t bit = 1ull << (key % 64);
  if (!(r->dirty[key / 64] & bit)) {
    r->dirty[key / 64] |= bit;
    r->ndirty++;
  }
}

/* One observation of sample key in batch seq: the class means (if seq is newer
 * than theirs), then the row (if seq is newer than the row's). */
static void observe(st_run *r, uint32_t key, int64_t seq, const hist_obs *o, const hist_params *hp, int32_t corrected) {
  if (seq > r->cls_seq && r->cls.c > 0) hist_classes_observe(&r->cls, o);
  if (seq <= r->seq[key]) return; /* already in the snapshot's row */
  hist_rec before, h;
  st__row_get(r, key, &before);
  h = before;
  hist_update(&h, o, hp, r->cls.c > 0 ? &r->cls : NULL);
  st__row_put(r, key, &h);
  hist_recent_push(r->recent + (size_t)key * HIST_RECENT, &r->ring_head[key], &r->ring_count[key], o);
  if (r->series_points)
    hist_series_push(r->series + (size_t)key * (size_t)r->series_points, r->series_points, &r->series_count[key],
                     &r->series_shift[key], o);
  if (corrected != -1 && o->label >= 0 && o->label != corrected) r->stale_labels[key]++;
  r->seq[key] = seq;
  st__count_row(r, &before, &h);
  mark_dirty(r, key);
}

static void set_meta(st_dataset *ds, uint32_t key, char *meta) {
  free(ds->meta[key]);
  ds->meta[key] = meta;
  uint64_t bit = 1ull << (key % 64);
  if (!(ds->meta_dirty[key / 64] & bit)) {
    ds->meta_dirty[key / 64] |= bit;
    ds->nmeta_dirty++;
  }
}

st_dataset *st_apply_lock(st_map *m, const st_batch_prep *p) {
  st_dataset *ds = p->ds;
  if (ds->fresh) {
    /* the group's first batch of a new dataset links it in; room was reserved */
    for (int i = 0; i < m->nfresh; i++)
      if (m->fresh[i] == ds) {
        m->fresh[i] = m->fresh[--m->nfresh];
        break;
      }
    ds->fresh = 0;
    st__map_insert(m, ds);
  }
  pthread_rwlock_wrlock(&ds->lock);
  return ds;
}

void st_apply_unlock(st_dataset *ds) {
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_segment(st_batch_prep *p, int64_t seq, char *const *ids, const hist_obs *obs, const hist_params *hp, int nmeta,
                      const char *const *meta_ids, char **meta_json) {
  st_dataset *ds = p->ds;
  st_run *run = p->run;
  for (int i = 0; i < ds->nfresh_runs; i++)
    if (ds->fresh_runs[i] == run) {
      ds->fresh_runs[i] = ds->fresh_runs[--ds->nfresh_runs];
      ds->runs[ds->nruns++] = run; /* room reserved with the run */
      break;
    }
  for (uint32_t i = 0; i < p->n; i++) {
    uint32_t key = p->keys[i];
    if (key == ST_NEW_KEY) {
      int64_t k = st_key(ds, ids[i]); /* an earlier batch of the group may have added it */
      key = k >= 0 ? (uint32_t)k : st__intern_reserved(ds, ids[i]);
    }
    /* the correction in force when the batch was logged: a replayed batch can be older than later reviews */
    const int32_t corrected = seq > ds->review_batch_seq ? (ds->status[key] == ST_RELABELLED ? ds->corrected_class[key] : -1)
                                                         : st_corrected_at(ds, key, seq);
    observe(run, key, seq, &obs[i], hp, corrected);
  }
  if (seq > run->cls_seq) run->cls_seq = seq;
  for (int i = 0; i < nmeta; i++) {
    int64_t key = st_key(ds, meta_ids[i]);
    /* a meta set later by PUT wins over an older batch's being replayed */
    if (key < 0 || seq <= ds->meta_seq[key]) {
      free(meta_json[i]);
    } else {
      set_meta(ds, (uint32_t)key, meta_json[i]);
      ds->meta_seq[key] = seq;
    }
    meta_json[i] = NULL;
  }
  st_batch_prep_free(p);
}

void st_apply_batch(st_map *m, st_batch_prep *p, int64_t seq, char *const *ids, const hist_obs *obs, const hist_params *hp,
                    int nmeta, const char *const *meta_ids, char **meta_json) {
  st_dataset *ds = st_apply_lock(m, p);
  st_apply_segment(p, seq, ids, obs, hp, nmeta, meta_ids, meta_json);
  st_apply_unlock(ds);
}

void st_apply_delete(st_map *m, int64_t id, int64_t *samples, int64_t *observations) {
  *samples = 0;
  *observations = 0;
  pthread_rwlock_wrlock(&m->lock);
  int ai = st__map_search_id(m, id);
  st_dataset *ds = ai < m->n && m->by_id[ai]->id == id ? m->by_id[ai] : NULL;
  if (ds) {
    memmove(m->by_id + ai, m->by_id + ai + 1, (size_t)(m->n - ai - 1) * sizeof *m->by_id);
    int at = st__map_search(m, ds->name);
    memmove(m->ds + at, m->ds + at + 1, (size_t)(m->n - at - 1) * sizeof *m->ds);
    m->n--;
  }
  pthread_rwlock_unlock(&m->lock);
  if (!ds) return;
  /* the group may have prepared changes to it before deleting it: st_tx_end must not see it again */
  for (int i = 0; i < m->ntouched; i++)
    if (m->touched[i] == ds) m->touched[i] = m->touched[--m->ntouched];
  *samples = ds->nsamples;
  *observations = (int64_t)st_observations(ds);
  /* readers that found it before it left the map still hold its read lock */
  pthread_rwlock_wrlock(&ds->lock);
  pthread_rwlock_unlock(&ds->lock);
  st__dataset_free(ds);
}

int st_prepare_reviews(st_map *m, st_dataset *ds, int n) {
  if (touch(m, ds) != 0) return -1;
  reserve_lock(ds);
  int rc = st__grow_array((void **)&ds->reviews, &ds->capreviews, ds->nreviews + ds->pend_reviews + n, sizeof *ds->reviews);
  reserve_unlock(ds);
  if (rc != 0) return -1;
  ds->pend_reviews += n;
  return 0;
}

int st_prepare_queue(st_map *m, st_dataset *ds) {
  if (touch(m, ds) != 0) return -1;
  reserve_lock(ds);
  int rc = st__grow_array((void **)&ds->queues, &ds->capqueues, ds->nqueues + ds->pend_queues + 1, sizeof *ds->queues);
  reserve_unlock(ds);
  if (rc != 0) return -1;
  ds->pend_queues++;
  return 0;
}

/* Appends an audit entry (room reserved). */
void st__add_review(st_dataset *ds, st_review *e) {
  e->prev = ds->last_review[e->key];
  ds->last_review[e->key] = ds->nreviews;
  if (e->batch_seq > ds->review_batch_seq) ds->review_batch_seq = e->batch_seq;
  ds->reviews[ds->nreviews++] = *e;
}

void st__set_corrected(st_dataset *ds, uint32_t key, char *label) {
  free(ds->corrected[key]);
  ds->corrected[key] = label;
  /* a class index is what batches' labels can be compared with */
  ds->corrected_class[key] = st__class_of(label);
}

/* Under ds's write lock. */
static void set_status(st_dataset *ds, uint32_t key, int to, char *corrected, float confirm, st_review *e) {
  ds->status[key] = (uint8_t)to;
  st__set_corrected(ds, key, corrected);
  ds->confirm_score[key] = confirm;
  e->key = key;
  st__add_review(ds, e);
}

void st_apply_status(st_dataset *ds, uint32_t key, int to, char *corrected, float confirm, st_review *e) {
  pthread_rwlock_wrlock(&ds->lock);
  set_status(ds, key, to, corrected, confirm, e);
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_meta(st_dataset *ds, uint32_t key, char *meta, int64_t meta_seq) {
  pthread_rwlock_wrlock(&ds->lock);
  set_meta(ds, key, meta);
  ds->meta_seq[key] = meta_seq;
  pthread_rwlock_unlock(&ds->lock);
}

/* The status changes of a queue's building or removal: each sample's new status and its audit entry (whose
 * strings the dataset takes), under ds's write lock. */
static void set_statuses(st_dataset *ds, uint32_t n, const uint32_t *keys, st_review *changes) {
  for (uint32_t i = 0; i < n; i++) {
    set_status(ds, keys[i], changes[i].to, NULL, NAN, &changes[i]);
    memset(&changes[i], 0, sizeof changes[i]);
  }
}

void st_apply_queue(st_dataset *ds, st_queue *q, uint32_t n, const uint32_t *keys, st_review *changes) {
  pthread_rwlock_wrlock(&ds->lock);
  set_statuses(ds, n, keys, changes);
  ds->queues[ds->nqueues++] = q;
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_queue_delete(st_dataset *ds, const char *name, uint32_t n, const uint32_t *keys, st_review *changes) {
  pthread_rwlock_wrlock(&ds->lock);
  set_statuses(ds, n, keys, changes);
  for (int i = 0; i < ds->nqueues; i++) {
    if (strcmp(ds->queues[i]->name, name) != 0) continue;
    st_queue_free(ds->queues[i]);
    memmove(ds->queues + i, ds->queues + i + 1, (size_t)(ds->nqueues - i - 1) * sizeof *ds->queues);
    ds->nqueues--;
    break;
  }
  pthread_rwlock_unlock(&ds->lock);
}

/* ------------------------------------------------------------------ the snapshot's bookkeeping */

uint32_t st_persisted(const st_dataset *ds) {
  return ds->persisted;
}

void st_set_persisted(st_dataset *ds, uint32_t persisted) {
  if (persisted > ds->persisted) ds->persisted = persisted;
}

uint32_t st_prefix(const st_dataset *ds) {
  return ds->pend_prefix > ds->persisted ? ds->pend_prefix : ds->persisted;
}

int st_prefix_written(st_map *m, st_dataset *ds, uint32_t upto) {
  if (touch(m, ds) != 0) return -1;
  if (upto > ds->pend_prefix) ds->pend_prefix = upto;
  return 0;
}

/* The first set bit at or after from in a bitmap of n bits, or -1. */
static int64_t next_bit(const uint64_t *bits, uint32_t n, uint32_t from) {
  if (from >= n) return -1;
  uint32_t w = from / 64;
  uint64_t word = bits[w] & (~0ull << (from % 64));
  const uint32_t words = (n + 63) / 64;
  for (;;) {
    if (word) {
      uint64_t k = (uint64_t)w * 64 + (uint64_t)__builtin_ctzll(word);
      return k < n ? (int64_t)k : -1;
    }
    if (++w >= words) return -1;
    word = bits[w];
  }
}

int64_t st_next_meta_dirty(const st_dataset *ds, uint32_t from) {
  return ds->nmeta_dirty ? next_bit(ds->meta_dirty, ds->nsamples, from) : -1;
}

void st_meta_clean(st_dataset *ds, uint32_t key) {
  uint64_t bit = 1ull << (key % 64);
  if (ds->meta_dirty[key / 64] & bit) {
    ds->meta_dirty[key / 64] &= ~bit;
    ds->nmeta_dirty--;
  }
}

int64_t st_next_dirty(const st_dataset *ds, int run, uint32_t from) {
  const st_run *r = ds->runs[run];
  return r->ndirty ? next_bit(r->dirty, r->cap, from) : -1;
}

void st_row_clean(st_dataset *ds, int run, uint32_t key) {
  st_run *r = ds->runs[run];
  uint64_t bit = 1ull << (key % 64);
  if (r->dirty[key / 64] & bit) {
    r->dirty[key / 64] &= ~bit;
    r->ndirty--;
  }
}

int st_any_dirty(const st_dataset *ds) {
  if (ds->persisted < ds->nsamples || ds->nmeta_dirty) return 1;
  for (int i = 0; i < ds->nruns; i++)
    if (ds->runs[i]->ndirty || ds->runs[i]->cls_seq > ds->runs[i]->cls_saved) return 1;
  return 0;
}

void st_row_save(const st_run *r, uint32_t key, st_row *out) {
  st__row_get(r, key, &out->h);
  out->seq = r->seq[key];
  out->stale_labels = r->stale_labels[key];
  out->ring[0] = r->ring_head[key];
  out->ring[1] = r->ring_count[key];
  memcpy(out->ring + 2, r->recent + (size_t)key * HIST_RECENT, HIST_RECENT * sizeof(hist_recent));
  out->series_count = r->series_points ? r->series_count[key] : 0;
  out->series_shift = r->series_points ? r->series_shift[key] : 0;
  out->series = r->series_points ? r->series + (size_t)key * (size_t)r->series_points : NULL;
}

int st_classes_copy(const st_dataset *ds, const st_run *r, st_classes *out) {
  memset(out, 0, sizeof *out);
  if (r->cls.c == 0 || r->cls_seq <= r->cls_saved) return 0;
  out->sum = malloc((size_t)r->cls.c * sizeof *out->sum);
  out->count = malloc((size_t)r->cls.c * sizeof *out->count);
  if (!out->sum || !out->count) {
    st_classes_free(out);
    return -1;
  }
  memcpy(out->sum, r->cls.sum, (size_t)r->cls.c * sizeof *out->sum);
  memcpy(out->count, r->cls.count, (size_t)r->cls.c * sizeof *out->count);
  out->ds_id = ds->id;
  out->run_id = r->id;
  out->seq = r->cls_seq;
  out->c = r->cls.c;
  return 0;
}

void st_classes_free(st_classes *c) {
  free(c->sum);
  free(c->count);
  memset(c, 0, sizeof *c);
}

void st_classes_saved(st_map *m, int64_t ds_id, int64_t run_id, int64_t seq) {
  st_dataset *ds = st_w_find(m, ds_id);
  st_run *r = ds ? run_by_id(ds, run_id) : NULL;
  if (r && seq > r->cls_saved) r->cls_saved = seq;
}
