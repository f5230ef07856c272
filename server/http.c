/* http.c — answers: the helpers handlers build a response with, the response handed to libmicrohttpd (a
 * body, or a stream and its trailer), problems, and the per-route metrics of what was answered.
 *
 * The HTTP layer's files stand in layers, each using only those below it (http_internal.h): http_serve.c
 * runs the listeners and each request's phases, http_request.c checks what a request brings (its
 * headers, and its body against --max-body and --body-memory), and this file answers for both.
 */
#include "http.h"
#include "http_internal.h"

#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "faultpoint.h"
#include "jsonstr.h"
#include "log.h"
#include "logwait.h"
#include "metrics.h"

const config *http__cfg;
const router_route *http__routes;
int http__nroutes;

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
static const int tracked_status[] = {200, 201, 204, 400, 401, 404, 405, 409, 411, 413, 415, 422, 431, 499, 500, 503, 507, 0};
#define NSTATUS (sizeof tracked_status / sizeof tracked_status[0])
#define MAX_ROUTES 40

typedef struct route_stats {
  atomic_ullong count[NSTATUS];
  metrics_hist latency;
} route_stats;

static route_stats rstats[MAX_ROUTES + 1]; /* the last: unmatched requests */

int http__metrics_init(int nroutes) {
  if (nroutes > MAX_ROUTES) {
    log_msg(LOG_ERROR, "%d routes, but the metrics have room for %d: raise MAX_ROUTES", nroutes, MAX_ROUTES);
    return -1;
  }
  for (int r = 0; r <= MAX_ROUTES; r++) { /* before any HTTP thread exists */
    rstats[r].latency.bounds = latency_bounds;
    rstats[r].latency.nbounds = (int)(sizeof latency_bounds / sizeof latency_bounds[0]);
  }
  return 0;
}

void http__record(int route, int status, double seconds) {
  route_stats *r = &rstats[route >= 0 && route < MAX_ROUTES ? route : MAX_ROUTES];
  size_t si = NSTATUS - 1;
  for (size_t i = 0; i + 1 < NSTATUS; i++)
    if (tracked_status[i] == status) si = i;
  atomic_fetch_add(&r->count[si], 1);
  metrics_hist_observe(&r->latency, seconds);
}

void http_metrics_write(buf *o) {
  buf_printf(o,
             "# HELP focald_http_requests_total HTTP requests answered, by route, method and status.\n"
             "# TYPE focald_http_requests_total counter\n");
  for (int r = 0; r <= MAX_ROUTES; r++) {
    if (r < MAX_ROUTES && r >= http__nroutes) r = MAX_ROUTES; /* then the unmatched requests' slot */
    const char *pat = r < MAX_ROUTES ? http__routes[r].pattern : "unmatched";
    const char *method = r < MAX_ROUTES ? http__routes[r].method : "";
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
    if (r < MAX_ROUTES && r >= http__nroutes) r = MAX_ROUTES;
    if (!metrics_hist_count(&rstats[r].latency)) continue;
    char labels[160];
    snprintf(labels, sizeof labels, "route=\"%s\",method=\"%s\"", r < MAX_ROUTES ? http__routes[r].pattern : "unmatched",
             r < MAX_ROUTES ? http__routes[r].method : "");
    metrics_hist_write(o, "focald_http_request_duration_seconds", labels, &rstats[r].latency);
  }
}

/* ------------------------------------------------------------------ answering libmicrohttpd */

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

/* A stream's send buffer. libmicrohttpd's idle timeout (--connection-timeout) counts from the last write,
 * and the kernel wakes a writer only once about half of a full send buffer has drained: with the buffer
 * the kernel grows by itself (up to 4 MiB), a client reading an export at under ~70 KiB/s went 30 s
 * without a write and was cut off, although it was reading all along. With 256 KiB (the kernel doubles
 * it) a write comes every 256 KiB or so: a client is cut off only below ~8 KiB/s. */
#define STREAM_SNDBUF (256 * 1024)

static void small_send_buffer(struct MHD_Connection *conn) {
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  const int size = STREAM_SNDBUF;
  /* best effort: a socket that refuses keeps the timeout as it was */
  if (ci) (void)setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
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
    small_send_buffer(conn);
    if (strcmp(rq->method, MHD_HTTP_METHOD_HEAD) == 0) {
      /* libmicrohttpd 0.9.75 writes a chunked response's last chunk ("0\r\n\r\n") even to HEAD, which has
       * no body: a client reading its next answer on the connection would take those bytes for its status
       * line. HEAD's answer to a stream is therefore not chunked (nor has it a trailer): its end is the
       * connection's, as for HTTP/1.0. Content-Length would have to be the stream's length, which is unknown. */
      if (MHD_set_response_options(resp, MHD_RF_HTTP_1_0_COMPATIBLE_STRICT, MHD_RO_END) != MHD_YES) {
        MHD_destroy_response(resp);
        return MHD_NO;
      }
    } else if (out->trailer && MHD_add_response_header(resp, "Trailer", out->trailer) != MHD_YES) {
      MHD_destroy_response(resp);
      return MHD_NO;
    }
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
  /* each header is libmicrohttpd's allocation: an answer that cannot have them all is not sent, and the
   * connection closes without one, as when the response itself could not be allocated */
  int ok = !out->content_type || MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, out->content_type) == MHD_YES;
  ok = ok && MHD_add_response_header(resp, "X-Request-Id", rq->request_id) == MHD_YES;
  int64_t behind = 0;
  const int known = logwait_behind(&behind);
  if (ok && known) {
    char v[24];
    snprintf(v, sizeof v, known > 0 ? "%lld" : "unknown", (long long)behind);
    ok = MHD_add_response_header(resp, "Focald-Log-Behind", v) == MHD_YES;
  }
  for (int i = 0; ok && i < out->nheaders; i++)
    ok = MHD_add_response_header(resp, out->headers[i][0], out->headers[i][1]) == MHD_YES;
  if (!ok) {
    MHD_destroy_response(resp);
    return MHD_NO;
  }
  rq->status = out->status;
  rq->state = RQ_ANSWERED;
  enum MHD_Result r = MHD_queue_response(conn, (unsigned)out->status, resp);
  MHD_destroy_response(resp);
  /* refused in the middle of an upload: the connection is closed without an answer */
  if (r != MHD_YES) rq->state = RQ_RECEIVING;
  return r;
}

enum MHD_Result http__respond(struct MHD_Connection *conn, http_req *rq, http_resp *out) {
  fault_point(FP_RESPOND);
  const enum MHD_Result r = respond(conn, rq, out);
  fault_point(FP_NONE);
  return r;
}

/* Answers a problem of code with detail; Accept-Post goes with a 415, listing the bodies the route takes. */
enum MHD_Result http__send_problem(struct MHD_Connection *conn, http_req *rq, problem_code code, const char *detail) {
  problem p;
  http_resp out = {0};
  problem_set(&p, code, NULL, "%s", detail);
  http_problem(&out, rq, &p);
  if (code == P_UNSUPPORTED_MEDIA_TYPE) {
    const int ri = rq->route_index;
    const int binary = ri >= 0 && (http__routes[ri].flags & ROUTE_BODY_BINARY);
    http_header(&out, "Accept-Post", binary ? "application/json, application/octet-stream" : "application/json");
  }
  return http__respond(conn, rq, &out);
}

/* Answers the problem p (which names its own field). */
enum MHD_Result http__answer_problem(struct MHD_Connection *conn, http_req *rq, const problem *p) {
  http_resp out = {0};
  http_problem(&out, rq, p);
  return http__respond(conn, rq, &out);
}
