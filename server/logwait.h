/* logwait.h — where this node is in its log, for the answers that say so and the reads that wait for it.
 *
 * Every recorded batch has a position in the log: a batch's seq when focald runs alone, its position in
 * the shared log on a cluster node (store_cluster.c). A write's answer carries its position
 * (Focald-Log-Position); a read given after=POSITION waits, suspended and for at most --read-wait, until
 * this node has applied it (read-your-writes across nodes); on a cluster node every answer says how many
 * of the log's rows this node has not applied yet (Focald-Log-Behind).
 *
 * The store tells logwait where it is (logwait_moved, logwait_head, wired by main.c), and logwait keeps
 * copies: an HTTP thread that answers after the store is closed reads nothing of it. http_serve.c parks and wakes
 * the waiting reads through the wake function it gives logwait_init. logwait itself calls neither.
 */
#ifndef FOCALD_LOGWAIT_H
#define FOCALD_LOGWAIT_H

#include <stdint.h>

/* Called with a waiter's handle when it is to be woken (its position applied, its deadline passed, or
 * shutdown), once per logwait_add, from any thread. */
typedef void (*logwait_wake_fn)(void *who);
void logwait_init(logwait_wake_fn wake);

/* On a cluster node, every answer says how far behind the log it is (before the HTTP threads start). */
void logwait_set_cluster(int on);

/* The position applied (0 until the store says). */
int64_t logwait_applied(void);

/* How far behind the log this node is: 0 when focald runs alone (no header), 1 with *behind (OUT) set, or
 * -1 when the log's head cannot be learnt. */
int logwait_behind(int64_t *behind);

/* Parks who until position pos is applied or the monotonic time passes deadline; wakes it at once when
 * pos is applied already. */
int logwait_add(void *who, int64_t pos, double deadline);

/* The store applied up to position applied: wakes the waiters it satisfies. Thread-safe. */
void logwait_moved(int64_t applied);

/* The shared log's head as the store last saw it (-1: it cannot be learnt). Thread-safe. */
void logwait_head(int64_t head);

/* Wakes the waiters whose deadline is past now (monotonic seconds). */
void logwait_expire(double now);

/* Wakes every waiter, and every one logwait_add is given after it, at once (shutdown). */
void logwait_wake_all(void);

#endif /* FOCALD_LOGWAIT_H */
