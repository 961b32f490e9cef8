/* A hostile site for the issue-12 tests: it holds an allowed key and connects with CURVE as a
 * real site does, then
 *   flood      sends "hello" as fast as the server takes them and never reads anything. Its own
 *              receive side is kept as small as ZeroMQ allows (a high-water mark of one message,
 *              a 4 KiB kernel buffer), so whatever the server sends it backs up in the server.
 *              It floods until it is killed.
 *   overclaim  registers with 100 samples, then answers every round with an update of zeros
 *              that claims FN_MAX_SAMPLES samples: unbounded, its weight would freeze the model.
 *   attack     registers with 100 samples, then in every round sends, before its one valid
 *              update: a header that is not JSON, a truncated frame (shorter than its header
 *              declares), a frame the header does not declare, updates of the wrong size, with a
 *              NaN and with an Inf, updates for another round and another run, a replay of the
 *              previous round's update, and out-of-range training statistics; its valid update
 *              (zeros) claims FN_MAX_SAMPLES samples; then it replays it. In round 2 it last sends
 *              an update larger than the server's message limit (ZeroMQ closes that connection).
 *   connflood N
 *              opens and closes N connections, one at a time: even ones with its allowed key
 *              (they say nothing), odd ones with a fresh key not on the allow-list.
 *   strangerloop N
 *              opens and closes N connections, one at a time, 20 ms apart, all with one key not on
 *              the allow-list (a refused peer reconnecting in a loop; prints the key).
 *   poison flip|noise SCALE
 *              model poisoning (tests/bench/poison.sh, integration/poison.sh): registers with 3000
 *              samples (one shard of 20 of Fashion-MNIST's training set, what an honest site of the
 *              test holds) and answers every round with a well-formed, finite update of the right
 *              size claiming those 3000 samples. flip: -SCALE times the last global step it saw
 *              (the model it is sent minus the one before, a stand-in for the honest update the
 *              others send; zeros in its first round). noise: Gaussian noise of std SCALE in every
 *              coordinate (a fixed seed, so a run is repeatable). Nothing in the server bounds an
 *              update's norm without DP clipping: this is what the robust strategies are for.
 * Usage: hostile_client flood|overclaim|attack ENDPOINT KIT_DIR,
 *        hostile_client connflood|strangerloop N ENDPOINT KIT_DIR,
 *        hostile_client poison flip|noise SCALE ENDPOINT KIT_DIR */
#include <errno.h>
#include <stdint.h>
#include <math.h>
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

#define POISON_SAMPLES 3000

static void send_values(void *sock, long long run, long long round, long long samples, double loss, double acc,
                        const float *v, size_t n);

/* A standard normal draw (Box-Muller on a 64-bit LCG): fixed seed, no dependency. */
static double gauss(uint64_t *st)
{
    double u[2];
    for (int i = 0; i < 2; i++) {
        *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
        u[i] = ((double)(*st >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

static int poison(void *sock, int flip, double scale)
{
    err_t e;
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", POISON_SAMPLES);
    wire_send(sock, NULL, 0, h, NULL, 0, 0, &e);
    json_decref(h);
    float *prev = NULL, *w = NULL, *v = NULL;
    size_t pn = 0;
    uint64_t st = 0x9e3779b97f4a7c15ULL;
    for (;;) {
        wire_msg_t m;
        if (wire_recv(sock, 0, &m, 0, &e) < 0)
            continue;
        if (strcmp(m.type, "end") == 0) {
            wire_msg_close(&m);
            break;
        }
        size_t n = 0;
        const void *model = strcmp(m.type, "train") == 0 ? wire_frame_data(&m, 0, WIRE_F32, &n) : NULL;
        if (model && n > 0) {
            w = realloc(w, n * sizeof *w);
            v = realloc(v, n * sizeof *v);
            memcpy(w, model, n * sizeof *w); /* frames may sit at odd offsets */
            for (size_t i = 0; i < n; i++)
                v[i] = flip ? (prev && pn == n ? (float)(-scale * ((double)w[i] - prev[i])) : 0.0f)
                            : (float)(scale * gauss(&st));
            long long round = wire_get_int(&m, "round", -1);
            send_values(sock, wire_get_int(&m, "run", -1), round, POISON_SAMPLES, 1.0, 0.5, v, n);
            printf("hostile_client: round %lld: sent a %s update (scale %g)\n", round, flip ? "flipped" : "noise",
                   scale);
            fflush(stdout);
            float *t = prev;
            prev = w;
            w = t;
            pn = n;
        }
        wire_msg_close(&m);
    }
    free(prev);
    free(w);
    free(v);
    return 0;
}

static void say(const char *what, long long round)
{
    printf("hostile_client: round %lld: sent %s\n", round, what);
    fflush(stdout);
}

static void send_values(void *sock, long long run, long long round, long long samples, double loss, double acc,
                        const float *v, size_t n)
{
    err_t e;
    json_t *u = json_pack("{s:s, s:I, s:I, s:I, s:f, s:f}", "type", "update", "run", (json_int_t)run, "round",
                          (json_int_t)round, "samples", (json_int_t)samples, "loss", loss, "accuracy", acc);
    wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = v, .count = n};
    if (wire_send(sock, NULL, 0, u, &f, 1, 0, &e) < 0)
        fprintf(stderr, "hostile_client: %s\n", e.msg);
    json_decref(u);
}

/* A header (raw text) and one raw frame, bypassing wire_send's own consistency. */
static void send_raw(void *sock, const char *header, const void *frame, size_t bytes)
{
    zmq_send(sock, header, strlen(header), frame ? ZMQ_SNDMORE : 0);
    if (frame)
        zmq_send(sock, frame, bytes, 0);
}

static void attack_round(void *sock, long long run, long long round, size_t n)
{
    float *v = calloc(n + 20000, sizeof *v);
    char hdr[512];
    send_raw(sock, "{\"type\": \"update\", \"v\": 1, this is not JSON", NULL, 0);
    say("a header that is not JSON", round);
    snprintf(hdr, sizeof hdr,
             "{\"type\":\"update\",\"v\":%d,\"run\":%lld,\"round\":%lld,\"samples\":100,"
             "\"frames\":[{\"name\":\"update\",\"dtype\":\"f32\",\"count\":%zu}]}",
             WIRE_VERSION, run, round, n);
    send_raw(sock, hdr, v, 4 * n - 2);
    say("a truncated frame", round);
    snprintf(hdr, sizeof hdr, "{\"type\":\"update\",\"v\":%d,\"run\":%lld,\"round\":%lld,\"samples\":100,\"frames\":[]}",
             WIRE_VERSION, run, round);
    send_raw(sock, hdr, v, 4 * n);
    say("an undeclared frame", round);
    send_values(sock, run, round, 100, 1, 0.5, v, n - 1);
    send_values(sock, run, round, 100, 1, 0.5, v, n + 1);
    say("updates of the wrong size", round);
    v[n / 2] = NAN;
    send_values(sock, run, round, 100, 1, 0.5, v, n);
    v[n / 2] = INFINITY;
    send_values(sock, run, round, 100, 1, 0.5, v, n);
    v[n / 2] = 0;
    say("NaN and Inf updates", round);
    send_values(sock, run, round + 7, 100, 1, 0.5, v, n);
    send_values(sock, run + 1, round, 100, 1, 0.5, v, n);
    say("updates for another round and another run", round);
    if (round > 1) {
        send_values(sock, run, round - 1, 100, 1, 0.5, v, n);
        say("a replay of the previous round's update", round);
    }
    send_values(sock, run, round, FN_MAX_SAMPLES, -5, 7, v, n);
    say("its update claiming 1000000000 samples, loss -5, accuracy 7", round);
    send_values(sock, run, round, 100, 1, 0.5, v, n);
    say("a replay of its update", round);
    if (round == 2) {
        send_values(sock, run, round, 100, 1, 0.5, v, n + 20000);
        say("an oversized update", round);
    }
    free(v);
}

static int attack(void *sock)
{
    err_t e;
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 100);
    wire_send(sock, NULL, 0, h, NULL, 0, 0, &e);
    json_decref(h);
    for (;;) {
        wire_msg_t m;
        if (wire_recv(sock, 0, &m, 0, &e) < 0)
            continue;
        int end = strcmp(m.type, "end") == 0;
        size_t n = 0;
        if (strcmp(m.type, "train") == 0 && wire_frame_data(&m, 0, WIRE_F32, &n) && n > 1)
            attack_round(sock, wire_get_int(&m, "run", -1), wire_get_int(&m, "round", -1), n);
        wire_msg_close(&m);
        if (end)
            return 0;
    }
}

static int connflood(void *ctx, int count, const char *endpoint, const char *spk, const keys_pair_t *kp, int stranger)
{
    struct timespec pause = {0, stranger ? 20000000 : 5000000};
    char spub[KEYS_Z85_LEN + 1], ssec[KEYS_Z85_LEN + 1];
    zmq_curve_keypair(spub, ssec);
    if (stranger)
        printf("hostile_client: stranger key %s\n", spub);
    for (int i = 0; i < count; i++) {
        char pub[KEYS_Z85_LEN + 1], sec[KEYS_Z85_LEN + 1];
        if (stranger) {
            memcpy(pub, spub, sizeof pub);
            memcpy(sec, ssec, sizeof sec);
        } else if (i % 2) {
            zmq_curve_keypair(pub, sec);
        } else {
            memcpy(pub, kp->public_z85, sizeof pub);
            memcpy(sec, kp->secret_z85, sizeof sec);
        }
        void *sock = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, KEYS_Z85_LEN + 1);
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, KEYS_Z85_LEN + 1);
        zmq_connect(sock, endpoint);
        nanosleep(&pause, NULL);
        zmq_close(sock);
    }
    printf("hostile_client: %d connections opened and closed\n", count);
    return 0;
}

int main(int argc, char **argv)
{
    int flood_count = 0, poison_flip = -1, stranger = 0;
    double poison_scale = 0;
    if (argc == 5 && (strcmp(argv[1], "connflood") == 0 || strcmp(argv[1], "strangerloop") == 0)) {
        stranger = strcmp(argv[1], "strangerloop") == 0;
        flood_count = atoi(argv[2]);
        argv++;
        argc--;
    } else if (argc == 6 && strcmp(argv[1], "poison") == 0 &&
               (strcmp(argv[2], "flip") == 0 || strcmp(argv[2], "noise") == 0) && atof(argv[3]) > 0) {
        poison_flip = strcmp(argv[2], "flip") == 0;
        poison_scale = atof(argv[3]);
        argv[3] = argv[1];
        argv += 2;
        argc -= 2;
    } else if (argc != 4 || (strcmp(argv[1], "flood") != 0 && strcmp(argv[1], "overclaim") != 0 &&
                             strcmp(argv[1], "attack") != 0)) {
        fprintf(stderr, "usage: hostile_client flood|overclaim|attack ENDPOINT KIT_DIR\n"
                        "       hostile_client connflood|strangerloop N ENDPOINT KIT_DIR\n"
                        "       hostile_client poison flip|noise SCALE ENDPOINT KIT_DIR\n");
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
    void *ctx = zmq_ctx_new();
    if (flood_count > 0) {
        int rc = connflood(ctx, flood_count, endpoint, spk, kp, stranger);
        keys_pair_free(kp);
        zmq_ctx_term(ctx);
        return rc;
    }
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
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
    int rc = poison_flip >= 0                 ? poison(sock, poison_flip, poison_scale)
             : strcmp(argv[1], "attack") == 0 ? attack(sock)
                                              : overclaim(sock);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return rc;
}
