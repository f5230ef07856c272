/* jsonstr.h — JSON string literals: the one escaper behind responses, problem details and log lines. */
#ifndef FOCALD_JSONSTR_H
#define FOCALD_JSONSTR_H

#include <stddef.h>

/* Receives n bytes of output. */
typedef void (*jsonstr_sink)(void *ctx, const char *p, size_t n);

/* Writes s as a JSON string literal, quotes included, through put: quotes,
 * backslashes and control characters escaped; bytes that are not well-formed
 * UTF-8 (a percent-decoded path segment can hold any byte, and a "%.80s" can cut
 * a character in two) written as \ufffd, so the output is always valid JSON.
 * U+2028 and U+2029 are escaped too. Runs of plain characters reach put in one
 * call. */
void jsonstr_write(const char *s, jsonstr_sink put, void *ctx);

/* Writes JSON text (a stored meta or label, as jansson wrote it) through put as
 * it is, but for U+2028 and U+2029, which go out escaped as jsonstr_write
 * escapes them, so no JSON focald writes holds either. */
void jsonstr_json(const char *json, jsonstr_sink put, void *ctx);

/* The length of the UTF-8 character at p (1 to 4), or 0 if p does not start a
 * well-formed one (overlong forms, surrogates, past U+10FFFF, cut short). */
size_t utf8_char_len(const unsigned char *p);

#endif /* FOCALD_JSONSTR_H */
