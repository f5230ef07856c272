/* test_idem.c — the Idempotency-Key header's syntax (every class of byte, both forms, the length limit) and
 * the fingerprint of a request: the same for the same request however its JSON is spelt, different for any
 * other request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "idem.h"
#include "review.h"

/* Every byte in a bare key and inside quotes: printable ASCII but '"' and '\' passes, and a space only
 * inside quotes; every other byte is refused, naming the header. */
static void test_idem_key_every_byte(void **state) {
  (void)state;
  for (int c = 1; c < 256; c++) {
    char bare[4] = {'a', (char)c, 'b', 0}, quoted[6] = {'"', 'a', (char)c, 'b', '"', 0}, key[IDEM_KEY_MAX + 1];
    problem err = {0};
    const int printable = c >= 0x21 && c <= 0x7e && c != '"' && c != '\\';
    assert_int_equal(idem_key_parse(bare, key, &err), printable ? 0 : -1);
    if (printable) assert_string_equal(key, bare);
    else {
      assert_int_equal(err.code, P_BAD_IDEMPOTENCY_KEY);
      assert_string_equal(err.field, "Idempotency-Key");
    }
    assert_int_equal(idem_key_parse(quoted, key, &err), printable || c == ' ' ? 0 : -1);
    if (printable || c == ' ') assert_string_equal(key, bare); /* the quotes are not part of the key */
  }
}

/* No header is no key; empty, unclosed and over-long keys are refused; 255 characters pass, bare or quoted. */
static void test_idem_key_limits(void **state) {
  (void)state;
  char key[IDEM_KEY_MAX + 1], text[IDEM_KEY_MAX + 8];
  problem err = {0};
  assert_int_equal(idem_key_parse(NULL, key, &err), 0);
  assert_string_equal(key, "");
  static const char *const bad[] = {"", "\"\"", "\"", "\"abc", "abc\"", "\"a\"b\""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) assert_int_equal(idem_key_parse(bad[i], key, &err), -1);
  memset(text, 'k', IDEM_KEY_MAX);
  text[IDEM_KEY_MAX] = 0;
  assert_int_equal(idem_key_parse(text, key, &err), 0);
  assert_int_equal(strlen(key), IDEM_KEY_MAX);
  text[IDEM_KEY_MAX] = 'k';
  text[IDEM_KEY_MAX + 1] = 0;
  assert_int_equal(idem_key_parse(text, key, &err), -1);
  assert_non_null(strstr(err.detail, "256"));
  text[0] = '"';
  memset(text + 1, 'q', IDEM_KEY_MAX);
  text[IDEM_KEY_MAX + 1] = '"';
  text[IDEM_KEY_MAX + 2] = 0;
  assert_int_equal(idem_key_parse(text, key, &err), 0);
  assert_int_equal(strlen(key), IDEM_KEY_MAX);
}

/* A review decision decoded from body, its fingerprint (malloc'd). */
static char *review_fp(const char *id, const char *body) {
  review_op *r = calloc(1, sizeof *r);
  problem err;
  assert_non_null(r);
  r->op.kind = WOP_REVIEW;
  snprintf(r->id, sizeof r->id, "%s", id);
  assert_int_equal(review_decode(body, strlen(body), r, &err), 0);
  char *fp = idem_fingerprint(&r->op);
  review_op_free(&r->op);
  assert_non_null(fp);
  return fp;
}

static char *queue_fp(int kind, const char *body_or_name) {
  queue_op *q = calloc(1, sizeof *q);
  problem err;
  assert_non_null(q);
  q->op.kind = kind;
  if (kind == WOP_QUEUE) assert_int_equal(queue_decode(body_or_name, strlen(body_or_name), &q->p, &err), 0);
  else snprintf(q->p.name, sizeof q->p.name, "%s", body_or_name);
  char *fp = idem_fingerprint(&q->op);
  review_op_free(&q->op);
  assert_non_null(fp);
  return fp;
}

/* One request spelt many ways has one fingerprint; each change of the request (sample, status, label,
 * reviewer, note, kind of write, queue parameters) gives another. */
static void test_idem_fingerprint_canonical_and_distinct(void **state) {
  (void)state;
  char *base = review_fp("s1", "{\"status\":\"relabelled\",\"label\":[1,2],\"note\":\"n\"}");
  char *same[] = {review_fp("s1", "{ \"note\": \"n\", \"label\": [1, 2], \"status\": \"relabelled\" }"),
                  review_fp("s1", "{\"status\":\"relabelled\",\"label\":[1,2],\"note\":\"n\",\"reviewer\":null}")};
  for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
    assert_string_equal(same[i], base);
    free(same[i]);
  }
  char *other[] = {review_fp("s2", "{\"status\":\"relabelled\",\"label\":[1,2],\"note\":\"n\"}"),
                   review_fp("s1", "{\"status\":\"relabelled\",\"label\":[2,1],\"note\":\"n\"}"),
                   review_fp("s1", "{\"status\":\"relabelled\",\"label\":[1,2]}"),
                   review_fp("s1", "{\"status\":\"relabelled\",\"label\":[1,2],\"note\":\"n\",\"reviewer\":\"a\"}"),
                   review_fp("s1", "{\"status\":\"confirmed\",\"note\":\"n\"}"),
                   queue_fp(WOP_QUEUE, "{\"name\":\"s1\"}"),
                   queue_fp(WOP_QUEUE, "{\"name\":\"s1\",\"size\":5}"),
                   queue_fp(WOP_QUEUE_DELETE, "s1")};
  const size_t n = sizeof other / sizeof other[0];
  for (size_t i = 0; i < n; i++) {
    assert_string_not_equal(other[i], base);
    for (size_t j = 0; j < i; j++) assert_string_not_equal(other[i], other[j]);
  }
  for (size_t i = 0; i < n; i++) free(other[i]);
  free(base);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idem_key_every_byte),
      cmocka_unit_test(test_idem_key_limits),
      cmocka_unit_test(test_idem_fingerprint_canonical_and_distinct),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
