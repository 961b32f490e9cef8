/* A misbehaving client agent for the fault tests. It holds an allowed key and speaks the real
 * protocol, then does what a broken or hostile site would:
 *   bad-updates  each round: a replay for the previous round, an update of the wrong size, one
 *                with a NaN, one claiming another run, and finally a valid (zero) update
 *   die-in N     receives round N's model and exits without answering (a crash mid-round)
 * Usage: fault_client MODE [N] ENDPOINT KIT_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <zmq.h>

#include "common/wire.h"
#include "crypto/keys.h"

static void send_update(void *sock, long long run, long long round, const float *v, size_t n)
{
    err_t e;
    json_t *h = json_pack("{s:s, s:I, s:I, s:i, s:f, s:f}", "type", "update", "run", run, "round", round, "samples",
                          100, "loss", 1.0, "accuracy", 0.5);
    wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = v, .count = n};
    if (wire_send(sock, NULL, 0, h, &f, 1, 0, &e) < 0)
        fprintf(stderr, "fault_client: %s\n", e.msg);
    json_decref(h);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fault_client bad-updates|die-in N ENDPOINT KIT\n");
        return 2;
    }
    int die_in = 0, a = 2;
    if (strcmp(argv[1], "die-in") == 0)
        die_in = atoi(argv[a++]);
    const char *endpoint = argv[a], *kit = argv[a + 1];
    char path[1024], spk[KEYS_Z85_LEN + 1];
    err_t e = {0};
    keys_pair_t *kp = keys_pair_new();
    snprintf(path, sizeof path, "%s/site.key", kit);
    if (keys_read_secret(path, kp, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    snprintf(path, sizeof path, "%s/server.pub", kit);
    if (keys_read_public(path, spk, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    void *ctx = zmq_ctx_new(), *sock = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    zmq_connect(sock, endpoint);
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 100);
    wire_send(sock, NULL, 0, h, NULL, 0, 0, &e);
    json_decref(h);
    for (;;) {
        wire_msg_t m;
        if (wire_recv(sock, 0, &m, 0, &e) < 0) {
            fprintf(stderr, "fault_client: %s\n", e.msg);
            continue;
        }
        if (strcmp(m.type, "end") == 0) {
            wire_msg_close(&m);
            break;
        }
        if (strcmp(m.type, "train") != 0) {
            wire_msg_close(&m);
            continue;
        }
        long long run = wire_get_int(&m, "run", -1), round = wire_get_int(&m, "round", -1);
        size_t n = 0;
        wire_frame_data(&m, 0, WIRE_F32, &n);
        wire_msg_close(&m);
        if (die_in && round == die_in) {
            fprintf(stderr, "fault_client: dying in round %lld\n", round);
            _exit(0);
        }
        if (die_in) {
            float *zero = calloc(n, sizeof *zero);
            send_update(sock, run, round, zero, n);
            free(zero);
            continue;
        }
        float *v = calloc(n + 1, sizeof *v);
        send_update(sock, run, round - 1, v, n); /* a replay from the last round */
        send_update(sock, run, round, v, n + 1); /* wrong size */
        v[n / 2] = NAN;
        send_update(sock, run, round, v, n); /* not finite */
        v[n / 2] = 0;
        send_update(sock, run + 1000, round, v, n); /* another run */
        send_update(sock, run, round, v, n);        /* finally, a valid one */
        send_update(sock, run, round, v, n);        /* and a duplicate */
        free(v);
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    keys_pair_free(kp);
    return 0;
}
