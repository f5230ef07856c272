/* test_binary.c — the binary tensor framing (README "Binary tensors"): bodies that decode to the right
 * tensors in every datatype, aligned FP32 read in place and everything else copied, each inconsistency
 * refused with its problem code and field, and binary responses whose header describes their bytes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "binary.h"

/* ------------------------------------------------------------------ building bodies */

/* One tensor of a body: its header entry and its bytes. size < 0 declares the bytes given. */
typedef struct tspec {
  const char *name, *dtype, *shape; /* shape as JSON text, "[2,3]" */
  const void *data;
  size_t bytes;
  long long size;
} tspec;

/* A framed body: the header and the tensors' bytes, laid out so that the first tensor starts
 * `misalign` bytes past a 64-byte boundary (the HTTP layer gives 0). */
typedef struct frame {
  void *base;
  char *body;
  size_t len, header_len;
} frame;

/* Writes {<fields>,"inputs":[...]} for the tensors, then their bytes, into f. fields may be "". */
static void build(frame *f, const char *fields, const tspec *ts, int nt, size_t misalign) {
  char header[4096];
  size_t h = (size_t)snprintf(header, sizeof header, "{%s%s\"inputs\":[", fields, fields[0] ? "," : "");
  size_t data = 0;
  for (int i = 0; i < nt; i++) {
    const long long size = ts[i].size < 0 ? (long long)ts[i].bytes : ts[i].size;
    h += (size_t)snprintf(header + h, sizeof header - h,
                          "%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":%s,\"parameters\":{\"binary_data_size\":%lld}}",
                          i ? "," : "", ts[i].name, ts[i].dtype, ts[i].shape, size);
    data += ts[i].bytes;
  }
  h += (size_t)snprintf(header + h, sizeof header - h, "]}");
  assert_true(h < sizeof header);
  f->header_len = h;
  f->len = h + data;
  f->base = aligned_alloc(64, (h + data + 128 + 63) / 64 * 64);
  assert_non_null(f->base);
  /* the body starts so that body + h lies misalign bytes past a 64-byte boundary */
  const size_t start = (64 - h % 64 + misalign) % 64;
  f->body = (char *)f->base + start;
  memcpy(f->body, header, h);
  size_t off = h;
  for (int i = 0; i < nt; i++) {
    memcpy(f->body + off, ts[i].data, ts[i].bytes);
    off += ts[i].bytes;
  }
  assert_int_equal(((uintptr_t)(f->body + h) - misalign) % 64, 0);
}

static void frame_free(frame *f) {
  free(f->base);
}

/* Decoding f must fail with code at field (field NULL: any). */
static void expect_problem_at(const frame *f, size_t len, int64_t header_len, int want_store, problem_code code,
                              const char *field, const char *what) {
  req r;
  problem err = {0};
  if (dec_binary(&r, f->body, len, header_len, want_store, 0, &err) == 0) {
    req_free(&r);
    fail_msg("%s: decoded, expected %s", what, problem_name(code));
  }
  if (err.code != code || (field && strcmp(err.field, field) != 0))
    fail_msg("%s: got %s at \"%s\" (%s), expected %s at \"%s\"", what, problem_name(err.code), err.field, err.detail,
             problem_name(code), field ? field : "(any)");
  assert_true(strlen(err.detail) > 0); /* every problem says what is wrong */
}

static void expect_problem(const char *fields, const tspec *ts, int nt, problem_code code, const char *field, const char *what) {
  frame f;
  build(&f, fields, ts, nt, 0);
  expect_problem_at(&f, f.len, (int64_t)f.header_len, 1, code, field, what);
  frame_free(&f);
}

/* The tensors of a valid two-sample, three-class request, as in the README's worked example. */
static const int64_t IDS78[2] = {7, 8};
static const float LOGITS23[6] = {0, 1, 2, 2, -1, 0.5f};
static const uint8_t TARGETS_U8[2] = {2, 0};
#define T_IDS {"ids", "INT64", "[2]", IDS78, 16, -1}
#define T_LOGITS {"logits", "FP32", "[2,3]", LOGITS23, 24, -1}
#define T_TARGETS {"targets", "UINT8", "[2]", TARGETS_U8, 2, -1}

/* ------------------------------------------------------------------ valid bodies */

/* The README's worked example, byte for byte: a 279-byte header, then 42 bytes of tensors. */
static void test_binary_readme_example_decodes(void **state) {
  (void)state;
  static const char header[] =
      "{\"run\":\"r1\",\"inputs\":[{\"name\":\"ids\",\"datatype\":\"INT64\",\"shape\":[2],\"parameters\":{\"binary_data_size\":16}},"
      "{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":[2,3],\"parameters\":{\"binary_data_size\":24}},{\"name\":\"targets\","
      "\"datatype\":\"UINT8\",\"shape\":[2],\"parameters\":{\"binary_data_size\":2}}]}";
  static const unsigned char data[42] = {0x07, 0, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0, 0x40, 0, 0, 0x80, 0xbf, 0, 0, 0, 0x3f,
                                         0x02, 0x00};
  assert_int_equal(strlen(header), 279); /* the length the README gives */
  char *base = aligned_alloc(64, 448);
  assert_non_null(base);
  char *body = base + (64 - 279 % 64); /* the tensors start 64-byte aligned, as the HTTP layer lays them */
  memcpy(body, header, 279);
  memcpy(body + 279, data, 42);
  req r;
  problem err = {0};
  assert_int_equal(dec_binary(&r, body, 321, 279, 1, 0, &err), 0);
  assert_string_equal(r.run, "r1");
  assert_true(r.binary);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.m, 1);
  assert_int_equal(r.c, 3);
  assert_false(r.dense);
  assert_string_equal(r.ids[0], "7"); /* INT64 ids are their decimal strings, as in JSON */
  assert_string_equal(r.ids[1], "8");
  assert_string_equal(r.x_name, "logits");
  assert_int_equal(r.params.input, FL_INPUT_LOGITS);
  const float want[6] = {0, 1, 2, 2, -1, 0.5f};
  for (int i = 0; i < 6; i++) assert_true(r.x[i] == want[i]);
  assert_ptr_equal(r.x, body + 279 + 16); /* aligned FP32 is read where it lies, no copy */
  assert_int_equal(r.label_type, FL_LABEL_U8);
  assert_null(r.targets);
  assert_int_equal(req_label_at(&r, 0), 2);
  assert_int_equal(req_label_at(&r, 1), 0);
  assert_null(r.weights);
  assert_int_equal(r.input_index[0], 0);
  assert_int_equal(r.input_index[1], 1);
  assert_int_equal(r.input_index[2], 2);
  assert_int_equal(r.input_index[3], -1);
  assert_false(r.binary_response); /* JSON unless asked for */
  req_free(&r);
  free(base);
}

/* BYTES ids: a 4-byte little-endian length, then UTF-8; the header's other fields are read as in JSON. */
static void test_binary_bytes_ids_and_header_fields(void **state) {
  (void)state;
  static const unsigned char ids[] = {1, 0, 0, 0, 'a', 6, 0, 0, 0, 'c', 'a', 'f', 0xc3, 0xa9, 'x'};
  const tspec ts[] = {{"ids", "BYTES", "[2]", ids, sizeof ids, -1}, T_LOGITS, T_TARGETS};
  frame f;
  build(&f, "\"run\":\"r2\",\"batch_id\":\"b-1\",\"epoch\":3,\"step\":40,\"ohem_k\":1", ts, 3, 0);
  req r;
  problem err = {0};
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_string_equal(r.ids[0], "a");
  assert_string_equal(r.ids[1], "caf\xc3\xa9x");
  assert_string_equal(r.run, "r2");
  assert_string_equal(r.batch_id, "b-1");
  assert_true(r.has_epoch && r.epoch == 3 && r.has_step && r.step == 40);
  assert_int_equal(r.ohem_k, 1);
  req_free(&r);
  frame_free(&f);
}

/* FP16 (normal, subnormal, largest, signed zero), BF16 and FP64 logits become float32 exactly. */
static void test_binary_float_datatypes_convert(void **state) {
  (void)state;
  static const int64_t one_id[1] = {1};
  static const uint8_t t0[1] = {0};
  /* 1, -2, 0.5, 2^-24 (the least subnormal), 65504 (the largest half), -0 */
  static const uint16_t fp16[6] = {0x3c00, 0xc000, 0x3800, 0x0001, 0x7bff, 0x8000};
  const float want16[6] = {1.0f, -2.0f, 0.5f, 0x1p-24f, 65504.0f, -0.0f};
  /* bfloat16 is the top half of a float32: 1, -3, 3.140625 */
  static const uint16_t bf16[3] = {0x3f80, 0xc040, 0x4049};
  const float wantbf[3] = {1.0f, -3.0f, 3.140625f};
  static const double fp64[3] = {0.1, -2.5, 1e30};
  const float want64[3] = {(float)0.1, -2.5f, (float)1e30};
  struct {
    const char *dtype, *shape;
    const void *data;
    size_t bytes;
    const float *want;
    int count;
  } cases[] = {{"FP16", "[1,6]", fp16, sizeof fp16, want16, 6}, {"BF16", "[1,3]", bf16, sizeof bf16, wantbf, 3},
               {"FP64", "[1,3]", fp64, sizeof fp64, want64, 3}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    const tspec ts[] = {{"ids", "INT64", "[1]", one_id, 8, -1},
                        {"logits", cases[k].dtype, cases[k].shape, cases[k].data, cases[k].bytes, -1},
                        {"targets", "UINT8", "[1]", t0, 1, -1}};
    frame f;
    build(&f, "", ts, 3, 0);
    req r;
    problem err = {0};
    if (dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err) != 0) fail_msg("%s: %s", cases[k].dtype, err.detail);
    assert_int_equal(r.c, cases[k].count);
    for (int i = 0; i < cases[k].count; i++) {
      if (memcmp(&r.x[i], &cases[k].want[i], 4) != 0) /* bitwise: -0 must stay -0 */
        fail_msg("%s element %d: %a, expected %a", cases[k].dtype, i, r.x[i], cases[k].want[i]);
    }
    req_free(&r);
    frame_free(&f);
  }
}

/* An FP32 tensor that is not 4-byte aligned is copied, with the same values; class-index INT64 and INT32
 * targets off their alignment are copied too, and read right. */
static void test_binary_misaligned_tensors_are_copied(void **state) {
  (void)state;
  static const int64_t labels64[2] = {1, 2};
  for (size_t misalign = 0; misalign < 4; misalign++) {
    /* ids 16 bytes, logits 24: targets start 40 bytes in, +misalign (INT64 aligned only when misalign is 0) */
    const tspec ts[] = {T_IDS, T_LOGITS, {"targets", "INT64", "[2]", labels64, 16, -1}};
    frame f;
    build(&f, "", ts, 3, misalign);
    req r;
    problem err = {0};
    assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
    const char *logits_at = f.body + f.header_len + 16;
    if (misalign == 0) assert_ptr_equal(r.x, logits_at);
    else assert_ptr_not_equal(r.x, logits_at);
    assert_true((uintptr_t)r.x % 4 == 0);
    assert_memory_equal(r.x, LOGITS23, sizeof LOGITS23);
    assert_int_equal(r.label_type, FL_LABEL_I64);
    assert_true((uintptr_t)r.labels % 8 == 0);
    assert_int_equal(req_label_at(&r, 0), 1);
    assert_int_equal(req_label_at(&r, 1), 2);
    req_free(&r);
    frame_free(&f);
  }
  static const int32_t labels32[2] = {2, 1};
  const tspec ts32[] = {T_IDS, T_LOGITS, {"targets", "INT32", "[2]", labels32, 8, -1}};
  frame f;
  build(&f, "", ts32, 3, 2);
  req r;
  problem err = {0};
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_int_equal(r.label_type, FL_LABEL_I32);
  assert_true((uintptr_t)r.labels % 4 == 0);
  assert_int_equal(req_label_at(&r, 0), 2);
  assert_int_equal(req_label_at(&r, 1), 1);
  req_free(&r);
  frame_free(&f);
}

/* Targets by shape: [N, C] rows, dense [N, M, C] logits with [N, M] indices and per-element weights,
 * softmax weights per position, and C = 1 with the sigmoid family, where [N] numbers are binary targets. */
static void test_binary_target_kinds_and_weights(void **state) {
  (void)state;
  req r;
  problem err = {0};
  frame f;
  /* soft rows */
  static const float rows[6] = {0, 0, 1, 0.5f, 0.5f, 0};
  const tspec soft[] = {T_IDS, T_LOGITS, {"targets", "FP32", "[2,3]", rows, 24, -1}};
  build(&f, "", soft, 3, 0);
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_null(r.labels);
  assert_non_null(r.targets);
  assert_memory_equal(r.targets, rows, sizeof rows);
  req_free(&r);
  frame_free(&f);
  /* dense: [1, 2, 3] logits, [1, 2] INT64 indices, [1, 2, 3] weights (sigmoid: per element) */
  static const int64_t one_id[1] = {5};
  static const int64_t idx[2] = {0, -1};
  static const float w[6] = {1, 2, 3, 4, 5, 6};
  const tspec dense[] = {{"ids", "INT64", "[1]", one_id, 8, -1},
                         {"logits", "FP32", "[1,2,3]", LOGITS23, 24, -1},
                         {"targets", "INT64", "[1,2]", idx, 16, -1},
                         {"weights", "FP32", "[1,2,3]", w, 24, -1}};
  build(&f, "", dense, 4, 0);
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_true(r.dense);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.m, 2);
  assert_int_equal(r.c, 3);
  assert_int_equal(req_label_at(&r, 1), -1);
  assert_memory_equal(r.weights, w, sizeof w);
  assert_int_equal(r.input_index[3], 3);
  req_free(&r);
  frame_free(&f);
  /* softmax: weights are one per sample, here FP64 converted */
  static const double wd[2] = {0.5, 2};
  const tspec sm[] = {T_IDS, T_LOGITS, T_TARGETS, {"weights", "FP64", "[2]", wd, 16, -1}};
  build(&f, "\"loss\":{\"type\":\"softmax_focal\"}", sm, 4, 0);
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_int_equal(r.params.loss, FL_SOFTMAX_FOCAL);
  assert_true(r.weights[0] == 0.5f && r.weights[1] == 2.0f);
  req_free(&r);
  frame_free(&f);
  /* C = 1, sigmoid: [N] numbers are the targets themselves, whatever their datatype */
  static const float z[2] = {0.25f, -1};
  static const uint8_t bin[2] = {1, 0};
  const tspec one[] = {T_IDS, {"logits", "FP32", "[2,1]", z, 8, -1}, {"targets", "UINT8", "[2]", bin, 2, -1}};
  build(&f, "", one, 3, 0);
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_null(r.labels);
  assert_non_null(r.targets);
  assert_true(r.targets[0] == 1.0f && r.targets[1] == 0.0f);
  req_free(&r);
  frame_free(&f);
  /* probs instead of logits */
  static const float p[6] = {0.1f, 0.2f, 0.7f, 0.3f, 0.3f, 0.4f};
  const tspec probs[] = {T_IDS, {"probs", "FP32", "[2,3]", p, 24, -1}, T_TARGETS};
  build(&f, "\"loss\":{\"type\":\"softmax_focal\"}", probs, 3, 0);
  assert_int_equal(dec_binary(&r, f.body, f.len, (int64_t)f.header_len, 1, 0, &err), 0);
  assert_int_equal(r.params.input, FL_INPUT_PROBS);
  assert_string_equal(r.x_name, "probs");
  req_free(&r);
  frame_free(&f);
}

/* A binary answer is asked for by Accept, by parameters.binary_data_output or by an output's binary_data;
 * on /v1/loss, asking for losses alone skips the scores; a stored batch always scores. */
static void test_binary_response_framing_and_outputs(void **state) {
  (void)state;
  const tspec ts[] = {T_IDS, T_LOGITS, T_TARGETS};
  static const struct {
    const char *fields;
    int want_store, accept_binary;
    int binary_response, want_scores;
    uint32_t outputs;
  } cases[] = {
      {"", 1, 0, 0, 1, REQ_OUT_DEFAULT},
      {"", 0, 1, 1, 1, REQ_OUT_DEFAULT},
      {"\"parameters\":{\"binary_data_output\":true}", 0, 0, 1, 1, REQ_OUT_DEFAULT},
      {"\"outputs\":[{\"name\":\"losses\",\"parameters\":{\"binary_data\":true}}]", 0, 0, 1, 0, 1u << REQ_OUT_LOSSES},
      {"\"outputs\":[\"losses\"]", 0, 1, 1, 0, 1u << REQ_OUT_LOSSES},
      {"\"outputs\":[\"losses\"]", 1, 1, 1, 1, 1u << REQ_OUT_LOSSES},           /* stored: the history needs scores */
      {"\"outputs\":[\"losses\"]", 0, 0, 0, 1, 1u << REQ_OUT_LOSSES},           /* a JSON answer keeps its scores */
      {"\"outputs\":[\"losses\",\"pred\"]", 0, 1, 1, 1, (1u << REQ_OUT_LOSSES) | (1u << REQ_OUT_PRED)},
      {"\"outputs\":[{\"name\":\"grad\"},{\"name\":\"grad_norm\"}]", 0, 1, 1, 0, REQ_OUT_GRADS},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    frame f;
    build(&f, cases[k].fields, ts, 3, 0);
    req r;
    problem err = {0};
    if (dec_binary(&r, f.body, f.len, (int64_t)f.header_len, cases[k].want_store, cases[k].accept_binary, &err) != 0)
      fail_msg("case %zu: %s", k, err.detail);
    if (r.binary_response != cases[k].binary_response || r.want_scores != cases[k].want_scores || r.outputs != cases[k].outputs)
      fail_msg("case %zu (%s): binary_response %d want_scores %d outputs %#x", k, cases[k].fields, r.binary_response,
               r.want_scores, r.outputs);
    req_free(&r);
    frame_free(&f);
  }
}

/* ------------------------------------------------------------------ refusals */

/* The framing itself: no Inference-Header-Content-Length, one longer than the body, a header that is not
 * JSON or not an object, and sizes that do not add up (400 bad_framing, field in inputs). */
static void test_binary_framing_errors(void **state) {
  (void)state;
  const tspec ok[] = {T_IDS, T_LOGITS, T_TARGETS};
  frame f;
  build(&f, "", ok, 3, 0);
  expect_problem_at(&f, f.len, -1, 1, P_BAD_FRAMING, NULL, "no Inference-Header-Content-Length");
  expect_problem_at(&f, f.len, (int64_t)f.len + 1, 1, P_BAD_FRAMING, NULL, "header length past the body");
  expect_problem_at(&f, f.len, (int64_t)f.header_len - 1, 1, P_BAD_JSON, "", "header cut one byte short");
  /* the body cut short: the last tensor (targets, 2 bytes) runs past the end */
  expect_problem_at(&f, f.len - 1, (int64_t)f.header_len, 1, P_BAD_FRAMING, "/inputs/2/parameters/binary_data_size",
                    "truncated body");
  /* and cut before the logits end: the logits' size is the first that does not fit */
  expect_problem_at(&f, f.header_len + 20, (int64_t)f.header_len, 1, P_BAD_FRAMING, "/inputs/1/parameters/binary_data_size",
                    "truncated in the logits");
  frame_free(&f);
  /* bytes left over after the declared tensors */
  static const uint8_t three[3] = {2, 0, 0};
  const tspec extra[] = {T_IDS, T_LOGITS, {"targets", "UINT8", "[2]", three, 3, 2}};
  expect_problem("", extra, 3, P_BAD_FRAMING, "/inputs", "trailing bytes");
  /* binary_data_size that disagrees with shape x datatype */
  const tspec wrong[] = {T_IDS, {"logits", "FP32", "[2,3]", LOGITS23, 24, 20}, T_TARGETS};
  expect_problem("", wrong, 3, P_BAD_FRAMING, "/inputs/1/parameters/binary_data_size", "size not shape x itemsize");
  const tspec f16[] = {T_IDS, {"logits", "FP16", "[2,3]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", f16, 3, P_BAD_FRAMING, "/inputs/1/parameters/binary_data_size", "FP16 elements are 2 bytes");
  /* BYTES elements: one running past the declared size, and elements that leave bytes unused */
  static const unsigned char past[] = {1, 0, 0, 0, 'a', 9, 0, 0, 0, 'b'};
  const tspec bpast[] = {{"ids", "BYTES", "[2]", past, sizeof past, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", bpast, 3, P_BAD_FRAMING, "/inputs/0/parameters/binary_data_size", "BYTES element past the size");
  static const unsigned char spare[] = {1, 0, 0, 0, 'a', 1, 0, 0, 0, 'b', 'c'};
  const tspec bspare[] = {{"ids", "BYTES", "[2]", spare, sizeof spare, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", bspare, 3, P_BAD_FRAMING, "/inputs/0/parameters/binary_data_size", "BYTES elements short of the size");
  static const unsigned char stub[] = {1, 0, 0, 0, 'a', 1, 0};
  const tspec bstub[] = {{"ids", "BYTES", "[2]", stub, sizeof stub, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", bstub, 3, P_BAD_FRAMING, "/inputs/0/parameters/binary_data_size", "BYTES length prefix cut");
  /* a header that is JSON but not an object, and one that is not JSON */
  static const char arr[] = "[1,2]";
  static const char bad[] = "{\"inputs\":";
  struct {
    const char *text;
    problem_code code;
  } hs[] = {{arr, P_INVALID_FIELD}, {bad, P_BAD_JSON}};
  for (int k = 0; k < 2; k++) {
    frame g = {0};
    g.body = (char *)hs[k].text;
    g.len = strlen(hs[k].text);
    expect_problem_at(&g, g.len, (int64_t)g.len, 1, hs[k].code, "", hs[k].text);
  }
}

/* The header's inputs: each malformed entry is named by its JSON pointer. */
static void test_binary_inputs_errors(void **state) {
  (void)state;
  const tspec ok[] = {T_IDS, T_LOGITS, T_TARGETS};
  expect_problem("\"inputs\":[],\"run\":\"r\"", NULL, 0, P_BAD_JSON, "", "inputs twice"); /* duplicate keys refused */
  frame f = {0};
  static const char none[] = "{\"run\":\"r\"}";
  f.body = (char *)none;
  expect_problem_at(&f, sizeof none - 1, sizeof none - 1, 1, P_MISSING_FIELD, "/inputs", "no inputs");
  expect_problem("", NULL, 0, P_MISSING_FIELD, "/inputs", "empty inputs");
  expect_problem("\"dataset\":\"d\"", ok, 3, P_UNKNOWN_FIELD, "/dataset", "a field the header does not have");
  const tspec six[] = {T_IDS, T_LOGITS, T_TARGETS, T_TARGETS, T_TARGETS, T_TARGETS};
  expect_problem("", six, 6, P_INVALID_FIELD, "/inputs", "six tensors");
  const tspec unknown[] = {T_IDS, T_LOGITS, {"labels", "UINT8", "[2]", TARGETS_U8, 2, -1}};
  expect_problem("", unknown, 3, P_UNKNOWN_FIELD, "/inputs/2/name", "a tensor name focald does not know");
  const tspec twice[] = {T_IDS, T_LOGITS, T_TARGETS, {"logits", "FP32", "[2,3]", LOGITS23, 24, -1}};
  expect_problem("", twice, 4, P_INVALID_FIELD, "/inputs/3/name", "two logits");
  const tspec dtype[] = {T_IDS, {"logits", "FP8", "[2,3]", LOGITS23, 6, -1}, T_TARGETS};
  expect_problem("", dtype, 3, P_INVALID_FIELD, "/inputs/1/datatype", "unknown datatype");
  const tspec rank4[] = {T_IDS, {"logits", "FP32", "[2,3,1,1]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", rank4, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "four dimensions");
  const tspec rank0[] = {T_IDS, {"logits", "FP32", "[]", LOGITS23, 4, -1}, T_TARGETS};
  expect_problem("", rank0, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "no dimensions");
  const tspec neg[] = {T_IDS, {"logits", "FP32", "[2,-3]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", neg, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "a negative dimension");
  const tspec frac[] = {T_IDS, {"logits", "FP32", "[2,1.5]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", frac, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "a fractional dimension");
  const tspec huge[] = {T_IDS, {"logits", "FP32", "[65536,65536]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", huge, 3, P_TOO_LARGE, "/inputs/1/shape", "more than 2^31 elements");
  const tspec wide[] = {T_IDS, {"logits", "FP32", "[2,2147483649]", LOGITS23, 24, -1}, T_TARGETS};
  expect_problem("", wide, 3, P_TOO_LARGE, "/inputs/1/shape", "a dimension past 2^31");
  /* no binary_data_size: focald takes tensors only as binary data */
  static const char nosize[] =
      "{\"inputs\":[{\"name\":\"ids\",\"datatype\":\"INT64\",\"shape\":[2]}]}";
  f.body = (char *)nosize;
  expect_problem_at(&f, sizeof nosize - 1, sizeof nosize - 1, 1, P_MISSING_FIELD, "/inputs/0/parameters/binary_data_size",
                    "no binary_data_size");
  static const char notobj[] = "{\"inputs\":[7]}";
  f.body = (char *)notobj;
  expect_problem_at(&f, sizeof notobj - 1, sizeof notobj - 1, 1, P_INVALID_FIELD, "/inputs/0", "an entry that is no object");
  static const char noname[] = "{\"inputs\":[{\"datatype\":\"INT64\",\"shape\":[1],\"parameters\":{\"binary_data_size\":8}}]}";
  f.body = (char *)noname;
  expect_problem_at(&f, sizeof noname - 1, sizeof noname - 1, 1, P_MISSING_FIELD, "/inputs/0/name", "an entry without a name");
}

/* Which tensors a request has, and what each must be: 422 with the tensor's pointer. */
static void test_binary_tensor_content_errors(void **state) {
  (void)state;
  const tspec noids[] = {T_LOGITS, T_TARGETS};
  expect_problem("", noids, 2, P_MISSING_FIELD, "/inputs", "no ids");
  const tspec nox[] = {T_IDS, T_TARGETS};
  expect_problem("", nox, 2, P_MISSING_FIELD, "/inputs", "neither logits nor probs");
  const tspec both[] = {T_IDS, T_LOGITS, T_TARGETS, {"probs", "FP32", "[2,3]", LOGITS23, 24, -1}};
  expect_problem("", both, 4, P_INVALID_FIELD, "/inputs", "logits and probs");
  const tspec notargets[] = {T_IDS, T_LOGITS};
  expect_problem("", notargets, 2, P_MISSING_FIELD, "/inputs", "no targets");
  /* ids */
  static const float fids[2] = {1, 2};
  const tspec idsf[] = {{"ids", "FP32", "[2]", fids, 8, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idsf, 3, P_INVALID_FIELD, "/inputs/0", "FP32 ids");
  const tspec ids2d[] = {{"ids", "INT64", "[2,1]", IDS78, 16, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", ids2d, 3, P_SHAPE_MISMATCH, "/inputs/0", "ids of rank 2");
  const tspec ids0[] = {{"ids", "INT64", "[0]", IDS78, 0, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", ids0, 3, P_INVALID_FIELD, "/inputs/0", "no ids at all");
  static const int64_t dup[2] = {7, 7};
  const tspec idsdup[] = {{"ids", "INT64", "[2]", dup, 16, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idsdup, 3, P_DUPLICATE_ID, "/inputs/0", "an id twice");
  static const unsigned char empty_id[] = {0, 0, 0, 0, 1, 0, 0, 0, 'b'};
  const tspec idse[] = {{"ids", "BYTES", "[2]", empty_id, sizeof empty_id, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idse, 3, P_BAD_NAME, "/inputs/0", "an empty id");
  static const unsigned char ctl_id[] = {1, 0, 0, 0, '\n', 1, 0, 0, 0, 'b'};
  const tspec idsc[] = {{"ids", "BYTES", "[2]", ctl_id, sizeof ctl_id, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idsc, 3, P_BAD_NAME, "/inputs/0", "a control character in an id");
  static const unsigned char bad_utf8[] = {2, 0, 0, 0, 0xc0, 0xaf, 1, 0, 0, 0, 'b'};
  const tspec idsu[] = {{"ids", "BYTES", "[2]", bad_utf8, sizeof bad_utf8, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idsu, 3, P_BAD_NAME, "/inputs/0", "an overlong UTF-8 id");
  unsigned char long_id[4 + 257 + 5];
  long_id[0] = 1; /* 257 bytes: one past REQ_ID_MAX */
  long_id[1] = 1;
  long_id[2] = long_id[3] = 0;
  memset(long_id + 4, 'x', 257);
  memcpy(long_id + 4 + 257, "\1\0\0\0b", 5);
  const tspec idsl[] = {{"ids", "BYTES", "[2]", long_id, sizeof long_id, -1}, T_LOGITS, T_TARGETS};
  expect_problem("", idsl, 3, P_BAD_NAME, "/inputs/0", "an id of 257 bytes");
  /* logits */
  static const float nine[9] = {0};
  const tspec rows3[] = {T_IDS, {"logits", "FP32", "[3,3]", nine, 36, -1}, T_TARGETS};
  expect_problem("", rows3, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "3 rows for 2 ids");
  const tspec rank1[] = {T_IDS, {"logits", "FP32", "[2]", LOGITS23, 8, -1}, T_TARGETS};
  expect_problem("", rank1, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "logits of rank 1");
  const tspec c0[] = {T_IDS, {"logits", "FP32", "[2,0]", LOGITS23, 0, -1}, T_TARGETS};
  expect_problem("", c0, 3, P_SHAPE_MISMATCH, "/inputs/1/shape", "no classes");
  static const int32_t ilog[6] = {0};
  const tspec intlog[] = {T_IDS, {"logits", "INT32", "[2,3]", ilog, 24, -1}, T_TARGETS};
  expect_problem("", intlog, 3, P_INVALID_FIELD, "/inputs/1/datatype", "INT32 logits");
  static const double big[6] = {0, 1, 2, 1e39, 0, 0};
  const tspec range[] = {T_IDS, {"logits", "FP64", "[2,3]", big, 48, -1}, T_TARGETS};
  expect_problem("", range, 3, P_OUT_OF_RANGE, "/inputs/1", "an FP64 logit past float32's range");
  /* targets */
  static const uint8_t t3[3] = {2, 0, 1};
  const tspec tshape[] = {T_IDS, T_LOGITS, {"targets", "UINT8", "[3]", t3, 3, -1}};
  expect_problem("", tshape, 3, P_SHAPE_MISMATCH, "/inputs/2", "3 targets for 2 ids");
  static const float ft[2] = {2, 0};
  const tspec tfloat[] = {T_IDS, T_LOGITS, {"targets", "FP32", "[2]", ft, 8, -1}};
  expect_problem("", tfloat, 3, P_INVALID_FIELD, "/inputs/2", "float class indices");
  static const unsigned char bt[] = {1, 0, 0, 0, '1', 1, 0, 0, 0, '0'};
  const tspec tbytes[] = {T_IDS, T_LOGITS, {"targets", "BYTES", "[2]", bt, sizeof bt, -1}};
  expect_problem("", tbytes, 3, P_INVALID_FIELD, "/inputs/2", "BYTES targets");
  /* weights */
  static const float w2[2] = {1, 1};
  const tspec wshape[] = {T_IDS, T_LOGITS, T_TARGETS, {"weights", "FP32", "[2]", w2, 8, -1}};
  expect_problem("", wshape, 4, P_SHAPE_MISMATCH, "/inputs/3", "sigmoid weights per sample");
  const tspec wshape_sm[] = {T_IDS, T_LOGITS, T_TARGETS, {"weights", "FP32", "[2,3]", LOGITS23, 24, -1}};
  expect_problem("\"loss\":{\"type\":\"softmax_focal\"}", wshape_sm, 4, P_SHAPE_MISMATCH, "/inputs/3", "softmax weights per element");
  static const int32_t wi[6] = {1, 1, 1, 1, 1, 1};
  const tspec wint[] = {T_IDS, T_LOGITS, T_TARGETS, {"weights", "INT32", "[2,3]", wi, 24, -1}};
  expect_problem("", wint, 4, P_INVALID_FIELD, "/inputs/3", "INT32 weights");
  /* the header's fields are checked as in JSON: gradients only on /v1/loss */
  const tspec ok[] = {T_IDS, T_LOGITS, T_TARGETS};
  expect_problem("\"outputs\":[{\"name\":\"grad\"}]", ok, 3, P_INVALID_FIELD, "/outputs/0/name", "grad on a stored batch");
  expect_problem("\"outputs\":[\"nope\"]", ok, 3, P_INVALID_FIELD, "/outputs/0", "an unknown output");
  expect_problem("\"loss\":{\"type\":\"nope\"}", ok, 3, P_INVALID_LOSS, "/loss/type", "an unknown loss");
}

/* ------------------------------------------------------------------ responses */

/* Reads the response header as JSON; fails the test if it is not. */
static json_t *response_header(const char *body, size_t header_len) {
  json_error_t je;
  json_t *h = json_loadb(body, header_len, 0, &je);
  if (!h) fail_msg("response header is not JSON: %s", je.text);
  return h;
}

/* A binary response: its header says what follows and how many bytes each output takes, the bytes are the
 * values given, in the documented order (losses, the scores, pred, grad, grad_norm), and a sample with
 * nothing scored has NaN scores and pred -1. */
static void test_binary_response_round_trip(void **state) {
  (void)state;
  const float loss[2] = {0.25f, 1.5f};
  fl_score scores[2];
  memset(scores, 0, sizeof scores);
  scores[0] = (fl_score){.p_t = 0.75f, .p_max = 0.8f, .margin = 1.25f, .pred = 2, .rows = 1, .correct = 1};
  scores[1] = (fl_score){.p_t = 0.1f, .pred = 1, .rows = 0}; /* nothing scored */
  const float grad[6] = {0.5f, -0.5f, 0, 1, 2, 3};
  const float gnorm[2] = {0.7f, 3.7f};
  const int64_t hardest[1] = {1};
  const bin_result res = {.dataset = "coco", .run = "r1", .n = 2, .m = 1, .c = 3, .mean_loss = 0.875, .loss = loss,
                          .scores = scores, .grad = grad, .grad_norm = gnorm, .hardest = hardest, .nhardest = 1,
                          .outputs = (1u << BIN_LOSSES) | (1u << 1) | (1u << BIN_PRED) | (1u << BIN_GRAD) | (1u << BIN_GRAD_NORM)};
  char *body = NULL;
  size_t len = 0, hl = 0;
  assert_int_equal(bin_response(&res, &body, &len, &hl, NULL), 0);
  json_t *h = response_header(body, hl);
  assert_string_equal(json_string_value(json_object_get(h, "dataset")), "coco");
  assert_string_equal(json_string_value(json_object_get(h, "run")), "r1");
  assert_int_equal(json_integer_value(json_object_get(h, "accepted")), 2);
  assert_true(json_is_false(json_object_get(h, "duplicate")));
  assert_true(fabs(json_number_value(json_object_get(h, "loss")) - 0.875) < 1e-9);
  assert_int_equal(json_array_size(json_object_get(h, "hardest")), 1);
  assert_int_equal(json_integer_value(json_array_get(json_object_get(h, "hardest"), 0)), 1);
  const json_t *outs = json_object_get(h, "outputs");
  static const struct {
    const char *name, *dtype;
    int rank;
    int64_t d0, d1;
  } want[] = {{"losses", "FP32", 1, 2, 0}, {"p_t", "FP32", 1, 2, 0}, {"pred", "INT32", 1, 2, 0},
              {"grad", "FP32", 2, 2, 3},   {"grad_norm", "FP32", 1, 2, 0}};
  assert_int_equal(json_array_size(outs), 5);
  size_t off = hl;
  size_t at[5];
  for (size_t k = 0; k < 5; k++) {
    const json_t *o = json_array_get(outs, k);
    assert_string_equal(json_string_value(json_object_get(o, "name")), want[k].name);
    assert_string_equal(json_string_value(json_object_get(o, "datatype")), want[k].dtype);
    const json_t *shape = json_object_get(o, "shape");
    assert_int_equal(json_array_size(shape), want[k].rank);
    assert_int_equal(json_integer_value(json_array_get(shape, 0)), want[k].d0);
    if (want[k].rank == 2) assert_int_equal(json_integer_value(json_array_get(shape, 1)), want[k].d1);
    const size_t size = (size_t)json_integer_value(json_object_get(json_object_get(o, "parameters"), "binary_data_size"));
    assert_int_equal(size, 4 * (size_t)(want[k].d0 * (want[k].rank == 2 ? want[k].d1 : 1)));
    at[k] = off;
    off += size;
  }
  assert_int_equal(off, len); /* the sizes account for every byte after the header */
  float f[6];
  int32_t iv[2];
  memcpy(f, body + at[0], 8);
  assert_true(f[0] == 0.25f && f[1] == 1.5f);
  memcpy(f, body + at[1], 8);
  assert_true(f[0] == 0.75f && isnan(f[1]));
  memcpy(iv, body + at[2], 8);
  assert_int_equal(iv[0], 2);
  assert_int_equal(iv[1], -1);
  memcpy(f, body + at[3], 24);
  assert_memory_equal(f, grad, 24);
  memcpy(f, body + at[4], 8);
  assert_true(f[0] == 0.7f && f[1] == 3.7f);
  json_decref(h);
  free(body);
}

/* /v1/loss: dataset and run are null, a dense grad keeps [N, M, C]; without `outputs` a response carries
 * losses, the eight scores and pred (FP32, pred INT32), in the README's order. A mean loss that is not a
 * finite float32 is written null, never formatted (which would be undefined). */
static void test_binary_response_loss_route_dense_grad_and_default_order(void **state) {
  (void)state;
  const float loss[1] = {NAN};
  fl_score scores[1] = {{.p_t = 0.5f, .p_max = 0.6f, .margin = 0.1f, .norm_margin = 0.55f, .entropy = 0.9f,
                         .cw_entropy = 0.3f, .el2n = 0.7f, .correct = 0.5f, .pred = -1, .rows = 4}};
  const float grad[6] = {1, 2, 3, 4, 5, 6};
  bin_result res = {.n = 1, .m = 2, .c = 3, .dense = 1, .mean_loss = 0.5, .loss = loss, .scores = scores,
                    .grad = grad, .outputs = 1u << BIN_GRAD};
  char *body = NULL;
  size_t len = 0, hl = 0;
  assert_int_equal(bin_response(&res, &body, &len, &hl, NULL), 0);
  json_t *h = response_header(body, hl);
  assert_true(json_is_null(json_object_get(h, "dataset")));
  assert_true(json_is_null(json_object_get(h, "run")));
  assert_true(json_number_value(json_object_get(h, "loss")) == 0.5);
  assert_int_equal(json_array_size(json_object_get(h, "hardest")), 0);
  for (int i = 0; i < 3; i++) {
    bin_result odd = res;
    odd.mean_loss = i == 0 ? NAN : i == 1 ? INFINITY : 1e300;
    char *b2 = NULL;
    size_t l2 = 0, h2 = 0;
    assert_int_equal(bin_response(&odd, &b2, &l2, &h2, NULL), 0);
    json_t *hh = response_header(b2, h2);
    assert_true(json_is_null(json_object_get(hh, "loss")));
    json_decref(hh);
    free(b2);
  }
  const json_t *shape = json_object_get(json_array_get(json_object_get(h, "outputs"), 0), "shape");
  assert_int_equal(json_array_size(shape), 3);
  assert_int_equal(json_integer_value(json_array_get(shape, 0)), 1);
  assert_int_equal(json_integer_value(json_array_get(shape, 1)), 2);
  assert_int_equal(json_integer_value(json_array_get(shape, 2)), 3);
  assert_int_equal(len - hl, 24);
  assert_memory_equal(body + hl, grad, 24);
  json_decref(h);
  free(body);
  /* the default outputs */
  res.outputs = REQ_OUT_DEFAULT;
  assert_int_equal(bin_response(&res, &body, &len, &hl, NULL), 0);
  h = response_header(body, hl);
  static const char *const order[] = {"losses",     "p_t",  "p_max",   "margin", "norm_margin",
                                      "entropy",    "cw_entropy", "el2n", "correct", "pred"};
  const float values[9] = {NAN, 0.5f, 0.6f, 0.1f, 0.55f, 0.9f, 0.3f, 0.7f, 0.5f};
  const json_t *outs = json_object_get(h, "outputs");
  assert_int_equal(json_array_size(outs), 10);
  assert_int_equal(len - hl, 10 * 4);
  for (size_t k = 0; k < 10; k++) {
    const json_t *o = json_array_get(outs, k);
    assert_string_equal(json_string_value(json_object_get(o, "name")), order[k]);
    assert_string_equal(json_string_value(json_object_get(o, "datatype")), k == 9 ? "INT32" : "FP32");
    if (k == 9) {
      int32_t pred;
      memcpy(&pred, body + hl + 4 * k, 4);
      assert_int_equal(pred, -1); /* a dense sample has no single prediction */
      continue;
    }
    float v;
    memcpy(&v, body + hl + 4 * k, 4);
    if (k == 0) assert_true(isnan(v));
    else assert_true(v == values[k]);
  }
  json_decref(h);
  free(body);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_binary_readme_example_decodes),
      cmocka_unit_test(test_binary_bytes_ids_and_header_fields),
      cmocka_unit_test(test_binary_float_datatypes_convert),
      cmocka_unit_test(test_binary_misaligned_tensors_are_copied),
      cmocka_unit_test(test_binary_target_kinds_and_weights),
      cmocka_unit_test(test_binary_response_framing_and_outputs),
      cmocka_unit_test(test_binary_framing_errors),
      cmocka_unit_test(test_binary_inputs_errors),
      cmocka_unit_test(test_binary_tensor_content_errors),
      cmocka_unit_test(test_binary_response_round_trip),
      cmocka_unit_test(test_binary_response_loss_route_dense_grad_and_default_order),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
