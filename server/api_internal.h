/* api_internal.h — what the handler files share: api_common.h, and the handlers of each file, which
 * api.c's route table names. */
#ifndef FOCALD_API_INTERNAL_H
#define FOCALD_API_INTERNAL_H

#include "api_common.h"
#include "http.h"
#include "jsonw.h"
#include "state.h"

/* A page of a dataset's ranking (api_hard.c). */
int api_hard_examples(http_req *rq, http_resp *resp);
/* The review loop's handlers (api_review.c). */
int api_review(http_req *rq, http_resp *resp);
int api_reviews(http_req *rq, http_resp *resp);
int api_meta(http_req *rq, http_resp *resp);
int api_relabels(http_req *rq, http_resp *resp);
int api_queue_create(http_req *rq, http_resp *resp);
int api_queue_list(http_req *rq, http_resp *resp);
int api_queue_get(http_req *rq, http_resp *resp);
int api_queue_delete(http_req *rq, http_resp *resp);
/* Exports (export.c). */
int api_export(http_req *rq, http_resp *resp);
/* Appends sample key's OHIF viewer link (the exports' viewer_url) as a JSON string, or null when its meta
 * has no study_uid. Returns 0, or -1 when memory ran out reading the meta. (export_fmt.c) */
int api_viewer_url(jw *o, const st_dataset *ds, uint32_t key);
/* The data map (api_datamap.c). */
int api_datamap(http_req *rq, http_resp *resp);
/* A sample's local image under --media-root (media.c). */
int api_media(http_req *rq, http_resp *resp);
/* The console's static files (ui.c). */
int api_ui_redirect(http_req *rq, http_resp *resp);
int api_ui_index(http_req *rq, http_resp *resp);
int api_ui_file(http_req *rq, http_resp *resp);

/* A page of samples (hard-examples, a queue's items) ends early, after at least one sample, once its JSON
 * passes this: with meta near its 64 KiB limit a page of 10,000 would be hundreds of MiB, held until sent. */
#define API_PAGE_BYTES (16u << 20)

#endif /* FOCALD_API_INTERNAL_H */
