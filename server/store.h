/* store.h — SQLite: the batch log, the history snapshot, and the one writer thread.
 *
 * Every change to stored data is a wop handed to store_submit. The writer
 * thread takes what is queued as a group, records it in one transaction
 * (group commit; a savepoint per op, so that an op refused with a 4xx does not
 * sink the others), commits, then applies it to the in-memory state and calls
 * each op's done. A 2xx therefore follows a commit, and a failed commit
 * changes nothing, on disk or in memory. Between groups the writer writes
 * changed history rows to the snapshot tables, a bounded number per
 * transaction.
 */
#ifndef FOCALD_STORE_H
#define FOCALD_STORE_H

#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "job.h"
#include "state.h"

typedef struct store store;

/* Opens (creating) the database and applies the migrations. Returns 0 or -1
 * after logging why. */
int store_open(store **out /* OUT */, const config *cfg, st_map *map);

/* Loads the snapshot into the map and replays the batch log after it. Returns
 * 0, or -1 after logging what is wrong: a database that cannot be read, or
 * whose rows are not what focald writes, is refused rather than half loaded. */
int store_load(store *s);

/* Starts the writer and checkpoint threads. */
int store_start(store *s);

/* Queues op for the writer; its done is called on the writer thread. Thread-safe. */
void store_submit(store *s, wop *op);

/* The process is stopping (SIGTERM): on a cluster node, the follower and the snapshotter end, and no round
 * trip to PostgreSQL waits more than a few seconds from now on (store_cluster.c says why), so that a server
 * that does not answer cannot hold the stop; one that answers still commits the batches drained. Any thread;
 * store_close calls it too. Accepts NULL. */
void store_stopping(store *s);

/* Stops accepting, lets the writer finish the queue, writes a full snapshot,
 * checkpoints the WAL and closes. Accepts NULL. */
void store_close(store *s);

/* Tells moved(position) each time the position applied in memory moves (the newest batch's seq alone, a
 * position of the shared log on a cluster node), and head(position) each time a cluster node learns the
 * log's head (-1 while PostgreSQL cannot be reached); from the writer and follower threads, never after
 * store_close. Before store_load. */
void store_on_applied(store *s, void (*moved)(int64_t position), void (*head)(int64_t position));

/* Figures for /metrics and the dataset endpoints. */
typedef struct store_stats {
  uint64_t commits, committed_ops, committed_samples, failed_commits, snapshot_failures;
  uint64_t duplicate_batches, idempotent_replays;
  double commit_seconds_total;
  int64_t db_bytes, wal_bytes;
  int queue_depth;
} store_stats;
void store_get_stats(store *s, store_stats *out /* OUT */);
/* The position of the cluster's log this node cannot apply (a row it cannot read, or one pruned before it
 * applied it), or 0: from then on it stores no write, until started again with an empty --db. Any thread. */
int64_t store_stuck_position(store *s);
/* Appends the writer's histograms (commit duration, writes and samples per commit) for /metrics. */
void store_metrics_write(store *s, buf *o);

#endif /* FOCALD_STORE_H */
