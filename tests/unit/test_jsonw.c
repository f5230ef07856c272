/* test_jsonw.c — the JSON writer: numbers as float32 with null for what is not finite, integers at their
 * extremes, RFC 3339 times, history records, and a response that could not be written whole answered 500. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jsonw.h"

/* What one call writes into an empty jw (malloc'd; the caller frees it). */
static char *num_text(double v) {
  jw o = {0};
  jw_num(&o, v);
  assert_false(o.failed);
  return buf_take(&o, NULL);
}

static char *i64_text(void (*fn)(jw *, int64_t), int64_t v) {
  jw o = {0};
  fn(&o, v);
  assert_false(o.failed);
  return buf_take(&o, NULL);
}

static void expect_num(double v, const char *want) {
  char *got = num_text(v);
  if (strcmp(got, want) != 0) fail_msg("jw_num(%.17g) wrote %s, expected %s", v, got, want);
  free(got);
}

/* Not finite, or past float32's range (it would become an infinity): null, which JSON can hold. */
static void test_jsonw_num_non_finite_is_null(void **state) {
  (void)state;
  expect_num(NAN, "null");
  expect_num(-NAN, "null");
  expect_num(INFINITY, "null");
  expect_num(-INFINITY, "null");
  expect_num(1e39, "null");
  expect_num(-1e39, "null");
  expect_num(DBL_MAX, "null");
}

/* Numbers are written as the float32 they round to, with the 9 significant digits that read back as that
 * float: 1/3 is 0.333333343 (float32's nearest), 2^24 + 1 is 16777216 (float32 has no 16777217). Checked
 * against literals, then against printf's %.9g of the float32 value and a strtof round trip over a spread. */
static void test_jsonw_num_float32_rounding(void **state) {
  (void)state;
  expect_num(0, "0");
  expect_num(1, "1");
  expect_num(-2.5, "-2.5");
  expect_num(0.1, "0.100000001");
  expect_num(1.0 / 3.0, "0.333333343");
  expect_num(16777217.0, "16777216");
  expect_num(FLT_MAX, "3.40282347e+38");
  expect_num(-FLT_MAX, "-3.40282347e+38");
  expect_num(1e-45, "1.40129846e-45"); /* the least float32 subnormal */
  expect_num(1e-50, "0");              /* below half of it: float32 zero */
  uint32_t x = 12345;
  for (int i = 0; i < 20000; i++) {
    x = x * 1664525u + 1013904223u;
    const double v = ldexp((double)(x >> 8) / (1u << 24), (int)(x % 200) - 100) * ((x & 1) ? -1 : 1);
    const float f = (float)v;
    char want[40];
    snprintf(want, sizeof want, "%.9g", (double)f);
    char *got = num_text(v);
    if (strtof(got, NULL) != f) fail_msg("jw_num(%.17g) wrote %s, which reads back as %a, not %a", v, got, strtof(got, NULL), f);
    /* the same number as %.9g: compare values digit for digit by reading both as double */
    if (strtod(got, NULL) != strtod(want, NULL)) fail_msg("jw_num(%.17g) wrote %s, %%.9g gives %s", v, got, want);
    free(got);
  }
}

static void expect_int(int64_t v, const char *want) {
  char *got = i64_text(jw_int, v);
  assert_string_equal(got, want);
  free(got);
}

static void test_jsonw_int_extremes(void **state) {
  (void)state;
  expect_int(0, "0");
  expect_int(7, "7");
  expect_int(-1, "-1");
  expect_int(INT32_MAX, "2147483647");
  expect_int((int64_t)1 << 47, "140737488355328");
  expect_int(INT64_MAX, "9223372036854775807");
  expect_int(INT64_MIN, "-9223372036854775808"); /* whose negation does not fit in int64 */
  expect_int(INT64_MIN + 1, "-9223372036854775807");
  /* appended to what is there */
  jw o = {0};
  jw_lit(&o, "[");
  jw_int(&o, -42);
  jw_lit(&o, ",");
  jw_int(&o, 10);
  jw_lit(&o, "]");
  assert_string_equal(o.b, "[-42,10]");
  assert_int_equal(o.len, 8);
  free(o.b);
}

/* RFC 3339 in UTC, quoted: seconds for jw_time, milliseconds (always three digits) for jw_time_ms. The
 * instants are known dates: the epoch, 2000-02-29 (a leap day), 2023-11-14T22:13:20Z (1.7e9 s), and the
 * last second of 2038-01-19 that fits in 31 bits. Any 64-bit value is written as a time of four-digit year
 * (RFC 3339 has no other): the first and last instants of years 0000 to 9999, and what lies past them,
 * INT64_MIN and INT64_MAX among it (whose fraction once overflowed), as the nearest of the two. */
static void test_jsonw_times_rfc3339(void **state) {
  (void)state;
  static const struct {
    int64_t s;
    const char *want;
  } secs[] = {{0, "\"1970-01-01T00:00:00Z\""},
              {951782400, "\"2000-02-29T00:00:00Z\""},
              {1700000000, "\"2023-11-14T22:13:20Z\""},
              {2147483647, "\"2038-01-19T03:14:07Z\""},
              {4102444800, "\"2100-01-01T00:00:00Z\""},
              {-2208988800, "\"1900-01-01T00:00:00Z\""},
              {-62135596800, "\"0001-01-01T00:00:00Z\""},
              {-62167219200, "\"0000-01-01T00:00:00Z\""},
              {-62167219201, "\"0000-01-01T00:00:00Z\""},
              {253402300799, "\"9999-12-31T23:59:59Z\""},
              {253402300800, "\"9999-12-31T23:59:59Z\""},
              {INT64_MIN, "\"0000-01-01T00:00:00Z\""},
              {INT64_MAX, "\"9999-12-31T23:59:59Z\""}};
  for (size_t i = 0; i < sizeof secs / sizeof secs[0]; i++) {
    char *got = i64_text(jw_time, secs[i].s);
    assert_string_equal(got, secs[i].want);
    free(got);
  }
  static const struct {
    int64_t ms;
    const char *want;
  } ms[] = {{0, "\"1970-01-01T00:00:00.000Z\""},
            {5, "\"1970-01-01T00:00:00.005Z\""},
            {1700000000123, "\"2023-11-14T22:13:20.123Z\""},
            {951782399999, "\"2000-02-28T23:59:59.999Z\""},
            {1700000000050, "\"2023-11-14T22:13:20.050Z\""},
            {-1, "\"1969-12-31T23:59:59.999Z\""},   /* before 1970: the second below and a positive fraction */
            {-1500, "\"1969-12-31T23:59:58.500Z\""},
            {-62167219200000, "\"0000-01-01T00:00:00.000Z\""},
            {-62167219200001, "\"0000-01-01T00:00:00.000Z\""},
            {253402300799999, "\"9999-12-31T23:59:59.999Z\""},
            {253402300800000, "\"9999-12-31T23:59:59.999Z\""},
            {INT64_MIN, "\"0000-01-01T00:00:00.000Z\""},
            {INT64_MAX, "\"9999-12-31T23:59:59.999Z\""}};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++) {
    char *got = i64_text(jw_time_ms, ms[i].ms);
    assert_string_equal(got, ms[i].want);
    free(got);
  }
}

/* h's fields as a JSON object's text (the caller frees it). */
static char *history_object(const hist_view *h) {
  jw o = {0};
  jw_lit(&o, "{");
  jw_history(&o, h);
  jw_lit(&o, "}");
  assert_non_null(o.b);
  return o.b;
}

/* A history record: every field, non-finite as null, steps and label null when there are none. The text
 * must parse as the members of a JSON object. */
static void test_jsonw_history_record(void **state) {
  (void)state;
  hist_view h = {.seen = 3, .last_loss = 0.5, .mean_loss = 0.25, .max_loss = 1, .ema_loss = NAN, .confidence = 0.75,
                 .variability = 0, .correctness = 1.0 / 3.0, .forgetting = 1, .aum = -0.5, .forgetting_events = 1,
                 .el2n = INFINITY, .label_issue_score = 0.125, .early_label_issue_score = 0.375, .grand = 2.5,
                 .has_step = 1, .first_step = 10, .last_step = 140737488355327,
                 .label = 4, .label_issue = 1};
  char *text = history_object(&h);
  assert_string_equal(text, "{\"seen\":3,\"last_loss\":0.5,\"mean_loss\":0.25,\"max_loss\":1,\"ema_loss\":null,\"confidence\":0.75,"
                           "\"variability\":0,\"correctness\":0.333333343,\"forgetting\":1,\"forgetting_events\":1,\"aum\":-0.5,"
                           "\"el2n\":null,\"label_issue_score\":0.125,\"early_label_issue_score\":0.375,\"grand\":2.5,"
                           "\"first_step\":10,\"last_step\":140737488355327,"
                           "\"label\":4,\"label_issue\":true}");
  free(text);
  h.has_step = 0;
  h.label = -1;
  h.label_issue = 0;
  text = history_object(&h);
  assert_non_null(strstr(text, ",\"first_step\":null,\"last_step\":null,\"label\":null,\"label_issue\":false}"));
  free(text);
  /* counts are written whole past float32's 2^24; a mean of counts over runs that is not whole, as any number */
  h.seen = 16777217;
  h.forgetting = 4294967295.0;
  h.forgetting_events = 33554433.5;
  text = history_object(&h);
  assert_non_null(strstr(text, "{\"seen\":16777217,"));
  assert_non_null(strstr(text, ",\"forgetting\":4294967295,\"forgetting_events\":33554432,"));
  free(text);
}

/* jw_respond hands the text over as a 200 application/json; a buffer that failed becomes a 500 problem,
 * never a document cut short. */
static void test_jsonw_respond(void **state) {
  (void)state;
  jw o = {0};
  jw_lit(&o, "{\"a\":");
  jw_num(&o, 1.5);
  jw_lit(&o, "}");
  http_resp resp;
  memset(&resp, 0, sizeof resp);
  assert_int_equal(jw_respond(&resp, 201, &o), 0);
  assert_int_equal(resp.status, 201);
  assert_string_equal(resp.content_type, "application/json");
  assert_string_equal(resp.body, "{\"a\":1.5}");
  assert_int_equal(resp.len, 9);
  assert_null(o.b); /* the body now belongs to the response */
  free(resp.body);
  /* a failed buffer: later writes do nothing, and the answer is 500 */
  jw_lit(&o, "{\"items\":[");
  assert_int_equal(buf_reserve(&o, (size_t)-1 / 2), -1);
  assert_true(o.failed);
  const size_t before = o.len;
  jw_num(&o, 2.0);
  jw_int(&o, 3);
  jw_time(&o, 0);
  jw_time_ms(&o, 0);
  assert_int_equal(o.len, before);
  memset(&resp, 0, sizeof resp);
  jw_respond(&resp, 200, &o);
  assert_int_equal(resp.status, 500);
  assert_string_equal(resp.content_type, "application/problem+json");
  assert_null(o.b);
  assert_false(o.failed);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jsonw_num_non_finite_is_null),
      cmocka_unit_test(test_jsonw_num_float32_rounding),
      cmocka_unit_test(test_jsonw_int_extremes),
      cmocka_unit_test(test_jsonw_times_rfc3339),
      cmocka_unit_test(test_jsonw_history_record),
      cmocka_unit_test(test_jsonw_respond),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
