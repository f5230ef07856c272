/* router.c — matches a request's method and raw path against a table of routes.
 *
 * The table is data handed in by its owner (api.c's api_routes); nothing here
 * knows a route. A pattern is matched segment by segment against the path as
 * it arrived, so that a parameter's %2F never splits it; each parameter is then
 * percent-decoded on its own. A parameter that cannot be decoded still matches
 * (the route is the right one; the value names nothing), and is reported in
 * bad_param so that the route's own answer can be given. A route may take its
 * last parameter from a query parameter instead (query_param, filled in by the
 * HTTP layer, which has the query): this file only counts and checks it.
 */
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int router_pct_decode(const char *s, size_t slen, char *out, size_t n, int plus_space) {
  size_t j = 0;
  for (size_t i = 0; i < slen; i++) {
    char ch = s[i];
    if (ch == '%') {
      if (i + 2 >= slen) return -1;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return -1;
      ch = (char)(hi * 16 + lo);
      i += 2;
    } else if (ch == '+' && plus_space) {
      ch = ' ';
    }
    if (j + 1 >= n) return -1;
    out[j++] = ch;
  }
  out[j] = '\0';
  return 0;
}

/* Matches path against pattern ("/v1/datasets/{dataset}/batches"); fills m's params and bad_param.
 * Returns the number of parameters matched, or -1 when the path is not the pattern's. */
static int match(const char *pattern, const char *path, router_match *m) {
  int np = 0;
  m->bad_param = 0;
  const char *p = pattern, *s = path;
  while (*p && *s) {
    if (*p != '/' || *s != '/') return -1;
    p++;
    s++;
    const char *pe = strchr(p, '/'), *se = strchr(s, '/');
    size_t pl = pe ? (size_t)(pe - p) : strlen(p), sl = se ? (size_t)(se - s) : strlen(s);
    if (*p == '{') {
      if (sl == 0 || np >= ROUTE_PARAMS) return -1;
      if (router_pct_decode(s, sl, m->params[np], sizeof m->params[np], 0) != 0) {
        /* a malformed escape, %00 or a segment too long: the route is right, the name names nothing */
        snprintf(m->params[np], sizeof m->params[np], "%.*s", (int)(sl < 200 ? sl : 200), s);
        if (!m->bad_param) m->bad_param = np + 1;
      }
      np++;
    } else if (pl != sl || strncmp(p, s, pl) != 0) {
      return -1;
    }
    p += pl;
    s += sl;
  }
  return *p == '\0' && *s == '\0' ? np : -1;
}

/* HEAD is GET without the body (RFC 9110 section 9.3.2): libmicrohttpd leaves the body out. */
int router_find(const router_route *routes, int n, const char *method, const char *path, router_match *m) {
  int path_found = 0;
  const char *want = strcmp(method, "HEAD") == 0 ? "GET" : method;
  m->allow[0] = '\0';
  m->path_flags = 0;
  m->query_index = -1;
  for (int i = 0; i < n; i++) {
    const int np = match(routes[i].pattern, path, m);
    if (np < 0) continue;
    if (strcmp(routes[i].method, want) == 0) {
      m->path_flags = routes[i].flags;
      if (routes[i].query_param) m->query_index = np;
      return m->index = i;
    }
    m->path_flags = path_found ? m->path_flags & routes[i].flags : routes[i].flags;
    path_found = 1;
    size_t l = strlen(m->allow);
    const int get = strcmp(routes[i].method, "GET") == 0;
    snprintf(m->allow + l, sizeof m->allow - l, "%s%s%s", l ? ", " : "", routes[i].method, get ? ", HEAD" : "");
  }
  return m->index = path_found ? -2 : -1;
}

/* The number of {parameters} in a pattern. */
static int pattern_params(const char *pattern) {
  int np = 0;
  for (const char *p = strchr(pattern, '{'); p; p = strchr(p + 1, '{')) np++;
  return np;
}

int router_word_index(const char *list, const char *word) {
  const size_t wl = strlen(word);
  int i = 0;
  for (const char *p = list + strspn(list, " "); *p; i++) {
    const size_t l = strcspn(p, " ");
    if (l == wl && strncmp(p, word, l) == 0) return i;
    p += l;
    p += strspn(p, " ");
  }
  return -1;
}

/* The number of words in a route's query list, or -1 when one is listed twice (its second never matches). */
static int query_words(const char *list) {
  int nw = 0;
  char word[ROUTE_PARAM_MAX];
  for (const char *p = list + strspn(list, " "); *p; nw++) {
    const size_t l = strcspn(p, " ");
    snprintf(word, sizeof word, "%.*s", (int)l, p);
    if (router_word_index(list, word) != nw) return -1;
    p += l;
    p += strspn(p, " ");
  }
  return nw;
}

int router_check(const router_route *routes, int n, char *err, size_t errn) {
  for (int i = 0; i < n; i++) {
    const router_route *r = &routes[i];
    int np = pattern_params(r->pattern);
    const int nq = query_words(r->query);
    if (nq < 0 || nq > ROUTE_QUERY_MAX) {
      snprintf(err, errn, "route %s %s: at most %d query parameters, each listed once", r->method, r->pattern,
               ROUTE_QUERY_MAX);
      return -1;
    }
    if (r->query_param) {
      if (router_word_index(r->query, r->query_param) < 0) {
        snprintf(err, errn, "route %s %s: its query_param \"%s\" is not among its query parameters", r->method, r->pattern,
                 r->query_param);
        return -1;
      }
      np++;
    }
    if (r->pattern[0] != '/' || !r->fn || np > ROUTE_PARAMS) {
      snprintf(err, errn, "route %s %s: a pattern starts with '/', has a handler and at most %d parameters", r->method,
               r->pattern, ROUTE_PARAMS);
      return -1;
    }
    for (int k = 0; k < np; k++) {
      if (r->bad_param[k] <= P_NONE || r->bad_param[k] >= P_COUNT) {
        snprintf(err, errn, "route %s %s: parameter %d has no answer for a value that cannot be decoded", r->method,
                 r->pattern, k + 1);
        return -1;
      }
    }
    if (r->body_align > 64 || (r->body_align & (r->body_align - 1)) != 0 || (r->body_align && !r->head_header)) {
      snprintf(err, errn, "route %s %s: body_align is a power of 2 up to 64, with a head_header", r->method, r->pattern);
      return -1;
    }
  }
  return 0;
}

const char *router_head_header(const router_route *routes, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (routes[i].head_header && strcasecmp(routes[i].head_header, name) == 0) return routes[i].head_header;
  return NULL;
}
