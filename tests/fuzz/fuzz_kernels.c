/* fuzz_kernels.c — libFuzzer target: fl_eval on small batches built from the input, held to the library's contract.
 *
 * The input is read as a recipe (see build_case): the loss, profile, reduction
 * and input kind, which outputs to ask for, the shape (n <= 6, m <= 20,
 * c <= 20, enough for every traversal and every vector width), the parameters
 * and then one element at a time, and last whether to set a pos_weight and
 * its entries (appended after everything else, so that every input written
 * before it decodes as it did: past the end every byte reads 0, no
 * pos_weight). Most bytes pick from tables of meaningful
 * values (0, 1, the clamp bounds, FLT_MAX, subnormals, NaN); a byte of 0xf0 or
 * more takes the next four bytes as a raw float instead, so every bit pattern
 * stays reachable.
 *
 * Each case is evaluated on every instruction-set variant the CPU has, and
 * checked against:
 *   - an independent statement of what is valid: fl_eval returns 0 exactly
 *     for valid input, and an error names an element that really is invalid;
 *   - the outputs' ranges: finite losses (>= 0 where the math says so),
 *     finite gradients, a gradient norm equal to the gradient's norm, scores
 *     within their bounds, and nothing written for an empty batch;
 *   - the other variants (the same results within rounding);
 *   - float64 references: gamma = 0 sigmoid focal and binary_cross_entropy are
 *     alpha-weighted binary cross-entropy, gamma = 0 softmax focal and
 *     cross_entropy are cross-entropy;
 *   - the focal losses: cross_entropy and binary_cross_entropy give the focal
 *     loss's outputs at gamma 0 bit for bit;
 *   - itself: class-index labels and the equivalent one-hot targets give the
 *     same loss and gradient (they take different traversals), and the mean,
 *     positives and mean_elements reductions are the sum divided by the
 *     documented count.
 * A failed check prints the case and aborts, which libFuzzer reports as a crash.
 */
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "focal.h"
#include "fuzz_reader.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NMAX 6
#define MMAX 20
#define CMAX 20

/* Relative and absolute tolerances for comparing two float32 evaluations of the
 * same quantity: the kernels' exp/log are accurate to 3e-7 and a sample sums at
 * most MMAX * CMAX elements in float lanes, so 1e-4 leaves a wide margin. */
#define REL_TOL 1e-4
#define ABS_TOL 1e-5

/* ------------------------------------------------------------------ reading the input */

static uint32_t rd_u32(rd *r) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)rd_u8(r) << (8 * i);
  return v;
}

static float rd_f32(rd *r) {
  uint32_t u = rd_u32(r);
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* A value from table t[0..n), or a raw float for bytes >= 0xf0. */
static float pick(rd *r, const float *t, int n) {
  uint8_t b = rd_u8(r);
  if (b >= 0xf0) return rd_f32(r);
  return t[b % n];
}

static const float logit_table[] = {0.0f,    1.0f,   -1.0f,    2.0f,      -2.0f,     0.5f,     -0.5f,    3.0f,
                                    -3.0f,   10.0f,  -10.0f,   20.0f,     -20.0f,    88.0f,    -88.0f,   100.0f,
                                    -100.0f, 1e4f,   -1e4f,    1e30f,     -1e30f,    FLT_MAX,  -FLT_MAX, 1e-30f,
                                    1e-40f,  -0.0f,  INFINITY, -INFINITY, NAN,       18.6f,    -18.6f,   0.51f};
static const float prob_table[] = {0.0f, 1.0f,  0.5f,  0.25f, 0.75f,       0.1f,     0.9f,  1e-7f,  1.0f - 1e-7f, 1e-8f,
                                   1e-40f, 1e-44f, 1e-30f, 0.99f, 0.01f, 1.0f - 6e-8f, 1.0000001f, -1e-8f, NAN, 0.2f};
static const float target_table[] = {0.0f, 1.0f, 0.0f, 1.0f, 0.5f, 0.25f, 0.9f, 1e-7f, 1.0f - 1e-7f, 1.5f, -0.25f, NAN};
static const float weight_table[] = {1.0f, 1.0f, 0.0f, 0.5f, 2.0f, 1e-30f, 1e6f, 1e30f, -1.0f, INFINITY, NAN, 3.0f};
static const float alpha_table[] = {0.25f, 0.0f, 0.5f, 1.0f, 0.75f, 0.1f, 1.5f, -0.1f};
static const float pos_weight_table[] = {1.0f, 2.0f, 0.0f, 0.5f, 10.0f, 1e4f, 1e30f, FLT_MAX, 1e-30f, -1.0f, INFINITY, NAN};

/* ------------------------------------------------------------------ one case */

typedef struct fcase {
  fl_params p;
  int64_t n, m, c;
  int use_targets, use_weights, use_alpha_c, use_pos_weight;
  int want_grad, want_grad_norm, want_scores;
  fl_label_type lt;
  float x[NMAX * MMAX * CMAX];
  float t[NMAX * MMAX * CMAX];
  float w[NMAX * MMAX * CMAX];
  int64_t y[NMAX * MMAX];
  float alpha_c[CMAX];
  float pos_weight[CMAX];
  uint8_t y8[NMAX * MMAX];
  int32_t y32[NMAX * MMAX];
} fcase;

static int softmax_of(const fcase *k) {
  return fl_loss_is_softmax(k->p.loss);
}

static int64_t weight_count(const fcase *k) {
  return softmax_of(k) ? k->n * k->m : k->n * k->m * k->c;
}

/* The largest weight or pos_weight, at least 1: both scale a loss and its gradient. */
static float max_weight(const fcase *k) {
  float mw = 1.0f;
  if (k->use_weights)
    for (int64_t e = 0; e < weight_count(k); e++) mw = fmaxf(mw, k->w[e]);
  if (k->use_pos_weight)
    for (int64_t j = 0; j < k->c; j++) mw = fmaxf(mw, k->pos_weight[j]);
  return mw;
}

static void build_case(fcase *k, rd *r) {
  memset(k, 0, offsetof(fcase, x));
  fl_loss loss = (fl_loss)(rd_u8(r) % FL_LOSS_COUNT);
  fl_params_init(&k->p, loss);
  uint8_t pb = rd_u8(r);
  /* the plain focal losses take every profile; others only torchvision (anything else is FL_EUNSUPPORTED) */
  k->p.profile = (fl_profile)(pb % FL_PROFILE_COUNT);
  k->p.reduction = (fl_reduction)(rd_u8(r) % FL_REDUCTION_COUNT);
  k->p.input = (fl_input)(rd_u8(r) % FL_INPUT_COUNT);
  uint8_t f = rd_u8(r);
  k->use_targets = f & 1;
  k->use_weights = (f >> 1) & 1;
  k->use_alpha_c = (f >> 2) & 1;
  k->want_grad = (f >> 3) & 1;
  k->want_grad_norm = (f >> 4) & 1;
  k->want_scores = (f >> 5) & 1;
  k->lt = (fl_label_type)((f >> 6) % FL_LABEL_TYPE_COUNT);
  k->n = rd_u8(r) % (NMAX + 1);
  k->m = 1 + rd_u8(r) % MMAX;
  k->c = 1 + rd_u8(r) % CMAX;

  /* parameters: a byte each; 0 keeps the default */
  static const float gammas[] = {0, 0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 5.0f, 16.0f, 17.0f, 0.25f, -1.0f};
  static const float alphas[] = {0, -1.0f, 0.0f, 0.25f, 0.5f, 0.75f, 1.0f, 1.0001f};
  static const float epsilons[] = {0, -1.0f, -0.5f, 0.0f, 1.0f, 2.0f, -1.5f};
  static const float clips[] = {0, 0.0f, 0.05f, 0.5f, 0.99f, 1.0f};
  float v;
  if (rd_u8(r) % 2) {
    v = pick(r, gammas, (int)(sizeof gammas / sizeof *gammas));
    if (v != 0 || k->p.gamma == 0) k->p.gamma = v;
  }
  if (rd_u8(r) % 2) k->p.gamma = 0.0f; /* gamma = 0 is the reference case: make it easy to reach */
  if (rd_u8(r) % 2) k->p.alpha = pick(r, alphas + 1, (int)(sizeof alphas / sizeof *alphas) - 1);
  if (rd_u8(r) % 2) k->p.epsilon = pick(r, epsilons + 1, (int)(sizeof epsilons / sizeof *epsilons) - 1);
  if (rd_u8(r) % 2) k->p.gamma_pos = pick(r, gammas + 1, (int)(sizeof gammas / sizeof *gammas) - 1);
  if (rd_u8(r) % 2) k->p.gamma_neg = pick(r, gammas + 1, (int)(sizeof gammas / sizeof *gammas) - 1);
  if (rd_u8(r) % 2) k->p.clip = pick(r, clips + 1, (int)(sizeof clips / sizeof *clips) - 1);
  uint8_t ib = rd_u8(r);
  switch (ib % 8) {
  case 0: k->p.ignore_index = -1; break;
  case 1: k->p.ignore_index = 0; break;
  case 2: k->p.ignore_index = k->c; break;
  case 3: k->p.ignore_index = 255; break;
  case 4: k->p.ignore_index = -100; break; /* PyTorch's default */
  case 5: k->p.ignore_index = (int64_t)1 << 32; /* outside int32: matches no I32 or U8 label */ break;
  case 6: k->p.ignore_index = k->c - 1; break;
  default: k->p.ignore_index = (int64_t)((uint64_t)rd_u32(r) << 32 | rd_u32(r)); break;
  }
  if (k->use_alpha_c) {
    for (int64_t j = 0; j < k->c; j++) k->alpha_c[j] = pick(r, alpha_table, (int)(sizeof alpha_table / sizeof *alpha_table));
    k->p.alpha_c = k->alpha_c;
  }

  const int probs = k->p.input == FL_INPUT_PROBS;
  const int64_t ne = k->n * k->m * k->c, nr = k->n * k->m;
  for (int64_t e = 0; e < ne; e++) {
    uint8_t b = rd_u8(r);
    if (b >= 0xf0) k->x[e] = rd_f32(r);
    else if (b >= 0xa0) k->x[e] = probs ? (float)(b - 0xa0) / 79.0f : (float)((int)b - 0xc8) / 8.0f; /* a grid */
    else if (probs) k->x[e] = prob_table[b % (sizeof prob_table / sizeof *prob_table)];
    else k->x[e] = logit_table[b % (sizeof logit_table / sizeof *logit_table)];
  }
  if (k->use_targets) {
    for (int64_t e = 0; e < ne; e++) k->t[e] = pick(r, target_table, (int)(sizeof target_table / sizeof *target_table));
  } else {
    for (int64_t i = 0; i < nr; i++) {
      uint8_t b = rd_u8(r);
      int64_t y;
      if (b >= 0xf8) y = (int64_t)((uint64_t)rd_u32(r) << 32 | rd_u32(r));
      else if (b >= 0xf0) y = k->p.ignore_index;
      else y = (int64_t)(b % (k->c + 3)) - 1; /* -1 .. c + 1 */
      /* the label as its own type would carry it */
      switch (k->lt) {
      case FL_LABEL_U8: k->y8[i] = (uint8_t)y; y = k->y8[i]; break;
      case FL_LABEL_I32: k->y32[i] = (int32_t)y; y = k->y32[i]; break;
      default: break;
      }
      k->y[i] = y;
    }
  }
  if (k->use_weights)
    for (int64_t e = 0; e < weight_count(k); e++) k->w[e] = pick(r, weight_table, (int)(sizeof weight_table / sizeof *weight_table));
  /* the recipe's last part, appended after the others (see the file's header) */
  k->use_pos_weight = rd_u8(r) & 1;
  if (k->use_pos_weight) {
    for (int64_t j = 0; j < k->c; j++)
      k->pos_weight[j] = pick(r, pos_weight_table, (int)(sizeof pos_weight_table / sizeof *pos_weight_table));
    k->p.pos_weight = k->pos_weight;
  }
}

static const void *labels_of(const fcase *k) {
  switch (k->lt) {
  case FL_LABEL_U8: return k->y8;
  case FL_LABEL_I32: return k->y32;
  default: return k->y;
  }
}

static fl_batch batch_of(const fcase *k) {
  fl_batch b = {.n = k->n, .m = k->m, .c = k->c, .x = k->x, .label_type = k->lt};
  if (k->use_targets) b.targets = k->t;
  else b.labels = labels_of(k);
  if (k->use_weights) b.weights = k->w;
  return b;
}

/* ------------------------------------------------------------------ evaluation */

/* Outputs of one evaluation, each in its own allocation of exactly its size so
 * that AddressSanitizer sees any write past the tensor. */
typedef struct result {
  int rc;
  int64_t where;
  float *loss, *grad, *grad_norm;
  fl_score *scores;
} result;

static const float SENTINEL = -12345.0f;

/* A NaN with a payload: it survives the reductions' rescaling of the gradient. */
static float unwritten(void) {
  uint32_t u = 0x7fc0f0cdu;
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void eval(const fcase *k, const fl_params *p, const fl_batch *b, result *res) {
  const size_t n = (size_t)b->n, ne = (size_t)(b->n * b->m * b->c);
  res->loss = malloc((n ? n : 1) * sizeof *res->loss);
  res->grad = k->want_grad ? malloc((ne ? ne : 1) * sizeof *res->grad) : NULL;
  res->grad_norm = k->want_grad_norm ? malloc((n ? n : 1) * sizeof *res->grad_norm) : NULL;
  res->scores = k->want_scores ? malloc((n ? n : 1) * sizeof *res->scores) : NULL;
  /* every output is to be written: a sentinel left behind is an element fl_eval skipped */
  for (size_t i = 0; i < (n ? n : 1); i++) res->loss[i] = SENTINEL; /* n = 0: a write would change it */
  if (res->grad)
    for (size_t e = 0; e < ne; e++) res->grad[e] = unwritten();
  if (res->grad_norm)
    for (size_t i = 0; i < n; i++) res->grad_norm[i] = SENTINEL;
  if (res->scores)
    for (size_t i = 0; i < n; i++) res->scores[i] = (fl_score){.p_t = SENTINEL, .rows = -7};
  fl_out out = {.loss = res->loss, .grad = res->grad, .grad_norm = res->grad_norm, .scores = res->scores};
  res->where = -2;
  res->rc = fl_eval(&out, b, p, &res->where);
}

static void result_free(result *res) {
  free(res->loss);
  free(res->grad);
  free(res->grad_norm);
  free(res->scores);
}

/* ------------------------------------------------------------------ failure */

static const fcase *current;
static const char *current_isa = "auto";

static void dump_case(const fcase *k) {
  fprintf(stderr, "case: loss=%s profile=%s reduction=%s input=%s n=%" PRId64 " m=%" PRId64 " c=%" PRId64
                  " targets=%d weights=%d alpha_c=%d pos_weight=%d label_type=%d grad=%d grad_norm=%d scores=%d\n",
          fl_loss_name(k->p.loss), fl_profile_name(k->p.profile), fl_reduction_name(k->p.reduction),
          k->p.input == FL_INPUT_PROBS ? "probs" : "logits", k->n, k->m, k->c, k->use_targets, k->use_weights,
          k->use_alpha_c, k->use_pos_weight, (int)k->lt, k->want_grad, k->want_grad_norm, k->want_scores);
  fprintf(stderr, "params: gamma=%.9g alpha=%.9g epsilon=%.9g gamma_pos=%.9g gamma_neg=%.9g clip=%.9g ignore_index=%" PRId64 "\n",
          k->p.gamma, k->p.alpha, k->p.epsilon, k->p.gamma_pos, k->p.gamma_neg, k->p.clip, k->p.ignore_index);
  const int64_t ne = k->n * k->m * k->c;
  fprintf(stderr, "x:");
  for (int64_t e = 0; e < ne && e < 400; e++) fprintf(stderr, " %.9g", k->x[e]);
  fprintf(stderr, "\n");
  if (k->use_targets) {
    fprintf(stderr, "targets:");
    for (int64_t e = 0; e < ne && e < 400; e++) fprintf(stderr, " %.9g", k->t[e]);
  } else {
    fprintf(stderr, "labels:");
    for (int64_t i = 0; i < k->n * k->m; i++) fprintf(stderr, " %" PRId64, k->y[i]);
  }
  fprintf(stderr, "\n");
  if (k->use_weights) {
    fprintf(stderr, "weights:");
    for (int64_t e = 0; e < weight_count(k) && e < 400; e++) fprintf(stderr, " %.9g", k->w[e]);
    fprintf(stderr, "\n");
  }
  if (k->use_alpha_c) {
    fprintf(stderr, "alpha_c:");
    for (int64_t j = 0; j < k->c; j++) fprintf(stderr, " %.9g", k->alpha_c[j]);
    fprintf(stderr, "\n");
  }
  if (k->use_pos_weight) {
    fprintf(stderr, "pos_weight:");
    for (int64_t j = 0; j < k->c; j++) fprintf(stderr, " %.9g", k->pos_weight[j]);
    fprintf(stderr, "\n");
  }
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "\nfuzz_kernels: contract violated (isa %s): ", current_isa);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  if (current) dump_case(current);
  abort();
}

static int close_to(double a, double b, double rel, double abs_tol) {
  if (a == b) return 1; /* also equal infinities */
  if (!isfinite(a) || !isfinite(b)) return 0;
  return fabs(a - b) <= rel * fmax(fabs(a), fabs(b)) + abs_tol;
}

/* ------------------------------------------------------------------ what is valid */

/* What focal.h calls valid, stated independently of the kernels. */
static int x_ok(const fcase *k, float v) {
  return k->p.input == FL_INPUT_PROBS ? v >= 0.0f && v <= 1.0f : isfinite(v);
}

/* Whether label y is skipped: it equals ignore_index (which a label of a
 * narrower type can only equal when ignore_index fits that type). */
static int is_ignored(const fcase *k, int64_t y) {
  if (k->lt != FL_LABEL_I64 && (k->p.ignore_index < INT32_MIN || k->p.ignore_index > INT32_MAX)) return 0;
  return y == k->p.ignore_index;
}

/* Sigmoid labels run 0 .. c (c is background); softmax labels 0 .. c - 1. */
static int label_ok(const fcase *k, int64_t y) {
  return is_ignored(k, y) || (y >= 0 && (softmax_of(k) ? y < k->c : y <= k->c));
}

/* Inputs small enough that no float intermediate or per-lane sum can leave
 * float's range: the references and the cross-variant comparisons hold
 * exactly there. (Beyond it the library saturates, and where it saturates
 * depends on the vector width.) */
static int moderate(const fcase *k) {
  const int64_t ne = k->n * k->m * k->c;
  if (k->p.input == FL_INPUT_LOGITS)
    for (int64_t e = 0; e < ne; e++)
      if (fabsf(k->x[e]) > 1e6f) return 0;
  const int poly1 = k->p.loss == FL_POLY1_SIGMOID_FOCAL || k->p.loss == FL_POLY1_SOFTMAX_FOCAL;
  if (poly1 && fabsf(k->p.epsilon) > 1e6f) return 0;
  if (k->p.gamma > 1e3f || k->p.gamma_pos > 1e3f || k->p.gamma_neg > 1e3f) return 0;
  return max_weight(k) <= 1e6f;
}

/* Whether the true gradient is certain to fit in float: it is at most a
 * modest multiple of weight x (1 + gamma) x (1 + |epsilon|) (and ASL's capped
 * kink allows about 1e15 more). Beyond that an infinite gradient is an honest overflow. */
static int grads_bounded(const fcase *k) {
  const int poly1 = k->p.loss == FL_POLY1_SIGMOID_FOCAL || k->p.loss == FL_POLY1_SOFTMAX_FOCAL;
  double g = fmax(k->p.gamma, k->p.loss == FL_ASL ? fmax(k->p.gamma_pos, k->p.gamma_neg) : 0.0);
  double scale = (double)max_weight(k) * (1.0 + g) * (poly1 ? 1.0 + fabs(k->p.epsilon) : 1.0) * (k->p.loss == FL_ASL ? 1e15 : 1.0);
  return scale <= 1e30;
}

/* Whether every element of every tensor is valid (inputs of ignored rows included: they are checked too). */
static int data_valid(const fcase *k) {
  const int64_t ne = k->n * k->m * k->c;
  for (int64_t e = 0; e < ne; e++)
    if (!x_ok(k, k->x[e])) return 0;
  if (k->use_targets) {
    for (int64_t e = 0; e < ne; e++)
      if (!(k->t[e] >= 0.0f && k->t[e] <= 1.0f)) return 0;
  } else {
    for (int64_t i = 0; i < k->n * k->m; i++)
      if (!label_ok(k, k->y[i])) return 0;
  }
  if (k->use_weights)
    for (int64_t e = 0; e < weight_count(k); e++)
      if (!(k->w[e] >= 0.0f && isfinite(k->w[e]))) return 0;
  return 1;
}

/* The error fl_eval reported must name an element that is invalid. */
static void check_error(const fcase *k, const result *res, int params_rc) {
  const int64_t ne = k->n * k->m * k->c;
  switch (res->rc) {
  case FL_EINPUT:
  case FL_EPROB:
    if ((res->rc == FL_EPROB) != (k->p.input == FL_INPUT_PROBS)) fail("%s for the wrong input kind", fl_errname(res->rc));
    if (res->where < 0 || res->where >= ne) fail("%s at %" PRId64 ", outside x", fl_errname(res->rc), res->where);
    if (x_ok(k, k->x[res->where])) fail("%s at %" PRId64 " but x there is %.9g", fl_errname(res->rc), res->where, k->x[res->where]);
    break;
  case FL_ETARGET:
    if (!k->use_targets) fail("FL_ETARGET without targets");
    if (res->where < 0 || res->where >= ne) fail("FL_ETARGET at %" PRId64 ", outside targets", res->where);
    if (k->t[res->where] >= 0.0f && k->t[res->where] <= 1.0f) fail("FL_ETARGET at %" PRId64 " but the target is %.9g", res->where, k->t[res->where]);
    break;
  case FL_ELABEL:
    if (k->use_targets) fail("FL_ELABEL with targets");
    if (res->where < 0 || res->where >= k->n * k->m) fail("FL_ELABEL at %" PRId64 ", outside labels", res->where);
    if (label_ok(k, k->y[res->where])) fail("FL_ELABEL at %" PRId64 " but the label %" PRId64 " is valid", res->where, k->y[res->where]);
    break;
  case FL_EWEIGHT:
    if (!k->use_weights) fail("FL_EWEIGHT without weights");
    if (res->where < 0 || res->where >= weight_count(k)) fail("FL_EWEIGHT at %" PRId64 ", outside weights", res->where);
    if (k->w[res->where] >= 0.0f && isfinite(k->w[res->where])) fail("FL_EWEIGHT at %" PRId64 " but the weight is %.9g", res->where, k->w[res->where]);
    break;
  case FL_ESHAPE:
    if (!(softmax_of(k) && k->c < 2)) fail("FL_ESHAPE for a valid shape");
    break;
  default:
    if (res->rc != params_rc) fail("%s, but fl_params_check says %s", fl_errname(res->rc), fl_errname(params_rc));
    break;
  }
}

/* ------------------------------------------------------------------ output ranges */

/* Whether every element loss is >= 0: all losses except Poly-1 with a negative epsilon. */
static int loss_nonnegative(const fcase *k) {
  const int poly1 = k->p.loss == FL_POLY1_SIGMOID_FOCAL || k->p.loss == FL_POLY1_SOFTMAX_FOCAL;
  return !(poly1 && k->p.epsilon < 0.0f);
}

static void check_outputs(const fcase *k, const result *res) {
  const int64_t n = k->n, len = k->m * k->c;
  const int logits = k->p.input == FL_INPUT_LOGITS;
  const int bounded = grads_bounded(k);
  for (int64_t i = 0; i < n; i++) {
    float l = res->loss[i];
    if (l == SENTINEL) fail("loss[%" PRId64 "] was not written", i);
    if (!isfinite(l)) fail("loss[%" PRId64 "] = %.9g is not finite", i, l);
    if (loss_nonnegative(k) && l < 0.0f) fail("loss[%" PRId64 "] = %.9g < 0", i, l);
    double g2 = 0.0;
    if (res->grad) {
      for (int64_t e = 0; e < len; e++) {
        float g = res->grad[i * len + e];
        if (isnan(g)) fail("grad[%" PRId64 "] = %.9g: not written, or NaN", i * len + e, g);
        if (bounded && !isfinite(g)) fail("grad[%" PRId64 "] = %.9g is not finite", i * len + e, g);
        g2 += (double)g * g;
      }
    }
    if (res->grad_norm) {
      float gn = res->grad_norm[i];
      if (gn == SENTINEL) fail("grad_norm[%" PRId64 "] was not written", i);
      if (!isfinite(gn) || gn < 0.0f) fail("grad_norm[%" PRId64 "] = %.9g", i, gn);
      /* the norm is accumulated in float from squared entries: compare where those squares fit */
      if (res->grad && bounded && g2 < 1e30 && !close_to(gn, sqrt(g2), 1e-3, 1e-6))
        fail("grad_norm[%" PRId64 "] = %.9g but the gradient's norm is %.9g", i, gn, sqrt(g2));
    }
    if (res->scores) {
      const fl_score *s = &res->scores[i];
      if (s->rows == -7) fail("scores[%" PRId64 "] was not written", i);
      const float f[8] = {s->p_t, s->p_max, s->margin, s->norm_margin, s->entropy, s->cw_entropy, s->el2n, s->correct};
      for (int q = 0; q < 8; q++)
        if (!isfinite(f[q])) fail("score %d of sample %" PRId64 " is not finite", q, i);
      if (s->rows < 0 || s->rows > len) fail("scores[%" PRId64 "].rows = %d", i, s->rows);
      if (k->m > 1 && s->pred != -1) fail("scores[%" PRId64 "].pred = %d with m > 1", i, s->pred);
      if (s->rows == 0) {
        for (int q = 0; q < 8; q++)
          if (f[q] != 0.0f) fail("sample %" PRId64 " scored no rows but score %d is %.9g", i, q, f[q]);
        continue;
      }
      const float eps = 1e-5f;
      /* one predicted class per sample: for m == 1, except multi-label target rows (no single class) */
      const int multi_label = k->use_targets && !softmax_of(k) && k->c > 1;
      if (k->m == 1 && !multi_label && (s->pred < 0 || s->pred >= (k->c == 1 ? 2 : k->c)))
        fail("scores[%" PRId64 "].pred = %d", i, s->pred);
      if (multi_label && s->pred != -1) fail("scores[%" PRId64 "].pred = %d for multi-label rows", i, s->pred);
      if (!(s->p_t >= 0.0f && s->p_t <= 1.0f + eps)) fail("scores[%" PRId64 "].p_t = %.9g", i, s->p_t);
      if (!(s->p_max >= 0.0f && s->p_max <= 1.0f + eps)) fail("scores[%" PRId64 "].p_max = %.9g", i, s->p_max);
      if (!(s->correct >= 0.0f && s->correct <= 1.0f)) fail("scores[%" PRId64 "].correct = %.9g", i, s->correct);
      if (!(s->entropy >= -eps)) fail("scores[%" PRId64 "].entropy = %.9g", i, s->entropy);
      if (!(s->el2n >= 0.0f)) fail("scores[%" PRId64 "].el2n = %.9g", i, s->el2n);
      if (!(s->cw_entropy >= 0.0f)) fail("scores[%" PRId64 "].cw_entropy = %.9g", i, s->cw_entropy);
      /* probability rows need not sum to 1, so only logits bound these */
      if (logits || !softmax_of(k)) {
        if (!(s->norm_margin >= -eps && s->norm_margin <= 1.0f + eps)) fail("scores[%" PRId64 "].norm_margin = %.9g", i, s->norm_margin);
        if (!(s->entropy <= 1.0f + 1e-4f)) fail("scores[%" PRId64 "].entropy = %.9g > 1", i, s->entropy);
        if (!(s->el2n <= sqrtf((float)(k->c > 2 ? k->c : 2)) + 1e-4f)) fail("scores[%" PRId64 "].el2n = %.9g", i, s->el2n);
      }
    }
  }
}

/* ------------------------------------------------------------------ comparisons */

static void compare_results(const fcase *k, const result *a, const result *b, const char *what) {
  if ((a->rc == 0) != (b->rc == 0)) fail("%s: rc %s vs %s", what, fl_errname(a->rc), fl_errname(b->rc));
  if (a->rc != 0) return;
  const int64_t n = k->n, len = k->m * k->c;
  for (int64_t i = 0; i < n; i++) {
    /* near float's range the per-lane float sums saturate, at points that depend on the vector width */
    if (fmaxf(fabsf(a->loss[i]), fabsf(b->loss[i])) >= 1e30f) continue;
    if (!close_to(a->loss[i], b->loss[i], REL_TOL, ABS_TOL * (double)len))
      fail("%s: loss[%" PRId64 "] %.9g vs %.9g", what, i, a->loss[i], b->loss[i]);
  }
  /* gradients cancel (s - t for soft t): their absolute error scales with the weight and gamma */
  const double gtol = 1e-5 * max_weight(k) * (1.0 + fabs(k->p.gamma));
  if (a->grad && b->grad) {
    for (int64_t e = 0; e < n * len; e++)
      if (!close_to(a->grad[e], b->grad[e], 1e-3, gtol))
        fail("%s: grad[%" PRId64 "] %.9g vs %.9g", what, e, a->grad[e], b->grad[e]);
  }
  if (a->grad_norm && b->grad_norm) {
    for (int64_t i = 0; i < n; i++)
      if (!close_to(a->grad_norm[i], b->grad_norm[i], 1e-3, gtol * (double)len))
        fail("%s: grad_norm[%" PRId64 "] %.9g vs %.9g", what, i, a->grad_norm[i], b->grad_norm[i]);
  }
}

static void compare_scores(const fcase *k, const result *a, const result *b, const char *what) {
  if (a->rc != 0 || !a->scores || !b->scores) return;
  for (int64_t i = 0; i < k->n; i++) {
    const fl_score *s = &a->scores[i], *t = &b->scores[i];
    if (s->rows != t->rows) fail("%s: scores[%" PRId64 "].rows %d vs %d", what, i, s->rows, t->rows);
    const float fs[7] = {s->p_t, s->p_max, s->norm_margin, s->entropy, s->cw_entropy, s->el2n, s->margin};
    const float ft[7] = {t->p_t, t->p_max, t->norm_margin, t->entropy, t->cw_entropy, t->el2n, t->margin};
    for (int q = 0; q < 7; q++)
      if (!close_to(fs[q], ft[q], 1e-3, 1e-4)) fail("%s: score %d of sample %" PRId64 ": %.9g vs %.9g", what, q, i, fs[q], ft[q]);
    /* argmax ties are decided on the logits themselves: exact for logit input */
    if (k->p.input == FL_INPUT_LOGITS && (s->pred != t->pred || s->correct != t->correct))
      fail("%s: scores[%" PRId64 "] pred %d/%g vs %d/%g", what, i, s->pred, s->correct, t->pred, t->correct);
  }
}

/* ------------------------------------------------------------------ float64 references */

static double softplus(double z) {
  return fmax(z, 0.0) + log1p(exp(-fabs(z)));
}

static double alpha_class(const fcase *k, int64_t j) {
  if (k->use_alpha_c) return k->alpha_c[j];
  return k->p.alpha >= 0.0f ? k->p.alpha : 1.0;
}

/* The documented element count and positive count of sample i, for the reductions. */
static void counts(const fcase *k, int64_t i, int64_t *count, int64_t *npos) {
  const int64_t m = k->m, c = k->c;
  *count = *npos = 0;
  for (int64_t j = 0; j < m; j++) {
    const int64_t row = i * m + j;
    if (k->use_targets) {
      int any = 0;
      for (int64_t q = 0; q < c; q++) {
        int pos = k->t[row * c + q] > 0.0f;
        any |= pos;
        if (!softmax_of(k)) *npos += pos;
      }
      *count += softmax_of(k) ? 1 : c;
      if (softmax_of(k)) *npos += any;
    } else {
      int64_t y = k->y[row];
      if (is_ignored(k, y)) continue;
      *count += softmax_of(k) ? 1 : c;
      *npos += softmax_of(k) ? 1 : y < c;
    }
  }
}

static double reduce(const fcase *k, int64_t i, double sum) {
  int64_t count, npos;
  counts(k, i, &count, &npos);
  switch (k->p.reduction) {
  case FL_REDUCE_MEAN: return count > 0 ? sum / (double)count : 0.0;
  case FL_REDUCE_POSITIVES: return sum / (double)(npos > 1 ? npos : 1);
  case FL_REDUCE_MEAN_ELEMENTS: return sum / (double)(k->m * k->c); /* ignored positions count too */
  default: return sum;
  }
}

static double target_at(const fcase *k, int64_t row, int64_t j, int *live) {
  *live = 1;
  if (k->use_targets) return k->t[row * k->c + j];
  int64_t y = k->y[row];
  if (is_ignored(k, y)) *live = 0;
  return y == j ? 1.0 : 0.0;
}

/* gamma = 0 sigmoid focal: the alpha-weighted binary cross-entropy (kornia
 * weighs the two terms, the others the whole; identical for hard targets),
 * its positive term times pos_weight (torch's BCEWithLogitsLoss). */
static void check_bce_reference(const fcase *k, const result *res) {
  const int probs = k->p.input == FL_INPUT_PROBS;
  const int bce_loss = k->p.loss == FL_SIGMOID_FOCAL || k->p.loss == FL_BINARY_CROSS_ENTROPY;
  if (!bce_loss || k->p.gamma != 0.0f || k->p.profile == FL_PROFILE_KERAS || !moderate(k)) return;
  const int64_t m = k->m, c = k->c;
  for (int64_t i = 0; i < k->n; i++) {
    double sum = 0.0;
    for (int64_t j = 0; j < m; j++) {
      const int64_t row = i * m + j;
      for (int64_t q = 0; q < c; q++) {
        int live;
        const double t = target_at(k, row, q, &live);
        if (!live) continue;
        const int64_t e = row * c + q;
        const double x = k->x[e];
        double nlp, nln;
        if (probs) {
          nlp = fmin(-log(x), 100.0); /* log clamped at -100, as PyTorch's BCE */
          nln = fmin(-log1p(-x), 100.0);
        } else {
          nlp = softplus(-x);
          nln = softplus(x);
        }
        const int alpha_on = k->use_alpha_c || k->p.alpha >= 0.0f;
        const double a = alpha_on ? alpha_class(k, q) : 1.0;
        const double ap = alpha_on ? a : 1.0, an = alpha_on ? 1.0 - a : 1.0;
        const double pw = k->use_pos_weight ? k->pos_weight[q] : 1.0;
        double l;
        if (k->p.profile == FL_PROFILE_KORNIA || k->p.profile == FL_PROFILE_KORNIA_LEGACY)
          l = ap * pw * t * nlp + an * (1.0 - t) * nln;
        else l = (t * ap + (1.0 - t) * an) * (pw * t * nlp + (1.0 - t) * nln);
        sum += l * (k->use_weights ? k->w[e] : 1.0);
      }
    }
    double want = fmin(reduce(k, i, sum), FLT_MAX);
    if (!close_to(res->loss[i], want, REL_TOL, ABS_TOL * (double)(m * c)))
      fail("gamma = 0 sigmoid focal: loss[%" PRId64 "] = %.9g, weighted BCE = %.9g", i, res->loss[i], want);
  }
}

/* gamma = 0 softmax focal: the alpha-weighted cross-entropy, -sum_k t_k alpha_k log p_k. */
static void check_ce_reference(const fcase *k, const result *res) {
  const int probs = k->p.input == FL_INPUT_PROBS;
  const int ce_loss = k->p.loss == FL_SOFTMAX_FOCAL || k->p.loss == FL_CROSS_ENTROPY;
  if (!ce_loss || k->p.gamma != 0.0f || k->p.profile != FL_PROFILE_TORCHVISION || !moderate(k)) return;
  const int64_t m = k->m, c = k->c;
  for (int64_t i = 0; i < k->n; i++) {
    double sum = 0.0;
    for (int64_t j = 0; j < m; j++) {
      const int64_t row = i * m + j;
      const float *x = k->x + row * c;
      double mx = -INFINITY, lse = 0.0;
      if (!probs) {
        for (int64_t q = 0; q < c; q++) mx = fmax(mx, x[q]);
        for (int64_t q = 0; q < c; q++) lse += exp((double)x[q] - mx);
        lse = mx + log(lse);
      }
      double row_loss = 0.0;
      int live = 1;
      for (int64_t q = 0; q < c; q++) {
        const double t = target_at(k, row, q, &live);
        if (!live) break;
        if (t <= 0.0) continue;
        const double lp = probs ? fmax(log(x[q]), -100.0) : x[q] - lse;
        row_loss += t * alpha_class(k, q) * -lp;
      }
      if (!live) continue;
      sum += row_loss * (k->use_weights ? k->w[row] : 1.0);
    }
    double want = fmin(reduce(k, i, sum), FLT_MAX);
    if (!close_to(res->loss[i], want, REL_TOL, ABS_TOL * (double)(m * c)))
      fail("gamma = 0 softmax focal: loss[%" PRId64 "] = %.9g, cross-entropy = %.9g", i, res->loss[i], want);
  }
}

/* ------------------------------------------------------------------ self-consistency */

/* cross_entropy and binary_cross_entropy are names for the focal losses at gamma 0: the same
 * outputs, bit for bit, on the same instruction set. */
static void check_focal_equivalent(const fcase *k, const result *res) {
  if (k->p.loss != FL_CROSS_ENTROPY && k->p.loss != FL_BINARY_CROSS_ENTROPY) return;
  fl_params p = k->p;
  p.loss = k->p.loss == FL_CROSS_ENTROPY ? FL_SOFTMAX_FOCAL : FL_SIGMOID_FOCAL;
  fl_batch b = batch_of(k);
  result f;
  eval(k, &p, &b, &f);
  if (f.rc != 0) fail("%s succeeds where %s fails (%s)", fl_loss_name(k->p.loss), fl_loss_name(p.loss), fl_errname(f.rc));
  const size_t n = (size_t)k->n, ne = (size_t)(k->n * k->m * k->c);
  if (memcmp(res->loss, f.loss, n * sizeof *f.loss) != 0 ||
      (res->grad && memcmp(res->grad, f.grad, ne * sizeof *f.grad) != 0) ||
      (res->grad_norm && memcmp(res->grad_norm, f.grad_norm, n * sizeof *f.grad_norm) != 0) ||
      (res->scores && memcmp(res->scores, f.scores, n * sizeof *f.scores) != 0))
    fail("%s and %s at gamma 0 differ", fl_loss_name(k->p.loss), fl_loss_name(p.loss));
  result_free(&f);
}

/* Class-index labels and the same labels as one-hot target rows (background:
 * a row of zeros) are the same problem; the kernels take different paths. */
static void check_one_hot(const fcase *k, const result *res) {
  if (k->use_targets || res->rc != 0 || k->n == 0 || !moderate(k)) return;
  for (int64_t i = 0; i < k->n * k->m; i++)
    if (is_ignored(k, k->y[i])) return; /* an ignored row has no one-hot form */
  static fcase h;
  h = *k;
  h.use_targets = 1;
  for (int64_t r = 0; r < k->n * k->m; r++)
    for (int64_t q = 0; q < k->c; q++) h.t[r * k->c + q] = k->y[r] == q ? 1.0f : 0.0f;
  if (k->use_alpha_c) h.p.alpha_c = h.alpha_c;
  if (k->use_pos_weight) h.p.pos_weight = h.pos_weight;
  fl_batch b = batch_of(&h);
  result r2;
  eval(&h, &h.p, &b, &r2);
  compare_results(k, res, &r2, "labels vs one-hot targets");
  result_free(&r2);
}

/* mean, positives and mean_elements are the sum divided by the documented counts; the gradient scales alike. */
static void check_reduction(const fcase *k, const result *res) {
  if (res->rc != 0 || k->p.reduction == FL_REDUCE_SUM || k->n == 0) return;
  fl_params p = k->p;
  p.reduction = FL_REDUCE_SUM;
  fl_batch b = batch_of(k);
  result s;
  eval(k, &p, &b, &s);
  if (s.rc != 0) fail("the sum reduction fails (%s) where %s succeeds", fl_errname(s.rc), fl_reduction_name(k->p.reduction));
  for (int64_t i = 0; i < k->n; i++) {
    const double want = reduce(k, i, s.loss[i]);
    /* the sum may have saturated at FLT_MAX where the mean did not */
    if (s.loss[i] < FLT_MAX && !close_to(res->loss[i], want, REL_TOL, ABS_TOL))
      fail("%s: loss[%" PRId64 "] = %.9g, sum / count = %.9g", fl_reduction_name(k->p.reduction), i, res->loss[i], want);
  }
  result_free(&s);
}

/* ------------------------------------------------------------------ the target */

static const char *const isas[] = {"generic", "x86-64-v3", "x86-64-v4"};
#define NISA 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static fcase k;
  rd r = {data, size};
  build_case(&k, &r);
  current = &k;
  fl_batch b = batch_of(&k);
  const int params_rc = fl_params_check(&k.p, k.c, NULL);
  const int valid = params_rc == 0 && !(softmax_of(&k) && k.c < 2) && (k.n == 0 || data_valid(&k));

  result res[NISA];
  int have[NISA] = {0};
  int first = -1;
  for (int v = 0; v < NISA; v++) {
    if (fl_isa_force(isas[v]) != 0) continue; /* the CPU lacks it */
    current_isa = isas[v];
    eval(&k, &k.p, &b, &res[v]);
    have[v] = 1;
    const result *q = &res[v];
      if (strcmp(fl_errname(q->rc), "FL_UNKNOWN") == 0) fail("rc %d is not in the error table", q->rc);
    if (valid && q->rc != 0) fail("valid input refused: %s at %" PRId64, fl_errname(q->rc), q->where);
    if (!valid && q->rc == 0) fail("invalid input accepted");
    if (q->rc != 0) {
      check_error(&k, q, params_rc);
    } else {
      if (q->where != -1) fail("success with where = %" PRId64, q->where);
      if (k.n == 0 && q->loss[0] != SENTINEL) fail("an empty batch wrote a loss");
      check_outputs(&k, q);
      check_bce_reference(&k, q);
      check_ce_reference(&k, q);
      check_focal_equivalent(&k, q);
    }
    if (first < 0) first = v;
    else if (moderate(&k)) {
      compare_results(&k, &res[first], q, "instruction sets");
      compare_scores(&k, &res[first], q, "instruction sets");
    }
  }
  fl_isa_force(NULL);
  current_isa = "auto";
  if (first >= 0) {
    check_one_hot(&k, &res[first]);
    check_reduction(&k, &res[first]);
  }
  for (int v = 0; v < NISA; v++)
    if (have[v]) result_free(&res[v]);
  current = NULL;
  return 0;
}
