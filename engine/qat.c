/* qat: see qat.h. The weights are rounded in place in the model's parameter block; the shadow
 * block keeps their float values, and the optimizer's step on the rounded weights (its change,
 * read back after each step) is added to the shadow: the straight-through estimator with the
 * optimizer's own state (momentum, Adam moments) intact. */
#include "engine/qat.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"

struct engine_qat {
    engine_model_t *m;
    float *shadow, *rounded; /* num_params each: float weights, and the rounded ones the step began from */
    int na, cap;             /* hooked inputs seen, allocated */
    float *lo, *hi;
    float momentum;
    void (*user_step)(void *ctx, int epoch, int done, int total, double loss);
    void *user_ctx;
};

void engine_qat_grid(float lo, float hi, float *scale, int *zero_point)
{
    if (lo >= 0.0f) {
        *zero_point = 0;
        *scale = hi > 0.0f ? hi / 255.0f : 1.0f;
    } else {
        float t = fmaxf(fabsf(lo), fabsf(hi));
        *zero_point = 128;
        *scale = t > 0.0f ? t / 127.0f : 1.0f;
    }
}

static engine_tensor_t *hook(void *ctx, engine_graph_t *g, engine_tensor_t *x, int layer, int training)
{
    engine_qat_t *q = ctx;
    if (!x)
        return NULL;
    if (layer >= q->cap) {
        int cap = layer + 8;
        float *lo = realloc(q->lo, (size_t)cap * sizeof *lo);
        if (lo)
            q->lo = lo;
        float *hi = lo ? realloc(q->hi, (size_t)cap * sizeof *hi) : NULL;
        if (!lo || !hi) {
            engine_graph_fail(g, FN_ENOMEM, "qat: out of memory");
            return NULL;
        }
        q->hi = hi;
        q->cap = cap;
    }
    if (training) {
        const float *d = x->data;
        const int64_t n = engine_tensor_numel(x);
        float mn = INFINITY, mx = -INFINITY;
        for (int64_t i = 0; i < n; i++) {
            mn = fminf(mn, d[i]);
            mx = fmaxf(mx, d[i]);
        }
        if (!(mn <= mx)) { /* NaN in the batch: leave the range alone */
        } else if (layer >= q->na) {
            q->lo[layer] = mn, q->hi[layer] = mx;
            q->na = layer + 1;
        } else {
            q->lo[layer] += q->momentum * (mn - q->lo[layer]);
            q->hi[layer] += q->momentum * (mx - q->hi[layer]);
        }
    }
    if (layer >= q->na)
        return x;
    float s;
    int zp;
    engine_qat_grid(q->lo[layer], q->hi[layer], &s, &zp);
    return engine_fake_quant(g, x, s, zp);
}

/* params[w] = the per-row int8 grid of shadow[w] for every weighted layer. */
static void round_weights(engine_qat_t *q)
{
    float *p = engine_model_params(q->m);
    for (int l = 0; l < engine_model_num_layers(q->m); l++) {
        int in, out;
        size_t wo, bo;
        engine_model_layer(q->m, l, &in, &out, &wo, &bo);
        for (int r = 0; r < out; r++) {
            const float *w = q->shadow + wo + (size_t)r * in;
            float *d = p + wo + (size_t)r * in, m = 0.0f;
            for (int k = 0; k < in; k++)
                m = fmaxf(m, fabsf(w[k]));
            float s = m > 0.0f ? m / 127.0f : 1.0f;
            for (int k = 0; k < in; k++) {
                float v = rintf(w[k] / s);
                d[k] = (v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v) * s;
            }
        }
    }
    memcpy(q->rounded, p, engine_model_num_params(q->m) * sizeof *p);
}

int engine_qat_attach(engine_model_t *m, float momentum, engine_qat_t **out, err_t *err)
{
    *out = NULL;
    if (!(momentum > 0.0f && momentum <= 1.0f))
        return err_set(err, FN_EINVAL, "qat: momentum %g must be in (0, 1]", (double)momentum);
    const size_t P = engine_model_num_params(m);
    engine_qat_t *q = calloc(1, sizeof *q);
    if (!q || !(q->shadow = malloc(P * sizeof *q->shadow)) || !(q->rounded = malloc(P * sizeof *q->rounded))) {
        if (q)
            free(q->shadow), free(q);
        return err_set(err, FN_ENOMEM, "qat: out of memory");
    }
    q->m = m;
    q->momentum = momentum;
    memcpy(q->shadow, engine_model_params(m), P * sizeof *q->shadow);
    round_weights(q);
    engine_net_set_input_hook(engine_model_net(m), hook, q);
    *out = q;
    return 0;
}

static void on_step(void *ctx, int epoch, int done, int total, double loss)
{
    engine_qat_t *q = ctx;
    const float *p = engine_model_params(q->m);
    const size_t P = engine_model_num_params(q->m);
    for (size_t i = 0; i < P; i++) /* biases are trained in float: the same add makes shadow = p */
        q->shadow[i] += p[i] - q->rounded[i];
    round_weights(q);
    if (q->user_step)
        q->user_step(q->user_ctx, epoch, done, total, loss);
}

int engine_qat_train(engine_qat_t *q, const engine_source_t *src, const int *idx, int n,
                     const engine_train_config_t *cfg, engine_train_stats_t *stats, err_t *err)
{
    engine_train_config_t c = *cfg;
    q->user_step = cfg->on_step;
    q->user_ctx = cfg->cb_ctx;
    c.on_step = on_step;
    c.cb_ctx = q;
    c.on_epoch = NULL; /* its ctx would be q */
    return engine_model_train_source(q->m, src, idx, n, &c, stats, err);
}

void engine_qat_ranges(const engine_qat_t *q, int *n, const float **lo, const float **hi)
{
    *n = q->na;
    *lo = q->lo;
    *hi = q->hi;
}

void engine_qat_free(engine_qat_t *q)
{
    if (!q)
        return;
    engine_net_set_input_hook(engine_model_net(q->m), NULL, NULL);
    free(q->shadow), free(q->rounded), free(q->lo), free(q->hi);
    free(q);
}
