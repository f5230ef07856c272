/* test_export.c — exports (README "Exports"): each format's content, media type, file name and the count
 * of samples left out (the Focald-Skipped trailer), k, queues, paging past 4096 samples, query errors
 * answered before the first byte, and a stream cut (never a short file) when its dataset is deleted.
 *
 * The handler reads its query through libmicrohttpd's MHD_lookup_connection_value; this file defines that
 * function over a table of its own, so that api_export runs on a request built here, with no server. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <microhttpd.h>

#include "api_internal.h"
#include "export_internal.h"

/* ------------------------------------------------------------------ the request's query */

static const char *const *query_table; /* name, value, name, value, ..., NULL */

const char *MHD_lookup_connection_value(struct MHD_Connection *connection, enum MHD_ValueKind kind, const char *key) {
  (void)connection;
  if (kind != MHD_GET_ARGUMENT_KIND || !query_table) return NULL;
  for (int i = 0; query_table[i]; i += 2)
    if (strcmp(query_table[i], key) == 0) return query_table[i + 1];
  return NULL;
}

#define QUERY(...) ((const char *const[]){__VA_ARGS__, NULL})

/* ------------------------------------------------------------------ the dataset */

static const hist_params HP = {0.3, 10};
static st_map *map;
static int64_t seq;

static void observe(int64_t ds_id, const char *ds_name, int n, char **ids, const float *loss, const int32_t *label) {
  st_batch_ref ref = {ds_id, 0, ds_name, ds_id * 10, 0, "r", 4};
  hist_obs *o = calloc((size_t)n, sizeof *o);
  assert_non_null(o);
  for (int i = 0; i < n; i++)
    o[i] = (hist_obs){.loss = loss[i], .p_t = 0.5f, .p_max = 0.5f, .pred = label[i], .label = label[i], .scored = 1};
  st_batch_prep p;
  assert_int_equal(st_prepare_batch(map, &ref, (uint32_t)n, ids, &p), 0);
  st_apply_batch(map, &p, ++seq, ids, o, &HP, 0, NULL, NULL);
  st_tx_end(map);
  free(o);
}

static void set_meta(const char *id, const char *meta) {
  st_dataset *ds = st_w_find(map, 1);
  st_apply_meta(ds, (uint32_t)st_key(ds, id), strdup(meta), seq);
}

/* Dataset "exp" (run "r"), by mean loss: a 3 (label 1), b 2 (0), c 1 (2), @d 0.5 (3).
 *   a: an s3 image with a full DICOM reference and a patient id that looks like a formula
 *   b: a local path with a space       c: no meta       @d: a file: URL (and an id that looks like a formula)
 * Queue "q": c then a, with build-time scores 10 and 20. */
static int setup(void **state) {
  (void)state;
  map = st_map_new();
  assert_non_null(map);
  seq = 0;
  char *ids[4] = {"a", "b", "c", "@d"};
  const float loss[4] = {3, 2, 1, 0.5f};
  const int32_t label[4] = {1, 0, 2, 3};
  observe(1, "exp", 4, ids, loss, label);
  set_meta("a", "{\"uri\":\"s3://bucket/a.png\",\"study_uid\":\"1.2.3\",\"series_uid\":\"4.5\",\"sop_uid\":\"6.7\","
                "\"patient_id\":\"=p1\"}");
  set_meta("b", "{\"uri\":\"/data/img/b 1.png\"}");
  set_meta("@d", "{\"uri\":\"file:///data/img/d.png\"}");
  st_dataset *ds = st_w_find(map, 1);
  assert_int_equal(st_prepare_queue(map, ds), 0);
  st_queue *q = calloc(1, sizeof *q);
  assert_non_null(q);
  q->id = 1;
  snprintf(q->name, sizeof q->name, "q");
  q->params = strdup("{\"by\":\"mean_loss\",\"name\":\"q\"}");
  q->n = 2;
  q->keys = malloc(2 * sizeof *q->keys);
  q->scores = malloc(2 * sizeof *q->scores);
  q->keys[0] = (uint32_t)st_key(ds, "c");
  q->keys[1] = (uint32_t)st_key(ds, "a");
  q->scores[0] = 10;
  q->scores[1] = 20;
  st_apply_queue(ds, q, 0, NULL, NULL);
  st_tx_end(map);
  static config cfg; /* api_init keeps a pointer to it */
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.viewer_url, sizeof cfg.viewer_url, "http://localhost:3000");
  cfg.reconsider_factor = 2;
  api_init(&cfg, map, NULL);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  st_map_free(map);
  map = NULL;
  return 0;
}

/* ------------------------------------------------------------------ running an export */

typedef struct result {
  http_resp resp;
  char *body;   /* the whole stream, or the problem's body */
  size_t len;
  int cut;      /* the stream ended with an error */
  char skipped[32];
} result;

/* GET /v1/datasets/<dataset>/export?<query>, read to its end in small reads. */
/* Starts an export of dataset with query, to be read through resp->stream a part at a time. */
static void start_export(const char *dataset, const char *const *query, http_resp *resp) {
  http_req rq;
  memset(&rq, 0, sizeof rq);
  rq.conn = &rq; /* never dereferenced: the query comes from query_table */
  snprintf(rq.params[0], sizeof rq.params[0], "%s", dataset);
  query_table = query;
  memset(resp, 0, sizeof *resp);
  assert_int_equal(api_export(&rq, resp), 0);
  assert_non_null(resp->stream);
}

static void run_export(const char *dataset, const char *const *query, result *r) {
  memset(r, 0, sizeof *r);
  http_req rq;
  memset(&rq, 0, sizeof rq);
  rq.method = "GET";
  rq.path = "/v1/datasets/x/export";
  rq.conn = &rq; /* never dereferenced: the query comes from query_table */
  snprintf(rq.request_id, sizeof rq.request_id, "test");
  snprintf(rq.params[0], sizeof rq.params[0], "%s", dataset);
  query_table = query;
  assert_int_equal(api_export(&rq, &r->resp), 0);
  if (!r->resp.stream) {
    r->body = r->resp.body;
    r->len = r->resp.len;
    return;
  }
  size_t cap = 1 << 16;
  r->body = malloc(cap);
  assert_non_null(r->body);
  for (;;) {
    if (cap - r->len < 1001) {
      cap *= 2;
      r->body = realloc(r->body, cap);
      assert_non_null(r->body);
    }
    const long n = r->resp.stream(r->resp.stream_cls, r->body + r->len, 1000);
    if (n < 0) {
      r->cut = 1;
      break;
    }
    if (n == 0) break;
    r->len += (size_t)n;
  }
  r->body[r->len] = '\0';
  if (!r->cut) assert_int_equal(r->resp.trailer_value(r->resp.stream_cls, r->skipped, sizeof r->skipped), 0);
  r->resp.stream_free(r->resp.stream_cls);
}

static void result_free(result *r) {
  free(r->body);
}

static const char *header(const result *r, const char *name) {
  for (int i = 0; i < r->resp.nheaders; i++)
    if (strcmp(r->resp.headers[i][0], name) == 0) return r->resp.headers[i][1];
  return NULL;
}

/* A streamed 200 with this media type, file name and Focald-Skipped count. */
static void expect_stream(const result *r, const char *type, const char *file, const char *skipped) {
  assert_int_equal(r->resp.status, 200);
  assert_non_null(r->resp.stream);
  assert_false(r->cut);
  assert_string_equal(r->resp.content_type, type);
  char disp[160];
  snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", file);
  assert_non_null(header(r, "Content-Disposition"));
  assert_string_equal(header(r, "Content-Disposition"), disp);
  assert_string_equal(r->resp.trailer, "Focald-Skipped");
  assert_string_equal(r->skipped, skipped);
}

/* The export must be refused before any byte: status, code and field (NULL: no field). */
static void expect_refused(const char *dataset, const char *const *query, int status, const char *code, const char *field) {
  result r;
  run_export(dataset, query, &r);
  assert_null(r.resp.stream);
  if (r.resp.status != status) fail_msg("status %d, expected %d: %s", r.resp.status, status, r.body);
  assert_string_equal(r.resp.content_type, "application/problem+json");
  json_t *p = json_loads(r.body, 0, NULL);
  assert_non_null(p);
  assert_string_equal(json_string_value(json_object_get(p, "code")), code);
  if (field) assert_string_equal(json_string_value(json_object_get(p, "field")), field);
  else assert_null(json_object_get(p, "field"));
  json_decref(p);
  result_free(&r);
}

/* The n-th line (from 0) of text, split at "\n" (a CRLF line keeps no "\r"); into out. */
static void line_at(const char *text, int n, char *out, size_t cap) {
  const char *p = text;
  for (int i = 0; i < n && p; i++) {
    p = strchr(p, '\n');
    if (p) p++;
  }
  assert_non_null(p);
  size_t len = strcspn(p, "\n");
  if (len && p[len - 1] == '\r') len--;
  assert_true(len < cap);
  memcpy(out, p, len);
  out[len] = '\0';
}

static int count_lines(const char *text) {
  int n = 0;
  for (const char *p = text; *p; p++) n += *p == '\n';
  return n;
}

/* ------------------------------------------------------------------ the formats */

/* CSV: RFC 4180 with CRLF, a header row of the README's columns, one row per sample in ranking order, the
 * formula guard on text cells (not on numbers), the OHIF link for a sample with a study. */
static void test_export_csv(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "csv"), &r);
  expect_stream(&r, "text/csv; charset=utf-8", "exp.csv", "0");
  assert_int_equal(count_lines(r.body), 5);
  char line[2048];
  line_at(r.body, 0, line, sizeof line);
  assert_true(strncmp(line, "rank,id,score,", 14) == 0);
  static const char tail[] = ",label,label_issue,status,corrected_label,reconsider,uri,study_uid,series_uid,sop_uid,patient_id,viewer_url";
  assert_string_equal(line + strlen(line) - strlen(tail), tail);
  const char *crlf = strstr(r.body, "\r\n");
  assert_non_null(crlf);
  assert_ptr_equal(crlf, r.body + strlen(line)); /* lines end with CRLF */
  /* every row has the header's columns (no cell here holds a comma) */
  int commas_header = 0;
  for (const char *p = line; *p; p++) commas_header += *p == ',';
  for (int i = 1; i <= 4; i++) {
    char row[2048];
    line_at(r.body, i, row, sizeof row);
    int commas = 0;
    for (const char *p = row; *p; p++) commas += *p == ',';
    assert_int_equal(commas, commas_header);
  }
  line_at(r.body, 1, line, sizeof line);
  assert_true(strncmp(line, "1,a,3,1,3,3,3,", 14) == 0); /* rank, id, score, seen, last, mean, max loss */
  assert_non_null(strstr(line, ",1,false,open,,false,s3://bucket/a.png,1.2.3,4.5,6.7,\"'=p1\","
                               "http://localhost:3000/viewer?StudyInstanceUIDs=1.2.3&SeriesInstanceUIDs=4.5&initialSOPInstanceUID=6.7"));
  line_at(r.body, 4, line, sizeof line);
  assert_true(strncmp(line, "4,\"'@d\",0.5,", 12) == 0); /* an id that starts a formula is guarded */
  line_at(r.body, 2, line, sizeof line);
  assert_true(strncmp(line, "2,b,2,", 6) == 0);
  line_at(r.body, 3, line, sizeof line);
  assert_true(strncmp(line, "3,c,1,", 6) == 0);
  result_free(&r);
  /* k: at most k samples */
  run_export("exp", QUERY("format", "csv", "k", "2"), &r);
  expect_stream(&r, "text/csv; charset=utf-8", "exp.csv", "0");
  assert_int_equal(count_lines(r.body), 3);
  result_free(&r);
  /* the hard-examples parameters: the easiest first, one label */
  run_export("exp", QUERY("format", "csv", "order", "asc", "k", "1"), &r);
  line_at(r.body, 1, line, sizeof line);
  assert_true(strncmp(line, "1,\"'@d\",0.5,", 12) == 0);
  result_free(&r);
  run_export("exp", QUERY("format", "csv", "label", "2", "run", "r"), &r);
  assert_int_equal(count_lines(r.body), 2);
  line_at(r.body, 1, line, sizeof line);
  assert_true(strncmp(line, "1,c,1,", 6) == 0);
  result_free(&r);
}

/* JSON Lines: one hard-examples item per line, plus corrected_label, reconsider and viewer_url. */
static void test_export_jsonl(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "jsonl"), &r);
  expect_stream(&r, "application/x-ndjson", "exp.jsonl", "0");
  assert_int_equal(count_lines(r.body), 4);
  static const char *const ids[] = {"a", "b", "c", "@d"};
  static const double scores[] = {3, 2, 1, 0.5};
  for (int i = 0; i < 4; i++) {
    char line[2048];
    line_at(r.body, i, line, sizeof line);
    json_error_t je;
    json_t *item = json_loads(line, 0, &je);
    if (!item) fail_msg("line %d is not JSON: %s", i, je.text);
    assert_string_equal(json_string_value(json_object_get(item, "id")), ids[i]);
    assert_int_equal(json_integer_value(json_object_get(item, "rank")), i + 1);
    assert_true(json_number_value(json_object_get(item, "score")) == scores[i]);
    assert_true(json_number_value(json_object_get(item, "mean_loss")) == scores[i]);
    assert_string_equal(json_string_value(json_object_get(item, "status")), "open");
    assert_true(json_is_object(json_object_get(item, "meta")));
    assert_true(json_is_null(json_object_get(item, "corrected_label")));
    assert_true(json_is_false(json_object_get(item, "reconsider")));
    const json_t *url = json_object_get(item, "viewer_url");
    if (i == 0)
      assert_string_equal(json_string_value(url),
                          "http://localhost:3000/viewer?StudyInstanceUIDs=1.2.3&SeriesInstanceUIDs=4.5&initialSOPInstanceUID=6.7");
    else assert_true(json_is_null(url));
    json_decref(item);
  }
  result_free(&r);
}

/* Label Studio: a JSON array of tasks, only for samples with an image Label Studio can open; a URL as it
 * is, a local path only under local_files_root (as /data/local-files/?d=<relative path, percent-encoded>);
 * the prediction's score maps the loss so the hardest sorts first (exp(-loss)). */
static void test_export_label_studio(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "label-studio"), &r);
  expect_stream(&r, "application/json", "exp-label-studio.json", "3"); /* b, c and @d left out */
  json_t *tasks = json_loads(r.body, 0, NULL);
  assert_non_null(tasks);
  assert_int_equal(json_array_size(tasks), 1);
  const json_t *t = json_array_get(tasks, 0);
  const json_t *data = json_object_get(t, "data");
  assert_string_equal(json_string_value(json_object_get(data, "image")), "s3://bucket/a.png");
  assert_string_equal(json_string_value(json_object_get(data, "uri")), "s3://bucket/a.png"); /* the meta's keys */
  assert_string_equal(json_string_value(json_object_get(data, "patient_id")), "=p1");     /* JSON: no formula guard */
  assert_string_equal(json_string_value(json_object_get(data, "focald_id")), "a");
  assert_string_equal(json_string_value(json_object_get(data, "focald_dataset")), "exp");
  assert_int_equal(json_integer_value(json_object_get(data, "focald_rank")), 1);
  assert_true(json_number_value(json_object_get(data, "focald_score")) == 3);
  assert_int_equal(json_integer_value(json_object_get(data, "focald_label")), 1);
  assert_string_equal(json_string_value(json_object_get(data, "focald_status")), "open");
  assert_non_null(json_string_value(json_object_get(data, "viewer_url")));
  const json_t *pred = json_array_get(json_object_get(t, "predictions"), 0);
  assert_string_equal(json_string_value(json_object_get(pred, "model_version")), "*");
  assert_true(fabs(json_number_value(json_object_get(pred, "score")) - exp(-3.0)) < 1e-7);
  assert_int_equal(json_array_size(json_object_get(pred, "result")), 0);
  json_decref(tasks);
  result_free(&r);
  /* with the document root: local paths and file: URLs under it become local-files links */
  run_export("exp", QUERY("format", "label-studio", "local_files_root", "/data/"), &r);
  expect_stream(&r, "application/json", "exp-label-studio.json", "1"); /* only c, which has no uri */
  tasks = json_loads(r.body, 0, NULL);
  assert_non_null(tasks);
  assert_int_equal(json_array_size(tasks), 3);
  static const char *const images[] = {"s3://bucket/a.png", "/data/local-files/?d=img/b%201.png", "/data/local-files/?d=img/d.png"};
  for (size_t i = 0; i < 3; i++) {
    data = json_object_get(json_array_get(tasks, i), "data");
    assert_string_equal(json_string_value(json_object_get(data, "image")), images[i]);
    assert_int_equal(json_integer_value(json_object_get(data, "focald_rank")), (json_int_t)i + 1); /* ranks count what is written */
  }
  json_decref(tasks);
  result_free(&r);
  /* a root the paths are not under leaves them out; nothing to write is an empty array */
  run_export("exp", QUERY("format", "label-studio", "local_files_root", "/elsewhere", "label", "0"), &r);
  expect_stream(&r, "application/json", "exp-label-studio.json", "1");
  tasks = json_loads(r.body, 0, NULL);
  assert_non_null(tasks);
  assert_int_equal(json_array_size(tasks), 0);
  json_decref(tasks);
  result_free(&r);
}

/* FiftyOne's CSVDataset: only samples with a local file, its path in filepath (a file: URL as its path). */
static void test_export_fiftyone(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "fiftyone"), &r);
  expect_stream(&r, "text/csv; charset=utf-8", "exp-fiftyone.csv", "2"); /* a (s3) and c (no uri) left out */
  assert_int_equal(count_lines(r.body), 3);
  char line[1024];
  line_at(r.body, 0, line, sizeof line);
  assert_string_equal(line, "filepath,ground_truth,hardness,focald_id,focald_rank,focald_status,mean_loss,label_issue");
  line_at(r.body, 1, line, sizeof line);
  assert_string_equal(line, "/data/img/b 1.png,0,2,b,1,open,2,false");
  line_at(r.body, 2, line, sizeof line);
  assert_string_equal(line, "/data/img/d.png,3,0.5,\"'@d\",2,open,0.5,false");
  result_free(&r);
}

/* OHIF: only the samples with a study, each with its viewer link. */
static void test_export_ohif(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "ohif"), &r);
  expect_stream(&r, "application/x-ndjson", "exp-ohif.jsonl", "3");
  assert_int_equal(count_lines(r.body), 1);
  json_t *item = json_loads(r.body, JSON_DISABLE_EOF_CHECK, NULL);
  assert_non_null(item);
  assert_string_equal(json_string_value(json_object_get(item, "id")), "a");
  assert_int_equal(json_integer_value(json_object_get(item, "rank")), 1);
  assert_true(json_number_value(json_object_get(item, "score")) == 3);
  assert_string_equal(json_string_value(json_object_get(item, "study_uid")), "1.2.3");
  assert_string_equal(json_string_value(json_object_get(item, "series_uid")), "4.5");
  assert_string_equal(json_string_value(json_object_get(item, "sop_uid")), "6.7");
  assert_string_equal(json_string_value(json_object_get(item, "patient_id")), "=p1");
  assert_string_equal(json_string_value(json_object_get(item, "url")),
                      "http://localhost:3000/viewer?StudyInstanceUIDs=1.2.3&SeriesInstanceUIDs=4.5&initialSOPInstanceUID=6.7");
  json_decref(item);
  result_free(&r);
}

/* queue=NAME: the queue's order and build-time scores, named <ds>-<queue>; k counts what is written. */
static void test_export_queue(void **state) {
  (void)state;
  result r;
  run_export("exp", QUERY("format", "jsonl", "queue", "q"), &r);
  expect_stream(&r, "application/x-ndjson", "exp-q.jsonl", "0");
  assert_int_equal(count_lines(r.body), 2);
  char line[2048];
  line_at(r.body, 0, line, sizeof line);
  json_t *item = json_loads(line, 0, NULL);
  assert_string_equal(json_string_value(json_object_get(item, "id")), "c");
  assert_true(json_number_value(json_object_get(item, "score")) == 10);
  json_decref(item);
  line_at(r.body, 1, line, sizeof line);
  item = json_loads(line, 0, NULL);
  assert_string_equal(json_string_value(json_object_get(item, "id")), "a");
  assert_true(json_number_value(json_object_get(item, "score")) == 20);
  json_decref(item);
  result_free(&r);
  run_export("exp", QUERY("format", "ohif", "queue", "q", "k", "1"), &r);
  expect_stream(&r, "application/x-ndjson", "exp-q-ohif.jsonl", "1"); /* c has no study: left out, a written */
  assert_int_equal(count_lines(r.body), 1);
  assert_non_null(strstr(r.body, "\"id\":\"a\",\"rank\":1,"));
  result_free(&r);
}

/* ------------------------------------------------------------------ refusals and cuts */

static void test_export_refusals_before_the_first_byte(void **state) {
  (void)state;
  expect_refused("exp", QUERY("k", "1"), 400, "bad_query", "format");
  expect_refused("exp", QUERY("format", "xml"), 400, "bad_query", "format");
  expect_refused("nope", QUERY("format", "csv"), 404, "dataset_not_found", NULL);
  expect_refused("exp", QUERY("format", "csv", "run", "nope"), 404, "run_not_found", "run");
  expect_refused("exp", QUERY("format", "csv", "run", "a b"), 400, "bad_query", "run");
  expect_refused("exp", QUERY("format", "csv", "queue", "nope"), 404, "not_found", "queue");
  expect_refused("exp", QUERY("format", "csv", "queue", "q", "by", "seen"), 400, "bad_query", "queue");
  expect_refused("exp", QUERY("format", "csv", "queue", "q", "status", "open"), 400, "bad_query", "queue");
  expect_refused("exp", QUERY("format", "csv", "k", "0"), 400, "bad_query", "k");
  expect_refused("exp", QUERY("format", "csv", "k", "2x"), 400, "bad_query", "k");
  expect_refused("exp", QUERY("format", "csv", "by", "loudness"), 400, "bad_query", "by");
  expect_refused("exp", QUERY("format", "csv", "order", "up"), 400, "bad_query", "order");
  expect_refused("exp", QUERY("format", "csv", "label", "-1"), 400, "bad_query", "label");
  expect_refused("exp", QUERY("format", "csv", "min_seen", "0"), 400, "bad_query", "min_seen");
  expect_refused("exp", QUERY("format", "csv", "status", "open,done"), 400, "bad_query", "status");
  expect_refused("exp", QUERY("format", "csv", "label_issue", "maybe"), 400, "bad_query", "label_issue");
  expect_refused("exp", QUERY("format", "csv", "local_files_root", "/data"), 400, "bad_query", "local_files_root");
  expect_refused("exp", QUERY("format", "label-studio", "local_files_root", "data"), 400, "bad_query", "local_files_root");
  expect_refused("exp", QUERY("format", "label-studio", "local_files_root", "/data/../etc"), 400, "bad_query",
                 "local_files_root");
  expect_refused("exp", QUERY("format", "label-studio", "local_files_root", "/data/./x"), 400, "bad_query", "local_files_root");
}

/* 5000 samples: two pages, each the top of the samples not written yet: every sample once, in
 * order. Then the same export with its dataset deleted after the first page: the stream is cut. */
static void test_export_pages_and_a_deleted_dataset(void **state) {
  (void)state;
  enum { N = 5000 };
  char **ids = malloc(N * sizeof *ids);
  float *loss = malloc(N * sizeof *loss);
  int32_t *label = malloc(N * sizeof *label);
  assert_true(ids && loss && label);
  for (int i = 0; i < N; i++) {
    ids[i] = malloc(16);
    snprintf(ids[i], 16, "s%05d", i);
    loss[i] = (float)(i % 7); /* ties, broken by id */
    label[i] = i % 4;
  }
  observe(2, "big", N, ids, loss, label);
  result r;
  run_export("big", QUERY("format", "csv"), &r);
  expect_stream(&r, "text/csv; charset=utf-8", "big.csv", "0");
  assert_int_equal(count_lines(r.body), N + 1);
  /* ranks 1..N, scores not increasing, ids increasing within a score, each id once */
  char *seen = calloc(N, 1);
  assert_non_null(seen);
  double last_score = INFINITY;
  char last_id[16] = "";
  const char *p = strchr(r.body, '\n') + 1;
  for (int rank = 1; rank <= N; rank++) {
    int got_rank, idn;
    double score;
    assert_int_equal(sscanf(p, "%d,s%d,%lf,", &got_rank, &idn, &score), 3);
    assert_int_equal(got_rank, rank);
    assert_true(idn >= 0 && idn < N && !seen[idn]);
    seen[idn] = 1;
    char id[16];
    snprintf(id, sizeof id, "s%05d", idn);
    assert_true(score <= last_score);
    if (score == last_score) assert_true(strcmp(id, last_id) > 0);
    assert_true(score == (double)(idn % 7));
    last_score = score;
    memcpy(last_id, id, sizeof id);
    p = strchr(p, '\n') + 1;
  }
  free(seen);
  result_free(&r);
  /* deleted while streaming */
  http_resp resp;
  start_export("big", QUERY("format", "jsonl"), &resp);
  char chunk[4096];
  assert_true(resp.stream(resp.stream_cls, chunk, sizeof chunk) > 0); /* the first page is written */
  int64_t samples = 0, observations = 0;
  st_apply_delete(map, 2, &samples, &observations);
  assert_int_equal(samples, N);
  long n;
  long total = 0;
  while ((n = resp.stream(resp.stream_cls, chunk, sizeof chunk)) > 0) total += n;
  assert_int_equal(n, -1); /* the rest of the first page, then a cut: never a clean end */
  assert_true(total > 0);
  resp.stream_free(resp.stream_cls);
  for (int i = 0; i < N; i++) free(ids[i]);
  free(ids);
  free(loss);
  free(label);
}

/* Training goes on while an export streams. 9000 samples, s00000 the hardest; after the first page (4096),
 * a batch reverses their ranking and 8000 new samples arrive, harder than all (more than the export's bitmap
 * of written samples covered when it began). Every sample is written exactly once: the first page as the
 * ranking was, then the new samples, then the rest in their new order. */
static void test_export_each_sample_once_while_batches_move_it(void **state) {
  (void)state;
  enum { N = 9000, NEW = 8000, PAGE = 4096 };
  char **ids = malloc((N + NEW) * sizeof *ids);
  float *loss = malloc((N + NEW) * sizeof *loss);
  int32_t *label = calloc(N + NEW, sizeof *label);
  assert_true(ids && loss && label);
  for (int i = 0; i < N + NEW; i++) {
    ids[i] = malloc(16);
    snprintf(ids[i], 16, "%c%05d", i < N ? 's' : 't', i < N ? i : i - N);
    loss[i] = (float)(N - i);
  }
  observe(2, "mv", N, ids, loss, label);
  http_resp resp;
  start_export("mv", QUERY("format", "csv"), &resp);
  size_t cap = 1 << 22, len = 0;
  char *body = malloc(cap);
  assert_non_null(body);
  long n = resp.stream(resp.stream_cls, body, 1000); /* the first page is written */
  assert_true(n > 0);
  len += (size_t)n;
  for (int i = 0; i < N; i++) loss[i] = (float)(10 * i); /* mean (N - i + 10 i) / 2: the order reversed */
  observe(2, "mv", N, ids, loss, label);
  for (int i = N; i < N + NEW; i++) loss[i] = (float)(1000000 - (i - N));
  observe(2, "mv", NEW, ids + N, loss + N, label + N);
  while ((n = resp.stream(resp.stream_cls, body + len, 1000)) > 0) {
    len += (size_t)n;
    if (cap - len < 1001) {
      cap *= 2;
      body = realloc(body, cap);
      assert_non_null(body);
    }
  }
  assert_int_equal(n, 0);
  body[len] = '\0';
  resp.stream_free(resp.stream_cls);
  assert_int_equal(count_lines(body), N + NEW + 1);
  /* the order expected: s00000..s04095, then t00000..t07999, then s08999 down to s04096 */
  const char *p = strchr(body, '\n') + 1;
  for (int rank = 1; rank <= N + NEW; rank++) {
    int got_rank, idn;
    char kind;
    assert_int_equal(sscanf(p, "%d,%c%d,", &got_rank, &kind, &idn), 3);
    assert_int_equal(got_rank, rank);
    const int want = rank <= PAGE ? rank - 1 : rank <= PAGE + NEW ? N + rank - 1 - PAGE : N - 1 - (rank - 1 - PAGE - NEW);
    assert_int_equal(kind == 't' ? N + idn : idn, want);
    p = strchr(p, '\n') + 1;
  }
  free(body);
  for (int i = 0; i < N + NEW; i++) free(ids[i]);
  free(ids);
  free(loss);
  free(label);
}

/* 300 samples with 60 KB of meta each, exported as jsonl (which carries the meta) and as a queue: the
 * export's page buffer stays near EXPORT_PAGE_BYTES (it would hold all 300, 18 MB, at once), and every
 * sample is written once, in order. */
static void test_export_page_bytes_are_bounded(void **state) {
  (void)state;
  enum { N = 300, META = 60000 };
  char *ids[N];
  float loss[N];
  int32_t label[N];
  for (int i = 0; i < N; i++) {
    ids[i] = malloc(16);
    snprintf(ids[i], 16, "b%03d", i);
    loss[i] = (float)(N - i);
    label[i] = 0;
  }
  observe(2, "big", N, ids, loss, label);
  st_dataset *ds = st_w_find(map, 2);
  char *pad = malloc(META + 1);
  memset(pad, 'y', META);
  pad[META] = '\0';
  for (int i = 0; i < N; i++) {
    char *m = malloc(META + 32);
    snprintf(m, META + 32, "{\"note\":\"%s\"}", pad);
    st_apply_meta(ds, (uint32_t)st_key(ds, ids[i]), m, seq);
  }
  free(pad);
  const char *const *queries[] = {QUERY("format", "jsonl"), QUERY("format", "jsonl", "run", "*")};
  for (size_t t = 0; t < sizeof queries / sizeof queries[0]; t++) {
    http_resp resp;
    start_export("big", queries[t], &resp);
    const export *e = resp.stream_cls;
    size_t cap = (size_t)N * (META + 1024), len = 0, peak = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    long n;
    while ((n = resp.stream(resp.stream_cls, body + len, 1 << 16)) > 0) {
      len += (size_t)n;
      assert_true(cap - len >= 1 << 16);
      if (e->page.cap > peak) peak = e->page.cap;
    }
    assert_int_equal(n, 0);
    body[len] = '\0';
    /* each sample once, in order: b000 (the hardest) first */
    const char *p = body;
    for (int i = 0; i < N; i++) {
      int idn = -1;
      assert_int_equal(sscanf(p, "{\"id\":\"b%d\"", &idn), 1);
      assert_int_equal(idn, i);
      p = strchr(p, '\n');
      assert_non_null(p);
      p++;
    }
    assert_int_equal(*p, '\0');
    free(body);
    assert_true(peak <= 2 * EXPORT_PAGE_BYTES);
    resp.stream_free(resp.stream_cls);
  }
  for (int i = 0; i < N; i++) free(ids[i]);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_export_csv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_jsonl, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_label_studio, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_fiftyone, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_ohif, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_queue, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_refusals_before_the_first_byte, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_pages_and_a_deleted_dataset, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_each_sample_once_while_batches_move_it, setup, teardown),
      cmocka_unit_test_setup_teardown(test_export_page_bytes_are_bounded, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
