/* fuzz_common.h — how every focald fuzz target reports a broken invariant, and what a refusal must look like.
 *
 * A broken invariant prints its sentence and aborts: libFuzzer reports that as
 * a crash and saves the input. Everything here is static: a target includes
 * this header once.
 */
#ifndef FOCALD_FUZZ_COMMON_H
#define FOCALD_FUZZ_COMMON_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "problem.h"

static void fz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fz_fail(const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "\nfuzz: invariant violated: ");
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  abort();
}

/* A decoder that refuses must say why: a code with a 4xx status and a detail sentence. */
static inline void fz_check_refusal(const problem *err) {
  if (err->code == P_NONE) fz_fail("refused without a problem code");
  if (err->code == P_INTERNAL) fz_fail("refused as an internal error: %s", err->detail);
  int status = problem_status(err->code);
  if (status != 400 && status != 422) fz_fail("refused with status %d (%s)", status, problem_name(err->code));
  if (!err->detail[0]) fz_fail("refused (%s) without a detail", problem_name(err->code));
  if (!memchr(err->field, '\0', sizeof err->field) || !memchr(err->detail, '\0', sizeof err->detail))
    fz_fail("problem strings are not terminated");
  if (err->field[0] && err->field[0] != '/') fz_fail("field \"%s\" is not a JSON pointer", err->field);
}

#endif /* FOCALD_FUZZ_COMMON_H */
