/* fuzz_binary_batch.c — libFuzzer target: the binary tensor framing (dec_binary) and the binary response (bin_response).
 *
 * The first input byte is a mode; the rest is the body or a recipe for one:
 *   bit 0     want_store (POST .../batches rather than /v1/loss)
 *   bit 1     the client sent Accept: application/octet-stream
 *   bit 2     misalign the tensors (the HTTP layer pads the body so that they
 *             start 64-byte aligned; clients of the library may not)
 *   bits 3-4  how the body and its Inference-Header-Content-Length are made:
 *     0, 3  framed: the rest is the body; the header is its leading JSON
 *           object (its length found as a client computes it), so that
 *           mutations of the header keep the framing consistent;
 *     1     explicit: four bytes of header length (int32, little-endian;
 *           negative is how http_request.c passes an absent or malformed
 *           header), then the body;
 *     2     generated: the rest is a recipe for a valid framed body of every
 *           shape, datatype and target kind (see gen_body), followed by up to
 *           four byte-level edits of that body (flip, truncate, insert,
 *           header length off by some bytes).
 * A refusal must carry a 4xx problem. A success must satisfy fuzz_req.h's
 * invariants, use only the datatypes the README documents for each tensor, and
 * give a response that bin_response frames correctly.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "binary.h"
#include "fuzz_req.h"
#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------ the body being built (buf.h) */

static void put(buf *b, const void *s, size_t n) {
  buf_append(b, s, n);
  if (b->failed) abort();
}

static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(buf *b, const char *fmt, ...) {
  char tmp[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ------------------------------------------------------------------ generated bodies */

enum { T_IDS, T_X, T_TARGETS, T_WEIGHTS };

static const char *const float_types[] = {"FP32", "FP16", "BF16", "FP64"};
static const char *const index_types[] = {"INT64", "INT32", "UINT8", "BOOL"};
static const char *const loss_types[] = {"sigmoid_focal", "softmax_focal", "sigmoid_focal_star", "poly1_sigmoid_focal",
                                         "poly1_softmax_focal", "asl"};

static size_t dtype_size(const char *dt) {
  if (!strcmp(dt, "FP64") || !strcmp(dt, "INT64")) return 8;
  if (!strcmp(dt, "FP32") || !strcmp(dt, "INT32")) return 4;
  if (!strcmp(dt, "FP16") || !strcmp(dt, "BF16")) return 2;
  return 1;
}

/* float32 to IEEE half (round to nearest even; enough for test values). */
static uint16_t to_half(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = x & 0x7fffff;
  if (e == 0xff) return (uint16_t)(sign | 0x7c00 | (m ? 0x200 : 0));
  int ee = (int)e - 127 + 15;
  if (ee >= 31) return (uint16_t)(sign | 0x7c00);
  if (ee <= 0) {
    if (ee < -10) return (uint16_t)sign;
    m |= 0x800000;
    uint32_t shift = (uint32_t)(14 - ee);
    uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) h++;
    return (uint16_t)(sign | h);
  }
  uint32_t h = sign | (uint32_t)ee << 10 | m >> 13, rem = m & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
  return (uint16_t)h;
}

/* One element of dtype with value v, or raw bytes from the recipe. */
static void put_value(buf *b, const char *dt, double v, rd *r, int raw) {
  unsigned char tmp[8];
  size_t sz = dtype_size(dt);
  if (raw) {
    for (size_t i = 0; i < sz; i++) tmp[i] = rd_u8(r);
    put(b, tmp, sz);
    return;
  }
  if (!strcmp(dt, "FP32")) {
    float f = (float)v;
    memcpy(tmp, &f, 4);
  } else if (!strcmp(dt, "FP64")) {
    memcpy(tmp, &v, 8);
  } else if (!strcmp(dt, "FP16")) {
    uint16_t h = to_half((float)v);
    memcpy(tmp, &h, 2);
  } else if (!strcmp(dt, "BF16")) {
    float f = (float)v;
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t h = (uint16_t)(u >> 16);
    memcpy(tmp, &h, 2);
  } else if (!strcmp(dt, "INT64")) {
    int64_t i = (int64_t)v;
    memcpy(tmp, &i, 8);
  } else if (!strcmp(dt, "INT32")) {
    int32_t i = (int32_t)v;
    memcpy(tmp, &i, 4);
  } else {
    tmp[0] = (unsigned char)(int)v;
  }
  put(b, tmp, sz);
}

typedef struct tspec {
  const char *name, *dt;
  int rank;
  int64_t shape[3];
  buf data;
} tspec;

/* Builds a valid framed body (as the README describes it) from the recipe.
 * Returns the header's length; *out holds header then tensors. */
static size_t gen_body(rd *r, buf *out) {
  static const double logits[] = {0.0, 1.0, -1.0, 2.0, -2.0, 0.5, 3.0, -3.0, 10.0, -20.0, 1e4, 65504.0, 1e-5, -0.0};
  static const double probs[] = {0.0, 1.0, 0.5, 0.25, 0.75, 0.1, 0.9, 1e-7, 0.999};
  static const double units[] = {0.0, 1.0, 0.0, 1.0, 0.5, 0.25};
  static const double weights[] = {1.0, 1.0, 0.5, 2.0, 0.0, 3.0};
  const uint8_t f0 = rd_u8(r), f1 = rd_u8(r), f2 = rd_u8(r);
  const int64_t n = 1 + rd_u8(r) % 6, c = 1 + rd_u8(r) % 6;
  const int dense = f0 & 1;
  const int64_t m = dense ? 1 + rd_u8(r) % 5 : 1;
  const int use_probs = (f0 >> 1) & 1;
  const int loss = (f0 >> 2) % 6 == 2 && use_probs ? 0 : (f0 >> 2) % 6; /* FL* takes logits only */
  const int softmax = loss == 1 || loss == 4;
  const int index_targets = !((f0 >> 5) & 1);
  const int use_weights = (f0 >> 6) & 1;
  const int bytes_ids = (f0 >> 7) & 1;
  const char *xdt = float_types[f1 % 4];
  const char *tdt = index_targets ? index_types[(f1 >> 2) % 4] : float_types[(f1 >> 4) % 4];
  const char *wdt = float_types[(f1 >> 6) % 4];

  tspec t[4];
  memset(t, 0, sizeof t);
  t[T_IDS] = (tspec){.name = "ids", .dt = bytes_ids ? "BYTES" : "INT64", .rank = 1, .shape = {n}};
  for (int64_t i = 0; i < n; i++) {
    if (bytes_ids) {
      uint8_t l = 1 + rd_u8(r) % 8;
      unsigned char len4[4] = {l, 0, 0, 0};
      put(&t[T_IDS].data, len4, 4);
      for (uint8_t q = 0; q < l; q++) {
        unsigned char ch = rd_u8(r);
        if (ch < 0xf0) ch = (unsigned char)('a' + ch % 26); /* mostly text; sometimes any byte */
        put(&t[T_IDS].data, &ch, 1);
      }
      /* the index keeps ids apart unless the recipe wants a duplicate */
      char suffix = (char)('0' + i);
      if (!(f2 & 0x80)) {
        t[T_IDS].data.b[t[T_IDS].data.len - l - 4] = (char)(l + 1);
        put(&t[T_IDS].data, &suffix, 1);
      }
    } else {
      int64_t id = (f2 & 0x80) ? rd_u8(r) % 4 : (int64_t)i * 1000003 - (int64_t)rd_u8(r);
      put(&t[T_IDS].data, &id, 8);
    }
  }
  t[T_X] = (tspec){.name = use_probs ? "probs" : "logits", .dt = xdt, .rank = dense ? 3 : 2};
  if (dense) {
    t[T_X].shape[0] = n;
    t[T_X].shape[1] = m;
    t[T_X].shape[2] = c;
  } else {
    t[T_X].shape[0] = n;
    t[T_X].shape[1] = c;
  }
  for (int64_t e = 0; e < n * m * c; e++) {
    uint8_t b = rd_u8(r);
    double v = use_probs ? probs[b % (sizeof probs / sizeof *probs)] : logits[b % (sizeof logits / sizeof *logits)];
    put_value(&t[T_X].data, xdt, v, r, b >= 0xf8);
  }
  const int binary = !softmax && c == 1;
  if (index_targets && !binary) {
    t[T_TARGETS] = (tspec){.name = "targets", .dt = tdt, .rank = dense ? 2 : 1, .shape = {n, m}};
    for (int64_t i = 0; i < n * m; i++) {
      uint8_t b = rd_u8(r);
      int64_t y = (int64_t)(b % (c + (softmax ? 0 : 1)));
      if (b >= 0xf0) y = -1; /* ignored (or, as UINT8 or BOOL, 255: out of range) */
      put_value(&t[T_TARGETS].data, tdt, (double)y, r, b >= 0xfc);
    }
  } else {
    if (index_targets) tdt = "FP32";
    /* binary targets may be [N] / [N, M] as well as rows */
    int rows_shape = !binary || (f2 & 1);
    t[T_TARGETS] = (tspec){.name = "targets", .dt = tdt, .rank = (dense ? 2 : 1) + rows_shape, .shape = {n, dense ? m : c, c}};
    for (int64_t e = 0; e < n * m * c; e++) {
      uint8_t b = rd_u8(r);
      put_value(&t[T_TARGETS].data, tdt, units[b % (sizeof units / sizeof *units)], r, b >= 0xfc);
    }
  }
  if (use_weights) {
    const int64_t count = softmax ? n * m : n * m * c;
    t[T_WEIGHTS] = (tspec){.name = "weights", .dt = wdt};
    if (softmax) {
      t[T_WEIGHTS].rank = dense ? 2 : 1;
      t[T_WEIGHTS].shape[0] = n;
      t[T_WEIGHTS].shape[1] = m;
    } else {
      t[T_WEIGHTS].rank = dense ? 3 : 2;
      t[T_WEIGHTS].shape[0] = n;
      t[T_WEIGHTS].shape[1] = dense ? m : c;
      t[T_WEIGHTS].shape[2] = c;
    }
    for (int64_t e = 0; e < count; e++) {
      uint8_t b = rd_u8(r);
      put_value(&t[T_WEIGHTS].data, wdt, weights[b % (sizeof weights / sizeof *weights)], r, b >= 0xfc);
    }
  }

  /* the header: fields, then inputs in an order the recipe picks */
  buf h = {0};
  putf(&h, "{");
  if (f2 & 2) putf(&h, "\"run\":\"r%u\",", f2 >> 4);
  if (f2 & 4) putf(&h, "\"batch_id\":\"b%u\",\"epoch\":%u,\"step\":%u,", f2, f1, f0);
  if (f2 & 8) putf(&h, "\"ohem_k\":%u,", (unsigned)(rd_u8(r) % (n + 1)));
  if (loss || (f2 & 16)) putf(&h, "\"loss\":{\"type\":\"%s\"},", loss_types[loss]);
  if (f2 & 32) putf(&h, "\"outputs\":[{\"name\":\"losses\"},{\"name\":\"pred\",\"parameters\":{\"binary_data\":true}}],");
  if (f2 & 64) putf(&h, "\"parameters\":{\"binary_data_output\":true},");
  if ((f1 & 1) && !bytes_ids) {
    int64_t first;
    memcpy(&first, t[T_IDS].data.b, sizeof first);
    putf(&h, "\"meta\":{\"%lld\":{\"k\":[1,2]}},", (long long)first);
  }
  putf(&h, "\"inputs\":[");
  int order[4] = {T_IDS, T_X, T_TARGETS, T_WEIGHTS};
  const int nt = use_weights ? 4 : 3;
  for (int i = nt - 1; i > 0; i--) { /* Fisher-Yates from the recipe */
    int j = rd_u8(r) % (i + 1);
    int tmp = order[i];
    order[i] = order[j];
    order[j] = tmp;
  }
  for (int i = 0; i < nt; i++) {
    const tspec *s = &t[order[i]];
    putf(&h, "%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[", i ? "," : "", s->name, s->dt);
    for (int k = 0; k < s->rank; k++) putf(&h, "%s%lld", k ? "," : "", (long long)s->shape[k]);
    putf(&h, "],\"parameters\":{\"binary_data_size\":%zu}}", s->data.len);
  }
  putf(&h, "]}");
  put(out, h.b, h.len);
  size_t header_len = h.len;
  free(h.b);
  for (int i = 0; i < nt; i++) put(out, t[order[i]].data.b ? t[order[i]].data.b : "", t[order[i]].data.len);
  for (int i = 0; i < 4; i++) free(t[i].data.b);
  return header_len;
}

/* Up to four edits of the generated body, each three bytes of the recipe. */
static void mutate(rd *r, buf *b, int64_t *header_len) {
  for (int i = 0; i < 4 && r->n >= 3; i++) {
    uint8_t op = rd_u8(r);
    size_t pos = b->len ? ((size_t)rd_u8(r) | (size_t)rd_u8(r) << 8) % b->len : 0;
    switch (op % 5) {
    case 0:
      if (b->len) b->b[pos] ^= (char)(1 << (op >> 5));
      break;
    case 1: b->len = pos; break; /* truncated */
    case 2: {
      char ch = (char)op;
      put(b, &ch, 1); /* a byte too many at the end */
      break;
    }
    case 3: *header_len += (int8_t)op >> 3; break;
    default:
      if (b->len) b->b[pos] = (char)(op >> 3);
      break;
    }
  }
}

/* Where the leading JSON object ends (as a client computes the header's length), or len. */
static size_t json_object_end(const char *s, size_t len) {
  size_t i = 0;
  int depth = 0, in_string = 0;
  while (i < len && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) i++;
  if (i == len || s[i] != '{') return len;
  for (; i < len; i++) {
    char ch = s[i];
    if (in_string) {
      if (ch == '\\') i++;
      else if (ch == '"') in_string = 0;
    } else if (ch == '"') {
      in_string = 1;
    } else if (ch == '{' || ch == '[') {
      depth++;
    } else if (ch == '}' || ch == ']') {
      if (--depth == 0) return i + 1;
    }
  }
  return len;
}

/* ------------------------------------------------------------------ checks beyond fuzz_req.h */

/* Each tensor's datatype must be one the README's table lists for it. */
static void check_datatypes(const char *body, int64_t header_len) {
  json_t *root = json_loadb(body, (size_t)header_len, 0, NULL);
  json_t *inputs = json_object_get(root, "inputs");
  for (size_t i = 0; i < json_array_size(inputs); i++) {
    json_t *in = json_array_get(inputs, i);
    const char *name = json_string_value(json_object_get(in, "name"));
    const char *dt = json_string_value(json_object_get(in, "datatype"));
    if (!name || !dt) fz_fail("an accepted input without name or datatype");
    int is_float = !strcmp(dt, "FP32") || !strcmp(dt, "FP16") || !strcmp(dt, "BF16") || !strcmp(dt, "FP64");
    int is_index = !strcmp(dt, "INT64") || !strcmp(dt, "INT32") || !strcmp(dt, "UINT8") || !strcmp(dt, "BOOL");
    int ok;
    if (!strcmp(name, "ids")) ok = !strcmp(dt, "INT64") || !strcmp(dt, "BYTES");
    else if (!strcmp(name, "targets")) ok = is_float || is_index;
    else ok = is_float; /* logits, probs, weights */
    if (!ok) fz_fail("inputs[%zu] (%s) accepted with datatype %s", i, name, dt);
  }
  json_decref(root);
}

static void check_binary_fields(const req *r, int want_store) {
  if (!r->binary) fz_fail("a binary body decoded without r->binary");
  int seen = 0;
  for (int k = 0; k < 4; k++) {
    int ix = r->input_index[k];
    if (k == 3 && ix == -1) {
      if (r->weights) fz_fail("weights without an input index");
      continue;
    }
    if (ix < 0 || ix > 4 || (seen & (1 << ix))) fz_fail("input_index[%d] = %d", k, ix);
    seen |= 1 << ix;
  }
  if (r->outputs >= (1u << BIN_OUTPUTS)) fz_fail("outputs 0x%x", r->outputs);
  if (want_store && (r->outputs & REQ_OUT_GRADS)) fz_fail("a recorded batch accepted gradient outputs");
}

/* The response for this request: its header is a JSON object of the stated length, its tensors fill the rest. */
static void check_response(const req *r) {
  const size_t n = (size_t)r->n;
  float *loss = calloc(n, sizeof *loss);
  fl_score *scores = calloc(n, sizeof *scores);
  int64_t hardest[3];
  if (!loss || !scores) abort();
  for (size_t i = 0; i < n; i++) {
    loss[i] = (float)i * 0.5f;
    scores[i].rows = (int32_t)(i % 2);
    scores[i].pred = (int32_t)i;
  }
  int64_t nh = r->n < 3 ? r->n : 3;
  for (int64_t i = 0; i < nh; i++) hardest[i] = i;
  /* the gradients, as the scoring pool allocates them when outputs names them */
  const size_t ne = (size_t)(r->n * r->m * r->c);
  float *grad = (r->outputs & (1u << BIN_GRAD)) ? calloc(ne ? ne : 1, sizeof *grad) : NULL;
  float *grad_norm = (r->outputs & (1u << BIN_GRAD_NORM)) ? calloc(n ? n : 1, sizeof *grad_norm) : NULL;
  bin_result res = {.dataset = r->binary_response ? "d" : NULL, .run = r->run, .n = r->n, .m = r->m, .c = r->c,
                    .dense = r->dense, .mean_loss = 0.25, .loss = loss, .scores = scores, .grad = grad,
                    .grad_norm = grad_norm, .hardest = hardest, .nhardest = nh, .outputs = r->outputs};
  char *body = NULL;
  size_t len = 0, hl = 0;
  if (bin_response(&res, &body, &len, &hl, NULL) != 0) fz_fail("bin_response failed");
  size_t tensors = 0;
  for (int k = 0; k < BIN_OUTPUTS; k++)
    if (r->outputs & (1u << k)) tensors += (k == BIN_GRAD ? ne : n) * 4;
  if (hl + tensors != len) fz_fail("response: header %zu + tensors %zu != %zu bytes", hl, tensors, len);
  json_error_t je;
  json_t *h = json_loadb(body, hl, JSON_REJECT_DUPLICATES, &je);
  if (!json_is_object(h)) fz_fail("response header is not a JSON object: %s", je.text);
  json_t *outs = json_object_get(h, "outputs");
  size_t sum = 0;
  for (size_t i = 0; i < json_array_size(outs); i++)
    sum += (size_t)json_integer_value(json_object_get(json_object_get(json_array_get(outs, i), "parameters"), "binary_data_size"));
  if (sum != tensors) fz_fail("response outputs declare %zu bytes, carry %zu", sum, tensors);
  json_decref(h);
  free(body);
  free(loss);
  free(scores);
  free(grad);
  free(grad_norm);
}

/* ------------------------------------------------------------------ the target */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const int want_store = mode & 1, accept_binary = (mode >> 1) & 1, misalign = (mode >> 2) & 1;
  const int framing = (mode >> 3) & 3;
  rd r = {data + 1, size - 1};
  buf b = {0};
  int64_t header_len;
  if (framing == 2) {
    header_len = (int64_t)gen_body(&r, &b);
    mutate(&r, &b, &header_len);
  } else if (framing == 1) {
    int32_t v = 0;
    for (int i = 0; i < 4; i++) v = (int32_t)((uint32_t)v | (uint32_t)rd_u8(&r) << (8 * i));
    header_len = v;
    put(&b, r.p, r.n);
  } else {
    put(&b, r.p, r.n);
    header_len = (int64_t)json_object_end(b.b ? b.b : "", b.len);
  }

  /* the body in an allocation of exactly its size, placed as http_request.c places it: tensors 64-byte aligned */
  size_t pad = header_len > 0 ? (size_t)((64 - header_len % 64) % 64) : 0;
  if (misalign) pad = (pad + 1) % 64;
  void *base = NULL;
  if (posix_memalign(&base, 64, pad + b.len + 1) != 0) abort();
  char *body = (char *)base + pad;
  if (b.len) memcpy(body, b.b, b.len);
  free(b.b);

  req q;
  problem err;
  memset(&err, 0, sizeof err);
  if (dec_binary(&q, body, b.len, header_len, want_store, accept_binary, &err) != 0) {
    fz_check_refusal(&err);
  } else {
    fz_check_decoded(&q, want_store, 0);
    check_binary_fields(&q, want_store);
    check_datatypes(body, header_len);
    fz_check_scored(&q);
    check_response(&q);
    req_free(&q);
  }
  free(base);
  return 0;
}
