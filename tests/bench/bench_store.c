/* bench_store.c — the store alone: sample-updates per second through the writer, durably committed.
 *
 * Feeds pre-scored batches (what the scoring pool would hand over) straight
 * to store_submit with a bounded number in flight, as concurrent clients
 * would, over a fixed set of sample ids so that every update after the first
 * epoch changes an existing history. Prints one JSON line.
 *
 * usage: bench_store [--samples 1000000] [--batch 1024] [--seconds 10] [--inflight 8] [--durability full|normal] [--db PATH]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int inflight;
static long long done_samples;

static void on_done(wop *op) {
  job *j = (job *)op;
  pthread_mutex_lock(&mu);
  inflight--;
  if (!op->failed) done_samples += j->rq.n;
  else fprintf(stderr, "batch failed: %s\n", op->err.detail);
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  job_free(j);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static job *make_batch(int n, int c, long long first, long long samples, int64_t step) {
  job *j = calloc(1, sizeof *j);
  j->store = 1;
  j->op.kind = WOP_BATCH;
  j->op.done = on_done;
  snprintf(j->op.dataset, sizeof j->op.dataset, "bench");
  req *r = &j->rq;
  snprintf(r->run, sizeof r->run, "r");
  r->has_step = 1;
  r->step = step;
  fl_params_init(&r->params, FL_SIGMOID_FOCAL);
  r->n = n;
  r->m = 1;
  r->c = c;
  int64_t *labels = req_alloc(r, (size_t)n * sizeof *labels);
  r->labels = labels;
  r->label_type = FL_LABEL_I64;
  r->ids = malloc((size_t)n * (sizeof *r->ids + 16));
  char *p = (char *)(r->ids + n);
  j->loss = malloc((size_t)n * sizeof *j->loss);
  j->scores = calloc((size_t)n, sizeof *j->scores);
  for (int i = 0; i < n; i++) {
    long long id = (first + i) % samples;
    r->ids[i] = p;
    p += sprintf(p, "s%lld", id) + 1;
    labels[i] = id % c;
    j->loss[i] = (float)((id * 2654435761u) % 1000) / 500.0f;
    j->scores[i] = (fl_score){.p_t = 0.4f, .p_max = 0.7f, .margin = -0.3f, .correct = (float)(id % 2), .pred = 1, .rows = 1};
  }
  return j;
}

int main(int argc, char **argv) {
  long long samples = 1000000;
  int batch = 1024, seconds = 10, max_inflight = 8;
  config cfg;
  memset(&cfg, 0, sizeof cfg);
  snprintf(cfg.db, sizeof cfg.db, "/tmp/focald-bench-store/f.db");
  cfg.durability = DUR_FULL;
  cfg.ema_alpha = 0.3;
  cfg.early_observations = 10;
  cfg.snapshot_interval = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--samples")) samples = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--seconds")) seconds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--inflight")) max_inflight = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--durability")) cfg.durability = strcmp(argv[i + 1], "normal") ? DUR_FULL : DUR_NORMAL;
    else if (!strcmp(argv[i], "--db")) snprintf(cfg.db, sizeof cfg.db, "%s", argv[i + 1]);
  }
  log_set_level(LOG_WARN);
  char cmd[2000];
  snprintf(cmd, sizeof cmd, "rm -f '%s' '%s-wal' '%s-shm'", cfg.db, cfg.db, cfg.db);
  if (system(cmd) != 0) return 1;
  st_map *map = st_map_new();
  store *st;
  if (store_open(&st, &cfg, map) || store_load(st) || store_start(st)) return 1;
  /* batches are built ahead, so the clock measures the store, not the builder */
  int pool = 64;
  job **ready = malloc((size_t)pool * sizeof *ready);
  long long next = 0;
  int64_t step = 0;
  double t0 = now(), end = t0 + seconds;
  long long submitted = 0;
  while (now() < end) {
    for (int i = 0; i < pool; i++) {
      ready[i] = make_batch(batch, 10, next, samples, step++);
      next += batch;
    }
    for (int i = 0; i < pool && now() < end; i++) {
      pthread_mutex_lock(&mu);
      while (inflight >= max_inflight) pthread_cond_wait(&cv, &mu);
      inflight++;
      pthread_mutex_unlock(&mu);
      store_submit(st, &ready[i]->op);
      ready[i] = NULL;
      submitted++;
    }
    for (int i = 0; i < pool; i++)
      if (ready[i]) job_free(ready[i]);
  }
  pthread_mutex_lock(&mu);
  while (inflight > 0) pthread_cond_wait(&cv, &mu);
  long long total = done_samples;
  pthread_mutex_unlock(&mu);
  double secs = now() - t0;
  store_stats ss;
  store_get_stats(st, &ss);
  printf("{\"bench\": \"store\", \"durability\": \"%s\", \"batch\": %d, \"samples\": %lld, \"seconds\": %.2f, "
         "\"sample_updates_per_s\": %.0f, \"commits\": %llu, \"batches_per_commit\": %.2f}\n",
         cfg.durability == DUR_FULL ? "full" : "normal", batch, samples, secs, (double)total / secs,
         (unsigned long long)ss.commits, ss.commits ? (double)ss.committed_ops / (double)ss.commits : 0.0);
  free(ready);
  store_close(st);
  st_map_free(map);
  return 0;
}
