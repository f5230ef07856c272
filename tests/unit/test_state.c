/* test_state.c — in-memory datasets: ids, growth, top-k order, cursors, filters, runs. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "state.h"

static hist_obs obs(float loss, float p_t, int32_t label) {
  hist_obs o = {.loss = loss, .p_t = p_t, .p_max = p_t, .margin = p_t - 0.5f, .correct = p_t >= 0.5f, .pred = label,
                .label = label, .scored = 1};
  return o;
}

typedef struct fixture {
  st_map *map;
  st_dataset *ds;
  st_run *a, *b;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->map = st_map_new();
  assert_int_equal(st_add_dataset(f->map, "d", 1, 0, &f->ds), 0);
  assert_int_equal(st_add_run(f->ds, "a", 1, 4, 0, &f->a), 0);
  assert_int_equal(st_add_run(f->ds, "b", 2, 4, 0, &f->b), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  st_map_free(f->map);
  free(f);
  return 0;
}

static void test_state_ids_grow_and_stay_found(void **state) {
  fixture *f = *state;
  char id[32];
  for (int i = 0; i < 50000; i++) {
    snprintf(id, sizeof id, "s%d", i);
    assert_int_equal(st_sample_intern(f->ds, id), i);
  }
  for (int i = 0; i < 50000; i += 997) {
    snprintf(id, sizeof id, "s%d", i);
    assert_int_equal(st_sample_key(f->ds, id), i);
  }
  assert_int_equal(st_sample_key(f->ds, "nope"), -1);
  assert_int_equal(st_sample_intern(f->ds, "s7"), 7); /* existing id: same key */
  assert_true(f->a->cap >= f->ds->nsamples && f->b->cap >= f->ds->nsamples);
}

/* Past a megabyte an array moves from the heap to its own mapping, and grows by
 * mremap after that: every value written before a growth is still there after
 * it, and every new entry starts as documented. */
static void test_state_large_arrays_keep_values_across_growth(void **state) {
  fixture *f = *state;
  enum { N = 600000 };
  char id[32];
  for (uint32_t i = 0; i < N; i++) {
    snprintf(id, sizeof id, "g%u", i);
    assert_int_equal(st_sample_intern(f->ds, id), i);
    if (i % 3 == 0) {
      hist_obs o = obs((float)i, 0.25f, (int32_t)(i % 4));
      st_observe(f->a, i, 1, &o, 0.3, -1);
    }
  }
  assert_true(f->ds->cap >= N && f->a->cap >= N && f->b->cap >= N);
  for (uint32_t i = 0; i < N; i += 7) {
    snprintf(id, sizeof id, "g%u", i);
    assert_int_equal(st_sample_key(f->ds, id), i);
    assert_string_equal(f->ds->ids[i], id);
    hist_rec h;
    st_history(f->a, i, &h);
    if (i % 3 == 0) {
      assert_int_equal(h.seen, 1);
      assert_true(h.last_loss == (float)i);
      assert_int_equal(h.label, (int32_t)(i % 4));
    } else {
      assert_int_equal(h.seen, 0);
      assert_int_equal(h.label, -1);
    }
    st_history(f->b, i, &h);
    assert_int_equal(h.seen, 0);
    assert_int_equal(h.label, -1);
    assert_int_equal(f->ds->status[i], ST_OPEN);
    assert_int_equal(f->ds->corrected_class[i], -1);
    assert_true(isnan(f->ds->confirm_score[i]));
    assert_int_equal(f->ds->last_review[i], -1);
    assert_null(f->ds->meta[i]);
  }
}

static void test_state_top_orders_by_score_then_id(void **state) {
  fixture *f = *state;
  /* losses with ties: ids c,a,b share 2.0 */
  const char *ids[] = {"c", "a", "b", "d", "e"};
  const float loss[] = {2.0f, 2.0f, 2.0f, 5.0f, 1.0f};
  for (int i = 0; i < 5; i++) {
    int64_t k = st_sample_intern(f->ds, ids[i]);
    hist_obs o = obs(loss[i], 0.1f * (float)(i + 1), i % 4);
    st_observe(f->a, (uint32_t)k, 1, &o, 0.3, -1);
  }
  st_hit hits[5];
  st_query q = {.by = HF_MEAN_LOSS, .run = f->a, .min_seen = 1, .k = 5};
  assert_int_equal(st_top(f->ds, &q, hits), 5);
  const char *want[] = {"d", "a", "b", "c", "e"};
  for (int i = 0; i < 5; i++) assert_string_equal(f->ds->ids[hits[i].key], want[i]);
  /* ascending fields: lowest confidence first */
  q.by = HF_CONFIDENCE;
  assert_int_equal(st_top(f->ds, &q, hits), 5);
  assert_string_equal(f->ds->ids[hits[0].key], "c");
  /* paging with a cursor after "a" (score 2.0) continues at "b" */
  q.by = HF_MEAN_LOSS;
  q.k = 2;
  q.has_cursor = 1;
  q.cursor_score = 2.0;
  q.cursor_id = "a";
  assert_int_equal(st_top(f->ds, &q, hits), 2);
  assert_string_equal(f->ds->ids[hits[0].key], "b");
  assert_string_equal(f->ds->ids[hits[1].key], "c");
  /* a cursor at the end gives nothing more */
  q.cursor_score = 1.0;
  q.cursor_id = "e";
  assert_int_equal(st_top(f->ds, &q, hits), 0);
}

static void test_state_filters_and_runs(void **state) {
  fixture *f = *state;
  int64_t k0 = st_sample_intern(f->ds, "x"), k1 = st_sample_intern(f->ds, "y");
  hist_obs o = obs(1.0f, 0.2f, 1);
  st_observe(f->a, (uint32_t)k0, 1, &o, 0.3, -1);
  o = obs(3.0f, 0.4f, 2);
  st_observe(f->a, (uint32_t)k1, 2, &o, 0.3, -1);
  o = obs(5.0f, 0.6f, 2);
  st_observe(f->b, (uint32_t)k0, 3, &o, 0.3, -1);
  st_observe(f->a, (uint32_t)k1, 4, &o, 0.3, -1);
  st_hit hits[4];
  /* label filter */
  st_query q = {.by = HF_MEAN_LOSS, .run = f->a, .min_seen = 1, .k = 4, .has_label = 1, .label = 1};
  assert_int_equal(st_top(f->ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k0);
  /* min_seen */
  q.has_label = 0;
  q.min_seen = 2;
  assert_int_equal(st_top(f->ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k1);
  /* run=*: x is the mean of its runs' mean losses (1 and 5), y has only run a (3 and 5 -> 4) */
  q = (st_query){.by = HF_MEAN_LOSS, .run = NULL, .min_seen = 1, .k = 4};
  assert_int_equal(st_top(f->ds, &q, hits), 2);
  assert_int_equal(hits[0].key, k1);
  assert_true(fabs(hits[0].score - 4.0) < 1e-6);
  assert_true(fabs(hits[1].score - 3.0) < 1e-6);
  hist_view v;
  st_history_all(f->ds, (uint32_t)k0, &v);
  assert_true(v.seen == 2.0);
  assert_true(fabs(v.mean_loss - 3.0) < 1e-6); /* runs a (1) and b (5) */
  /* status filter */
  f->ds->status[k1] = ST_CONFIRMED;
  q.status_mask = 1u << ST_OPEN;
  assert_int_equal(st_top(f->ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k0);
}

static void test_state_replayed_batches_apply_once(void **state) {
  fixture *f = *state;
  int64_t k = st_sample_intern(f->ds, "r");
  hist_obs o = obs(2.0f, 0.5f, 0);
  st_observe(f->a, (uint32_t)k, 10, &o, 0.3, -1);
  /* the same batch again (a replay after a snapshot holding it): ignored */
  st_observe(f->a, (uint32_t)k, 10, &o, 0.3, -1);
  st_observe(f->a, (uint32_t)k, 9, &o, 0.3, -1);
  hist_rec h;
  st_history(f->a, (uint32_t)k, &h);
  assert_int_equal(h.seen, 1);
  st_observe(f->a, (uint32_t)k, 11, &o, 0.3, -1);
  st_history(f->a, (uint32_t)k, &h);
  assert_int_equal(h.seen, 2);
  assert_true(f->a->ndirty >= 1);
}

static void test_state_quantiles(void **state) {
  fixture *f = *state;
  char id[16];
  for (int i = 0; i < 101; i++) {
    snprintf(id, sizeof id, "q%d", i);
    int64_t k = st_sample_intern(f->ds, id);
    hist_obs o = obs((float)i, 0.5f, 0);
    st_observe(f->b, (uint32_t)k, 1, &o, 0.3, -1);
  }
  const double p[4] = {0.5, 0.9, 0.99, 1.0};
  double out[4];
  assert_int_equal(st_loss_quantiles(f->b, f->ds->nsamples, p, 4, out), 0);
  assert_true(fabs(out[0] - 50) < 1e-9 && fabs(out[1] - 90) < 1e-9 && fabs(out[2] - 99) < 1e-9 && out[3] == 100);
}

static void test_state_datasets_sorted_and_removed(void **state) {
  fixture *f = *state;
  st_dataset *z, *b;
  assert_int_equal(st_add_dataset(f->map, "z", 2, 0, &z), 0);
  assert_int_equal(st_add_dataset(f->map, "b", 3, 0, &b), 0);
  assert_int_equal(st_add_dataset(f->map, "b", 4, 0, &b), -1);
  st_dataset *got = st_dataset_acquire(f->map, "z");
  assert_ptr_equal(got, z);
  st_dataset_release(got);
  st_remove_dataset(f->map, "z");
  assert_null(st_dataset_acquire(f->map, "z"));
  assert_null(st_find(f->map, "z"));
  assert_non_null(st_find(f->map, "b"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_state_ids_grow_and_stay_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_large_arrays_keep_values_across_growth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_top_orders_by_score_then_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_filters_and_runs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_replayed_batches_apply_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_quantiles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_datasets_sorted_and_removed, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
