/* fuzz_reader.h — reading a fuzz input as a recipe, one byte at a time.
 *
 * Past the end of the input every read gives 0, so a recipe of any length
 * describes a complete case.
 */
#ifndef FOCALD_FUZZ_READER_H
#define FOCALD_FUZZ_READER_H

#include <stddef.h>
#include <stdint.h>

typedef struct rd {
  const uint8_t *p;
  size_t n;
} rd;

static inline uint8_t rd_u8(rd *r) {
  if (!r->n) return 0;
  r->n--;
  return *r->p++;
}

#endif
