/* logwait.h — where this node is in its log, for the answers that say so and the reads that wait for it.
 *
 * Every recorded batch has a position in the log: a batch's seq when focald runs alone, its position in
 * the shared log on a cluster node (store_cluster.c). A write's answer carries its position
 * (Focald-Log-Position); a read given after=POSITION waits, suspended and for at most --read-wait, until
 * this node has applied it (read-your-writes across nodes); on a cluster node every answer says how many
 * of the log's rows this node has not applied yet (Focald-Log-Behind).
 *
 * The store is the source (logwait_set_source, wired by main.c) and tells logwait when its applied
 * position moves (logwait_moved); http.c parks and wakes the waiting reads through the wake function it
 * gives logwait_init. logwait itself calls neither.
 */
#ifndef FOCALD_LOGWAIT_H
#define FOCALD_LOGWAIT_H

#include <stdint.h>

/* Called with a waiter's handle when it is to be woken (its position applied, its deadline passed, or
 * shutdown), once per logwait_add, from any thread. */
typedef void (*logwait_wake_fn)(void *who);
void logwait_init(logwait_wake_fn wake);

/* applied(ctx): the position applied in memory. head(ctx), NULL when focald runs alone: the log's head as
 * last seen, or -1 when it cannot be learnt. */
void logwait_set_source(int64_t (*applied)(void *ctx), int64_t (*head)(void *ctx), void *ctx);

/* The position applied (0 before a source is set). */
int64_t logwait_applied(void);

/* How far behind the log this node is: 0 when focald runs alone (no header), 1 with *behind (OUT) set, or
 * -1 when the log's head cannot be learnt. */
int logwait_behind(int64_t *behind);

/* Parks who until position pos is applied or the monotonic time passes deadline; wakes it at once when
 * pos is applied already. */
int logwait_add(void *who, int64_t pos, double deadline);

/* The store's applied position moved: wakes the waiters it satisfies. Thread-safe. */
void logwait_moved(void);

/* Wakes the waiters whose deadline is past now (monotonic seconds). */
void logwait_expire(double now);

/* Wakes every waiter (shutdown). */
void logwait_wake_all(void);

#endif /* FOCALD_LOGWAIT_H */
