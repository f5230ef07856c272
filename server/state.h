/* state.h — every dataset's samples and their histories, in memory, column by column.
 *
 * SQLite holds the durable record (store.c); this is the same record arranged
 * for answering queries: a hash from sample id to a dense key, and per run one
 * array per history field indexed by that key, so ranking 1M samples by one
 * field reads one 4 MB array.
 *
 * Locking: the store's writer thread is the only thread that changes state.
 * It takes a dataset's write lock to change it, and the map's write lock to
 * add or remove a dataset. Readers take the map's read lock, find and read-lock
 * the dataset, and may then drop the map lock (st_dataset_acquire). The writer
 * reads its own state without locks.
 */
#ifndef FOCALD_STATE_H
#define FOCALD_STATE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "history.h"

#define ST_NAME_MAX 64
#define ST_RUN_COLUMNS 24    /* at least the per-key columns of st_run */
#define ST_SAMPLE_ARRAYS 12  /* at least the per-key arrays of st_dataset */

/* Review states (kept per sample). */
typedef enum st_status {
  ST_OPEN = 0,
  ST_QUEUED,
  ST_IN_REVIEW,
  ST_RELABELLED,
  ST_CONFIRMED,
  ST_DISMISSED,
  ST_STATUS_COUNT
} st_status;

const char *st_status_name(int status);
int st_status_parse(const char *name); /* -1 if unknown */

/* One run's histories, one array per field, indexed by sample key. */
typedef struct st_run {
  char name[ST_NAME_MAX + 1];
  int64_t id;          /* runs.id */
  int32_t classes;     /* 0 until the first batch */
  int64_t created_at;
  uint32_t cap;        /* entries allocated in every column */
  uint32_t col_cap[ST_RUN_COLUMNS]; /* entries allocated in each column (past cap only after a failed growth) */
  uint32_t *seen, *scored_n, *correct_n, *forgetting;
  float *last_loss, *mean_loss, *max_loss, *ema_loss, *conf_mean, *conf_m2, *aum;
  int32_t *label;
  uint8_t *last_correct, *label_issue, *has_step, *ring_head, *ring_count;
  int64_t *first_step, *last_step;
  int64_t *seq;        /* the last batch applied to this row: replay skips older ones */
  uint32_t *stale_labels; /* observations that sent a label a relabel had replaced */
  hist_recent *recent; /* HIST_RECENT per key */
  uint64_t *dirty;     /* bitmap: rows changed since they were last written to the snapshot */
  uint32_t ndirty;
  hist_classes cls;    /* confident-learning thresholds */
  int64_t cls_seq;     /* the last batch applied to cls */
  int cls_dirty;
  uint64_t observations;
  uint32_t samples;    /* keys with seen > 0 */
  int64_t last_step_any;
  int has_last_step_any;
} st_run;

typedef struct st_arena_block st_arena_block;

/* One entry of a dataset's review audit trail. Strings are malloc'd, owned by the dataset. */
typedef struct st_review {
  int64_t seq;          /* review_log.seq: the order of changes */
  int64_t batch_seq;    /* the newest batch logged before the change */
  int32_t prev;         /* index of the sample's previous entry in ds->reviews, or -1 */
  uint32_t key;
  int64_t at;           /* unix milliseconds */
  uint8_t from, to;     /* st_status */
  char *reviewer;
  char *label_before;   /* JSON, or NULL */
  char *label_after;    /* JSON, or NULL */
  char *note;
} st_review;

/* A review queue: samples fixed at build time, in order. */
typedef struct st_queue {
  int64_t id;
  char name[ST_NAME_MAX + 1];
  int64_t created_at;   /* unix seconds */
  char *params;         /* JSON: how it was built */
  uint32_t n;
  uint32_t *keys;
  float *scores;
} st_queue;

typedef struct st_dataset {
  char name[ST_NAME_MAX + 1];
  int64_t id; /* datasets.id */
  int64_t created_at;
  pthread_rwlock_t lock;
  uint32_t nsamples, cap;
  uint32_t arr_cap[ST_SAMPLE_ARRAYS]; /* entries allocated in each per-key array (past cap only after a failed growth) */
  const char **ids;    /* arena-owned, NUL-terminated */
  char **meta;         /* JSON object text, malloc'd, or NULL */
  uint8_t *status;
  uint8_t *meta_dirty; /* meta changed since the snapshot */
  char **corrected;    /* JSON label a relabel set, or NULL */
  int32_t *corrected_class; /* the corrected label when it is a class index, else -1 */
  float *confirm_score; /* ema_loss (max over runs) when confirmed; NaN otherwise */
  int64_t *meta_seq;   /* the newest batch whose meta the sample's meta reflects */
  st_review *reviews;  /* the audit trail, in seq order */
  int nreviews, capreviews;
  int32_t *last_review; /* per sample: index of its newest entry in reviews, or -1 */
  int64_t review_batch_seq; /* the largest batch_seq of any entry */
  st_queue **queues;
  int nqueues;
  uint32_t persisted;  /* keys below this are in the samples table */
  uint32_t *hash;      /* open addressing: key + 1, 0 empty */
  uint32_t hcap;
  st_arena_block *arena;
  st_run **runs;
  int nruns;
} st_dataset;

typedef struct st_map st_map;

/* Creates an empty map of datasets. Returns NULL on allocation failure. */
st_map *st_map_new(void);
/* Frees the map and every dataset. Accepts NULL. */
void st_map_free(st_map *m);

/* Reader side: finds dataset name and returns it read-locked, or NULL. The
 * caller must st_dataset_release it. */
st_dataset *st_dataset_acquire(st_map *m, const char *name);
void st_dataset_release(st_dataset *ds);

/* Calls fn for every dataset, read-locked, in name order. */
void st_map_each(st_map *m, void (*fn)(st_dataset *ds, void *arg), void *arg);

/* Writer side. */
st_dataset *st_find(st_map *m, const char *name);                       /* unlocked; writer only */
int st_add_dataset(st_map *m, const char *name, int64_t id, int64_t created_at, st_dataset **out /* OUT */);
void st_remove_dataset(st_map *m, const char *name);
void st_write_lock(st_dataset *ds);
void st_write_unlock(st_dataset *ds);
st_run *st_find_run(const st_dataset *ds, const char *name);
int st_add_run(st_dataset *ds, const char *name, int64_t id, int32_t classes, int64_t created_at, st_run **out);
/* Sets a run's class count (first batch); allocates its thresholds. */
int st_run_set_classes(st_run *r, int32_t classes);

/* Finds a sample's key, or -1. */
int64_t st_sample_key(const st_dataset *ds, const char *id);
/* Finds or adds a sample; returns its key or -1 on allocation failure. */
int64_t st_sample_intern(st_dataset *ds, const char *id);
/* Adds a sample with a given key (loading the snapshot); keys may leave holes. */
int st_sample_load(st_dataset *ds, uint32_t key, const char *id, const char *meta, int status);
/* Replaces a sample's meta (JSON object text, copied; NULL clears). */
int st_sample_set_meta(st_dataset *ds, uint32_t key, const char *meta_json);
/* Sets a sample's corrected label (JSON, copied; NULL clears). */
int st_sample_set_corrected(st_dataset *ds, uint32_t key, const char *label_json);
/* Appends an audit entry (takes ownership of its strings; sets its prev link). Returns 0 or -1. */
int st_add_review(st_dataset *ds, const st_review *r);
/* The sample's corrected class as it stood when batch seq was logged: from its newest audit entry
 * made before that batch (-1 when not relabelled then, or relabelled to something not a class index). */
int32_t st_corrected_at(const st_dataset *ds, uint32_t key, int64_t seq);
/* Adds a queue (takes ownership). Returns 0 or -1. */
int st_add_queue(st_dataset *ds, st_queue *q);
st_queue *st_find_queue(const st_dataset *ds, const char *name);
void st_remove_queue(st_dataset *ds, const char *name);
/* The largest ema_loss of the sample over its runs (0 if never seen). */
float st_max_ema(const st_dataset *ds, uint32_t key);
/* Whether a confirmed sample has become clearly harder: its ema_loss (max over
 * runs) above factor times its value at confirmation. */
int st_reconsider(const st_dataset *ds, uint32_t key, double factor);

/* Makes every column of run hold at least ds->cap rows. */
int st_run_reserve(st_dataset *ds, st_run *r);

/* Reads or writes one row as a hist_rec. */
void st_row_get(const st_run *r, uint32_t key, hist_rec *h /* OUT */);
void st_row_put(st_run *r, uint32_t key, const hist_rec *h);

/* Applies one observation of sample key in batch seq: the class thresholds
 * (if seq is newer than the run's), then the row (if seq is newer than the
 * row's). corrected: the sample's corrected class while it is relabelled (-1
 * otherwise): an observation with another label counts as stale. Marks what
 * changed dirty. */
void st_observe(st_run *r, uint32_t key, int64_t seq, const hist_obs *o, double ema_alpha, int32_t corrected);

/* ---- queries (dataset read-locked) ---- */

/* The statuses a query lists by default: those still waiting for a decision. */
#define ST_UNDECIDED_MASK ((1u << ST_OPEN) | (1u << ST_QUEUED) | (1u << ST_IN_REVIEW))

typedef struct st_query {
  int by;             /* hist_field */
  const st_run *run;  /* one run, or NULL for the mean over runs */
  int has_label;
  int32_t label;
  uint32_t min_seen;
  uint32_t status_mask; /* bit per st_status; 0 = every status */
  double reconsider;    /* > 0: confirmed samples that st_reconsider flags pass too */
  int k;
  int has_cursor;     /* continue after (cursor_score, cursor_id) in the order */
  double cursor_score;
  const char *cursor_id;
} st_query;

typedef struct st_hit {
  uint32_t key;
  double score;
} st_hit;

/* The k hardest samples matching q, hardest first (ties by id), after the
 * cursor if any. out has room for q->k hits. Returns the number found, or -1
 * on allocation failure. */
int st_top(const st_dataset *ds, const st_query *q, st_hit *out);

/* A sample's history in run r (seen == 0: never observed in r). */
void st_history(const st_run *r, uint32_t key, hist_rec *h /* OUT */);
/* run=*: each field the mean over the runs that observed the sample, except
 * seen (the sum), first_step (the least), last_step (the greatest), label
 * (the run with the latest step's) and label_issue (any run's). */
void st_history_all(const st_dataset *ds, uint32_t key, hist_view *v /* OUT */);

/* Quantiles (p in [0,1], ascending) of mean_loss over the run's observed
 * samples, written to out[np]. Returns 0 or -1. */
int st_loss_quantiles(const st_run *r, uint32_t nsamples, const double *p, int np, double *out);

#endif /* FOCALD_STATE_H */
