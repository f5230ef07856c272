/* focal.h — focald's loss and difficulty-score library: the one public header.
 *
 * Dependency-free C (libm only). Nothing here allocates, does I/O or keeps
 * state between calls, so every function is reentrant and may run on many
 * threads at once. The caller owns every buffer.
 *
 * Tensors are row-major float32:
 *   x        (n, m, c)  logits or probabilities
 *   labels   (n, m)     class indices           } exactly one of these two
 *   targets  (n, m, c)  multi-hot or soft rows  }
 *   weights  (n, m, c)  sigmoid family, (n, m) softmax family; optional
 * n is the number of samples, m the number of positions per sample (1 for
 * classification; anchors or pixels for dense outputs), c the number of
 * classes. A sample's loss is its elements' losses reduced by sum, mean, the
 * RetinaNet "positives" normalisation or a mean over all m * c elements.
 *
 * Every function that can fail returns 0 or a negative FL_E* code;
 * fl_strerror() names it in a sentence.
 */
#ifndef FOCAL_H
#define FOCAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FL_VERSION "0.1.0"

/* The error table: name, value, message. One list generates the codes,
 * fl_errname() and fl_strerror(). */
#define FL_ERROR_TABLE(X)                                                            \
  X(FL_OK, 0, "success")                                                             \
  X(FL_ESHAPE, -1, "n must be >= 0, m and c >= 1 (c >= 2 for softmax losses)")         \
  X(FL_EPARAM, -2, "unknown loss, profile, reduction, input kind or label type")     \
  X(FL_EGAMMA, -3, "gamma must be finite and >= 0 (> 0 for sigmoid_focal_star, 0 for the cross-entropy losses)") \
  X(FL_EALPHA, -4, "alpha must be in [0, 1], or negative to turn class weighting off") \
  X(FL_EEPSILON, -5, "epsilon must be in [-1, 10000]")                               \
  X(FL_ECLIP, -6, "clip must be in [0, 1)")                                          \
  X(FL_EINPUT, -7, "a logit is not finite")                                          \
  X(FL_EPROB, -8, "a probability is outside [0, 1] or not finite")                   \
  X(FL_ELABEL, -9, "a label is out of range")                                        \
  X(FL_ETARGET, -10, "a target is outside [0, 1] or not finite")                     \
  X(FL_EWEIGHT, -11, "a weight is negative or not finite")                           \
  X(FL_EUNSUPPORTED, -12, "the profile does not define this loss for this input kind") \
  X(FL_ENULL, -13, "a required buffer is missing")                                   \
  X(FL_EPOSWEIGHT, -14, "pos_weight is for sigmoid_focal, poly1_sigmoid_focal and binary_cross_entropy, each finite and >= 0")

enum {
#define FL__ERROR_ENUM(name, value, msg) name = value,
  FL_ERROR_TABLE(FL__ERROR_ENUM)
#undef FL__ERROR_ENUM
};

/* Returns a static string such as "FL_EGAMMA"; "FL_UNKNOWN" for other values. */
const char *fl_errname(int rc);
/* Returns a static sentence describing rc. */
const char *fl_strerror(int rc);

/* Loss families. The sigmoid family scores every (position, class) element as
 * an independent binary problem; the softmax family scores each position as
 * one multi-class problem. */
typedef enum fl_loss {
  FL_SIGMOID_FOCAL = 0,       /* alpha_t (1-p_t)^gamma BCE (Lin et al.) */
  FL_SOFTMAX_FOCAL,           /* -alpha_c (1-p_c)^gamma log p_c */
  FL_SIGMOID_FOCAL_STAR,      /* FL*: alpha_t softplus(-gamma z (2t-1)) / gamma (fvcore) */
  FL_POLY1_SIGMOID_FOCAL,     /* sigmoid focal + epsilon (1-p_t)^(gamma+1) (Leng et al.) */
  FL_POLY1_SOFTMAX_FOCAL,     /* softmax focal + epsilon (1-p_c)^(gamma+1) */
  FL_ASL,                     /* asymmetric loss (Ridnik et al.): gamma_pos, gamma_neg, clip */
  FL_CROSS_ENTROPY,           /* softmax focal at gamma 0: -alpha_c log p_c (torch's cross_entropy) */
  FL_BINARY_CROSS_ENTROPY,    /* sigmoid focal at gamma 0: alpha_t BCE (torch's binary_cross_entropy_with_logits) */
  FL_LOSS_COUNT
} fl_loss;

/* Framework conventions; they agree on hard targets and differ on soft targets,
 * on where alpha applies and on probability clipping. README "Profiles" gives
 * each formula. */
typedef enum fl_profile {
  FL_PROFILE_TORCHVISION = 0, /* also fvcore and mmdetection's sigmoid focal loss */
  FL_PROFILE_MONAI,
  FL_PROFILE_KORNIA,          /* kornia >= 0.7.0: softmax alpha is [1 - alpha, alpha, ..., alpha] */
  FL_PROFILE_KERAS,
  FL_PROFILE_KORNIA_LEGACY,   /* kornia before 0.7.0: softmax alpha on every class */
  FL_PROFILE_COUNT
} fl_profile;

typedef enum fl_reduction {
  FL_REDUCE_SUM = 0,   /* sum over the sample's elements */
  FL_REDUCE_MEAN,      /* divided by the number of elements not ignored */
  FL_REDUCE_POSITIVES, /* divided by max(1, number of positive targets) */
  FL_REDUCE_MEAN_ELEMENTS, /* divided by m * c, ignored positions included: torch.mean over the unreduced
                            * (m, c) loss, as MONAI's and kornia's (>= 0.7.0) reduction="mean" */
  FL_REDUCTION_COUNT
} fl_reduction;

typedef enum fl_input {
  FL_INPUT_LOGITS = 0,
  FL_INPUT_PROBS,
  FL_INPUT_COUNT
} fl_input;

typedef enum fl_label_type {
  FL_LABEL_I32 = 0,
  FL_LABEL_I64,
  FL_LABEL_U8,
  FL_LABEL_TYPE_COUNT
} fl_label_type;

/* Names as used on the wire ("sigmoid_focal", "torchvision", "sum", ...).
 * fl_*_name returns NULL for an out-of-range value; fl_*_parse returns
 * FL_EPARAM for an unknown name and leaves *out unchanged. */
const char *fl_loss_name(fl_loss v);
const char *fl_profile_name(fl_profile v);
const char *fl_reduction_name(fl_reduction v);
int fl_loss_parse(const char *name, fl_loss *out /* OUT */);
int fl_profile_parse(const char *name, fl_profile *out /* OUT */);
int fl_reduction_parse(const char *name, fl_reduction *out /* OUT */);

/* True for the softmax family (one multi-class problem per position). */
int fl_loss_is_softmax(fl_loss v);

typedef struct fl_params {
  fl_loss loss;
  fl_profile profile;
  fl_reduction reduction;
  fl_input input;
  float gamma;          /* focusing parameter, >= 0 (FL*: > 0) */
  float alpha;          /* class balance in [0, 1]; negative turns weighting off */
  const float *alpha_c; /* (c) per-class alpha, each in [0, 1]; overrides alpha when set. Borrowed. */
  float epsilon;        /* Poly-1 coefficient, in [-1, 1e4] */
  float gamma_pos;      /* ASL focusing of positives */
  float gamma_neg;      /* ASL focusing of negatives */
  float clip;           /* ASL probability margin for negatives, in [0, 1) */
  int64_t ignore_index; /* labels equal to this are skipped; default -1 */
  const float *pos_weight; /* (c) per-class weight of the positive term (torch's BCEWithLogitsLoss and
                            * kornia's pos_weight): t (-log s) becomes pos_weight[k] t (-log s); each finite
                            * and >= 0; sigmoid focal, Poly-1 sigmoid and binary cross-entropy only. NULL: off.
                            * Borrowed. */
} fl_params;

/* Fills *p with the defaults for a loss: torchvision profile, sum, logits,
 * gamma 2, alpha 0.25 (off for softmax and ASL), epsilon 1, ASL gamma_pos 1,
 * gamma_neg 4, clip 0.05, ignore_index -1, no pos_weight. FL* gets gamma 1;
 * the two cross-entropy losses gamma 0 and alpha off. */
void fl_params_init(fl_params *p /* OUT */, fl_loss loss);

/* Checks the parameters alone (not the tensors) for c classes. Returns 0 or
 * FL_EPARAM, FL_EGAMMA, FL_EALPHA, FL_EEPSILON, FL_ECLIP, FL_EUNSUPPORTED,
 * FL_EPOSWEIGHT; for FL_EALPHA with a per-class vector and for a pos_weight
 * entry that is negative or not finite, *where (may be NULL) gets the class
 * (FL_EPOSWEIGHT with *where -1: the loss takes no pos_weight).
 * FL_CROSS_ENTROPY and FL_BINARY_CROSS_ENTROPY are the focal losses at gamma 0
 * under the torchvision profile: any other gamma is FL_EGAMMA, any other
 * profile FL_EUNSUPPORTED; alpha and alpha_c weigh them as they weigh the focal
 * losses (alpha_c is then torch's per-class weight). */
int fl_params_check(const fl_params *p, int64_t c, int64_t *where /* OUT */);

typedef struct fl_batch {
  int64_t n, m, c;
  const float *x;         /* (n, m, c) logits or probabilities. Borrowed. */
  const void *labels;     /* (n, m) class indices of label_type, or NULL. Borrowed. */
  fl_label_type label_type;
  const float *targets;   /* (n, m, c) multi-hot or soft targets in [0, 1], or NULL. Borrowed. */
  const float *weights;   /* per-element weights >= 0, or NULL. Borrowed. */
} fl_batch;

/* Per-sample difficulty scores. For the softmax family and for the sigmoid
 * family with class-index labels and c >= 2, each position is a row of c
 * class probabilities with one label (background and ignored rows are not
 * scored); otherwise each (position, class) element is a binary problem.
 * Dense samples (m > 1) average each score over their scored rows. Higher
 * p_t, margin and norm_margin mean easier; higher entropy and el2n mean
 * harder; cw_entropy is cleanlab's quality score (lower is more suspect). */
typedef struct fl_score {
  float p_t;         /* self-confidence: probability of the labelled class */
  float p_max;       /* probability of the predicted class (binary rows: max(s, 1 - s)) */
  float margin;      /* z_y - max_{k != y} z_k (AUM's margin); binary rows: (2t-1) z */
  float norm_margin; /* cleanlab: (p_y - max_{k != y} p_k + 1) / 2 */
  float entropy;     /* entropy / log c; sigmoid rows: mean binary entropy / log 2 */
  float cw_entropy;  /* cleanlab's confidence-weighted entropy */
  float el2n;        /* || p - onehot(y) ||_2 */
  float correct;     /* fraction of scored rows whose prediction matches the label */
  int32_t pred;      /* predicted class when m == 1 (binary: 0 or 1), else -1 */
  int32_t rows;      /* rows or elements scored; 0 means the scores are undefined (all zero) */
} fl_score;

typedef struct fl_out {
  float *loss;       /* (n) per-sample loss; required */
  float *grad;       /* (n, m, c) d loss[i] / d x, or NULL */
  float *grad_norm;  /* (n) L2 norm of each sample's gradient, or NULL */
  fl_score *scores;  /* (n), or NULL */
} fl_out;

/* Evaluates the loss (and, where out asks, its gradient with respect to the
 * logits, the gradient norm and the difficulty scores) for every sample of b.
 * For probability input the gradient is taken with respect to the logits the
 * probabilities imply (sigmoid: logit(p); softmax: log p). Returns 0, or the
 * first parameter or data error; then *where (may be NULL) is the flat index
 * of the offending element in the tensor the code names (x for FL_EINPUT and
 * FL_EPROB, labels for FL_ELABEL, targets, weights, alpha_c), or -1. On
 * error the outputs hold partial results and must be discarded. n = 0 is an
 * empty batch: nothing is written and 0 is returned. */
int fl_eval(const fl_out *out, const fl_batch *b, const fl_params *p, int64_t *where /* OUT */);

/* The instruction-set variant fl_eval runs: "x86-64-v4", "x86-64-v3" or
 * "generic". Picked once from the CPU's features. */
const char *fl_isa(void);

/* For benchmarks and tests: restricts fl_eval to a variant the CPU supports
 * ("generic", "x86-64-v3", "x86-64-v4"; NULL restores the automatic choice).
 * Returns 0 or FL_EUNSUPPORTED. Process-wide; not for use while other threads
 * call fl_eval. */
int fl_isa_force(const char *name);

#ifdef __cplusplus
}
#endif
#endif /* FOCAL_H */
