#include "client/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "crypto/dp.h"
#include "engine/partition.h"

int trainer_compute(trainer_t *a, const engine_dataset_t *d, const int *idx, int n, wire_msg_t *msg,
                    trainer_result_t *res, err_t *err)
{
    memset(res, 0, sizeof *res);
    long long round = wire_get_int(msg, "round", -1), epochs = wire_get_int(msg, "epochs", -1);
    long long batch = wire_get_int(msg, "batch_size", -1), seed = wire_get_int(msg, "seed", 0);
    long long input_dim = wire_get_int(msg, "input_dim", -1), classes = wire_get_int(msg, "num_classes", -1);
    json_t *lrj = json_object_get(msg->header, "lr");
    json_t *arch = json_object_get(msg->header, "arch");
    double lr = json_number_value(lrj);
    size_t count = 0;
    const float *global = wire_frame_data(msg, 0, WIRE_F32, &count);
    if (round < 1 || epochs < 1 || epochs > 10000 || batch < 1 || batch > 65536 || !json_is_number(lrj) ||
        !(lr > 0) || !isfinite(lr) || !json_is_object(arch) || !global || input_dim < 1 || classes < 2 ||
        classes > 65536)
        return err_set(err, FN_EPROTO, "malformed train message (round %lld)", round);
    if (input_dim != d->rows * d->cols)
        return err_set(err, FN_EINVAL, "the model expects %lld inputs but this site's samples have %d x %d", input_dim,
                       d->rows, d->cols);
    char *text = json_dumps(arch, JSON_SORT_KEYS | JSON_COMPACT);
    if (!a->model || strcmp(text, a->arch_text) != 0) {
        engine_model_free(a->model);
        a->model = NULL;
        free(a->arch_text);
        a->arch_text = text;
        int rc = engine_model_create(arch, (int)input_dim, (int)classes, &a->model, err);
        if (rc < 0)
            return rc;
        free(a->global);
        a->global = FN_MALLOC(engine_model_num_params(a->model) * sizeof(float));
    } else {
        free(text);
    }
    size_t m = engine_model_num_params(a->model);
    if (count != m)
        return err_set(err, FN_EPROTO, "train message carries %zu parameters, the model has %zu", count, m);
    float *w = engine_model_params(a->model);
    memcpy(w, global, m * sizeof *w);
    memcpy(a->global, global, m * sizeof *w);
    engine_train_stats_t st = {0};
    double t0 = fn_mono();
    for (long long e = 0; e < epochs; e++) {
        int rc = engine_model_train_epoch(a->model, d, idx, n, (int)batch, (float)lr,
                                          (uint64_t)seed + (uint64_t)e, &st, err);
        if (rc < 0)
            return rc;
    }
    /* The update is the change to the weights; the server averages changes. */
    for (size_t i = 0; i < m; i++)
        w[i] -= a->global[i];
    /* Under differential privacy the site clips its own update before it leaves (the server
     * clips again, so the guarantee does not rest on this). */
    json_t *clip = json_object_get(msg->header, "clip");
    double norm = 0;
    if (clip) {
        if (!json_is_number(clip) || !(json_number_value(clip) > 0))
            return err_set(err, FN_EPROTO, "malformed clip bound in round %lld", round);
        int rc = dp_clip_l2(w, m, json_number_value(clip), &norm, err);
        if (rc < 0)
            return rc;
    }
    res->round = round;
    res->samples = n;
    res->update = w;
    res->m = m;
    res->loss = st.loss;
    res->accuracy = st.accuracy;
    res->seconds = fn_mono() - t0;
    return 0;
}

int trainer_send_update(const trainer_result_t *res, void *sock, int64_t run, err_t *err)
{
    json_t *hdr = json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:f}", "type", "update", "run", (json_int_t)run,
                            "round", (json_int_t)res->round, "samples", (json_int_t)res->samples, "loss", res->loss,
                            "accuracy", res->accuracy, "train_seconds", res->seconds);
    wire_frame_t f = {.name = "update", .dtype = WIRE_F32, .data = res->update, .count = res->m};
    long long sent = wire_send(sock, NULL, 0, hdr, &f, 1, 0, err);
    json_decref(hdr);
    if (sent < 0)
        return (int)sent;
    log_debug("round %lld: loss %.4f accuracy %.4f in %.2f s", res->round, res->loss, res->accuracy, res->seconds);
    return 0;
}

int trainer_round(trainer_t *a, const engine_dataset_t *d, const int *idx, int n, void *sock, int64_t run,
                  wire_msg_t *msg, err_t *err)
{
    trainer_result_t res;
    int rc = trainer_compute(a, d, idx, n, msg, &res, err);
    return rc < 0 ? rc : trainer_send_update(&res, sock, run, err);
}

void trainer_free(trainer_t *t)
{
    engine_model_free(t->model);
    free(t->arch_text);
    free(t->global);
    memset(t, 0, sizeof *t);
}

int client_partition(const client_options_t *o, const engine_dataset_t *d, int **assign, err_t *err)
{
    *assign = NULL;
    if (o->shards <= 0)
        return 0;
    int *a = FN_MALLOC((size_t)d->count * sizeof *a);
    int rc;
    if (o->partition == CONFIG_PARTITION_DIRICHLET)
        rc = engine_partition_dirichlet(d->labels, d->count, d->num_classes, o->shards, o->alpha, o->min_size,
                                        o->partition_seed, a, err);
    else
        rc = engine_partition_iid(d->count, o->shards, o->partition_seed, a, err);
    if (rc < 0) {
        free(a);
        return rc;
    }
    *assign = a;
    return 0;
}
