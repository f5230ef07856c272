/* test_review.c — the review loop's rules (README "The review loop"): which status changes are allowed,
 * the review, meta and queue bodies (each bad field refused with its code and pointer), and how a queue
 * chooses its samples from a small dataset built through state.h. */
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
#include "job.h"
#include "review.h"

/* ------------------------------------------------------------------ transitions */

/* The whole table, written from the README: a sample waiting for a decision (open, queued, in_review) may
 * go to any other state; a decision (relabelled, confirmed, dismissed) only to open or in_review, and a
 * relabel may be replaced by another; everything else, staying put included, is refused. */
static void test_review_transition_table(void **state) {
  (void)state;
  enum { O = ST_OPEN, Q = ST_QUEUED, I = ST_IN_REVIEW, R = ST_RELABELLED, C = ST_CONFIRMED, D = ST_DISMISSED };
  static const int allowed[ST_STATUS_COUNT][ST_STATUS_COUNT] = {
      /*        to: O  Q  I  R  C  D */
      [O] = {0, 1, 1, 1, 1, 1},
      [Q] = {1, 0, 1, 1, 1, 1},
      [I] = {1, 1, 0, 1, 1, 1},
      [R] = {1, 0, 1, 1, 0, 0},
      [C] = {1, 0, 1, 0, 0, 0},
      [D] = {1, 0, 1, 0, 0, 0},
  };
  for (int from = 0; from < ST_STATUS_COUNT; from++)
    for (int to = 0; to < ST_STATUS_COUNT; to++)
      if (review_allowed(from, to) != allowed[from][to])
        fail_msg("%s -> %s: review_allowed says %d", st_status_name(from), st_status_name(to), review_allowed(from, to));
  /* statuses outside the table are never allowed */
  assert_false(review_allowed(-1, ST_OPEN));
  assert_false(review_allowed(ST_OPEN, ST_STATUS_COUNT));
  assert_false(review_allowed(ST_STATUS_COUNT, ST_OPEN));
}

/* ------------------------------------------------------------------ review bodies */

static review_op *new_review(void) {
  review_op *op = calloc(1, sizeof *op);
  assert_non_null(op);
  op->op.kind = WOP_REVIEW;
  return op;
}

static void expect_review_problem(const char *body, problem_code code, const char *field) {
  review_op *op = new_review();
  problem err = {0};
  if (review_decode(body, strlen(body), op, &err) == 0) fail_msg("decoded, expected %s for %s", problem_name(code), body);
  if (err.code != code || strcmp(err.field, field) != 0)
    fail_msg("%s: got %s at \"%s\" (%s), expected %s at \"%s\"", body, problem_name(err.code), err.field, err.detail,
             problem_name(code), field);
  assert_true(strlen(err.detail) > 0);
  review_op_free(&op->op); /* what a failed decode left is freed as usual */
}

static void test_review_decode_valid_bodies(void **state) {
  (void)state;
  problem err = {0};
  static const char b1[] = "{\"status\":\"relabelled\",\"label\":3,\"reviewer\":\"ann\",\"note\":\"a cat, not a dog\"}";
  review_op *op = new_review();
  assert_int_equal(review_decode(b1, strlen(b1), op, &err), 0);
  assert_int_equal(op->to, ST_RELABELLED);
  assert_string_equal(op->label, "3");
  assert_string_equal(op->reviewer, "ann");
  assert_string_equal(op->note, "a cat, not a dog");
  review_op_free(&op->op);
  /* a class name, and a multi-label list of indices and names, kept as compact JSON */
  static const char b2[] = "{\"status\":\"relabelled\",\"label\":\"cat\"}";
  op = new_review();
  assert_int_equal(review_decode(b2, strlen(b2), op, &err), 0);
  assert_string_equal(op->label, "\"cat\"");
  assert_null(op->reviewer);
  assert_null(op->note);
  review_op_free(&op->op);
  static const char b3[] = "{\"status\":\"relabelled\",\"label\": [ 2, \"dog\" ]}";
  op = new_review();
  assert_int_equal(review_decode(b3, strlen(b3), op, &err), 0);
  assert_string_equal(op->label, "[2,\"dog\"]");
  review_op_free(&op->op);
  /* every other status takes no label; null stands for absent */
  static const char *const others[] = {"open", "queued", "in_review", "confirmed", "dismissed"};
  static const int want[] = {ST_OPEN, ST_QUEUED, ST_IN_REVIEW, ST_CONFIRMED, ST_DISMISSED};
  for (int i = 0; i < 5; i++) {
    char body[128];
    snprintf(body, sizeof body, "{\"status\":\"%s\",\"label\":null,\"reviewer\":null}", others[i]);
    op = new_review();
    assert_int_equal(review_decode(body, strlen(body), op, &err), 0);
    assert_int_equal(op->to, want[i]);
    assert_null(op->label);
    assert_null(op->reviewer);
    review_op_free(&op->op);
  }
  /* the limits themselves pass: reviewer 128 bytes, note 4096 */
  char big[4400];
  char r128[129], n4096[4097];
  memset(r128, 'r', 128);
  r128[128] = 0;
  memset(n4096, 'n', 4096);
  n4096[4096] = 0;
  snprintf(big, sizeof big, "{\"status\":\"confirmed\",\"reviewer\":\"%s\",\"note\":\"%s\"}", r128, n4096);
  op = new_review();
  assert_int_equal(review_decode(big, strlen(big), op, &err), 0);
  assert_int_equal(strlen(op->reviewer), 128);
  assert_int_equal(strlen(op->note), 4096);
  review_op_free(&op->op);
}

/* A corrected class index is one a batch's label can be, 0 to INT32_MAX (batches hold at most 2^31 elements):
 * every integer outside that range, alone or in a list, is label_out_of_range at its pointer, as a batch's label
 * out of range is; the bounds themselves pass, and names are not indices. */
static void test_review_decode_label_range(void **state) {
  (void)state;
  static const char *const out[] = {"-1", "-2147483648", "-9223372036854775808", "2147483648", "4294967295",
                                    "4294967296", "4294967297", "9223372036854775807"};
  char body[160], field[16];
  for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) {
    snprintf(body, sizeof body, "{\"status\":\"relabelled\",\"label\":%s}", out[i]);
    expect_review_problem(body, P_LABEL_OUT_OF_RANGE, "/label");
    for (int at = 0; at < 3; at++) { /* first, middle and last of a list */
      const char *el[3] = {"1", "\"dog\"", "2147483647"};
      el[at] = out[i];
      snprintf(body, sizeof body, "{\"status\":\"relabelled\",\"label\":[%s,%s,%s]}", el[0], el[1], el[2]);
      snprintf(field, sizeof field, "/label/%d", at);
      expect_review_problem(body, P_LABEL_OUT_OF_RANGE, field);
    }
  }
  static const char *const in[] = {"0", "1", "2147483646", "2147483647", "\"2147483648\"", "[0,2147483647]"};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    problem err = {0};
    snprintf(body, sizeof body, "{\"status\":\"relabelled\",\"label\":%s}", in[i]);
    review_op *op = new_review();
    if (review_decode(body, strlen(body), op, &err) != 0) fail_msg("%s: refused (%s)", body, err.detail);
    assert_string_equal(op->label, in[i]);
    review_op_free(&op->op);
  }
  /* a cluster's shared log may hold relabels past INT32_MAX from earlier versions: a node still applies them;
   * negative indices were never accepted, so none is logged */
  static const char *const logged[] = {"2147483648", "9223372036854775807", "[1,4294967296]"};
  for (size_t i = 0; i < sizeof logged / sizeof logged[0]; i++) {
    problem err = {0};
    snprintf(body, sizeof body, "{\"status\":\"relabelled\",\"label\":%s}", logged[i]);
    review_op *op = new_review();
    if (review_decode_logged(body, strlen(body), op, &err) != 0) fail_msg("logged %s: refused (%s)", body, err.detail);
    assert_string_equal(op->label, logged[i]);
    review_op_free(&op->op);
  }
  problem err = {0};
  review_op *op = new_review();
  static const char neg[] = "{\"status\":\"relabelled\",\"label\":[0,-1]}";
  assert_int_equal(review_decode_logged(neg, strlen(neg), op, &err), -1);
  assert_int_equal(err.code, P_LABEL_OUT_OF_RANGE);
  assert_string_equal(err.field, "/label/1");
  review_op_free(&op->op);
}

static void test_review_decode_rejects_with_field(void **state) {
  (void)state;
  expect_review_problem("{\"status\":", P_BAD_JSON, "");
  expect_review_problem("{\"status\":\"open\",\"status\":\"queued\"}", P_BAD_JSON, "");
  expect_review_problem("[\"open\"]", P_INVALID_FIELD, "");
  expect_review_problem("\"open\"", P_INVALID_FIELD, "");
  expect_review_problem("{\"status\":\"open\",\"by\":\"ann\"}", P_UNKNOWN_FIELD, "/by");
  expect_review_problem("{}", P_MISSING_FIELD, "/status");
  expect_review_problem("{\"reviewer\":\"ann\"}", P_MISSING_FIELD, "/status");
  expect_review_problem("{\"status\":\"done\"}", P_INVALID_FIELD, "/status");
  expect_review_problem("{\"status\":3}", P_INVALID_FIELD, "/status");
  expect_review_problem("{\"status\":null}", P_INVALID_FIELD, "/status");
  /* label: required with relabelled, refused otherwise */
  expect_review_problem("{\"status\":\"relabelled\"}", P_MISSING_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":null}", P_MISSING_FIELD, "/label");
  expect_review_problem("{\"status\":\"confirmed\",\"label\":2}", P_INVALID_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":1.5}", P_INVALID_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":\"\"}", P_INVALID_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":{\"c\":1}}", P_INVALID_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":true}", P_INVALID_FIELD, "/label");
  expect_review_problem("{\"status\":\"relabelled\",\"label\":[\"a\",[1]]}", P_INVALID_FIELD, "/label/1");
  /* a label list longer than 4096 bytes of JSON */
  char body[6000];
  size_t j = (size_t)snprintf(body, sizeof body, "{\"status\":\"relabelled\",\"label\":[");
  for (int i = 0; i < 1100; i++) j += (size_t)snprintf(body + j, sizeof body - j, "%s100", i ? "," : "");
  snprintf(body + j, sizeof body - j, "]}");
  expect_review_problem(body, P_TOO_LARGE, "/label");
  /* reviewer and note: strings within their lengths */
  char r129[130], n4097[4098];
  memset(r129, 'r', 129);
  r129[129] = 0;
  memset(n4097, 'n', 4097);
  n4097[4097] = 0;
  snprintf(body, sizeof body, "{\"status\":\"open\",\"reviewer\":\"%s\"}", r129);
  expect_review_problem(body, P_TOO_LARGE, "/reviewer");
  snprintf(body, sizeof body, "{\"status\":\"open\",\"note\":\"%s\"}", n4097);
  expect_review_problem(body, P_TOO_LARGE, "/note");
  expect_review_problem("{\"status\":\"open\",\"reviewer\":7}", P_INVALID_FIELD, "/reviewer");
  expect_review_problem("{\"status\":\"open\",\"note\":[\"x\"]}", P_INVALID_FIELD, "/note");
}

/* ------------------------------------------------------------------ meta bodies */

static void test_review_meta_decode(void **state) {
  (void)state;
  problem err = {0};
  meta_op op = {0};
  /* kept as given but compact with sorted keys; focald's own keys checked */
  static const char ok[] = "{ \"uri\": \"s3://b/x.png\", \"tags\": [\"a\"], \"patient_id\": \"p1\", \"z\": {\"k\": 1} }";
  assert_int_equal(meta_decode(ok, strlen(ok), &op, &err), 0);
  assert_string_equal(op.meta, "{\"patient_id\":\"p1\",\"tags\":[\"a\"],\"uri\":\"s3://b/x.png\",\"z\":{\"k\":1}}");
  free(op.meta);
  op.meta = NULL;
  assert_int_equal(meta_decode("{}", 2, &op, &err), 0);
  assert_string_equal(op.meta, "{}");
  free(op.meta);
  op.meta = NULL;
  static const struct {
    const char *body;
    problem_code code;
    const char *field;
  } bad[] = {
      {"{\"uri\":", P_BAD_JSON, ""},
      {"[1]", P_INVALID_FIELD, ""},
      {"null", P_INVALID_FIELD, ""},
      {"{\"uri\":5}", P_INVALID_FIELD, "/uri"},
      {"{\"study_uid\":[]}", P_INVALID_FIELD, "/study_uid"},
      {"{\"series_uid\":true}", P_INVALID_FIELD, "/series_uid"},
      {"{\"sop_uid\":1.5}", P_INVALID_FIELD, "/sop_uid"},
      {"{\"patient_id\":{}}", P_INVALID_FIELD, "/patient_id"},
      {"{\"tags\":\"a,b\"}", P_INVALID_FIELD, "/tags"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    memset(&err, 0, sizeof err);
    if (meta_decode(bad[i].body, strlen(bad[i].body), &op, &err) == 0) fail_msg("decoded %s", bad[i].body);
    if (err.code != bad[i].code || strcmp(err.field, bad[i].field) != 0)
      fail_msg("%s: got %s at \"%s\"", bad[i].body, problem_name(err.code), err.field);
    free(op.meta);
    op.meta = NULL;
  }
  /* at most 64 KiB of compact JSON: exactly 65536 bytes pass, one more is too large */
  enum { PAD = 65536 - 8 }; /* {"a":"<PAD>"} is PAD + 8 bytes */
  char *body = malloc(PAD + 16);
  assert_non_null(body);
  for (int extra = 0; extra < 2; extra++) {
    memcpy(body, "{\"a\":\"", 6);
    memset(body + 6, 'x', PAD + (size_t)extra);
    memcpy(body + 6 + PAD + extra, "\"}", 3);
    memset(&err, 0, sizeof err);
    const int rc = meta_decode(body, strlen(body), &op, &err);
    if (extra == 0) {
      assert_int_equal(rc, 0);
      assert_int_equal(strlen(op.meta), 65536);
    } else {
      assert_int_equal(rc, -1);
      assert_int_equal(err.code, P_TOO_LARGE);
      assert_string_equal(err.field, "");
    }
    free(op.meta);
    op.meta = NULL;
  }
  free(body);
}

/* ------------------------------------------------------------------ queue bodies */

static void expect_queue_problem(const char *body, problem_code code, const char *field) {
  queue_params p;
  problem err = {0};
  if (queue_decode(body, strlen(body), &p, &err) == 0) {
    free(p.params_json);
    fail_msg("decoded, expected %s for %s", problem_name(code), body);
  }
  if (err.code != code || strcmp(err.field, field) != 0)
    fail_msg("%s: got %s at \"%s\" (%s), expected %s at \"%s\"", body, problem_name(err.code), err.field, err.detail,
             problem_name(code), field);
  assert_true(strlen(err.detail) > 0);
  assert_null(p.params_json); /* nothing to free after a refusal */
}

/* Only a name: every default as the README gives it (mean_loss over *, hardest first, size 100, min_seen 1). */
static void test_review_queue_decode_defaults_and_fields(void **state) {
  (void)state;
  queue_params p;
  problem err = {0};
  static const char minimal[] = "{\"name\":\"q1\"}";
  assert_int_equal(queue_decode(minimal, strlen(minimal), &p, &err), 0);
  assert_string_equal(p.name, "q1");
  assert_int_equal(p.by, HF_MEAN_LOSS);
  assert_int_equal(p.order, HIST_ORDER_DEFAULT);
  assert_string_equal(p.run, "*");
  assert_int_equal(p.size, 100);
  assert_false(p.has_label);
  assert_int_equal(p.label_issue, ST_LABEL_ISSUE_ANY);
  assert_int_equal(p.min_seen, 1);
  assert_int_equal(p.max_per_label, 0);
  assert_int_equal(p.min_per_label, 0);
  assert_int_equal(p.nquota, 0);
  assert_string_equal(p.dedupe_by, "");
  assert_string_equal(p.params_json, "{\"name\":\"q1\"}");
  free(p.params_json);
  static const char full[] =
      "{\"size\":50,\"name\":\"rad-1\",\"by\":\"ema_loss\",\"order\":\"asc\",\"run\":\"r50\",\"label\":3,\"label_issue\":true,"
      "\"min_seen\":2,\"max_per_label\":10,\"min_per_label\":2,\"quotas\":{\"3\":{\"min\":5,\"max\":8},\"7\":{\"max\":0}},"
      "\"dedupe_by\":\"patient_id\"}";
  assert_int_equal(queue_decode(full, strlen(full), &p, &err), 0);
  assert_string_equal(p.name, "rad-1");
  assert_int_equal(p.by, HF_EMA_LOSS);
  assert_int_equal(p.order, HIST_ORDER_ASC);
  assert_string_equal(p.run, "r50");
  assert_int_equal(p.size, 50);
  assert_true(p.has_label && p.label == 3);
  assert_int_equal(p.label_issue, ST_LABEL_ISSUE_YES);
  assert_int_equal(p.min_seen, 2);
  assert_int_equal(p.max_per_label, 10);
  assert_int_equal(p.min_per_label, 2);
  assert_int_equal(p.nquota, 2);
  /* an override keeps only the bounds it names: -1 is "the general one" */
  for (int k = 0; k < 2; k++) {
    if (p.quota_label[k] == 3) {
      assert_int_equal(p.quota_min[k], 5);
      assert_int_equal(p.quota_max[k], 8);
    } else {
      assert_int_equal(p.quota_label[k], 7);
      assert_int_equal(p.quota_min[k], -1);
      assert_int_equal(p.quota_max[k], 0);
    }
  }
  assert_string_equal(p.dedupe_by, "patient_id");
  /* the request is stored canonical: compact, keys sorted */
  assert_true(strncmp(p.params_json, "{\"by\":\"ema_loss\",\"dedupe_by\":\"patient_id\",\"label\":3,", 52) == 0);
  free(p.params_json);
  /* label_issue false, nulls for the optional fields */
  static const char nulls[] = "{\"name\":\"q\",\"order\":null,\"run\":null,\"label\":null,\"label_issue\":false,\"quotas\":null,"
                              "\"dedupe_by\":null,\"order\":\"desc\"}";
  /* (order twice: refused as duplicate keys) */
  assert_int_equal(queue_decode(nulls, strlen(nulls), &p, &err), -1);
  assert_int_equal(err.code, P_BAD_JSON);
  static const char nulls1[] = "{\"name\":\"q\",\"by\":null,\"order\":null,\"run\":null,\"label\":null,\"label_issue\":false,"
                               "\"quotas\":null,\"dedupe_by\":null}";
  assert_int_equal(queue_decode(nulls1, strlen(nulls1), &p, &err), 0);
  assert_int_equal(p.by, HF_MEAN_LOSS); /* by: null is the default, as for every optional field */
  assert_string_equal(p.run, "*");
  assert_false(p.has_label);
  assert_int_equal(p.label_issue, ST_LABEL_ISSUE_NO);
  assert_int_equal(p.order, HIST_ORDER_DEFAULT);
  free(p.params_json);
  static const char star[] = "{\"name\":\"q\",\"run\":\"*\",\"size\":10000,\"min_seen\":4294967295}";
  assert_int_equal(queue_decode(star, strlen(star), &p, &err), 0);
  assert_string_equal(p.run, "*");
  assert_int_equal(p.size, 10000);
  assert_int_equal(p.min_seen, UINT32_MAX);
  free(p.params_json);
}

static void test_review_queue_decode_rejects_with_field(void **state) {
  (void)state;
  expect_queue_problem("{\"name\":", P_BAD_JSON, "");
  expect_queue_problem("[]", P_INVALID_FIELD, "");
  expect_queue_problem("{\"name\":\"q\",\"status\":\"open\"}", P_UNKNOWN_FIELD, "/status");
  expect_queue_problem("{}", P_MISSING_FIELD, "/name");
  expect_queue_problem("{\"name\":\"a b\"}", P_BAD_NAME, "/name");
  expect_queue_problem("{\"name\":\"..\"}", P_BAD_NAME, "/name");
  expect_queue_problem("{\"name\":7}", P_BAD_NAME, "/name");
  expect_queue_problem("{\"name\":\"q\",\"by\":\"loudness\"}", P_INVALID_FIELD, "/by");
  expect_queue_problem("{\"name\":\"q\",\"by\":3}", P_INVALID_FIELD, "/by");
  expect_queue_problem("{\"name\":\"q\",\"order\":\"up\"}", P_INVALID_FIELD, "/order");
  expect_queue_problem("{\"name\":\"q\",\"run\":\"a/b\"}", P_BAD_NAME, "/run");
  expect_queue_problem("{\"name\":\"q\",\"run\":1}", P_BAD_NAME, "/run");
  expect_queue_problem("{\"name\":\"q\",\"size\":0}", P_INVALID_FIELD, "/size");
  expect_queue_problem("{\"name\":\"q\",\"size\":10001}", P_INVALID_FIELD, "/size");
  expect_queue_problem("{\"name\":\"q\",\"size\":\"5\"}", P_INVALID_FIELD, "/size");
  expect_queue_problem("{\"name\":\"q\",\"size\":null}", P_INVALID_FIELD, "/size");
  expect_queue_problem("{\"name\":\"q\",\"label\":-1}", P_INVALID_FIELD, "/label");
  expect_queue_problem("{\"name\":\"q\",\"label\":2147483648}", P_INVALID_FIELD, "/label");
  expect_queue_problem("{\"name\":\"q\",\"label\":4294967297}", P_INVALID_FIELD, "/label"); /* not read as 1 */
  expect_queue_problem("{\"name\":\"q\",\"label_issue\":\"yes\"}", P_INVALID_FIELD, "/label_issue");
  expect_queue_problem("{\"name\":\"q\",\"min_seen\":0}", P_INVALID_FIELD, "/min_seen");
  expect_queue_problem("{\"name\":\"q\",\"min_seen\":4294967296}", P_INVALID_FIELD, "/min_seen");
  expect_queue_problem("{\"name\":\"q\",\"max_per_label\":0}", P_INVALID_FIELD, "/max_per_label");
  expect_queue_problem("{\"name\":\"q\",\"min_per_label\":10001}", P_INVALID_FIELD, "/min_per_label");
  expect_queue_problem("{\"name\":\"q\",\"max_per_label\":2,\"min_per_label\":3}", P_INVALID_FIELD, "/min_per_label");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":[1]}", P_INVALID_FIELD, "/quotas");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"cat\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/cat");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"a/b~\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/a~1b~0");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"-1\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/-1");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"03\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/03");
  /* class indices past INT32_MAX, none read as its low 32 bits */
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"2147483648\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/2147483648");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"4294967297\":{\"max\":1}}}", P_INVALID_FIELD, "/quotas/4294967297");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"99999999999999999999\":{\"max\":1}}}", P_INVALID_FIELD,
                       "/quotas/99999999999999999999");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"3\":5}}", P_INVALID_FIELD, "/quotas/3");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"3\":{\"most\":5}}}", P_UNKNOWN_FIELD, "/quotas/3/most");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"3\":{\"min\":5,\"max\":4}}}", P_INVALID_FIELD, "/quotas/3");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"3\":{\"max\":10001}}}", P_INVALID_FIELD, "/quotas/3/max");
  expect_queue_problem("{\"name\":\"q\",\"quotas\":{\"3\":{\"min\":-1}}}", P_INVALID_FIELD, "/quotas/3/min");
  expect_queue_problem("{\"name\":\"q\",\"dedupe_by\":\"\"}", P_INVALID_FIELD, "/dedupe_by");
  expect_queue_problem("{\"name\":\"q\",\"dedupe_by\":5}", P_INVALID_FIELD, "/dedupe_by");
  /* at most QUEUE_QUOTAS_MAX labels in quotas */
  char *body = malloc(32 * (QUEUE_QUOTAS_MAX + 2));
  assert_non_null(body);
  size_t j = (size_t)sprintf(body, "{\"name\":\"q\",\"quotas\":{");
  for (int l = 0; l <= QUEUE_QUOTAS_MAX; l++) j += (size_t)sprintf(body + j, "%s\"%d\":{\"max\":1}", l ? "," : "", l);
  sprintf(body + j, "}}");
  expect_queue_problem(body, P_TOO_LARGE, "/quotas");
  free(body);
}

/* ------------------------------------------------------------------ queue selection */

static const hist_params HP = {0.3, 10};

typedef struct fixture {
  st_map *map;
  int64_t seq;
} fixture;

/* Sample id observed once in run (id run_id) of dataset "d" with loss and label. */
static void observe(fixture *f, const char *run, int64_t run_id, const char *id, float loss, int32_t label) {
  st_batch_ref ref = {1, 0, "d", run_id, 0, run, 4};
  char *ids[1] = {(char *)id};
  hist_obs o = {.loss = loss, .p_t = 0.5f, .p_max = 0.5f, .pred = label, .label = label, .scored = 1};
  st_batch_prep p;
  assert_int_equal(st_prepare_batch(f->map, &ref, 1, ids, &p), 0);
  st_apply_batch(f->map, &p, ++f->seq, ids, &o, &HP, 0, NULL, NULL);
  st_tx_end(f->map);
}

static void set_status(fixture *f, const char *id, int to, float confirm) {
  st_dataset *ds = st_w_find(f->map, 1);
  const int64_t key = st_key(ds, id);
  assert_true(key >= 0);
  assert_int_equal(st_prepare_reviews(f->map, ds, 1), 0);
  st_review e = {.seq = f->seq, .batch_seq = f->seq, .prev = -1, .from = (uint8_t)st_sample_status(ds, (uint32_t)key),
                 .to = (uint8_t)to};
  st_apply_status(ds, (uint32_t)key, to, NULL, confirm, &e);
  st_tx_end(f->map);
}

static void set_meta(fixture *f, const char *id, const char *meta) {
  st_dataset *ds = st_w_find(f->map, 1);
  const int64_t key = st_key(ds, id);
  assert_true(key >= 0);
  st_apply_meta(ds, (uint32_t)key, strdup(meta), f->seq);
}

/* Run a, labels and mean losses:
 *   s0 5 (label 0)   s1 4 (0)   s2 3 (1)   s3 2 (1)   s4 1 (2)
 *   s5 6 (0) confirmed when its ema_loss was 1     s6 7 (0) queued     s7 8 (1) in_review
 * Run b saw s4 once more, at loss 1. Meta: s0 and s1 patient p1, s2 patient p2. */
static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  f->map = st_map_new();
  assert_non_null(f->map);
  const float loss[8] = {5, 4, 3, 2, 1, 6, 7, 8};
  const int32_t label[8] = {0, 0, 1, 1, 2, 0, 0, 1};
  for (int i = 0; i < 8; i++) {
    char id[8];
    snprintf(id, sizeof id, "s%d", i);
    observe(f, "a", 1, id, loss[i], label[i]);
  }
  observe(f, "b", 2, "s4", 1, 2);
  set_status(f, "s5", ST_CONFIRMED, 1.0f);
  set_status(f, "s6", ST_QUEUED, NAN);
  set_status(f, "s7", ST_IN_REVIEW, NAN);
  set_meta(f, "s0", "{\"patient_id\":\"p1\"}");
  set_meta(f, "s1", "{\"patient_id\":\"p1\"}");
  set_meta(f, "s2", "{\"patient_id\":\"p2\"}");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  st_map_free(f->map);
  free(f);
  return 0;
}

/* Builds a queue from body (through queue_decode) with reconsider factor rf, and checks its samples are
 * exactly want (ids, in order; NULL-terminated) and each score is the sample's mean loss. */
static void expect_queue(fixture *f, const char *body, double rf, const char *const *want) {
  queue_params p;
  problem err = {0};
  if (queue_decode(body, strlen(body), &p, &err) != 0) fail_msg("%s: %s", body, err.detail);
  const st_dataset *ds = st_w_find(f->map, 1);
  uint32_t *keys = NULL, n = 0;
  float *scores = NULL;
  if (queue_select(ds, &p, rf, &keys, &scores, &n, &err) != 0) fail_msg("%s: %s", body, err.detail);
  char got[256] = "", exp[256] = "";
  for (uint32_t i = 0; i < n; i++) {
    strcat(got, st_sample_id(ds, keys[i]));
    strcat(got, " ");
  }
  for (int i = 0; want[i]; i++) {
    strcat(exp, want[i]);
    strcat(exp, " ");
  }
  if (strcmp(got, exp) != 0) fail_msg("%s (reconsider %g): got [%s], expected [%s]", body, rf, got, exp);
  static const float mean_loss[8] = {5, 4, 3, 2, 1, 6, 7, 8};
  for (uint32_t i = 0; i < n; i++) {
    const int s = atoi(st_sample_id(ds, keys[i]) + 1);
    assert_true(scores[i] == mean_loss[s]);
  }
  free(keys);
  free(scores);
  free(p.params_json);
}

#define Q(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The hardest open samples, hardest first; queued, in-review and confirmed samples stay out unless a
 * confirmed one is due for reconsideration. */
static void test_review_queue_select_ranks_open_samples(void **state) {
  fixture *f = *state;
  expect_queue(f, "{\"name\":\"q\"}", 0, Q("s0", "s1", "s2", "s3", "s4"));
  expect_queue(f, "{\"name\":\"q\",\"size\":2}", 0, Q("s0", "s1"));
  expect_queue(f, "{\"name\":\"q\",\"order\":\"asc\"}", 0, Q("s4", "s3", "s2", "s1", "s0"));
  /* s5's ema_loss (6) is past 2 x its value at confirmation (1): it comes back, in its place */
  expect_queue(f, "{\"name\":\"q\"}", 2.0, Q("s5", "s0", "s1", "s2", "s3", "s4"));
  /* but not past 10 x */
  expect_queue(f, "{\"name\":\"q\"}", 10.0, Q("s0", "s1", "s2", "s3", "s4"));
}

static void test_review_queue_select_filters(void **state) {
  fixture *f = *state;
  expect_queue(f, "{\"name\":\"q\",\"label\":1}", 0, Q("s2", "s3"));
  expect_queue(f, "{\"name\":\"q\",\"label\":3}", 0, (const char *const[]){NULL});
  /* min_seen over run *: only s4 was seen twice (once in each run) */
  expect_queue(f, "{\"name\":\"q\",\"min_seen\":2}", 0, Q("s4"));
  /* one run: only what it saw */
  expect_queue(f, "{\"name\":\"q\",\"run\":\"b\"}", 0, Q("s4"));
  queue_params p;
  problem err = {0};
  static const char body[] = "{\"name\":\"q\",\"run\":\"nope\"}";
  assert_int_equal(queue_decode(body, strlen(body), &p, &err), 0);
  uint32_t *keys = NULL, n = 0;
  float *scores = NULL;
  assert_int_equal(queue_select(st_w_find(f->map, 1), &p, 0, &keys, &scores, &n, &err), -1);
  assert_int_equal(err.code, P_RUN_NOT_FOUND);
  assert_string_equal(err.field, "/run");
  free(p.params_json);
}

/* Quotas: minimums are filled first with each label's hardest, then the rest by rank within the maximums;
 * the queue keeps the ranking's order whichever pass chose a sample. */
static void test_review_queue_select_quotas(void **state) {
  fixture *f = *state;
  expect_queue(f, "{\"name\":\"q\",\"max_per_label\":1}", 0, Q("s0", "s2", "s4"));
  /* without a minimum, size 3 takes the three hardest; with one per label, one of each */
  expect_queue(f, "{\"name\":\"q\",\"size\":3}", 0, Q("s0", "s1", "s2"));
  expect_queue(f, "{\"name\":\"q\",\"size\":3,\"min_per_label\":1}", 0, Q("s0", "s2", "s4"));
  /* an override's max 0 leaves the label out; its min takes that label's hardest first */
  expect_queue(f, "{\"name\":\"q\",\"quotas\":{\"0\":{\"max\":0}}}", 0, Q("s2", "s3", "s4"));
  expect_queue(f, "{\"name\":\"q\",\"size\":3,\"quotas\":{\"1\":{\"min\":2}}}", 0, Q("s0", "s2", "s3"));
  /* an override replaces only the bound it names: label 0 keeps max_per_label 1, label 1 may have 2 */
  expect_queue(f, "{\"name\":\"q\",\"max_per_label\":1,\"quotas\":{\"1\":{\"max\":2}}}", 0, Q("s0", "s2", "s3", "s4"));
  /* a minimum the data cannot meet is met as far as it can be */
  expect_queue(f, "{\"name\":\"q\",\"size\":2,\"quotas\":{\"2\":{\"min\":5}}}", 0, Q("s0", "s4"));
}

/* dedupe_by: at most one sample per value of the meta key, the hardest; samples without the key are not
 * duplicates of each other. */
static void test_review_queue_select_dedupe(void **state) {
  fixture *f = *state;
  expect_queue(f, "{\"name\":\"q\",\"dedupe_by\":\"patient_id\"}", 0, Q("s0", "s2", "s3", "s4"));
  expect_queue(f, "{\"name\":\"q\",\"dedupe_by\":\"study_uid\"}", 0, Q("s0", "s1", "s2", "s3", "s4"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_review_transition_table),
      cmocka_unit_test(test_review_decode_valid_bodies),
      cmocka_unit_test(test_review_decode_rejects_with_field),
      cmocka_unit_test(test_review_decode_label_range),
      cmocka_unit_test(test_review_meta_decode),
      cmocka_unit_test(test_review_queue_decode_defaults_and_fields),
      cmocka_unit_test(test_review_queue_decode_rejects_with_field),
      cmocka_unit_test_setup_teardown(test_review_queue_select_ranks_open_samples, setup, teardown),
      cmocka_unit_test_setup_teardown(test_review_queue_select_filters, setup, teardown),
      cmocka_unit_test_setup_teardown(test_review_queue_select_quotas, setup, teardown),
      cmocka_unit_test_setup_teardown(test_review_queue_select_dedupe, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
