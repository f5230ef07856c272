/* fuzz_req.h — what a decoded scoring request must satisfy; shared by the JSON and binary decoder targets.
 *
 * The decoders promise (decode.h) to check everything the loss library does
 * not: types, shapes, ids, names, the loss configuration. The library then
 * checks values as it computes (finite logits, probability, target, weight and
 * label ranges). fz_check_decoded() states the first promise, fz_check_scored()
 * runs fl_eval as the daemon's scoring pool does (work.c) and states the
 * second: either every value is valid, or the error names an invalid element
 * and req_describe_error() turns it into a well-formed problem. Every array is
 * read from end to end, so AddressSanitizer checks that each buffer is as
 * large as the shape says.
 *
 * Everything here is static: a target includes this header once.
 */
#ifndef FOCALD_FUZZ_REQ_H
#define FOCALD_FUZZ_REQ_H

#include <float.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "focal.h"
#include "fuzz_common.h"
#include "problem.h"

static int fz_cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int64_t fz_weight_count(const req *r) {
  return fl_loss_is_softmax(r->params.loss) ? r->n * r->m : r->n * r->m * r->c;
}

/* The structure of a successfully decoded request. x_checked: the decoder
 * guarantees finite logits in float range (JSON does; binary leaves it to the
 * library). */
static void fz_check_decoded(const req *r, int want_store, int x_checked) {
  if (r->n < 1 || r->m < 1 || r->c < 1) fz_fail("shape (%" PRId64 ", %" PRId64 ", %" PRId64 ")", r->n, r->m, r->c);
  if (r->n * r->m * r->c > ((int64_t)1 << 31)) fz_fail("more than 2^31 elements");
  if (!r->dense && r->m != 1) fz_fail("m = %" PRId64 " without dense input", r->m);
  if (!r->x) fz_fail("no x");
  if (!r->x_name || (strcmp(r->x_name, "logits") != 0 && strcmp(r->x_name, "probs") != 0)) fz_fail("x_name");
  if ((r->params.input == FL_INPUT_PROBS) != (r->x_name[0] == 'p')) fz_fail("input kind does not match %s", r->x_name);
  if (!r->labels == !r->targets) fz_fail("labels and targets: exactly one must be set");
  if ((unsigned)r->label_type >= FL_LABEL_TYPE_COUNT) fz_fail("label_type %d", (int)r->label_type);
  if (fl_loss_is_softmax(r->params.loss) && r->c < 2) fz_fail("softmax loss with c = %" PRId64, r->c);
  int64_t where = -1;
  int prc = fl_params_check(&r->params, r->c, &where);
  if (prc != 0) fz_fail("the decoder passed parameters fl_params_check refuses: %s", fl_errname(prc));
  if (r->params.alpha_c && r->params.alpha_c != r->alpha_c) fz_fail("alpha_c is not owned by the request");
  if (!name_ok(r->run)) fz_fail("run \"%s\" is not a name", r->run);
  if (!want_store && strcmp(r->run, "default") != 0) fz_fail("run set without storing");
  if (r->has_batch_id && (!r->batch_id[0] || strlen(r->batch_id) > REQ_BATCH_ID_MAX)) fz_fail("batch_id");
  if (r->has_epoch && (r->epoch < 0 || r->epoch > HIST_EPOCH_MAX)) fz_fail("epoch %" PRId64, r->epoch);
  if (r->has_step && (r->step < 0 || r->step > HIST_STEP_MAX)) fz_fail("step %" PRId64, r->step);
  if (r->ohem_k < 0 || r->ohem_k > r->n) fz_fail("ohem_k %" PRId64 " with n = %" PRId64, r->ohem_k, r->n);
  if (r->nown < 0 || r->nown > (int)(sizeof r->own / sizeof r->own[0])) fz_fail("nown %d", r->nown);

  /* tensors: read every element */
  const int64_t ne = r->n * r->m * r->c;
  volatile float sink = 0.0f;
  for (int64_t e = 0; e < ne; e++) {
    sink += r->x[e];
    if (x_checked && !(fabsf(r->x[e]) <= FLT_MAX)) fz_fail("x[%" PRId64 "] = %g passed the decoder", e, r->x[e]);
  }
  if (r->targets)
    for (int64_t e = 0; e < ne; e++) sink += r->targets[e];
  if (r->labels)
    for (int64_t i = 0; i < r->n * r->m; i++) sink += (float)req_label_at(r, i);
  if (r->weights)
    for (int64_t e = 0; e < fz_weight_count(r); e++) sink += r->weights[e];
  if (r->alpha_c)
    for (int64_t k = 0; k < r->c; k++) sink += r->alpha_c[k];
  (void)sink;

  /* segments: consecutive, each of 1 or more samples, covering the n; steps and epochs in range */
  if (r->nseg < 0 || r->nseg > REQ_SEGMENTS_MAX || (r->nseg > 0) != (r->seg != NULL)) fz_fail("nseg %d", r->nseg);
  int64_t covered = 0;
  for (int k = 0; k < req_nseg(r); k++) {
    const req_seg g = req_segment(r, k);
    if (g.n < 1) fz_fail("segment %d has %" PRId64 " samples", k, g.n);
    if (g.has_step && (g.step < 0 || g.step > HIST_STEP_MAX)) fz_fail("segment %d: step %" PRId64, k, g.step);
    if (g.has_epoch && (g.epoch < 0 || g.epoch > HIST_EPOCH_MAX)) fz_fail("segment %d: epoch %" PRId64, k, g.epoch);
    covered += g.n;
  }
  if (covered != r->n) fz_fail("the segments cover %" PRId64 " of %" PRId64 " samples", covered, r->n);

  /* ids: n of them, 1 to 256 bytes, no control characters, no two alike within a segment */
  if (!r->ids) fz_fail("no ids");
  const char **sorted = malloc((size_t)r->n * sizeof *sorted);
  if (!sorted) abort();
  for (int64_t i = 0; i < r->n; i++) {
    const char *id = r->ids[i];
    if (!id) fz_fail("ids[%" PRId64 "] is NULL", i);
    size_t l = strlen(id);
    if (l < 1 || l > REQ_ID_MAX) fz_fail("ids[%" PRId64 "] has %zu bytes", i, l);
    for (size_t q = 0; q < l; q++)
      if ((unsigned char)id[q] < 0x20 || id[q] == 0x7f) fz_fail("ids[%" PRId64 "] has a control character", i);
    sorted[i] = id;
  }
  for (int k = 0, off = 0; k < req_nseg(r); off += (int)req_segment(r, k).n, k++) {
    const int64_t len = req_segment(r, k).n;
    qsort(sorted + off, (size_t)len, sizeof *sorted, fz_cmp_str);
    for (int64_t i = off + 1; i < off + len; i++)
      if (strcmp(sorted[i - 1], sorted[i]) == 0) fz_fail("id \"%.80s\" appears twice in segment %d", sorted[i], k);
  }
  free(sorted);

  /* meta: only when storing; one compact object per sample at most */
  if (!want_store && r->nmeta) fz_fail("meta kept without storing");
  if (r->nmeta < 0 || r->nmeta > r->n) fz_fail("nmeta %d with n = %" PRId64, r->nmeta, r->n);
  for (int i = 0; i < r->nmeta; i++) {
    if (r->meta_index[i] < 0 || r->meta_index[i] >= r->n) fz_fail("meta_index[%d] = %d", i, r->meta_index[i]);
    if (r->nseg > 1 && i > 0 && r->meta_index[i] < r->meta_index[i - 1]) fz_fail("meta not in sample order");
    for (int64_t later = r->meta_index[i] + 1; later < r->n; later++) /* an id's meta goes with its last segment */
      if (strcmp(r->ids[later], r->ids[r->meta_index[i]]) == 0) fz_fail("meta_index[%d] is not the id's last place", i);
    for (int j = 0; j < i; j++)
      if (r->meta_index[j] == r->meta_index[i]) fz_fail("two metas for sample %d", r->meta_index[i]);
    const char *text = r->meta_json[i];
    if (!text || strlen(text) > REQ_META_MAX) fz_fail("meta_json[%d]", i);
    json_error_t je;
    json_t *v = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(v)) fz_fail("meta_json[%d] is not a JSON object: %s", i, je.text);
    json_decref(v);
  }
}

/* Runs the request through the loss library as the scoring pool does, then
 * checks the outcome against the values. */
static void fz_check_scored(const req *r) {
  const int softmax = fl_loss_is_softmax(r->params.loss);
  fl_batch b = {.n = r->n, .m = r->m, .c = r->c, .x = r->x, .labels = r->labels, .label_type = r->label_type,
                .targets = r->targets, .weights = r->weights};
  float *loss = malloc((size_t)r->n * sizeof *loss);
  fl_score *scores = r->want_scores ? malloc((size_t)r->n * sizeof *scores) : NULL;
  if (!loss || (r->want_scores && !scores)) abort();
  /* the gradients when outputs names them, as the scoring pool computes them */
  const size_t nel = (size_t)(r->n * r->m * r->c);
  float *grad = (r->outputs & (1u << REQ_OUT_GRAD)) ? malloc((nel ? nel : 1) * sizeof *grad) : NULL;
  float *grad_norm = (r->outputs & (1u << REQ_OUT_GRAD_NORM)) ? malloc((size_t)r->n * sizeof *grad_norm) : NULL;
  fl_out out = {.loss = loss, .grad = grad, .grad_norm = grad_norm, .scores = scores};
  int64_t where = -1;
  int rc = fl_eval(&out, &b, &r->params, &where);
  const int64_t ne = r->n * r->m * r->c;
  if (rc == 0) {
    const int probs = r->params.input == FL_INPUT_PROBS;
    for (int64_t e = 0; e < ne; e++)
      if (probs ? !(r->x[e] >= 0.0f && r->x[e] <= 1.0f) : !isfinite(r->x[e])) fz_fail("x[%" PRId64 "] = %g scored", e, r->x[e]);
    if (r->targets)
      for (int64_t e = 0; e < ne; e++)
        if (!(r->targets[e] >= 0.0f && r->targets[e] <= 1.0f)) fz_fail("targets[%" PRId64 "] = %g scored", e, r->targets[e]);
    if (r->labels) {
      for (int64_t i = 0; i < r->n * r->m; i++) {
        int64_t y = req_label_at(r, i);
        int ignored = y == r->params.ignore_index;
        if (!ignored && (y < 0 || y > (softmax ? r->c - 1 : r->c))) fz_fail("label %" PRId64 " scored with c = %" PRId64, y, r->c);
      }
    }
    if (r->weights)
      for (int64_t e = 0; e < fz_weight_count(r); e++)
        if (!(r->weights[e] >= 0.0f && isfinite(r->weights[e]))) fz_fail("weights[%" PRId64 "] = %g scored", e, r->weights[e]);
    for (int64_t i = 0; i < r->n; i++)
      if (!isfinite(loss[i])) fz_fail("loss[%" PRId64 "] = %g", i, loss[i]);
    for (int64_t i = 0; grad_norm && i < r->n; i++)
      if (!isfinite(grad_norm[i])) fz_fail("grad_norm[%" PRId64 "] = %g", i, grad_norm[i]);
    for (size_t e = 0; grad && e < nel; e++)
      if (isnan(grad[e])) fz_fail("grad[%zu] is NaN", e);
    /* the scores go into the stored history (a NaN margin would stay in its running AUM) */
    for (int64_t i = 0; scores && i < r->n; i++) {
      const fl_score *sc = &scores[i];
      const float f[8] = {sc->p_t, sc->p_max, sc->margin, sc->norm_margin, sc->entropy, sc->cw_entropy, sc->el2n, sc->correct};
      for (int q = 0; q < 8; q++)
        if (!isfinite(f[q])) fz_fail("score %d of sample %" PRId64 " is %g", q, i, f[q]);
    }
  } else {
    /* only value errors remain after decoding */
    int64_t size;
    switch (rc) {
    case FL_EINPUT:
    case FL_EPROB:
    case FL_ETARGET: size = ne; break;
    case FL_ELABEL: size = r->n * r->m; break;
    case FL_EWEIGHT: size = fz_weight_count(r); break;
    default: fz_fail("fl_eval refused a decoded request: %s", fl_errname(rc));
    }
    if (where < 0 || where >= size) fz_fail("%s at %" PRId64 " outside its tensor (%" PRId64 ")", fl_errname(rc), where, size);
    problem err;
    memset(&err, 0, sizeof err);
    req_describe_error(r, rc, where, &err);
    if (err.code != P_NOT_FINITE && err.code != P_OUT_OF_RANGE && err.code != P_LABEL_OUT_OF_RANGE)
      fz_fail("%s described as %s", fl_errname(rc), problem_name(err.code));
    fz_check_refusal(&err);
    if (!err.field[0]) fz_fail("%s described without a field", fl_errname(rc));
  }
  free(loss);
  free(scores);
  free(grad);
  free(grad_norm);
}

#endif /* FOCALD_FUZZ_REQ_H */
