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
      {.loss = 0.5f, .p_t = 0.25f, .p_max = 0.75f, .margin = -1.5f, .correct = 0.0f, .el2n = 0.9f, .grad_norm = 1.25f,
       .pred = 2, .label = 1, .scored = 1},
      {.loss = 1e-30f, .p_t = 1.0f, .p_max = 1.0f, .margin = 1e4f, .correct = 1.0f, .el2n = 0.0f, .grad_norm = 3e-20f,
       .pred = 0, .label = 0, .scored = 1},
      {.loss = 3.0f, .el2n = NAN, .grad_norm = NAN, .pred = -1, .label = -1, .scored = 0},
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
    assert_true(u.obs[i].grad_norm == obs[i].grad_norm || (isnan(u.obs[i].grad_norm) && isnan(obs[i].grad_norm)));
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

/* The payload of b as an older version wrote it: magic digit version, and without the f32 columns from
 * index first on (el2n is column 5, grad_norm 6: version 2 has no grad_norm, version 1 neither). */
static unsigned char *older(const unsigned char *v3, size_t len, size_t n, char version, size_t first, size_t *out_len) {
  const size_t at = 8 + first * 4 * n, drop = (7 - first) * 4 * n;
  unsigned char *v = malloc(len - drop);
  memcpy(v, v3, at);
  memcpy(v + at, v3 + at + drop, len - at - drop);
  v[3] = (unsigned char)version;
  *out_len = len - drop;
  return v;
}

/* Payloads logged before grad_norm ("FLB2") and before el2n ("FLB1") were kept still unpack, with what they
 * did not have unknown (NaN) and everything else as written. */
static void test_codec_reads_versions_1_and_2(void **state) {
  (void)state;
  const char *ids[2] = {"a", "bc"};
  hist_obs obs[2] = {{.loss = 0.5f, .p_t = 0.25f, .p_max = 0.75f, .margin = -1.5f, .correct = 0.0f, .el2n = 0.9f,
                      .grad_norm = 2.0f, .pred = 2, .label = 1, .scored = 1},
                     {.loss = 2.0f, .p_t = 0.5f, .p_max = 0.5f, .margin = 0.0f, .correct = 1.0f, .el2n = 0.1f,
                      .grad_norm = 0.5f, .pred = 1, .label = 1, .scored = 1}};
  codec_batch b = {2, ids, obs};
  unsigned char *v3;
  size_t len;
  assert_int_equal(codec_pack(&b, &v3, &len), 0);
  const size_t n = 2;
  for (char version = '1'; version <= '2'; version++) {
    size_t olen;
    unsigned char *v = older(v3, len, n, version, version == '1' ? 5 : 6, &olen);
    codec_unpacked u;
    codec_when when = {0};
    assert_int_equal(codec_unpack(v, olen, &when, &u), 0);
    assert_int_equal(u.n, 2);
    for (size_t i = 0; i < n; i++) {
      assert_string_equal(u.ids[i], ids[i]);
      assert_true(u.obs[i].loss == obs[i].loss && u.obs[i].correct == obs[i].correct);
      assert_true(u.obs[i].pred == obs[i].pred && u.obs[i].label == obs[i].label && u.obs[i].scored);
      assert_true(isnan(u.obs[i].grad_norm));
      if (version == '1') assert_true(isnan(u.obs[i].el2n));
      else assert_true(u.obs[i].el2n == obs[i].el2n);
    }
    codec_unpacked_free(&u);
    /* read as the newest version, it is too short: refused */
    v[3] = '3';
    assert_int_equal(codec_unpack(v, olen, &when, &u), -1);
    free(v);
  }
  free(v3);
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
      cmocka_unit_test(test_codec_reads_versions_1_and_2),
      cmocka_unit_test(test_codec_rejects_inflated_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
