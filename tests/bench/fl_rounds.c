/* fl_rounds: the cost of a federated round itself, without local training. A real server
 * (CURVE, ZAP, the round state machine, FedAvg, the run store) runs in one thread; virtual
 * clients, each with its own key pair and DEALER socket, answer every "train" at once with a
 * zero update, from two threads. Prints round times and bytes per client against the model. */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "common/config.h"
#include "common/log.h"
#include "common/store.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"
#include "server/server.h"

typedef struct {
    const char *keys_dir, *endpoint;
    int first, count; /* sites first+1 .. first+count */
    size_t m;
} clients_arg_t;

static void *clients_main(void *p)
{
    clients_arg_t *a = p;
    void *ctx = zmq_ctx_new();
    void **socks = calloc((size_t)a->count, sizeof *socks);
    zmq_pollitem_t *items = calloc((size_t)a->count, sizeof *items);
    float *zero = calloc(a->m, sizeof *zero);
    char spk[KEYS_Z85_LEN + 1], path[PATH_MAX];
    err_t e;
    snprintf(path, sizeof path, "%s/server.pub", a->keys_dir);
    keys_read_public(path, spk, &e);
    keys_pair_t *kp = keys_pair_new();
    for (int i = 0; i < a->count; i++) {
        snprintf(path, sizeof path, "%s/sites/site-%d/site.key", a->keys_dir, a->first + i + 1);
        if (keys_read_secret(path, kp, &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            exit(1);
        }
        socks[i] = zmq_socket(ctx, ZMQ_DEALER);
        zmq_setsockopt(socks[i], ZMQ_CURVE_SERVERKEY, spk, KEYS_Z85_LEN + 1);
        zmq_setsockopt(socks[i], ZMQ_CURVE_PUBLICKEY, kp->public_z85, KEYS_Z85_LEN + 1);
        zmq_setsockopt(socks[i], ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
        zmq_connect(socks[i], a->endpoint);
        json_t *h = json_pack("{s:s, s:i}", "type", "hello", "samples", 600);
        wire_send(socks[i], NULL, 0, h, NULL, 0, 0, &e);
        json_decref(h);
        items[i] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
    }
    keys_pair_free(kp);
    int ended = 0;
    while (ended < a->count) {
        if (zmq_poll(items, a->count, 1000) < 0)
            break;
        for (int i = 0; i < a->count; i++) {
            if (!(items[i].revents & ZMQ_POLLIN))
                continue;
            wire_msg_t m;
            if (wire_recv(socks[i], 0, &m, ZMQ_DONTWAIT, &e) < 0)
                continue;
            if (strcmp(m.type, "train") == 0) {
                json_t *h = json_pack("{s:s, s:I, s:I, s:i, s:f, s:f}", "type", "update", "run",
                                      wire_get_int(&m, "run", 0), "round", wire_get_int(&m, "round", 0), "samples", 600,
                                      "loss", 0.0, "accuracy", 0.0);
                wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = zero, .count = a->m};
                wire_send(socks[i], NULL, 0, h, &f, 1, 0, &e);
                json_decref(h);
            } else if (strcmp(m.type, "end") == 0) {
                ended++;
            }
            wire_msg_close(&m);
        }
    }
    for (int i = 0; i < a->count; i++)
        zmq_close(socks[i]);
    zmq_ctx_term(ctx);
    free(socks);
    free(items);
    free(zero);
    return NULL;
}

typedef struct {
    server_t *server;
    server_summary_t sum;
    int rc;
    err_t err;
} server_arg_t;

static void *server_main(void *p)
{
    server_arg_t *a = p;
    a->rc = server_run(a->server, &a->sum, &a->err);
    return NULL;
}

/* Runs `rounds` rounds with n virtual clients and a model of the given hidden width; prints a row. */
static int bench(const char *label, int n, int hidden, int rounds, double target_s)
{
    char dir[] = "/tmp/fednas-bench-XXXXXX", keys[PATH_MAX], db[PATH_MAX], cfg_text[1024];
    if (!mkdtemp(dir))
        return 1;
    snprintf(keys, sizeof keys, "%s/keys", dir);
    snprintf(db, sizeof db, "%s/b.db", dir);
    err_t e = {0};
    if (keys_init_dir(keys, &e) < 0)
        goto fail;
    for (int i = 1; i <= n; i++) {
        char name[32];
        snprintf(name, sizeof name, "site-%d", i);
        if (keys_add_site(keys, name, &e) < 0)
            goto fail;
    }
    snprintf(cfg_text, sizeof cfg_text,
             "{\"name\": \"bench\", \"rounds\": %d, \"data\": {}, \"model\": {\"type\": \"mlp\", \"hidden\": [%d]},"
             " \"clients\": {\"count\": %d}, \"train\": {\"lr\": 0.1},"
             " \"server\": {\"evaluate_every\": 0, \"register_timeout\": 300, \"round_timeout\": 300}}",
             rounds, hidden, n);
    config_t *cfg;
    store_t *store;
    int64_t exp, run;
    if (config_load_string(cfg_text, "bench", &cfg, &e) < 0 || store_open(db, 0, &store, &e) < 0 ||
        store_experiment_create(store, "bench", cfg_text, &exp, &e) < 0 ||
        store_run_create(store, exp, rounds, n, 1, NULL, &run, &e) < 0)
        goto fail;
    server_options_t so = {.cfg = cfg, .bind = "tcp://127.0.0.1:*", .keys_dir = keys, .store = store,
                           .run_id = run, .quiet = 1};
    server_arg_t sa = {0};
    if (server_create(&so, &sa.server, &e) < 0)
        goto fail;
    int nthreads = 2;
    pthread_t th[2], st;
    clients_arg_t ca[2];
    size_t m = (size_t)784 * hidden + hidden + (size_t)hidden * 10 + 10;
    for (int t = 0; t < nthreads; t++) {
        ca[t] = (clients_arg_t){keys, server_endpoint(sa.server), t * n / nthreads,
                                (t + 1) * n / nthreads - t * n / nthreads, m};
        pthread_create(&th[t], NULL, clients_main, &ca[t]);
    }
    pthread_create(&st, NULL, server_main, &sa);
    pthread_join(st, NULL);
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    if (sa.rc < 0) {
        e = sa.err;
        goto fail;
    }
    json_t *rows;
    if (store_rounds_json(store, run, 0, &rows, &e) < 0)
        goto fail;
    /* The first round includes connection set-up on every client; report the rest. */
    double sum = 0, worst = 0;
    long long down = 0, up = 0;
    int k = 0;
    size_t i;
    json_t *r;
    json_array_foreach(rows, i, r)
    {
        if (i == 0)
            continue;
        double d = json_real_value(json_object_get(r, "duration"));
        sum += d;
        worst = d > worst ? d : worst;
        down += json_integer_value(json_object_get(r, "bytes_down"));
        up += json_integer_value(json_object_get(r, "bytes_up"));
        k++;
    }
    json_decref(rows);
    double model_bytes = 4.0 * (double)m;
    printf("| %-34s | %5d | %9zu | %7.3f | %7.3f | %6.1f | %10.4f | %10.4f |\n", label, n, m, sum / k, worst, target_s,
           down / (double)k / n / model_bytes, up / (double)k / n / model_bytes);
    server_free(sa.server);
    store_close(store);
    config_free(cfg);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return 0;
fail:
    fprintf(stderr, "fl_rounds: %s\n", e.msg);
    return 1;
}

int main(int argc, char **argv)
{
    /* `fl_rounds large` or `fl_rounds many` runs one case (for profiling). */
    const char *only = argc > 1 ? argv[1] : "";
    log_set_level(LOG_WARN);
    printf("fl_rounds: federated round overhead on 127.0.0.1 (CURVE on), no local training; virtual clients\n");
    printf("answer at once from 2 threads in this process. Times exclude round 1 (connection set-up).\n");
    printf("Bytes are per client per round, as a multiple of the model's size (4 bytes a parameter).\n\n");
    printf("| %-34s | %5s | %9s | %7s | %7s | %6s | %10s | %10s |\n", "case", "n", "params", "mean s", "max s",
           "target", "down/model", "up/model");
    printf("|------------------------------------|-------|-----------|---------|---------|--------|------------|------------|\n");
    int rc = 0;
    if (strcmp(only, "many") != 0)
        rc |= bench("100 clients, 1.67M-parameter MLP", 100, 2100, 4, 2.0);
    if (strcmp(only, "large") != 0)
        rc |= bench("1000 clients, 100k-parameter MLP", 1000, 128, 3, 2.0);
    printf("\ntargets (issue 4): round <= 2 s for both; bytes per direction <= 1.05 x the model\n");
    return rc;
}
