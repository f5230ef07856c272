/* store_review.c — the writer's side of the review loop: status changes and their audit
 * trail, sample meta, review queues.
 *
 * Each operation is checked against the sample as the group's transaction has
 * it (the in-memory state, or the samples row where an earlier op of the same
 * group changed it: see read_row), written in that transaction, and applied to
 * memory after the commit, like a batch. Unlike batches these changes are not
 * derived from the batch log: the samples row, review_log and the queue tables
 * are their record.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "review.h"
#include "store_internal.h"

/* The dataset's state and the sample's key, or a 404 on op. */
static int find_sample(store *s, wop *op, const char *id, st_dataset **ds, uint32_t *key) {
  *ds = st_find(s->map, op->dataset);
  if (!*ds) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
    return -1;
  }
  int64_t k = st_sample_key(*ds, id);
  if (k < 0) {
    op->failed = 1;
    problem_set(&op->err, P_SAMPLE_NOT_FOUND, NULL, "dataset \"%s\" has no sample \"%.200s\"", op->dataset, id);
    return -1;
  }
  *key = (uint32_t)k;
  return 0;
}

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

/* A samples row as this transaction has it: the fields the review loop reads and rewrites. */
typedef struct sample_row {
  int status;
  char *corrected;  /* JSON, or NULL; owned */
  float confirm;    /* NaN when none */
  char *meta;       /* JSON object, or NULL; owned */
  int64_t meta_seq;
} sample_row;

static void row_clear(sample_row *r) {
  free(r->corrected);
  free(r->meta);
  memset(r, 0, sizeof *r);
}

/* Prepares the statement read_row uses (the caller finalizes it). */
static int row_stmt(store *s, sqlite3_stmt **q) {
  return sqlite3_prepare_v2(s->db,
                            "SELECT status, corrected_label, confirm_score, meta, meta_seq FROM samples "
                            "WHERE dataset_id = ?1 AND key = ?2",
                            -1, q, NULL);
}

/* Reads sample key as this transaction has it into *r (clear it with row_clear).
 * Memory is updated only after a group commits, so a change an earlier op of
 * the same group made (a review, a queue, a meta edit) shows only in the row:
 * without it, two reviews of one sample committed together would both pass the
 * transition check. The row is authoritative for the review fields, which only
 * these ops write; a batch's meta reaches the row only with the next snapshot,
 * so the row's meta wins only when it is at least as recent as memory's. */
static int read_row(sqlite3_stmt *q, const st_dataset *ds, uint32_t key, sample_row *r) {
  memset(r, 0, sizeof *r);
  r->status = ds->status[key];
  r->confirm = ds->confirm_score[key];
  r->meta_seq = ds->meta_seq[key];
  const char *corrected = ds->corrected[key], *meta = ds->meta[key];
  sqlite3_bind_int64(q, 1, ds->id);
  sqlite3_bind_int64(q, 2, key);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) {
    r->status = sqlite3_column_int(q, 0);
    corrected = (const char *)sqlite3_column_text(q, 1);
    r->confirm = sqlite3_column_type(q, 2) == SQLITE_NULL ? NAN : (float)sqlite3_column_double(q, 2);
    if (sqlite3_column_int64(q, 4) >= r->meta_seq) {
      meta = (const char *)sqlite3_column_text(q, 3);
      r->meta_seq = sqlite3_column_int64(q, 4);
    }
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  }
  if (rc == SQLITE_OK) {
    r->corrected = dup_or_null(corrected);
    r->meta = dup_or_null(meta);
    if ((corrected && !r->corrected) || (meta && !r->meta)) rc = SQLITE_NOMEM;
  }
  store__step_reset(q);
  return rc;
}

/* read_row for one sample, on a statement of its own. */
static int read_one_row(store *s, const st_dataset *ds, uint32_t key, sample_row *r) {
  sqlite3_stmt *q;
  memset(r, 0, sizeof *r);
  int rc = row_stmt(s, &q);
  if (rc != SQLITE_OK) return rc;
  rc = read_row(q, ds, key, r);
  sqlite3_finalize(q);
  return rc;
}

/* The samples row as it will be after the change: id, meta, status and review fields. */
static int write_row(store *s, const st_dataset *ds, uint32_t key, const char *meta, int status, const char *corrected,
                     float confirm, int64_t meta_seq) {
  sqlite3_stmt *q = s->st[S_SAMPLE_UPSERT];
  sqlite3_bind_int64(q, 1, ds->id);
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_text(q, 3, ds->ids[key], -1, SQLITE_STATIC);
  if (meta) sqlite3_bind_text(q, 4, meta, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, status);
  if (corrected) sqlite3_bind_text(q, 6, corrected, -1, SQLITE_STATIC);
  if (confirm >= 0.0f) sqlite3_bind_double(q, 7, confirm);
  sqlite3_bind_int64(q, 8, meta_seq);
  int rc = sqlite3_step(q);
  store__step_reset(q);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int log_change(store *s, const st_dataset *ds, uint32_t key, int64_t at, const char *reviewer, int from, int to,
                      const char *before, const char *after, const char *note, int64_t *seq) {
  sqlite3_stmt *q = s->st[S_REVIEW_LOG];
  sqlite3_bind_int64(q, 1, ds->id);
  sqlite3_bind_int64(q, 2, key);
  sqlite3_bind_int64(q, 3, at);
  if (reviewer) sqlite3_bind_text(q, 4, reviewer, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 5, from);
  sqlite3_bind_int(q, 6, to);
  if (before) sqlite3_bind_text(q, 7, before, -1, SQLITE_STATIC);
  if (after) sqlite3_bind_text(q, 8, after, -1, SQLITE_STATIC);
  if (note) sqlite3_bind_text(q, 9, note, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 10, s->logged_seq); /* the op's batch_seq: batches up to it came before this change */
  int rc = sqlite3_step(q);
  store__step_reset(q);
  if (rc != SQLITE_DONE) return rc;
  *seq = sqlite3_last_insert_rowid(s->db);
  return SQLITE_OK;
}

/* The label a review changes from: the correction in force (corrected), or
 * else the training label. Returns malloc'd JSON, or NULL. */
static char *label_before(const st_dataset *ds, uint32_t key, const char *corrected) {
  if (corrected) return strdup(corrected);
  int32_t l = review_training_label(ds, NULL, key);
  if (l < 0) return NULL;
  char buf[16];
  snprintf(buf, sizeof buf, "%d", l);
  return strdup(buf);
}

int store__sql_review(store *s, wop *op) {
  review_op *r = (review_op *)op;
  st_dataset *ds;
  uint32_t key;
  if (find_sample(s, op, r->id, &ds, &key)) return SQLITE_OK;
  sample_row row;
  int rc = read_one_row(s, ds, key, &row);
  if (rc != SQLITE_OK) goto out;
  r->from = row.status;
  if (!review_allowed(r->from, r->to)) {
    op->failed = 1;
    problem_set(&op->err, P_CONFLICT, "/status", "sample \"%.200s\" is %s: it cannot go to %s%s", r->id,
                st_status_name(r->from), st_status_name(r->to),
                r->from == r->to ? "" : "; a decision is reopened first (status open or in_review)");
    goto out;
  }
  r->label_before = label_before(ds, key, row.corrected);
  r->at = store__unix_ms();
  r->confirm_score = r->to == ST_CONFIRMED ? st_max_ema(ds, key) : NAN;
  const char *corrected = r->to == ST_RELABELLED ? r->label : NULL;
  rc = write_row(s, ds, key, row.meta, r->to, corrected, r->confirm_score, row.meta_seq);
  if (rc == SQLITE_OK)
    rc = log_change(s, ds, key, r->at, r->reviewer, r->from, r->to, r->label_before, corrected, r->note, &r->seq);
out:
  row_clear(&row);
  return rc;
}

int store__sql_meta(store *s, wop *op) {
  meta_op *m = (meta_op *)op;
  st_dataset *ds;
  uint32_t key;
  if (find_sample(s, op, m->id, &ds, &key)) return SQLITE_OK;
  sample_row row;
  int rc = read_one_row(s, ds, key, &row);
  /* batches up to op->batch_seq are older than this edit; replaying them must not undo it */
  if (rc == SQLITE_OK) rc = write_row(s, ds, key, m->meta, row.status, row.corrected, row.confirm, op->batch_seq);
  row_clear(&row);
  return rc;
}

int store__sql_queue(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = st_find(s->map, op->dataset);
  if (!ds) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
    return SQLITE_OK;
  }
  if (st_find_queue(ds, q->p.name)) {
    op->failed = 1;
    problem_set(&op->err, P_CONFLICT, "/name", "dataset \"%s\" already has a queue named \"%s\"", op->dataset, q->p.name);
    return SQLITE_OK;
  }
  if (queue_select(ds, &q->p, s->cfg.reconsider_factor, &q->keys, &q->scores, &q->n, &op->err) != 0) {
    op->failed = 1;
    return SQLITE_OK;
  }
  /* one time for the queue and its audit entries: milliseconds here, seconds on the queue */
  q->created_at = store__unix_ms();
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(s->db, "INSERT INTO queues (dataset_id, name, created_at, params) VALUES (?1, ?2, ?3, ?4)", -1,
                              &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_int64(st, 1, ds->id);
  sqlite3_bind_text(st, 2, q->p.name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, q->created_at / 1000);
  sqlite3_bind_text(st, 4, q->p.params_json, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  if (rc == SQLITE_CONSTRAINT) {
    /* a queue of that name made earlier in this group */
    op->failed = 1;
    problem_set(&op->err, P_CONFLICT, "/name", "dataset \"%s\" already has a queue named \"%s\"", op->dataset, q->p.name);
    return SQLITE_OK;
  }
  if (rc != SQLITE_DONE) return rc;
  q->queue_id = sqlite3_last_insert_rowid(s->db);
  sqlite3_stmt *rowq;
  rc = row_stmt(s, &rowq);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_prepare_v2(s->db, "INSERT INTO queue_items (queue_id, position, key, score) VALUES (?1, ?2, ?3, ?4)", -1,
                          &st, NULL);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(rowq);
    return rc;
  }
  char note[100];
  snprintf(note, sizeof note, "queue %s", q->p.name);
  q->seqs = calloc(q->n ? q->n : 1, sizeof *q->seqs);
  if (!q->seqs) rc = SQLITE_NOMEM;
  uint32_t n = 0; /* the samples kept, compacted in place */
  for (uint32_t i = 0; i < q->n && rc == SQLITE_OK; i++) {
    const uint32_t key = q->keys[i];
    sample_row row;
    rc = read_row(rowq, ds, key, &row);
    /* the selection saw memory: a sample an earlier op of this group changed is not taken */
    if (rc == SQLITE_OK && row.status != ds->status[key]) {
      row_clear(&row);
      continue;
    }
    q->keys[n] = key;
    q->scores[n] = q->scores[i];
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(st, 1, q->queue_id);
      sqlite3_bind_int64(st, 2, (int64_t)n + 1);
      sqlite3_bind_int64(st, 3, key);
      sqlite3_bind_double(st, 4, q->scores[n]);
      rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
      store__step_reset(st);
    }
    char *before = label_before(ds, key, row.corrected);
    if (rc == SQLITE_OK) rc = write_row(s, ds, key, row.meta, ST_QUEUED, NULL, NAN, row.meta_seq);
    if (rc == SQLITE_OK) rc = log_change(s, ds, key, q->created_at, "focald", row.status, ST_QUEUED, before, NULL, note, &q->seqs[n]);
    free(before);
    row_clear(&row);
    n++;
  }
  q->n = n;
  sqlite3_finalize(st);
  sqlite3_finalize(rowq);
  return rc;
}

/* Whether a queue of ds other than q lists key: a sample queued again by a later queue stays queued
 * when an earlier queue that also lists it is removed. */
static int held_elsewhere(const st_dataset *ds, const st_queue *q, uint32_t key) {
  for (int i = 0; i < ds->nqueues; i++) {
    const st_queue *o = ds->queues[i];
    if (o == q) continue;
    for (uint32_t j = 0; j < o->n; j++)
      if (o->keys[j] == key) return 1;
  }
  return 0;
}

int store__sql_queue_delete(store *s, wop *op) {
  queue_op *q = (queue_op *)op;
  st_dataset *ds = st_find(s->map, op->dataset);
  if (!ds) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
    return SQLITE_OK;
  }
  st_queue *queue = st_find_queue(ds, q->p.name);
  if (!queue) {
    op->failed = 1;
    problem_set(&op->err, P_NOT_FOUND, NULL, "dataset \"%s\" has no queue named \"%s\"", op->dataset, q->p.name);
    return SQLITE_OK;
  }
  q->queue_id = queue->id;
  char note[100];
  snprintf(note, sizeof note, "queue %s removed", q->p.name);
  q->created_at = store__unix_ms(); /* when the samples were released */
  q->seqs = calloc(queue->n ? queue->n : 1, sizeof *q->seqs);
  sqlite3_stmt *rowq = NULL;
  int rc = q->seqs ? row_stmt(s, &rowq) : SQLITE_NOMEM;
  for (uint32_t i = 0; i < queue->n && rc == SQLITE_OK; i++) {
    const uint32_t key = queue->keys[i];
    sample_row row;
    rc = read_row(rowq, ds, key, &row);
    /* reviewed, or taken into review: the reviewer's */
    if (rc == SQLITE_OK && row.status == ST_QUEUED && !held_elsewhere(ds, queue, key)) {
      char *before = label_before(ds, key, row.corrected);
      rc = write_row(s, ds, key, row.meta, ST_OPEN, NULL, NAN, row.meta_seq);
      if (rc == SQLITE_OK) rc = log_change(s, ds, key, q->created_at, "focald", ST_QUEUED, ST_OPEN, before, NULL, note, &q->seqs[i]);
      free(before);
    }
    row_clear(&row);
  }
  sqlite3_finalize(rowq);
  static const char *const del[] = {"DELETE FROM queue_items WHERE queue_id = ?1", "DELETE FROM queues WHERE id = ?1"};
  for (int i = 0; i < 2 && rc == SQLITE_OK; i++) {
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, del[i], -1, &st, NULL);
    if (rc != SQLITE_OK) break;
    sqlite3_bind_int64(st, 1, q->queue_id);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
    sqlite3_finalize(st);
  }
  return rc;
}

/* ------------------------------------------------------------------ after the commit */

/* Applies one committed status change (and its audit entry) to memory. */
static void apply_status(st_dataset *ds, uint32_t key, int from, int to, const char *corrected, float confirm, int64_t seq,
                         int64_t batch_seq, int64_t at, const char *reviewer, const char *before, const char *note) {
  ds->status[key] = (uint8_t)to;
  st_sample_set_corrected(ds, key, corrected);
  ds->confirm_score[key] = confirm;
  st_review e = {seq, batch_seq, -1, key, at, (uint8_t)from, (uint8_t)to, dup_or_null(reviewer), dup_or_null(before),
                 dup_or_null(corrected), dup_or_null(note)};
  if (st_add_review(ds, &e) != 0) log_msg(LOG_ERROR, "out of memory keeping an audit entry; it is in the database");
}

void store__apply_review_op(store *s, wop *op) {
  st_dataset *ds = st_find(s->map, op->dataset);
  if (!ds) return;
  st_write_lock(ds);
  switch (op->kind) {
  case WOP_REVIEW: {
    review_op *r = (review_op *)op;
    int64_t key = st_sample_key(ds, r->id);
    if (key >= 0)
      apply_status(ds, (uint32_t)key, r->from, r->to, r->to == ST_RELABELLED ? r->label : NULL, r->confirm_score, r->seq,
                   op->batch_seq, r->at, r->reviewer, r->label_before, r->note);
    break;
  }
  case WOP_META: {
    meta_op *m = (meta_op *)op;
    int64_t key = st_sample_key(ds, m->id);
    if (key >= 0) {
      st_sample_set_meta(ds, (uint32_t)key, m->meta);
      ds->meta_seq[key] = op->batch_seq;
    }
    break;
  }
  case WOP_QUEUE: {
    queue_op *q = (queue_op *)op;
    st_queue *queue = calloc(1, sizeof *queue);
    if (!queue) break;
    queue->id = q->queue_id;
    snprintf(queue->name, sizeof queue->name, "%s", q->p.name);
    queue->created_at = q->created_at / 1000;
    queue->params = q->p.params_json;
    q->p.params_json = NULL;
    queue->n = q->n;
    queue->keys = q->keys;
    queue->scores = q->scores;
    q->keys = NULL;
    q->scores = NULL;
    char note[100];
    snprintf(note, sizeof note, "queue %s", q->p.name);
    for (uint32_t i = 0; i < queue->n; i++) {
      uint32_t key = queue->keys[i];
      char *before = label_before(ds, key, ds->corrected[key]);
      apply_status(ds, key, ds->status[key], ST_QUEUED, NULL, NAN, q->seqs[i], op->batch_seq, q->created_at, "focald", before,
                   note);
      free(before);
    }
    if (st_add_queue(ds, queue) != 0) log_msg(LOG_ERROR, "out of memory keeping queue %s; it is in the database", q->p.name);
    break;
  }
  case WOP_QUEUE_DELETE: {
    queue_op *q = (queue_op *)op;
    st_queue *queue = st_find_queue(ds, q->p.name);
    if (!queue) break;
    char note[100];
    snprintf(note, sizeof note, "queue %s removed", q->p.name);
    for (uint32_t i = 0; i < queue->n; i++) {
      uint32_t key = queue->keys[i];
      if (ds->status[key] != ST_QUEUED || held_elsewhere(ds, queue, key)) continue;
      char *before = label_before(ds, key, ds->corrected[key]);
      apply_status(ds, key, ST_QUEUED, ST_OPEN, NULL, NAN, q->seqs[i], op->batch_seq, q->created_at, "focald", before, note);
      free(before);
      q->released++;
    }
    st_remove_queue(ds, q->p.name);
    break;
  }
  default: break;
  }
  st_write_unlock(ds);
}

/* ------------------------------------------------------------------ loading */

typedef struct find_id {
  int64_t id;
  st_dataset *ds;
} find_id;

static void match_id(st_dataset *ds, void *arg) {
  find_id *f = arg;
  if (ds->id == f->id) f->ds = ds;
}

/* The dataset with SQL id id (few datasets: a scan is enough). */
static st_dataset *by_id(store *s, int64_t id) {
  find_id f = {id, NULL};
  st_map_each(s->map, match_id, &f);
  return f.ds;
}

int store__load_reviews(store *s) {
  sqlite3_stmt *q;
  int rc = sqlite3_prepare_v2(s->db,
                              "SELECT seq, dataset_id, key, at, reviewer, from_status, to_status, label_before, label_after, "
                              "note, batch_seq FROM review_log ORDER BY seq",
                              -1, &q, NULL);
  if (rc != SQLITE_OK) return -1;
  while (sqlite3_step(q) == SQLITE_ROW) {
    st_dataset *ds = by_id(s, sqlite3_column_int64(q, 1));
    if (!ds) continue;
    st_review e = {sqlite3_column_int64(q, 0),
                   sqlite3_column_int64(q, 10),
                   -1,
                   (uint32_t)sqlite3_column_int64(q, 2),
                   sqlite3_column_int64(q, 3),
                   (uint8_t)sqlite3_column_int(q, 5),
                   (uint8_t)sqlite3_column_int(q, 6),
                   dup_or_null((const char *)sqlite3_column_text(q, 4)),
                   dup_or_null((const char *)sqlite3_column_text(q, 7)),
                   dup_or_null((const char *)sqlite3_column_text(q, 8)),
                   dup_or_null((const char *)sqlite3_column_text(q, 9))};
    if (st_add_review(ds, &e) != 0) {
      sqlite3_finalize(q);
      return -1;
    }
  }
  sqlite3_finalize(q);
  rc = sqlite3_prepare_v2(s->db, "SELECT id, dataset_id, name, created_at, params FROM queues ORDER BY id", -1, &q, NULL);
  if (rc != SQLITE_OK) return -1;
  sqlite3_stmt *items;
  rc = sqlite3_prepare_v2(s->db, "SELECT key, score FROM queue_items WHERE queue_id = ?1 ORDER BY position", -1, &items, NULL);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(q);
    return -1;
  }
  int out = 0;
  while (out == 0 && sqlite3_step(q) == SQLITE_ROW) {
    st_dataset *ds = by_id(s, sqlite3_column_int64(q, 1));
    if (!ds) continue;
    st_queue *queue = calloc(1, sizeof *queue);
    if (!queue) {
      out = -1;
      break;
    }
    queue->id = sqlite3_column_int64(q, 0);
    snprintf(queue->name, sizeof queue->name, "%s", (const char *)sqlite3_column_text(q, 2));
    queue->created_at = sqlite3_column_int64(q, 3);
    queue->params = dup_or_null((const char *)sqlite3_column_text(q, 4));
    uint32_t cap = 64;
    queue->keys = malloc(cap * sizeof *queue->keys);
    queue->scores = malloc(cap * sizeof *queue->scores);
    sqlite3_bind_int64(items, 1, queue->id);
    while (queue->keys && queue->scores && sqlite3_step(items) == SQLITE_ROW) {
      if (queue->n == cap) {
        cap *= 2;
        uint32_t *k = realloc(queue->keys, cap * sizeof *k);
        float *sc = realloc(queue->scores, cap * sizeof *sc);
        if (k) queue->keys = k;
        if (sc) queue->scores = sc;
        if (!k || !sc) break;
      }
      queue->keys[queue->n] = (uint32_t)sqlite3_column_int64(items, 0);
      queue->scores[queue->n++] = (float)sqlite3_column_double(items, 1);
    }
    store__step_reset(items);
    if (st_add_queue(ds, queue) != 0) out = -1;
  }
  sqlite3_finalize(items);
  sqlite3_finalize(q);
  return out;
}
