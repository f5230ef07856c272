/* logwait.c — the reads waiting for a log position, and where this node is in its log (see logwait.h).
 *
 * The waiters are a list under one lock. A waiter is added after its connection is suspended and checked
 * against the applied position under the lock, and logwait_moved takes the same lock after the position
 * moved, so a move between the caller's check and the add is never missed.
 */
#include "logwait.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct waiter {
  void *who;
  int64_t pos;
  double deadline;
  struct waiter *next;
} waiter;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static waiter *waiting;
static logwait_wake_fn wake_fn;
static int cluster;
static int closed; /* after logwait_wake_all: no read waits any more (under lock) */
static atomic_llong applied_at, head_at;

void logwait_init(logwait_wake_fn wake) {
  wake_fn = wake;
}

void logwait_set_cluster(int on) {
  cluster = on;
}

int64_t logwait_applied(void) {
  return atomic_load(&applied_at);
}

void logwait_head(int64_t head) {
  atomic_store(&head_at, head);
}

int logwait_behind(int64_t *behind) {
  if (!cluster) return 0;
  const int64_t head = atomic_load(&head_at), applied = logwait_applied();
  if (head < 0) return -1;
  *behind = head > applied ? head - applied : 0;
  return 1;
}

/* Takes out the waiters for which done(w, arg) holds (under the lock); returns them as a list. */
static waiter *take(int (*done)(const waiter *w, double arg), double arg) {
  waiter *out = NULL, **p = &waiting;
  while (*p) {
    waiter *w = *p;
    if (done(w, arg)) {
      *p = w->next;
      w->next = out;
      out = w;
    } else {
      p = &w->next;
    }
  }
  return out;
}

static void wake_list(waiter *w) {
  while (w) {
    waiter *next = w->next;
    wake_fn(w->who);
    free(w);
    w = next;
  }
}

static int reached(const waiter *w, double applied) {
  return (double)w->pos <= applied;
}

static int expired(const waiter *w, double now) {
  return w->deadline <= now;
}

static int any(const waiter *w, double unused) {
  (void)w;
  (void)unused;
  return 1;
}

int logwait_add(void *who, int64_t pos, double deadline) {
  waiter *w = malloc(sizeof *w);
  if (!w) {
    wake_fn(who); /* answered at once: not caught up */
    return -1;
  }
  *w = (waiter){who, pos, deadline, NULL};
  pthread_mutex_lock(&lock);
  /* once focald stops, a read that comes late is answered at once: none would wake it, and a request left
   * suspended when the HTTP server stops ends the process (libmicrohttpd aborts) */
  const int now = closed || logwait_applied() >= pos;
  if (!now) {
    w->next = waiting;
    waiting = w;
  }
  pthread_mutex_unlock(&lock);
  if (now) {
    wake_fn(who);
    free(w);
  }
  return 0;
}

void logwait_moved(int64_t applied) {
  pthread_mutex_lock(&lock);
  atomic_store(&applied_at, applied);
  waiter *w = waiting ? take(reached, (double)logwait_applied()) : NULL;
  pthread_mutex_unlock(&lock);
  wake_list(w);
}

void logwait_expire(double now) {
  pthread_mutex_lock(&lock);
  waiter *w = waiting ? take(expired, now) : NULL;
  pthread_mutex_unlock(&lock);
  wake_list(w);
}

void logwait_wake_all(void) {
  pthread_mutex_lock(&lock);
  closed = 1;
  waiter *w = take(any, 0);
  pthread_mutex_unlock(&lock);
  wake_list(w);
}
