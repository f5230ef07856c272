/* router.h — routes as data: the table the daemon hands to the HTTP layer, and how a request finds its route.
 *
 * A route names its method and its path pattern, and says everything the HTTP
 * layer must know of it before its handler runs: which bodies it takes, whether
 * it needs a token, what to answer when a path parameter cannot be decoded, how
 * to align the part of its body that is decoded in place. The HTTP layer knows
 * nothing else of the API. Paths are matched raw, segment by segment; each
 * {parameter} is percent-decoded on its own, so that an id containing %2F stays
 * one segment.
 */
#ifndef FOCALD_ROUTER_H
#define FOCALD_ROUTER_H

#include <stddef.h>

#include "problem.h"

#define ROUTE_PARAMS 2      /* path parameters a pattern may have */
#define ROUTE_PARAM_MAX 300 /* a parameter's longest value, percent-decoded, with its NUL */
#define ROUTE_ALLOW_MAX 64  /* the Allow list of a path's methods, with its NUL */
#define ROUTE_QUERY_MAX 32  /* query parameters a route may take: a request's check keeps a bit for each */

/* A route's flags. */
enum {
  ROUTE_BODY_JSON = 1u << 0,   /* takes an application/json body */
  ROUTE_BODY_BINARY = 1u << 1, /* also application/octet-stream, which needs a Content-Length */
  ROUTE_PROBE = 1u << 2,       /* a health probe: needs no token, and is served on the health listener */
  ROUTE_OPEN = 1u << 3,        /* needs no token (a browser loads the console's files without one) */
  ROUTE_DATA = 1u << 4,        /* reads or changes the data: answered 503 starting while the database loads */
};

struct http_req;
struct http_resp;
/* A route's handler (http.h: http_handler): fills the response, or returns HTTP_ASYNC. */
typedef int (*router_handler)(struct http_req *rq, struct http_resp *out);

typedef struct router_route {
  const char *method;  /* a GET route answers HEAD too (without the body) */
  const char *pattern; /* "/v1/datasets/{dataset}/batches": literal segments and {parameters} */
  router_handler fn;
  unsigned flags;      /* ROUTE_* */
  const char *query;   /* the query parameters it takes, space-separated; any other is 400 bad_query */
  /* the answer to path parameter i that cannot be decoded (a malformed escape, %00, too long): the
   * name names nothing, so this is the route's "no such ..." code, or bad_name where it would create */
  problem_code bad_param[ROUTE_PARAMS];
  /* A body decoded in place whose head's length (in bytes) request header head_header gives: the bytes
   * after the head start at a multiple of body_align (a power of 2, at most 64). NULL, 0: no alignment. */
  const char *head_header;
  unsigned body_align;
  /* NULL, or the query parameter (listed in query) that gives the route's last parameter: its value,
   * percent-decoded as query values are, is params[k] after the pattern's k parameters. A browser
   * removes "." and ".." path segments (%2e too) before sending a URL, so an id that is one of them can
   * only travel in the query. Missing, it is 400 bad_query; undecodable, the route's bad_param[k]. */
  const char *query_param;
} router_route;

/* The outcome of routing one request. */
typedef struct router_match {
  int index;                                  /* the route's; -1: no route has the path; -2: some have, not the method */
  unsigned path_flags;                        /* the flags that every route of the path has (0 with -1) */
  char allow[ROUTE_ALLOW_MAX];                /* with -2: the path's methods ("GET, HEAD, DELETE") */
  char params[ROUTE_PARAMS][ROUTE_PARAM_MAX]; /* the matched route's parameters, percent-decoded */
  int bad_param;                              /* 1 + the index of a parameter that could not be decoded, or 0 */
  int query_index;                            /* the index in params of the matched route's query_param, or -1 */
} router_match;

/* Routes method and path (raw, without the query) through routes[0..n). Fills *m; returns m->index. */
int router_find(const router_route *routes, int n, const char *method, const char *path, router_match *m /* OUT */);

/* Checks a table: patterns well formed with at most ROUTE_PARAMS parameters (a query_param counted), each
 * with its bad_param code, at most ROUTE_QUERY_MAX query parameters, none listed twice, a query_param among
 * them, alignments powers of 2 up to 64. Returns 0, or -1 and writes why into err. */
int router_check(const router_route *routes, int n, char *err, size_t errn);

/* The index of word among the space-separated words of list (a route's query), or -1 when it is not one
 * of them. A word is never empty: "" is at no index. */
int router_word_index(const char *list, const char *word);

/* When name is some route's head_header (compared without regard to case), that route's spelling of it,
 * else NULL. (A request may carry such a header once only.) */
const char *router_head_header(const router_route *routes, int n, const char *name);

/* Percent-decodes s[0..slen) into out (n bytes, NUL-terminated); with plus_space, '+' is a space (query
 * values). Returns 0, or -1 for a malformed escape, an encoded NUL, or no room. */
int router_pct_decode(const char *s, size_t slen, char *out, size_t n, int plus_space);

#endif /* FOCALD_ROUTER_H */
