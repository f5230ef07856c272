/* store_group.c — a group of writes: which queued ops make one, and its commit in one transaction.
 *
 * The writer takes what is queued as a group and records it in one
 * transaction: each op in a savepoint of its own, then one COMMIT, so that
 * concurrent clients share an fsync. An op is checked against the state as it
 * stands after the ops before it in its group. Batches and deletions are
 * checked by their SQL alone, which sees the group's earlier writes; ops that
 * check a dataset's state in memory (reviews, meta, queues) see only committed
 * groups there, so such an op starts a new group when an earlier op of the
 * group names its dataset. Each op prepares in memory whatever it will need,
 * and only after the COMMIT are the ops applied to memory, in order; an apply
 * cannot fail. If anything fails between BEGIN and COMMIT, nothing of the group
 * is stored, every op of it fails with the reason, and memory is exactly as
 * before (st_tx_end forgets what was prepared). A 2xx therefore follows a
 * commit, and an error means nothing changed.
 *
 * A cluster node's catch-up commits the rows other nodes logged the same way:
 * one local transaction per run of batches or per change, applied after its
 * commit. It runs between groups, and inside one before its ops are written.
 */
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "answer.h"
#include "log.h"
#include "review.h"
#include "store_internal.h"

/* A barrier's class: it writes and prepares nothing, and is done once the ops before it are committed. */
static void nothing(store *s, wop *op) {
  (void)s;
  (void)op;
}

static int barrier_write(store *s, wop *op) {
  (void)s;
  (void)op;
  return SQLITE_OK;
}

const wop_class *store__class_of(wop_kind k) {
  static const wop_class barrier = {barrier_write, nothing, nothing, 0};
  switch (k) {
  case WOP_BATCH: return &store__batch_class;
  case WOP_DELETE_DATASET: return &store__delete_class;
  case WOP_REVIEW: return &store__review_class;
  case WOP_META: return &store__meta_class;
  case WOP_QUEUE: return &store__queue_class;
  case WOP_QUEUE_DELETE: return &store__queue_delete_class;
  default: return &barrier;
  }
}

/* The sample an op changes alone (a review or a meta put), or NULL for an op on its whole dataset. */
static const char *op_sample(const wop *o) {
  if (o->kind == WOP_REVIEW) return ((const review_op *)o)->id;
  if (o->kind == WOP_META) return ((const meta_op *)o)->id;
  return NULL;
}

/* Whether op o, checked against memory, must wait for the n ops before it in the group to be committed
 * and applied: a review or meta put waits for an op on its whole dataset or on the same sample; a queue
 * build or removal, or a dataset's deletion (which counts what it removes from memory), for any op on its
 * dataset. Batches are checked by their SQL alone. */
static int must_wait(const wop *o, wop *const *group, int n) {
  if (!store__class_of(o->kind)->reads_memory) return 0;
  const char *sample = op_sample(o);
  for (int i = 0; i < n; i++) {
    const char *gs = op_sample(group[i]);
    if (strcmp(group[i]->dataset, o->dataset) == 0 && (!sample || !gs || strcmp(gs, sample) == 0)) return 1;
  }
  return 0;
}

#define GROUP_MAX 512

/* Takes the next group off the queue (under s->lock): the ops in order, up to one that must wait for
 * them, or GROUP_MAX. */
wop *store__group_take(store *s, int *n) {
  wop *members[GROUP_MAX];
  int count = 0;
  wop *o = s->head;
  while (o && count < GROUP_MAX && !must_wait(o, members, count)) {
    members[count++] = o;
    o = o->next;
  }
  wop *head = s->head;
  if (count) members[count - 1]->next = NULL;
  s->head = o;
  if (!s->head) s->tail = NULL;
  s->queued -= count;
  *n = count;
  return count ? head : NULL;
}

/* After a commit that failed while writing or syncing the WAL, its frames can
 * still be in the file without a valid index entry, and a crash before the next
 * commit would bring the transaction back when the WAL is recovered. A small
 * commit of its own is written over them. */
static void overwrite_failed_frames(store *s) {
  if (sqlite3_exec(s->db, "BEGIN IMMEDIATE; UPDATE snapshot SET written_at = written_at WHERE id = 1; COMMIT", NULL, NULL,
                   NULL) != SQLITE_OK) {
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    log_msg(LOG_WARN, "could not overwrite the frames of the failed commit; the next commit will");
  }
}

/* Builds a change's answer within its savepoint, before the commit: sending it once committed then takes no
 * memory, so a committed change is never answered with an error (a client would send it again). Running out
 * of memory here refuses the change. A batch's answer was built on the pool (work.c); a replay has its first. */
static void build_answer(wop *op) {
  if (op->failed || op->replayed || op->answer || op->kind == WOP_BATCH || op->kind == WOP_BARRIER) return;
  if (answer_of(op, &op->answer_status, &op->answer) != 0) store__oom(op);
}

/* Counts the samples rows op wrote below op->persist_to (store_review.c) in its dataset's prefix for the rest of
 * the group, once op is to be kept: the last check that can fail op alone before its savepoint is released. Counted
 * no earlier, since an op that fails is rolled back to its savepoint, its rows with it; had they been counted, a
 * later op of the group would take them as written, and its apply would move the dataset's persisted prefix
 * past rows the table does not have, which no snapshot writes then (a hole the next start refuses). Running out
 * of memory here fails op. */
static void keep_prefix(store *s, wop *op) {
  if (op->failed || op->replayed || !op->persist_to) return;
  st_dataset *ds = st_w_find(s->map, op->ds_id);
  if (ds && op->persist_to > st_prefix(ds) && st_prefix_written(s->map, ds, op->persist_to) != 0) store__oom(op);
}

/* Runs one statement of the group's transaction control; 0 or the SQLite code. */
static int tx(store *s, const char *sql) {
  return sqlite3_exec(s->db, sql, NULL, NULL, NULL);
}

/* ------------------------------------------------------------------ a cluster node catching up */

/* Writes a change another node logged, on this node's state. That node accepted it against the same state,
 * so a refusal here means the states differ: logged, and the catch-up stops (SQLITE_CORRUPT). */
static int write_logged(store *s, wop *op) {
  op->batch_seq = s->logged_seq;
  int rc = store__class_of(op->kind)->write(s, op);
  /* the key travels with the change: a retry sent to this node is recognised too */
  if (rc == SQLITE_OK && !op->failed) {
    rc = store__idem_record(s, op);
    if (rc == SQLITE_OK && op->failed) return SQLITE_NOMEM;
  }
  if (rc == SQLITE_OK && op->failed) {
    char pos[24];
    snprintf(pos, sizeof pos, "%lld", (long long)op->log_pos);
    log_kv(LOG_ERROR, "a change in the cluster's log is refused on this node: its state differs from the node's that "
           "logged it", "position", pos, "detail", op->err.detail, NULL);
    rc = SQLITE_CORRUPT;
  }
  return rc;
}

/* Applies the shared log's rows after s->pg_applied (store_cluster.c): one local transaction per run of
 * batches or per change, each applied in memory after its commit, as a group is. Returns 0; -1 when
 * PostgreSQL failed (s->pg_failed); an SQLite code otherwise (memory is then as the last commit left it). */
static int catch_up(store *s) {
  store_log_chunk c;
  do {
    /* a pass that fails before store__cluster_copy fills c frees no op: not the last pass's, freed already */
    c = (store_log_chunk){.s = s};
    int rc = tx(s, "BEGIN IMMEDIATE");
    if (rc == SQLITE_OK) rc = store__cluster_copy(s, &c);
    if (rc == SQLITE_OK && c.op) rc = write_logged(s, c.op);
    if (rc == SQLITE_OK && c.consumed > s->pg_applied) rc = store__cluster_mark_pos(s, c.consumed);
    if (rc == SQLITE_OK) rc = tx(s, "COMMIT");
    if (rc != SQLITE_OK) {
      if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
      if (c.op) store__class_of(c.op->kind)->discard(s, c.op);
      review_op_free(c.op);
      c.op = NULL;
      st_tx_end(s->map);
      return rc;
    }
    if (c.batches) {
      int64_t replayed = 0;
      if (store__replay_after(s, s->last_seq, &replayed) != 0) return SQLITE_CORRUPT;
      s->logged_seq = s->last_seq;
    }
    if (c.op) {
      store__class_of(c.op->kind)->apply(s, c.op);
      st_tx_end(s->map);
      review_op_free(c.op);
      c.op = NULL;
    }
    if (c.consumed > s->pg_applied) {
      s->pg_applied = c.consumed;
      s->snap_wanted = 1;
      store__cluster_applied(s);
    }
  } while (c.more);
  return 0;
}

/* Catches up outside a group (start-up; the follower saw new rows). 0, or -1 (logged). */
int store__group_catch_up(store *s) {
  if (!s->pg) return 0;
  int rc = store__cluster_ready(s) == 0 ? catch_up(s) : -1;
  store__cluster_failed(s);
  return rc == 0 ? 0 : -1;
}

/* Commits one group of n ops: a savepoint per op, one COMMIT for all, then the applies and the answers.
 * On a cluster node the group runs under the shared log's append lock and the log commits first (see
 * store_cluster.c). */
void store__group_run(store *s, wop *list, int n) {
  fault_point(FP_GROUP);
  const double t0 = store__now_s();
  int rc = SQLITE_OK;
  if (s->pg) {
    /* under the log's append lock, with every row up to its head applied: the group's checks see the cluster */
    rc = store__cluster_ready(s) == 0 ? store__cluster_begin(s) : -1;
    if (rc == 0) fault_point(FP_LOCKED);
    if (rc == 0 && s->pg_group_head > s->pg_applied) rc = catch_up(s);
    if (rc != 0) {
      store__cluster_rollback(s);
      store__cluster_failed(s);
    }
    if (rc == -1) rc = SQLITE_ERROR; /* PostgreSQL failed: s->pg_failed */
  }
  const int64_t logged_before = s->logged_seq;
  if (rc == SQLITE_OK) rc = tx(s, "BEGIN IMMEDIATE");
  for (wop *op = list; op && rc == SQLITE_OK; op = op->next) {
    op->batch_seq = s->logged_seq;
    if (op->failed) continue;
    rc = tx(s, "SAVEPOINT op");
    if (rc != SQLITE_OK) break;
    /* a key seen before makes the op a replay of its first answer, or refuses it (store_idem.c) */
    rc = store__idem_check(s, op);
    if (rc == SQLITE_OK && !op->failed && !op->replayed) rc = store__class_of(op->kind)->write(s, op);
    if (rc == SQLITE_OK) build_answer(op);
    if (rc == SQLITE_OK) rc = store__idem_record(s, op);
    if (rc == SQLITE_OK) keep_prefix(s, op);
    if (rc != SQLITE_OK) break; /* a failed write fails the group: the transaction may be gone already */
    /* a cluster node logs each change it accepts (a batch logs itself, segment by segment) */
    if (s->pg && !op->failed && !op->replayed && op->kind != WOP_BATCH && op->kind != WOP_BARRIER)
      rc = store__cluster_append_op(s, op);
    if (rc != SQLITE_OK) break;
    rc = op->failed ? tx(s, "ROLLBACK TO op; RELEASE op") : tx(s, "RELEASE op");
  }
  /* expired idempotency keys go a few at a time, with the writes */
  if (rc == SQLITE_OK) rc = store__idem_purge(s);
  int logged = 0; /* committed in the cluster's log */
  if (s->pg && rc == SQLITE_OK) rc = store__cluster_mark(s);
  if (s->pg && rc == SQLITE_OK) {
    if (store__cluster_commit(s) == 0) logged = 1;
    else rc = SQLITE_ERROR;
  } else if (s->pg) {
    store__cluster_rollback(s);
  }
  if (rc == SQLITE_OK) rc = tx(s, "COMMIT");
  const int committed = rc == SQLITE_OK;
  if (committed) store__cluster_committed(s);
  /* in the log but not in the local copy: the answers stand, and the next catch-up brings the rows */
  const int logged_only = !committed && logged;
  if (!committed) {
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->logged_seq = logged_before;
    atomic_fetch_add(&s->failed_commits, 1);
    if (logged_only) {
      log_kv(LOG_ERROR, "the group is in the cluster's log but the local copy failed; it is applied when the node "
                        "catches up", "error", sqlite3_errstr(rc), NULL);
      atomic_store(&s->pg_wanted, 1);
    } else {
      /* nothing of the group is stored: every op fails with the reason */
      log_kv(LOG_ERROR, "a group of writes failed; nothing of it was stored", "error",
             s->pg_failed ? "the cluster's log" : sqlite3_errstr(rc), NULL);
      for (wop *op = list; op; op = op->next) {
        if (op->failed && op->err.code != P_NONE) continue;
        if (s->pg_failed) {
          op->failed = 1;
          problem_set(&op->err, P_STORE_UNAVAILABLE, NULL,
                      "the cluster's log in PostgreSQL could not be reached or did not commit; nothing was stored "
                      "(a retried batch_id is recognised if it was)");
        } else if (rc == SQLITE_CORRUPT && atomic_load(&s->pg_stuck)) {
          /* not this node's database: the log has a row it cannot apply, and every write waits behind it */
          op->failed = 1;
          problem_set(&op->err, P_STORE_UNAVAILABLE, NULL,
                      "this node cannot apply the cluster's log at position %lld (a row it cannot read, or one "
                      "pruned before it applied it); nothing was stored: send it to another node, and start this "
                      "one again with an empty --db", (long long)atomic_load(&s->pg_stuck));
        } else {
          store__sql_problem(s, op, rc);
        }
      }
    }
    if (rc == SQLITE_FULL || (rc & 0xff) == SQLITE_IOERR) overwrite_failed_frames(s);
  }
  uint64_t samples = 0, duplicates = 0, replays = 0;
  for (wop *op = list; op; op = op->next) {
    const wop_class *c = store__class_of(op->kind);
    if (committed && !op->failed && !op->replayed) {
      c->apply(s, op);
      if (op->kind == WOP_BATCH && ((job *)op)->duplicate) duplicates++;
      else if (op->kind == WOP_BATCH) samples += (uint64_t)((job *)op)->rq.n;
      s->snap_wanted = 1;
    } else {
      if (committed && !op->failed && op->replayed) replays++;
      c->discard(s, op);
    }
  }
  st_tx_end(s->map);
  if (committed) store__cluster_applied(s);
  const double seconds = store__now_s() - t0;
  if (committed) {
    atomic_fetch_add(&s->commits, 1);
    atomic_fetch_add(&s->committed_ops, (uint64_t)n);
    atomic_fetch_add(&s->committed_samples, samples);
    atomic_fetch_add(&s->duplicate_batches, duplicates);
    atomic_fetch_add(&s->idempotent_replays, replays);
    atomic_fetch_add(&s->commit_ns, (unsigned long long)(seconds * 1e9));
    metrics_hist_observe(&s->commit_seconds, seconds);
    metrics_hist_observe(&s->commit_ops, n);
    /* counted before anyone is answered: a client that reads /metrics after its 2xx sees its commit */
    metrics_hist_observe(&s->commit_samples, (double)samples);
  }
  for (wop *op = list, *next; op; op = next) {
    next = op->next;
    op->next = NULL;
    op->done(op);
  }
}
