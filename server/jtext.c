/* jtext.c — JSON text into and out of jansson, refused whole when memory ran out on the way (jtext.h). */
#include "jtext.h"

#include <stdlib.h>
#include <string.h>

/* set when one of jansson's allocations on this thread failed; cleared by each call below */
static _Thread_local int failed;

static void *jtext_malloc(size_t n) {
  void *p = malloc(n);
  if (!p) failed = 1;
  return p;
}

void jtext_init(void) {
  json_set_alloc_funcs(jtext_malloc, free);
}

char *jtext_dump(const json_t *v, size_t flags) {
  failed = 0;
  char *text = json_dumps(v, flags);
  if (failed) {
    free(text);
    return NULL;
  }
  return text;
}

json_t *jtext_loadb(const char *text, size_t len, size_t flags, json_error_t *e, int *oom) {
  failed = 0;
  json_t *v = json_loadb(text, len, flags, e);
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
