/* test_idhash.c — the hash of client-chosen strings: stable within a process, keyed per process, spread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "idhash.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

static void test_idhash_stable_within_a_process(void **state) {
  (void)state;
  assert_true(idhash("sample-1") == idhash("sample-1"));
  assert_true(idhash("sample-1") == idhash_n("sample-1", 8));
  assert_true(idhash("sample-1") != idhash("sample-2"));
  assert_true(idhash("") == idhash_n("", 0));
  /* keyed: not XXH3 without a secret, nor with its default seed */
  assert_true(idhash("sample-1") != XXH3_64bits("sample-1", 8));
  assert_true(idhash("sample-1") != XXH3_64bits_withSeed("sample-1", 8, 0));
}

/* The hash of "sample-1" in a new process running this binary. */
static uint64_t hash_in_new_process(void) {
  char self[4096], cmd[4200];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  assert_true(n > 0);
  self[n] = 0;
  snprintf(cmd, sizeof cmd, "'%s' --print", self);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  unsigned long long h = 0;
  assert_int_equal(fscanf(p, "%llx", &h), 1);
  assert_int_equal(pclose(p), 0);
  return (uint64_t)h;
}

static void test_idhash_secret_differs_per_process(void **state) {
  (void)state;
  const uint64_t here = idhash("sample-1"), a = hash_in_new_process(), b = hash_in_new_process();
  /* each is equal to another with probability 2^-64 */
  assert_true(a != here);
  assert_true(b != here);
  assert_true(a != b);
}

/* Sequential ids, as most datasets have, spread over a table of twice their number: the longest probe of
 * linear probing stays short. */
static void test_idhash_spreads_sequential_ids(void **state) {
  (void)state;
  enum { N = 1 << 16, CAP = 1 << 17 };
  uint8_t *used = calloc(CAP, 1);
  assert_non_null(used);
  int longest = 0;
  for (int i = 0; i < N; i++) {
    char id[32];
    snprintf(id, sizeof id, "img-%06d", i);
    int probe = 0;
    uint32_t h = (uint32_t)idhash(id) & (CAP - 1);
    for (; used[h]; h = (h + 1) & (CAP - 1)) probe++;
    used[h] = 1;
    if (probe > longest) longest = probe;
  }
  free(used);
  assert_true(longest < 64);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--print") == 0) {
    printf("%llx\n", (unsigned long long)idhash("sample-1"));
    return 0;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idhash_stable_within_a_process),
      cmocka_unit_test(test_idhash_secret_differs_per_process),
      cmocka_unit_test(test_idhash_spreads_sequential_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
