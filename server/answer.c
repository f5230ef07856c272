/* answer.c — the bodies that answer the review loop's writes (see answer.h). */
#include "answer.h"

#include <stdlib.h>


static void jw_opt_str(jw *o, const char *s) {
  if (s) jw_str(o, s);
  else jw_lit(o, "null");
}

/* {"id", "from", "status", "label_before", "label", "reviewer", "note", "at"} */
static void review_body(jw *o, const review_op *r) {
  JW(o, "{\"id\":");
  jw_str(o, r->id);
  JW(o, ",\"from\":\"%s\",\"status\":\"%s\",\"label_before\":", st_status_name(r->from), st_status_name(r->to));
  jw_json(o, r->label_before);
  JW(o, ",\"label\":");
  jw_json(o, r->to == ST_RELABELLED ? r->label : NULL);
  JW(o, ",\"reviewer\":");
  jw_opt_str(o, r->reviewer);
  JW(o, ",\"note\":");
  jw_opt_str(o, r->note);
  JW(o, ",\"at\":");
  jw_time_ms(o, r->at);
  JW(o, "}");
}

void answer_queue_summary(jw *o, const char *name, int64_t created_at, uint32_t n, const uint32_t by[ST_STATUS_COUNT],
                          const char *params) {
  JW(o, "{\"name\":");
  jw_str(o, name);
  JW(o, ",\"created_at\":");
  jw_time(o, created_at);
  JW(o, ",\"size\":%u,\"reviewed\":%u,\"progress\":{", n, n - by[ST_QUEUED] - by[ST_IN_REVIEW] - by[ST_OPEN]);
  for (int s = 0; s < ST_STATUS_COUNT; s++) JW(o, "%s\"%s\":%u", s ? "," : "", st_status_name(s), by[s]);
  JW(o, "},\"params\":");
  jw_json(o, params ? params : "{}");
  JW(o, "}");
}

int answer_of(const wop *op, int *status, char **body) {
  jw o = {0};
  *body = NULL;
  switch (op->kind) {
  case WOP_REVIEW:
    review_body(&o, (const review_op *)op);
    *status = 200;
    break;
  case WOP_META: {
    const meta_op *m = (const meta_op *)op;
    JW(&o, "{\"id\":");
    jw_str(&o, m->id);
    JW(&o, ",\"meta\":");
    jw_json(&o, m->meta);
    JW(&o, "}");
    *status = 200;
    break;
  }
  case WOP_QUEUE: {
    /* the queue as committed: its summary was taken by the writer as it wrote it, so that a later change
     * (even its removal) cannot make the answer to its creation wrong */
    const queue_op *q = (const queue_op *)op;
    answer_queue_summary(&o, q->p.name, q->created_at / 1000, q->size, q->progress, q->p.params_json);
    *status = 201;
    break;
  }
  case WOP_DELETE_DATASET:
    /* counted by the writer as it deleted (store_batch.c) */
    JW(&o, "{\"deleted\":");
    jw_str(&o, op->dataset);
    JW(&o, ",\"samples\":%lld,\"observations\":%lld}", (long long)op->deleted_samples,
       (long long)op->deleted_observations);
    *status = 200;
    break;
  case WOP_QUEUE_DELETE: {
    const queue_op *q = (const queue_op *)op;
    JW(&o, "{\"deleted\":");
    jw_str(&o, q->p.name);
    JW(&o, ",\"released\":%u}", q->released);
    *status = 200;
    break;
  }
  default: return -1;
  }
  *body = buf_take(&o, NULL); /* NULL when an append failed */
  return *body ? 0 : -1;
}
