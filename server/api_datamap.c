/* api_datamap.c — the data map: a dataset's samples binned by variability and mean confidence.
 *
 * Dataset cartography (Swayamdipta et al.) plots each sample at x = variability
 * (the standard deviation of p_t over its observations) and y = confidence (the
 * mean of p_t), coloured by correctness. A run of a million samples cannot be
 * sent point by point to a browser, so the map is answered as a grid of counts
 * over the rectangle asked for, with each cell's mean correctness, and as the
 * points themselves only when the rectangle holds at most `limit` samples (a
 * zoomed-in view, or a brushed region).
 *
 * The coordinates are the history fields the other routes report, rounded to
 * float32 as every route writes them, so that a sample's place on the map is
 * computed from exactly the numbers a client reads for it (hard-examples, the
 * sample view). One pass over the samples under the dataset's read lock.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "decode.h"

#define DM_BINS_MAX 256
#define DM_LIMIT_MAX 10000

/* A query number: decimal (an optional -, digits, a fraction and an exponent; no spaces, no +, and
 * none of the hexadecimal, "inf" or "nan" that strtod alone would take), finite, the whole string.
 * Returns 0, or -1. */
static int parse_real(const char *s, double *v /* OUT */) {
  char *end;
  if (!s || !(s[0] == '-' || s[0] == '.' || (s[0] >= '0' && s[0] <= '9'))) return -1;
  if (s[strspn(s, "0123456789.eE+-")] != '\0') return -1;
  double x = strtod(s, &end);
  if (*end || !isfinite(x)) return -1;
  *v = x;
  return 0;
}

/* The cell of v along an axis [lo, hi] cut into n: the last cell holds hi itself. */
static int cell_of(double v, double lo, double hi, int n) {
  int i = (int)floor((v - lo) / (hi - lo) * n);
  if (i >= n) i = n - 1;
  if (i < 0) i = 0;
  return i;
}

typedef struct dm_point {
  uint32_t key;
  float x, y, correctness;
  int32_t label;
} dm_point;

/* The map being computed: the rectangle and grid asked for, the counts and summed correctness of
 * each cell (row-major, y then x), and the points while there are at most limit of them. */
typedef struct dm_map {
  double rect[4]; /* x0, x1, y0, y1 */
  long long bins, limit, min_seen;
  size_t ncell;
  uint64_t *counts;  /* (bins, bins) */
  double *correct;   /* (bins, bins) */
  dm_point *points;  /* limit + 1 */
  uint64_t total;    /* samples in the rectangle */
} dm_map;

/* One pass over ds's samples (of run only, or the mean over runs when NULL) into m's cells and points. */
static void dm_bin(dm_map *m, const st_dataset *ds, const st_run *only) {
  const double *rect = m->rect;
  const int bins = (int)m->bins;
  const uint32_t n = st_nsamples(ds);
  m->total = 0;
  for (uint32_t key = 0; key < n; key++) {
    st_map_view v;
    st_map_view_of(ds, only, key, &v); /* seen 0: not observed (in that run) */
    if (v.seen < (double)m->min_seen) continue;
    const float x = (float)v.variability, y = (float)v.confidence;
    if (!(x >= rect[0] && x <= rect[1] && y >= rect[2] && y <= rect[3])) continue;
    const size_t cell = (size_t)cell_of(y, rect[2], rect[3], bins) * (size_t)bins + (size_t)cell_of(x, rect[0], rect[1], bins);
    m->counts[cell]++;
    m->correct[cell] += (float)v.correctness;
    if (m->total <= (uint64_t)m->limit) m->points[m->total] = (dm_point){key, x, y, (float)v.correctness, v.label};
    m->total++;
  }
}

/* The map as the route's JSON: the grid's counts and mean correctness, and the points or null. */
static void dm_write(jw *o, const dm_map *m, const st_dataset *ds, const char *run) {
  JW(o, "{\"dataset\":");
  jw_str(o, st_name(ds));
  JW(o, ",\"run\":");
  jw_str(o, run);
  JW(o, ",\"x\":\"variability\",\"y\":\"confidence\",\"x0\":%.17g,\"x1\":%.17g,\"y0\":%.17g,\"y1\":%.17g,\"bins\":%lld,"
        "\"limit\":%lld,\"total\":%llu,\"counts\":[", m->rect[0], m->rect[1], m->rect[2], m->rect[3], m->bins, m->limit,
     (unsigned long long)m->total);
  for (size_t c = 0; c < m->ncell; c++) JW(o, c ? ",%llu" : "%llu", (unsigned long long)m->counts[c]);
  JW(o, "],\"correctness\":[");
  for (size_t c = 0; c < m->ncell; c++) {
    if (c) jw_lit(o, ",");
    if (m->counts[c]) jw_num(o, m->correct[c] / (double)m->counts[c]);
    else jw_lit(o, "null");
  }
  JW(o, "],\"points\":");
  if (m->total > (uint64_t)m->limit) {
    jw_lit(o, "null}");
    return;
  }
  jw_lit(o, "[");
  for (uint64_t i = 0; i < m->total; i++) {
    const dm_point *p = &m->points[i];
    JW(o, "%s{\"id\":", i ? "," : "");
    jw_str(o, st_sample_id(ds, p->key));
    JW(o, ",\"x\":");
    jw_num(o, p->x);
    JW(o, ",\"y\":");
    jw_num(o, p->y);
    JW(o, ",\"correctness\":");
    jw_num(o, p->correctness);
    JW(o, ",\"label\":");
    if (p->label >= 0) jw_int(o, p->label);
    else jw_lit(o, "null");
    JW(o, ",\"status\":\"%s\"}", st_status_name(st_sample_status(ds, p->key)));
  }
  jw_lit(o, "]}");
}

int api_datamap(http_req *rq, http_resp *resp) {
  char qb[5][HTTP_QUERY_MAX];
  const char *run = http_query(rq, "run", qb[0], sizeof qb[0]);
  const char *names[4] = {"x0", "x1", "y0", "y1"};
  dm_map m = {.rect = {0.0, 0.5, 0.0, 1.0}}; /* p_t lies in [0, 1], so its standard deviation in [0, 0.5] */
  for (int i = 0; i < 4; i++) {
    const char *s = http_query(rq, names[i], qb[1 + i], sizeof qb[1 + i]);
    if (s && parse_real(s, &m.rect[i]))
      return api_fail(resp, rq, P_BAD_QUERY, names[i], "%s must be a finite number", names[i]);
  }
  if (!(m.rect[1] > m.rect[0])) return api_fail(resp, rq, P_BAD_QUERY, "x1", "x1 must be greater than x0");
  if (!(m.rect[3] > m.rect[2])) return api_fail(resp, rq, P_BAD_QUERY, "y1", "y1 must be greater than y0");
  if (api_int_query(rq, resp, "bins", 1, DM_BINS_MAX, 64, &m.bins) != 0 ||
      api_int_query(rq, resp, "limit", 0, DM_LIMIT_MAX, 1000, &m.limit) != 0 ||
      api_int_query(rq, resp, "min_seen", 1, UINT32_MAX, 1, &m.min_seen) != 0)
    return 0;
  if (!run || strcmp(run, "*") == 0) run = "*";
  else if (!name_lookup_ok(run)) return api_fail(resp, rq, P_BAD_QUERY, "run", "run must be a run name or *");

  m.ncell = (size_t)m.bins * (size_t)m.bins;
  m.counts = calloc(m.ncell, sizeof *m.counts);
  m.correct = calloc(m.ncell, sizeof *m.correct);
  m.points = malloc((size_t)(m.limit + 1) * sizeof *m.points);
  if (!m.counts || !m.correct || !m.points) {
    free(m.counts);
    free(m.correct);
    free(m.points);
    return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  }
  int rc = 0;
  const st_run *only = NULL;
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) {
    rc = api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
    goto out;
  }
  if (strcmp(run, "*") != 0 && !(only = st_find_run(ds, run))) {
    rc = api_fail(resp, rq, P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", rq->params[0], run);
    goto out;
  }
  dm_bin(&m, ds, only);
  jw o = {0};
  dm_write(&o, &m, ds, run);
  rc = jw_respond(resp, 200, &o);
out:
  st_release(ds);
  free(m.counts);
  free(m.correct);
  free(m.points);
  return rc;
}
