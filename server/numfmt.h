/* numfmt.h — fast decimal text for float32 values in JSON responses. */
#ifndef FOCALD_NUMFMT_H
#define FOCALD_NUMFMT_H

/* Writes finite v with at most 9 significant digits (enough for every float32
 * to read back as itself), trailing zeros dropped, in fixed or exponent
 * notation by %g's rule. out needs 24 bytes; returns the length written.
 * Non-finite values are the caller's to handle. */
int num_format_f32(char *out, float v);

/* Whether the double d becomes a finite float32 when rounded to nearest: |d| below FLT_MAX plus half its
 * unit in the last place (0x1.ffffffp127), so that FLT_MAX as it is printed (3.40282347e+38, or the
 * shortest 3.4028235e+38), which is a little above it, still reads as FLT_MAX. NaN and infinities: 0. */
int num_fits_f32(double d);

#endif /* FOCALD_NUMFMT_H */
