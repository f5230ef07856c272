/* metrics.c — Prometheus histograms: bucket counts kept per bucket, summed when written. */
#include "metrics.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

void metrics_hist_observe(metrics_hist *h, double v) {
  int b = 0;
  while (b < h->nbounds && v > h->bounds[b]) b++;
  atomic_fetch_add(&h->bucket[b], 1);
  atomic_fetch_add(&h->sum_micro, (unsigned long long)(v * 1e6 + 0.5));
}

unsigned long long metrics_hist_count(const metrics_hist *h) {
  unsigned long long n = 0;
  for (int b = 0; b <= h->nbounds; b++) n += atomic_load(&h->bucket[b]);
  return n;
}

/* The shortest decimal that reads back as v exactly: le="1048576", not %g's "1.04858e+06". */
static void exact(char *out, size_t cap, double v) {
  for (int p = 1; p <= 17; p++) {
    snprintf(out, cap, "%.*g", p, v);
    if (strtod(out, NULL) == v) return;
  }
}

void metrics_hist_write(buf *o, const char *name, const char *labels, const metrics_hist *h) {
  /* each bucket is read once: the cumulative series, +Inf and _count come from the same reads */
  unsigned long long n[METRICS_BUCKETS_MAX];
  for (int b = 0; b <= h->nbounds; b++) n[b] = atomic_load(&h->bucket[b]);
  const char *sep = labels[0] ? "," : "";
  unsigned long long cum = 0;
  for (int b = 0; b < h->nbounds; b++) {
    char le[32];
    exact(le, sizeof le, h->bounds[b]);
    cum += n[b];
    buf_printf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, labels, sep, le, cum);
  }
  cum += n[h->nbounds];
  buf_printf(o, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, cum);
  const double sum = (double)atomic_load(&h->sum_micro) * 1e-6;
  if (labels[0]) {
    buf_printf(o, "%s_sum{%s} %.6f\n", name, labels, sum);
    buf_printf(o, "%s_count{%s} %llu\n", name, labels, cum);
  } else {
    buf_printf(o, "%s_sum %.6f\n", name, sum);
    buf_printf(o, "%s_count %llu\n", name, cum);
  }
}

/* ------------------------------------------------------------------ the process
 *
 * The process_* series every Prometheus client library exports, read from
 * /proc as they do: CPU time, memory, descriptors and the start time. */

/* The fields of /proc/self/stat after the command name (which may hold spaces and parentheses). */
static int read_self_stat(char *text, size_t cap, const char **fields) {
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -1;
  const size_t n = fread(text, 1, cap - 1, f);
  fclose(f);
  text[n] = 0;
  const char *close = strrchr(text, ')');
  if (!close) return -1;
  *fields = close + 2; /* field 3, the state */
  return 0;
}

/* The boot time in seconds since the epoch (/proc/stat's btime), or -1. */
static double boot_time(void) {
  FILE *f = fopen("/proc/stat", "r");
  if (!f) return -1;
  char line[256];
  double bt = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "btime ", 6) == 0) {
      bt = strtod(line + 6, NULL);
      break;
    }
  fclose(f);
  return bt;
}

static long open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  long n = 0;
  for (struct dirent *e; (e = readdir(d));)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n - 1; /* the directory's own descriptor */
}

void metrics_process_write(buf *o) {
  char text[1024];
  const char *f;
  if (read_self_stat(text, sizeof text, &f) != 0) return;
  /* from field 3: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14) stime(15)
   * cutime cstime priority nice num_threads itrealvalue starttime(22) vsize(23) rss(24) */
  unsigned long long v[22] = {0};
  const char *p = f + 2; /* past the state letter */
  for (int i = 4; i <= 24 && *p; i++) {
    char *end;
    v[i - 3] = strtoull(p, &end, 10);
    p = end;
  }
  const double tick = (double)sysconf(_SC_CLK_TCK);
  const double page = (double)sysconf(_SC_PAGESIZE);
  buf_printf(o,
             "# HELP process_cpu_seconds_total CPU time focald has used, user and system, in seconds.\n"
             "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
             (double)(v[14 - 3] + v[15 - 3]) / tick);
  buf_printf(o,
             "# HELP process_resident_memory_bytes Resident memory of the process in bytes.\n"
             "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %.0f\n",
             (double)v[24 - 3] * page);
  buf_printf(o,
             "# HELP process_virtual_memory_bytes Virtual memory of the process in bytes.\n"
             "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n", v[23 - 3]);
  const double bt = boot_time();
  if (bt >= 0)
    buf_printf(o,
               "# HELP process_start_time_seconds When the process started, in seconds since the Unix epoch.\n"
               "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
               bt + (double)v[22 - 3] / tick);
  const long fds = open_fds();
  if (fds >= 0)
    buf_printf(o,
               "# HELP process_open_fds File descriptors the process holds open.\n"
               "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", fds);
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    buf_printf(o,
               "# HELP process_max_fds The limit on open file descriptors (RLIMIT_NOFILE).\n"
               "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
}
