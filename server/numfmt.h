/* numfmt.h — fast decimal text for float32 values in JSON responses. */
#ifndef FOCALD_NUMFMT_H
#define FOCALD_NUMFMT_H

/* Writes finite v with at most 9 significant digits (enough for every float32
 * to read back as itself), trailing zeros dropped, in fixed or exponent
 * notation by %g's rule. out needs 24 bytes; returns the length written.
 * Non-finite values are the caller's to handle. */
int num_format_f32(char *out, float v);

#endif /* FOCALD_NUMFMT_H */
