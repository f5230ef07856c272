/* log.c — JSON lines: {"ts": RFC 3339 UTC with milliseconds, "level", "msg", ...fields}. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "jsonstr.h"

static int min_level = LOG_INFO;
static const char *const names[] = {"debug", "info", "warn", "error"};

void log_set_level(int level) {
  min_level = level;
}

int log_level_parse(const char *name) {
  for (int i = 0; i < 4; i++)
    if (strcmp(names[i], name) == 0) return i;
  if (strcmp(name, "warning") == 0) return LOG_WARN;
  return -1;
}

const char *log_level_name(int level) {
  return level >= 0 && level < 4 ? names[level] : "info";
}

int log_enabled(int level) {
  return level >= min_level;
}

/* A line being built. Each string in it is cut to FIELD_MAX bytes (written escaped), so that a request's
 * three strings, the client's path and method among them, and its numbers always fit; put() still never
 * overflows the buffer. */
#define FIELD_MAX 1024

typedef struct line {
  char buf[4096];
  size_t len;
} line;

static void put(line *l, const char *s, size_t n) {
  if (l->len + n >= sizeof l->buf - 2) n = sizeof l->buf - 2 - l->len;
  memcpy(l->buf + l->len, s, n);
  l->len += n;
}

static void put_str(line *l, const char *s) {
  put(l, s, strlen(s));
}

/* One string of the line, as jsonstr_write hands it over: its quotes, runs of whole characters, escapes. */
typedef struct field {
  line *l;
  size_t room; /* bytes of the string's content still allowed */
  int cut;
} field;

static void field_sink(void *ctx, const char *p, size_t n) {
  field *f = ctx;
  if (n == 1 && p[0] == '"') { /* the string's own quotes: a string cut short still ends, after a mark */
    if (f->cut) put_str(f->l, "...");
    put(f->l, p, 1);
    return;
  }
  if (f->cut) return;
  size_t k = n;
  if (n > f->room) { /* an escape is never split, and a run of characters is cut between two of them */
    k = 0;
    for (size_t c; p[0] != '\\' && k < n && (c = utf8_char_len((const unsigned char *)p + k)) != 0 && k + c <= f->room;)
      k += c;
    f->cut = 1;
  }
  put(f->l, p, k);
  f->room -= k;
}

/* A JSON string literal (jsonstr.h): escaped, and valid UTF-8 whatever s holds; past FIELD_MAX bytes, or
 * what the line has left, cut and marked "...", still a whole string, so the line stays valid JSON. */
static void put_json(line *l, const char *s) {
  const size_t left = sizeof l->buf - 2 - l->len;
  field f = {l, left > 128 ? left - 128 : 0, 0};
  if (f.room > FIELD_MAX) f.room = FIELD_MAX;
  jsonstr_write(s, field_sink, &f);
}

static void begin(line *l, int level, const char *msg) {
  struct timespec ts;
  struct tm tm;
  char stamp[64];
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(stamp + n, sizeof stamp - n, ".%03ldZ", ts.tv_nsec / 1000000);
  l->len = 0;
  put_str(l, "{\"ts\":\"");
  put_str(l, stamp);
  put_str(l, "\",\"level\":\"");
  put_str(l, log_level_name(level));
  put_str(l, "\",\"msg\":");
  put_json(l, msg);
}

static void finish(line *l) {
  l->buf[l->len++] = '}';
  l->buf[l->len++] = '\n';
  ssize_t w = write(STDERR_FILENO, l->buf, l->len);
  (void)w; /* nowhere to report a failed log write */
}

void log_kv(int level, const char *msg, ...) {
  if (level < min_level) return;
  line l;
  va_list ap;
  begin(&l, level, msg);
  va_start(ap, msg);
  for (;;) {
    const char *k = va_arg(ap, const char *);
    if (!k) break;
    const char *v = va_arg(ap, const char *);
    put(&l, ",", 1);
    put_json(&l, k);
    put(&l, ":", 1);
    put_json(&l, v ? v : "");
  }
  va_end(ap);
  finish(&l);
}

void log_msg(int level, const char *fmt, ...) {
  if (level < min_level) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  line l;
  begin(&l, level, msg);
  finish(&l);
}

void log_request(const char *request_id, const char *method, const char *route, int status, double duration_ms,
                 size_t body_bytes) {
  const int probe = status == 200 && (strcmp(route, "/livez") == 0 || strcmp(route, "/readyz") == 0);
  const int level = status >= 500 ? LOG_WARN : probe ? LOG_DEBUG : LOG_INFO;
  if (level < min_level) return;
  line l;
  char num[64];
  begin(&l, level, "request");
  put_str(&l, ",\"request_id\":");
  put_json(&l, request_id);
  put_str(&l, ",\"method\":");
  put_json(&l, method);
  put_str(&l, ",\"route\":");
  put_json(&l, route);
  snprintf(num, sizeof num, ",\"status\":%d,\"duration_ms\":%.3f,\"body_bytes\":%zu", status, duration_ms, body_bytes);
  put_str(&l, num);
  finish(&l);
}
