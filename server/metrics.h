/* metrics.h — Prometheus histograms and counters that any thread may update. */
#ifndef FOCALD_METRICS_H
#define FOCALD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"

#define METRICS_BUCKETS_MAX 16

/* A histogram with fixed upper bounds (ascending, +Inf implied). Zero-initialise
 * it with its bounds set; updates are lock-free. */
typedef struct metrics_hist {
  const double *bounds;
  int nbounds;
  atomic_ullong bucket[METRICS_BUCKETS_MAX]; /* observations <= bounds[i], not cumulative */
  atomic_ullong count;
  atomic_ullong sum_micro; /* the sum of observations times 1e6 */
} metrics_hist;

/* Records one observation v (>= 0). */
void metrics_hist_observe(metrics_hist *h, double v);

/* Appends h's series in the text format: name_bucket{labels,le=..} cumulative,
 * name_sum and name_count. labels is "" or `key="value",...` without braces.
 * The HELP and TYPE lines are the caller's. */
void metrics_hist_write(buf *o, const char *name, const char *labels, const metrics_hist *h);

#endif /* FOCALD_METRICS_H */
