/* export_internal.h — what the export's two files share: the export being streamed, and its formats.
 *
 * export.c owns an export: it creates it in the handler, pages through the
 * ranking or the queue, and frees it. export_fmt.c writes each sample of a
 * page in the export's format: it appends to page, counts rank and skipped,
 * and reads the options the handler set (viewer, reconsider, root, q.by, run).
 */
#ifndef FOCALD_EXPORT_INTERNAL_H
#define FOCALD_EXPORT_INTERNAL_H

#include <stdint.h>

#include "api_internal.h"

/* Samples in a page: one top-k query (or one stretch of a queue) under the dataset's read lock. */
#define EXPORT_PAGE 4096
/* A page's bytes: its samples are written in parts of about this size, the memory an export holds.
 * (4096 samples of 64 KiB of meta each would otherwise be a page of 256 MiB, and more once escaped.) */
#define EXPORT_PAGE_BYTES (1u << 20)

typedef struct export {
  int format;                /* a format's index (export__fmt_find) */
  char dataset[ST_NAME_MAX + 1];
  int64_t ds_id;             /* the dataset the export started on */
  char run[ST_NAME_MAX + 1]; /* "*" for the mean over runs */
  char queue[ST_NAME_MAX + 1]; /* "" unless exporting a queue */
  int64_t queue_id;          /* the queue the export started on: a name may be removed and built again */
  st_query q;                /* the ranking (by, order, filters); run is resolved per page */
  uint64_t *written;         /* a bit per sample key: the samples already written (or left out by the format) */
  uint32_t written_cap;      /* keys the bitmap covers */
  uint32_t position;         /* queue: next position */
  int64_t rank;
  int64_t limit;             /* k: at most this many samples, 0 for all */
  int started, ended, failed;
  jw page;                   /* formatted, not yet sent */
  st_hit hits[EXPORT_PAGE];  /* the last query's ranking */
  int nhits, next_hit;       /* its hits, and the first not written yet */
  int last_query;            /* it found fewer than it asked for: no samples are left after its hits */
  size_t sent;
  int64_t skipped;           /* samples the format had to leave out */
  char viewer[256];
  double reconsider;
  int has_root;              /* label-studio: local paths become local-files URLs under root */
  char root[REQ_ID_MAX + 1]; /* local_files_root without its trailing '/' ("" for "/") */
} export;

/* The meta fields exports use (export_fmt.c reads them from the sample's meta). */
typedef struct meta_fields meta_fields;

/* Each format: how it is served, what comes before and after the samples, how one sample is written.
 * The suggested file name is <dataset>[-<queue>]<suffix>.<ext>. */
typedef struct export_format {
  const char *name, *content_type, *suffix, *ext;
  const char *head;                 /* before the first sample */
  const char *tail, *tail_if_empty; /* after the last */
  void (*write)(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v, const meta_fields *m);
} export_format;

/* The index of the format named name (csv, jsonl, label-studio, fiftyone, ohif), or -1. */
int export__fmt_find(const char *name);
/* Format f (an index from export__fmt_find); borrowed from a static table. */
const export_format *export__fmt_get(int f);
/* Writes sample key, with its score and history, to e->page in e's format (or leaves it out and counts
 * it in e->skipped); e->rank counts the samples written. Sets e->page.failed when memory ran out. Under
 * ds's read lock. */
void export__fmt_item(export *e, const st_dataset *ds, uint32_t key, double score, const hist_view *v);

#endif /* FOCALD_EXPORT_INTERNAL_H */
