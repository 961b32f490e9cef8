/* A misbehaving client agent for the fault tests. It holds an allowed key and speaks the real
 * protocol, then does what a broken or hostile site would:
 *   bad-updates  each round: a replay for the previous round, an update of the wrong size, one
 *                with a NaN, one claiming another run, and finally a valid (zero) update
 *   die-in N     receives round N's model and exits without answering (a crash mid-round)
 *   sa VALUE SAMPLES ACTION R
 *                secure aggregation through the real client code (client/secagg_site.h): every
 *                round its update is VALUE in every coordinate (a known input, so the test can
 *                compute the expected mean); SAMPLES is the count it claims. In round R it does
 *                ACTION: die-before (exit on the model), die-after-advert, die-after-shares,
 *                die-after-masked (exit right after sending that message), mute-shares (stay
 *                connected but ignore the first sa_keys of round R), garble-shares (flip a bit in
 *                every share ciphertext it sends in round R), or none. With FAULT_DUMP set
 *                it writes each model it receives to $FAULT_DUMP/rROUND.f32.
 *   check A B EXPECTED SELECTED SUMMED CLIP BITS
 *                not a client: checks that every coordinate of the float32 files B - A equals
 *                EXPECTED within the documented encoding error (SELECTED / f per coordinate of the
 *                sum, f = secagg_choose_scale(SELECTED, CLIP, BITS), divided by SUMMED) plus
 *                float32 rounding of the parameters.
 * Usage: fault_client MODE [ARGS] ENDPOINT KIT_DIR */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <math.h>
#include <zmq.h>

#include <float.h>

#include "client/secagg_site.h"
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

static float *read_f32(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *v = malloc((size_t)len + 4);
    *n = fread(v, 1, (size_t)len, f) / sizeof(float);
    fclose(f);
    return v;
}

static int check(char **argv)
{
    size_t na, nb;
    float *a = read_f32(argv[2], &na), *b = read_f32(argv[3], &nb);
    double want = atof(argv[4]), sel = atof(argv[5]), summed = atof(argv[6]), clip = atof(argv[7]);
    if (!a || !b || na != nb || na == 0) {
        fprintf(stderr, "check: cannot read %s and %s as float32 vectors of one length\n", argv[2], argv[3]);
        free(a);
        free(b);
        return 1;
    }
    double f = secagg_choose_scale((uint32_t)sel, clip, (uint32_t)atoi(argv[8]));
    double worst = 0, bound = 0;
    for (size_t i = 0; i < na; i++) {
        double d = fabs((double)b[i] - a[i] - want);
        /* encoding error of the mean, then float32 rounding of the mean and of w += mean */
        double tol = sel / f / summed + 2 * FLT_EPSILON * (fabs(b[i]) + fabs(want));
        if (d / tol > (bound > 0 ? worst / bound : 0)) {
            worst = d;
            bound = tol;
        }
        if (d > tol) {
            fprintf(stderr, "check: coordinate %zu moved by %.9g, expected %.9g (error %.3g > bound %.3g)\n", i,
                    (double)b[i] - a[i], want, d, tol);
            free(a);
            free(b);
            return 1;
        }
    }
    printf("max error %.3g within bound %.3g (%zu coordinates, f = %.6g)\n", worst, bound, na, f);
    free(a);
    free(b);
    return 0;
}

static void send_sa(void *sock, const char *type, long long run, long long round, uint64_t rid, const secagg_buf_t *b,
                    int samples)
{
    err_t e;
    json_t *h = json_pack("{s:s, s:I, s:I, s:I}", "type", type, "run", run, "round", round, "sa_round", (json_int_t)rid);
    if (samples) {
        json_object_set_new(h, "samples", json_integer(samples));
        json_object_set_new(h, "loss", json_real(1.0));
        json_object_set_new(h, "accuracy", json_real(0.5));
    }
    wire_frame_t f = {.name = "secagg", .dtype = WIRE_U8, .data = b->data, .count = b->len};
    if (wire_send(sock, NULL, 0, h, &f, 1, 0, &e) < 0)
        fprintf(stderr, "fault_client: %s\n", e.msg);
    json_decref(h);
}

int main(int argc, char **argv)
{
    if (argc >= 9 && strcmp(argv[1], "check") == 0)
        return check(argv);
    if (argc < 4) {
        fprintf(stderr, "usage: fault_client bad-updates|die-in N|sa VALUE SAMPLES ACTION R ENDPOINT KIT\n");
        return 2;
    }
    int die_in = 0, a = 2, sa = 0, sa_samples = 0, sa_round = 0;
    float sa_value = 0;
    const char *action = "none";
    if (strcmp(argv[1], "die-in") == 0)
        die_in = atoi(argv[a++]);
    if (strcmp(argv[1], "sa") == 0 && argc >= 8) {
        sa = 1;
        sa_value = (float)atof(argv[a++]);
        sa_samples = atoi(argv[a++]);
        action = argv[a++];
        sa_round = atoi(argv[a++]);
    }
    secagg_site_t *st = NULL;
    int muted = 0;
    long long run = -1, cur_round = -1;
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
        if (sa && strncmp(m.type, "sa_", 3) == 0) {
            size_t len = 0;
            const uint8_t *d = wire_frame_data(&m, 0, WIRE_U8, &len);
            const char *type = NULL;
            secagg_buf_t out = {0};
            int hit = cur_round == sa_round, rc = 0;
            if (st && d && hit && strcmp(action, "mute-shares") == 0 && strcmp(m.type, "sa_keys") == 0 && !muted) {
                muted = 1;
                fprintf(stderr, "fault_client: ignoring sa_keys in round %lld\n", cur_round);
            } else if (!st || !d || (rc = secagg_site_step(st, m.type, d, len, &type, &out, &e)) < 0) {
                fprintf(stderr, "fault_client: %s dropped: %s\n", m.type, st && d ? e.msg : "no round");
                if (rc == FN_EAUTH && type) { /* garbage shares: name their senders, as client.c does */
                    fprintf(stderr, "fault_client: sending %s in round %lld\n", type, cur_round);
                    send_sa(sock, type, run, cur_round, secagg_site_round_id(st), &out, 0);
                }
                secagg_buf_free(&out);
            } else {
                if (hit && strcmp(action, "garble-shares") == 0 && strcmp(type, "sa_shares") == 0) {
                    /* one bit off in every ciphertext: none will authenticate */
                    for (size_t off = SECAGG_HEADER_LEN + 4; off + 4 + SECAGG_NONCE_LEN < out.len;
                         off += 4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN)
                        out.data[off + 4 + SECAGG_NONCE_LEN + 7] ^= 0x20;
                    fprintf(stderr, "fault_client: garbled its share ciphertexts in round %lld\n", cur_round);
                }
                send_sa(sock, type, run, cur_round, secagg_site_round_id(st), &out, 0);
                secagg_buf_free(&out);
                if (hit && ((strcmp(action, "die-after-shares") == 0 && strcmp(type, "sa_shares") == 0) ||
                            (strcmp(action, "die-after-masked") == 0 && strcmp(type, "sa_masked") == 0))) {
                    fprintf(stderr, "fault_client: exiting after %s in round %lld\n", type, cur_round);
                    zmq_close(sock); /* linger: the message leaves before the process does */
                    zmq_ctx_term(ctx);
                    _exit(0);
                }
            }
            wire_msg_close(&m);
            continue;
        }
        if (strcmp(m.type, "train") != 0) {
            wire_msg_close(&m);
            continue;
        }
        run = wire_get_int(&m, "run", -1);
        long long round = wire_get_int(&m, "round", -1);
        size_t n = 0;
        const float *model = wire_frame_data(&m, 0, WIRE_F32, &n);
        if (sa) {
            cur_round = round;
            const char *dump = getenv("FAULT_DUMP");
            if (dump && model) {
                char p[1100];
                snprintf(p, sizeof p, "%s/r%lld.f32", dump, round);
                FILE *f = fopen(p, "wb");
                if (f) {
                    fwrite(model, sizeof *model, n, f);
                    fclose(f);
                }
            }
            if (round == sa_round && strcmp(action, "die-before") == 0) {
                fprintf(stderr, "fault_client: dying before the advert in round %lld\n", round);
                _exit(0);
            }
            const json_t *info = json_object_get(m.header, "secagg");
            float *v = malloc((n ? n : 1) * sizeof *v);
            for (size_t i = 0; i < n; i++)
                v[i] = sa_value;
            secagg_buf_t adv = {0};
            secagg_site_free(st);
            st = NULL;
            if (!info || secagg_site_begin(info, v, n, &st, &adv, &e) < 0)
                fprintf(stderr, "fault_client: cannot start secure aggregation: %s\n", info ? e.msg : "no secagg");
            else
                send_sa(sock, "sa_advert", run, round, secagg_site_round_id(st), &adv, sa_samples);
            secagg_buf_free(&adv);
            free(v);
            wire_msg_close(&m);
            if (st && round == sa_round && strcmp(action, "die-after-advert") == 0) {
                fprintf(stderr, "fault_client: exiting after sa_advert in round %lld\n", round);
                zmq_close(sock);
                zmq_ctx_term(ctx);
                _exit(0);
            }
            continue;
        }
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
    secagg_site_free(st);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    keys_pair_free(kp);
    return 0;
}
