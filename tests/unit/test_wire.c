/* Wire messages: what is declared is what arrives; anything else is refused without
 * desynchronising the socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/wire.h"

static void *g_ctx, *g_a, *g_b;

static int setup(void **state)
{
    g_ctx = zmq_ctx_new();
    g_a = zmq_socket(g_ctx, ZMQ_PAIR);
    g_b = zmq_socket(g_ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(g_a, "inproc://wire-test"), 0);
    assert_int_equal(zmq_connect(g_b, "inproc://wire-test"), 0);
    return 0;
}

static int teardown(void **state)
{
    zmq_close(g_a);
    zmq_close(g_b);
    zmq_ctx_term(g_ctx);
    return 0;
}

static void send_valid(void)
{
    float v[5] = {1, 2, 3, 4, 5};
    uint8_t u[3] = {7, 8, 9};
    wire_frame_t f[2] = {{.name = "v", .dtype = WIRE_F32, .data = v, .count = 5}, {.name = "u", .dtype = WIRE_U8, .data = u, .count = 3}};
    err_t e = {0};
    json_t *h = json_pack("{s:s, s:i}", "type", "update", "round", 4);
    long long n = wire_send(g_a, NULL, 0, h, f, 2, 0, &e);
    json_decref(h);
    assert_true(n > 23);
}

static void expect_valid(void)
{
    wire_msg_t m;
    err_t e = {0};
    assert_int_equal(wire_recv(g_b, 0, &m, 0, &e), 0);
    assert_string_equal(m.type, "update");
    assert_int_equal(wire_get_int(&m, "round", -1), 4);
    size_t n;
    const float *v = wire_frame_data(&m, 0, WIRE_F32, &n);
    assert_non_null(v);
    assert_int_equal(n, 5);
    assert_true(v[4] == 5.0f);
    assert_null(wire_frame_data(&m, 1, WIRE_F32, &n)); /* wrong dtype asked */
    const uint8_t *u = wire_frame_data(&m, 1, WIRE_U8, &n);
    assert_int_equal(n, 3);
    assert_int_equal(u[2], 9);
    assert_null(wire_frame_data(&m, 2, WIRE_U8, &n));
    wire_msg_close(&m);
}

static void test_round_trip(void **state)
{
    send_valid();
    expect_valid();
}

/* Sends raw frames, then a valid message: the bad one is refused, the good one still arrives. */
static void expect_refused(const char *header, const void *frame, size_t frame_len, int extra_frame,
                           const char *fragment)
{
    zmq_send(g_a, header, strlen(header), frame ? ZMQ_SNDMORE : 0);
    if (frame)
        zmq_send(g_a, frame, frame_len, extra_frame ? ZMQ_SNDMORE : 0);
    if (extra_frame)
        zmq_send(g_a, "x", 1, 0);
    send_valid();
    wire_msg_t m;
    err_t e = {0};
    assert_int_equal(wire_recv(g_b, 0, &m, 0, &e), FN_EPROTO);
    if (!strstr(e.msg, fragment))
        fail_msg("\"%s\" lacks \"%s\"", e.msg, fragment);
    expect_valid();
}

static void test_bad_messages_refused_and_socket_stays_in_step(void **state)
{
    float v[4] = {0};
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f32\",\"count\":5}]}", v, sizeof v, 0,
                   "holds 16 bytes");
    expect_refused("{\"v\":2,\"type\":\"u\"}", NULL, 0, 0, "version");
    expect_refused("not json", NULL, 0, 0, "not a JSON object");
    expect_refused("{\"v\":1}", NULL, 0, 0, "no \"type\"");
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f64\",\"count\":1}]}", v, 8, 0, "bad dtype");
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f32\",\"count\":-1}]}", v, 4, 0, "bad dtype");
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f32\",\"count\":1},{\"dtype\":\"f32\",\"count\":1}]}", v,
                   4, 0, "declares 2 frames but carries 1");
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f32\",\"count\":1}]}", v, 4, 1, "more frames");
    expect_refused("{\"v\":1,\"type\":\"u\",\"frames\":[{\"dtype\":\"f32\",\"count\":4611686018427387904}]}", v, 4, 0,
                   "holds 4 bytes");
}

static void test_nothing_waiting(void **state)
{
    wire_msg_t m;
    err_t e = {0};
    assert_int_equal(wire_recv(g_b, 0, &m, ZMQ_DONTWAIT, &e), FN_ETIMEOUT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_messages_refused_and_socket_stays_in_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nothing_waiting, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
