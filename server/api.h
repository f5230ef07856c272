/* api.h — focald's routes and their handlers. */
#ifndef FOCALD_API_H
#define FOCALD_API_H

#include "config.h"
#include "http.h"
#include "state.h"

struct store;

enum { API_BODY_NONE = 0, API_BODY_JSON = 1, API_BODY_BINARY = 2 /* JSON or binary tensors */ };

typedef struct api_route {
  const char *method;
  const char *pattern; /* "/v1/datasets/{dataset}/batches" */
  http_handler fn;
  int body;            /* what Content-Type the route takes */
  const char *query;   /* the query parameters it takes, space-separated; any other is 400 bad_query */
} api_route;

extern const api_route api_routes[];
extern const int api_route_count;

/* Gives the handlers what they read and write. Call before http_start. */
void api_init(const config *cfg, st_map *map, struct store *store);

#endif /* FOCALD_API_H */
