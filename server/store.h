/* store.h — SQLite: the batch log, the history snapshot, and the one writer thread.
 *
 * Every change to stored data is a wop handed to store_submit. The writer
 * thread takes whatever is queued, applies it in one transaction (group
 * commit; a savepoint per op so one failure does not sink the others),
 * commits, then applies it to the in-memory state and calls each op's done.
 * A 2xx therefore follows a commit. Between groups the writer writes dirty
 * history rows to the snapshot tables, a bounded number per transaction.
 */
#ifndef FOCALD_STORE_H
#define FOCALD_STORE_H

#include <stdint.h>

#include "config.h"
#include "job.h"
#include "state.h"

typedef struct store store;

/* Opens (creating) the database and applies the migrations. Returns 0 or -1
 * after logging why. */
int store_open(store **out /* OUT */, const config *cfg, st_map *map);

/* Loads the snapshot into the map and replays the batch log after it. */
int store_load(store *s);

/* Starts the writer and checkpoint threads. */
int store_start(store *s);

/* Queues op for the writer; its done is called on the writer thread. Thread-safe. */
void store_submit(store *s, wop *op);

/* Stops accepting, lets the writer finish the queue, writes a full snapshot,
 * checkpoints the WAL and closes. Accepts NULL. */
void store_close(store *s);

/* Figures for /metrics and the dataset endpoints. */
typedef struct store_stats {
  uint64_t commits, committed_ops, committed_samples;
  double commit_seconds_total;
  int64_t db_bytes, wal_bytes;
  int queue_depth;
} store_stats;
void store_get_stats(store *s, store_stats *out /* OUT */);
/* Appends the writer's histograms (commit duration, writes and samples per commit) for /metrics. */
void store_metrics_write(store *s, char **buf, size_t *len, size_t *cap);

#endif /* FOCALD_STORE_H */
