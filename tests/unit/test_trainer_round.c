/* A site answers each round once: the same train message (same server instance, run and round)
 * delivered twice, as after a reconnect with the first copy unread, is trained and answered
 * once; the same round from a new server instance (a resumed server) is trained again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "client/trainer.h"
#include "common/wire.h"

enum { SAMPLES = 40, SIDE = 4, PARAMS = SIDE * SIDE * 2 + 2 }; /* softmax over 16 pixels, 2 classes */

/* Sends a train message for (instance, run, round) on `out` and receives it on `in`. */
static void train_msg(void *out, void *in, long long instance, long long run, long long round, wire_msg_t *msg)
{
    static float model[PARAMS];
    json_t *hdr = json_pack("{s:s, s:I, s:I, s:I, s:i, s:i, s:{s:s}, s:{s:i, s:i, s:f}}", "type", "train", "run",
                            (json_int_t)run, "round", (json_int_t)round, "seed", (json_int_t)7, "input_dim",
                            SIDE * SIDE, "num_classes", 2, "arch", "type", "softmax", "train", "epochs", 1,
                            "batch_size", 10, "lr", 0.1);
    if (instance > 0)
        json_object_set_new(hdr, "instance", json_integer(instance));
    wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = model, .count = PARAMS};
    err_t e = {0};
    assert_true(wire_send(out, NULL, 0, hdr, &f, 1, 0, &e) > 0);
    json_decref(hdr);
    assert_int_equal(wire_recv(in, 0, msg, 0, &e), 0);
}

/* How many updates are waiting on `in` (each is drained). */
static int updates_waiting(void *in)
{
    int n = 0;
    wire_msg_t m;
    err_t e = {0};
    while (wire_recv(in, 0, &m, ZMQ_DONTWAIT, &e) == 0) {
        assert_string_equal(m.type, "update");
        wire_msg_close(&m);
        n++;
    }
    return n;
}

static void test_each_round_answered_once(void **state)
{
    (void)state;
    void *ctx = zmq_ctx_new();
    void *server = zmq_socket(ctx, ZMQ_PAIR), *site = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(server, "inproc://trainer-round"), 0);
    assert_int_equal(zmq_connect(site, "inproc://trainer-round"), 0);
    engine_dataset_t d = {.count = SAMPLES, .rows = SIDE, .cols = SIDE, .num_classes = 2};
    d.images = calloc(SAMPLES * SIDE * SIDE, 1);
    d.labels = calloc(SAMPLES, 1);
    for (int i = 0; i < SAMPLES; i++) {
        d.labels[i] = (uint8_t)(i & 1);
        d.images[i * SIDE * SIDE + (i & 1)] = 255;
    }
    int idx[SAMPLES];
    for (int i = 0; i < SAMPLES; i++)
        idx[i] = i;
    trainer_t t = {0};
    trainer_feedback_t fb = {0};
    err_t e = {0};
    wire_msg_t msg;
    struct {
        long long instance, run, round;
        int answered;
    } steps[] = {
        {11, 1, 1, 1}, /* round 1 */
        {11, 1, 1, 0}, /* the same message again: not trained twice */
        {11, 1, 2, 1}, /* the next round */
        {12, 1, 2, 1}, /* round 2 from a resumed server (a new instance): trained again */
        {12, 2, 2, 1}, /* another run */
        {0, 2, 2, 1},  /* no instance sent (an older server): never taken for a copy */
        {0, 2, 2, 1},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        train_msg(server, site, steps[i].instance, steps[i].run, steps[i].round, &msg);
        assert_int_equal(trainer_round(&t, &d, idx, SAMPLES, site, steps[i].run, &msg, &fb, &e), 0);
        wire_msg_close(&msg);
        if (updates_waiting(server) != steps[i].answered)
            fail_msg("step %zu (instance %lld, run %lld, round %lld): expected %d update(s)", i, steps[i].instance,
                     steps[i].run, steps[i].round, steps[i].answered);
    }
    trainer_free(&t);
    trainer_feedback_free(&fb);
    engine_dataset_free(&d);
    zmq_close(server);
    zmq_close(site);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_each_round_answered_once)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
