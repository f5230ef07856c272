/* api_common.h — what every handler file uses (api_common.c): settings, problems, query parameters,
 * the path's sample, and the hand-off of a request to another thread. */
#ifndef FOCALD_API_COMMON_H
#define FOCALD_API_COMMON_H

#include <stdint.h>

#include "config.h"
#include "http.h"
#include "job.h"
#include "problem.h"
#include "state.h"

struct store;

/* Gives the handlers what they read and write (borrowed: each outlives every request). Call before
 * http_start. */
void api_init(const config *cfg, st_map *map, struct store *store);

/* Set by api_init: main's settings, which outlive every request. */
extern const config *api_cfg;
extern st_map *api_map;
extern struct store *api_store;

/* Fills resp with a problem. Returns 0. */
int api_fail(http_resp *resp, const http_req *rq, problem_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses a comma-separated list of review states into a bit mask; -1 when a
 * name is unknown or the list is empty. */
int api_status_mask(const char *s, uint32_t *mask);

/* "true" -> ST_LABEL_ISSUE_YES, "false" -> ST_LABEL_ISSUE_NO; -1 otherwise. */
int api_label_issue_filter(const char *s);

/* A decimal integer in [lo, hi]: an optional '-' and digits, nothing else (no
 * spaces, no '+', no overflow). 0, or -1 when s is not one. */
int api_int_text(const char *s, long long lo, long long hi, long long *v /* OUT */);

/* The integer query parameter name: *v = dflt when it is absent. 0, or answers
 * 400 bad_query naming it ("<name> must be an integer from lo to hi", or
 * "... >= lo" when hi is the type's limit) and returns -1. */
int api_int_query(http_req *rq, http_resp *resp, const char *name, long long lo, long long hi, long long dflt,
                  long long *v /* OUT */);

/* The ranking's query parameters, read alike wherever a ranking is asked for
 * (hard-examples, exports): by, order, run, label, min_seen, status and
 * label_issue. Fills q with them over its defaults (mean_loss, the field's own
 * order, at least one observation, the samples still undecided and those to
 * reconsider) and run with the run's name, "*" (the mean over runs) unless one
 * is named. Returns how many of them were given, or answers 400 bad_query
 * naming the first bad one and returns -1. */
int api_ranking_query(http_req *rq, http_resp *resp, st_query *q /* OUT */, char run[ST_NAME_MAX + 1] /* OUT */);

/* The dataset and the sample the path names ({dataset}, {id}): the dataset
 * acquired (the caller st_releases it) and the sample's key. 0, or answers 404
 * dataset_not_found or sample_not_found and returns -1. */
int api_sample(http_req *rq, http_resp *resp, const st_dataset **ds /* OUT */, uint32_t *key /* OUT */);

/* The hand-off of a request to another thread: suspends rq until op is done
 * (op->done resumes it), then finish answers on an HTTP thread;
 * cleanup frees what rq->async holds when the request ends. The caller then
 * submits op (to the writer, or the scoring pool) and returns HTTP_ASYNC. */
void api_park(http_req *rq, wop *op, http_handler finish, void (*cleanup)(http_req *rq));

/* api_park, then op to the writer. Returns HTTP_ASYNC. */
int api_submit(http_req *rq, wop *op, http_handler finish, void (*cleanup)(http_req *rq));

/* The Focald-Log-Position header of a committed change (op->log_pos, set by the writer): batches always,
 * the other changes on a cluster node. Nothing when it has none. */
void api_log_position(http_resp *resp, const wop *op);

/* A change's finish (http_handler): its problem when it failed; else the answer the writer built before the
 * commit (answer.h), with its log position and, for a replay, Idempotent-Replayed. Takes no memory for a
 * committed change. */
int api_finish_change(http_req *rq, http_resp *resp);

#endif /* FOCALD_API_COMMON_H */
