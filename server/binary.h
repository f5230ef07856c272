/* binary.h — requests and responses in the Open Inference Protocol's binary tensor framing. */
#ifndef FOCALD_BINARY_H
#define FOCALD_BINARY_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "http.h"

/* The tensors a binary response can carry, in this order; a request's
 * `outputs` picks some. losses and the scores are FP32 (NaN where nothing was
 * scored), pred INT32 (-1 there). */
enum { BIN_LOSSES = 0, BIN_PRED = 9, BIN_OUTPUTS = 10 };
extern const char *const bin_output_names[BIN_OUTPUTS];

/* Decodes a binary body: the first header_len bytes are the JSON header,
 * then the tensors. accept_binary: the client sent Accept: application/octet-stream.
 * Tensors may point into body, which must outlive *r. Returns 0, or -1 with
 * *err filled (then *r needs no req_free). */
int dec_binary(req *r, const char *body, size_t len, int64_t header_len, int want_store, int accept_binary, problem *err);

/* What a binary response reports. */
typedef struct bin_result {
  const char *dataset, *run; /* NULL for /v1/loss */
  int64_t n;
  int duplicate;
  double mean_loss;
  const float *loss;
  const fl_score *scores;
  const int64_t *hardest;
  int64_t nhardest;
  uint32_t outputs;          /* bit per bin_output_names entry */
} bin_result;

/* Builds the response body: JSON header then tensors. *body is malloc'd;
 * *header_len goes in Inference-Header-Content-Length. Returns 0 or -1. */
int bin_response(const bin_result *res, char **body, size_t *len, size_t *header_len);

#endif /* FOCALD_BINARY_H */
