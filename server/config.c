/* config.c — one table of settings drives the defaults, the environment, the flags and --help.
 *
 * Each setting has a flag (--max-body), an environment variable (FOCALD_MAX_BODY)
 * and a default chosen for a sidecar beside a training job. The environment is
 * read first and flags override it, so a container can be configured by its
 * environment and a developer can still override one value on the command line.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <sched.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "history.h"
#include "log.h"

/* K_DOUBLE takes (min, max]; K_FACTOR takes 0 (off) or [1, max]. */
typedef enum kind { K_STR, K_INT, K_SIZE, K_DOUBLE, K_FACTOR, K_DURABILITY, K_LEVEL, K_FLAG } kind;

typedef struct setting {
  const char *flag; /* without the leading dashes */
  kind kind;
  size_t offset;
  size_t size;      /* K_STR: buffer size */
  long long min, max;
  const char *help;
  const char *takes; /* what the flag takes, as --help shows it (NULL for a K_FLAG) */
} setting;

#define AT(f) offsetof(config, f)

static const setting settings[] = {
    {"listen", K_STR, AT(listen), sizeof(((config *)0)->listen), 0, 0,
     "address to listen on, host:port ([v6]:port); loopback by default", "HOST:PORT"},
    {"db", K_STR, AT(db), sizeof(((config *)0)->db), 0, 0, "SQLite database file (created with its directory)", "FILE"},
    {"store", K_STR, AT(store), sizeof(((config *)0)->store), 0, 0,
     "run as a node of a cluster: the shared log in this PostgreSQL database (postgresql://USER@HOST:PORT/DB or a "
     "libpq conninfo; a password goes in PGPASSFILE or PGPASSWORD, not here); --db is then this node's cache", "URI"},
    {"node-name", K_STR, AT(node_name), sizeof(((config *)0)->node_name), 0, 0,
     "this node's name in the cluster's log (default: the host name)", "NAME"},
    {"read-wait", K_INT, AT(read_wait), 0, 0, 60000,
     "in a cluster, milliseconds a read with after=POSITION waits for this node to apply that position before 503", "MS"},
    {"cluster-snapshot-interval", K_INT, AT(cluster_snapshot_interval), 0, 0, 86400 * 7,
     "in a cluster, seconds between snapshots of this node's state stored in PostgreSQL for new nodes to start "
     "from (one node at a time writes them; 0: none)", "SECONDS"},
    {"cluster-lock-timeout", K_INT, AT(cluster_lock_timeout), 0, 0, 3600000,
     "in a cluster, milliseconds PostgreSQL lets this node's session sit idle in a transaction, which holds the "
     "log's append lock, before it ends the session and frees the lock: a node that stops or loses its network "
     "then stops every node's writes for no longer (0: PostgreSQL's own setting)", "MS"},
    {"cluster-deadline", K_INT, AT(cluster_deadline), 0, 100, 3600000,
     "in a cluster, milliseconds each statement (and each connection) to PostgreSQL may take; past it the node "
     "drops the connection, answers 503 and reconnects, so a PostgreSQL that stops answering without the "
     "connection failing (its processes or its host frozen) cannot stall the node", "MS"},
    {"log-retention", K_INT, AT(log_retention), 0, -1, 2000000000,
     "in a cluster, rows of the shared log kept below the newest snapshot; older ones are deleted, but never one a "
     "running or starting node has still to apply (-1: keep all)",
     "ROWS"},
    {"http-threads", K_INT, AT(http_threads), 0, 1, 256, "HTTP threads (libmicrohttpd's pool)", "N"},
    {"workers", K_INT, AT(workers), 0, 1, 128, "scoring threads (libuv's pool); default: the CPUs focald may use (affinity and cgroup CPU quota)", "N"},
    {"max-body", K_SIZE, AT(max_body), 0, 1024, (long long)1 << 40, "largest request body (suffixes K, M, G)", "BYTES"},
    {"body-memory", K_SIZE, AT(body_memory), 0, 1 << 20, (long long)1 << 44,
     "memory the request bodies being read and decoded may take together (estimated: 10x a JSON body, 2x a binary one); "
     "past it a request gets 503 overloaded, unless it is the only one", "BYTES"},
    {"max-connections", K_INT, AT(max_connections), 0, 4, 1000000, "open connections at most", "N"},
    {"connection-timeout", K_INT, AT(connection_timeout), 0, 1, 86400, "seconds before an idle or stalled connection is closed", "SECONDS"},
    {"min-body-rate", K_SIZE, AT(min_body_rate), 0, 0, (long long)1 << 40,
     "bytes per second a request body must average once it has had --connection-timeout; slower uploads are cut off (0: no floor)", "BYTES"},
    {"health-listen", K_STR, AT(health_listen), sizeof(((config *)0)->health_listen), 0, 0,
     "also answer /livez and /readyz (only) on this host:port, with slots of its own: probes there answer whatever the data connections do", "HOST:PORT"},
    {"queue-limit", K_INT, AT(queue_limit), 0, 1, 1000000, "batches waiting for scoring or commit before 503", "N"},
    {"durability", K_DURABILITY, AT(durability), 0, 0, 0,
     "full: a 2xx survives power loss (fsync per commit); normal: it survives a crash of focald", "full|normal"},
    {"log-level", K_LEVEL, AT(log_level), 0, 0, 0, "debug, info, warn or error", "LEVEL"},
    {"ema-alpha", K_DOUBLE, AT(ema_alpha), 0, 0, 1, "weight of the newest loss in ema_loss, in (0, 1]", "ALPHA"},
    {"early-observations", K_INT, AT(early_observations), 0, 1, 65535,
     "how many of a sample's first observations its el2n and grand average (Paul et al. score early in training)", "N"},
    {"series-points", K_INT, AT(series_points), 0, 0, HIST_SERIES_MAX,
     "points of each sample's loss and p_t series kept per run, spanning the whole of training (12 bytes each, "
     "plus 5 per sample and run; 0: none)", "N"},
    {"snapshot-interval", K_INT, AT(snapshot_interval), 0, 0, 86400,
     "seconds between history snapshots (0: one after every commit, for tests)", "SECONDS"},
    {"drain-timeout", K_INT, AT(drain_timeout), 0, 1, 3600,
     "seconds SIGTERM waits for queued batches to be scored; those still waiting then get 503 draining", "SECONDS"},
    {"reconsider-factor", K_FACTOR, AT(reconsider_factor), 0, 1, 1000,
     "a confirmed sample is listed again once its ema_loss passes this factor (1 to 1000) of its value at "
     "confirmation; 0: never", "FACTOR"},
    {"idempotency-ttl", K_INT, AT(idempotency_ttl), 0, 1, 86400 * 30,
     "seconds an Idempotency-Key of the review loop's writes is kept: a retry within it gets the first answer, "
     "later it is a new request", "SECONDS"},
    {"viewer-url", K_STR, AT(viewer_url), sizeof(((config *)0)->viewer_url), 0, 0,
     "OHIF viewer base URL for the DICOM links in exports: absolute http(s), a host and at most a path (a trailing slash is dropped)", "URL"},
    {"media-root", K_STR, AT(media_root), sizeof(((config *)0)->media_root), 0, 0,
     "a directory whose image files the console may preview, read-only, for samples whose meta uri names them "
     "(nothing outside it is ever served)", "DIR"},
    {"token-file", K_STR, AT(token_file), sizeof(((config *)0)->token_file), 0, 0,
     "file holding the bearer token clients must send (or FOCALD_TOKEN holding the token itself)", "FILE"},
    {"insecure-no-token", K_FLAG, AT(insecure_no_token), 0, 0, 0, "serve a non-loopback listen address without a token: anyone who can reach the port can read, change and delete every dataset", NULL},
    {"tls-cert", K_STR, AT(tls_cert), sizeof(((config *)0)->tls_cert), 0, 0, "PEM certificate (chain): serve HTTPS", "FILE"},
    {"tls-key", K_STR, AT(tls_key), sizeof(((config *)0)->tls_key), 0, 0, "PEM private key of --tls-cert", "FILE"},
    {"healthcheck", K_FLAG, AT(healthcheck), 0, 0, 0, "probe the health path of the focald at --listen (at --health-listen when set), exit 0 if it answers 200, else 1", NULL},
    {"healthcheck-path", K_STR, AT(healthcheck_path), sizeof(((config *)0)->healthcheck_path), 0, 0,
     "what --healthcheck probes: /livez (the process answers) or /readyz (it accepts work)", "PATH"},
};
#define NSETTINGS (sizeof settings / sizeof settings[0])

/* The CPUs this process may use: the affinity mask, bounded by a cgroup v2 CPU quota (a container's
 * CPU limit), so that a 2-CPU container on a 64-core host starts 2 threads of each kind, not 64. */
static long usable_cpus(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
  FILE *f = fopen("/sys/fs/cgroup/cpu.max", "r");
  if (f) {
    char quota[32];
    long period = 0;
    if (fscanf(f, "%31s %ld", quota, &period) == 2 && strcmp(quota, "max") != 0 && period > 0) {
      long q = strtol(quota, NULL, 10);
      long limit = (q + period - 1) / period;
      if (limit >= 1 && limit < n) n = limit;
    }
    fclose(f);
  }
  return n < 1 ? 1 : n;
}

static void defaults(config *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->listen, sizeof c->listen, "127.0.0.1:8765");
  snprintf(c->db, sizeof c->db, "./data/focald.db");
  if (gethostname(c->node_name, sizeof c->node_name) != 0 || !c->node_name[0])
    snprintf(c->node_name, sizeof c->node_name, "focald");
  c->node_name[sizeof c->node_name - 1] = 0;
  c->read_wait = 5000;
  c->cluster_snapshot_interval = 300;
  c->cluster_lock_timeout = 300000;
  /* Statements take milliseconds. The longest that are still healthy: a 4 MiB part of a snapshot (under a
   * second on any link of 50 Mbit/s; a minute allows 0.6 Mbit/s), a COMMIT's fsync on a saturated disk
   * (seconds), a prune's step of 10,000 rows, and the append lock's wait behind other nodes' groups, each
   * of which holds it for its own work (a dataset's deletion, the longest, takes 1.2 s per 500,000
   * samples). A wait longer than a minute is behind a node that stalled in its group, which
   * --cluster-lock-timeout ends (five minutes by default); this node does not wait for that, it answers
   * 503 and the client retries. */
  c->cluster_deadline = 60000;
  c->log_retention = -1;
  long cores = usable_cpus();
  c->http_threads = cores < 2 ? 2 : (int)cores;
  c->workers = (int)cores;
  c->max_body = 64ll << 20;
  c->body_memory = 1ll << 30;
  c->max_connections = 1024;
  c->connection_timeout = 30;
  c->min_body_rate = 16 << 10;
  c->queue_limit = 256;
  c->durability = DUR_FULL;
  c->log_level = LOG_INFO;
  c->ema_alpha = 0.3;
  c->early_observations = 10;
  c->series_points = 16;
  c->snapshot_interval = 5;
  c->drain_timeout = 4;
  c->reconsider_factor = 2.0;
  c->idempotency_ttl = 86400;
  snprintf(c->viewer_url, sizeof c->viewer_url, "http://localhost:3000");
  snprintf(c->healthcheck_path, sizeof c->healthcheck_path, "/livez");
}

/* Whether value is written as a plain decimal number: an optional '-', then a digit (or '.' where a fraction
 * may come). strtoll and strtod would also skip leading spaces and take '+', and strtod hexadecimal and
 * "inf"/"nan"; a value with trailing space is refused, so one with leading space is too. */
static int plain_number(const char *value, int fraction) {
  const char *p = value + (value[0] == '-');
  return (isdigit((unsigned char)*p) || (fraction && *p == '.')) && !strpbrk(value, "xX");
}

int config_parse_size(const char *s, int64_t *out) {
  char *end;
  if (!plain_number(s, 0)) return -1;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || v < 0) return -1;
  long long mul = 1;
  switch (toupper((unsigned char)*end)) {
  case '\0': break;
  case 'K': mul = 1ll << 10; end++; break;
  case 'M': mul = 1ll << 20; end++; break;
  case 'G': mul = 1ll << 30; end++; break;
  default: return -1;
  }
  if (*end == 'i' || *end == 'I') end++;
  if ((*end == 'B' || *end == 'b')) end++;
  if (*end != '\0' || v > INT64_MAX / mul) return -1;
  *out = v * mul;
  return 0;
}

/* Applies one value to one setting; where says where it came from, for errors. */
static int apply(config *c, const setting *s, const char *value, const char *where) {
  char *field = (char *)c + s->offset;
  char *end;
  switch (s->kind) {
  case K_STR:
    if (strlen(value) >= s->size) {
      fprintf(stderr, "focald: %s: too long (at most %zu bytes)\n", where, s->size - 1);
      return -1;
    }
    memcpy(field, value, strlen(value) + 1);
    return 0;
  case K_INT: {
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || !plain_number(value, 0) || end == value || *end || v < s->min || v > s->max) {
      fprintf(stderr, "focald: %s: expected an integer in [%lld, %lld], got '%s'\n", where, s->min, s->max, value);
      return -1;
    }
    *(int *)field = (int)v;
    return 0;
  }
  case K_SIZE: {
    int64_t v;
    if (config_parse_size(value, &v) != 0 || v < s->min || v > s->max) {
      fprintf(stderr, "focald: %s: expected a size such as 64M (at least %lld bytes), got '%s'\n", where, s->min, value);
      return -1;
    }
    *(int64_t *)field = v;
    return 0;
  }
  case K_DOUBLE: {
    errno = 0;
    double v = strtod(value, &end);
    if (errno || !plain_number(value, 1) || end == value || *end || !(v > (double)s->min && v <= (double)s->max)) {
      fprintf(stderr, "focald: %s: expected a number in (%lld, %lld], got '%s'\n", where, s->min, s->max, value);
      return -1;
    }
    *(double *)field = v;
    return 0;
  }
  case K_FACTOR: {
    errno = 0;
    double v = strtod(value, &end);
    if (errno || !plain_number(value, 1) || end == value || *end ||
        !(v == 0 || (v >= (double)s->min && v <= (double)s->max))) {
      fprintf(stderr, "focald: %s: expected 0 (never) or a factor in [%lld, %lld], got '%s'\n", where, s->min, s->max,
              value);
      return -1;
    }
    *(double *)field = v == 0 ? 0.0 : v; /* "-0" is 0 */
    return 0;
  }
  case K_DURABILITY:
    if (strcmp(value, "full") == 0) *(durability *)field = DUR_FULL;
    else if (strcmp(value, "normal") == 0) *(durability *)field = DUR_NORMAL;
    else {
      fprintf(stderr, "focald: %s: expected full or normal, got '%s'\n", where, value);
      return -1;
    }
    return 0;
  case K_LEVEL: {
    int lv = log_level_parse(value);
    if (lv < 0) {
      fprintf(stderr, "focald: %s: expected debug, info, warn or error, got '%s'\n", where, value);
      return -1;
    }
    *(int *)field = lv;
    return 0;
  }
  case K_FLAG:
    if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0) *(int *)field = 1;
    else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0) *(int *)field = 0;
    else {
      fprintf(stderr, "focald: %s: expected true or false, got '%s'\n", where, value);
      return -1;
    }
    return 0;
  }
  return -1;
}

/* FOCALD_MAX_BODY for max-body. */
/* --healthcheck makes this run a one-shot probe: only the command line says so, so that an environment
 * shared with the daemon (a container's, a pod's) cannot turn the daemon itself into a probe. */
static int is_command(const setting *s) {
  return strcmp(s->flag, "healthcheck") == 0;
}

static void env_name(const setting *s, char *out, size_t n) {
  size_t j = (size_t)snprintf(out, n, "FOCALD_");
  for (const char *p = s->flag; *p && j + 1 < n; p++) out[j++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[j] = '\0';
}

static void describe_default(const config *d, const setting *s, char *out, size_t n) {
  const char *field = (const char *)d + s->offset;
  switch (s->kind) {
  case K_STR: snprintf(out, n, "%s", *field ? field : "none"); break;
  case K_INT: snprintf(out, n, "%d", *(const int *)field); break;
  case K_SIZE: {
    const long long v = (long long)*(const int64_t *)field;
    if (v && v % (1 << 20) == 0) snprintf(out, n, "%lldM", v >> 20);
    else if (v && v % 1024 == 0) snprintf(out, n, "%lldK", v >> 10);
    else snprintf(out, n, "%lld", v);
    break;
  }
  case K_DOUBLE:
  case K_FACTOR: snprintf(out, n, "%g", *(const double *)field); break;
  case K_DURABILITY: snprintf(out, n, "%s", *(const durability *)field == DUR_FULL ? "full" : "normal"); break;
  case K_LEVEL: snprintf(out, n, "%s", log_level_name(*(const int *)field)); break;
  case K_FLAG: snprintf(out, n, "off"); break;
  }
}

static void usage(FILE *f) {
  config d;
  defaults(&d);
  fprintf(f,
          "usage: focald [options]\n"
          "focald evaluates focal loss for training batches and keeps each sample's history.\n\n"
          "Every option but --healthcheck is also an environment variable (flag wins):\n\n");
  for (size_t i = 0; i < NSETTINGS; i++) {
    char env[64], def[64], flag[64];
    env_name(&settings[i], env, sizeof env);
    describe_default(&d, &settings[i], def, sizeof def);
    snprintf(flag, sizeof flag, "--%s%s%s", settings[i].flag, settings[i].takes ? " " : "",
             settings[i].takes ? settings[i].takes : "");
    if (is_command(&settings[i]))
      fprintf(f, "  %-28s %s\n  %-28s (the command line only)\n", flag, settings[i].help, "");
    else
      fprintf(f, "  %-28s %s\n  %-28s env %s, default %s\n", flag, settings[i].help, "", env, def);
  }
  fprintf(f, "  %-28s the bearer token itself (kept out of the command line, where ps shows it)\n", "env FOCALD_TOKEN");
  fprintf(f, "  %-28s print this help\n  %-28s print the version\n", "--help", "--version");
}

static int addr_is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
  if (sa->sa_family != AF_INET6) return 0;
  const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
  return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

/* Whether every address the host part names is a loopback one: what the host
 * resolves to decides, not how it is spelt ("127.evil.example" is a name like
 * any other). A name that does not resolve is not loopback. */
int config_listen_is_loopback(const char *listen) {
  const char *colon = strrchr(listen, ':');
  size_t hl = colon ? (size_t)(colon - listen) : strlen(listen);
  char host[256];
  if (hl >= 2 && listen[0] == '[' && listen[hl - 1] == ']') {
    listen++;
    hl -= 2;
  }
  if (hl == 0 || hl >= sizeof host) return 0;
  memcpy(host, listen, hl);
  host[hl] = '\0';
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res) return 0;
  int all = 1;
  for (const struct addrinfo *ai = res; ai; ai = ai->ai_next) all = all && addr_is_loopback(ai->ai_addr);
  freeaddrinfo(res);
  return all;
}

int config_listen_addr(const char *listen, struct sockaddr_storage *ss, socklen_t *sl, int *v6) {
  char host[128];
  const char *colon = strrchr(listen, ':');
  if (!colon) return -1;
  size_t hl = (size_t)(colon - listen);
  if (hl >= sizeof host) return -1;
  memcpy(host, listen, hl);
  host[hl] = '\0';
  /* the port in decimal digits, 1 to 65535: 0 (or nothing) would be a port the kernel picks, which no client
   * and no --healthcheck could find */
  const char *port = colon + 1;
  size_t pl = strspn(port, "0123456789");
  if (pl == 0 || pl > 5 || port[pl] || atoi(port) < 1 || atoi(port) > 65535) return -1;
  char *h = host;
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h[hl - 1] = '\0';
    h++;
  }
  if (!*h) h = "0.0.0.0";
  struct addrinfo hints = {0}, *res = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  if (getaddrinfo(h, port, &hints, &res) != 0 || !res) return -1;
  memcpy(ss, res->ai_addr, res->ai_addrlen);
  *sl = res->ai_addrlen;
  *v6 = res->ai_family == AF_INET6;
  freeaddrinfo(res);
  return 0;
}

/* Returns 1 when url is an absolute http or https URL that "/viewer?..." can be appended to: the scheme
 * (any case), "//", a host, then a path at most, of the characters RFC 3986 lets stand unescaped there. Every
 * link the exports and the API give starts with it, so that it is checked here once rather than by each
 * reader (the console would show a "javascript:" link as text). */
static int viewer_url_ok(const char *url) {
  size_t at;
  if (strncasecmp(url, "http://", 7) == 0) at = 7;
  else if (strncasecmp(url, "https://", 8) == 0) at = 8;
  else return 0;
  const char *rest = url + at;
  if (rest[0] == '\0' || rest[0] == '/' || rest[0] == ':' || rest[0] == '@') return 0; /* no host */
  for (const char *p = rest; *p; p++) {
    if (*p == '%' && !(isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2]))) return 0;
    if (!isalnum((unsigned char)*p) && !strchr("-._~%!$&'()*+,;=:@/[]", *p)) return 0;
  }
  return 1;
}

/* Reads the token from FOCALD_TOKEN or --token-file and checks the settings that go together. */
static int finish(config *cfg) {
  const char *env = getenv("FOCALD_TOKEN");
  if (env && *env && cfg->token_file[0]) {
    fprintf(stderr, "focald: give the token by FOCALD_TOKEN or by --token-file, not both\n");
    return -1;
  }
  if (env && *env) {
    if (strlen(env) >= sizeof cfg->token) {
      fprintf(stderr, "focald: FOCALD_TOKEN: too long (at most %zu bytes)\n", sizeof cfg->token - 1);
      return -1;
    }
    snprintf(cfg->token, sizeof cfg->token, "%s", env);
  } else if (cfg->token_file[0]) {
    FILE *f = fopen(cfg->token_file, "r");
    if (!f) {
      fprintf(stderr, "focald: --token-file %s: %s\n", cfg->token_file, strerror(errno));
      return -1;
    }
    size_t n = fread(cfg->token, 1, sizeof cfg->token - 1, f);
    int longer = fgetc(f) != EOF;
    const int failed = ferror(f), err = errno;
    fclose(f);
    cfg->token[n] = '\0';
    if (failed) { /* a directory opens, then reads fail */
      fprintf(stderr, "focald: --token-file %s: %s\n", cfg->token_file, strerror(err));
      return -1;
    }
    if (strlen(cfg->token) != n) { /* the token would end at the NUL: shorter than the file says */
      fprintf(stderr, "focald: --token-file %s: the file holds a NUL byte\n", cfg->token_file);
      return -1;
    }
    while (n && isspace((unsigned char)cfg->token[n - 1])) cfg->token[--n] = '\0'; /* the file's final newline */
    if (longer) {
      fprintf(stderr, "focald: --token-file %s: the token is longer than %zu bytes\n", cfg->token_file, sizeof cfg->token - 1);
      return -1;
    }
  }
  for (const char *p = cfg->token; *p; p++)
    if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
      fprintf(stderr, "focald: the token must be printable ASCII without spaces\n");
      return -1;
    }
  if ((env && *env) || cfg->token_file[0]) {
    if (strlen(cfg->token) < 16) {
      fprintf(stderr, "focald: the token is shorter than 16 characters; use a random one (e.g. openssl rand -hex 32)\n");
      return -1;
    }
  }
  /* the viewer's base URL is joined with "/viewer?...": a trailing slash would give "//viewer" */
  size_t vn = strlen(cfg->viewer_url);
  while (vn > 0 && cfg->viewer_url[vn - 1] == '/') cfg->viewer_url[--vn] = '\0';
  if (!viewer_url_ok(cfg->viewer_url)) {
    fprintf(stderr, "focald: --viewer-url '%s': expected an absolute http:// or https:// URL: a host, then a path at "
            "most (no query or fragment, no spaces or characters a URL must escape)\n", cfg->viewer_url);
    return -1;
  }
  if (cfg->media_root[0]) {
    /* resolved once: every file served must resolve to a path below this one */
    char resolved[PATH_MAX];
    struct stat st;
    if (!realpath(cfg->media_root, resolved) || stat(resolved, &st) != 0 || !S_ISDIR(st.st_mode) ||
        strlen(resolved) >= sizeof cfg->media_root) {
      fprintf(stderr, "focald: --media-root %s: not a directory\n", cfg->media_root);
      return -1;
    }
    snprintf(cfg->media_root, sizeof cfg->media_root, "%s", resolved);
  }
  /* checked before anything is opened: a listener that cannot be had must not leave a database made for it;
   * resolved here only, and kept for the listeners */
  const char *bad = NULL;
  if (config_listen_addr(cfg->listen, &cfg->listen_addr, &cfg->listen_addrlen, &cfg->listen_v6) != 0) bad = "listen";
  else if (cfg->health_listen[0] &&
           config_listen_addr(cfg->health_listen, &cfg->health_addr, &cfg->health_addrlen, &cfg->health_v6) != 0)
    bad = "health-listen";
  if (bad) {
    fprintf(stderr, "focald: --%s '%s': expected HOST:PORT or [V6]:PORT, a host that resolves and a port from 1 to 65535\n",
            bad, bad[0] == 'l' ? cfg->listen : cfg->health_listen);
    return -1;
  }
  /* SQLite reads "" and ":memory:" as databases that vanish at exit, and a name starting "file:" as a URI */
  if (!cfg->db[0] || strcmp(cfg->db, ":memory:") == 0 || strncmp(cfg->db, "file:", 5) == 0) {
    fprintf(stderr, "focald: --db '%s': expected a file's path (\"\" and \":memory:\" would keep nothing past exit; "
            "a file whose name starts with \"file:\" is ./file:...)\n", cfg->db);
    return -1;
  }
  if (strcmp(cfg->healthcheck_path, "/livez") != 0 && strcmp(cfg->healthcheck_path, "/readyz") != 0) {
    fprintf(stderr, "focald: --healthcheck-path: /livez or /readyz, not '%s'\n", cfg->healthcheck_path);
    return -1;
  }
  if (!cfg->tls_cert[0] != !cfg->tls_key[0]) {
    fprintf(stderr, "focald: --tls-cert and --tls-key go together\n");
    return -1;
  }
  if (!cfg->healthcheck && !cfg->token[0] && !config_listen_is_loopback(cfg->listen) && !cfg->insecure_no_token) {
    fprintf(stderr,
            "focald: --listen %s is reachable from other hosts and no token is set: set FOCALD_TOKEN or --token-file, "
            "or pass --insecure-no-token to accept that anyone who can reach the port can read, change and delete the data\n",
            cfg->listen);
    return -1;
  }
  return 0;
}

int config_load(config *cfg, int argc, char **argv) {
  defaults(cfg);
  for (size_t i = 0; i < NSETTINGS; i++) {
    char env[64];
    if (is_command(&settings[i])) continue;
    env_name(&settings[i], env, sizeof env);
    const char *v = getenv(env);
    if (v && *v && apply(cfg, &settings[i], v, env) != 0) return -1;
  }
  for (int a = 1; a < argc; a++) {
    const char *arg = argv[a];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      usage(stdout);
      return 1;
    }
    if (strcmp(arg, "--version") == 0) {
      printf("focald %s\n", FOCALD_VERSION);
      return 1;
    }
    if (strncmp(arg, "--", 2) != 0) {
      fprintf(stderr, "focald: unexpected argument '%s' (see --help)\n", arg);
      return -1;
    }
    const char *name = arg + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    const setting *s = NULL;
    for (size_t i = 0; i < NSETTINGS; i++)
      if (strlen(settings[i].flag) == len && strncmp(settings[i].flag, name, len) == 0) s = &settings[i];
    if (!s) {
      fprintf(stderr, "focald: unknown option '%s' (see --help)\n", arg);
      return -1;
    }
    const char *value;
    if (eq) value = eq + 1;
    else if (s->kind == K_FLAG) value = "1";
    else if (a + 1 < argc) value = argv[++a];
    else {
      fprintf(stderr, "focald: %s needs a value\n", arg);
      return -1;
    }
    if (apply(cfg, s, value, arg) != 0) return -1;
  }
  return finish(cfg);
}
