/* fuzz_wire: wire_recv on arbitrary multipart messages. The input is split into frames at each
 * FRAME_SEP (bytes that valid JSON never holds), sent over an inproc PAIR socket and received
 * with wire_recv; the first input byte picks DEALER (even) or ROUTER (odd) framing, where the
 * first frame is the routing identity. Invariants checked:
 *   - a message accepted has a type, and every frame holds exactly count x dtype bytes;
 *   - re-sending what was accepted (wire_send) and receiving it again gives the same header
 *     fields and the same bytes;
 *   - whatever happened, the socket stays in step: the next message received is a sentinel
 *     sent after the fuzzed one (wire_recv must drain a rejected multipart message). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"
#include "fuzz_seed.h"

#define FRAME_SEP "\xff\x00\xff"
#define FRAME_SEP_LEN 3
#define MAX_PARTS 32

static void *g_ctx, *g_tx, *g_rx;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_wire: %s\n", what);
    abort();
}

/* Seeds: messages as wire_send puts them on the socket, parts joined by FRAME_SEP. */
static void capture(const char *dir, const char *name, int router, json_t *h, const wire_frame_t *f, int nf)
{
    err_t e = {0};
    static const uint8_t ident[] = {0, 0x80, 0, 0x41, 0xa7};
    if (wire_send(g_tx, router ? ident : NULL, router ? sizeof ident : 0, h, f, nf, 0, &e) < 0)
        die("cannot send a seed message");
    json_decref(h);
    uint8_t *buf = malloc(1), *p;
    size_t len = 1;
    buf[0] = (uint8_t)router;
    int more = 1;
    for (int i = 0; more; i++) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, g_rx, 0) < 0)
            die("cannot receive a seed message");
        size_t n = zmq_msg_size(&part);
        buf = realloc(buf, len + FRAME_SEP_LEN + n);
        p = buf + len;
        if (i > 0)
            memcpy(p, FRAME_SEP, FRAME_SEP_LEN), p += FRAME_SEP_LEN, len += FRAME_SEP_LEN;
        memcpy(p, zmq_msg_data(&part), n);
        len += n;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    fuzz_write_seed(dir, name, buf, len, NULL, 0);
    free(buf);
}

static void write_seeds(const char *dir)
{
    float v[5] = {1, -2, 3.5f, 0, 1e-3f};
    uint8_t u[3] = {7, 8, 9};
    uint32_t idx[2] = {1, 4};
    int64_t n[1] = {60000};
    wire_frame_t f[3] = {{.name = "update", .dtype = WIRE_F32, .data = v, .count = 5},
                         {.name = "codes", .dtype = WIRE_U8, .data = u, .count = 3},
                         {.name = "indices", .dtype = WIRE_U32, .data = idx, .count = 2}};
    wire_frame_t g = {.name = "samples", .dtype = WIRE_I64, .data = n, .count = 1};
    capture(dir, "update", 0, json_pack("{s:s, s:i, s:i, s:f}", "type", "update", "run", 3, "round", 4, "loss", 0.5),
            f, 3);
    capture(dir, "hello", 0, json_pack("{s:s, s:s}", "type", "hello", "site", "site-a"), NULL, 0);
    capture(dir, "router", 1, json_pack("{s:s, s:i}", "type", "train", "round", 1), &g, 1);
    wire_frame_t empty = {.name = "m", .dtype = WIRE_F32};
    capture(dir, "empty-frame", 0, json_pack("{s:s}", "type", "model"), &empty, 1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_ctx = zmq_ctx_new();
    g_tx = zmq_socket(g_ctx, ZMQ_PAIR);
    g_rx = zmq_socket(g_ctx, ZMQ_PAIR);
    if (!g_ctx || !g_tx || !g_rx || zmq_bind(g_rx, "inproc://fuzz-wire") != 0 ||
        zmq_connect(g_tx, "inproc://fuzz-wire") != 0)
        die("cannot set up the inproc socket pair");
    const char *dir = getenv("FUZZ_WRITE_SEEDS");
    if (dir)
        write_seeds(dir);
    return 0;
}

/* The sentinel: a small valid message that must come out right after the fuzzed one. */
static void send_sentinel(void)
{
    err_t e = {0};
    uint32_t v = 0xC0FFEEu;
    wire_frame_t f = {.name = "s", .dtype = WIRE_U32, .data = &v, .count = 1};
    json_t *h = json_pack("{s:s}", "type", "sentinel");
    if (wire_send(g_tx, NULL, 0, h, &f, 1, 0, &e) < 0)
        die("cannot send the sentinel");
    json_decref(h);
}

static void expect_sentinel(void)
{
    wire_msg_t m;
    err_t e = {0};
    if (wire_recv(g_rx, 0, &m, 0, &e) != 0 || strcmp(m.type, "sentinel") != 0)
        die("socket out of step: the sentinel did not come next");
    size_t n = 0;
    const uint32_t *v = wire_frame_data(&m, 0, WIRE_U32, &n);
    uint32_t got;
    if (!v || n != 1 || (memcpy(&got, v, 4), got != 0xC0FFEEu))
        die("sentinel frame damaged");
    wire_msg_close(&m);
}

/* Sends an accepted message back through wire_send and checks it arrives unchanged. */
static void roundtrip(const wire_msg_t *m, int router)
{
    wire_frame_t f[WIRE_MAX_FRAMES];
    json_t *desc = json_object_get(m->header, "frames");
    for (int i = 0; i < m->nframes; i++) {
        size_t count = 0;
        const void *d = wire_frame_data(m, i, m->dtypes[i], &count);
        if (!d || count != m->counts[i])
            die("wire_frame_data disagrees with the counts");
        if (zmq_msg_size((zmq_msg_t *)&m->frames[i]) != count * wire_dtype_size(m->dtypes[i]))
            die("accepted frame size differs from count x dtype");
        f[i] = (wire_frame_t){.name = json_string_value(json_object_get(json_array_get(desc, (size_t)i), "name")),
                              .dtype = m->dtypes[i], .data = d, .count = count};
    }
    json_t *h = json_deep_copy(m->header);
    err_t e = {0};
    if (wire_send(g_tx, router ? m->identity : NULL, router ? m->identity_len : 0, h, f, m->nframes, 0, &e) < 0)
        die("cannot re-send an accepted message");
    wire_msg_t r;
    if (wire_recv(g_rx, router, &r, 0, &e) != 0)
        die("a re-sent accepted message was refused");
    if (strcmp(r.type, m->type) != 0 || r.nframes != m->nframes)
        die("round trip changed the type or the frame count");
    if (router && (r.identity_len != m->identity_len || memcmp(r.identity, m->identity, m->identity_len) != 0))
        die("round trip changed the identity");
    const char *key;
    json_t *v;
    json_object_foreach(m->header, key, v)
    {
        if (strcmp(key, "frames") != 0 && !json_equal(v, json_object_get(r.header, key)))
            die("round trip changed a header field");
    }
    for (int i = 0; i < m->nframes; i++) {
        size_t a = zmq_msg_size((zmq_msg_t *)&m->frames[i]);
        if (r.dtypes[i] != m->dtypes[i] || r.counts[i] != m->counts[i] ||
            zmq_msg_size(&r.frames[i]) != a ||
            (a && memcmp(zmq_msg_data(&r.frames[i]), zmq_msg_data((zmq_msg_t *)&m->frames[i]), a) != 0))
            die("round trip changed a frame");
    }
    wire_msg_close(&r);
    json_decref(h);
}

/* The accessors the server and clients read messages with agree with what was accepted. */
static void check_getters(const wire_msg_t *m)
{
    for (int i = -1; i <= m->nframes; i++)
        for (int t = WIRE_F32; t <= WIRE_I64; t++) {
            size_t count = (size_t)-1;
            const void *d = wire_frame_data(m, i, (wire_dtype_t)t, &count);
            int expect = i >= 0 && i < m->nframes && m->dtypes[i] == (wire_dtype_t)t;
            if (!!d != expect && !(expect && m->counts[i] == 0))
                die("wire_frame_data answers for the wrong frame or dtype");
            if (expect && count != m->counts[i])
                die("wire_frame_data gives the wrong count");
        }
    if (wire_get_str(m, "type") != m->type)
        die("wire_get_str(type) differs from the type");
    json_t *r = json_object_get(m->header, "round");
    if (wire_get_int(m, "round", -7) != (json_is_integer(r) ? json_integer_value(r) : -7))
        die("wire_get_int differs from the header");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int router = data[0] & 1;
    data++, size--;
    const uint8_t *part[MAX_PARTS];
    size_t plen[MAX_PARTS];
    int nparts = 0;
    size_t start = 0;
    for (size_t i = 0; i + FRAME_SEP_LEN <= size && nparts < MAX_PARTS - 1; i++) {
        if (memcmp(data + i, FRAME_SEP, FRAME_SEP_LEN) == 0) {
            part[nparts] = data + start, plen[nparts++] = i - start;
            start = i + FRAME_SEP_LEN;
            i = start - 1;
        }
    }
    part[nparts] = data + start, plen[nparts++] = size - start;
    for (int i = 0; i < nparts; i++)
        if (zmq_send(g_tx, part[i], plen[i], i + 1 < nparts ? ZMQ_SNDMORE : 0) < 0)
            die("cannot send the fuzzed message");
    send_sentinel();

    wire_msg_t m;
    err_t e = {0};
    int rc = wire_recv(g_rx, router, &m, 0, &e);
    expect_sentinel();
    if (rc == 0) {
        if (!m.type || !m.header)
            die("accepted message without a type");
        check_getters(&m);
        roundtrip(&m, router);
        wire_msg_close(&m);
    } else if (rc != FN_EPROTO) {
        die("a malformed message gave an error other than FN_EPROTO");
    } else if (m.header || m.nframes) {
        die("a refused message was left open");
    }
    return 0;
}
