/* binary.c — binary tensor bodies: a JSON header, then each tensor's raw bytes, decoded into a request.
 *
 * The layout is the Open Inference Protocol's binary data extension (as used
 * by Triton and KServe): the first Inference-Header-Content-Length bytes of
 * the body are a JSON object with the request's fields and `inputs`, each
 * {name, datatype, shape, parameters: {binary_data_size}}; the tensors'
 * little-endian row-major bytes follow in the order of `inputs`. The HTTP
 * layer allocates the body so that the first tensor starts 64-byte aligned;
 * an FP32 tensor whose bytes are aligned is then read where it lies, with no
 * copy. Other float types are converted once into float32; integer labels
 * (INT64, INT32, UINT8) go to the loss library as they are. Responses in the
 * same framing are built by binary_response.c.
 */
#include "binary.h"
#include "jtext.h"
#include "numfmt.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum dtype { DT_FP32, DT_FP16, DT_BF16, DT_FP64, DT_INT64, DT_INT32, DT_UINT8, DT_BOOL, DT_BYTES, DT_COUNT } dtype;

static const char *const dtype_names[DT_COUNT] = {"FP32", "FP16", "BF16", "FP64", "INT64", "INT32", "UINT8", "BOOL", "BYTES"};
static const size_t dtype_sizes[DT_COUNT] = {4, 2, 2, 8, 8, 4, 1, 1, 0};

/* One declared tensor and where its bytes are. */
typedef struct tensor {
  const char *name;
  int index;           /* in inputs[] */
  dtype dt;
  int rank;
  int64_t shape[4];
  int64_t count;       /* elements */
  const unsigned char *data;
  size_t bytes;
} tensor;

/* The header fields a binary body may have, besides the tensors. */
static const char *const header_fields[] = {"id",     "run",    "batch_id", "epoch",   "step",       "segments",
                                            "loss",   "meta",   "ohem_k",   "inputs",  "outputs",    "parameters", NULL};

static const char *const tensor_names[] = {"ids", "logits", "probs", "targets", "weights", NULL};

static int in_ptr(char *text, size_t n, int i, const char *rest) {
  return snprintf(text, n, "/inputs/%d%s", i, rest);
}

/* ------------------------------------------------------------------ conversions */

/* IEEE half to float, exactly (subnormals, infinities and NaN included). */
static float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, bits;
  if (e == 0) {
    if (m == 0) {
      bits = sign;
    } else {
      /* subnormal: normalise */
      e = 127 - 15 + 1;
      while (!(m & 0x400)) {
        m <<= 1;
        e--;
      }
      bits = sign | e << 23 | (m & 0x3ff) << 13;
    }
  } else if (e == 31) {
    bits = sign | 0x7f800000u | m << 13;
  } else {
    bits = sign | (e + 127 - 15) << 23 | m << 13;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

static float load_f32(const unsigned char *p) {
  float f;
  memcpy(&f, p, 4);
  return f;
}

/* The tensor as float32: in place when it is FP32 and aligned, else converted into a copy r owns. */
static float *as_floats(req *r, const tensor *t, problem *err) {
  if (t->dt == DT_FP32 && (uintptr_t)t->data % sizeof(float) == 0) return (float *)(uintptr_t)t->data;
  float *out = req_alloc(r, (size_t)t->count * sizeof *out);
  if (!out) {
    problem_set(err, P_INTERNAL, NULL, "out of memory converting %s", t->name);
    return NULL;
  }
  const unsigned char *p = t->data;
  for (int64_t i = 0; i < t->count; i++) {
    switch (t->dt) {
    case DT_FP32: out[i] = load_f32(p + 4 * i); break;
    case DT_FP16: {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      out[i] = half_to_float(h);
      break;
    }
    case DT_BF16: {
      uint16_t h;
      memcpy(&h, p + 2 * i, 2);
      uint32_t bits = (uint32_t)h << 16; /* bfloat16 is the top half of a float32 */
      memcpy(&out[i], &bits, 4);
      break;
    }
    case DT_FP64: {
      double d;
      memcpy(&d, p + 8 * i, 8);
      if (isfinite(d) && !num_fits_f32(d)) {
        char ptr[64];
        in_ptr(ptr, sizeof ptr, t->index, "");
        problem_set(err, P_OUT_OF_RANGE, ptr, "%s element %" PRId64 " = %g is outside float32's range", t->name, i, d);
        return NULL;
      }
      out[i] = (float)d;
      break;
    }
    case DT_INT64: {
      int64_t v;
      memcpy(&v, p + 8 * i, 8);
      out[i] = (float)v;
      break;
    }
    case DT_INT32: {
      int32_t v;
      memcpy(&v, p + 4 * i, 4);
      out[i] = (float)v;
      break;
    }
    case DT_UINT8:
    case DT_BOOL: out[i] = (float)p[i]; break;
    default: out[i] = 0.0f; break;
    }
  }
  return out;
}

/* ------------------------------------------------------------------ ids */

/* Whether s[0..n) is valid UTF-8 with no control characters. */
static int id_text_ok(const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n;) {
    unsigned char c = s[i];
    if (c < 0x20 || c == 0x7f) return 0;
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
    if (len == 0 || c > 0xf4 || i + len > n) return 0;
    uint32_t cp = c & (0x7f >> len);
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return 0;
      cp = cp << 6 | (s[i + k] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF, and the C1 controls */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff) ||
        cp <= 0x9f)
      return 0;
    i += len;
  }
  return 1;
}

/* Integer ids as decimal strings, without printf (a million per second). */
static size_t format_i64(char *out, int64_t v) {
  char tmp[24];
  size_t n = 0;
  uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
  do {
    tmp[n++] = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  size_t j = 0;
  if (v < 0) out[j++] = '-';
  while (n) out[j++] = tmp[--n];
  out[j] = '\0';
  return j;
}

static int read_ids(req *r, const tensor *t, problem *err) {
  char ptr[64];
  in_ptr(ptr, sizeof ptr, t->index, "");
  if (t->rank != 1) return problem_set(err, P_SHAPE_MISMATCH, ptr, "ids must have shape [N]");
  const size_t n = (size_t)t->shape[0];
  if (n == 0) return problem_set(err, P_INVALID_FIELD, ptr, "ids must not be empty");
  size_t bytes = 0;
  if (t->dt == DT_INT64) {
    bytes = n * 21;
  } else if (t->dt == DT_BYTES) {
    /* each element: a 4-byte little-endian length, then the bytes; checked in read_layout */
    const unsigned char *p = t->data;
    for (size_t i = 0; i < n; i++) {
      uint32_t l = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
      if (l < 1 || l > REQ_ID_MAX)
        return problem_set(err, P_BAD_NAME, ptr, "ids[%zu] must be 1 to %d bytes long, not %u", i, REQ_ID_MAX, l);
      if (!id_text_ok(p + 4, l))
        return problem_set(err, P_BAD_NAME, ptr, "ids[%zu] is not UTF-8 text without control characters", i);
      bytes += l + 1;
      p += 4 + l;
    }
  } else {
    return problem_set(err, P_INVALID_FIELD, ptr, "ids must be INT64 or BYTES, not %s", dtype_names[t->dt]);
  }
  char **ids = malloc(n * sizeof *ids + bytes);
  if (!ids) return problem_set(err, P_INTERNAL, NULL, "out of memory decoding ids");
  char *s = (char *)(ids + n);
  const unsigned char *p = t->data;
  for (size_t i = 0; i < n; i++) {
    ids[i] = s;
    if (t->dt == DT_INT64) {
      int64_t v;
      memcpy(&v, p + 8 * i, 8);
      s += format_i64(s, v) + 1;
    } else {
      uint32_t l = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
      memcpy(s, p + 4, l);
      s[l] = '\0';
      s += l + 1;
      p += 4 + l;
    }
  }
  r->ids = ids;
  r->n = (int64_t)n;
  return dec_check_unique(r, err);
}

/* ------------------------------------------------------------------ the header's inputs */

static int parse_dtype(const char *s) {
  for (int d = 0; d < DT_COUNT; d++)
    if (strcmp(dtype_names[d], s) == 0) return d;
  return -1;
}

/* Reads inputs[] and lays the tensors out after the header; every size must add up. */
static int read_layout(const json_t *inputs, const unsigned char *data, size_t avail, tensor *ts, int *nt, problem *err) {
  if (!json_is_array(inputs) || json_array_size(inputs) == 0)
    return problem_set(err, P_MISSING_FIELD, "/inputs", "inputs must list the tensors: ids, logits or probs, targets");
  if (json_array_size(inputs) > 5)
    return problem_set(err, P_INVALID_FIELD, "/inputs", "inputs has %zu tensors; focald takes at most ids, logits or probs, targets, weights",
                       json_array_size(inputs));
  size_t off = 0;
  *nt = 0;
  for (size_t i = 0; i < json_array_size(inputs); i++) {
    const json_t *in = json_array_get(inputs, i);
    char ptr[64];
    tensor *t = &ts[(*nt)++];
    memset(t, 0, sizeof *t);
    t->index = (int)i;
    in_ptr(ptr, sizeof ptr, (int)i, "");
    if (!json_is_object(in)) return problem_set(err, P_INVALID_FIELD, ptr, "inputs[%zu] must be an object", i);
    const json_t *name = json_object_get(in, "name"), *dt = json_object_get(in, "datatype"), *shape = json_object_get(in, "shape");
    const json_t *params = json_object_get(in, "parameters");
    const json_t *size = params ? json_object_get(params, "binary_data_size") : NULL;
    in_ptr(ptr, sizeof ptr, (int)i, "/name");
    if (!json_is_string(name)) return problem_set(err, P_MISSING_FIELD, ptr, "inputs[%zu] needs a name", i);
    t->name = NULL;
    for (int k = 0; tensor_names[k]; k++)
      if (strcmp(tensor_names[k], json_string_value(name)) == 0) t->name = tensor_names[k];
    if (!t->name)
      return problem_set(err, P_UNKNOWN_FIELD, ptr, "inputs[%zu] is named \"%.40s\"; focald takes ids, logits, probs, targets and weights",
                         i, json_string_value(name));
    for (int k = 0; k < *nt - 1; k++)
      if (ts[k].name == t->name) return problem_set(err, P_INVALID_FIELD, ptr, "inputs has two tensors named %s", t->name);
    in_ptr(ptr, sizeof ptr, (int)i, "/datatype");
    int d = json_is_string(dt) ? parse_dtype(json_string_value(dt)) : -1;
    if (d < 0)
      return problem_set(err, P_INVALID_FIELD, ptr, "inputs[%zu] (%s) has datatype %.20s; expected one of FP32, FP16, BF16, FP64, INT64, INT32, UINT8, BOOL, BYTES",
                         i, t->name, json_is_string(dt) ? json_string_value(dt) : "(none)");
    t->dt = (dtype)d;
    in_ptr(ptr, sizeof ptr, (int)i, "/shape");
    if (!json_is_array(shape) || json_array_size(shape) < 1 || json_array_size(shape) > 3)
      return problem_set(err, P_SHAPE_MISMATCH, ptr, "inputs[%zu] (%s) needs a shape of 1 to 3 dimensions", i, t->name);
    t->rank = (int)json_array_size(shape);
    t->count = 1;
    for (int k = 0; k < t->rank; k++) {
      const json_t *dim = json_array_get(shape, (size_t)k);
      if (!json_is_integer(dim) || json_integer_value(dim) < 0)
        return problem_set(err, P_SHAPE_MISMATCH, ptr, "inputs[%zu] (%s): shape[%d] must be an integer from 0 to 2^31", i, t->name, k);
      if (json_integer_value(dim) > ((int64_t)1 << 31))
        return problem_set(err, P_TOO_LARGE, ptr, "inputs[%zu] (%s): shape[%d] is more than 2^31", i, t->name, k);
      t->shape[k] = json_integer_value(dim);
      t->count *= t->shape[k];
      if (t->count > ((int64_t)1 << 31))
        return problem_set(err, P_TOO_LARGE, ptr, "inputs[%zu] (%s) has more than 2^31 elements", i, t->name);
    }
    in_ptr(ptr, sizeof ptr, (int)i, "/parameters/binary_data_size");
    if (!json_is_integer(size) || json_integer_value(size) < 0)
      return problem_set(err, P_MISSING_FIELD, ptr, "inputs[%zu] (%s) needs parameters.binary_data_size: focald takes tensors as binary data", i, t->name);
    t->bytes = (size_t)json_integer_value(size);
    if (t->bytes > avail - off)
      return problem_set(err, P_BAD_FRAMING, ptr, "inputs[%zu] (%s) declares %zu bytes, but only %zu remain in the body (truncated?)", i,
                         t->name, t->bytes, avail - off);
    t->data = data + off;
    if (t->dt == DT_BYTES) {
      /* the elements must fill exactly the declared bytes */
      size_t pos = 0;
      for (int64_t e = 0; e < t->count; e++) {
        if (t->bytes - pos < 4)
          return problem_set(err, P_BAD_FRAMING, ptr, "inputs[%zu] (%s): element %" PRId64 " runs past binary_data_size", i, t->name, e);
        const unsigned char *p = t->data + pos;
        size_t l = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
        if (l > t->bytes - pos - 4)
          return problem_set(err, P_BAD_FRAMING, ptr, "inputs[%zu] (%s): element %" PRId64 " runs past binary_data_size", i, t->name, e);
        pos += 4 + l;
      }
      if (pos != t->bytes)
        return problem_set(err, P_BAD_FRAMING, ptr, "inputs[%zu] (%s): the elements take %zu bytes; binary_data_size is %zu", i, t->name, pos, t->bytes);
    } else if ((size_t)t->count * dtype_sizes[t->dt] != t->bytes) {
      return problem_set(err, P_BAD_FRAMING, ptr, "inputs[%zu] (%s): %" PRId64 " %s elements are %zu bytes; binary_data_size is %zu", i,
                         t->name, t->count, dtype_names[t->dt], (size_t)t->count * dtype_sizes[t->dt], t->bytes);
    }
    off += t->bytes;
  }
  if (off != avail)
    return problem_set(err, P_BAD_FRAMING, "/inputs", "the body has %zu bytes after the header; the inputs declare %zu", avail, off);
  return 0;
}

static const tensor *find(const tensor *ts, int nt, const char *name) {
  for (int i = 0; i < nt; i++)
    if (strcmp(ts[i].name, name) == 0) return &ts[i];
  return NULL;
}

static int is_int(dtype d) {
  return d == DT_INT64 || d == DT_INT32 || d == DT_UINT8 || d == DT_BOOL;
}

static int is_float(dtype d) {
  return d == DT_FP32 || d == DT_FP16 || d == DT_BF16 || d == DT_FP64;
}

/* Whether t's shape is exactly want[0..rank). */
static int shape_is(const tensor *t, int rank, const int64_t *want) {
  if (t->rank != rank) return 0;
  for (int k = 0; k < rank; k++)
    if (t->shape[k] != want[k]) return 0;
  return 1;
}

static void shape_text(char *text, size_t n, int rank, const int64_t *s) {
  size_t j = (size_t)snprintf(text, n, "[");
  for (int k = 0; k < rank && j < n; k++) j += (size_t)snprintf(text + j, n - j, "%s%" PRId64, k ? ", " : "", s[k]);
  if (j < n) snprintf(text + j, n - j, "]");
}

static int read_targets(req *r, const tensor *t, problem *err) {
  char ptr[64], got[80], a[80], b[80];
  in_ptr(ptr, sizeof ptr, t->index, "");
  if (t->dt == DT_BYTES) return problem_set(err, P_INVALID_FIELD, ptr, "targets must be numbers, not BYTES");
  if (t->dt == DT_BOOL) { /* one byte each, false or true: any other byte is no BOOL (and no class index) */
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->count; i++)
      if (p[i] > 1)
        return problem_set(err, P_INVALID_FIELD, ptr, "targets element %" PRId64 " is the byte %u; a BOOL is 0 or 1", i, p[i]);
  }
  const int64_t nm[2] = {r->n, r->m}, nmc[3] = {r->n, r->m, r->c}, nc[2] = {r->n, r->c};
  const int dense_rank = r->dense ? 3 : 2;
  const int idx_rank = r->dense ? 2 : 1;
  const int64_t *dense_shape = r->dense ? nmc : nc;
  const int binary = !fl_loss_is_softmax(r->params.loss) && r->c == 1;
  shape_text(got, sizeof got, t->rank, t->shape);
  shape_text(a, sizeof a, idx_rank, nm);
  shape_text(b, sizeof b, dense_rank, dense_shape);
  if (shape_is(t, dense_rank, dense_shape) && !(binary && shape_is(t, idx_rank, nm))) {
    if (!is_float(t->dt) && !is_int(t->dt))
      return problem_set(err, P_INVALID_FIELD, ptr, "targets rows must be numbers, not %s", dtype_names[t->dt]);
    r->targets = as_floats(r, t, err);
    return r->targets ? 0 : -1;
  }
  if (shape_is(t, idx_rank, nm)) {
    if (binary) {
      /* one output per position: the values are the binary targets themselves */
      r->targets = as_floats(r, t, err);
      return r->targets ? 0 : -1;
    }
    if (!is_int(t->dt))
      return problem_set(err, P_INVALID_FIELD, ptr, "class-index targets must be INT64, INT32 or UINT8, not %s", dtype_names[t->dt]);
    switch (t->dt) {
    case DT_INT64:
      if ((uintptr_t)t->data % 8 == 0) {
        r->labels = t->data;
      } else {
        int64_t *copy = req_alloc(r, t->bytes);
        if (!copy) return problem_set(err, P_INTERNAL, NULL, "out of memory");
        memcpy(copy, t->data, t->bytes);
        r->labels = copy;
      }
      r->label_type = FL_LABEL_I64;
      break;
    case DT_INT32:
      if ((uintptr_t)t->data % 4 == 0) {
        r->labels = t->data;
      } else {
        int32_t *copy = req_alloc(r, t->bytes);
        if (!copy) return problem_set(err, P_INTERNAL, NULL, "out of memory");
        memcpy(copy, t->data, t->bytes);
        r->labels = copy;
      }
      r->label_type = FL_LABEL_I32;
      break;
    default:
      r->labels = t->data;
      r->label_type = FL_LABEL_U8;
      break;
    }
    return 0;
  }
  return problem_set(err, P_SHAPE_MISMATCH, ptr, "targets has shape %s; with %s of shape %s it must be %s (class indices) or %s (rows)",
                     got, r->x_name, r->dense ? "[N, M, C]" : "[N, C]", a, b);
}

static int read_weights(req *r, const tensor *t, problem *err) {
  char ptr[64], want[80];
  in_ptr(ptr, sizeof ptr, t->index, "");
  const int per_position = fl_loss_is_softmax(r->params.loss);
  const int64_t nm[2] = {r->n, r->m}, nmc[3] = {r->n, r->m, r->c}, nc[2] = {r->n, r->c}, n1[1] = {r->n};
  int ok;
  if (per_position) {
    ok = r->dense ? shape_is(t, 2, nm) : shape_is(t, 1, n1);
    shape_text(want, sizeof want, r->dense ? 2 : 1, r->dense ? nm : n1);
  } else {
    ok = r->dense ? shape_is(t, 3, nmc) : shape_is(t, 2, nc);
    shape_text(want, sizeof want, r->dense ? 3 : 2, r->dense ? nmc : nc);
  }
  if (!ok) return problem_set(err, P_SHAPE_MISMATCH, ptr, "weights must have shape %s", want);
  if (!is_float(t->dt)) return problem_set(err, P_INVALID_FIELD, ptr, "weights must be FP32, FP16, BF16 or FP64, not %s", dtype_names[t->dt]);
  r->weights = as_floats(r, t, err);
  return r->weights ? 0 : -1;
}

/* Which outputs the client asked for, and in which framing. */
static int read_outputs(const json_t *root, req *r, int want_store, int accept_binary, problem *err) {
  const json_t *params = json_object_get(root, "parameters");
  const json_t *bdo = params ? json_object_get(params, "binary_data_output") : NULL;
  r->binary_response = accept_binary || json_is_true(bdo);
  return dec_outputs(json_object_get(root, "outputs"), r, want_store, &r->binary_response, err);
}

int dec_binary(req *r, const char *body, size_t len, int64_t header_len, int want_store, int accept_binary, problem *err) {
  memset(r, 0, sizeof *r);
  if (header_len < 0)
    return problem_set(err, P_BAD_FRAMING, NULL, "a binary body needs an Inference-Header-Content-Length header: the JSON header's length in bytes");
  if ((size_t)header_len > len)
    return problem_set(err, P_BAD_FRAMING, NULL, "Inference-Header-Content-Length is %" PRId64 " but the body has only %zu bytes",
                       header_len, len);
  json_error_t je;
  int oom;
  json_t *root = jtext_loadb(body, (size_t)header_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je, &oom);
  if (!root && oom) return problem_set(err, P_INTERNAL, NULL, "out of memory reading the binary body's JSON header");
  if (!root) return problem_set(err, P_BAD_JSON, NULL, "the binary body's JSON header: %s (column %d)", je.text, je.column);
  int rc = -1;
  tensor ts[5];
  int nt = 0;
  if (!json_is_object(root)) {
    problem_set(err, P_INVALID_FIELD, "", "the binary body's header must be a JSON object");
    goto out;
  }
  if (dec_header(root, r, want_store, header_fields, err)) goto out;
  if (read_layout(json_object_get(root, "inputs"), (const unsigned char *)body + header_len, len - (size_t)header_len, ts, &nt, err))
    goto out;
  const tensor *ids = find(ts, nt, "ids"), *logits = find(ts, nt, "logits"), *probs = find(ts, nt, "probs");
  const tensor *targets = find(ts, nt, "targets"), *weights = find(ts, nt, "weights");
  if (!ids) {
    problem_set(err, P_MISSING_FIELD, "/inputs", "inputs needs an ids tensor");
    goto out;
  }
  if (!logits == !probs) {
    problem_set(err, logits ? P_INVALID_FIELD : P_MISSING_FIELD, "/inputs", logits ? "give either logits or probs, not both" : "inputs needs a logits (or probs) tensor");
    goto out;
  }
  if (!targets) {
    problem_set(err, P_MISSING_FIELD, "/inputs", "inputs needs a targets tensor");
    goto out;
  }
  r->binary = 1;
  r->input_index[0] = ids->index;
  r->input_index[1] = (logits ? logits : probs)->index;
  r->input_index[2] = targets->index;
  r->input_index[3] = weights ? weights->index : -1;
  if (read_ids(r, ids, err)) goto out;
  const tensor *x = logits ? logits : probs;
  r->x_name = x->name;
  r->params.input = logits ? FL_INPUT_LOGITS : FL_INPUT_PROBS;
  {
    char ptr[64];
    in_ptr(ptr, sizeof ptr, x->index, "/shape");
    if (x->rank < 2 || x->shape[0] != r->n) {
      problem_set(err, P_SHAPE_MISMATCH, ptr, "%s must have shape [N, C] or [N, M, C] with N = %" PRId64 " ids", x->name, r->n);
      goto out;
    }
    if (!is_float(x->dt)) {
      in_ptr(ptr, sizeof ptr, x->index, "/datatype");
      problem_set(err, P_INVALID_FIELD, ptr, "%s must be FP32, FP16, BF16 or FP64, not %s", x->name, dtype_names[x->dt]);
      goto out;
    }
    r->dense = x->rank == 3;
    r->m = r->dense ? x->shape[1] : 1;
    r->c = x->shape[x->rank - 1];
    if (r->m < 1 || r->c < 1) {
      problem_set(err, P_SHAPE_MISMATCH, ptr, "%s has an empty dimension", x->name);
      goto out;
    }
  }
  if (!(r->x = as_floats(r, x, err))) goto out;
  if (read_targets(r, targets, err)) goto out;
  if (weights && read_weights(r, weights, err)) goto out;
  if (dec_tail(root, r, want_store, err)) goto out;
  if (read_outputs(root, r, want_store, accept_binary, err)) goto out;
  /* a request that stores must score: the history is built from the scores */
  r->want_scores = want_store || (r->outputs & REQ_OUT_DEFAULT & ~(1u << BIN_LOSSES)) != 0 || !r->binary_response;
  rc = 0;
out:
  json_decref(root);
  if (rc != 0) req_free(r);
  return rc;
}
