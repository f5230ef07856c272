/* api_internal.h — what the handler files share. */
#ifndef FOCALD_API_INTERNAL_H
#define FOCALD_API_INTERNAL_H

#include "api.h"
#include "config.h"
#include "jsonw.h"
#include "problem.h"
#include "state.h"

struct store;

/* Set by api_init. */
extern config api_cfg;
extern st_map *api_map;
extern struct store *api_store;

/* Fills resp with a problem. Returns 0. */
int api_fail(http_resp *resp, const http_req *rq, problem_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Parses a comma-separated list of review states into a bit mask; -1 when a
 * name is unknown or the list is empty. */
int api_status_mask(const char *s, uint32_t *mask);

/* "true" -> ST_LABEL_ISSUE_YES, "false" -> ST_LABEL_ISSUE_NO; -1 otherwise. */
int api_label_issue_filter(const char *s);

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
 * has no study_uid. Returns 0, or -1 when memory ran out reading the meta. */
int api_viewer_url(jw *o, const st_dataset *ds, uint32_t key);
/* The data map (api_datamap.c). */
int api_datamap(http_req *rq, http_resp *resp);
/* A sample's local image under --media-root (media.c). */
int api_media(http_req *rq, http_resp *resp);
/* The console's static files (ui.c). */
int api_ui_redirect(http_req *rq, http_resp *resp);
int api_ui_index(http_req *rq, http_resp *resp);
int api_ui_file(http_req *rq, http_resp *resp);

#endif /* FOCALD_API_INTERNAL_H */
