/* work.h — scoring off the HTTP threads: a libuv loop thread and its thread pool.
 *
 * HTTP threads hand jobs over with work_submit (a mutex-protected list and
 * uv_async_send, the one libuv call other threads may make). The loop thread
 * splits each job into chunks of rows and queues them on libuv's pool, which
 * runs the loss library; when the last chunk is done it passes the job to the
 * store's writer, or completes it if it is not to be recorded.
 */
#ifndef FOCALD_WORK_H
#define FOCALD_WORK_H

#include "config.h"
#include "job.h"

struct store;

/* Starts the loop thread with cfg->workers pool threads. Returns 0 or -1. */
int work_start(const config *cfg, struct store *st);

/* Hands j over. Returns 0, or -1 with j->op.err set (overloaded or draining);
 * then j is still the caller's and op.done will not be called. */
int work_submit(job *j);

/* Jobs submitted and not yet done. */
int work_inflight(void);

/* Refuses new jobs from now on; waits up to timeout_ms (no limit when
 * negative) for the jobs in flight. Returns 0 if everything finished. */
int work_drain(int timeout_ms);

/* Fails every job that has not started scoring with 503 draining (after
 * work_drain has stopped new ones); jobs being scored go on to the store. */
void work_cancel(void);

/* Stops the loop thread (after work_drain). */
void work_stop(void);

#endif /* FOCALD_WORK_H */
