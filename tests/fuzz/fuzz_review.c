/* fuzz_review.c — libFuzzer target: the review loop's request bodies (review_decode, meta_decode, queue_decode).
 *
 * The input is one request body and goes to all three decoders, as the
 * handlers in api_review.c call them: the op is allocated, decoded into, and
 * freed with review_op_free whether or not decoding succeeded (so a partial
 * decode must leave only what that frees). On success:
 *   review  a known status; a label exactly for relabelled, compact JSON of at
 *           most 4096 bytes; reviewer and note within their limits;
 *   meta    a JSON object of at most REQ_META_MAX bytes, in canonical form
 *           (decoding it again gives the same text);
 *   queue   every field within its documented range, quotas well-formed, and
 *           the stored params_json decodes to the same queue again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "decode.h"
#include "fuzz_common.h"
#include "history.h"
#include "job.h"
#include "review.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_review(const char *body, size_t len) {
  review_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->op.kind = WOP_REVIEW;
  problem err;
  memset(&err, 0, sizeof err);
  if (review_decode(body, len, op, &err) != 0) {
    fz_check_refusal(&err);
  } else {
    if (op->to < 0 || op->to >= ST_STATUS_COUNT) fz_fail("review status %d", op->to);
    if ((op->to == ST_RELABELLED) != (op->label != NULL)) fz_fail("label %s with status %s", op->label ? "set" : "missing", st_status_name(op->to));
    if (op->label) {
      if (strlen(op->label) > 4096) fz_fail("label of %zu bytes", strlen(op->label));
      json_t *v = json_loads(op->label, JSON_DECODE_ANY, NULL);
      if (!v) fz_fail("label is not JSON: %s", op->label);
      json_decref(v);
    }
    if (op->reviewer && strlen(op->reviewer) > 128) fz_fail("reviewer of %zu bytes", strlen(op->reviewer));
    if (op->note && strlen(op->note) > 4096) fz_fail("note of %zu bytes", strlen(op->note));
  }
  review_op_free(&op->op);
}

static void check_meta(const char *body, size_t len) {
  meta_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->op.kind = WOP_META;
  problem err;
  memset(&err, 0, sizeof err);
  if (meta_decode(body, len, op, &err) != 0) {
    fz_check_refusal(&err);
  } else {
    if (!op->meta || strlen(op->meta) > REQ_META_MAX) fz_fail("meta missing or too large");
    /* canonical: the stored text decodes to itself */
    meta_op *again = calloc(1, sizeof *again);
    if (!again) abort();
    again->op.kind = WOP_META;
    if (meta_decode(op->meta, strlen(op->meta), again, &err) != 0) fz_fail("stored meta refused: %s", err.detail);
    if (strcmp(op->meta, again->meta) != 0) fz_fail("meta is not canonical:\n%s\n%s", op->meta, again->meta);
    review_op_free(&again->op);
  }
  review_op_free(&op->op);
}

static void check_queue_fields(const queue_params *p) {
  if (!name_ok(p->name)) fz_fail("queue name \"%s\"", p->name);
  if (p->by < 0 || p->by >= HF_COUNT) fz_fail("queue by %d", p->by);
  /* a run is looked up, not created: names from before "." and ".." were refused are still found */
  if (strcmp(p->run, "*") != 0 && !name_lookup_ok(p->run)) fz_fail("queue run \"%s\"", p->run);
  if (p->size < 1 || p->size > 10000) fz_fail("queue size %d", p->size);
  if (p->label < 0 || (!p->has_label && p->label != 0)) fz_fail("queue label %d", p->label);
  if (p->min_seen < 1) fz_fail("queue min_seen %u", p->min_seen);
  if (p->max_per_label < 0 || p->max_per_label > 10000 || p->min_per_label < 0 || p->min_per_label > 10000)
    fz_fail("per-label bounds %d, %d", p->min_per_label, p->max_per_label);
  if (p->max_per_label && p->min_per_label > p->max_per_label) fz_fail("min_per_label above max_per_label");
  if (p->nquota < 0 || p->nquota > QUEUE_QUOTAS_MAX) fz_fail("nquota %d", p->nquota);
  for (int k = 0; k < p->nquota; k++) {
    /* a bound of -1 was not given */
    if (p->quota_label[k] < 0 || p->quota_min[k] < -1 || p->quota_max[k] < -1 || p->quota_min[k] > 10000 ||
        p->quota_max[k] > 10000)
      fz_fail("quota %d: label %d, min %d, max %d", k, p->quota_label[k], p->quota_min[k], p->quota_max[k]);
    if (p->quota_min[k] >= 0 && p->quota_max[k] >= 0 && p->quota_max[k] < p->quota_min[k]) fz_fail("quota %d: max below min", k);
    for (int j = 0; j < k; j++)
      if (p->quota_label[j] == p->quota_label[k]) fz_fail("label %d has two quotas", p->quota_label[k]);
  }
  if (strlen(p->dedupe_by) > ST_NAME_MAX) fz_fail("dedupe_by");
}

/* Puts p's per-label quotas in label order (insertion sort: at most QUEUE_QUOTAS_MAX). */
static void sort_quotas(queue_params *p) {
  for (int i = 1; i < p->nquota; i++) {
    for (int j = i; j > 0 && p->quota_label[j - 1] > p->quota_label[j]; j--) {
      int32_t l = p->quota_label[j];
      int mn = p->quota_min[j], mx = p->quota_max[j];
      p->quota_label[j] = p->quota_label[j - 1];
      p->quota_min[j] = p->quota_min[j - 1];
      p->quota_max[j] = p->quota_max[j - 1];
      p->quota_label[j - 1] = l;
      p->quota_min[j - 1] = mn;
      p->quota_max[j - 1] = mx;
    }
  }
}

static void check_queue(const char *body, size_t len) {
  queue_op *op = calloc(1, sizeof *op);
  if (!op) abort();
  op->op.kind = WOP_QUEUE;
  problem err;
  memset(&err, 0, sizeof err);
  if (queue_decode(body, len, &op->p, &err) != 0) {
    fz_check_refusal(&err);
    if (op->p.params_json) fz_fail("a refused queue kept its params_json");
  } else {
    check_queue_fields(&op->p);
    if (!op->p.params_json) fz_fail("no params_json");
    /* what is stored describes the same queue */
    queue_op *again = calloc(1, sizeof *again);
    if (!again) abort();
    again->op.kind = WOP_QUEUE;
    if (queue_decode(op->p.params_json, strlen(op->p.params_json), &again->p, &err) != 0)
      fz_fail("stored queue params refused: %s", err.detail);
    queue_params a = op->p, b = again->p;
    a.params_json = b.params_json = NULL;
    sort_quotas(&a); /* the stored text has its keys sorted: the quotas come back in label order */
    sort_quotas(&b);
    if (memcmp(&a, &b, sizeof a) != 0) fz_fail("stored queue params decode to another queue");
    if (strcmp(op->p.params_json, again->p.params_json) != 0) fz_fail("queue params are not canonical");
    review_op_free(&again->op);
  }
  review_op_free(&op->op);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *body = malloc(size ? size : 1);
  if (!body) return 0;
  memcpy(body, data, size);
  check_review(body, size);
  check_meta(body, size);
  check_queue(body, size);
  free(body);
  return 0;
}
