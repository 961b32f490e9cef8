/* server/sites.h against a peer that never reads (issue 12): sends to it never block; once its
 * queue is full it is dropped (on_disconnect, no longer connected); hellos it repeats on that
 * route are ignored; over a new connection it rejoins. A real ROUTER with CURVE and ZAP on
 * 127.0.0.1; an alarm fails the test if a send blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "crypto/keys.h"
#include "server/sites.h"

typedef struct owner {
    sites_t *sites;
    int hellos, registered, disconnects;
} owner_t;

static int on_message(void *o, wire_msg_t *msg)
{
    owner_t *w = o;
    if (strcmp(msg->type, "hello") != 0)
        return -1;
    w->hellos++;
    w->registered += sites_hello(w->sites, msg) != NULL;
    return 0;
}

static void on_disconnect(void *o, sites_site_t *site)
{
    (void)site;
    ((owner_t *)o)->disconnects++;
}

static void *connect_site(void *ctx, const char *dir, const char *endpoint, int hwm)
{
    char path[512], spk[KEYS_Z85_LEN + 1];
    err_t e;
    keys_pair_t *kp = keys_pair_new();
    snprintf(path, sizeof path, "%s/sites/slow/site.key", dir);
    assert_int_equal(keys_read_secret(path, kp, &e), 0);
    snprintf(path, sizeof path, "%s/server.pub", dir);
    assert_int_equal(keys_read_public(path, spk, &e), 0);
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    int rcvbuf = 4096, linger = 0;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVBUF, &rcvbuf, sizeof rcvbuf);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    keys_pair_free(kp);
    assert_int_equal(zmq_connect(sock, endpoint), 0);
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 10);
    assert_true(wire_send(sock, NULL, 0, h, NULL, 0, 0, &e) >= 0);
    json_decref(h);
    return sock;
}

static void pump_until(owner_t *w, int *counter, int want)
{
    for (int i = 0; i < 100 && *counter < want; i++)
        sites_pump(w->sites, 50);
    assert_int_equal(*counter, want);
}

/* Which sends' frames were released: by ZeroMQ once sent, or by wire_send when it could not
 * hand them over (the message that found the queue full). */
#define MAX_SENDS 100000
static volatile char released[MAX_SENDS];

static void mark_released(void *data, void *hint)
{
    (void)data;
    released[(intptr_t)hint] = 1;
}

static void test_slow_peer_dropped(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-sites-XXXXXX";
    assert_non_null(mkdtemp(dir));
    err_t e;
    assert_int_equal(keys_init_dir(dir, &e), 0);
    assert_int_equal(keys_add_site(dir, "slow", &e), 0);
    owner_t w = {0};
    sites_options_t so = {.keys_dir = dir, .role = "server", .noun = "site", .on_message = on_message,
                          .on_disconnect = on_disconnect, .owner = &w};
    assert_int_equal(sites_open(&so, &w.sites, &e), 0);
    assert_int_equal(sites_listen(w.sites, "tcp://127.0.0.1:*", 60, 0, 1, &e), 0);
    void *ctx = zmq_ctx_new();
    void *slow = connect_site(ctx, dir, sites_endpoint(w.sites), 1);
    pump_until(&w, &w.registered, 1);
    sites_site_t *site = sites_find(w.sites, "slow");
    assert_non_null(site);
    assert_true(site->connected);

    /* 256 KiB a message, shared (no copy per send): the peer's pipe and buffers fill. */
    static float model[65536];
    alarm(30); /* a blocking send would hang here: the alarm ends the test as failed */
    long long rc = 0;
    int sent = 0;
    for (; sent < MAX_SENDS; sent++) {
        wire_frame_t f = {.name = "model", .dtype = WIRE_F32, .data = model, .count = 65536,
                          .release = mark_released, .hint = (void *)(intptr_t)sent};
        if ((rc = sites_send(w.sites, site, 1, json_pack("{s:s}", "type", "train"), &f, 1)) < 0)
            break;
    }
    alarm(0);
    assert_int_equal(rc, FN_ETIMEOUT);
    assert_true(sent > 0 && sent < MAX_SENDS);
    assert_true(released[sent]); /* the refused message's frame is not leaked */
    assert_int_equal(w.disconnects, 1);
    assert_false(site->connected);
    assert_true(site->clogged);

    /* Hellos on the clogged route: read, and ignored. */
    json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 10);
    assert_true(wire_send(slow, NULL, 0, h, NULL, 0, 0, &e) >= 0);
    json_decref(h);
    pump_until(&w, &w.hellos, 2);
    assert_int_equal(w.registered, 1);
    assert_false(site->connected);

    /* A new connection is a new route: it rejoins. */
    void *again = connect_site(ctx, dir, sites_endpoint(w.sites), 1000);
    pump_until(&w, &w.registered, 2);
    site = sites_find(w.sites, "slow");
    assert_true(site->connected);
    assert_false(site->clogged);
    /* ... and a hello repeated on its (connected) route is ignored too. */
    h = json_pack("{s:s, s:i}", "type", "hello", "samples", 10);
    assert_true(wire_send(again, NULL, 0, h, NULL, 0, 0, &e) >= 0);
    json_decref(h);
    pump_until(&w, &w.hellos, 4);
    assert_int_equal(w.registered, 2);

    zmq_close(slow);
    zmq_close(again);
    zmq_ctx_term(ctx);
    sites_free(w.sites);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_peer_dropped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
