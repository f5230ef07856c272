/* decode_internal.h — what the decoder's files share: the readers of decode.c (decode__*) that
 * decode_body.c walks the JSON body with.
 *
 * decode.c is below decode_body.c: this header does not include decode.h, which is decode.c's own, and
 * declares the request again instead, so that decode.c can include it and depend on no file above it.
 */
#ifndef FOCALD_DECODE_INTERNAL_H
#define FOCALD_DECODE_INTERNAL_H

#include <jansson.h>
#include <stdint.h>

#include "problem.h"

/* decode.h's, declared again here (see above). */
typedef struct req req;

/* What v is, for an error: "an object", "an array", "a string", "an integer", "a number", "a boolean", "null". */
static inline const char *decode__json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "an object";
  case JSON_ARRAY: return "an array";
  case JSON_STRING: return "a string";
  case JSON_INTEGER: return "an integer";
  case JSON_REAL: return "a number";
  case JSON_TRUE:
  case JSON_FALSE: return "a boolean";
  default: return "null";
  }
}

/* Fails with the element's names (name at idx[0..nd)): detail is "<element> <what follows>". Returns -1. */
int decode__fail_at(problem *err, problem_code code, const char *name, const int64_t *idx, int nd, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Reads a float32 tensor of shape[0..nd) from nested arrays into out. 0, or -1 with *err set. */
int decode__read_floats(const json_t *v, const char *name, int nd, const int64_t *shape, float *out, problem *err);
/* Reads class indices of shape[0..nd) (nd 1 or 2): JSON integers only. 0, or -1 with *err set. */
int decode__read_labels(const json_t *v, const char *name, int nd, const int64_t *shape, int64_t *out, problem *err);
/* Reads the ids into one allocation (pointers then bytes, r->ids), rejecting duplicates (dec_check_unique).
 * 0, or -1 with *err set. */
int decode__read_ids(const json_t *v, req *r, problem *err);
/* Reads the "loss" object into r->params; alpha arrays are checked against c later (dec_tail). 0, or -1
 * with *err set. */
int decode__read_loss(const json_t *lo, req *r, problem *err);

#endif /* FOCALD_DECODE_INTERNAL_H */
