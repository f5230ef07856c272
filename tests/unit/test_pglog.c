/* test_pglog.c — the cluster's shared log against a real PostgreSQL server: rows round-trip, a rollback
 * leaves no gap, appenders wait for each other's commit, and under concurrent appenders (and a server
 * stopped as a crash would stop it) a follower sees every committed row exactly once, in position order,
 * with no gap and nothing that was rolled back. A round trip past its deadline is given up.
 *
 * Run by tests/suites/cluster, which starts a throw-away server and sets FOCALD_TEST_PG (its conninfo) and
 * FOCALD_TEST_PG_RESTART (a command that stops it immediately and starts it again).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "pglog.h"

#define THREADS 4
#define GROUPS 2000
#define PER_GROUP 4
/* every round trip's deadline: far above what any statement here takes */
static const pglog_limits limits = {.deadline_ms = 30000};

enum { G_NONE, G_ACKED, G_UNKNOWN, G_FAILED, G_ROLLED_BACK };

static const char *conninfo(void) {
  const char *c = getenv("FOCALD_TEST_PG");
  if (!c) fail_msg("FOCALD_TEST_PG is not set: run this test through tests/suites/cluster");
  return c;
}

static pglog *open_log(const char *node) {
  pglog *p = NULL;
  char err[256] = "";
  int rc = pglog_open(&p, conninfo(), node, &limits, err, sizeof err);
  if (rc) fail_msg("pglog_open: %s", err);
  return p;
}

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* ---------------------------------------------------------------- round trip, rollback, waiting */

typedef struct collected {
  int n;
  int stop_after;
  pglog_row rows[8];
  char bodies[8][64];
  char datasets[8][64];
} collected;

static int collect(void *arg, const pglog_row *row) {
  collected *c = arg;
  assert_true(c->n < 8 && row->len <= 64);
  c->rows[c->n] = *row;
  memcpy(c->bodies[c->n], row->body, row->len);
  snprintf(c->datasets[c->n], 64, "%s", row->dataset);
  c->n++;
  return c->stop_after && c->n == c->stop_after ? 7 : 0;
}

static void test_pglog_rows_round_trip(void **state) {
  (void)state;
  pglog *p = open_log("node-a");
  int64_t head = -1, first = 0, after = 0;
  assert_int_equal(pglog_begin(p, &head), PGLOG_OK);
  assert_true(head >= 0);
  /* bodies are bytes: zeros and high bytes pass unchanged; dataset names are UTF-8 text */
  pglog_row rows[3] = {
      {.kind = 1, .dataset = "cells", .body = "\x00\x01\xff\x00", .len = 4},
      {.kind = -2, .dataset = "r\xc3\xb6ntgen", .body = "", .len = 0},
      {.kind = 300, .dataset = "cells", .body = "FLB3", .len = 4},
  };
  assert_int_equal(pglog_append(p, rows, 3, &first), PGLOG_OK);
  assert_int_equal(first, head + 1);
  assert_int_equal(pglog_commit(p, &after), PGLOG_OK);
  assert_int_equal(after, head + 3);

  int64_t now = 0;
  assert_int_equal(pglog_head(p, &now), PGLOG_OK);
  assert_true(now >= head + 3);
  collected c = {0};
  int64_t last = 0;
  assert_int_equal(pglog_read(p, head, 3, collect, &c, &last), PGLOG_OK);
  assert_int_equal(c.n, 3);
  assert_int_equal(last, head + 3);
  for (int i = 0; i < 3; i++) {
    assert_int_equal(c.rows[i].pos, head + 1 + i);
    assert_int_equal(c.rows[i].kind, rows[i].kind);
    assert_int_equal(c.rows[i].len, rows[i].len);
    assert_memory_equal(c.bodies[i], rows[i].body, rows[i].len);
    assert_string_equal(c.datasets[i], rows[i].dataset);
  }
  /* a limit, and a callback that stops the read early with its own value */
  collected d = {.stop_after = 1};
  assert_int_equal(pglog_read(p, head, 2, collect, &d, &last), 7);
  assert_int_equal(d.n, 1);
  assert_int_equal(last, head + 1);
  collected e = {0};
  assert_int_equal(pglog_read(p, head + 3, 5, collect, &e, &last), PGLOG_OK);
  assert_int_equal(last, head + 3);
  pglog_close(p);
}

static void test_pglog_rollback_leaves_no_gap(void **state) {
  (void)state;
  pglog *p = open_log("node-a");
  int64_t head = 0, again = 0, first = 0, after = 0, last = 0;
  pglog_row gone = {.kind = 1, .dataset = "d", .body = "gone", .len = 4};
  pglog_row kept = {.kind = 1, .dataset = "d", .body = "kept", .len = 4};
  assert_int_equal(pglog_begin(p, &head), PGLOG_OK);
  assert_int_equal(pglog_append(p, &gone, 1, &first), PGLOG_OK);
  assert_int_equal(pglog_append(p, &gone, 1, &first), PGLOG_OK);
  pglog_rollback(p);
  assert_int_equal(pglog_begin(p, &again), PGLOG_OK);
  assert_int_equal(again, head);
  assert_int_equal(pglog_append(p, &kept, 1, &first), PGLOG_OK);
  assert_int_equal(first, head + 1);
  assert_int_equal(pglog_commit(p, &after), PGLOG_OK);
  collected c = {0};
  assert_int_equal(pglog_read(p, head, 8, collect, &c, &last), PGLOG_OK);
  assert_true(c.n >= 1);
  assert_int_equal(c.rows[0].pos, head + 1);
  assert_memory_equal(c.bodies[0], "kept", 4);
  /* appending and committing outside a transaction are refused */
  assert_int_equal(pglog_append(p, &kept, 1, &first), PGLOG_ERROR);
  assert_int_equal(pglog_commit(p, &after), PGLOG_ERROR);
  pglog_close(p);
}

typedef struct waiter {
  atomic_int done;
  int64_t head;
  int rc;
} waiter;

static void *begin_and_commit(void *arg) {
  waiter *w = arg;
  pglog *p = open_log("node-b");
  w->rc = pglog_begin(p, &w->head);
  atomic_store(&w->done, 1);
  if (!w->rc) pglog_rollback(p);
  pglog_close(p);
  return NULL;
}

static void test_pglog_appenders_wait_for_the_head(void **state) {
  (void)state;
  pglog *a = open_log("node-a");
  int64_t head = 0, first = 0, after = 0;
  assert_int_equal(pglog_begin(a, &head), PGLOG_OK);
  waiter w = {0};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, begin_and_commit, &w), 0);
  sleep_ms(300);
  /* B is waiting for A's lock on the head */
  assert_int_equal(atomic_load(&w.done), 0);
  pglog_row r = {.kind = 1, .dataset = "d", .body = "a", .len = 1};
  assert_int_equal(pglog_append(a, &r, 1, &first), PGLOG_OK);
  assert_int_equal(pglog_append(a, &r, 1, &first), PGLOG_OK);
  assert_int_equal(pglog_commit(a, &after), PGLOG_OK);
  pthread_join(t, NULL);
  assert_int_equal(w.rc, PGLOG_OK);
  /* and it sees A's rows committed below the head it was given */
  assert_int_equal(w.head, head + 2);
  assert_int_equal(after, head + 2);
  pglog_close(a);
}

static void test_pglog_wait_times_out_and_wakes(void **state) {
  (void)state;
  pglog *f = open_log("follower");
  pglog *a = open_log("node-a");
  assert_int_equal(pglog_listen(f), PGLOG_OK);
  int64_t n = 0, head = 0, first = 0, after = 0;
  assert_int_equal(pglog_wait(f, 50, &n), 0);
  assert_int_equal(pglog_begin(a, &head), PGLOG_OK);
  pglog_row r = {.kind = 1, .dataset = "d", .body = "a", .len = 1};
  assert_int_equal(pglog_append(a, &r, 1, &first), PGLOG_OK);
  /* nothing is announced before the commit */
  assert_int_equal(pglog_wait(f, 100, &n), 0);
  assert_int_equal(pglog_commit(a, &after), PGLOG_OK);
  assert_int_equal(pglog_wait(f, 5000, &n), 1);
  assert_int_equal(n, after);
  pglog_close(a);
  pglog_close(f);
}

static int64_t elapsed_ms(const struct timespec *t0) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/* A statement that waits past its deadline (here: for the head's lock, which A holds) fails as a lost
 * connection does, without waiting any longer; the connection is dropped, and a reconnect works. */
static void test_pglog_a_statement_past_its_deadline_drops_the_connection(void **state) {
  (void)state;
  pglog *a = open_log("node-a"), *b = NULL;
  char err[256] = "";
  const pglog_limits short_limits = {.deadline_ms = 300};
  assert_int_equal(pglog_open(&b, conninfo(), "node-b", &short_limits, err, sizeof err), PGLOG_OK);
  int64_t head = 0, head_b = 0;
  assert_int_equal(pglog_begin(a, &head), PGLOG_OK);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(pglog_begin(b, &head_b), PGLOG_DOWN);
  const int64_t waited = elapsed_ms(&t0);
  assert_true(waited >= 290 && waited < 3000);
  assert_non_null(strstr(pglog_error(b), "deadline of 300 ms"));
  /* a pglog whose connection was dropped fails at once, until it reconnects */
  assert_int_equal(pglog_head(b, &head_b), PGLOG_DOWN);
  pglog_rollback(a);
  assert_int_equal(pglog_reconnect(b), PGLOG_OK);
  assert_int_equal(pglog_begin(b, &head_b), PGLOG_OK);
  assert_int_equal(head_b, head);
  pglog_rollback(b);
  pglog_close(a);
  pglog_close(b);
}

typedef struct stopper {
  atomic_llong *stopped_at;
  int after_ms;
} stopper;

static void *stop_later(void *arg) {
  stopper *st = arg;
  sleep_ms(st->after_ms);
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  atomic_store(st->stopped_at, (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000);
  return NULL;
}

/* A stop that comes while a round trip waits, far inside its deadline, ends it stop_ms later; a round trip
 * begun later may wait stop_ms too: a server that answers is still used. */
static void test_pglog_a_stop_ends_a_round_trip_before_its_deadline(void **state) {
  (void)state;
  atomic_llong stopped_at = 0;
  const pglog_limits stoppable = {.deadline_ms = 30000, .stopped_at = &stopped_at, .stop_ms = 200};
  pglog *a = open_log("node-a"), *b = NULL;
  char err[256] = "";
  assert_int_equal(pglog_open(&b, conninfo(), "node-b", &stoppable, err, sizeof err), PGLOG_OK);
  int64_t head = 0;
  assert_int_equal(pglog_begin(a, &head), PGLOG_OK);
  stopper st = {&stopped_at, 300};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, stop_later, &st), 0);
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(pglog_begin(b, &head), PGLOG_DOWN);
  const int64_t waited = elapsed_ms(&t0);
  pthread_join(t, NULL);
  assert_true(waited >= 490 && waited < 3000);
  assert_non_null(strstr(pglog_error(b), "focald is stopping"));
  assert_int_equal(pglog_reconnect(b), PGLOG_OK);
  clock_gettime(CLOCK_MONOTONIC, &t0);
  assert_int_equal(pglog_begin(b, &head), PGLOG_DOWN);
  const int64_t again = elapsed_ms(&t0);
  assert_true(again >= 190 && again < 3000);
  pglog_rollback(a);
  pglog_close(a);
  pglog_close(b);
}

/* A server whose kernel accepts the connection and which then says nothing (a stopped postmaster; here a
 * socket nobody accepts on) is given up at the deadline, not at TCP's. */
static void test_pglog_open_gives_up_on_a_silent_server_at_its_deadline(void **state) {
  (void)state;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(fd, 8), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  char info[128], err[256] = "";
  snprintf(info, sizeof info, "host=127.0.0.1 port=%d connect_timeout=30 dbname=x", ntohs(sa.sin_port));
  pglog *p = (pglog *)1;
  struct timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  const pglog_limits short_limits = {.deadline_ms = 400};
  assert_int_equal(pglog_open(&p, info, "n", &short_limits, err, sizeof err), PGLOG_DOWN);
  const int64_t waited = elapsed_ms(&t0);
  assert_true(waited >= 390 && waited < 3000);
  assert_null(p);
  assert_non_null(strstr(err, "deadline of 400 ms"));
  close(fd);
}

/* ---------------------------------------------------------------- concurrent appenders and a follower */

/* cmocka's assertions belong to the test's own thread: the others record their first failure here, and
 * the test fails with it once they are joined. */
static char thread_failure[256];
static atomic_int thread_failed;

static void thread_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void thread_fail(const char *fmt, ...) {
  if (atomic_exchange(&thread_failed, 1)) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(thread_failure, sizeof thread_failure, fmt, ap);
  va_end(ap);
}

typedef struct run {
  int64_t start;           /* the head before the run */
  int groups;              /* per appender */
  int rollback_percent;
  atomic_int stopping;     /* appenders stop at their next group */
  atomic_int appenders_done;
  atomic_llong errors, reconnects;
  unsigned char status[THREADS][GROUPS];
  unsigned char size[THREADS][GROUPS];
  int64_t first[THREADS][GROUPS];
  int ngroups[THREADS];
} run;

typedef struct appender {
  run *r;
  int id;
} appender;

static void reconnect_until_up(pglog *p, run *r) {
  for (int i = 0; i < 600; i++) {
    if (pglog_reconnect(p) == PGLOG_OK) {
      atomic_fetch_add(&r->reconnects, 1);
      return;
    }
    sleep_ms(100);
  }
  thread_fail("PostgreSQL did not come back within a minute");
}

static void *append_groups(void *arg) {
  appender *ap = arg;
  run *r = ap->r;
  char node[16];
  snprintf(node, sizeof node, "node-%d", ap->id);
  pglog *p = NULL;
  char err[256] = "";
  if (pglog_open(&p, conninfo(), node, &limits, err, sizeof err)) {
    thread_fail("pglog_open: %s", err);
    atomic_fetch_add(&r->appenders_done, 1);
    return NULL;
  }
  unsigned seed = 1234u + (unsigned)ap->id;
  for (int g = 0; g < r->groups && !atomic_load(&r->stopping) && !atomic_load(&thread_failed); g++) {
    int n = 1 + (int)(rand_r(&seed) % PER_GROUP);
    int roll = (int)(rand_r(&seed) % 100) < r->rollback_percent;
    char bodies[PER_GROUP][48];
    pglog_row rows[PER_GROUP];
    for (int i = 0; i < n; i++) {
      int len = snprintf(bodies[i], sizeof bodies[i], "%d %d %d %d", ap->id, g, i, n);
      rows[i] = (pglog_row){.kind = 1, .dataset = "d", .body = bodies[i], .len = (size_t)len};
    }
    r->size[ap->id][g] = (unsigned char)n;
    r->ngroups[ap->id] = g + 1;
    int64_t head = 0, first = 0, after = 0;
    int rc = pglog_begin(p, &head);
    if (!rc) rc = pglog_append(p, rows, n, &first);
    if (!rc && roll) {
      pglog_rollback(p);
      r->status[ap->id][g] = G_ROLLED_BACK;
      continue;
    }
    if (!rc) rc = pglog_commit(p, &after);
    if (!rc) {
      if (after != first + n - 1) thread_fail("a commit of %d rows from %lld gave the head %lld", n, (long long)first,
                                              (long long)after);
      r->first[ap->id][g] = first;
      r->status[ap->id][g] = G_ACKED;
      continue;
    }
    atomic_fetch_add(&r->errors, 1);
    r->status[ap->id][g] = rc == PGLOG_UNKNOWN ? G_UNKNOWN : G_FAILED;
    if (rc != PGLOG_UNKNOWN && rc != PGLOG_DOWN) pglog_rollback(p);
    reconnect_until_up(p, r);
  }
  pglog_close(p);
  atomic_fetch_add(&r->appenders_done, 1);
  return NULL;
}

typedef struct follower {
  run *r;
  int64_t applied;
  int64_t wakeups;
  int64_t reads;
  unsigned short seen[THREADS][GROUPS][PER_GROUP];
  int64_t pos[THREADS][GROUPS][PER_GROUP];
} follower;

/* Applies one row: it must be the next position, and a row some appender wrote. */
static int apply_row(void *arg, const pglog_row *row) {
  follower *f = arg;
  if (row->pos != f->applied + 1) {
    thread_fail("read position %lld after %lld: a gap or an inversion", (long long)row->pos, (long long)f->applied);
    return 1;
  }
  f->applied = row->pos;
  char text[64];
  if (row->len >= sizeof text) {
    thread_fail("a row of %zu bytes at %lld", row->len, (long long)row->pos);
    return 1;
  }
  memcpy(text, row->body, row->len);
  text[row->len] = 0;
  int t, g, i, n;
  if (sscanf(text, "%d %d %d %d", &t, &g, &i, &n) != 4 || t < 0 || t >= THREADS || g < 0 || g >= GROUPS || i < 0 ||
      i >= PER_GROUP) {
    thread_fail("a row no appender wrote at %lld: %s", (long long)row->pos, text);
    return 1;
  }
  f->seen[t][g][i]++;
  f->pos[t][g][i] = row->pos;
  return 0;
}

static void *follow(void *arg) {
  follower *f = arg;
  run *r = f->r;
  pglog *p = NULL;
  char err[256] = "";
  if (pglog_open(&p, conninfo(), "follower", &limits, err, sizeof err)) {
    thread_fail("pglog_open: %s", err);
    return NULL;
  }
  int rc = pglog_listen(p);
  while (!atomic_load(&thread_failed)) {
    int64_t note = 0, last = 0;
    int done = atomic_load(&r->appenders_done) == THREADS;
    if (!rc) {
      int w = pglog_wait(p, 20, &note);
      if (w == 1) f->wakeups++;
      rc = w < 0 ? w : 0;
    }
    if (!rc) {
      f->reads++;
      rc = pglog_read(p, f->applied, 64, apply_row, f, &last);
    }
    if (rc) {
      reconnect_until_up(p, r);
      rc = 0;
      continue;
    }
    int64_t head = 0;
    if (done && pglog_head(p, &head) == PGLOG_OK && f->applied >= head) break;
  }
  pglog_close(p);
  return NULL;
}

/* Every acknowledged group is in the log exactly once, whole and in the order its appender committed it;
 * an unknown one is whole or absent; a failed or rolled-back one is absent; the follower saw no gap. */
static void check_run(run *r, follower *f, int *acked, int *unknown_kept) {
  *acked = *unknown_kept = 0;
  for (int t = 0; t < THREADS; t++) {
    int64_t prev = r->start;
    for (int g = 0; g < r->ngroups[t]; g++) {
      int n = r->size[t][g], copies = f->seen[t][g][0];
      for (int i = 0; i < n; i++) {
        if (f->seen[t][g][i] != copies) fail_msg("group %d/%d is in the log in part", t, g);
        if (copies > 1) fail_msg("group %d/%d is in the log %d times", t, g, copies);
        if (copies && i && f->pos[t][g][i] != f->pos[t][g][0] + i) fail_msg("group %d/%d is not contiguous", t, g);
      }
      switch (r->status[t][g]) {
      case G_ACKED:
        if (copies != 1) fail_msg("acknowledged group %d/%d is missing", t, g);
        if (f->pos[t][g][0] != r->first[t][g]) fail_msg("group %d/%d is not at the position it was given", t, g);
        if (f->pos[t][g][0] <= prev) fail_msg("group %d/%d is before an earlier commit of its appender", t, g);
        prev = f->pos[t][g][0];
        (*acked)++;
        break;
      case G_UNKNOWN:
        *unknown_kept += copies;
        if (copies) prev = f->pos[t][g][0];
        break;
      default:
        if (copies) fail_msg("group %d/%d was not committed, yet it is in the log", t, g);
      }
    }
  }
}

static void run_load(run *r, follower *f, const char *restart) {
  pglog *p = open_log("setup");
  assert_int_equal(pglog_head(p, &r->start), PGLOG_OK);
  pglog_close(p);
  f->r = r;
  f->applied = r->start;
  pthread_t ft, at[THREADS];
  appender aps[THREADS];
  assert_int_equal(pthread_create(&ft, NULL, follow, f), 0);
  for (int t = 0; t < THREADS; t++) {
    aps[t] = (appender){r, t};
    assert_int_equal(pthread_create(&at[t], NULL, append_groups, &aps[t]), 0);
  }
  if (restart) {
    sleep_ms(400);
    assert_int_equal(system(restart), 0);
    sleep_ms(600);
    atomic_store(&r->stopping, 1);
  }
  for (int t = 0; t < THREADS; t++) pthread_join(at[t], NULL);
  pthread_join(ft, NULL);
  if (atomic_load(&thread_failed)) fail_msg("%s", thread_failure);
}

static void test_pglog_concurrent_appenders_follow_in_order(void **state) {
  (void)state;
  run *r = calloc(1, sizeof *r);
  follower *f = calloc(1, sizeof *f);
  assert_non_null(r);
  assert_non_null(f);
  r->groups = 150;
  r->rollback_percent = 15;
  run_load(r, f, NULL);
  int acked = 0, unknown = 0;
  check_run(r, f, &acked, &unknown);
  assert_int_equal(atomic_load(&r->errors), 0);
  assert_true(acked > THREADS * 150 * 7 / 10);
  /* the follower kept up by notifications, not only by polling */
  assert_true(f->wakeups > 0);
  print_message("%d groups acknowledged, %lld rows, %lld wake-ups, %lld reads\n", acked,
                (long long)(f->applied - r->start), (long long)f->wakeups, (long long)f->reads);
  free(r);
  free(f);
}

static void test_pglog_survives_an_immediate_stop(void **state) {
  (void)state;
  const char *restart = getenv("FOCALD_TEST_PG_RESTART");
  if (!restart) fail_msg("FOCALD_TEST_PG_RESTART is not set: run this test through tests/suites/cluster");
  run *r = calloc(1, sizeof *r);
  follower *f = calloc(1, sizeof *f);
  assert_non_null(r);
  assert_non_null(f);
  r->groups = GROUPS;
  r->rollback_percent = 10;
  run_load(r, f, restart);
  int acked = 0, unknown = 0;
  check_run(r, f, &acked, &unknown);
  /* the stop reached the appenders, and they went on after it */
  assert_true(atomic_load(&r->errors) > 0);
  assert_true(atomic_load(&r->reconnects) > 0);
  int after_restart = 0;
  for (int t = 0; t < THREADS; t++) {
    int last_error = -1;
    for (int g = 0; g < r->ngroups[t]; g++)
      if (r->status[t][g] == G_FAILED || r->status[t][g] == G_UNKNOWN) last_error = g;
    for (int g = last_error + 1; g < r->ngroups[t]; g++) after_restart += r->status[t][g] == G_ACKED;
  }
  assert_true(after_restart > 0);
  print_message("%d groups acknowledged (%d after the restart), %lld failed or unknown, %d unknown kept\n", acked,
                after_restart, (long long)atomic_load(&r->errors), unknown);
  free(r);
  free(f);
}

/* Appends n rows in one transaction; returns the new head. */
static int64_t append_n(pglog *p, int n) {
  int64_t head = 0, first = 0;
  pglog_row row = {.kind = 1, .dataset = "d", .body = "held", .len = 4};
  assert_int_equal(pglog_begin(p, &head), PGLOG_OK);
  for (int i = 0; i < n; i++) assert_int_equal(pglog_append(p, &row, 1, &first), PGLOG_OK);
  assert_int_equal(pglog_commit(p, &head), PGLOG_OK);
  return head;
}

static void test_pglog_a_prune_deletes_no_row_after_a_live_hold(void **state) {
  (void)state;
  pglog *a = open_log("hold-a"), *b = open_log("hold-b"), *pruner = open_log("pruner");
  const int64_t h = append_n(pruner, 6);
  int kept = 0;
  int64_t rows = 0, last = 0;
  /* two nodes hold: the lower position is what stays */
  assert_int_equal(pglog_hold(a, h - 2, 60, &kept), PGLOG_OK);
  assert_true(kept);
  assert_int_equal(pglog_hold(b, h - 4, 60, &kept), PGLOG_OK);
  assert_true(kept);
  assert_int_equal(pglog_prune(pruner, h + 1, &rows), PGLOG_OK);
  collected c = {0};
  assert_int_equal(pglog_read(pruner, 0, 8, collect, &c, &last), PGLOG_OK);
  assert_int_equal(c.n, 4);
  assert_int_equal(c.rows[0].pos, h - 3); /* b has applied h - 4 and needs the rest */
  /* b moves on; a hold that has expired holds nothing */
  assert_int_equal(pglog_hold(b, h - 1, 60, &kept), PGLOG_OK);
  assert_int_equal(pglog_hold(a, h - 3, 0, &kept), PGLOG_OK);
  assert_int_equal(pglog_prune(pruner, h + 1, &rows), PGLOG_OK);
  collected d = {0};
  assert_int_equal(pglog_read(pruner, 0, 8, collect, &d, &last), PGLOG_OK);
  assert_int_equal(d.n, 1);
  assert_int_equal(d.rows[0].pos, h);
  /* kept says whether a node at a position can still go on from it: the head, or a row after it, is there */
  assert_int_equal(pglog_hold(a, h - 1, 60, &kept), PGLOG_OK);
  assert_true(kept);
  assert_int_equal(pglog_hold(a, h, 60, &kept), PGLOG_OK);
  assert_true(kept);
  assert_int_equal(pglog_hold(a, h - 3, 60, &kept), PGLOG_OK);
  assert_false(kept);
  /* the holds are let go, for the tests after this one */
  assert_int_equal(pglog_hold(a, h, 0, NULL), PGLOG_OK);
  assert_int_equal(pglog_hold(b, h, 0, NULL), PGLOG_OK);
  pglog_close(a);
  pglog_close(b);
  pglog_close(pruner);
}

static void test_pglog_open_refuses_a_bad_server(void **state) {
  (void)state;
  pglog *p = (pglog *)1;
  char err[256] = "";
  /* a port nothing listens on: port 1 on loopback */
  int rc = pglog_open(&p, "host=127.0.0.1 port=1 connect_timeout=2 dbname=x", "n", &limits, err, sizeof err);
  assert_int_equal(rc, PGLOG_DOWN);
  assert_null(p);
  assert_non_null(strstr(err, "connecting"));
  pglog_close(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pglog_open_refuses_a_bad_server),
      cmocka_unit_test(test_pglog_rows_round_trip),
      cmocka_unit_test(test_pglog_rollback_leaves_no_gap),
      cmocka_unit_test(test_pglog_appenders_wait_for_the_head),
      cmocka_unit_test(test_pglog_wait_times_out_and_wakes),
      cmocka_unit_test(test_pglog_a_statement_past_its_deadline_drops_the_connection),
      cmocka_unit_test(test_pglog_open_gives_up_on_a_silent_server_at_its_deadline),
      cmocka_unit_test(test_pglog_a_stop_ends_a_round_trip_before_its_deadline),
      cmocka_unit_test(test_pglog_concurrent_appenders_follow_in_order),
      cmocka_unit_test(test_pglog_survives_an_immediate_stop),
      cmocka_unit_test(test_pglog_a_prune_deletes_no_row_after_a_live_hold),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
