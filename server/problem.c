/* problem.c — the error table's lookups and problem construction. */
#include "problem.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
  int status;
  const char *name;
  const char *title;
} table[P_COUNT] = {
    [P_NONE] = {200, "none", "No error"},
#define PROBLEM_ROW(code, st, nm, ti) [code] = {st, nm, ti},
    PROBLEM_TABLE(PROBLEM_ROW)
#undef PROBLEM_ROW
};

int problem_status(problem_code code) {
  return (unsigned)code < P_COUNT ? table[code].status : 500;
}

const char *problem_name(problem_code code) {
  return (unsigned)code < P_COUNT ? table[code].name : "internal";
}

const char *problem_title(problem_code code) {
  return (unsigned)code < P_COUNT ? table[code].title : "Internal error";
}

int problem_set(problem *p, problem_code code, const char *field, const char *fmt, ...) {
  va_list ap;
  p->code = code;
  snprintf(p->field, sizeof p->field, "%s", field ? field : "");
  va_start(ap, fmt);
  vsnprintf(p->detail, sizeof p->detail, fmt, ap);
  va_end(ap);
  return -1;
}

char *problem_pointer_add(char *ptr, size_t n, const char *token) {
  size_t j = strnlen(ptr, n);
  if (j + 1 >= n) return ptr;
  ptr[j++] = '/';
  for (const char *t = token; *t; t++) {
    const int escaped = *t == '~' || *t == '/';
    if (j + 1 + (size_t)escaped >= n) {
      if (((unsigned char)*t & 0xC0) == 0x80) { /* the byte left out continues a character: drop its start too */
        while (j > 0 && ((unsigned char)ptr[j - 1] & 0xC0) == 0x80) j--;
        if (j > 0) j--;
      }
      break;
    }
    if (escaped) ptr[j++] = '~';
    ptr[j++] = *t == '~' ? '0' : *t == '/' ? '1' : *t;
  }
  ptr[j] = '\0';
  return ptr;
}
