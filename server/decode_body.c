/* decode_body.c — the JSON request decoder: the body's fields, and the fields every request has, which a
 * binary body's JSON header shares (dec_header, dec_tail).
 *
 * jansson parses the body (duplicate keys rejected, no NUL in strings); this
 * file then walks the tree once, checking each field and copying the tensors
 * into float32 arrays the loss library reads directly (with decode.c's readers).
 */
#include "decode.h"
#include "decode_internal.h"
#include "idhash.h"
#include "jtext.h"
#include "numfmt.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ the body */

static const char *const top_fields[] = {"run",    "batch_id", "epoch",   "step",    "segments", "loss",    "ids",
                                         "logits", "probs",    "targets", "weights", "meta",     "ohem_k",  "outputs", NULL};

const char *const req_output_names[REQ_OUTPUTS] = {"losses",     "p_t",  "p_max",   "margin", "norm_margin", "entropy",
                                                   "cw_entropy", "el2n", "correct", "pred",   "grad",        "grad_norm"};

int dec_outputs(const json_t *outputs, req *r, int want_store, int *binary_data, problem *err) {
  r->outputs = REQ_OUT_DEFAULT;
  if (!outputs || json_is_null(outputs)) return 0;
  if (!json_is_array(outputs))
    return problem_set(err, P_INVALID_FIELD, "/outputs", "outputs must be an array of output names or {name} objects");
  char names[200];
  size_t used = 0;
  for (int k = 0; k < REQ_OUTPUTS; k++)
    used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", k ? ", " : "", req_output_names[k]);
  r->outputs = 0;
  for (size_t i = 0; i < json_array_size(outputs); i++) {
    const json_t *o = json_array_get(outputs, i);
    const json_t *name = json_is_object(o) ? json_object_get(o, "name") : o;
    char ptr[64];
    snprintf(ptr, sizeof ptr, json_is_object(o) ? "/outputs/%zu/name" : "/outputs/%zu", i);
    int found = -1;
    for (int k = 0; k < REQ_OUTPUTS && json_is_string(name); k++)
      if (strcmp(req_output_names[k], json_string_value(name)) == 0) found = k;
    if (found < 0) return problem_set(err, P_INVALID_FIELD, ptr, "outputs[%zu] must name one of %s", i, names);
    /* a recorded batch answers with what it records; gradients are the stateless route's */
    if (want_store && (found == REQ_OUT_GRAD || found == REQ_OUT_GRAD_NORM))
      return problem_set(err, P_INVALID_FIELD, ptr, "outputs[%zu]: %s is for POST /v1/loss; a recorded batch returns "
                                                    "losses and scores", i, req_output_names[found]);
    r->outputs |= 1u << found;
    const json_t *op = json_is_object(o) ? json_object_get(o, "parameters") : NULL;
    if (op && json_is_true(json_object_get(op, "binary_data")) && binary_data) *binary_data = 1;
  }
  return 0;
}

static int int_field(const json_t *v, const char *name, int64_t lo, int64_t hi, int64_t *out, problem *err) {
  char ptr[64];
  snprintf(ptr, sizeof ptr, "/%s", name);
  if (!json_is_integer(v)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be an integer, not %s", name, decode__json_kind(v));
  int64_t x = json_integer_value(v);
  if (x < lo || x > hi)
    return problem_set(err, P_OUT_OF_RANGE, ptr, "%s = %" PRId64 " must be in [%" PRId64 ", %" PRId64 "]", name, x, lo, hi);
  *out = x;
  return 0;
}

/* The shape of the logits: (n, m, c), dense when 3-D. */
static int logits_shape(const json_t *x, const char *name, int64_t n, req *r, problem *err) {
  char ptr[64];
  snprintf(ptr, sizeof ptr, "/%s", name);
  if (!json_is_array(x)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be an array, not %s", name, decode__json_kind(x));
  if ((int64_t)json_array_size(x) != n)
    return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has %zu rows but ids has %" PRId64, name, json_array_size(x), n);
  const json_t *row = json_array_get(x, 0);
  if (!json_is_array(row) || json_array_size(row) == 0)
    return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s must be N x C or N x M x C numbers; %s[0] is %s", name, name,
                       json_is_array(row) ? "empty" : decode__json_kind(row));
  const json_t *first = json_array_get(row, 0);
  if (json_is_array(first)) {
    r->dense = 1;
    r->m = (int64_t)json_array_size(row);
    r->c = (int64_t)json_array_size(first);
    if (r->c == 0) return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s[0][0] is empty", name);
  } else {
    r->m = 1;
    r->c = (int64_t)json_array_size(row);
  }
  r->n = n;
  /* each size is at most the body's length, but their product can pass int64's range (rows of one number
   * after a first row of millions): it is checked step by step, never computed past 2^31 */
  const int64_t most = (int64_t)1 << 31;
  int64_t nm = 0;
  if (r->n > most || r->m > most || r->c > most || (nm = r->n * r->m) > most || r->c > most / (nm ? nm : 1)) {
    if (r->dense)
      return problem_set(err, P_TOO_LARGE, ptr, "%s is %" PRId64 " x %" PRId64 " x %" PRId64 ", more than the 2^31 elements focald takes in one batch",
                         name, r->n, r->m, r->c);
    return problem_set(err, P_TOO_LARGE, ptr, "%s is %" PRId64 " x %" PRId64 ", more than the 2^31 elements focald takes in one batch", name,
                       r->n, r->c);
  }
  return 0;
}

/* Reads targets in the shape that says what they are (see README "targets"). */
static int read_targets(const json_t *t, req *r, problem *err) {
  const int64_t n = r->n, m = r->m, c = r->c;
  if (!json_is_array(t)) return problem_set(err, P_INVALID_FIELD, "/targets", "targets must be an array, not %s", decode__json_kind(t));
  if ((int64_t)json_array_size(t) != n)
    return problem_set(err, P_SHAPE_MISMATCH, "/targets", "targets has %zu rows but ids has %" PRId64, json_array_size(t), n);
  const json_t *t0 = json_array_get(t, 0);
  const json_t *t00 = json_is_array(t0) ? json_array_get(t0, 0) : NULL;
  const int binary = !fl_loss_is_softmax(r->params.loss) && c == 1;
  int dense_rows; /* targets carry a class axis */
  if (!r->dense) dense_rows = json_is_array(t0);
  else dense_rows = json_is_array(t0) && json_is_array(t00);
  const int64_t shape3[3] = {n, m, c}, shape2[2] = {n, c}, shape_nm[2] = {n, m}, shape_n[1] = {n};
  if (dense_rows) {
    r->targets = req_alloc(r, (size_t)(n * m * c) * sizeof *r->targets);
    if (!r->targets) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    return r->dense ? decode__read_floats(t, "targets", 3, shape3, r->targets, err) : decode__read_floats(t, "targets", 2, shape2, r->targets, err);
  }
  if (binary) {
    /* one output per position: the numbers are the binary targets themselves */
    r->targets = req_alloc(r, (size_t)(n * m) * sizeof *r->targets);
    if (!r->targets) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    if (!r->dense) {
      for (int64_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(t, (size_t)i);
        if (!json_is_number(v))
          return decode__fail_at(err, P_INVALID_FIELD, "targets", &i, 1, "must be a number in [0, 1], not %s", decode__json_kind(v));
        const double d = json_number_value(v);
        /* as decode__read_floats: a number past float32 is out of range, not an infinity the library would find */
        if (!num_fits_f32(d)) return decode__fail_at(err, P_OUT_OF_RANGE, "targets", &i, 1, "= %g is outside float32's range", d);
        r->targets[i] = (float)d;
      }
      return 0;
    }
    return decode__read_floats(t, "targets", 2, shape_nm, r->targets, err);
  }
  int64_t *labels = req_alloc(r, (size_t)(n * m) * sizeof *labels);
  if (!labels) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  r->labels = labels;
  r->label_type = FL_LABEL_I64;
  if (r->dense) {
    if (!json_is_array(t0))
      return problem_set(err, P_SHAPE_MISMATCH, "/targets/0",
                         "with N x M x C logits, targets must be N x M class indices or N x M x C rows; targets[0] is %s", decode__json_kind(t0));
    return decode__read_labels(t, "targets", 2, shape_nm, labels, err);
  }
  return decode__read_labels(t, "targets", 1, shape_n, labels, err);
}

static int read_weights(const json_t *w, req *r, problem *err) {
  const int64_t n = r->n, m = r->m, c = r->c;
  const int per_position = fl_loss_is_softmax(r->params.loss);
  if (!json_is_array(w)) return problem_set(err, P_INVALID_FIELD, "/weights", "weights must be an array, not %s", decode__json_kind(w));
  if ((int64_t)json_array_size(w) != n)
    return problem_set(err, P_SHAPE_MISMATCH, "/weights", "weights has %zu rows but ids has %" PRId64, json_array_size(w), n);
  size_t count = (size_t)(per_position ? n * m : n * m * c);
  r->weights = req_alloc(r, count * sizeof *r->weights);
  if (!r->weights) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  if (per_position && !r->dense) {
    for (int64_t i = 0; i < n; i++) {
      const json_t *v = json_array_get(w, (size_t)i);
      if (!json_is_number(v))
        return decode__fail_at(err, P_INVALID_FIELD, "weights", &i, 1, "must be a number (softmax losses weigh positions), not %s", decode__json_kind(v));
      const double d = json_number_value(v);
      if (!num_fits_f32(d)) return decode__fail_at(err, P_OUT_OF_RANGE, "weights", &i, 1, "= %g is outside float32's range", d);
      r->weights[i] = (float)d;
    }
    return 0;
  }
  if (per_position) {
    const int64_t shape[2] = {n, m};
    return decode__read_floats(w, "weights", 2, shape, r->weights, err);
  }
  if (r->dense) {
    const int64_t shape[3] = {n, m, c};
    return decode__read_floats(w, "weights", 3, shape, r->weights, err);
  }
  const int64_t shape[2] = {n, c};
  return decode__read_floats(w, "weights", 2, shape, r->weights, err);
}

int dec_meta_check(const json_t *m, const char *ptr, problem *err) {
  static const char *const strings[] = {"uri", "study_uid", "series_uid", "sop_uid", "patient_id", NULL};
  char at[400];
  for (int i = 0; strings[i]; i++) {
    const json_t *v = json_object_get(m, strings[i]);
    if (v && !json_is_string(v) && !json_is_null(v)) {
      snprintf(at, sizeof at, "%s/%s", ptr, strings[i]);
      return problem_set(err, P_INVALID_FIELD, at, "%s must be a string, not %s", strings[i], decode__json_kind(v));
    }
  }
  const json_t *tags = json_object_get(m, "tags");
  if (tags && !json_is_array(tags) && !json_is_object(tags) && !json_is_null(tags)) {
    snprintf(at, sizeof at, "%s/tags", ptr);
    return problem_set(err, P_INVALID_FIELD, at, "tags must be a list or an object, not %s", decode__json_kind(tags));
  }
  return 0;
}

static int by_meta_index(const void *a, const void *b) {
  const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

/* Orders meta by the sample it belongs to, so that each segment's entries are consecutive. */
static int sort_meta(req *r) {
  struct pair {
    int32_t index;
    char *json;
  } *p = malloc((size_t)r->nmeta * sizeof *p);
  if (!p) return -1;
  for (int i = 0; i < r->nmeta; i++) p[i] = (struct pair){r->meta_index[i], r->meta_json[i]};
  qsort(p, (size_t)r->nmeta, sizeof *p, by_meta_index); /* the index comes first in a pair */
  for (int i = 0; i < r->nmeta; i++) {
    r->meta_index[i] = p[i].index;
    r->meta_json[i] = p[i].json;
  }
  free(p);
  return 0;
}

static int read_meta(const json_t *meta, req *r, problem *err) {
  if (!json_is_object(meta)) return problem_set(err, P_INVALID_FIELD, "/meta", "meta must be an object keyed by sample id, not %s", decode__json_kind(meta));
  size_t n = json_object_size(meta);
  if (n == 0) return 0;
  r->meta_index = calloc(n, sizeof *r->meta_index);
  r->meta_json = calloc(n, sizeof *r->meta_json);
  if (!r->meta_index || !r->meta_json) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  /* dec_check_unique's table: each id at its last index, so an id repeated in a later segment gets its meta there */
  const uint32_t *slot = r->id_slot, cap = r->id_cap;
  if (!slot) return problem_set(err, P_INTERNAL, NULL, "meta read before the ids were checked");
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)meta, key, v) {
    char ptr[PROBLEM_FIELD_MAX];
    problem_pointer_add(strcpy(ptr, "/meta"), sizeof ptr, key);
    int64_t at = -1;
    for (uint32_t h = (uint32_t)idhash(key) & (cap - 1); slot[h]; h = (h + 1) & (cap - 1))
      if (strcmp(r->ids[slot[h] - 1], key) == 0) {
        at = slot[h] - 1;
        break;
      }
    if (at < 0) return problem_set(err, P_INVALID_FIELD, ptr, "meta has an entry for \"%.80s\", which is not in ids", key);
    if (!json_is_object(v)) return problem_set(err, P_INVALID_FIELD, ptr, "meta[\"%.80s\"] must be an object, not %s", key, decode__json_kind(v));
    if (dec_meta_check(v, ptr, err)) return -1;
    char *text = jtext_dump(v, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    if (strlen(text) > REQ_META_MAX) {
      free(text);
      return problem_set(err, P_TOO_LARGE, ptr, "meta[\"%.80s\"] is larger than %d bytes", key, REQ_META_MAX);
    }
    r->meta_index[r->nmeta] = (int32_t)at;
    r->meta_json[r->nmeta++] = text;
  }
  if (r->nseg > 1 && sort_meta(r) != 0) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  return 0;
}

int dec_only_fields(const json_t *obj, const char *const *fields, const char *at, problem *err) {
  const char *key;
  json_t *v;
  json_object_foreach((json_t *)obj, key, v) {
    int known = 0;
    for (int i = 0; fields[i]; i++) known |= strcmp(fields[i], key) == 0;
    if (!known) {
      char ptr[PROBLEM_FIELD_MAX];
      snprintf(ptr, sizeof ptr, "%.90s", at);
      problem_pointer_add(ptr, sizeof ptr, key);
      return problem_set(err, P_UNKNOWN_FIELD, ptr, "%s has no field \"%.60s\"", at[0] ? at : "the body", key);
    }
  }
  return 0;
}

/* segments: [{n, step, epoch}, ...]; a segment without step or epoch has the request's (null: none). */
static int read_segments(const json_t *v, req *r, problem *err) {
  if (!json_is_array(v) || json_array_size(v) < 1)
    return problem_set(err, P_INVALID_FIELD, "/segments", "segments must be an array of 1 to %d objects {n, step, epoch}",
                       REQ_SEGMENTS_MAX);
  if (json_array_size(v) > REQ_SEGMENTS_MAX)
    return problem_set(err, P_TOO_LARGE, "/segments", "segments has %zu entries; a request takes at most %d",
                       json_array_size(v), REQ_SEGMENTS_MAX);
  const size_t k = json_array_size(v);
  if (!(r->seg = calloc(k, sizeof *r->seg))) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  r->nseg = (int)k;
  static const char *const seg_fields[] = {"n", "step", "epoch", NULL};
  for (size_t i = 0; i < k; i++) {
    const json_t *o = json_array_get(v, i), *f;
    char name[48];
    snprintf(name, sizeof name, "/segments/%zu", i);
    if (!json_is_object(o))
      return problem_set(err, P_INVALID_FIELD, name, "segments[%zu] must be an object {n, step, epoch}, not %s", i,
                         decode__json_kind(o));
    if (dec_only_fields(o, seg_fields, name, err)) return -1;
    req_seg *g = &r->seg[i];
    if (!(f = json_object_get(o, "n"))) {
      snprintf(name, sizeof name, "/segments/%zu/n", i); /* where it is missing, as for a missing top-level field */
      return problem_set(err, P_MISSING_FIELD, name, "segments[%zu] needs n: its number of samples", i);
    }
    snprintf(name, sizeof name, "segments/%zu/n", i);
    if (int_field(f, name, 1, (int64_t)1 << 31, &g->n, err)) return -1;
    g->has_step = r->has_step;
    g->step = r->step;
    g->has_epoch = r->has_epoch;
    g->epoch = r->epoch;
    if ((f = json_object_get(o, "step"))) {
      snprintf(name, sizeof name, "segments/%zu/step", i);
      g->has_step = !json_is_null(f);
      if (g->has_step && int_field(f, name, 0, HIST_STEP_MAX, &g->step, err)) return -1;
    }
    if ((f = json_object_get(o, "epoch"))) {
      snprintf(name, sizeof name, "segments/%zu/epoch", i);
      g->has_epoch = !json_is_null(f);
      if (g->has_epoch && int_field(f, name, 0, HIST_EPOCH_MAX, &g->epoch, err)) return -1;
    }
  }
  return 0;
}

int dec_header(const json_t *root, req *r, int want_store, const char *const *fields, problem *err) {
  snprintf(r->run, sizeof r->run, "default");
  if (dec_only_fields(root, fields, "", err)) return -1;
  const json_t *f;
  if ((f = json_object_get(root, "run")) && want_store) {
    if (!json_is_string(f) || !name_ok(json_string_value(f)))
      return problem_set(err, P_BAD_NAME, "/run", "run must be a name of 1 to 64 characters from A-Z a-z 0-9 . _ - (nor . or ..)");
    snprintf(r->run, sizeof r->run, "%s", json_string_value(f));
  }
  if ((f = json_object_get(root, "batch_id")) && want_store && !json_is_null(f)) {
    if (!json_is_string(f) || json_string_length(f) < 1 || json_string_length(f) > REQ_BATCH_ID_MAX)
      return problem_set(err, P_BAD_NAME, "/batch_id", "batch_id must be a string of 1 to %d bytes", REQ_BATCH_ID_MAX);
    snprintf(r->batch_id, sizeof r->batch_id, "%s", json_string_value(f));
    r->has_batch_id = 1;
  }
  if ((f = json_object_get(root, "epoch")) && !json_is_null(f)) {
    if (int_field(f, "epoch", 0, HIST_EPOCH_MAX, &r->epoch, err)) return -1;
    r->has_epoch = 1;
  }
  if ((f = json_object_get(root, "step")) && !json_is_null(f)) {
    if (int_field(f, "step", 0, HIST_STEP_MAX, &r->step, err)) return -1;
    r->has_step = 1;
  }
  if ((f = json_object_get(root, "segments")) && !json_is_null(f) && read_segments(f, r, err)) return -1;
  if ((f = json_object_get(root, "loss")) && !json_is_null(f)) {
    if (!json_is_object(f)) return problem_set(err, P_INVALID_FIELD, "/loss", "loss must be an object, not %s", decode__json_kind(f));
    if (decode__read_loss(f, r, err)) return -1;
  } else {
    fl_params_init(&r->params, FL_SIGMOID_FOCAL);
  }
  return 0;
}

int dec_tail(const json_t *root, req *r, int want_store, problem *err) {
  const json_t *v;
  if (r->alpha_c && r->nalpha != (size_t)r->c)
    return problem_set(err, P_SHAPE_MISMATCH, "/loss/alpha", "loss.alpha has %zu entries but there are %" PRId64 " classes", r->nalpha,
                       r->c);
  if (r->alpha_c) r->params.alpha = 0.0f;
  if (r->pos_weight && r->npos_weight == REQ_EVERY_CLASS) {
    float *all = malloc((size_t)r->c * sizeof *all);
    if (!all) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    for (int64_t k = 0; k < r->c; k++) all[k] = r->pos_weight_all;
    free(r->pos_weight);
    r->pos_weight = all;
  } else if (r->pos_weight && (int64_t)r->npos_weight != r->c) {
    return problem_set(err, P_SHAPE_MISMATCH, "/loss/pos_weight", "loss.pos_weight has %zu entries but there are %" PRId64 " classes",
                       r->npos_weight, r->c);
  }
  r->params.pos_weight = r->pos_weight;
  if (fl_loss_is_softmax(r->params.loss) && r->c < 2)
    return problem_set(err, P_SHAPE_MISMATCH, r->x_name[0] == 'l' ? "/logits" : "/probs",
                       "softmax losses need at least 2 classes; %s has %" PRId64, r->x_name, r->c);
  if (dec_check_loss(&r->params, r->c, err)) return -1;
  if ((v = json_object_get(root, "ohem_k")) && !json_is_null(v) && int_field(v, "ohem_k", 0, r->n, &r->ohem_k, err))
    return -1;
  if ((v = json_object_get(root, "meta")) && want_store && !json_is_null(v) && read_meta(v, r, err)) return -1;
  free(r->id_slot); /* the ids' table is done with */
  r->id_slot = NULL;
  return 0;
}

int dec_json(req *r, const char *body, size_t len, int want_store, problem *err) {
  memset(r, 0, sizeof *r);
  json_error_t je;
  int oom;
  /* JSON_DECODE_ANY: a scalar body is JSON, just not an object (422, not 400) */
  json_t *root = jtext_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &oom);
  if (!root && oom) return problem_set(err, P_INTERNAL, NULL, "out of memory reading the body");
  if (!root)
    return problem_set(err, P_BAD_JSON, NULL, "%s (line %d, column %d)", je.text, je.line, je.column);
  int rc = -1;
  r->want_scores = 1;
  if (!json_is_object(root)) {
    problem_set(err, P_INVALID_FIELD, "", "the body must be a JSON object, not %s", decode__json_kind(root));
    goto out;
  }
  if (dec_header(root, r, want_store, top_fields, err)) goto out;
  const json_t *v;
  const json_t *ids = json_object_get(root, "ids");
  if (!ids) {
    problem_set(err, P_MISSING_FIELD, "/ids", "ids is required: one id per sample");
    goto out;
  }
  if (!json_is_array(ids) || json_array_size(ids) == 0) {
    problem_set(err, P_INVALID_FIELD, "/ids", "ids must be a non-empty array of sample ids");
    goto out;
  }
  if (decode__read_ids(ids, r, err)) goto out;
  const json_t *logits = json_object_get(root, "logits"), *probs = json_object_get(root, "probs");
  if (!logits == !probs) {
    problem_set(err, logits ? P_INVALID_FIELD : P_MISSING_FIELD, logits ? "/probs" : "/logits",
                logits ? "give either logits or probs, not both" : "logits (or probs) is required");
    goto out;
  }
  r->x_name = logits ? "logits" : "probs";
  r->params.input = logits ? FL_INPUT_LOGITS : FL_INPUT_PROBS;
  const json_t *x = logits ? logits : probs;
  if (logits_shape(x, r->x_name, (int64_t)json_array_size(ids), r, err)) goto out;
  r->x = req_alloc(r, (size_t)(r->n * r->m * r->c) * sizeof *r->x);
  if (!r->x) {
    problem_set(err, P_INTERNAL, NULL, "out of memory");
    goto out;
  }
  {
    const int64_t s3[3] = {r->n, r->m, r->c}, s2[2] = {r->n, r->c};
    if (r->dense ? decode__read_floats(x, r->x_name, 3, s3, r->x, err) : decode__read_floats(x, r->x_name, 2, s2, r->x, err)) goto out;
  }
  const json_t *t = json_object_get(root, "targets");
  if (!t) {
    problem_set(err, P_MISSING_FIELD, "/targets", "targets is required");
    goto out;
  }
  if (read_targets(t, r, err)) goto out;
  if ((v = json_object_get(root, "weights")) && !json_is_null(v) && read_weights(v, r, err)) goto out;
  if (dec_tail(root, r, want_store, err)) goto out;
  /* a JSON response has losses and scores whatever outputs says; outputs adds the gradients */
  if (dec_outputs(json_object_get(root, "outputs"), r, want_store, NULL, err)) goto out;
  rc = 0;
out:
  json_decref(root);
  if (rc != 0) req_free(r);
  return rc;
}
