/* test_config.c — settings from defaults, FOCALD_* variables and flags (the flag wins), sizes with suffixes,
 * values refused, and the start-up rules of README "Security": the token's form, and no non-loopback listen
 * address without a token unless --insecure-no-token says so. Each test starts with no FOCALD_* variable set. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "log.h"

extern char **environ;

/* Unsets every FOCALD_* variable, so that the test's environment is what it sets itself. */
static int clean_env(void **state) {
  (void)state;
  for (int again = 1; again;) {
    again = 0;
    for (char **e = environ; *e; e++) {
      if (strncmp(*e, "FOCALD_", 7) != 0) continue;
      char name[128];
      const char *eq = strchr(*e, '=');
      const size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
      if (n >= sizeof name) continue;
      memcpy(name, *e, n);
      name[n] = '\0';
      unsetenv(name);
      again = 1; /* environ changed under us: start over */
      break;
    }
  }
  return 0;
}

/* config_load of the NULL-terminated flags (argv[0] supplied). */
static int load(config *c, const char *const *flags) {
  char *argv[32];
  int argc = 0;
  argv[argc++] = (char *)"focald";
  for (int i = 0; flags && flags[i]; i++) argv[argc++] = (char *)flags[i];
  argv[argc] = NULL;
  return config_load(c, argc, argv);
}

#define FLAGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* config_load must refuse (-1: an error printed, exit status 2). */
static void expect_refused(const char *const *flags, const char *what) {
  config c;
  const int rc = load(&c, flags);
  if (rc != -1) fail_msg("%s: config_load returned %d, expected -1", what, rc);
}

/* ------------------------------------------------------------------ sizes */

static void test_config_parse_size(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int64_t v;
  } ok[] = {
      {"4096", 4096},           {"0", 0},
      {"1K", 1024},             {"16k", 16 << 10},
      {"64M", 64ll << 20},      {"64m", 64ll << 20},
      {"1G", 1ll << 30},        {"3g", 3ll << 30},
      {"64MiB", 64ll << 20},    {"64MB", 64ll << 20},
      {"2Gi", 2ll << 30},       {"1kb", 1024},
      {"8589934591G", 8589934591ll << 30}, /* the largest count of G that fits in int64 */
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t v = -7;
    if (config_parse_size(ok[i].s, &v) != 0) fail_msg("'%s' refused", ok[i].s);
    if (v != ok[i].v) fail_msg("'%s' = %lld, expected %lld", ok[i].s, (long long)v, (long long)ok[i].v);
  }
  static const char *const bad[] = {"", "M", "abc", "-1", "-1K", "12X", "1.5M", "64 M", "64MiBs", "1T",
                                    "8589934592G", "99999999999999999999", " 64M", "+64M", "\t1K", "64M "};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t v = -7;
    if (config_parse_size(bad[i], &v) == 0) fail_msg("'%s' accepted as %lld", bad[i], (long long)v);
    assert_int_equal(v, -7); /* a refused size leaves the output alone */
  }
}

/* ------------------------------------------------------------------ defaults, environment, flags */

/* The defaults the README documents. */
static void test_config_defaults(void **state) {
  (void)state;
  config c;
  assert_int_equal(load(&c, NULL), 0);
  assert_string_equal(c.listen, "127.0.0.1:8765");
  assert_string_equal(c.db, "./data/focald.db");
  assert_int_equal(c.max_body, 64ll << 20);
  assert_int_equal(c.body_memory, 1ll << 30);
  assert_int_equal(c.max_connections, 1024);
  assert_int_equal(c.connection_timeout, 30);
  assert_int_equal(c.min_body_rate, 16 << 10);
  assert_int_equal(c.durability, DUR_FULL);
  assert_true(c.reconsider_factor == 2.0);
  assert_string_equal(c.viewer_url, "http://localhost:3000");
  assert_string_equal(c.health_listen, "");
  assert_string_equal(c.token, "");
  assert_false(c.insecure_no_token);
  assert_false(c.healthcheck);
  assert_string_equal(c.healthcheck_path, "/livez");
  assert_true(c.workers >= 1);
  assert_true(c.http_threads >= 2);
}

/* Every setting is a flag and FOCALD_<NAME>; the flag wins; --name=value and --name value are the same. */
static void test_config_env_then_flags(void **state) {
  (void)state;
  config c;
  setenv("FOCALD_MAX_BODY", "1M", 1);
  setenv("FOCALD_WORKERS", "3", 1);
  setenv("FOCALD_DURABILITY", "normal", 1);
  setenv("FOCALD_LOG_LEVEL", "warn", 1);
  setenv("FOCALD_EMA_ALPHA", "0.5", 1);
  setenv("FOCALD_DB", "/tmp/env.db", 1);
  setenv("FOCALD_QUEUE_LIMIT", "", 1); /* empty: as if unset */
  assert_int_equal(load(&c, NULL), 0);
  assert_int_equal(c.max_body, 1 << 20);
  assert_int_equal(c.workers, 3);
  assert_int_equal(c.durability, DUR_NORMAL);
  assert_int_equal(c.log_level, LOG_WARN);
  assert_true(c.ema_alpha == 0.5);
  assert_string_equal(c.db, "/tmp/env.db");
  assert_int_equal(c.queue_limit, 256);
  /* flags override the environment, each form */
  assert_int_equal(load(&c, FLAGS("--max-body", "2M", "--workers=5", "--durability", "full", "--db=/tmp/flag.db")), 0);
  assert_int_equal(c.max_body, 2 << 20);
  assert_int_equal(c.workers, 5);
  assert_int_equal(c.durability, DUR_FULL);
  assert_string_equal(c.db, "/tmp/flag.db");
  assert_int_equal(c.log_level, LOG_WARN); /* what no flag names stays the environment's */
  /* the last of a repeated flag wins */
  assert_int_equal(load(&c, FLAGS("--queue-limit", "7", "--queue-limit", "9")), 0);
  assert_int_equal(c.queue_limit, 9);
  /* a trailing slash of the viewer URL is dropped */
  assert_int_equal(load(&c, FLAGS("--viewer-url", "http://ohif.example/")), 0);
  assert_string_equal(c.viewer_url, "http://ohif.example");
  /* help and version: exit successfully without running */
  assert_int_equal(load(&c, FLAGS("--version")), 1);
}

/* Values outside a setting's range or form are refused with a non-zero return, from a flag or the environment. */
static void test_config_bad_values_refused(void **state) {
  (void)state;
  expect_refused(FLAGS("--workers", "0"), "0 workers");
  expect_refused(FLAGS("--workers", "129"), "129 workers");
  expect_refused(FLAGS("--workers", "4x"), "workers 4x");
  expect_refused(FLAGS("--http-threads", ""), "empty http-threads");
  expect_refused(FLAGS("--max-body", "1000"), "max-body below 1024");
  expect_refused(FLAGS("--max-body", "lots"), "max-body lots");
  expect_refused(FLAGS("--body-memory", "1K"), "body-memory below 1M");
  expect_refused(FLAGS("--connection-timeout", "0"), "connection-timeout 0");
  expect_refused(FLAGS("--durability", "sometimes"), "durability sometimes");
  expect_refused(FLAGS("--log-level", "loud"), "log-level loud");
  expect_refused(FLAGS("--ema-alpha", "0"), "ema-alpha 0 (the range is (0, 1])");
  expect_refused(FLAGS("--ema-alpha", "1.5"), "ema-alpha 1.5");
  expect_refused(FLAGS("--ema-alpha", "nan"), "ema-alpha nan");
  expect_refused(FLAGS("--reconsider-factor", "0.5"), "reconsider-factor below 1 but not 0");
  expect_refused(FLAGS("--reconsider-factor", "-1"), "negative reconsider-factor");
  expect_refused(FLAGS("--healthcheck-path", "/metrics"), "healthcheck-path /metrics");
  expect_refused(FLAGS("--tls-cert", "/tmp/c.pem"), "tls-cert without tls-key");
  expect_refused(FLAGS("--insecure-no-token=maybe"), "a flag that is neither true nor false");
  expect_refused(FLAGS("--no-such-option"), "an unknown option");
  expect_refused(FLAGS("listen"), "a positional argument");
  expect_refused(FLAGS("--db"), "a flag without its value");
  char longdb[600];
  memset(longdb, 'd', sizeof longdb - 1);
  longdb[sizeof longdb - 1] = 0;
  expect_refused(FLAGS("--db", longdb), "a db path past its buffer");
  setenv("FOCALD_WORKERS", "many", 1);
  expect_refused(NULL, "FOCALD_WORKERS=many");
  unsetenv("FOCALD_WORKERS");
  /* numbers are written plainly: strtoll and strtod would skip leading spaces and take '+', and strtod
   * hexadecimal; trailing spaces were already refused */
  static const char *const unplain[][2] = {
      {"--workers", " 4"},         {"--workers", "+4"},           {"--workers", "\n4"},          {"--workers", "4 "},
      {"--drain-timeout", " 4"},   {"--connection-timeout", "+30"}, {"--max-body", " 64M"},    {"--min-body-rate", "+0"},
      {"--ema-alpha", " 0.5"},     {"--ema-alpha", "+0.5"},       {"--ema-alpha", "0x1p-1"},    {"--reconsider-factor", "0x10"},
      {"--reconsider-factor", " 2"}, {"--reconsider-factor", "infinity"}, {"--log-retention", " -1"},
  };
  for (size_t i = 0; i < sizeof unplain / sizeof unplain[0]; i++) {
    char what[64];
    snprintf(what, sizeof what, "%s '%s'", unplain[i][0], unplain[i][1]);
    expect_refused(FLAGS(unplain[i][0], unplain[i][1]), what);
  }
  setenv("FOCALD_QUEUE_LIMIT", " 7", 1);
  expect_refused(NULL, "FOCALD_QUEUE_LIMIT=' 7'");
  unsetenv("FOCALD_QUEUE_LIMIT");
  /* the accepted edges of the same settings */
  config c;
  assert_int_equal(load(&c, FLAGS("--ema-alpha", "1", "--reconsider-factor", "0", "--max-body", "1K", "--workers", "128")), 0);
  assert_true(c.ema_alpha == 1.0 && c.reconsider_factor == 0.0);
  assert_int_equal(c.max_body, 1024);
  assert_int_equal(load(&c, FLAGS("--ema-alpha", ".5", "--reconsider-factor", "1e2", "--log-retention", "-1")), 0);
  assert_true(c.ema_alpha == 0.5 && c.reconsider_factor == 100.0 && c.log_retention == -1);
}

/* config_load's return for flags, with what it wrote to stderr in msg. */
static int load_capturing(config *c, const char *const *flags, char *msg, size_t n) {
  fflush(stderr);
  FILE *tmp = tmpfile();
  assert_non_null(tmp);
  const int saved = dup(2);
  assert_true(saved >= 0);
  assert_true(dup2(fileno(tmp), 2) >= 0);
  const int rc = load(c, flags);
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  rewind(tmp);
  const size_t got = fread(msg, 1, n - 1, tmp);
  msg[got] = '\0';
  fclose(tmp);
  return rc;
}

/* --reconsider-factor takes 0 (never) or a factor from 1 to 1000, and says so, from a flag or the
 * environment: each boundary on both sides, and the refusal names the range actually accepted. */
static void test_config_reconsider_factor_range(void **state) {
  (void)state;
  static const struct {
    const char *v;
    double want;
  } ok[] = {{"0", 0}, {"-0", 0}, {"0.0", 0}, {"1", 1}, {"1.0", 1}, {"1.000001", 1.000001}, {"2", 2},
            {"999.999", 999.999}, {"1000", 1000}, {"1e3", 1000}};
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    config c;
    char msg[512];
    if (load_capturing(&c, FLAGS("--reconsider-factor", ok[i].v), msg, sizeof msg) != 0)
      fail_msg("--reconsider-factor %s refused: %s", ok[i].v, msg);
    if (c.reconsider_factor != ok[i].want) fail_msg("--reconsider-factor %s = %g", ok[i].v, c.reconsider_factor);
    assert_false(signbit(c.reconsider_factor));
  }
  static const char *const bad[] = {"-1", "-0.5", "-1e-300", "1e-300", "0.5", "0.999999", "1000.001", "1001",
                                    "1e4", "nan", "inf"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (int env = 0; env < 2; env++) {
      config c;
      char msg[512];
      if (env) setenv("FOCALD_RECONSIDER_FACTOR", bad[i], 1);
      const int rc = env ? load_capturing(&c, NULL, msg, sizeof msg)
                         : load_capturing(&c, FLAGS("--reconsider-factor", bad[i]), msg, sizeof msg);
      unsetenv("FOCALD_RECONSIDER_FACTOR");
      if (rc != -1) fail_msg("--reconsider-factor %s (%s) accepted", bad[i], env ? "env" : "flag");
      if (!strstr(msg, "expected 0 (never) or a factor in [1, 1000]") || !strstr(msg, bad[i]))
        fail_msg("--reconsider-factor %s (%s): message '%s' does not name the range", bad[i], env ? "env" : "flag", msg);
    }
  }
}

/* ------------------------------------------------------------------ security */

static void test_config_listen_is_loopback(void **state) {
  (void)state;
  static const char *const loop[] = {"127.0.0.1:8765", "127.1.2.3:80", "[::1]:8765", "localhost:8765"};
  for (size_t i = 0; i < sizeof loop / sizeof loop[0]; i++)
    if (!config_listen_is_loopback(loop[i])) fail_msg("%s is loopback", loop[i]);
  static const char *const other[] = {"0.0.0.0:8765", "10.0.0.1:8765",   "192.168.1.2:80", "[::]:8765",
                                      "[2001:db8::1]:80", "example.com:80", "localhost.example.com:80",
                                      "128.0.0.1:80",   "[::1]x:80",       "12.0.0.1:80",
                                      /* names spelt like loopback addresses are names: what they resolve to decides */
                                      "127.evil.invalid:80", "127.0.0.1.nip.invalid:80", "[::ffff:10.0.0.1]:80"};
  for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
    if (config_listen_is_loopback(other[i])) fail_msg("%s is not loopback", other[i]);
}

/* Listen addresses are resolved when the settings are read, before a database is opened for them: a port is
 * decimal digits from 1 to 65535 (0 or none would be a port the kernel picks, which no client could find). */
static void test_config_listen_addresses(void **state) {
  (void)state;
  static const char *const good[] = {"127.0.0.1:8765", "127.0.0.1:1", "127.0.0.1:65535", "[::1]:8765", "::1:8765",
                                     "localhost:8765", ":8765"};
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int v6 = -1;
    if (config_listen_addr(good[i], &ss, &sl, &v6) != 0) fail_msg("'%s' refused", good[i]);
    assert_true(sl > 0 && (v6 == 0 || v6 == 1));
  }
  static const char *const bad[] = {"127.0.0.1:",      "127.0.0.1:0",        "127.0.0.1:00000",   "127.0.0.1:65536",
                                    "127.0.0.1:-1",    "127.0.0.1:+8765",    "127.0.0.1: 8765",   "127.0.0.1:8765 ",
                                    "127.0.0.1:0x50",  "127.0.0.1:99999999999999999999",      "127.0.0.1:8765x",
                                    "127.0.0.1",       "8765",               "",                  "[::1]8765",
                                    "[::1]",           "999.0.0.1:8765",     "nosuchhost.invalid:8765"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = 0;
    int v6 = -1;
    if (config_listen_addr(bad[i], &ss, &sl, &v6) == 0) fail_msg("'%s' accepted", bad[i]);
    char what[128];
    snprintf(what, sizeof what, "--listen '%s'", bad[i]);
    expect_refused(FLAGS("--listen", bad[i]), what);
    snprintf(what, sizeof what, "--health-listen '%s'", bad[i]);
    if (bad[i][0]) expect_refused(FLAGS("--health-listen", bad[i]), what); /* "" is no health listener */
  }
  setenv("FOCALD_LISTEN", "127.0.0.1:0", 1);
  expect_refused(NULL, "FOCALD_LISTEN=127.0.0.1:0");
  unsetenv("FOCALD_LISTEN");
  /* config_load keeps what it resolved: the listeners bind it without resolving the names again */
  config c;
  assert_int_equal(load(&c, FLAGS("--listen", "127.0.0.1:8123", "--health-listen", "[::1]:8124")), 0);
  const struct sockaddr_in *a = (const struct sockaddr_in *)&c.listen_addr;
  const struct sockaddr_in6 *h = (const struct sockaddr_in6 *)&c.health_addr;
  assert_int_equal(c.listen_addr.ss_family, AF_INET);
  assert_int_equal(c.listen_addrlen, sizeof *a);
  assert_int_equal(ntohs(a->sin_port), 8123);
  assert_int_equal(ntohl(a->sin_addr.s_addr), 0x7f000001);
  assert_false(c.listen_v6);
  assert_int_equal(c.health_addr.ss_family, AF_INET6);
  assert_int_equal(c.health_addrlen, sizeof *h);
  assert_int_equal(ntohs(h->sin6_port), 8124);
  assert_true(IN6_IS_ADDR_LOOPBACK(&h->sin6_addr));
  assert_true(c.health_v6);
}

/* --db names a file: SQLite would take "" and ":memory:" as databases that vanish at exit (every 2xx lost),
 * and a name starting "file:" as a URI whose parameters could change how the file is opened. */
static void test_config_db_is_a_file(void **state) {
  (void)state;
  expect_refused(FLAGS("--db", ""), "an empty --db");
  expect_refused(FLAGS("--db", ":memory:"), "--db :memory:");
  expect_refused(FLAGS("--db", "file:focald.db?mode=memory"), "--db as a URI");
  expect_refused(FLAGS("--db=file::memory:"), "--db=file::memory:");
  config c;
  assert_int_equal(load(&c, FLAGS("--db", "./file:focald.db")), 0);
  assert_int_equal(load(&c, FLAGS("--db", "memory")), 0);
}

/* A non-loopback listen address needs a token or --insecure-no-token (flag or FOCALD_INSECURE_NO_TOKEN=true). */
static void test_config_non_loopback_needs_token_or_insecure(void **state) {
  (void)state;
  config c;
  expect_refused(FLAGS("--listen", "0.0.0.0:8765"), "0.0.0.0 without a token");
  expect_refused(FLAGS("--listen", "[::]:8765"), "[::] without a token");
  assert_int_equal(load(&c, FLAGS("--listen", "0.0.0.0:8765", "--insecure-no-token")), 0);
  assert_true(c.insecure_no_token);
  setenv("FOCALD_INSECURE_NO_TOKEN", "true", 1);
  assert_int_equal(load(&c, FLAGS("--listen", "0.0.0.0:8765")), 0);
  /* the flag can take it back */
  expect_refused(FLAGS("--listen", "0.0.0.0:8765", "--insecure-no-token=false"), "insecure taken back by the flag");
  unsetenv("FOCALD_INSECURE_NO_TOKEN");
  setenv("FOCALD_TOKEN", "0123456789abcdef", 1);
  assert_int_equal(load(&c, FLAGS("--listen", "0.0.0.0:8765")), 0);
  assert_string_equal(c.token, "0123456789abcdef");
  unsetenv("FOCALD_TOKEN");
  /* --healthcheck is a probe, not a server: it may name any address */
  assert_int_equal(load(&c, FLAGS("--listen", "10.1.2.3:8765", "--healthcheck")), 0);
  assert_true(c.healthcheck);
  /* only the command line makes a probe: FOCALD_HEALTHCHECK is not read */
  setenv("FOCALD_HEALTHCHECK", "true", 1);
  assert_int_equal(load(&c, NULL), 0);
  assert_false(c.healthcheck);
}

/* The token: at least 16 printable ASCII characters without spaces, from FOCALD_TOKEN or --token-file (its
 * final newline ignored), not both. */
static void test_config_token_rules(void **state) {
  (void)state;
  config c;
  setenv("FOCALD_TOKEN", "0123456789abcde", 1); /* 15 */
  expect_refused(NULL, "a 15-character token");
  setenv("FOCALD_TOKEN", "0123456789abcdef", 1); /* 16 */
  assert_int_equal(load(&c, NULL), 0);
  assert_string_equal(c.token, "0123456789abcdef");
  setenv("FOCALD_TOKEN", "0123456789 abcdef", 1);
  expect_refused(NULL, "a token with a space");
  setenv("FOCALD_TOKEN", "0123456789abcdef\x7f", 1);
  expect_refused(NULL, "a token with DEL");
  setenv("FOCALD_TOKEN", "0123456789abcdef\xc3\xa9", 1);
  expect_refused(NULL, "a token with non-ASCII bytes");
  char longtok[300];
  memset(longtok, 'a', sizeof longtok - 1);
  longtok[sizeof longtok - 1] = 0;
  setenv("FOCALD_TOKEN", longtok, 1);
  expect_refused(NULL, "a token past its buffer");
  /* from a file */
  char path[] = "/tmp/focald-test-token-XXXXXX";
  const int fd = mkstemp(path);
  assert_true(fd >= 0);
  static const char tok[] = "fedcba9876543210fedcba\n";
  assert_int_equal(write(fd, tok, sizeof tok - 1), (ssize_t)(sizeof tok - 1));
  close(fd);
  setenv("FOCALD_TOKEN", "0123456789abcdef", 1);
  expect_refused(FLAGS("--token-file", path), "FOCALD_TOKEN and --token-file both");
  unsetenv("FOCALD_TOKEN");
  assert_int_equal(load(&c, FLAGS("--token-file", path)), 0);
  assert_string_equal(c.token, "fedcba9876543210fedcba");
  /* a token file that cannot be read is refused, not taken as no token */
  expect_refused(FLAGS("--token-file", "/nonexistent/focald-token"), "an unreadable token file");
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs("short\n", f);
  fclose(f);
  expect_refused(FLAGS("--token-file", path), "a short token in the file");
  f = fopen(path, "w");
  assert_non_null(f);
  for (int i = 0; i < 300; i++) fputc('t', f);
  fclose(f);
  expect_refused(FLAGS("--token-file", path), "a token file longer than the token may be");
  /* a NUL would end the token early: the part after it was silently dropped */
  f = fopen(path, "w");
  assert_non_null(f);
  fwrite("fedcba9876543210fedcba\0secret-part", 1, 34, f);
  fclose(f);
  expect_refused(FLAGS("--token-file", path), "a token file holding a NUL byte");
  unlink(path);
  /* a directory opens, and its read fails: that is said, not taken for an empty token */
  expect_refused(FLAGS("--token-file", "/tmp"), "a directory as the token file");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_config_parse_size, clean_env),
      cmocka_unit_test_setup(test_config_defaults, clean_env),
      cmocka_unit_test_setup(test_config_env_then_flags, clean_env),
      cmocka_unit_test_setup(test_config_bad_values_refused, clean_env),
      cmocka_unit_test_setup(test_config_reconsider_factor_range, clean_env),
      cmocka_unit_test_setup(test_config_listen_is_loopback, clean_env),
      cmocka_unit_test_setup(test_config_listen_addresses, clean_env),
      cmocka_unit_test_setup(test_config_db_is_a_file, clean_env),
      cmocka_unit_test_setup(test_config_non_loopback_needs_token_or_insecure, clean_env),
      cmocka_unit_test_setup(test_config_token_rules, clean_env),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
