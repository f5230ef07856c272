/* log.h — structured logs: one JSON object per line on stderr. */
#ifndef FOCALD_LOG_H
#define FOCALD_LOG_H

#include <stddef.h>

enum { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Sets the lowest level written. Call before threads start. */
void log_set_level(int level);
/* Returns the level for "debug", "info", "warn" or "error", or -1. */
int log_level_parse(const char *name);
/* Returns the name of a level. */
const char *log_level_name(int level);
/* Whether a message at level would be written. */
int log_enabled(int level);

/* Writes {"ts", "level", "msg"} and then the string pairs given as key, value,
 * ..., NULL (values JSON-escaped). Thread-safe: each line is one write(2). */
void log_kv(int level, const char *msg, ...) __attribute__((sentinel));

/* printf-style message with no extra fields. */
void log_msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One line per HTTP request: request id, method, route, status, duration and body size.
 * Never the body, never a token. At warn for a 5xx; health probes answered 200 (every
 * few seconds from the orchestrator) at debug; the rest at info. */
void log_request(const char *request_id, const char *method, const char *route, int status, double duration_ms,
                 size_t body_bytes);

#endif /* FOCALD_LOG_H */
