#include "common/wire.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const k_dtype_names[] = {"f32", "u32", "u8", "i64"};
static const size_t k_dtype_sizes[] = {4, 4, 1, 8};

size_t wire_dtype_size(wire_dtype_t t) { return k_dtype_sizes[t]; }

long long wire_send(void *sock, const void *identity, size_t identity_len, json_t *header,
                    const wire_frame_t *frames, int nframes, int flags, err_t *err)
{
    FN_CHECK(nframes >= 0 && nframes <= WIRE_MAX_FRAMES);
    json_object_set_new(header, "v", json_integer(WIRE_VERSION));
    json_t *desc = json_array();
    for (int i = 0; i < nframes; i++)
        json_array_append_new(desc, json_pack("{s:s, s:s, s:I}", "name", frames[i].name ? frames[i].name : "",
                                              "dtype", k_dtype_names[frames[i].dtype], "count",
                                              (json_int_t)frames[i].count));
    json_object_set_new(header, "frames", desc);
    char *text = json_dumps(header, JSON_COMPACT);
    if (!text)
        return err_set(err, FN_ENOMEM, "cannot encode message header");
    long long total = 0;
    int more = nframes > 0 ? ZMQ_SNDMORE : 0;
    int rc = 0;
    if (identity)
        rc = zmq_send(sock, identity, identity_len, ZMQ_SNDMORE | flags);
    if (rc >= 0)
        rc = zmq_send(sock, text, strlen(text), more | flags);
    total += (long long)strlen(text);
    free(text);
    int i = 0;
    for (; rc >= 0 && i < nframes; i++) {
        size_t bytes = frames[i].count * k_dtype_sizes[frames[i].dtype];
        int f = (i + 1 < nframes ? ZMQ_SNDMORE : 0) | flags;
        if (frames[i].release) {
            zmq_msg_t msg;
            zmq_msg_init_data(&msg, (void *)frames[i].data, bytes, frames[i].release, frames[i].hint);
            rc = zmq_msg_send(&msg, sock, f);
            if (rc < 0)
                zmq_msg_close(&msg); /* releases the reference it held */
        } else {
            rc = zmq_send(sock, frames[i].data, bytes, f);
        }
        total += (long long)bytes;
    }
    int e = errno;
    /* Frames never handed to ZeroMQ (an earlier part failed) still own their reference. */
    for (; rc < 0 && i < nframes; i++)
        if (frames[i].release)
            frames[i].release((void *)frames[i].data, frames[i].hint);
    if (rc < 0)
        return err_set(err, e == EAGAIN ? FN_ETIMEOUT : FN_EIO, "cannot send message: %s", zmq_strerror(e));
    return total;
}

/* Reads and discards the rest of a multipart message. */
static void drain(void *sock)
{
    int more = 0;
    size_t len = sizeof more;
    while (zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len) == 0 && more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        zmq_msg_recv(&part, sock, 0);
        zmq_msg_close(&part);
        len = sizeof more;
    }
}

static int has_more(void *sock)
{
    int more = 0;
    size_t len = sizeof more;
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    return more;
}

int wire_recv(void *sock, int router, wire_msg_t *m, int flags, err_t *err)
{
    memset(m, 0, sizeof *m);
    zmq_msg_t part;
    zmq_msg_init(&part);
    if (router) {
        if (zmq_msg_recv(&part, sock, flags) < 0) {
            zmq_msg_close(&part);
            return err_set(err, errno == EAGAIN ? FN_ETIMEOUT : FN_EIO, "receive failed: %s", zmq_strerror(errno));
        }
        size_t n = zmq_msg_size(&part);
        if (n == 0 || n > WIRE_MAX_IDENTITY || !has_more(sock)) {
            zmq_msg_close(&part);
            drain(sock);
            return err_set(err, FN_EPROTO, "message without a valid routing identity");
        }
        memcpy(m->identity, zmq_msg_data(&part), n);
        m->identity_len = n;
        zmq_msg_close(&part);
        zmq_msg_init(&part);
        flags = 0; /* the rest of a multipart message is already here */
    }
    if (zmq_msg_recv(&part, sock, flags) < 0) {
        zmq_msg_close(&part);
        return err_set(err, errno == EAGAIN ? FN_ETIMEOUT : FN_EIO, "receive failed: %s", zmq_strerror(errno));
    }
    size_t hlen = zmq_msg_size(&part);
    m->bytes = hlen;
    m->srcfd = zmq_msg_get(&part, ZMQ_SRCFD);
    const char *uid = zmq_msg_gets(&part, "User-Id");
    snprintf(m->user_id, sizeof m->user_id, "%s", uid ? uid : "");
    const char *key = zmq_msg_gets(&part, "X-Key");
    snprintf(m->peer_key, sizeof m->peer_key, "%s", key ? key : "");
    if (hlen == 0 || hlen > WIRE_MAX_HEADER) {
        zmq_msg_close(&part);
        drain(sock);
        return err_set(err, FN_EPROTO, "header frame of %zu bytes (expected 1..%d)", hlen, WIRE_MAX_HEADER);
    }
    json_error_t je;
    m->header = json_loadb(zmq_msg_data(&part), hlen, JSON_REJECT_DUPLICATES, &je);
    zmq_msg_close(&part);
    int rc = 0;
    json_t *desc = NULL;
    if (!m->header || !json_is_object(m->header)) {
        rc = err_set(err, FN_EPROTO, "header is not a JSON object%s%s", m->header ? "" : ": ",
                     m->header ? "" : je.text);
        goto bad;
    }
    if (json_integer_value(json_object_get(m->header, "v")) != WIRE_VERSION) {
        rc = err_set(err, FN_EPROTO, "unsupported wire version (expected %d)", WIRE_VERSION);
        goto bad;
    }
    m->type = json_string_value(json_object_get(m->header, "type"));
    if (!m->type) {
        rc = err_set(err, FN_EPROTO, "header has no \"type\" string");
        goto bad;
    }
    desc = json_object_get(m->header, "frames");
    size_t declared = desc ? json_array_size(desc) : 0;
    if ((desc && !json_is_array(desc)) || declared > WIRE_MAX_FRAMES) {
        rc = err_set(err, FN_EPROTO, "\"%s\" message: \"frames\" must be an array of at most %d entries", m->type,
                     WIRE_MAX_FRAMES);
        goto bad;
    }
    for (size_t i = 0; i < declared; i++) {
        json_t *d = json_array_get(desc, i);
        const char *dt = json_string_value(json_object_get(d, "dtype"));
        json_t *cnt = json_object_get(d, "count");
        int t = -1;
        for (int k = 0; dt && k < 4; k++)
            if (strcmp(dt, k_dtype_names[k]) == 0)
                t = k;
        if (t < 0 || !json_is_integer(cnt) || json_integer_value(cnt) < 0) {
            rc = err_set(err, FN_EPROTO, "\"%s\" message: frame %zu has a bad dtype or count", m->type, i);
            goto bad;
        }
        if (!has_more(sock)) {
            rc = err_set(err, FN_EPROTO, "\"%s\" message declares %zu frames but carries %zu", m->type, declared, i);
            goto bad;
        }
        zmq_msg_init(&m->frames[i]);
        m->nframes = (int)i + 1;
        if (zmq_msg_recv(&m->frames[i], sock, 0) < 0) {
            rc = err_set(err, FN_EIO, "receive failed: %s", zmq_strerror(errno));
            goto bad;
        }
        size_t count = (size_t)json_integer_value(cnt), got = zmq_msg_size(&m->frames[i]);
        m->bytes += got;
        if (count > SIZE_MAX / 8 || got != count * k_dtype_sizes[t]) {
            rc = err_set(err, FN_EPROTO, "\"%s\" message: frame %zu holds %zu bytes, header declares %zu x %s",
                         m->type, i, got, count, dt);
            goto bad;
        }
        m->dtypes[i] = (wire_dtype_t)t;
        m->counts[i] = count;
    }
    if (has_more(sock)) {
        rc = err_set(err, FN_EPROTO, "\"%s\" message carries more frames than its header declares", m->type);
        goto bad;
    }
    return 0;
bad:
    drain(sock);
    wire_msg_close(m);
    return rc;
}

void wire_msg_close(wire_msg_t *m)
{
    for (int i = 0; i < m->nframes; i++)
        zmq_msg_close(&m->frames[i]);
    m->nframes = 0;
    json_decref(m->header);
    m->header = NULL;
    m->type = NULL;
}

const void *wire_frame_data(const wire_msg_t *m, int i, wire_dtype_t dtype, size_t *count)
{
    if (i < 0 || i >= m->nframes || m->dtypes[i] != dtype)
        return NULL;
    if (count)
        *count = m->counts[i];
    return zmq_msg_data((zmq_msg_t *)&m->frames[i]);
}

long long wire_get_int(const wire_msg_t *m, const char *key, long long def)
{
    json_t *v = json_object_get(m->header, key);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

const char *wire_get_str(const wire_msg_t *m, const char *key)
{
    return json_string_value(json_object_get(m->header, key));
}
