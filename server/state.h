/* state.h — every dataset's samples and their histories, in memory, behind functions.
 *
 * SQLite holds the durable record (store.c); this is the same record arranged
 * for answering queries: a hash from sample id to a dense key, and per run one
 * array per history field indexed by that key, so ranking 1M samples by one
 * field reads one 4 MB array. Only the state_*.c files see the structs (state_core.h): everything else
 * reads through the functions below, and the store's writer changes the state
 * only through the prepare/apply pairs at the end of this file.
 *
 * Locking: the store's writer thread is the only thread that changes state.
 * It takes a dataset's write lock to change it, and the map's write lock to
 * add or remove a dataset. Readers take the map's read lock, find and read-lock
 * the dataset, and then drop the map lock (st_acquire). The writer reads its
 * own state without locks.
 *
 * Memory follows the commit. A change is prepared before the transaction that
 * records it commits: whatever applying it will need (room in every array, new
 * datasets and runs, strings) is found or allocated then, so that applying it
 * after the commit cannot fail. If the transaction fails, st_tx_end releases
 * what was prepared and the state is exactly as it was.
 */
#ifndef FOCALD_STATE_H
#define FOCALD_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "history.h"

#define ST_NAME_MAX 64

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

typedef struct st_map st_map;
typedef struct st_dataset st_dataset;
typedef struct st_run st_run;

/* One entry of a dataset's review audit trail: a record the dataset owns. */
typedef struct st_review {
  int64_t seq;          /* review_log.seq: the order of changes */
  int64_t batch_seq;    /* the newest batch logged before the change */
  int32_t prev;         /* index of the sample's previous entry (st_review_at), or -1 */
  uint32_t key;
  int64_t at;           /* unix milliseconds */
  uint8_t from, to;     /* st_status */
  char *reviewer;
  char *label_before;   /* JSON, or NULL */
  char *label_after;    /* JSON, or NULL */
  char *note;
} st_review;

/* A review queue: samples fixed at build time, in order. A record the dataset owns. */
typedef struct st_queue {
  int64_t id;
  char name[ST_NAME_MAX + 1];
  int64_t created_at;   /* unix seconds */
  char *params;         /* JSON: how it was built */
  uint32_t n;
  uint32_t *keys;
  float *scores;
} st_queue;

/* Creates an empty map of datasets. Returns NULL on allocation failure. */
st_map *st_map_new(void);
/* How many points of a series (hist_series_push) each (run, sample) keeps: 0
 * (the default) keeps none and allocates nothing. Set before the first run is
 * loaded or created; runs keep the value they were made with. */
void st_map_set_series_points(st_map *m, int points);
int st_map_series_points(const st_map *m);
/* Frees the map and every dataset. Accepts NULL. */
void st_map_free(st_map *m);

/* ------------------------------------------------------------------ readers
 * A dataset is read between st_acquire and st_release, under its read lock;
 * every function taking a const st_dataset (and its runs) is for that window,
 * or for the writer thread. */

/* The dataset named name (or with id id), read-locked; NULL if there is none. */
const st_dataset *st_acquire(st_map *m, const char *name);
const st_dataset *st_acquire_id(st_map *m, int64_t id);
/* Releases a dataset from st_acquire. Accepts NULL. */
void st_release(const st_dataset *ds);
/* Calls fn for every dataset, read-locked, in name order. */
void st_map_each(st_map *m, void (*fn)(const st_dataset *ds, void *arg), void *arg);

const char *st_name(const st_dataset *ds);
int64_t st_id(const st_dataset *ds);          /* datasets.id: never reused */
int64_t st_created_at(const st_dataset *ds);  /* unix seconds */
uint32_t st_nsamples(const st_dataset *ds);
uint64_t st_observations(const st_dataset *ds); /* over every run */

/* A sample's key, or -1. */
int64_t st_key(const st_dataset *ds, const char *id);
/* Sample key's id, status, meta (JSON object text, or NULL), corrected label (JSON, or NULL). Borrowed. */
const char *st_sample_id(const st_dataset *ds, uint32_t key);
int st_sample_status(const st_dataset *ds, uint32_t key);
const char *st_meta(const st_dataset *ds, uint32_t key);
const char *st_corrected(const st_dataset *ds, uint32_t key);
/* The largest ema_loss of the sample over its runs (0 if never seen). */
float st_max_ema(const st_dataset *ds, uint32_t key);
/* Whether a confirmed sample has become clearly harder: its ema_loss (max over
 * runs) above factor times its value at confirmation. */
int st_reconsider(const st_dataset *ds, uint32_t key, double factor);
/* The label a sample was last trained with: in run r, or the run with the latest step when r is NULL (-1 none). */
int32_t st_training_label(const st_dataset *ds, const st_run *r, uint32_t key);

int st_nruns(const st_dataset *ds);
const st_run *st_run_at(const st_dataset *ds, int i);
const st_run *st_find_run(const st_dataset *ds, const char *name);
const char *st_run_name(const st_run *r);
int32_t st_run_classes(const st_run *r);
uint32_t st_run_samples(const st_run *r);       /* samples it observed */
uint64_t st_run_observations(const st_run *r);
/* The latest step of any of the run's batches; 0 when none had a step. */
int st_run_last_step(const st_run *r, int64_t *step /* OUT */);
/* A sample's history in run r (seen == 0: never observed in r). */
void st_history(const st_run *r, uint32_t key, hist_rec *h /* OUT */);
/* label_issue: run r's rule (hist_label_issue_rule over its samples' scores and confidences), recomputed
 * when its observations have changed. Under ds's read lock; the rule stays as it is while that is held. */
const hist_li_rule *st_label_issue_rule(const st_dataset *ds, const st_run *r);
/* The view of key's history in r, label_issue included. Under ds's read lock. */
void st_history_view(const st_dataset *ds, const st_run *r, uint32_t key, hist_view *v /* OUT */);
/* run=*: each field the mean over the runs that observed the sample, except
 * seen (the sum), first_step (the least), last_step (the greatest), label
 * (the run with the latest step's) and label_issue (any run's). */
void st_history_all(const st_dataset *ds, uint32_t key, hist_view *v /* OUT */);
/* The view of key's history in run r (st_history_view), or over every run when r is NULL
 * (st_history_all). Under ds's read lock. */
void st_history_of(const st_dataset *ds, const st_run *r, uint32_t key, hist_view *v /* OUT */);
/* What the data map draws of a sample: its cartography coordinates and colour. */
typedef struct st_map_view {
  double seen, confidence, variability, correctness;
  int32_t label; /* -1 none */
} st_map_view;
/* The data map's fields of key in run r, or over every run when r is NULL:
 * the same numbers as st_history_view and st_history_all (the same float
 * arithmetic, summed in the same order) without computing the other fields.
 * seen 0: no run (or not r) observed the sample. */
void st_map_view_of(const st_dataset *ds, const st_run *r, uint32_t key, st_map_view *v /* OUT */);
/* Observations of the sample in r that sent a label its relabel had replaced. */
uint32_t st_stale_labels(const st_run *r, uint32_t key);
/* A sample's series in a run (see hist_series_push): its points, borrowed
 * (valid under the dataset's read lock), oldest first; point j is the
 * sample's observation first + j * stride in the run (0-based: first is 0
 * unless the series began after the sample's first observations, when it was
 * off or the snapshot predates it). */
typedef struct st_series_view {
  const hist_point *points;
  uint32_t len;
  uint64_t stride;
  uint32_t first;
} st_series_view;
/* Fills *v with key's series in r; returns its length (0: none). */
uint32_t st_series(const st_run *r, uint32_t key, st_series_view *v /* OUT */);
/* The sample's latest observations in r, newest first, into out; returns how many (0 .. HIST_RECENT). */
int st_recent(const st_run *r, uint32_t key, hist_recent out[HIST_RECENT]);

/* The audit trail, in commit order. */
int st_nreviews(const st_dataset *ds);
const st_review *st_review_at(const st_dataset *ds, int i);
/* The index of the sample's newest entry, or -1; older ones follow st_review.prev. */
int32_t st_last_review(const st_dataset *ds, uint32_t key);

int st_nqueues(const st_dataset *ds);
const st_queue *st_queue_at(const st_dataset *ds, int i);
const st_queue *st_find_queue(const st_dataset *ds, const char *name);

/* ---- ranking ---- */

/* The statuses a query lists by default: those still waiting for a decision. */
#define ST_UNDECIDED_MASK ((1u << ST_OPEN) | (1u << ST_QUEUED) | (1u << ST_IN_REVIEW))

enum { ST_LABEL_ISSUE_ANY = 0, ST_LABEL_ISSUE_YES, ST_LABEL_ISSUE_NO };

typedef struct st_query {
  int by;             /* hist_field */
  int order;          /* hist_order: HIST_ORDER_DEFAULT is the field's own */
  const st_run *run;  /* one run, or NULL for the mean over runs */
  int has_label;
  int32_t label;
  int label_issue;    /* ST_LABEL_ISSUE_ANY, or only the samples flagged (YES) or not (NO) */
  uint32_t min_seen;
  uint32_t status_mask; /* bit per st_status; 0 = every status */
  double reconsider;    /* > 0: confirmed samples that st_reconsider flags pass too */
  int k;
  int has_cursor;     /* continue after (cursor_score, cursor_id) in the order */
  double cursor_score;
  const char *cursor_id;
  const uint64_t *skip; /* bitmap by key, or NULL: the samples whose bit is set are left out (an export's */
  uint32_t skip_n;      /* samples already written); keys from skip_n on have no bit */
} st_query;

typedef struct st_hit {
  uint32_t key;
  double score;
} st_hit;

/* The first k samples matching q in its order (ties by id), after the
 * cursor if any, and not in q->skip. out has room for q->k hits. Returns the
 * number found. */
int st_top(const st_dataset *ds, const st_query *q, st_hit *out);
/* Whether key matches q's filters now (its skip and cursor aside), with its score in *score: what st_top
 * would rank it by. An export checks again, under a later lock, the hits of a query it writes in parts. */
int st_match(const st_dataset *ds, const st_query *q, uint32_t key, double *score /* OUT */);

/* Quantiles (p in [0,1], ascending) of mean_loss over the run's observed
 * samples, written to out[np]. Returns 0 or -1 (out of memory). */
int st_loss_quantiles(const st_dataset *ds, const st_run *r, const double *p, int np, double *out);

/* Totals over every dataset, for /metrics. */
typedef struct st_totals {
  uint64_t datasets, samples, observations;
} st_totals;
void st_map_totals(st_map *m, st_totals *t /* OUT */);

/* ------------------------------------------------------------------ the writer
 * Writer thread only. A group of changes is prepared (st_prepare_*), recorded
 * in one transaction, then applied (st_apply_*) in the order prepared if the
 * transaction commits; st_tx_end follows either way. Until the applies, the
 * state readers see is unchanged. */

/* Ends a group: releases what it prepared and did not apply (new datasets and runs, reservations). */
void st_tx_end(st_map *m);

/* A committed dataset by id or name (unlocked: the writer's own view). */
st_dataset *st_w_find(st_map *m, int64_t id);
st_dataset *st_w_find_name(st_map *m, const char *name);
/* The committed dataset with the least id >= id, or NULL: datasets in id order. */
st_dataset *st_w_next(st_map *m, int64_t id);

/* ---- batches ---- */

#define ST_NEW_KEY UINT32_MAX

/* What applying one batch needs, found and reserved by st_prepare_batch. */
typedef struct st_batch_prep {
  st_dataset *ds;     /* committed, or new in this group */
  st_run *run;
  uint32_t n;
  uint32_t *keys;     /* n: each id's key, or ST_NEW_KEY for an id new before this group; owned */
} st_batch_prep;

/* The rows a batch refers to: what its datasets and runs rows say. */
typedef struct st_batch_ref {
  int64_t ds_id, ds_created;
  const char *ds_name;
  int64_t run_id, run_created;
  const char *run_name;
  int32_t classes;
} st_batch_ref;

/* Finds or creates (detached until applied) the dataset and run, looks up the
 * n ids and reserves room for the new ones. Returns 0, or -1 when memory runs
 * out (nothing to undo but st_tx_end). */
int st_prepare_batch(st_map *m, const st_batch_ref *ref, uint32_t n, char *const *ids, st_batch_prep *p /* OUT */);
/* Applies a prepared batch logged as seq: each observation to its row (rows
 * and class means that already hold seq are skipped: a replayed batch), then
 * meta[i] to sample meta_ids[i] (taking ownership of every meta_json string;
 * a batch older than the sample's meta_seq leaves it). corrected labels for
 * stale_labels come from the review state in force when seq was logged.
 * Frees p->keys. */
void st_apply_batch(st_map *m, st_batch_prep *p, int64_t seq, char *const *ids, const hist_obs *obs, const hist_params *hp,
                    int nmeta, const char *const *meta_ids, char **meta_json);
/* A request of many segments is applied as one change: st_apply_lock takes the write lock of the dataset p
 * prepares for (linking it in when the group created it) and returns it, st_apply_segment applies each
 * segment under it as st_apply_batch would, st_apply_unlock releases it. A reader sees every segment of the
 * request or none. */
st_dataset *st_apply_lock(st_map *m, const st_batch_prep *p);
void st_apply_segment(st_batch_prep *p, int64_t seq, char *const *ids, const hist_obs *obs, const hist_params *hp, int nmeta,
                      const char *const *meta_ids, char **meta_json);
void st_apply_unlock(st_dataset *ds);
/* Frees a prepared batch's keys (a batch that is not applied). Accepts a zeroed prep. */
void st_batch_prep_free(st_batch_prep *p);

/* ---- datasets ---- */

/* Removes dataset id and frees it once its readers are done; *samples and
 * *observations get what it held. */
void st_apply_delete(st_map *m, int64_t id, int64_t *samples /* OUT */, int64_t *observations /* OUT */);

/* ---- review state ---- */

/* Room for n more audit entries in ds (and one more queue with a queue). Returns 0 or -1. */
int st_prepare_reviews(st_map *m, st_dataset *ds, int n);
int st_prepare_queue(st_map *m, st_dataset *ds);
/* Sets a sample's status and appends its audit entry. Takes ownership of
 * corrected (the label in force from now, or NULL) and of e's strings; e->prev
 * is set here. Cannot fail after st_prepare_reviews. */
void st_apply_status(st_dataset *ds, uint32_t key, int to, char *corrected, float confirm, st_review *e);
/* Replaces a sample's meta (takes ownership; NULL clears) as of batch meta_seq. */
void st_apply_meta(st_dataset *ds, uint32_t key, char *meta, int64_t meta_seq);
/* Adds a queue (takes ownership) with the status changes of its n samples (keys; changes[i] as for
 * st_apply_status, with no corrected label: their strings are taken and the entries zeroed), under one
 * write lock: a reader sees the queue and its samples queued, or neither. Cannot fail after
 * st_prepare_queue and st_prepare_reviews. */
void st_apply_queue(st_dataset *ds, st_queue *q, uint32_t n, const uint32_t *keys, st_review *changes);
/* Removes and frees queue name with the status changes that release its samples, under one write lock. */
void st_apply_queue_delete(st_dataset *ds, const char *name, uint32_t n, const uint32_t *keys, st_review *changes);
/* Frees a queue that was never added. Accepts NULL. */
void st_queue_free(st_queue *q);
/* The sample's corrected class as it stood when batch seq was logged, as
 * st__class_of gives it (-1 when not relabelled then, or relabelled to something
 * not a class index). */
int32_t st_corrected_at(const st_dataset *ds, uint32_t key, int64_t seq);
/* The confirm score of a sample (NaN when none) and its meta_seq: what its samples row holds. */
float st_confirm_score(const st_dataset *ds, uint32_t key);
int64_t st_meta_seq(const st_dataset *ds, uint32_t key);

/* ---- the snapshot (store_snap.c writes these rows) ----
 * Keys below st_persisted are in the samples table; a samples row is written
 * for every key in order, so the table holds a prefix of the keys. */

uint32_t st_persisted(const st_dataset *ds);
void st_set_persisted(st_dataset *ds, uint32_t persisted);
/* Within a group: the prefix of samples rows written so far (st_persisted, or
 * further when an op kept in the group wrote more); st_prefix_written records
 * what an op the group keeps wrote (0, or -1 when memory runs out). st_tx_end
 * forgets it. */
uint32_t st_prefix(const st_dataset *ds);
int st_prefix_written(st_map *m, st_dataset *ds, uint32_t upto);
/* The first key >= from whose meta changed since its row was written, or -1. */
int64_t st_next_meta_dirty(const st_dataset *ds, uint32_t from);
void st_meta_clean(st_dataset *ds, uint32_t key);
/* The first key >= from of run i whose history changed since it was written, or -1. */
int64_t st_next_dirty(const st_dataset *ds, int run, uint32_t from);
void st_row_clean(st_dataset *ds, int run, uint32_t key);
/* Whether anything of ds changed since it was last written. */
int st_any_dirty(const st_dataset *ds);

int64_t st_run_id(const st_run *r);

/* A history row as stored. */
#define ST_RING_BYTES (2 + HIST_RECENT * (int)sizeof(hist_recent))
typedef struct st_row {
  hist_rec h;
  int64_t seq;              /* the last batch applied to the row */
  uint32_t stale_labels;
  unsigned char ring[ST_RING_BYTES]; /* head, count, then the ring's entries */
  uint32_t series_count;    /* the series' observations (0: none) */
  uint8_t series_shift;     /* log2 of its stride */
  const hist_point *series; /* its points, borrowed: st_row_save's point into the run, a loader's into its buffer */
} st_row;

void st_row_save(const st_run *r, uint32_t key, st_row *out /* OUT */);

/* The run's class means as of its last batch: copies for a snapshot. */
typedef struct st_classes {
  int64_t ds_id, run_id;
  int64_t seq;          /* the last batch they hold */
  int32_t c;
  double *sum;
  uint64_t *count;
} st_classes;
/* Copies run r's class means when they changed since they were last saved
 * (out->c = 0 when they did not). Returns 0 or -1 (out of memory). */
int st_classes_copy(const st_dataset *ds, const st_run *r, st_classes *out /* OUT */);
void st_classes_free(st_classes *c);
/* Marks run run_id's class means saved as of seq (after the commit that holds them). */
void st_classes_saved(st_map *m, int64_t ds_id, int64_t run_id, int64_t seq);

/* ---- loading ----
 * At start-up, on the main thread before any reader: datasets, runs, samples
 * in key order, then rows, class means, reviews and queues. Each returns 0, or
 * -1 with why written into err (the row is refused: the database is not what
 * focald wrote). */

int st_load_dataset(st_map *m, int64_t id, const char *name, int64_t created_at, char *err, size_t errn);
int st_load_run(st_map *m, int64_t ds_id, int64_t id, const char *name, int32_t classes, int64_t created_at,
                int64_t cls_seq, char *err, size_t errn);
/* Samples come in key order from 0, without holes. */
int st_load_sample(st_map *m, int64_t ds_id, uint32_t key, const char *id, const char *meta, int status,
                   const char *corrected, float confirm, int64_t meta_seq, char *err, size_t errn);
int st_load_row(st_map *m, int64_t run_id, uint32_t key, const st_row *row, char *err, size_t errn);
int st_load_classes(st_map *m, int64_t run_id, int32_t cls, double sum, uint64_t count, char *err, size_t errn);
/* Takes ownership of e's strings (freed on failure too). */
int st_load_review(st_map *m, int64_t ds_id, st_review *e, char *err, size_t errn);
/* Takes ownership of q (freed on failure too). Its keys must be samples of the dataset. */
int st_load_queue(st_map *m, int64_t ds_id, st_queue *q, char *err, size_t errn);
/* Ends loading: frees the index of runs by id that the loaders use. */
void st_load_done(st_map *m);

#endif /* FOCALD_STATE_H */
