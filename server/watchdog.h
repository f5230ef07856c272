/* watchdog.h — deadlines for a connection's request headers and body (slowloris), on a thread of their own.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client that sends one
 * byte every few seconds is never idle, and enough of them hold every connection
 * slot. The watchdog keeps a table of open connections (filled by libmicrohttpd's
 * connection notifications) and shuts down the socket of one whose request is
 * late; libmicrohttpd then sees the end of the stream and closes it as usual.
 */
#ifndef FOCALD_WATCHDOG_H
#define FOCALD_WATCHDOG_H

#include <microhttpd.h>
#include <stddef.h>

/* Starts the thread: headers are due within timeout seconds of a connection opening or of its previous
 * answer; a body then at min_rate bytes per second on average (0: no body deadline), after timeout
 * seconds of grace. tick, when not NULL, is called on the watchdog's thread about four times a second
 * with the monotonic time, outside the table's lock. Returns 0, or -1 with errno set (no thread: focald
 * does not start without one). */
int watchdog_start(double timeout, long long min_rate, void (*tick)(double now));
/* Stops and joins the thread (if it runs). */
void watchdog_stop(void);

/* libmicrohttpd's MHD_OPTION_NOTIFY_CONNECTION callback: adds an opened connection to the table and
 * removes a closed one (before libmicrohttpd closes its socket, so a reused descriptor is never cut). */
void watchdog_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
                     enum MHD_ConnectionNotificationCode code);
/* Marks conn's request as under way (1: its headers are complete) or finished (0: the next request's
 * header deadline starts). */
void watchdog_request(struct MHD_Connection *conn, int in_request);
/* Notes n more body bytes of conn's request, or (done) that its body is complete. */
void watchdog_body(struct MHD_Connection *conn, size_t n, int done);

#endif /* FOCALD_WATCHDOG_H */
