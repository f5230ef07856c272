/* state.c — datasets, sample ids and per-run history columns in memory.
 *
 * Sample ids live in an arena per dataset and are found through an open-
 * addressing hash of dense keys (key + 1; 0 is empty). Every per-run field is
 * its own array indexed by key; the column table below lets one function grow
 * them all and copy one row in and out of a hist_rec for updating.
 */
#include "state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ------------------------------------------------------------------ statuses */

static const char *const status_names[ST_STATUS_COUNT] = {"open",       "queued",    "in_review",
                                                         "relabelled", "confirmed", "dismissed"};

const char *st_status_name(int status) {
  return status >= 0 && status < ST_STATUS_COUNT ? status_names[status] : "open";
}

int st_status_parse(const char *name) {
  for (int i = 0; i < ST_STATUS_COUNT; i++)
    if (strcmp(status_names[i], name) == 0) return i;
  return -1;
}

/* ------------------------------------------------------------------ large arrays */

/* Arrays indexed by sample key (the run columns and the id hash) get their own
 * mappings once they reach LARGE_BYTES. Growing one is then an mremap instead
 * of a copy that leaves the old block behind as a hole in the heap (about 30 MB
 * of a million-sample dataset's RSS), and its pages take memory only once
 * written. Smaller arrays stay on the heap, so that datasets of a few samples
 * do not spend the process's mappings. Under the sanitizers every array stays
 * on the heap, where they check its bounds. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define LARGE_BYTES SIZE_MAX
#else
#define LARGE_BYTES ((size_t)1 << 20)
#endif

static size_t page_round(size_t n) {
  return (n + 4095) & ~(size_t)4095;
}

/* An array of old bytes (p NULL when old is 0) resized to want >= old bytes,
 * the bytes past old zero; NULL (p unchanged) when memory runs out. */
static void *large_resize(void *p, size_t old, size_t want) {
  if (want < LARGE_BYTES) {
    void *n = realloc(p, want ? want : 1);
    if (n) memset((char *)n + old, 0, want - old);
    return n;
  }
  if (old >= LARGE_BYTES) {
    void *n = mremap(p, page_round(old), page_round(want), MREMAP_MAYMOVE);
    return n == MAP_FAILED ? NULL : n;
  }
  void *n = mmap(NULL, page_round(want), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (n == MAP_FAILED) return NULL;
  if (old) memcpy(n, p, old);
  free(p);
  return n;
}

static void large_free(void *p, size_t bytes) {
  if (!p) return;
  if (bytes >= LARGE_BYTES) munmap(p, page_round(bytes));
  else free(p);
}

/* ------------------------------------------------------------------ arena */

struct st_arena_block {
  st_arena_block *next;
  size_t used, cap;
  char data[];
};

/* Copies s into the dataset's arena; the copy lives as long as the dataset. */
static const char *arena_strdup(st_dataset *ds, const char *s) {
  size_t n = strlen(s) + 1;
  st_arena_block *b = ds->arena;
  if (!b || b->used + n > b->cap) {
    size_t cap = n > 60000 ? n : 60000;
    st_arena_block *nb = malloc(sizeof *nb + cap);
    if (!nb) return NULL;
    nb->next = b;
    nb->used = 0;
    nb->cap = cap;
    ds->arena = b = nb;
  }
  char *p = b->data + b->used;
  memcpy(p, s, n);
  b->used += n;
  return p;
}

/* ------------------------------------------------------------------ hashing */

static uint64_t hash_id(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) {
    h ^= (unsigned char)*s;
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

int64_t st_sample_key(const st_dataset *ds, const char *id) {
  if (!ds->hcap) return -1;
  uint32_t mask = ds->hcap - 1;
  for (uint32_t i = (uint32_t)hash_id(id) & mask;; i = (i + 1) & mask) {
    uint32_t slot = ds->hash[i];
    if (slot == 0) return -1;
    if (strcmp(ds->ids[slot - 1], id) == 0) return slot - 1;
  }
}

/* Inserts key into the hash (the id is already in ds->ids[key]). */
static void hash_put(st_dataset *ds, uint32_t key) {
  uint32_t mask = ds->hcap - 1;
  uint32_t i = (uint32_t)hash_id(ds->ids[key]) & mask;
  while (ds->hash[i] != 0) i = (i + 1) & mask;
  ds->hash[i] = key + 1;
}

/* Keeps the hash at most half full. */
static int hash_grow(st_dataset *ds, uint32_t want) {
  if ((uint64_t)want * 2 <= ds->hcap) return 0;
  uint32_t cap = ds->hcap ? ds->hcap : 1024;
  while ((uint64_t)want * 2 > cap) cap *= 2;
  uint32_t *h = large_resize(NULL, 0, (size_t)cap * sizeof *h);
  if (!h) return -1;
  large_free(ds->hash, (size_t)ds->hcap * sizeof *h);
  ds->hash = h;
  ds->hcap = cap;
  for (uint32_t k = 0; k < ds->nsamples; k++)
    if (ds->ids[k]) hash_put(ds, k);
  return 0;
}

/* ------------------------------------------------------------------ columns */

typedef struct column {
  size_t offset; /* of the pointer in st_run */
  size_t size;   /* of one element */
  size_t per;    /* elements per key */
} column;

#define COL(f, per) {offsetof(st_run, f), sizeof(*((st_run *)0)->f), per}
static const column columns[] = {
    COL(seen, 1),        COL(scored_n, 1),   COL(correct_n, 1),  COL(forgetting, 1),   COL(last_loss, 1),
    COL(mean_loss, 1),   COL(max_loss, 1),   COL(ema_loss, 1),   COL(conf_mean, 1),    COL(conf_m2, 1),
    COL(aum, 1),         COL(label, 1),      COL(last_correct, 1), COL(label_issue, 1), COL(has_step, 1),
    COL(ring_head, 1),   COL(ring_count, 1), COL(first_step, 1), COL(last_step, 1),    COL(seq, 1),
    COL(recent, HIST_RECENT), COL(stale_labels, 1),
};
#define NCOLUMNS (sizeof columns / sizeof columns[0])
_Static_assert(NCOLUMNS <= ST_RUN_COLUMNS, "st_run.col_cap must have an entry per column");

static void **column_ptr(st_run *r, const column *c) {
  return (void **)((char *)r + c->offset);
}

int st_run_reserve(st_dataset *ds, st_run *r) {
  uint32_t want = ds->cap;
  if (r->cap >= want) return 0;
  for (size_t i = 0; i < NCOLUMNS; i++) {
    if (r->col_cap[i] >= want) continue; /* grown before a later column failed */
    void **p = column_ptr(r, &columns[i]);
    size_t row = columns[i].size * columns[i].per;
    void *n = large_resize(*p, (size_t)r->col_cap[i] * row, (size_t)want * row);
    if (!n) return -1;
    *p = n;
    r->col_cap[i] = want;
  }
  size_t words_old = (r->cap + 63) / 64, words = (want + 63) / 64;
  uint64_t *d = realloc(r->dirty, words * sizeof *d);
  if (!d) return -1;
  memset(d + words_old, 0, (words - words_old) * sizeof *d);
  r->dirty = d;
  for (uint32_t k = r->cap; k < want; k++) {
    r->label[k] = -1;
    r->last_correct[k] = 2;
  }
  r->cap = want;
  return 0;
}

/* The per-key arrays of a dataset, grown together by reserve_samples. */
typedef struct sample_array {
  size_t offset; /* of the pointer in st_dataset */
  size_t size;   /* of one element */
} sample_array;

#define SARR(f) {offsetof(st_dataset, f), sizeof(*((st_dataset *)0)->f)}
static const sample_array sample_arrays[] = {
    SARR(ids),           SARR(meta),          SARR(status),   SARR(meta_dirty),  SARR(corrected),
    SARR(corrected_class), SARR(confirm_score), SARR(meta_seq), SARR(last_review),
};
#define NSAMPLE_ARRAYS (sizeof sample_arrays / sizeof sample_arrays[0])
_Static_assert(NSAMPLE_ARRAYS <= ST_SAMPLE_ARRAYS, "st_dataset.arr_cap must have an entry per array");

static void **sample_array_ptr(st_dataset *ds, const sample_array *a) {
  return (void **)((char *)ds + a->offset);
}

/* Grows the sample arrays (and every run's columns) to hold key. */
static int reserve_samples(st_dataset *ds, uint32_t key) {
  if (key < ds->cap) return 0;
  uint32_t cap = ds->cap ? ds->cap : 1024;
  while (cap <= key) cap *= 2;
  for (size_t i = 0; i < NSAMPLE_ARRAYS; i++) {
    if (ds->arr_cap[i] >= cap) continue; /* grown before a later array failed */
    void **p = sample_array_ptr(ds, &sample_arrays[i]);
    void *n = large_resize(*p, (size_t)ds->arr_cap[i] * sample_arrays[i].size, (size_t)cap * sample_arrays[i].size);
    if (!n) return -1;
    *p = n;
    ds->arr_cap[i] = cap;
  }
  /* new entries are zero (NULL, ST_OPEN, no meta change); these are not */
  for (uint32_t k = ds->cap; k < cap; k++) {
    ds->corrected_class[k] = -1;
    ds->confirm_score[k] = NAN;
    ds->last_review[k] = -1;
  }
  ds->cap = cap;
  for (int i = 0; i < ds->nruns; i++)
    if (st_run_reserve(ds, ds->runs[i]) != 0) return -1;
  return 0;
}

int64_t st_sample_intern(st_dataset *ds, const char *id) {
  int64_t key = st_sample_key(ds, id);
  if (key >= 0) return key;
  uint32_t k = ds->nsamples;
  if (reserve_samples(ds, k) != 0 || hash_grow(ds, k + 1) != 0) return -1;
  const char *copy = arena_strdup(ds, id);
  if (!copy) return -1;
  ds->ids[k] = copy;
  ds->nsamples = k + 1;
  hash_put(ds, k);
  return k;
}

int st_sample_load(st_dataset *ds, uint32_t key, const char *id, const char *meta, int status) {
  if (reserve_samples(ds, key) != 0 || hash_grow(ds, key + 1) != 0) return -1;
  const char *copy = arena_strdup(ds, id);
  if (!copy) return -1;
  ds->ids[key] = copy;
  if (key >= ds->nsamples) ds->nsamples = key + 1;
  hash_put(ds, key);
  free(ds->meta[key]);
  ds->meta[key] = meta ? strdup(meta) : NULL;
  ds->status[key] = (uint8_t)(status >= 0 && status < ST_STATUS_COUNT ? status : ST_OPEN);
  if (ds->persisted < key + 1) ds->persisted = key + 1;
  return 0;
}

/* The class index a JSON label names, or -1. */
static int32_t class_of(const char *label_json) {
  if (!label_json) return -1;
  char *end;
  long v = strtol(label_json, &end, 10);
  return *end == '\0' && end != label_json && v >= 0 && v <= INT32_MAX ? (int32_t)v : -1;
}

int st_sample_set_corrected(st_dataset *ds, uint32_t key, const char *label_json) {
  char *copy = NULL;
  if (label_json && !(copy = strdup(label_json))) return -1;
  free(ds->corrected[key]);
  ds->corrected[key] = copy;
  /* a class index is what batches' labels can be compared with */
  ds->corrected_class[key] = class_of(copy);
  return 0;
}

int st_add_review(st_dataset *ds, const st_review *r) {
  if (ds->nreviews == ds->capreviews) {
    int cap = ds->capreviews ? ds->capreviews * 2 : 64;
    st_review *n = realloc(ds->reviews, (size_t)cap * sizeof *n);
    if (!n) return -1;
    ds->reviews = n;
    ds->capreviews = cap;
  }
  st_review *e = &ds->reviews[ds->nreviews];
  *e = *r;
  e->prev = r->key < ds->cap ? ds->last_review[r->key] : -1;
  if (r->key < ds->cap) ds->last_review[r->key] = ds->nreviews;
  if (r->batch_seq > ds->review_batch_seq) ds->review_batch_seq = r->batch_seq;
  ds->nreviews++;
  return 0;
}

int32_t st_corrected_at(const st_dataset *ds, uint32_t key, int64_t seq) {
  if (key >= ds->cap) return -1;
  for (int32_t i = ds->last_review[key]; i >= 0; i = ds->reviews[i].prev) {
    const st_review *e = &ds->reviews[i];
    if (e->batch_seq < seq) return e->to == ST_RELABELLED ? class_of(e->label_after) : -1;
  }
  return -1;
}

static void queue_free(st_queue *q) {
  if (!q) return;
  free(q->params);
  free(q->keys);
  free(q->scores);
  free(q);
}

int st_add_queue(st_dataset *ds, st_queue *q) {
  st_queue **n = realloc(ds->queues, (size_t)(ds->nqueues + 1) * sizeof *n);
  if (!n) return -1;
  ds->queues = n;
  ds->queues[ds->nqueues++] = q;
  return 0;
}

st_queue *st_find_queue(const st_dataset *ds, const char *name) {
  for (int i = 0; i < ds->nqueues; i++)
    if (strcmp(ds->queues[i]->name, name) == 0) return ds->queues[i];
  return NULL;
}

void st_remove_queue(st_dataset *ds, const char *name) {
  for (int i = 0; i < ds->nqueues; i++) {
    if (strcmp(ds->queues[i]->name, name) != 0) continue;
    queue_free(ds->queues[i]);
    memmove(ds->queues + i, ds->queues + i + 1, (size_t)(ds->nqueues - i - 1) * sizeof *ds->queues);
    ds->nqueues--;
    return;
  }
}

float st_max_ema(const st_dataset *ds, uint32_t key) {
  float m = 0.0f;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    if (key < r->cap && r->seen[key] && r->ema_loss[key] > m) m = r->ema_loss[key];
  }
  return m;
}

int st_reconsider(const st_dataset *ds, uint32_t key, double factor) {
  if (factor <= 0 || ds->status[key] != ST_CONFIRMED || !(ds->confirm_score[key] >= 0.0f)) return 0;
  return st_max_ema(ds, key) > factor * ds->confirm_score[key];
}

int st_sample_set_meta(st_dataset *ds, uint32_t key, const char *meta_json) {
  char *copy = NULL;
  if (meta_json && !(copy = strdup(meta_json))) return -1;
  free(ds->meta[key]);
  ds->meta[key] = copy;
  ds->meta_dirty[key] = 1;
  return 0;
}

/* ------------------------------------------------------------------ rows */

void st_row_get(const st_run *r, uint32_t key, hist_rec *h) {
  h->seen = r->seen[key];
  h->scored_n = r->scored_n[key];
  h->correct_n = r->correct_n[key];
  h->forgetting = r->forgetting[key];
  h->last_loss = r->last_loss[key];
  h->mean_loss = r->mean_loss[key];
  h->max_loss = r->max_loss[key];
  h->ema_loss = r->ema_loss[key];
  h->conf_mean = r->conf_mean[key];
  h->conf_m2 = r->conf_m2[key];
  h->aum = r->aum[key];
  h->label = r->label[key];
  h->last_correct = r->last_correct[key];
  h->label_issue = r->label_issue[key];
  h->has_step = r->has_step[key];
  h->first_step = r->first_step[key];
  h->last_step = r->last_step[key];
}

void st_row_put(st_run *r, uint32_t key, const hist_rec *h) {
  r->seen[key] = h->seen;
  r->scored_n[key] = h->scored_n;
  r->correct_n[key] = h->correct_n;
  r->forgetting[key] = h->forgetting;
  r->last_loss[key] = h->last_loss;
  r->mean_loss[key] = h->mean_loss;
  r->max_loss[key] = h->max_loss;
  r->ema_loss[key] = h->ema_loss;
  r->conf_mean[key] = h->conf_mean;
  r->conf_m2[key] = h->conf_m2;
  r->aum[key] = h->aum;
  r->label[key] = h->label;
  r->last_correct[key] = h->last_correct;
  r->label_issue[key] = h->label_issue;
  r->has_step[key] = h->has_step;
  r->first_step[key] = h->first_step;
  r->last_step[key] = h->last_step;
}

void st_observe(st_run *r, uint32_t key, int64_t seq, const hist_obs *o, double ema_alpha, int32_t corrected) {
  if (seq > r->cls_seq && r->cls.c > 0) {
    hist_classes_observe(&r->cls, o);
    r->cls_dirty = 1;
  }
  if (seq <= r->seq[key]) return; /* already in the snapshot's row */
  hist_rec h;
  st_row_get(r, key, &h);
  if (h.seen == 0) r->samples++;
  hist_update(&h, o, ema_alpha, r->cls.c > 0 ? &r->cls : NULL);
  st_row_put(r, key, &h);
  hist_recent_push(r->recent + (size_t)key * HIST_RECENT, &r->ring_head[key], &r->ring_count[key], o);
  if (corrected >= 0 && o->label >= 0 && o->label != corrected) r->stale_labels[key]++;
  r->seq[key] = seq;
  r->observations++;
  if (o->has_step && (!r->has_last_step_any || o->step > r->last_step_any)) {
    r->last_step_any = o->step;
    r->has_last_step_any = 1;
  }
  uint64_t bit = 1ull << (key % 64);
  if (!(r->dirty[key / 64] & bit)) {
    r->dirty[key / 64] |= bit;
    r->ndirty++;
  }
}

void st_history(const st_run *r, uint32_t key, hist_rec *h) {
  if (key >= r->cap) {
    hist_init(h);
    return;
  }
  st_row_get(r, key, h);
}

void st_history_all(const st_dataset *ds, uint32_t key, hist_view *v) {
  memset(v, 0, sizeof *v);
  v->label = -1;
  int runs = 0;
  int64_t label_step = INT64_MIN;
  hist_rec one;
  hist_view w;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    if (key >= r->cap || r->seen[key] == 0) continue;
    st_row_get(r, key, &one);
    hist_view_of(&one, &w);
    runs++;
    v->seen += w.seen;
    v->last_loss += w.last_loss;
    v->mean_loss += w.mean_loss;
    v->max_loss += w.max_loss;
    v->ema_loss += w.ema_loss;
    v->confidence += w.confidence;
    v->variability += w.variability;
    v->correctness += w.correctness;
    v->forgetting += w.forgetting;
    v->aum += w.aum;
    v->label_issue |= w.label_issue;
    int64_t at = w.has_step ? w.last_step : INT64_MIN + 1;
    if (w.label >= 0 && at >= label_step) {
      v->label = w.label;
      label_step = at;
    }
    if (w.has_step) {
      if (!v->has_step || w.first_step < v->first_step) v->first_step = w.first_step;
      if (!v->has_step || w.last_step > v->last_step) v->last_step = w.last_step;
      v->has_step = 1;
    }
  }
  if (!runs) return;
  v->last_loss /= runs;
  v->mean_loss /= runs;
  v->max_loss /= runs;
  v->ema_loss /= runs;
  v->confidence /= runs;
  v->variability /= runs;
  v->correctness /= runs;
  v->forgetting /= runs;
  v->aum /= runs;
}

/* ------------------------------------------------------------------ datasets */

struct st_map {
  pthread_rwlock_t lock;
  st_dataset **ds; /* sorted by name */
  int n, cap;
};

st_map *st_map_new(void) {
  st_map *m = calloc(1, sizeof *m);
  if (m && pthread_rwlock_init(&m->lock, NULL) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

static void run_free(st_run *r) {
  if (!r) return;
  for (size_t i = 0; i < NCOLUMNS; i++)
    large_free(*column_ptr(r, &columns[i]), (size_t)r->col_cap[i] * columns[i].size * columns[i].per);
  free(r->dirty);
  free(r->cls.sum);
  free(r->cls.count);
  free(r);
}

static void dataset_free(st_dataset *ds) {
  if (!ds) return;
  for (int i = 0; i < ds->nruns; i++) run_free(ds->runs[i]);
  free(ds->runs);
  for (uint32_t k = 0; k < ds->nsamples; k++) {
    free(ds->meta[k]);
    free(ds->corrected[k]);
  }
  for (size_t i = 0; i < NSAMPLE_ARRAYS; i++)
    large_free(*sample_array_ptr(ds, &sample_arrays[i]), (size_t)ds->arr_cap[i] * sample_arrays[i].size);
  for (int i = 0; i < ds->nreviews; i++) {
    free(ds->reviews[i].reviewer);
    free(ds->reviews[i].label_before);
    free(ds->reviews[i].label_after);
    free(ds->reviews[i].note);
  }
  free(ds->reviews);
  for (int i = 0; i < ds->nqueues; i++) queue_free(ds->queues[i]);
  free(ds->queues);
  large_free(ds->hash, (size_t)ds->hcap * sizeof *ds->hash);
  while (ds->arena) {
    st_arena_block *next = ds->arena->next;
    free(ds->arena);
    ds->arena = next;
  }
  pthread_rwlock_destroy(&ds->lock);
  free(ds);
}

void st_map_free(st_map *m) {
  if (!m) return;
  for (int i = 0; i < m->n; i++) dataset_free(m->ds[i]);
  free(m->ds);
  pthread_rwlock_destroy(&m->lock);
  free(m);
}

/* Index of name in the sorted array, or where it would go (negative - 1). */
static int map_search(const st_map *m, const char *name) {
  int lo = 0, hi = m->n - 1;
  while (lo <= hi) {
    int mid = (lo + hi) / 2;
    int c = strcmp(m->ds[mid]->name, name);
    if (c == 0) return mid;
    if (c < 0) lo = mid + 1;
    else hi = mid - 1;
  }
  return -lo - 1;
}

st_dataset *st_find(st_map *m, const char *name) {
  int i = map_search(m, name);
  return i >= 0 ? m->ds[i] : NULL;
}

st_dataset *st_dataset_acquire(st_map *m, const char *name) {
  pthread_rwlock_rdlock(&m->lock);
  int i = map_search(m, name);
  st_dataset *ds = i >= 0 ? m->ds[i] : NULL;
  if (ds) pthread_rwlock_rdlock(&ds->lock);
  pthread_rwlock_unlock(&m->lock);
  return ds;
}

void st_dataset_release(st_dataset *ds) {
  if (ds) pthread_rwlock_unlock(&ds->lock);
}

void st_map_each(st_map *m, void (*fn)(st_dataset *ds, void *arg), void *arg) {
  pthread_rwlock_rdlock(&m->lock);
  for (int i = 0; i < m->n; i++) {
    pthread_rwlock_rdlock(&m->ds[i]->lock);
    fn(m->ds[i], arg);
    pthread_rwlock_unlock(&m->ds[i]->lock);
  }
  pthread_rwlock_unlock(&m->lock);
}

int st_add_dataset(st_map *m, const char *name, int64_t id, int64_t created_at, st_dataset **out) {
  st_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return -1;
  snprintf(ds->name, sizeof ds->name, "%s", name);
  ds->id = id;
  ds->created_at = created_at;
  if (pthread_rwlock_init(&ds->lock, NULL) != 0) {
    free(ds);
    return -1;
  }
  pthread_rwlock_wrlock(&m->lock);
  int rc = 0;
  int at = map_search(m, name);
  if (at >= 0) {
    rc = -1; /* the writer checks first; a second add is a bug */
  } else {
    at = -at - 1;
    if (m->n == m->cap) {
      int cap = m->cap ? m->cap * 2 : 8;
      st_dataset **n = realloc(m->ds, (size_t)cap * sizeof *n);
      if (!n) rc = -1;
      else {
        m->ds = n;
        m->cap = cap;
      }
    }
    if (rc == 0) {
      memmove(m->ds + at + 1, m->ds + at, (size_t)(m->n - at) * sizeof *m->ds);
      m->ds[at] = ds;
      m->n++;
    }
  }
  pthread_rwlock_unlock(&m->lock);
  if (rc != 0) {
    dataset_free(ds);
    return -1;
  }
  *out = ds;
  return 0;
}

void st_remove_dataset(st_map *m, const char *name) {
  pthread_rwlock_wrlock(&m->lock);
  int at = map_search(m, name);
  st_dataset *ds = NULL;
  if (at >= 0) {
    ds = m->ds[at];
    memmove(m->ds + at, m->ds + at + 1, (size_t)(m->n - at - 1) * sizeof *m->ds);
    m->n--;
  }
  pthread_rwlock_unlock(&m->lock);
  if (!ds) return;
  /* readers that found it before it left the map still hold its read lock */
  pthread_rwlock_wrlock(&ds->lock);
  pthread_rwlock_unlock(&ds->lock);
  dataset_free(ds);
}

void st_write_lock(st_dataset *ds) {
  pthread_rwlock_wrlock(&ds->lock);
}

void st_write_unlock(st_dataset *ds) {
  pthread_rwlock_unlock(&ds->lock);
}

st_run *st_find_run(const st_dataset *ds, const char *name) {
  for (int i = 0; i < ds->nruns; i++)
    if (strcmp(ds->runs[i]->name, name) == 0) return ds->runs[i];
  return NULL;
}

int st_add_run(st_dataset *ds, const char *name, int64_t id, int32_t classes, int64_t created_at, st_run **out) {
  st_run *r = calloc(1, sizeof *r);
  if (!r) return -1;
  snprintf(r->name, sizeof r->name, "%s", name);
  r->id = id;
  r->created_at = created_at;
  st_run **runs = realloc(ds->runs, (size_t)(ds->nruns + 1) * sizeof *runs);
  if (!runs || st_run_reserve(ds, r) != 0 || (classes > 0 && st_run_set_classes(r, classes) != 0)) {
    if (runs) ds->runs = runs;
    run_free(r);
    return -1;
  }
  ds->runs = runs;
  ds->runs[ds->nruns++] = r;
  *out = r;
  return 0;
}

int st_run_set_classes(st_run *r, int32_t classes) {
  double *sum = calloc((size_t)classes, sizeof *sum);
  uint64_t *count = calloc((size_t)classes, sizeof *count);
  if (!sum || !count) {
    free(sum);
    free(count);
    return -1;
  }
  free(r->cls.sum);
  free(r->cls.count);
  r->cls.sum = sum;
  r->cls.count = count;
  r->cls.c = classes;
  r->classes = classes;
  return 0;
}

/* ------------------------------------------------------------------ top-k */

typedef struct ranker {
  const st_dataset *ds;
  int desc;
  st_hit *heap; /* worst of the kept hits at the root */
  int n, k;
} ranker;

/* strcmp(a, b) < 0, inlined: a ranking with many tied scores (correctness,
 * seen, forgetting) compares hundreds of thousands of short ids that differ
 * within a few bytes, where a call to strcmp costs more than the comparison. */
static inline int id_less(const char *a, const char *b) {
  const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
  while (*x && *x == *y) x++, y++;
  return *x < *y;
}

/* Whether a comes before b in the answer: harder first, then ids ascending. */
static inline int before(const ranker *rk, const st_hit *a, const st_hit *b) {
  if (a->score != b->score) return rk->desc ? a->score > b->score : a->score < b->score;
  return id_less(rk->ds->ids[a->key], rk->ds->ids[b->key]);
}

static void sift_down(ranker *rk, int i) {
  for (;;) {
    int l = 2 * i + 1, r = l + 1, w = i;
    if (l < rk->n && before(rk, &rk->heap[w], &rk->heap[l])) w = l;
    if (r < rk->n && before(rk, &rk->heap[w], &rk->heap[r])) w = r;
    if (w == i) return;
    st_hit t = rk->heap[i];
    rk->heap[i] = rk->heap[w];
    rk->heap[w] = t;
    i = w;
  }
}

static void sift_up(ranker *rk, int i) {
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!before(rk, &rk->heap[p], &rk->heap[i])) return;
    st_hit t = rk->heap[i];
    rk->heap[i] = rk->heap[p];
    rk->heap[p] = t;
    i = p;
  }
}

/* Keeps (key, score), which may_enter admitted: added while the heap has
 * room, else in place of the worst kept. */
static void offer(ranker *rk, uint32_t key, double score) {
  st_hit h = {key, score};
  if (rk->n < rk->k) {
    rk->heap[rk->n++] = h;
    sift_up(rk, rk->n - 1);
  } else {
    rk->heap[0] = h;
    sift_down(rk, 0);
  }
}

static int cmp_hits(const void *a, const void *b, void *arg) {
  const ranker *rk = arg;
  if (before(rk, a, b)) return -1;
  if (before(rk, b, a)) return 1;
  return 0;
}

/* The value of field by for key in run r. */
__attribute__((always_inline)) static inline double run_value(const st_run *r, uint32_t key, int by) {
  switch (by) {
  case HF_SEEN: return r->seen[key];
  case HF_LAST_LOSS: return r->last_loss[key];
  case HF_MEAN_LOSS: return r->mean_loss[key];
  case HF_MAX_LOSS: return r->max_loss[key];
  case HF_EMA_LOSS: return r->ema_loss[key];
  case HF_CONFIDENCE: return r->conf_mean[key];
  case HF_VARIABILITY: return r->scored_n[key] ? sqrtf(r->conf_m2[key] / (float)r->scored_n[key]) : 0.0f;
  case HF_CORRECTNESS: return r->scored_n[key] ? (float)r->correct_n[key] / (float)r->scored_n[key] : 0.0f;
  case HF_FORGETTING: return r->forgetting[key];
  case HF_AUM: return r->aum[key];
  default: return 0.0;
  }
}

/* Whether (score, key) can enter the ranker: when it is full, only if it comes
 * before the current worst, its root. */
static inline int may_enter(const ranker *rk, double score, uint32_t key) {
  if (rk->n < rk->k) return 1;
  const st_hit *w = &rk->heap[0];
  if (score != w->score) return rk->desc ? score > w->score : score < w->score;
  return id_less(rk->ds->ids[key], rk->ds->ids[w->key]);
}

/* Whether (score, id) comes strictly after the cursor in the answer's order. */
static inline int after_cursor(const st_query *q, int desc, double score, const char *id) {
  if (score != q->cursor_score) return desc ? score < q->cursor_score : score > q->cursor_score;
  return strcmp(id, q->cursor_id) > 0;
}

/* One run, the common case: the ranked field's column read directly, most
 * samples turned away by one comparison with the kept hits' worst score. */
static void top_one_run(const st_dataset *ds, const st_run *r, const st_query *q, ranker *rk) {
  const uint32_t lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
  const float *col = NULL;
  switch (q->by) {
  case HF_LAST_LOSS: col = r->last_loss; break;
  case HF_MEAN_LOSS: col = r->mean_loss; break;
  case HF_MAX_LOSS: col = r->max_loss; break;
  case HF_EMA_LOSS: col = r->ema_loss; break;
  case HF_CONFIDENCE: col = r->conf_mean; break;
  case HF_AUM: col = r->aum; break;
  default: break;
  }
  for (uint32_t key = 0; key < lim; key++) {
    const uint32_t seen = r->seen[key];
    if (seen < q->min_seen || seen == 0) continue;
    const double score = col ? (double)col[key] : run_value(r, key, q->by);
    if (!may_enter(rk, score, key)) continue;
    if (q->status_mask && !(q->status_mask & (1u << ds->status[key])) &&
        !(q->reconsider > 0 && st_reconsider(ds, key, q->reconsider)))
      continue;
    if (q->has_label && r->label[key] != q->label) continue;
    if (q->has_cursor && !after_cursor(q, rk->desc, score, ds->ids[key])) continue;
    offer(rk, key, score);
  }
}

/* run=* over several runs: the mean of the ranked field over the runs that saw the sample. */
static void top_all_runs(const st_dataset *ds, const st_query *q, ranker *rk) {
  for (uint32_t key = 0; key < ds->nsamples; key++) {
    if (!ds->ids[key]) continue;
    int runs = 0;
    uint32_t seen = 0;
    double score = 0.0;
    int32_t label = -1;
    int64_t label_step = INT64_MIN;
    for (int i = 0; i < ds->nruns; i++) {
      const st_run *r = ds->runs[i];
      if (key >= r->cap || r->seen[key] == 0) continue;
      runs++;
      seen += r->seen[key];
      score += run_value(r, key, q->by);
      int64_t at = r->has_step[key] ? r->last_step[key] : INT64_MIN + 1;
      if (r->label[key] >= 0 && at >= label_step) {
        label = r->label[key];
        label_step = at;
      }
    }
    if (!runs || seen < q->min_seen) continue;
    score = q->by == HF_SEEN ? (double)seen : score / runs;
    if (!may_enter(rk, score, key)) continue;
    if (q->status_mask && !(q->status_mask & (1u << ds->status[key])) &&
        !(q->reconsider > 0 && st_reconsider(ds, key, q->reconsider)))
      continue;
    if (q->has_label && label != q->label) continue;
    if (q->has_cursor && !after_cursor(q, rk->desc, score, ds->ids[key])) continue;
    offer(rk, key, score);
  }
}

int st_top(const st_dataset *ds, const st_query *q, st_hit *out) {
  if (q->k <= 0) return 0; /* nothing to keep: the heap has no root to compare with */
  ranker rk = {ds, hist_field_descending((hist_field)q->by), out, 0, q->k};
  if (q->run) top_one_run(ds, q->run, q, &rk);
  else if (ds->nruns == 1) top_one_run(ds, ds->runs[0], q, &rk); /* the mean over one run is that run */
  else top_all_runs(ds, q, &rk);
  qsort_r(out, (size_t)rk.n, sizeof *out, cmp_hits, &rk);
  return rk.n;
}

static int cmp_float(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

int st_loss_quantiles(const st_run *r, uint32_t nsamples, const double *p, int np, double *out) {
  uint32_t n = 0, lim = nsamples < r->cap ? nsamples : r->cap;
  for (uint32_t k = 0; k < lim; k++) n += r->seen[k] > 0;
  for (int i = 0; i < np; i++) out[i] = 0.0;
  if (n == 0) return 0;
  float *v = malloc((size_t)n * sizeof *v);
  if (!v) return -1;
  uint32_t j = 0;
  for (uint32_t k = 0; k < lim; k++)
    if (r->seen[k] > 0) v[j++] = r->mean_loss[k];
  qsort(v, n, sizeof *v, cmp_float);
  for (int i = 0; i < np; i++) {
    double pos = p[i] * (double)(n - 1);
    uint32_t lo = (uint32_t)pos;
    uint32_t hi = lo + 1 < n ? lo + 1 : lo;
    out[i] = v[lo] + (v[hi] - v[lo]) * (pos - lo); /* linear interpolation, as numpy's default */
  }
  free(v);
  return 0;
}
