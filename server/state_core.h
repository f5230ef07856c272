/* state_core.h — what the files of the in-memory state share: the structs behind
 * state.h's handles and the helpers (st__*) that grow and free them.
 *
 * Only state_*.c include this header; everything else goes through state.h.
 * state_core.c owns the memory (arrays, arena, hash, columns, the map);
 * state_read.c answers readers, state_write.c makes the writer's changes,
 * state_load.c rebuilds the datasets at start-up and state_top.c ranks them.
 */
#ifndef FOCALD_STATE_CORE_H
#define FOCALD_STATE_CORE_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "history.h"
#include "state.h"

#define ST_RUN_COLUMNS 40    /* at least the per-key columns of st_run */
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
  int32_t *other_class;
  float *last_loss, *mean_loss, *max_loss, *ema_loss, *conf_mean, *conf_m2, *aum, *el2n, *grand;
  uint16_t *el2n_n, *grand_n, *early_n, *early_other_n;
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
  /* label_issue's rule (hist_label_issue_rule), computed by readers when a query needs it and
   * kept until the run's observations change; readers share the dataset's read lock, so it has its own */
  pthread_mutex_t li_lock;
  uint64_t li_observations; /* observations the cached rule was computed at; UINT64_MAX: none */
  hist_li_rule li_rule;
  /* and what it decided: li_flag per key (echoes left out), with li_order (two entries a key) and li_start
   * (2 (cls.c + 2) entries) the rule's scratch for sorting the flagged keys' cells; only the rule's
   * computation writes them */
  uint8_t *li_flag;
  uint32_t *li_order;
  uint32_t *li_start;
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
  int32_t *corrected_class; /* the corrected label when it is a class index, else -1 (st__class_of) */
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

/* --------------------------------------------------------- state_core.c */

/* Grows *p (an array of *cap elements of size) to hold at least want; 0 or -1. */
int st__grow_array(void **p, int *cap, int want, size_t size);
/* Makes the dataset's id arena hold at least n more bytes; 0 or -1. */
int st__arena_reserve(st_dataset *ds, size_t n);
/* Grows the sample arrays, the meta bitmap, the hash and every run's columns (fresh runs too) to hold want keys. */
int st__reserve_samples(st_dataset *ds, uint64_t want);
/* Adds id as the next key; the room was reserved. */
uint32_t st__intern_reserved(st_dataset *ds, const char *id);
st_dataset *st__dataset_new(const char *name, int64_t id, int64_t created_at);
st_run *st__run_new(const char *name, int64_t id, int32_t classes, int64_t created_at, uint32_t cap, int series_points);
void st__run_free(st_run *r);
void st__review_strings_free(st_review *e);
void st__dataset_free(st_dataset *ds);
/* The index of the dataset called name (by id) in the map's sorted lists, or -1. */
int st__map_search(const st_map *m, const char *name);
int st__map_search_id(const st_map *m, int64_t id);
/* Makes room in the map for more datasets; 0 or -1. */
int st__map_reserve(st_map *m, int more);
/* Links ds into the map's lists; the room was reserved. */
void st__map_insert(st_map *m, st_dataset *ds);

/* --------------------------------------------------------- state_write.c */

/* Keeps the run's counts (samples, observations) when a row goes from before to after. */
void st__count_row(st_run *r, const hist_rec *before, const hist_rec *after);
/* Appends e to the dataset's audit trail; the room was reserved. */
void st__add_review(st_dataset *ds, st_review *e);
/* Sets the sample's corrected label (taking ownership of label) and its class. */
void st__set_corrected(st_dataset *ds, uint32_t key, char *label);

/* --------------------------------------------------------- inline */

/* Copies row key of r's columns into h, and back: inline, because the writer does it for every observation. */
static inline void st__row_get(const st_run *r, uint32_t key, hist_rec *h) {
  h->seen = r->seen[key];
  h->scored_n = r->scored_n[key];
  h->correct_n = r->correct_n[key];
  h->forgetting = r->forgetting[key];
  h->other_n = r->other_n[key];
  h->other_class = r->other_class[key];
  h->early_n = r->early_n[key];
  h->early_other_n = r->early_other_n[key];
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

static inline void st__row_put(st_run *r, uint32_t key, const hist_rec *h) {
  r->seen[key] = h->seen;
  r->scored_n[key] = h->scored_n;
  r->correct_n[key] = h->correct_n;
  r->forgetting[key] = h->forgetting;
  r->other_n[key] = h->other_n;
  r->other_class[key] = h->other_class;
  r->early_n[key] = h->early_n;
  r->early_other_n[key] = h->early_other_n;
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

/* The score of key in r: other_n / scored_n. */
static inline float st__li_score(const st_run *r, uint32_t key) {
  return r->scored_n[key] ? (float)r->other_n[key] / (float)r->scored_n[key] : 0.0f;
}

/* The early score of key in r (hist_early_label_issue_score). */
static inline float st__li_early_score(const st_run *r, uint32_t key) {
  const uint16_t n = r->early_n[key];
  if (n == HIST_EARLY_UNKNOWN || n == 0) return st__li_score(r, key);
  return (float)r->early_other_n[key] / (float)n;
}

/* label_issue of key in r, as r's rule decided it (st_label_issue_rule, which returned rule). */
static inline int st__li_flagged(const st_run *r, const hist_li_rule *rule, uint32_t key) {
  (void)rule; /* its decisions are in li_flag, valid while rule is */
  return key < r->cap && r->scored_n[key] && r->li_flag[key];
}

/* st_max_ema and st_reconsider, inline for the ranking's loop (state_top.c). */
static inline float st__max_ema(const st_dataset *ds, uint32_t key) {
  float m = 0.0f;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    if (key < r->cap && r->seen[key] && r->ema_loss[key] > m) m = r->ema_loss[key];
  }
  return m;
}

/* The least loss at confirmation reconsideration compares with: a sample the model is all but certain of
 * has a loss of 0 in float, and any later loss at all would be "factor times harder" than 0. */
#define ST_RECONSIDER_FLOOR 1e-6

static inline int st__reconsider(const st_dataset *ds, uint32_t key, double factor) {
  if (factor <= 0 || ds->status[key] != ST_CONFIRMED || !(ds->confirm_score[key] >= 0.0f)) return 0;
  const double base = ds->confirm_score[key] > ST_RECONSIDER_FLOOR ? ds->confirm_score[key] : ST_RECONSIDER_FLOOR;
  return st__max_ema(ds, key) > factor * base;
}

/* A corrected class index past INT32_MAX, which versions before the range check
 * stored: it differs from every label a batch can send (0 to INT32_MAX). */
#define ST_CLASS_UNSENDABLE (-2)

/* The class index a JSON label names: 0 to INT32_MAX, ST_CLASS_UNSENDABLE for a
 * larger one, or -1 when the label is not a class index. */
static inline int32_t st__class_of(const char *label_json) {
  if (!label_json) return -1;
  char *end;
  errno = 0;
  long long v = strtoll(label_json, &end, 10);
  if (*end != '\0' || end == label_json || v < 0) return -1;
  return errno == 0 && v <= INT32_MAX ? (int32_t)v : ST_CLASS_UNSENDABLE;
}

#endif
