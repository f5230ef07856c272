/* api.c — the handlers behind focald's routes.
 *
 * Scoring routes decode and check the whole request on the HTTP thread, then
 * hand a job to the scoring pool (work.c) and suspend until it completes;
 * queries read the in-memory state under the dataset's read lock and write
 * their JSON directly (the responses are large arrays of numbers: building a
 * jansson tree for them would cost more than the query).
 */
#include "api.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binary.h"
#include "decode.h"
#include "job.h"
#include "numfmt.h"
#include "log.h"
#include "store.h"
#include "work.h"

#ifndef FOCALD_VERSION
#define FOCALD_VERSION "0.1.0"
#endif

extern const char focald_openapi[];
extern const size_t focald_openapi_len;

static config cfg;
static st_map *map;
static struct store *the_store;

void api_init(const config *c, st_map *m, struct store *s) {
  cfg = *c;
  map = m;
  the_store = s;
}

/* ------------------------------------------------------------------ JSON writing */

typedef struct out {
  char *b;
  size_t len, cap;
} out;

#define W(o, ...) buf_printf(&(o)->b, &(o)->len, &(o)->cap, __VA_ARGS__)

/* Makes room for n more bytes (and a NUL). Returns 0 or -1. */
static int out_reserve(out *o, size_t n) {
  if (o->b && o->cap - o->len > n) return 0;
  size_t want = o->cap ? o->cap : 4096;
  while (want - o->len <= n) want *= 2;
  char *nb = realloc(o->b, want);
  if (!nb) return -1;
  o->b = nb;
  o->cap = want;
  return 0;
}

/* Appends a literal: the number arrays' separators, without printf. */
static void w_lit(out *o, const char *s) {
  size_t n = strlen(s);
  if (out_reserve(o, n) != 0) return;
  memcpy(o->b + o->len, s, n + 1);
  o->len += n;
}

static void w_str(out *o, const char *s) {
  W(o, "\"");
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') W(o, "\\%c", ch);
    else if (ch < 0x20) W(o, "\\u%04x", ch);
    else {
      /* copy a run of plain bytes at once */
      const char *start = s;
      while (s[1] && (unsigned char)s[1] >= 0x20 && s[1] != '"' && s[1] != '\\') s++;
      W(o, "%.*s", (int)(s - start + 1), start);
    }
  }
  W(o, "\"");
}

/* A number as JSON: as float32 with 9 significant digits (every value focald
 * reports is float32 data); non-finite is null. */
static void w_num(out *o, double v) {
  if (!isfinite(v) || fabs(v) > FLT_MAX) {
    w_lit(o, "null");
    return;
  }
  if (out_reserve(o, 32) != 0) return;
  o->len += (size_t)num_format_f32(o->b + o->len, (float)v);
}

static void w_time(out *o, int64_t unix_s) {
  time_t t = (time_t)unix_s;
  struct tm tm;
  char s[32];
  gmtime_r(&t, &tm);
  strftime(s, sizeof s, "%Y-%m-%dT%H:%M:%SZ", &tm);
  W(o, "\"%s\"", s);
}

static int done_json(http_resp *resp, int status, out *o) {
  return http_json(resp, status, o->b ? o->b : strdup("{}"));
}

static int fail(http_resp *resp, const http_req *rq, problem_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(http_resp *resp, const http_req *rq, problem_code code, const char *field, const char *fmt, ...) {
  problem p;
  va_list ap;
  p.code = code;
  snprintf(p.field, sizeof p.field, "%s", field ? field : "");
  va_start(ap, fmt);
  vsnprintf(p.detail, sizeof p.detail, fmt, ap);
  va_end(ap);
  return http_problem(resp, rq, &p);
}

/* ------------------------------------------------------------------ health, documents, metrics */

static int h_livez(http_req *rq, http_resp *resp) {
  (void)rq;
  return http_json(resp, 200, strdup("{\"status\":\"ok\"}"));
}

static int h_readyz(http_req *rq, http_resp *resp) {
  switch (http_readiness()) {
  case HTTP_READY: return http_json(resp, 200, strdup("{\"status\":\"ready\"}"));
  case HTTP_STARTING: return fail(resp, rq, P_STARTING, NULL, "loading the database; not accepting work yet");
  default: return fail(resp, rq, P_DRAINING, NULL, "shutting down; not accepting work");
  }
}

static int h_openapi(http_req *rq, http_resp *resp) {
  (void)rq;
  resp->status = 200;
  resp->content_type = "application/json";
  resp->body = malloc(focald_openapi_len + 1);
  if (!resp->body) return fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  memcpy(resp->body, focald_openapi, focald_openapi_len);
  resp->len = focald_openapi_len;
  return 0;
}

typedef struct totals {
  uint64_t datasets, samples, observations;
} totals;

static void add_totals(st_dataset *ds, void *arg) {
  totals *t = arg;
  t->datasets++;
  t->samples += ds->nsamples;
  for (int r = 0; r < ds->nruns; r++) t->observations += ds->runs[r]->observations;
}

static int h_metrics(http_req *rq, http_resp *resp) {
  (void)rq;
  out o = {0};
  totals t = {0};
  store_stats ss;
  st_map_each(map, add_totals, &t);
  store_get_stats(the_store, &ss);
  W(&o, "# HELP focald_build_info focald's version and the loss kernels' instruction set.\n"
        "# TYPE focald_build_info gauge\n"
        "focald_build_info{version=\"%s\",isa=\"%s\"} 1\n", FOCALD_VERSION, fl_isa());
  W(&o, "# HELP focald_ready Whether focald accepts work (1) or is starting or draining (0).\n"
        "# TYPE focald_ready gauge\nfocald_ready %d\n", http_readiness() == HTTP_READY);
  http_metrics_write(&o.b, &o.len, &o.cap);
  W(&o, "# HELP focald_samples_committed_total Samples of committed batches (duplicates excluded).\n"
        "# TYPE focald_samples_committed_total counter\nfocald_samples_committed_total %llu\n",
    (unsigned long long)ss.committed_samples);
  W(&o, "# HELP focald_commits_total Database commits of the writer (one per group of batches).\n"
        "# TYPE focald_commits_total counter\nfocald_commits_total %llu\n", (unsigned long long)ss.commits);
  W(&o, "# HELP focald_committed_ops_total Writes committed (batches, deletions).\n"
        "# TYPE focald_committed_ops_total counter\nfocald_committed_ops_total %llu\n", (unsigned long long)ss.committed_ops);
  W(&o, "# HELP focald_commit_seconds_total Time spent committing groups.\n"
        "# TYPE focald_commit_seconds_total counter\nfocald_commit_seconds_total %.6f\n", ss.commit_seconds_total);
  W(&o, "# HELP focald_queue_depth Batches being scored or waiting for the writer.\n"
        "# TYPE focald_queue_depth gauge\nfocald_queue_depth %d\n", work_inflight());
  W(&o, "# HELP focald_writer_queue_depth Writes waiting for the writer thread.\n"
        "# TYPE focald_writer_queue_depth gauge\nfocald_writer_queue_depth %d\n", ss.queue_depth);
  W(&o, "# HELP focald_database_bytes Size of the SQLite database file and its WAL.\n"
        "# TYPE focald_database_bytes gauge\nfocald_database_bytes{file=\"db\"} %lld\nfocald_database_bytes{file=\"wal\"} %lld\n",
    (long long)ss.db_bytes, (long long)ss.wal_bytes);
  W(&o, "# HELP focald_datasets Datasets held.\n# TYPE focald_datasets gauge\nfocald_datasets %llu\n",
    (unsigned long long)t.datasets);
  W(&o, "# HELP focald_samples Samples tracked over all datasets.\n# TYPE focald_samples gauge\nfocald_samples %llu\n",
    (unsigned long long)t.samples);
  W(&o, "# HELP focald_observations Observations recorded over all datasets and runs.\n"
        "# TYPE focald_observations gauge\nfocald_observations %llu\n", (unsigned long long)t.observations);
  resp->status = 200;
  resp->content_type = "text/plain; version=0.0.4";
  resp->body = o.b;
  resp->len = o.len;
  return 0;
}

/* ------------------------------------------------------------------ scoring */

static void job_cleanup(http_req *rq) {
  job_free(rq->async);
  rq->async = NULL;
}

static void job_done(wop *op) {
  http_complete(op->ctx);
}

typedef struct idx_loss {
  int64_t i;
  float loss;
} idx_loss;

static int cmp_hardest(const void *a, const void *b) {
  const idx_loss *x = a, *y = b;
  if (x->loss != y->loss) return x->loss > y->loss ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

static void w_score_array(out *o, const char *name, const job *j, int which) {
  W(o, "\"%s\":[", name);
  for (int64_t i = 0; i < j->rq.n; i++) {
    const fl_score *s = &j->scores[i];
    if (i) w_lit(o, ",");
    if (s->rows == 0 && which != 8) {
      w_lit(o, "null");
      continue;
    }
    switch (which) {
    case 0: w_num(o, s->p_t); break;
    case 1: w_num(o, s->p_max); break;
    case 2: w_num(o, s->margin); break;
    case 3: w_num(o, s->norm_margin); break;
    case 4: w_num(o, s->entropy); break;
    case 5: w_num(o, s->cw_entropy); break;
    case 6: w_num(o, s->el2n); break;
    case 7: w_num(o, s->correct); break;
    default:
      if (s->pred < 0) w_lit(o, "null");
      else w_num(o, s->pred);
    }
  }
  W(o, "]");
}

/* Indices of the k largest losses, largest first (ties by index); malloc'd. */
static int64_t *hardest(const job *j, int64_t k) {
  const req *r = &j->rq;
  if (k <= 0) return NULL;
  idx_loss *v = malloc((size_t)r->n * sizeof *v);
  int64_t *idx = malloc((size_t)k * sizeof *idx);
  if (!v || !idx) {
    free(v);
    free(idx);
    return NULL;
  }
  for (int64_t i = 0; i < r->n; i++) v[i] = (idx_loss){i, j->loss[i]};
  qsort(v, (size_t)r->n, sizeof *v, cmp_hardest);
  for (int64_t i = 0; i < k; i++) idx[i] = v[i].i;
  free(v);
  return idx;
}

/* Builds the scoring response once the job is done. */
static int finish_scoring(http_req *rq, http_resp *resp) {
  job *j = rq->async;
  if (j->op.failed) return http_problem(resp, rq, &j->op.err);
  const req *r = &j->rq;
  double sum = 0;
  for (int64_t i = 0; i < r->n; i++) sum += j->loss[i];
  int64_t *top = hardest(j, r->ohem_k);
  int64_t ntop = top ? r->ohem_k : 0;
  if (r->binary_response) {
    bin_result res = {j->store ? j->op.dataset : NULL, j->store ? r->run : NULL, r->n, j->duplicate, sum / (double)r->n,
                      j->loss, j->scores, top, ntop, r->outputs};
    size_t hl = 0;
    int rc = bin_response(&res, &resp->body, &resp->len, &hl);
    free(top);
    if (rc != 0) return fail(resp, rq, P_INTERNAL, NULL, "out of memory building the response");
    char v[32];
    snprintf(v, sizeof v, "%zu", hl);
    resp->status = 200;
    resp->content_type = "application/octet-stream";
    http_header(resp, "Inference-Header-Content-Length", v);
    return 0;
  }
  out o = {0};
  W(&o, "{\"dataset\":");
  if (j->store) w_str(&o, j->op.dataset);
  else W(&o, "null");
  W(&o, ",\"run\":");
  if (j->store) w_str(&o, r->run);
  else W(&o, "null");
  W(&o, ",\"batch_id\":");
  if (r->has_batch_id) w_str(&o, r->batch_id);
  else W(&o, "null");
  W(&o, ",\"accepted\":%" PRId64 ",\"duplicate\":%s,\"loss\":", r->n, j->duplicate ? "true" : "false");
  w_num(&o, sum / (double)r->n);
  W(&o, ",\"losses\":[");
  for (int64_t i = 0; i < r->n; i++) {
    if (i) w_lit(&o, ",");
    w_num(&o, j->loss[i]);
  }
  W(&o, "],\"scores\":{");
  static const char *const names[] = {"p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred"};
  for (int k = 0; k < 9; k++) {
    if (k) W(&o, ",");
    w_score_array(&o, names[k], j, k);
  }
  W(&o, "},\"hardest\":[");
  for (int64_t i = 0; i < ntop; i++) W(&o, "%s%" PRId64, i ? "," : "", top[i]);
  W(&o, "]}");
  free(top);
  return done_json(resp, 200, &o);
}

/* Decodes, then hands the job over; store says whether to record it. */
static int score(http_req *rq, http_resp *resp, int store_it) {
  if (http_readiness() == HTTP_STARTING) return fail(resp, rq, P_STARTING, NULL, "loading the database; retry shortly");
  if (http_readiness() == HTTP_DRAINING) return fail(resp, rq, P_DRAINING, NULL, "shutting down; not accepting batches");
  job *j = calloc(1, sizeof *j);
  if (!j) return fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  problem err;
  if (store_it) {
    if (!name_ok(rq->params[0])) {
      free(j);
      return fail(resp, rq, P_BAD_NAME, "", "dataset name \"%.80s\" is not 1 to 64 characters from A-Z a-z 0-9 . _ -",
                  rq->params[0]);
    }
    snprintf(j->op.dataset, sizeof j->op.dataset, "%.64s", rq->params[0]);
  }
  int rc;
  if (rq->content_type && strncasecmp(rq->content_type, "application/octet-stream", 24) == 0) {
    const char *accept = http_request_header(rq, "Accept");
    int accept_binary = accept && strstr(accept, "application/octet-stream") != NULL;
    rc = dec_binary(&j->rq, rq->body, rq->len, rq->inference_header_length, store_it, accept_binary, &err);
  } else {
    rc = dec_json(&j->rq, rq->body, rq->len, store_it, &err);
  }
  if (rc != 0) {
    free(j);
    return http_problem(resp, rq, &err);
  }
  j->loss = malloc((size_t)j->rq.n * sizeof *j->loss);
  j->scores = calloc((size_t)j->rq.n, sizeof *j->scores);
  if (!j->loss || !j->scores) {
    job_free(j);
    return fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  }
  j->store = store_it;
  j->op.kind = WOP_BATCH;
  j->op.done = job_done;
  j->op.ctx = rq;
  rq->async = j;
  rq->finish = finish_scoring;
  rq->cleanup = job_cleanup;
  http_suspend(rq);
  if (work_submit(j) != 0) {
    j->op.failed = 1; /* overloaded or draining: err is set */
    http_complete(rq);
  }
  return HTTP_ASYNC;
}

static int h_batches(http_req *rq, http_resp *resp) {
  return score(rq, resp, 1);
}

static int h_loss(http_req *rq, http_resp *resp) {
  return score(rq, resp, 0);
}

/* ------------------------------------------------------------------ history as JSON */

static void w_history(out *o, const hist_view *h) {
  W(o, "\"seen\":");
  w_num(o, h->seen);
  W(o, ",\"last_loss\":");
  w_num(o, h->last_loss);
  W(o, ",\"mean_loss\":");
  w_num(o, h->mean_loss);
  W(o, ",\"max_loss\":");
  w_num(o, h->max_loss);
  W(o, ",\"ema_loss\":");
  w_num(o, h->ema_loss);
  W(o, ",\"confidence\":");
  w_num(o, h->confidence);
  W(o, ",\"variability\":");
  w_num(o, h->variability);
  W(o, ",\"correctness\":");
  w_num(o, h->correctness);
  W(o, ",\"forgetting\":");
  w_num(o, h->forgetting);
  W(o, ",\"aum\":");
  w_num(o, h->aum);
  if (h->has_step) W(o, ",\"first_step\":%" PRId64 ",\"last_step\":%" PRId64, h->first_step, h->last_step);
  else W(o, ",\"first_step\":null,\"last_step\":null");
  if (h->label >= 0) W(o, ",\"label\":%d", h->label);
  else W(o, ",\"label\":null");
  W(o, ",\"label_issue\":%s", h->label_issue ? "true" : "false");
}

static void w_sample_tail(out *o, const st_dataset *ds, uint32_t key) {
  W(o, ",\"status\":\"%s\",\"meta\":%s", st_status_name(ds->status[key]), ds->meta[key] ? ds->meta[key] : "{}");
}

/* ------------------------------------------------------------------ hard examples */

/* The cursor: hex of "v1|by|run|label|min_seen|status|rank|score|id". Opaque to clients. */
static void make_cursor(char *outb, size_t n, const char *plain) {
  size_t j = 0;
  for (const unsigned char *p = (const unsigned char *)plain; *p && j + 3 < n; p++) j += (size_t)snprintf(outb + j, n - j, "%02x", *p);
  outb[j] = '\0';
}

static int read_cursor(const char *hex, char *plain, size_t n) {
  size_t l = strlen(hex);
  if (l % 2 || l / 2 >= n) return -1;
  for (size_t i = 0; i < l / 2; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1) return -1;
    plain[i] = (char)v;
  }
  plain[l / 2] = '\0';
  return 0;
}

static int parse_int_param(const char *s, long long lo, long long hi, long long *v) {
  char *end;
  if (!s || !*s) return -1;
  long long x = strtoll(s, &end, 10);
  if (*end || x < lo || x > hi) return -1;
  *v = x;
  return 0;
}

/* Parses a comma-separated list of statuses into a bit mask. */
static int parse_status_mask(const char *s, uint32_t *mask) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  *mask = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    int st = st_status_parse(tok);
    if (st < 0) return -1;
    *mask |= 1u << st;
  }
  return *mask ? 0 : -1;
}

static int h_hard_examples(http_req *rq, http_resp *resp) {
  char qb[6][400];
  st_query q = {0};
  long long v;
  const char *by = http_query(rq, "by", qb[0], sizeof qb[0]);
  const char *ks = http_query(rq, "k", qb[1], sizeof qb[1]);
  const char *run = http_query(rq, "run", qb[2], sizeof qb[2]);
  const char *label = http_query(rq, "label", qb[3], sizeof qb[3]);
  const char *min_seen = http_query(rq, "min_seen", qb[4], sizeof qb[4]);
  const char *status = http_query(rq, "status", qb[5], sizeof qb[5]);
  char cursor_buf[900], cursor_plain[600];
  const char *cursor = http_query(rq, "cursor", cursor_buf, sizeof cursor_buf);
  q.by = HF_MEAN_LOSS;
  if (by && (q.by = hist_field_parse(by)) < 0)
    return fail(resp, rq, P_BAD_QUERY, "by", "by must be one of seen, last_loss, mean_loss, max_loss, ema_loss, "
                                             "confidence, variability, correctness, forgetting, aum");
  q.k = 100;
  if (ks) {
    if (parse_int_param(ks, 1, 10000, &v)) return fail(resp, rq, P_BAD_QUERY, "k", "k must be an integer from 1 to 10000");
    q.k = (int)v;
  }
  if (!run || strcmp(run, "*") == 0) run = "*";
  else if (!name_ok(run)) return fail(resp, rq, P_BAD_QUERY, "run", "run must be a run name or *");
  if (label) {
    if (parse_int_param(label, 0, INT32_MAX, &v)) return fail(resp, rq, P_BAD_QUERY, "label", "label must be a class index >= 0");
    q.has_label = 1;
    q.label = (int32_t)v;
  }
  q.min_seen = 1;
  if (min_seen) {
    if (parse_int_param(min_seen, 1, UINT32_MAX, &v)) return fail(resp, rq, P_BAD_QUERY, "min_seen", "min_seen must be an integer >= 1");
    q.min_seen = (uint32_t)v;
  }
  if (status && parse_status_mask(status, &q.status_mask))
    return fail(resp, rq, P_BAD_QUERY, "status", "status must be a comma-separated list of open, queued, in_review, relabelled, confirmed, dismissed");
  /* what identifies this query: a cursor is only good for the same one */
  char fingerprint[300];
  snprintf(fingerprint, sizeof fingerprint, "v1|%d|%s|%s|%u|%u", q.by, run, label ? label : "", q.min_seen, q.status_mask);
  long long rank0 = 0;
  char cursor_id[REQ_ID_MAX + 1] = "";
  if (cursor) {
    char *parts[3];
    size_t fl = strlen(fingerprint);
    if (read_cursor(cursor, cursor_plain, sizeof cursor_plain) || strncmp(cursor_plain, fingerprint, fl) != 0 ||
        cursor_plain[fl] != '|')
      return fail(resp, rq, P_BAD_QUERY, "cursor", "the cursor is malformed or belongs to a different query");
    char *rest = cursor_plain + fl + 1;
    parts[0] = strsep(&rest, "|");
    parts[1] = strsep(&rest, "|");
    parts[2] = rest;
    if (!parts[0] || !parts[1] || !parts[2] || parse_int_param(parts[0], 0, INT64_MAX, &rank0))
      return fail(resp, rq, P_BAD_QUERY, "cursor", "the cursor is malformed");
    q.has_cursor = 1;
    q.cursor_score = strtod(parts[1], NULL);
    snprintf(cursor_id, sizeof cursor_id, "%s", parts[2]);
    q.cursor_id = cursor_id;
  }
  /* one more than asked: whether it exists decides next_cursor */
  const int asked = q.k;
  q.k = asked + 1;
  st_hit *hits = malloc((size_t)q.k * sizeof *hits);
  if (!hits) return fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  st_dataset *ds = st_dataset_acquire(map, rq->params[0]);
  if (!ds) {
    free(hits);
    return fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  }
  if (strcmp(run, "*") != 0 && !(q.run = st_find_run(ds, run))) {
    st_dataset_release(ds);
    free(hits);
    return fail(resp, rq, P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", rq->params[0], run);
  }
  int n = st_top(ds, &q, hits);
  const int more = n > asked;
  if (more) n = asked;
  out o = {0};
  W(&o, "{\"dataset\":");
  w_str(&o, ds->name);
  W(&o, ",\"run\":");
  w_str(&o, run);
  W(&o, ",\"by\":\"%s\",\"order\":\"%s\",\"items\":[", hist_field_name((hist_field)q.by),
    hist_field_descending((hist_field)q.by) ? "desc" : "asc");
  for (int i = 0; i < n; i++) {
    hist_view h;
    if (q.run) {
      hist_rec rec;
      st_history(q.run, hits[i].key, &rec);
      hist_view_of(&rec, &h);
    } else {
      st_history_all(ds, hits[i].key, &h);
    }
    W(&o, "%s{\"id\":", i ? "," : "");
    w_str(&o, ds->ids[hits[i].key]);
    W(&o, ",\"rank\":%lld,\"score\":", rank0 + i + 1);
    w_num(&o, hits[i].score);
    W(&o, ",");
    w_history(&o, &h);
    w_sample_tail(&o, ds, hits[i].key);
    W(&o, "}");
  }
  W(&o, "],\"next_cursor\":");
  if (more) {
    char plain[700], hex[1500];
    snprintf(plain, sizeof plain, "%s|%lld|%.17g|%s", fingerprint, rank0 + n, hits[n - 1].score, ds->ids[hits[n - 1].key]);
    make_cursor(hex, sizeof hex, plain);
    W(&o, "\"%s\"", hex);
  } else {
    W(&o, "null");
  }
  W(&o, "}");
  st_dataset_release(ds);
  free(hits);
  return done_json(resp, 200, &o);
}

/* ------------------------------------------------------------------ datasets */

static uint64_t ds_observations(const st_dataset *ds) {
  uint64_t n = 0;
  for (int r = 0; r < ds->nruns; r++) n += ds->runs[r]->observations;
  return n;
}

typedef struct list_ctx {
  out *o;
  int n;
} list_ctx;

static void list_one(st_dataset *ds, void *arg) {
  list_ctx *c = arg;
  W(c->o, "%s{\"name\":", c->n++ ? "," : "");
  w_str(c->o, ds->name);
  W(c->o, ",\"samples\":%u,\"observations\":%llu,\"runs\":%d,\"created_at\":", ds->nsamples,
    (unsigned long long)ds_observations(ds), ds->nruns);
  w_time(c->o, ds->created_at);
  W(c->o, "}");
}

static int h_datasets(http_req *rq, http_resp *resp) {
  (void)rq;
  out o = {0};
  list_ctx c = {&o, 0};
  W(&o, "{\"datasets\":[");
  st_map_each(map, list_one, &c);
  W(&o, "]}");
  return done_json(resp, 200, &o);
}

static int h_dataset(http_req *rq, http_resp *resp) {
  st_dataset *ds = st_dataset_acquire(map, rq->params[0]);
  if (!ds) return fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  out o = {0};
  W(&o, "{\"name\":");
  w_str(&o, ds->name);
  W(&o, ",\"samples\":%u,\"observations\":%llu,\"created_at\":", ds->nsamples, (unsigned long long)ds_observations(ds));
  w_time(&o, ds->created_at);
  W(&o, ",\"runs\":[");
  static const double ps[4] = {0.5, 0.9, 0.99, 1.0};
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    double qv[4];
    st_loss_quantiles(r, ds->nsamples, ps, 4, qv);
    W(&o, "%s{\"name\":", i ? "," : "");
    w_str(&o, r->name);
    W(&o, ",\"samples\":%u,\"observations\":%llu,\"classes\":%d,\"last_step\":", r->samples,
      (unsigned long long)r->observations, r->classes);
    if (r->has_last_step_any) W(&o, "%" PRId64, r->last_step_any);
    else W(&o, "null");
    W(&o, ",\"loss_quantiles\":{\"p50\":");
    w_num(&o, qv[0]);
    W(&o, ",\"p90\":");
    w_num(&o, qv[1]);
    W(&o, ",\"p99\":");
    w_num(&o, qv[2]);
    W(&o, ",\"max\":");
    w_num(&o, qv[3]);
    W(&o, "}}");
  }
  W(&o, "]}");
  st_dataset_release(ds);
  return done_json(resp, 200, &o);
}

static void wop_cleanup(http_req *rq) {
  free(rq->async);
  rq->async = NULL;
}

static void wop_done(wop *op) {
  http_complete(op->ctx);
}

static int finish_delete(http_req *rq, http_resp *resp) {
  wop *op = rq->async;
  if (op->failed) return http_problem(resp, rq, &op->err);
  out o = {0};
  W(&o, "{\"deleted\":");
  w_str(&o, op->dataset);
  W(&o, ",\"samples\":%lld,\"observations\":%lld}", (long long)op->deleted_samples, (long long)op->deleted_observations);
  return done_json(resp, 200, &o);
}

static int h_dataset_delete(http_req *rq, http_resp *resp) {
  if (!name_ok(rq->params[0])) return fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  if (http_readiness() != HTTP_READY) return fail(resp, rq, P_DRAINING, NULL, "not accepting changes now");
  wop *op = calloc(1, sizeof *op);
  if (!op) return fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  op->kind = WOP_DELETE_DATASET;
  snprintf(op->dataset, sizeof op->dataset, "%.64s", rq->params[0]);
  op->done = wop_done;
  op->ctx = rq;
  rq->async = op;
  rq->finish = finish_delete;
  rq->cleanup = wop_cleanup;
  http_suspend(rq);
  store_submit(the_store, op);
  return HTTP_ASYNC;
}

/* ------------------------------------------------------------------ samples */

static void w_run_history(out *o, const st_run *r, uint32_t key) {
  hist_rec rec;
  hist_view h;
  st_history(r, key, &rec);
  hist_view_of(&rec, &h);
  W(o, "{\"run\":");
  w_str(o, r->name);
  W(o, ",");
  w_history(o, &h);
  W(o, ",\"recent\":[");
  if (key < r->cap) {
    int count = r->ring_count[key], head = r->ring_head[key];
    for (int i = 0; i < count; i++) {
      /* newest first */
      const hist_recent *e = &r->recent[(size_t)key * HIST_RECENT + (size_t)((head - 1 - i + 2 * HIST_RECENT) % HIST_RECENT)];
      int64_t step, epoch;
      W(o, "%s{\"step\":", i ? "," : "");
      if (hist_recent_step(e, &step)) W(o, "%" PRId64, step);
      else W(o, "null");
      W(o, ",\"epoch\":");
      if (hist_recent_epoch(e, &epoch)) W(o, "%" PRId64, epoch);
      else W(o, "null");
      W(o, ",\"loss\":");
      w_num(o, e->loss);
      W(o, ",\"p_t\":");
      w_num(o, fabsf(e->p_t_signed));
      W(o, ",\"correct\":%s}", signbit(e->p_t_signed) ? "true" : "false");
    }
  }
  W(o, "]}");
}

static int h_sample(http_req *rq, http_resp *resp) {
  char rb[128];
  const char *run = http_query(rq, "run", rb, sizeof rb);
  st_dataset *ds = st_dataset_acquire(map, rq->params[0]);
  if (!ds) return fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  int64_t key = st_sample_key(ds, rq->params[1]);
  if (key < 0) {
    st_dataset_release(ds);
    return fail(resp, rq, P_SAMPLE_NOT_FOUND, NULL, "dataset \"%.80s\" has no sample \"%.80s\"", rq->params[0], rq->params[1]);
  }
  const st_run *only = NULL;
  if (run && !(only = st_find_run(ds, run))) {
    st_dataset_release(ds);
    return fail(resp, rq, P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", rq->params[0], run);
  }
  out o = {0};
  W(&o, "{\"id\":");
  w_str(&o, ds->ids[key]);
  W(&o, ",\"dataset\":");
  w_str(&o, ds->name);
  w_sample_tail(&o, ds, (uint32_t)key);
  W(&o, ",\"runs\":[");
  int n = 0;
  for (int i = 0; i < ds->nruns; i++) {
    const st_run *r = ds->runs[i];
    if (only && r != only) continue;
    if (!only && ((uint32_t)key >= r->cap || r->seen[key] == 0)) continue;
    if (n++) W(&o, ",");
    w_run_history(&o, r, (uint32_t)key);
  }
  W(&o, "]}");
  st_dataset_release(ds);
  return done_json(resp, 200, &o);
}

/* ------------------------------------------------------------------ the route table */

const api_route api_routes[] = {
    {"GET", "/livez", h_livez, API_BODY_NONE},
    {"GET", "/readyz", h_readyz, API_BODY_NONE},
    {"GET", "/metrics", h_metrics, API_BODY_NONE},
    {"GET", "/openapi.json", h_openapi, API_BODY_NONE},
    {"POST", "/v1/loss", h_loss, API_BODY_BINARY},
    {"GET", "/v1/datasets", h_datasets, API_BODY_NONE},
    {"GET", "/v1/datasets/{dataset}", h_dataset, API_BODY_NONE},
    {"DELETE", "/v1/datasets/{dataset}", h_dataset_delete, API_BODY_NONE},
    {"POST", "/v1/datasets/{dataset}/batches", h_batches, API_BODY_BINARY},
    {"GET", "/v1/datasets/{dataset}/hard-examples", h_hard_examples, API_BODY_NONE},
    {"GET", "/v1/datasets/{dataset}/samples/{id}", h_sample, API_BODY_NONE},
};
const int api_route_count = (int)(sizeof api_routes / sizeof api_routes[0]);
