/* export.c — streamed exports of hard examples or of a queue, for labelling and imaging tools.
 *
 * An export is produced as the client reads it, a page at a time: the next
 * samples of a top-k query of 4096 (or the next positions of a queue), up to
 * about EXPORT_PAGE_BYTES, written under the dataset's read lock into a buffer
 * the HTTP layer drains. Memory stays at one page, and a bit per sample,
 * whatever the export's length or its samples' meta, and the lock is never
 * held while the client is slow to read.
 *
 * A page is the top of the samples not written yet, not the ranking continued
 * after the last sample sent: batches that arrive while an export streams
 * move samples up and down the ranking, and a cursor would then send a sample
 * that fell below it a second time and never send one that rose above it.
 * The bitmap of the samples written makes each sample appear once; with no
 * batch in between, the pages are the ranking's, in its order.
 *
 * An export is pinned to the dataset it started on, and a queue's export to
 * its queue, by id: if that dataset is deleted while the export streams (even
 * if another of the same name is created), the queue is removed (even if
 * another of the same name is built), or a page cannot be written (out of
 * memory), the stream ends with an error (no terminating chunk), so the client
 * never takes a short file for a whole one.
 *
 * Each sample is written by export_fmt.c in the format asked for (csv, jsonl,
 * label-studio, fiftyone, ohif). A format may leave samples out; k and the
 * ranks count what is written. How many were left out is known only
 * at the end, after the headers went out, so it travels in the chunked
 * response's trailer, Focald-Skipped (declared up front by a Trailer header).
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "decode.h"
#include "export_internal.h"
#include "jtext.h"

/* ------------------------------------------------------------------ pages */

/* Grows the bitmap of samples written to cover keys below n (new samples
 * arrive while an export streams). 0 when memory ran out. */
static int cover(export *e, uint32_t n) {
  if (e->written && n <= e->written_cap) return 1;
  uint64_t cap = e->written_cap ? e->written_cap : 64; /* 64 times a power of two */
  while (cap < n) cap *= 2;
  uint64_t *w = realloc(e->written, (size_t)(cap / 64) * sizeof *w);
  if (!w) return 0;
  memset(w + e->written_cap / 64, 0, (size_t)(cap - e->written_cap) / 64 * sizeof *w);
  e->written = w;
  e->written_cap = cap > UINT32_MAX ? UINT32_MAX : (uint32_t)cap; /* every key is below UINT32_MAX */
  return 1;
}

/* Formats the next page into e->page; sets e->ended after the last, or
 * e->failed when the page cannot be written: the dataset is gone (or is
 * another of the same name now), or memory ran out. */
static void next_page(export *e) {
  const export_format *fmt = export__fmt_get(e->format);
  e->page.len = 0;
  if (e->page.b) e->page.b[0] = '\0';
  if (!e->started) {
    e->started = 1;
    jw_lit(&e->page, fmt->head);
  }
  const st_dataset *ds = st_acquire_id(api_map, e->ds_id);
  if (!ds) {
    e->failed = 1;
    return;
  }
  int more = 0;
  if (e->queue[0]) {
    const st_queue *q = st_find_queue(ds, e->queue);
    if (!q || q->id != e->queue_id) {
      /* removed while the export streamed (and maybe built again under its name): the rest of it cannot be written */
      st_release(ds);
      e->failed = 1;
      return;
    }
    /* the queue's run, as the listing shows it (queue_run): found by name on every page, as the ranking's is */
    const st_run *run = strcmp(e->run, "*") == 0 ? NULL : st_find_run(ds, e->run);
    /* k counts what is written: label-studio, fiftyone and ohif leave samples out */
    for (uint32_t i = 0; i < EXPORT_PAGE && e->page.len < EXPORT_PAGE_BYTES && e->position < q->n &&
                         (!e->limit || e->rank < e->limit);
         i++, e->position++) {
      hist_view v;
      st_history_of(ds, run, q->keys[e->position], &v);
      export__fmt_item(e, ds, q->keys[e->position], q->scores[e->position], &v);
    }
    more = e->position < q->n && (!e->limit || e->rank < e->limit);
  } else {
    st_query q = e->q;
    q.run = strcmp(e->run, "*") == 0 ? NULL : st_find_run(ds, e->run);
    if (e->next_hit == e->nhits) {
      /* the hits of the last query are written: the next ones */
      if (!cover(e, st_nsamples(ds))) {
        st_release(ds);
        e->failed = 1;
        return;
      }
      q.k = EXPORT_PAGE;
      if (e->limit && e->limit - e->rank < EXPORT_PAGE) q.k = (int)(e->limit - e->rank);
      q.skip = e->written;
      q.skip_n = e->written_cap;
      e->nhits = strcmp(e->run, "*") == 0 || q.run ? st_top(ds, &q, e->hits) : 0;
      e->next_hit = 0;
      e->last_query = e->nhits < q.k;
    }
    /* a page ends at EXPORT_PAGE_BYTES too: samples with large meta must not make it hundreds of MiB. The
     * parts after the first are written under another lock than the query's: each of their hits is checked
     * again, and written with its score as it is now, or left for a later query if it no longer matches */
    const int resumed = e->next_hit > 0;
    for (; e->next_hit < e->nhits && e->page.len < EXPORT_PAGE_BYTES; e->next_hit++) {
      const st_hit *h = &e->hits[e->next_hit];
      double score = h->score;
      if (resumed && !st_match(ds, &q, h->key, &score)) continue;
      hist_view v;
      st_history_of(ds, q.run, h->key, &v);
      export__fmt_item(e, ds, h->key, score, &v);
      e->written[h->key >> 6] |= UINT64_C(1) << (h->key & 63);
    }
    more = (e->next_hit < e->nhits || !e->last_query) && (!e->limit || e->rank < e->limit);
  }
  st_release(ds);
  if (!more) {
    e->ended = 1;
    jw_lit(&e->page, e->rank ? fmt->tail : fmt->tail_if_empty);
  }
  if (e->page.failed) e->failed = 1;
}

static long export_read(void *cls, char *text, size_t max) {
  export *e = cls;
  for (;;) {
    if (e->failed) return -1; /* the client sees the stream cut, never a short document */
    if (e->sent < e->page.len) {
      size_t n = e->page.len - e->sent;
      if (n > max) n = max;
      memcpy(text, e->page.b + e->sent, n);
      e->sent += n;
      return (long)n;
    }
    if (e->ended) return 0;
    e->sent = 0;
    next_page(e);
  }
}

/* The trailer: how many samples the format left out. */
static int export_trailer(void *cls, char *value, size_t n) {
  const export *e = cls;
  snprintf(value, n, "%" PRId64, e->skipped);
  return 0;
}

static void export_free(void *cls) {
  export *e = cls;
  buf_free(&e->page);
  free(e->written);
  free(e);
}

/* ------------------------------------------------------------------ the handler */

/* Reads local_files_root: an absolute path without "." or ".." segments,
 * written to out with repeated slashes as one and without a trailing slash
 * (so "/" gives ""). Returns 0 or -1. */
static int root_parse(const char *s, char *out, size_t n) {
  if (s[0] != '/' || strlen(s) >= n) return -1;
  size_t len = 0;
  for (const char *p = s; *p; p++) {
    if (p[0] == '/' && p[1] == '.' && (p[2] == '/' || p[2] == '\0' || (p[2] == '.' && (p[3] == '/' || p[3] == '\0')))) return -1;
    if (p[0] == '/' && len > 0 && out[len - 1] == '/') continue;
    out[len++] = *p;
  }
  while (len > 0 && out[len - 1] == '/') len--;
  out[len] = '\0';
  return 0;
}

int api_export(http_req *rq, http_resp *resp) {
  char b[3][HTTP_QUERY_MAX];
  const char *format = http_query(rq, "format", b[0], sizeof b[0]);
  const int f = format ? export__fmt_find(format) : -1;
  if (f < 0) return api_fail(resp, rq, P_BAD_QUERY, "format", "format must be csv, jsonl, label-studio, fiftyone or ohif");
  /* a name no dataset can have is none: cut to the 64 characters e->dataset holds, it could be another's */
  if (!name_lookup_ok(rq->params[0]))
    return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  export *e = calloc(1, sizeof *e);
  if (!e) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  e->format = f;
  snprintf(e->dataset, sizeof e->dataset, "%.64s", rq->params[0]);
  snprintf(e->viewer, sizeof e->viewer, "%s", api_cfg->viewer_url);
  e->reconsider = api_cfg->reconsider_factor;
  const char *queue = http_query(rq, "queue", b[1], sizeof b[1]);
  const char *root = http_query(rq, "local_files_root", b[2], sizeof b[2]);
#define BAD(...)                         \
  do {                                   \
    api_fail(resp, rq, __VA_ARGS__);     \
    goto refuse;                         \
  } while (0)
  const int ranking = api_ranking_query(rq, resp, &e->q, e->run);
  if (ranking < 0) goto refuse;
  if (queue) {
    if (!name_lookup_ok(queue)) BAD(P_BAD_QUERY, "queue", "queue must be a queue name");
    snprintf(e->queue, sizeof e->queue, "%s", queue);
    if (ranking)
      BAD(P_BAD_QUERY, "queue", "queue= exports the queue as it was built: by, order, run, label, label_issue, min_seen and "
                                "status do not apply");
  }
  if (root) {
    if (strcmp(export__fmt_get(e->format)->name, "label-studio") != 0) BAD(P_BAD_QUERY, "local_files_root", "local_files_root applies to format=label-studio only");
    if (root_parse(root, e->root, sizeof e->root))
      BAD(P_BAD_QUERY, "local_files_root",
          "local_files_root must be an absolute directory path (Label Studio's LOCAL_FILES_DOCUMENT_ROOT) without . or .. segments");
    e->has_root = 1;
  }
  long long k;
  if (api_int_query(rq, resp, "k", 1, INT64_MAX, 0, &k) != 0) goto refuse; /* absent: all */
  e->limit = k;
  {
    /* answer 404s now, not in the middle of a stream; the export keeps to this dataset from here on */
    const st_dataset *ds = st_acquire(api_map, e->dataset);
    const st_queue *q = ds && e->queue[0] ? st_find_queue(ds, e->queue) : NULL;
    const int queue_ok = !e->queue[0] || q;
    int params_ok = 1;
    if (q) {
      e->queue_id = q->id;
      /* a queue's scores are of the field it was built by: Label Studio's mapping follows it */
      json_t *params = q->params ? jtext_loads(q->params, 0, NULL, NULL) : NULL;
      params_ok = !q->params || params; /* stored parameters are JSON: only memory can fail here */
      const char *qby = json_string_value(json_object_get(params, "by"));
      const char *qrun = json_string_value(json_object_get(params, "run"));
      const char *qorder = json_string_value(json_object_get(params, "order"));
      if (qby && hist_field_parse(qby) >= 0) e->q.by = hist_field_parse(qby);
      if (qorder && hist_order_parse(qorder) >= 0) e->q.order = hist_order_parse(qorder);
      if (qrun) snprintf(e->run, sizeof e->run, "%s", qrun);
      json_decref(params);
    }
    const int run_ok = strcmp(e->run, "*") == 0 || (ds && st_find_run(ds, e->run));
    if (ds) e->ds_id = st_id(ds);
    st_release(ds);
    if (!ds) BAD(P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", e->dataset);
    if (!queue_ok) BAD(P_NOT_FOUND, "queue", "dataset \"%.80s\" has no queue named \"%.80s\"", e->dataset, e->queue);
    if (!params_ok) BAD(P_INTERNAL, NULL, "out of memory reading the queue's parameters");
    if (!run_ok) BAD(P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", e->dataset, e->run);
  }
#undef BAD
  resp->status = 200;
  resp->content_type = export__fmt_get(f)->content_type;
  resp->stream = export_read;
  resp->stream_cls = e;
  resp->stream_free = export_free;
  resp->trailer = "Focald-Skipped";
  resp->trailer_value = export_trailer;
  char disp[192];
  snprintf(disp, sizeof disp, "attachment; filename=\"%s%s%s%s.%s\"", e->dataset, e->queue[0] ? "-" : "", e->queue,
           export__fmt_get(f)->suffix, export__fmt_get(f)->ext);
  http_header(resp, "Content-Disposition", disp);
  return 0;
refuse:
  free(e);
  return 0;
}
