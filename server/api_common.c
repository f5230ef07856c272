/* api_common.c — what the handler files share: the settings, problems, query parameters, the path's
 * sample, and the hand-off of a request to another thread.
 *
 * It sits below every handler file (api.c, api_review.c, export.c, ...) and
 * calls none of them: they share one way to read an integer or a ranking from
 * the query, and one way to park a request while the writer works.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_common.h"
#include "decode.h"
#include "faultpoint.h"
#include "history.h"
#include "idem.h"
#include "store.h"

const config *api_cfg;
st_map *api_map;
struct store *api_store;

void api_init(const config *c, st_map *m, struct store *s) {
  api_cfg = c;
  api_map = m;
  api_store = s;
}

int api_fail(http_resp *resp, const http_req *rq, problem_code code, const char *field, const char *fmt, ...) {
  problem p;
  va_list ap;
  p.code = code;
  snprintf(p.field, sizeof p.field, "%s", field ? field : "");
  va_start(ap, fmt);
  vsnprintf(p.detail, sizeof p.detail, fmt, ap);
  va_end(ap);
  return http_problem(resp, rq, &p);
}


void api_log_position(http_resp *resp, const wop *op) {
  if (op->log_pos <= 0) return;
  char v[24];
  snprintf(v, sizeof v, "%lld", (long long)op->log_pos);
  http_header(resp, "Focald-Log-Position", v);
}

int api_finish_change(http_req *rq, http_resp *resp) {
  wop *op = rq->async;
  if (op->failed) return http_problem(resp, rq, &op->err);
  fault_point(FP_REPLY);
  if (op->replayed) http_header(resp, IDEM_REPLAYED_HEADER, "true");
  api_log_position(resp, op);
  char *body = op->answer; /* never NULL for a committed change (store_group.c) */
  op->answer = NULL;
  const int rc = http_json(resp, op->answer_status, body);
  fault_point(FP_NONE);
  return rc;
}

static void resume(wop *op) {
  http_complete(op->ctx);
}

void api_park(http_req *rq, wop *op, http_handler finish, void (*cleanup)(http_req *rq)) {
  op->done = resume;
  op->ctx = rq;
  rq->finish = finish;
  rq->cleanup = cleanup;
  http_suspend(rq);
}

int api_submit(http_req *rq, wop *op, http_handler finish, void (*cleanup)(http_req *rq)) {
  api_park(rq, op, finish, cleanup);
  store_submit(api_store, op);
  return HTTP_ASYNC;
}


int api_int_text(const char *s, long long lo, long long hi, long long *v) {
  if (!s || !(s[0] == '-' ? isdigit((unsigned char)s[1]) : isdigit((unsigned char)s[0]))) return -1;
  char *end;
  errno = 0;
  const long long x = strtoll(s, &end, 10);
  if (*end || errno == ERANGE || x < lo || x > hi) return -1;
  *v = x;
  return 0;
}

int api_int_query(http_req *rq, http_resp *resp, const char *name, long long lo, long long hi, long long dflt,
                  long long *v) {
  char b[HTTP_QUERY_MAX];
  const char *s = http_query(rq, name, b, sizeof b);
  *v = dflt;
  if (!s || api_int_text(s, lo, hi, v) == 0) return 0;
  /* the message gives the whole range whenever there is an upper bound a client can reach */
  if (hi == LLONG_MAX) api_fail(resp, rq, P_BAD_QUERY, name, "%s must be an integer >= %lld", name, lo);
  else api_fail(resp, rq, P_BAD_QUERY, name, "%s must be an integer from %lld to %lld", name, lo, hi);
  return -1;
}

int api_ranking_query(http_req *rq, http_resp *resp, st_query *q, char run[ST_NAME_MAX + 1]) {
  char b[5][HTTP_QUERY_MAX];
  const char *by = http_query(rq, "by", b[0], sizeof b[0]);
  const char *order = http_query(rq, "order", b[1], sizeof b[1]);
  const char *r = http_query(rq, "run", b[2], sizeof b[2]);
  const char *status = http_query(rq, "status", b[3], sizeof b[3]);
  const char *label_issue = http_query(rq, "label_issue", b[4], sizeof b[4]);
  *q = (st_query){.by = HF_MEAN_LOSS, .min_seen = 1, .status_mask = ST_UNDECIDED_MASK,
                  .reconsider = api_cfg->reconsider_factor};
  int given = (by != NULL) + (order != NULL) + (r != NULL) + (status != NULL) + (label_issue != NULL);
  if (by && (q->by = hist_field_parse(by)) < 0)
    return api_fail(resp, rq, P_BAD_QUERY, "by", "by must be one of %s", hist_field_list), -1;
  if (order && (q->order = hist_order_parse(order)) < 0)
    return api_fail(resp, rq, P_BAD_QUERY, "order", "order must be asc or desc"), -1;
  if (r && strcmp(r, "*") != 0 && !name_lookup_ok(r))
    return api_fail(resp, rq, P_BAD_QUERY, "run", "run must be a run name or *"), -1;
  snprintf(run, ST_NAME_MAX + 1, "%s", r ? r : "*");
  long long label = -1, min_seen;
  given += http_query(rq, "label", b[0], sizeof b[0]) != NULL;
  if (api_int_query(rq, resp, "label", 0, INT32_MAX, -1, &label) != 0) return -1;
  if (label >= 0) q->has_label = 1, q->label = (int32_t)label;
  given += http_query(rq, "min_seen", b[0], sizeof b[0]) != NULL;
  if (api_int_query(rq, resp, "min_seen", 1, UINT32_MAX, 1, &min_seen) != 0) return -1;
  q->min_seen = (uint32_t)min_seen;
  if (status) {
    q->reconsider = 0; /* an explicit filter means exactly those statuses */
    if (api_status_mask(status, &q->status_mask))
      return api_fail(resp, rq, P_BAD_QUERY, "status",
                      "status must be a comma-separated list of open, queued, in_review, relabelled, confirmed, dismissed"), -1;
  }
  if (label_issue && (q->label_issue = api_label_issue_filter(label_issue)) < 0)
    return api_fail(resp, rq, P_BAD_QUERY, "label_issue", "label_issue must be true or false"), -1;
  return given;
}

int api_label_issue_filter(const char *s) {
  if (strcmp(s, "true") == 0) return ST_LABEL_ISSUE_YES;
  if (strcmp(s, "false") == 0) return ST_LABEL_ISSUE_NO;
  return -1;
}

int api_status_mask(const char *s, uint32_t *mask) {
  char text[256];
  if (strlen(s) >= sizeof text) return -1;
  snprintf(text, sizeof text, "%s", s);
  *mask = 0;
  char *rest = text;
  for (char *tok = strsep(&rest, ","); tok; tok = strsep(&rest, ",")) {
    int st = st_status_parse(tok); /* an empty name (",," or a trailing comma) is unknown too */
    if (st < 0) return -1;
    *mask |= 1u << st;
  }
  return 0;
}


int api_sample(http_req *rq, http_resp *resp, const st_dataset **ds, uint32_t *key) {
  *ds = st_acquire(api_map, rq->params[0]);
  if (!*ds) return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]), -1;
  const int64_t k = st_key(*ds, rq->params[1]);
  if (k < 0) {
    st_release(*ds);
    *ds = NULL;
    return api_fail(resp, rq, P_SAMPLE_NOT_FOUND, NULL, "dataset \"%.80s\" has no sample \"%.80s\"", rq->params[0],
                    rq->params[1]), -1;
  }
  *key = (uint32_t)k;
  return 0;
}

