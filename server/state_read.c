/* state_read.c — what readers ask of a dataset: its samples, runs, history
 * rows, reviews and queues. Callers hold the dataset's read lock (st_acquire);
 * nothing here changes the state but label_issue's cached rule, which has
 * a lock of its own.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state_core.h"

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
  return st__max_ema(ds, key);
}

int st_reconsider(const st_dataset *ds, uint32_t key, double factor) {
  return st__reconsider(ds, key, factor);
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

void st_history(const st_run *r, uint32_t key, hist_rec *h) {
  if (key >= r->cap) {
    hist_init(h);
    return;
  }
  st__row_get(r, key, h);
}

/* A flagged key's cell as one number, label * c + the class named (c classes, at most ST_LI_CELL_CLASSES), or
 * UINT32_MAX when it falls into none: no class label, or no other class named. */
#define ST_LI_CELL_CLASSES 65535
static uint32_t li_cell(const st_run *r, uint32_t key) {
  const int32_t g = r->label[key], k = r->other_class[key], c = r->cls.c;
  if (g < 0 || g >= c || k < 0 || k >= c || k == g) return UINT32_MAX;
  return (uint32_t)g * (uint32_t)c + (uint32_t)k;
}

#define LI_ECHO 0x80000000u /* in a cell's count: the cell is an echo */

/* The index of cell in the sorted cells[0, n), or n when it is not there. */
static uint32_t li_find(const uint32_t *cells, uint32_t n, uint32_t cell) {
  uint32_t a = 0, b = n;
  while (a < b) {
    const uint32_t mid = a + (b - a) / 2;
    if (cells[mid] < cell) a = mid + 1;
    else b = mid;
  }
  return a < n && cells[a] == cell ? a : n;
}

/* Writes the run's label_issue into li_flag for keys below lim: its rule (li_rule), then echoes
 * (hist_li_echo) left out. The cells of the flagged keys are sorted (two counting sorts in li_order's two
 * halves: by the class named, then stably by label) and counted; each distinct cell's reverse is found by
 * binary search, and, when some cells are echoes, a last pass clears the flags of their keys. Linear in the
 * keys, no allocation. */
static void li_decide(st_run *w, uint32_t lim) {
  const int32_t c = w->cls.c;
  const int cells_kept = c >= 2 && c <= ST_LI_CELL_CLASSES;
  uint64_t flagged = 0;
  uint32_t *by_label = w->li_start, *by_named = c > 0 ? w->li_start + c + 2 : NULL;
  uint32_t *cells = w->li_order, *tmp = w->li_order + w->cap; /* the column holds two entries a key */
  uint32_t n = 0;
  if (cells_kept) memset(w->li_start, 0, 2 * ((size_t)c + 2) * sizeof *w->li_start);
  for (uint32_t key = 0; key < lim; key++) {
    const float score = w->li_rule.early ? st__li_early_score(w, key) : st__li_score(w, key);
    const int f = w->scored_n[key] && hist_li_flagged(&w->li_rule, score, w->conf_mean[key]);
    w->li_flag[key] = (uint8_t)f;
    if (!f) continue;
    flagged++;
    const uint32_t cell = cells_kept ? li_cell(w, key) : UINT32_MAX;
    if (cell == UINT32_MAX) continue;
    tmp[n++] = cell;
    by_label[cell / (uint32_t)c + 2]++;
    by_named[cell % (uint32_t)c + 2]++;
  }
  if (n == 0) return;
  for (int32_t g = 2; g < c + 2; g++) {
    by_label[g] += by_label[g - 1];
    by_named[g] += by_named[g - 1];
  }
  for (uint32_t i = 0; i < n; i++) cells[by_named[tmp[i] % (uint32_t)c + 1]++] = tmp[i];
  for (uint32_t i = 0; i < n; i++) tmp[by_label[cells[i] / (uint32_t)c + 1]++] = cells[i];
  /* tmp is sorted: the distinct cells go to cells[0, d) and their counts to tmp[0, d) (d <= i: what is
   * overwritten has been read) */
  uint32_t d = 0;
  for (uint32_t i = 0; i < n;) {
    uint32_t end = i;
    const uint32_t cell = tmp[i];
    while (end < n && tmp[end] == cell) end++;
    cells[d] = cell;
    tmp[d++] = end - i < LI_ECHO ? end - i : LI_ECHO - 1; /* 2^31 samples in one cell: no more is told */
    i = end;
  }
  uint32_t echoes = 0;
  for (uint32_t j = 0; j < d; j++) {
    const uint32_t g = cells[j] / (uint32_t)c, k = cells[j] % (uint32_t)c;
    const uint32_t r = li_find(cells, d, k * (uint32_t)c + g);
    const uint32_t reverse = r < d ? tmp[r] & ~LI_ECHO : 0;
    if (hist_li_echo(tmp[j] & ~LI_ECHO, reverse, flagged, c)) {
      tmp[j] |= LI_ECHO;
      echoes++;
    }
  }
  if (echoes == 0) return; /* uniform noise, or none: nothing to leave out */
  /* the echoes, in order, to tmp[0, echoes) (e <= j: what is overwritten has been read), and by_label[g]
   * now says whether label g has one, so that most keys need no search */
  uint32_t e = 0;
  memset(by_label, 0, ((size_t)c + 2) * sizeof *by_label);
  for (uint32_t j = 0; j < d; j++)
    if (tmp[j] & LI_ECHO) {
      by_label[cells[j] / (uint32_t)c] = 1;
      tmp[e++] = cells[j];
    }
  for (uint32_t key = 0; key < lim; key++) {
    if (!w->li_flag[key]) continue;
    const int32_t g = w->label[key];
    if (g < 0 || g >= c || !by_label[g]) continue;
    const uint32_t cell = li_cell(w, key);
    if (cell != UINT32_MAX && li_find(tmp, echoes, cell) < echoes) w->li_flag[key] = 0;
  }
}

const hist_li_rule *st_label_issue_rule(const st_dataset *ds, const st_run *r) {
  st_run *w = (st_run *)r; /* the cache only: the history is not touched */
  /* the common case, without the lock: the rule is published before the count it was computed at, and
   * only a writer, which excludes every reader, changes the count */
  if (__atomic_load_n(&w->li_observations, __ATOMIC_ACQUIRE) == r->observations) return &w->li_rule;
  pthread_mutex_lock(&w->li_lock);
  if (w->li_observations != r->observations) {
    /* both scores' histograms, and how many samples the latest prediction names as labelled: which score
     * decides is known only at the end */
    uint64_t scores[HIST_SCORE_BINS] = {0}, early[HIST_SCORE_BINS] = {0}, confidences[HIST_CONF_BINS] = {0};
    uint64_t scored = 0, as_labelled = 0, uncounted = 0;
    const uint32_t lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
    for (uint32_t key = 0; key < lim; key++)
      if (r->scored_n[key]) {
        scored++;
        as_labelled += r->last_correct[key] == 1;
        uncounted += r->early_n[key] == HIST_EARLY_UNKNOWN;
        scores[hist_score_bin(st__li_score(r, key))]++;
        early[hist_score_bin(st__li_early_score(r, key))]++;
        confidences[hist_conf_bin(r->conf_mean[key])]++;
      }
    /* a run with histories from before schema 10 keeps the whole history's rule: it answers as it did */
    const int fitted = uncounted == 0 && hist_li_fitted(as_labelled, scored);
    hist_label_issue_rule(fitted ? early : scores, confidences, fitted, &w->li_rule);
    li_decide(w, lim);
    __atomic_store_n(&w->li_observations, r->observations, __ATOMIC_RELEASE);
  }
  pthread_mutex_unlock(&w->li_lock);
  return &w->li_rule;
}

void st_history_view(const st_dataset *ds, const st_run *r, uint32_t key, hist_view *v) {
  hist_rec h;
  st_history(r, key, &h);
  hist_view_of(&h, v);
  v->label_issue = st__li_flagged(r, st_label_issue_rule(ds, r), key);
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
    st__row_get(r, key, &one);
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
    v->early_label_issue_score += w.early_label_issue_score;
    v->aum += w.aum;
    v->label_issue |= st__li_flagged(r, st_label_issue_rule(ds, r), key);
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
  v->early_label_issue_score /= runs;
  v->aum /= runs;
}

void st_history_of(const st_dataset *ds, const st_run *r, uint32_t key, hist_view *v) {
  if (r) {
    st_history_view(ds, r, key, v);
  } else {
    st_history_all(ds, key, v);
  }
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

int32_t st_corrected_at(const st_dataset *ds, uint32_t key, int64_t seq) {
  if (key >= ds->nsamples) return -1;
  for (int32_t i = ds->last_review[key]; i >= 0; i = ds->reviews[i].prev) {
    const st_review *e = &ds->reviews[i];
    if (e->batch_seq < seq) return e->to == ST_RELABELLED ? st__class_of(e->label_after) : -1;
  }
  return -1;
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
