/* history.c — streaming statistics of one sample in one run.
 *
 * Means and variances use Welford's update so that a sample seen over hundreds
 * of epochs keeps its precision in float. An observation that scored nothing
 * (every position ignored) still counts as seen and updates the losses, but
 * not confidence, correctness, forgetting or AUM.
 */
#include "history.h"

#include <math.h>
#include <string.h>

void hist_init(hist_rec *h) {
  memset(h, 0, sizeof *h);
  h->label = -1;
  h->other_class = -1;
  h->last_correct = 2;
}

void hist_classes_observe(hist_classes *cls, const hist_obs *o) {
  if (o->scored && o->label >= 0 && o->label < cls->c) {
    cls->sum[o->label] += o->p_t;
    cls->count[o->label]++;
  }
}

void hist_update(hist_rec *h, const hist_obs *o, const hist_params *hp, const hist_classes *cls) {
  const double ema_alpha = hp->ema_alpha;
  h->seen++;
  h->last_loss = o->loss;
  h->mean_loss += (o->loss - h->mean_loss) / (float)h->seen;
  h->max_loss = h->seen == 1 || o->loss > h->max_loss ? o->loss : h->max_loss;
  h->ema_loss = h->seen == 1 ? o->loss : (float)(ema_alpha * o->loss + (1.0 - ema_alpha) * h->ema_loss);
  if (o->has_step) {
    if (!h->has_step || o->step < h->first_step) h->first_step = o->step;
    if (!h->has_step || o->step > h->last_step) h->last_step = o->step;
    h->has_step = 1;
  }
  h->label = o->label;
  if (!o->scored) return;
  h->scored_n++;
  float d = o->p_t - h->conf_mean;
  h->conf_mean += d / (float)h->scored_n;
  h->conf_m2 += d * (o->p_t - h->conf_mean);
  if (h->conf_m2 < 0.0f) h->conf_m2 = 0.0f; /* rounding; a variance is never negative */
  /* margins reach +-FLT_MAX (the library saturates them), so their difference can pass float's range:
   * then the step is taken in double, where it cannot, and the mean stays within the margins' range */
  const float aum = h->aum + (o->margin - h->aum) / (float)h->scored_n;
  h->aum = isfinite(aum) ? aum : (float)(h->aum + ((double)o->margin - h->aum) / h->scored_n);
  const uint8_t ok = o->correct >= 0.5f;
  if (h->last_correct == 1 && !ok) h->forgetting++;
  h->last_correct = ok;
  h->correct_n += ok;
  if (isfinite(o->el2n) && h->el2n_n < hp->early && h->el2n_n < UINT16_MAX) {
    h->el2n_n++;
    h->el2n += (o->el2n - h->el2n) / (float)h->el2n_n;
  }
  if (isfinite(o->grad_norm) && h->grand_n < hp->early && h->grand_n < UINT16_MAX) {
    h->grand_n++;
    h->grand += (o->grad_norm - h->grand) / (float)h->grand_n;
  }
  /* the first early scored observations; a row that has not counted them from its first never starts */
  const int early = h->early_n != HIST_EARLY_UNKNOWN && h->early_n < hp->early && h->early_n + 1 < HIST_EARLY_UNKNOWN;
  h->early_n += early;
  if (cls && o->label >= 0 && o->pred >= 0 && o->pred < cls->c && o->pred != o->label && cls->count[o->pred] > 0) {
    double threshold = cls->sum[o->pred] / (double)cls->count[o->pred];
    if (o->p_max >= threshold) {
      h->other_n++;
      h->early_other_n += early;
      h->other_class = o->pred;
    }
  }
}

float hist_label_issue_score(const hist_rec *h) {
  return h->scored_n ? (float)h->other_n / (float)h->scored_n : 0.0f;
}

float hist_early_label_issue_score(const hist_rec *h) {
  if (h->early_n == HIST_EARLY_UNKNOWN || h->early_n == 0) return hist_label_issue_score(h);
  return (float)h->early_other_n / (float)h->early_n;
}

int hist_score_bin(float score) {
  if (!(score > 0.0f)) return 0;
  if (score >= 1.0f) return HIST_SCORE_BINS - 1;
  return (int)(score * (float)(HIST_SCORE_BINS - 1));
}

/* Otsu's split of counts[n] (bins below it, bins from it), or 0 when no split has samples on both sides. */
static int otsu_split(const uint64_t *counts, int n) {
  double total = 0, sum = 0;
  for (int b = 0; b < n; b++) {
    total += (double)counts[b];
    sum += (double)counts[b] * b;
  }
  double best = 0, w0 = 0, s0 = 0;
  int split = 0;
  for (int t = 1; t < n; t++) {
    w0 += (double)counts[t - 1];
    s0 += (double)counts[t - 1] * (t - 1);
    const double w1 = total - w0;
    if (w0 == 0 || w1 == 0) continue;
    const double m0 = s0 / w0, m1 = (sum - s0) / w1;
    const double between = w0 * w1 * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      split = t;
    }
  }
  return split;
}

float hist_label_issue_threshold(const uint64_t counts[HIST_SCORE_BINS]) {
  /* Otsu: the split t (bins below t, bins from t) of largest w0 w1 (m0 - m1)^2; none: nothing is flagged */
  const int split = otsu_split(counts, HIST_SCORE_BINS);
  const float t = (float)(split ? split : HIST_SCORE_BINS) / (float)(HIST_SCORE_BINS - 1);
  return t < (float)HIST_LABEL_ISSUE_FLOOR ? (float)HIST_LABEL_ISSUE_FLOOR : t;
}

int hist_conf_bin(float confidence) {
  if (!(confidence > 0.0f)) return 0;
  if (confidence >= 1.0f) return HIST_CONF_BINS - 1;
  return (int)(confidence * (float)(HIST_CONF_BINS - 1) + 0.5f);
}

uint64_t hist_confidence_mixture(const uint64_t counts[HIST_CONF_BINS], uint8_t low[HIST_CONF_BINS]) {
  memset(low, 0, HIST_CONF_BINS);
  const int split = otsu_split(counts, HIST_CONF_BINS);
  if (!split) return 0;
  /* r[b]: the lower component's share of bin b; first the split itself */
  static const double step = 1.0 / (HIST_CONF_BINS - 1), var_floor = step * step;
  double r[HIST_CONF_BINS];
  for (int b = 0; b < HIST_CONF_BINS; b++) r[b] = b < split ? 1.0 : 0.0;
  double m0 = 0, m1 = 0;
  for (int it = 0; it < 200; it++) { /* 35 to 157 on the benchmark's runs (BENCHMARKS.md); at most 2.5 ms */
    double w0 = 0, w1 = 0, s0 = 0, s1 = 0;
    for (int b = 0; b < HIST_CONF_BINS; b++) {
      const double c = (double)counts[b], x = b * step;
      w0 += c * r[b];
      w1 += c * (1 - r[b]);
      s0 += c * r[b] * x;
      s1 += c * (1 - r[b]) * x;
    }
    if (!(w0 > 0) || !(w1 > 0)) return 0;
    m0 = s0 / w0;
    m1 = s1 / w1;
    double v0 = 0, v1 = 0;
    for (int b = 0; b < HIST_CONF_BINS; b++) {
      const double c = (double)counts[b], x = b * step;
      v0 += c * r[b] * (x - m0) * (x - m0);
      v1 += c * (1 - r[b]) * (x - m1) * (x - m1);
    }
    v0 = fmax(v0 / w0, var_floor);
    v1 = fmax(v1 / w1, var_floor);
    /* log of each component's weighted density, up to the same constant */
    const double k0 = log(w0) - 0.5 * log(v0), k1 = log(w1) - 0.5 * log(v1);
    double moved = 0;
    for (int b = 0; b < HIST_CONF_BINS; b++) {
      const double x = b * step;
      const double d = (k1 - 0.5 * (x - m1) * (x - m1) / v1) - (k0 - 0.5 * (x - m0) * (x - m0) / v0);
      const double next = 1.0 / (1.0 + exp(fmin(fmax(d, -700.0), 700.0)));
      moved = fmax(moved, fabs(next - r[b]));
      r[b] = next;
    }
    if (moved < 1e-6) break;
  }
  const int swap = m0 > m1; /* the components may trade places: "lower" is the one of smaller mean */
  const double upper_mean = swap ? m0 : m1;
  uint64_t marked = 0;
  for (int b = 0; b < HIST_CONF_BINS; b++) {
    const double share = swap ? 1 - r[b] : r[b];
    if (share > 0.5 && b * step < upper_mean) {
      low[b] = 1;
      marked += counts[b];
    }
  }
  return marked;
}

int hist_li_fitted(uint64_t predicted_as_labelled, uint64_t scored) {
  return scored > 0 && (double)predicted_as_labelled >= HIST_LI_FITTED * (double)scored;
}

void hist_label_issue_rule(const uint64_t scores[HIST_SCORE_BINS], const uint64_t confidences[HIST_CONF_BINS], int early,
                           hist_li_rule *rule) {
  rule->threshold = hist_label_issue_threshold(scores);
  if (early && rule->threshold < (float)HIST_LI_EARLY_FLOOR) rule->threshold = (float)HIST_LI_EARLY_FLOOR;
  rule->early = early;
  uint64_t flagged = 0;
  if (rule->threshold <= 1.0f) /* a multiple of a bin's width: the bins from it are the flagged scores */
    for (int b = (int)(rule->threshold * (float)(HIST_SCORE_BINS - 1) + 0.5f); b < HIST_SCORE_BINS; b++)
      flagged += scores[b];
  const uint64_t candidates = hist_confidence_mixture(confidences, rule->low);
  rule->by_confidence = flagged > 0 && candidates > 0 && (double)candidates <= HIST_LABEL_ISSUE_AGREE * (double)flagged;
}

int hist_li_echo(uint64_t count, uint64_t reverse, uint64_t flagged, int32_t classes) {
  if (classes < 2 || count == 0 || reverse < HIST_LI_ECHO_MIN) return 0;
  const double per_cell = (double)flagged / ((double)classes * (double)(classes - 1));
  return (double)reverse >= HIST_LI_ECHO_SYSTEMATIC * per_cell && (double)count <= HIST_LI_ECHO_RATIO * (double)reverse;
}

void hist_recent_push(hist_recent *ring, uint8_t *head, uint8_t *count, const hist_obs *o) {
  hist_recent *r = &ring[*head];
  uint64_t step = o->has_step && o->step >= 0 && o->step <= HIST_STEP_MAX ? (uint64_t)o->step + 1 : 0;
  uint64_t epoch = o->has_epoch && o->epoch >= 0 && o->epoch <= HIST_EPOCH_MAX ? (uint64_t)o->epoch + 1 : 0;
  r->step_epoch = step | epoch << 48;
  r->loss = o->loss;
  float p = o->scored ? o->p_t : 0.0f;
  r->p_t_signed = copysignf(p, o->scored && o->correct >= 0.5f ? -1.0f : 1.0f);
  *head = (uint8_t)((*head + 1) % HIST_RECENT);
  if (*count < HIST_RECENT) (*count)++;
}

int hist_recent_step(const hist_recent *r, int64_t *step) {
  uint64_t s = r->step_epoch & ((1ull << 48) - 1);
  *step = (int64_t)s - 1;
  return s != 0;
}

int hist_recent_epoch(const hist_recent *r, int64_t *epoch) {
  uint64_t e = r->step_epoch >> 48;
  *epoch = (int64_t)e - 1;
  return e != 0;
}

uint32_t hist_series_len(uint32_t count, uint8_t shift) {
  return count ? (uint32_t)(((uint64_t)count - 1) >> shift) + 1 : 0;
}

/* Keeps every other point: those on twice the stride. */
static void series_halve(hist_point *pts, uint32_t len, uint8_t *shift) {
  for (uint32_t j = 1; 2 * j < len; j++) pts[j] = pts[2 * j];
  (*shift)++;
}

void hist_series_push(hist_point *pts, int cap, uint32_t *count, uint8_t *shift, const hist_obs *o) {
  if (cap <= 0 || *count == UINT32_MAX) return;
  const uint64_t i = (*count)++; /* the observation's index in the series */
  if (i & (((uint64_t)1 << *shift) - 1)) return; /* between two points of the stride */
  if ((i >> *shift) == (uint64_t)cap) {
    /* full: the points are observations 0, s, ..., (cap - 1) s; keep those on 2s */
    series_halve(pts, (uint32_t)cap, shift);
    if (i & (((uint64_t)1 << *shift) - 1)) return; /* cap is odd: i is not on the new stride */
  }
  hist_point *p = &pts[i >> *shift];
  p->step = o->has_step && o->step >= 0 && o->step < (int64_t)HIST_POINT_NO_STEP ? (uint32_t)o->step : HIST_POINT_NO_STEP;
  p->loss = o->loss;
  p->p_t = o->scored ? o->p_t : NAN;
}

void hist_series_fit(hist_point *dst, int cap, const hist_point *src, uint32_t count, uint8_t *shift) {
  uint8_t d = 0;
  while (hist_series_len(count, (uint8_t)(*shift + d)) > (uint32_t)cap) d++;
  *shift = (uint8_t)(*shift + d);
  /* halving d times keeps the points whose positions are multiples of 2^d */
  const uint32_t len = hist_series_len(count, *shift);
  for (uint32_t j = 0; j < len; j++) dst[j] = src[(size_t)j << d];
}

static void put_u32(unsigned char *p, uint32_t v) {
  for (int b = 0; b < 4; b++) p[b] = (unsigned char)(v >> (8 * b));
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

size_t hist_series_pack(unsigned char *out, const hist_point *pts, uint32_t count, uint8_t shift) {
  const uint32_t len = hist_series_len(count, shift);
  out[0] = shift;
  put_u32(out + 1, count);
  unsigned char *p = out + HIST_SERIES_HEAD;
  for (uint32_t j = 0; j < len; j++, p += HIST_POINT_BYTES) {
    put_u32(p, pts[j].step);
    put_u32(p + 4, float_bits(pts[j].loss));
    put_u32(p + 8, float_bits(pts[j].p_t));
  }
  return HIST_SERIES_HEAD + (size_t)len * HIST_POINT_BYTES;
}

int hist_series_unpack(hist_point *pts, uint32_t max, uint32_t *count, uint8_t *shift, const unsigned char *in, size_t n,
                       uint32_t seen) {
  if (n < HIST_SERIES_HEAD || in[0] > 32) return -1;
  *shift = in[0];
  *count = get_u32(in + 1);
  const uint32_t len = hist_series_len(*count, *shift);
  if (*count > seen || len > max || n != HIST_SERIES_HEAD + (size_t)len * HIST_POINT_BYTES) return -1;
  /* a stride larger than the series needed is not what any cap keeps: the stride doubles only when full */
  if (*shift > 0 && hist_series_len(*count, (uint8_t)(*shift - 1)) <= len) return -1;
  const unsigned char *p = in + HIST_SERIES_HEAD;
  for (uint32_t j = 0; j < len; j++, p += HIST_POINT_BYTES) {
    pts[j].step = get_u32(p);
    pts[j].loss = bits_float(get_u32(p + 4));
    pts[j].p_t = bits_float(get_u32(p + 8));
    if (!isfinite(pts[j].loss)) return -1;
  }
  return 0;
}

void hist_view_of(const hist_rec *h, hist_view *v) {
  v->seen = h->seen;
  v->last_loss = h->last_loss;
  v->mean_loss = h->mean_loss;
  v->max_loss = h->max_loss;
  v->ema_loss = h->ema_loss;
  v->confidence = hist_confidence(h);
  v->variability = hist_variability(h);
  v->correctness = hist_correctness(h);
  v->forgetting = hist_forgetting(h);
  v->forgetting_events = h->forgetting;
  v->el2n = h->el2n;
  v->grand = h->grand;
  v->label_issue_score = hist_label_issue_score(h);
  v->early_label_issue_score = hist_early_label_issue_score(h);
  v->aum = h->aum;
  v->has_step = h->has_step;
  v->first_step = h->first_step;
  v->last_step = h->last_step;
  v->label = h->label;
  v->label_issue = 0; /* a run-level judgement: st_history_view sets it */
}

double hist_view_value(const hist_view *v, int f) {
  switch (f) {
  case HF_SEEN: return v->seen;
  case HF_LAST_LOSS: return v->last_loss;
  case HF_MEAN_LOSS: return v->mean_loss;
  case HF_MAX_LOSS: return v->max_loss;
  case HF_EMA_LOSS: return v->ema_loss;
  case HF_CONFIDENCE: return v->confidence;
  case HF_VARIABILITY: return v->variability;
  case HF_CORRECTNESS: return v->correctness;
  case HF_FORGETTING: return v->forgetting;
  case HF_FORGETTING_EVENTS: return v->forgetting_events;
  case HF_EL2N: return v->el2n;
  case HF_GRAND: return v->grand;
  case HF_LABEL_ISSUE_SCORE: return v->label_issue_score;
  case HF_EARLY_LABEL_ISSUE_SCORE: return v->early_label_issue_score;
  case HF_AUM: return v->aum;
  default: return 0.0;
  }
}

float hist_confidence(const hist_rec *h) {
  return h->conf_mean;
}

float hist_variability(const hist_rec *h) {
  return h->scored_n ? sqrtf(h->conf_m2 / (float)h->scored_n) : 0.0f;
}

float hist_correctness(const hist_rec *h) {
  return h->scored_n ? (float)h->correct_n / (float)h->scored_n : 0.0f;
}

uint32_t hist_forgetting(const hist_rec *h) {
  return h->correct_n == 0 ? h->scored_n : h->forgetting;
}

static const char *const field_names[HF_COUNT] = {
    "seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability", "correctness",
    "forgetting", "aum", "forgetting_events", "el2n", "label_issue_score", "grand",
    "early_label_issue_score",
};

/* test_history holds this to field_names */
const char hist_field_list[] = "seen, last_loss, mean_loss, max_loss, ema_loss, confidence, variability, correctness, "
                               "forgetting, aum, forgetting_events, el2n, label_issue_score, grand, "
                               "early_label_issue_score";

int hist_field_parse(const char *name) {
  for (int f = 0; f < HF_COUNT; f++)
    if (strcmp(field_names[f], name) == 0) return f;
  return -1;
}

const char *hist_field_name(hist_field f) {
  return (unsigned)f < HF_COUNT ? field_names[f] : "?";
}

int hist_field_descending(hist_field f) {
  return !(f == HF_CONFIDENCE || f == HF_CORRECTNESS || f == HF_AUM);
}

int hist_order_parse(const char *name) {
  if (strcmp(name, "desc") == 0) return HIST_ORDER_DESC;
  if (strcmp(name, "asc") == 0) return HIST_ORDER_ASC;
  return -1;
}

int hist_order_desc(hist_field f, hist_order o) {
  return o == HIST_ORDER_DEFAULT ? hist_field_descending(f) : o == HIST_ORDER_DESC;
}

double hist_value(const hist_rec *h, hist_field f) {
  switch (f) {
  case HF_SEEN: return h->seen;
  case HF_LAST_LOSS: return h->last_loss;
  case HF_MEAN_LOSS: return h->mean_loss;
  case HF_MAX_LOSS: return h->max_loss;
  case HF_EMA_LOSS: return h->ema_loss;
  case HF_CONFIDENCE: return hist_confidence(h);
  case HF_VARIABILITY: return hist_variability(h);
  case HF_CORRECTNESS: return hist_correctness(h);
  case HF_FORGETTING: return hist_forgetting(h);
  case HF_FORGETTING_EVENTS: return h->forgetting;
  case HF_EL2N: return h->el2n;
  case HF_GRAND: return h->grand;
  case HF_LABEL_ISSUE_SCORE: return hist_label_issue_score(h);
  case HF_EARLY_LABEL_ISSUE_SCORE: return hist_early_label_issue_score(h);
  case HF_AUM: return h->aum;
  default: return 0.0;
  }
}
