/* test_history.c — history updates on hand-computed sequences. */
#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "history.h"

#define assert_near(a, b) assert_true(fabs((double)(a) - (double)(b)) <= 1e-6 * (1.0 + fabs((double)(b))))

static const hist_params HP = {0.3, 10};

static hist_obs obs(float loss, float p_t, float margin, float correct, int32_t label, int32_t pred, int64_t step) {
  hist_obs o = {.loss = loss, .p_t = p_t, .p_max = p_t, .margin = margin, .correct = correct, .pred = pred,
                .label = label, .scored = 1, .has_step = step >= 0, .step = step};
  return o;
}

static void test_history_losses_and_ema(void **state) {
  (void)state;
  hist_rec h;
  hist_init(&h);
  const float losses[] = {2.0f, 1.0f, 4.0f, 0.5f};
  double ema = 0;
  for (int i = 0; i < 4; i++) {
    hist_obs o = obs(losses[i], 0.5f, 0.0f, 1.0f, 0, 0, 100 + i);
    hist_update(&h, &o, &HP, NULL);
    ema = i == 0 ? losses[0] : 0.3 * losses[i] + 0.7 * ema;
  }
  assert_int_equal(h.seen, 4);
  assert_near(h.last_loss, 0.5);
  assert_near(h.mean_loss, (2.0 + 1.0 + 4.0 + 0.5) / 4);
  assert_near(h.max_loss, 4.0);
  assert_near(h.ema_loss, ema); /* 2, 1.7, 2.39, 1.823 */
  assert_near(ema, 1.823);
  assert_true(h.has_step);
  assert_int_equal(h.first_step, 100);
  assert_int_equal(h.last_step, 103);
}

static void test_history_cartography(void **state) {
  (void)state;
  /* p_t 0.2, 0.6, 0.7: mean 0.5, population variance ((.3)^2 + (.1)^2 + (.2)^2)/3 = 0.04667 */
  hist_rec h;
  hist_init(&h);
  const float pt[] = {0.2f, 0.6f, 0.7f};
  const float ok[] = {0.0f, 1.0f, 1.0f};
  for (int i = 0; i < 3; i++) {
    hist_obs o = obs(1.0f, pt[i], 0.0f, ok[i], 1, 1, -1);
    hist_update(&h, &o, &HP, NULL);
  }
  assert_near(hist_confidence(&h), 0.5);
  assert_near(hist_variability(&h), sqrt(0.14 / 3.0));
  assert_near(hist_correctness(&h), 2.0 / 3.0);
  assert_false(h.has_step);
}

static void test_history_forgetting_counts_correct_to_incorrect(void **state) {
  (void)state;
  /* correct pattern 0 1 1 0 1 0 0 1: transitions 1->0 at positions 3 and 5 */
  const float seq[] = {0, 1, 1, 0, 1, 0, 0, 1};
  hist_rec h;
  hist_init(&h);
  for (int i = 0; i < 8; i++) {
    hist_obs o = obs(1.0f, 0.5f, 0.0f, seq[i], 0, 0, i);
    hist_update(&h, &o, &HP, NULL);
  }
  assert_int_equal(h.forgetting, 2);
  assert_int_equal(h.correct_n, 4);
  /* dense samples: an observation is correct when at least half its positions are */
  hist_init(&h);
  hist_obs a = obs(1.0f, 0.5f, 0.0f, 0.75f, -1, -1, 0), b = obs(1.0f, 0.5f, 0.0f, 0.49f, -1, -1, 1);
  hist_update(&h, &a, &HP, NULL);
  hist_update(&h, &b, &HP, NULL);
  assert_int_equal(h.forgetting, 1);
}

/* Toneva et al.'s ranking: never learned counts as forgotten at every presentation */
static void test_history_forgetting_never_learned_ranks_first(void **state) {
  (void)state;
  enum { N = 6 };
  /* every correctness sequence of N observations: the never-learned one (all 0) must have
   * the largest `forgetting` of all, above the most-forgotten learned one (1 0 1 0 1 0: 3 events) */
  uint32_t best_learned = 0, never = 0;
  for (unsigned bits = 0; bits < (1u << N); bits++) {
    hist_rec h;
    hist_init(&h);
    for (int i = 0; i < N; i++) {
      hist_obs o = obs(1.0f, 0.5f, 0.0f, (float)((bits >> i) & 1u), 0, 0, i);
      hist_update(&h, &o, &HP, NULL);
    }
    assert_int_equal(hist_value(&h, HF_FORGETTING_EVENTS), h.forgetting);
    assert_true(hist_value(&h, HF_FORGETTING) == (double)hist_forgetting(&h));
    hist_view v;
    hist_view_of(&h, &v);
    assert_true(hist_view_value(&v, HF_FORGETTING) == (double)hist_forgetting(&h));
    assert_true(hist_view_value(&v, HF_FORGETTING_EVENTS) == (double)h.forgetting);
    if (bits == 0) {
      never = hist_forgetting(&h);
      assert_int_equal(h.forgetting, 0); /* no events: it was never correct */
    } else {
      assert_int_equal(hist_forgetting(&h), h.forgetting);
      if (h.forgetting > best_learned) best_learned = h.forgetting;
    }
  }
  assert_int_equal(never, N);
  assert_int_equal(best_learned, N / 2);
  /* an observation that scored nothing is not a presentation, and an unscored sample is not never-learned */
  hist_rec h;
  hist_init(&h);
  hist_obs u = obs(1.0f, 0.5f, 0.0f, 0.0f, 0, 0, 0);
  u.scored = 0;
  hist_update(&h, &u, &HP, NULL);
  assert_int_equal(hist_forgetting(&h), 0);
  hist_obs w = obs(1.0f, 0.5f, 0.0f, 0.0f, 0, 0, 1);
  hist_update(&h, &w, &HP, NULL);
  assert_int_equal(hist_forgetting(&h), 1);
}

static void test_history_aum_is_mean_margin(void **state) {
  (void)state;
  const float m[] = {2.0f, -1.0f, 0.5f, -3.5f};
  hist_rec h;
  hist_init(&h);
  for (int i = 0; i < 4; i++) {
    hist_obs o = obs(1.0f, 0.5f, m[i], 1.0f, 0, 0, i);
    hist_update(&h, &o, &HP, NULL);
  }
  assert_near(h.aum, (2.0 - 1.0 + 0.5 - 3.5) / 4);
}

/* A value the library can report: losses in [0, FLT_MAX], margins in [-FLT_MAX, FLT_MAX] (both saturate),
 * p in [0, 1]; most of them at or near the ends of those ranges. */
static float extreme(uint64_t *x, float lo, float hi) {
  *x = *x * 6364136223846793005u + 1442695040888963407u;
  const uint64_t r = *x >> 33;
  switch (r % 6) {
  case 0: return lo;
  case 1: return hi;
  case 2: return 0.0f;
  case 3: return (r & 64) ? hi * 0.75f : lo * 0.75f;
  case 4: return (r & 64) ? nextafterf(hi, 0.0f) : nextafterf(lo, 0.0f);
  default: return (float)((double)lo + ((double)hi - lo) * (double)(r % 1001) / 1000.0);
  }
}

/* Every field stays finite, and each mean within rounding of the mean taken in double, whatever
 * sequence of reportable values a sample sees: margins of opposite signs near FLT_MAX among them. */
static void test_history_extreme_observations_stay_finite(void **state) {
  (void)state;
  uint64_t x = 7;
  for (int round = 0; round < 2000; round++) {
    hist_rec h;
    hist_init(&h);
    double margins = 0, losses = 0;
    const int n = 1 + round % 12;
    for (int i = 0; i < n; i++) {
      const float p = extreme(&x, 0.0f, 1.0f);
      hist_obs o = obs(extreme(&x, 0.0f, FLT_MAX), p, extreme(&x, -FLT_MAX, FLT_MAX), p >= 0.5f, 0, 0, i);
      o.el2n = extreme(&x, 0.0f, 1.5f);
      o.grad_norm = extreme(&x, 0.0f, FLT_MAX);
      hist_update(&h, &o, &HP, NULL);
      margins += o.margin;
      losses += o.loss;
      const float fields[] = {h.last_loss, h.mean_loss, h.max_loss, h.ema_loss, h.conf_mean, h.conf_m2, h.aum, h.el2n, h.grand};
      for (size_t f = 0; f < sizeof fields / sizeof *fields; f++) assert_true(isfinite(fields[f]));
      hist_view v;
      hist_view_of(&h, &v);
      for (int f = 0; f < HF_COUNT; f++) assert_true(isfinite(hist_view_value(&v, f)));
      /* each step rounds once or twice at the scale of the largest value seen: FLT_MAX at most */
      assert_true(fabs(h.aum - margins / (i + 1)) <= (i + 1) * 4.0 * FLT_EPSILON * FLT_MAX);
      assert_true(fabs(h.mean_loss - losses / (i + 1)) <= (i + 1) * 4.0 * FLT_EPSILON * FLT_MAX);
    }
  }
  /* the sequence that overflowed the update in float: the mean stays 0, not -inf and then NaN */
  hist_rec h;
  hist_init(&h);
  const float m[] = {FLT_MAX, -FLT_MAX, 0.0f, -FLT_MAX, FLT_MAX};
  const double want[] = {FLT_MAX, 0.0, 0.0, -FLT_MAX / 4, 0.0};
  for (int i = 0; i < 5; i++) {
    hist_obs o = obs(1.0f, 0.5f, m[i], 1.0f, 0, 0, i);
    hist_update(&h, &o, &HP, NULL);
    assert_true(fabs(h.aum - want[i]) <= 4.0 * FLT_EPSILON * FLT_MAX);
  }
}

static void test_history_unscored_observation_counts_only_loss(void **state) {
  (void)state;
  hist_rec h;
  hist_init(&h);
  hist_obs o = obs(3.0f, 0.9f, 1.0f, 1.0f, -1, -1, 5);
  o.scored = 0;
  hist_update(&h, &o, &HP, NULL);
  assert_int_equal(h.seen, 1);
  assert_int_equal(h.scored_n, 0);
  assert_near(h.mean_loss, 3.0);
  assert_near(hist_confidence(&h), 0.0);
  assert_near(hist_correctness(&h), 0.0);
}

static void test_history_label_issue_against_class_thresholds(void **state) {
  (void)state;
  double sum[3] = {0};
  uint64_t count[3] = {0};
  hist_classes cls = {3, sum, count};
  /* class 1's samples average p_1 = 0.8 */
  for (int i = 0; i < 4; i++) {
    hist_obs o = obs(0.1f, i % 2 ? 0.7f : 0.9f, 1.0f, 1.0f, 1, 1, i);
    hist_classes_observe(&cls, &o);
  }
  assert_near(sum[1] / (double)count[1], 0.8);
  /* labelled 0, predicted 1 with p_1 = 0.85 >= 0.8: a confident other-class observation, 1 of 1 */
  hist_rec h;
  hist_init(&h);
  hist_obs o = obs(2.0f, 0.1f, -2.0f, 0.0f, 0, 1, 9);
  o.p_max = 0.85f;
  hist_classes_observe(&cls, &o);
  hist_update(&h, &o, &HP, &cls);
  assert_int_equal(h.other_n, 1);
  assert_int_equal(h.other_class, 1);
  assert_near(hist_label_issue_score(&h), 1.0);
  /* predicted 1 with p_1 = 0.6 < 0.8: not confident, not counted, and other_class still names class 1 */
  o.p_max = 0.6f;
  hist_update(&h, &o, &HP, &cls);
  assert_int_equal(h.other_n, 1);
  assert_int_equal(h.other_class, 1);
  /* predicted 2 with p_2 = 0.5, while no observation labelled 2 has been seen: no threshold, not counted */
  hist_obs two = obs(2.0f, 0.1f, -2.0f, 0.0f, 0, 2, 9);
  two.p_max = 0.99f;
  hist_update(&h, &two, &HP, &cls);
  assert_int_equal(h.other_n, 1);
  assert_int_equal(h.other_class, 1);
  /* a correct prediction is never counted */
  hist_obs good = obs(0.1f, 0.95f, 2.0f, 1.0f, 1, 1, 10);
  hist_update(&h, &good, &HP, &cls);
  assert_int_equal(h.other_n, 1);
  assert_near(hist_label_issue_score(&h), 1.0 / 4.0);
  assert_near(hist_value(&h, HF_LABEL_ISSUE_SCORE), 1.0 / 4.0);
  /* without class thresholds (a run with no class labels yet) nothing is counted */
  hist_rec n;
  hist_init(&n);
  hist_update(&n, &o, &HP, NULL);
  assert_int_equal(n.other_n, 0);
  assert_int_equal(n.other_class, -1);
}

/* hist_li_echo: a cell is an echo when its reverse is systematic (at least HIST_LI_ECHO_SYSTEMATIC times the
 * flagged samples per off-diagonal cell, and at least HIST_LI_ECHO_MIN) and it is at most HIST_LI_ECHO_RATIO
 * times its reverse; each bound is checked on both sides */
static void test_history_label_issue_echo_bounds(void **state) {
  (void)state;
  /* 10 classes, 180 flagged: 2 per cell, so a systematic reverse holds at least 8 */
  assert_true(hist_li_echo(6, 8, 180, 10));
  assert_false(hist_li_echo(6, 7, 180, 10));   /* the reverse is not systematic */
  assert_true(hist_li_echo(1, 8, 180, 10));
  assert_false(hist_li_echo(0, 8, 180, 10));   /* an empty cell is nothing */
  assert_false(hist_li_echo(7, 8, 180, 10));   /* 7 > 0.8 * 8: a confusion made both ways */
  assert_true(hist_li_echo(8, 10, 180, 10));   /* 8 = 0.8 * 10 */
  assert_false(hist_li_echo(9, 10, 180, 10));
  assert_false(hist_li_echo(10, 10, 180, 10)); /* equal cells: neither is the other's echo */
  /* few flagged: the reverse must still hold HIST_LI_ECHO_MIN */
  assert_true(hist_li_echo(3, 5, 20, 10));
  assert_false(hist_li_echo(3, 4, 20, 10));
  /* 4 classes, 60 flagged: 5 per cell, a systematic reverse holds at least 20 */
  assert_true(hist_li_echo(16, 20, 60, 4));
  assert_false(hist_li_echo(15, 19, 60, 4));
  /* two classes: each cell holds at most the flagged samples, never four times the half of them */
  assert_false(hist_li_echo(1, 50, 51, 2));
  assert_false(hist_li_echo(1, 50, 51, 1));
  assert_false(hist_li_echo(1, 50, 51, 0));
}

/* label_issue's threshold: Otsu's split of the scores, at least the floor */
static void test_history_label_issue_threshold_is_otsu(void **state) {
  (void)state;
  uint64_t c[HIST_SCORE_BINS] = {0};
  /* nothing scored, or every score alike: no split, nothing flagged */
  assert_true(hist_label_issue_threshold(c) > 1.0f);
  c[0] = 100;
  assert_true(hist_label_issue_threshold(c) > 1.0f);
  /* many clean samples confused now and then (0.25) and one always (1.0): only the one */
  c[0] = 4;
  c[hist_score_bin(0.25f)] = 6;
  c[hist_score_bin(1.0f)] = 1;
  float t = hist_label_issue_threshold(c);
  assert_true(t > 0.25f && t <= 1.0f);
  /* a model that confuses nothing but one sample early: a low split, raised to the floor */
  memset(c, 0, sizeof c);
  c[0] = 10;
  c[hist_score_bin(0.25f)] = 1;
  assert_near(hist_label_issue_threshold(c), HIST_LABEL_ISSUE_FLOOR);
  /* two clusters: the split falls between them, the result of the brute-force search over splits */
  memset(c, 0, sizeof c);
  for (int b = 0; b <= 10; b++) c[b] = 50;
  for (int b = 60; b <= 90; b++) c[b] = 3;
  t = hist_label_issue_threshold(c);
  assert_true(t > 0.10f && t <= 0.60f);
  double best = -1;
  int arg = -1;
  for (int s = 1; s < HIST_SCORE_BINS; s++) {
    double w0 = 0, w1 = 0, s0 = 0, s1 = 0;
    for (int b = 0; b < HIST_SCORE_BINS; b++) {
      if (b < s) w0 += (double)c[b], s0 += (double)c[b] * b;
      else w1 += (double)c[b], s1 += (double)c[b] * b;
    }
    if (w0 == 0 || w1 == 0) continue;
    double v = w0 * w1 * (s0 / w0 - s1 / w1) * (s0 / w0 - s1 / w1);
    if (v > best) best = v, arg = s;
  }
  assert_near(t, arg / 100.0);
  /* the bins */
  assert_int_equal(hist_score_bin(0.0f), 0);
  assert_int_equal(hist_score_bin(-1.0f), 0);
  assert_int_equal(hist_score_bin(NAN), 0);
  assert_int_equal(hist_score_bin(0.5f), 50);
  assert_int_equal(hist_score_bin(1.0f), 100);
  assert_int_equal(hist_score_bin(2.0f), 100);
}

/* counts[b] of n samples from a normal distribution (mean m, sd sd), binned as hist_conf_bin bins them */
static void add_normal(uint64_t counts[HIST_CONF_BINS], double n, double m, double sd) {
  const double step = 1.0 / (HIST_CONF_BINS - 1);
  for (int b = 0; b < HIST_CONF_BINS; b++) {
    const double x = b * step;
    counts[b] += (uint64_t)floor(n * step * exp(-0.5 * (x - m) * (x - m) / (sd * sd)) / (sd * sqrt(2 * M_PI)) + 0.5);
  }
}

/* The samples of the bins below m1 where component 0's weighted density is above component 1's: what the
 * mixture marks when it recovers the components counts was drawn from. */
static uint64_t marked_by(const uint64_t counts[HIST_CONF_BINS], double n0, double m0, double sd0, double n1, double m1,
                          double sd1) {
  uint64_t marked = 0;
  for (int b = 0; b < HIST_CONF_BINS; b++) {
    const double x = b / (double)(HIST_CONF_BINS - 1);
    const double d0 = n0 / sd0 * exp(-0.5 * (x - m0) * (x - m0) / (sd0 * sd0));
    const double d1 = n1 / sd1 * exp(-0.5 * (x - m1) * (x - m1) / (sd1 * sd1));
    if (d0 > d1 && x < m1) marked += counts[b];
  }
  return marked;
}

/* label_issue's second estimate: a two-component mixture fitted to the confidences */
static void test_history_confidence_mixture_finds_the_lower_group(void **state) {
  (void)state;
  static uint64_t c[HIST_CONF_BINS];
  uint8_t low[HIST_CONF_BINS];
  /* nothing, or one value only: no mixture, nothing marked */
  memset(c, 0, sizeof c);
  assert_int_equal(hist_confidence_mixture(c, low), 0);
  c[hist_conf_bin(0.7f)] = 500;
  assert_int_equal(hist_confidence_mixture(c, low), 0);
  for (int b = 0; b < HIST_CONF_BINS; b++) assert_int_equal(low[b], 0);
  /* 9000 clean samples near 0.85 and 1000 with wrong labels near 0.15: those 1000, split where the
   * densities cross, and a contiguous run of bins from the bottom */
  memset(c, 0, sizeof c);
  add_normal(c, 9000, 0.85, 0.06);
  add_normal(c, 1000, 0.15, 0.08);
  uint64_t n = hist_confidence_mixture(c, low);
  uint64_t want = marked_by(c, 1000, 0.15, 0.08, 9000, 0.85, 0.06);
  assert_true(want >= 950 && want <= 1010); /* 1000 drawn, less what rounds to no sample in the tails */
  assert_true(n + 5 >= want && n <= want + 5);
  int b = 0;
  while (b < HIST_CONF_BINS && low[b]) b++;
  for (int k = b; k < HIST_CONF_BINS; k++) assert_int_equal(low[k], 0);
  assert_true(b > hist_conf_bin(0.35f) && b < hist_conf_bin(0.75f));
  /* one group only: the mixture cuts it in two, many candidates (which the rule's agreement check turns away) */
  memset(c, 0, sizeof c);
  add_normal(c, 10000, 0.8, 0.05);
  n = hist_confidence_mixture(c, low);
  assert_true(n > 2000 && n < 8000);
  /* the lower group the larger, and wider: the components keep their order by mean */
  memset(c, 0, sizeof c);
  add_normal(c, 7000, 0.30, 0.12);
  add_normal(c, 3000, 0.92, 0.03);
  n = hist_confidence_mixture(c, low);
  want = marked_by(c, 7000, 0.30, 0.12, 3000, 0.92, 0.03);
  assert_true(want >= 6800 && want <= 7100);
  assert_true(n + 10 >= want && n <= want + 10);
  assert_int_equal(low[hist_conf_bin(0.3f)], 1);
  assert_int_equal(low[hist_conf_bin(0.95f)], 0);
  assert_int_equal(low[HIST_CONF_BINS - 1], 0); /* a wide lower component does not take the top */
  /* the bins: rounded to the nearest thousandth, clamped */
  assert_int_equal(hist_conf_bin(NAN), 0);
  assert_int_equal(hist_conf_bin(-0.5f), 0);
  assert_int_equal(hist_conf_bin(0.0004f), 0);
  assert_int_equal(hist_conf_bin(0.0006f), 1);
  assert_int_equal(hist_conf_bin(0.5f), 500);
  assert_int_equal(hist_conf_bin(1.0f), HIST_CONF_BINS - 1);
  assert_int_equal(hist_conf_bin(3.0f), HIST_CONF_BINS - 1);
}

/* The run's rule takes the mixture only when it agrees with the threshold on how many labels are wrong. */
static void test_history_label_issue_rule_takes_the_mixture_when_they_agree(void **state) {
  (void)state;
  static uint64_t conf[HIST_CONF_BINS];
  uint64_t scores[HIST_SCORE_BINS] = {0};
  hist_li_rule rule;
  memset(conf, 0, sizeof conf);
  add_normal(conf, 9000, 0.85, 0.06);
  add_normal(conf, 1000, 0.15, 0.08);
  uint8_t low[HIST_CONF_BINS];
  const uint64_t candidates = hist_confidence_mixture(conf, low);
  /* the threshold flags as many: the mixture decides, by confidence, whatever the score */
  scores[hist_score_bin(0.05f)] = 10000 - candidates;
  scores[hist_score_bin(0.8f)] = candidates;
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_true(rule.threshold > 0.05f && rule.threshold <= 0.8f);
  assert_int_equal(rule.by_confidence, 1);
  assert_memory_equal(rule.low, low, sizeof low);
  assert_true(hist_li_flagged(&rule, 0.0f, 0.15f));
  assert_false(hist_li_flagged(&rule, 1.0f, 0.85f));
  /* up to HIST_LABEL_ISSUE_AGREE times as many candidates as flagged: still the mixture; more: the threshold */
  const uint64_t fewest = (uint64_t)ceil((double)candidates / HIST_LABEL_ISSUE_AGREE);
  memset(scores, 0, sizeof scores);
  scores[0] = 10000 - fewest;
  scores[hist_score_bin(0.8f)] = fewest;
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_int_equal(rule.by_confidence, 1);
  scores[0]++;
  scores[hist_score_bin(0.8f)]--;
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_int_equal(rule.by_confidence, 0);
  assert_true(hist_li_flagged(&rule, 0.8f, 0.99f));
  assert_false(hist_li_flagged(&rule, 0.0f, 0.01f));
  /* the threshold flags nothing: neither does the mixture */
  memset(scores, 0, sizeof scores);
  scores[0] = 10000;
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_int_equal(rule.by_confidence, 0);
  assert_true(rule.threshold > 1.0f);
  assert_false(hist_li_flagged(&rule, 1.0f, 0.01f));
}

/* early_label_issue_score: the share of the first `early` scored observations that named another class
 * confidently; a row that did not count them from its first (written before schema 10) never starts and
 * falls back to label_issue_score */
static void test_history_early_label_issue_score(void **state) {
  (void)state;
  double sum[2] = {0};
  uint64_t count[2] = {0};
  hist_classes cls = {2, sum, count};
  hist_obs one = obs(0.1f, 0.8f, 1.0f, 1.0f, 1, 1, 0);
  hist_classes_observe(&cls, &one); /* class 1's threshold: 0.8 */
  const hist_params hp = {0.3, 3};
  hist_obs other = obs(2.0f, 0.1f, -2.0f, 0.0f, 0, 1, 1); /* labelled 0, named 1 with p 0.9 */
  other.p_max = 0.9f;
  hist_obs right = obs(0.1f, 0.9f, 2.0f, 1.0f, 0, 0, 2);
  hist_obs blank = obs(1.0f, 0.5f, 0.0f, 0.0f, 0, 1, 3);
  blank.scored = 0;
  hist_rec h;
  hist_init(&h);
  assert_int_equal(h.early_n, 0);
  assert_near(hist_early_label_issue_score(&h), 0.0);
  /* an observation that scored nothing is not one of the first scored */
  hist_update(&h, &blank, &hp, &cls);
  assert_int_equal(h.early_n, 0);
  hist_update(&h, &other, &hp, &cls);
  hist_update(&h, &right, &hp, &cls);
  hist_update(&h, &other, &hp, &cls);
  /* the window is full: what follows counts in the whole history only */
  for (int i = 0; i < 5; i++) hist_update(&h, &right, &hp, &cls);
  hist_update(&h, &other, &hp, &cls);
  assert_int_equal(h.early_n, 3);
  assert_int_equal(h.early_other_n, 2);
  assert_int_equal(h.other_n, 3);
  assert_near(hist_early_label_issue_score(&h), 2.0 / 3.0);
  assert_near(hist_value(&h, HF_EARLY_LABEL_ISSUE_SCORE), 2.0 / 3.0);
  assert_near(hist_label_issue_score(&h), 3.0 / 9.0);
  hist_view v;
  hist_view_of(&h, &v);
  assert_near(v.early_label_issue_score, 2.0 / 3.0);
  assert_near(hist_view_value(&v, HF_EARLY_LABEL_ISSUE_SCORE), 2.0 / 3.0);
  assert_near(v.label_issue_score, 3.0 / 9.0);
  /* not counted from the first: stays so, and the whole history's score stands in */
  hist_rec old;
  hist_init(&old);
  old.early_n = HIST_EARLY_UNKNOWN;
  hist_update(&old, &other, &hp, &cls);
  hist_update(&old, &right, &hp, &cls);
  assert_int_equal(old.early_n, HIST_EARLY_UNKNOWN);
  assert_int_equal(old.early_other_n, 0);
  assert_near(hist_early_label_issue_score(&old), 0.5);
  /* the largest window stops one short of the marker */
  hist_rec big;
  hist_init(&big);
  big.early_n = HIST_EARLY_UNKNOWN - 2;
  big.early_other_n = 0;
  const hist_params most = {0.3, 65535};
  hist_update(&big, &right, &most, &cls);
  assert_int_equal(big.early_n, HIST_EARLY_UNKNOWN - 1);
  hist_update(&big, &right, &most, &cls);
  assert_int_equal(big.early_n, HIST_EARLY_UNKNOWN - 1);
}

/* A run has fitted its labels when at least HIST_LI_FITTED of its scored samples were last predicted as
 * labelled; its rule then names the early score, and flags none below HIST_LI_EARLY_FLOOR. */
static void test_history_label_issue_fitted_run(void **state) {
  (void)state;
  assert_true(hist_li_fitted(97, 100));
  assert_false(hist_li_fitted(96, 100));
  assert_true(hist_li_fitted(1, 1));
  assert_false(hist_li_fitted(0, 0));
  static uint64_t conf[HIST_CONF_BINS];
  uint64_t scores[HIST_SCORE_BINS] = {0};
  memset(conf, 0, sizeof conf);
  conf[hist_conf_bin(0.9f)] = 100;
  scores[0] = 90;
  scores[hist_score_bin(0.6f)] = 10;
  hist_li_rule rule;
  hist_label_issue_rule(scores, conf, 1, &rule);
  assert_int_equal(rule.early, 1);
  assert_true(rule.threshold >= (float)HIST_LI_EARLY_FLOOR && rule.threshold <= 0.6f);
  assert_true(hist_li_flagged(&rule, 0.6f, 0.9f));
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_int_equal(rule.early, 0);
  /* a group at 0.3: split there from the whole history's scores, but below the early floor */
  memset(scores, 0, sizeof scores);
  scores[0] = 90;
  scores[hist_score_bin(0.3f)] = 10;
  hist_label_issue_rule(scores, conf, 0, &rule);
  assert_true(hist_li_flagged(&rule, 0.3f, 0.9f));
  hist_label_issue_rule(scores, conf, 1, &rule);
  assert_near(rule.threshold, HIST_LI_EARLY_FLOOR);
  assert_false(hist_li_flagged(&rule, 0.5f, 0.9f)); /* half is not most */
  assert_true(hist_li_flagged(&rule, 0.51f, 0.9f));
  assert_true(hist_li_flagged(&rule, 4.0f / 7.0f, 0.9f));
}

/* el2n: the mean over the first `early` observations that carry one (Paul et al.: early in training) */
static void test_history_el2n_is_early_mean(void **state) {
  (void)state;
  hist_params hp = {0.3, 3};
  hist_rec h;
  hist_init(&h);
  const float v[] = {NAN, 0.9f, 0.6f, 0.3f, 0.0f, 0.0f};
  for (int i = 0; i < 6; i++) {
    hist_obs o = obs(1.0f, 0.5f, 0.0f, 1.0f, 0, 0, i);
    o.el2n = v[i];
    hist_update(&h, &o, &hp, NULL);
  }
  /* the NaN (a batch logged before el2n was kept) does not count; then 0.9, 0.6, 0.3, and no more */
  assert_int_equal(h.el2n_n, 3);
  assert_near(h.el2n, 0.6);
  assert_near(hist_value(&h, HF_EL2N), 0.6);
  /* an observation that scored nothing has no el2n */
  hist_init(&h);
  hist_obs u = obs(1.0f, 0.5f, 0.0f, 0.0f, 0, 0, 0);
  u.scored = 0;
  u.el2n = 0.5f;
  hist_update(&h, &u, &hp, NULL);
  assert_int_equal(h.el2n_n, 0);
}

static void test_history_recent_ring_keeps_newest(void **state) {
  (void)state;
  hist_recent ring[HIST_RECENT];
  uint8_t head = 0, count = 0;
  for (int i = 0; i < 6; i++) {
    hist_obs o = obs((float)i, 0.25f * (float)(i % 4), 0.0f, i % 2 ? 1.0f : 0.0f, 0, 0, 10 * i);
    hist_recent_push(ring, &head, &count, &o);
  }
  assert_int_equal(count, HIST_RECENT);
  /* newest is step 50 at head - 1 */
  const hist_recent *newest = &ring[(head + HIST_RECENT - 1) % HIST_RECENT];
  int64_t step, epoch;
  assert_true(hist_recent_step(newest, &step));
  assert_int_equal(step, 50);
  assert_false(hist_recent_epoch(newest, &epoch)); /* these observations had no epoch */
  assert_near(newest->loss, 5.0);
  assert_true(signbit(newest->p_t_signed)); /* correct */
  const hist_recent *oldest = &ring[head % HIST_RECENT];
  assert_true(hist_recent_step(oldest, &step));
  assert_int_equal(step, 20);
  assert_false(signbit(oldest->p_t_signed));
  /* the largest step and epoch fit */
  hist_obs e = obs(1.0f, 0.5f, 0.0f, 1.0f, 0, 0, HIST_STEP_MAX);
  e.has_epoch = 1;
  e.epoch = HIST_EPOCH_MAX;
  hist_recent_push(ring, &head, &count, &e);
  const hist_recent *last = &ring[(head + HIST_RECENT - 1) % HIST_RECENT];
  assert_true(hist_recent_step(last, &step) && step == HIST_STEP_MAX);
  assert_true(hist_recent_epoch(last, &epoch) && epoch == HIST_EPOCH_MAX);
}

static void test_history_field_names_and_order(void **state) {
  (void)state;
  for (int f = 0; f < HF_COUNT; f++) assert_int_equal(hist_field_parse(hist_field_name((hist_field)f)), f);
  assert_int_equal(hist_field_parse("loss"), -1);
  assert_true(hist_field_descending(HF_MEAN_LOSS));
  assert_false(hist_field_descending(HF_AUM));
  assert_false(hist_field_descending(HF_CONFIDENCE));
  assert_true(hist_field_descending(HF_FORGETTING_EVENTS));
  assert_true(hist_field_descending(HF_EARLY_LABEL_ISSUE_SCORE));
  /* the list messages quote is every name, in order */
  char joined[512] = "";
  for (int f = 0; f < HF_COUNT; f++) {
    if (f) strcat(joined, ", ");
    strcat(joined, hist_field_name((hist_field)f));
  }
  assert_string_equal(joined, hist_field_list);
  /* order: the field's own unless asked */
  assert_int_equal(hist_order_parse("asc"), HIST_ORDER_ASC);
  assert_int_equal(hist_order_parse("desc"), HIST_ORDER_DESC);
  assert_int_equal(hist_order_parse("ASC"), -1);
  assert_int_equal(hist_order_parse(""), -1);
  for (int f = 0; f < HF_COUNT; f++) {
    assert_int_equal(hist_order_desc((hist_field)f, HIST_ORDER_DEFAULT), hist_field_descending((hist_field)f));
    assert_true(hist_order_desc((hist_field)f, HIST_ORDER_DESC));
    assert_false(hist_order_desc((hist_field)f, HIST_ORDER_ASC));
  }
}

/* Observation i of a series test: loss i, p_t i / 1000, at step 1000 + i. */
static hist_obs series_obs(uint32_t i) {
  hist_obs o = {.loss = (float)i, .p_t = (float)i / 1000.0f, .scored = 1, .has_step = 1, .step = 1000 + (int64_t)i,
                .label = 0, .pred = 0};
  return o;
}

/* The stride a series of cap points has after n observations: the least power of two giving at most cap points. */
static uint64_t expected_stride(uint32_t n, int cap) {
  uint64_t s = 1;
  while ((n + s - 1) / s > (uint64_t)cap) s *= 2;
  return s;
}

/* For every cap from 1 to 9 and 16, after each of 300 observations: the points are observations 0, s, 2s, ...
 * below the count, s the least power of two that keeps at most cap of them; the first is always kept. */
static void test_history_series_keeps_first_and_even_spacing(void **state) {
  (void)state;
  static const int caps[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 16};
  for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
    const int cap = caps[c];
    hist_point pts[16];
    uint32_t count = 0;
    uint8_t shift = 0;
    for (uint32_t n = 1; n <= 300; n++) {
      hist_obs o = series_obs(n - 1);
      hist_series_push(pts, cap, &count, &shift, &o);
      assert_int_equal(count, n);
      const uint64_t s = expected_stride(n, cap);
      assert_int_equal((uint64_t)1 << shift, s);
      const uint32_t len = hist_series_len(count, shift);
      assert_int_equal(len, (n + s - 1) / s);
      assert_true(len >= 1 && len <= (uint32_t)cap);
      for (uint32_t j = 0; j < len; j++) {
        assert_true(pts[j].loss == (float)(j * s));
        assert_int_equal(pts[j].step, 1000 + j * s);
      }
    }
  }
}

/* A cap of 0 keeps nothing and counts nothing. */
static void test_history_series_cap_zero_keeps_nothing(void **state) {
  (void)state;
  uint32_t count = 0;
  uint8_t shift = 0;
  hist_obs o = series_obs(0);
  for (int i = 0; i < 10; i++) hist_series_push(NULL, 0, &count, &shift, &o);
  assert_int_equal(count, 0);
  assert_int_equal(hist_series_len(count, shift), 0);
}

/* An observation with nothing scored has no p_t (NaN); a step that is missing, or past 32 bits, is none. */
static void test_history_series_point_fields(void **state) {
  (void)state;
  hist_point pts[4];
  uint32_t count = 0;
  uint8_t shift = 0;
  hist_obs o = series_obs(0);
  o.scored = 0;
  hist_series_push(pts, 4, &count, &shift, &o);
  o = series_obs(1);
  o.has_step = 0;
  hist_series_push(pts, 4, &count, &shift, &o);
  o = series_obs(2);
  o.step = (int64_t)UINT32_MAX;
  hist_series_push(pts, 4, &count, &shift, &o);
  o.step = (int64_t)UINT32_MAX - 1;
  hist_series_push(pts, 4, &count, &shift, &o);
  assert_true(isnan(pts[0].p_t));
  assert_int_equal(pts[0].step, 1000);
  assert_int_equal(pts[1].step, HIST_POINT_NO_STEP);
  assert_int_equal(pts[2].step, HIST_POINT_NO_STEP);
  assert_int_equal(pts[3].step, UINT32_MAX - 1);
}

/* A series fitted to a smaller cap is the series that cap keeps, for every count up to 200. */
static void test_history_series_fit_equals_smaller_cap(void **state) {
  (void)state;
  for (int small = 1; small <= 16; small++) {
    hist_point big[16], fitted[16], direct[16];
    uint32_t nb = 0, nd = 0;
    uint8_t sb = 0, sd = 0;
    for (uint32_t i = 0; i < 200; i++) {
      hist_obs o = series_obs(i);
      hist_series_push(big, 16, &nb, &sb, &o);
      hist_series_push(direct, small, &nd, &sd, &o);
      uint8_t sf = sb;
      hist_series_fit(fitted, small, big, nb, &sf);
      assert_int_equal(sf, sd);
      const uint32_t len = hist_series_len(nd, sd);
      assert_int_equal(hist_series_len(nb, sf), len);
      assert_memory_equal(fitted, direct, len * sizeof *direct);
    }
  }
}

/* The stored form reads back exactly; sizes that do not match, counts past seen, points past the room and
 * a stride larger than the count needs are refused. */
static void test_history_series_pack_round_trip(void **state) {
  (void)state;
  hist_point pts[5], back[8];
  uint32_t count = 0, c2;
  uint8_t shift = 0, s2;
  for (uint32_t i = 0; i < 37; i++) {
    hist_obs o = series_obs(i);
    o.scored = i % 3 != 0;
    hist_series_push(pts, 5, &count, &shift, &o);
  }
  unsigned char buf[HIST_SERIES_HEAD + 5 * HIST_POINT_BYTES + 1];
  const size_t n = hist_series_pack(buf, pts, count, shift);
  assert_int_equal(n, HIST_SERIES_HEAD + hist_series_len(count, shift) * HIST_POINT_BYTES);
  assert_int_equal(buf[0], shift);
  assert_int_equal(buf[1], 37); /* little-endian */
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, n, 37), 0);
  assert_int_equal(c2, count);
  assert_int_equal(s2, shift);
  assert_memory_equal(back, pts, hist_series_len(count, shift) * sizeof *pts);
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, n - 1, 37), -1);
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, n, 36), -1);       /* more than seen */
  assert_int_equal(hist_series_unpack(back, 4, &c2, &s2, buf, n, 37), -1);       /* no room */
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, 2, 37), -1);       /* no head */
  /* one observation with stride 2: no cap doubles the stride of a series that is not full */
  const size_t one = hist_series_pack(buf, pts, 1, 1);
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, one, 37), -1);
  buf[0] = 0;
  assert_int_equal(hist_series_unpack(back, 8, &c2, &s2, buf, one, 37), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_history_losses_and_ema),
      cmocka_unit_test(test_history_cartography),
      cmocka_unit_test(test_history_forgetting_counts_correct_to_incorrect),
      cmocka_unit_test(test_history_forgetting_never_learned_ranks_first),
      cmocka_unit_test(test_history_aum_is_mean_margin),
      cmocka_unit_test(test_history_extreme_observations_stay_finite),
      cmocka_unit_test(test_history_unscored_observation_counts_only_loss),
      cmocka_unit_test(test_history_label_issue_against_class_thresholds),
      cmocka_unit_test(test_history_label_issue_echo_bounds),
      cmocka_unit_test(test_history_el2n_is_early_mean),
      cmocka_unit_test(test_history_early_label_issue_score),
      cmocka_unit_test(test_history_label_issue_fitted_run),
      cmocka_unit_test(test_history_label_issue_threshold_is_otsu),
      cmocka_unit_test(test_history_confidence_mixture_finds_the_lower_group),
      cmocka_unit_test(test_history_label_issue_rule_takes_the_mixture_when_they_agree),
      cmocka_unit_test(test_history_recent_ring_keeps_newest),
      cmocka_unit_test(test_history_field_names_and_order),
      cmocka_unit_test(test_history_series_keeps_first_and_even_spacing),
      cmocka_unit_test(test_history_series_cap_zero_keeps_nothing),
      cmocka_unit_test(test_history_series_point_fields),
      cmocka_unit_test(test_history_series_fit_equals_smaller_cap),
      cmocka_unit_test(test_history_series_pack_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
