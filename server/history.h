/* history.h — how one observation of a sample updates its history in one run.
 *
 * Pure functions on plain structs: the state (state_core.h) keeps the records column by column
 * and copies one into a hist_rec to update it.
 */
#ifndef FOCALD_HISTORY_H
#define FOCALD_HISTORY_H

#include <stddef.h>
#include <stdint.h>

#define HIST_RECENT 4 /* latest observations kept per (run, sample) */

/* What one accepted sample contributes. */
typedef struct hist_obs {
  float loss;
  float p_t;       /* probability of the label */
  float p_max;     /* probability of the predicted class */
  float margin;    /* logit margin */
  float correct;   /* fraction of scored positions predicted correctly */
  float el2n;      /* the L2 norm of (p - onehot), Paul et al.; NaN when the batch's log predates it */
  float grad_norm; /* the L2 norm of d loss / d logits (GraNd's gradient, at the logits); NaN when the
                    * batch's log predates it */
  int32_t pred;    /* predicted class, -1 when not one class */
  int32_t label;   /* class label, -1 for multi-label, soft or dense targets */
  int scored;      /* 0 when every position was ignored: only the loss counts */
  int has_step, has_epoch;
  int64_t step;    /* 0 .. HIST_STEP_MAX */
  int64_t epoch;   /* 0 .. HIST_EPOCH_MAX */
} hist_obs;

#define HIST_STEP_MAX (((int64_t)1 << 47) - 1)
#define HIST_EPOCH_MAX 65534

/* One recent observation in 16 bytes (a million samples keep four each):
 * step + 1 in the low 48 bits and epoch + 1 in the high 16 (0: none), and
 * the sign bit of p_t carries "correct". */
typedef struct hist_recent {
  uint64_t step_epoch;
  float loss;
  float p_t_signed;
} hist_recent;

/* The step and epoch of a recent observation; return 0 when the batch had none. */
int hist_recent_step(const hist_recent *r, int64_t *step /* OUT */);
int hist_recent_epoch(const hist_recent *r, int64_t *epoch /* OUT */);

/* A sample's history in one run. */
typedef struct hist_rec {
  uint32_t seen;        /* observations */
  uint32_t scored_n;    /* observations with a p_t */
  uint32_t correct_n;
  uint32_t forgetting;  /* forgetting events: correct -> incorrect transitions */
  uint32_t other_n;     /* scored observations that confidently predicted another class (see hist_update) */
  int32_t other_class;  /* the class the latest of them named; -1 none (or none since schema 9) */
  float el2n;           /* mean el2n over the first el2n_n (at most the early count) observations that had one */
  uint16_t el2n_n;
  float grand;          /* mean grad_norm over the first grand_n (at most the early count) observations that had one */
  uint16_t grand_n;
  uint16_t early_n;       /* scored observations among the first (at most the early count); HIST_EARLY_UNKNOWN: not
                           * counted (a row written before schema 10) */
  uint16_t early_other_n; /* of those, the ones counted in other_n */
  float last_loss, mean_loss, max_loss, ema_loss;
  float conf_mean;      /* running mean of p_t (Welford) */
  float conf_m2;        /* running sum of squared deviations of p_t */
  float aum;            /* running mean of the margin */
  int32_t label;        /* last label, -1 none */
  uint8_t last_correct; /* 1, 0, or 2 before the first scored observation */
  uint8_t has_step;
  int64_t first_step, last_step;
} hist_rec;

/* Per-class running means of p_t over observations labelled with the class:
 * the confident-learning thresholds. Caller-allocated arrays of c entries. */
typedef struct hist_classes {
  int32_t c;
  double *sum;
  uint64_t *count;
} hist_classes;

/* Resets *h to "never seen". */
void hist_init(hist_rec *h);

/* Adds an observation's p_t to its label's threshold (scored, labelled observations only). */
void hist_classes_observe(hist_classes *cls, const hist_obs *o);

/* How observations update a history: the weight of the newest loss in
 * ema_loss, and how many of a sample's first observations make its el2n and grand. */
typedef struct hist_params {
  double ema_alpha;
  int early;
} hist_params;

/* Applies one observation. cls may be NULL (nothing counts in other_n);
 * otherwise the observation counts in other_n when its prediction differs
 * from its label and p_max reaches the predicted class's threshold (confident
 * learning's per-class threshold: the running mean of p_t over observations
 * labelled with that class), and other_class becomes the class it named.
 * Callers observe the classes first
 * (hist_classes_observe), so the threshold includes this observation when it
 * is labelled with the predicted class's label. */
void hist_update(hist_rec *h, const hist_obs *o, const hist_params *hp, const hist_classes *cls);

/* other_n / scored_n: how often the model confidently named another class (0 before any scored observation). */
float hist_label_issue_score(const hist_rec *h);
/* The same over the sample's first scored observations, early_other_n / early_n (the early count of them, as
 * for el2n); a row that has not counted them (HIST_EARLY_UNKNOWN) falls back to label_issue_score. */
#define HIST_EARLY_UNKNOWN UINT16_MAX
float hist_early_label_issue_score(const hist_rec *h);

/* label_issue: a sample is flagged when its label_issue_score reaches its
 * run's threshold, found from the run's scores by Otsu's method (the split of
 * their histogram into two groups with the largest variance between them: a
 * few samples the model keeps calling another class, and the rest), and at
 * least HIST_LABEL_ISSUE_FLOOR. How high the scores of clean samples go
 * depends on the model (a small model confuses clean samples too; a large one
 * that memorises wrong labels confuses them only early), so a fixed threshold
 * would not do. The scores are binned in steps of 1 / (HIST_SCORE_BINS - 1). */
#define HIST_SCORE_BINS 101
#define HIST_LABEL_ISSUE_FLOOR 0.1
int hist_score_bin(float score);
/* The threshold for counts[HIST_SCORE_BINS] scores: a score at least it is flagged; above 1 when none is. */
float hist_label_issue_threshold(const uint64_t counts[HIST_SCORE_BINS]);

/* label_issue's second estimate, from the samples' confidence (mean p_t): a mixture of two normal
 * distributions fitted to its histogram (bins of 1 / (HIST_CONF_BINS - 1)) by expectation-maximisation,
 * started from Otsu's split of that histogram; the bins below the upper component's mean that are more
 * likely under the lower component are its candidates. Where labels are wrong often and the model does
 * not fit them, their confidence forms a group of its own, and the mixture separates it more finely than
 * a split of label_issue_score does; elsewhere the lower component also takes hard samples whose labels
 * are right (a model that memorises wrong labels makes their confidence high). So the run's rule takes the
 * mixture only when the two estimates agree on how many labels are wrong: when the mixture's candidates
 * are no more than HIST_LABEL_ISSUE_AGREE times the samples the threshold flags (none when it flags none).
 * Measured on planted noise in BENCHMARKS.md. */
#define HIST_CONF_BINS 1001
#define HIST_LABEL_ISSUE_AGREE 1.1
int hist_conf_bin(float confidence);
/* Fits the mixture to counts[HIST_CONF_BINS] and marks its candidates' bins in low (1) and the others (0);
 * returns how many samples the marked bins hold (0, with nothing marked, when the histogram has fewer than
 * two distinct bins). */
uint64_t hist_confidence_mixture(const uint64_t counts[HIST_CONF_BINS], uint8_t low[HIST_CONF_BINS] /* OUT */);

/* A run whose model has fitted its labels. When at least HIST_LI_FITTED of the run's scored samples were
 * predicted as labelled in their latest observation, the model agrees with nearly every label, wrong ones
 * included: it has memorised them. Its latest predictions then tell nothing of a label, and a wrong label was
 * named another class only before it was memorised, a small share of a long history. Such a run's rule splits
 * early_label_issue_score instead of label_issue_score. A model that does not memorise stays below it by
 * about the share of wrong labels (0.73 to 0.89 at 10% and 25% noise on the benchmark; a memorising one
 * 0.98 to 1.0). Measured on planted noise in BENCHMARKS.md. */
#define HIST_LI_FITTED 0.97
/* In such a run a sample is flagged only when it named another class in most of its first observations
 * (a score of at least HIST_LI_EARLY_FLOOR: more than half), whatever the split.
 * On clean data early scores fall away from 0 with no second group; the split lands on the floor of
 * label_issue_score, and a single early confusion would flag. The benchmark's wrong labels are named
 * another class in most of them, nearly all in every one. */
#define HIST_LI_EARLY_FLOOR 0.51
/* A run holding histories written before schema 10 (early_n HIST_EARLY_UNKNOWN) keeps the whole history's
 * rule, fitted or not, so that an upgraded database answers as it did (st_label_issue_rule). */
/* Whether a run of scored samples, of which predicted_as_labelled were predicted as labelled in their latest
 * observation, has fitted its labels. */
int hist_li_fitted(uint64_t predicted_as_labelled, uint64_t scored);

/* A run's label_issue rule, from its samples' scores (early_label_issue_score when early, with the threshold
 * at least HIST_LI_EARLY_FLOOR) and confidences. */
typedef struct hist_li_rule {
  float threshold;   /* hist_label_issue_threshold */
  int early;         /* the run has fitted its labels: the threshold is for early_label_issue_score */
  int by_confidence; /* the mixture's candidates are flagged instead */
  uint8_t low[HIST_CONF_BINS];
} hist_li_rule;
void hist_label_issue_rule(const uint64_t scores[HIST_SCORE_BINS], const uint64_t confidences[HIST_CONF_BINS], int early,
                           hist_li_rule *rule /* OUT */);
/* Whether a sample with a scored observation, of this score (the one rule->early names) and confidence, is
 * flagged by rule (before echoes, below). */
static inline int hist_li_flagged(const hist_li_rule *rule, float score, float confidence) {
  return rule->by_confidence ? rule->low[hist_conf_bin(confidence)] : score >= rule->threshold;
}

/* Echoes of a systematic confusion. The samples the rule flags fall into cells: (the label, the class the
 * model last named for them, other_class). When annotators label many samples of class k as class g, the
 * cell (g, k) is large, and the model, trained on those labels, learns to call other samples of class k
 * "g", whose labels (k) are right: the cell (k, g) is its echo, and it is smaller. A cell is such an
 * echo when its reverse is systematic, at least HIST_LI_ECHO_SYSTEMATIC times the flagged samples per
 * off-diagonal cell and at least HIST_LI_ECHO_MIN samples, and the cell holds at most HIST_LI_ECHO_RATIO
 * times as many; an echo's samples are not flagged. Under uniform noise no cell is systematic, and a
 * confusion made in both directions at similar rates leaves both cells alone. Measured on planted noise in
 * BENCHMARKS.md. */
#define HIST_LI_ECHO_SYSTEMATIC 4.0
#define HIST_LI_ECHO_MIN 5
#define HIST_LI_ECHO_RATIO 0.8
/* Whether a cell of count flagged samples is an echo of its reverse of reverse samples, in a run of classes
 * classes with flagged samples flagged in all. */
int hist_li_echo(uint64_t count, uint64_t reverse, uint64_t flagged, int32_t classes);

/* Adds an observation to a ring of HIST_RECENT entries; *head is the next slot. */
void hist_recent_push(hist_recent *ring, uint8_t *head, uint8_t *count, const hist_obs *o);

/* The series: a sample's loss and p_t over the whole of training, down-sampled
 * to at most cap points (--series-points). It keeps observations 0, s, 2s, ...
 * of the series (s, the stride, a power of two); when an observation on the
 * stride finds it full, every other point goes and the stride doubles. So the
 * points always span the whole series evenly and the first observation is
 * always kept, and a series is determined by how many observations it has
 * counted and its cap: the stride is the least power of two that gives at
 * most cap points. Its state besides the points is that count and log2 of the
 * stride. */
typedef struct hist_point {
  uint32_t step; /* the observation's step; HIST_POINT_NO_STEP when it had none or one past it */
  float loss;
  float p_t;     /* NaN when every position was ignored */
} hist_point;
#define HIST_POINT_NO_STEP UINT32_MAX
#define HIST_SERIES_MAX 4096 /* the largest cap */

/* Counts observation o in a series of cap points (pts holds cap), keeping it
 * when it falls on the stride. Nothing changes when cap is 0 or the count is
 * at UINT32_MAX. */
void hist_series_push(hist_point *pts, int cap, uint32_t *count, uint8_t *shift, const hist_obs *o);
/* How many points a series of count observations and stride 2^shift holds. */
uint32_t hist_series_len(uint32_t count, uint8_t shift);
/* Copies the series src (count observations, stride 2^*shift) into dst (room
 * for cap >= 1 points), halved (every other point, the stride doubled) until
 * it fits: the series a smaller cap would have kept. Updates *shift. */
void hist_series_fit(hist_point *dst, int cap, const hist_point *src, uint32_t count, uint8_t *shift);

/* A series as stored: shift (1 byte), count (4 bytes), then each point's step,
 * loss and p_t (4 bytes each), all little-endian. */
#define HIST_SERIES_HEAD 5
#define HIST_POINT_BYTES 12
/* Writes the series into out (HIST_SERIES_HEAD + len * HIST_POINT_BYTES bytes); returns that size. */
size_t hist_series_pack(unsigned char *out, const hist_point *pts, uint32_t count, uint8_t shift);
/* Reads a stored series of n bytes into pts (room for max points). Returns 0,
 * or -1 when the bytes are not a series of at most max points and seen
 * observations (count at most seen, the size what count and shift imply). */
int hist_series_unpack(hist_point *pts, uint32_t max, uint32_t *count /* OUT */, uint8_t *shift /* OUT */,
                       const unsigned char *in, size_t n, uint32_t seen);

/* What a query reports of a sample's history: one run's record, or the mean
 * over the sample's runs (see st_history_all). */
typedef struct hist_view {
  double seen, last_loss, mean_loss, max_loss, ema_loss, confidence, variability, correctness, forgetting, aum;
  double forgetting_events, el2n, label_issue_score, early_label_issue_score, grand;
  int has_step;
  int64_t first_step, last_step;
  int32_t label;   /* -1 none */
  int label_issue;
} hist_view;

/* The view of one run's record. */
void hist_view_of(const hist_rec *h, hist_view *v /* OUT */);
/* The value of field f in a view. */
double hist_view_value(const hist_view *v, int f);

/* Derived fields. */
float hist_confidence(const hist_rec *h);
float hist_variability(const hist_rec *h); /* population standard deviation of p_t */
float hist_correctness(const hist_rec *h);
/* Forgetting as Toneva et al. rank it: the forgetting events, except that a sample
 * scored but never predicted correctly counts as forgotten at every scored
 * observation (their "number of presentations"). A learned sample seen n times
 * has at most n / 2 events, so among samples seen equally often every
 * never-learned one ranks above every learned one. */
uint32_t hist_forgetting(const hist_rec *h);

/* The history fields a query can rank by. */
typedef enum hist_field {
  HF_SEEN = 0,
  HF_LAST_LOSS,
  HF_MEAN_LOSS,
  HF_MAX_LOSS,
  HF_EMA_LOSS,
  HF_CONFIDENCE,
  HF_VARIABILITY,
  HF_CORRECTNESS,
  HF_FORGETTING,
  HF_AUM,
  HF_FORGETTING_EVENTS, /* appended: the fields' numbers are in cursors clients hold */
  HF_EL2N,
  HF_LABEL_ISSUE_SCORE,
  HF_GRAND,
  HF_EARLY_LABEL_ISSUE_SCORE,
  HF_COUNT
} hist_field;

/* "mean_loss" -> HF_MEAN_LOSS; -1 if unknown. */
int hist_field_parse(const char *name);
const char *hist_field_name(hist_field f);
/* 1 when a larger value is harder (losses, variability, forgetting, seen), 0 when smaller is:
 * the field's default order, descending or ascending. */
int hist_field_descending(hist_field f);
/* The value of field f. */
double hist_value(const hist_rec *h, hist_field f);
/* Every field's name, comma-separated, for messages. */
extern const char hist_field_list[];

/* Which end of a ranking comes first: the field's default ("harder when"), or as asked. */
typedef enum hist_order { HIST_ORDER_DEFAULT = 0, HIST_ORDER_DESC, HIST_ORDER_ASC } hist_order;
/* "desc" -> HIST_ORDER_DESC, "asc" -> HIST_ORDER_ASC; -1 if neither. */
int hist_order_parse(const char *name);
/* Whether ranking by f in order o puts the largest values first. */
int hist_order_desc(hist_field f, hist_order o);

#endif /* FOCALD_HISTORY_H */
