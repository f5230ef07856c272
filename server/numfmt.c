/* numfmt.c — float32 to decimal text without printf.
 *
 * A batch response carries a dozen floats per sample, and printf's exact
 * arbitrary-precision conversion spent a fifth of the daemon's CPU on them.
 * A float32 needs only 9 significant digits to read back exactly; scaling
 * the value (converted to double, which holds it exactly) by a power of ten
 * and rounding to a 9-digit integer is accurate to 1e-16, far inside the
 * half unit in the last place of a float32 (3e-8) that the round trip needs.
 */
#include "numfmt.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static const double pow10_table[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* d * 10^k for |k| <= 66, in at most three exact-power steps. */
static double scale10(double d, int k) {
  while (k > 22) {
    d *= 1e22;
    k -= 22;
  }
  while (k < -22) {
    d /= 1e22;
    k += 22;
  }
  return k >= 0 ? d * pow10_table[k] : d / pow10_table[-k];
}

int num_format_f32(char *out, float v) {
  char *p = out;
  if (v == 0.0f) {
    *p++ = '0';
    *p = '\0';
    return 1;
  }
  if (v < 0.0f) {
    *p++ = '-';
    v = -v;
  }
  double d = (double)v;
  int e = (int)floor(log10(d));
  /* m: the 9 significant digits as an integer in [1e8, 1e9) */
  uint64_t m = (uint64_t)nearbyint(scale10(d, 8 - e));
  if (m >= 1000000000u) {
    e++;
    m = (uint64_t)nearbyint(scale10(d, 8 - e));
  } else if (m < 100000000u) {
    e--;
    m = (uint64_t)nearbyint(scale10(d, 8 - e));
  }
  char dig[10];
  for (int i = 8; i >= 0; i--) {
    dig[i] = (char)('0' + m % 10);
    m /= 10;
  }
  int nd = 9;
  while (nd > 1 && dig[nd - 1] == '0') nd--;
  if (e < -4 || e >= 9) {
    /* exponent notation, as %g: d.ddde-07 */
    *p++ = dig[0];
    if (nd > 1) {
      *p++ = '.';
      memcpy(p, dig + 1, (size_t)nd - 1);
      p += nd - 1;
    }
    *p++ = 'e';
    int x = e;
    if (x < 0) {
      *p++ = '-';
      x = -x;
    } else {
      *p++ = '+';
    }
    if (x >= 100) *p++ = (char)('0' + x / 100);
    *p++ = (char)('0' + x / 10 % 10);
    *p++ = (char)('0' + x % 10);
  } else if (e >= 0) {
    for (int i = 0; i <= e; i++) *p++ = i < nd ? dig[i] : '0';
    if (nd > e + 1) {
      *p++ = '.';
      memcpy(p, dig + e + 1, (size_t)(nd - e - 1));
      p += nd - e - 1;
    }
  } else {
    *p++ = '0';
    *p++ = '.';
    for (int i = 0; i < -e - 1; i++) *p++ = '0';
    memcpy(p, dig, (size_t)nd);
    p += nd;
  }
  *p = '\0';
  return (int)(p - out);
}

int num_fits_f32(double d) {
  return fabs(d) < 0x1.ffffffp127; /* from there on, round to nearest (even) gives infinity */
}
