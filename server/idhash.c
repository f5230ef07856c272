/* idhash.c — XXH3 with a per-process random secret (see idhash.h). */
#include "idhash.h"

#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL /* header-only: the image needs no library for it */
#include <xxhash.h>

static unsigned char secret[XXH3_SECRET_DEFAULT_SIZE];
static pthread_once_t secret_once = PTHREAD_ONCE_INIT;

static void draw_secret(void) {
  size_t got = 0;
  while (got < sizeof secret) {
    ssize_t r = getrandom(secret + got, sizeof secret - got, 0);
    if (r <= 0) break;
    got += (size_t)r;
  }
  if (got < sizeof secret) {
    /* no getrandom (an old kernel or a seccomp filter): a secret derived from what differs per process
     * still keeps a client from aiming at a bucket it computed offline */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&ts;
    XXH3_generateSecret_fromSeed(secret, seed);
  }
}

uint64_t idhash_n(const void *s, size_t n) {
  pthread_once(&secret_once, draw_secret);
  return XXH3_64bits_withSecret(s, n, secret, sizeof secret);
}

uint64_t idhash(const char *s) {
  return idhash_n(s, strlen(s));
}
