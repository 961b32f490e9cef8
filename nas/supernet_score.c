/* Scoring a candidate with the supernet's weights: its model with the path copied in, batch-norm
 * recalibration, validation (nas/supernet.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "common/util.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "nas/supernet.h"
#include "nas/supernet_internal.h"

/* Every batch norm of a decoded model (nested in residual blocks and cell edges too). */
static void set_bn_momentum(json_t *j, double mom)
{
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            set_bn_momentum(json_array_get(j, i), mom);
    } else if (json_is_object(j)) {
        const char *t = json_string_value(json_object_get(j, "type"));
        if (t && strcmp(t, "batchnorm") == 0)
            json_object_set_new(j, "momentum", json_real(mom));
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v)
        {
            (void)k;
            set_bn_momentum(v, mom);
        }
    }
}

/* 1 when every batch norm in the architecture has momentum 1 (the default is 0.1). */
static int bn_momentum_one(const json_t *j)
{
    if (json_is_array(j)) {
        for (size_t i = 0; i < json_array_size(j); i++)
            if (!bn_momentum_one(json_array_get(j, i)))
                return 0;
    } else if (json_is_object(j)) {
        const char *t = json_string_value(json_object_get(j, "type"));
        if (t && strcmp(t, "batchnorm") == 0) {
            const json_t *m = json_object_get(j, "momentum");
            if (!json_is_number(m) || json_number_value(m) != 1.0)
                return 0;
        }
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)j, k, v)
        {
            (void)k;
            if (!bn_momentum_one(v))
                return 0;
        }
    }
    return 1;
}

int nas_supernet_model(nas_supernet_t *s, const nas_genome_t *g0, engine_model_t **out, err_t *err)
{
    *out = NULL;
    nas_genome_t gb, *g = &gb;
    nas_sn_path_genome(s, g0, &gb);
    json_t *arch;
    int rc = nas_genome_decode(&s->sp, g, &arch, err);
    if (rc)
        return err_wrap(err, "supernet: ");
    set_bn_momentum(arch, 1.0);
    engine_model_t *m = NULL;
    rc = engine_model_create_shape(arch, s->sp.in_c, s->sp.in_h, s->sp.in_w, s->sp.classes, &m, err);
    if (rc) {
        json_decref(arch);
        return err_wrap(err, "supernet: the decoded genome does not build: ");
    }
    engine_net_t *net = engine_model_net(m);
    int nt = engine_net_num_tensors(net);
    char(*keys)[NAS_SUPERNET_KEY_LEN] = calloc((size_t)(nt > 0 ? nt : 1), sizeof *keys);
    int *ids = calloc((size_t)(nt > 0 ? nt : 1), sizeof *ids);
    nas_slice_view_t *views = calloc((size_t)(nt > 0 ? nt : 1), sizeof *views);
    if (!keys || !ids || !views)
        rc = err_set(err, FN_ENOMEM, "supernet: out of memory");
    nas_genome_t c;
    nas_genome_canonical(&s->sp, g, &c);
    if (rc == 0)
        rc = nas_sn_keys(&s->sp, &c, arch, net, keys, views, err);
    if (rc == 0) {
        /* the fallback initialisation depends on the candidate only, never on the scoring order */
        char h[NAS_HASH_LEN];
        nas_genome_hash(&s->sp, g, h);
        uint64_t hv = 0;
        for (int i = 0; i < 16; i++)
            hv = hv << 4 | (uint64_t)(h[i] <= '9' ? h[i] - '0' : h[i] - 'a' + 10);
        rc = nas_sn_load(s, net, keys, views, 0, rng_derive(s->o.seed, hv), ids, err);
    }
    free(keys);
    free(ids);
    free(views);
    json_decref(arch);
    if (rc) {
        engine_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

int nas_bn_recalibrate(engine_model_t *m, const engine_source_t *src, const int *idx, int n, int batches,
                       int batch_size, uint64_t seed, err_t *err)
{
    if (n < 1 || batches < 1 || batch_size < 1)
        return err_set(err, FN_EINVAL, "recalibration: needs samples, batches >= 1 and a batch size >= 1");
    if (!bn_momentum_one(engine_model_arch(m)))
        return err_set(err, FN_EINVAL, "recalibration: every batch norm needs \"momentum\": 1 (each pass must leave "
                       "exactly its batch's statistics)");
    engine_net_t *net = engine_model_net(m);
    size_t nb = engine_net_num_buffers(net);
    if (nb == 0)
        return 0;
    const int bs = batch_size < n ? batch_size : n;
    const int feat = src->channels * src->height * src->width;
    if (feat != engine_model_input_dim(m))
        return err_set(err, FN_EINVAL, "recalibration: %d features per sample, the model takes %d", feat,
                       engine_model_input_dim(m));
    int *order = malloc((size_t)n * sizeof *order);
    float *x = malloc((size_t)bs * feat * sizeof *x);
    uint8_t *y = malloc((size_t)bs);
    double *sum = calloc(nb, sizeof *sum);
    engine_graph_t *g = engine_graph_create((size_t)4 << 20, seed);
    int rc = 0;
    if (!order || !x || !y || !sum || !g)
        rc = err_set(err, FN_ENOMEM, "recalibration: out of memory");
    rng_t r;
    rng_seed(&r, seed);
    int pos = n; /* next unused position of the shuffled order; n: reshuffle */
    float *buf = engine_net_buffers(net);
    for (int b = 0; b < batches && rc == 0; b++) {
        if (pos + bs > n) {
            memcpy(order, idx, (size_t)n * sizeof *order);
            rng_shuffle_int(&r, order, n);
            pos = 0;
        }
        engine_source_gather(src, order + pos, bs, x, y);
        pos += bs;
        engine_graph_reset(g);
        engine_graph_set_grad(g, 0);
        int64_t xs[4] = {bs, src->channels, src->height, src->width};
        engine_tensor_t *xt = engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs);
        engine_net_forward(net, g, xt, 1);
        rc = engine_graph_error(g, err);
        for (size_t i = 0; rc == 0 && i < nb; i++)
            sum[i] += buf[i];
    }
    if (rc == 0)
        for (size_t i = 0; i < nb; i++)
            buf[i] = (float)(sum[i] / batches);
    engine_graph_free(g);
    free(order);
    free(x);
    free(y);
    free(sum);
    return rc;
}

int nas_supernet_score(nas_supernet_t *s, const nas_genome_t *g, const nas_data_t *d, nas_supernet_score_t *r,
                       err_t *err)
{
    memset(r, 0, sizeof *r);
    double t0 = fn_mono();
    engine_model_t *m;
    int rc = nas_supernet_model(s, g, &m, err);
    if (rc)
        return rc;
    /* the candidate's own size, not its batch-norm twin's (nas_supernet_model) */
    double params = 0, flops = 0;
    rc = nas_genome_cost(&s->sp, g, &params, &flops, err);
    if (rc) {
        engine_model_free(m);
        return rc;
    }
    r->params = (int64_t)params;
    r->flops = flops;
    /* the same batches for every candidate: their differences are the architectures' alone */
    rc = nas_bn_recalibrate(m, &d->train_src, d->train_idx, d->n_train, s->o.recal_batches, s->o.batch_size,
                            rng_derive(s->o.seed, 0x726563616cULL), err);
    if (rc == 0)
        rc = engine_model_evaluate_source(m, &d->train_src, d->val_idx, d->n_val, &r->loss, &r->accuracy, err);
    engine_model_free(m);
    r->seconds = fn_mono() - t0;
    if (rc)
        return err_wrap(err, "supernet: scoring: ");
    return 0;
}
