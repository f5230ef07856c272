/* idem.h — the Idempotency-Key of the review loop's writes: the header's syntax, and the request a key
 * stands for.
 *
 * A client that cannot tell whether its write was committed (the connection dropped before the answer)
 * sends it again with the same key. The writer (store_idem.c) keeps, with each change made under a key,
 * the request's fingerprint and the answer, in the change's own transaction; a repeat of the same
 * request gets that answer again and changes nothing, another request under the same key is refused
 * (422 idempotency_key_reused). See README "Retrying the review loop's writes".
 */
#ifndef FOCALD_IDEM_H
#define FOCALD_IDEM_H

#include "job.h"
#include "problem.h"

/* the header, and the one that marks an answer given again */
#define IDEM_HEADER "Idempotency-Key"
#define IDEM_REPLAYED_HEADER "Idempotent-Replayed"

/* Reads an Idempotency-Key header's value (NULL: no header) into key: the draft's form, a quoted
 * string ("..."), or the same text bare, 1 to IDEM_KEY_MAX characters from printable ASCII without
 * '"' and '\' (space only inside quotes). Both forms of one text are the same key. *key is "" when
 * there is no header. Returns 0, or -1 with *err set (400 bad_idempotency_key). */
int idem_key_parse(const char *header, char key[IDEM_KEY_MAX + 1] /* OUT */, problem *err);

/* The fingerprint of the request op stands for: its method, its target (the sample or the queue) and its
 * body as decoded, in canonical form (so a retry whose JSON has its keys in another order or other
 * spacing is the same request, and every node of a cluster computes the same text from the logged
 * op). A malloc'd string, or NULL when memory ran out or op is not one of the review loop's writes. */
char *idem_fingerprint(const wop *op);

#endif /* FOCALD_IDEM_H */
