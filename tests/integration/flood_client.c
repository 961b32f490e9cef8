/* A hostile site for the hello-flood test (issue 12): it holds an allowed key, connects with
 * CURVE as a real site does, then sends "hello" as fast as the server takes them and never reads
 * anything. Its own receive side is kept as small as ZeroMQ allows (a high-water mark of one
 * message, a 4 KiB kernel buffer), so whatever the server sends it backs up in the server.
 * It floods until it is killed.
 * Usage: flood_client ENDPOINT KIT_DIR */
#include <errno.h>
#include <stdio.h>
#include <time.h>
#include <zmq.h>

#include "common/wire.h"
#include "crypto/keys.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: flood_client ENDPOINT KIT_DIR\n");
        return 2;
    }
    char path[1024], spk[KEYS_Z85_LEN + 1];
    err_t e = {0};
    keys_pair_t *kp = keys_pair_new();
    snprintf(path, sizeof path, "%s/site.key", argv[2]);
    if (!kp || keys_read_secret(path, kp, &e) < 0) {
        fprintf(stderr, "flood_client: %s\n", e.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/server.pub", argv[2]);
    if (keys_read_public(path, spk, &e) < 0) {
        fprintf(stderr, "flood_client: %s\n", e.msg);
        return 1;
    }
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    int hwm = 1, rcvbuf = 4096;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(kp);
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "flood_client: cannot connect to %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }
    long long sent = 0;
    struct timespec pause = {0, 1000000};
    for (;;) {
        json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 100);
        if (wire_send(sock, NULL, 0, h, NULL, 0, ZMQ_DONTWAIT, &e) >= 0) {
            if (++sent % 10000 == 0) {
                printf("flood_client: %lld hellos sent\n", sent);
                fflush(stdout);
            }
        } else {
            nanosleep(&pause, NULL); /* our own queue is full: the server is not reading */
        }
        json_decref(h);
    }
}
