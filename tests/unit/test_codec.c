/* test_codec.c — batch payloads round-trip and malformed ones are refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "codec.h"

static void test_codec_round_trip(void **state) {
  (void)state;
  const char *ids[3] = {"img_0001", "42", "a/b c\xc3\xa9"};
  hist_obs obs[3] = {
      {.loss = 0.5f, .p_t = 0.25f, .p_max = 0.75f, .margin = -1.5f, .correct = 0.0f, .el2n = 0.9f, .pred = 2, .label = 1,
       .scored = 1},
      {.loss = 1e-30f, .p_t = 1.0f, .p_max = 1.0f, .margin = 1e4f, .correct = 1.0f, .el2n = 0.0f, .pred = 0, .label = 0,
       .scored = 1},
      {.loss = 3.0f, .el2n = NAN, .pred = -1, .label = -1, .scored = 0},
  };
  codec_batch b = {3, ids, obs};
  unsigned char *buf;
  size_t len;
  assert_int_equal(codec_pack(&b, &buf, &len), 0);
  codec_unpacked u;
  codec_when when = {1, 1, 77, 3};
  assert_int_equal(codec_unpack(buf, len, &when, &u), 0);
  assert_int_equal(u.n, 3);
  for (int i = 0; i < 3; i++) {
    assert_string_equal(u.ids[i], ids[i]);
    assert_true(u.obs[i].loss == obs[i].loss && u.obs[i].p_t == obs[i].p_t && u.obs[i].p_max == obs[i].p_max);
    assert_true(u.obs[i].margin == obs[i].margin && u.obs[i].correct == obs[i].correct);
    assert_true(u.obs[i].el2n == obs[i].el2n || (isnan(u.obs[i].el2n) && isnan(obs[i].el2n)));
    assert_int_equal(u.obs[i].pred, obs[i].pred);
    assert_int_equal(u.obs[i].label, obs[i].label);
    assert_int_equal(u.obs[i].scored, obs[i].scored);
    assert_true(u.obs[i].has_step && u.obs[i].step == 77 && u.obs[i].has_epoch && u.obs[i].epoch == 3);
  }
  codec_unpacked_free(&u);
  /* every truncation is refused, never read past */
  for (size_t cut = 0; cut < len; cut++) assert_int_equal(codec_unpack(buf, cut, &when, &u), -1);
  buf[0] ^= 0xff;
  assert_int_equal(codec_unpack(buf, len, &when, &u), -1);
  free(buf);
}

/* A payload logged before el2n was kept ("FLB1": no el2n column) still unpacks, with el2n unknown (NaN). */
static void test_codec_reads_version_1(void **state) {
  (void)state;
  const char *ids[2] = {"a", "bc"};
  hist_obs obs[2] = {{.loss = 0.5f, .p_t = 0.25f, .p_max = 0.75f, .margin = -1.5f, .correct = 0.0f, .el2n = 0.9f, .pred = 2,
                      .label = 1, .scored = 1},
                     {.loss = 2.0f, .p_t = 0.5f, .p_max = 0.5f, .margin = 0.0f, .correct = 1.0f, .el2n = 0.1f, .pred = 1,
                      .label = 1, .scored = 1}};
  codec_batch b = {2, ids, obs};
  unsigned char *v2;
  size_t len;
  assert_int_equal(codec_pack(&b, &v2, &len), 0);
  /* the same payload as version 1 wrote it: the magic, and no el2n column (after correct) */
  const size_t n = 2, el2n_at = 8 + 5 * 4 * n;
  unsigned char *v1 = malloc(len - 4 * n);
  memcpy(v1, v2, el2n_at);
  memcpy(v1 + el2n_at, v2 + el2n_at + 4 * n, len - el2n_at - 4 * n);
  v1[3] = '1';
  codec_unpacked u;
  codec_when when = {0};
  assert_int_equal(codec_unpack(v1, len - 4 * n, &when, &u), 0);
  assert_int_equal(u.n, 2);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(u.ids[i], ids[i]);
    assert_true(u.obs[i].correct == obs[i].correct && u.obs[i].pred == obs[i].pred && u.obs[i].label == obs[i].label);
    assert_true(isnan(u.obs[i].el2n));
  }
  codec_unpacked_free(&u);
  free(v1);
  free(v2);
}

static void test_codec_rejects_inflated_count(void **state) {
  (void)state;
  unsigned char buf[16] = {'F', 'L', 'B', '1', 0xff, 0xff, 0xff, 0x7f};
  codec_unpacked u;
  codec_when when = {0};
  assert_int_equal(codec_unpack(buf, sizeof buf, &when, &u), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_codec_round_trip),
      cmocka_unit_test(test_codec_reads_version_1),
      cmocka_unit_test(test_codec_rejects_inflated_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
