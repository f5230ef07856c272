/* decode.h — a scoring request, decoded and checked, ready for the loss library.
 *
 * Both wire formats (JSON here, the binary tensor framing in binary.c) produce
 * a req. Decoding validates everything the library does not: types, shapes,
 * integer labels, names and ids, duplicates, the loss configuration. What the
 * library checks as it computes (finite numbers, probability and label ranges)
 * comes back as an fl_eval error and is described by req_describe_error().
 */
#ifndef FOCALD_DECODE_H
#define FOCALD_DECODE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "focal.h"
#include "problem.h"
#include "state.h"

#define REQ_ID_MAX 256
#define REQ_BATCH_ID_MAX 128
#define REQ_META_MAX 65536 /* bytes of one sample's meta, as compact JSON */
#define REQ_SEGMENTS_MAX 65536

#define REQ_EVERY_CLASS ((size_t)-1)

/* n consecutive samples of a request observed at one step and epoch (see README "Many steps in one request"). */
typedef struct req_seg {
  int64_t n;
  int has_step, has_epoch;
  int64_t step, epoch;
} req_seg;

typedef struct req {
  char run[ST_NAME_MAX + 1];
  char batch_id[REQ_BATCH_ID_MAX + 1];
  int has_batch_id;
  int has_epoch, has_step;
  int64_t epoch, step;
  int64_t ohem_k;                 /* 0: none */
  fl_params params;
  float *alpha_c;                 /* owned, or NULL */
  size_t nalpha;                  /* alpha_c's entries */
  float *pos_weight;              /* (c) owned, or NULL; params.pos_weight points here once c is known */
  size_t npos_weight;             /* entries given as an array; REQ_EVERY_CLASS for one number meaning every class */
  float pos_weight_all;           /* that number */
  const char *x_name;             /* "logits" or "probs" */
  int64_t n, m, c;
  int dense;                      /* the input was N x M x C */
  float *x;                       /* (n, m, c) */
  const void *labels;             /* (n, m) class indices of label_type, or NULL */
  fl_label_type label_type;
  float *targets;                 /* (n, m, c), or NULL */
  float *weights;                 /* per element or per position, or NULL */
  char **ids;                     /* n canonical ids (integers as decimal strings) */
  int nmeta;
  int32_t *meta_index;            /* which sample each meta belongs to */
  char **meta_json;               /* compact JSON object text; by meta_index when there are segments */
  uint32_t *id_slot;              /* decoding only: the ids by hash (index + 1 of each id's last place), id_cap of them */
  uint32_t id_cap;
  int nseg;                       /* 0: the request is one segment, of the top-level step and epoch */
  req_seg *seg;                   /* (nseg) in order, covering the n samples; owned */
  void *own[8];                   /* what the request owns: tensors may point into the body it holds */
  int nown;
  int binary_response;            /* answer in the binary framing */
  int binary;                     /* the request came in the binary framing: tensors are inputs[] */
  int input_index[4];             /* binary: inputs[] index of ids, x, targets, weights */
  uint32_t outputs;               /* which outputs were asked for (bits of req_output_names) */
  int want_scores;                /* compute the difficulty scores (a binary request may ask for losses only) */
} req;

/* The segments of r: req_nseg(r) of them, in order (a request without segments is one). */
static inline int req_nseg(const req *r) {
  return r->nseg ? r->nseg : 1;
}
static inline req_seg req_segment(const req *r, int k) {
  if (r->nseg) return r->seg[k];
  req_seg one = {r->n, r->has_step, r->has_epoch, r->step, r->epoch};
  return one;
}

/* The outputs a request's `outputs` may name, in the order a binary response
 * carries them. Without `outputs` a response has losses and the scores
 * (REQ_OUT_DEFAULT); grad and grad_norm come only when named. */
enum {
  REQ_OUT_LOSSES = 0,
  REQ_OUT_PRED = 9,
  REQ_OUT_GRAD = 10,      /* d loss[i] / d x, the input's shape */
  REQ_OUT_GRAD_NORM = 11, /* (n) L2 norm of each sample's gradient */
  REQ_OUTPUTS = 12
};
#define REQ_OUT_DEFAULT ((1u << REQ_OUT_GRAD) - 1u)
#define REQ_OUT_GRADS ((1u << REQ_OUT_GRAD) | (1u << REQ_OUT_GRAD_NORM))
extern const char *const req_output_names[REQ_OUTPUTS];

/* Reads a request's `outputs` (NULL or JSON null: the default): an array
 * whose entries are a name or an object {name, parameters}. Sets r->outputs;
 * *binary_data (may be NULL) is set to 1 when an entry's parameters ask for
 * "binary_data": true. want_store: the request is recorded, and gradients
 * are refused (they are for POST /v1/loss). Returns 0, or -1 with *err set. */
int dec_outputs(const json_t *outputs, req *r, int want_store, int *binary_data /* OUT */, problem *err /* OUT */);

/* Returns label i of r as int64. */
int64_t req_label_at(const req *r, int64_t i);

/* Allocates n bytes owned by r (freed by req_free). Returns NULL on failure. */
void *req_alloc(req *r, size_t n);

/* Makes r own p (freed by req_free). Returns 0, or -1 when r owns too much. */
int req_own(req *r, void *p);

/* Decodes a JSON body. want_store: the request stores (batches) rather than
 * only scoring (/v1/loss): meta and run are then checked too. Returns 0, or -1
 * with *err filled. On failure *r needs no req_free. */
int dec_json(req *r /* OUT */, const char *body, size_t len, int want_store, problem *err /* OUT */);

/* Checks the meta keys focald reads (uri and the DICOM UIDs are strings, tags a list or an object) in
 * the object m; ptr is the JSON pointer of m for the error's field. Returns 0, or -1 with *err set. */
int dec_meta_check(const json_t *m, const char *ptr, problem *err /* OUT */);

/* 0, or -1 with *err an unknown_field problem naming the first key of the
 * object obj that is not in the NULL-terminated list fields. at: obj's JSON
 * pointer ("" for the body itself), which the problem's field starts with. */
int dec_only_fields(const json_t *obj, const char *const *fields, const char *at, problem *err);
/* For the decoders: the fields every request has (in JSON, or a binary body's
 * JSON header): unknown fields (not in the NULL-terminated `fields`), run,
 * batch_id, epoch, step, loss. */
int dec_header(const json_t *root, req *r, int want_store, const char *const *fields, problem *err);
/* For the decoders, once the tensors are read: the loss settings against the
 * class count, ohem_k and meta. */
int dec_tail(const json_t *root, req *r, int want_store, problem *err);
/* Checks that the segments cover the n ids and rejects an id repeated within one segment; keeps the table
 * of ids it built (r->id_slot) for the meta, which dec_tail frees. */
int dec_check_unique(req *r, problem *err);

/* Frees what a decoder allocated. Accepts a zeroed req. */
void req_free(req *r);

/* Fills *err for an fl_eval error rc at flat index where, naming the element
 * in the request's own terms ("logits[3][7] is not finite"). */
void req_describe_error(const req *r, int rc, int64_t where, problem *err);
/* The same with the JSON body's pointers (req_describe_error uses it, then points
 * into inputs[] for a binary request). */
void req_describe_error_json(const req *r, int rc, int64_t where, problem *err);

/* Whether name is a valid new dataset, run or queue name: [A-Za-z0-9._-]{1,64}
 * other than "." and ".." (HTTP clients remove those from paths as dot segments,
 * RFC 3986 section 5.2.4, so such a dataset could not be reached). */
int name_ok(const char *name);
/* Whether name may name something that exists: name_ok's rule, plus "." and
 * "..", which earlier versions accepted; their datasets and runs can still be
 * read, exported and deleted, but take no new batches. */
int name_lookup_ok(const char *name);

/* Checks the loss parameters for c classes and fills *err (field /loss/...). */
int dec_check_loss(const fl_params *p, int64_t c, problem *err);

#endif /* FOCALD_DECODE_H */
