/* fl_internal.h — what the library's files share: the evaluation context, per-sample
 * accumulators and the per-ISA kernel entry points. Nothing here is public. */
#ifndef FL_INTERNAL_H
#define FL_INTERNAL_H

#include "focal.h"
#include "fl_vmath.h"

/* Everything a kernel needs, decided once per fl_eval call. */
typedef struct fl__ctx {
  const fl_batch *b;
  const fl_params *p;
  const fl_out *out;
  int64_t n, m, c;
  int probs;           /* probability input */
  int keras;           /* keras profile: probabilities clipped to [1e-7, 1 - 1e-7] */
  int monai;
  int kornia;          /* sigmoid: kornia's formula (both kornia profiles) */
  int alpha_bg;        /* softmax: class 0 (background) gets 1 - alpha, the others alpha (MONAI, kornia >= 0.7) */
  int poly1;           /* add epsilon (1-p_t)^(gamma+1) */
  int alpha_on;        /* alpha or alpha_c set */
  float alpha;         /* scalar alpha when alpha_c is NULL */
  const float *alpha_c;
  const float *pos_weight; /* (c) or NULL: scales t (-log s) in the sigmoid family's cross-entropy */
  float gamma, epsilon, clip;
  fl__pow pw;          /* gamma */
  fl__pow pw_pos;      /* ASL gamma_pos */
  fl__pow pw_neg;      /* ASL gamma_neg */
  int64_t ignore;
  int want_grad;       /* grad or grad_norm asked for */
  int want_norm;       /* grad_norm asked for: the squared gradients are summed */
  int want_scores;
} fl__ctx;

/* Keras' backend epsilon, and 1 - epsilon, as float32 (the clip bounds Keras applies). */
#define FL__KERAS_EPS 1e-7f
#define FL__KERAS_ONE_MINUS_EPS (1.0f - 1e-7f)
#define FL__KERAS_CEPS 1.1920929e-7f /* 1 - FL__KERAS_ONE_MINUS_EPS, exactly */
/* PyTorch's binary_cross_entropy clamps each log at -100; so do probability inputs here. */
#define FL__LOG_FLOOR -100.0f
/* ASL's reference implementation clamps probabilities at 1e-8 before its logs. */
#define FL__ASL_EPS 1e-8f
/* cleanlab clips self-confidence and scores at 1e-6 in its confidence-weighted entropy. */
#define FL__CLEANLAB_MIN 1e-6

/* Reads label r of any label type as int64. */
static inline int64_t fl__label_at(const fl_batch *b, int64_t r) {
  switch (b->label_type) {
  case FL_LABEL_I64: return ((const int64_t *)b->labels)[r];
  case FL_LABEL_U8: return ((const uint8_t *)b->labels)[r];
  default: return ((const int32_t *)b->labels)[r];
  }
}

/* A sample's running sums while its rows are evaluated. */
typedef struct fl__acc {
  double loss;        /* sum of weighted element losses */
  double gn2;         /* sum of squared (unscaled) gradient entries */
  int64_t count;      /* elements that count for the mean */
  int64_t npos;       /* positive targets, for the "positives" reduction */
  int64_t rows;       /* rows or elements scored */
  double p_t, p_max, margin, norm_margin, entropy, cw_entropy, el2n, correct;
  int32_t pred;
} fl__acc;

static inline void fl__acc_reset(fl__acc *a) {
  memset(a, 0, sizeof *a);
  a->pred = -1;
}

/* cleanlab's confidence-weighted entropy: s = entropy / max(p_t, 1e-6),
 * then log(1 + s) / max(s, 1e-6). Higher means more likely correctly labelled. */
double fl__cw(double p_t, double ent);

/* Adds one scored row (or element) to a sample's sums. */
void fl__acc_score(fl__acc *a, float p_t, float p_max, float margin, float norm_margin, float entropy,
                   float cw_entropy, float el2n, float correct);

/* Writes sample i's outputs from its sums: applies the reduction to the loss,
 * rescales the sample's gradient block and norm, and averages the scores. */
void fl__acc_finish(const fl__ctx *cx, int64_t i, const fl__acc *a);

/* Finds the first element of the named tensor that fails validation; used to
 * report *where after a vector pass saw a bad lane. Returns the flat index or -1. */
int64_t fl__find_bad_x(const fl__ctx *cx, int64_t from, int64_t to);
int64_t fl__find_bad_unit(const float *v, int64_t from, int64_t to);
int64_t fl__find_bad_weight(const float *v, int64_t from, int64_t to);

#define FL__CAT2(a, b) a##_##b
#define FL__CAT(a, b) FL__CAT2(a, b)

/* The kernels, one copy per instruction-set variant. */
#define FL__DECLARE_KERNELS(isa)                                                  \
  int FL__CAT(fl__sigmoid_eval, isa)(const fl__ctx *cx, int64_t *where);        \
  int FL__CAT(fl__softmax_eval, isa)(const fl__ctx *cx, int64_t *where);
FL__DECLARE_KERNELS(generic)
#if defined(__x86_64__)
FL__DECLARE_KERNELS(v3)
FL__DECLARE_KERNELS(v4)
#endif

#endif /* FL_INTERNAL_H */
