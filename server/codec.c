/* codec.c — batch payload v3: "FLB3", n, then columns, then length-prefixed ids.
 *
 *   u32 magic, u32 n
 *   f32 loss[n], p_t[n], p_max[n], margin[n], correct[n], el2n[n], grad_norm[n]
 *   i32 pred[n], label[n]
 *   u8  scored[n]
 *   n x (u16 length, bytes)
 * Little-endian. Columns keep the blob compressible and the code simple.
 * Older versions are still read: version 2 ("FLB2", logged before schema 5)
 * has no grad_norm column, version 1 ("FLB1", before schema 4) neither an
 * el2n one; their observations unpack with those values NaN (unknown).
 */
#include "codec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC_V1 0x31424c46u /* "FLB1" */
#define MAGIC_V2 0x32424c46u /* "FLB2" */
#define MAGIC 0x33424c46u    /* "FLB3" */

static void put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void putf(unsigned char *p, float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  put32(p, v);
}

static float getf(const unsigned char *p) {
  uint32_t v = get32(p);
  float f;
  memcpy(&f, &v, 4);
  return f;
}

int codec_pack(const codec_batch *b, unsigned char **out, size_t *len) {
  size_t n = b->n, idbytes = 0;
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(b->ids[i]);
    if (l > 65535) return -1;
    idbytes += 2 + l;
  }
  size_t total = 8 + n * (7 * 4 + 2 * 4 + 1) + idbytes;
  unsigned char *buf = malloc(total ? total : 1);
  if (!buf) return -1;
  unsigned char *p = buf;
  put32(p, MAGIC);
  put32(p + 4, (uint32_t)n);
  p += 8;
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].loss);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].p_t);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].p_max);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].margin);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].correct);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].el2n);
  for (size_t i = 0; i < n; i++, p += 4) putf(p, b->obs[i].grad_norm);
  for (size_t i = 0; i < n; i++, p += 4) put32(p, (uint32_t)b->obs[i].pred);
  for (size_t i = 0; i < n; i++, p += 4) put32(p, (uint32_t)b->obs[i].label);
  for (size_t i = 0; i < n; i++) *p++ = (unsigned char)(b->obs[i].scored != 0);
  for (size_t i = 0; i < n; i++) {
    size_t l = strlen(b->ids[i]);
    p[0] = (unsigned char)l;
    p[1] = (unsigned char)(l >> 8);
    memcpy(p + 2, b->ids[i], l);
    p += 2 + l;
  }
  *out = buf;
  *len = total;
  return 0;
}

int codec_unpack(const unsigned char *buf, size_t len, const codec_when *when, codec_unpacked *out) {
  memset(out, 0, sizeof *out);
  if (len < 8) return -1;
  const uint32_t magic = get32(buf);
  const int version = magic == MAGIC ? 3 : magic == MAGIC_V2 ? 2 : magic == MAGIC_V1 ? 1 : 0;
  if (!version) return -1;
  const int has_el2n = version >= 2, has_grad_norm = version >= 3;
  size_t n = get32(buf + 4);
  size_t fixed = 8 + n * (29 + 4 * (size_t)(has_el2n + has_grad_norm));
  if (n > len || fixed > len) return -1;
  /* ids: check they fit before allocating */
  size_t idbytes = 0;
  const unsigned char *p = buf + fixed, *end = buf + len;
  for (size_t i = 0; i < n; i++) {
    if (end - p < 2) return -1;
    size_t l = (size_t)p[0] | (size_t)p[1] << 8;
    if ((size_t)(end - p - 2) < l) return -1;
    idbytes += l + 1;
    p += 2 + l;
  }
  hist_obs *obs = calloc(n ? n : 1, sizeof *obs);
  char **ids = malloc(n * sizeof *ids + idbytes + 1);
  if (!obs || !ids) {
    free(obs);
    free(ids);
    return -1;
  }
  const unsigned char *c = buf + 8;
  for (size_t i = 0; i < n; i++) obs[i].loss = getf(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].p_t = getf(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].p_max = getf(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].margin = getf(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].correct = getf(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].el2n = has_el2n ? getf(c + 4 * i) : NAN;
  if (has_el2n) c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].grad_norm = has_grad_norm ? getf(c + 4 * i) : NAN;
  if (has_grad_norm) c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].pred = (int32_t)get32(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) obs[i].label = (int32_t)get32(c + 4 * i);
  c += 4 * n;
  for (size_t i = 0; i < n; i++) {
    obs[i].scored = c[i] != 0;
    obs[i].has_step = when->has_step;
    obs[i].step = when->step;
    obs[i].has_epoch = when->has_epoch;
    obs[i].epoch = when->epoch;
  }
  char *s = (char *)(ids + n);
  p = buf + fixed;
  for (size_t i = 0; i < n; i++) {
    size_t l = (size_t)p[0] | (size_t)p[1] << 8;
    memcpy(s, p + 2, l);
    s[l] = '\0';
    ids[i] = s;
    s += l + 1;
    p += 2 + l;
  }
  out->n = (uint32_t)n;
  out->ids = ids;
  out->obs = obs;
  return 0;
}

int codec_check(const codec_unpacked *u, int32_t classes) {
  const int32_t preds = classes > 1 ? classes : 2;
  for (uint32_t i = 0; i < u->n; i++) {
    const hist_obs *o = &u->obs[i];
    if (!isfinite(o->loss) || o->label < -1 || o->label >= classes || o->pred < -1 || o->pred >= preds) return -1;
    if (o->scored && !(isfinite(o->p_t) && isfinite(o->p_max) && isfinite(o->margin) && isfinite(o->correct))) return -1;
    if (isinf(o->el2n) || isinf(o->grad_norm)) return -1;
  }
  return 0;
}

void codec_unpacked_free(codec_unpacked *u) {
  free(u->ids);
  free(u->obs);
  memset(u, 0, sizeof *u);
}
