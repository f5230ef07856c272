/* jsonstr.c — JSON string literals, escaped and made valid UTF-8. */
#include "jsonstr.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

size_t utf8_char_len(const unsigned char *p) {
  const unsigned char c = p[0];
  if (c < 0x80) return 1;
  const size_t n = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
  if (n == 0 || c > 0xf4) return 0;
  uint32_t cp = c & (0x7f >> n);
  for (size_t k = 1; k < n; k++) {
    if ((p[k] & 0xc0) != 0x80) return 0; /* also stops at the NUL */
    cp = cp << 6 | (p[k] & 0x3f);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return n;
}

/* U+2028 and U+2029 are valid in a JSON string, but they end a line for
 * JavaScript before ES2019 and for readers that split JSON Lines with Python's
 * str.splitlines(), which would cut a record in two; so they go out escaped.
 * p[0] is not NUL, so p[1] may be read, and p[2] when p[1] is not NUL. */
static int line_separator(const unsigned char *p) {
  return p[0] == 0xe2 && p[1] == 0x80 && (p[2] == 0xa8 || p[2] == 0xa9);
}

static void put_line_separator(const unsigned char *p, jsonstr_sink put, void *ctx) {
  put(ctx, p[2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
}

void jsonstr_write(const char *s, jsonstr_sink put, void *ctx) {
  put(ctx, "\"", 1);
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    /* a run of characters written as they are */
    const unsigned char *run = p;
    size_t n;
    while (*p && *p != '"' && *p != '\\' && *p >= 0x20 && !line_separator(p) && (n = utf8_char_len(p)) != 0) p += n;
    if (p > run) put(ctx, (const char *)run, (size_t)(p - run));
    if (!*p) break;
    char esc[8];
    if (line_separator(p)) {
      put_line_separator(p, put, ctx);
      p += 3;
      continue;
    }
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      put(ctx, esc, 2);
    } else if (*p < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *p);
      put(ctx, esc, 6);
    } else {
      put(ctx, "\\ufffd", 6); /* one replacement per byte that starts no character */
    }
    p++;
  }
  put(ctx, "\"", 1);
}

void jsonstr_json(const char *json, jsonstr_sink put, void *ctx) {
  const char *run = json, *p = json, *end = json + strlen(json), *e;
  /* in JSON text the two can only be inside strings, where their escapes mean the same; memchr
   * skips to each 0xe2, the first byte of U+2000 to U+2FFF only */
  while ((e = memchr(p, 0xe2, (size_t)(end - p))) != NULL) {
    if (!line_separator((const unsigned char *)e)) {
      p = e + 1;
      continue;
    }
    if (e > run) put(ctx, run, (size_t)(e - run));
    put_line_separator((const unsigned char *)e, put, ctx);
    run = p = e + 3;
  }
  if (end > run) put(ctx, run, (size_t)(end - run));
}
