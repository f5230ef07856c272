/* work.c — the libuv loop thread: takes jobs from HTTP threads, scores them on the pool.
 *
 * Only the loop thread calls libuv, except work_submit's uv_async_send. The
 * async handle coalesces wake-ups, so the callback drains the whole list. A
 * job is split into chunks of rows when it is large enough to keep several
 * pool threads busy; each chunk runs fl_eval on its rows independently (the
 * library is reentrant). The last chunk scored builds the job's answer on its
 * pool thread, before a batch goes to the writer; the last chunk back on the
 * loop thread moves the job on.
 */
#include "work.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "faultpoint.h"
#include "log.h"
#include "store.h"

/* Rows are split so that each chunk has at least this many elements. */
#define CHUNK_ELEMENTS (1 << 18)

typedef struct chunk {
  uv_work_t req;
  job *j;
  int64_t i0, i1;
  int rc;
  int64_t where; /* global flat index of the failing element */
  struct chunk *prev, *next; /* the chunks queued or running (loop thread) */
} chunk;

static uv_loop_t loop;
static uv_async_t submit_async, stop_async, cancel_async;
static chunk *chunks; /* queued or running on the pool: what work_cancel may take back (loop thread) */
static uv_thread_t loop_thread;
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static wop *queue_head, *queue_tail;
static atomic_int inflight;
static atomic_int draining;
static int queue_limit = 256;
static int workers = 1;
static struct store *the_store;

static void job_finished(wop *op);

void job_free(job *j) {
  if (!j) return;
  req_free(&j->rq);
  if (j->seq != &j->one_seq) free(j->seq);
  free(j->loss);
  free(j->scores);
  free(j->grad);
  free(j->grad_norm);
  free(j->answer);
  free(j);
}

/* ------------------------------------------------------------------ scoring */

static size_t label_size(fl_label_type t) {
  return t == FL_LABEL_I64 ? 8 : t == FL_LABEL_I32 ? 4 : 1;
}

static void run_chunk(uv_work_t *w) {
  chunk *ch = w->data;
  fault_point(FP_SCORE);
  const req *r = &ch->j->rq;
  const int64_t m = r->m, c = r->c, rows = ch->i1 - ch->i0;
  const int per_position = fl_loss_is_softmax(r->params.loss);
  fl_batch b = {
      .n = rows,
      .m = m,
      .c = c,
      .x = r->x + ch->i0 * m * c,
      .labels = r->labels ? (const char *)r->labels + (size_t)(ch->i0 * m) * label_size(r->label_type) : NULL,
      .label_type = r->label_type,
      .targets = r->targets ? r->targets + ch->i0 * m * c : NULL,
      .weights = r->weights ? r->weights + ch->i0 * m * (per_position ? 1 : c) : NULL,
  };
  fl_out out = {.loss = ch->j->loss + ch->i0,
                .grad = ch->j->grad ? ch->j->grad + ch->i0 * m * c : NULL,
                .grad_norm = ch->j->grad_norm ? ch->j->grad_norm + ch->i0 : NULL,
                .scores = r->want_scores ? ch->j->scores + ch->i0 : NULL};
  int64_t where = -1;
  ch->rc = fl_eval(&out, &b, &r->params, &where);
  if (ch->rc == 0 || where < 0) {
    ch->where = where;
  } else {
    /* the chunk's index is relative to its first row */
    switch (ch->rc) {
    case FL_ELABEL: ch->where = where + ch->i0 * m; break;
    case FL_EWEIGHT: ch->where = where + ch->i0 * m * (per_position ? 1 : c); break;
    default: ch->where = where + ch->i0 * m * c; break;
    }
  }
  job *j = ch->j;
  if (ch->rc != 0) atomic_store(&j->score_failed, 1);
  /* the last chunk scored builds the answer, off the loop thread: every other chunk's results are visible
   * to it (the count is sequentially consistent); a chunk taken back at shutdown never counts down */
  if (atomic_fetch_sub(&j->scoring, 1) == 1 && !atomic_load(&j->score_failed)) {
    fault_point(FP_ANSWER);
    if (j->build(j) != 0) {
      free(j->answer);
      j->answer = NULL;
    }
    fault_point(FP_NONE);
  }
}

static void fail_job(job *j, problem_code code, const char *msg) {
  j->op.failed = 1;
  problem_set(&j->op.err, code, NULL, "%s", msg);
  j->op.done(&j->op);
}

static void refuse_draining(job *j) {
  fail_job(j, P_DRAINING, "focald is shutting down; the batch was not scored or stored: send it again");
}

static void after_chunk(uv_work_t *w, int status) {
  chunk *ch = w->data;
  job *j = ch->j;
  if (ch->prev) ch->prev->next = ch->next;
  else chunks = ch->next;
  if (ch->next) ch->next->prev = ch->prev;
  if (status == UV_ECANCELED) {
    /* taken back before it ran: focald is shutting down */
    j->cancelled = 1;
    free(ch);
    if (--j->chunks_left > 0) return;
  } else if (ch->rc != 0 && (j->fail_rc == 0 || ch->i0 < j->fail_index)) {
    /* the first failing chunk (lowest rows) names the error, as one pass would */
    j->fail_rc = ch->rc;
    j->fail_index = ch->i0;
    j->op.err.code = P_NONE;
    req_describe_error(&j->rq, ch->rc, ch->where, &j->op.err);
  }
  if (status != UV_ECANCELED) {
    free(ch);
    if (--j->chunks_left > 0) return;
  }
  if (j->cancelled) {
    refuse_draining(j);
  } else if (j->fail_rc != 0) {
    j->op.failed = 1;
    j->op.done(&j->op);
  } else if (!j->answer) {
    fail_job(j, P_INTERNAL, j->store ? "out of memory building the answer; the batch was not stored: send it again"
                                     : "out of memory building the answer");
  } else if (j->store) {
    store_submit(the_store, &j->op);
  } else {
    j->op.done(&j->op);
  }
}

static void start_job(job *j) {
  const req *r = &j->rq;
  int64_t total = r->n * r->m * r->c;
  int64_t nchunks = total / CHUNK_ELEMENTS;
  if (nchunks < 1) nchunks = 1;
  if (nchunks > workers) nchunks = workers;
  if (nchunks > r->n) nchunks = r->n;
  int64_t per = (r->n + nchunks - 1) / nchunks;
  j->chunks_left = 0;
  j->fail_rc = 0;
  chunk *list[128];
  int made = 0;
  for (int64_t i0 = 0; i0 < r->n && made < 128; i0 += per) {
    chunk *ch = calloc(1, sizeof *ch);
    if (!ch) break;
    ch->j = j;
    ch->i0 = i0;
    ch->i1 = i0 + per < r->n ? i0 + per : r->n;
    ch->req.data = ch;
    list[made++] = ch;
  }
  if (made == 0 || list[made - 1]->i1 != r->n) {
    for (int i = 0; i < made; i++) free(list[i]);
    fail_job(j, P_INTERNAL, "out of memory scheduling the batch");
    return;
  }
  j->chunks_left = made;
  atomic_store(&j->scoring, made);
  atomic_store(&j->score_failed, 0);
  for (int i = 0; i < made; i++) {
    list[i]->next = chunks;
    if (chunks) chunks->prev = list[i];
    chunks = list[i];
    if (uv_queue_work(&loop, &list[i]->req, run_chunk, after_chunk) != 0) {
      /* cannot happen on a running loop; count the chunk as failed */
      list[i]->rc = FL_EPARAM;
      after_chunk(&list[i]->req, 0);
    }
  }
}

/* ------------------------------------------------------------------ the loop */

/* Calls fn for each job HTTP threads handed over since the last call, in order. */
static void take_submitted(void (*fn)(job *j)) {
  pthread_mutex_lock(&queue_lock);
  wop *list = queue_head;
  queue_head = queue_tail = NULL;
  pthread_mutex_unlock(&queue_lock);
  while (list) {
    wop *next = list->next;
    list->next = NULL;
    fn((job *)list);
    list = next;
  }
}

static void on_submit(uv_async_t *h) {
  (void)h;
  take_submitted(start_job);
}

/* Fails every job not yet scored with 503 draining: those still waiting to be
 * taken up, and those whose chunks are still queued on the pool (uv_cancel
 * takes back a chunk that has not started; a running one finishes). */
static void on_cancel(uv_async_t *h) {
  (void)h;
  take_submitted(refuse_draining);
  for (chunk *ch = chunks, *next; ch; ch = next) {
    next = ch->next;
    uv_cancel((uv_req_t *)&ch->req); /* after_chunk runs later, with UV_ECANCELED, if it was taken back */
  }
}

static void close_cb(uv_handle_t *h) {
  (void)h;
}

static void on_stop(uv_async_t *h) {
  (void)h;
  uv_close((uv_handle_t *)&submit_async, close_cb);
  uv_close((uv_handle_t *)&stop_async, close_cb);
  uv_close((uv_handle_t *)&cancel_async, close_cb);
}

static void loop_main(void *arg) {
  (void)arg;
  uv_run(&loop, UV_RUN_DEFAULT);
}

int work_start(const config *cfg, struct store *st) {
  char n[16];
  workers = cfg->workers;
  queue_limit = cfg->queue_limit;
  the_store = st;
  /* libuv reads the pool size once, at its first use */
  snprintf(n, sizeof n, "%d", workers);
  setenv("UV_THREADPOOL_SIZE", n, 1);
  int rc = uv_loop_init(&loop);
  if (rc == 0) rc = uv_async_init(&loop, &submit_async, on_submit);
  if (rc == 0) rc = uv_async_init(&loop, &stop_async, on_stop);
  if (rc == 0) rc = uv_async_init(&loop, &cancel_async, on_cancel);
  if (rc == 0) {
    rc = uv_thread_create(&loop_thread, loop_main, NULL);
    if (rc != 0) log_kv(LOG_ERROR, "cannot start a thread", "thread", "loop", "error", uv_strerror(rc), NULL);
  } else {
    log_kv(LOG_ERROR, "cannot start the scoring loop", "error", uv_strerror(rc), NULL);
  }
  return rc == 0 ? 0 : -1;
}

/* Installed as op.done while work holds the job: counts it out, then calls the creator's. */
static void job_finished(wop *op) {
  job *j = (job *)op;
  atomic_fetch_sub(&inflight, 1);
  j->op.done = j->user_done;
  j->op.done(&j->op);
}

int work_submit(job *j) {
  /* counted first, then the drain checked (both sequentially consistent): work_drain sets draining, then
   * reads inflight, so either it sees this job and waits for it, or this job sees draining and is refused.
   * Checked the other way round, a job could pass the check, the drain find nothing in flight and the store
   * close, and the job then reach it. */
  const int before = atomic_fetch_add(&inflight, 1);
  if (atomic_load(&draining)) {
    atomic_fetch_sub(&inflight, 1);
    return problem_set(&j->op.err, P_DRAINING, NULL, "focald is shutting down; retry on another instance or later");
  }
  if (before >= queue_limit) {
    atomic_fetch_sub(&inflight, 1);
    return problem_set(&j->op.err, P_OVERLOADED, NULL, "%d batches are already waiting to be scored or committed", queue_limit);
  }
  j->op.next = NULL;
  j->user_done = j->op.done;
  j->op.done = job_finished;
  pthread_mutex_lock(&queue_lock);
  if (queue_tail) queue_tail->next = &j->op;
  else queue_head = &j->op;
  queue_tail = &j->op;
  pthread_mutex_unlock(&queue_lock);
  uv_async_send(&submit_async);
  return 0;
}

int work_inflight(void) {
  return atomic_load(&inflight);
}

void work_cancel(void) {
  uv_async_send(&cancel_async);
}

int work_drain(int timeout_ms) {
  atomic_store(&draining, 1);
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (;;) {
    if (atomic_load(&inflight) <= 0) return 0;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - start.tv_sec) * 1e3 + (double)(now.tv_nsec - start.tv_nsec) / 1e6;
    if (timeout_ms >= 0 && ms >= timeout_ms) return -1;
    struct timespec nap = {0, 2000000};
    nanosleep(&nap, NULL);
  }
}

void work_stop(void) {
  uv_async_send(&stop_async);
  uv_thread_join(&loop_thread);
  uv_loop_close(&loop);
}
