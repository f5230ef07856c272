/* http.c — libmicrohttpd glue: limits, body accumulation, auth, suspend/resume, logs, metrics.
 *
 * libmicrohttpd has no body limit and no timeouts by default, and binds every
 * address unless told otherwise: all three are set here from the config. The
 * URL is routed undecoded (the unescape callback is a no-op) so that an id
 * containing %2F stays one path segment; each segment and query value is
 * percent-decoded on its own (router.c). The routes are data given to
 * http_start: this file knows no route, only the flags and fields a route
 * states (router.h).
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <malloc.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "log.h"
#include "jsonstr.h"
#include "metrics.h"
#include "router.h"
#include "logwait.h"
#include "watchdog.h"

enum { RQ_RECEIVING = 0, RQ_SUSPENDED, RQ_COMPLETE, RQ_ANSWERED };

static struct MHD_Daemon *daemon_;
/* --health-listen: a second listener with slots of its own for the probe routes. Its access
 * handler's closure is &health_only, the data listener's NULL. */
static struct MHD_Daemon *health_daemon;
static int health_only;
static char health_refusal[200]; /* what it answers to another path: it names the probes' paths */
static const config *cfg_; /* main's, which outlives the HTTP threads */
static const router_route *routes_; /* the table given to http_start, which outlives the HTTP threads */
static int nroutes_;
static atomic_int readiness;
static atomic_int active_requests; /* begun and not yet reported complete by libmicrohttpd */
static atomic_ullong request_counter;
static uint64_t id_seed;

/* ------------------------------------------------------------------ small helpers */

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}


const char *http_request_header(http_req *rq, const char *name) {
  return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *rq, const char *name, char *text, size_t n) {
  const char *raw = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
  if (!raw) return NULL;
  if (router_pct_decode(raw, strlen(raw), text, n, 1) != 0) return "";
  return text;
}

/* ------------------------------------------------------------------ responses */

/* The answer when memory ran out building another: a problem that needs no allocation. */
static const char oom_problem[] = "{\"type\":\"urn:focald:problem:internal\",\"title\":\"Internal error\",\"status\":500,"
                                  "\"detail\":\"out of memory building the response\",\"code\":\"internal\"}";

static int out_of_memory(http_resp *out) {
  out->status = 500;
  out->content_type = "application/problem+json";
  out->body = NULL;
  out->len = 0;
  out->nheaders = 0;
  return 0;
}

int http_json(http_resp *out, int status, char *body) {
  if (!body) return out_of_memory(out);
  out->status = status;
  out->content_type = "application/json";
  out->body = body;
  out->len = strlen(body);
  return 0;
}

int http_text(http_resp *out, int status, const char *content_type, const char *text) {
  out->status = status;
  out->content_type = content_type;
  out->body = strdup(text);
  if (!out->body) return out_of_memory(out);
  out->len = strlen(out->body);
  return 0;
}

void http_header(http_resp *out, const char *name, const char *value) {
  if (out->nheaders >= HTTP_MAX_HEADERS) return;
  snprintf(out->headers[out->nheaders][0], sizeof out->headers[0][0], "%s", name);
  snprintf(out->headers[out->nheaders][1], sizeof out->headers[0][1], "%s", value);
  out->nheaders++;
}

static void buf_sink(void *ctx, const char *p, size_t n) {
  buf_append(ctx, p, n);
}

/* A JSON string literal for s (escaped, valid UTF-8), appended to the buffer. */
static void put_json_string(buf *b, const char *s) {
  jsonstr_write(s, buf_sink, b);
}

int http_problem(http_resp *out, const http_req *rq, const problem *p) {
  buf b = {0};
  int status = problem_status(p->code);
  buf_printf(&b, "{\"type\":\"urn:focald:problem:%s\",\"title\":", problem_name(p->code));
  put_json_string(&b, problem_title(p->code));
  buf_printf(&b, ",\"status\":%d,\"detail\":", status);
  put_json_string(&b, p->detail);
  buf_printf(&b, ",\"code\":\"%s\"", problem_name(p->code));
  if (p->field[0]) {
    buf_lit(&b, ",\"field\":");
    put_json_string(&b, p->field);
  }
  buf_printf(&b, ",\"request_id\":\"%s\"}", rq ? rq->request_id : "");
  out->status = status;
  out->content_type = "application/problem+json";
  out->body = buf_take(&b, &out->len);
  if (!out->body) return out_of_memory(out);
  if (status == 503) http_header(out, "Retry-After", "1");
  if (status == 401) http_header(out, "WWW-Authenticate", "Bearer realm=\"focald\"");
  return 0;
}

/* ------------------------------------------------------------------ metrics */

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                        0.1,    0.25,  0.5,    1.0,   2.5,  10.0};
static const int tracked_status[] = {200, 201, 204, 400, 401, 404, 405, 409, 411, 413, 415, 422, 431, 500, 503, 507, 0};
#define NSTATUS (sizeof tracked_status / sizeof tracked_status[0])
#define MAX_ROUTES 40

typedef struct route_stats {
  atomic_ullong count[NSTATUS];
  metrics_hist latency;
} route_stats;

static route_stats rstats[MAX_ROUTES + 1]; /* the last: unmatched requests */

static void record(int route, int status, double seconds) {
  route_stats *r = &rstats[route >= 0 && route < MAX_ROUTES ? route : MAX_ROUTES];
  size_t si = NSTATUS - 1;
  for (size_t i = 0; i + 1 < NSTATUS; i++)
    if (tracked_status[i] == status) si = i;
  atomic_fetch_add(&r->count[si], 1);
  metrics_hist_observe(&r->latency, seconds);
}

static int64_t body_memory_reserved(void);

void http_metrics_write(buf *o) {
  buf_printf(o,
             "# HELP focald_http_requests_total HTTP requests answered, by route, method and status.\n"
             "# TYPE focald_http_requests_total counter\n");
  for (int r = 0; r <= MAX_ROUTES; r++) {
    if (r < MAX_ROUTES && r >= nroutes_) r = MAX_ROUTES; /* then the unmatched requests' slot */
    const char *pat = r < MAX_ROUTES ? routes_[r].pattern : "unmatched";
    const char *method = r < MAX_ROUTES ? routes_[r].method : "";
    for (size_t s = 0; s < NSTATUS; s++) {
      unsigned long long n = atomic_load(&rstats[r].count[s]);
      if (!n) continue;
      if (tracked_status[s]) buf_printf(o, "focald_http_requests_total{route=\"%s\",method=\"%s\",status=\"%d\"} %llu\n", pat, method, tracked_status[s], n);
      else buf_printf(o, "focald_http_requests_total{route=\"%s\",method=\"%s\",status=\"other\"} %llu\n", pat, method, n);
    }
  }
  buf_printf(o,
             "# HELP focald_http_request_duration_seconds Time from the request's first byte to the response, by route.\n"
             "# TYPE focald_http_request_duration_seconds histogram\n");
  for (int r = 0; r <= MAX_ROUTES; r++) {
    if (r < MAX_ROUTES && r >= nroutes_) r = MAX_ROUTES;
    if (!metrics_hist_count(&rstats[r].latency)) continue;
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\"", r < MAX_ROUTES ? routes_[r].pattern : "unmatched",
             r < MAX_ROUTES ? routes_[r].method : "");
    metrics_hist_write(o, "focald_http_request_duration_seconds", labels, &rstats[r].latency);
  }
}

void http_body_metrics_write(buf *o) {
  buf_printf(o,
             "# HELP focald_body_memory_reserved_bytes Memory reserved by the request bodies in flight, as estimated "
             "against --body-memory.\n"
             "# TYPE focald_body_memory_reserved_bytes gauge\n"
             "focald_body_memory_reserved_bytes %lld\n"
             "# HELP focald_body_memory_limit_bytes --body-memory.\n"
             "# TYPE focald_body_memory_limit_bytes gauge\n"
             "focald_body_memory_limit_bytes %lld\n",
             (long long)body_memory_reserved(), (long long)cfg_->body_memory);
}

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

/* libmicrohttpd's content reader over an http_stream_fn. */
typedef struct stream_state {
  http_stream_fn fn;
  void *cls;
  void (*free_fn)(void *cls);
  const char *trailer;
  http_trailer_fn trailer_value;
  struct MHD_Response *resp; /* borrowed: libmicrohttpd holds it while it reads the stream */
} stream_state;

/* libmicrohttpd writes a chunked response's footers (MHD_FOOTER_KIND entries)
 * after the reader reports the end of the stream, so a trailer added on that
 * last call goes out; the response belongs to this one connection and its
 * thread, which is the one calling. */
static ssize_t stream_read(void *cls, uint64_t pos, char *text, size_t max) {
  (void)pos;
  stream_state *st = cls;
  long n = st->fn(st->cls, text, max);
  if (n == 0 && st->trailer && st->trailer_value) {
    char value[64];
    if (st->trailer_value(st->cls, value, sizeof value) == 0 && MHD_add_response_footer(st->resp, st->trailer, value) != MHD_YES)
      return MHD_CONTENT_READER_END_WITH_ERROR; /* a trailer the response declared cannot be left out silently */
  }
  if (n == 0) return MHD_CONTENT_READER_END_OF_STREAM;
  if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
  return (ssize_t)n;
}

static void stream_done(void *cls) {
  stream_state *st = cls;
  if (st->free_fn) st->free_fn(st->cls);
  free(st);
}

static enum MHD_Result respond(struct MHD_Connection *conn, http_req *rq, http_resp *out) {
  struct MHD_Response *resp;
  if (out->stream) {
    stream_state *st = malloc(sizeof *st);
    if (!st) {
      if (out->stream_free) out->stream_free(out->stream_cls);
      return MHD_NO;
    }
    *st = (stream_state){out->stream, out->stream_cls, out->stream_free, out->trailer, out->trailer_value, NULL};
    resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 64 * 1024, stream_read, st, stream_done);
    if (!resp) {
      stream_done(st);
      return MHD_NO;
    }
    st->resp = resp;
    if (out->trailer) MHD_add_response_header(resp, "Trailer", out->trailer);
  } else if (out->body) {
    resp = MHD_create_response_from_buffer(out->len, out->body, MHD_RESPMEM_MUST_FREE);
  } else {
    /* only the out-of-memory problem has no body of its own (http_json, http_problem) */
    out->status = 500;
    out->content_type = "application/problem+json";
    resp = MHD_create_response_from_buffer(sizeof oom_problem - 1, (void *)oom_problem, MHD_RESPMEM_PERSISTENT);
  }
  if (!resp) {
    free(out->body);
    return MHD_NO;
  }
  if (out->content_type) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, out->content_type);
  MHD_add_response_header(resp, "X-Request-Id", rq->request_id);
  int64_t behind = 0;
  const int known = logwait_behind(&behind);
  if (known) {
    char v[24];
    snprintf(v, sizeof v, known > 0 ? "%lld" : "unknown", (long long)behind);
    MHD_add_response_header(resp, "Focald-Log-Behind", v);
  }
  for (int i = 0; i < out->nheaders; i++) MHD_add_response_header(resp, out->headers[i][0], out->headers[i][1]);
  rq->status = out->status;
  rq->state = RQ_ANSWERED;
  enum MHD_Result r = MHD_queue_response(conn, (unsigned)out->status, resp);
  MHD_destroy_response(resp);
  /* refused in the middle of an upload: the connection is closed without an answer */
  if (r != MHD_YES) rq->state = RQ_RECEIVING;
  return r;
}

/* Answers a problem of code with detail; Accept-Post goes with a 415, listing the bodies the route takes. */
static enum MHD_Result send_problem(struct MHD_Connection *conn, http_req *rq, problem_code code, const char *detail) {
  problem p;
  http_resp out = {0};
  problem_set(&p, code, NULL, "%s", detail);
  http_problem(&out, rq, &p);
  if (code == P_UNSUPPORTED_MEDIA_TYPE) {
    const int ri = rq->route_index;
    const int binary = ri >= 0 && (routes_[ri].flags & ROUTE_BODY_BINARY);
    http_header(&out, "Accept-Post", binary ? "application/json, application/octet-stream" : "application/json");
  }
  return respond(conn, rq, &out);
}

/* Answers the problem p (which names its own field). */
static enum MHD_Result answer_problem(struct MHD_Connection *conn, http_req *rq, const problem *p) {
  http_resp out = {0};
  http_problem(&out, rq, p);
  return respond(conn, rq, &out);
}

/* Whether a route reads the data: GET routes with ROUTE_DATA take after=POSITION besides their own. */
static int reads_data(const router_route *route) {
  return (route->flags & ROUTE_DATA) && strcmp(route->method, "GET") == 0;
}

/* The query's parameters checked against those the route takes: a parameter the route does not
 * know (a misspelt `oder=asc` would otherwise be ignored silently) or one given twice (which value
 * would count?) is refused, naming it. */
typedef struct query_check {
  const char *allowed; /* space-separated */
  uint32_t seen;       /* bit per allowed name */
  const char *bad;
  int repeated;
  int malformed; /* 1: not decodable within HTTP_QUERY_MAX; 2: no value at all */
} query_check;

static enum MHD_Result check_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  query_check *q = cls;
  size_t kl = strlen(key);
  int i = 0;
  for (const char *p = q->allowed; *p; i++) {
    size_t n = strcspn(p, " ");
    if (n == kl && n > 0 && memcmp(p, key, n) == 0) {
      if (q->seen & (1u << i)) {
        q->bad = key;
        q->repeated = 1;
        return MHD_NO;
      }
      q->seen |= 1u << i;
      char text[HTTP_QUERY_MAX];
      if (!value || router_pct_decode(value, strlen(value), text, sizeof text, 1) != 0) {
        q->bad = key;
        q->malformed = value ? 1 : 2;
        return MHD_NO;
      }
      return MHD_YES;
    }
    p += n;
    p += strspn(p, " ");
  }
  q->bad = key;
  return MHD_NO;
}

/* Whether the content type is one the route takes. */
static int content_type_ok(const char *ct, unsigned flags) {
  if (!ct) return 0;
  size_t n = strcspn(ct, ";");
  while (n > 0 && ct[n - 1] == ' ') n--;
  if (n == 16 && strncasecmp(ct, "application/json", 16) == 0) return 1;
  if ((flags & ROUTE_BODY_BINARY) && n == 24 && strncasecmp(ct, "application/octet-stream", 24) == 0) return 1;
  return 0;
}

/* ------------------------------------------------------------------ memory of bodies in flight
 *
 * A JSON body costs far more than its size while it is decoded (a jansson value
 * for every number, the decoded tensors, the answer): about 10 times, measured
 * on large /v1/loss bodies; a binary body about twice (its buffer and the
 * answer). Requests reserve that estimate against --body-memory when their
 * length is known (Content-Length) or as a chunked body grows, and give it back
 * when they end. A request that would pass the budget gets 503 overloaded,
 * unless nothing else is reserved: a body within --max-body is always served
 * alone.
 *
 * Freed memory goes back to glibc's heaps, whose free tops past main.c's
 * TRIM_THRESHOLD are returned to the system as they form. What is free below
 * live blocks stays: once no large body has been in flight for BODY_TRIM_IDLE
 * seconds, the watchdog asks glibc to give those pages back too (malloc_trim),
 * so a burst of large requests does not leave the sidecar at its peak. */

static _Atomic int64_t body_memory_used;
static _Atomic int trim_wanted;       /* a large body ended since the last trim */
static _Atomic int64_t large_ended_ns; /* when the last one ended */

#define BODY_TRIM_BYTES (1 << 20) /* bodies at least this large count as large */
#define BODY_TRIM_IDLE 1.0

static int64_t body_cost(const http_req *rq, uint64_t len) {
  const int binary = rq->content_type && strncasecmp(rq->content_type, "application/octet-stream", 24) == 0;
  return (int64_t)len * (binary ? 2 : 10);
}

/* Grows rq's reservation to the cost of len body bytes; 0, or -1 when the budget would be passed. */
static int body_reserve(http_req *rq, uint64_t len) {
  const int64_t want = body_cost(rq, len);
  if (want <= rq->reserved) return 0;
  const int64_t more = want - rq->reserved;
  int64_t used = atomic_load(&body_memory_used);
  do {
    if (used - rq->reserved > 0 && used + more > cfg_->body_memory) return -1;
  } while (!atomic_compare_exchange_weak(&body_memory_used, &used, used + more));
  rq->reserved = want;
  return 0;
}

static int64_t body_memory_reserved(void) {
  return atomic_load(&body_memory_used);
}

static void body_release(http_req *rq) {
  if (rq->reserved) atomic_fetch_sub(&body_memory_used, rq->reserved);
  rq->reserved = 0;
  if (rq->len >= BODY_TRIM_BYTES || rq->cap >= BODY_TRIM_BYTES) {
    atomic_store(&large_ended_ns, (int64_t)(now_s() * 1e9));
    atomic_store(&trim_wanted, 1);
  }
}

/* On the watchdog: returns free heap pages once large bodies have stopped coming for a while. */
static void maybe_trim(double now) {
  logwait_expire(now); /* reads whose after= was not reached within --read-wait */
  if (!atomic_load(&trim_wanted) || atomic_load(&body_memory_used) > 0) return;
  if (now - (double)atomic_load(&large_ended_ns) / 1e9 < BODY_TRIM_IDLE) return;
  atomic_store(&trim_wanted, 0);
  malloc_trim(0);
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

/* The headers that decide how a request is read and whose it is: how many of each (a route's
 * head_header counted as one), the last Transfer-Encoding, and whether a field name has whitespace in it. */
typedef struct framing {
  int content_length, transfer_encoding, head_header, authorization;
  int spaced_name;
  const char *coding;
  const char *head_name; /* the route table's spelling of the head_header seen */
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  framing *f = cls;
  if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) f->content_length++;
  if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
    f->transfer_encoding++;
    f->coding = value;
  }
  const char *head = router_head_header(routes_, nroutes_, key);
  if (head) {
    f->head_header++;
    f->head_name = head;
  }
  if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0) f->authorization++;
  if (strpbrk(key, " \t")) f->spaced_name = 1;
  return MHD_YES;
}

/* Why the request's framing is ambiguous (RFC 9112 section 6), or NULL when it is not: two lengths, a
 * length and a chunked coding, or a coding other than chunked could each be read two ways by two
 * servers in a row, which is how requests are smuggled. So could a field name with whitespace before
 * its colon ("Transfer-Encoding : chunked"), which RFC 9112 section 5.1 requires a server to refuse
 * with 400: a lenient proxy in front may read it as the header this server would not. Two binary
 * header lengths (a route's head_header, such as Inference-Header-Content-Length) or two credentials
 * leave which one counts to chance. */
static const char *framing_problem(struct MHD_Connection *conn, char *why, size_t n) {
  framing f = {0};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
  if (f.spaced_name) return "a header field name has whitespace in it (or before its colon)";
  if (f.content_length > 1) return "the request has more than one Content-Length";
  if (f.transfer_encoding > 1) return "the request has more than one Transfer-Encoding";
  if (f.transfer_encoding && f.content_length) return "the request has both Content-Length and Transfer-Encoding";
  if (f.transfer_encoding && strcasecmp(f.coding, "chunked") != 0)
    return "Transfer-Encoding must be chunked; other codings are not accepted";
  if (f.head_header > 1) {
    snprintf(why, n, "the request has more than one %s", f.head_name);
    return why;
  }
  if (f.authorization > 1) return "the request has more than one Authorization";
  return NULL;
}

int http_token_matches(const char *token, const char *header) {
  static const char scheme[] = "Bearer ";
  if (!header || strncasecmp(header, scheme, sizeof scheme - 1) != 0) return 0;
  const char *given = header + sizeof scheme - 1;
  const size_t gl = strlen(given), tl = strlen(token);
  unsigned char diff = gl != tl;
  for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(token[i] ^ (i < gl ? given[i] : 0));
  return diff == 0;
}

/* Whether the request may go on: no token is configured, every route of its path is a health probe or
 * open (the console's static files: a browser loads a page without an Authorization header; the console
 * then asks for the token and sends it with every API call), or the token matches. */
static int authorized(struct MHD_Connection *conn, unsigned path_flags) {
  if (!cfg_->token[0] || (path_flags & (ROUTE_PROBE | ROUTE_OPEN))) return 1;
  return http_token_matches(cfg_->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
}

/* ------------------------------------------------------------------ the request's phases
 *
 * libmicrohttpd calls the access handler once with the headers (no body yet),
 * once per piece of the body, and once more when the body is complete (again
 * after a resume). Each call goes to its phase: begin_request decides from the
 * headers alone what can be decided (route, token, query, path parameters,
 * body type and size) and prepares the body's buffer; receive_body keeps the
 * body, counting and dropping what passes the limits; complete_request runs
 * the handler, or builds the answer of one that was suspended. */

/* The query problem of the request's route, in *p: a parameter the route does not take, one given
 * twice, one without a value or that cannot be decoded. Returns 1 when there is one, else 0. */
static int query_problem(struct MHD_Connection *conn, const router_route *route, problem *p /* OUT */) {
  /* a read of the data takes after=POSITION too (logwait.h) */
  char takes[512];
  snprintf(takes, sizeof takes, "%s%s%s", route->query, route->query[0] && reads_data(route) ? " " : "",
           reads_data(route) ? "after" : "");
  query_check qc = {.allowed = takes};
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, check_query_arg, &qc);
  if (!qc.bad) return 0;
  if (qc.repeated)
    problem_set(p, P_BAD_QUERY, qc.bad, "the query parameter \"%.64s\" is given more than once", qc.bad);
  else if (qc.malformed == 2)
    problem_set(p, P_BAD_QUERY, qc.bad, "the query parameter \"%.64s\" has no value (write %.64s=...)", qc.bad, qc.bad);
  else if (qc.malformed)
    problem_set(p, P_BAD_QUERY, qc.bad,
                "the query parameter \"%.64s\" is not valid percent-encoding, or is longer than %d bytes decoded", qc.bad,
                HTTP_QUERY_MAX - 1);
  else if (takes[0])
    problem_set(p, P_BAD_QUERY, qc.bad, "unknown query parameter \"%.64s\"; this route takes: %s", qc.bad, takes);
  else
    problem_set(p, P_BAD_QUERY, qc.bad, "unknown query parameter \"%.64s\"; this route takes none", qc.bad);
  return 1;
}

/* The body's headers checked against what the route takes (type, length, --max-body, --body-memory),
 * and its buffer allocated when its length is known. Returns MHD_YES to read the body, or answers. */
static enum MHD_Result begin_body(struct MHD_Connection *conn, http_req *rq, const router_route *route) {
  const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  rq->content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  if (!content_type_ok(rq->content_type, route->flags))
    return send_problem(conn, rq, P_UNSUPPORTED_MEDIA_TYPE,
                        (route->flags & ROUTE_BODY_BINARY)
                            ? "the body must be application/json or application/octet-stream (binary tensors)"
                            : "the body must be application/json");
  const char *head = route->head_header ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, route->head_header) : NULL;
  if (head) {
    char *end;
    long long v = strtoll(head, &end, 10);
    rq->body_head_len = (*end || v < 0) ? -2 : v;
  }
  if (!cl) {
    if (rq->content_type && strncasecmp(rq->content_type, "application/octet-stream", 24) == 0)
      return send_problem(conn, rq, P_LENGTH_REQUIRED, "a binary body needs a Content-Length");
    return MHD_YES;
  }
  char *end;
  unsigned long long v = strtoull(cl, &end, 10);
  if (*end || v > (unsigned long long)cfg_->max_body) {
    char d[160];
    snprintf(d, sizeof d, "the body is %s bytes; the limit is %lld (--max-body)", cl, (long long)cfg_->max_body);
    return send_problem(conn, rq, P_BODY_TOO_LARGE, d);
  }
  if (body_reserve(rq, v) != 0) {
    char d[200];
    snprintf(d, sizeof d, "the request bodies being decoded would take more than --body-memory (%lld bytes) "
             "with this one's; retry shortly", (long long)cfg_->body_memory);
    return send_problem(conn, rq, P_OVERLOADED, d);
  }
  /* the part after the body's head is decoded in place: pad so that it starts aligned as the route asks */
  const size_t align = route->body_align;
  size_t pad = align && rq->body_head_len > 0 ? (size_t)((align - (uint64_t)rq->body_head_len % align) % align) : 0;
  rq->cap = (size_t)v;
  rq->buf_base = aligned_alloc(64, (pad + rq->cap + 1 + 63) / 64 * 64);
  if (!rq->buf_base) return send_problem(conn, rq, P_BODY_TOO_LARGE, "no memory for a body this large now");
  rq->buf = rq->buf_base + pad;
  return MHD_YES;
}

/* The header phase: rq is new. Routes it and refuses at once what its headers condemn; otherwise returns
 * MHD_YES (its body, if any, comes next). */
static enum MHD_Result begin_request(int health, struct MHD_Connection *conn, http_req *rq) {
  const char *url = rq->path, *method = rq->method;
  char why[128];
  const char *ambiguous = framing_problem(conn, why, sizeof why);
  if (ambiguous) return send_problem(conn, rq, P_BAD_REQUEST, ambiguous);
  router_match m;
  const int ri = router_find(routes_, nroutes_, method, url, &m);
  memcpy(rq->params, m.params, sizeof rq->params);
  rq->bad_param = m.bad_param;
  if (!authorized(conn, m.path_flags)) {
    /* counted and logged under the route asked for, answered alike whether it exists or not */
    if (ri >= 0) rq->route_index = ri, rq->route = routes_[ri].pattern;
    return send_problem(conn, rq, P_UNAUTHORIZED, "send the token as Authorization: Bearer <token>");
  }
  if (health && ri != -1 && !(m.path_flags & ROUTE_PROBE))
    return send_problem(conn, rq, P_NOT_FOUND, health_refusal);
  if (ri == -1) return send_problem(conn, rq, P_NOT_FOUND, "no such route; see /openapi.json");
  problem p;
  if (ri == -2) {
    http_resp out = {0};
    problem_set(&p, P_METHOD_NOT_ALLOWED, NULL, "%s is not allowed here; allowed: %s", method, m.allow);
    http_problem(&out, rq, &p);
    http_header(&out, "Allow", m.allow);
    return respond(conn, rq, &out);
  }
  const router_route *route = &routes_[ri];
  rq->route = route->pattern;
  rq->route_index = ri;
  if (query_problem(conn, route, &p)) return answer_problem(conn, rq, &p);
  if (rq->bad_param) {
    /* a name that cannot be decoded names nothing: the route says what that is (a 404, or bad_name) */
    char d[400];
    snprintf(d, sizeof d, "the path segment \"%.200s\" is not a valid name: a malformed %%-escape, an encoded NUL, or too long",
             rq->params[rq->bad_param - 1]);
    return send_problem(conn, rq, route->bad_param[rq->bad_param - 1], d);
  }
  if (route->flags & (ROUTE_BODY_JSON | ROUTE_BODY_BINARY)) return begin_body(conn, rq, route);
  return MHD_YES;
}

/* The body phase: n more bytes of rq's body, kept until the limit, then counted and dropped. */
static enum MHD_Result receive_body(struct MHD_Connection *conn, http_req *rq, const char *data, size_t n) {
  watchdog_body(conn, n, 0);
  if (rq->too_large || rq->over_budget) {
    /* libmicrohttpd answers only once the upload ends: a chunked body past the limit is read and
     * dropped so that the client gets its 413 (or 503), but no further than the limit again, then cut off */
    rq->dropped += n;
    return rq->dropped > (uint64_t)cfg_->max_body ? MHD_NO : MHD_YES;
  }
  if (rq->state != RQ_RECEIVING) return MHD_YES;
  if (rq->len + n > (size_t)cfg_->max_body) {
    rq->too_large = 1;
    rq->dropped = n;
    return MHD_YES;
  }
  if (rq->len + n > rq->cap) {
    /* a chunked body reserves its share of --body-memory as it grows */
    if (body_reserve(rq, rq->len + n) != 0) {
      rq->over_budget = 1;
      rq->dropped = n;
      free(rq->buf_base);
      rq->buf = rq->buf_base = NULL;
      rq->len = rq->cap = 0;
      return MHD_YES;
    }
    size_t want = rq->cap ? rq->cap * 2 : 65536;
    while (want < rq->len + n) want *= 2;
    if (want > (size_t)cfg_->max_body) want = (size_t)cfg_->max_body;
    /* bodies without a Content-Length (chunked JSON) grow here, unpadded */
    char *nb = realloc(rq->buf_base, want + 1);
    if (!nb) {
      rq->too_large = 1;
      return MHD_YES;
    }
    rq->buf = rq->buf_base = nb;
    rq->cap = want;
  }
  memcpy(rq->buf + rq->len, data, n);
  rq->len += n;
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
  int rc = routes_[ri].fn(rq, out);
  pthread_rwlock_unlock(&gate);
  return rc;
}

static enum MHD_Result run_handler(struct MHD_Connection *conn, http_req *rq, int ri) {
  http_resp out = {0};
  if (handle(rq, ri, &out) == HTTP_ASYNC) return MHD_YES;
  return respond(conn, rq, &out);
}

/* A read that waited for its after= position: its handler runs now, or it is answered not_caught_up.
 * Reads of the data are never asynchronous themselves. */
static int finish_after_wait(http_req *rq, http_resp *out) {
  const int64_t applied = logwait_applied();
  if (applied < rq->after) {
    problem p;
    problem_set(&p, P_NOT_CAUGHT_UP, "after", "this node has applied the log up to position %lld; %lld was not "
                "reached within %d ms (--read-wait): retry, or read from the node that took the write",
                (long long)applied, (long long)rq->after, cfg_->read_wait);
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
    return respond(conn, rq, &out);
  }
  if (rq->too_large) {
    char d[160];
    snprintf(d, sizeof d, "the body is larger than the limit of %lld bytes (--max-body)", (long long)cfg_->max_body);
    return send_problem(conn, rq, P_BODY_TOO_LARGE, d);
  }
  if (rq->over_budget) {
    char d[200];
    snprintf(d, sizeof d, "the request bodies being decoded would take more than --body-memory (%lld bytes) with "
             "this one's; retry shortly", (long long)cfg_->body_memory);
    return send_problem(conn, rq, P_OVERLOADED, d);
  }
  if (rq->buf) rq->buf[rq->len] = '\0';
  rq->body = rq->buf ? rq->buf : "";
  if (ri < 0) return send_problem(conn, rq, P_INTERNAL, "route lost");
  /* while the database loads, the data routes answer 503 starting: an answer from half a state is no answer */
  if (http_readiness() == HTTP_STARTING && (routes_[ri].flags & ROUTE_DATA))
    return send_problem(conn, rq, P_STARTING, "loading the database; retry shortly");
  if (reads_data(&routes_[ri])) {
    char text[HTTP_QUERY_MAX];
    const char *a = http_query(rq, "after", text, sizeof text);
    if (a) {
      char *end;
      errno = 0;
      const long long pos = strtoll(a, &end, 10);
      if (errno || end == a || *end || pos < 0) {
        problem p;
        problem_set(&p, P_BAD_QUERY, "after", "after must be a log position (an integer >= 0, from a write's "
                    "Focald-Log-Position), not \"%.64s\"", a);
        return answer_problem(conn, rq, &p);
      }
      if (logwait_applied() < pos) {
        /* suspended until this node has applied pos, or --read-wait passes (logwait.h) */
        rq->after = pos;
        rq->finish = finish_after_wait;
        http_suspend(rq);
        logwait_add(rq, pos, now_s() + cfg_->read_wait / 1e3);
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
    rq->t0 = now_s();
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
    return receive_body(conn, rq, upload_data, n);
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
  double secs = now_s() - rq->t0;
  int status = rq->state == RQ_ANSWERED ? rq->status : 499; /* the client went away first */
  if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && rq->state == RQ_ANSWERED && status < 400) status = rq->status;
  record(rq->route_index, status, secs);
  log_request(rq->request_id, rq->method, rq->route ? rq->route : rq->path, status, secs * 1e3, rq->len);
  if (rq->cleanup) rq->cleanup(rq); /* before the body: a request's tensors may point into it */
  free(rq->buf_base);
  body_release(rq);
  free(rq);
  *con_cls = NULL;
  atomic_fetch_sub(&active_requests, 1);
}

int http_wait_idle(int timeout_ms) {
  const double until = now_s() + timeout_ms / 1e3;
  while (atomic_load(&active_requests) > 0) {
    if (now_s() >= until) return -1;
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

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  size_t n = strlen(msg);
  while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
  log_kv(LOG_DEBUG, "libmicrohttpd", "detail", msg, NULL);
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

/* Parses host:port / [v6]:port into a socket address. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *sl, int *v6) {
  char host[128];
  const char *colon = strrchr(listen, ':');
  if (!colon) return -1;
  size_t hl = (size_t)(colon - listen);
  if (hl >= sizeof host) return -1;
  memcpy(host, listen, hl);
  host[hl] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) return -1;
  char *h = host;
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h[hl - 1] = '\0';
    h++;
  }
  if (!*h) h = "0.0.0.0";
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  char ps[16];
  snprintf(ps, sizeof ps, "%ld", port);
  if (getaddrinfo(h, ps, &hints, &res) != 0 || !res) return -1;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *sl = res->ai_addrlen;
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return 0;
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
  for (int i = 0; i < nroutes_; i++) nprobes += (routes_[i].flags & ROUTE_PROBE) != 0;
  size_t l = (size_t)snprintf(out, n, "this listener (--health-listen) answers ");
  for (int i = 0; i < nroutes_ && l < n; i++) {
    if (!(routes_[i].flags & ROUTE_PROBE)) continue;
    const char *sep = k == 0 ? "" : k == nprobes - 1 ? " and " : ", ";
    l += (size_t)snprintf(out + l, n - l, "%s%s", sep, routes_[i].pattern);
    k++;
  }
  if (l < n) snprintf(out + l, n - l, " only");
}

int http_start(const config *cfg, const router_route *routes, int nroutes) {
  cfg_ = cfg;
  char why[200];
  if (nroutes > MAX_ROUTES) {
    log_msg(LOG_ERROR, "%d routes, but the metrics have room for %d: raise MAX_ROUTES", nroutes, MAX_ROUTES);
    return -1;
  }
  if (router_check(routes, nroutes, why, sizeof why) != 0) {
    log_kv(LOG_ERROR, "the route table is not valid", "detail", why, NULL);
    return -1;
  }
  routes_ = routes;
  nroutes_ = nroutes;
  name_probes(health_refusal, sizeof health_refusal);
  for (int r = 0; r <= MAX_ROUTES; r++) { /* before any HTTP thread exists */
    rstats[r].latency.bounds = latency_bounds;
    rstats[r].latency.nbounds = (int)(sizeof latency_bounds / sizeof latency_bounds[0]);
  }
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  id_seed = (uint64_t)t.tv_nsec * 0x2545f4914f6cdd1dull ^ (uint64_t)t.tv_sec;
  struct sockaddr_storage ss;
  socklen_t sl = 0;
  int v6 = 0;
  if (parse_listen(cfg->listen, &ss, &sl, &v6) != 0) {
    log_kv(LOG_ERROR, "cannot parse the listen address (host:port)", "listen", cfg->listen, NULL);
    return -1;
  }
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
  if (v6) flags |= MHD_USE_IPv6;
  char *cert = NULL, *key = NULL;
  if (cfg->tls_cert[0]) {
    /* held until http_stop: the daemon reads them while it runs */
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      log_kv(LOG_ERROR, "this libmicrohttpd has no TLS support", NULL);
      return -1;
    }
    if (!(cert = read_file(cfg->tls_cert)) || !(key = read_file(cfg->tls_key))) {
      log_kv(LOG_ERROR, "cannot read the TLS certificate or key", "cert", cfg->tls_cert, "key", cfg->tls_key, NULL);
      free(cert);
      return -1;
    }
    flags |= MHD_USE_TLS;
  }
  if (!cfg->token[0] && !config_listen_is_loopback(cfg->listen))
    log_kv(LOG_WARN, "listening beyond loopback without a token (--insecure-no-token): anyone who can reach the port can "
           "read, change and delete the data", "listen", cfg->listen, NULL);
  /* without TLS the two key options are skipped: MHD_OPTION_END ends the list early, so they come last */
  daemon_ = MHD_start_daemon(
      flags, 0, NULL, NULL, access_handler, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
      MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->http_threads, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)cfg->connection_timeout, MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
      /* reads of up to 256 KiB: a binary batch of megabytes arrives in few calls (this also bounds the headers) */
      MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024), MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)(64 * 1024),
      MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_NOTIFY_CONNECTION, watchdog_notify, NULL,
      MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
      cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, cert, MHD_OPTION_HTTPS_MEM_KEY, key, MHD_OPTION_END);
  tls_cert_pem = cert;
  tls_key_pem = key;
  if (!daemon_) {
    log_kv(LOG_ERROR, "cannot listen (is the address in use?)", "listen", cfg->listen, NULL);
    return -1;
  }
  if (cfg->health_listen[0]) {
    struct sockaddr_storage hs;
    socklen_t hsl = 0;
    int hv6 = 0;
    if (parse_listen(cfg->health_listen, &hs, &hsl, &hv6) != 0) {
      log_kv(LOG_ERROR, "cannot parse the health listen address (host:port)", "health_listen", cfg->health_listen, NULL);
      http_stop();
      return -1;
    }
    /* one thread, plain HTTP (probes come from the node), short-lived connections: a probe is one request */
    health_daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG | (hv6 ? MHD_USE_IPv6 : 0), 0, NULL, NULL,
        access_handler, &health_only, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&hs, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)5, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024),
        MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL, MHD_OPTION_END);
    if (!health_daemon) {
      log_kv(LOG_ERROR, "cannot listen for health probes (is the address in use?)", "health_listen", cfg->health_listen, NULL);
      http_stop();
      return -1;
    }
  }
  logwait_init(wake_reader);
  if (watchdog_start(cfg->connection_timeout, (long long)cfg->min_body_rate, maybe_trim) != 0)
    log_kv(LOG_WARN, "no header-deadline watchdog: slow clients are bounded by the idle timeout only", NULL);
  return 0;
}

void http_stop(void) {
  watchdog_stop();
  if (health_daemon) MHD_stop_daemon(health_daemon);
  health_daemon = NULL;
  if (daemon_) MHD_stop_daemon(daemon_);
  daemon_ = NULL;
  free(tls_cert_pem);
  if (tls_key_pem) explicit_bzero(tls_key_pem, strlen(tls_key_pem));
  free(tls_key_pem);
  tls_cert_pem = tls_key_pem = NULL;
}
