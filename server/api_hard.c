/* api_hard.c — GET /v1/datasets/{dataset}/hard-examples: one page of a dataset's ranking, and its cursor.
 *
 * A page is the k samples after the cursor in the ranking's order (ties by
 * id), read under the dataset's read lock by st_top; the cursor holds where
 * the last page stopped (its score and id) and what query and dataset it was
 * made for, so that the next page follows the same ranking or is refused.
 */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_internal.h"
#include "decode.h"
#include "history.h"
#include "jsonstr.h"

/* The cursor: hex of "v1|by|run|label|min_seen|status|@dataset|rank|score|id", the dataset by its id (never
 * reused), so that a cursor outlives neither a deletion nor a new dataset of the same name. Opaque to clients;
 * a cursor without "@dataset" (made before it was added) is taken for the dataset of that name. */
static void make_cursor(char *outb, size_t n, const char *plain) {
  size_t j = 0;
  for (const unsigned char *p = (const unsigned char *)plain; *p && j + 3 < n; p++) j += (size_t)snprintf(outb + j, n - j, "%02x", *p);
  outb[j] = '\0';
}

/* Decodes the cursor's hex into plain, refusing anything make_cursor cannot have written: an odd length,
 * characters other than 0-9 a-f, a NUL byte. */
static int read_cursor(const char *hex, char *plain, size_t n) {
  size_t l = strlen(hex);
  if (l % 2 || l / 2 >= n) return -1;
  for (size_t i = 0; i < l / 2; i++) {
    int v = 0;
    for (int h = 0; h < 2; h++) {
      const char c = hex[2 * i + (size_t)h];
      if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
      else if (c >= 'a' && c <= 'f') v = v * 16 + (c - 'a' + 10);
      else return -1;
    }
    if (v == 0) return -1;
    plain[i] = (char)v;
  }
  plain[l / 2] = '\0';
  return 0;
}

/* An integer in [lo, hi] written as %lld writes it: no sign on a positive, no leading zeros, no "-0". */
static int canonical_int(const char *s, long long lo, long long hi, long long *v /* OUT */) {
  char again[24];
  if (api_int_text(s, lo, hi, v) != 0) return -1;
  snprintf(again, sizeof again, "%lld", *v);
  return strcmp(again, s) == 0 ? 0 : -1;
}

/* A score as %.17g writes a finite double: strtod would also take "nan", "inf", hex, spaces and a "+",
 * and a score that is not a number puts no sample before or after it. */
static int canonical_score(const char *s, double *v /* OUT */) {
  char again[32], *end;
  if (!s[0]) return -1;
  *v = strtod(s, &end);
  if (*end || !isfinite(*v)) return -1;
  snprintf(again, sizeof again, "%.17g", *v);
  return strcmp(again, s) == 0 ? 0 : -1;
}

/* Reads the cursor's position, "[@dataset|]rank|score|id" (rest, modified), into q and the OUT arguments.
 * Returns NULL, or what is wrong with it. */
static const char *read_position(char *rest, st_query *q, long long *ds /* OUT */, long long *rank /* OUT */,
                                 char id[REQ_ID_MAX + 1] /* OUT */) {
  *ds = 0;
  if (rest[0] == '@') {
    const char *ds_text = strsep(&rest, "|") + 1;
    if (!rest || canonical_int(ds_text, 1, INT64_MAX, ds)) return "its dataset is not a dataset's id";
  }
  const char *rank_text = strsep(&rest, "|"), *score_text = strsep(&rest, "|");
  /* a cursor's rank is at least 1 (it follows a page) and at most the samples a dataset can hold, so the
   * ranks written after it cannot overflow */
  if (!rank_text || canonical_int(rank_text, 1, UINT32_MAX, rank)) return "its rank is not an integer from 1 to 4294967295";
  if (!score_text || canonical_score(score_text, &q->cursor_score)) return "its score is not a finite number";
  /* the id is the rest, '|' and all: text a sample id can be. It need not be one of this node's samples: a
   * cluster node can be given a cursor another node wrote before it has applied that page's last sample,
   * and any id is a place in the ranking's order. */
  const size_t l = rest ? strlen(rest) : 0;
  if (l < 1 || l > REQ_ID_MAX) return "its sample id is not a sample id";
  for (size_t i = 0; i < l;) {
    const unsigned char c = (unsigned char)rest[i];
    const size_t cl = c < 0x20 || c == 0x7f ? 0 : utf8_char_len((const unsigned char *)rest + i);
    if (!cl) return "its sample id is not UTF-8 text without control characters";
    i += cl;
  }
  memcpy(id, rest, l + 1);
  q->cursor_id = id;
  q->has_cursor = 1;
  return NULL;
}

int api_hard_examples(http_req *rq, http_resp *resp) {
  st_query q;
  char run[ST_NAME_MAX + 1];
  long long k;
  if (api_ranking_query(rq, resp, &q, run) < 0 || api_int_query(rq, resp, "k", 1, 10000, 100, &k) != 0) return 0;
  q.k = (int)k;
  const int desc = hist_order_desc((hist_field)q.by, (hist_order)q.order);
  char cursor_buf[HTTP_QUERY_MAX], cursor_plain[700]; /* as large as the next_cursor written below */
  const char *cursor = http_query(rq, "cursor", cursor_buf, sizeof cursor_buf);
  /* what identifies this query: a cursor is only good for the same one */
  /* the label as a number: "007" and "7" are one query, and the cursor's length stays bounded */
  char fingerprint[300], label_text[16] = "";
  if (q.has_label) snprintf(label_text, sizeof label_text, "%d", (int)q.label);
  /* the reverse of the field's own order is marked; its own order, asked for or not, is not (older cursors stay good) */
  snprintf(fingerprint, sizeof fingerprint, "v1|%d|%s|%s|%u|%u|%d%s%s", q.by, run, label_text, q.min_seen, q.status_mask,
           q.reconsider > 0, desc == hist_field_descending((hist_field)q.by) ? "" : "|reversed",
           q.label_issue == ST_LABEL_ISSUE_YES ? "|issues" : q.label_issue == ST_LABEL_ISSUE_NO ? "|no-issues" : "");
  long long rank0 = 0, cursor_ds = 0;
  char cursor_id[REQ_ID_MAX + 1] = "";
  if (cursor) {
    size_t fl = strlen(fingerprint);
    if (read_cursor(cursor, cursor_plain, sizeof cursor_plain) || strncmp(cursor_plain, fingerprint, fl) != 0 ||
        cursor_plain[fl] != '|')
      return api_fail(resp, rq, P_BAD_QUERY, "cursor", "the cursor is malformed or belongs to a different query");
    const char *why = read_position(cursor_plain + fl + 1, &q, &cursor_ds, &rank0, cursor_id);
    if (why)
      return api_fail(resp, rq, P_BAD_QUERY, "cursor", "the cursor is malformed: %s; pass next_cursor as it was given",
                      why);
  }
  /* one more than asked: whether it exists decides next_cursor */
  const int asked = q.k;
  q.k = asked + 1;
  st_hit *hits = malloc((size_t)q.k * sizeof *hits);
  if (!hits) return api_fail(resp, rq, P_INTERNAL, NULL, "out of memory");
  const st_dataset *ds = st_acquire(api_map, rq->params[0]);
  if (!ds) {
    free(hits);
    return api_fail(resp, rq, P_DATASET_NOT_FOUND, NULL, "no dataset named \"%.80s\"", rq->params[0]);
  }
  if (cursor_ds && cursor_ds != st_id(ds)) {
    st_release(ds);
    free(hits);
    return api_fail(resp, rq, P_BAD_QUERY, "cursor",
                    "the cursor is of another dataset (an earlier \"%.80s\", deleted since, or one of another name): "
                    "start again without a cursor",
                    rq->params[0]);
  }
  if (strcmp(run, "*") != 0 && !(q.run = st_find_run(ds, run))) {
    st_release(ds);
    free(hits);
    return api_fail(resp, rq, P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", rq->params[0], run);
  }
  int n = st_top(ds, &q, hits);
  int more = n > asked;
  if (more) n = asked;
  jw o = {0};
  JW(&o, "{\"dataset\":");
  jw_str(&o, st_name(ds));
  JW(&o, ",\"run\":");
  jw_str(&o, run);
  JW(&o, ",\"by\":\"%s\",\"order\":\"%s\",\"items\":[", hist_field_name((hist_field)q.by), desc ? "desc" : "asc");
  for (int i = 0; i < n; i++) {
    if (i > 0 && o.len >= API_PAGE_BYTES) { /* the rest on the next page */
      n = i;
      more = 1;
      break;
    }
    hist_view h;
    st_history_of(ds, q.run, hits[i].key, &h);
    JW(&o, "%s{\"id\":", i ? "," : "");
    jw_str(&o, st_sample_id(ds, hits[i].key));
    JW(&o, ",\"rank\":%lld,\"score\":", rank0 + i + 1);
    jw_num(&o, hits[i].score);
    JW(&o, ",");
    jw_history(&o, &h);
    jw_sample_tail(&o, ds, hits[i].key);
    JW(&o, ",\"reconsider\":%s}", st_reconsider(ds, hits[i].key, api_cfg->reconsider_factor) ? "true" : "false");
  }
  JW(&o, "],\"next_cursor\":");
  if (more) {
    char plain[700], hex[1500];
    snprintf(plain, sizeof plain, "%s|@%lld|%lld|%.17g|%s", fingerprint, (long long)st_id(ds), rank0 + n, hits[n - 1].score,
             st_sample_id(ds, hits[n - 1].key));
    make_cursor(hex, sizeof hex, plain);
    JW(&o, "\"%s\"", hex);
  } else {
    JW(&o, "null");
  }
  JW(&o, "}");
  st_release(ds);
  free(hits);
  return jw_respond(resp, 200, &o);
}
