/* faultvfs.c — the fault-injection harness's library, preloaded into focald (see tests/fault/README.md).
 *
 * It wraps SQLite's default VFS and memory allocator so that it sees every
 * disk read, write, sync and allocation SQLite makes for focald's writer,
 * interposes the C library's malloc and its kin, and defines
 * focald_fault_point (server/faultpoint.h), through which focald names the
 * step each thread is in. With that it can:
 *
 *   count   each read, write, sync, SQLite allocation and C library allocation
 *           made by a thread that has named a step (the main thread while
 *           loading and closing, the writer; an HTTP thread handling a
 *           request or sending a committed change's answer, a pool thread
 *           building a batch's); FOCALD_FAULT_TRACE gets a line at every
 *           step with the counts so far ("step group 12 40 7 3051 9120"), so
 *           the harness knows which step each event belongs to, and a line
 *           when a fault fires;
 *   fail    the Nth event of a kind (and the span-1 after it) with an error:
 *           a write with SQLITE_FULL (a full disk) or SQLITE_IOERR_WRITE, a
 *           sync with SQLITE_IOERR_FSYNC, a read with SQLITE_IOERR_READ, an
 *           allocation with NULL (SQLITE_NOMEM; ENOMEM for the C library's);
 *   kill    the process with SIGKILL just before or just after the Nth event;
 *   hold    the writer where it is about to take its queue, for as long as
 *           the file FOCALD_FAULT_HOLD exists, so that several requests land
 *           in one group; and hold each scoring pool thread before it
 *           scores a chunk, for as long as the file FOCALD_FAULT_HOLD_SCORE
 *           exists, so that batches queue up behind it (a pool that cannot
 *           keep up, whatever the machine's speed); and hold a cluster
 *           node's writer once it holds the shared log's append lock, for as
 *           long as the file FOCALD_FAULT_HOLD_LOCKED exists (a node that
 *           stops in the middle of a group); and hold the main thread where
 *           it begins to load the database (the second time it names the load
 *           step: the first is the opening, before focald listens), for as
 *           long as the file FOCALD_FAULT_HOLD_LOAD exists (a database that
 *           takes long to load).
 *
 * FOCALD_FAULT is "kind=write|sync|read|alloc|malloc,at=N,do=full|ioerr|nomem|kill-before|kill-after[,span=K]
 * [,in=STEP][,while=PATH][,kill_after=J]": with in=, only events of that step count towards N; with
 * while=, the fault holds only while the file PATH exists (a disk that fills up and is freed again), and
 * events count from when it appeared; a number in that file is N instead of at= (so that one process can
 * fail one event, then the next, each time the file is made again); with
 * kill_after=J, the process is killed just before the Jth write or sync after the fault (a crash soon
 * after a failed commit, before or while focald writes over what it left in the WAL).
 * The checkpoint thread names no step: its events are neither counted nor
 * failed, since when it runs depends on time, not on the workload.
 *
 * FOCALD_FAULT_THREAD=N makes the Nth thread the process creates fail to start (pthread_create answers
 * EAGAIN, as under a task limit): focald's own threads, libuv's and libmicrohttpd's all start there. Each
 * creation is traced ("thread N"), so that a harness can count them and fail each in turn.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { K_READ, K_WRITE, K_SYNC, K_ALLOC, K_MALLOC, K_COUNT };
enum { A_NONE, A_FULL, A_IOERR, A_NOMEM, A_KILL_BEFORE, A_KILL_AFTER };

static const char *const kind_names[K_COUNT] = {"read", "write", "sync", "alloc", "malloc"};
/* as server/faultpoint.h numbers them; "locked" is never a thread's step (see focald_fault_point) */
static const char *const step_names[] = {"none",  "load",  "group",  "snapshot", "checkpoint", "close",
                                         "wake",  "score", "locked", "reply",    "answer",     "request",
                                         "respond"};
#define NSTEPS (int)(sizeof step_names / sizeof step_names[0])
#define STEP_LOAD 1
#define STEP_WAKE 6
#define STEP_SCORE 7
#define STEP_LOCKED 8 /* within the group step: names no step of its own */

static struct {
  int kind, action;
  long at, span;
  int in;            /* a step: only its events count for the fault; 0: every step's */
  long kill_after;   /* > 0: SIGKILL before the kill_after-th write or sync after the fault */
  int trace_fd;
  char hold[512];
  char hold_score[512];
  char hold_locked[512];
  char hold_load[512];
  char while_path[512];
} cfg = {-1, A_NONE, 0, 1, 0, 0, -1, "", "", "", "", ""};

static atomic_long counts[K_COUNT];
static atomic_long fault_count; /* events of the fault's kind (and step) */
static atomic_long countdown;   /* writes and syncs left before the kill that follows the fault; 0: none */
/* what the calling thread said it is doing; 0: not counted. Initial-exec: read by malloc, which must not
 * allocate to find it */
static _Thread_local int step __attribute__((tls_model("initial-exec")));

static sqlite3_vfs *real;      /* the VFS wrapped */
static sqlite3_mem_methods real_mem;

void focald_fault_point(int s);

static void trace_step(const char *name) {
  if (cfg.trace_fd < 0) return;
  char line[160];
  int len = snprintf(line, sizeof line, "step %s %ld %ld %ld %ld %ld\n", name, atomic_load(&counts[K_READ]),
                     atomic_load(&counts[K_WRITE]), atomic_load(&counts[K_SYNC]), atomic_load(&counts[K_ALLOC]),
                     atomic_load(&counts[K_MALLOC]));
  if (len > 0 && write(cfg.trace_fd, line, (size_t)len) < 0) {
    /* the trace is the harness's; focald goes on without it */
  }
}

static void hold_while(const char *path) {
  struct stat st;
  while (stat(path, &st) == 0) {
    struct timespec nap = {0, 1000000};
    nanosleep(&nap, NULL);
  }
}

void focald_fault_point(int s) {
  if (s == STEP_SCORE) {
    /* a pool thread: it makes no SQLite calls, so its step is neither counted nor traced */
    if (cfg.hold_score[0]) hold_while(cfg.hold_score);
    return;
  }
  if (s == STEP_LOCKED) {
    /* the writer, still in its group step: counted and traced as the group */
    if (cfg.hold_locked[0]) hold_while(cfg.hold_locked);
    return;
  }
  step = s > 0 && s < NSTEPS ? s : 0;
  if (step) trace_step(step_names[step]);
  if (s == STEP_WAKE && cfg.hold[0]) hold_while(cfg.hold);
  static int load_steps; /* named by the main thread only */
  if (s == STEP_LOAD && ++load_steps == 2 && cfg.hold_load[0]) hold_while(cfg.hold_load);
}

static void trace_fired(int kind, long n) {
  if (cfg.trace_fd < 0) return;
  char line[96];
  int len = snprintf(line, sizeof line, "fired %s %ld %s\n", kind_names[kind], n, step_names[step]);
  if (len > 0 && write(cfg.trace_fd, line, (size_t)len) < 0) {
    /* as above */
  }
}

static atomic_long armed_ino = -1, armed_ns = -1, armed_number; /* the while= file last seen, and its number */

/* The at= in force while the while= file st exists: its own number when it holds one (counted from when
 * that file appeared, so that a harness can fail one event after another in one process), else at=. */
static long armed_at(const struct stat *st) {
  const long ns = (long)st->st_mtim.tv_sec * 1000000000L + st->st_mtim.tv_nsec;
  if ((long)st->st_ino != atomic_load(&armed_ino) || ns != atomic_load(&armed_ns)) {
    char text[24] = "";
    const int fd = open(cfg.while_path, O_RDONLY | O_CLOEXEC);
    const ssize_t got = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
    if (fd >= 0) close(fd);
    atomic_store(&armed_number, got > 0 ? atol(text) : 0);
    atomic_store(&fault_count, 0);
    atomic_store(&armed_ino, (long)st->st_ino);
    atomic_store(&armed_ns, ns);
  }
  const long n = atomic_load(&armed_number);
  return n > 0 ? n : cfg.at;
}

/* Counts an event of kind by the calling thread; returns the action to take for it. */
static int event(int kind) {
  if (!step) return A_NONE;
  const long n = atomic_fetch_add(&counts[kind], 1) + 1;
  if ((kind == K_WRITE || kind == K_SYNC) && atomic_load(&countdown) > 0 && atomic_fetch_sub(&countdown, 1) == 1)
    raise(SIGKILL);
  if (kind != cfg.kind || (cfg.in && step != cfg.in)) return A_NONE;
  long at = cfg.at;
  if (cfg.while_path[0]) {
    struct stat st;
    if (stat(cfg.while_path, &st) != 0) return A_NONE;
    at = armed_at(&st);
  }
  const long m = atomic_fetch_add(&fault_count, 1) + 1;
  if (m < at || m >= at + cfg.span) return A_NONE;
  trace_fired(kind, n);
  if (cfg.kill_after > 0 && m == cfg.at) atomic_store(&countdown, cfg.kill_after);
  if (cfg.action == A_KILL_BEFORE) raise(SIGKILL);
  return cfg.action;
}

static void after(int action) {
  if (action == A_KILL_AFTER) raise(SIGKILL);
}

/* ------------------------------------------------------------------ the file wrapper */

typedef struct ffile {
  sqlite3_file base;
  sqlite3_file *real; /* follows this struct, szOsFile of the real VFS */
} ffile;

#define REAL(f) (((ffile *)(f))->real)

static int f_close(sqlite3_file *f) {
  return REAL(f)->pMethods->xClose(REAL(f));
}

static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
  int a = event(K_READ);
  if (a == A_IOERR) return SQLITE_IOERR_READ;
  int rc = REAL(f)->pMethods->xRead(REAL(f), p, n, off);
  after(a);
  return rc;
}

static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off) {
  int a = event(K_WRITE);
  if (a == A_FULL) return SQLITE_FULL;
  if (a == A_IOERR) return SQLITE_IOERR_WRITE;
  int rc = REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
  after(a);
  return rc;
}

static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  int a = event(K_WRITE);
  if (a == A_FULL) return SQLITE_FULL;
  if (a == A_IOERR) return SQLITE_IOERR_TRUNCATE;
  int rc = REAL(f)->pMethods->xTruncate(REAL(f), size);
  after(a);
  return rc;
}

static int f_sync(sqlite3_file *f, int flags) {
  int a = event(K_SYNC);
  if (a == A_IOERR || a == A_FULL) return SQLITE_IOERR_FSYNC;
  int rc = REAL(f)->pMethods->xSync(REAL(f), flags);
  after(a);
  return rc;
}

static int f_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int f_lock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int f_unlock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_check_lock(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_control(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f) {
  return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int f_caps(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) {
  REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int f_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
  return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods io = {3,           f_close,      f_read,      f_write,     f_truncate,    f_sync,
                                      f_size,      f_lock,       f_unlock,    f_check_lock, f_control,    f_sector,
                                      f_caps,      f_shm_map,    f_shm_lock,  f_shm_barrier, f_shm_unmap, f_fetch,
                                      f_unfetch};

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  (void)vfs;
  ffile *ff = (ffile *)f;
  ff->real = (sqlite3_file *)(ff + 1);
  int rc = real->xOpen(real, name, ff->real, flags, out_flags);
  ff->base.pMethods = rc == SQLITE_OK && ff->real->pMethods ? &io : NULL;
  return rc;
}

static int v_delete(sqlite3_vfs *v, const char *name, int sync) {
  (void)v;
  return real->xDelete(real, name, sync);
}
static int v_access(sqlite3_vfs *v, const char *name, int flags, int *out) {
  (void)v;
  return real->xAccess(real, name, flags, out);
}
static int v_full(sqlite3_vfs *v, const char *name, int n, char *out) {
  (void)v;
  return real->xFullPathname(real, name, n, out);
}
static void *v_dlopen(sqlite3_vfs *v, const char *name) {
  (void)v;
  return real->xDlOpen(real, name);
}
static void v_dlerror(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  real->xDlError(real, n, out);
}
static void (*v_dlsym(sqlite3_vfs *v, void *h, const char *sym))(void) {
  (void)v;
  return real->xDlSym(real, h, sym);
}
static void v_dlclose(sqlite3_vfs *v, void *h) {
  (void)v;
  real->xDlClose(real, h);
}
static int v_random(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real->xRandomness(real, n, out);
}
static int v_sleep(sqlite3_vfs *v, int us) {
  (void)v;
  return real->xSleep(real, us);
}
static int v_time(sqlite3_vfs *v, double *out) {
  (void)v;
  return real->xCurrentTime(real, out);
}
static int v_error(sqlite3_vfs *v, int n, char *out) {
  (void)v;
  return real->xGetLastError ? real->xGetLastError(real, n, out) : 0;
}
static int v_time64(sqlite3_vfs *v, sqlite3_int64 *out) {
  (void)v;
  return real->xCurrentTimeInt64(real, out);
}

static sqlite3_vfs vfs = {2, 0, 1024, NULL, "faultvfs", NULL, v_open, v_delete, v_access, v_full, v_dlopen, v_dlerror,
                          v_dlsym, v_dlclose, v_random, v_sleep, v_time, v_error, v_time64, NULL, NULL, NULL};

/* ------------------------------------------------------------------ the allocator */

static void *m_malloc(int n) {
  if (event(K_ALLOC) == A_NOMEM) return NULL;
  return real_mem.xMalloc(n);
}
static void m_free(void *p) {
  real_mem.xFree(p);
}
static void *m_realloc(void *p, int n) {
  if (event(K_ALLOC) == A_NOMEM) return NULL;
  return real_mem.xRealloc(p, n);
}
static int m_size(void *p) {
  return real_mem.xSize(p);
}
static int m_roundup(int n) {
  return real_mem.xRoundup(n);
}
static int m_init(void *p) {
  return real_mem.xInit(p);
}
static void m_shutdown(void *p) {
  real_mem.xShutdown(p);
}

/* ------------------------------------------------------------------ the C library's allocator */

/* malloc and its kin are interposed for the whole process: each call by a thread in a step is an event of
 * kind malloc (SQLite's own allocations among them, which are also of kind alloc). The functions they wrap
 * are the next definitions (the C library's, or a sanitizer's): looking them up may itself allocate, and
 * that is served from a static arena that free then ignores. */
static void *(*next_malloc)(size_t);
static void *(*next_calloc)(size_t, size_t);
static void *(*next_realloc)(void *, size_t);
static void (*next_free)(void *);
static int (*next_posix_memalign)(void **, size_t, size_t);
static void *(*next_aligned_alloc)(size_t, size_t);
static void *(*next_memalign)(size_t, size_t);

static _Alignas(64) unsigned char arena[16384];
static size_t arena_used;
static int resolving;

static void *arena_take(size_t n) {
  n = (n + 63) & ~(size_t)63;
  if (n > sizeof arena - arena_used) return NULL;
  void *p = arena + arena_used;
  arena_used += n;
  return p;
}

static int in_arena(const void *p) {
  return (const unsigned char *)p >= arena && (const unsigned char *)p < arena + sizeof arena;
}

/* Finds the wrapped functions, once, on the first allocation (the process is one thread then). */
static int resolve(void) {
  if (next_free) return 0;
  if (resolving) return -1;
  resolving = 1;
  next_malloc = (void *(*)(size_t))dlsym(RTLD_NEXT, "malloc");
  next_calloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "calloc");
  next_realloc = (void *(*)(void *, size_t))dlsym(RTLD_NEXT, "realloc");
  next_posix_memalign = (int (*)(void **, size_t, size_t))dlsym(RTLD_NEXT, "posix_memalign");
  next_aligned_alloc = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "aligned_alloc");
  next_memalign = (void *(*)(size_t, size_t))dlsym(RTLD_NEXT, "memalign");
  next_free = (void (*)(void *))dlsym(RTLD_NEXT, "free");
  resolving = 0;
  return next_free ? 0 : -1;
}

/* An allocation's event: 1 when it is to fail. */
static int malloc_fails(void) {
  if (event(K_MALLOC) != A_NOMEM) return 0;
  errno = ENOMEM;
  return 1;
}

void *malloc(size_t n) {
  if (resolve() != 0) return arena_take(n);
  return malloc_fails() ? NULL : next_malloc(n);
}

void *calloc(size_t k, size_t n) {
  if (resolve() != 0) return n && k > SIZE_MAX / n ? NULL : arena_take(k * n); /* the arena is zeroed */
  return malloc_fails() ? NULL : next_calloc(k, n);
}

void *realloc(void *p, size_t n) {
  if (resolve() != 0) return NULL;
  if (in_arena(p)) {
    void *q = malloc(n);
    const size_t room = (size_t)(arena + sizeof arena - (unsigned char *)p);
    if (q) memcpy(q, p, n < room ? n : room);
    return q;
  }
  return malloc_fails() ? NULL : next_realloc(p, n);
}

void free(void *p) {
  if (!p || in_arena(p) || resolve() != 0) return;
  next_free(p);
}

int posix_memalign(void **out, size_t align, size_t n) {
  if (resolve() != 0) return ENOMEM;
  return malloc_fails() ? ENOMEM : next_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n) {
  if (resolve() != 0) return NULL;
  return malloc_fails() ? NULL : next_aligned_alloc(align, n);
}

void *memalign(size_t align, size_t n); /* declared by malloc.h, not stdlib.h */
void *memalign(size_t align, size_t n) {
  if (resolve() != 0) return NULL;
  return malloc_fails() ? NULL : next_memalign(align, n);
}

/* ------------------------------------------------------------------ set-up */

static void parse_spec(const char *spec) {
  char copy[256];
  snprintf(copy, sizeof copy, "%s", spec);
  for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
    char *eq = strchr(tok, '=');
    if (!eq) continue;
    *eq = '\0';
    const char *k = tok, *v = eq + 1;
    if (!strcmp(k, "kind")) {
      for (int i = 0; i < K_COUNT; i++)
        if (!strcmp(v, kind_names[i])) cfg.kind = i;
    } else if (!strcmp(k, "at")) {
      cfg.at = atol(v);
    } else if (!strcmp(k, "span")) {
      cfg.span = atol(v);
    } else if (!strcmp(k, "kill_after")) {
      cfg.kill_after = atol(v);
    } else if (!strcmp(k, "in")) {
      for (int i = 1; i < NSTEPS; i++)
        if (!strcmp(v, step_names[i])) cfg.in = i;
    } else if (!strcmp(k, "while")) {
      snprintf(cfg.while_path, sizeof cfg.while_path, "%s", v);
    } else if (!strcmp(k, "do")) {
      cfg.action = !strcmp(v, "full")          ? A_FULL
                   : !strcmp(v, "ioerr")       ? A_IOERR
                   : !strcmp(v, "nomem")       ? A_NOMEM
                   : !strcmp(v, "kill-before") ? A_KILL_BEFORE
                   : !strcmp(v, "kill-after")  ? A_KILL_AFTER
                                               : A_NONE;
    }
  }
  if (cfg.span < 1) cfg.span = 1;
}

static long fail_thread;    /* FOCALD_FAULT_THREAD: the creation to fail; 0: none */
static atomic_long threads; /* creations so far */

typedef int (*pthread_create_fn)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);

/* Interposes the C library's pthread_create: counts, traces and fails the one FOCALD_FAULT_THREAD names. */
int pthread_create(pthread_t *t, const pthread_attr_t *attr, void *(*fn)(void *), void *arg) {
  static pthread_create_fn next;
  if (!next) next = (pthread_create_fn)dlsym(RTLD_NEXT, "pthread_create");
  const long n = atomic_fetch_add(&threads, 1) + 1;
  if (cfg.trace_fd >= 0) {
    char line[64];
    const int len = snprintf(line, sizeof line, "%s %ld\n", n == fail_thread ? "fired thread" : "thread", n);
    if (len > 0 && write(cfg.trace_fd, line, (size_t)len) < 0) {
      /* as above */
    }
  }
  if (n == fail_thread || !next) return EAGAIN;
  return next(t, attr, fn, arg);
}

/* The counts at a normal exit: the end of the last step. */
__attribute__((destructor)) static void faultvfs_end(void) {
  trace_step("end");
}

__attribute__((constructor)) static void faultvfs_init(void) {
  const char *spec = getenv("FOCALD_FAULT"), *tr = getenv("FOCALD_FAULT_TRACE"), *hold = getenv("FOCALD_FAULT_HOLD"),
             *hold_score = getenv("FOCALD_FAULT_HOLD_SCORE"), *hold_locked = getenv("FOCALD_FAULT_HOLD_LOCKED"),
             *hold_load = getenv("FOCALD_FAULT_HOLD_LOAD");
  if (spec) parse_spec(spec);
  const char *ft = getenv("FOCALD_FAULT_THREAD");
  if (ft) fail_thread = atol(ft);
  if (tr && *tr) cfg.trace_fd = open(tr, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (hold) snprintf(cfg.hold, sizeof cfg.hold, "%s", hold);
  if (hold_score) snprintf(cfg.hold_score, sizeof cfg.hold_score, "%s", hold_score);
  if (hold_locked) snprintf(cfg.hold_locked, sizeof cfg.hold_locked, "%s", hold_locked);
  if (hold_load) snprintf(cfg.hold_load, sizeof cfg.hold_load, "%s", hold_load);
  /* the allocator first: sqlite3_config works only before SQLite initializes */
  if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &real_mem) == SQLITE_OK) {
    sqlite3_mem_methods m = {m_malloc, m_free, m_realloc, m_size, m_roundup, m_init, m_shutdown, NULL};
    sqlite3_config(SQLITE_CONFIG_MALLOC, &m);
  }
  real = sqlite3_vfs_find(NULL);
  if (!real) return;
  vfs.szOsFile = (int)sizeof(ffile) + real->szOsFile;
  vfs.mxPathname = real->mxPathname;
  sqlite3_vfs_register(&vfs, 1);
}
