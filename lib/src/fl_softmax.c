/* fl_softmax.c — the softmax family: softmax focal (every profile) and its Poly-1 extension.
 *
 * Each position is one multi-class problem over c classes. Rows are taken in
 * blocks of 16:
 *   A  per row, vectors across classes: max and argmax, the target's logit, the
 *      largest other logit, then e_k = exp(z_k - max) and the sums built on it;
 *   B  across the block's 16 rows at once: log-sum-exp, log p_y, 1 - p_y, the
 *      loss, the gradient coefficient and the scores;
 *   C  per row again, only for soft targets or when the gradient tensor is
 *      wanted: the per-class terms.
 * With logits and few classes (c <= PLANAR_C) a row fills a fraction of a
 * vector, and stage A per row would cost more than everything else: it is
 * then done for the block's rows at once instead, one vector per class
 * gathered across them (planar_stats), as the sigmoid kernel does.
 * Precision: the argmax term is excluded from the sum (S = 1 + S_rest), so
 * log S = log1p(S_rest) and 1 - p_y keep their digits when p_y is close to 1.
 * Range: a row's logits may span more than float's range ([3e38, -3e38]), so
 * that z_y - max and log p_y are past it while alpha times them is not; they
 * are carried halved ((z_y - max) / 2 = z_y / 2 - max / 2, and -log p_y / 2)
 * and doubled only in the products that make the loss and the gradient.
 *
 * This file is compiled once per instruction-set variant; FL_ISA names the copy.
 */
#include <float.h>
#include <math.h>

#include "fl_internal.h"

#ifndef FL_ISA
#define FL_ISA generic
#endif

/* The most classes stage A takes across rows (planar_stats) rather than along each row. */
#define PLANAR_C 8

/* What stage A leaves for stage B, one entry per row of the block. */
typedef struct blk {
  int cnt;
  int64_t r0;
  int32_t y[FL_W];      /* label (argmax of the target row for soft targets); -1 ignored */
  int32_t a[FL_W];      /* argmax of the row */
  float w[FL_W];        /* row weight */
  float zm[FL_W];       /* the row's largest value: max z, or max p */
  float zy[FL_W];       /* logits: (z_y - max) / 2, halved to stay in float's range; probabilities: p_y */
  float mo[FL_W];       /* logits: max_{k != y} z - max; probabilities: max_{k != y} p */
  float srest[FL_W];    /* logits: sum of e_k over k != argmax; probabilities: sum of p */
  float ey[FL_W];       /* logits: e_y */
  float ent[FL_W];      /* logits: sum e_k (z_k - max); probabilities: -sum p log p */
  float q2[FL_W];       /* sum over k != y of p_k^2 (logits: of e_k^2; probabilities: of (p_k / q2u)^2) */
  float q2u[FL_W];      /* probabilities: the power of two q2's terms are measured in (1 for logits) */
  /* stage B results */
  float loss[FL_W];     /* weighted row loss (index labels) */
  float gcoef[FL_W];    /* d loss / d z_k = w gcoef (p_k - [k == y]), w the row weight */
  double gn2[FL_W];     /* the squared gradient norm, in double: w^2 gcoef^2 overflows float for large weights */
  float logs[FL_W];     /* log S (logits) */
  float s[FL_W];        /* S */
  float p_t[FL_W], p_max[FL_W], margin[FL_W], nm[FL_W], entn[FL_W], cw[FL_W], el2n[FL_W];
} blk;

static inline vf zero(void) {
  return vf_set(0.0f);
}

static inline vf one(void) {
  return vf_set(1.0f);
}

/* The alpha of class k: off, per-class, scalar, or MONAI's and kornia's [1 - alpha, alpha, alpha, ...]. */
FL__HOT float alpha_of(const fl__ctx *cx, int64_t k) {
  if (cx->alpha_c) return cx->alpha_c[k];
  if (!cx->alpha_on) return 1.0f;
  if (cx->alpha_bg) return k == 0 ? 1.0f - cx->alpha : cx->alpha;
  return cx->alpha;
}

FL__HOT vi bad_x(const fl__ctx *cx, vf x) {
  if (cx->probs) return ~((x >= zero()) & (x <= one()));
  return vnonfinite(x);
}

/* Stage A for one row: statistics the loss and scores are built from.
 * Returns 0 or an error with *where set. */
static int row_stats(const fl__ctx *cx, blk *bk, int l, int64_t r, int64_t *where) {
  const fl_batch *b = cx->b;
  const int64_t c = b->c;
  const float *xr = b->x + r * c;
  const vi iota = vi_iota();
  const float fill = cx->probs ? 0.0f : -INFINITY;
  int32_t y = bk->y[l];
  /* pass 1: validate, max, argmax, the target's value, the largest other value */
  vf best = vf_set(-INFINITY), other = vf_set(-INFINITY), vy = zero();
  vi best_k = vi_set(0);
  vi bad = vi_set(0);
  for (int64_t k = 0; k < c; k += FL_W) {
    const int cnt = c - k < FL_W ? (int)(c - k) : FL_W;
    const vi kk = iota + (int32_t)k;
    const vi in = iota < vi_set(cnt);
    vf x = cnt == FL_W ? vf_load(xr + k) : vf_load_part(xr + k, cnt, fill);
    bad |= bad_x(cx, x) & in;
    vi better = in & (x > best);
    best = vsel(better, x, best);
    best_k = (better & kk) | (~better & best_k);
    vi is_y = kk == vi_set(y);
    vy += vsel(is_y, x, zero());
    other = vsel(in & ~is_y & (x > other), x, other);
  }
  if (vany(bad)) {
    *where = fl__find_bad_x(cx, r * c, r * c + c);
    return cx->probs ? FL_EPROB : FL_EINPUT;
  }
  float m = vhmax(best);
  int32_t a = INT32_MAX;
  for (int q = 0; q < FL_W; q++)
    if (best[q] == m && best_k[q] < a) a = best_k[q];
  bk->a[l] = a;
  bk->zm[l] = m; /* logits: the max; probabilities: the largest probability */
  if (y < 0) return 0; /* ignored: validated, nothing to compute */
  float xo = vhmax(other);
  /* pass 2: exponentials and the sums on them */
  vf srest = zero(), ent = zero(), q2 = zero(), ey = zero();
  /* Probabilities: squares are summed in units of u = 2^ue, a power of two near the row's largest
   * value, so a row of tiny values (which Keras normalises by their sum) keeps them rather than
   * underflowing to 0. x / u is exact: it is taken as two multiplications by powers of two, each
   * within float's range even when u is subnormal. */
  int ue = 0;
  if (cx->probs && m > 0.0f) frexpf(m, &ue);
  const float h1 = ldexpf(1.0f, -ue / 2), h2 = ldexpf(1.0f, -ue - (-ue / 2));
  for (int64_t k = 0; k < c; k += FL_W) {
    const int cnt = c - k < FL_W ? (int)(c - k) : FL_W;
    const vi kk = iota + (int32_t)k;
    const vi in = iota < vi_set(cnt);
    vf x = cnt == FL_W ? vf_load(xr + k) : vf_load_part(xr + k, cnt, fill);
    vi not_y = ~(kk == vi_set(y));
    if (cx->probs) {
      vf lg = vmax(fl__vlog(x), vf_set(FL__LOG_FLOOR));
      srest += vsel(in, x, zero());
      ent -= vsel(in, x * lg, zero());
      vf xs = x * h1 * h2;
      q2 += vsel(in & not_y, xs * xs, zero());
    } else {
      vf d = vmax(x - m, vf_set(-FLT_MAX)); /* logits spanning more than float's range */
      vf e = vsel(in, fl__vexpneg(d), zero());
      srest += vsel(kk == vi_set(a), zero(), e);
      ent += e * vsel(in, d, zero());
      q2 += vsel(not_y, e * e, zero());
      ey += vsel(kk == vi_set(y), e, zero());
    }
  }
  bk->srest[l] = (float)vsum(srest);
  bk->ent[l] = (float)vsum(ent);
  bk->q2[l] = (float)vsum(q2);
  bk->q2u[l] = ldexpf(1.0f, ue);
  if (cx->probs) {
    bk->zy[l] = (float)vsum(vy);
    bk->mo[l] = xo;
  } else {
    bk->zy[l] = 0.5f * (float)vsum(vy) - 0.5f * m;
    bk->mo[l] = fmaxf(xo - m, -FLT_MAX);
    bk->ey[l] = (float)vsum(ey);
  }
  return 0;
}

/* Stage A for logits with c <= PLANAR_C: the same statistics as row_stats, for
 * all of the block's rows at once. x[k] holds class k of every row; the sums
 * run over the classes in order, in float. Ignored rows keep the zeros
 * block_labels left; rows past bk->cnt are ignored rows. Returns 0 or
 * FL_EINPUT with *where the first non-finite logit of the block. */
static int planar_stats(const fl__ctx *cx, blk *bk, int64_t *where) {
  const int64_t c = cx->c;
  const int cnt = bk->cnt;
  const float *x0 = cx->b->x + bk->r0 * c;
  const vi in = vi_iota() < vi_set(cnt);
  vf x[PLANAR_C];
  vi bad = vi_set(0);
  if (c == 2 && cnt == FL_W) {
    vf_deinterleave2(x0, &x[0], &x[1]); /* two classes (a segmentation): split in registers */
  } else {
    for (int64_t k = 0; k < c; k++) {
      float xb[FL_W];
      for (int l = 0; l < FL_W; l++) xb[l] = l < cnt ? x0[l * c + k] : 0.0f;
      x[k] = vf_load(xb);
    }
  }
  for (int64_t k = 0; k < c; k++) bad |= vnonfinite(x[k]) & in;
  if (vany(bad)) {
    *where = fl__find_bad_x(cx, bk->r0 * c, (bk->r0 + cnt) * c);
    return FL_EINPUT;
  }
  vi Y, A = vi_set(0);
  memcpy(&Y, bk->y, sizeof Y);
  const vi live = Y >= vi_set(0);
  /* the max and the first class that reaches it */
  vf m = x[0];
  for (int64_t k = 1; k < c; k++) {
    const vi better = x[k] > m;
    m = vsel(better, x[k], m);
    A = vsel_i(better, vi_set((int32_t)k), A);
  }
  vf vy = zero(), other = vf_set(-INFINITY), srest = zero(), ent = zero(), q2 = zero(), ey = zero();
  for (int64_t k = 0; k < c; k++) {
    const vi is_y = Y == vi_set((int32_t)k);
    vy = vsel(is_y, x[k], vy);
    other = vsel(~is_y & (x[k] > other), x[k], other);
    const vf d = vmax(x[k] - m, vf_set(-FLT_MAX)); /* logits spanning more than float's range */
    const vf e = fl__vexpneg(d);
    srest += vsel(A == vi_set((int32_t)k), zero(), e);
    ent += e * d;
    q2 += vsel(is_y, zero(), e * e);
    ey = vsel(is_y, e, ey);
  }
  vf_store(bk->zm, m);
  memcpy(bk->a, &A, sizeof A);
  vf_store(bk->srest, vsel(live, srest, zero()));
  vf_store(bk->ent, vsel(live, ent, zero()));
  vf_store(bk->q2, vsel(live, q2, zero()));
  vf_store(bk->ey, vsel(live, ey, zero()));
  vf_store(bk->zy, vsel(live, 0.5f * vy - 0.5f * m, zero()));
  vf_store(bk->mo, vsel(live, vmax(other - m, vf_set(-FLT_MAX)), zero()));
  return 0;
}

/* Stage B: the block's index-label losses, gradient coefficients and scores, 16 rows at once. */
static void block_math(const fl__ctx *cx, blk *bk, int soft) {
  vi Y, A;
  vf w, zy, mo, srest, ent, q2, q2u;
  memcpy(&Y, bk->y, sizeof Y);
  memcpy(&A, bk->a, sizeof A);
  w = vf_load(bk->w);
  zy = vf_load(bk->zy);
  mo = vf_load(bk->mo);
  srest = vf_load(bk->srest);
  ent = vf_load(bk->ent);
  q2 = vf_load(bk->q2);
  q2u = vf_load(bk->q2u);
  const float g = cx->gamma;
  /* the scores' parts (an exponential among them) only where scores are asked for; el2sq for the gradient's norm too */
  const int scores = cx->want_scores, norms = cx->want_scores || cx->want_grad;
  /* nlh = -log p_y / 2: halved, as it can pass float's range where the loss does not (the file's header) */
  vf p_y, nlh, omp, s, logs = zero(), p_o = zero(), el2sq = zero(), entn = zero(), margin = zero();
  if (!cx->probs) {
    vf ey = vf_load(bk->ey);
    s = 1.0f + srest;
    /* S_rest can exceed 1 (many classes near the max); log1p's digits matter only below 1. */
    logs = vsel(srest <= one(), fl__vlog1p01(vmin(srest, one())), fl__vlog(s));
    p_y = ey / s;
    nlh = 0.5f * logs - zy;
    omp = vsel(Y == A, srest / s, (s - ey) / s);
    if (scores) {
      p_o = fl__vexpneg(mo) / s;
      entn = (logs - ent / s) * (float)(1.0 / log((double)cx->c));
      margin = vmax(zy * 2.0f, vf_set(-FLT_MAX)) - mo; /* z_y - max, at least -FLT_MAX */
    }
    if (norms) el2sq = q2 / (s * s) + omp * omp;
  } else {
    s = srest;
    p_y = zy;
    const vf logp = vmax(fl__vlog(p_y), vf_set(FL__LOG_FLOOR));
    nlh = -0.5f * logp;
    omp = 1.0f - p_y;
    p_o = mo;
    el2sq = q2 * q2u * q2u + omp * omp;
    entn = ent * (float)(1.0 / log((double)cx->c));
    margin = logp - vmax(fl__vlog(mo), vf_set(FL__LOG_FLOOR));
  }
  vf om = omp;
  vf el2g = el2sq; /* the squared norm of (p - onehot) as the gradient sees p */
  vi act = vi_set(-1); /* p_y still varies with z (not held by Keras' clip) */
  vf pg = p_y; /* p_y as the gradient sees it: exact, where 1 - om loses its digits for small p_y */
  /* probabilities: where log p_y is clamped at -100 it is constant, and its derivative 0, as autograd has it
   * (the modulation's derivative is p_y times bounded terms, below 4e-44 there) */
  if (cx->probs) act = fl__vlog(p_y) > vf_set(FL__LOG_FLOOR);
  if (cx->keras) {
    /* Keras normalises probabilities by their sum, then clips them to [eps, 1 - eps]. */
    vf sk = vmax(s, vf_set(FLT_MIN)); /* a row of zeros: 0, not 0/0 */
    vf pk = cx->probs ? p_y / sk : p_y;
    vf omk = cx->probs ? (sk - p_y) / sk : omp;
    pg = pk;
    /* the gradient is taken through the normalised probabilities p / s: so is its norm */
    /* q2u / sk is within [1 / (2c), 2]: neither it nor its square underflows */
    if (cx->probs) el2g = q2 * (q2u / sk) * (q2u / sk) + omk * omk;
    act = (pk > vf_set(FL__KERAS_EPS)) & (pk < vf_set(FL__KERAS_ONE_MINUS_EPS));
    nlh = -0.5f * fl__vlog(vmin(vmax(pk, vf_set(FL__KERAS_EPS)), vf_set(FL__KERAS_ONE_MINUS_EPS)));
    om = vmin(vmax(omk, vf_set(FL__KERAS_CEPS)), vf_set(FL__KERAS_ONE_MINUS_EPS));
  }
  if (!soft) {
    float ab[FL_W];
    for (int l = 0; l < FL_W; l++) ab[l] = bk->y[l] >= 0 ? alpha_of(cx, bk->y[l]) : 0.0f;
    vf a_y = vf_load(ab);
    vf mod = fl__vpow01(om, cx->pw);
    /* doubled last, and saturated: a loss past float's range is FLT_MAX */
    vf loss = vmin(a_y * mod * nlh * 2.0f, vf_set(FLT_MAX));
    /* G = (1-p)^g (1 + g p (-log p) / (1-p)); (-log p)/(1-p) -> 1 as p -> 1. rho is half of that ratio,
     * doubled after p multiplies it: p is 0 where -log p is past float's range. */
    vf rho = vsel(om > zero(), nlh / vmax(om, vf_set(1e-30f)), vf_set(0.5f));
    vf gc = a_y * mod * (1.0f + g * pg * rho * 2.0f);
    if (cx->poly1) {
      loss += cx->epsilon * mod * om;
      gc += cx->epsilon * (g + 1.0f) * mod * pg;
    }
    vi live = Y >= vi_set(0);
    gc = vsel(act, gc, zero());
    /* a position's weighted loss is a float: at most FLT_MAX, as the sigmoid family's elements */
    vf_store(bk->loss, vsel(live, vmin(loss * w, vf_set(FLT_MAX)), zero()));
    /* the weight is applied last, per class (row_grad_index): gcoef * w alone can pass float's range
     * where gcoef * w * (p_k - [k == y]) does not */
    vf_store(bk->gcoef, vsel(live, gc, zero()));
    /* a row with p = onehot has el2 = 0: its norm is 0, not inf * 0 */
    if (cx->want_norm) {
      typedef int64_t vl __attribute__((vector_size(FL_W * sizeof(int64_t))));
      const vd gw = __builtin_convertvector(gc, vd) * __builtin_convertvector(w, vd);
      const vd g2 = gw * gw * __builtin_convertvector(el2g, vd);
      const vl keep = __builtin_convertvector(live & (el2g > zero()), vl);
      const vd kept = (vd)((vl)g2 & keep);
      memcpy(bk->gn2, &kept, sizeof kept);
    }
  }
  vf_store(bk->logs, logs);
  vf_store(bk->s, s);
  if (cx->want_scores) {
    vf_store(bk->p_t, p_y);
    vf_store(bk->p_max, cx->probs ? vf_load(bk->zm) : 1.0f / s); /* logits: e_argmax = 1 */
    vf_store(bk->margin, margin);
    vf_store(bk->nm, (p_y - p_o + 1.0f) * 0.5f);
    vf_store(bk->entn, entn);
    float el[FL_W];
    for (int l = 0; l < FL_W; l++) el[l] = sqrtf(el2sq[l]);
    vf_store(bk->el2n, vf_load(el));
    vf sc = entn / vmax(p_y, vf_set((float)FL__CLEANLAB_MIN));
    vf lg = vsel(sc <= one(), fl__vlog1p01(vmin(sc, one())), fl__vlog(1.0f + sc));
    vf_store(bk->cw, lg / vmax(sc, vf_set((float)FL__CLEANLAB_MIN)));
  }
}

/* Probability of class k in row r, 1 - it and minus half its log (halved: it can pass float's range, the
 * file's header), from the row's stage A/B results; *act is false where Keras' clip holds the probability
 * constant. */
FL__HOT void class_prob(const fl__ctx *cx, const blk *bk, int l, vf x, vi kk, vf *p, vf *omp, vf *nlh,
                              vi *act) {
  *act = vi_set(-1);
  if (cx->probs) {
    /* a row of zeros has no normalisation: its probabilities stay 0 rather than 0/0 */
    vf s = vf_set(cx->keras ? fmaxf(bk->s[l], FLT_MIN) : 1.0f);
    *p = x / s;
    *omp = (s - x) / s;
    vf lg = fl__vlog(*p);
    *act = lg > vf_set(FL__LOG_FLOOR); /* the clamped log is constant (as in block_math) */
    *nlh = -0.5f * vmax(lg, vf_set(FL__LOG_FLOOR));
  } else {
    vf d = vmax(x - bk->zm[l], vf_set(-FLT_MAX));
    vf e = fl__vexpneg(d);
    vf s = vf_set(bk->s[l]);
    *p = e / s;
    *omp = vsel(kk == vi_set(bk->a[l]), vf_set(bk->srest[l]) / s, (s - e) / s);
    /* a padded lane (x = -inf) gives +inf here, as it gives p = 0: its terms are masked */
    *nlh = 0.5f * bk->logs[l] - (0.5f * x - 0.5f * bk->zm[l]);
  }
  if (cx->keras) {
    *act = (*p > vf_set(FL__KERAS_EPS)) & (*p < vf_set(FL__KERAS_ONE_MINUS_EPS));
    *nlh = -0.5f * fl__vlog(vmin(vmax(*p, vf_set(FL__KERAS_EPS)), vf_set(FL__KERAS_ONE_MINUS_EPS)));
    *omp = vmin(vmax(*omp, vf_set(FL__KERAS_CEPS)), vf_set(FL__KERAS_ONE_MINUS_EPS));
  }
}

/* Stage C for index labels: writes d loss / d z = w gcoef (p_k - [k == y]). */
static void row_grad_index(const fl__ctx *cx, const blk *bk, int l, int64_t r) {
  const int64_t c = cx->c;
  const float *xr = cx->b->x + r * c;
  float *gr = cx->out->grad + r * c;
  const vi iota = vi_iota();
  const float fill = cx->probs ? 0.0f : -INFINITY;
  if (bk->y[l] < 0) {
    memset(gr, 0, (size_t)c * sizeof *gr);
    return;
  }
  for (int64_t k = 0; k < c; k += FL_W) {
    const int cnt = c - k < FL_W ? (int)(c - k) : FL_W;
    const vi kk = iota + (int32_t)k;
    vf x = cnt == FL_W ? vf_load(xr + k) : vf_load_part(xr + k, cnt, fill);
    vf p, omp, nlh;
    vi act;
    class_prob(cx, bk, l, x, kk, &p, &omp, &nlh, &act);
    /* w last, and saturated: a weight near FLT_MAX times a coefficient above 1 is past float's range */
    vf gk = bk->gcoef[l] * (p - vsel(kk == vi_set(bk->y[l]), one(), zero())) * bk->w[l];
    gk = vmax(vmin(gk, vf_set(FLT_MAX)), vf_set(-FLT_MAX));
    if (cnt == FL_W) vf_store(gr + k, gk);
    else vf_store_part(gr + k, gk, cnt);
  }
}

/* Stage C for soft targets: the loss -sum_k t_k alpha_k (1-p_k)^g log p_k (+ Poly-1),
 * and its gradient -t_j G_j + p_j sum_k t_k G_k. Returns the weighted row loss. */
static float row_soft(const fl__ctx *cx, blk *bk, int l, int64_t r) {
  const int64_t c = cx->c;
  const float *xr = cx->b->x + r * c;
  const float *tr = cx->b->targets + r * c;
  const vi iota = vi_iota();
  const float fill = cx->probs ? 0.0f : -INFINITY;
  const float g = cx->gamma;
  vf vl = zero(), vtg = zero();
  for (int pass = 0; pass < 2; pass++) {
    vd vg2 = {0};
    for (int64_t k = 0; k < c; k += FL_W) {
      const int cnt = c - k < FL_W ? (int)(c - k) : FL_W;
      const vi kk = iota + (int32_t)k;
      vf x = cnt == FL_W ? vf_load(xr + k) : vf_load_part(xr + k, cnt, fill);
      vf t = cnt == FL_W ? vf_load(tr + k) : vf_load_part(tr + k, cnt, 0.0f);
      float ab[FL_W];
      for (int q = 0; q < FL_W; q++) ab[q] = q < cnt ? alpha_of(cx, k + q) : 0.0f;
      vf ak = vf_load(ab);
      vf p, om, nlh;
      vi act;
      class_prob(cx, bk, l, x, kk, &p, &om, &nlh, &act);
      vf mod = fl__vpow01(om, cx->pw);
      vf rho = vsel(om > zero(), nlh / vmax(om, vf_set(1e-30f)), vf_set(0.5f)); /* half the ratio: block_math */
      vf G = ak * mod * (1.0f + g * p * rho * 2.0f);
      if (cx->poly1) G += cx->epsilon * (g + 1.0f) * mod * p;
      /* padded lanes (x = -inf) would give 0 * inf here */
      G = vsel(act & (iota < vi_set(cnt)), G, zero());
      if (pass == 0) {
        vf term = vmin(ak * mod * nlh * 2.0f, vf_set(FLT_MAX));
        if (cx->poly1) term += cx->epsilon * mod * om;
        vl += vsel(t > zero(), t * term, zero());
        vtg += vsel(t > zero(), t * G, zero());
      } else if (cx->want_grad) {
        /* t = 0 takes no part, even where G overflowed (0 * inf would be NaN) */
        vf g1 = p * (float)vsum(vtg) - vsel(t > zero(), t * G, zero());
        /* the weight last, saturated; the norm squares the unweighted part and takes w^2 in double */
        vf gk = vmax(vmin(g1 * bk->w[l], vf_set(FLT_MAX)), vf_set(-FLT_MAX));
        if (cx->out->grad) {
          if (cnt == FL_W) vf_store(cx->out->grad + r * c + k, gk);
          else vf_store_part(cx->out->grad + r * c + k, gk, cnt);
        }
        if (cx->want_norm) vg2 += vd_sq(vsel(iota < vi_set(cnt), g1, zero()));
      }
    }
    if (pass == 0 && !cx->want_grad) break;
    if (pass == 1) bk->gn2[l] = vsum_d(vg2) * (double)bk->w[l] * (double)bk->w[l];
  }
  const double row = vsum(vl) * (double)bk->w[l];
  return row < FLT_MAX ? (float)row : FLT_MAX; /* a position's loss saturates (its lanes may already be inf) */
}

/* Reads labels (or the argmax of each target row), row weights, and checks them. */
static int block_labels(const fl__ctx *cx, blk *bk, int64_t *where) {
  const fl_batch *b = cx->b;
  const int64_t c = b->c;
  /* every lane starts as an ignored row: whole vectors, rather than field by field per lane */
  const vi none = vi_set(-1), zi = vi_set(0);
  memcpy(bk->y, &none, sizeof none);
  memcpy(bk->a, &zi, sizeof zi);
  float *const zeroed[] = {bk->w, bk->zm, bk->zy, bk->mo, bk->ey, bk->ent, bk->q2, bk->srest, bk->loss, bk->gcoef};
  for (size_t f = 0; f < sizeof zeroed / sizeof *zeroed; f++) vf_store(zeroed[f], zero());
  memset(bk->gn2, 0, sizeof bk->gn2);
  vf_store(bk->q2u, one());
  for (int l = 0; l < bk->cnt; l++) {
    const int64_t r = bk->r0 + l;
    if (b->targets) {
      const float *tr = b->targets + r * c;
      int64_t arg = 0;
      for (int64_t k = 0; k < c; k++) {
        float t = tr[k];
        if (!(t >= 0.0f && t <= 1.0f)) {
          *where = r * c + k;
          return FL_ETARGET;
        }
        if (t > tr[arg]) arg = k;
      }
      bk->y[l] = (int32_t)arg;
    } else {
      int64_t y = fl__label_at(b, r);
      if (y != cx->ignore) {
        if (y < 0 || y >= c) {
          *where = r;
          return FL_ELABEL;
        }
        bk->y[l] = (int32_t)y;
      }
    }
    if (b->weights) {
      float wv = b->weights[r];
      if (!(wv >= 0.0f) || !isfinite(wv)) {
        *where = r;
        return FL_EWEIGHT;
      }
      bk->w[l] = wv;
    } else {
      bk->w[l] = 1.0f;
    }
  }
  return 0;
}

int FL__CAT(fl__softmax_eval, FL_ISA)(const fl__ctx *cx, int64_t *where) {
  const fl_batch *b = cx->b;
  const int64_t rows = b->n * b->m;
  const int soft = b->targets != NULL;
  const int planar = !cx->probs && b->c <= PLANAR_C;
  fl__acc acc;
  blk bk;
  int64_t sample = 0, pos = 0; /* the row's sample and position: counted, not divided, per row */
  fl__acc_reset(&acc);
  for (int64_t r0 = 0; r0 < rows; r0 += FL_W) {
    bk.r0 = r0;
    bk.cnt = rows - r0 < FL_W ? (int)(rows - r0) : FL_W;
    int rc = block_labels(cx, &bk, where);
    if (rc) return rc;
    if (planar) {
      rc = planar_stats(cx, &bk, where);
      if (rc) return rc;
    } else {
      for (int l = 0; l < bk.cnt; l++) {
        rc = row_stats(cx, &bk, l, r0 + l, where);
        if (rc) return rc;
      }
    }
    block_math(cx, &bk, soft);
    for (int l = 0; l < bk.cnt; l++) {
      const int64_t r = r0 + l;
      if (bk.y[l] >= 0) {
        if (soft) {
          acc.loss += row_soft(cx, &bk, l, r);
          int anypos = 0;
          for (int64_t k = 0; k < cx->c && !anypos; k++) anypos = b->targets[r * cx->c + k] > 0.0f;
          acc.npos += anypos;
        } else {
          acc.loss += bk.loss[l];
          acc.npos += 1;
          if (cx->out->grad) row_grad_index(cx, &bk, l, r);
        }
        acc.gn2 += bk.gn2[l];
        acc.count += 1;
        if (cx->want_scores) {
          fl__acc_score(&acc, bk.p_t[l], bk.p_max[l], bk.margin[l], bk.nm[l], bk.entn[l], bk.cw[l], bk.el2n[l],
                        bk.a[l] == bk.y[l] ? 1.0f : 0.0f);
          if (b->m == 1) acc.pred = bk.a[l];
        }
      } else if (cx->out->grad) {
        row_grad_index(cx, &bk, l, r);
      }
      if (++pos == b->m) {
        fl__acc_finish(cx, sample++, &acc);
        fl__acc_reset(&acc);
        pos = 0;
      }
    }
  }
  return 0;
}
