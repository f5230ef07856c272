/* api_review.c — handlers of the review loop: review decisions and their audit trail,
 * sample meta, the relabel feed, review queues.
 *
 * Changes go to the store's writer like batches (suspend, then answer once
 * committed); reads come from the in-memory state under the dataset's read lock.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "api_internal.h"
#include "idem.h"
#include "review.h"
#include "store.h"

/* ------------------------------------------------------------------ writes */

static void op_cleanup(http_req *rq) {
  review_op_free(rq->async);
  rq->async = NULL;
}

/* Hands op to the writer, with the request's Idempotency-Key; finish sends the answer the writer built. */
static int submit(http_req *rq, http_resp *resp, wop *op, http_handler finish) {
  problem err;
  if (idem_key_parse(http_request_header(rq, IDEM_HEADER), op->idem_key, &err) != 0) {
    review_op_free(op);
    return http_problem(resp, rq, &err);
  }
  if (http_readiness() != HTTP_READY) {
    review_op_free(op);
    return api_fail(resp, rq, http_readiness() == HTTP_STARTING ? P_STARTING : P_DRAINING, NULL, "not accepting changes now");
  }
  snprintf(op->dataset, sizeof op->dataset, "%.64s", rq->params[0]);
  rq->async = op;
  return api_submit(rq, op, finish, op_cleanup);
}

static int check_dataset_name(http_req *rq, http_resp *resp) {
  if (name_lookup_ok(rq->params[0])) return 0;
  api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  return -1;
}

/* An id longer than any sample's cannot name one (and must not be cut down to another's). */
static int check_sample_id(http_req *rq, http_resp *resp) {
  if (strlen(rq->params[1]) <= REQ_ID_MAX) return 0;
  api_fail(resp, rq, P_SAMPLE_NOT_FOUND, NULL, "dataset \"%.80s\" has no sample \"%.80s...\" (ids are at most %d bytes)",
           rq->params[0], rq->params[1], REQ_ID_MAX);
  return -1;
}

static void jw_opt_str(jw *o, const char *s) {
  if (s) jw_str(o, s);
  else jw_lit(o, "null");
}

int api_review(http_req *rq, http_resp *resp) {
  if (check_dataset_name(rq, resp) || check_sample_id(rq, resp)) return 0;
  review_op *r = calloc(1, sizeof *r);
  if (!r) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  r->op.kind = WOP_REVIEW;
  snprintf(r->id, sizeof r->id, "%.256s", rq->params[1]);
  problem err;
  if (review_decode(rq->body, rq->len, r, &err) != 0) {
    review_op_free(&r->op);
    return http_problem(resp, rq, &err);
  }
  return submit(rq, resp, &r->op, api_finish_change);
}

int api_meta(http_req *rq, http_resp *resp) {
  if (check_dataset_name(rq, resp) || check_sample_id(rq, resp)) return 0;
  meta_op *m = calloc(1, sizeof *m);
  if (!m) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  m->op.kind = WOP_META;
  snprintf(m->id, sizeof m->id, "%.256s", rq->params[1]);
  problem err;
  if (meta_decode(rq->body, rq->len, m, &err) != 0) {
    review_op_free(&m->op);
    return http_problem(resp, rq, &err);
  }
  return submit(rq, resp, &m->op, api_finish_change);
}

/* ------------------------------------------------------------------ queues */

/* A queue's summary as the dataset stands (dataset read-locked). */
static void jw_queue_summary(jw *o, const st_dataset *ds, const st_queue *q) {
  uint32_t by[ST_STATUS_COUNT] = {0};
  for (uint32_t i = 0; i < q->n; i++) by[st_sample_status(ds, q->keys[i])]++;
  answer_queue_summary(o, q->name, q->created_at, q->n, by, q->params);
}

int api_queue_create(http_req *rq, http_resp *resp) {
  if (check_dataset_name(rq, resp)) return 0;
  queue_op *q = calloc(1, sizeof *q);
  if (!q) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  q->op.kind = WOP_QUEUE;
  problem err;
  if (queue_decode(rq->body, rq->len, &q->p, &err) != 0) {
    review_op_free(&q->op);
    return http_problem(resp, rq, &err);
  }
  return submit(rq, resp, &q->op, api_finish_change);
}

int api_queue_delete(http_req *rq, http_resp *resp) {
  if (check_dataset_name(rq, resp)) return 0;
  /* a name no queue can have names none (cut to a queue name's length, it could name another): 404, of the
   * dataset first when there is none, as for any other name */
  if (!name_lookup_ok(rq->params[1])) {
    const st_dataset *ds = st_acquire(api_map, rq->params[0]);
    if (!ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
    st_release(ds);
    return api_fail(resp, rq, P_NOT_FOUND, NULL, "dataset \"%.80s\" has no queue named \"%.80s\"", rq->params[0], rq->params[1]);
  }
  queue_op *q = calloc(1, sizeof *q);
  if (!q) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  q->op.kind = WOP_QUEUE_DELETE;
  snprintf(q->p.name, sizeof q->p.name, "%.64s", rq->params[1]); /* at most 64 bytes: name_lookup_ok */
  return submit(rq, resp, &q->op, api_finish_change);
}

int api_queue_list(http_req *rq, http_resp *resp) {
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  jw o = {0};
  JW(&o, "{\"queues\":[");
  for (int i = 0; i < st_nqueues(ds); i++) {
    if (i) jw_lit(&o, ",");
    jw_queue_summary(&o, ds, st_queue_at(ds, i));
  }
  JW(&o, "]}");
  st_release(ds);
  return jw_respond(resp, 200, &o);
}

int api_queue_get(http_req *rq, http_resp *resp) {
  long long offset, limit;
  if (api_int_query(rq, resp, "offset", 0, INT32_MAX, 0, &offset) != 0 ||
      api_int_query(rq, resp, "limit", 1, 10000, 1000, &limit) != 0)
    return 0;
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  const st_queue *q = st_find_queue(ds, rq->params[1]);
  if (!q) {
    st_release(ds);
    return api_fail(resp, rq, P_NOT_FOUND, NULL, "dataset \"%.80s\" has no queue named \"%.80s\"", rq->params[0], rq->params[1]);
  }
  const st_run *run;
  if (queue_run(ds, q, &run) != 0) {
    st_release(ds);
    return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory reading the queue's parameters");
  }
  jw o = {0};
  jw_queue_summary(&o, ds, q);
  if (o.len) o.len--; /* reopen the summary object to add its items */
  JW(&o, ",\"offset\":%lld,\"items\":[", offset);
  for (uint32_t i = (uint32_t)offset; i < q->n && i < (uint32_t)(offset + limit); i++) {
    if (i > (uint32_t)offset && o.len >= API_PAGE_BYTES) break; /* the client asks again from offset + items */
    const uint32_t key = q->keys[i];
    hist_view v;
    st_history_of(ds, run, key, &v); /* the fields of the run its score is of */
    JW(&o, "%s{\"position\":%u,\"id\":", i > (uint32_t)offset ? "," : "", i + 1);
    jw_str(&o, st_sample_id(ds, key));
    JW(&o, ",\"score\":");
    jw_num(&o, q->scores[i]);
    JW(&o, ",");
    jw_history(&o, &v);
    jw_sample_tail(&o, ds, key);
    JW(&o, ",\"corrected_label\":");
    jw_json(&o, st_corrected(ds, key));
    JW(&o, "}");
  }
  JW(&o, "]}");
  st_release(ds);
  return jw_respond(resp, 200, &o);
}

/* ------------------------------------------------------------------ audit trail and relabel feed */

static void jw_review(jw *o, const st_dataset *ds, const st_review *e) {
  JW(o, "{\"id\":");
  jw_str(o, st_sample_id(ds, e->key));
  JW(o, ",\"from\":\"%s\",\"to\":\"%s\",\"label_before\":", st_status_name(e->from), st_status_name(e->to));
  jw_json(o, e->label_before);
  JW(o, ",\"label_after\":");
  jw_json(o, e->label_after);
  JW(o, ",\"reviewer\":");
  jw_opt_str(o, e->reviewer);
  JW(o, ",\"note\":");
  jw_opt_str(o, e->note);
  JW(o, ",\"at\":");
  jw_time_ms(o, e->at);
  JW(o, "}");
}

int api_reviews(http_req *rq, http_resp *resp) {
  const st_dataset *ds;
  uint32_t key;
  if (api_sample(rq, resp, &ds, &key) != 0) return 0;
  jw o = {0};
  JW(&o, "{\"id\":");
  jw_str(&o, st_sample_id(ds, (uint32_t)key));
  JW(&o, ",\"status\":\"%s\",\"corrected_label\":", st_status_name(st_sample_status(ds, (uint32_t)key)));
  jw_json(&o, st_corrected(ds, (uint32_t)key));
  JW(&o, ",\"reviews\":[");
  /* the sample's entries are chained newest first: gather them, then write them oldest first */
  int n = 0;
  for (int32_t i = st_last_review(ds, (uint32_t)key); i >= 0; i = st_review_at(ds, i)->prev) n++;
  int32_t *chain = malloc((size_t)(n ? n : 1) * sizeof *chain);
  if (!chain) {
    st_release(ds);
    buf_free(&o);
    return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  }
  n = 0;
  for (int32_t i = st_last_review(ds, (uint32_t)key); i >= 0; i = st_review_at(ds, i)->prev) chain[n++] = i;
  for (int w = n - 1; w >= 0; w--) {
    if (w != n - 1) jw_lit(&o, ",");
    jw_review(&o, ds, st_review_at(ds, chain[w]));
  }
  free(chain);
  JW(&o, "]}");
  st_release(ds);
  return jw_respond(resp, 200, &o);
}

/* The relabel feed's cursor: "<dataset id>-<seq>", the last entry read, of the
 * dataset it was read from (ids are never reused). A pipeline that applied the
 * corrections of a dataset deleted since learns of it (400) instead of reading
 * on into the new dataset of that name as if nothing had gone. A plain "<seq>"
 * (the cursor before the dataset's id was added) is taken for the dataset
 * named (*ds_id 0). */
static int read_feed_cursor(const char *s, long long *ds_id /* OUT */, long long *seq /* OUT */) {
  *ds_id = 0;
  const char *dash = strchr(s, '-');
  if (!dash) return api_int_text(s, 0, INT64_MAX, seq);
  char head[24];
  const size_t n = (size_t)(dash - s);
  if (n >= sizeof head) return -1;
  memcpy(head, s, n);
  head[n] = '\0';
  return api_int_text(head, 1, INT64_MAX, ds_id) != 0 || api_int_text(dash + 1, 0, INT64_MAX, seq) != 0 ? -1 : 0;
}

/* The relabel feed: relabels, and withdrawals of earlier relabels, in commit order. */
int api_relabels(http_req *rq, http_resp *resp) {
  char b[HTTP_QUERY_MAX];
  const char *since_s = http_query(rq, "since", b, sizeof b);
  long long since = 0, since_ds = 0, limit;
  if (since_s && read_feed_cursor(since_s, &since_ds, &since) != 0)
    return api_fail(resp, rq, P_BAD_QUERY, "since", "since must be a cursor from this feed");
  if (api_int_query(rq, resp, "limit", 1, 10000, 1000, &limit) != 0) return 0;
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  if (since_ds && since_ds != st_id(ds)) {
    st_release(ds);
    return api_fail(resp, rq, P_BAD_QUERY, "since",
                    "since is a cursor of another dataset (an earlier \"%.80s\", deleted since with its corrections, or "
                    "one of another name): start again without since",
                    rq->params[0]);
  }
  const int nreviews = st_nreviews(ds);
  /* entries are in commit order: the newest is the last */
  const long long newest = nreviews ? st_review_at(ds, nreviews - 1)->seq : 0;
  if (since > newest) {
    st_release(ds);
    return api_fail(resp, rq, P_BAD_QUERY, "since", "since=%lld is ahead of this dataset's feed (its newest entry is %lld)",
                    since, newest);
  }
  jw o = {0};
  JW(&o, "{\"dataset\":");
  jw_str(&o, st_name(ds));
  JW(&o, ",\"relabels\":[");
  long n = 0;
  long long last = since;
  for (int i = 0; i < nreviews && n < limit; i++) {
    const st_review *e = st_review_at(ds, i);
    if (e->seq <= since) continue;
    const int relabel = e->to == ST_RELABELLED, withdraw = e->from == ST_RELABELLED && e->to != ST_RELABELLED;
    if (!relabel && !withdraw) continue;
    if (n++) jw_lit(&o, ",");
    JW(&o, "{\"id\":");
    jw_str(&o, st_sample_id(ds, e->key));
    JW(&o, ",\"label\":");
    jw_json(&o, relabel ? e->label_after : NULL);
    JW(&o, ",\"previous_label\":");
    jw_json(&o, e->label_before);
    JW(&o, ",\"withdrawn\":%s,\"reviewer\":", withdraw ? "true" : "false");
    jw_opt_str(&o, e->reviewer);
    JW(&o, ",\"note\":");
    jw_opt_str(&o, e->note);
    JW(&o, ",\"at\":");
    jw_time_ms(&o, e->at);
    JW(&o, "}");
    last = e->seq;
  }
  /* a page that stopped at the limit may have more right after; otherwise the
   * feed is read up to its end and the cursor waits there for new entries */
  if (n < limit && newest > last) last = newest;
  JW(&o, "],\"next_cursor\":\"%lld-%lld\"}", (long long)st_id(ds), last);
  st_release(ds);
  return jw_respond(resp, 200, &o);
}
