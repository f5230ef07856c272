/* fl_api.c — the library's entry points: names, parameter checks, per-sample
 * reduction and the choice of kernel variant.
 *
 * fl_eval validates the parameters, builds one fl__ctx and hands it to the
 * sigmoid or softmax kernel compiled for the best instruction set the CPU
 * has. The kernels validate the tensors as they read them and call back into
 * fl__acc_finish once per sample, which applies the reduction.
 */
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>

#include "fl_internal.h"

const char *fl_errname(int rc) {
  switch (rc) {
#define FL__ERROR_NAME(name, value, msg) \
  case value: return #name;
    FL_ERROR_TABLE(FL__ERROR_NAME)
#undef FL__ERROR_NAME
  }
  return "FL_UNKNOWN";
}

const char *fl_strerror(int rc) {
  switch (rc) {
#define FL__ERROR_MSG(name, value, msg) \
  case value: return msg;
    FL_ERROR_TABLE(FL__ERROR_MSG)
#undef FL__ERROR_MSG
  }
  return "unknown error";
}

static const char *const loss_names[FL_LOSS_COUNT] = {
    "sigmoid_focal", "softmax_focal", "sigmoid_focal_star", "poly1_sigmoid_focal", "poly1_softmax_focal", "asl",
    "cross_entropy", "binary_cross_entropy",
};
static const char *const profile_names[FL_PROFILE_COUNT] = {"torchvision", "monai", "kornia", "keras",
                                                             "kornia_legacy"};
static const char *const reduction_names[FL_REDUCTION_COUNT] = {"sum", "mean", "positives", "mean_elements"};

static int parse_name(const char *const *names, int count, const char *name, int *out) {
  if (!name) return FL_EPARAM;
  for (int i = 0; i < count; i++) {
    if (strcmp(names[i], name) == 0) {
      *out = i;
      return 0;
    }
  }
  return FL_EPARAM;
}

const char *fl_loss_name(fl_loss v) {
  return (unsigned)v < FL_LOSS_COUNT ? loss_names[v] : NULL;
}

const char *fl_profile_name(fl_profile v) {
  return (unsigned)v < FL_PROFILE_COUNT ? profile_names[v] : NULL;
}

const char *fl_reduction_name(fl_reduction v) {
  return (unsigned)v < FL_REDUCTION_COUNT ? reduction_names[v] : NULL;
}

int fl_loss_parse(const char *name, fl_loss *out) {
  int v = 0;
  int rc = parse_name(loss_names, FL_LOSS_COUNT, name, &v);
  if (rc == 0) *out = (fl_loss)v;
  return rc;
}

int fl_profile_parse(const char *name, fl_profile *out) {
  int v = 0;
  int rc = parse_name(profile_names, FL_PROFILE_COUNT, name, &v);
  if (rc == 0) *out = (fl_profile)v;
  return rc;
}

int fl_reduction_parse(const char *name, fl_reduction *out) {
  int v = 0;
  int rc = parse_name(reduction_names, FL_REDUCTION_COUNT, name, &v);
  if (rc == 0) *out = (fl_reduction)v;
  return rc;
}

int fl_loss_is_softmax(fl_loss v) {
  return v == FL_SOFTMAX_FOCAL || v == FL_POLY1_SOFTMAX_FOCAL || v == FL_CROSS_ENTROPY;
}

static int is_cross_entropy(fl_loss v) {
  return v == FL_CROSS_ENTROPY || v == FL_BINARY_CROSS_ENTROPY;
}

void fl_params_init(fl_params *p, fl_loss loss) {
  memset(p, 0, sizeof *p);
  p->loss = loss;
  p->profile = FL_PROFILE_TORCHVISION;
  p->reduction = FL_REDUCE_SUM;
  p->input = FL_INPUT_LOGITS;
  p->gamma = loss == FL_SIGMOID_FOCAL_STAR ? 1.0f : is_cross_entropy(loss) ? 0.0f : 2.0f;
  p->alpha = fl_loss_is_softmax(loss) || loss == FL_ASL || is_cross_entropy(loss) ? -1.0f : 0.25f;
  p->alpha_c = NULL;
  p->epsilon = 1.0f;
  p->gamma_pos = 1.0f;
  p->gamma_neg = 4.0f;
  p->clip = 0.05f;
  p->ignore_index = -1;
}

static int gamma_ok(float g) {
  return isfinite(g) && g >= 0.0f;
}

int fl_params_check(const fl_params *p, int64_t c, int64_t *where) {
  int64_t dummy;
  if (!where) where = &dummy;
  *where = -1;
  if (!p) return FL_ENULL;
  if ((unsigned)p->loss >= FL_LOSS_COUNT || (unsigned)p->profile >= FL_PROFILE_COUNT ||
      (unsigned)p->reduction >= FL_REDUCTION_COUNT || (unsigned)p->input >= FL_INPUT_COUNT)
    return FL_EPARAM;
  if (!gamma_ok(p->gamma)) return FL_EGAMMA;
  if (p->loss == FL_SIGMOID_FOCAL_STAR && !(p->gamma > 0.0f)) return FL_EGAMMA;
  if (is_cross_entropy(p->loss) && p->gamma != 0.0f) return FL_EGAMMA; /* a focusing CE is a focal loss */
  if (p->alpha_c) {
    for (int64_t k = 0; k < c; k++) {
      if (!(p->alpha_c[k] >= 0.0f && p->alpha_c[k] <= 1.0f)) {
        *where = k;
        return FL_EALPHA;
      }
    }
  } else if (isnan(p->alpha) || p->alpha > 1.0f) {
    return FL_EALPHA;
  }
  if (p->pos_weight) {
    /* it scales the cross-entropy's positive term, which FL*, ASL and the softmax family do not have as such */
    if (p->loss != FL_SIGMOID_FOCAL && p->loss != FL_POLY1_SIGMOID_FOCAL && p->loss != FL_BINARY_CROSS_ENTROPY)
      return FL_EPOSWEIGHT;
    for (int64_t k = 0; k < c; k++) {
      if (!(p->pos_weight[k] >= 0.0f) || !isfinite(p->pos_weight[k])) {
        *where = k;
        return FL_EPOSWEIGHT;
      }
    }
  }
  if ((p->loss == FL_POLY1_SIGMOID_FOCAL || p->loss == FL_POLY1_SOFTMAX_FOCAL) &&
      !(p->epsilon >= -1.0f && p->epsilon <= 1e4f)) /* larger overflows the gradients' float products */
    return FL_EEPSILON;
  if (p->loss == FL_ASL) {
    if (!gamma_ok(p->gamma_pos) || !gamma_ok(p->gamma_neg)) return FL_EGAMMA;
    if (!(p->clip >= 0.0f && p->clip < 1.0f)) return FL_ECLIP;
  }
  /* Profiles describe framework conventions for the plain focal losses only (the
   * cross-entropy losses are torch's); MONAI and kornia define them on logits
   * alone, and FL* needs logits. */
  if (p->profile != FL_PROFILE_TORCHVISION && p->loss != FL_SIGMOID_FOCAL && p->loss != FL_SOFTMAX_FOCAL)
    return FL_EUNSUPPORTED;
  if ((p->profile == FL_PROFILE_MONAI || p->profile == FL_PROFILE_KORNIA || p->profile == FL_PROFILE_KORNIA_LEGACY) &&
      p->input == FL_INPUT_PROBS)
    return FL_EUNSUPPORTED;
  if (p->loss == FL_SIGMOID_FOCAL_STAR && p->input == FL_INPUT_PROBS) return FL_EUNSUPPORTED;
  return 0;
}

double fl__cw(double p_t, double ent) {
  double s = ent / (p_t > FL__CLEANLAB_MIN ? p_t : FL__CLEANLAB_MIN);
  return log1p(s) / (s > FL__CLEANLAB_MIN ? s : FL__CLEANLAB_MIN);
}

void fl__acc_score(fl__acc *a, float p_t, float p_max, float margin, float norm_margin, float entropy,
                   float cw_entropy, float el2n, float correct) {
  a->p_t += p_t;
  a->p_max += p_max;
  a->margin += margin;
  a->norm_margin += norm_margin;
  a->entropy += entropy;
  a->cw_entropy += cw_entropy;
  a->el2n += el2n;
  a->correct += correct;
  a->rows += 1;
}

/* Float output of a double sum. Inputs near FLT_MAX can make a true loss or
 * margin exceed float's range; it saturates rather than becoming infinite. */
static float sat(double v) {
  if (v > FLT_MAX) return FLT_MAX;
  if (v < -FLT_MAX) return -FLT_MAX;
  return (float)v;
}

void fl__acc_finish(const fl__ctx *cx, int64_t i, const fl__acc *a) {
  double scale = 1.0;
  if (cx->p->reduction == FL_REDUCE_MEAN) scale = a->count > 0 ? 1.0 / (double)a->count : 0.0;
  else if (cx->p->reduction == FL_REDUCE_POSITIVES) scale = 1.0 / (double)(a->npos > 1 ? a->npos : 1);
  else if (cx->p->reduction == FL_REDUCE_MEAN_ELEMENTS) scale = 1.0 / ((double)cx->m * (double)cx->c);
  cx->out->loss[i] = scale == 0.0 ? 0.0f : sat(a->loss * scale);
  if (cx->out->grad && scale != 1.0) {
    const int64_t len = cx->m * cx->c;
    float *g = cx->out->grad + i * len;
    const float s = (float)scale;
    for (int64_t e = 0; e < len; e++) g[e] *= s;
  }
  if (cx->out->grad_norm) cx->out->grad_norm[i] = sat(sqrt(a->gn2) * scale);
  if (cx->out->scores) {
    fl_score *s = &cx->out->scores[i];
    memset(s, 0, sizeof *s);
    s->rows = (int32_t)(a->rows < INT32_MAX ? a->rows : INT32_MAX);
    s->pred = cx->m == 1 ? a->pred : -1;
    if (a->rows > 0) {
      const double inv = 1.0 / (double)a->rows;
      s->p_t = sat(a->p_t * inv);
      s->p_max = sat(a->p_max * inv);
      s->margin = sat(a->margin * inv);
      s->norm_margin = sat(a->norm_margin * inv);
      s->entropy = sat(a->entropy * inv);
      s->cw_entropy = sat(a->cw_entropy * inv);
      s->el2n = sat(a->el2n * inv);
      s->correct = sat(a->correct * inv);
    }
  }
}

static int x_bad(const fl__ctx *cx, float v) {
  if (cx->probs) return !(v >= 0.0f && v <= 1.0f);
  return !isfinite(v);
}

int64_t fl__find_bad_x(const fl__ctx *cx, int64_t from, int64_t to) {
  for (int64_t e = from; e < to; e++)
    if (x_bad(cx, cx->b->x[e])) return e;
  return -1;
}

int64_t fl__find_bad_unit(const float *v, int64_t from, int64_t to) {
  for (int64_t e = from; e < to; e++)
    if (!(v[e] >= 0.0f && v[e] <= 1.0f)) return e;
  return -1;
}

int64_t fl__find_bad_weight(const float *v, int64_t from, int64_t to) {
  for (int64_t e = from; e < to; e++)
    if (!(v[e] >= 0.0f) || !isfinite(v[e])) return e;
  return -1;
}

/* Kernel variants, best first. */
typedef int (*fl__kernel)(const fl__ctx *cx, int64_t *where);

typedef struct variant {
  const char *name;
  fl__kernel sigmoid;
  fl__kernel softmax;
} variant;

static const variant variants[] = {
#if defined(__x86_64__)
    {"x86-64-v4", fl__sigmoid_eval_v4, fl__softmax_eval_v4},
    {"x86-64-v3", fl__sigmoid_eval_v3, fl__softmax_eval_v3},
#endif
    {"generic", fl__sigmoid_eval_generic, fl__softmax_eval_generic},
};
#define VARIANT_COUNT ((int)(sizeof variants / sizeof variants[0]))

static int variant_supported(int v) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (strcmp(variants[v].name, "x86-64-v4") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (strcmp(variants[v].name, "x86-64-v3") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2");
#endif
  (void)v;
  return 1;
}

/* -1: choose automatically; otherwise the index of a forced variant. */
static atomic_int forced = -1;

static const variant *pick(void) {
  int f = atomic_load_explicit(&forced, memory_order_relaxed);
  if (f >= 0) return &variants[f];
  for (int v = 0; v < VARIANT_COUNT; v++)
    if (variant_supported(v)) return &variants[v];
  return &variants[VARIANT_COUNT - 1];
}

const char *fl_isa(void) {
  return pick()->name;
}

int fl_isa_force(const char *name) {
  if (!name) {
    atomic_store(&forced, -1);
    return 0;
  }
  for (int v = 0; v < VARIANT_COUNT; v++) {
    if (strcmp(variants[v].name, name) == 0) {
      if (!variant_supported(v)) return FL_EUNSUPPORTED;
      atomic_store(&forced, v);
      return 0;
    }
  }
  return FL_EUNSUPPORTED;
}

int fl_eval(const fl_out *out, const fl_batch *b, const fl_params *p, int64_t *where) {
  int64_t dummy;
  if (!where) where = &dummy;
  *where = -1;
  if (!out || !out->loss || !b || !b->x || !p) return FL_ENULL;
  if (!b->labels == !b->targets) return b->labels ? FL_EPARAM : FL_ENULL;
  if ((unsigned)b->label_type >= FL_LABEL_TYPE_COUNT) return FL_EPARAM;
  const int softmax = fl_loss_is_softmax(p->loss);
  /* c is compared in 32-bit lanes; n*m*c must fit comfortably in 63 bits. */
  if (b->n < 0 || b->m < 1 || b->c < 1 || b->c > INT32_MAX / 2 || (softmax && b->c < 2) ||
      b->m > INT64_MAX / b->c || b->n > INT64_MAX / 4 / (b->m * b->c))
    return FL_ESHAPE;
  int rc = fl_params_check(p, b->c, where);
  if (rc) return rc;
  if (b->n == 0) return 0; /* an empty batch has nothing to compute */

  /* The cross-entropy losses are the focal losses at gamma 0 (checked above): the
   * kernels see the focal loss, so the numbers are the focal loss's, bit for bit. */
  fl_params focal = *p;
  if (p->loss == FL_CROSS_ENTROPY) focal.loss = FL_SOFTMAX_FOCAL;
  if (p->loss == FL_BINARY_CROSS_ENTROPY) focal.loss = FL_SIGMOID_FOCAL;
  p = &focal;

  fl__ctx cx;
  memset(&cx, 0, sizeof cx);
  cx.b = b;
  cx.p = p;
  cx.out = out;
  cx.n = b->n;
  cx.m = b->m;
  cx.c = b->c;
  cx.probs = p->input == FL_INPUT_PROBS;
  cx.keras = p->profile == FL_PROFILE_KERAS;
  cx.monai = p->profile == FL_PROFILE_MONAI;
  /* kornia's sigmoid focal loss is the same before and after 0.7.0; its softmax alpha is not */
  cx.kornia = p->profile == FL_PROFILE_KORNIA || p->profile == FL_PROFILE_KORNIA_LEGACY;
  cx.alpha_bg = p->profile == FL_PROFILE_MONAI || p->profile == FL_PROFILE_KORNIA;
  cx.poly1 = p->loss == FL_POLY1_SIGMOID_FOCAL || p->loss == FL_POLY1_SOFTMAX_FOCAL;
  cx.alpha_c = p->alpha_c;
  cx.pos_weight = p->pos_weight;
  cx.alpha_on = p->alpha_c != NULL || p->alpha >= 0.0f;
  cx.alpha = p->alpha;
  cx.gamma = p->gamma;
  cx.epsilon = p->epsilon;
  cx.clip = p->clip;
  cx.pw = fl__pow_plan(p->gamma);
  cx.pw_pos = fl__pow_plan(p->gamma_pos);
  cx.pw_neg = fl__pow_plan(p->gamma_neg);
  cx.ignore = p->ignore_index;
  cx.want_grad = out->grad != NULL || out->grad_norm != NULL;
  cx.want_norm = out->grad_norm != NULL;
  cx.want_scores = out->scores != NULL;

  const variant *v = pick();
  rc = softmax ? v->softmax(&cx, where) : v->sigmoid(&cx, where);
  return rc;
}
