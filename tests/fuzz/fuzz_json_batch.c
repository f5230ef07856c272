/* fuzz_json_batch.c — libFuzzer target: the JSON request decoder (dec_json), as POST /v1/loss and as POST .../batches.
 *
 * The input is a request body, exactly as a client would send it, so a corpus
 * file can be replayed with curl. Each body is decoded twice, for scoring only
 * (want_store 0) and for storing (want_store 1). A refusal must carry a 4xx
 * problem; a success must satisfy fuzz_req.h's invariants, be scored by the
 * loss library without a parameter error, and be freed with req_free (any
 * leak fails the run). Decoding for storage checks strictly more than decoding
 * for scoring (run, batch_id, meta), so a body stored must also score.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_req.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decodes body with want_store; returns 0 if it was accepted. */
static int decode_once(const char *body, size_t len, int want_store) {
  req r;
  problem err;
  memset(&err, 0, sizeof err);
  if (dec_json(&r, body, len, want_store, &err) != 0) {
    fz_check_refusal(&err);
    return -1;
  }
  if (r.binary || r.binary_response) fz_fail("a JSON body decoded as binary");
  if (!r.want_scores) fz_fail("a JSON request must compute its scores");
  fz_check_decoded(&r, want_store, 1);
  fz_check_scored(&r);
  req_free(&r);
  /* req_free leaves a zeroed request that may be freed again */
  req_free(&r);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a copy of exactly the body's size: any read past it is a finding */
  char *body = malloc(size ? size : 1);
  if (!body) return 0;
  memcpy(body, data, size);
  int scored = decode_once(body, size, 0);
  int stored = decode_once(body, size, 1);
  if (stored == 0 && scored != 0) fz_fail("a body accepted for storing was refused for scoring");
  free(body);
  return 0;
}
