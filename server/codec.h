/* codec.h — the packed per-sample results of one batch, as stored in batches.payload.
 *
 * The batch log is what makes a 2xx durable: one row per batch, its samples'
 * results packed into one blob, so a commit appends one row however many
 * samples the batch has. Replaying the log rebuilds every history.
 */
#ifndef FOCALD_CODEC_H
#define FOCALD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "history.h"

/* A batch's results: n observations and their sample ids. */
typedef struct codec_batch {
  uint32_t n;
  const char *const *ids; /* n NUL-terminated ids, each at most 65535 bytes */
  const hist_obs *obs;    /* n observations; step and epoch are the batch's, not stored per sample */
} codec_batch;

/* Packs b into a new buffer (*out, *len); the caller frees *out. Returns 0 or -1. */
int codec_pack(const codec_batch *b, unsigned char **out /* OUT */, size_t *len /* OUT */);

/* An unpacked payload: owns its arrays. */
typedef struct codec_unpacked {
  uint32_t n;
  char **ids;   /* n strings in one allocation with the pointers */
  hist_obs *obs;
} codec_unpacked;

/* The batch-level fields every observation of a batch shares. */
typedef struct codec_when {
  int has_step, has_epoch;
  int64_t step, epoch;
} codec_when;

/* Unpacks buf; the step and epoch of every observation come from *when.
 * Returns 0, or -1 if the payload is malformed (nothing allocated then). */
int codec_unpack(const unsigned char *buf, size_t len, const codec_when *when, codec_unpacked *out /* OUT */);
/* Whether every observation of u is one focald scores for a run of classes classes: 0, or -1. Its loss, and
 * for a scored observation p_t, p_max, margin and correct, are finite; el2n and grad_norm finite or NaN
 * (unknown); label -1 or a class; pred -1 or a class (0 or 1 for one class: a binary prediction). A payload
 * read back from the database or from the cluster's log is checked before it is replayed: the history's
 * code takes these ranges for granted (a label indexes per-class arrays). */
int codec_check(const codec_unpacked *u, int32_t classes);
/* Frees what codec_unpack allocated. Accepts a zeroed struct. */
void codec_unpacked_free(codec_unpacked *u);

#endif /* FOCALD_CODEC_H */
