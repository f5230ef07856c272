/* store_internal.h — what the store's files share: the store itself, the table
 * of writer operations, and the SQL helpers (store__*). Only the writer thread
 * (and the main thread while loading and closing) uses these. */
#ifndef FOCALD_STORE_INTERNAL_H
#define FOCALD_STORE_INTERNAL_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

#include "config.h"
#include "faultpoint.h"
#include "job.h"
#include "metrics.h"
#include "state.h"

/* store.h's handle, declared again here: the parts of the store include this header, not store.h (the
 * public side, which store.c implements with their help). */
typedef struct store store;

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

/* One kind of writer operation. write runs inside the group's transaction (in
 * a savepoint of its own): it checks the op against the state as it stands
 * (memory is the committed state; see reads_memory), writes its rows and
 * prepares everything its apply needs in memory. It returns an SQLite code;
 * an op it refuses (404, 409, out of memory preparing) gets op->failed and
 * SQLITE_OK. apply runs after the commit and cannot fail. discard frees what
 * write prepared when the op is not applied. */
typedef struct wop_class {
  int (*write)(store *s, wop *op);
  void (*apply)(store *s, wop *op);
  void (*discard)(store *s, wop *op);
  /* the op is checked against a dataset's state in memory, which reflects
   * only committed groups: it starts a new group after an earlier op of the
   * group that changed what it reads (see store.c's must_wait) */
  int reads_memory;
} wop_class;

/* The review loop's ops (store_review.c). */
extern const wop_class store__review_class, store__meta_class, store__queue_class, store__queue_delete_class;

/* Where a snapshot pass has got to (see store_snap.c). */
typedef struct snap_pass {
  int active;
  int64_t watermark;   /* every batch up to here was applied when the pass began */
  int64_t ds_id;       /* the dataset being written; the pass goes through datasets in id order */
  int phase;           /* of that dataset: its new samples, changed meta, then runs */
  int run;
  uint32_t key;
  st_classes *cls;     /* the runs' class means as of the watermark: written by the pass's last step */
  int ncls;
  double started;
} snap_pass;

struct store {
  const config *cfg;  /* the caller's, which outlives the store */
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
  int64_t applied_seq;        /* snapshot.applied_seq as committed */
  int snap_wanted;            /* something was applied since the last pass began */
  snap_pass snap;
  double snap_due;            /* when the next pass may begin */
  /* stats, read by other threads */
  atomic_ullong commits, committed_ops, committed_samples, failed_commits, snapshot_failures;
  atomic_ullong commit_ns;
  metrics_hist commit_seconds, commit_ops, commit_samples;
  atomic_int wal_catchup;     /* set by the checkpointer: the writer copies the WAL's last frames */
};

/* The SQL helpers (store_sql.c). */
double store__now_s(void);
int64_t store__unix_ms(void);
/* Runs sql, logging a failure. Returns the SQLite code. */
int store__exec(sqlite3 *db, const char *sql);
/* Steps q once more and resets it: SQLITE_OK for a statement that is done, else the error. */
int store__step_done(sqlite3_stmt *q);
void store__step_reset(sqlite3_stmt *q);
/* Marks op failed: storage_full for a full or failing disk, internal otherwise. */
void store__sql_problem(store *s, wop *op, int rc);
/* Marks op failed for memory that could not be had while preparing it. */
void store__oom(wop *op);
/* Finds (or, with create, creates) a dataset's row. SQLITE_NOTFOUND when absent. */
int store__sql_dataset(store *s, const char *name, int create, int64_t *id, int64_t *created_at);
/* Writes sample key's row as the state has it. */
int store__write_sample(store *s, const st_dataset *ds, uint32_t key);
/* Writes the samples rows of keys from st_prefix(ds) up to key (included) as
 * the state has them: the table stays a prefix of the keys. *upto gets the
 * new prefix length, for st_set_persisted after the commit. */
int store__write_prefix(store *s, st_dataset *ds, uint32_t key, uint32_t *upto);

/* The snapshot pass (store_snap.c). store__snap_step runs one bounded
 * transaction of it: 1 while the pass goes on, 0 when it finished, -1 on
 * error (memory is then as before the step). store__snap_end(s, rc) ends the
 * pass with the last step's rc: an error abandons it, and a later pass, after
 * a pause, writes what it could not. */
void store__snap_begin(store *s);
int store__snap_step(store *s);
void store__snap_end(store *s, int rc);
/* Frees what the snapshot steps keep between them (at close). */
void store__snap_free(void);

/* Loading (store_load.c). */
int store__load(store *s);

#endif /* FOCALD_STORE_INTERNAL_H */
