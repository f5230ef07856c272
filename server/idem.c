/* idem.c — the Idempotency-Key header's syntax and the fingerprint of the request a key stands for. */
#include "idem.h"
#include "jtext.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A character a key may hold: printable ASCII but the quote and the backslash (the draft's sf-string
 * allows them escaped; focald takes no escapes, so that a key has one spelling). */
static int key_char(unsigned char c, int quoted) {
  return c >= (quoted ? 0x20 : 0x21) && c <= 0x7e && c != '"' && c != '\\';
}

int idem_key_parse(const char *header, char key[IDEM_KEY_MAX + 1], problem *err) {
  key[0] = '\0';
  if (!header) return 0;
  size_t n = strlen(header);
  const char *s = header;
  const int quoted = n >= 1 && s[0] == '"';
  if (quoted) {
    if (n < 2 || s[n - 1] != '"')
      return problem_set(err, P_BAD_IDEMPOTENCY_KEY, IDEM_HEADER, IDEM_HEADER " opens a quoted string it does not close");
    s++;
    n -= 2;
  }
  if (n == 0) return problem_set(err, P_BAD_IDEMPOTENCY_KEY, IDEM_HEADER, IDEM_HEADER " is empty");
  if (n > IDEM_KEY_MAX)
    return problem_set(err, P_BAD_IDEMPOTENCY_KEY, IDEM_HEADER, IDEM_HEADER " is %zu characters long; at most %d are taken",
                       n, IDEM_KEY_MAX);
  for (size_t i = 0; i < n; i++)
    if (!key_char((unsigned char)s[i], quoted))
      return problem_set(err, P_BAD_IDEMPOTENCY_KEY, IDEM_HEADER,
                         IDEM_HEADER " has a character it may not (byte %zu, 0x%02x): printable ASCII but \" and \\, "
                         "spaces only inside quotes", i + 1 + (size_t)quoted, (unsigned char)s[i]);
  memcpy(key, s, n);
  key[n] = '\0';
  return 0;
}

/* "<head>\n<body>" in a malloc'd string, or NULL. */
static char *join(const char *head, const char *body) {
  char *out = NULL;
  if (body && asprintf(&out, "%s\n%s", head, body) < 0) out = NULL;
  return out;
}

/* A review decision's body, canonical: the fields it has, keys sorted, compact. */
static char *review_canonical(const review_op *r) {
  json_t *o = json_pack("{s:s}", "status", st_status_name(r->to));
  int bad = !o;
  if (!bad && r->label) {
    json_t *label = jtext_loads(r->label, JSON_DECODE_ANY, NULL, NULL);
    bad = !label || json_object_set_new(o, "label", label) != 0;
  }
  if (!bad && r->reviewer) bad = json_object_set_new(o, "reviewer", json_string(r->reviewer)) != 0;
  if (!bad && r->note) bad = json_object_set_new(o, "note", json_string(r->note)) != 0;
  char *text = bad ? NULL : jtext_dump(o, JSON_COMPACT | JSON_SORT_KEYS);
  json_decref(o);
  return text;
}

char *idem_fingerprint(const wop *op) {
  char *head = NULL, *body = NULL, *out = NULL;
  switch (op->kind) {
  case WOP_REVIEW: {
    const review_op *r = (const review_op *)op;
    body = review_canonical(r);
    if (asprintf(&head, "POST review %s", r->id) < 0) head = NULL;
    break;
  }
  case WOP_META: {
    const meta_op *m = (const meta_op *)op;
    body = m->meta ? strdup(m->meta) : NULL; /* meta_decode made it canonical */
    if (asprintf(&head, "PUT meta %s", m->id) < 0) head = NULL;
    break;
  }
  case WOP_QUEUE: {
    const queue_op *q = (const queue_op *)op;
    body = q->p.params_json ? strdup(q->p.params_json) : NULL; /* queue_decode made it canonical */
    head = strdup("POST queues");
    break;
  }
  case WOP_QUEUE_DELETE: {
    const queue_op *q = (const queue_op *)op;
    body = strdup("");
    if (asprintf(&head, "DELETE queue %s", q->p.name) < 0) head = NULL;
    break;
  }
  default: break;
  }
  if (head && body) out = join(head, body);
  free(head);
  free(body);
  return out;
}
