/* store_load.c — start-up: the snapshot read into memory, then the batch log replayed after it.
 *
 * Every read loop ends on SQLITE_DONE, and every row is checked as it is read
 * (state_load.c's st_load_* refuse a row that does not fit what focald writes: a
 * history row without its sample, a hole in a dataset's keys, a batch of a
 * run that does not exist). A read error or such a row stops the start with
 * a message naming it: a state loaded in half would answer wrongly, and a
 * later snapshot would write it over the record.
 */
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec.h"
#include "jtext.h"
#include "log.h"
#include "store_internal.h"

typedef struct loader {
  store *s;
  sqlite3_stmt *q;
  const char *what;   /* the table being read, for messages */
  char err[512];
} loader;

/* Prepares the next read. Returns 0 or -1 (logged). */
static int read_begin(loader *l, const char *what, const char *sql) {
  l->what = what;
  sqlite3_finalize(l->q);
  l->q = NULL;
  if (sqlite3_prepare_v2(l->s->db, sql, -1, &l->q, NULL) == SQLITE_OK) return 0;
  log_kv(LOG_ERROR, "cannot read the database", "table", what, "error", sqlite3_errmsg(l->s->db), "db", l->s->cfg->db, NULL);
  return -1;
}

/* Steps the read: 1 for a row, 0 at its end, -1 on an error (logged): never an error taken for the end. */
static int read_next(loader *l) {
  int rc = sqlite3_step(l->q);
  if (rc == SQLITE_ROW) return 1;
  if (rc == SQLITE_DONE) return 0;
  log_kv(LOG_ERROR, "cannot read the database", "table", l->what, "error", sqlite3_errmsg(l->s->db), "db", l->s->cfg->db, NULL);
  return -1;
}

/* Logs a row that is not what focald writes. Returns -1. */
static int refuse(loader *l) {
  log_kv(LOG_ERROR, "the database holds a row focald did not write; refusing to start", "table", l->what, "error", l->err,
         "db", l->s->cfg->db, NULL);
  return -1;
}

static const char *text(sqlite3_stmt *q, int i) {
  return (const char *)sqlite3_column_text(q, i);
}

/* A text column's copy (NULL stays NULL); *oom set when memory runs out. */
static char *text_dup(sqlite3_stmt *q, int i, int *oom) {
  const char *t = text(q, i);
  char *d = t ? strdup(t) : NULL;
  if (t && !d) *oom = 1;
  return d;
}

static int load_datasets_and_runs(loader *l) {
  sqlite3_stmt *q;
  int r;
  if (read_begin(l, "datasets", "SELECT id, name, created_at FROM datasets ORDER BY id")) return -1;
  for (q = l->q; (r = read_next(l)) == 1;)
    if (st_load_dataset(l->s->map, sqlite3_column_int64(q, 0), text(q, 1), sqlite3_column_int64(q, 2), l->err, sizeof l->err))
      return refuse(l);
  if (r < 0) return -1;
  if (read_begin(l, "runs", "SELECT id, dataset_id, name, classes, created_at, cls_seq FROM runs ORDER BY id")) return -1;
  for (q = l->q; (r = read_next(l)) == 1;)
    if (st_load_run(l->s->map, sqlite3_column_int64(q, 1), sqlite3_column_int64(q, 0), text(q, 2), sqlite3_column_int(q, 3),
                    sqlite3_column_int64(q, 4), sqlite3_column_int64(q, 5), l->err, sizeof l->err))
      return refuse(l);
  return r;
}

static int load_samples(loader *l) {
  if (read_begin(l, "samples", "SELECT dataset_id, key, id, meta, status, corrected_label, confirm_score, meta_seq "
                               "FROM samples ORDER BY dataset_id, key"))
    return -1;
  sqlite3_stmt *q = l->q;
  int r;
  while ((r = read_next(l)) == 1) {
    const int64_t key = sqlite3_column_int64(q, 1);
    if (key < 0 || key >= UINT32_MAX) {
      snprintf(l->err, sizeof l->err, "a sample of dataset %lld has key %lld", (long long)sqlite3_column_int64(q, 0), (long long)key);
      return refuse(l);
    }
    const float confirm = sqlite3_column_type(q, 6) == SQLITE_NULL ? NAN : (float)sqlite3_column_double(q, 6);
    if (st_load_sample(l->s->map, sqlite3_column_int64(q, 0), (uint32_t)key, text(q, 2), text(q, 3), sqlite3_column_int(q, 4),
                       text(q, 5), confirm, sqlite3_column_int64(q, 7), l->err, sizeof l->err))
      return refuse(l);
  }
  return r;
}

static int load_history(loader *l) {
  if (read_begin(l, "history", "SELECT run_id, key, seq, seen, scored, correct, forgetting, last_loss, mean_loss, max_loss, "
                               "ema_loss, confidence, conf_m2, aum, label, last_correct, label_issue, first_step, last_step, "
                               "recent, stale_labels, other_n, el2n, el2n_n, grand, grand_n, series, other_class, early_n, early_other_n FROM history"))
    return -1;
  sqlite3_stmt *q = l->q;
  int r;
  /* a series written with any cap up to the largest; st_load_row keeps what this one allows */
  const int keep = st_map_series_points(l->s->map);
  hist_point *pts = keep ? malloc(HIST_SERIES_MAX * sizeof *pts) : NULL;
  if (keep && !pts) {
    log_msg(LOG_ERROR, "out of memory loading the history");
    return -1;
  }
  while ((r = read_next(l)) == 1) {
    const int64_t key = sqlite3_column_int64(q, 1);
    st_row row = {0};
    hist_rec *h = &row.h;
    hist_init(h);
    row.seq = sqlite3_column_int64(q, 2);
    h->seen = (uint32_t)sqlite3_column_int64(q, 3);
    h->scored_n = (uint32_t)sqlite3_column_int64(q, 4);
    h->correct_n = (uint32_t)sqlite3_column_int64(q, 5);
    h->forgetting = (uint32_t)sqlite3_column_int64(q, 6);
    h->last_loss = (float)sqlite3_column_double(q, 7);
    h->mean_loss = (float)sqlite3_column_double(q, 8);
    h->max_loss = (float)sqlite3_column_double(q, 9);
    h->ema_loss = (float)sqlite3_column_double(q, 10);
    h->conf_mean = (float)sqlite3_column_double(q, 11);
    h->conf_m2 = (float)sqlite3_column_double(q, 12);
    /* an earlier focald could store an infinite AUM, reached from margins of +-FLT_MAX whose mean
     * is at most FLT_MAX: it is read as the largest float of its sign */
    const double aum = sqlite3_column_double(q, 13);
    h->aum = isinf(aum) ? copysignf(FLT_MAX, (float)aum) : (float)aum;
    h->label = sqlite3_column_type(q, 14) == SQLITE_NULL ? -1 : sqlite3_column_int(q, 14);
    h->last_correct = (uint8_t)sqlite3_column_int(q, 15);
    h->has_step = sqlite3_column_type(q, 17) != SQLITE_NULL;
    h->first_step = sqlite3_column_int64(q, 17);
    h->last_step = sqlite3_column_int64(q, 18);
    row.stale_labels = (uint32_t)sqlite3_column_int64(q, 20);
    h->other_n = (uint32_t)sqlite3_column_int64(q, 21);
    h->el2n = (float)sqlite3_column_double(q, 22);
    h->el2n_n = (uint16_t)sqlite3_column_int(q, 23);
    h->grand = (float)sqlite3_column_double(q, 24);
    h->grand_n = (uint16_t)sqlite3_column_int(q, 25);
    const int64_t other_class = sqlite3_column_int64(q, 27);
    h->other_class = other_class >= -1 && other_class <= INT32_MAX ? (int32_t)other_class : -2; /* -2: refused below */
    /* early_n -1: not counted (a row written before schema 10). Out of range: "not counted" with a count,
     * which st_load_row refuses */
    const int64_t early_n = sqlite3_column_int64(q, 28), early_other_n = sqlite3_column_int64(q, 29);
    const int early_ok = early_n >= -1 && early_n < HIST_EARLY_UNKNOWN && early_other_n >= 0 && early_other_n < UINT16_MAX;
    h->early_n = early_ok && early_n >= 0 ? (uint16_t)early_n : HIST_EARLY_UNKNOWN;
    h->early_other_n = early_ok ? (uint16_t)early_other_n : UINT16_MAX;
    const void *ring = sqlite3_column_blob(q, 19);
    if (sqlite3_column_bytes(q, 19) != ST_RING_BYTES || !ring || key < 0 || key >= UINT32_MAX) {
      snprintf(l->err, sizeof l->err, "the history row of run %lld, key %lld, is malformed", (long long)sqlite3_column_int64(q, 0),
               (long long)key);
      r = refuse(l);
      break;
    }
    memcpy(row.ring, ring, ST_RING_BYTES);
    const void *series = sqlite3_column_blob(q, 26);
    if (!series && sqlite3_column_type(q, 26) != SQLITE_NULL && sqlite3_column_bytes(q, 26) > 0) {
      log_kv(LOG_ERROR, "cannot read the database", "table", l->what, "error", sqlite3_errmsg(l->s->db), NULL);
      r = -1;
      break;
    }
    if (keep && series &&
        hist_series_unpack(pts, HIST_SERIES_MAX, &row.series_count, &row.series_shift, series,
                           (size_t)sqlite3_column_bytes(q, 26), h->seen) != 0) {
      snprintf(l->err, sizeof l->err, "the series of run %lld, key %lld, is malformed", (long long)sqlite3_column_int64(q, 0),
               (long long)key);
      r = refuse(l);
      break;
    }
    row.series = pts;
    if (st_load_row(l->s->map, sqlite3_column_int64(q, 0), (uint32_t)key, &row, l->err, sizeof l->err)) {
      r = refuse(l);
      break;
    }
  }
  free(pts); /* every way out of the loop comes here: r is -1 after an error */
  if (r < 0) return -1;
  if (read_begin(l, "class_stats", "SELECT run_id, class, sum, count FROM class_stats")) return -1;
  while ((r = read_next(l)) == 1)
    if (st_load_classes(l->s->map, sqlite3_column_int64(l->q, 0), sqlite3_column_int(l->q, 1), sqlite3_column_double(l->q, 2),
                        (uint64_t)sqlite3_column_int64(l->q, 3), l->err, sizeof l->err))
      return refuse(l);
  return r;
}

static int load_reviews(loader *l) {
  if (read_begin(l, "review_log", "SELECT seq, dataset_id, key, at, reviewer, from_status, to_status, label_before, "
                                  "label_after, note, batch_seq FROM review_log ORDER BY seq"))
    return -1;
  sqlite3_stmt *q = l->q;
  int r;
  while ((r = read_next(l)) == 1) {
    int oom = 0;
    const int64_t key = sqlite3_column_int64(q, 2);
    const int from = sqlite3_column_int(q, 5), to = sqlite3_column_int(q, 6);
    st_review e = {sqlite3_column_int64(q, 0), sqlite3_column_int64(q, 10), -1, (uint32_t)key, sqlite3_column_int64(q, 3),
                   (uint8_t)from, (uint8_t)to, text_dup(q, 4, &oom), text_dup(q, 7, &oom), text_dup(q, 8, &oom),
                   text_dup(q, 9, &oom)};
    if (oom || key < 0 || key >= UINT32_MAX || from < 0 || from >= ST_STATUS_COUNT || to < 0 || to >= ST_STATUS_COUNT) {
      free(e.reviewer);
      free(e.label_before);
      free(e.label_after);
      free(e.note);
      snprintf(l->err, sizeof l->err, oom ? "out of memory" : "audit entry %lld is malformed", (long long)e.seq);
      return refuse(l);
    }
    if (st_load_review(l->s->map, sqlite3_column_int64(q, 1), &e, l->err, sizeof l->err)) return refuse(l);
  }
  if (r < 0) return -1;
  if (read_begin(l, "queues", "SELECT q.id, q.dataset_id, q.name, q.created_at, q.params, count(i.position) FROM queues q "
                              "LEFT JOIN queue_items i ON i.queue_id = q.id GROUP BY q.id ORDER BY q.id"))
    return -1;
  sqlite3_stmt *items;
  if (sqlite3_prepare_v2(l->s->db, "SELECT position, key, score FROM queue_items WHERE queue_id = ?1 ORDER BY position", -1,
                         &items, NULL) != SQLITE_OK) {
    log_kv(LOG_ERROR, "cannot read the database", "table", "queue_items", "error", sqlite3_errmsg(l->s->db), NULL);
    return -1;
  }
  q = l->q;
  int rc = 0;
  while (rc == 0 && (r = read_next(l)) == 1) {
    const int64_t n = sqlite3_column_int64(q, 5);
    int oom = 0;
    st_queue *queue = calloc(1, sizeof *queue);
    if (queue) {
      queue->id = sqlite3_column_int64(q, 0);
      snprintf(queue->name, sizeof queue->name, "%s", text(q, 2) ? text(q, 2) : "");
      queue->created_at = sqlite3_column_int64(q, 3);
      queue->params = text_dup(q, 4, &oom);
      queue->keys = malloc((size_t)(n ? n : 1) * sizeof *queue->keys);
      queue->scores = malloc((size_t)(n ? n : 1) * sizeof *queue->scores);
    }
    if (!queue || oom || !queue->keys || !queue->scores || n >= UINT32_MAX) {
      st_queue_free(queue);
      snprintf(l->err, sizeof l->err, "out of memory loading queue %lld", (long long)sqlite3_column_int64(q, 0));
      rc = refuse(l);
      break;
    }
    sqlite3_bind_int64(items, 1, queue->id);
    int ir;
    while ((ir = sqlite3_step(items)) == SQLITE_ROW) {
      const int64_t pos = sqlite3_column_int64(items, 0), key = sqlite3_column_int64(items, 1);
      if (pos != (int64_t)queue->n + 1 || key < 0 || key >= UINT32_MAX) {
        ir = SQLITE_CORRUPT;
        break;
      }
      queue->keys[queue->n] = (uint32_t)key;
      queue->scores[queue->n++] = (float)sqlite3_column_double(items, 2);
    }
    store__step_reset(items);
    if (ir != SQLITE_DONE) {
      snprintf(l->err, sizeof l->err, "the items of queue \"%s\" cannot be read or are out of order (%s)", queue->name,
               sqlite3_errstr(ir));
      st_queue_free(queue);
      rc = refuse(l);
      break;
    }
    if (st_load_queue(l->s->map, sqlite3_column_int64(q, 1), queue, l->err, sizeof l->err)) rc = refuse(l);
  }
  sqlite3_finalize(items);
  return rc != 0 ? rc : r;
}

/* The meta a logged batch carries, {"<id>": {...}}, as ids and compact JSON texts (owned). */
typedef struct logged_meta {
  json_t *root;
  int n;
  const char **ids;
  char **json;
} logged_meta;

static void logged_meta_free(logged_meta *m) {
  for (int i = 0; i < m->n; i++) free(m->json[i]);
  free(m->ids);
  free(m->json);
  json_decref(m->root);
  memset(m, 0, sizeof *m);
}

static int logged_meta_read(const char *text, logged_meta *m) {
  memset(m, 0, sizeof *m);
  if (!text) return 0;
  m->root = jtext_loads(text, JSON_REJECT_DUPLICATES, NULL, NULL);
  if (!json_is_object(m->root)) return -1;
  size_t n = json_object_size(m->root);
  m->ids = calloc(n ? n : 1, sizeof *m->ids);
  m->json = calloc(n ? n : 1, sizeof *m->json);
  if (!m->ids || !m->json) return -1;
  const char *k;
  json_t *v;
  json_object_foreach(m->root, k, v) {
    if (!json_is_object(v) || !(m->json[m->n] = jtext_dump(v, JSON_COMPACT | JSON_SORT_KEYS))) return -1;
    m->ids[m->n++] = k;
  }
  return 0;
}

int store__logged_batch_readable(const store_logged_batch *b) {
  codec_unpacked u;
  const codec_when when = {0};
  if (codec_unpack((const unsigned char *)b->payload, b->plen, &when, &u) != 0) return -1;
  const int same_n = (int64_t)u.n == b->n && codec_check(&u, b->classes) == 0;
  codec_unpacked_free(&u);
  logged_meta meta;
  const int meta_ok = logged_meta_read(b->meta, &meta) == 0;
  logged_meta_free(&meta);
  return same_n && meta_ok ? 0 : -1;
}

/* Replays the batch log after the snapshot's watermark, in commit order. */
static int replay(loader *l, int64_t applied, int64_t *replayed) {
  store *s = l->s;
  if (read_begin(l, "batches",
                 "SELECT b.seq, b.dataset_id, b.run_id, d.name, d.created_at, r.name, r.classes, r.created_at, r.dataset_id, "
                 "b.step, b.epoch, b.meta, b.payload, b.n FROM batches b LEFT JOIN datasets d ON d.id = b.dataset_id "
                 "LEFT JOIN runs r ON r.id = b.run_id WHERE b.seq > ?1 ORDER BY b.seq"))
    return -1;
  sqlite3_stmt *q = l->q;
  sqlite3_bind_int64(q, 1, applied);
  int r;
  while ((r = read_next(l)) == 1) {
    const int64_t seq = sqlite3_column_int64(q, 0), ds_id = sqlite3_column_int64(q, 1);
    if (!text(q, 3) || !text(q, 5) || sqlite3_column_int64(q, 8) != ds_id) {
      snprintf(l->err, sizeof l->err, "batch %lld belongs to dataset %lld and run %lld, which do not exist together",
               (long long)seq, (long long)ds_id, (long long)sqlite3_column_int64(q, 2));
      return refuse(l);
    }
    codec_unpacked u;
    codec_when when = {sqlite3_column_type(q, 9) != SQLITE_NULL, sqlite3_column_type(q, 10) != SQLITE_NULL,
                       sqlite3_column_int64(q, 9), sqlite3_column_int64(q, 10)};
    if (codec_unpack(sqlite3_column_blob(q, 12), (size_t)sqlite3_column_bytes(q, 12), &when, &u) != 0 ||
        (int64_t)u.n != sqlite3_column_int64(q, 13) || codec_check(&u, sqlite3_column_int(q, 6)) != 0) {
      codec_unpacked_free(&u);
      snprintf(l->err, sizeof l->err, "batch %lld has a malformed payload", (long long)seq);
      return refuse(l);
    }
    logged_meta meta;
    if (logged_meta_read(text(q, 11), &meta) != 0) {
      logged_meta_free(&meta);
      codec_unpacked_free(&u);
      snprintf(l->err, sizeof l->err, "batch %lld has malformed meta (or memory ran out reading it)", (long long)seq);
      return refuse(l);
    }
    const st_batch_ref ref = {ds_id,          sqlite3_column_int64(q, 4), text(q, 3),
                              sqlite3_column_int64(q, 2), sqlite3_column_int64(q, 7), text(q, 5),
                              sqlite3_column_int(q, 6)};
    st_batch_prep prep;
    int rc = st_prepare_batch(s->map, &ref, u.n, u.ids, &prep);
    const hist_params hp = {s->cfg->ema_alpha, s->cfg->early_observations};
    if (rc == 0) st_apply_batch(s->map, &prep, seq, u.ids, u.obs, &hp, meta.n, meta.ids, meta.json);
    st_tx_end(s->map);
    logged_meta_free(&meta);
    codec_unpacked_free(&u);
    if (rc != 0) {
      snprintf(l->err, sizeof l->err, "out of memory replaying batch %lld", (long long)seq);
      return refuse(l);
    }
    if (seq > s->last_seq) s->last_seq = seq;
    (*replayed)++;
  }
  return r;
}

int store__replay_after(store *s, int64_t after, int64_t *replayed) {
  loader l = {.s = s};
  int rc = replay(&l, after, replayed);
  sqlite3_finalize(l.q);
  return rc == 0 ? 0 : -1;
}

int store__load(store *s) {
  loader l = {.s = s};
  int64_t applied = 0, replayed = 0;
  const double t0 = store__now_s();
  int rc = -1;
  if (load_datasets_and_runs(&l) || load_samples(&l) || load_history(&l) || load_reviews(&l)) goto out;
  if (read_begin(&l, "snapshot", "SELECT applied_seq FROM snapshot WHERE id = 1")) goto out;
  int r = read_next(&l);
  if (r < 0) goto out;
  if (r == 0) {
    snprintf(l.err, sizeof l.err, "the snapshot row is missing");
    refuse(&l);
    goto out;
  }
  applied = sqlite3_column_int64(l.q, 0);
  s->last_seq = s->applied_seq = applied;
  if (replay(&l, applied, &replayed) != 0) goto out;
  s->logged_seq = s->last_seq;
  st_totals t;
  st_map_totals(s->map, &t);
  log_msg(LOG_INFO, "loaded %llu datasets, %llu samples from the snapshot at batch %lld and replayed %lld batches in %.2f s",
          (unsigned long long)t.datasets, (unsigned long long)t.samples, (long long)applied, (long long)replayed,
          store__now_s() - t0);
  /* the replayed batches are in memory only: the next pass writes them */
  s->snap_wanted = replayed > 0;
  rc = 0;
out:
  sqlite3_finalize(l.q);
  st_load_done(s->map);
  return rc;
}
