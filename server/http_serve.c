/* http_serve.c — the listeners, and each request's life on them: its phases, the handlers' gate,
 * suspension and resumption, completion.
 *
 * libmicrohttpd has no body limit and no timeouts by default, and binds every
 * address unless told otherwise: all three are set here from the config. The
 * URL is routed undecoded (the unescape callback is a no-op) so that an id
 * containing %2F stays one path segment; each segment and query value is
 * percent-decoded on its own (router.c). A route whose last parameter is
 * given in the query (router.h: query_param) gets it here, before the
 * handler runs, as if it had come in the path. The routes are data given to
 * http_start: the layer knows no route, only the flags and fields a route
 * states (router.h).
 */
#include "http.h"
#include "http_internal.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "faultpoint.h"
#include "log.h"
#include "logwait.h"
#include "router.h"
#include "watchdog.h"

static struct MHD_Daemon *daemon_;
/* --health-listen: a second listener with slots of its own for the probe routes. Its access
 * handler's closure is &health_only, the data listener's NULL. */
static struct MHD_Daemon *health_daemon;
static int health_only;
static char health_refusal[200]; /* what it answers to another path: it names the probes' paths */
static atomic_int readiness;
static atomic_int active_requests; /* begun and not yet reported complete by libmicrohttpd */
static atomic_ullong request_counter;
static uint64_t id_seed;

/* ------------------------------------------------------------------ request lifecycle */

static void new_request_id(http_req *rq, struct MHD_Connection *conn) {
  const char *given = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
  if (given) {
    size_t n = strlen(given);
    int ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) {
      char ch = given[i];
      ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '_' || ch == '.';
    }
    if (ok) {
      memcpy(rq->request_id, given, n + 1);
      return;
    }
  }
  uint64_t v = id_seed ^ (atomic_fetch_add(&request_counter, 1) * 0x9e3779b97f4a7c15ull);
  v ^= v >> 31;
  v *= 0xbf58476d1ce4e5b9ull;
  v ^= v >> 29;
  snprintf(rq->request_id, sizeof rq->request_id, "%016llx", (unsigned long long)v);
}

/* Handlers read the store and submit to it; main frees it while keep-alive connections are still open. */
static pthread_rwlock_t gate = PTHREAD_RWLOCK_INITIALIZER;
static int gate_closed;

void http_close_gate(void) {
  logwait_wake_all(); /* the reads waiting for a position answer now, before the store goes */
  pthread_rwlock_wrlock(&gate);
  gate_closed = 1;
  pthread_rwlock_unlock(&gate);
}

/* ------------------------------------------------------------------ the request's phases
 *
 * libmicrohttpd calls the access handler once with the headers (no body yet),
 * once per piece of the body, and once more when the body is complete (again
 * after a resume). Each call goes to its phase: begin_request decides from the
 * headers alone what can be decided (route, token, query, path parameters,
 * body type and size) and prepares the body's buffer (http__begin_body);
 * http__receive_body keeps the body, counting and dropping what passes the
 * limits (both in http_request.c); complete_request runs the handler, or
 * builds the answer of one that was suspended. */

/* The header phase: rq is new. Routes it and refuses at once what its headers condemn; otherwise returns
 * MHD_YES (its body, if any, comes next). */
static enum MHD_Result begin_request(int health, struct MHD_Connection *conn, http_req *rq) {
  const char *url = rq->path, *method = rq->method;
  char why[128];
  const char *ambiguous = http__framing_problem(conn, why, sizeof why);
  if (ambiguous) return http__send_problem(conn, rq, P_BAD_REQUEST, ambiguous);
  router_match m;
  const int ri = router_find(http__routes, http__nroutes, method, url, &m);
  memcpy(rq->params, m.params, sizeof rq->params);
  rq->bad_param = m.bad_param;
  /* the health listener serves the probes only, which take no token: anything else there is a 404 whatever
   * the credentials (a 401 would ask for a token that could not change the answer) */
  if (health && !(m.path_flags & ROUTE_PROBE))
    return http__send_problem(conn, rq, P_NOT_FOUND, health_refusal);
  if (!http__authorized(conn, m.path_flags)) {
    /* counted and logged under the route asked for, answered alike whether it exists or not */
    if (ri >= 0) rq->route_index = ri, rq->route = http__routes[ri].pattern;
    return http__send_problem(conn, rq, P_UNAUTHORIZED, "send the token as Authorization: Bearer <token>");
  }
  if (ri == -1) return http__send_problem(conn, rq, P_NOT_FOUND, "no such route; see /openapi.json");
  problem p;
  if (ri == -2) {
    http_resp out = {0};
    problem_set(&p, P_METHOD_NOT_ALLOWED, NULL, "%s is not allowed here; allowed: %s", method, m.allow);
    http_problem(&out, rq, &p);
    http_header(&out, "Allow", m.allow);
    return http__respond(conn, rq, &out);
  }
  const router_route *route = &http__routes[ri];
  rq->route = route->pattern;
  rq->route_index = ri;
  if (http__query_problem(conn, route, &p)) return http__answer_problem(conn, rq, &p);
  if (route->query_param && http__query_param(conn, route, m.query_index, rq, &p)) return http__answer_problem(conn, rq, &p);
  if (rq->bad_param) {
    /* a name that cannot be decoded names nothing: the route says what that is (a 404, or bad_name) */
    char d[400];
    const int in_query = rq->bad_param - 1 == m.query_index;
    snprintf(d, sizeof d, "the %s \"%.200s\" is not a valid name: a malformed %%-escape, an encoded NUL, or too long",
             in_query ? "query parameter's value" : "path segment", rq->params[rq->bad_param - 1]);
    return http__send_problem(conn, rq, route->bad_param[rq->bad_param - 1], d);
  }
  if (route->flags & (ROUTE_BODY_JSON | ROUTE_BODY_BINARY)) return http__begin_body(conn, rq, route);
  /* a route that takes no body refuses one before reading it: read, it would be kept and count against
   * --body-memory (the token-free probes among such routes) */
  const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  const int chunked = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL;
  if (chunked || (cl && strspn(cl, "0") != strlen(cl)))
    return http__send_problem(conn, rq, P_BODY_TOO_LARGE, "this route takes no body; send the request without one");
  return MHD_YES;
}

/* Runs route ri's handler inside the gate: once main closes it to free the store, none is running or
 * starts. Fills *out unless the handler went asynchronous (HTTP_ASYNC). */
static int handle(http_req *rq, int ri, http_resp *out) {
  pthread_rwlock_rdlock(&gate);
  if (gate_closed) {
    pthread_rwlock_unlock(&gate);
    problem p;
    problem_set(&p, P_DRAINING, NULL, "shutting down");
    return http_problem(out, rq, &p);
  }
  int rc = http__routes[ri].fn(rq, out);
  pthread_rwlock_unlock(&gate);
  return rc;
}

static enum MHD_Result run_handler(struct MHD_Connection *conn, http_req *rq, int ri) {
  http_resp out = {0};
  fault_point(FP_REQUEST);
  const int rc = handle(rq, ri, &out);
  fault_point(FP_NONE);
  if (rc == HTTP_ASYNC) return MHD_YES;
  return http__respond(conn, rq, &out);
}

/* A read that waited for its after= position: its handler runs now, or it is answered not_caught_up.
 * Reads of the data are never asynchronous themselves. */
static int finish_after_wait(http_req *rq, http_resp *out) {
  const int64_t applied = logwait_applied();
  if (applied < rq->after) {
    problem p;
    problem_set(&p, P_NOT_CAUGHT_UP, "after", "this node has applied the log up to position %lld; %lld was not "
                "reached within %d ms (--read-wait): retry, or read from the node that took the write",
                (long long)applied, (long long)rq->after, http__cfg->read_wait);
    return http_problem(out, rq, &p);
  }
  return handle(rq, rq->route_index, out);
}

static void wake_reader(void *who) {
  http_complete(who);
}

/* The completion phase: the whole request is here (or it was resumed). Answers what the body phase
 * refused, or runs the route's handler inside the gate, or builds a resumed request's answer. */
static enum MHD_Result complete_request(struct MHD_Connection *conn, http_req *rq) {
  watchdog_body(conn, 0, 1);
  if (rq->state == RQ_ANSWERED) return MHD_YES;
  if (rq->state == RQ_SUSPENDED) return MHD_YES; /* spurious: wait for http_complete */
  const int ri = rq->route_index;
  http_resp out = {0};
  if (rq->state == RQ_COMPLETE) {
    rq->finish(rq, &out);
    return http__respond(conn, rq, &out);
  }
  if (rq->too_large) {
    char d[160];
    snprintf(d, sizeof d, "the body is larger than the limit of %lld bytes (--max-body)", (long long)http__cfg->max_body);
    return http__send_problem(conn, rq, P_BODY_TOO_LARGE, d);
  }
  if (rq->no_memory) return http__send_problem(conn, rq, P_OVERLOADED, "focald has no memory for this body now; retry shortly");
  if (rq->over_budget) {
    char d[200];
    snprintf(d, sizeof d, "the request bodies being decoded would take more than --body-memory (%lld bytes) with "
             "this one's; retry shortly", (long long)http__cfg->body_memory);
    return http__send_problem(conn, rq, P_OVERLOADED, d);
  }
  if (rq->buf) rq->buf[rq->len] = '\0';
  rq->body = rq->buf ? rq->buf : "";
  if (ri < 0) return http__send_problem(conn, rq, P_INTERNAL, "route lost");
  /* while the database loads, the data routes answer 503 starting: an answer from half a state is no answer */
  if (http_readiness() == HTTP_STARTING && (http__routes[ri].flags & ROUTE_DATA))
    return http__send_problem(conn, rq, P_STARTING, "loading the database; retry shortly");
  if (http__reads_data(&http__routes[ri])) {
    char text[HTTP_QUERY_MAX];
    const char *a = http_query(rq, "after", text, sizeof text);
    if (a) {
      /* an optional '-' and digits, as every integer parameter: strtoll alone would take spaces and '+' */
      const int digits = a[0] == '-' ? isdigit((unsigned char)a[1]) : isdigit((unsigned char)a[0]);
      char *end;
      errno = 0;
      const long long pos = digits ? strtoll(a, &end, 10) : -1;
      if (!digits || errno || *end || pos < 0) {
        problem p;
        problem_set(&p, P_BAD_QUERY, "after", "after must be a log position (an integer >= 0, from a write's "
                    "Focald-Log-Position), not \"%.64s\"", a);
        return http__answer_problem(conn, rq, &p);
      }
      if (logwait_applied() < pos) {
        /* suspended until this node has applied pos, or --read-wait passes (logwait.h) */
        rq->after = pos;
        rq->finish = finish_after_wait;
        http_suspend(rq);
        logwait_add(rq, pos, http__now_s() + http__cfg->read_wait / 1e3);
        return MHD_YES;
      }
    }
  }
  return run_handler(conn, rq, ri);
}

/* libmicrohttpd's access handler: sends each call to its phase. Its closure is &health_only on the
 * health listener. */
static enum MHD_Result access_handler(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                      const char *version, const char *upload_data, size_t *upload_data_size,
                                      void **con_cls) {
  (void)version;
  http_req *rq = *con_cls;
  if (!rq) {
    rq = calloc(1, sizeof *rq);
    if (!rq) return MHD_NO;
    *con_cls = rq;
    atomic_fetch_add(&active_requests, 1);
    rq->t0 = http__now_s();
    rq->method = method;
    rq->path = url;
    rq->conn = conn;
    rq->body_head_len = -1;
    rq->route_index = -1;
    watchdog_request(conn, 1);
    new_request_id(rq, conn);
    return begin_request(cls == &health_only, conn, rq);
  }
  if (*upload_data_size != 0) {
    size_t n = *upload_data_size;
    *upload_data_size = 0;
    return http__receive_body(conn, rq, upload_data, n);
  }
  return complete_request(conn, rq);
}


void http_suspend(http_req *rq) {
  rq->state = RQ_SUSPENDED;
  MHD_suspend_connection(rq->conn);
}

void http_complete(http_req *rq) {
  rq->state = RQ_COMPLETE;
  MHD_resume_connection(rq->conn);
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe) {
  (void)cls;
  http_req *rq = *con_cls;
  if (!rq) return;
  watchdog_request(conn, 0);
  double secs = http__now_s() - rq->t0;
  /* 499: the client went away before its answer, or the answer did not go out whole (a stream cut short,
   * by the client or by focald): a 200 in the log and the metrics would say an export was delivered */
  int status = rq->state == RQ_ANSWERED && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? rq->status : 499;
  if (rq->state == RQ_ANSWERED && rq->status >= 400) status = rq->status; /* a refusal counts as what it was */
  http__record(rq->route_index, status, secs);
  log_request(rq->request_id, rq->method, rq->route ? rq->route : rq->path, status, secs * 1e3, rq->len);
  if (rq->cleanup) rq->cleanup(rq); /* before the body: a request's tensors may point into it */
  free(rq->buf_base);
  http__body_release(rq);
  free(rq);
  *con_cls = NULL;
  atomic_fetch_sub(&active_requests, 1);
}

int http_wait_idle(int timeout_ms) {
  const double until = http__now_s() + timeout_ms / 1e3;
  while (atomic_load(&active_requests) > 0) {
    if (http__now_s() >= until) return -1;
    struct timespec nap = {0, 2000000};
    nanosleep(&nap, NULL);
  }
  return 0;
}


/* Routing works on the raw URL; values are decoded one by one (see the file header). */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
  (void)cls;
  (void)c;
  return strlen(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* libmicrohttpd's last message: why a listener could not be started (a certificate it cannot use, a thread it
 * could not create) is said there, at debug, and the error that follows repeats it. */
static char mhd_last[512];
static pthread_mutex_t mhd_last_lock = PTHREAD_MUTEX_INITIALIZER;

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  log_kv(LOG_DEBUG, "libmicrohttpd", "detail", msg, NULL);
  pthread_mutex_lock(&mhd_last_lock);
  memcpy(mhd_last, msg, n + 1);
  pthread_mutex_unlock(&mhd_last_lock);
}

/* The port of an address: libmicrohttpd binds the one MHD_OPTION_SOCK_ADDR gives, and names this one in its
 * messages. */
static uint16_t addr_port(const struct sockaddr_storage *ss) {
  return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
                                         : ((const struct sockaddr_in *)ss)->sin_port);
}

/* How libmicrohttpd's messages begin when it could not create one of its threads: it tells us in words only. */
static const char *const mhd_thread_failures[] = {
    "Failed to create a new thread ", "Failed to create a new pool thread ", "Failed to create listen thread",
    "Failed to create pool thread", "Failed to create a thread"};

/* Logs that a listener could not be started, with libmicrohttpd's reason; when that reason is a thread it could
 * not create, logs it as every thread focald cannot start is logged, naming thread. */
static void log_start_failure(const char *msg, const char *key, const char *addr, const char *thread) {
  char why[sizeof mhd_last];
  pthread_mutex_lock(&mhd_last_lock);
  memcpy(why, mhd_last, sizeof why);
  pthread_mutex_unlock(&mhd_last_lock);
  for (size_t i = 0; i < sizeof mhd_thread_failures / sizeof mhd_thread_failures[0]; i++)
    if (strncmp(why, mhd_thread_failures[i], strlen(mhd_thread_failures[i])) == 0) {
      log_kv(LOG_ERROR, "cannot start a thread", "thread", thread, key, addr, "error", why, NULL);
      return;
    }
  log_kv(LOG_ERROR, msg, key, addr, "detail", why[0] ? why : "libmicrohttpd gave no reason", NULL);
}

static char *tls_cert_pem, *tls_key_pem;


/* The whole of a small file, NUL-terminated; malloc'd, or NULL. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *b = NULL;
  size_t n = 0, cap = 0;
  for (;;) {
    if (cap - n < 4097) {
      char *nb = realloc(b, cap ? cap * 2 : 8192);
      if (!nb) break;
      b = nb;
      cap = cap ? cap * 2 : 8192;
    }
    size_t got = fread(b + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0) break;
  }
  const int err = ferror(f) || !b || n > (1u << 20);
  fclose(f);
  if (err) {
    free(b);
    return NULL;
  }
  b[n] = '\0';
  return b;
}

void http_set_readiness(int state) {
  atomic_store(&readiness, state);
}

int http_readiness(void) {
  return atomic_load(&readiness);
}

/* The health listener's answer to a path that is not a probe's, naming the probe routes' paths
 * ("... answers /livez and /readyz only"). */
static void name_probes(char *out, size_t n) {
  int nprobes = 0, k = 0;
  for (int i = 0; i < http__nroutes; i++) nprobes += (http__routes[i].flags & ROUTE_PROBE) != 0;
  size_t l = (size_t)snprintf(out, n, "this listener (--health-listen) answers ");
  for (int i = 0; i < http__nroutes && l < n; i++) {
    if (!(http__routes[i].flags & ROUTE_PROBE)) continue;
    const char *sep = k == 0 ? "" : k == nprobes - 1 ? " and " : ", ";
    l += (size_t)snprintf(out + l, n - l, "%s%s", sep, http__routes[i].pattern);
    k++;
  }
  if (l < n) snprintf(out + l, n - l, " only");
}

/* The listening sockets http_bind made, until http_start hands them to libmicrohttpd (which then owns them). */
static int listen_fd = -1, health_fd = -1;

/* A socket bound to addr and listening, non-blocking (libmicrohttpd's threads share it), or -1 with errno set.
 * An IPv6 address is that address only, as libmicrohttpd's own IPv6 sockets are. */
static int bind_one(const struct sockaddr_storage *addr, socklen_t len, int v6) {
  const int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  const int on = 1;
  int rc = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (rc == 0 && v6) rc = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
  if (rc == 0) rc = bind(fd, (const struct sockaddr *)addr, len);
  if (rc == 0) rc = listen(fd, SOMAXCONN);
  if (rc != 0) {
    const int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

/* Forgets the TLS certificate and key, wiping the key's bytes. */
static void tls_forget(void) {
  free(tls_cert_pem);
  if (tls_key_pem) explicit_bzero(tls_key_pem, strlen(tls_key_pem));
  free(tls_key_pem);
  tls_cert_pem = tls_key_pem = NULL;
}

/* Reads --tls-cert and --tls-key into tls_cert_pem and tls_key_pem, and checks that GnuTLS (libmicrohttpd's
 * TLS) takes them as a certificate and its key: with http_bind, before the database is opened, so that a file
 * that is missing, unreadable, not PEM, or a key of another certificate stops focald at once with the
 * database untouched (it used to be found when the server started, the database created or migrated by then).
 * 0, or -1 (logged). */
static int tls_load(const config *cfg) {
  if (!cfg->tls_cert[0]) return 0;
  if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
    log_kv(LOG_ERROR, "this libmicrohttpd has no TLS support", NULL);
    return -1;
  }
  const char *bad = NULL;
  if (!(tls_cert_pem = read_file(cfg->tls_cert))) bad = cfg->tls_cert;
  else if (!(tls_key_pem = read_file(cfg->tls_key))) bad = cfg->tls_key;
  if (bad) {
    log_kv(LOG_ERROR, "cannot read the TLS certificate or key", "file", bad, "error", strerror(errno), NULL);
    tls_forget();
    return -1;
  }
  gnutls_certificate_credentials_t cred = NULL;
  const gnutls_datum_t cert = {(unsigned char *)tls_cert_pem, (unsigned)strlen(tls_cert_pem)},
                       key = {(unsigned char *)tls_key_pem, (unsigned)strlen(tls_key_pem)};
  int rc = gnutls_certificate_allocate_credentials(&cred);
  if (rc == 0) rc = gnutls_certificate_set_x509_key_mem(cred, &cert, &key, GNUTLS_X509_FMT_PEM);
  if (cred) gnutls_certificate_free_credentials(cred);
  if (rc < 0) {
    log_kv(LOG_ERROR, "the TLS certificate and key cannot be used", "cert", cfg->tls_cert, "key", cfg->tls_key,
           "error", gnutls_strerror(rc), NULL);
    tls_forget();
    return -1;
  }
  return 0;
}

int http_bind(const config *cfg) {
  if (listen_fd >= 0) return 0;
  if (tls_load(cfg) != 0) return -1;
  listen_fd = bind_one(&cfg->listen_addr, cfg->listen_addrlen, cfg->listen_v6);
  if (listen_fd < 0) {
    log_kv(LOG_ERROR, "cannot listen", "listen", cfg->listen, "error", strerror(errno), NULL);
    tls_forget();
    return -1;
  }
  if (cfg->health_listen[0]) {
    health_fd = bind_one(&cfg->health_addr, cfg->health_addrlen, cfg->health_v6);
    if (health_fd < 0) {
      log_kv(LOG_ERROR, "cannot listen for health probes", "health_listen", cfg->health_listen, "error",
             strerror(errno), NULL);
      close(listen_fd);
      listen_fd = -1;
      tls_forget();
      return -1;
    }
  }
  return 0;
}

int http_start(const config *cfg, const router_route *routes, int nroutes) {
  http__cfg = cfg;
  char why[200];
  if (http__metrics_init(nroutes) != 0) return -1; /* more routes than the metrics have room for (logged) */
  if (router_check(routes, nroutes, why, sizeof why) != 0) {
    log_kv(LOG_ERROR, "the route table is not valid", "detail", why, NULL);
    return -1;
  }
  http__routes = routes;
  http__nroutes = nroutes;
  name_probes(health_refusal, sizeof health_refusal);
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  id_seed = (uint64_t)t.tv_nsec * 0x2545f4914f6cdd1dull ^ (uint64_t)t.tv_sec;
  if (http_bind(cfg) != 0) return -1;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (cfg->listen_v6) flags |= MHD_USE_IPv6;
  /* read and checked by http_bind, and held until http_stop: the daemon reads them while it runs */
  const char *cert = tls_cert_pem, *key = tls_key_pem;
  if (cert) flags |= MHD_USE_TLS;
  if (!cfg->token[0] && !config_listen_is_loopback(cfg->listen))
    log_kv(LOG_WARN, "listening beyond loopback without a token (--insecure-no-token): anyone who can reach the port can "
           "read, change and delete the data", "listen", cfg->listen, NULL);
  /* without TLS the two key options are skipped: MHD_OPTION_END ends the list early, so they come last */
  daemon_ = MHD_start_daemon(
      /* the logger first: libmicrohttpd writes what comes before it to stderr itself, not as a JSON line */
      flags, addr_port(&cfg->listen_addr), NULL, NULL, access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
      NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)listen_fd,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)cfg->connection_timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      /* reads of up to 256 KiB: a binary batch of megabytes arrives in few calls (this also bounds the headers) */
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)(64 * 1024),
      MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, watchdog_notify, NULL,
      MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
  if (!daemon_) {
    log_start_failure("cannot start the HTTP server", "listen", cfg->listen, "HTTP pool");
    listen_fd = -1; /* whether libmicrohttpd closed it is its own affair: focald exits */
    http_stop();
    return -1;
  }
  listen_fd = -1; /* the daemon's, closed by MHD_stop_daemon */
  if (cfg->health_listen[0]) {
    /* one thread, plain HTTP (probes come from the node), short-lived connections: a probe is one request */
    health_daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (cfg->health_v6 ? MHD_USE_IPv6 : 0),
        addr_port(&cfg->health_addr), NULL, NULL, access_handler, &health_only, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
        NULL, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)health_fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)5,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_END);
    if (!health_daemon) {
      log_start_failure("cannot start the health listener", "health_listen", cfg->health_listen, "health listener");
      health_fd = -1;
      http_stop();
      return -1;
    }
    health_fd = -1; /* the health daemon's */
  }
  logwait_init(wake_reader);
  /* without it slow clients (slowloris) would hold connection slots for as long as they like */
  if (watchdog_start(cfg->connection_timeout, (long long)cfg->min_body_rate, http__maybe_trim) != 0) {
    log_kv(LOG_ERROR, "cannot start a thread", "thread", "watchdog", "error", strerror(errno), NULL);
    http_stop();
    return -1;
  }
  return 0;
}

void http_stop(void) {
  watchdog_stop();
  if (health_daemon) MHD_stop_daemon(health_daemon);
  health_daemon = NULL;
  if (daemon_) MHD_stop_daemon(daemon_);
  daemon_ = NULL;
  /* sockets bound but never handed to a daemon */
  if (listen_fd >= 0) close(listen_fd);
  if (health_fd >= 0) close(health_fd);
  listen_fd = health_fd = -1;
  tls_forget();
}
