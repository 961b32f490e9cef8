/* CPU kernels: batch norm (train/eval, running statistics) and layer norm. Statistics are
 * accumulated in double: a channel of a large batch sums hundreds of thousands of floats. */
#include <math.h>

#include "engine/ops_cpu.h"

/* x viewed as [N, C, HW]: N = ne[0], C = ne[1], HW = rest. */
static void bn_dims(const engine_tensor_t *x, int64_t *N, int64_t *C, int64_t *HW)
{
    *N = x->ne[0];
    *C = x->ne[1];
    *HW = engine_tensor_numel(x) / (*N * *C);
}

/* Batch norm's channels are independent: they are split over the pool, each channel summed in
 * the same order whatever the split (results do not depend on the thread count). */
typedef struct {
    const float *in, *ga, *be, *dy, *st;
    float *out, *rm, *rv, *stw, *dx, *dg, *dbt;
    int64_t N, C, HW;
    int training;
    float mom, eps;
} bn_job_t;

static int64_t bn_grain(int64_t N, int64_t HW)
{
    const int64_t per = N * HW > 0 ? N * HW : 1;
    return CPU_PAR_GRAIN / per > 1 ? CPU_PAR_GRAIN / per : 1;
}

static void bn_fwd_range(void *ctx, int64_t c0, int64_t c1)
{
    const bn_job_t *j = ctx;
    const int64_t N = j->N, C = j->C, HW = j->HW;
    const double cnt = (double)N * (double)HW;
    for (int64_t c = c0; c < c1; c++) {
        double mean, var;
        if (j->training) {
            double s = 0.0, s2 = 0.0;
            for (int64_t n = 0; n < N; n++) {
                const float *p = j->in + (n * C + c) * HW;
                for (int64_t i = 0; i < HW; i++)
                    s += p[i];
            }
            mean = s / cnt;
            for (int64_t n = 0; n < N; n++) {
                const float *p = j->in + (n * C + c) * HW;
                for (int64_t i = 0; i < HW; i++)
                    s2 += (p[i] - mean) * (p[i] - mean);
            }
            var = s2 / cnt;
            if (j->rm)
                j->rm[c] = (1.0f - j->mom) * j->rm[c] + j->mom * (float)mean;
            if (j->rv)
                j->rv[c] = (1.0f - j->mom) * j->rv[c] + j->mom * (float)(cnt > 1 ? s2 / (cnt - 1) : var);
        } else {
            mean = j->rm ? j->rm[c] : 0.0;
            var = j->rv ? j->rv[c] : 1.0;
        }
        float rstd = (float)(1.0 / sqrt(var + j->eps));
        j->stw[c] = (float)mean;
        j->stw[C + c] = rstd;
        float ga = j->ga ? j->ga[c] : 1.0f, be = j->be ? j->be[c] : 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float *p = j->in + (n * C + c) * HW;
            float *q = j->out + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; i++)
                q[i] = (p[i] - (float)mean) * rstd * ga + be;
        }
    }
}

void cpu_batchnorm_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *gm = t->src[1], *bt = t->src[2];
    bn_job_t j = {.in = x->data, .out = t->data, .training = t->ip[0], .mom = t->fp[0], .eps = t->fp[1],
                  .rm = t->ext[0], .rv = t->ext[1], .ga = gm ? gm->data : NULL, .be = bt ? bt->data : NULL};
    bn_dims(x, &j.N, &j.C, &j.HW);
    j.stw = engine_arena_alloc(engine_graph_arena(g), 2 * (size_t)j.C * sizeof(float)); /* mean, rstd */
    if (!j.stw) {
        engine_graph_fail(g, FN_ENOMEM, "batchnorm: out of memory");
        return;
    }
    t->saved = j.stw;
    engine_parallel_for(engine_graph_pool(g), j.C, bn_grain(j.N, j.HW), bn_fwd_range, &j);
}

static void bn_bwd_range(void *ctx, int64_t c0, int64_t c1)
{
    const bn_job_t *j = ctx;
    const int64_t N = j->N, C = j->C, HW = j->HW;
    const double cnt = (double)N * (double)HW;
    for (int64_t c = c0; c < c1; c++) {
        const float mean = j->st[c], rstd = j->st[C + c];
        const float ga = j->ga ? j->ga[c] : 1.0f;
        double sdy = 0.0, sdyx = 0.0;
        for (int64_t n = 0; n < N; n++) {
            const float *p = j->in + (n * C + c) * HW, *d = j->dy + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) {
                sdy += d[i];
                sdyx += d[i] * (p[i] - mean) * rstd;
            }
        }
        if (j->dg)
            j->dg[c] += (float)sdyx;
        if (j->dbt)
            j->dbt[c] += (float)sdy;
        if (!j->dx)
            continue;
        for (int64_t n = 0; n < N; n++) {
            const float *p = j->in + (n * C + c) * HW, *d = j->dy + (n * C + c) * HW;
            float *q = j->dx + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) {
                if (j->training) {
                    float xh = (p[i] - mean) * rstd;
                    q[i] += ga * rstd * (float)(d[i] - sdy / cnt - xh * sdyx / cnt);
                } else {
                    q[i] += ga * rstd * d[i];
                }
            }
        }
    }
}

void cpu_batchnorm_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *gm = t->src[1];
    bn_job_t j = {.in = x->data, .st = t->saved, .dy = t->grad, .training = t->ip[0],
                  .ga = gm ? gm->data : NULL};
    bn_dims(x, &j.N, &j.C, &j.HW);
    j.dx = cpu_src_grad(g, t, 0);
    j.dg = cpu_src_grad(g, t, 1);
    j.dbt = cpu_src_grad(g, t, 2);
    engine_parallel_for(engine_graph_pool(g), j.C, bn_grain(j.N, j.HW), bn_bwd_range, &j);
}

void cpu_layernorm_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *gm = t->src[1], *bt = t->src[2];
    const int64_t D = x->ne[x->ndim - 1], M = engine_tensor_numel(x) / D;
    float *st = engine_arena_alloc(engine_graph_arena(g), 2 * (size_t)M * sizeof(float));
    if (!st) {
        engine_graph_fail(g, FN_ENOMEM, "layernorm: out of memory");
        return;
    }
    t->saved = st;
    for (int64_t r = 0; r < M; r++) {
        const float *p = (const float *)x->data + r * D;
        float *q = (float *)t->data + r * D;
        double s = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < D; i++)
            s += p[i];
        double mean = s / (double)D;
        for (int64_t i = 0; i < D; i++)
            s2 += (p[i] - mean) * (p[i] - mean);
        float rstd = (float)(1.0 / sqrt(s2 / (double)D + t->fp[0]));
        st[r] = (float)mean;
        st[M + r] = rstd;
        for (int64_t i = 0; i < D; i++) {
            float v = (p[i] - (float)mean) * rstd;
            q[i] = v * (gm ? ((const float *)gm->data)[i] : 1.0f) + (bt ? ((const float *)bt->data)[i] : 0.0f);
        }
    }
}

void cpu_layernorm_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *gm = t->src[1];
    const int64_t D = x->ne[x->ndim - 1], M = engine_tensor_numel(x) / D;
    float *dx = cpu_src_grad(g, t, 0), *dg = cpu_src_grad(g, t, 1), *dbt = cpu_src_grad(g, t, 2);
    const float *st = t->saved;
    for (int64_t r = 0; r < M; r++) {
        const float *p = (const float *)x->data + r * D, *d = t->grad + r * D;
        const float mean = st[r], rstd = st[M + r];
        double a = 0.0, bsum = 0.0; /* means of dxhat and dxhat*xhat */
        for (int64_t i = 0; i < D; i++) {
            float xh = (p[i] - mean) * rstd;
            float dxh = d[i] * (gm ? ((const float *)gm->data)[i] : 1.0f);
            a += dxh;
            bsum += dxh * xh;
            if (dg)
                dg[i] += d[i] * xh;
            if (dbt)
                dbt[i] += d[i];
        }
        a /= (double)D;
        bsum /= (double)D;
        if (!dx)
            continue;
        for (int64_t i = 0; i < D; i++) {
            float xh = (p[i] - mean) * rstd;
            float dxh = d[i] * (gm ? ((const float *)gm->data)[i] : 1.0f);
            dx[r * D + i] += rstd * (float)(dxh - a - xh * bsum);
        }
    }
}
