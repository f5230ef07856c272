/* jsonw.h — writing JSON responses straight into a growing buffer.
 *
 * Responses here are mostly arrays of numbers and lists of records; building a
 * jansson tree for them would cost more than the work behind them. */
#ifndef FOCALD_JSONW_H
#define FOCALD_JSONW_H

#include <stddef.h>
#include <stdint.h>

#include "history.h"
#include "http.h"
#include "state.h"

typedef struct jw {
  char *b;
  size_t len, cap;
} jw;

#define JW(o, ...) buf_printf(&(o)->b, &(o)->len, &(o)->cap, __VA_ARGS__)

/* Makes room for n more bytes (and a NUL). Returns 0 or -1. */
int jw_reserve(jw *o, size_t n);
/* Appends text as it is. */
void jw_lit(jw *o, const char *s);
/* Appends n bytes of s as they are. */
void jw_mem(jw *o, const char *s, size_t n);
/* Appends an integer in decimal. */
void jw_int(jw *o, int64_t v);
/* Appends a JSON string literal. */
void jw_str(jw *o, const char *s);
/* Appends a number as float32 with 9 significant digits; non-finite is null. */
void jw_num(jw *o, double v);
/* Appends an RFC 3339 time (UTC) in quotes. */
void jw_time(jw *o, int64_t unix_s);
void jw_time_ms(jw *o, int64_t unix_ms);
/* The history fields, comma-separated, without braces. */
void jw_history(jw *o, const hist_view *h);
/* ,"status":...,"meta":{...} of sample key. */
void jw_sample_tail(jw *o, const st_dataset *ds, uint32_t key);
/* Hands the buffer to the response (status, application/json). Returns 0. */
int jw_respond(http_resp *resp, int status, jw *o);

#endif /* FOCALD_JSONW_H */
