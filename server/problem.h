/* problem.h — focald's error codes: one table gives each its HTTP status and title.
 *
 * Handlers fail with a code, a detail sentence and, when there is one, the JSON
 * pointer of the culprit; http.c turns that into an application/problem+json
 * response (RFC 9457). No handler writes a status or a title of its own.
 */
#ifndef FOCALD_PROBLEM_H
#define FOCALD_PROBLEM_H

#include <stddef.h>

/* code, HTTP status, title */
#define PROBLEM_TABLE(X)                                                              \
  X(P_BAD_JSON, 400, "bad_json", "The body is not valid JSON")                        \
  X(P_BAD_QUERY, 400, "bad_query", "A query parameter is not valid")                  \
  X(P_BAD_REQUEST, 400, "bad_request", "The request is malformed")                    \
  X(P_BAD_IDEMPOTENCY_KEY, 400, "bad_idempotency_key", "The Idempotency-Key header is not valid") \
  X(P_BAD_FRAMING, 400, "bad_framing", "The binary body's framing does not add up")   \
  X(P_UNAUTHORIZED, 401, "unauthorized", "A valid bearer token is required")          \
  X(P_NOT_FOUND, 404, "not_found", "No such resource")                                \
  X(P_DATASET_NOT_FOUND, 404, "dataset_not_found", "No such dataset")                 \
  X(P_SAMPLE_NOT_FOUND, 404, "sample_not_found", "No such sample")                    \
  X(P_RUN_NOT_FOUND, 404, "run_not_found", "No such run")                             \
  X(P_METHOD_NOT_ALLOWED, 405, "method_not_allowed", "Method not allowed")            \
  X(P_CLASS_COUNT_CONFLICT, 409, "class_count_conflict", "The class count conflicts with the run's") \
  X(P_CONFLICT, 409, "conflict", "The change conflicts with the current state")       \
  X(P_LENGTH_REQUIRED, 411, "length_required", "Content-Length is required")          \
  X(P_BODY_TOO_LARGE, 413, "body_too_large", "The body is too large")                 \
  X(P_UNSUPPORTED_MEDIA_TYPE, 415, "unsupported_media_type", "Unsupported Content-Type") \
  X(P_INVALID_FIELD, 422, "invalid_field", "A field has the wrong type or value")     \
  X(P_MISSING_FIELD, 422, "missing_field", "A required field is missing")             \
  X(P_UNKNOWN_FIELD, 422, "unknown_field", "The body has a field focald does not know") \
  X(P_BAD_NAME, 422, "bad_name", "A name or id is not valid")                          \
  X(P_SHAPE_MISMATCH, 422, "shape_mismatch", "Tensor shapes do not agree")            \
  X(P_NOT_FINITE, 422, "not_finite", "A number is not finite")                        \
  X(P_OUT_OF_RANGE, 422, "out_of_range", "A number is out of range")                  \
  X(P_LABEL_OUT_OF_RANGE, 422, "label_out_of_range", "A class label is out of range") \
  X(P_TOO_LARGE, 422, "too_large", "A field is larger than focald takes")            \
  X(P_DUPLICATE_ID, 422, "duplicate_id", "A sample id appears twice in the batch")    \
  X(P_BATCH_ID_REUSED, 422, "batch_id_reused", "The batch_id was stored before with other samples") \
  X(P_IDEMPOTENCY_KEY_REUSED, 422, "idempotency_key_reused", "The Idempotency-Key was used for another request") \
  X(P_INVALID_LOSS, 422, "invalid_loss", "The loss configuration is not valid")       \
  X(P_OVERLOADED, 503, "overloaded", "focald is overloaded; retry later")             \
  X(P_DRAINING, 503, "draining", "focald is shutting down")                           \
  X(P_STARTING, 503, "starting", "focald is starting")                                \
  X(P_STORE_UNAVAILABLE, 503, "store_unavailable", "The cluster's shared log cannot be reached; retry later") \
  X(P_NOT_CAUGHT_UP, 503, "not_caught_up", "This node has not applied the log position asked for yet") \
  X(P_STORAGE_FULL, 507, "storage_full", "The database cannot grow")                  \
  X(P_INTERNAL, 500, "internal", "Internal error")

typedef enum problem_code {
  P_NONE = 0,
#define PROBLEM_ENUM(name, status, code, title) name,
  PROBLEM_TABLE(PROBLEM_ENUM)
#undef PROBLEM_ENUM
      P_COUNT
} problem_code;

/* The longest field a problem names: a key of the client's as long as the
 * longest id (REQ_ID_MAX, 256 bytes), every byte of it escaped, under a short
 * path ("/meta/..."); a longer key (an unknown field's) is cut at a character. */
#define PROBLEM_FIELD_MAX 600

/* A failure on its way to becoming a response: owned by whoever holds it. */
typedef struct problem {
  problem_code code;
  char field[PROBLEM_FIELD_MAX]; /* JSON pointer, or "" */
  char detail[400]; /* one sentence naming the culprit */
} problem;

/* Returns the HTTP status for code. */
int problem_status(problem_code code);
/* Returns the stable machine-readable name ("shape_mismatch"). */
const char *problem_name(problem_code code);
/* Returns the title sentence. */
const char *problem_title(problem_code code);

/* Fills *p. field may be NULL; detail is printf-formatted. Returns -1 so that
 * callers can write `return problem_set(...)`. */
int problem_set(problem *p, problem_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Appends "/" and token to the JSON pointer in ptr (a string in n bytes), with "~" written "~0" and "/"
 * written "~1" as RFC 6901 requires: a key of the client's ("train/cat/1.png") then names itself, not a
 * path below it. Stops short rather than write half an escape or half a UTF-8 character when n runs
 * out. Returns ptr. */
char *problem_pointer_add(char *ptr, size_t n, const char *token);

#endif /* FOCALD_PROBLEM_H */
