/* csvw.c — CSV cells for exports: RFC 4180 quoting and the formula-injection guard (see csvw.h). */
#include "csvw.h"

#include <string.h>

int csv_is_formula(const char *s) {
  return s && *s && strchr("=+-@\t\r", *s) != NULL;
}

/* Appends s quoted, with prefix (may be "") inside the quotes; quotes in s doubled. */
static void quoted(buf *o, const char *prefix, const char *s) {
  buf_append(o, "\"", 1);
  buf_lit(o, prefix);
  for (const char *q = strchr(s, '"'); q; q = strchr(s, '"')) {
    buf_append(o, s, (size_t)(q - s + 1));
    buf_append(o, "\"", 1); /* a quote inside a quoted cell is doubled */
    s = q + 1;
  }
  buf_lit(o, s);
  buf_append(o, "\"", 1);
}

void csv_cell(buf *o, const char *s) {
  if (!s) return;
  if (strpbrk(s, ",\"\r\n")) quoted(o, "", s);
  else buf_lit(o, s);
}

void csv_text(buf *o, const char *s) {
  if (csv_is_formula(s)) quoted(o, "'", s);
  else csv_cell(o, s);
}
