/* binary.h — requests and responses in the Open Inference Protocol's binary tensor framing. */
#ifndef FOCALD_BINARY_H
#define FOCALD_BINARY_H

#include <stddef.h>
#include <stdint.h>

#include "decode.h"
#include "http.h"

/* The tensors a binary response can carry, in the order of req_output_names;
 * a request's `outputs` picks some. losses and the scores are FP32 (NaN where
 * nothing was scored), pred INT32 (-1 there), grad FP32 in the input's shape,
 * grad_norm FP32 (N). */
enum {
  BIN_LOSSES = REQ_OUT_LOSSES,
  BIN_PRED = REQ_OUT_PRED,
  BIN_GRAD = REQ_OUT_GRAD,
  BIN_GRAD_NORM = REQ_OUT_GRAD_NORM,
  BIN_OUTPUTS = REQ_OUTPUTS
};

/* Decodes a binary body (binary.c): the first header_len bytes are the JSON header,
 * then the tensors. accept_binary: the client sent Accept: application/octet-stream.
 * Tensors may point into body, which must outlive *r. Returns 0, or -1 with
 * *err filled (then *r needs no req_free). */
int dec_binary(req *r, const char *body, size_t len, int64_t header_len, int want_store, int accept_binary, problem *err);

/* What a binary response reports. */
typedef struct bin_result {
  const char *dataset, *run; /* NULL for /v1/loss */
  int64_t n, m, c;
  int dense;                 /* the input was [N, M, C]: so is grad */
  double mean_loss;
  const float *loss;
  const fl_score *scores;
  const float *grad;         /* (n, m, c) when outputs has grad */
  const float *grad_norm;    /* (n) when outputs has grad_norm */
  const int64_t *hardest;
  int64_t nhardest;
  uint32_t outputs;          /* bit per req_output_names entry */
} bin_result;

/* Builds the response body: JSON header then tensors (binary_response.c). *body is malloc'd;
 * *header_len goes in Inference-Header-Content-Length; the header's "duplicate" is written false, and
 * *duplicate_at (may be NULL) is where that value begins, for the caller to make it true. Returns 0 or -1. */
int bin_response(const bin_result *res, char **body, size_t *len, size_t *header_len, size_t *duplicate_at);

#endif /* FOCALD_BINARY_H */
