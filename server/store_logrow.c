/* store_logrow.c — the rows a cluster node writes to the shared log, and reads back: a batch, or a change
 * of the review loop.
 *
 * A batch's row is a JSON head (everything but the payload), a NUL, then the codec payload. A change of
 * the review loop, or a dataset's deletion, is the request that made it, re-encoded from the op so that
 * the request's own decoder reads it back, with the time the writer gave it. The request is held as a JSON
 * string, not as an object inside the row: a request nested as deep as the parser takes (2048 levels, a
 * sample's meta) would be one level too deep for it inside the row, and no node could read the row back.
 * Rows that hold the request as an object (written before) are read too. Nothing here touches a database:
 * store_cluster.c appends and copies the rows.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pglog.h"
#include "jtext.h"
#include "review.h"
#include "store_internal.h"

/* ------------------------------------------------------------------ a batch's row */

/* The row's body: a JSON head (everything but the payload), a NUL, then the codec payload. Returns a
 * malloc'd body and its length, or NULL when memory ran out. */
unsigned char *store__logrow_batch_body(const store_logged_batch *b, size_t *len) {
  json_t *h = json_pack("{s:s, s:i, s:I, s:I, s:I, s:s, s:I}", "run", b->run, "classes", (int)b->classes,
                        "ds_created", (json_int_t)b->ds_created, "run_created", (json_int_t)b->run_created, "n",
                        (json_int_t)b->n, "loss_config", b->loss_config, "received_at", (json_int_t)b->received_at);
  int bad = !h;
  if (!bad && b->batch_id) bad |= json_object_set_new(h, "batch_id", json_string(b->batch_id));
  if (!bad && b->batch_id && b->segments > 0) bad |= json_object_set_new(h, "segments", json_integer(b->segments));
  if (!bad && b->has_epoch) bad |= json_object_set_new(h, "epoch", json_integer(b->epoch));
  if (!bad && b->has_step) bad |= json_object_set_new(h, "step", json_integer(b->step));
  if (!bad && b->meta) bad |= json_object_set_new(h, "meta", json_string(b->meta));
  char *head = bad ? NULL : jtext_dump(h, JSON_COMPACT);
  json_decref(h);
  if (!head) return NULL;
  const size_t hl = strlen(head) + 1;
  unsigned char *body = malloc(hl + b->plen);
  if (body) {
    memcpy(body, head, hl);
    if (b->plen) memcpy(body + hl, b->payload, b->plen);
    *len = hl + b->plen;
  }
  free(head);
  return body;
}

/* Reads a row's body back into *b, whose strings borrow from *root (the caller decrefs it) and the body.
 * Returns 0, or -1 for a body focald did not write. */
int store__logrow_batch_unbody(const void *body, size_t len, const char *dataset, store_logged_batch *b, json_t **root) {
  memset(b, 0, sizeof *b);
  const char *nul = memchr(body, 0, len);
  if (!nul) return -1;
  const size_t hl = (size_t)(nul - (const char *)body);
  json_t *h = *root = jtext_loadb(body, hl, JSON_REJECT_DUPLICATES, NULL, NULL);
  json_int_t classes = 0, dsc = 0, rc = 0, n = 0, at = 0;
  const char *run = NULL, *cfg = NULL;
  if (!h || json_unpack(h, "{s:s, s:I, s:I, s:I, s:I, s:s, s:I}", "run", &run, "classes", &classes, "ds_created", &dsc,
                        "run_created", &rc, "n", &n, "loss_config", &cfg, "received_at", &at) != 0)
    return -1;
  const json_t *bid = json_object_get(h, "batch_id"), *ep = json_object_get(h, "epoch"),
               *st = json_object_get(h, "step"), *meta = json_object_get(h, "meta"),
               *segs = json_object_get(h, "segments"); /* absent from rows of focald before schema 11 */
  if ((bid && !json_is_string(bid)) || (ep && !json_is_integer(ep)) || (st && !json_is_integer(st)) ||
      (meta && !json_is_string(meta)) || classes < 1 || classes > INT32_MAX || n < 0 ||
      (segs && (!bid || !json_is_integer(segs) || json_integer_value(segs) < 1)))
    return -1;
  *b = (store_logged_batch){.dataset = dataset, .run = run, .classes = (int32_t)classes, .ds_created = dsc,
                            .run_created = rc, .batch_id = bid ? json_string_value(bid) : NULL,
                            .segments = segs ? json_integer_value(segs) : 0, .has_epoch = !!ep,
                            .has_step = !!st, .epoch = ep ? json_integer_value(ep) : 0,
                            .step = st ? json_integer_value(st) : 0, .n = n, .loss_config = cfg, .received_at = at,
                            .meta = meta ? json_string_value(meta) : NULL,
                            .payload = (const char *)body + hl + 1, .plen = len - hl - 1};
  return 0;
}

/* ------------------------------------------------------------------ the review loop's changes */

/* A request object as the JSON string a row holds (a new reference, or NULL when memory ran out); steals
 * request. */
static json_t *request_text(json_t *request) {
  char *text = jtext_dump(request, JSON_COMPACT);
  json_decref(request);
  json_t *out = text ? json_string(text) : NULL;
  free(text);
  return out;
}

/* A change of the review loop, or a dataset's deletion, is logged as the request that made it (re-encoded
 * from the op, so that the same decoder reads it back) and the time the writer gave it: every node runs the
 * same op's write and apply against the same state, and reaches the same result. */
static json_t *op_request(const wop *op) {
  switch (op->kind) {
  case WOP_REVIEW: {
    const review_op *r = (const review_op *)op;
    json_t *request = json_pack("{s:s}", "status", st_status_name(r->to)), *label = NULL;
    int bad = !request;
    if (!bad && r->label) bad |= !(label = jtext_loads(r->label, JSON_DECODE_ANY, NULL, NULL)) ||
                                 json_object_set_new(request, "label", label) != 0;
    if (!bad && r->reviewer) bad |= json_object_set_new(request, "reviewer", json_string(r->reviewer)) != 0;
    if (!bad && r->note) bad |= json_object_set_new(request, "note", json_string(r->note)) != 0;
    if (bad) {
      json_decref(request);
      return NULL;
    }
    json_t *text = request_text(request);
    return text ? json_pack("{s:s, s:I, s:o}", "id", r->id, "at", (json_int_t)r->at, "req", text) : NULL;
  }
  case WOP_META: {
    const meta_op *m = (const meta_op *)op;
    json_t *text = json_string(m->meta);
    return text ? json_pack("{s:s, s:o}", "id", m->id, "req", text) : NULL;
  }
  case WOP_QUEUE: {
    const queue_op *q = (const queue_op *)op;
    json_t *text = json_string(q->p.params_json);
    return text ? json_pack("{s:I, s:o}", "at", (json_int_t)q->created_at, "req", text) : NULL;
  }
  case WOP_QUEUE_DELETE: {
    const queue_op *q = (const queue_op *)op;
    return json_pack("{s:s, s:I}", "name", q->p.name, "at", (json_int_t)q->created_at);
  }
  case WOP_DELETE_DATASET: return json_object();
  default: return NULL;
  }
}

/* The row's body, with the change's Idempotency-Key when it had one: every node records the key with the
 * change it applies, so a retry sent to any of them is recognised. */
json_t *store__logrow_op_request(const wop *op) {
  json_t *row = op_request(op);
  if (row && op->idem_key[0] && json_object_set_new(row, "idem", json_string(op->idem_key)) != 0) {
    json_decref(row);
    row = NULL;
  }
  return row;
}

/* The op a logged change stands for, decoded as its request was (NULL for a row focald cannot read). The
 * caller frees it with review_op_free (or free, for a deletion). */
wop *store__logrow_op_of_row(const pglog_row *row) {
  const int kind = row->kind - ROW_OP_BASE;
  json_t *root = jtext_loadb(row->body, row->len, JSON_REJECT_DUPLICATES, NULL, NULL);
  const json_t *request = json_object_get(root, "req"), *at = json_object_get(root, "at");
  /* the request's text (or, in an older row, the request itself) */
  char *text = json_is_string(request) ? strdup(json_string_value(request))
               : request               ? jtext_dump(request, JSON_COMPACT)
                                       : NULL;
  const char *id = json_string_value(json_object_get(root, "id")), *name = json_string_value(json_object_get(root, "name"));
  const json_t *idem = json_object_get(root, "idem");
  problem err;
  wop *op = NULL;
  int bad = !root || (idem && (!json_is_string(idem) || json_string_length(idem) < 1 ||
                               json_string_length(idem) > IDEM_KEY_MAX));
  switch (bad ? -1 : kind) {
  case WOP_REVIEW: {
    review_op *r = calloc(1, sizeof *r);
    op = &r->op;
    bad = !r || !text || !id || strlen(id) > REQ_ID_MAX || !json_is_integer(at) ||
          review_decode_logged(text, strlen(text), r, &err) != 0;
    if (!bad) {
      snprintf(r->id, sizeof r->id, "%s", id);
      r->at = json_integer_value(at);
    }
    break;
  }
  case WOP_META: {
    meta_op *m = calloc(1, sizeof *m);
    op = &m->op;
    bad = !m || !text || !id || strlen(id) > REQ_ID_MAX || meta_decode(text, strlen(text), m, &err) != 0;
    if (!bad) snprintf(m->id, sizeof m->id, "%s", id);
    break;
  }
  case WOP_QUEUE:
  case WOP_QUEUE_DELETE: {
    queue_op *q = calloc(1, sizeof *q);
    op = &q->op;
    if (!q || !json_is_integer(at)) bad = 1;
    else if (kind == WOP_QUEUE) bad = !text || queue_decode(text, strlen(text), &q->p, &err) != 0;
    else if (!name || strlen(name) > ST_NAME_MAX) bad = 1;
    else snprintf(q->p.name, sizeof q->p.name, "%s", name);
    if (q && !bad) q->created_at = json_integer_value(at);
    break;
  }
  case WOP_DELETE_DATASET: op = calloc(1, sizeof *op); bad = !op; break;
  default: bad = 1;
  }
  if (op && idem && !bad) snprintf(op->idem_key, sizeof op->idem_key, "%s", json_string_value(idem));
  free(text);
  json_decref(root);
  if (op) {
    op->kind = (wop_kind)kind;
    snprintf(op->dataset, sizeof op->dataset, "%s", row->dataset);
    op->log_pos = row->pos;
  }
  if (bad && op) {
    review_op_free(op);
    op = NULL;
  }
  return op;
}
