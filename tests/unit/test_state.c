/* test_state.c — in-memory datasets: ids, growth (and what small datasets take), top-k order,
 * cursors, filters, runs, and the writer's prepare/apply steps (what a prepared change that is not
 * applied leaves behind), the snapshot's marks, and the checks made while loading. */
#include <malloc.h>
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

static const hist_params HP = {0.3, 10};

static hist_obs obs(float loss, float p_t, int32_t label) {
  hist_obs o = {.loss = loss, .p_t = p_t, .p_max = p_t, .margin = p_t - 0.5f, .correct = p_t >= 0.5f, .pred = label,
                .label = label, .scored = 1};
  return o;
}

typedef struct fixture {
  st_map *map;
  int64_t seq; /* the last batch applied */
} fixture;

/* One batch of n samples (ids[i], observation o[i]) applied to dataset "d" (id 1), run name (id run_id, 4 classes). */
static void put(fixture *f, const char *run, int64_t run_id, int n, char **ids, const hist_obs *o) {
  st_batch_ref ref = {1, 0, "d", run_id, 0, run, 4};
  st_batch_prep p;
  assert_int_equal(st_prepare_batch(f->map, &ref, (uint32_t)n, ids, &p), 0);
  st_apply_batch(f->map, &p, ++f->seq, ids, o, &HP, 0, NULL, NULL);
  st_tx_end(f->map);
}

/* put of one sample. */
static void put1(fixture *f, const char *run, int64_t run_id, const char *id, hist_obs o) {
  char *ids[1] = {(char *)id};
  put(f, run, run_id, 1, ids, &o);
}

static st_dataset *dataset(fixture *f) {
  st_dataset *ds = st_w_find(f->map, 1);
  assert_non_null(ds);
  return ds;
}

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  f->map = st_map_new();
  assert_non_null(f->map);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  st_map_free(f->map);
  free(f);
  return 0;
}

/* Key i (id) of a dataset built by the growth tests: run a observed every key once, with loss i and
 * label i % 4; run b only key 0; nothing else was done to any sample. */
static void grown_key_holds(const st_dataset *ds, const st_run *a, const st_run *b, uint32_t i, const char *id) {
  assert_int_equal(st_key(ds, id), i);
  assert_string_equal(st_sample_id(ds, i), id);
  hist_rec h;
  st_history(a, i, &h);
  assert_int_equal(h.seen, 1);
  assert_true(h.last_loss == (float)i);
  assert_int_equal(h.label, (int32_t)(i % 4));
  st_history(b, i, &h);
  assert_int_equal(h.seen, i == 0);
  if (i) assert_int_equal(h.label, -1);
  assert_int_equal(st_sample_status(ds, i), ST_OPEN);
  assert_true(isnan(st_confirm_score(ds, i)));
  assert_int_equal(st_last_review(ds, i), -1);
  assert_null(st_meta(ds, i));
}

/* A dataset that grows one sample at a time passes every doubling of its arrays from the
 * smallest (and its ids every arena block): at each one, every value written before it is still
 * there, and every new entry starts as documented. */
static void test_state_growth_from_small_keeps_values(void **state) {
  fixture *f = *state;
  enum { N = 3000 };
  char id[32];
  put1(f, "b", 2, "k0", obs(0.0f, 0.25f, 0)); /* a second run that observed only the first sample */
  for (uint32_t k = 0; k < N; k++) {
    snprintf(id, sizeof id, "k%u", k);
    put1(f, "a", 1, id, obs((float)k, 0.25f, (int32_t)(k % 4)));
    if ((k & (k - 1)) != 0 && k != N - 1) continue; /* check at powers of two (the growths) and at the end */
    st_dataset *ds = dataset(f);
    assert_int_equal(st_nsamples(ds), k + 1);
    const st_run *a = st_find_run(ds, "a"), *b = st_find_run(ds, "b");
    for (uint32_t i = 0; i <= k; i++) {
      snprintf(id, sizeof id, "k%u", i);
      grown_key_holds(ds, a, b, i, id);
    }
  }
}

/* Datasets of a few samples take a few kilobytes each, not room for a thousand keys in every
 * column (which made 10,000 small datasets hold 2 GB and start in seconds). Heap in use as glibc
 * counts it; under the sanitizers, whose allocator glibc does not see, the check holds trivially. */
static void test_state_small_datasets_take_little_memory(void **state) {
  fixture *f = *state;
  enum { D = 2000, N = 4 };
  char *ids[N] = {"a", "b", "c", "d"};
  hist_obs o[N] = {obs(1, 0.5f, 0), obs(1, 0.5f, 1), obs(1, 0.5f, 2), obs(1, 0.5f, 3)};
  const size_t before = mallinfo2().uordblks;
  for (int d = 0; d < D; d++) {
    char name[32];
    snprintf(name, sizeof name, "d%d", d);
    st_batch_ref ref = {100 + d, 0, name, 100 + d, 0, "r", 4};
    st_batch_prep p;
    assert_int_equal(st_prepare_batch(f->map, &ref, N, ids, &p), 0);
    st_apply_batch(f->map, &p, ++f->seq, ids, o, &HP, 0, NULL, NULL);
    st_tx_end(f->map);
  }
  const size_t after = mallinfo2().uordblks;
  const double per = after > before ? (double)(after - before) / D : 0;
  assert_true(per < 16384);
  const st_dataset *ds = st_acquire(f->map, "d1999");
  assert_non_null(ds);
  assert_int_equal(st_nsamples(ds), N);
  assert_int_equal(st_key(ds, "d"), 3);
  st_release(ds);
}

/* Many samples in a few large batches: keys are dense in order of first sight, and found again. */
static void test_state_ids_grow_and_stay_found(void **state) {
  fixture *f = *state;
  enum { N = 50000, B = 5000 };
  char **ids = malloc(B * sizeof *ids);
  hist_obs *o = calloc(B, sizeof *o);
  for (int b = 0; b < N / B; b++) {
    for (int i = 0; i < B; i++) {
      ids[i] = malloc(16);
      snprintf(ids[i], 16, "s%d", b * B + i);
      o[i] = obs(1.0f, 0.5f, 0);
    }
    put(f, "a", 1, B, ids, o);
    for (int i = 0; i < B; i++) free(ids[i]);
  }
  st_dataset *ds = dataset(f);
  assert_int_equal(st_nsamples(ds), N);
  char id[32];
  for (int i = 0; i < N; i += 997) {
    snprintf(id, sizeof id, "s%d", i);
    assert_int_equal(st_key(ds, id), i);
    assert_string_equal(st_sample_id(ds, (uint32_t)i), id);
  }
  assert_int_equal(st_key(ds, "nope"), -1);
  put1(f, "a", 1, "s7", obs(2.0f, 0.5f, 0)); /* an existing id: the same key, seen twice */
  hist_rec h;
  st_history(st_find_run(ds, "a"), 7, &h);
  assert_int_equal(h.seen, 2);
  assert_int_equal(st_nsamples(ds), N);
  free(ids);
  free(o);
}

/* Past a megabyte an array moves from the heap to its own mapping, and grows by
 * mremap after that: every value written before a growth is still there after
 * it, and every new entry starts as documented. */
static void test_state_large_arrays_keep_values_across_growth(void **state) {
  fixture *f = *state;
  enum { N = 600000, B = 60000 };
  char **ids = malloc(B * sizeof *ids);
  hist_obs *o = calloc(B, sizeof *o);
  char *text = malloc((size_t)B * 16);
  for (uint32_t b = 0; b < N / B; b++) {
    for (uint32_t i = 0; i < B; i++) {
      const uint32_t k = b * B + i;
      ids[i] = text + (size_t)i * 16;
      snprintf(ids[i], 16, "g%u", k);
      o[i] = obs((float)k, 0.25f, (int32_t)(k % 4));
    }
    put(f, "a", 1, B, ids, o);
  }
  /* a second run that observed only the first sample */
  put1(f, "b", 2, "g0", obs(0.0f, 0.25f, 0));
  st_dataset *ds = dataset(f);
  const st_run *a = st_find_run(ds, "a"), *b = st_find_run(ds, "b");
  char id[32];
  for (uint32_t i = 0; i < N; i += 7) {
    snprintf(id, sizeof id, "g%u", i);
    grown_key_holds(ds, a, b, i, id);
    assert_null(st_corrected(ds, i));
  }
  free(ids);
  free(o);
  free(text);
}

static void test_state_top_orders_by_score_then_id(void **state) {
  fixture *f = *state;
  /* losses with ties: ids c,a,b share 2.0 */
  const char *ids[] = {"c", "a", "b", "d", "e"};
  const float loss[] = {2.0f, 2.0f, 2.0f, 5.0f, 1.0f};
  for (int i = 0; i < 5; i++) put1(f, "a", 1, ids[i], obs(loss[i], 0.1f * (float)(i + 1), i % 4));
  const st_dataset *ds = dataset(f);
  st_hit hits[5];
  st_query q = {.by = HF_MEAN_LOSS, .run = st_find_run(ds, "a"), .min_seen = 1, .k = 5};
  assert_int_equal(st_top(ds, &q, hits), 5);
  const char *want[] = {"d", "a", "b", "c", "e"};
  for (int i = 0; i < 5; i++) assert_string_equal(st_sample_id(ds, hits[i].key), want[i]);
  /* ascending fields: lowest confidence first */
  q.by = HF_CONFIDENCE;
  assert_int_equal(st_top(ds, &q, hits), 5);
  assert_string_equal(st_sample_id(ds, hits[0].key), "c");
  /* paging with a cursor after "a" (score 2.0) continues at "b" */
  q.by = HF_MEAN_LOSS;
  q.k = 2;
  q.has_cursor = 1;
  q.cursor_score = 2.0;
  q.cursor_id = "a";
  assert_int_equal(st_top(ds, &q, hits), 2);
  assert_string_equal(st_sample_id(ds, hits[0].key), "b");
  assert_string_equal(st_sample_id(ds, hits[1].key), "c");
  /* a cursor at the end gives nothing more */
  q.cursor_score = 1.0;
  q.cursor_id = "e";
  assert_int_equal(st_top(ds, &q, hits), 0);
}

/* Sets sample key's status (an audit entry with no strings). */
static void set_status(fixture *f, uint32_t key, int to) {
  st_dataset *ds = dataset(f);
  assert_int_equal(st_prepare_reviews(f->map, ds, 1), 0);
  st_review e = {.seq = 1, .batch_seq = f->seq, .prev = -1, .from = (uint8_t)st_sample_status(ds, key), .to = (uint8_t)to};
  st_apply_status(ds, key, to, NULL, NAN, &e);
  st_tx_end(f->map);
}

/* Relabels sample key to label (JSON) as of batch batch_seq. */
static void relabel(fixture *f, uint32_t key, const char *label, int64_t batch_seq) {
  st_dataset *ds = dataset(f);
  assert_int_equal(st_prepare_reviews(f->map, ds, 1), 0);
  st_review e = {.seq = 1, .batch_seq = batch_seq, .prev = -1, .from = (uint8_t)st_sample_status(ds, key),
                 .to = ST_RELABELLED, .label_after = strdup(label)};
  st_apply_status(ds, key, ST_RELABELLED, strdup(label), NAN, &e);
  st_tx_end(f->map);
}

/* stale_labels compares a batch's label with the correction at the correction's full width: a class index past
 * INT32_MAX (earlier versions accepted such relabels; they stay in databases) differs from every label a batch
 * sends, including one equal to its low 32 bits; the correction itself, names and lists are not stale. Both ways
 * of finding the correction are covered: the one in force (a new batch) and the one as of a replayed batch. */
static void test_state_stale_labels_compare_full_width(void **state) {
  fixture *f = *state;
  static const struct {
    const char *label;
    uint32_t stale;
  } cases[] = {{"2147483648", 1},          {"4294967301", 1} /* 2^32 + 3 */, {"9223372036854775807", 1},
               {"99999999999999999999", 1} /* past 64 bits */, {"-3", 0},
               {"2147483647", 1},          {"1", 1},                        {"3", 0},
               {"\"3\"", 0} /* a name */, {"[3]", 0} /* a list */};
  enum { N = sizeof cases / sizeof cases[0] };
  char id[N][8], *ids[N];
  hist_obs o[N];
  for (int i = 0; i < N; i++) {
    snprintf(id[i], sizeof id[i], "s%d", i);
    ids[i] = id[i];
    o[i] = obs(1.0f, 0.5f, 3);
  }
  put(f, "a", 1, N, ids, o); /* seq 1: before any relabel */
  for (uint32_t i = 0; i < N; i++) relabel(f, i, cases[i].label, 1);
  put(f, "a", 1, N, ids, o); /* seq 2: after them, label 3 everywhere */
  /* a replayed batch: seq 3 is older than the review of another sample logged at batch 9 */
  put1(f, "b", 2, "other", obs(1.0f, 0.5f, 3));
  relabel(f, N, "0", 9);
  put(f, "c", 3, N, ids, o); /* seq 4 <= 9: the corrections as of batch 4 */
  const st_dataset *ds = dataset(f);
  const st_run *a = st_find_run(ds, "a"), *c = st_find_run(ds, "c");
  assert_non_null(a);
  assert_non_null(c);
  for (uint32_t i = 0; i < N; i++) {
    if (st_stale_labels(a, i) != cases[i].stale)
      fail_msg("correction %s, batch label 3: stale_labels %u, expected %u", cases[i].label, st_stale_labels(a, i),
               cases[i].stale);
    if (st_stale_labels(c, i) != cases[i].stale)
      fail_msg("correction %s, replayed batch label 3: stale_labels %u, expected %u", cases[i].label,
               st_stale_labels(c, i), cases[i].stale);
  }
}

static void test_state_filters_and_runs(void **state) {
  fixture *f = *state;
  put1(f, "a", 1, "x", obs(1.0f, 0.2f, 1));
  put1(f, "a", 1, "y", obs(3.0f, 0.4f, 2));
  put1(f, "b", 2, "x", obs(5.0f, 0.6f, 2));
  put1(f, "a", 1, "y", obs(5.0f, 0.6f, 2));
  const st_dataset *ds = dataset(f);
  const int64_t k0 = st_key(ds, "x"), k1 = st_key(ds, "y");
  st_hit hits[4];
  /* label filter */
  st_query q = {.by = HF_MEAN_LOSS, .run = st_find_run(ds, "a"), .min_seen = 1, .k = 4, .has_label = 1, .label = 1};
  assert_int_equal(st_top(ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k0);
  /* min_seen */
  q.has_label = 0;
  q.min_seen = 2;
  assert_int_equal(st_top(ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k1);
  /* run=*: x is the mean of its runs' mean losses (1 and 5), y has only run a (3 and 5 -> 4) */
  q = (st_query){.by = HF_MEAN_LOSS, .run = NULL, .min_seen = 1, .k = 4};
  assert_int_equal(st_top(ds, &q, hits), 2);
  assert_int_equal(hits[0].key, k1);
  assert_true(fabs(hits[0].score - 4.0) < 1e-6);
  assert_true(fabs(hits[1].score - 3.0) < 1e-6);
  hist_view v;
  st_history_all(ds, (uint32_t)k0, &v);
  assert_true(v.seen == 2.0);
  assert_true(fabs(v.mean_loss - 3.0) < 1e-6); /* runs a (1) and b (5) */
  /* status filter */
  set_status(f, (uint32_t)k1, ST_CONFIRMED);
  q.status_mask = 1u << ST_OPEN;
  assert_int_equal(st_top(ds, &q, hits), 1);
  assert_int_equal(hits[0].key, k0);
}

/* An observation labelled label that names class pred with probability 0.95 (p_t 0.05). */
static hist_obs naming(int32_t label, int32_t pred) {
  hist_obs o = {.loss = 3.0f, .p_t = 0.05f, .p_max = 0.95f, .margin = -3.0f, .correct = 0.0f, .pred = pred,
                .label = label, .scored = 1};
  return o;
}

/* Adds n samples named prefix0.. to run "a", each observed once labelled label and naming pred (pred ==
 * label: a clean sample the model gets right with p_t 0.6). */
static void cell(fixture *f, const char *prefix, int n, int32_t label, int32_t pred) {
  char names[64][16];
  char *ids[64];
  hist_obs o[64];
  assert_true(n <= 64);
  for (int i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "%s%d", prefix, i);
    ids[i] = names[i];
    o[i] = pred == label ? obs(0.5f, 0.6f, label) : naming(label, pred);
  }
  put(f, "a", 1, n, ids, o);
}

/* 40 clean samples of each of the 4 classes, c<class>-0 to c<class>-39: the class means, and no cell. */
static void clean_classes(fixture *f) {
  for (int32_t c = 0; c < 4; c++) {
    char prefix[8];
    snprintf(prefix, sizeof prefix, "c%d-", c);
    cell(f, prefix, 40, c, c);
  }
}

/* Whether sample prefix<i> is flagged in run "a", by the sample view and by the ranking's filter alike. */
static int flagged(fixture *f, const char *prefix, int i) {
  char id[16];
  snprintf(id, sizeof id, "%s%d", prefix, i);
  const st_dataset *ds = dataset(f);
  const st_run *r = st_find_run(ds, "a");
  const int64_t key = st_key(ds, id);
  assert_true(key >= 0);
  hist_view v;
  st_history_view(ds, r, (uint32_t)key, &v);
  st_hit hits[256];
  st_query q = {.by = HF_MEAN_LOSS, .run = r, .min_seen = 1, .k = 256, .label_issue = ST_LABEL_ISSUE_YES};
  const int n = st_top(ds, &q, hits);
  int listed = 0;
  for (int j = 0; j < n; j++) listed |= hits[j].key == (uint32_t)key;
  assert_int_equal(listed, v.label_issue);
  return v.label_issue;
}

/* label_issue leaves out the echo of a systematic confusion: 10 samples labelled 1 that the model calls 0
 * (the confusion) and 6 labelled 0 that it calls 1 (its echo, at most 0.8 of it); 2 labelled 2 called 3,
 * whose reverse holds nothing, stay. 4 classes and 18 flagged: 1.5 per cell, so a cell of 6 or more is
 * systematic. Then the echo grows past 0.8 of its source and is flagged again. */
static void test_state_label_issue_leaves_out_echoes(void **state) {
  fixture *f = *state;
  clean_classes(f);
  cell(f, "src", 10, 1, 0);
  cell(f, "echo", 6, 0, 1);
  cell(f, "lone", 2, 2, 3);
  const st_dataset *ds = dataset(f);
  hist_rec h;
  st_history(st_find_run(ds, "a"), (uint32_t)st_key(ds, "src0"), &h);
  assert_int_equal(h.other_class, 0);
  st_history(st_find_run(ds, "a"), (uint32_t)st_key(ds, "c0-0"), &h);
  assert_int_equal(h.other_class, -1);
  for (int i = 0; i < 10; i++) assert_true(flagged(f, "src", i));
  for (int i = 0; i < 6; i++) assert_false(flagged(f, "echo", i));
  for (int i = 0; i < 2; i++) assert_true(flagged(f, "lone", i));
  for (int i = 0; i < 40; i++) assert_false(flagged(f, "c0-", i));
  /* two more in the echo's cell: 8 is 0.8 of 10, still an echo; a third makes 9, a confusion both ways */
  cell(f, "echo-b", 2, 0, 1);
  for (int i = 0; i < 6; i++) assert_false(flagged(f, "echo", i));
  cell(f, "echo-c", 1, 0, 1);
  for (int i = 0; i < 6; i++) assert_true(flagged(f, "echo", i));
  assert_true(flagged(f, "echo-c", 0));
  for (int i = 0; i < 10; i++) assert_true(flagged(f, "src", i));
}

/* Below HIST_LI_ECHO_MIN, or with classes spread evenly (uniform noise), no cell is an echo. */
static void test_state_label_issue_keeps_small_and_even_cells(void **state) {
  fixture *f = *state;
  clean_classes(f);
  cell(f, "src", 4, 1, 0); /* 4 < HIST_LI_ECHO_MIN */
  cell(f, "rev", 1, 0, 1);
  for (int i = 0; i < 4; i++) assert_true(flagged(f, "src", i));
  assert_true(flagged(f, "rev", 0));
  /* every off-diagonal cell holds 3 (or 4): none reaches 4 times the mean */
  for (int32_t g = 0; g < 4; g++)
    for (int32_t k = 0; k < 4; k++) {
      if (g == k) continue;
      char prefix[16];
      snprintf(prefix, sizeof prefix, "u%d%d-", g, k);
      cell(f, prefix, 3, g, k);
    }
  for (int32_t g = 0; g < 4; g++)
    for (int32_t k = 0; k < 4; k++) {
      if (g == k) continue;
      char prefix[16];
      snprintf(prefix, sizeof prefix, "u%d%d-", g, k);
      for (int i = 0; i < 3; i++) assert_true(flagged(f, prefix, i));
    }
  assert_true(flagged(f, "rev", 0));
}

/* Adds n samples named prefix0.. to run "a", each right (labelled label) in 20 observations, then naming
 * pred in its latest: last predicted as another class, and below the floor by either score. */
static void late(fixture *f, const char *prefix, int n, int32_t label, int32_t pred) {
  char names[8][16];
  char *ids[8];
  hist_obs right[8], named[8];
  assert_true(n <= 8);
  for (int i = 0; i < n; i++) {
    snprintf(names[i], sizeof names[i], "%s%d", prefix, i);
    ids[i] = names[i];
    right[i] = obs(0.1f, 0.9f, label);
    named[i] = naming(label, pred);
  }
  for (int k = 0; k < 20; k++) put(f, "a", 1, n, ids, right);
  put(f, "a", 1, n, ids, named);
}

/* A run whose model has fitted its labels (HIST_LI_FITTED of its samples last predicted as labelled) splits
 * early_label_issue_score: 8 samples labelled 1, named 0 in their first 6 observations and then memorised
 * (55 right ones), score 6/61, below the floor, but 6/10 over the first HP.early. Samples last named
 * another class count against the fit: with 5 of 181 the run has fitted (0.972), with 6 of 182 it has not
 * (0.967), and the whole history decides again. */
static void test_state_label_issue_fitted_run_splits_the_early_score(void **state) {
  fixture *f = *state;
  clean_classes(f);
  char names[8][16];
  char *ids[8];
  hist_obs named[8], right[8];
  /* first, 8 samples labelled 2 named 3 once, in their first observation: 1/10 early, no group of its own,
   * and below HIST_LI_EARLY_FLOOR */
  for (int i = 0; i < 8; i++) {
    snprintf(names[i], sizeof names[i], "once%d", i);
    ids[i] = names[i];
    named[i] = naming(2, 3);
    right[i] = obs(0.1f, 0.9f, 2);
  }
  put(f, "a", 1, 8, ids, named);
  for (int n = 0; n < 20; n++) put(f, "a", 1, 8, ids, right);
  for (int i = 0; i < 8; i++) assert_false(flagged(f, "once", i));
  for (int i = 0; i < 8; i++) {
    snprintf(names[i], sizeof names[i], "mem%d", i);
    ids[i] = names[i];
    named[i] = naming(1, 0);
    right[i] = obs(0.1f, 0.9f, 1);
  }
  for (int n = 0; n < 6; n++) put(f, "a", 1, 8, ids, named);
  for (int n = 0; n < 55; n++) put(f, "a", 1, 8, ids, right);
  const st_dataset *ds = dataset(f);
  hist_rec h;
  st_history(st_find_run(ds, "a"), (uint32_t)st_key(ds, "mem0"), &h);
  assert_int_equal(h.early_n, HP.early);
  assert_int_equal(h.early_other_n, 6);
  assert_int_equal(h.other_n, 6);
  hist_view v;
  st_history_view(ds, st_find_run(ds, "a"), (uint32_t)st_key(ds, "mem0"), &v);
  assert_true(fabs(v.early_label_issue_score - 0.6) < 1e-6);
  assert_true(fabs(v.label_issue_score - 6.0 / 61.0) < 1e-6);
  for (int i = 0; i < 8; i++) assert_true(flagged(f, "mem", i));
  for (int i = 0; i < 8; i++) assert_false(flagged(f, "once", i));
  for (int i = 0; i < 40; i++) assert_false(flagged(f, "c1-", i));
  /* ranked by the score that decides, in the run and over all runs, the flagged samples come first, then the
   * samples named another class once (early 1/10) */
  st_hit hits[9];
  const st_run *runs[2] = {st_find_run(ds, "a"), NULL};
  for (int r = 0; r < 2; r++) {
    st_query q = {.by = HF_EARLY_LABEL_ISSUE_SCORE, .run = runs[r], .min_seen = 1, .k = 9};
    assert_int_equal(st_top(ds, &q, hits), 9);
    for (int i = 0; i < 8; i++) {
      assert_memory_equal(st_sample_id(ds, hits[i].key), "mem", 3);
      assert_true(fabs(hits[i].score - 0.6) < 1e-6);
    }
    assert_memory_equal(st_sample_id(ds, hits[8].key), "once", 4);
    assert_true(fabs(hits[8].score - 0.1) < 1e-6);
  }
  late(f, "late", 5, 3, 2);
  for (int i = 0; i < 8; i++) assert_true(flagged(f, "mem", i));
  for (int i = 0; i < 5; i++) assert_false(flagged(f, "late", i));
  late(f, "late-b", 1, 3, 2);
  for (int i = 0; i < 8; i++) assert_false(flagged(f, "mem", i));
  for (int i = 0; i < 40; i++) assert_false(flagged(f, "c1-", i));
}

/* The data map's accessor gives exactly the figures of the full ones: over every run (st_history_all)
 * and in each run (st_history_view), on samples seen by one, two or three runs with different labels,
 * steps, unscored observations and p_t spread; and seen 0 where nothing (or not that run) saw it. */
static void test_state_map_view_equals_history(void **state) {
  fixture *f = *state;
  static const char *const runs[3] = {"a", "b", "c"};
  char name[16];
  for (int obs_i = 0; obs_i < 7; obs_i++)
    for (int s = 0; s < 40; s++) {
      snprintf(name, sizeof name, "s%d", s);
      for (int r = 0; r < 3; r++) {
        if ((s + r) % 4 == 3) continue; /* some samples miss some runs */
        hist_obs o = obs(0.1f * (float)(s + obs_i + r), (float)((s * 7 + obs_i * 13 + r * 5) % 100) / 100.0f, (s + r) % 4);
        if ((s + obs_i) % 5 == 0) o.scored = 0;
        if (obs_i == 6 && s % 3 == 0) o.label = -1; /* a soft target: no label */
        o.has_step = (s + r) % 2 == 0;
        o.step = 100 * obs_i + 10 * r;
        put1(f, runs[r], r + 1, name, o);
      }
    }
  put1(f, "a", 1, "only-a", obs(1.0f, 0.3f, 2));
  const st_dataset *ds = dataset(f);
  for (uint32_t key = 0; key < st_nsamples(ds); key++) {
    hist_view full;
    st_map_view mv;
    st_history_all(ds, key, &full);
    st_map_view_of(ds, NULL, key, &mv);
    assert_true(mv.seen == full.seen);
    assert_true(mv.confidence == full.confidence);
    assert_true(mv.variability == full.variability);
    assert_true(mv.correctness == full.correctness);
    assert_int_equal(mv.label, full.label);
    for (int r = 0; r < 3; r++) {
      const st_run *run = st_find_run(ds, runs[r]);
      st_history_view(ds, run, key, &full);
      st_map_view_of(ds, run, key, &mv);
      assert_true(mv.seen == full.seen);
      if (full.seen == 0) continue; /* the full view of an unseen row is hist_init's */
      assert_true(mv.confidence == full.confidence);
      assert_true(mv.variability == full.variability);
      assert_true(mv.correctness == full.correctness);
      assert_int_equal(mv.label, full.label);
    }
  }
  st_map_view mv;
  st_map_view_of(ds, st_find_run(ds, "b"), (uint32_t)st_key(ds, "only-a"), &mv);
  assert_true(mv.seen == 0 && mv.label == -1);
}

/* A batch applied again (replayed after a snapshot that holds it) changes nothing; a newer one counts. */
static void test_state_replayed_batches_apply_once(void **state) {
  fixture *f = *state;
  put1(f, "a", 1, "r", obs(2.0f, 0.5f, 0));
  st_dataset *ds = dataset(f);
  char *ids[1] = {"r"};
  hist_obs o = obs(2.0f, 0.5f, 0);
  st_batch_ref ref = {1, 0, "d", 1, 0, "a", 4};
  for (int64_t seq = f->seq; seq >= f->seq - 1; seq--) {
    st_batch_prep p;
    assert_int_equal(st_prepare_batch(f->map, &ref, 1, ids, &p), 0);
    st_apply_batch(f->map, &p, seq, ids, &o, &HP, 0, NULL, NULL);
    st_tx_end(f->map);
  }
  hist_rec h;
  st_history(st_find_run(ds, "a"), 0, &h);
  assert_int_equal(h.seen, 1);
  put1(f, "a", 1, "r", o);
  st_history(st_find_run(ds, "a"), 0, &h);
  assert_int_equal(h.seen, 2);
  assert_int_equal(st_next_dirty(ds, 0, 0), 0);
}

static void test_state_quantiles(void **state) {
  fixture *f = *state;
  char id[16];
  for (int i = 0; i < 101; i++) {
    snprintf(id, sizeof id, "q%d", i);
    put1(f, "b", 2, id, obs((float)i, 0.5f, 0));
  }
  const st_dataset *ds = dataset(f);
  const double p[4] = {0.5, 0.9, 0.99, 1.0};
  double out[4];
  assert_int_equal(st_loss_quantiles(ds, st_find_run(ds, "b"), p, 4, out), 0);
  assert_true(fabs(out[0] - 50) < 1e-9 && fabs(out[1] - 90) < 1e-9 && fabs(out[2] - 99) < 1e-9 && out[3] == 100);
}

static int cmp_float_asc(const void *a, const void *b) {
  const float x = *(const float *)a, y = *(const float *)b;
  return (x > y) - (x < y);
}

/* The quantiles are selected, not sorted for: on shuffled values with many ties, runs of one value, sizes
 * from 1 to 3000 and any p, they equal numpy's default (linear) quantile of the sorted values. */
static void test_state_quantiles_selected_match_sorted(void **state) {
  fixture *f = *state;
  unsigned seed = 12345;
  const double p[7] = {0.0, 0.01, 0.25, 0.5, 0.9, 0.999, 1.0};
  const int sizes[] = {1, 2, 3, 7, 100, 1001, 3000};
  char id[32], run[16];
  static float want[3000];
  for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
    const int n = sizes[si];
    snprintf(run, sizeof run, "sel%zu", si);
    for (int i = 0; i < n; i++) {
      seed = seed * 1103515245u + 12345u;
      /* a few distinct values in the smaller runs (ties), a spread in the larger */
      const float loss = si % 2 ? (float)((seed >> 16) % 5) : (float)((seed >> 8) % 100000) / 997.0f;
      snprintf(id, sizeof id, "s%d", i);
      put1(f, run, (int64_t)si + 10, id, obs(loss, 0.5f, 0));
      want[i] = loss;
    }
    qsort(want, (size_t)n, sizeof *want, cmp_float_asc);
    const st_dataset *ds = dataset(f);
    double out[7];
    assert_int_equal(st_loss_quantiles(ds, st_find_run(ds, run), p, 7, out), 0);
    for (int i = 0; i < 7; i++) {
      const double pos = p[i] * (n - 1);
      const int lo = (int)pos, hi = lo + 1 < n ? lo + 1 : lo;
      const double ref = want[lo] + ((double)want[hi] - want[lo]) * (pos - lo);
      if (fabs(out[i] - ref) > 1e-6 * (1 + fabs(ref))) fail_msg("n=%d p=%g: %.9g, sorted gives %.9g", n, p[i], out[i], ref);
    }
  }
}

/* A prepared batch whose transaction did not commit leaves the state exactly as it was: no new
 * dataset, run or sample, and the next group starts from the same keys. */
static void test_state_prepared_but_not_applied_changes_nothing(void **state) {
  fixture *f = *state;
  put1(f, "a", 1, "kept", obs(1.0f, 0.5f, 0));
  char *ids[3] = {"kept", "new1", "new2"};
  hist_obs o[3] = {obs(1, 0.5f, 0), obs(1, 0.5f, 0), obs(1, 0.5f, 0)};
  st_batch_ref ref = {1, 0, "d", 3, 0, "fresh-run", 4};
  st_batch_prep p;
  assert_int_equal(st_prepare_batch(f->map, &ref, 3, ids, &p), 0);
  st_batch_ref other = {7, 0, "other", 8, 0, "r", 2};
  st_batch_prep q;
  assert_int_equal(st_prepare_batch(f->map, &other, 3, ids, &q), 0);
  st_batch_prep_free(&p);
  st_batch_prep_free(&q);
  st_tx_end(f->map); /* the transaction failed */
  st_dataset *ds = dataset(f);
  assert_int_equal(st_nsamples(ds), 1);
  assert_int_equal(st_nruns(ds), 1);
  assert_int_equal(st_key(ds, "new1"), -1);
  assert_null(st_w_find(f->map, 7));
  assert_null(st_acquire(f->map, "other"));
  st_totals t;
  st_map_totals(f->map, &t);
  assert_int_equal(t.datasets, 1);
  assert_int_equal(t.observations, 1);
  /* and a later group adds the same ids at the keys the failed one would have */
  put(f, "a", 1, 3, ids, o);
  assert_int_equal(st_key(ds, "new1"), 1);
  assert_int_equal(st_key(ds, "new2"), 2);
}

/* Two batches of one group that both bring the same new id, on a dataset and run the group
 * creates: one sample, seen twice; the dataset appears only once applied. */
static void test_state_group_shares_new_ids_and_datasets(void **state) {
  fixture *f = *state;
  char *ids1[2] = {"x", "y"}, *ids2[2] = {"y", "z"};
  hist_obs o[2] = {obs(1, 0.5f, 0), obs(2, 0.5f, 1)};
  st_batch_ref ref = {5, 100, "g", 9, 100, "r", 2};
  st_batch_prep p1, p2;
  assert_int_equal(st_prepare_batch(f->map, &ref, 2, ids1, &p1), 0);
  assert_int_equal(st_prepare_batch(f->map, &ref, 2, ids2, &p2), 0);
  assert_null(st_acquire(f->map, "g")); /* prepared, not applied: readers do not see it */
  st_apply_batch(f->map, &p1, 1, ids1, o, &HP, 0, NULL, NULL);
  st_apply_batch(f->map, &p2, 2, ids2, o, &HP, 0, NULL, NULL);
  st_tx_end(f->map);
  const st_dataset *ds = st_acquire(f->map, "g");
  assert_non_null(ds);
  assert_int_equal(st_id(ds), 5);
  assert_int_equal(st_nsamples(ds), 3);
  assert_int_equal(st_nruns(ds), 1);
  hist_rec h;
  st_history(st_find_run(ds, "r"), (uint32_t)st_key(ds, "y"), &h);
  assert_int_equal(h.seen, 2);
  assert_int_equal(st_observations(ds), 4);
  st_release(ds);
}

/* Datasets are found by name and by id; a deleted one's name can be taken by a new dataset, and
 * its id then names nothing. */
static void test_state_delete_by_id_and_names_reused(void **state) {
  fixture *f = *state;
  put1(f, "a", 1, "s", obs(1, 0.5f, 0));
  /* one group: a batch on the dataset, then its deletion (the sanitizers check st_tx_end after it) */
  char *more[1] = {"s2"};
  hist_obs o2 = obs(1, 0.5f, 0);
  st_batch_ref ref1 = {1, 0, "d", 1, 0, "a", 4};
  st_batch_prep p1;
  assert_int_equal(st_prepare_batch(f->map, &ref1, 1, more, &p1), 0);
  assert_int_equal(st_prepare_reviews(f->map, st_w_find(f->map, 1), 2), 0);
  st_apply_batch(f->map, &p1, ++f->seq, more, &o2, &HP, 0, NULL, NULL);
  int64_t samples, observations;
  st_apply_delete(f->map, 1, &samples, &observations);
  st_tx_end(f->map);
  assert_int_equal(samples, 2);
  assert_int_equal(observations, 2);
  assert_null(st_acquire(f->map, "d"));
  char *ids[1] = {"t"};
  hist_obs o = obs(1, 0.5f, 0);
  st_batch_ref ref = {2, 0, "d", 3, 0, "a", 4};
  st_batch_prep p;
  assert_int_equal(st_prepare_batch(f->map, &ref, 1, ids, &p), 0);
  st_apply_batch(f->map, &p, 9, ids, &o, &HP, 0, NULL, NULL);
  st_tx_end(f->map);
  const st_dataset *ds = st_acquire(f->map, "d");
  assert_int_equal(st_id(ds), 2);
  assert_int_equal(st_key(ds, "s"), -1);
  st_release(ds);
  assert_null(st_acquire_id(f->map, 1));
  assert_non_null(st_w_next(f->map, 1));
  assert_int_equal(st_id(st_w_next(f->map, 0)), 2);
}

/* The snapshot's marks: new keys are past the persisted prefix, changed rows are dirty until cleaned. */
static void test_state_snapshot_marks(void **state) {
  fixture *f = *state;
  put1(f, "a", 1, "m0", obs(1, 0.5f, 0));
  put1(f, "a", 1, "m1", obs(1, 0.5f, 0));
  st_dataset *ds = dataset(f);
  assert_int_equal(st_persisted(ds), 0);
  assert_true(st_any_dirty(ds));
  assert_int_equal(st_next_dirty(ds, 0, 0), 0);
  assert_int_equal(st_next_dirty(ds, 0, 1), 1);
  st_set_persisted(ds, 2);
  st_row_clean(ds, 0, 0);
  st_row_clean(ds, 0, 1);
  assert_int_equal(st_next_dirty(ds, 0, 0), -1);
  /* the class means changed since they were saved: still dirty until a pass saves them */
  assert_true(st_any_dirty(ds));
  st_classes c;
  assert_int_equal(st_classes_copy(ds, st_run_at(ds, 0), &c), 0);
  assert_int_equal(c.c, 4);
  assert_int_equal(c.count[0], 2);
  st_classes_saved(f->map, 1, st_run_id(st_run_at(ds, 0)), c.seq);
  st_classes_free(&c);
  assert_false(st_any_dirty(ds));
  st_set_persisted(ds, 1); /* the prefix never shrinks */
  assert_int_equal(st_persisted(ds), 2);
  st_apply_meta(ds, 1, strdup("{\"uri\":\"a.png\"}"), f->seq);
  assert_int_equal(st_next_meta_dirty(ds, 0), 1);
  st_meta_clean(ds, 1);
  assert_int_equal(st_next_meta_dirty(ds, 0), -1);
}

/* The series in the state: columns only when kept (a map of 0 points allocates less than one of 16 by at
 * least the points' bytes), st_series's points and observation numbers, and a row saved with 4 points and
 * loaded into maps of 4, 2 and 0 points: the same series, what 2 points keep, and none. */
static void test_state_series_columns_save_and_load(void **state) {
  fixture *f = *state;
  enum { N = 4096 };
  static char names[N][8];
  char *ids[N];
  hist_obs o[N];
  for (int i = 0; i < N; i++) {
    snprintf(names[i], sizeof names[i], "k%d", i);
    ids[i] = names[i];
    o[i] = obs(1.0f, 0.5f, i % 4);
  }
  size_t cost[2];
  for (int on = 0; on < 2; on++) {
    st_map *m = st_map_new();
    st_map_set_series_points(m, on ? 16 : 0);
    const size_t before = mallinfo2().uordblks + mallinfo2().hblkhd;
    st_batch_ref ref = {1, 0, "d", 1, 0, "r", 4};
    st_batch_prep p;
    assert_int_equal(st_prepare_batch(m, &ref, N, ids, &p), 0);
    st_apply_batch(m, &p, 1, ids, o, &HP, 0, NULL, NULL);
    st_tx_end(m);
    cost[on] = mallinfo2().uordblks + mallinfo2().hblkhd - before;
    st_map_free(m);
  }
  if (cost[0] > 0) /* a sanitizer's allocator does not fill in mallinfo2 */
    assert_true(cost[1] >= cost[0] + (size_t)N * 16 * sizeof(hist_point));

  st_map_set_series_points(f->map, 4);
  for (int i = 0; i < 10; i++) {
    hist_obs x = obs((float)i, 0.1f * (float)i, 1);
    x.has_step = 1;
    x.step = 100 + i;
    put1(f, "a", 1, "x", x);
  }
  st_dataset *ds = dataset(f);
  const st_run *r = st_find_run(ds, "a");
  st_series_view v;
  assert_int_equal(st_series(r, 0, &v), 3); /* 10 observations in 4 points: stride 4, observations 0, 4, 8 */
  assert_int_equal(v.stride, 4);
  assert_int_equal(v.first, 0);
  for (uint32_t j = 0; j < 3; j++) {
    assert_true(v.points[j].loss == (float)(4 * j));
    assert_int_equal(v.points[j].step, 100 + 4 * j);
  }
  st_row row;
  st_row_save(r, 0, &row);
  const int caps[3] = {4, 2, 0};
  const uint32_t lens[3] = {3, 2, 0};
  for (int c = 0; c < 3; c++) {
    char err[256];
    st_map *m = st_map_new();
    st_map_set_series_points(m, caps[c]);
    assert_int_equal(st_load_dataset(m, 1, "d", 0, err, sizeof err), 0);
    assert_int_equal(st_load_run(m, 1, 1, "a", 4, 0, 0, err, sizeof err), 0);
    assert_int_equal(st_load_sample(m, 1, 0, "x", NULL, 0, NULL, NAN, 0, err, sizeof err), 0);
    assert_int_equal(st_load_row(m, 1, 0, &row, err, sizeof err), 0);
    st_load_done(m);
    const st_dataset *l = st_acquire(m, "d");
    st_series_view w;
    assert_int_equal(st_series(st_find_run(l, "a"), 0, &w), lens[c]);
    if (c == 0) assert_memory_equal(w.points, v.points, 3 * sizeof *w.points);
    if (c == 1) { /* stride 8: observations 0 and 8 */
      assert_int_equal(w.stride, 8);
      assert_true(w.points[0].loss == 0.0f && w.points[1].loss == 8.0f);
    }
    st_release(l);
    st_map_free(m);
  }
}

/* Loading refuses what focald never writes, naming it. */
static void test_state_loading_refuses_holes_and_orphans(void **state) {
  fixture *f = *state;
  char err[256];
  assert_int_equal(st_load_dataset(f->map, 1, "d", 0, err, sizeof err), 0);
  assert_int_equal(st_load_dataset(f->map, 2, "d", 0, err, sizeof err), -1);
  assert_non_null(strstr(err, "twice"));
  assert_int_equal(st_load_run(f->map, 9, 1, "a", 3, 0, 0, err, sizeof err), -1);
  assert_non_null(strstr(err, "dataset 9"));
  assert_int_equal(st_load_run(f->map, 1, 1, "a", 3, 0, 0, err, sizeof err), 0);
  assert_int_equal(st_load_sample(f->map, 1, 0, "s0", NULL, 0, NULL, NAN, 0, err, sizeof err), 0);
  assert_int_equal(st_load_sample(f->map, 1, 2, "s2", NULL, 0, NULL, NAN, 0, err, sizeof err), -1);
  assert_non_null(strstr(err, "hole"));
  assert_int_equal(st_load_sample(f->map, 1, 1, "s0", NULL, 0, NULL, NAN, 0, err, sizeof err), -1);
  assert_non_null(strstr(err, "twice"));
  assert_int_equal(st_load_sample(f->map, 1, 1, "s1", NULL, 9, NULL, NAN, 0, err, sizeof err), -1);
  st_row row = {.seq = 4};
  hist_init(&row.h);
  row.h.seen = 1;
  assert_int_equal(st_load_row(f->map, 1, 1, &row, err, sizeof err), -1);
  assert_non_null(strstr(err, "no sample"));
  assert_int_equal(st_load_row(f->map, 5, 0, &row, err, sizeof err), -1);
  assert_int_equal(st_load_row(f->map, 1, 0, &row, err, sizeof err), 0);
  assert_int_equal(st_load_classes(f->map, 1, 3, 1.0, 1, err, sizeof err), -1);
  st_review e = {.seq = 1, .key = 4, .reviewer = strdup("r")};
  assert_int_equal(st_load_review(f->map, 1, &e, err, sizeof err), -1); /* frees e's strings */
  st_queue *q = calloc(1, sizeof *q);
  q->keys = malloc(sizeof *q->keys);
  q->scores = malloc(sizeof *q->scores);
  q->n = 1;
  q->keys[0] = 3;
  assert_int_equal(st_load_queue(f->map, 1, q, err, sizeof err), -1); /* frees q */
  st_load_done(f->map);
  const st_dataset *ds = st_acquire(f->map, "d");
  assert_int_equal(st_nsamples(ds), 1);
  assert_int_equal(st_observations(ds), 1);
  st_release(ds);
}

/* Loading refuses a history row whose counts contradict each other, whichever count is wrong, and then
 * takes the consistent row for the same key. */
static void test_state_loading_refuses_inconsistent_counts(void **state) {
  fixture *f = *state;
  char err[256];
  assert_int_equal(st_load_dataset(f->map, 1, "d", 0, err, sizeof err), 0);
  assert_int_equal(st_load_run(f->map, 1, 1, "a", 3, 0, 0, err, sizeof err), 0);
  assert_int_equal(st_load_sample(f->map, 1, 0, "s0", NULL, 0, NULL, NAN, 0, err, sizeof err), 0);
  st_row good = {.seq = 4};
  hist_init(&good.h);
  good.h.seen = 12;
  good.h.scored_n = 12;
  good.h.other_n = 3;
  good.h.other_class = 2;
  good.h.label = 1;
  good.h.early_n = 10;
  good.h.early_other_n = 2;
  static const struct {
    const char *what;
    int64_t early_n, early_other_n, other_n, other_class;
  } bad[] = {
      {"early_n above scored", 13, 2, 3, 2},
      {"early_other_n above early_n", 1, 2, 3, 2},
      {"early_other_n above other_n", 10, 4, 3, 2},
      {"not counted, yet some early", HIST_EARLY_UNKNOWN, 1, 3, 2},
      {"other_class beyond the classes", 10, 2, 3, 3},
      {"other_class with no other_n", 10, 0, 0, 2},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    st_row row = good;
    row.h.early_n = (uint16_t)bad[i].early_n;
    row.h.early_other_n = (uint16_t)bad[i].early_other_n;
    row.h.other_n = (uint32_t)bad[i].other_n;
    row.h.other_class = (int32_t)bad[i].other_class;
    err[0] = 0;
    if (st_load_row(f->map, 1, 0, &row, err, sizeof err) != -1 || !strstr(err, "inconsistent"))
      fail_msg("%s: loaded (%s)", bad[i].what, err);
  }
  st_row unknown = good;
  unknown.h.early_n = HIST_EARLY_UNKNOWN;
  unknown.h.early_other_n = 0;
  assert_int_equal(st_load_row(f->map, 1, 0, &unknown, err, sizeof err), 0);
  st_load_done(f->map);
  const st_dataset *ds = st_acquire(f->map, "d");
  hist_view v;
  st_history_view(ds, st_find_run(ds, "a"), 0, &v);
  assert_true(fabs(v.early_label_issue_score - 0.25) < 1e-6); /* not counted: the whole history's 3/12 */
  st_release(ds);
}

/* A run holding a history written before schema 10 keeps the whole history's rule, fitted or not: 20
 * histories right in all 10 observations and one from before schema 10 that named another class in 3 of
 * them. All 21 were last predicted as labelled, yet the whole history's split flags the old one (3/10),
 * where the early floor would not. */
static void test_state_label_issue_uncounted_histories_keep_the_rule(void **state) {
  fixture *f = *state;
  char err[256], id[16];
  assert_int_equal(st_load_dataset(f->map, 1, "d", 0, err, sizeof err), 0);
  assert_int_equal(st_load_run(f->map, 1, 1, "a", 3, 0, 0, err, sizeof err), 0);
  for (uint32_t k = 0; k <= 20; k++) {
    snprintf(id, sizeof id, "s%u", k);
    assert_int_equal(st_load_sample(f->map, 1, k, id, NULL, 0, NULL, NAN, 0, err, sizeof err), 0);
    st_row row = {.seq = 4};
    hist_init(&row.h);
    row.h.seen = row.h.scored_n = row.h.correct_n = 10;
    row.h.conf_mean = 0.9f;
    row.h.label = 1;
    row.h.last_correct = 1;
    row.h.early_n = 10;
    if (k == 20) {
      row.h.correct_n = 7;
      row.h.other_n = 3;
      row.h.other_class = 2;
      row.h.early_n = HIST_EARLY_UNKNOWN;
    }
    assert_int_equal(st_load_row(f->map, 1, k, &row, err, sizeof err), 0);
  }
  st_load_done(f->map);
  const st_dataset *ds = st_acquire(f->map, "d");
  const st_run *r = st_find_run(ds, "a");
  hist_view v;
  st_history_view(ds, r, 20, &v);
  assert_true(fabs(v.early_label_issue_score - 0.3) < 1e-6);
  assert_int_equal(v.label_issue, 1);
  assert_int_equal(st_label_issue_rule(ds, r)->early, 0);
  st_history_view(ds, r, 0, &v);
  assert_int_equal(v.label_issue, 0);
  st_release(ds);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_state_growth_from_small_keeps_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_small_datasets_take_little_memory, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_ids_grow_and_stay_found, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_large_arrays_keep_values_across_growth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_top_orders_by_score_then_id, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_filters_and_runs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_label_issue_leaves_out_echoes, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_label_issue_fitted_run_splits_the_early_score, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_loading_refuses_inconsistent_counts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_label_issue_uncounted_histories_keep_the_rule, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_label_issue_keeps_small_and_even_cells, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_map_view_equals_history, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_replayed_batches_apply_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_quantiles, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_quantiles_selected_match_sorted, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_prepared_but_not_applied_changes_nothing, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_group_shares_new_ids_and_datasets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_delete_by_id_and_names_reused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_snapshot_marks, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_stale_labels_compare_full_width, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_loading_refuses_holes_and_orphans, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_series_columns_save_and_load, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
