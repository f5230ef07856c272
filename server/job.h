/* job.h — a unit of work passed from an HTTP thread to the scoring pool and the writer.
 *
 * A wop is anything the store's single writer applies (a batch, a deletion, a
 * review); a job is a scoring request, which becomes a wop when it is to be
 * recorded. Whoever creates a job owns it; the pipeline only borrows it until
 * it calls op.done, exactly once, from whichever thread finished it.
 */
#ifndef FOCALD_JOB_H
#define FOCALD_JOB_H

#include <stdint.h>

#include "decode.h"
#include "focal.h"
#include "problem.h"
#include "state.h"

typedef struct wop wop;
typedef void (*wop_done_fn)(wop *op);

typedef enum wop_kind {
  WOP_BATCH = 0,        /* a scored job to record */
  WOP_DELETE_DATASET,
  WOP_BARRIER,          /* nothing to write: done once everything before it is committed */
} wop_kind;

struct wop {
  wop_kind kind;
  wop *next;            /* the writer's queue link */
  int failed;           /* set with err when the op was refused or could not be written */
  problem err;
  wop_done_fn done;     /* called once, on the thread that finished the op */
  void *ctx;            /* the creator's */
  char dataset[ST_NAME_MAX + 1];
  /* results of WOP_DELETE_DATASET */
  int64_t deleted_samples, deleted_observations;
};

typedef struct job {
  wop op;               /* first member: a job is a wop */
  int store;            /* record it (POST batches) or only score it (POST /v1/loss) */
  req rq;               /* the decoded request, owned */
  float *loss;          /* (n) results, owned */
  fl_score *scores;     /* (n) */
  int duplicate;        /* the batch_id was already recorded: scored, not counted */
  int chunks_left;      /* scoring chunks still running (loop thread only) */
  int64_t fail_index;   /* first failing chunk's global where, for the error */
  int fail_rc;
  wop_done_fn user_done; /* the creator's op.done while work counts the job in flight */
} job;

/* Frees a job and what it owns. Accepts NULL. */
void job_free(job *j);

#endif /* FOCALD_JOB_H */
