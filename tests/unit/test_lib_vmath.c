/* test_lib_vmath.c — the kernels' exp/log approximations against libm in double.
 *
 * Each test sweeps its function's whole domain (a dense grid plus the edges)
 * and asserts the accuracy fl_vmath.h states.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "fl_vmath.h"

typedef vf (*vfn)(vf);

/* Largest relative error of f against ref over xs (absolute where |ref| < floor). */
static double worst_error(vfn f, double (*ref)(double), const float *xs, int n, double floor, float *at) {
  double worst = 0.0;
  for (int i = 0; i < n; i += FL_W) {
    float buf[FL_W];
    for (int l = 0; l < FL_W; l++) buf[l] = xs[i + l < n ? i + l : n - 1];
    vf y = f(vf_load(buf));
    for (int l = 0; l < FL_W && i + l < n; l++) {
      double r = ref((double)buf[l]);
      double e = fabs((double)y[l] - r);
      if (fabs(r) >= floor) e /= fabs(r);
      if (e > worst) {
        worst = e;
        *at = buf[l];
      }
    }
  }
  return worst;
}

static double ref_log1p(double u) {
  return log1p(u);
}

static double ref_log(double x) {
  return log(x);
}

static double ref_log1m(double x) {
  return log1p(-x);
}

#define GRID 400000
static float xs[GRID];

static void test_vmath_expneg_accuracy(void **state) {
  (void)state;
  for (int i = 0; i < GRID; i++) xs[i] = -86.5f * (float)i / (GRID - 1);
  float at = 0;
  double w = worst_error(fl__vexpneg, exp, xs, GRID, 0.0, &at);
  fprintf(stderr, "  expneg: worst relative error %.3g at %g\n", w, at);
  assert_true(w < 2e-7);
  /* below the range it flushes to 0; -inf too */
  vf y = fl__vexpneg(vf_set(-90.0f));
  assert_true(y[0] == 0.0f);
  y = fl__vexpneg(vf_set(-INFINITY));
  assert_true(y[0] == 0.0f);
  y = fl__vexpneg(vf_set(0.0f));
  assert_true(y[0] == 1.0f);
}

static void test_vmath_log1p01_accuracy(void **state) {
  (void)state;
  for (int i = 0; i < GRID; i++) xs[i] = (float)i / (GRID - 1);
  /* and tiny arguments, where log1p(u) = u must keep all its digits */
  for (int i = 0; i < 200; i++) xs[i] = powf(10.0f, -38.0f + 0.18f * (float)i);
  float at = 0;
  double w = worst_error(fl__vlog1p01, ref_log1p, xs, GRID, 0.0, &at);
  fprintf(stderr, "  log1p01: worst relative error %.3g at %g\n", w, at);
  assert_true(w < 3e-7);
}

static void test_vmath_log_accuracy(void **state) {
  (void)state;
  /* log-spaced over the positive floats, subnormals included */
  for (int i = 0; i < GRID; i++) xs[i] = (float)exp(-103.0 + 190.0 * i / (GRID - 1));
  float at = 0;
  double w = worst_error(fl__vlog, ref_log, xs, GRID, 1.0, &at);
  fprintf(stderr, "  log: worst error %.3g at %g (relative where |log x| >= 1)\n", w, at);
  assert_true(w < 3e-7);
  /* near 1, where log x is small, the error stays relative */
  for (int i = 0; i < GRID; i++) xs[i] = 0.5f + 1.0f * (float)i / (GRID - 1);
  w = worst_error(fl__vlog, ref_log, xs, GRID, 0.0, &at);
  fprintf(stderr, "  log on [0.5, 1.5]: worst relative error %.3g at %g\n", w, at);
  assert_true(w < 3e-7);
  vf z = fl__vlog(vf_set(0.0f));
  assert_true(z[0] < -100.0f && isfinite(z[0]));
}

static void test_vmath_log1m_accuracy(void **state) {
  (void)state;
  for (int i = 0; i < GRID; i++) xs[i] = (float)i / GRID;
  for (int i = 0; i < 200; i++) xs[i] = powf(10.0f, -38.0f + 0.18f * (float)i);
  float at = 0;
  double w = worst_error(fl__vlog1m, ref_log1m, xs, GRID, 0.0, &at);
  fprintf(stderr, "  log1m: worst relative error %.3g at %g\n", w, at);
  assert_true(w < 3e-7);
}

static void test_vmath_pow01_accuracy(void **state) {
  (void)state;
  const float gammas[] = {0.0f, 0.25f, 0.5f, 1.0f, 2.0f, 2.5f, 3.0f, 4.5f, 10.0f};
  for (size_t gi = 0; gi < sizeof gammas / sizeof gammas[0]; gi++) {
    fl__pow pl = fl__pow_plan(gammas[gi]);
    double worst = 0.0;
    float at = 0;
    for (int i = 0; i <= 100000; i += FL_W) {
      float buf[FL_W];
      for (int l = 0; l < FL_W; l++) buf[l] = (float)(i + l) / 100000.0f;
      vf y = fl__vpow01(vf_load(buf), pl);
      vf y2 = fl__vpow01_v(vf_load(buf), vf_set(gammas[gi]));
      for (int l = 0; l < FL_W; l++) {
        double r = pow((double)buf[l], (double)gammas[gi]);
        double e = fabs(y[l] - r), e2 = fabs(y2[l] - r);
        if (r > 1e-30) {
          e /= r;
          e2 /= r;
        }
        if (e > worst || e2 > worst) {
          worst = e > e2 ? e : e2;
          at = buf[l];
        }
      }
    }
    fprintf(stderr, "  pow01 gamma %-4g: worst relative error %.3g at %g\n", gammas[gi], worst, at);
    /* exp(g log q): the log's error is multiplied by g */
    assert_true(worst < 4e-7 * (1.0 + gammas[gi] * 10.0));
  }
  /* 0^g = 0 for g > 0 and q^0 = 1 */
  assert_true(fl__vpow01(vf_set(0.0f), fl__pow_plan(0.5f))[0] == 0.0f);
  assert_true(fl__vpow01(vf_set(0.0f), fl__pow_plan(0.0f))[0] == 1.0f);
  assert_true(fl__vpow01_v(vf_set(0.0f), vf_set(0.0f))[0] == 1.0f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_vmath_expneg_accuracy),  cmocka_unit_test(test_vmath_log1p01_accuracy),
      cmocka_unit_test(test_vmath_log_accuracy),     cmocka_unit_test(test_vmath_log1m_accuracy),
      cmocka_unit_test(test_vmath_pow01_accuracy),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
