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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf_appends_and_formats),
      cmocka_unit_test(test_buf_failed_append_is_sticky_and_answers_500),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
