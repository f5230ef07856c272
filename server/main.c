/* main.c — focald: start-up, the thread map, signals and an orderly shutdown.
 *
 * Threads and what each may touch:
 *
 *   main          parses the config, binds the listening sockets, opens and
 *                 loads the database, starts the others, then waits for
 *                 a stop signal (sigwait; signals_taken) and drains.
 *   HTTP pool     libmicrohttpd's threads (--http-threads): parse and check
 *                 requests, answer queries from the state (state.h) under a
 *                 dataset's read lock, hand scoring jobs to the loop thread,
 *                 suspend and resume connections. Never touch SQLite or
 *                 libuv (except through work_submit's uv_async_send).
 *   loop          the libuv loop (work.c): splits jobs into chunks and queues
 *                 them on the pool; the only thread that calls libuv.
 *   scoring pool  libuv's threads (--workers): run the loss library on
 *                 a job's rows; touch only that job's buffers. The thread
 *                 that scores a job's last chunk builds its answer, before
 *                 a batch goes to the writer.
 *   writer        store.c, its groups store_group.c: the only SQLite writer
 *                 and the only thread that changes the state (state_write.c):
 *                 it prepares each change before its commit (growing arrays
 *                 under the dataset's write lock) and applies it after (under
 *                 the write lock); builds each other change's answer before
 *                 the commit, so that the HTTP thread that sends it once
 *                 committed takes no memory; completes jobs.
 *   checkpointer  store.c: passive WAL checkpoints on its own connection.
 *   follower      store_cluster.c, on a cluster node (--store) only: its own
 *                 PostgreSQL connection LISTENs for appends to the shared log
 *                 and polls its head; it touches only atomics (the head seen,
 *                 a flag) and wakes the writer, which copies and applies the
 *                 new rows between groups. The writer also holds the node's
 *                 other PostgreSQL connection, for its groups' appends.
 *   snapshotter   store_cluster.c, on a cluster node with a snapshot interval:
 *                 under a lease, copies the local database on a connection of
 *                 its own (VACUUM INTO) and stores it in PostgreSQL with a
 *                 third connection; prunes the log. Touches no in-memory state.
 *   watchdog      watchdog.c: shuts down connections whose request headers take
 *                 longer than --connection-timeout, or whose body arrives
 *                 slower than --min-body-rate (slowloris); touches only its
 *                 table of open connections, under that table's lock, and
 *                 calls http_request.c's trim of freed body memory (atomics
 *                 only) and the expiry of reads waiting for a log position
 *                 (logwait.c, under its lock; it resumes their connections).
 *
 * Signals are blocked in every thread before any is created; main alone
 * receives them with sigwait, so no handler runs on an arbitrary thread,
 * except while the database opens and loads: then a thread of its own
 * (starting_main) takes them and stops focald at once.
 *
 * SIGTERM: readiness turns to draining (new changes get 503 draining); a
 * cluster node's round trips to PostgreSQL wait a few seconds at most from
 * then on (store_stopping); the scoring pool gets --drain-timeout seconds,
 * then what it has not started is refused and what it is running finishes;
 * the gate closes so that no handler reaches the store; the store commits and
 * answers what is queued and closes; the answers are let out; only then does
 * libmicrohttpd stop.
 */
#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <jansson.h>
#include <malloc.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "api.h"
#include "api_common.h"
#include "config.h"
#include "http.h"
#include "jtext.h"
#include "log.h"
#include "logwait.h"
#include "state.h"
#include "store.h"
#include "work.h"

#define TRIM_THRESHOLD (4 << 20) /* bytes of free heap top kept for reuse */

/* Sends the probe over fd and reads the status line: over TLS when tls is set. Returns 1 on a 200. */
static int probe(int fd, int tls, const char *path) {
  char rq[128];
  snprintf(rq, sizeof rq, "GET %s HTTP/1.1\r\nHost: focald\r\nConnection: close\r\n\r\n", path);
  char text[64] = {0};
  ssize_t got = -1;
  if (!tls) {
    if (write(fd, rq, strlen(rq)) == (ssize_t)strlen(rq)) got = read(fd, text, sizeof text - 1);
  } else {
    /* the probe checks that the local server answers, not who it is: no certificate verification */
    gnutls_session_t s = NULL;
    gnutls_certificate_credentials_t cred = NULL;
    if (gnutls_certificate_allocate_credentials(&cred) == 0 && gnutls_init(&s, GNUTLS_CLIENT) == 0 &&
        gnutls_set_default_priority(s) == 0 && gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred) == 0) {
      gnutls_transport_set_int(s, fd);
      gnutls_handshake_set_timeout(s, 3000);
      int rc;
      do rc = gnutls_handshake(s);
      while (rc < 0 && !gnutls_error_is_fatal(rc));
      if (rc == 0 && gnutls_record_send(s, rq, strlen(rq)) == (ssize_t)strlen(rq))
        got = gnutls_record_recv(s, text, sizeof text - 1);
    }
    if (s) gnutls_deinit(s);
    if (cred) gnutls_certificate_free_credentials(cred);
  }
  return got > 12 && strncmp(text, "HTTP/1.1 200", 12) == 0;
}

/* GET --healthcheck-path on the health listener when there is one (plain HTTP), else on the
 * configured address (HTTPS with --tls-cert); exit status 0 on a 200. */
static int healthcheck(const config *cfg) {
  char host[128];
  const char *addr = cfg->health_listen[0] ? cfg->health_listen : cfg->listen;
  const int tls = !cfg->health_listen[0] && cfg->tls_cert[0] != '\0';
  const char *colon = strrchr(addr, ':');
  if (!colon) return 1;
  size_t hl = (size_t)(colon - addr);
  if (hl >= sizeof host) return 1;
  memcpy(host, addr, hl);
  host[hl] = '\0';
  char *h = host;
  if (h[0] == '[' && hl >= 2) {
    h[hl - 1] = '\0';
    h++;
  }
  /* a wildcard listen address is probed on loopback */
  if (!*h || strcmp(h, "0.0.0.0") == 0) h = "127.0.0.1";
  if (strcmp(h, "::") == 0) h = "::1";
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(h, colon + 1, &hints, &res) != 0 || !res) return 1;
  int fd = socket(res->ai_family, SOCK_STREAM, 0);
  int ok = fd >= 0;
  if (ok) {
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    ok = connect(fd, res->ai_addr, res->ai_addrlen) == 0 && probe(fd, tls, cfg->healthcheck_path);
  }
  freeaddrinfo(res);
  if (fd >= 0) close(fd);
  return ok ? 0 : 1;
}

/* Every connection holds a descriptor, and libmicrohttpd spins on accept once the process has none left
 * (EMFILE): a core taken while the connections past the limit wait. The soft limit is raised to the hard
 * one, and --max-connections lowered, with a warning, to what is left once focald's own descriptors are
 * counted (the database's files, an epoll set and a wakeup per HTTP thread, the health listener's slots,
 * PostgreSQL's connections, media files being sent, a snapshot's copy). Returns -1 when not even the fewest
 * connections would be left. */
static int fit_descriptors(config *cfg) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    const struct rlimit up = {rl.rlim_max, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
  }
  if (rl.rlim_cur == RLIM_INFINITY) return 0;
  const long long reserve = 32 + 2ll * cfg->http_threads + (cfg->health_listen[0] ? 64 : 0);
  const long long left = (long long)rl.rlim_cur - reserve;
  if (left >= cfg->max_connections) return 0;
  if (left < 4) {
    log_msg(LOG_ERROR, "ulimit -n is %lld: focald needs %lld descriptors for itself and 4 connections at least",
            (long long)rl.rlim_cur, reserve);
    return -1;
  }
  log_msg(LOG_WARN, "--max-connections lowered from %d to %lld: ulimit -n is %lld and focald keeps %lld descriptors for itself",
          cfg->max_connections, left, (long long)rl.rlim_cur, reserve);
  cfg->max_connections = (int)left;
  return 0;
}

/* The signals whose default action would end focald, and what it does with each instead. The stop signals
 * drain (see the top of this file): SIGTERM and SIGINT, a hangup (the terminal focald was started from
 * closing), SIGQUIT (the stop signal some supervisors and container images use), SIGXCPU (the soft CPU-time
 * limit, which a SIGKILL follows at the hard limit) and SIGPWR (a power failure, as init announces it).
 * Signals focald has no use for (the user signals, timers, profiling, I/O readiness, the real-time signals)
 * are logged and ignored: one sent by mistake (a "reload" sent to every process of a pod, a stray timer)
 * used to end focald on the spot, with batches being scored. SIGPIPE and SIGXFSZ are ignored without a word
 * (a closed connection and a file-size limit come back as errors of the call). Faults (SIGSEGV, SIGBUS,
 * SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS) keep their default: focald stops with a core to look at. */
static const int stop_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGPWR};
static const int ignored_signals[] = {SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGSTKFLT};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Returns 1 when focald takes sig: SIGTERM and SIGINT always, the others only when they have their default
 * action as focald starts; one ignored then (SIGHUP under nohup) or handled by a library loaded before focald
 * (a profiler's SIGPROF) is left so. */
static int signal_is_ours(int sig) {
  struct sigaction now;
  return sig == SIGTERM || sig == SIGINT || (sigaction(sig, NULL, &now) == 0 && now.sa_handler == SIG_DFL);
}

/* Fills sigs with every signal of the lists above that focald takes, and stops with its stop signals. */
static void signals_taken(sigset_t *sigs /* OUT */, sigset_t *stops /* OUT */) {
  sigemptyset(sigs);
  sigemptyset(stops);
  for (size_t i = 0; i < COUNT(stop_signals); i++)
    if (signal_is_ours(stop_signals[i])) {
      sigaddset(sigs, stop_signals[i]);
      sigaddset(stops, stop_signals[i]);
    }
  for (size_t i = 0; i < COUNT(ignored_signals); i++)
    if (signal_is_ours(ignored_signals[i])) sigaddset(sigs, ignored_signals[i]);
  for (int sig = SIGRTMIN; sig <= SIGRTMAX; sig++)
    if (signal_is_ours(sig)) sigaddset(sigs, sig);
}

/* Writes sig's name ("SIGUSR1", "SIGRTMIN+3") into out. */
static const char *signal_name(int sig, char out[static 16]) {
  const char *abbrev = sig >= SIGRTMIN && sig <= SIGRTMAX ? NULL : sigabbrev_np(sig);
  if (abbrev)
    snprintf(out, 16, "SIG%s", abbrev);
  else
    snprintf(out, 16, "SIGRTMIN+%d", sig - SIGRTMIN);
  return out;
}

/* Waits for the next stop signal among sigs (stops), logging and ignoring the others; returns it. */
static int signal_wait_stop(const sigset_t *sigs, const sigset_t *stops) {
  for (;;) {
    int sig = 0;
    if (sigwait(sigs, &sig) != 0) continue;
    if (sigismember(stops, sig)) return sig;
    char name[16];
    int was; /* starting_main may be cancelled in sigwait, never within a log line */
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &was);
    log_msg(LOG_WARN, "%s: ignored", signal_name(sig, name));
    pthread_setcancelstate(was, NULL);
  }
}

typedef struct {
  sigset_t sigs, stops;
} signal_sets;

/* Takes the stop signals while the database opens and loads, which can outlast a grace period. Nothing has
 * been accepted yet (/readyz and every /v1/ route answer 503 starting), so there is nothing to drain: focald
 * stops at once, leaving what a kill leaves, which the next start takes back (README, "Durability"). main
 * cancels this thread before it accepts work (sigwait is a cancellation point); once a stop signal is taken,
 * the exit cannot be cancelled. */
static void *starting_main(void *arg) {
  const signal_sets *s = arg;
  const int sig = signal_wait_stop(&s->sigs, &s->stops);
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
  char name[16];
  log_msg(LOG_INFO, "%s while starting: stopped", signal_name(sig, name));
  _exit(0);
}

int main(int argc, char **argv) {
  static config cfg; /* read by every thread until exit: api, http and the store keep pointers to it */
  int rc = config_load(&cfg, argc, argv);
  if (rc != 0) {
    /* a health probe answers 0 or 1 only: container engines reserve other statuses */
    for (int a = 1; a < argc; a++)
      if (strcmp(argv[a], "--healthcheck") == 0) return 1;
    return rc > 0 ? 0 : 2;
  }
  if (cfg.healthcheck) return healthcheck(&cfg);
  log_set_level(cfg.log_level);
  if (fit_descriptors(&cfg) != 0) return 1;

  static signal_sets sigs; /* read by starting_main until main joins it */
  signals_taken(&sigs.sigs, &sigs.stops);
  pthread_sigmask(SIG_BLOCK, &sigs.sigs, NULL);
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN); /* a file-size limit then fails writes with an error instead of killing us */
  json_object_seed(0);      /* before threads: jansson's hash seed is process-wide */
  jtext_init();             /* and so are its allocation functions */
  /* Request bodies of megabytes come and go many times a second. Served by
   * mmap, each would be fresh pages faulted in on the copy and unmapped on
   * free; kept in the heap, they are reused warm (the body and queue limits
   * bound the peak). A heap's free top is given back once it passes
   * TRIM_THRESHOLD: the working set of ordinary batches stays well under it,
   * while the hundreds of megabytes a large JSON body takes to decode go back
   * as it ends. glibc's malloc_trim (the watchdog calls it after large bodies)
   * cannot do that part: it shrinks only the main arena's top, and bodies are
   * decoded on the HTTP threads, in arenas of their own. */
  mallopt(M_MMAP_THRESHOLD, (int)(cfg.max_body + (1 << 20) < (256ll << 20) ? cfg.max_body + (1 << 20) : (256ll << 20)));
  mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);

  /* the listeners before the database: a port that is taken stops focald at once, with the database untouched
   * (not opened, migrated or loaded first, which takes long for a large one) */
  if (http_bind(&cfg) != 0) return 1;
  pthread_t starting;
  const int started = pthread_create(&starting, NULL, starting_main, &sigs);
  if (started != 0) {
    log_kv(LOG_ERROR, "cannot start a thread", "thread", "starting", "error", strerror(started), NULL);
    http_stop();
    return 1;
  }
  st_map *map = st_map_new();
  store *st = NULL;
  if (!map) return 1;
  st_map_set_series_points(map, cfg.series_points);
  if (store_open(&st, &cfg, map) != 0) {
    st_map_free(map);
    http_stop();
    return 1;
  }
  /* where this node is in its log: for the answers' headers and the reads that wait (logwait.h) */
  logwait_set_cluster(cfg.store[0] != 0);
  store_on_applied(st, logwait_moved, logwait_head);
  api_init(&cfg, map, st);
  /* listen first: /livez answers and /readyz says "starting" while the database loads */
  http_set_readiness(HTTP_STARTING);
  if (http_start(&cfg, api_routes, api_route_count) != 0) return 1;
  log_kv(LOG_INFO, "listening", "listen", cfg.listen, "db", cfg.db, "isa", fl_isa(), NULL);
  const int loaded = store_load(st);
  pthread_cancel(starting); /* from here a signal is main's: a drain */
  pthread_join(starting, NULL);
  if (loaded != 0 || store_start(st) != 0 || work_start(&cfg, st) != 0) {
    http_stop();
    return 1;
  }
  http_set_readiness(HTTP_READY);
  log_msg(LOG_INFO, "ready: %d HTTP threads, %d scoring threads, durability %s", cfg.http_threads, cfg.workers,
          cfg.durability == DUR_FULL ? "full" : "normal");

  const int sig = signal_wait_stop(&sigs.sigs, &sigs.stops);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  char name[16];
  log_msg(LOG_INFO, "%s: draining", signal_name(sig, name));
  /* The listening socket stays open until http_stop: new requests are answered
   * 503 draining. libmicrohttpd's MHD_quiesce_daemon would close it sooner, but
   * with epoll and its own threads it races a worker removing the same socket
   * from the worker's epoll set, and aborts the process when it loses. */
  http_set_readiness(HTTP_DRAINING);
  /* a cluster node's PostgreSQL may not answer: the drain below waits for it no longer than a few seconds */
  store_stopping(st);
  /* Every request is finished or refused: batches still waiting to be scored
   * after --drain-timeout get 503 draining, those being scored go on to the
   * store, and the store is closed only once nothing can reach it any more. */
  if (work_drain(cfg.drain_timeout * 1000) != 0) {
    log_msg(LOG_WARN, "%d batches were still in flight after %d s; those not yet scored are refused (503 draining)",
            work_inflight(), cfg.drain_timeout);
    work_cancel();
    work_drain(-1); /* what is being scored finishes in bounded time */
  }
  http_close_gate(); /* keep-alive connections stay open until http_stop: keep their handlers off the store */
  store_close(st);   /* commits what is queued and answers it, then checkpoints */
  work_stop();
  /* the answers the store's last commits released are on their way: let them go out before the sockets close */
  if (http_wait_idle(2000) != 0) log_msg(LOG_WARN, "some clients had not read their answers when focald stopped");
  http_stop();
  st_map_free(map);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  log_msg(LOG_INFO, "stopped in %.2f s", (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
  return 0;
}
