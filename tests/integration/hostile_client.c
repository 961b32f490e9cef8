/* A hostile site for the issue-12 tests: it holds an allowed key and connects with CURVE as a
 * real site does, then
 *   flood      sends "hello" as fast as the server takes them and never reads anything. Its own
 *              receive side is kept as small as ZeroMQ allows (a high-water mark of one message,
 *              a 4 KiB kernel buffer), so whatever the server sends it backs up in the server.
 *              It floods until it is killed.
 *   overclaim  registers with 100 samples, then answers every round with an update of zeros
 *              that claims FN_MAX_SAMPLES samples: unbounded, its weight would freeze the model.
 * Usage: hostile_client flood|overclaim ENDPOINT KIT_DIR */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/limits.h"
#include "common/wire.h"
#include "crypto/keys.h"

/* At most about 20,000 hellos a second (1 ms after every 20): enough to fill an answering
 * server's pipe to us within seconds, without taking a shared machine's cores for the test. */
static void flood(void *sock)
{
    long long sent = 0;
    struct timespec pause = {0, 1000000};
    err_t e;
    for (;;) {
        json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 100);
        int ok = wire_send(sock, NULL, 0, h, NULL, 0, ZMQ_DONTWAIT, &e) >= 0;
        json_decref(h);
        if (ok && ++sent % 10000 == 0) {
            printf("hostile_client: %lld hellos sent\n", sent);
            fflush(stdout);
        }
        if (!ok || sent % 20 == 0) /* not ok: our own queue is full, the server is not reading */
            nanosleep(&pause, NULL);
    }
}

static int overclaim(void *sock)
{
    err_t e;
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 100);
    wire_send(sock, NULL, 0, h, NULL, 0, 0, &e);
    json_decref(h);
    for (;;) {
        wire_msg_t m;
        if (wire_recv(sock, 0, &m, 0, &e) < 0)
            continue;
        if (strcmp(m.type, "end") == 0) {
            wire_msg_close(&m);
            return 0;
        }
        size_t n = 0;
        if (strcmp(m.type, "train") == 0 && wire_frame_data(&m, 0, WIRE_F32, &n)) {
            float *zeros = calloc(n ? n : 1, sizeof *zeros);
            json_t *u = json_pack("{s:s, s:I, s:I, s:I, s:f, s:f}", "type", "update", "run", wire_get_int(&m, "run", -1),
                                  "round", wire_get_int(&m, "round", -1), "samples", (json_int_t)FN_MAX_SAMPLES, "loss",
                                  1.0, "accuracy", 0.5);
            wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = zeros, .count = n};
            if (wire_send(sock, NULL, 0, u, &f, 1, 0, &e) >= 0)
                printf("hostile_client: round %lld answered claiming %lld samples\n", wire_get_int(&m, "round", -1),
                       (long long)FN_MAX_SAMPLES);
            fflush(stdout);
            json_decref(u);
            free(zeros);
        }
        wire_msg_close(&m);
    }
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "flood") != 0 && strcmp(argv[1], "overclaim") != 0)) {
        fprintf(stderr, "usage: hostile_client flood|overclaim ENDPOINT KIT_DIR\n");
        return 2;
    }
    const char *endpoint = argv[2], *kit = argv[3];
    char path[1024], spk[KEYS_Z85_LEN + 1];
    err_t e = {0};
    keys_pair_t *kp = keys_pair_new();
    snprintf(path, sizeof path, "%s/site.key", kit);
    if (!kp || keys_read_secret(path, kp, &e) < 0) {
        fprintf(stderr, "hostile_client: %s\n", e.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/server.pub", kit);
    if (keys_read_public(path, spk, &e) < 0) {
        fprintf(stderr, "hostile_client: %s\n", e.msg);
        return 1;
    }
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (strcmp(argv[1], "flood") == 0) {
        int hwm = 1, rcvbuf = 4096;
        zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
        zmq_setsockopt(sock, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(kp);
    if (zmq_connect(sock, endpoint) != 0) {
        fprintf(stderr, "hostile_client: cannot connect to %s: %s\n", endpoint, zmq_strerror(zmq_errno()));
        return 1;
    }
    if (strcmp(argv[1], "flood") == 0)
        flood(sock);
    int rc = overclaim(sock);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
