/* csvw.h — CSV cells for exports: RFC 4180 quoting and the formula-injection guard.
 *
 * A spreadsheet opening a CSV runs a cell that starts with '=', '+', '-' or
 * '@' (and, in some programs, a tab or a carriage return) as a formula. Text
 * cells therefore go through csv_text, which follows OWASP's rule for CSV
 * injection: such a cell is prefixed with a single quote and quoted. Numbers
 * written by the numeric columns are not text and are never changed (a
 * negative aum stays -1.5); neither is a cell that must reach another program
 * byte for byte (csv_cell), where the caller decides what a leading formula
 * character means for it. */
#ifndef FOCALD_CSVW_H
#define FOCALD_CSVW_H

#include "buf.h"

/* Whether a text cell starting like s would be read as a formula. */
int csv_is_formula(const char *s);
/* Appends s as one cell (nothing for NULL), quoted when it holds a comma, a
 * quote or a line break, quotes doubled (RFC 4180); the text is kept as is. */
void csv_cell(buf *o, const char *s);
/* Appends the text cell s (nothing for NULL) as csv_cell does, but a cell
 * csv_is_formula flags is written as "'<s>" (quoted, quotes doubled). */
void csv_text(buf *o, const char *s);

#endif /* FOCALD_CSVW_H */
