/* config.h — focald's settings: every one a flag and a FOCALD_<NAME> environment variable. */
#ifndef FOCALD_CONFIG_H
#define FOCALD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "focal.h"

/* focald and its library are released together: the version's one source is FL_VERSION in focal.h
 * (openapi.json, the image's label and the Python client repeat it, and a test checks they agree). */
#define FOCALD_VERSION FL_VERSION

typedef enum durability { DUR_NORMAL = 0, DUR_FULL = 1 } durability;

typedef struct config {
  char listen[128];        /* host:port; [v6]:port */
  char db[512];            /* SQLite file (in a cluster: this node's cache of the shared log) */
  char store[1024];        /* "" alone; a postgresql:// URI (or libpq conninfo): a cluster node on its shared log */
  char node_name[64];      /* this node's name in the shared log's rows; default: the host name */
  int read_wait;           /* milliseconds a read given after=POSITION waits for this node to apply it */
  int cluster_snapshot_interval; /* seconds between snapshots a cluster node offers to PostgreSQL; 0: none */
  int cluster_lock_timeout;      /* ms PostgreSQL lets a node's session idle in a transaction; 0: its own setting */
  int cluster_deadline;          /* ms each round trip to PostgreSQL may take before the node drops the connection */
  int log_retention;       /* rows of the shared log kept below the newest snapshot; -1: all */
  int http_threads;        /* libmicrohttpd's thread pool */
  int workers;             /* libuv's thread pool: scoring */
  int64_t max_body;        /* bytes */
  int64_t body_memory;     /* bytes the request bodies in flight may take, as estimated (see http_request.c) */
  int max_connections;
  int connection_timeout;  /* seconds */
  int64_t min_body_rate;   /* bytes/s a body must average after the first connection_timeout; 0: no floor */
  char health_listen[128]; /* host:port of a listener for /livez and /readyz only; "" for none */
  int queue_limit;         /* batches waiting to be scored or committed before 503 */
  durability durability;
  int log_level;           /* LOG_DEBUG .. LOG_ERROR */
  double ema_alpha;        /* weight of the newest loss in ema_loss */
  int early_observations;  /* a sample's first observations that make its el2n */
  int series_points;       /* points of each (run, sample)'s series (history.h); 0: none */
  int snapshot_interval;   /* seconds between history snapshots */
  int drain_timeout;       /* seconds SIGTERM waits for queued work */
  double reconsider_factor; /* a confirmed sample is listed again past this factor of its ema_loss at confirmation */
  int idempotency_ttl;     /* seconds an Idempotency-Key is kept (idem.h) */
  char viewer_url[256];    /* the OHIF viewer's base URL for DICOM links in exports */
  char media_root[4096];   /* --media-root, resolved (realpath): samples' local files previewed from under it; "" off */
  int healthcheck;         /* --healthcheck: probe healthcheck_path and exit */
  char healthcheck_path[16]; /* /livez or /readyz */
  char token[256];         /* bearer token required of clients; "" for none (FOCALD_TOKEN or --token-file) */
  char token_file[512];
  int insecure_no_token;   /* listening beyond loopback without a token was asked for explicitly */
  char tls_cert[512];      /* PEM files: both set means HTTPS */
  char tls_key[512];
  /* --listen and --health-listen resolved, once, by config_load: what the listeners bind (v6: an IPv6 address) */
  struct sockaddr_storage listen_addr, health_addr;
  socklen_t listen_addrlen, health_addrlen;
  int listen_v6, health_v6;
} config;

/* Fills *cfg from the defaults, then FOCALD_* variables, then argv (flags win).
 * Prints --help / --version and errors itself. Returns 0 to run, 1 to exit
 * successfully (help, version), or -1 after printing an error (exit status 2). */
int config_load(config *cfg /* OUT */, int argc, char **argv);

/* Whether host:port names a loopback address (127.0.0.0/8, ::1, localhost). */
int config_listen_is_loopback(const char *listen);

/* Resolves host:port / [v6]:port into *ss (the first address the host names; an empty host is 0.0.0.0).
 * The port is decimal digits, 1 to 65535. Returns 0, or -1 when the address cannot be used. */
int config_listen_addr(const char *listen, struct sockaddr_storage *ss /* OUT */, socklen_t *sl /* OUT */,
                       int *v6 /* OUT */);

/* Parses "64M", "1G", "4096": bytes. Returns 0 or -1. */
int config_parse_size(const char *s, int64_t *out /* OUT */);

#endif /* FOCALD_CONFIG_H */
