/* api.c — the route table and the handlers of health, metrics, scoring, datasets and samples.
 *
 * Scoring routes decode and check the whole request on the HTTP thread, then
 * hand a job to the scoring pool (work.c) and suspend until it completes;
 * queries read the in-memory state under the dataset's read lock and write
 * their JSON directly (the responses are large arrays of numbers: building a
 * jansson tree for them would cost more than the query). The table ends the
 * file: main.c gives it to the HTTP layer, which knows no route of its own.
 */
#include "api.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api_internal.h"
#include "binary.h"
#include "decode.h"
#include "faultpoint.h"
#include "job.h"
#include "numfmt.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "work.h"

extern const char focald_openapi[];
extern const size_t focald_openapi_len;

/* Body bytes and samples of the scoring requests decoded, by body format: [0] JSON, [1] binary. */
static atomic_ullong ingested_bytes[2], ingested_samples[2];

/* ------------------------------------------------------------------ health, documents, metrics */

static int h_livez(http_req *rq, http_resp *resp) {
  (void)rq;
  return http_json(resp, 200, strdup("{\"status\":\"ok\"}"));
}

static int h_readyz(http_req *rq, http_resp *resp) {
  const int64_t stuck = store_stuck_position(api_store);
  switch (http_readiness()) {
  case HTTP_READY:
    if (stuck)
      return api_fail(resp, rq, P_STORE_UNAVAILABLE, NULL,
                      "this node cannot apply the cluster's log at position %lld and stores no write: start it "
                      "again with an empty --db", (long long)stuck);
    return http_json(resp, 200, strdup("{\"status\":\"ready\"}"));
  case HTTP_STARTING: return api_fail(resp, rq, P_STARTING, NULL, "loading the database; not accepting work yet");
  default: return api_fail(resp, rq, P_DRAINING, NULL, "shutting down; not accepting work");
  }
}

static int h_openapi(http_req *rq, http_resp *resp) {
  (void)rq;
  resp->status = 200;
  resp->content_type = "application/json";
  resp->body = malloc(focald_openapi_len + 1);
  if (!resp->body) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  memcpy(resp->body, focald_openapi, focald_openapi_len);
  resp->len = focald_openapi_len;
  return 0;
}

static int h_metrics(http_req *rq, http_resp *resp) {
  (void)rq;
  jw o = {0};
  st_totals t;
  store_stats ss;
  st_map_totals(api_map, &t);
  store_get_stats(api_store, &ss);
  JW(&o, "# HELP focald_build_info focald's version and the loss kernels' instruction set.\n"
        "# TYPE focald_build_info gauge\n"
        "focald_build_info{version=\"%s\",isa=\"%s\"} 1\n", FOCALD_VERSION, fl_isa());
  JW(&o, "# HELP focald_ready Whether focald accepts work (1) or is starting, draining, or a cluster node that cannot apply the log (0).\n"
        "# TYPE focald_ready gauge\nfocald_ready %d\n",
     http_readiness() == HTTP_READY && !store_stuck_position(api_store));
  http_metrics_write(&o);
  static const char *const formats[2] = {"json", "binary"};
  JW(&o, "# HELP focald_ingested_bytes_total Body bytes of scoring requests that were decoded, by body format.\n"
        "# TYPE focald_ingested_bytes_total counter\n");
  for (int f = 0; f < 2; f++)
    JW(&o, "focald_ingested_bytes_total{format=\"%s\"} %llu\n", formats[f], atomic_load(&ingested_bytes[f]));
  JW(&o, "# HELP focald_ingested_samples_total Samples of scoring requests that were decoded, by body format.\n"
        "# TYPE focald_ingested_samples_total counter\n");
  for (int f = 0; f < 2; f++)
    JW(&o, "focald_ingested_samples_total{format=\"%s\"} %llu\n", formats[f], atomic_load(&ingested_samples[f]));
  http_body_metrics_write(&o);
  JW(&o, "# HELP focald_samples_committed_total Samples of committed batches (retried batches excluded).\n"
        "# TYPE focald_samples_committed_total counter\nfocald_samples_committed_total %llu\n",
    (unsigned long long)ss.committed_samples);
  JW(&o, "# HELP focald_duplicate_batches_total Batches answered duplicate: true (their batch_id was stored with the same samples).\n"
        "# TYPE focald_duplicate_batches_total counter\nfocald_duplicate_batches_total %llu\n",
     (unsigned long long)ss.duplicate_batches);
  JW(&o, "# HELP focald_idempotent_replays_total Review-loop writes answered again from their Idempotency-Key (Idempotent-Replayed: true).\n"
        "# TYPE focald_idempotent_replays_total counter\nfocald_idempotent_replays_total %llu\n",
     (unsigned long long)ss.idempotent_replays);
  JW(&o, "# HELP focald_commits_total Database commits of the writer (one per group of batches).\n"
        "# TYPE focald_commits_total counter\nfocald_commits_total %llu\n", (unsigned long long)ss.commits);
  JW(&o, "# HELP focald_committed_ops_total Writes committed (batches, reviews, meta, queues, deletions).\n"
        "# TYPE focald_committed_ops_total counter\nfocald_committed_ops_total %llu\n", (unsigned long long)ss.committed_ops);
  JW(&o, "# HELP focald_commit_failures_total Groups of writes whose transaction failed (nothing of them was stored).\n"
        "# TYPE focald_commit_failures_total counter\nfocald_commit_failures_total %llu\n", (unsigned long long)ss.failed_commits);
  JW(&o, "# HELP focald_snapshot_failures_total Snapshot passes abandoned after a failed step (the next pass writes their rows).\n"
        "# TYPE focald_snapshot_failures_total counter\nfocald_snapshot_failures_total %llu\n",
    (unsigned long long)ss.snapshot_failures);
  store_metrics_write(api_store, &o);
  metrics_process_write(&o);
  JW(&o, "# HELP focald_queue_depth Batches being scored or waiting for the writer.\n"
        "# TYPE focald_queue_depth gauge\nfocald_queue_depth %d\n", work_inflight());
  JW(&o, "# HELP focald_writer_queue_depth Writes waiting for the writer thread.\n"
        "# TYPE focald_writer_queue_depth gauge\nfocald_writer_queue_depth %d\n", ss.queue_depth);
  JW(&o, "# HELP focald_database_bytes Size of the SQLite database file and its WAL.\n"
        "# TYPE focald_database_bytes gauge\nfocald_database_bytes{file=\"db\"} %lld\nfocald_database_bytes{file=\"wal\"} %lld\n",
    (long long)ss.db_bytes, (long long)ss.wal_bytes);
  JW(&o, "# HELP focald_datasets Datasets held.\n# TYPE focald_datasets gauge\nfocald_datasets %llu\n",
    (unsigned long long)t.datasets);
  JW(&o, "# HELP focald_samples Samples tracked over all datasets.\n# TYPE focald_samples gauge\nfocald_samples %llu\n",
    (unsigned long long)t.samples);
  JW(&o, "# HELP focald_observations Observations recorded over all datasets and runs.\n"
        "# TYPE focald_observations gauge\nfocald_observations %llu\n", (unsigned long long)t.observations);
  resp->body = buf_take(&o, &resp->len);
  if (!resp->body) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory writing the metrics");
  resp->status = 200;
  resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
  return 0;
}

/* ------------------------------------------------------------------ scoring */

static void job_cleanup(http_req *rq) {
  job_free(rq->async);
  rq->async = NULL;
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

static void w_score_array(jw *o, const char *name, const job *j, int which) {
  JW(o, "\"%s\":[", name);
  for (int64_t i = 0; i < j->rq.n; i++) {
    const fl_score *s = &j->scores[i];
    if (i) jw_lit(o, ",");
    if (s->rows == 0 && which != 8) {
      jw_lit(o, "null");
      continue;
    }
    switch (which) {
    case 0: jw_num(o, s->p_t); break;
    case 1: jw_num(o, s->p_max); break;
    case 2: jw_num(o, s->margin); break;
    case 3: jw_num(o, s->norm_margin); break;
    case 4: jw_num(o, s->entropy); break;
    case 5: jw_num(o, s->cw_entropy); break;
    case 6: jw_num(o, s->el2n); break;
    case 7: jw_num(o, s->correct); break;
    default:
      if (s->pred < 0) jw_lit(o, "null");
      else jw_num(o, s->pred);
    }
  }
  JW(o, "]");
}

/* Writes ,"grad":[...] nested as the request's input was: N x C, or N x M x C when dense. */
static void w_grad(jw *o, const req *r, const float *g) {
  JW(o, ",\"grad\":[");
  for (int64_t i = 0; i < r->n; i++) {
    JW(o, i ? ",[" : "[");
    for (int64_t p = 0; p < r->m; p++) {
      if (r->dense) JW(o, p ? ",[" : "[");
      for (int64_t k = 0; k < r->c; k++) {
        if (k) jw_lit(o, ",");
        jw_num(o, g[(i * r->m + p) * r->c + k]);
      }
      if (r->dense) JW(o, "]");
    }
    JW(o, "]");
  }
  JW(o, "]");
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

/* Builds the answer to a scored job, on the pool thread that scored its last chunk (work.c): before a batch is
 * written, so that once it is committed, answering it takes no memory. "duplicate" is written false; the
 * writer may make it true (finish_scoring). 0, or -1 when memory ran out (j->answer is then NULL). */
static int build_answer(job *j) {
  const req *r = &j->rq;
  double sum = 0;
  for (int64_t i = 0; i < r->n; i++) sum += j->loss[i];
  int64_t *top = hardest(j, r->ohem_k);
  if (r->ohem_k > 0 && !top) return -1;
  int64_t ntop = top ? r->ohem_k : 0;
  if (r->binary_response) {
    bin_result res = {.dataset = j->store ? j->op.dataset : NULL,
                      .run = j->store ? r->run : NULL,
                      .n = r->n,
                      .m = r->m,
                      .c = r->c,
                      .dense = r->dense,
                      .mean_loss = sum / (double)r->n,
                      .loss = j->loss,
                      .scores = j->scores,
                      .grad = j->grad,
                      .grad_norm = j->grad_norm,
                      .hardest = top,
                      .nhardest = ntop,
                      .outputs = r->outputs};
    const int rc = bin_response(&res, &j->answer, &j->answer_len, &j->answer_head_len, &j->duplicate_at);
    free(top);
    return rc;
  }
  jw o = {0};
  JW(&o, "{\"dataset\":");
  if (j->store) jw_str(&o, j->op.dataset);
  else JW(&o, "null");
  JW(&o, ",\"run\":");
  if (j->store) jw_str(&o, r->run);
  else JW(&o, "null");
  JW(&o, ",\"batch_id\":");
  if (r->has_batch_id) jw_str(&o, r->batch_id);
  else JW(&o, "null");
  JW(&o, ",\"accepted\":%" PRId64 ",\"duplicate\":", r->n);
  j->duplicate_at = o.len;
  JW(&o, "false,\"loss\":");
  jw_num(&o, sum / (double)r->n);
  JW(&o, ",\"losses\":[");
  for (int64_t i = 0; i < r->n; i++) {
    if (i) jw_lit(&o, ",");
    jw_num(&o, j->loss[i]);
  }
  JW(&o, "],\"scores\":{");
  static const char *const names[] = {"p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred"};
  for (int k = 0; k < 9; k++) {
    if (k) JW(&o, ",");
    w_score_array(&o, names[k], j, k);
  }
  JW(&o, "}");
  if (j->grad) w_grad(&o, r, j->grad);
  if (r->outputs & (1u << REQ_OUT_GRAD_NORM)) {
    JW(&o, ",\"grad_norm\":[");
    for (int64_t i = 0; i < r->n; i++) {
      if (i) jw_lit(&o, ",");
      jw_num(&o, j->grad_norm[i]);
    }
    JW(&o, "]");
  }
  JW(&o, ",\"hardest\":[");
  for (int64_t i = 0; i < ntop; i++) JW(&o, "%s%" PRId64, i ? "," : "", top[i]);
  JW(&o, "]}");
  free(top);
  j->answer = buf_take(&o, &j->answer_len); /* NULL when an append failed: never an answer cut short */
  return j->answer ? 0 : -1;
}

/* Sends the answer build_answer made, once the job is done: a recorded batch is committed by now, and nothing
 * here takes memory. */
static int finish_scoring(http_req *rq, http_resp *resp) {
  job *j = rq->async;
  if (j->op.failed) return http_problem(resp, rq, &j->op.err);
  if (j->store) fault_point(FP_REPLY);
  /* where a read asks, with after=, to see this batch (set by the writer: the answer never reads the store) */
  if (j->store) api_log_position(resp, &j->op);
  /* the same length as "false": the JSON (or the binary answer's JSON header) keeps its size */
  if (j->duplicate) memcpy(j->answer + j->duplicate_at, " true", 5);
  resp->status = 200;
  resp->body = j->answer;
  resp->len = j->answer_len;
  j->answer = NULL;
  if (j->rq.binary_response) {
    char v[32];
    snprintf(v, sizeof v, "%zu", j->answer_head_len);
    resp->content_type = "application/octet-stream";
    http_header(resp, "Inference-Header-Content-Length", v);
  } else {
    resp->content_type = "application/json";
  }
  fault_point(FP_NONE);
  return 0;
}

/* Decodes, then hands the job over; store says whether to record it. */
static int score(http_req *rq, http_resp *resp, int store_it) {
  if (http_readiness() == HTTP_STARTING) return api_fail(resp, rq, P_STARTING, NULL, "loading the database; retry shortly");
  if (http_readiness() == HTTP_DRAINING) return api_fail(resp, rq, P_DRAINING, NULL, "shutting down; not accepting batches");
  job *j = calloc(1, sizeof *j);
  if (!j) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  problem err;
  if (store_it) {
    if (!name_ok(rq->params[0])) {
      free(j);
      return api_fail(resp, rq, P_BAD_NAME, "", "dataset name \"%.80s\" is not 1 to 64 characters from A-Z a-z 0-9 . _ - "
                  "(nor . or ..)", rq->params[0]);
    }
    snprintf(j->op.dataset, sizeof j->op.dataset, "%.64s", rq->params[0]);
  }
  int rc;
  if (rq->binary) {
    const char *accept = http_request_header(rq, "Accept");
    int accept_binary = accept && strstr(accept, "application/octet-stream") != NULL;
    rc = dec_binary(&j->rq, rq->body, rq->len, rq->body_head_len, store_it, accept_binary, &err);
  } else {
    rc = dec_json(&j->rq, rq->body, rq->len, store_it, &err);
  }
  if (rc != 0) {
    free(j);
    return http_problem(resp, rq, &err);
  }
  atomic_fetch_add(&ingested_bytes[rq->binary != 0], rq->len);
  atomic_fetch_add(&ingested_samples[rq->binary != 0], (size_t)j->rq.n);
  j->loss = malloc((size_t)j->rq.n * sizeof *j->loss);
  j->scores = calloc((size_t)j->rq.n, sizeof *j->scores);
  if (j->rq.outputs & (1u << REQ_OUT_GRAD)) j->grad = malloc((size_t)(j->rq.n * j->rq.m * j->rq.c) * sizeof *j->grad);
  /* a recorded batch keeps each sample's gradient norm for its grand (never in its answer) */
  const int want_grad_norm = store_it || (j->rq.outputs & (1u << REQ_OUT_GRAD_NORM));
  if (want_grad_norm) j->grad_norm = malloc((size_t)j->rq.n * sizeof *j->grad_norm);
  if (!j->loss || !j->scores || (!j->grad && (j->rq.outputs & (1u << REQ_OUT_GRAD))) ||
      (!j->grad_norm && want_grad_norm)) {
    job_free(j);
    return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  }
  j->store = store_it;
  j->build = build_answer;
  j->op.kind = WOP_BATCH;
  rq->async = j;
  api_park(rq, &j->op, finish_scoring, job_cleanup);
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

/* ------------------------------------------------------------------ datasets */

typedef struct list_ctx {
  jw *o;
  int n;
} list_ctx;

static void list_one(const st_dataset *ds, void *arg) {
  list_ctx *c = arg;
  JW(c->o, "%s{\"name\":", c->n++ ? "," : "");
  jw_str(c->o, st_name(ds));
  JW(c->o, ",\"samples\":%u,\"observations\":%llu,\"runs\":%d,\"created_at\":", st_nsamples(ds),
    (unsigned long long)st_observations(ds), st_nruns(ds));
  jw_time(c->o, st_created_at(ds));
  JW(c->o, "}");
}

static int h_datasets(http_req *rq, http_resp *resp) {
  (void)rq;
  jw o = {0};
  list_ctx c = {&o, 0};
  JW(&o, "{\"datasets\":[");
  st_map_each(api_map, list_one, &c);
  JW(&o, "]}");
  return jw_respond(resp, 200, &o);
}

static int h_dataset(http_req *rq, http_resp *resp) {
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  jw o = {0};
  JW(&o, "{\"name\":");
  jw_str(&o, st_name(ds));
  JW(&o, ",\"samples\":%u,\"observations\":%llu,\"created_at\":", st_nsamples(ds), (unsigned long long)st_observations(ds));
  jw_time(&o, st_created_at(ds));
  /* review progress: how many samples are in each review state (one pass over the statuses) */
  uint32_t by_status[ST_STATUS_COUNT] = {0};
  for (uint32_t key = 0; key < st_nsamples(ds); key++) {
    int st = st_sample_status(ds, key);
    if (st >= 0 && st < ST_STATUS_COUNT) by_status[st]++;
  }
  JW(&o, ",\"review\":{");
  for (int st = 0; st < ST_STATUS_COUNT; st++) JW(&o, "%s\"%s\":%u", st ? "," : "", st_status_name(st), by_status[st]);
  JW(&o, "},\"runs\":[");
  static const double ps[4] = {0.5, 0.9, 0.99, 1.0};
  for (int i = 0; i < st_nruns(ds); i++) {
    const st_run *r = st_run_at(ds, i);
    double qv[4];
    int64_t last_step;
    if (st_loss_quantiles(ds, r, ps, 4, qv) != 0) {
      st_release(ds);
      buf_free(&o);
      return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory computing the loss quantiles");
    }
    JW(&o, "%s{\"name\":", i ? "," : "");
    jw_str(&o, st_run_name(r));
    JW(&o, ",\"samples\":%u,\"observations\":%llu,\"classes\":%d,\"last_step\":", st_run_samples(r),
      (unsigned long long)st_run_observations(r), st_run_classes(r));
    if (st_run_last_step(r, &last_step)) JW(&o, "%" PRId64, last_step);
    else JW(&o, "null");
    JW(&o, ",\"loss_quantiles\":{\"p50\":");
    jw_num(&o, qv[0]);
    JW(&o, ",\"p90\":");
    jw_num(&o, qv[1]);
    JW(&o, ",\"p99\":");
    jw_num(&o, qv[2]);
    JW(&o, ",\"max\":");
    jw_num(&o, qv[3]);
    JW(&o, "}}");
  }
  JW(&o, "]}");
  st_release(ds);
  return jw_respond(resp, 200, &o);
}

static void wop_cleanup(http_req *rq) {
  wop *op = rq->async;
  free(op->answer); /* built by the writer, not sent when the group failed after it */
  free(op);
  rq->async = NULL;
}

static int h_dataset_delete(http_req *rq, http_resp *resp) {
  if (!name_lookup_ok(rq->params[0])) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  if (http_readiness() != HTTP_READY) return api_fail(resp, rq, P_DRAINING, NULL, "not accepting changes now");
  wop *op = calloc(1, sizeof *op);
  if (!op) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  op->kind = WOP_DELETE_DATASET;
  snprintf(op->dataset, sizeof op->dataset, "%.64s", rq->params[0]);
  rq->async = op;
  return api_submit(rq, op, api_finish_change, wop_cleanup);
}

/* ------------------------------------------------------------------ samples */

/* ,"series":{"stride", "points"}: the sample's down-sampled series in r, oldest first (empty when none is kept). */
static void w_series(jw *o, const st_run *r, uint32_t key) {
  st_series_view v;
  st_series(r, key, &v);
  JW(o, ",\"series\":{\"stride\":%" PRIu64 ",\"points\":[", v.len ? v.stride : (uint64_t)1);
  for (uint32_t j = 0; j < v.len; j++) {
    const hist_point *p = &v.points[j];
    JW(o, "%s{\"observation\":%" PRIu64 ",\"step\":", j ? "," : "", (uint64_t)v.first + (uint64_t)j * v.stride);
    if (p->step != HIST_POINT_NO_STEP) JW(o, "%" PRIu32, p->step);
    else jw_lit(o, "null");
    JW(o, ",\"loss\":");
    jw_num(o, p->loss);
    JW(o, ",\"p_t\":");
    if (isnan(p->p_t)) jw_lit(o, "null");
    else jw_num(o, p->p_t);
    jw_lit(o, "}");
  }
  JW(o, "]}");
}

static void w_run_history(jw *o, const st_dataset *ds, const st_run *r, uint32_t key) {
  hist_view h;
  hist_recent recent[HIST_RECENT];
  st_history_view(ds, r, key, &h);
  JW(o, "{\"run\":");
  jw_str(o, st_run_name(r));
  JW(o, ",");
  jw_history(o, &h);
  JW(o, ",\"stale_labels\":%u", st_stale_labels(r, key));
  JW(o, ",\"recent\":[");
  const int count = st_recent(r, key, recent);
  {
    for (int i = 0; i < count; i++) {
      const hist_recent *e = &recent[i]; /* newest first */
      int64_t step, epoch;
      JW(o, "%s{\"step\":", i ? "," : "");
      if (hist_recent_step(e, &step)) JW(o, "%" PRId64, step);
      else JW(o, "null");
      JW(o, ",\"epoch\":");
      if (hist_recent_epoch(e, &epoch)) JW(o, "%" PRId64, epoch);
      else JW(o, "null");
      JW(o, ",\"loss\":");
      jw_num(o, e->loss);
      JW(o, ",\"p_t\":");
      jw_num(o, fabsf(e->p_t_signed));
      JW(o, ",\"correct\":%s}", signbit(e->p_t_signed) ? "true" : "false");
    }
  }
  JW(o, "]");
  w_series(o, r, key);
  JW(o, "}");
}

static int h_sample(http_req *rq, http_resp *resp) {
  char rb[HTTP_QUERY_MAX];
  const char *run = http_query(rq, "run", rb, sizeof rb);
  /* a value that is no run name is a malformed parameter, as on every route that takes run */
  if (run && !name_lookup_ok(run)) return api_fail(resp, rq, P_BAD_QUERY, "run", "run must be a run name");
  const st_dataset *ds;
  uint32_t key;
  if (api_sample(rq, resp, &ds, &key) != 0) return 0;
  const st_run *only = NULL;
  if (run && !(only = st_find_run(ds, run))) {
    st_release(ds);
    return api_fail(resp, rq, P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", rq->params[0], run);
  }
  jw o = {0};
  const char *corrected = st_corrected(ds, (uint32_t)key);
  JW(&o, "{\"id\":");
  jw_str(&o, st_sample_id(ds, (uint32_t)key));
  JW(&o, ",\"dataset\":");
  jw_str(&o, st_name(ds));
  jw_sample_tail(&o, ds, (uint32_t)key);
  JW(&o, ",\"corrected_label\":");
  jw_json(&o, corrected);
  JW(&o, ",\"reconsider\":%s,\"viewer_url\":", st_reconsider(ds, (uint32_t)key, api_cfg->reconsider_factor) ? "true" : "false");
  if (api_viewer_url(&o, ds, (uint32_t)key) != 0) o.failed = 1; /* a 500, never a link left out */
  JW(&o, ",\"runs\":[");
  int n = 0;
  for (int i = 0; i < st_nruns(ds); i++) {
    const st_run *r = st_run_at(ds, i);
    hist_rec h;
    st_history(r, (uint32_t)key, &h);
    if (only && r != only) continue;
    if (!only && h.seen == 0) continue;
    if (n++) JW(&o, ",");
    w_run_history(&o, ds, r, (uint32_t)key);
  }
  JW(&o, "]}");
  st_release(ds);
  return jw_respond(resp, 200, &o);
}

/* ------------------------------------------------------------------ the route table */

#define Q_RANKING "by order run label label_issue min_seen status"
/* The answers to a path parameter that cannot be decoded: it names no dataset, sample or queue. */
#define NO_PARAMS {P_NONE, P_NONE}
#define BAD_DS {P_DATASET_NOT_FOUND, P_NONE}
#define BAD_DS_SAMPLE {P_DATASET_NOT_FOUND, P_SAMPLE_NOT_FOUND}
#define BAD_DS_QUEUE {P_DATASET_NOT_FOUND, P_NOT_FOUND}
/* Binary tensors (Open Inference Protocol): the JSON header's length is in Inference-Header-Content-Length;
 * the tensors after it are decoded in place, 64-byte aligned for the loss kernels' vector loads. */
#define TENSORS "Inference-Header-Content-Length", 64, NULL
#define NO_TENSORS NULL, 0, NULL
/* No tensors either, and the sample's id given as the query parameter id (router.h: query_param). */
#define ID_IN_QUERY NULL, 0, "id"
#define TENSOR_BODY (ROUTE_BODY_JSON | ROUTE_BODY_BINARY)

/* The probes need no token and are served on --health-listen; the console's files need no token (a
 * browser loads them without one); every /v1/ route reads or changes the data, so it answers 503
 * starting while the database loads. A batch names the dataset it creates: a name that cannot be
 * decoded is 422 bad_name there, and 404 wherever the dataset must exist already. */
const router_route api_routes[] = {
    {"GET", "/livez", h_livez, ROUTE_PROBE, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/readyz", h_readyz, ROUTE_PROBE, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/metrics", h_metrics, 0, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/openapi.json", h_openapi, 0, "", NO_PARAMS, NO_TENSORS},
    {"POST", "/v1/loss", h_loss, ROUTE_DATA | TENSOR_BODY, "", NO_PARAMS, TENSORS},
    {"GET", "/v1/datasets", h_datasets, ROUTE_DATA, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}", h_dataset, ROUTE_DATA, "", BAD_DS, NO_TENSORS},
    {"DELETE", "/v1/datasets/{dataset}", h_dataset_delete, ROUTE_DATA, "", BAD_DS, NO_TENSORS},
    {"POST", "/v1/datasets/{dataset}/batches", h_batches, ROUTE_DATA | TENSOR_BODY, "", {P_BAD_NAME, P_NONE}, TENSORS},
    {"GET", "/v1/datasets/{dataset}/hard-examples", api_hard_examples, ROUTE_DATA, Q_RANKING " k cursor", BAD_DS, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/samples/{id}", h_sample, ROUTE_DATA, "run", BAD_DS_SAMPLE, NO_TENSORS},
    {"POST", "/v1/datasets/{dataset}/samples/{id}/review", api_review, ROUTE_DATA | ROUTE_BODY_JSON, "", BAD_DS_SAMPLE, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/samples/{id}/reviews", api_reviews, ROUTE_DATA, "", BAD_DS_SAMPLE, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/samples/{id}/media", api_media, ROUTE_DATA, "", BAD_DS_SAMPLE, NO_TENSORS},
    {"PUT", "/v1/datasets/{dataset}/samples/{id}/meta", api_meta, ROUTE_DATA | ROUTE_BODY_JSON, "", BAD_DS_SAMPLE, NO_TENSORS},
    /* the same, with the id in the query: a browser cannot send an id that is "." or ".." in a path */
    {"GET", "/v1/datasets/{dataset}/sample", h_sample, ROUTE_DATA, "id run", BAD_DS_SAMPLE, ID_IN_QUERY},
    {"POST", "/v1/datasets/{dataset}/sample/review", api_review, ROUTE_DATA | ROUTE_BODY_JSON, "id", BAD_DS_SAMPLE, ID_IN_QUERY},
    {"GET", "/v1/datasets/{dataset}/sample/reviews", api_reviews, ROUTE_DATA, "id", BAD_DS_SAMPLE, ID_IN_QUERY},
    {"GET", "/v1/datasets/{dataset}/sample/media", api_media, ROUTE_DATA, "id", BAD_DS_SAMPLE, ID_IN_QUERY},
    {"PUT", "/v1/datasets/{dataset}/sample/meta", api_meta, ROUTE_DATA | ROUTE_BODY_JSON, "id", BAD_DS_SAMPLE, ID_IN_QUERY},
    {"GET", "/v1/datasets/{dataset}/relabels", api_relabels, ROUTE_DATA, "since limit", BAD_DS, NO_TENSORS},
    {"POST", "/v1/datasets/{dataset}/queues", api_queue_create, ROUTE_DATA | ROUTE_BODY_JSON, "", BAD_DS, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/queues", api_queue_list, ROUTE_DATA, "", BAD_DS, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/queues/{name}", api_queue_get, ROUTE_DATA, "offset limit", BAD_DS_QUEUE, NO_TENSORS},
    {"DELETE", "/v1/datasets/{dataset}/queues/{name}", api_queue_delete, ROUTE_DATA, "", BAD_DS_QUEUE, NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/export", api_export, ROUTE_DATA, "format queue k local_files_root " Q_RANKING, BAD_DS,
     NO_TENSORS},
    {"GET", "/v1/datasets/{dataset}/datamap", api_datamap, ROUTE_DATA, "run bins x0 x1 y0 y1 limit min_seen", BAD_DS,
     NO_TENSORS},
    {"GET", "/ui", api_ui_redirect, ROUTE_OPEN, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/ui/", api_ui_index, ROUTE_OPEN, "", NO_PARAMS, NO_TENSORS},
    {"GET", "/ui/{asset}", api_ui_file, ROUTE_OPEN, "", {P_NOT_FOUND, P_NONE}, NO_TENSORS},
};

const int api_route_count = (int)(sizeof api_routes / sizeof api_routes[0]);
