/* buf.h — growable byte buffers that remember a failed allocation.
 *
 * Responses, metrics and stored JSON are written by appending to a buf. An
 * append that cannot get memory marks the buffer failed, and every later
 * append is skipped: whoever finishes the buffer checks buf.failed once and
 * answers an error instead of a document cut short. Nothing else is needed
 * at each append.
 */
#ifndef FOCALD_BUF_H
#define FOCALD_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct buf {
  char *b;      /* NUL-terminated while len > 0; malloc'd */
  size_t len, cap;
  int failed;   /* an append ran out of memory: the content is incomplete */
} buf;

/* buf_reserve's slow path: grows the buffer. */
int buf_grow(buf *o, size_t n);

/* Makes room for n more bytes (and a NUL). Returns 0, or -1 when the buffer has failed. Inline: responses
 * are thousands of small appends. */
static inline int buf_reserve(buf *o, size_t n) {
  if (!o->failed && o->b && o->cap - o->len > n) return 0;
  return buf_grow(o, n);
}

/* Appends n bytes of s. */
static inline void buf_append(buf *o, const char *s, size_t n) {
  if (buf_reserve(o, n) != 0) return;
  memcpy(o->b + o->len, s, n);
  o->len += n;
  o->b[o->len] = '\0';
}

/* Appends the NUL-terminated s. */
static inline void buf_lit(buf *o, const char *s) {
  buf_append(o, s, strlen(s));
}
/* Appends printf-formatted text. */
void buf_printf(buf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Hands over the bytes (the caller frees them) and empties the buffer; NULL if it failed (freed then). */
char *buf_take(buf *o, size_t *len /* OUT, may be NULL */);
/* Frees the bytes and empties the buffer. */
void buf_free(buf *o);

#endif /* FOCALD_BUF_H */
