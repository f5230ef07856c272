/* export_fmt.c — how an export writes one sample in each of its formats.
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
 * Studio can open, of a scheme it opens safely; fiftyone a local file whose
 * path has no ".." segment; ohif a study) leaves the sample out;
 * k and the ranks count what is written, and export.c reports how many were
 * left out at the end of the stream.
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
#include "export_internal.h"
#include "jtext.h"

/* The meta fields exports use, from the sample's meta object. */
struct meta_fields {
  json_t *root;
  int failed;
  const char *uri, *study, *series, *sop, *patient;
};

static void meta_read(const st_dataset *ds, uint32_t key, meta_fields *m) {
  memset(m, 0, sizeof *m);
  const char *meta = st_meta(ds, key);
  if (!meta) return;
  m->root = jtext_loads(meta, 0, NULL, NULL);
  m->failed = !m->root; /* stored meta is always an object: only memory can fail here */
  m->uri = json_string_value(json_object_get(m->root, "uri"));
  m->study = json_string_value(json_object_get(m->root, "study_uid"));
  if (m->study && !*m->study) m->study = NULL; /* an empty study_uid names no study: no viewer link */
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

/* Whether path has a ".." segment, with '/' or '\\' (a Windows separator) between segments: such a path
 * can leave any directory it is looked up under, and "a/link/../b" is not always "a/b" on disk, so the
 * exports that hand a path to a tool refuse it rather than resolve it. */
static int has_dotdot(const char *path) {
  for (const char *p = path; *p;) {
    const size_t len = strcspn(p, "/\\");
    if (len == 2 && p[0] == '.' && p[1] == '.') return 1;
    p += len;
    if (*p) p++;
  }
  return 0;
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

/* Copies s into out (n bytes), percent-decoding it when decode is set. Returns 0, or -1 when the
 * result would be empty, hold a NUL or not fit. */
static int copy_path(const char *s, int decode, char *out, size_t n) {
  size_t len = 0;
  for (const char *p = s; *p; p++) {
    int c = (unsigned char)*p;
    if (decode && c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
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

/* The local path a uri names, into out: the uri itself when it has no scheme,
 * or the percent-decoded path of a file: URL on this host (file:///p,
 * file://localhost/p, file:/p as RFC 8089 allows and media.c takes). Returns 0,
 * or -1 for any other URL or a path that does not fit. */
static int local_path(const char *uri, char *out, size_t n) {
  const char *p = uri;
  const int url = has_scheme(uri); /* a URL's path is percent-encoded; a plain path is taken as it is */
  if (url) {
    if (strncasecmp(uri, "file:///", 8) == 0) p = uri + 7;
    else if (strncasecmp(uri, "file://localhost/", 17) == 0) p = uri + 16;
    else if (strncasecmp(uri, "file:/", 6) == 0 && uri[6] != '/') p = uri + 5;
    else return -1;
  }
  return copy_path(p, url, out, n);
}

/* Whether uri is a URL Label Studio can open as an image and that is safe in its labelling page:
 * http or https (loaded by the browser), or s3, gs or azure-blob (resolved by Label Studio's cloud
 * storages into signed https links), the scheme in any case from the first byte on (nothing a browser
 * would strip before it), then "//" and a host or bucket. Any other scheme (javascript:, data:,
 * vbscript:, blob:, ftp:, ...) is refused: Label Studio renders a task's image as given, in the
 * annotator's browser. */
static int ls_url(const char *uri) {
  static const char *const schemes[] = {"http://", "https://", "s3://", "gs://", "azure-blob://"};
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    const size_t l = strlen(schemes[i]);
    if (strncasecmp(uri, schemes[i], l) == 0) return uri[l] != '\0' && !strchr("/?#\\", uri[l]);
  }
  return 0;
}

/* The prefix of Label Studio's local file links (its local storage guide). */
static const char ls_local_prefix[] = "/data/local-files/?d=";

/* Whether uri is already a Label Studio local file link to a file below its document root: the
 * prefix, then a non-empty relative path (percent-encoded) without a NUL or a ".." segment, and no
 * other query parameter. */
static int ls_local_link(const char *uri) {
  const size_t pl = sizeof ls_local_prefix - 1;
  if (strncmp(uri, ls_local_prefix, pl) != 0) return 0;
  char path[4096];
  const char *rel = uri + pl;
  if (strpbrk(rel, "&#") || copy_path(rel, 1, path, sizeof path) != 0) return 0;
  return path[0] != '/' && !has_dotdot(path);
}

/* Label Studio's image for a uri, as a JSON string, or -1 when Label Studio
 * could not open it (the sample is then left out). A URL of a scheme it
 * opens (ls_url) is given as it is, and so is a local file link of its own
 * (ls_local_link); any other URL is left out. A local path (or a file: URL) needs Label
 * Studio's local file serving: with a document root, an absolute path under it
 * and a relative path (taken as relative to it) become
 * /data/local-files/?d=<path relative to the root>; without one, or outside
 * it, the sample is left out. */
static int jw_ls_image(jw *o, const export *e, const char *uri) {
  if (!uri || !*uri) return -1;
  if (ls_local_link(uri)) {
    jw_str(o, uri);
    return 0;
  }
  char path[4096];
  if (local_path(uri, path, sizeof path) != 0) {
    if (!ls_url(uri)) return -1;
    jw_str(o, uri);
    return 0;
  }
  if (!e->has_root || has_dotdot(path)) return -1;
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
 * URL is written as its path). A path with a ".." segment (has_dotdot) is
 * refused, not resolved; so is one the formula guard would have to change,
 * which could not reach FiftyOne unchanged. Writes the filepath cell, or
 * returns -1. */
static int csv_fiftyone_path(jw *o, const char *uri) {
  char path[4096];
  if (!uri || local_path(uri, path, sizeof path) != 0 || has_dotdot(path) || csv_is_formula(path)) return -1;
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
    "early_label_issue_score,grand,first_step,last_step,label,label_issue,status,corrected_label,reconsider,uri,study_uid,series_uid,sop_uid,"
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
  case HF_LABEL_ISSUE_SCORE:
  case HF_EARLY_LABEL_ISSUE_SCORE: return v < 0 ? 1 : v > 1 ? 0 : 1 - v;
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
                         v->early_label_issue_score, v->grand};
  for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
    JW(o, ",");
    const int count = i == 0 || i == 8 || i == 9; /* seen, forgetting, forgetting_events */
    if (count && isfinite(nums[i])) jw_count(o, nums[i]);
    else csv_num(o, nums[i]);
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
  JW(o, ",\"corrected_label\":");
  jw_json(o, st_corrected(ds, key));
  JW(o, ",\"reconsider\":%s,\"viewer_url\":", st_reconsider(ds, key, e->reconsider) ? "true" : "false");
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
    char *text = jtext_dump(val, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text) o->failed = 1;
    JW(o, "%s", n++ ? "," : "");
    jw_str(o, k);
    JW(o, ":");
    jw_json(o, text);
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

static const export_format formats[] = {
    {"csv", "text/csv; charset=utf-8", "", "csv", csv_header, "", "", write_csv},
    {"jsonl", "application/x-ndjson", "", "jsonl", "", "", "", write_jsonl},
    /* each task starts on a line of its own */
    {"label-studio", "application/json", "-label-studio", "json", "[", "\n]\n", "]\n", write_label_studio},
    {"fiftyone", "text/csv; charset=utf-8", "-fiftyone", "csv", fiftyone_header, "", "", write_fiftyone},
    {"ohif", "application/x-ndjson", "-ohif", "jsonl", "", "", "", write_ohif},
};
#define NFORMATS ((int)(sizeof formats / sizeof formats[0]))

int export__fmt_find(const char *name) {
  for (int i = 0; i < NFORMATS; i++)
    if (strcmp(formats[i].name, name) == 0) return i;
  return -1;
}

const export_format *export__fmt_get(int f) {
  return &formats[f];
}

void export__fmt_item(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v) {
  meta_fields m;
  meta_read(ds, key, &m);
  if (m.failed) e->page.failed = 1; /* the export ends with an error rather than leave the meta out */
  e->rank++;
  formats[e->format].write(e, ds, key, score, v, &m);
  json_decref(m.root);
}
