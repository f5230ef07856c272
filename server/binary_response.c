/* binary_response.c — a binary response: a JSON header that lists the output tensors, then their bytes.
 *
 * The header is built first, in a buffer that reports running out of memory
 * rather than ending short; then one allocation takes the header and every
 * output's little-endian bytes, in the order of req_output_names, so that the
 * HTTP layer sends one body whose Inference-Header-Content-Length is the
 * header's length.
 */
#include "binary.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "numfmt.h"

int bin_response(const bin_result *res, char **body, size_t *len, size_t *header_len, size_t *duplicate_at) {
  const int64_t n = res->n;
  buf hb = {0};
  char num[32];
  buf_printf(&hb, "{\"dataset\":");
  if (res->dataset) buf_printf(&hb, "\"%s\"", res->dataset);
  else buf_printf(&hb, "null");
  buf_printf(&hb, ",\"run\":");
  if (res->run) buf_printf(&hb, "\"%s\"", res->run);
  else buf_printf(&hb, "null");
  snprintf(num, sizeof num, "null");
  if (isfinite(res->mean_loss) && fabs(res->mean_loss) <= FLT_MAX) num_format_f32(num, (float)res->mean_loss);
  buf_printf(&hb, ",\"accepted\":%" PRId64 ",\"duplicate\":", n);
  if (duplicate_at) *duplicate_at = hb.len;
  buf_printf(&hb, "false,\"loss\":%s,\"hardest\":[", num);
  for (int64_t i = 0; i < res->nhardest; i++) buf_printf(&hb, "%s%" PRId64, i ? "," : "", res->hardest[i]);
  buf_printf(&hb, "],\"outputs\":[");
  const size_t grad_bytes = (size_t)(n * res->m * res->c) * 4;
  size_t data = 0;
  int first = 1;
  for (int k = 0; k < BIN_OUTPUTS; k++) {
    if (!(res->outputs & (1u << k))) continue;
    char shape[64];
    size_t bytes = (size_t)n * 4;
    if (k == BIN_GRAD) {
      bytes = grad_bytes;
      if (res->dense) snprintf(shape, sizeof shape, "%" PRId64 ",%" PRId64 ",%" PRId64, n, res->m, res->c);
      else snprintf(shape, sizeof shape, "%" PRId64 ",%" PRId64, n, res->c);
    } else {
      snprintf(shape, sizeof shape, "%" PRId64, n);
    }
    buf_printf(&hb, "%s{\"name\":\"%s\",\"datatype\":\"%s\",\"shape\":[%s],\"parameters\":{\"binary_data_size\":%zu}}",
               first ? "" : ",", req_output_names[k], k == BIN_PRED ? "INT32" : "FP32", shape, bytes);
    first = 0;
    data += bytes;
  }
  buf_printf(&hb, "]}");
  size_t hl = 0;
  char *h = buf_take(&hb, &hl); /* NULL when memory ran out: never a header cut short */
  if (!h) return -1;
  char *out = malloc(hl + data);
  if (!out) {
    free(h);
    return -1;
  }
  memcpy(out, h, hl);
  free(h);
  unsigned char *p = (unsigned char *)out + hl;
  for (int k = 0; k < BIN_OUTPUTS; k++) {
    if (!(res->outputs & (1u << k))) continue;
    if (k == BIN_GRAD) {
      memcpy(p, res->grad, grad_bytes);
      p += grad_bytes;
      continue;
    }
    if (k == BIN_GRAD_NORM) {
      memcpy(p, res->grad_norm, (size_t)n * 4);
      p += (size_t)n * 4;
      continue;
    }
    for (int64_t i = 0; i < n; i++) {
      const fl_score *s = &res->scores[i];
      float v;
      int32_t iv;
      /* a sample with nothing scored has NaN scores (null in JSON) */
      const float nan = NAN;
      switch (k) {
      case BIN_LOSSES: v = res->loss[i]; break;
      case 1: v = s->rows ? s->p_t : nan; break;
      case 2: v = s->rows ? s->p_max : nan; break;
      case 3: v = s->rows ? s->margin : nan; break;
      case 4: v = s->rows ? s->norm_margin : nan; break;
      case 5: v = s->rows ? s->entropy : nan; break;
      case 6: v = s->rows ? s->cw_entropy : nan; break;
      case 7: v = s->rows ? s->el2n : nan; break;
      case 8: v = s->rows ? s->correct : nan; break;
      default:
        iv = s->rows ? s->pred : -1;
        memcpy(p + 4 * i, &iv, 4);
        continue;
      }
      memcpy(p + 4 * i, &v, 4);
    }
    p += (size_t)n * 4;
  }
  *body = out;
  *len = hl + data;
  *header_len = hl;
  return 0;
}
