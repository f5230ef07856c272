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

/* A number of n characters (n >= 3) at out: 0.ddd…d, or -1.ddd…de-5 when signed is set and n >= 7. */
static void number(char *out, size_t n, int signed_) {
  size_t i = 0;
  if (signed_ && n >= 7) {
    out[i++] = '-';
    out[i++] = '1';
    out[i++] = '.';
    while (i < n - 3) out[i] = (char)('0' + i % 10), i++;
    memcpy(out + i, "e-5", 3);
  } else {
    out[i++] = '0';
    out[i++] = '.';
    while (i < n) out[i] = (char)('0' + (i * 7) % 10), i++;
  }
}

/* Numbers as long as jtext lets through, and the lengths at the lexer's last doublings below that, with each
 * allocation failing in turn and then every one from it on: out of memory or the faultless value, never an
 * assertion (the reserve must cover every number the limit lets through). */
static void test_jtext_load_numbers_up_to_the_limit(void **state) {
  (void)state;
  static const size_t lengths[] = {1023, 1024, 1025, 2047, 2048, 2049, 4000, 4095, 4096};
  char *text = malloc(2 * 4096 + 64);
  assert_non_null(text);
  long refused = 0;
  for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
    for (int signed_ = 0; signed_ < 2; signed_++) {
      char *p = text;
      p += sprintf(p, "{\"a\": [");
      number(p, lengths[k], signed_);
      p += lengths[k];
      p += sprintf(p, ", 2], \"b\": ");
      number(p, lengths[k], !signed_);
      p += lengths[k];
      strcpy(p, "}");
      json_error_t e;
      int oom = -1;
      json_t *want = jtext_loads(text, JSON_REJECT_DUPLICATES, &e, &oom);
      assert_non_null(want);
      refused += sweep_load(text, want, 0);
      refused += sweep_load(text, want, 1);
      json_decref(want);
    }
  }
  assert_true(refused > 100);
  free(text);
}

/* Texts of arrays of numbers and strings, a number of them longer than the limit or not, at random offsets
 * across two of the limit's multiples (where jtext looks first): refused with the number's line, column and
 * offset exactly when one is longer than 4096 characters, and otherwise parsed as jansson parses them.
 * Strings of digits, strings ending in an escaped quote or backslash, and a character of two bytes on the
 * number's line keep the scan from taking a string for a number or the place for another. */
static void test_jtext_load_refuses_a_number_past_the_limit(void **state) {
  (void)state;
  enum { MAX = 4096 };
  static const size_t lengths[] = {3, 4095, 4096, 4097, 4100, 8193, 12000};
  const size_t cap = 4 * MAX + 3 * 12000 + 256;
  char *text = malloc(cap);
  assert_non_null(text);
  srand(7);
  long refusals = 0, parses = 0;
  for (int round = 0; round < 600; round++) {
    char *p = text;
    p += sprintf(p, "[\"\xc3\xa9\",\n\"\xc3\xa9\", ");
    const size_t pad = (size_t)rand() % (2 * MAX + 9);
    memset(p, ' ', pad);
    p += pad;
    size_t first_long = 0; /* offset of the first number longer than MAX; 0: none */
    int first_column = 0;
    for (int item = 0; item < 3; item++) {
      const size_t n = lengths[rand() % (int)(sizeof lengths / sizeof lengths[0])];
      switch (rand() % 4) {
      case 0: /* a string of digits */
        *p++ = '"';
        number(p, n, 0);
        p += n;
        *p++ = '"';
        break;
      case 1: /* a string of digits after an escaped quote */
        p += sprintf(p, "\"\\\"");
        number(p, n, 1);
        p += n;
        *p++ = '"';
        break;
      default: /* a number, after a string ending in an escaped backslash */
        p += sprintf(p, "\"x\\\\\", ");
        if (n > MAX && !first_long) {
          first_long = (size_t)(p - text);
          first_column = (int)(p - strchr(text, '\n')) - 1; /* the line's two-byte character is one */
        }
        number(p, n, rand() % 2);
        p += n;
        break;
      }
      p += sprintf(p, item < 2 ? ", " : "]");
    }
    assert_true((size_t)(p - text) < cap);
    json_error_t e;
    int oom = -1;
    json_t *got = jtext_loadb(text, (size_t)(p - text), 0, &e, &oom);
    assert_int_equal(oom, 0);
    if (first_long) {
      assert_null(got);
      assert_string_equal(e.text, "a number of more than 4096 characters");
      assert_int_equal(e.position, (int)first_long);
      assert_int_equal(e.line, 2);
      assert_int_equal(e.column, first_column);
      refusals++;
    } else {
      if (!got) fail_msg("refused: %s at %d", e.text, e.position);
      json_t *want = json_loadb(text, (size_t)(p - text), 0, &e);
      assert_non_null(want);
      assert_true(json_equal(got, want));
      json_decref(want);
      parses++;
    }
    json_decref(got);
  }
  assert_true(refusals > 100 && parses > 100);
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
      cmocka_unit_test(test_jtext_load_numbers_up_to_the_limit),
      cmocka_unit_test(test_jtext_load_refuses_a_number_past_the_limit),
      cmocka_unit_test(test_jtext_load_bad_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
