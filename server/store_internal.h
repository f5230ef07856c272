/* store_internal.h — what store.c and store_review.c share: the store itself and the
 * writer's SQL helpers (store__*). Only the writer thread uses these. */
#ifndef FOCALD_STORE_INTERNAL_H
#define FOCALD_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "metrics.h"
#include "store.h"

enum {
  S_DS_FIND,
  S_DS_INSERT,
  S_RUN_FIND,
  S_RUN_INSERT,
  S_BATCH_DUP,
  S_BATCH_INSERT,
  S_SAMPLE_UPSERT,
  S_HIST_UPSERT,
  S_CLS_UPSERT,
  S_RUN_CLS_SEQ,
  S_SNAPSHOT_SET,
  S_REVIEW_LOG,
  S_COUNT
};


/* Where a snapshot pass has got to. */
typedef struct snap_cursor {
  int active;
  int64_t watermark;          /* every batch up to here was applied when the pass began */
  char dataset[ST_NAME_MAX + 1]; /* the dataset being written ("" before the first) */
  int run;                    /* -1: the dataset's samples; then its runs by index */
  uint32_t key;
  double started;
} snap_cursor;

struct store {
  config cfg;
  st_map *map;
  sqlite3 *db;
  sqlite3_stmt *st[S_COUNT];
  pthread_t writer, checkpointer;
  int writer_running, checkpointer_running;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  wop *head, *tail;
  int queued;
  int stopping;
  int64_t last_seq;           /* the newest batch applied in memory (writer thread) */
  int64_t logged_seq;         /* the newest batch written to the batch log, this group's included */
  snap_cursor snap;
  double last_snapshot;
  /* stats, read by other threads */
  atomic_ullong commits, committed_ops, committed_samples;
  atomic_ullong commit_ns;
  metrics_hist commit_seconds, commit_ops, commit_samples;
  atomic_int wal_catchup;     /* set by the checkpointer: the writer copies the WAL's last frames */
};


double store__now_s(void);
int64_t store__unix_ms(void);
/* Runs sql, logging a failure. Returns the SQLite code. */
int store__exec(sqlite3 *db, const char *sql);
void store__step_reset(sqlite3_stmt *q);
/* Marks op failed: storage_full for a full or failing disk, internal otherwise. */
void store__sql_problem(store *s, wop *op, int rc);
/* Finds (or, with create, creates) a dataset's row. SQLITE_NOTFOUND when absent. */
int store__sql_dataset(store *s, const char *name, int create, int64_t *id, int64_t *created_at);
/* Writes sample key's row as the state has it. */
int store__write_sample(store *s, const st_dataset *ds, uint32_t key);

/* The review operations (store_review.c): the SQL, inside the group's
 * transaction (plan carries what the memory step needs), then the memory
 * step after the commit. */
int store__sql_review(store *s, wop *op);
int store__sql_meta(store *s, wop *op);
int store__sql_queue(store *s, wop *op);
int store__sql_queue_delete(store *s, wop *op);
void store__apply_review_op(store *s, wop *op);
/* Loads the audit trail and the queues (at start-up, after the samples). */
int store__load_reviews(store *s);

#endif /* FOCALD_STORE_INTERNAL_H */
