/* fl_vmath.h — fixed-width float vectors and the exp/log approximations every kernel shares.
 *
 * The kernels are written once on GCC/Clang generic vectors of FL_W floats and
 * compiled several times with different -march flags (see lib/src/README.md);
 * the compiler maps a 16-lane vector onto one AVX-512 register, two AVX2
 * registers or four SSE2 registers. libm's scalar functions would stop the
 * vectorisation, so exp and log are approximated here, with their accuracy
 * stated and tested (test_lib_vmath):
 *   fl__vexpneg   e^x for x <= 0, relative error < 2e-7, 0 below -86.6
 *   fl__vlog1p01  log(1 + u) for u in [0, 1], relative error < 3e-7
 *   fl__vlog      log(x) for x in [0, inf), relative error < 3e-7;
 *                 x = 0 gives about -104 (callers clamp)
 *   fl__vlog1m    log(1 - x) for x in [0, 1), relative error < 3e-7
 * Everything is static inline: each kernel variant gets its own copy compiled
 * for its instruction set.
 */
#ifndef FL_VMATH_H
#define FL_VMATH_H

#include <stdint.h>
#include <string.h>

#ifndef FL_W
#define FL_W 16 /* lanes; each variant may set its native width */
#endif

/* Element code must be inlined into its loop: called, every vector would pass through memory. */
#define FL__HOT static inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(FL_W * sizeof(float))));
typedef int32_t vi __attribute__((vector_size(FL_W * sizeof(int32_t))));
typedef uint32_t vu __attribute__((vector_size(FL_W * sizeof(uint32_t))));

#define FL_LN2 0.693147180559945309f
#define FL_SQRT2 1.41421356237309505f

static inline vf vf_set(float a) {
  return (vf){0} + a;
}

static inline vi vi_set(int32_t a) {
  return (vi){0} + a;
}

/* Lane indices 0 .. FL_W-1. */
static inline vi vi_iota(void) {
  vi r;
  for (int l = 0; l < FL_W; l++) r[l] = l;
  return r;
}

static inline vf vf_load(const float *p) {
  vf v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline void vf_store(float *p, vf v) {
  memcpy(p, &v, sizeof v);
}

/* Loads the first cnt (< FL_W) floats of p; other lanes get fill. */
static inline vf vf_load_part(const float *p, int cnt, float fill) {
  float buf[FL_W];
  for (int l = 0; l < FL_W; l++) buf[l] = l < cnt ? p[l] : fill;
  return vf_load(buf);
}

static inline void vf_store_part(float *p, vf v, int cnt) {
  float buf[FL_W];
  vf_store(buf, v);
  for (int l = 0; l < cnt; l++) p[l] = buf[l];
}

/* mask ? a : b, lane by lane; mask lanes are all ones or all zeros. */
static inline vf vsel(vi mask, vf a, vf b) {
  return (vf)(((vi)a & mask) | ((vi)b & ~mask));
}

static inline vi vsel_i(vi mask, vi a, vi b) {
  return (a & mask) | (b & ~mask);
}

static inline vf vmax(vf a, vf b) {
  return vsel(a > b, a, b);
}

static inline vf vmin(vf a, vf b) {
  return vsel(a < b, a, b);
}

/* Lane-wise square root; compilers map the loop onto the vector instruction. */
static inline vf vsqrt(vf a) {
  vf r;
  for (int l = 0; l < FL_W; l++) r[l] = __builtin_sqrtf(a[l]);
  return r;
}

static inline vf vabs(vf a) {
  return (vf)((vi)a & vi_set(0x7fffffff));
}

/* All-ones lanes where a is not finite (NaN or +-inf). */
static inline vi vnonfinite(vf a) {
  return ((vi)a & vi_set(0x7f800000)) == vi_set(0x7f800000);
}

static inline int vany(vi mask) {
  uint64_t w[FL_W / 2], r = 0; /* two lanes per word: half the extractions */
  memcpy(w, &mask, sizeof w);
  for (int i = 0; i < FL_W / 2; i++) r |= w[i];
  return r != 0;
}

/* FL_W doubles: squared gradients are summed in double, where a square of a float near FLT_MAX still fits. */
typedef double vd __attribute__((vector_size(FL_W * sizeof(double))));

/* a, lane by lane, in double. */
static inline vd vd_of(vf a) {
  return __builtin_convertvector(a, vd);
}

/* a * a, lane by lane, in double. */
static inline vd vd_sq(vf a) {
  vd d = vd_of(a);
  return d * d;
}

static inline double vsum_d(vd a) {
  double s = 0.0;
  for (int l = 0; l < FL_W; l++) s += a[l];
  return s;
}

static inline double vsum(vf a) {
  double s = 0.0;
  for (int l = 0; l < FL_W; l++) s += a[l];
  return s;
}

static inline float vhmax(vf a) {
  float m = a[0];
  for (int l = 1; l < FL_W; l++) m = a[l] > m ? a[l] : m;
  return m;
}

/* Splits 2 * FL_W interleaved floats (pairs) into the first and second of each
 * pair: the (position, class) layout of a two-class output, one vector per class. */
static inline void vf_deinterleave2(const float *p, vf *even, vf *odd) {
  vf a = vf_load(p), b = vf_load(p + FL_W);
#if defined(__clang__)
#if FL_W == 4
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7);
#elif FL_W == 8
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15);
#else
  *even = __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  *odd = __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#endif
#else
  const vi twice = vi_iota() * 2;
  *even = __builtin_shuffle(a, b, twice);
  *odd = __builtin_shuffle(a, b, twice + 1);
#endif
}

/* e^x for x <= 0. x = n ln2 + r with |r| <= ln2/2; e^r by a degree-6
 * polynomial fitted for relative error (2e-9 in exact arithmetic); 2^n built
 * in the exponent bits. Below -86.6 the result is 0 rather than a subnormal,
 * so 2^n never leaves the normal range. */
static inline vf fl__vexpneg(vf x) {
  const vf magic = vf_set(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
  vi under = x < vf_set(-86.6f);
  x = vmax(x, vf_set(-86.6f));
  vf kf = x * 1.44269504088896341f + magic;
  vi n = (vi)kf - (vi)magic;
  kf -= magic;
  /* ln2 split so that kf * hi is exact: the reduction loses no bits. */
  vf r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  vf p = vf_set(1.384362237e-3f);
  p = p * r + 8.374155711e-3f;
  p = p * r + 4.166800266e-2f;
  p = p * r + 1.666643126e-1f;
  p = p * r + 4.999999421e-1f;
  p = p * r + 1.000000032e+0f;
  p = p * r + 1.0f;
  vf res = (vf)((vu)p + ((vu)n << 23)); /* unsigned: the shift of a negative n is defined */
  return vsel(under, vf_set(0.0f), res);
}

/* log(1 + a) for a in [sqrt(1/2) - 1, sqrt(2) - 1] as 2 atanh(a / (2 + a)):
 * |s| <= 0.1716, so five odd terms leave a relative error below 4e-9. */
static inline vf fl__vlog1p_core(vf a) {
  vf s = a / (2.0f + a);
  vf z = s * s;
  vf p = vf_set(0.2222222222f); /* 2/9 */
  p = p * z + 0.2857142857f;      /* 2/7 */
  p = p * z + 0.4f;               /* 2/5 */
  p = p * z + 0.6666666667f;      /* 2/3 */
  p = p * z + 2.0f;
  return s * p;
}

/* log(1 + u) for u in [0, 1]. Above sqrt(2) - 1 it uses
 * log(1 + u) = ln2 + log(1 + (u - 1) / 2), which keeps the core's argument
 * small; (u - 1) is exact there, so no bits of u are lost to 1 + u. */
static inline vf fl__vlog1p01(vf u) {
  vi big = u > vf_set(FL_SQRT2 - 1.0f);
  vf a = vsel(big, (u - 1.0f) * 0.5f, u);
  vf k = vsel(big, vf_set(FL_LN2), vf_set(0.0f));
  return k + fl__vlog1p_core(a);
}

/* Natural log for x >= 0 (x finite). x = 2^e * mf with mf in [sqrt(1/2), sqrt(2));
 * subnormals are scaled by 2^23 first. */
static inline vf fl__vlog(vf x) {
  vi tiny = x < vf_set(1.17549435e-38f);
  vf xs = vsel(tiny, x * 8388608.0f, x);
  vi bits = (vi)xs;
  vi e = ((bits >> 23) & vi_set(0xff)) - 127;
  vf mant = (vf)((bits & vi_set(0x007fffff)) | vi_set(0x3f800000));
  vi big = mant > vf_set(FL_SQRT2);
  mant = vsel(big, mant * 0.5f, mant);
  e = e + (big & vi_set(1)) - (tiny & vi_set(23));
  vf ef = __builtin_convertvector(e, vf);
  return ef * 0.693359375f + (ef * -2.12194440e-4f + fl__vlog1p_core(mant - 1.0f));
}

/* log(1 - x) for x in [0, 1]; for small x it keeps the digits that 1 - x would
 * round away (log(1 - 1e-8) is -1e-8, not 0). x = 1 gives about -104. */
static inline vf fl__vlog1m(vf x) {
  vi small = x < vf_set(0.25f);
  return vsel(small, fl__vlog1p_core(-vmin(x, vf_set(0.25f))), fl__vlog(1.0f - x));
}

/* How q^g is computed for one g: 0 = always 1, k in 1..16 = k products,
 * -1 = exp(g log q). Chosen once per call, not per element. */
typedef struct fl__pow {
  float g;
  int k;
} fl__pow;

static inline fl__pow fl__pow_plan(float g) {
  fl__pow p = {g, -1};
  if (g == 0.0f) p.k = 0;
  else if (g >= 1.0f && g <= 16.0f && (float)(int)g == g) p.k = (int)g;
  return p;
}

/* q^g for q in [0, 1] (0^g = 0 for g > 0, q^0 = 1). */
static inline vf fl__vpow01(vf q, fl__pow pl) {
  if (pl.k == 0) return vf_set(1.0f);
  if (pl.k > 0) {
    vf r = q;
    for (int i = 1; i < pl.k; i++) r *= q;
    return r;
  }
  vf r = fl__vexpneg(pl.g * fl__vlog(q));
  return vsel(q > vf_set(0.0f), r, vf_set(0.0f));
}

/* Vector power with a per-lane exponent g >= 0 (ASL's gamma_pos / gamma_neg). */
static inline vf fl__vpow01_v(vf q, vf g) {
  vf r = fl__vexpneg(g * fl__vlog(q));
  r = vsel(q > vf_set(0.0f), r, vf_set(0.0f));
  return vsel(g == vf_set(0.0f), vf_set(1.0f), r);
}

#endif /* FL_VMATH_H */
