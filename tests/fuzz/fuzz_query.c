/* fuzz_query.c — libFuzzer target: request targets (path and query), routed and answered by the real GET handlers.
 *
 * The input is a request line without its version: an optional method and a
 * space, then the target ("GET /v1/datasets/d/hard-examples?by=aum&k=3"), so a
 * corpus file reads like a log line. It goes through what focald does with a
 * URL:
 *   - the router (router_find in router.c) over the daemon's own table,
 *     api_routes: the path is matched raw and each {parameter}
 *     percent-decoded on its own;
 *   - percent-decoding (router_pct_decode), against a reference written here;
 *   - the bearer-token comparison (http_token_matches), against its definition;
 *   - for GET routes, the handler itself, on an in-memory dataset with runs,
 *     histories, statuses, metas, reviews and a queue (built once): its
 *     answer must have a documented status and be valid JSON (a problem with
 *     its code, or the resource); an export is streamed to the end and each
 *     record parsed; a hard-examples page's next_cursor must be accepted and
 *     continue the ranking without repeating a sample.
 *
 * The router, the HTTP layer and the handlers are linked from the daemon's
 * library as they are. libmicrohttpd's one call the handlers make,
 * MHD_lookup_connection_value, is replaced by a stand-in defined here (the
 * linker binds the library's calls to the executable's definition): it
 * serves the query arguments as libmicrohttpd would with focald's no-op
 * unescape callback: split on '&' and the first
 * '=', raw, an argument without '=' having no value, names matched without
 * regard to case, the first one winning. /metrics (which reads the store) is
 * not called; nothing here needs a database or a socket.
 */
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api.h"
#include "api_internal.h"
#include "http.h"
#include "router.h"
#include "decode.h"
#include "fuzz_common.h"
#include "history.h"
#include "state.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ------------------------------------------------------------------ the stand-in connection */

#define FQ_MAX_ARGS 64

typedef struct fq_conn {
  int nargs;
  char *name[FQ_MAX_ARGS + 1]; /* one spare: a follow-up request adds its cursor in front */
  char *value[FQ_MAX_ARGS + 1]; /* NULL: the argument had no '=' */
} fq_conn;

const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key) {
  const fq_conn *c = (const fq_conn *)(const void *)connection;
  if (!c || kind != MHD_GET_ARGUMENT_KIND || !key) return NULL; /* no headers: none of the GET handlers needs one */
  for (int i = 0; i < c->nargs; i++)
    if (strcasecmp(c->name[i], key) == 0) return c->value[i];
  return NULL;
}

/* Splits query (NUL-terminated, modified in place) into c's arguments. */
static void fq_parse_query(fq_conn *c, char *query) {
  c->nargs = 0;
  for (char *tok = query; tok && c->nargs < FQ_MAX_ARGS;) {
    char *amp = strchr(tok, '&');
    if (amp) *amp = '\0';
    if (*tok) {
      char *eq = strchr(tok, '=');
      if (eq) *eq = '\0';
      c->name[c->nargs] = tok;
      c->value[c->nargs] = eq ? eq + 1 : NULL;
      c->nargs++;
    }
    tok = amp ? amp + 1 : NULL;
  }
}

/* ------------------------------------------------------------------ the dataset */

static st_map *fq_map;

static hist_obs fq_obs(float loss, float p_t, int32_t label, int64_t step) {
  hist_obs o = {.loss = loss, .p_t = p_t, .p_max = p_t > 0.5f ? p_t : 1.0f - p_t, .margin = p_t - 0.5f,
                .correct = p_t >= 0.5f, .pred = label, .label = label, .scored = 1, .has_step = 1, .step = step,
                .has_epoch = 1, .epoch = step / 10, .el2n = 1.0f - p_t};
  return o;
}

/* One sample's observation applied to run (name, id) of dataset "d" as batch seq. */
static void fq_put(const char *run, int64_t run_id, const char *id, hist_obs o, int64_t seq) {
  char *ids[1] = {(char *)id};
  st_batch_ref ref = {1, 1700000000, "d", run_id, 1700000000, run, 3};
  st_batch_prep p;
  if (st_prepare_batch(fq_map, &ref, 1, ids, &p) != 0) abort();
  const hist_params hp = {0.3, 10};
  st_apply_batch(fq_map, &p, seq, ids, &o, &hp, 0, NULL, NULL);
  st_tx_end(fq_map);
}

/* Dataset "d": runs "a" and "b" (3 classes), samples with awkward ids, ties in
 * every score, every review status, metas with DICOM fields, a relabel, an
 * audit trail and a queue. Dataset "e" exists and is empty. */
static void fq_build_fixture(void) {
  static const char *const ids[] = {
      "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "10", "-3", "x/y", "a b", "%41", "a+b", "q?x=1&y",
      "\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac", "quote\"d", "back\\slash", "semi;colon", "comma,id", "tab-less.id_", "~"};
  const int nids = (int)(sizeof ids / sizeof *ids);
  char err[256];
  fq_map = st_map_new();
  if (!fq_map || st_load_dataset(fq_map, 2, "e", 1700000000, err, sizeof err) != 0) abort();
  st_load_done(fq_map);
  char longid[REQ_ID_MAX + 1];
  memset(longid, 'L', REQ_ID_MAX);
  longid[REQ_ID_MAX] = '\0';
  int64_t seq = 1;
  for (int i = 0; i <= nids; i++) {
    const char *id = i < nids ? ids[i] : longid;
    for (int step = 0; step < 1 + i % 4; step++) {
      hist_obs o = fq_obs((float)(i % 5) * 0.5f + (float)step * 0.01f, (float)((i * 7) % 10) / 10.0f, i % 3, seq);
      fq_put("a", 1, id, o, seq++);
      if (i % 2) {
        o.loss += 1.0f;
        fq_put("b", 2, id, o, seq++);
      }
    }
    st_dataset *ds = st_w_find(fq_map, 1);
    const uint32_t key = (uint32_t)st_key(ds, id);
    if (i % 3 == 0) {
      char meta[200];
      snprintf(meta, sizeof meta, "{\"patient_id\":\"p%d\",\"study_uid\":\"1.2.%d\",\"uri\":\"s3://b/%d.dcm\",\"tags\":[\"t\"]}", i % 4, i, i);
      char *copy = strdup(meta);
      if (!copy) abort();
      st_apply_meta(ds, key, copy, seq);
    }
    const int status = i % ST_STATUS_COUNT;
    if (status != ST_OPEN) {
      if (st_prepare_reviews(fq_map, ds, 1) != 0) abort();
      const int64_t eseq = seq++;
      st_review e = {.seq = eseq, .batch_seq = seq, .key = key, .at = 1700000000000 + i, .from = ST_IN_REVIEW,
                     .to = (uint8_t)status, .reviewer = strdup("ann \"the\" reviewer"), .label_before = strdup("2"),
                     .label_after = status == ST_RELABELLED ? strdup("[1,\"cat\"]") : NULL, .note = strdup("line\nbreak")};
      st_apply_status(ds, key, status, status == ST_RELABELLED ? strdup("[1,\"cat\"]") : NULL, NAN, &e);
      st_tx_end(fq_map);
    }
  }
  st_dataset *ds = st_w_find(fq_map, 1);
  st_queue *q = calloc(1, sizeof *q);
  if (!q) abort();
  q->id = 1;
  snprintf(q->name, sizeof q->name, "q1");
  q->created_at = 1700000000;
  q->params = strdup("{\"name\":\"q1\",\"size\":3}");
  q->n = 3;
  q->keys = malloc(3 * sizeof *q->keys);
  q->scores = malloc(3 * sizeof *q->scores);
  if (!q->params || !q->keys || !q->scores) abort();
  for (uint32_t i = 0; i < 3; i++) {
    q->keys[i] = i * 2;
    q->scores[i] = 3.0f - (float)i;
  }
  if (st_prepare_queue(fq_map, ds) != 0) abort();
  st_apply_queue(ds, q, 0, NULL, NULL);
  st_tx_end(fq_map);
  static config cfg; /* api_init keeps a pointer to it */
  memset(&cfg, 0, sizeof cfg);
  cfg.reconsider_factor = 1.5;
  cfg.ema_alpha = 0.3;
  snprintf(cfg.viewer_url, sizeof cfg.viewer_url, "https://viewer.example/ohif");
  api_init(&cfg, fq_map, NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fq_build_fixture();
  return 0;
}

/* ------------------------------------------------------------------ references */

static const char fq_token[] = "s3cr3t-T0ken";

static int fq_hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = (char)(c | 0x20);
  return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decoding as http.h states it: -1 for a malformed escape, %00, or no room (n bytes with the NUL). */
static int fq_pct_reference(const char *s, size_t slen, char *out, size_t n, int plus_space) {
  size_t j = 0;
  for (size_t i = 0; i < slen; i++) {
    int ch = (unsigned char)s[i];
    if (ch == '%') {
      if (slen - i < 3 || fq_hex(s[i + 1]) < 0 || fq_hex(s[i + 2]) < 0) return -1;
      ch = fq_hex(s[i + 1]) * 16 + fq_hex(s[i + 2]);
      if (ch == 0) return -1;
      i += 2;
    } else if (ch == '+' && plus_space) {
      ch = ' ';
    }
    if (j + 1 >= n) return -1;
    out[j++] = (char)ch;
  }
  if (n == 0) return -1;
  out[j] = '\0';
  return 0;
}

static void fq_check_pct(const char *s, size_t len) {
  static const size_t sizes[] = {1, 2, 8, 300};
  for (int plus = 0; plus < 2; plus++) {
    for (size_t q = 0; q < sizeof sizes / sizeof *sizes; q++) {
      char got[300], want[300];
      int a = router_pct_decode(s, len, got, sizes[q], plus);
      int b = fq_pct_reference(s, len, want, sizes[q], plus);
      if (a != b) fz_fail("router_pct_decode returned %d, the reference %d (room %zu, plus %d)", a, b, sizes[q], plus);
      if (a == 0 && strcmp(got, want) != 0) fz_fail("router_pct_decode gave \"%s\", the reference \"%s\"", got, want);
    }
  }
}

static void fq_check_token(const char *header) {
  const int want = strncasecmp(header, "Bearer ", 7) == 0 && strcmp(header + 7, fq_token) == 0;
  if (http_token_matches(fq_token, header) != want) fz_fail("http_token_matches(\"%s\") = %d", header, !want);
}

/* ------------------------------------------------------------------ the response */

static int fq_is_json_type(const char *ct) {
  return ct && (strncmp(ct, "application/json", 16) == 0 || strcmp(ct, "application/problem+json") == 0);
}

/* Streams an export to its end (at most 4 MB), checking every record of the JSON formats. */
static void fq_drain_stream(http_resp *resp) {
  buf out = {0};
  char chunk[1024];
  for (;;) {
    long n = resp->stream(resp->stream_cls, chunk, sizeof chunk);
    if (n < 0) fz_fail("the export stream failed");
    if (n == 0) break;
    if ((size_t)n > sizeof chunk) fz_fail("the export stream wrote %ld bytes into %zu", n, sizeof chunk);
    buf_append(&out, chunk, (size_t)n);
    if (out.failed) fz_fail("out of memory");
    if (out.len > ((size_t)4 << 20)) fz_fail("an export of the small fixture passed 4 MB");
  }
  char *all = out.b;
  const size_t len = out.len;
  if (resp->stream_free) resp->stream_free(resp->stream_cls);
  const char *ct = resp->content_type ? resp->content_type : "";
  if (strcmp(ct, "application/x-ndjson") == 0) {
    for (char *line = all; line && *line;) {
      char *nl = strchr(line, '\n');
      size_t l = nl ? (size_t)(nl - line) : strlen(line);
      json_error_t je;
      json_t *v = json_loadb(line, l, JSON_REJECT_DUPLICATES, &je);
      if (!json_is_object(v)) fz_fail("an export line is not a JSON object: %s: %.*s", je.text, (int)(l < 200 ? l : 200), line);
      json_decref(v);
      line = nl ? nl + 1 : NULL;
    }
  } else if (strcmp(ct, "application/json") == 0) {
    json_error_t je;
    json_t *v = json_loadb(all ? all : "", len, JSON_REJECT_DUPLICATES, &je);
    if (!v) fz_fail("the exported document is not JSON: %s", je.text);
    json_decref(v);
  }
  free(all);
}

/* Parses a JSON response and checks its envelope; returns it (the caller decrefs). */
static json_t *fq_check_body(const http_resp *resp, int route_is_readyz) {
  const int s = resp->status;
  if (s == 308) { /* /ui to /ui/: an empty body and where to go */
    int located = 0;
    for (int i = 0; i < resp->nheaders; i++) located |= strcmp(resp->headers[i][0], "Location") == 0;
    if (!located || resp->len != 0) fz_fail("a 308 without Location, or with a body");
    return NULL;
  }
  if (s != 200 && s != 400 && s != 404 && !(route_is_readyz && s == 503)) fz_fail("status %d", s);
  if (!resp->body) fz_fail("status %d without a body", s);
  if (!fq_is_json_type(resp->content_type)) return NULL; /* the console's files: bytes, len of them */
  if (resp->len != strlen(resp->body)) fz_fail("len %zu but the body is %zu bytes", resp->len, strlen(resp->body));
  json_error_t je;
  json_t *v = json_loadb(resp->body, resp->len, JSON_REJECT_DUPLICATES, &je);
  if (!v) fz_fail("a %d response is not valid JSON (%s, column %d): %.300s", s, je.text, je.column, resp->body);
  if (s != 200) {
    if (!resp->content_type || strcmp(resp->content_type, "application/problem+json") != 0) fz_fail("a %d without problem+json", s);
    if (json_integer_value(json_object_get(v, "status")) != s) fz_fail("a problem's status is not %d", s);
    if (!json_is_string(json_object_get(v, "code"))) fz_fail("a problem without its code");
  }
  return v;
}

static void fq_free_resp(http_resp *resp) {
  free(resp->body);
  resp->body = NULL;
}

/* ------------------------------------------------------------------ paging */

/* Follows a hard-examples page's next_cursor once: the next page is accepted,
 * starts at the next rank and repeats no sample of this page. */
static void fq_follow_cursor(http_req *rq, const router_route *route, fq_conn *c, json_t *page) {
  const char *next = json_string_value(json_object_get(page, "next_cursor"));
  json_t *items = json_object_get(page, "items");
  if (!next || json_array_size(items) == 0) return;
  fq_conn c2 = *c;
  c2.nargs = 0;
  for (int i = 0; i < c->nargs; i++) {
    if (strcasecmp(c->name[i], "cursor") == 0) continue;
    c2.name[c2.nargs] = c->name[i];
    c2.value[c2.nargs++] = c->value[i];
  }
  char *cursor = strdup(next);
  if (!cursor) abort();
  /* first match wins: the cursor goes in front of any other spelling of the name */
  memmove(&c2.name[1], &c2.name[0], (size_t)c2.nargs * sizeof c2.name[0]);
  memmove(&c2.value[1], &c2.value[0], (size_t)c2.nargs * sizeof c2.value[0]);
  c2.name[0] = "cursor";
  c2.value[0] = cursor;
  c2.nargs++;
  rq->conn = &c2;
  http_resp resp;
  memset(&resp, 0, sizeof resp);
  route->fn(rq, &resp);
  json_t *page2 = fq_check_body(&resp, 0);
  if (resp.status != 200) fz_fail("the server's own next_cursor was refused: %s", resp.body);
  json_t *items2 = json_object_get(page2, "items");
  json_int_t last = json_integer_value(json_object_get(json_array_get(items, json_array_size(items) - 1), "rank"));
  if (json_array_size(items2) > 0 && json_integer_value(json_object_get(json_array_get(items2, 0), "rank")) != last + 1)
    fz_fail("the next page does not start at rank %lld", (long long)last + 1);
  for (size_t i = 0; i < json_array_size(items); i++)
    for (size_t j = 0; j < json_array_size(items2); j++)
      if (json_equal(json_object_get(json_array_get(items, i), "id"), json_object_get(json_array_get(items2, j), "id")))
        fz_fail("sample %s is on two pages", json_string_value(json_object_get(json_array_get(items, i), "id")));
  json_decref(page2);
  fq_free_resp(&resp);
  free(cursor);
  rq->conn = c;
}

/* ------------------------------------------------------------------ the target */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* a URL reaches the handler NUL-terminated and without NULs */
  char *line = malloc(size + 1);
  if (!line) return 0;
  memcpy(line, data, size);
  line[size] = '\0';
  const size_t len = strlen(line);

  fq_check_pct(line, len);
  fq_check_token(line);

  const char *method = "GET";
  char *target = line;
  char *sp = strchr(line, ' ');
  if (sp && sp - line <= 8) {
    *sp = '\0';
    method = line;
    target = sp + 1;
  }
  char *query = strchr(target, '?');
  if (query) *query++ = '\0';

  http_req rq;
  memset(&rq, 0, sizeof rq);
  snprintf(rq.request_id, sizeof rq.request_id, "fuzz");
  rq.method = method;
  rq.path = target;
  rq.body_head_len = -1;
  router_match m;
  int ri = router_find(api_routes, api_route_count, method, target, &m);
  if (ri < -2 || ri >= api_route_count || ri != m.index) fz_fail("router_find returned %d (index %d)", ri, m.index);
  if (!memchr(m.allow, '\0', sizeof m.allow)) fz_fail("allow is not terminated");
  if (ri == -2 && !m.allow[0]) fz_fail("405 without an Allow list");
  if (ri == -1 && m.path_flags) fz_fail("flags %#x for a path no route has", m.path_flags);
  if (ri >= 0) {
    if (m.path_flags != api_routes[ri].flags) fz_fail("flags %#x, the route's %#x", m.path_flags, api_routes[ri].flags);
    if (m.bad_param < 0 || m.bad_param > ROUTE_PARAMS) fz_fail("bad_param %d", m.bad_param);
    for (int p = 0; p < ROUTE_PARAMS; p++)
      if (!memchr(m.params[p], '\0', sizeof m.params[p])) fz_fail("params[%d] is not terminated", p);
    memcpy(rq.params, m.params, sizeof rq.params);
    rq.bad_param = m.bad_param;
  }
  const router_route *route = ri >= 0 ? &api_routes[ri] : NULL;
  if (route && strcmp(route->method, "GET") == 0 && strcmp(route->pattern, "/metrics") != 0) {
    fq_conn c;
    char *q = strdup(query ? query : "");
    if (!q) abort();
    fq_parse_query(&c, q);
    rq.conn = &c;
    rq.route = route->pattern;
    http_resp resp;
    memset(&resp, 0, sizeof resp);
    int rc = route->fn(&rq, &resp);
    if (rc != 0) fz_fail("a GET handler returned %d", rc);
    if (resp.nheaders < 0 || resp.nheaders > HTTP_MAX_HEADERS) fz_fail("nheaders %d", resp.nheaders);
    if (resp.stream) {
      if (resp.status != 200) fz_fail("a stream with status %d", resp.status);
      fq_drain_stream(&resp);
    } else {
      json_t *v = fq_check_body(&resp, strcmp(route->pattern, "/readyz") == 0);
      if (resp.status == 200 && strcmp(route->pattern, "/v1/datasets/{dataset}/hard-examples") == 0) fq_follow_cursor(&rq, route, &c, v);
      json_decref(v);
      fq_free_resp(&resp);
    }
    free(q);
  }
  free(line);
  return 0;
}
