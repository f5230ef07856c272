/* store_batch.c — the writer's batches and dataset deletions: a request recorded in the batch log, and a
 * dataset's rows removed.
 *
 * Unlike the review loop's ops (store_review.c), these are checked by their SQL alone, which sees the
 * group's earlier writes: a batch finds or creates its dataset's and run's rows (the run's class count
 * must match) and looks for its batch_id in the batch log, a deletion finds its dataset's row. A batch
 * never makes the writer start a new group; a deletion does after an op on its dataset, since it counts
 * what it removes (its answer) from memory. A batch is logged as one row per segment of its request,
 * with the loss configuration and the segment's meta, and on a cluster node each row takes the position
 * the shared log gave it as its seq. The write finds the dataset, the run and the samples in memory and
 * reserves room for new ones, so that the apply, after the commit, cannot fail: it updates each sample's
 * history, segment by segment. The batch log is the record the history is derived from (store_snap.c
 * writes out what it implies). A retried batch_id is scored and answered but not recorded. A deletion
 * removes every row of the dataset, its batches included, in the group's transaction, and memory forgets
 * the dataset after the commit.
 */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jtext.h"
#include "store_internal.h"

/* ------------------------------------------------------------------ batches */

/* The observation each sample of a scored job contributes. */
static hist_obs *job_observations(const job *j) {
  const req *r = &j->rq;
  hist_obs *obs = calloc((size_t)r->n, sizeof *obs);
  if (!obs) return NULL;
  for (int64_t i = 0; i < r->n; i++) {
    const fl_score *sc = &j->scores[i];
    hist_obs *o = &obs[i];
    o->loss = j->loss[i];
    o->scored = sc->rows > 0;
    o->p_t = sc->p_t;
    o->p_max = sc->p_max;
    o->margin = sc->margin;
    o->correct = sc->correct;
    o->el2n = sc->rows > 0 ? sc->el2n : NAN;
    o->grad_norm = sc->rows > 0 && j->grad_norm ? j->grad_norm[i] : NAN;
    o->pred = sc->pred;
    o->label = -1;
    if (r->labels && r->m == 1) {
      int64_t y = req_label_at(r, i);
      if (y >= 0 && y < r->c) o->label = (int32_t)y;
    }
  }
  int64_t off = 0;
  for (int k = 0; k < req_nseg(r); k++) {
    const req_seg g = req_segment(r, k);
    for (int64_t i = off; i < off + g.n; i++) {
      obs[i].has_step = g.has_step;
      obs[i].step = g.step;
      obs[i].has_epoch = g.has_epoch;
      obs[i].epoch = g.epoch;
    }
    off += g.n;
  }
  return obs;
}

/* The loss configuration as stored with each batch of a request, but for its shape: a JSON object without
 * its closing brace (malloc'd), or NULL when memory runs out. loss_config_json completes it per batch. */
static char *loss_config_head(const req *r) {
  json_t *o = json_object();
  if (!o) return NULL;
  int bad = json_object_set_new(o, "type", json_string(fl_loss_name(r->params.loss)));
  bad |= json_object_set_new(o, "profile", json_string(fl_profile_name(r->params.profile)));
  bad |= json_object_set_new(o, "reduction", json_string(fl_reduction_name(r->params.reduction)));
  bad |= json_object_set_new(o, "gamma", json_real(r->params.gamma));
  if (r->params.alpha_c) {
    json_t *a = json_array();
    for (int64_t k = 0; a && k < r->c; k++) bad |= json_array_append_new(a, json_real(r->params.alpha_c[k]));
    bad |= json_object_set_new(o, "alpha", a);
  } else {
    bad |= json_object_set_new(o, "alpha", r->params.alpha >= 0 ? json_real(r->params.alpha) : json_null());
  }
  bad |= json_object_set_new(o, "input", json_string(r->params.input == FL_INPUT_PROBS ? "probs" : "logits"));
  char *text = bad ? NULL : jtext_dump(o, JSON_COMPACT | JSON_REAL_PRECISION(9));
  json_decref(o);
  if (text) text[strlen(text) - 1] = '\0'; /* the closing brace: the shape comes last */
  return text;
}

/* head (loss_config_head) with the shape of a batch of n samples of r: the stored JSON (malloc'd), or NULL. */
static char *loss_config_json(const char *head, const req *r, int64_t n) {
  const size_t cap = strlen(head) + 80;
  char *text = malloc(cap);
  if (text) snprintf(text, cap, "%s,\"shape\":[%" PRId64 ",%" PRId64 ",%" PRId64 "]}", head, n, r->m, r->c);
  return text;
}

/* The end of the meta entries, from m on, of the samples before index end (meta is in sample order when
 * there are segments). */
static int meta_end(const req *r, int m, int64_t end) {
  while (m < r->nmeta && r->meta_index[m] < end) m++;
  return m;
}

/* Meta entries [from, to) as stored with their batch: {"<id>": {...}} (malloc'd); *text NULL when there
 * are none. Returns 0 or -1. */
static int batch_meta_json(const req *r, int from, int to, char **text) {
  *text = NULL;
  if (from == to) return 0;
  json_t *o = json_object();
  int bad = !o;
  for (int i = from; !bad && i < to; i++) {
    json_t *v = jtext_loads(r->meta_json[i], 0, NULL, NULL);
    bad = !v || json_object_set_new(o, r->ids[r->meta_index[i]], v) != 0;
  }
  if (!bad) *text = jtext_dump(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return *text ? 0 : -1;
}

/* Logs segment k of a job (samples [off, off + g.n), meta entries [m0, m1)) as one batch. */
static int log_segment(store *s, job *j, const st_batch_ref *ref, const char *cfg_head, int k, int64_t off,
                       const req_seg *g, int m0, int m1) {
  const req *r = &j->rq;
  unsigned char *payload = NULL;
  size_t plen = 0;
  char *cfgjson = loss_config_json(cfg_head, r, g->n), *metajson = NULL;
  codec_batch cb = {(uint32_t)g->n, (const char *const *)r->ids + off, j->obs + off};
  int rc = SQLITE_NOMEM;
  if (!cfgjson || batch_meta_json(r, m0, m1, &metajson) != 0 || codec_pack(&cb, &payload, &plen) != 0 ||
      st_prepare_batch(s->map, ref, (uint32_t)g->n, r->ids + off, &j->prep[k]) != 0)
    goto out;
  /* a request's batch_id goes with its first segment: the request is logged whole or not at all */
  const store_logged_batch b = {
      .dataset = ref->ds_name, .run = ref->run_name, .classes = ref->classes, .ds_created = ref->ds_created,
      .run_created = ref->run_created, .batch_id = r->has_batch_id && k == 0 ? r->batch_id : NULL,
      .segments = k == 0 ? req_nseg(r) : 0,
      .has_epoch = g->has_epoch, .has_step = g->has_step, .epoch = g->epoch, .step = g->step, .n = g->n,
      .loss_config = cfgjson, .received_at = store__unix_ms(), .meta = metajson, .payload = payload, .plen = plen};
  int64_t pos = 0;
  rc = store__cluster_append_batch(s, &b, &pos);
  if (rc == SQLITE_OK) rc = store__insert_batch(s, ref->ds_id, ref->run_id, &b, pos, &j->seq[k]);
  if (rc == SQLITE_OK) s->logged_seq = j->seq[k];
out:
  free(payload);
  free(cfgjson);
  free(metajson);
  return rc;
}

/* Whether a stored batch (n samples, payload) holds the samples of r from off to off + want, in order: 1 or
 * 0, or -1 when its payload cannot be read (memory ran out, or the row is damaged). */
static int stored_same(const req *r, int64_t off, int64_t want, int64_t n, const void *payload, int plen) {
  if (n != want) return 0; /* other samples: no need to read them */
  codec_unpacked u;
  const codec_when when = {0};
  if (codec_unpack(payload, (size_t)plen, &when, &u) != 0) return -1;
  int same = (int64_t)u.n == want;
  for (int64_t i = 0; same && i < want; i++) same = strcmp(u.ids[i], r->ids[off + i]) == 0;
  codec_unpacked_free(&u);
  return same;
}

/* Looks for r's batch_id among the run's batches. Returns SQLITE_DONE when it is new; SQLITE_ROW when it is
 * stored, with *same set if the stored request holds r's samples, in order, cut into the same segments (a
 * retry: its predictions may differ, recomputed, but it is the same request), 0 if not (another request under
 * a reused batch_id, which counting as a duplicate would lose); or an error. The batch_id goes with a
 * request's first segment, whose row says how many segments the request had; they are at the seqs after it.
 * A row from before schema 11 does not say: only its first segment is compared. */
static int batch_seen(store *s, int64_t run_id, const req *r, int *same /* OUT */) {
  sqlite3_stmt *q = s->st[S_BATCH_DUP];
  sqlite3_bind_int64(q, 1, run_id);
  sqlite3_bind_text(q, 2, r->batch_id, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  *same = 0;
  int64_t first = 0, segments = 0;
  if (rc == SQLITE_ROW) {
    const int got = stored_same(r, 0, req_segment(r, 0).n, sqlite3_column_int64(q, 0), sqlite3_column_blob(q, 1),
                                sqlite3_column_bytes(q, 1));
    if (got < 0) rc = SQLITE_NOMEM; /* either way nothing is taken */
    *same = got > 0;
    first = sqlite3_column_int64(q, 2);
    segments = sqlite3_column_int64(q, 3); /* NULL reads 0 */
  }
  store__step_reset(q);
  if (rc != SQLITE_ROW || !*same || segments == 0) return rc;
  const int nseg = req_nseg(r);
  *same = segments == nseg;
  q = s->st[S_BATCH_AT];
  int64_t off = req_segment(r, 0).n;
  for (int k = 1; *same && rc == SQLITE_ROW && k < nseg; k++) {
    const int64_t want = req_segment(r, k).n;
    sqlite3_bind_int64(q, 1, first + k);
    sqlite3_bind_int64(q, 2, run_id);
    const int step = sqlite3_step(q);
    if (step == SQLITE_ROW) {
      const int got =
          stored_same(r, off, want, sqlite3_column_int64(q, 0), sqlite3_column_blob(q, 1), sqlite3_column_bytes(q, 1));
      if (got < 0) rc = SQLITE_NOMEM;
      *same = got > 0;
    } else if (step == SQLITE_DONE) {
      *same = 0; /* not stored whole: not this request */
    } else {
      rc = step;
    }
    store__step_reset(q);
    off += want;
  }
  return rc;
}

/* Records one request: the datasets and runs rows it needs, then a row in the batch log per segment. */
static int batch_write(store *s, wop *op) {
  job *j = (job *)op;
  const req *r = &j->rq;
  st_batch_ref ref = {.ds_name = op->dataset, .run_name = r->run, .classes = (int32_t)r->c};
  int rc = store__sql_dataset(s, op->dataset, 1, &ref.ds_id, &ref.ds_created);
  if (rc != SQLITE_OK) return rc;
  int32_t classes = 0;
  rc = store__sql_run(s, ref.ds_id, r->run, (int32_t)r->c, &ref.run_id, &classes, &ref.run_created);
  if (rc != SQLITE_OK) return rc;
  if (classes != r->c) {
    /* the culprit is the predictions, named as the request named them: probs, or a binary body's inputs[] entry */
    char field[32];
    if (r->binary) snprintf(field, sizeof field, "/inputs/%d", r->input_index[1]);
    else snprintf(field, sizeof field, "/%s", r->x_name);
    op->failed = 1;
    problem_set(&op->err, P_CLASS_COUNT_CONFLICT, field, "run \"%s\" of dataset \"%s\" has %d classes; this batch has %lld",
                r->run, op->dataset, classes, (long long)r->c);
    return SQLITE_OK;
  }
  if (r->has_batch_id) {
    int same = 0;
    rc = batch_seen(s, ref.run_id, r, &same);
    if (rc == SQLITE_ROW && !same) {
      op->failed = 1;
      problem_set(&op->err, P_BATCH_ID_REUSED, "/batch_id",
                  "batch_id \"%.128s\" of run \"%s\" was stored with other samples; a batch sent again must "
                  "name the same samples in the same order (a new batch needs a batch_id of its own)",
                  r->batch_id, r->run);
      return SQLITE_OK;
    }
    if (rc == SQLITE_ROW) {
      j->duplicate = 1; /* scored and answered, not recorded: nothing to apply */
      op->log_pos = s->logged_seq; /* the first one is at or before it */
      return SQLITE_OK;
    }
    if (rc != SQLITE_DONE) return rc;
  }
  op->ds_id = ref.ds_id;
  const int nseg = req_nseg(r);
  if (nseg == 1) {
    j->prep = &j->one_prep;
    j->seq = &j->one_seq;
    memset(j->prep, 0, sizeof *j->prep);
  } else {
    j->prep = calloc((size_t)nseg, sizeof *j->prep);
    if (!j->seq) j->seq = calloc((size_t)nseg, sizeof *j->seq); /* kept from a failed group's try */
  }
  j->obs = job_observations(j);
  j->meta_ids = malloc((size_t)(r->nmeta ? r->nmeta : 1) * sizeof *j->meta_ids);
  if (!j->prep || !j->seq || !j->obs || !j->meta_ids) return SQLITE_NOMEM;
  for (int i = 0; i < r->nmeta; i++) j->meta_ids[i] = r->ids[r->meta_index[i]];
  char *cfg_head = loss_config_head(r);
  if (!cfg_head) return SQLITE_NOMEM;
  int64_t off = 0;
  rc = SQLITE_OK;
  for (int k = 0, m0 = 0; k < nseg && rc == SQLITE_OK; k++) {
    const req_seg g = req_segment(r, k);
    const int m1 = meta_end(r, m0, off + g.n);
    rc = log_segment(s, j, &ref, cfg_head, k, off, &g, m0, m1);
    off += g.n;
    m0 = m1;
  }
  free(cfg_head);
  if (rc == SQLITE_OK) op->log_pos = j->seq[nseg - 1];
  return rc;
}

/* Frees what the writer allocated for a job but the seqs, which job_free frees (its preps' keys are the
 * caller's to free or hand over). */
static void batch_release(job *j) {
  if (j->prep != &j->one_prep) free(j->prep);
  j->prep = NULL;
  free(j->obs);
  free(j->meta_ids);
  j->obs = NULL;
  j->meta_ids = NULL;
}

static void batch_apply(store *s, wop *op) {
  job *j = (job *)op;
  if (j->duplicate) return;
  const req *r = &j->rq;
  int64_t off = 0;
  int m0 = 0;
  st_dataset *ds = st_apply_lock(s->map, &j->prep[0]); /* every segment is of the request's dataset */
  for (int k = 0; k < req_nseg(r); k++) {
    const req_seg g = req_segment(r, k);
    const int m1 = meta_end(r, m0, off + g.n);
    const hist_params hp = {s->cfg->ema_alpha, s->cfg->early_observations};
    st_apply_segment(&j->prep[k], j->seq[k], r->ids + off, j->obs + off, &hp, m1 - m0, j->meta_ids + m0,
                     j->rq.meta_json + m0);
    if (j->seq[k] > s->last_seq) s->last_seq = j->seq[k];
    off += g.n;
    m0 = m1;
  }
  st_apply_unlock(ds);
  batch_release(j);
}

static void batch_discard(store *s, wop *op) {
  (void)s;
  job *j = (job *)op;
  if (j->prep)
    for (int k = 0; k < req_nseg(&j->rq); k++) st_batch_prep_free(&j->prep[k]);
  batch_release(j);
}

/* ------------------------------------------------------------------ deleting a dataset */

static int delete_write(store *s, wop *op) {
  int64_t created;
  int rc = store__sql_dataset(s, op->dataset, 0, &op->ds_id, &created);
  if (rc == SQLITE_NOTFOUND) {
    op->failed = 1;
    problem_set(&op->err, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%s\"", op->dataset);
    return SQLITE_OK;
  }
  if (rc != SQLITE_OK) return rc;
  /* the answer, from memory: no earlier op of the group touches the dataset (store_group.c's must_wait), so memory
   * holds what the deletion removes. Counted here, not by the apply: on a cluster node whose local commit
   * fails after the log's, the op is answered 2xx but never applied to memory */
  const st_dataset *ds = st_w_find_name(s->map, op->dataset);
  op->deleted_samples = ds ? (int64_t)st_nsamples(ds) : 0;
  op->deleted_observations = ds ? (int64_t)st_observations(ds) : 0;
  static const char *const del[] = {
      "DELETE FROM history WHERE run_id IN (SELECT id FROM runs WHERE dataset_id = ?1)",
      "DELETE FROM class_stats WHERE run_id IN (SELECT id FROM runs WHERE dataset_id = ?1)",
      "DELETE FROM samples WHERE dataset_id = ?1",
      "DELETE FROM batches WHERE dataset_id = ?1",
      "DELETE FROM review_log WHERE dataset_id = ?1",
      "DELETE FROM queue_items WHERE queue_id IN (SELECT id FROM queues WHERE dataset_id = ?1)",
      "DELETE FROM queues WHERE dataset_id = ?1",
      "DELETE FROM idempotency_keys WHERE dataset_id = ?1",
      "DELETE FROM runs WHERE dataset_id = ?1",
      "DELETE FROM datasets WHERE id = ?1",
  };
  for (size_t i = 0; i < sizeof del / sizeof del[0]; i++) {
    sqlite3_stmt *q;
    rc = sqlite3_prepare_v2(s->db, del[i], -1, &q, NULL);
    if (rc != SQLITE_OK) return rc;
    sqlite3_bind_int64(q, 1, op->ds_id);
    rc = sqlite3_step(q);
    sqlite3_finalize(q);
    if (rc != SQLITE_DONE) return rc;
  }
  return SQLITE_OK;
}

static void delete_apply(store *s, wop *op) {
  int64_t samples = 0, observations = 0; /* the same as the write counted */
  st_apply_delete(s->map, op->ds_id, &samples, &observations);
}

/* A deletion prepares nothing in memory: nothing to free. */
static void delete_discard(store *s, wop *op) {
  (void)s;
  (void)op;
}

const wop_class store__batch_class = {batch_write, batch_apply, batch_discard, 0};
const wop_class store__delete_class = {delete_write, delete_apply, delete_discard, 1};
