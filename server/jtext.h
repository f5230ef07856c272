/* jtext.h — JSON text into and out of jansson, refused whole when memory ran out on the way.
 *
 * jansson 2.14 can carry on after an allocation fails: json_dumps can return a text with an object's key
 * left out (its dump of a sorted key ignores the error), and its parser can go on from a token it could not
 * save whole, to a value other than the text's, a heap overflow or an assertion. Every allocation jansson
 * makes goes through jtext's allocator, which remembers a failure for the thread and, within these calls,
 * keeps the parser from losing a character (jtext.c); these calls then answer out of memory, never a result
 * the failure touched. jtext_loadb refuses a text with a number token longer than 4096 characters, one the
 * parser could lose a character of, as not JSON.
 */
#ifndef FOCALD_JTEXT_H
#define FOCALD_JTEXT_H

#include <jansson.h>
#include <stddef.h>

/* Routes jansson's allocations through jtext's. Call once, before any thread uses jansson. */
void jtext_init(void);

/* json_dumps: a malloc'd text (the caller frees it), or NULL when memory ran out while it was written. */
char *jtext_dump(const json_t *v, size_t flags);

/* json_loadb: a new reference, or NULL when the text is not JSON or has a number token longer than 4096
 * characters (*e says why and where) or memory ran out (*oom is then 1; oom may be NULL). */
json_t *jtext_loadb(const char *text, size_t len, size_t flags, json_error_t *e, int *oom);

/* jtext_loadb of a NUL-terminated text. */
json_t *jtext_loads(const char *text, size_t flags, json_error_t *e, int *oom);

#endif /* FOCALD_JTEXT_H */
