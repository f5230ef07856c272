/* job.h — a unit of work passed from an HTTP thread to the scoring pool and the writer.
 *
 * A wop is anything the store's single writer applies (a batch, a deletion, a
 * review); a job is a scoring request, which becomes a wop when it is to be
 * recorded. Whoever creates a job owns it; the pipeline only borrows it until
 * it calls op.done, exactly once, from whichever thread finished it.
 */
#ifndef FOCALD_JOB_H
#define FOCALD_JOB_H

#include <stdatomic.h>
#include <stdint.h>

#include "decode.h"
#include "focal.h"
#include "problem.h"
#include "state.h"

/* an Idempotency-Key's longest value (idem.h) */
#define IDEM_KEY_MAX 255

typedef struct wop wop;
typedef void (*wop_done_fn)(wop *op);

typedef enum wop_kind {
  WOP_BATCH = 0,        /* a scored job to record */
  WOP_DELETE_DATASET,
  WOP_REVIEW,           /* review_op: a sample's review state */
  WOP_META,             /* meta_op: a sample's meta */
  WOP_QUEUE,            /* queue_op: build a review queue */
  WOP_QUEUE_DELETE,     /* queue_op: remove one; its waiting samples go back to open */
  WOP_BARRIER,          /* nothing to write: done once everything before it is committed */
  WOP_KIND_COUNT
} wop_kind;

struct wop {
  wop_kind kind;
  wop *next;            /* the writer's queue link */
  int failed;           /* set with err when the op was refused or could not be written */
  problem err;
  wop_done_fn done;     /* called once, on the thread that finished the op */
  void *ctx;            /* the creator's */
  char dataset[ST_NAME_MAX + 1];
  int64_t batch_seq;    /* set by the writer: the newest batch logged before this op (review ops order by it) */
  int64_t log_pos;      /* on a cluster node: its position in the shared log, once committed (0: none) */
  /* the writer's, from the op's SQL to its apply */
  int64_t ds_id;        /* the dataset it applies to: an id is never reused, a name may be */
  uint32_t persist_to;  /* samples rows it wrote: keys below this (0: none) */
  /* results of WOP_DELETE_DATASET */
  int64_t deleted_samples, deleted_observations;
  /* the review loop's writes (idem.h): the client's Idempotency-Key, "" for none */
  char idem_key[IDEM_KEY_MAX + 1];
  int replayed;         /* set by the writer: the key was seen with this request; answer is the first answer */
  /* the answer of a change other than a batch, built by the writer before the commit (store_group.c) or, for a
   * replay, the one stored with its key; NULL until then */
  int answer_status;    /* the status to send it with */
  char *answer;         /* its body (owned) */
};

typedef struct job {
  wop op;               /* first member: a job is a wop */
  int store;            /* record it (POST batches) or only score it (POST /v1/loss) */
  req rq;               /* the decoded request, owned */
  float *loss;          /* (n) results, owned */
  fl_score *scores;     /* (n) */
  float *grad;          /* (n, m, c) d loss / d x when the request's outputs name grad, owned, else NULL */
  float *grad_norm;     /* (n) when they name grad_norm, owned, else NULL */
  int duplicate;        /* the batch_id was already recorded: scored, not counted */
  /* the answer, built on the pool once the last chunk is scored, before the batch is written (work.c) */
  int (*build)(struct job *j); /* builds it (the API's): 0, or -1 when memory ran out */
  char *answer;         /* the body (owned), or NULL: not built */
  size_t answer_len;
  size_t answer_head_len; /* a binary answer's JSON header */
  size_t duplicate_at;  /* where its "duplicate" value is: false, until the writer finds the batch_id recorded */
  atomic_int scoring;   /* chunks not yet scored (pool threads): the last one builds the answer */
  atomic_int score_failed; /* a chunk's scoring failed: no answer is built */
  int chunks_left;      /* scoring chunks still running (loop thread only) */
  int cancelled;        /* a chunk was taken back at shutdown (loop thread only) */
  int64_t fail_index;   /* first failing chunk's global where, for the error */
  int fail_rc;
  wop_done_fn user_done; /* the creator's op.done while work counts the job in flight */
  /* the writer's, from the batch's SQL to its apply: each segment of the request is a batch of its own */
  st_batch_prep *prep;  /* (req_nseg) one_prep, or owned */
  int64_t *seq;         /* (req_nseg) batches.seq of each segment, kept after the apply: one_seq, or owned */
  st_batch_prep one_prep;
  int64_t one_seq;
  hist_obs *obs;        /* (n) what each sample contributes */
  const char **meta_ids; /* (nmeta) the id each meta entry is for */
} job;

/* A review decision on one sample. Strings are owned by the op. */
typedef struct review_op {
  wop op;
  char id[REQ_ID_MAX + 1];
  int to;               /* st_status */
  char *label;          /* JSON: the corrected label, for relabelled */
  char *reviewer, *note;
  /* results */
  int from;
  int64_t seq;          /* the audit entry */
  char *label_before;   /* JSON */
  int64_t at;
  float confirm_score;
  /* prepared for the apply: the correction in force afterwards and the audit entry, with their own strings */
  uint32_t key;
  char *corrected;
  st_review entry;
} review_op;

/* A sample's new meta (a JSON object, owned). */
typedef struct meta_op {
  wop op;
  char id[REQ_ID_MAX + 1];
  char *meta;           /* the answer's copy */
  char *stored;         /* the copy memory takes at the apply */
  uint32_t key;
} meta_op;

#define QUEUE_QUOTAS_MAX 256

/* How to build a review queue (see README "Review queues"). */
typedef struct queue_params {
  char name[ST_NAME_MAX + 1];
  int by;                     /* hist_field */
  int order;                  /* hist_order */
  char run[ST_NAME_MAX + 1];  /* "*" for the mean over runs */
  int size;
  int has_label;
  int32_t label;
  int label_issue;            /* ST_LABEL_ISSUE_ANY, YES or NO */
  uint32_t min_seen;
  int max_per_label, min_per_label;  /* 0: none */
  int nquota;                 /* per-label overrides */
  int32_t quota_label[QUEUE_QUOTAS_MAX];
  int quota_min[QUEUE_QUOTAS_MAX], quota_max[QUEUE_QUOTAS_MAX];
  char dedupe_by[ST_NAME_MAX + 1];   /* meta key, or "" */
  char *params_json;          /* the request, canonical, as stored */
} queue_params;

typedef struct queue_op {
  wop op;
  queue_params p;
  /* prepared for the apply */
  st_queue *queue;            /* WOP_QUEUE: the queue memory takes */
  uint32_t nchanges;          /* samples whose status changes, with their audit entries */
  uint32_t *change_keys;
  st_review *changes;
  /* results */
  int64_t created_at;         /* unix milliseconds */
  uint32_t size;              /* WOP_QUEUE: its samples */
  uint32_t progress[ST_STATUS_COUNT]; /* WOP_QUEUE: its samples by status once built */
  uint32_t released;          /* WOP_QUEUE_DELETE: samples put back to open */
} queue_op;

/* Frees a review, meta or queue op and what it owns. Accepts NULL. */
void review_op_free(wop *op);

/* Frees a job and what it owns. Accepts NULL. */
void job_free(job *j);

#endif /* FOCALD_JOB_H */
