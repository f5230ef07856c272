/* store_cluster.c — the store as a node of a cluster (--store): the writer's groups go to the shared log
 * in PostgreSQL (pglog.c) before the local database, and the rows other nodes append are copied into the
 * local database and applied, all in the log's order.
 *
 * The local SQLite file is this node's cache of the log. Its batches table holds every row of the shared
 * log with seq = the row's position, so everything built on the batch log works unchanged: the snapshot's
 * watermark is a position, a restart loads the local snapshot and replays the local rows after it, then
 * copies the log's rows after those (store__cluster_catch_up), and a duplicate batch_id is found by the
 * same query.
 *
 * A group (store.c's run_group) runs under the log's append lock: store__cluster_begin takes it and first
 * copies and applies the rows up to the log's head, so that the group's checks (a batch_id seen anywhere
 * in the cluster, a run's class count) are made against the whole cluster's state. The group's batches
 * then take the positions after the head, in the local database and in the log alike; the log commits
 * first, then the local transaction. A 2xx therefore means committed in PostgreSQL. If the log cannot be
 * reached, or its commit fails, the group's ops fail with 503 store_unavailable and nothing is kept
 * locally; when the connection is lost during the commit itself, the outcome is unknown, and a client's
 * retry with the same batch_id is recognised as a duplicate if it was committed. If the local commit fails
 * after the log's, the answers stand (the log has the rows) and the next catch-up brings them.
 *
 * The follower thread has a connection of its own: it LISTENs for the appends' notifications, polls the
 * head as a fallback, and wakes the writer when the head passes what is applied; the writer catches up
 * between groups. HTTP threads read applied_pos and the head for the Focald-Log-Position and
 * Focald-Log-Behind headers, and a read's after= waits for applied_pos (logwait.c).
 *
 * Only batches are in the log so far: the review loop's changes and a dataset's deletion are refused on a
 * cluster node (501 not_in_cluster).
 */
#include <jansson.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pglog.h"
#include "store_internal.h"

/* the log's rows copied per local transaction while catching up */
#define CATCH_UP_ROWS 256
/* after PostgreSQL failed, groups fail at once for this long before the writer tries again */
#define RETRY_SECONDS 0.5
/* the follower asks for the head this often when no notification comes */
#define POLL_MS 500

/* the kinds of the log's rows */
enum { ROW_BATCH = 1 };

/* ------------------------------------------------------------------ a batch's row */

/* The row's body: a JSON head (everything but the payload), a NUL, then the codec payload. Returns a
 * malloc'd body and its length, or NULL when memory ran out. */
static unsigned char *batch_body(const store_logged_batch *b, size_t *len) {
  json_t *h = json_pack("{s:s, s:i, s:I, s:I, s:I, s:s, s:I}", "run", b->run, "classes", (int)b->classes,
                        "ds_created", (json_int_t)b->ds_created, "run_created", (json_int_t)b->run_created, "n",
                        (json_int_t)b->n, "loss_config", b->loss_config, "received_at", (json_int_t)b->received_at);
  int bad = !h;
  if (!bad && b->batch_id) bad |= json_object_set_new(h, "batch_id", json_string(b->batch_id));
  if (!bad && b->has_epoch) bad |= json_object_set_new(h, "epoch", json_integer(b->epoch));
  if (!bad && b->has_step) bad |= json_object_set_new(h, "step", json_integer(b->step));
  if (!bad && b->meta) bad |= json_object_set_new(h, "meta", json_string(b->meta));
  char *head = bad ? NULL : json_dumps(h, JSON_COMPACT);
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
static int batch_unbody(const void *body, size_t len, const char *dataset, store_logged_batch *b, json_t **root) {
  memset(b, 0, sizeof *b);
  const char *nul = memchr(body, 0, len);
  if (!nul) return -1;
  const size_t hl = (size_t)(nul - (const char *)body);
  json_t *h = *root = json_loadb(body, hl, JSON_REJECT_DUPLICATES, NULL);
  json_int_t classes = 0, dsc = 0, rc = 0, n = 0, at = 0;
  const char *run = NULL, *cfg = NULL;
  if (!h || json_unpack(h, "{s:s, s:I, s:I, s:I, s:I, s:s, s:I}", "run", &run, "classes", &classes, "ds_created", &dsc,
                        "run_created", &rc, "n", &n, "loss_config", &cfg, "received_at", &at) != 0)
    return -1;
  const json_t *bid = json_object_get(h, "batch_id"), *ep = json_object_get(h, "epoch"),
               *st = json_object_get(h, "step"), *meta = json_object_get(h, "meta");
  if ((bid && !json_is_string(bid)) || (ep && !json_is_integer(ep)) || (st && !json_is_integer(st)) ||
      (meta && !json_is_string(meta)) || classes < 1 || classes > INT32_MAX || n < 0)
    return -1;
  *b = (store_logged_batch){.dataset = dataset, .run = run, .classes = (int32_t)classes, .ds_created = dsc,
                            .run_created = rc, .batch_id = bid ? json_string_value(bid) : NULL, .has_epoch = !!ep,
                            .has_step = !!st, .epoch = ep ? json_integer_value(ep) : 0,
                            .step = st ? json_integer_value(st) : 0, .n = n, .loss_config = cfg, .received_at = at,
                            .meta = meta ? json_string_value(meta) : NULL,
                            .payload = (const char *)body + hl + 1, .plen = len - hl - 1};
  return 0;
}

/* ------------------------------------------------------------------ copying the log's rows */

/* Finds the dataset's row, or makes it with the creation time the log gives. */
static int local_dataset(store *s, const char *name, int64_t created, int64_t *id) {
  sqlite3_stmt *q = s->st[S_DS_FIND];
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) *id = sqlite3_column_int64(q, 0);
  store__step_reset(q);
  if (rc == SQLITE_ROW) return SQLITE_OK;
  if (rc != SQLITE_DONE) return rc;
  q = s->st[S_DS_INSERT];
  sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 2, created);
  rc = store__step_done(q);
  if (rc == SQLITE_OK) *id = sqlite3_last_insert_rowid(s->db);
  return rc;
}

/* Finds the run's row, or makes it as the log gives it. */
static int local_run(store *s, int64_t ds_id, const store_logged_batch *b, int64_t *id) {
  sqlite3_stmt *q = s->st[S_RUN_FIND];
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_text(q, 2, b->run, -1, SQLITE_STATIC);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_ROW) *id = sqlite3_column_int64(q, 0);
  store__step_reset(q);
  if (rc == SQLITE_ROW) return SQLITE_OK;
  if (rc != SQLITE_DONE) return rc;
  q = s->st[S_RUN_INSERT];
  sqlite3_bind_int64(q, 1, ds_id);
  sqlite3_bind_text(q, 2, b->run, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 3, b->classes);
  sqlite3_bind_int64(q, 4, b->run_created);
  rc = store__step_done(q);
  if (rc == SQLITE_OK) *id = sqlite3_last_insert_rowid(s->db);
  return rc;
}

typedef struct copier {
  store *s;
  int sql_rc;         /* the first local failure */
  int malformed;      /* the position of a row focald cannot read, or 0 */
  int64_t pos;
} copier;

static int copy_row(void *arg, const pglog_row *row) {
  copier *c = arg;
  c->pos = row->pos;
  if (row->kind != ROW_BATCH) {
    c->malformed = 1;
    return 1;
  }
  store_logged_batch b;
  json_t *root = NULL;
  int64_t ds_id = 0, run_id = 0, seq = 0;
  int rc = SQLITE_OK;
  if (batch_unbody(row->body, row->len, row->dataset, &b, &root) != 0) c->malformed = 1;
  else if ((rc = local_dataset(c->s, row->dataset, b.ds_created, &ds_id)) == SQLITE_OK &&
           (rc = local_run(c->s, ds_id, &b, &run_id)) == SQLITE_OK)
    rc = store__insert_batch(c->s, ds_id, run_id, &b, row->pos, &seq);
  json_decref(root);
  c->sql_rc = rc;
  return c->malformed || rc != SQLITE_OK;
}

/* Copies the log's rows after last_seq into the local database (one transaction per CATCH_UP_ROWS) and
 * applies each committed chunk. Returns 0; -1 when PostgreSQL failed (s->pg_failed); an SQLite code or
 * SQLITE_CORRUPT for a row focald cannot read. */
static int catch_up(store *s) {
  for (;;) {
    const int64_t from = s->last_seq;
    copier c = {.s = s};
    int64_t last = from;
    int rc = store__exec(s->db, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) return rc;
    int prc = pglog_read(s->pg, from, CATCH_UP_ROWS, copy_row, &c, &last);
    if (prc < 0) {
      store__exec(s->db, "ROLLBACK");
      s->pg_failed = 1;
      log_kv(LOG_WARN, "cannot read the cluster's log", "error", pglog_error(s->pg), NULL);
      return -1;
    }
    if (c.malformed || c.sql_rc != SQLITE_OK) {
      store__exec(s->db, "ROLLBACK");
      if (c.malformed) log_msg(LOG_ERROR, "the cluster's log has a row this focald cannot read at position %lld",
                               (long long)c.pos);
      return c.malformed ? SQLITE_CORRUPT : c.sql_rc;
    }
    rc = store__exec(s->db, "COMMIT");
    if (rc != SQLITE_OK) {
      if (!sqlite3_get_autocommit(s->db)) store__exec(s->db, "ROLLBACK");
      return rc;
    }
    if (last == from) return 0;
    int64_t replayed = 0;
    if (store__replay_after(s, from, &replayed) != 0) return SQLITE_CORRUPT;
    s->logged_seq = s->last_seq;
    s->snap_wanted = 1;
    store__cluster_applied(s);
    if (last - from < CATCH_UP_ROWS) return 0;
  }
}

/* ------------------------------------------------------------------ the writer's side */

/* Connects again after a failure, at most once per RETRY_SECONDS. 0 when the connection is up. */
static int reconnect(store *s) {
  const double now = store__now_s();
  if (now < s->pg_retry_at) return -1;
  if (pglog_reconnect(s->pg) == PGLOG_OK) {
    s->pg_retry_at = 0;
    return 0;
  }
  s->pg_retry_at = now + RETRY_SECONDS;
  log_kv(LOG_WARN, "cannot reach the cluster's log", "error", pglog_error(s->pg), NULL);
  return -1;
}

int store__cluster_catch_up(store *s) {
  if (!s->pg) return 0;
  s->pg_failed = 0;
  if (s->pg_retry_at && reconnect(s) != 0) return -1;
  int rc = catch_up(s);
  if (rc != 0 && s->pg_failed) s->pg_retry_at = store__now_s() + RETRY_SECONDS;
  return rc == 0 ? 0 : -1;
}

int store__cluster_begin(store *s) {
  if (!s->pg) return 0;
  s->pg_failed = 0;
  if (s->pg_retry_at && reconnect(s) != 0) {
    s->pg_failed = 1;
    return -1;
  }
  int64_t head = 0;
  int prc = pglog_begin(s->pg, &head);
  if (prc == PGLOG_DOWN && reconnect(s) == 0) prc = pglog_begin(s->pg, &head);
  if (prc != PGLOG_OK) {
    s->pg_failed = 1;
    s->pg_retry_at = store__now_s() + RETRY_SECONDS;
    log_kv(LOG_WARN, "cannot append to the cluster's log", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  s->pg_in_group = 1;
  atomic_store(&s->pg_head, head);
  int rc = head > s->last_seq ? catch_up(s) : 0;
  if (rc != 0) {
    store__cluster_rollback(s);
    if (s->pg_failed) s->pg_retry_at = store__now_s() + RETRY_SECONDS;
    return s->pg_failed ? -1 : rc;
  }
  return 0;
}

int store__cluster_append_batch(store *s, const store_logged_batch *b, int64_t *pos) {
  *pos = 0;
  if (!s->pg) return SQLITE_OK;
  size_t len = 0;
  unsigned char *body = batch_body(b, &len);
  if (!body) return SQLITE_NOMEM;
  const pglog_row row = {.kind = ROW_BATCH, .dataset = b->dataset, .body = body, .len = len};
  int prc = pglog_append(s->pg, &row, 1, pos);
  free(body);
  if (prc == PGLOG_OK) return SQLITE_OK;
  s->pg_failed = 1;
  log_kv(LOG_WARN, "cannot append to the cluster's log", "error", pglog_error(s->pg), NULL);
  return SQLITE_ERROR;
}

int store__cluster_commit(store *s) {
  if (!s->pg) return 0;
  s->pg_in_group = 0;
  int64_t head = 0;
  int prc = pglog_commit(s->pg, &head);
  if (prc == PGLOG_OK) {
    atomic_store(&s->pg_head, head);
    return 0;
  }
  s->pg_failed = 1;
  s->pg_retry_at = store__now_s() + RETRY_SECONDS;
  log_kv(LOG_WARN, prc == PGLOG_UNKNOWN ? "the connection to the cluster's log was lost while committing: the group may "
                                          "or may not be in the log; it is answered 503"
                                        : "the cluster's log refused the group's commit",
         "error", pglog_error(s->pg), NULL);
  return -1;
}

void store__cluster_rollback(store *s) {
  if (!s->pg || !s->pg_in_group) return;
  s->pg_in_group = 0;
  pglog_rollback(s->pg);
}

void store__cluster_applied(store *s) {
  if (atomic_load(&s->applied_pos) == s->last_seq) return;
  atomic_store(&s->applied_pos, s->last_seq);
  if (s->applied_moved) s->applied_moved();
}

/* ------------------------------------------------------------------ opening, following */

/* Checks that the local database caches this log, binding it when it is new. */
static int bind_local(store *s, const char *log_id) {
  sqlite3_stmt *q = NULL;
  int rc = sqlite3_prepare_v2(s->db, "SELECT (SELECT log_id FROM cluster), (SELECT count(*) FROM batches)", -1, &q, NULL);
  if (rc != SQLITE_OK) return -1;
  rc = sqlite3_step(q);
  int out = -1;
  if (rc == SQLITE_ROW) {
    const char *have = (const char *)sqlite3_column_text(q, 0);
    const int64_t batches = sqlite3_column_int64(q, 1);
    if (have && strcmp(have, log_id) == 0) out = 0;
    else if (have)
      log_kv(LOG_ERROR, "this database caches another cluster's log: give this node a database of its own", "db",
             s->cfg->db, "cached_log", have, "log", log_id, NULL);
    else if (batches > 0)
      log_kv(LOG_ERROR, "this database holds batches focald recorded alone: a cluster node needs a new database", "db",
             s->cfg->db, NULL);
    else {
      char sql[160];
      snprintf(sql, sizeof sql, "INSERT INTO cluster (one, log_id) VALUES (1, '%.64s')", log_id);
      out = store__exec(s->db, sql) == SQLITE_OK ? 0 : -1;
    }
  }
  sqlite3_finalize(q);
  return out;
}

int store__cluster_open(store *s) {
  atomic_store(&s->pg_head, 0);
  if (!s->cfg->store[0]) return 0;
  char err[256] = "", log_id[80] = "";
  if (pglog_open(&s->pg, s->cfg->store, s->cfg->node_name, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  if (pglog_log_id(s->pg, log_id, sizeof log_id) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot read the cluster's log", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  if (bind_local(s, log_id) != 0) return -1;
  log_kv(LOG_INFO, "a node of the cluster", "node", s->cfg->node_name, "log", log_id, NULL);
  return 0;
}

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* The follower: learns the log's head (notifications, else a poll) and wakes the writer when it passes
 * what is applied. */
static void *follower_main(void *arg) {
  store *s = arg;
  int up = pglog_listen(s->follow_pg) == PGLOG_OK;
  while (!atomic_load(&s->pg_stop)) {
    int64_t head = -1;
    int w = up ? pglog_wait(s->follow_pg, POLL_MS, &head) : -1;
    if (w == 0 && pglog_head(s->follow_pg, &head) != PGLOG_OK) w = -1;
    if (w < 0) {
      atomic_store(&s->pg_head, -1);
      sleep_ms(up ? 100 : POLL_MS);
      up = pglog_reconnect(s->follow_pg) == PGLOG_OK;
      continue;
    }
    if (head > atomic_load(&s->pg_head)) atomic_store(&s->pg_head, head);
    if (head > atomic_load(&s->applied_pos)) {
      pthread_mutex_lock(&s->lock);
      atomic_store(&s->pg_wanted, 1);
      pthread_cond_signal(&s->wake);
      pthread_mutex_unlock(&s->lock);
    }
  }
  return NULL;
}

int store__cluster_start(store *s) {
  atomic_store(&s->applied_pos, s->last_seq);
  if (!s->pg) return 0;
  char err[256] = "";
  if (pglog_open(&s->follow_pg, s->cfg->store, s->cfg->node_name, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  if (pthread_create(&s->follower, NULL, follower_main, s) != 0) return -1;
  s->follower_running = 1;
  return 0;
}

void store__cluster_stop(store *s) {
  atomic_store(&s->pg_stop, 1);
  if (s->follower_running) pthread_join(s->follower, NULL);
  s->follower_running = 0;
  pglog_close(s->follow_pg);
  pglog_close(s->pg);
  s->follow_pg = s->pg = NULL;
}
