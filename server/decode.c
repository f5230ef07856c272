/* decode.c — what decoding a request takes in every part: names, the request's memory, tensors and ids
 * read from JSON arrays, the loss settings, and an element named in the request's own terms.
 *
 * Both the JSON body (decode_body.c) and a binary body's JSON header (binary.c)
 * are read with these. Every error names its element twice: as a JSON pointer
 * in `field` and as "logits[3][7]" in `detail`.
 */
#include "decode.h"
#include "decode_internal.h"
#include "idhash.h"
#include "numfmt.h"

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
int decode__fail_at(problem *err, problem_code code, const char *name, const int64_t *idx, int nd, const char *fmt, ...) {
  char human[128], ptr[160], rest[256];
  va_list ap;
  element_names(name, idx, nd, human, sizeof human, ptr, sizeof ptr);
  va_start(ap, fmt);
  vsnprintf(rest, sizeof rest, fmt, ap);
  va_end(ap);
  return problem_set(err, code, ptr, "%s %s", human, rest);
}

/* ------------------------------------------------------------------ tensors */

/* Reads a float32 tensor of shape[0..nd) from nested arrays into out. */
int decode__read_floats(const json_t *v, const char *name, int nd, const int64_t *shape, float *out, problem *err) {
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
        return decode__fail_at(err, P_INVALID_FIELD, name, idx, d + 1, "must be an array, not %s", a ? decode__json_kind(a) : "missing");
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
      else return decode__fail_at(err, P_INVALID_FIELD, name, idx, nd, "must be a number, not %s", x ? decode__json_kind(x) : "missing");
      if (!num_fits_f32(val)) {
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
int decode__read_labels(const json_t *v, const char *name, int nd, const int64_t *shape, int64_t *out, problem *err) {
  int64_t idx[2] = {0, 0};
  int64_t e = 0;
  for (int64_t i = 0; i < shape[0]; i++) {
    idx[0] = i;
    const json_t *row = json_array_get(v, (size_t)i);
    if (nd == 1) {
      if (!json_is_integer(row))
        return decode__fail_at(err, P_INVALID_FIELD, name, idx, 1, "must be an integer class index, not %s", row ? decode__json_kind(row) : "missing");
      out[e++] = json_integer_value(row);
      continue;
    }
    if (!json_is_array(row))
      return decode__fail_at(err, P_INVALID_FIELD, name, idx, 1, "must be an array of class indices, not %s", row ? decode__json_kind(row) : "missing");
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
        return decode__fail_at(err, P_INVALID_FIELD, name, idx, 2, "must be an integer class index, not %s", decode__json_kind(x));
      out[e++] = json_integer_value(x);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------ ids */

/* Reads the ids into one allocation (pointers then bytes), rejecting duplicates. */
int decode__read_ids(const json_t *v, req *r, problem *err) {
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
          return decode__fail_at(err, P_BAD_NAME, "ids", &idx, 1, "contains a control character");
      }
      bytes += l + 1;
    } else if (json_is_integer(id)) {
      bytes += (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(id)) + 1;
    } else {
      return decode__fail_at(err, P_INVALID_FIELD, "ids", &idx, 1, "must be a string or an integer, not %s", decode__json_kind(id));
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
    if (p->loss == FL_ASL && (p->gamma_pos < 0 || p->gamma_neg < 0 || !isfinite(p->gamma_pos) || !isfinite(p->gamma_neg))) {
      const int pos_bad = p->gamma_pos < 0 || !isfinite(p->gamma_pos);
      return problem_set(err, P_INVALID_LOSS, pos_bad ? "/loss/gamma_pos" : "/loss/gamma_neg",
                         "loss.%s must be finite and >= 0", pos_bad ? "gamma_pos" : "gamma_neg");
    }
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
  if (!json_is_number(v)) return problem_set(err, P_INVALID_FIELD, ptr, "%s must be a number, not %s", human, decode__json_kind(v));
  double d = json_number_value(v);
  if (!num_fits_f32(d)) return problem_set(err, P_OUT_OF_RANGE, ptr, "%s = %g is outside float32's range", human, d);
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
int decode__read_loss(const json_t *lo, req *r, problem *err) {
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
    char ptr[PROBLEM_FIELD_MAX], human[64];
    problem_pointer_add(strcpy(ptr, "/loss"), sizeof ptr, key);
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
        r->nalpha = n; /* checked against the class count once it is known (dec_tail) */
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

/* ------------------------------------------------------------------ errors in the request's terms */

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

/* The value the loss library refused, at its flat index in the tensor it names (NaN when there is none). */
static float value_at(const float *tensor, int64_t where) {
  return tensor && where >= 0 ? tensor[where] : NAN;
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
    /* not a number or infinite: not_finite, whichever tensor carries it; a finite value outside [0, 1]: out_of_range */
    if (rc == FL_EINPUT || !isfinite(value_at(rc == FL_ETARGET ? r->targets : r->x, where)))
      decode__fail_at(err, P_NOT_FINITE, name, idx, nd, "is not finite");
    else
      decode__fail_at(err, P_OUT_OF_RANGE, name, idx, nd, "is outside [0, 1]");
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
    if (!isfinite(value_at(r->weights, where))) decode__fail_at(err, P_NOT_FINITE, "weights", idx, nd, "is not finite");
    else decode__fail_at(err, P_OUT_OF_RANGE, "weights", idx, nd, "is negative");
    return;
  default:
    if (dec_check_loss(&r->params, r->c, err) == 0)
      problem_set(err, P_INVALID_FIELD, NULL, "the loss library refused the batch: %s", fl_strerror(rc));
    return;
  }
}
