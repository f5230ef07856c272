/* ui.c — the console: static files compiled into the binary, served under /ui/.
 *
 * The Makefile turns every file of server/ui/ into bytes of a generated C file
 * (gen_ui.c), as it does the OpenAPI document, so focald serves its console
 * with no files beside it and the browser fetches nothing from elsewhere. A
 * file is found by its exact name in that table: there is no path to resolve,
 * so nothing outside it can be named.
 *
 * Every answer carries a Content-Security-Policy that allows scripts, styles
 * and fetches from focald itself only (no inline script, no eval), images also
 * from http(s) (a sample's preview names its own URI) and blob: (a local file's
 * preview, fetched with the token and shown from memory), and nosniff. Files are
 * revalidated on each load (no-cache) against an ETag of their bytes, so a
 * rebuilt focald is never served stale from a browser's cache.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"

/* gen_ui.c */
extern const char *const focald_ui_names[];
extern const unsigned char *const focald_ui_data[];
extern const size_t focald_ui_lens[];
extern const int focald_ui_count;

#define UI_CSP                                                                                                  \
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' http: https: data: blob:; "                \
  "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static const struct {
  const char *ext;
  const char *type;
} ui_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
    {".json", "application/json"},
};

/* The media type of a file name by its extension; NULL when the console has no such kind of file. */
static const char *ui_type(const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < sizeof ui_types / sizeof ui_types[0]; i++) {
    size_t e = strlen(ui_types[i].ext);
    if (n > e && strcmp(name + n - e, ui_types[i].ext) == 0) return ui_types[i].type;
  }
  return NULL;
}

/* The headers every console answer carries, problems included. */
static void ui_headers(http_resp *resp) {
  http_header(resp, "Content-Security-Policy", UI_CSP);
  http_header(resp, "X-Content-Type-Options", "nosniff");
  http_header(resp, "Referrer-Policy", "no-referrer");
}

/* Writes file i's ETag (quoted FNV-1a of its bytes) into out. */
static void ui_etag(int i, char *out, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t k = 0; k < focald_ui_lens[i]; k++) {
    h ^= focald_ui_data[i][k];
    h *= 0x100000001b3ull;
  }
  snprintf(out, n, "\"%016llx\"", (unsigned long long)h);
}

/* Whether an If-None-Match header names etag (or is "*"). */
static int etag_listed(const char *header, const char *etag) {
  if (!header) return 0;
  if (strcmp(header, "*") == 0) return 1;
  const size_t el = strlen(etag);
  for (const char *p = header; (p = strstr(p, etag)) != NULL; p += el) {
    const char *after = p + el;
    if (*after == '\0' || *after == ',' || *after == ' ') return 1;
  }
  return 0;
}

static int ui_serve(http_req *rq, http_resp *resp, const char *name) {
  int i = 0;
  while (i < focald_ui_count && strcmp(focald_ui_names[i], name) != 0) i++;
  const char *type = i < focald_ui_count ? ui_type(name) : NULL;
  if (!type) {
    api_fail(resp, rq, P_NOT_FOUND, NULL, "the console has no file \"%.80s\"", name);
    ui_headers(resp);
    return 0;
  }
  char etag[24];
  ui_etag(i, etag, sizeof etag);
  if (etag_listed(http_request_header(rq, "If-None-Match"), etag)) {
    resp->status = 304;
    resp->content_type = NULL;
    resp->body = malloc(1); /* an empty body of its own: no body at all means memory ran out */
    if (!resp->body) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
    resp->len = 0;
  } else {
    resp->status = 200;
    resp->content_type = type;
    resp->body = malloc(focald_ui_lens[i] + 1);
    if (!resp->body) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
    memcpy(resp->body, focald_ui_data[i], focald_ui_lens[i]);
    resp->len = focald_ui_lens[i];
  }
  ui_headers(resp);
  http_header(resp, "Cache-Control", "no-cache");
  http_header(resp, "ETag", etag);
  return 0;
}

int api_ui_redirect(http_req *rq, http_resp *resp) {
  (void)rq;
  resp->status = 308; /* permanent, and the method kept */
  resp->content_type = NULL;
  resp->body = calloc(1, 1); /* an empty body, NUL-terminated like every other */
  if (!resp->body) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  resp->len = 0;
  http_header(resp, "Location", "/ui/");
  return 0;
}

int api_ui_index(http_req *rq, http_resp *resp) {
  return ui_serve(rq, resp, "index.html");
}

int api_ui_file(http_req *rq, http_resp *resp) {
  return ui_serve(rq, resp, rq->params[0]);
}
