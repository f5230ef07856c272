/* store_internal.h — what the store's files share: the store itself, the table
 * of writer operations, and the SQL helpers (store__*). Only the writer thread
 * (and the main thread while loading and closing) uses these. */
#ifndef FOCALD_STORE_INTERNAL_H
#define FOCALD_STORE_INTERNAL_H

#include <jansson.h>
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
  S_BATCH_AT,
  S_BATCH_INSERT,
  S_SAMPLE_UPSERT,
  S_HIST_UPSERT,
  S_CLS_UPSERT,
  S_RUN_CLS_SEQ,
  S_SNAPSHOT_SET,
  S_REVIEW_LOG,
  S_IDEM_FIND,
  S_IDEM_PUT,
  S_IDEM_PURGE,
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
   * group that changed what it reads (see store_group.c's must_wait) */
  int reads_memory;
} wop_class;

/* The class of an op kind (store_group.c): what the writer, and a cluster node applying the log, run. */
const wop_class *store__class_of(wop_kind k);

/* Groups (store_group.c), on the writer thread. store__group_take takes the next group off the queue
 * (under s->lock): the ops in order, up to one that must wait for them to be committed; NULL when none is
 * queued. *n (OUT) counts them. store__group_run commits the group of n ops, applies it and answers each
 * op (op->done). store__group_catch_up applies what a cluster's log has beyond the local copy, outside a
 * group (start-up; the follower saw new rows): 0, or -1 (logged); 0 at once when focald runs alone. */
wop *store__group_take(store *s, int *n);
void store__group_run(store *s, wop *list, int n);
int store__group_catch_up(store *s);

/* Idempotency keys of the review loop's writes (store_idem.c), in the group's transaction.
 * store__idem_check, before op's write: the key seen with the same request makes op a replay
 * (op->replayed, op->answer); seen with another, op fails (422 idempotency_key_reused); otherwise nothing.
 * store__idem_record, after a write that accepted op: builds op->answer and keeps it with the key.
 * store__idem_purge removes keys past their time, a bounded number per call. Each returns an SQLite code
 * (store__idem_check and store__idem_record SQLITE_OK with op->failed when memory ran out). */
int store__idem_check(store *s, wop *op);
int store__idem_record(store *s, wop *op);
int store__idem_purge(store *s);

/* The review loop's ops (store_review.c). */
extern const wop_class store__review_class, store__meta_class, store__queue_class, store__queue_delete_class;
/* A batch and a dataset's deletion (store_batch.c). */
extern const wop_class store__batch_class, store__delete_class;

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

/* A batch as the batch log records it (one segment of a request): what the local row and a cluster's log
 * row both hold. Pointers are borrowed. */
typedef struct store_logged_batch {
  const char *dataset, *run;
  int32_t classes;
  int64_t ds_created, run_created; /* unix seconds, as the dataset's and the run's rows have them */
  const char *batch_id;            /* NULL: none */
  int64_t segments;                /* with a batch_id: the batches its request is stored as; 0: not known */
  int has_epoch, has_step;
  int64_t epoch, step, n;
  const char *loss_config;         /* JSON */
  int64_t received_at;             /* unix milliseconds */
  const char *meta;                /* JSON object, or NULL */
  const void *payload;             /* codec.c */
  size_t plen;
} store_logged_batch;

struct pglog;
struct pglog_row;

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
  atomic_ullong duplicate_batches, idempotent_replays; /* retries recognised: a batch_id, an Idempotency-Key */
  atomic_ullong commit_ns;
  metrics_hist commit_seconds, commit_ops, commit_samples;
  atomic_int wal_catchup;     /* set by the checkpointer: the writer copies the WAL's last frames */
  /* a cluster node's (store_cluster.c); pg is NULL when focald runs alone */
  struct pglog *pg;           /* the writer's connection to the shared log */
  struct pglog *follow_pg;    /* the follower thread's */
  pthread_t follower, snapshotter;
  int follower_running, snapshotter_running;
  atomic_int pg_stop;         /* the follower and the snapshotter end */
  atomic_llong pg_stopped_at; /* 0, or when the node began to stop (CLOCK_MONOTONIC, ms): pglog_limits */
  atomic_int pg_wanted;       /* the follower saw rows past what is applied: the writer catches up */
  int pg_in_group;            /* the writer holds the log's append lock for the current group */
  int64_t pg_applied;         /* the last position of the log the local database holds and memory applied */
  int64_t pg_group_last;      /* in a group: the last position it appended (0: none) */
  int64_t pg_group_head;      /* in a group: the log's head read under its append lock (the writer's own copy:
                               * the follower moves pg_head, to -1 when its connection is down) */
  int pg_failed;              /* the group failed on PostgreSQL: its ops get store_unavailable */
  atomic_llong pg_stuck;      /* the log's position this node cannot apply (unreadable, or pruned), or 0 */
  double idem_purge_at;       /* when the writer next removes expired idempotency keys */
  double pg_retry_at;         /* after a failure, groups fail at once until then */
  atomic_llong pg_head;       /* the log's head as last seen; -1 when the follower cannot reach it */
  atomic_llong applied_pos;   /* last_seq, for other threads */
  void (*applied_moved)(int64_t position); /* store_on_applied's */
  void (*head_moved)(int64_t position);
};

/* The SQL helpers (store_sql.c). */
double store__now_s(void);
int64_t store__unix_ms(void);
/* Removes the database file path and the WAL, shared-memory and journal files SQLite keeps beside it. */
void store__unlink_db_files(const char *path);
/* Runs sql, logging a failure. Returns the SQLite code. */
int store__exec(sqlite3 *db, const char *sql);
/* Steps q once more and resets it: SQLITE_OK for a statement that is done, else the error. */
int store__step_done(sqlite3_stmt *q);
void store__step_reset(sqlite3_stmt *q);
/* Marks op failed: storage_full for a full or failing disk, internal otherwise. */
void store__sql_problem(store *s, wop *op, int rc);
/* Marks op failed for memory that could not be had while preparing it. */
void store__oom(wop *op);
/* Finds (or, with create, creates) a dataset's row. SQLITE_NOTFOUND when absent. *created_at (IN/OUT): the
 * row's; a new row takes the value given when it is > 0 (a cluster node copying the log's), else now. */
int store__sql_dataset(store *s, const char *name, int create, int64_t *id, int64_t *created_at);
/* Finds or creates run name of dataset ds_id: *id, its class count and its creation time (IN/OUT, as
 * store__sql_dataset's). */
int store__sql_run(store *s, int64_t ds_id, const char *name, int32_t classes, int64_t *id, int32_t *have_classes,
                   int64_t *created_at);
/* Writes sample key's row as the state has it. */
int store__write_sample(store *s, const st_dataset *ds, uint32_t key);
/* Writes the samples rows of keys from st_prefix(ds) up to key (included) as
 * the state has them: the table stays a prefix of the keys. *upto gets the
 * new prefix length, for st_set_persisted after the commit. */
int store__write_prefix(store *s, st_dataset *ds, uint32_t key, uint32_t *upto);

/* Inserts b into the local batch log at seq (0: the next rowid); *out_seq (OUT) is its seq. */
int store__insert_batch(store *s, int64_t ds_id, int64_t run_id, const store_logged_batch *b, int64_t seq,
                        int64_t *out_seq);

/* The cluster (store_cluster.c); every one is a no-op returning 0 when s->pg is NULL. */
/* Connects to cfg->store, checks that the local database is this log's cache (or binds an empty one). */
int store__cluster_open(store *s);
/* Before using the log: 0 when the connection is up (connecting again after a failure, at most twice a
 * second), else -1 with s->pg_failed. store__cluster_failed notes a failure the caller met. */
int store__cluster_ready(store *s);
void store__cluster_failed(store *s);
/* Begins a group: takes the log's append lock; s->pg_group_head is then the log's head, and the writer catches
 * up to it before writing. 0, or -1 with s->pg_failed set (the group's ops get store_unavailable). */
int store__cluster_begin(store *s);

/* What one local transaction of a catch-up takes from the log: a run of batch rows (copied into the local
 * database by store__cluster_copy), or one change of the review loop (decoded, for the writer to write and
 * apply: its write checks memory, which must hold every row before it). */
typedef struct store_log_chunk {
  store *s;
  int64_t consumed;   /* the last position taken */
  int batches;        /* batch rows copied */
  wop *op;            /* the change taken (review_op_free frees it), or NULL */
  int more;           /* rows may follow: read again */
  int sql_rc;         /* the first local failure */
  int malformed;      /* a row focald cannot read */
  int64_t gap;        /* the log no longer has the next position (pruned): its head, else 0 */
  int seen;           /* rows read */
} store_log_chunk;
/* Reads the log after s->pg_applied into *c, inside the caller's local transaction. 0; -1 when PostgreSQL
 * failed (s->pg_failed); an SQLite code, or SQLITE_CORRUPT for a row focald cannot read or a pruned gap
 * (logged). */
int store__cluster_copy(store *s, store_log_chunk *c);
/* Records in the local database (in the caller's transaction) the last position it holds. */
int store__cluster_mark_pos(store *s, int64_t pos);
/* Appends b to the log (in the group), giving its position. An SQLite-style code: SQLITE_OK, or SQLITE_ERROR with
 * s->pg_failed set. */
int store__cluster_append_batch(store *s, const store_logged_batch *b, int64_t *pos);
/* Appends a change of the review loop (or a dataset's deletion) that op's write accepted, giving op->log_pos.
 * An SQLite-style code, as store__cluster_append_batch. */
int store__cluster_append_op(store *s, wop *op);
/* Before the group's local COMMIT: records in the local database the last position the group appended. */
int store__cluster_mark(store *s);
/* Commits the group's rows in the log: 0, or -1 with s->pg_failed set (nothing, or perhaps everything, was
 * committed: see pglog_commit). A group that appended nothing releases the lock instead. */
int store__cluster_commit(store *s);
/* After the group's local COMMIT: its positions are applied. */
void store__cluster_committed(store *s);
/* Ends a group that will not be committed in the log. */
void store__cluster_rollback(store *s);
/* Publishes the applied position to other threads (applied_pos) and tells store_on_applied's function. */
void store__cluster_applied(store *s);
/* Notes the log's head as learnt (-1: unknown), for /metrics and store_on_applied's function. */
void store__cluster_head(store *s, int64_t head);
int store__cluster_start(store *s);
/* Before anything at --db is made, opened or migrated: 0 when there is no cfg->store, or its log answers and
 * the database at --db, read only, is not one a node of it must refuse (another cluster's cache, or batches
 * focald recorded alone); else -1 (logged). A node refused leaves its local database as it was. */
int store__cluster_admit(const config *cfg);
/* Before the local database is opened: a cluster node with no database yet begins from the newest snapshot
 * in PostgreSQL, written where --db says. 0, or -1 (logged). */
int store__cluster_bootstrap(const config *cfg);
/* store_stopping's part on a cluster node. */
void store__cluster_stopping(store *s);
void store__cluster_stop(store *s);

/* The log's rows (store_logrow.c). */
/* the kinds of the log's rows: a batch, or ROW_OP_BASE + the wop_kind of a change of the review loop or a
 * dataset's deletion */
enum { ROW_BATCH = 1, ROW_OP_BASE = 100 };
/* A batch's row body: a JSON head (everything but the payload), a NUL, then the codec payload. Returns a
 * malloc'd body and its length (OUT), or NULL when memory ran out. */
unsigned char *store__logrow_batch_body(const store_logged_batch *b, size_t *len);
/* Reads a batch's row body back into *b (OUT), whose strings borrow from *root (OUT; the caller decrefs it)
 * and the body. Returns 0, or -1 for a body focald did not write. */
int store__logrow_batch_unbody(const void *body, size_t len, const char *dataset, store_logged_batch *b, json_t **root);
/* The row body of a change of the review loop or a dataset's deletion: the request that made it and the
 * time the writer gave it. A new reference, or NULL when memory ran out (or for another kind of op). */
json_t *store__logrow_op_request(const wop *op);
/* The op a logged change stands for, decoded as its request was (NULL for a row focald cannot read). The
 * caller frees it with review_op_free (or free, for a deletion). */
wop *store__logrow_op_of_row(const struct pglog_row *row);

/* Whether the replay could read a logged batch's payload and meta (store_load.c): 0, or -1 for one it
 * could not (or when memory ran out telling). A cluster node checks a row before it stores it: one it
 * stored and then could not replay would hold its database ahead of its memory. */
int store__logged_batch_readable(const store_logged_batch *b);
/* Replays the local batch log after position after into memory (store_load.c); *replayed (OUT) counts
 * them. 0 or -1 (logged). */
int store__replay_after(store *s, int64_t after, int64_t *replayed);

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
