/* loadgen.c — closed-loop HTTP/1.1 load generator for focald's batch endpoint, plus a discard server.
 *
 * Each client is a thread with one keep-alive connection sending POSTs back to back. Every request
 * (headers and body) is built before the clock starts, in a pool per client reused round-robin, so
 * the timed loop only overwrites a fixed-width counter inside the batch_id, writes and reads: the
 * client costs a few system calls per request. Requests count when they complete with a 2xx inside
 * the measured window (after the warmup); errors count over the whole run. `--discard-server`
 * answers every request with a tiny 200 so the driver can measure this client's own ceiling.
 *
 * usage: loadgen --url http://HOST:PORT/PATH [--clients 4] [--duration 10] [--warmup 2] [--batch 256]
 *                [--classes 10] [--dense M] [--format json|binary] [--target index|onehot]
 *                [--target-dtype int64|int32|uint8]  (binary class-index targets; default int64)
 *                [--samples 1000000] [--pool 64] [--timeout 30] [--json]
 *        loadgen --discard-server HOST:PORT
 * exit status: 0 on a clean run, 2 when any request failed, 1 when the run could not start.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_DIGITS 20                    /* the per-client counter inside batch_id: fits any uint64 */
#define MAX_ERR_LOG 5
#define SNIPPET 160
#define RD_CAP (256 * 1024)
#define POOL_BUDGET ((size_t)256 << 20) /* bytes of pre-built requests over all clients */
#define MAX_ELEMS ((long)64 << 20)      /* logits per body; beyond this a JSON body passes 600 MB */

typedef struct opts {
  char host[256], path[1024];
  int port;
  struct sockaddr_in addr;
  long clients, batch, classes, dense, samples, pool;
  double duration, warmup, timeout;
  int binary, onehot, json;
  int tbytes; /* binary class-index targets: 8 (INT64), 4 (INT32) or 1 (UINT8) */
} opts;

typedef struct req {
  char *buf;     /* the whole request: headers and body */
  size_t len, id_off; /* id_off: where the ID_DIGITS counter digits start */
} req;

typedef struct client {
  int idx, gen_rc;
  const opts *o;
  req *pool;
  long npool;
  uint64_t rng, ok, errors, bytes;
  uint64_t *lat; /* nanoseconds, one per counted request */
  size_t nlat, caplat;
} client;

typedef struct rd {
  int fd;
  char *buf;
  size_t pos, end;
  uint64_t got; /* bytes received so far, to tell "closed before answering" from a cut answer */
} rd;

typedef struct sb { char *p; size_t len, cap; } sb; /* a growing string */

static pthread_barrier_t g_ready, g_go;
static int64_t g_t_warm, g_t_end;
static int g_abort;
static char g_nonce[17];
static pthread_mutex_t g_err_mu = PTHREAD_MUTEX_INITIALIZER;
static char g_err_log[MAX_ERR_LOG][SNIPPET + 96];
static int g_nerr_log;

static const char resp_ok[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                              "{\"ok\":true}";

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* splitmix64: fast, and good enough for ids, classes and logits */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* N(0, 2^2) by Box-Muller; 1 - u keeps the log argument in (0, 1] */
static float rng_logit(uint64_t *s) {
  double u1 = 1.0 - (double)(rng_next(s) >> 11) * 0x1p-53, u2 = (double)(rng_next(s) >> 11) * 0x1p-53;
  return (float)(2.0 * sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int sb_reserve(sb *b, size_t extra) {
  if (b->len + extra <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + extra) cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p) return -ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int sb_printf(sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sb_printf(sb *b, const char *fmt, ...) {
  for (size_t want = 64;;) {
    if (sb_reserve(b, want)) return -ENOMEM;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) return -EINVAL;
    if ((size_t)n < b->cap - b->len) {
      b->len += (size_t)n;
      return 0;
    }
    want = (size_t)n + 1;
  }
}

/* Nested JSON arrays of the given shape, from floats (f) or integers (k); brackets are opened and
 * closed where the flat index crosses a row boundary of each dimension. */
static int put_tensor(sb *b, const long *shape, int rank, const float *f, const int64_t *k) {
  long total = 1;
  for (int r = 0; r < rank; r++) total *= shape[r];
  for (int r = 0; r < rank; r++)
    if (sb_printf(b, "[")) return -ENOMEM;
  for (long i = 0; i < total; i++) {
    if (i > 0) {
      int closed = 0;
      long stride = 1;
      for (int r = rank - 1; r > 0 && i % (stride *= shape[r]) == 0; r--) closed++;
      if (sb_reserve(b, 2 * (size_t)closed + 1)) return -ENOMEM;
      for (int r = 0; r < closed; r++) b->p[b->len++] = ']';
      b->p[b->len++] = ',';
      for (int r = 0; r < closed; r++) b->p[b->len++] = '[';
    }
    int rc = f ? sb_printf(b, "%.4g", (double)f[i]) : sb_printf(b, "%" PRId64, k[i]);
    if (rc) return rc;
  }
  for (int r = 0; r < rank; r++)
    if (sb_printf(b, "]")) return -ENOMEM;
  return 0;
}

static int put_shape(sb *b, const long *shape, int rank) {
  for (int r = 0; r < rank; r++)
    if (sb_printf(b, "%s%ld", r ? "," : "[", shape[r])) return -ENOMEM;
  return sb_printf(b, "]");
}

/* The batch_id is "<run nonce>-c<client>-<counter>": the nonce keeps ids unique across runs of
 * loadgen against one database, the counter across the reuses of one body. */
static int put_batch_id(sb *b, int client_idx, size_t *id_off) {
  if (sb_printf(b, "\"batch_id\":\"%s-c%04d-", g_nonce, client_idx)) return -ENOMEM;
  *id_off = b->len;
  if (sb_reserve(b, ID_DIGITS)) return -ENOMEM;
  memset(b->p + b->len, '0', ID_DIGITS);
  b->len += ID_DIGITS;
  return sb_printf(b, "\"");
}

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_f32(unsigned char *p, float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  put_le(p, u, 4);
}

/* B distinct ids in [0, samples), by rejection against an open-addressing set of size >= 2B */
static void pick_ids(client *c, int64_t *ids, uint64_t *set, size_t mask) {
  memset(set, 0, (mask + 1) * sizeof *set);
  for (long i = 0; i < c->o->batch;) {
    uint64_t k = rng_next(&c->rng) % (uint64_t)c->o->samples;
    size_t h = (size_t)((k * 0x9e3779b97f4a7c15ULL) >> 17) & mask;
    while (set[h] && set[h] != k + 1) h = (h + 1) & mask;
    if (set[h]) continue;
    set[h] = k + 1;
    ids[i++] = (int64_t)k;
  }
}

static int build_json(client *c, long n, const int64_t *ids, const float *lg, const float *oh, const int64_t *tg,
                      sb *b, size_t *id_off) {
  const opts *o = c->o;
  long m = o->dense ? o->dense : 1;
  long shape[3] = {o->batch, o->dense ? m : o->classes, o->classes}, tshape[2] = {o->batch, m};
  int rank = o->dense ? 3 : 2;
  int rc = sb_printf(b, "{\"run\":\"bench\",");
  if (!rc) rc = put_batch_id(b, c->idx, id_off);
  if (!rc) rc = sb_printf(b, ",\"epoch\":0,\"step\":%ld,\"ids\":[", n);
  for (long i = 0; !rc && i < o->batch; i++) rc = sb_printf(b, "%s\"s%" PRId64 "\"", i ? "," : "", ids[i]);
  if (!rc) rc = sb_printf(b, "],\"logits\":");
  if (!rc) rc = put_tensor(b, shape, rank, lg, NULL);
  if (!rc) rc = sb_printf(b, ",\"targets\":");
  if (!rc) rc = o->onehot ? put_tensor(b, shape, rank, oh, NULL) : put_tensor(b, tshape, rank - 1, NULL, tg);
  if (!rc) rc = sb_printf(b, "}");
  return rc;
}

/* Open Inference Protocol binary extension: a JSON header naming each tensor's bytes, then the
 * raw little-endian tensors in the order the header lists them. */
static int build_binary(client *c, const int64_t *ids, const float *lg, const float *oh, const int64_t *tg, sb *b,
                        size_t *id_off, size_t *json_len) {
  const opts *o = c->o;
  long m = o->dense ? o->dense : 1, elems = o->batch * m * o->classes, tcount = o->onehot ? elems : o->batch * m;
  long shape[3] = {o->batch, o->dense ? m : o->classes, o->classes};
  int rank = o->dense ? 3 : 2, trank = o->onehot ? rank : rank - 1;
  size_t tsize = (size_t)tcount * (size_t)(o->onehot ? 4 : o->tbytes);
  const char *tdtype = o->onehot ? "FP32" : o->tbytes == 1 ? "UINT8" : o->tbytes == 4 ? "INT32" : "INT64";
  int rc = sb_printf(b, "{\"run\":\"bench\",");
  if (!rc) rc = put_batch_id(b, c->idx, id_off);
  if (!rc) rc = sb_printf(b, ",\"step\":0,\"inputs\":[{\"name\":\"ids\",\"datatype\":\"INT64\",\"shape\":[%ld],"
                             "\"parameters\":{\"binary_data_size\":%ld}},"
                             "{\"name\":\"logits\",\"datatype\":\"FP32\",\"shape\":", o->batch, 8 * o->batch);
  if (!rc) rc = put_shape(b, shape, rank);
  if (!rc) rc = sb_printf(b, ",\"parameters\":{\"binary_data_size\":%ld}},{\"name\":\"targets\",\"datatype\":\"%s\","
                             "\"shape\":", 4 * elems, tdtype);
  if (!rc) rc = put_shape(b, shape, trank);
  if (!rc) rc = sb_printf(b, ",\"parameters\":{\"binary_data_size\":%zu}}]}", tsize);
  if (rc || (rc = sb_reserve(b, (size_t)o->batch * 8 + (size_t)elems * 4 + tsize))) return rc;
  *json_len = b->len;
  unsigned char *p = (unsigned char *)b->p + b->len;
  for (long i = 0; i < o->batch; i++, p += 8) put_le(p, (uint64_t)ids[i], 8);
  for (long i = 0; i < elems; i++, p += 4) put_f32(p, lg[i]);
  if (o->onehot)
    for (long i = 0; i < tcount; i++, p += 4) put_f32(p, oh[i]);
  else
    for (long i = 0; i < tcount; i++, p += o->tbytes) put_le(p, (uint64_t)tg[i], o->tbytes);
  b->len = (size_t)((char *)p - b->p);
  return 0;
}

/* Prepends the HTTP request head to the body in place, so one send() covers the whole request. */
static int finish_req(const opts *o, sb *b, size_t id_off, size_t json_len, req *out) {
  char head[2048], extra[160] = "";
  /* a binary client asks for a binary answer too: FP32 tensors, not JSON text */
  if (o->binary)
    snprintf(extra, sizeof extra, "Inference-Header-Content-Length: %zu\r\nAccept: application/octet-stream\r\n", json_len);
  int hl = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\n%s\r\n", o->path, o->host, o->port,
                    o->binary ? "application/octet-stream" : "application/json", b->len, extra);
  if (hl < 0 || (size_t)hl >= sizeof head) return -EINVAL;
  if (sb_reserve(b, (size_t)hl)) return -ENOMEM;
  memmove(b->p + hl, b->p, b->len);
  memcpy(b->p, head, (size_t)hl);
  out->buf = b->p;
  out->len = b->len + (size_t)hl;
  out->id_off = id_off + (size_t)hl;
  b->p = NULL;
  b->len = b->cap = 0;
  return 0;
}

static int build_pool(client *c) {
  const opts *o = c->o;
  long m = o->dense ? o->dense : 1, elems = o->batch * m * o->classes;
  size_t mask = 1;
  while (mask < 2 * (size_t)o->batch) mask <<= 1;
  int64_t *ids = malloc((size_t)o->batch * sizeof *ids), *tg = malloc((size_t)(o->batch * m) * sizeof *tg);
  float *lg = malloc((size_t)elems * sizeof *lg), *oh = calloc(o->onehot ? (size_t)elems : 1, sizeof *oh);
  uint64_t *set = malloc(mask * sizeof *set);
  sb b = {0};
  int rc = -ENOMEM;
  c->pool = calloc((size_t)o->pool, sizeof *c->pool);
  if (!ids || !tg || !lg || !oh || !set || !c->pool) goto out;
  mask--;
  for (long n = 0; n < o->pool; n++) {
    size_t id_off = 0, json_len = 0;
    pick_ids(c, ids, set, mask);
    for (long i = 0; i < elems; i++) lg[i] = rng_logit(&c->rng);
    for (long i = 0; i < o->batch * m; i++) {
      tg[i] = (int64_t)(rng_next(&c->rng) % (uint64_t)o->classes);
      if (o->onehot) {
        memset(oh + i * o->classes, 0, (size_t)o->classes * sizeof *oh);
        oh[i * o->classes + tg[i]] = 1.0f;
      }
    }
    rc = o->binary ? build_binary(c, ids, lg, oh, tg, &b, &id_off, &json_len)
                   : build_json(c, n, ids, lg, oh, tg, &b, &id_off);
    if (!rc) rc = finish_req(o, &b, id_off, json_len, &c->pool[n]);
    if (rc) goto out;
    c->npool = n + 1;
  }
  rc = 0;
out:
  free(ids);
  free(tg);
  free(lg);
  free(oh);
  free(set);
  free(b.p);
  return rc;
}

static void patch_id(req *q, uint64_t n) {
  char *p = q->buf + q->id_off + ID_DIGITS;
  for (int i = 0; i < ID_DIGITS; i++, n /= 10) *--p = (char)('0' + n % 10);
}

static int resolve(const char *host, int port, struct sockaddr_in *sa) {
  struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai = NULL;
  if (getaddrinfo(host, NULL, &hints, &ai) || !ai) return -EHOSTUNREACH;
  memcpy(sa, ai->ai_addr, sizeof *sa);
  sa->sin_port = htons((uint16_t)port);
  freeaddrinfo(ai);
  return 0;
}

/* Non-blocking connect bounded by the timeout, so a silent host cannot hang a client; the socket
 * then goes back to blocking with send/receive timeouts for the same reason. */
static int dial(const opts *o, int *fd) {
  int rc = 0, one = 1, s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) return -errno;
  if (connect(s, (const struct sockaddr *)&o->addr, sizeof o->addr) < 0) {
    if (errno != EINPROGRESS) {
      rc = -errno;
      goto out;
    }
    struct pollfd p = {.fd = s, .events = POLLOUT};
    int n, err = 0;
    socklen_t len = sizeof err;
    do n = poll(&p, 1, (int)(o->timeout * 1000));
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
      rc = n ? -errno : -ETIMEDOUT;
      goto out;
    }
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
      rc = err ? -err : -errno;
      goto out;
    }
  }
  struct timeval tv = {.tv_sec = (time_t)o->timeout, .tv_usec = (long)(fmod(o->timeout, 1.0) * 1e6)};
  if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK) < 0 ||
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0 ||
      setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
      setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
    rc = -errno;
    goto out;
  }
  *fd = s;
  s = -1;
out:
  if (s >= 0) close(s);
  return rc;
}

static int send_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Receives more bytes; -ENODATA is an orderly close by the peer. */
static int rd_fill(rd *r) {
  if (r->pos == r->end) {
    r->pos = r->end = 0;
  } else if (r->end == RD_CAP) {
    if (r->pos == 0) return -EMSGSIZE;
    memmove(r->buf, r->buf + r->pos, r->end - r->pos);
    r->end -= r->pos;
    r->pos = 0;
  }
  for (;;) {
    ssize_t n = recv(r->fd, r->buf + r->end, RD_CAP - r->end, 0);
    if (n > 0) {
      r->end += (size_t)n;
      r->got += (uint64_t)n;
      return 0;
    }
    if (n == 0) return -ENODATA;
    if (errno != EINTR) return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
  }
}

/* One line without its CR LF; valid until the next read. It stays followed by the '\n' in the
 * buffer, so strtoull on it stops there. */
static int rd_line(rd *r, const char **line, size_t *len) {
  for (;;) {
    char *nl = memchr(r->buf + r->pos, '\n', r->end - r->pos);
    if (nl) {
      *line = r->buf + r->pos;
      *len = (size_t)(nl - *line);
      r->pos += *len + 1;
      if (*len && (*line)[*len - 1] == '\r') (*len)--;
      return 0;
    }
    int rc = rd_fill(r);
    if (rc) return rc;
  }
}

/* Discards n bytes, keeping the first SNIPPET of them in snip when it is given. */
static int rd_skip(rd *r, uint64_t n, char *snip, size_t *sn) {
  while (n > 0) {
    if (r->pos == r->end) {
      int rc = rd_fill(r);
      if (rc) return rc;
    }
    size_t take = r->end - r->pos < n ? r->end - r->pos : (size_t)n;
    if (snip && *sn < SNIPPET) {
      size_t k = SNIPPET - *sn < take ? SNIPPET - *sn : take;
      memcpy(snip + *sn, r->buf + r->pos, k);
      *sn += k;
    }
    r->pos += take;
    n -= take;
  }
  return 0;
}

static int header_is(const char *line, size_t len, const char *name, const char **val) {
  size_t n = strlen(name);
  if (len <= n || strncasecmp(line, name, n) || line[n] != ':') return 0;
  for (*val = line + n + 1; **val == ' ' || **val == '\t'; (*val)++) {}
  return 1;
}

static int has_token(const char *v, const char *end, const char *tok) {
  for (size_t n = strlen(tok); v + n <= end; v++)
    if (!strncasecmp(v, tok, n)) return 1;
  return 0;
}

/* Reads one response: status line, headers, then a Content-Length, chunked or read-to-close body. */
static int read_response(rd *r, int *status, int *keep, char *snip, size_t *sn) {
  const char *line, *v;
  size_t len;
  uint64_t clen = 0;
  int rc, chunked, has_len;
  do {
    if ((rc = rd_line(r, &line, &len))) return rc;
    if (len < 12 || strncmp(line, "HTTP/1.", 7) || line[8] != ' ') return -EPROTO;
    *status = atoi(line + 9);
    *keep = line[7] == '1';
    chunked = has_len = 0;
    for (;;) {
      if ((rc = rd_line(r, &line, &len))) return rc;
      if (len == 0) break;
      if (header_is(line, len, "Content-Length", &v)) {
        clen = strtoull(v, NULL, 10);
        has_len = 1;
      } else if (header_is(line, len, "Transfer-Encoding", &v)) {
        chunked = has_token(v, line + len, "chunked");
      } else if (header_is(line, len, "Connection", &v)) {
        if (has_token(v, line + len, "close")) *keep = 0;
        if (has_token(v, line + len, "keep-alive")) *keep = 1;
      }
    }
  } while (*status >= 100 && *status < 200);
  if (*status / 100 == 2) snip = NULL;
  if (*status == 204 || *status == 304) return 0;
  if (chunked) {
    for (;;) {
      char *e;
      if ((rc = rd_line(r, &line, &len))) return rc;
      uint64_t n = strtoull(line, &e, 16);
      if (e == line) return -EPROTO;
      if (n == 0) break;
      if ((rc = rd_skip(r, n, snip, sn)) || (rc = rd_line(r, &line, &len))) return rc;
      if (len) return -EPROTO;
    }
    do
      if ((rc = rd_line(r, &line, &len))) return rc;
    while (len);
    return 0;
  }
  if (has_len) return rd_skip(r, clen, snip, sn);
  *keep = 0;
  rc = rd_skip(r, UINT64_MAX, snip, sn);
  return rc == -ENODATA ? 0 : rc;
}

static void note_error(client *c, const char *what, int rc, int status, const char *snip, size_t sn) {
  c->errors++;
  pthread_mutex_lock(&g_err_mu);
  if (g_nerr_log < MAX_ERR_LOG) {
    char *e = g_err_log[g_nerr_log++];
    if (status) {
      int n = snprintf(e, sizeof g_err_log[0], "client %d: HTTP %d: ", c->idx, status);
      for (size_t i = 0; i < sn && (size_t)n + 1 < sizeof g_err_log[0]; i++)
        e[n++] = snip[i] >= 32 && snip[i] < 127 ? snip[i] : '.';
      e[n] = 0;
    } else {
      snprintf(e, sizeof g_err_log[0], "client %d: %s: %s", c->idx, what, strerror(-rc));
    }
  }
  pthread_mutex_unlock(&g_err_mu);
}

static void run_client(client *c) {
  const opts *o = c->o;
  rd r = {.fd = -1, .buf = malloc(RD_CAP)};
  int fd = -1, reused = 0;
  uint64_t seq = 0;
  long k = 0;
  if (!r.buf) {
    note_error(c, "setup", -ENOMEM, 0, NULL, 0);
    return;
  }
  for (;;) {
    int64_t t0 = now_ns();
    if (t0 >= g_t_end) break;
    if (fd < 0) {
      int rc = dial(o, &fd);
      if (rc) {
        /* back off so a dead server yields a countable trickle of errors rather than a spin */
        note_error(c, "connect", rc, 0, NULL, 0);
        nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
        continue;
      }
      reused = 0;
      r.fd = fd;
      r.pos = r.end = 0;
    }
    req *q = &c->pool[k];
    k = (k + 1) % c->npool;
    patch_id(q, seq++);
    int status = 0, keep = 1;
    char snip[SNIPPET];
    size_t sn = 0;
    uint64_t got0 = r.got;
    int rc = send_all(fd, q->buf, q->len);
    const char *what = rc ? "send" : "receive";
    if (!rc) rc = read_response(&r, &status, &keep, snip, &sn);
    int64_t t1 = now_ns();
    if (rc) {
      close(fd);
      fd = -1;
      /* a server may close an idle keep-alive connection: then nothing of the answer arrived, and
       * the request goes again on a fresh connection (with a fresh batch_id) without an error */
      if (!(reused && r.got == got0 && (rc == -EPIPE || rc == -ECONNRESET || rc == -ENODATA)))
        note_error(c, what, rc == -ENODATA ? -ECONNRESET : rc, 0, NULL, 0);
      continue;
    }
    if (status / 100 != 2) {
      note_error(c, what, 0, status, snip, sn);
    } else if (t1 >= g_t_warm && t1 < g_t_end) {
      c->ok++;
      c->bytes += q->len;
      if (c->nlat == c->caplat) {
        size_t cap = c->caplat ? 2 * c->caplat : 65536;
        uint64_t *p = realloc(c->lat, cap * sizeof *p);
        if (p) c->lat = p, c->caplat = cap;
      }
      if (c->nlat < c->caplat) c->lat[c->nlat++] = (uint64_t)(t1 - t0);
    }
    reused = 1;
    if (!keep) {
      close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) close(fd);
  free(r.buf);
}

static void *client_main(void *arg) {
  client *c = arg;
  c->gen_rc = build_pool(c);
  /* main sets the clock between the two barriers, after every pool is built */
  pthread_barrier_wait(&g_ready);
  pthread_barrier_wait(&g_go);
  if (!c->gen_rc && !g_abort) run_client(c);
  return NULL;
}

/* ---------------------------------------------------------------- discard server */

static void *discard_conn(void *arg) {
  rd r = {.fd = (int)(intptr_t)arg, .buf = malloc(RD_CAP)};
  const char *line, *v;
  size_t len;
  while (r.buf) {
    uint64_t clen = 0;
    int rc;
    while (!(rc = rd_line(&r, &line, &len)) && len)
      if (header_is(line, len, "Content-Length", &v)) clen = strtoull(v, NULL, 10);
    if (rc || rd_skip(&r, clen, NULL, NULL) || send_all(r.fd, resp_ok, sizeof resp_ok - 1)) break;
  }
  close(r.fd);
  free(r.buf);
  return NULL;
}

static int discard_server(const char *spec) {
  char host[256];
  const char *colon = strrchr(spec, ':');
  struct sockaddr_in sa;
  int one = 1, rc = 0, s = -1;
  pthread_attr_t attr;
  if (!colon || (size_t)(colon - spec) >= sizeof host) return -EINVAL;
  snprintf(host, sizeof host, "%.*s", (int)(colon - spec), spec);
  if ((rc = resolve(host, atoi(colon + 1), &sa))) return rc;
  if ((s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
      setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
      bind(s, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(s, 1024) < 0) {
    rc = -errno;
    goto out;
  }
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  fprintf(stderr, "loadgen: discard server listening on %s\n", spec);
  for (;;) {
    pthread_t t;
    int c = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) {
      /* out of descriptors or a connection reset before accept: wait a little and go on */
      if (errno != EINTR) nanosleep(&(struct timespec){.tv_nsec = 10000000}, NULL);
      continue;
    }
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (pthread_create(&t, &attr, discard_conn, (void *)(intptr_t)c)) close(c);
  }
out:
  if (s >= 0) close(s);
  return rc;
}

/* ---------------------------------------------------------------- main */

static int parse_url(const char *url, opts *o) {
  const char *h = url + 7, *e = h + strcspn(h, ":/");
  if (strncmp(url, "http://", 7) || e == h || (size_t)(e - h) >= sizeof o->host) return -EINVAL;
  snprintf(o->host, sizeof o->host, "%.*s", (int)(e - h), h);
  o->port = 80;
  if (*e == ':') {
    char *end;
    long p = strtol(e + 1, &end, 10);
    if (end == e + 1 || p < 1 || p > 65535) return -EINVAL;
    o->port = (int)p;
    e = end;
  }
  if (*e && *e != '/') return -EINVAL;
  snprintf(o->path, sizeof o->path, "%s", *e ? e : "/");
  return resolve(o->host, o->port, &o->addr);
}

static int bad_arg(const char *what, const char *v) {
  fprintf(stderr, "loadgen: bad %s%s%s (usage at the top of tests/bench/loadgen.c)\n", what, v ? " " : "", v ? v : "");
  return -EINVAL;
}

static int parse_args(int argc, char **argv, opts *o, const char **discard) {
  struct { const char *name; long *l; double *d; double lo, hi; } nums[] = {
      {"--clients", &o->clients, NULL, 1, 4096}, {"--batch", &o->batch, NULL, 1, 1e7},
      {"--classes", &o->classes, NULL, 1, 1e6},  {"--dense", &o->dense, NULL, 0, 1e8},
      {"--samples", &o->samples, NULL, 1, 1e15}, {"--pool", &o->pool, NULL, 1, 4096},
      {"--duration", NULL, &o->duration, 0.1, 1e6}, {"--warmup", NULL, &o->warmup, 0, 1e6},
      {"--timeout", NULL, &o->timeout, 0.1, 3600},
  };
  const size_t nnums = sizeof nums / sizeof nums[0];
  const char *url = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    size_t j = 0;
    if (!strcmp(a, "--json")) {
      o->json = 1;
      continue;
    }
    if (!v) return bad_arg("option, or one without its value:", a);
    i++;
    for (; j < nnums && strcmp(a, nums[j].name); j++) {}
    if (j < nnums) {
      char *end;
      double d = strtod(v, &end);
      if (end == v || *end || !(d >= nums[j].lo && d <= nums[j].hi) || (nums[j].l && d != floor(d)))
        return bad_arg(a, v);
      if (nums[j].l) *nums[j].l = (long)d;
      else *nums[j].d = d;
    } else if (!strcmp(a, "--url")) {
      url = v;
    } else if (!strcmp(a, "--discard-server")) {
      *discard = v;
    } else if (!strcmp(a, "--format") && (!strcmp(v, "json") || !strcmp(v, "binary"))) {
      o->binary = !strcmp(v, "binary");
    } else if (!strcmp(a, "--target-dtype") && (!strcmp(v, "int64") || !strcmp(v, "int32") || !strcmp(v, "uint8"))) {
      o->tbytes = !strcmp(v, "uint8") ? 1 : !strcmp(v, "int32") ? 4 : 8;
    } else if (!strcmp(a, "--target") && (!strcmp(v, "index") || !strcmp(v, "onehot"))) {
      o->onehot = !strcmp(v, "onehot");
    } else {
      return bad_arg(a, v);
    }
  }
  if (*discard) return 0;
  if (!url || parse_url(url, o)) return bad_arg("or unresolvable --url (http://HOST[:PORT]/PATH):", url);
  if (o->samples < o->batch) return bad_arg("--samples: it must be at least --batch", NULL);
  if ((double)o->batch * (double)(o->dense ? o->dense : 1) * (double)o->classes > (double)MAX_ELEMS)
    return bad_arg("shape: --batch x --dense x --classes is over 64 Mi logits per body", NULL);
  return 0;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

/* nearest rank: the smallest latency with at least p of the requests at or below it */
static double pct_ms(const uint64_t *v, size_t n, double p) {
  if (!n) return 0;
  size_t i = (size_t)ceil(p * (double)n);
  return (double)v[i ? i - 1 : 0] / 1e6;
}

/* Prints the figures (one JSON object on stdout with --json, the error log then going to stderr) and
 * returns the exit status. */
static int report(const opts *o, const client *cl, double build_s) {
  uint64_t *all = NULL, ok = 0, errors = 0, bytes = 0;
  size_t nall = 0;
  for (long i = 0; i < o->clients; i++) {
    ok += cl[i].ok;
    errors += cl[i].errors;
    bytes += cl[i].bytes;
    nall += cl[i].nlat;
  }
  if (nall && !(all = malloc(nall * sizeof *all))) {
    fprintf(stderr, "loadgen: out of memory for the latencies\n");
    return 1;
  }
  nall = 0;
  for (long i = 0; i < o->clients; i++) {
    memcpy(all + nall, cl[i].lat, cl[i].nlat * sizeof *all);
    nall += cl[i].nlat;
  }
  qsort(all, nall, sizeof *all, cmp_u64);
  double secs = o->duration, sps = (double)ok * (double)o->batch / secs, mbps = (double)bytes / 1e6 / secs;
  double eps = sps * (double)(o->dense ? o->dense : 1) * (double)o->classes;
  double p[5] = {pct_ms(all, nall, 0.5), pct_ms(all, nall, 0.9), pct_ms(all, nall, 0.99), pct_ms(all, nall, 0.999),
                 nall ? (double)all[nall - 1] / 1e6 : 0};
  const char *fmt = o->binary ? "binary" : "json";
  FILE *elog = o->json ? stderr : stdout;
  if (o->json)
    printf("{\"requests\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"seconds\":%.3f,\"samples_per_s\":%.1f,"
           "\"elements_per_s\":%.1f,\"mb_per_s\":%.2f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,"
           "\"p999_ms\":%.4f,\"max_ms\":%.4f,\"clients\":%ld,\"batch\":%ld,\"classes\":%ld,\"dense\":%ld,"
           "\"format\":\"%s\"}\n", ok, errors, secs, sps, eps, mbps, p[0], p[1], p[2], p[3], p[4], o->clients,
           o->batch, o->classes, o->dense, fmt);
  else
    printf("loadgen: %ld clients, batch %ld, classes %ld, dense %ld, %s %s, pool %ld x %.2f MB, built in %.2f s\n"
           "measured     %.2f s after %.2f s warmup\n"
           "requests     %" PRIu64 "\nerrors       %" PRIu64 "\nsamples/s    %.0f\nelements/s   %.4g\n"
           "MB/s sent    %.1f\nlatency ms   p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
           o->clients, o->batch, o->classes, o->dense, fmt, o->onehot ? "onehot" : "index", cl[0].npool,
           (double)cl[0].pool[0].len / 1e6, build_s, secs, o->warmup, ok, errors, sps, eps, mbps, p[0], p[1], p[2],
           p[3], p[4]);
  for (int i = 0; i < g_nerr_log; i++) fprintf(elog, "error        %s\n", g_err_log[i]);
  if (errors > (uint64_t)g_nerr_log) fprintf(elog, "error        ... and %" PRIu64 " more\n", errors - (uint64_t)g_nerr_log);
  free(all);
  return errors || !ok ? 2 : 0;
}

int main(int argc, char **argv) {
  opts o = {.clients = 4, .batch = 256, .classes = 10, .samples = 1000000, .pool = 64, .tbytes = 8,
            .duration = 10, .warmup = 2, .timeout = 30};
  const char *discard = NULL;
  client *cl = NULL;
  pthread_t *th = NULL;
  int rc, ret = 1, fd = -1, started = 0;
  signal(SIGPIPE, SIG_IGN);
  if (parse_args(argc, argv, &o, &discard)) return 1;
  if (discard) {
    rc = discard_server(discard);
    fprintf(stderr, "loadgen: discard server on %s: %s\n", discard, strerror(-rc));
    return 1;
  }
  /* fail fast, with one message, when nothing answers at the address */
  if ((rc = dial(&o, &fd))) {
    fprintf(stderr, "loadgen: cannot connect to %s:%d: %s\n", o.host, o.port, strerror(-rc));
    return 1;
  }
  close(fd);
  snprintf(g_nonce, sizeof g_nonce, "%016" PRIx64,
           (uint64_t)time(NULL) << 32 ^ (uint64_t)now_ns() ^ (uint64_t)getpid() << 16);
  /* cap the pre-built requests' memory: big dense bodies get a smaller pool, never below 2 */
  long m = o.dense ? o.dense : 1, e = m * o.classes;
  size_t est = o.binary ? (size_t)(o.batch * (8 + e * 4 + (o.onehot ? e * 4 : m * 8))) + 1024
                        : (size_t)(o.batch * (16 + e * 9 + (o.onehot ? e * 2 : m * 8))) + 1024;
  size_t fit = POOL_BUDGET / (size_t)o.clients / est;
  if ((size_t)o.pool > fit) o.pool = fit < 2 ? 2 : (long)fit;
  cl = calloc((size_t)o.clients, sizeof *cl);
  th = calloc((size_t)o.clients, sizeof *th);
  if (!cl || !th || pthread_barrier_init(&g_ready, NULL, (unsigned)o.clients + 1) ||
      pthread_barrier_init(&g_go, NULL, (unsigned)o.clients + 1)) {
    fprintf(stderr, "loadgen: out of memory\n");
    goto out;
  }
  started = 1;
  int64_t tb = now_ns();
  for (long i = 0; i < o.clients; i++) {
    cl[i] = (client){.idx = (int)i, .o = &o, .rng = 0x5eed0000ULL + (uint64_t)i * 0x9e3779b97f4a7c15ULL};
    if (pthread_create(&th[i], NULL, client_main, &cl[i])) {
      /* the barriers count every client: without this one the others would wait forever */
      fprintf(stderr, "loadgen: cannot start client thread %ld\n", i);
      exit(1);
    }
  }
  pthread_barrier_wait(&g_ready);
  for (long i = 0; i < o.clients; i++)
    if (cl[i].gen_rc) g_abort = 1;
  int64_t t0 = now_ns();
  g_t_warm = t0 + (int64_t)(o.warmup * 1e9);
  g_t_end = g_t_warm + (int64_t)(o.duration * 1e9);
  pthread_barrier_wait(&g_go);
  for (long i = 0; i < o.clients; i++) pthread_join(th[i], NULL);
  if (g_abort) fprintf(stderr, "loadgen: cannot build the request bodies: out of memory\n");
  else ret = report(&o, cl, (double)(t0 - tb) / 1e9);
out:
  for (long i = 0; cl && i < o.clients; i++) {
    for (long j = 0; j < cl[i].npool; j++) free(cl[i].pool[j].buf);
    free(cl[i].pool);
    free(cl[i].lat);
  }
  if (started) {
    pthread_barrier_destroy(&g_ready);
    pthread_barrier_destroy(&g_go);
  }
  free(cl);
  free(th);
  return ret;
}
