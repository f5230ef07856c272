/* store_review.c — the writer's side of the review loop: status changes and their audit
 * trail, sample meta, review queues.
 *
 * Each operation is checked against the dataset in memory, which is the
 * committed state: the writer starts a new group before such an op when an
 * earlier op of the group changed what it reads (store_group.c's must_wait: for a
 * review or meta put, an op on its dataset as a whole or on the same sample;
 * for a queue, any op on its dataset). It writes its rows
 * in the group's transaction, prepares everything memory will take (the audit
 * entries with their strings, room for them), and is applied after the commit.
 * Unlike batches, these changes are not derived from the batch log: the
 * samples row, review_log and the queue tables are their record. A samples
 * row is written for every key below the one changed first, so that the
 * samples table stays a prefix of the keys.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "review.h"
#include "store_internal.h"

/* The committed dataset op names, or a 404 on op. */
static st_dataset *find_dataset(store *s, wop *op) {
  st_dataset *ds = st_w_find_name(s->map, op->dataset);
  if (!ds) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
  }
  return ds;
}

/* The dataset's state and the sample's key, or a 404 on op. */
static int find_sample(store *s, wop *op, const char *id, st_dataset **ds, uint32_t *key) {
  if (!(*ds = find_dataset(s, op))) return -1;
  int64_t k = st_key(*ds, id);
  if (k < 0) {
    op->failed = 1;
    problem_set(&op->err, P_SAMPLE_NOT_FOUND, NULL, "dataset \"%s\" has no sample \"%.200s\"", op->dataset, id);
    return -1;
  }
  *key = (uint32_t)k;
  return 0;
}

static char *dup_or_null(const char *s, int *oom) {
  char *d = s ? strdup(s) : NULL;
  if (s && !d) *oom = 1;
  return d;
}

/* A samples row as it will be after the change. */
static int write_sample_row(store *s, const st_dataset *ds, uint32_t key, const char *meta, int status, const char *corrected,
                     float confirm, int64_t meta_seq) {
  sqlite3_stmt *q = s->st[S_SAMPLE_UPSERT];
  sqlite3_bind_int64(q, 1, st_id(ds));
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_text(q, 3, st_sample_id(ds, key), -1, SQLITE_STATIC);
  if (meta) sqlite3_bind_text(q, 4, meta, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, status);
  if (corrected) sqlite3_bind_text(q, 6, corrected, -1, SQLITE_STATIC);
  if (confirm >= 0.0f) sqlite3_bind_double(q, 7, confirm);
  sqlite3_bind_int64(q, 8, meta_seq);
  return store__step_done(q);
}

/* Writes the rows below key that the table does not have yet; op remembers how far, for the group (which counts
 * them once op is kept) and for the apply. */
static int write_prefix(store *s, wop *op, st_dataset *ds, uint32_t key) {
  uint32_t upto = 0;
  int rc = store__write_prefix(s, ds, key, &upto);
  if (upto > op->persist_to) op->persist_to = upto;
  return rc;
}

/* Logs one change; e is the audit entry memory will take (its seq is set here). */
static int log_change(store *s, const st_dataset *ds, uint32_t key, st_review *e) {
  sqlite3_stmt *q = s->st[S_REVIEW_LOG];
  sqlite3_bind_int64(q, 1, st_id(ds));
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_int64(q, 3, e->at);
  if (e->reviewer) sqlite3_bind_text(q, 4, e->reviewer, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, e->from);
  sqlite3_bind_int(q, 6, e->to);
  if (e->label_before) sqlite3_bind_text(q, 7, e->label_before, -1, SQLITE_STATIC);
  if (e->label_after) sqlite3_bind_text(q, 8, e->label_after, -1, SQLITE_STATIC);
  if (e->note) sqlite3_bind_text(q, 9, e->note, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 10, e->batch_seq); /* batches up to it came before this change */
  int rc = store__step_done(q);
  if (rc == SQLITE_OK) e->seq = sqlite3_last_insert_rowid(s->db);
  return rc;
}

/* The label a review changes from: the correction in force, or else the
 * training label. Returns malloc'd JSON, or NULL (*oom set when memory ran out). */
static char *label_before(const st_dataset *ds, uint32_t key, int *oom) {
  const char *corrected = st_corrected(ds, key);
  if (corrected) return dup_or_null(corrected, oom);
  int32_t l = st_training_label(ds, NULL, key);
  if (l < 0) return NULL;
  char text[16];
  snprintf(text, sizeof text, "%d", l);
  return dup_or_null(text, oom);
}

static void entry_free(st_review *e) {
  free(e->reviewer);
  free(e->label_before);
  free(e->label_after);
  free(e->note);
  memset(e, 0, sizeof *e);
}

/* A status change by focald itself (building or removing a queue): its audit entry, prepared. */
static int system_entry(const st_dataset *ds, uint32_t key, int from, int to, int64_t at, int64_t batch_seq, const char *note,
                        st_review *e) {
  int oom = 0;
  *e = (st_review){.batch_seq = batch_seq, .prev = -1, .key = key, .at = at, .from = (uint8_t)from, .to = (uint8_t)to};
  e->reviewer = dup_or_null("focald", &oom);
  e->label_before = label_before(ds, key, &oom);
  e->note = dup_or_null(note, &oom);
  if (oom) entry_free(e);
  return oom ? -1 : 0;
}

/* ------------------------------------------------------------------ a review decision */

static int review_write(store *s, wop *op) {
  review_op *r = (review_op *)op;
  st_dataset *ds;
  uint32_t key;
  if (find_sample(s, op, r->id, &ds, &key)) return SQLITE_OK;
  r->from = st_sample_status(ds, key);
  if (!review_allowed(r->from, r->to)) {
    op->failed = 1;
    problem_set(&op->err, P_CONFLICT, "/status", "sample \"%.200s\" is %s: it cannot go to %s%s", r->id,
                st_status_name(r->from), st_status_name(r->to),
                r->from == r->to ? "" : "; a decision is reopened first (status open or in_review)");
    return SQLITE_OK;
  }
  int oom = 0;
  const char *corrected = r->to == ST_RELABELLED ? r->label : NULL;
  r->key = key;
  if (!r->at) r->at = store__unix_ms(); /* a cluster node applying another's decision takes its time */
  r->confirm_score = r->to == ST_CONFIRMED ? st_max_ema(ds, key) : NAN;
  r->label_before = label_before(ds, key, &oom);
  r->corrected = dup_or_null(corrected, &oom);
  r->entry = (st_review){.batch_seq = op->batch_seq, .prev = -1, .key = key, .at = r->at, .from = (uint8_t)r->from,
                         .to = (uint8_t)r->to};
  r->entry.reviewer = dup_or_null(r->reviewer, &oom);
  r->entry.label_before = dup_or_null(r->label_before, &oom);
  r->entry.label_after = dup_or_null(corrected, &oom);
  r->entry.note = dup_or_null(r->note, &oom);
  if (oom || st_prepare_reviews(s->map, ds, 1) != 0) {
    store__oom(op);
    return SQLITE_OK;
  }
  op->ds_id = st_id(ds);
  int rc = write_prefix(s, op, ds, key);
  if (rc == SQLITE_OK)
    rc = write_sample_row(s, ds, key, st_meta(ds, key), r->to, corrected, r->confirm_score, st_meta_seq(ds, key));
  if (rc == SQLITE_OK) rc = log_change(s, ds, key, &r->entry);
  r->seq = r->entry.seq;
  return rc;
}

static void review_apply(store *s, wop *op) {
  review_op *r = (review_op *)op;
  st_dataset *ds = st_w_find(s->map, op->ds_id);
  st_apply_status(ds, r->key, r->to, r->corrected, r->confirm_score, &r->entry);
  r->corrected = NULL;
  memset(&r->entry, 0, sizeof r->entry); /* the strings are the dataset's now */
  st_set_persisted(ds, op->persist_to);
}

static void review_discard(store *s, wop *op) {
  (void)s;
  review_op *r = (review_op *)op;
  free(r->corrected);
  r->corrected = NULL;
  entry_free(&r->entry);
}

/* ------------------------------------------------------------------ meta */

static int meta_write(store *s, wop *op) {
  meta_op *m = (meta_op *)op;
  st_dataset *ds;
  uint32_t key;
  if (find_sample(s, op, m->id, &ds, &key)) return SQLITE_OK;
  if (!(m->stored = strdup(m->meta))) {
    store__oom(op);
    return SQLITE_OK;
  }
  m->key = key;
  op->ds_id = st_id(ds);
  int rc = write_prefix(s, op, ds, key);
  /* batches up to op->batch_seq are older than this edit; replaying them must not undo it */
  if (rc == SQLITE_OK)
    rc = write_sample_row(s, ds, key, m->meta, st_sample_status(ds, key), st_corrected(ds, key), st_confirm_score(ds, key), op->batch_seq);
  return rc;
}

static void meta_apply(store *s, wop *op) {
  meta_op *m = (meta_op *)op;
  st_dataset *ds = st_w_find(s->map, op->ds_id);
  st_apply_meta(ds, m->key, m->stored, op->batch_seq);
  m->stored = NULL;
  st_set_persisted(ds, op->persist_to);
}

static void meta_discard(store *s, wop *op) {
  (void)s;
  meta_op *m = (meta_op *)op;
  free(m->stored);
  m->stored = NULL;
}

/* ------------------------------------------------------------------ queues */

/* The status changes of a queue op, with their audit entries, prepared: n entries. */
static int changes_alloc(queue_op *q, uint32_t n) {
  q->change_keys = calloc(n ? n : 1, sizeof *q->change_keys);
  q->changes = calloc(n ? n : 1, sizeof *q->changes);
  return q->change_keys && q->changes ? 0 : -1;
}

static void changes_free(queue_op *q) {
  for (uint32_t i = 0; q->changes && i < q->nchanges; i++) entry_free(&q->changes[i]);
  free(q->changes);
  free(q->change_keys);
  q->changes = NULL;
  q->change_keys = NULL;
  q->nchanges = 0;
}

/* Writes each prepared change: the sample's row with its new status, and its audit entry. */
static int write_changes(store *s, queue_op *q, const st_dataset *ds) {
  int rc = SQLITE_OK;
  for (uint32_t i = 0; i < q->nchanges && rc == SQLITE_OK; i++) {
    const uint32_t key = q->change_keys[i];
    rc = write_sample_row(s, ds, key, st_meta(ds, key), q->changes[i].to, NULL, NAN, st_meta_seq(ds, key));
    if (rc == SQLITE_OK) rc = log_change(s, ds, key, &q->changes[i]);
  }
  return rc;
}

static int queue_write(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = find_dataset(s, op);
  if (!ds) return SQLITE_OK;
  if (st_find_queue(ds, q->p.name)) {
    op->failed = 1;
    problem_set(&op->err, P_CONFLICT, "/name", "dataset \"%s\" already has a queue named \"%s\"", op->dataset, q->p.name);
    return SQLITE_OK;
  }
  uint32_t *keys = NULL, n = 0;
  float *scores = NULL;
  if (queue_select(ds, &q->p, s->cfg->reconsider_factor, &keys, &scores, &n, &op->err) != 0) {
    op->failed = 1;
    return SQLITE_OK;
  }
  /* one time for the queue and its audit entries: milliseconds here, seconds on the queue */
  if (!q->created_at) q->created_at = store__unix_ms(); /* or, on a cluster node, the log's */
  char note[100];
  snprintf(note, sizeof note, "queue %s", q->p.name);
  st_queue *queue = q->queue = calloc(1, sizeof *queue);
  int oom = !queue || changes_alloc(q, n) != 0;
  if (queue) {
    snprintf(queue->name, sizeof queue->name, "%s", q->p.name);
    queue->created_at = q->created_at / 1000;
    queue->params = dup_or_null(q->p.params_json, &oom);
    queue->n = n;
    queue->keys = keys;
    queue->scores = scores;
  } else {
    free(keys);
    free(scores);
  }
  uint32_t maxkey = 0;
  for (uint32_t i = 0; !oom && i < n; i++) {
    const uint32_t key = keys[i];
    if (key > maxkey) maxkey = key;
    q->change_keys[i] = key;
    if (system_entry(ds, key, st_sample_status(ds, key), ST_QUEUED, q->created_at, op->batch_seq, note, &q->changes[i]) != 0) oom = 1;
    else q->nchanges++;
  }
  if (oom || st_prepare_reviews(s->map, ds, (int)n) != 0 || st_prepare_queue(s->map, ds) != 0) {
    store__oom(op);
    return SQLITE_OK;
  }
  op->ds_id = st_id(ds);
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "INSERT INTO queues (dataset_id, name, created_at, params) VALUES (?1, ?2, ?3, ?4)", -1,
                              &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_int64(st, 1, st_id(ds));
  sqlite3_bind_text(st, 2, q->p.name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, queue->created_at);
  sqlite3_bind_text(st, 4, q->p.params_json, -1, SQLITE_STATIC);
  rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) return rc;
  queue->id = sqlite3_last_insert_rowid(s->db);
  rc = sqlite3_prepare_v2(s->db, "INSERT INTO queue_items (queue_id, position, key, score) VALUES (?1, ?2, ?3, ?4)", -1, &st,
                          NULL);
  if (rc != SQLITE_OK) return rc;
  for (uint32_t i = 0; i < n && rc == SQLITE_OK; i++) {
    sqlite3_bind_int64(st, 1, queue->id);
    sqlite3_bind_int64(st, 2, (int64_t)i + 1);
    sqlite3_bind_int64(st, 3, keys[i]);
    sqlite3_bind_double(st, 4, scores[i]);
    rc = store__step_done(st);
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_OK && n > 0) rc = write_prefix(s, op, ds, maxkey);
  if (rc == SQLITE_OK) rc = write_changes(s, q, ds);
  /* the answer: the queue as built, each of its samples in the status its change gives it. Set here, not
   * by the apply: on a cluster node whose local commit fails after the log's, the op is answered 2xx but
   * never applied to memory (the catch-up applies the logged row instead) */
  q->size = n;
  memset(q->progress, 0, sizeof q->progress);
  for (uint32_t i = 0; i < q->nchanges; i++) q->progress[q->changes[i].to]++;
  return rc;
}

static void queue_apply(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = st_w_find(s->map, op->ds_id);
  st_queue *queue = q->queue;
  q->queue = NULL;
  st_apply_queue(ds, queue, q->nchanges, q->change_keys, q->changes);
  st_set_persisted(ds, op->persist_to);
  changes_free(q);
}

static void queue_discard(store *s, wop *op) {
  (void)s;
  queue_op *q = (queue_op *)op;
  st_queue_free(q->queue);
  q->queue = NULL;
  changes_free(q);
}

/* Whether a queue of ds other than q lists key: a sample queued again by a later queue stays queued
 * when an earlier queue that also lists it is removed. */
static int held_elsewhere(const st_dataset *ds, const st_queue *q, uint32_t key) {
  for (int i = 0; i < st_nqueues(ds); i++) {
    const st_queue *o = st_queue_at(ds, i);
    if (o == q) continue;
    for (uint32_t j = 0; j < o->n; j++)
      if (o->keys[j] == key) return 1;
  }
  return 0;
}

static int queue_delete_write(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = find_dataset(s, op);
  if (!ds) return SQLITE_OK;
  const st_queue *queue = st_find_queue(ds, q->p.name);
  if (!queue) {
    op->failed = 1;
    problem_set(&op->err, P_NOT_FOUND, NULL, "dataset \"%s\" has no queue named \"%s\"", op->dataset, q->p.name);
    return SQLITE_OK;
  }
  char note[100];
  snprintf(note, sizeof note, "queue %s removed", q->p.name);
  if (!q->created_at) q->created_at = store__unix_ms(); /* when the samples were released (or the log's time) */
  int oom = changes_alloc(q, queue->n) != 0;
  for (uint32_t i = 0; !oom && i < queue->n; i++) {
    const uint32_t key = queue->keys[i];
    /* reviewed, or taken into review: the reviewer's */
    if (st_sample_status(ds, key) != ST_QUEUED || held_elsewhere(ds, queue, key)) continue;
    q->change_keys[q->nchanges] = key;
    if (system_entry(ds, key, ST_QUEUED, ST_OPEN, q->created_at, op->batch_seq, note, &q->changes[q->nchanges]) != 0) oom = 1;
    else q->nchanges++;
  }
  if (oom || st_prepare_reviews(s->map, ds, (int)q->nchanges) != 0) {
    store__oom(op);
    return SQLITE_OK;
  }
  op->ds_id = st_id(ds);
  q->released = q->nchanges; /* the answer, set by the write as queue_write's is */
  int rc = write_changes(s, q, ds);
  static const char *const del[] = {"DELETE FROM queue_items WHERE queue_id = ?1", "DELETE FROM queues WHERE id = ?1"};
  for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, del[i], -1, &st, NULL);
    if (rc != SQLITE_OK) break;
    sqlite3_bind_int64(st, 1, queue->id);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    sqlite3_finalize(st);
  }
  return rc;
}

static void queue_delete_apply(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = st_w_find(s->map, op->ds_id);
  st_apply_queue_delete(ds, q->p.name, q->nchanges, q->change_keys, q->changes);
  changes_free(q);
}

const wop_class store__review_class = {review_write, review_apply, review_discard, 1};
const wop_class store__meta_class = {meta_write, meta_apply, meta_discard, 1};
const wop_class store__queue_class = {queue_write, queue_apply, queue_discard, 1};
const wop_class store__queue_delete_class = {queue_delete_write, queue_delete_apply, queue_discard, 1};
