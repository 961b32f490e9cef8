/* The site loop (client/site.h) as simulated sites run it, against a stand-in server (a CURVE
 * ROUTER speaking the wire protocol): simulated sites register, rejoin after the server goes
 * away and comes back (a restart) or after it hung (transport heartbeats), stop with FN_EAUTH
 * when the server refuses their keys, as a client agent does, and give up on a silent server.
 * Also the link's own argument checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "client/client.h"
#include "common/link.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"

#define SITES 2
#define ROWS 40

typedef struct fixture {
    char dir[64], keys[PATH_MAX], kits[PATH_MAX], csv[PATH_MAX], endpoint[64];
    void *ctx, *router;
    volatile sig_atomic_t stop;
    client_options_t opt;
    pthread_t thread;
    int rc, denied;
    volatile int done;
    err_t err;
} fixture_t;

/* A ROUTER with the CURVE server key of keys_dir (with no ZAP handler in ctx every client key
 * passes). */
static void *server_socket(fixture_t *f, const char *keys_dir, const char *endpoint)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/server.key", keys_dir);
    keys_pair_t *kp = keys_pair_new();
    err_t e = {0};
    assert_int_equal(keys_read_secret(path, kp, &e), 0);
    void *s = zmq_socket(f->ctx, ZMQ_ROUTER);
    int one = 1, zero = 0;
    zmq_setsockopt(s, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    keys_pair_free(kp);
    /* A restarted server binds the port its predecessor just let go: retry for a while. */
    double until = fn_mono() + 5;
    while (zmq_bind(s, endpoint) != 0) {
        if (fn_mono() > until)
            fail_msg("cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        usleep(50000);
    }
    return s;
}

static void *run_sim(void *arg)
{
    fixture_t *f = arg;
    f->rc = client_simulate(&f->opt, f->kits, 0, SITES, &f->err);
    f->done = 1;
    return NULL;
}

static void setup(fixture_t *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/fednas-site-loop-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->keys, sizeof f->keys, "%s/keys", f->dir);
    snprintf(f->kits, sizeof f->kits, "%s/keys/sites", f->dir);
    snprintf(f->csv, sizeof f->csv, "%s/data.csv", f->dir);
    err_t e = {0};
    assert_int_equal(keys_init_dir(f->keys, &e), 0);
    for (int i = 1; i <= SITES; i++) {
        char name[16];
        snprintf(name, sizeof name, "site-%d", i);
        assert_int_equal(keys_add_site(f->keys, name, &e), 0);
    }
    FILE *csv = fopen(f->csv, "w");
    assert_non_null(csv);
    for (int i = 0; i < ROWS; i++)
        fprintf(csv, "%d,%d,%d\n", i % 7, i % 3, i % 2);
    fclose(csv);
    f->ctx = zmq_ctx_new();
    f->router = server_socket(f, f->keys, "tcp://127.0.0.1:*");
    size_t len = sizeof f->endpoint;
    zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->endpoint, &len);
    f->opt = (client_options_t){.link = {.endpoint = f->endpoint, .connect_timeout = 30, .idle_timeout = 60,
                                         .stop = &f->stop},
                                .data_dir = f->csv, .shards = SITES, .partition = CONFIG_PARTITION_IID,
                                .alpha = 0.5, .min_size = 1, .partition_seed = 1};
}

static void teardown(fixture_t *f)
{
    if (f->router)
        zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
}

/* Waits up to seconds for a hello from every site; answers each with a welcome. Returns how
 * many connections said hello: their routing ids in ids, their sample counts summed in
 * *samples. A second hello on a connection already counted here or in old[0..nold) (a
 * registration retry, not a rejoin) is answered but not counted. */
static int collect_hellos(fixture_t *f, double seconds, unsigned char ids[SITES][WIRE_MAX_IDENTITY],
                          size_t idlen[SITES], long long *samples, unsigned char old[SITES][WIRE_MAX_IDENTITY],
                          const size_t *oldlen, int nold)
{
    int got = 0;
    *samples = 0;
    double until = fn_mono() + seconds;
    while (got < SITES && fn_mono() < until) {
        zmq_pollitem_t it = {f->router, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        wire_msg_t m;
        err_t e = {0};
        if (wire_recv(f->router, 1, &m, ZMQ_DONTWAIT, &e) != 0)
            continue;
        int seen = 0;
        for (int i = 0; i < got; i++)
            seen |= idlen[i] == m.identity_len && memcmp(ids[i], m.identity, m.identity_len) == 0;
        for (int i = 0; i < nold; i++)
            seen |= oldlen[i] == m.identity_len && memcmp(old[i], m.identity, m.identity_len) == 0;
        if (strcmp(m.type, "hello") == 0 && seen) {
            json_t *w = json_pack("{s:s, s:i}", "type", "welcome", "run", 7);
            wire_send(f->router, m.identity, m.identity_len, w, NULL, 0, 0, &e);
            json_decref(w);
        } else if (strcmp(m.type, "hello") == 0) {
            memcpy(ids[got], m.identity, m.identity_len);
            idlen[got] = m.identity_len;
            *samples += wire_get_int(&m, "samples", -1000);
            json_t *w = json_pack("{s:s, s:i, s:i}", "type", "welcome", "run", 7, "client_id", got + 1);
            assert_true(wire_send(f->router, m.identity, m.identity_len, w, NULL, 0, 0, &e) >= 0);
            json_decref(w);
            got++;
        }
        wire_msg_close(&m);
    }
    return got;
}

/* Old simulation workers queued one hello per site and never spoke again: a server restart
 * lost them for good. Sites on the shared loop notice the drop (the socket monitor) and rejoin. */
static void test_simulated_sites_rejoin_a_restarted_server(void **state)
{
    (void)state;
    fixture_t f;
    setup(&f);
    assert_int_equal(pthread_create(&f.thread, NULL, run_sim, &f), 0);
    unsigned char ids[SITES][WIRE_MAX_IDENTITY];
    size_t idlen[SITES];
    long long samples;
    int first = collect_hellos(&f, 20, ids, idlen, &samples, NULL, NULL, 0);
    int rejoined = 0;
    long long again = 0;
    if (first == SITES) {
        /* The server goes away (its connections drop) and a new one binds the same port. */
        zmq_close(f.router);
        usleep(200000);
        f.router = server_socket(&f, f.keys, f.endpoint);
        rejoined = collect_hellos(&f, 20, ids, idlen, &again, NULL, NULL, 0); /* a new server: all new */
        for (int i = 0; i < rejoined; i++) {
            err_t e = {0};
            json_t *end = json_pack("{s:s, s:s}", "type", "end", "reason", "test over");
            assert_true(wire_send(f.router, ids[i], idlen[i], end, NULL, 0, 0, &e) >= 0);
            json_decref(end);
        }
    }
    if (first != SITES || rejoined != SITES)
        f.stop = 1; /* end the worker however it behaves, then report */
    pthread_join(f.thread, NULL);
    teardown(&f);
    assert_int_equal(first, SITES);
    assert_int_equal(samples, ROWS); /* each site said hello with its own shard */
    assert_int_equal(rejoined, SITES);
    assert_int_equal(again, ROWS);
    assert_int_equal(f.rc, 0);
}

/* Answers every ZAP request with "400 denied": a server whose allow-list lacks the sites. */
static void deny_until_done(fixture_t *f, void *zap)
{
    while (!f->done) {
        zmq_pollitem_t it = {zap, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        /* Request: version, request id, domain, address, routing id, mechanism, credentials. */
        char frames[8][64];
        size_t lens[8];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            assert_true(zmq_msg_recv(&m, zap, 0) >= 0);
            if (n < 8) {
                lens[n] = zmq_msg_size(&m) < 64 ? zmq_msg_size(&m) : 64;
                memcpy(frames[n], zmq_msg_data(&m), lens[n]);
                n++;
            }
            more = zmq_msg_more(&m);
            zmq_msg_close(&m);
        }
        assert_true(n >= 2);
        zmq_send(zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(zap, frames[1], lens[1], ZMQ_SNDMORE);
        zmq_send(zap, "400", 3, ZMQ_SNDMORE);
        zmq_send(zap, "denied", 6, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, ZMQ_SNDMORE);
        zmq_send(zap, "", 0, 0);
        f->denied++;
    }
}

/* Sites whose keys the server refuses: the monitor sees the refused CURVE handshake and the
 * worker stops with FN_EAUTH at once, as an agent does; the old simulation worker saw nothing
 * and waited out its idle timeout (20 s here). */
static void test_refused_simulated_sites_fail_fast(void **state)
{
    (void)state;
    fixture_t f;
    setup(&f);
    /* The ZAP handler must exist before the server socket takes connections. */
    void *zap = zmq_socket(f.ctx, ZMQ_REP);
    assert_int_equal(zmq_bind(zap, "inproc://zeromq.zap.01"), 0);
    zmq_close(f.router);
    usleep(100000);
    f.router = server_socket(&f, f.keys, f.endpoint);
    f.opt.link.idle_timeout = 20;
    double t0 = fn_mono();
    assert_int_equal(pthread_create(&f.thread, NULL, run_sim, &f), 0);
    deny_until_done(&f, zap);
    pthread_join(f.thread, NULL);
    double took = fn_mono() - t0;
    zmq_close(zap);
    teardown(&f);
    assert_true(f.denied >= 1);
    assert_int_equal(f.rc, FN_EAUTH);
    assert_non_null(strstr(f.err.msg, "refused this site's key"));
    assert_true(took < 10);
}

/* The stand-in server as its own process, so the test can freeze it: binds, writes its endpoint
 * on fd, welcomes every site, writes one byte, then (once continued) waits for every site to say
 * hello again on a new connection and ends the run. Its exit status: 0 when they did. */
static void frozen_server_child(fixture_t *f, int fd)
{
    f->ctx = zmq_ctx_new();
    f->router = server_socket(f, f->keys, "tcp://127.0.0.1:*");
    size_t len = sizeof f->endpoint;
    zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->endpoint, &len);
    if (write(fd, f->endpoint, sizeof f->endpoint) != (ssize_t)sizeof f->endpoint)
        _exit(3);
    unsigned char ids[SITES][WIRE_MAX_IDENTITY];
    size_t idlen[SITES];
    long long samples;
    if (collect_hellos(f, 30, ids, idlen, &samples, NULL, NULL, 0) != SITES)
        _exit(2);
    usleep(300000); /* let the I/O thread deliver the welcomes before the parent freezes us */
    if (write(fd, "r", 1) != 1)
        _exit(2);
    unsigned char ids2[SITES][WIRE_MAX_IDENTITY];
    size_t idlen2[SITES];
    int again = collect_hellos(f, 60, ids2, idlen2, &samples, ids, idlen, SITES);
    for (int i = 0; i < again; i++) {
        err_t e = {0};
        json_t *end = json_pack("{s:s, s:s}", "type", "end", "reason", "test over");
        wire_send(f->router, ids2[i], idlen2[i], end, NULL, 0, 0, &e);
        json_decref(end);
    }
    int linger = 5000; /* the "end"s must leave before this process does */
    zmq_setsockopt(f->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(f->router);
    zmq_ctx_term(f->ctx);
    _exit(again == SITES ? 0 : 1);
}

/* A server that hangs without closing its connections (here: stopped with SIGSTOP) answers no
 * transport heartbeat: after the heartbeat timeout (2 s here, 15 s by default) the sites drop
 * the connection, reconnect and, once the server runs again, rejoin. The old simulation worker
 * had no heartbeats: it would sit on the dead connection and never say hello again. */
static void test_simulated_sites_heartbeat_a_hung_server(void **state)
{
    (void)state;
    fixture_t f;
    setup(&f);
    f.opt.link.heartbeat = 0.5;
    f.opt.link.heartbeat_timeout = 2;
    zmq_close(f.router); /* the child serves; nothing of ZeroMQ crosses the fork */
    f.router = NULL;
    zmq_ctx_term(f.ctx);
    f.ctx = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(fds[0]);
        frozen_server_child(&f, fds[1]);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], f.endpoint, sizeof f.endpoint), (ssize_t)sizeof f.endpoint);
    assert_int_equal(pthread_create(&f.thread, NULL, run_sim, &f), 0);
    char ok = 0;
    ssize_t got = read(fds[0], &ok, 1);
    if (got == 1) {
        kill(child, SIGSTOP);
        /* Past the sites' heartbeat timeout: a ping every 0.5 s, the link dropped 2 s after one
         * goes unanswered, so at most 2.5 s after the last traffic (more leeway on a busy machine). */
        sleep(6);
        kill(child, SIGCONT);
    }
    int status = -1;
    waitpid(child, &status, 0);
    close(fds[0]);
    /* The child exits once its "end"s are queued; the sites may read them a moment later. */
    int ended = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    for (double until = fn_mono() + 10; ended && !f.done && fn_mono() < until;)
        usleep(20000);
    if (!f.done) /* the child is gone: end the worker however it behaves */
        f.stop = 1;
    pthread_join(f.thread, NULL);
    f.ctx = zmq_ctx_new();
    teardown(&f);
    assert_int_equal(got, 1);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0); /* every site said hello again */
    assert_int_equal(f.rc, 0);
}

/* The idle timeout measures the server's silence towards the worker: one site hearing from it
 * keeps the others (left out of rounds) from giving up; silence towards all ends the worker. */
static void test_idle_timeout_is_the_servers_silence(void **state)
{
    (void)state;
    fixture_t f;
    setup(&f);
    f.opt.link.idle_timeout = 2;
    assert_int_equal(pthread_create(&f.thread, NULL, run_sim, &f), 0);
    unsigned char ids[SITES][WIRE_MAX_IDENTITY];
    size_t idlen[SITES];
    long long samples;
    int got = collect_hellos(&f, 20, ids, idlen, &samples, NULL, NULL, 0);
    /* 5 s of welcomes (harmless repeats) to site 1 only, site 2 hearing nothing. */
    double until = fn_mono() + 5, quiet_from;
    while (got == SITES && fn_mono() < until && !f.done) {
        err_t e = {0};
        json_t *w = json_pack("{s:s, s:i}", "type", "welcome", "run", 7);
        wire_send(f.router, ids[0], idlen[0], w, NULL, 0, 0, &e);
        json_decref(w);
        usleep(200000);
    }
    int alive = !f.done;
    quiet_from = fn_mono();
    while (!f.done && fn_mono() < quiet_from + 10)
        usleep(50000);
    double gave_up_after = fn_mono() - quiet_from;
    if (!f.done)
        f.stop = 1;
    pthread_join(f.thread, NULL);
    teardown(&f);
    assert_int_equal(got, SITES);
    assert_true(alive);
    assert_int_equal(f.rc, FN_ETIMEOUT);
    assert_non_null(strstr(f.err.msg, "silent for 2 s"));
    assert_true(gave_up_after < 8);
}

static void test_link_rejects_bad_keys(void **state)
{
    (void)state;
    link_options_t o = {.endpoint = "tcp://127.0.0.1:1", .connect_timeout = 1};
    link_keys_t k = {.public_z85 = "short", .secret_z85 = "short", .server_z85 = "short"};
    link_t *l = (link_t *)&o;
    err_t e = {0};
    assert_int_equal(link_open(&o, &k, &l, &e), FN_EINVAL);
    assert_null(l);
    assert_non_null(strstr(e.msg, "Z85"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simulated_sites_rejoin_a_restarted_server),
        cmocka_unit_test(test_refused_simulated_sites_fail_fast),
        cmocka_unit_test(test_simulated_sites_heartbeat_a_hung_server),
        cmocka_unit_test(test_idle_timeout_is_the_servers_silence),
        cmocka_unit_test(test_link_rejects_bad_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
