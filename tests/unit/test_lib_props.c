/* test_lib_props.c — properties of the loss library that hold for any input, the
 * fixed numbers users compare against, and every invalid input it must refuse.
 *
 * Reference values computed here are float64 from the textbook formulas; the
 * tolerance is the library's promise (relative 1e-5, absolute 1e-7 below 1e-2)
 * unless a test says otherwise.
 */
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "focal.h"

static int close_enough(double got, double ref) {
  double err = fabs(got - ref);
  if (fabs(ref) < 1e-2) return err <= 1e-7;
  return err <= 1e-5 * fabs(ref);
}

#define assert_close(got, ref)                                                          \
  do {                                                                                  \
    double g_ = (got), r_ = (ref);                                                      \
    if (!close_enough(g_, r_)) fail_msg("%s = %.9g, expected %.9g", #got, g_, r_);      \
  } while (0)

/* Deterministic pseudo-random floats in [lo, hi). */
static uint64_t rng_state = 88172645463325252ull;
static float frand(float lo, float hi) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return lo + (hi - lo) * (float)((rng_state >> 11) * (1.0 / 9007199254740992.0));
}

/* One sample's loss over a (1, m, c) input with dense targets. */
static float loss1(const fl_params *p, const float *x, const float *t, int64_t m, int64_t c) {
  float out = NAN;
  fl_batch b = {.n = 1, .m = m, .c = c, .x = x, .targets = t};
  fl_out o = {.loss = &out};
  assert_int_equal(fl_eval(&o, &b, p, NULL), 0);
  return out;
}

/* Binary cross-entropy with logits, in double. */
static double bce(double z, double t) {
  return (z > 0 ? z : 0) - z * t + log1p(exp(-fabs(z)));
}

/* ---------------------------------------------------------------- the numbers users compare against */

static void test_lib_conventions_sigmoid_values(void **state) {
  (void)state;
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  float x, t;
  x = 0.0f, t = 1.0f;
  assert_close(loss1(&p, &x, &t, 1, 1), 0.04332170);
  x = 0.0f, t = 0.0f;
  assert_close(loss1(&p, &x, &t, 1, 1), 0.12996510);
  x = 2.0f, t = 0.0f;
  assert_close(loss1(&p, &x, &t, 1, 1), 1.2375586);
  x = -3.0f, t = 1.0f;
  assert_close(loss1(&p, &x, &t, 1, 1), 0.6915701);
}

static void test_lib_conventions_profiles_soft_target(void **state) {
  (void)state;
  /* x = 1, t = 0.3, alpha .25, gamma 2; t arrives as float32 0.30000001, hence 5e-8. */
  const float x = 1.0f, t = 0.3f;
  const struct {
    fl_profile prof;
    double want;
  } cases[] = {{FL_PROFILE_TORCHVISION, 0.21337195}, {FL_PROFILE_MONAI, 0.21790816}, {FL_PROFILE_KORNIA, 0.37018021}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fl_params p;
    fl_params_init(&p, FL_SIGMOID_FOCAL);
    p.profile = cases[i].prof;
    double got = loss1(&p, &x, &t, 1, 1);
    if (fabs(got - cases[i].want) > 5e-8) fail_msg("%s: %.9g, expected %.9g", fl_profile_name(cases[i].prof), got, cases[i].want);
  }
}

/* kornia's own test cases, from tests/losses/test_focal_loss.py at kornia v0.8.3 (commit d6bb4bf0d8a0;
 * kornia.losses.focal_loss as changed by kornia #2393, first released in 0.7.0). kornia's tests draw
 * their inputs with torch.rand; the inputs here are fixed values of that kind, and the expected
 * values are what kornia's focal_loss and binary_focal_loss_with_logits return for them (v0.8.3 for
 * `kornia`, v0.6.12 for `kornia_legacy`), summed per sample. kornia's one_hot adds 1e-6 to every
 * class (focald's one-hot is exact), which moves these sums by up to 5e-6 relative: hence 1e-5. */
static const float kornia_x[2 * 6 * 3] = {
    /* (n = 2, m = 6 positions, c = 3): kornia's (B, C, H, W) = (2, 3, 3, 2) with the classes last */
    0.12f, 0.85f, 0.47f, 0.33f, 0.02f, 0.91f, 0.64f, 0.58f, 0.19f, 0.07f, 0.76f, 0.40f, 0.95f, 0.28f, 0.61f, 0.50f, 0.50f, 0.50f,
    0.81f, 0.14f, 0.36f, 0.29f, 0.93f, 0.05f, 0.44f, 0.67f, 0.88f, 0.71f, 0.22f, 0.09f, 0.16f, 0.39f, 0.53f, 0.98f, 0.60f, 0.31f,
};

static void kornia_softmax(fl_profile prof, const int64_t *y, int64_t ignore, float out[2]) {
  fl_params p;
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  p.profile = prof;
  p.alpha = 0.8f;
  p.gamma = 0.5f;
  p.ignore_index = ignore;
  fl_batch b = {.n = 2, .m = 6, .c = 3, .x = kornia_x, .labels = y, .label_type = FL_LABEL_I64};
  fl_out o = {.loss = out};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
}

static void test_lib_kornia_published_cases(void **state) {
  (void)state;
  float got[2], legacy[2];
  /* test_value_ignore_index (alpha 0.8, gamma 0.5; ignore_index -100 and 255): ignored positions add
   * nothing, and class 0 is weighted 1 - alpha = 0.2, the other classes alpha = 0.8. */
  const int64_t ignores[2] = {-100, 255};
  for (int k = 0; k < 2; k++) {
    const int64_t ig = ignores[k];
    const int64_t y[12] = {0, 2, ig, 1, 0, ig, ig, 1, 0, 2, 0, 1};
    kornia_softmax(FL_PROFILE_KORNIA, y, ig, got);
    assert_true(fabs(got[0] - 1.22998973) <= 1e-5 * 1.22998973);
    assert_true(fabs(got[1] - 2.55783672) <= 1e-5 * 2.55783672);
  }
  /* every position labelled: kornia 0.8.3 against kornia 0.6.12 (alpha 0.8 on every class) */
  const int64_t y[12] = {0, 2, 1, 1, 0, 2, 0, 1, 0, 2, 0, 1};
  kornia_softmax(FL_PROFILE_KORNIA, y, -100, got);
  kornia_softmax(FL_PROFILE_KORNIA_LEGACY, y, -100, legacy);
  assert_true(fabs(got[0] - 2.58985689) <= 1e-5 * 2.58985689);
  assert_true(fabs(got[1] - 2.66974451) <= 1e-5 * 2.66974451);
  assert_true(fabs(legacy[0] - 3.74055676) <= 1e-5 * 3.74055676);
  assert_true(fabs(legacy[1] - 4.36660749) <= 1e-5 * 4.36660749);
  /* position 5 of sample 0 has equal logits (p = 1/3) and label 2; relabelled 0, kornia >= 0.7 weighs
   * it by 0.2 instead of 0.8: the 4x of class-0 positions, exactly (2/3)^0.5 ln 3 (0.8 - 0.2) less */
  int64_t y0[12];
  memcpy(y0, y, sizeof y0);
  y0[5] = 0;
  float moved[2];
  kornia_softmax(FL_PROFILE_KORNIA, y0, -100, moved);
  assert_close(got[0] - moved[0], sqrt(2.0 / 3.0) * log(3.0) * 0.6);
  kornia_softmax(FL_PROFILE_KORNIA_LEGACY, y0, -100, moved);
  assert_close(legacy[0], moved[0]);
  /* kornia 0.8.3's reduction="mean" divides by batch x classes x positions: the batch's mean of mean_elements */
  {
    fl_params p;
    fl_params_init(&p, FL_SOFTMAX_FOCAL);
    p.profile = FL_PROFILE_KORNIA;
    p.alpha = 0.8f;
    p.gamma = 0.5f;
    p.reduction = FL_REDUCE_MEAN_ELEMENTS;
    fl_batch b = {.n = 2, .m = 6, .c = 3, .x = kornia_x, .labels = y, .label_type = FL_LABEL_I64};
    fl_out o = {.loss = got};
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    assert_true(fabs((got[0] + got[1]) / 2 - 0.146100039) <= 1e-5 * 0.146100039);
  }

  /* TestBinaryFocalLossWithLogits (unchanged by 0.7.0, so the same under both profiles) */
  for (int k = 0; k < 2; k++) {
    fl_params p;
    fl_params_init(&p, FL_SIGMOID_FOCAL);
    p.profile = k ? FL_PROFILE_KORNIA_LEGACY : FL_PROFILE_KORNIA;
    /* test_numeric_stability: logits [100, -100], targets [1, 0], alpha .25, gamma 2: both 0 */
    const float xs[2] = {100.0f, -100.0f}, ts[2] = {1.0f, 0.0f};
    float l = loss1(&p, xs, ts, 1, 2);
    assert_true(l >= 0.0f && l < 1e-30f);
    /* kornia 0.6.12's documented example: logits [6.325, 5.26, 87.49], targets [1, 1, 0], mean: 21.8725 */
    const float xd[3] = {6.325f, 5.26f, 87.49f}, td[3] = {1.0f, 1.0f, 0.0f};
    p.reduction = FL_REDUCE_MEAN;
    assert_close(loss1(&p, xd, td, 1, 3), 21.8725000);
    /* test_value_same_as_torch_bce_loss: alpha None, gamma 0 is binary_cross_entropy_with_logits,
     * soft targets included */
    p.reduction = FL_REDUCE_SUM;
    p.alpha = -1.0f;
    p.gamma = 0.0f;
    const float xb[6] = {0.37f, 0.91f, 0.05f, 0.62f, 0.18f, 0.77f}, tb[6] = {0.42f, 0.08f, 0.96f, 0.55f, 0.31f, 0.69f};
    double want = 0.0;
    for (int e = 0; e < 6; e++) want += bce(xb[e], tb[e]);
    assert_close(loss1(&p, xb, tb, 2, 3), want);
  }
}

/* MONAI's own test cases: tests/losses/test_focal_loss.py TEST_CASES at MONAI 1.5.0 (commit d388d1c6f),
 * with to_onehot_y=True. MONAI's input is (1, 3, 2, 2) with every class's map [[1, 1], [0.5, 0]] and
 * labels [[0, 1], [2, 0]]; here (n = 1, m = 4 positions, c = 3). Its reduction="mean" divides by
 * positions x classes: focald's mean_elements. Its expected values have five decimals and its test
 * allows 1e-4 absolute and relative; so does this one. */
static const float monai_x[4 * 3] = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 0.5f, 0.5f, 0.5f, 0.0f, 0.0f, 0.0f};
static const int64_t monai_y[4] = {0, 1, 2, 0};
static const float monai_onehot[4 * 3] = {1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0};

static void assert_monai(double got, double want) {
  if (!(fabs(got - want) <= 1e-4 + 1e-4 * fabs(want))) fail_msg("%.9g, MONAI's test expects %.5f", got, want);
}

static void test_lib_monai_published_cases(void **state) {
  (void)state;
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.profile = FL_PROFILE_MONAI;
  p.alpha = -1.0f; /* MONAI's alpha defaults to None */
  p.reduction = FL_REDUCE_MEAN_ELEMENTS;
  assert_monai(loss1(&p, monai_x, monai_onehot, 4, 3), 0.34959);
  p.alpha = 0.8f;
  assert_monai(loss1(&p, monai_x, monai_onehot, 4, 3), 0.08423);
  /* include_background=False: MONAI drops channel 0 of input and target before the loss */
  float xb[4 * 2], tb[4 * 2];
  for (int j = 0; j < 4; j++)
    for (int k = 0; k < 2; k++) {
      xb[j * 2 + k] = monai_x[j * 3 + k + 1];
      tb[j * 2 + k] = monai_onehot[j * 3 + k + 1];
    }
  p.alpha = -1.0f;
  assert_monai(loss1(&p, xb, tb, 4, 2), 0.36498);
  /* focald's mean divides the sigmoid family by the elements too; the softmax family by positions */
  p.reduction = FL_REDUCE_MEAN;
  assert_monai(loss1(&p, monai_x, monai_onehot, 4, 3), 0.34959);

  /* reduction="none", without and with weight=[0.5, 0.1, 0.2]: one element per sample, (class, position) order there */
  static const double none[3][4] = {{0.02266, 0.70187, 0.37741, 0.17329},
                                    {0.70187, 0.02266, 0.37741, 0.17329},
                                    {0.70187, 0.70187, 0.06757, 0.17329}};
  static const double weighted[3][4] = {{0.01133, 0.35093, 0.18871, 0.08664},
                                        {0.07019, 0.00227, 0.03774, 0.01733},
                                        {0.14037, 0.14037, 0.01352, 0.03466}};
  const float cw[3] = {0.5f, 0.1f, 0.2f};
  float w[12], out[12];
  for (int e = 0; e < 12; e++) w[e] = cw[e % 3];
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.profile = FL_PROFILE_MONAI;
  p.alpha = -1.0f;
  fl_batch b = {.n = 12, .m = 1, .c = 1, .x = monai_x, .targets = monai_onehot};
  fl_out o = {.loss = out};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  for (int e = 0; e < 12; e++) assert_monai(out[e], none[e % 3][e / 3]);
  b.weights = w;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  for (int e = 0; e < 12; e++) assert_monai(out[e], weighted[e % 3][e / 3]);

  /* use_softmax=True, without and with alpha 0.8 (class 0 gets 0.2) */
  float got;
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  p.profile = FL_PROFILE_MONAI;
  p.reduction = FL_REDUCE_MEAN_ELEMENTS;
  fl_batch bs = {.n = 1, .m = 4, .c = 3, .x = monai_x, .labels = monai_y, .label_type = FL_LABEL_I64};
  o.loss = &got;
  assert_int_equal(fl_eval(&o, &bs, &p, NULL), 0);
  assert_monai(got, 0.16276);
  p.alpha = 0.8f;
  assert_int_equal(fl_eval(&o, &bs, &p, NULL), 0);
  assert_monai(got, 0.08138);
  /* every class's logit equal: p = 1/3, so the mean is (2/3)^2 ln 3 over the three classes */
  p.alpha = -1.0f;
  assert_int_equal(fl_eval(&o, &bs, &p, NULL), 0);
  assert_close(got, 4.0 / 9.0 * log(3.0) / 3.0);
}

/* pos_weight against its two definitions: torch's BCEWithLogitsLoss(pos_weight=[2, 0.5, 10],
 * reduction="none").sum(-1) (binary_cross_entropy, and sigmoid_focal at gamma 0 with alpha off), and kornia's
 * binary_focal_loss_with_logits(alpha=0.25, gamma=2, pos_weight=...) as kornia v0.8.3 writes it (the
 * positive term times pos_weight; its classes on dim 1, here the last), summed per sample; the kornia
 * profile, and for hard targets the torchvision profile too. The expected values are torch's, float64;
 * tests/reference/focal_ref.py (check_pos_weight) holds its formulas to the same numbers and to autograd. */
static void test_lib_pos_weight_matches_torch_and_kornia(void **state) {
  (void)state;
  static const float x[6] = {-2.0f, 0.5f, 3.0f, 1.0f, -0.25f, 0.0f};
  static const float hard[6] = {1, 0, 1, 0, 1, 1}, soft[6] = {0.75f, 0, 1, 0.25f, 0.5f, 1};
  static const float pw[3] = {2.0f, 0.5f, 10.0f};
  static const double bce_hard[2] = {5.71380652, 8.6577032}, bce_soft[2] = {4.68207452, 8.56750348};
  static const double kornia_hard[2] = {1.108371, 0.992247202}, kornia_soft[2] = {0.902449394, 0.888565218};
  float out[2], grad[6], g0[6];
  fl_batch b = {.n = 2, .m = 1, .c = 3, .x = x, .targets = hard};
  fl_out o = {.loss = out, .grad = grad};
  for (int soft_t = 0; soft_t < 2; soft_t++) {
    b.targets = soft_t ? soft : hard;
    const double *want = soft_t ? bce_soft : bce_hard;
    fl_params p;
    fl_params_init(&p, FL_BINARY_CROSS_ENTROPY);
    p.pos_weight = pw;
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    assert_close(out[0], want[0]);
    assert_close(out[1], want[1]);
    memcpy(g0, grad, sizeof g0);
    fl_params_init(&p, FL_SIGMOID_FOCAL);
    p.gamma = 0.0f;
    p.alpha = -1.0f;
    p.pos_weight = pw;
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    assert_close(out[0], want[0]);
    assert_close(out[1], want[1]);
    /* d/dz of pos_weight t softplus(-z) + (1 - t) softplus(z): (1 - t) s - pos_weight t (1 - s) */
    for (int e = 0; e < 6; e++) {
      const double s = 1.0 / (1.0 + exp(-(double)x[e])), t = b.targets[e];
      assert_close(grad[e], (1.0 - t) * s - pw[e % 3] * t * (1.0 - s));
      assert_true(grad[e] == g0[e]);
    }
    const double *kw = soft_t ? kornia_soft : kornia_hard;
    fl_params_init(&p, FL_SIGMOID_FOCAL);
    p.profile = FL_PROFILE_KORNIA;
    p.pos_weight = pw;
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    assert_close(out[0], kw[0]);
    assert_close(out[1], kw[1]);
    if (!soft_t) {
      p.profile = FL_PROFILE_TORCHVISION;
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      assert_close(out[0], kw[0]);
      assert_close(out[1], kw[1]);
    }
  }
  /* pos_weight 1 everywhere is no pos_weight, bit for bit; 0 removes the positive term */
  static const float ones[3] = {1, 1, 1}, zeros[3] = {0, 0, 0};
  float plain[2];
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  b.targets = soft;
  fl_out op = {.loss = plain};
  assert_int_equal(fl_eval(&op, &b, &p, NULL), 0);
  p.pos_weight = ones;
  o.grad = NULL;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(out[0], plain[0]);
  assert_close(out[1], plain[1]);
  p.pos_weight = zeros;
  b.targets = hard;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  double want = 0.0;
  for (int e = 0; e < 3; e++) {
    const double s = 1.0 / (1.0 + exp(-(double)x[e]));
    if (!hard[e]) want += 0.75 * s * s * bce(x[e], 0.0);
  }
  assert_close(out[0], want);
}

static void test_lib_conventions_keras_doc_example(void **state) {
  (void)state;
  /* Keras BinaryFocalCrossentropy's documented example: mean over the last axis. */
  const float z[4] = {-18.6f, 0.51f, 2.94f, -12.8f}, y[4] = {0, 1, 0, 0};
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.profile = FL_PROFILE_KERAS;
  p.reduction = FL_REDUCE_MEAN;
  p.alpha = -1.0f;
  assert_true(fabs(loss1(&p, z, y, 1, 4) - 0.691) < 5e-4);
  p.alpha = 0.25f; /* apply_class_balancing=True */
  assert_true(fabs(loss1(&p, z, y, 1, 4) - 0.51) < 5e-3);
}

static void test_lib_conventions_softmax_and_scores(void **state) {
  (void)state;
  fl_params p;
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  const float z[3] = {1, 2, 3};
  int32_t y = 2;
  float loss;
  fl_batch b = {.n = 1, .m = 1, .c = 3, .x = z, .labels = &y, .label_type = FL_LABEL_I32};
  fl_out o = {.loss = &loss};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(loss, 0.04567780);
  /* scores of probabilities [.2, .7, .1] with label 0 */
  const float pr[3] = {0.2f, 0.7f, 0.1f};
  y = 0;
  fl_score s;
  p.input = FL_INPUT_PROBS;
  b.x = pr;
  o.scores = &s;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(s.p_t, 0.2);
  assert_close(s.norm_margin, 0.25);
  assert_close(s.entropy, 0.72984670);
  assert_close(s.el2n, 1.06770783);
  assert_int_equal(s.pred, 1);
  assert_true(s.correct == 0.0f);
  assert_int_equal(s.rows, 1);
}

/* ---------------------------------------------------------------- properties */

static void test_lib_gamma0_is_cross_entropy(void **state) {
  (void)state;
  enum { M = 7, C = 9 };
  float x[M * C], t[M * C];
  for (int i = 0; i < M * C; i++) {
    x[i] = frand(-30, 30);
    t[i] = i % 3 == 0 ? frand(0, 1) : (float)(i % 2);
  }
  x[0] = 0.0f;
  x[1] = 1e4f;
  x[2] = -1e4f;
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.gamma = 0.0f;
  p.alpha = -1.0f;
  double want = 0;
  for (int i = 0; i < M * C; i++) want += bce(x[i], t[i]);
  assert_close(loss1(&p, x, t, M, C), want);
  /* softmax: categorical cross-entropy, -log softmax(z)_y, per row */
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  p.gamma = 0.0f;
  int32_t y[M];
  want = 0;
  for (int r = 0; r < M; r++) {
    y[r] = r % C;
    double mx = -INFINITY, s = 0;
    for (int k = 0; k < C; k++) mx = fmax(mx, x[r * C + k]);
    for (int k = 0; k < C; k++) s += exp(x[r * C + k] - mx);
    want += -(x[r * C + y[r]] - mx - log(s));
  }
  float got;
  fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32};
  fl_out o = {.loss = &got};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(got, want);
}

/* Evaluates b under p with every output asked for; returns fl_eval's code. */
static int eval_all(const fl_params *p, const fl_batch *b, float *loss, float *grad, float *gn, fl_score *sc) {
  fl_out o = {.loss = loss, .grad = grad, .grad_norm = gn, .scores = sc};
  return fl_eval(&o, b, p, NULL);
}

/* cross_entropy and binary_cross_entropy are the focal losses at gamma 0, bit for bit, in every
 * traversal (labels, soft rows, weights, probabilities, each reduction), and they are torch's. */
static void test_lib_cross_entropy_losses(void **state) {
  (void)state;
  enum { N = 3, M = 5, C = 17 };
  static float x[N * M * C], px[N * M * C], t[N * M * C], w[N * M * C];
  int64_t y[N * M];
  for (int i = 0; i < N * M * C; i++) {
    x[i] = frand(-20, 20);
    px[i] = frand(0, 1);
    t[i] = i % 4 == 0 ? frand(0, 1) : (float)(i % 3 == 0);
    w[i] = frand(0, 2);
  }
  for (int r = 0; r < N * M; r++) y[r] = r % 4 == 3 ? -1 : (r * 5) % C;
  float alpha_c[C];
  for (int k = 0; k < C; k++) alpha_c[k] = frand(0, 1);
  const fl_loss pairs[2][2] = {{FL_CROSS_ENTROPY, FL_SOFTMAX_FOCAL}, {FL_BINARY_CROSS_ENTROPY, FL_SIGMOID_FOCAL}};
  for (int pi = 0; pi < 2; pi++) {
    for (int variant = 0; variant < 2 * 2 * 2 * 2 * FL_REDUCTION_COUNT; variant++) {
      const int soft = variant & 1, weighted = (variant >> 1) & 1, probs = (variant >> 2) & 1,
                alpha = (variant >> 3) & 1, red = variant >> 4;
      fl_params ce, focal;
      fl_params_init(&ce, pairs[pi][0]);
      fl_params_init(&focal, pairs[pi][1]);
      assert_true(ce.gamma == 0.0f && ce.alpha < 0.0f);
      focal.gamma = 0.0f;
      focal.alpha = -1.0f;
      ce.reduction = focal.reduction = (fl_reduction)red;
      ce.input = focal.input = probs ? FL_INPUT_PROBS : FL_INPUT_LOGITS;
      if (alpha) ce.alpha_c = focal.alpha_c = alpha_c;
      /* softmax probability rows need not sum to 1 here: both take them as given */
      fl_batch b = {.n = N, .m = M, .c = C, .x = probs ? px : x, .label_type = FL_LABEL_I64};
      if (soft) b.targets = t;
      else b.labels = y;
      if (weighted) b.weights = w;
      float l1[N], l2[N], g1[N * M * C], g2[N * M * C], n1[N], n2[N];
      fl_score s1[N], s2[N];
      assert_int_equal(eval_all(&ce, &b, l1, g1, n1, s1), 0);
      assert_int_equal(eval_all(&focal, &b, l2, g2, n2, s2), 0);
      assert_memory_equal(l1, l2, sizeof l1);
      assert_memory_equal(g1, g2, sizeof g1);
      assert_memory_equal(n1, n2, sizeof n1);
      assert_memory_equal(s1, s2, sizeof s1);
    }
  }

  /* torch.nn.functional (torch 1.13, float64) on these float32 inputs */
  const float z[3 * 4] = {1.5f, -0.25f, 3.0f, 0.75f, -2.0f, 0.5f, 0.125f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  const int64_t yz[3] = {2, 0, 3}, yi[3] = {2, -100, 3};
  const float wz[4] = {0.1f, 0.2f, 0.3f, 0.4f};
  const float tz[3 * 4] = {0.1f, 0.2f, 0.6f, 0.1f, 0.5f, 0.0f, 0.25f, 0.25f, 0.0f, 0.0f, 0.0f, 1.0f};
  fl_params p;
  float got;
  fl_out o = {.loss = &got};
  fl_params_init(&p, FL_CROSS_ENTROPY);
  fl_batch b = {.n = 1, .m = 3, .c = 4, .x = z, .labels = yz, .label_type = FL_LABEL_I64};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(got, 7.75118694); /* cross_entropy(z, y, reduction="sum") */
  p.alpha_c = wz;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(got, 1.25357515); /* cross_entropy(z, y, weight=w, reduction="sum") */
  fl_params_init(&p, FL_CROSS_ENTROPY);
  p.ignore_index = -100;
  p.reduction = FL_REDUCE_MEAN;
  b.labels = yi;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(got, 0.84956749); /* cross_entropy(z, [2, -100, 3]): the mean over rows not ignored */
  fl_params_init(&p, FL_CROSS_ENTROPY);
  b.labels = NULL;
  b.targets = tz;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(got, 6.74493696); /* cross_entropy with probability targets, reduction="sum" */

  const float xb[6] = {0.37f, -2.5f, 0.0f, 6.0f, -14.0f, 1.25f}, tb[6] = {0.42f, 0.0f, 1.0f, 0.55f, 1.0f, 0.0f};
  const float wb[6] = {1.0f, 2.0f, 0.5f, 0.0f, 3.0f, 1.5f};
  const float pb[6] = {0.0f, 0.25f, 1.0f, 0.5f, 1e-30f, 0.9f}, tp[6] = {1.0f, 0.0f, 0.0f, 0.3f, 0.0f, 1.0f};
  fl_params_init(&p, FL_BINARY_CROSS_ENTROPY);
  assert_close(loss1(&p, xb, tb, 2, 3), 19.7162054); /* binary_cross_entropy_with_logits, "sum" */
  p.reduction = FL_REDUCE_MEAN;
  assert_close(loss1(&p, xb, tb, 2, 3), 3.28603423); /* "mean" */
  fl_params_init(&p, FL_BINARY_CROSS_ENTROPY);
  fl_batch bw = {.n = 1, .m = 2, .c = 3, .x = xb, .targets = tb, .weights = wb};
  assert_int_equal(fl_eval(&o, &bw, &p, NULL), 0);
  assert_close(got, 45.4970121); /* weight=w, "sum" */
  p.input = FL_INPUT_PROBS;
  assert_close(loss1(&p, pb, tp, 2, 3), 201.08619); /* binary_cross_entropy on probabilities: logs clamped at -100 */

  /* gamma is 0 and the profile torchvision; alpha may be set */
  for (int pi = 0; pi < 2; pi++) {
    fl_params_init(&p, pairs[pi][0]);
    p.gamma = 2.0f;
    assert_int_equal(fl_params_check(&p, 4, NULL), FL_EGAMMA);
    p.gamma = 0.0f;
    p.alpha = 0.25f;
    assert_int_equal(fl_params_check(&p, 4, NULL), 0);
    for (int prof = 1; prof < FL_PROFILE_COUNT; prof++) {
      p.profile = (fl_profile)prof;
      assert_int_equal(fl_params_check(&p, 4, NULL), FL_EUNSUPPORTED);
    }
  }
  assert_true(fl_loss_is_softmax(FL_CROSS_ENTROPY) && !fl_loss_is_softmax(FL_BINARY_CROSS_ENTROPY));
}

static void test_lib_alpha_off_is_unweighted(void **state) {
  (void)state;
  /* alpha = 0.5 weighs both parts by 0.5: twice it is the unweighted loss */
  enum { N = 40 };
  float x[N], t[N];
  for (int i = 0; i < N; i++) {
    x[i] = frand(-12, 12);
    t[i] = frand(0, 1);
  }
  const fl_loss losses[] = {FL_SIGMOID_FOCAL, FL_POLY1_SIGMOID_FOCAL, FL_SIGMOID_FOCAL_STAR, FL_ASL};
  for (size_t i = 0; i < sizeof losses / sizeof losses[0]; i++) {
    fl_params p;
    fl_params_init(&p, losses[i]);
    if (losses[i] == FL_POLY1_SIGMOID_FOCAL) p.epsilon = 0.0f;
    p.alpha = -1.0f;
    double off = loss1(&p, x, t, 1, N);
    p.alpha = 0.5f;
    double half = loss1(&p, x, t, 1, N);
    assert_close(2.0 * half, off);
  }
}

static void test_lib_alpha_vector_equal_to_scalar(void **state) {
  (void)state;
  enum { M = 5, C = 21 };
  float x[M * C];
  int64_t y[M];
  float av[C];
  for (int i = 0; i < M * C; i++) x[i] = frand(-8, 8);
  for (int r = 0; r < M; r++) y[r] = (r * 7) % (C + 1);
  for (int k = 0; k < C; k++) av[k] = 0.3f;
  const fl_loss losses[] = {FL_SIGMOID_FOCAL, FL_SOFTMAX_FOCAL};
  for (size_t i = 0; i < 2; i++) {
    fl_params p;
    fl_params_init(&p, losses[i]);
    if (losses[i] == FL_SOFTMAX_FOCAL)
      for (int r = 0; r < M; r++) y[r] %= C;
    p.alpha = 0.3f;
    float a, bv;
    fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I64};
    fl_out o = {.loss = &a};
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    p.alpha_c = av;
    o.loss = &bv;
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    assert_close(bv, a);
  }
}

/* Central differences in the library's own float loss, compared with its analytic gradient. */
static void check_gradient(const fl_params *p, const float *x0, const void *labels, const float *t, int64_t m,
                           int64_t c) {
  const int64_t nel = m * c;
  float *x = malloc((size_t)nel * sizeof *x);
  float *g = malloc((size_t)nel * sizeof *g);
  memcpy(x, x0, (size_t)nel * sizeof *x);
  float l0, gn;
  fl_batch b = {.n = 1, .m = m, .c = c, .x = x, .labels = labels, .label_type = FL_LABEL_I32, .targets = labels ? NULL : t};
  fl_out o = {.loss = &l0, .grad = g, .grad_norm = &gn};
  assert_int_equal(fl_eval(&o, &b, p, NULL), 0);
  double n2 = 0;
  for (int64_t e = 0; e < nel; e++) n2 += (double)g[e] * g[e];
  assert_close(gn, sqrt(n2));
  fl_out lo = {.loss = &l0};
  for (int64_t e = 0; e < nel; e++) {
    const float h = 1e-2f;
    float xp, xm;
    x[e] = x0[e] + h;
    xp = x[e];
    assert_int_equal(fl_eval(&lo, &b, p, NULL), 0);
    double up = l0;
    x[e] = x0[e] - h;
    xm = x[e];
    assert_int_equal(fl_eval(&lo, &b, p, NULL), 0);
    double down = l0;
    x[e] = x0[e];
    double fd = (up - down) / ((double)xp - (double)xm);
    /* second-order error of the difference plus float noise in the loss */
    if (fabs(fd - g[e]) > 2e-3 * fmax(1.0, fabs(fd)) + 1e-4)
      fail_msg("%s/%s element %lld: analytic %.7g, finite difference %.7g", fl_loss_name(p->loss),
               fl_profile_name(p->profile), (long long)e, g[e], fd);
  }
  free(x);
  free(g);
}

static void test_lib_gradient_matches_finite_differences(void **state) {
  (void)state;
  enum { M = 3, C = 18 };
  float x[M * C], t[M * C];
  int32_t y[M] = {4, 17, 0};
  for (int i = 0; i < M * C; i++) {
    x[i] = frand(-4, 4);
    t[i] = frand(0, 1);
  }
  const float gammas[] = {0.0f, 0.5f, 2.0f, 3.5f};
  for (size_t gi = 0; gi < 4; gi++) {
    for (int prof = 0; prof < FL_PROFILE_COUNT; prof++) {
      fl_params p;
      fl_params_init(&p, FL_SIGMOID_FOCAL);
      p.profile = (fl_profile)prof;
      p.gamma = gammas[gi];
      check_gradient(&p, x, NULL, t, M, C);
      check_gradient(&p, x, y, NULL, M, C);
      fl_params_init(&p, FL_SOFTMAX_FOCAL);
      p.profile = (fl_profile)prof;
      p.gamma = gammas[gi];
      p.alpha = 0.25f;
      check_gradient(&p, x, y, NULL, M, C);
    }
    fl_loss others[] = {FL_SIGMOID_FOCAL_STAR, FL_POLY1_SIGMOID_FOCAL, FL_POLY1_SOFTMAX_FOCAL, FL_ASL};
    for (size_t i = 0; i < 4; i++) {
      fl_params p;
      fl_params_init(&p, others[i]);
      p.gamma = gammas[gi] > 0 ? gammas[gi] : 1.0f;
      p.gamma_pos = gammas[gi];
      p.gamma_neg = gammas[gi] + 1.0f;
      p.clip = 0.0f; /* the clip's kink has no derivative */
      check_gradient(&p, x, y, NULL, M, C);
    }
  }
  /* the gradient also holds through a reduction */
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.reduction = FL_REDUCE_MEAN;
  check_gradient(&p, x, NULL, t, M, C);
  p.reduction = FL_REDUCE_POSITIVES;
  check_gradient(&p, x, y, NULL, M, C);
}

/* A sample's mean loss within float's range is reported as it is, however large the element losses it
 * averages: half the positions of each sample have every class's loss at about 3e38 (a logit of 3e38 on
 * the wrong side), whose sum passes float's range many times over where their mean (1.5e38) does not.
 * Each path of the sigmoid kernel: samples of one position (c = 2), two classes (with the gradient and
 * without: pairs of classes have their own loop then), a few, more classes than lanes, dense targets;
 * binary cross-entropy and sigmoid focal; each instruction-set variant the CPU has. With weights of 2 on
 * the large elements, each element's weighted loss is a float (FLT_MAX) and the mean is of those; the sum
 * reduction saturates at FLT_MAX. The loss is held to a double reference (once FLT_MAX for every mean:
 * losses were summed in float lanes alone), the gradient too (scaled by the mean's 1 / (m c) once). */
static void test_lib_sigmoid_mean_of_large_losses(void **state) {
  (void)state;
  static const char *const variants[] = {"generic", "x86-64-v3", "x86-64-v4"};
  static const struct {
    int64_t n, m, c;
    int dense;
  } shapes[] = {{8, 1, 2, 0}, {2, 64, 2, 0}, {2, 64, 3, 0}, {2, 8, 40, 0}, {2, 64, 3, 1}};
  const fl_loss losses[] = {FL_BINARY_CROSS_ENTROPY, FL_SIGMOID_FOCAL};
  for (size_t vi = 0; vi < 3; vi++) {
    if (fl_isa_force(variants[vi]) != 0) continue;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
      for (int mode = 0; mode < 2 * 2 * 2 * 2; mode++) {
        const int focal = mode & 1, with_grad = mode >> 1 & 1, weighted = mode >> 2 & 1, sum = mode >> 3 & 1;
        const int64_t n = shapes[si].n, m = shapes[si].m, c = shapes[si].c, nel = n * m * c;
        float *x = malloc((size_t)nel * sizeof *x), *t = malloc((size_t)nel * sizeof *t);
        float *g = malloc((size_t)nel * sizeof *g), *w = malloc((size_t)nel * sizeof *w), loss[8];
        int32_t *y = malloc((size_t)(n * m) * sizeof *y);
        for (int64_t r = 0; r < n * m; r++) {
          y[r] = (int32_t)(r % c);
          /* every other position (every other sample when m is 1) has all its classes wrong by 3e38 */
          const int big = (m == 1 ? r : r % m) % 2 == 0;
          for (int64_t k = 0; k < c; k++) {
            const int pos = k == y[r];
            t[r * c + k] = pos ? 1.0f : 0.0f;
            x[r * c + k] = big ? (pos ? -3e38f : 3e38f) : (pos ? 30.0f : -30.0f);
            w[r * c + k] = big ? 2.0f : 1.0f;
          }
        }
        fl_params p;
        fl_params_init(&p, losses[focal]);
        p.reduction = sum ? FL_REDUCE_SUM : FL_REDUCE_MEAN;
        fl_batch b = {.n = n, .m = m, .c = c, .x = x, .labels = shapes[si].dense ? NULL : y,
                      .label_type = FL_LABEL_I32, .targets = shapes[si].dense ? t : NULL, .weights = weighted ? w : NULL};
        fl_out o = {.loss = loss, .grad = with_grad ? g : NULL};
        assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
        const double scale = sum ? 1.0 : 1.0 / (double)(m * c);
        if (with_grad && !focal)
          for (int64_t e = 0; e < nel; e++) {
            const double we = weighted ? w[e] : 1.0;
            const double want_g = (1.0 / (1.0 + exp(-(double)x[e])) - t[e]) * we * scale;
            if (fabs(g[e] - want_g) > 1e-6 * fabs(want_g) + 1e-9 * scale)
              fail_msg("%s n %lld m %lld c %lld: grad[%lld] = %.9g, want %.9g", variants[vi], (long long)n, (long long)m,
                       (long long)c, (long long)e, g[e], want_g);
          }
        for (int64_t i = 0; i < n; i++) {
          double total = 0.0;
          for (int64_t e = i * m * c; e < (i + 1) * m * c; e++) {
            /* BCE of logit z against target t is softplus(-z) for t = 1, softplus(z) for t = 0 */
            const double u = t[e] > 0.5f ? -(double)x[e] : (double)x[e];
            const double ce = u > 0 ? u + log1p(exp(-u)) : log1p(exp(u));
            const double q = 1.0 / (1.0 + exp(-u)); /* 1 - p_t */
            const double l = focal ? (t[e] > 0.5f ? p.alpha : 1.0 - p.alpha) * q * q * ce : ce;
            total += fmin(l * (weighted ? w[e] : 1.0), FLT_MAX);
          }
          const double want = fmin(total * scale, FLT_MAX);
          if (fabs(loss[i] - want) > 1e-6 * want)
            fail_msg("%s %s%s%s%s n %lld m %lld c %lld%s: sample %lld's loss %.9g, want %.9g", variants[vi],
                     fl_loss_name(p.loss), with_grad ? " grad" : "", weighted ? " weighted" : "", sum ? " sum" : "",
                     (long long)n, (long long)m, (long long)c, shapes[si].dense ? " targets" : "", (long long)i, loss[i],
                     want);
        }
        free(x);
        free(t);
        free(g);
        free(w);
        free(y);
      }
  }
  assert_int_equal(fl_isa_force(NULL), 0);
}

/* The softmax family's loss of a position is a float too (FLT_MAX past float's range, weighted or not);
 * a sample's mean of such positions is computed in full. Soft targets [1, 1, 0] against logits
 * [-1e38, -1e38, 1e38] make a position's loss 4e38 (saturated: FLT_MAX); the other 63 positions are small. */
static void test_lib_softmax_mean_of_large_losses(void **state) {
  (void)state;
  enum { M = 64, C = 3 };
  static float x[M * C], t[M * C], w[M * C];
  for (int r = 0; r < M; r++)
    for (int k = 0; k < C; k++) {
      const int big = r == 0;
      x[r * C + k] = big ? (k == 2 ? 1e38f : -1e38f) : (k == 0 ? 30.0f : -30.0f);
      t[r * C + k] = big ? (k < 2 ? 1.0f : 0.0f) : (k == 0 ? 1.0f : 0.0f);
      w[r * C + k] = 2.0f;
    }
  for (int weighted = 0; weighted < 2; weighted++) {
    fl_params p;
    fl_params_init(&p, FL_CROSS_ENTROPY);
    p.reduction = FL_REDUCE_MEAN;
    float loss;
    fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .targets = t, .weights = weighted ? w : NULL};
    fl_out o = {.loss = &loss};
    assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    /* the small positions: -log softmax(30, -30, -30)[0] = log(1 + 2 e^-60) */
    const double small = log1p(2.0 * exp(-60.0)) * (weighted ? 2.0 : 1.0);
    const double want = ((double)FLT_MAX + (M - 1) * small) / M;
    if (fabs(loss - want) > 1e-6 * want) fail_msg("weighted %d: loss %.9g, want %.9g", weighted, loss, want);
  }
}

/* Poly-1 softmax where the label's class has alpha 0: the loss is epsilon (1 - p_y)^(gamma + 1) alone, and
 * d loss / d z_k = epsilon (gamma + 1) (1 - p_y)^gamma p_y (p_k - [k == y]), which is p_y small where p_y
 * is. Each entry is held to that formula in double to a relative 1e-4, down to p_y of 1e-12, for index
 * labels and for one-hot targets (once within 17%: p_y was taken as 1 - (1 - p_y) in float). */
static void test_lib_poly1_softmax_gradient_with_alpha_zero(void **state) {
  (void)state;
  enum { C = 4 };
  const float alpha_c[C] = {0.0f, 0.5f, 0.25f, 0.75f};
  const double pys[] = {0.3, 1e-3, 1e-5, 1e-6, 1e-7, 1e-9, 1e-12};
  const float gammas[] = {0.0f, 2.0f};
  for (size_t gi = 0; gi < 2; gi++)
    for (size_t pi = 0; pi < sizeof pys / sizeof pys[0]; pi++)
      for (int dense = 0; dense < 2; dense++) {
        /* z = (log p_y - log(1 - p_y) + log 3, 0, 0, 0) makes p_0 = p_y */
        float x[C] = {(float)(log(pys[pi]) - log1p(-pys[pi]) + log(3.0)), 0.0f, 0.0f, 0.0f};
        const int32_t y = 0;
        const float t[C] = {1.0f, 0.0f, 0.0f, 0.0f};
        fl_params p;
        fl_params_init(&p, FL_POLY1_SOFTMAX_FOCAL);
        p.gamma = gammas[gi];
        p.epsilon = 1.0f;
        p.alpha_c = alpha_c;
        float loss, g[C];
        fl_batch b = {.n = 1, .m = 1, .c = C, .x = x, .labels = dense ? NULL : &y, .label_type = FL_LABEL_I32,
                      .targets = dense ? t : NULL};
        fl_out o = {.loss = &loss, .grad = g};
        assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
        double e[C], sum = 0.0;
        for (int k = 0; k < C; k++) sum += e[k] = exp((double)x[k]);
        const double py = e[0] / sum, gd = (double)p.gamma;
        const double coef = (gd + 1.0) * pow(1.0 - py, gd) * py;
        for (int k = 0; k < C; k++) {
          const double want = coef * (e[k] / sum - (k == 0));
          if (fabs(g[k] - want) > 1e-4 * fabs(want))
            fail_msg("gamma %g p_y %g %s: grad[%d] = %.9g, want %.9g", gd, py, dense ? "targets" : "labels", k, g[k],
                     want);
        }
      }
}

/* No NaN or Inf for any finite input and gamma in [0, 10], saturated logits included. */
static void test_lib_finite_everywhere(void **state) {
  (void)state;
  const float zs[] = {0.0f, 1e-6f, -1e-6f, 0.5f, -0.5f, 15.0f, -15.0f, 30.0f, -30.0f, 87.0f, -87.0f,
                      88.7f, -88.7f, 100.0f, -100.0f, 1e4f, -1e4f, 3.4e38f, -3.4e38f};
  const float ts[] = {0.0f, 1.0f, 0.3f, 1e-30f};
  const float gammas[] = {0.0f, 1e-3f, 0.1f, 0.5f, 0.99f, 1.0f, 2.0f, 2.5f, 7.0f, 10.0f};
  enum { NZ = sizeof zs / sizeof zs[0], NT = 4, C = 3 };
  /* every (z, t) pair as an element; softmax rows of three from the same z values */
  float x[NZ * NT * C], t[NZ * NT * C];
  int32_t y[NZ * NT];
  for (int i = 0; i < NZ * NT * C; i++) {
    x[i] = zs[(i / C) % NZ];
    if (i % C == 1) x[i] = zs[(i / C + 3) % NZ];
    t[i] = ts[(i / C / NZ) % NT];
  }
  for (int r = 0; r < NZ * NT; r++) y[r] = r % C;
  float loss[NZ * NT], grad[NZ * NT * C], gn[NZ * NT];
  fl_score sc[NZ * NT];
  for (int li = 0; li < FL_LOSS_COUNT; li++) {
    for (int prof = 0; prof < FL_PROFILE_COUNT; prof++) {
      for (size_t gi = 0; gi < sizeof gammas / sizeof gammas[0]; gi++) {
        for (int target_kind = 0; target_kind < 2; target_kind++) {
          fl_params p;
          fl_params_init(&p, (fl_loss)li);
          p.profile = (fl_profile)prof;
          p.gamma = gammas[gi];
          p.gamma_pos = gammas[gi];
          p.gamma_neg = gammas[gi];
          if (fl_params_check(&p, C, NULL) != 0) continue; /* a combination no profile defines */
          fl_batch b = {.n = NZ * NT, .m = 1, .c = C, .x = x, .label_type = FL_LABEL_I32};
          if (target_kind) b.targets = t;
          else b.labels = y;
          fl_out o = {.loss = loss, .grad = grad, .grad_norm = gn, .scores = sc};
          int rc = fl_eval(&o, &b, &p, NULL);
          if (rc) fail_msg("%s/%s gamma %g: %s", fl_loss_name(p.loss), fl_profile_name(p.profile), p.gamma, fl_errname(rc));
          for (int i = 0; i < NZ * NT; i++) {
            float v[] = {loss[i], gn[i], sc[i].p_t, sc[i].margin, sc[i].norm_margin, sc[i].entropy, sc[i].cw_entropy, sc[i].el2n};
            for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
              if (!isfinite(v[k]))
                fail_msg("%s/%s gamma %g targets %d: sample %d value %zu is %g", fl_loss_name(p.loss),
                         fl_profile_name(p.profile), p.gamma, target_kind, i, k, v[k]);
          }
          for (int e = 0; e < NZ * NT * C; e++)
            if (!isfinite(grad[e]))
              fail_msg("%s/%s gamma %g: grad[%d] = %g (x %g)", fl_loss_name(p.loss), fl_profile_name(p.profile), p.gamma, e,
                       grad[e], x[e]);
        }
      }
    }
  }
}

/* Large weights: each gradient entry is the unweighted derivative times the weight, and grad_norm the L2
 * norm of exactly those entries, for every loss and every traversal (sigmoid: dense targets, index labels
 * with c = 3 planar and c = 20 along rows, m = 1 and m = 6; softmax: c = 3 planar, c = 20 along rows, soft
 * rows). Weights of 1e20 and 1e30 make entries whose squares pass float's range (1.8e19 squared); the norm
 * is still finite and its squares are summed in double. A weight of FLT_MAX makes products past float's
 * range: the entries saturate at +-FLT_MAX, never infinity. */
static void test_lib_grad_norm_large_weights(void **state) {
  (void)state;
  enum { N = 2, M = 6, CMAX = 20 };
  static const int64_t cs[] = {3, 20};
  static const int64_t ms[] = {1, M};
  static const float ws[] = {1e20f, 1e30f, 3.4028235e38f};
  float x[N * M * CMAX], t[N * M * CMAX], w[N * M * CMAX];
  int32_t y[N * M];
  float loss[N], grad[N * M * CMAX], gn[N];
  for (int i = 0; i < N * M * CMAX; i++) {
    x[i] = frand(-6, 6);
    t[i] = (i % 7 == 0) ? 1.0f : (i % 5 == 0 ? frand(0, 1) : 0.0f);
  }
  for (int r = 0; r < N * M; r++) y[r] = r % 3;
  for (int li = 0; li < FL_LOSS_COUNT; li++) {
    fl_params p;
    fl_params_init(&p, (fl_loss)li);
    const int softmax = fl_loss_is_softmax(p.loss);
    for (size_t ci = 0; ci < sizeof cs / sizeof cs[0]; ci++) {
      for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
        for (int target_kind = 0; target_kind < 2; target_kind++) {
          for (size_t wi = 0; wi < sizeof ws / sizeof ws[0]; wi++) {
            const int64_t c = cs[ci], m = ms[mi];
            const int64_t wlen = softmax ? N * m : N * m * c;
            for (int64_t e = 0; e < wlen; e++) w[e] = ws[wi] * (e % 3 == 1 ? 0.5f : 1.0f);
            fl_batch b = {.n = N, .m = m, .c = c, .x = x, .weights = w, .label_type = FL_LABEL_I32};
            if (target_kind) b.targets = t;
            else b.labels = y;
            fl_out o = {.loss = loss, .grad = grad, .grad_norm = gn};
            int rc = fl_eval(&o, &b, &p, NULL);
            if (rc) fail_msg("%s: %s", fl_loss_name(p.loss), fl_errname(rc));
            for (int64_t i = 0; i < N; i++) {
              double sq = 0.0;
              for (int64_t e = i * m * c; e < (i + 1) * m * c; e++) {
                if (!isfinite(grad[e]))
                  fail_msg("%s c %lld m %lld targets %d weight %g: grad[%lld] = %g", fl_loss_name(p.loss),
                           (long long)c, (long long)m, target_kind, ws[wi], (long long)e, grad[e]);
                sq += (double)grad[e] * grad[e];
              }
              if (!isfinite(loss[i]) || !isfinite(gn[i]))
                fail_msg("%s: sample %lld loss %g grad_norm %g", fl_loss_name(p.loss), (long long)i, loss[i], gn[i]);
              if (ws[wi] > 1e31f) continue; /* saturated entries: their norm is not the true one */
              if (!close_enough(gn[i], sqrt(sq)))
                fail_msg("%s c %lld m %lld targets %d weight %g: grad_norm[%lld] = %.9g, the entries' norm %.9g",
                         fl_loss_name(p.loss), (long long)c, (long long)m, target_kind, ws[wi], (long long)i, gn[i],
                         sqrt(sq));
            }
          }
        }
      }
    }
  }
}

/* Element loss and derivative of the sigmoid focal loss with pos_weight, in double: torchvision's modulation
 * (1 - p_t)^g, or MONAI's sigmoid(-z(2t-1))^g; saturated at +-FLT_MAX as the library's are. */
static double sat_d(double v) {
  return v > 3.4028234663852886e38 ? 3.4028234663852886e38 : v < -3.4028234663852886e38 ? -3.4028234663852886e38 : v;
}

static void pos_weight_ref(int monai, double z, double t, double pw, double g, double w, double *loss, double *grad) {
  const double s = 1.0 / (1.0 + exp(-z)), sn = 1.0 / (1.0 + exp(z));
  const double nlp = (z < 0 ? -z : 0) + log1p(exp(-fabs(z))), nln = (z > 0 ? z : 0) + log1p(exp(-fabs(z)));
  const double at = 0.25 * t + 0.75 * (1 - t), ce = pw * t * nlp + (1 - t) * nln, dce = (1 - t) * s - pw * t * sn;
  double mod, k;
  if (monai) {
    const double v = (2 * t - 1) * z;
    mod = pow(1.0 / (1.0 + exp(v)), g);
    k = -g * (2 * t - 1) / (1.0 + exp(-v));
  } else {
    const double q = t * sn + (1 - t) * s;
    mod = pow(q, g);
    k = q > 0 ? g * (1 - 2 * t) * s * sn / q : 0.0;
  }
  *loss = sat_d(w * at * mod * ce);
  *grad = sat_d(w * at * mod * (k * ce + dce));
}

/* pos_weight takes the cross-entropy's positive term past float's range where the loss, after alpha_t, the
 * modulation and the weight, is within it (or is past it by more than a saturated term would say): the loss
 * and its derivative must still be the true values, or FLT_MAX where those are past float's range. E.g.
 * pos_weight 3, z = -3e38, t = 1: 0.25 x 3 x 3e38 = 2.25e38, not 0.25 x FLT_MAX. */
static void test_lib_pos_weight_products_saturate_last(void **state) {
  (void)state;
  static const float zs[] = {-3e38f, -1e4f, -90.0f, -20.0f, -1.0f, 0.0f, 1.0f, 30.0f, 3e38f};
  static const float ts[] = {0.0f, 1.0f, 0.3f};
  static const float pws[] = {3.0f, 1e10f, 3e38f};
  static const float gammas[] = {0.0f, 0.5f, 2.0f};
  static const float ws[] = {1.0f, 0.25f};
  for (int monai = 0; monai < 2; monai++) {
    for (size_t zi = 0; zi < sizeof zs / sizeof *zs; zi++) {
      for (size_t ti = 0; ti < sizeof ts / sizeof *ts; ti++) {
        for (size_t pi = 0; pi < sizeof pws / sizeof *pws; pi++) {
          for (size_t gi = 0; gi < sizeof gammas / sizeof *gammas; gi++) {
            for (size_t wi = 0; wi < sizeof ws / sizeof *ws; wi++) {
              fl_params p;
              fl_params_init(&p, FL_SIGMOID_FOCAL);
              p.profile = monai ? FL_PROFILE_MONAI : FL_PROFILE_TORCHVISION;
              p.gamma = gammas[gi];
              p.pos_weight = &pws[pi];
              float loss = NAN, grad = NAN;
              fl_batch b = {.n = 1, .m = 1, .c = 1, .x = &zs[zi], .targets = &ts[ti], .weights = &ws[wi]};
              fl_out o = {.loss = &loss, .grad = &grad};
              assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
              double want_l, want_g;
              pos_weight_ref(monai, zs[zi], ts[ti], pws[pi], gammas[gi], ws[wi], &want_l, &want_g);
              if (!close_enough(loss, want_l) || !close_enough(grad, want_g))
                fail_msg("%s z %g t %g pos_weight %g gamma %g weight %g: loss %.9g (expected %.9g), grad %.9g "
                         "(expected %.9g)", monai ? "monai" : "torchvision", zs[zi], ts[ti], pws[pi], gammas[gi],
                         ws[wi], loss, want_l, grad, want_g);
            }
          }
        }
      }
    }
  }
}

/* FL* = alpha_t softplus(-gamma z (2t-1)) / gamma where gamma z passes float's range and the loss does not:
 * the loss is alpha_t (max(-z(2t-1), 0) + log1p(e^-|gamma z (2t-1)|) / gamma), e.g. 3e38 at gamma 2,
 * z = 3e38, t = 0 (alpha off), not FLT_MAX / 2. */
static void test_lib_focal_star_large_gamma_z(void **state) {
  (void)state;
  static const float zs[] = {-3e38f, -1e38f, -1e4f, -3.0f, 0.0f, 3.0f, 1e4f, 1e38f, 3e38f};
  static const float ts[] = {0.0f, 1.0f, 0.3f};
  static const float gammas[] = {0.5f, 2.0f, 10.0f};
  for (size_t gi = 0; gi < sizeof gammas / sizeof *gammas; gi++) {
    for (int alpha_on = 0; alpha_on < 2; alpha_on++) {
      for (size_t zi = 0; zi < sizeof zs / sizeof *zs; zi++) {
        for (size_t ti = 0; ti < sizeof ts / sizeof *ts; ti++) {
          fl_params p;
          fl_params_init(&p, FL_SIGMOID_FOCAL_STAR);
          p.gamma = gammas[gi];
          p.alpha = alpha_on ? 0.25f : -1.0f;
          float z = zs[zi], t = ts[ti];
          const double uz = (2.0 * t - 1.0) * z, g = gammas[gi];
          const double at = alpha_on ? 0.25 * t + 0.75 * (1.0 - t) : 1.0;
          const double want = sat_d(at * ((uz < 0 ? -uz : 0.0) + log1p(exp(-fabs(g * uz))) / g));
          const double got = loss1(&p, &z, &t, 1, 1);
          if (!close_enough(got, want))
            fail_msg("gamma %g alpha %d z %g t %g: %.9g, expected %.9g", g, alpha_on, z, t, got, want);
        }
      }
    }
  }
}

/* Softmax family, probability input: where log p_y is clamped at -100 (p_y below e^-100, 3.7e-44: 0 and
 * subnormals) the loss is constant in z = log p up to terms of order p_y, so its gradient is 0, as autograd
 * gives it and as the sigmoid family's is; just above the clamp it is the unclamped gradient (p_y = 1e-30,
 * gamma 2: d/dz_k = (p_k - [k == y]) to within 1e-28). Index labels and one-hot soft rows, c = 3 and 20. */
static void test_lib_softmax_probs_clamped_log_has_no_gradient(void **state) {
  (void)state;
  static const float pys[] = {0.0f, 1.4e-45f, 3e-44f, 1e-30f};
  static const int64_t cs[] = {3, 20};
  for (size_t ci = 0; ci < sizeof cs / sizeof *cs; ci++) {
    for (size_t pi = 0; pi < sizeof pys / sizeof *pys; pi++) {
      for (int soft = 0; soft < 2; soft++) {
        enum { CMAX = 20 };
        const int64_t c = cs[ci];
        float x[CMAX] = {0}, t[CMAX] = {0}, grad[CMAX], loss, gn;
        x[0] = 1.0f - pys[pi];
        x[1] = pys[pi];
        t[1] = 1.0f;
        const int32_t y = 1;
        fl_params p;
        fl_params_init(&p, FL_SOFTMAX_FOCAL);
        p.input = FL_INPUT_PROBS;
        fl_batch b = {.n = 1, .m = 1, .c = c, .x = x, .label_type = FL_LABEL_I32};
        if (soft) b.targets = t;
        else b.labels = &y;
        fl_out o = {.loss = &loss, .grad = grad, .grad_norm = &gn};
        assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
        const int clamped = pys[pi] < 3.7e-44f;
        assert_close(loss, clamped ? 100.0 : -log((double)pys[pi]));
        for (int64_t k = 0; k < c; k++) {
          const double want = clamped ? 0.0 : (double)x[k] - (k == 1);
          if (!close_enough(grad[k], want))
            fail_msg("c %lld p_y %g soft %d: grad[%lld] = %g, expected %g", (long long)c, pys[pi], soft, (long long)k,
                     grad[k], want);
        }
        assert_close(gn, clamped ? 0.0 : sqrt(2.0));
      }
    }
  }
}

static void test_lib_probabilities_near_0_and_1(void **state) {
  (void)state;
  /* Probability input at and near the ends: finite, and equal to the logit form where both exist. */
  const float ps[] = {0.0f, 1e-30f, 1e-8f, 1e-4f, 0.5f, 1.0f - 1e-4f, 1.0f - 6e-8f, 1.0f};
  for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
    for (int tt = 0; tt < 2; tt++) {
      fl_params p;
      fl_params_init(&p, FL_SIGMOID_FOCAL);
      p.input = FL_INPUT_PROBS;
      float t = (float)tt, x = ps[i];
      double got = loss1(&p, &x, &t, 1, 1);
      assert_true(isfinite(got));
      if (ps[i] > 0.0f && ps[i] < 1.0f) {
        double pr = ps[i], q = tt ? 1 - pr : pr, at = tt ? 0.25 : 0.75;
        double ce = -(tt ? log(pr) : log1p(-pr));
        assert_close(got, at * q * q * ce);
      } else {
        /* PyTorch's binary_cross_entropy clamps each log at -100 */
        double at = tt ? 0.25 : 0.75;
        int wrong = (ps[i] == 0.0f) == (tt == 1);
        assert_close(got, wrong ? at * 100.0 : 0.0);
      }
    }
  }
}

static void test_lib_ignored_and_background_labels(void **state) {
  (void)state;
  enum { M = 4, C = 5 };
  float x[M * C];
  for (int i = 0; i < M * C; i++) x[i] = frand(-3, 3);
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.reduction = FL_REDUCE_MEAN;
  /* every row ignored: loss 0, nothing scored */
  int32_t all_ignored[M] = {-1, -1, -1, -1};
  float loss;
  fl_score sc;
  fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .labels = all_ignored, .label_type = FL_LABEL_I32};
  fl_out o = {.loss = &loss, .scores = &sc};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_true(loss == 0.0f);
  assert_int_equal(sc.rows, 0);
  /* background (label == c) means all classes negative: same as an all-zero target row */
  int32_t bg[M] = {C, C, C, C};
  float zeros[M * C] = {0};
  b.labels = bg;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_close(loss, loss1(&p, x, zeros, M, C));
  /* one ignored row leaves the mean over the other rows */
  int32_t some[M] = {1, -1, 2, C};
  float part[M * C] = {0};
  part[0 * C + 1] = 1.0f;
  part[2 * C + 2] = 1.0f;
  b.labels = some;
  p.reduction = FL_REDUCE_SUM;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  double without = loss1(&p, x, part, M, C) - loss1(&p, x + C, part + C, 1, C);
  assert_close(loss, without);
  /* a custom ignore value (255, as in segmentation masks) */
  uint8_t seg[M] = {255, 1, 255, 0};
  p.ignore_index = 255;
  b.labels = seg;
  b.label_type = FL_LABEL_U8;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_true(loss > 0.0f);
}

/* ---------------------------------------------------------------- edges the fuzz targets found */

/* The L2 norm of n floats, in double. */
static double norm2(const float *g, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += (double)g[i] * g[i];
  return sqrt(s);
}

/* Each case once per instruction-set variant the CPU has: the variants must agree on the edges too. */
static const char *const isas[] = {"generic", "x86-64-v3", "x86-64-v4"};

static void test_lib_edges_found_by_fuzzing(void **state) {
  (void)state;
  for (size_t v = 0; v < sizeof isas / sizeof isas[0]; v++) {
    if (fl_isa_force(isas[v]) != 0) continue;
    fl_params p;
    float loss[2], gn[2];
    fl_score sc[2];
    /* an ignored row of a sigmoid sample with class labels has a gradient, and it is zero */
    {
      enum { M = 3, C = 4 };
      float x[M * C], g[M * C];
      for (int i = 0; i < M * C; i++) x[i] = frand(-2, 2), g[i] = NAN;
      int32_t y[M] = {1, -1, 3};
      fl_params_init(&p, FL_SIGMOID_FOCAL);
      fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32};
      fl_out o = {.loss = loss, .grad = g, .grad_norm = gn};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      for (int k = 0; k < C; k++) assert_true(g[1 * C + k] == 0.0f);
      assert_close(gn[0], norm2(g, M * C));
    }
    /* Keras profile, probability input: a row of zeros is finite, and the norm is the gradient's own */
    {
      enum { C = 3 };
      float x[2 * C] = {0, 0, 0, 0.2f, 0.9f, 0.4f}, g[2 * C];
      int32_t y[2] = {1, 2};
      fl_params_init(&p, FL_SOFTMAX_FOCAL);
      p.profile = FL_PROFILE_KERAS;
      p.input = FL_INPUT_PROBS;
      fl_batch b = {.n = 2, .m = 1, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32};
      fl_out o = {.loss = loss, .grad = g, .grad_norm = gn, .scores = sc};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      for (int i = 0; i < 2 * C; i++) assert_true(isfinite(g[i]));
      assert_true(isfinite(loss[0]) && isfinite(gn[0]));
      assert_close(gn[1], norm2(g + C, C)); /* the probabilities do not sum to 1 here */
    }
    /* Keras profile, probability input: normalising by the row's sum makes the scale irrelevant,
     * down to rows whose squares underflow float (1e-30^2) and subnormal rows */
    {
      enum { C = 3, R = 7 };
      static const float scale[R] = {1.0f, 1e-10f, 1e-20f, 1e-30f, 1e-37f, 1e-40f, 1e-44f};
      static const float base[2][C] = {{0.0f, 1.0f, 1.0f}, {0.3f, 0.5f, 0.2f}};
      for (int v2 = 0; v2 < 2; v2++) {
        float x[R * C], g[R * C], ls[R], gr[R];
        int32_t y[R];
        for (int r = 0; r < R; r++) {
          for (int k = 0; k < C; k++) x[r * C + k] = base[v2][k] * scale[r];
          y[r] = 1;
        }
        fl_params_init(&p, FL_SOFTMAX_FOCAL);
        p.profile = FL_PROFILE_KERAS;
        p.input = FL_INPUT_PROBS;
        fl_batch b = {.n = R, .m = 1, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32};
        fl_out o = {.loss = ls, .grad = g, .grad_norm = gr};
        assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
        for (int r = 0; r < R; r++) {
          assert_close(gr[r], norm2(g + r * C, C));
          /* subnormal rows carry fewer digits: compare the normal ones with the unscaled row */
          if (scale[r] < 1e-38f) continue;
          assert_close(ls[r], ls[0]);
          for (int k = 0; k < C; k++) assert_close(g[r * C + k], g[k]);
        }
      }
    }
    /* a huge weight on a softmax row that is already right: gradient norm 0, not inf * 0 */
    {
      enum { C = 2 };
      float x[C] = {200.0f, -200.0f}, g[C], w[C] = {3e38f, 3e38f};
      int32_t y[1] = {0};
      fl_params_init(&p, FL_SOFTMAX_FOCAL);
      fl_batch b = {.n = 1, .m = 1, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32, .weights = w};
      fl_out o = {.loss = loss, .grad = g, .grad_norm = gn};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      assert_true(isfinite(gn[0]));
      assert_close(gn[0], norm2(g, C));
    }
    /* sigmoid elements with logits near float's range: the margin (AUM's input) stays finite */
    {
      enum { M = 40, C = 3 };
      float x[M * C], t[M * C];
      for (int i = 0; i < M * C; i++) x[i] = (i % 2 ? -3.4e38f : 3.4e38f), t[i] = (float)(i % 2);
      fl_params_init(&p, FL_SIGMOID_FOCAL);
      fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .targets = t};
      fl_out o = {.loss = loss, .scores = sc};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      assert_true(isfinite(sc[0].margin) && isfinite(loss[0]));
    }
    /* FL*: gamma times a logit past float's range, with alpha 0 for that element: a finite loss */
    {
      float x[2] = {3e38f, -3e38f}, t[2] = {0.0f, 1.0f};
      fl_params_init(&p, FL_SIGMOID_FOCAL_STAR);
      p.gamma = 10.0f;
      fl_batch b = {.n = 1, .m = 1, .c = 2, .x = x, .targets = t};
      fl_out o = {.loss = loss};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
      assert_true(isfinite(loss[0]));
    }
  }
  assert_int_equal(fl_isa_force(NULL), 0);
  /* Poly-1's epsilon is bounded where its float products would overflow */
  fl_params p;
  fl_params_init(&p, FL_POLY1_SOFTMAX_FOCAL);
  p.epsilon = 1e4f;
  assert_int_equal(fl_params_check(&p, 3, NULL), 0);
  p.epsilon = 1e5f;
  assert_int_equal(fl_params_check(&p, 3, NULL), FL_EEPSILON);
}

static void test_lib_reductions(void **state) {
  (void)state;
  enum { M = 6, C = 4 };
  float x[M * C], t[M * C] = {0};
  for (int i = 0; i < M * C; i++) x[i] = frand(-5, 5);
  t[1] = t[7] = t[8] = 1.0f; /* three positives */
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  double sum = loss1(&p, x, t, M, C);
  p.reduction = FL_REDUCE_MEAN;
  assert_close(loss1(&p, x, t, M, C), sum / (M * C));
  p.reduction = FL_REDUCE_POSITIVES;
  assert_close(loss1(&p, x, t, M, C), sum / 3.0);
  float none[M * C] = {0};
  p.reduction = FL_REDUCE_SUM;
  double s0 = loss1(&p, x, none, M, C);
  p.reduction = FL_REDUCE_POSITIVES;
  assert_close(loss1(&p, x, none, M, C), s0); /* max(1, 0) */

  /* mean_elements divides by m * c whatever is ignored; mean by what is not ignored (softmax: positions) */
  const int64_t y[M] = {0, -1, 3, 2, -1, 1};
  const fl_loss losses[2] = {FL_SIGMOID_FOCAL, FL_SOFTMAX_FOCAL};
  for (int li = 0; li < 2; li++) {
    fl_params_init(&p, losses[li]);
    fl_batch b = {.n = 1, .m = M, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I64};
    float l[FL_REDUCTION_COUNT], g[FL_REDUCTION_COUNT][M * C];
    for (int r = 0; r < FL_REDUCTION_COUNT; r++) {
      p.reduction = (fl_reduction)r;
      fl_out o = {.loss = &l[r], .grad = g[r]};
      assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
    }
    const double live = li ? 4.0 : 4.0 * C;
    assert_close(l[FL_REDUCE_MEAN], l[FL_REDUCE_SUM] / live);
    assert_close(l[FL_REDUCE_MEAN_ELEMENTS], l[FL_REDUCE_SUM] / (M * C));
    for (int e = 0; e < M * C; e++) assert_close(g[FL_REDUCE_MEAN_ELEMENTS][e], g[FL_REDUCE_SUM][e] / (M * C));
  }
}

static void test_lib_label_types_agree(void **state) {
  (void)state;
  enum { N = 33, C = 7 };
  float x[N * C];
  int32_t y32[N];
  int64_t y64[N];
  uint8_t y8[N];
  for (int i = 0; i < N * C; i++) x[i] = frand(-6, 6);
  for (int i = 0; i < N; i++) y32[i] = (int32_t)(y64[i] = y8[i] = (uint8_t)(i % C));
  float a[N], b2[N], c3[N];
  fl_params p;
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  fl_batch b = {.n = N, .m = 1, .c = C, .x = x, .labels = y32, .label_type = FL_LABEL_I32};
  fl_out o = {.loss = a};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  b.labels = y64;
  b.label_type = FL_LABEL_I64;
  o.loss = b2;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  b.labels = y8;
  b.label_type = FL_LABEL_U8;
  o.loss = c3;
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_memory_equal(a, b2, sizeof a);
  assert_memory_equal(a, c3, sizeof a);
}

static void test_lib_empty_batch(void **state) {
  (void)state;
  float x = 0, loss = 42.0f;
  int32_t y = 0;
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  fl_batch b = {.n = 0, .m = 1, .c = 3, .x = &x, .labels = &y, .label_type = FL_LABEL_I32};
  fl_out o = {.loss = &loss};
  assert_int_equal(fl_eval(&o, &b, &p, NULL), 0);
  assert_true(loss == 42.0f); /* nothing written */
}

/* ---------------------------------------------------------------- invalid input is refused */

static void expect_error(const fl_params *p, const fl_batch *b, int want, int64_t want_where) {
  float loss[64];
  fl_out o = {.loss = loss};
  int64_t where = -7;
  int rc = fl_eval(&o, b, p, &where);
  if (rc != want) fail_msg("got %s, expected %s", fl_errname(rc), fl_errname(want));
  if (where != want_where) fail_msg("%s: where = %lld, expected %lld", fl_errname(rc), (long long)where, (long long)want_where);
  assert_non_null(fl_strerror(rc));
}

static void test_lib_rejects_bad_parameters(void **state) {
  (void)state;
  float x[6] = {0, 1, 2, 3, 4, 5}, t[6] = {0};
  int32_t y[2] = {0, 1};
  fl_batch b = {.n = 2, .m = 1, .c = 3, .x = x, .targets = t};
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.gamma = -0.5f;
  expect_error(&p, &b, FL_EGAMMA, -1);
  p.gamma = NAN;
  expect_error(&p, &b, FL_EGAMMA, -1);
  p.gamma = INFINITY;
  expect_error(&p, &b, FL_EGAMMA, -1);
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.alpha = 1.5f;
  expect_error(&p, &b, FL_EALPHA, -1);
  p.alpha = NAN;
  expect_error(&p, &b, FL_EALPHA, -1);
  float av[3] = {0.1f, 2.0f, 0.3f};
  p.alpha = 0.25f;
  p.alpha_c = av;
  expect_error(&p, &b, FL_EALPHA, 1);
  fl_params_init(&p, FL_SIGMOID_FOCAL_STAR);
  p.gamma = 0.0f;
  expect_error(&p, &b, FL_EGAMMA, -1);
  fl_params_init(&p, FL_SIGMOID_FOCAL_STAR);
  p.input = FL_INPUT_PROBS;
  expect_error(&p, &b, FL_EUNSUPPORTED, -1);
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.profile = FL_PROFILE_MONAI;
  p.input = FL_INPUT_PROBS;
  expect_error(&p, &b, FL_EUNSUPPORTED, -1);
  fl_params_init(&p, FL_ASL);
  p.profile = FL_PROFILE_KERAS;
  expect_error(&p, &b, FL_EUNSUPPORTED, -1);
  fl_params_init(&p, FL_ASL);
  p.clip = 1.0f;
  expect_error(&p, &b, FL_ECLIP, -1);
  fl_params_init(&p, FL_ASL);
  p.gamma_neg = -1.0f;
  expect_error(&p, &b, FL_EGAMMA, -1);
  fl_params_init(&p, FL_POLY1_SIGMOID_FOCAL);
  p.epsilon = -2.0f;
  expect_error(&p, &b, FL_EEPSILON, -1);
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.loss = (fl_loss)99;
  expect_error(&p, &b, FL_EPARAM, -1);
  /* shapes */
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  fl_batch one_class = {.n = 2, .m = 1, .c = 1, .x = x, .labels = y, .label_type = FL_LABEL_I32};
  expect_error(&p, &one_class, FL_ESHAPE, -1);
  fl_batch neg = {.n = -1, .m = 1, .c = 3, .x = x, .targets = t};
  expect_error(&p, &neg, FL_ESHAPE, -1);
  fl_batch both = {.n = 2, .m = 1, .c = 3, .x = x, .labels = y, .targets = t};
  expect_error(&p, &both, FL_EPARAM, -1);
  /* pos_weight: each finite and >= 0 (where: the class), and only where the loss has a positive term */
  float pw[3] = {1.0f, 2.0f, -0.5f};
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  p.pos_weight = pw;
  expect_error(&p, &b, FL_EPOSWEIGHT, 2);
  pw[2] = INFINITY;
  expect_error(&p, &b, FL_EPOSWEIGHT, 2);
  pw[2] = NAN;
  expect_error(&p, &b, FL_EPOSWEIGHT, 2);
  pw[2] = 0.0f;
  static const fl_loss refused[] = {FL_SOFTMAX_FOCAL, FL_POLY1_SOFTMAX_FOCAL, FL_CROSS_ENTROPY, FL_SIGMOID_FOCAL_STAR, FL_ASL};
  fl_batch lb = {.n = 2, .m = 1, .c = 3, .x = x, .labels = y, .label_type = FL_LABEL_I32};
  for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
    fl_params_init(&p, refused[i]);
    p.pos_weight = pw;
    expect_error(&p, &lb, FL_EPOSWEIGHT, -1);
  }
  fl_batch neither = {.n = 2, .m = 1, .c = 3, .x = x};
  expect_error(&p, &neither, FL_ENULL, -1);
  assert_int_equal(fl_eval(NULL, &b, &p, NULL), FL_ENULL);
}

static void test_lib_rejects_bad_tensors(void **state) {
  (void)state;
  enum { N = 3, C = 20 };
  float x[N * C], t[N * C], w[N * C];
  int32_t y[8] = {1, 2, 3, 0, 1, 2, 0, 1}; /* enough rows for c = 3 too */
  for (int i = 0; i < N * C; i++) {
    x[i] = frand(-2, 2);
    t[i] = 0.0f;
    w[i] = 1.0f;
  }
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  /* every path (flat, row, planar) reports the first bad element's flat index */
  const int64_t cs[] = {C, 3};
  for (int ci = 0; ci < 2; ci++) {
    const int64_t c = cs[ci], n = N * C / c > 8 ? 8 : N;
    fl_batch dense = {.n = n, .m = 1, .c = c, .x = x, .targets = t};
    fl_batch idx = {.n = n, .m = 1, .c = c, .x = x, .labels = y, .label_type = FL_LABEL_I32};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int k = 0; k < 3; k++) {
      x[c + 1] = bad[k];
      expect_error(&p, &dense, FL_EINPUT, c + 1);
      expect_error(&p, &idx, FL_EINPUT, c + 1);
      x[c + 1] = 0.5f;
    }
    t[2] = 1.5f;
    expect_error(&p, &dense, FL_ETARGET, 2);
    t[2] = NAN;
    expect_error(&p, &dense, FL_ETARGET, 2);
    t[2] = 0.0f;
    y[1] = (int32_t)c + 1;
    expect_error(&p, &idx, FL_ELABEL, 1);
    y[1] = -2;
    expect_error(&p, &idx, FL_ELABEL, 1);
    y[1] = 2;
    idx.weights = w;
    w[c + 4] = -1.0f;
    expect_error(&p, &idx, FL_EWEIGHT, c + 4);
    w[c + 4] = 1.0f;
  }
  /* two classes in samples of 16 rows or more: whole blocks of 16 rows go through the two-class path, the rest
   * through the planar one; each reports the first bad label's row */
  {
    enum { M2 = 40 };
    float x2[M2 * 2];
    int32_t y2[M2];
    for (int i = 0; i < M2; i++) {
      x2[2 * i] = frand(-2, 2);
      x2[2 * i + 1] = frand(-2, 2);
      y2[i] = i % 2;
    }
    fl_batch pairs = {.n = 1, .m = M2, .c = 2, .x = x2, .labels = y2, .label_type = FL_LABEL_I32};
    fl_params_init(&p, FL_SIGMOID_FOCAL);
    for (int at = 0; at < M2; at += 3) {
      y2[at] = 3;
      expect_error(&p, &pairs, FL_ELABEL, at);
      y2[at] = at % 2;
    }
  }
  /* probabilities outside [0, 1] */
  p.input = FL_INPUT_PROBS;
  for (int i = 0; i < N * C; i++) x[i] = 0.5f;
  x[7] = 1.0001f;
  fl_batch dense = {.n = N, .m = 1, .c = C, .x = x, .targets = t};
  expect_error(&p, &dense, FL_EPROB, 7);
  x[7] = -0.0001f;
  expect_error(&p, &dense, FL_EPROB, 7);
  /* softmax: label == c is out of range (no background class), weights are per row */
  fl_params_init(&p, FL_SOFTMAX_FOCAL);
  x[7] = 0.5f;
  int32_t ys[N] = {0, C, 1};
  fl_batch sm = {.n = N, .m = 1, .c = C, .x = x, .labels = ys, .label_type = FL_LABEL_I32};
  expect_error(&p, &sm, FL_ELABEL, 1);
  ys[1] = 1;
  float rw[N] = {1, 1, NAN};
  sm.weights = rw;
  expect_error(&p, &sm, FL_EWEIGHT, 2);
  sm.weights = NULL;
  x[2 * C + 5] = NAN;
  expect_error(&p, &sm, FL_EINPUT, 2 * C + 5);
}

/* ---------------------------------------------------------------- reentrancy */

typedef struct job {
  const fl_batch *b;
  const fl_params *p;
  float *loss;
  fl_score *sc;
  int rc;
} job;

static void *run_job(void *arg) {
  job *j = arg;
  fl_out o = {.loss = j->loss, .scores = j->sc};
  for (int r = 0; r < 20 && j->rc == 0; r++) j->rc = fl_eval(&o, j->b, j->p, NULL);
  return NULL;
}

static void test_lib_reentrant_across_threads(void **state) {
  (void)state;
  enum { N = 2000, C = 24, T = 4 };
  float *x = malloc(N * C * sizeof *x);
  int32_t *y = malloc(N * sizeof *y);
  for (int i = 0; i < N * C; i++) x[i] = frand(-9, 9);
  for (int i = 0; i < N; i++) y[i] = i % (C + 1);
  fl_params p;
  fl_params_init(&p, FL_SIGMOID_FOCAL);
  fl_batch b = {.n = N, .m = 1, .c = C, .x = x, .labels = y, .label_type = FL_LABEL_I32};
  static float loss[T][N];
  static fl_score sc[T][N];
  pthread_t th[T];
  job jobs[T];
  for (int i = 0; i < T; i++) {
    jobs[i] = (job){.b = &b, .p = &p, .loss = loss[i], .sc = sc[i]};
    pthread_create(&th[i], NULL, run_job, &jobs[i]);
  }
  for (int i = 0; i < T; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < T; i++) {
    assert_int_equal(jobs[i].rc, 0);
    assert_memory_equal(loss[0], loss[i], sizeof loss[0]);
    assert_memory_equal(sc[0], sc[i], sizeof sc[0]);
  }
  free(x);
  free(y);
}

static void test_lib_names_round_trip(void **state) {
  (void)state;
  for (int i = 0; i < FL_LOSS_COUNT; i++) {
    fl_loss v;
    assert_int_equal(fl_loss_parse(fl_loss_name((fl_loss)i), &v), 0);
    assert_int_equal(v, i);
  }
  for (int i = 0; i < FL_PROFILE_COUNT; i++) {
    fl_profile v;
    assert_int_equal(fl_profile_parse(fl_profile_name((fl_profile)i), &v), 0);
    assert_int_equal(v, i);
  }
  fl_reduction r = FL_REDUCE_MEAN;
  assert_int_equal(fl_reduction_parse("median", &r), FL_EPARAM);
  assert_int_equal(r, FL_REDUCE_MEAN);
  assert_null(fl_loss_name((fl_loss)FL_LOSS_COUNT));
  assert_string_equal(fl_errname(FL_ELABEL), "FL_ELABEL");
  assert_string_equal(fl_errname(12345), "FL_UNKNOWN");
  assert_non_null(strstr(fl_isa(), "x86-64") ? fl_isa() : "generic");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_lib_conventions_sigmoid_values),
      cmocka_unit_test(test_lib_conventions_profiles_soft_target),
      cmocka_unit_test(test_lib_conventions_keras_doc_example),
      cmocka_unit_test(test_lib_kornia_published_cases),
      cmocka_unit_test(test_lib_monai_published_cases),
      cmocka_unit_test(test_lib_pos_weight_matches_torch_and_kornia),
      cmocka_unit_test(test_lib_grad_norm_large_weights),
      cmocka_unit_test(test_lib_pos_weight_products_saturate_last),
      cmocka_unit_test(test_lib_focal_star_large_gamma_z),
      cmocka_unit_test(test_lib_softmax_probs_clamped_log_has_no_gradient),
      cmocka_unit_test(test_lib_conventions_softmax_and_scores),
      cmocka_unit_test(test_lib_gamma0_is_cross_entropy),
      cmocka_unit_test(test_lib_cross_entropy_losses),
      cmocka_unit_test(test_lib_alpha_off_is_unweighted),
      cmocka_unit_test(test_lib_alpha_vector_equal_to_scalar),
      cmocka_unit_test(test_lib_gradient_matches_finite_differences),
      cmocka_unit_test(test_lib_sigmoid_mean_of_large_losses),
      cmocka_unit_test(test_lib_softmax_mean_of_large_losses),
      cmocka_unit_test(test_lib_poly1_softmax_gradient_with_alpha_zero),
      cmocka_unit_test(test_lib_finite_everywhere),
      cmocka_unit_test(test_lib_probabilities_near_0_and_1),
      cmocka_unit_test(test_lib_ignored_and_background_labels),
      cmocka_unit_test(test_lib_edges_found_by_fuzzing),
      cmocka_unit_test(test_lib_reductions),
      cmocka_unit_test(test_lib_label_types_agree),
      cmocka_unit_test(test_lib_empty_batch),
      cmocka_unit_test(test_lib_rejects_bad_parameters),
      cmocka_unit_test(test_lib_rejects_bad_tensors),
      cmocka_unit_test(test_lib_reentrant_across_threads),
      cmocka_unit_test(test_lib_names_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
