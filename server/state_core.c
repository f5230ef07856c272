/* state_core.c — the memory of the in-memory datasets: arrays that grow, the id
 * arena and hash, the per-run columns, and the map of datasets.
 *
 * Sample ids live in an arena per dataset and are found through an open-
 * addressing hash of dense keys (key + 1; 0 is empty). Every per-run field is
 * its own array indexed by key; the column table below lets one function grow
 * them all (state_core.h's st__row_get and st__row_put copy one row in and out
 * of a hist_rec for updating).
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "idhash.h"
#include "state_core.h"

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

int st__grow_array(void **p, int *cap, int want, size_t size) {
  if (want <= *cap) return 0;
  int c = *cap ? *cap : 8;
  while (c < want) c *= 2;
  void *n = realloc(*p, (size_t)c * size);
  if (!n) return -1;
  *p = n;
  *cap = c;
  return 0;
}

/* ------------------------------------------------------------------ arena */

struct st_arena_block {
  st_arena_block *next;
  size_t used, cap;
  char data[];
};

#define ARENA_BLOCK 60000
#define ARENA_FIRST 512 /* the first block: a dataset of a few samples keeps a few hundred bytes of ids */

/* Makes the current block hold at least n more bytes. Blocks double from
 * ARENA_FIRST up to ARENA_BLOCK. */
int st__arena_reserve(st_dataset *ds, size_t n) {
  st_arena_block *b = ds->arena;
  if (b && b->cap - b->used >= n) return 0;
  size_t cap = !b ? ARENA_FIRST : b->cap < ARENA_BLOCK / 2 ? b->cap * 2 : ARENA_BLOCK;
  if (cap < n) cap = n;
  st_arena_block *nb = malloc(sizeof *nb + cap);
  if (!nb) return -1;
  nb->next = b;
  nb->used = 0;
  nb->cap = cap;
  ds->arena = nb;
  return 0;
}

/* Copies s into the dataset's arena; the copy lives as long as the dataset. */
static const char *arena_strdup(st_dataset *ds, const char *s) {
  size_t n = strlen(s) + 1;
  if (st__arena_reserve(ds, n) != 0) return NULL;
  st_arena_block *b = ds->arena;
  char *p = b->data + b->used;
  memcpy(p, s, n);
  b->used += n;
  return p;
}

/* ------------------------------------------------------------------ hashing */

int64_t st_key(const st_dataset *ds, const char *id) {
  if (!ds->hcap) return -1;
  uint32_t mask = ds->hcap - 1;
  for (uint32_t i = (uint32_t)idhash(id) & mask;; i = (i + 1) & mask) {
    uint32_t slot = ds->hash[i];
    if (slot == 0) return -1;
    if (strcmp(ds->ids[slot - 1], id) == 0) return slot - 1;
  }
}

/* Inserts key into the hash (the id is already in ds->ids[key]). */
static void hash_put(st_dataset *ds, uint32_t key) {
  uint32_t mask = ds->hcap - 1;
  uint32_t i = (uint32_t)idhash(ds->ids[key]) & mask;
  while (ds->hash[i] != 0) i = (i + 1) & mask;
  ds->hash[i] = key + 1;
}

/* Keeps the hash at most half full with want keys. */
static int hash_grow(st_dataset *ds, uint64_t want) {
  if (want * 2 <= ds->hcap) return 0;
  uint64_t cap = ds->hcap ? ds->hcap : 2 * ST_MIN_KEYS;
  while (want * 2 > cap) cap *= 2;
  if (cap > UINT32_MAX) return -1;
  uint32_t *h = large_resize(NULL, 0, (size_t)cap * sizeof *h);
  if (!h) return -1;
  large_free(ds->hash, (size_t)ds->hcap * sizeof *h);
  ds->hash = h;
  ds->hcap = (uint32_t)cap;
  for (uint32_t k = 0; k < ds->nsamples; k++) hash_put(ds, k);
  return 0;
}

/* ------------------------------------------------------------------ columns */

typedef struct column {
  size_t offset; /* of the pointer in st_run */
  size_t size;   /* of one element */
  size_t per;    /* elements per key */
  int series;    /* SERIES_POINTS: series_points per key; SERIES_STATE: one when the run keeps a series, else none */
} column;

enum { SERIES_NO = 0, SERIES_POINTS, SERIES_STATE };

#define COL(f, per) {offsetof(st_run, f), sizeof(*((st_run *)0)->f), per, SERIES_NO}
#define COL_SERIES(f, kind) {offsetof(st_run, f), sizeof(*((st_run *)0)->f), 0, kind}
static const column columns[] = {
    COL(seen, 1),        COL(scored_n, 1),   COL(correct_n, 1),  COL(forgetting, 1),   COL(last_loss, 1),
    COL(mean_loss, 1),   COL(max_loss, 1),   COL(ema_loss, 1),   COL(conf_mean, 1),    COL(conf_m2, 1),
    COL(aum, 1),         COL(label, 1),      COL(last_correct, 1), COL(has_step, 1),
    COL(ring_head, 1),   COL(ring_count, 1), COL(first_step, 1), COL(last_step, 1),    COL(seq, 1),
    COL(recent, HIST_RECENT), COL(stale_labels, 1), COL(other_n, 1), COL(el2n, 1), COL(el2n_n, 1),
    COL(grand, 1),       COL(grand_n, 1),    COL(other_class, 1), COL(li_flag, 1),  COL(li_order, 2),
    COL(early_n, 1),     COL(early_other_n, 1),
    /* the series has columns of its own, so that ranking the others reads none of it */
    COL_SERIES(series, SERIES_POINTS), COL_SERIES(series_count, SERIES_STATE), COL_SERIES(series_shift, SERIES_STATE),
};
#define NCOLUMNS (sizeof columns / sizeof columns[0])
_Static_assert(NCOLUMNS <= ST_RUN_COLUMNS, "st_run.col_cap must have an entry per column");

static void **column_ptr(st_run *r, const column *c) {
  return (void **)((char *)r + c->offset);
}

/* Bytes of column c per key in run r: 0 for the series' columns of a run that keeps none. */
static size_t column_row(const st_run *r, const column *c) {
  switch (c->series) {
  case SERIES_POINTS: return c->size * (size_t)r->series_points;
  case SERIES_STATE: return r->series_points ? c->size : 0;
  default: return c->size * c->per;
  }
}

/* Makes every column of r hold at least want rows. */
static int run_reserve(st_run *r, uint32_t want) {
  if (r->cap >= want) return 0;
  for (size_t i = 0; i < NCOLUMNS; i++) {
    if (r->col_cap[i] >= want) continue; /* grown before a later column failed */
    void **p = column_ptr(r, &columns[i]);
    size_t row = column_row(r, &columns[i]);
    if (row == 0) { /* a series not kept costs nothing */
      r->col_cap[i] = want;
      continue;
    }
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
    r->other_class[k] = -1;
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
    SARR(ids),           SARR(meta),          SARR(status),   SARR(corrected),   SARR(corrected_class),
    SARR(confirm_score), SARR(meta_seq),      SARR(last_review),
};
#define NSAMPLE_ARRAYS (sizeof sample_arrays / sizeof sample_arrays[0])
_Static_assert(NSAMPLE_ARRAYS + 1 <= ST_SAMPLE_ARRAYS, "st_dataset.arr_cap must have an entry per array");

static void **sample_array_ptr(st_dataset *ds, const sample_array *a) {
  return (void **)((char *)ds + a->offset);
}

/* Grows the runs to the dataset's capacity: each holds a row per key the dataset has room for. */
static int runs_reserve(st_dataset *ds) {
  for (int i = 0; i < ds->nruns; i++)
    if (run_reserve(ds->runs[i], ds->cap) != 0) return -1;
  for (int i = 0; i < ds->nfresh_runs; i++)
    if (run_reserve(ds->fresh_runs[i], ds->cap) != 0) return -1;
  return 0;
}

int st__reserve_samples(st_dataset *ds, uint64_t want) {
  if (want > UINT32_MAX - 1) return -1;
  if (hash_grow(ds, want) != 0) return -1;
  /* the runs too: a call that grew the dataset's arrays may have failed on a run, and that run is grown now */
  if (want <= ds->cap) return runs_reserve(ds);
  uint32_t cap = ds->cap ? ds->cap : ST_MIN_KEYS;
  while (cap < want) cap = cap > UINT32_MAX / 2 ? UINT32_MAX - 1 : cap * 2;
  for (size_t i = 0; i < NSAMPLE_ARRAYS; i++) {
    if (ds->arr_cap[i] >= cap) continue; /* grown before a later array failed */
    void **p = sample_array_ptr(ds, &sample_arrays[i]);
    void *n = large_resize(*p, (size_t)ds->arr_cap[i] * sample_arrays[i].size, (size_t)cap * sample_arrays[i].size);
    if (!n) return -1;
    *p = n;
    ds->arr_cap[i] = cap;
  }
  size_t words_old = (ds->cap + 63) / 64, words = ((size_t)cap + 63) / 64;
  if (ds->arr_cap[NSAMPLE_ARRAYS] < cap) {
    uint64_t *d = realloc(ds->meta_dirty, words * sizeof *d);
    if (!d) return -1;
    memset(d + words_old, 0, (words - words_old) * sizeof *d);
    ds->meta_dirty = d;
    ds->arr_cap[NSAMPLE_ARRAYS] = cap;
  }
  /* new entries are zero (NULL, ST_OPEN); these are not */
  for (uint32_t k = ds->cap; k < cap; k++) {
    ds->corrected_class[k] = -1;
    ds->confirm_score[k] = NAN;
    ds->last_review[k] = -1;
  }
  ds->cap = cap;
  return runs_reserve(ds);
}

uint32_t st__intern_reserved(st_dataset *ds, const char *id) {
  const uint32_t k = ds->nsamples;
  ds->ids[k] = arena_strdup(ds, id); /* cannot fail: the arena holds pend_bytes */
  ds->nsamples = k + 1;
  hash_put(ds, k);
  return k;
}

/* ------------------------------------------------------------------ the map */

void st_map_set_series_points(st_map *m, int points) {
  m->series_points = points < 0 ? 0 : points > HIST_SERIES_MAX ? HIST_SERIES_MAX : points;
}

int st_map_series_points(const st_map *m) {
  return m->series_points;
}

st_map *st_map_new(void) {
  st_map *m = calloc(1, sizeof *m);
  if (m && pthread_rwlock_init(&m->lock, NULL) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

void st__run_free(st_run *r) {
  if (!r) return;
  pthread_mutex_destroy(&r->li_lock);
  for (size_t i = 0; i < NCOLUMNS; i++)
    large_free(*column_ptr(r, &columns[i]), (size_t)r->col_cap[i] * column_row(r, &columns[i]));
  free(r->dirty);
  free(r->cls.sum);
  free(r->cls.count);
  free(r->li_start);
  free(r);
}

void st__review_strings_free(st_review *e) {
  free(e->reviewer);
  free(e->label_before);
  free(e->label_after);
  free(e->note);
}

void st_queue_free(st_queue *q) {
  if (!q) return;
  free(q->params);
  free(q->keys);
  free(q->scores);
  free(q);
}

void st__dataset_free(st_dataset *ds) {
  if (!ds) return;
  for (int i = 0; i < ds->nruns; i++) st__run_free(ds->runs[i]);
  free(ds->runs);
  for (int i = 0; i < ds->nfresh_runs; i++) st__run_free(ds->fresh_runs[i]);
  free(ds->fresh_runs);
  for (uint32_t k = 0; k < ds->nsamples; k++) {
    free(ds->meta[k]);
    free(ds->corrected[k]);
  }
  for (size_t i = 0; i < NSAMPLE_ARRAYS; i++)
    large_free(*sample_array_ptr(ds, &sample_arrays[i]), (size_t)ds->arr_cap[i] * sample_arrays[i].size);
  free(ds->meta_dirty);
  for (int i = 0; i < ds->nreviews; i++) st__review_strings_free(&ds->reviews[i]);
  free(ds->reviews);
  for (int i = 0; i < ds->nqueues; i++) st_queue_free(ds->queues[i]);
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
  for (int i = 0; i < m->n; i++) st__dataset_free(m->ds[i]);
  for (int i = 0; i < m->nfresh; i++) st__dataset_free(m->fresh[i]);
  free(m->ds);
  free(m->by_id);
  free(m->fresh);
  free(m->touched);
  free(m->runs);
  pthread_rwlock_destroy(&m->lock);
  free(m);
}

/* Index of name in the sorted array, or where it would go (negative - 1). */
int st__map_search(const st_map *m, const char *name) {
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

/* Index of the first dataset with id >= id in by_id. */
int st__map_search_id(const st_map *m, int64_t id) {
  int lo = 0, hi = m->n;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (m->by_id[mid]->id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const st_dataset *st_acquire(st_map *m, const char *name) {
  pthread_rwlock_rdlock(&m->lock);
  int i = st__map_search(m, name);
  st_dataset *ds = i >= 0 ? m->ds[i] : NULL;
  if (ds) pthread_rwlock_rdlock(&ds->lock);
  pthread_rwlock_unlock(&m->lock);
  return ds;
}

const st_dataset *st_acquire_id(st_map *m, int64_t id) {
  pthread_rwlock_rdlock(&m->lock);
  int i = st__map_search_id(m, id);
  st_dataset *ds = i < m->n && m->by_id[i]->id == id ? m->by_id[i] : NULL;
  if (ds) pthread_rwlock_rdlock(&ds->lock);
  pthread_rwlock_unlock(&m->lock);
  return ds;
}

void st_release(const st_dataset *ds) {
  if (ds) pthread_rwlock_unlock(&((st_dataset *)ds)->lock);
}

void st_map_each(st_map *m, void (*fn)(const st_dataset *ds, void *arg), void *arg) {
  pthread_rwlock_rdlock(&m->lock);
  for (int i = 0; i < m->n; i++) {
    pthread_rwlock_rdlock(&m->ds[i]->lock);
    fn(m->ds[i], arg);
    pthread_rwlock_unlock(&m->ds[i]->lock);
  }
  pthread_rwlock_unlock(&m->lock);
}

st_dataset *st_w_find(st_map *m, int64_t id) {
  int i = st__map_search_id(m, id);
  return i < m->n && m->by_id[i]->id == id ? m->by_id[i] : NULL;
}

st_dataset *st_w_find_name(st_map *m, const char *name) {
  int i = st__map_search(m, name);
  return i >= 0 ? m->ds[i] : NULL;
}

st_dataset *st_w_next(st_map *m, int64_t id) {
  int i = st__map_search_id(m, id);
  return i < m->n ? m->by_id[i] : NULL;
}

/* Room for `more` datasets beyond those in the map; the arrays move, so under the map's write lock. */
int st__map_reserve(st_map *m, int more) {
  int want = m->n + more;
  if (want <= m->cap) return 0;
  int cap = m->cap ? m->cap : 8;
  while (cap < want) cap *= 2;
  int rc = -1;
  pthread_rwlock_wrlock(&m->lock);
  st_dataset **a = realloc(m->ds, (size_t)cap * sizeof *a);
  if (a) {
    m->ds = a;
    st_dataset **b = realloc(m->by_id, (size_t)cap * sizeof *b);
    if (b) { /* else m->ds keeps its larger block: cap is what both hold */
      m->by_id = b;
      m->cap = cap;
      rc = 0;
    }
  }
  pthread_rwlock_unlock(&m->lock);
  return rc;
}

/* Links ds into the map (room reserved): under the map's write lock. */
void st__map_insert(st_map *m, st_dataset *ds) {
  pthread_rwlock_wrlock(&m->lock);
  int at = -st__map_search(m, ds->name) - 1;
  memmove(m->ds + at + 1, m->ds + at, (size_t)(m->n - at) * sizeof *m->ds);
  m->ds[at] = ds;
  int ai = st__map_search_id(m, ds->id);
  memmove(m->by_id + ai + 1, m->by_id + ai, (size_t)(m->n - ai) * sizeof *m->by_id);
  m->by_id[ai] = ds;
  m->n++;
  pthread_rwlock_unlock(&m->lock);
}

st_dataset *st__dataset_new(const char *name, int64_t id, int64_t created_at) {
  st_dataset *ds = calloc(1, sizeof *ds);
  if (!ds) return NULL;
  snprintf(ds->name, sizeof ds->name, "%s", name);
  ds->id = id;
  ds->created_at = created_at;
  if (pthread_rwlock_init(&ds->lock, NULL) != 0) {
    free(ds);
    return NULL;
  }
  return ds;
}

st_run *st__run_new(const char *name, int64_t id, int32_t classes, int64_t created_at, uint32_t cap, int series_points) {
  st_run *r = calloc(1, sizeof *r);
  if (!r) return NULL;
  if (pthread_mutex_init(&r->li_lock, NULL) != 0) {
    free(r);
    return NULL;
  }
  r->li_observations = UINT64_MAX;
  snprintf(r->name, sizeof r->name, "%s", name);
  r->id = id;
  r->created_at = created_at;
  r->classes = classes;
  r->series_points = series_points;
  if (run_reserve(r, cap) != 0) goto fail;
  if (classes > 0) {
    r->cls.sum = calloc((size_t)classes, sizeof *r->cls.sum);
    r->cls.count = calloc((size_t)classes, sizeof *r->cls.count);
    r->li_start = calloc(2 * ((size_t)classes + 2), sizeof *r->li_start);
    if (!r->cls.sum || !r->cls.count || !r->li_start) goto fail;
    r->cls.c = classes;
  }
  return r;
fail:
  st__run_free(r);
  return NULL;
}
