/* export.c — streamed exports of hard examples or of a queue, for labelling and imaging tools.
 *
 * An export is produced as the client reads it, a page of 4096 samples at a
 * time: each page is one top-k query continuing after the previous page (or
 * the next positions of a queue), run under the dataset's read lock and
 * written into a buffer the HTTP layer drains. Memory stays at one page
 * whatever the export's length, and the lock is never held while the client
 * is slow to read.
 *
 * An export is pinned to the dataset it started on, and a queue's export to
 * its queue, by id: if that dataset is deleted while the export streams (even
 * if another of the same name is created), the queue is removed (even if
 * another of the same name is built), or a page cannot be written (out of
 * memory), the stream ends with an error (no terminating chunk), so the client
 * never takes a short file for a whole one.
 *
 * Formats (each with its own media type and suggested file name):
 *   csv          one row per sample: rank, id, score, the history fields, status, the DICOM and uri meta, viewer_url
 *   jsonl        one hard-examples item per line (plus reconsider and viewer_url)
 *   label-studio a JSON array of Label Studio tasks: data from the meta (image = the uri as a URL Label
 *                Studio can open), and one prediction whose score sorts the hardest first (see README "Exports")
 *   fiftyone     FiftyOne's CSVDataset: filepath (the uri), ground_truth (the label), hardness (the score)
 *   ohif         JSONL of the samples with a study_uid and their OHIF viewer link
 *
 * A format that needs something a sample lacks (label-studio an image Label
 * Studio can open, fiftyone a local file, ohif a study) leaves the sample out;
 * k and the ranks count what is written. How many were left out is known only
 * at the end, after the headers went out, so it travels in the chunked
 * response's trailer, Focald-Skipped (declared up front by a Trailer header).
 */
#include <ctype.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api_internal.h"
#include "csvw.h"
#include "decode.h"

#define PAGE 4096

typedef struct export {
  int format;                /* an index into formats[] */
  char dataset[ST_NAME_MAX + 1];
  int64_t ds_id;             /* the dataset the export started on */
  char run[ST_NAME_MAX + 1]; /* "*" for the mean over runs */
  char queue[ST_NAME_MAX + 1]; /* "" unless exporting a queue */
  int64_t queue_id;          /* the queue the export started on: a name may be removed and built again */
  st_query q;                /* the ranking (by, order, filters); run is resolved per page */
  int has_cursor;
  double cursor_score;
  char cursor_id[REQ_ID_MAX + 1];
  uint32_t position;         /* queue: next position */
  int64_t rank;
  int64_t limit;             /* k: at most this many samples, 0 for all */
  int started, ended, failed;
  jw page;                   /* formatted, not yet sent */
  st_hit hits[PAGE];         /* the page's ranking */
  size_t sent;
  int64_t skipped;           /* samples the format had to leave out */
  char viewer[256];
  double reconsider;
  int has_root;              /* label-studio: local paths become local-files URLs under root */
  char root[REQ_ID_MAX + 1]; /* local_files_root without its trailing '/' ("" for "/") */
} export;

/* ------------------------------------------------------------------ one sample, each format */

/* The meta fields exports use, from the sample's meta object. */
typedef struct meta_fields {
  json_t *root;
  int failed;
  const char *uri, *study, *series, *sop, *patient;
} meta_fields;

static void meta_read(const st_dataset *ds, uint32_t key, meta_fields *m) {
  memset(m, 0, sizeof *m);
  const char *meta = st_meta(ds, key);
  if (!meta) return;
  m->root = json_loads(meta, 0, NULL);
  m->failed = !m->root; /* stored meta is always an object: only memory can fail here */
  m->uri = json_string_value(json_object_get(m->root, "uri"));
  m->study = json_string_value(json_object_get(m->root, "study_uid"));
  m->series = json_string_value(json_object_get(m->root, "series_uid"));
  m->sop = json_string_value(json_object_get(m->root, "sop_uid"));
  m->patient = json_string_value(json_object_get(m->root, "patient_id"));
}

/* Appends the n bytes of s percent-encoded for a URL query value. */
static void jw_urlenc_n(jw *o, const char *s, size_t n) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '.' || c == '-' || c == '_' || c == '~') {
      jw_mem(o, (const char *)&c, 1);
    } else {
      const char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
      jw_mem(o, esc, 3);
    }
  }
}

static void jw_urlenc(jw *o, const char *s) {
  jw_urlenc_n(o, s, strlen(s));
}

/* The OHIF viewer link for a study (and series, and instance), as a JSON string. */
static void jw_viewer(jw *o, const export *e, const meta_fields *m) {
  if (!m->study) {
    jw_lit(o, "null");
    return;
  }
  jw u = {0};
  JW(&u, "%s/viewer?StudyInstanceUIDs=", e->viewer);
  jw_urlenc(&u, m->study);
  if (m->series) {
    JW(&u, "&SeriesInstanceUIDs=");
    jw_urlenc(&u, m->series);
  }
  if (m->sop) {
    /* OHIF v3 opens the study on this instance (it reads its URL parameters whatever their case) */
    JW(&u, "&initialSOPInstanceUID=");
    jw_urlenc(&u, m->sop);
  }
  if (u.failed) o->failed = 1;
  jw_str(o, u.b ? u.b : "");
  buf_free(&u);
}

int api_viewer_url(jw *o, const st_dataset *ds, uint32_t key) {
  export e;
  meta_fields m;
  snprintf(e.viewer, sizeof e.viewer, "%s", api_cfg->viewer_url);
  meta_read(ds, key, &m);
  jw_viewer(o, &e, &m);
  const int failed = m.failed;
  json_decref(m.root);
  return failed ? -1 : 0;
}

/* Whether uri starts with a URL scheme (RFC 3986: a letter, then letters,
 * digits, '+', '-' or '.', then ':'); one letter is a Windows drive, not a scheme. */
static int has_scheme(const char *uri) {
  const char *p = uri;
  if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))) return 0;
  for (p++; (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'; p++) {
  }
  return *p == ':' && p - uri >= 2;
}

/* Appends the segments of the relative path rel, each percent-encoded, joined
 * by '/', leaving out empty and "." segments. Returns 0, or -1 (the caller
 * drops what was appended) for a ".." segment, which could leave the document
 * root, or when no segment is left. */
static int jw_relpath(jw *o, const char *rel) {
  int n = 0;
  while (*rel) {
    size_t len = strcspn(rel, "/");
    if (len == 2 && rel[0] == '.' && rel[1] == '.') return -1;
    if (len > 0 && !(len == 1 && rel[0] == '.')) {
      if (n++) jw_mem(o, "/", 1); /* a query value may hold '/' as it is (RFC 3986), as Label Studio's examples do */
      jw_urlenc_n(o, rel, len);
    }
    rel += len;
    if (*rel == '/') rel++;
  }
  return n ? 0 : -1;
}

/* The local path a uri names, into out: the uri itself when it has no scheme,
 * or the percent-decoded path of a file: URL on this host (file:///p,
 * file://localhost/p). Returns 0, or -1 for any other URL or a path that does
 * not fit. */
static int local_path(const char *uri, char *out, size_t n) {
  const char *p = uri;
  const int url = has_scheme(uri); /* a URL's path is percent-encoded; a plain path is taken as it is */
  if (url) {
    if (strncasecmp(uri, "file:///", 8) == 0) p = uri + 7;
    else if (strncasecmp(uri, "file://localhost/", 17) == 0) p = uri + 16;
    else return -1;
  }
  size_t len = 0;
  for (; *p; p++) {
    int c = (unsigned char)*p;
    if (url && c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
      const char h[3] = {p[1], p[2], '\0'};
      c = (int)strtol(h, NULL, 16);
      p += 2;
    }
    if (c == 0 || len + 1 >= n) return -1;
    out[len++] = (char)c;
  }
  out[len] = '\0';
  return len ? 0 : -1;
}

/* Label Studio's image for a uri, as a JSON string, or -1 when Label Studio
 * could not open it (the sample is then left out). A URL (http, https, s3,
 * gs, ...) is given as it is. A local path (or a file: URL) needs Label
 * Studio's local file serving: with a document root, an absolute path under it
 * and a relative path (taken as relative to it) become
 * /data/local-files/?d=<path relative to the root>; without one, or outside
 * it, the sample is left out. */
static int jw_ls_image(jw *o, const export *e, const char *uri) {
  if (!uri || !*uri) return -1;
  char path[4096];
  if (local_path(uri, path, sizeof path) != 0) {
    if (!has_scheme(uri) || strncasecmp(uri, "file:", 5) == 0) return -1;
    jw_str(o, uri);
    return 0;
  }
  if (!e->has_root) return -1;
  const char *rel = path;
  if (path[0] == '/') {
    const size_t rl = strlen(e->root); /* "" for the root "/" */
    if (strncmp(path, e->root, rl) != 0 || path[rl] != '/') return -1;
    rel = path + rl + 1;
  }
  jw link = {0};
  jw_lit(&link, "/data/local-files/?d=");
  const int rc = jw_relpath(&link, rel);
  if (link.failed) o->failed = 1;
  if (rc == 0) jw_str(o, link.b ? link.b : "");
  buf_free(&link);
  return rc;
}

/* FiftyOne's CSV importer takes an absolute filepath as it is and looks a
 * relative one up under the data_path it is given; a URL is neither (a file:
 * URL is written as its path). A path the formula guard would have to change
 * cannot reach it unchanged. Writes the filepath cell, or returns -1. */
static int csv_fiftyone_path(jw *o, const char *uri) {
  char path[4096];
  if (!uri || local_path(uri, path, sizeof path) != 0 || csv_is_formula(path)) return -1;
  csv_cell(o, path);
  return 0;
}

static void csv_num(jw *o, double v) {
  if (isfinite(v)) jw_num(o, v);
}

/* The corrected label (JSON text) as a CSV cell: a number stays a number, anything else is text. */
static void csv_json(jw *o, const char *text) {
  if (!text) return;
  char *end;
  (void)strtod(text, &end);
  if (end != text && *end == '\0') jw_lit(o, text);
  else csv_text(o, text);
}

static const char csv_header[] =
    "rank,id,score,seen,last_loss,mean_loss,max_loss,ema_loss,confidence,variability,correctness,forgetting,forgetting_events,aum,el2n,label_issue_score,"
    "grand,first_step,last_step,label,label_issue,status,corrected_label,reconsider,uri,study_uid,series_uid,sop_uid,"
    "patient_id,viewer_url\r\n";

/* FiftyOne's CSVDataset: a header row, the media in "filepath" (see README "Exports" for the loader). */
static const char fiftyone_header[] = "filepath,ground_truth,hardness,focald_id,focald_rank,focald_status,mean_loss,label_issue\r\n";

/* A confidence-like score in [0, 1] that is lower for harder samples: Label
 * Studio lists low prediction scores first when sorted ascending. */
static double ls_score(int by, double v) {
  switch (by) {
  case HF_CONFIDENCE:
  case HF_CORRECTNESS: return v < 0 ? 0 : v > 1 ? 1 : v;
  case HF_AUM: return 1.0 / (1.0 + exp(-v));
  case HF_LABEL_ISSUE_SCORE: return v < 0 ? 1 : v > 1 ? 0 : 1 - v;
  default: return v > 0 ? exp(-v) : 1.0; /* losses, variability, forgetting, seen: larger is harder */
  }
}

/* Leaves the sample out of the export: it does not count towards k or the ranks. */
static void skip(export *e) {
  e->rank--;
  e->skipped++;
}

/* One row: rank, id, score, the history fields, status, the DICOM and uri meta, the viewer link. */
static void write_csv(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m) {
  jw *o = &e->page;
  jw_int(o, e->rank);
  jw_lit(o, ",");
  csv_text(o, st_sample_id(ds, key));
  JW(o, ",");
  csv_num(o, score);
  const double nums[] = {v->seen, v->last_loss, v->mean_loss, v->max_loss, v->ema_loss, v->confidence,
                         v->variability, v->correctness, v->forgetting, v->forgetting_events, v->aum, v->el2n, v->label_issue_score,
                         v->grand};
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
    JW(o, ",");
    csv_num(o, nums[i]);
  }
  JW(o, ",");
  if (v->has_step) {
    jw_int(o, v->first_step);
    jw_lit(o, ",");
    jw_int(o, v->last_step);
  } else {
    jw_lit(o, ",");
  }
  jw_lit(o, ",");
  if (v->label >= 0) jw_int(o, v->label);
  JW(o, ",%s,%s,", v->label_issue ? "true" : "false", st_status_name(st_sample_status(ds, key)));
  csv_json(o, st_corrected(ds, key));
  JW(o, ",%s,", st_reconsider(ds, key, e->reconsider) ? "true" : "false");
  const char *text[] = {m->uri, m->study, m->series, m->sop, m->patient};
  for (size_t i = 0; i < sizeof text / sizeof text[0]; i++) {
    csv_text(o, text[i]);
    JW(o, ",");
  }
  if (m->study) {
    jw link = {0};
    jw_viewer(&link, e, m);
    if (link.failed || link.len < 2) {
      o->failed = 1;
    } else {
      link.b[link.len - 1] = '\0'; /* the JSON string without its quotes; a percent-encoded link needs no unescaping */
      csv_text(o, link.b + 1);
    }
    buf_free(&link);
  }
  JW(o, "\r\n");
}

/* One hard-examples item per line, with reconsider and the viewer link. */
static void write_jsonl(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m) {
  jw *o = &e->page;
  JW(o, "{\"id\":");
  jw_str(o, st_sample_id(ds, key));
  JW(o, ",\"rank\":%" PRId64 ",\"score\":", e->rank);
  jw_num(o, score);
  JW(o, ",");
  jw_history(o, v);
  jw_sample_tail(o, ds, key);
  JW(o, ",\"corrected_label\":%s,\"reconsider\":%s,\"viewer_url\":", st_corrected(ds, key) ? st_corrected(ds, key) : "null",
     st_reconsider(ds, key, e->reconsider) ? "true" : "false");
  jw_viewer(o, e, m);
  JW(o, "}\n");
}

/* One Label Studio task: the meta as its data, the image as a URL it can open, a prediction whose
 * score sorts the hardest first. */
static void write_label_studio(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m) {
  jw *o = &e->page;
  /* Label Studio refuses the whole file when one task's image is not a string: a sample without an
   * image it can open is left out (and counted) */
  jw image = {0};
  if (jw_ls_image(&image, e, m->uri) != 0) {
    if (image.failed) o->failed = 1;
    buf_free(&image);
    skip(e);
    return;
  }
  JW(o, "%s{\"data\":{", e->rank > 1 ? ",\n" : "\n");
  /* Label Studio takes the task's data as given; the meta's fields, then the image and focald's own */
  const char *k;
  json_t *val;
  int n = 0;
  json_object_foreach(m->root, k, val) {
    if (strcmp(k, "image") == 0 || strncmp(k, "focald_", 7) == 0 || (m->study && strcmp(k, "viewer_url") == 0)) continue;
    char *text = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) o->failed = 1;
    JW(o, "%s", n++ ? "," : "");
    jw_str(o, k);
    JW(o, ":%s", text ? text : "null");
    free(text);
  }
  JW(o, "%s\"image\":", n ? "," : "");
  if (image.failed) o->failed = 1;
  else jw_mem(o, image.b, image.len);
  buf_free(&image);
  JW(o, ",\"focald_id\":");
  jw_str(o, st_sample_id(ds, key));
  JW(o, ",\"focald_dataset\":");
  jw_str(o, st_name(ds));
  JW(o, ",\"focald_rank\":%" PRId64 ",\"focald_score\":", e->rank);
  jw_num(o, score);
  JW(o, ",\"focald_label\":");
  if (v->label >= 0) JW(o, "%d", v->label);
  else jw_lit(o, "null");
  JW(o, ",\"focald_status\":\"%s\"", st_status_name(st_sample_status(ds, key)));
  if (m->study) {
    JW(o, ",\"viewer_url\":");
    jw_viewer(o, e, m);
  }
  JW(o, "},\"predictions\":[{\"model_version\":");
  jw_str(o, e->run);
  JW(o, ",\"score\":");
  jw_num(o, ls_score(e->q.by, score));
  JW(o, ",\"result\":[]}]}");
}

/* One CSVDataset row: filepath, ground_truth, hardness and focald's fields. */
static void write_fiftyone(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m) {
  jw *o = &e->page;
  if (csv_fiftyone_path(o, m->uri) != 0) {
    skip(e); /* FiftyOne needs a file it can find for every row */
    return;
  }
  JW(o, ",");
  if (v->label >= 0) jw_int(o, v->label);
  JW(o, ",");
  csv_num(o, score);
  JW(o, ",");
  csv_text(o, st_sample_id(ds, key));
  JW(o, ",%" PRId64 ",%s,", e->rank, st_status_name(st_sample_status(ds, key)));
  csv_num(o, v->mean_loss);
  JW(o, ",%s\r\n", v->label_issue ? "true" : "false");
}

/* One sample with a study: its DICOM identifiers and OHIF viewer link. */
static void write_ohif(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m) {
  (void)v;
  jw *o = &e->page;
  if (!m->study) {
    skip(e); /* only samples with a study are in this export */
    return;
  }
  JW(o, "{\"id\":");
  jw_str(o, st_sample_id(ds, key));
  JW(o, ",\"rank\":%" PRId64 ",\"score\":", e->rank);
  jw_num(o, score);
  JW(o, ",\"study_uid\":");
  jw_str(o, m->study);
  JW(o, ",\"series_uid\":");
  if (m->series) jw_str(o, m->series);
  else jw_lit(o, "null");
  JW(o, ",\"sop_uid\":");
  if (m->sop) jw_str(o, m->sop);
  else jw_lit(o, "null");
  JW(o, ",\"patient_id\":");
  if (m->patient) jw_str(o, m->patient);
  else jw_lit(o, "null");
  JW(o, ",\"url\":");
  jw_viewer(o, e, m);
  JW(o, "}\n");
}

/* Each format: how it is served, what comes before and after the samples, how one sample is written.
 * The suggested file name is <dataset>[-<queue>]<suffix>.<ext>. */
typedef struct export_format {
  const char *name, *content_type, *suffix, *ext;
  const char *head;                 /* before the first sample */
  const char *tail, *tail_if_empty; /* after the last */
  void (*write)(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m);
} export_format;

static const export_format formats[] = {
    {"csv", "text/csv; charset=utf-8", "", "csv", csv_header, "", "", write_csv},
    {"jsonl", "application/x-ndjson", "", "jsonl", "", "", "", write_jsonl},
    /* each task starts on a line of its own */
    {"label-studio", "application/json", "-label-studio", "json", "[", "\n]\n", "]\n", write_label_studio},
    {"fiftyone", "text/csv; charset=utf-8", "-fiftyone", "csv", fiftyone_header, "", "", write_fiftyone},
    {"ohif", "application/x-ndjson", "-ohif", "jsonl", "", "", "", write_ohif},
};
#define NFORMATS ((int)(sizeof formats / sizeof formats[0]))

static void write_item(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v) {
  meta_fields m;
  meta_read(ds, key, &m);
  if (m.failed) e->page.failed = 1; /* the export ends with an error rather than leave the meta out */
  e->rank++;
  formats[e->format].write(e, ds, key, score, v, &m);
  json_decref(m.root);
}

/* ------------------------------------------------------------------ pages */

/* Formats the next page into e->page; sets e->ended after the last, or
 * e->failed when the page cannot be written: the dataset is gone (or is
 * another of the same name now), or memory ran out. */
static void next_page(export *e) {
  e->page.len = 0;
  if (e->page.b) e->page.b[0] = '\0';
  if (!e->started) {
    e->started = 1;
    jw_lit(&e->page, formats[e->format].head);
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
    /* k counts what is written: label-studio, fiftyone and ohif leave samples out */
    for (uint32_t i = 0; i < PAGE && e->position < q->n && (!e->limit || e->rank < e->limit); i++, e->position++) {
      hist_view v;
      st_history_all(ds, q->keys[e->position], &v);
      write_item(e, ds, q->keys[e->position], q->scores[e->position], &v);
    }
    more = e->position < q->n && (!e->limit || e->rank < e->limit);
  } else {
    st_query q = e->q;
    q.run = strcmp(e->run, "*") == 0 ? NULL : st_find_run(ds, e->run);
    q.k = PAGE;
    if (e->limit && e->limit - e->rank < PAGE) q.k = (int)(e->limit - e->rank);
    q.has_cursor = e->has_cursor;
    q.cursor_score = e->cursor_score;
    q.cursor_id = e->cursor_id;
    st_hit *hits = e->hits;
    int n = strcmp(e->run, "*") == 0 || q.run ? st_top(ds, &q, hits) : 0;
    for (int i = 0; i < n; i++) {
      hist_view v;
      st_history_of(ds, q.run, hits[i].key, &v);
      write_item(e, ds, hits[i].key, hits[i].score, &v);
    }
    if (n > 0) {
      e->has_cursor = 1;
      e->cursor_score = hits[n - 1].score;
      snprintf(e->cursor_id, sizeof e->cursor_id, "%s", st_sample_id(ds, hits[n - 1].key));
    }
    more = n == q.k && (!e->limit || e->rank < e->limit);
  }
  st_release(ds);
  if (!more) {
    e->ended = 1;
    jw_lit(&e->page, e->rank ? formats[e->format].tail : formats[e->format].tail_if_empty);
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
  int f = -1;
  for (int i = 0; format && i < NFORMATS; i++)
    if (strcmp(formats[i].name, format) == 0) f = i;
  if (f < 0) return api_fail(resp, rq, P_BAD_QUERY, "format", "format must be csv, jsonl, label-studio, fiftyone or ohif");
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
    if (formats[e->format].write != write_label_studio) BAD(P_BAD_QUERY, "local_files_root", "local_files_root applies to format=label-studio only");
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
    if (q) {
      e->queue_id = q->id;
      /* a queue's scores are of the field it was built by: Label Studio's mapping follows it */
      json_t *params = q->params ? json_loads(q->params, 0, NULL) : NULL;
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
    if (!run_ok) BAD(P_RUN_NOT_FOUND, "run", "dataset \"%.80s\" has no run \"%.80s\"", e->dataset, e->run);
  }
#undef BAD
  resp->status = 200;
  resp->content_type = formats[f].content_type;
  resp->stream = export_read;
  resp->stream_cls = e;
  resp->stream_free = export_free;
  resp->trailer = "Focald-Skipped";
  resp->trailer_value = export_trailer;
  char disp[192];
  snprintf(disp, sizeof disp, "attachment; filename=\"%s%s%s%s.%s\"", e->dataset, e->queue[0] ? "-" : "", e->queue,
           formats[f].suffix, formats[f].ext);
  http_header(resp, "Content-Disposition", disp);
  return 0;
refuse:
  free(e);
  return 0;
}
