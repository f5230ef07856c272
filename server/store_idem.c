/* store_idem.c — the writer's side of the Idempotency-Key (idem.h): a key's lookup before a change, its
 * record with the change, and the removal of expired keys.
 *
 * All of it runs in the group's transaction, in the op's savepoint: a key is recorded exactly when its
 * change commits, so a crash right after the answer still finds it. The writer runs one op at a time, and
 * an op's lookup sees what the earlier ops of its group wrote: of two requests with one key in flight, the
 * first is applied and the second replays its answer. Only accepted changes are recorded: a refused one
 * changed nothing, and its retry is checked again (so one refused for a state that has changed since may
 * then succeed). A cluster node records the keys of the changes it applies from the log as well, so a
 * retry sent to another node is recognised too.
 */
#include <stdlib.h>
#include <string.h>

#include "answer.h"
#include "idem.h"
#include "log.h"
#include "store_internal.h"

/* the expired keys one purge removes at most, and how often the writer purges when there were fewer */
#define PURGE_ROWS 1000
#define PURGE_EVERY_S 60.0

int store__idem_check(store *s, wop *op) {
  if (!op->idem_key[0]) return SQLITE_OK;
  const st_dataset *ds = st_w_find_name(s->map, op->dataset);
  if (!ds) return SQLITE_OK; /* no dataset, no keys: the write answers 404 */
  sqlite3_stmt *q = s->st[S_IDEM_FIND];
  sqlite3_bind_int64(q, 1, st_id(ds));
  sqlite3_bind_text(q, 2, op->idem_key, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 3, store__unix_ms() - (int64_t)s->cfg->idempotency_ttl * 1000);
  int rc = sqlite3_step(q);
  if (rc == SQLITE_DONE) {
    store__step_reset(q);
    return SQLITE_OK;
  }
  if (rc != SQLITE_ROW) {
    rc = sqlite3_errcode(s->db);
    store__step_reset(q);
    return rc;
  }
  char *fp = idem_fingerprint(op);
  const char *had = (const char *)sqlite3_column_text(q, 0), *body = (const char *)sqlite3_column_text(q, 2);
  if (!fp || !had || !body) {
    store__oom(op);
  } else if (strcmp(fp, had) != 0) {
    /* the other request's method and target (its first line) say which it was */
    const int head = (int)strcspn(had, "\n");
    op->failed = 1;
    problem_set(&op->err, P_IDEMPOTENCY_KEY_REUSED, IDEM_HEADER,
                IDEM_HEADER " \"%.100s\" was used for another request (%.*s) on dataset \"%s\" within "
                "--idempotency-ttl (%d s): nothing was changed; send a new key with a new request",
                op->idem_key, head > 120 ? 120 : head, had, op->dataset, s->cfg->idempotency_ttl);
  } else if (!(op->answer = strdup(body))) {
    store__oom(op);
  } else {
    op->answer_status = sqlite3_column_int(q, 1);
    op->replayed = 1;
    /* a cluster node has applied the log up to its head, the first request's change included: a read with
     * after= this position sees that change */
    if (s->pg) op->log_pos = s->pg_applied;
  }
  free(fp);
  store__step_reset(q);
  return SQLITE_OK;
}

int store__idem_record(store *s, wop *op) {
  if (!op->idem_key[0] || op->failed || op->replayed) return SQLITE_OK;
  char *fp = idem_fingerprint(op);
  /* the group built the answer already (store_group.c); a change caught up from the cluster's log has none yet */
  if (!fp || (!op->answer && answer_of(op, &op->answer_status, &op->answer) != 0)) {
    free(fp);
    store__oom(op);
    return SQLITE_OK;
  }
  sqlite3_stmt *q = s->st[S_IDEM_PUT];
  sqlite3_bind_int64(q, 1, op->ds_id);
  sqlite3_bind_text(q, 2, op->idem_key, -1, SQLITE_STATIC);
  sqlite3_bind_text(q, 3, fp, -1, SQLITE_STATIC);
  sqlite3_bind_int(q, 4, op->answer_status);
  sqlite3_bind_text(q, 5, op->answer, -1, SQLITE_STATIC);
  sqlite3_bind_int64(q, 6, store__unix_ms());
  int rc = store__step_done(q);
  free(fp);
  return rc;
}

int store__idem_purge(store *s) {
  const double now = store__now_s();
  if (now < s->idem_purge_at) return SQLITE_OK;
  sqlite3_stmt *q = s->st[S_IDEM_PURGE];
  sqlite3_bind_int64(q, 1, store__unix_ms() - (int64_t)s->cfg->idempotency_ttl * 1000);
  sqlite3_bind_int(q, 2, PURGE_ROWS);
  int rc = store__step_done(q);
  /* a full purge may have left more behind: the next group purges again */
  if (rc == SQLITE_OK) s->idem_purge_at = sqlite3_changes(s->db) >= PURGE_ROWS ? now : now + PURGE_EVERY_S;
  return rc;
}
