/* test_router.c — routes as data: matching, methods and Allow, path flags, undecodable names, the table check. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api.h"
#include "router.h"

static int h_none(struct http_req *rq, struct http_resp *out) {
  (void)rq;
  (void)out;
  return 0;
}

/* A table of its own, so that each rule is seen on a route made for it. */
static const router_route table[] = {
    {"GET", "/livez", h_none, ROUTE_PROBE, "", {P_NONE, P_NONE}, NULL, 0, NULL},
    {"GET", "/v1/things/{thing}", h_none, ROUTE_DATA, "", {P_DATASET_NOT_FOUND, P_NONE}, NULL, 0, NULL},
    {"DELETE", "/v1/things/{thing}", h_none, ROUTE_DATA, "", {P_DATASET_NOT_FOUND, P_NONE}, NULL, 0, NULL},
    {"POST", "/v1/things/{thing}/parts", h_none, ROUTE_DATA | ROUTE_BODY_JSON | ROUTE_BODY_BINARY, "",
     {P_BAD_NAME, P_NONE}, "Inference-Header-Content-Length", 64, NULL},
    {"GET", "/v1/things/{thing}/parts/{part}", h_none, ROUTE_DATA, "k", {P_DATASET_NOT_FOUND, P_SAMPLE_NOT_FOUND},
     NULL, 0, NULL},
    {"GET", "/files/{name}", h_none, ROUTE_OPEN, "", {P_NOT_FOUND, P_NONE}, NULL, 0, NULL},
    {"PUT", "/files/{name}", h_none, 0, "", {P_NOT_FOUND, P_NONE}, NULL, 0, NULL},
};
static const int ntable = (int)(sizeof table / sizeof table[0]);

static void test_router_matches_literal_and_parameter_segments(void **state) {
  (void)state;
  router_match m;
  assert_int_equal(router_find(table, ntable, "GET", "/livez", &m), 0);
  assert_int_equal(m.index, 0);
  assert_int_equal(m.path_flags, ROUTE_PROBE);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/a.b", &m), 1);
  assert_string_equal(m.params[0], "a.b");
  assert_int_equal(m.bad_param, 0);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/t/parts/p", &m), 4);
  assert_string_equal(m.params[0], "t");
  assert_string_equal(m.params[1], "p");
  /* no match: a trailing slash, an empty parameter, a segment too many or too few */
  assert_int_equal(router_find(table, ntable, "GET", "/livez/", &m), -1);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/", &m), -1);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things//parts", &m), -1);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/t/parts/p/q", &m), -1);
  assert_int_equal(router_find(table, ntable, "GET", "/v1", &m), -1);
  assert_int_equal(m.path_flags, 0);
}

/* A parameter is decoded on its own: %2F stays inside its segment; '+' is a plus in a path. */
static void test_router_decodes_each_parameter_on_its_own(void **state) {
  (void)state;
  router_match m;
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/a%2Fb/parts/x+y%20z", &m), 4);
  assert_string_equal(m.params[0], "a/b");
  assert_string_equal(m.params[1], "x+y z");
}

/* A parameter that cannot be decoded still finds its route, and says which parameter it was. */
static void test_router_undecodable_parameter_matches_and_is_named(void **state) {
  (void)state;
  router_match m;
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/a%zz", &m), 1);
  assert_int_equal(m.bad_param, 1);
  assert_int_equal(router_find(table, ntable, "GET", "/v1/things/ok/parts/%00", &m), 4);
  assert_int_equal(m.bad_param, 2);
  assert_int_equal(table[m.index].bad_param[m.bad_param - 1], P_SAMPLE_NOT_FOUND);
  char longname[400];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  char path[500];
  snprintf(path, sizeof path, "/v1/things/%s", longname);
  assert_int_equal(router_find(table, ntable, "GET", path, &m), 1);
  assert_int_equal(m.bad_param, 1);
  assert_non_null(memchr(m.params[0], '\0', sizeof m.params[0]));
}

/* HEAD finds the GET route; another method finds -2 with the path's methods for Allow. */
static void test_router_head_is_get_and_other_methods_list_allow(void **state) {
  (void)state;
  router_match m;
  assert_int_equal(router_find(table, ntable, "HEAD", "/v1/things/t", &m), 1);
  assert_int_equal(router_find(table, ntable, "POST", "/v1/things/t", &m), -2);
  assert_string_equal(m.allow, "GET, HEAD, DELETE");
  assert_int_equal(router_find(table, ntable, "DELETE", "/livez", &m), -2);
  assert_string_equal(m.allow, "GET, HEAD");
}

/* With no route for the method, the path's flags are those every route of the path has: a path open
 * to GET only is not open to the method that found none. */
static void test_router_path_flags_are_common_to_the_path(void **state) {
  (void)state;
  router_match m;
  assert_int_equal(router_find(table, ntable, "GET", "/files/x", &m), 5);
  assert_int_equal(m.path_flags, ROUTE_OPEN);
  assert_int_equal(router_find(table, ntable, "PUT", "/files/x", &m), 6);
  assert_int_equal(m.path_flags, 0);
  assert_int_equal(router_find(table, ntable, "POST", "/files/x", &m), -2);
  assert_int_equal(m.path_flags, 0);
  assert_int_equal(router_find(table, ntable, "POST", "/livez", &m), -2);
  assert_int_equal(m.path_flags, ROUTE_PROBE);
}

static void test_router_head_header_is_found_without_regard_to_case(void **state) {
  (void)state;
  assert_string_equal(router_head_header(table, ntable, "inference-header-content-length"), "Inference-Header-Content-Length");
  assert_null(router_head_header(table, ntable, "Content-Length"));
}

static void test_router_check_refuses_malformed_tables(void **state) {
  (void)state;
  char err[200];
  assert_int_equal(router_check(table, ntable, err, sizeof err), 0);
  const router_route no_answer[] = {{"GET", "/a/{x}", h_none, 0, "", {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(no_answer, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "parameter 1"));
  const router_route three[] = {{"GET", "/{a}/{b}/{c}", h_none, 0, "", {P_NOT_FOUND, P_NOT_FOUND}, NULL, 0, NULL}};
  assert_int_equal(router_check(three, 1, err, sizeof err), -1);
  const router_route relative[] = {{"GET", "a", h_none, 0, "", {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(relative, 1, err, sizeof err), -1);
  const router_route odd_align[] = {{"POST", "/a", h_none, ROUTE_BODY_BINARY, "", {P_NONE, P_NONE}, "X-Head", 48, NULL}};
  assert_int_equal(router_check(odd_align, 1, err, sizeof err), -1);
  const router_route no_header[] = {{"POST", "/a", h_none, ROUTE_BODY_BINARY, "", {P_NONE, P_NONE}, NULL, 64, NULL}};
  assert_int_equal(router_check(no_header, 1, err, sizeof err), -1);
  /* a parameter given in the query counts as one, needs its answer and must be a query parameter of the route */
  const router_route in_query[] = {{"GET", "/a/{x}/b", h_none, 0, "id k", {P_NOT_FOUND, P_SAMPLE_NOT_FOUND}, NULL, 0, "id"}};
  assert_int_equal(router_check(in_query, 1, err, sizeof err), 0);
  const router_route unlisted[] = {{"GET", "/a/{x}/b", h_none, 0, "k", {P_NOT_FOUND, P_SAMPLE_NOT_FOUND}, NULL, 0, "id"}};
  assert_int_equal(router_check(unlisted, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "query_param"));
  const router_route unanswered[] = {{"GET", "/a/{x}/b", h_none, 0, "id", {P_NOT_FOUND, P_NONE}, NULL, 0, "id"}};
  assert_int_equal(router_check(unanswered, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "parameter 2"));
  const router_route too_many[] = {{"GET", "/{a}/{b}", h_none, 0, "id", {P_NOT_FOUND, P_NOT_FOUND}, NULL, 0, "id"}};
  assert_int_equal(router_check(too_many, 1, err, sizeof err), -1);
  /* a request's check keeps a bit per query parameter: 32 of them at most, and a name listed twice would
   * never match its second entry */
  char query[200] = "";
  for (int w = 0; w < ROUTE_QUERY_MAX; w++) snprintf(query + strlen(query), sizeof query - strlen(query), " q%d", w);
  const router_route thirty_two[] = {{"GET", "/a", h_none, 0, query, {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(thirty_two, 1, err, sizeof err), 0);
  strcat(query, " z");
  const router_route thirty_three[] = {{"GET", "/a", h_none, 0, query, {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(thirty_three, 1, err, sizeof err), -1);
  assert_non_null(strstr(err, "at most 32 query parameters"));
  const router_route twice[] = {{"GET", "/a", h_none, 0, "k by k", {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(twice, 1, err, sizeof err), -1);
  const router_route prefix[] = {{"GET", "/a", h_none, 0, "k kk", {P_NONE, P_NONE}, NULL, 0, NULL}};
  assert_int_equal(router_check(prefix, 1, err, sizeof err), 0);
}

/* The daemon's own table passes the check, and states what the HTTP layer used to hard-code. */
static void test_router_daemon_table_states_the_api_rules(void **state) {
  (void)state;
  char err[200];
  assert_int_equal(router_check(api_routes, api_route_count, err, sizeof err), 0);
  router_match m;
  int ri = router_find(api_routes, api_route_count, "POST", "/v1/datasets/%zz/batches", &m);
  assert_true(ri >= 0);
  assert_int_equal(api_routes[ri].bad_param[m.bad_param - 1], P_BAD_NAME);
  assert_int_equal(api_routes[ri].body_align, 64);
  ri = router_find(api_routes, api_route_count, "GET", "/v1/datasets/%zz", &m);
  assert_int_equal(api_routes[ri].bad_param[m.bad_param - 1], P_DATASET_NOT_FOUND);
  ri = router_find(api_routes, api_route_count, "GET", "/v1/datasets/d/samples/%zz", &m);
  assert_int_equal(api_routes[ri].bad_param[m.bad_param - 1], P_SAMPLE_NOT_FOUND);
  assert_int_equal(router_find(api_routes, api_route_count, "GET", "/readyz", &m) >= 0, 1);
  assert_true(m.path_flags & ROUTE_PROBE);
  assert_int_equal(router_find(api_routes, api_route_count, "GET", "/ui/console.js", &m) >= 0, 1);
  assert_true(m.path_flags & ROUTE_OPEN);
  assert_int_equal(router_find(api_routes, api_route_count, "GET", "/metrics", &m) >= 0, 1);
  assert_int_equal(m.path_flags & (ROUTE_OPEN | ROUTE_PROBE | ROUTE_DATA), 0);
  /* every /v1/ route reads or changes the data */
  for (int i = 0; i < api_route_count; i++)
    assert_int_equal(strncmp(api_routes[i].pattern, "/v1/", 4) == 0, (api_routes[i].flags & ROUTE_DATA) != 0);
}

/* A route that takes its last parameter from the query: the match says which slot of params it fills (after
 * the path's); any other route, and a failed match, say -1. */
static void test_router_match_gives_the_query_parameter_slot(void **state) {
  (void)state;
  const router_route routes[] = {
      {"GET", "/a/{x}/b", h_none, 0, "id k", {P_NOT_FOUND, P_SAMPLE_NOT_FOUND}, NULL, 0, "id"},
      {"GET", "/a/{x}/c", h_none, 0, "id", {P_NOT_FOUND, P_NONE}, NULL, 0, NULL},
      {"GET", "/q", h_none, 0, "id", {P_NOT_FOUND, P_NONE}, NULL, 0, "id"},
  };
  router_match m;
  assert_int_equal(router_find(routes, 3, "GET", "/a/x/b", &m), 0);
  assert_int_equal(m.query_index, 1);
  assert_int_equal(router_find(routes, 3, "GET", "/a/x/c", &m), 1);
  assert_int_equal(m.query_index, -1);
  assert_int_equal(router_find(routes, 3, "GET", "/q", &m), 2);
  assert_int_equal(m.query_index, 0);
  assert_int_equal(router_find(routes, 3, "POST", "/a/x/b", &m), -2);
  assert_int_equal(m.query_index, -1);
  assert_int_equal(router_find(routes, 3, "GET", "/none", &m), -1);
  assert_int_equal(m.query_index, -1);
  /* the daemon's ?id= routes: the sample id comes after the dataset */
  const int ri = router_find(api_routes, api_route_count, "GET", "/v1/datasets/d/sample", &m);
  assert_true(ri >= 0);
  assert_string_equal(api_routes[ri].query_param, "id");
  assert_int_equal(m.query_index, 1);
}

/* A route's query lists its parameters as words between spaces: each has its index, nothing else has one. */
static void test_router_word_index_finds_whole_words_only(void **state) {
  (void)state;
  assert_int_equal(router_word_index("id k order", "id"), 0);
  assert_int_equal(router_word_index("id k order", "k"), 1);
  assert_int_equal(router_word_index("id k order", "order"), 2);
  assert_int_equal(router_word_index("  id   k ", "k"), 1);   /* runs of spaces, before and after */
  assert_int_equal(router_word_index("id k order", "ord"), -1); /* a prefix of a word */
  assert_int_equal(router_word_index("id k order", "orders"), -1);
  assert_int_equal(router_word_index("id k order", "id k"), -1);
  assert_int_equal(router_word_index("id k order", ""), -1);
  assert_int_equal(router_word_index(" ", ""), -1);
  assert_int_equal(router_word_index("", ""), -1);
  assert_int_equal(router_word_index("", "id"), -1);
}

static void test_router_pct_decode_refuses_what_it_cannot_decode(void **state) {
  (void)state;
  char out[8];
  assert_int_equal(router_pct_decode("a%41+b", 6, out, sizeof out, 1), 0);
  assert_string_equal(out, "aA b");
  assert_int_equal(router_pct_decode("a%41+b", 6, out, sizeof out, 0), 0);
  assert_string_equal(out, "aA+b");
  assert_int_equal(router_pct_decode("%4", 2, out, sizeof out, 0), -1);   /* cut short */
  assert_int_equal(router_pct_decode("%g1", 3, out, sizeof out, 0), -1);  /* not hex */
  assert_int_equal(router_pct_decode("%00", 3, out, sizeof out, 0), -1);  /* an encoded NUL */
  assert_int_equal(router_pct_decode("12345678", 8, out, sizeof out, 0), -1); /* no room for the NUL */
  assert_int_equal(router_pct_decode("1234567", 7, out, sizeof out, 0), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_router_matches_literal_and_parameter_segments),
      cmocka_unit_test(test_router_decodes_each_parameter_on_its_own),
      cmocka_unit_test(test_router_undecodable_parameter_matches_and_is_named),
      cmocka_unit_test(test_router_head_is_get_and_other_methods_list_allow),
      cmocka_unit_test(test_router_path_flags_are_common_to_the_path),
      cmocka_unit_test(test_router_head_header_is_found_without_regard_to_case),
      cmocka_unit_test(test_router_check_refuses_malformed_tables),
      cmocka_unit_test(test_router_daemon_table_states_the_api_rules),
      cmocka_unit_test(test_router_match_gives_the_query_parameter_slot),
      cmocka_unit_test(test_router_word_index_finds_whole_words_only),
      cmocka_unit_test(test_router_pct_decode_refuses_what_it_cannot_decode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
