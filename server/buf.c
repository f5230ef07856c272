/* buf.c — growable byte buffers with a sticky failure flag. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_grow(buf *o, size_t n) {
  if (o->failed) return -1;
  if (o->b && o->cap - o->len > n) return 0;
  size_t want = o->cap ? o->cap : 4096;
  while (want - o->len <= n) {
    if (want > ((size_t)-1) / 2) {
      o->failed = 1;
      return -1;
    }
    want *= 2;
  }
  char *nb = realloc(o->b, want);
  if (!nb) {
    o->failed = 1;
    return -1;
  }
  o->b = nb;
  o->cap = want;
  return 0;
}

void buf_printf(buf *o, const char *fmt, ...) {
  if (!strchr(fmt, '%')) { /* plain text, the common case in responses: no formatting pass */
    buf_lit(o, fmt);
    return;
  }
  for (int pass = 0; pass < 2; pass++) {
    if (o->failed || buf_reserve(o, pass ? 0 : 64) != 0) return;
    va_list ap;
    va_start(ap, fmt);
    const size_t room = o->cap - o->len;
    const int n = vsnprintf(o->b + o->len, room, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->failed = 1;
      return;
    }
    if ((size_t)n < room) {
      o->len += (size_t)n;
      return;
    }
    if (buf_reserve(o, (size_t)n) != 0) return;
  }
}

char *buf_take(buf *o, size_t *len) {
  char *b = NULL;
  if (!o->failed && buf_reserve(o, 0) == 0) {
    b = o->b;
    b[o->len] = '\0';
  } else {
    free(o->b);
  }
  if (len) *len = b ? o->len : 0;
  o->b = NULL;
  o->len = o->cap = 0;
  o->failed = 0;
  return b;
}

void buf_free(buf *o) {
  free(o->b);
  o->b = NULL;
  o->len = o->cap = 0;
  o->failed = 0;
}
