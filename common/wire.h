/* wire: fednas messages on ZeroMQ. Frame 0 is a JSON header {"v":1,"type":...,"frames":[...]}
 * and later frames are raw little-endian arrays whose dtype and count the header declares.
 * Every size, count and type is checked on receipt; a bad message is an error, never a crash. */
#ifndef FEDNAS_COMMON_WIRE_H
#define FEDNAS_COMMON_WIRE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/err.h"

#define WIRE_VERSION 1
#define WIRE_MAX_FRAMES 8
#define WIRE_MAX_HEADER 65536
#define WIRE_MAX_IDENTITY 256

typedef enum { WIRE_F32 = 0, WIRE_U32, WIRE_U8, WIRE_I64 } wire_dtype_t;

typedef struct wire_frame {
    const char *name; /* what the array is ("model", "update") */
    wire_dtype_t dtype;
    const void *data;
    size_t count; /* elements, not bytes */
    /* Zero-copy: when set, ZeroMQ sends data in place and calls release(data, hint) once it
     * is done with it (possibly from its I/O thread); data must stay valid until then. */
    void (*release)(void *data, void *hint);
    void *hint;
} wire_frame_t;

typedef struct wire_msg {
    unsigned char identity[WIRE_MAX_IDENTITY]; /* ROUTER sockets: the peer's routing id */
    size_t identity_len;
    char user_id[64]; /* the authenticated peer (set by the ZAP handler), "" if none */
    char peer_key[48]; /* its CURVE public key in Z85 (ZAP metadata "X-Key"), "" if none */
    int srcfd;        /* the connection it came on (matches monitor events), -1 if unknown */
    json_t *header;   /* owned; "v" and "frames" already checked */
    const char *type; /* points into header */
    int nframes;
    zmq_msg_t frames[WIRE_MAX_FRAMES];
    wire_dtype_t dtypes[WIRE_MAX_FRAMES];
    size_t counts[WIRE_MAX_FRAMES];
    size_t bytes; /* everything received, for accounting */
} wire_msg_t;

size_t wire_dtype_size(wire_dtype_t t);

/* Sends header (borrowed; "v" and "frames" are added to it) and the frames. On a ROUTER socket
 * pass the peer's identity; on a DEALER pass NULL. Returns bytes sent (>= 0) or an error. */
long long wire_send(void *sock, const void *identity, size_t identity_len, json_t *header,
                    const wire_frame_t *frames, int nframes, int flags, err_t *err);

/* Receives one message (router: expect an identity frame first). Drains the whole multipart
 * message even when it is rejected, so the socket stays in step. FN_EPROTO for a bad message,
 * FN_ETIMEOUT when flags has ZMQ_DONTWAIT and nothing is waiting. */
int wire_recv(void *sock, int router, wire_msg_t *m, int flags, err_t *err);
void wire_msg_close(wire_msg_t *m);

/* Frame i's data and count, or NULL when the frame is absent or not of the dtype expected. */
const void *wire_frame_data(const wire_msg_t *m, int i, wire_dtype_t dtype, size_t *count);

/* Header helpers: integer field (or def when absent/not an integer), string field or NULL. */
long long wire_get_int(const wire_msg_t *m, const char *key, long long def);
const char *wire_get_str(const wire_msg_t *m, const char *key);

#endif
