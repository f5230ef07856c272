/* fl_sigmoid.c — the sigmoid family: sigmoid focal (every profile), FL*, Poly-1 and ASL.
 *
 * Every (position, class) element is an independent binary problem with
 * probability s = sigmoid(z) and target t in [0, 1]. One fused pass per
 * element computes s, 1 - s and both -log s, -log(1 - s) from a single
 * e^-|z|, then the loss, its derivative with respect to z and the parts the
 * difficulty scores need.
 *
 * Three traversals feed the same element code:
 *   flat    dense targets: a sample's m*c elements are contiguous, so they are
 *           read 16 at a time without regard to rows;
 *   row     class-index labels with c >= 16: one position at a time, vectors
 *           across its classes (the classification case, c = 80 for COCO);
 *   planar  class-index labels with c < 16: 16 positions at a time, one vector
 *           per class gathered across them (binary masks, small label sets).
 *
 * This file is compiled once per instruction-set variant; FL_ISA names the copy.
 */
#include <float.h>
#include <math.h>

#include "fl_internal.h"

#ifndef FL_ISA
#define FL_ISA generic
#endif

#define LOG_ASL_EPS -18.420680743952367f /* log(1e-8) */

/* Loops are compiled twice: once for any loss, branching per vector on the
 * loss and profile, and once for the default (torchvision sigmoid focal on
 * logits) with those branches resolved at compile time. */
enum { SPEC_ANY = 0, SPEC_TV_LOGITS = 1 };

static int spec_of(const fl__ctx *cx) {
  return cx->p->loss == FL_SIGMOID_FOCAL && cx->p->profile == FL_PROFILE_TORCHVISION && !cx->probs && !cx->pos_weight
             ? SPEC_TV_LOGITS
             : SPEC_ANY;
}

/* One vector of elements: what goes in, and what the element code computes. */
typedef struct el {
  vf x, t;          /* input (logit or probability) and target */
  vf a_pos, a_neg;  /* alpha on the positive and negative parts; 1 and 1 when off */
  vf w;             /* element weight */
  vf pw;            /* pos_weight of the lane's class; read only when cx->pos_weight is set */
  vi live;          /* lanes that count (in range, row not ignored) */
  int hard;         /* every target is exactly 0 or 1 */
  vf loss, grad;    /* weighted element loss and d loss / d z; 0 in dead lanes */
  int weighted;     /* the loss code applied w itself (pos_weight: see el_ce_products) */
  vf s_pos, s_neg;  /* sigmoid(z), 1 - sigmoid(z) */
  vf nl_pos, nl_neg;/* -log s_pos, -log s_neg */
  vf z;             /* the logit (implied by the probability for probability input) */
} el;

static inline vf zero(void) {
  return vf_set(0.0f);
}

static inline vf one(void) {
  return vf_set(1.0f);
}

static inline vf vb(vi mask) {
  return vsel(mask, one(), zero());
}

/* v limited to [-FLT_MAX, FLT_MAX]. */
static inline vf vsat(vf v) {
  return vmax(vmin(v, vf_set(FLT_MAX)), vf_set(-FLT_MAX));
}

/* Sigmoid parts from a logit: one exponential and one log1p serve all four. */
FL__HOT void el_parts(const fl__ctx *cx, el *e, int spec) {
  vf x = e->x;
  if (spec == SPEC_TV_LOGITS || !cx->probs) {
    vf E = fl__vexpneg(-vabs(x));
    vf inv = 1.0f / (1.0f + E);
    vf L1 = fl__vlog1p01(E);
    vi pos = x >= zero();
    e->s_pos = vsel(pos, inv, E * inv);
    e->s_neg = vsel(pos, E * inv, inv);
    e->nl_pos = vmax(-x, zero()) + L1;
    e->nl_neg = vmax(x, zero()) + L1;
    e->z = x;
  } else {
    e->s_pos = x;
    e->s_neg = 1.0f - x; /* exact for x in [0.5, 1]; accurate elsewhere */
    e->nl_pos = -vmax(fl__vlog(x), vf_set(FL__LOG_FLOOR));
    e->nl_neg = -vmax(fl__vlog1m(x), vf_set(FL__LOG_FLOOR));
    e->z = e->nl_neg - e->nl_pos;
  }
}

/* With pos_weight the cross-entropy's positive term pos_weight t (-log s) can pass float's range where the
 * element's loss does not: a small alpha_t, modulating factor or weight brings it back. So the factors are
 * multiplied first (A = alpha_t x modulation x weight, at most FLT_MAX), each log comes last, and only the
 * sums saturate; a saturated cross-entropy times a factor below 1 would be too small. The loss is
 * A (tp (-log s) + u (-log(1-s))) and its derivative A (K ce + d ce / dz), K the modulation's log-derivative. */
FL__HOT void el_ce_products(el *e, vf A, vf K, vf tp, vf u, vf nlp, vf nln, vi act_p, vi act_n) {
  vf Ap = vsat(A * tp), An = A * u; /* An <= A <= FLT_MAX */
  e->loss = vsat(Ap * nlp + An * nln);
  vf Kp = vsat(K * Ap), Kn = vsat(K * An);
  /* each term within +-FLT_MAX, so their sum may be infinite but never NaN */
  e->grad = vsat(vsat(Kp * nlp) + vsat(Kn * nln) + vsel(act_n, An * e->s_pos, zero()) -
                 vsel(act_p, Ap * e->s_neg, zero()));
  e->weighted = 1;
}

/* The sigmoid focal loss and its Poly-1 extension, in each profile. */
FL__HOT void el_focal(const fl__ctx *cx, el *e, vf a_t, int spec) {
  const int fast = spec == SPEC_TV_LOGITS;
  vf t = e->t, u = one() - t;
  vf s_pos = e->s_pos, s_neg = e->s_neg;
  vf nlp = e->nl_pos, nln = e->nl_neg;
  vf g = vf_set(cx->gamma);
  vf sp = s_pos * s_neg; /* d sigmoid / dz */
  /* Whether -log s and -log(1-s) still vary with z: not where a clamp or clip holds them. */
  vi act_p = vi_set(-1), act_n = vi_set(-1);
  if (!fast && cx->keras) {
    /* Keras clips s to [eps, 1 - eps] inside its cross-entropy (not in p_t);
     * 1 - s then lies in [1 - (1 - eps), 1 - eps] as float32 computes it. */
    act_p = (s_pos > vf_set(FL__KERAS_EPS)) & (s_pos < vf_set(FL__KERAS_ONE_MINUS_EPS));
    act_n = (s_neg > vf_set(FL__KERAS_CEPS)) & (s_neg < vf_set(FL__KERAS_ONE_MINUS_EPS));
    nlp = -fl__vlog(vmin(vmax(s_pos, vf_set(FL__KERAS_EPS)), vf_set(FL__KERAS_ONE_MINUS_EPS)));
    nln = -fl__vlog(vmin(vmax(s_neg, vf_set(FL__KERAS_CEPS)), vf_set(FL__KERAS_ONE_MINUS_EPS)));
  } else if (!fast && cx->probs) {
    act_p = nlp < vf_set(-FL__LOG_FLOOR);
    act_n = nln < vf_set(-FL__LOG_FLOOR);
  }
  /* pos_weight scales the positive term of the cross-entropy (torch's BCEWithLogitsLoss): tp = pos_weight t.
   * Its products can pass float's range; they saturate (sat != 0), so that a zero alpha, modulation
   * or weight still gives 0, not 0 * inf. Without it nothing here can overflow. */
  const int sat = !fast && cx->pos_weight != NULL;
  vf tp = sat ? t * e->pw : t;
  /* Both terms are >= 0, so the cross-entropy never cancels, even for soft t near 1. */
  vf ce = tp * nlp + u * nln;
  vf q = t * s_neg + u * s_pos; /* 1 - p_t, from the accurate tails */
  if (!fast && cx->kornia) {
    /* kornia: alpha t s_neg^g (-log s) + (1-alpha)(1-t) s^g (-log(1-s)). */
    vf lp = e->a_pos * tp * fl__vpow01(s_neg, cx->pw);
    vf ln = e->a_neg * u * fl__vpow01(s_pos, cx->pw);
    if (sat) {
      /* the weight before the logs, as in el_ce_products */
      lp = vsat(lp * e->w);
      ln = ln * e->w;
      e->weighted = 1;
    }
    e->loss = lp * nlp + ln * nln;
    if (sat) e->loss = vsat(e->loss);
    if (cx->want_grad) {
      /* a zero weight times a logit near FLT_MAX must give 0, not 0 * inf */
      vf gp = vsel(lp > zero(), lp * (-(g * s_pos * nlp) - s_neg), zero());
      vf gn = vsel(ln > zero(), ln * (g * s_neg * nln + s_pos), zero());
      e->grad = gp + gn;
      if (sat) e->grad = vsat(e->grad);
    }
    return;
  }
  /* d ce / dz = s - t, written without cancellation at t = 0 or 1 */
  vf dce = vsel(act_n, u * s_pos, zero()) - vsel(act_p, tp * s_neg, zero());
  if (!fast && cx->monai && !e->hard) {
    /* MONAI modulates by sigmoid(-z(2t-1))^g, which equals (1-p_t)^g only for hard t. */
    vf v = (2.0f * t - 1.0f) * e->z;
    vf E = fl__vexpneg(-vabs(v));
    vf inv = 1.0f / (1.0f + E);
    vi vpos = v >= zero();
    vf s_mv = vsel(vpos, E * inv, inv); /* sigmoid(-v) */
    vf s_v = vsel(vpos, inv, E * inv);  /* sigmoid(v) */
    vf mod = fl__vpow01(s_mv, cx->pw);
    if (sat) {
      el_ce_products(e, a_t * mod * e->w, g * (1.0f - 2.0f * t) * s_v, tp, u, nlp, nln, act_p, act_n);
      return;
    }
    e->loss = a_t * mod * ce;
    if (cx->want_grad) {
      vf d = dce - g * (2.0f * t - 1.0f) * s_v * ce;
      e->grad = vsel(mod > zero(), a_t * mod * d, zero());
    }
    return;
  }
  vf mod = fl__vpow01(q, cx->pw);
  /* d(q^g)/dz = g q^g (1-2t) s'/q; s'/q stays bounded (it is s for t = 1,
   * 1 - s for t = 0), so no q^(g-1) blows up when 0 < g < 1. (A division: only where a gradient is asked for.) */
  if (sat) {
    vf r = cx->want_grad ? vsel(q > zero(), sp / vmax(q, vf_set(1e-30f)), zero()) : zero();
    el_ce_products(e, a_t * mod * e->w, g * (1.0f - 2.0f * t) * r, tp, u, nlp, nln, act_p, act_n);
  } else {
    e->loss = a_t * mod * ce;
    if (cx->want_grad) {
      vf r = vsel(q > zero(), sp / vmax(q, vf_set(1e-30f)), zero());
      e->grad = a_t * mod * (g * (1.0f - 2.0f * t) * r * ce + dce);
    }
  }
  if (!fast && cx->poly1) {
    vf eps = vf_set(cx->epsilon);
    vf wp = sat ? e->w : one(); /* el_ce_products applied the weight */
    e->loss += wp * eps * mod * q;
    if (cx->want_grad) e->grad += wp * eps * (g + 1.0f) * mod * (1.0f - 2.0f * t) * sp;
    if (sat) {
      e->loss = vsat(e->loss);
      e->grad = vsat(e->grad);
    }
  }
}

/* FL* (fvcore's sigmoid_focal_loss_star): alpha_t softplus(-g z (2t-1)) / g. */
FL__HOT void el_focal_star(const fl__ctx *cx, el *e, vf a_t) {
  vf uu = 2.0f * e->t - 1.0f;
  vf uz = uu * e->z;
  /* gamma z may pass float's range: kept finite, so that an alpha or weight of 0 gives 0, not 0 * inf */
  vf w = vmax(vmin(cx->gamma * uz, vf_set(FLT_MAX)), vf_set(-FLT_MAX));
  vf E = fl__vexpneg(-vabs(w));
  vf inv = 1.0f / (1.0f + E);
  vf sm = vsel(w >= zero(), E * inv, inv); /* sigmoid(-w) */
  /* softplus(-w) / gamma = max(-uz, 0) + log1p(E) / gamma: the linear part is taken without gamma, whose
   * product with z may pass float's range where the loss does not (gamma 2, z = 3e38, t = 0: 3e38, not
   * FLT_MAX / 2); 1 / gamma may push the other part past it */
  e->loss = vmin(a_t * vmax(-uz, zero()) + a_t * fl__vlog1p01(E) / cx->gamma, vf_set(FLT_MAX));
  if (cx->want_grad) e->grad = -(a_t * uu * sm);
}

/* ASL (Ridnik et al.): negatives' probability shifted by clip, separate focusing
 * for positives and negatives, logs clamped at 1e-8 as the reference does. */
FL__HOT void el_asl(const fl__ctx *cx, el *e, vf a_t) {
  vf t = e->t, u = one() - t;
  vf s_pos = e->s_pos, s_neg = e->s_neg;
  vf sp = s_pos * s_neg;
  vf xs_neg = s_neg, om_neg = s_pos; /* shifted negative probability and 1 - it */
  vi unclamped = vi_set(-1);
  vf ln;
  if (cx->clip > 0.0f) {
    vf sn = s_neg + cx->clip;
    unclamped = sn < one();
    xs_neg = vmin(sn, one());
    om_neg = vmax(s_pos - cx->clip, zero());
    ln = vmax(fl__vlog(xs_neg), vf_set(LOG_ASL_EPS));
  } else {
    ln = vmax(-e->nl_neg, vf_set(LOG_ASL_EPS));
  }
  vf lp = vmax(-e->nl_pos, vf_set(LOG_ASL_EPS));
  vf A = t * lp + u * ln;
  vf q = t * s_neg + u * om_neg; /* 1 - p_t with the shifted negative */
  vf ge = cx->p->gamma_pos * t + cx->p->gamma_neg * u;
  vf B;
  if (e->hard)
    B = vsel(t > vf_set(0.5f), fl__vpow01(s_neg, cx->pw_pos), fl__vpow01(om_neg, cx->pw_neg));
  else
    B = fl__vpow01_v(q, ge);
  e->loss = -(A * B) * a_t;
  if (cx->want_grad) {
    vf dA = t * vsel(s_pos > vf_set(FL__ASL_EPS), s_neg, zero()) +
            u * vsel(unclamped & (xs_neg > vf_set(FL__ASL_EPS)), -sp / vmax(xs_neg, vf_set(FL__ASL_EPS)), zero());
    vf dq = sp * (u * vb(unclamped) - t);
    /* q is floored at 1e-30 in the division: near ASL's clip kink with
     * gamma_neg < 1 the true gradient is unbounded; it is capped here. */
    vf dB = vsel(q > zero(), ge * B * dq / vmax(q, vf_set(1e-30f)), zero());
    e->grad = -(dA * B + A * dB) * a_t;
  }
}

/* Evaluates one vector of elements; dead lanes get zero loss and gradient. */
FL__HOT void el_eval(const fl__ctx *cx, el *e, int spec) {
  el_parts(cx, e, spec);
  vf a_t = e->t * e->a_pos + (one() - e->t) * e->a_neg;
  e->grad = zero();
  e->weighted = 0;
  switch (spec == SPEC_TV_LOGITS ? FL_SIGMOID_FOCAL : cx->p->loss) {
  case FL_SIGMOID_FOCAL_STAR: el_focal_star(cx, e, a_t); break;
  case FL_ASL: el_asl(cx, e, a_t); break;
  default: el_focal(cx, e, a_t, spec); break;
  }
  if (e->weighted) {
    e->loss = vsel(e->live, e->loss, zero());
    e->grad = vsel(e->live, e->grad, zero());
    return;
  }
  /* an element's weighted loss is a float: at most FLT_MAX (a weight above 1 can take it past) */
  e->loss = vsel(e->live, cx->b->weights ? vmin(e->loss * e->w, vf_set(FLT_MAX)) : e->loss, zero());
  if (cx->want_grad) {
    vf gw = e->grad * e->w;
    if (cx->b->weights) gw = vsat(gw); /* a weight near FLT_MAX times a derivative above 1 is past float's range */
    e->grad = vsel(e->live, gw, zero());
  }
}

/* Lanes whose input is invalid: non-finite logits, or probabilities outside [0, 1]. */
FL__HOT vi bad_x(const fl__ctx *cx, vf x) {
  if (cx->probs) return ~((x >= zero()) & (x <= one()));
  return vnonfinite(x);
}

FL__HOT vi bad_unit(vf v) {
  return ~((v >= zero()) & (v <= one()));
}

FL__HOT vi bad_weight(vf v) {
  return ~(v >= zero()) | vnonfinite(v);
}

/* cleanlab's confidence-weighted entropy from self-confidence and normalised entropy. */
FL__HOT vf vcw(vf p_t, vf ent) {
  vf s = ent / vmax(p_t, vf_set((float)FL__CLEANLAB_MIN));
  vf l = vsel(s <= one(), fl__vlog1p01(vmin(s, one())), fl__vlog(1.0f + s));
  return l / vmax(s, vf_set((float)FL__CLEANLAB_MIN));
}

/* Losses are summed in float lanes, each loss at most FLT_MAX; a lane of them can pass float's range where
 * the sample's mean does not. Each kernel below takes `exact`, a constant: 0 sums losses in float lanes and
 * records in *ovf the lanes that passed float's range; when any did, the whole call is taken again with 1,
 * which sums them in double lanes (SPECIALISED). Only inputs near FLT_MAX ever need the second pass, and
 * the first one pays one check every 64 vectors for it. */
#define FL__AGAIN 1 /* a kernel's answer: take the call again with exact set */

/* Per-lane sums for one sample, reduced into the sample's double sums every
 * so often so that float rounding does not build up over large samples. */
typedef struct vacc {
  vd gn2;           /* squared gradients in double: a float square overflows for entries above 1.8e19 */
  vd loss_d;        /* losses on the exact pass */
  vf loss, npos, rows, p_t, p_max, margin, nm, ent, cw, el2n, correct;
  int pending;
} vacc;

FL__HOT void vacc_reset(vacc *v) {
  v->gn2 = v->loss_d = (vd){0};
  v->loss = v->npos = v->rows = vf_set(0.0f);
  v->p_t = v->p_max = v->margin = v->nm = v->ent = v->cw = v->el2n = v->correct = vf_set(0.0f);
  v->pending = 0;
}

/* Adds the lanes into a's double sums: only the fields this call computes,
 * since a small sample (80 elements) cannot afford eleven reductions. */
/* Adds a vector of losses to v's lanes. */
FL__HOT void vacc_loss(vacc *v, vf loss, int exact) {
  if (exact) v->loss_d += vd_of(loss);
  else v->loss += loss;
}

FL__HOT void vacc_drain(const fl__ctx *cx, vacc *v, fl__acc *a, int exact, vi *ovf) {
  if (exact) {
    a->loss += vsum_d(v->loss_d);
  } else {
    *ovf |= vnonfinite(v->loss);
    a->loss += vsum(v->loss);
  }
  a->npos += (int64_t)vsum(v->npos);
  if (cx->want_norm) a->gn2 += vsum_d(v->gn2);
  if (cx->want_scores) {
    a->rows += (int64_t)vsum(v->rows);
    a->p_t += vsum(v->p_t);
    a->p_max += vsum(v->p_max);
    a->margin += vsum(v->margin);
    a->norm_margin += vsum(v->nm);
    a->entropy += vsum(v->ent);
    a->cw_entropy += vsum(v->cw);
    a->el2n += vsum(v->el2n);
    a->correct += vsum(v->correct);
  }
  vacc_reset(v);
}

FL__HOT void vacc_tick(const fl__ctx *cx, vacc *v, fl__acc *a, int exact, vi *ovf) {
  if (++v->pending == 64) vacc_drain(cx, v, a, exact, ovf);
}

/* Element-view scores (each element a binary problem), added to v for scored lanes. */
FL__HOT void score_elements(vacc *v, const el *e, vi scored) {
  vf t = e->t;
  vf p_t = t * e->s_pos + (1.0f - t) * e->s_neg;
  vf ent = (e->s_pos * e->nl_pos + e->s_neg * e->nl_neg) * (1.0f / FL_LN2);
  vi ok = (e->z >= zero()) == (t >= vf_set(0.5f));
  v->p_t += vsel(scored, p_t, zero());
  /* clamped so that a lane's 64 pending terms cannot overflow float (inf - inf would be NaN) */
  vf mg = vmax(vmin((2.0f * t - 1.0f) * e->z, vf_set(1e36f)), vf_set(-1e36f));
  v->margin += vsel(scored, mg, zero());
  v->nm += vsel(scored, p_t, zero());
  v->p_max += vsel(scored, vmax(e->s_pos, e->s_neg), zero());
  v->ent += vsel(scored, ent, zero());
  v->cw += vsel(scored, vcw(p_t, ent), zero());
  v->el2n += vsel(scored, 1.41421356f * vabs(e->s_pos - t), zero());
  v->correct += vsel(scored & ok, one(), zero());
  v->rows += vb(scored);
}

/* After a vector pass saw a bad lane in elements [from, to) (row-major (n, m, c)):
 * finds the first bad element in flat order and names its tensor. Rows whose
 * label is ignored still have their inputs checked. */
static int locate_bad(const fl__ctx *cx, int64_t from, int64_t to, int64_t *where) {
  const fl_batch *b = cx->b;
  for (int64_t e = from; e < to; e++) {
    if (fl__find_bad_x(cx, e, e + 1) >= 0) {
      *where = e;
      return cx->probs ? FL_EPROB : FL_EINPUT;
    }
    if (b->targets && fl__find_bad_unit(b->targets, e, e + 1) >= 0) {
      *where = e;
      return FL_ETARGET;
    }
    if (b->weights && fl__find_bad_weight(b->weights, e, e + 1) >= 0) {
      *where = e;
      return FL_EWEIGHT;
    }
  }
  return FL_EINPUT; /* not reached: the vector pass saw a bad lane here */
}

/* Dense targets: a sample's elements are read flat, 16 at a time. */
FL__HOT int eval_flat_spec(const fl__ctx *cx, int64_t *where, int spec, int exact) {
  const fl_batch *b = cx->b;
  const int64_t len = b->m * b->c;
  const int want_scores = cx->want_scores;
  const vi iota = vi_iota();
  const float fill = cx->probs ? 0.5f : 0.0f;
  /* Class of each lane, advanced by FL_W mod c per vector: only per-class alpha needs it. */
  int32_t k0[FL_W];
  for (int l = 0; l < FL_W; l++) k0[l] = (int32_t)(l % b->c);
  const int32_t kstep = (int32_t)(FL_W % b->c);
  vi ovf = vi_set(0);

  for (int64_t i = 0; i < b->n; i++) {
    const int64_t base = i * len;
    fl__acc acc;
    vacc v;
    fl__acc_reset(&acc);
    vacc_reset(&v);
    int32_t kl[FL_W];
    memcpy(kl, k0, sizeof kl);
    vi bad = vi_set(0); /* lanes that saw invalid input; checked once per sample */
    for (int64_t e0 = 0; e0 < len; e0 += FL_W) {
      const int cnt = len - e0 < FL_W ? (int)(len - e0) : FL_W;
      el e;
      e.live = iota < vi_set(cnt);
      e.hard = 0;
      e.x = cnt == FL_W ? vf_load(b->x + base + e0) : vf_load_part(b->x + base + e0, cnt, fill);
      e.t = cnt == FL_W ? vf_load(b->targets + base + e0) : vf_load_part(b->targets + base + e0, cnt, 0.0f);
      bad |= (bad_x(cx, e.x) | bad_unit(e.t)) & e.live;
      if (b->weights) {
        e.w = cnt == FL_W ? vf_load(b->weights + base + e0) : vf_load_part(b->weights + base + e0, cnt, 0.0f);
        bad |= bad_weight(e.w) & e.live;
      } else {
        e.w = one();
      }
      if (cx->pos_weight) {
        float pp[FL_W];
        for (int l = 0; l < FL_W; l++) pp[l] = cx->pos_weight[kl[l]];
        e.pw = vf_load(pp);
      } else {
        e.pw = one();
      }
      if (cx->alpha_c) {
        float ap[FL_W];
        for (int l = 0; l < FL_W; l++) ap[l] = cx->alpha_c[kl[l]];
        e.a_pos = vf_load(ap);
        e.a_neg = 1.0f - e.a_pos;
      } else if (cx->alpha_on) {
        e.a_pos = vf_set(cx->alpha);
        e.a_neg = vf_set(1.0f - cx->alpha);
      } else {
        e.a_pos = e.a_neg = one();
      }
      if (cx->alpha_c || cx->pos_weight) {
        for (int l = 0; l < FL_W; l++) {
          kl[l] += kstep;
          if (kl[l] >= b->c) kl[l] -= (int32_t)b->c;
        }
      }
      el_eval(cx, &e, spec);
      vacc_loss(&v, e.loss, exact);
      v.npos += vsel(e.live & (e.t > zero()), one(), zero());
      if (cx->want_grad) {
        if (cx->out->grad) {
          if (cnt == FL_W) vf_store(cx->out->grad + base + e0, e.grad);
          else vf_store_part(cx->out->grad + base + e0, e.grad, cnt);
        }
        if (cx->want_norm) v.gn2 += vd_sq(e.grad);
      }
      if (want_scores) score_elements(&v, &e, e.live);
      vacc_tick(cx, &v, &acc, exact, &ovf);
    }
    if (vany(bad)) return locate_bad(cx, base, base + len, where);
    vacc_drain(cx, &v, &acc, exact, &ovf);
    acc.count = len;
    if (b->m == 1 && b->c == 1) acc.pred = b->x[base] >= (cx->probs ? 0.5f : 0.0f) ? 1 : 0;
    fl__acc_finish(cx, i, &acc);
  }
  return vany(ovf) ? FL__AGAIN : 0;
}

/* Checks a label; returns 1 if the row is to be evaluated, 0 if ignored, -1 if invalid. */
FL__HOT int label_ok(const fl__ctx *cx, int64_t y) {
  if (y == cx->ignore) return 0;
  return y >= 0 && y <= cx->c ? 1 : -1;
}

/* Class-index labels, c >= FL_W: one row at a time, vectors across classes. */
FL__HOT int eval_rows_spec(const fl__ctx *cx, int64_t *where, int spec, int exact) {
  const fl_batch *b = cx->b;
  const int64_t c = b->c;
  const vi iota = vi_iota();
  const float fill = cx->probs ? 0.5f : 0.0f;
  fl__acc acc;
  fl__acc_reset(&acc);
  vi ovf = vi_set(0);
  for (int64_t r = 0; r < b->n * b->m; r++) {
    const int64_t y = fl__label_at(b, r);
    const int use = label_ok(cx, y);
    const float *xr = b->x + r * c;
    if (use < 0) {
      *where = r;
      return FL_ELABEL;
    }
    vf vl = zero();
    vd vld = {0}, vg2 = {0}; /* vld: the losses on the exact pass */
    vf s_y = zero(), z_y = zero(), h = zero(), sq = zero();
    vf mo_z = vf_set(-INFINITY), mo_s = vf_set(-1.0f), mx_s = vf_set(0.0f);
    vf best = vf_set(-INFINITY);
    vi best_k = vi_set(0);
    vi bad = vi_set(0);
    for (int64_t k = 0; k < c; k += FL_W) {
      const int cnt = c - k < FL_W ? (int)(c - k) : FL_W;
      const vi kk = iota + (int32_t)k;
      el e;
      e.live = (iota < vi_set(cnt)) & vi_set(use ? -1 : 0);
      e.hard = 1;
      e.x = cnt == FL_W ? vf_load(xr + k) : vf_load_part(xr + k, cnt, fill);
      const vi in = iota < vi_set(cnt);
      bad |= bad_x(cx, e.x) & in;
      if (b->weights) {
        e.w = cnt == FL_W ? vf_load(b->weights + r * c + k) : vf_load_part(b->weights + r * c + k, cnt, 0.0f);
        bad |= bad_weight(e.w) & in;
      } else {
        e.w = one();
      }
      if (!use) {
        /* an ignored row contributes nothing: its gradient is zero, and must be written as such */
        if (cx->out->grad) {
          if (cnt == FL_W) vf_store(cx->out->grad + r * c + k, zero());
          else vf_store_part(cx->out->grad + r * c + k, zero(), cnt);
        }
        continue;
      }
      e.t = vb(kk == vi_set((int32_t)y));
      e.pw = cx->pos_weight ? vf_load_part(cx->pos_weight + k, cnt, 0.0f) : one();
      if (cx->alpha_c) {
        e.a_pos = vf_load_part(cx->alpha_c + k, cnt, 0.0f);
        e.a_neg = 1.0f - e.a_pos;
      } else if (cx->alpha_on) {
        e.a_pos = vf_set(cx->alpha);
        e.a_neg = vf_set(1.0f - cx->alpha);
      } else {
        e.a_pos = e.a_neg = one();
      }
      el_eval(cx, &e, spec);
      if (exact) vld += vd_of(e.loss);
      else vl += e.loss;
      if (cx->want_grad) {
        if (cx->out->grad) {
          if (cnt == FL_W) vf_store(cx->out->grad + r * c + k, e.grad);
          else vf_store_part(cx->out->grad + r * c + k, e.grad, cnt);
        }
        if (cx->want_norm) vg2 += vd_sq(e.grad);
      }
      if (cx->want_scores) {
        vi is_y = e.live & (e.t > zero());
        vi other = e.live & ~is_y;
        s_y += vsel(is_y, e.s_pos, zero());
        z_y += vsel(is_y, e.z, zero());
        mo_z = vsel(other & (e.z > mo_z), e.z, mo_z);
        mo_s = vsel(other & (e.s_pos > mo_s), e.s_pos, mo_s);
        mx_s = vsel(e.live & (e.s_pos > mx_s), e.s_pos, mx_s);
        vi better = e.live & (e.z > best);
        best = vsel(better, e.z, best);
        best_k = (better & kk) | (~better & best_k);
        vf d = e.s_pos - e.t;
        sq += vsel(e.live, d * d, zero());
        h += vsel(e.live, e.s_pos * e.nl_pos + e.s_neg * e.nl_neg, zero());
      }
    }
    if (vany(bad)) return locate_bad(cx, r * c, r * c + c, where);
    if (use) {
      if (exact) {
        acc.loss += vsum_d(vld);
      } else {
        ovf |= vnonfinite(vl);
        acc.loss += vsum(vl);
      }
      if (cx->want_norm) acc.gn2 += vsum_d(vg2);
      acc.count += c;
      acc.npos += y < c;
      if (cx->want_scores && y < c) {
        float bz = vhmax(best);
        int32_t pred = INT32_MAX;
        for (int l = 0; l < FL_W; l++)
          if (best[l] == bz && best_k[l] < pred) pred = best_k[l];
        float py = (float)vsum(s_y);
        float ent = (float)(vsum(h) / ((double)c * FL_LN2));
        float cw = (float)fl__cw(py, ent);
        fl__acc_score(&acc, py, vhmax(mx_s), 0.0f, (py - vhmax(mo_s) + 1.0f) * 0.5f, ent, cw,
                      sqrtf((float)vsum(sq)), pred == y ? 1.0f : 0.0f);
        acc.margin += vsum(z_y) - (double)vhmax(mo_z);
        if (b->m == 1) acc.pred = pred;
      }
    }
    if ((r + 1) % b->m == 0) {
      fl__acc_finish(cx, r / b->m, &acc);
      fl__acc_reset(&acc);
    }
  }
  return vany(ovf) ? FL__AGAIN : 0;
}

/* Row results of a planar block, one lane per row. */
typedef struct prow {
  vd gn2;
  vd loss_d; /* the losses on the exact pass */
  vf loss, npos, count;
  vi scored;
  vf p_t, p_max, margin, nm, ent, cw, el2n, correct;
  vf z_y, mo_z; /* the margin's two logits, so sums can take their difference in double */
  vi pred;
} prow;

/* Labels r0 .. r0+cnt-1 as a vector, checked in their own width (an int64
 * label of 2^32 + 1 is out of range, not 1). *use gets the rows that count,
 * *bad the rows whose label is out of range. Lanes past cnt are dead. */
FL__HOT vi load_labels(const fl__ctx *cx, int64_t r0, int cnt, vi *use, vi *bad) {
  const fl_batch *b = cx->b;
  const vi in = vi_iota() < vi_set(cnt);
  vi y = vi_set(-1);
  if (b->label_type == FL_LABEL_I64) {
    typedef int64_t vl __attribute__((vector_size(FL_W * sizeof(int64_t))));
    vl v = {0};
    if (cnt == FL_W) memcpy(&v, (const int64_t *)b->labels + r0, sizeof v);
    else
      for (int l = 0; l < cnt; l++) v[l] = ((const int64_t *)b->labels)[r0 + l];
    typedef int64_t vlm __attribute__((vector_size(FL_W * sizeof(int64_t))));
    vlm ign = (v == (vl){0} + cx->ignore);
    vlm out = (v < (vl){0}) | (v > (vl){0} + cx->c);
    *use = in & ~__builtin_convertvector(ign, vi);
    *bad = *use & __builtin_convertvector(out, vi);
    y = __builtin_convertvector(v, vi);
  } else {
    int32_t t[FL_W];
    for (int l = 0; l < FL_W; l++)
      t[l] = l >= cnt ? -1 : b->label_type == FL_LABEL_U8 ? ((const uint8_t *)b->labels)[r0 + l] : ((const int32_t *)b->labels)[r0 + l];
    memcpy(&y, t, sizeof y);
    /* an ignore value outside int32 can match no int32 label */
    vi ign = cx->ignore >= INT32_MIN && cx->ignore <= INT32_MAX ? (y == vi_set((int32_t)cx->ignore)) : vi_set(0);
    *use = in & ~ign;
    *bad = *use & ((y < vi_set(0)) | (y > vi_set((int32_t)cx->c)));
  }
  return vsel_i(*use, y, vi_set(-1));
}

/* Evaluates rows r0 .. r0+cnt-1 (c < FL_W) with one vector per class; two
 * classes (a segmentation's background and foreground) are split from the
 * interleaved rows in registers, other counts are gathered. */
FL__HOT int planar_block(const fl__ctx *cx, int64_t r0, int cnt, prow *pr, int64_t *where, int spec, int exact) {
  const fl_batch *b = cx->b;
  const int64_t c = b->c;
  const vi iota = vi_iota();
  const vi in = iota < vi_set(cnt);
  const float fill = cx->probs ? 0.5f : 0.0f;
  vi live, bad_label;
  const vi Y = load_labels(cx, r0, cnt, &live, &bad_label);
  if (vany(bad_label)) {
    for (int l = 0; l < cnt; l++) {
      if (bad_label[l]) {
        *where = r0 + l;
        return FL_ELABEL;
      }
    }
  }
  vf x2[2], w2[2];
  const int pairs = c == 2 && cnt == FL_W;
  if (pairs) {
    vf_deinterleave2(b->x + r0 * 2, &x2[0], &x2[1]);
    if (b->weights) vf_deinterleave2(b->weights + r0 * 2, &w2[0], &w2[1]);
  }
  const int element_view = c == 1;

  vf vl = zero(), s_y = zero(), z_y = zero(), h = zero(), sq = zero();
  vd vld = {0}, vg2 = {0};
  vf mo_z = vf_set(-INFINITY), mo_s = vf_set(-1.0f), mx_s = vf_set(0.0f), best = vf_set(-INFINITY);
  vi best_k = vi_set(0);
  vi bad = vi_set(0);
  vacc ev;
  vacc_reset(&ev);
  for (int64_t k = 0; k < c; k++) {
    float xb[FL_W], wb[FL_W];
    el e = {0};
    if (pairs) {
      e.x = x2[k];
    } else {
      for (int l = 0; l < FL_W; l++) xb[l] = l < cnt ? b->x[(r0 + l) * c + k] : fill;
      e.x = vf_load(xb);
    }
    bad |= bad_x(cx, e.x) & in;
    e.live = live;
    e.hard = 1;
    e.t = vb(Y == vi_set((int32_t)k));
    if (b->weights) {
      if (pairs) {
        e.w = w2[k];
      } else {
        for (int l = 0; l < FL_W; l++) wb[l] = l < cnt ? b->weights[(r0 + l) * c + k] : 0.0f;
        e.w = vf_load(wb);
      }
      bad |= bad_weight(e.w) & in;
    } else {
      e.w = one();
    }
    float a = cx->alpha_c ? cx->alpha_c[k] : cx->alpha_on ? cx->alpha : -1.0f;
    if (cx->pos_weight) e.pw = vf_set(cx->pos_weight[k]);
    e.a_pos = a >= 0.0f ? vf_set(a) : one();
    e.a_neg = a >= 0.0f ? vf_set(1.0f - a) : one();
    el_eval(cx, &e, spec);
    if (exact) vld += vd_of(e.loss);
    else vl += e.loss;
    if (cx->want_grad) {
      if (cx->out->grad) {
        float gb[FL_W];
        vf_store(gb, e.grad);
        for (int l = 0; l < cnt; l++) cx->out->grad[(r0 + l) * c + k] = gb[l];
      }
      if (cx->want_norm) vg2 += vd_sq(e.grad);
    }
    if (!cx->want_scores) continue;
    if (element_view) {
      score_elements(&ev, &e, live);
      continue;
    }
    vi is_y = live & (e.t > zero());
    vi other = live & ~is_y;
    s_y += vsel(is_y, e.s_pos, zero());
    z_y += vsel(is_y, e.z, zero());
    mo_z = vsel(other & (e.z > mo_z), e.z, mo_z);
    mo_s = vsel(other & (e.s_pos > mo_s), e.s_pos, mo_s);
    mx_s = vsel(live & (e.s_pos > mx_s), e.s_pos, mx_s);
    vi better = live & (e.z > best);
    best = vsel(better, e.z, best);
    best_k = (better & vi_set((int32_t)k)) | (~better & best_k);
    vf d = e.s_pos - e.t;
    sq += d * d;
    h += e.s_pos * e.nl_pos + e.s_neg * e.nl_neg;
  }
  if (vany(bad)) return locate_bad(cx, r0 * c, (r0 + cnt) * c, where);
  pr->loss = vl;
  pr->loss_d = vld;
  pr->gn2 = vg2;
  pr->npos = vb(live & (Y < vi_set((int32_t)c)));
  pr->count = vsel(live, vf_set((float)c), zero());
  if (!cx->want_scores) return 0;
  if (element_view) {
    pr->scored = live;
    pr->p_t = ev.p_t;
    pr->p_max = ev.p_max;
    pr->margin = ev.margin;
    pr->nm = ev.nm;
    pr->ent = ev.ent;
    pr->cw = ev.cw;
    pr->el2n = ev.el2n;
    pr->correct = ev.correct;
    /* binary prediction: positive when the single logit is >= 0 */
    for (int l = 0; l < FL_W; l++) pr->pred[l] = l < cnt && b->x[r0 + l] >= (cx->probs ? 0.5f : 0.0f);
    return 0;
  }
  vf ent = h * (float)(1.0 / ((double)c * FL_LN2));
  pr->scored = live & (Y < vi_set((int32_t)c));
  pr->p_t = s_y;
  pr->p_max = mx_s;
  pr->margin = z_y - mo_z;
  pr->z_y = z_y;
  pr->mo_z = mo_z;
  pr->nm = (s_y - mo_s + 1.0f) * 0.5f;
  pr->ent = ent;
  pr->cw = vcw(s_y, ent);
  for (int l = 0; l < FL_W; l++) pr->el2n[l] = sqrtf(sq[l]);
  pr->correct = vb(best_k == Y);
  pr->pred = best_k;
  return 0;
}

/* Two classes, class-index labels, full blocks of one dense sample (a
 * segmentation mask): rows r0 .. r0 + FL_W * blocks. The classes are split
 * from the interleaved rows in registers and the row-view scores accumulate
 * straight into v (margins in double, where +-1e4 margins may cancel). */
FL__HOT int pairs_run(const fl__ctx *cx, int64_t r0, int64_t blocks, vacc *v, fl__acc *acc, vf *count, int64_t *where,
                      int spec, int exact, vi *ovf) {
  const fl_batch *b = cx->b;
  vd margin = {0};
  vi bad = vi_set(0);
  float a0 = cx->alpha_c ? cx->alpha_c[0] : cx->alpha_on ? cx->alpha : -1.0f;
  float a1 = cx->alpha_c ? cx->alpha_c[1] : cx->alpha_on ? cx->alpha : -1.0f;
  for (int64_t blk = 0; blk < blocks; blk++) {
    const int64_t r = r0 + blk * FL_W;
    vi live, bad_label;
    const vi Y = load_labels(cx, r, FL_W, &live, &bad_label);
    if (vany(bad_label)) {
      for (int l = 0; l < FL_W; l++) {
        if (bad_label[l]) {
          *where = r + l;
          return FL_ELABEL;
        }
      }
    }
    el e0 = {0}, e1 = {0};
    vf_deinterleave2(b->x + r * 2, &e0.x, &e1.x);
    if (b->weights) {
      vf_deinterleave2(b->weights + r * 2, &e0.w, &e1.w);
      bad |= bad_weight(e0.w) | bad_weight(e1.w);
    } else {
      e0.w = e1.w = one();
    }
    bad |= bad_x(cx, e0.x) | bad_x(cx, e1.x);
    e0.live = e1.live = live;
    e0.hard = e1.hard = 1;
    e0.t = vb(Y == vi_set(0));
    e1.t = vb(Y == vi_set(1));
    e0.a_pos = a0 >= 0.0f ? vf_set(a0) : one();
    e0.a_neg = a0 >= 0.0f ? vf_set(1.0f - a0) : one();
    e1.a_pos = a1 >= 0.0f ? vf_set(a1) : one();
    e1.a_neg = a1 >= 0.0f ? vf_set(1.0f - a1) : one();
    if (cx->pos_weight) {
      e0.pw = vf_set(cx->pos_weight[0]);
      e1.pw = vf_set(cx->pos_weight[1]);
    }
    el_eval(cx, &e0, spec);
    el_eval(cx, &e1, spec);
    vacc_loss(v, e0.loss, exact);
    vacc_loss(v, e1.loss, exact);
    v->npos += vb(live & (Y < vi_set(2)));
    *count += vsel(live, vf_set(2.0f), zero());
    if (cx->want_norm) v->gn2 += vd_sq(e0.grad) + vd_sq(e1.grad);
    if (cx->want_scores) {
      /* the labelled class y and the other one; label 2 is background: not scored */
      const vi s = live & (Y < vi_set(2)), y1 = Y == vi_set(1);
      const vf s_y = vsel(y1, e1.s_pos, e0.s_pos), s_o = vsel(y1, e0.s_pos, e1.s_pos);
      const vf z_y = vsel(y1, e1.z, e0.z), z_o = vsel(y1, e0.z, e1.z);
      const vf sn_y = vsel(y1, e1.s_neg, e0.s_neg);
      const vf ent = (e0.s_pos * e0.nl_pos + e0.s_neg * e0.nl_neg + e1.s_pos * e1.nl_pos + e1.s_neg * e1.nl_neg) *
                     (float)(1.0 / (2.0 * FL_LN2));
      /* argmax with ties to the first class */
      const vi pred1 = e1.z > e0.z;
      v->rows += vb(s);
      v->p_t += vsel(s, s_y, zero());
      v->p_max += vsel(s, vmax(e0.s_pos, e1.s_pos), zero());
      vd d = __builtin_convertvector(z_y, vd) - __builtin_convertvector(z_o, vd);
      typedef int64_t vdm __attribute__((vector_size(FL_W * sizeof(int64_t))));
      margin += (vd)((vdm)d & __builtin_convertvector(s, vdm));
      v->nm += vsel(s, (s_y - s_o + 1.0f) * 0.5f, zero());
      v->ent += vsel(s, ent, zero());
      v->cw += vsel(s, vcw(s_y, ent), zero());
      v->el2n += vsel(s, vsqrt(sn_y * sn_y + s_o * s_o), zero());
      v->correct += vsel(s & (pred1 == y1), one(), zero());
    }
    vacc_tick(cx, v, acc, exact, ovf);
    if (v->pending == 0) {
      acc->count += (int64_t)vsum(*count);
      *count = zero();
    }
  }
  if (vany(bad)) return locate_bad(cx, r0 * 2, (r0 + blocks * FL_W) * 2, where);
  for (int l = 0; l < FL_W; l++) acc->margin += margin[l];
  return 0;
}

/* Class-index labels, c < FL_W: 16 rows at a time. With m == 1 each lane is a
 * sample; otherwise blocks stay within one sample and accumulate per lane. */
FL__HOT int eval_planar_spec(const fl__ctx *cx, int64_t *where, int spec, int exact) {
  const fl_batch *b = cx->b;
  const int64_t m = b->m;
  prow pr;
  int rc;
  vi ovf = vi_set(0);
  if (m == 1) {
    for (int64_t r0 = 0; r0 < b->n; r0 += FL_W) {
      const int cnt = b->n - r0 < FL_W ? (int)(b->n - r0) : FL_W;
      rc = planar_block(cx, r0, cnt, &pr, where, spec, exact);
      if (rc) return rc;
      if (!exact) ovf |= vnonfinite(pr.loss);
      for (int l = 0; l < cnt; l++) {
        fl__acc acc;
        fl__acc_reset(&acc);
        acc.loss = exact ? pr.loss_d[l] : pr.loss[l];
        acc.gn2 = pr.gn2[l];
        acc.count = (int64_t)pr.count[l];
        acc.npos = (int64_t)pr.npos[l];
        if (cx->want_scores && pr.scored[l]) {
          acc.rows = 1;
          acc.p_t = pr.p_t[l];
          acc.p_max = pr.p_max[l];
          acc.margin = b->c == 1 ? pr.margin[l] : (double)pr.z_y[l] - (double)pr.mo_z[l];
          acc.norm_margin = pr.nm[l];
          acc.entropy = pr.ent[l];
          acc.cw_entropy = pr.cw[l];
          acc.el2n = pr.el2n[l];
          acc.correct = pr.correct[l];
          acc.pred = pr.pred[l];
        }
        fl__acc_finish(cx, r0 + l, &acc);
      }
    }
    return vany(ovf) ? FL__AGAIN : 0;
  }
  for (int64_t i = 0; i < b->n; i++) {
    fl__acc acc;
    vacc v;
    vf count = zero();
    fl__acc_reset(&acc);
    vacc_reset(&v);
    int64_t j = 0;
    if (b->c == 2 && !cx->out->grad) {
      rc = pairs_run(cx, i * m, m / FL_W, &v, &acc, &count, where, spec, exact, &ovf);
      if (rc) return rc;
      j = m / FL_W * FL_W;
    }
    for (; j < m; j += FL_W) {
      const int cnt = m - j < FL_W ? (int)(m - j) : FL_W;
      rc = planar_block(cx, i * m + j, cnt, &pr, where, spec, exact);
      if (rc) return rc;
      if (exact) v.loss_d += pr.loss_d;
      else v.loss += pr.loss;
      v.gn2 += pr.gn2;
      v.npos += pr.npos;
      count += pr.count;
      if (cx->want_scores) {
        vi s = pr.scored;
        v.rows += vb(s);
        v.p_t += vsel(s, pr.p_t, zero());
        v.p_max += vsel(s, pr.p_max, zero());
        if (b->c == 1) {
          v.margin += vsel(s, pr.margin, zero());
        } else {
          /* margins of +-1e4 cancel in a mean: difference and sum in double */
          for (int l = 0; l < cnt; l++)
            if (s[l]) acc.margin += (double)pr.z_y[l] - (double)pr.mo_z[l];
        }
        v.nm += vsel(s, pr.nm, zero());
        v.ent += vsel(s, pr.ent, zero());
        v.cw += vsel(s, pr.cw, zero());
        v.el2n += vsel(s, pr.el2n, zero());
        v.correct += vsel(s, pr.correct, zero());
      }
      vacc_tick(cx, &v, &acc, exact, &ovf);
      if (v.pending == 0) {
        acc.count += (int64_t)vsum(count);
        count = zero();
      }
    }
    vacc_drain(cx, &v, &acc, exact, &ovf);
    acc.count += (int64_t)vsum(count);
    fl__acc_finish(cx, i, &acc);
  }
  return vany(ovf) ? FL__AGAIN : 0;
}

/* Each kernel compiled for the common case and for torchvision's logits, and once more, with losses summed
 * in double, for the rare call whose float lanes passed float's range (FL__AGAIN). Not for the sum
 * reduction: a sum with a lane past float's range saturates whatever the other lanes hold. */
#define SPECIALISED(fn)                                                                        \
  static __attribute__((noinline, cold)) int fn##_exact(const fl__ctx *cx, int64_t *where) {   \
    return fn##_spec(cx, where, spec_of(cx), 1);                                               \
  }                                                                                            \
  static int fn(const fl__ctx *cx, int64_t *where) {                                           \
    int rc = spec_of(cx) == SPEC_TV_LOGITS ? fn##_spec(cx, where, SPEC_TV_LOGITS, 0)           \
                                           : fn##_spec(cx, where, SPEC_ANY, 0);                \
    if (rc == FL__AGAIN) rc = cx->p->reduction == FL_REDUCE_SUM ? 0 : fn##_exact(cx, where);   \
    return rc;                                                                                 \
  }
SPECIALISED(eval_flat)
SPECIALISED(eval_rows)
SPECIALISED(eval_planar)

int FL__CAT(fl__sigmoid_eval, FL_ISA)(const fl__ctx *cx, int64_t *where) {
  if (cx->b->targets) return eval_flat(cx, where);
  if (cx->c >= FL_W) return eval_rows(cx, where);
  return eval_planar(cx, where);
}
