/* jtext.c — JSON text into and out of jansson, refused whole when memory ran out on the way (jtext.h). */
#include "jtext.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* set when one of jansson's allocations on this thread failed; cleared by each call below */
static _Thread_local int failed;
/* set while one of the calls below runs on this thread */
static _Thread_local int within;

/* jansson's lexer saves each character of a token in a buffer it grows by doubling (16 bytes, then 32, 64
 * and on), and ignores a failure to grow it: the character is dropped and the scan goes on. A string saved
 * without its closing quote is then decoded past the end of its buffer, into a copy allocated for the
 * shorter text (a heap overflow), and a number whose next character was dropped fails an assertion when that
 * character is put back (an abort). jansson handles every other allocation's failure: it ends the parse or
 * dump with an error. So within a call, once an allocation has failed:
 * - requests of a size the lexer's buffer grows to (a power of two, 32 and up) are served from this thread's
 *   reserve, so that no character is dropped, until one is refused;
 * - a request of another size is refused, and so is one the reserve cannot hold; from the first refusal on
 *   every request is. A string's copy is allocated after its whole token is read, so a token that lost a
 *   character is never decoded.
 * The result is discarded either way. A number token longer than about a quarter of the reserve could still
 * meet the assertion, so jtext_loadb refuses a text with a number token longer than NUMBER_MAX before jansson
 * reads it (no JSON writer needs a tenth of that: a double's exact decimal expansion has under 1,100
 * digits). */
enum { RESERVE = 32768 };
static _Thread_local _Alignas(16) unsigned char reserve[RESERVE];
static _Thread_local size_t reserved; /* bytes of the reserve handed out in this call */
static _Thread_local int refusing;    /* a request was refused in this call: every later one is */

static int in_reserve(const void *p) {
  const unsigned char *c = p;
  return c >= reserve && c < reserve + RESERVE;
}

static void *from_reserve(size_t n) {
  if (refusing || n < 32 || (n & (n - 1)) != 0 || n > RESERVE - reserved) {
    refusing = 1;
    return NULL;
  }
  void *p = reserve + reserved;
  reserved += n;
  return p;
}

static void *jtext_malloc(size_t n) {
  if (failed && within) return from_reserve(n);
  void *p = malloc(n);
  if (!p) {
    failed = 1;
    if (within) return from_reserve(n);
  }
  return p;
}

/* What the reserve handed out is taken back whole when the next call begins. */
static void jtext_free(void *p) {
  if (!in_reserve(p)) free(p);
}

static void begin(void) {
  failed = 0;
  reserved = 0;
  refusing = 0;
  within = 1;
}

void jtext_init(void) {
  json_set_alloc_funcs(jtext_malloc, jtext_free);
}

char *jtext_dump(const json_t *v, size_t flags) {
  begin();
  char *text = json_dumps(v, flags);
  within = 0;
  if (failed) {
    jtext_free(text);
    return NULL;
  }
  return text;
}

enum { NUMBER_MAX = 4096 };

static int numeric(unsigned char c) {
  return (c >= '0' && c <= '9') || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-';
}

/* Where the first run of more than NUMBER_MAX characters of a number outside strings begins in text, or len
 * if there is none. Such a run holds a character at an offset of k * NUMBER_MAX - 1, so a text is read whole
 * only when one of those characters begins a long enough run of number characters (inside a string or not). */
static size_t long_number(const unsigned char *t, size_t len) {
  size_t p = NUMBER_MAX - 1;
  while (p < len) {
    if (!numeric(t[p])) {
      p += NUMBER_MAX;
      continue;
    }
    size_t a = p, b = p;
    while (a > 0 && numeric(t[a - 1])) a--;
    while (b < len && numeric(t[b])) b++;
    if (b - a > NUMBER_MAX) break;
    p = b + NUMBER_MAX - 1 - b % NUMBER_MAX; /* the next probe past the run */
  }
  if (p >= len) return len;
  size_t run = 0;
  int in_string = 0;
  for (size_t i = 0; i < len; i++) {
    const unsigned char c = t[i];
    if (in_string) {
      if (c == '\\') i++;
      else if (c == '"') in_string = 0;
    } else if (numeric(c)) {
      if (++run > NUMBER_MAX) return i + 1 - run;
      continue;
    } else if (c == '"') {
      in_string = 1;
    }
    run = 0;
  }
  return len;
}

/* The line and column (in characters, from 1) of offset at in text, as jansson counts them. */
static void place(const unsigned char *t, size_t at, json_error_t *e) {
  int line = 1, column = 0;
  for (size_t i = 0; i <= at; i++) {
    if (t[i] == '\n' && i < at) {
      line++;
      column = 0;
    } else if ((t[i] & 0xc0) != 0x80) {
      column++;
    }
  }
  memset(e, 0, sizeof *e);
  e->line = line;
  e->column = column;
  e->position = (int)at;
  snprintf(e->text, sizeof e->text, "a number of more than %d characters", NUMBER_MAX);
}

json_t *jtext_loadb(const char *text, size_t len, size_t flags, json_error_t *e, int *oom) {
  if (oom) *oom = 0;
  const size_t at = long_number((const unsigned char *)text, len);
  if (at < len) {
    if (e) place((const unsigned char *)text, at, e);
    return NULL;
  }
  begin();
  json_t *v = json_loadb(text, len, flags, e);
  within = 0;
  const int out = failed;
  if (out) {
    json_decref(v);
    v = NULL;
    if (e) {
      memset(e, 0, sizeof *e);
      strcpy(e->text, "out of memory");
    }
  }
  if (oom) *oom = out;
  return v;
}

json_t *jtext_loads(const char *text, size_t flags, json_error_t *e, int *oom) {
  return jtext_loadb(text, strlen(text), flags, e, oom);
}
