/* state_top.c — the top-k ranking of a dataset's samples by one history field,
 * kept in a bounded heap while the field's column is read once.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "state_core.h"

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
  case HF_LABEL_ISSUE_SCORE: return st__li_score(r, key);
  case HF_EARLY_LABEL_ISSUE_SCORE: return st__li_early_score(r, key);
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

/* Whether key is in q->skip. */
static inline int skipped(const st_query *q, uint32_t key) {
  return q->skip && key < q->skip_n && (q->skip[key >> 6] >> (key & 63)) & 1;
}

/* Whether (score, id) comes strictly after the cursor in the answer's order. */
static inline int after_cursor(const st_query *q, int desc, double score, const char *id) {
  if (score != q->cursor_score) return desc ? score < q->cursor_score : score > q->cursor_score;
  return strcmp(id, q->cursor_id) > 0;
}

/* Whether key's review status is one q asks for (or q asks for samples due for reconsideration and it is). */
__attribute__((always_inline)) static inline int status_passes(const st_dataset *ds, const st_query *q, uint32_t key) {
  return !q->status_mask || (q->status_mask & (1u << ds->status[key])) ||
         (q->reconsider > 0 && st__reconsider(ds, key, q->reconsider));
}

/* Whether key, in run r, passes q's filters on status, label and label issue (li_rule: r's rule, when q
 * filters by it). The filters every path of the ranking applies alike: st_top's two loops and st_match. */
__attribute__((always_inline)) static inline int one_run_passes(const st_dataset *ds, const st_run *r, const st_query *q,
                                                                 const hist_li_rule *li_rule, uint32_t key) {
  if (!status_passes(ds, q, key)) return 0;
  if (q->has_label && r->label[key] != q->label) return 0;
  if (q->label_issue && (q->label_issue == ST_LABEL_ISSUE_YES) != st__li_flagged(r, li_rule, key)) return 0;
  return 1;
}

/* The mean over the runs that saw key of the ranked field (their seen summed for by=seen), in *score; 0
 * when no run saw it or it was seen fewer than q->min_seen times. *label is the training label of the run
 * with the latest step, *flagged whether any run flags it (only when q filters by it). */
__attribute__((always_inline)) static inline int all_runs_value(const st_dataset *ds, const st_query *q, uint32_t key,
                                                                 double *score, int32_t *label, int *flagged) {
  int runs = 0;
  uint32_t seen = 0;
  double sum = 0.0;
  int64_t label_step = INT64_MIN;
  *label = -1;
  *flagged = 0;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    if (key >= r->cap || r->seen[key] == 0) continue;
    runs++;
    *flagged |= q->label_issue && st__li_flagged(r, st_label_issue_rule(ds, r), key);
    seen += r->seen[key];
    sum += run_value(r, key, q->by);
    int64_t at = r->has_step[key] ? r->last_step[key] : INT64_MIN + 1;
    if (r->label[key] >= 0 && at >= label_step) {
      *label = r->label[key];
      label_step = at;
    }
  }
  if (!runs || seen < q->min_seen) return 0;
  *score = q->by == HF_SEEN ? (double)seen : sum / runs;
  return 1;
}

/* Whether key passes q's filters when its score over every run is known (see all_runs_value). */
__attribute__((always_inline)) static inline int all_runs_pass(const st_dataset *ds, const st_query *q, uint32_t key,
                                                                int32_t label, int flagged) {
  if (!status_passes(ds, q, key)) return 0;
  if (q->has_label && label != q->label) return 0;
  if (q->label_issue && (q->label_issue == ST_LABEL_ISSUE_YES) != (flagged != 0)) return 0;
  return 1;
}

/* One run, the common case: the ranked field's column read directly, most
 * samples turned away by one comparison with the kept hits' worst score.
 * Every key below nsamples is a sample: the state has no holes. */
static void top_one_run(const st_dataset *ds, const st_run *r, const st_query *q, ranker *rk) {
  const uint32_t lim = ds->nsamples < r->cap ? ds->nsamples : r->cap;
  const hist_li_rule *li_rule = q->label_issue ? st_label_issue_rule(ds, r) : NULL;
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
    if (seen < q->min_seen || seen == 0 || skipped(q, key)) continue;
    const double score = col ? (double)col[key] : run_value(r, key, q->by);
    if (!may_enter(rk, score, key) || !one_run_passes(ds, r, q, li_rule, key)) continue;
    if (q->has_cursor && !after_cursor(q, rk->desc, score, ds->ids[key])) continue;
    offer(rk, key, score);
  }
}

/* run=* over several runs: the mean of the ranked field over the runs that saw the sample. */
static void top_all_runs(const st_dataset *ds, const st_query *q, ranker *rk) {
  for (uint32_t key = 0; key < ds->nsamples; key++) {
    if (skipped(q, key)) continue;
    double score = 0.0;
    int32_t label;
    int flagged;
    if (!all_runs_value(ds, q, key, &score, &label, &flagged)) continue;
    if (!may_enter(rk, score, key) || !all_runs_pass(ds, q, key, label, flagged)) continue;
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

int st_match(const st_dataset *ds, const st_query *q, uint32_t key, double *score) {
  if (key >= ds->nsamples) return 0;
  const st_run *r = q->run ? q->run : ds->nruns == 1 ? ds->runs[0] : NULL;
  if (r) {
    if (key >= r->cap || r->seen[key] == 0 || r->seen[key] < q->min_seen) return 0;
    *score = run_value(r, key, q->by);
    return one_run_passes(ds, r, q, q->label_issue ? st_label_issue_rule(ds, r) : NULL, key);
  }
  int32_t label;
  int flagged;
  return all_runs_value(ds, q, key, score, &label, &flagged) && all_runs_pass(ds, q, key, label, flagged);
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
