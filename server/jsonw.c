/* jsonw.c — JSON responses written directly: strings, float32 numbers, history records. */
#include "jsonw.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonstr.h"
#include "numfmt.h"

void jw_int(jw *o, int64_t v) {
  char t[24];
  int i = sizeof t;
  uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
  do t[--i] = (char)('0' + u % 10);
  while ((u /= 10) != 0);
  if (v < 0) t[--i] = '-';
  jw_mem(o, t + i, sizeof t - (size_t)i);
}

static void jw_sink(void *ctx, const char *p, size_t n) {
  jw_mem(ctx, p, n);
}

void jw_str(jw *o, const char *s) {
  jsonstr_write(s, jw_sink, o);
}

void jw_json(jw *o, const char *json) {
  if (json) jsonstr_json(json, jw_sink, o);
  else jw_lit(o, "null");
}

void jw_count(jw *o, double v) {
  if (v == floor(v) && fabs(v) < 9007199254740992.0) JW(o, "%.0f", v);
  else jw_num(o, v);
}

void jw_num(jw *o, double v) {
  if (!isfinite(v) || fabs(v) > FLT_MAX) {
    jw_lit(o, "null");
    return;
  }
  if (buf_reserve(o, 32) != 0) return;
  o->len += (size_t)num_format_f32(o->b + o->len, (float)v);
  o->b[o->len] = '\0';
}

/* RFC 3339 years have four digits: an instant before 0000-01-01 or after 9999-12-31 (only a database or a
 * cluster peer focald did not write can hold one) is written as the nearest of the two. */
#define TIME_FIRST_S (-62167219200LL) /* 0000-01-01T00:00:00Z */
#define TIME_LAST_S 253402300799LL    /* 9999-12-31T23:59:59Z */

/* Writes unix_s (and ms, when >= 0) as an RFC 3339 time in quotes. */
static void put_time(jw *o, int64_t unix_s, int ms) {
  if (unix_s < TIME_FIRST_S) {
    unix_s = TIME_FIRST_S;
    if (ms >= 0) ms = 0;
  } else if (unix_s > TIME_LAST_S) {
    unix_s = TIME_LAST_S;
    if (ms >= 0) ms = 999;
  }
  time_t t = (time_t)unix_s;
  struct tm tm = {0};
  gmtime_r(&t, &tm); /* every instant of the range fits in a struct tm */
  JW(o, "\"%04d-%02d-%02dT%02d:%02d:%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
     tm.tm_sec);
  if (ms >= 0) JW(o, ".%03d", ms);
  JW(o, "Z\"");
}

void jw_time(jw *o, int64_t unix_s) {
  put_time(o, unix_s, -1);
}

void jw_time_ms(jw *o, int64_t unix_ms) {
  int64_t s = unix_ms / 1000;
  int ms = (int)(unix_ms % 1000);
  if (ms < 0) { /* before 1970: the second below, plus a positive fraction */
    ms += 1000;
    s--;
  }
  put_time(o, s, ms);
}

int jw_respond(http_resp *resp, int status, jw *o) {
  return http_json(resp, status, buf_take(o, NULL)); /* NULL when it failed: a 500 */
}

void jw_history(jw *o, const hist_view *h) {
  JW(o, "\"seen\":");
  jw_count(o, h->seen);
  JW(o, ",\"last_loss\":");
  jw_num(o, h->last_loss);
  JW(o, ",\"mean_loss\":");
  jw_num(o, h->mean_loss);
  JW(o, ",\"max_loss\":");
  jw_num(o, h->max_loss);
  JW(o, ",\"ema_loss\":");
  jw_num(o, h->ema_loss);
  JW(o, ",\"confidence\":");
  jw_num(o, h->confidence);
  JW(o, ",\"variability\":");
  jw_num(o, h->variability);
  JW(o, ",\"correctness\":");
  jw_num(o, h->correctness);
  JW(o, ",\"forgetting\":");
  jw_count(o, h->forgetting);
  JW(o, ",\"forgetting_events\":");
  jw_count(o, h->forgetting_events);
  JW(o, ",\"aum\":");
  jw_num(o, h->aum);
  JW(o, ",\"el2n\":");
  jw_num(o, h->el2n);
  JW(o, ",\"label_issue_score\":");
  jw_num(o, h->label_issue_score);
  JW(o, ",\"early_label_issue_score\":");
  jw_num(o, h->early_label_issue_score);
  JW(o, ",\"grand\":");
  jw_num(o, h->grand);
  if (h->has_step) {
    jw_lit(o, ",\"first_step\":");
    jw_int(o, h->first_step);
    jw_lit(o, ",\"last_step\":");
    jw_int(o, h->last_step);
  } else {
    jw_lit(o, ",\"first_step\":null,\"last_step\":null");
  }
  jw_lit(o, ",\"label\":");
  if (h->label >= 0) jw_int(o, h->label);
  else jw_lit(o, "null");
  jw_lit(o, h->label_issue ? ",\"label_issue\":true" : ",\"label_issue\":false");
}

void jw_sample_tail(jw *o, const st_dataset *ds, uint32_t key) {
  const char *meta = st_meta(ds, key);
  jw_lit(o, ",\"status\":\"");
  jw_lit(o, st_status_name(st_sample_status(ds, key)));
  jw_lit(o, "\",\"meta\":");
  jw_json(o, meta ? meta : "{}");
}

