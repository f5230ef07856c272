/* metrics.c — Prometheus histograms: bucket counts kept per bucket, summed when written. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>

void metrics_hist_observe(metrics_hist *h, double v) {
  int b = 0;
  while (b < h->nbounds && v > h->bounds[b]) b++;
  if (b < h->nbounds) atomic_fetch_add(&h->bucket[b], 1);
  atomic_fetch_add(&h->count, 1);
  atomic_fetch_add(&h->sum_micro, (unsigned long long)(v * 1e6 + 0.5));
}

/* The shortest decimal that reads back as v exactly: le="1048576", not %g's "1.04858e+06". */
static void exact(char *out, size_t cap, double v) {
  for (int p = 1; p <= 17; p++) {
    snprintf(out, cap, "%.*g", p, v);
    if (strtod(out, NULL) == v) return;
  }
}

void metrics_hist_write(buf *o, const char *name, const char *labels, const metrics_hist *h) {
  const char *sep = labels[0] ? "," : "";
  unsigned long long cum = 0;
  for (int b = 0; b < h->nbounds; b++) {
    char le[32];
    exact(le, sizeof le, h->bounds[b]);
    cum += atomic_load(&h->bucket[b]);
    buf_printf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le, cum);
  }
  const unsigned long long count = atomic_load(&h->count);
  buf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, count);
  if (labels[0]) {
    buf_printf(o, "%s_sum{%s} %.6f\n", name, labels, (double)atomic_load(&h->sum_micro) * 1e-6);
    buf_printf(o, "%s_count{%s} %llu\n", name, labels, count);
  } else {
    buf_printf(o, "%s_sum %.6f\n", name, (double)atomic_load(&h->sum_micro) * 1e-6);
    buf_printf(o, "%s_count %llu\n", name, count);
  }
}
