/* monitor: ZeroMQ socket monitor events read from the owner's poll loop (common/monitor.h). */
#include "common/monitor.h"

#include <stdint.h>
#include <string.h>
#include <zmq.h>

int monitor_open(void *ctx, void *sock, const char *endpoint, int events, void **mon)
{
    *mon = NULL;
    if (zmq_socket_monitor(sock, endpoint, events) != 0)
        return -1;
    *mon = zmq_socket(ctx, ZMQ_PAIR);
    zmq_connect(*mon, endpoint);
    return 0;
}

int monitor_event(void *mon, int *value)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&m);
        return 0;
    }
    /* Frame 1: the event id (16 bits) and its value (32 bits); frame 2: the endpoint address. */
    int ev = 0;
    if (zmq_msg_size(&m) >= 6) {
        const uint8_t *d = zmq_msg_data(&m);
        ev = d[0] | d[1] << 8;
        memcpy(value, d + 2, 4);
    }
    int more = zmq_msg_more(&m);
    zmq_msg_close(&m);
    if (more) {
        zmq_msg_init(&m);
        zmq_msg_recv(&m, mon, 0);
        zmq_msg_close(&m);
    }
    return ev;
}

void monitor_close(void *sock, void *mon)
{
    /* Stop the monitor before closing its reading end: ZeroMQ's I/O thread blocks sending
     * events to a monitor socket nobody reads, and the context would never terminate. */
    if (sock)
        zmq_socket_monitor(sock, NULL, 0);
    if (mon) {
        int zero = 0;
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(mon);
    }
}
