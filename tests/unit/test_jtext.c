/* test_jtext.c — JSON texts through jansson while each allocation fails in turn: jtext answers out of
 * memory, or exactly the text or value it gives when nothing fails; never another. The binary is linked
 * with --wrap=malloc (Makefile), so that jansson's allocations, which jtext routes through malloc, can be
 * made to fail one by one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "jtext.h"

static long fail_at; /* the allocation to fail, counted from when it was set; 0: none */
static long made;    /* allocations since then */
static int and_after; /* fail every allocation from fail_at on, not that one only */

void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);

void *__wrap_malloc(size_t n) {
  if (fail_at && (++made == fail_at || (and_after && made > fail_at))) return NULL;
  return __real_malloc(n);
}

static void fail_nth(long n) {
  fail_at = n;
  made = 0;
}

/* An object whose compact, sorted text needs the buffer to grow many times: keys out of order, long
 * strings and keys, escapes, nesting. */
static json_t *sample(void) {
  char long_text[3000], long_key[600];
  for (size_t i = 0; i < sizeof long_text - 1; i++) long_text[i] = (char)('a' + i % 26);
  long_text[sizeof long_text - 1] = '\0';
  for (size_t i = 0; i < sizeof long_key - 1; i++) long_key[i] = (char)('A' + i % 26);
  long_key[sizeof long_key - 1] = '\0';
  json_t *o = json_pack("{s:s, s:i, s:[f, b, n], s:{s:s, s:s}, s:s}", "uri", "/data/x \"1\".png", "step", 7,
                        "list", 0.5, 1, "nested", "study_uid", "1.2.3", "patient_id", "p\n9", "note", long_text);
  assert_non_null(o);
  assert_int_equal(json_object_set_new(o, long_key, json_string(long_text)), 0);
  for (int k = 0; k < 40; k++) {
    char key[16];
    snprintf(key, sizeof key, "k%02d", (k * 17) % 40);
    assert_int_equal(json_object_set_new(o, key, json_integer(k)), 0);
  }
  return o;
}

/* Each allocation of a sorted dump fails in turn: NULL, or the whole text (jansson 2.14's own json_dumps can
 * return the text with a key left out). */
static void test_jtext_dump_each_allocation_failing(void **state) {
  (void)state;
  json_t *o = sample();
  char *want = jtext_dump(o, JSON_COMPACT | JSON_SORT_KEYS);
  assert_non_null(want);
  long refused = 0, n;
  for (n = 1;; n++) {
    fail_nth(n);
    char *got = jtext_dump(o, JSON_COMPACT | JSON_SORT_KEYS);
    const long tried = made;
    fail_nth(0);
    if (got) assert_string_equal(got, want);
    else refused++;
    free(got);
    if (tried < n) break; /* the dump made fewer allocations: nothing failed */
  }
  assert_true(refused > 0);
  assert_int_equal(refused, n - 1); /* every allocation it made is one it cannot do without */
  free(want);
  json_decref(o);
}

/* Parses text with each allocation failing in turn (and, with after set, every one after it too): each
 * attempt is NULL with *oom set, or a value equal to want. Returns the number refused. */
static long sweep_load(const char *text, const json_t *want, int after) {
  long refused = 0;
  and_after = after;
  for (long n = 1;; n++) {
    fail_nth(n);
    json_error_t e;
    int oom = -1;
    json_t *got = jtext_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &e, &oom);
    const long tried = made;
    fail_nth(0);
    if (got) {
      assert_int_equal(oom, 0);
      assert_true(json_equal(got, want));
    } else {
      assert_int_equal(oom, 1);
      assert_string_equal(e.text, "out of memory");
      refused++;
    }
    json_decref(got);
    if (tried < n) break;
  }
  and_after = 0;
  return refused;
}

/* Each allocation of a parse fails in turn: NULL with *oom set, or a value equal to the whole text's. */
static void test_jtext_load_each_allocation_failing(void **state) {
  (void)state;
  json_t *o = sample();
  char *text = jtext_dump(o, JSON_COMPACT);
  assert_non_null(text);
  json_error_t e;
  int oom = -1;
  json_t *want = jtext_loadb(text, strlen(text), JSON_REJECT_DUPLICATES, &e, &oom);
  assert_non_null(want);
  assert_int_equal(oom, 0);
  assert_true(json_equal(want, o));
  assert_true(sweep_load(text, want, 0) > 0);
  json_decref(want);
  free(text);
  json_decref(o);
}

/* jansson's lexer grows the buffer it saves a token in by doubling, and drops a character it cannot save.
 * Tokens of every length up to past the fifth doubling, each character of them the one whose save needs the
 * buffer to grow: a string's closing quote (decoded past its buffer when dropped), a number's next character
 * (an assertion when it is put back), escapes, a key. Each allocation fails in turn, then every one from it
 * on (memory that stays short). Run under AddressSanitizer by `make test-asan`. */
static void test_jtext_load_tokens_across_the_lexer_buffer(void **state) {
  (void)state;
  char text[2400], word[600], digits[600];
  long refused = 0;
  for (int len = 1; len < 560; len += len < 140 ? 1 : 13) {
    for (int i = 0; i < len; i++) word[i] = (char)('a' + i % 26);
    word[len] = '\0';
    digits[0] = '1';
    for (int i = 1; i < len; i++) digits[i] = (char)('0' + i % 10);
    digits[len] = '\0';
    const int w = snprintf(text, sizeof text, "{\"%s\": [\"%s\", %s, -%s.5e-3, \"\\u00e9\\n%s\", true], \"%s\": {}}",
                           word, word, len <= 18 ? digits : "7", len <= 300 ? digits : "2", word,
                           len % 2 ? "k" : digits);
    assert_true(w > 0 && (size_t)w < sizeof text);
    json_error_t e;
    int oom = -1;
    json_t *want = jtext_loads(text, JSON_REJECT_DUPLICATES, &e, &oom);
    assert_non_null(want);
    assert_int_equal(oom, 0);
    refused += sweep_load(text, want, 0);
    refused += sweep_load(text, want, 1);
    json_decref(want);
  }
  assert_true(refused > 1000);
}

/* A string longer than jtext's reserve covers: the lexer's buffer, full, asks for twice its size, which the
 * reserve cannot hold, and the closing quote is dropped; the string's copy then asks for the full buffer's
 * size, which the reserve could hold. It must be refused: the parse reads and writes only what it allocated.
 * */
static void test_jtext_load_a_token_past_the_reserve(void **state) {
  (void)state;
  const size_t len = 100000;
  char *text = malloc(len + 16);
  assert_non_null(text);
  text[0] = '[';
  text[1] = '"';
  memset(text + 2, 'x', len);
  strcpy(text + 2 + len, "\", 12.5]");
  json_error_t e;
  json_t *want = jtext_loads(text, 0, &e, NULL);
  assert_non_null(want);
  assert_true(sweep_load(text, want, 1) > 0);
  assert_true(sweep_load(text, want, 0) > 0);
  json_decref(want);
  free(text);
}

/* Text that is not JSON is not out of memory: *oom is 0 and *e says where. */
static void test_jtext_load_bad_text(void **state) {
  (void)state;
  json_error_t e;
  int oom = -1;
  assert_null(jtext_loads("{\"a\": [1, 2", 0, &e, &oom));
  assert_int_equal(oom, 0);
  assert_int_equal(e.line, 1);
  assert_null(jtext_loads("{\"a\": 1, \"a\": 2}", JSON_REJECT_DUPLICATES, &e, NULL));
  assert_non_null(strstr(e.text, "duplicate"));
}

int main(void) {
  jtext_init();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jtext_dump_each_allocation_failing),
      cmocka_unit_test(test_jtext_load_each_allocation_failing),
      cmocka_unit_test(test_jtext_load_tokens_across_the_lexer_buffer),
      cmocka_unit_test(test_jtext_load_a_token_past_the_reserve),
      cmocka_unit_test(test_jtext_load_bad_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
