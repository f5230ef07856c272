/* test_metrics.c — Prometheus histograms: bounds written exactly, and every scrape self-consistent
 * (cumulative buckets that never decrease, +Inf equal to _count) while other threads observe. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "metrics.h"

static const double bounds[] = {0, 0.0005, 2.5, 64, 1048576, 16777216};
#define NB ((int)(sizeof bounds / sizeof bounds[0]))

/* Parses one scrape of h: the cumulative bucket values (NB of them, then +Inf) and _count. */
static void parse(const char *text, unsigned long long *cum, unsigned long long *count) {
  int b = 0;
  for (const char *p = text; (p = strstr(p, "h_bucket{")); p++) {
    const char *v = strstr(p, "} ");
    assert_non_null(v);
    cum[b++] = strtoull(v + 2, NULL, 10);
  }
  assert_int_equal(b, NB + 1);
  const char *c = strstr(text, "h_count ");
  assert_non_null(c);
  *count = strtoull(c + 8, NULL, 10);
}

static void test_metrics_bounds_exact_and_buckets_cumulative(void **state) {
  (void)state;
  metrics_hist h = {.bounds = bounds, .nbounds = NB};
  const double obs[] = {0, 0.0001, 0.0005, 0.0006, 3, 64, 65, 1048576, 2e6, 1e9};
  for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) metrics_hist_observe(&h, obs[i]);
  buf o = {0};
  metrics_hist_write(&o, "h", "", &h);
  assert_false(o.failed);
  /* an observation equal to a bound is in its bucket (le: less or equal) */
  assert_non_null(strstr(o.b, "h_bucket{le=\"0\"} 1\n"));
  assert_non_null(strstr(o.b, "h_bucket{le=\"0.0005\"} 3\n"));
  assert_non_null(strstr(o.b, "h_bucket{le=\"2.5\"} 4\n"));
  assert_non_null(strstr(o.b, "h_bucket{le=\"64\"} 6\n"));
  assert_non_null(strstr(o.b, "h_bucket{le=\"1048576\"} 8\n")); /* not %g's 1.04858e+06 */
  assert_non_null(strstr(o.b, "h_bucket{le=\"16777216\"} 9\n"));
  assert_non_null(strstr(o.b, "h_bucket{le=\"+Inf\"} 10\n"));
  assert_non_null(strstr(o.b, "h_count 10\n"));
  assert_int_equal(metrics_hist_count(&h), 10);
  free(o.b);
  /* with labels */
  buf l = {0};
  metrics_hist_write(&l, "h", "route=\"/x\"", &h);
  assert_non_null(strstr(l.b, "h_bucket{route=\"/x\",le=\"+Inf\"} 10\n"));
  assert_non_null(strstr(l.b, "h_count{route=\"/x\"} 10\n"));
  free(l.b);
}

typedef struct {
  metrics_hist *h;
  atomic_int *stop;
  unsigned seed;
} observer;

static void *observe_loop(void *arg) {
  observer *w = arg;
  unsigned s = w->seed;
  while (!atomic_load(w->stop)) {
    s = s * 1103515245u + 12345u;
    metrics_hist_observe(w->h, (double)(s >> 8) / 8.0); /* 0 .. 2^21: every bucket and past the last */
  }
  return NULL;
}

static void test_metrics_scrape_consistent_while_observed(void **state) {
  (void)state;
  metrics_hist h = {.bounds = bounds, .nbounds = NB};
  atomic_int stop = 0;
  observer w[3];
  pthread_t t[3];
  for (int i = 0; i < 3; i++) {
    w[i] = (observer){&h, &stop, 7u + (unsigned)i};
    assert_int_equal(pthread_create(&t[i], NULL, observe_loop, &w[i]), 0);
  }
  unsigned long long last = 0;
  for (int scrape = 0; scrape < 3000; scrape++) {
    buf o = {0};
    metrics_hist_write(&o, "h", "", &h);
    unsigned long long cum[NB + 1], count;
    parse(o.b, cum, &count);
    for (int b = 1; b <= NB; b++) assert_true(cum[b - 1] <= cum[b]);
    assert_int_equal(cum[NB], count);
    assert_true(count >= last);
    last = count;
    free(o.b);
  }
  atomic_store(&stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
  assert_true(last > 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics_bounds_exact_and_buckets_cumulative),
      cmocka_unit_test(test_metrics_scrape_consistent_while_observed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
