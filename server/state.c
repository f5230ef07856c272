/* state.c — datasets, sample ids and per-run history columns in memory.
 *
 * Sample ids live in an arena per dataset and are found through an open-
 * addressing hash of dense keys (key + 1; 0 is empty). Every per-run field is
 * its own array indexed by key; the column table below lets one function grow
 * them all and copy one row in and out of a hist_rec for updating.
 *
 * The writer changes the state in two steps (see state.h): a prepare step
 * before its transaction commits, which may allocate and fail, and an apply
 * step after, which may not. Preparing a batch therefore looks its ids up,
 * counts the new ones and grows every per-key array, the hash and the id arena
 * to hold them; new datasets and runs are built aside ("fresh") and only
 * linked in by the apply. What a group prepared is tallied on the dataset
 * (pend_*), so that several changes to one dataset in one group reserve room
 * for all of them, and st_tx_end forgets the tally and frees what was never
 * linked in.
 */
#include "state.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "idhash.h"

#define ST_RUN_COLUMNS 32    /* at least the per-key columns of st_run */
#define ST_SAMPLE_ARRAYS 12  /* at least the per-key arrays of st_dataset */
/* The keys a dataset has room for at first; its arrays then double. Small, because
 * a run's columns cost about 150 bytes a key (and its series 12 bytes a point more): with room for 1024 keys
 * from the start, 10,000 datasets of 4 samples each held 2 GB and took seconds to start. */
#define ST_MIN_KEYS 16

struct st_run {
  char name[ST_NAME_MAX + 1];
  int64_t id;          /* runs.id */
  int32_t classes;
  int64_t created_at;
  uint32_t cap;        /* entries allocated in every column */
  uint32_t col_cap[ST_RUN_COLUMNS]; /* entries allocated in each column (past cap only after a failed growth) */
  uint32_t *seen, *scored_n, *correct_n, *forgetting, *other_n;
  float *last_loss, *mean_loss, *max_loss, *ema_loss, *conf_mean, *conf_m2, *aum, *el2n, *grand;
  uint16_t *el2n_n, *grand_n;
  int32_t *label;
  uint8_t *last_correct, *has_step, *ring_head, *ring_count;
  int64_t *first_step, *last_step;
  int64_t *seq;        /* the last batch applied to this row: replay skips older ones */
  uint32_t *stale_labels; /* observations that sent a label a relabel had replaced */
  hist_recent *recent; /* HIST_RECENT per key */
  /* the series (hist_series_push): series_points per key, none when it is 0 (not even these columns) */
  int series_points;
  hist_point *series;
  uint32_t *series_count;
  uint8_t *series_shift;
  uint64_t *dirty;     /* bitmap: rows changed since they were last written to the snapshot */
  uint32_t ndirty;
  hist_classes cls;    /* confident-learning thresholds */
  /* label_issue's threshold (hist_label_issue_threshold), computed by readers when a query needs it and
   * kept until the run's observations change; readers share the dataset's read lock, so it has its own */
  pthread_mutex_t li_lock;
  uint64_t li_observations; /* observations the cached threshold was computed at; UINT64_MAX: none */
  float li_threshold;
  int64_t cls_seq;     /* the last batch applied to cls */
  int64_t cls_saved;   /* the last batch the stored class means hold */
  uint64_t observations;
  uint32_t samples;    /* keys with seen > 0 */
  int64_t last_step_any;
  int has_last_step_any;
};

typedef struct st_arena_block st_arena_block;

struct st_dataset {
  char name[ST_NAME_MAX + 1];
  int64_t id; /* datasets.id */
  int64_t created_at;
  pthread_rwlock_t lock;
  uint32_t nsamples, cap;
  uint32_t arr_cap[ST_SAMPLE_ARRAYS]; /* entries allocated in each per-key array (past cap only after a failed growth) */
  const char **ids;    /* arena-owned, NUL-terminated */
  char **meta;         /* JSON object text, malloc'd, or NULL */
  uint8_t *status;
  char **corrected;    /* JSON label a relabel set, or NULL */
  int32_t *corrected_class; /* the corrected label when it is a class index, else -1 */
  float *confirm_score; /* ema_loss (max over runs) when confirmed; NaN otherwise */
  int64_t *meta_seq;   /* the newest batch whose meta the sample's meta reflects */
  int32_t *last_review; /* per sample: index of its newest entry in reviews, or -1 */
  uint64_t *meta_dirty; /* bitmap: meta changed since the samples row was written */
  uint32_t nmeta_dirty;
  st_review *reviews;  /* the audit trail, in seq order */
  int nreviews, capreviews;
  int64_t review_batch_seq; /* the largest batch_seq of any entry */
  st_queue **queues;
  int nqueues, capqueues;
  uint32_t persisted;  /* keys below this are in the samples table */
  uint32_t *hash;      /* open addressing: key + 1, 0 empty */
  uint32_t hcap;
  st_arena_block *arena;
  st_run **runs;
  int nruns, capruns;
  /* the writer's group (st_tx_begin .. st_tx_end) */
  uint32_t pend_new;   /* new ids the group's batches may add */
  size_t pend_bytes;   /* their bytes in the arena */
  int pend_reviews, pend_queues;
  uint32_t pend_prefix; /* samples rows the group has written: keys below this */
  st_run **fresh_runs; /* runs created by the group, linked in by their first batch's apply */
  int nfresh_runs, capfresh_runs;
  int fresh;           /* created by the group and not yet in the map */
  int touched;         /* in the map's list of datasets the group prepared changes to */
};

typedef struct run_ref {
  int64_t id;
  st_run *run;
  st_dataset *ds;
} run_ref;

struct st_map {
  pthread_rwlock_t lock;
  st_dataset **ds;    /* sorted by name */
  st_dataset **by_id; /* the same, sorted by id */
  int n, cap;
  st_dataset **fresh; /* datasets the writer's group created, not yet applied */
  int nfresh, capfresh;
  st_dataset **touched; /* datasets the group prepared changes to: st_tx_end resets their tallies */
  int ntouched, captouched;
  run_ref *runs;      /* while loading: runs by id */
  int nruns, capruns;
  int series_points;  /* what new runs keep (st_map_set_series_points) */
};

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

/* Grows *p (an array of *cap elements of size) to hold at least want; 0 or -1. */
static int grow_array(void **p, int *cap, int want, size_t size) {
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
static int arena_reserve(st_dataset *ds, size_t n) {
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
  if (arena_reserve(ds, n) != 0) return NULL;
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
    COL(grand, 1),       COL(grand_n, 1),
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

/* Grows the sample arrays, the meta bitmap, the hash and every run's columns (fresh runs too) to hold want keys. */
static int reserve_samples(st_dataset *ds, uint64_t want) {
  if (want > UINT32_MAX - 1) return -1;
  if (hash_grow(ds, want) != 0) return -1;
  if (want <= ds->cap) return 0;
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
  for (int i = 0; i < ds->nruns; i++)
    if (run_reserve(ds->runs[i], cap) != 0) return -1;
  for (int i = 0; i < ds->nfresh_runs; i++)
    if (run_reserve(ds->fresh_runs[i], cap) != 0) return -1;
  return 0;
}

/* Adds id as the next key; the room was reserved. */
static uint32_t intern_reserved(st_dataset *ds, const char *id) {
  const uint32_t k = ds->nsamples;
  ds->ids[k] = arena_strdup(ds, id); /* cannot fail: the arena holds pend_bytes */
  ds->nsamples = k + 1;
  hash_put(ds, k);
  return k;
}

/* ------------------------------------------------------------------ readers: samples */

const char *st_name(const st_dataset *ds) {
  return ds->name;
}

int64_t st_id(const st_dataset *ds) {
  return ds->id;
}

int64_t st_created_at(const st_dataset *ds) {
  return ds->created_at;
}

uint32_t st_nsamples(const st_dataset *ds) {
  return ds->nsamples;
}

uint64_t st_observations(const st_dataset *ds) {
  uint64_t n = 0;
  for (int r = 0; r < ds->nruns; r++) n += ds->runs[r]->observations;
  return n;
}

const char *st_sample_id(const st_dataset *ds, uint32_t key) {
  return ds->ids[key];
}

int st_sample_status(const st_dataset *ds, uint32_t key) {
  return ds->status[key];
}

const char *st_meta(const st_dataset *ds, uint32_t key) {
  return ds->meta[key];
}

const char *st_corrected(const st_dataset *ds, uint32_t key) {
  return ds->corrected[key];
}

float st_confirm_score(const st_dataset *ds, uint32_t key) {
  return ds->confirm_score[key];
}

int64_t st_meta_seq(const st_dataset *ds, uint32_t key) {
  return ds->meta_seq[key];
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

int32_t st_training_label(const st_dataset *ds, const st_run *r, uint32_t key) {
  if (r) return key < r->cap && r->seen[key] ? r->label[key] : -1;
  int32_t label = -1;
  int64_t at = INT64_MIN;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *q = ds->runs[i];
    if (key >= q->cap || !q->seen[key] || q->label[key] < 0) continue;
    int64_t s = q->has_step[key] ? q->last_step[key] : INT64_MIN + 1;
    if (s >= at) {
      at = s;
      label = q->label[key];
    }
  }
  return label;
}

/* ------------------------------------------------------------------ readers: runs */

int st_nruns(const st_dataset *ds) {
  return ds->nruns;
}

const st_run *st_run_at(const st_dataset *ds, int i) {
  return ds->runs[i];
}

const st_run *st_find_run(const st_dataset *ds, const char *name) {
  for (int i = 0; i < ds->nruns; i++)
    if (strcmp(ds->runs[i]->name, name) == 0) return ds->runs[i];
  return NULL;
}

const char *st_run_name(const st_run *r) {
  return r->name;
}

int64_t st_run_id(const st_run *r) {
  return r->id;
}

int32_t st_run_classes(const st_run *r) {
  return r->classes;
}

uint32_t st_run_samples(const st_run *r) {
  return r->samples;
}

uint64_t st_run_observations(const st_run *r) {
  return r->observations;
}

int st_run_last_step(const st_run *r, int64_t *step) {
  *step = r->last_step_any;
  return r->has_last_step_any;
}

static void row_get(const st_run *r, uint32_t key, hist_rec *h) {
  h->seen = r->seen[key];
  h->scored_n = r->scored_n[key];
  h->correct_n = r->correct_n[key];
  h->forgetting = r->forgetting[key];
  h->other_n = r->other_n[key];
  h->el2n = r->el2n[key];
  h->el2n_n = r->el2n_n[key];
  h->grand = r->grand[key];
  h->grand_n = r->grand_n[key];
  h->last_loss = r->last_loss[key];
  h->mean_loss = r->mean_loss[key];
  h->max_loss = r->max_loss[key];
  h->ema_loss = r->ema_loss[key];
  h->conf_mean = r->conf_mean[key];
  h->conf_m2 = r->conf_m2[key];
  h->aum = r->aum[key];
  h->label = r->label[key];
  h->last_correct = r->last_correct[key];
  h->has_step = r->has_step[key];
  h->first_step = r->first_step[key];
  h->last_step = r->last_step[key];
}

static void row_put(st_run *r, uint32_t key, const hist_rec *h) {
  r->seen[key] = h->seen;
  r->scored_n[key] = h->scored_n;
  r->correct_n[key] = h->correct_n;
  r->forgetting[key] = h->forgetting;
  r->other_n[key] = h->other_n;
  r->el2n[key] = h->el2n;
  r->el2n_n[key] = h->el2n_n;
  r->grand[key] = h->grand;
  r->grand_n[key] = h->grand_n;
  r->last_loss[key] = h->last_loss;
  r->mean_loss[key] = h->mean_loss;
  r->max_loss[key] = h->max_loss;
  r->ema_loss[key] = h->ema_loss;
  r->conf_mean[key] = h->conf_mean;
  r->conf_m2[key] = h->conf_m2;
  r->aum[key] = h->aum;
  r->label[key] = h->label;
  r->last_correct[key] = h->last_correct;
  r->has_step[key] = h->has_step;
  r->first_step[key] = h->first_step;
  r->last_step[key] = h->last_step;
}

void st_history(const st_run *r, uint32_t key, hist_rec *h) {
  if (key >= r->cap) {
    hist_init(h);
    return;
  }
  row_get(r, key, h);
}

/* The score of key in r: other_n / scored_n. */
static inline float run_li_score(const st_run *r, uint32_t key) {
  return r->scored_n[key] ? (float)r->other_n[key] / (float)r->scored_n[key] : 0.0f;
}

float st_label_issue_threshold(const st_dataset *ds, const st_run *r) {
  st_run *w = (st_run *)r; /* the cache only: the history is not touched */
  /* the common case, without the lock: the threshold is published before the count it was computed at */
  if (__atomic_load_n(&w->li_observations, __ATOMIC_ACQUIRE) == r->observations)
    return w->li_threshold; /* written before that count was, under the lock; only a writer changes the count */
  pthread_mutex_lock(&w->li_lock);
  if (w->li_observations != r->observations) {
    uint64_t counts[HIST_SCORE_BINS] = {0};
    const uint32_t lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
    for (uint32_t key = 0; key < lim; key++)
      if (r->scored_n[key]) counts[hist_score_bin(run_li_score(r, key))]++;
    w->li_threshold = hist_label_issue_threshold(counts);
    __atomic_store_n(&w->li_observations, r->observations, __ATOMIC_RELEASE);
  }
  const float t = w->li_threshold;
  pthread_mutex_unlock(&w->li_lock);
  return t;
}

void st_history_view(const st_dataset *ds, const st_run *r, uint32_t key, hist_view *v) {
  hist_rec h;
  st_history(r, key, &h);
  hist_view_of(&h, v);
  v->label_issue = key < r->cap && r->scored_n[key] && run_li_score(r, key) >= st_label_issue_threshold(ds, r);
}

uint32_t st_stale_labels(const st_run *r, uint32_t key) {
  return key < r->cap ? r->stale_labels[key] : 0;
}

uint32_t st_series(const st_run *r, uint32_t key, st_series_view *v) {
  memset(v, 0, sizeof *v);
  if (!r->series_points || key >= r->cap || !r->series_count[key]) return 0;
  v->points = r->series + (size_t)key * (size_t)r->series_points;
  v->len = hist_series_len(r->series_count[key], r->series_shift[key]);
  v->stride = (uint64_t)1 << r->series_shift[key];
  v->first = r->seen[key] - r->series_count[key];
  return v->len;
}

int st_recent(const st_run *r, uint32_t key, hist_recent out[HIST_RECENT]) {
  if (key >= r->cap) return 0;
  const int count = r->ring_count[key], head = r->ring_head[key];
  const hist_recent *ring = r->recent + (size_t)key * HIST_RECENT;
  for (int i = 0; i < count; i++) out[i] = ring[(head - 1 - i + 2 * HIST_RECENT) % HIST_RECENT];
  return count;
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
    row_get(r, key, &one);
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
    v->forgetting_events += w.forgetting_events;
    v->el2n += w.el2n;
    v->grand += w.grand;
    v->label_issue_score += w.label_issue_score;
    v->aum += w.aum;
    v->label_issue |= r->scored_n[key] && run_li_score(r, key) >= st_label_issue_threshold(ds, r);
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
  v->forgetting_events /= runs;
  v->el2n /= runs;
  v->grand /= runs;
  v->label_issue_score /= runs;
  v->aum /= runs;
}

/* The data map's three fields of a row, computed as hist_view_of computes them. */
static void map_view_row(const st_run *r, uint32_t key, st_map_view *v) {
  const uint32_t scored = r->scored_n[key];
  v->seen = r->seen[key];
  v->confidence = r->conf_mean[key];
  v->variability = scored ? sqrtf(r->conf_m2[key] / (float)scored) : 0.0f;
  v->correctness = scored ? (float)r->correct_n[key] / (float)scored : 0.0f;
  v->label = r->label[key];
}

void st_map_view_of(const st_dataset *ds, const st_run *r, uint32_t key, st_map_view *v) {
  memset(v, 0, sizeof *v);
  v->label = -1;
  if (r) {
    if (key < r->cap && r->seen[key]) map_view_row(r, key, v);
    return;
  }
  int runs = 0;
  int64_t label_step = INT64_MIN;
  st_map_view w;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *q = ds->runs[i];
    if (key >= q->cap || q->seen[key] == 0) continue;
    map_view_row(q, key, &w);
    runs++;
    v->seen += w.seen;
    v->confidence += w.confidence;
    v->variability += w.variability;
    v->correctness += w.correctness;
    /* the label of the run with the latest step, as st_history_all picks it */
    const int64_t at = q->has_step[key] ? q->last_step[key] : INT64_MIN + 1;
    if (w.label >= 0 && at >= label_step) {
      v->label = w.label;
      label_step = at;
    }
  }
  if (!runs) return;
  v->confidence /= runs;
  v->variability /= runs;
  v->correctness /= runs;
}

/* ------------------------------------------------------------------ readers: reviews, queues */

int st_nreviews(const st_dataset *ds) {
  return ds->nreviews;
}

const st_review *st_review_at(const st_dataset *ds, int i) {
  return &ds->reviews[i];
}

int32_t st_last_review(const st_dataset *ds, uint32_t key) {
  return key < ds->nsamples ? ds->last_review[key] : -1;
}

int st_nqueues(const st_dataset *ds) {
  return ds->nqueues;
}

const st_queue *st_queue_at(const st_dataset *ds, int i) {
  return ds->queues[i];
}

const st_queue *st_find_queue(const st_dataset *ds, const char *name) {
  for (int i = 0; i < ds->nqueues; i++)
    if (strcmp(ds->queues[i]->name, name) == 0) return ds->queues[i];
  return NULL;
}

/* The class index a JSON label names, or -1. */
static int32_t class_of(const char *label_json) {
  if (!label_json) return -1;
  char *end;
  long v = strtol(label_json, &end, 10);
  return *end == '\0' && end != label_json && v >= 0 && v <= INT32_MAX ? (int32_t)v : -1;
}

int32_t st_corrected_at(const st_dataset *ds, uint32_t key, int64_t seq) {
  if (key >= ds->nsamples) return -1;
  for (int32_t i = ds->last_review[key]; i >= 0; i = ds->reviews[i].prev) {
    const st_review *e = &ds->reviews[i];
    if (e->batch_seq < seq) return e->to == ST_RELABELLED ? class_of(e->label_after) : -1;
  }
  return -1;
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

static void run_free(st_run *r) {
  if (!r) return;
  pthread_mutex_destroy(&r->li_lock);
  for (size_t i = 0; i < NCOLUMNS; i++)
    large_free(*column_ptr(r, &columns[i]), (size_t)r->col_cap[i] * column_row(r, &columns[i]));
  free(r->dirty);
  free(r->cls.sum);
  free(r->cls.count);
  free(r);
}

static void review_strings_free(st_review *e) {
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

static void dataset_free(st_dataset *ds) {
  if (!ds) return;
  for (int i = 0; i < ds->nruns; i++) run_free(ds->runs[i]);
  free(ds->runs);
  for (int i = 0; i < ds->nfresh_runs; i++) run_free(ds->fresh_runs[i]);
  free(ds->fresh_runs);
  for (uint32_t k = 0; k < ds->nsamples; k++) {
    free(ds->meta[k]);
    free(ds->corrected[k]);
  }
  for (size_t i = 0; i < NSAMPLE_ARRAYS; i++)
    large_free(*sample_array_ptr(ds, &sample_arrays[i]), (size_t)ds->arr_cap[i] * sample_arrays[i].size);
  free(ds->meta_dirty);
  for (int i = 0; i < ds->nreviews; i++) review_strings_free(&ds->reviews[i]);
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
  for (int i = 0; i < m->n; i++) dataset_free(m->ds[i]);
  for (int i = 0; i < m->nfresh; i++) dataset_free(m->fresh[i]);
  free(m->ds);
  free(m->by_id);
  free(m->fresh);
  free(m->touched);
  free(m->runs);
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

/* Index of the first dataset with id >= id in by_id. */
static int map_search_id(const st_map *m, int64_t id) {
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
  int i = map_search(m, name);
  st_dataset *ds = i >= 0 ? m->ds[i] : NULL;
  if (ds) pthread_rwlock_rdlock(&ds->lock);
  pthread_rwlock_unlock(&m->lock);
  return ds;
}

const st_dataset *st_acquire_id(st_map *m, int64_t id) {
  pthread_rwlock_rdlock(&m->lock);
  int i = map_search_id(m, id);
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

static void add_totals(const st_dataset *ds, void *arg) {
  st_totals *t = arg;
  t->datasets++;
  t->samples += ds->nsamples;
  t->observations += st_observations(ds);
}

void st_map_totals(st_map *m, st_totals *t) {
  memset(t, 0, sizeof *t);
  st_map_each(m, add_totals, t);
}

st_dataset *st_w_find(st_map *m, int64_t id) {
  int i = map_search_id(m, id);
  return i < m->n && m->by_id[i]->id == id ? m->by_id[i] : NULL;
}

st_dataset *st_w_find_name(st_map *m, const char *name) {
  int i = map_search(m, name);
  return i >= 0 ? m->ds[i] : NULL;
}

st_dataset *st_w_next(st_map *m, int64_t id) {
  int i = map_search_id(m, id);
  return i < m->n ? m->by_id[i] : NULL;
}

/* Room for `more` datasets beyond those in the map; the arrays move, so under the map's write lock. */
static int map_reserve(st_map *m, int more) {
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
static void map_insert(st_map *m, st_dataset *ds) {
  pthread_rwlock_wrlock(&m->lock);
  int at = -map_search(m, ds->name) - 1;
  memmove(m->ds + at + 1, m->ds + at, (size_t)(m->n - at) * sizeof *m->ds);
  m->ds[at] = ds;
  int ai = map_search_id(m, ds->id);
  memmove(m->by_id + ai + 1, m->by_id + ai, (size_t)(m->n - ai) * sizeof *m->by_id);
  m->by_id[ai] = ds;
  m->n++;
  pthread_rwlock_unlock(&m->lock);
}

static st_dataset *dataset_new(const char *name, int64_t id, int64_t created_at) {
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

static st_run *run_new(const char *name, int64_t id, int32_t classes, int64_t created_at, uint32_t cap, int series_points) {
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
    if (!r->cls.sum || !r->cls.count) goto fail;
    r->cls.c = classes;
  }
  return r;
fail:
  run_free(r);
  return NULL;
}

/* ------------------------------------------------------------------ the writer: groups */

static void dataset_tx_end(st_dataset *ds) {
  for (int i = 0; i < ds->nfresh_runs; i++) run_free(ds->fresh_runs[i]);
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
  for (int i = 0; i < m->nfresh; i++) dataset_free(m->fresh[i]);
  m->nfresh = 0;
}

/* Lists ds among the datasets the group prepares changes to. */
static int touch(st_map *m, st_dataset *ds) {
  if (ds->touched) return 0;
  if (grow_array((void **)&m->touched, &m->captouched, m->ntouched + 1, sizeof *m->touched) != 0) return -1;
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
    if (grow_array((void **)&m->fresh, &m->capfresh, m->nfresh + 1, sizeof *m->fresh) != 0) return -1;
    if (!(ds = dataset_new(ref->ds_name, ref->ds_id, ref->ds_created))) return -1;
    ds->fresh = 1;
    m->fresh[m->nfresh++] = ds;
    if (map_reserve(m, m->nfresh) != 0) return -1;
  }
  if (touch(m, ds) != 0) return -1;
  st_run *run = run_by_id(ds, ref->run_id);
  if (!run) {
    reserve_lock(ds);
    int grown = grow_array((void **)&ds->runs, &ds->capruns, ds->nruns + ds->nfresh_runs + 1, sizeof *ds->runs);
    reserve_unlock(ds);
    if (grown != 0 ||
        grow_array((void **)&ds->fresh_runs, &ds->capfresh_runs, ds->nfresh_runs + 1, sizeof *ds->fresh_runs) != 0)
      return -1;
    if (!(run = run_new(ref->run_name, ref->run_id, ref->classes, ref->run_created, ds->cap, m->series_points))) return -1;
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
  int rc = reserve_samples(ds, (uint64_t)ds->nsamples + ds->pend_new) != 0 || arena_reserve(ds, ds->pend_bytes) != 0 ? -1 : 0;
  reserve_unlock(ds);
  if (rc != 0) st_batch_prep_free(p);
  return rc;
}

void st_batch_prep_free(st_batch_prep *p) {
  free(p->keys);
  p->keys = NULL;
}

/* Counts one more observed sample and the run's latest step (applying, and loading rows). */
static void count_row(st_run *r, const hist_rec *before, const hist_rec *after) {
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
  row_get(r, key, &before);
  h = before;
  hist_update(&h, o, hp, r->cls.c > 0 ? &r->cls : NULL);
  row_put(r, key, &h);
  hist_recent_push(r->recent + (size_t)key * HIST_RECENT, &r->ring_head[key], &r->ring_count[key], o);
  if (r->series_points)
    hist_series_push(r->series + (size_t)key * (size_t)r->series_points, r->series_points, &r->series_count[key],
                     &r->series_shift[key], o);
  if (corrected >= 0 && o->label >= 0 && o->label != corrected) r->stale_labels[key]++;
  r->seq[key] = seq;
  count_row(r, &before, &h);
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

void st_apply_batch(st_map *m, st_batch_prep *p, int64_t seq, char *const *ids, const hist_obs *obs, const hist_params *hp,
                    int nmeta, const char *const *meta_ids, char **meta_json) {
  st_dataset *ds = p->ds;
  if (ds->fresh) {
    /* the group's first batch of a new dataset links it in; room was reserved */
    for (int i = 0; i < m->nfresh; i++)
      if (m->fresh[i] == ds) {
        m->fresh[i] = m->fresh[--m->nfresh];
        break;
      }
    ds->fresh = 0;
    map_insert(m, ds);
  }
  pthread_rwlock_wrlock(&ds->lock);
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
      key = k >= 0 ? (uint32_t)k : intern_reserved(ds, ids[i]);
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
  pthread_rwlock_unlock(&ds->lock);
  st_batch_prep_free(p);
}

void st_apply_delete(st_map *m, int64_t id, int64_t *samples, int64_t *observations) {
  *samples = 0;
  *observations = 0;
  pthread_rwlock_wrlock(&m->lock);
  int ai = map_search_id(m, id);
  st_dataset *ds = ai < m->n && m->by_id[ai]->id == id ? m->by_id[ai] : NULL;
  if (ds) {
    memmove(m->by_id + ai, m->by_id + ai + 1, (size_t)(m->n - ai - 1) * sizeof *m->by_id);
    int at = map_search(m, ds->name);
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
  dataset_free(ds);
}

int st_prepare_reviews(st_map *m, st_dataset *ds, int n) {
  if (touch(m, ds) != 0) return -1;
  reserve_lock(ds);
  int rc = grow_array((void **)&ds->reviews, &ds->capreviews, ds->nreviews + ds->pend_reviews + n, sizeof *ds->reviews);
  reserve_unlock(ds);
  if (rc != 0) return -1;
  ds->pend_reviews += n;
  return 0;
}

int st_prepare_queue(st_map *m, st_dataset *ds) {
  if (touch(m, ds) != 0) return -1;
  reserve_lock(ds);
  int rc = grow_array((void **)&ds->queues, &ds->capqueues, ds->nqueues + ds->pend_queues + 1, sizeof *ds->queues);
  reserve_unlock(ds);
  if (rc != 0) return -1;
  ds->pend_queues++;
  return 0;
}

/* Appends an audit entry (room reserved). */
static void add_review(st_dataset *ds, st_review *e) {
  e->prev = ds->last_review[e->key];
  ds->last_review[e->key] = ds->nreviews;
  if (e->batch_seq > ds->review_batch_seq) ds->review_batch_seq = e->batch_seq;
  ds->reviews[ds->nreviews++] = *e;
}

static void set_corrected(st_dataset *ds, uint32_t key, char *label) {
  free(ds->corrected[key]);
  ds->corrected[key] = label;
  /* a class index is what batches' labels can be compared with */
  ds->corrected_class[key] = class_of(label);
}

void st_apply_status(st_dataset *ds, uint32_t key, int to, char *corrected, float confirm, st_review *e) {
  pthread_rwlock_wrlock(&ds->lock);
  ds->status[key] = (uint8_t)to;
  set_corrected(ds, key, corrected);
  ds->confirm_score[key] = confirm;
  e->key = key;
  add_review(ds, e);
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_meta(st_dataset *ds, uint32_t key, char *meta, int64_t meta_seq) {
  pthread_rwlock_wrlock(&ds->lock);
  set_meta(ds, key, meta);
  ds->meta_seq[key] = meta_seq;
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_queue(st_dataset *ds, st_queue *q) {
  pthread_rwlock_wrlock(&ds->lock);
  ds->queues[ds->nqueues++] = q;
  pthread_rwlock_unlock(&ds->lock);
}

void st_apply_queue_delete(st_dataset *ds, const char *name) {
  pthread_rwlock_wrlock(&ds->lock);
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
  row_get(r, key, &out->h);
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
  st_dataset *ds = dataset_new(name, id, created_at);
  if (!ds || map_reserve(m, 1) != 0) {
    dataset_free(ds);
    return load_fail(err, errn, "out of memory");
  }
  map_insert(m, ds);
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
  if (grow_array((void **)&m->runs, &m->capruns, m->nruns + 1, sizeof *m->runs) != 0)
    return load_fail(err, errn, "out of memory");
  st_run *r = run_new(name, id, classes, created_at, ds->cap, m->series_points);
  if (!r) return load_fail(err, errn, "out of memory");
  r->cls_seq = r->cls_saved = cls_seq;
  /* a query can come while focald loads: what readers see changes under the dataset's write lock */
  pthread_rwlock_wrlock(&ds->lock);
  int rc = grow_array((void **)&ds->runs, &ds->capruns, ds->nruns + 1, sizeof *ds->runs);
  if (rc == 0) ds->runs[ds->nruns++] = r;
  pthread_rwlock_unlock(&ds->lock);
  if (rc != 0) {
    run_free(r);
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
  const int rc = reserve_samples(ds, (uint64_t)key + 1) != 0 || arena_reserve(ds, strlen(id) + 1) != 0 ||
                 (meta && !meta_copy) || (corrected && !corrected_copy) ? -1 : 0;
  if (rc == 0) {
    intern_reserved(ds, id);
    ds->meta[key] = meta_copy;
    ds->status[key] = (uint8_t)status;
    set_corrected(ds, key, corrected_copy);
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
  if (h->seen == 0 || h->scored_n > h->seen || h->correct_n > h->scored_n || h->other_n > h->scored_n ||
      h->el2n_n > h->scored_n || !isfinite(h->el2n) || h->grand_n > h->scored_n || !isfinite(h->grand) || row->seq <= 0 || row->ring[0] >= HIST_RECENT ||
      row->ring[1] > HIST_RECENT || h->label < -1 || h->label >= r->classes)
    return load_fail(err, errn, "run \"%s\" of dataset \"%s\" has an inconsistent history row for key %u", r->name, ds->name,
                     key);
  hist_rec before;
  pthread_rwlock_wrlock(&ds->lock);
  row_get(r, key, &before);
  row_put(r, key, h);
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
  count_row(r, &before, h);
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
    if (grow_array((void **)&ds->reviews, &ds->capreviews, ds->nreviews + 1, sizeof *ds->reviews) != 0)
      rc = load_fail(err, errn, "out of memory");
    else add_review(ds, e);
    pthread_rwlock_unlock(&ds->lock);
  }
  if (rc != 0) review_strings_free(e);
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
    if (grow_array((void **)&ds->queues, &ds->capqueues, ds->nqueues + 1, sizeof *ds->queues) != 0)
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
  case HF_FORGETTING: return r->correct_n[key] == 0 ? r->scored_n[key] : r->forgetting[key]; /* hist_forgetting */
  case HF_AUM: return r->aum[key];
  case HF_FORGETTING_EVENTS: return r->forgetting[key];
  case HF_EL2N: return r->el2n[key];
  case HF_GRAND: return r->grand[key];
  case HF_LABEL_ISSUE_SCORE: return r->scored_n[key] ? (float)r->other_n[key] / (float)r->scored_n[key] : 0.0f;
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
 * samples turned away by one comparison with the kept hits' worst score.
 * Every key below nsamples is a sample: the state has no holes. */
static void top_one_run(const st_dataset *ds, const st_run *r, const st_query *q, ranker *rk) {
  const uint32_t lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
  const float li_threshold = q->label_issue ? st_label_issue_threshold(ds, r) : 0.0f;
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
    if (q->label_issue && (q->label_issue == ST_LABEL_ISSUE_YES) != (r->scored_n[key] && run_li_score(r, key) >= li_threshold))
      continue;
    if (q->has_cursor && !after_cursor(q, rk->desc, score, ds->ids[key])) continue;
    offer(rk, key, score);
  }
}

/* run=* over several runs: the mean of the ranked field over the runs that saw the sample. */
static void top_all_runs(const st_dataset *ds, const st_query *q, ranker *rk) {
  for (uint32_t key = 0; key < ds->nsamples; key++) {
    int runs = 0;
    uint32_t seen = 0;
    double score = 0.0;
    int32_t label = -1;
    int64_t label_step = INT64_MIN;
    int flagged = 0;
    for (int i = 0; i < ds->nruns; i++) {
      const st_run *r = ds->runs[i];
      if (key >= r->cap || r->seen[key] == 0) continue;
      runs++;
      flagged |= q->label_issue && r->scored_n[key] && run_li_score(r, key) >= st_label_issue_threshold(ds, r);
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
    if (q->label_issue && (q->label_issue == ST_LABEL_ISSUE_YES) != (flagged != 0)) continue;
    if (q->has_cursor && !after_cursor(q, rk->desc, score, ds->ids[key])) continue;
    offer(rk, key, score);
  }
}

int st_top(const st_dataset *ds, const st_query *q, st_hit *out) {
  if (q->k <= 0) return 0; /* nothing to keep: the heap has no root to compare with */
  ranker rk = {ds, hist_order_desc((hist_field)q->by, (hist_order)q->order), out, 0, q->k};
  if (q->run) top_one_run(ds, q->run, q, &rk);
  else if (ds->nruns == 1) top_one_run(ds, ds->runs[0], q, &rk); /* the mean over one run is that run */
  else top_all_runs(ds, q, &rk);
  qsort_r(out, (size_t)rk.n, sizeof *out, cmp_hits, &rk);
  return rk.n;
}

/* Puts the k-th smallest of v[lo..hi] at v[k], with nothing larger before it and nothing smaller after it
 * (quickselect, a median-of-three pivot): O(n) on average where a sort is O(n log n). */
static void select_kth(float *v, int64_t lo, int64_t hi, int64_t k) {
#define SWAP(a, b)      \
  do {                  \
    float t_ = v[a];    \
    v[a] = v[b];        \
    v[b] = t_;          \
  } while (0)
  while (hi > lo) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (v[mid] < v[lo]) SWAP(mid, lo);
    if (v[hi] < v[lo]) SWAP(hi, lo);
    if (v[hi] < v[mid]) SWAP(hi, mid);
    const float pivot = v[mid];
    int64_t i = lo, j = hi;
    while (i <= j) {
      while (v[i] < pivot) i++;
      while (v[j] > pivot) j--;
      if (i <= j) {
        SWAP(i, j);
        i++;
        j--;
      }
    }
    /* v[lo..j] <= pivot <= v[i..hi], and what lies between equals the pivot */
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else break;
  }
#undef SWAP
}

int st_loss_quantiles(const st_dataset *ds, const st_run *r, const double *p, int np, double *out) {
  uint32_t n = 0, lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
  for (uint32_t k = 0; k < lim; k++) n += r->seen[k] > 0;
  for (int i = 0; i < np; i++) out[i] = 0.0;
  if (n == 0) return 0;
  float *v = malloc((size_t)n * sizeof *v);
  if (!v) return -1;
  uint32_t j = 0;
  for (uint32_t k = 0; k < lim; k++)
    if (r->seen[k] > 0) v[j++] = r->mean_loss[k];
  /* each quantile from the two order statistics around its position, linearly interpolated as numpy's
   * default does; selected rather than sorted (the dataset page asks for them on a million samples) */
  for (int i = 0; i < np; i++) {
    const double pos = p[i] * (double)(n - 1);
    const uint32_t lo = (uint32_t)pos;
    select_kth(v, 0, (int64_t)n - 1, lo);
    float next = v[lo];
    if (lo + 1 < n) { /* the smallest of what select_kth left after lo */
      next = v[lo + 1];
      for (uint32_t k = lo + 2; k < n; k++)
        if (v[k] < next) next = v[k];
    }
    out[i] = v[lo] + (next - v[lo]) * (pos - lo);
  }
  free(v);
  return 0;
}
