#include "server/server.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/util.h"
#include "common/wire.h"
#include "crypto/keys.h"
#include "engine/idx.h"
#include "engine/model.h"
#include "server/fedavg.h"
#include "server/zap.h"

typedef struct site {
    char name[64];
    char public_z85[KEYS_Z85_LEN + 1];
    unsigned char identity[WIRE_MAX_IDENTITY]; /* latest routing id: changes when it reconnects */
    size_t identity_len;
    int id;           /* 1-based place on the allow-list */
    long long samples;
    int selected;     /* in the current round */
    int reported;     /* sent its update for the current round */
    double sent_at;
} site_t;

struct server {
    server_options_t opt;
    const config_t *cfg;
    void *ctx, *sock;
    zap_t *zap;
    keys_allow_t allow;
    char endpoint[256];
    engine_dataset_t test;
    engine_model_t *model;
    float *params;
    size_t m;
    float *mean;
    fedavg_t agg;
    site_t *sites;
    int nsites, cap;
    int round;          /* current round, 0 before the first */
    int in_round;
    double train_loss_sum, train_acc_sum, train_weight;
    long long round_bytes_up, round_bytes_down;
};

static site_t *find_site(server_t *s, const char *name)
{
    for (int i = 0; i < s->nsites; i++)
        if (strcmp(s->sites[i].name, name) == 0)
            return &s->sites[i];
    return NULL;
}

static int bind_error(const char *endpoint, err_t *err)
{
    int e = zmq_errno();
    if (e == EADDRINUSE)
        return err_set(err, FN_EADDRINUSE,
                       "cannot listen on %s: the port is already in use; stop the other process or choose another "
                       "port (--bind tcp://HOST:PORT, or port * to pick a free one)",
                       endpoint);
    return err_set(err, FN_EIO, "cannot listen on %s: %s (expected tcp://HOST:PORT)", endpoint, zmq_strerror(e));
}

int server_create(const server_options_t *opt, server_t **out, err_t *err)
{
    *out = NULL;
    server_t *s = FN_CALLOC(1, sizeof *s);
    s->opt = *opt;
    s->cfg = opt->cfg;
    int rc;
    char path[PATH_MAX];
    keys_pair_t *kp = keys_pair_new();
    if (!kp) {
        free(s);
        return err_set(err, FN_ENOMEM, "out of secure memory");
    }
    snprintf(path, sizeof path, "%s/server.key", opt->keys_dir);
    if ((rc = keys_read_secret(path, kp, err)) < 0)
        goto fail;
    snprintf(path, sizeof path, "%s/allowed_clients", opt->keys_dir);
    if ((rc = keys_allow_load(path, &s->allow, err)) < 0)
        goto fail;

    if ((rc = engine_fmnist_load(s->cfg->data.path, "test", &s->test, err)) < 0)
        goto fail;
    if ((rc = engine_model_create(s->cfg->model, s->test.rows * s->test.cols, s->test.num_classes, &s->model, err)) <
        0) {
        config_error_at(s->cfg, "model", err, "%s", err->msg);
        goto fail;
    }
    engine_model_init(s->model, s->cfg->seed);
    s->params = engine_model_params(s->model);
    s->m = engine_model_num_params(s->model);
    s->mean = FN_MALLOC(s->m * sizeof *s->mean);
    if ((rc = fedavg_init(&s->agg, s->m, err)) < 0)
        goto fail;

    s->ctx = zmq_ctx_new();
    if ((rc = zap_start(s->ctx, &s->allow, &s->zap, err)) < 0)
        goto fail;
    s->sock = zmq_socket(s->ctx, ZMQ_ROUTER);
    int one = 1, linger = 2000;
    /* Larger than any legal message (the model plus headroom): a peer cannot make us buffer more. */
    int64_t maxmsg = (int64_t)s->m * 4 + WIRE_MAX_HEADER + 4096;
    zmq_setsockopt(s->sock, ZMQ_CURVE_SERVER, &one, sizeof one);
    zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, kp->secret_z85, KEYS_Z85_LEN + 1);
    zmq_setsockopt(s->sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(s->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (zmq_bind(s->sock, opt->bind) != 0) {
        rc = bind_error(opt->bind, err);
        goto fail;
    }
    size_t len = sizeof s->endpoint;
    zmq_getsockopt(s->sock, ZMQ_LAST_ENDPOINT, s->endpoint, &len);
    keys_pair_free(kp);
    *out = s;
    return 0;
fail:
    keys_pair_free(kp);
    server_free(s);
    return rc;
}

const char *server_endpoint(const server_t *s) { return s->endpoint; }

static long long send_to(server_t *s, site_t *site, json_t *hdr, const wire_frame_t *frames, int n)
{
    err_t e;
    json_object_set_new(hdr, "run", json_integer(s->opt.run_id));
    long long sent = wire_send(s->sock, site->identity, site->identity_len, hdr, frames, n, 0, &e);
    json_decref(hdr);
    if (sent < 0)
        log_warn("cannot reach site %s: %s", site->name, e.msg);
    return sent;
}

static void on_hello(server_t *s, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    long long samples = wire_get_int(msg, "samples", -1);
    if (samples < 1 || samples > 1000000000LL) {
        log_warn("site %s: hello without a valid sample count; ignored", name);
        return;
    }
    site_t *site = find_site(s, name);
    if (!site) {
        if (s->nsites == s->cap) {
            s->cap = s->cap ? 2 * s->cap : 16;
            s->sites = realloc(s->sites, (size_t)s->cap * sizeof *s->sites);
            FN_CHECK(s->sites);
        }
        site = &s->sites[s->nsites++];
        memset(site, 0, sizeof *site);
        snprintf(site->name, sizeof site->name, "%s", name);
        /* The id is the site's place on the allow-list, not its arrival order, so that the
         * per-site training seeds and therefore the run are the same every time. */
        for (int i = 0; i < s->allow.count; i++)
            if (strcmp(s->allow.entries[i].name, name) == 0) {
                site->id = i + 1;
                memcpy(site->public_z85, s->allow.entries[i].public_z85, sizeof site->public_z85);
            }
        log_info("site %s joined (%lld samples); %d of %d", name, samples, s->nsites, s->cfg->clients.count);
    }
    /* A repeated hello (the client retried, or reconnected) just refreshes the route. */
    memcpy(site->identity, msg->identity, msg->identity_len);
    site->identity_len = msg->identity_len;
    site->samples = samples;
    err_t e;
    if (store_client_upsert(s->opt.store, s->opt.run_id, site->id, site->name, site->public_z85, samples, "joined",
                            &e) < 0)
        log_error("%s", e.msg);
    json_t *hdr = json_pack("{s:s, s:i, s:i}", "type", "welcome", "client_id", site->id, "rounds", s->cfg->rounds);
    send_to(s, site, hdr, NULL, 0);
}

static void on_update(server_t *s, wire_msg_t *msg)
{
    const char *name = msg->user_id;
    site_t *site = find_site(s, name);
    long long round = wire_get_int(msg, "round", -1), run = wire_get_int(msg, "run", -1);
    if (!site || run != s->opt.run_id || !s->in_round || round != s->round) {
        log_warn("site %s: update for run %lld round %lld ignored (current: run %lld round %d)", name, run, round,
                 (long long)s->opt.run_id, s->round);
        return;
    }
    if (!site->selected || site->reported) {
        log_warn("site %s: %s update for round %d ignored", name, site->reported ? "duplicate" : "unrequested",
                 s->round);
        return;
    }
    size_t count = 0;
    const float *upd = wire_frame_data(msg, 0, WIRE_F32, &count);
    long long samples = wire_get_int(msg, "samples", -1);
    if (!upd || count != s->m || samples < 1 || samples > 1000000000LL) {
        log_warn("site %s: update rejected: expected %zu float32 values and a sample count, got %zu values and %lld "
                 "samples",
                 name, s->m, upd ? count : 0, samples);
        return;
    }
    for (size_t i = 0; i < count; i++)
        if (!isfinite(upd[i])) {
            log_warn("site %s: update rejected: value %zu is not finite", name, i);
            return;
        }
    err_t e;
    if (fedavg_add(&s->agg, upd, count, (double)samples, &e) < 0) {
        log_warn("site %s: update rejected: %s", name, e.msg);
        return;
    }
    json_t *loss = json_object_get(msg->header, "loss"), *acc = json_object_get(msg->header, "accuracy");
    if (json_is_number(loss) && json_is_number(acc) && isfinite(json_number_value(loss))) {
        s->train_loss_sum += samples * json_number_value(loss);
        s->train_acc_sum += samples * json_number_value(acc);
        s->train_weight += samples;
    }
    site->reported = 1;
    s->round_bytes_up += (long long)msg->bytes;
    double latency = fn_mono() - site->sent_at;
    if (store_client_contributed(s->opt.store, s->opt.run_id, site->id, (long long)msg->bytes,
                                 (long long)(s->m * 4), latency, &e) < 0)
        log_error("%s", e.msg);
}

/* Receives and handles every message waiting, or waits up to timeout_ms for one. */
static void pump(server_t *s, int timeout_ms)
{
    zmq_pollitem_t item = {s->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, timeout_ms) <= 0)
        return;
    for (;;) {
        wire_msg_t msg;
        err_t e;
        int rc = wire_recv(s->sock, 1, &msg, ZMQ_DONTWAIT, &e);
        if (rc == FN_ETIMEOUT)
            return;
        if (rc < 0) {
            log_warn("dropped a bad message: %s", e.msg);
            continue;
        }
        if (!msg.user_id[0])
            log_warn("dropped a message from an unauthenticated peer");
        else if (strcmp(msg.type, "hello") == 0)
            on_hello(s, &msg);
        else if (strcmp(msg.type, "update") == 0)
            on_update(s, &msg);
        else
            log_warn("site %s: unexpected \"%s\" message dropped", msg.user_id, msg.type);
        wire_msg_close(&msg);
    }
}

static int stopped(const server_t *s) { return s->opt.stop && *s->opt.stop; }

static int wait_for_sites(server_t *s, err_t *err)
{
    double deadline = fn_mono() + s->cfg->server.register_timeout;
    log_info("waiting for %d sites to join at %s", s->cfg->clients.count, s->endpoint);
    while (s->nsites < s->cfg->clients.count && fn_mono() < deadline && !stopped(s))
        pump(s, 200);
    if (stopped(s))
        return err_set(err, FN_ESTATE, "stopped while waiting for sites");
    if (s->nsites < s->cfg->clients.min_fit)
        return err_set(err, FN_ETIMEOUT,
                       "only %d of %d sites joined within %.0f s (at least %d needed); check that the clients can "
                       "reach %s and that their keys are on the allow-list",
                       s->nsites, s->cfg->clients.count, s->cfg->server.register_timeout, s->cfg->clients.min_fit,
                       s->endpoint);
    if (s->nsites < s->cfg->clients.count)
        log_warn("starting with %d of %d sites", s->nsites, s->cfg->clients.count);
    return 0;
}

static int run_round(server_t *s, store_round_t *rec, err_t *err)
{
    s->round++;
    memset(rec, 0, sizeof *rec);
    rec->round = s->round;
    rec->started_at = fn_now();
    double t0 = fn_mono();
    fedavg_reset(&s->agg);
    s->train_loss_sum = s->train_acc_sum = s->train_weight = 0;
    s->round_bytes_up = s->round_bytes_down = 0;
    s->in_round = 1;

    wire_frame_t frame = {"model", WIRE_F32, s->params, s->m};
    int selected = 0;
    for (int i = 0; i < s->nsites; i++) {
        site_t *site = &s->sites[i];
        site->reported = 0;
        site->selected = 0;
        json_t *hdr = json_pack("{s:s, s:i, s:i, s:i, s:f, s:I, s:O, s:i, s:i}", "type", "train", "round", s->round,
                                "epochs", s->cfg->train.epochs, "batch_size", s->cfg->train.batch_size, "lr",
                                s->cfg->train.lr, "seed",
                                (json_int_t)(rng_derive(s->cfg->seed, (uint64_t)s->round * 1000003u + (uint64_t)site->id) >> 1),
                                "arch", s->cfg->model, "input_dim", s->test.rows * s->test.cols, "num_classes",
                                s->test.num_classes);
        site->sent_at = fn_mono();
        long long sent = send_to(s, site, hdr, &frame, 1);
        if (sent >= 0) {
            site->selected = 1;
            selected++;
            s->round_bytes_down += sent;
        }
    }
    double deadline = fn_mono() + s->cfg->server.round_timeout;
    while (s->agg.count < selected && fn_mono() < deadline && !stopped(s))
        pump(s, 100);
    s->in_round = 0;
    if (stopped(s))
        return err_set(err, FN_ESTATE, "stopped during round %d", s->round);
    int dropped = selected - s->agg.count;
    for (int i = 0; i < s->nsites; i++)
        if (s->sites[i].selected && !s->sites[i].reported) {
            log_warn("site %s missed the deadline of round %d", s->sites[i].name, s->round);
            store_client_status(s->opt.store, s->opt.run_id, s->sites[i].id, "dropped", NULL);
        }
    if (s->agg.count < s->cfg->clients.min_fit)
        return err_set(err, FN_ETIMEOUT, "round %d: only %d of %d updates arrived within %.0f s (at least %d needed)",
                       s->round, s->agg.count, selected, s->cfg->server.round_timeout, s->cfg->clients.min_fit);
    /* Clients send deltas; the new model is the old one plus their weighted mean. */
    int rc = fedavg_mean(&s->agg, s->mean, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < s->m; i++)
        s->params[i] += s->mean[i];
    double loss = 0, acc = 0;
    if ((rc = engine_model_evaluate(s->model, &s->test, NULL, 0, &loss, &acc, err)) < 0)
        return rc;
    rec->ended_at = fn_now();
    rec->selected = selected;
    rec->participants = s->agg.count;
    rec->dropped = dropped;
    rec->test_accuracy = acc;
    rec->test_loss = loss;
    rec->train_loss = s->train_weight > 0 ? s->train_loss_sum / s->train_weight : NAN;
    rec->train_accuracy = s->train_weight > 0 ? s->train_acc_sum / s->train_weight : NAN;
    rec->samples = (int64_t)s->agg.total_weight;
    rec->bytes_down = s->round_bytes_down;
    rec->bytes_up = s->round_bytes_up;
    if ((rc = store_round_insert(s->opt.store, s->opt.run_id, rec, err)) < 0)
        return rc;
    if (!s->opt.quiet) {
        printf("round %3d/%-3d  test acc %6.2f%%  test loss %.4f  train loss %.4f  clients %d/%d  %.2f s\n", s->round,
               s->cfg->rounds, 100 * acc, loss, rec->train_loss, rec->participants, rec->selected, fn_mono() - t0);
        fflush(stdout);
    }
    return 0;
}

static void send_end(server_t *s, const char *reason)
{
    for (int i = 0; i < s->nsites; i++)
        send_to(s, &s->sites[i], json_pack("{s:s, s:s}", "type", "end", "reason", reason), NULL, 0);
}

int server_run(server_t *s, server_summary_t *sum, err_t *err)
{
    memset(sum, 0, sizeof *sum);
    sum->params = (int)s->m;
    sum->best_round = -1;
    double t0 = fn_mono(), round_seconds = 0;
    int rc = wait_for_sites(s, err);
    sum->clients = s->nsites;
    while (rc == 0 && s->round < s->cfg->rounds) {
        store_round_t rec;
        rc = run_round(s, &rec, err);
        if (rc < 0)
            break;
        sum->rounds_done = s->round;
        if (rec.test_accuracy > sum->best_accuracy || sum->best_round < 0) {
            sum->best_accuracy = rec.test_accuracy;
            sum->best_round = rec.round;
        }
        sum->final_accuracy = rec.test_accuracy;
        sum->final_loss = rec.test_loss;
        sum->bytes_down += rec.bytes_down;
        sum->bytes_up += rec.bytes_up;
        round_seconds += rec.ended_at - rec.started_at;
    }
    sum->total_seconds = fn_mono() - t0;
    sum->mean_round_seconds = sum->rounds_done ? round_seconds / sum->rounds_done : 0;
    send_end(s, rc == 0 ? "done" : err->msg);
    for (int i = 0; i < s->nsites; i++)
        store_client_status(s->opt.store, s->opt.run_id, s->sites[i].id, "finished", NULL);
    return rc;
}

void server_free(server_t *s)
{
    if (!s)
        return;
    if (s->sock)
        zmq_close(s->sock);
    if (s->ctx) {
        zmq_ctx_shutdown(s->ctx); /* wakes the ZAP thread */
        zap_join(s->zap);
        zmq_ctx_term(s->ctx);
    }
    keys_allow_free(&s->allow);
    engine_model_free(s->model);
    engine_dataset_free(&s->test);
    fedavg_free(&s->agg);
    free(s->mean);
    free(s->sites);
    free(s);
}
