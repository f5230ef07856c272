/* idhash.h — the one hash of sample ids and other client-chosen strings.
 *
 * Hash tables keyed by what a client sends (sample ids in the dataset's index
 * and in a request, meta values when a queue de-duplicates) must not let a
 * client choose colliding keys and turn every lookup into a scan (hash
 * flooding). idhash is XXH3 (Debian's libxxhash, compiled in from its header)
 * keyed with a secret of random bytes drawn once per process: the same string
 * hashes alike within a process and differently in the next one, and a client
 * that does not know the secret cannot aim at one bucket. Nothing is stored by
 * hash, so a new secret at each start changes no result.
 */
#ifndef FOCALD_IDHASH_H
#define FOCALD_IDHASH_H

#include <stddef.h>
#include <stdint.h>

/* The hash of the NUL-terminated string s (thread-safe; the secret is drawn on first use). */
uint64_t idhash(const char *s);

/* The hash of n bytes at s. */
uint64_t idhash_n(const void *s, size_t n);

#endif /* FOCALD_IDHASH_H */
