/* review.c — review states, their request bodies, and how a review queue is chosen.
 *
 * Transitions: a sample waiting for a decision (open, queued, in_review) may
 * move to any status; a decision (relabelled, confirmed, dismissed) may only
 * be reopened (open) or taken back into review (in_review), and a relabel may
 * be replaced by another. Anything else is a 409: a decision is not undone by
 * queueing it again by accident.
 */
#include "review.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "history.h"
#include "idhash.h"
#include "jtext.h"

int review_allowed(int from, int to) {
  if (from < 0 || from >= ST_STATUS_COUNT || to < 0 || to >= ST_STATUS_COUNT) return 0;
  const int undecided = from == ST_OPEN || from == ST_QUEUED || from == ST_IN_REVIEW;
  if (undecided) return from != to;
  if (to == ST_OPEN || to == ST_IN_REVIEW) return 1;
  return from == ST_RELABELLED && to == ST_RELABELLED;
}

static const char *kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER:
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

static json_t *load_object(const char *body, size_t len, problem *err) {
  json_error_t je;
  int oom;
  json_t *root = jtext_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &oom);
  if (!root && oom) {
    problem_set(err, P_INTERNAL, NULL, "out of memory reading the body");
    return NULL;
  }
  if (!root) {
    problem_set(err, P_BAD_JSON, NULL, "%s (line %d, column %d)", je.text, je.line, je.column);
    return NULL;
  }
  if (!json_is_object(root)) {
    problem_set(err, P_INVALID_FIELD, "", "the body must be a JSON object, not %s", kind(root));
    json_decref(root);
    return NULL;
  }
  return root;
}

/* Copies an optional string field of at most max bytes. */
static int opt_string(const json_t *root, const char *name, size_t max, char **out, problem *err) {
  const json_t *v = json_object_get(root, name);
  char ptr[64];
  snprintf(ptr, sizeof ptr, "/%s", name);
  if (!v || json_is_null(v)) return 0;
  if (!json_is_string(v))
    return problem_set(err, P_INVALID_FIELD, ptr, "%s must be a string of at most %zu bytes", name, max);
  if (json_string_length(v) > max)
    return problem_set(err, P_TOO_LARGE, ptr, "%s is %zu bytes long; at most %zu are taken", name, json_string_length(v), max);
  if (!(*out = strdup(json_string_value(v)))) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  return 0;
}

/* A class index or a non-empty class name (the index's range is checked by label_in_range). */
static int one_label(const json_t *v) {
  return json_is_integer(v) || (json_is_string(v) && json_string_length(v) > 0);
}

/* A corrected class index must be one a batch's label can be: batches hold at
 * most 2^31 elements, so their labels are 0 to INT32_MAX. A larger index could
 * never be compared with what training sends (stale_labels), so it is refused
 * as a batch's label out of range is; with any_index (the shared log) it passes.
 * Names (strings) pass. */
static int label_in_range(const json_t *v, int any_index, const char *ptr, const char *name, problem *err) {
  if (!json_is_integer(v)) return 0;
  const json_int_t i = json_integer_value(v);
  if (i >= 0 && (i <= INT32_MAX || any_index)) return 0;
  return problem_set(err, P_LABEL_OUT_OF_RANGE, ptr, "%s = %" JSON_INTEGER_FORMAT " is out of range: a class index is 0 to %d",
                     name, json_integer_value(v), INT32_MAX);
}

/* any_index: the shared log's reviews, written by any version (review_decode_logged). */
static int decode_review(const char *body, size_t len, int any_index, review_op *op, problem *err) {
  static const char *const fields[] = {"status", "label", "reviewer", "note", NULL};
  json_t *root = load_object(body, len, err);
  if (!root) return -1;
  int rc = -1;
  if (dec_only_fields(root, fields, "", err)) goto out;
  const json_t *st = json_object_get(root, "status");
  if (!st) {
    problem_set(err, P_MISSING_FIELD, "/status", "status is required");
    goto out;
  }
  if (!json_is_string(st) || (op->to = st_status_parse(json_string_value(st))) < 0) {
    problem_set(err, P_INVALID_FIELD, "/status", "status must be one of open, queued, in_review, relabelled, confirmed, dismissed");
    goto out;
  }
  const json_t *label = json_object_get(root, "label");
  if (op->to == ST_RELABELLED) {
    if (!label || json_is_null(label)) {
      problem_set(err, P_MISSING_FIELD, "/label", "relabelled needs the corrected label");
      goto out;
    }
    /* a class index, a class name, or a multi-label list of them: whatever the training pipeline uses */
    if (!one_label(label) && !json_is_array(label)) {
      problem_set(err, P_INVALID_FIELD, "/label", "label must be a class index, a class name or a list of them");
      goto out;
    }
    if (label_in_range(label, any_index, "/label", "label", err)) goto out;
    size_t i;
    const json_t *el;
    json_array_foreach(label, i, el) {
      char ptr[48], name[48];
      snprintf(ptr, sizeof ptr, "/label/%zu", i);
      snprintf(name, sizeof name, "label[%zu]", i);
      if (!one_label(el)) {
        problem_set(err, P_INVALID_FIELD, ptr, "%s must be a class index or a class name", name);
        goto out;
      }
      if (label_in_range(el, any_index, ptr, name, err)) goto out;
    }
    op->label = jtext_dump(label, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!op->label) {
      problem_set(err, P_INTERNAL, NULL, "out of memory");
      goto out;
    }
    if (strlen(op->label) > 4096) {
      problem_set(err, P_TOO_LARGE, "/label", "label is larger than 4096 bytes as compact JSON");
      goto out;
    }
  } else if (label && !json_is_null(label)) {
    problem_set(err, P_INVALID_FIELD, "/label", "label goes only with status relabelled");
    goto out;
  }
  if (opt_string(root, "reviewer", 128, &op->reviewer, err) || opt_string(root, "note", 4096, &op->note, err)) goto out;
  rc = 0;
out:
  json_decref(root);
  return rc;
}

int review_decode(const char *body, size_t len, review_op *op, problem *err) {
  return decode_review(body, len, 0, op, err);
}

int review_decode_logged(const char *body, size_t len, review_op *op, problem *err) {
  return decode_review(body, len, 1, op, err);
}

int meta_decode(const char *body, size_t len, meta_op *op, problem *err) {
  json_t *root = load_object(body, len, err);
  if (!root) return -1;
  int rc = -1;
  if (dec_meta_check(root, "", err)) goto out;
  op->meta = jtext_dump(root, JSON_COMPACT | JSON_SORT_KEYS);
  if (!op->meta) {
    problem_set(err, P_INTERNAL, NULL, "out of memory");
    goto out;
  }
  if (strlen(op->meta) > REQ_META_MAX) {
    problem_set(err, P_TOO_LARGE, "", "meta is larger than %d bytes as compact JSON", REQ_META_MAX);
    goto out;
  }
  rc = 0;
out:
  json_decref(root);
  return rc;
}

static int int_in(const json_t *v, const char *ptr, const char *name, long long lo, long long hi, long long *out,
                  problem *err) {
  if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
    return problem_set(err, P_INVALID_FIELD, ptr, "%s must be an integer from %lld to %lld", name, lo, hi);
  *out = json_integer_value(v);
  return 0;
}

/* The queue's ranking: name, by, order, run, size, label, label_issue, min_seen. */
static int read_queue_ranking(const json_t *root, queue_params *p, problem *err) {
  long long v;
  const json_t *f = json_object_get(root, "name");
  if (!json_is_string(f) || !name_ok(json_string_value(f))) {
    problem_set(err, f ? P_BAD_NAME : P_MISSING_FIELD, "/name", "name must be a name of 1 to 64 characters from A-Z a-z 0-9 . _ - (nor . or ..)");
    return -1;
  }
  snprintf(p->name, sizeof p->name, "%s", json_string_value(f));
  p->by = HF_MEAN_LOSS;
  if ((f = json_object_get(root, "by")) && !json_is_null(f) &&
      (!json_is_string(f) || (p->by = hist_field_parse(json_string_value(f))) < 0)) {
    problem_set(err, P_INVALID_FIELD, "/by", "by must be a history field (%s)", hist_field_list);
    return -1;
  }
  if ((f = json_object_get(root, "order")) && !json_is_null(f) &&
      (!json_is_string(f) || (p->order = hist_order_parse(json_string_value(f))) < 0)) {
    problem_set(err, P_INVALID_FIELD, "/order", "order must be asc or desc");
    return -1;
  }
  snprintf(p->run, sizeof p->run, "*");
  if ((f = json_object_get(root, "run")) && !json_is_null(f)) {
    if (!json_is_string(f) || (strcmp(json_string_value(f), "*") != 0 && !name_lookup_ok(json_string_value(f)))) {
      problem_set(err, P_BAD_NAME, "/run", "run must be a run name or *");
      return -1;
    }
    snprintf(p->run, sizeof p->run, "%s", json_string_value(f));
  }
  p->size = 100;
  if ((f = json_object_get(root, "size"))) {
    if (int_in(f, "/size", "size", 1, 10000, &v, err)) return -1;
    p->size = (int)v;
  }
  if ((f = json_object_get(root, "label")) && !json_is_null(f)) {
    if (int_in(f, "/label", "label", 0, INT32_MAX, &v, err)) return -1;
    p->has_label = 1;
    p->label = (int32_t)v;
  }
  if ((f = json_object_get(root, "label_issue")) && !json_is_null(f)) {
    if (!json_is_boolean(f)) {
      problem_set(err, P_INVALID_FIELD, "/label_issue", "label_issue must be true, false or null");
      return -1;
    }
    p->label_issue = json_is_true(f) ? ST_LABEL_ISSUE_YES : ST_LABEL_ISSUE_NO;
  }
  p->min_seen = 1;
  if ((f = json_object_get(root, "min_seen"))) {
    if (int_in(f, "/min_seen", "min_seen", 1, UINT32_MAX, &v, err)) return -1;
    p->min_seen = (uint32_t)v;
  }
  return 0;
}

/* quotas: {"<label>": {"min": a, "max": b}, ...}, per-label overrides of the general bounds. */
static int read_quotas(const json_t *f, queue_params *p, problem *err) {
  long long v;
  if (!json_is_object(f)) {
    problem_set(err, P_INVALID_FIELD, "/quotas", "quotas must be an object keyed by class label");
    return -1;
  }
  const char *key;
  json_t *q;
  json_object_foreach((json_t *)f, key, q) {
    char ptr[PROBLEM_FIELD_MAX];
    problem_pointer_add(strcpy(ptr, "/quotas"), sizeof ptr, key);
    char *end;
    long lab = strtol(key, &end, 10);
    char plain[24];
    snprintf(plain, sizeof plain, "%ld", lab);
    if (*end || end == key || lab < 0 || lab > INT32_MAX || strcmp(plain, key) != 0 || !json_is_object(q)) {
      problem_set(err, P_INVALID_FIELD, ptr, "quotas keys must be class labels (integers >= 0) with {\"min\", \"max\"}");
      return -1;
    }
    if (p->nquota == QUEUE_QUOTAS_MAX) {
      problem_set(err, P_TOO_LARGE, "/quotas", "at most %d labels in quotas", QUEUE_QUOTAS_MAX);
      return -1;
    }
    /* a bound the override leaves out (-1) stays the general one; a max of 0 excludes the label */
    int k = p->nquota++;
    p->quota_label[k] = (int32_t)lab;
    p->quota_min[k] = -1;
    p->quota_max[k] = -1;
    static const char *const quota_fields[] = {"min", "max", NULL};
    if (dec_only_fields(q, quota_fields, ptr, err)) return -1;
    const json_t *mn = json_object_get(q, "min"), *mx = json_object_get(q, "max");
    char at[140];
    snprintf(at, sizeof at, "%s/min", ptr);
    if (mn && int_in(mn, at, "quota min", 0, 10000, &v, err)) return -1;
    if (mn) p->quota_min[k] = (int)v;
    snprintf(at, sizeof at, "%s/max", ptr);
    if (mx && int_in(mx, at, "quota max", 0, 10000, &v, err)) return -1;
    if (mx) p->quota_max[k] = (int)v;
    if (mn && mx && p->quota_max[k] < p->quota_min[k]) {
      problem_set(err, P_INVALID_FIELD, ptr, "a quota's max is below its min");
      return -1;
    }
  }
  return 0;
}

/* The bounds per label: max_per_label, min_per_label, quotas. */
static int read_label_bounds(const json_t *root, queue_params *p, problem *err) {
  long long v;
  const json_t *f;
  if ((f = json_object_get(root, "max_per_label"))) {
    if (int_in(f, "/max_per_label", "max_per_label", 1, 10000, &v, err)) return -1;
    p->max_per_label = (int)v;
  }
  if ((f = json_object_get(root, "min_per_label"))) {
    if (int_in(f, "/min_per_label", "min_per_label", 1, 10000, &v, err)) return -1;
    p->min_per_label = (int)v;
  }
  if ((f = json_object_get(root, "quotas")) && !json_is_null(f) && read_quotas(f, p, err) != 0) return -1;
  if (p->max_per_label && p->min_per_label > p->max_per_label) {
    problem_set(err, P_INVALID_FIELD, "/min_per_label", "min_per_label is above max_per_label");
    return -1;
  }
  return 0;
}

int queue_decode(const char *body, size_t len, queue_params *p, problem *err) {
  static const char *const fields[] = {"name", "by", "order", "run", "size", "label", "label_issue", "min_seen",
                                       "max_per_label", "min_per_label", "quotas", "dedupe_by", NULL};
  memset(p, 0, sizeof *p);
  json_t *root = load_object(body, len, err);
  if (!root) return -1;
  int rc = -1;
  const json_t *f;
  if (dec_only_fields(root, fields, "", err) || read_queue_ranking(root, p, err) || read_label_bounds(root, p, err))
    goto out;
  if ((f = json_object_get(root, "dedupe_by")) && !json_is_null(f)) {
    if (!json_is_string(f) || json_string_length(f) < 1 || json_string_length(f) > ST_NAME_MAX) {
      problem_set(err, P_INVALID_FIELD, "/dedupe_by", "dedupe_by must be a meta key (1 to 64 bytes), such as patient_id");
      goto out;
    }
    snprintf(p->dedupe_by, sizeof p->dedupe_by, "%s", json_string_value(f));
  }
  p->params_json = jtext_dump(root, JSON_COMPACT | JSON_SORT_KEYS);
  if (!p->params_json) {
    problem_set(err, P_INTERNAL, NULL, "out of memory");
    goto out;
  }
  rc = 0;
out:
  json_decref(root);
  return rc;
}

/* ------------------------------------------------------------------ queue selection */

typedef struct cand {
  uint32_t key;
  int32_t label;
  double score; /* as hard-examples ranks it (over every run, a mean in double); stored as a float */
} cand;

typedef struct order_ctx {
  const st_dataset *ds;
  int desc;
} order_ctx;

static int cmp_cand(const void *a, const void *b, void *arg) {
  const cand *x = a, *y = b;
  const order_ctx *o = arg;
  if (x->score != y->score) return (o->desc ? x->score > y->score : x->score < y->score) ? -1 : 1;
  return strcmp(st_sample_id(o->ds, x->key), st_sample_id(o->ds, y->key));
}

/* The quota of a label: its minimum, and its maximum or -1 for none. An
 * override replaces only the bounds it gives (see queue_decode). */
static void quota_of(const queue_params *p, int32_t label, int *mn, int *mx) {
  *mn = p->min_per_label;
  *mx = p->max_per_label ? p->max_per_label : -1;
  for (int i = 0; i < p->nquota; i++) {
    if (p->quota_label[i] != label) continue;
    if (p->quota_min[i] >= 0) *mn = p->quota_min[i];
    if (p->quota_max[i] >= 0) *mx = p->quota_max[i];
  }
}

/* Distinct values of the de-duplication key: a set of strings. */
typedef struct strset {
  char **slot;
  size_t cap, n;
} strset;

static int strset_has(const strset *s, const char *v) {
  for (size_t i = idhash(v) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
    if (!s->slot[i]) return 0;
    if (strcmp(s->slot[i], v) == 0) return 1;
  }
}

/* Adds a copy of v (not in the set yet), first growing the set to twice its slots when it is half
 * full. Returns 0, or -1 when memory ran out (the set is then as before). */
static int strset_add(strset *s, const char *v) {
  if (s->n * 2 >= s->cap) {
    /* grow the set: rehash into twice the slots */
    strset bigger = {calloc(s->cap * 2, sizeof(char *)), s->cap * 2, 0};
    if (!bigger.slot) return -1;
    for (size_t k = 0; k < s->cap; k++)
      if (s->slot[k]) {
        size_t j = idhash(s->slot[k]) & (bigger.cap - 1);
        while (bigger.slot[j]) j = (j + 1) & (bigger.cap - 1);
        bigger.slot[j] = s->slot[k];
        bigger.n++;
      }
    free(s->slot);
    *s = bigger;
  }
  size_t i = idhash(v) & (s->cap - 1);
  while (s->slot[i]) i = (i + 1) & (s->cap - 1);
  if (!(s->slot[i] = strdup(v))) return -1;
  s->n++;
  return 0;
}

/* The sample's value of the de-duplication key as text (malloc'd), or NULL when it has none; *oom is
 * set when memory ran out (the selection then fails rather than take duplicates). */
static char *dedupe_value(const st_dataset *ds, uint32_t key, const char *field, int *oom) {
  const char *meta = st_meta(ds, key);
  if (!meta) return NULL;
  json_t *m = jtext_loads(meta, 0, NULL, NULL);
  const json_t *v = m ? json_object_get(m, field) : NULL;
  char *out = NULL;
  if (json_is_string(v)) out = strdup(json_string_value(v));
  else if (v && !json_is_null(v)) out = jtext_dump(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!m || (v && !json_is_null(v) && !out)) *oom = 1;
  json_decref(m);
  return out;
}

int queue_run(const st_dataset *ds, const st_queue *q, const st_run **run) {
  *run = NULL;
  if (!q->params) return 0;
  int oom = 0;
  json_t *params = jtext_loads(q->params, 0, NULL, &oom);
  if (!params) return oom ? -1 : 0; /* stored parameters are JSON: only memory can fail here */
  const char *name = json_string_value(json_object_get(params, "run"));
  if (name && strcmp(name, "*") != 0) *run = st_find_run(ds, name);
  json_decref(params);
  return 0;
}

/* The samples a queue may take, into c (room for every sample): open (or to reconsider), seen often
 * enough, with the label and label-issue state asked for, each with its score. Returns how many. */
static uint32_t gather_candidates(const st_dataset *ds, const st_run *run, const queue_params *p, double reconsider,
                                  cand *c /* OUT */) {
  uint32_t nc = 0;
  const uint32_t nsamples = st_nsamples(ds);
  for (uint32_t k = 0; k < nsamples; k++) {
    if (st_sample_status(ds, k) != ST_OPEN && !(reconsider > 0 && st_reconsider(ds, k, reconsider))) continue;
    hist_view v;
    st_history_of(ds, run, k, &v);
    if (v.seen < p->min_seen || v.seen == 0) continue;
    int32_t label = st_training_label(ds, run, k);
    if (p->has_label && label != p->label) continue;
    if (p->label_issue && (p->label_issue == ST_LABEL_ISSUE_YES) != (v.label_issue != 0)) continue;
    c[nc++] = (cand){k, label, hist_view_value(&v, p->by)};
  }
  return nc;
}

int queue_select(const st_dataset *ds, const queue_params *p, double reconsider, uint32_t **keys_out, float **scores_out,
                 uint32_t *n_out, problem *err) {
  const st_run *run = NULL;
  if (strcmp(p->run, "*") != 0 && !(run = st_find_run(ds, p->run)))
    return problem_set(err, P_RUN_NOT_FOUND, "/run", "dataset \"%s\" has no run \"%s\"", st_name(ds), p->run);
  const uint32_t nsamples = st_nsamples(ds);
  cand *c = malloc((size_t)(nsamples ? nsamples : 1) * sizeof *c);
  uint8_t *taken = calloc(nsamples ? nsamples : 1, 1);
  uint32_t *keys = malloc((size_t)p->size * sizeof *keys);
  float *scores = malloc((size_t)p->size * sizeof *scores);
  strset seen = {calloc(4096, sizeof(char *)), 4096, 0};
  /* per label taken so far: labels are small integers; -1 (none) goes in slot 0 */
  size_t nlabels = 1;
  for (uint32_t k = 0; k < nsamples; k++) {
    int32_t l = st_training_label(ds, run, k);
    if ((size_t)(l + 2) > nlabels) nlabels = (size_t)l + 2;
  }
  int *count = calloc(nlabels, sizeof *count);
  int rc = -1;
  uint32_t nc = 0, n = 0;
  if (!c || !taken || !keys || !scores || !seen.slot || !count) {
    problem_set(err, P_INTERNAL, NULL, "out of memory choosing the queue");
    goto out;
  }
  nc = gather_candidates(ds, run, p, reconsider, c);
  order_ctx oc = {ds, hist_order_desc((hist_field)p->by, (hist_order)p->order)};
  qsort_r(c, nc, sizeof *c, cmp_cand, &oc);
  /* two passes in ranking order: first each label's minimum, then the hardest of the rest */
  for (int pass = 0; pass < 2 && n < (uint32_t)p->size; pass++) {
    for (uint32_t i = 0; i < nc && n < (uint32_t)p->size; i++) {
      const cand *x = &c[i];
      if (taken[x->key]) continue;
      int mn, mx;
      quota_of(p, x->label, &mn, &mx);
      int *have = &count[x->label + 1];
      if (pass == 0 && *have >= mn) continue;
      if (mx >= 0 && *have >= mx) continue;
      int oom = 0;
      char *dv = p->dedupe_by[0] ? dedupe_value(ds, x->key, p->dedupe_by, &oom) : NULL;
      if (oom) {
        problem_set(err, P_INTERNAL, NULL, "out of memory choosing the queue");
        goto out;
      }
      if (dv && strset_has(&seen, dv)) {
        free(dv);
        continue;
      }
      if (dv) {
        int arc = strset_add(&seen, dv);
        free(dv);
        if (arc) {
          problem_set(err, P_INTERNAL, NULL, "out of memory choosing the queue");
          goto out;
        }
      }
      taken[x->key] = 1;
      (*have)++;
      n++;
    }
  }
  /* the queue's order is the ranking's, whichever pass chose a sample */
  for (uint32_t i = 0, w = 0; i < nc && w < n; i++) {
    if (!taken[c[i].key]) continue;
    keys[w] = c[i].key;
    scores[w] = (float)c[i].score;
    w++;
  }
  *keys_out = keys;
  *scores_out = scores;
  *n_out = n;
  keys = NULL;
  scores = NULL;
  rc = 0;
out:
  for (size_t s = 0; seen.slot && s < seen.cap; s++) free(seen.slot[s]);
  free(seen.slot);
  free(c);
  free(taken);
  free(keys);
  free(scores);
  free(count);
  return rc;
}

void review_op_free(wop *op) {
  if (!op) return;
  free(op->answer);
  switch (op->kind) {
  case WOP_REVIEW: {
    review_op *r = (review_op *)op;
    free(r->label);
    free(r->reviewer);
    free(r->note);
    free(r->label_before);
    /* what the writer prepares it also takes or frees; an op that never reached it has none */
    free(r->corrected);
    free(r->entry.reviewer);
    free(r->entry.label_before);
    free(r->entry.label_after);
    free(r->entry.note);
    break;
  }
  case WOP_META:
    free(((meta_op *)op)->meta);
    free(((meta_op *)op)->stored);
    break;
  case WOP_QUEUE:
  case WOP_QUEUE_DELETE: {
    queue_op *q = (queue_op *)op;
    free(q->p.params_json);
    st_queue_free(q->queue);
    for (uint32_t i = 0; q->changes && i < q->nchanges; i++) {
      free(q->changes[i].reviewer);
      free(q->changes[i].label_before);
      free(q->changes[i].label_after);
      free(q->changes[i].note);
    }
    free(q->changes);
    free(q->change_keys);
    break;
  }
  default: break;
  }
  free(op);
}
