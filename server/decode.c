/* decode.c — the JSON request decoder.
 *
 * jansson parses the body (duplicate keys rejected, no NUL in strings); this
 * file then walks the tree once, checking each field and copying the tensors
 * into float32 arrays the loss library reads directly. Every error names its
 * element twice: as a JSON pointer in `field` and as "logits[3][7]" in
 * `detail`.
 */
#include "decode.h"
#include "idhash.h"

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int name_ok(const char *name) {
  return name_lookup_ok(name) && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

int name_lookup_ok(const char *name) {
  size_t n = strlen(name);
  if (n < 1 || n > ST_NAME_MAX) return 0;
  for (const char *p = name; *p; p++) {
    char ch = *p;
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
          ch == '_' || ch == '-'))
      return 0;
  }
  return 1;
}

void req_free(req *r) {
  if (!r) return;
  free(r->alpha_c);
  free(r->pos_weight);
  free(r->ids); /* the pointers and the bytes are one allocation */
  for (int i = 0; i < r->nmeta; i++) free(r->meta_json[i]);
  free(r->meta_json);
  free(r->meta_index);
  free(r->seg);
  free(r->id_slot);
  for (int i = 0; i < r->nown; i++) free(r->own[i]);
  memset(r, 0, sizeof *r);
}

int req_own(req *r, void *p) {
  if (r->nown == (int)(sizeof r->own / sizeof r->own[0])) return -1;
  r->own[r->nown++] = p;
  return 0;
}

void *req_alloc(req *r, size_t n) {
  void *p = malloc(n ? n : 1);
  if (p && req_own(r, p) != 0) {
    free(p);
    p = NULL;
  }
  return p;
}

int64_t req_label_at(const req *r, int64_t i) {
  switch (r->label_type) {
  case FL_LABEL_I32: return ((const int32_t *)r->labels)[i];
  case FL_LABEL_U8: return ((const uint8_t *)r->labels)[i];
  default: return ((const int64_t *)r->labels)[i];
  }
}

/* ------------------------------------------------------------------ element names */

/* "logits[3][7]" and "/logits/3/7" for the element at idx[0..nd). */
static void element_names(const char *name, const int64_t *idx, int nd, char *human, size_t hn, char *ptr,
                          size_t pn) {
  size_t h = (size_t)snprintf(human, hn, "%s", name);
  size_t p = (size_t)snprintf(ptr, pn, "/%s", name);
  for (int i = 0; i < nd; i++) {
    if (h < hn) h += (size_t)snprintf(human + h, hn - h, "[%" PRId64 "]", idx[i]);
    if (p < pn) p += (size_t)snprintf(ptr + p, pn - p, "/%" PRId64, idx[i]);
  }
}

/* Fails with the element's names: detail is "<element> <what follows>". */
static int fail_at(problem *err, problem_code code, const char *name, const int64_t *idx, int nd, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

static int fail_at(problem *err, problem_code code, const char *name, const int64_t *idx, int nd, const char *fmt, ...) {
  char human[128], ptr[160], rest[256];
  va_list ap;
  element_names(name, idx, nd, human, sizeof human, ptr, sizeof ptr);
  va_start(ap, fmt);
  vsnprintf(rest, sizeof rest, fmt, ap);
  va_end(ap);
  return problem_set(err, code, ptr, "%s %s", human, rest);
}

/* ------------------------------------------------------------------ tensors */

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

/* Reads a float32 tensor of shape[0..nd) from nested arrays into out. */
static int read_floats(const json_t *v, const char *name, int nd, const int64_t *shape, float *out, problem *err) {
  int64_t idx[3] = {0, 0, 0};
  const json_t *level[3];
  level[0] = v;
  /* iterate over every element in row-major order, checking each array's length */
  int64_t total = 1;
  for (int d = 0; d < nd; d++) total *= shape[d];
  int64_t e = 0;
  int d = 0;
  for (;;) {
    /* descend from depth d to the last dimension */
    for (; d < nd - 1; d++) {
      const json_t *a = json_array_get(level[d], (size_t)idx[d]);
      if (!json_is_array(a))
        return fail_at(err, P_INVALID_FIELD, name, idx, d + 1, "must be an array, not %s", a ? json_kind(a) : "missing");
      if ((int64_t)json_array_size(a) != shape[d + 1]) {
        char human[128], ptr[160];
        element_names(name, idx, d + 1, human, sizeof human, ptr, sizeof ptr);
        return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has %zu entries; expected %" PRId64, human,
                           json_array_size(a), shape[d + 1]);
      }
      level[d + 1] = a;
      idx[d + 1] = 0;
    }
    const json_t *row = level[nd - 1];
    for (int64_t k = 0; k < shape[nd - 1]; k++) {
      const json_t *x = json_array_get(row, (size_t)k);
      idx[nd - 1] = k;
      double val;
      if (json_is_real(x)) val = json_real_value(x);
      else if (json_is_integer(x)) val = (double)json_integer_value(x);
      else return fail_at(err, P_INVALID_FIELD, name, idx, nd, "must be a number, not %s", x ? json_kind(x) : "missing");
      if (!(fabs(val) <= FLT_MAX)) {
        char human[128], ptr[160];
        element_names(name, idx, nd, human, sizeof human, ptr, sizeof ptr);
        return problem_set(err, P_OUT_OF_RANGE, ptr, "%s = %g is outside float32's range", human, val);
      }
      out[e++] = (float)val;
    }
    if (e == total) return 0;
    /* advance the index: carry into the outer dimensions */
    d = nd - 2;
    while (d >= 0 && ++idx[d] == shape[d]) idx[d--] = 0;
    if (d < 0) return 0;
  }
}

/* Reads class indices of shape[0..nd) (nd 1 or 2): JSON integers only. */
static int read_labels(const json_t *v, const char *name, int nd, const int64_t *shape, int64_t *out, problem *err) {
  int64_t idx[2] = {0, 0};
  int64_t e = 0;
  for (int64_t i = 0; i < shape[0]; i++) {
    idx[0] = i;
    const json_t *row = json_array_get(v, (size_t)i);
    if (nd == 1) {
      if (!json_is_integer(row))
        return fail_at(err, P_INVALID_FIELD, name, idx, 1, "must be an integer class index, not %s", row ? json_kind(row) : "missing");
      out[e++] = json_integer_value(row);
      continue;
    }
    if (!json_is_array(row))
      return fail_at(err, P_INVALID_FIELD, name, idx, 1, "must be an array of class indices, not %s", row ? json_kind(row) : "missing");
    if ((int64_t)json_array_size(row) != shape[1]) {
      char human[128], ptr[160];
      element_names(name, idx, 1, human, sizeof human, ptr, sizeof ptr);
      return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has %zu entries; expected %" PRId64, human,
                         json_array_size(row), shape[1]);
    }
    for (int64_t j = 0; j < shape[1]; j++) {
      idx[1] = j;
      const json_t *x = json_array_get(row, (size_t)j);
      if (!json_is_integer(x))
        return fail_at(err, P_INVALID_FIELD, name, idx, 2, "must be an integer class index, not %s", json_kind(x));
      out[e++] = json_integer_value(x);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ ids */

/* Reads the ids into one allocation (pointers then bytes), rejecting duplicates. */
static int read_ids(const json_t *v, req *r, problem *err) {
  size_t n = json_array_size(v), bytes = 0;
  char num[32];
  for (size_t i = 0; i < n; i++) {
    const json_t *id = json_array_get(v, i);
    int64_t idx = (int64_t)i;
    if (json_is_string(id)) {
      size_t l = json_string_length(id);
      if (l < 1 || l > REQ_ID_MAX) {
        char ptr[64];
        snprintf(ptr, sizeof ptr, "/ids/%zu", i);
        return problem_set(err, P_BAD_NAME, ptr, "ids[%zu] must be 1 to %d bytes long, not %zu", i, REQ_ID_MAX, l);
      }
      const char *s = json_string_value(id);
      for (size_t k = 0; k < l; k++) {
        const unsigned char c = (unsigned char)s[k];
        /* C0 controls, DEL, and the C1 controls U+0080..U+009F (UTF-8 C2 80..C2 9F) */
        if (c < 0x20 || c == 0x7f || (c == 0xc2 && k + 1 < l && (unsigned char)s[k + 1] <= 0x9f))
          return fail_at(err, P_BAD_NAME, "ids", &idx, 1, "contains a control character");
      }
      bytes += l + 1;
    } else if (json_is_integer(id)) {
      bytes += (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(id)) + 1;
    } else {
      return fail_at(err, P_INVALID_FIELD, "ids", &idx, 1, "must be a string or an integer, not %s", json_kind(id));
    }
  }
  char **ids = malloc(n * sizeof *ids + bytes);
  if (!ids) return problem_set(err, P_INTERNAL, NULL, "out of memory decoding ids");
  r->n = (int64_t)n;
  char *p = (char *)(ids + n);
  for (size_t i = 0; i < n; i++) {
    const json_t *id = json_array_get(v, i);
    if (json_is_string(id)) {
      memcpy(p, json_string_value(id), json_string_length(id) + 1);
    } else {
      sprintf(p, "%" JSON_INTEGER_FORMAT, json_integer_value(id));
    }
    ids[i] = p;
    p += strlen(p) + 1;
  }
  r->ids = ids;
  return dec_check_unique(r, err);
}

int dec_check_unique(req *r, problem *err) {
  const size_t n = (size_t)r->n;
  if (r->nseg) {
    int64_t covered = 0;
    for (int k = 0; k < r->nseg; k++) covered += r->seg[k].n;
    if (covered != r->n)
      return problem_set(err, P_SHAPE_MISMATCH, "/segments", "segments cover %" PRId64 " samples but ids has %" PRId64,
                         covered, r->n);
  }
  uint32_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  uint32_t *seen = calloc(cap, sizeof *seen);
  if (!seen) return problem_set(err, P_INTERNAL, NULL, "out of memory checking ids");
  /* open addressing over indices + 1, each id at its latest index; an id may repeat in a later segment */
  int k = 0;
  size_t seg_start = 0, seg_end = r->nseg ? (size_t)r->seg[0].n : n;
  for (size_t i = 0; i < n; i++) {
    while (i >= seg_end) {
      seg_start = seg_end;
      seg_end += (size_t)r->seg[++k].n;
    }
    for (uint32_t h = (uint32_t)idhash(r->ids[i]) & (cap - 1);; h = (h + 1) & (cap - 1)) {
      if (seen[h] == 0 || strcmp(r->ids[seen[h] - 1], r->ids[i]) == 0) {
        if (seen[h] != 0 && seen[h] - 1 >= seg_start) {
          char ptr[64];
          if (r->binary) snprintf(ptr, sizeof ptr, "/inputs/%d", r->input_index[0]);
          else snprintf(ptr, sizeof ptr, "/ids/%zu", i);
          problem_set(err, P_DUPLICATE_ID, ptr, "ids[%zu] repeats ids[%u] (\"%.80s\")%s", i, seen[h] - 1, r->ids[i],
                      r->nseg ? " in the same segment" : "");
          free(seen);
          return -1;
        }
        seen[h] = (uint32_t)i + 1;
        break;
      }
    }
  }
  free(r->id_slot);
  r->id_slot = seen;
  r->id_cap = cap;
  return 0;
}

/* ------------------------------------------------------------------ loss */

int dec_check_loss(const fl_params *p, int64_t c, problem *err) {
  int64_t where = -1;
  int rc = fl_params_check(p, c, &where);
  switch (rc) {
  case 0: return 0;
  case FL_EGAMMA:
    if (p->loss == FL_ASL && (p->gamma_pos < 0 || p->gamma_neg < 0 || !isfinite(p->gamma_pos) || !isfinite(p->gamma_neg)))
      return problem_set(err, P_INVALID_LOSS, "/loss", "loss.gamma_pos and loss.gamma_neg must be finite and >= 0");
    if (p->loss == FL_CROSS_ENTROPY || p->loss == FL_BINARY_CROSS_ENTROPY)
      return problem_set(err, P_INVALID_LOSS, "/loss/gamma",
                         "loss.gamma must be 0 for %s (a focusing cross-entropy is the focal loss)", fl_loss_name(p->loss));
    return problem_set(err, P_INVALID_LOSS, "/loss/gamma", "loss.gamma must be finite and >= 0%s",
                       p->loss == FL_SIGMOID_FOCAL_STAR ? " (> 0 for sigmoid_focal_star)" : "");
  case FL_EALPHA:
    if (where >= 0) {
      char ptr[64];
      snprintf(ptr, sizeof ptr, "/loss/alpha/%" PRId64, where);
      return problem_set(err, P_INVALID_LOSS, ptr, "loss.alpha[%" PRId64 "] must be in [0, 1]", where);
    }
    return problem_set(err, P_INVALID_LOSS, "/loss/alpha", "loss.alpha must be in [0, 1], or null for no class weighting");
  case FL_EEPSILON: return problem_set(err, P_INVALID_LOSS, "/loss/epsilon", "loss.epsilon must be in [-1, 10000]");
  case FL_EPOSWEIGHT:
    if (where >= 0) {
      char ptr[64];
      snprintf(ptr, sizeof ptr, "/loss/pos_weight/%" PRId64, where);
      return problem_set(err, P_INVALID_LOSS, ptr, "loss.pos_weight[%" PRId64 "] must be finite and >= 0", where);
    }
    return problem_set(err, P_INVALID_LOSS, "/loss/pos_weight",
                       "loss.pos_weight weighs the positive term of a binary cross-entropy: it is for sigmoid_focal, "
                       "poly1_sigmoid_focal and binary_cross_entropy, not %s", fl_loss_name(p->loss));
  case FL_ECLIP: return problem_set(err, P_INVALID_LOSS, "/loss/clip", "loss.clip must be in [0, 1)");
  case FL_EUNSUPPORTED:
    return problem_set(err, P_INVALID_LOSS, "/loss/profile", "profile %s does not define %s for %s input",
                       fl_profile_name(p->profile), fl_loss_name(p->loss), p->input == FL_INPUT_PROBS ? "probability" : "logit");
  default: return problem_set(err, P_INVALID_LOSS, "/loss", "%s", fl_strerror(rc));
  }
}

static int number_field(const json_t *v, const char *ptr, const char *human, float *out, problem *err) {
  if (!json_is_number(v)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be a number, not %s", human, json_kind(v));
  double d = json_number_value(v);
  if (!(fabs(d) <= FLT_MAX)) return problem_set(err, P_OUT_OF_RANGE, ptr, "%s = %g is outside float32's range", human, d);
  *out = (float)d;
  return 0;
}

enum { NAMES_LOSS, NAMES_PROFILE, NAMES_REDUCTION };

/* Writes one of the library's name tables into buf as "a, b, c" and returns buf: an error then lists
 * exactly the names fl_*_parse accepts. */
static const char *name_list(int table, char *buf, size_t len) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0;; i++) {
    const char *nm = table == NAMES_LOSS      ? fl_loss_name((fl_loss)i)
                     : table == NAMES_PROFILE ? fl_profile_name((fl_profile)i)
                                              : fl_reduction_name((fl_reduction)i);
    if (!nm) break; /* past the end of the table */
    int w = snprintf(buf + used, len - used, "%s%s", i ? ", " : "", nm);
    if (w < 0 || (size_t)w >= len - used) break;
    used += (size_t)w;
  }
  return buf;
}

/* Reads the "loss" object into r->params; alpha arrays are checked against c later. */
static int read_loss(const json_t *lo, req *r, problem *err) {
  fl_loss type = FL_SIGMOID_FOCAL;
  char names[256];
  const json_t *t = json_object_get(lo, "type");
  if (t) {
    if (!json_is_string(t) || fl_loss_parse(json_string_value(t), &type) != 0)
      return problem_set(err, P_INVALID_LOSS, "/loss/type", "loss.type must be one of %s",
                         name_list(NAMES_LOSS, names, sizeof names));
  }
  fl_params_init(&r->params, type);
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)lo, key, v) {
    char ptr[64], human[64];
    snprintf(ptr, sizeof ptr, "/loss/%.40s", key);
    snprintf(human, sizeof human, "loss.%.40s", key);
    if (strcmp(key, "type") == 0) continue;
    if (strcmp(key, "profile") == 0) {
      if (!json_is_string(v) || fl_profile_parse(json_string_value(v), &r->params.profile) != 0)
        return problem_set(err, P_INVALID_LOSS, ptr, "loss.profile must be one of %s",
                           name_list(NAMES_PROFILE, names, sizeof names));
    } else if (strcmp(key, "reduction") == 0) {
      if (!json_is_string(v) || fl_reduction_parse(json_string_value(v), &r->params.reduction) != 0)
        return problem_set(err, P_INVALID_LOSS, ptr, "loss.reduction must be one of %s",
                           name_list(NAMES_REDUCTION, names, sizeof names));
    } else if (strcmp(key, "gamma") == 0) {
      if (number_field(v, ptr, human, &r->params.gamma, err)) return -1;
    } else if (strcmp(key, "epsilon") == 0) {
      if (number_field(v, ptr, human, &r->params.epsilon, err)) return -1;
    } else if (strcmp(key, "gamma_pos") == 0) {
      if (number_field(v, ptr, human, &r->params.gamma_pos, err)) return -1;
    } else if (strcmp(key, "gamma_neg") == 0) {
      if (number_field(v, ptr, human, &r->params.gamma_neg, err)) return -1;
    } else if (strcmp(key, "clip") == 0) {
      if (number_field(v, ptr, human, &r->params.clip, err)) return -1;
    } else if (strcmp(key, "ignore_index") == 0) {
      if (!json_is_integer(v)) return problem_set(err, P_INVALID_FIELD, ptr, "loss.ignore_index must be an integer");
      r->params.ignore_index = json_integer_value(v);
    } else if (strcmp(key, "pos_weight") == 0) {
      /* one number for every class, or one per class; the count is checked against c in dec_tail */
      if (json_is_array(v)) {
        size_t n = json_array_size(v);
        free(r->pos_weight);
        r->pos_weight = malloc((n ? n : 1) * sizeof *r->pos_weight);
        if (!r->pos_weight) return problem_set(err, P_INTERNAL, NULL, "out of memory");
        r->npos_weight = n;
        for (size_t i = 0; i < n; i++) {
          char p2[80], h2[80];
          snprintf(p2, sizeof p2, "/loss/pos_weight/%zu", i);
          snprintf(h2, sizeof h2, "loss.pos_weight[%zu]", i);
          if (number_field(json_array_get(v, i), p2, h2, &r->pos_weight[i], err)) return -1;
        }
      } else if (!json_is_null(v)) {
        if (number_field(v, ptr, human, &r->pos_weight_all, err)) return -1;
        free(r->pos_weight);
        r->pos_weight = malloc(sizeof *r->pos_weight); /* marks it given; grown to c entries in dec_tail */
        if (!r->pos_weight) return problem_set(err, P_INTERNAL, NULL, "out of memory");
        r->npos_weight = REQ_EVERY_CLASS;
      }
    } else if (strcmp(key, "alpha") == 0) {
      if (json_is_null(v)) {
        r->params.alpha = -1.0f;
      } else if (json_is_array(v)) {
        size_t n = json_array_size(v);
        r->alpha_c = malloc((n ? n : 1) * sizeof *r->alpha_c);
        if (!r->alpha_c) return problem_set(err, P_INTERNAL, NULL, "out of memory");
        for (size_t i = 0; i < n; i++) {
          char p2[80], h2[80];
          snprintf(p2, sizeof p2, "/loss/alpha/%zu", i);
          snprintf(h2, sizeof h2, "loss.alpha[%zu]", i);
          if (number_field(json_array_get(v, i), p2, h2, &r->alpha_c[i], err)) return -1;
        }
        r->params.alpha_c = r->alpha_c;
        r->params.alpha = (float)n; /* the length, until the class count is known (see dec_json) */
      } else {
        if (number_field(v, ptr, human, &r->params.alpha, err)) return -1;
        if (r->params.alpha < 0.0f)
          return problem_set(err, P_INVALID_LOSS, ptr, "loss.alpha must be in [0, 1], or null for no class weighting");
      }
    } else {
      return problem_set(err, P_UNKNOWN_FIELD, ptr, "loss has no field \"%.40s\"", key);
    }
  }
  return 0;
}

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
  if (!json_is_integer(v)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be an integer, not %s", name, json_kind(v));
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
  if (!json_is_array(x)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be an array, not %s", name, json_kind(x));
  if ((int64_t)json_array_size(x) != n)
    return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has %zu rows but ids has %" PRId64, name, json_array_size(x), n);
  const json_t *row = json_array_get(x, 0);
  if (!json_is_array(row) || json_array_size(row) == 0)
    return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s must be N x C or N x M x C numbers; %s[0] is %s", name, name,
                       json_is_array(row) ? "empty" : json_kind(row));
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
  if (r->n * r->m * r->c > ((int64_t)1 << 31))
    return problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has %" PRId64 " elements, more than focald takes in one batch", name, r->n * r->m * r->c);
  return 0;
}

/* Reads targets in the shape that says what they are (see README "targets"). */
static int read_targets(const json_t *t, req *r, problem *err) {
  const int64_t n = r->n, m = r->m, c = r->c;
  if (!json_is_array(t)) return problem_set(err, P_INVALID_FIELD, "/targets", "targets must be an array, not %s", json_kind(t));
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
    return r->dense ? read_floats(t, "targets", 3, shape3, r->targets, err) : read_floats(t, "targets", 2, shape2, r->targets, err);
  }
  if (binary) {
    /* one output per position: the numbers are the binary targets themselves */
    r->targets = req_alloc(r, (size_t)(n * m) * sizeof *r->targets);
    if (!r->targets) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    if (!r->dense) {
      for (int64_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(t, (size_t)i);
        if (!json_is_number(v))
          return fail_at(err, P_INVALID_FIELD, "targets", &i, 1, "must be a number in [0, 1], not %s", json_kind(v));
        r->targets[i] = (float)json_number_value(v);
      }
      return 0;
    }
    return read_floats(t, "targets", 2, shape_nm, r->targets, err);
  }
  int64_t *labels = req_alloc(r, (size_t)(n * m) * sizeof *labels);
  if (!labels) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  r->labels = labels;
  r->label_type = FL_LABEL_I64;
  if (r->dense) {
    if (!json_is_array(t0))
      return problem_set(err, P_SHAPE_MISMATCH, "/targets/0",
                         "with N x M x C logits, targets must be N x M class indices or N x M x C rows; targets[0] is %s", json_kind(t0));
    return read_labels(t, "targets", 2, shape_nm, labels, err);
  }
  return read_labels(t, "targets", 1, shape_n, labels, err);
}

static int read_weights(const json_t *w, req *r, problem *err) {
  const int64_t n = r->n, m = r->m, c = r->c;
  const int per_position = fl_loss_is_softmax(r->params.loss);
  if (!json_is_array(w)) return problem_set(err, P_INVALID_FIELD, "/weights", "weights must be an array, not %s", json_kind(w));
  if ((int64_t)json_array_size(w) != n)
    return problem_set(err, P_SHAPE_MISMATCH, "/weights", "weights has %zu rows but ids has %" PRId64, json_array_size(w), n);
  size_t count = (size_t)(per_position ? n * m : n * m * c);
  r->weights = req_alloc(r, count * sizeof *r->weights);
  if (!r->weights) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  if (per_position && !r->dense) {
    for (int64_t i = 0; i < n; i++) {
      const json_t *v = json_array_get(w, (size_t)i);
      if (!json_is_number(v))
        return fail_at(err, P_INVALID_FIELD, "weights", &i, 1, "must be a number (softmax losses weigh positions), not %s", json_kind(v));
      r->weights[i] = (float)json_number_value(v);
    }
    return 0;
  }
  if (per_position) {
    const int64_t shape[2] = {n, m};
    return read_floats(w, "weights", 2, shape, r->weights, err);
  }
  if (r->dense) {
    const int64_t shape[3] = {n, m, c};
    return read_floats(w, "weights", 3, shape, r->weights, err);
  }
  const int64_t shape[2] = {n, c};
  return read_floats(w, "weights", 2, shape, r->weights, err);
}

int dec_meta_check(const json_t *m, const char *ptr, problem *err) {
  static const char *const strings[] = {"uri", "study_uid", "series_uid", "sop_uid", "patient_id", NULL};
  char at[400];
  for (int i = 0; strings[i]; i++) {
    const json_t *v = json_object_get(m, strings[i]);
    if (v && !json_is_string(v) && !json_is_null(v)) {
      snprintf(at, sizeof at, "%s/%s", ptr, strings[i]);
      return problem_set(err, P_INVALID_FIELD, at, "%s must be a string, not %s", strings[i], json_kind(v));
    }
  }
  const json_t *tags = json_object_get(m, "tags");
  if (tags && !json_is_array(tags) && !json_is_object(tags) && !json_is_null(tags)) {
    snprintf(at, sizeof at, "%s/tags", ptr);
    return problem_set(err, P_INVALID_FIELD, at, "tags must be a list or an object, not %s", json_kind(tags));
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
  if (!json_is_object(meta)) return problem_set(err, P_INVALID_FIELD, "/meta", "meta must be an object keyed by sample id, not %s", json_kind(meta));
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
    char ptr[300];
    snprintf(ptr, sizeof ptr, "/meta/%.256s", key);
    int64_t at = -1;
    for (uint32_t h = (uint32_t)idhash(key) & (cap - 1); slot[h]; h = (h + 1) & (cap - 1))
      if (strcmp(r->ids[slot[h] - 1], key) == 0) {
        at = slot[h] - 1;
        break;
      }
    if (at < 0) return problem_set(err, P_INVALID_FIELD, ptr, "meta has an entry for \"%.80s\", which is not in ids", key);
    if (!json_is_object(v)) return problem_set(err, P_INVALID_FIELD, ptr, "meta[\"%.80s\"] must be an object, not %s", key, json_kind(v));
    if (dec_meta_check(v, ptr, err)) return -1;
    char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    if (!text) return problem_set(err, P_INTERNAL, NULL, "out of memory");
    if (strlen(text) > REQ_META_MAX) {
      free(text);
      return problem_set(err, P_OUT_OF_RANGE, ptr, "meta[\"%.80s\"] is larger than %d bytes", key, REQ_META_MAX);
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
      char ptr[160];
      snprintf(ptr, sizeof ptr, "%.90s/%.60s", at, key);
      return problem_set(err, P_UNKNOWN_FIELD, ptr, "%s has no field \"%.60s\"", at[0] ? at : "the body", key);
    }
  }
  return 0;
}

/* segments: [{n, step, epoch}, ...]; a segment without step or epoch has the request's (null: none). */
static int read_segments(const json_t *v, req *r, problem *err) {
  if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > REQ_SEGMENTS_MAX)
    return problem_set(err, P_INVALID_FIELD, "/segments", "segments must be an array of 1 to %d objects {n, step, epoch}",
                       REQ_SEGMENTS_MAX);
  const size_t k = json_array_size(v);
  if (!(r->seg = calloc(k, sizeof *r->seg))) return problem_set(err, P_INTERNAL, NULL, "out of memory");
  r->nseg = (int)k;
  static const char *const seg_fields[] = {"n", "step", "epoch", NULL};
  for (size_t i = 0; i < k; i++) {
    const json_t *o = json_array_get(v, i), *f;
    char name[48];
    if (!json_is_object(o))
      return problem_set(err, P_INVALID_FIELD, "/segments", "segments[%zu] must be an object {n, step, epoch}, not %s", i,
                         json_kind(o));
    snprintf(name, sizeof name, "/segments/%zu", i);
    if (dec_only_fields(o, seg_fields, name, err)) return -1;
    req_seg *g = &r->seg[i];
    snprintf(name, sizeof name, "segments/%zu/n", i);
    if (!(f = json_object_get(o, "n")))
      return problem_set(err, P_MISSING_FIELD, "/segments", "segments[%zu] needs n: its number of samples", i);
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
    if (!json_is_object(f)) return problem_set(err, P_INVALID_FIELD, "/loss", "loss must be an object, not %s", json_kind(f));
    if (read_loss(f, r, err)) return -1;
  } else {
    fl_params_init(&r->params, FL_SIGMOID_FOCAL);
  }
  return 0;
}

int dec_tail(const json_t *root, req *r, int want_store, problem *err) {
  const json_t *v;
  if (r->alpha_c && (int64_t)r->params.alpha != r->c)
    return problem_set(err, P_SHAPE_MISMATCH, "/loss/alpha", "loss.alpha has %d entries but there are %" PRId64 " classes",
                       (int)r->params.alpha, r->c);
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
  /* JSON_DECODE_ANY: a scalar body is JSON, just not an object (422, not 400) */
  json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
  if (!root)
    return problem_set(err, P_BAD_JSON, NULL, "%s (line %d, column %d)", je.text, je.line, je.column);
  int rc = -1;
  r->want_scores = 1;
  if (!json_is_object(root)) {
    problem_set(err, P_INVALID_FIELD, "", "the body must be a JSON object, not %s", json_kind(root));
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
  if (read_ids(ids, r, err)) goto out;
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
    if (r->dense ? read_floats(x, r->x_name, 3, s3, r->x, err) : read_floats(x, r->x_name, 2, s2, r->x, err)) goto out;
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

/* In a binary request the culprit's JSON pointer is its tensor's entry in inputs[]. */
static void binary_field(const req *r, int rc, problem *err) {
  if (!r->binary) return;
  int which = rc == FL_ETARGET || rc == FL_ELABEL ? 2 : rc == FL_EWEIGHT ? 3 : 1;
  snprintf(err->field, sizeof err->field, "/inputs/%d", r->input_index[which]);
}

void req_describe_error(const req *r, int rc, int64_t where, problem *err) {
  req_describe_error_json(r, rc, where, err);
  binary_field(r, rc, err);
}

/* The flat index of an element of the predictions' shape split into its
 * indices: [n][m][c] for dense predictions, else [n][c]. Returns how many. */
static int split_element(const req *r, int64_t where, int64_t idx[3]) {
  if (r->dense) {
    idx[0] = where / (r->m * r->c);
    idx[1] = where / r->c % r->m;
    idx[2] = where % r->c;
    return 3;
  }
  idx[0] = where / r->c;
  idx[1] = where % r->c;
  return 2;
}

void req_describe_error_json(const req *r, int rc, int64_t where, problem *err) {
  const int softmax = fl_loss_is_softmax(r->params.loss);
  int64_t idx[3];
  int nd;
  const char *name;
  /* split the flat index by the tensor's own shape */
  switch (rc) {
  case FL_EINPUT:
  case FL_EPROB:
  case FL_ETARGET:
    name = rc == FL_ETARGET ? "targets" : r->x_name;
    if (rc == FL_ETARGET && r->c == 1 && !softmax && r->targets && !r->dense) {
      nd = 1;
      idx[0] = where;
    } else {
      nd = split_element(r, where, idx);
    }
    if (rc == FL_EINPUT) fail_at(err, P_NOT_FINITE, name, idx, nd, "is not finite");
    else if (rc == FL_EPROB) fail_at(err, P_OUT_OF_RANGE, name, idx, nd, "is outside [0, 1]");
    else fail_at(err, P_OUT_OF_RANGE, name, idx, nd, "is outside [0, 1] or not finite");
    return;
  case FL_ELABEL: {
    char human[128], ptr[160];
    if (r->dense) {
      idx[0] = where / r->m;
      idx[1] = where % r->m;
      nd = 2;
    } else {
      idx[0] = where;
      nd = 1;
    }
    element_names("targets", idx, nd, human, sizeof human, ptr, sizeof ptr);
    problem_set(err, P_LABEL_OUT_OF_RANGE, ptr, "%s = %" PRId64 " is out of range for %" PRId64 " classes (0..%" PRId64 "%s%s)",
                human, r->labels ? req_label_at(r, where) : 0, r->c, softmax ? r->c - 1 : r->c,
                softmax ? "" : ", where the last means background", r->params.ignore_index != -1 ? "" : "; -1 is ignored");
    return;
  }
  case FL_EWEIGHT:
    if (softmax) {
      nd = r->dense ? 2 : 1;
      idx[0] = r->dense ? where / r->m : where;
      idx[1] = where % r->m;
    } else {
      nd = split_element(r, where, idx);
    }
    fail_at(err, P_OUT_OF_RANGE, "weights", idx, nd, "is negative or not finite");
    return;
  default:
    if (dec_check_loss(&r->params, r->c, err) == 0)
      problem_set(err, P_INVALID_FIELD, NULL, "the loss library refused the batch: %s", fl_strerror(rc));
    return;
  }
}
