/* store_cluster.c — the store as a node of a cluster (--store): the writer's groups go to the shared log
 * in PostgreSQL (pglog.c) before the local database, and the rows other nodes append are copied into the
 * local database and applied, all in the log's order.
 *
 * The local SQLite file is this node's cache of the log. Its batches table holds every row of the shared
 * log with seq = the row's position, so everything built on the batch log works unchanged: the snapshot's
 * watermark is a position, a restart loads the local snapshot and replays the local rows after it, then
 * copies the log's rows after those (store_group.c's catch-up), and a duplicate batch_id is found by the
 * same query.
 *
 * A group (store_group.c's store__group_run) runs under the log's append lock: store__cluster_begin takes it, and the
 * writer first copies (store__cluster_copy) and applies the rows up to the log's head, so that the group's checks (a batch_id seen anywhere
 * in the cluster, a run's class count) are made against the whole cluster's state. The group's batches
 * then take the positions after the head, in the local database and in the log alike; the log commits
 * first, then the local transaction. A 2xx therefore means committed in PostgreSQL. If the log cannot be
 * reached (or does not answer within --cluster-deadline: pglog.h), or its commit fails, the group's ops
 * fail with 503 store_unavailable and nothing is kept locally; when the connection is lost (or given up)
 * during the commit itself, the outcome is unknown, and a client's retry with the same batch_id is
 * recognised as a duplicate if it was committed. If the local commit fails
 * after the log's, the answers stand (the log has the rows) and the next catch-up brings them.
 *
 * The follower thread has a connection of its own: it LISTENs for the appends' notifications, polls the
 * head as a fallback, and wakes the writer when the head passes what is applied; the writer catches up
 * between groups. It also renews this node's hold on the log (pglog_hold): the rows after what the node has
 * applied, which no prune (--log-retention) takes while it runs. Each move of the applied position and of
 * the head is pushed to logwait.c (store_on_applied), whose copies the HTTP threads read for the
 * Focald-Log-Behind header and for a read's after=; applied_pos and pg_head stay for the follower, the
 * snapshotter and /metrics.
 *
 * The review loop's changes (decisions, meta, queues) and a dataset's deletion are logged too, as the
 * request that made them and the time the writer gave them (store_logrow.c writes and reads the rows):
 * every node runs the op's write and apply on the same state and gets the same result, and since a group
 * checks its ops only after applying the log up to its head, two nodes cannot both win conflicting
 * transitions of one sample. The local database records the last position it holds
 * (cluster.applied_pos), so a restart resumes the log where it stopped.
 */
#include <errno.h>
#include <jansson.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "jtext.h"
#include "pglog.h"
#include "store_internal.h"

/* the log's rows copied per local transaction while catching up */
#define CATCH_UP_ROWS 256
/* after PostgreSQL failed, groups fail at once for this long before the writer tries again */
#define RETRY_SECONDS 0.5
/* the follower asks for the head this often when no notification comes */
#define POLL_MS 500
/* Once the node is stopping, none of its round trips to PostgreSQL waits longer than this past the stop (or
 * past its own start, when later), whatever --cluster-deadline says: a healthy statement takes milliseconds,
 * so the batches drained at the stop still commit; a statement that waits this long is behind a server that
 * does not answer, or behind another node's group, and its group is answered 503 (at its commit: the outcome
 * unknown). A node whose PostgreSQL does not answer then stops in a few seconds (the statement, then the
 * reconnection its group tries), well inside Kubernetes' 30 s grace period. */
#define STOP_MS 2000

/* A running node holds the log's rows after the position it has applied (pglog_hold) for this long, renewed by
 * the follower every HOLD_RENEW_MS: a prune never takes a row a running node has still to apply. */
#define HOLD_SECONDS 10
#define HOLD_RENEW_MS 1000
/* and, from the start (or the snapshot it begins from) until its follower runs, for this long: loading a large
 * database and catching up take a while */
#define START_HOLD_SECONDS 600
/* a new node takes the newest snapshot again at most this often when a newer one replaced it meanwhile */
#define BOOTSTRAP_TRIES 5

/* The limits of every connection of this node's: --cluster-deadline, and the stop's. */
static pglog_limits limits_of(store *s) {
  return (pglog_limits){.deadline_ms = s->cfg->cluster_deadline, .stopped_at = &s->pg_stopped_at, .stop_ms = STOP_MS};
}

/* ------------------------------------------------------------------ the review loop's changes */

int store__cluster_append_op(store *s, wop *op) {
  json_t *body = store__logrow_op_request(op);
  char *text = body ? jtext_dump(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (!text) return SQLITE_NOMEM;
  const pglog_row row = {.kind = ROW_OP_BASE + (int)op->kind, .dataset = op->dataset, .body = text, .len = strlen(text)};
  int prc = pglog_append(s->pg, &row, 1, &op->log_pos);
  free(text);
  if (prc != PGLOG_OK) {
    op->log_pos = 0;
    s->pg_failed = 1;
    log_kv(LOG_WARN, "cannot append to the cluster's log", "error", pglog_error(s->pg), NULL);
    return SQLITE_ERROR;
  }
  s->pg_group_last = op->log_pos;
  return SQLITE_OK;
}

/* ------------------------------------------------------------------ copying the log's rows */

enum { COPY_STOP = 1 };

static int copy_row(void *arg, const pglog_row *row) {
  store_log_chunk *c = arg;
  store *s = c->s;
  c->seen++;
  if (row->pos != c->consumed + 1) {
    c->gap = row->pos;
    return COPY_STOP;
  }
  if (row->kind != ROW_BATCH) {
    if (c->batches) return COPY_STOP; /* it starts the next transaction */
    if (!(c->op = store__logrow_op_of_row(row))) c->malformed = 1;
    else c->consumed = row->pos;
    return COPY_STOP;
  }
  store_logged_batch b;
  json_t *root = NULL;
  int64_t ds_id = 0, run_id = 0, seq = 0;
  int32_t classes = 0;
  int rc = SQLITE_OK;
  /* a dataset or run the log creates takes the time its writer gave it, on every node */
  /* a row the replay could not read is not stored: the node stops before it (pg_stuck), its database and
   * its memory still alike */
  if (store__logrow_batch_unbody(row->body, row->len, row->dataset, &b, &root) != 0 || store__logged_batch_readable(&b) != 0)
    c->malformed = 1;
  else if ((rc = store__sql_dataset(s, row->dataset, 1, &ds_id, &b.ds_created)) == SQLITE_OK &&
           (rc = store__sql_run(s, ds_id, b.run, b.classes, &run_id, &classes, &b.run_created)) == SQLITE_OK)
    rc = store__insert_batch(s, ds_id, run_id, &b, row->pos, &seq);
  json_decref(root);
  c->sql_rc = rc;
  if (c->malformed || rc != SQLITE_OK) return COPY_STOP;
  c->consumed = row->pos;
  c->batches++;
  return 0;
}

int store__cluster_copy(store *s, store_log_chunk *c) {
  *c = (store_log_chunk){.s = s, .consumed = s->pg_applied};
  int64_t last = 0, head = 0;
  int prc = pglog_read(s->pg, s->pg_applied, CATCH_UP_ROWS, copy_row, c, &last);
  /* Nothing after our position, yet the head is past it: either rows came in between the two reads, or
   * they were pruned. Rows up to a head that was read are all visible (pglog.h), so a second read tells. */
  if (prc == 0 && !c->seen && pglog_head(s->pg, &head) == PGLOG_OK && head > s->pg_applied) {
    prc = pglog_read(s->pg, s->pg_applied, CATCH_UP_ROWS, copy_row, c, &last);
    if (prc == 0 && !c->seen) c->gap = head;
  }
  c->more = prc == COPY_STOP || c->batches == CATCH_UP_ROWS;
  if (prc < 0) {
    s->pg_failed = 1;
    log_kv(LOG_WARN, "cannot read the cluster's log", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  if (c->malformed)
    log_msg(LOG_ERROR, "the cluster's log has a row after position %lld this focald cannot read", (long long)c->consumed);
  if (c->gap)
    log_msg(LOG_ERROR, "the cluster's log no longer has position %lld (pruned by --log-retention; the log is at %lld): "
            "this node cannot catch up: start it again with an empty --db, and it begins from the newest snapshot",
            (long long)c->consumed + 1, (long long)c->gap);
  if (c->malformed || c->gap) {
    atomic_store(&s->pg_stuck, c->consumed + 1);
    return SQLITE_CORRUPT;
  }
  return c->sql_rc;
}

int store__cluster_mark_pos(store *s, int64_t pos) {
  char sql[96];
  snprintf(sql, sizeof sql, "UPDATE cluster SET applied_pos = %" PRId64, pos);
  return store__exec(s->db, sql);
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

int store__cluster_ready(store *s) {
  s->pg_failed = 0;
  if (s->pg_retry_at && reconnect(s) != 0) {
    s->pg_failed = 1;
    return -1;
  }
  return 0;
}

void store__cluster_failed(store *s) {
  /* a failure met while a retry is pending (the groups failed at once meanwhile) does not put it off */
  if (s->pg_failed && !s->pg_retry_at) s->pg_retry_at = store__now_s() + RETRY_SECONDS;
}

int store__cluster_begin(store *s) {
  if (!s->pg) return 0;
  s->pg_failed = 0;
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
  s->pg_group_last = 0;
  s->pg_group_head = head;
  store__cluster_head(s, head);
  return 0;
}

int store__cluster_append_batch(store *s, const store_logged_batch *b, int64_t *pos) {
  *pos = 0;
  if (!s->pg) return SQLITE_OK;
  size_t len = 0;
  unsigned char *body = store__logrow_batch_body(b, &len);
  if (!body) return SQLITE_NOMEM;
  const pglog_row row = {.kind = ROW_BATCH, .dataset = b->dataset, .body = body, .len = len};
  int prc = pglog_append(s->pg, &row, 1, pos);
  free(body);
  if (prc == PGLOG_OK) {
    s->pg_group_last = *pos;
    return SQLITE_OK;
  }
  s->pg_failed = 1;
  log_kv(LOG_WARN, "cannot append to the cluster's log", "error", pglog_error(s->pg), NULL);
  return SQLITE_ERROR;
}

int store__cluster_mark(store *s) {
  return s->pg_group_last ? store__cluster_mark_pos(s, s->pg_group_last) : SQLITE_OK;
}

void store__cluster_committed(store *s) {
  if (s->pg && s->pg_group_last) s->pg_applied = s->pg_group_last;
}

int store__cluster_commit(store *s) {
  if (!s->pg) return 0;
  if (!s->pg_group_last) {
    /* nothing to log (refused ops, retried batches): the lock is let go */
    store__cluster_rollback(s);
    return 0;
  }
  s->pg_in_group = 0;
  int64_t head = 0;
  int prc = pglog_commit(s->pg, &head);
  if (prc == PGLOG_OK) {
    store__cluster_head(s, head);
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
  const int64_t pos = s->pg ? s->pg_applied : s->last_seq;
  if (atomic_load(&s->applied_pos) == pos) return;
  atomic_store(&s->applied_pos, pos);
  if (s->applied_moved) s->applied_moved(pos);
}

void store__cluster_head(store *s, int64_t head) {
  atomic_store(&s->pg_head, head);
  if (s->head_moved) s->head_moved(head);
}

/* ------------------------------------------------------------------ opening, following */

/* What the focald database db (at path) is to a node of the log log_id. */
enum local_kind {
  LOCAL_UNREAD = -1, /* it could not be read */
  LOCAL_OURS,        /* it caches this log: *applied (when not NULL) is the last position it holds */
  LOCAL_UNBOUND,     /* no log's identity and no batch: the node may bind it */
  LOCAL_REFUSED,     /* another cluster's cache, or batches focald recorded alone (logged) */
};

static enum local_kind local_kind_of(sqlite3 *db, const char *path, const char *log_id, int64_t *applied) {
  sqlite3_stmt *q = NULL;
  enum local_kind kind = LOCAL_UNREAD;
  /* no cluster table (before schema 7), no row or no id: no identity */
  if (sqlite3_prepare_v2(db, "SELECT log_id, applied_pos FROM cluster", -1, &q, NULL) == SQLITE_OK &&
      sqlite3_step(q) == SQLITE_ROW && sqlite3_column_type(q, 0) == SQLITE_TEXT) {
    const char *have = (const char *)sqlite3_column_text(q, 0);
    if (strcmp(have, log_id) == 0) {
      if (applied) *applied = sqlite3_column_int64(q, 1);
      kind = LOCAL_OURS;
    } else {
      log_kv(LOG_ERROR, "this database caches another cluster's log: give this node a database of its own", "db",
             path, "cached_log", have, "log", log_id, NULL);
      kind = LOCAL_REFUSED;
    }
    goto out;
  }
  sqlite3_finalize(q);
  q = NULL;
  if (sqlite3_prepare_v2(db, "SELECT EXISTS (SELECT 1 FROM batches)", -1, &q, NULL) != SQLITE_OK ||
      sqlite3_step(q) != SQLITE_ROW)
    goto out;
  kind = sqlite3_column_int(q, 0) ? LOCAL_REFUSED : LOCAL_UNBOUND;
  if (kind == LOCAL_REFUSED)
    log_kv(LOG_ERROR, "this database holds batches focald recorded alone: a cluster node needs a new database", "db",
           path, NULL);
out:
  sqlite3_finalize(q);
  return kind;
}

/* Checks that the local database caches this log, binding it when it is new. */
static int bind_local(store *s, const char *log_id) {
  switch (local_kind_of(s->db, s->cfg->db, log_id, &s->pg_applied)) {
  case LOCAL_OURS: return 0;
  case LOCAL_UNBOUND: {
    char sql[160];
    snprintf(sql, sizeof sql, "INSERT INTO cluster (one, log_id) VALUES (1, '%.64s')", log_id);
    return store__exec(s->db, sql) == SQLITE_OK ? 0 : -1;
  }
  default: return -1;
  }
}

/* A number as the shortest text that reads back as the same double. */
static void number_text(char *out, size_t n, double v) {
  for (int digits = 15; digits <= 17; digits++) {
    snprintf(out, n, "%.*g", digits, v);
    if (strtod(out, NULL) == v) return;
  }
}

/* Checks that this node's settings that shape what it computes from the log (the history's, its series' and
 * the review loop's) are the cluster's, recording them when it is the first to ask: two nodes that applied the same rows
 * with a different --ema-alpha would give different rankings, queues and exports, and with a different
 * --idempotency-ttl a retried review decision would be replayed by one node and refused as a repeat by
 * another. 0, or -1 (logged). */
static int check_settings(store *s) {
  const config *cfg = s->cfg;
  char ema[32], early[32], reconsider[32], series[32], ttl[32], have[64];
  number_text(ema, sizeof ema, cfg->ema_alpha);
  snprintf(early, sizeof early, "%d", cfg->early_observations);
  number_text(reconsider, sizeof reconsider, cfg->reconsider_factor);
  snprintf(series, sizeof series, "%d", cfg->series_points);
  snprintf(ttl, sizeof ttl, "%d", cfg->idempotency_ttl);
  const struct {
    const char *name, *mine;
  } settings[] = {{"ema-alpha", ema}, {"early-observations", early}, {"reconsider-factor", reconsider},
                  {"series-points", series}, {"idempotency-ttl", ttl}};
  for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++) {
    if (pglog_setting(s->pg, settings[i].name, settings[i].mine, have, sizeof have) != PGLOG_OK) {
      log_kv(LOG_ERROR, "cannot read the cluster's settings", "error", pglog_error(s->pg), NULL);
      return -1;
    }
    if (strcmp(have, settings[i].mine) != 0) {
      log_msg(LOG_ERROR, "this node's --%s is %s, the cluster's is %s: every node of a cluster applies its log with "
              "the same settings; start it with --%s %s", settings[i].name, settings[i].mine, have, settings[i].name,
              have);
      return -1;
    }
  }
  return 0;
}

int store__cluster_open(store *s) {
  atomic_store(&s->pg_head, 0);
  if (!s->cfg->store[0]) return 0;
  char err[256] = "", log_id[80] = "";
  const pglog_limits limits = limits_of(s);
  if (pglog_open(&s->pg, s->cfg->store, s->cfg->node_name, &limits, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  if (pglog_log_id(s->pg, log_id, sizeof log_id) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot read the cluster's log", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  /* the writer's session holds the append lock through each group: never longer than this while idle */
  if (pglog_set_idle_timeout(s->pg, s->cfg->cluster_lock_timeout) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot set the cluster session's idle timeout", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  if (check_settings(s) != 0 || bind_local(s, log_id) != 0) return -1;
  /* the rows after what this node holds stay until it has applied them (unless they are gone already: then it
   * cannot catch up, and holds nothing) */
  int kept = 0;
  if (pglog_hold(s->pg, s->pg_applied, START_HOLD_SECONDS, &kept) != PGLOG_OK ||
      (!kept && pglog_hold(s->pg, s->pg_applied, 0, NULL) != PGLOG_OK)) {
    log_kv(LOG_ERROR, "cannot hold the cluster's log", "error", pglog_error(s->pg), NULL);
    return -1;
  }
  log_kv(LOG_INFO, "a node of the cluster", "node", s->cfg->node_name, "log", log_id, NULL);
  return 0;
}

extern const int focald_schema_count;

/* Whether the file named path followed by suffix exists and is not empty. */
static int nonempty(const char *path, const char *suffix) {
  char name[600];
  struct stat st;
  snprintf(name, sizeof name, "%s%s", path, suffix);
  return stat(name, &st) == 0 && st.st_size > 0;
}

/* Opens the database at path read only, making nothing beside it. SQLite would create a WAL database's -shm
 * and -wal files to read it; with no WAL or journal to read (none, or empty ones) it is opened immutable, which
 * reads the file alone. 0, or an SQLite error code (*db to be closed either way). */
static int open_peek(const char *path, sqlite3 **db) {
  *db = NULL;
  if (nonempty(path, "-wal") || nonempty(path, "-journal")) return sqlite3_open_v2(path, db, SQLITE_OPEN_READONLY, NULL);
  /* a URI: every byte but the unreserved ones and '/' percent-encoded */
  size_t n = strlen(path), k = 0;
  char *uri = malloc(3 * n + 32);
  if (!uri) return SQLITE_NOMEM;
  k += (size_t)sprintf(uri, "file:");
  for (size_t i = 0; i < n; i++) {
    const unsigned char c = (unsigned char)path[i];
    if ((c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || strchr("/-._~", c)) uri[k++] = (char)c;
    else k += (size_t)sprintf(uri + k, "%%%02X", c);
  }
  strcpy(uri + k, "?immutable=1");
  const int rc = sqlite3_open_v2(uri, db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
  free(uri);
  return rc;
}

/* Returns 1 when the file at path holds nothing a node could keep, so that a new node begins from the cluster's
 * snapshot in its place: no file, an empty one, or a SQLite database with neither a cluster's identity (the
 * cluster table's row) nor a row of anything else: the header page an interrupted creation left, or a database
 * an older or a standalone focald made and never recorded anything in. Such a file used to be taken for the
 * node's own database: the node then began at position 0 rather than from the snapshot, and could not start
 * once the log below the snapshot was pruned. Anything else (a node's own database, another cluster's, one
 * focald recorded alone, a file that is not focald's, or that a newer focald wrote) is left to store_open,
 * which takes it or refuses it with its reason. Only reads: a file that is not replaced stays as it was. */
static int local_holds_nothing(const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return errno == ENOENT;
  if (!S_ISREG(st.st_mode)) return 0;
  if (st.st_size == 0 && !nonempty(path, "-wal")) return 1;
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  int nothing = 0;
  if (open_peek(path, &db) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "SELECT (SELECT user_version FROM pragma_user_version), (SELECT count(*) FROM sqlite_master)",
                         -1, &q, NULL) != SQLITE_OK || sqlite3_step(q) != SQLITE_ROW)
    goto out;
  const int version = sqlite3_column_int(q, 0), objects = sqlite3_column_int(q, 1);
  sqlite3_finalize(q);
  q = NULL;
  if (version == 0 || version > focald_schema_count) { /* a header only, or not focald's to judge */
    nothing = version == 0 && objects == 0;
    goto out;
  }
  /* the snapshot table holds a watermark from the start; SQLite's own tables are not data */
  if (sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'snapshot' AND "
                             "name NOT LIKE 'sqlite\\_%' ESCAPE '\\'", -1, &q, NULL) != SQLITE_OK)
    goto out;
  int rc, rows = 0;
  while (rows == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
    char *sql = sqlite3_mprintf("SELECT EXISTS (SELECT 1 FROM \"%w\")", (const char *)sqlite3_column_text(q, 0));
    sqlite3_stmt *any = NULL;
    if (!sql || sqlite3_prepare_v2(db, sql, -1, &any, NULL) != SQLITE_OK || sqlite3_step(any) != SQLITE_ROW)
      rows = 1; /* what cannot be read is not known to be empty */
    else
      rows = sqlite3_column_int(any, 0);
    sqlite3_finalize(any);
    sqlite3_free(sql);
  }
  nothing = rows == 0 && rc == SQLITE_DONE;
out:
  sqlite3_finalize(q);
  sqlite3_close(db);
  return nothing;
}

/* Reads the snapshot at pos into tmp and puts it in place of the database at db, which holds nothing: its WAL
 * and journal go with it (SQLite would read that WAL into the snapshot). 0, or -1. */
static int snapshot_into_place(pglog *p, int64_t pos, const char *tmp, const char *db) {
  if (pglog_snapshot_get(p, pos, tmp) != PGLOG_OK) return -1;
  store__unlink_db_files(db);
  return rename(tmp, db);
}

/* Whether the focald database at path is one a node of the log log_id must refuse (local_kind_of), read
 * only. 0 for anything else, a file that is not focald's included: store_open judges that before it writes. */
static int local_refused(const char *path, const char *log_id) {
  sqlite3 *db = NULL;
  const int refused = open_peek(path, &db) == SQLITE_OK && local_kind_of(db, path, log_id, NULL) == LOCAL_REFUSED;
  sqlite3_close(db);
  return refused;
}

int store__cluster_admit(const config *cfg) {
  if (!cfg->store[0]) return 0;
  pglog *p = NULL;
  char err[256] = "", log_id[80] = "";
  const pglog_limits limits = {.deadline_ms = cfg->cluster_deadline};
  if (pglog_open(&p, cfg->store, cfg->node_name, &limits, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  int rc = 0;
  if (pglog_log_id(p, log_id, sizeof log_id) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot read the cluster's log", "error", pglog_error(p), NULL);
    rc = -1;
  } else if (!local_holds_nothing(cfg->db) && local_refused(cfg->db, log_id)) {
    rc = -1;
  }
  pglog_close(p);
  return rc;
}

int store__cluster_bootstrap(const config *cfg) {
  if (!cfg->store[0] || !local_holds_nothing(cfg->db)) return 0;
  pglog *p = NULL;
  char err[256] = "", tmp[600];
  int64_t pos = 0;
  const pglog_limits limits = {.deadline_ms = cfg->cluster_deadline};
  if (pglog_open(&p, cfg->store, cfg->node_name, &limits, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  int rc = -1;
  /* A new node begins from the newest snapshot; the log after it is applied by store_load. The rows after the
   * snapshot are held first, so that no prune takes them before this node has applied them; a newer snapshot
   * may have replaced it (and the log below that been pruned) before the hold, or before its parts are read:
   * then the newest is taken again. */
  snprintf(tmp, sizeof tmp, "%s.snapshot-in", cfg->db);
  for (int attempt = 0; rc != 0 && attempt < BOOTSTRAP_TRIES; attempt++) {
    int kept = 0;
    const double t0 = store__now_s();
    if (pglog_snapshot_newest(p, &pos) != PGLOG_OK) {
      log_kv(LOG_ERROR, "cannot read the cluster's snapshots", "error", pglog_error(p), NULL);
      break;
    }
    if (pos == 0) rc = 0;
    else if (pglog_hold(p, pos, START_HOLD_SECONDS, &kept) != PGLOG_OK)
      log_kv(LOG_ERROR, "cannot hold the cluster's log", "error", pglog_error(p), NULL);
    else if (!kept)
      continue;
    else if (snapshot_into_place(p, pos, tmp, cfg->db) != 0) {
      log_kv(LOG_WARN, "cannot load the cluster's snapshot", "error", pglog_error(p), NULL);
      unlink(tmp);
    } else {
      log_msg(LOG_INFO, "began from the cluster's snapshot at position %lld (%.2f s)", (long long)pos, store__now_s() - t0);
      rc = 0;
    }
  }
  if (rc != 0) log_msg(LOG_ERROR, "cannot begin from the cluster's snapshot");
  pglog_close(p);
  return rc;
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
  double held_at = 0;
  int holding = 1;
  while (!atomic_load(&s->pg_stop)) {
    if (up && holding && store__now_s() - held_at >= HOLD_RENEW_MS / 1000.0) {
      /* what this node has applied durably (its local commit came first); a failure is noticed below. A node
       * whose next row is gone already cannot catch up: it lets go, rather than keep every later row */
      int kept = 1;
      const int64_t pos = atomic_load(&s->applied_pos);
      if (pglog_hold(s->follow_pg, pos, HOLD_SECONDS, &kept) == PGLOG_OK) held_at = store__now_s();
      if (!kept && pglog_hold(s->follow_pg, pos, 0, NULL) == PGLOG_OK) holding = 0;
    }
    int64_t head = -1;
    int w = up ? pglog_wait(s->follow_pg, POLL_MS, &head) : -1;
    if (w == 0 && pglog_head(s->follow_pg, &head) != PGLOG_OK) w = -1;
    if (w < 0) {
      store__cluster_head(s, -1);
      sleep_ms(up ? 100 : POLL_MS);
      if (atomic_load(&s->pg_stop)) break;
      up = pglog_reconnect(s->follow_pg) == PGLOG_OK;
      continue;
    }
    if (head > atomic_load(&s->pg_head)) store__cluster_head(s, head);
    if (head > atomic_load(&s->applied_pos)) {
      pthread_mutex_lock(&s->lock);
      atomic_store(&s->pg_wanted, 1);
      pthread_cond_signal(&s->wake);
      pthread_mutex_unlock(&s->lock);
    }
  }
  return NULL;
}

/* The last position a copy of the local database holds (its cluster row), or -1. */
static int64_t copy_position(const char *path) {
  sqlite3 *db = NULL;
  sqlite3_stmt *q = NULL;
  int64_t pos = -1;
  if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
      sqlite3_prepare_v2(db, "SELECT applied_pos FROM cluster", -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
    pos = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return pos;
}

/* Offers a snapshot when this node holds the lease: a consistent copy of the local database (VACUUM INTO, on
 * a connection of its own, beside the writer), stored in PostgreSQL unless one at its position is there; then
 * the log below it is pruned as --log-retention says. */
static void offer_snapshot(store *s, pglog *p) {
  const config *cfg = s->cfg;
  int held = 0;
  if (pglog_lease(p, "snapshot", cfg->cluster_snapshot_interval * 2 + 60, &held) != PGLOG_OK) {
    log_kv(LOG_WARN, "cannot take the snapshot lease", "error", pglog_error(p), NULL);
    return;
  }
  if (!held) return;
  int64_t newest = 0, pruned = 0;
  if (pglog_snapshot_newest(p, &newest) != PGLOG_OK) return;
  /* nothing applied since the newest: no copy to make */
  if (atomic_load(&s->applied_pos) <= newest) goto prune;
  char tmp[600];
  snprintf(tmp, sizeof tmp, "%s.snapshot-out", cfg->db);
  unlink(tmp);
  sqlite3 *db = NULL;
  char *sql = sqlite3_mprintf("VACUUM INTO %Q", tmp);
  int rc = sql && sqlite3_open_v2(cfg->db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK ? SQLITE_OK : SQLITE_ERROR;
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(db, 5000);
    rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) log_kv(LOG_WARN, "cannot copy the database for a snapshot", "error", sqlite3_errmsg(db), NULL);
  }
  sqlite3_free(sql);
  sqlite3_close(db);
  const int64_t pos = rc == SQLITE_OK ? copy_position(tmp) : -1;
  if (pos > newest) {
    const double t0 = store__now_s();
    if (pglog_snapshot_put(p, pos, tmp) == PGLOG_OK) {
      newest = pos;
      log_msg(LOG_INFO, "stored a snapshot of the cluster's state at position %lld (%.2f s)", (long long)pos,
              store__now_s() - t0);
    } else {
      log_kv(LOG_WARN, "cannot store a snapshot", "error", pglog_error(p), NULL);
    }
  }
  unlink(tmp);
prune:
  if (cfg->log_retention >= 0 && newest > cfg->log_retention) {
    if (pglog_prune(p, newest - cfg->log_retention + 1, &pruned) != PGLOG_OK)
      log_kv(LOG_WARN, "cannot prune the cluster's log", "error", pglog_error(p), NULL);
    else if (pruned > 0)
      log_msg(LOG_INFO, "pruned %lld rows of the cluster's log below position %lld", (long long)pruned,
              (long long)(newest - cfg->log_retention + 1));
  }
}

/* The snapshotter: every --cluster-snapshot-interval, offers a snapshot (a thread of its own: copying and
 * storing a large database takes seconds, and following must not wait for it). */
static void *snapshotter_main(void *arg) {
  store *s = arg;
  char err[256] = "";
  pglog *p = NULL;
  const pglog_limits limits = limits_of(s);
  double next = store__now_s() + s->cfg->cluster_snapshot_interval;
  while (!atomic_load(&s->pg_stop)) {
    sleep_ms(100);
    if (store__now_s() < next) continue;
    next = store__now_s() + s->cfg->cluster_snapshot_interval;
    if (!p && pglog_open(&p, s->cfg->store, s->cfg->node_name, &limits, err, sizeof err) != PGLOG_OK) {
      log_kv(LOG_WARN, "the snapshotter cannot reach the cluster's log", "error", err, NULL);
      continue;
    }
    offer_snapshot(s, p);
    if (pglog_head(p, &(int64_t){0}) != PGLOG_OK) {
      pglog_close(p); /* a connection that failed is opened again next time */
      p = NULL;
    }
  }
  pglog_close(p);
  return NULL;
}

int store__cluster_start(store *s) {
  const int64_t pos = s->pg ? s->pg_applied : s->last_seq;
  atomic_store(&s->applied_pos, pos);
  if (s->applied_moved) s->applied_moved(pos);
  if (!s->pg) return 0;
  char err[256] = "";
  const pglog_limits limits = limits_of(s);
  if (pglog_open(&s->follow_pg, s->cfg->store, s->cfg->node_name, &limits, err, sizeof err) != PGLOG_OK) {
    log_kv(LOG_ERROR, "cannot open the cluster's log", "error", err, NULL);
    return -1;
  }
  int rc = pthread_create(&s->follower, NULL, follower_main, s);
  if (rc != 0) {
    log_kv(LOG_ERROR, "cannot start a thread", "thread", "follower", "error", strerror(rc), NULL);
    return -1;
  }
  s->follower_running = 1;
  if (s->cfg->cluster_snapshot_interval > 0) {
    rc = pthread_create(&s->snapshotter, NULL, snapshotter_main, s);
    if (rc != 0) {
      log_kv(LOG_ERROR, "cannot start a thread", "thread", "snapshotter", "error", strerror(rc), NULL);
      return -1;
    }
    s->snapshotter_running = 1;
  }
  return 0;
}

void store__cluster_stopping(store *s) {
  long long none = 0;
  atomic_store(&s->pg_stop, 1);
  atomic_compare_exchange_strong(&s->pg_stopped_at, &none, (long long)(store__now_s() * 1000)); /* the first stop */
}

void store__cluster_stop(store *s) {
  atomic_store(&s->pg_stop, 1);
  if (s->follower_running) pthread_join(s->follower, NULL);
  if (s->snapshotter_running) pthread_join(s->snapshotter, NULL);
  s->follower_running = s->snapshotter_running = 0;
  pglog_close(s->follow_pg);
  pglog_close(s->pg);
  s->follow_pg = s->pg = NULL;
}
