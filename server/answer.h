/* answer.h — the bodies that answer the writer's changes other than batches, built from an accepted op.
 *
 * The writer builds each within the change's savepoint, before the commit (store_group.c): once a
 * change is committed, answering it takes no memory, so it is never answered with an error. The same
 * bytes are stored with an Idempotency-Key (store_idem.c), so that a retry gets the first answer.
 */
#ifndef FOCALD_ANSWER_H
#define FOCALD_ANSWER_H

#include <stdint.h>

#include "job.h"
#include "jsonw.h"
#include "state.h"

/* The answer to a review decision, a meta put, a queue's creation or its removal, or a dataset's deletion
 * that op's write accepted: *body (OUT) is malloc'd JSON (the caller frees it) and *status (OUT) its HTTP status.
 * Returns 0, or -1 when memory ran out or op is of another kind (*body is then NULL). */
int answer_of(const wop *op, int *status /* OUT */, char **body /* OUT */);

/* Appends a queue's summary, {"name", "created_at", "size", "reviewed", "progress": {...}, "params"}, of a
 * queue of n samples that are by[] by status; created_at in unix seconds, params its JSON (NULL: {}). */
void answer_queue_summary(jw *o, const char *name, int64_t created_at, uint32_t n, const uint32_t by[ST_STATUS_COUNT],
                          const char *params);

#endif /* FOCALD_ANSWER_H */
