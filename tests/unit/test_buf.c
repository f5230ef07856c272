/* test_buf.c — growable buffers: appends, formatting, and a failed allocation that sticks, so that a
 * response that could not be written whole is answered 500 rather than cut short. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "buf.h"
#include "jsonw.h"

static void test_buf_appends_and_formats(void **state) {
  (void)state;
  buf o = {0};
  buf_lit(&o, "{\"a\":");
  buf_printf(&o, "%d", 42);
  for (int i = 0; i < 5000; i++) buf_printf(&o, ",%d", i); /* past the first block: it grows */
  buf_append(&o, "}", 1);
  assert_false(o.failed);
  assert_int_equal(strlen(o.b), o.len);
  assert_true(strncmp(o.b, "{\"a\":42,0,1,2", 13) == 0);
  size_t len = 0;
  char *text = buf_take(&o, &len);
  assert_non_null(text);
  assert_int_equal(len, strlen(text));
  assert_null(o.b);
  assert_int_equal(o.len, 0);
  free(text);
  /* an empty buffer gives an empty string */
  text = buf_take(&o, &len);
  assert_string_equal(text, "");
  free(text);
}

static void test_buf_failed_append_is_sticky_and_answers_500(void **state) {
  (void)state;
  jw o = {0};
  jw_lit(&o, "{\"items\":[");
  jw_num(&o, 1.5);
  /* no allocator can give this: the buffer fails, and stays failed */
  assert_int_equal(buf_reserve(&o, (size_t)-1 / 2), -1);
  assert_true(o.failed);
  const size_t before = o.len;
  jw_lit(&o, "2]}");
  jw_str(&o, "more");
  JW(&o, "%d", 7);
  assert_int_equal(o.len, before); /* nothing more was written */
  http_resp resp;
  memset(&resp, 0, sizeof resp);
  jw_respond(&resp, 200, &o);
  assert_int_equal(resp.status, 500); /* never the 200 of a document cut short */
  assert_string_equal(resp.content_type, "application/problem+json");
  assert_null(resp.body);             /* http.c answers its fixed out-of-memory problem */
  assert_null(o.b);                   /* the buffer was freed */
  assert_false(o.failed);             /* and is empty again, ready for reuse */
  memset(&resp, 0, sizeof resp);
  http_json(&resp, 200, NULL);
  assert_int_equal(resp.status, 500);
}

typedef struct {
  const char *in, *out;
} write_case;

/* Writes each case's in through write, alone, and checks it gives the case's out. */
static void expect_writes(void (*write)(jw *, const char *), const write_case *cases, size_t n) {
  for (size_t i = 0; i < n; i++) {
    jw o = {0};
    write(&o, cases[i].in);
    assert_false(o.failed);
    assert_string_equal(o.b, cases[i].out);
    free(o.b);
  }
}

/* One escaper (jsonstr.c) writes every JSON string: response bodies (jw_str), problem details and log
 * lines. Checked here through jw_str, case by case: what is escaped, what passes through, and which byte
 * sequences are not UTF-8 (each such byte becomes one U+FFFD). */
static void test_buf_json_strings_escaped_and_valid_utf8(void **state) {
  (void)state;
  static const write_case cases[] = {
      {"", "\"\""},
      {"plain id-7.png", "\"plain id-7.png\""},
      {"q\"b\\s", "\"q\\\"b\\\\s\""},
      {"tab\there\nnl\x01\x1f", "\"tab\\u0009here\\u000anl\\u0001\\u001f\""},
      {"/\x7f", "\"/\x7f\""},                                   /* DEL and / pass: JSON does not require them escaped */
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""}, /* 2, 3, 4 bytes */
      {"a\xff" "b", "\"a\\ufffdb\""},                           /* a byte that starts nothing */
      {"\xc3", "\"\\ufffd\""},                                  /* cut short by the end */
      {"\xc3(", "\"\\ufffd(\""},                                /* cut short by a non-continuation */
      {"\xc0\xaf", "\"\\ufffd\\ufffd\""},                       /* overlong '/' */
      {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},            /* overlong, 3 bytes */
      {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* a UTF-16 surrogate */
      {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* past U+10FFFF */
      {"\x80z", "\"\\ufffdz\""},                                /* a lone continuation byte */
      {"a\xe2\x80\xa8" "b\xe2\x80\xa9", "\"a\\u2028b\\u2029\""},      /* line and paragraph separators */
      {"\xe2\x80\xa7\xe2\x80\xaa", "\"\xe2\x80\xa7\xe2\x80\xaa\""},  /* their neighbours pass */
      {"\xe2\x80", "\"\\ufffd\\ufffd\""},                          /* a separator cut short */
  };
  expect_writes(jw_str, cases, sizeof cases / sizeof cases[0]);
  /* a long run passes through whole, and what follows it is still escaped */
  char big[5000];
  memset(big, 'x', sizeof big - 2);
  big[sizeof big - 2] = '"';
  big[sizeof big - 1] = 0;
  jw o = {0};
  jw_str(&o, big);
  assert_int_equal(o.len, 1 + (sizeof big - 2) + 2 + 1);
  assert_string_equal(o.b + o.len - 3, "\\\"\"");
  free(o.b);
}

/* Stored JSON text (a meta, a label) goes out as it is, but for U+2028 and U+2029, which a JSON Lines
 * reader splitting with str.splitlines() would take for line ends. */
static void test_buf_json_text_escapes_line_separators(void **state) {
  (void)state;
  static const write_case cases[] = {
      {NULL, "null"}, /* no label */
      {"{}", "{}"},
      {"{\"k\":[1,\"caf\xc3\xa9\"]}", "{\"k\":[1,\"caf\xc3\xa9\"]}"},
      {"\"\xe2\x80\xa8\"", "\"\\u2028\""},
      {"{\"a\xe2\x80\xa9\":\"x\xe2\x80\xa8\xe2\x80\xa8y\"}", "{\"a\\u2029\":\"x\\u2028\\u2028y\"}"},
      {"\"\xe2\x82\xac\xe2\x80\xa7\"", "\"\xe2\x82\xac\xe2\x80\xa7\""}, /* other E2 80 characters pass */
      {"\"\xe2\x80", "\"\xe2\x80"},                                    /* cut short: no read past the end */
  };
  expect_writes(jw_json, cases, sizeof cases / sizeof cases[0]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf_appends_and_formats),
      cmocka_unit_test(test_buf_json_text_escapes_line_separators),
      cmocka_unit_test(test_buf_failed_append_is_sticky_and_answers_500),
      cmocka_unit_test(test_buf_json_strings_escaped_and_valid_utf8),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
