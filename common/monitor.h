/* monitor: a ZeroMQ socket monitor read from the owner's poll loop. The server, a relay and a
 * client agent watch their sockets this way (disconnects, refused CURVE handshakes); one place
 * decodes the event frames and tears the monitor down in the order ZeroMQ needs. */
#ifndef FEDNAS_COMMON_MONITOR_H
#define FEDNAS_COMMON_MONITOR_H

/* Starts reporting `events` (ZMQ_EVENT_*) of sock on the inproc endpoint and connects *mon, a
 * PAIR socket in ctx, to it. -1 (zmq_errno() says why, *mon NULL) when the monitor cannot start. */
int monitor_open(void *ctx, void *sock, const char *endpoint, int events, void **mon);
/* One waiting event without blocking: its ZMQ_EVENT_* id and value (the file descriptor for a
 * disconnect, the ZAP status for a refused key), or 0 when none is waiting. */
int monitor_event(void *mon, int *value);
/* Stops the monitor and closes mon (NULL-safe for both). Call before closing sock. */
void monitor_close(void *sock, void *mon);

#endif
