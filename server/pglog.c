/* pglog.c — the cluster's shared log in PostgreSQL, through libpq (see pglog.h for the two promises,
 * no gaps and no inversions, and why the head's row lock keeps them).
 *
 * Every statement is prepared once per connection (again after a reconnect). Rows are read in binary, so
 * positions and bodies come back without text conversion. A connection lost anywhere but at COMMIT has
 * committed nothing of the open transaction; one lost at COMMIT leaves the outcome unknown, and the caller
 * is told so rather than guessing.
 *
 * Every round trip goes through roundtrip() (connecting, through connect_within()): libpq's asynchronous
 * calls on a non-blocking connection, and poll() on its socket until the deadline. A deadline that passes
 * drops the connection, which is then a connection lost: what was sent may still run when a stopped server
 * runs again, but a transaction left open is rolled back when its backend finds the connection closed, so
 * only a COMMIT already sent can still take effect, which is the unknown outcome above.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pglog.h"

/* the PostgreSQL migrations, in order (generated from schema/postgresql/ by the Makefile) */
extern const char *const focald_pg_schema[];
extern const int focald_pg_schema_count;

/* pg_advisory_xact_lock's key for migrating: any constant of focald's own ("fcld") */
#define MIGRATE_LOCK 0x66636c64

struct pglog {
  PGconn *conn;
  char *conninfo;
  char *node;
  int listening;
  int idle_ms;          /* idle_in_transaction_session_timeout set on each session (0: the server's) */
  pglog_limits limits;
  int in_tx;
  int64_t next;         /* in a transaction: the position the next appended row takes */
  char err[256];
};

static const struct {
  const char *name, *sql;
  int nparams;
} statements[] = {
    {"head_lock", "SELECT pos FROM focald_log_head FOR UPDATE", 0},
    {"head", "SELECT pos FROM focald_log_head", 0},
    {"head_set", "UPDATE focald_log_head SET pos = $1::bigint", 1},
    {"notify", "SELECT pg_notify('focald_log', $1::text)", 1},
    {"append", "INSERT INTO focald_log (pos, kind, dataset, body, node) VALUES ($1::bigint, $2::smallint, $3, $4, $5)",
     5},
    {"read", "SELECT pos, kind, dataset, body FROM focald_log WHERE pos > $1::bigint ORDER BY pos LIMIT $2::int", 2},
    {"lease",
     "INSERT INTO focald_lease AS l (name, holder, until) VALUES ($1, $2, now() + make_interval(secs => $3::int)) "
     "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until "
     "WHERE l.until < now() OR l.holder = excluded.holder RETURNING holder",
     3},
    {"snap_head", "INSERT INTO focald_snapshot (pos, node, parts, bytes) VALUES ($1::bigint, $2, $3::int, $4::bigint) "
                  "ON CONFLICT (pos) DO NOTHING", 4},
    {"snap_part", "INSERT INTO focald_snapshot_part (pos, part, data) VALUES ($1::bigint, $2::int, $3)", 3},
    {"snap_newest", "SELECT coalesce(max(pos), 0) FROM focald_snapshot", 0},
    {"snap_parts", "SELECT parts FROM focald_snapshot WHERE pos = $1::bigint", 1},
    {"snap_read", "SELECT data FROM focald_snapshot_part WHERE pos = $1::bigint AND part = $2::int", 2},
    {"log_oldest", "SELECT coalesce(min(pos), 0) FROM focald_log", 0},
    {"prune_log", "DELETE FROM focald_log WHERE pos < $1::bigint AND pos <= (SELECT coalesce(min(pos), $1::bigint) "
                  "FROM focald_hold WHERE until > now())", 1},
    {"hold", "INSERT INTO focald_hold AS h (node, pos, until) VALUES ($1, $2::bigint, now() + make_interval(secs => "
             "$3::int)) ON CONFLICT (node) DO UPDATE SET pos = excluded.pos, until = excluded.until", 3},
    {"has_after", "SELECT (SELECT pos FROM focald_log_head) = $1::bigint OR EXISTS (SELECT 1 FROM focald_log WHERE "
                  "pos = $1::bigint + 1)", 1},
    {"prune_snaps", "DELETE FROM focald_snapshot WHERE pos < (SELECT max(pos) FROM focald_snapshot)", 0},
    {"setting_add", "INSERT INTO focald_setting (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", 2},
    {"setting", "SELECT value FROM focald_setting WHERE name = $1", 1},
};

/* a snapshot's part: big enough that a few round trips carry a large database, small enough for memory */
#define SNAPSHOT_PART (4 << 20)
/* the log's rows one statement of a prune deletes at most: each stays far inside the deadline, however many
 * rows a prune has to delete (the first one after --log-retention is set, on a long log) */
#define PRUNE_ROWS 10000

static void set_err(pglog *p, const char *what) {
  const char *m = p->conn ? PQerrorMessage(p->conn) : "no connection";
  snprintf(p->err, sizeof p->err, "%s: %s", what, m && *m ? m : "failed");
  size_t n = strlen(p->err);
  while (n && (p->err[n - 1] == '\n' || p->err[n - 1] == ' ')) p->err[--n] = 0;
}

/* PGLOG_DOWN when the connection is gone, else PGLOG_ERROR; records the message. */
static int fail(pglog *p, const char *what) {
  set_err(p, what);
  return PQstatus(p->conn) == CONNECTION_OK ? PGLOG_ERROR : PGLOG_DOWN;
}

/* ------------------------------------------------------------------ round trips under a deadline */

static int64_t now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* a stop (pglog_limits.stopped_at) that comes while a round trip waits is noticed this often */
#define STOP_POLL_MS 100

/* When the owner began to stop, or 0. */
static int64_t stopped_at(const pglog *p) {
  return p->limits.stopped_at ? atomic_load(p->limits.stopped_at) : 0;
}

/* Waits until socket fd is ready for events: 1, or 0 once the round trip begun at start (now_ms's clock) has
 * waited its ms, or what the owner's stop allows, or -1 when it cannot be waited on. */
static int wait_socket(const pglog *p, int fd, short events, int64_t start, int ms) {
  if (fd < 0) return -1;
  for (;;) {
    int64_t end = start + ms;
    const int64_t at = stopped_at(p);
    if (at) {
      const int64_t cap = (at > start ? at : start) + p->limits.stop_ms; /* what the stop allows */
      if (cap < end) end = cap;
    }
    const int64_t left = end - now_ms();
    if (left <= 0) return 0;
    int slice = left > INT_MAX ? INT_MAX : (int)left;
    if (p->limits.stopped_at && slice > STOP_POLL_MS) slice = STOP_POLL_MS;
    struct pollfd pfd = {.fd = fd, .events = events};
    const int n = poll(&pfd, 1, slice);
    if (n > 0) return 1;
    if (n < 0 && errno != EINTR) return -1;
  }
}

/* Drops the connection after its deadline (ms) passed, the owner stopped, or its socket could not be waited
 * on (waited, from wait_socket) during what: the server may be stopped and cannot be asked to cancel.
 * Always PGLOG_DOWN. */
static int give_up(pglog *p, const char *what, int waited, int ms) {
  if (waited == 0 && stopped_at(p))
    snprintf(p->err, sizeof p->err, "%.80s: PostgreSQL did not answer, and focald is stopping; the connection is "
             "dropped", what);
  else if (waited == 0)
    snprintf(p->err, sizeof p->err, "%.80s: PostgreSQL did not answer within the deadline of %d ms; the connection "
             "is dropped", what, ms);
  else
    snprintf(p->err, sizeof p->err, "%.80s: cannot wait on the connection (%s); it is dropped", what, strerror(errno));
  PQfinish(p->conn);
  p->conn = NULL;
  p->in_tx = 0;
  return PGLOG_DOWN;
}

static int succeeded(const PGresult *r) {
  return PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
}

/* Runs the statement just sent (sent: what its PQsend* call returned) to its end, under the deadline: sends
 * what is left of it, then reads its results until libpq has no more. *out (OUT, may be NULL) gets the
 * result, the last one or else the first that failed, which the caller clears; nothing on failure. Returns
 * PGLOG_OK, PGLOG_ERROR (the server refused it) or PGLOG_DOWN (the connection is lost, or was dropped at the
 * deadline). The one place where pglog waits for PostgreSQL, but for connecting and pglog_wait. */
static int roundtrip(pglog *p, const char *what, int sent, PGresult **out) {
  if (out) *out = NULL;
  if (!sent) return fail(p, what);
  const int64_t start = now_ms();
  PGresult *res = NULL;
  int rc = PGLOG_OK;
  for (;;) {
    const int unsent = PQflush(p->conn); /* 1: some of the statement is still to be written */
    if (unsent < 0) {
      rc = fail(p, what);
      break;
    }
    if (!unsent && !PQisBusy(p->conn)) {
      PGresult *r = PQgetResult(p->conn);
      if (!r) break;
      if (res && !succeeded(res)) PQclear(r); /* the first failure stays */
      else {
        PQclear(res);
        res = r;
      }
      continue;
    }
    /* the server may answer (an error) before it has read everything: read whenever there is something */
    const int w = wait_socket(p, PQsocket(p->conn), unsent ? POLLIN | POLLOUT : POLLIN, start, p->limits.deadline_ms);
    if (w <= 0) {
      PQclear(res);
      return give_up(p, what, w, p->limits.deadline_ms);
    }
    if (!PQconsumeInput(p->conn)) {
      rc = fail(p, what);
      break;
    }
  }
  if (rc == PGLOG_OK && !(res && succeeded(res))) rc = fail(p, what);
  if (rc == PGLOG_OK && out) *out = res;
  else PQclear(res);
  return rc;
}

/* Runs a simple statement (or several, separated by semicolons) that returns no rows. */
static int exec_cmd(pglog *p, const char *sql) {
  return roundtrip(p, sql, PQsendQuery(p->conn, sql), NULL);
}

/* Runs prepared statement name with text parameters; *out (OUT, may be NULL) gets the result, which the
 * caller clears. */
static int exec_prepared(pglog *p, const char *name, int n, const char *const *values, const int *lengths,
                         const int *formats, int binary_result, PGresult **out) {
  return roundtrip(p, name, PQsendQueryPrepared(p->conn, name, n, values, lengths, formats, binary_result), out);
}

static int64_t get_int64(const PGresult *r, int row, int col) {
  return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static int migrate(pglog *p) {
  int rc = exec_cmd(p, "BEGIN");
  if (rc) return rc;
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT pg_advisory_xact_lock(%d)", MIGRATE_LOCK);
  rc = exec_cmd(p, sql);
  if (!rc) rc = exec_cmd(p, "CREATE TABLE IF NOT EXISTS focald_pg_schema (version integer PRIMARY KEY)");
  int have = 0;
  if (!rc) {
    PGresult *r = NULL;
    const char *sql_have = "SELECT coalesce(max(version), 0) FROM focald_pg_schema";
    rc = roundtrip(p, "reading the schema's version", PQsendQuery(p->conn, sql_have), &r);
    if (!rc) have = (int)get_int64(r, 0, 0);
    PQclear(r);
  }
  if (!rc && have > focald_pg_schema_count) {
    snprintf(p->err, sizeof p->err, "the database's focald schema is version %d, newer than this focald's %d", have,
             focald_pg_schema_count);
    rc = PGLOG_ERROR;
  }
  for (int v = have + 1; !rc && v <= focald_pg_schema_count; v++) {
    rc = exec_cmd(p, focald_pg_schema[v - 1]);
    if (!rc) {
      snprintf(sql, sizeof sql, "INSERT INTO focald_pg_schema (version) VALUES (%d)", v);
      rc = exec_cmd(p, sql);
    }
  }
  if (!rc) rc = exec_cmd(p, "COMMIT");
  if (rc && PQstatus(p->conn) == CONNECTION_OK) exec_cmd(p, "ROLLBACK");
  return rc;
}

/* The server's notices (a table that already exists, a shutdown's warning) say nothing the results do not. */
static void drop_notice(void *arg, const char *message) {
  (void)arg;
  (void)message;
}

static int set_idle_timeout(pglog *p) {
  char sql[80];
  snprintf(sql, sizeof sql, "SET idle_in_transaction_session_timeout = %d", p->idle_ms);
  return exec_cmd(p, sql);
}

int pglog_set_idle_timeout(pglog *p, int ms) {
  p->idle_ms = ms;
  return ms > 0 ? set_idle_timeout(p) : PGLOG_OK;
}

/* What a new connection needs: a durable commit, the statements, LISTEN when following, and the idle timeout
 * when one was set. */
static int session_setup(pglog *p) {
  PGresult *r = NULL;
  int rc = roundtrip(p, "SHOW synchronous_commit", PQsendQuery(p->conn, "SHOW synchronous_commit"), &r);
  /* a 2xx promises that the rows survive a crash of PostgreSQL: never commit asynchronously */
  if (!rc && strcmp(PQgetvalue(r, 0, 0), "off") == 0) rc = exec_cmd(p, "SET synchronous_commit TO on");
  PQclear(r);
  for (size_t i = 0; !rc && i < sizeof statements / sizeof statements[0]; i++)
    rc = roundtrip(p, statements[i].name,
                   PQsendPrepare(p->conn, statements[i].name, statements[i].sql, statements[i].nparams, NULL), NULL);
  if (!rc && p->listening) rc = exec_cmd(p, "LISTEN focald_log");
  if (!rc && p->idle_ms > 0) rc = set_idle_timeout(p);
  return rc;
}

/* libpq waits on a connection that has gone silent for as long as TCP does: a connect to a host that drops
 * packets for about two minutes, a query whose packets are dropped for about fifteen, a reply that never comes
 * on a connection whose request was received for two hours and more. A node cut off from PostgreSQL would hold
 * its writer (and the batches waiting on it) that long. These bound it at about 15 s (a request not
 * acknowledged) or 25 s (a reply awaited on a connection that stopped answering), after which the node answers
 * 503 and reconnects; the deadline bounds what they cannot see (a server that acknowledges and never
 * answers). They come before the conninfo, so that any of them the conninfo sets wins, and connect_timeout is
 * left out when PGCONNECT_TIMEOUT sets it. */
static const char *const link_keys[] = {"keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                                        "tcp_user_timeout", "connect_timeout"};
static const char *const link_values[] = {"1", "10", "5", "3", "15000", "10"};
#define LINK_N (sizeof link_keys / sizeof link_keys[0])

/* How long a connection may take: the deadline, or the connection's connect_timeout when shorter (libpq
 * applies it only to the blocking connect; as there, a value of 1 counts as 2). */
static int connect_ms(PGconn *c, int deadline_ms) {
  int ms = deadline_ms;
  PQconninfoOption *opts = PQconninfo(c);
  for (PQconninfoOption *o = opts; o && o->keyword; o++) {
    if (strcmp(o->keyword, "connect_timeout") != 0 || !o->val) continue;
    long s = strtol(o->val, NULL, 10);
    if (s == 1) s = 2;
    if (s > 0 && s * 1000 < ms) ms = (int)s * 1000;
  }
  PQconninfoFree(opts);
  return ms;
}

/* Connects p->conn to p->conninfo, without blocking longer than connect_ms says (a stopped server's kernel
 * accepts the connection, then nothing answers), and makes it non-blocking, as roundtrip() needs. The host
 * name is still resolved as libpq does, blocking. */
static int connect_within(pglog *p) {
  const char *keys[LINK_N + 2], *values[LINK_N + 2];
  size_t n = 0;
  for (size_t i = 0; i < LINK_N; i++) {
    if (strcmp(link_keys[i], "connect_timeout") == 0 && getenv("PGCONNECT_TIMEOUT")) continue;
    keys[n] = link_keys[i];
    values[n++] = link_values[i];
  }
  keys[n] = "dbname"; /* expanded: a URI or a conninfo, whose settings override the ones before it */
  values[n++] = p->conninfo;
  keys[n] = values[n] = NULL;
  p->conn = PQconnectStartParams(keys, values, 1);
  if (!p->conn) {
    snprintf(p->err, sizeof p->err, "connecting: out of memory");
    return PGLOG_DOWN;
  }
  const int ms = connect_ms(p->conn, p->limits.deadline_ms);
  const int64_t start = now_ms();
  PostgresPollingStatusType st = PGRES_POLLING_WRITING; /* as libpq says to begin */
  while (PQstatus(p->conn) != CONNECTION_BAD && st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED) {
    const int w = wait_socket(p, PQsocket(p->conn), st == PGRES_POLLING_READING ? POLLIN : POLLOUT, start, ms);
    if (w <= 0) return give_up(p, "connecting", w, ms);
    st = PQconnectPoll(p->conn);
  }
  if (st != PGRES_POLLING_OK) {
    set_err(p, "connecting");
    return PGLOG_DOWN;
  }
  PQsetNoticeProcessor(p->conn, drop_notice, NULL);
  if (PQsetnonblocking(p->conn, 1) != 0) {
    set_err(p, "connecting");
    return PGLOG_DOWN;
  }
  return PGLOG_OK;
}

int pglog_open(pglog **out, const char *conninfo, const char *node, const pglog_limits *limits, char *err,
               size_t errlen) {
  *out = NULL;
  pglog *p = calloc(1, sizeof *p);
  int rc = PGLOG_DOWN;
  if (!p || !(p->conninfo = strdup(conninfo)) || !(p->node = strdup(node))) {
    snprintf(err, errlen, "out of memory");
    rc = PGLOG_ERROR;
    goto out;
  }
  p->limits = *limits;
  if (p->limits.deadline_ms <= 0) p->limits.deadline_ms = 1;
  rc = connect_within(p);
  if (!rc) rc = migrate(p);
  if (!rc) rc = session_setup(p);
out:
  if (rc) {
    if (p) snprintf(err, errlen, "%s", p->err[0] ? p->err : "failed");
    pglog_close(p);
    return rc;
  }
  *out = p;
  return PGLOG_OK;
}

int pglog_log_id(pglog *p, char *id, size_t n) {
  PGresult *r = NULL;
  int rc = roundtrip(p, "reading the log's id", PQsendQuery(p->conn, "SELECT id FROM focald_log_id"), &r);
  if (!rc && PQntuples(r) != 1) {
    snprintf(p->err, sizeof p->err, "reading the log's id: focald_log_id has %d rows", PQntuples(r));
    rc = PGLOG_ERROR;
  }
  if (!rc) snprintf(id, n, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

int pglog_setting(pglog *p, const char *name, const char *mine, char *have, size_t n) {
  const char *values[2] = {name, mine};
  PGresult *r = NULL;
  /* two statements: the second's snapshot sees a value another node committed while the first waited on it */
  int rc = exec_prepared(p, "setting_add", 2, values, NULL, NULL, 0, NULL);
  if (!rc) rc = exec_prepared(p, "setting", 1, values, NULL, NULL, 0, &r);
  if (!rc && PQntuples(r) != 1) {
    snprintf(p->err, sizeof p->err, "reading the setting %.64s: %d rows", name, PQntuples(r));
    rc = PGLOG_ERROR;
  }
  if (!rc) snprintf(have, n, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return rc;
}

void pglog_close(pglog *p) {
  if (!p) return;
  if (p->conn) PQfinish(p->conn);
  free(p->conninfo);
  free(p->node);
  free(p);
}

int pglog_reconnect(pglog *p) {
  p->in_tx = 0;
  PQfinish(p->conn);
  p->conn = NULL;
  int rc = connect_within(p);
  if (!rc) rc = session_setup(p);
  return rc ? PGLOG_DOWN : PGLOG_OK;
}

const char *pglog_error(const pglog *p) {
  return p->err;
}

int pglog_begin(pglog *p, int64_t *head) {
  int rc = exec_cmd(p, "BEGIN");
  if (rc) return rc;
  PGresult *r = NULL;
  rc = exec_prepared(p, "head_lock", 0, NULL, NULL, NULL, 0, &r);
  if (rc) {
    pglog_rollback(p);
    return rc;
  }
  *head = get_int64(r, 0, 0);
  PQclear(r);
  p->in_tx = 1;
  p->next = *head + 1;
  return PGLOG_OK;
}

int pglog_append(pglog *p, const pglog_row *rows, int n, int64_t *first) {
  if (!p->in_tx) {
    snprintf(p->err, sizeof p->err, "append outside pglog_begin");
    return PGLOG_ERROR;
  }
  *first = p->next;
  for (int i = 0; i < n; i++) {
    char pos[24], kind[12];
    snprintf(pos, sizeof pos, "%" PRId64, p->next + i);
    snprintf(kind, sizeof kind, "%d", rows[i].kind);
    const char *values[5] = {pos, kind, rows[i].dataset, rows[i].body, p->node};
    int lengths[5] = {0, 0, 0, (int)rows[i].len, 0};
    int formats[5] = {0, 0, 0, 1, 0};
    int rc = exec_prepared(p, "append", 5, values, lengths, formats, 0, NULL);
    if (rc) return rc;
  }
  p->next += n;
  return PGLOG_OK;
}

int pglog_commit(pglog *p, int64_t *head) {
  if (!p->in_tx) {
    snprintf(p->err, sizeof p->err, "commit outside pglog_begin");
    return PGLOG_ERROR;
  }
  char pos[24];
  snprintf(pos, sizeof pos, "%" PRId64, p->next - 1);
  const char *values[1] = {pos};
  int rc = exec_prepared(p, "head_set", 1, values, NULL, NULL, 0, NULL);
  if (!rc) rc = exec_prepared(p, "notify", 1, values, NULL, NULL, 0, NULL);
  if (rc) {
    pglog_rollback(p);
    return rc;
  }
  p->in_tx = 0;
  if (exec_cmd(p, "COMMIT") == PGLOG_OK) {
    *head = p->next - 1;
    return PGLOG_OK;
  }
  /* the server may have committed before the connection broke, or may commit once it runs again when it
   * did not answer by the deadline: only it knows */
  if (PQstatus(p->conn) != CONNECTION_OK) return PGLOG_UNKNOWN;
  return PGLOG_ERROR;
}

void pglog_rollback(pglog *p) {
  p->in_tx = 0;
  if (PQstatus(p->conn) == CONNECTION_OK) exec_cmd(p, "ROLLBACK");
}

static uint64_t be64(const char *b) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | (unsigned char)b[i];
  return v;
}

int pglog_read(pglog *p, int64_t after, int limit, pglog_each_fn each, void *arg, int64_t *last) {
  *last = after;
  char a[24], l[12];
  snprintf(a, sizeof a, "%" PRId64, after);
  snprintf(l, sizeof l, "%d", limit);
  const char *values[2] = {a, l};
  PGresult *r = NULL;
  int rc = exec_prepared(p, "read", 2, values, NULL, NULL, 1, &r);
  if (rc) return rc;
  int rows = PQntuples(r);
  for (int i = 0; i < rows && !rc; i++) {
    if (PQgetlength(r, i, 0) != 8 || PQgetlength(r, i, 1) != 2) {
      snprintf(p->err, sizeof p->err, "the log's row after %" PRId64 " has an unexpected form", *last);
      rc = PGLOG_ERROR;
      break;
    }
    const char *k = PQgetvalue(r, i, 1);
    pglog_row row = {
        .pos = (int64_t)be64(PQgetvalue(r, i, 0)),
        .kind = (int16_t)((unsigned char)k[0] << 8 | (unsigned char)k[1]),
        .dataset = PQgetvalue(r, i, 2),
        .body = PQgetvalue(r, i, 3),
        .len = (size_t)PQgetlength(r, i, 3),
    };
    rc = each(arg, &row);
    *last = row.pos;
  }
  PQclear(r);
  return rc;
}

/* Runs prepared statement name, which takes nothing and returns one integer, into *out. */
static int query_int64(pglog *p, const char *name, int64_t *out) {
  PGresult *r = NULL;
  int rc = exec_prepared(p, name, 0, NULL, NULL, NULL, 0, &r);
  if (rc) return rc;
  *out = get_int64(r, 0, 0);
  PQclear(r);
  return PGLOG_OK;
}

int pglog_head(pglog *p, int64_t *head) {
  return query_int64(p, "head", head);
}

int pglog_listen(pglog *p) {
  int rc = exec_cmd(p, "LISTEN focald_log");
  if (!rc) p->listening = 1;
  return rc;
}

/* Takes the notifications already received; 1 when there was one. */
static int take_notifies(pglog *p, int64_t *head) {
  int got = 0;
  PGnotify *n;
  while ((n = PQnotifies(p->conn))) {
    int64_t v = strtoll(n->extra, NULL, 10);
    if (!got || v > *head) *head = v;
    got = 1;
    PQfreemem(n);
  }
  return got;
}

int pglog_wait(pglog *p, int timeout_ms, int64_t *head) {
  if (!PQconsumeInput(p->conn)) return fail(p, "reading notifications");
  if (take_notifies(p, head)) return 1;
  struct pollfd pfd = {.fd = PQsocket(p->conn), .events = POLLIN};
  if (pfd.fd < 0) return fail(p, "waiting");
  int n = poll(&pfd, 1, timeout_ms);
  if (n < 0 && errno != EINTR) {
    snprintf(p->err, sizeof p->err, "poll: %s", strerror(errno));
    return PGLOG_ERROR;
  }
  if (n <= 0) return 0;
  if (!PQconsumeInput(p->conn)) return fail(p, "reading notifications");
  return take_notifies(p, head);
}

/* ------------------------------------------------------------------ snapshots, leases, pruning */

int pglog_lease(pglog *p, const char *name, int seconds, int *held) {
  char secs[16];
  snprintf(secs, sizeof secs, "%d", seconds);
  const char *values[3] = {name, p->node, secs};
  PGresult *r = NULL;
  int rc = exec_prepared(p, "lease", 3, values, NULL, NULL, 0, &r);
  if (rc) return rc;
  *held = PQntuples(r) == 1;
  PQclear(r);
  return PGLOG_OK;
}

/* Abandons a failed transaction and passes its code on. */
static int abandon(pglog *p, int rc) {
  if (PQstatus(p->conn) == CONNECTION_OK) exec_cmd(p, "ROLLBACK");
  return rc;
}

int pglog_snapshot_put(pglog *p, int64_t pos, const char *path) {
  FILE *f = fopen(path, "rb");
  struct stat st;
  if (!f || fstat(fileno(f), &st) != 0) {
    snprintf(p->err, sizeof p->err, "cannot read %s: %s", path, strerror(errno));
    if (f) fclose(f);
    return PGLOG_ERROR;
  }
  char *chunk = malloc(SNAPSHOT_PART);
  int rc = chunk ? exec_cmd(p, "BEGIN") : PGLOG_ERROR;
  if (!chunk) snprintf(p->err, sizeof p->err, "out of memory");
  const int parts = (int)((st.st_size + SNAPSHOT_PART - 1) / SNAPSHOT_PART);
  char spos[24], sparts[16], sbytes[24], spart[16];
  snprintf(spos, sizeof spos, "%" PRId64, pos);
  snprintf(sparts, sizeof sparts, "%d", parts);
  snprintf(sbytes, sizeof sbytes, "%lld", (long long)st.st_size);
  if (!rc) {
    const char *values[4] = {spos, p->node, sparts, sbytes};
    PGresult *r = NULL;
    rc = exec_prepared(p, "snap_head", 4, values, NULL, NULL, 0, &r);
    /* one at this position already: it holds the same state */
    if (!rc && strcmp(PQcmdTuples(r), "0") == 0) {
      PQclear(r);
      fclose(f);
      free(chunk);
      return abandon(p, PGLOG_OK);
    }
    PQclear(r);
  }
  for (int i = 0; !rc && i < parts; i++) {
    const size_t n = fread(chunk, 1, SNAPSHOT_PART, f);
    if (n == 0) {
      snprintf(p->err, sizeof p->err, "%s ended early", path);
      rc = PGLOG_ERROR;
      break;
    }
    snprintf(spart, sizeof spart, "%d", i);
    const char *values[3] = {spos, spart, chunk};
    const int lengths[3] = {0, 0, (int)n}, formats[3] = {0, 0, 1};
    rc = exec_prepared(p, "snap_part", 3, values, lengths, formats, 0, NULL);
  }
  fclose(f);
  free(chunk);
  if (!rc) rc = exec_cmd(p, "COMMIT");
  return rc ? abandon(p, rc) : PGLOG_OK;
}

int pglog_snapshot_newest(pglog *p, int64_t *pos) {
  return query_int64(p, "snap_newest", pos);
}

int pglog_snapshot_get(pglog *p, int64_t pos, const char *path) {
  char spos[24], spart[16];
  snprintf(spos, sizeof spos, "%" PRId64, pos);
  const char *v1[1] = {spos};
  PGresult *r = NULL;
  /* the parts are read in one transaction, so that a pruning in between cannot take them away */
  int rc = exec_cmd(p, "BEGIN ISOLATION LEVEL REPEATABLE READ");
  if (!rc) rc = exec_prepared(p, "snap_parts", 1, v1, NULL, NULL, 0, &r);
  if (rc) return abandon(p, rc);
  if (PQntuples(r) != 1) {
    PQclear(r);
    snprintf(p->err, sizeof p->err, "no snapshot at position %" PRId64, pos);
    return abandon(p, PGLOG_ERROR);
  }
  const int parts = (int)get_int64(r, 0, 0);
  PQclear(r);
  FILE *f = fopen(path, "wb");
  if (!f) {
    snprintf(p->err, sizeof p->err, "cannot create %s: %s", path, strerror(errno));
    return abandon(p, PGLOG_ERROR);
  }
  for (int i = 0; !rc && i < parts; i++) {
    snprintf(spart, sizeof spart, "%d", i);
    const char *values[2] = {spos, spart};
    rc = exec_prepared(p, "snap_read", 2, values, NULL, NULL, 1, &r);
    if (rc) break;
    if (PQntuples(r) != 1) {
      snprintf(p->err, sizeof p->err, "the snapshot at position %" PRId64 " lacks part %d", pos, i);
      rc = PGLOG_ERROR;
    } else if (fwrite(PQgetvalue(r, 0, 0), 1, (size_t)PQgetlength(r, 0, 0), f) != (size_t)PQgetlength(r, 0, 0)) {
      snprintf(p->err, sizeof p->err, "cannot write %s: %s", path, strerror(errno));
      rc = PGLOG_ERROR;
    }
    PQclear(r);
  }
  if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
    if (!rc) snprintf(p->err, sizeof p->err, "cannot write %s: %s", path, strerror(errno));
    rc = rc ? rc : PGLOG_ERROR;
  }
  fclose(f);
  if (!rc) rc = exec_cmd(p, "COMMIT");
  return rc ? abandon(p, rc) : PGLOG_OK;
}

/* the lock a hold and each statement of a prune take (schema/postgresql/004_holds.sql): 0x66636c68, "fclh" */
static const char hold_lock_sql[] = "SELECT pg_advisory_xact_lock(1717791848)";

int pglog_hold(pglog *p, int64_t pos, int seconds, int *kept) {
  char spos[24], secs[16];
  snprintf(spos, sizeof spos, "%" PRId64, pos);
  snprintf(secs, sizeof secs, "%d", seconds);
  const char *values[3] = {p->node, spos, secs};
  PGresult *r = NULL;
  int rc = exec_cmd(p, "BEGIN");
  if (!rc) rc = exec_cmd(p, hold_lock_sql);
  if (!rc) rc = exec_prepared(p, "hold", 3, values, NULL, NULL, 0, NULL);
  /* a prune before the hold may already have deleted what comes after pos */
  if (!rc && kept) rc = exec_prepared(p, "has_after", 1, values + 1, NULL, NULL, 0, &r);
  if (!rc && kept) *kept = PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (!rc) rc = exec_cmd(p, "COMMIT");
  return rc ? abandon(p, rc) : PGLOG_OK;
}

int pglog_prune(pglog *p, int64_t below, int64_t *rows) {
  *rows = 0;
  int64_t oldest = 0; /* 0: the log is empty */
  int rc = query_int64(p, "log_oldest", &oldest);
  /* PRUNE_ROWS positions at a time, from the oldest: positions have no gaps, so no more rows than that */
  for (int64_t upto = oldest; !rc && oldest > 0 && upto < below;) {
    upto = below - upto > PRUNE_ROWS ? upto + PRUNE_ROWS : below;
    char su[24];
    snprintf(su, sizeof su, "%" PRId64, upto);
    const char *values[1] = {su};
    PGresult *r = NULL;
    /* under the hold lock, so that the DELETE's snapshot, taken after it, sees every hold made before */
    rc = exec_cmd(p, "BEGIN");
    if (!rc) rc = exec_cmd(p, hold_lock_sql);
    if (!rc) rc = exec_prepared(p, "prune_log", 1, values, NULL, NULL, 0, &r);
    if (!rc) *rows += strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    if (!rc) rc = exec_cmd(p, "COMMIT");
    if (rc) abandon(p, rc);
  }
  if (!rc) rc = exec_prepared(p, "prune_snaps", 0, NULL, NULL, NULL, 0, NULL);
  return rc;
}
