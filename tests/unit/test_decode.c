/* test_decode.c — the JSON request decoder: shapes, target kinds, ids, loss settings, precise errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "decode.h"

static int decode(const char *json, req *r, problem *err) {
  return dec_json(r, json, strlen(json), 1, err);
}

/* Decoding must fail with code and field. */
static void expect_problem(const char *json, problem_code code, const char *field) {
  req r;
  problem err = {0};
  if (decode(json, &r, &err) == 0) {
    req_free(&r);
    fail_msg("decoded, expected %s for %s", problem_name(code), json);
  }
  if (err.code != code || strcmp(err.field, field) != 0)
    fail_msg("%s: got %s at \"%s\" (%s), expected %s at \"%s\"", json, problem_name(err.code), err.field, err.detail,
             problem_name(code), field);
  assert_true(strlen(err.detail) > 0);
}

static void test_decode_index_targets(void **state) {
  (void)state;
  req r;
  problem err;
  assert_int_equal(decode("{\"run\":\"r1\",\"batch_id\":\"b\",\"epoch\":2,\"step\":7,"
                          "\"ids\":[\"a\",42],\"logits\":[[1,2,3],[0.5,-1,2]],\"targets\":[2,-1]}",
                          &r, &err),
                   0);
  assert_string_equal(r.run, "r1");
  assert_string_equal(r.batch_id, "b");
  assert_true(r.has_epoch && r.epoch == 2 && r.has_step && r.step == 7);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.m, 1);
  assert_int_equal(r.c, 3);
  assert_false(r.dense);
  assert_string_equal(r.ids[0], "a");
  assert_string_equal(r.ids[1], "42"); /* integer ids are their decimal string */
  assert_non_null(r.labels);
  assert_null(r.targets);
  assert_int_equal(req_label_at(&r, 0), 2);
  assert_int_equal(req_label_at(&r, 1), -1);
  assert_true(r.x[3] == 0.5f && r.x[4] == -1.0f);
  assert_int_equal(r.params.loss, FL_SIGMOID_FOCAL);
  assert_true(r.params.alpha == 0.25f && r.params.gamma == 2.0f);
  req_free(&r);
}

static void test_decode_target_kinds_by_shape(void **state) {
  (void)state;
  req r;
  problem err;
  /* N x C numbers: multi-hot rows */
  assert_int_equal(decode("{\"ids\":[1,2],\"logits\":[[1,2],[3,4]],\"targets\":[[0,1],[0.5,0.5]]}", &r, &err), 0);
  assert_null(r.labels);
  assert_true(r.targets[1] == 1.0f && r.targets[2] == 0.5f);
  req_free(&r);
  /* N x M x C logits, N x M indices */
  assert_int_equal(decode("{\"ids\":[1],\"logits\":[[[1,2],[3,4],[5,6]]],\"targets\":[[0,1,-1]]}", &r, &err), 0);
  assert_true(r.dense);
  assert_int_equal(r.m, 3);
  assert_int_equal(r.c, 2);
  assert_int_equal(req_label_at(&r, 2), -1);
  req_free(&r);
  /* N x M x C targets */
  assert_int_equal(decode("{\"ids\":[1],\"logits\":[[[1,2],[3,4]]],\"targets\":[[[0,1],[1,0]]]}", &r, &err), 0);
  assert_non_null(r.targets);
  assert_true(r.targets[2] == 1.0f);
  req_free(&r);
  /* C = 1 with the sigmoid family: numbers are the binary targets themselves */
  assert_int_equal(decode("{\"ids\":[1,2,3],\"logits\":[[0.1],[2],[-1]],\"targets\":[1,0,0.3]}", &r, &err), 0);
  assert_non_null(r.targets);
  assert_null(r.labels);
  assert_true(r.targets[0] == 1.0f && r.targets[2] == 0.3f);
  req_free(&r);
  /* probabilities */
  assert_int_equal(decode("{\"ids\":[1],\"probs\":[[0.1,0.9]],\"targets\":[1],\"loss\":{\"type\":\"softmax_focal\"}}", &r, &err), 0);
  assert_int_equal(r.params.input, FL_INPUT_PROBS);
  assert_string_equal(r.x_name, "probs");
  assert_true(r.params.alpha < 0.0f); /* softmax default: no class weighting */
  req_free(&r);
}

static void test_decode_loss_settings(void **state) {
  (void)state;
  req r;
  problem err;
  assert_int_equal(decode("{\"ids\":[1],\"logits\":[[1,2,3]],\"targets\":[0],\"loss\":{\"type\":\"asl\",\"gamma_neg\":3,"
                          "\"gamma_pos\":0.5,\"clip\":0.1,\"reduction\":\"mean\",\"ignore_index\":255}}",
                          &r, &err),
                   0);
  assert_int_equal(r.params.loss, FL_ASL);
  assert_true(r.params.gamma_neg == 3.0f && r.params.gamma_pos == 0.5f && r.params.clip == 0.1f);
  assert_int_equal(r.params.reduction, FL_REDUCE_MEAN);
  assert_int_equal(r.params.ignore_index, 255);
  req_free(&r);
  assert_int_equal(decode("{\"ids\":[1],\"logits\":[[1,2,3]],\"targets\":[0],\"loss\":{\"alpha\":[0.1,0.2,0.3],"
                          "\"profile\":\"kornia\"}}",
                          &r, &err),
                   0);
  assert_non_null(r.params.alpha_c);
  assert_true(r.params.alpha_c[2] == 0.3f);
  assert_int_equal(r.params.profile, FL_PROFILE_KORNIA);
  req_free(&r);
  assert_int_equal(decode("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0],\"loss\":{\"alpha\":null}}", &r, &err), 0);
  assert_true(r.params.alpha < 0.0f);
  req_free(&r);
}

static void test_decode_meta_and_weights(void **state) {
  (void)state;
  req r;
  problem err;
  assert_int_equal(decode("{\"ids\":[\"x\",\"y\"],\"logits\":[[1,2],[3,4]],\"targets\":[0,1],\"weights\":[[1,2],[0,1]],"
                          "\"meta\":{\"y\":{\"uri\":\"s3://b/y.png\",\"patient_id\":\"p1\"}},\"ohem_k\":1}",
                          &r, &err),
                   0);
  assert_int_equal(r.nmeta, 1);
  assert_int_equal(r.meta_index[0], 1);
  assert_string_equal(r.meta_json[0], "{\"patient_id\":\"p1\",\"uri\":\"s3://b/y.png\"}");
  assert_true(r.weights[1] == 2.0f);
  assert_int_equal(r.ohem_k, 1);
  req_free(&r);
  /* softmax weights are per position */
  assert_int_equal(decode("{\"ids\":[1,2],\"logits\":[[1,2],[3,4]],\"targets\":[0,1],\"weights\":[0.5,2],"
                          "\"loss\":{\"type\":\"softmax_focal\"}}",
                          &r, &err),
                   0);
  assert_true(r.weights[0] == 0.5f && r.weights[1] == 2.0f);
  req_free(&r);
}

static void test_decode_rejects_with_field(void **state) {
  (void)state;
  expect_problem("{bad", P_BAD_JSON, "");
  expect_problem("{\"a\":1,\"a\":2}", P_BAD_JSON, "");
  expect_problem("[1]", P_INVALID_FIELD, "");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"targets\":[1],\"extra\":1}", P_UNKNOWN_FIELD, "/extra");
  expect_problem("{\"logits\":[[1]],\"targets\":[1]}", P_MISSING_FIELD, "/ids");
  expect_problem("{\"ids\":[],\"logits\":[],\"targets\":[]}", P_INVALID_FIELD, "/ids");
  expect_problem("{\"ids\":[1],\"targets\":[1]}", P_MISSING_FIELD, "/logits");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"probs\":[[0.5]],\"targets\":[1]}", P_INVALID_FIELD, "/probs");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2,3]],\"targets\":[1,2]}", P_SHAPE_MISMATCH, "/logits");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2,3],[1,2]],\"targets\":[1,2]}", P_SHAPE_MISMATCH, "/logits/1");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2,3],[1,\"x\",3]],\"targets\":[1,2]}", P_INVALID_FIELD, "/logits/1/1");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2,3],[1,2,3]],\"targets\":[1]}", P_SHAPE_MISMATCH, "/targets");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2,3],[1,2,3]],\"targets\":[1,2.5]}", P_INVALID_FIELD, "/targets/1");
  expect_problem("{\"ids\":[\"a\",\"b\",\"a\"],\"logits\":[[1],[2],[3]],\"targets\":[1,0,1]}", P_DUPLICATE_ID, "/ids/2");
  expect_problem("{\"ids\":[1,\"1\"],\"logits\":[[1],[2]],\"targets\":[1,0]}", P_DUPLICATE_ID, "/ids/1");
  expect_problem("{\"ids\":[1.5],\"logits\":[[1]],\"targets\":[1]}", P_INVALID_FIELD, "/ids/0");
  expect_problem("{\"ids\":[\"a\\nb\"],\"logits\":[[1]],\"targets\":[1]}", P_BAD_NAME, "/ids/0");
  expect_problem("{\"ids\":[1],\"logits\":[[1e39]],\"targets\":[1]}", P_OUT_OF_RANGE, "/logits/0/0");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"targets\":[1],\"run\":\"../x\"}", P_BAD_NAME, "/run");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"targets\":[1],\"epoch\":-1}", P_OUT_OF_RANGE, "/epoch");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"targets\":[1],\"step\":1.5}", P_INVALID_FIELD, "/step");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"gamma\":-1}}", P_INVALID_LOSS, "/loss/gamma");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"alpha\":1.5}}", P_INVALID_LOSS, "/loss/alpha");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"alpha\":[0.1]}}", P_SHAPE_MISMATCH, "/loss/alpha");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"type\":\"focal\"}}", P_INVALID_LOSS, "/loss/type");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"reduction\":\"max\"}}", P_INVALID_LOSS, "/loss/reduction");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[1],\"loss\":{\"gama\":2}}", P_UNKNOWN_FIELD, "/loss/gama");
  expect_problem("{\"ids\":[1],\"probs\":[[0.5,0.5]],\"targets\":[1],\"loss\":{\"profile\":\"monai\"}}", P_INVALID_LOSS, "/loss/profile");
  expect_problem("{\"ids\":[1],\"logits\":[[1]],\"targets\":[0],\"loss\":{\"type\":\"softmax_focal\"}}", P_SHAPE_MISMATCH, "/logits");
  expect_problem("{\"ids\":[1,2],\"logits\":[[1,2],[3,4]],\"targets\":[0,1],\"weights\":[[1,2]]}", P_SHAPE_MISMATCH, "/weights");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0],\"meta\":{\"9\":{}}}", P_INVALID_FIELD, "/meta/9");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0],\"meta\":{\"1\":3}}", P_INVALID_FIELD, "/meta/1");
  /* keys are escaped as RFC 6901 tokens: "/" is ~1, "~" is ~0 */
  expect_problem("{\"ids\":[\"a/b\"],\"logits\":[[1,2]],\"targets\":[0],\"meta\":{\"a/b\":3}}", P_INVALID_FIELD, "/meta/a~1b");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0],\"loss\":{\"~g\":2}}", P_UNKNOWN_FIELD, "/loss/~0g");
  expect_problem("{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0],\"ohem_k\":2}", P_OUT_OF_RANGE, "/ohem_k");
  expect_problem("{\"ids\":[1],\"logits\":[[[1,2]]],\"targets\":[1]}", P_SHAPE_MISMATCH, "/targets/0");
}

static void test_decode_long_ids(void **state) {
  (void)state;
  char body[1200], id[300];
  memset(id, 'x', 256);
  id[256] = '\0';
  snprintf(body, sizeof body, "{\"ids\":[\"%s\"],\"logits\":[[1]],\"targets\":[1]}", id);
  req r;
  problem err;
  assert_int_equal(decode(body, &r, &err), 0); /* 256 bytes: allowed */
  req_free(&r);
  id[256] = 'x';
  id[257] = '\0';
  snprintf(body, sizeof body, "{\"ids\":[\"%s\"],\"logits\":[[1]],\"targets\":[1]}", id);
  expect_problem(body, P_BAD_NAME, "/ids/0");
}

/* A problem names the whole key of the longest id, every byte escaped; a longer key is cut at a character. */
static void test_decode_field_names_long_keys_whole(void **state) {
  (void)state;
  char body[4096], id[300], want[PROBLEM_FIELD_MAX];
  memset(id, '/', 256);
  id[256] = '\0';
  /* meta for an id of 256 slashes that is not in ids: "/meta/" then 256 times "~1" */
  snprintf(body, sizeof body, "{\"ids\":[\"a\"],\"logits\":[[1]],\"targets\":[1],\"meta\":{\"%s\":{}}}", id);
  size_t j = (size_t)snprintf(want, sizeof want, "/meta/");
  for (int i = 0; i < 256; i++) j += (size_t)snprintf(want + j, sizeof want - j, "~1");
  expect_problem(body, P_INVALID_FIELD, want);
  /* an unknown key of 700 two-byte characters: cut before the field is full, never inside a character */
  char key[1500];
  for (int i = 0; i < 700; i++) memcpy(key + 2 * i, "\xc3\xa9", 2);
  key[1400] = '\0';
  snprintf(body, sizeof body, "{\"ids\":[1],\"logits\":[[1]],\"targets\":[1],\"%s\":1}", key);
  req r;
  problem err;
  assert_int_equal(decode(body, &r, &err), -1);
  assert_int_equal(err.code, P_UNKNOWN_FIELD);
  const size_t n = strlen(err.field);
  assert_true(n > 500 && n < sizeof err.field);
  assert_true(err.field[0] == '/' && (n - 1) % 2 == 0); /* "/" then whole characters only */
  assert_memory_equal(err.field + 1, key, n - 1);
}

static void test_decode_describes_library_errors(void **state) {
  (void)state;
  req r;
  problem err;
  /* 3-D logits: flat index 7 of (2, 2, 3) is [1][0][1] */
  assert_int_equal(decode("{\"ids\":[1,2],\"logits\":[[[1,2,3],[1,2,3]],[[1,2,3],[1,2,3]]],\"targets\":[[0,1],[2,0]]}", &r, &err), 0);
  memset(&err, 0, sizeof err);
  req_describe_error(&r, FL_EINPUT, 7, &err);
  assert_int_equal(err.code, P_NOT_FINITE);
  assert_string_equal(err.field, "/logits/1/0/1");
  assert_non_null(strstr(err.detail, "logits[1][0][1] is not finite"));
  req_describe_error(&r, FL_ELABEL, 3, &err);
  assert_int_equal(err.code, P_LABEL_OUT_OF_RANGE);
  assert_string_equal(err.field, "/targets/1/1");
  req_free(&r);
  assert_int_equal(decode("{\"ids\":[1,2],\"probs\":[[0.5,0.5],[0.5,0.5]],\"targets\":[0,1]}", &r, &err), 0);
  req_describe_error(&r, FL_EPROB, 3, &err);
  assert_int_equal(err.code, P_OUT_OF_RANGE);
  assert_string_equal(err.field, "/probs/1/1");
  req_free(&r);
}

/* Every size limit of a batch is too_large, a code whose title says so ("A number is out of range" told a
 * client with 65 KiB of meta nothing): a sample's meta past 64 KiB of compact JSON, more than 65536 segments.
 * The limits themselves pass. */
static void test_decode_size_limits_are_too_large(void **state) {
  (void)state;
  req r;
  problem err;
  assert_non_null(strstr(problem_title(P_TOO_LARGE), "larger"));
  assert_int_equal(problem_status(P_TOO_LARGE), 422);
  enum { PAD = REQ_META_MAX - 8 }; /* {"a":"<PAD>"} is PAD + 8 bytes of compact JSON */
  char *body = malloc(PAD + 200);
  assert_non_null(body);
  for (int extra = 0; extra < 2; extra++) {
    int j = snprintf(body, 100, "{\"ids\":[\"s\"],\"logits\":[[1]],\"targets\":[1],\"meta\":{\"s\":{\"a\":\"");
    memset(body + j, 'x', PAD + (size_t)extra);
    snprintf(body + j + PAD + extra, 16, "\"}}}");
    memset(&err, 0, sizeof err);
    if (extra == 0) {
      assert_int_equal(decode(body, &r, &err), 0);
      req_free(&r);
    } else {
      expect_problem(body, P_TOO_LARGE, "/meta/s");
    }
  }
  free(body);
  /* segments: 65536 pass the count (here refused for covering too few ids), 65537 are too many */
  const size_t seg = strlen("{\"n\":1},");
  body = malloc((REQ_SEGMENTS_MAX + 2) * seg + 100);
  assert_non_null(body);
  for (int extra = 0; extra < 2; extra++) {
    size_t j = (size_t)sprintf(body, "{\"ids\":[\"s\"],\"logits\":[[1]],\"targets\":[1],\"segments\":[");
    for (int i = 0; i < REQ_SEGMENTS_MAX + extra; i++) j += (size_t)sprintf(body + j, "%s{\"n\":1}", i ? "," : "");
    sprintf(body + j, "]}");
    memset(&err, 0, sizeof err);
    assert_int_equal(decode(body, &r, &err), -1);
    assert_int_equal(err.code, extra ? P_TOO_LARGE : P_SHAPE_MISMATCH);
    assert_string_equal(err.field, "/segments");
  }
  free(body);
}

/* A body whose ids, logits[0] and logits[0][0] have n, m and c entries, the rest of logits rows of one
 * number (the shape is read from the first row): small as a text, as large as n x m x c as a batch. */
static char *shaped_body(int64_t n, int64_t m, int64_t c) {
  char *b = malloc((size_t)(n * 9 + m * 2 + c * 2 + n * 2 + 200));
  if (!b) return NULL;
  size_t j = (size_t)sprintf(b, "{\"ids\":[");
  for (int64_t i = 0; i < n; i++) j += (size_t)sprintf(b + j, "%s%lld", i ? "," : "", (long long)i);
  j += (size_t)sprintf(b + j, "],\"logits\":[[%s", m > 1 ? "[" : "");
  for (int64_t i = 0; i < c; i++) j += (size_t)sprintf(b + j, i ? ",0" : "0");
  if (m > 1) j += (size_t)sprintf(b + j, "]");
  for (int64_t i = 1; i < m; i++) j += (size_t)sprintf(b + j, ",0");
  j += (size_t)sprintf(b + j, "]");
  for (int64_t i = 1; i < n; i++) j += (size_t)sprintf(b + j, ",0");
  sprintf(b + j, "],\"targets\":[0]}");
  return b;
}

/* n x m x c past 2^31 is too large, whatever the product would come to in 64 bits: past 2^63 it was a
 * negative count (an allocation that failed: 500), at 2^64 zero (a 1-byte buffer the decoder wrote c
 * floats into). */
static void test_decode_element_count_never_wraps(void **state) {
  (void)state;
  const int64_t shapes[][3] = {
      {1 << 11, 1 << 10, 1 << 11}, /* 2^32 */
      {1 << 16, 1, 1 << 16},       /* 2^32, N x C */
      {(1 << 16) + 1, 1, 1 << 15}, /* 2^31 + 2^15 */
      {1 << 21, 1 << 21, 1 << 21}, /* 2^63 */
      {1 << 21, 1 << 21, 1 << 22}, /* 2^64 */
  };
  for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
    char *body = shaped_body(shapes[i][0], shapes[i][1], shapes[i][2]);
    assert_non_null(body);
    req r;
    problem err = {0};
    if (decode(body, &r, &err) == 0) {
      req_free(&r);
      fail_msg("decoded a batch of %lld x %lld x %lld", (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][2]);
    }
    free(body);
    assert_int_equal(err.code, P_TOO_LARGE);
    assert_string_equal(err.field, "/logits");
    assert_non_null(strstr(err.detail, "2^31"));
  }
}

static void test_decode_names(void **state) {
  (void)state;
  assert_true(name_ok("coco-2017.train_v2"));
  assert_false(name_ok(""));
  assert_false(name_ok("../x"));
  assert_false(name_ok("a b"));
  char long_name[80];
  memset(long_name, 'a', 65);
  long_name[65] = '\0';
  assert_false(name_ok(long_name));
  long_name[64] = '\0';
  assert_true(name_ok(long_name));
}

static void test_decode_segments(void **state) {
  (void)state;
  req r;
  problem err;
  /* a sample in two segments; its meta goes with the later; defaults from the request; null clears */
  assert_int_equal(decode("{\"epoch\":3,\"step\":10,\"ids\":[\"a\",\"b\",\"c\",\"a\"],"
                          "\"logits\":[[1,2],[3,4],[5,6],[7,8]],\"targets\":[0,1,0,1],"
                          "\"meta\":{\"c\":{\"uri\":\"x\"},\"a\":{\"uri\":\"y\"},\"b\":{}},"
                          "\"segments\":[{\"n\":2},{\"n\":1,\"step\":11},{\"n\":1,\"step\":null,\"epoch\":4}]}",
                          &r, &err),
                   0);
  assert_int_equal(r.nseg, 3);
  assert_int_equal(req_nseg(&r), 3);
  req_seg g0 = req_segment(&r, 0), g1 = req_segment(&r, 1), g2 = req_segment(&r, 2);
  assert_true(g0.n == 2 && g0.has_step && g0.step == 10 && g0.has_epoch && g0.epoch == 3);
  assert_true(g1.n == 1 && g1.has_step && g1.step == 11 && g1.epoch == 3);
  assert_true(g2.n == 1 && !g2.has_step && g2.has_epoch && g2.epoch == 4);
  assert_int_equal(r.nmeta, 3);
  /* in sample order: b (1), c (2), a at its last place (3) */
  assert_int_equal(r.meta_index[0], 1);
  assert_int_equal(r.meta_index[1], 2);
  assert_int_equal(r.meta_index[2], 3);
  assert_string_equal(r.meta_json[2], "{\"uri\":\"y\"}");
  req_free(&r);
  /* without segments: one, of the request's step and epoch */
  assert_int_equal(decode("{\"step\":5,\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0]}", &r, &err), 0);
  assert_int_equal(req_nseg(&r), 1);
  g0 = req_segment(&r, 0);
  assert_true(g0.n == 1 && g0.has_step && g0.step == 5 && !g0.has_epoch);
  req_free(&r);
  /* an id twice in one segment, segments that do not cover the ids */
  assert_int_equal(decode("{\"ids\":[1,2,1],\"logits\":[[1],[2],[3]],\"targets\":[0,1,0],"
                          "\"segments\":[{\"n\":1},{\"n\":2}]}", &r, &err), 0);
  req_free(&r);
  assert_int_equal(decode("{\"ids\":[1,2,1],\"logits\":[[1],[2],[3]],\"targets\":[0,1,0],"
                          "\"segments\":[{\"n\":3}]}", &r, &err), -1);
  assert_int_equal(err.code, P_DUPLICATE_ID);
  assert_string_equal(err.field, "/ids/2");
  assert_int_equal(decode("{\"ids\":[1,2,1],\"logits\":[[1],[2],[3]],\"targets\":[0,1,0],"
                          "\"segments\":[{\"n\":1},{\"n\":1}]}", &r, &err), -1);
  assert_int_equal(err.code, P_SHAPE_MISMATCH);
  assert_string_equal(err.field, "/segments");
}

/* outputs: the default set without it; names or {name} objects; gradients only where nothing is recorded. */
static void test_decode_outputs(void **state) {
  (void)state;
  req r;
  problem err;
#define BODY "{\"ids\":[1],\"logits\":[[1,2]],\"targets\":[0]%s}"
  char json[256];
  snprintf(json, sizeof json, BODY, "");
  assert_int_equal(dec_json(&r, json, strlen(json), 0, &err), 0);
  assert_int_equal(r.outputs, REQ_OUT_DEFAULT);
  assert_int_equal(r.outputs & REQ_OUT_GRADS, 0);
  req_free(&r);
  snprintf(json, sizeof json, BODY, ",\"outputs\":[\"grad\",{\"name\":\"grad_norm\"},\"losses\"]");
  assert_int_equal(dec_json(&r, json, strlen(json), 0, &err), 0);
  assert_int_equal(r.outputs, (1u << REQ_OUT_GRAD) | (1u << REQ_OUT_GRAD_NORM) | (1u << REQ_OUT_LOSSES));
  req_free(&r);
  /* a recorded batch refuses gradients, by name or object, and unknown names anywhere */
  snprintf(json, sizeof json, BODY, ",\"outputs\":[\"losses\",\"grad\"]");
  expect_problem(json, P_INVALID_FIELD, "/outputs/1");
  snprintf(json, sizeof json, BODY, ",\"outputs\":[{\"name\":\"grad_norm\"}]");
  expect_problem(json, P_INVALID_FIELD, "/outputs/0/name");
  snprintf(json, sizeof json, BODY, ",\"outputs\":[\"hessian\"]");
  expect_problem(json, P_INVALID_FIELD, "/outputs/0");
  snprintf(json, sizeof json, BODY, ",\"outputs\":\"grad\"");
  expect_problem(json, P_INVALID_FIELD, "/outputs");
#undef BODY
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_decode_index_targets),     cmocka_unit_test(test_decode_target_kinds_by_shape),
      cmocka_unit_test(test_decode_loss_settings),     cmocka_unit_test(test_decode_meta_and_weights),
      cmocka_unit_test(test_decode_rejects_with_field), cmocka_unit_test(test_decode_long_ids),
      cmocka_unit_test(test_decode_field_names_long_keys_whole),
      cmocka_unit_test(test_decode_describes_library_errors), cmocka_unit_test(test_decode_names),
      cmocka_unit_test(test_decode_segments),         cmocka_unit_test(test_decode_size_limits_are_too_large),
      cmocka_unit_test(test_decode_element_count_never_wraps),         cmocka_unit_test(test_decode_outputs),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
