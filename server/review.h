/* review.h — the review loop's rules: status transitions, request bodies, queue selection. */
#ifndef FOCALD_REVIEW_H
#define FOCALD_REVIEW_H

#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "problem.h"
#include "state.h"

/* Whether a sample may go from status `from` to status `to` (see README "Review states"). */
int review_allowed(int from, int to);

/* Decodes POST .../review: {"status", "label", "reviewer", "note"} into op. */
int review_decode(const char *body, size_t len, review_op *op, problem *err);
/* Decodes a review a cluster's shared log holds, which any version of focald
 * may have written: as review_decode, except that class indices past
 * INT32_MAX, which versions before the range check accepted, pass. */
int review_decode_logged(const char *body, size_t len, review_op *op, problem *err);

/* Decodes PUT .../meta: a JSON object, checked and made compact into op->meta. */
int meta_decode(const char *body, size_t len, meta_op *op, problem *err);

/* Decodes POST .../queues into *p (p->params_json is malloc'd). */
int queue_decode(const char *body, size_t len, queue_params *p, problem *err);

/* Chooses a queue's samples from the dataset as it stands: the hardest of the
 * samples still open (and confirmed ones st_reconsider flags), within the
 * quotas and de-duplicated by meta key, in ranking order. *keys and *scores
 * are malloc'd (n entries). Writer thread. Returns 0, or -1 with *err set. */
int queue_select(const st_dataset *ds, const queue_params *p, double reconsider, uint32_t **keys, float **scores,
                 uint32_t *n, problem *err);

/* The run queue q was built over, into *run: NULL when it was built over every run ("*"). Under ds's
 * read lock. Returns 0, or -1 when memory ran out reading its parameters. */
int queue_run(const st_dataset *ds, const st_queue *q, const st_run **run /* OUT */);

#endif /* FOCALD_REVIEW_H */
