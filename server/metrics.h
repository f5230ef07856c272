/* metrics.h — Prometheus histograms and counters that any thread may update. */
#ifndef FOCALD_METRICS_H
#define FOCALD_METRICS_H

#include <stdatomic.h>
#include <stddef.h>

#include "buf.h"

#define METRICS_BUCKETS_MAX 16

/* A histogram with fixed upper bounds (ascending, at most METRICS_BUCKETS_MAX - 1;
 * +Inf implied). Zero-initialise it with its bounds set; updates are lock-free.
 * The count is the sum of the buckets (the last one holds what passes every
 * bound), so a scrape's +Inf bucket and _count always agree with its buckets. */
typedef struct metrics_hist {
  const double *bounds;
  int nbounds;
  atomic_ullong bucket[METRICS_BUCKETS_MAX]; /* observations in (bounds[i-1], bounds[i]]; [nbounds]: above all */
  atomic_ullong sum_micro; /* the sum of observations times 1e6 */
} metrics_hist;

/* Records one observation v (>= 0). */
void metrics_hist_observe(metrics_hist *h, double v);

/* The observations recorded so far. */
unsigned long long metrics_hist_count(const metrics_hist *h);

/* Appends h's series in the text format: name_bucket{labels,le=..} cumulative,
 * name_sum and name_count. labels is "" or `key="value",...` without braces.
 * The HELP and TYPE lines are the caller's. */
void metrics_hist_write(buf *o, const char *name, const char *labels, const metrics_hist *h);

/* Appends the process_* series (CPU seconds, resident and virtual memory, start
 * time, open and allowed descriptors), with their HELP and TYPE lines. */
void metrics_process_write(buf *o);

#endif /* FOCALD_METRICS_H */
