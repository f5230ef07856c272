/* http.h — focald's HTTP layer on libmicrohttpd: requests, responses, and the routes it is given.
 *
 * libmicrohttpd's thread pool calls the access handler (http_serve.c), which
 * accumulates the body (http_request.c: refusing by Content-Length before
 * reading, and by counting bytes for chunked bodies), finds the route in the
 * table given to http_start (router.h) and calls its handler on that thread;
 * http.c builds and sends the answers.
 * A handler either fills a response at once or starts asynchronous work and
 * returns HTTP_ASYNC: the connection is then suspended until the work calls
 * http_complete (from any thread), and the handler's finish function builds
 * the response on an HTTP thread again.
 */
#ifndef FOCALD_HTTP_H
#define FOCALD_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "problem.h"
#include "router.h"

#define HTTP_ASYNC 1
#define HTTP_MAX_HEADERS 6 /* extra headers a response can carry (the console's: CSP, nosniff, caching...) */

/* A query parameter's longest value, percent-decoded, with its NUL: longer ones,
 * and ones that are not valid percent-encoding or have no value, are refused
 * (400 bad_query naming the parameter) before any handler runs. */
#define HTTP_QUERY_MAX 1536

typedef struct http_req http_req;

/* A response under construction; body is malloc'd and handed to libmicrohttpd. */
/* A streamed body: called on an HTTP thread for the next bytes; returns how
 * many it wrote into buf (at most max), 0 at the end, or -1 on error. */
typedef long (*http_stream_fn)(void *cls, char *buf, size_t max);
/* A streamed body's trailer, called once after the stream's last bytes (when
 * it ended without error): writes the value of the trailer field the
 * response declared in its Trailer header into value (NUL-terminated), or
 * returns -1 to send none. Only a chunked (HTTP/1.1) response carries it. */
typedef int (*http_trailer_fn)(void *cls, char *value, size_t n);

typedef struct http_resp {
  int status;
  const char *content_type;
  char *body;
  size_t len;
  char headers[HTTP_MAX_HEADERS][2][256]; /* extra headers: name, value */
  int nheaders;
  http_stream_fn stream;   /* instead of body: chunked, produced as the client reads */
  void *stream_cls;
  void (*stream_free)(void *cls);
  const char *trailer;     /* with stream: the trailer field's name (declared in a Trailer header), or NULL */
  http_trailer_fn trailer_value;
} http_resp;

typedef int (*http_handler)(http_req *rq, http_resp *out);

/* What a handler sees of its request. */
struct http_req {
  const char *method;
  const char *path;
  const char *route;          /* the route's pattern, for logs and metrics */
  int route_index;            /* its index in the route table, -1 before one matched */
  char request_id[65];
  char params[ROUTE_PARAMS][ROUTE_PARAM_MAX]; /* path parameters, percent-decoded: {dataset}, {id} */
  int bad_param;              /* 1 + the index of a parameter that could not be decoded, or 0 */
  const char *body;
  size_t len;
  const char *content_type;
  int binary;                 /* the body is application/octet-stream (binary tensors), not application/json */
  int64_t body_head_len;      /* the route's head_header (router.h): -1 when absent, -2 when not a length */
  void *conn;                 /* struct MHD_Connection */
  void *async;                /* the handler's work while suspended */
  http_handler finish;        /* builds the response once the work completes */
  void (*cleanup)(http_req *rq); /* frees async if the request ends before finish runs */
  /* private to the HTTP layer (http_serve.c, http_request.c, http.c) */
  char *buf;      /* the body: buf_base + padding that aligns a binary body's tensors */
  char *buf_base; /* the allocation */
  size_t cap;
  int too_large;
  int over_budget;             /* the bodies in flight would pass --body-memory with this one's */
  int no_memory;               /* the body's buffer could not grow: answered 503, not 413 (it is within --max-body) */
  int64_t reserved;            /* this request's share of --body-memory */
  uint64_t dropped;            /* body bytes past --max-body, read and dropped */
  int state;
  double t0;
  int status;
  int resumed;
  int64_t after;               /* a read's after=POSITION, while it waits for this node to apply it */
};

/* Returns the value of query parameter name, percent-decoded into buf (of
 * HTTP_QUERY_MAX bytes), or NULL when absent. A value that cannot be decoded
 * into buf, which the HTTP layer refuses before routing when buf is that large,
 * comes back as "" so that no parser takes it for an absent parameter. */
const char *http_query(http_req *rq, const char *name, char *buf, size_t n);

/* Whether an Authorization header's value is "Bearer " and token, compared in time that does not depend
 * on where they differ. */
int http_token_matches(const char *token, const char *header);

/* Returns the value of request header name, or NULL. */
const char *http_request_header(http_req *rq, const char *name);

/* Response helpers. Each returns 0. A NULL body (memory ran out building it)
 * becomes a 500 problem: never a 2xx with an empty or cut body. */
int http_json(http_resp *out, int status, char *body /* takes ownership */);
int http_text(http_resp *out, int status, const char *content_type, const char *text /* copied */);
int http_problem(http_resp *out, const http_req *rq, const problem *p);
void http_header(http_resp *out, const char *name, const char *value);

/* An asynchronous handler suspends its connection (on the HTTP thread, before
 * handing the work over, since the work may finish at once) and returns
 * HTTP_ASYNC. */
void http_suspend(http_req *rq);

/* Called by the asynchronous work when it is done, from any thread: the
 * connection resumes and rq->finish builds the response. */
void http_complete(http_req *rq);

/* Readiness for /readyz. */
enum { HTTP_STARTING = 0, HTTP_READY = 1, HTTP_DRAINING = 2 };
void http_set_readiness(int state);
int http_readiness(void);

/* Per-route request counters and latency histograms for /metrics. */
void http_metrics_write(buf *o);
/* The memory the request bodies in flight reserve, and its limit (--body-memory), for /metrics. */
void http_body_metrics_write(buf *o);

/* Binds the listening sockets of cfg's --listen and --health-listen (resolved by config_load), before
 * anything else is opened, so that an address that cannot be had stops focald at once; http_start serves
 * them, http_stop closes them. Returns 0, or -1 (logged, naming the address and the reason). */
int http_bind(const config *cfg);
/* Starts listening with cfg's address, threads and limits, serving routes[0..nroutes) (borrowed:
 * both outlive http_stop); binds first if http_bind has not. Returns 0, or -1 (the table is checked
 * first: router_check). */
int http_start(const config *cfg, const router_route *routes, int nroutes);
/* Waits up to timeout_ms until every request begun has been answered (its
 * response sent) or dropped by its client. Returns 0, or -1 at the timeout. */
int http_wait_idle(int timeout_ms);
/* Stops the daemon; every suspended connection must have been completed. */
void http_stop(void);
/* Waits for running handlers, then answers 503 draining to every new request on the connections still
 * open: after it, nothing on an HTTP thread touches the store (main calls it before store_close). */
void http_close_gate(void);


#endif /* FOCALD_HTTP_H */
