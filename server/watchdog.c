/* watchdog.c — the header and body deadlines of every open connection, enforced from one thread.
 *
 * Each connection has deadlines: its request's headers must be complete within
 * the timeout of the connection opening or of its previous answer, and its body
 * must then arrive at min_rate on average, after a first timeout of grace (a
 * body of B bytes has timeout + B / min_rate seconds). The watchdog thread
 * shuts down the socket of a connection past either; libmicrohttpd then sees
 * the end of the stream and closes the connection as usual (it cannot answer
 * in the middle of an upload). libmicrohttpd reports a connection closed before
 * it closes the socket, so the watchdog never touches a descriptor that was
 * closed and reused. The table is a list under one lock: the HTTP threads
 * update their own connections' entries, the watchdog reads them all.
 */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>

typedef struct tracked {
  int fd;
  double since;      /* opened, or last answered; in a request: its headers complete */
  int in_request;    /* headers complete: the request is being served */
  int receiving;     /* in a request whose body is still arriving */
  uint64_t received; /* its body bytes so far */
  int cut;           /* shut down already */
  struct tracked *prev, *next;
} tracked;

static pthread_mutex_t track_lock = PTHREAD_MUTEX_INITIALIZER;
static tracked *track_head;
static pthread_t watchdog;
static int watchdog_running, stopping;
static pthread_cond_t watchdog_wake = PTHREAD_COND_INITIALIZER;
/* set by watchdog_start before the thread exists */
static double deadline_s;
static long long body_rate;
static void (*tick_fn)(double now);

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

void watchdog_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code) {
  (void)cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    tracked *t = calloc(1, sizeof *t);
    if (!t || !ci) {
      free(t);
      return;
    }
    t->fd = ci->connect_fd;
    t->since = now_s();
    pthread_mutex_lock(&track_lock);
    t->next = track_head;
    if (track_head) track_head->prev = t;
    track_head = t;
    pthread_mutex_unlock(&track_lock);
    *socket_context = t;
  } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
    tracked *t = *socket_context;
    pthread_mutex_lock(&track_lock);
    if (t->prev) t->prev->next = t->next;
    else track_head = t->next;
    if (t->next) t->next->prev = t->prev;
    pthread_mutex_unlock(&track_lock);
    free(t);
    *socket_context = NULL;
  }
}

void watchdog_request(struct MHD_Connection *conn, int in_request) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  tracked *t = ci ? ci->socket_context : NULL;
  if (!t) return;
  pthread_mutex_lock(&track_lock);
  t->in_request = in_request;
  t->receiving = in_request;
  t->received = 0;
  t->since = now_s();
  pthread_mutex_unlock(&track_lock);
}

void watchdog_body(struct MHD_Connection *conn, size_t n, int done) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  tracked *t = ci ? ci->socket_context : NULL;
  if (!t) return;
  pthread_mutex_lock(&track_lock);
  t->received += n;
  if (done) t->receiving = 0;
  pthread_mutex_unlock(&track_lock);
}

static void *watchdog_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&track_lock);
  while (!stopping) {
    const double now = now_s();
    for (tracked *t = track_head; t; t = t->next) {
      if (t->cut || now - t->since <= deadline_s) continue;
      if (t->in_request) {
        /* a request being served is cut only while its body is late */
        if (!t->receiving || body_rate <= 0) continue;
        if (now - t->since <= deadline_s + (double)t->received / (double)body_rate) continue;
      }
      shutdown(t->fd, SHUT_RDWR);
      t->cut = 1;
    }
    pthread_mutex_unlock(&track_lock);
    if (tick_fn) tick_fn(now);
    pthread_mutex_lock(&track_lock);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 250000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&watchdog_wake, &track_lock, &ts);
  }
  pthread_mutex_unlock(&track_lock);
  return NULL;
}

int watchdog_start(double timeout, long long min_rate, void (*tick)(double now)) {
  deadline_s = timeout;
  body_rate = min_rate;
  tick_fn = tick;
  stopping = 0;
  const int rc = pthread_create(&watchdog, NULL, watchdog_main, NULL);
  if (rc != 0) {
    errno = rc;
    return -1;
  }
  watchdog_running = 1;
  return 0;
}

void watchdog_stop(void) {
  if (!watchdog_running) return;
  pthread_mutex_lock(&track_lock);
  stopping = 1;
  pthread_cond_signal(&watchdog_wake);
  pthread_mutex_unlock(&track_lock);
  pthread_join(watchdog, NULL);
  watchdog_running = 0;
}
