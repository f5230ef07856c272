/* http_request.c — what a request brings, checked before its handler runs: its headers (framing, token,
 * query parameters) against its route, and its body against --max-body and the memory of the bodies in
 * flight (--body-memory), into the buffer it is kept in.
 */
#include "http.h"
#include "http_internal.h"

#include <malloc.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logwait.h"
#include "router.h"
#include "watchdog.h"

const char *http_request_header(http_req *rq, const char *name) {
  return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *http_query(http_req *rq, const char *name, char *text, size_t n) {
  const char *raw = MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
  if (!raw) return NULL;
  if (router_pct_decode(raw, strlen(raw), text, n, 1) != 0) return "";
  return text;
}

/* ------------------------------------------------------------------ headers */

/* The query's parameters checked against those the route takes: a parameter the route does not
 * know (a misspelt `oder=asc` would otherwise be ignored silently) or one given twice (which value
 * would count?) is refused, naming it. */
typedef struct query_check {
  const char *allowed; /* space-separated */
  uint32_t seen;       /* bit per allowed name: at most ROUTE_QUERY_MAX (router_check) */
  const char *bad;
  int repeated;
  int malformed; /* 1: not decodable within HTTP_QUERY_MAX; 2: no value at all */
} query_check;

static enum MHD_Result check_query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  query_check *q = cls;
  /* an empty component ("?&k=1", "?k=1&&j=2") names nothing, as a trailing '&' does: let it be */
  if (key[0] == '\0' && !value) return MHD_YES;
  const int i = router_word_index(q->allowed, key);
  if (i < 0) {
    q->bad = key;
    return MHD_NO;
  }
  if (q->seen & (1u << i)) {
    q->bad = key;
    q->repeated = 1;
    return MHD_NO;
  }
  q->seen |= 1u << i;
  char text[HTTP_QUERY_MAX];
  if (!value || router_pct_decode(value, strlen(value), text, sizeof text, 1) != 0) {
    q->bad = key;
    q->malformed = value ? 1 : 2;
    return MHD_NO;
  }
  return MHD_YES;
}

/* The route's query_param (router.h) into rq->params[k], decoded as a query value ('+' is a space). Its
 * value was checked by http__query_problem already; absent, it is a problem (0 or 1, *p filled); one
 * that does not fit a path parameter is left in bad_param, as an undecodable path segment is. */
int http__query_param(struct MHD_Connection *conn, const router_route *route, int k, http_req *rq, problem *p /* OUT */) {
  const char *raw = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, route->query_param);
  if (!raw) {
    problem_set(p, P_BAD_QUERY, route->query_param, "the query parameter \"%s\" is required", route->query_param);
    return 1;
  }
  if (router_pct_decode(raw, strlen(raw), rq->params[k], sizeof rq->params[k], 1) != 0) {
    snprintf(rq->params[k], sizeof rq->params[k], "%.200s", raw);
    if (!rq->bad_param) rq->bad_param = k + 1;
  }
  return 0;
}

/* The headers that decide how a request is read and whose it is: how many of each (a route's
 * head_header counted as one), the last Transfer-Encoding, and whether a field name has whitespace in it. */
typedef struct framing {
  int content_length, transfer_encoding, head_header, authorization, content_type;
  int spaced_name;
  const char *coding;
  const char *head_name; /* the route table's spelling of the head_header seen */
} framing;

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
  (void)kind;
  framing *f = cls;
  if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) f->content_length++;
  if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
    f->transfer_encoding++;
    f->coding = value;
  }
  const char *head = router_head_header(http__routes, http__nroutes, key);
  if (head) {
    f->head_header++;
    f->head_name = head;
  }
  if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0) f->authorization++;
  if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_TYPE) == 0) f->content_type++;
  if (strpbrk(key, " \t")) f->spaced_name = 1;
  return MHD_YES;
}

/* Why the request's framing is ambiguous (RFC 9112 section 6), or NULL when it is not: two lengths, a
 * length and a chunked coding, or a coding other than chunked could each be read two ways by two
 * servers in a row, which is how requests are smuggled. So could a field name with whitespace before
 * its colon ("Transfer-Encoding : chunked"), which RFC 9112 section 5.1 requires a server to refuse
 * with 400: a lenient proxy in front may read it as the header this server would not. Two binary
 * header lengths (a route's head_header, such as Inference-Header-Content-Length) or two credentials
 * leave which one counts to chance, and so do two Content-Types (a body's type and its charset). */
const char *http__framing_problem(struct MHD_Connection *conn, char *why, size_t n) {
  framing f = {0};
  MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
  if (f.spaced_name) return "a header field name has whitespace in it (or before its colon)";
  if (f.content_length > 1) return "the request has more than one Content-Length";
  if (f.transfer_encoding > 1) return "the request has more than one Transfer-Encoding";
  if (f.transfer_encoding && f.content_length) return "the request has both Content-Length and Transfer-Encoding";
  if (f.transfer_encoding && strcasecmp(f.coding, "chunked") != 0)
    return "Transfer-Encoding must be chunked; other codings are not accepted";
  if (f.head_header > 1) {
    snprintf(why, n, "the request has more than one %s", f.head_name);
    return why;
  }
  if (f.authorization > 1) return "the request has more than one Authorization";
  if (f.content_type > 1) return "the request has more than one Content-Type";
  return NULL;
}

int http_token_matches(const char *token, const char *header) {
  static const char scheme[] = "Bearer ";
  if (!header || strncasecmp(header, scheme, sizeof scheme - 1) != 0) return 0;
  const char *given = header + sizeof scheme - 1;
  const size_t gl = strlen(given), tl = strlen(token);
  unsigned char diff = gl != tl;
  for (size_t i = 0; i < tl; i++) diff |= (unsigned char)(token[i] ^ (i < gl ? given[i] : 0));
  return diff == 0;
}

/* Whether the request may go on: no token is configured, every route of its path is a health probe or
 * open (the console's static files: a browser loads a page without an Authorization header; the console
 * then asks for the token and sends it with every API call), or the token matches. */
int http__authorized(struct MHD_Connection *conn, unsigned path_flags) {
  if (!http__cfg->token[0] || (path_flags & (ROUTE_PROBE | ROUTE_OPEN))) return 1;
  return http_token_matches(http__cfg->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION));
}

/* The query problem of the request's route, in *p: a parameter the route does not take, one given
 * twice, one without a value or that cannot be decoded. Returns 1 when there is one, else 0. */
int http__query_problem(struct MHD_Connection *conn, const router_route *route, problem *p /* OUT */) {
  /* a read of the data takes after=POSITION too (logwait.h) */
  char takes[512];
  snprintf(takes, sizeof takes, "%s%s%s", route->query, route->query[0] && http__reads_data(route) ? " " : "",
           http__reads_data(route) ? "after" : "");
  query_check qc = {.allowed = takes};
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, check_query_arg, &qc);
  if (!qc.bad) return 0;
  if (qc.repeated)
    problem_set(p, P_BAD_QUERY, qc.bad, "the query parameter \"%.64s\" is given more than once", qc.bad);
  else if (qc.malformed == 2)
    problem_set(p, P_BAD_QUERY, qc.bad, "the query parameter \"%.64s\" has no value (write %.64s=...)", qc.bad, qc.bad);
  else if (qc.malformed)
    problem_set(p, P_BAD_QUERY, qc.bad,
                "the query parameter \"%.64s\" is not valid percent-encoding, or is longer than %d bytes decoded", qc.bad,
                HTTP_QUERY_MAX - 1);
  else if (takes[0])
    problem_set(p, P_BAD_QUERY, qc.bad, "unknown query parameter \"%.64s\"; this route takes: %s", qc.bad, takes);
  else
    problem_set(p, P_BAD_QUERY, qc.bad, "unknown query parameter \"%.64s\"; this route takes none", qc.bad);
  return 1;
}

/* ------------------------------------------------------------------ memory of bodies in flight
 *
 * A JSON body costs far more than its size while it is decoded (a jansson value
 * for every number, the decoded tensors, the answer): about 10 times, measured
 * on large /v1/loss bodies; a binary body about twice (its buffer and the
 * answer). Requests reserve that estimate against --body-memory when their
 * length is known (Content-Length) or as a chunked body grows, and give it back
 * when they end. A request that would pass the budget gets 503 overloaded,
 * unless nothing else is reserved: a body within --max-body is always served
 * alone.
 *
 * Freed memory goes back to glibc's heaps, whose free tops past main.c's
 * TRIM_THRESHOLD are returned to the system as they form. What is free below
 * live blocks stays: once no large body has been in flight for BODY_TRIM_IDLE
 * seconds, the watchdog asks glibc to give those pages back too (malloc_trim),
 * so a burst of large requests does not leave the sidecar at its peak. */

static _Atomic int64_t body_memory_used;
static _Atomic int trim_wanted;       /* a large body ended since the last trim */
static _Atomic int64_t large_ended_ns; /* when the last one ended */

#define BODY_TRIM_BYTES (1 << 20) /* bodies at least this large count as large */
#define BODY_TRIM_IDLE 1.0

static int64_t body_cost(const http_req *rq, uint64_t len) {
  return (int64_t)len * (rq->binary ? 2 : 10);
}

/* Grows rq's reservation to the cost of len body bytes; 0, or -1 when the budget would be passed. */
static int body_reserve(http_req *rq, uint64_t len) {
  const int64_t want = body_cost(rq, len);
  if (want <= rq->reserved) return 0;
  const int64_t more = want - rq->reserved;
  int64_t used = atomic_load(&body_memory_used);
  do {
    if (used - rq->reserved > 0 && used + more > http__cfg->body_memory) return -1;
  } while (!atomic_compare_exchange_weak(&body_memory_used, &used, used + more));
  rq->reserved = want;
  return 0;
}

void http__body_release(http_req *rq) {
  if (rq->reserved) atomic_fetch_sub(&body_memory_used, rq->reserved);
  rq->reserved = 0;
  if (rq->len >= BODY_TRIM_BYTES || rq->cap >= BODY_TRIM_BYTES) {
    atomic_store(&large_ended_ns, (int64_t)(http__now_s() * 1e9));
    atomic_store(&trim_wanted, 1);
  }
}

/* On the watchdog: returns free heap pages once large bodies have stopped coming for a while. */
void http__maybe_trim(double now) {
  logwait_expire(now); /* reads whose after= was not reached within --read-wait */
  if (!atomic_load(&trim_wanted) || atomic_load(&body_memory_used) > 0) return;
  if (now - (double)atomic_load(&large_ended_ns) / 1e9 < BODY_TRIM_IDLE) return;
  atomic_store(&trim_wanted, 0);
  malloc_trim(0);
}

void http_body_metrics_write(buf *o) {
  buf_printf(o,
             "# HELP focald_body_memory_reserved_bytes Memory reserved by the request bodies in flight, as estimated "
             "against --body-memory.\n"
             "# TYPE focald_body_memory_reserved_bytes gauge\n"
             "focald_body_memory_reserved_bytes %lld\n"
             "# HELP focald_body_memory_limit_bytes --body-memory.\n"
             "# TYPE focald_body_memory_limit_bytes gauge\n"
             "focald_body_memory_limit_bytes %lld\n",
             (long long)atomic_load(&body_memory_used), (long long)http__cfg->body_memory);
}

/* ------------------------------------------------------------------ the body */

/* RFC 9110 section 5.6.2: a token's characters. */
static int tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static const char *skip_ows(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  return s;
}

/* Checks a Content-Type against the bodies the route takes: application/json, and
 * application/octet-stream where the route takes binary tensors, in any case, with
 * parameters as RFC 9110 section 8.3.1 writes them (; name=token or "quoted"). Both
 * bodies are read as UTF-8 (JSON, RFC 8259 section 8.1; a binary body's JSON
 * header), so a charset parameter other than utf-8 (any case, quoted or not) is
 * refused, as is one given twice: focald would otherwise read the body in another
 * encoding than the client's. Other parameters change nothing and are let be.
 * Returns 0 (*binary set), or -1 with why (a detail naming the header) filled. */
static int content_type_check(const char *ct, unsigned flags, int *binary /* OUT */, char *why, size_t n) {
  const char *want = (flags & ROUTE_BODY_BINARY) ? "application/json or application/octet-stream (binary tensors)"
                                                 : "application/json";
  if (!ct) {
    snprintf(why, n, "the body needs a Content-Type: %s", want);
    return -1;
  }
  const char *p = ct;
  while (tchar(*p) || *p == '/') p++;
  const size_t tl = (size_t)(p - ct);
  if (tl == 16 && strncasecmp(ct, "application/json", 16) == 0) *binary = 0;
  else if ((flags & ROUTE_BODY_BINARY) && tl == 24 && strncasecmp(ct, "application/octet-stream", 24) == 0) *binary = 1;
  else {
    snprintf(why, n, "Content-Type is \"%.60s\"; the body must be %s", ct, want);
    return -1;
  }
  int charsets = 0;
  for (;;) {
    p = skip_ows(p);
    if (!*p) break;
    if (*p != ';') goto malformed;
    p = skip_ows(p + 1);
    if (!*p || *p == ';') continue; /* an empty parameter is allowed */
    const char *name = p;
    while (tchar(*p)) p++;
    const size_t nl = (size_t)(p - name);
    if (nl == 0 || *p != '=') goto malformed;
    p++;
    char value[64];
    size_t vl = 0;
    int long_value = 0;
    if (*p == '"') { /* quoted-string: qdtext, or a backslash and the character it quotes */
      for (p++; *p != '"'; p++) {
        if (*p == '\\') p++;
        if (!*p || (unsigned char)*p < 0x20 || *p == 0x7f) goto malformed;
        if (vl + 1 < sizeof value) value[vl++] = *p;
        else long_value = 1;
      }
      p++;
    } else {
      for (; tchar(*p); p++) {
        if (vl + 1 < sizeof value) value[vl++] = *p;
        else long_value = 1;
      }
      if (vl == 0) goto malformed;
    }
    value[vl] = '\0';
    if (nl == 7 && strncasecmp(name, "charset", 7) == 0) {
      if (++charsets > 1) {
        snprintf(why, n, "Content-Type gives charset twice (\"%.60s\"); give it once, as utf-8", ct);
        return -1;
      }
      if (long_value || strcasecmp(value, "utf-8") != 0) {
        snprintf(why, n, "Content-Type gives charset \"%.40s\"; focald reads %s as UTF-8 (RFC 8259): give charset=utf-8 or none",
                 value, *binary ? "a binary body's JSON header" : "JSON");
        return -1;
      }
    }
  }
  return 0;
malformed:
  snprintf(why, n, "Content-Type \"%.60s\" cannot be read: parameters are ; name=value, the value a token or a quoted string "
           "(RFC 9110 section 8.3.1)", ct);
  return -1;
}

/* A length header's value (a route's head_header): decimal digits only, with the optional whitespace
 * around a field's value that RFC 9110 section 5.5 allows. Returns the length, or -2 for anything else: a
 * sign, an empty value, a trailing word, or more than 18 digits (strtoll would take some of these, or
 * saturate, and the framing would then be read differently from what the client meant). */
static int64_t head_length(const char *s) {
  while (*s == ' ' || *s == '\t') s++;
  int64_t v = 0;
  int digits = 0;
  for (; *s >= '0' && *s <= '9'; s++, digits++) {
    if (digits == 18) return -2;
    v = v * 10 + (*s - '0');
  }
  while (*s == ' ' || *s == '\t') s++;
  return digits && !*s ? v : -2;
}

/* The body's headers checked against what the route takes (type, length, --max-body, --body-memory),
 * and its buffer allocated when its length is known. Returns MHD_YES to read the body, or answers. */
enum MHD_Result http__begin_body(struct MHD_Connection *conn, http_req *rq, const router_route *route) {
  const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  rq->content_type = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
  char why[240];
  if (content_type_check(rq->content_type, route->flags, &rq->binary, why, sizeof why) != 0)
    return http__send_problem(conn, rq, P_UNSUPPORTED_MEDIA_TYPE, why);
  const char *head = route->head_header ? MHD_lookup_connection_value(conn, MHD_HEADER_KIND, route->head_header) : NULL;
  if (head) {
    rq->body_head_len = head_length(head);
    /* a binary body's framing that could be read two ways is refused before its body is read */
    if (rq->body_head_len < 0 && rq->binary) {
      char d[200];
      snprintf(d, sizeof d, "%s must be the byte length of the body's JSON header, in decimal digits; not \"%.40s\"",
               route->head_header, head);
      return http__send_problem(conn, rq, P_BAD_FRAMING, d);
    }
  }
  if (!cl) {
    if (rq->binary) return http__send_problem(conn, rq, P_LENGTH_REQUIRED, "a binary body needs a Content-Length");
    return MHD_YES;
  }
  char *end;
  unsigned long long v = strtoull(cl, &end, 10);
  if (*end || v > (unsigned long long)http__cfg->max_body) {
    char d[160];
    snprintf(d, sizeof d, "the body is %s bytes; the limit is %lld (--max-body)", cl, (long long)http__cfg->max_body);
    return http__send_problem(conn, rq, P_BODY_TOO_LARGE, d);
  }
  if (body_reserve(rq, v) != 0) {
    char d[200];
    snprintf(d, sizeof d, "the request bodies being decoded would take more than --body-memory (%lld bytes) "
             "with this one's; retry shortly", (long long)http__cfg->body_memory);
    return http__send_problem(conn, rq, P_OVERLOADED, d);
  }
  /* the part after the body's head is decoded in place: pad so that it starts aligned as the route asks */
  const size_t align = route->body_align;
  size_t pad = align && rq->body_head_len > 0 ? (size_t)((align - (uint64_t)rq->body_head_len % align) % align) : 0;
  rq->cap = (size_t)v;
  rq->buf_base = aligned_alloc(64, (pad + rq->cap + 1 + 63) / 64 * 64);
  if (!rq->buf_base) {
    char d[160];
    snprintf(d, sizeof d, "focald has no memory for a body of %llu bytes now; retry shortly", (unsigned long long)v);
    return http__send_problem(conn, rq, P_OVERLOADED, d);
  }
  rq->buf = rq->buf_base + pad;
  return MHD_YES;
}

/* Drops what rq's body holds, n more bytes counted as dropped: the body is refused (its flag set). */
static enum MHD_Result drop_body(http_req *rq, size_t n) {
  rq->dropped = n;
  free(rq->buf_base);
  rq->buf = rq->buf_base = NULL;
  rq->len = rq->cap = 0;
  return MHD_YES;
}

/* The body phase: n more bytes of rq's body, kept until the limit, then counted and dropped. */
enum MHD_Result http__receive_body(struct MHD_Connection *conn, http_req *rq, const char *data, size_t n) {
  watchdog_body(conn, n, 0);
  if (rq->too_large || rq->over_budget || rq->no_memory) {
    /* libmicrohttpd answers only once the upload ends: a chunked body past the limit is read and
     * dropped so that the client gets its 413 (or 503), but no further than the limit again, then cut off */
    rq->dropped += n;
    return rq->dropped > (uint64_t)http__cfg->max_body ? MHD_NO : MHD_YES;
  }
  if (rq->state != RQ_RECEIVING) return MHD_YES;
  if (rq->len + n > (size_t)http__cfg->max_body) {
    rq->too_large = 1;
    rq->dropped = n;
    return MHD_YES;
  }
  /* a chunked body reserves its share of --body-memory as it comes, every piece (reserved only when its
   * buffer grew, what came until the next doubling went unreserved: about half, near 64 MiB) */
  if (body_reserve(rq, rq->len + n) != 0) {
    rq->over_budget = 1;
    return drop_body(rq, n);
  }
  if (rq->len + n > rq->cap) {
    size_t want = rq->cap ? rq->cap * 2 : 65536;
    while (want < rq->len + n) want *= 2;
    if (want > (size_t)http__cfg->max_body) want = (size_t)http__cfg->max_body;
    /* bodies without a Content-Length (chunked JSON) grow here, unpadded */
    char *nb = realloc(rq->buf_base, want + 1);
    if (!nb) {
      rq->no_memory = 1;
      return drop_body(rq, n);
    }
    rq->buf = rq->buf_base = nb;
    rq->cap = want;
  }
  memcpy(rq->buf + rq->len, data, n);
  rq->len += n;
  return MHD_YES;
}
