/* api.h — focald's routes: the table main.c gives the HTTP layer (http_start), naming each route's
 * handler and what the HTTP layer must know of it (router.h). */
#ifndef FOCALD_API_H
#define FOCALD_API_H

#include "router.h"

extern const router_route api_routes[];
extern const int api_route_count;

#endif /* FOCALD_API_H */
