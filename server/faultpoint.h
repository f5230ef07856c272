/* faultpoint.h — where focald's writer (and its scoring pool) say what they are doing, for the
 * fault-injection harness.
 *
 * The harness (tests/fault) preloads a library that defines focald_fault_point:
 * it then knows which step each disk write belongs to (a group commit, a
 * snapshot step, a checkpoint), can kill the process at a chosen one, and can
 * hold the writer so that several requests land in one group, hold a cluster
 * node's writer while it holds the log's append lock, or hold the scoring
 * pool so that batches queue up behind it; it also sees where a committed change is
 * answered (FP_REPLY), so that it can check that nothing there allocates, and where libmicrohttpd is
 * handed an answer (FP_RESPOND), so that it can check an answer goes out whole or not at all. In a normal
 * run nothing defines the weak symbol and fault_point is one test of a null
 * pointer.
 */
#ifndef FOCALD_FAULTPOINT_H
#define FOCALD_FAULTPOINT_H

typedef enum fault_step {
  FP_NONE = 0,
  FP_LOAD,       /* opening, migrating and loading the database (main thread) */
  FP_GROUP,      /* a group of writes: its transaction and commit */
  FP_SNAPSHOT,   /* a step of a snapshot pass */
  FP_CHECKPOINT, /* a checkpoint run by the writer */
  FP_CLOSE,      /* the final snapshot and checkpoint at shutdown */
  FP_WAKE,       /* the writer is about to take what is queued: a harness may hold it here */
  FP_SCORE,      /* a pool thread is about to score a chunk: a harness may hold it here */
  FP_LOCKED,     /* a cluster node's group holds the shared log's append lock (within FP_GROUP): a harness may
                  * hold it here */
  FP_REPLY,      /* an HTTP thread answers a committed change: nothing in it may fail (the answer was built before
                  * the commit) */
  FP_ANSWER,     /* a pool thread builds a scored batch's answer, before the batch is written */
  FP_REQUEST,    /* an HTTP thread runs a route's handler: decodes and checks a request, or answers a read */
  FP_RESPOND,    /* an HTTP thread hands an answer to libmicrohttpd: its response and headers */
} fault_step;

void focald_fault_point(int step) __attribute__((weak));

/* Tells the harness, if there is one, that the calling thread is entering step. */
static inline void fault_point(fault_step step) {
  if (focald_fault_point) focald_fault_point((int)step);
}

#endif /* FOCALD_FAULTPOINT_H */
