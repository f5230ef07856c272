/* jsonw.h — JSON responses written straight into a buffer.
 *
 * Responses here are mostly arrays of numbers and lists of records; building a
 * jansson tree for them would cost more than the work behind them. A jw is a
 * buf (buf.h): an append that runs out of memory marks it failed, and
 * jw_respond then answers 500 rather than a document cut short. */
#ifndef FOCALD_JSONW_H
#define FOCALD_JSONW_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "history.h"
#include "http.h"
#include "state.h"

typedef buf jw;

#define JW(o, ...) buf_printf((o), __VA_ARGS__)

/* Appends text as it is. */
static inline void jw_lit(jw *o, const char *s) {
  buf_lit(o, s);
}
/* Appends n bytes of s as they are. */
static inline void jw_mem(jw *o, const char *s, size_t n) {
  buf_append(o, s, n);
}
/* Appends an integer in decimal. */
void jw_int(jw *o, int64_t v);
/* Appends a JSON string literal (jsonstr.h: escaped, bytes that are not UTF-8 as \ufffd). */
void jw_str(jw *o, const char *s);
/* Appends stored JSON text (a meta, a label) as it is, U+2028 and U+2029 escaped (jsonstr.h); NULL
 * (no label) is null. */
void jw_json(jw *o, const char *json);
/* Appends a number as float32 with 9 significant digits; non-finite is null. */
void jw_num(jw *o, double v);
/* A count (seen, forgetting): a whole value below 2^53 written whole (jw_num would round it to a float32 past
 * 2^24), anything else as jw_num writes it (a mean of counts over runs). */
void jw_count(jw *o, double v);
/* Appends an RFC 3339 time (UTC) in quotes; instants past years 0000 and 9999 as the nearest of them. */
void jw_time(jw *o, int64_t unix_s);
void jw_time_ms(jw *o, int64_t unix_ms);
/* The history fields, comma-separated, without braces. */
void jw_history(jw *o, const hist_view *h);
/* ,"status":...,"meta":{...} of sample key (dataset read-locked). */
void jw_sample_tail(jw *o, const st_dataset *ds, uint32_t key);
/* Hands the buffer to the response (status, application/json), or a 500 when it failed. Returns 0. */
int jw_respond(http_resp *resp, int status, jw *o);

#endif /* FOCALD_JSONW_H */
