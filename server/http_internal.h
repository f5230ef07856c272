/* http_internal.h — what the HTTP layer's files share: a request's states, what http_start was given,
 * and the helpers (http__*) that answer (http.c) and that check a request's headers and body
 * (http_request.c).
 *
 * The files stand in layers, each using only those below it: http_serve.c runs the listeners and each
 * request's phases, http_request.c checks what a request brings, and http.c answers for both. This
 * header does not include http.h, which is http.c's own: it declares the request and the response
 * again, so that http.c can include it and still depend on no file above it.
 */
#ifndef FOCALD_HTTP_INTERNAL_H
#define FOCALD_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "problem.h"
#include "router.h"

/* http.h's, declared again here (see above). */
typedef struct http_req http_req;
typedef struct http_resp http_resp;

/* Where a request is (http_req's state): its headers and body being read, suspended in asynchronous
 * work, that work done, answered. */
enum { RQ_RECEIVING = 0, RQ_SUSPENDED, RQ_COMPLETE, RQ_ANSWERED };

/* What http_start was given (http.c holds them; http_start sets them before any HTTP thread exists):
 * main's config and the route table, both of which outlive the HTTP threads. */
extern const config *http__cfg;
extern const router_route *http__routes;
extern int http__nroutes;

static inline double http__now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Whether a route reads the data: GET routes with ROUTE_DATA take after=POSITION besides their own. */
static inline int http__reads_data(const router_route *route) {
  return (route->flags & ROUTE_DATA) && strcmp(route->method, "GET") == 0;
}

/* Answers (http.c). */
/* Readies the per-route metrics for nroutes routes: 0, or -1 (logged) when they have no room for so many. */
int http__metrics_init(int nroutes);
/* Counts a request answered (or dropped) with status after seconds, under route (-1: none matched). */
void http__record(int route, int status, double seconds);
/* Hands out (whose body it takes) to libmicrohttpd as rq's answer; rq is then RQ_ANSWERED, unless
 * libmicrohttpd refused it (MHD_NO: the connection is closed without an answer). */
enum MHD_Result http__respond(struct MHD_Connection *conn, http_req *rq, http_resp *out);
/* Answers a problem of code with detail; Accept-Post goes with a 415, listing the bodies the route takes. */
enum MHD_Result http__send_problem(struct MHD_Connection *conn, http_req *rq, problem_code code, const char *detail);
/* Answers the problem p (which names its own field). */
enum MHD_Result http__answer_problem(struct MHD_Connection *conn, http_req *rq, const problem *p);

/* A request's headers and body (http_request.c). */
/* Why the request's framing is ambiguous, or NULL when it is not; why (of n bytes) may hold the reason. */
const char *http__framing_problem(struct MHD_Connection *conn, char *why, size_t n);
/* Whether the request may go on, given the flags of every route of its path (the token, when one is set). */
int http__authorized(struct MHD_Connection *conn, unsigned path_flags);
/* The query problem of the request's route in *p: 1 when there is one, else 0. */
int http__query_problem(struct MHD_Connection *conn, const router_route *route, problem *p /* OUT */);
/* The route's query_param into rq->params[k], k being router_match's query_index (see http_request.c). Returns 0,
 * or 1 with *p filled when it is absent. */
int http__query_param(struct MHD_Connection *conn, const router_route *route, int k, http_req *rq, problem *p /* OUT */);
/* The body's headers checked against route and the limits, and its buffer allocated when its length is
 * known: MHD_YES to read the body, or the answer refusing it. */
enum MHD_Result http__begin_body(struct MHD_Connection *conn, http_req *rq, const router_route *route);
/* n more bytes of rq's body, kept until the limit, then counted and dropped. */
enum MHD_Result http__receive_body(struct MHD_Connection *conn, http_req *rq, const char *data, size_t n);
/* Gives back rq's share of --body-memory, when it ends. */
void http__body_release(http_req *rq);
/* The watchdog's tick: expires the reads that waited too long for a position, and returns free heap
 * pages once large bodies have stopped coming for a while. */
void http__maybe_trim(double now);

#endif /* FOCALD_HTTP_INTERNAL_H */
