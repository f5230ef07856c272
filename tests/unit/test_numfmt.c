/* test_numfmt.c — float32 text reads back exactly and is printf's %.9g. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "numfmt.h"

static void check(float v, int *differs_from_printf) {
  char mine[32], ref[32];
  num_format_f32(mine, v);
  snprintf(ref, sizeof ref, "%.9g", (double)v);
  float back = strtof(mine, NULL);
  if (back != v) fail_msg("%.9g printed as %s, which reads back as %.9g", (double)v, mine, (double)back);
  if (strcmp(mine, ref) != 0) (*differs_from_printf)++;
}

static void test_numfmt_round_trips_every_exponent(void **state) {
  (void)state;
  int differs = 0;
  uint32_t s = 12345;
  /* random bit patterns over all finite floats, both signs */
  for (int i = 0; i < 2000000; i++) {
    s = s * 1664525u + 1013904223u;
    float v;
    uint32_t bits = s;
    memcpy(&v, &bits, 4);
    if (!isfinite(v)) continue;
    check(v, &differs);
  }
  /* values users see: losses and probabilities */
  const float special[] = {0.0f, 1.0f, -1.0f, 0.5f, 0.25f, 0.1f, 1e-5f, 1e-4f, 9.99999e-5f, 123456789.0f, 1e9f, 1e10f,
                           3.4028235e38f, 1.17549435e-38f, 1.4e-45f, 0.04332170f, 0.12996510f, 1.2375586f, 100.0f, 1e4f};
  for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) check(special[i], &differs);
  /* and the text is printf's %.9g, digit for digit */
  fprintf(stderr, "  %d of ~2M differ from %%.9g in their text\n", differs);
  assert_int_equal(differs, 0);
}

static void test_numfmt_format_like_g(void **state) {
  (void)state;
  char b[32];
  num_format_f32(b, 0.5f);
  assert_string_equal(b, "0.5");
  num_format_f32(b, 2.0f);
  assert_string_equal(b, "2");
  num_format_f32(b, -0.25f);
  assert_string_equal(b, "-0.25");
  num_format_f32(b, 1e-7f);
  assert_string_equal(b, "1.00000001e-07");
  num_format_f32(b, 1e10f);
  assert_string_equal(b, "1e+10");
  num_format_f32(b, 0.0001f);
  assert_string_equal(b, "9.99999975e-05");
  num_format_f32(b, 123.5f);
  assert_string_equal(b, "123.5");
}

/* Decimal input reads as float32 when it rounds to a finite float32: FLT_MAX as this file prints it
 * (3.40282347e+38) and as shortest round-trip printers do (3.4028235e+38) are both above FLT_MAX as
 * doubles, and both FLT_MAX as float32; from FLT_MAX + half an ulp on, rounding gives infinity. */
static void test_numfmt_fits_f32_up_to_rounding(void **state) {
  (void)state;
  char buf[32];
  num_format_f32(buf, 3.40282347e38f);
  assert_string_equal(buf, "3.40282347e+38");
  const double fits[] = {0.0, -0.0, 1e-300, 1.0, 3.4028234663852886e38, 3.40282347e38, -3.40282347e38,
                         3.4028235e38, -3.4028235e38, 3.4028235677973362e38};
  const double not_fits[] = {3.4028235677973366e38, -3.4028235677973366e38, 3.4028236e38, 1e39, INFINITY,
                             -INFINITY, NAN};
  for (size_t i = 0; i < sizeof fits / sizeof *fits; i++) {
    if (!num_fits_f32(fits[i])) fail_msg("%.17g should fit float32", fits[i]);
    volatile double d = fits[i];
    assert_true(isfinite((float)d));
  }
  for (size_t i = 0; i < sizeof not_fits / sizeof *not_fits; i++)
    if (num_fits_f32(not_fits[i])) fail_msg("%.17g should not fit float32", not_fits[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_numfmt_round_trips_every_exponent),
      cmocka_unit_test(test_numfmt_format_like_g),
      cmocka_unit_test(test_numfmt_fits_f32_up_to_rounding),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
