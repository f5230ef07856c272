/* pglog.h — the cluster's shared log in PostgreSQL: rows at positions 1, 2, 3, ... that every node
 * appends to and follows in the same order.
 *
 * The log is the truth of a cluster; each node's memory is a replica of the state machine that applies
 * its rows in position order. What makes that sound is two promises, both kept by PostgreSQL itself:
 *
 *  - No gaps. An appender takes the lock on the one-row table focald_log_head (pglog_begin), writes its
 *    rows at head + 1, head + 2, ... (pglog_append) and moves the head in the same transaction
 *    (pglog_commit). A rollback undoes the rows and the head together, so no position is ever skipped.
 *  - No inversions. The lock is held until the transaction commits, and PostgreSQL makes a transaction
 *    visible before it releases its locks; the next appender reads the head only once it holds the lock
 *    (READ COMMITTED re-reads a row it waited for), so it sees every row below it committed. Rows
 *    therefore become visible in position order: a reader that sees position k sees every position
 *    below k, and one that reads "pos > applied ORDER BY pos" never has to come back for a row it passed.
 *
 * The price is that appends are serialised across the cluster, one transaction at a time; each node's
 * writer amortises that by appending a whole group of requests in one transaction.
 *
 * The commit also sends NOTIFY focald_log with the new head (delivered at commit, in commit order), which
 * wakes followers (pglog_listen, pglog_wait); a follower also polls, so a lost notification only delays it.
 *
 * A pglog is one connection, used by one thread at a time. Every round trip on it (connecting, each
 * statement) has a deadline of its own, given to pglog_open: PostgreSQL may stop answering without the
 * connection failing (its processes stopped, a host frozen: the kernel still acknowledges every packet, so
 * no TCP setting notices), and a node must still answer its requests and stop when asked. When the deadline
 * passes, or the owner's stop allows no more time (pglog_limits), the connection is dropped (a server that does not answer
 * cannot be asked to cancel), and the call fails as if the connection had been lost.
 *
 * Functions return PGLOG_OK (0) or a negative code: PGLOG_ERROR (the server refused the statement; the
 * connection is usable after pglog_rollback), PGLOG_DOWN (the connection is lost, or was dropped at a
 * deadline; nothing was committed; pglog_reconnect) and, from pglog_commit only, PGLOG_UNKNOWN (the
 * connection was lost, or dropped at the deadline, while committing: the rows may or may not be in the log,
 * and a stopped server may still commit them when it runs again; a node answers the request 503 and the
 * client's retry is recognised by its batch_id).
 */
#ifndef FOCALD_PGLOG_H
#define FOCALD_PGLOG_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { PGLOG_OK = 0, PGLOG_ERROR = -1, PGLOG_DOWN = -2, PGLOG_UNKNOWN = -3 };

typedef struct pglog pglog;

/* One row of the log. For pglog_append the caller owns every pointer; in a pglog_read callback they are
 * borrowed from the result and valid only during the call. */
typedef struct pglog_row {
  int64_t pos;
  int kind;
  const char *dataset;
  const void *body;
  size_t len;
} pglog_row;

/* How long a pglog waits for PostgreSQL. */
typedef struct pglog_limits {
  int deadline_ms;       /* > 0: each round trip's, a statement's or a connection's (or the conninfo's
                          * connect_timeout, when shorter) */
  atomic_llong *stopped_at; /* borrowed, may be NULL: once non-zero, the time (CLOCK_MONOTONIC, in ms) its
                             * owner began to stop; no round trip then waits past it, or past its own start,
                             * by more than stop_ms, whatever its deadline */
  int stop_ms;
} pglog_limits;

/* Connects to conninfo (a libpq connection string or URI) and brings the log's tables up to date (the
 * migrations in schema/postgresql/, applied once under an advisory lock, so nodes may start together).
 * node names this node in the rows it appends. limits (copied) bound every round trip on the connection,
 * these first ones included: one that does not end within them fails with PGLOG_DOWN. On failure *out is
 * NULL and err (errlen bytes) says why. */
int pglog_open(pglog **out, const char *conninfo, const char *node, const pglog_limits *limits, char *err,
               size_t errlen);

/* Has PostgreSQL end this session when it sits idle in a transaction for ms milliseconds (its
 * idle_in_transaction_session_timeout), now and on every reconnection: a node that stops or loses its
 * network while it holds the append lock then holds it no longer than that. 0 leaves the server's setting. */
int pglog_set_idle_timeout(pglog *p, int ms);

/* Copies the log's identity (a UUID drawn when its tables were made) into id (n bytes). */
int pglog_log_id(pglog *p, char *id, size_t n);

/* The cluster's value of the setting called name, recorded as mine when it has none yet (the first node to
 * ask records its own): copied into have (n bytes). */
int pglog_setting(pglog *p, const char *name, const char *mine, char *have, size_t n);

/* Closes the connection and frees p (NULL is fine). */
void pglog_close(pglog *p);

/* Drops the connection (if one is left) and connects again (LISTEN too, if pglog_listen was called), under
 * the deadline: PGLOG_OK or PGLOG_DOWN. */
int pglog_reconnect(pglog *p);

/* The last error's message (borrowed; valid until the next call on p). */
const char *pglog_error(const pglog *p);

/* Begins an append: opens a transaction and takes the head's lock. *head (OUT) is the last position, and
 * every row up to it is committed and readable. Until pglog_commit or pglog_rollback, other appenders
 * wait. */
int pglog_begin(pglog *p, int64_t *head);

/* Appends n rows after the head, inside the transaction pglog_begin opened; each row's pos is ignored and
 * the positions given are *first (OUT) and up. */
int pglog_append(pglog *p, const pglog_row *rows, int n, int64_t *first);

/* Moves the head past the appended rows, notifies followers and commits. *head (OUT) is the new head.
 * PGLOG_OK means the rows are durable in PostgreSQL; PGLOG_UNKNOWN means the connection was lost at the
 * commit (see above). On any other failure nothing was committed. */
int pglog_commit(pglog *p, int64_t *head);

/* Abandons the transaction: nothing appended since pglog_begin is kept. */
void pglog_rollback(pglog *p);

/* Calls each(arg, row) for the rows after position after, in position order, at most limit of them
 * (limit > 0); stops early when each returns non-zero (that value is returned). *last (OUT) is the
 * position of the last row passed to each, or after when there was none. */
typedef int (*pglog_each_fn)(void *arg, const pglog_row *row);
int pglog_read(pglog *p, int64_t after, int limit, pglog_each_fn each, void *arg, int64_t *last);

/* The last committed position (a read, outside any append). */
int pglog_head(pglog *p, int64_t *head);

/* Subscribes this connection to the appends' notifications. */
int pglog_listen(pglog *p);

/* Waits up to timeout_ms for a notification. Returns 1 with *head (OUT) the largest head notified, 0 on
 * timeout, or a negative code. A server that stopped answering is not noticed here (it only sends nothing);
 * the next statement, pglog_head, notices it at its deadline. */
int pglog_wait(pglog *p, int timeout_ms, int64_t *head);

/* ------------------------------------------------------------------ snapshots, leases, pruning */

/* Takes or renews the lease called name for this node for seconds: *held (OUT) is 1 when this node holds it
 * now (it was free, had expired, or was this node's already), else 0. */
int pglog_lease(pglog *p, const char *name, int seconds, int *held);

/* Stores the file at path as the snapshot at position pos, in parts, in one transaction (a snapshot is seen
 * whole or not at all). An existing snapshot at pos is kept as it is. */
int pglog_snapshot_put(pglog *p, int64_t pos, const char *path);

/* The newest snapshot's position, or 0 when there is none. */
int pglog_snapshot_newest(pglog *p, int64_t *pos);

/* Writes the snapshot at pos to the file at path (created; its parts in order). */
int pglog_snapshot_get(pglog *p, int64_t pos, const char *path);

/* Holds the log's rows after position pos for this node for seconds (replacing its hold): no prune deletes
 * them meanwhile. *kept (OUT, may be NULL): 1 when the log still has the row after pos, or its head is pos,
 * so that the node can go on from pos; 0 when a prune before the hold deleted it. */
int pglog_hold(pglog *p, int64_t pos, int seconds, int *kept);

/* Deletes the log's rows below position below, but none after a hold that has not expired (pglog_hold),
 * oldest first, a bounded number per statement (each its own transaction, taken under the lock the holds
 * take, so one that fails leaves the older rows deleted and each sees every hold made before it), then every
 * snapshot but the newest. *rows (OUT): rows deleted. */
int pglog_prune(pglog *p, int64_t below, int64_t *rows);

#endif /* FOCALD_PGLOG_H */
